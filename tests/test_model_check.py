"""passes/model_check.py at its edges: valid models at each boundary pass, and each broken one is
named. Every test kills a hand mutant that the invalid-model table of test_hardening let live
(docs/MUTATION.md, session s16)."""
import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import TensorProto, numpy_helper

from passes.model_check import InvalidModelError, check_model
from passes.one_line import printable

RELU = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4] x) => (float[4] y) { y = Relu(x) }
"""


def _relu(**fields) -> onnx.ModelProto:
    model = onnx.parser.parse_model(RELU)
    for name, value in fields.items():
        setattr(model, name, value)
    return model


def test_the_newest_ir_version_passes_and_the_next_is_refused():
    """mutant: '>=' for '>' refused every model at the installed onnx's IR version (its make_model's default)."""
    check_model(_relu(ir_version=onnx.IR_VERSION))
    with pytest.raises(InvalidModelError, match=f"IR version {onnx.IR_VERSION + 1} is newer than the newest"):
        check_model(_relu(ir_version=onnx.IR_VERSION + 1))


def test_ir_version_3_passes_and_2_is_refused():
    """IR 3 is the first with opset imports; onnx.checker refuses an IR 2 model that has them. The
    check compared with onnx.IR_VERSION_2017_10_30, which is 2: an IR 2 model compiled into an
    output onnx.checker refuses (exit 0, verified). Also kills the mutant '<=' for '<'."""
    model = _relu(ir_version=3)
    model.opset_import[0].version = 8
    check_model(model)
    model.ir_version = 2
    with pytest.raises(InvalidModelError, match="IR version 2 is older than 3"):
        check_model(model)


def test_the_newest_opset_passes_and_the_next_is_refused():
    """mutant: '>=' for '>' refused a model at the newest opset onnx knows."""
    model = _relu(ir_version=onnx.IR_VERSION)
    model.opset_import[0].version = onnx.defs.onnx_opset_version()
    check_model(model)
    model.opset_import[0].version += 1
    with pytest.raises(InvalidModelError, match=f"opset {onnx.defs.onnx_opset_version() + 1} is newer"):
        check_model(model)


def test_an_opset_imported_twice_with_two_versions_is_refused():
    """'' and 'ai.onnx' are one domain: two versions of it are refused, the same one twice is not
    (mutant: the comparison flipped)."""
    model = _relu()
    model.opset_import.append(oh.make_opsetid("ai.onnx", 17))
    check_model(model)
    model.opset_import[1].version = 13
    with pytest.raises(InvalidModelError, match=r"opset of domain 'ai.onnx' imported twice \(17 and 13\)"):
        check_model(model)


@pytest.mark.parametrize("version", [2**31, -2**31 - 1, 99999999999])
def test_an_opset_version_past_a_32_bit_integer_is_refused(version):
    """Found by adv9 (s23): an unused custom domain imported at version 99999999999 ended passes.apply
    in 'internal error: TypeError: (): incompatible function arguments' (exit 1, --verify none too):
    onnx.checker's context takes a C int. The edges of the range pass."""
    model = _relu()
    for edge in (2**31 - 1, -2**31):
        del model.opset_import[1:]
        model.opset_import.append(oh.make_opsetid("com.example\x1b", edge))
        check_model(model)
    model.opset_import[1].version = version
    with pytest.raises(InvalidModelError) as info:
        check_model(model)
    assert str(info.value) == (f"opset version {version} of domain 'com.example\\x1b' is out of range "
                               "(a 32-bit integer)")


def test_the_ai_onnx_domain_is_checked_like_the_default_one():
    """mutant: 'ai.onnx' left out of the checked domains let an unknown op spelled in it through."""
    model = _relu()
    model.graph.node[0].domain = "ai.onnx"
    model.graph.node[0].op_type = "Frobnicate"
    with pytest.raises(InvalidModelError, match="no op 'Frobnicate' in opset 17 of domain 'ai.onnx'"):
        check_model(model)


def _with_initializer(tensor: onnx.TensorProto, opset: int = 17) -> onnx.ModelProto:
    """y = Relu(x), and ``tensor`` as a second output through an Identity."""
    model = onnx.parser.parse_model(RELU.replace('"" : 17', f'"" : {opset}').replace("ir_version: 8", "ir_version: 10"))
    model.graph.initializer.append(tensor)
    model.graph.node.append(oh.make_node("Identity", [tensor.name], ["copy"]))
    model.graph.output.append(oh.make_tensor_value_info("copy", tensor.data_type, list(tensor.dims)))
    return model


def test_tensor_sizes_of_four_bit_and_complex_types_count_their_packing():
    """Three INT4 values are two int32_data entries, two complex64 values four float_data entries
    (mutants: the four-bit count rounded down; complex counted once). A four-bit tensor of the right size
    is then refused for its type (onnx-graphsurgeon cannot write it back; adv4, s18), not for its size."""
    with pytest.raises(InvalidModelError, match=r"tensor 'q' is INT4: stored tensors of 4-bit types and strings are not supported"):
        check_model(_with_initializer(oh.make_tensor("q", TensorProto.INT4, [3], [1, 2, 3]), opset=21))
    check_model(_with_initializer(oh.make_tensor("c", TensorProto.COMPLEX64, [2], [1 + 2j, 3 + 4j])))


def test_a_tensor_holding_more_values_than_its_dims_is_refused():
    """mutant: only too few values refused."""
    tensor = numpy_helper.from_array(np.zeros(2, np.float32), "w")
    check_model(_with_initializer(tensor))
    tensor.ClearField("raw_data")
    tensor.float_data.extend([1.0, 2.0, 3.0])
    with pytest.raises(InvalidModelError, match=r"tensor 'w' declares dims \[2\] \(2 values\) but holds 3"):
        check_model(_with_initializer(tensor))


def test_a_node_output_named_like_a_graph_input_is_produced_twice():
    """mutant: only two nodes producing one name were seen."""
    model = _relu()
    model.graph.node.insert(0, oh.make_node("Neg", ["x"], ["x"]))
    with pytest.raises(InvalidModelError, match="tensor 'x' in graph is produced twice: by a graph input and by a Neg node"):
        check_model(model)


def _if_model(then_nodes, then_output: str) -> onnx.ModelProto:
    """y = If(c) then <then_nodes, output then_output> else x, c a constant true."""
    then_branch = oh.make_graph(then_nodes, "then", [], [oh.make_tensor_value_info(then_output, TensorProto.FLOAT, [4])])
    else_branch = oh.make_graph([oh.make_node("Identity", ["x"], ["e"])], "else", [],
                                [oh.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
    nodes = [oh.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True), "c")),
             oh.make_node("If", ["c"], ["y"], name="branch", then_branch=then_branch, else_branch=else_branch)]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def test_a_branch_that_returns_an_outer_value_directly_is_refused():
    """onnx.checker and ONNX Runtime refuse a subgraph output that is a value of the outer graph ('an
    Identity must come between'): the check took it, and a model compiled with --verify none was
    written so (found by the hand mutant that dropped 'not in outer': the mutant was right)."""
    check_model(_if_model([oh.make_node("Identity", ["x"], ["t"])], "t"))
    model = _if_model([], "x")
    with pytest.raises(InvalidModelError, match="output 'x' of subgraph 'then_branch' of node 'branch' .If. is a value "
                                                "of the outer graph returned directly"):
        check_model(model)
    with pytest.raises(onnx.checker.ValidationError, match="Graph output 'x' is not an output of any node"):
        onnx.checker.check_model(model)


def test_a_cycle_through_a_branchs_read_is_found():
    """If's branch reads 'n', which a Neg makes from the If's own output: a cycle only through the
    subgraph (mutant: subgraph reads left out of the order)."""
    model = _if_model([oh.make_node("Add", ["x", "n"], ["t"])], "t")
    model.graph.node.append(oh.make_node("Neg", ["y"], ["n"]))
    with pytest.raises(InvalidModelError, match="graph has a cycle through"):
        check_model(model)


def test_the_node_named_on_a_cycle_is_on_it():
    """The cycle's first node also reads a finished node's output, first in name order: the walk
    back must stay on the waiting nodes (mutant: '>= 0' for '> 0' walked off the cycle and
    failed with StopIteration)."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x) => (float[4] y) { early = Relu(x)  p = Add(early, q)  q = Neg(p)  y = Add(p, x) }
    """)
    with pytest.raises(InvalidModelError, match=r"graph has a cycle through a (Add|Neg) node"):
        check_model(model)


def _local(name: str, body_op: str, domain: str = "") -> onnx.FunctionProto:
    opsets = [oh.make_opsetid("", 17), oh.make_opsetid("local", 1)]
    return oh.make_function("local", name, ["a"], ["b"], [oh.make_node(body_op, ["a"], ["b"], domain=domain)], opsets)


def test_a_function_called_after_its_check_is_no_cycle():
    """G calls F, F is checked first: reaching a finished function again is no cycle (mutant: any
    function seen before taken for one on the path)."""
    model = _relu()
    model.opset_import.append(oh.make_opsetid("local", 1))
    model.functions.extend([_local("F", "Neg"), _local("G", "F", domain="local")])
    model.graph.node[0].op_type, model.graph.node[0].domain = "G", "local"
    check_model(model)


def test_a_sparse_constant_in_a_functions_branch_is_refused():
    """mutant: the If bodies inside model-local functions left out of the sparse-tensor check."""
    sparse = oh.make_sparse_tensor(numpy_helper.from_array(np.array([1.0], np.float32), "v"),
                                   numpy_helper.from_array(np.array([2], np.int64), "i"), [4])
    then_branch = oh.make_graph([oh.make_node("Constant", [], ["s"], sparse_value=sparse)], "then", [],
                                [oh.make_tensor_value_info("s", TensorProto.FLOAT, [4])])
    else_branch = oh.make_graph([oh.make_node("Identity", ["a"], ["e"])], "else", [],
                                [oh.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
    body = [oh.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True), "c")),
            oh.make_node("If", ["c"], ["b"], then_branch=then_branch, else_branch=else_branch)]
    model = _relu()
    model.opset_import.append(oh.make_opsetid("local", 1))
    model.functions.append(oh.make_function("local", "F", ["a"], ["b"], body, [oh.make_opsetid("", 17)]))
    model.graph.node[0].op_type, model.graph.node[0].domain = "F", "local"
    with pytest.raises(InvalidModelError, match="a Constant node holds a sparse tensor attribute"):
        check_model(model)


def _calling(function: onnx.FunctionProto) -> onnx.ModelProto:
    """RELU's model with its one node a call of ``function`` (domain 'local')."""
    model = _relu()
    model.opset_import.append(oh.make_opsetid("local", 1))
    model.functions.append(function)
    model.graph.node[0].op_type, model.graph.node[0].domain = function.name, "local"
    return model


@pytest.mark.parametrize("imports, body, message", [
    ([("", 999)], oh.make_node("Relu", ["a"], ["b"]),
     r"^model-local function 'local::F': opset 999 is newer than the newest this onnx knows \(\d+\)$"),
    ([("", 0)], oh.make_node("Relu", ["a"], ["b"]),
     r"^a Relu node in model-local function 'local::F': no op 'Relu' in opset 0 of domain 'ai.onnx'$"),
    ([("", 2**31)], oh.make_node("Relu", ["a"], ["b"]),
     r"^model-local function 'local::F': opset version 2147483648 of domain '' is out of range \(a 32-bit integer\)$"),
    ([("", 17), ("ai.onnx", 13)], oh.make_node("Relu", ["a"], ["b"]),
     r"^model-local function 'local::F': opset of domain 'ai.onnx' imported twice \(17 and 13\)$"),
    ([("", 17)], oh.make_node("NoSuchOp", ["a"], ["b"], name="n\x1b"),
     r"^node 'n\\x1b' \(NoSuchOp\) in model-local function 'local::F': no op 'NoSuchOp' in opset 17 of domain 'ai.onnx'$"),
    ([("", 17)], oh.make_node("Relu", ["a"], ["b"], bogus=3),
     r"^a Relu node in model-local function 'local::F': Unrecognized attribute: bogus for operator Relu$"),
    ([("", 17), ("ai.onnx.ml", 0)], oh.make_node("Normalizer", ["a"], ["b"], domain="ai.onnx.ml"),
     r"^a Normalizer node in model-local function 'local::F': no op 'Normalizer' in opset 0 of domain 'ai.onnx.ml'$"),
    ([("", 17)], oh.make_node("Add", ["a", "nowhere"], ["b"]),
     r"^a Add node in model-local function 'local::F' reads 'nowhere', which nothing produces$"),
    ([("", 17)], oh.make_node("Relu", ["a"], ["c"]),
     r"^output 'b' of model-local function 'local::F' is produced by nothing$"),
])
def test_a_local_functions_own_opsets_and_ops_are_checked(imports, body, message):
    """Found by adv10 (s24): a model-local function's own opset imports and body were not checked, so a
    function importing opset 999 or 0 of the default domain, calling an op that does not exist or with an
    attribute its schema lacks, or reading a value nothing produces compiled with --verify none (exit 0) into a
    model ONNX Runtime refuses
    ('Opset 999 ...', 'Invalid opset version for domain in function F'); the main graph's are refused."""
    function = oh.make_function("local", "F", ["a"], ["b"], [body], [oh.make_opsetid(*entry) for entry in imports])
    with pytest.raises(InvalidModelError, match=message):
        check_model(_calling(function))


def test_a_local_function_at_the_models_opsets_or_its_own_passes():
    """What ONNX Runtime runs passes: a function importing nothing (the model's opsets stand), one at another
    version of an op that version has, one of a custom domain's op (a custom op, left to ONNX Runtime as in the
    main graph), and an op inside an If of the function checked at the function's own opset."""
    relu = oh.make_node("Relu", ["a"], ["b"])
    check_model(_calling(oh.make_function("local", "F", ["a"], ["b"], [relu], [])))
    check_model(_calling(oh.make_function("local", "F", ["a"], ["b"], [relu], [oh.make_opsetid("", 14)])))
    custom = oh.make_node("Anything", ["a"], ["b"], domain="com.example", anything=1)
    check_model(_calling(oh.make_function("local", "F", ["a"], ["b"], [custom], [oh.make_opsetid("com.example", 1)])))
    then_branch = oh.make_graph([oh.make_node("Gelu", ["a"], ["t"])], "then", [], [oh.make_tensor_value_info("t", TensorProto.FLOAT, [4])])
    else_branch = oh.make_graph([oh.make_node("Neg", ["a"], ["e"])], "else", [], [oh.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
    body = [oh.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True))),
            oh.make_node("If", ["c"], ["b"], then_branch=then_branch, else_branch=else_branch)]
    model = _calling(oh.make_function("local", "F", ["a"], ["b"], body, [oh.make_opsetid("", 20)]))
    check_model(model)   # Gelu is opset 20's
    model.functions[0].opset_import[0].version = 19
    with pytest.raises(InvalidModelError, match=r"^a Gelu node in subgraph 'then_branch' of a If node: no op 'Gelu' in opset 19"):
        check_model(model)


@pytest.mark.parametrize("equation", ["ab\\c,jk->ik", "i\u0130j,jk->ik", "ij,jk->i-k", "ij,jk->ik->i", "iu0130j,jk->ik",
                                      "i...j...,jk->ik", "ij,jk->i......k"])
def test_an_einsum_equation_outside_onnx_grammar_is_refused_before_any_shape_inference(equation, tmp_path):
    """adv11 (s25): ONNX's shape inference never returned on 'ab\\c,jk->ik' or a non-ASCII letter with operands of
    rank 3 and 2 (passes.apply at 100% CPU for 10 minutes, SIGTERM unanswered); now one line, exit 2. So too a term
    with two ellipses (s25's mutation round of einsum-to-matmul: the CLI hung in the verifier's size check), which
    had a message of its own until s26."""
    node = oh.make_node("Einsum", ["x0", "x1"], ["y"], name="e", equation=equation)
    graph = oh.make_graph([node], "g", [oh.make_tensor_value_info("x0", TensorProto.FLOAT, [2, 3, 3]),
                                        oh.make_tensor_value_info("x1", TensorProto.FLOAT, [3, 4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    with pytest.raises(InvalidModelError) as error:
        check_model(model)
    assert str(error.value) == (f"node 'e' (Einsum): equation '{printable(equation)}' is not ONNX's Einsum grammar "
                                "(terms of ASCII letters and at most one '...', joined by ',', one optional '->')")
    from test_cli import apply_cli, assert_one_line_error
    onnx.save(model, tmp_path / "bad.onnx")
    result = apply_cli(tmp_path / "bad.onnx", "--pipeline", "cpu", "-o", tmp_path / "out.onnx", "--verify", "none")
    assert_one_line_error(result, 2, "is not ONNX's Einsum grammar")
    assert not (tmp_path / "out.onnx").exists()
    for fine in ("a bc, jk -> ik", "abc,jk", "...bc,jk->...k", "...ij,...jk->...ik"):   # spaces, implicit output,
        # one ellipsis a term
        model.graph.node[0].attribute[0].s = fine.encode()
        check_model(model)


def test_a_negative_dimension_is_refused():
    """adv13: an input declared (-5, 4) was verified on random data and written as it came (exit 0); an initializer of
    dims (-2, -2) holding 4 values passed the count of values (ONNX Runtime refuses it: 'Out of bounds dimensions')."""
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [-5, 4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [5, 4])])
    with pytest.raises(InvalidModelError) as error:
        check_model(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))
    assert str(error.value) == ("input 'x' of graph 'g' declares dimension -5 at axis 0: a size is 0 or more "
                                "(a size that varies is named)")
    weight = oh.make_tensor("w", TensorProto.FLOAT, [-2, -2], [1.0, 2.0, 3.0, 4.0])
    graph = oh.make_graph([oh.make_node("Add", ["x", "w"], ["y"])], "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [weight])
    with pytest.raises(InvalidModelError) as error:
        check_model(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))
    assert str(error.value) == "tensor 'w' declares dims [-2, -2]: a size is 0 or more"
    graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0   # an empty axis is a size
    graph.initializer[0].dims[:] = [2, 2]
    check_model(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))


@pytest.mark.parametrize("value", [np.array([1.0, 2.0], np.float32), np.zeros((0,), np.float32)])
def test_a_constant_of_shape_value_of_other_than_one_element_is_refused(value):
    """adv13: ConstantOfShape's value of [1.0, 2.0] (its schema: one element): ONNX Runtime refuses the node, but
    `cpu --verify none` folded it into a constant and wrote a model ONNX Runtime runs, exit 0."""
    nodes = [oh.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array([4], np.int64))),
             oh.make_node("ConstantOfShape", ["s"], ["c"], name="fill", value=numpy_helper.from_array(value)),
             oh.make_node("Add", ["x", "c"], ["y"])]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    with pytest.raises(InvalidModelError) as error:
        check_model(model)
    assert str(error.value) == (f"node 'fill' (ConstantOfShape): value holds {value.size} elements, dims {list(value.shape)}; "
                                "ConstantOfShape takes one")
    model.graph.node[1].attribute[0].t.CopyFrom(numpy_helper.from_array(np.array([2.0], np.float32)))
    check_model(model)


@pytest.mark.parametrize("where, element, message", [
    ("initializer", 999, "tensor 'w' is of data type 999, which ONNX does not define"),
    ("initializer", 0, "tensor 'w' is of data type 0, UNDEFINED"),
    ("input", 999, "input 'x' of graph 'g' is of element type 999, which ONNX does not define"),
    ("input", 0, "input 'x' of graph 'g' is of element type 0, UNDEFINED"),
])
def test_a_type_onnx_does_not_define_is_refused(where, element, message):
    """adv13: an initializer of data type 999 or 0, a graph input of element type 999 through `cpu --verify none`: exit 1
    (KeyError: 999; OnnxGraphSurgeonException 'Unsupported type: 0' with gs's own '[C]' line); an input of element
    type 0: onnxsim's note, written, exit 0."""
    weight = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    graph = oh.make_graph([oh.make_node("Add", ["x", "w"], ["y"])], "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    if where == "initializer":
        graph.initializer[0].data_type = element
    else:
        graph.input[0].type.tensor_type.elem_type = element
    with pytest.raises(InvalidModelError) as error:
        check_model(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))
    assert str(error.value) == message


@pytest.mark.parametrize("role", ["input", "output"])
def test_a_graph_input_or_output_with_no_type_is_refused(role):
    """adv20: a graph input with no type at all (a ValueInfoProto holding only its name) passed `cpu --verify none`,
    written as it came, exit 0 (onnxsim's note: "Field 'type' of 'value_info' is required but missing"); a verified run
    refused it only when making random data ("cannot make random data for input 'x' of type UNDEFINED")."""
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    value = (graph.input if role == "input" else graph.output)[0]
    value.ClearField("type")
    with pytest.raises(InvalidModelError) as error:
        check_model(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))
    assert str(error.value) == (f"{role} '{value.name}' of graph 'g' has no type, which onnx.checker requires of a "
                                "graph's inputs and outputs")


def _einsum_graph(equation: str, shapes: dict, declared, *, domain: str = "", weights=None, output: str = "y"):
    """One Einsum of the graph inputs in `shapes` (None: a type without a shape) into `output`, declared `declared` (a
    graph output; None: an intermediate no value declares, read by a Relu into y)."""
    inputs = [oh.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in shapes.items()]
    initializers = [numpy_helper.from_array(np.zeros(dims, np.float32), name) for name, dims in (weights or {}).items()]
    operands = list(shapes) + list(weights or {})
    nodes = [oh.make_node("Einsum", operands, [output], name="e", equation=equation, domain=domain)]
    outputs = [oh.make_tensor_value_info("y", TensorProto.FLOAT, declared)]
    if output != "y":
        nodes.append(oh.make_node("Relu", [output], ["y"]))
    return oh.make_graph(nodes, "g", inputs, outputs, initializers)


@pytest.mark.parametrize("equation, shapes, declared, kwargs, message", [
    # a letter whose operand axis and output axis differ: both named
    ("ij,jk->ki", {"a": [2, 3], "b": [3, 4]}, [5, 2], {}, "gives 'k' size 4 (input 'b' axis 1), its output 'y' declares 5 at axis 0"),
    ("bcij,bcjk->bcik", {"a": ["N", "C", 2, 3], "b": ["M", 5, 3, 4]}, ["N", 2, 2, 4], {},
     "gives 'c' size 5 (input 'b' axis 1), its output 'y' declares 2 at axis 1"),
    # both operands give b 5: the first one is named
    ("bij,bjk->bik", {"a": [5, 2, 3], "b": [5, 3, 4]}, [6, 2, 4], {}, "gives 'b' size 5 (input 'a' axis 0), its output 'y' declares 6 at axis 0"),
    # an operand without a shape, or of another rank than its term, gives no sizes; the other one does
    ("ij,jk->ik", {"a": [2, 3], "b": None}, [7, 4], {}, "gives 'i' size 2 (input 'a' axis 0), its output 'y' declares 7 at axis 0"),
    ("ij,jk->ik", {"a": [2, 3, 1], "b": [3, 4]}, [7, 9], {}, "gives 'k' size 4 (input 'b' axis 1), its output 'y' declares 9 at axis 1"),
    # an initializer's dims are its shape
    ("ij,jk->ik", {"a": [2, 3]}, [2, 9], {"weights": {"w": [3, 4]}},
     "gives 'k' size 4 (input 'w' axis 1), its output 'y' declares 9 at axis 1"),
])
def test_an_einsums_declared_output_is_read_against_each_operands_sizes(equation, shapes, declared, kwargs, message):
    """einsum_output_mismatch (adv13) had one CLI case: each operand's sizes, which operand is named, the two axes."""
    from passes.model_check import einsum_output_mismatch
    graph = _einsum_graph(equation, shapes, declared, **kwargs)
    assert einsum_output_mismatch(graph, list(graph.input) + list(graph.output)) == (
        f"node 'e' (Einsum): equation '{equation}' {message}")


@pytest.mark.parametrize("equation, shapes, declared, kwargs", [
    ("bij,bjk->bik", {"a": [1, 2, 3], "b": [5, 3, 4]}, [5, 2, 4], {}),     # a size 1 broadcasts
    ("ij,jk->ik", {"a": [2, 3], "b": [3, 4]}, ["N", 4], {}),               # a declared size that is a name
    ("ij,jk->ik", {"a": [2, 3], "b": [3, 4]}, [7], {}),                    # a declared rank other than the output's
    ("ij,jk->ik", {"a": [2, 3], "b": [3, 4]}, [7, 4], {"domain": "com.example"}),   # not ONNX's Einsum
    ("ij,jk->ik", {"a": [2, 3], "b": [3, 4]}, [7, 4], {"output": "t"}),    # the Einsum's own output declared nowhere
    ("ij,jk,kl->il", {"a": [2, 3], "b": [3, 4]}, [7, 4], {}),              # more terms than operands
    ("ij,jk", {"a": [2, 3], "b": [3, 4]}, [7, 4], {}),                     # no '->': the output is implicit
    # with '...' no term is read: '...ij' is 5 characters as a rank-5 operand is 5 axes, each '.' a different size
    ("...ij,...jk->...ik", {"a": [2, 3, 4, 5, 6], "b": [2, 3, 4, 6, 7]}, [2, 3, 4, 5, 7], {}),
])
def test_an_einsum_output_the_check_cannot_read_or_that_agrees_is_none(equation, shapes, declared, kwargs):
    from passes.model_check import einsum_output_mismatch
    graph = _einsum_graph(equation, shapes, declared, **kwargs)
    assert einsum_output_mismatch(graph, list(graph.input) + list(graph.output)) is None


def _scan_reading(read: str, *, late: bool = True, second: bool = False) -> onnx.ModelProto:
    """Scan (node 0, unnamed) whose body adds `read`, an outer value, to its scan slice; 'after' (Neg) makes 'late' after
    it where `late`; `second`: a second Scan 'again' reading 'later', which 'last' makes after both."""
    def scan(name: str, outer: str, output: str) -> onnx.NodeProto:
        body = oh.make_graph([oh.make_node("Add", ["u", outer], ["o"])], "body",
                             [oh.make_tensor_value_info("u", TensorProto.FLOAT, [4])],
                             [oh.make_tensor_value_info("o", TensorProto.FLOAT, [4])])
        return oh.make_node("Scan", ["a"], [output], name=name, body=body, num_scan_inputs=1)
    nodes = [scan("", read, "ys")]
    outputs = ["ys"]
    if second:
        nodes.append(scan("again", "later", "zs"))
        outputs.append("zs")
    if late:
        nodes.append(oh.make_node("Neg", ["x"], ["late"], name="after"))
    if second:
        nodes.append(oh.make_node("Neg", ["x"], ["later"], name="last"))
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("a", TensorProto.FLOAT, [3, 4]),
                                       oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info(name, TensorProto.FLOAT, [3, 4]) for name in outputs])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_a_subgraph_reading_an_outer_value_made_after_its_node_is_refused_naming_the_first():
    """adv15's late read had its test in test_unroll_loops only: the message's nodes, the first late read of two
    reported, an outer read of a graph input by the graph's first node taken (mutant: -1 for a missing producer)."""
    check_model(_scan_reading("x", late=False))       # node 0's body reads a graph input: no producer, no late read
    with pytest.raises(InvalidModelError) as error:
        check_model(_scan_reading("late"))
    assert str(error.value) == ("subgraph 'body' of a Scan node in graph reads 'late', which node 'after' (Neg) computes "
                                "after it (nodes must be topologically sorted)")
    with pytest.raises(InvalidModelError) as error:
        check_model(_scan_reading("late", second=True))
    assert str(error.value).startswith("subgraph 'body' of a Scan node in graph reads 'late', which node 'after'")


def test_a_late_read_inside_a_subgraph_names_the_subgraph():
    """The late read is reported where it is: an If's else branch whose Scan body reads a value the branch makes later."""
    inner = _scan_reading("late").graph
    inner.input.pop()       # 'x' and 'a' are the outer graph's inside the branch
    inner.input.pop()
    inner.name = "else"
    for value in inner.output:
        del value.type.tensor_type.shape.dim[:]
    model = _if_model([oh.make_node("Identity", ["x"], ["t"])], "t")
    next(attribute for attribute in model.graph.node[1].attribute if attribute.name == "else_branch").g.CopyFrom(inner)
    model.graph.node.insert(0, oh.make_node("Identity", ["x"], ["a"]))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    with pytest.raises(InvalidModelError) as error:
        check_model(model)
    assert str(error.value) == ("subgraph 'body' of a Scan node in subgraph 'else_branch' of node 'branch' (If) reads "
                                "'late', which node 'after' (Neg) computes after it (nodes must be topologically sorted)")


def test_a_constant_of_shape_of_another_domain_or_another_attribute_is_not_read():
    """The one-element rule is ONNX's ConstantOfShape's `value`: another domain's op of that name and another tensor
    attribute are not read, nor any other op's `value` (mutants: the op, its domain or the attribute's name dropped)."""
    two = numpy_helper.from_array(np.array([1.0, 2.0], np.float32))
    nodes = [oh.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array([4], np.int64))),
             oh.make_node("ConstantOfShape", ["s"], ["c"], name="fill", domain="com.example", value=two),
             oh.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.arange(4, dtype=np.float32))),
             oh.make_node("Add", ["x", "k"], ["y"])]   # a Constant's value of 4 elements is no ConstantOfShape's
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("com.example", 1)])
    check_model(model)
    from passes.model_check import _check_constant_of_shape_values
    node = oh.make_node("ConstantOfShape", ["s"], ["c"], name="fill", value=numpy_helper.from_array(np.array([3.0], np.float32)))
    node.attribute.append(oh.make_attribute("other", two))
    _check_constant_of_shape_values([node])

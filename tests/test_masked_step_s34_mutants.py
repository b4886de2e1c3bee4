"""patterns/masked_step.py's s34 additions (plain steps, float-masked steps, is_cast_bool, steps_before) against the
mutants the first tests left alive (session s35, mut38; docs/MUTATION.md): small graphs built with onnx-graphsurgeon,
each asserting what is found and what is not."""
from __future__ import annotations

import numpy as np
import pytest
import onnx_graphsurgeon as gs

from patterns.masked_step import is_cast_bool
from tools.synthetic_scans import ScanSpec


def _chain(ops, source_op="Greater", source_dtype=None):
    """A float mask read through `ops` (value-keeping, one input each) from Cast(source), source made by
    `source_op` (None: a graph input) of dtype `source_dtype` (None: unknown, as where no value_info is kept)."""
    x = gs.Variable("x", dtype=np.float32, shape=[4])
    source = gs.Variable("source", dtype=source_dtype)
    nodes = []
    if source_op is not None:
        nodes.append(gs.Node(source_op, inputs=[x, gs.Constant("zero", np.zeros(1, np.float32))], outputs=[source]))
    tensor = gs.Variable("cast", dtype=np.float32)
    nodes.append(gs.Node("Cast", attrs={"to": 1}, inputs=[source], outputs=[tensor]))
    for index, op in enumerate(ops):
        out = gs.Variable(f"v{index}", dtype=np.float32)
        nodes.append(gs.Node(op, inputs=[tensor], outputs=[out]))
        tensor = out
    gs.Graph(nodes=nodes, inputs=[x] if source_op is not None else [source], outputs=[tensor])
    return tensor


def test_a_cast_of_a_comparison_is_bool_read_through_at_most_fifteen_value_keeping_ops():
    # the comparison's output has no dtype here (no value_info): its producer says it is bool
    assert is_cast_bool(_chain([]))
    assert is_cast_bool(_chain(["Identity"] * 15))
    assert not is_cast_bool(_chain(["Identity"] * 16))   # the 16 looks of the default limit spent before the Cast
    assert is_cast_bool(_chain(["Identity"] * 16), limit=17)


def test_a_cast_of_anything_but_a_bool_is_not_read_as_one():
    assert not is_cast_bool(_chain(["Unsqueeze"], source_op="Add"))   # a float Add of unknown dtype
    assert not is_cast_bool(_chain(["Unsqueeze"], source_op="Add", source_dtype=np.float32))
    assert is_cast_bool(_chain(["Unsqueeze"], source_op="Add", source_dtype=np.bool_))   # its dtype says bool
    custom = _chain([])
    custom.inputs[0].inputs[0].inputs[0].domain = "com.example"   # a Greater of another domain
    assert not is_cast_bool(custom)
    assert is_cast_bool(_chain(["Reshape"], source_op=None, source_dtype=np.bool_))   # a bool graph input
    assert not is_cast_bool(_chain(["Reshape"], source_op=None))   # an input of unknown type
    assert not is_cast_bool(_chain(["Relu"]))   # a value-changing op on the way
    assert not is_cast_bool(gs.Variable("alone"))   # no producer
    constant = gs.Variable("c", dtype=np.float32)
    gs.Node("Constant", attrs={"value": np.ones(1, np.float32)}, inputs=[], outputs=[constant])
    assert not is_cast_bool(constant)   # a producer without inputs


def test_steps_before_links_each_step_to_the_one_whose_output_is_its_state_through_no_ops():
    from types import SimpleNamespace

    from patterns.masked_step import steps_before

    h0, h1, h2, h3 = (gs.Variable(f"h{index}", dtype=np.float32, shape=[2]) for index in range(4))
    seen = gs.Variable("h1_seen", dtype=np.float32, shape=[2])
    gs.Node("Identity", inputs=[h1], outputs=[seen])
    first = SimpleNamespace(state=h0, output=h1)
    second = SimpleNamespace(state=seen, output=h2)   # h1 through an Identity
    third = SimpleNamespace(state=h2, output=h3)
    loop = SimpleNamespace(state=h0, output=h0)   # its state its own output: no step before it
    assert steps_before([third, first, second]) == {id(second): first, id(third): second}
    assert steps_before([loop, first]) == {id(first): loop}
    assert steps_before([loop]) == {}


def _plain(edit=None):
    """Add(Mul(a, h), b) of graph inputs, `edit`(add, mul) applied; _plain_step's keys read from a and b."""
    from patterns.masked_step import _operand_key

    h, a, b = (gs.Variable(name, dtype=np.float32, shape=[2]) for name in "hab")
    product, out = gs.Variable("p", dtype=np.float32), gs.Variable("out", dtype=np.float32)
    mul = gs.Node("Mul", inputs=[a, h], outputs=[product])
    add = gs.Node("Add", inputs=[product, b], outputs=[out])
    if edit is not None:
        edit(add, mul)
    return add, mul, ({_operand_key(a)}, {_operand_key(b)})


def test_a_plain_step_is_a_binary_add_of_a_binary_mul_of_the_default_domain():
    from patterns.masked_step import _plain_step

    add, mul, keys = _plain()
    step = _plain_step(add, 0, 1, keys)
    assert (step.add, step.mul, step.mul_side, step.state_side) == (add, mul, 0, 1)
    assert (step.state.name, step.decay.name, step.drive.name, step.node, step.output.name, step.cond) == (
        "h", "a", "b", add, "out", None)
    assert _plain_step(add, 0, 0, keys) is None   # h read as the decay: not the masked steps' decay
    assert _plain_step(add, 0, 1, (keys[1], keys[1])) is None   # another decay
    assert _plain_step(add, 0, 1, (keys[0], keys[0])) is None   # another drive
    assert _plain_step(add, 1, 1, keys) is None   # b is no Mul

    def extra_input(node):
        node.inputs.append(gs.Variable(f"{node.op}_extra", dtype=np.float32, shape=[2]))

    def extra_output(node):
        node.outputs.append(gs.Variable(f"{node.op}_out2", dtype=np.float32))

    def domain(node):
        node.domain = "com.example"

    def div(node):
        node.op = "Div"

    for pick in (lambda add, mul: add, lambda add, mul: mul):
        for edit in (extra_input, extra_output, domain, div):
            add, _, keys = _plain(lambda add, mul: edit(pick(add, mul)))
            assert _plain_step(add, 0, 1, keys) is None, (edit.__name__, pick(add, mul).op)


def test_operand_key_reads_a_step_slice_by_its_data_and_a_computed_operand_by_its_op():
    from patterns.masked_step import _operand_key

    data = gs.Variable("A", dtype=np.float32, shape=[8, 2])
    other = gs.Variable("B", dtype=np.float32, shape=[8, 2])

    def made(op, inputs, name):
        out = gs.Variable(name, dtype=np.float32)
        gs.Node(op, inputs=inputs, outputs=[out])
        return out

    index = gs.Constant("t", np.array(3, np.int64))
    step = made("Unsqueeze", [made("Squeeze", [made("Gather", [data, index], "g")], "s")], "u")
    assert _operand_key(step) == ("Gather", id(data))
    assert _operand_key(made("Gather", [other, index], "g2")) == ("Gather", id(other))
    assert _operand_key(made("Slice", [data, index, index], "sl")) == ("Slice", id(data))
    assert _operand_key(made("Exp", [data], "e")) == ("Exp", None)
    assert _operand_key(made("Unsqueeze", [made("Exp", [data], "e2")], "ue")) == ("Exp", None)
    assert _operand_key(data) == ("tensor", id(data))
    unsqueezed = made("Unsqueeze", [data], "ud")
    assert _operand_key(unsqueezed) == ("tensor", id(unsqueezed))   # of a graph input: itself
    bare = gs.Variable("bare", dtype=np.float32)
    gs.Node("Gather", inputs=[], outputs=[bare])
    assert _operand_key(bare) == ("Gather", None)   # a Gather without inputs (no data to name)


FLOAT_REROLLED = {"rerolled": 1, "steps": 8, "rejected": 0, "step_operands_replayed": 2, "masked_steps": 8}


def _float_model(spelling, swap):
    """The float-masked chain (tools.synthetic_scans) with the operands of its commutative nodes (Add, Mul) swapped:
    "add", "mul" or "both" of every such node (the graph's value unchanged)."""
    from tools.synthetic_scans import ScanSpec, unrolled_scan_model

    spec = ScanSpec(length=8, state=2, mask="then", mask_spelling=spelling)
    model = unrolled_scan_model(spec)
    for node in model.graph.node:
        if node.op_type in {"add": ("Add",), "mul": ("Mul",), "both": ("Add", "Mul"), "none": ()}[swap]:
            node.input[0], node.input[1] = node.input[1], node.input[0]
    return spec, model


@pytest.mark.parametrize("swap", ["add", "mul", "both"])
@pytest.mark.parametrize("spelling", ["blend", "delta"])
def test_a_float_masked_chain_with_its_operands_in_the_other_order_is_found_and_rerolls(spelling, swap):
    # m (a h + b) + (1 - m) h as (h (1 - m)) + ((b + h a) m) and every other order: the same 8 steps, one scan,
    # the blend's and delta's values with a 0/1 mask and a soft one
    from passes.reroll_scans import RerollScans
    from patterns.masked_step import find_float_masked_steps
    from scan_testing import apply_pass, rel_l2, run
    from tools.synthetic_scans import numpy_scan, scan_inputs

    spec, model = _float_model(spelling, swap)
    steps = find_float_masked_steps(gs.import_onnx(model))
    assert len(steps) == 8 and {step.spelling for step in steps} == {spelling}
    assert {(step.mul_side, step.state_side) for step in steps} == {
        (1 if swap in ("add", "both") else 0, 0 if swap in ("mul", "both") else 1)}
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == FLOAT_REROLLED and result.notes == []
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        soft = {**feeds, "m": np.random.default_rng(seed + 10).uniform(0, 1, feeds["m"].shape).astype(np.float32)}
        for inputs in (feeds, soft):
            assert rel_l2(run(out, inputs)[0], numpy_scan(spec, inputs)) <= 1e-6


def test_is_one_is_a_constant_one_of_one_element_and_binary_a_two_input_one_output_node_of_the_default_domain():
    from patterns.masked_step import _binary, _is_one, _only_reader

    assert _is_one(gs.Constant("one", np.array(1.0, np.float32)))
    assert _is_one(gs.Constant("one1", np.ones([1, 1], np.float16)))
    assert not _is_one(gs.Constant("two", np.array([2.0], np.float32)))   # Sub(2, m): no blend
    assert not _is_one(gs.Constant("ones", np.ones(2, np.float32)))   # two elements, both one
    assert not _is_one(gs.Variable("x", dtype=np.float32, shape=[1]))

    x, y = (gs.Variable(name, dtype=np.float32, shape=[2]) for name in "xy")
    outs = [gs.Variable(f"o{index}", dtype=np.float32) for index in range(6)]
    nodes = [gs.Node("Mul", inputs=[x, y], outputs=[outs[0]]),
             gs.Node("Mul", inputs=[x, y, x], outputs=[outs[1]]),
             gs.Node("Mul", inputs=[x, y], outputs=[outs[2], outs[5]]),
             gs.Node("Mul", inputs=[x, y], outputs=[outs[3]], domain="com.example"),
             gs.Node("Add", inputs=[x, y], outputs=[outs[4]])]
    assert _binary(outs[0], "Mul") is nodes[0]
    assert [_binary(outs[index], "Mul") for index in (1, 2, 3, 4)] == [None] * 4
    assert _binary(x, "Mul") is None   # a graph input: no producer
    assert _only_reader(x, nodes[0]) is False   # read by all five
    reader = gs.Node("Relu", inputs=[outs[0]], outputs=[gs.Variable("r", dtype=np.float32)])
    assert _only_reader(outs[0], reader) and not _only_reader(outs[0], nodes[0]) and not _only_reader(outs[4], reader)


@pytest.mark.parametrize("spelling", ["blend", "delta"])
@pytest.mark.parametrize("inner", [False, True])
def test_a_float_masked_step_whose_step_or_inner_value_is_a_graph_output_is_not_taken(spelling, inner):
    # the rewrite takes the step's Add (and the blend's or delta's inner nodes) out of the graph: one whose output the
    # graph returns is left, and the chain links around it (3 steps before, 4 after)
    from onnx import helper

    from patterns.masked_step import find_float_masked_steps

    _, model = _float_model(spelling, "none")
    steps = find_float_masked_steps(gs.import_onnx(model))
    assert len(steps) == 8
    name = (steps[3].inner[0] if inner else steps[3].add).outputs[0].name
    model.graph.output.append(helper.make_tensor_value_info(name, 1, None))
    steps = find_float_masked_steps(gs.import_onnx(model))
    assert len(steps) == 7 and name not in {tensor.name for step in steps
                                            for node in (step.add, *step.inner) for tensor in node.outputs}


def _float_step(spelling):
    from patterns.masked_step import _float_masked_step, find_float_masked_steps

    _, model = _float_model(spelling, "none")
    graph = gs.import_onnx(model)
    step = find_float_masked_steps(graph)[3]
    assert _float_masked_step(step.node) == step
    return graph, step


@pytest.mark.parametrize("edit", ["domain", "three-inputs", "two-outputs", "sub"])
def test_a_float_masked_steps_outer_node_is_a_binary_add_of_the_default_domain(edit):
    from patterns.masked_step import _float_masked_step

    for spelling in ("blend", "delta"):
        _, step = _float_step(spelling)
        node = step.node
        if edit == "domain":
            node.domain = "com.example"
        elif edit == "three-inputs":
            node.inputs.append(node.inputs[1])
        elif edit == "two-outputs":
            node.outputs.append(gs.Variable("also", dtype=np.float32))
        else:
            node.op = "Sub"
        assert _float_masked_step(node) is None, spelling


@pytest.mark.parametrize("spelling", ["blend", "delta"])
def test_a_float_masked_step_whose_inner_value_is_read_elsewhere_is_not_one(spelling):
    # every value between the step Add(Mul(a, h), b) and the outer Add is read by the next node alone: the rewrite
    # takes them out of the graph
    from patterns.masked_step import _float_masked_step

    _, step = _float_step(spelling)
    first, second = step.inner
    values = [step.mul.outputs[0], step.add.outputs[0], first.outputs[0], second.outputs[0]]
    assert len(set(map(id, values))) == 4
    for value in values:
        _, step = _float_step(spelling)
        value = [step.mul.outputs[0], step.add.outputs[0], step.inner[0].outputs[0], step.inner[1].outputs[0]][
            [v.name for v in values].index(value.name)]
        reader = gs.Node("Identity", inputs=[value], outputs=[gs.Variable("seen", dtype=np.float32)])
        assert _float_masked_step(step.node) is None, value.name
        reader.inputs.clear()
        assert _float_masked_step(step.node) is not None


@pytest.mark.parametrize("edit", ["two-minus-m", "one-minus-another-mask"])
def test_a_blend_whose_kept_weight_is_not_one_minus_its_mask_is_no_float_masked_step(edit):
    # m (a h + b) + (2 - m) h, m (a h + b) + (1 - m') h: no step of the form m S + (1 - m) h
    from patterns.masked_step import _float_masked_step

    _, step = _float_step("blend")
    one_minus = next(node for node in step.inner[1].inputs[0].inputs + step.inner[1].inputs[1].inputs
                     if node.op == "Sub")
    if edit == "two-minus-m":
        one_minus.inputs[0] = gs.Constant("two", np.array(2.0, np.float32))
    else:
        one_minus.inputs[1] = gs.Variable("other_mask", dtype=np.float32, shape=[1, 1, 1])
    assert _float_masked_step(step.node) is None


def _nodes(model):
    return sorted((node.op_type, node.domain, tuple(node.input), tuple(node.output),
                   tuple(attribute.SerializeToString() for attribute in node.attribute)) for node in model.graph.node)


@pytest.mark.parametrize("spelling, masked_steps, mask_length", [
    ("blend", None, 8), ("delta", None, 8), ("blend-cast", None, 8), ("unsqueeze", (0, 1, 2), 8),
    ("unsqueeze", (3, 4, 5, 6, 7), 8), ("unsqueeze", (0, 1, 2), "L")])
def test_a_float_masked_or_mixed_chain_refused_by_a_log_space_form_is_restored_edge_for_edge(spelling, masked_steps,
                                                                                            mask_length):
    # restore: every node back with its own inputs and outputs (the step Add, the blend's or delta's inner nodes, a
    # plain step's decay and drive), nothing made left (a mask of unknown length: the Concat of its copies its chain's
    # steps share), the same values
    from passes.reroll_scans import RerollScans
    from scan_testing import apply_pass, run
    from tools.synthetic_scans import ScanSpec, scan_inputs, unrolled_scan_model

    spec = ScanSpec(length=8, state=2, mask="then", mask_spelling=spelling, masked_steps=masked_steps, decay="tanh")
    model = unrolled_scan_model(spec)
    mask = next(value for value in model.graph.input if value.name == "m")
    if mask_length == "L":
        mask.type.tensor_type.shape.dim[1].dim_param = "L"
    out, result = apply_pass(model, RerollScans(form="batched", chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert _nodes(out) == _nodes(model)
    feeds = scan_inputs(spec)
    assert np.array_equal(run(out, feeds)[0], run(model, feeds)[0])


def _two_chains(first, second):
    """One model of two chains side by side (their names prefixed 'a_' and 'b_'), in that order of nodes."""
    from onnx import compose, helper

    from tools.synthetic_scans import unrolled_scan_model

    models = [compose.add_prefix(unrolled_scan_model(spec), prefix) for spec, prefix in ((first, "a_"), (second, "b_"))]
    graphs = [model.graph for model in models]
    graph = helper.make_graph([node for graph in graphs for node in graph.node], "two_chains",
                              [value for graph in graphs for value in graph.input],
                              [value for graph in graphs for value in graph.output],
                              [tensor for graph in graphs for tensor in graph.initializer])
    return helper.make_model(graph, opset_imports=models[0].opset_import, ir_version=models[0].ir_version)


@pytest.mark.parametrize("order", ["taken-first", "restored-first"])
@pytest.mark.parametrize("restored, taken_spelling", [("blend", "unsqueeze"), ("delta", "unsqueeze"),
                                                      ("where", "unsqueeze"), ("blend", "blend-cast")])
def test_a_chain_restored_beside_a_taken_one_removes_only_its_own_nodes(order, restored, taken_spelling):
    # the batched form takes the masked chain of Exp decays and refuses the other (a float mask's Sub decays, or the
    # Where chain's Tanh ones): restoring that one removes the nodes made for it alone, never the taken chain's
    # (made = the builder's nodes from the rewrite's first: all of them before, mut37's and mut38's open mutant)
    from passes.reroll_scans import RerollScans
    from scan_testing import apply_pass, rel_l2, run
    from tools.synthetic_scans import ScanSpec, numpy_scan, scan_inputs

    taken = ScanSpec(length=8, state=2, mask="then", mask_spelling=taken_spelling)   # blend-cast: Where decays
    other = ScanSpec(length=8, state=2, mask="then", mask_spelling="unsqueeze" if restored == "where" else restored,
                     decay="tanh" if restored == "where" else "exp")
    specs = (taken, other) if order == "taken-first" else (other, taken)
    model = _two_chains(*specs)
    out, result = apply_pass(model, RerollScans(form="batched", chunk=4))
    assert (result.stats["rerolled"], result.stats["rejected"]) == (1, 1)
    feeds = {}
    for spec, prefix in zip(specs, ("a_", "b_")):
        feeds.update({prefix + name: value for name, value in scan_inputs(spec).items()})
    got = dict(zip([value.name for value in out.graph.output], run(out, feeds)))
    for spec, prefix in zip(specs, ("a_", "b_")):
        expected = numpy_scan(spec, {name[len(prefix):]: value for name, value in feeds.items()
                                     if name.startswith(prefix)})
        assert rel_l2(got[prefix + model.graph.output[0].name[2:]], expected) <= 1e-6


@pytest.mark.parametrize("form", ["parallel", "batched-doubling"])
def test_a_mixed_chain_whose_masked_steps_take_both_branches_keeps_its_values(form):
    # torch.where(m, a h + b, h) at steps 0 and 2, torch.where(~m, h, a h + b) at step 1, plain steps after: the
    # plain steps' cond (Or with K, the then branch's) would be wrong for the else step's; the values stay the scan's
    from onnx import helper

    from passes.reroll_scans import RerollScans
    from scan_testing import apply_pass, rel_l2, run
    from tools.synthetic_scans import ScanSpec, numpy_scan, scan_inputs, unrolled_scan_model

    spec = ScanSpec(length=8, state=2, mask="then", masked_steps=(0, 1, 2))
    model = unrolled_scan_model(spec)
    wheres = [node for node in model.graph.node if node.op_type == "Where"]
    assert len(wheres) == 3
    where = wheres[1]
    index = list(model.graph.node).index(where)
    model.graph.node.insert(index, helper.make_node("Not", [where.input[0]], ["not_cond"], name="not_cond"))
    where.input[0], where.input[1], where.input[2] = "not_cond", where.input[2], where.input[1]
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    # the 8-step chain named (its masked steps' conds not one subgraph), its 5 plain steps re-rolled alone
    assert result.stats == {"rerolled": 1, "steps": 5, "rejected": 0, "part_of_axis": 1}
    assert result.notes == [f"chain at 'Where_16' (8 steps) not re-rolled: its {operands} are computed at every step, "
                            "but not by one subgraph (step 1 departs from step 0 at Not 'not_cond' (step 0 has "
                            "Unsqueeze 'Unsqueeze_14' there))" for operands in ("decays", "drives")]
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(model, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6   # (the edit is the same scan)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("order", ["masked-first", "mixed-first"])
def test_a_mixed_chain_beside_a_chain_of_masked_steps_only_is_one_scan_too(order):
    # the chain of masked steps only needs no plain-step conds: passed over, the mixed chain after it still gets its own
    from passes.reroll_scans import RerollScans
    from scan_testing import apply_pass

    every = ScanSpec(length=8, state=2, mask="then")
    mixed = ScanSpec(length=8, state=2, mask="then", masked_steps=(0, 1, 2))
    out, result = apply_pass(_two_chains(*((every, mixed) if order == "masked-first" else (mixed, every))),
                             RerollScans(form="parallel", chunk=4))
    assert (result.stats["rerolled"], result.stats["steps"], result.notes) == (2, 16, [])


@pytest.mark.parametrize("masked_steps", [(0, 1, 2), (3, 4, 5, 6)])
def test_a_mixed_chain_from_position_one_is_one_scan(masked_steps):
    # `for t in range(1, L)`: positions 1 .. 7, contiguous from 1, not from 0
    from passes.reroll_scans import RerollScans
    from scan_testing import apply_pass, rel_l2, run
    from tools.synthetic_scans import numpy_scan, scan_inputs, unrolled_scan_model

    spec = ScanSpec(length=7, state=2, mask="then", masked_steps=masked_steps, first=1)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form="parallel", chunk=4))
    assert (result.stats["rerolled"], result.stats["steps"], result.notes) == (1, 7, [])
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6

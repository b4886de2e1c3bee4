"""passes/static_shapes.py on its own: the bound on ONNX's data propagation (each rank-1 value's size, counted
exactly), the static element counts verification and fold-constants read, and static_shapes. Written for s23's
mutation run: its survivors had only the whole-pipeline hardening tests (tests/test_hardening.py) over them."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.static_shapes import (MAX_PROPAGATED_ELEMENTS, ContradictedValueInfo, contradicted_value_info,
                                  data_propagation_refusal, drop_value_info_shapes, named_shapes,
                                  static_element_counts, static_shapes)


def _rank1_model(nodes, bound_of: str, padding: int, inputs=(), inits=(), value_info=()) -> onnx.ModelProto:
    """`nodes` making `bound_of`, which and every other node output are declared int64[unknown] (sizes plain
    inference left unknown, as on the TorchScript exporter's shape arithmetic), and a graph input "padding" of
    int64[padding] that fills the count up; x (2, 3, 4) and y (5, 6) floats as inputs too."""
    declared = {info.name for info in value_info}
    # bound_of declared first: its walk meets every value before their own turn (each bounded once, shared)
    value_info = [_UNKNOWN(bound_of)] + list(value_info) + [
        _UNKNOWN(name) for node in nodes for name in node.output if name != bound_of and name not in declared]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 6]),
         helper.make_tensor_value_info("padding", TensorProto.INT64, [padding]), *inputs],
        [helper.make_tensor_value_info(bound_of, TensorProto.INT64, ["unknown"])], list(inits),
        value_info=list(value_info))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


_SHAPE_X = helper.make_node("Shape", ["x"], ["sx"])   # 3 elements: x's rank
_SHAPE_Y = helper.make_node("Shape", ["y"], ["sy"])   # 2
# case: (nodes making c, _rank1_model's other arguments, the elements counted: each rank-1 value's bound, summed)
_UNKNOWN = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["unknown"])   # noqa: E731

CASES = {
    "shape": ([_SHAPE_X, helper.make_node("Identity", ["sx"], ["c"])], {}, 3 + 3),
    "concat-sums": ([_SHAPE_X, _SHAPE_Y, helper.make_node("Concat", ["sx", "sy"], ["c"], axis=0)], {}, 3 + 2 + 5),
    "concat-of-one-twice": ([_SHAPE_X, helper.make_node("Concat", ["sx", "sx"], ["c"], axis=0)], {}, 3 + 6),
    "others-take-the-largest": ([_SHAPE_X, _SHAPE_Y, helper.make_node("Max", ["sy", "sx"], ["c"])], {}, 3 + 2 + 3),
    "a-value-of-known-size": ([_SHAPE_X, helper.make_node("Concat", ["sx", "four"], ["c"], axis=0)],
                              {"inits": [numpy_helper.from_array(np.arange(4, dtype=np.int64), "four")]}, 3 + 4 + 7),
    "a-known-rank-2-value-squeezed": ([helper.make_node("Squeeze", ["m"], ["c"])],
                                      {"inputs": [helper.make_tensor_value_info("m", TensorProto.INT64, [1, 5])]}, 5),
    "a-graph-input-is-fed": ([helper.make_node("Concat", ["fed", "fed"], ["c"], axis=0)],
                             {"inputs": [_UNKNOWN("fed")]}, 0),
    "a-chain": ([_SHAPE_X, helper.make_node("Identity", ["sx"], ["i1"]), helper.make_node("Cast", ["i1"], ["i2"], to=7),
                 _SHAPE_Y, helper.make_node("Concat", ["i2", "sy", "i1"], ["c"], axis=0)],
                {}, 3 + 3 + 3 + 2 + 8),
    # TorchScript's arange(seq_len) of a dynamic-batch export: Range(start, Cast(Gather(Shape(x), i)), delta), x's
    # size there known to plain inference: ceil((4 - 1) / 2) = 2 elements (s24; refused before, and with it every
    # shape a dynamic-batch RecurrentGemma computes)
    "a-range-of-a-known-size": ([_SHAPE_X, helper.make_node("Gather", ["sx", "minus_one"], ["n"], axis=0),
                                 helper.make_node("Cast", ["n"], ["n64"], to=TensorProto.INT64),
                                 helper.make_node("Range", ["start", "n64", "delta"], ["c"])],
                                {"inits": [numpy_helper.from_array(np.array(value, np.int64), name) for name, value in
                                           (("minus_one", -1), ("start", 1), ("delta", 2))],
                                 "value_info": [helper.make_tensor_value_info(name, TensorProto.INT64, [])
                                                for name in ("n", "n64")]}, 3 + 2),
    "ones-like-a-shape": ([_SHAPE_X, helper.make_node("Shape", ["sx"], ["ssx"]),
                           helper.make_node("ConstantOfShape", ["ssx"], ["c"],
                                            value=numpy_helper.from_array(np.array([1], np.int64)))], {}, 3 + 1 + 3),
    # s25: a rank-2 value of known size flattened by a target plain inference cannot read (Zamba2's Reshape(OneHot, ..))
    "a-known-rank-2-value-flattened": ([helper.make_node("Reshape", ["m", "minus_one_1d"], ["c"])],
                                       {"inputs": [helper.make_tensor_value_info("m", TensorProto.INT64, [1, 5])],
                                        "inits": [numpy_helper.from_array(np.array([-1], np.int64), "minus_one_1d")]},
                                       1 + 5),
    # s25: TorchScript's F.pad, as in Zamba2's hybrid layer: zeros of 6 - len(pads) (a length computed from a known
    # size, no propagation needed), Concat(pads, zeros) reshaped to (-1, 2), reversed, transposed and flattened
    "torchscript-pad-flipped": (
        [helper.make_node("Shape", ["pads"], ["sp"]), helper.make_node("Gather", ["sp", "zero_1d"], ["n"], axis=0),
         helper.make_node("Sub", ["six_1d", "n"], ["length"]), helper.make_node("ConstantOfShape", ["length"], ["zeros"]),
         helper.make_node("Concat", ["pads", "zeros"], ["both"], axis=0),
         helper.make_node("Reshape", ["both", "pairs"], ["r"]),
         helper.make_node("Slice", ["r", "minus_one_1d", "low", "zero_1d", "minus_one_1d"], ["flipped"]),
         helper.make_node("Transpose", ["flipped"], ["t"], perm=[1, 0]),
         helper.make_node("Reshape", ["t", "minus_one_1d"], ["c"])],
        {"inits": [numpy_helper.from_array(np.array(value, np.int64), name) for name, value in
                   (("pads", [0, 1, 0, 2]), ("zero_1d", [0]), ("six_1d", [6]), ("minus_one_1d", [-1]),
                    ("pairs", [-1, 2]), ("low", [-(1 << 62)]))],
         "value_info": [helper.make_tensor_value_info("length", TensorProto.INT64, [1]),
                        *[helper.make_tensor_value_info(name, TensorProto.INT64, dims) for name, dims in
                          (("r", ["a", 2]), ("flipped", ["b", 2]), ("t", [2, "b"]))]]},
        4 + 1 + 1 + 1 + 2 + 1 + 1 + 1 + 1 + 2 + 6 + 6),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_rank1_values_size_is_bounded_exactly(case):
    """The bounds are exact here (the count is every rank-1 value's, intermediates too: `counted` beside the
    padding): refused one element past MAX_PROPAGATED_ELEMENTS, not at it (s23's mutants of _size_bound: a Shape's
    rank read as 0 or 1, a Concat's sum, a source seen twice, a value of known size, the walk's `continue` made
    `break`, and `>=` for `>` at the cap, all passed)."""
    nodes, extra, counted = CASES[case]
    at_cap = _rank1_model(nodes, "c", MAX_PROPAGATED_ELEMENTS - counted, **extra)
    assert data_propagation_refusal(at_cap) is None
    past = _rank1_model(nodes, "c", MAX_PROPAGATED_ELEMENTS - counted + 1, **extra)
    total = MAX_PROPAGATED_ELEMENTS + 1
    assert data_propagation_refusal(past) == (
        f"rank-1 tensors hold {total:,} elements (> {MAX_PROPAGATED_ELEMENTS:,}; 'padding' "
        f"{MAX_PROPAGATED_ELEMENTS - counted + 1:,}), which data propagation would write out one by one")


@pytest.mark.parametrize("nodes, extra", [
    # ConstantOfShape of a rank-2 value's Shape: its size is a product of values, not bounded by a rank
    ([helper.make_node("Shape", ["m"], ["sm"]), helper.make_node("ConstantOfShape", ["sm"], ["c"])],
     {"inputs": [helper.make_tensor_value_info("m", TensorProto.INT64, [2, 2])]}),
    # ConstantOfShape(Shape(v)) with a start: part of a shape
    ([_SHAPE_X, helper.make_node("Shape", ["sx"], ["ssx"], start=0), helper.make_node("ConstantOfShape", ["ssx"], ["c"])],
     {}),
    # a source of unknown size and rank 2
    ([helper.make_node("Squeeze", ["q"], ["c"])],
     {"inputs": [helper.make_tensor_value_info("q", TensorProto.INT64, [1, "unknown"])]}),
    # s25: a rank-2 value of unknown size transposed (a graph input: nothing bounds it) and one made by broadcasting
    ([helper.make_node("Transpose", ["q"], ["t"], perm=[1, 0]), helper.make_node("Reshape", ["t", "minus_one"], ["c"])],
     {"inputs": [helper.make_tensor_value_info("q", TensorProto.INT64, [1, "unknown"]),
                 helper.make_tensor_value_info("minus_one", TensorProto.INT64, [1])],
      "value_info": [helper.make_tensor_value_info("t", TensorProto.INT64, ["unknown", 1])]}),
    ([_SHAPE_X, _SHAPE_Y, helper.make_node("Unsqueeze", ["sx", "one_1d"], ["column"]),
      helper.make_node("Add", ["column", "sy"], ["grid"]), helper.make_node("Reshape", ["grid", "minus_one"], ["c"])],
     {"inputs": [helper.make_tensor_value_info("minus_one", TensorProto.INT64, [1])],
      "inits": [numpy_helper.from_array(np.array([1], np.int64), "one_1d")],
      "value_info": [helper.make_tensor_value_info("column", TensorProto.INT64, ["a", 1]),
                     helper.make_tensor_value_info("grid", TensorProto.INT64, ["a", "b"])]}),
    # made from values (Range): only data propagation would size it
    ([helper.make_node("Range", ["zero", "n", "one"], ["c"])],
     {"inputs": [helper.make_tensor_value_info(name, TensorProto.INT64, []) for name in ("zero", "n", "one")]}),
    # a Range to a symbolic size, or by a delta of 0 (no length)
    *[([helper.make_node("Shape", ["s"], ["ss"]), helper.make_node("Gather", ["ss", "zero"], ["n"], axis=0),
        helper.make_node("Range", ["zero", "n", delta], ["c"])],
       {"inputs": [helper.make_tensor_value_info("s", TensorProto.FLOAT, [size, 3])],
        "inits": [numpy_helper.from_array(np.array(value, np.int64), name) for name, value in
                  (("zero", 0), ("one", 1))],
        "value_info": [helper.make_tensor_value_info("n", TensorProto.INT64, [])]})
      for size, delta in (("batch", "one"), (4, "zero"))],
])
def test_a_rank1_value_sized_only_by_data_propagation_is_refused(nodes, extra):
    assert data_propagation_refusal(_rank1_model(nodes, "c", 1, **extra)) == \
        "rank-1 tensor 'c' has a size only data propagation would find"


def test_static_element_counts_reads_inputs_value_info_outputs_and_with_subgraphs_the_bodies():
    body = helper.make_graph([helper.make_node("Neg", ["x"], ["inner"])], "body", [],
                             [helper.make_tensor_value_info("inner", TensorProto.FLOAT, [2, 3])],
                             value_info=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["mid"]), helper.make_node("If", ["cond"], ["out"], then_branch=body,
                                                                   else_branch=body)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("dyn", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, -1])],
        value_info=[helper.make_tensor_value_info("mid", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    counts = lambda **flags: [tuple(count) for count in static_element_counts(model, **flags)]   # noqa: E731
    main = [("mid", (2, 3), 6), ("out", (2, -1), 0)]
    assert counts() == [("x", (2, 3), 6), ("cond", (), 1)] + main
    assert counts(graph_inputs=False) == main
    assert counts(graph_inputs=False, subgraphs=True) == main + [("x", (2, 3), 6), ("inner", (2, 3), 6)] * 2


def test_static_shapes_knows_constants_inferred_values_and_shapes_the_graph_carries():
    """A value inference sizes (2, 3); a constant its own shape; a symbolic batch None; a value of a custom op that
    inference cannot size, its shape carried by the graph (gs), taken; a negative size, never."""
    x = gs.Variable("x", np.float32, [2, 3])
    batch = gs.Variable("b", np.float32, ["batch", 3])
    weight = gs.Constant("w", np.ones((3,), np.float32))
    summed = gs.Variable("summed", np.float32)
    doubled = gs.Variable("doubled", np.float32)
    custom = gs.Variable("custom", np.float32, [7, 1])
    odd = gs.Variable("odd", np.float32, [-1, 2])
    graph = gs.Graph(nodes=[gs.Node("Add", inputs=[x, weight], outputs=[summed]),
                            gs.Node("Add", inputs=[batch, batch], outputs=[doubled]),
                            gs.Node("Mystery", domain="custom.domain", inputs=[x], outputs=[custom]),
                            gs.Node("Mystery", domain="custom.domain", inputs=[x], outputs=[odd])],
                     inputs=[x, batch], outputs=[summed, doubled, custom, odd], opset=17)
    shapes = static_shapes(graph)
    assert {name: shapes.get(name) for name in ("x", "w", "summed", "b", "doubled", "custom", "odd")} == {
        "x": (2, 3), "w": (3,), "summed": (2, 3), "b": None, "doubled": None, "custom": (7, 1), "odd": None}


def test_symbolic_shapes_size_what_onnx_inference_leaves_unknown():
    """A Slice whose end is Shape(x)[2] / 2: ONNX's inference gives (?, ?, ?), ONNX Runtime's symbolic inference
    (batch, 8, 3), the batch a symbol (None)."""
    import onnx.parser

    from passes.graph_io import model_to_graph
    from passes.static_shapes import partial_shapes, symbolic_partial_shapes

    graph = model_to_graph(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[batch, 8, 6] x) => (float y) <int64 two = {2}, int64[1] zero = {0}, int64[1] axis = {2}> {
          s = Shape(x)
          d = Gather<axis = 0>(s, two)
          half = Div(d, two)
          end = Unsqueeze(half, zero)
          r = Slice(x, zero, end, axis)
          y = Relu(r)
        }"""))
    assert partial_shapes(graph)["r"] == (None, None, None)
    shapes = symbolic_partial_shapes(graph)
    assert (shapes["r"], shapes["y"], shapes["x"]) == ((None, 8, 3), (None, 8, 3), (None, 8, 6))


@pytest.mark.parametrize("x_shape, y_shape, u_shape, z_shape", [
    (["batch", 3], [4, 3], (None, 3), (4, 3)),
    ([2, 3, "n"], [2, 3, 4], (2, 3, None), (2, 3, 4)),
    (["b", 3, "n"], [5, 3, 4], (None, 3, None), (5, 3, 4)),
])
@pytest.mark.parametrize("symbol_first", [True, False])
def test_a_symbol_broadcast_against_a_size_stays_a_symbol(x_shape, y_shape, u_shape, z_shape, symbol_first):
    """u = Relu(x), z = u + y (or y + u): ONNX Runtime's own tool (auto_merge) takes each symbol of x to be y's size
    there, u then (4, 3), though the symbol may be 1 (a Reshape baked from it fails at batch 1); ours keeps it a
    symbol, at every axis from the end and with either operand first."""
    from passes.static_shapes import symbolic_partial_shapes

    x, y = gs.Variable("x", np.float32, x_shape), gs.Variable("y", np.float32, y_shape)
    u, z = gs.Variable("u", np.float32), gs.Variable("z", np.float32)
    graph = gs.Graph(nodes=[gs.Node("Relu", inputs=[x], outputs=[u]),
                            gs.Node("Add", inputs=[u, y] if symbol_first else [y, u], outputs=[z])],
                     inputs=[x, y], outputs=[z], opset=17)
    shapes = symbolic_partial_shapes(graph)
    assert (shapes["u"], shapes["z"]) == (u_shape, z_shape)


def test_named_shapes_infers_from_the_inputs_alone_and_keeps_names():
    """A symbolic batch keeps its name through broadcasting by 1 (Add of a (1, 3) constant), a broadcast of two
    names is neither (ONNX names it anew), and a shape the model declares for a value between (value_info: here
    (1, 3), a lie ONNX Runtime never checks) or for its output is not read: inferred from the inputs. `of`: only
    what computes those names is inferred (the Range beside, of a size data propagation alone would find, does
    not keep it from running)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["shifted"]), helper.make_node("Relu", ["shifted"], ["y"]),
         helper.make_node("Add", ["y", "z"], ["both"]), helper.make_node("Shape", ["y"], ["sy"]),
         helper.make_node("Gather", ["sy", "zero"], ["rows"], axis=0),
         helper.make_node("Range", ["zero", "rows", "one"], ["positions"]),
         helper.make_node("ConstantOfShape", ["sy"], ["zeros"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["other", 3])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3]) for name in ("both", "zeros")]
        + [helper.make_tensor_value_info("positions", TensorProto.INT64, [7])],
        [numpy_helper.from_array(np.ones((1, 3), np.float32), "bias"),
         numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array(1, np.int64), "one")],
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    shapes = named_shapes(gs.import_onnx(model), ["y", "both", "zeros"])
    assert shapes["y"] == ("batch", 3) and shapes["zeros"] == ("batch", 3)
    assert shapes["both"][1] == 3 and shapes["both"][0] not in ("batch", "other", 1)


_RESHAPE_ROUND_TRIP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float["batch",6] x{other}) => (float[?] d) {{
  flat_shape = Constant<value = int64[1] {{-1}}>()
  flat = Reshape(x, flat_shape)
  back_shape = Constant<value = int64[3] {{-1, 2, 3}}>()
  r = Reshape(flat, back_shape)
  shape = Shape(x)
  zero = Constant<value = int64 {{0}}>()
  batch = Gather(shape, zero)
  axes = Constant<value = int64[1] {{0}}>()
  b1 = Unsqueeze(batch, axes)
  rest = Constant<value = int64[2] {{2, 3}}>()
  zshape = Concat<axis = 0>(b1, rest)
  z = ConstantOfShape(zshape)
  d = Add(r, z){more}
}}"""


def test_symbolic_named_shapes_follow_a_size_through_reshapes_and_never_merge_two():
    """x ("batch", 6) flattened and reshaped back to (-1, 2, 3), and zeros(x.shape[0], 2, 3): ONNX's inference names
    the Reshape's batch anew (what left VMamba's dynamic-batch zeros unproven within b_0), ONNX Runtime's tool keeps
    it 'batch'; a broadcast of two different names is never taken as one size (the tool's auto_merge would): {}."""
    import onnx.parser

    from passes.static_shapes import named_shapes, symbolic_named_shapes

    graph = gs.import_onnx(onnx.parser.parse_model(_RESHAPE_ROUND_TRIP.format(other="", more="")))
    assert named_shapes(graph, ["r", "d"])["r"][0] != "batch"
    shapes = symbolic_named_shapes(graph, ["r", "z", "d"])
    assert (shapes["r"], shapes["z"], shapes["d"]) == (("batch", 2, 3), ("batch", 2, 3), ("batch", 2, 3))
    merged = _RESHAPE_ROUND_TRIP.format(other=', float["other",6] y', more="\n  s = Add(x, y)")
    assert symbolic_named_shapes(gs.import_onnx(onnx.parser.parse_model(merged)), ["r", "s"]) == {}


def test_symbolic_inference_does_not_import_torch():
    """Session s32 (gen20): `from onnxruntime.tools import symbolic_shape_infer` runs onnxruntime.tools' __init__,
    which imports torch where it is installed (pytorch_export_helpers; 3.0-3.4 s against 1.5-2.1 s, dev 2-core), so
    every compile that asked for symbolic shapes loaded torch, which the passes never import (test_layering)."""
    import subprocess
    import sys
    from pathlib import Path

    script = """
import sys
import onnx.parser
from passes.graph_io import model_to_graph
from passes.static_shapes import symbolic_partial_shapes
graph = model_to_graph(onnx.parser.parse_model('''<ir_version: 8, opset_import: ["" : 17]>
    g (float[batch, 8, 6] x) => (float y) <int64[1] zero = {0}, int64[1] three = {3}, int64[1] axis = {2}> {
      r = Slice(x, zero, three, axis)
      y = Relu(r)
    }'''))
print(symbolic_partial_shapes(graph)["y"], "torch" in sys.modules, "onnxruntime.tools" in sys.modules)
"""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(None,", "8,", "3)", "False", "False"]


# --- s32: a subgraph is inferred against the names it reads only ------------------------------------------------------

def _chain_of_ifs(count: int) -> onnx.ModelProto:
    """x (N, 4) through `count` Ifs of a computed cond, each branch reading only the tensor before it: the then
    branch Identity, the else branch Neg, of y_{i-1} (an opset-12 dynamic-batch export guards its Squeezes so)."""
    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["cond"])]
    previous = "x"
    for i in range(count):
        then = helper.make_graph([helper.make_node("Identity", [previous], [f"t{i}"])], f"then{i}", [],
                                 [helper.make_tensor_value_info(f"t{i}", TensorProto.FLOAT, None)])
        other = helper.make_graph([helper.make_node("Neg", [previous], [f"e{i}"])], f"else{i}", [],
                                  [helper.make_tensor_value_info(f"e{i}", TensorProto.FLOAT, None)])
        nodes += [helper.make_node("If", ["cond"], [f"if{i}"], then_branch=then, else_branch=other),
                  helper.make_node("Relu", [f"if{i}"], [f"y{i}"])]
        previous = f"y{i}"
    graph = helper.make_graph(nodes, "ifs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


def test_each_branch_is_inferred_against_the_names_it_reads_and_the_result_is_unchanged(monkeypatch):
    """ORT's tool hands every branch all of the graph's value infos (quadratic in the graph: an opset-12 dynamic-batch
    VMamba export, 147 Ifs and 2,605 nodes, took 6.7 s, now 0.8 s, the same model byte for byte; dev 2-core). Each
    branch here reads one name; the result equals the one with every value info handed over."""
    from passes import static_shapes

    ort_tool = static_shapes._ort_symbolic_tool()
    seen = []
    original = ort_tool.SymbolicShapeInference._onnx_infer_subgraph

    def recording(self, node, subgraph, *args, **kwargs):
        seen.append(sorted(self.known_vi_))
        return original(self, node, subgraph, *args, **kwargs)

    monkeypatch.setattr(ort_tool.SymbolicShapeInference, "_onnx_infer_subgraph", recording)
    narrowed = static_shapes._symbolic_inference(_chain_of_ifs(6), auto_merge=False)
    assert seen == [["x"], ["x"]] + [[f"y{i}"] for i in range(5) for _ in (0, 1)]
    assert [d.dim_param or d.dim_value for d in narrowed.graph.output[0].type.tensor_type.shape.dim] == ["N", 4]

    seen.clear()
    monkeypatch.setattr(static_shapes, "_names_read", lambda graph: _AllNames())
    whole = static_shapes._symbolic_inference(_chain_of_ifs(6), auto_merge=False)
    assert len(seen) == 12 and all(len(names) > 5 for names in seen[2:])
    assert whole.SerializeToString() == narrowed.SerializeToString()


class _AllNames:
    def __contains__(self, name):
        return True


def test_names_read_follows_nested_subgraphs():
    from passes.static_shapes import _names_read

    inner = helper.make_graph([helper.make_node("Add", ["a", "outer"], ["s"])], "inner", [],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, None)])
    loop_body = helper.make_graph([helper.make_node("If", ["c"], ["r"], then_branch=inner, else_branch=inner)],
                                  "body", [], [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    graph = helper.make_graph([helper.make_node("Loop", ["n", "", "v"], ["w"], body=loop_body),
                               helper.make_node("Mul", ["w", "k"], ["z"])], "g", [], [])
    assert _names_read(graph) == {"n", "", "v", "c", "a", "outer", "w", "k"}


def _traced_at_one(declared, input_dims=("N", 4), second=None) -> onnx.ModelProto:
    """t = Relu(x), y = Transpose(t): t declared `declared` (an export traced at batch 1 leaves [1, 4]); `second`: a
    second intermediate u = Reshape(x, shape input s) declared so, whose size inference cannot know."""
    nodes = [helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Transpose", ["t"], ["y"], perm=[1, 0])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_dims))]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, input_dims[0]])]
    value_info = [helper.make_tensor_value_info("t", TensorProto.FLOAT, declared)]
    if second is not None:
        nodes.append(helper.make_node("Reshape", ["x", "s"], ["u"]))
        inputs.append(helper.make_tensor_value_info("s", TensorProto.INT64, [2]))
        outputs.append(helper.make_tensor_value_info("u", TensorProto.FLOAT, None))
        value_info.append(helper.make_tensor_value_info("u", TensorProto.FLOAT, second))
    graph = helper.make_graph(nodes, "g", inputs, outputs, value_info=value_info)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_value_info_pinning_a_size_the_inputs_leave_symbolic_is_a_contradiction():
    """adv20: t = Relu(x) declared [1, 4] under an input [N, 4] (an export traced at batch 1) was taken at its word,
    and `cpu` wrote a Reshape to [4, 1] that fails at N = 3. What inference from the inputs alone proves N is
    contradicted; nothing else is (conservative: what stays is what loads byte-identically)."""
    found = contradicted_value_info(_traced_at_one([1, 4]))
    assert found == [ContradictedValueInfo("t", (1, 4), ("N", 4))]
    model = _traced_at_one([1, 4])
    drop_value_info_shapes(model, ["t"])
    assert model.graph.value_info[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert not model.graph.value_info[0].type.tensor_type.HasField("shape")
    assert contradicted_value_info(model) == []
    # consistent, another name, a static input, a size inference cannot know (u = Reshape(x, s)), another rank
    assert contradicted_value_info(_traced_at_one(["N", 4])) == []
    assert contradicted_value_info(_traced_at_one(["batch", 4])) == []
    assert contradicted_value_info(_traced_at_one([1, 4], input_dims=(1, 4))) == []
    assert contradicted_value_info(_traced_at_one(["N", 4], second=[1, 4])) == []
    assert contradicted_value_info(_traced_at_one([1, 4, 1])) == []
    # an unnamed symbolic input size (no dim_param) proves nothing either
    assert contradicted_value_info(_traced_at_one([1, 4], input_dims=(None, 4))) == []
    # another number than inference gives: traced at batch 1 under an input of 3 (--input-shape x:3,4)
    assert contradicted_value_info(_traced_at_one([1, 4], input_dims=(3, 4))) == [
        ContradictedValueInfo("t", (1, 4), (3, 4))]


def _body_traced_at_one(kind: str, declared=(1, 4), carried=None) -> onnx.ModelProto:
    """A body holding t = Relu(..), u = Transpose(t), each declared as an export traced at batch 1 leaves them
    (t `declared`, u its transpose), under an input x [N, 4]. `kind`: "If" (the then branch reads x from around it;
    cond an input), "Loop" (two steps carrying h, t = Relu(h)), "Scan" (state s, t = Relu(s + x_t) over x [3, N, 4]).
    `carried`: the Loop body's carried input h declared so (None: no shape, as exporters leave it)."""
    float_ = TensorProto.FLOAT
    vi = [helper.make_tensor_value_info("t", float_, list(declared)),
          helper.make_tensor_value_info("u", float_, list(reversed(declared)))]
    if kind == "If":
        then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Transpose", ["t"], ["u"], perm=[1, 0])],
                                 "then", [], [helper.make_tensor_value_info("u", float_, None)], value_info=vi[:1])
        other = helper.make_graph([helper.make_node("Transpose", ["x"], ["v"], perm=[1, 0])], "else", [],
                                  [helper.make_tensor_value_info("v", float_, None)])
        node = helper.make_node("If", ["c"], ["y"], name="choose", then_branch=then, else_branch=other)
        inputs = [helper.make_tensor_value_info("x", float_, ["N", 4]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])]
        outputs = [helper.make_tensor_value_info("y", float_, [4, "N"])]
        nodes = [node]
    elif kind == "Loop":
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Relu", ["h"], ["t"]),
             helper.make_node("Transpose", ["t"], ["u"], perm=[1, 0]), helper.make_node("Transpose", ["u"], ["h2"], perm=[1, 0])],
            "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                     helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                     helper.make_tensor_value_info("h", float_, carried)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("h2", float_, None)],
            value_info=vi)
        nodes = [helper.make_node("Constant", [], ["M"], value=helper.make_tensor("m", TensorProto.INT64, [], [2])),
                 helper.make_node("Constant", [], ["c"], value=helper.make_tensor("cv", TensorProto.BOOL, [], [True])),
                 helper.make_node("Loop", ["M", "c", "x"], ["y"], body=body)]
        inputs = [helper.make_tensor_value_info("x", float_, ["N", 4])]
        outputs = [helper.make_tensor_value_info("y", float_, ["N", 4])]
    else:
        body = helper.make_graph(
            [helper.make_node("Add", ["s", "xt"], ["a"]), helper.make_node("Relu", ["a"], ["t"]),
             helper.make_node("Transpose", ["t"], ["u"], perm=[1, 0]), helper.make_node("Transpose", ["u"], ["s2"], perm=[1, 0]),
             helper.make_node("Identity", ["s2"], ["o"])],
            "body", [helper.make_tensor_value_info("s", float_, None), helper.make_tensor_value_info("xt", float_, None)],
            [helper.make_tensor_value_info("s2", float_, None), helper.make_tensor_value_info("o", float_, None)],
            value_info=vi)
        nodes = [helper.make_node("Scan", ["s0", "x"], ["sf", "ys"], body=body, num_scan_inputs=1)]
        inputs = [helper.make_tensor_value_info("s0", float_, ["N", 4]), helper.make_tensor_value_info("x", float_, [3, "N", 4])]
        outputs = [helper.make_tensor_value_info("sf", float_, ["N", 4]), helper.make_tensor_value_info("ys", float_, [3, "N", 4])]
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_body_value_info_the_inputs_contradict_is_found_in_if_loop_and_scan_bodies():
    """adv22: only the main graph's value_info was checked; a body's [1, 4] under x [N, 4] made ONNX Runtime fail the
    If at N = 3 (its branch output buffer made [1, 4]), and unroll-loops copied a Loop's onto every step (`cpu` wrote
    the model's input as [1, 4]). Found where inference proves N: an If branch reading x, a Scan body (ONNX passes it
    its states' and slices' shapes), a Loop body from its first iteration (the carried x's shape; ONNX passes none)."""
    then = ((0, "then_branch", 0),)
    assert contradicted_value_info(_body_traced_at_one("If")) == [
        ContradictedValueInfo("t", (1, 4), ("N", 4), then, "If(choose).then_branch")]
    loop = ((2, "body", 0),)
    assert contradicted_value_info(_body_traced_at_one("Loop")) == [
        ContradictedValueInfo("t", (1, 4), ("N", 4), loop, "Loop#2.body"),
        ContradictedValueInfo("u", (4, 1), (4, "N"), loop, "Loop#2.body")]
    # the carried input declared [1, 4] itself: a body's input is its declaration too, not the model's interface
    assert [(e.name, e.declared, e.inferred) for e in contradicted_value_info(_body_traced_at_one("Loop", carried=[1, 4]))] == [
        ("h", (1, 4), ("N", 4)), ("t", (1, 4), ("N", 4)), ("u", (4, 1), (4, "N"))]
    scan = ((0, "body", 0),)
    assert contradicted_value_info(_body_traced_at_one("Scan")) == [
        ContradictedValueInfo("t", (1, 4), ("N", 4), scan, "Scan#0.body"),
        ContradictedValueInfo("u", (4, 1), (4, "N"), scan, "Scan#0.body")]
    # consistent declarations, a name of their own, another rank: no proof
    for kind in ("If", "Loop", "Scan"):
        assert contradicted_value_info(_body_traced_at_one(kind, declared=("N", 4))) == []
        assert contradicted_value_info(_body_traced_at_one(kind, declared=("batch", 4))) == []
        assert contradicted_value_info(_body_traced_at_one(kind, declared=(1, 4, 1))) == []
    # dropped where it was found, in its body; the element type kept, the main graph's entries untouched
    model = _body_traced_at_one("Loop", carried=[1, 4])
    drop_value_info_shapes(model, contradicted_value_info(model))
    body = model.graph.node[2].attribute[0].g
    assert [(v.name, v.type.tensor_type.elem_type, v.type.tensor_type.HasField("shape"))
            for v in list(body.input) + list(body.value_info)] == [
        ("i", TensorProto.INT64, True), ("cond_in", TensorProto.BOOL, True), ("h", TensorProto.FLOAT, False),
        ("t", TensorProto.FLOAT, False), ("u", TensorProto.FLOAT, False)]
    assert contradicted_value_info(model) == []

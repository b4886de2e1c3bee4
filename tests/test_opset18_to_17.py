"""opset18-to-17: an opset-18 graph written as opset 17 where every node allows it (tpu-mlir 1.30.2 refuses opset 18's
ReduceMean: "Unsupport opset for ReduceMean", s24 on hf-mamba2-dynamo); exact op lists and attributes after, outputs
bit for bit equal in ONNX Runtime, and what has no opset-17 spelling left at 18 and named, by it and by tpu-legality."""
from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs

from passes.base import PassContext
from passes.graph_io import ModelMeta, graph_to_model
from passes.opset18_to_17 import Opset18To17
from passes.tpu_legality import AXES_INPUT_RULE, find_violations
from scan_testing import op_histogram, run

RNG = np.random.default_rng(18)


def lower(model: onnx.ModelProto):
    """Run the pass as the pipelines do (graph_to_model with the input model's meta); the full checker on the result."""
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    result = Opset18To17().run(graph, PassContext(opset=18))
    out = graph_to_model(graph, ModelMeta.from_model(model))
    onnx.checker.check_model(out, full_check=True)
    return out, result


def nodes(model: onnx.ModelProto) -> list[tuple]:
    """(op, input count, attributes) of every node, in order."""
    return [(node.op_type, len(node.input), {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
            for node in model.graph.node]


def test_the_dynamo_rms_norm_reducemean_gets_its_axes_back_as_an_attribute():
    """x * 1/sqrt(mean(x^2, -1) + eps), as the dynamo exporter writes Mamba2's RMS norm (IR 10, opset 18)."""
    model = onnx.parser.parse_model("""
    <ir_version: 10, opset_import: ["" : 18]>
    g (float[2,3,8] x) => (float[2,3,8] y) {
      two = Constant<value = float {2.0}>()
      eps = Constant<value = float {1e-6}>()
      axes = Constant<value = int64[1] {-1}>()
      square = Pow(x, two)
      mean = ReduceMean<keepdims = 1, noop_with_empty_axes = 0>(square, axes)
      shifted = Add(mean, eps)
      root = Sqrt(shifted)
      scale = Reciprocal(root)
      y = Mul(x, scale)
    }""")
    out, result = lower(model)
    assert result.stats == {"lowered": 1, "respelled": 1}
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 17)] and out.ir_version == 8
    assert op_histogram(out) == {"Add": 1, "Constant": 2, "Mul": 1, "Pow": 1, "Reciprocal": 1, "ReduceMean": 1, "Sqrt": 1}
    assert [entry for entry in nodes(out) if entry[0] == "ReduceMean"] == [("ReduceMean", 1, {"keepdims": 1, "axes": [-1]})]
    x = RNG.standard_normal((2, 3, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(model, {"x": x})[0])
    assert AXES_INPUT_RULE in find_violations(gs.import_onnx(model))
    assert AXES_INPUT_RULE not in find_violations(gs.import_onnx(out))


def test_every_reduction_split_and_pad_spelled_in_17_exactly():
    """Reductions with axes inputs (and one without: every axis), Split by num_outputs (even, and uneven: sizes as an
    input, the last piece smaller), Pad with axes (pads over every axis); ReduceSum unchanged (axes an input since 13)."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[2,5,6] x) => (float[2,1,6] a, float[2,5] b, float[2,6] c, float[2,5] d, float[2,5,1] e, float y,
                           float[1,5,6] f, float[2,2,6] s0, float[2,2,6] s1, float[2,1,6] s2, float[2,5,3] t0,
                           float[2,5,3] t1, float[2,5,9] p) {
      ax1 = Constant<value = int64[1] {1}>()
      ax2 = Constant<value = int64[1] {-1}>()
      ax0 = Constant<value = int64[1] {0}>()
      pads = Constant<value = int64[2] {1, 2}>()
      a = ReduceMax<keepdims = 1>(x, ax1)
      b = ReduceL2<keepdims = 0>(x, ax2)
      c = ReduceLogSumExp<keepdims = 0>(x, ax1)
      d = ReduceSumSquare<keepdims = 0>(x, ax2)
      e = ReduceMin<keepdims = 1>(x, ax2)
      y = ReduceProd<keepdims = 0>(x)
      f = ReduceSum<keepdims = 1>(x, ax0)
      s0, s1, s2 = Split<axis = 1, num_outputs = 3>(x)
      t0, t1 = Split<axis = 2, num_outputs = 2>(x)
      p = Pad<mode = "constant">(x, pads, , ax2)
    }""")
    out, result = lower(model)
    assert result.stats == {"lowered": 1, "respelled": 9}
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 17)]
    assert op_histogram(out) == {"Constant": 1, "Pad": 1, "ReduceL2": 1, "ReduceLogSumExp": 1, "ReduceMax": 1, "ReduceMin": 1,
                                 "ReduceProd": 1, "ReduceSum": 1, "ReduceSumSquare": 1, "Split": 2}
    by_output = {node.output[0]: node for node in out.graph.node}
    assert {node.output[0]: entry for node, entry in zip(out.graph.node, nodes(out)) if node.op_type != "Constant"} == {
        "a": ("ReduceMax", 1, {"keepdims": 1, "axes": [1]}), "b": ("ReduceL2", 1, {"keepdims": 0, "axes": [-1]}),
        "c": ("ReduceLogSumExp", 1, {"keepdims": 0, "axes": [1]}),
        "d": ("ReduceSumSquare", 1, {"keepdims": 0, "axes": [-1]}), "e": ("ReduceMin", 1, {"keepdims": 1, "axes": [-1]}),
        "y": ("ReduceProd", 1, {"keepdims": 0}), "f": ("ReduceSum", 2, {"keepdims": 1}),
        "s0": ("Split", 2, {"axis": 1}), "t0": ("Split", 1, {"axis": 2}), "p": ("Pad", 2, {"mode": b"constant"})}
    split_sizes = onnx.numpy_helper.to_array(next(i for i in out.graph.initializer if i.name == by_output["s0"].input[1]))
    pads = onnx.numpy_helper.to_array(next(i for i in out.graph.initializer if i.name == by_output["p"].input[1]))
    assert split_sizes.tolist() == [2, 2, 1] and pads.tolist() == [0, 0, 1, 0, 0, 2]
    x = RNG.standard_normal((2, 5, 6)).astype(np.float32)
    for before, after in zip(run(model, {"x": x}), run(out, {"x": x})):
        np.testing.assert_array_equal(after, before)


def test_what_has_no_opset_17_spelling_leaves_the_graph_at_18_and_named():
    """A ReduceMean whose axes are computed, and a Mish (new in 18): nothing changes, both are named;
    tpu-legality names the ReduceMean (what the user would otherwise meet as exit 3 in model_transform)."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[2,4,6] x, int64[1] axes) => (float[2,4,1] m, float[2,4,6] n) {
      m = ReduceMean<keepdims = 1>(x, axes)
      n = Mish(x)
    }""")
    out, result = lower(model)
    assert result.changed is False and result.stats == {"lowered": 0, "refused": 2}
    assert result.notes == ["left at opset 18: 2 node(s) without an opset-17 spelling (ReduceMean '': its axes input "
                            "is not a constant; Mish '': new or changed in opset 18, without an opset-17 "
                            "spelling here)"]
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 18)] and nodes(out) == nodes(model)
    assert find_violations(gs.import_onnx(out))[AXES_INPUT_RULE] == [
        "ReduceMean '': model_transform: \"Unsupport opset for ReduceMean\""]


def test_other_opsets_are_left_alone():
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] x) => (float[2,1] y) {
      y = ReduceMean<axes = [1]>(x)
    }""")
    out, result = lower(model)
    assert result.changed is False and result.notes == ["opset 17, not 18: left as it is"]
    assert nodes(out) == nodes(model) and out.ir_version == 8

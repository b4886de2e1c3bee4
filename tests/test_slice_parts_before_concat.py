"""slice-parts-before-concat: the cross-scan's Concat(A, flip(A)), A = Concat(x, x^T), becomes one
Concat of x, x^T and their flips (A never built); bit-for-bit the same tensor. Where A has other
users, or the Slice cuts the concat axis, nothing changes."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.slice_parts_before_concat import SlicePartsBeforeConcat
from scan_testing import apply_pass, op_histogram, run

INT64_MIN_END = -2**63 + 1


def cross_scan_model(slice_axes=(-1,), inner_is_output=False, batch="batch"):
    """x: [N, 1, C, L]; A = Concat(x, Transpose(x) of its plane) on axis 1; out = Concat(A, Slice(A), axis 1)."""
    steps = [-1] * len(slice_axes)
    starts = [-1] * len(slice_axes)
    ends = [INT64_MIN_END] * len(slice_axes)
    nodes = [
        helper.make_node("Reshape", ["x", "plane"], ["x_plane"]),
        helper.make_node("Transpose", ["x_plane"], ["xt_plane"], perm=[0, 1, 3, 2]),
        helper.make_node("Reshape", ["xt_plane", "flat"], ["xt"]),
        helper.make_node("Concat", ["x", "xt"], ["A"], axis=1, name="inner"),
        helper.make_node("Slice", ["A", "starts", "ends", "axes", "steps"], ["A_flipped"], name="flip"),
        helper.make_node("Concat", ["A", "A_flipped"], ["y"], axis=1, name="outer"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if inner_is_output:
        outputs.append(helper.make_tensor_value_info("A", TensorProto.FLOAT, None))
    initializers = [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in {
        "plane": [-1, 3, 4, 5], "flat": [-1, 1, 3, 20], "starts": starts, "ends": ends,
        "axes": list(slice_axes), "steps": steps}.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 3, 20])],
                              outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def expected(x):
    xt = np.swapaxes(x.reshape(-1, 3, 4, 5), -1, -2).reshape(-1, 1, 3, 20)
    inner = np.concatenate([x, xt], axis=1)
    return np.concatenate([inner, inner[..., ::-1]], axis=1)


@pytest.mark.parametrize("batch", ["batch", 1])
def test_flip_of_concat_becomes_concat_of_flipped_parts(batch):
    model = cross_scan_model(batch=batch)
    before = op_histogram(model)
    out, result = apply_pass(model, SlicePartsBeforeConcat())
    assert result.stats == {"rewritten": 1}
    assert before == {"Reshape": 2, "Transpose": 1, "Concat": 2, "Slice": 1}
    assert op_histogram(out) == {"Reshape": 2, "Transpose": 1, "Concat": 1, "Slice": 2}
    concat = next(node for node in out.graph.node if node.op_type == "Concat")
    assert len(concat.input) == 4
    x = np.random.default_rng(0).standard_normal([2 if batch == "batch" else 1, 1, 3, 20]).astype(np.float32)
    got = run(out, {"x": x})[0]
    np.testing.assert_array_equal(got, run(model, {"x": x})[0])   # the same tensor, bit for bit
    np.testing.assert_array_equal(got, expected(x))


@pytest.mark.parametrize("options, why", [
    ({"inner_is_output": True}, "A is a graph output: it is built anyway"),
    ({"slice_axes": (1,)}, "the Slice reverses the concat axis itself"),
    ({"slice_axes": (1, -1)}, "the Slice cuts the concat axis among others"),
])
def test_other_concats_stay(options, why):
    model = cross_scan_model(**options)
    out, result = apply_pass(model, SlicePartsBeforeConcat())
    assert result.stats == {"rewritten": 0}, why
    assert op_histogram(out) == op_histogram(model)


def test_inner_concat_with_another_user_stays_and_says_why():
    model = cross_scan_model()
    model.graph.node.append(helper.make_node("Relu", ["A"], ["A_relu"]))
    model.graph.output.append(helper.make_tensor_value_info("A_relu", TensorProto.FLOAT, None))
    out, result = apply_pass(model, SlicePartsBeforeConcat())
    assert result.stats == {"rewritten": 0}
    assert op_histogram(out) == op_histogram(model)
    assert any("the inner Concat has other users" in note for note in result.notes)


def test_flip_with_another_user_stays():
    """The flip of A also read elsewhere: A is built for it anyway, and slicing the parts would add copies."""
    model = cross_scan_model()
    model.graph.node.append(helper.make_node("Relu", ["A_flipped"], ["flip_relu"]))
    model.graph.output.append(helper.make_tensor_value_info("flip_relu", TensorProto.FLOAT, None))
    out, result = apply_pass(model, SlicePartsBeforeConcat())
    assert result.stats == {"rewritten": 0}
    assert op_histogram(out) == op_histogram(model)


def test_inner_concat_on_another_axis_stays():
    """A = Concat(x, x) along L, then [A, flip(A)] along the direction axis: A's parts are not pieces of
    the outer axis, so they are not spliced in."""
    model = cross_scan_model()
    inner = next(node for node in model.graph.node if node.name == "inner")
    inner.input[1] = "x"
    inner.attribute[0].i = 3
    x = np.random.default_rng(1).standard_normal([2, 1, 3, 20]).astype(np.float32)
    out, result = apply_pass(model, SlicePartsBeforeConcat())
    assert result.stats == {"rewritten": 0}
    assert op_histogram(out) == op_histogram(model)
    want = np.concatenate([np.concatenate([x, x], 3), np.concatenate([x, x], 3)[..., ::-1]], 1)
    np.testing.assert_array_equal(run(out, {"x": x})[0], want)


def test_an_unsliced_concat_on_another_axis_with_other_users_does_not_block():
    """Outer = Concat(B, A, flip(A)) with B a Concat along L that is also a graph output: B is an input
    like any other (not one of A's kind), so A is still spliced in and B kept whole."""
    model = cross_scan_model()
    outer = next(node for node in model.graph.node if node.name == "outer")
    model.graph.node.insert(0, helper.make_node("Split", ["x", "halves"], ["x_head", "x_tail"], axis=3))
    model.graph.initializer.append(numpy_helper.from_array(np.asarray([10, 10], np.int64), "halves"))
    model.graph.node.insert(1, helper.make_node("Concat", ["x_tail", "x_head"], ["B"], axis=3, name="rolled"))
    outer.input.insert(0, "B")
    model.graph.output.append(helper.make_tensor_value_info("B", TensorProto.FLOAT, None))
    out, result = apply_pass(model, SlicePartsBeforeConcat())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Split": 1, "Reshape": 2, "Transpose": 1, "Concat": 2, "Slice": 2}
    x = np.random.default_rng(2).standard_normal([2, 1, 3, 20]).astype(np.float32)
    rolled = np.concatenate([x[..., 10:], x[..., :10]], 3)
    got = run(out, {"x": x})
    np.testing.assert_array_equal(got[0], np.concatenate([rolled, expected(x)], 1))
    np.testing.assert_array_equal(got[1], rolled)

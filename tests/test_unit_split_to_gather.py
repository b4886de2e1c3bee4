"""unit-split-to-gather: unit slices become Gathers, through a Transpose that moved only the split axis; exact."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.unit_split_to_gather import UnitSplitToGather
from patterns.graph_query import moved_axis
from scan_testing import apply_pass, op_histogram, run


def split_of_transpose(in_shape, perm, axis, sizes, opset=17, extra_consumer=False):
    """y_i = Split(Transpose(x, perm), sizes, axis)[i]; with extra_consumer the Transpose is an output too."""
    out_shape = [in_shape[p] for p in perm]
    outputs = [f"y{i}" for i in range(len(sizes))]
    split_inputs = ["t", "sizes"] if opset >= 13 else ["t"]
    split_attrs = {"axis": axis} if opset >= 13 else {"axis": axis, "split": list(sizes)}
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], name="move", perm=perm),
         helper.make_node("Split", split_inputs, outputs, name="cut", **split_attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [size if i == axis % len(out_shape) else d for i, d in enumerate(out_shape)])
         for o, size in zip(outputs, sizes)]
        + ([helper.make_tensor_value_info("t", TensorProto.FLOAT, out_shape)] if extra_consumer else []),
        [numpy_helper.from_array(np.asarray(sizes, np.int64), "sizes")] if opset >= 13 else [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("perm, axis, expected", [
    ([3, 0, 1, 2, 4], 0, 3),     # the parallel scan form: Q moved to the front
    ([0, 2, 1], 1, 2),
    ([0, 2, 1], 2, 1),           # a swap moves one axis either way
    ([1, 2, 0], 0, None),        # moves axis 1 to the front, but 2 also passes 0
    ([0, 1, 2], 1, 1),           # the identity moves nothing
])
def test_moved_axis(perm, axis, expected):
    assert moved_axis(perm, axis) == expected


@pytest.mark.parametrize("opset", [17, 11])
def test_unit_split_of_moved_axis_becomes_gathers(opset):
    """VMamba-T's parallel scan form, small: [batch, KD, chunks, Q, 1] with Q moved to the front, cut into Q slices."""
    model = split_of_transpose(["batch", 6, 5, 4, 1], [3, 0, 1, 2, 4], 0, [1, 1, 1, 1], opset=opset)
    out, result = apply_pass(model, UnitSplitToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Gather": 4, "Unsqueeze": 4}
    x = np.random.default_rng(0).standard_normal([2, 6, 5, 4, 1]).astype(np.float32)
    expected = np.split(np.transpose(x, [3, 0, 1, 2, 4]), 4, axis=0)
    for got, want in zip(run(out, {"x": x}), expected):
        np.testing.assert_array_equal(got, want)


def test_transpose_with_another_consumer_stays_for_it():
    model = split_of_transpose([2, 3, 4], [0, 2, 1], 1, [1, 1, 1, 1], extra_consumer=True)
    out, result = apply_pass(model, UnitSplitToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Gather": 4, "Transpose": 1, "Unsqueeze": 4}
    x = np.random.default_rng(1).standard_normal([2, 3, 4]).astype(np.float32)
    got = run(out, {"x": x})
    for i in range(4):
        np.testing.assert_array_equal(got[i], np.transpose(x, [0, 2, 1])[:, i:i + 1])
    np.testing.assert_array_equal(got[4], np.transpose(x, [0, 2, 1]))


def test_slices_of_two_stay():
    model = split_of_transpose([2, 6, 5, 4, 1], [3, 0, 1, 2, 4], 0, [2, 2])
    out, result = apply_pass(model, UnitSplitToGather())
    assert result.stats == {"rewritten": 0}
    assert result.notes == []
    assert op_histogram(out) == {"Split": 1, "Transpose": 1}


def test_transpose_that_reorders_other_axes_stays_and_its_output_is_split():
    """perm [2, 1, 0, ...] moves axis 2 to the front but also swaps 0 and 1: the Gathers read the Transpose's output."""
    model = split_of_transpose([3, 4, 6, 4, 1], [2, 1, 0, 3, 4], 0, [1] * 6)
    out, result = apply_pass(model, UnitSplitToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Gather": 6, "Transpose": 1, "Unsqueeze": 6}
    x = np.random.default_rng(3).standard_normal([3, 4, 6, 4, 1]).astype(np.float32)
    for got, want in zip(run(out, {"x": x}), np.split(np.transpose(x, [2, 1, 0, 3, 4]), 6, axis=0)):
        np.testing.assert_array_equal(got, want)


def test_plain_unit_split_of_an_inner_axis_becomes_gathers():
    """The parallel form without the Transpose: (batch, KD, chunks, Q, 1) cut on its Q axis (negative axis)."""
    graph = helper.make_graph(
        [helper.make_node("Split", ["x", "sizes"], ["y0", "y1", "y2"], name="cut", axis=-2)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6, 5, 3, 1])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["batch", 6, 5, 1, 1]) for i in range(3)],
        [numpy_helper.from_array(np.ones(3, np.int64), "sizes")])
    out, result = apply_pass(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), UnitSplitToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Gather": 3, "Unsqueeze": 3}
    x = np.random.default_rng(4).standard_normal([2, 6, 5, 3, 1]).astype(np.float32)
    for got, want in zip(run(out, {"x": x}), np.split(x, 3, axis=3)):
        np.testing.assert_array_equal(got, want)


def test_unary_ops_between_commute_with_the_transpose():
    """The scan form's decays: Split(Exp(Transpose(log_decay))): the Exp moves onto the input, once."""
    model = split_of_transpose(["batch", 6, 5, 4, 1], [3, 0, 1, 2, 4], 0, [1, 1, 1, 1])
    graph = model.graph
    graph.node[1].input[0] = "e"
    graph.node.insert(1, helper.make_node("Exp", ["t"], ["e"], name="exp"))
    out, result = apply_pass(model, UnitSplitToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Exp": 1, "Gather": 4, "Unsqueeze": 4}
    x = np.random.default_rng(2).standard_normal([3, 6, 5, 4, 1]).astype(np.float32)
    expected = np.split(np.exp(np.transpose(x, [3, 0, 1, 2, 4])), 4, axis=0)
    for got, want in zip(run(out, {"x": x}), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def test_a_split_with_one_longer_slice_stays():
    model = split_of_transpose([2, 6, 5, 4, 1], [3, 0, 1, 2, 4], 0, [1, 2, 1])
    out, result = apply_pass(model, UnitSplitToGather())
    assert result.stats == {"rewritten": 0}
    assert op_histogram(out) == {"Split": 1, "Transpose": 1}


def test_two_unary_ops_move_onto_the_input_in_their_order():
    """Split(Exp(Neg(Transpose(x)))): exp(-x), not -exp(x)."""
    model = split_of_transpose(["batch", 6, 5, 4, 1], [3, 0, 1, 2, 4], 0, [1, 1, 1, 1])
    graph = model.graph
    graph.node[1].input[0] = "e"
    graph.node.insert(1, helper.make_node("Exp", ["n"], ["e"], name="exp"))
    graph.node.insert(1, helper.make_node("Neg", ["t"], ["n"], name="neg"))
    out, result = apply_pass(model, UnitSplitToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Exp": 1, "Gather": 4, "Neg": 1, "Unsqueeze": 4}
    x = np.random.default_rng(5).standard_normal([2, 6, 5, 4, 1]).astype(np.float32)
    expected = np.split(np.exp(-np.transpose(x, [3, 0, 1, 2, 4])), 4, axis=0)
    for got, want in zip(run(out, {"x": x}), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def test_a_negative_split_axis_through_a_transpose():
    """Split(Transpose(x, [0, 2, 1]), axis=-1): the last axis of the transposed tensor is x's axis 1."""
    model = split_of_transpose([2, 3, 4], [0, 2, 1], -1, [1, 1, 1])
    out, result = apply_pass(model, UnitSplitToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Gather": 3, "Unsqueeze": 3}
    x = np.random.default_rng(6).standard_normal([2, 3, 4]).astype(np.float32)
    for got, want in zip(run(out, {"x": x}), np.split(np.transpose(x, [0, 2, 1]), 3, axis=2)):
        np.testing.assert_array_equal(got, want)


# Session s29 (mut29): survivors of hand mutants (docs/MUTATION.md).
@pytest.mark.parametrize("op", ["Log", "Neg", "Abs", "Relu", "Sigmoid", "Sqrt", "Reciprocal", "Identity"])
def test_every_unary_op_between_commutes_with_the_transpose(op):
    model = split_of_transpose([2, 3, 4], [0, 2, 1], 1, [1, 1, 1, 1])
    model.graph.node[1].input[0] = "e"
    model.graph.node.insert(1, helper.make_node(op, ["t"], ["e"], name="unary"))
    out, result = apply_pass(model, UnitSplitToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {op: 1, "Gather": 4, "Unsqueeze": 4}


@pytest.mark.parametrize("sizes, rewritten", [([1], 0), ([1, 1], 1)])
def test_a_split_into_two_unit_slices_is_rewritten_and_one_slice_is_not(sizes, rewritten):
    model = split_of_transpose([2, 3, len(sizes)], [0, 2, 1], 1, sizes)
    _, result = apply_pass(model, UnitSplitToGather())
    assert result.stats == {"rewritten": rewritten}


def test_a_split_without_an_axis_cuts_axis_0():
    graph = helper.make_graph(
        [helper.make_node("Split", ["x", "sizes"], ["y0", "y1"], name="cut")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 2]) for i in range(2)],
        [numpy_helper.from_array(np.ones(2, np.int64), "sizes")])
    out, result = apply_pass(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), UnitSplitToGather())
    assert result.stats == {"rewritten": 1}
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    for got, want in zip(run(out, {"x": x}), np.split(x, 2, axis=0)):
        np.testing.assert_array_equal(got, want)

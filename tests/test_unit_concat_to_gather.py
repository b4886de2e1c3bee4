"""unit-concat-to-gather: Q unit slices interleaved by a Concat (or a Concat then a Transpose that
moves the joined axis) become a block Concat and one Gather; exact."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from passes.unit_concat_to_gather import UnitConcatToGather, interleave_indices
from scan_testing import apply_pass, op_histogram, run


def test_interleave_indices():
    blocks = [np.arange(4) + 10 * q for q in range(3)]
    np.testing.assert_array_equal(np.concatenate(blocks)[interleave_indices(3, 4)], np.stack(blocks, -1).reshape(-1))


def concat_model(block_shape, count, axis, perm=None):
    """y = Concat(x0 .. x{count-1}, axis) [then Transpose(perm)]."""
    names = [f"x{i}" for i in range(count)]
    nodes = [helper.make_node("Concat", names, ["c" if perm else "y"], name="join", axis=axis)]
    if perm:
        nodes.append(helper.make_node("Transpose", ["c"], ["y"], name="move", perm=perm))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, block_shape) for n in names],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds(block_shape, count, seed=0):
    rng = np.random.default_rng(seed)
    shape = [2 if d == "batch" else d for d in block_shape]
    return {f"x{i}": rng.standard_normal(shape).astype(np.float32) for i in range(count)}


def test_concat_on_the_unit_axis_becomes_block_concat_and_gather():
    """The parallel form's step blocks (batch, KD, chunks, 1, 1) joined on their Q axis."""
    model = concat_model(["batch", 6, 5, 1, 1], 4, 3)
    out, result = apply_pass(model, UnitConcatToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Concat": 1, "Gather": 1, "Reshape": 1}
    x = feeds(["batch", 6, 5, 1, 1], 4)
    np.testing.assert_array_equal(run(out, x)[0], np.concatenate(list(x.values()), axis=3))


def test_concat_on_a_leading_axis_moved_by_a_transpose():
    """The Transpose-based form: Q blocks (1, batch, KD, chunks, 1) joined on axis 0, Q moved back behind chunks."""
    perm = [1, 2, 3, 0, 4]
    model = concat_model([1, "batch", 6, 5, 1], 4, 0, perm)
    out, result = apply_pass(model, UnitConcatToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Concat": 1, "Gather": 1, "Reshape": 1, "Squeeze": 1}
    x = feeds([1, "batch", 6, 5, 1], 4, seed=1)
    np.testing.assert_array_equal(run(out, x)[0], np.transpose(np.concatenate(list(x.values()), axis=0), perm))


@pytest.mark.parametrize("block_shape, count, axis, perm, note", [
    (["batch", 6, 5, 2, 1], 3, 3, None, None),          # not unit slices
    (["batch", 1, 6, 7], 2, 1, None, None),             # joined behind the batch axis: nothing known to interleave
    ([1, 1, 6, 7], 2, 1, None, None),                   # behind a size-1 axis: already contiguous
    (["batch", 6, 5, 1, "t"], 3, 3, None, "Concat 'join' left alone: an axis after the interleaved one has no known size"),
    ([1, 3, 6, 5], 4, 0, [2, 1, 3, 0], None),           # the Transpose reorders other axes too: the Concat is on a leading unit axis
])
def test_other_concats_stay(block_shape, count, axis, perm, note):
    model = concat_model(block_shape, count, axis, perm)
    out, result = apply_pass(model, UnitConcatToGather())
    assert result.stats == {"rewritten": 0}
    assert result.notes == ([note] if note else [])
    assert op_histogram(out) == ({"Concat": 1, "Transpose": 1} if perm else {"Concat": 1})


def test_a_concat_of_unlike_blocks_stays():
    """The first block has the unit axis, the second is two steps long: not Q unit slices."""
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x0", "x1"], ["y"], name="join", axis=3)], "g",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, 6, 5, 1, 1]),
         helper.make_tensor_value_info("x1", TensorProto.FLOAT, [1, 6, 5, 2, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    out, result = apply_pass(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), UnitConcatToGather())
    assert result.stats == {"rewritten": 0}
    assert op_histogram(out) == {"Concat": 1}


@pytest.mark.parametrize("cap, rewritten", [(4 * 5, 1), (4 * 5 - 1, 0)])
def test_the_index_table_cap_is_inclusive(monkeypatch, cap, rewritten):
    import passes.unit_concat_to_gather as module
    monkeypatch.setattr(module, "MAX_INDEX_TABLE", cap)
    out, result = apply_pass(concat_model(["batch", 6, 5, 1, 1], 4, 3), UnitConcatToGather())
    assert result.stats == {"rewritten": rewritten}
    assert ("Gather" in op_histogram(out)) == bool(rewritten)
    if not rewritten:
        assert result.notes == [f"Concat 'join' left alone: 4 x 5 interleaved elements need more than the {cap} "
                                "indices a Gather table may hold"]


@pytest.mark.parametrize("block_shape, count, axis, perm, histogram", [
    (["batch", 6, 5, 1, 1], 2, 3, None, {"Concat": 1, "Gather": 1, "Reshape": 1}),            # two blocks
    (["batch", 6, 5, 1, 1], 3, -2, None, {"Concat": 1, "Gather": 1, "Reshape": 1}),           # a negative axis
    (["batch", 1, 5, 3], 3, 1, [0, 2, 1, 3], {"Concat": 1, "Gather": 1, "Reshape": 1, "Squeeze": 1}),  # Q one axis on
    (["batch", 6, 5, 1], 3, -1, [0, 1, 3, 2], {"Concat": 1, "Gather": 1, "Reshape": 1}),      # -1 through a Transpose
])
def test_two_blocks_negative_axes_and_q_moved_one_axis_on_are_interleaved_exactly(block_shape, count, axis, perm,
                                                                                  histogram):
    model = concat_model(block_shape, count, axis, perm)
    out, result = apply_pass(model, UnitConcatToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == histogram
    x = feeds(block_shape, count, seed=3)
    joined = np.concatenate(list(x.values()), axis=axis)
    np.testing.assert_array_equal(run(out, x)[0], np.transpose(joined, perm) if perm else joined)


def test_a_concat_of_one_block_or_under_a_transpose_of_no_perm_is_handled():
    """One input: nothing to interleave (kept as it is). A Transpose without perm (it reverses every axis) is no
    moving Transpose: the Concat under it is rewritten alone and the Transpose kept."""
    out, result = apply_pass(concat_model(["batch", 6, 5, 1, 1], 1, 3), UnitConcatToGather())
    assert result.stats == {"rewritten": 0} and op_histogram(out) == {"Concat": 1}
    model = concat_model([2, 6, 5, 1, 1], 3, 3)
    model.graph.node[0].output[0] = "c"
    model.graph.node.append(helper.make_node("Transpose", ["c"], ["y"], name="reverse"))
    out, result = apply_pass(model, UnitConcatToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Concat": 1, "Gather": 1, "Reshape": 1, "Transpose": 1}
    x = feeds([2, 6, 5, 1, 1], 3, seed=4)
    np.testing.assert_array_equal(run(out, x)[0], np.transpose(np.concatenate(list(x.values()), axis=3)))

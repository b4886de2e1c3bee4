"""plane-transpose-to-gather: large H/W swaps become an exact Gather of the flat plane; others stay."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from passes.plane_transpose_to_gather import PlaneTransposeToGather, plane_transpose_indices
from scan_testing import apply_pass, op_histogram, run, transpose_model


def test_indices_are_the_plane_transpose():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(x.reshape(12)[plane_transpose_indices(3, 4)], x.T.reshape(12))


@pytest.mark.parametrize("in_shape, dtype", [
    ([1, 192, 56, 56], TensorProto.FLOAT),       # VMamba-T stage 0's cross-scan swap
    (["batch", 6, 17, 19], TensorProto.FLOAT),   # dynamic batch, non-square plane
    ([2, 28, 28], TensorProto.INT64),            # a copy: any element type
])
def test_large_plane_swap_becomes_exact_gather(in_shape, dtype):
    rank = len(in_shape)
    model = transpose_model(in_shape, list(range(rank - 2)) + [rank - 1, rank - 2], dtype)
    out, result = apply_pass(model, PlaneTransposeToGather())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Gather": 1, "Reshape": 2}
    shape = [2 if d == "batch" else d for d in in_shape]
    x = np.random.default_rng(0).standard_normal(shape)
    x = x.astype(np.float32) if dtype == TensorProto.FLOAT else (x * 100).astype(np.int64)
    np.testing.assert_array_equal(run(out, {"x": x})[0], np.swapaxes(x, -1, -2))


@pytest.mark.parametrize("min_plane, rewritten", [(3136, 1), (3137, 0)])
def test_min_plane_is_the_smallest_plane_rewritten(min_plane, rewritten):
    """The bound is inclusive: a 56 x 56 plane (3,136 elements) goes at min_plane 3136, stays at 3137."""
    model = transpose_model([1, 4, 56, 56], [0, 1, 3, 2])
    _, result = apply_pass(model, PlaneTransposeToGather(min_plane=min_plane))
    assert result.stats == {"rewritten": rewritten}


def test_planes_beyond_the_index_table_limit_stay():
    """A declared 2049 x 2049 plane (no data needed to declare it) would need a 4.2M-entry index
    table, above MAX_INDEX_TABLE (2^22): kept, with the reason, and no table built."""
    model = transpose_model([1, 2049, 2049], [0, 2, 1])
    out, result = apply_pass(model, PlaneTransposeToGather())
    assert result.stats == {"rewritten": 0}
    assert result.notes == ["Transpose 'swap' left alone: a 2049 x 2049 plane needs more than the 4194304 "
                            "indices a Gather table may hold"]
    assert op_histogram(out) == {"Transpose": 1}
    assert not out.graph.initializer


@pytest.mark.parametrize("in_shape, perm, options, why", [
    ([1, 768, 14, 14], [0, 1, 3, 2], {}, "196-element planes are left to plane-transpose-to-matmul"),
    ([1, 4, 56, 56], [0, 1, 3, 2], {"min_plane": 3137}, "3136 < min_plane"),
    ([1, 4, 60, 50], [0, 2, 3, 1], {}, "not a swap of the last two axes"),
    ([1, 4, "h", 50], [0, 1, 3, 2], {}, "plane size unknown"),
])
def test_other_transposes_stay(in_shape, perm, options, why):
    model = transpose_model(in_shape, perm)
    out, result = apply_pass(model, PlaneTransposeToGather(**options))
    assert result.stats == {"rewritten": 0}, why
    assert op_histogram(out) == {"Transpose": 1}


@pytest.mark.parametrize("names, planted", [
    (["", "0"], None),               # the unnamed first candidate's prefix is its index: "0", the second's name
    (["swap", "swap2"], "plane_transpose_to_gather/swap/Gather_2_out"),  # an input named as a new tensor would be
])
def test_new_names_never_collide(names, planted):
    """New nodes and tensors are named '<pass>/<node name or candidate index>/...': a node named
    as another's index, or a tensor the model already has under such a name, gave a graph with a
    tensor produced twice (ONNX Runtime refused it: verification failed on a valid model)."""
    nodes = [helper.make_node("Transpose", ["x"], ["ta"], name=names[0], perm=[0, 2, 1]),
             helper.make_node("Transpose", ["z"], ["tb"], name=names[1], perm=[0, 2, 1]),
             helper.make_node("Identity", ["ta"], ["y"], name="y"), helper.make_node("Identity", ["tb"], ["w"], name="w")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16, 17]),
              helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 5, 3])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 17, 16]),
               helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 3, 5])]
    if planted:
        inputs.append(helper.make_tensor_value_info(planted, TensorProto.FLOAT, [3]))
        nodes.append(helper.make_node("Identity", [planted], ["p"], name="p"))
        outputs.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, [3]))
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)])
    out, result = apply_pass(model, PlaneTransposeToGather(min_plane=5))
    assert result.stats == {"rewritten": 2}
    assert op_histogram(out) == {"Gather": 2, "Reshape": 4, "Identity": 2 + bool(planted)}
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 16, 17)).astype(np.float32),
             "z": rng.standard_normal((1, 5, 3)).astype(np.float32)}
    if planted:
        feeds[planted] = np.arange(3, dtype=np.float32)
    got = run(out, feeds)
    np.testing.assert_array_equal(got[0], np.swapaxes(feeds["x"], -1, -2))
    np.testing.assert_array_equal(got[1], np.swapaxes(feeds["z"], -1, -2))
    if planted:
        np.testing.assert_array_equal(got[2], feeds[planted])


@pytest.mark.parametrize("cap, rewritten", [(12, 1), (11, 0)])
def test_a_plane_of_exactly_the_index_table_limit_is_rewritten(monkeypatch, cap, rewritten):
    """The limit is inclusive: a 3 x 4 plane needs 12 indices (the cap made small to test its edge)."""
    import passes.plane_transpose_to_gather as module

    monkeypatch.setattr(module, "MAX_INDEX_TABLE", cap)
    out, result = apply_pass(transpose_model([1, 3, 4], [0, 2, 1]), PlaneTransposeToGather(min_plane=1))
    assert result.stats == {"rewritten": rewritten}
    assert op_histogram(out) == ({"Gather": 1, "Reshape": 2} if rewritten else {"Transpose": 1})


@pytest.mark.parametrize("height, width, rewritten", [(10, 20, 0), (20, 14, 1)])
def test_min_plane_counts_height_times_width(height, width, rewritten):
    """Planes that are not square: 10 x 20 (200 < 257) stays though 20 x 20 would not; 20 x 14 (280) goes though
    14 x 14 would not."""
    out, result = apply_pass(transpose_model([1, 2, height, width], [0, 1, 3, 2]), PlaneTransposeToGather())
    assert result.stats == {"rewritten": rewritten}
    assert op_histogram(out) == ({"Gather": 1, "Reshape": 2} if rewritten else {"Transpose": 1})

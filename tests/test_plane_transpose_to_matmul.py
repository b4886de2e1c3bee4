"""plane-transpose-to-matmul: small H/W swaps become an exact MatMul by a permutation; others stay."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from passes.plane_transpose_to_matmul import PlaneTransposeToMatMul, plane_transpose_matrix
from scan_testing import apply_pass, op_histogram, run, transpose_model


def test_matrix_is_the_plane_transpose():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(x.reshape(12) @ plane_transpose_matrix(3, 4), x.T.reshape(12))


@pytest.mark.parametrize("in_shape", [[1, 768, 14, 14], ["batch", 6, 3, 5], [2, 7, 7]])
def test_small_plane_swap_becomes_exact_matmul(in_shape):
    rank = len(in_shape)
    model = transpose_model(in_shape, list(range(rank - 2)) + [rank - 1, rank - 2])
    out, result = apply_pass(model, PlaneTransposeToMatMul())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"MatMul": 1, "Reshape": 2}
    shape = [2 if d == "batch" else d for d in in_shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], np.swapaxes(x, -1, -2))


@pytest.mark.parametrize("in_shape, perm, options, why", [
    ([1, 192, 56, 56], [0, 1, 3, 2], {}, "3136-element planes: the GEMM would cost more than the copy"),
    ([1, 4, 14, 14], [0, 1, 3, 2], {"max_plane": 195}, "196 > max_plane"),
    ([1, 4, 6, 5], [0, 2, 3, 1], {}, "not a swap of the last two axes"),
    ([1, 4, 6, 5], [0, 1, 3, 2], {"dtype": TensorProto.INT64}, "not float"),
    # found by s16-adv: with max_plane raised, the (H*W)^2 permutation matrix was built from declared
    # dims whatever its size (2^31-element planes, no data needed: a constant beyond any memory)
    ([1, 1, 64, 33], [0, 1, 3, 2], {"max_plane": 2**20}, "2112^2 > MAX_INDEX_TABLE (2^22)"),
])
def test_other_transposes_stay(in_shape, perm, options, why):
    options = dict(options)   # the parameters' own dict is shared by every run of this case: pop from a copy
    model = transpose_model(in_shape, perm, options.pop("dtype", TensorProto.FLOAT))
    out, result = apply_pass(model, PlaneTransposeToMatMul(**options))
    assert result.stats == {"rewritten": 0}, why
    assert op_histogram(out) == {"Transpose": 1}


@pytest.mark.parametrize("in_shape, options", [
    ([1, 2, 16, 16], {}),                   # 256 elements: the default max_plane, inclusive
    ([1, 2, 10, 20], {}),                   # 200 elements, though 20 x 20 would be 400
    ([1, 2, 14, 14], {"max_plane": 196}),
])
def test_max_plane_is_the_largest_plane_rewritten_counting_height_times_width(in_shape, options):
    out, result = apply_pass(transpose_model(in_shape, [0, 1, 3, 2]), PlaneTransposeToMatMul(**options))
    assert result.stats == {"rewritten": 1}
    x = np.random.default_rng(0).standard_normal(in_shape).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], np.swapaxes(x, -1, -2))


@pytest.mark.parametrize("cap, note", [
    (144, None),
    (143, "Transpose 't' kept: a 3 x 4 plane's permutation matrix has more than the 143 values a constant made "
          "from declared dims may hold"),
])
def test_the_matrix_cap_is_inclusive_and_named(monkeypatch, cap, note):
    """A 3 x 4 plane's matrix has 144 values (the cap made small to test its edge)."""
    import onnx_graphsurgeon as gs

    import passes.plane_transpose_to_matmul as module
    from passes.base import PassContext

    monkeypatch.setattr(module, "MAX_INDEX_TABLE", cap)
    model = transpose_model([1, 3, 4], [0, 2, 1])
    model.graph.node[0].name = "t"
    graph = gs.import_onnx(model)
    result = PlaneTransposeToMatMul().run(graph, PassContext(opset=17, explain=True))
    assert (result.stats, result.notes) == ({"rewritten": 0 if note else 1}, [note] if note else [])


@pytest.mark.parametrize("shape, plane", [
    ((2, 3, 4), (3, 3, 4)), ((2, 1, 1), (3, 1, 1)),
    ((1, 0, 3), None), ((1, 3, 0), None),          # an empty plane: its 0 in a Reshape target would mean "copy"
    ((3, 4), None), (None, None),                 # rank 2, an unknown shape
])
def test_swapped_plane_takes_planes_of_rank_3_and_more_with_elements(shape, plane):
    """Session s29's survivors of passes/plane_swaps.py (hand mutants)."""
    import onnx_graphsurgeon as gs

    from passes.plane_swaps import swapped_plane

    rank = 3 if shape is None else len(shape)
    node = gs.Node("Transpose", inputs=[gs.Variable("x")], outputs=[gs.Variable("y")],
                   attrs={"perm": list(range(rank - 2)) + [rank - 1, rank - 2]})
    assert swapped_plane(node, {} if shape is None else {"x": shape}) == plane

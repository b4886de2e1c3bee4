"""cumsum-to-matmul: short CumSums become MatMuls by a triangular ones matrix; others stay, with a reason."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from passes.base import PassContext
from passes.cumsum_to_matmul import CumSumToMatMul
from scan_testing import apply_pass, cumsum_model, op_histogram, run


@pytest.mark.parametrize("shape, axis, ops", [
    ([2, 5, 24], 2, {"MatMul": 1}),                                   # summed axis last
    ([2, 5, 24, 1], 2, {"MatMul": 1, "Squeeze": 1, "Unsqueeze": 1}),  # VMamba's (B, KD, Q, N=1)
    (["batch", 5, 16, 1], -2, {"MatMul": 1, "Squeeze": 1, "Unsqueeze": 1}),
])
def test_short_cumsums_become_matmuls(shape, axis, ops):
    model = cumsum_model(shape, axis)
    out, result = apply_pass(model, CumSumToMatMul(max_length=32))
    assert result.stats == {"rewritten": 1, "kept": 0}
    assert op_histogram(out) == ops
    x = np.random.default_rng(0).standard_normal([3 if d == "batch" else d for d in shape]).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], np.cumsum(x.astype(np.float64), axis=axis), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, axis, attrs, reason", [
    ([2, 64], 1, {}, "summed axis length 64 is not a known length <= 32"),
    ([2, 24, 5], 1, {}, "axes after the summed one are not all size 1"),
    ([2, 24], 1, {"reverse": 1}, "exclusive/reverse CumSum"),
    # a declared axis (no data needed) sizes the ones matrix: 2049^2 > MAX_INDEX_TABLE (2^22) with a
    # max_length that lets it through; 2^20 steps were a 4 TiB constant (found by s16-adv)
    ([1, 2049], 1, {}, "a ones matrix of 2049 x 2049, more than the 4194304 values a constant made from "
                       "declared dims may hold"),
])
def test_other_cumsums_stay_with_a_reason(shape, axis, attrs, reason):
    model = cumsum_model(shape, axis, **attrs)
    graph = gs.import_onnx(model)
    result = CumSumToMatMul(max_length=32 if shape[-1] < 2048 else 2**20).run(graph, PassContext(opset=17, explain=True))
    assert not result.changed and reason in result.notes[0]


@pytest.mark.parametrize("max_length, cap, rewritten", [(4, 16, 1), (3, 16, 0), (4, 15, 0)])
def test_max_length_and_the_table_cap_are_inclusive(monkeypatch, max_length, cap, rewritten):
    """A 4-step CumSum goes at max_length 4 and a cap of 16 = 4 x 4 ones; stays at 3 or at a cap of 15
    (the cap made small to test its edge)."""
    import passes.cumsum_to_matmul as module

    monkeypatch.setattr(module, "MAX_INDEX_TABLE", cap)
    out, result = apply_pass(cumsum_model([2, 4], 1), CumSumToMatMul(max_length=max_length))
    assert result.stats == {"rewritten": rewritten, "kept": 1 - rewritten}
    assert op_histogram(out) == ({"MatMul": 1} if rewritten else {"CumSum": 1})

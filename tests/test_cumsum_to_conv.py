"""cumsum-to-conv: a 4-D CumSum over a short last axis becomes a depthwise Conv of ones; others stay, with a reason."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import helper

from passes.base import PassContext
from passes.cumsum_to_conv import CumSumToConv
from scan_testing import apply_pass, cumsum_model, op_histogram, run


@pytest.mark.parametrize("shape, axis", [
    ([1, 6, 5, 16], 3),    # VMamba's (1, K*D, chunks, Q) after drop_unit_axes, Q = 16
    ([2, 3, 4, 7], -1),    # a length of 7 (VMamba-T's last stage), negative axis
])
def test_short_last_axis_cumsums_become_depthwise_convs(shape, axis):
    out, result = apply_pass(cumsum_model(shape, axis), CumSumToConv(max_length=16))
    assert result.stats == {"rewritten": 1, "kept": 0}
    assert op_histogram(out) == {"Conv": 1}
    conv = out.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    assert attrs == {"group": shape[1], "kernel_shape": [1, shape[3]], "pads": [0, shape[3] - 1, 0, 0],
                     "strides": [1, 1]}
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], np.cumsum(x.astype(np.float64), axis=axis), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, axis, attrs, reason", [
    ([1, 6, 5, 17], 3, {}, "summed axis length 17 > 16"),
    ([1, 6, 16, 5], 2, {}, "not over the last axis of a 4-D tensor (shape [1, 6, 16, 5], axis 2)"),
    ([2, 16], 1, {}, "not over the last axis of a 4-D tensor (shape [2, 16], axis 1)"),
    ([1, 6, 5, 16], 3, {"reverse": 1}, "exclusive/reverse CumSum"),
    # declared channels (no data needed) would size the kernel: 2^21 x 4 ones > MAX_INDEX_TABLE (2^22);
    # 2^31 - 1 channels were a 128 GiB constant (found by s15-adv)
    ([1, 2**21, 1, 4], 3, {}, "a kernel of 2097152 x 4 ones, more than the 4194304 values a constant made "
                              "from declared dims may hold"),
])
def test_other_cumsums_stay_with_a_reason(shape, axis, attrs, reason):
    graph = gs.import_onnx(cumsum_model(shape, axis, **attrs))
    result = CumSumToConv(max_length=16).run(graph, PassContext(opset=17, explain=True))
    assert not result.changed and reason in result.notes[0]


@pytest.mark.parametrize("cap, rewritten", [(12, 1), (11, 0)])
def test_a_kernel_of_exactly_the_table_cap_is_built(monkeypatch, cap, rewritten):
    """The cap is inclusive: 3 channels of 4 steps are a kernel of 12 ones (the cap made small to test its edge)."""
    import passes.cumsum_to_conv as module

    monkeypatch.setattr(module, "MAX_INDEX_TABLE", cap)
    out, result = apply_pass(cumsum_model([1, 3, 2, 4], 3), CumSumToConv(max_length=16))
    assert result.stats == {"rewritten": rewritten, "kept": 1 - rewritten}
    assert op_histogram(out) == ({"Conv": 1} if rewritten else {"CumSum": 1})

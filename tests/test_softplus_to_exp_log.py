"""softplus-to-exp-log: exact op list, and equal to Softplus over the whole float32 range."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from passes.softplus_to_exp_log import SoftplusToExpLog
from scan_testing import apply_pass, op_histogram, run


def test_softplus_is_rewritten_and_exact_everywhere():
    graph = helper.make_graph(
        [helper.make_node("Softplus", ["x"], ["y"], name="sp")], "sp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 1000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 1000])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    out, result = apply_pass(model, SoftplusToExpLog())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Add": 1, "Exp": 1, "Log": 1, "Max": 1, "Min": 1}
    # Inputs from -1e4 to 1e4, where a naive log(1 + exp(x)) overflows, and around the cap of 20.
    x = np.concatenate([np.linspace(-1e4, 1e4, 3000), np.linspace(-30, 30, 2000), np.linspace(19, 21, 1000)]).astype(np.float32).reshape(6, 1000)
    expected = np.logaddexp(0.0, x.astype(np.float64))
    actual = run(out, {"x": x})[0]
    assert np.all(np.isfinite(actual))
    np.testing.assert_allclose(actual, expected, rtol=2e-7, atol=1e-7)

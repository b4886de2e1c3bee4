"""pointwise-conv-to-matmul: 1x1 Convs become channels-last MatMuls and LayerNorm2d's permutes cancel."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.pointwise_conv_to_matmul import PointwiseConvToMatMul
from scan_testing import apply_pass, op_histogram, rel_l2, run

RNG = np.random.default_rng(0)


def layernorm2d_then_conv(conv_attrs: dict, kernel: int = 1, bias: bool = True, channels_out: int = 6):
    """x (NCHW) -> LayerNorm2d (Transpose, LayerNormalization, Transpose) -> Conv -> y, the VMamba block prefix."""
    c = 4
    inits = [numpy_helper.from_array(RNG.standard_normal(c).astype(np.float32), "gamma"),
             numpy_helper.from_array(RNG.standard_normal(c).astype(np.float32), "beta"),
             numpy_helper.from_array(RNG.standard_normal((channels_out, c // conv_attrs.get("group", 1), kernel, kernel))
                                     .astype(np.float32), "w")]
    conv_inputs = ["ln_nchw", "w"]
    if bias:
        inits.append(numpy_helper.from_array(RNG.standard_normal(channels_out).astype(np.float32), "b"))
        conv_inputs.append("b")
    nodes = [helper.make_node("Transpose", ["x"], ["x_nhwc"], perm=[0, 2, 3, 1]),
             helper.make_node("LayerNormalization", ["x_nhwc", "gamma", "beta"], ["ln"], axis=-1),
             helper.make_node("Transpose", ["ln"], ["ln_nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", conv_inputs, ["y"], **conv_attrs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", c, 5, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_becomes_matmul_and_permutes_cancel(bias):
    model = layernorm2d_then_conv({"kernel_shape": [1, 1]}, bias=bias)
    out, result = apply_pass(model, PointwiseConvToMatMul())
    assert result.stats == {"rewritten": 1, "transposes_cancelled": 1}
    # LayerNorm2d's back-permute and the MatMul's forward permute are gone: one Transpose in, one out
    expected = {"Transpose": 2, "LayerNormalization": 1, "MatMul": 1}
    assert op_histogram(out) == (dict(expected, Add=1) if bias else expected)
    x = RNG.standard_normal((3, 4, 5, 7)).astype(np.float32)
    assert rel_l2(run(out, {"x": x})[0], run(model, {"x": x})[0]) <= 1e-6


@pytest.mark.parametrize("attrs, kernel", [
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 3),      # spatial conv
    ({"kernel_shape": [1, 1], "group": 2}, 1),                 # grouped
    ({"kernel_shape": [1, 1], "strides": [2, 2]}, 1),          # strided
])
def test_other_convs_are_left_alone(attrs, kernel):
    model = layernorm2d_then_conv(attrs, kernel=kernel)
    out, result = apply_pass(model, PointwiseConvToMatMul())
    assert not result.changed and result.stats == {"rewritten": 0, "transposes_cancelled": 0}
    assert op_histogram(out) == {"Transpose": 2, "LayerNormalization": 1, "Conv": 1}

"""grouped-conv1d-to-matmul: grouped kernel-1 Conv1ds (x_proj, dt_proj) become one batched MatMul."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.grouped_conv1d_to_matmul import GroupedConv1dToMatMul
from scan_testing import apply_pass, op_histogram, rel_l2, run

RNG = np.random.default_rng(0)


def conv1d(attrs: dict, *, channels_in: int = 256, channels_out: int = 12, group: int = 4, kernel: int = 1,
           bias: bool = True, rank: int = 3):
    """x (batch, channels_in, L) -> Conv -> y, with the group, kernel and attributes asked for."""
    weight_shape = (channels_out, channels_in // group) + (kernel,) * (rank - 2)
    inits = [numpy_helper.from_array(RNG.standard_normal(weight_shape).astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(RNG.standard_normal(channels_out).astype(np.float32), "b"))
        inputs.append("b")
    spatial = [11] if rank == 3 else [5, 7]
    node = helper.make_node("Conv", inputs, ["y"], group=group, kernel_shape=[kernel] * (rank - 2), **attrs)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels_in, *spatial])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("bias", [True, False])
def test_grouped_conv1d_becomes_one_batched_matmul(bias):
    model = conv1d({}, bias=bias)
    out, result = apply_pass(model, GroupedConv1dToMatMul())
    assert result.stats == {"rewritten": 1}
    expected = {"Reshape": 2, "MatMul": 1}
    assert op_histogram(out) == (dict(expected, Add=1) if bias else expected)
    for batch in (1, 3):     # the batch stays symbolic: Reshape's 0 copies it
        x = RNG.standard_normal((batch, 256, 11)).astype(np.float32)
        got, want = run(out, {"x": x})[0], run(model, {"x": x})[0]
        assert got.shape == want.shape == (batch, 12, 11)
        assert rel_l2(got, want) <= 1e-6


def test_groups_are_not_mixed():
    """Each group's outputs read only that group's inputs: zeroing one input group zeroes exactly its outputs."""
    model = conv1d({}, bias=False)
    out, _ = apply_pass(model, GroupedConv1dToMatMul())
    x = RNG.standard_normal((1, 256, 11)).astype(np.float32)
    x[:, 64:128] = 0.0                                     # group 1 of 4 (64 input channels each)
    y = run(out, {"x": x})[0]
    assert np.all(y[:, 3:6] == 0.0) and np.all(y[:, :3] != 0.0) and np.all(y[:, 6:] != 0.0)
    assert rel_l2(y, run(model, {"x": x})[0]) <= 1e-6


@pytest.mark.parametrize("attrs, kwargs", [
    ({}, {"group": 1}),                                    # not grouped: pointwise-conv-to-matmul's, or left
    ({}, {"kernel": 3}),                                   # a real 1-D convolution
    ({"strides": [2]}, {}),
    ({"pads": [1, 1]}, {}),
    ({"dilations": [2]}, {}),
    ({}, {"rank": 4}),                                     # a Conv2d
])
def test_other_convs_are_left_alone(attrs, kwargs):
    model = conv1d(attrs, **kwargs)
    out, result = apply_pass(model, GroupedConv1dToMatMul())
    assert not result.changed and result.stats == {"rewritten": 0}
    assert op_histogram(out) == {"Conv": 1}


def test_weight_computed_at_run_time_is_left_alone():
    model = conv1d({})
    model.graph.input.append(helper.make_tensor_value_info("w2", TensorProto.FLOAT, [12, 64, 1]))
    model.graph.node[0].input[1] = "w2"
    out, result = apply_pass(model, GroupedConv1dToMatMul())
    assert not result.changed and op_histogram(out) == {"Conv": 1}


@pytest.mark.parametrize("per_group, rewritten", [(63, 0), (64, 1)])
def test_thin_groups_stay_convs(per_group, rewritten):
    """dt_proj's 6 inputs per group ran 2.4x slower as a MatMul (docstring): only >= min_channels_in are taken."""
    model = conv1d({}, channels_in=4 * per_group)
    out, result = apply_pass(model, GroupedConv1dToMatMul())
    assert result.stats == {"rewritten": rewritten}
    _, result = apply_pass(model, GroupedConv1dToMatMul(min_channels_in=per_group))
    assert result.stats == {"rewritten": 1}

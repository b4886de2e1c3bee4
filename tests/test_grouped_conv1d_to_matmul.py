"""grouped-conv1d-to-matmul: grouped kernel-1 Conv1ds (x_proj, dt_proj) become one batched MatMul."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.base import PassContext
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


def graph_of(nodes, inits, inputs=(), outputs=("y",), opsets=(("", 17),)):
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256, 11]), *inputs],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


W = numpy_helper.from_array(RNG.standard_normal((256, 64, 1)).astype(np.float32), "w")   # 4 groups of 64 -> 64


@pytest.mark.parametrize("attrs", [{"group": 2}, {"group": 4, "auto_pad": "VALID"}])
def test_two_groups_and_a_valid_auto_pad_are_rewritten_under_the_convs_name(attrs):
    w = numpy_helper.from_array(RNG.standard_normal((8, 256 // attrs["group"], 1)).astype(np.float32), "w")
    model = graph_of([helper.make_node("Conv", ["x", "w"], ["h"], name="x_proj", kernel_shape=[1], **attrs),
                      helper.make_node("Relu", ["h"], ["y"])], [w])
    out, result = apply_pass(model, GroupedConv1dToMatMul())
    assert result.changed is True and result.stats == {"rewritten": 1}
    assert [(node.op_type, node.name) for node in out.graph.node] == [
        ("Reshape", "grouped_conv1d_to_matmul/x_proj/Reshape_1"), ("MatMul", "grouped_conv1d_to_matmul/x_proj/MatMul_2"),
        ("Reshape", "grouped_conv1d_to_matmul/x_proj/Reshape_3"), ("Relu", "")]
    x = RNG.standard_normal((2, 256, 11)).astype(np.float32)
    assert rel_l2(run(out, {"x": x})[0], run(model, {"x": x})[0]) <= 1e-6


def test_two_unnamed_convs_get_names_of_their_own():
    """Both Convs have the empty name: one set of taken prefixes shared by the builders keeps them apart
    (apply_pass runs the full checker: a tensor made twice fails it)."""
    model = graph_of([helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[1], group=4),
                      helper.make_node("Conv", ["h", "w"], ["y"], kernel_shape=[1], group=4)], [W])
    out, result = apply_pass(model, GroupedConv1dToMatMul())
    assert result.stats == {"rewritten": 2}
    assert op_histogram(out) == {"Reshape": 4, "MatMul": 2}
    x = RNG.standard_normal((1, 256, 11)).astype(np.float32)
    assert rel_l2(run(out, {"x": x})[0], run(model, {"x": x})[0]) <= 1e-6


def test_a_computed_bias_no_group_a_transposed_or_another_domains_conv_stays():
    """A bias computed at run time; a Conv without a group attribute (1); ConvTranspose, whose weight is
    (C_in, C_out / group, k) and whose group means another thing; a Conv of a custom domain (its meaning is
    that domain's)."""
    bias_input = helper.make_tensor_value_info("b", TensorProto.FLOAT, [256])
    cases = [
        graph_of([helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1], group=4)], [W], inputs=[bias_input]),
        graph_of([helper.make_node("Conv", ["x", "w1"], ["y"], kernel_shape=[1])],
                 [numpy_helper.from_array(RNG.standard_normal((4, 256, 1)).astype(np.float32), "w1")]),
        graph_of([helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[1], group=4)], [W]),
    ]
    for model in cases:
        out, result = apply_pass(model, GroupedConv1dToMatMul(min_channels_in=1))
        assert not result.changed and result.stats == {"rewritten": 0}
        assert op_histogram(out) == {model.graph.node[0].op_type: 1}
    custom = graph_of([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1], group=4, domain="com.example")],
                      [W], opsets=(("", 17), ("com.example", 1)))
    graph = gs.import_onnx(custom)
    result = GroupedConv1dToMatMul(min_channels_in=1).run(graph, PassContext(opset=17))
    assert not result.changed and [(node.op, node.domain) for node in graph.nodes] == [("Conv", "com.example")]


def test_a_name_the_model_already_has_is_not_made_again():
    """The model already holds a tensor named as the pass's first new one would be: the builder's prefix
    must start from the graph's names (taken_prefixes), else the tensor is produced twice."""
    planted = "grouped_conv1d_to_matmul/x_proj/Reshape_1_out"
    model = graph_of([helper.make_node("Relu", ["x"], [planted]),
                      helper.make_node("Conv", [planted, "w"], ["y"], name="x_proj", kernel_shape=[1], group=4)], [W])
    out, result = apply_pass(model, GroupedConv1dToMatMul())   # the full checker refuses a tensor made twice
    assert result.stats == {"rewritten": 1}
    assert [node.name for node in out.graph.node][1:] == [
        "grouped_conv1d_to_matmul/x_proj#2/Reshape_1", "grouped_conv1d_to_matmul/x_proj#2/MatMul_2",
        "grouped_conv1d_to_matmul/x_proj#2/Reshape_3"]
    x = RNG.standard_normal((1, 256, 11)).astype(np.float32)
    assert rel_l2(run(out, {"x": x})[0], run(model, {"x": x})[0]) <= 1e-6

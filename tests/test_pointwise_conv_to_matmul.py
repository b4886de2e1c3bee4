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


def conv_model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


X_INFO = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 3, 5])
X = RNG.standard_normal((2, 4, 3, 5)).astype(np.float32)
W = numpy_helper.from_array(RNG.standard_normal((6, 4, 1, 1)).astype(np.float32), "w")


@pytest.mark.parametrize("attrs, computed", [
    ({"kernel_shape": [1, 1], "pads": [1, 1, 1, 1]}, ""),             # a padded 1x1 Conv grows the plane
    ({"kernel_shape": [1, 1]}, "w"),                                    # weight computed
    ({"kernel_shape": [1, 1], "strides": [2, 2]}, "b"),                 # strided, with a computed bias
])
def test_padded_or_computed_weight_or_strided_with_computed_bias_stays(attrs, computed):
    inputs = [X_INFO] + ([helper.make_tensor_value_info(computed, TensorProto.FLOAT, [6, 4, 1, 1] if computed == "w" else [6])]
                         if computed else [])
    inits = [init for init in [W, numpy_helper.from_array(np.ones(6, np.float32), "b")] if init.name != computed]
    model = conv_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], inputs, ["y"], inits)
    out, result = apply_pass(model, PointwiseConvToMatMul())
    assert not result.changed and result.stats == {"rewritten": 0, "transposes_cancelled": 0}
    assert op_histogram(out) == {"Conv": 1}


def test_a_valid_auto_pad_conv_is_rewritten_and_names_its_nodes_after_the_conv():
    model = conv_model([helper.make_node("Conv", ["x", "w"], ["y"], name="proj", kernel_shape=[1, 1], auto_pad="VALID")],
                       [X_INFO], ["y"], [W])
    out, result = apply_pass(model, PointwiseConvToMatMul())
    assert result.changed is True and result.stats == {"rewritten": 1, "transposes_cancelled": 0}
    assert [(node.op_type, node.name) for node in out.graph.node] == [
        ("Transpose", "pointwise_conv_to_matmul/proj/Transpose_1"), ("MatMul", "pointwise_conv_to_matmul/proj/MatMul_2"),
        ("Transpose", "pointwise_conv_to_matmul/proj/Transpose_3")]
    assert rel_l2(run(out, {"x": X})[0], run(model, {"x": X})[0]) <= 1e-6


def test_two_unnamed_convs_get_names_of_their_own():
    """Both Convs have the empty name: the second builder's prefix must see the first's names
    (one set of taken prefixes shared by every builder)."""
    model = conv_model([helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[1, 1]),
                        helper.make_node("Conv", ["h", "w2"], ["y"], kernel_shape=[1, 1])], [X_INFO], ["y"],
                       [W, numpy_helper.from_array(RNG.standard_normal((4, 6, 1, 1)).astype(np.float32), "w2")])
    out, result = apply_pass(model, PointwiseConvToMatMul())   # apply_pass runs the full ONNX checker
    assert result.stats == {"rewritten": 2, "transposes_cancelled": 1}
    names = [node.name for node in out.graph.node]
    assert len(set(names)) == len(names) == 4
    assert rel_l2(run(out, {"x": X})[0], run(model, {"x": X})[0]) <= 1e-6


def test_only_inverse_transpose_pairs_cancel_every_one_counted_and_none_without_a_conv():
    """Two inverse pairs (the first also read as a graph output, so kept: the scan goes on past it),
    a pair that is not inverse, and perm-less Transposes (reversing the axes): a reversal of a
    reversal cancels, a reversal followed by a perm of the same length does not."""
    eye = numpy_helper.from_array(np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1), "eye")
    nodes = [helper.make_node("Transpose", ["x"], ["a1"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["a1"], ["kept_out"], perm=[0, 3, 1, 2]),       # a graph output: stays
             helper.make_node("Transpose", ["x"], ["b1"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["b1"], ["b2"], perm=[0, 3, 1, 2]),              # cancels
             helper.make_node("Transpose", ["x"], ["c1"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["c1"], ["c2"], perm=[0, 2, 3, 1]),              # not inverse
             helper.make_node("Transpose", ["x"], ["r1"]),
             helper.make_node("Transpose", ["r1"], ["r2"]),                                 # reversal twice: cancels
             helper.make_node("Transpose", ["x"], ["s1"]),
             helper.make_node("Transpose", ["s1"], ["s2"], perm=[3, 2, 1, 0]),              # perm of 4 after no perm: stays
             helper.make_node("Conv", ["b2", "eye"], ["y"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c2"], ["c"]), helper.make_node("Relu", ["r2"], ["r"]),
             helper.make_node("Relu", ["s2"], ["s"])]
    model = conv_model(nodes, [X_INFO], ["kept_out", "y", "c", "r", "s"], [eye])
    out, result = apply_pass(model, PointwiseConvToMatMul())
    # b1 -> b2 and r1 -> r2 (the Conv's own Transpose to NHWC then reads x, made by no Transpose)
    assert result.stats == {"rewritten": 1, "transposes_cancelled": 2}
    consumers = {node.output[0]: list(node.input) for node in out.graph.node if node.op_type == "Relu"}
    assert consumers == {"c": ["c2"], "r": ["x"], "s": ["s2"]}
    assert "kept_out" in [node.output[0] for node in out.graph.node if node.op_type == "Transpose"]
    for got, expected in zip(run(out, {"x": X}), run(model, {"x": X})):
        np.testing.assert_array_equal(got, expected)
    without_conv = conv_model(nodes[:10] + nodes[11:], [X_INFO], ["kept_out", "c", "r", "s"], [])
    out, result = apply_pass(without_conv, PointwiseConvToMatMul())
    assert not result.changed and result.stats == {"rewritten": 0, "transposes_cancelled": 0}
    assert op_histogram(out) == {"Transpose": 10, "Relu": 3}


def test_a_name_the_model_already_has_is_not_made_again():
    """The model already holds a tensor named as the pass's first new one would be: the builder's prefix
    must start from the graph's names (taken_prefixes), else the tensor is produced twice."""
    planted = "pointwise_conv_to_matmul/proj/Transpose_1_out"
    model = conv_model([helper.make_node("Relu", ["x"], [planted]),
                        helper.make_node("Conv", [planted, "w"], ["y"], name="proj", kernel_shape=[1, 1])],
                       [X_INFO], ["y"], [W])
    out, result = apply_pass(model, PointwiseConvToMatMul())   # the full checker refuses a tensor made twice
    assert result.stats == {"rewritten": 1, "transposes_cancelled": 0}
    assert [node.name for node in out.graph.node][1:] == [
        "pointwise_conv_to_matmul/proj#2/Transpose_1", "pointwise_conv_to_matmul/proj#2/MatMul_2",
        "pointwise_conv_to_matmul/proj#2/Transpose_3"]
    assert rel_l2(run(out, {"x": X})[0], run(model, {"x": X})[0]) <= 1e-6

"""layernorm-channels-first: LayerNorm2d's Transpose / LayerNormalization / Transpose becomes the
normalisation over axis 1 in NCHW (means as 1x1 Convs); same outputs, no Transpose left."""
from __future__ import annotations

import numpy as np
import pytest
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from passes.base import PassContext
from passes.layernorm_channels_first import LayerNormChannelsFirst
from scan_testing import apply_pass, op_histogram, run

C, H, W = 6, 3, 5
RNG = np.random.default_rng(0)
SCALE, BIAS = RNG.standard_normal(C).astype(np.float32), RNG.standard_normal(C).astype(np.float32)
X = (RNG.standard_normal((1, C, H, W)) * 3 + 1).astype(np.float32)


def model(nodes, outputs, x_shape=(1, C, H, W)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializer=[numpy_helper.from_array(SCALE, "scale"), numpy_helper.from_array(BIAS, "bias")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def layernorm(source, output, name):
    return helper.make_node("LayerNormalization", [source, "scale", "bias"], [output], name=name, axis=-1, epsilon=1e-5)


def test_layernorm2d_loses_its_transposes():
    before = model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), layernorm("t", "n", "ln"),
                    helper.make_node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2], name="back")], ["y"])
    after, result = apply_pass(before, LayerNormChannelsFirst())
    assert result.stats == {"rewritten": 1, "kept": 0}
    # mean and variance as 1x1 Convs to one channel, then (x - mean) / Sqrt(var + eps) * scale + bias
    assert op_histogram(after) == {"Add": 2, "Conv": 2, "Div": 1, "Mul": 2, "Sqrt": 1, "Sub": 1}
    np.testing.assert_allclose(run(after, {"x": X})[0], run(before, {"x": X})[0], rtol=1e-5, atol=1e-5)


def test_two_layernorms_in_a_row_channels_last_both_rewritten():
    """VMamba's stage entry: the downsampling's LayerNorm2d output is read back to NCHW (the
    residual) and, still channels-last, by the first block's norm; the second finds its input's
    channels-first form in the first's Transpose back."""
    before = model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), layernorm("t", "a", "ln_a"),
                    helper.make_node("Transpose", ["a"], ["residual"], perm=[0, 3, 1, 2], name="back_a"),
                    layernorm("a", "b", "ln_b"),
                    helper.make_node("Transpose", ["b"], ["y"], perm=[0, 3, 1, 2], name="back_b")], ["residual", "y"])
    after, result = apply_pass(before, LayerNormChannelsFirst())
    assert result.stats == {"rewritten": 2, "kept": 0}
    assert "Transpose" not in op_histogram(after) and "LayerNormalization" not in op_histogram(after)
    for got, expected in zip(run(after, {"x": X}), run(before, {"x": X})):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_layernorm_on_a_channels_last_input_is_left_with_a_reason():
    before = model([layernorm("x", "n", "ln"), helper.make_node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2], name="back")],
                   ["y"], x_shape=(1, H, W, C))
    graph = gs.import_onnx(before)
    result = LayerNormChannelsFirst().run(graph, PassContext(opset=17, explain=True))
    assert not result.changed
    assert result.notes == ["Transpose 'back' left alone: the LayerNormalization's input has no channels-first form in the graph"]


def test_matrix_centring_writes_x_minus_mean_as_one_conv():
    """centring=matrix: x - mean is one 1x1 Conv by I - 1/C (no Conv to the mean, no Sub), so no
    tensor holds the means, which are float noise where they are truly 0 (tpu-mlir's layer-by-layer
    check failed on one in VMamba-T); the variance stays a Conv to one channel."""
    before = model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), layernorm("t", "n", "ln"),
                    helper.make_node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2], name="back")], ["y"])
    after, result = apply_pass(before, LayerNormChannelsFirst(centring="matrix"))
    assert result.stats == {"rewritten": 1, "kept": 0}
    assert op_histogram(after) == {"Add": 2, "Conv": 2, "Div": 1, "Mul": 2, "Sqrt": 1}
    weights = sorted((tuple(init.dims), numpy_helper.to_array(init)) for init in after.graph.initializer
                     if len(init.dims) == 4)
    (variance_shape, variance), (centring_shape, centring) = weights
    assert variance_shape == (1, C, 1, 1) and np.allclose(variance, 1 / C)
    assert centring_shape == (C, C, 1, 1)
    np.testing.assert_allclose(centring[:, :, 0, 0], np.eye(C) - 1 / C, rtol=0, atol=1e-7)
    np.testing.assert_allclose(run(after, {"x": X})[0], run(before, {"x": X})[0], rtol=1e-5, atol=1e-5)


def test_matrix_after_norm_centres_by_matrix_only_a_layernorm_that_reads_another():
    """VMamba's stage entry (two LayerNorm2ds in a row): with centring=matrix-after-norm only the
    second, whose input is the first's output, gets the (C, C) Conv; the first keeps Conv + Sub."""
    before = model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), layernorm("t", "a", "ln_a"),
                    helper.make_node("Transpose", ["a"], ["residual"], perm=[0, 3, 1, 2], name="back_a"),
                    layernorm("a", "b", "ln_b"),
                    helper.make_node("Transpose", ["b"], ["y"], perm=[0, 3, 1, 2], name="back_b")], ["residual", "y"])
    after, result = apply_pass(before, LayerNormChannelsFirst(centring="matrix-after-norm"))
    assert result.stats == {"rewritten": 2, "kept": 0}
    assert op_histogram(after) == {"Add": 4, "Conv": 4, "Div": 2, "Mul": 4, "Sqrt": 2, "Sub": 1}
    # each LayerNorm2d's 1/C weights (the first's shared by its mean and variance), the second's I - 1/C
    assert sorted(tuple(init.dims) for init in after.graph.initializer if len(init.dims) == 4) == [
        (1, C, 1, 1), (1, C, 1, 1), (C, C, 1, 1)]
    for got, expected in zip(run(after, {"x": X}), run(before, {"x": X})):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _permuted_layernorm(channels: int) -> onnx.ModelProto:
    """NCHW -> NHWC, LayerNorm over C (unit scale, zero bias), back: the pass's input at a chosen width."""
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
         helper.make_node("LayerNormalization", ["t", "big_scale", "big_bias"], ["n"], axis=-1, epsilon=1e-5),
         helper.make_node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ones(channels, np.float32), "big_scale"),
                     numpy_helper.from_array(np.zeros(channels, np.float32), "big_bias")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_matrix_centring_beyond_the_table_limit_takes_the_mean():
    """A (C, C) centring matrix grows with the square of the model's stored scale: C = 65536 (a
    256 KiB scale) would be a 16 GiB constant. Over MAX_INDEX_TABLE (2^22) entries the LayerNorm
    is centred by its mean instead, exact too (found by s15-adv)."""
    channels = 2049   # 2049^2 = 4198401 > 2^22
    before = _permuted_layernorm(channels)
    after, result = apply_pass(before, LayerNormChannelsFirst(centring="matrix"))
    assert result.stats == {"rewritten": 1, "kept": 0}
    assert op_histogram(after) == {"Add": 2, "Conv": 2, "Div": 1, "Mul": 2, "Sqrt": 1, "Sub": 1}
    assert max(int(np.prod(init.dims)) for init in after.graph.initializer) == channels
    x = RNG.standard_normal((1, channels, 1, 2)).astype(np.float32)
    np.testing.assert_allclose(run(after, {"x": x})[0], run(before, {"x": x})[0], rtol=1e-4, atol=1e-4)


def layernorm2d(norm, back_perm=(0, 3, 1, 2), to_perm=(0, 2, 3, 1)):
    """Transpose(to_perm) -> ``norm`` (reading "t", writing "n") -> Transpose(back_perm) -> y."""
    return model([helper.make_node("Transpose", ["x"], ["t"], perm=list(to_perm)), norm,
                  helper.make_node("Transpose", ["n"], ["y"], perm=list(back_perm), name="back")], ["y"])


def explained(before, **options):
    graph = gs.import_onnx(before)
    result = LayerNormChannelsFirst(**options).run(graph, PassContext(opset=17, explain=True))
    return result.stats, result.notes


def test_transposes_of_other_perms_are_no_channels_first_form():
    """Only Transpose(0, 2, 3, 1) makes a channels-last tensor of a channels-first one, and only
    Transpose(0, 3, 1, 2) reads one back: a (0, 3, 2, 1) swaps H and W too, so a LayerNorm after it,
    or on a tensor another reads by it, is not LayerNorm2d."""
    swapped = model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 2, 1]), layernorm("t", "n", "ln"),
                     helper.make_node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2], name="back")], ["y"])
    read_swapped = model([layernorm("x", "n", "ln"), helper.make_node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2], name="back"),
                          helper.make_node("Transpose", ["x"], ["other"], perm=[0, 3, 2, 1])], ["y", "other"],
                         x_shape=(1, H, W, C))
    reason = "Transpose 'back' left alone: the LayerNormalization's input has no channels-first form in the graph"
    for before in (swapped, read_swapped):
        assert explained(before) == ({"rewritten": 0, "kept": 1}, [reason])


def test_only_a_transpose_to_nchw_of_a_layernorm_is_a_candidate():
    """A Transpose back by another perm, or one to NCHW of another op, is not looked at (no note, not kept);
    a Transpose without perm (reversing the axes) anywhere in the graph is read without failing."""
    other_back = layernorm2d(layernorm("t", "n", "ln"), back_perm=(0, 3, 2, 1))
    of_relu = layernorm2d(helper.make_node("Relu", ["t"], ["n"]))
    of_input = model([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 3, 1, 2], name="back")], ["y"])
    for before in (other_back, of_relu, of_input):
        assert explained(before) == ({"rewritten": 0, "kept": 0}, [])
    unpermuted = model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), layernorm("t", "n", "ln"),
                        helper.make_node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2], name="back"),
                        helper.make_node("Transpose", ["x"], ["reversed"]), helper.make_node("Transpose", ["n"], ["n_reversed"])],
                       ["y", "reversed", "n_reversed"])
    after, result = apply_pass(unpermuted, LayerNormChannelsFirst())
    assert result.stats == {"rewritten": 1, "kept": 0}
    assert op_histogram(after) == {"Add": 2, "Conv": 2, "Div": 1, "Mul": 2, "Sqrt": 1, "Sub": 1, "Transpose": 3,
                                   "LayerNormalization": 1}
    for got, expected in zip(run(after, {"x": X}), run(unpermuted, {"x": X})):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_matrix_after_norm_gives_the_matrix_to_the_norm_reading_the_first_norms_output():
    """The (C, C) Conv reads the first LayerNorm2d's output in NCHW (its Transpose back, 'residual'),
    never the graph input x."""
    before = model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), layernorm("t", "a", "ln_a"),
                    helper.make_node("Transpose", ["a"], ["residual"], perm=[0, 3, 1, 2], name="back_a"),
                    layernorm("a", "b", "ln_b"),
                    helper.make_node("Transpose", ["b"], ["y"], perm=[0, 3, 1, 2], name="back_b")], ["residual", "y"])
    after, _ = apply_pass(before, LayerNormChannelsFirst(centring="matrix-after-norm"))
    matrices = {init.name for init in after.graph.initializer if tuple(init.dims) == (C, C, 1, 1)}
    assert [node.input[0] for node in after.graph.node if node.op_type == "Conv" and node.input[1] in matrices] == ["residual"]
    assert [node.input[0] for node in after.graph.node if node.op_type == "Sub"] == ["x"]


@pytest.mark.parametrize("axis", [3, None])
def test_axis_3_or_no_axis_is_the_last(axis):
    """LayerNormalization's axis defaults to -1; on a rank-4 input 3 is the same axis."""
    attrs = {"epsilon": 1e-5} if axis is None else {"axis": axis, "epsilon": 1e-5}
    before = layernorm2d(helper.make_node("LayerNormalization", ["t", "scale", "bias"], ["n"], name="ln", **attrs))
    after, result = apply_pass(before, LayerNormChannelsFirst())
    assert result.stats == {"rewritten": 1, "kept": 0}
    np.testing.assert_allclose(run(after, {"x": X})[0], run(before, {"x": X})[0], rtol=1e-5, atol=1e-5)


def test_a_norm_over_other_axes_or_of_a_computed_scale_is_left_with_its_reason():
    over_hwc = layernorm2d(helper.make_node("LayerNormalization", ["t", "scale", "bias"], ["n"], name="ln", axis=1))
    assert explained(over_hwc) == ({"rewritten": 0, "kept": 1},
                                   ["Transpose 'back' left alone: LayerNormalization axis 1 is not the last"])
    computed = layernorm2d(helper.make_node("LayerNormalization", ["t", "scale_in", "bias"], ["n"], name="ln"))
    computed.graph.input.append(helper.make_tensor_value_info("scale_in", TensorProto.FLOAT, [C]))
    assert explained(computed) == ({"rewritten": 0, "kept": 1},
                                   ["Transpose 'back' left alone: LayerNormalization scale or bias is not a constant"])


@pytest.mark.parametrize("centring", ["mean", "matrix"])
def test_a_norm_without_bias_ends_in_the_scales_mul(centring):
    before = layernorm2d(helper.make_node("LayerNormalization", ["t", "scale"], ["n"], name="ln", epsilon=1e-5))
    after, result = apply_pass(before, LayerNormChannelsFirst(centring=centring))
    assert result.stats == {"rewritten": 1, "kept": 0}
    expected = {"Add": 1, "Conv": 2, "Div": 1, "Mul": 2, "Sqrt": 1, **({"Sub": 1} if centring == "mean" else {})}
    assert op_histogram(after) == expected
    assert after.graph.node[-1].op_type == "Mul" and after.graph.node[-1].output[0] == "y"
    np.testing.assert_allclose(run(after, {"x": X})[0], run(before, {"x": X})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("epsilon", [0.5, None])
def test_the_norms_epsilon_or_its_default_is_kept(epsilon):
    """epsilon 0.5 against data of variance ~9 moves the result by several percent; absent, ONNX's 1e-5."""
    attrs = {} if epsilon is None else {"epsilon": epsilon}
    before = layernorm2d(helper.make_node("LayerNormalization", ["t", "scale", "bias"], ["n"], name="ln", **attrs))
    after, _ = apply_pass(before, LayerNormChannelsFirst())
    np.testing.assert_allclose(run(after, {"x": X})[0], run(before, {"x": X})[0], rtol=1e-5, atol=1e-5)
    epsilon_constants = [numpy_helper.to_array(init) for init in after.graph.initializer if init.dims == []]
    assert [float(value) for value in epsilon_constants] == [np.float32(epsilon or 1e-5)]


def test_matrix_centring_at_exactly_the_table_limit_is_a_matrix():
    """C = 2048: C^2 = 2^22 = MAX_INDEX_TABLE, inclusive: the (C, C) matrix, no Sub."""
    graph = gs.import_onnx(_permuted_layernorm(channels=2048))
    result = LayerNormChannelsFirst(centring="matrix").run(graph, PassContext(opset=17))
    assert result.stats == {"rewritten": 1, "kept": 0}
    assert sorted(node.op for node in graph.nodes) == ["Add", "Add", "Conv", "Conv", "Div", "Mul", "Mul", "Sqrt"]

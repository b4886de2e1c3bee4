"""reshape-through-elementwise: spatial splits move up, merges move down, through elementwise ops
and 1x1 Convs; channel reshapes, shared inputs and partly broadcast operands stop them."""
from __future__ import annotations

import numpy as np
import pytest
import onnx
import onnx_graphsurgeon as gs

from passes.reshape_through_elementwise import ReshapeThroughElementwise, axis_groups, mapped_operand, spatial_only
from scan_testing import apply_pass, op_histogram, run

C, L, Q = 8, 12, 4

# The shape of VMamba's scan on the tpu pipeline, small: dt from a pointwise Conv1d, softplus, the
# log-decay dt * A and the drive dt * B * u reshaped into chunks (1, C, L / Q, Q), a stand-in for
# the chunked scan (Exp, Add), the states reshaped back, read out by C and plus u.
SCAN_LIKE = f"""
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2,{L}] x, float[1,{C},{L},1] b, float[1,{C},{L},1] c, float[1,{C},{L}] u) => (float[1,{C},{L}] y)
  <int64[1] last = {{3}}, int64[4] chunked = {{1, {C}, {L // Q}, {Q}}}, int64[4] flat = {{1, {C}, {L}, 1}}>
{{
  raw = Conv<group = 2>(x, w, bias)
  dt = Softplus(raw)
  dt4 = Unsqueeze(dt, last)
  log_decay = Mul(dt4, a)
  dt_b = Mul(dt4, b)
  u4 = Unsqueeze(u, last)
  drive = Mul(dt_b, u4)
  log_decay_chunks = Reshape(log_decay, chunked)
  drive_chunks = Reshape(drive, chunked)
  decay_chunks = Exp(log_decay_chunks)
  states_chunks = Add(decay_chunks, drive_chunks)
  states = Reshape(states_chunks, flat)
  read = Mul(states, c)
  read3 = Squeeze(read, last)
  y = Add(read3, u)
}}
"""


def scan_like_model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(SCAN_LIKE)
    rng = np.random.default_rng(0)
    values = {"w": rng.standard_normal((C, 1, 1)), "bias": rng.standard_normal(C), "a": -rng.uniform(0.5, 2, (1, C, 1, 1))}
    model.graph.initializer.extend(onnx.numpy_helper.from_array(value.astype(np.float32), name)
                                   for name, value in values.items())
    return model


def feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((1, 2, L)).astype(np.float32),
            "b": rng.standard_normal((1, C, L, 1)).astype(np.float32),
            "c": rng.standard_normal((1, C, L, 1)).astype(np.float32),
            "u": rng.standard_normal((1, C, L)).astype(np.float32)}


def test_scan_like_chain_runs_in_the_chunk_layout():
    """Every op between the Conv's input and the output runs on (1, C, L / Q, Q): the split moved up
    through the Muls, the Unsqueeze, the Softplus and the Conv (now a 1x1 Conv2d), the merge down
    through the readout's Mul, the Squeeze and the Add. Left: one Reshape per graph input (x, b, c, u)
    and one for the output; the same values."""
    model = scan_like_model()
    out, result = apply_pass(model, ReshapeThroughElementwise())
    assert result.changed
    assert op_histogram(out) == {"Add": 2, "Conv": 1, "Exp": 1, "Mul": 4, "Reshape": 5, "Softplus": 1}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in onnx.shape_inference.infer_shapes(out).graph.value_info}
    for node in out.graph.node:
        if node.op_type != "Reshape":
            assert shapes.get(node.output[0], [1, C, L // Q, Q]) == [1, C, L // Q, Q], node.name
    conv = next(node for node in out.graph.node if node.op_type == "Conv")
    assert [a.ints for a in conv.attribute if a.name == "kernel_shape"] == [[1, 1]]
    np.testing.assert_allclose(run(out, feeds())[0], run(model, feeds())[0], rtol=0, atol=1e-6)


def test_axis_groups_and_operand_mapping():
    assert axis_groups((1, C, L, 1), (1, C, L // Q, Q)) == [([0], [0]), ([1], [1]), ([2, 3], [2, 3])]
    assert axis_groups((1, 4, 6, 8), (1, 4, 48)) == [([0], [0]), ([1], [1]), ([2, 3], [2])]
    assert axis_groups((1, 6, 4), (1, 4, 6)) == [([0], [0]), ([1, 2], [1, 2])]   # 6 and 4 share no boundary
    assert spatial_only((1, 6, 4), (1, 4, 6)) is None and spatial_only((1, 6, 4), (1, 6, 2, 2)) is not None
    groups = axis_groups((1, C, L, 1), (1, C, L // Q, Q))
    assert mapped_operand((1, C, 1, 1), (1, C, L, 1), (1, C, L // Q, Q), groups) == (1, C, 1, 1)
    assert mapped_operand((L, 1), (1, C, L, 1), (1, C, L // Q, Q), groups) == (1, 1, L // Q, Q)
    groups = axis_groups((1, 4, 6, 8), (1, 4, 48))
    assert mapped_operand((1, 4, 6, 1), (1, 4, 6, 8), (1, 4, 48), groups) is None   # broadcast over part of a group


CHANNELS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,6,5] x) => (float[1,24,5] y) <int64[3] merged = {1, 24, 5}> {
  e = Exp(x)
  y = Reshape(e, merged)
}
"""

SHARED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,12] x) => (float[1,4,3,4] y, float[1,4,12] z) <int64[4] split = {1, 4, 3, 4}> {
  e = Exp(x)
  y = Reshape(e, split)
  z = Neg(e)
}
"""


def test_channel_reshapes_and_shared_inputs_stay():
    """A Reshape that merges channels (1, 4, 6, 5) -> (1, 24, 5) would move the channel axis a TPU
    spreads over its lanes: left alone. A split whose input another op also reads: moving it up
    would compute the Exp twice: left alone."""
    for model in (onnx.parser.parse_model(CHANNELS), onnx.parser.parse_model(SHARED)):
        out, result = apply_pass(model, ReshapeThroughElementwise())
        assert not result.changed
        assert op_histogram(out) == op_histogram(model)


ZERO_TARGET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4,12] x) => (float[1,4,3,4] y) <int64[1] first = {0}, int64[4] target = {0, 0, 3, 4}> {
  x3 = Unsqueeze(x, first)
  y = Reshape(x3, target)
}
"""


def test_folded_reshape_takes_its_static_shape_not_a_zero_target():
    """Reshape(Unsqueeze(x)) folds into one Reshape of x; the target [0, 0, 3, 4] copied dims 0 and 1
    of the Unsqueeze's output (1, 4): of x's (4, 12) it would give (4, 12, 3, 4). The folded Reshape
    gets the static shape (1, 4, 3, 4)."""
    model = onnx.parser.parse_model(ZERO_TARGET)
    out, result = apply_pass(model, ReshapeThroughElementwise())
    assert result.changed and op_histogram(out) == {"Reshape": 1}
    x = np.arange(48, dtype=np.float32).reshape(4, 12)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(model, {"x": x})[0])


def test_names_the_pass_would_make_are_not_taken_twice():
    """A model's names are hostile text: graph inputs already called as this pass names its new
    tensors must not be produced a second time (the pass had a count from 1 and no look at the graph)."""
    made, _ = apply_pass(scan_like_model(), ReshapeThroughElementwise())
    new_names = sorted({t for n in made.graph.node for t in n.output if t.startswith("reshape_through_elementwise/")})
    assert len(new_names) >= 4
    for victim in new_names[:4]:
        model = scan_like_model()
        for node in model.graph.node:
            node.input[:] = [victim if name == "u" else name for name in node.input]
        next(i for i in model.graph.input if i.name == "u").name = victim
        values = feeds()
        values[victim] = values.pop("u")
        out, result = apply_pass(model, ReshapeThroughElementwise())
        onnx.checker.check_model(out, full_check=True)
        produced = [t for n in out.graph.node for t in n.output]
        assert len(produced) == len(set(produced)) and victim not in produced
        np.testing.assert_allclose(run(out, values)[0], run(model, values)[0], rtol=1e-6, atol=1e-6)


CONV_THEN_SPLIT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2,12] x) => (float[1,4,SPLIT] y) <int64[4] split = {1, 4, SPLIT}, float[4,2,1] w = {1,2,3,4,5,6,7,8}> {
  c = Conv<ATTRS>(x, w)
  y = Reshape(c, split)
}
"""


@pytest.mark.parametrize("attrs, out_length, split", [
    ("strides = [2]", 6, "3, 2"),          # a strided 1x1 Conv keeps every other position
    ("pads = [1, 1]", 14, "7, 2"),         # a padded one adds positions at both ends
])
def test_a_strided_or_padded_1x1_conv_is_not_passed(attrs, out_length, split):
    text = CONV_THEN_SPLIT.replace("ATTRS", attrs).replace("SPLIT", split)
    model = onnx.parser.parse_model(text)
    out, result = apply_pass(model, ReshapeThroughElementwise())
    assert not result.changed
    assert op_histogram(out) == {"Conv": 1, "Reshape": 1}
    x = np.random.default_rng(2).standard_normal((1, 2, 12)).astype(np.float32)
    assert run(out, {"x": x})[0].shape[2:] == tuple(int(d) for d in split.split(", "))


def test_a_reshape_to_its_own_shape_that_is_a_graph_output_stays():
    model = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,12] x) => (float[1,4,12] y) <int64[3] same = {1, 4, 12}> {
  e = Exp(x)
  y = Reshape(e, same)
}
""")
    out, result = apply_pass(model, ReshapeThroughElementwise())
    onnx.checker.check_model(out, full_check=True)
    assert op_histogram(out) == {"Exp": 1, "Reshape": 1}
    x = np.random.default_rng(3).standard_normal((1, 4, 12)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], np.exp(x), rtol=1e-6)


def test_a_reshape_to_its_own_shape_inside_the_graph_is_removed():
    """Session s24: `_bypass` had no test (mutmut: 'no tests'): Exp(x) reshaped to its own shape, then Relu: the
    Reshape goes, the Relu reads the Exp."""
    model = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,12] x) => (float[1,4,12] y) <int64[3] same = {1, 4, 12}> {
  e = Exp(x)
  r = Reshape(e, same)
  y = Relu(r)
}
""")
    out, result = apply_pass(model, ReshapeThroughElementwise())
    assert op_histogram(out) == {"Exp": 1, "Relu": 1}
    assert result.stats == {"moved": 0, "steps": 1, "reshapes": 0}
    x = np.random.default_rng(4).standard_normal((1, 4, 12)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], np.maximum(np.exp(x), 0), rtol=1e-6)   # ORT's Exp: 1 ulp


def test_a_merging_reshape_that_is_a_graph_output_is_not_sunk():
    """Session s24 (a surviving mutant of `sink`): a merge whose output the graph returns, also read by a Relu, stays
    where it is: sinking it would clear the graph output's producer."""
    model = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,3,4] x) => (float[1,4,12] merged, float[1,4,12] y) <int64[3] flat = {1, 4, 12}> {
  merged = Reshape(x, flat)
  y = Relu(merged)
}
""")
    out, result = apply_pass(model, ReshapeThroughElementwise())
    assert op_histogram(out) == {"Relu": 1, "Reshape": 1} and not result.changed
    x = np.random.default_rng(5).standard_normal((1, 4, 3, 4)).astype(np.float32)
    merged, y = run(out, {"x": x})
    np.testing.assert_array_equal(merged, x.reshape(1, 4, 12))
    np.testing.assert_array_equal(y, np.maximum(x.reshape(1, 4, 12), 0))


def test_axis_groups_pair_the_smallest_runs_of_axes_of_equal_size():
    """The grouping every move rests on (s26's mutation run: only whole-pass tests reached it)."""
    from passes.reshape_through_elementwise import non_unit
    assert axis_groups((2, 3, 4), (6, 4)) == [([0, 1], [0]), ([2], [1])]
    assert axis_groups((2, 3, 4), (2, 12)) == [([0], [0]), ([1, 2], [1])]
    assert axis_groups((2, 6), (2, 3, 2)) == [([0], [0]), ([1], [1, 2])]
    assert axis_groups((2, 1, 3), (2, 1, 3)) == [([0], [0]), ([1], [1]), ([2], [2])]
    assert axis_groups((2, 3, 1), (6,)) == [([0, 1, 2], [0])]          # a trailing unit axis joins the group before
    assert axis_groups((2, 3), (2, 1, 3)) == [([0], [0, 1]), ([1], [2])]
    assert axis_groups((4, 1, 1), (2, 2)) == [([0, 1, 2], [0, 1])]
    assert axis_groups((2, 3, 4), (5, 5)) is None and axis_groups((0, 3), (3, 0)) is None
    assert spatial_only((1, 8, 4, 4), (1, 8, 16)) == [([0], [0]), ([1], [1]), ([2, 3], [2])]
    assert spatial_only((1, 8, 16), (1, 8, 4, 4)) == [([0], [0]), ([1], [1]), ([2], [2, 3])]
    assert spatial_only((1, 8, 4, 4), (1, 2, 4, 16)) is None and spatial_only((2, 3, 4), (5, 5, 1)) is None
    assert spatial_only((1, 8), (1, 8)) is None
    assert (non_unit((3, 5, 1, 7, 1)), non_unit((2, 8, 4, 4)), non_unit((2, 8))) == (1, 2, 0)


def test_only_a_1x1_stride_1_unpadded_conv_of_constant_weights_is_pointwise():
    from passes.reshape_through_elementwise import _pointwise_conv
    x = gs.Variable("x", np.float32, (1, 4, 5, 5))

    def conv(weight_shape, constant=True, op="Conv", **attrs):
        weight = (gs.Constant("w", np.ones(weight_shape, np.float32)) if constant
                  else gs.Variable("w", np.float32, weight_shape))
        return gs.Node(op, inputs=[x, weight], outputs=[gs.Variable("y")], attrs=attrs)

    assert _pointwise_conv(conv((4, 4, 1, 1))) is True
    assert _pointwise_conv(conv((4, 4, 1, 1), pads=[0, 0, 0, 0], strides=[1, 1], auto_pad="VALID")) is True
    assert [_pointwise_conv(node) for node in (
        conv((4, 4, 1, 1), constant=False), conv((4, 4, 3, 1)), conv((4, 4, 1, 3)), conv((4, 4, 1, 1), strides=[2, 1]),
        conv((4, 4, 1, 1), pads=[0, 1, 0, 0]), conv((1, 1, 1, 1), op="Mul"))] == [False] * 6

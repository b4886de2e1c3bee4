"""expand-to-broadcast: Mul(x, Reshape(Expand(s))) reads s broadcast through Reshapes; exact."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from passes.expand_to_broadcast import ExpandToBroadcast
from scan_testing import apply_pass, op_histogram, run

# VMamba's B: one value per (direction, step), expanded to 3 channels per direction, merged to (1, 6, 5, 1).
SCAN_B = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2,1,1,5] s, float[1,6,5,1] x) => (float[1,6,5,1] y) {
  wanted = Constant<value = int64[5] {1, 2, 3, 1, 5}>()
  merged = Constant<value = int64[4] {1, 6, 5, 1}>()
  e = Expand(s, wanted)
  r = Reshape(e, merged)
  y = OP(LEFT, RIGHT)
}
"""


def model(op: str, expanded_first: bool, x_shape: str = "1,6,5,1") -> onnx.ModelProto:
    left, right = ("r", "x") if expanded_first else ("x", "r")
    text = SCAN_B.replace("OP", op).replace("LEFT", left).replace("RIGHT", right)
    return onnx.parser.parse_model(text.replace("float[1,6,5,1] x", f"float[{x_shape}] x"))


def feeds(x_shape=(1, 6, 5, 1)):
    rng = np.random.default_rng(0)
    return {"s": rng.standard_normal((1, 2, 1, 1, 5)).astype(np.float32) + 3.0,
            "x": rng.standard_normal(x_shape).astype(np.float32)}


@pytest.mark.parametrize("op", ["Mul", "Add", "Sub", "Div"])
@pytest.mark.parametrize("expanded_first", [True, False])
def test_the_expand_is_gone_and_values_are_equal(op, expanded_first):
    before = model(op, expanded_first)
    out, result = apply_pass(before, ExpandToBroadcast())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {op: 1, "Reshape": 2}
    # Operand order kept (Sub, Div): the small tensor sits where the expanded one was.
    node = next(n for n in out.graph.node if n.op_type == op)
    assert (node.input[0] == "s") == expanded_first
    np.testing.assert_array_equal(run(out, feeds())[0], run(before, feeds())[0])


def test_an_operand_that_broadcasts_itself_is_left_alone():
    # x of (1, 6, 5, 1) broadcast from (1, 1, 5, 1): viewing it as the expanded shape would be wrong.
    before = model("Mul", True, x_shape="1,1,5,1")
    out, result = apply_pass(before, ExpandToBroadcast())
    assert result.stats == {"rewritten": 0}
    assert op_histogram(out) == {"Constant": 2, "Expand": 1, "Mul": 1, "Reshape": 1}
    assert result.notes == ["Mul '' left alone: the other operand does not have the expanded tensor's shape"]


def test_a_chain_of_reinterpretations_is_seen_through():
    # The cpu pipeline's graph before simplify: Expand, Reshape, then a Squeeze left by unit-axes-to-reshape.
    text = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2,1,1,5] s, float[1,6,5] x) => (float[1,6,5] y) {
  wanted = Constant<value = int64[5] {1, 2, 3, 1, 5}>()
  merged = Constant<value = int64[4] {1, 6, 5, 1}>()
  last = Constant<value = int64[1] {3}>()
  e = Expand(s, wanted)
  r = Reshape(e, merged)
  q = Squeeze(r, last)
  y = Mul(x, q)
}
"""
    before = onnx.parser.parse_model(text)
    out, result = apply_pass(before, ExpandToBroadcast())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Mul": 1, "Reshape": 2}
    values = feeds(x_shape=(1, 6, 5))
    np.testing.assert_array_equal(run(out, values)[0], run(before, values)[0])


def test_two_unknown_sizes_are_left_alone():
    # A Reshape takes one -1 only: with a symbolic batch and a symbolic length the view cannot be written.
    text = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[n,2,1,1,m] s, float[n,6,m,1] x) => (float[n,6,m,1] y) {
  wanted = Constant<value = int64[5] {1, 2, 3, 1, 1}>()
  e = Expand(s, wanted)
  merged = Shape(x)
  r = Reshape(e, merged)
  y = Mul(x, r)
}
"""
    before = onnx.parser.parse_model(text)
    out, result = apply_pass(before, ExpandToBroadcast())
    assert result.stats == {"rewritten": 0}
    assert op_histogram(out)["Expand"] == 1
    values = {"s": np.ones((2, 2, 1, 1, 5), np.float32), "x": np.full((2, 6, 5, 1), 2.0, np.float32)}
    np.testing.assert_array_equal(run(out, values)[0], run(before, values)[0])


def test_an_empty_axis_is_left_alone():
    # A 0 in a Reshape's target copies the input's size: the view of an empty tensor is not written.
    before = onnx.parser.parse_model(SCAN_B.replace("OP", "Mul").replace("LEFT", "x").replace("RIGHT", "r")
                                     .replace("1,2,1,1,5", "1,2,1,1,0").replace("1,6,5,1", "1,6,0,1")
                                     .replace("{1, 2, 3, 1, 5}", "{1, 2, 3, 1, 0}").replace("{1, 6, 5, 1}", "{1, 6, 0, 1}")
                                     .replace("Reshape(e, merged)", "Reshape<allowzero = 1>(e, merged)"))
    out, result = apply_pass(before, ExpandToBroadcast())
    assert result.stats == {"rewritten": 0}
    values = {"s": np.ones((1, 2, 1, 1, 0), np.float32), "x": np.ones((1, 6, 0, 1), np.float32)}
    assert run(out, values)[0].shape == (1, 6, 0, 1)


def test_the_other_operand_made_by_a_reshape_of_another_op_and_other_elementwise_ops_beside():
    """The other operand is itself a Reshape (of a Relu, no Expand under it): only the one operand with an
    Expand under its Reshapes counts. An Add of two plain tensors beside it is no candidate."""
    text = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2,1,1,5] s, float[30] x) => (float[1,6,5,1] y, float[30] z) {
  wanted = Constant<value = int64[5] {1, 2, 3, 1, 5}>()
  merged = Constant<value = int64[4] {1, 6, 5, 1}>()
  e = Expand(s, wanted)
  r = Reshape(e, merged)
  positive = Relu(x)
  viewed = Reshape(positive, merged)
  y = Mul(viewed, r)
  z = Add(x, x)
}
"""
    before = onnx.parser.parse_model(text)
    out, result = apply_pass(before, ExpandToBroadcast())
    assert (result.stats, result.notes) == ({"rewritten": 1}, [])
    assert op_histogram(out) == {"Add": 1, "Constant": 1, "Mul": 1, "Relu": 1, "Reshape": 3}
    values = {"s": feeds()["s"], "x": np.random.default_rng(1).standard_normal(30).astype(np.float32)}
    for got, expected in zip(run(out, values), run(before, values)):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("other", ["initializer", "symbolic batch"])
def test_a_constant_other_operand_or_one_symbolic_batch_is_rewritten(other):
    """The other operand an initializer (its shape is its own), or a graph input of a symbolic batch,
    which becomes the Reshapes' -1."""
    text = SCAN_B.replace("OP(LEFT, RIGHT)", "Div(r, x)")
    if other == "initializer":
        text = text.replace(", float[1,6,5,1] x)", ")").replace("=> (float[1,6,5,1] y) {", "=> (float[1,6,5,1] y) <float[1,6,5,1] x = {W}> {")
        text = text.replace("{W}", "{" + ", ".join(str(v / 7 + 0.5) for v in range(30)) + "}")
    else:
        text = text.replace("1,2,1,1,5] s", "n,2,1,1,5] s").replace("float[1,6,5,1]", "float[n,6,5,1]").replace(
            "{1, 6, 5, 1}", "{-1, 6, 5, 1}").replace("{1, 2, 3, 1, 5}", "{1, 1, 3, 1, 1}")
    before = onnx.parser.parse_model(text)
    out, result = apply_pass(before, ExpandToBroadcast())
    assert (result.stats, result.notes) == ({"rewritten": 1}, [])
    assert op_histogram(out) == {"Div": 1, "Reshape": 2}
    targets = sorted(tuple(int(v) for v in onnx.numpy_helper.to_array(init)) for init in out.graph.initializer
                     if init.data_type == onnx.TensorProto.INT64)
    batches = (1,) if other == "initializer" else (1, 3)
    assert targets == ([(1, 2, 3, 1, 5), (1, 6, 5, 1)] if other == "initializer" else [(-1, 2, 3, 1, 5), (-1, 6, 5, 1)])
    for batch in batches:
        rng = np.random.default_rng(batch)
        values = {"s": rng.standard_normal((batch, 2, 1, 1, 5)).astype(np.float32)}
        if other != "initializer":
            values["x"] = rng.standard_normal((batch, 6, 5, 1)).astype(np.float32)
        np.testing.assert_array_equal(run(out, values)[0], run(before, values)[0])


def test_a_concat_of_a_reshaped_expand_is_no_candidate():
    """Concat is not elementwise: it is not looked at (no note)."""
    text = SCAN_B.replace("y = OP(LEFT, RIGHT)", "y = Concat<axis = 1>(x, r)").replace("=> (float[1,6,5,1] y)",
                                                                                    "=> (float[1,12,5,1] y)")
    out, result = apply_pass(onnx.parser.parse_model(text), ExpandToBroadcast())
    assert (result.stats, result.notes) == ({"rewritten": 0}, [])
    assert op_histogram(out)["Expand"] == 1


def test_an_expanded_shape_of_two_unknown_sizes_is_left_alone_even_when_the_output_has_one():
    """The Reshape merges the two symbolic sizes into its -1: the output could be written back, but the
    view of the other operand as the expanded shape could not (two -1)."""
    text = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[n,2,1,1,m] s, float[k,6,1] x) => (float[k,6,1] y) {
  wanted = Constant<value = int64[5] {1, 1, 3, 1, 1}>()
  merged = Constant<value = int64[3] {-1, 6, 1}>()
  e = Expand(s, wanted)
  r = Reshape(e, merged)
  y = Mul(x, r)
}
"""
    before = onnx.parser.parse_model(text)
    out, result = apply_pass(before, ExpandToBroadcast())
    assert (result.stats, result.notes) == ({"rewritten": 0}, [])
    assert op_histogram(out)["Expand"] == 1

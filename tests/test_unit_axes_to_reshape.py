"""unit-axes-to-reshape: Transposes/reductions that move no data become Reshapes; others stay."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from passes.unit_axes_to_reshape import UnitAxesToReshape
from scan_testing import apply_pass, op_histogram, run


def single_op_model(op: str, in_shape, out_shape, opset: int = 17, **attrs):
    inputs = ["x"]
    initializers = []
    if "axes" in attrs and opset >= 13:
        initializers.append(helper.make_tensor("axes", TensorProto.INT64, [len(attrs["axes"])], attrs.pop("axes")))
        inputs.append("axes")
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"], name="op", **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("op, in_shape, out_shape, attrs, rewritten", [
    ("Transpose", [2, 3, 1, 5], [2, 3, 5, 1], {"perm": [0, 1, 3, 2]}, True),      # N = 1 readout layout
    ("Transpose", ["batch", 3, 1, 5], ["batch", 3, 5, 1], {"perm": [0, 1, 3, 2]}, True),  # dynamic batch
    ("Transpose", [2, 3, 4, 5], [2, 3, 5, 4], {"perm": [0, 1, 3, 2]}, False),     # real data movement
    ("ReduceSum", [2, 3, 5, 1], [2, 3, 5], {"axes": [3], "keepdims": 0}, True),
    ("ReduceSum", [2, 3, 5, 4], [2, 3, 5], {"axes": [3], "keepdims": 0}, False),
])
def test_only_data_free_ops_become_reshapes(op, in_shape, out_shape, attrs, rewritten):
    model = single_op_model(op, in_shape, out_shape, **dict(attrs))
    out, result = apply_pass(model, UnitAxesToReshape())
    assert result.stats == {"rewritten": int(rewritten)}
    assert op_histogram(out) == ({"Reshape": 1} if rewritten else {op: 1})
    shape = [2 if d == "batch" else d for d in in_shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(model, {"x": x})[0])



def test_sizes_from_shape_arithmetic_are_known():
    # A dynamic-batch export expands B and C by a shape computed with Shape and Where
    # (torch's expand(-1, ...)); ONNX's inference loses the sizes there, ONNX Runtime's symbolic
    # inference keeps them, so the readout's unit-axis Transpose still becomes a Reshape.
    def ints(name, values):
        return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "one"], ["head"]),
             helper.make_node("Concat", ["head", "tail"], ["wanted"], axis=0),
             helper.make_node("Equal", ["wanted", "minus"], ["keep"]),
             helper.make_node("Where", ["keep", "ones", "wanted"], ["target"]),
             helper.make_node("Expand", ["x", "target"], ["e"]),                # [N, 3, 1, 5]
             helper.make_node("Transpose", ["e"], ["y"], perm=[0, 1, 3, 2], name="readout")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 1, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[ints("zero", [0]), ints("one", [1]), ints("tail", [3, 1, 5]),
                                           ints("minus", [-1, -1, -1, -1]), ints("ones", [1, 1, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, result = apply_pass(model, UnitAxesToReshape())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Concat": 1, "Equal": 1, "Expand": 1, "Reshape": 1, "Shape": 1, "Slice": 1, "Where": 1}
    x = np.random.default_rng(0).standard_normal([2, 1, 1, 5]).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(model, {"x": x})[0])


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_a_batch_broadcast_against_a_constant_stays_dynamic(rows):
    """ORT's symbolic inference with auto_merge takes a dynamic N broadcast against a constant of
    4 rows to be 4 everywhere, though N = 1 broadcasts too: the Transpose of x became a Reshape
    to [1, 4, 3], which fails at batch 1 (verification refused a valid model). Against 1 row the
    sum keeps N rows, so its Transpose must not become a Reshape to [1, 1, 3] either."""
    nodes = [helper.make_node("Add", ["x", "rows"], ["s"]),
             helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2], name="swap"),
             helper.make_node("Transpose", ["s"], ["t"], perm=[1, 0, 2], name="swap_sum")]
    constant = helper.make_tensor("rows", TensorProto.FLOAT, [rows, 1, 3], np.arange(3 * rows, dtype=np.float32))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "N", 3]),
                               helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, "M", 3])],
                              initializer=[constant])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, result = apply_pass(model, UnitAxesToReshape())
    for batch in (1, rows if rows > 1 else 4):
        x = np.random.default_rng(batch).standard_normal([batch, 1, 3]).astype(np.float32)
        for got, want in zip(run(out, {"x": x}), run(model, {"x": x}), strict=True):
            np.testing.assert_array_equal(got, want)


def test_empty_tensors_stay():
    """A size-0 dim in the Reshape target means "copy the input's dim" (allowzero 0): the
    Transpose of an empty [0, 1, 5] became a Reshape that ONNX Runtime refused."""
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2], name="swap"),
             helper.make_node("ReduceSum", ["x", "axis"], ["r"], keepdims=0, name="sum")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [0, 1, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 0, 5]),
                               helper.make_tensor_value_info("r", TensorProto.FLOAT, [0, 5])],
                              initializer=[helper.make_tensor("axis", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, result = apply_pass(model, UnitAxesToReshape())
    assert result.stats == {"rewritten": 0}
    assert op_histogram(out) == {"ReduceSum": 1, "Transpose": 1}
    assert [o.shape for o in run(out, {"x": np.zeros([0, 1, 5], np.float32)})] == [(1, 0, 5), (0, 5)]


@pytest.mark.parametrize("symbol_first", [True, False])
def test_a_batch_expanded_against_one_keeps_its_symbol(symbol_first):
    """Expand broadcasts through ORT's _broadcast_shapes: N against 1 is N (either operand), not 1,
    or the Transpose after it would become a Reshape to [1, 1, 3] that fails at batch 4."""
    from passes.static_shapes import symbolic_partial_shapes

    if symbol_first:    # x [N, 1, 3] expanded to a constant [1, 1, 3]
        nodes = [helper.make_node("Expand", ["x", "target"], ["s"])]
        initializer = [helper.make_tensor("target", TensorProto.INT64, [3], [1, 1, 3])]
    else:               # a constant [1, 1, 3] expanded to x's own shape
        nodes = [helper.make_node("Shape", ["x"], ["x_shape"]), helper.make_node("Expand", ["row", "x_shape"], ["s"])]
        initializer = [helper.make_tensor("row", TensorProto.FLOAT, [1, 1, 3], [1.0, 2.0, 3.0])]
    nodes.append(helper.make_node("Transpose", ["s"], ["t"], perm=[1, 0, 2], name="swap"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 3])],
                              [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, "M", 3])],
                              initializer=initializer)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    shapes = symbolic_partial_shapes(gs.import_onnx(model))
    assert shapes["s"] == (None, 1, 3) and shapes["t"] == (1, None, 3)
    out, _ = apply_pass(model, UnitAxesToReshape())
    for batch in (1, 4):
        x = np.random.default_rng(batch).standard_normal([batch, 1, 3]).astype(np.float32)
        np.testing.assert_array_equal(run(out, {"x": x})[0], run(model, {"x": x})[0])

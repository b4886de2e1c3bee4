"""unit-axes-to-reshape: Transposes/reductions that move no data become Reshapes; others stay."""
from __future__ import annotations

import numpy as np
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

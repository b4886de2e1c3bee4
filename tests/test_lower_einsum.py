"""lower-einsum: the scan's einsums become Mul/ReduceSum with exact op lists; contractions stay."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from passes.lower_einsum import LowerEinsum
from scan_testing import apply_pass, op_histogram, run


def einsum_model(equation: str, shapes: list[list[int]], opset: int = 17) -> onnx.ModelProto:
    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], name="einsum", equation=equation)
    graph = helper.make_graph(
        [node], "einsum",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("equation, shapes, ops", [
    # the scan's readout, per step and over all steps
    ("bdn,bdn->bd", [[2, 3, 4], [2, 3, 4]], {"Mul": 1, "ReduceSum": 1}),
    ("bdln,bdnl->bdl", [[2, 3, 5, 4], [2, 3, 4, 5]], {"Mul": 1, "ReduceSum": 1, "Transpose": 1}),
    # deltaA and deltaB_u of the selective scan
    ("bdl,dn->bdln", [[2, 3, 5], [3, 4]], {"Mul": 1, "Unsqueeze": 2}),
    ("bdl,bdnl,bdl->bdln", [[2, 3, 5], [2, 3, 4, 5], [2, 3, 5]], {"Mul": 2, "Transpose": 1, "Unsqueeze": 2}),
])
@pytest.mark.parametrize("opset", [12, 17])
def test_products_are_lowered_exactly(equation, shapes, ops, opset):
    model = einsum_model(equation, shapes, opset)
    out, result = apply_pass(model, LowerEinsum())
    assert result.stats == {"lowered": 1, "kept": 0}
    assert op_histogram(out) == ops
    rng = np.random.default_rng(0)
    feeds = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    expected = np.einsum(equation, *[feeds[f"x{i}"].astype(np.float64) for i in range(len(shapes))])
    np.testing.assert_allclose(run(out, feeds)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("equation, shapes", [
    ("ij,jk->ik", [[3, 4], [4, 5]]),      # a matrix product: lowering would build an i*j*k tensor
    ("ii->i", [[3, 3]]),                  # a diagonal
    ("...n,...n->...", [[2, 3], [2, 3]]),  # ellipsis
])
def test_contractions_and_unsupported_forms_stay(equation, shapes):
    model = einsum_model(equation, shapes)
    out, result = apply_pass(model, LowerEinsum())
    assert not result.changed and result.stats == {"lowered": 0, "kept": 1}
    assert op_histogram(out) == {"Einsum": 1}

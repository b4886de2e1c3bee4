"""CumSum over a short axis -> MatMul with a triangular matrix of ones.

A chunked scan's in-chunk CumSums run over 24 or fewer positions. ONNX Runtime's CPU CumSum
kernel is ~8x a Mul (4.1 ms vs 0.49 ms over 1.2M floats on the 2-core machine), and on BM1684X
tpu-mlir runs CumSum as a slow global op (69% of micro's estimated TPU time, docs/TPU.md),
while a MatMul by a (Q, Q) constant is cheap on both. x @ U with U[i, j] = 1 for i <= j gives
y_j = sum_{i <= j} x_i, the inclusive cumulative sum.

Only CumSums whose summed axis is last, or followed only by size-1 axes (d_state N = 1 in
VMamba), are rewritten, so no Transpose is needed; only plain ones (no exclusive/reverse).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Option
from passes.cumsum_checks import inclusive_cumsum
from passes.graph_builder import MAX_INDEX_TABLE, GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite


@register_pass
class CumSumToMatMul(NodeRewrite, op="CumSum", shapes="partial", routine_keeps=True):
    name = "cumsum-to-matmul"
    description = "rewrite CumSum over a short last (or trailing-unit) axis as MatMul with a triangular ones matrix"

    max_length = Option(int, 32, "longest summed axis turned into a MatMul (its ones matrix is length^2)", min=2)

    def check(self, node: gs.Node, shapes) -> Kept | tuple:
        known = inclusive_cumsum(node, shapes)
        if isinstance(known, Kept):
            return known
        shape, axis = known
        axis %= len(shape)
        length = shape[axis]
        if length is None or length > self.max_length:
            return Kept(f"CumSum '{node.name}' kept: summed axis length {length} is not a known length <= {self.max_length}")
        if length * length > MAX_INDEX_TABLE:   # max_length may be set far above the default
            return Kept(f"CumSum '{node.name}' kept: a ones matrix of {length} x {length}, more than the "
                        f"{MAX_INDEX_TABLE} values a constant made from declared dims may hold")
        if any(d != 1 for d in shape[axis + 1:]):
            return Kept(f"CumSum '{node.name}' kept: axes after the summed one are not all size 1 (would need a Transpose)")
        return shape, axis, length

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple, output: gs.Variable) -> None:
        shape, axis, length = plan
        x = node.inputs[0]
        ones_upper = b.const(np.triu(np.ones((length, length), dtype=b.dtype)))
        if axis == len(shape) - 1:
            b.matmul(x, ones_upper, output=output)
        else:  # (..., L, 1, ..., 1) -> (..., L) -> MatMul -> back: the squeezes move no data
            unit_axes = list(range(axis + 1, len(shape)))
            b.unsqueeze(b.matmul(b.squeeze(x, unit_axes), ones_upper), unit_axes, output=output)

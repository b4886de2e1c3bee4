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

from passes.base import Option, Pass, PassContext, PassResult
from passes.registry import register_pass
from passes.graph_builder import GraphBuilder
from passes.static_shapes import partial_shapes
from patterns.graph_query import constant_int


@register_pass
class CumSumToMatMul(Pass):
    name = "cumsum-to-matmul"
    description = "rewrite CumSum over a short last (or trailing-unit) axis as MatMul with a triangular ones matrix"

    max_length = Option(int, 32, "longest summed axis turned into a MatMul (its ones matrix is length^2)", min=2)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        cumsums = [n for n in graph.nodes if n.op == "CumSum"]
        if not cumsums:
            return PassResult(changed=False, stats={"rewritten": 0})
        shapes = partial_shapes(graph)
        rewritten, notes = 0, []
        for node in cumsums:
            shape = shapes.get(node.inputs[0].name)
            axis = constant_int(node.inputs[1])
            why = None
            if node.attrs.get("exclusive", 0) or node.attrs.get("reverse", 0):
                why = "exclusive/reverse CumSum"
            elif shape is None or axis is None:
                why = "rank or axis unknown"
            else:
                axis %= len(shape)
                length = shape[axis]
                if length is None or length > self.max_length:
                    why = f"summed axis length {length} is not a known length <= {self.max_length}"
                elif any(d != 1 for d in shape[axis + 1:]):
                    why = "axes after the summed one are not all size 1 (would need a Transpose)"
            if why:
                notes.append(f"CumSum '{node.name}' kept: {why}")
                continue
            dtype = getattr(node.inputs[0], "dtype", None) or np.float32
            b = GraphBuilder(graph, ctx.opset, prefix=f"cumsum_to_matmul/{node.name}", dtype=dtype)
            x, output = node.inputs[0], node.outputs[0]
            node.outputs.clear()
            ones_upper = b.const(np.triu(np.ones((length, length), dtype=dtype)))
            trailing = len(shape) - axis - 1
            if trailing == 0:
                b.matmul(x, ones_upper, output=output)
            else:  # (..., L, 1, ..., 1) -> (..., L) -> MatMul -> back: the squeezes move no data
                unit_axes = list(range(axis + 1, len(shape)))
                b.unsqueeze(b.matmul(b.squeeze(x, unit_axes), ones_upper), unit_axes, output=output)
            rewritten += 1
        if rewritten:
            graph.cleanup().toposort()
        return PassResult(changed=rewritten > 0, stats={"rewritten": rewritten, "kept": len(notes)},
                          notes=notes if ctx.explain else [])

"""Rewrite exclusive and reverse CumSum into plain CumSum (tpu-mlir ignores both attributes).

tpu-mlir 1.30.2 accepts ``exclusive=1`` and ``reverse=1`` and silently computes a plain
inclusive forward CumSum (wrong results, docs/TPU.md). With a constant axis and a static
length along it, both are cheap in plain ops::

    reverse:    Gather(CumSum(Gather(x, [L-1..0])), [L-1..0])     (never a step -1 Slice)
    exclusive:  CumSum(Concat(zeros[1], x[0:L-1]))                 (exact: same additions)

Anything else (axis not constant, length unknown) is left alone with a note.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, PassResult
from passes.registry import register_pass
from passes.graph_builder import GraphBuilder
from passes.static_shapes import static_shapes
from patterns.graph_query import cumsum_axis, describe


def reversed_along(b: GraphBuilder, x: gs.Tensor, axis: int, length: int, output=None) -> gs.Tensor:
    """x flipped along ``axis`` with a Gather of reversed indices."""
    return b.node("Gather", [x, b.ints(np.arange(length - 1, -1, -1))], {"axis": axis}, output=output)


@register_pass
class CumSumPlain(Pass):
    name = "cumsum-plain"
    description = "rewrite exclusive/reverse CumSum as plain CumSum (Gather with reversed indices, shifted Concat)"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        candidates = [n for n in graph.nodes
                      if n.op == "CumSum" and (n.attrs.get("exclusive", 0) or n.attrs.get("reverse", 0))]
        if not candidates:
            return PassResult(False, {"rewritten": 0})
        shapes = static_shapes(graph)
        notes, rewritten = [], 0
        for index, node in enumerate(candidates):
            shape = shapes.get(node.inputs[0].name)
            if shape is None:
                notes.append(f"{describe(node)} left alone: input shape not static; tpu-mlir will ignore "
                             "its exclusive/reverse attributes")
                continue
            axis = cumsum_axis(node, len(shape))
            if axis is None:
                notes.append(f"{describe(node)} left alone: axis is not a constant")
                continue
            length = shape[axis]
            dtype = getattr(node.inputs[0], "dtype", None) or np.float32
            b = GraphBuilder(graph, ctx.opset, prefix=f"cumsum_plain/{node.name or index}", dtype=dtype)
            x, output = node.inputs[0], node.outputs[0]
            reverse, exclusive = bool(node.attrs.get("reverse", 0)), bool(node.attrs.get("exclusive", 0))
            node.inputs.clear()
            node.outputs.clear()
            if reverse:
                x = reversed_along(b, x, axis, length)
            if exclusive:
                zeros_shape = list(shape)
                zeros_shape[axis] = 1
                zeros = b.const(np.zeros(zeros_shape, dtype=dtype))
                x = b.concat([zeros, b.slice(x, 0, length - 1, axis)], axis) if length > 1 else zeros
            summed = b.node("CumSum", [x, b.ints(axis)], output=None if reverse else output)
            if reverse:
                reversed_along(b, summed, axis, length, output=output)
            rewritten += 1
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return PassResult(rewritten > 0, {"rewritten": rewritten}, notes)

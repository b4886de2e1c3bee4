"""Rewrite exclusive and reverse CumSum into plain CumSum (tpu-mlir ignores both attributes).

tpu-mlir 1.30.2 accepts ``exclusive=1`` and ``reverse=1`` and silently computes a plain
inclusive forward CumSum (wrong results, docs/TPU.md). With a constant axis and a static
length along it, both are cheap in plain ops::

    reverse:    Gather(CumSum(Gather(x, [L-1..0])), [L-1..0])     (never a step -1 Slice)
    exclusive:  CumSum(Concat(zeros[1], x[0:L-1]))                 (exact: same additions)

Anything else (axis not constant, length unknown) is left alone with a note.
"""
from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import MAX_INDEX_TABLE, GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import cumsum_shape_and_axis


def reversed_along(b: GraphBuilder, x: gs.Tensor, axis: int, length: int, output=None) -> gs.Tensor:
    """x flipped along ``axis`` with a Gather of reversed indices."""
    return b.node("Gather", [x, b.ints(np.arange(length - 1, -1, -1))], {"axis": axis}, output=output)


@register_pass
class CumSumPlain(NodeRewrite, shapes="static"):
    name = "cumsum-plain"
    description = "rewrite exclusive/reverse CumSum as plain CumSum (Gather with reversed indices, shifted Concat)"

    def matches(self, node: gs.Node) -> bool:
        return node.op == "CumSum" and bool(node.attrs.get("exclusive", 0) or node.attrs.get("reverse", 0))

    def check(self, node: gs.Node, shapes) -> Kept | tuple:
        found = cumsum_shape_and_axis(node, shapes)
        if not isinstance(found, str):
            found = self._too_large(node, *found) or found
        return self.left_alone(node, f"{found}; tpu-mlir will ignore its exclusive/reverse attributes") \
            if isinstance(found, str) else found

    @staticmethod
    def _too_large(node: gs.Node, shape: tuple, axis: int) -> str | None:
        """Why the constants this rewrite builds from declared dims (no data needed to declare them)
        would be too large, or None."""
        if node.attrs.get("reverse", 0) and shape[axis] > MAX_INDEX_TABLE:
            return (f"reversed axis of {shape[axis]} elements needs more than the {MAX_INDEX_TABLE} indices "
                    "a Gather table may hold")
        zeros = math.prod(shape[:axis] + shape[axis + 1:])
        if node.attrs.get("exclusive", 0) and zeros > MAX_INDEX_TABLE:
            return (f"its zeros to shift in take {zeros} values, more than the {MAX_INDEX_TABLE} a constant made "
                    "from declared dims may hold")
        return None

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple, output: gs.Variable) -> None:
        shape, axis = plan
        x, length = node.inputs[0], shape[axis]
        reverse, exclusive = bool(node.attrs.get("reverse", 0)), bool(node.attrs.get("exclusive", 0))
        if reverse:
            x = reversed_along(b, x, axis, length)
        if exclusive:
            zeros_shape = list(shape)
            zeros_shape[axis] = 1
            zeros = b.const(np.zeros(zeros_shape, dtype=b.dtype))
            x = b.concat([zeros, b.slice(x, 0, length - 1, axis)], axis) if length > 1 else zeros
        summed = b.node("CumSum", [x, b.ints(axis)], output=None if reverse else output)
        if reverse:
            reversed_along(b, summed, axis, length, output=output)

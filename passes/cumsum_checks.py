"""What every CumSum rewrite needs to know first: a plain inclusive sum over a known axis of a known shape."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.rewrite import Kept
from patterns.graph_query import constant_int


def inclusive_cumsum(node: gs.Node, shapes) -> Kept | tuple[tuple, int]:
    """(input shape, axis as written) of an inclusive, forward CumSum whose shape and axis are known; else Kept."""
    shape = shapes.get(node.inputs[0].name)
    axis = constant_int(node.inputs[1])
    if node.attrs.get("exclusive", 0) or node.attrs.get("reverse", 0):
        return Kept(f"CumSum '{node.name}' kept: exclusive/reverse CumSum")
    if shape is None or axis is None:
        return Kept(f"CumSum '{node.name}' kept: shape or axis unknown")
    return shape, axis

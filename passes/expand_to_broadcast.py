"""An elementwise op reading a Reshape of an Expand: broadcast the un-expanded tensor instead.

(A Reshape here: any chain of Reshape, Squeeze, Unsqueeze, Flatten, which only reinterpret memory.)

VMamba's scan reads B and C, one value per (direction, step), expanded to every channel
(1, 4, 1, 1, L) -> (1, 4, 192, 1, L) and reshaped to the scan's (1, 768, L, 1) to be multiplied
by dt and by the states. ONNX Runtime writes every expanded copy out (a full pass over the
scan's size each, two per scan). A Reshape only reinterprets row-major memory, so

    op(x, Reshape(Expand(s, _), R))  ==  Reshape(op(Reshape(x, E), s), R)

for any elementwise op and any x of the Reshape's shape R (E: the Expand's output shape, to
which s broadcasts by definition). The Reshapes are free; the Expand is gone.
Needs static shapes (one unknown dimension, a dynamic batch, becomes -1).
"""
from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import producer

ELEMENTWISE = {"Mul", "Add", "Sub", "Div"}


# Ops that only reinterpret row-major memory (a new shape, the same order of values).
REINTERPRETATIONS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten"}


def _expand_under(tensor: gs.Tensor) -> Optional[gs.Node]:
    """The Expand that `tensor` is, through one or more reinterpretations (none: None)."""
    node, hops = producer(tensor), 0
    while node is not None and node.op in REINTERPRETATIONS:
        node, hops = producer(node.inputs[0]), hops + 1
    return node if hops and node is not None and node.op == "Expand" else None


def _expanded_operand(node: gs.Node) -> Optional[int]:
    """The index of the input that is a reinterpreted Expand, if exactly one is."""
    found = [index for index, tensor in enumerate(node.inputs) if _expand_under(tensor) is not None]
    return found[0] if len(found) == 1 else None


def _target(shape) -> Optional[list[int]]:
    if shape is None or sum(d is None for d in shape) > 1 or 0 in shape:
        return None
    return [-1 if d is None else d for d in shape]


@register_pass
class ExpandToBroadcast(NodeRewrite, shapes="symbolic"):
    name = "expand-to-broadcast"
    description = "an elementwise op reading Reshape(Expand(s)) reads s, broadcast, through free Reshapes"

    def matches(self, node: gs.Node) -> bool:
        return node.op in ELEMENTWISE and len(node.inputs) == 2 and _expanded_operand(node) is not None

    def check(self, node: gs.Node, shapes) -> Kept | tuple[int, list[int], list[int]]:
        index = _expanded_operand(node)
        expand = _expand_under(node.inputs[index])
        other = node.inputs[1 - index]
        reshaped, expanded = shapes.get(node.inputs[index].name), shapes.get(expand.outputs[0].name)
        small, out = shapes.get(expand.inputs[0].name), shapes.get(node.outputs[0].name)
        other_shape = other.shape if isinstance(other, gs.Constant) else shapes.get(other.name)
        if None in (reshaped, expanded, small, out, other_shape):
            return Kept()
        if tuple(other_shape) != tuple(reshaped) or tuple(out) != tuple(reshaped) or len(small) > len(expanded):
            return self.left_alone(node, "the other operand does not have the expanded tensor's shape")
        view, back = _target(expanded), _target(out)
        if view is None or back is None:
            return Kept()
        return index, view, back

    def replace(self, b: GraphBuilder, node: gs.Node, plan, output: gs.Variable) -> None:
        index, view, back = plan
        small = _expand_under(node.inputs[index]).inputs[0]
        other = b.reshape(node.inputs[1 - index], view)
        operands = [other, small] if index == 1 else [small, other]
        b.node("Reshape", [b.node(node.op, operands), b.ints(back)], output=output)

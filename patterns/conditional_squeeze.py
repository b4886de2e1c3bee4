"""Recognise the TorchScript exporter's guarded squeeze (opset < 13, symbolic shapes):

    If(Equal(Gather(Shape(x), k), 1))  then: Squeeze(x, axes=[k])  else: Identity(x)

i.e. `x.squeeze(k)`, which only drops axis k when its size is 1. Where x's axis k is known
to be 1 (a one-element Slice), the If is a plain Squeeze. Both patterns/ranks.py and
patterns/indexing.py need this, so it lives on its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import onnx_graphsurgeon as gs

from patterns.graph_query import constant_ints, node_axes, normalize_axis, producer


@dataclass(frozen=True)
class ConditionalSqueeze:
    data: gs.Tensor        # x
    axis: int              # k, as written (may be negative)
    nodes: tuple           # If, Equal, Gather, Shape: what computes the result besides x


def _single_node_branch(branch) -> Optional[gs.Node]:
    """The one node computing the branch's one output; Constant nodes (opset-13 axes) aside."""
    if not isinstance(branch, gs.Graph) or len(branch.outputs) != 1:
        return None
    computing = [node for node in branch.nodes if node.op != "Constant"]
    if len(computing) != 1:
        return None
    node = computing[0]
    return node if len(node.outputs) == 1 and node.outputs[0] is branch.outputs[0] else None


def _passes_through(branch, data: gs.Tensor) -> bool:
    """The branch returns `data` unchanged (an Identity, or no node at all)."""
    if not isinstance(branch, gs.Graph) or len(branch.outputs) != 1:
        return False
    if not branch.nodes:
        return branch.outputs[0] is data
    node = _single_node_branch(branch)
    return node is not None and node.op == "Identity" and node.inputs[0] is data


def _size_of_axis(tensor: gs.Tensor) -> Optional[tuple[gs.Tensor, int, tuple]]:
    """`tensor` is Gather(Shape(x), k) with a constant k: (x, k, nodes)."""
    gather = producer(tensor)
    if gather is None or gather.op != "Gather" or int(gather.attrs.get("axis", 0)) != 0:
        return None
    index = constant_ints(gather.inputs[1])
    shape = producer(gather.inputs[0])
    if index is None or len(index) != 1 or shape is None or shape.op != "Shape":
        return None
    if int(shape.attrs.get("start", 0)) != 0 or "end" in shape.attrs:
        return None
    return shape.inputs[0], index[0], (gather, shape)


def match_conditional_squeeze(node: Optional[gs.Node]) -> Optional[ConditionalSqueeze]:
    """The guarded squeeze computed by `node`, or None. Says nothing about whether axis k is 1."""
    if node is None or node.op != "If" or len(node.outputs) != 1 or len(node.inputs) != 1:
        return None
    squeeze = _single_node_branch(node.attrs.get("then_branch"))
    if squeeze is None or squeeze.op != "Squeeze" or not squeeze.inputs:
        return None
    data = squeeze.inputs[0]
    axes = node_axes(squeeze)
    if axes is None or len(axes) != 1 or not _passes_through(node.attrs.get("else_branch"), data):
        return None
    equal = producer(node.inputs[0])
    if equal is None or equal.op != "Equal" or len(equal.inputs) != 2:
        return None
    for size_side in (0, 1):
        size = _size_of_axis(equal.inputs[size_side])
        if size is None or constant_ints(equal.inputs[1 - size_side]) != [1]:
            continue
        measured, index, size_nodes = size
        if measured is not data:
            return None
        same_axis = index == axes[0] or (
            _rank_of(data) is not None and normalize_axis(index, _rank_of(data)) == normalize_axis(axes[0], _rank_of(data)))
        if not same_axis:
            return None
        return ConditionalSqueeze(data, axes[0], (node, equal, *size_nodes))
    return None


def squeezes_a_unit_axis(guarded: ConditionalSqueeze, data_rank: Optional[int]) -> bool:
    """Axis k of x is certainly 1: a static shape says so, or x is a one-element Slice along k."""
    axis = normalize_axis(guarded.axis, data_rank)
    shape = getattr(guarded.data, "shape", None)
    if axis is not None and shape is not None and axis < len(shape) and shape[axis] == 1:
        return True
    node = producer(guarded.data)
    if node is None or node.op != "Slice" or len(node.inputs) < 4:
        return False
    starts, ends, axes = (constant_ints(node.inputs[i]) for i in (1, 2, 3))
    steps = constant_ints(node.inputs[4]) if len(node.inputs) > 4 else [1]
    if None in (starts, ends, axes, steps) or len(starts) != 1 or steps != [1] or axis is None:
        return False
    return normalize_axis(axes[0], data_rank) == axis and 0 <= starts[0] and ends[0] == starts[0] + 1


def _rank_of(tensor: gs.Tensor) -> Optional[int]:
    shape = getattr(tensor, "shape", None)
    return len(shape) if shape is not None else None

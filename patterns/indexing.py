"""Recognise `t = source[..., i, ...]`: one step of a tensor taken along one axis.

Exporters write it three ways:
  Gather(source, i)                        scalar index, axis dropped
  Squeeze(Gather(source, [i]), axes=[ax])  one-element index
  Squeeze(Slice(source, [i], [i+1], [ax]), axes=[ax])
and, at opset < 13 with a symbolic batch, either squeeze guarded by an If on the axis' size
(patterns/conditional_squeeze.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import onnx_graphsurgeon as gs

from patterns.graph_query import (
    constant_ints,
    constant_value,
    node_axes,
    normalize_axis,
    producer,
)
from patterns.conditional_squeeze import match_conditional_squeeze
from patterns.ranks import RankMap


@dataclass(frozen=True)
class StepSlice:
    source: gs.Tensor
    axis: int          # non-negative axis of `source` that is indexed
    index: int         # non-negative position along that axis
    nodes: tuple = field(default=(), compare=False)  # the nodes that compute the slice

    @property
    def key(self) -> tuple:
        """Slices with equal keys come from the same tensor along the same axis."""
        return (id(self.source), self.axis)


def axis_length(source: gs.Tensor, axis: int) -> Optional[int]:
    shape = getattr(source, "shape", None)
    if shape is None or axis >= len(shape) or not isinstance(shape[axis], int):
        return None
    return shape[axis]


# Ops whose output has their one input's shape.
_SAME_SHAPE_UNARY = frozenset({"Abs", "Cast", "Exp", "Identity", "Log", "Neg", "Reciprocal", "Relu", "Sigmoid",
                               "Softplus", "Sqrt", "Tanh"})


def known_shape(source: gs.Tensor, limit: int = 8) -> Optional[list]:
    """``source``'s recorded shape, else that of the input of the unary op that made it (an exporter
    need not record the shape of Exp(A_log)); None if not found."""
    for _ in range(limit):
        shape = getattr(source, "shape", None)
        node = producer(source)
        if shape is not None or node is None or node.op not in _SAME_SHAPE_UNARY or len(node.inputs) != 1:
            return shape
        source = node.inputs[0]
    return None


def known_axis_length(source: gs.Tensor, axis: int) -> Optional[int]:
    """``axis_length`` of ``known_shape``."""
    shape = known_shape(source)
    if shape is None or axis >= len(shape) or not isinstance(shape[axis], int):
        return None
    return shape[axis]


def _normalize_index(index: int, source: gs.Tensor, axis: int) -> Optional[int]:
    if index >= 0:
        return index
    length = axis_length(source, axis)
    return index + length if length is not None else None


def _gather_scalar(node: gs.Node, ranks: RankMap) -> Optional[StepSlice]:
    index_value = constant_value(node.inputs[1])
    if index_value is None or index_value.ndim != 0:
        return None
    source = node.inputs[0]
    axis = normalize_axis(int(node.attrs.get("axis", 0)), ranks.rank(source))
    if axis is None:
        return None
    index = _normalize_index(int(index_value), source, axis)
    if index is None:
        return None
    return StepSlice(source, axis, index, (node,))


def _squeezed_slice(squeeze: gs.Node, ranks: RankMap) -> Optional[StepSlice]:
    squeeze_axes = node_axes(squeeze)
    if squeeze_axes is None or len(squeeze_axes) != 1:
        return None
    return _squeezed_step(squeeze.inputs[0], squeeze_axes[0], (squeeze,), ranks)


def _guarded_squeezed_slice(node: gs.Node, ranks: RankMap) -> Optional[StepSlice]:
    """If(size == 1) Squeeze else Identity around a one-element Gather/Slice: a plain squeeze."""
    guarded = match_conditional_squeeze(node)
    if guarded is None:
        return None
    return _squeezed_step(guarded.data, guarded.axis, guarded.nodes, ranks)


def _squeezed_step(data: gs.Tensor, squeeze_axis: int, outer_nodes: tuple, ranks: RankMap) -> Optional[StepSlice]:
    """`data` squeezed along `squeeze_axis`, where data is a one-element Gather or Slice."""
    inner = producer(data)
    if inner is None:
        return None
    if inner.op == "Gather":
        index_value = constant_ints(inner.inputs[1])
        if index_value is None or len(index_value) != 1:
            return None
        source = inner.inputs[0]
        axis = normalize_axis(int(inner.attrs.get("axis", 0)), ranks.rank(source))
        index = index_value[0]
    elif inner.op == "Slice":
        source = inner.inputs[0]
        starts, ends = constant_ints(inner.inputs[1]), constant_ints(inner.inputs[2])
        axes = constant_ints(inner.inputs[3]) if len(inner.inputs) > 3 else [0]
        steps = constant_ints(inner.inputs[4]) if len(inner.inputs) > 4 else [1]
        if None in (starts, ends, axes, steps) or len(starts) != 1 or steps != [1]:
            return None
        axis = normalize_axis(axes[0], ranks.rank(source))
        index = starts[0]
        if axis is None:
            return None
        index = _normalize_index(index, source, axis)
        # `ends` is i+1, or a huge/negative sentinel only when i is the last position.
        if index is None or not (ends[0] == index + 1 or (ends[0] < 0 and ends[0] + (axis_length(source, axis) or 0) == index + 1)):
            return None
    else:
        return None
    if axis is None or index is None:
        return None
    if normalize_axis(squeeze_axis, ranks.rank(source)) != axis:
        return None
    index = _normalize_index(index, source, axis)
    if index is None:
        return None
    return StepSlice(source, axis, index, (*outer_nodes, inner))


def one_position_split(split: gs.Node, ranks: RankMap) -> Optional[tuple[gs.Tensor, int]]:
    """(source, axis) when `split` is a Split of `source` into pieces of one position each along `axis`
    (torch's unbind, split(1), chunk(L), as TorchScript writes them): piece i is source[.., i:i+1, ..].
    Sizes all 1 (an input, or the attribute before opset 13), or equal pieces as many as the axis holds."""
    if split.op != "Split" or split.domain or not split.inputs:
        return None
    source = split.inputs[0]
    axis = normalize_axis(int(split.attrs.get("axis", 0)), ranks.rank(source))
    if axis is None:
        return None
    count = len(split.outputs)
    if len(split.inputs) > 1 and split.inputs[1].name:   # opset 13+: the sizes as an input
        sizes = constant_ints(split.inputs[1])
        if sizes is None:
            return None
    else:
        sizes = split.attrs.get("split")
    if sizes is not None:
        return (source, axis) if list(sizes) == [1] * count else None
    # Equal pieces (no sizes; opset 18's num_outputs is the output count): one position each if the axis holds `count`.
    return (source, axis) if known_axis_length(source, axis) == count else None


def match_step_slice(tensor: gs.Tensor, ranks: RankMap) -> Optional[StepSlice]:
    """The StepSlice that produces `tensor`, or None."""
    node = producer(tensor)
    if node is None:
        return None
    if node.op == "Gather":
        return _gather_scalar(node, ranks)
    if node.op == "Squeeze":
        return _squeezed_slice(node, ranks)
    if node.op == "If":
        return _guarded_squeezed_slice(node, ranks)
    return None

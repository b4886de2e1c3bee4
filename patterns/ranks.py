"""Tensor ranks for every tensor of a graph, where ONNX shape inference leaves gaps.

Exports with dynamic reshapes (Shape -> Slice -> Concat -> Reshape) defeat onnx's shape
inference, but patterns only need ranks, which one forward sweep recovers cheaply. We also
track the length of 1-D integer "shape vectors", because a Reshape's rank is that length.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from patterns.conditional_squeeze import match_conditional_squeeze, squeezes_a_unit_axis
from patterns.graph_query import constant_value, node_axes, producer, toposort

SAME_RANK_AS_FIRST_INPUT = {
    "Abs", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Conv", "ConvTranspose", "CumSum",
    "Dropout", "Elu", "Erf", "Exp", "Floor", "Gelu", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid",
    "HardSwish", "Identity", "InstanceNormalization", "LayerNormalization", "LeakyRelu", "Log", "LogSoftmax",
    "MaxPool", "Neg", "Not", "Pad", "Reciprocal", "Relu", "Resize", "Round", "Selu", "Sigmoid", "Sign", "Sin",
    "Cos", "Slice", "Softmax", "Softplus", "Softsign", "Split", "Sqrt", "Tanh", "Tile", "Transpose", "Mish",
    "Concat", "ReverseSequence", "Trilu", "ScatterND", "ScatterElements", "Scatter",
}
BROADCASTING = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
                "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "PRelu", "Mod", "BitShift"}
REDUCTIONS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1",
              "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin"}


class RankMap:
    """rank(tensor) and vector_length(tensor) after one sweep over the graph in node order."""

    def __init__(self, graph: gs.Graph) -> None:
        self._rank: dict[int, int] = {}
        self._length: dict[int, int] = {}  # 1-D integer tensors: their number of elements
        for node in _topological(graph):
            self._visit(node)

    def rank(self, tensor: Optional[gs.Tensor]) -> Optional[int]:
        if tensor is None:
            return None
        shape = getattr(tensor, "shape", None)
        if shape is not None:
            return len(shape)
        if isinstance(tensor, gs.Constant):
            return tensor.values.ndim
        return self._rank.get(id(tensor))

    def vector_length(self, tensor: gs.Tensor) -> Optional[int]:
        value = constant_value(tensor)
        if value is not None:
            return int(value.size) if value.ndim == 1 else None
        shape = getattr(tensor, "shape", None)
        if shape is not None and len(shape) == 1 and isinstance(shape[0], int):
            return shape[0]
        return self._length.get(id(tensor))

    # -- the sweep ------------------------------------------------------------------------
    def _set(self, tensor: gs.Tensor, rank: Optional[int], length: Optional[int] = None) -> None:
        if rank is not None and getattr(tensor, "shape", None) is None:
            self._rank[id(tensor)] = rank
        if length is not None:
            self._length[id(tensor)] = length

    def _visit(self, node: gs.Node) -> None:
        op, ins, outs = node.op, node.inputs, node.outputs
        ranks = [self.rank(t) for t in ins]
        first = ranks[0] if ranks else None
        if op == "Constant":
            value = constant_value(outs[0])
            if value is not None:
                self._set(outs[0], value.ndim)
            return
        if op in SAME_RANK_AS_FIRST_INPUT:
            for out in outs:
                self._set(out, first)
            if op in ("Cast", "Identity") and ins:
                self._copy_length(ins[0], outs[0])
            if op == "Slice":
                self._slice_length(node)
            if op == "Concat" and first == 1:
                lengths = [self.vector_length(t) for t in ins]
                if None not in lengths:
                    self._set(outs[0], 1, sum(lengths))
            return
        if op in BROADCASTING:
            known = [r for r in ranks if r is not None]
            rank = max(known) if len(known) == len([t for t in ins if t is not None]) and known else None
            length = None
            if rank == 1:  # shape arithmetic on 1-D vectors (Where/Mul/Equal of shape vectors)
                lengths = [1 if r == 0 else self.vector_length(t) for t, r in zip(ins, ranks)]
                length = max(lengths) if None not in lengths else None
            self._set(outs[0], rank, length)
            return
        rank = None
        if op == "Shape":
            rank = 1
            self._set(outs[0], 1, first if "start" not in node.attrs and "end" not in node.attrs else None)
            return
        if op == "Size":
            rank = 0
        elif op == "ConstantOfShape":
            shape = constant_value(ins[0])
            if shape is not None and shape.size == 1:  # a 1-D vector of known length
                self._set(outs[0], 1, int(shape.reshape(-1)[0]))
                return
            rank = self.vector_length(ins[0])
            measured = producer(ins[0])
            if rank == 1 and measured is not None and measured.op == "Shape" and not measured.attrs:
                # ConstantOfShape(Shape(v)) is shaped like v: a vector as long as v
                self._set(outs[0], 1, self.vector_length(measured.inputs[0]))
                return
        elif op == "Reshape" or op == "Expand":
            length = self.vector_length(ins[1])
            rank = length if op == "Reshape" or length is None or first is None else max(length, first)
            target = constant_value(ins[1])
            if op == "Reshape" and first == 1 and target is not None and target.size == 1:
                # a vector reshaped to [-1] (or to its own length) stays the same vector
                size = int(target.reshape(-1)[0])
                self._set(outs[0], 1, self.vector_length(ins[0]) if size in (-1, 0) else size)
                return
        elif op == "Gather":
            if first is not None and ranks[1] is not None:
                rank = first - 1 + ranks[1]
                if first == 1 and ranks[1] <= 1:
                    index = constant_value(ins[1])
                    self._set(outs[0], rank, int(index.size) if index is not None and ranks[1] == 1 else None)
                    return
        elif op in ("Unsqueeze", "Squeeze"):
            axes = node_axes(node)
            if first is not None and axes is not None:
                rank = first + len(axes) if op == "Unsqueeze" else first - len(axes)
                if op == "Unsqueeze" and first == 0:
                    self._set(outs[0], rank, 1)
                    return
        elif op == "If":
            guarded = match_conditional_squeeze(node)
            data_rank = self.rank(guarded.data) if guarded is not None else None
            if data_rank is not None and squeezes_a_unit_axis(guarded, data_rank):
                rank = data_rank - 1
        elif op in REDUCTIONS:
            keepdims = int(node.attrs.get("keepdims", 1))
            axes = [node.attrs["axis"]] if "axis" in node.attrs else node_axes(node)
            if first is not None:
                rank = first if keepdims else (first - len(axes) if axes else 0)
        elif op == "Einsum":
            equation = node.attrs["equation"].replace(" ", "")
            if "->" in equation and "..." not in equation:
                rank = len(equation.split("->")[1])
        elif op == "MatMul":
            if None not in ranks and len(ranks) == 2:
                # numpy's matmul: a 1-D operand's axis is added for the product and dropped from its result
                rank = max(ranks) - (1 if min(ranks) == 1 else 0)
        elif op in ("Gemm", "Flatten", "NonZero"):
            rank = 2
        elif op == "Range":
            rank = 1
        for out in outs:
            self._set(out, rank)

    def _copy_length(self, source: gs.Tensor, target: gs.Tensor) -> None:
        length = self.vector_length(source)
        if length is not None:
            self._length[id(target)] = length

    def _slice_length(self, node: gs.Node) -> None:
        length = self.vector_length(node.inputs[0])
        starts = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
        ends = constant_value(node.inputs[2]) if len(node.inputs) > 2 else None
        steps = constant_value(node.inputs[4]) if len(node.inputs) > 4 else np.array([1])
        if length is None or starts is None or ends is None or steps is None or starts.size != 1:
            return
        self._length[id(node.outputs[0])] = len(range(length)[slice(int(starts[0]), int(ends[0]), int(steps[0]))])


def _topological(graph: gs.Graph) -> list[gs.Node]:
    """Node order with every producer before its consumers (exporters already emit it so; check cheaply)."""
    seen: set[int] = set()
    for tensor in graph.inputs:
        seen.add(id(tensor))
    for node in graph.nodes:
        for tensor in node.inputs:
            if not isinstance(tensor, gs.Constant) and tensor.inputs and id(tensor) not in seen:
                toposort(graph)
                return list(graph.nodes)
        seen.update(id(t) for t in node.outputs)
    return list(graph.nodes)

"""A tiny opset-aware node builder: each call adds one node to the graph and returns its output.

Replacement subgraphs are written with it so they read like the math, and so the
axes-as-attribute (opset < 13) vs axes-as-input (opset >= 13) split lives in one place.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import onnx_graphsurgeon as gs

# The most entries a pass writes into an index constant sized by the model's declared dims (a
# Gather's indices): a hostile model can declare a 2^31 axis without holding its data, and with
# --verify none nothing would stop a multi-GB table. 2^22 int64 = 32 MiB; VMamba-T needs 3,136
# (a 1024 x 1024 input: 65,536).
MAX_INDEX_TABLE = 1 << 22


def taken_prefixes(graph: gs.Graph) -> set[str]:
    """The folders of the graph's node and tensor names ('a/b' of 'a/b/Mul_1_out')."""
    names = [node.name for node in graph.nodes] + list(graph.tensors())
    return {name.rsplit("/", 1)[0] for name in names if "/" in name}


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name#2``, ``name#3``, .. : the first not in ``taken``, added to it."""
    unique, copy = name, 1
    while unique in taken:
        copy += 1
        unique = f"{name}#{copy}"
    taken.add(unique)
    return unique


class GraphBuilder:
    def __init__(self, graph: gs.Graph, opset: int, prefix: str, dtype=np.float32,
                 taken: Optional[set[str]] = None) -> None:
        """``prefix`` names the new nodes and tensors, made unique against ``taken`` (default: the
        graph's ``taken_prefixes``; a caller making many builders passes one set), as a model's
        names are hostile text: a node named as another's fallback prefix, or a tensor already
        called 'p/Mul_1_out', would otherwise give a tensor produced twice."""
        self.graph = graph
        self.opset = opset
        self.prefix = unique_name(prefix, taken_prefixes(graph) if taken is None else taken)
        self.dtype = dtype
        self.nodes: list[gs.Node] = []
        self._count = 0
        self._constants: dict[tuple, gs.Constant] = {}

    # -- plumbing -------------------------------------------------------------------------
    def fresh_name(self, op: str) -> str:
        """A name no node or tensor of this builder has had: the prefix, the op and a count (for a tensor or subgraph
        a caller makes itself)."""
        self._count += 1
        return f"{self.prefix}/{op}_{self._count}"

    def node(self, op: str, inputs: Sequence[gs.Tensor], attrs: Optional[dict] = None,
             output: Optional[gs.Variable] = None) -> gs.Variable:
        name = self.fresh_name(op)
        out = output if output is not None else gs.Variable(f"{name}_out", dtype=None)
        node = gs.Node(op, name=name, attrs=attrs or {}, inputs=list(inputs), outputs=[out])
        self.graph.nodes.append(node)
        self.nodes.append(node)
        return out

    def node_outputs(self, op: str, inputs: Sequence[gs.Tensor], attrs: Optional[dict] = None, count: int = 1,
                     domain: Optional[str] = None) -> list[gs.Variable]:
        """One node with ``count`` outputs (a Split, a model's node copied), named like ``node``'s."""
        name = self.fresh_name(op)
        outputs = [gs.Variable(f"{name}_out{i}", dtype=None) for i in range(count)]
        node = gs.Node(op, name=name, attrs=attrs or {}, inputs=list(inputs), outputs=outputs, domain=domain)
        self.graph.nodes.append(node)
        self.nodes.append(node)
        return outputs

    def const(self, value, dtype=None) -> gs.Constant:
        array = np.asarray(value, dtype=dtype if dtype is not None else None)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            self._constants[key] = gs.Constant(f"{self.prefix}/const_{len(self._constants)}", array)
        return self._constants[key]

    def ints(self, values) -> gs.Constant:
        return self.const(np.asarray(values, dtype=np.int64))

    def scalar(self, value: float) -> gs.Constant:
        return self.const(np.asarray(value, dtype=self.dtype))

    # -- elementwise ----------------------------------------------------------------------
    def add(self, a, b): return self.node("Add", [a, b])
    def sub(self, a, b): return self.node("Sub", [a, b])
    def mul(self, a, b): return self.node("Mul", [a, b])
    def div(self, a, b): return self.node("Div", [a, b])
    def exp(self, a): return self.node("Exp", [a])
    def log(self, a): return self.node("Log", [a])
    def neg(self, a): return self.node("Neg", [a])
    def relu(self, a): return self.node("Relu", [a])
    def abs(self, a): return self.node("Abs", [a])
    def max(self, a, b): return self.node("Max", [a, b])
    def min(self, a, b): return self.node("Min", [a, b])
    def where(self, cond, a, b): return self.node("Where", [cond, a, b])
    def less(self, a, b): return self.node("Less", [a, b])

    # -- shape and indexing ---------------------------------------------------------------
    def slice(self, x, start: int, end: int, axis: int):
        return self.node("Slice", [x, self.ints([start]), self.ints([end]), self.ints([axis])])

    def split(self, x, sizes: Sequence[int], axis: int) -> list[gs.Variable]:
        """x cut along axis into pieces of the given sizes: one Split node, one output per piece."""
        if self.opset >= 13:
            return self.node_outputs("Split", [x, self.ints(list(sizes))], {"axis": axis}, len(sizes))
        return self.node_outputs("Split", [x], {"axis": axis, "split": list(sizes)}, len(sizes))

    def gather(self, x, index: int, axis: int):
        """x[..., index, ...] with the axis dropped."""
        return self.node("Gather", [x, self.ints(index)], {"axis": axis})

    def unsqueeze(self, x, axes: Sequence[int], output=None):
        if self.opset >= 13:
            return self.node("Unsqueeze", [x, self.ints(list(axes))], output=output)
        return self.node("Unsqueeze", [x], {"axes": list(axes)}, output=output)

    def squeeze(self, x, axes: Sequence[int]):
        if self.opset >= 13:
            return self.node("Squeeze", [x, self.ints(list(axes))])
        return self.node("Squeeze", [x], {"axes": list(axes)})

    def concat(self, xs: Sequence[gs.Tensor], axis: int, output=None):
        return self.node("Concat", list(xs), {"axis": axis}, output=output)

    def pad_axis(self, x, rank: int, axis: int, before: int, after: int, value: float = 0.0):
        """Constant padding along one axis (Pad with pads/value as inputs, opset >= 11)."""
        pads = [0] * (2 * rank)
        pads[axis], pads[rank + axis] = before, after
        return self.node("Pad", [x, self.ints(pads), self.scalar(value)], {"mode": "constant"})

    def transpose(self, x, perm: Sequence[int], output=None):
        return self.node("Transpose", [x], {"perm": list(perm)}, output=output)

    def reshape(self, x, shape):
        shape_input = shape if isinstance(shape, gs.Tensor) else self.ints(list(shape))
        return self.node("Reshape", [x, shape_input])

    def shape(self, x):
        return self.node("Shape", [x])

    def cumsum(self, x, axis: int):
        return self.node("CumSum", [x, self.ints(axis)])

    def reduce_sum(self, x, axes: Sequence[int], keepdims: int = 1, output=None):
        if self.opset >= 13:
            return self.node("ReduceSum", [x, self.ints(list(axes))], {"keepdims": keepdims}, output=output)
        return self.node("ReduceSum", [x], {"axes": list(axes), "keepdims": keepdims}, output=output)

    def einsum(self, inputs: Sequence[gs.Tensor], equation: str, output=None):
        return self.node("Einsum", list(inputs), {"equation": equation}, output=output)

    def matmul(self, a, b, output=None):
        return self.node("MatMul", [a, b], output=output)

    def identity(self, x, output=None):
        return self.node("Identity", [x], output=output)

"""Values of small tensors computed from constants only, in numpy, without running the graph.

The TorchScript exporter leaves index and shape arithmetic in the graph where a traced size fed it:
`out[:, t] = h` becomes ScatterND indices built from ConstantOfShape, Mul, Equal, Where, Expand,
Unsqueeze and Concat of constants, and an update shaped by Shape(Gather(out, t)) of the buffer
written the step before. `small_value` evaluates such a subgraph where every leaf is a constant or a
tensor given in `bound` (a stand-in of known shape: the values a Shape reads do not matter), for a
closed set of ops, and gives up (None) on anything else, on a tensor of more than MAX_ELEMENTS (checked
before the ops that can make more than they read allocate anything) or once the values it holds pass
MAX_HELD_ELEMENTS all together (a Concat of a thousand ConstantOfShapes of MAX_ELEMENTS each).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from patterns.graph_query import constant_value, node_axes, producer

MAX_ELEMENTS = 1 << 22   # 4M: a stand-in buffer (1, L, d) of a large model and one step of it
MAX_HELD_ELEMENTS = 2 * MAX_ELEMENTS   # every value one evaluation computes, together
MAX_DEPTH = 32

# Elementwise ops of two or more inputs (numpy broadcasting, as ONNX's multidirectional broadcasting), and of one.
_BINARY = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Max": np.maximum, "Min": np.minimum}
_COMPARISONS = {"Equal": np.equal, "Greater": np.greater, "Less": np.less, "GreaterOrEqual": np.greater_equal,
                "LessOrEqual": np.less_equal, "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}
_UNARY = {"Ceil": np.ceil, "Floor": np.floor, "Neg": np.negative, "Abs": np.abs, "Not": np.logical_not}
# Index and shape arithmetic (TorchScript's `range(start, end)` is Cast(Ceil(Div(Cast(end - start), step))), its
# `if x.size(1) > 1:` a Greater then a Cast to bool).
EVALUATED_OPS = frozenset({"Shape", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Expand",
                           "ConstantOfShape", "Where", "Cast", "Identity", "Transpose", "Div", "ScatterElements",
                           *_BINARY, *_COMPARISONS, *_UNARY})


def _attr_value(value) -> np.ndarray:
    return np.asarray(value.values) if isinstance(value, gs.Constant) else np.asarray(value)


def _ints(array: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(array).reshape(-1)]


def _onnx_slice(start: int, end: int, step: int, size: int) -> slice:
    """ONNX Slice's bounds on an axis of `size` as a Python slice: negative bounds count from the end, then
    start and end are clamped to [0, size] (step > 0) or to [0, size - 1] and [-1, size - 1] (step < 0), -1
    meaning before the first element, which a Python slice can only say as None."""
    start, end = (start + size if start < 0 else start), (end + size if end < 0 else end)
    if step > 0:
        return slice(min(max(start, 0), size), min(max(end, 0), size), step)
    end = min(max(end, -1), size - 1)
    return slice(min(max(start, 0), size - 1), None if end < 0 else end, step)


def _elements_made(node: gs.Node, inputs: list[Optional[np.ndarray]]) -> int:
    """How many elements `node` would make from `inputs`, for the ops that can make more than they read
    (a hostile ConstantOfShape of (2^20, 2^20) asks for 4 TiB): checked before anything is allocated."""
    op, x = node.op, inputs[0] if inputs else None
    if op == "ConstantOfShape":
        return math.prod(max(v, 0) for v in _ints(x))
    if op == "Expand":
        return math.prod(np.broadcast_shapes(x.shape, tuple(max(v, 0) for v in _ints(inputs[1]))))
    if op == "Gather":
        axis = int(node.attrs.get("axis", 0))
        return x.size // max(x.shape[axis], 1) * inputs[1].size if x.ndim else 0
    if op in _BINARY or op in _COMPARISONS or op in ("Div", "Where"):
        return math.prod(np.broadcast_shapes(*(v.shape for v in inputs)))
    if op == "Concat":   # a thousand inputs, each within MAX_ELEMENTS, or one a thousand times
        return sum(v.size for v in inputs)
    return 0


def _evaluate(node: gs.Node, inputs: list[Optional[np.ndarray]]) -> Optional[np.ndarray]:
    op, attrs = node.op, node.attrs
    x = inputs[0] if inputs else None
    if _elements_made(node, inputs) > MAX_ELEMENTS:
        return None
    if op == "Shape":
        shape = np.asarray(x.shape, dtype=np.int64)
        rank = len(shape)
        start, end = int(attrs.get("start", 0)), attrs.get("end")
        end = rank if end is None else int(end)
        start, end = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
        return shape[max(start, 0):min(end, rank)]
    if op in ("Identity",):
        return x
    if op == "Cast":
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(int(attrs["to"])))
    if op == "Gather":
        return np.take(x, inputs[1].astype(np.int64), axis=int(attrs.get("axis", 0)))
    if op == "Slice":
        starts, ends = _ints(inputs[1]), _ints(inputs[2])
        axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
        steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
        index = [slice(None)] * x.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            index[axis] = _onnx_slice(start, end, step, x.shape[axis])
        return x[tuple(index)]
    if op == "Concat":
        return np.concatenate(inputs, axis=int(attrs["axis"]))
    if op in ("Unsqueeze", "Squeeze"):
        axes = node_axes(node)
        if op == "Squeeze" and axes is None:
            return np.squeeze(x)
        if axes is None:
            return None
        if op == "Squeeze":
            return np.squeeze(x, axis=tuple(a + x.ndim if a < 0 else a for a in axes))
        rank = x.ndim + len(axes)
        for axis in sorted(a + rank if a < 0 else a for a in axes):
            x = np.expand_dims(x, axis)
        return x
    if op == "Reshape":
        shape = _ints(inputs[1])
        if not int(attrs.get("allowzero", 0)):
            shape = [x.shape[i] if size == 0 else size for i, size in enumerate(shape)]
        return x.reshape(shape)
    if op == "Expand":
        return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(_ints(inputs[1])))).copy()
    if op == "ConstantOfShape":
        fill = _attr_value(attrs["value"]).reshape(-1) if "value" in attrs else np.zeros(1, np.float32)
        return np.full(_ints(x), fill[0], dtype=fill.dtype)
    if op == "Transpose":
        return np.transpose(x, attrs.get("perm"))
    if op in _BINARY:   # Max and Min take one input or more
        result = inputs[0]
        for other in inputs[1:]:
            result = _BINARY[op](result, other)
        return np.asarray(result).astype(inputs[0].dtype)
    if op in _COMPARISONS:
        return np.asarray(_COMPARISONS[op](inputs[0], inputs[1]), dtype=bool)
    if op in _UNARY:
        return np.asarray(_UNARY[op](x)).astype(x.dtype)
    if op == "Div":   # ONNX's integer Div truncates toward zero; by zero it is undefined: not evaluated
        a, b = inputs
        if np.issubdtype(a.dtype, np.integer):
            if np.any(b == 0):
                return None
            return ((np.abs(a) // np.abs(b)) * np.sign(a) * np.sign(b)).astype(a.dtype)
        return np.asarray(a / b).astype(a.dtype)
    if op == "Where":
        return np.where(*inputs).astype(inputs[1].dtype)
    if op == "ScatterElements":   # TorchScript's index_copy: the update's shape, the buffer's with the axis' size 1
        return _scatter_elements(node, *inputs)
    return None


def _scatter_elements(node: gs.Node, data, indices, updates) -> Optional[np.ndarray]:
    """ScatterElements without reduction (a copy of `data`: no more elements than it holds), indices in range."""
    reduction = node.attrs.get("reduction", "none")
    if (reduction.decode() if isinstance(reduction, bytes) else reduction) != "none" or data.ndim == 0:
        return None
    axis = int(node.attrs.get("axis", 0))
    axis = axis + data.ndim if axis < 0 else axis
    if (not 0 <= axis < data.ndim or indices.shape != updates.shape or indices.ndim != data.ndim
            or not np.issubdtype(indices.dtype, np.integer)
            or any(size > limit for size, limit in zip(indices.shape, data.shape))):
        return None
    size = data.shape[axis]
    if np.any(indices < -size) or np.any(indices >= size):
        return None
    out = data.copy()   # at every position of `indices` (np.put_along_axis would broadcast a shorter one)
    coordinates = list(np.indices(indices.shape, sparse=True))
    coordinates[axis] = np.where(indices < 0, indices + size, indices).astype(np.int64)
    out[tuple(coordinates)] = updates.astype(data.dtype)
    return out


class _Evaluation:
    """The values computed so far (by id of the tensor) and how many elements they hold."""

    def __init__(self, bound: dict) -> None:
        self.bound, self.values, self.held = bound, {}, 0


def small_value(tensor: Optional[gs.Tensor], bound: Optional[dict] = None) -> Optional[np.ndarray]:
    """The value of `tensor`, computed from constants (and the stand-ins in `bound`, keyed by id of the
    tensor) through EVALUATED_OPS, or None."""
    return _value(tensor, _Evaluation(bound or {}), 0)


def _value(tensor: Optional[gs.Tensor], evaluation: _Evaluation, depth: int) -> Optional[np.ndarray]:
    if tensor is None:
        return None
    if id(tensor) in evaluation.bound:
        return evaluation.bound[id(tensor)]
    if id(tensor) in evaluation.values:
        return evaluation.values[id(tensor)]
    value = constant_value(tensor)
    node = producer(tensor)
    if value is None and node is not None and node.op in EVALUATED_OPS and depth < MAX_DEPTH:
        inputs = []
        for position, item in enumerate(node.inputs):
            if item is None or not item.name:
                inputs.append(None)
                continue
            known = _value(item, evaluation, depth + 1)
            if known is None and not (node.op == "Shape" and position == 0):
                break
            inputs.append(known)
        else:
            if node.op == "Shape" and inputs[0] is None:
                value = None
            elif evaluation.held <= MAX_HELD_ELEMENTS:
                try:
                    with np.errstate(all="ignore"):
                        value = _evaluate(node, inputs)
                except (ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError):
                    value = None
                evaluation.held += 0 if value is None else value.size
    if value is not None and (value.size > MAX_ELEMENTS or evaluation.held > MAX_HELD_ELEMENTS):
        value = None
    evaluation.values[id(tensor)] = value
    return value

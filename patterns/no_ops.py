"""Nodes that leave a tensor as it was: what exporters put between two states of a recurrence.

transformers' Mamba writes `Cast(Add(Mul(a_i, h), b_i))` to the same dtype; other code flattens
a state and reshapes it back, or unsqueezes and squeezes the same axis. `see_through(t)` walks
back from t over such nodes to the deepest tensor that provably equals t in value and shape.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from patterns.graph_query import constant_value, element_type, node_axes, producer

_WRAPPERS = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten"}
_VALUE_ONLY = {"Cast", "Identity"}


def is_same_type_cast(node: gs.Node) -> bool:
    """The Cast's input already has the target type. Exporters record few intermediate types: the
    input's is followed back through type-keeping ops to a typed tensor (a .double() or .half()
    export's states are no float32), and only where none is found taken to be float32."""
    target = onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"]))
    known = element_type(node.inputs[0])
    if known is not None and not isinstance(known, int):
        return np.dtype(known) == target
    return target == np.float32   # an untyped tensor in a float32 export


def _static_shape(tensor: gs.Tensor) -> Optional[tuple]:
    shape = getattr(tensor, "shape", None)
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return tuple(shape)


def _round_trip(path: list[gs.Node], origin: gs.Tensor, tensor: gs.Tensor) -> bool:
    """The nodes from `origin` to `tensor` (path: nearest `tensor` first) keep origin's shape."""
    shaping = [n for n in path if n.op not in _VALUE_ONLY]
    if not shaping:
        return True
    if _static_shape(origin) is not None and _static_shape(origin) == _static_shape(tensor):
        return True
    last = shaping[0]
    if last.op == "Reshape":
        measured = producer(last.inputs[1])
        if measured is not None and measured.op == "Shape" and not measured.attrs:
            source, _ = _value_origin(measured.inputs[0])
            if source is origin:
                return True
    if len(shaping) == 2 and [n.op for n in shaping] == ["Squeeze", "Unsqueeze"]:
        squeeze, unsqueeze = shaping
        return node_axes(squeeze) is not None and node_axes(squeeze) == node_axes(unsqueeze)
    return False


def _value_origin(tensor: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]]:
    nodes = []
    while True:
        node = producer(tensor)
        if node is None or node.op not in _VALUE_ONLY or (node.op == "Cast" and not is_same_type_cast(node)):
            return tensor, nodes
        nodes.append(node)
        tensor = node.inputs[0]


def see_through(tensor: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]]:
    """(origin, nodes): the deepest tensor equal to `tensor` in value and shape, and the no-op nodes between."""
    path: list[gs.Node] = []
    best: tuple[gs.Tensor, list[gs.Node]] = (tensor, [])
    current = tensor
    while True:
        node = producer(current)
        if node is None or node.op not in _WRAPPERS or not node.inputs:
            break
        if node.op == "Cast" and not is_same_type_cast(node):
            break
        path.append(node)
        current = node.inputs[0]
        if _round_trip(path, current, tensor):
            best = (current, list(path))
    return best


def times_one(node: Optional[gs.Node], ranks) -> Optional[gs.Tensor]:
    """x when `node` is Mul(x, 1) (either operand order) by a constant one of one element that cannot add axes to x
    (torch.addcmul(b, h, a) with its default value=1, as TorchScript writes it: Add(b, Mul(Mul(h, a), 1))), else None."""
    if node is None or node.op != "Mul" or node.domain or len(node.inputs) != 2:
        return None
    for one_side in (0, 1):
        one, other = node.inputs[one_side], node.inputs[1 - one_side]
        value = constant_value(one)
        if value is None or value.size != 1 or value.reshape(-1)[0] != 1:
            continue
        other_rank = ranks.rank(other)
        if value.ndim == 0 or (other_rank is not None and value.ndim <= other_rank):
            return other
    return None

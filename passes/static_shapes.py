"""Static shapes for passes that need them (the TPU passes: split-cumsum, cumsum-rank4, ...).

onnx-graphsurgeon only knows the shapes that the model carried in value_info; tensors that a
pass made have none. ``static_shapes`` exports the graph (in memory), runs ONNX shape
inference with data propagation, and returns every tensor's shape as a tuple of ints, or
None where a dimension is unknown or symbolic. Constants give their own shape.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.graph_io import graph_to_model

Shape = tuple[int, ...]


def _shape_of(type_proto: onnx.TypeProto) -> Optional[Shape]:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    dims = []
    for dim in type_proto.tensor_type.shape.dim:
        if not dim.HasField("dim_value") or dim.dim_value < 0:
            return None
        dims.append(int(dim.dim_value))
    return tuple(dims)


PartialShape = tuple[Optional[int], ...]


def _partial_shape_of(type_proto: onnx.TypeProto) -> Optional[PartialShape]:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else None
                 for d in type_proto.tensor_type.shape.dim)


def partial_shapes(graph: gs.Graph) -> dict[str, Optional[PartialShape]]:
    """Tensor name -> shape with None for unknown or symbolic dims (a dynamic batch), None if the rank is unknown."""
    model = graph_to_model(graph)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # best effort, as in static_shapes
        inferred = model
    shapes = {v.name: _partial_shape_of(v.type)
              for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    for name, tensor in graph.tensors().items():
        if isinstance(tensor, gs.Constant):
            shapes[name] = tuple(int(d) for d in tensor.shape)
    return shapes


def static_shapes(graph: gs.Graph) -> dict[str, Optional[Shape]]:
    """Tensor name -> static shape (None where not fully known). Never raises for inference."""
    shapes: dict[str, Optional[Shape]] = {}
    model = graph_to_model(graph)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is best effort: report unknown shapes, not a crash
        inferred = model
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[value.name] = _shape_of(value.type)
    for name, tensor in graph.tensors().items():
        if isinstance(tensor, gs.Constant):
            shapes[name] = tuple(int(d) for d in tensor.shape)
        elif shapes.get(name) is None and tensor.shape is not None and all(
                isinstance(d, (int, np.integer)) and d >= 0 for d in tensor.shape):
            shapes[name] = tuple(int(d) for d in tensor.shape)
    return shapes


def constant_value(tensor: gs.Tensor) -> Optional[np.ndarray]:
    """The value of an initializer or of a Constant node's output, else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        attrs = tensor.inputs[0].attrs
        if isinstance(attrs.get("value"), gs.Constant):
            return np.asarray(attrs["value"].values)
        for key in ("value_int", "value_float"):
            if key in attrs:
                return np.asarray(attrs[key])
        if "value_ints" in attrs:
            return np.asarray(attrs["value_ints"], dtype=np.int64)
    return None


def describe(node: gs.Node) -> str:
    """How error messages and notes name a node."""
    return f"{node.op} '{node.name}'"

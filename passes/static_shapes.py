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
    shapes: dict[str, Optional[Shape]] = {
        name: tuple(shape) if shape is not None and None not in shape else None
        for name, shape in partial_shapes(graph).items()}
    for name, tensor in graph.tensors().items():
        if shapes.get(name) is None and tensor.shape is not None and all(
                isinstance(d, (int, np.integer)) and d >= 0 for d in tensor.shape):
            shapes[name] = tuple(int(d) for d in tensor.shape)
    return shapes


def symbolic_partial_shapes(graph: gs.Graph) -> dict[str, Optional[PartialShape]]:
    """`partial_shapes`, with ONNX Runtime's symbolic shape inference first: it follows shapes
    through Shape/Slice/Concat arithmetic that ONNX's own inference gives up on (transformers'
    Mamba slices its projections with bounds computed from Shape, so its sequence axis was unknown
    to ONNX inference; ORT's tool gives 1024). A dimension it can only name stays None. Falls back
    to `partial_shapes` where the tool fails."""
    shapes = partial_shapes(graph)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(graph_to_model(graph), auto_merge=True)
    except Exception:  # best effort: the ONNX-inferred shapes stand
        return shapes
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        shape = _partial_shape_of(value.type)
        if shape is not None:
            known = shapes.get(value.name)
            shapes[value.name] = shape if known is None else tuple(
                a if a is not None else b for a, b in zip(shape, known)) if len(known) == len(shape) else shape
    return shapes

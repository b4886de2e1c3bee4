"""How many elements the tensors that constant folding would evaluate hold, before anything runs.

Folding (fold-constants through onnx-graphsurgeon, simplify through onnxsim) hands every node whose
inputs are constants to ONNX Runtime, also those whose result is reduced away after. A few stored
numbers can ask for any size: two stored vectors of 2^16 floats added as a column and a row make
2^32 elements (16 GiB from a 512 KiB file), and a ConstantOfShape, Expand, Tile or Range makes what
its constant inputs say. ONNX's shape inference, with data propagation (which follows shapes
computed from constants and from declared dims), sizes each tensor first; folding leaves a node
making more than MAX_FOLDED_ELEMENTS to run time.
"""
from __future__ import annotations

from typing import Optional

import onnx

from passes.graph_builder import MAX_INDEX_TABLE
from passes.static_shapes import infer_shapes, static_element_counts

# The most elements folding lets one node produce: the cap other passes put on the constants they
# build (graph_builder.MAX_INDEX_TABLE, 2^22: 16 MiB of float32).
MAX_FOLDED_ELEMENTS = MAX_INDEX_TABLE


def inferred_elements(model: onnx.ModelProto, inferred: Optional[onnx.ModelProto] = None) -> dict[str, int]:
    """Elements of each tensor of the main graph whose shape ONNX's shape inference finds static
    (nothing where inference fails: a model past 2 GiB, an op it cannot follow). `inferred`: `model`
    through static_shapes.infer_shapes, where the caller has it already."""
    if inferred is None:   # sizes left unknown stay so; fold-constants sizes its size-making ops itself
        inferred, _ = infer_shapes(model)
    return {value.name: value.elements for value in static_element_counts(inferred)}


def oversized_constant_nodes(model: onnx.ModelProto,
                             inferred: Optional[onnx.ModelProto] = None) -> list[tuple[onnx.NodeProto, int]]:
    """The main graph's nodes computed from constants alone (stored tensors, Constants, the Shape or
    Size of a static shape), as folding sees them, that inference sizes past MAX_FOLDED_ELEMENTS,
    with the elements of their largest output. ``model``'s nodes must be in topological order;
    `inferred` as for inferred_elements."""
    elements = inferred_elements(model, inferred)
    constant = {initializer.name for initializer in model.graph.initializer} | {""}
    oversized = []
    for node in model.graph.node:
        computed_from_constants = all(name in constant for name in node.input) or (
            node.op_type in ("Shape", "Size") and node.input[0] in elements)
        if not computed_from_constants:
            continue
        constant.update(node.output)
        largest = max((elements.get(name, 0) for name in node.output), default=0)
        if largest > MAX_FOLDED_ELEMENTS:
            oversized.append((node, largest))
    return oversized

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
from passes.graph_io import all_graphs
from passes.static_shapes import infer_shapes, static_element_counts

# The most elements folding lets one node produce: the cap other passes put on the constants they
# build (graph_builder.MAX_INDEX_TABLE, 2^22: 16 MiB of float32).
MAX_FOLDED_ELEMENTS = MAX_INDEX_TABLE


def inferred_elements(model: onnx.ModelProto, inferred: Optional[onnx.ModelProto] = None) -> dict[str, int]:
    """Elements of each tensor of the model, If/Loop/Scan bodies included, whose shape ONNX's shape inference
    finds static (nothing where inference fails: a model past 2 GiB, an op it cannot follow); of two values of one
    name (an If's two branches) the larger. `inferred`: `model` through static_shapes.infer_shapes, where the
    caller has it already. Bodies too: fold-constants folds them with its gate, which found no size for a body's
    Add of two stored vectors as a column and a row and let ONNX Runtime make it whole (adv13's lead; adv17)."""
    if inferred is None:   # sizes left unknown stay so; fold-constants sizes its size-making ops itself
        inferred, _ = infer_shapes(model)
    elements: dict[str, int] = {}
    for value in static_element_counts(inferred, subgraphs=True):
        elements[value.name] = max(value.elements, elements.get(value.name, -1))
    return elements


def oversized_constant_nodes(model: onnx.ModelProto,
                             inferred: Optional[onnx.ModelProto] = None) -> list[tuple[onnx.NodeProto, int]]:
    """The nodes (If/Loop/Scan bodies' too) computed from constants alone (stored tensors, Constants, the Shape or
    Size of a static shape), as folding sees them, that inference sizes past MAX_FOLDED_ELEMENTS,
    with the elements of their largest output. ``model``'s nodes must be in topological order;
    `inferred` as for inferred_elements."""
    elements = inferred_elements(model, inferred)
    graphs = list(all_graphs(model.graph))   # a graph before the bodies of its nodes: outer constants first
    constant = {initializer.name for graph in graphs for initializer in graph.initializer} | {""}
    oversized = []
    for node in (node for graph in graphs for node in graph.node):   # bodies too: onnxsim folds them (adv17)
        computed_from_constants = all(name in constant for name in node.input) or (
            node.op_type in ("Shape", "Size") and node.input[0] in elements)
        if not computed_from_constants:
            continue
        constant.update(node.output)
        largest = max((elements.get(name, 0) for name in node.output), default=0)
        if largest > MAX_FOLDED_ELEMENTS:
            oversized.append((node, largest))
    return oversized

"""Turn Constant nodes into initializers.

tpu-mlir 1.30.2's ONNX front end reads a Constant node's ``value`` attribute only: one written
with ``value_int`` / ``value_ints`` / ``value_float(s)`` fails ``model_transform`` with
``KeyError: 'value'`` when its own onnxsim is off (measured, docs/TPU.md). An initializer
carries the same tensor in the one form every consumer reads.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, PassResult
from passes.registry import register_pass
from patterns.graph_query import constant_node_value


@register_pass
class ConstantsToInitializers(Pass):
    name = "constants-to-initializers"
    description = "replace Constant nodes by initializers (tpu-mlir reads only Constant's 'value' attribute)"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        graph_outputs = {id(t) for t in graph.outputs}
        converted, notes = [], []
        for node in graph.nodes:
            if node.op != "Constant":
                continue
            value = constant_node_value(node)
            output = node.outputs[0]
            if value is None or id(output) in graph_outputs:
                notes.append(f"Constant '{node.name}' kept: "
                             + ("a graph output" if value is not None else f"attribute {sorted(node.attrs)}"))
                continue
            initializer = gs.Constant(output.name, value)
            output.name = f"{output.name}__from_constant_node"
            for consumer in list(output.outputs):
                for index, tensor in enumerate(consumer.inputs):
                    if tensor is output:
                        consumer.inputs[index] = initializer
            node.outputs.clear()
            converted.append(node)
        if not converted:
            return PassResult(False, {"converted": 0}, notes)
        gone = {id(node) for node in converted}
        graph.nodes = [node for node in graph.nodes if id(node) not in gone]
        return PassResult(True, {"converted": len(converted)}, notes)

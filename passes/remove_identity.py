"""Remove Identity nodes.

tpu-mlir's ONNX front end breaks on Identity nodes over initializers when its own onnxsim is
off (``KeyError: operand ... not found``), and re-rolling emits Identity to keep an output's
name. Consumers are rewired to the Identity's input; an Identity that feeds a graph output
hands the output's name to its producer instead. The one case left alone (with a note) is an
Identity between a graph input or initializer and a graph output: removing it would change
the graph's interface.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, PassResult
from passes.registry import register_pass
from patterns.graph_query import describe


def _replace_in(tensors, old: gs.Tensor, new: gs.Tensor) -> None:
    # Item by item: onnx-graphsurgeon's synchronised lists do not support slice assignment.
    for index, tensor in enumerate(tensors):
        if tensor is old:
            tensors[index] = new


def _replace_uses(old: gs.Tensor, new: gs.Tensor) -> None:
    for consumer in list(old.outputs):
        _replace_in(consumer.inputs, old, new)


@register_pass
class RemoveIdentity(Pass):
    name = "remove-identity"
    description = "remove Identity nodes (rewire consumers; a graph output takes over its producer's tensor)"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        identities = [node for node in graph.nodes if node.op == "Identity"]
        if not identities:
            return PassResult(False, {"removed": 0})
        graph_outputs = {id(t) for t in graph.outputs}
        graph_inputs = {id(t) for t in graph.inputs}
        notes, removed = [], []
        for node in identities:
            source, result = node.inputs[0], node.outputs[0]
            if id(result) not in graph_outputs:
                _replace_uses(result, source)
                node.inputs.clear()
                node.outputs.clear()
                removed.append(node)
                continue
            # The result is a graph output: keep its tensor (name, type) and let the source's
            # producer write it directly, if the source is a plain intermediate.
            producer = source.inputs[0] if len(source.inputs) == 1 else None
            if (producer is None or isinstance(source, gs.Constant) or id(source) in graph_inputs
                    or id(source) in graph_outputs):
                notes.append(f"{describe(node)} kept: it copies a graph input, initializer or another "
                             "graph output into a graph output")
                continue
            node.inputs.clear()
            node.outputs.clear()
            _replace_uses(source, result)
            _replace_in(producer.outputs, source, result)
            removed.append(node)
        if not removed:
            return PassResult(False, {"removed": 0}, notes)
        gone = {id(node) for node in removed}
        graph.nodes = [node for node in graph.nodes if id(node) not in gone]
        graph.cleanup(remove_unused_graph_inputs=False)
        return PassResult(True, {"removed": len(removed)}, notes)

"""Remove nodes and tensors that no graph output depends on.

Re-rolling leaves the old unrolled steps behind with no consumer; this pass drops them.
Unused initializers go with them (onnx-graphsurgeon keeps only tensors reachable from
nodes, and they are not exported). Graph inputs stay, even unused: they are the interface.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, PassResult
from passes.registry import register_pass


@register_pass
class EliminateDeadNodes(Pass):
    name = "eliminate-dead-nodes"
    description = "remove nodes and tensors that do not reach a graph output"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        nodes_before = len(graph.nodes)
        tensors_before = len(graph.tensors())
        graph.cleanup(remove_unused_node_outputs=False, remove_unused_graph_inputs=False)
        removed_nodes = nodes_before - len(graph.nodes)
        removed_tensors = tensors_before - len(graph.tensors())
        notes = []
        if ctx.explain and removed_nodes:
            notes.append(f"removed {removed_nodes} nodes whose results no output uses")
        return PassResult(
            changed=removed_nodes > 0 or removed_tensors > 0,
            stats={"removed": removed_nodes, "removed_tensors": removed_tensors},
            notes=notes,
        )

"""Cheap constant folding with onnx-graphsurgeon, meant for the graph after re-rolling.

Folding evaluates constant subgraphs with ONNX Runtime. It works on a copy of the graph,
so that when folding fails half way the original graph is kept and a note says why.
Above ``skip_above_nodes`` it does nothing (folding a 100k-node unrolled graph is slow and
is not what this pass is for: run it after the scans are re-rolled).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER

from passes.base import Option, Pass, PassContext, PassResult
from passes.graph_io import graph_is_topologically_sorted, replace_graph_contents
from passes.one_line import one_line
from passes.registry import register_pass


@register_pass
class FoldConstants(Pass):
    name = "fold-constants"
    description = "fold constant subgraphs (and shapes) into initializers; keeps the graph on failure"

    skip_above_nodes = Option(int, 50000, "do nothing on graphs with more nodes (folding a huge unrolled graph is slow)",
                              min=0)
    # A folded Expand/Tile can make the file huge.
    size_threshold_bytes = Option(int, 16 << 20, "do not fold tensors larger than this many bytes", min=0)
    fold_shapes = Option(bool, True, "also fold Shape ops on static shapes")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        nodes_before = len(graph.nodes)
        if nodes_before > self.skip_above_nodes:
            return PassResult(False, {"folded": 0, "skipped": "too many nodes"},
                              [f"skipped: {nodes_before} nodes > skip_above_nodes={self.skip_above_nodes}"])
        working = graph.copy()
        previous_severity = G_LOGGER.severity
        G_LOGGER.severity = G_LOGGER.ERROR  # gs warns per unfoldable node; we report a summary
        try:
            if not graph_is_topologically_sorted(working):
                working.toposort()
            working.fold_constants(fold_shapes=self.fold_shapes, error_ok=True,
                                   size_threshold=self.size_threshold_bytes)
            working.cleanup(remove_unused_graph_inputs=False)
        except Exception as error:  # folding is optional: never fail the pipeline for it
            reason = one_line(error, limit=300)
            return PassResult(False, {"folded": 0}, [f"constant folding failed: {reason}; graph left unfolded"])
        finally:
            G_LOGGER.severity = previous_severity
        folded = nodes_before - len(working.nodes)
        if folded <= 0:
            return PassResult(False, {"folded": 0})
        replace_graph_contents(graph, working)
        return PassResult(True, {"folded": folded})

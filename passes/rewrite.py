"""The one find / check / replace loop, for passes that replace single nodes.

A ``NodeRewrite`` pass says only what is particular to it, as onnxscript's rewrite rules do:

    matches(node)               which nodes are candidates (default: ``node.op == self.op``);
    check(node, shapes)         a plan for the replacement, or ``Kept("why")`` to leave the node
                                alone with a note (``Kept()`` leaves it silently); with
                                ``graph_outputs=True`` in the class line, ``check(node, shapes,
                                graph_outputs)``, the names of the graph's outputs as a third;
    replace(b, node, plan, out) build the replacement with the GraphBuilder ``b``, writing its
                                result into ``out`` (the node's old output tensor).

``self.opset`` is the model's opset (of the default domain), set before the first ``check``.

The loop, here only: collect candidates first (the graph changes under it), infer shapes once
if the pass asks (``shape_source``) and a candidate exists, detach each replaced node, give
new nodes names ``<pass>/<node name>`` and the input's dtype for float constants, clean up
and sort once at the end, count what changed and what was kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, PassResult
from passes.graph_builder import GraphBuilder, taken_prefixes
from passes.static_shapes import partial_shapes, static_shapes, symbolic_partial_shapes
from patterns.graph_query import describe, element_type, toposort

# "symbolic": partial shapes completed by ONNX Runtime's symbolic inference (sizes computed by Shape arithmetic).
_SHAPE_SOURCES = {"static": static_shapes, "partial": partial_shapes, "symbolic": symbolic_partial_shapes}


@dataclass(frozen=True)
class Kept:
    """``check``'s answer for a node left as it is; ``note`` (if any) tells the user why."""

    note: str = ""


class NodeRewrite(Pass):
    """Subclasses say what they need in the class line:
    ``class CumSumToMatMul(NodeRewrite, op="CumSum", shapes="partial", routine_keeps=True)``."""

    op: ClassVar[Optional[str]] = None          # the op type of candidates, for the default ``matches``
    shape_source: ClassVar[Optional[str]] = None  # "static", "partial" or "symbolic": shapes handed to ``check``
    counted_as: ClassVar[str] = "rewritten"     # the headline stat
    # Keeps that are routine (an Einsum that is a real contraction): counted as "kept", and
    # their notes shown only with --explain. Otherwise every note is shown.
    routine_keeps: ClassVar[bool] = False
    # ``check`` also takes the graph's output names (a tensor there outlives any rewrite).
    checks_graph_outputs: ClassVar[bool] = False

    def __init_subclass__(cls, op: Optional[str] = None, shapes: Optional[str] = None,
                          counted_as: Optional[str] = None, routine_keeps: Optional[bool] = None,
                          graph_outputs: Optional[bool] = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if shapes is not None and shapes not in _SHAPE_SOURCES:
            raise TypeError(f"{cls.__name__}: shapes must be one of {', '.join(_SHAPE_SOURCES)}, got {shapes!r}")
        for attribute, value in (("op", op), ("shape_source", shapes), ("counted_as", counted_as),
                                 ("routine_keeps", routine_keeps), ("checks_graph_outputs", graph_outputs)):
            if value is not None:
                setattr(cls, attribute, value)

    def matches(self, node: gs.Node) -> bool:
        return node.op == self.op

    def check(self, node: gs.Node, shapes: dict[str, Any]) -> Any:
        return None

    @staticmethod
    def left_alone(node: gs.Node, why: str) -> Kept:
        return Kept(f"{describe(node)} left alone: {why}")

    def replace(self, b: GraphBuilder, node: gs.Node, plan: Any, output: gs.Variable) -> Optional[dict[str, Any]]:
        """Build the replacement; may return figures about this site for ``summarize``
        (a "note" entry among them is shown with --explain)."""
        raise NotImplementedError

    def summarize(self, rewritten: int, kept: int, sites: list[dict[str, Any]]) -> dict[str, Any]:
        """The pass's stats from its counts and the figures each ``replace`` returned."""
        stats = {self.counted_as: rewritten}
        if self.routine_keeps:
            stats["kept"] = kept
        return stats

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        self.opset = ctx.opset
        candidates = [node for node in graph.nodes if self.matches(node)]
        shapes = _SHAPE_SOURCES[self.shape_source](graph) if candidates and self.shape_source else {}
        facts = (shapes, frozenset(tensor.name for tensor in graph.outputs)) if self.checks_graph_outputs else (shapes,)
        notes: list[str] = []
        sites: list[dict[str, Any]] = []
        kept = 0
        prefix = self.name.replace("-", "_")
        taken: Optional[set[str]] = None   # the graph's name prefixes, found once (passes/graph_builder.py)
        for index, node in enumerate(candidates):
            plan = self.check(node, *facts)
            if isinstance(plan, Kept):
                kept += 1
                if plan.note:
                    notes.append(plan.note)
                continue
            x, output = node.inputs[0], node.outputs[0]
            dtype = element_type(x) or np.float32
            taken = taken_prefixes(graph) if taken is None else taken
            builder = GraphBuilder(graph, ctx.opset, prefix=f"{prefix}/{node.name or index}", dtype=dtype, taken=taken)
            node.outputs.clear()  # the replacement writes into `output`; the node is now dead
            site = self.replace(builder, node, plan, output) or {}
            node.inputs.clear()
            if "note" in site and ctx.explain:
                notes.append(site["note"])
            sites.append(site)
        if sites:
            toposort(graph.cleanup(remove_unused_graph_inputs=False))
        return PassResult(bool(sites), self.summarize(len(sites), kept, sites),
                          notes if ctx.explain or not self.routine_keeps else [])

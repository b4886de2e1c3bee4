"""Concat(A, Slice(A)), A = Concat(p, q, ...) on the same axis and the Slice not cutting that axis,
becomes one Concat(p, q, ..., Slice(p), Slice(q), ...).

VMamba's cross-scan is this: A = [x, x^T] stacked on the direction axis, then [A, flip(A)] with
the flip a step -1 Slice along the sequence. ONNX Runtime copies A once into its own buffer and
once more into the outer Concat; with the parts sliced one by one A is never built (a Slice that
keeps every element of the concat axis is the Concat of the same Slice of each part, so the
result is the same tensor, bit for bit). VMamba-T `cpu` graph, dev 2-core, 2 threads, one
interleaved ORT-profiler run under load from other jobs (sums of per-node minima): the
cross-scan's Slices and Concats 9.3 -> 7.5 ms (docs/BENCHMARKS.md).

Only where A dies with it: A used by nothing but the outer Concat and such Slices (each used
only by the outer Concat), else the copy of A stays and the rewrite would add one.
"""
from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import normalize_axis, producer, slice_operands


def _concat_axis(node: gs.Node, rank: int) -> Optional[int]:
    return normalize_axis(int(node.attrs.get("axis", 0)), rank)


@register_pass
class SlicePartsBeforeConcat(NodeRewrite, op="Concat", shapes="partial", graph_outputs=True):
    name = "slice-parts-before-concat"
    description = ("Concat(A, Slice(A)), A a Concat on the same axis, as one Concat of A's parts and their "
                   "Slices (the cross-scan's [x, x^T] never copied on its own)")

    def check(self, outer: gs.Node, shapes, graph_outputs: frozenset[str]) -> Kept | list:
        """The plan: the new Concat's inputs in order, each (tensor, the Slice to apply to it or None)."""
        out_shape = shapes.get(outer.outputs[0].name)
        if out_shape is None:
            return Kept()
        rank = len(out_shape)
        axis = _concat_axis(outer, rank)
        if axis is None:
            return Kept()
        # inner Concats on the same axis feeding the outer one, directly or through a Slice
        inners: dict[int, gs.Node] = {}
        sliced: dict[int, tuple[gs.Node, gs.Node]] = {}   # outer input index -> (Slice, inner Concat)
        for index, tensor in enumerate(outer.inputs):
            node = producer(tensor)
            if node is None:
                continue
            if node.op == "Concat" and _concat_axis(node, rank) == axis:
                inners[id(node)] = node
            elif node.op == "Slice":
                inner = producer(node.inputs[0])
                operands = slice_operands(node)
                if inner is None or inner.op != "Concat" or _concat_axis(inner, rank) != axis or operands is None:
                    continue
                if any(normalize_axis(int(a), rank) == axis for a in operands[2]):
                    continue   # cuts the concat axis: not the same Slice on every part
                if any(consumer is not outer for consumer in node.outputs[0].outputs):
                    continue
                sliced[index] = (node, inner)
                inners[id(inner)] = inner
        if not sliced:
            return Kept()
        rewritten_slices = {id(slice_node) for slice_node, _ in sliced.values()}
        for inner in inners.values():
            if any(consumer is not outer and id(consumer) not in rewritten_slices
                   for consumer in inner.outputs[0].outputs) or inner.outputs[0].name in graph_outputs:
                return self.left_alone(outer, "the inner Concat has other users: slicing its parts would add a copy")
        flattened = {id(inner) for _, inner in sliced.values()}   # the inner Concats that die
        parts: list[tuple[gs.Tensor, Optional[gs.Node]]] = []
        for index, tensor in enumerate(outer.inputs):
            source = producer(tensor)
            if index in sliced:
                slice_node, inner = sliced[index]
                parts.extend((part, slice_node) for part in inner.inputs)
            elif source is not None and id(source) in flattened:
                parts.extend((part, None) for part in source.inputs)
            else:
                parts.append((tensor, None))
        return parts

    def replace(self, b: GraphBuilder, node: gs.Node, plan: list, output: gs.Variable) -> None:
        inputs = [part if slice_node is None else b.node("Slice", [part] + list(slice_node.inputs[1:]))
                  for part, slice_node in plan]
        b.node("Concat", inputs, {"axis": int(node.attrs.get("axis", 0))}, output=output)

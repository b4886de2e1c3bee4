"""Reshape around every CumSum whose input has more than 4 dimensions.

tpu-mlir asserts ``num_dims <= 4`` in CumSum.cpp (the seed's in-chunk cumsums are 5-D, like
24x1x4x64x1). A CumSum only couples elements along its axis, so the axes before it merge into
one and the axes after it into another: ``Reshape -> CumSum over axis 2 of [1, pre, L, post]
-> Reshape back``. ``pre`` goes to C, the axis BM1684X spreads over its 64 NPU lanes (a sum
along C itself is the costly case for split-cumsum's size limit). Needs the static shape.
"""
from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from passes.base import Option
from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import cumsum_shape_and_axis


@register_pass
class CumSumRank4(NodeRewrite, op="CumSum", shapes="static", counted_as="reshaped"):
    name = "cumsum-rank4"
    description = "reshape CumSum inputs of rank > 4 to (1, before, axis, after) and back"

    max_rank = Option(int, 4, "largest CumSum input rank left alone (a CumSum needs [before, axis, after])", min=3)

    def check(self, node: gs.Node, shapes) -> Kept | tuple:
        known = shapes.get(node.inputs[0].name) or node.inputs[0].shape
        rank = len(known) if known is not None else None
        if rank is not None and rank <= self.max_rank:
            return Kept()
        found = cumsum_shape_and_axis(node, shapes)
        return self.left_alone(node, f"{found}{f' (rank {rank})' if rank else ''}") if isinstance(found, str) else found

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple, output: gs.Variable) -> None:
        shape, axis = plan
        merged = [math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])]
        if self.max_rank >= 4:
            merged.insert(0, 1)
        # exclusive and reverse act along the axis alone, which the reshape keeps: carried over as they are
        # (dropping them made a reversed 5-D CumSum a forward one: rel L2 1.4, exit 0 with --verify none).
        direction = {name: node.attrs[name] for name in ("exclusive", "reverse") if node.attrs.get(name, 0)}
        summed = b.node("CumSum", [b.reshape(node.inputs[0], merged), b.ints(len(merged) - 2)], direction)
        b.node("Reshape", [summed, b.ints(list(shape))], output=output)

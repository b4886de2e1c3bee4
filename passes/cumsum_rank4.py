"""Reshape around every CumSum whose input has more than 4 dimensions.

tpu-mlir asserts ``num_dims <= 4`` in CumSum.cpp (the seed's in-chunk cumsums are 5-D, like
24x1x4x64x1). A CumSum only couples elements along its axis, so the axes before it merge into
one and the axes after it into another: ``Reshape -> CumSum over axis 2 of [1, pre, L, post]
-> Reshape back``. ``pre`` goes to C, the axis BM1684X spreads over its 64 NPU lanes (a sum
along C itself is the costly case for split-cumsum's size limit). Needs the static shape.
"""
from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Option, Pass, PassContext, PassResult
from passes.registry import register_pass
from passes.graph_builder import GraphBuilder
from passes.static_shapes import static_shapes
from patterns.graph_query import cumsum_axis, describe


@register_pass
class CumSumRank4(Pass):
    name = "cumsum-rank4"
    description = "reshape CumSum inputs of rank > 4 to (1, before, axis, after) and back"

    max_rank = Option(int, 4, "largest CumSum input rank left alone (a CumSum needs [before, axis, after])", min=3)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        cumsums = [n for n in graph.nodes if n.op == "CumSum"]
        if not cumsums:
            return PassResult(False, {"reshaped": 0})
        shapes = static_shapes(graph)
        notes, reshaped = [], 0
        for index, node in enumerate(cumsums):
            shape = shapes.get(node.inputs[0].name)
            if shape is None:
                rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else None
                if rank is None or rank > self.max_rank:
                    notes.append(f"{describe(node)} left alone: input shape not static"
                                 f"{f' (rank {rank})' if rank else ''}")
                continue
            if len(shape) <= self.max_rank:
                continue
            axis = cumsum_axis(node, len(shape))
            if axis is None:
                notes.append(f"{describe(node)} left alone: axis is not a constant")
                continue
            dtype = getattr(node.inputs[0], "dtype", None) or np.float32
            b = GraphBuilder(graph, ctx.opset, prefix=f"cumsum_rank4/{node.name or index}", dtype=dtype)
            x, output = node.inputs[0], node.outputs[0]
            merged = [math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])]
            if self.max_rank >= 4:
                merged.insert(0, 1)
            node.outputs.clear()
            summed = b.cumsum(b.reshape(x, merged), len(merged) - 2)
            b.node("Reshape", [summed, b.ints(list(shape))], output=output)
            node.inputs.clear()
            reshaped += 1
        if reshaped:
            graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return PassResult(reshaped > 0, {"reshaped": reshaped}, notes)

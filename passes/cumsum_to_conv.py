"""CumSum over the last axis of a 4-D tensor -> a depthwise Conv with a (1, L) kernel of ones.

For tpu-mlir on BM1684X. After drop-unit-axes a chunked scan's in-chunk CumSums are
(1, channels, chunks, Q) summed over Q. As a MatMul by a triangular ones matrix
(cumsum-to-matmul) tpu-mlir runs them as global ops, DDR to DDR (a (1, 768, 98, 32) one: 0.83
ms of 34 on VMamba-T, BF16); a depthwise Conv joins the layer group of the ops around it. With
the input padded by L - 1 zeros on the left, output j is x_0 + ... + x_j: the inclusive sum.
tpu-mlir's Conv takes pads up to 15 itself; a larger one became a separate global Pad in the
measurement (Q = 32: 50.1 ms, worse than the MatMul), hence `max_length` 16.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Option
from passes.cumsum_checks import inclusive_cumsum
from passes.graph_builder import MAX_INDEX_TABLE, GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite


@register_pass
class CumSumToConv(NodeRewrite, op="CumSum", shapes="static", routine_keeps=True):
    name = "cumsum-to-conv"
    description = "rewrite CumSum over the last axis of a 4-D tensor as a depthwise Conv with a (1, L) kernel of ones"

    max_length = Option(int, 16, "longest summed axis rewritten (the Conv pads it by length - 1 on the left)", min=2)

    def check(self, node: gs.Node, shapes) -> Kept | tuple:
        known = inclusive_cumsum(node, shapes)
        if isinstance(known, Kept):
            return known
        shape, axis = known
        if len(shape) != 4 or axis % 4 != 3:
            return Kept(f"CumSum '{node.name}' kept: not over the last axis of a 4-D tensor (shape {list(shape)}, axis {axis})")
        if shape[3] > self.max_length:
            return Kept(f"CumSum '{node.name}' kept: summed axis length {shape[3]} > {self.max_length}")
        if shape[1] * shape[3] > MAX_INDEX_TABLE:
            return Kept(f"CumSum '{node.name}' kept: a kernel of {shape[1]} x {shape[3]} ones, more than the "
                        f"{MAX_INDEX_TABLE} values a constant made from declared dims may hold")
        return shape

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple, output: gs.Variable) -> None:
        channels, length = plan[1], plan[3]
        ones = b.const(np.ones((channels, 1, 1, length), dtype=b.dtype))
        b.node("Conv", [node.inputs[0], ones], {"group": channels, "kernel_shape": [1, length],
                                                "pads": [0, length - 1, 0, 0], "strides": [1, 1]}, output=output)

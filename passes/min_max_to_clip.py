"""Min or Max of a tensor and a scalar constant becomes a Clip: min(x, c) = Clip(x, max=c),
max(x, c) = Clip(x, min=c). Exact for finite x.

For many threads. ONNX Runtime 1.30 runs a broadcasting Min as a slow element loop that does not
gain from threads, Clip as a vectorised one: softplus-to-exp-log's Min(x, 20) on a [1, 768, 3136]
stage-0 tensor of VMamba-T took 0.99 ms at 16 threads and 1.22 ms at 2 as Min, 0.23 and 0.63 ms as
Clip (16-core host, one interleaved run, medians of 21); the whole `cpu-many` graph 137.5 -> 125.1 ms
at 16 threads (15 rounds), 327 -> 317 ms at 2 threads pinned (7 rounds; docs/BENCHMARKS.md, 16-core
notes).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import constant_value

FLOAT_TYPES = (np.float16, np.float32, np.float64)
# ONNX Runtime's Clip takes double from opset 12 (float only before; Clip-6's bounds are float
# attributes, not exact for a double bound).
DOUBLE_CLIP_OPSET = 12


@register_pass
class MinMaxToClip(NodeRewrite):
    name = "min-max-to-clip"
    description = "Min or Max of a tensor and a scalar constant as a Clip (ONNX Runtime's Clip is vectorised)"

    def matches(self, node: gs.Node) -> bool:
        return node.op in ("Min", "Max") and len(node.inputs) == 2

    def check(self, node: gs.Node, shapes) -> Kept | tuple:
        for tensor_index in (0, 1):
            bound = constant_value(node.inputs[1 - tensor_index])
            x = node.inputs[tensor_index]
            if bound is None or bound.size != 1 or bound.dtype.type not in FLOAT_TYPES:
                continue
            if bound.dtype.type is np.float64 and self.opset < DOUBLE_CLIP_OPSET:
                return Kept()
            if constant_value(x) is not None:
                return Kept()     # both constants: fold-constants' business
            # Clip's bound is a scalar: the output keeps x's shape only if the constant adds no axes.
            if bound.ndim > 0 and (x.shape is None or bound.ndim > len(x.shape)):
                return Kept()
            return x, bound.reshape(())
        return Kept()

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple, output: gs.Variable) -> None:
        x, bound = plan
        if b.opset >= 11:
            lower = b.const(bound) if node.op == "Max" else gs.Variable.empty()
            upper = b.const(bound) if node.op == "Min" else None
            b.node("Clip", [x, lower] + ([upper] if upper is not None else []), output=output)
        else:
            attrs = {"max": float(bound)} if node.op == "Min" else {"min": float(bound)}
            b.node("Clip", [x], attrs, output=output)

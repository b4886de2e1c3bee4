"""Softplus(x) -> Relu(x) + Log(1 + Exp(-|x|)).

ONNX Runtime's CPU Softplus kernel costs ~30x an Exp (14.9 ms vs 0.49 ms over 1.2M floats on
the 2-core machine); the rewritten form is exact to ~4e-8 and cannot overflow: exp(-|x|) <= 1.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import NodeRewrite


@register_pass
class SoftplusToExpLog(NodeRewrite, op="Softplus"):
    name = "softplus-to-exp-log"
    description = "rewrite Softplus as Relu(x) + Log(1 + Exp(-|x|)), ~4x cheaper on ONNX Runtime CPU"

    def replace(self, b: GraphBuilder, node: gs.Node, plan: None, output: gs.Variable) -> None:
        x = node.inputs[0]
        tail = b.log(b.add(b.scalar(1.0), b.exp(b.neg(b.abs(x)))))
        b.node("Add", [b.relu(x), tail], output=output)

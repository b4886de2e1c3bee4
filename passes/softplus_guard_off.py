"""PyTorch's softplus threshold guard off: Where(Greater(x, T), x, Softplus(x)) -> Softplus(x), T >= 17.

The dynamo exporter writes ``F.softplus(x)`` (beta 1, threshold 20) with PyTorch's guard, the TorchScript exporter a
bare Softplus. Past T >= 17, 1 + e^x rounds to e^x in float32, so Softplus(x) is x there already (ONNX Runtime's
Softplus is x + log1p(e^-x) for x > 0: no overflow) and the guard picks what the Softplus gives: the same graph as the
TorchScript export's. Why the tpu pipelines want it: tpu-mlir 1.30.2's INT8 lowering (``SelectiveWhere`` in
convert-top-to-tpu) gives a Where's branches the Where's calibrated range unless the Where is F32 or F16 in the
quantization table; kept BF16 (tools.tpu_qtable's float mode) it gave the guard's x, VMamba's dt projection
(range +-6.9), the softplus range [0, 0.11] as u8, and the projection's INT8 output read as all zeros: the dynamo
export of micro-digits agreed with PyTorch on 90% of 20 held-out digits where the TorchScript export agreed on all
(docs/TPU.md, session s26). The guard's shared x (three readers) is what the pattern never expected.

Where the Softplus output is read by the guard alone (``patterns.softplus_guard``, with which softplus-to-exp-log drops the
same guard); the Softplus writes the guard's output tensor, a graph output too.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.softplus_guard import threshold_guard


@register_pass
class SoftplusGuardOff(NodeRewrite, op="Softplus", graph_outputs=True, counted_as="guards_removed"):
    name = "softplus-guard-off"
    description = "Where(Greater(x, T), x, Softplus(x)) with T >= 17 as Softplus(x), exactly (tpu-mlir's INT8 Where)"

    def check(self, node: gs.Node, shapes, graph_outputs: frozenset[str]) -> Kept | gs.Node:
        # A bare Softplus (the TorchScript export's) is what this pass writes: left silently.
        return threshold_guard(node, graph_outputs) or Kept()

    def replace(self, b: GraphBuilder, node: gs.Node, guard: gs.Node, output: gs.Variable) -> None:
        # The Softplus writes the guard's output; the guard and its Greater are dead.
        guarded = guard.outputs[0]
        guard.outputs.clear()
        guard.inputs.clear()
        b.node("Softplus", [node.inputs[0]], output=guarded)

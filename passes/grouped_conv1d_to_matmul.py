"""Grouped pointwise Conv1ds become one batched MatMul over the groups.

VMamba's x_proj (and dt_proj) project the four scan directions at once as 1-D Convs with kernel 1
and group K = 4 over the (B, K*D, L) layout. As

    Conv(x, W, b)  ->  Reshape(MatMul(W_g, Reshape(x, [0, K, D, -1])) + b_g, [0, K*Co, -1])

with W_g the (K, Co, D) weight and b_g the (K, Co, 1) bias, they are one GEMM per group on MLAS
(ONNX Runtime's multi-threaded matrix product) instead of its grouped Conv. The two Reshapes are
views of contiguous data. The sums run in another order than the Conv's: equal to float32 rounding.

Only constant-weight Convs with kernel 1, group > 1, stride 1, no padding or dilation, a rank-3
input and at least `min_channels_in` input channels per group are rewritten: a GEMM this thin is
slower than the Conv. On the 16-core host (ONNX Runtime 1.30, 16 threads, one op per model, medians
of 21 interleaved rounds, session s16): x_proj of stage 0 (4 groups of 192 -> 8 channels, L 3136)
1.19 -> 0.77 ms as the MatMul; dt_proj (4 groups of 6 -> 192) 0.98 -> 2.38 ms.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Option, Pass, PassContext, PassResult
from passes.graph_builder import GraphBuilder, taken_prefixes
from passes.registry import register_pass
from patterns.graph_query import toposort


def _is_grouped_pointwise_conv1d(node: gs.Node, min_channels_in: int) -> bool:
    if node.op != "Conv" or len(node.inputs) < 2 or node.domain:
        return False
    weight = node.inputs[1]
    if not isinstance(weight, gs.Constant) or weight.values.ndim != 3 or weight.values.shape[2] != 1:
        return False
    if len(node.inputs) > 2 and not isinstance(node.inputs[2], gs.Constant):
        return False
    attrs, groups = node.attrs, node.attrs.get("group", 1)
    channels_out = weight.values.shape[0]
    return (groups > 1 and channels_out % groups == 0 and weight.values.shape[1] >= min_channels_in
            and list(attrs.get("strides", [1])) == [1] and list(attrs.get("pads", [0, 0])) == [0, 0]
            and list(attrs.get("dilations", [1])) == [1] and attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"))


@register_pass
class GroupedConv1dToMatMul(Pass):
    name = "grouped-conv1d-to-matmul"
    description = "grouped 1-D Convs of kernel 1 (VMamba's x_proj) as one batched MatMul over the groups"

    min_channels_in = Option(int, 64, "rewrite only Convs with at least this many input channels per group", min=1)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        convs = [node for node in graph.nodes if _is_grouped_pointwise_conv1d(node, self.min_channels_in)]
        taken = taken_prefixes(graph) if convs else set()   # one scan of the names, not one per Conv
        for node in convs:
            weight = node.inputs[1].values
            groups = node.attrs["group"]
            out_per_group, in_per_group = weight.shape[0] // groups, weight.shape[1]
            b = GraphBuilder(graph, ctx.opset, prefix=f"grouped_conv1d_to_matmul/{node.name}", dtype=weight.dtype,
                             taken=taken)
            output = node.outputs[0]
            node.outputs.clear()
            # (N, groups * in, L) -> (N, groups, in, L): 0 keeps the batch as it is (symbolic too)
            grouped = b.reshape(node.inputs[0], [0, groups, in_per_group, -1])
            weights = b.const(np.ascontiguousarray(weight.reshape(groups, out_per_group, in_per_group)))
            product = b.matmul(weights, grouped)                            # (N, groups, out, L)
            if len(node.inputs) > 2:
                bias = node.inputs[2].values.reshape(groups, out_per_group, 1)
                product = b.add(product, b.const(np.ascontiguousarray(bias)))
            b.node("Reshape", [product, b.ints([0, groups * out_per_group, -1])], output=output)
        if convs:
            toposort(graph.cleanup())
        return PassResult(changed=bool(convs), stats={"rewritten": len(convs)})

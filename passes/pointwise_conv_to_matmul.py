"""1x1 Convs become MatMuls over channels-last data, so LayerNorm2d's permutes cancel.

VMamba keeps activations NCHW, and every LayerNorm2d wraps its LayerNormalization in two
Transposes (NCHW -> NHWC and back); the 1x1 Convs after it (in_proj, fc1, fc2, out_proj) are
matrix products over channels. Rewritten as

    Conv(x, W, b)  ->  Transpose_to_NCHW(MatMul(Transpose_to_NHWC(x), W^T) + b)

the Transpose_to_NHWC lands right after LayerNorm2d's own Transpose_to_NCHW: the two are
inverse and both are removed here (consumers read the NHWC tensor directly). What is left
moves once per layout change instead of twice per LayerNorm2d; ONNX Runtime's transpose
optimiser pushes the remaining ones through element-wise ops and cancels more. ORT's
Transposes run single-threaded (docs/BENCHMARKS.md: 26 -> 109 ms from 2 to 16 threads on
VMamba-T), its MatMul is multi-threaded MLAS GEMM.

Only plain 1x1 Convs are rewritten: group 1, stride 1, no padding, no dilation, 4-D input,
constant weight.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, PassResult
from passes.registry import register_pass
from passes.graph_builder import GraphBuilder, taken_prefixes
from patterns.graph_query import producer, toposort

TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def _is_pointwise(node: gs.Node) -> bool:
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if not isinstance(weight, gs.Constant) or weight.values.ndim != 4 or weight.values.shape[2:] != (1, 1):
        return False
    if len(node.inputs) > 2 and not isinstance(node.inputs[2], gs.Constant):
        return False
    attrs = node.attrs
    return (attrs.get("group", 1) == 1 and all(s == 1 for s in attrs.get("strides", [1, 1]))
            and all(p == 0 for p in attrs.get("pads", [0, 0, 0, 0]))
            and all(d == 1 for d in attrs.get("dilations", [1, 1]))
            and attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"))


def _perm(node) -> list[int] | None:
    return list(node.attrs.get("perm", [])) if node is not None and node.op == "Transpose" else None


def cancel_inverse_transposes(graph: gs.Graph) -> int:
    """Transpose(p) feeding Transpose(q) with q o p = identity: consumers of the second read the first's input."""
    cancelled = 0
    for node in list(graph.nodes):
        if node.op != "Transpose" or not node.outputs:
            continue
        first = producer(node.inputs[0])
        p, q = _perm(first), _perm(node)
        if p is None or q is None or len(p) != len(q) or [p[i] for i in q] != list(range(len(q))):
            continue
        source, output = first.inputs[0], node.outputs[0]
        if output in graph.outputs:
            continue
        for consumer in list(output.outputs):
            for index, tensor in enumerate(consumer.inputs):
                if tensor is output:
                    consumer.inputs[index] = source
        node.outputs.clear()
        cancelled += 1
    return cancelled


@register_pass
class PointwiseConvToMatMul(Pass):
    name = "pointwise-conv-to-matmul"
    description = "1x1 Convs as MatMul over channels-last data (Transposes around them); cancel inverse Transpose pairs"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        convs = [n for n in graph.nodes if n.op == "Conv" and _is_pointwise(n)]
        taken = taken_prefixes(graph) if convs else set()   # one scan of the names, not one per Conv
        for node in convs:
            weight = node.inputs[1].values
            b = GraphBuilder(graph, ctx.opset, prefix=f"pointwise_conv_to_matmul/{node.name}", dtype=weight.dtype,
                             taken=taken)
            output = node.outputs[0]
            node.outputs.clear()
            channels_last = b.transpose(node.inputs[0], TO_NHWC)
            product = b.matmul(channels_last, b.const(np.ascontiguousarray(weight[:, :, 0, 0].T)))
            if len(node.inputs) > 2:
                product = b.add(product, node.inputs[2])
            b.transpose(product, TO_NCHW, output=output)
        cancelled = cancel_inverse_transposes(graph) if convs else 0
        if convs:
            toposort(graph.cleanup())
        return PassResult(changed=bool(convs), stats={"rewritten": len(convs), "transposes_cancelled": cancelled})

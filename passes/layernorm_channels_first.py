"""LayerNorm2d without its permutes: Transpose(NCHW->NHWC), LayerNormalization over C,
Transpose back -> the same normalisation over axis 1 of the NCHW tensor.

VMamba's LayerNorm2d wraps a LayerNormalization (last axis) in two Transposes. tpu-mlir runs
each Transpose as a global Permute, DDR to DDR: on VMamba-T (BF16, BM1684X) the Permutes took
5.1 of 27.5 ms, most of them these pairs. Written out over the channel axis,

    mean = Conv(x, 1/C), d = x - mean, var = Conv(d * d, 1/C),   (a 1x1 Conv from C channels to 1)
    y = d / Sqrt(var + epsilon) * scale + bias                    (scale, bias as (C, 1, 1))

every op stays in NCHW; ONNX's LayerNormalization (stash_type 1) computes the same in float32.
A (1, 192, 56, 56) one between two 1x1 Convs, BF16: 0.462 ms with the permutes, 0.325 ms with
ReduceMeans over C, 0.152 ms with the means as Convs.
In the `tpu` pipeline: BF16 VMamba-T 27.4 -> 21.5 ms (docs/TPU.md). tpu-mlir's deploy turns the
Div by Sqrt into a Mul by an Rsqrt op of its own (`<Sqrt op>_inv`); tools.tpu_qtable keeps that
in float for INT8 too (left INT8 it saturated: micro-digits' INT8 top-1 fell to 80%).

Only a LayerNormalization over the last axis with constant scale (and bias), read back to NCHW
by a Transpose, whose input has a channels-first form in the graph.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Option, PassContext, PassResult
from passes.graph_builder import MAX_INDEX_TABLE, GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import producer

TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


@register_pass
class LayerNormChannelsFirst(NodeRewrite, op="Transpose", counted_as="rewritten", routine_keeps=True):
    name = "layernorm-channels-first"
    description = "Transpose(to NHWC), LayerNormalization over C, Transpose(to NCHW) -> the normalisation over axis 1 in NCHW"
    # x - mean as one 1x1 Conv by (I - 1/C) rather than a Conv to the mean and a Sub: no tensor of
    # the means, which is float noise wherever the true means are ~0, as for a LayerNorm2d that reads
    # another's output (VMamba's stage entries; exactly 0 with a random init's scale 1, bias 0), and
    # which tpu-mlir's ONNX-vs-MLIR check then fails on (docs/TPU.md). 'matrix-after-norm' does it
    # only there: the (C, C) weights cost VMamba-T 0.5 ms when every LayerNorm2d has them.
    centring = Option(str, "mean", "x - mean as a Conv to the mean then Sub ('mean'), as one Conv by I - 1/C "
                      "('matrix'), or that only where the input is another LayerNormalization's output "
                      "('matrix-after-norm')", choices=("mean", "matrix", "matrix-after-norm"))

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        # Each channels-last tensor's channels-first twin, found before any rewrite detaches a Transpose:
        # the input of the Transpose that made it, or the output of a Transpose back that reads it. A
        # stage's first LayerNorm2d feeds a second one channels-last (VMamba's patch embedding or
        # downsampling norm, then the first block's norm); its input is found the second way.
        self._channels_first: dict[str, gs.Tensor] = {}
        for node in graph.nodes:
            if node.op == "Transpose" and list(node.attrs.get("perm", [])) == TO_NHWC:
                self._channels_first[node.outputs[0].name] = node.inputs[0]
        for node in graph.nodes:
            if node.op == "Transpose" and list(node.attrs.get("perm", [])) == TO_NCHW:
                self._channels_first.setdefault(node.inputs[0].name, node.outputs[0])
        self._normalised = {node.outputs[0].name for node in graph.nodes if node.op == "LayerNormalization"}
        return super().run(graph, ctx)

    def matches(self, node: gs.Node) -> bool:
        """A Transpose back to NCHW of a LayerNormalization's output."""
        if node.op != "Transpose" or list(node.attrs.get("perm", [])) != TO_NCHW:
            return False
        norm = producer(node.inputs[0])
        return norm is not None and norm.op == "LayerNormalization"

    def check(self, node: gs.Node, shapes) -> Kept | tuple:
        norm = producer(node.inputs[0])
        source = self._channels_first.get(norm.inputs[0].name)
        if source is None:
            return self.left_alone(node, "the LayerNormalization's input has no channels-first form in the graph")
        if norm.attrs.get("axis", -1) not in (-1, 3):
            return self.left_alone(node, f"LayerNormalization axis {norm.attrs.get('axis')} is not the last")
        params = norm.inputs[1:3]
        if not params or not all(isinstance(p, gs.Constant) for p in params):
            return self.left_alone(node, "LayerNormalization scale or bias is not a constant")
        by_matrix = self.centring == "matrix" or (self.centring == "matrix-after-norm"
                                                  and norm.inputs[0].name in self._normalised)
        # The (C, C) matrix grows with the square of the stored scale: past the table limit, the mean.
        by_matrix = by_matrix and params[0].values.size ** 2 <= MAX_INDEX_TABLE
        return source, params, float(norm.attrs.get("epsilon", 1e-5)), by_matrix

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple, output: gs.Variable) -> None:
        x, params, epsilon, by_matrix = plan
        scale = params[0].values.reshape(-1, 1, 1)
        # The means over C as 1x1 Convs to one channel (weights 1/C): tpu-mlir runs a Conv in a layer
        # group, while its ReduceMean over C was 2x slower in the measurement (docs/TPU.md).
        channels = scale.shape[0]
        average = b.const(np.full((1, channels, 1, 1), 1.0 / channels, dtype=b.dtype))
        if by_matrix:
            centring = np.eye(channels, dtype=b.dtype) - np.full((channels, channels), 1.0 / channels, dtype=b.dtype)
            centred = b.node("Conv", [x, b.const(centring.reshape(channels, channels, 1, 1))])
        else:
            centred = b.sub(x, b.node("Conv", [x, average]))
        variance = b.node("Conv", [b.mul(centred, centred), average])
        normalised = b.div(centred, b.node("Sqrt", [b.add(variance, b.scalar(epsilon))]))
        if len(params) > 1:
            scaled = b.mul(normalised, b.const(scale.astype(b.dtype)))
            b.node("Add", [scaled, b.const(params[1].values.reshape(-1, 1, 1).astype(b.dtype))], output=output)
        else:
            b.node("Mul", [normalised, b.const(scale.astype(b.dtype))], output=output)

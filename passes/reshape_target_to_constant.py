"""A Reshape whose target is computed from shapes becomes a Reshape to a constant target, -1 at the one
size that is not known until run time (the batch).

A dynamic-batch export writes x.view(B, C, -1) as Reshape(x, Concat(Slice(Shape(x), 0, 2), [-1])): three
to five small ops that ONNX Runtime runs one after another on its CPU before the Reshape can start. Where
shape inference (ONNX Runtime's symbolic inference: it follows Shape/Slice/Concat arithmetic) knows every
size of the Reshape's output but one, the target [d0, .., -1, .., dn] gives the same tensor for every
input the original accepts: the product of the sizes is the input's element count in both, so -1 is the
size the computed target held. The shape arithmetic left unread is removed by the cleanup after it.
VMamba-T's dynamic-batch graphs become the static export's, op for op: `cpu-many` 1,596 -> 1,348 nodes
(57 targets), `cpu` 1,955 -> 1,713 (59). On a static export it takes the targets that the exporter computed
from static shapes, which onnxsim would fold anyway (the same graph comes out).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from passes.static_shapes import reshape_target
from patterns.graph_query import constant_value


@register_pass
class ReshapeTargetToConstant(NodeRewrite, op="Reshape", shapes="symbolic"):
    name = "reshape-target-to-constant"
    description = "Reshapes to a target computed from shapes (a dynamic batch's) as Reshapes to a constant target"

    def check(self, node: gs.Node, shapes) -> Kept | list[int]:
        if len(node.inputs) != 2 or constant_value(node.inputs[1]) is not None:
            return Kept()
        out_shape = shapes.get(node.outputs[0].name)
        if out_shape is None:
            return self.left_alone(node, "the rank of its output unknown")
        # The output's shape may be only what the model declares (a graph output's): trust it only where the
        # target's own length says the same rank, or a declared scalar would make the target [].
        target_shape = shapes.get(node.inputs[1].name)
        if target_shape is None or len(target_shape) != 1 or target_shape[0] != len(out_shape):
            return self.left_alone(node, f"its target's length not known to be its output's rank {len(out_shape)}")
        target = reshape_target(out_shape)
        if target is None:
            return self.left_alone(node, "more than one size of its output unknown, or a size 0")
        return target

    def replace(self, b: GraphBuilder, node: gs.Node, target: list[int], output: gs.Variable) -> None:
        b.node("Reshape", [node.inputs[0], b.ints(target)], output=output)

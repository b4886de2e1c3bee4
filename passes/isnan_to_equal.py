"""IsNaN(x) as Equal(x, x), false exactly where x is NaN: tpu-mlir 1.30.2 has no IsNaN ("Op not support:
{'IsNaN'}" in model_transform), and torch's TorchScript export of scaled_dot_product_attention guards its
softmax with Where(IsNaN(p), 0, p) (the rows a mask leaves empty): every transformers attention layer
exported so (FalconH1, the Bamba / NemotronH / GraniteMoeHybrid / Zamba2 hybrids) carried one.

Where(IsNaN(x), a, b) becomes Where(Equal(x, x), b, a), the branches swapped; an IsNaN read otherwise, or
that is a graph output, becomes Not(Equal(x, x)) (and a Where that also reads it keeps its branches). Exact
for every value of x (NaN is the one value not equal to itself).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite


def _isnan_input(tensor: gs.Tensor):
    """x of tensor = IsNaN(x), or None."""
    producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    return producer.inputs[0] if producer is not None and producer.op == "IsNaN" else None


def _read_only_as_where_condition(node: gs.Node, graph_outputs: frozenset) -> bool:
    """Every reader of IsNaN(x) a Where that reads it as its condition only (or none left: rewritten already),
    and IsNaN(x) no graph output (one would stay, read by no node)."""
    readers = node.outputs[0].outputs
    return node.outputs[0].name not in graph_outputs and all(r.op == "Where" and r.inputs[0] is node.outputs[0]
                                 and all(i is not node.outputs[0] for i in r.inputs[1:]) for r in readers)


@register_pass
class IsNanToEqual(NodeRewrite, graph_outputs=True):
    name = "isnan-to-equal"
    description = "IsNaN(x) as Equal(x, x) (Where's branches swapped), exactly: tpu-mlir has no IsNaN"

    def matches(self, node: gs.Node) -> bool:
        if node.op == "Where" and len(node.inputs) == 3:
            return _isnan_input(node.inputs[0]) is not None
        return node.op == "IsNaN" and len(node.inputs) == 1

    def check(self, node: gs.Node, shapes, graph_outputs: frozenset) -> Kept | tuple[str, gs.Tensor]:
        if node.op == "IsNaN":
            # Read only as Where conditions: those Wheres are rewritten, and this IsNaN is left dead.
            return Kept() if _read_only_as_where_condition(node, graph_outputs) else ("not", node.inputs[0])
        x = _isnan_input(node.inputs[0])   # None once its IsNaN, read otherwise too, became Not(Equal(x, x))
        return Kept() if x is None else ("where", x)

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple[str, gs.Tensor], output: gs.Variable) -> None:
        kind, x = plan
        if kind == "where":
            b.node("Where", [b.node("Equal", [x, x]), node.inputs[2], node.inputs[1]], output=output)
        else:
            b.node("Not", [b.node("Equal", [x, x])], output=output)

"""A -inf mask before an Exp as a finite value whose exp is 0: Exp(Where(c, x, -inf)) with the -inf as -128.

transformers' Mamba2 family (Mamba2, Zamba2, Bamba, NemotronH, FalconH1, GraniteMoeHybrid) computes its chunked SSD's
decays as exp(segsum), segsum masked above the diagonal by ``masked_fill(~mask, -torch.inf)``: both exporters write
Exp(Where(mask, segsum, -inf)). tpu-mlir 1.30.2 compiled it in F32, but its BF16 bmodel of hf-mamba2 gave NaN for every
output (its BF16 Where with a -inf branch: NaN already in the tpu dialect's own inference), and INT8's deploy aborted
("inf in calibration result", then "can't get scale and zeropoint": the Where's calibrated range is infinite); session
s26, docs/GENERALITY.md.

Where the Where's output is read by Exp nodes only (and is no graph output), each -inf of its constant branch becomes
-128: exp(-128) = 2.6e-56 rounds to 0 in float32 and float16 (their smallest subnormals are e^-103.3 and e^-16.6), so
every Exp's output is bitwise what it was. Other element types (float64: exp(-128) is no 0 there) are left alone.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import constant_value

MASK_VALUE = -128.0   # exp of it is 0 in float32 and float16
EXACT_TYPES = (np.float32, np.float16)


def _infinite_branches(node: gs.Node) -> dict[int, np.ndarray]:
    """{input index: value} for Where's constant branches (inputs 1 and 2) that hold a -inf."""
    found = {}
    for index in (1, 2):
        value = constant_value(node.inputs[index])
        if value is not None and value.dtype.kind == "f" and np.isneginf(value).any():
            found[index] = value
    return found


@register_pass
class ExpMaskToFinite(NodeRewrite, graph_outputs=True):
    name = "exp-mask-to-finite"
    description = "Exp(Where(c, x, -inf)): the -inf as -128, whose exp is 0 in float32 (tpu-mlir's BF16/INT8 Where)"

    def matches(self, node: gs.Node) -> bool:
        return node.op == "Where" and len(node.inputs) == 3 and bool(_infinite_branches(node))

    def check(self, node: gs.Node, shapes, graph_outputs: frozenset) -> Kept | dict[int, np.ndarray]:
        output = node.outputs[0]
        readers = [reader.op for reader in output.outputs]
        if output.name in graph_outputs or not readers or any(op != "Exp" for op in readers):
            shown = "a graph output" if output.name in graph_outputs else f"read by {sorted(set(readers)) or 'nothing'}"
            return self.left_alone(node, f"its -inf branch is {shown}, not by Exp alone")
        branches = _infinite_branches(node)
        if any(value.dtype.type not in EXACT_TYPES for value in branches.values()):
            return self.left_alone(node, f"-inf of type {next(iter(branches.values())).dtype}: exp(-128) is no 0 there")
        return {index: np.where(np.isneginf(value), value.dtype.type(MASK_VALUE), value).astype(value.dtype)
                for index, value in branches.items()}

    def replace(self, b: GraphBuilder, node: gs.Node, plan: dict[int, np.ndarray], output: gs.Variable) -> None:
        inputs = [plan[index] if index in plan else tensor for index, tensor in enumerate(node.inputs)]
        b.node("Where", [b.const(value) if isinstance(value, np.ndarray) else value for value in inputs], output=output)

"""Transposes that only move size-1 axes, and reductions over size-1 axes, become Reshapes.

After re-rolling with d_state N = 1, the readout's Transpose (B, D, 1, L) -> (B, D, L, 1) and
its ReduceSum over N are data copies in ONNX Runtime (a full pass over the tensor each),
though neither changes a single value's position in memory. A Reshape is free.
Needs static shapes, except for one unknown dimension (a dynamic batch), which becomes -1.
Shapes come from ONNX Runtime's symbolic inference too: in a dynamic-batch export the scan's
B and C are expanded by a shape computed with Shape and Where, where ONNX's own inference
loses every size, and the readouts' Transposes and ReduceSums stayed (VMamba-T's dynamic-batch
`cpu` graph: 2,209 nodes with 11 ReduceSums, 2,044 and none with this; the static graph's 1,704
were unchanged).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from passes.static_shapes import reshape_target
from patterns.graph_query import node_axes

REDUCTIONS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"}


def transpose_moves_only_unit_axes(shape: tuple, perm: list[int]) -> bool:
    moved = [axis for axis in perm if shape[axis] != 1]
    return moved == sorted(moved)


@register_pass
class UnitAxesToReshape(NodeRewrite, shapes="symbolic"):
    name = "unit-axes-to-reshape"
    description = "turn Transposes that only move size-1 axes, and reductions over size-1 axes, into Reshapes"

    def matches(self, node: gs.Node) -> bool:
        return node.op == "Transpose" or node.op in REDUCTIONS

    def check(self, node: gs.Node, shapes) -> Kept | list[int]:
        in_shape, out_shape = shapes.get(node.inputs[0].name), shapes.get(node.outputs[0].name)
        if in_shape is None or out_shape is None:
            return Kept()
        if node.op == "Transpose":
            perm = list(node.attrs.get("perm", list(reversed(range(len(in_shape))))))
            if sorted(perm) != list(range(len(in_shape))):   # ONNX Runtime refuses it: not ours to make it run
                return self.left_alone(node, f"perm {perm} is not a permutation of its input's {len(in_shape)} axes")
            fits = transpose_moves_only_unit_axes(in_shape, perm)
        else:
            axes = node_axes(node)
            axes = list(range(len(in_shape))) if not axes else [a % len(in_shape) for a in axes]
            fits = all(in_shape[a] == 1 for a in axes)
        target = reshape_target(out_shape) if fits else None
        return Kept() if target is None else target

    def replace(self, b: GraphBuilder, node: gs.Node, target: list[int], output: gs.Variable) -> None:
        b.node("Reshape", [node.inputs[0], b.ints(target)], output=output)

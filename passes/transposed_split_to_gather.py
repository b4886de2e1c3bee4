"""A Split into unit slices along an axis that a Transpose moved becomes one Gather per slice,
taken on the Transpose's input along the axis it came from.

    Split(Transpose(X, perm), ones, axis=a)[q]  =  Unsqueeze(Gather(X, q, axis=perm[a]), [a])

when the Transpose keeps the order of every other axis (it only moves axis perm[a] to a): the
Gather of the scalar q drops that axis and the Unsqueeze puts a size-1 axis back where the Split
had it. Unary element-wise ops between the Transpose and the Split (the scan form's Exp of the
log-decays) commute with it and are applied to X instead. Exact (copies); the Transpose and the
ops after it go once the Split was their only consumer.

For many threads. The parallel scan form moves the chunk position Q to the front (a Transpose)
and cuts it into Q unit slices (a Split). ONNX Runtime 1.30 folds the Transpose into the Split,
which then copies every Q-th element, single-threaded (about 1 ms per Split for a stage-2 scan of
VMamba-T at 16 threads, 3,072 x 196 elements); OpenVINO 2026.4 runs the Transpose as a reference
(single-kernel) copy: 0.7-1.1 ms per stage-0 scan input at 16 threads, the largest layers of its
profile with the Transpose that moves Q back. A Gather per slice is split over the thread pool in
both runtimes. docs/BENCHMARKS.md (16-core section) has the measurements.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import constant_value, describe, producer


def moved_axis(perm: list[int], axis: int) -> Optional[int]:
    """The input axis that Transpose(perm) puts at `axis`, if perm moves only that axis (the
    others keep their order); None otherwise."""
    rest = [p for position, p in enumerate(perm) if position != axis]
    return perm[axis] if rest == sorted(rest) else None


def unit_split_count(node: gs.Node) -> Optional[int]:
    """The number of outputs of a Split whose constant sizes are all 1, else None."""
    if len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].name:
        sizes = constant_value(node.inputs[1])
    else:
        sizes = node.attrs.get("split")
    if sizes is None:
        return None
    sizes = np.asarray(sizes).reshape(-1)
    return len(sizes) if len(sizes) == len(node.outputs) > 0 and bool((sizes == 1).all()) else None


# Element-wise ops of one input: f(Transpose(X)) = Transpose(f(X)).
UNARY_ELEMENTWISE = frozenset({"Exp", "Log", "Neg", "Abs", "Relu", "Sigmoid", "Sqrt", "Reciprocal", "Identity"})


@register_pass
class TransposedSplitToGather(NodeRewrite, op="Split"):
    name = "transposed-split-to-gather"
    description = "a Split into unit slices of a Transposed tensor as one Gather per slice on the Transpose's input (many threads)"

    def check(self, node: gs.Node, shapes) -> Kept | tuple:
        unary: list[gs.Node] = []   # from the Split back towards the Transpose
        transpose = producer(node.inputs[0])
        while transpose is not None and transpose.op in UNARY_ELEMENTWISE and len(transpose.inputs) == 1:
            unary.append(transpose)
            transpose = producer(transpose.inputs[0])
        if transpose is None or transpose.op != "Transpose" or "perm" not in transpose.attrs:
            return Kept()
        count = unit_split_count(node)
        if count is None:
            return Kept()
        perm = [int(p) for p in transpose.attrs["perm"]]
        axis = int(node.attrs.get("axis", 0))
        axis = axis + len(perm) if axis < 0 else axis
        source = moved_axis(perm, axis)
        if source is None:
            return self.left_alone(node, f"{describe(transpose)} reorders other axes too")
        return transpose.inputs[0], [(op.op, dict(op.attrs)) for op in reversed(unary)], source, axis, list(node.outputs)

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple, output: gs.Variable) -> None:
        x, unary, source, axis, outputs = plan
        for op, attrs in unary:
            x = b.node(op, [x], attrs)
        for index, slice_output in enumerate(outputs):
            b.unsqueeze(b.gather(x, index, source), [axis], output=slice_output)

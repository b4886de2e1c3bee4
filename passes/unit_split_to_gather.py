"""A Split into unit slices becomes one Gather per slice; through a Transpose that only moved the
split axis, the Gathers read the Transpose's input.

    Split(X, ones, axis=a)[q]                 =  Unsqueeze(Gather(X, q, axis=a), [a])
    Split(Transpose(X, perm), ones, axis=a)[q] =  Unsqueeze(Gather(X, q, axis=perm[a]), [a])

the second when the Transpose keeps the order of every other axis: the Gather of the scalar q
drops that axis and the Unsqueeze puts a size-1 axis back where the Split had it. Unary
element-wise ops between the Transpose and the Split (the scan form's Exp of the log-decays)
commute with it and are applied to X instead. Exact (copies); the Transpose and the ops after it
go once the Split was their only consumer.

For OpenVINO. The parallel scan form cuts its chunks into Q step blocks, (.., chunks, Q, ..) ->
Q x (.., chunks, 1, ..): a strided copy, or a Transpose of Q to the front and a Split. OpenVINO
2026.4 runs that Transpose as a reference (one-thread) copy, 0.7-1.1 ms per stage-0 scan input
of VMamba-T at 16 threads, its largest layers; one Gather per block is a JIT kernel over the
thread pool: 70.0 -> 62.8 ms for the whole model at 16 threads (f32, docs/BENCHMARKS.md, 16-core
section). ONNX Runtime 1.30 did not gain (141.6 vs 144.8 ms, not resolved), hence the `ov`
pipeline of that time; since session s15 `ov` makes the `cpu-many` graph (window-doubling scans, no
step blocks), which OpenVINO ran faster still, and this pass serves the parallel form in pipeline text.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import constant_value, describe, moved_axis, optional_input, producer

# Element-wise ops of one input: f(Transpose(X)) = Transpose(f(X)).
UNARY_ELEMENTWISE = frozenset({"Exp", "Log", "Neg", "Abs", "Relu", "Sigmoid", "Sqrt", "Reciprocal", "Identity"})


def unit_split_count(node: gs.Node) -> Optional[int]:
    """The number of outputs of a Split whose constant sizes are all 1, else None."""
    sizes_input = optional_input(node, 1)
    sizes = constant_value(sizes_input) if sizes_input is not None else node.attrs.get("split")
    if sizes is None:
        return None
    sizes = np.asarray(sizes).reshape(-1)
    return len(sizes) if len(sizes) == len(node.outputs) > 1 and bool((sizes == 1).all()) else None


@register_pass
class UnitSplitToGather(NodeRewrite, op="Split", shapes="symbolic"):
    name = "unit-split-to-gather"
    description = "a Split into unit slices as one Gather per slice, through a Transpose that only moved the axis (OpenVINO)"

    def check(self, node: gs.Node, shapes) -> Kept | tuple:
        count = unit_split_count(node)
        if count is None:
            return Kept()
        axis = int(node.attrs.get("axis", 0))
        unary: list[gs.Node] = []   # from the Split back towards a Transpose
        source = producer(node.inputs[0])
        while source is not None and source.op in UNARY_ELEMENTWISE and len(source.inputs) == 1:
            unary.append(source)
            source = producer(source.inputs[0])
        if source is not None and source.op == "Transpose" and "perm" in source.attrs:
            perm = [int(p) for p in source.attrs["perm"]]
            axis = axis + len(perm) if axis < 0 else axis
            moved = moved_axis(perm, axis)
            if moved is not None:
                return source.inputs[0], [(op.op, dict(op.attrs)) for op in reversed(unary)], moved, axis, list(node.outputs)
        shape = shapes.get(node.inputs[0].name)
        if axis < 0:
            if shape is None:
                return self.left_alone(node, "negative axis and unknown rank")
            axis += len(shape)
        return node.inputs[0], [], axis, axis, list(node.outputs)

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple, output: gs.Variable) -> None:
        x, unary, source_axis, axis, outputs = plan
        for op, attrs in unary:
            x = b.node(op, [x], attrs)
        for index, slice_output in enumerate(outputs):
            b.unsqueeze(b.gather(x, index, source_axis), [axis], output=slice_output)

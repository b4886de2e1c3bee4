"""Rewrite Slice ops with a negative step as Gather with explicit (reversed) indices.

tpu-mlir's canonicaliser merges a Slice into the single-use Slice before it and assumes
positive steps (``Slice.cpp MergeSlicePattern: Assertion 'cur_s > 0'``): VMamba's cross-scan
flip, exported as ``x[..., ::-1]``, crashes ``model_transform``. A Gather of the indices that
the Slice would pick is the same tensor and converts fine.

The `cpu-many` pipeline takes it too: ONNX Runtime 1.30 runs a step -1 Slice as a
single-threaded element copy, its Gather spreads over the thread pool (16-core host, 16 threads:
a [1, 2, 192, 3136] flip 3.7 ms as Slice, 1.1 ms as Gather; at 2 threads the Slice is faster,
so the `cpu` pipeline keeps it; docs/BENCHMARKS.md).

For each negative-step axis one Gather (axis, constant int64 indices); axes with positive
steps stay in one Slice. Starts, ends and steps must be constants and the reversed dims static
(other dims, a dynamic batch say, may be unknown). Shapes come from ONNX Runtime's symbolic
inference too: a dynamic-batch export reshapes the cross-scan by sizes computed with Shape ops,
which ONNX's own inference leaves unknown.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.graph_builder import MAX_INDEX_TABLE, GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import constant_value, describe, optional_input, slice_operands


def slice_indices(dim: int, start: int, end: int, step: int) -> list[int]:
    """The indices ONNX Slice picks along one axis (its clamping rules, any step sign)."""
    if step == 0:
        raise ValueError("Slice step 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return list(range(start, end, step))


@register_pass
class SliceReverseToGather(NodeRewrite, shapes="symbolic"):
    name = "slice-reverse-to-gather"
    description = "rewrite negative-step Slice as Gather with reversed indices (tpu-mlir asserts on step < 0)"

    def matches(self, node: gs.Node) -> bool:
        if node.op != "Slice":
            return False
        operands = slice_operands(node)
        if operands is not None:
            return bool((operands[3] < 0).any())
        # steps given but not constants: may be negative
        steps = optional_input(node, 4)
        return steps is not None and constant_value(steps) is None

    def check(self, node: gs.Node, shapes) -> Kept | tuple:
        operands = slice_operands(node)
        if operands is None:
            return Kept(f"{describe(node)} left alone: steps are not constants (tpu-mlir needs positive steps)")
        starts, ends, axes, steps = operands
        shape = shapes.get(node.inputs[0].name)
        if shape is None:
            return Kept(f"{describe(node)} left alone: input shape not static, cannot list the reversed indices")
        rank = len(shape)
        axes = [int(a) + rank if a < 0 else int(a) for a in axes]
        if any(step < 0 and not isinstance(shape[axis], int) for axis, step in zip(axes, steps)):
            return Kept(f"{describe(node)} left alone: input shape not static, cannot list the reversed indices")
        gathers = []
        keep = []  # positive-step entries stay in a Slice
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if step < 0:
                if shape[axis] > MAX_INDEX_TABLE:
                    return self.left_alone(node, f"reversed axis of {shape[axis]} elements, more than the "
                                                 f"{MAX_INDEX_TABLE} indices a Gather table may hold")
                indices = slice_indices(shape[axis], int(start), int(end), int(step))
                if not indices:
                    return Kept(f"{describe(node)} left alone: selects nothing along a reversed axis")
                gathers.append((axis, indices))
            else:
                keep.append((int(start), int(end), axis, int(step)))
        return gathers, keep

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple, output: gs.Variable) -> None:
        gathers, keep = plan
        x = node.inputs[0]
        steps_left = len(gathers) + (1 if keep else 0)
        if keep:
            starts_k, ends_k, axes_k, steps_k = (list(column) for column in zip(*keep))
            x = b.node("Slice", [x, b.ints(starts_k), b.ints(ends_k), b.ints(axes_k), b.ints(steps_k)],
                       output=output if steps_left == 1 else None)
            steps_left -= 1
        for axis, indices in gathers:
            x = b.node("Gather", [x, b.ints(indices)], {"axis": axis}, output=output if steps_left == 1 else None)
            steps_left -= 1

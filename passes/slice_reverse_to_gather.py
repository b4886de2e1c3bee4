"""Rewrite Slice ops with a negative step as Gather with explicit (reversed) indices.

tpu-mlir's canonicaliser merges a Slice into the single-use Slice before it and assumes
positive steps (``Slice.cpp MergeSlicePattern: Assertion 'cur_s > 0'``): VMamba's cross-scan
flip, exported as ``x[..., ::-1]``, crashes ``model_transform``. A Gather of the indices that
the Slice would pick is the same tensor and converts fine.

For each negative-step axis one Gather (axis, constant int64 indices); axes with positive
steps stay in one Slice. Starts, ends and steps must be constants and the sliced dims static.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, PassResult
from passes.registry import register_pass
from passes.graph_builder import GraphBuilder
from passes.static_shapes import static_shapes
from patterns.graph_query import constant_value, describe, slice_operands


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
class SliceReverseToGather(Pass):
    name = "slice-reverse-to-gather"
    description = "rewrite negative-step Slice as Gather with reversed indices (tpu-mlir asserts on step < 0)"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        candidates = []
        for node in graph.nodes:
            if node.op != "Slice":
                continue
            operands = slice_operands(node)
            if operands is not None and (operands[3] < 0).any():
                candidates.append((node, operands))
            elif operands is None and len(node.inputs) >= 5 and node.inputs[4] is not None and node.inputs[4].name \
                    and constant_value(node.inputs[4]) is None:
                candidates.append((node, None))
        if not candidates:
            return PassResult(False, {"rewritten": 0})
        shapes = static_shapes(graph)
        notes, rewritten = [], 0
        for index, (node, operands) in enumerate(candidates):
            if operands is None:
                notes.append(f"{describe(node)} left alone: steps are not constants (tpu-mlir needs positive steps)")
                continue
            starts, ends, axes, steps = operands
            shape = shapes.get(node.inputs[0].name)
            if shape is None:
                notes.append(f"{describe(node)} left alone: input shape not static, cannot list the reversed indices")
                continue
            rank = len(shape)
            axes = [int(a) + rank if a < 0 else int(a) for a in axes]
            gathers = []
            keep = []  # positive-step entries stay in a Slice
            empty = False
            for start, end, axis, step in zip(starts, ends, axes, steps):
                if step < 0:
                    indices = slice_indices(shape[axis], int(start), int(end), int(step))
                    if not indices:
                        empty = True
                    gathers.append((axis, indices))
                else:
                    keep.append((int(start), int(end), axis, int(step)))
            if empty:
                notes.append(f"{describe(node)} left alone: selects nothing along a reversed axis")
                continue
            dtype = getattr(node.inputs[0], "dtype", None) or np.float32
            b = GraphBuilder(graph, ctx.opset, prefix=f"slice_reverse_to_gather/{node.name or index}", dtype=dtype)
            x, output = node.inputs[0], node.outputs[0]
            node.inputs.clear()
            node.outputs.clear()
            steps_left = len(gathers) + (1 if keep else 0)
            if keep:
                starts_k, ends_k, axes_k, steps_k = (list(column) for column in zip(*keep))
                x = b.node("Slice", [x, b.ints(starts_k), b.ints(ends_k), b.ints(axes_k), b.ints(steps_k)],
                           output=output if steps_left == 1 else None)
                steps_left -= 1
            for axis, indices in gathers:
                x = b.node("Gather", [x, b.ints(indices)], {"axis": axis}, output=output if steps_left == 1 else None)
                steps_left -= 1
            rewritten += 1
        if rewritten:
            graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return PassResult(rewritten > 0, {"rewritten": rewritten}, notes)

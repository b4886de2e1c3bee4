"""Q unit slices interleaved by a Concat become a Concat of whole blocks and one Gather.

The parallel scan form puts its Q step blocks (.., n, 1, ..) back together as (.., n, Q, ..):
element k*Q + q of the merged axis comes from block q. Written as

    Reshape(Gather(Concat(X_0 .. X_{Q-1}, axis=c), idx, axis=c), (.., n, Q, ..)),  idx[k*Q + q] = q*n + k

the Concat joins whole runs of n elements (block after block, no interleaving) and the Gather,
split over the thread pool, does the interleaving. Two spellings are recognised: a Concat on the
unit axis itself (c is the axis before it), and a Concat on a leading unit axis followed by a
Transpose that moves only that axis (the form before it was Split-based: Q at the front, then
moved back). Exact (copies). Needs n and every size after the Q axis known; earlier sizes (a
dynamic batch) may be symbolic.

For OpenVINO: 2026.4 runs the Transpose that moves Q back as a reference (one-thread) copy, 1.5-1.8 ms
per stage-0 scan of VMamba-T at 16 threads, and an interleaving Concat no faster; with this pass
and unit-split-to-gather the model ran in 56.9 ms against 62.8 with unit-split-to-gather alone
and 70.0 without either (f32, 16 threads, docs/BENCHMARKS.md, 16-core section).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import MAX_INDEX_TABLE, GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import moved_axis


def interleave_indices(blocks: int, length: int) -> np.ndarray:
    """idx with concat(x_0 .. x_{Q-1})[idx] == stack(x_0 .. x_{Q-1}, -1).reshape(-1) for Q blocks of `length`."""
    return (np.arange(blocks, dtype=np.int64)[None, :] * length + np.arange(length, dtype=np.int64)[:, None]).reshape(-1)


@register_pass
class UnitConcatToGather(NodeRewrite, op="Concat", shapes="symbolic"):
    name = "unit-concat-to-gather"
    description = "a Concat interleaving unit slices (optionally then moved by a Transpose) as a block Concat and one Gather (OpenVINO)"

    def check(self, node: gs.Node, shapes) -> Kept | tuple:
        blocks = len(node.inputs)
        shape = shapes.get(node.inputs[0].name)
        if blocks < 2 or shape is None or any(shapes.get(x.name) != shape for x in node.inputs):
            return Kept()
        rank = len(shape)
        axis = int(node.attrs.get("axis", 0))
        axis = axis + rank if axis < 0 else axis
        if shape[axis] != 1:
            return Kept()
        transpose = self._moving_transpose(node, axis)
        if transpose is not None:
            perm = [int(p) for p in transpose.attrs["perm"]]
            position = perm.index(axis)             # where Q lands
            kept_shape = shape[:axis] + shape[axis + 1:]
        else:
            position = axis
            kept_shape = shape[:axis] + shape[axis + 1:]
        if position == 0:
            return Kept()
        chunk_axis = position - 1 if position - 1 < axis else position     # in the inputs' axes
        length = shape[chunk_axis]
        tail = kept_shape[position:]
        if not isinstance(length, int) or length == 1:
            return Kept()    # nothing to interleave (a size-1 axis), or a batch-like axis of unknown size
        if any(not isinstance(d, int) for d in tail):
            return self.left_alone(node, "an axis after the interleaved one has no known size")
        if blocks * length > MAX_INDEX_TABLE:
            return self.left_alone(node, f"{blocks} x {length} interleaved elements need more than the "
                                         f"{MAX_INDEX_TABLE} indices a Gather table may hold")
        squeeze = axis if axis < chunk_axis else None
        return list(node.inputs), chunk_axis, blocks, length, squeeze, position, tail, transpose

    @staticmethod
    def _moving_transpose(node: gs.Node, axis: int) -> Optional[gs.Node]:
        """The Concat's only consumer, when it is a Transpose that moves only the Concat's axis."""
        users = list(node.outputs[0].outputs)
        if len(users) != 1 or users[0].op != "Transpose" or "perm" not in users[0].attrs:
            return None
        perm = [int(p) for p in users[0].attrs["perm"]]
        position = perm.index(axis) if axis in perm else None
        return users[0] if position is not None and moved_axis(perm, position) == axis else None

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple, output: gs.Variable) -> None:
        inputs, chunk_axis, blocks, length, squeeze, position, tail, transpose = plan
        if transpose is not None:   # the Reshape below writes the Transpose's output instead
            output = transpose.outputs[0]
            transpose.outputs.clear()
        joined = b.concat(inputs, chunk_axis)
        gathered = b.node("Gather", [joined, b.const(interleave_indices(blocks, length))], {"axis": chunk_axis})
        if squeeze is not None:
            gathered = b.squeeze(gathered, [squeeze])
        # Reshape's 0 copies a leading size (a dynamic batch stays dynamic); the Q axis and what follows are known.
        target = [0] * (position - 1) + [length, blocks] + list(tail)
        b.node("Reshape", [gathered, b.ints(target)], output=output)

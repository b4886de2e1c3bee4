"""Per-step outputs written into a preallocated buffer, one slice per step: `out[:, t] = y_t` in a loop.

A loop may store its step outputs by assignment into a tensor made before it (transformers'
RecurrentGemma RG-LRU: `contextualized_states = torch.zeros_like(x)`, then
`contextualized_states[:, t] = h_t`), where most write `torch.stack(outputs)`. The dynamo exporter
writes each assignment as

    buffer_t = ScatterElements(buffer_{t-1}, indices_t, update_t, axis=a)

with indices_t a constant of update_t's shape (1 along a, the buffer's size elsewhere) that holds
position p_t everywhere. A chain of such writes that starts from a buffer of known shape, writes
every position 0 .. n-1 of axis a exactly once (n the buffer's size there), and whose intermediate
buffers nothing else reads, is the stack of its updates along a, whatever the buffer held:

    Concat(update at 0, update at 1, .., update at n-1, axis=a)

which is the stacking patterns/readout.py expects. `find_buffer_writes` returns such chains; the
re-roller (passes/reroll_scans.py) writes each as that Concat before it looks for recurrences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from patterns.graph_query import constant_value, normalize_axis

MIN_WRITES = 2


@dataclass
class BufferWrites:
    output: gs.Tensor        # the buffer after the last write: the stacked tensor
    axis: int                # the axis the writes run along
    pieces: list             # the update written at position 0, 1, .., n-1
    nodes: list              # the writes, first to last


def _static_shape(tensor: gs.Tensor) -> Optional[list[int]]:
    value = constant_value(tensor)
    if value is not None:
        return list(value.shape)
    shape = getattr(tensor, "shape", None)
    if shape is None or not all(isinstance(size, (int, np.integer)) and size >= 0 for size in shape):
        return None
    return [int(size) for size in shape]


def _is_write(node: gs.Node) -> bool:
    reduction = node.attrs.get("reduction", "none")
    if isinstance(reduction, bytes):
        reduction = reduction.decode()
    return node.op == "ScatterElements" and len(node.inputs) == 3 and reduction == "none"


def _slice_written(node: gs.Node, shape: list[int]) -> Optional[tuple[int, int]]:
    """(axis, position) when `node` writes one whole slice of a buffer of `shape` along an axis, else None."""
    indices = constant_value(node.inputs[1])
    axis = normalize_axis(int(node.attrs.get("axis", 0)), len(shape))
    if indices is None or axis is None or not 0 <= axis < len(shape) or indices.size == 0:
        return None
    if not np.issubdtype(indices.dtype, np.integer) or list(indices.shape) != shape[:axis] + [1] + shape[axis + 1:]:
        return None
    flat = indices.reshape(-1)
    position = int(flat[0])
    if np.any(flat != position) or not -shape[axis] <= position < shape[axis]:
        return None
    return axis, position % shape[axis]


def _chain(head: gs.Node, graph_outputs: set[int]) -> list[gs.Node]:
    """The writes from `head` on, each into the buffer the one before it wrote and nothing else reads."""
    chain = [head]
    while True:
        out = chain[-1].outputs[0]
        if id(out) in graph_outputs or len(out.outputs) != 1:
            return chain
        following = out.outputs[0]
        if not _is_write(following) or following.inputs[0] is not out or any(t is out for t in following.inputs[1:]):
            return chain
        chain.append(following)


def find_buffer_writes(graph: gs.Graph) -> list[BufferWrites]:
    graph_outputs = {id(t) for t in graph.outputs}
    writes = [node for node in graph.nodes if _is_write(node)]
    written = {id(node.outputs[0]) for node in writes}
    found = []
    for head in writes:
        if id(head.inputs[0]) in written:   # not the first write of its chain
            continue
        chain = _chain(head, graph_outputs)
        shape = _static_shape(head.inputs[0])
        if len(chain) < MIN_WRITES or shape is None:
            continue
        slices = [_slice_written(node, shape) for node in chain]
        if any(s is None for s in slices) or len({axis for axis, _ in slices}) != 1:
            continue
        axis = slices[0][0]
        positions = [position for _, position in slices]
        if sorted(positions) != list(range(shape[axis])):   # every position once, none left as it was
            continue
        by_position = sorted(zip(positions, chain), key=lambda item: item[0])
        found.append(BufferWrites(chain[-1].outputs[0], axis, [node.inputs[2] for _, node in by_position], chain))
    return found

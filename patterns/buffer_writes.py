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

which is the stacking patterns/readout.py expects. The TorchScript exporter writes the assignment as

    buffer_t = ScatterND(buffer_{t-1}, indices_t, update_t)

indices_t computed from constants (patterns/small_constants.py) and holding the tuples
(i_0, .., i_{a-1}, p_t) over every position of the axes before a in row-major order (or, for
`out[:, t, :] = y_t`, every element's (i_0, .., p_t, .., i_{k-1}), the axes after a included) (update_t then
has the slice's shape without axis a: it is stacked as Unsqueeze(Reshape(update_t), a)), and the
next update shaped by Shape(Gather(buffer_t, ..)): an intermediate buffer may be read by such shape
arithmetic (Shape, through Gather, Slice, Squeeze, Unsqueeze, Reshape, Transpose, Identity, Cast),
which only needs its shape, the same for every buffer of the chain; those Shapes are handed back
with their values, to become constants.

A dynamic-batch export gives the buffer a symbolic shape. The dynamo exporter then writes each assignment as
ScatterElements(buffer_t, Expand(p_t, Shape(update_t)), update_t): indices of the update's shape holding p_t.
That is a whole slice when the update is declared with the buffer's declared shape but 1 at the axis, the sizes
named alike (an ONNX dim_param names one size wherever it appears) and the axis's own size a number (so the
positions can be counted). TorchScript's ScatterND builds its index tuples from Range(Shape(buffer)) there, which
small_value cannot evaluate without a size: patterns/index_put.py proves them from their structure instead (the
whole slice at p for every batch), and the buffer's size along the axis from the sizes it is made from. The update
is then Reshape(Expand(y_t, Shape(Gather(buffer, p, axis))), ..): y_t broadcast to the slice, of the shape ScatterND
demands of it; the chain is the stack of the y_t expanded to the buffer's shape, and the intermediate buffers' shape
reads read the first buffer. The y_t may differ in shape (h_init of (1, D) among (batch, D) states, which a Concat
refuses at any batch but 1): the re-roller stacks them as they are only where it infers them one shape, else the
broadcast updates, Expand(y_t, Shape(slice)), of those not proven of the slice's shape.

`find_buffer_writes` returns such chains; the re-roller (passes/reroll_scans.py) writes each as that
Concat before it looks for recurrences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from patterns.graph_query import constant_value, normalize_axis, producer
from patterns.index_put import axis_size, index_put_position
from patterns.ranks import RankMap
from patterns.small_constants import small_value

MIN_WRITES = 2


@dataclass
class BufferWrites:
    output: gs.Tensor        # the buffer after the last write: the stacked tensor
    axis: int                # the axis the writes run along
    pieces: list             # the update written at position 0, 1, .., n-1
    nodes: list              # the writes, first to last
    piece_shapes: list = field(default_factory=list)  # per piece: None (a slice as it is) or the slice's
                                                      # shape without the axis (a ScatterND update, reshaped)
    shape_reads: list = field(default_factory=list)   # (Shape node reading an intermediate buffer, its value)
    # A symbolic-batch TorchScript chain (patterns/index_put.py): pieces are each step's y_t of the buffer's rank
    # less one, broadcast to the slice's shape by the write; the stack of Unsqueeze(y_t, axis) is to be expanded to
    # the shape of `broadcast_like` (the first buffer), and each (node, input index) of `shape_readers`, a read of an
    # intermediate buffer that only takes its shape, is to read `broadcast_like` instead (one shape for them all).
    # The y_t may differ in shape (h_init of (1, D) among (batch, D) states): `broadcast_pieces` holds each write's
    # Expand(y_t, Shape(slice)), y_t of the slice's shape, for the pieces not proven of one shape.
    broadcast_like: Optional[gs.Tensor] = None
    shape_readers: list = field(default_factory=list)
    broadcast_pieces: list = field(default_factory=list)


def _static_shape(tensor: gs.Tensor) -> Optional[list[int]]:
    value = constant_value(tensor)
    if value is not None:
        return list(value.shape)
    node = tensor.inputs[0] if tensor.inputs else None
    if node is not None and node.op == "ConstantOfShape":   # torch.zeros(..) of a constant shape
        sizes = small_value(node.inputs[0])
        if sizes is not None and sizes.ndim == 1 and np.issubdtype(sizes.dtype, np.integer) and np.all(sizes >= 0):
            return [int(size) for size in sizes]
    shape = getattr(tensor, "shape", None)
    if shape is None or not all(isinstance(size, (int, np.integer)) and size >= 0 for size in shape):
        return None
    return [int(size) for size in shape]


def _declared_shape(tensor: gs.Tensor) -> Optional[list]:
    """The shape `tensor` is declared with where every size is a number or named (a symbolic batch: ONNX's
    dim_param, the same size wherever the name appears), else None."""
    shape = getattr(tensor, "shape", None)
    if shape is None or not all((isinstance(size, (int, np.integer)) and size >= 0) or (isinstance(size, str) and size)
                                for size in shape):
        return None
    return [size if isinstance(size, str) else int(size) for size in shape]


def _is_write(node: gs.Node) -> bool:
    reduction = node.attrs.get("reduction", "none")
    if isinstance(reduction, bytes):
        reduction = reduction.decode()
    return node.op in ("ScatterElements", "ScatterND") and len(node.inputs) == 3 and reduction == "none"


def _slice_written_nd(node: gs.Node, shape: list[int]) -> Optional[tuple[int, int]]:
    """ScatterND: (axis, position) when its index tuples of k coordinates hold p at coordinate a and run over
    every other coordinate in row-major order: (i_0, .., i_{a-1}, p) (`out[:, t] = y`), or with the axes after a
    too, (i_0, .., p, .., i_{k-1}) (`out[:, t, :] = y`, every element's coordinates); the update then holds the
    slice at p in that order. Else None."""
    indices = small_value(node.inputs[1])
    if indices is None or indices.ndim < 1 or not np.issubdtype(indices.dtype, np.integer):
        return None
    depth = indices.shape[-1]
    if not 1 <= depth <= len(shape):
        return None
    rows = indices.reshape(-1, depth).astype(np.int64)
    # An axis of size 1 holds one position, no chain of writes: the other axes first.
    for axis in sorted(range(depth), key=lambda a: shape[a] == 1):
        others = [shape[a] for a in range(depth) if a != axis]
        if shape[axis] == 0 or rows.shape[0] != math.prod(others):   # before the grid: a size may be hostile
            continue
        position = int(rows[0, axis]) if rows.size else None
        if position is None or np.any(rows[:, axis] != position) or not -shape[axis] <= position < shape[axis]:
            continue
        expected = np.stack([g.reshape(-1) for g in np.meshgrid(*[np.arange(n) for n in others], indexing="ij")],
                            axis=-1) if others else np.zeros((1, 0), np.int64)
        if np.array_equal(np.delete(rows, axis, axis=1), expected):
            return axis, position % shape[axis]
    return None


def _expanded_position(node: gs.Node) -> Optional[tuple[np.ndarray, list]]:
    """ScatterElements(data, Expand(p, Shape(update)), update) (the dynamo exporter's `out[:, t] = y` where the
    batch is symbolic): p (all of one value, every size 1) and the update's declared shape, which the indices then
    have, else None."""
    expand = producer(node.inputs[1])
    if expand is None or expand.op != "Expand" or len(expand.inputs) != 2:
        return None
    shape_node = producer(expand.inputs[1])
    if (shape_node is None or shape_node.op != "Shape" or not shape_node.inputs
            or shape_node.inputs[0] is not node.inputs[2] or int(shape_node.attrs.get("start", 0)) != 0
            or shape_node.attrs.get("end") is not None):
        return None
    value, update_shape = constant_value(expand.inputs[0]), _declared_shape(node.inputs[2])
    if value is None or update_shape is None or value.ndim > len(update_shape) or any(n != 1 for n in value.shape):
        return None
    return value, update_shape


def _slice_written(node: gs.Node, shape: list) -> Optional[tuple[int, int]]:
    """(axis, position) when `node` writes one whole slice of a buffer of `shape` along an axis, else None.
    `shape` may name a size (symbolic) but that of the axis written."""
    if node.op == "ScatterND":
        return _slice_written_nd(node, shape) if all(isinstance(size, int) for size in shape) else None
    axis = normalize_axis(int(node.attrs.get("axis", 0)), len(shape))
    if axis is None or not 0 <= axis < len(shape) or not isinstance(shape[axis], int):
        return None
    indices = constant_value(node.inputs[1])
    if indices is None and all(isinstance(size, int) for size in shape):
        indices = _computed_indices(node, shape)
    if indices is not None:
        indices_shape = list(indices.shape)
    else:   # p expanded to the update's shape: the indices have the update's declared shape, p everywhere
        expanded = _expanded_position(node)
        if expanded is None:
            return None
        indices, indices_shape = expanded
    if indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        return None
    if indices_shape != shape[:axis] + [1] + shape[axis + 1:]:   # a named size equals only the same name
        return None
    flat = indices.reshape(-1)
    position = int(flat[0])
    if np.any(flat != position) or not -shape[axis] <= position < shape[axis]:
        return None
    return axis, position % shape[axis]


def _computed_indices(node: gs.Node, shape: list[int]) -> Optional[np.ndarray]:
    """ScatterElements' indices computed from constants and the shape of the buffer it writes (TorchScript's
    `y.index_copy(1, t, y_t)`: Expand(t, the buffer's shape with 1 at the axis, from Shape(buffer) through
    ScatterElements, Equal, Where)), evaluated with a stand-in of the buffer's `shape`; None where they are not."""
    try:
        stand_in = np.broadcast_to(np.zeros((), np.float32), shape)
    except ValueError:   # more elements than numpy indexes (a hostile declared shape)
        return None
    return small_value(node.inputs[1], {id(node.inputs[0]): stand_in})


# Ops a buffer's shape may pass through on its way to a Shape (shape arithmetic for the next update).
_SHAPE_PATH_OPS = frozenset({"Gather", "Slice", "Squeeze", "Unsqueeze", "Reshape", "Transpose", "Identity", "Cast"})
MAX_SHAPE_PATH = 16


def _shape_reads(buffer: gs.Tensor, skip: gs.Node, shape: list[int], graph_outputs: set[int]) -> Optional[list]:
    """(Shape node, value) for every read of `buffer` other than `skip` when all of them only take its shape
    (through _SHAPE_PATH_OPS to Shapes), else None."""
    readers = [n for n in buffer.outputs if n is not skip]
    if not all(isinstance(size, int) for size in shape):   # a named size: no stand-in, so no shape reads
        return [] if not readers else None
    try:   # a stand-in of the buffer's shape with no data (a Shape of it only needs that)
        stand_in = np.broadcast_to(np.zeros((), np.float32), shape)
    except ValueError:   # more elements than numpy indexes (a hostile declared shape)
        return None
    shapes = _shape_walk(buffer, skip, graph_outputs)
    if shapes is None:
        return None
    reads = [(node, small_value(node.outputs[0], {id(buffer): stand_in})) for node in shapes]
    return None if any(value is None for _, value in reads) else reads


def _shape_readers(buffer: gs.Tensor, skip: gs.Node, graph_outputs: set[int]) -> Optional[list]:
    """(node, input index) of each read of `buffer` other than `skip` when all of them only take its shape, else
    None: reads that another tensor of the same shape may serve."""
    if _shape_walk(buffer, skip, graph_outputs) is None:
        return None
    return [(node, index) for node in buffer.outputs if node is not skip
            for index, tensor in enumerate(node.inputs) if tensor is buffer]


def _shape_walk(buffer: gs.Tensor, skip: gs.Node, graph_outputs: set[int]) -> Optional[list]:
    """The Shape nodes that every read of `buffer` other than `skip` leads to, through _SHAPE_PATH_OPS only, else
    None."""
    shapes, seen, path, stack = [], set(), [], [n for n in buffer.outputs if n is not skip]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if len(seen) > MAX_SHAPE_PATH or any(id(t) in graph_outputs for t in node.outputs):
            return None
        if node.op == "Shape":
            shapes.append(node)
        elif node.op in _SHAPE_PATH_OPS and node.inputs and node.inputs[0] is not None:
            path.append(node)
            stack += [consumer for out in node.outputs for consumer in out.outputs]
        else:
            return None
    # Checked once the walk has seen every reader: it may reach the node that makes a Slice's bounds from
    # the buffer's values after the Slice (an order of gs's readers), which then read as a shape read.
    if any(t is not node.inputs[0] and _depends_on(t, seen_nodes=seen) for node in path for t in node.inputs[1:]):
        return None
    return shapes


def _depends_on(tensor: gs.Tensor, seen_nodes: set[int]) -> bool:
    """A non-data input of a shape-path node that is itself made from the buffer (not only its shape)."""
    node = tensor.inputs[0] if tensor.inputs else None
    return node is not None and id(node) in seen_nodes


def _chain(head: gs.Node, graph_outputs: set[int], reads_of) -> tuple[list[gs.Node], list]:
    """The writes from `head` on, each into the buffer the one before it wrote, which nothing else reads but
    for its shape; and those shape reads (`reads_of(buffer, next write)`: a list of them, or None where a read
    takes more than the shape)."""
    chain, reads = [head], []
    while True:
        out = chain[-1].outputs[0]
        # through Identities that are the buffer's only reader (the dynamo exporter's between writes)
        while (id(out) not in graph_outputs and len(out.outputs) == 1 and out.outputs[0].op == "Identity"
               and len(out.outputs[0].outputs) == 1):
            out = out.outputs[0].outputs[0]
        if id(out) in graph_outputs:
            return chain, reads
        following = [n for n in out.outputs if _is_write(n) and n.inputs[0] is out]
        if len(following) != 1 or any(t is out for t in following[0].inputs[1:]):
            return chain, reads
        others = reads_of(out, following[0])
        if others is None:
            return chain, reads
        chain.append(following[0])
        reads += others


def find_buffer_writes(graph: gs.Graph) -> list[BufferWrites]:
    graph_outputs = {id(t) for t in graph.outputs}
    writes = [node for node in graph.nodes if _is_write(node)]
    written = {id(node.outputs[0]) for node in writes}
    found, ranks = [], None
    for head in writes:
        if id(head.inputs[0]) in written:   # not the first write of its chain
            continue
        shape = _static_shape(head.inputs[0]) or _declared_shape(head.inputs[0])
        if head.op == "ScatterND" and (shape is None or not all(isinstance(size, int) for size in shape)):
            ranks = ranks or RankMap(graph)   # a symbolic batch: index tuples built at run time
            symbolic = _index_put_chain(head, graph_outputs, ranks)
            if symbolic is not None:
                found.append(symbolic)
            continue
        if shape is None:
            continue
        chain, reads = _chain(head, graph_outputs,
                              lambda buffer, skip: _shape_reads(buffer, skip, shape, graph_outputs))
        if len(chain) < MIN_WRITES:
            continue
        slices = [_slice_written(node, shape) for node in chain]
        if any(s is None for s in slices) or len({axis for axis, _ in slices}) != 1:
            continue
        axis = slices[0][0]
        positions = [position for _, position in slices]
        if sorted(positions) != list(range(shape[axis])):   # every position once, none left as it was
            # (shape[axis] is a number: _slice_written takes no named size there)
            continue
        by_position = [node for _, node in sorted(zip(positions, chain), key=lambda item: item[0])]
        piece_shapes = [shape[:axis] + shape[axis + 1:] if node.op == "ScatterND" else None for node in by_position]
        found.append(BufferWrites(chain[-1].outputs[0], axis, [node.inputs[2] for node in by_position], chain,
                                  piece_shapes, reads))
    return found


def _index_put_chain(head: gs.Node, graph_outputs: set[int], ranks: RankMap) -> Optional[BufferWrites]:
    """A chain of TorchScript's ScatterND writes into a buffer of no known shape (a symbolic batch) whose index tuples
    patterns/index_put.py proves to be whole slices at every position of one axis once each; each update y_t
    broadcast by Expand to Shape(Gather(buffer, p, axis)) and reshaped (to the shape ScatterND demands), y_t of the
    buffer's rank less one. Else None."""
    buffer = head.inputs[0]
    rank = ranks.rank(buffer)
    if rank is None:
        return None
    chain, readers = _chain(head, graph_outputs, lambda out, skip: _shape_readers(out, skip, graph_outputs))
    if len(chain) < MIN_WRITES:
        return None
    buffers = {id(buffer)} | {id(node.outputs[0]) for node in chain}
    slices = [index_put_position(node.inputs[1], buffers) for node in chain]
    if any(s is None for s in slices) or len({axis for axis, _ in slices}) != 1 or not slices[0][0] < rank:
        return None
    axis = slices[0][0]
    length = axis_size(buffer, axis, ranks)
    if length is None or not all(-length <= position < length for _, position in slices):
        return None
    positions = [position % length for _, position in slices]
    if sorted(positions) != list(range(length)):
        return None
    steps, broadcast = [], []
    for _, node in sorted(zip(positions, chain), key=lambda item: item[0]):
        update = _broadcast_update(node.inputs[2], axis, rank, buffers)
        if update is None or ranks.rank(update[0]) != rank - 1:
            return None
        steps.append(update[0])
        broadcast.append(update[1])
    return BufferWrites(chain[-1].outputs[0], axis, steps, chain, [None] * len(steps), [],
                        broadcast_like=buffer, shape_readers=readers, broadcast_pieces=broadcast)


def _broadcast_update(update: gs.Tensor, axis: int, rank: int,
                      buffers: set[int]) -> Optional[tuple[gs.Tensor, gs.Tensor]]:
    """(y, the Expand's output) where `update` is Reshape(Expand(y, Shape(Gather(buffer, p, axis))), target): y
    broadcast to the slice's shape (any target: ScatterND accepts only the one its indices demand)."""
    reshape = producer(update)
    if reshape is None or reshape.op != "Reshape" or not reshape.inputs:
        return None
    expand = producer(reshape.inputs[0])
    if expand is None or expand.op != "Expand" or len(expand.inputs) != 2:
        return None
    shape = producer(expand.inputs[1])
    if (shape is None or shape.op != "Shape" or int(shape.attrs.get("start", 0)) != 0
            or shape.attrs.get("end") is not None):
        return None
    gather = producer(shape.inputs[0])
    if (gather is None or gather.op != "Gather" or id(gather.inputs[0]) not in buffers
            or normalize_axis(int(gather.attrs.get("axis", 0)), rank) != axis):
        return None
    index = constant_value(gather.inputs[1])
    if index is None or index.ndim != 0 or not np.issubdtype(index.dtype, np.integer):
        return None
    return expand.inputs[0], expand.outputs[0]

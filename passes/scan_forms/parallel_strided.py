"""The "parallel-strided" form: the parallel form's sweeps on steps q, q + Q, q + 2Q, ... taken from
the decays' and drives' small factors, so that the (L, d_inner, N) decays and drives never exist.

With d_state N > 1 (Mamba) the scan's inputs are broadcast products of small tensors:
a = exp(A[d, n] * dt[t, d]), b = dt[t, d] * B[t, n] * u[t, d], each (L, d_inner, N), ~100 MB per
Mamba-130m layer at L 1024. ONNX Runtime writes every one of them out, and the parallel form
then copies them again to put step q of every chunk in one block. Here step q of every chunk is a
Slice with step Q along the scan axis, pushed through the elementwise ops that build a and b down
to their inputs that vary along the scan axis (dt, B, u: no N axis), so each sweep step computes
its (L / Q, d_inner, N) block from small strided slices, and the full a and b become dead code.
  1. Sweep 1, all chunks at once, Q small steps: each chunk's last state from a zero start; the
     chunk's decay product as exp(sum of log a), the sum pushed through what is linear in the one
     factor that varies along L (A * dt sums as A * sum(dt): a small sum, one block).
  2. Carry across chunks, c_k = P_k * c_{k-1} + h_k: a doubling (Hillis-Steele) scan over L / Q.
  3. Sweep 2, Q small steps again, from the carry into each chunk: all states, interleaved back
     into (..., L, ...) by one Concat on the axis after the chunk axis and a Reshape.
Numerics as `parallel`: only products of decays <= 1, nothing divided, no overflow. Decays without
a log (decays.Decays: some a_i may be <= 0) are stepped as they are and a chunk's decay product is
the product of its Q blocks: exact for any sign. Needs the
static size of the scan axis in each factor (`shapes`, from the pass); a factor whose size is
unknown is sliced where it is, without pushing further.
"""
from __future__ import annotations

from typing import Optional, Sequence

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.scan_forms.decays import Decays
from passes.scan_forms.chunk_axes import INT64_MAX, doubling_scan, shift, sweep
from patterns.graph_query import producer

# Elementwise ops whose output at step t depends only on their inputs at step t (broadcasting).
_PUSH_THROUGH = {"Mul", "Add", "Sub", "Div", "Exp", "Neg", "Identity", "Cast", "Softplus", "Relu", "Sigmoid"}


class _StridedSteps:
    """Step q, q + Q, ... of a tensor along the scan axis, computed from its producer's inputs."""

    def __init__(self, builder: GraphBuilder, axis: int, rank: int, length: int, chunk: int, shapes: dict) -> None:
        self.builder, self.axis, self.rank, self.length, self.chunk = builder, axis, rank, length, chunk
        self.shapes = shapes
        self.memo: dict[tuple[int, int], gs.Tensor] = {}

    def _scan_size(self, tensor: gs.Tensor) -> Optional[int]:
        """Size of `tensor` along the scan axis (aligned from the right), 1 when it has no such axis."""
        if isinstance(tensor, gs.Constant):
            shape = tuple(tensor.shape)
        else:
            shape = self.shapes.get(tensor.name)
        if shape is None:
            return None
        offset = self.rank - len(shape)
        return 1 if self.axis - offset < 0 else shape[self.axis - offset]

    def step(self, tensor: gs.Tensor, q: int) -> gs.Tensor:
        key = (id(tensor), q)
        if key not in self.memo:
            self.memo[key] = self._step(tensor, q)
        return self.memo[key]

    def _step(self, tensor: gs.Tensor, q: int) -> gs.Tensor:
        size = self._scan_size(tensor)
        if size == 1:
            return tensor   # broadcast along the scan axis: every step sees the same values
        node = producer(tensor)
        pushable = (size == self.length and node is not None and node.op in _PUSH_THROUGH
                    and len(node.outputs) == 1 and not node.domain
                    and all(self._scan_size(t) in (1, self.length) for t in node.inputs))
        if not pushable:
            axis = self.axis - (self.rank - self._rank_of(tensor))
            return self.builder.node("Slice", [tensor, self.builder.ints([q]), self.builder.ints([INT64_MAX]),
                                               self.builder.ints([axis]), self.builder.ints([self.chunk])])
        inputs = [self.step(t, q) for t in node.inputs]
        return self.builder.node(node.op, inputs, dict(node.attrs))

    def sum_over_steps(self, tensor: gs.Tensor) -> gs.Tensor:
        """sum over q of step q of `tensor` (each chunk's sum along the scan axis), pushed through
        what is linear in the one input that varies along L: log a = A * dt sums as A * sum(dt),
        so a chunk's decay product exp(sum log a) costs a small sum and one block, not Q - 1 block Muls."""
        node = producer(tensor)
        linear = False
        if (node is not None and len(node.outputs) == 1 and not node.domain
                and self._scan_size(tensor) == self.length
                and all(self._scan_size(t) in (1, self.length) for t in node.inputs)):
            varying = [index for index, t in enumerate(node.inputs) if self._scan_size(t) != 1]
            linear = len(varying) == 1 and (node.op == "Mul" or (node.op == "Div" and varying == [0])
                                            or node.op in ("Neg", "Identity", "Cast"))
        if not linear:
            total = self.step(tensor, 0)
            for q in range(1, self.chunk):
                total = self.builder.add(total, self.step(tensor, q))
            return total
        inputs = [self.sum_over_steps(t) if index == varying[0] else self.unvarying(t)
                  for index, t in enumerate(node.inputs)]
        return self.builder.node(node.op, inputs, dict(node.attrs))

    def unvarying(self, tensor: gs.Tensor) -> gs.Tensor:
        """An input that does not vary along L, as the blocks' ops take it (here: as it is)."""
        return tensor

    def _rank_of(self, tensor: gs.Tensor) -> int:
        shape = tuple(tensor.shape) if isinstance(tensor, gs.Constant) else self.shapes.get(tensor.name)
        return self.rank if shape is None else len(shape)

    block_axis = property(lambda self: self.axis)   # where the chunk axis is in the blocks

    def laid_out(self, tensor: gs.Tensor) -> gs.Tensor:
        """A tensor that does not vary along the scan axis (the initial state) as the blocks see it."""
        return tensor


def stepped_decay(decays: Decays) -> gs.Tensor:
    """The tensor the sweeps take steps of: log a where the decays have one (its chunk sums push
    through A * dt), else a itself."""
    return decays.log if decays.has_log else decays.values


def strided_sweeps(builder: GraphBuilder, steps: _StridedSteps, *, decays: Decays, drive: gs.Tensor,
                   initial: Optional[gs.Tensor]) -> list[gs.Tensor]:
    """Steps 1-3 of the module docstring: block q holds the states of steps q, q + Q, ... (`steps` makes
    the blocks: their layout, and the chunk axis at steps.block_axis)."""
    chunk, chunks, rank, axis = steps.chunk, steps.length // steps.chunk, steps.rank, steps.block_axis
    decay = stepped_decay(decays)
    if decays.has_log:
        decay_blocks = [builder.exp(steps.step(decay, q)) for q in range(chunk)]
    else:
        decay_blocks = [steps.step(decay, q) for q in range(chunk)]
    drives = [steps.step(drive, q) for q in range(chunk)]

    if initial is not None:
        # Fold the initial state into chunk 0's first drive: x_0 = a_0 * x_init + b_0, then start from zero.
        initial = steps.laid_out(initial)
        first = builder.add(builder.slice(drives[0], 0, 1, axis), builder.mul(builder.slice(decay_blocks[0], 0, 1, axis), initial))
        drives[0] = builder.concat([first, builder.slice(drives[0], 1, chunks, axis)], axis) if chunks > 1 else first

    carry_in = None
    if chunks > 1:
        last = drives[0]
        for q in range(1, chunk):
            last = builder.add(builder.mul(decay_blocks[q], last), drives[q])
        if decays.has_log:
            chunk_decay = builder.exp(steps.sum_over_steps(decay))   # a_1 ... a_Q = exp(sum of log a): <= 1
        else:
            chunk_decay = decay_blocks[0]
            for q in range(1, chunk):
                chunk_decay = builder.mul(chunk_decay, decay_blocks[q])
        carry = doubling_scan(builder, chunk_decay, last, rank, axis, chunks)
        carry_in = shift(builder, carry, rank, axis, 1, chunks, 0.0)
    return sweep(builder, decay_blocks, drives, carry_in)


def strided_chunk(length: int, chunk: int) -> int:
    """Strided steps need Q | L: the largest such Q up to `chunk`."""
    chunk = max(1, min(chunk, length))
    while length % chunk:
        chunk -= 1
    return chunk


def parallel_strided_states(builder: GraphBuilder, *, decays: Decays, drive: gs.Tensor,
                            initial: Optional[gs.Tensor], axis: int, length: int, chunk: int, rank: int,
                            shapes: Optional[dict] = None) -> gs.Tensor:
    steps = _StridedSteps(builder, axis, rank, length, strided_chunk(length, chunk), shapes or {})
    states = strided_sweeps(builder, steps, decays=decays, drive=drive, initial=initial)
    return interleaved(builder, states, axis, rank, length)


def interleaved(builder: GraphBuilder, blocks: Sequence[gs.Tensor], axis: int, rank: int, length: int) -> gs.Tensor:
    """Blocks q = 0 .. Q-1 (steps q, q + Q, ... along `axis`) joined back into steps 0 .. L-1."""
    chunk = len(blocks)
    if chunk == 1:
        return blocks[0]
    chunks = length // chunk
    shape = builder.shape(blocks[0])
    if axis < rank - 1:
        # Blocks (..., chunks, A, ...) joined on A are, in memory, (..., chunks, Q, A, ...): a Reshape makes L.
        joined = builder.concat(blocks, axis + 1)
        merged = builder.concat([builder.slice(shape, 0, axis, 0), builder.ints([length]),
                                 builder.slice(shape, axis + 1, INT64_MAX, 0)], 0)
        return builder.reshape(joined, merged)
    # The scan axis is last: join q-major, (..., Q, chunks), and swap the two small axes.
    joined = builder.reshape(builder.concat(blocks, axis),
                             builder.concat([builder.slice(shape, 0, axis, 0), builder.ints([chunk, chunks])], 0))
    swapped = builder.transpose(joined, [*range(axis), axis + 1, axis])
    return builder.reshape(swapped, builder.concat([builder.slice(shape, 0, axis, 0), builder.ints([length])], 0))

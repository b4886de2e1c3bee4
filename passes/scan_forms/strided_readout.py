"""The "strided-readout" form: parallel-strided's sweeps with the readout applied to each block of
sweep 2, so that the (L, d_inner, N) states never exist whole.

parallel-strided (parallel_strided.py) builds every block (L / Q, d_inner, N) of step q from small
factors, then joins all states into one (L, d_inner, N) tensor (a Concat) that the readout moves
(a Transpose) and reads: three passes over ~100 MB per Mamba-130m layer at L 1024, DRAM-bound, and
each factor's step q is a strided Slice (one element per cache line). Here, with the same sweeps
(parallel_strided.strided_sweeps):
  1. A factor that varies along L is reshaped once to (..., chunks, Q, ...) and split along Q: its
     step q of every chunk is one piece, not a strided Slice.
  2. Only tensors as large as a block are computed block by block; a smaller factor (dt, u, B: no
     N axis or no d_inner axis) is taken whole, and products are re-associated so that the small
     factors meet first: (dt * u) * B is one block-sized Mul where (dt * B) * u is two.
  3. Sweep 2's block q is moved to the readout's layout (step axis first) and read out at once:
     the readout replayed over steps q, q + Q, ... (its coefficient taken with a strided Slice);
     only the small outputs (L / Q, ..., d_inner) are interleaved back into (L, ...).
Without a readout (the states themselves are the output, or the last state escapes) the blocks
are interleaved as in parallel-strided. Numerics are parallel-strided's: products of decays
<= 1, nothing divided, no overflow.

A layout with d_inner last was tried (ONNX Runtime broadcasts with an innermost span of N = 16
run 4-10x slower per element than with d_inner): ORT's transpose optimizer pushes the factors'
Transposes down onto the blocks (it counts Transposes, not bytes), 1.5x slower than this layout;
channels_last_readout.py moves the factors whole instead, where the optimizer leaves them.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.scan_forms.decays import Decays
from passes.scan_forms.chunk_axes import INT64_MAX, move_axis
from passes.scan_forms.parallel_strided import (_PUSH_THROUGH, _StridedSteps, interleaved, stepped_decay, strided_chunk,
                                               strided_sweeps)
from patterns.graph_query import producer

# readout(states of steps start, start + stride, ... with the step axis first, start, stride, count)
#   -> (the readout of those steps with the step axis first, its rank)
Readout = Callable[[gs.Tensor, int, int, int], tuple[gs.Tensor, int]]


class _GatheredSteps(_StridedSteps):
    """Strided steps from factors split once along Q, computed block by block only where a tensor is
    as large as a block."""

    def __init__(self, builder: GraphBuilder, axis: int, rank: int, length: int, chunk: int, shapes: dict,
                 block_sizes: list[int]) -> None:
        super().__init__(builder, axis, rank, length, chunk, shapes)
        self.block_sizes = block_sizes   # the full blocks' sizes along each axis but the scan axis
        self.split: dict[int, gs.Tensor] = {}

    def _sizes(self, tensor: gs.Tensor) -> tuple:
        """Sizes along each axis but the scan axis, aligned from the right; unknown (a symbolic batch) as 1."""
        shape = tuple(tensor.shape) if isinstance(tensor, gs.Constant) else self.shapes.get(tensor.name)
        if shape is None:
            return tuple(self.block_sizes)
        padded = [1] * (self.rank - len(shape)) + [size if isinstance(size, int) else 1 for size in shape]
        return tuple(size for axis, size in enumerate(padded) if axis != self.axis)

    def _split(self, tensor: gs.Tensor) -> list[gs.Tensor]:
        """Steps q, q + Q, ... of `tensor` for q = 0 .. Q-1: its scan axis reshaped to (chunks, Q), one
        Split along Q, each piece reshaped back to (..., chunks, ...). What ORT makes of Q Gathers."""
        if id(tensor) not in self.split:
            b, axis, chunks = self.builder, self.axis - (self.rank - self._rank_of(tensor)), self.length // self.chunk
            shape = b.shape(tensor)
            head, tail = b.slice(shape, 0, axis, 0), b.slice(shape, axis + 1, INT64_MAX, 0)
            pieces = b.split(b.reshape(tensor, b.concat([head, b.ints([chunks, self.chunk]), tail], 0)),
                             [1] * self.chunk, axis + 1)
            block = b.concat([head, b.ints([chunks]), tail], 0)
            self.split[id(tensor)] = [b.reshape(piece, block) for piece in pieces]
        return self.split[id(tensor)]

    def _blockwise(self, tensor: gs.Tensor) -> bool:
        """`tensor` is computed block by block from its producer's inputs."""
        node = producer(tensor)
        return (node is not None and node.op in _PUSH_THROUGH and len(node.outputs) == 1 and not node.domain
                and self._scan_size(tensor) == self.length and self._sizes(tensor) == tuple(self.block_sizes)
                and all(self._scan_size(t) in (1, self.length) for t in node.inputs))

    def _factors(self, tensor: gs.Tensor) -> list[gs.Tensor]:
        node = producer(tensor)
        if not self._blockwise(tensor) or node.op != "Mul":
            return [tensor]
        return [factor for t in node.inputs for factor in self._factors(t)]

    def _step(self, tensor: gs.Tensor, q: int) -> gs.Tensor:
        size = self._scan_size(tensor)
        if size == 1:
            return tensor   # broadcast along the scan axis: every step sees the same values
        if not self._blockwise(tensor):
            if size != self.length:
                return super()._step(tensor, q)   # unknown size: a strided Slice where it is
            return self._split(tensor)[q]
        node = producer(tensor)
        if node.op != "Mul":
            return self.builder.node(node.op, [self.step(t, q) for t in node.inputs], dict(node.attrs))
        # The product of all factors, the pair with the smallest product first, and so on.
        terms = [(self.step(t, q), self._sizes(t)) for t in self._factors(tensor)]
        while len(terms) > 1:
            _, i, j = min((int(np.prod(np.maximum(terms[i][1], terms[j][1]))), i, j)
                          for i in range(len(terms)) for j in range(i + 1, len(terms)))
            merged = (self.builder.mul(terms[i][0], terms[j][0]), tuple(np.maximum(terms[i][1], terms[j][1])))
            terms = [term for k, term in enumerate(terms) if k not in (i, j)] + [merged]
        return terms[0][0]


def _block_sizes(shapes: dict, tensors: list[gs.Tensor], rank: int, axis: int) -> list[int]:
    """Sizes of the broadcast of `tensors` (aligned from the right) along each axis but the scan
    axis; unknown as 1."""
    merged = [1] * rank
    for tensor in tensors:
        shape = shapes.get(tensor.name) or []
        for index, size in enumerate(reversed(shape)):
            if isinstance(size, int):
                merged[rank - 1 - index] = max(merged[rank - 1 - index], size)
    return [size for index, size in enumerate(merged) if index != axis]


def strided_readout(builder: GraphBuilder, *, decays: Decays, drive: gs.Tensor, initial: Optional[gs.Tensor],
                    axis: int, length: int, chunk: int, rank: int, shapes: Optional[dict] = None,
                    readout: Optional[Readout] = None) -> gs.Tensor:
    """All states, or, given `readout`, the readout of every step with the step axis first."""
    shapes = shapes or {}
    steps = _GatheredSteps(builder, axis, rank, length, strided_chunk(length, chunk), shapes,
                           _block_sizes(shapes, [stepped_decay(decays), drive], rank, axis))
    blocks = strided_sweeps(builder, steps, decays=decays, drive=drive, initial=initial)
    if readout is None:
        return interleaved(builder, blocks, axis, rank, length)
    outputs, output_rank = [], None
    for q, block in enumerate(blocks):
        output, output_rank = readout(move_axis(builder, block, rank, axis, 0), q, steps.chunk, length // steps.chunk)
        outputs.append(output)
    return interleaved(builder, outputs, 0, output_rank, length)

"""The "channels-last-readout" form: strided-readout's sweeps and block-by-block readout with every
block laid out chunk axis first and channel axis (d_inner) last, so that no block is ever transposed.

strided-readout (strided_readout.py) keeps the export's layout, (batch, d_inner, L, N) for
transformers' Mamba: its blocks are (batch, d_inner, L / Q, N), so
  - the block-sized broadcasts that make the decays exp(A * dt) and drives (dt * u) * B have
    N = 16 as their innermost span (ONNX Runtime runs such broadcasts 4-10x slower per element than
    a same-shape Mul), and
  - each block is moved step axis first for the readout: one Transpose per block, a single-threaded
    copy in ORT (on one layer at 2 threads: 200 of 814 ms of kernels, the Muls 266).
Here the small factors that vary along L (dt, u, B; the scan's inputs, ~1/16 of a block's size for
all steps together) are moved once, whole, to the blocks' order (L, ..., N, d_inner), and step q of
every chunk is one strided Slice of rows q, q + Q, ... of that; a factor that does not vary along L (A) is
moved alone (a constant: folded). Every block is then (L / Q, batch, N, d_inner): broadcasts run
along 1,536 contiguous floats, the carry's shifts are along the first axis, and the readout gets the
block as it is, laid out (step_replay's Value.layout): transformers' MatMul(h, C_i) becomes
C_i^T @ h, no Transpose. Readouts without a rule for the layout get their block transposed back
(correct, as slow as strided-readout). Numerics are strided-readout's: products of decays <= 1,
nothing divided.

How the factors are moved is what ONNX Runtime makes of it. A factor's Transpose drops its size-1
axes ((1, d_inner, L, 1) -> (d_inner, L) -> (L, d_inner)): ORT's Transpose is single-threaded and
~10x slower with unit axes about (11 ms against 1.1 for 1536 x 1024, 2 threads). It feeds the
strided Slices directly: ORT's transpose optimizer moves a Transpose down through a Reshape that only adds
unit axes (back to the slow form) and through a Split (one small Transpose per piece, Q per factor),
not through a Slice along the first axis.
"""
from __future__ import annotations

from typing import Callable, Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.scan_forms.decays import Decays
from passes.scan_forms.chunk_axes import INT64_MAX
from passes.scan_forms.parallel_strided import interleaved, stepped_decay, strided_chunk, strided_sweeps
from passes.scan_forms.strided_readout import _block_sizes, _GatheredSteps, strided_readout

# readout(block, start, stride, count, layout) -> (readout of steps start, start + stride, ..., step
# axis first, its rank); `layout`: the block's axes in memory as step_replay's Value.layout.
LaidOutReadout = Callable[[gs.Tensor, int, int, int, tuple], tuple[gs.Tensor, int]]


def channels_last_order(rank: int, axis: int, block_sizes: list[int]) -> Optional[list[int]]:
    """The blocks' axes in memory: the scan axis first, the largest other axis (d_inner) last, the
    rest in their order; None when the last axis is already the largest (nothing to gain)."""
    others = [a for a in range(rank) if a != axis]
    sizes = dict(zip(others, block_sizes))
    channel = max(others, key=lambda a: (sizes[a], -a))
    if sizes[channel] <= sizes[others[-1]]:
        return None
    return [axis] + [a for a in others if a != channel] + [channel]


class _ChannelsLastSteps(_GatheredSteps):
    """Strided steps of tensors laid out by `order` (the scan axis first): blocks (chunks, ...)."""

    def __init__(self, builder: GraphBuilder, axis: int, rank: int, length: int, chunk: int, shapes: dict,
                 block_sizes: list[int], order: list[int]) -> None:
        super().__init__(builder, axis, rank, length, chunk, shapes, block_sizes)
        self.order = order
        self.moved: dict[int, tuple] = {}
        self.full: dict[int, gs.Tensor] = {}

    block_axis = property(lambda self: 0)

    def _moved_rows(self, tensor: gs.Tensor) -> tuple[gs.Tensor, Optional[list]]:
        """`tensor` in the blocks' order, its size-1 axes dropped when its static shape is known (then
        also the full target shape), else at full rank: one Transpose, once. Dropped because ORT's
        Transpose is ~10x slower with unit axes about; and the pieces are taken by Slices of this very
        tensor, since ORT's transpose optimizer moves a Transpose through a following Reshape that only
        adds unit axes (back to the slow rank-4 Transpose) or Split (one small Transpose per piece)."""
        if id(tensor) not in self.moved:
            b, short = self.builder, self.rank - self._rank_of(tensor)
            shape = tuple(tensor.shape) if isinstance(tensor, gs.Constant) else self.shapes.get(tensor.name)
            full = b.unsqueeze(tensor, list(range(short))) if short else tensor
            if shape is None or any(not isinstance(size, int) or size < 1 for size in shape):
                self.moved[id(tensor)] = (b.transpose(full, self.order), None)
            else:
                shape = (1,) * short + tuple(shape)
                kept = [axis for axis in range(self.rank) if shape[axis] != 1]
                order = [axis for axis in self.order if shape[axis] != 1]
                rows = b.reshape(full, [shape[axis] for axis in kept])
                if order != kept:
                    rows = b.transpose(rows, [kept.index(axis) for axis in order])
                self.moved[id(tensor)] = (rows, [shape[axis] for axis in self.order])
        return self.moved[id(tensor)]

    def _moved(self, tensor: gs.Tensor) -> gs.Tensor:
        """`tensor` at full rank in the blocks' order (once)."""
        if id(tensor) not in self.full:
            rows, target = self._moved_rows(tensor)
            self.full[id(tensor)] = rows if target is None else self.builder.reshape(rows, target)
        return self.full[id(tensor)]

    def laid_out(self, tensor: gs.Tensor) -> gs.Tensor:
        return self._moved(tensor)

    def _split(self, tensor: gs.Tensor) -> list[gs.Tensor]:
        """Steps q, q + Q, ... of the moved tensor (L, ...): one strided Slice of those rows each (whole
        rows of d_inner floats), reshaped to the block's rank. Not a Reshape to (chunks, Q, ...) and a
        Split: ORT's transpose optimizer moves the Transpose through those onto every piece (Q small
        Transposes, slow ones)."""
        if id(tensor) not in self.split:
            b, chunks = self.builder, self.length // self.chunk
            rows, target = self._moved_rows(tensor)
            pieces = [b.node("Slice", [rows, b.ints([q]), b.ints([INT64_MAX]), b.ints([0]), b.ints([self.chunk])])
                      for q in range(self.chunk)]
            self.split[id(tensor)] = pieces if target is None else [b.reshape(piece, [chunks] + target[1:])
                                                                    for piece in pieces]
        return self.split[id(tensor)]

    def _step(self, tensor: gs.Tensor, q: int) -> gs.Tensor:
        size = self._scan_size(tensor)
        if size == 1:
            return self._moved(tensor)   # the same at every step: moved once
        if size is None:   # unknown size: a strided Slice of the tensor where it is, then moved
            axis = self.axis - (self.rank - self._rank_of(tensor))
            sliced = self.builder.node("Slice", [tensor, self.builder.ints([q]), self.builder.ints([INT64_MAX]),
                                                 self.builder.ints([axis]), self.builder.ints([self.chunk])])
            short = self.rank - self._rank_of(tensor)
            full = self.builder.unsqueeze(sliced, list(range(short))) if short else sliced
            return self.builder.transpose(full, self.order)
        return super()._step(tensor, q)

    def unvarying(self, tensor: gs.Tensor) -> gs.Tensor:
        """Moved to the blocks' order too (A in A * sum(dt))."""
        return self._moved(tensor)


def channels_last_readout(builder: GraphBuilder, *, decays: Decays, drive: gs.Tensor,
                          initial: Optional[gs.Tensor], axis: int, length: int, chunk: int, rank: int,
                          shapes: Optional[dict] = None, readout: Optional[LaidOutReadout] = None) -> gs.Tensor:
    """The readout of every step, step axis first, given `readout`; without one (the states are the
    output), or when the last axis is already the largest, strided-readout's result."""
    shapes = shapes or {}
    sizes = _block_sizes(shapes, [stepped_decay(decays), drive], rank, axis)
    order = channels_last_order(rank, axis, sizes)
    if readout is None or order is None:
        plain = None if readout is None else (lambda block, q, stride, count: readout(block, q, stride, count, None))
        return strided_readout(builder, decays=decays, drive=drive, initial=initial, axis=axis, length=length,
                               chunk=chunk, rank=rank, shapes=shapes, readout=plain)
    steps = _ChannelsLastSteps(builder, axis, rank, length, strided_chunk(length, chunk), shapes, sizes, order)
    blocks = strided_sweeps(builder, steps, decays=decays, drive=drive, initial=initial)
    # The readout sees a state with the step axis first and the others in their order: where each lies in memory.
    logical = [axis] + [a for a in range(rank) if a != axis]
    layout = tuple(logical.index(a) for a in order)
    outputs, output_rank = [], None
    for q, block in enumerate(blocks):
        output, output_rank = readout(block, q, steps.chunk, length // steps.chunk, layout)
        outputs.append(output)
    return interleaved(builder, outputs, 0, output_rank, length)


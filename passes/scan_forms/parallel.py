"""The "parallel" form: every chunk at once, a node count that does not grow with L.

Split the scan axis into (chunks, Q), Q the largest chunk <= the one asked for that divides L
(else L is padded up to a multiple of Q with a = 1, b = 0), and cut the (..., chunks, Q, ...)
view into Q blocks by one Split on its Q axis, block q holding step q of every chunk.
  1. Sweep 1, all chunks at once, Q small steps: each chunk's last state from a zero start,
     and the chunk's decay product.
  2. Carry across chunks, c_k = P_k * c_{k-1} + h_k: a linear recurrence over only L / Q
     values, solved by this same form again (nested) while more than NESTED_ABOVE chunks are
     left, then by a doubling (Hillis-Steele) scan in log2(chunks) rounds.
  3. Sweep 2, Q small steps again, starting every chunk from the carry into it: all states.
Only products of decays <= 1 are formed and nothing is divided, so nothing overflows in
float32 however large |A| * dt gets (chunk24's exp(-cumsum) does). The decays are taken as they
are (decays.Decays.values), never through log: exact for decays of any sign.

Why nested: a doubling scan over the 392 chunks of VMamba-T's stage 0 is 9 rounds of seven
ops on 1/Q of the data (about 8 passes over the whole scan's size, as much as both sweeps
together); one level more costs two sweeps on 1/Q and a doubling over 1/Q^2. One stage-0 scan
alone (768 x 3136, dev 2-core, 2 threads, sums of per-op minima in one interleaved run under
load): 14.3 ms with the Q axis moved to the front by a Transpose and a doubling carry, 14.2 with
the Split on the Q axis, 11.9 with the Split and the nested carry; docs/BENCHMARKS.md.
"""
from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.scan_forms.decays import Decays
from passes.scan_forms.chunk_axes import (chunk_dividing, doubling_scan, merge_axes_shape, padded_to_chunks, shift,
                                          split_axis_shape, sweep)

# The carry over more chunks than this is itself a parallel scan (one level down), not a doubling
# scan: VMamba-T's 392 and 98 chunks (stages 0, 1) nest once, 25 and 7 (stages 2, 3) do not.
NESTED_ABOVE = 64


def _to_step_blocks(builder: GraphBuilder, x: gs.Tensor, axis: int, chunks: int, chunk: int) -> list:
    """(..., chunks * Q, ...) -> Q blocks (..., chunks, 1, ...), block q holding step q of every chunk:
    one Split of the (..., chunks, Q, ...) view on its Q axis, no Transpose for ONNX Runtime's
    transpose optimizer to push into the sweeps (it made a copy of every block there)."""
    split = builder.reshape(x, split_axis_shape(builder, x, axis, chunks, chunk))
    return builder.split(split, [1] * chunk, axis + 1) if chunk > 1 else [split]


def _from_step_blocks(builder: GraphBuilder, blocks: list, axis: int) -> gs.Tensor:
    """The inverse of _to_step_blocks: one Concat on the Q axis, then a Reshape."""
    merged = builder.concat(blocks, axis + 1) if len(blocks) > 1 else blocks[0]
    return builder.reshape(merged, merge_axes_shape(builder, merged, axis))


def _sweeps(builder: GraphBuilder, decays: list, drives: list, chunk_axis: int, chunks: int, rank: int) -> list:
    """States of every step block (see _to_step_blocks), `rank` the blocks' rank."""
    chunk = len(decays)
    carry_in = None
    if chunks > 1:
        last, chunk_decay = drives[0], decays[0]
        for q in range(1, chunk):
            last = builder.add(builder.mul(decays[q], last), drives[q])
            # A Mul chain on 1/Q-size blocks: ORT's ReduceSum over the leading axis is ~20x slower.
            chunk_decay = builder.mul(chunk_decay, decays[q])
        if chunks > NESTED_ABOVE and chunk > 1:   # with Q = 1, one level down is this scan again, without end
            carry = _states(builder, chunk_decay, last, axis=chunk_axis, length=chunks, chunk=chunk, rank=rank)
        else:
            carry = doubling_scan(builder, chunk_decay, last, rank, chunk_axis, chunks)
        carry_in = shift(builder, carry, rank, chunk_axis, 1, chunks, 0.0)
    return sweep(builder, decays, drives, carry_in)


def _states(builder: GraphBuilder, decay: gs.Tensor, drive: gs.Tensor, *, axis: int, length: int, chunk: int,
            rank: int) -> gs.Tensor:
    """States from zero of x_k = decay_k * x_{k-1} + drive_k along axis, the decays given as they are
    (the carry across chunks one level up)."""
    chunk = chunk_dividing(length, chunk)
    chunks = -(-length // chunk)
    padded = chunks * chunk
    if padded != length:   # padded steps carry the last state unchanged; cut off below
        decay = builder.pad_axis(decay, rank, axis, 0, padded - length, 1.0)
        drive = builder.pad_axis(drive, rank, axis, 0, padded - length, 0.0)
    decays = _to_step_blocks(builder, decay, axis, chunks, chunk)
    drives = _to_step_blocks(builder, drive, axis, chunks, chunk)
    states = _from_step_blocks(builder, _sweeps(builder, decays, drives, axis, chunks, rank + 1), axis)
    return builder.slice(states, 0, length, axis) if padded != length else states


def parallel_states(builder: GraphBuilder, *, decays: Decays, drive: gs.Tensor, initial: Optional[gs.Tensor],
                    axis: int, length: int, chunk: int, rank: int) -> gs.Tensor:
    decay, drive, chunk, chunks = padded_to_chunks(builder, decays.values, drive, axis=axis, length=length,
                                                   chunk=chunk, rank=rank, unit_decay=1.0)
    padded = chunks * chunk
    # (..., L, ...) -> Q blocks (..., chunks, 1, ...)
    decay_blocks = _to_step_blocks(builder, decay, axis, chunks, chunk)
    drives = _to_step_blocks(builder, drive, axis, chunks, chunk)

    if initial is not None:
        # Fold the initial state into chunk 0's first drive: x_0 = a_0 * x_init + b_0, then start from zero.
        start = builder.unsqueeze(initial, [axis + 1])
        first = builder.add(builder.slice(drives[0], 0, 1, axis), builder.mul(builder.slice(decay_blocks[0], 0, 1, axis), start))
        drives[0] = builder.concat([first, builder.slice(drives[0], 1, chunks, axis)], axis) if chunks > 1 else first

    merged = _from_step_blocks(builder, _sweeps(builder, decay_blocks, drives, axis, chunks, rank + 1), axis)
    return builder.slice(merged, 0, length, axis) if padded != length else merged

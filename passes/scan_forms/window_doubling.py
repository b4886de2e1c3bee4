"""The "window-doubling" form: the scan with its step axis last, every op on whole tensors.

The scan axis is moved last and split into (chunks, Q). Inside every chunk at once, a doubling
(Hillis-Steele) scan over Q in ceil(log2 Q) rounds: the round with shift s adds
    w_s[q] * local[q - s],    w_s[q] = a_{q-s+1} ... a_q = exp(log a @ band_s),
the shift a MatMul by a shifted identity and the window's decay product a MatMul of the log
decays by a constant 0/1 band, then Exp (<= 0, so <= 1). Each chunk's decay product and last
state are a recurrence over only L / Q values: this same form again, one level down, until one
chunk is left. Then states = local + growth * carry, growth = exp(log a @ triangle).
Only products of decays <= 1 are formed and nothing is divided: nothing overflows in float32.
The window products are sums of log decays: only for decays with a log (decays.Decays.log, every
a_i provably > 0); the pass refuses others.
Why: ONNX Runtime at 16 threads runs each of the parallel form's ~130 nodes per scan on a 1/Q
block (a thread-pool hand-off each) and its Split and Concat on the Q axis as single-threaded
strided copies; here there is no Split or Concat, and each op is a multi-threaded MatMul or an
element-wise op over the whole scan.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.scan_forms.decays import Decays
from patterns.graph_query import producer_op
from passes.scan_forms.chunk_axes import (chunk_dividing, merge_axes_shape, move_axis, shift, shift_last_by_matmul,
                                          split_axis_shape)


# The carry into the chunks shifted by a MatMul by a (chunks x chunks) shifted identity, as the
# shifts inside the chunks, up to this many chunks (a 256 KB constant); beyond, by Slice + Pad (two
# one-thread copies in ONNX Runtime: their 16-thread time, measured below, is what the MatMul saves).
MATMUL_CARRY_UP_TO = 256


def _band(length: int, width: int, dtype) -> np.ndarray:
    """(length, length), [i, q] = 1 for q - width < i <= q: x @ band sums the `width` steps ending at q."""
    rows = np.arange(length)[:, None]
    cols = np.arange(length)[None, :]
    return ((rows <= cols) & (rows > cols - width)).astype(dtype)


def _in_chunk(builder: GraphBuilder, log_decay: gs.Tensor, drive: gs.Tensor, steps: int) -> tuple:
    """(states from zero, growth a_1 ... a_q) of every chunk, the `steps` axis last."""
    local, shift_by = drive, 1
    while shift_by < steps:
        window = (builder.exp(log_decay) if shift_by == 1
                  else builder.exp(builder.matmul(log_decay, builder.const(_band(steps, shift_by, builder.dtype)))))
        moved = builder.matmul(local, builder.const(np.eye(steps, k=shift_by, dtype=builder.dtype)))
        local = builder.add(local, builder.mul(window, moved))
        shift_by *= 2
    growth = builder.exp(builder.matmul(log_decay, builder.const(_band(steps, steps, builder.dtype))))
    return local, growth


def _steps_per_chunk(length: int, chunk: int) -> int:
    # At least 2 steps a chunk: with 1 the level below would be this scan again, without end
    # (chunk_dividing gives 1 for an odd length and a chunk of 2).
    return max(2, chunk_dividing(length, max(chunk, 2)))


def _steps_per_level(length: int, chunk: int, one_chunk_up_to: int) -> int:
    # A short scan as one chunk: at 16 threads VMamba-T's stage-3 scans (49 steps) ran in 2.8 ms as
    # one chunk of 49 (6 rounds), 5.1 ms as 7 chunks of 7 and a level below (two levels of 3 rounds
    # and the carry between them: more, smaller nodes, each a thread-pool hand-off).
    return length if length <= one_chunk_up_to else _steps_per_chunk(length, chunk)


def window_doubling_table_side(length: int, chunk: int, carry_shifts: str = "matmul", one_chunk_up_to: int = 0) -> int:
    """Side of the largest square constant the form builds for a scan of `length` steps: the
    (steps x steps) bands and shifted identities of every level and the (chunks x chunks) shifted
    identity that carries into its chunks, all `length` steps where one chunk covers them
    (carry_shifts: not an option of this form)."""
    side = 0
    while True:
        steps = _steps_per_level(length, chunk, one_chunk_up_to)
        if steps >= length:
            return max(side, length)
        chunks = -(-length // steps)
        side, length = max(side, steps, chunks if chunks <= MATMUL_CARRY_UP_TO else 0), chunks


def _last_axis_states(builder: GraphBuilder, log_decay: gs.Tensor, drive: gs.Tensor, length: int, chunk: int,
                      rank: int, one_chunk_up_to: int = 0) -> gs.Tensor:
    """States from zero along the last axis (length `length`)."""
    last = rank - 1
    steps = _steps_per_level(length, chunk, one_chunk_up_to)
    if steps >= length:
        return _in_chunk(builder, log_decay, drive, length)[0]
    chunks = -(-length // steps)
    padded = chunks * steps
    if padded != length:   # a = 1, b = 0: the padded steps carry the last state; cut off below
        log_decay = builder.pad_axis(log_decay, rank, last, 0, padded - length, 0.0)
        drive = builder.pad_axis(drive, rank, last, 0, padded - length, 0.0)
    log_decay = builder.reshape(log_decay, split_axis_shape(builder, log_decay, last, chunks, steps))
    drive = builder.reshape(drive, split_axis_shape(builder, drive, last, chunks, steps))
    local, growth = _in_chunk(builder, log_decay, drive, steps)
    # One level down: each chunk's decay product and last state, the chunk axis last.
    chunk_log_decay = builder.reduce_sum(log_decay, [rank], keepdims=0)
    # Step Q - 1 by a Gather (the step axis dropped), which ONNX Runtime spreads over its threads: as a
    # Slice it was a one-thread strided copy (1.5 ms for a stage-0 scan at 16 threads; the whole graph
    # 124.4 -> 118.1 ms with the Gather, 16-core host), as a MatMul by a one-hot vector a one-thread GEMV (11 ms).
    chunk_end = builder.gather(local, steps - 1, rank)
    ends = _last_axis_states(builder, chunk_log_decay, chunk_end, chunks, chunk, rank, one_chunk_up_to)
    shifted = shift_last_by_matmul if chunks <= MATMUL_CARRY_UP_TO else shift
    carry = builder.unsqueeze(shifted(builder, ends, rank, last, 1, chunks, 0.0), [rank])
    states = builder.add(local, builder.mul(growth, carry))
    merged = builder.reshape(states, merge_axes_shape(builder, states, last))
    return builder.slice(merged, 0, length, last) if padded != length else merged


def window_doubling_states(builder: GraphBuilder, *, decays: Decays, drive: gs.Tensor,
                           initial: Optional[gs.Tensor], axis: int, length: int, chunk: int, rank: int,
                           one_chunk_up_to: int = 0) -> gs.Tensor:
    last, log_decay = rank - 1, decays.log
    if producer_op(log_decay) == "Log":
        # A decay of 0 has log -inf, and the window MatMuls multiply it by the band's zeros: NaN.
        # -1e30 has the same Exp (0) and stays finite in sums of up to ~3e8 steps.
        log_decay = builder.max(log_decay, builder.scalar(-1e30))
    log_decay = move_axis(builder, log_decay, rank, axis, last)
    drive = move_axis(builder, drive, rank, axis, last)
    if initial is not None:
        # Fold the initial state into the first drive: x_0 = a_0 * x_init + b_0, then start from zero.
        start = move_axis(builder, initial, rank, axis, last)
        first = builder.add(builder.slice(drive, 0, 1, last),
                            builder.mul(builder.exp(builder.slice(log_decay, 0, 1, last)), start))
        drive = builder.concat([first, builder.slice(drive, 1, length, last)], last) if length > 1 else first
    states = _last_axis_states(builder, log_decay, drive, length, chunk, rank, one_chunk_up_to)
    return move_axis(builder, states, rank, last, axis)

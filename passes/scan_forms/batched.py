"""The "batched" form: chunk24's arithmetic with every chunk at once.

Split the scan axis into (chunks, Q) and keep that layout, so the chunk axis is a batch axis
and nothing is transposed. Q is the largest divisor of L up to `chunk`; only when that is below
chunk / 2 is L padded to a multiple of `chunk` (log a = 0, b = 0), since padding and cutting
off copy whole tensors, which costs on a TPU.
  1. In every chunk at once, from a zero start (the chunk24 formula, exponents centred):
         S = cumsum(log a) over Q,  m = sum(log a) / 2 over Q,
         local = exp(S - m) * cumsum(b * exp(m - S)) over Q   (= exp(S) * cumsum(b * exp(-S))).
  2. Per chunk, its decay product P = exp(2m) and its last local state e.
     Carry across chunks, c_k = P_{k-1} * c_{k-1} + e_{k-1} (P: a chunk's decay product,
     e: its last local state, c_0: the initial state): a linear recurrence over only L / Q
     values, solved by a doubling (Hillis-Steele) scan in ceil(log2(L / Q)) rounds.
  3. states = local + exp(S) * c.
Node count does not grow with L (except one doubling round per doubling of L / Q), and the
only CumSums are two short ones over Q, which cumsum-to-matmul turns into MatMuls: what
tpu-mlir wants (few ops for its layer-group search, no Permutes, no long global CumSum).
Numerics: chunk24's exp(-S) overflows in float32 once |A| * sum(dt) over one chunk passes ~87;
centring on m moves that to ~174 at the cost of two small ops. The cross-chunk carry only
multiplies decays <= 1. Works in log space: only for decays with a log (decays.Decays.log, every
a_i provably > 0); the pass refuses others.
"""
from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import MAX_INDEX_TABLE, GraphBuilder
from passes.scan_forms.decays import Decays
from passes.scan_forms.chunk_axes import (carry_into_chunks, chunk_dividing, dense_carry_into_chunks, merge_axes_shape,
                                          padded_to_chunks, paired_carry_in_place, split_axis_shape)


def batched_table_side(length: int, chunk: int, carry_shifts: str = "matmul", one_chunk_up_to: int = 0) -> int:
    """Side of the largest square constant the form builds for a scan of `length` steps: the carry's
    (chunks x chunks) shifted identities with `carry_shifts` "matmul" (chunk_axes.carry_into_chunks),
    none with "slices" (the dense carry's, when taken, is smaller: chunks^3 <= MAX_INDEX_TABLE)."""
    chunks = -(-length // chunk_dividing(length, chunk))
    return chunks if carry_shifts == "matmul" and chunks > 1 else 0


def batched_states(builder: GraphBuilder, *, decays: Decays, drive: gs.Tensor, initial: Optional[gs.Tensor],
                   axis: int, length: int, chunk: int, rank: int, dense_carry: int = 0,
                   carry_shifts: str = "matmul") -> gs.Tensor:
    """All states; `dense_carry` > 0: with at most that many chunks (and chunks^3 <= MAX_INDEX_TABLE, the
    size of its constant), no initial state and the step axis last, the carry across chunks is
    dense_carry_into_chunks (one weight matrix per channel). Otherwise
    the doubling carry: `carry_shifts` "matmul", chunk_axes.carry_into_chunks (the chunk axis moved last,
    shifted by MatMuls); "slices", chunk_axes.paired_carry_in_place (the chunk axis left in place,
    shifted by Slice + Concat)."""
    log_decay, drive, chunk, chunks = padded_to_chunks(builder, decays.log, drive, axis=axis, length=length,
                                                       chunk=chunk, rank=rank, unit_decay=0.0)
    padded = chunks * chunk
    # (..., L, ...) -> (..., chunks, Q, ...)
    split_rank, chunk_axis, step_axis = rank + 1, axis, axis + 1
    log_decay = builder.reshape(log_decay, split_axis_shape(builder, log_decay, axis, chunks, chunk))
    drive = builder.reshape(drive, split_axis_shape(builder, drive, axis, chunks, chunk))

    # Exponents centred on half the chunk's log-decay sum m: exp(S - m) and exp(m - S) stay within
    # exp(|sum| / 2), so float32 overflows only past |A| * sum(dt) ~ 174 per chunk, twice chunk24's.
    log_decay_so_far = builder.cumsum(log_decay, step_axis)
    half_chunk_log = builder.mul(builder.reduce_sum(log_decay, [step_axis]), builder.scalar(0.5))
    centred = builder.sub(log_decay_so_far, half_chunk_log)
    growth = builder.exp(centred)                                         # exp(S - m)
    scaled_drive = builder.mul(drive, builder.exp(builder.neg(centred)))  # b * exp(m - S)
    local = builder.mul(growth, builder.cumsum(scaled_drive, step_axis))  # exp(S) * cumsum(b * exp(-S))

    states = local
    if chunks > 1 or initial is not None:
        # Per chunk: its decay product exp(2m) and its last local state exp(m) * sum(b * exp(m - S)),
        # from reductions over Q rather than Slices at Q - 1: on a TPU a strided one-element-per-row
        # copy is slow, a reduction is not.
        lift = builder.exp(half_chunk_log)
        chunk_decay = builder.mul(lift, lift)
        chunk_end = builder.mul(lift, builder.reduce_sum(scaled_drive, [step_axis]))
        start = (lambda: builder.unsqueeze(initial, [step_axis])) if initial is not None else None
        # the dense carry's constant has chunks^3 entries: beyond MAX_INDEX_TABLE, the doubling scan
        dense = 1 < chunks <= dense_carry and chunks ** 3 <= MAX_INDEX_TABLE
        if dense and initial is None and step_axis == split_rank - 1:
            carry = dense_carry_into_chunks(builder, builder.mul(half_chunk_log, builder.scalar(2.0)), chunk_end,
                                            split_rank, chunk_axis, chunks)
        elif carry_shifts == "slices":
            carry = paired_carry_in_place(builder, chunk_decay, chunk_end, start, split_rank, chunk_axis, step_axis,
                                          chunks)
        else:
            carry = carry_into_chunks(builder, chunk_decay, chunk_end, start, split_rank, chunk_axis, chunks)
        states = builder.add(local, builder.mul(growth, builder.mul(lift, carry)))  # + exp(S) * carry
    merged = builder.reshape(states, merge_axes_shape(builder, states, axis))
    return builder.slice(merged, 0, length, axis) if padded != length else merged

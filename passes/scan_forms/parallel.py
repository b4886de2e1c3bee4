"""The "parallel" form: every chunk at once, a node count that does not grow with L.

Split the scan axis into (chunks, Q), Q the largest chunk <= the one asked for that divides L
(else L is padded up to a multiple of Q with a = 1, b = 0), and move the Q axis to the front so
that position q of every chunk is one contiguous block.
  1. Sweep 1, all chunks at once, Q small steps: each chunk's last state from a zero start.
     and the chunk's decay product.
  2. Carry across chunks, c_k = P_k * c_{k-1} + h_k: a linear recurrence over only L / Q
     values, solved by a doubling (Hillis-Steele) scan in log2(L / Q) rounds.
  3. Sweep 2, Q small steps again, starting every chunk from the carry into it: all states.
Only products of decays <= 1 are formed and nothing is divided, so nothing overflows in
float32 however large |A| * dt gets (chunk24's exp(-cumsum) does).
"""
from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.scan_forms.chunk_axes import (doubling_scan, merge_axes_shape, move_axis, padded_to_chunks, shift,
                                          split_axis_shape)


def parallel_states(builder: GraphBuilder, *, log_decay: gs.Tensor, drive: gs.Tensor, initial: Optional[gs.Tensor],
                    axis: int, length: int, chunk: int, rank: int) -> gs.Tensor:
    log_decay, drive, chunk, chunks = padded_to_chunks(builder, log_decay, drive, axis=axis, length=length,
                                                       chunk=chunk, rank=rank)
    padded = chunks * chunk
    # (..., L, ...) -> (Q, ..., chunks, ...): step q of every chunk is one contiguous block.
    split_rank, chunk_axis = rank + 1, axis + 1
    split_log_decay = builder.reshape(log_decay, split_axis_shape(builder, log_decay, axis, chunks, chunk))
    log_decay = move_axis(builder, split_log_decay, split_rank, axis + 1, 0)
    split_drive = builder.reshape(drive, split_axis_shape(builder, drive, axis, chunks, chunk))
    drive = move_axis(builder, split_drive, split_rank, axis + 1, 0)
    decay = builder.exp(log_decay)
    # One Split per input, not Q Slices: ONNX Runtime moves the Transpose above past its consumers, so each
    # Slice becomes a strided copy of the whole tensor (~2 ms each for stage 0 of VMamba-T, 16-core host).
    decays = builder.split(decay, [1] * chunk, 0) if chunk > 1 else [decay]
    drives = builder.split(drive, [1] * chunk, 0) if chunk > 1 else [drive]

    if initial is not None:
        # Fold the initial state into chunk 0's first drive: x_0 = a_0 * x_init + b_0, then start from zero.
        start = builder.unsqueeze(initial, [0])
        first = builder.add(builder.slice(drives[0], 0, 1, chunk_axis),
                            builder.mul(builder.slice(decays[0], 0, 1, chunk_axis), start))
        drives[0] = (builder.concat([first, builder.slice(drives[0], 1, chunks, chunk_axis)], chunk_axis)
                     if chunks > 1 else first)

    carry_in = None
    if chunks > 1:
        last, chunk_decay = drives[0], decays[0]
        for q in range(1, chunk):
            last = builder.add(builder.mul(decays[q], last), drives[q])
            # A Mul chain on 1/Q-size blocks: ORT's ReduceSum over the leading axis is ~20x slower.
            chunk_decay = builder.mul(chunk_decay, decays[q])
        carry = doubling_scan(builder, chunk_decay, last, split_rank, chunk_axis, chunks)
        carry_in = shift(builder, carry, split_rank, chunk_axis, 1, chunks, 0.0)
    states, state = [], carry_in
    for q in range(chunk):
        state = drives[q] if state is None else builder.add(builder.mul(decays[q], state), drives[q])
        states.append(state)
    merged = builder.concat(states, 0) if chunk > 1 else states[0]
    merged = move_axis(builder, merged, split_rank, 0, axis + 1)
    merged = builder.reshape(merged, merge_axes_shape(builder, merged, axis))
    return builder.slice(merged, 0, length, axis) if padded != length else merged

"""The "batched-doubling" form: the batched layout without its exp(-cumsum), stable for any decay.

`batched` computes each chunk's states as exp(S) * cumsum(b * exp(-S)); its centred exponents
overflow float32 once |A| * sum(dt) over one chunk passes ~174. With d_state N > 1 the decays are
per (channel, state) and |A| reaches N (Mamba's init A = -(1..N)): a randomly initialised
Mamba-130m-shaped transformers model has |A| * sum(dt) up to ~1,000 over 32 steps and ~380 even
over 8, and its `tpu` graph gave NaN. So here, in the same (..., chunks, Q, ...) layout:
  1. In every chunk at once, from a zero start, a doubling (Hillis-Steele) scan over Q in
     ceil(log2 Q) rounds: after the round with shift s, position q holds the composition of
     steps q-2s+1 .. q. Each round shifts along Q, moved last, by a MatMul with a shifted
     identity (a constant right operand), which a TPU keeps in its layer group. The
     decay window products ride along, so after the last round they are the prefix products
     a_1 ... a_q (the growth exp(S)) with no CumSum and no Exp beyond exp(log a).
  2. Per chunk, its decay product and last state: step Q - 1, picked by a MatMul with a one-hot
     column (no strided Slice); the carry across chunks as in `batched` (chunk_axes.carry_into_chunks).
  3. states = local + growth * carry.
Numerics: every factor is a product of decays <= 1 and nothing is divided, so nothing overflows
in float32 whatever |A| * dt is (small products underflow to 0, which is their value). The decays
are taken as they are (decays.Decays.values): exact for decays of any sign.
Cost: ~2 * log2(Q) shift-MatMuls on the full tensor where `batched` has 2 short CumSums and 2 Exps,
and, unless the scan axis is already last, Q moved last and back (Transposes; transformers' Mamba:
(batch, d_inner, chunks, N, Q)). The pass uses it for recurrences with decays per (channel,
state), d_state N > 1, only (reroll-scans' state_form).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.scan_forms.decays import Decays
from passes.scan_forms.chunk_axes import (carry_into_chunks, chunk_dividing, merge_axes_shape, move_axis, padded_to_chunks,
                                          shift_last_by_matmul, split_axis_shape)


def batched_doubling_table_side(length: int, chunk: int, carry_shifts: str = "matmul", one_chunk_up_to: int = 0) -> int:
    """Side of the largest square constant the form builds for a scan of `length` steps: the (Q x Q)
    shifted identities inside the chunks and the carry's (chunks x chunks) ones (carry_shifts: not
    an option of this form)."""
    steps = chunk_dividing(length, chunk)
    return max(steps, -(-length // steps))


def batched_doubling_states(builder: GraphBuilder, *, decays: Decays, drive: gs.Tensor,
                            initial: Optional[gs.Tensor], axis: int, length: int, chunk: int, rank: int) -> gs.Tensor:
    decay, drive, chunk, chunks = padded_to_chunks(builder, decays.values, drive, axis=axis, length=length,
                                                   chunk=chunk, rank=rank, unit_decay=1.0)
    padded = chunks * chunk
    # (..., L, ...) -> (..., chunks, ..., Q): Q last, so that every shift is x @ (a shifted identity),
    # a constant right operand. tpu-mlir refuses a broadcast left operand above 4-D ("Not support
    # broadcast in MatMul of dims larger than 4"), which a constant on the left would be here.
    split_rank, chunk_axis, last = rank + 1, axis, rank

    def to_layout(x: gs.Tensor) -> gs.Tensor:
        return move_axis(builder, x, split_rank, axis + 1, last)

    decay = to_layout(builder.reshape(decay, split_axis_shape(builder, decay, axis, chunks, chunk)))
    drive = to_layout(builder.reshape(drive, split_axis_shape(builder, drive, axis, chunks, chunk)))

    local, window_decay, step = drive, decay, 1
    while step < chunk:
        local = builder.add(local, builder.mul(window_decay,
                                               shift_last_by_matmul(builder, local, split_rank, last, step, chunk, 0.0)))
        window_decay = builder.mul(window_decay,
                                   shift_last_by_matmul(builder, window_decay, split_rank, last, step, chunk, 1.0))
        step *= 2
    growth = window_decay   # a_1 ... a_q within the chunk: the window now covers the whole prefix

    states = local
    if chunks > 1 or initial is not None:
        last_step = builder.const(np.eye(chunk, 1, -(chunk - 1), dtype=builder.dtype))   # (Q, 1) one-hot at Q - 1
        chunk_decay = builder.matmul(growth, last_step)
        chunk_end = builder.matmul(local, last_step)
        start = (lambda: to_layout(builder.unsqueeze(initial, [axis + 1]))) if initial is not None else None
        carry = carry_into_chunks(builder, chunk_decay, chunk_end, start, split_rank, chunk_axis, chunks)
        states = builder.add(local, builder.mul(growth, carry))
    states = move_axis(builder, states, split_rank, last, axis + 1)
    merged = builder.reshape(states, merge_axes_shape(builder, states, axis))
    return builder.slice(merged, 0, length, axis) if padded != length else merged

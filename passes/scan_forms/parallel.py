"""The "parallel" form: every chunk at once, a fixed number of nodes whatever L is.

Split the scan axis into (chunks, Q) and pad L up to a multiple of Q with a_i = 1, b_i = 0.
  1. Within every chunk at once, run the recurrence step by step over the Q positions
     (Q small steps, each 1/Q of the data): local states h, and decay products P = exp(cumsum(log a)).
  2. Across chunks, the carry c_k = P_last(k) * c_{k-1} + h_last(k) is itself a linear
     recurrence, over only L / Q values: solve it with a doubling (Hillis-Steele) scan.
  3. x = h + P * carry_into_chunk.
Only products of decays <= 1 are ever formed and nothing is divided, so nothing overflows in
float32, however large |A| * dt gets (chunk24's exp(-cumsum) does).
"""
from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from passes.scan_forms.builder import GraphBuilder

INT64_MAX = 2**63 - 1


def _split_axis_shape(b: GraphBuilder, x: gs.Tensor, axis: int, chunks: int, chunk: int) -> gs.Tensor:
    """Shape of x with its `axis` replaced by (chunks, chunk)."""
    shape = b.shape(x)
    head = b.slice(shape, 0, axis, 0)
    tail = b.slice(shape, axis + 1, INT64_MAX, 0)
    return b.concat([head, b.ints([chunks, chunk]), tail], 0)


def _merge_axes_shape(b: GraphBuilder, x: gs.Tensor, axis: int) -> gs.Tensor:
    """Shape of x with axes (axis, axis + 1) merged into one."""
    shape = b.shape(x)
    head = b.slice(shape, 0, axis, 0)
    tail = b.slice(shape, axis + 2, INT64_MAX, 0)
    return b.concat([head, b.ints([-1]), tail], 0)


def _shift(b: GraphBuilder, x: gs.Tensor, rank: int, axis: int, count: int, length: int, fill: float) -> gs.Tensor:
    """x moved `count` places along axis, the gap filled with `fill`: out[k] = x[k - count]."""
    return b.pad_axis(b.slice(x, 0, length - count, axis), rank, axis, count, 0, fill)


def _doubling_scan(b: GraphBuilder, decay: gs.Tensor, inputs: gs.Tensor, rank: int, axis: int, length: int) -> gs.Tensor:
    """States of x_k = decay_k * x_{k-1} + inputs_k from zero, along axis, in ceil(log2(length)) rounds.

    After the round with shift s, position k holds the composition of steps k-2s+1 .. k."""
    shift = 1
    while shift < length:
        shifted_inputs = _shift(b, inputs, rank, axis, shift, length, 0.0)
        if shift * 2 < length:  # the last round's decay products are never used
            shifted_decay = _shift(b, decay, rank, axis, shift, length, 1.0)
            inputs = b.add(inputs, b.mul(decay, shifted_inputs))
            decay = b.mul(decay, shifted_decay)
        else:
            inputs = b.add(inputs, b.mul(decay, shifted_inputs))
        shift *= 2
    return inputs


def parallel_states(b: GraphBuilder, log_decay: gs.Tensor, drive: gs.Tensor, initial: Optional[gs.Tensor],
                    axis: int, length: int, chunk: int, rank: int) -> gs.Tensor:
    if initial is not None:
        # Fold the initial state into the first input: x_0 = a_0 * x_init + b_0; then start from zero.
        first = b.add(b.slice(drive, 0, 1, axis), b.mul(b.exp(b.slice(log_decay, 0, 1, axis)), initial))
        drive = b.concat([first, b.slice(drive, 1, length, axis)], axis) if length > 1 else first
    chunk = max(1, min(chunk, length))
    chunks = -(-length // chunk)
    padded = chunks * chunk
    if padded != length:
        log_decay = b.pad_axis(log_decay, rank, axis, 0, padded - length, 0.0)
        drive = b.pad_axis(drive, rank, axis, 0, padded - length, 0.0)
    # (..., L, ...) -> (..., chunks, Q, ...): position q of every chunk sits on q_axis.
    log_decay = b.reshape(log_decay, _split_axis_shape(b, log_decay, axis, chunks, chunk))
    drive = b.reshape(drive, _split_axis_shape(b, drive, axis, chunks, chunk))
    split_rank, q_axis = rank + 1, axis + 1

    decay = b.exp(log_decay)
    state = None
    local = []
    for q in range(chunk):
        b_q = b.slice(drive, q, q + 1, q_axis)
        state = b_q if state is None else b.add(b.mul(b.slice(decay, q, q + 1, q_axis), state), b_q)
        local.append(state)
    states = b.concat(local, q_axis) if chunk > 1 else local[0]

    if chunks > 1:
        # Carry across chunks: a recurrence over the chunk axis, decay = product over the chunk,
        # input = the chunk's last local state. Then x = local + (a_0 .. a_q) * carry into the chunk.
        products = b.exp(b.cumsum(log_decay, q_axis))
        chunk_decay = b.slice(products, chunk - 1, chunk, q_axis)
        carry = _doubling_scan(b, chunk_decay, state, split_rank, axis, chunks)
        carry_in = _shift(b, carry, split_rank, axis, 1, chunks, 0.0)
        states = b.add(states, b.mul(products, carry_in))
    states = b.reshape(states, _merge_axes_shape(b, states, axis))
    if padded != length:
        states = b.slice(states, 0, length, axis)
    return states

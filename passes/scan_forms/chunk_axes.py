"""Axis plumbing shared by the chunked scan forms: split L into (chunks, Q), shift along an axis,
and the doubling (Hillis-Steele) scan that carries state across chunks."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder

INT64_MAX = 2**63 - 1


def chunk_dividing(length: int, chunk: int) -> int:
    """The largest chunk <= `chunk` that divides `length`, if it is at least half of `chunk`
    (no padding needed), else `chunk` itself (the scan axis gets padded)."""
    chunk = max(1, min(chunk, length))
    best = next(q for q in range(chunk, 0, -1) if length % q == 0)
    return best if 2 * best >= chunk else chunk


def padded_to_chunks(builder: GraphBuilder, decay: gs.Tensor, drive: gs.Tensor, *, axis: int, length: int,
                     chunk: int, rank: int, unit_decay: float) -> tuple[gs.Tensor, gs.Tensor, int, int]:
    """(decay, drive, chunk, chunks) with the scan axis padded up to chunks * chunk steps; padded
    steps have a = 1 (`unit_decay`: 1.0 for decays as they are, 0.0 for log decays) and b = 0, so they
    carry the last state unchanged and are cut off after."""
    chunk = chunk_dividing(length, chunk)
    chunks = -(-length // chunk)
    padded = chunks * chunk
    if padded != length:
        decay = builder.pad_axis(decay, rank, axis, 0, padded - length, unit_decay)
        drive = builder.pad_axis(drive, rank, axis, 0, padded - length, 0.0)
    return decay, drive, chunk, chunks


def split_axis_shape(builder: GraphBuilder, x: gs.Tensor, axis: int, chunks: int, chunk: int) -> gs.Tensor:
    """Shape of x with its `axis` replaced by (chunks, chunk)."""
    shape = builder.shape(x)
    head = builder.slice(shape, 0, axis, 0)
    tail = builder.slice(shape, axis + 1, INT64_MAX, 0)
    return builder.concat([head, builder.ints([chunks, chunk]), tail], 0)


def merge_axes_shape(builder: GraphBuilder, x: gs.Tensor, axis: int) -> gs.Tensor:
    """Shape of x with axes (axis, axis + 1) merged into one."""
    shape = builder.shape(x)
    head = builder.slice(shape, 0, axis, 0)
    tail = builder.slice(shape, axis + 2, INT64_MAX, 0)
    return builder.concat([head, builder.ints([-1]), tail], 0)


def move_axis_perm(rank: int, source: int, destination: int) -> list[int]:
    perm = [axis for axis in range(rank) if axis != source]
    perm.insert(destination, source)
    return perm


def move_axis(builder: GraphBuilder, x: gs.Tensor, rank: int, source: int, destination: int) -> gs.Tensor:
    """x with one axis moved (a Transpose), or x itself when it stays."""
    if source == destination:
        return x
    return builder.transpose(x, move_axis_perm(rank, source, destination))


def transpose_without_unit_axes(builder: GraphBuilder, x: gs.Tensor, perm: Sequence[int], shape: Optional[Sequence],
                                output: Optional[gs.Variable] = None) -> gs.Tensor:
    """Transpose(x, perm) with x's size-1 axes dropped first when its static `shape` is known: a Reshape
    to the other axes, the Transpose of those (none when they keep their order), a Reshape to the
    result. ONNX Runtime's Transpose runs one thread, and ~10x slower with unit axes about: (1, 1536,
    1024, 1) to (1024, 1, 1, 1536) took 11 ms where (1536, 1024) to (1024, 1536) took 1.1 (2 threads)."""
    if shape is None or any(not isinstance(size, int) or size < 1 for size in shape):
        return builder.transpose(x, perm, output=output)
    kept = [axis for axis in range(len(shape)) if shape[axis] != 1]
    order = [axis for axis in perm if shape[axis] != 1]
    target = [shape[axis] for axis in perm]
    if kept and len(kept) == len(shape):
        return builder.transpose(x, perm, output=output)
    squeezed = x   # every axis of size 1: the Reshape to the result is all it takes
    if kept:
        squeezed = builder.reshape(x, [shape[axis] for axis in kept])
        if order != kept:
            squeezed = builder.transpose(squeezed, [kept.index(axis) for axis in order])
    if output is None:
        return builder.reshape(squeezed, target)
    return builder.node("Reshape", [squeezed, builder.ints(target)], output=output)


def shift(builder: GraphBuilder, x: gs.Tensor, rank: int, axis: int, count: int, length: int, fill: float) -> gs.Tensor:
    """x moved `count` places along axis, the gap filled with `fill`: out[k] = x[k - count]."""
    return builder.pad_axis(builder.slice(x, 0, length - count, axis), rank, axis, count, 0, fill)


def shift_last_by_matmul(builder: GraphBuilder, x: gs.Tensor, rank: int, axis: int, count: int, length: int,
                         fill: float) -> gs.Tensor:
    """`shift` along the last axis as x @ (a shifted identity) [+ fill]: on a TPU a MatMul by a small
    constant joins a layer group, while a Slice or Pad of a few elements per row is a slow global copy."""
    assert axis == rank - 1, "shift_last_by_matmul shifts the last axis"
    matrix = np.eye(length, k=count, dtype=builder.dtype)
    shifted = builder.matmul(x, builder.const(matrix))
    if fill == 0.0:
        return shifted
    gap = np.zeros(length, dtype=builder.dtype)
    gap[:count] = fill
    return builder.add(shifted, builder.const(gap))


ShiftFunction = Callable[[GraphBuilder, gs.Tensor, int, int, int, int, float], gs.Tensor]


def doubling_scan(builder: GraphBuilder, decay: gs.Tensor, drive: gs.Tensor, rank: int, axis: int, length: int,
                  shifted: ShiftFunction = shift) -> gs.Tensor:
    """States of x_k = decay_k * x_{k-1} + drive_k from zero, along axis, in ceil(log2(length)) rounds.

    After the round with shift s, position k holds the composition of steps k-2s+1 .. k."""
    states = drive
    step = 1
    while step < length:
        shifted_states = shifted(builder, states, rank, axis, step, length, 0.0)
        next_decay = (builder.mul(decay, shifted(builder, decay, rank, axis, step, length, 1.0))
                      if step * 2 < length else None)
        states = builder.add(states, builder.mul(decay, shifted_states))
        decay = next_decay
        step *= 2
    return states


def sweep(builder: GraphBuilder, decay_blocks: Sequence[gs.Tensor], drives: Sequence[gs.Tensor],
          start: Optional[gs.Tensor]) -> list[gs.Tensor]:
    """The states of Q step blocks, x_q = a_q * x_{q-1} + b_q, from `start` entering block 0 (None: zero)."""
    states, state = [], start
    for decay, drive in zip(decay_blocks, drives):
        state = drive if state is None else builder.add(builder.mul(decay, state), drive)
        states.append(state)
    return states


def carry_into_chunks(builder: GraphBuilder, chunk_decay: gs.Tensor, chunk_end: gs.Tensor,
                      initial_start: Optional[Callable[[], gs.Tensor]], rank: int, chunk_axis: int,
                      chunks: int) -> gs.Tensor:
    """The state entering each chunk, c_k = P_{k-1} * c_{k-1} + e_{k-1}, along chunk_axis.

    P: each chunk's decay product, e: its last state from a zero start, c_0: the initial state
    (`initial_start()` gives it in the chunked layout, size 1 on the chunk axis) or zero. A linear
    recurrence over only the chunks, solved by a doubling scan along the chunk axis moved last and
    shifted by MatMuls with a shifted identity (with only size-1 axes after it, d_state N = 1, the
    move is a Reshape after unit-axes-to-reshape). Only products of decays <= 1 are formed."""
    last = rank - 1
    carry_drive = move_axis(builder, chunk_end, rank, chunk_axis, last)
    # Carry into chunk k from chunk k - 1: shift by one chunk, chunk 0 gets the initial state.
    carry_drive = shift_last_by_matmul(builder, carry_drive, rank, last, 1, chunks, 0.0) if chunks > 1 else None
    if initial_start is not None:
        start = move_axis(builder, initial_start(), rank, chunk_axis, last)
        if carry_drive is None:
            carry_drive = start
        else:
            first = builder.add(builder.slice(carry_drive, 0, 1, last), start)
            carry_drive = builder.concat([first, builder.slice(carry_drive, 1, chunks, last)], last)
    carry_states = carry_drive
    if chunks > 1:
        carry_decay = shift_last_by_matmul(builder, move_axis(builder, chunk_decay, rank, chunk_axis, last),
                                           rank, last, 1, chunks, 1.0)
        carry_states = doubling_scan(builder, carry_decay, carry_drive, rank, last, chunks,
                                     shifted=shift_last_by_matmul)
    return move_axis(builder, carry_states, rank, last, chunk_axis)


def dense_carry_into_chunks(builder: GraphBuilder, chunk_log_decay: gs.Tensor, chunk_end: gs.Tensor, rank: int,
                            chunk_axis: int, chunks: int) -> gs.Tensor:
    """`carry_into_chunks` from a zero start as one (chunks x chunks) weight matrix per channel:

        c_k = sum_{j<k} exp(sum_{j<i<k} log P_i) * e_j.

    The exponents come from one MatMul of the chunks' log-decays by a constant 0/1 matrix (each a
    sum of at most chunks - 2 terms, never a difference of long running sums, so no cancellation;
    all <= 0, so exp <= 1), pairs j >= k get a bias of -1e4 (exp 0). On a TPU this is a handful of
    ops where the doubling scan is two MatMuls and three elementwise ops per round, each a global
    op at these sizes. chunk_log_decay and chunk_end have the chunk axis second to last and a size-1
    last axis, (..., chunks, 1); so has the result."""
    assert chunk_axis == rank - 2, "dense_carry_into_chunks wants (..., chunks, 1)"
    last = rank - 1
    between = np.zeros((chunks, chunks * chunks), dtype=builder.dtype)  # [i, k * chunks + j]: j < i < k
    bias = np.full((chunks, chunks), -1e4, dtype=builder.dtype)          # [k, j]: 0 where j < k
    for k in range(chunks):
        bias[k, :k] = 0.0
        for j in range(k):
            between[j + 1:k, k * chunks + j] = 1.0
    log_row = move_axis(builder, chunk_log_decay, rank, chunk_axis, last)                  # (..., 1, chunks)
    exponents = builder.add(builder.matmul(log_row, builder.const(between)), builder.const(bias.reshape(-1)))
    square = builder.concat([builder.slice(builder.shape(exponents), 0, chunk_axis, 0), builder.ints([chunks, chunks])], 0)
    weights = builder.exp(builder.reshape(exponents, square))                              # (..., chunks, chunks)
    end_row = move_axis(builder, chunk_end, rank, chunk_axis, last)                        # (..., 1, chunks)
    return builder.reduce_sum(builder.mul(weights, end_row), [last])                       # (..., chunks, 1)


def paired_carry_in_place(builder: GraphBuilder, chunk_decay: gs.Tensor, chunk_end: gs.Tensor,
                          initial_start: Optional[Callable[[], gs.Tensor]], rank: int, chunk_axis: int,
                          pair_axis: int, chunks: int) -> gs.Tensor:
    """`carry_into_chunks` without moving the chunk axis: a doubling scan of affine maps x -> P x + e.

    chunk_decay and chunk_end hold a size-1 `pair_axis` (the step axis after the reductions over Q);
    they are packed along it into pairs (P, e), shifted by one chunk (chunk 0 gets the identity (1, 0)),
    and each round composes every map with the one `step` chunks before it, (a, b) o (a', b') =
    (a a', a b' + b), the shift a Slice and a Concat along the chunk axis. After ceil(log2(chunks))
    rounds chunk k holds the composition of maps 0 .. k-1 and the carry is b (+ a * the initial state).
    On a TPU the chunk axis stays where the chunk tensors have it and every op is a local one
    (tpu-mlir layer-groups Slice and Concat, not the shift MatMuls of `carry_into_chunks`), and decay
    and drive travel as one tensor, so no round runs before the last chunk end exists. Only products
    of decays <= 1 are formed."""
    identity_shape = [1] * rank
    identity_shape[pair_axis] = 2
    identity = np.zeros(identity_shape, dtype=builder.dtype)
    identity.reshape(-1)[0] = 1.0                                   # (a, b) = (1, 0)
    keep_drive = np.zeros(identity_shape, dtype=builder.dtype)
    keep_drive.reshape(-1)[1] = 1.0                                 # (0, 1)

    def shifted(pairs: gs.Tensor, step: int) -> gs.Tensor:
        """out[k] = pairs[k - step], the identity map where k < step."""
        head = builder.add(builder.mul(builder.slice(pairs, 0, step, chunk_axis), builder.scalar(0.0)),
                           builder.const(identity))
        return builder.concat([head, builder.slice(pairs, 0, chunks - step, chunk_axis)], chunk_axis)

    pairs = shifted(builder.concat([chunk_decay, chunk_end], pair_axis), 1)   # the map applied entering chunk k
    step = 1
    while step < chunks:
        decay = builder.slice(pairs, 0, 1, pair_axis)
        pairs = builder.add(builder.mul(decay, shifted(pairs, step)), builder.mul(pairs, builder.const(keep_drive)))
        step *= 2
    carry = builder.slice(pairs, 1, 2, pair_axis)
    if initial_start is not None:
        carry = builder.add(carry, builder.mul(builder.slice(pairs, 0, 1, pair_axis), initial_start()))
    return carry

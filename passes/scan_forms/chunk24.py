"""The seed's "chunk24" form: chunks in sequence, the state carried from one to the next.

Inside a chunk with S_i = cumsum(log a)_i (so a_1 ... a_i = exp(S_i)):
    x_i = exp(S_i) * (x_prev + cumsum(b * exp(-S))_i)
Exact in real arithmetic, but exp(-S) overflows in float32 once the decays over one chunk
multiply to below ~1e-38 (|A| * sum(dt) > ~87): the reason the seed lost accuracy as chunks grew.
Node count grows with L / chunk.
"""
from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder


def chunk24_states(b: GraphBuilder, log_decay: gs.Tensor, drive: gs.Tensor, initial: Optional[gs.Tensor],
                   axis: int, length: int, chunk: int, rank: int) -> gs.Tensor:
    pieces = []
    carry = initial  # already has the scan axis (size 1) when given
    for start in range(0, length, chunk):
        end = min(start + chunk, length)
        if start == 0 and end == length:
            log_a, inputs = log_decay, drive
        else:
            log_a, inputs = b.slice(log_decay, start, end, axis), b.slice(drive, start, end, axis)
        decay_so_far = b.cumsum(log_a, axis)
        inner = b.cumsum(b.mul(inputs, b.exp(b.neg(decay_so_far))), axis)
        if carry is not None:
            inner = b.add(inner, carry)
        states = b.mul(b.exp(decay_so_far), inner)
        pieces.append(states)
        if end < length:
            carry = b.slice(states, end - start - 1, end - start, axis)
    return pieces[0] if len(pieces) == 1 else b.concat(pieces, axis)

"""The seed's "chunk24" form: chunks in sequence, the state carried from one to the next.

Inside a chunk with S_i = cumsum(log a)_i (so a_1 ... a_i = exp(S_i)):
    x_i = exp(S_i) * (x_prev + cumsum(b * exp(-S))_i)
Exact in real arithmetic, but exp(-S) overflows in float32 once the decays over one chunk
multiply to below ~1e-38 (|A| * sum(dt) > ~87): the reason the seed lost accuracy as chunks grew.
Node count grows with L / chunk. Works in log space: only for decays with a log
(decays.Decays.log, every a_i provably > 0); the pass refuses others.
"""
from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.scan_forms.decays import Decays


def chunk24_states(builder: GraphBuilder, *, decays: Decays, drive: gs.Tensor, initial: Optional[gs.Tensor],
                   axis: int, length: int, chunk: int, rank: int) -> gs.Tensor:
    log_decay = decays.log
    pieces = []
    carry = initial  # already has the scan axis (size 1) when given
    for start in range(0, length, chunk):
        end = min(start + chunk, length)
        if start == 0 and end == length:
            chunk_log_decay, chunk_drive = log_decay, drive
        else:
            chunk_log_decay = builder.slice(log_decay, start, end, axis)
            chunk_drive = builder.slice(drive, start, end, axis)
        log_decay_so_far = builder.cumsum(chunk_log_decay, axis)                      # S_i
        inner = builder.cumsum(builder.mul(chunk_drive, builder.exp(builder.neg(log_decay_so_far))), axis)
        if carry is not None:
            inner = builder.add(inner, carry)
        states = builder.mul(builder.exp(log_decay_so_far), inner)
        pieces.append(states)
        if end < length:
            carry = builder.slice(states, end - start - 1, end - start, axis)
    return pieces[0] if len(pieces) == 1 else builder.concat(pieces, axis)

"""Lowerings of a linear recurrence x_i = a_i * x_{i-1} + b_i over a whole axis.

Each form is ``form(builder, *, log_decay, drive, initial, axis, length, chunk, rank)``: the
decay in log space (log a_i), the drive b_i, an optional initial state (with a size-1 scan axis),
the scan axis, its length, the chunk size asked for and the rank of the tensors; it returns all
states x_i stacked along that axis. The re-rolling pass picks one by name; pipelines choose the name.
"""
from __future__ import annotations

from passes.scan_forms.batched import batched_states
from passes.scan_forms.chunk24 import chunk24_states
from passes.scan_forms.parallel import parallel_states

SCAN_FORMS = {
    "batched": batched_states,
    "chunk24": chunk24_states,
    "parallel": parallel_states,
}

"""Lowerings of a linear recurrence x_i = a_i * x_{i-1} + b_i over a whole axis.

Each form takes the decay in log space (log a_i), the inputs b_i, an optional initial state
and the scan axis, and returns all states stacked along that axis. The re-rolling pass picks
one by name; pipelines choose the name.
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

"""Lowerings of a linear recurrence x_i = a_i * x_{i-1} + b_i over a whole axis.

Each form is ``form(builder, *, decays, drive, initial, axis, length, chunk, rank)``: the decays
a_i (decays.Decays: as they are, and log a_i where every a_i is provably > 0), the drive b_i, an
optional initial state (with a size-1 scan axis), the scan axis, its length, the chunk size asked
for and the rank of the tensors; it returns all states x_i stacked along that axis. The re-rolling
pass picks one by name; pipelines choose the name.
"""
from __future__ import annotations

from passes.scan_forms.batched import batched_states, batched_table_side
from passes.scan_forms.batched_doubling import batched_doubling_states, batched_doubling_table_side
from passes.scan_forms.channels_last_readout import channels_last_readout
from passes.scan_forms.chunk24 import chunk24_states
from passes.scan_forms.parallel import parallel_states
from passes.scan_forms.parallel_strided import parallel_strided_states
from passes.scan_forms.strided_readout import strided_readout
from passes.scan_forms.window_doubling import window_doubling_states, window_doubling_table_side

SCAN_FORMS = {
    "batched": batched_states,
    "batched-doubling": batched_doubling_states,
    "channels-last-readout": channels_last_readout,
    "chunk24": chunk24_states,
    "parallel": parallel_states,
    "parallel-strided": parallel_strided_states,
    "strided-readout": strided_readout,
    "window-doubling": window_doubling_states,
}

# Forms that divide by decay products, and the |sum of log a| over one chunk past which float32's
# exp overflows in them (docstrings of chunk24.py and batched.py); the other forms never overflow.
OVERFLOWS_PAST = {"chunk24": 87, "batched": 174}

# Forms that sum log decays, so they need Decays.log (every a_i provably > 0: an Exp output, a constant
# > 0); the pass refuses them other decays. The rest only multiply decays and take any sign.
LOG_SPACE = {"chunk24", "batched", "window-doubling"}
# What to name in that refusal: forms that take any decay.
ANY_SIGN = ("parallel", "batched-doubling")

# Forms that also take `shapes` (tensor name -> partial static shape, from the pass).
TAKES_SHAPES = {"parallel-strided", "strided-readout", "channels-last-readout"}

# Forms that also take `readout` (passes/scan_forms/strided_readout.py's Readout; channels-last-readout
# also passes the block's layout) and then return the readout of every step, step axis first, instead
# of the states.
FOLDS_READOUT = {"strided-readout", "channels-last-readout"}

# Forms that build square constants sized by the scan's real steps (shifted identities, bands): the
# side of the largest, from (length, chunk, carry_shifts). The pass refuses such a form past
# graph_builder.MAX_INDEX_TABLE entries, as every pass caps its tables: batched with chunk 1 on
# VMamba-T's 3,136 steps built ~470 MB of shift matrices. The other forms' constants are vectors
# and single values.
TABLE_SIDES = {
    "batched": batched_table_side,
    "batched-doubling": batched_doubling_table_side,
    "window-doubling": window_doubling_table_side,
}

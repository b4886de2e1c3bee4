"""What a NaN or an infinity at one step of a scan's input does to the compiled scan's outputs, per pipeline.

The unrolled scan (and PyTorch) make the steps from the bad one on non-finite and keep the earlier ones.
The forms that shift along the steps by a MatMul with a shifted identity or sum windows by a 0/1 band
(window-doubling: `cpu-many`, `ov`; batched-doubling: `tpu` with d_state N > 1) spread it to every step
of that (batch, channel) row, since 0 * NaN is NaN; `batched` (`tpu`, N = 1) spreads a bad decay back to the
start of its chunk. Other rows stay as the unrolled graph has them. README's "Non-finite inputs" says so;
these tests pin it (a form made to keep the earlier steps finite must update both).
"""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.compiler import compile_model
from tests.scan_testing import run
from tools.synthetic_scans import ScanSpec, unrolled_scan_model

LENGTH, BAD_STEP = 16, 9


def _bad_row_outputs(pipeline: str, state: int, which: str, value: float):
    """(unrolled, compiled) non-finite positions of the row holding the bad value, and the compiled
    model's non-finite count in every other row."""
    spec = ScanSpec(length=LENGTH, channels=3, state=state, batch=2, readout="mulsum")
    model = unrolled_scan_model(spec)
    rng = np.random.default_rng(0)
    feeds = {"a_in": -rng.uniform(0.01, 0.5, (2, 3, LENGTH, state)).astype(np.float32),
             "b": rng.standard_normal((2, 3, LENGTH, state)).astype(np.float32),
             "c": rng.standard_normal((2, 3, state, LENGTH)).astype(np.float32)}
    feeds[which][0, 1, BAD_STEP, 0] = value
    compiled = compile_model(model, pipeline, verify="none").model
    unrolled_y, compiled_y = run(model, feeds)[0], run(compiled, feeds)[0]
    others = np.ones(compiled_y.shape[:2], bool)
    others[0, 1] = False
    return (np.flatnonzero(~np.isfinite(unrolled_y[0, 1])).tolist(),
            np.flatnonzero(~np.isfinite(compiled_y[0, 1])).tolist(),
            int((~np.isfinite(compiled_y[others])).sum()))


FROM_BAD_STEP = list(range(BAD_STEP, LENGTH))
EVERY_STEP = list(range(LENGTH))


@pytest.mark.parametrize("pipeline,state,which,value,compiled_bad", [
    ("cpu", 1, "b", np.nan, FROM_BAD_STEP),
    ("cpu", 4, "a_in", np.inf, FROM_BAD_STEP),
    ("cpu-many", 1, "b", np.nan, EVERY_STEP),
    ("cpu-many", 1, "a_in", np.nan, EVERY_STEP),
    ("cpu-many", 4, "b", np.nan, FROM_BAD_STEP),      # N > 1 takes channels-last-readout there
    ("tpu", 1, "b", np.inf, FROM_BAD_STEP),
    ("tpu", 1, "a_in", np.nan, list(range(8, LENGTH))),  # back to its chunk's start: 16 steps as 2 chunks of 8
    ("tpu", 4, "b", np.nan, EVERY_STEP),
])
def test_a_non_finite_step_spreads_as_each_pipeline_says_and_never_to_other_rows(pipeline, state, which, value,
                                                                                 compiled_bad):
    unrolled_bad, bad, elsewhere = _bad_row_outputs(pipeline, state, which, value)
    assert unrolled_bad == FROM_BAD_STEP
    assert bad == compiled_bad
    assert elsewhere == 0

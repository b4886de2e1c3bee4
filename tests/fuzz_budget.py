"""How many examples each property test draws: its CI count times VMAMBA_FUZZ_SCALE (default 1).

CI draws the CI counts, derandomized (conftest.py), so a run is repeatable. `make fuzz` draws 50 times
as many with fresh randomness: the pattern fuzz at its CI count of 30 had missed a reroll-scans crash
that 400 examples found (docs/MUTATION.md, "Session s31 (lead)"). Every `max_examples` in tests/ goes
through `examples` (tests/test_fuzz_budget.py checks it), so `make fuzz` reaches them all.
"""
from __future__ import annotations

import os
import re

SCALE_VARIABLE = "VMAMBA_FUZZ_SCALE"


def scale(environ=os.environ) -> int:
    text = environ.get(SCALE_VARIABLE, "1")
    if not re.fullmatch(r"[0-9]{1,6}", text) or int(text) < 1:
        raise ValueError(f"{SCALE_VARIABLE} must be a whole number from 1 to 999999, not {text!r}")
    return int(text)


SCALE = scale()


def examples(ci_count: int) -> int:
    """`ci_count` examples in CI, SCALE times as many under `make fuzz`."""
    return ci_count * SCALE

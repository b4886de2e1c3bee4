"""passes.tpu_memory (session s32, mut35): which axis is spread over the NPU lanes, and a lane's footprint, at every
rank, axis and lane count the rule names (the measured shapes are in test_split_cumsum.py)."""
from __future__ import annotations

import pytest

from passes.tpu_memory import CHIP_LIMITS, DEFAULT_BUDGET, DEFAULT_LANES, footprint, lane_axis


def test_the_default_is_bm1684x():
    assert (DEFAULT_BUDGET, DEFAULT_LANES) == (4096, 64)
    assert {chip: (limit.budget, limit.lanes) for chip, limit in CHIP_LIMITS.items()} == {
        "bm1684x": (4096, 64), "bm1688": (8192, 32), "cv186x": (8192, 32)}


@pytest.mark.parametrize("rank, axis, lanes, spread", [
    (1, 0, 64, None),                     # one axis: the whole tensor counts
    (2, 0, 64, 1), (2, 1, 64, None),      # C is axis 1 from rank 2 on, unless it is the summed axis
    (3, 2, 64, 1), (3, 0, 64, 1), (3, 1, 64, None),
    (4, 3, 64, 1), (4, 1, 64, None),
    (5, 4, 64, None), (5, 0, 64, None),   # rank 5 and up: no N,C,H,W layout
    (3, 2, 2, 1),                         # two lanes still spread
    (3, 2, 1, None), (3, 2, 0, None),     # one lane (or none): nothing spread
])
def test_the_lane_axis_is_c_of_rank_2_to_4_unless_summed(rank, axis, lanes, spread):
    assert lane_axis(rank, axis, lanes) == spread


@pytest.mark.parametrize("shape, axis, lanes, elements", [
    ((100, 128), 0, 64, 100 * 2),                   # rank 2: C = 128 spread, ceil(128 / 64) = 2
    ((100, 130), 0, 64, 100 * 3),
    ((1, 4, 10), 2, 2, 2 * 10),                     # two lanes
    ((1, 4, 10), 2, 1, 4 * 10),                     # one lane: the whole tensor
    ((1, 128, 1, 1, 2048), 4, 64, 128 * 2048),      # rank 5: the whole tensor
    ((16384,), 0, 64, 16384),
])
def test_the_footprint_divides_only_the_lane_axis(shape, axis, lanes, elements):
    assert footprint(shape, axis, lanes) == elements

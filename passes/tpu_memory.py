"""What one NPU lane holds of a tensor: the local-memory model split-cumsum and tpu-legality share.

tpu-mlir runs CumSum as a global op whose kernel asserts when its input is too large; the
limit measured (docs/TPU.md, "CumSum size limit") is a number of elements per NPU lane, with
the C axis of N,C,H,W spread over the 64 lanes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class CumSumLimit:
    """A chip's CumSum kernel limit: at most ``budget`` elements per NPU lane, ``lanes`` lanes."""

    budget: int
    lanes: int
    measured: str  # the compiles the figures come from (tpu-mlir 1.30.2, transform + deploy)


# Per chip, measured with tools.tpu_cumsum_ceiling (docs/TPU.md, "CumSum size limit", "More chips").
CHIP_LIMITS = {
    "bm1684x": CumSumLimit(4096, 64, "F32: [1,1,4096] compiles, [1,1,4097] not; [1,128,2048] / [1,128,2049]; "
                                     "[2,64,2048] / [2,64,2049]"),
    "bm1688": CumSumLimit(8192, 32, "F32: [1,1,8192] compiles, [1,1,8193] not; [1,32,8192] / [1,33,8192]; "
                                    "[1,64,4096] / [1,64,4097]"),
    "cv186x": CumSumLimit(8192, 32, "F32: [1,1,8192] compiles, [1,1,8193] not; [1,32,8192] / [1,33,8192]; "
                                    "[1,64,4096] / [1,64,4097]"),
}
DEFAULT_BUDGET = CHIP_LIMITS["bm1684x"].budget  # elements per NPU lane
DEFAULT_LANES = CHIP_LIMITS["bm1684x"].lanes


def lane_axis(rank: int, axis: int, lanes: int) -> Optional[int]:
    """The axis spread over NPU lanes (C of N,C,H,W), or None where the whole tensor counts."""
    if lanes <= 1 or rank < 2 or rank > 4 or axis == 1:
        return None
    return 1


def footprint(shape: Sequence[int], axis: int, lanes: int = DEFAULT_LANES) -> int:
    """Elements one NPU lane holds for a CumSum over ``axis`` of ``shape`` (see module doc)."""
    spread = lane_axis(len(shape), axis, lanes)
    return math.prod(-(-d // lanes) if i == spread else int(d) for i, d in enumerate(shape))

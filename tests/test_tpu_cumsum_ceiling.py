"""tools.tpu_cumsum_ceiling's search, against a fake compiler with a known limit."""
from __future__ import annotations

import math

import pytest

from tools import tpu_cumsum_ceiling


class FakeProber:
    """Compiles when ceil(C / lanes) * L <= budget, like the chips measured (docs/TPU.md)."""

    def __init__(self, budget: int, lanes: int) -> None:
        self.budget, self.lanes, self.trials = budget, lanes, []
        self.chip, self.quantize = "fake", "F32"

    def compiles(self, shape, axis=-1):
        compiled = math.ceil(shape[1] / self.lanes) * shape[2] <= self.budget
        self.trials.append({"shape": shape, "compiled": compiled})
        return compiled


@pytest.mark.parametrize("budget, lanes, compiles", [(8192, 32, 12), (4096, 64, 13), (5000, 16, 21)])
def test_measure_finds_budget_and_lanes(budget, lanes, compiles):
    prober = FakeProber(budget, lanes)
    result = tpu_cumsum_ceiling.measure(prober)
    assert (result["budget"], result["lanes"]) == (budget, lanes)
    assert result["two_dimensional_check"] is True
    assert len(result["trials"]) == compiles


def test_measure_refuses_a_chip_without_ceiling():
    with pytest.raises(RuntimeError, match="no ceiling up to"):
        tpu_cumsum_ceiling.measure(FakeProber(1 << 30, 64))


def test_a_json_destination_is_checked_before_any_compile(tmp_path, capsys, monkeypatch):
    """Found with '--json no/such/dir/c.json' (adversarial session s13): the probe compiles (minutes
    each) ran first, then write_text died with a FileNotFoundError traceback."""
    def no_measure(prober):
        raise AssertionError("measured before the destination was checked")

    monkeypatch.setattr(tpu_cumsum_ceiling, "measure", no_measure)
    assert tpu_cumsum_ceiling.main(["--chip", "bm1688", "--json", str(tmp_path / "no" / "c.json")]) == 2
    assert capsys.readouterr().err == f"error: --json directory does not exist: {tmp_path}/no\n"

"""The property tests' example budget: CI counts by default, scaled for `make fuzz`."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import fuzz_budget

TESTS = Path(__file__).parent


def test_scale_defaults_to_one_and_reads_whole_numbers():
    assert fuzz_budget.scale({}) == 1
    assert fuzz_budget.scale({"VMAMBA_FUZZ_SCALE": "50"}) == 50
    assert fuzz_budget.scale({"VMAMBA_FUZZ_SCALE": "999999"}) == 999999


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "", " 50", "1e3", "\u00b2", "\u0665", "1000000", "1_0"])
def test_scale_refuses_anything_but_a_whole_number_from_one(text):
    with pytest.raises(ValueError) as raised:
        fuzz_budget.scale({"VMAMBA_FUZZ_SCALE": text})
    assert str(raised.value) == f"VMAMBA_FUZZ_SCALE must be a whole number from 1 to 999999, not {text!r}"


def test_examples_multiplies_the_ci_count_by_the_scale(monkeypatch):
    monkeypatch.setattr(fuzz_budget, "SCALE", 1)
    assert fuzz_budget.examples(30) == 30
    monkeypatch.setattr(fuzz_budget, "SCALE", 50)
    assert fuzz_budget.examples(30) == 1500


def test_every_property_test_takes_its_budget_from_fuzz_budget():
    # `make fuzz` scales only what goes through examples(): a bare max_examples=30 would stay at 30.
    users = []
    for path in sorted(TESTS.glob("test_*.py")):
        text = path.read_text()
        if not re.search(r"^\s*(from|import) hypothesis\b", text, re.MULTILINE):
            continue
        users.append(path.name)
        assert "from fuzz_budget import examples" in text, path.name
        bare = re.findall(r"max_examples\s*=\s*(?!examples\()\S+", text)
        assert bare == [], (path.name, bare)
        assert "@given" not in text or "max_examples=examples(" in text, path.name
    assert users == ["test_apply_hardening.py", "test_buffer_writes.py", "test_einsum_to_matmul.py",
                     "test_fuzz_patterns.py", "test_fuzz_running_max.py", "test_fuzz_running_max_attacks.py",
                     "test_reroll_scans.py",
                     "test_split_cumsum.py"]

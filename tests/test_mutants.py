"""Tests that pin what mutation testing found unpinned (issue 12, docs/MUTATION.md).

Each test names the mutant it kills. They are small and deterministic on purpose: a mutant
must die on every run, not on the runs where a random example happens to reach it.

* every index of every step (a_i, b_i, c_i) is checked: a chain whose step k reads step k+1's
  slice of any tensor is left alone with a reason, never re-rolled into a different function;
* the verifier's tolerance is pinned at its edge (1e-5, ``<=``), in ``compare`` and in the CLI;
* lower-einsum's transposes are checked with permutations that are not their own inverse;
* the report page escapes every string that comes from the model or the user;
* every scan form carries the state across chunks from the right step, on decays far from 1
  (decays near 1 hide a carry one step off: the neighbouring state is almost the same);
* a missing golden file fails, and only ``--update-golden`` writes one.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from passes.lower_einsum import LowerEinsum
from passes.relative_error import relative_l2
from passes.reroll_scans import RerollScans
from passes.scan_forms import SCAN_FORMS
from passes.verify import compare
from scan_testing import apply_pass, op_histogram, run
from tools import synthetic_scans
from tools.synthetic_scans import ScanSpec, numpy_scan, scan_inputs, unrolled_scan_model

LENGTH = 5
SOURCES = {"a": "decay a_i", "b": "input b_i", "c": "readout coefficient c_i"}


def _perturbed_model(spec: ScanSpec, source: str, step: int, index: int, monkeypatch):
    """The synthetic scan, except that step ``step`` reads slice ``index`` of ``source`` (a, b or c)."""
    original = synthetic_scans._Graph.step
    seen: dict[str, int] = {}

    def step_reading(self, tensor, axis, wanted, form):
        kind = tensor if tensor in ("b", "c") else "a"
        position = seen.get(kind, 0)
        seen[kind] = position + 1
        if kind == source and position == step:
            wanted = index
        return original(self, tensor, axis, wanted, form)

    monkeypatch.setattr(synthetic_scans._Graph, "step", step_reading)
    try:
        return unrolled_scan_model(spec)
    finally:
        monkeypatch.undo()


# Kills: deleting (or weakening) any of the three _check_indices calls in patterns/linear_recurrence.py.
@pytest.mark.parametrize("index_form", ["gather", "slice"])
@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("step", range(LENGTH))
@pytest.mark.parametrize("shift", [1, -1])
def test_every_index_of_every_step_is_checked(index_form, source, step, shift, monkeypatch):
    index = step + shift
    if not 0 <= index < LENGTH:
        index = step - shift
    spec = ScanSpec(length=LENGTH, channels=2, state=2, index=index_form)
    model = _perturbed_model(spec, source, step, index, monkeypatch)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.stats["rerolled"] == 0 and result.stats["rejected"] == 1, result.notes
    assert op_histogram(out) == op_histogram(model)
    reason = " | ".join(result.notes)
    expected = rf"{re.escape(SOURCES[source])} index (jumps to {index} at step {step}|{index} is repeated at step {step})"
    assert re.search(expected, reason), reason


# Kills: loosening ``ok = finite and rel_l2 <= rtol_l2`` (a factor, < for <=) or the default 1e-5.
@pytest.mark.parametrize("relative_error, ok", [(0.99e-5, True), (1.01e-5, False), (2e-5, False), (0.0, True)])
def test_compare_holds_the_tolerance_at_its_edge(relative_error, ok):
    expected = np.array([3.0, 4.0])                    # norm 5
    actual = expected * (1 + relative_error)           # rel L2 exactly relative_error
    (default,) = compare({"y": actual}, {"y": expected})
    (explicit,) = compare({"y": actual}, {"y": expected}, rtol_l2=1e-5)
    assert default.ok is ok and explicit.ok is ok
    assert default.tolerance == 1e-5
    assert default.rel_l2 == pytest.approx(relative_error, rel=1e-6, abs=1e-15)
    (exact_edge,) = compare({"y": np.array([1.0 + 2**-10])}, {"y": np.array([1.0])}, rtol_l2=2**-10)
    assert exact_edge.ok   # <=, not <


def test_compare_uses_relative_error_over_the_reference_norm():
    big = np.full(100, 1000.0)
    (result,) = compare({"y": big + 0.005}, {"y": big}, rtol_l2=1e-5)   # abs 5e-3, rel 5e-6
    assert result.ok and result.max_abs == pytest.approx(0.005) and result.rel_l2 == pytest.approx(5e-6)
    (swapped,) = compare({"y": np.array([0.0, 1.0])}, {"y": np.array([0.0, 2.0])}, rtol_l2=0.6)
    assert swapped.rel_l2 == pytest.approx(0.5) and swapped.ok   # divided by ||expected||, not ||actual||


@pytest.mark.parametrize("scale, code", [(1 + 5e-6, 0), (1 + 2e-5, 3)])
def test_cli_default_tolerance_is_1e_5(scale, code, tmp_path):
    import onnx
    import onnx.parser

    from scan_testing import TINY_MODEL_TEXT
    from test_cli import apply_cli

    model_path = tmp_path / "naive.onnx"
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), model_path)
    x = np.linspace(-3, 3, 6, dtype=np.float64).reshape(2, 3)
    y = np.maximum(x + np.array([2.0, 3.0, 4.0]), 0) * scale
    np.savez(tmp_path / "naive.ref.npz", x=x.astype(np.float32), y=y.astype(np.float32))
    result = apply_cli(model_path, "--pipeline", "eliminate-dead-nodes", "-o", tmp_path / "o.onnx")
    assert result.returncode == code, result.stderr
    if code:
        assert "> tolerance 1e-05" in result.stderr


# Kills: inverting EinsumPlan.align's permutation (tests with swaps only cannot tell perm from its inverse).
@pytest.mark.parametrize("equation, shapes", [
    ("abc,cab->abc", [[2, 3, 4], [4, 2, 3]]),
    ("abc,bca->abc", [[2, 3, 4], [3, 4, 2]]),
    ("abcd,dabc->abc", [[2, 3, 4, 5], [5, 2, 3, 4]]),
    ("cab->abc", [[4, 2, 3]]),
])
def test_lower_einsum_with_permutations_that_are_not_their_own_inverse(equation, shapes):
    from test_lower_einsum import einsum_model

    out, result = apply_pass(einsum_model(equation, shapes), LowerEinsum())
    assert result.stats == {"lowered": 1, "kept": 0}
    assert "Einsum" not in op_histogram(out)
    rng = np.random.default_rng(0)
    feeds = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    expected = np.einsum(equation, *[feeds[f"x{i}"].astype(np.float64) for i in range(len(shapes))])
    np.testing.assert_allclose(run(out, feeds)[0], expected, rtol=1e-5, atol=1e-6)


# Kills: dropping any html.escape from passes/report/html.py.
EVIL = '<img src=x onerror="alert(1)">&amp;'


def test_report_page_escapes_every_string_from_the_model_or_the_user():
    from passes.report.html import render_html
    from passes.report.writer import complete_report

    group = {"count": 2, "removed_nodes": 1, "added_nodes": 1, "removed_ops": {EVIL: 1}, "added_ops": {"Neg": 1},
             "instances": [{"anchor": EVIL, "before": [[EVIL, EVIL, EVIL]], "after": [["node", EVIL, EVIL]]}] * 2}
    description = {"regions": 2, "groups_total": 2, "removed_nodes": 1, "added_nodes": 1, "groups": [group],
                   "hidden_groups": {"groups": 1, "regions": 1, "ops_delta": {EVIL: 1}}}
    passes = [{"name": EVIL, "options": {EVIL: EVIL}, "changed": True, "nodes_before": 2, "nodes_after": 2,
               "seconds": 0.0, "check_seconds": 0.0, "verify_seconds": 0.0, "checker": f"error: {EVIL}",
               "shape_inference": "ok", "stats": {EVIL: EVIL}, "notes": [EVIL], "ops_delta": {EVIL: 1},
               "verification": {"ok": False, "rel_l2": EVIL, "max_abs": 1.0}}]
    report = {"pipeline_name": EVIL, "pipeline": EVIL, "input": EVIL, "output": EVIL, "reference": EVIL,
              "status": EVIL, "error": EVIL, "tolerance": 1e-5,
              "run": {"nodes_before": 2, "ops_after": {}, "passes": passes},
              "verification": {"ok": False, "against": EVIL, "outputs": [
                  {"name": EVIL, "max_abs": 1.0, "rel_l2": 1.0, "tolerance": 1e-5, "ok": False, "problem": EVIL}]}}
    page = render_html(complete_report(report), {0: description})
    assert "<img" not in page and 'onerror="' not in page
    assert page.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;amp;") >= 10


# Kills: a carry taken one step off in any scan form (chunk24's slice of the last state, parallel's
# shift, batched's shifted identity). Decays a in [0.13, 0.6]: the neighbouring state differs by O(1).
@pytest.mark.parametrize("form", sorted(SCAN_FORMS))
@pytest.mark.parametrize("length, chunk", [(29, 8), (24, 8), (7, 2), (9, 4), (33, 32)])
@pytest.mark.parametrize("initial", ["zeros", "input"])
def test_every_form_carries_the_state_across_chunks_exactly(form, length, chunk, initial):
    spec = ScanSpec(length=length, channels=3, state=2, initial=initial)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=chunk))
    assert result.stats["rerolled"] == 1
    for seed in range(2):
        feeds = scan_inputs(spec, seed=seed)
        feeds["a_in"] = -np.random.default_rng(seed).uniform(0.5, 2.0, feeds["a_in"].shape).astype(np.float32)
        expected = numpy_scan(spec, feeds)
        actual = run(out, feeds)[0]
        error = relative_l2(actual, expected)
        assert error <= 1e-6, f"{form} chunk {chunk}: rel L2 {error:.2e}"


# Kills: writing a golden file when it is missing, or when UPDATE_GOLDEN=1 is left in the environment.
def test_a_missing_golden_file_fails_and_writes_nothing(tmp_path):
    from golden_graphs import check_golden

    record = {"rel_l2": 1e-7, "nodes": 3}
    with pytest.raises(AssertionError, match="golden file .*missing_pipeline.json is missing; .*--update-golden"):
        check_golden("missing_pipeline", record, update=False, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []
    check_golden("missing_pipeline", record, update=True, directory=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["missing_pipeline.json"]


def test_only_the_switch_updates_golden_files(monkeypatch, request):
    from golden_graphs import update_requested

    monkeypatch.setenv("UPDATE_GOLDEN", "1")
    assert update_requested(request) is bool(request.config.getoption("--update-golden"))


# Kills: compare()'s refusal of values that are not real numbers, and its fields on a missing output
# or an empty one (survivors of the first mutmut run, docs/MUTATION.md).
def test_compare_reports_every_field_of_the_cases_it_refuses():
    results = compare({"z": np.array([1 + 1j]), "empty": np.zeros(0), "other": np.ones(2)},
                      {"z": np.array([1.0]), "missing": np.ones(1), "empty": np.zeros(0), "other": np.ones(2)},
                      rtol_l2=1e-3)
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == ["z", "missing", "empty", "other"]   # every output, in order
    complex_ = by_name["z"]
    assert (complex_.ok, complex_.max_abs, complex_.rel_l2, complex_.tolerance) == (False, float("inf"), float("inf"), 1e-3)
    assert complex_.problem == "complex128 vs expected float64: only real numbers and booleans can be compared"
    missing = by_name["missing"]
    assert (missing.ok, missing.tolerance, missing.problem) == (False, 1e-3, "output missing")
    assert (by_name["empty"].ok, by_name["empty"].max_abs, by_name["empty"].rel_l2) == (True, 0.0, 0.0)
    assert by_name["other"].ok and by_name["other"].problem == ""

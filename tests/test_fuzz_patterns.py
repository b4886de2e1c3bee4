"""Property and fuzz tests of the scan pattern and the scan forms (hypothesis).

* Recurrences drawn from the whole space tools/synthetic_scans.py can write (every index form,
  readout, decay spelling, initial state, batch, opset, a final state used outside, forward and
  backward loops stacked in either order) re-roll
  into every scan form and equal a float64 NumPy scan. (tests/test_reroll_scans.py has the
  first property test, over a smaller space, with exact op counts per form.)
* Near-misses, one broken step at a random place, are left exactly as they were, with a reason.
* Numerically adversarial inputs in every scan form: huge decays (|A| * sum(dt) per chunk far
  above 100), decays of exactly 0, dt = 0, all zeros, subnormal values. chunk24 must overflow on
  huge decays (its exp(-cumsum)); every other form stays finite and within 1e-5 of float64.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from fuzz_budget import examples

from passes.reroll_scans import RerollScans
from passes.relative_error import relative_l2
from passes.scan_forms import LOG_SPACE, SCAN_FORMS
from scan_testing import apply_pass, op_histogram, run
from tools.synthetic_scans import NEAR_MISSES, ScanSpec, near_miss_steps, numpy_scan, scan_inputs, unrolled_scan_model

REL_L2_TOL = 1e-5
FORMS = sorted(SCAN_FORMS)
# Forms built on exp(-cumsum(log a)) inside a chunk: chunk24 overflows past a chunk log-decay sum
# of ~87; batched centres the exponents (twice that range) and may overflow past it, never silently.
OVERFLOWS_ON_LARGE_DECAYS = {"chunk24", "batched"}
FUZZ = settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])


# relative_l2 has no floor on ||b|| (subnormal outputs have tiny norms)
rel_l2 = relative_l2


@st.composite
def scan_specs(draw, near_miss: str = "") -> ScanSpec:
    batch = draw(st.sampled_from([1, 2, None]))
    readouts = ["einsum", "mulsum", "states"] + (["conv"] if batch is not None else [])
    if near_miss == "coeff_off_by_one":
        readouts.remove("states")          # needs a readout coefficient
    opset = draw(st.sampled_from([12, 13, 17, 18]))
    length = draw(st.integers(3 if near_miss else 2, 30))
    spec = ScanSpec(
        length=length, channels=draw(st.integers(1, 4)), state=draw(st.integers(1, 4)), batch=batch,
        index=draw(st.sampled_from(["gather", "slice", "guarded_slice", "split"])), readout=draw(st.sampled_from(readouts)),
        initial=draw(st.sampled_from(["zeros", "input"])), decay=draw(st.sampled_from(["exp", "direct"])), opset=opset,
        extra_final_state_output=draw(st.booleans()) if not near_miss else False, near_miss=near_miss,
        near_miss_step=draw(st.sampled_from(near_miss_steps(near_miss, length))) if near_miss else None,
        direction=draw(st.sampled_from(["forward", "backward"])), stacked=draw(st.sampled_from(["by_position", "by_step"])),
    )
    return spec


# --- re-rolled graphs equal the NumPy scan ----------------------------------------------------

@FUZZ
@given(spec=scan_specs(), form=st.sampled_from(FORMS), chunk=st.integers(1, 32), seed=st.integers(0, 2**16))
@example(spec=ScanSpec(length=2, channels=1, state=1, batch=1, index="gather", readout="einsum", initial="zeros",
                       decay="exp", opset=12, extra_final_state_output=True), form="batched", chunk=1, seed=5431)
def test_any_recurrence_rerolls_and_matches_numpy(spec, form, chunk, seed):
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form=form, chunk=chunk))
    if spec.decay == "direct" and form in LOG_SPACE:   # a graph input may hold decays <= 0: no log of them
        assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
        assert op_histogram(out) == op_histogram(model)
        return
    sliced = {"split_pieces_sliced": 3 - (spec.readout == "states")} if spec.index == "split" else {}
    assert result.stats == {"rerolled": 1, "steps": spec.length, "rejected": 0, **sliced}
    # The forms write ops of their own, more as L grows (window-doubling's Gathers and Unsqueezes, channels-last-
    # readout's Einsums): count the nodes the pass did not write, and the final state's Gather
    outputs = {output.name for output in out.graph.output}
    hist = dict(Counter(node.op_type for node in out.graph.node
                        if not node.name.startswith("reroll_scans/scan") or node.output[0] in outputs))
    # What is left of the per-step ops does not depend on L: the final state's one Gather, the
    # readout's one Einsum, the initial state's Unsqueezes.
    allowed = {"Squeeze": 0, "If": 0, "Conv": 0, "Gather": int(spec.extra_final_state_output),
               "Einsum": int(spec.readout == "einsum"), "Unsqueeze": 2}
    assert {op: hist.get(op, 0) for op in allowed if hist.get(op, 0) > allowed[op]} == {}
    feeds = scan_inputs(spec, seed=seed, batch=spec.batch or 3)
    actual = run(out, feeds)
    assert rel_l2(actual[0], numpy_scan(spec, feeds)) <= REL_L2_TOL
    if spec.extra_final_state_output:    # the final state is still computed, from the re-rolled states
        assert np.linalg.norm(actual[1] - run(model, feeds)[1]) <= REL_L2_TOL * _state_scale(spec, feeds)


def _state_scale(spec: ScanSpec, feeds: dict) -> float:
    """The largest norm of a state or a drive over the steps (float64): a state is a sum of such terms, and one
    that nearly cancels (-0.8966 + 0.9016 = 0.0050) keeps float32's error of its terms, not of itself: `make fuzz`
    drew a 1-element final state of the batched form off by 1.2e-5 of itself, 7e-8 of its terms."""
    states = numpy_scan(dataclasses.replace(spec, readout="states"), feeds)        # (batch, d, L, n)
    drives = feeds["b"].astype(np.float64)
    return max(float(np.max(np.sqrt(np.sum(x * x, axis=(0, 1, 3))))) for x in (states, drives))


# --- near-misses stay untouched -------------------------------------------------------------------

REASONS = {
    # a skip early in a short chain leaves most of the decays one ahead: named against that run since s31
    # (test_reroll_scans.py::test_a_skip_that_leaves_most_decays_one_ahead_is_named_against_their_run)
    "skip_index": r"index (jumps to \d+|\d+ is repeated) at step \d+",
    "repeat_index": r"index \d+ is repeated at step \d+",
    "state_used_elsewhere": r"intermediate state '.*' at step \d+ is read by Relu",
    "two_decays": r"decay a_i at step \d+ comes from '.*' axis \d+, not '.*' axis \d+ like step 0",
    "coeff_off_by_one": r"readout coefficient c_i index (jumps to \d+|\d+ is repeated) at step \d+",
    "concat_permuted": r"stacks \d+ tensors; expected exactly the \d+ step outputs in order",
    "missing_readout": r"(is read by nothing; expected one readout|no readout of the last state)",
}


def test_every_near_miss_has_a_reason():
    assert set(REASONS) == set(NEAR_MISSES)


@FUZZ
@given(data=st.data(), kind=st.sampled_from(NEAR_MISSES), form=st.sampled_from(FORMS))
def test_near_misses_are_left_unchanged(data, kind, form):
    spec = data.draw(scan_specs(near_miss=kind))
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    assert result.stats["rerolled"] == 0 and result.stats["rejected"] >= 1
    assert op_histogram(out) == op_histogram(model)
    reasons = " | ".join(result.notes[1:])
    assert re.search(REASONS[kind], reasons), reasons


# --- numerically adversarial inputs -------------------------------------------------------------

def _states_of(spec: ScanSpec, form: str, chunk: int, feeds: dict) -> tuple[np.ndarray, np.ndarray]:
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=chunk))
    assert result.stats["rerolled"] == (0 if spec.decay == "direct" and form in LOG_SPACE else 1)
    with np.errstate(all="ignore"):
        return run(out, feeds)[0], numpy_scan(spec, feeds)


@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(form=st.sampled_from(FORMS), length=st.integers(2, 60), chunk=st.integers(1, 32),
       chunk_sum=st.floats(300, 5000), drive_scale=st.sampled_from([1.0, 1e3]), seed=st.integers(0, 2**16),
       initial=st.sampled_from(["zeros", "input"]))
def test_huge_decays(form, length, chunk, chunk_sum, drive_scale, seed, initial):
    """dt * A per step so large that a chunk's decays sum to 300..5000 in log space (float32 exp
    overflows past ~88); drive_scale 1e3 is a large dt multiplying B * u as well."""
    spec = ScanSpec(length=length, channels=3, state=2, initial=initial)
    feeds = scan_inputs(spec, seed=seed)
    per_step = chunk_sum / min(chunk, length)
    rng = np.random.default_rng(seed)
    feeds["a_in"] = (-per_step * rng.uniform(1.0, 2.0, feeds["a_in"].shape)).astype(np.float32)
    feeds["b"] = (feeds["b"] * drive_scale).astype(np.float32)
    actual, expected = _states_of(spec, form, chunk, feeds)
    if form == "chunk24":
        assert not np.all(np.isfinite(actual)), "chunk24 was expected to overflow here"
    elif form in OVERFLOWS_ON_LARGE_DECAYS:  # its chunk may be down to chunk / 2: overflow or exact
        assert not np.all(np.isfinite(actual)) or rel_l2(actual, expected) <= REL_L2_TOL
    else:
        assert np.all(np.isfinite(actual))
        assert rel_l2(actual, expected) <= REL_L2_TOL


def _zero_decays(spec, feeds, rng):
    feeds["a_in"][..., ::2, :] = 0.0          # a_i == 0 exactly (decay given directly, so log a = -inf)


def _dt_zero(spec, feeds, rng):
    feeds["a_in"][...] = 0.0                  # dt = 0: log a = 0 (a = 1) and b = dt * B * u = 0
    feeds["b"][...] = 0.0


def _dt_zero_in_places(spec, feeds, rng):
    where = rng.random(feeds["a_in"].shape) < 0.5
    feeds["a_in"][where] = 0.0
    feeds["b"][where] = 0.0


def _all_zeros(spec, feeds, rng):
    for value in feeds.values():
        value[...] = 0.0


def _subnormal(spec, feeds, rng):
    feeds["b"] *= np.float32(1e-39)           # below float32's smallest normal (1.18e-38)
    if "h0" in feeds:
        feeds["h0"] *= np.float32(1e-39)


def _subnormal_outputs(spec, feeds, rng):
    feeds["b"] *= np.float32(1e-30)
    feeds["c"] *= np.float32(1e-10)           # states normal, readouts subnormal
    if "h0" in feeds:
        feeds["h0"][...] = 0.0


ADVERSARIAL = {
    # name: (make the inputs, decay spelling, forms that may produce non-finite values, tolerance)
    # (the log-space forms leave decays given directly unrolled: a graph input may hold a_i <= 0)
    "zero-decays": (_zero_decays, "direct", set(), REL_L2_TOL),
    "dt-zero": (_dt_zero, "exp", set(), REL_L2_TOL),
    "dt-zero-in-places": (_dt_zero_in_places, "exp", set(), REL_L2_TOL),
    "all-zeros": (_all_zeros, "exp", set(), 0.0),
    # subnormals carry fewer significant bits (down to none): a looser bound, but finite always
    "subnormal-states": (_subnormal, "exp", set(), 1e-4),
    "subnormal-outputs": (_subnormal_outputs, "exp", set(), 1e-4),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", list(ADVERSARIAL))
@pytest.mark.parametrize("initial", ["zeros", "input"])
def test_adversarial_inputs(case, form, initial):
    make, decay, may_overflow, tolerance = ADVERSARIAL[case]
    spec = ScanSpec(length=29, channels=3, state=2, initial=initial, decay=decay)
    feeds = scan_inputs(spec, seed=3)
    make(spec, feeds, np.random.default_rng(3))
    actual, expected = _states_of(spec, form, 8, feeds)
    if form in may_overflow:
        assert not np.all(np.isfinite(actual)), f"{form} was expected to overflow on {case}"
        return
    assert np.all(np.isfinite(actual)), f"{form} gave NaN/inf on {case}"
    assert rel_l2(actual, expected) <= tolerance
    if case == "all-zeros":
        assert not np.any(actual)

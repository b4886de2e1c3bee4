"""fuzz24's attacks (s36) on the max-plus scan of s36 gen24 (passes/running_max_scan.py): RWKV-style loops rescaled by
a running maximum (tests/rwkv_variants.py) with what gen24 held fixed varied: 1 to 40 steps, w per channel, a scalar
or broadcast, k with -inf, +-1e30 and exact ties (m_{t-1} + w == k_t), m_{-1} a graph input, either operand order of
Max and Add, a maximum or a state read outside the steps, two layers sharing their constants, batch 1 or 2 (static or
symbolic), float16 / float32 / float64, RWKV's output branch or not.

The invariant, for every drawn graph: reroll-scans either re-rolls and the outputs match the unrolled graph in ONNX
Runtime (rel L2 over the finite positions <= 1e-6 in float32, 1e-12 in float64, 2e-3 in float16; NaN and +-inf at the
same positions) or leaves the graph node for node as it was; the checker passes (apply_pass) and it never raises.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from fuzz_budget import examples

from passes.reroll_scans import RerollScans
from patterns.running_max import MIN_STEPS
from pipelines.compiler import compile_model
from rwkv_variants import Variant, variant_feeds, variant_model
from scan_testing import apply_pass, rel_l2, run

BOUNDS = {"float32": 1e-6, "float64": 1e-12, "float16": 2e-3}
LENGTHS = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40]
K_VALUES = ["normal", "ties", "neg_inf", "huge", "integers"]


def edges(model: onnx.ModelProto) -> list:
    return [(node.op_type, list(node.input), list(node.output)) for node in model.graph.node]


def assert_matches(actual: np.ndarray, expected: np.ndarray, bound: float) -> None:
    """NaN and each infinity at the same positions, the finite values within `bound` (rel L2)."""
    actual, expected = actual.astype(np.float64), expected.astype(np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    for sign in (np.inf, -np.inf):
        np.testing.assert_array_equal(actual == sign, expected == sign)
    finite = np.isfinite(expected)
    if finite.any():
        assert rel_l2(actual[finite], expected[finite]) <= bound


@st.composite
def variants(draw) -> Variant:
    length = draw(st.sampled_from(LENGTHS))
    batch = draw(st.sampled_from([None, 1, 2]))
    reader = st.one_of(st.none(), st.integers(0, length - 1))
    return Variant(length=length, batch=batch, dynamic_batch=batch is not None and draw(st.booleans()),
                   w_shape=draw(st.sampled_from(["channel", "scalar", "broadcast"])),
                   initial=draw(st.sampled_from(["const", "input"])), max_first=draw(st.booleans()),
                   add_first=draw(st.booleans()), readout_branch=draw(st.booleans()),
                   extra_reader=draw(reader), state_reader=draw(reader), layers=draw(st.sampled_from([1, 2])),
                   dtype=draw(st.sampled_from(["float32", "float32", "float64", "float16"])))


def check_variant(spec: Variant, k_values: str, seed: int) -> None:
    model = variant_model(spec)
    onnx.checker.check_model(model, full_check=True)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))   # the full checker on what comes out
    if spec.length >= MIN_STEPS:   # every such loop is one gen24 re-rolls: num and den of each layer
        assert result.stats["rerolled"] == 2 * spec.layers, result.notes
        assert result.stats["running_maxima_scanned"] == spec.layers
    else:   # shorter: no chain, no note, the graph as it was
        assert (result.changed, result.stats["rerolled"]) == (False, 0)
        assert edges(out) == edges(model)
        assert not any("running maximum" in note for note in result.notes)
    feeds = variant_feeds(spec, seed, k_values)
    for actual, expected in zip(run(out, feeds), run(model, feeds), strict=True):
        assert_matches(actual, expected, BOUNDS[spec.dtype])


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=variants(), k_values=st.sampled_from(K_VALUES), seed=st.integers(0, 2**16))
@example(spec=Variant(length=8, dtype="float64"), k_values="normal", seed=0)
@example(spec=Variant(length=5, batch=2, dtype="float16", w_shape="scalar"), k_values="integers", seed=0)
def test_rescaled_loops_reroll_exactly_or_stay_as_they_were(spec, k_values, seed):
    """Found by fuzz24 (the examples): a float64 or float16 loop's scan multiplied w by float32 constants d (the
    builder's default type): an invalid model, the checker's "B has inconsistent type" (compile: exit 4)."""
    check_variant(spec, k_values, seed)

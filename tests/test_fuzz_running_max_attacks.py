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
K_VALUES = ["normal", "ties", "neg_inf", "huge", "wide", "integers"]
FLOAT16 = ("a max-plus recurrence, not a linear step (its maximum is float16: the max-plus scan rounds m_t a few ulps "
           "from the loop's, which overflows a decay exp(m_{t-1} + w - m_t) in a 16-bit float once |m| nears 2^13): "
           "left unrolled")
RAW_READ = ("not re-rolled: its state at step {t} is read by 'l{layer}_sig{t}' (Neg), not in a ratio of two rescaled "
            "states: the max-plus scan rounds m_t unlike the loop by a few ulps, which scales each state by exp of the "
            "difference (a ratio num / den is unchanged) (at 'l{layer}_num0')")


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
    if spec.length >= MIN_STEPS and spec.dtype == "float16":   # kept, named: the scan's drift overflows its decays
        assert (result.changed, result.stats["rerolled"]) == (False, 0)
        assert edges(out) == edges(model)
        assert sum(FLOAT16 in note for note in result.notes) == spec.layers, result.notes
    elif spec.length >= MIN_STEPS and spec.state_reader is None:   # every loop re-rolls: num and den of each layer
        assert result.stats["rerolled"] == 2 * spec.layers, result.notes
        assert result.stats["running_maxima_scanned"] == spec.layers
    elif spec.length >= MIN_STEPS:   # num_t read alone: every chain kept, named, the graph as it was
        assert (result.changed, result.stats["rerolled"]) == (False, 0)
        assert edges(out) == edges(model)
        for layer in range(spec.layers):
            for chain in ("num", "den"):
                assert (f"chain at 'l{layer}_{chain}0' ({spec.length} steps) "
                        + RAW_READ.format(t=spec.state_reader, layer=layer)) in result.notes, result.notes
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
@example(spec=Variant(length=40, state_reader=39), k_values="wide", seed=0)
@example(spec=Variant(length=16, state_reader=3, readout_branch=True, layers=2), k_values="wide", seed=1)
@example(spec=Variant(length=9, batch=1, extra_reader=0, dtype="float16"), k_values="huge", seed=8)
def test_rescaled_loops_reroll_exactly_or_stay_as_they_were(spec, k_values, seed):
    """Found by fuzz24 (the examples): a float64 or float16 loop's scan multiplied w by float32 constants d (the
    builder's default type): an invalid model, the checker's "B has inconsistent type" (compile: exit 4). A state
    read alone (Neg(num_t), a graph output): the scanned m_t is a few ulps from the loop's and each state is held
    relative to it, so num_t came out scaled by exp of the difference, 9e-5 from the loop at |k| ~ 30 (rel L2),
    silently; now every chain of that maximum is kept, named. float16 (k = 6e4, the third example): one ulp of m is
    32 there, the scan's m a few apart from the loop's, and a decay exp(m_{t-1} + w - m_t) overflowed: NaN in y where
    the loop has none; float16 maxima now stay unrolled, named."""
    check_variant(spec, k_values, seed)


# Hand-built attacks through every pipeline: (variant, k values, chains re-rolled by cpu, cpu-many, ov and tpu)
PIPELINE_CASES = {
    "float64-dynamic-batch": (Variant(length=9, batch=2, dynamic_batch=True, w_shape="scalar", readout_branch=True,
                                      dtype="float64"), "ties", 2),
    "state-read-alone": (Variant(length=17, state_reader=16, initial="input", max_first=False, add_first=False),
                         "wide", 0),
    "two-layers-max-read": (Variant(length=33, batch=1, layers=2, extra_reader=5, w_shape="broadcast"), "neg_inf", 4),
}


@pytest.mark.parametrize("pipeline", ["seed", "cpu", "cpu-many", "ov", "tpu"])
@pytest.mark.parametrize("case", sorted(PIPELINE_CASES))
def test_every_pipeline_verifies_each_attack(case, pipeline, tmp_path):
    """The compiler's own verification passes (no exit 3/4) and the compiled graph matches the unrolled one within
    the fuzz bound, NaN and inf where it has them; seed (chunk24) re-rolls none of these chains (refused by name).
    Before fuzz24: float64-dynamic-batch raised in cpu, cpu-many, ov and tpu (the scan's float32 constants)."""
    spec, k_values, expected = PIPELINE_CASES[case]
    model = variant_model(spec)
    # (tpu-mlir takes static shapes only: the batch pinned, as its legality note asks)
    shapes = ({name: [spec.length, spec.batch, 3] for name in ("k", "v")} if spec.dynamic_batch and pipeline == "tpu"
              else None)
    result = compile_model(model, pipeline, output=tmp_path / "out.onnx", verify="end", input_shapes=shapes)
    reroll = next(record for record in result.records if record.name == "reroll-scans")
    assert reroll.stats["rerolled"] == (0 if pipeline == "seed" else expected)
    compiled = onnx.load(str(tmp_path / "out.onnx"))
    feeds = variant_feeds(spec, 5, k_values)
    for actual, reference in zip(run(compiled, feeds), run(model, feeds), strict=True):
        assert_matches(actual, reference, BOUNDS[spec.dtype])

"""split-cumsum on small onnx.helper graphs: piece sizes, exact results, op histograms."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from fuzz_budget import examples
from onnx import TensorProto, helper

from passes.base import PassContext
from passes.graph_io import graph_to_model
from passes.split_cumsum import SplitCumSum, even_bounds, plan_split
from passes.tpu_memory import CHIP_LIMITS, footprint
from passes.verify import run_model

ELEM = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}


def cumsum_model(shape, axis, dtype=np.float32, exclusive=0, reverse=0, static=True, axis_as_input=False):
    elem = ELEM[dtype]
    dims = list(shape) if static else ["n"] + list(shape[1:])
    inputs = [helper.make_tensor_value_info("x", elem, dims)]
    initializers = []
    if axis_as_input:
        inputs.append(helper.make_tensor_value_info("axis", TensorProto.INT64, []))
    else:
        initializers.append(helper.make_tensor("axis", TensorProto.INT64, [], [axis]))
    attrs = {k: v for k, v in (("exclusive", exclusive), ("reverse", reverse)) if v}
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], name="the_cumsum", **attrs)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", elem, dims)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def apply(model, **options):
    graph = gs.import_onnx(model)
    result = SplitCumSum(**options).run(graph, PassContext(opset=17, explain=True))
    out = graph_to_model(graph)
    onnx.checker.check_model(out, full_check=True)
    return out, result


def histogram(model) -> dict[str, int]:
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def cumsum_input_shapes(model) -> list[tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
              for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    return [shapes[node.input[0]] for node in model.graph.node if node.op_type == "CumSum"]


def integers(shape, dtype, seed=0):
    return np.random.default_rng(seed).integers(-1000, 1000, size=shape).astype(dtype)


# --- the plan ---------------------------------------------------------------------------

def test_even_bounds_cover_the_axis_with_lengths_differing_by_at_most_one():
    bounds = even_bounds(768, 13)
    assert bounds[0] == (0, 60) and bounds[-1][1] == 768
    lengths = [end - start for start, end in bounds]
    assert sum(lengths) == 768 and max(lengths) - min(lengths) <= 1


def test_plan_fits_returns_none():
    assert plan_split((1, 64, 3136), 2, 4096, lanes=64) is None
    assert plan_split((4, 5), 1, 20) is None


@pytest.mark.parametrize("shape, axis, budget, lanes, pieces", [
    ((1, 768, 3136), 2, 4096, 64, (1, 12, 1)),      # VMamba-T stage 0: 12 lane-sized channel blocks
    ((1, 96, 3136), 2, 4096, 64, (1, 2, 1)),        # NOTES' failing shape, 2 pieces of 48 channels
    ((1, 1, 50000), 2, 4096, 64, (1, 1, 13)),       # one line too long: summed axis cut, carried
    ((2, 3, 100), 2, 250, 1, (1, 3, 1)),            # fewest pieces: cut the middle axis, not the summed one
    ((1, 4, 300000), 2, 200000, 1, (1, 1, 7)),      # carry row counted: 6 pieces would need 200004
    ((1, 3136, 64), 1, 4096, 64, (1, 1, 64)),       # summing along C: the whole tensor counts
])
def test_plan_examples(shape, axis, budget, lanes, pieces):
    plan = plan_split(shape, axis, budget, lanes)
    assert plan.pieces == pieces
    assert plan.largest_piece_footprint() <= budget


def test_footprint_model_matches_measurements_on_bm1684x():
    # (shape, axis) -> compiled on BM1684X with tpu-mlir 1.30.2 (docs/TPU.md)
    measured = {((1, 64, 3136), 2): True, ((1, 72, 3136), 2): False, ((1, 1, 4096), 2): True,
                ((1, 1, 4097), 2): False, ((1, 128, 2048), 2): True, ((1, 128, 2049), 2): False,
                ((2, 64, 2048), 2): True, ((2, 64, 2049), 2): False, ((4, 64, 3136), 2): False,
                ((1, 1, 1, 4096), 3): True, ((1, 1, 1, 4097), 3): False, ((1, 128, 1, 2048), 3): True,
                ((1, 128, 1, 2049), 3): False, ((1, 4096, 1), 1): True, ((1, 4097, 1), 1): False,
                ((1, 3136, 64), 1): False, ((1, 384, 512), 2): True, ((1, 384, 1024), 2): False,
                ((16384,), 0): False}
    for (shape, axis), compiled in measured.items():
        assert (footprint(shape, axis, 64) <= 4096) == compiled, (shape, axis)


@pytest.mark.parametrize("chip", ["bm1684x", "bm1688", "cv186x"])
def test_chip_table_matches_its_measurements(chip):
    """tools.tpu_cumsum_ceiling's compiles per chip (tpu-mlir 1.30.2, F32; docs/TPU.md)."""
    measured = {
        "bm1684x": {(1, 1, 4096): True, (1, 1, 4097): False, (1, 128, 2048): True, (1, 128, 2049): False,
                    (2, 64, 2048): True, (2, 64, 2049): False},
        "bm1688": {(1, 1, 8192): True, (1, 1, 8193): False, (1, 17, 8192): True, (1, 32, 8192): True,
                   (1, 33, 8192): False, (1, 64, 4096): True, (1, 64, 4097): False, (1, 1, 16384): False},
        "cv186x": {(1, 1, 8192): True, (1, 1, 8193): False, (1, 17, 8192): True, (1, 32, 8192): True,
                   (1, 33, 8192): False, (1, 64, 4096): True, (1, 64, 4097): False, (1, 1, 16384): False},
    }[chip]
    limit = CHIP_LIMITS[chip]
    for shape, compiled in measured.items():
        assert (footprint(shape, 2, limit.lanes) <= limit.budget) == compiled, (chip, shape)


def test_chip_pipelines_carry_their_budget():
    from pipelines import get_pipeline

    for name, text in (("tpu", "split-cumsum{budget=4096,lanes=64}"), ("tpu-bm1688", "split-cumsum{budget=8192,lanes=32}"),
                       ("tpu-cv186x", "split-cumsum{budget=8192,lanes=32}")):
        assert text in str(get_pipeline(name)), name


shapes_and_axes = st.integers(1, 5).flatmap(lambda rank: st.tuples(
    st.lists(st.integers(1, 40), min_size=rank, max_size=rank), st.integers(0, rank - 1)))


@settings(max_examples=examples(300), deadline=None)
@given(shapes_and_axes, st.integers(2, 3000), st.sampled_from([1, 4, 64]))
def test_plan_pieces_never_exceed_budget(shape_axis, budget, lanes):
    shape, axis = shape_axis
    plan = plan_split(shape, axis, budget, lanes)
    if plan is None:
        assert footprint(shape, axis, lanes) <= budget
        return
    assert plan.largest_piece_footprint() <= budget
    # Every actual piece (bounds along each axis, carry row where carried) fits.
    for i in range(len(shape)):
        lengths = [end - start for start, end in plan.bounds(i)]
        assert sum(lengths) == shape[i] and max(lengths) - min(lengths) <= 1
    if shape[axis] <= budget:
        assert not plan.carried  # no carry when cutting other axes is enough


@settings(max_examples=examples(60), deadline=None)
@given(shapes_and_axes, st.integers(2, 400))
def test_plan_is_minimal_for_plain_budgets(shape_axis, budget):
    """No grid of fewer pieces fits (brute force over piece counts, lanes=1, no summed-axis cut)."""
    shape, axis = shape_axis
    plan = plan_split(shape, axis, budget, lanes=1)
    if plan is None or plan.carried:
        return
    others = [i for i in range(len(shape)) if i != axis]
    best = math.inf

    def search(position, cap, count):
        nonlocal best
        if count >= best:
            return
        if position == len(others):
            if shape[axis] <= cap:
                best = count
            return
        size = shape[others[position]]
        for pieces in range(1, size + 1):
            search(position + 1, cap // -(-size // pieces), count * pieces)

    search(0, budget, 1)
    assert plan.total_pieces == best


# --- the rewrite ------------------------------------------------------------------------

@pytest.mark.parametrize("rank", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_rank_and_axis_gives_the_unsplit_result_exactly(rank, dtype):
    shape = [5, 4, 6, 3, 2][:rank]
    for axis in range(rank):
        for budget in (5, 13, 40):
            model = cumsum_model(shape, axis, dtype)
            x = integers(shape, dtype) / 8  # dyadic values: sums are exact in float32 too
            expected = run_model(model, {"x": x})["y"]
            out, result = apply(model, budget=budget, lanes=1)
            assert result.changed == (math.prod(shape) > budget)
            assert all(math.prod(s) <= budget for s in cumsum_input_shapes(out))
            np.testing.assert_array_equal(run_model(out, {"x": x})["y"], expected)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 0.0), (np.float32, 0.0)])
def test_random_values_match_onnxruntime_bitwise(dtype, atol):
    """Carry summed in before each piece: the same additions in the same order as one CumSum."""
    shape, axis = (2, 3, 50), 2
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    model = cumsum_model(shape, axis, dtype)
    out, result = apply(model, budget=9, lanes=1)
    assert result.stats["carried"] == 1
    np.testing.assert_array_equal(run_model(out, {"x": x})["y"], run_model(model, {"x": x})["y"])
    np.testing.assert_allclose(run_model(out, {"x": x})["y"], np.cumsum(x.astype(np.float64), axis), rtol=1e-5, atol=1e-5)


small_shapes_and_axes = st.integers(1, 5).flatmap(lambda rank: st.tuples(
    st.lists(st.integers(1, 9), min_size=rank, max_size=rank), st.integers(0, rank - 1)))


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_shapes_and_axes, st.integers(6, 200), st.sampled_from([1, 4]), st.integers(0, 2**31))
def test_property_split_equals_unsplit(shape_axis, budget, lanes, seed):
    shape, axis = shape_axis
    model = cumsum_model(shape, axis, np.float64)
    x = np.random.default_rng(seed).standard_normal(shape)
    out, _ = apply(model, budget=budget, lanes=lanes)
    for piece in cumsum_input_shapes(out):
        assert footprint(piece, axis, lanes) <= budget
    np.testing.assert_array_equal(run_model(out, {"x": x})["y"], run_model(model, {"x": x})["y"])


def test_other_axes_only_op_histogram():
    # [2, 6, 10] over axis 2 with 30 elements: 4 pieces of [1, 3, 10], no carry.
    out, result = apply(cumsum_model((2, 6, 10), 2), budget=30, lanes=1)
    assert result.stats == {"split": 1, "pieces": 4, "carried": 0, "largest_piece": 30}
    assert histogram(out) == {"Concat": 3, "CumSum": 4, "Slice": 6}


def test_summed_axis_op_histogram():
    # [1, 1, 10] over axis 2, budget 4: pieces 3 + carry, 4 + carry ... -> 4 pieces (3, 3, 2, 2 + carry rows).
    out, result = apply(cumsum_model((1, 1, 10), 2), budget=4, lanes=1)
    assert result.stats["pieces"] == 4 and result.stats["carried"] == 1
    # per piece: Slice of x; per later piece: Concat(carry, x) and Slice of the result; carries: Slice
    assert histogram(out) == {"Concat": 4, "CumSum": 4, "Slice": 4 + 3 + 3}
    assert max(math.prod(s) for s in cumsum_input_shapes(out)) <= 4


def test_small_cumsum_untouched_and_reported_unchanged():
    model = cumsum_model((2, 3), 1)
    out, result = apply(model, budget=6, lanes=1)
    assert not result.changed and histogram(out) == {"CumSum": 1}


def test_unknown_shape_left_alone_with_a_note():
    model = cumsum_model((4, 300), 1, static=False)
    out, result = apply(model, budget=8, lanes=1)
    assert not result.changed and histogram(out) == {"CumSum": 1}
    assert "input shape not static" in result.notes[0] and "the_cumsum" in result.notes[0]


def test_non_constant_axis_left_alone_with_a_note():
    model = cumsum_model((4, 300), 1, axis_as_input=True)
    _, result = apply(model, budget=8, lanes=1)
    assert not result.changed and "axis is not a constant" in result.notes[0]


def test_reverse_left_alone_with_a_note_pointing_to_cumsum_plain():
    _, result = apply(cumsum_model((4, 300), 1, reverse=1), budget=8, lanes=1)
    assert not result.changed and "cumsum-plain" in result.notes[0]


def test_budget_option_validated():
    with pytest.raises(ValueError, match="budget"):
        SplitCumSum(budget=1)
    assert SplitCumSum().options() == {"budget": 4096, "lanes": 64}


# --- declared dims a model need not hold (found by s15-adv) -------------------------------

def _piece_counts_walking_every_count(size: int) -> list[int]:
    counts, seen = [], set()
    for count in range(1, size + 1):
        length = -(-size // count)
        if length not in seen:
            seen.add(length)
            counts.append(count)
    return counts


def test_piece_counts_jump_between_lengths():
    """_piece_counts walked every count from 1 until pieces of one element: 2^31 steps for a
    declared axis of 2^31 - 1, a hang before any node was built."""
    from passes.split_cumsum import _piece_counts
    assert all(_piece_counts(size) == _piece_counts_walking_every_count(size) for size in range(1, 300))
    assert len(_piece_counts(2**31 - 1)) < 2 * 2**16   # O(sqrt(size)) distinct lengths


@pytest.mark.parametrize("length, changed", [(4 * 4095, True), (4 * 4095 + 1, False)])   # later pieces hold the carry
def test_a_cumsum_needing_more_pieces_than_the_cap_is_kept(monkeypatch, length, changed):
    """A declared (1, 1, 2^31 - 1) input is 524,416 pieces (2.6M nodes, gigabytes); over
    MAX_PIECES the CumSum is left alone with the reason (the cap made small to test its edge)."""
    import passes.split_cumsum as module
    monkeypatch.setattr(module, "MAX_PIECES", 4)
    out, result = apply(cumsum_model((1, 1, length), 2), budget=4096, lanes=1)
    assert result.changed is changed
    if not changed:
        assert histogram(out) == {"CumSum": 1}
        assert result.notes == ["CumSum 'the_cumsum' left alone: [1, 1, 16381] axis 2 needs at least 5 pieces "
                                "within the budget, more than the 4 a CumSum is cut into"]


@pytest.mark.parametrize("shape, axis", [((1, 1, 2**31 - 1), 2), ((2**31 - 1, 2**31 - 1), 1), ((2**31 - 1, 3), 1)])
def test_giant_declared_cumsums_are_kept_at_once(shape, axis):
    out, result = apply(cumsum_model(shape, axis), budget=4096, lanes=64)
    assert not result.changed and histogram(out) == {"CumSum": 1}
    assert "pieces within the budget, more than the 65536 a CumSum is cut into" in result.notes[0]


# --- session s24: what mutants of the plan, the check and the stats showed untested -------------------------------

def test_the_largest_piece_counts_the_carry_row_exactly():
    """(1, 1, 10000) over axis 2 within 4096: three pieces of 3334, 3333 and 3333, the later two with the carry row:
    the largest CumSum input is (1, 1, 3335), 3335 elements. (1, 10000, 2) summed along C with 64 lanes: the whole
    piece counts, five pieces of 2000 rows (and the carry) fewer than two columns of three."""
    plan = plan_split((1, 1, 10000), 2, 4096)
    assert plan.lanes == 1 and plan.pieces == (1, 1, 3)   # lanes default to a plain element count
    assert plan.largest_piece_shape() == (1, 1, 3335) and all(type(d) is int for d in plan.largest_piece_shape())
    assert plan.largest_piece_footprint() == 3335
    along_c = plan_split((1, 10000, 2), 1, 4096, lanes=64)
    assert along_c.pieces == (1, 5, 1) and along_c.largest_piece_shape() == (1, 2001, 2)
    assert along_c.largest_piece_footprint() == 4002   # not 32 * 2: C is summed, not spread over the lanes


def test_ties_are_broken_towards_cuts_of_outer_axes():
    """(4, 4, 1024) over axis 2 within 4096: 4 pieces whether axis 0 or axis 1 or both are cut; the outer one is."""
    assert plan_split((4, 4, 1024), 2, 4096).pieces == (4, 1, 1)


def test_a_budget_under_two_is_refused_with_its_value():
    with pytest.raises(ValueError, match=r"^budget must be >= 2 elements, got 1$"):
        plan_split((4, 4), 1, 1)


def test_a_cumsum_exactly_at_the_budget_is_kept_without_a_note():
    out, result = apply(cumsum_model((2, 2048), 1), budget=4096, lanes=1)
    assert not result.changed and result.notes == [] and result.stats == {"split": 0, "pieces": 0}
    assert histogram(out) == {"CumSum": 1}


@pytest.mark.parametrize("attrs", [{"exclusive": 1}, {"reverse": 1}])
def test_exclusive_or_reverse_cumsums_are_left_with_the_exact_note(attrs):
    _, result = apply(cumsum_model((4, 300), 1, **attrs), budget=8, lanes=1)
    assert not result.changed and result.notes == [
        "CumSum 'the_cumsum' left alone: exclusive/reverse CumSum (run cumsum-plain first)"]


def test_a_split_says_what_it_made_in_its_note():
    _, result = apply(cumsum_model((1, 1, 10), 2), budget=4, lanes=1)
    assert result.notes == ["CumSum 'the_cumsum' [1, 1, 10] axis 2: 4 pieces (per axis [1, 1, 4]), largest [1, 1, 4] "
                            "= 4 per lane"]


def test_a_giant_cumsum_names_the_fewest_pieces_it_would_need():
    _, result = apply(cumsum_model((1, 1, 2**31 - 1), 2), budget=4096, lanes=1)
    assert result.notes == ["CumSum 'the_cumsum' left alone: [1, 1, 2147483647] axis 2 needs at least 524288 pieces "
                            "within the budget, more than the 65536 a CumSum is cut into"]


@pytest.mark.parametrize("shape, axis, pieces", [((1, 128, 4096), 2, 2), ((1, 4096, 2), 1, 2)])
def test_lanes_spread_the_channels_unless_the_sum_runs_along_them(shape, axis, pieces):
    """With 64 lanes (1, 128, 4096) over axis 2 holds 2 * 4096 per lane: two pieces of 64 channels (128 with lanes
    ignored); (1, 4096, 2) over the channels counts whole, 8192: two pieces (none if the lanes were counted)."""
    _, result = apply(cumsum_model(shape, axis), budget=4096, lanes=64)
    assert result.changed and result.stats["pieces"] == pieces and result.stats["largest_piece"] == 4096

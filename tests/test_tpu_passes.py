"""The small TPU legality passes on hand-written graphs: exact ops after, same outputs as before."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from passes.base import PassContext, PassError
from passes.graph_io import graph_to_model
from passes.registry import get_pass
from passes.slice_reverse_to_gather import slice_indices
from passes.tpu_legality import AXES_INPUT_RULE, canonical_einsum, find_violations, format_violations
from passes.verify import run_model


def apply(text: str, name: str, **options):
    model = onnx.parser.parse_model(text)
    graph = gs.import_onnx(model)
    result = get_pass(name, **options).run(graph, PassContext(opset=17, explain=True))
    out = graph_to_model(graph)
    onnx.checker.check_model(out, full_check=True)
    return model, out, result


def histogram(model) -> dict[str, int]:
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def same_outputs(before, after, feeds):
    expected, actual = run_model(before, feeds), run_model(after, feeds)
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key])


HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
X = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7) / 3


# --- cumsum-plain -----------------------------------------------------------------------

@pytest.mark.parametrize("exclusive, reverse, ops", [
    (0, 1, {"CumSum": 1, "Gather": 2}),
    (1, 0, {"Concat": 1, "CumSum": 1, "Slice": 1}),
    (1, 1, {"Concat": 1, "CumSum": 1, "Gather": 2, "Slice": 1}),
])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_cumsum_plain_matches_onnxruntime(exclusive, reverse, ops, axis):
    text = f"""{HEADER}
    g (float[2,5,7] x) => (float[2,5,7] y) {{
      axis = Constant<value_int = {axis}>()
      y = CumSum<exclusive = {exclusive}, reverse = {reverse}>(x, axis)
    }}"""
    before, after, result = apply(text, "cumsum-plain")
    assert result.stats == {"rewritten": 1}
    assert histogram(after) == ops
    assert all(not a.i for n in after.graph.node for a in n.attribute if a.name in ("exclusive", "reverse"))
    assert not any(n.op_type == "Slice" and n.input[4:] for n in after.graph.node)  # no step input at all
    same_outputs(before, after, {"x": X})


def test_cumsum_plain_leaves_dynamic_shapes_with_a_note():
    text = f"""{HEADER}
    g (float[N,5] x) => (float[N,5] y) {{
      axis = Constant<value_int = 0>()
      y = CumSum<reverse = 1>(x, axis)
    }}"""
    _, after, result = apply(text, "cumsum-plain")
    assert not result.changed and "not static" in result.notes[0]


@pytest.mark.parametrize("attrs, shape, reason", [
    ("reverse = 1", f"{2**22 + 1}", "reversed axis of 4194305 elements needs more than the 4194304 "
                                    "indices a Gather table may hold"),
    ("exclusive = 1", f"{2**22 + 1},2", "its zeros to shift in take 4194305 values, more than the 4194304 a "
                                        "constant made from declared dims may hold"),
])
def test_cumsum_plain_beyond_the_table_limit_is_kept(attrs, shape, reason):
    """Declared dims (no data needed to declare them) must not size the tables a pass builds: a
    reverse CumSum over an axis of 2^31 - 1 built a 16 GiB index list (found by s15-adv)."""
    text = f"""{HEADER}
    g (float[{shape}] x) => (float[{shape}] y) {{
      axis = Constant<value_int = -1>()
      y = CumSum<{attrs}>(x, axis)
    }}"""
    _, after, result = apply(text, "cumsum-plain")
    assert not result.changed and histogram(after) == {"Constant": 1, "CumSum": 1}
    assert result.notes == [f"CumSum '' left alone: {reason}; tpu-mlir will ignore its exclusive/reverse attributes"]


@pytest.mark.parametrize("attrs, ops, expected", [
    ("", {"Constant": 1, "CumSum": 1}, np.cumsum(X, axis=1)),                     # plain: no candidate
    ("reverse = 1", {"CumSum": 1, "Gather": 2}, np.cumsum(X[:, ::-1], axis=1)[:, ::-1]),
    ("exclusive = 1", {"Concat": 1, "CumSum": 1, "Slice": 1}, np.cumsum(X, axis=1) - X),
])
def test_cumsum_plain_reads_an_absent_attribute_as_0(attrs, ops, expected):
    """One attribute given, the other absent (0 by ONNX's default); a CumSum with neither is not looked at."""
    text = f"""{HEADER}
    g (float[2,5,7] x) => (float[2,5,7] y) {{
      axis = Constant<value_int = 1>()
      y = CumSum{f"<{attrs}>" if attrs else ""}(x, axis)
    }}"""
    before, after, result = apply(text, "cumsum-plain")
    assert (result.stats, result.notes) == ({"rewritten": 1 if attrs else 0}, [])
    assert histogram(after) == ops
    same_outputs(before, after, {"x": X})
    np.testing.assert_allclose(run_model(after, {"x": X})["y"], expected, rtol=1e-6, atol=1e-5)


def test_cumsum_plain_exclusive_over_one_step_is_a_cumsum_of_zeros():
    """Length 1: nothing of x is shifted in (no Slice, no Concat), the output is zeros."""
    text = f"""{HEADER}
    g (float[2,1,7] x) => (float[2,1,7] y) {{
      axis = Constant<value_int = 1>()
      y = CumSum<exclusive = 1>(x, axis)
    }}"""
    before, after, result = apply(text, "cumsum-plain")
    assert result.stats == {"rewritten": 1} and histogram(after) == {"CumSum": 1}
    x = X[:, :1]
    same_outputs(before, after, {"x": x})
    assert not run_model(after, {"x": x})["y"].any()


@pytest.mark.parametrize("attrs, shape, axis, cap, reason", [
    ("reverse = 1", "2,5,7", 1, 5, None),
    ("reverse = 1", "2,5,7", 1, 4, "reversed axis of 5 elements needs more than the 4 indices a Gather table may hold"),
    ("exclusive = 1", "2,5,7", 0, 35, None),                 # the zeros to shift in: 5 x 7 (every axis but the summed)
    ("exclusive = 1", "1,5,1", 1, 4, None),                  # 5 steps > the cap: only a reverse's indices count them
    ("exclusive = 1", "2,5,7", 0, 34, "its zeros to shift in take 35 values, more than the 34 a constant made from "
                                      "declared dims may hold"),
])
def test_cumsum_plain_table_limits_are_inclusive(monkeypatch, attrs, shape, axis, cap, reason):
    """The limits at their edges (the cap made small to test them)."""
    import passes.cumsum_plain as module

    monkeypatch.setattr(module, "MAX_INDEX_TABLE", cap)
    text = f"""{HEADER}
    g (float[{shape}] x) => (float[{shape}] y) {{
      axis = Constant<value_int = {axis}>()
      y = CumSum<{attrs}>(x, axis)
    }}"""
    before, after, result = apply(text, "cumsum-plain")
    if reason is None:
        assert result.stats == {"rewritten": 1} and result.notes == []
        same_outputs(before, after, {"x": X[tuple(slice(int(d)) for d in shape.split(","))]})
    else:
        assert result.stats == {"rewritten": 0}
        assert result.notes == [f"CumSum '' left alone: {reason}; tpu-mlir will ignore its exclusive/reverse attributes"]


# --- cumsum-rank4 -----------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 2, 4])
def test_cumsum_rank4_reshapes_5d_to_4d_and_back(axis):
    text = f"""{HEADER}
    g (float[2,3,4,5,6] x) => (float[2,3,4,5,6] y) {{
      axis = Constant<value_int = {axis}>()
      y = CumSum(x, axis)
    }}"""
    before, after, result = apply(text, "cumsum-rank4")
    assert result.stats == {"reshaped": 1}
    assert histogram(after) == {"CumSum": 1, "Reshape": 2}
    inferred = onnx.shape_inference.infer_shapes(after)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    cumsum = next(n for n in after.graph.node if n.op_type == "CumSum")
    pre, post = int(np.prod([2, 3, 4, 5, 6][:axis])), int(np.prod([2, 3, 4, 5, 6][axis + 1:]))
    assert shapes[cumsum.input[0]] == [1, pre, [2, 3, 4, 5, 6][axis], post]
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    same_outputs(before, after, {"x": x})


@pytest.mark.parametrize("attrs", ["reverse = 1", "exclusive = 1", "exclusive = 1, reverse = 1"])
@pytest.mark.parametrize("shape, max_rank", [("2,3,4,5,6", 4), ("2,3,40,4", 3)])
def test_cumsum_rank4_keeps_exclusive_and_reverse(attrs, shape, max_rank):
    """Found by adv10 (s24), fuzzing pass options: cumsum-rank4 rebuilt the CumSum without its exclusive and
    reverse attributes, so a reversed 5-D CumSum (or a 4-D one with max_rank=3) became a forward one: rel L2
    1.42, which verification caught (exit 3) and --verify none wrote (the tpu pipeline runs cumsum-plain first,
    so its graphs were not affected). The attributes act along the axis, which the reshape keeps: carried over."""
    text = f"""{HEADER}
    g (float[{shape}] x) => (float[{shape}] y) {{
      axis = Constant<value_int = 2>()
      y = CumSum<{attrs}>(x, axis)
    }}"""
    before, after, result = apply(text, "cumsum-rank4", max_rank=max_rank)
    assert result.stats == {"reshaped": 1} and histogram(after) == {"CumSum": 1, "Reshape": 2}
    cumsum = next(n for n in after.graph.node if n.op_type == "CumSum")
    expected = {name: 1 for name in ("exclusive", "reverse") if name in attrs}
    assert {a.name: a.i for a in cumsum.attribute} == expected
    dims = [int(d) for d in shape.split(",")]
    same_outputs(before, after, {"x": np.random.default_rng(0).standard_normal(dims).astype(np.float32)})


def test_cumsum_rank4_leaves_4d_alone():
    text = f"""{HEADER}
    g (float[2,3,4,5] x) => (float[2,3,4,5] y) {{
      axis = Constant<value_int = 3>()
      y = CumSum(x, axis)
    }}"""
    _, after, result = apply(text, "cumsum-rank4")
    assert not result.changed and histogram(after) == {"Constant": 1, "CumSum": 1}


# --- slice-reverse-to-gather ------------------------------------------------------------

@pytest.mark.parametrize("dim, start, end, step", [
    (7, -1, -(2**63), -1), (7, 5, 1, -2), (7, 100, -100, -3), (7, 3, 3, 1), (7, 0, 7, 2), (7, -2, 0, -1),
])
def test_slice_indices_follow_numpy(dim, start, end, step):
    expected = np.arange(dim)[slice(start, end if end > -(2**62) else None, step)]
    assert slice_indices(dim, start, end, step) == list(expected)


def test_slice_indices_follow_onnx_for_every_small_bound():
    """Every dim 1..5, start and end -8..8, step +-1..3, against numpy's slicing; where they part (a negative step's
    start below -dim: ONNX clamps it to 0, Python to "before 0") ONNX's rule (s25's mutation round: clamping off by
    one at either end survived the six cases above)."""
    for dim in range(1, 6):
        for start in range(-8, 9):
            for end in range(-8, 9):
                for step in (-3, -2, -1, 1, 2, 3):
                    got = slice_indices(dim, start, end, step)
                    if step < 0 and start < -dim:
                        assert got == list(np.arange(dim)[slice(0, end if end >= -dim else None, step)])
                    else:
                        assert got == list(np.arange(dim)[slice(start, end, step)]), (dim, start, end, step)
    with pytest.raises(ValueError, match="^Slice step 0$"):
        slice_indices(3, 0, 3, 0)


@pytest.mark.parametrize("starts, ends, axes, steps, ops", [
    ([-1], [-9223372036854775807], [2], [-1], {"Gather": 1}),                 # x[..., ::-1], the cross-scan flip
    ([4, 0], [0, 7], [1, 2], [-2, 2], {"Gather": 1, "Slice": 1}),             # one reversed axis, one strided
    ([-1, -1], [-9223372036854775807, -9223372036854775807], [1, 2], [-1, -1], {"Gather": 2}),
    # s25 (mutants that survived): axis 0 reversed (an axis of 0 is no negative axis); two Gathers after a Slice
    ([-1], [-9223372036854775807], [0], [-1], {"Gather": 1}),
    ([-1, 4, 0], [-9223372036854775807, 0, 7], [0, 1, 2], [-1, -2, 2], {"Gather": 2, "Slice": 1}),
])
def test_negative_step_slices_become_gathers(starts, ends, axes, steps, ops):
    def ints(values):
        return "{" + ", ".join(str(v) for v in values) + "}"
    n = len(starts)
    text = f"""{HEADER}
    g (float[2,5,7] x) => (float[?,?,?] y) {{
      starts = Constant<value = int64[{n}] {ints(starts)}>()
      ends = Constant<value = int64[{n}] {ints(ends)}>()
      axes = Constant<value = int64[{n}] {ints(axes)}>()
      steps = Constant<value = int64[{n}] {ints(steps)}>()
      y = Slice(x, starts, ends, axes, steps)
    }}"""
    before, after, result = apply(text, "slice-reverse-to-gather")
    assert result.stats == {"rewritten": 1}
    assert histogram(after) == ops
    assert not find_violations(gs.import_onnx(after))
    same_outputs(before, after, {"x": X})


def last_axis_flip(x_type: str) -> str:
    """y = x[..., ::-1] (a Slice with constant starts, ends, axes, step -1) for x of `x_type`, e.g. 'float[N,5,7]'."""
    return f"""{HEADER}
    g ({x_type} x) => ({x_type} y) {{
      starts = Constant<value = int64[1] {{-1}}>()
      ends = Constant<value = int64[1] {{-9223372036854775807}}>()
      axes = Constant<value = int64[1] {{-1}}>()
      steps = Constant<value = int64[1] {{-1}}>()
      y = Slice(x, starts, ends, axes, steps)
    }}"""


def test_flip_with_a_dynamic_batch_becomes_gather():
    # cpu-many compiles dynamic-batch exports: only the reversed axis needs a known size.
    before, after, result = apply(last_axis_flip("float[N,5,7]"), "slice-reverse-to-gather")
    assert result.stats == {"rewritten": 1}
    assert histogram(after) == {"Gather": 1}
    same_outputs(before, after, {"x": X})


def test_flip_of_an_axis_sized_by_shape_arithmetic_becomes_gather():
    # A dynamic-batch export flattens H, W by a shape computed with Shape ops (x.view(B, C, -1));
    # ONNX's inference leaves that axis unknown, ONNX Runtime's symbolic inference gives 35.
    text = f"""{HEADER}
    g (float[N,2,5,7] x) => (float[N,2,35] y) {{
      s = Shape(x)
      zero = Constant<value = int64[1] {{0}}>()
      two = Constant<value = int64[1] {{2}}>()
      minus = Constant<value = int64[1] {{-1}}>()
      head = Slice(s, zero, two)
      target = Concat<axis = 0>(head, minus)
      flat = Reshape(x, target)
      starts = Constant<value = int64[1] {{-1}}>()
      ends = Constant<value = int64[1] {{-9223372036854775807}}>()
      axes = Constant<value = int64[1] {{2}}>()
      y = Slice(flat, starts, ends, axes, minus)
    }}"""
    before, after, result = apply(text, "slice-reverse-to-gather")
    assert result.stats == {"rewritten": 1}
    assert histogram(after)["Gather"] == 1 and histogram(after)["Slice"] == 1   # the Shape slice stays
    x = np.arange(2 * 2 * 5 * 7, dtype=np.float32).reshape(2, 2, 5, 7)
    same_outputs(before, after, {"x": x})


def test_flip_of_an_unknown_axis_is_kept():
    _, after, result = apply(last_axis_flip("float[2,5,L]"), "slice-reverse-to-gather")
    assert not result.changed and histogram(after) == {"Constant": 4, "Slice": 1}
    assert "input shape not static, cannot list the reversed indices" in result.notes[0]


def test_reversed_axes_beyond_the_index_table_limit_stay():
    """A declared axis of 2^22 + 1 (no data needed to declare it) would need a 4.2M-entry index
    list, over MAX_INDEX_TABLE: kept with the reason, nothing built."""
    _, after, result = apply(last_axis_flip(f"float[1,{2**22 + 1}]"), "slice-reverse-to-gather")
    assert not result.changed and histogram(after) == {"Constant": 4, "Slice": 1}
    assert result.notes == ["Slice '' left alone: reversed axis of 4194305 elements, more than the 4194304 "
                            "indices a Gather table may hold"]



@pytest.mark.parametrize("cap, changed", [(5, True), (4, False)])
def test_a_reversed_axis_of_exactly_the_index_table_limit_is_rewritten(monkeypatch, cap, changed):
    """The limit is inclusive: reversing an axis of 5 needs 5 indices (the cap made small to test its edge)."""
    import passes.slice_reverse_to_gather as module

    monkeypatch.setattr(module, "MAX_INDEX_TABLE", cap)
    _, after, result = apply(last_axis_flip("float[1,5]"), "slice-reverse-to-gather")
    assert result.changed is changed
    assert histogram(after) == ({"Gather": 1} if changed else {"Constant": 4, "Slice": 1})

def test_positive_slices_untouched():
    text = f"""{HEADER}
    g (float[2,5,7] x) => (float[2,5,3] y) {{
      starts = Constant<value = int64[1] {{1}}>()
      ends = Constant<value = int64[1] {{4}}>()
      axes = Constant<value = int64[1] {{2}}>()
      steps = Constant<value = int64[1] {{1}}>()
      y = Slice(x, starts, ends, axes, steps)
    }}"""
    _, after, result = apply(text, "slice-reverse-to-gather")
    assert not result.changed and histogram(after) == {"Constant": 4, "Slice": 1}


# --- remove-identity --------------------------------------------------------------------

def test_remove_identity_inside_and_at_a_graph_output():
    text = f"""{HEADER}
    g (float[2,5,7] x) => (float[2,5,7] y) <float[7] w = {{1,2,3,4,5,6,7}}> {{
      wi = Identity(w)
      a = Add(x, wi)
      b = Relu(a)
      y = Identity(b)
    }}"""
    before, after, result = apply(text, "remove-identity")
    assert result.stats == {"removed": 2}
    assert histogram(after) == {"Add": 1, "Relu": 1}
    assert [o.name for o in after.graph.output] == ["y"] and after.graph.node[-1].output[0] == "y"
    same_outputs(before, after, {"x": X})


def test_identity_from_graph_input_to_output_is_kept_with_a_note():
    text = f"""{HEADER}
    g (float[2] x) => (float[2] y) {{ y = Identity(x) }}"""
    _, after, result = apply(text, "remove-identity")
    assert not result.changed and "kept" in result.notes[0]


def test_remove_identity_without_identities_changes_nothing():
    text = f"""{HEADER}
    g (float[2] x) => (float[2] y) {{ y = Relu(x) }}"""
    _, after, result = apply(text, "remove-identity")
    assert (result.changed, result.stats, result.notes) == (False, {"removed": 0}, [])
    assert histogram(after) == {"Relu": 1}


def test_remove_identity_keeps_only_copies_of_inputs_initializers_and_other_outputs():
    """An Identity copying another graph output (made by a node), one copying an initializer and one
    copying a graph input are kept, each with the whole note; the removable Identity after them is still
    removed (its source also read by a Neg, which then reads the graph output's tensor); an unused graph
    input stays an input."""
    text = f"""{HEADER}
    g (float[2,5,7] x, float[3] unused) => (float[2,5,7] r, float[2,5,7] r_copy, float[7] w_copy,
                                            float[2,5,7] x_copy, float[2,5,7] y, float[2,5,7] z)
      <float[7] w = {{1,2,3,4,5,6,7}}> {{
      r = Relu(x)
      r_copy = Identity(r)
      w_copy = Identity(w)
      x_copy = Identity(x)
      h = Sigmoid(x)
      y = Identity(h)
      z = Neg(h)
    }}"""
    before, after, result = apply(text, "remove-identity")
    assert (result.changed, result.stats) == (True, {"removed": 1})
    why = "kept: it copies a graph input, initializer or another graph output into a graph output"
    assert result.notes == [f"Identity '' {why}"] * 3
    assert [(n.op_type, list(n.input), list(n.output)) for n in after.graph.node] == [
        ("Relu", ["x"], ["r"]), ("Identity", ["r"], ["r_copy"]), ("Identity", ["w"], ["w_copy"]),
        ("Identity", ["x"], ["x_copy"]), ("Sigmoid", ["x"], ["y"]), ("Neg", ["y"], ["z"])]
    assert [i.name for i in after.graph.input] == ["x", "unused"]
    same_outputs(before, after, {"x": X, "unused": np.zeros(3, np.float32)})


def test_remove_identity_with_only_kept_ones_reports_no_change():
    text = f"""{HEADER}
    g (float[2] x) => (float[2] r, float[2] r_copy) {{
      r = Relu(x)
      r_copy = Identity(r)
    }}"""
    _, after, result = apply(text, "remove-identity")
    assert (result.changed, result.stats) == (False, {"removed": 0})
    assert result.notes == ["Identity '' kept: it copies a graph input, initializer or another graph output into a graph output"]
    assert histogram(after) == {"Identity": 1, "Relu": 1}


# --- tpu-legality -----------------------------------------------------------------------

def test_canonical_einsum():
    assert canonical_einsum("bdln,bdnl->bdl") == "abcd,abdc->abc"


def test_legality_finds_every_rule():
    text = f"""{HEADER}
    g (float[1,4,8,8,2] x, float[N] d, float[8,8] w) => (float[1,4,8,8,2] y, float[1,4,8,8,2] z, float[1,4,8,2] e,
                                                         float[?] f, float[1,4,8,8,2] m) {{
      axis = Constant<value_int = 2>()
      m = MatMul(w, x)
      y = CumSum<reverse = 1>(x, axis)
      z = Identity(y)
      e = Einsum<equation = "abcde,abcde->abce">(x, x)
      starts = Constant<value = int64[1] {{-1}}>()
      ends = Constant<value = int64[1] {{-100}}>()
      axes = Constant<value = int64[1] {{0}}>()
      steps = Constant<value = int64[1] {{-1}}>()
      f = Slice(d, starts, ends, axes, steps)
    }}"""
    graph = gs.import_onnx(onnx.parser.parse_model(text))
    rules = " | ".join(find_violations(graph))
    for expected in ("static shape", "Identity", "negative step", "exclusive/reverse", "rank > 4", "Einsum equation",
                     "Constant node without a 'value'", "MatMul with a lower-rank left operand"):
        assert expected in rules, expected
    with pytest.raises(PassError, match="legality violation"):
        get_pass("tpu-legality").run(graph, PassContext(opset=17))
    result = get_pass("tpu-legality", strict=False).run(graph, PassContext(opset=17))
    assert not result.changed and result.stats["violations"] == 8


def test_legality_size_limit_and_clean_graph():
    text = f"""{HEADER}
    g (float[1,96,3136] x) => (float[1,96,3136] y) {{
      axis = Constant<value_int = 2>()
      y = CumSum(x, axis)
    }}"""
    graph = gs.import_onnx(onnx.parser.parse_model(text))
    assert "too large" in " ".join(find_violations(graph))
    get_pass("split-cumsum").run(graph, PassContext(opset=17))
    get_pass("constants-to-initializers").run(graph, PassContext(opset=17))
    assert find_violations(graph) == {}


LEGALITY_GRAPH = """<ir_version: 8, opset_import: ["" : 18]>
g (float[1,4,8,8,2] x, float[N,3] d, float[8,8] w, float[2,8,8] w3, int64[1] k, bool c, float q, int64 ax) =>
  (float[1,4,8,8,2] y, float[1,4,8,8,2] z, float[1,4,8,2] e, float[?] f, float[1,4,8,8,2] m, float[8,8] m2,
   float[2,8,8] m3, float[8,8] i, bool[N,3] n, float[1,4,8,1,2] r, float[1,4,8,8,1] l, float[?] f2, float[N,3] cs,
   float[8,8] cs2, float u, float[1,4,8,8,2] p) {
  axis = Constant<value_int = 2>()
  m = MatMul(w, x)
  m2 = MatMul(w, w)
  m3 = MatMul(w, w3)
  y = CumSum<reverse = 1>(x, axis)
  z = Identity(y)
  e = Einsum<equation = "abcde,abcde->abce">(x, x)
  e2 = Einsum<equation = "bdl,bdn->bln">(w3, w3)
  starts = Constant<value = int64[1] {-1}>()
  ends = Constant<value = int64[1] {-100}>()
  axes = Constant<value = int64[1] {0}>()
  steps = Constant<value = int64[1] {-1}>()
  f = Slice(d, starts, ends, axes, steps)
  f2 = Slice(d, starts, ends, axes, k)
  one = Constant<value = int64[1] {1}>()
  f3 = Slice(d, starts, ends, axes, one)
  i = If(c) <then_branch = t () => (float[8,8] a) { a = Neg(w) }, else_branch = el () => (float[8,8] b) { b = Abs(w) }>
  n = IsNaN(d)
  a3 = Constant<value = int64[1] {3}>()
  r = ReduceMean(x, a3)
  r2 = ReduceMax(x, a3)
  l = ReduceLogSumExp(x, a3)
  cs = CumSum(d, ax)
  cs2 = CumSum<exclusive = 1>(w, ax)
  u = Identity(q)
  pads = Constant<value = int64[2] {0, 0}>()
  p = Pad(x, pads, , a3)
}"""


def test_legality_names_every_offender_under_its_rule_exactly():
    """One graph breaking every rule, next to ops that break none (a square MatMul, a batched right operand of rank 2,
    a known Einsum, a Slice of step 1, a ReduceMax with an axes input); every node named after its output, and an
    input of no shape whose name a shell must quote; Loop and Scan added by hand (their bodies are not read)."""
    graph = gs.import_onnx(onnx.parser.parse_model(LEGALITY_GRAPH))
    for node in graph.nodes:
        node.name = node.outputs[0].name
    graph.inputs[6].name, graph.inputs[6].shape = "q input", None
    graph.nodes += [gs.Node("Loop", "loop", inputs=[], outputs=[gs.Variable("lo")]),
                    gs.Node("Scan", "scan", inputs=[], outputs=[gs.Variable("sc")])]
    violations = find_violations(graph)
    assert violations == {
        "graph input without a static shape (fix it with passes.apply --input-shape NAME:D0,D1,..., or export with "
        "static shapes)": ["input 'd' ['N', 3]: e.g. --input-shape d:1,3",
                           "input 'q input' None: e.g. --input-shape 'q input:D0,D1,...' (its rank is not declared)"],
        "Constant node without a 'value' attribute (run constants-to-initializers)": ["Constant 'axis' ['value_int']"],
        "MatMul with a lower-rank left operand broadcast over the right's batch axes (MatMul.cpp:66 asserts)": [
            "MatMul 'm' [8, 8] x [1, 4, 8, 8, 2]", "MatMul 'm3' [8, 8] x [2, 8, 8]"],
        "CumSum with exclusive/reverse, ignored by tpu-mlir (run cumsum-plain)": ["CumSum 'y'", "CumSum 'cs2'"],
        "CumSum input of rank > 4 (run cumsum-rank4)": ["CumSum 'y' [1, 4, 8, 8, 2]"],
        "Identity node (run remove-identity)": ["Identity 'z'"],
        "Einsum equation tpu-mlir does not know (run lower-einsum, then einsum-to-matmul)": [
            "Einsum 'e' 'abcde,abcde->abce'"],
        "Slice with a negative step (run slice-reverse-to-gather)": ["Slice 'f'"],
        "Slice with non-constant steps (must be > 0)": ["Slice 'f2'"],
        "If op (If is not supported)": ["If 'i'"],
        "IsNaN op (model_transform: \"Op not support:{'IsNaN'}\"; run isnan-to-equal)": ["IsNaN 'n'"],
        AXES_INPUT_RULE: ["ReduceMean 'r': model_transform: \"Unsupport opset for ReduceMean\"",
                          "ReduceLogSumExp 'l': its axes input is ignored (every axis reduced)",
                          "Pad 'p': its axes input is ignored (pads read as every axis')"],
        "CumSum with a non-constant axis": ["CumSum 'cs'", "CumSum 'cs2'"],
        "CumSum input shape not static (size limit cannot be checked)": ["CumSum 'cs'"],
        "Loop op (Loop crashes the compiler; unroll-loops' note says why it was left)": ["Loop 'loop'"],
        "Scan op (Scan is not supported; unroll-loops' note says why it was left)": ["Scan 'scan'"],
        # adv16: an Identity from a graph input to a graph output has its own rule (remove-identity keeps it)
        "Identity copying a graph input or constant into a graph output (tpu-mlir refuses an input returned as an "
        "output; remove-identity{copy_inputs=true} makes it x * 1 where Mul takes its type)": ["Identity 'u'"]}
    assert format_violations({"rule": ["a", "b", "c"]}) == ["rule: 3 (a; b; c)"]
    assert format_violations({"rule": ["a", "b", "c", "d", "e"]}, shown=2) == ["rule: 5 (a; b and 3 more)"]
    lines = format_violations(violations)
    assert lines[2] == ("MatMul with a lower-rank left operand broadcast over the right's batch axes (MatMul.cpp:66 "
                        "asserts): 2 (MatMul 'm' [8, 8] x [1, 4, 8, 8, 2]; MatMul 'm3' [8, 8] x [2, 8, 8])")
    assert lines[11] == (f"{AXES_INPUT_RULE}: 3 (ReduceMean 'r': model_transform: \"Unsupport opset for ReduceMean\"; "
                         "ReduceLogSumExp 'l': its axes input is ignored (every axis reduced); Pad 'p': its axes input "
                         "is ignored (pads read as every axis'))")
    with pytest.raises(PassError) as error:
        get_pass("tpu-legality").run(graph, PassContext(opset=18))
    assert str(error.value) == "23 tpu-mlir legality violation(s): " + " | ".join(lines)
    result = get_pass("tpu-legality", strict=False).run(graph, PassContext(opset=18))
    assert result.changed is False and result.stats == {"violations": 23} and result.notes == lines


@pytest.mark.parametrize("budget, lanes, over", [(None, None, False), (128, 1, False), (127, 1, True), (32, 4, False),
                                                 (31, 4, True)])
def test_the_cumsum_size_limit_is_its_footprint_against_the_budget(budget, lanes, over):
    """CumSum of [1, 8, 16] along axis 2 (constants as initializers): 128 elements per lane on 1 lane, 32 on 4 (the
    8 rows shared out), taken at the budget and refused one under; the defaults (4096, 64 lanes) take it."""
    graph = gs.import_onnx(onnx.parser.parse_model(f"""{HEADER}
    g (float[1,8,16] x) => (float[1,8,16] y) {{
      axis = Constant<value = int64 {{2}}>()
      y = CumSum(x, axis)
    }}"""))
    graph.nodes[1].name = "cs"
    options = {} if budget is None else {"budget": budget, "lanes": lanes}
    expected = {f"CumSum input too large: over {budget} elements per lane (run split-cumsum)": [
        f"CumSum 'cs' [1, 8, 16] axis 2: {128 // lanes}"]} if over else {}
    assert find_violations(graph, **options) == expected
    result = get_pass("tpu-legality", strict=False, **options).run(graph, PassContext(opset=17))
    assert result.stats == {"violations": 1 if over else 0}


def test_legality_edges_zero_sizes_spaces_computed_starts_vectors_rank_4_and_negative_axes():
    """What is legal at each rule's edge: a zero-size input dimension (static), an Einsum of a known equation written
    with spaces, a Slice of a computed start and a constant step 1, a vector times a matrix, a rank-4 CumSum; a CumSum
    of axis -2 counted on its own axis (1 of [1, 16, 8]: 128 a lane, 32 with the last axis shared out)."""
    graph = gs.import_onnx(onnx.parser.parse_model(f"""{HEADER}
    g (float[0,3] z, float[N,0] s, float[8] v, float[8,8] w, float[4,8] a, float[1,1,8,16] r, int64[1] b,
       float[1,16,8] c) => (float[?] f, float[8] m, float[2,8] e, float[1,1,8,16] rr, float[1,16,8] cc) {{
      one = Constant<value = int64[1] {{1}}>()
      axis0 = Constant<value = int64[1] {{0}}>()
      end = Constant<value = int64[1] {{4}}>()
      f = Slice(v, b, end, axis0, one)
      m = MatMul(v, w)
      e = Einsum<equation = "bdl, bdn -> bln">(a, a)
      three = Constant<value = int64 {{3}}>()
      rr = CumSum(r, three)
      minus2 = Constant<value = int64 {{-2}}>()
      cc = CumSum(c, minus2)
    }}"""))
    graph.nodes[-1].name, graph.nodes[-3].name = "cs", "rr"
    assert find_violations(graph, budget=128, lanes=4) == {
        "graph input without a static shape (fix it with passes.apply --input-shape NAME:D0,D1,..., or export with "
        "static shapes)": ["input 's' ['N', 0]: e.g. --input-shape s:1,0"]}
    assert find_violations(graph, budget=127, lanes=4)[
        "CumSum input too large: over 127 elements per lane (run split-cumsum)"] == [
        "CumSum 'rr' [1, 1, 8, 16] axis 3: 128", "CumSum 'cs' [1, 16, 8] axis 1: 128"]
    assert canonical_einsum("bdl, bdn -> bln") == "abc,abd->acd"
    assert format_violations({"rule": ["a", "b", "c", "d"]}) == ["rule: 4 (a; b; c and 1 more)"]


# --- adv16: graph outputs that copy a graph input or a constant (tpu-mlir 1.30.2, tools.tpu_check, session s28) ---

COPIED_INPUT = f"""{HEADER}
g (float[1,4] x, int64[3] k, bool[2] b) => (float[1,4] y, int64[3] kk, bool[2] bb, float[1,4] z) {{
  y = Identity(x)  kk = Identity(k)  bb = Identity(b)  z = Relu(x) }}"""


def test_remove_identity_makes_an_input_copied_to_an_output_a_multiply_by_one_where_asked():
    """tpu-mlir refuses an input returned as an output ("type of return operand 0 ('tensor<1x4xf32>') doesn't match
    function result type"), Identity or not, and compiles y = x * 1 (with a Relu beside: cosine 1.0). A bool has no Mul:
    kept, with the note."""
    model, out, result = apply(COPIED_INPUT, "remove-identity", copy_inputs=True)
    assert histogram(out) == {"Identity": 1, "Mul": 2, "Relu": 1}
    assert result.stats == {"removed": 0, "multiplied": 2} and result.changed
    assert [o.name for o in out.graph.output] == ["y", "kk", "bb", "z"]
    assert ["Identity '' kept" in note for note in result.notes] == [True]
    feeds = {"x": np.array([[-0.0, np.inf, np.nan, -2.5]], np.float32), "k": np.array([-(2 ** 62), 0, 7]),
             "b": np.array([True, False])}
    expected, actual = run_model(model, feeds), run_model(out, feeds)
    for key in expected:   # bit for bit: -0.0, inf and NaN too
        assert expected[key].tobytes() == actual[key].tobytes()
    _, plain, plain_result = apply(COPIED_INPUT, "remove-identity")
    assert histogram(plain) == {"Identity": 3, "Relu": 1} and plain_result.stats == {"removed": 0}


@pytest.mark.parametrize("text, code, phrase", [
    # adv15's open lead: a plain Identity model exited 4 "Identity node (run remove-identity)" after remove-identity ran.
    (f"{HEADER}\ng (float[1,4] x) => (float[1,4] y) {{ y = Identity(x) }}", 2,
     "nothing computed: every graph output is a graph input or a constant, copied"),
    (f"{HEADER}\ng (float[1,4] x) => (float[1,4] x, float[1,4] z) {{ z = Relu(x) }}", 2,
     "graph output that is a graph input passed through (tpu-mlir's model_transform"),
    (f"{HEADER}\ng (float[1,4] x) => (float[1,4] y, float[1,4] z) <float[1,4] w = {{1, 2, 3, 4}}> "
     "{ y = Identity(w) z = Relu(x) }", 2, "graph output that is a constant (tpu-mlir leaves it out of the bmodel"),
    (f"{HEADER}\ng (float[1,4] x, bool[2] b) => (bool[2] c, float[1,4] z) {{ c = Identity(b) z = Relu(x) }}", 2,
     "Identity copying a graph input or constant into a graph output"),
    (f"{HEADER}\ng (float[1,4] x) => (float[1,4] y, float[1,4] z) {{ y = Identity(x) z = Relu(x) }}", 0, None),
    # adv17: a ConstantOfShape of 2^23 elements, its dims computed from Shape(x), is one fold-constants leaves for its
    # size; model_transform's ConstantFolding (its default) folds it to a weight and drops the output (seen on a
    # (16, 32) twin with tools.tpu_check --tpu-onnxsim; without, computed: cosine 1.0). Exit 0 before.
    (f"{HEADER}\ng (float[1,4] x) => (float[1,4] y, float[4096,2048] z) {{ y = Relu(x) s0 = Shape(x) "
     "s1 = Constant<value = int64[2] {4096, 512}>() s = Mul(s0, s1) z = ConstantOfShape<value = float[1] {2.0}>(s) }",
     2, "graph output computed from constants and shapes only (model_transform's own constant folding, on unless "
     "--do_onnx_sim is off, folds it to a weight and leaves it out of the bmodel; the caller can compute it: drop the "
     "output): 1 (output 'z' (ConstantOfShape ''))"),
], ids=["identity-only", "output-is-input", "constant-output", "bool-copy", "copy-beside-a-relu", "folded-by-tpu-mlir"])
def test_the_tpu_pipeline_on_outputs_that_copy_an_input_or_a_constant(text, code, phrase, tmp_path):
    from test_cli import apply_cli, assert_one_line_error
    model = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model(text), model)
    result = apply_cli(model, "--pipeline", "tpu", "-o", tmp_path / "o.onnx")
    if code:
        assert_one_line_error(result, code, phrase, "(found by pass 'tpu-legality')")
        assert not (tmp_path / "o.onnx").exists()
    else:
        assert result.returncode == 0, result.stderr
        assert histogram(onnx.load(tmp_path / "o.onnx")) == {"Mul": 1, "Relu": 1}


def test_an_interface_rule_beside_another_rule_is_a_failed_pass():
    """Only the interface at fault is the input's (exit 2); with a rule a pass could have kept (an If), exit 4 stays."""
    text = f"""{HEADER}
g (float[1,4] x, bool c) => (float[1,4] x, float[1,4] z) {{
  z = If(c) <then_branch = t () => (float[1,4] a) {{ a = Relu(x) }}, else_branch = e () => (float[1,4] b) {{ b = Neg(x) }}> }}"""
    violations = find_violations(gs.import_onnx(onnx.parser.parse_model(text)))
    assert sorted(rule.split(" (")[0] for rule in violations) == ["If op", "graph output that is a graph input passed through"]
    with pytest.raises(PassError) as raised:
        get_pass("tpu-legality").run(gs.import_onnx(onnx.parser.parse_model(text)), PassContext(opset=17))
    assert type(raised.value) is PassError

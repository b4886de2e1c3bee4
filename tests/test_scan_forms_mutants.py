"""The scan forms called directly, against a float64 sequential scan at tight tolerances (session s29, mut29).

Each form is built on graph inputs (no pattern matching in between), so every size reaches it as asked: lengths
with and without a chunk remainder, one chunk and many, the scan axis inside or last, a batch of 2, d_state 1
and 3, an initial state or none, decays in [0.13, 0.6] (with decays near 1 a state one step or one chunk off is
almost the same state, and the error hides under 1e-5: test_mutants' carry test), and for the forms that take
any sign, decays of both signs. These kill mutmut's survivors of passes/scan_forms/{window_doubling,
parallel_strided, chunk_axes, batched, batched_doubling}.py (docs/MUTATION.md, "Session s29 (mut29)") and, at the
end, of parallel.py, chunk24.py and decays.py ("Session s31 (mut32)").
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from passes.graph_builder import GraphBuilder
from passes.scan_forms import SCAN_FORMS
from passes.scan_forms.decays import Decays
from scan_testing import op_histogram, rel_l2, run

TOL = 1e-6   # float32 forms vs the float64 scan; decays <= 0.6 keep every form's error near 1e-7


def scan64(decay: np.ndarray, drive: np.ndarray, axis: int, initial: Optional[np.ndarray] = None) -> np.ndarray:
    """x_t = a_t * x_{t-1} + b_t along `axis`, in float64; `initial` has size 1 on that axis."""
    a = np.moveaxis(decay.astype(np.float64), axis, 0)
    b = np.moveaxis(drive.astype(np.float64), axis, 0)
    state = np.zeros(a.shape[1:]) if initial is None else np.moveaxis(initial.astype(np.float64), axis, 0)[0]
    states = []
    for t in range(a.shape[0]):
        state = a[t] * state + b[t]
        states.append(state)
    return np.moveaxis(np.stack(states), 0, axis)


def form_model(form: str, shape: tuple, axis: int, chunk: int, *, log_space: bool = True, initial: bool = False,
               **options) -> onnx.ModelProto:
    """A model of one form: inputs "z" (log a where log_space, else a itself), "b", and with `initial`
    "h0" (size 1 on the scan axis); output "states"."""
    graph = gs.Graph(opset=17)
    z = gs.Variable("z", np.float32, shape)
    b = gs.Variable("b", np.float32, shape)
    graph.inputs = [z, b]
    start = None
    if initial:
        start = gs.Variable("h0", np.float32, tuple(1 if i == axis else s for i, s in enumerate(shape)))
        graph.inputs.append(start)
    builder = GraphBuilder(graph, 17, "form")
    decays = Decays.from_log(builder, z) if log_space else Decays(lambda: z, None, "a graph input")
    if form in ("parallel-strided", "strided-readout", "channels-last-readout"):
        options.setdefault("shapes", {"z": shape, "b": shape})
    out = SCAN_FORMS[form](builder, decays=decays, drive=b, initial=start, axis=axis, length=shape[axis],
                           chunk=chunk, rank=len(shape), **options)
    states = builder.node("Identity", [out], output=gs.Variable("states", np.float32, shape))
    graph.outputs = [states]
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    return model


def feeds_for(shape: tuple, axis: int, *, seed: int = 0, log_space: bool = True, initial: bool = False,
              signs: bool = False) -> dict[str, np.ndarray]:
    """Decays in [0.13, 0.6] (log a in [-2, -0.5]); with `signs` a random sign each (the form takes a as is)."""
    rng = np.random.default_rng(seed)
    log_a = -rng.uniform(0.5, 2.0, shape)
    a = np.exp(log_a) * (rng.choice([-1.0, 1.0], shape) if signs else 1.0)
    feeds = {"z": (log_a if log_space else a).astype(np.float32), "b": rng.standard_normal(shape).astype(np.float32)}
    if initial:
        feeds["h0"] = rng.standard_normal(tuple(1 if i == axis else s for i, s in enumerate(shape))).astype(np.float32)
    return feeds


def expected_of(feeds: dict, axis: int, log_space: bool = True) -> np.ndarray:
    decay = np.exp(feeds["z"].astype(np.float64)) if log_space else feeds["z"].astype(np.float64)
    return scan64(decay, feeds["b"], axis, feeds.get("h0"))


def check(form: str, shape: tuple, axis: int, chunk: int, *, log_space: bool = True, initial: bool = False,
          signs: bool = False, seeds=(0, 1), **options) -> onnx.ModelProto:
    model = form_model(form, shape, axis, chunk, log_space=log_space, initial=initial, **options)
    for seed in seeds:
        feeds = feeds_for(shape, axis, seed=seed, log_space=log_space, initial=initial, signs=signs)
        actual = run(model, feeds)[0]
        assert actual.shape == shape
        error = rel_l2(actual, expected_of(feeds, axis, log_space))
        assert error <= TOL, f"{form} {shape} axis {axis} chunk {chunk}: rel L2 {error:.2e}"
    return model


# (shape, scan axis): batch 2; the scan axis inside (Mamba/VMamba: (B, L, D, N)) or last; d_state 1 and 3.
LAYOUTS = [((2, 13, 3, 1), 1), ((2, 3, 3, 13), 3), ((2, 13, 2, 3), 1), ((2, 3, 1, 13), 3)]
# (length replacing 13, chunk): a remainder (13 of 4: padded to 16), an exact fit (12 of 4, 3 chunks),
# a half-chunk divisor (14 of 8: 2 chunks of 7), one chunk (5 of 8), one step, many chunks (37 of 2: 19 chunks).
LENGTHS = [(13, 4), (12, 4), (14, 8), (5, 8), (1, 4), (37, 2)]


def _layout(shape: tuple, axis: int, length: int) -> tuple:
    return tuple(length if i == axis else s for i, s in enumerate(shape))


@pytest.mark.parametrize("form", ["window-doubling", "batched", "batched-doubling", "parallel-strided"])
@pytest.mark.parametrize("length, chunk", LENGTHS)
@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
@pytest.mark.parametrize("initial", [False, True])
def test_log_space_forms_equal_the_float64_scan(form, length, chunk, layout, initial):
    shape, axis = LAYOUTS[layout]
    check(form, _layout(shape, axis, length), axis, chunk, initial=initial)


@pytest.mark.parametrize("form", ["batched-doubling", "parallel-strided"])
@pytest.mark.parametrize("length, chunk", LENGTHS)
@pytest.mark.parametrize("layout", [0, 1, 2])
@pytest.mark.parametrize("initial", [False, True])
def test_forms_of_any_sign_equal_the_float64_scan_on_decays_of_both_signs(form, length, chunk, layout, initial):
    """The decays as they are (no log): each chunk's decay product is a product of the decays, not exp(sum log)."""
    shape, axis = LAYOUTS[layout]
    check(form, _layout(shape, axis, length), axis, chunk, log_space=False, initial=initial, signs=True)


@pytest.mark.parametrize("one_chunk_up_to", [0, 12, 13, 40])
@pytest.mark.parametrize("length, chunk", [(13, 4), (40, 4), (37, 2)])
@pytest.mark.parametrize("layout", [0, 3])
@pytest.mark.parametrize("initial", [False, True])
def test_window_doubling_with_short_scans_as_one_chunk(one_chunk_up_to, length, chunk, layout, initial):
    shape, axis = LAYOUTS[layout]
    check("window-doubling", _layout(shape, axis, length), axis, chunk, initial=initial,
          one_chunk_up_to=one_chunk_up_to)


@pytest.mark.parametrize("dense_carry, carry_shifts", [(0, "matmul"), (0, "slices"), (64, "matmul"), (4, "matmul")])
@pytest.mark.parametrize("length, chunk", [(13, 4), (12, 4), (14, 8), (37, 2), (5, 8)])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("initial", [False, True])
def test_batched_carries(dense_carry, carry_shifts, length, chunk, layout, initial):
    """The doubling carry with the chunk axis moved last (MatMul shifts) or left in place (Slice shifts), and the
    dense carry (one weight matrix per channel: only without an initial state and with the step axis last)."""
    shape, axis = LAYOUTS[layout]
    check("batched", _layout(shape, axis, length), axis, chunk, initial=initial, dense_carry=dense_carry,
          carry_shifts=carry_shifts)


def _shift_pads(model: onnx.ModelProto) -> int:
    """Pads of a Slice: the carry shifted by Slice + Pad (the other Pads pad odd chunk counts to even ones)."""
    made_by = {out: node for node in model.graph.node for out in node.output}
    return sum(node.op_type == "Pad" and made_by[node.input[0]].op_type == "Slice" for node in model.graph.node)


@pytest.mark.parametrize("length, shift_pads", [(600, 1), (514, 1), (512, 0)])
def test_window_doubling_carries_into_more_chunks_than_a_shift_matmul_takes(length, shift_pads):
    """Chunks of 2: 300 and 257 chunks are past MATMUL_CARRY_UP_TO (256) and carried by Slice + Pad; 256 chunks
    (L 512) by a MatMul, as every level below."""
    from passes.scan_forms.window_doubling import MATMUL_CARRY_UP_TO

    assert MATMUL_CARRY_UP_TO == 256
    model = check("window-doubling", (1, 2, 1, length), 3, 2, initial=True, seeds=(0,))
    assert _shift_pads(model) == shift_pads


@pytest.mark.parametrize("one_chunk_up_to, reduce_sums", [(0, 3), (9, 2), (10, 1), (12, 1), (40, 0)])
def test_window_doubling_takes_a_short_level_below_as_one_chunk(one_chunk_up_to, reduce_sums):
    """L 40 at chunk 4: 10 chunks of 4, whose level below (10 steps) is one chunk when one_chunk_up_to >= 10 (one
    ReduceSum: one level of chunks), else 5 chunks of 2, whose level below (5 steps) is one chunk at 9 (two),
    else 2 chunks of 4 (three); the whole scan one chunk at 40 (none). one_chunk_up_to reaches every level."""
    model = check("window-doubling", (2, 3, 1, 40), 3, 4, seeds=(0,), one_chunk_up_to=one_chunk_up_to)
    assert op_histogram(model).get("ReduceSum", 0) == reduce_sums


def factored_model(length: int, chunk: int, *, axis_last: bool, initial: bool, log_space: bool,
                   through: str = "Mul") -> tuple[onnx.ModelProto, dict, np.ndarray]:
    """Mamba's factors: log a = dt * A (`through` "Div": dt / (1 / A); "Neg": -(dt * -A); "Identity", "Cast":
    that op of dt * A), a = Exp(log a), b = (dt * B) * u, with dt and u (batch 2, L, D 3, 1), B (L, 1, N 2: no
    batch axis, a lower rank), A a (D, N) constant; the scan axis
    1, or last when `axis_last` (every tensor transposed (0, 2, 3, 1) first). The model, its feeds, the
    float64 states."""
    rng = np.random.default_rng(3)
    batch, width, state = 2, 3, 2
    a_value = -rng.uniform(0.5, 2.0, (width, state)).astype(np.float32)
    feeds = {"dt": rng.uniform(0.5, 1.0, (batch, length, width, 1)).astype(np.float32),
             "u": rng.standard_normal((batch, length, width, 1)).astype(np.float32),
             "B": rng.standard_normal((length, 1, state)).astype(np.float32)}
    perm = (0, 2, 3, 1)
    if axis_last:
        feeds = {name: np.ascontiguousarray(value.transpose(perm if value.ndim == 4 else (1, 2, 0)))
                 for name, value in feeds.items()}
        a_value = a_value[:, :, None]
    axis = 3 if axis_last else 1
    full = tuple(np.broadcast_shapes(feeds["dt"].shape, feeds["B"].shape))
    start_shape = tuple(1 if i == axis else s for i, s in enumerate(full))
    if initial:
        feeds["h0"] = rng.standard_normal(start_shape).astype(np.float32)
    graph = gs.Graph(opset=17)
    variables = {name: gs.Variable(name, np.float32, value.shape) for name, value in feeds.items()}
    graph.inputs = list(variables.values())
    shapes = {name: value.shape for name, value in feeds.items()}
    builder = GraphBuilder(graph, 17, "f")

    def made(op, inputs, name):
        out = builder.node(op, inputs, output=gs.Variable(name, np.float32, full))
        shapes[name] = full
        return out

    A = gs.Constant("A", a_value)
    if through == "Mul":
        log_a = made("Mul", [variables["dt"], A], "log_a")
    elif through == "Div":
        log_a = made("Div", [variables["dt"], gs.Constant("inverse_A", (1 / a_value).astype(np.float32))], "log_a")
    elif through == "Neg":
        log_a = made("Neg", [made("Mul", [variables["dt"], gs.Constant("minus_A", -a_value)], "minus_log_a")], "log_a")
    else:   # Identity, Cast (to float): ops on the product that the chunk sum passes
        product = made("Mul", [variables["dt"], A], "product")
        out = builder.node(through, [product], {"to": onnx.TensorProto.FLOAT} if through == "Cast" else None,
                           output=gs.Variable("log_a", np.float32, full))
        shapes["log_a"] = full
        log_a = out
    a = made("Exp", [log_a], "a")
    drive = made("Mul", [made("Mul", [variables["dt"], variables["B"]], "dtB"), variables["u"]], "drive")
    decays = Decays.of(builder, a) if log_space else Decays(lambda: a, None, "as they are")
    out = SCAN_FORMS["parallel-strided"](builder, decays=decays, drive=drive, initial=variables.get("h0"), axis=axis,
                                         length=length, chunk=chunk, rank=4, shapes=shapes)
    graph.outputs = [builder.node("Identity", [out], output=gs.Variable("states", np.float32, full))]
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    decay = np.exp(feeds["dt"].astype(np.float64) * a_value)
    drive_value = feeds["dt"].astype(np.float64) * feeds["B"] * feeds["u"]
    return model, feeds, scan64(decay, drive_value, axis, feeds.get("h0"))


@pytest.mark.parametrize("through", ["Mul", "Div", "Neg", "Identity", "Cast"])
@pytest.mark.parametrize("length, chunk", [(12, 4), (13, 4), (14, 8), (5, 8), (37, 2), (1, 4), (6, 2)])
@pytest.mark.parametrize("axis_last", [False, True])
@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("log_space", [True, False])
def test_parallel_strided_on_factors_equals_the_float64_scan(through, length, chunk, axis_last, initial, log_space):
    """Strided steps pushed through the factors down to dt, B and u; no (L, D, N) decay or drive is left."""
    model, feeds, expected = factored_model(length, chunk, axis_last=axis_last, initial=initial, log_space=log_space,
                                            through=through)
    actual = run(model, feeds)[0]
    assert actual.shape == expected.shape
    assert rel_l2(actual, expected) <= TOL
    names = {out for node in model.graph.node for out in node.output}
    if length > 1:   # (one step: every tensor has size 1 on the scan axis and is its own step)
        assert not {"a", "log_a", "drive", "dtB"} & names   # the full-size decays and drives are dead


def test_window_doubling_chunk_2_on_an_odd_length_keeps_2_steps_a_chunk():
    """L = 9, chunk 2: 2 steps a chunk at every level (9 -> 5 -> 3 -> 2 chunks, each padded: 6 Pads), the last
    level one chunk of 2; not 3 steps a chunk (9 = 3 x 3 needs no padding). Per chunked level one shift MatMul,
    one growth band MatMul and one carry MatMul; the last scan one shift MatMul: 10."""
    model = check("window-doubling", (1, 9), 1, 2, seeds=(0,))
    assert op_histogram(model) == {"Add": 7, "Concat": 9, "Exp": 7, "Gather": 3, "Identity": 1, "MatMul": 10, "Mul": 7,
                                   "Pad": 6, "ReduceSum": 3, "Reshape": 9, "Shape": 9, "Slice": 21, "Unsqueeze": 3}


def test_batched_carry_by_slices_runs_log2_chunks_rounds():
    """L = 16, chunk 4: 4 chunks, the paired carry in place composes in 2 rounds (steps 1 and 2), not 3: each
    round 2 Muls and an Add besides its shift (Slice, Mul by 0, Add of the identity, Concat)."""
    model = check("batched", (1, 16, 1), 1, 4, carry_shifts="slices", initial=False, seeds=(0,))
    assert op_histogram(model) == {"Add": 6, "Concat": 7, "CumSum": 2, "Exp": 3, "Identity": 1, "Mul": 14, "Neg": 1,
                                   "ReduceSum": 2, "Reshape": 3, "Shape": 3, "Slice": 15, "Sub": 1}


@pytest.mark.parametrize("args, side", [
    ((3136, 8), 49),        # 392 chunks of 8 (past 256: carried by Slice + Pad, no square), 49 of 8, 7 of 7, one of 7
    ((49, 16), 16),         # 4 chunks of 16 (padded to 64), then one chunk of 4
    ((49, 16, "matmul", 49), 49), ((49, 16, "matmul", 48), 16),   # one_chunk_up_to: 49 steps as one chunk, or not
    ((600, 2), 150),        # 300 chunks (no square), then 150 chunks of 2: a 150-square carry
    ((514, 2), 129),        # 257 chunks: one past MATMUL_CARRY_UP_TO, no square; then 129
    ((512, 2), 256),        # 256 chunks: exactly MATMUL_CARRY_UP_TO, a 256-square carry
    ((7, 8), 7), ((1, 4), 1), ((13, 4), 4),
])
def test_window_doubling_table_side(args, side):
    from passes.scan_forms.window_doubling import window_doubling_table_side

    assert window_doubling_table_side(*args) == side


@pytest.mark.parametrize("args, batched, doubling", [
    ((3136, 8), 392, 392), ((3136, 8, "slices"), 0, 392),   # batched's slices carry has no square; doubling's Q-square stays
    ((13, 4), 4, 4), ((12, 12), 0, 12), ((1, 4), 0, 1), ((37, 2), 37, 37),
    ((8, 4), 2, 4),      # 2 chunks: a 2-square carry (s30)
    ((37, 4), 10, 10),   # 37 steps padded to 10 chunks of 4: ceil(37 / 4), an int (s30)
])
def test_batched_table_sides(args, batched, doubling):
    from passes.scan_forms.batched import batched_table_side
    from passes.scan_forms.batched_doubling import batched_doubling_table_side

    sides = (batched_table_side(*args), batched_doubling_table_side(*args))
    assert sides == (batched, doubling) and all(type(side) is int for side in sides)


# The dense carry (one chunks x chunks weight matrix per channel): a MatMul of the chunk log-decays by a constant,
# an Exp, a Mul and a ReduceSum, the same ops for any chunk count (s30).
_DENSE_CARRY = {"Add": 2, "Concat": 4, "CumSum": 2, "Exp": 4, "Identity": 1, "MatMul": 1, "Mul": 8, "Neg": 1,
                "ReduceSum": 3, "Reshape": 4, "Shape": 4, "Slice": 7, "Sub": 1, "Transpose": 2}
# The doubling carry, chunk axis moved last: 2 chunks, one round (2 shift MatMuls: drive, decay; 1 in the
# round); 162 chunks, 8 rounds (2 + 7 decay shifts + 8 state shifts = 17).
_DOUBLING_CARRY = {"Add": 3, "Concat": 3, "CumSum": 2, "Exp": 3, "Identity": 1, "MatMul": 3, "Mul": 8, "Neg": 1,
                   "ReduceSum": 2, "Reshape": 3, "Shape": 3, "Slice": 6, "Sub": 1, "Transpose": 3}
_DOUBLING_CARRY_162 = dict(_DOUBLING_CARRY, Add=17, MatMul=17, Mul=22)


@pytest.mark.parametrize("length, chunk, dense_carry, expected", [
    (8, 4, 2, _DENSE_CARRY),                # 2 chunks, dense_carry 2: the smallest dense carry, at its edge
    (8, 4, 1, _DOUBLING_CARRY),             # 2 chunks past dense_carry 1
    (100, 2, 64, _DENSE_CARRY),             # 50 chunks (50^3 <= 2^22 < 50^4)
    (322, 2, 200, _DENSE_CARRY),            # 161 chunks: 161^3 = 4,173,281 <= 2^22
    (324, 2, 200, _DOUBLING_CARRY_162),     # 162 chunks: 162^3 = 4,251,528 > MAX_INDEX_TABLE
])
def test_batched_takes_the_dense_carry_up_to_dense_carry_chunks_and_a_cube_of_2_to_the_22(length, chunk, dense_carry,
                                                                                         expected):
    """Scan axis last, no initial state: the dense carry where 1 < chunks <= dense_carry and chunks^3 <=
    MAX_INDEX_TABLE, else the doubling carry; the numbers are the same either way, the graphs are not."""
    from passes.graph_builder import MAX_INDEX_TABLE

    assert MAX_INDEX_TABLE == 1 << 22
    model = check("batched", (1, 2, length), 2, chunk, dense_carry=dense_carry, seeds=(0,))
    assert op_histogram(model) == expected


def test_batched_dense_carry_needs_the_step_axis_last():
    """Rank 3, scan axis 1 (inside): dense_carry is not taken (its (..., chunks, 1) layout needs Q last), the
    doubling carry is (3 chunks, 2 rounds)."""
    model = check("batched", (2, 12, 3), 1, 4, dense_carry=64)
    assert op_histogram(model) == dict(_DOUBLING_CARRY, Add=5, MatMul=5, Mul=10)


def test_batched_pads_with_log_decay_0_so_a_padded_chunk_keeps_the_centred_range():
    """17 steps at chunk 16: 2 chunks, the last padded with 15 steps of log a = 0 (a = 1). Its one real step
    has log a = -170: centred on half the chunk's log sum (-85) its exponents stay within exp(85) (float32's
    limit ~exp(88.7)). Padded with any other log decay, the centre moves by 15 / 2 per unit and exp(m - S)
    overflows to inf."""
    shape, axis = (2, 17, 3), 1
    model = form_model("batched", shape, axis, 16)
    feeds = feeds_for(shape, axis)
    feeds["z"][:, 16] = -170.0
    actual = run(model, feeds)[0]
    assert np.all(np.isfinite(actual))
    assert rel_l2(actual, expected_of(feeds, axis)) <= TOL


@pytest.mark.parametrize("one_chunk_up_to", [0, 64])
def test_window_doubling_takes_decays_of_0_through_a_log(one_chunk_up_to):
    """Log decays made by a Log of decays that hold zeros: log 0 = -inf, and the band MatMuls multiply it by the
    band's zeros (NaN) unless it is clamped to -1e30 first, which has the same Exp."""
    shape, axis = (2, 3, 1, 13), 3
    graph = gs.Graph(opset=17)
    a, b = gs.Variable("a", np.float32, shape), gs.Variable("b", np.float32, shape)
    graph.inputs = [a, b]
    builder = GraphBuilder(graph, 17, "form")
    decays = Decays.from_log(builder, builder.log(a))
    out = SCAN_FORMS["window-doubling"](builder, decays=decays, drive=b, initial=None, axis=axis, length=13, chunk=4,
                                        rank=4, one_chunk_up_to=one_chunk_up_to)
    graph.outputs = [builder.node("Identity", [out], output=gs.Variable("states", np.float32, shape))]
    graph.cleanup().toposort()
    rng = np.random.default_rng(5)
    feeds = {"a": (rng.uniform(0.13, 0.6, shape) * (rng.uniform(size=shape) > 0.3)).astype(np.float32),
             "b": rng.standard_normal(shape).astype(np.float32)}
    assert (feeds["a"] == 0).sum() > 10
    actual = run(gs.export_onnx(graph), feeds)[0]
    assert rel_l2(actual, scan64(feeds["a"], feeds["b"], axis)) <= TOL


@pytest.mark.parametrize("length", [1, 2])
def test_window_doubling_folds_the_initial_state_into_one_or_two_steps(length):
    """One step: the drive is the first step's, no Concat of it with the (empty) rest; two steps: the first and
    the second, concatenated."""
    model = check("window-doubling", (2, 3, 1, length), 3, 4, initial=True)
    assert op_histogram(model).get("Concat", 0) == length - 1


@pytest.mark.parametrize("through", ["Div", "Neg", "Identity", "Cast"])
def test_parallel_strided_chunk_sums_pass_div_neg_identity_and_cast(through):
    """L 12 at chunk 4: the op is applied once per step block (4) and once to the chunk sum of dt (linear in the
    one input that varies along L); summed after it instead, the sum would be 3 Adds of 4 blocks and no fifth op."""
    model, feeds, expected = factored_model(12, 4, axis_last=False, initial=False, log_space=True, through=through)
    assert rel_l2(run(model, feeds)[0], expected) <= TOL
    assert op_histogram(model)[through] == 4 + 1 + (through == "Identity")   # (+ the output's Identity)


@pytest.mark.parametrize("length, chunk, taken", [(14, 8, 7), (13, 4, 1), (12, 5, 4), (5, 8, 5), (12, 1, 1), (1, 4, 1)])
def test_strided_chunk_is_the_largest_divisor_up_to_the_chunk(length, chunk, taken):
    from passes.scan_forms.parallel_strided import strided_chunk

    assert strided_chunk(length, chunk) == taken


_ONE_CHUNK = {"Add": 3, "Concat": 2, "Identity": 1, "Mul": 3, "Reshape": 1, "Shape": 1, "Slice": 9}


@pytest.mark.parametrize("log_space", [True, False])
@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("layout", [0, 1])
def test_parallel_strided_with_one_chunk_builds_no_carry(log_space, initial, layout):
    """L = Q = 4 (session s30): one chunk, so no carry across chunks (no chunk decay product, no doubling scan, no
    shift) and the initial state folded into the first drive is the whole first block (no Concat with an empty
    rest). Sweep: 4 drive and 3 decay Slices (block 0's decay is read only by a carry or the initial state), 3 Muls
    and Adds; the blocks joined by a Concat and a Reshape from Shape and 2 Slices of it (scan axis last: a
    Reshape, a Concat and a Transpose more). The initial state: step 0's decay Slice, Slices 0:1 of it and of the
    drive, a Mul and an Add. Log decays: an Exp per decay block read."""
    shape, axis = ((2, 4, 3, 1), 1) if layout == 0 else ((2, 3, 1, 4), 3)
    model = check("parallel-strided", shape, axis, 4, log_space=log_space, initial=initial)
    expected = dict(_ONE_CHUNK)
    if initial:
        expected.update(Add=4, Mul=4, Slice=12)
    if log_space:
        expected["Exp"] = 4 if initial else 3
    if axis == 3:
        expected.update(Concat=3, Reshape=2, Transpose=1)
    assert op_histogram(model) == expected


@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("length, chunk", [(12, 4), (13, 4), (6, 6)])
def test_parallel_strided_slices_a_lower_rank_constant_factor_at_its_own_axis(length, chunk, initial):
    """The drive b = u * B with B a weight (L, 1, N) (s30): a constant of lower rank that varies along L has no
    producer to push through, so its steps are Slices at its own scan axis, 0 (rank 3 of 4), not 1."""
    shape, axis = (2, length, 3, 2), 1
    graph = gs.Graph(opset=17)
    z = gs.Variable("z", np.float32, shape)
    u = gs.Variable("u", np.float32, (2, length, 3, 1))
    graph.inputs = [z, u]
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((length, 1, 2)).astype(np.float32)
    start = None
    if initial:
        start = gs.Variable("h0", np.float32, (2, 1, 3, 2))
        graph.inputs.append(start)
    builder = GraphBuilder(graph, 17, "form")
    drive = builder.node("Mul", [u, gs.Constant("B", weight)], output=gs.Variable("drive", np.float32, shape))
    shapes = {"z": shape, "u": (2, length, 3, 1), "drive": shape}
    out = SCAN_FORMS["parallel-strided"](builder, decays=Decays.from_log(builder, z), drive=drive, initial=start,
                                         axis=axis, length=length, chunk=chunk, rank=4, shapes=shapes)
    graph.outputs = [builder.node("Identity", [out], output=gs.Variable("states", np.float32, shape))]
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    feeds = feeds_for(shape, axis, initial=initial)
    feeds["u"] = rng.standard_normal((2, length, 3, 1)).astype(np.float32)
    del feeds["b"]
    expected = scan64(np.exp(feeds["z"].astype(np.float64)), feeds["u"].astype(np.float64) * weight, axis,
                      feeds.get("h0"))
    assert rel_l2(run(model, feeds)[0], expected) <= TOL
    assert "drive" not in {out for node in model.graph.node for out in node.output}   # pushed through the Mul


_ONE_CHUNK_CARRY = {
    "batched": {"Add": 1, "Concat": 3, "CumSum": 2, "Exp": 3, "Identity": 1, "Mul": 5, "Neg": 1, "ReduceSum": 1,
                "Reshape": 3, "Shape": 3, "Slice": 6, "Sub": 1, "Transpose": 2, "Unsqueeze": 1},
    "batched-doubling": {"Add": 5, "Concat": 3, "Exp": 1, "Identity": 1, "MatMul": 4, "Mul": 5, "Reshape": 3,
                         "Shape": 3, "Slice": 6, "Transpose": 2, "Unsqueeze": 1},
}


@pytest.mark.parametrize("form", ["batched", "batched-doubling"])
def test_one_chunk_with_an_initial_state_carries_the_state_alone(form):
    """L = Q = 4 with an initial state (s30): the carry into the one chunk is the initial state, moved to the last
    axis and back (2 Transposes; the scan axis last here, so batched-doubling moves nothing else): no shift MatMul,
    no Slice + Concat putting it into chunk 0, no last-state ReduceSum (batched's only one sums the log decays)."""
    model = check(form, (2, 3, 4), 2, 4, initial=True)
    assert op_histogram(model) == _ONE_CHUNK_CARRY[form]


def test_the_dense_carry_wants_the_chunk_axis_second_to_last():
    from passes.scan_forms.chunk_axes import dense_carry_into_chunks

    graph = gs.Graph(opset=17)
    builder = GraphBuilder(graph, 17, "form")
    x = gs.Variable("x", np.float32, (2, 3, 1, 4))
    with pytest.raises(AssertionError, match=r"^dense_carry_into_chunks wants \(\.\.\., chunks, 1\)$"):
        dense_carry_into_chunks(builder, x, x, 4, 1, 3)


@pytest.mark.parametrize("length, chunk, taken", [
    (12, 1, 1), (13, 1, 1), (1, 4, 1), (12, 4, 4), (14, 8, 7), (13, 4, 4), (37, 2, 1), (12, 12, 12), (5, 8, 5)])
def test_chunk_dividing_takes_the_largest_divisor_down_to_half_the_chunk(length, chunk, taken):
    """s30: chunk 1 stays 1 (steps one at a time), a divisor below chunk / 2 gives way to chunk itself (padding)."""
    from passes.scan_forms.chunk_axes import chunk_dividing

    assert chunk_dividing(length, chunk) == taken


def test_shift_last_by_matmul_shifts_only_the_last_axis():
    from passes.scan_forms.chunk_axes import shift_last_by_matmul

    builder = GraphBuilder(gs.Graph(opset=17), 17, "form")
    x = gs.Variable("x", np.float32, (2, 3, 4))
    with pytest.raises(AssertionError, match=r"^shift_last_by_matmul shifts the last axis$"):
        shift_last_by_matmul(builder, x, 3, 1, 1, 3, 0.0)


# Session s31 (mut32): the parallel form (the cpu pipeline's), chunk24 and decays.py, never mutated whole before.

@pytest.mark.parametrize("length, chunk", LENGTHS + [(7, 1), (6, 6)])
@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
@pytest.mark.parametrize("initial", [False, True])
def test_chunk24_equals_the_float64_scan(length, chunk, layout, initial):
    shape, axis = LAYOUTS[layout]
    check("chunk24", _layout(shape, axis, length), axis, chunk, initial=initial)


@pytest.mark.parametrize("length, chunk", LENGTHS + [(7, 1), (6, 6)])
@pytest.mark.parametrize("layout", [0, 1, 2])
@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("signs", [False, True])
def test_parallel_equals_the_float64_scan(length, chunk, layout, initial, signs):
    shape, axis = LAYOUTS[layout]
    check("parallel", _layout(shape, axis, length), axis, chunk, log_space=False, initial=initial, signs=signs)


# (length, chunk): 64 chunks of 4 (a doubling carry: NESTED_ABOVE), 65 (nested: 65 chunk-level steps in 17 chunks of
# 4, padded to 68), 67 (nested, padded to 68), 68 (nested, 17 chunks of 4 exactly), 200 at chunk 1 (one step a chunk:
# never nested), 130 at chunk 2 (65 chunks: nested with one step a chunk below).
NESTED = [(256, 4), (260, 4), (268, 4), (272, 4), (200, 1), (130, 2)]


@pytest.mark.parametrize("length, chunk", NESTED)
@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("layout", [0, 1])
def test_parallel_nests_the_carry_past_64_chunks_exactly(length, chunk, initial, layout):
    shape, axis = LAYOUTS[layout]
    check("parallel", _layout((1,) + shape[1:], axis, length), axis, chunk, log_space=False, initial=initial,
          signs=True)


# Shape plumbing of the (chunks, Q) view and back: 3 Shape, 3 Slice, 3 Concat, 3 Reshape per level (+ the output's
# Identity); the rest is the form's own.
_PLUMBING = {"Concat": 3, "Identity": 1, "Reshape": 3, "Shape": 3, "Slice": 6}
_PARALLEL_OPS = {
    # one chunk of 5: no carry at all; a Split per input, one Concat of the 5 blocks, sweep 2 alone (4 Mul + 4 Add)
    (5, 8, False): dict(_PLUMBING, Add=4, Concat=4, Mul=4, Split=2),
    # the initial state folded into step 0 of the one chunk: a Slice of each block 0 (no Concat: one chunk), 1 Mul, 1 Add
    (5, 8, True): dict(_PLUMBING, Add=5, Concat=4, Mul=5, Slice=8, Split=2, Unsqueeze=1),
    # one step a chunk (Q = 1): no Split, no Concat of blocks; 5 chunks carried by 3 doubling rounds (3 + 2 shifts:
    # Slice + Pad) and the carry in (one more), 3 + 2 Mul and 3 Add, then the one-step sweep (1 Mul, 1 Add)
    (5, 1, False): dict(_PLUMBING, Add=4, Mul=6, Pad=6, Slice=12),
    # with an initial state: its Slice of the drive and of the decay, 1 Mul, 1 Add and the Concat of step 0 back
    (5, 1, True): dict(_PLUMBING, Add=5, Concat=4, Mul=7, Pad=6, Slice=15, Unsqueeze=1),
}


@pytest.mark.parametrize("length, chunk, initial", sorted(_PARALLEL_OPS))
def test_parallel_exact_ops_with_one_chunk_and_with_one_step_a_chunk(length, chunk, initial):
    model = check("parallel", (2, length, 3, 1), 1, chunk, log_space=False, initial=initial, signs=True)
    assert op_histogram(model) == _PARALLEL_OPS[length, chunk, initial]


# (length, chunk) -> ops: the carry over 64 chunks a doubling scan (6 rounds), over 65 and 67 this form one level down
# (a second view: 3 more Shape, Reshape and Concat, 2 Splits, 1 Concat of blocks) over 17 chunks of 4 (5 rounds),
# padded to 68 (2 Pads in, 1 Slice out), over 68 the same without the padding; 200 chunks of one step never nest
# (no Split: 8 rounds); 65 chunks of 2 nest into 65 chunks of one step (7 rounds) with no Split below.
_NESTED_OPS = {
    (256, 4): dict(_PLUMBING, Add=13, Concat=4, Mul=21, Pad=12, Slice=18, Split=2),
    (260, 4): dict(_PLUMBING, Add=19, Concat=8, Mul=29, Pad=13, Reshape=6, Shape=6, Slice=24, Split=4),
    (268, 4): dict(_PLUMBING, Add=19, Concat=8, Mul=29, Pad=13, Reshape=6, Shape=6, Slice=24, Split=4),
    (272, 4): dict(_PLUMBING, Add=19, Concat=8, Mul=29, Pad=11, Reshape=6, Shape=6, Slice=23, Split=4),
    (200, 1): dict(_PLUMBING, Add=9, Mul=16, Pad=16, Slice=22),
    (130, 2): dict(_PLUMBING, Add=11, Concat=7, Mul=18, Pad=15, Reshape=6, Shape=6, Slice=27, Split=2),
}


@pytest.mark.parametrize("length, chunk", NESTED)
def test_parallel_exact_ops_past_64_chunks(length, chunk):
    from passes.scan_forms.parallel import NESTED_ABOVE

    assert NESTED_ABOVE == 64
    model = check("parallel", (1, length, 3, 1), 1, chunk, log_space=False, signs=True, seeds=(0,))
    assert op_histogram(model) == _NESTED_OPS[length, chunk]


@pytest.mark.parametrize("length, chunk, initial, expected", [
    # two chunks of 3: per chunk 2 CumSum, Neg, 2 Exp, 2 Mul, the inputs' 2 Slices; chunk 0's last state (Slice) and
    # the initial state Added in; one Concat
    (6, 3, True, {"Add": 2, "Concat": 1, "CumSum": 4, "Exp": 4, "Identity": 1, "Mul": 4, "Neg": 2, "Slice": 5}),
    # one chunk: no Slice, no Concat
    (6, 6, True, {"Add": 1, "CumSum": 2, "Exp": 2, "Identity": 1, "Mul": 2, "Neg": 1}),
    (6, 6, False, {"CumSum": 2, "Exp": 2, "Identity": 1, "Mul": 2, "Neg": 1}),
])
def test_chunk24_exact_ops(length, chunk, initial, expected):
    model = check("chunk24", (2, length, 3, 1), 1, chunk, initial=initial)
    assert op_histogram(model) == expected


# decays.py: Decays.of reads log a_i off an Exp, through ops that only move elements, or off a constant > 0.

def _moved(builder: GraphBuilder, op: str, x: gs.Tensor, shape: tuple, domain: str = "") -> gs.Variable:
    """`op` taking x (B, L, 3) or its (B, 3, L) transpose for Transpose, (B, L, 3, 1, 1) for Squeeze, to (B, L, 3, 1)."""
    out = gs.Variable(f"{op.lower()}_of_{x.name}", np.float32, shape)
    inputs = {"Unsqueeze": [x, gs.Constant("unsqueeze_axes", np.array([3], np.int64))],
              "Squeeze": [x, gs.Constant("squeeze_axes", np.array([4], np.int64))],
              "Reshape": [x, gs.Constant("reshape_to", np.array([2, -1, 3, 1], np.int64))]}.get(op, [x])
    attrs = {"perm": [0, 3, 1, 2]} if op == "Transpose" else {}
    builder.graph.nodes.append(gs.Node(op, f"{op}_node", attrs, inputs, [out], domain=domain or None))
    return out


# the op moving Exp(z) -> the shape of z, and how z's values become the decays' exponents
MOVES = {"Unsqueeze": ((2, 6, 3), lambda z: z[..., None]),
         "Squeeze": ((2, 6, 3, 1, 1), lambda z: z[..., 0]),
         "Reshape": ((2, 6, 3), lambda z: z.reshape(2, -1, 3, 1)),
         "Transpose": ((2, 3, 1, 6), lambda z: z.transpose(0, 3, 1, 2)),
         "Identity": ((2, 6, 3, 1), lambda z: z)}


@pytest.mark.parametrize("moves", [["Unsqueeze"], ["Squeeze"], ["Reshape"], ["Transpose"], ["Identity"],
                                   ["Unsqueeze", "Identity"], ["Identity", "Transpose"]])
@pytest.mark.parametrize("chunk", [6, 4])
def test_an_exp_moved_by_shape_ops_has_its_exponent_moved_the_same_way_as_log(moves, chunk):
    """Decays Move(Exp(z)): chunk24 reads log a = Move(z), no Log, the decays' own Exp and move dead; the states
    equal the float64 scan. Two moves are applied to z in their order (the inner one first)."""
    shape = (2, 6, 3, 1)
    z_shape = MOVES[moves[0]][0] if moves[0] != "Identity" or len(moves) == 1 else MOVES[moves[1]][0]
    graph = gs.Graph(opset=17)
    z, b = gs.Variable("z", np.float32, z_shape), gs.Variable("b", np.float32, shape)
    graph.inputs = [z, b]
    builder = GraphBuilder(graph, 17, "form")
    decay = gs.Variable("a", np.float32, z_shape)
    graph.nodes.append(gs.Node("Exp", "exp", {}, [z], [decay]))
    for op in moves:
        decay = _moved(builder, op, decay, shape if op != "Identity" or decay.shape == shape else decay.shape)
    decays = Decays.of(builder, decay)
    assert decays.has_log and decays.why_no_log == "" and decays.values is decay   # the values as they are
    out = SCAN_FORMS["chunk24"](builder, decays=decays, drive=b, initial=None, axis=1, length=6, chunk=chunk, rank=4)
    graph.outputs = [builder.node("Identity", [out], output=gs.Variable("states", np.float32, shape))]
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    hist = op_histogram(model)
    chunks = -(-6 // chunk)
    assert "Log" not in hist and hist["Exp"] == 2 * chunks   # chunk24's own: exp(-S) and exp(S) per chunk
    for op in moves:
        assert hist[op] == moves.count(op) + (op == "Identity")   # each move once, on z (+ the output's Identity)
    rng = np.random.default_rng(0)
    feeds = {"z": -rng.uniform(0.5, 2.0, z_shape).astype(np.float32), "b": rng.standard_normal(shape).astype(np.float32)}
    log_a = feeds["z"].astype(np.float64)
    for op in moves:
        log_a = MOVES[op][1](log_a)
    assert rel_l2(run(model, feeds)[0], scan64(np.exp(log_a), feeds["b"], 1)) <= TOL


def _decays_of(make) -> tuple[Decays, gs.Tensor]:
    graph = gs.Graph(opset=17)
    builder = GraphBuilder(graph, 17, "d")
    decay = make(graph, builder)
    return Decays.of(builder, decay), decay


def _node(graph, op, inputs, name, domain=""):
    out = gs.Variable(name, np.float32, (2, 6, 3, 1))
    graph.nodes.append(gs.Node(op, f"{op}_{name}", {}, inputs, [out], domain=domain or None))
    return out


_Z = gs.Variable("z", np.float32, (2, 6, 3, 1))


@pytest.mark.parametrize("make, why", [
    # an Exp of another domain is not ONNX's Exp
    (lambda g, b: _node(g, "Exp", [_Z], "a", "com.example"),
     "they are a Exp output ('a'), not an Exp output or a constant > 0"),
    # a move of another domain does not commute with log
    (lambda g, b: _node(g, "Identity", [_node(g, "Exp", [_Z], "e")], "a", "com.example"),
     "they are a Identity output ('a'), not an Exp output or a constant > 0"),
    # an op that is not a move between the Exp and the decays
    (lambda g, b: _node(g, "Neg", [_node(g, "Exp", [_Z], "e")], "a"),
     "they are a Neg output ('a'), not an Exp output or a constant > 0"),
    (lambda g, b: _node(g, "Identity", [_node(g, "Neg", [_node(g, "Exp", [_Z], "e")], "n")], "a"),
     "they are a Identity output ('a'), not an Exp output or a constant > 0"),
    # moves down to a graph input
    (lambda g, b: _node(g, "Identity", [_Z], "a"), "they are a Identity output ('a'), not an Exp output or a constant > 0"),
    (lambda g, b: _Z, "they are the graph input 'z', not an Exp output or a constant > 0"),
    (lambda g, b: gs.Constant("c", np.array([0.5, 0.0], np.float32)), "the constant 'c' holds a value <= 0 or not finite"),
    (lambda g, b: gs.Constant("c", np.array([0.5, -1.0], np.float32)), "the constant 'c' holds a value <= 0 or not finite"),
    (lambda g, b: gs.Constant("c", np.array([0.5, np.inf], np.float32)), "the constant 'c' holds a value <= 0 or not finite"),
    (lambda g, b: gs.Constant("c", np.array([np.nan, 0.5], np.float32)), "the constant 'c' holds a value <= 0 or not finite"),
    (lambda g, b: gs.Constant("c", np.zeros((0,), np.float32)), "the constant 'c' holds a value <= 0 or not finite"),
])
def test_decays_without_a_log_say_what_they_are(make, why):
    decays, decay = _decays_of(make)
    assert not decays.has_log and decays.why_no_log == why and decays.values is decay
    with pytest.raises(ValueError) as error:
        decays.log
    assert str(error.value) == f"no log of decays that may be <= 0: {why}"
    moved = decays.mapped(lambda tensor: tensor)
    assert not moved.has_log and moved.why_no_log == why


def test_decays_are_built_once_and_mapped_with_their_log():
    graph = gs.Graph(opset=17)
    builder = GraphBuilder(graph, 17, "d")
    constant = gs.Constant("c", np.array([0.5, 1e-30, 3.0], np.float32))
    decays = Decays.of(builder, constant)
    assert decays.has_log and decays.why_no_log == "" and decays.values is constant
    log = decays.log
    assert decays.log is log and [node.op for node in graph.nodes] == ["Log"] and graph.nodes[0].inputs == [constant]
    mapped = decays.mapped(builder.neg)
    assert mapped.has_log and mapped.why_no_log == ""
    assert mapped.values is mapped.values and mapped.log is mapped.log
    assert [(node.op, node.inputs[0]) for node in graph.nodes[1:]] == [("Neg", constant), ("Neg", log)]
    from_log = Decays.from_log(builder, _Z)
    assert from_log.log is _Z and from_log.values is from_log.values
    assert [(node.op, node.inputs) for node in graph.nodes[3:]] == [("Exp", [_Z])]
    no_log = Decays(lambda: _Z, None, "why")
    assert no_log.values is _Z and not no_log.mapped(builder.neg).has_log and len(graph.nodes) == 4

"""The channels-last-readout scan form (passes/scan_forms/channels_last_readout.py): strided-readout's
sweeps with every block laid out (chunks, batch, N, d_inner), on the Mamba-shaped factors of
tests/test_strided_readout.py."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from passes.graph_builder import GraphBuilder
from passes.scan_forms.decays import Decays
from passes.scan_forms.channels_last_readout import channels_last_order, channels_last_readout
from passes.scan_forms.strided_readout import strided_readout
from tests.test_strided_readout import D, N, _feeds, _mamba_factors, _numpy_states, _run


def test_order_puts_the_scan_axis_first_and_d_inner_last():
    # transformers' (batch, d_inner, L, N): sizes of the other axes (batch, d_inner, N)
    assert channels_last_order(4, 2, [1, 1536, 16]) == [2, 0, 3, 1]
    assert channels_last_order(4, 2, [1, 1536, 1]) == [2, 0, 3, 1]
    # already channels-last, (batch, L, N, d_inner): nothing to gain
    assert channels_last_order(4, 1, [1, 16, 1536]) is None
    assert channels_last_order(3, 0, [8, 8]) is None


def _readout_with_layout(b, coeff, length, calls):
    """y_t[d] = sum_n x_t[d, n] * C_t[n] on a block laid out (count, 1, N, D): C_t^T @ block."""
    def readout(block, start, stride, count, layout):
        calls.append((start, stride, count, layout))
        c_steps = b.node("Slice", [coeff, b.ints([start]), b.ints([length]), b.ints([1]), b.ints([stride])])
        c_rows = b.unsqueeze(b.transpose(c_steps, [1, 0, 2]), [1])            # (count, 1, 1, N)
        return b.reshape(b.matmul(c_rows, block), b.ints([count, 1, D])), 3  # (count, 1, D)
    return readout


@pytest.mark.parametrize("chunk", [4, 6, 12])
def test_readout_per_block_laid_out_equals_numpy(chunk):
    """The readout gets each of sweep 2's blocks as (chunks, 1, N, D) and says so (layout: memory axis j
    holds axis layout[j] of the step-first state (step, 1, D, N)); only the small outputs are joined."""
    length = 12
    graph, b, log_decay, drive, shapes, a_value = _mamba_factors(length)
    coeff = gs.Variable("C", np.float32, (1, length, N))
    graph.inputs.append(coeff)
    calls = []
    out = channels_last_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length,
                                chunk=chunk, rank=4, shapes=shapes, readout=_readout_with_layout(b, coeff, length, calls))
    feeds = _feeds(length, 1.0, seed=chunk)
    feeds["C"] = np.random.default_rng(chunk + 1).standard_normal((1, length, N)).astype(np.float32)
    got = _run(graph, [out], feeds)[0]
    want = np.einsum("bdln,bln->lbd", _numpy_states(feeds, a_value), feeds["C"].astype(np.float64))
    assert calls == [(q, chunk, length // chunk, (0, 1, 3, 2)) for q in range(chunk)]
    assert got.shape == want.shape == (length, 1, D)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_factors_are_moved_whole_and_no_block_is_transposed():
    """L 12, Q 4: dt, u and B (and A) are each moved once to the blocks' order, by a Transpose of their
    axes that are not size 1 ((D, L) -> (L, D); B's (L, N) keep their order: Reshapes only), and their
    steps taken by one strided Slice each (Q per factor); every block-sized op (A * dt_q, Exp, (dt_q * u_q) * B_q,
    the sweeps, the carry) works on (chunks, 1, N, D), and the other Transposes are the test readout's."""
    length, chunk = 12, 4
    graph, b, log_decay, drive, shapes, a_value = _mamba_factors(length)
    coeff = gs.Variable("C", np.float32, (1, length, N))
    graph.inputs.append(coeff)
    out = channels_last_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length,
                                chunk=chunk, rank=4, shapes=shapes, readout=_readout_with_layout(b, coeff, length, []))
    ops = Counter(node.op for node in graph.nodes)
    # Transposes: dt, u, A moved (3) + the test readout's 4; Slices: 3 factors x Q (+ the carry's 4 shifts,
    # the test readout's 4, 2 of the outputs' interleaving target shape), no Split, no Gather. Muls:
    # the factor graph's own 3; A * dt_q: 4 (+ 4 Exp); the chunk decay exp(A * sum(dt)): 1 (+ 3 Add, 1 Exp);
    # the drives (dt_q * u_q) * B_q: 8; sweep 1: 3 (+ 3 Add); the carry over 3 chunks: 3 (+ 2 Add, 4 Pad);
    # sweep 2: 4 (+ 4 Add); the readout: 4 MatMul.
    assert ops["Transpose"] == 3 + 4 and ops["Slice"] == 3 * chunk + 4 + 4 + 2 and ops["Split"] == ops["Gather"] == 0
    assert ops["Mul"] == 3 + 4 + 1 + 8 + 3 + 3 + 4 and ops["Add"] == 3 + 3 + 2 + 4 and ops["Exp"] == 5
    assert ops["MatMul"] == chunk and ops["Pad"] == 4
    moved = [node for node in graph.nodes if node.op == "Transpose" and node.attrs["perm"] == [1, 0]]
    assert len(moved) == 3   # dt, u (D, L) and A (D, N): 2-D, never a block
    feeds = _feeds(length, 1.0, seed=9)
    feeds["C"] = np.random.default_rng(10).standard_normal((1, length, N)).astype(np.float32)
    got = _run(graph, [out], feeds)[0]
    want = np.einsum("bdln,bln->lbd", _numpy_states(feeds, a_value), feeds["C"].astype(np.float64))
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_stress_decays_stay_finite_and_exact():
    """|A| * sum(dt) past 500 over L 96 (float32's exp overflows past ~87): only decays <= 1 multiply."""
    length = 96
    graph, b, log_decay, drive, shapes, a_value = _mamba_factors(length)
    coeff = gs.Variable("C", np.float32, (1, length, N))
    graph.inputs.append(coeff)
    out = channels_last_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length,
                                chunk=32, rank=4, shapes=shapes, readout=_readout_with_layout(b, coeff, length, []))
    feeds = _feeds(length, 30.0, seed=3)
    feeds["C"] = np.random.default_rng(4).standard_normal((1, length, N)).astype(np.float32)
    assert float(np.max(-a_value.min() * feeds["dt"].sum(axis=2))) > 500
    got = _run(graph, [out], feeds)[0]
    want = np.einsum("bdln,bln->lbd", _numpy_states(feeds, a_value), feeds["C"].astype(np.float64))
    assert np.all(np.isfinite(got))
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_without_a_readout_it_is_strided_readout():
    """The states themselves as the output: no readout to fold, so strided-readout's graph, op for op."""
    length = 12
    histograms = []
    for form in (strided_readout, channels_last_readout):
        graph, b, log_decay, drive, shapes, a_value = _mamba_factors(length)
        states = form(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length, chunk=4, rank=4,
                      shapes=shapes)
        histograms.append(Counter(node.op for node in graph.nodes))
        feeds = _feeds(length, 1.0, seed=2)
        want = _numpy_states(feeds, a_value)
        assert np.max(np.abs(_run(graph, [states], feeds)[0] - want)) <= 1e-5 * np.max(np.abs(want))
    assert histograms[0] == histograms[1]


@pytest.mark.parametrize("shape, perm, ops", [
    ((1, 5, 7, 1), [2, 0, 3, 1], ["Reshape", "Transpose", "Reshape"]),   # (5, 7) -> (7, 5) in 2-D
    ((1, 1, 7, 4), [2, 0, 3, 1], ["Reshape", "Reshape"]),                # (7, 4) keep their order: no copy
    ((2, 5, 7, 3), [2, 0, 3, 1], ["Transpose"]),                          # no unit axis: as it is
    (None, [2, 0, 3, 1], ["Transpose"]),                                  # shape unknown: as it is
])
def test_transpose_without_unit_axes(shape, perm, ops):
    """ORT's Transpose is ~10x slower with unit axes about: they are dropped around it when the shape is known."""
    from passes.graph_builder import GraphBuilder
    from passes.scan_forms.chunk_axes import transpose_without_unit_axes

    real = shape or (1, 5, 7, 1)
    x = gs.Variable("x", np.float32, real)
    graph = gs.Graph(inputs=[x], opset=17)
    b = GraphBuilder(graph, 17, prefix="t")
    out = transpose_without_unit_axes(b, x, perm, shape)
    assert [node.op for node in graph.nodes] == ops
    value = np.random.default_rng(0).standard_normal(real).astype(np.float32)
    assert np.array_equal(_run(graph, [out], {"x": value})[0], value.transpose(perm))



@pytest.mark.parametrize("shape, perm, ops", [
    ((1, 1, 1), [2, 0, 1], ["Reshape"]),                                 # every axis 1: one Reshape, no copy
    ((1, "N", 7), [2, 0, 1], ["Transpose"]),                             # a symbolic size: as it is
    ((1, 0, 7), [2, 0, 1], ["Transpose"]),                               # an empty axis: as it is
])
def test_transpose_without_unit_axes_at_its_edges(shape, perm, ops):
    """Session s30 (mut30): shapes the ORT-speed rewrite takes whole or leaves alone."""
    from passes.scan_forms.chunk_axes import transpose_without_unit_axes

    real = tuple(5 if size == "N" else size for size in shape)
    x = gs.Variable("x", np.float32, real)
    graph = gs.Graph(inputs=[x], opset=17)
    out = transpose_without_unit_axes(GraphBuilder(graph, 17, prefix="t"), x, perm, shape)
    assert [node.op for node in graph.nodes] == ops
    value = np.random.default_rng(0).standard_normal(real).astype(np.float32)
    assert np.array_equal(_run(graph, [out], {"x": value})[0], value.transpose(perm))


@pytest.mark.parametrize("shape, ops", [
    ((1, 5, 7, 1), ["Reshape", "Transpose", "Reshape"]), ((2, 5, 7, 3), ["Transpose"]), (None, ["Transpose"]),
    ((1, 1, 1, 1), ["Reshape"]),
])
def test_transpose_without_unit_axes_writes_the_output_it_is_given(shape, ops):
    """reroll-scans hands it the stacked output: the last node writes that very tensor, whichever path is taken
    (s30: with every axis of size 1 it made a Reshape of its own and left the output unwritten)."""
    from passes.scan_forms.chunk_axes import transpose_without_unit_axes

    real, perm = shape or (1, 5, 7, 1), [2, 0, 3, 1]
    x = gs.Variable("x", np.float32, real)
    output = gs.Variable("stacked", np.float32, tuple(real[axis] for axis in perm))
    graph = gs.Graph(inputs=[x], opset=17)
    out = transpose_without_unit_axes(GraphBuilder(graph, 17, prefix="t"), x, perm, shape, output=output)
    assert out is output and [node.op for node in graph.nodes] == ops and graph.nodes[-1].outputs == [output]
    value = np.random.default_rng(0).standard_normal(real).astype(np.float32)
    assert np.array_equal(_run(graph, [output], {"x": value})[0], value.transpose(perm))


def test_order_ties_keep_the_first_of_the_largest_axes_last():
    """Two other axes of d_inner's size: the first of them goes last, the rest keep their order."""
    assert channels_last_order(5, 0, [1, 64, 64, 16]) == [0, 1, 3, 4, 2]


def _states_from_log_decay(log_a, drive):
    """Numpy reference over (1, D, L, N) float64 arrays."""
    state, states = np.zeros(log_a.shape[1:2] + log_a.shape[3:]), []
    for t in range(log_a.shape[2]):
        state = np.exp(log_a[0, :, t]) * state + drive[0, :, t]
        states.append(state)
    return np.stack(states, 1)[None]


@pytest.mark.parametrize("spelling", ["A / w", "(dt * A) * w"])
def test_chunk_decay_sums_only_through_a_single_varying_factor(spelling):
    """The chunk decay's sum of log a over a chunk's steps goes inside a Mul (or a Div's numerator) only
    when one input varies along L: sum_q A / w_q is not A / sum_q w_q, nor sum_q dt_q A w_q
    (sum_q dt_q A) * w."""
    length, chunk = 12, 4
    graph, b, _, drive, shapes, a_value = _mamba_factors(length)
    w = gs.Variable("w", np.float32, (1, D, length))
    graph.inputs.append(w)
    w4 = b.unsqueeze(w, [3])
    dt4 = next(node.outputs[0] for node in graph.nodes if node.op == "Unsqueeze" and node.inputs[0].name == "dt")
    a_const = b.const(a_value[None, :, None, :])
    if spelling == "A / w":
        log_decay = b.div(a_const, w4)
    else:
        dt_a = b.mul(dt4, a_const)
        log_decay = b.mul(dt_a, w4)
        shapes[dt_a.name] = (1, D, length, N)
    shapes.update({w4.name: (1, D, length, 1), log_decay.name: (1, D, length, N), "w": (1, D, length)})
    coeff = gs.Variable("C", np.float32, (1, length, N))
    graph.inputs.append(coeff)
    out = channels_last_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length,
                                chunk=chunk, rank=4, shapes=shapes, readout=_readout_with_layout(b, coeff, length, []))
    rng = np.random.default_rng(5)
    feeds = _feeds(length, 1.0, seed=5)
    feeds["w"] = rng.uniform(0.5, 4.0, (1, D, length)).astype(np.float32)
    feeds["C"] = rng.standard_normal((1, length, N)).astype(np.float32)
    dt, u, b_in, w_value = (feeds[k].astype(np.float64) for k in ("dt", "u", "B", "w"))
    a4 = a_value.astype(np.float64)[None, :, None, :]
    log_a = a4 / w_value[..., None] if spelling == "A / w" else dt[..., None] * a4 * w_value[..., None]
    drive_value = dt[..., None] * b_in[:, None] * u[..., None]
    want = np.einsum("bdln,bln->lbd", _states_from_log_decay(log_a, drive_value), feeds["C"].astype(np.float64))
    got = _run(graph, [out], feeds)[0]
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_layout_names_the_logical_axis_in_each_memory_axis():
    """Factors (D, 1, L, N) (d_inner first): the blocks are still (chunks, 1, N, D) in memory, and the
    step-first state is (L, D, 1, N), so memory axes hold its axes 0, 2, 3, 1: a layout that is not its
    own inverse (transformers' (1, D, L, N) gives (0, 1, 3, 2), which is)."""
    length, chunk = 12, 4
    dt = gs.Variable("dt", np.float32, (D, 1, length))
    u = gs.Variable("u", np.float32, (D, 1, length))
    b_in = gs.Variable("B", np.float32, (1, length, N))
    coeff = gs.Variable("C", np.float32, (1, length, N))
    graph = gs.Graph(inputs=[dt, u, b_in, coeff], opset=17)
    b = GraphBuilder(graph, 17, prefix="factors")
    a_value = -np.tile(np.arange(1, N + 1, dtype=np.float32), (D, 1))
    dt4, u4, b4 = b.unsqueeze(dt, [3]), b.unsqueeze(u, [3]), b.unsqueeze(b_in, [1])   # (D,1,L,1), (1,1,L,N)
    log_decay = b.mul(dt4, b.const(a_value[:, None, None, :]))
    dt_b = b.mul(dt4, b4)
    drive = b.mul(dt_b, u4)
    shapes = {dt4.name: (D, 1, length, 1), u4.name: (D, 1, length, 1), b4.name: (1, 1, length, N),
              log_decay.name: (D, 1, length, N), dt_b.name: (D, 1, length, N), drive.name: (D, 1, length, N),
              "dt": (D, 1, length), "u": (D, 1, length), "B": (1, length, N)}
    calls = []
    out = channels_last_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length,
                                chunk=chunk, rank=4, shapes=shapes,
                                readout=_readout_with_layout(b, coeff, length, calls))
    assert calls == [(q, chunk, length // chunk, (0, 2, 3, 1)) for q in range(chunk)]
    feeds = _feeds(length, 1.0, seed=7)
    feeds = {"dt": feeds["dt"].reshape(D, 1, length), "u": feeds["u"].reshape(D, 1, length), "B": feeds["B"],
             "C": np.random.default_rng(8).standard_normal((1, length, N)).astype(np.float32)}
    transformers_order = {k: (v.reshape(1, D, length) if k in ("dt", "u") else v) for k, v in feeds.items()}
    want = np.einsum("bdln,bln->lbd", _numpy_states(transformers_order, a_value), feeds["C"].astype(np.float64))
    got = _run(graph, [out], feeds)[0]
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_a_lower_rank_factor_of_a_named_size_is_moved_at_full_rank(n="n"):
    """Session s31 (mut33): factors whose shapes hold names (a symbolic batch, N named "n") are moved by one Transpose
    at full rank, B of rank 2 ((L, n)) unsqueezed to rank 4 first (2 Unsqueezes: dt's, u's are the model's own); the
    blocks are still (chunks, 1, N, D) (d_inner is the only axis of a known size above 1). Exact ops; vs float64."""
    from tests.test_strided_readout import _batch_symbolic_factors
    from passes.relative_error import relative_l2

    length, chunk = 12, 4
    graph, b, log_decay, drive, shapes, a_value = _batch_symbolic_factors(length, n=n)
    coeff = gs.Variable("C", np.float32, (1, length, N))
    graph.inputs.append(coeff)
    calls = []
    out = channels_last_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length,
                                chunk=chunk, rank=4, shapes=shapes, readout=_readout_with_layout(b, coeff, length, calls))
    assert calls == [(q, chunk, length // chunk, (0, 1, 3, 2)) for q in range(chunk)]
    feeds = _feeds(length, 1.0, seed=13)
    feeds["B"] = feeds["B"][0]
    feeds["C"] = np.random.default_rng(14).standard_normal((1, length, N)).astype(np.float32)
    got = _run(graph, [out], feeds)[0]
    want = np.einsum("bdln,bln->lbd", _numpy_states(dict(feeds, B=feeds["B"][None]), a_value),
                     feeds["C"].astype(np.float64))
    # As test_factors_are_moved_whole_and_no_block_is_transposed (after cleanup: the factors' own Muls gone), but dt,
    # u and B each one Transpose (2, 0, 3, 1) at full rank (B after its Unsqueeze), A (known) by Reshapes and a 2-D
    # Transpose; Slices: 3 factors x Q.
    ops = Counter(node.op for node in graph.nodes)
    assert dict(ops) == {"Unsqueeze": 2 + 1 + 4, "Transpose": 3 + 1 + 4, "Slice": 3 * chunk + 4 + 4 + 2, "Shape": 1,
                         "Concat": 2, "Reshape": 2 + 4 + 1, "Mul": 4 + 1 + 8 + 3 + 3 + 4, "Add": 3 + 3 + 2 + 4,
                         "Exp": 5, "Pad": 4, "MatMul": chunk}
    full_rank = [node for node in graph.nodes if node.op == "Transpose" and node.attrs["perm"] == [2, 0, 3, 1]]
    assert sorted(node.inputs[0].inputs[0].op if node.inputs[0].inputs else node.inputs[0].name
                  for node in full_rank) == ["Unsqueeze", "Unsqueeze", "Unsqueeze"]
    assert got.shape == want.shape == (length, 1, D)
    assert relative_l2(got, want) <= 1e-6


def test_a_lower_rank_factor_of_static_shape_is_moved_by_reshapes():
    """Session s31 (mut33): B (L, N) of rank 2 and a static shape keeps its order: Reshapes only, no Transpose (its
    kept axes L, N padded with 1s: with 2s, a Reshape of 2 * 2 * L * N elements). Exact ops; vs float64."""
    from tests.test_strided_readout import _batch_symbolic_factors
    from passes.relative_error import relative_l2

    length, chunk = 12, 4
    graph, b, log_decay, drive, shapes, a_value = _batch_symbolic_factors(length)
    coeff = gs.Variable("C", np.float32, (1, length, N))
    graph.inputs.append(coeff)
    out = channels_last_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length,
                                chunk=chunk, rank=4, shapes=shapes, readout=_readout_with_layout(b, coeff, length, []))
    feeds = _feeds(length, 1.0, seed=16)
    feeds["B"] = feeds["B"][0]
    feeds["C"] = np.random.default_rng(17).standard_normal((1, length, N)).astype(np.float32)
    got = _run(graph, [out], feeds)[0]
    want = np.einsum("bdln,bln->lbd", _numpy_states(dict(feeds, B=feeds["B"][None]), a_value),
                     feeds["C"].astype(np.float64))
    ops = Counter(node.op for node in graph.nodes)
    # Unsqueezes: dt's and u's (the model's), B's (to rank 4, then Reshaped to (L, N)), the readout's 4; Transposes:
    # dt and u ((D, L) -> (L, D)), A, the readout's 4: B none.
    assert dict(ops) == {"Unsqueeze": 2 + 1 + 4, "Transpose": 2 + 1 + 4, "Slice": 3 * chunk + 4 + 4 + 2, "Shape": 1,
                         "Concat": 2, "Reshape": 12, "Mul": 4 + 1 + 8 + 3 + 3 + 4, "Add": 3 + 3 + 2 + 4,
                         "Exp": 5, "Pad": 4, "MatMul": chunk}
    assert relative_l2(got, want) <= 1e-6


def test_a_drive_of_unknown_shape_is_sliced_where_it_is_then_moved():
    """Session s31 (mut33): the drive's shape unknown (not in `shapes`): each step q is one strided Slice of the drive
    along its scan axis, moved to the blocks' order by a Transpose (2, 0, 3, 1) (Q of them), and the readout still
    gets blocks laid out (0, 1, 3, 2). Exact ops; vs float64."""
    from passes.relative_error import relative_l2

    length, chunk = 12, 4
    graph, b, log_decay, drive, shapes, a_value = _mamba_factors(length)
    del shapes[drive.name]
    coeff = gs.Variable("C", np.float32, (1, length, N))
    graph.inputs.append(coeff)
    calls = []
    out = channels_last_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length,
                                chunk=chunk, rank=4, shapes=shapes, readout=_readout_with_layout(b, coeff, length, calls))
    assert calls == [(q, chunk, length // chunk, (0, 1, 3, 2)) for q in range(chunk)]
    feeds = _feeds(length, 1.0, seed=18)
    feeds["C"] = np.random.default_rng(19).standard_normal((1, length, N)).astype(np.float32)
    got = _run(graph, [out], feeds)[0]
    want = np.einsum("bdln,bln->lbd", _numpy_states(feeds, a_value), feeds["C"].astype(np.float64))
    ops = Counter(node.op for node in graph.nodes)
    # dt (for the decays) and A moved as in test_factors_are_moved_whole_and_no_block_is_transposed; the drive as the
    # model computes it (3 Unsqueezes, 2 Muls), then Q Slices and Q Transposes; no Mul per step for the drive.
    assert dict(ops) == {"Unsqueeze": 3 + 4, "Transpose": 2 + chunk + 4, "Slice": chunk + chunk + 4 + 4 + 2,
                         "Shape": 1, "Concat": 2, "Reshape": 12, "Mul": 4 + 1 + 3 + 3 + 4 + 2, "Add": 3 + 3 + 2 + 4,
                         "Exp": 5, "Pad": 4, "MatMul": chunk}
    sliced = [node for node in graph.nodes if node.op == "Slice" and node.inputs[0] is drive]
    assert [list(node.inputs[3].values) + list(node.inputs[4].values) for node in sliced] == [[2, chunk]] * chunk
    assert relative_l2(got, want) <= 1e-6


def test_a_readout_on_blocks_already_channels_last_is_strided_readouts():
    """Session s31 (mut33): factors laid out (1, L, N, D), d_inner already last: nothing to gain, so the readout is
    given strided-readout's blocks, step axis first, with layout None (one call per step q), and the graph is
    strided-readout's op for op. vs float64."""
    from passes.relative_error import relative_l2

    length, chunk = 12, 4
    a_value = -np.tile(np.arange(1, N + 1, dtype=np.float32), (D, 1))   # (D, N)
    rng = np.random.default_rng(21)
    feeds = {"dt": rng.uniform(0.001, 0.1, (1, length, D)).astype(np.float32),
             "u": rng.standard_normal((1, length, D)).astype(np.float32),
             "B": rng.standard_normal((1, length, N)).astype(np.float32),
             "C": rng.standard_normal((1, length, N)).astype(np.float32)}
    results, histograms = [], []
    for form in (channels_last_readout, strided_readout):
        inputs = {k: gs.Variable(k, np.float32, v.shape) for k, v in feeds.items()}
        graph = gs.Graph(inputs=list(inputs.values()), opset=17)
        b = GraphBuilder(graph, 17, prefix="factors")
        dt4, u4, b4 = b.unsqueeze(inputs["dt"], [2]), b.unsqueeze(inputs["u"], [2]), b.unsqueeze(inputs["B"], [3])
        log_decay = b.mul(dt4, b.const(a_value.T[None, None]))
        dt_b = b.mul(dt4, b4)
        drive = b.mul(dt_b, u4)
        shapes = {dt4.name: (1, length, 1, D), u4.name: (1, length, 1, D), b4.name: (1, length, N, 1),
                  log_decay.name: (1, length, N, D), dt_b.name: (1, length, N, D), drive.name: (1, length, N, D),
                  "dt": (1, length, D), "u": (1, length, D), "B": (1, length, N)}
        calls = []

        def readout(block, start, stride, count, layout=None, calls=calls, b=b, coeff=inputs["C"]):
            calls.append((start, stride, count, layout))   # block: (count, 1, N, D); strided-readout passes no layout
            c_steps = b.node("Slice", [coeff, b.ints([start]), b.ints([length]), b.ints([1]), b.ints([stride])])
            c_rows = b.unsqueeze(b.transpose(c_steps, [1, 0, 2]), [3])                    # (count, 1, N, 1)
            return b.reduce_sum(b.mul(block, c_rows), [2], keepdims=0), 3                # (count, 1, D)

        out = form(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=1, length=length,
                   chunk=chunk, rank=4, shapes=shapes, readout=readout)
        results.append(_run(graph, [out], feeds)[0])
        histograms.append(Counter(node.op for node in graph.nodes))
        assert calls == [(q, chunk, length // chunk, None) for q in range(chunk)]
    dt, u, b_in = (feeds[k].astype(np.float64) for k in ("dt", "u", "B"))
    a = np.exp(dt[:, :, None, :] * a_value.T[None, None])                            # (1, L, N, D)
    drive = dt[:, :, None, :] * b_in[..., None] * u[:, :, None, :]
    state, states = np.zeros((1, N, D)), []
    for t in range(length):
        state = a[:, t] * state + drive[:, t]
        states.append(state)
    want = np.einsum("blnd,bln->lbd", np.stack(states, 1), feeds["C"].astype(np.float64))
    assert results[0].shape == want.shape == (length, 1, D)
    assert relative_l2(results[0], want) <= 1e-6
    assert np.array_equal(results[0], results[1]) and histograms[0] == histograms[1]

"""The strided-readout scan form (passes/scan_forms/strided_readout.py) on a Mamba-shaped recurrence
built from small factors: a = exp(A * dt), b = dt * B * u, each (batch, d_inner, L, N)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from passes.graph_builder import GraphBuilder
from passes.scan_forms.decays import Decays
from passes.relative_error import relative_l2
from passes.scan_forms.strided_readout import strided_readout

D, N = 5, 4


def _mamba_factors(length: int):
    """A graph computing log a = Unsqueeze(dt) * A and b = (Unsqueeze(dt) * Unsqueeze(B)) * Unsqueeze(u),
    the order transformers' export multiplies them in; the shapes the pass would infer."""
    dt = gs.Variable("dt", np.float32, (1, D, length))
    u = gs.Variable("u", np.float32, (1, D, length))
    b_in = gs.Variable("B", np.float32, (1, length, N))
    graph = gs.Graph(inputs=[dt, u, b_in], opset=17)
    b = GraphBuilder(graph, 17, prefix="factors")
    a_value = -np.tile(np.arange(1, N + 1, dtype=np.float32), (D, 1))   # Mamba's init A = -(1..N)
    dt4 = b.unsqueeze(dt, [3])                                         # (1, D, L, 1)
    log_decay = b.mul(dt4, b.const(a_value[None, :, None, :]))        # (1, D, L, N)
    b4, u4 = b.unsqueeze(b_in, [1]), b.unsqueeze(u, [3])
    dt_b = b.mul(dt4, b4)
    drive = b.mul(dt_b, u4)
    shapes = {dt4.name: (1, D, length, 1), log_decay.name: (1, D, length, N), drive.name: (1, D, length, N),
              dt_b.name: (1, D, length, N), u4.name: (1, D, length, 1), b4.name: (1, 1, length, N),
              "dt": (1, D, length), "u": (1, D, length), "B": (1, length, N)}
    return graph, b, log_decay, drive, shapes, a_value


def _feeds(length: int, dt_scale: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {"dt": (rng.uniform(0.001, 0.1, (1, D, length)) * dt_scale).astype(np.float32),
            "u": rng.standard_normal((1, D, length)).astype(np.float32),
            "B": rng.standard_normal((1, length, N)).astype(np.float32)}


def _numpy_states(feeds, a_value):
    dt, u, b_in = (feeds[k].astype(np.float64) for k in ("dt", "u", "B"))
    a = np.exp(dt[0, :, :, None] * a_value[:, None, :])               # (D, L, N)
    drive = dt[0, :, :, None] * b_in[0][None] * u[0, :, :, None]
    state, states = np.zeros((D, N)), []
    for t in range(dt.shape[2]):
        state = a[:, t] * state + drive[:, t]
        states.append(state)
    return np.stack(states, 1)[None]                                   # (1, D, L, N)


def _run(graph, outputs, feeds):
    for output in outputs:
        output.dtype = np.float32
    graph.outputs = outputs
    graph.cleanup().toposort()
    session = ort.InferenceSession(gs.export_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_states_from_the_small_factors_exact_ops():
    """L 12, Q 4, 3 chunks, no readout: the states themselves, interleaved as in parallel-strided."""
    length = 12
    graph, b, log_decay, drive, shapes, a_value = _mamba_factors(length)
    states = strided_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length, chunk=4,
                             rank=4, shapes=shapes)
    feeds = _feeds(length, 1.0)
    got = _run(graph, [states], feeds)[0]
    want = _numpy_states(feeds, a_value)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
    ops = Counter(node.op for node in graph.nodes)
    # dt, u and B (Unsqueezed) are each reshaped to (.., chunks, Q, ..) and split along Q once (Shape, 2
    # Slices, 2 Concats for the two targets, Reshape, Split, and Q Reshapes back): no strided Slice, no
    # Gather. Per step q: log a = A * dt_q (1 Mul), Exp; b = (dt_q * u_q) * B_q, the small pair first
    # (2 Muls). Sweep 1: 3 Mul + 3 Add; the chunk decay exp(A * sum(dt)): 3 Add, 1 Mul, 1 Exp; the carry
    # over 3 chunks: 2 doubling rounds (3 Mul, 2 Add; shifts by Slice + Pad, 3 + 1 for the carry in);
    # sweep 2: 4 Mul + 4 Add; the states interleaved by one Concat + Reshape (its target: Shape, 2
    # Slices, Concat).
    assert dict(ops) == {"Unsqueeze": 3, "Shape": 4, "Slice": 3 * 2 + 4 + 2, "Concat": 3 * 2 + 1 + 1,
                         "Reshape": 3 * (1 + 4) + 1, "Split": 3, "Mul": 4 * 3 + 3 + 1 + 3 + 4,
                         "Add": 3 + 3 + 2 + 4, "Exp": 5, "Pad": 4}


@pytest.mark.parametrize("chunk", [4, 6, 12])
def test_readout_folded_per_block_equals_numpy(chunk):
    """With a readout (here y_t = sum_n x_t[n] * C_t[n], step axis first) the form reads out each of
    sweep 2's blocks and interleaves only the small outputs: no Concat of the states."""
    length = 12
    graph, b, log_decay, drive, shapes, a_value = _mamba_factors(length)
    coeff = gs.Variable("C", np.float32, (1, length, N))
    graph.inputs.append(coeff)
    calls = []

    def readout(block, start, stride, count):   # block: (count, 1, D, N), steps start, start + stride, ...
        calls.append((start, stride, count))
        c_steps = b.node("Slice", [coeff, b.ints([start]), b.ints([length]), b.ints([1]), b.ints([stride])])
        c_first = b.unsqueeze(b.transpose(c_steps, [1, 0, 2]), [2])            # (count, 1, 1, N)
        return b.reduce_sum(b.mul(block, c_first), [3], keepdims=0), 3       # (count, 1, D)

    out = strided_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length, chunk=chunk,
                          rank=4, shapes=shapes, readout=readout)
    feeds = _feeds(length, 1.0, seed=chunk)
    feeds["C"] = np.random.default_rng(chunk + 1).standard_normal((1, length, N)).astype(np.float32)
    got = _run(graph, [out], feeds)[0]
    want = np.einsum("bdln,bln->lbd", _numpy_states(feeds, a_value), feeds["C"].astype(np.float64))
    assert calls == [(q, chunk, length // chunk) for q in range(chunk)]
    assert got.shape == want.shape == (length, 1, D)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
    concats = [node for node in graph.nodes if node.op == "Concat"]
    assert [len(node.inputs) for node in concats if len(node.inputs) == chunk] == [chunk]   # the outputs, once


def test_stress_decays_stay_finite_and_exact():
    """d_state 4 with A = -(1..4) and dt up to ~3 per step: |A| * sum(dt) reaches ~200 per chunk of 32
    and ~600 over L 96, far past float32's exp range (~87); only decays <= 1 are multiplied."""
    length = 96
    graph, b, log_decay, drive, shapes, a_value = _mamba_factors(length)
    states = strided_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length, chunk=32,
                             rank=4, shapes=shapes)
    feeds = _feeds(length, 30.0, seed=3)
    assert float(np.max(-a_value.min() * feeds["dt"].sum(axis=2))) > 500
    got = _run(graph, [states], feeds)[0]
    want = _numpy_states(feeds, a_value)
    assert np.all(np.isfinite(got))
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_a_decay_computed_in_the_graph_and_broadcast_along_the_scan():
    """A from the graph (A = -exp(A_log), reshaped to (1, D, 1, N): size 1 along the scan axis), as
    in an export before fold-constants: every step multiplies the same A, not a step of it."""
    length = 12
    dt = gs.Variable("dt", np.float32, (1, D, length))
    u = gs.Variable("u", np.float32, (1, D, length))
    b_in = gs.Variable("B", np.float32, (1, length, N))
    a_log = gs.Variable("A_log", np.float32, (D, N))
    graph = gs.Graph(inputs=[dt, u, b_in, a_log], opset=17)
    b = GraphBuilder(graph, 17, prefix="factors")
    a4 = b.reshape(b.node("Neg", [b.exp(a_log)]), b.ints([1, D, 1, N]))
    dt4, b4, u4 = b.unsqueeze(dt, [3]), b.unsqueeze(b_in, [1]), b.unsqueeze(u, [3])
    log_decay, dt_b = b.mul(dt4, a4), b.mul(dt4, b4)
    drive = b.mul(dt_b, u4)
    shapes = {dt4.name: (1, D, length, 1), log_decay.name: (1, D, length, N), drive.name: (1, D, length, N),
              dt_b.name: (1, D, length, N), u4.name: (1, D, length, 1), b4.name: (1, 1, length, N),
              a4.name: (1, D, 1, N), "dt": (1, D, length), "u": (1, D, length), "B": (1, length, N)}
    states = strided_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length, chunk=4,
                             rank=4, shapes=shapes)
    feeds = _feeds(length, 1.0, seed=5)
    a_value = -np.tile(np.arange(1, N + 1, dtype=np.float32), (D, 1)) * np.float32(0.5)
    feeds["A_log"] = np.log(-a_value).astype(np.float32)
    got = _run(graph, [states], feeds)[0]
    want = _numpy_states(feeds, a_value)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_factors_of_unknown_shape_are_taken_by_strided_slices():
    """Without shapes (what a failed shape inference leaves), steps are strided Slices of the decay
    and the drive where they are: the same states, and no Split."""
    length = 12
    graph, b, log_decay, drive, _, a_value = _mamba_factors(length)
    states = strided_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length, chunk=4,
                             rank=4, shapes={})
    feeds = _feeds(length, 1.0, seed=6)
    got = _run(graph, [states], feeds)[0]
    want = _numpy_states(feeds, a_value)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
    assert not any(node.op == "Split" for node in graph.nodes)


def test_the_drive_multiplies_its_smallest_pair_first():
    """b_q = dt_q * B_q * u_q is computed as (dt_q * u_q) * B_q: one (1, D, chunks, 1) product per
    step q, then one block-sized Mul, where another order makes two block-sized Muls."""
    import onnx

    length, chunk = 12, 4
    graph, b, log_decay, drive, shapes, a_value = _mamba_factors(length)
    states = strided_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length, chunk=chunk,
                             rank=4, shapes=shapes)
    states.dtype = np.float32
    graph.outputs = [states]
    graph.cleanup().toposort()
    model = onnx.shape_inference.infer_shapes(gs.export_onnx(graph), data_prop=True)
    known = {info.name: [dim.dim_value for dim in info.type.tensor_type.shape.dim] for info in model.graph.value_info}
    small = [node for node in model.graph.node
             if node.op_type == "Mul" and known.get(node.output[0]) == [1, D, length // chunk, 1]]
    assert len(small) == chunk


def _batch_symbolic_factors(length: int, n=N):
    """Mamba's factors with a symbolic batch and a B shared by the batch multiplied as it is, (L, N) of rank 2 (broadcast
    from the right): log a = Unsqueeze(dt) * A, b = (Unsqueeze(dt) * B) * Unsqueeze(u); the shapes the pass would infer, the
    batch a name (and N too, given a name as `n`)."""
    dt = gs.Variable("dt", np.float32, ("batch", D, length))
    u = gs.Variable("u", np.float32, ("batch", D, length))
    b_in = gs.Variable("B", np.float32, (length, N))
    graph = gs.Graph(inputs=[dt, u, b_in], opset=17)
    b = GraphBuilder(graph, 17, prefix="factors")
    a_value = -np.tile(np.arange(1, N + 1, dtype=np.float32), (D, 1))
    dt4, u4 = b.unsqueeze(dt, [3]), b.unsqueeze(u, [3])
    log_decay = b.mul(dt4, b.const(a_value[None, :, None, :]))
    dt_b = b.mul(dt4, b_in)
    drive = b.mul(dt_b, u4)
    shapes = {dt4.name: ("batch", D, length, 1), u4.name: ("batch", D, length, 1), log_decay.name: ("batch", D, length, n),
              dt_b.name: ("batch", D, length, n), drive.name: ("batch", D, length, n),
              "dt": ("batch", D, length), "u": ("batch", D, length), "B": (length, n)}
    return graph, b, log_decay, drive, shapes, a_value


def _run_batch_of_2(graph, output, length, a_value):
    """`output` (the states) of the graph of _batch_symbolic_factors at batch 2, and the float64 scan's."""
    feeds = {k: np.concatenate([v, _feeds(length, 1.0, seed=12)[k]]) for k, v in _feeds(length, 1.0, seed=11).items()}
    feeds["B"] = feeds["B"][0]
    got = _run(graph, [output], feeds)[0]
    want = np.concatenate([_numpy_states({"dt": feeds["dt"][i:i + 1], "u": feeds["u"][i:i + 1], "B": feeds["B"][None]},
                                         a_value) for i in range(2)])
    return got, want


def test_a_symbolic_batch_and_a_lower_rank_factor_are_taken_block_by_block():
    """Session s31 (mut33): a factor's size named, not a number (a symbolic batch), counts as 1 against the blocks'
    sizes, and a lower-rank factor (B, (L, N)) is padded with 1s on the left: dt * B and the drive are still
    computed block by block from the split factors dt, u, B (3 Splits: no Split of a block-sized product; taking a
    name for a size of 2, or padding with 2, splits the drive whole). Exact ops; the states vs float64."""
    length = 12
    graph, b, log_decay, drive, shapes, a_value = _batch_symbolic_factors(length)
    states = strided_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length,
                             chunk=4, rank=4, shapes=shapes)
    got, want = _run_batch_of_2(graph, states, length, a_value)
    # As test_states_from_the_small_factors_exact_ops (L 12, Q 4), with B split at its own axis 1: its Unsqueeze gone.
    assert dict(Counter(node.op for node in graph.nodes)) == {
        "Unsqueeze": 2, "Shape": 4, "Slice": 3 * 2 + 4 + 2, "Concat": 3 * 2 + 1 + 1, "Reshape": 3 * (1 + 4) + 1,
        "Split": 3, "Mul": 4 * 3 + 3 + 1 + 3 + 4, "Add": 3 + 3 + 2 + 4, "Exp": 5, "Pad": 4}
    assert got.shape == want.shape == (2, D, length, N)
    assert relative_l2(got, want) <= 1e-6


def test_a_lower_rank_product_of_block_size_is_computed_block_by_block():
    """Session s31 (mut33): b = dt * (E * F) with E * F of rank 3, (D, L, N): padded with a 1 on the left it has the
    blocks' sizes, so it is computed block by block from E and F split (3 Splits: dt, E, F; padding with a 2 took
    E * F for no block and split it whole: 2 Splits, 20 Muls). Exact ops; the states vs float64."""
    length = 12
    dt = gs.Variable("dt", np.float32, (1, D, length))
    e_in, f_in = gs.Variable("E", np.float32, (D, length, N)), gs.Variable("F", np.float32, (D, length, 1))
    graph = gs.Graph(inputs=[dt, e_in, f_in], opset=17)
    b = GraphBuilder(graph, 17, prefix="factors")
    a_value = -np.tile(np.arange(1, N + 1, dtype=np.float32), (D, 1))
    dt4 = b.unsqueeze(dt, [3])
    log_decay = b.mul(dt4, b.const(a_value[None, :, None, :]))
    product = b.mul(e_in, f_in)
    drive = b.mul(dt4, product)
    shapes = {dt4.name: (1, D, length, 1), log_decay.name: (1, D, length, N), product.name: (D, length, N),
              drive.name: (1, D, length, N), "dt": (1, D, length), "E": (D, length, N), "F": (D, length, 1)}
    states = strided_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length,
                             chunk=4, rank=4, shapes=shapes)
    rng = np.random.default_rng(15)
    feeds = {"dt": rng.uniform(0.001, 0.1, (1, D, length)).astype(np.float32),
             "E": rng.standard_normal((D, length, N)).astype(np.float32),
             "F": rng.standard_normal((D, length, 1)).astype(np.float32)}
    got = _run(graph, [states], feeds)[0]
    dt64 = feeds["dt"].astype(np.float64)[..., None]
    a64 = np.exp(dt64 * a_value[None, :, None, :])
    b64 = dt64 * (feeds["E"].astype(np.float64) * feeds["F"].astype(np.float64))[None]
    state, want = np.zeros((1, D, N)), []
    for t in range(length):
        state = a64[:, :, t] * state + b64[:, :, t]
        want.append(state)
    want = np.stack(want, 2)
    # As test_states_from_the_small_factors_exact_ops with dt, E and F split (3 x (Reshape, Split, 4 Reshapes back;
    # Shape, 2 Slices, 2 Concats)) and b_q = dt_q * (E_q * F_q): 2 Muls per step q.
    assert dict(Counter(node.op for node in graph.nodes)) == {
        "Unsqueeze": 1, "Shape": 3 + 1, "Slice": 3 * 2 + 4 + 2, "Concat": 3 * 2 + 1 + 1, "Reshape": 3 * (1 + 4) + 1,
        "Split": 3, "Mul": 4 * 3 + 3 + 1 + 3 + 4, "Add": 3 + 3 + 2 + 4, "Exp": 5, "Pad": 4}
    assert got.shape == want.shape == (1, D, length, N)
    assert relative_l2(got, want) <= 1e-6


def test_a_constant_factor_is_paired_by_its_own_shape():
    """Session s31 (mut33): b = (dt * B) * h with h a Constant of shape (1, 1, 1, 1): its own sizes, not the blocks',
    order the products, so B_q * h (N per chunk) comes first and one block-sized Mul per step q is left (taken at
    the blocks' sizes, dt_q * B_q came first and h multiplied a block: two). The states vs float64."""
    import onnx

    length, chunk = 12, 4
    graph, b, log_decay, drive, shapes, a_value = _mamba_factors(length)
    dt_b = drive.inputs[0].inputs[0]   # the factors' drive is (dt * B) * u: u dropped, h in its place
    drive = b.mul(dt_b, b.const(np.full((1, 1, 1, 1), 0.5, np.float32)))
    shapes[drive.name] = (1, D, length, N)
    states = strided_readout(b, decays=Decays.from_log(b, log_decay), drive=drive, initial=None, axis=2, length=length,
                             chunk=chunk, rank=4, shapes=shapes)
    feeds = _feeds(length, 1.0, seed=20)
    got = _run(graph, [states], feeds)[0]
    want = _numpy_states(dict(feeds, u=np.full_like(feeds["u"], 0.5)), a_value)
    assert relative_l2(got, want) <= 1e-6
    model = onnx.shape_inference.infer_shapes(gs.export_onnx(graph), data_prop=True)
    known = {info.name: [dim.dim_value for dim in info.type.tensor_type.shape.dim] for info in model.graph.value_info}
    muls = Counter(str(known.get(node.output[0])) for node in model.graph.node if node.op_type == "Mul")
    # Per step q: B_q * h, then dt_q * (B_q * h) and A * dt_q; sweep 1: 3; the chunk decay: 1; the carry: 3; sweep 2: 4.
    assert dict(muls) == {str([1, 1, length // chunk, N]): chunk, str([1, D, length // chunk, N]): 2 * chunk + 3 + 1 + 3 + 4}


def test_two_steps_and_a_cast_of_the_log_decay_are_stepped():
    """Session s31 (mut33): L 2 (the shortest chain), Q 2: every factor of scan size 2 is stepped, not taken as one
    that broadcasts (size 1); log a = Cast(A * dt) to float32 is computed block by block with its `to` kept. vs float64."""
    import onnx

    length = 2
    graph, b, log_decay, drive, shapes, a_value = _mamba_factors(length)
    cast = b.node("Cast", [log_decay], {"to": onnx.TensorProto.FLOAT})
    shapes[cast.name] = shapes[log_decay.name]
    states = strided_readout(b, decays=Decays.from_log(b, cast), drive=drive, initial=None, axis=2, length=length,
                             chunk=4, rank=4, shapes=shapes)
    feeds = _feeds(length, 1.0, seed=22)
    got = _run(graph, [states], feeds)[0]
    want = _numpy_states(feeds, a_value)
    assert got.shape == want.shape == (1, D, length, N)
    assert relative_l2(got, want) <= 1e-6
    casts = [node for node in graph.nodes if node.op == "Cast"]
    # Step 1's (step 0's decay multiplies no state; one chunk: no chunk decay), from step 1's A * dt_1.
    assert [(node.attrs, node.inputs[0].inputs[0].op) for node in casts] == [({"to": onnx.TensorProto.FLOAT}, "Mul")]

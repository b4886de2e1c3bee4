"""A running maximum computed by a max-plus scan (passes/running_max_scan.py), and RWKV's loop re-rolled with it, on
small loops written with onnx.helper as transformers' `rwkv_linear_attention_cpu` writes them (tests/test_running_max
.py's rwkv_loop). Before s36 every one of them was left unrolled, named "a max-plus recurrence, not a linear step"."""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from passes.graph_builder import GraphBuilder
from passes.reroll_scans import RerollScans
from passes.running_max_scan import _max_plus_scan
from pipelines.compiler import compile_model
from scan_testing import apply_pass, rel_l2, run
from test_running_max import D, rwkv_loop


def _feeds(length: int, seed: int = 3) -> dict:
    """k spread over 3 units, so that the maximum switches between m + w and k often."""
    rng = np.random.default_rng(seed)
    return {"k": (3 * rng.standard_normal((length, D))).astype(np.float32),
            "v": rng.standard_normal((length, D)).astype(np.float32),
            "w": -np.exp(rng.standard_normal(D)).astype(np.float32), "u": rng.standard_normal(D).astype(np.float32)}


def reference(feeds: dict, length: int, readout_branch: bool) -> np.ndarray:
    """rwkv_loop's output in float64 (numpy), the loop as written."""
    k, v, w, u = (feeds[name].astype(np.float64) for name in "kvwu")
    m, num, den, ys = np.full(D, -1e38), np.zeros(D), np.zeros(D), []
    for t in range(length):
        if readout_branch:
            mo = np.maximum(m, k[t] + u)
            o1, o2 = np.exp(m - mo), np.exp(k[t] + u - mo)
            ys.append((o1 * num + o2 * v[t]) / (o1 * den + o2))
        m_next = np.maximum(m + w, k[t])
        e1, e2 = np.exp(m + w - m_next), np.exp(k[t] - m_next)
        num, den, m = e1 * num + e2 * v[t], e1 * den + e2, m_next
        if not readout_branch:
            ys.append(num / den)
    return np.stack(ys)


def test_max_plus_scan_is_the_sequential_maximum():
    """X_t <- Max(X_t, X_{t-d} + d w), d = 1, 2, 4, 8 over 13 positions (4 rounds of 3 Slices, Mul, Add, Max,
    Concat), against the loop m_t = max(m_{t-1} + w, k_t) in float32 from m_{-1} = X_0: within 2 ulp of the values
    (d w is one product where the loop adds w d times), the -1e38 start kept."""
    count = 13
    graph = gs.Graph(opset=17)
    stacked, w = gs.Variable("x", np.float32, (count, D)), gs.Variable("w", np.float32, (D,))
    graph.inputs = [stacked, w]
    builder = GraphBuilder(graph, 17, prefix="scan")
    graph.outputs = [_max_plus_scan(builder, stacked, w, count)]
    graph.outputs[0].dtype = np.float32
    model = gs.export_onnx(graph)
    assert Counter(node.op_type for node in model.graph.node) == {
        "Slice": 12, "Mul": 4, "Add": 4, "Max": 4, "Concat": 4}
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal((count, D))).astype(np.float32)
    x[0] = -1e38
    w_value = -np.exp(rng.standard_normal(D)).astype(np.float32)
    (scanned,) = run(model, {"x": x, "w": w_value})
    expected = [x[0]]
    for t in range(1, count):
        expected.append(np.maximum(expected[-1] + w_value, x[t]))
    expected = np.stack(expected)
    assert np.array_equal(scanned[0], expected[0])
    assert np.max(np.abs(scanned[1:] - expected[1:])) <= 2 * np.finfo(np.float32).eps * np.max(np.abs(expected[1:]))


# The re-rolled graph of rwkv_loop(6) in the parallel form (chunk 2): the max-plus scan (3 rounds), the decays and
# drives replayed over all steps, num and den each one parallel scan read back by Gathers where the states were read
RE_ROLLED_OPS = {
    False: {"Slice": 36, "Mul": 18, "Add": 14, "Concat": 13, "Gather": 12, "Pad": 10, "Shape": 7, "Unsqueeze": 7,
            "Reshape": 6, "Div": 6, "Split": 4, "Max": 3, "Sub": 3, "Exp": 3, "Expand": 1},
    True: {"Mul": 36, "Slice": 36, "Add": 32, "Gather": 27, "Sub": 15, "Exp": 15, "Concat": 13, "Pad": 10, "Max": 9,
           "Shape": 7, "Unsqueeze": 7, "Div": 6, "Reshape": 6, "Split": 4, "Expand": 1},
}


@pytest.mark.parametrize("fold_first", [False, True])
@pytest.mark.parametrize("readout_branch", [False, True])
def test_rwkv_loop_rerolls_with_its_running_maximum_scanned(readout_branch, fold_first):
    """num and den re-rolled (6 steps each), their states gathered where the loop read them (the output Div; with the
    readout branch, RWKV's numerator and denominator before the update, still per step); `fold_first`: step 0 reads
    the -1e38 where m_init + w stood (the dynamo exporter's folding), the same graph but one Sub. Before: nothing
    re-rolled, the running-maximum note. Bounds, over 3 draws: within 1e-7 of float64 and within 1.25 times the
    unrolled float32 graph's own distance to it plus 2e-8 (measured 3.3e-8 to 6.4e-8, the unrolled graph's 3.3e-8 to
    6.4e-8: 4.2e-8 where it has 3.4e-8)."""
    model = rwkv_loop(6, readout_branch=readout_branch, fold_first=fold_first)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.stats == {"rerolled": 2, "steps": 12, "rejected": 0, "step_operands_replayed": 4,
                            "running_maxima_scanned": 1}
    assert result.notes == []
    ops = Counter(RE_ROLLED_OPS[readout_branch])
    if fold_first:
        ops["Sub"] += 1   # m_{-1} = (m_{-1} + w) - w
    assert Counter(node.op_type for node in out.graph.node) == ops
    for seed in range(3):
        feeds = _feeds(6, seed)
        expected = reference(feeds, 6, readout_branch)
        rerolled, unrolled = run(out, feeds)[0], run(model, feeds)[0]
        assert rel_l2(rerolled, expected) <= 1e-7
        assert rel_l2(rerolled, expected) <= 1.25 * rel_l2(unrolled, expected) + 2e-8


@pytest.mark.parametrize("form, state_form, taken_by", [
    ("parallel", "same", "parallel"), ("batched-doubling", "same", "batched-doubling"),
    ("window-doubling", "same", "window-doubling"), ("batched", "batched-doubling", "batched-doubling"),
    ("chunk24", "same", None), ("batched", "same", None)])
def test_each_form_takes_the_rescaled_steps_exactly_or_refuses_by_name(form, state_form, taken_by):
    """33 steps, chunk 4. The forms that multiply decays take them, and window-doubling, which sums their logs (a_0,
    which multiplies the zeros, taken as 1 for them all: exp(-1e38)'s log, summed into chunk24's and batched's
    cumulative logs, had made them NaN here); chunk24 and batched invert a chunk's cumulative decay, which a running
    maximum does not bound (exp(122) within 7 steps of RWKV's random-init export): refused by name, or the state form
    where it only multiplies (tpu's batched-doubling), and the graph put back as it was where nothing re-rolls."""
    model = rwkv_loop(33)
    out, result = apply_pass(model, RerollScans(form=form, chunk=4, state_form=state_form))
    feeds = _feeds(33)
    if taken_by is None:
        refusal = (f"its decays exp(m_{{t-1}} + w - m_t) are rescaled by a running maximum, with no bound below, and "
                   f"the {form} form overflows float32 once a chunk's decays multiply past "
                   f"exp(-{ {'chunk24': 87, 'batched': 174}[form]}); the parallel and batched-doubling forms only "
                   "multiply decays (reroll-scans{form=parallel})")
        assert result.notes == [
            "0 scans found", f"chain at 'num0' (33 steps) not re-rolled: {refusal}",
            f"chain at 'den0' (33 steps) not re-rolled: {refusal}",
            "running maximum at 'max0' (33 steps), m_t = Max(m_{t-1} + w_t, k_t), rescales the linear steps at 'num0' "
            "and 129 more: the maximum re-rolls as a max-plus scan, but no chain of those steps does (their own notes "
            "say why): left unrolled"]
        assert [(node.op_type, list(node.input)) for node in out.graph.node] == \
            [(node.op_type, list(node.input)) for node in model.graph.node]
        return
    assert (result.stats["rerolled"], result.stats["steps"]) == (2, 66)
    expected = reference(feeds, 33, True)
    rerolled, unrolled = run(out, feeds)[0], run(model, feeds)[0]
    assert rel_l2(rerolled, expected) <= 1e-7   # measured 7.1e-8 to 7.3e-8; the unrolled graph's 7.2e-8
    assert rel_l2(rerolled, unrolled) <= 5e-8   # measured 1.6e-8 (parallel) to 3.2e-8


def test_a_per_step_w_keeps_the_running_maximum_unrolled_by_name():
    """w_t = W[t] (xLSTM's log forget gate varies per step): m_t = max_j(k_j + sum_{j<l<=t} w_l) needs window sums
    of w beside the maximum, not built: left unrolled, the reason in the note; the graph as it was."""
    model = rwkv_loop(6, per_step_w=True)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert (result.changed, result.stats) == (False, {"rerolled": 0, "steps": 0, "rejected": 0})
    assert result.notes == [
        "0 scans found",
        "running maximum at 'max0' (6 steps), m_t = Max(m_{t-1} + w_t, k_t), rescales the linear steps at 'num0' and "
        "21 more: their decays and drives are computed from it, a max-plus recurrence, not a linear step (its w_t is "
        "not one tensor at every step (step 2 adds 'w2' where step 1 adds 'w1': a per-step gate, as xLSTM's log "
        "forget gate); the max-plus scan is built for a w constant over the steps): left unrolled"]
    assert [(node.op_type, list(node.input)) for node in out.graph.node] == \
        [(node.op_type, list(node.input)) for node in model.graph.node]


# (re-rolled chains, nodes out) per pipeline, rwkv_loop(16): 404 nodes once simplified unrolled (seed's)
PIPELINES = {"seed": (0, 404), "cpu": (2, 460), "cpu-many": (2, 365), "ov": (2, 365), "tpu": (2, 416),
             "tpu-bm1688": (2, 416), "tpu-cv186x": (2, 416)}


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_every_pipeline_verifies_the_rescaled_loop(pipeline, tmp_path):
    """The compiler's own verification (1e-5) passes in every pipeline, and the graph is within 4e-7 of float64:
    seed (chunk24) refuses by name, the others re-roll both chains."""
    model = rwkv_loop(16)
    result = compile_model(model, pipeline, output=tmp_path / "out.onnx", verify="end")
    reroll = next(record for record in result.records if record.name == "reroll-scans")
    compiled = onnx.load(str(tmp_path / "out.onnx"))
    assert (reroll.stats["rerolled"], len(compiled.graph.node)) == PIPELINES[pipeline]
    feeds = _feeds(16)
    assert rel_l2(run(compiled, feeds)[0], reference(feeds, 16, True)) <= 4e-7

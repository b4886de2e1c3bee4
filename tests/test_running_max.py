"""A running maximum rescaling linear steps (RWKV's and xLSTM's stabiliser): found by patterns/running_max.py and
named by reroll-scans, on small synthetic loops written as RWKV's CPU path writes them."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.reroll_scans import RerollScans
from patterns.running_max import find_running_maxima, rescaled_steps
from scan_testing import apply_pass, rel_l2, run

D = 3


def rwkv_loop(length: int, add_to_max: bool = True, rescale: bool = True, readout_branch: bool = True,
              per_step_w: bool = False, fold_first: bool = False):
    """RWKV's wkv loop over `length` steps: m' = Max(m + w, k_t), e1 = exp(m + w - m'), e2 = exp(k_t - m'),
    num = e1 * num + e2 * v_t, den = e1 * den + e2, y_t = num / den (after the update; `readout_branch`: as RWKV,
    y_t from e1' * num + e2' * v_t before it, a second step-shaped Add reading each state). `add_to_max` False:
    m' = Max(m, k_t), no Add; `rescale` False: the states decay by exp(w), the Max chain beside them; `per_step_w`:
    w_t = W[t], a graph input (L, D) (xLSTM's log forget gate); `fold_first`: step 0 reads m_init where m_init + w
    stood (the dynamo exporter folds -1e38 + w to -1e38, one constant for both)."""
    inits = [numpy_helper.from_array(np.full(D, -1e38, np.float32), "m_init"),
             numpy_helper.from_array(np.zeros(D, np.float32), "zeros")]
    nodes, readouts, states = [], [], []
    m, num, den = "m_init", "zeros", "zeros"
    for t in range(length):
        inits.append(numpy_helper.from_array(np.array(t, np.int64), f"i{t}"))
        w = f"w{t}" if per_step_w else "w"
        if per_step_w:
            nodes.append(helper.make_node("Gather", ["W", f"i{t}"], [w]))
        nodes += [helper.make_node("Gather", ["k", f"i{t}"], [f"k{t}"]),
                  helper.make_node("Gather", ["v", f"i{t}"], [f"v{t}"])]
        mw = "m_init" if fold_first and t == 0 else f"mw{t}"
        if mw != "m_init":
            nodes.append(helper.make_node("Add", [m, w], [mw], name=mw))
        nodes.append(helper.make_node("Max", [mw if add_to_max else m, f"k{t}"], [f"m{t}"], name=f"max{t}"))
        if rescale:
            nodes += [helper.make_node("Sub", [mw, f"m{t}"], [f"d{t}"]),
                      helper.make_node("Exp", [f"d{t}"], [f"e1_{t}"]),
                      helper.make_node("Sub", [f"k{t}", f"m{t}"], [f"g{t}"]),
                      helper.make_node("Exp", [f"g{t}"], [f"e2_{t}"])]
        else:
            nodes += [helper.make_node("Sigmoid", [f"k{t}"], [f"e1_{t}"]),
                      helper.make_node("Tanh", [f"k{t}"], [f"e2_{t}"]),
                      helper.make_node("Identity", [f"m{t}"], [f"unused{t}"])]
        if readout_branch:   # e1' * num + e2' * v_t, RWKV's output before the update (its own max: k_t + u)
            nodes += [helper.make_node("Add", [f"k{t}", "u"], [f"ku{t}"]),
                      helper.make_node("Max", [m, f"ku{t}"], [f"mo{t}"]),
                      helper.make_node("Sub", [m, f"mo{t}"], [f"od{t}"]),
                      helper.make_node("Exp", [f"od{t}"], [f"o1_{t}"]),
                      helper.make_node("Sub", [f"ku{t}", f"mo{t}"], [f"og{t}"]),
                      helper.make_node("Exp", [f"og{t}"], [f"o2_{t}"]),
                      helper.make_node("Mul", [f"o1_{t}", num], [f"on{t}"]),
                      helper.make_node("Mul", [f"o2_{t}", f"v{t}"], [f"ov{t}"]),
                      helper.make_node("Add", [f"on{t}", f"ov{t}"], [f"onum{t}"], name=f"out_num{t}"),
                      helper.make_node("Mul", [f"o1_{t}", den], [f"od_{t}"]),
                      helper.make_node("Add", [f"od_{t}", f"o2_{t}"], [f"oden{t}"], name=f"out_den{t}"),
                      helper.make_node("Div", [f"onum{t}", f"oden{t}"], [f"y{t}"])]
        nodes += [helper.make_node("Mul", [f"e1_{t}", num], [f"nd{t}"]),
                  helper.make_node("Mul", [f"e2_{t}", f"v{t}"], [f"nv{t}"]),
                  helper.make_node("Add", [f"nd{t}", f"nv{t}"], [f"num{t}"], name=f"num{t}"),
                  helper.make_node("Mul", [f"e1_{t}", den], [f"dd{t}"]),
                  helper.make_node("Add", [f"dd{t}", f"e2_{t}"], [f"den{t}"], name=f"den{t}")]
        if not rescale:   # the states stacked: a readout of each chain
            nodes += [helper.make_node("Unsqueeze", [f"num{t}", "axis0"], [f"yu{t}"]),
                      helper.make_node("Unsqueeze", [f"den{t}", "axis0"], [f"zu{t}"])]
            states.append(f"zu{t}")
        else:
            if not readout_branch:
                nodes.append(helper.make_node("Div", [f"num{t}", f"den{t}"], [f"y{t}"]))
            nodes.append(helper.make_node("Unsqueeze", [f"y{t}", "axis0"], [f"yu{t}"]))
        readouts.append(f"yu{t}")
        m, num, den = f"m{t}", f"num{t}", f"den{t}"
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    nodes.append(helper.make_node("Concat", readouts, ["y"], axis=0))
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
              for name, shape in (("k", [length, D]), ("v", [length, D]), ("w", [D]), ("u", [D]))]
    if per_step_w:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [length, D]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [length, D])]
    if states:
        nodes.append(helper.make_node("Concat", states, ["z"], axis=0))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [length, D]))
    graph = helper.make_graph(nodes, "rwkv", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(length: int) -> dict:
    rng = np.random.default_rng(0)
    return {"k": rng.standard_normal((length, D)).astype(np.float32),
            "v": rng.standard_normal((length, D)).astype(np.float32),
            "w": -np.exp(rng.standard_normal(D)).astype(np.float32), "u": rng.standard_normal(D).astype(np.float32)}


NOTE = ("running maximum at 'max0' (6 steps), m_t = Max(m_{{t-1}} + w_t, k_t), rescales the linear steps at "
        "'num0' and {more} more: their decays and drives are computed from it, a max-plus recurrence, not a "
        "linear step (its w_t is not one tensor at every step (step 2 adds 'w2' where step 1 adds 'w1': a per-step "
        "gate, as xLSTM's log forget gate); the max-plus scan is built for a w constant over the steps): left unrolled")


@pytest.mark.parametrize("readout_branch, more", [(True, 21), (False, 11)])
def test_rwkv_loop_with_a_per_step_w_is_named_as_rescaled_by_a_running_maximum(readout_branch, more):
    """Six steps: the Max chain max0 .. max5, and the num, den (and out_num, out_den but step 0's, whose maximum reads
    only m_init) steps reading it, num0 first in graph order. With w the same at every step the loop re-rolls since
    s36 (tests/test_running_max_scan.py); with w_t = W[t], xLSTM's kind, the max-plus scan is not built, and the note
    says why. Before s35, '0 scans found' alone."""
    model = rwkv_loop(6, readout_branch=readout_branch, per_step_w=True)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert (result.changed, result.stats) == (False, {"rerolled": 0, "steps": 0, "rejected": 0})
    assert result.notes == ["0 scans found", NOTE.format(more=more)]
    assert [(node.op_type, list(node.input)) for node in out.graph.node] == \
        [(node.op_type, list(node.input)) for node in model.graph.node]
    feeds = {**_feeds(6), "W": -np.exp(np.random.default_rng(1).standard_normal((6, D))).astype(np.float32)}
    assert rel_l2(run(out, feeds)[0], run(model, feeds)[0]) == 0


def test_running_maxima_are_the_max_chains_that_add_to_the_max_before():
    graph = gs.import_onnx(rwkv_loop(6))
    (running,) = find_running_maxima(graph)
    assert ([node.name for node in running.maxes], running.anchor, running.length) == (
        [f"max{t}" for t in range(6)], "max0", 6)
    assert sorted(node.name for node in rescaled_steps(graph, running)) == sorted(
        [f"{kind}{t}" for kind in ("num", "den") for t in range(6)]
        + [f"{kind}{t}" for kind in ("out_num", "out_den") for t in range(1, 6)])   # out_*0 read m_init alone


@pytest.mark.parametrize("length, add_to_max", [(3, True), (6, False)])
def test_short_max_chains_and_a_max_without_the_add_are_no_running_maximum(length, add_to_max):
    """Three steps (fewer than MIN_STEPS 4) or m_t = Max(m_{t-1}, k_t) (a cumulative maximum, no w: each state's
    Max reads the one before directly, as RWKV's output maximum does): nothing found, no note."""
    model = rwkv_loop(length, add_to_max=add_to_max)
    assert find_running_maxima(gs.import_onnx(model)) == []
    _, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert not any("running maximum" in note for note in result.notes)


def test_linear_steps_beside_a_max_chain_are_rerolled_and_not_named():
    """The states decay by sigmoid(k_t), driven by tanh(k_t): a linear recurrence of its own, the Max chain beside
    it read by nothing they read. Both chains re-roll (num and den), no running-maximum note."""
    model = rwkv_loop(6, rescale=False, readout_branch=False)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert (result.stats["rerolled"], result.stats["steps"]) == (2, 12)
    assert not any("running maximum" in note for note in result.notes)
    feeds = _feeds(6)
    for actual, expected in zip(run(out, feeds), run(model, feeds)):
        assert rel_l2(actual, expected) <= 1e-6

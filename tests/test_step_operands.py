"""A loop that discretises at every step (`dA = torch.exp(delta[:, t] * A)`, `h = dA * h + delta[:, t] * x[:, t]`):
passes/step_operands.py replays each step's decay and drive subgraph once over all positions and reads each step as
Gather(replayed, t, 0) for reroll-scans, and puts the steps' own operands back where no re-rolled scan took them."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.reroll_scans import RerollScans
from scan_testing import apply_pass, op_histogram, rel_l2, run

B, L, D = 2, 5, 3


def _discretised_in_loop_model(backward=False, odd_step=None, steps=L) -> onnx.ModelProto:
    """h_t = Exp(Gather(delta, t, 1) * A) * h_{t-1} + Gather(delta, t, 1) * Gather(x, t, 1) from h = zeros (B, D),
    y_t = h_t * c stacked along axis 1 (positions in step order); `backward`: the steps take t = L-1 .. 0;
    `odd_step`: that step's decay is Sigmoid, not Exp (no template); `steps`: only positions 0 .. steps-1 of the inputs."""
    inits = [numpy_helper.from_array(-np.linspace(0.5, 2, D).astype(np.float32), "A"),
             numpy_helper.from_array(np.linspace(-1, 1, D).astype(np.float32), "c"),
             numpy_helper.from_array(np.zeros((B, D), np.float32), "h_init"),
             numpy_helper.from_array(np.array([1], np.int64), "axis")]
    nodes, previous, outputs = [], "h_init", {}
    positions = list(range(steps))[::-1] if backward else list(range(steps))
    for step, t in enumerate(positions):
        inits.append(numpy_helper.from_array(np.array(t, np.int64), f"t{step}"))
        nodes += [helper.make_node("Gather", ["delta", f"t{step}"], [f"d{step}"], axis=1),
                  helper.make_node("Mul", [f"d{step}", "A"], [f"dA{step}"]),
                  helper.make_node("Sigmoid" if step == odd_step else "Exp", [f"dA{step}"], [f"a{step}"]),
                  helper.make_node("Gather", ["x", f"t{step}"], [f"x{step}"], axis=1),
                  helper.make_node("Mul", [f"d{step}", f"x{step}"], [f"b{step}"]),
                  helper.make_node("Mul", [f"a{step}", previous], [f"ah{step}"]),
                  helper.make_node("Add", [f"ah{step}", f"b{step}"], [f"h{step}"]),
                  helper.make_node("Mul", [f"h{step}", "c"], [f"y{step}"]),
                  helper.make_node("Unsqueeze", [f"y{step}", "axis"], [f"u{step}"])]
        previous, outputs[t] = f"h{step}", f"u{step}"
    nodes.append(helper.make_node("Concat", [outputs[t] for t in range(steps)], ["out"], axis=1))
    graph = helper.make_graph(nodes, "discretised_in_loop",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, L, D]) for n in ("delta", "x")],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, steps, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _feeds(batch=B):
    rng = np.random.default_rng(batch)
    return {"delta": rng.uniform(0.01, 0.5, (batch, L, D)).astype(np.float32),
            "x": rng.normal(size=(batch, L, D)).astype(np.float32)}


def _scan(feeds, backward=False):
    a = np.exp(feeds["delta"].astype(np.float64) * -np.linspace(0.5, 2, D))
    b = feeds["delta"].astype(np.float64) * feeds["x"]
    h, out = np.zeros((B, D)), np.zeros((B, L, D))
    for t in (range(L - 1, -1, -1) if backward else range(L)):
        h = a[:, t] * h + b[:, t]
        out[:, t] = h * np.linspace(-1, 1, D)
    return out


@pytest.mark.parametrize("backward", [False, True])
def test_a_loop_that_discretises_at_every_step_rerolls(backward):
    """Session s23: each step's decay Exp(delta_t * A) and drive delta_t * x_t were no step of a tensor, so no chain
    was found ('0 scans found', no reason); now the decay's 3 nodes and the drive's 3 are replayed once over all
    positions (one Gather of delta, x each, moved step axis first) and the chain is a scan of them, forward or
    backward; the L per-step Gathers and Exps are gone."""
    model = _discretised_in_loop_model(backward)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.stats == {"rerolled": 1, "steps": L, "rejected": 0, "step_operands_replayed": 2}
    # the parallel form's (chunk 2): one Exp for the replayed decays, no Gather left; backward: 3 reversing Slices more
    assert op_histogram(out) == {"Add": 4, "Concat": 3, "Exp": 1, "Mul": 9, "Pad": 6, "Reshape": 3, "Shape": 3,
                                 "Slice": 15 if backward else 12, "Transpose": 4}
    assert op_histogram(model) == {"Add": 5, "Concat": 1, "Exp": 5, "Gather": 10, "Mul": 20, "Unsqueeze": 5}
    feeds = _feeds()
    assert rel_l2(run(out, feeds)[0], _scan(feeds, backward)) <= 1e-6
    assert rel_l2(run(out, feeds)[0], run(model, feeds)[0]) <= 1e-6


def test_step_operands_that_are_not_one_subgraph_are_left_as_they_were():
    """One step's decay a Sigmoid where the others' are Exp: no template for the decays, the chain unmatched and
    the drives' replay put back: the graph as it was, op for op; the notes (--explain) say which chain and why,
    where they said only '0 scans found'."""
    model = _discretised_in_loop_model(odd_step=3)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.stats["rerolled"] == 0 and "step_operands_replayed" not in result.stats
    assert result.notes == ["0 scans found", "chain at 'h0' (5 steps) not re-rolled: its decays are computed at every "
                            "step, but not by one subgraph (step 3 departs from step 0 at Sigmoid '' (step 0 has Exp "
                            "'' there))"]
    assert op_histogram(out) == op_histogram(model)
    feeds = _feeds()
    np.testing.assert_array_equal(run(out, feeds)[0], run(model, feeds)[0])


def test_short_chains_of_computed_operands_are_not_named():
    """Three steps (under MIN_EXPLAINED_STEPS): Add(Mul(w, x), b) chains that short occur outside loops, so an
    unmatched one is not put in the notes."""
    model = _discretised_in_loop_model(odd_step=1, steps=3)
    _, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.notes == ["0 scans found"]

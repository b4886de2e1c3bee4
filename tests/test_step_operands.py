"""A loop that discretises at every step (`dA = torch.exp(delta[:, t] * A)`, `h = dA * h + delta[:, t] * x[:, t]`):
passes/step_operands.py replays each step's decay and drive subgraph once over all positions and reads each step as
Gather(replayed, t, 0) for reroll-scans, and puts the steps' own operands back where no re-rolled scan took them."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_graphsurgeon as gs

from passes.reroll_scans import RerollScans
from passes.step_operands import replay_step_operands, restore
from scan_testing import apply_pass, op_histogram, rel_l2, run

B, L, D = 2, 5, 3


def _discretised_in_loop_model(backward=False, odd_step=None, steps=L, state_first=False, drive_first=False,
                               decays_read=False, odd_op="Sigmoid", loops=1, state_op="Mul", drive_op="Mul",
                               odd_drive_step=None, first=0, decay_offset=0) -> onnx.ModelProto:
    """h_t = Exp(Gather(delta, t, 1) * A) * h_{t-1} + Gather(delta, t, 1) * Gather(x, t, 1) from h = zeros (B, D),
    y_t = h_t * c stacked along axis 1 (positions in step order); `backward`: the steps take t = L-1 .. 0;
    `odd_step`: that step's decay (or "every" step's) is `odd_op`, not Exp; `steps`: only positions 0 .. steps-1 of
    the inputs.
    Session s24: `state_first` Mul(h, a_t), `drive_first` Add(b_t, Mul(..)); `decays_read`: a_t = Gather(a, t, 1) of a
    graph input "a" (a step of a tensor, only the drives computed); `loops`: that many such loops, one after another
    on the same inputs, their outputs concatenated; `decays_read` "initializer": a_t = A itself (a constant decay),
    "constant-node": a Constant node per step, "shared": a_t = Identity(Exp(A)), one computed tensor at every step
    (session s35, MiniMax's block decay); `state_op`: Div(a_t, h) (no recurrence); `drive_op`: b_t = Sub(d_t, x_t);
    `odd_drive_step`: that step's drive is Div(d_t, x_t). Session s30: `first`: the steps take positions first ..
    first + steps - 1 (`for t in range(1, L)`). Session s31: `decay_offset`: the decay reads delta at t + that
    (`dA = exp(delta[:, t + 1] * A)` beside the drive's delta[:, t]), its own Gather."""
    inits = [numpy_helper.from_array(-np.linspace(0.5, 2, D).astype(np.float32), "A"),
             numpy_helper.from_array(np.linspace(-1, 1, D).astype(np.float32), "c"),
             numpy_helper.from_array(np.zeros((B, D), np.float32), "h_init"),
             numpy_helper.from_array(np.array([1], np.int64), "axis")]
    nodes, loop_outputs = [], []
    positions = list(range(first, first + steps))[::-1] if backward else list(range(first, first + steps))
    if decays_read == "shared":
        nodes.append(helper.make_node("Exp", ["A"], ["eA"], name="shared_decay"))
    for loop in range(loops):
        previous, outputs, n = "h_init", {}, "" if loop == 0 else f"loop{loop}_"
        for step, t in enumerate(positions):
            if loop == 0:
                inits.append(numpy_helper.from_array(np.array(t, np.int64), f"t{step}"))
                if decay_offset:
                    inits.append(numpy_helper.from_array(np.array(t + decay_offset, np.int64), f"s{step}"))
            decay_delta = f"{n}e{step}" if decay_offset else f"{n}d{step}"
            read = helper.make_node("Gather", ["a", f"t{step}"], [f"{n}a{step}"], axis=1)
            decay = [read] if decays_read is True else [
                helper.make_node("Identity", ["A"], [f"{n}a{step}"])] if decays_read == "initializer" else [
                helper.make_node("Identity", ["eA"], [f"{n}a{step}"])] if decays_read == "shared" else [
                helper.make_node("Constant", [], [f"{n}a{step}"], value=numpy_helper.from_array(
                    np.full(D, 0.5, np.float32)))] if decays_read == "constant-node" else [
                *([helper.make_node("Gather", ["delta", f"s{step}"], [decay_delta], axis=1)] if decay_offset else []),
                helper.make_node("Mul", [decay_delta, "A"], [f"{n}dA{step}"]),
                helper.make_node(odd_op if odd_step in (step, "every") else "Exp", [f"{n}dA{step}"], [f"{n}a{step}"])]
            state = [previous, f"{n}a{step}"] if state_first else [f"{n}a{step}", previous]
            step_sum = [f"{n}b{step}", f"{n}ah{step}"] if drive_first else [f"{n}ah{step}", f"{n}b{step}"]
            nodes += [helper.make_node("Gather", ["delta", f"t{step}"], [f"{n}d{step}"], axis=1), *decay,
                      helper.make_node("Gather", ["x", f"t{step}"], [f"{n}x{step}"], axis=1),
                      helper.make_node("Div" if step == odd_drive_step else drive_op, [f"{n}d{step}", f"{n}x{step}"],
                                       [f"{n}b{step}"]),
                      helper.make_node(state_op, state, [f"{n}ah{step}"]),
                      helper.make_node("Add", step_sum, [f"{n}h{step}"]),
                      helper.make_node("Mul", [f"{n}h{step}", "c"], [f"{n}y{step}"]),
                      helper.make_node("Unsqueeze", [f"{n}y{step}", "axis"], [f"{n}u{step}"])]
            previous, outputs[t] = f"{n}h{step}", f"{n}u{step}"
        nodes.append(helper.make_node("Concat", [outputs[t] for t in sorted(outputs)], [f"{n}out"], axis=1))
        loop_outputs.append(f"{n}out")
    if loops > 1:
        nodes.append(helper.make_node("Concat", loop_outputs, ["all"], axis=1))
    inputs = ("delta", "x", "a") if decays_read is True else ("delta", "x")
    graph = helper.make_graph(nodes, "discretised_in_loop",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, L, D]) for n in inputs],
                              [helper.make_tensor_value_info("out" if loops == 1 else "all", TensorProto.FLOAT,
                                                             [B, steps * loops, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _feeds(batch=B):
    rng = np.random.default_rng(batch)
    return {"delta": rng.uniform(0.01, 0.5, (batch, L, D)).astype(np.float32),
            "x": rng.normal(size=(batch, L, D)).astype(np.float32)}


def _scan(feeds, backward=False, first=0, steps=L, decay_offset=0):
    a = np.exp(feeds["delta"].astype(np.float64) * -np.linspace(0.5, 2, D))
    b = feeds["delta"].astype(np.float64) * feeds["x"]
    h, out = np.zeros((B, D)), np.zeros((B, L, D))
    positions = range(first, first + steps)
    for t in (positions[::-1] if backward else positions):
        h = a[:, t + decay_offset] * h + b[:, t]
        out[:, t] = h * np.linspace(-1, 1, D)
    return out[:, first:first + steps]


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("first, decay_offset", [(0, 1), (1, -1)])
def test_decays_computed_at_another_offset_than_the_drives_reroll(backward, first, decay_offset):
    """Session s31: `dA = exp(delta[:, t + 1] * A)` beside the drive's delta[:, t] (4 steps of 5 positions; and
    delta[:, t - 1] over a loop from 1): each operand's subgraph is replayed over its own positions, and the chain's
    decays then took other positions than its drives, "decay a_i index jumps to 1 at step 0 (expected 0)" (or "input
    b_i index jumps to 1 .." where the vote fell to the decays'); now each is
    sliced to its own."""
    model = _discretised_in_loop_model(backward, steps=L - 1, first=first, decay_offset=decay_offset)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.stats == {"rerolled": 1, "steps": L - 1, "rejected": 0, "step_operands_replayed": 2,
                            "part_of_axis": 1}
    assert "Gather" not in op_histogram(out)
    feeds = _feeds()
    assert rel_l2(run(out, feeds)[0], _scan(feeds, backward, first, L - 1, decay_offset)) <= 1e-6
    assert rel_l2(run(out, feeds)[0], run(model, feeds)[0]) <= 1e-6


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("first, steps", [(1, L - 1), (1, L - 2), (0, L - 2)])
def test_a_loop_over_part_of_the_positions_that_discretises_at_every_step_rerolls(backward, first, steps):
    """Session s30: the steps' operands took positions 1 .. 4 of 5 (`for t in range(1, L)`), and match_operand_templates
    wanted 0 .. n-1: "the step operands take positions [1, 2, 3, 4], not 0 .. 3 once each", 0 scans. Now they are
    replayed over positions 0 .. 4, each step reads its own, and reroll-scans slices the chain's positions: one Slice
    per operand more than the whole loop's graph (where the replay covers more than the chain)."""
    model = _discretised_in_loop_model(backward, steps=steps, first=first)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.stats == {"rerolled": 1, "steps": steps, "rejected": 0, "step_operands_replayed": 2,
                            **({"part_of_axis": 1} if first else {})}
    assert "Gather" not in op_histogram(out)
    feeds = _feeds()
    assert rel_l2(run(out, feeds)[0], _scan(feeds, backward, first, steps)) <= 1e-6
    assert rel_l2(run(out, feeds)[0], run(model, feeds)[0]) <= 1e-6


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


def test_a_decay_shared_by_every_step_is_named_as_such():
    """Session s35: a_t = Exp(A) computed once and read by every step (MiniMax's block decay exp(-slope * block)):
    before, "its decays are computed at every step, but not by one subgraph (the step operands are not computed from
    steps of a tensor)"; now named as the one tensor it is. The graph is left as it was."""
    model = _discretised_in_loop_model(decays_read="shared")
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.notes == ["0 scans found", "chain at 'h0' (5 steps) not re-rolled: its decays are one tensor, 'eA', "
                            "read by every step: a decay shared by all steps, not a step of a tensor, is not taken"]
    assert op_histogram(out) == op_histogram(model)   # the drives, replayed, are put back (in another order)
    feeds = _feeds()
    np.testing.assert_array_equal(run(out, feeds)[0], run(model, feeds)[0])


def test_drives_of_blocks_of_positions_are_named_as_a_recurrence_over_blocks():
    """Session s35: b_t = ReduceSum(x[:, 2t:2t+2], 1), one block of two positions per step (MiniMax's lightning
    attention steps over blocks): the positions' stride is named."""
    inits = [numpy_helper.from_array(-np.linspace(0.5, 2, D).astype(np.float32), "A"),
             numpy_helper.from_array(np.zeros((B, D), np.float32), "h_init"),
             numpy_helper.from_array(np.array([1], np.int64), "axis")]
    nodes, previous, outputs = [], "h_init", []
    for t in range(L):
        inits += [numpy_helper.from_array(np.array(t, np.int64), f"t{t}"),
                  numpy_helper.from_array(np.array([2 * t], np.int64), f"start{t}"),
                  numpy_helper.from_array(np.array([2 * t + 2], np.int64), f"end{t}")]
        nodes += [helper.make_node("Gather", ["delta", f"t{t}"], [f"d{t}"], axis=1),
                  helper.make_node("Mul", [f"d{t}", "A"], [f"dA{t}"]),
                  helper.make_node("Exp", [f"dA{t}"], [f"a{t}"]),
                  helper.make_node("Slice", ["x", f"start{t}", f"end{t}", "axis"], [f"block{t}"]),
                  helper.make_node("ReduceSum", [f"block{t}", "axis"], [f"b{t}"], keepdims=0),
                  helper.make_node("Mul", [f"a{t}", previous], [f"ah{t}"]),
                  helper.make_node("Add", [f"ah{t}", f"b{t}"], [f"h{t}"], name=f"h{t}"),
                  helper.make_node("Unsqueeze", [f"h{t}", "axis"], [f"u{t}"])]
        previous = f"h{t}"
        outputs.append(f"u{t}")
    nodes.append(helper.make_node("Concat", outputs, ["out"], axis=1))
    graph = helper.make_graph(nodes, "blocks", [helper.make_tensor_value_info("delta", TensorProto.FLOAT, [B, L, D]),
                                                helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, 2 * L, D])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, L, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.notes == ["0 scans found", "chain at 'h0' (5 steps) not re-rolled: its drives are computed at every "
                            "step, but not by one subgraph (the step operands take positions [0, 2, 4, 6, 8]: a step "
                            "every 2 positions (a recurrence over blocks of 2, as lightning attention's), not 0 .. 4 "
                            "once each)"]
    assert op_histogram(out) == op_histogram(model)   # the decays, replayed, are put back (in another order)
    feeds = {"delta": _feeds()["delta"], "x": np.random.default_rng(1).normal(size=(B, 2 * L, D)).astype(np.float32)}
    np.testing.assert_array_equal(run(out, feeds)[0], run(model, feeds)[0])


# -- session s24: replay_step_operands itself (its mutants survived the whole-pass tests above) -----------------

def _replayed(model: onnx.ModelProto):
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    taken = {node.name for node in graph.nodes} | set(graph.tensors())
    misses: list = []
    return graph, replay_step_operands(graph, 17, taken, misses), taken, [str(miss) for _, miss in misses]


def _read_operands(made) -> list[tuple[str, int]]:
    """(the reading node's op, the input index) of each step operand made to read a replayed Gather."""
    assert all(gather.op == "Gather" for gather in made.gathers)
    reads = [(node.op, index) for node, index, _ in made.reads]
    assert [node.inputs[index] for node, index, _ in made.reads] == [gather.outputs[0] for gather in made.gathers]
    return reads


@pytest.mark.parametrize("state_first", [False, True])
@pytest.mark.parametrize("drive_first", [False, True])
def test_the_decay_and_the_drive_are_read_on_either_side(state_first, drive_first):
    """Mul(h, a_t) or Mul(a_t, h), Add(Mul, b_t) or Add(b_t, Mul): the decays are the Muls' other inputs, the drives
    the Adds' other inputs, every step's read from one Gather of its own; restore puts back the graph op for op."""
    model = _discretised_in_loop_model(state_first=state_first, drive_first=drive_first)
    graph, done, taken, notes = _replayed(model)
    assert len(done) == 2 and notes == []
    assert _read_operands(done[0]) == [("Mul", 1 if state_first else 0)] * L
    assert _read_operands(done[1]) == [("Add", 0 if drive_first else 1)] * L
    assert [all(node.name.startswith(f"reroll_scans/step_operands{index}/") for node in made.made)
            for index, made in enumerate(done)] == [True, True]
    assert {"reroll_scans/step_operands0", "reroll_scans/step_operands1"} <= taken   # the prefixes, taken
    for made in done[::-1]:
        restore(graph, made)
    graph.cleanup()
    assert op_histogram(gs.export_onnx(graph)) == op_histogram(model)


def test_a_loop_with_its_operands_on_the_other_sides_rerolls_exactly():
    model = _discretised_in_loop_model(state_first=True, drive_first=True)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.stats == {"rerolled": 1, "steps": L, "rejected": 0, "step_operands_replayed": 2}
    feeds = _feeds()
    assert rel_l2(run(out, feeds)[0], _scan(feeds)) <= 1e-6


def test_decays_read_as_steps_of_a_tensor_leave_the_drives_replayed():
    """a_t = Gather(a, t, 1) is a step of a tensor, as a loop over precomputed decays reads it: only the drives are
    replayed (the decays were looked at first and must not end the search), and the loop re-rolls exactly."""
    model = _discretised_in_loop_model(decays_read=True)
    _, done, _, notes = _replayed(model)
    assert [_read_operands(made) for made in done] == [[("Add", 1)] * L] and notes == []
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.stats == {"rerolled": 1, "steps": L, "rejected": 0, "step_operands_replayed": 1}
    feeds = {**_feeds(), "a": np.random.default_rng(7).uniform(0.2, 0.9, (B, L, D)).astype(np.float32)}
    assert rel_l2(run(out, feeds)[0], run(model, feeds)[0]) <= 1e-6


def test_every_loop_of_a_graph_is_replayed_under_names_of_its_own():
    """Two loops one after the other: four replays, named step_operands0 .. 3, each prefix taken (a model's own names
    can not collide with the next pass's)."""
    _, done, taken, _ = _replayed(_discretised_in_loop_model(loops=2))
    assert len(done) == 4
    for index, made in enumerate(done):
        assert all(node.name.startswith(f"reroll_scans/step_operands{index}/") for node in made.made)
    names = [node.name for made in done for node in made.made]
    assert len(names) == len(set(names)) and {f"reroll_scans/step_operands{index}" for index in range(4)} <= taken


def test_a_two_step_loop_is_replayed():
    _, done, _, _ = _replayed(_discretised_in_loop_model(steps=2))
    assert [len(made.gathers) for made in done] == [2, 2]


def test_decays_of_no_one_subgraph_leave_the_drives_replayed_and_are_named_from_four_steps():
    """Step 1's decay a Sigmoid: the decays match no one subgraph (named in the notes from MIN_EXPLAINED_STEPS = 4
    steps), and the drives are still replayed."""
    _, done, _, notes = _replayed(_discretised_in_loop_model(odd_step=1, steps=4))
    assert [_read_operands(made) for made in done] == [[("Add", 1)] * 4]
    assert notes == ["chain at 'h0' (4 steps) not re-rolled: its decays are computed at every step, but not by one "
                     "subgraph (step 1 departs from step 0 at Sigmoid '' (step 0 has Exp '' there))"]


def test_operands_that_cannot_be_replayed_are_named_and_leave_nothing_behind():
    """Every decay Hardmax(delta_t * A): one subgraph, but Hardmax has no replay rule: the nodes made for it are
    removed, the notes say why, and the drives are replayed still."""
    model = _discretised_in_loop_model(odd_step="every", odd_op="Hardmax")
    graph, done, _, notes = _replayed(model)
    assert [_read_operands(made) for made in done] == [[("Add", 1)] * L]
    assert notes == ["chain at 'h0' (5 steps) not re-rolled: its decays are computed at every step and cannot be "
                     "replayed over all of them (Hardmax '' has no rule for replaying it over all steps)"]
    restore(graph, done[0])
    graph.cleanup()
    assert op_histogram(gs.export_onnx(graph)) == op_histogram(model)


@pytest.mark.parametrize("kwargs, replayed, notes", [
    (dict(decays_read="initializer"), ["drives"], []),     # a_t = Identity(A): no producer past the no-op
    (dict(decays_read="constant-node"), ["drives"], []),   # a Constant node per step: constants, not computed
    (dict(drive_first=True, drive_op="Sub"), ["decays", "drives"], []),   # Add(Sub(d, x), Mul(a, h)): the Mul second
    (dict(state_op="Div"), [], []),                        # Add(Div(a, h), b): no step of a recurrence
    (dict(odd_drive_step=2), ["decays"], ["chain at 'h0' (5 steps) not re-rolled: its drives are computed at every "
                                          "step, but not by one subgraph (step 2 departs from step 0 at Div '' (step 0 "
                                          "has Mul '' there))"]),
])
def test_only_operands_computed_per_step_by_one_subgraph_are_replayed(kwargs, replayed, notes):
    model = _discretised_in_loop_model(**kwargs)
    _, done, _, made_notes = _replayed(model)
    assert [{"Mul": "decays", "Add": "drives"}[_read_operands(made)[0][0]] for made in done] == replayed
    assert made_notes == notes


def test_adds_of_graph_inputs_beside_a_loop_change_nothing():
    """An Add whose operands no node makes (graph inputs) is no step: looked at and passed over."""
    model = _discretised_in_loop_model()
    model.graph.node.append(helper.make_node("Add", ["delta", "x"], ["beside"]))
    model.graph.output.append(helper.make_tensor_value_info("beside", TensorProto.FLOAT, [B, L, D]))
    _, done, _, _ = _replayed(model)
    assert len(done) == 2

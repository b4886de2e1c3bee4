"""Masked steps, `h = torch.where(m[:, t, None, None], a_t * h + b_t, h)` (padding masks): passes/masked_steps.py reads
each as the linear step where(m_t, a_t, 1) * h + where(m_t, b_t, 0) (patterns/masked_step.py), so reroll-scans re-rolls
the chain in every scan form, and puts the Wheres back where no scan took them. Before s33 (main 2c6a17f) every chain
here was '0 scans found', with no reason."""
from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto, helper

from passes.reroll_scans import RerollScans
from passes.scan_forms import SCAN_FORMS
from scan_testing import apply_pass, op_histogram, rel_l2, run
from tools.synthetic_scans import ScanSpec, numpy_scan, scan_inputs, unrolled_scan_model

MASKS = [("then", "unsqueeze"), ("else", "unsqueeze"), ("then", "reshape"), ("else", "reshape")]
REROLLED = {"rerolled": 1, "steps": 8, "rejected": 0, "step_operands_replayed": 2, "masked_steps": 8}


@pytest.mark.parametrize("form", sorted(SCAN_FORMS))
@pytest.mark.parametrize("mask, spelling", MASKS)
def test_a_masked_chain_rerolls_exactly_in_every_form(form, mask, spelling):
    # 8 masked steps (about a third masked off), the mask a bool input (B, L) broadcast as TorchScript traces
    # m[:, t, None, None] (two Unsqueezes) or as m[:, t].view(B, 1, 1); "else": torch.where(~m[..], h, a h + b). One
    # scan; the per-step Wheres, Nots and mask reads all gone (2 Wheres left: the decays' and drives' over all steps,
    # the log-space forms' decay log Where(c, log a, 0) in place of the decays' own); equal to the float64 scan.
    spec = ScanSpec(length=8, state=2, mask=mask, mask_spelling=spelling)
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    assert result.stats == REROLLED and result.notes == []
    histogram = op_histogram(out)
    assert (histogram["Where"], histogram.get("Not", 0)) == (2, 2 if mask == "else" else 0)
    # (Exp_1, a = Exp(log_a), is read by the forms that take a itself)
    assert {node.name for node in out.graph.node if not node.name.startswith("reroll_scans/")} <= {"Exp_1"}
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("form", sorted(SCAN_FORMS))
@pytest.mark.parametrize("mask, direction", [("then", "forward"), ("else", "backward")])
def test_a_mask_fixed_at_export_one_constant_per_step_is_stacked_into_one(form, mask, direction):
    # lengths fixed at export: TorchScript folds mask[:, t, None, None] to one bool Constant per step, which no one
    # per-step subgraph reads ("step 1 reads .. where step 0 reads .."); the constants are stacked along a new axis
    # at each step's position (a backward chain's too) and read as Gather(stacked, t, 0): one scan, every form
    spec = ScanSpec(length=8, state=2, mask=mask, mask_spelling="constant", direction=direction)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=4))
    assert result.stats == REROLLED and result.notes == []
    assert op_histogram(out)["Where"] == 2
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("mask, spelling", MASKS)
def test_a_masked_chain_costs_its_mask_over_all_steps_beside_the_plain_chains_graph(mask, spelling):
    # parallel form: the masked chain's graph is the plain chain's plus, for the decays and for the drives each, the
    # mask replayed over all steps (its broadcast: 2 Unsqueezes or a Reshape; a Not for "else"), a Transpose of the mask
    # and one of a or b (step axis first), and one Where
    spec = ScanSpec(length=8, state=2, mask=mask, mask_spelling=spelling)
    out, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="parallel", chunk=4))
    plain, _ = apply_pass(unrolled_scan_model(dataclasses.replace(spec, mask="")), RerollScans(form="parallel", chunk=4))
    change = Counter(op_histogram(out))
    change.subtract(op_histogram(plain))
    broadcast = {"Unsqueeze": 4} if spelling == "unsqueeze" else {"Reshape": 2}
    assert {op: n for op, n in change.items() if n} == {"Where": 2, "Transpose": 4, **broadcast,
                                                         **({"Not": 2} if mask == "else" else {})}


@pytest.mark.parametrize("form", ["parallel", "chunk24"])
@pytest.mark.parametrize("kwargs, part_of_axis", [
    (dict(direction="backward"), False), (dict(initial="input", mask="else"), False),
    (dict(readout="conv"), False), (dict(first=1, axis_size=9), True), (dict(readout="states"), False)])
def test_masked_chains_backward_from_an_initial_state_over_part_of_an_axis_and_other_readouts(form, kwargs,
                                                                                              part_of_axis):
    spec = ScanSpec(**{"length": 8, "state": 2, "mask": "then", **kwargs})
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=4))
    assert result.stats == {**REROLLED, **({"part_of_axis": 1} if part_of_axis else {})}
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("mask, anchor, where, add", [("then", "Where_15", "Where_33", "Add_26"),
                                                      ("else", "Where_16", "Where_35", "Add_27")])
def test_a_where_that_keeps_another_tensor_is_named_and_the_graph_left_as_it_was(mask, anchor, where, add):
    # torch.where(m, a h + b, h0): where the mask is off the state becomes h0, no linear step of h: the chain stays
    # unrolled and the note names the first such Where (the first step, from the zeros, reads no Where: it is the
    # chain's first of 8)
    spec = ScanSpec(length=8, state=2, mask=mask, mask_kept="other")
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 0}
    assert result.notes == ["0 scans found", (
        f"chain at '{anchor}' (8 steps) not re-rolled: Where '{where}' is no masked step: it keeps 'h_other' where its "
        f"mask is off, not the state '{anchor}' its step (Add '{add}') reads (a masked step keeps its state: "
        "torch.where(m, a * h + b, h))")]
    assert op_histogram(out) == op_histogram(model)
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


def test_names_in_the_reason_are_escaped():
    spec = ScanSpec(length=8, state=2, mask="then", mask_kept="other")
    model = unrolled_scan_model(spec)
    for node in model.graph.node:
        if node.op_type == "Where":
            node.name = node.name.replace("Where_", "where\n\x1b[31m")
    _, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.notes[1].startswith(
        "chain at 'where\\n\\x1b[31m15' (8 steps) not re-rolled: Where 'where\\n\\x1b[31m33' is no masked step: ")


def test_a_masked_chain_left_for_another_reason_gets_its_wheres_back():
    # the readouts of steps 4 and 5 swapped in the stack: the masked chain is found, but not re-rolled (the
    # recurrence's reason, at the first Where); the graph is the input's, node for node (in another order: matching
    # sorts a graph whose nodes it appended out of order), and gives the input's values
    spec = ScanSpec(length=8, state=2, mask="then", near_miss="concat_permuted")
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert result.notes[1].startswith("chain at 'Where_16' (8 steps) not re-rolled: Concat 'stack' stacks 8 tensors")
    assert op_histogram(out) == op_histogram(model)
    assert sorted(node.name for node in out.graph.node) == sorted(node.name for node in model.graph.node)
    feeds = scan_inputs(spec)
    assert np.array_equal(run(out, feeds)[0], run(model, feeds)[0])


def test_a_masked_step_whose_step_is_read_elsewhere_is_named_and_breaks_the_chain_there():
    # step 4's unmasked a h + b is also a graph output: that Where is no masked step (rewriting it would drop the
    # output's value), named; steps 5..7 re-roll on their own (a run of the stack), exactly
    spec = ScanSpec(length=8, state=2, mask="then")
    model = unrolled_scan_model(spec)
    wheres = [node for node in model.graph.node if node.op_type == "Where"]
    add = next(node for node in model.graph.node if node.output[0] == wheres[4].input[1])
    model.graph.node.append(helper.make_node("Identity", [add.output[0]], ["unmasked"], name="unmasked_copy"))
    model.graph.output.append(helper.make_tensor_value_info("unmasked", TensorProto.FLOAT, [1, 3, 2]))
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 3, "rejected": 0, "part_of_axis": 1, "step_operands_replayed": 2,
                            "masked_steps": 3}
    assert result.notes[0] == (
        "chain at 'Where_16' (8 steps) not re-rolled: Where 'Where_88' is a masked step whose step (Add 'Add_81') is "
        "also read by Identity 'unmasked_copy'; a masked step's step is read by its Where alone")
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


def test_a_graph_without_masked_steps_is_not_touched():
    # Wheres that are no step (the dynamo exporter's softplus guard kind) beside a plain chain: nothing rewritten
    spec = ScanSpec(length=6, state=2)
    model = unrolled_scan_model(spec)
    model.graph.node.append(helper.make_node("Greater", ["b", "b"], ["g"], name="g"))
    model.graph.node.append(helper.make_node("Where", ["g", "b", "b"], ["w"], name="w"))
    model.graph.output.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 3, 6, 2]))
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 6, "rejected": 0}
    assert op_histogram(out)["Where"] == 1


# session s34 (gen22): a chain mixing masked and plain steps (the mask on some positions only). Before s34 (main
# a033d62) only its masked runs re-rolled ((3, 4, 5, 6, 7): a 5-step scan, the plain prefix left; a lone masked step
# none); now every plain step is the masked step with m = 1 and the chain is one scan.
MIXED = [(3, 4, 5, 6, 7), (0, 1, 2), (1, 3, 5, 7), (0, 1, 2, 3, 5, 6, 7)]


@pytest.mark.parametrize("masked_steps", MIXED)
@pytest.mark.parametrize("mask, spelling", [*MASKS, ("then", "constant"), ("else", "constant")])
def test_a_chain_of_masked_and_plain_steps_is_one_scan(masked_steps, mask, spelling):
    # parallel form: the graph of the same chain with every step masked, plus one Or (And for the else branch) for
    # the decays and one for the drives (cond | K_t, K true at the plain positions); masks fixed at export: the plain
    # steps' all-true (all-false) constants stacked with the others, the very graph
    spec = ScanSpec(length=8, state=2, mask=mask, mask_spelling=spelling, masked_steps=masked_steps)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form="parallel", chunk=4))
    assert result.stats == REROLLED and result.notes == []
    every, _ = apply_pass(unrolled_scan_model(dataclasses.replace(spec, masked_steps=None)),
                          RerollScans(form="parallel", chunk=4))
    change = Counter(op_histogram(out))
    change.subtract(op_histogram(every))
    assert {op: n for op, n in change.items() if n} == (
        {} if spelling == "constant" else {"Or": 2} if mask == "then" else {"And": 2})
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("form", sorted(SCAN_FORMS))
@pytest.mark.parametrize("masked_steps, direction", [((3, 4, 5, 6, 7), "forward"), ((0, 1, 2), "backward"),
                                                     ((7,), "forward"), ((0,), "forward")])
def test_mixed_chains_reroll_in_every_form_and_a_lone_masked_step_joins_its_chain(form, masked_steps, direction):
    # (7,) and (0,): one masked step after (before) 7 plain ones, its cond the one every masked step reads
    spec = ScanSpec(length=8, state=2, mask="then", masked_steps=masked_steps, direction=direction)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=4))
    assert result.stats == REROLLED and result.notes == []
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


def test_a_mixed_chain_left_for_another_reason_gets_its_plain_steps_back():
    # the readouts of steps 4 and 5 swapped: no scan; the graph is the input's, node for node, plain steps included
    spec = ScanSpec(length=8, state=2, mask="then", masked_steps=(0, 1, 2), near_miss="concat_permuted")
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert op_histogram(out) == op_histogram(model)
    assert sorted(node.name for node in out.graph.node) == sorted(node.name for node in model.graph.node)
    feeds = scan_inputs(spec)
    assert np.array_equal(run(out, feeds)[0], run(model, feeds)[0])


# session s34 (gen22): float masks, `m * (a h + b) + (1 - m) * h` ("blend") and `h + m * (a h + b - h)` ("delta"), m
# a float (B, L) input (0/1; a soft mask in [0, 1] too): the linear step with decay m a - (m - 1) and drive m b. Not
# bit-exact to the spelling (it rounds differently: the delta's h + ((a h + b) - h) at m = 1 is not a h + b), so
# measured against the float64 sequential scan of the spelling's own arithmetic. Before s34: "0 scans found", no reason.
ANY_SIGN_FORMS = ["batched-doubling", "channels-last-readout", "parallel", "parallel-strided", "strided-readout"]


@pytest.mark.parametrize("form", ANY_SIGN_FORMS)
@pytest.mark.parametrize("spelling", ["blend", "delta"])
@pytest.mark.parametrize("length", [8, 64])
def test_a_float_masked_chain_rerolls_within_its_bound(form, spelling, length):
    spec = ScanSpec(length=length, state=2, mask="then", mask_spelling=spelling)
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    assert result.stats == {**REROLLED, "steps": length, "masked_steps": length} and result.notes == []
    assert {node.op_type for node in out.graph.node if not node.name.startswith("reroll_scans/")} <= {"Exp"}
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        soft = {**feeds, "m": np.random.default_rng(seed + 10).uniform(0, 1, feeds["m"].shape).astype(np.float32)}
        for inputs in (feeds, soft):
            expected = numpy_scan(spec, inputs)
            assert rel_l2(run(out, inputs)[0], expected) <= 1e-6
            assert rel_l2(run(model, inputs)[0], expected) <= 1e-6   # (the unrolled graph's own rounding, beside it)


@pytest.mark.parametrize("form", ["batched", "chunk24", "window-doubling"])
def test_a_float_masked_chain_is_named_by_the_forms_that_sum_log_decays(form):
    # m a - (m - 1) > 0 for a > 0 and m in [0, 1], which nothing in the graph says of m: the log-space forms refuse,
    # with their reason, and the graph is the input's
    spec = ScanSpec(length=8, state=2, mask="then", mask_spelling="blend")
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert result.notes == ["0 scans found", (
        f"chain at 'Add_20' (8 steps) not re-rolled: the {form} form sums log a_i, and the decays are not known to be > "
        "0 (they are a Sub output ('reroll_scans/step_operands0/Sub_7_out'), not an Exp output or a constant > 0); the "
        "parallel and batched-doubling forms take decays of any sign (reroll-scans{form=parallel})")]
    assert op_histogram(out) == op_histogram(model)
    assert sorted(node.name for node in out.graph.node) == sorted(node.name for node in model.graph.node)


def test_a_blend_whose_kept_term_is_another_tensor_is_no_float_masked_step():
    # m * (a h + b) + (1 - m) * h0: not the state kept, not taken (the blend's two h must be one tensor)
    spec = ScanSpec(length=8, state=2, mask="then", mask_spelling="blend", mask_kept="other")
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 0}
    assert op_histogram(out) == op_histogram(model)


@pytest.mark.parametrize("form", sorted(SCAN_FORMS))
def test_a_float_mask_cast_from_bool_is_the_masked_step_in_every_form(form):
    # m_t = Cast(m[:, t, None, None], to float) of a bool mask (`mask.float()`): 0 or 1 only, so the blend is
    # torch.where(m, a h + b, h) (bit for bit, for finite values): read as Where(Cast(m_t, bool), a, 1), whose log
    # Where(.., log a, 0) the log-space forms take too
    spec = ScanSpec(length=8, state=2, mask="then", mask_spelling="blend-cast")
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=4))
    assert result.stats == REROLLED and result.notes == []
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6

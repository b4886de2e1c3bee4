"""The re-rolling pass on hand-built unrolled recurrences: every recognised form, every near-miss."""
from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from fuzz_budget import examples

from passes.base import PassContext
from passes.reroll_scans import RerollScans
from passes.scan_forms import LOG_SPACE, SCAN_FORMS
from scan_testing import apply_pass, gated_rnn_steps, op_histogram, rel_l2, run
from tools.synthetic_scans import ScanSpec, numpy_scan, scan_inputs, unrolled_scan_model

# float32 chunked scans vs a float64 sequential scan on Mamba-like decays.
REL_L2_TOL = 1e-5



def reroll_record(result):
    """reroll-scans' record in a pipeline run (unroll-loops runs before it in cpu and tpu)."""
    (record,) = [record for record in result.records if record.name == "reroll-scans"]
    return record

def test_chunk24_form_exact_ops_einsum_readout():
    spec = ScanSpec(length=7, channels=3, state=2)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(chunk=3))
    assert result.changed and result.stats == {"rerolled": 1, "steps": 7, "rejected": 0}
    # 3 chunks (3 + 3 + 1): per chunk 2 Slices of the inputs, 2 CumSum, Neg, 2 Exp, 2 Mul;
    # a carry (Slice) out of the first two chunks and an Add into the last two; one Concat, one Einsum.
    assert op_histogram(out) == {"Add": 2, "Concat": 1, "CumSum": 6, "Einsum": 1, "Exp": 6, "Mul": 6,
                                 "Neg": 3, "Slice": 8}
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_mulsum_readout_with_initial_state_and_slice_indexing():
    spec = ScanSpec(length=5, index="slice", readout="mulsum", initial="input", opset=13)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(chunk=24))
    assert result.stats["rerolled"] == 1
    # One chunk covers all 5 steps: no Slice, no Concat; the initial state enters through one Unsqueeze;
    # c (B, D, N, L) is transposed once so its step axis lines up with the states' (B, D, L, N).
    assert op_histogram(out) == {"Add": 1, "CumSum": 2, "Exp": 2, "Mul": 3, "Neg": 1, "ReduceSum": 1,
                                 "Transpose": 1, "Unsqueeze": 1}
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_decay_from_a_graph_input_is_taken_as_it_is():
    # A graph input may hold any sign: chunk24 (log space) leaves it unrolled, parallel takes a_i, no Log.
    spec = ScanSpec(length=6, decay="direct")
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(chunk=4))
    assert result.stats["rerolled"] == 0
    assert "the graph input 'a_in', not an Exp output or a constant > 0" in result.notes[-1]
    out, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="parallel", chunk=4))
    assert "Log" not in op_histogram(out)
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_decay_from_exp_reuses_its_input():
    out, _ = apply_pass(unrolled_scan_model(ScanSpec(length=6)), RerollScans(chunk=4))
    hist = op_histogram(out)
    assert "Log" not in hist and "Gather" not in hist


def test_states_stacked_without_readout():
    spec = ScanSpec(length=6, readout="states", state=3)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(chunk=4))
    assert result.stats["rerolled"] == 1
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_final_state_used_outside_the_chain_is_kept():
    spec = ScanSpec(length=6, extra_final_state_output=True)
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(chunk=4))
    assert result.stats["rerolled"] == 1
    feeds = scan_inputs(spec)
    expected = run(model, feeds)
    actual = run(out, feeds)
    assert rel_l2(actual[0], expected[0]) <= REL_L2_TOL
    assert rel_l2(actual[1], expected[1]) <= REL_L2_TOL


@pytest.mark.parametrize("readout", ["einsum", "mulsum"])
@pytest.mark.parametrize("direction, stacked", [("forward", "by_position"), ("backward", "by_position"),
                                                ("backward", "by_step")])
@pytest.mark.parametrize("form", ["chunk24", "parallel", "channels-last-readout"])
def test_states_stacked_beside_the_readout(readout, direction, stacked, form):
    # s28: `hs.append(h)` and `ys.append(y)` in one loop (a Loop's state scan output beside its readouts, written out
    # by unroll-loops): each state read by the next step, its readout and an Unsqueeze into a second Concat was
    # "read by Unsqueeze .., Einsum ..; expected one readout", 0 scans. Both stacks now come from one scan's states.
    spec = ScanSpec(length=7, state=3, batch=2, readout=readout, direction=direction, stacked=stacked, states_too=True)
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form=form, chunk=3))
    assert result.stats == {"rerolled": 1, "steps": 7, "rejected": 0}
    assert not {"stack", "states_stack"} & {node.name for node in out.graph.node}   # both step stacks superseded
    feeds = scan_inputs(spec, batch=2)
    y, states = run(out, feeds)
    assert rel_l2(y, numpy_scan(spec, feeds)) <= REL_L2_TOL
    assert rel_l2(states, numpy_scan(dataclasses.replace(spec, readout="states"), feeds)) <= REL_L2_TOL
    assert rel_l2(states, run(model, feeds)[1]) <= REL_L2_TOL


def test_states_stacked_beside_the_readout_exact_ops():
    # the states stack costs one Identity: the form's states, their step axis already the stack's
    alone, stacked = (apply_pass(unrolled_scan_model(ScanSpec(length=6, readout="mulsum", states_too=too)),
                                 RerollScans(form="parallel", chunk=6))[0] for too in (False, True))
    assert op_histogram(alone) == {"Add": 5, "Concat": 4, "Exp": 1, "Mul": 6, "ReduceSum": 1, "Reshape": 3, "Shape": 3,
                                   "Slice": 6, "Split": 2, "Transpose": 1}
    assert op_histogram(stacked) == {**op_histogram(alone), "Identity": 1}


def test_a_states_stack_missing_a_step_is_a_second_reader():
    # the stack must hold every step's state: one left out, the states' Unsqueezes are readers like any other
    model = unrolled_scan_model(ScanSpec(length=6, states_too=True))
    stack = next(node for node in model.graph.node if node.name == "states_stack")
    del stack.input[3]
    model.graph.output[1].type.tensor_type.shape.dim[2].dim_value = 5
    out, result = apply_pass(model, RerollScans(chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert op_histogram(out) == op_histogram(model)
    assert result.notes[1].startswith("chain at 'Add_8' (6 steps) not re-rolled: intermediate state 'Add_8' at step 0 "
                                      "is read by Unsqueeze 'Unsqueeze_10', Einsum 'Einsum_13'; expected one readout")


@pytest.mark.parametrize("opset", [12, 13, 17, 18])
@pytest.mark.parametrize("index", ["gather", "slice", "guarded_slice", "split"])
def test_every_opset_and_index_form(opset, index):
    spec = ScanSpec(length=9, index=index, opset=opset, readout="mulsum" if opset % 2 else "einsum")
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(chunk=4))
    assert result.stats["rerolled"] == 1
    assert {"Gather", "Squeeze", "If", "Shape", "Equal", "Split"}.isdisjoint(op_histogram(out))
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_dynamic_batch_stays_symbolic():
    spec = ScanSpec(length=8, batch=None, initial="input")
    out, _ = apply_pass(unrolled_scan_model(spec), RerollScans(chunk=3))
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (1, 3):
        feeds = scan_inputs(spec, batch=batch)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


@pytest.mark.parametrize("near_miss, reason", [
    ("skip_index", "decay a_i index jumps to 5 at step 4 (expected 4)"),
    ("repeat_index", "decay a_i index 3 is repeated at step 4"),
    ("state_used_elsewhere", "intermediate state 'Add_19' at step 1 is read by Relu 'Relu_20', Einsum"),
    ("two_decays", "decay a_i at step 4 comes from"),
])
def test_near_misses_are_left_unchanged_with_a_reason(near_miss, reason):
    model = unrolled_scan_model(ScanSpec(length=9, near_miss=near_miss))
    out, result = apply_pass(model, RerollScans(chunk=4))
    assert not result.changed
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert op_histogram(out) == op_histogram(model)
    assert reason in result.notes[1]


# (first position, steps, positions the axis holds, direction): a prefix (steps 0..7 of 10), a loop from the second
# position (1..8 of 9), a backward chain over a suffix (9..2 of 10) and one over a middle (6..1 of 8).
WINDOWS = [(0, 8, 10, "forward"), (1, 8, 9, "forward"), (2, 8, 10, "backward"), (1, 6, 8, "backward")]


@pytest.mark.parametrize("form", sorted(SCAN_FORMS))
@pytest.mark.parametrize("first, length, positions, direction", WINDOWS)
@pytest.mark.parametrize("readout", ["einsum", "conv"])
def test_steps_covering_part_of_an_axis_are_sliced_out_and_rerolled(form, first, length, positions, direction, readout):
    # s30: every form scans whole axes, so a chain over part of its axis was left unrolled, "decay a_i takes steps
    # 0..7 of 'Exp_1' axis 2, which holds 10 (forms scan whole axes)" (s15-adv found it re-rolled whole: 10 outputs
    # or a Reshape that failed), and a chain from position 1 was no chain ("index jumps to 1 at step 0"). Now each
    # operand is sliced to the chain's positions first: the form's graph is the whole-axis chain's plus one Slice per
    # operand (a, b, c; a per-step readout subgraph, "conv", replays its c_i from the chain's first position), and
    # equals the float64 sequential scan over those positions.
    spec = ScanSpec(length=length, first=first, axis_size=positions, direction=direction, state=2, readout=readout)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 1, "steps": length, "rejected": 0, "part_of_axis": 1}
    whole, _ = apply_pass(unrolled_scan_model(dataclasses.replace(spec, first=0, axis_size=None)),
                          RerollScans(form=form, chunk=4))
    assert op_histogram(out) == dict(Counter(op_histogram(whole)) + Counter({"Slice": 3}))
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("form", sorted(SCAN_FORMS))
@pytest.mark.parametrize("first, direction", [(1, "forward"), (0, "backward")])
def test_a_chain_whose_first_state_is_a_drive_inside_its_axis_rerolls(form, first, direction):
    # `h = b[:, p]` then the loop over the next positions (the first step missing: x = b there), inside an axis of 8:
    # positions 1..6 (before s30 the missing step was taken only at position 0: "index jumps to 2 at step 0"), and
    # backward 5..0 (it was taken only at the axis' last position: a 5-step chain from 4 and its stray b_5, left)
    spec = ScanSpec(length=6, first=first, axis_size=8, initial="drive", direction=direction, state=2)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 6, "rejected": 0, "part_of_axis": 1}
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("readout", ["mulsum", "states"])
@pytest.mark.parametrize("index", ["gather", "slice"])
def test_part_of_an_axis_with_other_readouts_and_step_spellings(readout, index):
    spec = ScanSpec(length=7, first=2, axis_size=10, readout=readout, index=index)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 7, "rejected": 0, "part_of_axis": 1}
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("first, axis_size, direction, positions", [
    (1, 9, "forward", ", positions 1..8"), (2, 10, "backward", ", positions 2..9"), (0, None, "forward", "")])
def test_the_log_names_the_positions_of_a_chain_over_part_of_its_axis(first, axis_size, direction, positions):
    # mut31: the positions logged are the chain's first .. last (8 steps), named only where its operands were sliced
    spec = ScanSpec(length=8, first=first, axis_size=axis_size, state=2, direction=direction)
    messages: list[str] = []
    RerollScans(chunk=4).run(gs.import_onnx(unrolled_scan_model(spec)), PassContext(opset=17, log=messages.append))
    assert messages == [f"re-rolled scan 0: 8 steps from 'Add_8' (einsum readout, chunk24 form{positions})"]


@pytest.mark.parametrize("form", ["chunk24", "parallel", "window-doubling", "batched", "batched-doubling"])
def test_steps_covering_part_of_an_axis_no_shape_declares_are_sliced_out(form):
    # The same chain in a graph that declares no inner shapes (what unroll-loops writes: a nested loop's inner trip
    # L - k over a's L positions): the matcher sees no size, the inferred one (10 positions for 8 steps) slices the
    # operands. s29 left it unrolled ("which holds 10 (forms scan whole axes)"); before s29 every form re-rolled the
    # whole axis, a Reshape ONNX Runtime refused (verification exit 3).
    spec = ScanSpec(length=8, axis_size=10)
    model = unrolled_scan_model(spec)
    # each input reaches the chain through a Mul by 1 (no size the matcher reads through), not as the graph input
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(1, np.float32), "one"))
    for value in model.graph.input:
        model.graph.node.insert(0, onnx.helper.make_node("Mul", [value.name + "_raw", "one"], [value.name]))
        value.name += "_raw"
    del model.graph.value_info[:]
    graph = gs.import_onnx(model)
    result = RerollScans(form=form, chunk=4).run(graph, PassContext(opset=17))
    out = gs.export_onnx(graph)
    assert result.stats == {"rerolled": 1, "steps": 8, "rejected": 0, "part_of_axis": 1}
    assert op_histogram(out)["Slice"] >= 3
    feeds = {name + "_raw": value for name, value in scan_inputs(spec).items()}
    assert rel_l2(run(out, feeds)[0], run(model, feeds)[0]) <= 1e-6


# (first position, decay / drive / coefficient offsets, direction, readout): `h = a[t + 1] * h + b[t]` (decays one
# ahead of the drives), `a[t] * h + b[t - 1]` over a loop from 1, the first backward, `c[t + 1]` in the readout, and a
# per-step readout subgraph (grouped Conv) whose c_i are read at the decays' positions, not the drives'.
OFFSETS = [(0, (1, 0, 0), "forward", "einsum"), (1, (0, -1, 0), "forward", "einsum"),
           (0, (1, 0, 0), "backward", "einsum"), (0, (0, 0, 1), "forward", "mulsum"),
           (1, (0, -1, 0), "forward", "conv")]


@pytest.mark.parametrize("form", sorted(SCAN_FORMS))
@pytest.mark.parametrize("first, offsets, direction, readout", OFFSETS)
def test_operands_read_at_different_offsets_within_a_step_are_each_sliced_to_their_own_positions(
        form, first, offsets, direction, readout):
    # s31: one frame for all operands, so a chain whose decays are read one position ahead of its drives was no chain:
    # "decay a_i index jumps to 1 at step 0 (expected 0)" (c_i: "readout coefficient c_i index jumps to 1 at step 0").
    # Now each operand's positions are its own consecutive run, each sliced to it: the form's graph is the whole-axis
    # chain's plus one Slice per operand (the axis holds 9 positions for 8 steps), equal to the float64 sequential
    # scan at rel L2 <= 1e-6.
    decay_offset, drive_offset, coeff_offset = offsets
    spec = ScanSpec(length=8, first=first, direction=direction, state=2, readout=readout, decay_offset=decay_offset,
                    drive_offset=drive_offset, coeff_offset=coeff_offset)
    assert spec.positions == 9
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 8, "rejected": 0, "part_of_axis": 1}
    whole, _ = apply_pass(unrolled_scan_model(dataclasses.replace(spec, first=0, decay_offset=0, drive_offset=0,
                                                                  coeff_offset=0)), RerollScans(form=form, chunk=4))
    assert op_histogram(out) == dict(Counter(op_histogram(whole)) + Counter({"Slice": 3}))
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("offsets, positions", [
    ((1, 0, 0), ", positions decay a_i 1..8, input b_i 0..7, readout coefficient c_i 0..7"),
    ((1, 1, 1), ", positions 1..8")])
def test_the_log_names_each_operands_positions_where_they_differ(offsets, positions):
    decay_offset, drive_offset, coeff_offset = offsets
    spec = ScanSpec(length=8, state=2, decay_offset=decay_offset, drive_offset=drive_offset, coeff_offset=coeff_offset)
    messages: list[str] = []
    RerollScans(chunk=4).run(gs.import_onnx(unrolled_scan_model(spec)), PassContext(opset=17, log=messages.append))
    assert messages == [f"re-rolled scan 0: 8 steps from 'Add_8' (einsum readout, chunk24 form{positions})"]


def test_an_operand_off_its_own_run_at_one_step_is_still_named_there():
    # the decays one ahead of the drives, but step 5's decay at the drives' position: the rejection names that slice,
    # against the positions most of the decays take (1..8)
    spec = ScanSpec(length=8, state=2, decay_offset=1)
    model = unrolled_scan_model(spec)
    decay_indices = [node for node in model.graph.node if node.op_type == "Gather" and node.input[0] == "Exp_1"]
    index = next(node for node in model.graph.node if node.output[0] == decay_indices[5].input[1])
    index.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(5, np.int64)))
    out, result = apply_pass(model, RerollScans(chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert result.notes[1:] == ["chain at 'Add_8' (8 steps) not re-rolled: decay a_i index 5 is repeated at step 5"]
    assert op_histogram(out) == op_histogram(model)


@pytest.mark.parametrize("length, step, note", [
    # decays [1, 2, 2] beside drives [0, 1, 2]: two of three decays one ahead, so the last is the one named
    (3, 0, "decay a_i index 2 is repeated at step 2"),
    # decays [0, 2, 2]: most take the drives' positions, the skip named there (before s31, every case said this)
    (3, 1, "decay a_i index jumps to 2 at step 1 (expected 1)"),
    (8, 0, "decay a_i index 7 is repeated at step 7"),
    (8, 4, "decay a_i index jumps to 5 at step 4 (expected 4)"),
])
def test_a_skip_that_leaves_most_decays_one_ahead_is_named_against_their_run(length, step, note):
    # found by test_fuzz_patterns (skip_index at step 0 of 3): which run a near-miss is named against is a vote
    spec = ScanSpec(length=length, near_miss="skip_index", near_miss_step=step)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert result.notes[1:] == [f"chain at 'Add_8' ({length} steps) not re-rolled: {note}"]


def _segments(spec: ScanSpec) -> list[ScanSpec]:
    """`spec`'s chain restarted at spec.restarts, as one chain per segment over its part of the axis."""
    bounds = [0, *spec.restarts, spec.length]
    segments = []
    for index, (start, end) in enumerate(zip(bounds, bounds[1:])):
        first = start if spec.direction == "forward" else spec.length - end
        initial = spec.initial if index == 0 else {"drive": "drive", "zeros": "zeros"}[spec.restart]
        segments.append(dataclasses.replace(spec, length=end - start, first=first, axis_size=spec.length,
                                            initial=initial, restarts=()))
    return segments


@pytest.mark.parametrize("form", sorted(SCAN_FORMS))
@pytest.mark.parametrize("direction, restart, readout, states_too", [
    ("forward", "drive", "einsum", False), ("backward", "zeros", "mulsum", False), ("forward", "zeros", "conv", True)])
def test_a_chain_restarted_inside_one_stack_rerolls_as_one_scan_per_segment(form, direction, restart, readout,
                                                                               states_too):
    # s32: a state reset at a segment boundary (packed sequences; `if t == 3: h = b[t]`, or `h = zeros_like(h)` before
    # the step) leaves two chains whose readouts (and states, `hs.append(h)`) share one stacking Concat; before s32
    # neither was re-rolled ("Concat 'stack' stacks 8 tensors; expected exactly the 3 step outputs in order"). Now each
    # chain's run of the stack becomes its own tensor: each segment's form graph as it alone over its part of the axis,
    # and the one Concat kept (two where the states are stacked too; the decays' Exp, where a form reads it, is one
    # node for both), equal to the float64 sequential scan that restarts
    spec = ScanSpec(length=8, restarts=(3,), restart=restart, direction=direction, readout=readout,
                    states_too=states_too, state=2)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 2, "steps": 8, "rejected": 0, "part_of_axis": 2}
    expected = Counter({"Concat": 1 + states_too})
    for segment in _segments(spec):
        alone, alone_result = apply_pass(unrolled_scan_model(segment), RerollScans(form=form, chunk=4))
        assert alone_result.stats["rerolled"] == 1
        expected += Counter(op_histogram(alone))
    expected.subtract(n.op_type for n in out.graph.node if n.name == "Exp_1")
    assert op_histogram(out) == dict(+expected)
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        outputs = run(out, feeds)
        assert rel_l2(outputs[0], numpy_scan(spec, feeds)) <= 1e-6
        if states_too:
            assert rel_l2(outputs[1], numpy_scan(dataclasses.replace(spec, readout="states"), feeds)) <= 1e-6


@pytest.mark.parametrize("form", sorted(SCAN_FORMS))
@pytest.mark.parametrize("offsets", [dict(coeff_offset=1), dict(coeff_offset=1, direction="backward"),
                                     dict(coeff_offset=2, decay_offset=1), dict(first=1, coeff_offset=-1)])
def test_a_per_step_readout_subgraph_reads_each_stepped_tensor_at_its_own_offset(form, offsets):
    # s32: `y_t = sum(h_t * c[t + 1]) + e[t]`, a readout no named form fits (the Add of e_t), so a per-step subgraph
    # with two stepped reads at different offsets from the chain's positions. s31 tried the subgraph at the chain's,
    # the drives' and the decays' positions, one for all its reads: "Gather 'Gather_10' index is 1 at step 0 (expected
    # 0: each step must read its own position)". Now each stepped read may keep an offset of its own at every step:
    # the whole-axis chain's graph + 4 Slices (a, b to the chain's positions; c, e replayed from their own), equal to
    # the float64 sequential scan
    spec = ScanSpec(length=8, state=2, readout="mulsum-skip", **offsets)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 8, "rejected": 0, "part_of_axis": 1}
    whole, _ = apply_pass(unrolled_scan_model(ScanSpec(length=8, state=2, readout="mulsum-skip",
                                                       direction=spec.direction)), RerollScans(form=form, chunk=4))
    # (the forms that read out block by block, forward, slice c and e per block in either graph: 2 more only)
    block_by_block = form in ("channels-last-readout", "strided-readout") and spec.direction == "forward"
    assert op_histogram(out) == dict(Counter(op_histogram(whole)) + Counter({"Slice": 2 if block_by_block else 4}))
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


def test_a_per_step_readout_subgraph_off_its_own_offset_at_one_step_is_named_there():
    # c read one ahead at every step but step 5 (c[5] where c[6] is due): no one offset; the reason is s31's, at the
    # chain's positions
    spec = ScanSpec(length=8, state=2, readout="mulsum-skip", coeff_offset=1)
    model = unrolled_scan_model(spec)
    producers = {out: node for node in model.graph.node for out in node.output}
    gathers = [node for node in model.graph.node if node.op_type == "Gather" and node.input[0] == "c"]
    index = producers[gathers[5].input[1]]
    index.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(5, np.int64), index.output[0]))
    out, result = apply_pass(model, RerollScans(chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert result.notes[1:] == [
        f"chain at 'Add_8' (8 steps) not re-rolled: step 0: per-step output 'ReduceSum_13' goes to Add 'Add_16', "
        f"expected Unsqueeze (as a per-step subgraph: {gathers[0].op_type} '{gathers[0].name}' index is 1 at step 0 "
        "(expected 0: each step must read its own position))"]
    assert op_histogram(out) == op_histogram(model)


def test_a_chain_whose_run_of_a_shared_stack_is_broken_is_left_with_its_reason():
    # the readouts of steps 2 and 3 (the last of the first segment, the first of the second) swapped in the stack:
    # neither chain's step outputs are one run of it
    spec = ScanSpec(length=8, restarts=(3,), near_miss="concat_permuted", near_miss_step=2, state=2)
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 2}
    reason = "Concat 'stack' stacks 8 tensors; expected the {} step outputs among them in order, one after another"
    assert result.notes[1:] == [f"chain at '{anchor}' ({steps} steps) not re-rolled: {reason.format(steps)} (as a "
                                f"per-step subgraph: {reason.format(steps)})" for anchor, steps in [("Add_8", 3),
                                                                                                   ("Add_48", 5)]]
    assert op_histogram(out) == op_histogram(model)


def test_a_first_state_read_from_a_position_not_next_to_the_chain_is_no_missing_step():
    # mut31: `h = b[:, 7]` then steps at positions 2..6: b_7 is the state the 5-step chain starts from, not its missing
    # first step (that is only b_{p-1} forward, b_{p+1} backward); so the chain is 5 steps, and the stack of 6 readouts
    # (y_1 of b_7 first) was what left it, not an index jump at a sixth step. Since s32 a chain's step outputs may be
    # one run of a larger stack: the 5-step chain from b_7 re-rolls into the stack's last 5 places, b_7's own readout
    # kept first (the form's graph from an initial state + 3 Slices, the Concat of the two and b_7's Gather, c_1's,
    # the Einsum, its Unsqueeze and their 3 index Constants)
    spec = ScanSpec(length=6, first=1, axis_size=8, initial="drive", state=2)
    model = unrolled_scan_model(spec)
    first = next(node for node in model.graph.node if node.op_type == "Constant" and node.output[0] == "const_2")
    first.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(7, np.int64)))
    out, result = apply_pass(model, RerollScans(chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 5, "rejected": 0, "part_of_axis": 1}
    alone, _ = apply_pass(unrolled_scan_model(ScanSpec(length=5, initial="input", state=2)), RerollScans(chunk=4))
    assert op_histogram(out) == dict(Counter(op_histogram(alone)) - Counter({"Unsqueeze": 1}) + Counter(
        {"Slice": 3, "Concat": 1, "Gather": 2, "Einsum": 1, "Unsqueeze": 2, "Constant": 3}))
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], run(model, feeds)[0]) <= 1e-6


def test_a_chain_from_position_one_of_an_axis_of_no_known_size_is_sliced():
    # mut31: the step axis of 9 positions declared symbolic ("n") and no inner shapes: no size, declared or inferred,
    # so the chain's own length is taken for it; a chain from position 1 is still sliced to positions 1..8 (were it
    # re-rolled whole, its first state would be position 0's)
    spec = ScanSpec(length=8, first=1, axis_size=9, state=2)
    model = unrolled_scan_model(spec)
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value == 9:
                dim.dim_param = "n"
    del model.graph.value_info[:]
    out, result = apply_pass(model, RerollScans(chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 8, "rejected": 0, "part_of_axis": 1}
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("form", sorted(SCAN_FORMS))
@pytest.mark.parametrize("positions", [9, 8])
def test_a_chain_from_position_zero_of_an_axis_of_no_known_size_is_sliced(form, positions):
    # s31: the step axis declared symbolic ("n", 9 or 8 positions at run time), the stack too ("m"), no inner shapes:
    # a chain over positions 0..7 was taken as the whole axis, and with 9 positions the chunk24 form's Einsum refused
    # the readout at run time ("Einsum operands could not be broadcast together"). Nothing proves the axis holds 8, so
    # each operand is sliced to positions 0..7 (exact either way): the whole-axis graph + 3 Slices
    spec = ScanSpec(length=8, axis_size=positions, state=2)
    model = unrolled_scan_model(spec)
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value in (8, positions):
                dim.dim_param = "m" if value in model.graph.output else "n"
    del model.graph.value_info[:]
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 8, "rejected": 0, "part_of_axis": 1}
    whole, _ = apply_pass(unrolled_scan_model(dataclasses.replace(spec, axis_size=None)), RerollScans(form=form, chunk=4))
    assert op_histogram(out) == dict(Counter(op_histogram(whole)) + Counter({"Slice": 3}))
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


def test_graph_without_scans_reports_zero():
    model = unrolled_scan_model(ScanSpec(length=1))  # one step is not a chain
    _, result = apply_pass(model, RerollScans())
    assert not result.changed and result.notes == ["0 scans found"]


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="option 'form' must be one of batched, batched-doubling, channels-last-readout, chunk24, parallel, parallel-strided, strided-readout, window-doubling, got 'fast'"):
        RerollScans(form="fast")
    with pytest.raises(ValueError, match="option 'chunk' must be an integer >= 1, got '0'"):
        RerollScans(chunk=0)


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    form=st.sampled_from(["chunk24", "parallel", "batched", "batched-doubling", "parallel-strided", "strided-readout", "channels-last-readout",
                          "window-doubling"]),
    length=st.integers(2, 40), chunk=st.integers(1, 30), channels=st.integers(1, 4), state=st.integers(1, 4),
    batch=st.sampled_from([1, 2, None]), index=st.sampled_from(["gather", "slice"]),
    readout=st.sampled_from(["einsum", "mulsum", "states"]), initial=st.sampled_from(["zeros", "input"]),
    opset=st.sampled_from([12, 13, 17, 18]), one_chunk_up_to=st.sampled_from([0, 8, 64]),
)
def test_property_rerolled_graph_equals_numpy_scan(form, length, chunk, channels, state, batch, index, readout, initial, opset,
                                                    one_chunk_up_to):
    spec = ScanSpec(length=length, channels=channels, state=state, batch=batch, index=index,
                    readout=readout, initial=initial, opset=opset)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=chunk,
                                                                    one_chunk_up_to=one_chunk_up_to))
    assert result.stats["rerolled"] == 1 and result.stats["steps"] == length
    hist = op_histogram(out)
    chunks = -(-length // min(chunk, length))
    if form == "chunk24":
        assert hist.get("CumSum", 0) == 2 * chunks
    elif form == "batched":  # every chunk at once: two CumSums however many chunks
        assert hist["CumSum"] == 2
    else:  # only Mul/Add sweeps or MatMul shifts and doubling scans: no CumSum at all
        assert "CumSum" not in hist
    feeds = scan_inputs(spec, seed=length * 31 + chunk, batch=batch or 2)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


@pytest.mark.parametrize("form", ["chunk24", "parallel", "batched", "batched-doubling", "parallel-strided", "strided-readout", "channels-last-readout",
                                  "window-doubling"])
@pytest.mark.parametrize("index", ["gather", "slice"])
@pytest.mark.parametrize("initial", ["zeros", "input"])
def test_forms_agree_with_numpy(form, index, initial):
    spec = ScanSpec(length=50, channels=4, state=3, index=index, initial=initial)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=8))
    assert result.stats["rerolled"] == 1
    feeds = scan_inputs(spec, batch=1)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


@pytest.mark.parametrize("form", ["parallel", "batched", "batched-doubling"])
def test_all_at_once_forms_node_count_does_not_grow_with_length(form):
    counts = []
    for length in (64, 256, 1024):
        out, _ = apply_pass(unrolled_scan_model(ScanSpec(length=length, channels=2, state=1)),
                            RerollScans(form=form, chunk=16))
        counts.append(len(out.graph.node))
    # Only the doubling rounds across chunks grow, with log2(L / chunk): 2 more rounds per 4x L.
    assert counts[1] - counts[0] == counts[2] - counts[1] <= 16


def test_batched_form_exact_ops():
    """L = 10, chunk 4: Q = 2 (the largest divisor of L up to 4), 5 chunks at once, no padding."""
    spec = ScanSpec(length=10, channels=3, state=2)
    out, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4))
    # 2 CumSums over Q, exponents centred on half the chunk's log-decay sum (ReduceSum, Mul, Sub);
    # Exp of S - m, m - S and m; per chunk its decay (lift * lift) and last state from ReduceSums.
    # The carry: chunk ends and decays shifted by one chunk, then 3 doubling rounds (shifts 1, 2, 4:
    # inputs every round, decays in the first two), each shift a MatMul by a shifted identity (+ Add
    # of the fill 1 for decays). The chunk axis is moved last for the carry and back (3 Transposes,
    # N = 2). No Slice but the shape plumbing (3 Shape, 6 Slice, 3 Concat), which folds away.
    assert op_histogram(out) == {"Add": 7, "Concat": 3, "CumSum": 2, "Einsum": 1, "Exp": 3, "MatMul": 7, "Mul": 12,
                                 "Neg": 1, "ReduceSum": 2, "Reshape": 3, "Shape": 3, "Slice": 6, "Sub": 1,
                                 "Transpose": 3}
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


@pytest.mark.parametrize("form", ["batched", "parallel"])
def test_form_pads_when_no_divisor_fits(form):
    """L = 11 is prime: chunk 4 is kept and L padded to 12 (2 Pads in, 1 Slice out), 3 chunks."""
    spec = ScanSpec(length=11, channels=3, state=1)
    padded, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=4))
    exact, _ = apply_pass(unrolled_scan_model(ScanSpec(length=12, channels=3, state=1)),
                          RerollScans(form=form, chunk=4))
    difference = Counter(op_histogram(padded))
    difference.subtract(op_histogram(exact))
    assert +difference == {"Pad": 2, "Slice": 1}
    feeds = scan_inputs(spec)
    assert rel_l2(run(padded, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_parallel_form_takes_a_dividing_chunk():
    """L = 196 (VMamba-T stage 2) with chunk 8: Q = 7 divides it, so no Pad of the inputs and no Slice
    of the padding at the end (it was Q = 8, L padded to 200). Without a divisor it pads (above)."""
    exact_spec = ScanSpec(length=196, channels=3, state=1)
    out, _ = apply_pass(unrolled_scan_model(exact_spec), RerollScans(form="parallel", chunk=8))
    q7, _ = apply_pass(unrolled_scan_model(exact_spec), RerollScans(form="parallel", chunk=7))
    exact_hist = op_histogram(out)
    assert exact_hist == op_histogram(q7)
    # 28 chunks of 7: one Split on the Q axis per input (not 7 Slices each, no Transpose of Q to the
    # front: ORT's transpose optimizer pushed it into every block), one Concat back; the doubling
    # scan's 5 rounds shift states 5 times and decays 4 times (Slice + Pad each), the carry in once
    # more: 10 Pads and 10 Slices, plus 6 Slices of the shape plumbing (split and merge shapes from
    # Shape, folded away on static shapes).
    assert "Transpose" not in exact_hist and exact_hist["Split"] == 2
    assert exact_hist["Pad"] == 10 and exact_hist["Slice"] == 16
    # Sweep 1: 6 Mul + 6 Add for the chunk ends, 6 Mul for the decay products; doubling: 5 + 4 Mul,
    # 5 Add; sweep 2: 7 Mul + 7 Add.
    assert exact_hist["Mul"] == 28 and exact_hist["Add"] == 18
    feeds = scan_inputs(exact_spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(exact_spec, feeds)) <= REL_L2_TOL


def test_parallel_form_nests_the_carry_over_many_chunks():
    """L = 576, chunk 8: 72 chunks, more than NESTED_ABOVE (64), so the carry across them is the
    parallel form again (72 chunk-level steps in 9 chunks of 8), not a doubling scan of 7 rounds.
    Exact, and stable under decays that overflow chunk24."""
    spec = ScanSpec(length=576, channels=3, state=1)
    out, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="parallel", chunk=8))
    hist = op_histogram(out)
    # Two Splits and one Concat per level; the doubling over 9 chunks: 4 rounds (4 state and 3 decay
    # shifts) and one carry in per level: 9 Pads (a doubling over 72 chunks: 7 rounds, 14 Pads).
    assert hist["Split"] == 4 and hist["Pad"] == 9 and "Transpose" not in hist
    # Level 1: 7 + 7 Mul, 7 Add (sweep 1), 8 Mul + 8 Add (sweep 2); level 2 the same; doubling 4 + 3 Mul, 4 Add.
    assert hist["Mul"] == 51 and hist["Add"] == 34
    for decay_scale in (1.0, 60.0):
        feeds = scan_inputs(spec, decay_scale=decay_scale)
        result = run(out, feeds)[0]
        assert np.all(np.isfinite(result))
        assert rel_l2(result, numpy_scan(spec, feeds)) <= REL_L2_TOL


@pytest.mark.parametrize("length, chunk", [(100, 1), (129, 2)])
def test_parallel_form_with_one_step_chunks_over_many_chunks_does_not_nest(length, chunk):
    """Q = 1 (chunk 1, or chunk 2 on an odd length) over more than NESTED_ABOVE chunks: one level
    down was this same scan again, without end (RecursionError, exit 1). The carry is a doubling scan."""
    spec = ScanSpec(length=length, channels=2, state=1)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form="parallel", chunk=chunk))
    assert result.stats["rerolled"] == 1 and "Split" not in op_histogram(out)
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_stress_decays_chunk24_overflows_parallel_stays_exact():
    """|A| * sum(dt) over a chunk far above 87: exp(-cumsum) overflows float32 in chunk24."""
    spec = ScanSpec(length=96, channels=4, state=2)
    feeds = scan_inputs(spec, decay_scale=60.0)   # log a down to -12 per step: ~-290 per 24-step chunk
    expected = numpy_scan(spec, feeds)
    chunk24, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="chunk24", chunk=24))
    parallel, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="parallel", chunk=24))
    with np.errstate(all="ignore"):
        chunk24_out = run(chunk24, feeds)[0]
    assert not np.all(np.isfinite(chunk24_out)) or rel_l2(chunk24_out, expected) > 1e-2
    parallel_out = run(parallel, feeds)[0]
    assert np.all(np.isfinite(parallel_out))
    assert rel_l2(parallel_out, expected) <= REL_L2_TOL


def test_stress_decays_batched_centring_doubles_chunk24_range():
    """log a ~ -6 per step: chunk sums of ~70-100 at 12 steps overflow chunk24's exp(-S) (limit ~87);
    batched centres the exponents (limit ~174) and stays exact up to 16 steps, not at 24."""
    spec = ScanSpec(length=96, channels=4, state=2)
    feeds = scan_inputs(spec, decay_scale=60.0)
    expected = numpy_scan(spec, feeds)
    outputs = {}
    for form, chunk in (("chunk24", 12), ("batched", 12), ("batched", 16), ("batched", 24)):
        model, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=chunk))
        with np.errstate(all="ignore"):
            outputs[form, chunk] = run(model, feeds)[0]
    assert not np.all(np.isfinite(outputs["chunk24", 12]))
    assert rel_l2(outputs["batched", 12], expected) <= REL_L2_TOL
    assert rel_l2(outputs["batched", 16], expected) <= REL_L2_TOL
    assert not np.all(np.isfinite(outputs["batched", 24]))


def test_batched_doubling_form_exact_ops():
    """L = 10, chunk 4: Q = 2, 5 chunks at once, as in batched, but no CumSum and one Exp (log a -> a)."""
    spec = ScanSpec(length=10, channels=3, state=2)
    out, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched-doubling", chunk=4))
    # Q moved last (decays, drives) and back (states): 3 Transposes. In-chunk doubling, 1 round (shift 1):
    # states and decay windows shifted along Q by x @ (a shifted identity) (+ Add of the fill 1 for
    # decays): 2 MatMul, 2 Mul, 2 Add (+1 Add). Chunk decay and end: step Q - 1 by 2 MatMuls with a
    # one-hot column. The carry as in batched (chunk axis moved last and back: 3 Transposes; 1 + 1 + 3
    # + 2 MatMuls, 2 fill Adds, 5 Mul, 4 Add), then states = local + growth * carry.
    assert op_histogram(out) == {"Add": 9, "Concat": 3, "Einsum": 1, "Exp": 1, "MatMul": 11, "Mul": 8, "Reshape": 3,
                                 "Shape": 3, "Slice": 6, "Transpose": 6}
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


@pytest.mark.parametrize("chunk", [8, 32, 96])
def test_stress_decays_batched_doubling_stays_exact(chunk):
    """The decays that overflow chunk24 and batched (log a ~ -6 per step, ~-580 per 96 steps): only
    products of decays <= 1, so exact at any chunk, the whole axis in one chunk included."""
    spec = ScanSpec(length=96, channels=4, state=2)
    feeds = scan_inputs(spec, decay_scale=60.0)
    model, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched-doubling", chunk=chunk))
    assert rel_l2(run(model, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


def test_window_doubling_form_exact_ops():
    """L = 12, chunk 4: Q = 4, 3 chunks, the step axis moved last (d_state 2: 2 Transposes in, 1 out).
    In every chunk: doubling rounds with shifts 1 and 2, each a MatMul by a shifted identity, Mul by the
    window's decay product and Add; the windows a (Exp of log a) and exp(log a @ band) (MatMul, Exp);
    the growth exp(log a @ triangle). Each chunk's log decay (ReduceSum) and last state (Gather of step
    Q - 1, the step axis dropped) go one level down: 3 chunk-level steps in one chunk, rounds 1 and 2 again (no growth needed
    there). The carry in: shifted by one chunk (a MatMul by a shifted identity), Unsqueeze, then local + growth * carry.
    No Split, no Concat, no CumSum, no Pad: the 3 Concats and the 6 Slices are shape plumbing, which folds away."""
    spec = ScanSpec(length=12, channels=3, state=2)
    out, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="window-doubling", chunk=4))
    assert op_histogram(out) == {"Add": 5, "Concat": 3, "Einsum": 1, "Exp": 5, "Gather": 1, "MatMul": 8, "Mul": 5,
                                 "ReduceSum": 1, "Reshape": 3, "Shape": 3, "Slice": 6, "Transpose": 3,
                                 "Unsqueeze": 1}
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_window_doubling_nests_until_one_chunk_is_left():
    """L = 3136 (VMamba-T stage 0), chunk 8: 392 chunks of 8, then 49 of 8, then 7 chunks of 7, then one
    chunk of 7: 3 levels of Q = 8, 8, 7 with 3 rounds each and a last in-chunk scan of 3 rounds; 3 carries
    in: into 392 chunks by Slice + Pad (more than MATMUL_CARRY_UP_TO chunks), into 49 and 7 by MatMuls
    by a shifted identity. Without the unit axis (drop_unit_axes) nothing is transposed."""
    from passes.scan_forms.window_doubling import MATMUL_CARRY_UP_TO

    assert 49 <= MATMUL_CARRY_UP_TO < 392
    spec = ScanSpec(length=3136, channels=2, state=1)
    out, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="window-doubling", chunk=8, drop_unit_axes=True))
    hist = op_histogram(out)
    # Per level: 3 shift MatMuls, 2 band MatMuls, 1 growth MatMul; the last scan 3 + 2; 2 carry MatMuls.
    assert hist["MatMul"] == 3 * 6 + 5 + 2 and hist["Pad"] == 1 and hist["ReduceSum"] == 3
    assert "Transpose" not in hist and "Split" not in hist
    for decay_scale in (1.0, 60.0):
        feeds = scan_inputs(spec, decay_scale=decay_scale)
        result = run(out, feeds)[0]
        assert np.all(np.isfinite(result))
        assert rel_l2(result, numpy_scan(spec, feeds)) <= REL_L2_TOL


@pytest.mark.parametrize("one_chunk_up_to", [0, 48, 49])
def test_window_doubling_takes_a_short_scan_as_one_chunk(one_chunk_up_to):
    """L = 49 (VMamba-T stage 3), chunk 16: by default 4 chunks of 16 (padded to 64: 2 Pads) and a level
    below; with one_chunk_up_to >= 49 one chunk of 49: 6 doubling rounds (shifts 1 .. 32), each a shift
    MatMul, a Mul and an Add, the windows a (Exp) and exp(log a @ band) (5 band MatMuls, 5 Exps), no
    level below (no ReduceSum, no Gather of the chunk ends, no carry), nothing padded."""
    spec = ScanSpec(length=49, channels=2, state=1)
    out, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="window-doubling", chunk=16, drop_unit_axes=True,
                                                               one_chunk_up_to=one_chunk_up_to))
    hist = op_histogram(out)
    if one_chunk_up_to < 49:
        assert hist["Pad"] == 2 and hist["ReduceSum"] == 1 and hist["Gather"] == 1 and hist["MatMul"] == 12
    else:
        assert hist == {"Add": 6, "Einsum": 1, "Exp": 6, "MatMul": 11, "Mul": 6, "Squeeze": 2, "Unsqueeze": 1}
    for decay_scale in (1.0, 60.0):
        feeds = scan_inputs(spec, decay_scale=decay_scale)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("initial", ["zeros", "input"])
def test_window_doubling_one_chunk_with_initial_state_and_states_per_channel(initial):
    """One chunk of 50 (one_chunk_up_to 64, chunk 8): the initial state folded into the first drive,
    decays per (channel, state), a batch of 2; against the one-level-down form and numpy."""
    spec = ScanSpec(length=50, channels=4, state=3, initial=initial, batch=2)
    one, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="window-doubling", chunk=8, one_chunk_up_to=64))
    nested, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="window-doubling", chunk=8))
    assert "ReduceSum" not in op_histogram(one) and op_histogram(nested)["ReduceSum"] >= 1
    feeds = scan_inputs(spec, batch=2)
    expected = numpy_scan(spec, feeds)
    assert rel_l2(run(one, feeds)[0], expected) <= REL_L2_TOL
    assert rel_l2(run(nested, feeds)[0], expected) <= REL_L2_TOL


@pytest.mark.parametrize("chunk", [8, 32, 96])
def test_stress_decays_window_doubling_stays_exact(chunk):
    """The decays that overflow chunk24 and batched (log a ~ -6 per step): only products of decays <= 1
    (windows and growth are Exps of sums of log a <= 0), so exact at any chunk, one chunk included."""
    spec = ScanSpec(length=96, channels=4, state=2)
    feeds = scan_inputs(spec, decay_scale=60.0)
    model, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="window-doubling", chunk=chunk))
    assert rel_l2(run(model, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


@pytest.mark.parametrize("state", [1, 2])
def test_state_form_only_for_decays_per_state(state):
    """state_form applies where the decays vary along the state's last axis (d_state N > 1); with N = 1
    the recurrence keeps `form`."""
    spec = ScanSpec(length=10, channels=3, state=state)
    out, _ = apply_pass(unrolled_scan_model(spec),
                        RerollScans(form="batched", chunk=4, state_form="batched-doubling"))
    plain, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4))
    doubling, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched-doubling", chunk=4))
    assert op_histogram(plain) != op_histogram(doubling)
    assert op_histogram(out) == op_histogram(plain if state == 1 else doubling)
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


@pytest.mark.parametrize("form", ["chunk24", "parallel", "batched", "batched-doubling", "parallel-strided", "strided-readout", "channels-last-readout"])
def test_grouped_conv_readout_is_rerolled_like_mulsum(form):
    spec = ScanSpec(length=11, channels=3, state=4, batch=2, readout="conv")
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form=form, chunk=4))
    assert result.stats["rerolled"] == 1
    hist = op_histogram(out)
    # one ReduceSum for the readout (batched also sums log-decays and inputs per chunk)
    assert "Conv" not in hist and hist["ReduceSum"] == (3 if form == "batched" else 1)
    feeds = scan_inputs(spec, batch=2)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_grouped_conv_with_padding_is_a_near_miss():
    model = unrolled_scan_model(ScanSpec(length=5, batch=1, readout="conv"))
    for node in model.graph.node:
        if node.op_type == "Conv":
            node.attribute.append(onnx.helper.make_attribute("pads", [1, 1]))
    _, result = apply_pass(model, RerollScans())
    assert result.stats["rerolled"] == 0
    assert "not a grouped length-2 dot product over 3 groups" in result.notes[1]


def test_guarded_squeeze_with_dynamic_batch_is_a_step():
    """Opset 12, symbolic batch: TorchScript wraps every x[:, :, i:i+1].squeeze(2) in an If on the size."""
    spec = ScanSpec(length=7, index="guarded_slice", opset=12, batch=None, initial="input")
    model = unrolled_scan_model(spec)
    assert op_histogram(model)["If"] == 3 * 7
    out, result = apply_pass(model, RerollScans(chunk=3))
    assert result.stats["rerolled"] == 1
    assert "If" not in op_histogram(out)
    for batch in (1, 3):
        feeds = scan_inputs(spec, batch=batch)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def _first_if(model):
    return next(node for node in model.graph.node if node.op_type == "If")


def _else_branch_negates(model):
    branch = next(a.g for a in _first_if(model).attribute if a.name == "else_branch")
    branch.node[0].op_type = "Neg"


def _guard_checks_another_axis(model):
    producers = {out: node for node in model.graph.node for out in node.output}
    gather = producers[producers[_first_if(model).input[0]].input[0]]
    index = producers[gather.input[1]]
    index.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(1, dtype=np.int64), index.output[0]))


@pytest.mark.parametrize("mutate", [_else_branch_negates, _guard_checks_another_axis])
def test_if_that_is_not_a_guarded_squeeze_is_left_alone(mutate):
    # the first step's decay guard mutated: no step slice, so step 0 is no step of the chain. Before s32 that left the
    # whole chain (its 5 steps' readouts are not all of the stack's 6); since s32 the chain of steps 1..5 re-rolls from
    # x_0 as its initial state, and step 0 stays as written, its three Ifs (a_0's, b_0's and c_0's guards) with it
    spec = ScanSpec(length=6, index="guarded_slice", opset=12)
    model = unrolled_scan_model(spec)
    mutate(model)
    out, result = apply_pass(model, RerollScans(chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 5, "rejected": 0, "part_of_axis": 1}
    assert op_histogram(out)["If"] == 3 and op_histogram(model)["If"] == 18
    if mutate is _else_branch_negates:   # (the other guard's Identity branch does not run in ONNX Runtime)
        feeds = scan_inputs(spec)
        assert rel_l2(run(out, feeds)[0], run(model, feeds)[0]) <= 1e-6


def test_drop_unit_axes_runs_the_batched_form_one_rank_lower():
    """d_state 1 (VMamba): the state's size-1 axis after L is squeezed before the form and put back
    after it, so the chunked tensors are (B, D, chunks, Q), 4-D, not (B, D, chunks, Q, 1)."""
    spec = ScanSpec(length=12, channels=3, state=1)
    kept, kept_result = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4))
    lowered, result = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4, drop_unit_axes=True))
    assert result.stats == {"rerolled": 1, "steps": 12, "rejected": 0, "unit_axes_dropped": 1}
    assert "unit_axes_dropped" not in kept_result.stats
    difference = Counter(op_histogram(lowered))
    difference.subtract(op_histogram(kept))
    assert {op: n for op, n in difference.items() if n} == {"Squeeze": 2, "Unsqueeze": 1}
    cumsums = [node for node in lowered.graph.node if node.op_type == "CumSum"]
    shapes = {v.name: len(v.type.tensor_type.shape.dim)
              for v in onnx.shape_inference.infer_shapes(lowered).graph.value_info}
    assert [shapes[node.input[0]] for node in cumsums] == [4, 4]
    feeds = scan_inputs(spec)
    assert rel_l2(run(lowered, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_drop_unit_axes_leaves_a_wider_state_alone():
    spec = ScanSpec(length=12, channels=3, state=2)
    kept, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4))
    lowered, result = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4, drop_unit_axes=True))
    assert result.stats["unit_axes_dropped"] == 0
    assert op_histogram(lowered) == op_histogram(kept)


def test_state_chunk_gives_the_state_form_its_own_chunk():
    """The tpu pipeline runs VMamba's d_state 1 scans at chunk 14 and d_state > 1 ones
    (batched-doubling) at 32: state_chunk is the latter's chunk, 0 meaning `chunk`."""
    spec = ScanSpec(length=16, channels=3, state=2)
    mixed, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4,
                                                                 state_form="batched-doubling", state_chunk=8))
    own, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched-doubling", chunk=8))
    shared, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4,
                                                                  state_form="batched-doubling"))
    def matrices(model):  # the shift and one-hot matrices over Q and over the chunks
        return sorted(tuple(init.dims) for init in model.graph.initializer if len(init.dims) == 2)
    assert matrices(mixed) == matrices(own) == [(2, 2), (8, 1), (8, 8), (8, 8), (8, 8)]
    assert matrices(shared) == [(4, 1), (4, 4), (4, 4)]
    feeds = scan_inputs(spec)
    assert rel_l2(run(mixed, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_parallel_strided_chunk_sums_push_only_through_what_is_linear():
    """A chunk's sum of log a = A * (dt + bias) over Q steps is A * (sum(dt) + Q * bias): the sum may
    pass the Mul (one factor varies along L) but not the Add (the bias would be summed once, not Q
    times). Checked on a small graph against NumPy's chunk sums."""
    import onnx_graphsurgeon as gs
    import onnxruntime as ort

    from passes.graph_builder import GraphBuilder
    from passes.scan_forms.parallel_strided import _StridedSteps

    length, chunk, width = 12, 4, 3
    rng = np.random.default_rng(7)
    bias_value, a_value = rng.normal(size=width).astype(np.float32), -rng.uniform(0.5, 2, width).astype(np.float32)
    dt = gs.Variable("dt", dtype=np.float32, shape=(1, length, width))
    shifted = gs.Variable("shifted", dtype=np.float32, shape=(1, length, width))
    log_decay = gs.Variable("log_decay", dtype=np.float32, shape=(1, length, width))
    graph = gs.Graph(nodes=[gs.Node("Add", inputs=[dt, gs.Constant("bias", bias_value)], outputs=[shifted]),
                            gs.Node("Mul", inputs=[shifted, gs.Constant("a", a_value)], outputs=[log_decay])],
                     inputs=[dt], opset=17)
    shapes = {"dt": (1, length, width), "shifted": (1, length, width), "log_decay": (1, length, width)}
    steps = _StridedSteps(GraphBuilder(graph, 17, prefix="test"), axis=1, rank=3, length=length, chunk=chunk,
                          shapes=shapes)
    total = steps.sum_over_steps(log_decay)
    total.dtype = np.float32
    graph.outputs = [total]
    graph.cleanup().toposort()
    assert sorted(node.op for node in graph.nodes).count("Mul") == 1   # the Mul was pushed through, once
    session = ort.InferenceSession(gs.export_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    dt_value = rng.normal(size=(1, length, width)).astype(np.float32)
    got = session.run(None, {"dt": dt_value})[0]
    want = ((dt_value + bias_value) * a_value).reshape(1, length // chunk, chunk, width).sum(axis=2)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_dense_carry_replaces_the_doubling_rounds_up_to_its_chunk_count():
    """dense_carry=8, L = 24 at chunk 4 (d_state 1, drop_unit_axes: the tpu pipeline's shape): 6 chunks.
    The carry is one MatMul of the chunks' log-decays by a constant (6, 36) 0/1 matrix plus a (36,)
    bias (-1e4 where j >= k), Exp, then weights times chunk ends summed over j: 1 MatMul where the
    doubling scan had 7 (3 rounds), 2 Adds where it had 7. dense_carry=4 (< 6 chunks) leaves the
    doubling scan."""
    spec = ScanSpec(length=24, channels=3, state=1)
    doubling, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4, drop_unit_axes=True))
    below, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4, drop_unit_axes=True,
                                                                 dense_carry=4))
    dense, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4, drop_unit_axes=True,
                                                                 dense_carry=8))
    at_bound, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4, drop_unit_axes=True,
                                                                    dense_carry=6))
    assert op_histogram(below) == op_histogram(doubling)
    assert op_histogram(at_bound) == op_histogram(dense)   # the bound is inclusive: 6 chunks at dense_carry=6
    assert op_histogram(dense) == {"Add": 2, "Concat": 4, "CumSum": 2, "Einsum": 1, "Exp": 4, "MatMul": 1, "Mul": 8,
                                   "Neg": 1, "ReduceSum": 3, "Reshape": 4, "Shape": 4, "Slice": 7, "Squeeze": 2,
                                   "Sub": 1, "Transpose": 2, "Unsqueeze": 1}
    between = next(init for init in dense.graph.initializer if list(init.dims) == [6, 36])
    between = onnx.numpy_helper.to_array(between).reshape(6, 6, 6)   # [i, k, j]: 1 where j < i < k
    assert all(between[i, k, j] == (j < i < k) for i in range(6) for k in range(6) for j in range(6))
    feeds = scan_inputs(spec)
    assert rel_l2(run(dense, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_dense_carry_never_builds_a_matrix_beyond_max_index_table():
    """Found by s16-adv: the dense carry's 0/1 matrix has chunks^3 entries, built for any chunk count up
    to dense_carry: 'reroll-scans{form=batched,chunk=1,dense_carry=4096}' on VMamba-T's 3136-step
    scans asked for 3136^3 floats (123 GB). 170 chunks (4.9M > 2^22 entries) keep the doubling scan."""
    spec = ScanSpec(length=170, channels=1, state=1)
    options = dict(form="batched", chunk=1, drop_unit_axes=True)
    doubling, _ = apply_pass(unrolled_scan_model(spec), RerollScans(**options))
    capped, _ = apply_pass(unrolled_scan_model(spec), RerollScans(**options, dense_carry=4096))
    assert op_histogram(capped) == op_histogram(doubling)


def test_dense_carry_exact_on_stress_decays_and_not_used_with_an_initial_state():
    """Every exponent of the dense carry is a sum of log-decays <= 0: exact where batched's in-chunk
    centring still holds (log a ~ -6 per step, 12 chunks of 8). An initial state keeps the doubling."""
    spec = ScanSpec(length=96, channels=4, state=1)
    feeds = scan_inputs(spec, decay_scale=60.0)
    dense, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=8, drop_unit_axes=True,
                                                                 dense_carry=16))
    assert op_histogram(dense)["MatMul"] == 1
    assert rel_l2(run(dense, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6
    spec = ScanSpec(length=24, channels=3, state=1, initial="input")
    kept, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4, drop_unit_axes=True,
                                                                dense_carry=8))
    doubling, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4, drop_unit_axes=True))
    assert op_histogram(kept) == op_histogram(doubling)
    feeds = scan_inputs(spec)
    assert rel_l2(run(kept, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


@pytest.mark.parametrize("length, chunk, state, initial", [
    (24, 4, 1, None), (36, 4, 1, None), (40, 4, 1, "input"), (20, 4, 2, None), (4, 4, 1, "input"), (8, 4, 1, None)])
def test_carry_shifts_slices_matches_the_scan(length, chunk, state, initial):
    """carry_shifts=slices: the doubling carry of (decay, drive) pairs in the chunk layout, exact for any
    chunk count (a power of two or not: 6, 9, 10, 5, 1, 2 chunks), an initial state, d_state 2 (5-D
    tensors, the pair on the step axis before N)."""
    spec = ScanSpec(length=length, channels=3, state=state, initial=initial or "zeros")
    feeds = scan_inputs(spec)
    out, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=chunk, drop_unit_axes=True,
                                                               carry_shifts="slices"))
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_carry_shifts_slices_ops_replace_the_matmul_shifts():
    """24 steps at chunk 4 (6 chunks, 3 rounds), d_state 1: the 7 MatMuls and 3 Transposes of the MatMul
    carry are gone. Per round: the shift (2 Slices, a Mul by 0 and an Add of the identity for the head, a
    Concat), a Slice of the decays, 2 Muls and an Add to compose; before the rounds one Concat packs
    (decay, drive) and one shift moves them by a chunk; after, the carry is one Slice."""
    spec = ScanSpec(length=24, channels=3, state=1)
    matmul, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4, drop_unit_axes=True))
    slices, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=4, drop_unit_axes=True,
                                                                  carry_shifts="slices"))
    assert op_histogram(matmul) == {"Add": 7, "Concat": 3, "CumSum": 2, "Einsum": 1, "Exp": 3, "MatMul": 7, "Mul": 12,
                                    "Neg": 1, "ReduceSum": 2, "Reshape": 3, "Shape": 3, "Slice": 6, "Squeeze": 2,
                                    "Sub": 1, "Transpose": 3, "Unsqueeze": 1}
    assert op_histogram(slices) == {"Add": 1 + 1 + 2 * 3, "Concat": 3 + 1 + 4, "CumSum": 2, "Einsum": 1, "Exp": 3,
                                    "Mul": 7 + 1 + 3 * 3, "Neg": 1, "ReduceSum": 2, "Reshape": 3, "Shape": 3,
                                    "Slice": 6 + 2 + 3 * 3 + 1, "Squeeze": 2, "Sub": 1, "Unsqueeze": 1}


def test_carry_shifts_slices_exact_on_stress_decays():
    """Only products of decays <= 1 and sums of their drives: as exact as the MatMul doubling on
    decays the in-chunk centring still holds (log a ~ -6 per step, 12 chunks of 8)."""
    spec = ScanSpec(length=96, channels=4, state=1)
    feeds = scan_inputs(spec, decay_scale=60.0)
    out, _ = apply_pass(unrolled_scan_model(spec), RerollScans(form="batched", chunk=8, drop_unit_axes=True,
                                                               carry_shifts="slices"))
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


def _as_double(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model in float64: inputs, outputs and stored tensors (the exporter records no
    intermediate types, so a pass sees the type only on the graph's edges)."""
    from onnx import TensorProto, numpy_helper
    for value in list(model.graph.input) + list(model.graph.output):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    for tensor in tensors:
        if tensor.data_type == TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name))
    return model


@pytest.mark.parametrize("pipeline", ["reroll-scans{form=batched}", "reroll-scans{form=batched-doubling}",
                                      "reroll-scans{form=window-doubling}", "cpu", "tpu"])
def test_double_scan_rerolls_in_double(pipeline):
    # The forms' constants took the decay's recorded type, float32 when none was recorded (an Exp's
    # output): a float64 model failed verification in every pipeline but seed, 'MatMul bound to
    # different types (double and float)' (found by s15-adv's sweep of element types).
    from pipelines import compile_model
    spec = ScanSpec(length=8, channels=3, state=2, readout="mulsum")
    result = compile_model(_as_double(unrolled_scan_model(spec)), pipeline)
    assert reroll_record(result).stats["rerolled"] == 1
    assert result.verification["rel_l2"] <= 1e-12


def test_decays_covering_part_of_their_axis_are_seen_through_their_exp():
    # Only A_log longer: the exporter records no shape for Exp(A_log), the decays' source; its
    # input's shape is the same (compile_model runs no shape inference before the pass).
    from pipelines import compile_model
    model = unrolled_scan_model(ScanSpec(length=8))
    next(v for v in model.graph.input if v.name == "a_in").type.tensor_type.shape.dim[2].dim_value = 10
    # (s29: left unrolled, "decay a_i takes steps 0..7 of 'Exp_1' axis 2, which holds 10"; now the decays alone are
    # sliced to the chain's 8 positions: one Slice more than the chain over whole axes, and its log the Exp's input's)
    result = compile_model(model, "reroll-scans{form=window-doubling}", explain=True)
    assert reroll_record(result).stats == {"rerolled": 1, "steps": 8, "rejected": 0, "part_of_axis": 1}
    whole = compile_model(unrolled_scan_model(ScanSpec(length=8)), "reroll-scans{form=window-doubling}", verify="none")
    assert op_histogram(result.model) == dict(Counter(op_histogram(whole.model)) + Counter({"Slice": 1}))
    assert result.verification["rel_l2"] <= 1e-6


@pytest.mark.parametrize("channels, state", [(0, 2), (3, 0)])
def test_an_empty_state_is_left_unrolled(channels, state):
    # Zero channels or zero states: nothing to scan, and the forms' Reshapes (a -1 beside a 0, a 0
    # copying a dim) do not run on it: verification failed (exit 3) in cpu, ov and tpu (found by s15-adv).
    from pipelines import compile_model
    model = unrolled_scan_model(ScanSpec(length=6, channels=channels, state=state))
    result = compile_model(model, "reroll-scans{form=parallel}", explain=True)
    assert reroll_record(result).stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert any("is empty (its shape holds a 0): nothing to scan" in note for note in reroll_record(result).notes)


@pytest.mark.parametrize("pipeline", ["seed", "cpu"])
def test_scans_stay_unrolled_below_opset_11_with_the_reason(pipeline):
    """Found by s16-adv: at opsets 9 and 10 the scan forms' CumSum (opset 11) and input-driven Slice
    (opset 10) made a graph ONNX Runtime refused ('This is an invalid model'), so every pipeline failed
    verification on a valid model (exit 3) and --verify none wrote a model that does not run."""
    from pipelines import compile_model

    spec = ScanSpec(length=8, channels=3, state=2, opset=10, readout="mulsum")
    result = compile_model(unrolled_scan_model(spec), pipeline)
    assert reroll_record(result).stats["rerolled"] == 0 and reroll_record(result).stats["rejected"] == 1
    assert reroll_record(result).notes[-1].endswith("not re-rolled: opset 10 is older than 11, the first with the ops "
                                                "the scan forms build (CumSum, Slice bounds as inputs)")


# Decays not made by Exp (found by the s16 trust review): the pass took Log(a_i), so a decay <= 0 gave
# NaN in every form, and `--verify none` wrote that graph.
ANY_SIGN_FORMS = ["parallel", "batched-doubling", "parallel-strided", "strided-readout", "channels-last-readout"]
LOG_SPACE_FORMS = ["chunk24", "batched", "window-doubling"]


def _decay_as_initializer(spec: ScanSpec, values: np.ndarray) -> onnx.ModelProto:
    """The unrolled scan of a direct-decay `spec` with the decays an initializer holding `values`."""
    from onnx import numpy_helper
    model = unrolled_scan_model(spec)
    kept = [value for value in model.graph.input if value.name != "a_in"]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), "a_in"))
    return model


def _hostile_decays(kind: str, spec_args: dict) -> tuple[onnx.ModelProto, dict, np.ndarray]:
    """(model, feeds, float64 reference) of a scan whose decays take both signs: a Tanh output, or a
    constant with negative entries."""
    if kind == "tanh":
        spec = ScanSpec(decay="tanh", **spec_args)
        feeds = scan_inputs(spec, seed=3)
        return unrolled_scan_model(spec), feeds, numpy_scan(spec, feeds)
    spec = ScanSpec(decay="direct", **spec_args)
    feeds = scan_inputs(spec, seed=3)
    feeds["a_in"] = np.random.default_rng(5).uniform(-0.95, 0.95, feeds["a_in"].shape).astype(np.float32)
    model = _decay_as_initializer(spec, feeds["a_in"])
    return model, {k: v for k, v in feeds.items() if k != "a_in"}, numpy_scan(spec, feeds)


@pytest.mark.parametrize("form", ANY_SIGN_FORMS)
@pytest.mark.parametrize("kind", ["tanh", "negative_constant"])
@pytest.mark.parametrize("initial", ["zeros", "input"])
def test_forms_that_only_multiply_decays_take_them_of_any_sign(form, kind, initial):
    model, feeds, want = _hostile_decays(kind, dict(length=20, channels=3, state=2, initial=initial))
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    assert result.stats["rerolled"] == 1
    assert "Log" not in op_histogram(out)
    assert rel_l2(run(out, feeds)[0], want) <= REL_L2_TOL


@pytest.mark.parametrize("form", LOG_SPACE_FORMS)
@pytest.mark.parametrize("kind", ["tanh", "negative_constant"])
def test_log_space_forms_refuse_decays_not_known_positive(form, kind):
    model, feeds, want = _hostile_decays(kind, dict(length=12, channels=2, state=2))
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert any(f"the {form} form sums log a_i" in note and "not known to be > 0" in note
               and "parallel" in note for note in result.notes), result.notes
    assert rel_l2(run(out, feeds)[0], want) <= REL_L2_TOL   # left unrolled: still the scan


@pytest.mark.parametrize("form", LOG_SPACE_FORMS)
def test_positive_constant_decays_go_through_log_space(form):
    spec = ScanSpec(decay="direct", length=12, channels=2, state=2)
    feeds = scan_inputs(spec, seed=4)
    out, result = apply_pass(_decay_as_initializer(spec, feeds["a_in"]), RerollScans(form=form, chunk=4))
    assert result.stats["rerolled"] == 1 and op_histogram(out)["Log"] == 1
    want = numpy_scan(spec, feeds)
    assert rel_l2(run(out, {k: v for k, v in feeds.items() if k != "a_in"})[0], want) <= REL_L2_TOL


@pytest.mark.parametrize("state", [1, 2])
def test_cli_writes_a_correct_graph_for_tanh_decays_without_verification(tmp_path, state):
    # cpu re-rolls d_state 1 with the parallel form, d_state 2 with channels-last-readout.
    from test_cli import apply_cli
    spec = ScanSpec(decay="tanh", length=16, channels=3, state=state)
    onnx.save(unrolled_scan_model(spec), tmp_path / "model.onnx")
    done = apply_cli(tmp_path / "model.onnx", "--pipeline", "cpu", "-o", tmp_path / "out.onnx", "--verify", "none")
    assert done.returncode == 0, done.stderr
    feeds = scan_inputs(spec, seed=1)
    out = onnx.load(tmp_path / "out.onnx")
    assert any(node.name.startswith("reroll_scans/") for node in out.graph.node)   # re-rolled
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


# --- square constants from the scan's real steps: capped like the other passes' tables ---------------

@pytest.mark.parametrize("form, chunk", [
    ("batched", 1), ("batched-doubling", 1),                   # the carry's (chunks x chunks) shift matrices
    ("batched-doubling", 4096), ("window-doubling", 4096),     # the in-chunk (Q x Q) shifts and bands
])
def test_forms_whose_step_tables_pass_2_to_the_22_are_refused_with_a_note(form, chunk, long_scan):
    """2,049 real steps: batched with chunk 1 built 11 (2049 x 2049) shift matrices, 200 MB of
    constants (VMamba-T's 3,136 steps: ~470 MB); 2,048 steps (2^22 entries) pass (the side functions'
    test below). Refused like a decay the form cannot take: the scan stays unrolled, with the reason."""
    out, result = apply_pass(long_scan, RerollScans(form=form, chunk=chunk))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert any(f"the {form} form with chunk {chunk} builds a 2049 x 2049 constant" in note
               and "more than the 4194304 values" in note for note in result.notes), result.notes
    assert max((tensor.ByteSize() for tensor in out.graph.initializer), default=0) < 1 << 20


def test_the_batched_form_with_its_carry_shifted_by_slices_builds_no_such_table(long_scan):
    out, result = apply_pass(long_scan, RerollScans(form="batched", chunk=1, carry_shifts="slices"))
    assert result.stats["rerolled"] == 1
    assert max(tensor.ByteSize() for tensor in out.graph.initializer) < 1 << 20


@pytest.mark.parametrize("form, chunk", [("batched", 1), ("batched-doubling", 1), ("batched-doubling", 4096),
                                         ("window-doubling", 4096)])
def test_the_largest_step_table_is_measured_at_the_cap(form, chunk):
    """2048 x 2048 is 2^22 entries, taken; one step more is refused (kills '<' for '<=' and an
    off-by-one in a side function). window-doubling with small chunks builds small tables at every level."""
    from passes.reroll_scans import table_refusal

    assert table_refusal(form, 2048, chunk, "matmul") is None
    assert "2049 x 2049" in table_refusal(form, 2049, chunk, "matmul")
    assert table_refusal("window-doubling", 1 << 20, 16, "matmul") is None
    assert table_refusal("window-doubling", 1 << 20, 1, "matmul") is None
    # one chunk up to 2048 steps: a 2048-step band, taken; a level of 2049 as one chunk, refused
    assert table_refusal("window-doubling", 2048, 16, "matmul", one_chunk_up_to=1 << 20) is None
    assert "2049 x 2049" in table_refusal("window-doubling", 2049, 16, "matmul", one_chunk_up_to=1 << 20)
    assert table_refusal("batched", 1 << 20, 1, "slices") is None
    assert table_refusal("parallel", 1 << 20, 1, "matmul") is None


@pytest.fixture(scope="module")
def long_scan():
    return unrolled_scan_model(ScanSpec(length=2049, channels=1, state=1))


def _gated_rnn_model(batch=2, length=6, width=4) -> onnx.ModelProto:
    """h_t = a[:, t] * h_{t-1} + b[:, t] with a state of (batch, width) (a gated RNN, RecurrentGemma's RG-LRU):
    decays (batch, L, width), channels last and no state axis; a is a graph input (any sign)."""
    from onnx import TensorProto, helper

    nodes, inits = gated_rnn_steps(length, batch, width)
    nodes.append(helper.make_node("Concat", [f"u{t}" for t in range(length)], ["out"], axis=1))
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, length, width]) for n in ("a", "b", "out")]
    graph = helper.make_graph(nodes, "gated_rnn", info[:2], info[2:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _gated_rnn_check(out: onnx.ModelProto, batch=2, length=6, width=4) -> None:
    rng = np.random.default_rng(0)
    feeds = {"a": rng.uniform(-1, 1, (batch, length, width)).astype(np.float32),
             "b": rng.normal(size=(batch, length, width)).astype(np.float32)}
    h, expected = np.zeros((batch, width)), []
    for t in range(length):
        h = feeds["a"][:, t] * h + feeds["b"][:, t]
        expected.append(h)
    assert rel_l2(run(out, feeds)[0], np.stack(expected, axis=1)) <= 1e-6


def test_a_state_without_a_state_axis_keeps_form_not_state_form():
    """A (batch, width) state has channels last, not d_state: before, its decays counted as 'per (channel,
    state)' and cpu's channels-last-readout took it (572 nodes for a 256-step RG-LRU, against 148 with
    the parallel form); now `form` does, as for VMamba's N = 1."""
    out, result = apply_pass(_gated_rnn_model(), RerollScans(form="parallel", chunk=2,
                                                             state_form="channels-last-readout", state_chunk=4))
    plain, _ = apply_pass(_gated_rnn_model(), RerollScans(form="parallel", chunk=2))
    assert result.stats["rerolled"] == 1
    assert op_histogram(out) == op_histogram(plain)
    _gated_rnn_check(out)


def test_state_form_takes_decays_of_any_sign_that_form_would_sum_logs_of():
    """tpu's batched form sums log a_i; decays of any sign (a gated RNN's a_t, 0 at a reset) go to its
    state form, batched-doubling, which multiplies them, rather than stay unrolled."""
    out, result = apply_pass(_gated_rnn_model(), RerollScans(form="batched", chunk=2, state_form="batched-doubling"))
    doubling, _ = apply_pass(_gated_rnn_model(), RerollScans(form="batched-doubling", chunk=2))
    alone, alone_result = apply_pass(_gated_rnn_model(), RerollScans(form="batched", chunk=2))
    assert result.stats["rerolled"] == 1 and alone_result.stats["rerolled"] == 0
    assert op_histogram(out) == op_histogram(doubling)
    _gated_rnn_check(out)


# --- backward scans: `for t in reversed(range(L))` ------------------------------------------------

@pytest.mark.parametrize("form", ["chunk24", "parallel", "batched", "batched-doubling", "parallel-strided",
                                  "strided-readout", "channels-last-readout", "window-doubling"])
@pytest.mark.parametrize("stacked", ["by_position", "by_step"])
@pytest.mark.parametrize("readout, initial", [("einsum", "zeros"), ("mulsum", "input"), ("states", "zeros")])
def test_a_backward_scan_rerolls_in_every_form(form, stacked, readout, initial):
    """A loop over positions L-1 .. 0 (a bidirectional block's second direction written as a loop, not
    flips), its outputs stacked by position (`ys[t] = y`) or in the loop's order: the forward scan of the
    decays and drives reversed along the scan axis, read out in position order; the final state (x at
    position 0) kept. Before session s21 every such chain was left unrolled: "decay a_i index jumps to 8
    at step 0 (expected 0)"."""
    spec = ScanSpec(length=9, channels=3, state=2, readout=readout, initial=initial, direction="backward",
                    stacked=stacked, extra_final_state_output=True)
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 9, "rejected": 0}
    assert "Squeeze" not in op_histogram(out)   # no step is taken alone any more
    feeds = scan_inputs(spec, seed=3, batch=1)
    actual, expected = run(out, feeds), run(model, feeds)
    assert rel_l2(actual[0], numpy_scan(spec, feeds)) <= REL_L2_TOL
    assert rel_l2(actual[1], expected[1]) <= REL_L2_TOL


def test_a_backward_scan_is_the_forward_form_between_reversals():
    """The ops a backward chain adds to its forward twin's: a step -1 Slice for the decays' log (chunk24
    sums it) and one for the drives, one that turns the states back to position order, and one for a stack
    that holds the last position first (by_step); nothing else."""
    histograms = {}
    for direction, stacked in (("forward", "by_position"), ("backward", "by_position"), ("backward", "by_step")):
        spec = ScanSpec(length=9, direction=direction, stacked=stacked)
        out, result = apply_pass(unrolled_scan_model(spec), RerollScans(chunk=4))
        assert result.stats == {"rerolled": 1, "steps": 9, "rejected": 0}
        histograms[direction, stacked] = Counter(op_histogram(out))
        feeds = scan_inputs(spec)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL
    forward = histograms["forward", "by_position"]
    assert histograms["backward", "by_position"] - forward == Counter({"Slice": 3})
    assert histograms["backward", "by_step"] - forward == Counter({"Slice": 4})


@pytest.mark.parametrize("kind", ["skip_index", "repeat_index", "coeff_off_by_one", "concat_permuted"])
def test_backward_near_misses_are_left_with_a_reason(kind):
    """The near-misses of a forward chain, made at step 4 of a backward one: step 4 should take position 4."""
    model = unrolled_scan_model(ScanSpec(length=9, near_miss=kind, direction="backward"))
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert op_histogram(out) == op_histogram(model)
    assert {"skip_index": "decay a_i index jumps to 3 at step 4 (expected 4)",
            "repeat_index": "decay a_i index 5 is repeated at step 4",
            "coeff_off_by_one": "readout coefficient c_i index jumps to 3 at step 4 (expected 4)",
            "concat_permuted": "stacks 9 tensors; expected exactly the 9 step outputs in order"}[kind] in result.notes[1]


@pytest.mark.parametrize("decays, drives, note", [
    # (forward, 0) and (backward, 0) 2 votes each: forward; the drives agree on no offset of their own.
    ((0, 1), (1, 0), "input b_i index jumps to 0 at step 1 (expected 2)"),
    # (forward, 0) and (backward, 1) 3 votes each: position 0.
    ((0, 1), (2, 1), "input b_i index jumps to 2 at step 0 (expected 0)"),
    # (backward, 0) and (forward, 1) 2 votes each, the position-1 frame counted first: position 0 (backward).
    ((1, 0), (0, 2), "input b_i index jumps to 0 at step 0 (expected 1)"),
])
def test_a_tie_between_two_frames_names_the_slice_that_departs_from_position_0_forward(decays, drives, note):
    """linear_recurrence._frame's tie-break (mut31's three open mutants, session s31 mut33): a 2-step chain whose
    decays and drives agree on different frames, tied, is checked against position 0, then forward, so the note
    names the slice that departs from that frame. Preferring backward fails case 1 ("decay a_i index jumps to 0 at
    step 0 (expected 1)"), a nonzero position case 2 ("decay a_i index jumps to 0 at step 0 (expected 2)"), no
    position-0 preference (the first frame counted wins) case 3 ("decay a_i index jumps to 0 at step 1 (expected
    2)")."""
    model = unrolled_scan_model(ScanSpec(length=2, readout="states", axis_size=3))
    constants = {node.output[0]: node for node in model.graph.node if node.op_type == "Constant"}
    indices = {"Exp_1": iter(decays), "b": iter(drives)}
    for node in model.graph.node:
        if node.op_type == "Gather":
            index = constants[node.input[1]]
            index.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(
                np.array(next(indices[node.input[0]]), np.int64), index.output[0]))
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert result.notes == ["0 scans found", f"chain at 'Add_8' (2 steps) not re-rolled: {note}"]
    assert op_histogram(out) == op_histogram(model)


# --- loops over x.unbind(axis): one Split into one-position pieces per tensor ----------------------

@pytest.mark.parametrize("readout", ["einsum", "mulsum", "states"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_a_loop_over_unbind_pieces_rerolls(readout, direction):
    """TorchScript writes `for a_t, b_t, c_t in zip(a.unbind(2), b.unbind(2), c.unbind(3))` as a Split per
    tensor whose outputs are the steps: its pieces are read as Slices (split_pieces_sliced: the 3 Splits),
    the chain re-rolls like one indexed by Gather, and no Split or Squeeze is left. Before session s21: "0
    scans found" with no reason (the steps were not seen as steps of a tensor)."""
    spec = ScanSpec(length=9, index="split", readout=readout, direction=direction)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 9, "rejected": 0,
                            "split_pieces_sliced": 2 if readout == "states" else 3}
    indexed, _ = apply_pass(unrolled_scan_model(ScanSpec(length=9, readout=readout, direction=direction)),
                            RerollScans(form="parallel", chunk=4))
    assert op_histogram(out) == op_histogram(indexed)
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= REL_L2_TOL


def test_splits_that_no_scan_takes_are_put_back():
    """A near-miss over unbind pieces stays unrolled and its Splits stay Splits (no Slice per piece), as does a
    Split into one-position pieces that is no loop (`q, k, v = qkv.unbind(0)`)."""
    model = unrolled_scan_model(ScanSpec(length=9, index="split", near_miss="skip_index"))
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert "decay a_i index jumps to 5 at step 4 (expected 4)" in result.notes[1]
    assert op_histogram(out) == op_histogram(model)
    graph = onnx.parser.parse_graph("""qkv (float[3, 4] x) => (float[4] y) {
        sizes = Constant<value = int64[3] {1, 1, 1}>()
        q1, k1, v1 = Split<axis = 0>(x, sizes)
        axes = Constant<value = int64[1] {0}>()
        q = Squeeze(q1, axes)
        k = Squeeze(k1, axes)
        v = Squeeze(v1, axes)
        qk = Mul(q, k)
        y = Add(qk, v)
    }""")
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert not result.changed and result.notes == ["0 scans found"]
    assert op_histogram(out) == op_histogram(model) == {"Add": 1, "Constant": 2, "Mul": 1, "Split": 1, "Squeeze": 3}


# --- torch.addcmul(b_t, h, a_t): the product times its value=1 ---------------------------------------

@pytest.mark.parametrize("one", [np.float32(1.0), np.ones((1, 1), np.float32), np.float32(2.0)])
def test_a_step_written_with_addcmul_rerolls(one):
    """TorchScript writes `h = torch.addcmul(b[:, t], h, a[:, t])` as Add(b_t, Mul(Mul(h, a_t), 1)): the Mul by the
    constant 1 (a scalar, or one element of no more axes than the product) is seen through; before session s21 no
    step matched ('0 scans found', no reason). A Mul by 2 is no such step: nothing is re-rolled, the graph is left
    as it was."""
    from onnx import helper, numpy_helper

    model = _gated_rnn_model()
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(one), "one"))
    for node in list(model.graph.node):
        if node.op_type == "Add":
            product = node.input[0]
            node.input[0] = f"{product}_times_one"
            position = list(model.graph.node).index(node)
            model.graph.node.insert(position, helper.make_node("Mul", [product, "one"], [node.input[0]]))
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    if np.asarray(one).reshape(-1)[0] != 1.0:
        assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 0}
        assert op_histogram(out) == op_histogram(model)
        return
    assert result.stats == {"rerolled": 1, "steps": 6, "rejected": 0}
    assert op_histogram(out).get("Add", 0) < 6 and "Gather" not in op_histogram(out)
    _gated_rnn_check(out)


def test_a_scan_reading_a_split_piece_as_a_whole_tensor_keeps_it():
    """The readout's C is itself one piece of a Split into one-position pieces (`dt, B, C = proj(x).split([1, 1,
    1], -1)` with dt rank and d_state 1): the pieces are read as Slices while matching, the re-rolled readout
    reads C's Slice as a whole tensor, and putting the Split back must leave that Slice (before, it was removed
    with the others: 'input ... Slice_3_out of node ... is not output of any previous nodes')."""
    from onnx import TensorProto, helper

    spec = ScanSpec(length=6, channels=3, state=2)
    model = unrolled_scan_model(spec)
    graph = model.graph
    c_input = next(value for value in graph.input if value.name == "c")
    graph.input.remove(c_input)
    graph.input.append(helper.make_tensor_value_info("c_and_more", TensorProto.FLOAT, [2, 3, 2, 6]))
    graph.node.insert(0, helper.make_node("Split", ["c_and_more", "ones"], ["c", "more"], axis=0))
    graph.node.insert(0, helper.make_node("Constant", [], ["ones"], value=onnx.numpy_helper.from_array(
        np.ones(2, np.int64))))
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))   # checked by onnx.checker
    assert result.stats == {"rerolled": 1, "steps": 6, "rejected": 0}
    feeds = scan_inputs(spec)
    expected = numpy_scan(spec, feeds)
    c = feeds.pop("c")
    feeds["c_and_more"] = np.concatenate([c, np.full_like(c, 5.0)])
    assert rel_l2(run(out, feeds)[0], expected) <= REL_L2_TOL


def _zeros_first_model(zeros_like: str, cast: bool = True) -> onnx.ModelProto:
    """h_t = a[:, t] * h_{t-1} + b[:, t] stacked along axis 1, a and b ("batch", 5, 3), h_{-1} zeros computed as
    TorchScript writes torch.zeros(x.shape).to(float32) where the batch is dynamic: Cast(ConstantOfShape(Shape(x))),
    x = a[:, 0] ("batch", 3), or `zeros_like` "z", a third input ("other", 3); without `cast`, ConstantOfShape alone
    (the dynamo exporter's zeros)."""
    length, width = 5, 3
    nodes, inits = gated_rnn_steps(length, 2, width)
    inits = [init for init in inits if init.name != "h_init"]
    nodes = [onnx.helper.make_node("Gather", ["a", "t0"], ["a_first"], axis=1),
             onnx.helper.make_node("Shape", [zeros_like], ["zeros_shape"]),
             onnx.helper.make_node("ConstantOfShape", ["zeros_shape"], ["zeros" if cast else "h_init"]),
             *([onnx.helper.make_node("Cast", ["zeros"], ["h_init"], to=onnx.TensorProto.FLOAT)] if cast else []),
             *nodes, onnx.helper.make_node("Concat", [f"u{t}" for t in range(length)], ["out"], axis=1)]
    inputs = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", length, width])
              for name in ("a", "b")]
    inputs.append(onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, ["other", width]))
    graph = onnx.helper.make_graph(nodes, "zeros_first", inputs,
                                   [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["batch", length, width])],
                                   inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _zeros_first_feeds(batch: int, other: int) -> dict:
    rng = np.random.default_rng(batch * 10 + other)
    return {"a": rng.uniform(-1, 1, (batch, 5, 3)).astype(np.float32), "b": rng.normal(size=(batch, 5, 3)).astype(
        np.float32), "z": rng.normal(size=(other, 3)).astype(np.float32)}


def test_zeros_of_a_computed_shape_cast_start_the_scan_where_b0_has_their_shape():
    """zeros(a[:, 0].shape).to(float32) (RecurrentGemma's h_{-1} through TorchScript with a dynamic batch): zeros
    through the Cast, left out (before s24 the Cast hid them: the scan took them as an initial state, and the Shape
    arithmetic that made them stayed); x_0 = b_0 holds since b_0 is inferred of x_0's shape ("batch", 3)."""
    model = _zeros_first_model("a_first")
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert result.stats == {"rerolled": 1, "steps": 5, "rejected": 0}
    hist = op_histogram(out)
    assert not {"ConstantOfShape", "Cast", "Gather"} & set(hist), hist   # the parallel form's 3 Shapes remain
    for batch in (1, 2, 5):
        feeds = _zeros_first_feeds(batch, 1)
        assert rel_l2(run(out, feeds)[0], run(model, feeds)[0]) <= 1e-6


@pytest.mark.parametrize("form", sorted(set(SCAN_FORMS) - LOG_SPACE))   # a: any sign
@pytest.mark.parametrize("cast", [True, False])
def test_zeros_that_may_be_larger_than_b0_are_added_to_the_drives(form, cast):
    """zeros like another input ("other", 3): at batch 1 and other 3 they broadcast b_0 (1, 3) to (3, 3), so
    x_0 = b_0 would be wrong; not proven to add no size, they are added to the drives (+ 0, exact), said in a note.
    Before s26, ConstantOfShape alone (`cast=False`, the dynamo exporter's zeros) was left out unchecked: the
    re-rolled graph gave (1, 5, 3) where the model gives (3, 5, 3) (verification runs batch 1, other 1, and passed);
    zeros through a Cast left the chain unrolled."""
    model = _zeros_first_model("z", cast=cast)
    out, result = apply_pass(model, RerollScans(form=form, chunk=2))
    assert result.stats == {"rerolled": 1, "steps": 5, "rejected": 0}
    assert result.notes[0].startswith("chain at '' (5 steps): the zeros its first step multiplies may broadcast b_0 "
                                      "('b0', ('batch', 3)) to x_0's shape ('unk__")
    assert result.notes[0].endswith(": not proven to add no size, added to the drives")
    for batch, other in ((1, 3), (2, 2), (1, 1), (3, 1)):
        feeds = _zeros_first_feeds(batch, other)
        want = run(model, feeds)[0]
        got = run(out, feeds)[0]
        assert got.shape == want.shape
        assert rel_l2(got, want) <= 1e-6


def test_a_coefficient_shared_by_steps_0_and_1_is_a_rejection_not_a_crash():
    # found by test_fuzz_patterns at 500 examples: c[1] read at steps 0 and 1, c[2] at step 2, with the coefficients
    # cut by a Split: the template's walk for step 1 stopped at the shared piece, step 2's went on past it, and the
    # pass ended in a KeyError (exit 4 from the CLI) before s31
    spec = ScanSpec(length=3, index="split", opset=12, near_miss="coeff_off_by_one", near_miss_step=0)
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form="batched", chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert result.notes[1:] == [
        "chain at 'Add_8' (3 steps) not re-rolled: readout coefficient c_i index jumps to 1 at step 0 (expected 0) "
        "(as a per-step subgraph: step 1 reads the output of Slice 'reroll_scans/split_pieces2/Slice_2' as step 0 "
        "does, where step 2 reads its own)"]
    assert op_histogram(out) == op_histogram(model)

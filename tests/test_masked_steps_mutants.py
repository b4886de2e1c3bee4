"""Masked steps (patterns/masked_step.py, passes/masked_steps.py) against the mutants the first tests left alive
(session s34, mut37; docs/MUTATION.md): the step's operands in the other order, and the nodes that only look like a
masked step (another op, a domain, another arity), each refused by name of what it is."""
from __future__ import annotations

import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from passes.reroll_scans import RerollScans
from patterns.masked_step import find_masked_steps
from scan_testing import apply_pass, op_histogram, rel_l2, run
from tools.synthetic_scans import ScanSpec, numpy_scan, scan_inputs, unrolled_scan_model

SPEC = ScanSpec(length=8, state=2, mask="then")


def _steps(model):
    """The Wheres of `model` whose branch is Add(Mul(.., ..), ..) (the masked steps' and their first step's)."""
    made = {output: node for node in model.graph.node for output in node.output}
    wheres = [node for node in model.graph.node if node.op_type == "Where"]
    return [(where, made[where.input[1]], made[made[where.input[1]].input[0]]) for where in wheres]


def test_the_unedited_chain_is_eight_masked_steps():
    # the control for the edits below: 8 Wheres, 7 of them keeping the state before (the first keeps its zeros,
    # a Constant of its own, of the value the first Mul multiplies)
    steps, misses = find_masked_steps(gs.import_onnx(unrolled_scan_model(SPEC)))
    assert (len(steps), misses) == (8, [])
    assert [(step.step_branch, step.mul_side, step.state_side) for step in steps] == [(1, 0, 1)] * 8


@pytest.mark.parametrize("swap", ["mul", "add", "both"])
def test_a_step_with_its_state_or_its_product_first_is_a_masked_step_and_rerolls(swap):
    # h * a_t (the state the Mul's first input) and b_t + a_t h (the product the Add's second): the same masked
    # steps, found on either side, one scan, exact
    model = unrolled_scan_model(SPEC)
    for _, add, mul in _steps(model):
        if swap in ("mul", "both"):
            mul.input[0], mul.input[1] = mul.input[1], mul.input[0]
        if swap in ("add", "both"):
            add.input[0], add.input[1] = add.input[1], add.input[0]
    steps, misses = find_masked_steps(gs.import_onnx(model))
    assert misses == []
    assert [(step.mul_side, step.state_side) for step in steps] == [
        (1 if swap in ("add", "both") else 0, 0 if swap in ("mul", "both") else 1)] * 8
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 8, "rejected": 0, "step_operands_replayed": 2, "masked_steps": 8}
    assert op_histogram(out)["Where"] == 2
    for seed in (0, 1):
        feeds = scan_inputs(SPEC, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(SPEC, feeds)) <= 1e-6


def _edit(model, how):
    for where, add, mul in _steps(model):
        if how == "sub":
            add.op_type = "Sub"
        elif how == "add-domain":
            add.domain = "com.example"
        elif how == "add-three-inputs":
            add.input.append(add.input[1])
        elif how == "add-two-outputs":
            add.output.append(add.output[0] + "_also")
        elif how == "div":
            mul.op_type = "Div"
        elif how == "mul-domain":
            mul.domain = "com.example"
        elif how == "mul-three-inputs":
            mul.input.append(mul.input[0])
        elif how == "where-domain":
            where.domain = "com.example"
        elif how == "where-two-outputs":
            where.output.append(where.output[0] + "_also")
    return model


@pytest.mark.parametrize("how", ["sub", "add-domain", "add-three-inputs", "add-two-outputs", "div", "mul-domain",
                                 "mul-three-inputs", "where-domain", "where-two-outputs"])
def test_nodes_that_only_look_like_a_masked_step_are_none(how):
    # Where(m, Sub(Mul(a, h), b), h) is no linear step of h, nor Div(a, h); an Add, Mul or Where of another domain is
    # another op; a node of other arity is no ONNX Add, Mul or Where: no masked step, and no near-miss either
    steps, misses = find_masked_steps(gs.import_onnx(_edit(unrolled_scan_model(SPEC), how)))
    assert (steps, misses) == ([], [])


def test_a_where_with_too_few_inputs_is_none():
    # Where(m, step) without the kept branch: no masked step (the rest of the chain neither: each reads another
    # masked step's output as its state, and none is left)
    model = unrolled_scan_model(SPEC)
    for where, _, _ in _steps(model):
        del where.input[2]
    steps, misses = find_masked_steps(gs.import_onnx(model))
    assert (steps, misses) == ([], [])



def test_a_masked_step_whose_product_is_read_elsewhere_is_named_with_that_reader():
    # step 4's a_t h (the Mul, not the Add) also a graph output: that Where is no masked step (its Mul would read the
    # masked decay), named with the product's other reader; steps 5..7 re-roll on their own, exactly
    model = unrolled_scan_model(SPEC)
    where, add, mul = _steps(model)[4]
    model.graph.node.append(helper.make_node("Identity", [mul.output[0]], ["product"], name="product_copy"))
    model.graph.output.append(helper.make_tensor_value_info("product", TensorProto.FLOAT, [1, 3, 2]))
    steps, misses = find_masked_steps(gs.import_onnx(model))
    assert len(steps) == 7 and [(miss.where.name, [node.name for node in miss.readers]) for miss in misses] == [
        (where.name, ["product_copy"])]
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 3, "rejected": 0, "part_of_axis": 1, "step_operands_replayed": 2,
                            "masked_steps": 3}
    assert result.notes[0] == (
        f"chain at 'Where_16' (8 steps) not re-rolled: Where '{where.name}' is a masked step whose step (Add "
        f"'{add.name}') is also read by Identity 'product_copy'; a masked step's step is read by its Where alone")
    feeds = scan_inputs(SPEC)
    assert rel_l2(run(out, feeds)[0], numpy_scan(SPEC, feeds)) <= 1e-6


def test_a_masked_step_in_no_chain_is_left_alone():
    # one h' = where(m, a h + b, h) of a graph input h, read by nothing masked: a step of no loop, not taken (masked
    # steps count only in chains of two or more)
    floats = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2]) for name in ("a", "h", "b")]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "h"], ["ah"], name="mul"), helper.make_node("Add", ["ah", "b"], ["step"],
                                                                                   name="add"),
         helper.make_node("Where", ["m", "step", "h"], ["y"], name="where")],
        "g", [helper.make_tensor_value_info("m", TensorProto.BOOL, [2]), *floats],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    assert find_masked_steps(gs.import_onnx(helper.make_model(graph))) == ([], [])


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_a_chain_of_constant_masks_left_for_another_reason_gets_its_wheres_back_and_no_gather(direction):
    # masks fixed at export (one bool Constant per step, stacked into one and read by a Gather per step), the
    # readouts of steps 4 and 5 swapped in the stack: not re-rolled, and every node made for the masks taken out
    # again, the Gathers of the stacked constant too: the input's graph node for node, the input's values
    spec = ScanSpec(length=8, state=2, mask="then", mask_spelling="constant", near_miss="concat_permuted",
                    direction=direction)
    model = unrolled_scan_model(spec)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert op_histogram(out) == op_histogram(model)
    assert sorted(node.name for node in out.graph.node) == sorted(node.name for node in model.graph.node)
    feeds = scan_inputs(spec)
    assert rel_l2(run(out, feeds)[0], run(model, feeds)[0]) == 0.0


@pytest.mark.parametrize("swap", ["every-step", "plain-steps"])
@pytest.mark.parametrize("masked_steps", [(3, 4, 5, 6, 7), (0, 1, 2)])
def test_a_mixed_chain_with_its_steps_operands_in_the_other_order_is_one_scan(swap, masked_steps):
    # b_t + h * a_t at every step, or at the plain steps only (their sides then differ from the masked steps'): the
    # plain steps before and after the masked ones found on either side all the same (mut38: _plain_steps' sides)
    spec = ScanSpec(length=8, state=2, mask="then", masked_steps=masked_steps)
    model = unrolled_scan_model(spec)
    made = {output: node for node in model.graph.node for output in node.output}
    masked = {id(add) for _, add, _ in _steps(model)}
    swapped = 0
    for add in model.graph.node:
        mul = made.get(add.input[0]) if add.op_type == "Add" else None
        if mul is not None and mul.op_type == "Mul" and (swap == "every-step" or id(add) not in masked):
            add.input[0], add.input[1] = add.input[1], add.input[0]
            mul.input[0], mul.input[1] = mul.input[1], mul.input[0]
            swapped += 1
    assert swapped == (8 if swap == "every-step" else 8 - len(masked_steps))
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats["rerolled"] == 1 and result.stats["steps"] == 8 and result.notes == []
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6

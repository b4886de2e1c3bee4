"""Masked steps (passes/masked_steps.py) against mutants left open or not run by mut37/mut38 (session s36, mut39;
docs/MUTATION.md)."""
from __future__ import annotations

import numpy as np
import onnx
import onnx.compose
import onnx_graphsurgeon as gs
import pytest

from passes.base import PassContext
from passes.reroll_scans import RerollScans
from scan_testing import apply_pass, op_histogram, rel_l2, run
from tools.synthetic_scans import ScanSpec, numpy_scan, scan_inputs, unrolled_scan_model

SPEC = ScanSpec(length=8, state=2, mask="then")


def test_a_masked_chain_without_recorded_types_gets_ones_and_zeros_of_its_own_type():
    """No shape inference before the pass (an exporter need not record intermediate types): the Wheres' outputs are
    untyped, so the step's element type comes from its Add's output, read back to float32 inputs. The 1 and 0 the
    decay and drive keep where the mask is off are float32 (an unknown first type read as numpy's default made them
    float64: a model ONNX Runtime refuses)."""
    model = unrolled_scan_model(SPEC)
    graph = gs.import_onnx(model)
    assert all(node.outputs[0].dtype is None for node in graph.nodes if node.op == "Where")
    result = RerollScans(form="parallel", chunk=4).run(graph, PassContext(opset=model.opset_import[0].version))
    assert result.stats == {"rerolled": 1, "steps": 8, "rejected": 0, "step_operands_replayed": 2, "masked_steps": 8}
    out = gs.export_onnx(graph)
    made = {tensor.name: onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type) for tensor in out.graph.initializer
            if tensor.name.startswith("reroll_scans/masked_steps/")}
    assert made == {"reroll_scans/masked_steps/const_0": np.float32, "reroll_scans/masked_steps/const_1": np.float32}
    assert op_histogram(out)["Where"] == 2
    for seed in (0, 1):
        feeds = scan_inputs(SPEC, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(SPEC, feeds)) <= 1e-6


def _passed_over(how: str) -> onnx.ModelProto:
    """A mixed chain (masked steps 0 .. 2, plain after) whose masked steps' conds give no plain-step conds: "template"
    step 1's cond Not(Not(cond)) (no one subgraph), "cond-shifted" each masked step's mask read one position on (the
    conds at other positions than the decays)."""
    model = unrolled_scan_model(ScanSpec(length=8, state=2, mask="then", masked_steps=(0, 1, 2)))
    made = {output: node for node in model.graph.node for output in node.output}
    wheres = [node for node in model.graph.node if node.op_type == "Where"]
    if how == "template":
        index = list(model.graph.node).index(wheres[1])
        model.graph.node.insert(index, onnx.helper.make_node("Not", [wheres[1].input[0]], ["not1"], name="not1"))
        model.graph.node.insert(index + 1, onnx.helper.make_node("Not", ["not1"], ["not2"], name="not2"))
        wheres[1].input[0] = "not2"
    else:
        for t, where in enumerate(wheres):
            gather = made[made[made[where.input[0]].input[0]].input[0]]
            model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(t + 1, np.int64), f"shift{t}"))
            gather.input[1] = f"shift{t}"
    return model


def _side_by_side(first: onnx.ModelProto, second: onnx.ModelProto) -> onnx.ModelProto:
    models = [onnx.compose.add_prefix(model, prefix) for model, prefix in ((first, "a_"), (second, "b_"))]
    graphs = [model.graph for model in models]
    graph = onnx.helper.make_graph([node for g in graphs for node in g.node], "two",
                                   [value for g in graphs for value in g.input],
                                   [value for g in graphs for value in g.output],
                                   [tensor for g in graphs for tensor in g.initializer])
    return onnx.helper.make_model(graph, opset_imports=models[0].opset_import, ir_version=models[0].ir_version)


@pytest.mark.parametrize("how", ["template", "cond-shifted"])
def test_a_mixed_chain_passed_over_does_not_keep_the_next_from_its_conds(how):
    """The first mixed chain gets no plain-step conds (its 5 plain steps re-roll alone, its notes say why); the
    mixed chain after it still gets its own and re-rolls whole, 8 steps, exact (a `break` for the `continue` left it
    without: its plain steps dropped)."""
    spec = ScanSpec(length=8, state=2, mask="then", masked_steps=(0, 1, 2))
    model = _side_by_side(_passed_over(how), unrolled_scan_model(spec))
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.stats == {"rerolled": 2, "steps": 13, "rejected": 0, "part_of_axis": 1,
                            "step_operands_replayed": 2, "masked_steps": 8}
    assert [note.split(":")[0] for note in result.notes] == ["chain at 'a_Where_16' (8 steps) not re-rolled"] * 2
    for seed in (0, 1):
        feeds = {"b_" + name: value for name, value in scan_inputs(spec, seed=seed).items()}
        feeds.update({"a_" + name: value for name, value in scan_inputs(spec, seed=seed).items()})
        got = dict(zip([value.name for value in out.graph.output], run(out, feeds)))
        expected = numpy_scan(spec, scan_inputs(spec, seed=seed))
        assert rel_l2(got[model.graph.output[1].name], expected) <= 1e-6


@pytest.mark.parametrize("masked_steps, mask", [((0, 1, 2), "constants"), ((3, 4, 5, 6, 7), "constants"),
                                                ((0, 1, 2), "initializer")])
def test_a_mixed_chain_of_constant_masks_is_one_scan_of_its_stacked_masks_alone(masked_steps, mask):
    """Masks fixed at export on some steps only, one bool Constant per step or Gathers of one initializer (then one
    cond subgraph at every masked step, which the mixed-chain conds could copy): the masks stacked as one constant,
    read by every step; no mixed-chain cond made beside it (47 nodes, exact histogram), values exact."""
    spec = ScanSpec(length=8, state=2, mask="then", mask_spelling="constant" if mask == "constants" else "unsqueeze",
                    masked_steps=masked_steps)
    model = unrolled_scan_model(spec)
    fixed = scan_inputs(spec, seed=0).get("m")
    if mask == "initializer":
        model.graph.initializer.append(onnx.numpy_helper.from_array(fixed, "m"))
        inputs = [value for value in model.graph.input if value.name != "m"]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert (result.stats, result.notes) == (
        {"rerolled": 1, "steps": 8, "rejected": 0, "step_operands_replayed": 2, "masked_steps": 8}, [])
    assert op_histogram(out) == {"Add": 8, "Concat": 4, "Einsum": 1, "Exp": 1, "Mul": 11, "Pad": 2, "Reshape": 3,
                                 "Shape": 3, "Slice": 8, "Split": 2, "Transpose": 2, "Where": 2}
    assert len(out.graph.node) == 47
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        if mask == "initializer":
            feeds["m"] = fixed
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


def test_the_masked_steps_rewritten_leave_the_graph_in_topological_order():
    """The nodes made for each step (and its Mul) stand just before its step: the graph stays sorted, so no RankMap
    after it sorts it (7.5 of 20.6 s of reroll-scans on 512 masked steps, s34); without the move the made nodes
    stood at the graph's end, after their readers."""
    from passes.graph_io import graph_is_topologically_sorted
    from passes.masked_steps import mask_steps

    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(unrolled_scan_model(SPEC)))
    assert graph_is_topologically_sorted(graph)
    done = mask_steps(graph, 17, set())
    assert len(done) == 8 and graph_is_topologically_sorted(graph)


def _product_read_elsewhere(clear_names: bool) -> onnx.ModelProto:
    """test_masked_steps_mutants' near miss: step 4's product also a graph output (through an Identity); the Wheres
    unnamed where `clear_names`."""
    model = unrolled_scan_model(SPEC)
    made = {output: node for node in model.graph.node for output in node.output}
    wheres = [node for node in model.graph.node if node.op_type == "Where"]
    mul = made[made[wheres[4].input[1]].input[0]]
    model.graph.node.append(onnx.helper.make_node("Identity", [mul.output[0]], ["product"], name="product_copy"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("product", onnx.TensorProto.FLOAT, [1, 3, 2]))
    if clear_names:
        for where in wheres:
            where.name = ""
    return model


def test_a_near_miss_in_a_chain_of_unnamed_wheres_is_named_by_the_first_wheres_output():
    _, result = apply_pass(_product_read_elsewhere(True), RerollScans(form="parallel", chunk=4))
    assert result.notes[0] == (
        "chain at 'Where_16' (8 steps) not re-rolled: Where '' is a masked step whose step (Add 'Add_81') is also "
        "read by Identity 'product_copy'; a masked step's step is read by its Where alone")


def test_near_misses_in_two_chains_are_each_named():
    model = _side_by_side(_product_read_elsewhere(False), _product_read_elsewhere(False))
    _, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.notes[:2] == [
        f"chain at '{prefix}Where_16' (8 steps) not re-rolled: Where '{prefix}Where_88' is a masked step whose step "
        f"(Add '{prefix}Add_81') is also read by Identity '{prefix}product_copy'; a masked step's step is read by its "
        "Where alone" for prefix in ("a_", "b_")]


@pytest.mark.parametrize("masked_steps", [None, (0, 1, 2)])
def test_constant_masks_of_steps_from_position_one_are_stacked_at_their_drives_positions(masked_steps):
    """`for t in range(1, L)` with masks fixed at export: the decays Exp(a_t) are no step slices, the drives b_t are:
    each step's position is its drive's (1 .. 7), not its place in the chain (0 .. 6); one scan, 53 nodes, exact."""
    spec = ScanSpec(length=7, state=2, mask="then", mask_spelling="constant", first=1, masked_steps=masked_steps)
    out, result = apply_pass(unrolled_scan_model(spec), RerollScans(form="parallel", chunk=4))
    assert (result.stats, result.notes) == ({"rerolled": 1, "steps": 7, "rejected": 0, "part_of_axis": 1,
                                             "step_operands_replayed": 2, "masked_steps": 7}, [])
    assert len(out.graph.node) == 53
    for seed in (0, 1):
        feeds = scan_inputs(spec, seed=seed)
        assert rel_l2(run(out, feeds)[0], numpy_scan(spec, feeds)) <= 1e-6


def test_a_near_miss_read_by_two_others_names_both():
    model = _product_read_elsewhere(False)
    product = model.graph.node[-1].input[0]
    model.graph.node.append(onnx.helper.make_node("Neg", [product], ["negated"], name="negated"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("negated", onnx.TensorProto.FLOAT, [1, 3, 2]))
    _, result = apply_pass(model, RerollScans(form="parallel", chunk=4))
    assert result.notes[0] == (
        "chain at 'Where_16' (8 steps) not re-rolled: Where 'Where_88' is a masked step whose step (Add 'Add_81') is "
        "also read by Identity 'product_copy', Neg 'negated'; a masked step's step is read by its Where alone")

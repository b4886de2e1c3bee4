"""unroll-loops at the edges its mutants found untested (session s28, docs/MUTATION.md): trip counts and sizes read
through Cast/Squeeze/Identity and sliced Shapes, the hop limit, what a step folds into constants and what it writes
once for all steps, the pass's stats and names over several loops, its progress lines, Loop and Scan signatures the
first tests did not write, and sequences it must leave. Every unrolled model is compared with ONNX Runtime's Loop."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.base import PassContext
from pipelines import compile_model
from tests.scan_testing import run

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
L, D = 6, 3


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _ops(model: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(node.op_type for node in model.graph.node))


def _model(nodes, inputs, outputs, opset: int = 17, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _unroll(model: onnx.ModelProto, tmp_path, pipeline: str = "unroll-loops"):
    result = compile_model(model, pipeline, output=tmp_path / "out.onnx")
    return result.records[0], onnx.load(str(tmp_path / "out.onnx"))


def _same(model: onnx.ModelProto, unrolled: onnx.ModelProto, feeds: dict) -> None:
    expected, actual = run(model, feeds), run(unrolled, feeds)
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual):
        assert want.shape == got.shape and np.array_equal(want, got)


def _cond_body(nodes, inputs, outputs, name: str = "body") -> onnx.GraphProto:
    """A Loop body: (i, cond_in, inputs...) -> (cond_out, outputs...), cond passed through."""
    return helper.make_graph(
        nodes + [helper.make_node("Identity", ["cond_in"], ["cond_out"])], name,
        [helper.make_tensor_value_info("i", INT64, []), helper.make_tensor_value_info("cond_in", BOOL, [])] + inputs,
        [helper.make_tensor_value_info("cond_out", BOOL, [])] + outputs)


# -- trip counts and sizes read from shapes --------------------------------------------------------------------------

def _sized_loop(start=None, end=None, index=0, hops=("Squeeze", "Cast", "Identity"), body_cast: bool = False):
    """x of (batch, L, D, 5), batch symbolic, h0 = x[:, [0]]. M = hops(Gather(Shape(x, start, end), [index])) (the Gather without an
    axis attribute, its index 1-D); the body reads n = Gather(Shape(x), [1]) (exact: shape [1]) and walks x backwards,
    t = n - 1 - i; `body_cast`: it adds Cast(n, float) to its state too."""
    shape_attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    nodes = [helper.make_node("Shape", ["x"], ["s"], **shape_attrs), _const("k", np.array([index], np.int64)),
             helper.make_node("Gather", ["s", "k"], ["m0"])]
    last = "m0"
    for hop_index, hop in enumerate(hops):
        attrs = {"to": INT64} if hop == "Cast" else {}
        nodes.append(helper.make_node(hop, [last], [f"m{hop_index + 1}"], **attrs))
        last = f"m{hop_index + 1}"
    nodes += [helper.make_node("Shape", ["x"], ["xs"]), _const("one_index", np.array([1], np.int64)),
              helper.make_node("Gather", ["xs", "one_index"], ["n"], axis=0),
              helper.make_node("Cast", ["n"], ["n_float"], to=FLOAT),
              _const("first", np.array([0], np.int64)), helper.make_node("Gather", ["x", "first"], ["h0"], axis=1)]
    # t = (0 - i) + n - 1: n is the second input of a node whose first one a step makes (mutant: the look for sizes
    # stopped at that first input)
    body_nodes = [_const("one", np.int64(1)), _const("zero", np.int64(0)), helper.make_node("Sub", ["zero", "i"], ["mi"]),
                  helper.make_node("Add", ["mi", "n"], ["n_mi"]), helper.make_node("Sub", ["n_mi", "one"], ["t"]),
                  helper.make_node("Gather", ["x", "t"], ["x_t"], axis=1),
                  helper.make_node("Add", ["h", "x_t"], ["h_next"] if not body_cast else ["h_mid"])]
    if body_cast:
        body_nodes.append(helper.make_node("Add", ["h_mid", "n_float"], ["h_next"]))
    state = ["batch", 1, D, 5]
    body = _cond_body(body_nodes, [helper.make_tensor_value_info("h", FLOAT, state)],
                      [helper.make_tensor_value_info("h_next", FLOAT, state)])
    nodes.append(helper.make_node("Loop", [last, "", "h0"], ["h_last"], body=body, name="loop"))
    return _model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["batch", L, D, 5])],
                  [helper.make_tensor_value_info("h_last", FLOAT, state)])


def _x_feeds():
    return {"x": np.random.default_rng(0).standard_normal((2, L, D, 5)).astype(np.float32)}


@pytest.mark.parametrize("start, end, index", [(1, None, 0), (None, 2, -1), (1, 3, -2), (None, None, 1)])
def test_a_trip_count_read_through_squeeze_cast_identity_from_a_sliced_shape(start, end, index, tmp_path):
    """Shape(x, start, end)[index] is L for each of these (read with the wrong start it is the batch or 5 or D; -2 is
    -len of the 2 sizes read); the body's n - 1 - i is a constant index each step, its n of shape [1] too."""
    model = _sized_loop(start, end, index)
    record, unrolled = _unroll(model, tmp_path)
    assert record.stats == {"unrolled": 1, "loops_unrolled": 1, "scans_unrolled": 0, "steps": L, "nodes_added": 39,
                            "sequences_concatenated": 0, "left": 0}
    # per step a Gather of a constant index (shape [1]: x_t is (batch, 1, D, 5)) and the Add; the Identity of h_L; h0's
    # Gather and its Constant; no Shape, Sub, Squeeze or Cast left
    assert _ops(unrolled) == {"Constant": 1, "Gather": L + 1, "Add": L, "Identity": 1}
    indices = [numpy_helper.to_array(tensor) for tensor in unrolled.graph.initializer if tensor.dims == [1]]
    assert sorted(int(value[0]) for value in indices) == list(range(L))
    _same(model, unrolled, _x_feeds())


def test_the_size_the_body_reads_as_another_type_is_read_as_it_is(tmp_path):
    """Cast(n, float) read by the body is no int64 size (exact: no hop through a Cast): it stays the outer value."""
    model = _sized_loop(1, None, 0, body_cast=True)
    record, unrolled = _unroll(model, tmp_path)
    assert record.stats["steps"] == L
    assert _ops(unrolled) == {"Shape": 1, "Constant": 2, "Gather": L + 2, "Cast": 1, "Add": 2 * L, "Identity": 1}
    _same(model, unrolled, _x_feeds())


def test_a_trip_count_is_read_through_eight_hops_and_more():
    """_static_size_read walks 8 Cast/Identity/Squeeze hops; since 0ca2b31 a longer chain is read as a computed trip count
    (up to MAX_TRIP_DEPTH), so 9 is unrolled too (the s28 run, on c5771e1, had 9 left)."""
    for hops in (("Identity",) * 8, ("Identity",) * 9):
        result = compile_model(_sized_loop(1, None, 0, hops=hops), "unroll-loops", verify="none")
        assert (result.records[0].stats["steps"], result.records[0].notes) == (L, [])


def test_a_trip_count_gathered_from_an_input_or_with_no_static_size_is_left():
    body = _cond_body([helper.make_node("Add", ["h", "h"], ["h_next"])], [helper.make_tensor_value_info("h", FLOAT, [D])],
                      [helper.make_tensor_value_info("h_next", FLOAT, [D])])
    nodes = [_const("zero", np.array([0], np.int64)), helper.make_node("Gather", ["sizes", "zero"], ["m"]),
             helper.make_node("Loop", ["m", "", "h0"], ["h_last"], body=body, name="loop")]
    model = _model(nodes, [helper.make_tensor_value_info("sizes", INT64, [2]), helper.make_tensor_value_info("h0", FLOAT, [D])],
                   [helper.make_tensor_value_info("h_last", FLOAT, [D])])
    result = compile_model(model, "unroll-loops", verify="none")
    assert result.records[0].notes == ["Loop 'loop' left as it is: its trip count M is neither a constant nor a static size"]
    assert result.records[0].changed is False


# -- what a step writes: once, or per step, or as a constant ----------------------------------------------------------

def _folding_loop(width: int):
    """A Loop of 3 steps whose body has: an initializer w (0.5), a Constant, Neg(x) (reads nothing the steps change:
    written once), idx = arange(width) + i (int64 index arithmetic: a constant each step up to 64 elements),
    Cast(i, float) * 2 (float arithmetic on i: per step), and reads the main graph's initializer `bias`."""
    body_nodes = [
        _const("table", np.arange(width, dtype=np.int64)),
        helper.make_node("Add", ["table", "i"], ["idx"]),
        helper.make_node("Gather", ["row", "idx"], ["picked"]),
        helper.make_node("ReduceSum", ["picked"], ["picked_sum"], keepdims=0),
        helper.make_node("Neg", ["x"], ["minus_x"]),
        helper.make_node("Cast", ["i"], ["i_float"], to=FLOAT),
        helper.make_node("Mul", ["i_float", "w"], ["half_i"]),
        helper.make_node("Add", ["h", "minus_x"], ["a1"]),
        helper.make_node("Add", ["a1", "half_i"], ["a2"]),
        helper.make_node("Add", ["a2", "picked_sum"], ["a3"]),
        helper.make_node("Add", ["a3", "bias"], ["h_next"]),
    ]
    body = _cond_body(body_nodes, [helper.make_tensor_value_info("h", FLOAT, [D])],
                      [helper.make_tensor_value_info("h_next", FLOAT, [D])])
    body.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "w"))
    nodes = [_const("M", np.int64(3)), helper.make_node("Loop", ["M", "", "h0"], ["h_last"], body=body, name="loop"),
             helper.make_node("Add", ["h_last", "bias"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("h0", FLOAT, [D]), helper.make_tensor_value_info("x", FLOAT, [D]),
                          helper.make_tensor_value_info("row", FLOAT, [width + 2])],
                  [helper.make_tensor_value_info("y", FLOAT, [D])],
                  initializers=[numpy_helper.from_array(np.full(D, 0.25, np.float32), "bias")])


@pytest.mark.parametrize("width, folded", [(64, True), (65, False)])
def test_index_arithmetic_of_up_to_64_elements_is_a_constant_and_invariants_are_written_once(width, folded, tmp_path):
    model = _folding_loop(width)
    record, unrolled = _unroll(model, tmp_path)
    assert record.stats["steps"] == 3
    # Neg(x) once; Cast and Mul of i: constants each step (Cast and Mul are evaluated ops: but float, so per step);
    # the index Add folded to a constant where it is at most 64 integers
    expected = {"Neg": 1, "Cast": 3, "Mul": 3, "Gather": 3, "ReduceSum": 3, "Add": 4 * 3 + 1 + (0 if folded else 3),
                "Identity": 1}
    assert {op: count for op, count in _ops(unrolled).items() if op != "Constant"} == expected
    # the main graph's `bias` stays one initializer, read by every step and by the last Add; w copied once
    names = sorted(tensor.name for tensor in unrolled.graph.initializer)
    assert names.count("bias") == 1 and "w" not in names
    assert sum(1 for tensor in unrolled.graph.initializer if list(tensor.dims) == [D]) == 1   # no copy of bias
    assert sum(1 for tensor in unrolled.graph.initializer if tensor.dims == [] and tensor.data_type == FLOAT
               and numpy_helper.to_array(tensor) == np.float32(0.5)) == 1
    tables = [tensor for tensor in unrolled.graph.initializer if tensor.dims == [width]]
    assert len(tables) == (3 if folded else 0)   # the 65-element table stays one Constant node
    rng = np.random.default_rng(1)
    feeds = {"h0": rng.standard_normal(D).astype(np.float32), "x": rng.standard_normal(D).astype(np.float32),
             "row": rng.standard_normal(width + 2).astype(np.float32)}
    expected_out, = run(model, feeds)
    got, = run(unrolled, feeds)
    assert np.allclose(got, expected_out, rtol=1e-6, atol=1e-6)


# -- the pass over several loops: stats, names, what it says ----------------------------------------------------------

def _doubling_loop(trip_name: str, carried_in: str, carried_out: str, name: str, cond: str = "") -> onnx.NodeProto:
    body = _cond_body([helper.make_node("Add", ["h", "h"], ["h_next"])], [helper.make_tensor_value_info("h", FLOAT, [D])],
                      [helper.make_tensor_value_info("h_next", FLOAT, [D])])
    return helper.make_node("Loop", [trip_name, cond, carried_in], [carried_out], body=body, name=name)


def _scan_sum(inputs: list[str], output: str, name: str) -> onnx.NodeProto:
    body = helper.make_graph([helper.make_node("Sum", ["s"] + [f"{n}_t" for n in inputs], ["s_next"]),
                              helper.make_node("Identity", ["s_next"], ["y_t"])], "scan_body",
                             [helper.make_tensor_value_info("s", FLOAT, [D])]
                             + [helper.make_tensor_value_info(f"{n}_t", FLOAT, [D]) for n in inputs],
                             [helper.make_tensor_value_info("s_next", FLOAT, [D]), helper.make_tensor_value_info("y_t", FLOAT, [D])])
    return helper.make_node("Scan", ["s0"] + inputs, [f"{output}_last", output], body=body, num_scan_inputs=len(inputs),
                            name=name)


def test_stats_names_and_notes_over_a_left_loop_and_two_unrolled_ones(tmp_path):
    """A Loop left (cond false), then a Loop of 2 steps and a Scan of 4: the left one does not stop the others; steps
    and nodes are summed over both; each one's nodes are named under unroll_loops/<op><index of the loop>/."""
    nodes = [_const("two", np.int64(2)), _const("false", np.bool_(False)),
             _doubling_loop("two", "h0", "h_left", "stays", cond="false"),
             _doubling_loop("two", "h0", "h2", "first"),
             _scan_sum(["xs"], "ys", "second"),
             helper.make_node("Add", ["h2", "h_left"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info(n, FLOAT, [D]) for n in ("h0", "s0")]
                   + [helper.make_tensor_value_info("xs", FLOAT, [4, D])],
                   [helper.make_tensor_value_info("y", FLOAT, [D]), helper.make_tensor_value_info("ys", FLOAT, [4, D])])
    record, unrolled = _unroll(model, tmp_path)
    assert record.changed is True
    assert record.stats == {"unrolled": 2, "loops_unrolled": 1, "scans_unrolled": 1, "steps": 6, "nodes_added": 2 * 2 + 1 + 4 * 4 + 2,
                            "sequences_concatenated": 0, "left": 1}
    assert record.notes == ["Loop 'stays' left as it is: its cond input is not a constant true"]
    made = [node.name for node in unrolled.graph.node if node.op_type not in ("Loop", "Constant")][:-1]
    assert made and all(name.startswith(("unroll_loops/loop1/", "unroll_loops/scan2/")) for name in made)
    assert {name.split("/")[1] for name in made} == {"loop1", "scan2"}
    rng = np.random.default_rng(2)
    _same(model, unrolled, {"h0": rng.standard_normal(D).astype(np.float32), "s0": rng.standard_normal(D).astype(np.float32),
                            "xs": rng.standard_normal((4, D)).astype(np.float32)})


def test_a_graph_whose_loops_are_all_left_or_that_has_none_is_unchanged():
    nodes = [_const("two", np.int64(2)), _doubling_loop("two", "h0", "y", "stays", cond="go")]
    model = _model(nodes, [helper.make_tensor_value_info("h0", FLOAT, [D]), helper.make_tensor_value_info("go", BOOL, [])],
                   [helper.make_tensor_value_info("y", FLOAT, [D])])
    record = compile_model(model, "unroll-loops", verify="none").records[0]
    assert (record.changed, record.stats) == (False, {"unrolled": 0, "left": 1})
    assert record.notes == ["Loop 'stays' left as it is: its cond input is not a constant true"]
    plain = _model([helper.make_node("Relu", ["h0"], ["y"])], [helper.make_tensor_value_info("h0", FLOAT, [D])],
                   [helper.make_tensor_value_info("y", FLOAT, [D])])
    record = compile_model(plain, "unroll-loops", verify="none").records[0]
    assert (record.changed, record.stats, record.notes) == (False, {"unrolled": 0}, [])


def test_a_long_unroll_says_each_step_on_its_status_line(monkeypatch):
    import passes.unroll_loops as unroll_loops
    model = _model([_const("three", np.int64(3)), _doubling_loop("three", "h0", "y", "loop")],
                   [helper.make_tensor_value_info("h0", FLOAT, [D])], [helper.make_tensor_value_info("y", FLOAT, [D])])
    lines: list[str] = []
    unroll_loops.UnrollLoops().run(gs.import_onnx(model), PassContext(opset=17, log=lines.append))
    assert lines == []     # 3 steps take far less than PROGRESS_EVERY_SECONDS
    monkeypatch.setattr(unroll_loops, "PROGRESS_EVERY_SECONDS", 0.0)
    result = unroll_loops.UnrollLoops().run(gs.import_onnx(model), PassContext(opset=17, log=lines.append))
    assert result.stats["steps"] == 3
    # a step writes the Add and the cond's Identity
    assert lines == [f"unrolling Loop 0: step {step}/3, {2 * step} nodes, 0 s" for step in (1, 2, 3)]


# -- Loop and Scan signatures -----------------------------------------------------------------------------------------

def test_a_loop_without_carried_values_and_one_with_two_scan_outputs_and_a_read_cond(tmp_path):
    """No loop-carried value (only a scan output of i * 2); one carried value with two scan outputs, stacked in their
    order; the body reading its cond input (true on every step) as a float."""
    only_scan = _cond_body([helper.make_node("Cast", ["i"], ["i_f"], to=FLOAT),
                            helper.make_node("Mul", ["i_f", "c2"], ["twice"])], [],
                           [helper.make_tensor_value_info("twice", FLOAT, [])], name="only_scan")
    two_scans = _cond_body([helper.make_node("Cast", ["cond_in"], ["cond_f"], to=FLOAT),
                            helper.make_node("Add", ["h", "cond_f"], ["h_next"]),
                            helper.make_node("Neg", ["h_next"], ["minus"]),
                            helper.make_node("Mul", ["h_next", "c2"], ["double"])],
                           [helper.make_tensor_value_info("h", FLOAT, [D])],
                           [helper.make_tensor_value_info("h_next", FLOAT, [D]), helper.make_tensor_value_info("minus", FLOAT, [D]),
                            helper.make_tensor_value_info("double", FLOAT, [D])], name="two_scans")
    nodes = [_const("M", np.int64(4)), _const("c2", np.float32(2.0)), _const("true", np.bool_(True)),
             helper.make_node("Loop", ["M", "true"], ["twices"], body=only_scan),
             helper.make_node("Loop", ["M", "", "h0"], ["h_last", "minuses", "doubles"], body=two_scans)]
    model = _model(nodes, [helper.make_tensor_value_info("h0", FLOAT, [D])],
                   [helper.make_tensor_value_info("twices", FLOAT, [4]), helper.make_tensor_value_info("h_last", FLOAT, [D]),
                    helper.make_tensor_value_info("minuses", FLOAT, [4, D]), helper.make_tensor_value_info("doubles", FLOAT, [4, D])])
    record, unrolled = _unroll(model, tmp_path)
    assert record.stats["loops_unrolled"] == 2 and record.stats["steps"] == 8
    twices, h_last, minuses, doubles = run(unrolled, {"h0": np.zeros(D, np.float32)})
    assert np.array_equal(twices, np.array([0.0, 2.0, 4.0, 6.0], np.float32))
    assert np.array_equal(h_last, np.full(D, 4.0, np.float32))
    assert np.array_equal(minuses, -np.repeat(np.arange(1.0, 5.0, dtype=np.float32)[:, None], D, axis=1))
    assert np.array_equal(doubles, -2 * minuses)
    _same(model, unrolled, {"h0": np.ones(D, np.float32)})


@pytest.mark.parametrize("cond_value, note", [(False, "its cond input is not a constant true")])
def test_a_constant_false_cond_input_is_left(cond_value, note):
    nodes = [_const("two", np.int64(2)), _const("c", np.bool_(cond_value)), _doubling_loop("two", "h0", "y", "loop", cond="c")]
    model = _model(nodes, [helper.make_tensor_value_info("h0", FLOAT, [D])], [helper.make_tensor_value_info("y", FLOAT, [D])])
    record = compile_model(model, "unroll-loops", verify="none").records[0]
    assert record.notes == [f"Loop 'loop' left as it is: {note}"]


def _scan_model(axis: int, states: int = 1, outputs: int = 2, opset: int = 17, lengths=(L, L)):
    """A Scan over one or two inputs x (and z) of (L, D) along `axis`: states s -> s + x_t; scan outputs s and 2 s."""
    scanned = ["x", "z"][:len(lengths) if len(lengths) > 1 else 1]
    body_nodes = [helper.make_node("Sum", ["s"] + [f"{n}_t" for n in scanned], ["s_next"]),
                  helper.make_node("Identity", ["s_next"], ["y0"]), helper.make_node("Add", ["s_next", "s_next"], ["y1"])]
    body = helper.make_graph(body_nodes, "body",
                             [helper.make_tensor_value_info("s", FLOAT, [D])]
                             + [helper.make_tensor_value_info(f"{n}_t", FLOAT, [D]) for n in scanned],
                             [helper.make_tensor_value_info("s_next", FLOAT, [D])]
                             + [helper.make_tensor_value_info(f"y{k}", FLOAT, [D]) for k in range(outputs)])
    scan = helper.make_node("Scan", ["s0"] + scanned, ["s_last"] + [f"ys{k}" for k in range(outputs)], body=body,
                            num_scan_inputs=len(scanned), scan_input_axes=[axis] * len(scanned), name="scan")
    inputs = [helper.make_tensor_value_info("s0", FLOAT, [D])] + [
        helper.make_tensor_value_info(n, FLOAT, [length, D] if axis in (0, -2) else [D, length])
        for n, length in zip(scanned, lengths)]
    return _model([scan], inputs, [helper.make_tensor_value_info("s_last", FLOAT, [D])]
                  + [helper.make_tensor_value_info(f"ys{k}", FLOAT, [L, D]) for k in range(outputs)], opset=opset)


@pytest.mark.parametrize("axis, opset", [(-2, 17), (0, 9)])
def test_a_scan_of_one_input_at_axis_minus_rank_or_opset_9_with_two_scan_outputs(axis, opset, tmp_path):
    model = _scan_model(axis, lengths=(L,), opset=opset)
    record, unrolled = _unroll(model, tmp_path)
    assert (record.stats["scans_unrolled"], record.stats["steps"]) == (1, L)
    assert _ops(unrolled) == {"Gather": L, "Sum": L, "Identity": L + 1, "Add": L, "Unsqueeze": 2 * L, "Concat": 2}
    x = np.random.default_rng(3).standard_normal((L, D)).astype(np.float32)
    s_last, ys0, ys1 = run(unrolled, {"s0": np.zeros(D, np.float32), "x": x})
    assert np.allclose(ys0, np.cumsum(x, axis=0), rtol=1e-6, atol=1e-6) and np.array_equal(ys1, 2 * ys0)
    _same(model, unrolled, {"s0": np.ones(D, np.float32), "x": x})


def test_a_scan_input_without_a_static_length_or_of_another_length_is_left_with_its_note():
    model = _scan_model(0, lengths=(L, L))
    model.graph.input[1].type.tensor_type.shape.dim[0].dim_param = "n"
    record = compile_model(model, "unroll-loops", verify="none").records[0]
    assert record.notes == ["Scan 'scan' left as it is: scan input 'x' has no static size along axis 0"]
    record = compile_model(_scan_model(0, lengths=(L, 4)), "unroll-loops", verify="none").records[0]
    assert record.notes == ["Scan 'scan' left as it is: its scan inputs differ in length ([4, 6])"]


# -- sequences --------------------------------------------------------------------------------------------------------

def _appending_loop(position: bool = False, new_axis=None, second: bool = False):
    """Each step appends h_t (h doubled) to a sequence (the first Loop's at position 0 where `position`); ConcatFromSequence after it
    (axis 0, `new_axis` as given, none: the default 0); `second`: a second such sequence from a second Loop."""
    def loop(index: int) -> list[onnx.NodeProto]:
        inserted = ["seq_in", "h_next"] + (["zero"] if position and index == 0 else [])
        body = _cond_body([helper.make_node("Add", ["h", "h"], ["h_next"]),
                           helper.make_node("SequenceInsert", inserted, ["seq_out"])],
                          [helper.make_tensor_value_info("h", FLOAT, [D]), helper.make_tensor_sequence_value_info("seq_in", FLOAT, None)],
                          [helper.make_tensor_value_info("h_next", FLOAT, [D]),
                           helper.make_tensor_sequence_value_info("seq_out", FLOAT, None)])
        attrs = {"axis": 0} if new_axis is None else {"axis": 0, "new_axis": new_axis}
        return [helper.make_node("SequenceEmpty", [], [f"seq0_{index}"], dtype=FLOAT),
                helper.make_node("Loop", ["M", "", "h0", f"seq0_{index}"], [f"h_last{index}", f"seq{index}"], body=body),
                helper.make_node("ConcatFromSequence", [f"seq{index}"], [f"ys{index}"], **attrs)]
    nodes = [_const("M", np.int64(3)), _const("zero", np.int64(0))] + loop(0) + (loop(1) if second else [])
    outputs = [helper.make_tensor_value_info(f"ys{k}", FLOAT, [3, D] if new_axis else [3 * D])
               for k in range(2 if second else 1)]
    return _model(nodes, [helper.make_tensor_value_info("h0", FLOAT, [D])], outputs)


@pytest.mark.parametrize("new_axis, shape", [(None, (3 * D,)), (0, (3 * D,)), (1, (3, D))])
def test_a_sequence_concatenated_without_new_axis_is_a_concat_of_the_elements(new_axis, shape, tmp_path):
    model = _appending_loop(new_axis=new_axis, second=True)
    record, unrolled = _unroll(model, tmp_path)
    assert record.stats["sequences_concatenated"] == 2
    assert _ops(unrolled) == {"Add": 6, "Concat": 2, **({"Unsqueeze": 6} if new_axis else {})}
    assert all(name.startswith("unroll_loops/sequence") for name in
               (node.name for node in unrolled.graph.node if node.op_type == "Concat"))
    ys0, ys1 = run(unrolled, {"h0": np.ones(D, np.float32)})
    assert ys0.shape == shape and np.array_equal(ys0.reshape(3, D), np.repeat([[2.0], [4.0], [8.0]], D, axis=1))
    _same(model, unrolled, {"h0": np.ones(D, np.float32)})


def test_a_sequence_inserted_at_a_position_stays_a_sequence(tmp_path):
    model = _appending_loop(position=True)
    record, unrolled = _unroll(model, tmp_path)
    assert record.stats["sequences_concatenated"] == 0
    assert _ops(unrolled)["SequenceInsert"] == 3 and _ops(unrolled)["ConcatFromSequence"] == 1
    ys0, = run(unrolled, {"h0": np.ones(D, np.float32)})
    assert np.array_equal(ys0, np.repeat([8.0, 4.0, 2.0], D).astype(np.float32))
    _same(model, unrolled, {"h0": np.ones(D, np.float32)})


def test_a_sequence_left_does_not_stop_the_next_one_from_becoming_a_concat(tmp_path):
    model = _appending_loop(position=True, second=True)
    record, unrolled = _unroll(model, tmp_path)
    assert record.stats["sequences_concatenated"] == 1
    assert (_ops(unrolled)["ConcatFromSequence"], _ops(unrolled)["Concat"]) == (1, 1)
    _same(model, unrolled, {"h0": np.ones(D, np.float32)})


def test_a_one_step_loop_and_an_unseeded_random_op_are_written_out(tmp_path):
    """One step is a loop to write out (mutants: `<= 1`, `< 2`); an unseeded RandomUniformLike draws afresh each step
    in ONNX Runtime's Loop as in the copies: written once per step, not left (mutant: any node with a seed attribute
    or a random op taken for a seeded one)."""
    nodes = [_const("one", np.int64(1)), _doubling_loop("one", "h0", "y", "loop")]
    model = _model(nodes, [helper.make_tensor_value_info("h0", FLOAT, [D])], [helper.make_tensor_value_info("y", FLOAT, [D])])
    record, unrolled = _unroll(model, tmp_path)
    assert record.stats["steps"] == 1 and _ops(unrolled) == {"Add": 1, "Identity": 1}
    body = _cond_body([helper.make_node("RandomUniformLike", ["h"], ["r"]), helper.make_node("Add", ["h", "r"], ["h_next"])],
                      [helper.make_tensor_value_info("h", FLOAT, [D])], [helper.make_tensor_value_info("h_next", FLOAT, [D])])
    nodes = [_const("three", np.int64(3)), helper.make_node("Loop", ["three", "", "h0"], ["y"], body=body, name="noisy")]
    model = _model(nodes, [helper.make_tensor_value_info("h0", FLOAT, [D])], [helper.make_tensor_value_info("y", FLOAT, [D])])
    record = compile_model(model, "unroll-loops", verify="none").records[0]
    assert record.stats["steps"] == 3 and _ops(record_model := compile_model(model, "unroll-loops", verify="none").model)[
        "RandomUniformLike"] == 3, _ops(record_model)
    y, = run(record_model, {"h0": np.zeros(D, np.float32)})
    assert np.all((y >= 0) & (y < 3))


def test_a_body_op_of_another_domain_and_one_of_two_outputs_keep_their_domain_and_outputs(tmp_path):
    """com.microsoft's Gelu and a Split into two halves (swapped by a Concat), per step and once for all steps: each
    copy keeps its domain and both outputs (mutants: the domain or the output count not passed to the copies)."""
    body = _cond_body([helper.make_node("Gelu", ["h"], ["g"], domain="com.microsoft"),
                       helper.make_node("Split", ["g"], ["first", "second"], axis=0),
                       helper.make_node("Concat", ["second", "first"], ["swapped"], axis=0),
                       # the same of the outer c, which no step changes: written once
                       helper.make_node("Gelu", ["c"], ["gc"], domain="com.microsoft"),
                       helper.make_node("Split", ["gc"], ["c1", "c2"], axis=0),
                       helper.make_node("Concat", ["c2", "c1"], ["c_swapped"], axis=0),
                       helper.make_node("Add", ["swapped", "c_swapped"], ["h_next"])],
                      [helper.make_tensor_value_info("h", FLOAT, [4])], [helper.make_tensor_value_info("h_next", FLOAT, [4])])
    graph = helper.make_graph([_const("M", np.int64(3)), helper.make_node("Loop", ["M", "", "h0"], ["y"], body=body)], "g",
                              [helper.make_tensor_value_info(name, FLOAT, [4]) for name in ("h0", "c")],
                              [helper.make_tensor_value_info("y", FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    record, unrolled = _unroll(model, tmp_path)
    assert record.stats["steps"] == 3
    assert _ops(unrolled) == {"Gelu": 4, "Split": 4, "Concat": 4, "Add": 3, "Identity": 1}
    assert {node.domain for node in unrolled.graph.node if node.op_type == "Gelu"} == {"com.microsoft"}
    _same(model, unrolled, {"h0": np.array([-1.0, 0.5, 2.0, 3.0], np.float32),
                            "c": np.array([0.25, -2.0, 1.5, 0.0], np.float32)})


# --- s36 (mut39): adv23's shapes at later steps (_static_dims, shapes_hold_later) ---------------------------------

@pytest.mark.parametrize("carried, initial, later", [
    ([1, 4], [1, 4], [1, 4]), (["L", 4], [1, 4], None), ([1, 4], ["N", 4], [1, 4]), (None, [1, 4], [1, 4])],
    ids=["static-carried-shape-kept", "symbolic-carried-shape", "body-declares-static-initial-symbolic",
         "body-declares-none-initial-static"])
def test_later_steps_keep_the_bodys_declared_shapes_only_where_the_carried_shapes_are_static_and_kept(
        carried, initial, later):
    """h carried through t = Relu(h) (declared [1, 4]) and h2 = Neg(t), h2 declared [1, 4] (as h where declared): the
    shape h comes in with is the body input's where declared, else the initial value's. Every step keeps t's
    declared shape where that is [1, 4] (mutants that read every static shape as not static, or took the initial
    value's shape over the body's or the reverse, dropped them at steps 1 and 2); where h is ['L', 4] in and out (the
    body's symbol, not the outer graph's), the later steps keep the element type only (a mutant that read a symbolic
    size as static copied it), the first step its declaration still."""
    from passes.graph_io import model_to_graph
    from passes.registry import get_pass

    body = helper.make_graph(
        [helper.make_node("Relu", ["h"], ["t"]), helper.make_node("Neg", ["t"], ["h2"]),
         helper.make_node("Identity", ["c"], ["c2"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, carried)],
        [helper.make_tensor_value_info("c2", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h2", TensorProto.FLOAT, carried or [1, 4])],
        value_info=[helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])])
    graph = helper.make_graph([helper.make_node("Loop", ["n", "", "x"], ["y"], body=body)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, initial)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, initial)],
                              initializer=[numpy_helper.from_array(np.array(3, np.int64), "n")])
    gs_graph = model_to_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    result = get_pass("unroll-loops").run(gs_graph, PassContext(opset=17))
    assert result.changed
    relus = [node.outputs[0] for node in gs_graph.nodes if node.op == "Relu"]
    assert [(tensor.dtype, tensor.shape) for tensor in relus] == [(np.float32, [1, 4])] + [(np.float32, later)] * 2

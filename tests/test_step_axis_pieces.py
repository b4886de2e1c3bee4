"""A loop that keeps the step axis (`h = a[:, t:t+1] * h + b[:, t:t+1]`, h of shape (B, 1, D), readouts
`torch.cat(ys, 1)` along it): passes/step_axis_pieces.py reads its one-position Slices as steps for reroll-scans
(and passes/keepdim_pieces.py the readouts, inferred of size 1 along the Concat's axis), and puts back Slices that no
re-rolled scan took."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.reroll_scans import RerollScans
from passes.step_axis_pieces import gather_kept_steps
from scan_testing import apply_pass, op_histogram, rel_l2, run

B, L, D = 2, 5, 3


def _keep_step_axis_model(log_decays=False, opset=17, computed_bounds=False) -> onnx.ModelProto:
    """h_t = Slice(a, t, t+1, axis 1) * h_{t-1} + Slice(b, t, t+1, axis 1) from h = zeros (B, 1, D), y_t =
    ReduceSum(h_t * c, axis -1, keepdims 0) (B, 1), the y_t concatenated along axis 1; `log_decays`: a = Exp(la);
    `computed_bounds`: each bound Unsqueeze(a scalar Constant), as `do_constant_folding=False` exports it."""
    inits = [numpy_helper.from_array(np.linspace(-1, 1, D).astype(np.float32), "c"),
             numpy_helper.from_array(np.zeros((B, 1, D), np.float32), "h_init"),
             numpy_helper.from_array(np.array([1], np.int64), "axis"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(np.array([0], np.int64), "zero_axis")]
    nodes = [helper.make_node("Exp", ["la"], ["a"])] if log_decays else []
    previous = "h_init"
    for t in range(L):
        if computed_bounds:
            nodes += [helper.make_node("Constant", [], [f"t{t}"], value=numpy_helper.from_array(np.array(t, np.int64))),
                      helper.make_node("Constant", [], [f"t{t}_1"],
                                       value=numpy_helper.from_array(np.array(t + 1, np.int64))),
                      helper.make_node("Unsqueeze", [f"t{t}", "zero_axis"], [f"start{t}"]),
                      helper.make_node("Unsqueeze", [f"t{t}_1", "zero_axis"], [f"end{t}"])]
        else:
            inits += [numpy_helper.from_array(np.array([t], np.int64), f"start{t}"),
                      numpy_helper.from_array(np.array([t + 1], np.int64), f"end{t}")]
        nodes += [helper.make_node("Slice", ["a", f"start{t}", f"end{t}", "axis"], [f"a{t}"]),
                  helper.make_node("Slice", ["b", f"start{t}", f"end{t}", "axis"], [f"b{t}"]),
                  helper.make_node("Mul", [f"a{t}", previous], [f"ah{t}"]),
                  helper.make_node("Add", [f"ah{t}", f"b{t}"], [f"h{t}"]),
                  helper.make_node("Mul", [f"h{t}", "c"], [f"hc{t}"]),
                  helper.make_node("ReduceSum", [f"hc{t}", "last"], [f"y{t}"], keepdims=0)]
        previous = f"h{t}"
    nodes.append(helper.make_node("Concat", [f"y{t}" for t in range(L)], ["out"], axis=1))
    graph = helper.make_graph(nodes, "keep_step_axis",
                              [helper.make_tensor_value_info("la" if log_decays else "a", TensorProto.FLOAT, [B, L, D]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [B, L, D])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, L])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _feeds(log_decays=False):
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (B, L, D)).astype(np.float32)
    feeds = {"b": rng.normal(size=(B, L, D)).astype(np.float32)}
    feeds["la" if log_decays else "a"] = np.log(np.abs(a) + 0.1) if log_decays else a
    return feeds


def _expected(feeds):
    a = np.exp(feeds["la"]) if "la" in feeds else feeds["a"]
    c, h, out = np.linspace(-1, 1, D).astype(np.float32), np.zeros((B, 1, D), np.float32), []
    for t in range(L):
        h = a[:, t:t + 1] * h + feeds["b"][:, t:t + 1]
        out.append((h * c).sum(-1))
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("opset", [13, 17])
def test_a_loop_keeping_the_step_axis_is_rerolled(opset):
    """Before: "0 scans found", no reason (no step matched: each a_t is a Slice that keeps its axis)."""
    out, result = apply_pass(_keep_step_axis_model(opset=opset), RerollScans(form="parallel", chunk=2))
    assert result.stats == {"rerolled": 1, "steps": L, "rejected": 0, "keepdim_pieces_squeezed": 1,
                            "step_axis_pieces_gathered": 2}
    ops = op_histogram(out)
    assert (ops.get("ReduceSum"), ops.get("Add", 0) < L, ops.get("Gather", 0)) == (1, True, 0)
    feeds = _feeds()
    assert rel_l2(run(out, feeds)[0], _expected(feeds)) <= 1e-6


def test_slice_bounds_computed_from_constants_are_read_as_steps():
    """Session s23: `do_constant_folding=False` writes each bound Unsqueeze(Constant t): the Slices were no steps ('0
    scans found', no reason: a user's backward keep-step-axis loop with a dynamic batch, 406 -> cpu 118); now their
    bounds are evaluated, and the graph re-rolls to the constant-bounds model's, op for op (the Unsqueezes go)."""
    out, result = apply_pass(_keep_step_axis_model(computed_bounds=True), RerollScans(form="parallel", chunk=2))
    assert result.stats == {"rerolled": 1, "steps": L, "rejected": 0, "keepdim_pieces_squeezed": 1,
                            "step_axis_pieces_gathered": 2}
    folded, _ = apply_pass(_keep_step_axis_model(), RerollScans(form="parallel", chunk=2))
    assert op_histogram(out) == op_histogram(folded)
    feeds = _feeds()
    assert rel_l2(run(out, feeds)[0], _expected(feeds)) <= 1e-6


def test_exp_decays_behind_the_step_axis_unsqueeze_keep_their_log():
    """a = Exp(la) reaches the chain through the Unsqueeze that gives it a size-1 axis after the step axis: the
    log-space chunk24 form takes it (log a = Unsqueeze(la)); before, "the decays are not known to be > 0"."""
    out, result = apply_pass(_keep_step_axis_model(log_decays=True), RerollScans(form="chunk24", chunk=2))
    assert (result.stats["rerolled"], result.stats["rejected"]) == (1, 0)
    assert op_histogram(out).get("Log", 0) == 0   # the exponent itself, no Log of the decays
    feeds = _feeds(log_decays=True)
    assert rel_l2(run(out, feeds)[0], _expected(feeds)) <= 1e-5


def test_axis_keeping_slices_of_no_loop_are_put_back():
    """Two one-position Slices of an input added (read as a step's operand would be, so gathered for matching): no
    recurrence, so the Slices are read again and nothing made stays, the graph as it was."""
    inits = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in
             (("zero", 0), ("one", 1), ("two", 2), ("axis", 1))]
    nodes = [helper.make_node("Slice", ["a", "zero", "one", "axis"], ["s0"]),
             helper.make_node("Slice", ["a", "one", "two", "axis"], ["s1"]),
             helper.make_node("Add", ["s1", "s0"], ["out"])]
    graph = helper.make_graph(nodes, "no_loop", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [B, L, D])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, 1, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert (result.changed, result.stats) == (False, {"rerolled": 0, "steps": 0, "rejected": 0})
    assert [(node.op_type, list(node.input)) for node in out.graph.node] == \
        [(node.op_type, list(node.input)) for node in model.graph.node]


def test_split_pieces_keeping_their_axis_are_put_back_after_their_gathers():
    """transformers' Qwen3Next through dynamo splits its gates with Split(axis 3) into one-position pieces, each read
    by an Add: the pieces are sliced (split_pieces), the Slices gathered (step_axis_pieces). With no recurrence both
    are put back, the gathers first: put back last, they made the Adds read the Slices that the Split's restore had
    removed (an invalid graph: 'Slice_1_out is not output of any previous node')."""
    sizes = numpy_helper.from_array(np.array([1, 1], np.int64), "sizes")
    nodes = [helper.make_node("Split", ["x", "sizes"], ["p0", "p1"], axis=3),
             helper.make_node("Add", ["p0", "c"], ["s0"]),
             helper.make_node("Add", ["p1", "c"], ["s1"]),
             helper.make_node("Mul", ["s0", "s1"], ["out"])]
    graph = helper.make_graph(nodes, "gates", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 2]),
                                               helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 2, 3, 1])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 3, 1])], [sizes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))   # apply_pass runs the full checker
    assert (result.changed, result.stats) == (False, {"rerolled": 0, "steps": 0, "rejected": 0})
    assert [(node.op_type, list(node.input)) for node in out.graph.node] == \
        [(node.op_type, list(node.input)) for node in model.graph.node]


def test_decays_of_an_exp_moved_by_a_shape_op_have_its_exponent_moved_as_their_log():
    """Decays.of(Unsqueeze(Exp(z))): log a = Unsqueeze(z), the same axes; before, no log ("a Unsqueeze output")."""
    from passes.graph_builder import GraphBuilder
    from passes.scan_forms.decays import Decays

    graph = gs.Graph()
    z = gs.Variable("z", dtype=np.float32, shape=(B, L, D))
    builder = GraphBuilder(graph, 17, prefix="test")
    moved = builder.unsqueeze(builder.exp(z), [2])
    decays = Decays.of(builder, moved)
    assert decays.has_log
    log = decays.log.inputs[0]
    assert (log.op, log.inputs[0] is z, list(log.inputs[1].values)) == ("Unsqueeze", True, [2])
    negated = Decays.of(builder, builder.unsqueeze(builder.neg(z), [2]))
    assert not negated.has_log and "a Unsqueeze output" in negated.why_no_log


# gather_kept_steps on its own (s23's mutmut survivors: each guard of _kept_step and of the grouping loosened or
# dropped, `continue` made `break`, min_pieces 3, the gathers listed off by one all passed the tests above).

def _ints(name: str, *values: int) -> gs.Constant:
    return gs.Constant(name, np.array(values, np.int64))


def _slices_graph(specs, source_shape=(B, L, D), reader="Add"):
    """x sliced once per spec (name, start, end, axes, steps[, op]): axes None for a 3-input Slice, "" for an
    omitted axes input before steps, steps None for no steps input; each piece read by `reader`: "Add" (piece +
    piece), or "Mul->ReduceSum" / "Mul->Add" / "Sub->Add" (the first op of the piece and c, the second of that)."""
    x = gs.Variable("x", np.float32, None if source_shape is None else list(source_shape))
    nodes, pieces, outputs = [], [], []
    for name, start, end, axes, steps, *op in specs:
        inputs = [x, start if isinstance(start, gs.Tensor) else _ints(f"{name}_start", start),
                  _ints(f"{name}_end", end)]
        if axes is not None:
            inputs.append(_ints(f"{name}_axes", *axes) if axes != "" else gs.Variable.empty())
        if steps is not None:
            inputs.append(_ints(f"{name}_steps", steps))
        piece = gs.Variable(name, np.float32)
        nodes.append(gs.Node(op[0] if op else "Slice", f"{name}_node", inputs=inputs, outputs=[piece]))
        pieces.append(piece)
    for piece in pieces:
        out = gs.Variable(f"{piece.name}_read", np.float32)
        if reader == "Add":
            nodes.append(gs.Node("Add", inputs=[piece, piece], outputs=[out]))
        else:
            first, second = reader.split("->")
            mid = gs.Variable(f"{piece.name}_mid", np.float32)
            nodes += [gs.Node(first, inputs=[piece, gs.Variable("c", np.float32, [D])], outputs=[mid]),
                      gs.Node(second, inputs=[mid, mid] if second == "Add" else [mid], outputs=[out])]
        outputs.append(out)
    return gs.Graph(nodes=nodes, inputs=[x], outputs=outputs, opset=17), pieces


def _gathered(graph, pieces, taken=None):
    """gather_kept_steps' result, and {piece name: (Gather index, axis)} for each piece whose reader now reads
    Gather(Unsqueeze(x, axis + 1), index, axis) instead (checked to be that, and listed in the result's gathers)."""
    readers = {piece.name: piece.outputs[0] for piece in pieces if piece.outputs}
    done = gather_kept_steps(graph, 17, set() if taken is None else taken)
    listed = [node for steps in done for node in steps.gathers]
    found = {}
    for name, reader in readers.items():
        if reader.inputs[0].name == name:
            continue
        gather = reader.inputs[0].inputs[0]
        unsqueeze = gather.inputs[0].inputs[0]
        axis = gather.attrs["axis"]
        assert (gather.op, unsqueeze.op, unsqueeze.inputs[0].name) == ("Gather", "Unsqueeze", "x")
        assert list(unsqueeze.inputs[1].values) == [axis + 1] and gather in listed
        found[name] = (int(np.asarray(gather.inputs[1].values)), axis)
    return done, found


@pytest.mark.parametrize("specs, expected", [
    # one position at t = 1 and t = 3 along axis 1, step 1 given: both read as Gathers along axis 1
    ([("s1", 1, 2, [1], 1), ("s3", 3, 4, [1], 1)], {"s1": (1, 1), "s3": (3, 1)}),
    # no axes input: axis 0 (of length B = 2)
    ([("s0", 0, 1, None, None), ("s1", 1, 2, None, None)], {"s0": (0, 0), "s1": (1, 0)}),
    # axes omitted (an empty name) before a steps input: axis 0
    ([("s0", 0, 1, "", 1), ("s1", 1, 2, "", 1)], {"s0": (0, 0), "s1": (1, 0)}),
    # a negative axis of a known rank
    ([("s0", 0, 1, [-1], None), ("s1", 1, 2, [-1], None)], {"s0": (0, 2), "s1": (1, 2)}),
    # step 2, and two positions each: no steps
    ([("s0", 0, 1, [1], 2), ("s1", 1, 2, [1], 2)], {}),
    ([("s0", 0, 2, [1], None), ("s1", 2, 4, [1], None)], {}),
    # -2:-1 is one position, but from the end: not taken
    ([("s0", -2, -1, [1], None), ("s1", 0, 1, [1], None)], {}),
    # one kept Slice alone along its axis, beside a pair that is gathered
    ([("lone", 0, 1, [2], None), ("s1", 1, 2, [1], None), ("s2", 2, 3, [1], None)], {"s1": (1, 1), "s2": (2, 1)}),
    # the same position twice is one step, not two
    ([("s1", 1, 2, [1], None), ("again", 1, 2, [1], None)], {}),
    # one past the end of x's axis 1 (length L): that Slice is empty, where a Gather would fail
    ([("last", L - 1, L, [1], None), ("past", L, L + 1, [1], None)], {}),
    # a Slice that is no step first, then two steps
    ([("wide", 0, 2, [1], None), ("s1", 1, 2, [1], None), ("s2", 2, 3, [1], None)], {"s1": (1, 1), "s2": (2, 1)}),
    # a group past the end first, then one that fits
    ([("p4", L - 1, L, [1], None), ("p5", L, L + 1, [1], None), ("d0", 0, 1, [2], None), ("d1", 1, 2, [2], None)],
     {"d0": (0, 2), "d1": (1, 2)}),
    # an op with a Slice's inputs that is no Slice
    ([("c0", 0, 1, [1], None, "Clip"), ("c1", 1, 2, [1], None, "Clip")], {}),
])
def test_gather_kept_steps_takes_exactly_the_one_position_slices(specs, expected):
    graph, pieces = _slices_graph(specs)
    assert _gathered(graph, pieces)[1] == expected


def test_gather_kept_steps_leaves_slices_of_a_rank_1_or_unknown_rank_tensor():
    """A rank-1 source is a Shape's dims (`shape[0:1]`); a source of unknown rank cannot be proven to have a state's
    axes. A rank-2 source is taken, along axis 0 too."""
    specs = [("s0", 0, 1, [0], None), ("s1", 1, 2, [0], None)]
    assert _gathered(*_slices_graph(specs, source_shape=(L,)))[1] == {}
    assert _gathered(*_slices_graph(specs, source_shape=None))[1] == {}
    assert _gathered(*_slices_graph(specs, source_shape=(L, D)))[1] == {"s0": (0, 0), "s1": (1, 0)}


def test_gather_kept_steps_leaves_a_slice_with_a_computed_start():
    computed = gs.Variable("t", np.int64, [1])
    graph, pieces = _slices_graph([("s0", computed, 1, [1], None), ("s1", 1, 2, [1], None)])
    graph.inputs.append(computed)
    assert _gathered(graph, pieces)[1] == {}


@pytest.mark.parametrize("reader, taken", [("Mul->Add", True), ("Mul->ReduceSum", False), ("Sub->Add", False)])
def test_slices_are_gathered_only_where_one_is_read_as_a_steps_operand(reader, taken):
    """Add(Mul(a_t, h), b_t): a Mul into an Add reads a step's a_t; a Mul into a ReduceSum is a readout's
    coefficient (`(h * c_t).sum(-1)`), a Sub into an Add no step's operand: those stay Slices."""
    graph, pieces = _slices_graph([("s0", 0, 1, [1], None), ("s1", 1, 2, [1], None)], reader=reader)
    assert _gathered(graph, pieces)[1] == ({"s0": (0, 1), "s1": (1, 1)} if taken else {})


def test_gather_kept_steps_leaves_graph_outputs_squeezed_and_unread_slices():
    """Three Slices at t = 0, 1, 2 with one of them a graph output, squeezed, or read by nothing: the other two are
    gathered, that one stays (a graph output must keep its producer; Squeeze(Slice) is a step the pattern knows)."""
    for spoiler in ("output", "squeezed", "unread"):
        graph, pieces = _slices_graph([("s0", 0, 1, [1], None), ("s1", 1, 2, [1], None), ("s2", 2, 3, [1], None)])
        first = pieces[0]
        if spoiler == "output":
            graph.outputs.append(first)
        elif spoiler == "squeezed":
            first.outputs[0].op = "Squeeze"
        else:
            first.outputs.clear()
            graph.nodes = [node for node in graph.nodes if first not in node.inputs]
        done, found = _gathered(graph, pieces)
        assert found == {"s1": (1, 1), "s2": (2, 1)}, spoiler
        assert [len(steps.gathers) for steps in done] == [2], spoiler


def test_gather_kept_steps_says_what_it_made_and_takes_its_names():
    """Two groups (x along axis 1 and along axis 2): each a GatheredSteps of its source and axis, its Unsqueeze
    and Gathers as `made`, the Gathers in the Slices' order, its builder's prefix added to the caller's set."""
    graph, pieces = _slices_graph([("a2", 2, 3, [1], None), ("a0", 0, 1, [1], None),
                                   ("b1", 1, 2, [2], None), ("b0", 0, 1, [2], None)])
    taken = {"unrelated"}
    done, found = _gathered(graph, pieces, taken)
    assert found == {"a2": (2, 1), "a0": (0, 1), "b1": (1, 2), "b0": (0, 2)}
    assert [(steps.source.name, steps.axis) for steps in done] == [("x", 1), ("x", 2)]
    assert [[node.op for node in steps.made] for steps in done] == [["Unsqueeze", "Gather", "Gather"]] * 2
    assert [[int(np.asarray(node.inputs[1].values)) for node in steps.gathers] for steps in done] == [[2, 0], [1, 0]]
    assert all(steps.gathers == steps.made[1:] for steps in done)
    assert taken == {"unrelated", "reroll_scans/step_axis_pieces0", "reroll_scans/step_axis_pieces1"}
    assert all(node.name.startswith(f"reroll_scans/step_axis_pieces{index}/")
               for index, steps in enumerate(done) for node in steps.made)

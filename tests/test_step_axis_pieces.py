"""A loop that keeps the step axis (`h = a[:, t:t+1] * h + b[:, t:t+1]`, h of shape (B, 1, D), readouts
`torch.cat(ys, 1)` along it): passes/step_axis_pieces.py reads its one-position Slices as steps for reroll-scans
(and passes/keepdim_pieces.py the readouts, inferred of size 1 along the Concat's axis), and puts back Slices that no
re-rolled scan took."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.reroll_scans import RerollScans
from scan_testing import apply_pass, op_histogram, rel_l2, run

B, L, D = 2, 5, 3


def _keep_step_axis_model(log_decays=False, opset=17) -> onnx.ModelProto:
    """h_t = Slice(a, t, t+1, axis 1) * h_{t-1} + Slice(b, t, t+1, axis 1) from h = zeros (B, 1, D), y_t =
    ReduceSum(h_t * c, axis -1, keepdims 0) (B, 1), the y_t concatenated along axis 1; `log_decays`: a = Exp(la)."""
    inits = [numpy_helper.from_array(np.linspace(-1, 1, D).astype(np.float32), "c"),
             numpy_helper.from_array(np.zeros((B, 1, D), np.float32), "h_init"),
             numpy_helper.from_array(np.array([1], np.int64), "axis"),
             numpy_helper.from_array(np.array([-1], np.int64), "last")]
    nodes = [helper.make_node("Exp", ["la"], ["a"])] if log_decays else []
    previous = "h_init"
    for t in range(L):
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


def test_decays_of_an_exp_moved_by_a_shape_op_have_its_exponent_moved_as_their_log():
    """Decays.of(Unsqueeze(Exp(z))): log a = Unsqueeze(z), the same axes; before, no log ("a Unsqueeze output")."""
    import onnx_graphsurgeon as gs

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

"""Keepdim step outputs concatenated along their kept axis (`ys.append((h * c).sum(-1, keepdim=True))`, then
`torch.cat(ys, -1)`): passes/keepdim_pieces.py reads them as stacked for reroll-scans, and puts back a Concat that no
re-rolled scan took."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.reroll_scans import RerollScans
from scan_testing import apply_pass, gated_rnn_steps, op_histogram, rel_l2, run

B, L, D = 2, 5, 3


def _keepdim_model(concat_axis=-1, reduce="ReduceSum", opset=17) -> onnx.ModelProto:
    """h_t = a[:, t] * h_{t-1} + b[:, t], read out as y_t = reduce(h_t * c, axis -1, keepdims) (B, 1), the y_t
    concatenated along `concat_axis`."""
    nodes, inits = gated_rnn_steps(L, B, D, unsqueeze=False)
    inits.append(numpy_helper.from_array(np.linspace(-1, 1, D).astype(np.float32), "c"))
    axes_input = reduce == "ReduceSum" or opset >= 18
    if axes_input:
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "last"))
    for t in range(L):
        nodes.append(helper.make_node("Mul", [f"h{t}", "c"], [f"hc{t}"]))
        nodes.append(helper.make_node(reduce, [f"hc{t}", "last"], [f"y{t}"]) if axes_input
                     else helper.make_node(reduce, [f"hc{t}"], [f"y{t}"], axes=[-1]))
    nodes.append(helper.make_node("Concat", [f"y{t}" for t in range(L)], ["out"], axis=concat_axis))
    out_shape = [B, L] if concat_axis in (1, -1) else [B * L, 1]
    graph = helper.make_graph(nodes, "keepdim", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, L, D])
                                                 for n in ("a", "b")],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _feeds():
    rng = np.random.default_rng(0)
    return {"a": rng.uniform(-1, 1, (B, L, D)).astype(np.float32), "b": rng.normal(size=(B, L, D)).astype(np.float32)}


def _expected(feeds, reduce):
    c, h, out = np.linspace(-1, 1, D).astype(np.float32), np.zeros((B, D), np.float32), []
    for t in range(L):
        h = feeds["a"][:, t] * h + feeds["b"][:, t]
        out.append((h * c).sum(-1, keepdims=True) if reduce == "ReduceSum" else (h * c).mean(-1, keepdims=True))
    return np.concatenate(out, axis=-1)


@pytest.mark.parametrize("concat_axis", [1, -1])
@pytest.mark.parametrize("reduce, opset", [("ReduceSum", 17), ("ReduceMean", 17), ("ReduceMean", 18)])
def test_keepdim_readouts_concatenated_along_the_kept_axis_are_rerolled(concat_axis, reduce, opset):
    """Before: 0 scans ("per-step output 'y0' enters Concat 'out' without an Unsqueeze")."""
    out, result = apply_pass(_keepdim_model(concat_axis, reduce, opset), RerollScans(form="parallel", chunk=2))
    assert result.stats == {"rerolled": 1, "steps": L, "rejected": 0, "keepdim_pieces_squeezed": 1}
    assert op_histogram(out).get(reduce) == 1   # one reduction over all steps
    feeds = _feeds()
    assert rel_l2(run(out, feeds)[0], _expected(feeds, reduce)) <= 1e-6


def test_keepdim_pieces_concatenated_along_another_axis_are_left_as_they_were():
    """Concat along axis 0, which the reductions keep whole: no stack over steps, nothing squeezed, the graph
    unchanged (the chain left with its reason)."""
    model = _keepdim_model(concat_axis=0)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert (result.changed, result.stats) == (False, {"rerolled": 0, "steps": 0, "rejected": 1})
    assert [node.op_type for node in out.graph.node] == [node.op_type for node in model.graph.node]


def test_a_keepdim_concat_that_is_no_loop_is_put_back():
    """Two keepdim sums of an input joined along their kept axis, with no recurrence: squeezed for matching, put
    back when nothing re-rolled, the graph as it was."""
    inits = [numpy_helper.from_array(np.array([-1], np.int64), "last")]
    nodes = [helper.make_node("ReduceSum", ["a", "last"], ["s0"]),
             helper.make_node("ReduceMax", ["a"], ["s1"], axes=[-1]),
             helper.make_node("Concat", ["s0", "s1"], ["out"], axis=-1)]
    graph = helper.make_graph(nodes, "no_loop", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [B, L, D])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, L, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert (result.changed, result.stats) == (False, {"rerolled": 0, "steps": 0, "rejected": 0})
    assert [(node.op_type, list(node.input)) for node in out.graph.node] == \
        [(node.op_type, list(node.input)) for node in model.graph.node]

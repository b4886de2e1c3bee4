"""Keepdim step outputs concatenated along their kept axis (`ys.append((h * c).sum(-1, keepdim=True))`, then
`torch.cat(ys, -1)`): passes/keepdim_pieces.py reads them as stacked for reroll-scans, and puts back a Concat that no
re-rolled scan took."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.keepdim_pieces import _size_one_at, squeeze_keepdim_pieces
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


# What proves a piece has size 1 at the Concat's axis (keepdim_pieces._size_one_at): each guard pinned, since a
# piece squeezed at an axis of another size makes a graph that fails at run time.
def _reduction(op="ReduceSum", axes=(-1,), keepdims=1, as_input=True, noop=None, computed_axes=False):
    x = gs.Variable("x", np.float32, [B, L, D])
    inputs, attrs = [x], {"keepdims": keepdims}
    if computed_axes:
        inputs.append(gs.Variable("axes_from_somewhere", np.int64, [1]))
    elif axes is not None and as_input:
        inputs.append(gs.Constant("axes", np.array(axes, np.int64)))
    elif axes is not None:
        attrs["axes"] = list(axes)
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    out = gs.Variable("y", np.float32)
    gs.Node(op, "reduce", attrs=attrs, inputs=inputs, outputs=[out])
    return out


@pytest.mark.parametrize("kwargs, axis, sized_one", [
    ({}, 2, True),                                       # axes [-1] as an input, the Concat's axis 2 = -1
    ({}, 1, False),                                      # an axis the reduction keeps whole
    ({"keepdims": 0}, 2, False),                         # the reduced axis dropped: the axis is another one
    ({"op": "Mul"}, 2, False),                           # not a reduction
    ({"op": "ArgMax"}, 2, False),                        # one `axis`, not in the keepdim set
    ({"as_input": False, "axes": (1, -1)}, 1, True),     # axes as an attribute (ReduceMean before opset 18)
    ({"as_input": False, "axes": (1, -1)}, 0, False),
    ({"computed_axes": True}, 2, False),                 # axes computed at run time: not known
    ({"axes": None}, 0, True),                           # no axes: every axis reduced
    ({"axes": None, "noop": 1}, 0, False),               # ... unless then a no-op (noop_with_empty_axes)
    ({"axes": ()}, 1, True),                             # empty axes: every axis
    ({"axes": (), "noop": 1}, 1, False),
])
def test_a_piece_is_size_one_only_where_its_reduction_proves_it(kwargs, axis, sized_one):
    assert _size_one_at(_reduction(**kwargs), axis, rank=3) is sized_one


def test_keepdims_0_reductions_concatenated_are_not_squeezed():
    """Reductions over the last axis without keepdims give (B, L); joined along axis 1 their pieces have size L
    there, and squeezing them would fail at run time: nothing is rewired."""
    x = gs.Variable("x", np.float32, [B, L, D])
    pieces = []
    for t in range(2):
        piece = gs.Variable(f"s{t}", np.float32, [B, L])
        gs.Node("ReduceSum", f"sum{t}", attrs={"keepdims": 0},
                inputs=[x, gs.Constant(f"last{t}", np.array([-1], np.int64))], outputs=[piece])
        pieces.append(piece)
    out = gs.Variable("out", np.float32, [B, 2 * L])
    concat = gs.Node("Concat", "join", attrs={"axis": 1}, inputs=pieces, outputs=[out])
    graph = gs.Graph(nodes=[piece.inputs[0] for piece in pieces] + [concat], inputs=[x], outputs=[out], opset=17)
    assert squeeze_keepdim_pieces(graph, 17, set()) == []
    assert [node.op for node in graph.nodes] == ["ReduceSum", "ReduceSum", "Concat"]
    assert list(concat.inputs) == pieces


def test_a_two_piece_keepdim_concat_after_another_concat_is_squeezed():
    """Every qualifying Concat is taken, two pieces are enough, and one that does not qualify (joined
    inputs, first in the graph) neither stops the search nor is touched."""
    x = gs.Variable("x", np.float32, [B, L, D])
    other = gs.Node("Concat", "other", attrs={"axis": 0}, inputs=[x, x],
                    outputs=[gs.Variable("xx", np.float32, [2 * B, L, D])])
    sums = [gs.Node("ReduceSum", f"sum{t}", attrs={"keepdims": 1},
                    inputs=[x, gs.Constant(f"last{t}", np.array([-1], np.int64))],
                    outputs=[gs.Variable(f"s{t}", np.float32, [B, L, 1])]) for t in range(2)]
    join = gs.Node("Concat", "join", attrs={"axis": -1}, inputs=[node.outputs[0] for node in sums],
                   outputs=[gs.Variable("out", np.float32, [B, L, 2])])
    graph = gs.Graph(nodes=[other, *sums, join], inputs=[x], outputs=[other.outputs[0], join.outputs[0]], opset=17)
    [squeezed] = squeeze_keepdim_pieces(graph, 17, set())
    assert squeezed.concat is join and list(other.inputs) == [x, x]
    for piece, original in zip(join.inputs, squeezed.pieces):
        unsqueeze = piece.inputs[0]
        squeeze = unsqueeze.inputs[0].inputs[0]
        assert (unsqueeze.op, squeeze.op, squeeze.inputs[0]) == ("Unsqueeze", "Squeeze", original)
        assert [int(v) for v in squeeze.inputs[1].values] == [int(v) for v in unsqueeze.inputs[1].values] == [2]

"""A buffer written row by row from its own earlier rows (Qwen3Next's triangular solve through dynamo): found by
patterns/substitution_writes.py and named by reroll-scans, on a small synthetic forward substitution."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.reroll_scans import RerollScans
from patterns.substitution_writes import find_substitution_writes
from scan_testing import apply_pass, run

N = 6


def substitution(rows: int = N, reads: str = "values"):
    """buf[i] = buf[i] + sum_j buf[i, j] * buf[j] for i = 1 .. rows - 1, each a ScatterND into the buffer before
    (`reads` "values"); "shape": each update is x[i] expanded to Shape(buffer) row, the buffer read only through its
    Shape (as RecurrentGemma's writes of its states are)."""
    inits = [numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([2], np.int64), "two")]
    nodes, buffer = [], "x"
    for i in range(1, rows):
        inits += [numpy_helper.from_array(np.array(i, np.int64), f"i{i}"),
                  numpy_helper.from_array(np.array([[i]], np.int64), f"at{i}")]
        if reads == "values":
            nodes += [helper.make_node("Gather", [buffer, f"i{i}"], [f"row{i}"]),
                      helper.make_node("Unsqueeze", [f"row{i}", "one"], [f"col{i}"]),
                      helper.make_node("Mul", [f"col{i}", buffer], [f"terms{i}"]),
                      helper.make_node("ReduceSum", [f"terms{i}", "axis0"], [f"sum{i}"], keepdims=0),
                      helper.make_node("Add", [f"row{i}", f"sum{i}"], [f"new{i}"])]
        else:
            nodes += [helper.make_node("Shape", [buffer], [f"shape{i}"]),
                      helper.make_node("Slice", [f"shape{i}", "one", "two"], [f"width{i}"]),
                      helper.make_node("Gather", ["x", f"i{i}"], [f"row{i}"]),
                      helper.make_node("Expand", [f"row{i}", f"width{i}"], [f"new{i}"])]
        nodes += [helper.make_node("Unsqueeze", [f"new{i}", "axis0"], [f"update{i}"]),
                  helper.make_node("ScatterND", [buffer, f"at{i}", f"update{i}"], [f"buf{i}"], name=f"write{i}")]
        buffer = f"buf{i}"
    nodes.append(helper.make_node("Identity", [buffer], ["y"]))
    graph = helper.make_graph(nodes, "substitution", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, N])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, N])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_forward_substitution_is_named():
    """Five writes, each reading the buffer before: before s35 '0 scans found' alone; the graph is left as it was."""
    model = substitution()
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert (result.changed, result.stats) == (False, {"rerolled": 0, "steps": 0, "rejected": 0})
    assert result.notes == ["0 scans found", "buffer written at 5 steps from 'write1' (ScatterND), each write's update "
                            "computed from the buffer written before it: a forward substitution (a triangular solve, "
                            "each step reading every earlier one), not a linear step: left unrolled"]
    assert [(node.op_type, list(node.input)) for node in out.graph.node] == \
        [(node.op_type, list(node.input)) for node in model.graph.node]
    x = np.random.default_rng(0).normal(size=(N, N)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(model, {"x": x})[0])


def test_the_chain_is_every_write_in_order():
    (chain,) = find_substitution_writes(gs.import_onnx(substitution()))
    assert ([node.name for node in chain.writes], chain.anchor, chain.length) == (
        [f"write{i}" for i in range(1, N)], "write1", N - 1)


@pytest.mark.parametrize("rows, reads", [(4, "values"), (N, "shape")])
def test_short_chains_and_writes_reading_only_the_shape_are_no_substitution(rows, reads):
    """Three writes (under MIN_STEPS 4), or updates that read the buffer only through Shape (a loop's states written
    into a buffer): nothing found, no note."""
    model = substitution(rows, reads)
    assert find_substitution_writes(gs.import_onnx(model)) == []
    _, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert not any("forward substitution" in note for note in result.notes)

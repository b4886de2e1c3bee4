"""Mutation tests (s36, mut39) of patterns/running_max.py, patterns/substitution_writes.py and graph_query.linked_chains:
each case fails with a plausible bug that the existing tests (test_running_max, test_substitution_writes,
test_fuzz_running_max) let through. Loops from test_fuzz_running_max's builders, fixed cases only."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from patterns.running_max import find_running_maxima, rescaled_steps
from patterns.substitution_writes import find_substitution_writes
from test_fuzz_running_max import MaxLoop, Writes, check_max_loop, check_writes, max_loop, writes_model


def test_a_max_reading_a_sub_of_the_maximum_before_begins_a_new_chain():
    """m_4 = Max(m_3 - w, k_4): only an Add links a Max to the one before; a two-input Sub does not (found with the
    test `op != "Add" and arity != 2`: one chain of 8)."""
    spec = MaxLoop(8, max_first=[True] * 8, add_first=[True] * 8, broken=("Sub", 4))
    assert [[node.name for node in chain.maxes] for chain in find_running_maxima(gs.import_onnx(max_loop(spec)))] == \
        [[f"max{t}" for t in range(4)], [f"max{t}" for t in range(4, 8)]]
    check_max_loop(spec)



def _constant_led_loop(length: int = 5) -> onnx.ModelProto:
    """m_t = Max(m_{t-1} + w, k_t) and one linear step s_t = Add(b, Mul(a_t, s_{t-1})) with a_t = Sub(c, m_t): the
    Add's Mul second and the decay's constant first (the Max read past it); then readout = Add(Mul(c2, s_last), d),
    whose state alone reads the chain, and decoy = Div(Mul(a_last, s_last), b), a two-input node other than Add."""
    vector = lambda name, value: numpy_helper.from_array(np.full(3, value, np.float32), name)   # noqa: E731
    inits = [vector("m_init", -1e30), vector("w", -0.5), vector("c", 1.0), vector("s_init", 0.0), vector("b", 0.5),
             vector("c2", 2.0), vector("d", 0.25)]
    nodes, m, s = [], "m_init", "s_init"
    for t in range(length):
        inits.append(numpy_helper.from_array(np.array(t, np.int64), f"i{t}"))
        nodes += [helper.make_node("Gather", ["k", f"i{t}"], [f"k{t}"]),
                  helper.make_node("Add", [m, "w"], [f"mw{t}"]),
                  helper.make_node("Max", [f"mw{t}", f"k{t}"], [f"m{t}"], name=f"max{t}"),
                  helper.make_node("Sub", ["c", f"m{t}"], [f"a{t}"]),
                  helper.make_node("Mul", [f"a{t}", s], [f"p{t}"]),
                  helper.make_node("Add", ["b", f"p{t}"], [f"s{t}"], name=f"step{t}")]
        m, s = f"m{t}", f"s{t}"
    nodes += [helper.make_node("Mul", ["c2", s], ["q"]), helper.make_node("Add", ["q", "d"], ["y"], name="readout"),
              helper.make_node("Div", [f"p{length - 1}", "b"], ["z"], name="decoy")]
    graph = helper.make_graph(nodes, "constant_led", [helper.make_tensor_value_info("k", TensorProto.FLOAT, [length, 3])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [3]) for name in ("y", "z")],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_rescaled_steps_are_the_adds_of_a_mul_whose_decay_or_drive_reads_the_chain():
    """Each step_t, its decay read past a constant (a walk that stopped at the first tensor without a producer found
    none), its Mul the Add's second operand (a loop that stopped after the first found none), step0 too (its state
    the initial one: reading the chain only through the state, as a mutant that kept the states and dropped the
    Mul's operands did, loses it); not the readout, whose state is the chain's last Add (the state walked back reads
    the chain), nor the Div (a two-input node read as an Add)."""
    graph = gs.import_onnx(_constant_led_loop())
    (running,) = find_running_maxima(graph)
    assert [node.name for node in running.maxes] == [f"max{t}" for t in range(5)]
    assert [node.name for node in rescaled_steps(graph, running)] == [f"step{t}" for t in range(5)]


# --- patterns/substitution_writes.py -------------------------------------------------------------------------------

def _writes(update, rows: int = 6, opset: int = 17) -> onnx.ModelProto:
    """x written at rows 1 .. rows - 1 by ScatterND, each into the buffer before; `update(i, buffer)` gives the nodes
    computing row i's new values (named f"new{i}") and the initializers they read."""
    inits = [numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    nodes, buffer = [], "x"
    for i in range(1, rows):
        inits += [numpy_helper.from_array(np.array(i, np.int64), f"i{i}"),
                  numpy_helper.from_array(np.array([[i]], np.int64), f"at{i}")]
        made, made_inits = update(i, buffer)
        nodes += made
        inits += made_inits
        nodes += [helper.make_node("Unsqueeze", [f"new{i}", "axis0"], [f"update{i}"]),
                  helper.make_node("ScatterND", [buffer, f"at{i}", f"update{i}"], [f"buf{i}"], name=f"write{i}")]
        buffer = f"buf{i}"
    graph = helper.make_graph(nodes, "writes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 6])],
                              [helper.make_tensor_value_info(buffer, TensorProto.FLOAT, [6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _bias_first(i: int, buffer: str):
    """new = bias + buffer[i]: the update's first operand a constant, read before the buffer's row."""
    return ([helper.make_node("Gather", [buffer, f"i{i}"], [f"row{i}"]),
             helper.make_node("Add", [f"bias{i}", f"row{i}"], [f"new{i}"])],
            [numpy_helper.from_array(np.ones(6, np.float32), f"bias{i}")])


def _row_then_computed(i: int, buffer: str):
    """new = buffer[i] + (-x[i]): the buffer read by the first of two computed operands."""
    return ([helper.make_node("Gather", [buffer, f"i{i}"], [f"row{i}"]),
             helper.make_node("Gather", ["x", f"i{i}"], [f"xrow{i}"]),
             helper.make_node("Neg", [f"xrow{i}"], [f"neg{i}"]),
             helper.make_node("Add", [f"row{i}", f"neg{i}"], [f"new{i}"])], [])


def _deep_from_x(i: int, buffer: str):
    """new = Neg applied 8 times to x[i]: the buffer never read, the walk back still going at its depth."""
    nodes = [helper.make_node("Gather", ["x", f"i{i}"], [f"n{i}_0"])]
    nodes += [helper.make_node("Neg", [f"n{i}_{k}"], [f"n{i}_{k + 1}"]) for k in range(7)]
    nodes.append(helper.make_node("Neg", [f"n{i}_7"], [f"new{i}"]))
    return nodes, []


def _write_names(model: onnx.ModelProto) -> list[list[str]]:
    return [[node.name for node in chain.writes] for chain in find_substitution_writes(gs.import_onnx(model))]


@pytest.mark.parametrize("update", [_bias_first, _row_then_computed])
def test_a_write_reading_the_buffer_beside_other_operands_is_a_substitution(update):
    """The walk back from an update goes on past a constant operand read first (a `break` there: nothing found) and
    keeps every node's inputs at each depth, not the last node's alone (nothing found)."""
    assert _write_names(_writes(update)) == [[f"write{i}" for i in range(1, 6)]]


def test_an_update_computed_deep_from_the_input_alone_is_no_substitution():
    """Nine nodes from x to the update, the buffer never read: the walk ends at its depth with tensors left, none the
    buffer (nothing found; `any(t is not target)` named the chain)."""
    assert _write_names(_writes(_deep_from_x)) == []


def test_four_writes_are_a_chain_and_writes_that_reduce_are_none():
    """Exactly MIN_STEPS (4) writes are named; writes with a reduction (ScatterND reduction='add', opset 16) are no
    substitution, however their updates read the buffer."""
    four = writes_model(Writes(reads=["values"] * 4))
    assert _write_names(four) == [[f"write{i}" for i in range(1, 5)]]
    check_writes(Writes(reads=["values"] * 4))
    reducing = writes_model(Writes(reads=["values"] * 6))
    for node in reducing.graph.node:
        if node.op_type == "ScatterND":
            node.attribute.append(helper.make_attribute("reduction", "add"))
    onnx.checker.check_model(reducing, full_check=True)
    assert len(_write_names(writes_model(Writes(reads=["values"] * 6)))) == 1
    assert _write_names(reducing) == []

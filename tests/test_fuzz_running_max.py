"""Property tests (hypothesis) of the s35 notes: running maxima (patterns/running_max.py) and buffers written from their
own earlier values (patterns/substitution_writes.py), on random unrolled loops written with onnx.helper.

* RWKV-like and xLSTM-like loops, 2 to 12 steps, the Max's and the Add's operands in either order at each step, w a
  constant, an input or a step of an input, the initial maximum a constant or an input, one step's Max made Min or its
  Add made Sub, a maximum read by the next step through an Identity, a middle maximum also a graph output, the chain
  cut in two (a step reading the initial maximum again):
  reroll-scans never raises; where the loop re-rolls (s36: one run of Max steps adding one w, see `rerolls`) its
  outputs within 1e-6 and no running-maximum note, else the graph node for node as it was, its outputs equal, one note
  per run of 4 or more Max steps, naming its first Max, its step count and its first rescaled step, and no other.
* The same loop with states decayed by sigmoid(k_t) (the Max chain beside them, read by no step): both chains re-roll,
  equal in ONNX Runtime, and no running-maximum note.
* Scatter chains (ScatterND or ScatterElements, through Identity or not) whose updates read the buffer before through
  its values, its Shape only, or not at all, step by step: the substitution note exactly for each run of 4 or more
  writes each reading the one before's values (anchor and count), the graph unchanged.
"""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper
from fuzz_budget import examples

from passes.reroll_scans import RerollScans
from patterns.running_max import MIN_STEPS, find_running_maxima
from patterns.substitution_writes import find_substitution_writes
from scan_testing import apply_pass, rel_l2, run

D = 3
FUZZ = settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class MaxLoop:
    length: int
    kind: str = "rwkv"                   # "rwkv", "xlstm", or "linear": states decayed by sigmoid(k_t), the Max beside
    max_first: list = field(default_factory=list)   # per step: Max(m + w, k) (True) or Max(k, m + w)
    add_first: list = field(default_factory=list)   # per step: Add(m, w) (True) or Add(w, m)
    w: str = "const"                     # "const", "input", "per_step"
    initial: str = "const"               # "const", "input"
    broken: Optional[tuple] = None       # ("Min", t) or ("Sub", t)
    middle_output: Optional[int] = None  # m_t also a graph output
    cut: Optional[int] = None            # step t reads the initial maximum, not m_{t-1}
    identity: list = field(default_factory=list)    # per step: m_t read by the next step through an Identity
    prefix: str = ""                     # prepended to every node's and tensor's name


def _name(spec: MaxLoop, text: str) -> str:
    return spec.prefix + text


def max_loop(spec: MaxLoop) -> onnx.ModelProto:
    n = lambda text: _name(spec, text)   # noqa: E731
    L = spec.length
    inits = [numpy_helper.from_array(np.zeros(D, np.float32), n("zeros")),
             numpy_helper.from_array(np.array([0], np.int64), n("axis0"))]
    inputs = [helper.make_tensor_value_info(n("k"), TensorProto.FLOAT, [L, D]),
              helper.make_tensor_value_info(n("v"), TensorProto.FLOAT, [L, D])]
    if spec.initial == "const":
        inits.append(numpy_helper.from_array(np.full(D, -1e30, np.float32), n("m_init")))
    else:
        inputs.append(helper.make_tensor_value_info(n("m_init"), TensorProto.FLOAT, [D]))
    if spec.w == "const":
        inits.append(numpy_helper.from_array(np.full(D, -0.5, np.float32), n("w")))
    elif spec.w == "input":
        inputs.append(helper.make_tensor_value_info(n("w"), TensorProto.FLOAT, [D]))
    else:
        inputs.append(helper.make_tensor_value_info(n("w"), TensorProto.FLOAT, [L, D]))
    nodes, readouts, extra_outputs = [], [], []
    m, num, den = n("m_init"), n("zeros"), n("zeros")
    for t in range(L):
        if spec.cut == t:
            m = n("m_init")
        inits.append(numpy_helper.from_array(np.array(t, np.int64), n(f"i{t}")))
        k, v, w = n(f"k{t}"), n(f"v{t}"), n("w")
        nodes += [helper.make_node("Gather", [n("k"), n(f"i{t}")], [k], name=n(f"gk{t}")),
                  helper.make_node("Gather", [n("v"), n(f"i{t}")], [v], name=n(f"gv{t}"))]
        if spec.w == "per_step":
            w = n(f"w{t}")
            nodes.append(helper.make_node("Gather", [n("w"), n(f"i{t}")], [w], name=n(f"gw{t}")))
        if spec.kind == "xlstm":   # w_t = log(sigmoid(w_t)), xLSTM's log forget gate
            nodes += [helper.make_node("Sigmoid", [w], [n(f"fs{t}")], name=n(f"fs{t}")),
                      helper.make_node("Log", [n(f"fs{t}")], [n(f"lf{t}")], name=n(f"lf{t}"))]
            w = n(f"lf{t}")
        add_op = "Sub" if spec.broken == ("Sub", t) else "Add"
        add_inputs = [m, w] if spec.add_first[t] or add_op == "Sub" else [w, m]
        max_op = "Min" if spec.broken == ("Min", t) else "Max"
        mw, mt = n(f"mw{t}"), n(f"m{t}")
        nodes += [helper.make_node(add_op, add_inputs, [mw], name=n(f"mw{t}")),
                  helper.make_node(max_op, [mw, k] if spec.max_first[t] else [k, mw], [mt], name=n(f"max{t}"))]
        if spec.kind == "linear":
            e1, e2 = n(f"e1_{t}"), n(f"e2_{t}")
            nodes += [helper.make_node("Sigmoid", [k], [e1], name=n(f"e1_{t}")),
                      helper.make_node("Tanh", [k], [e2], name=n(f"e2_{t}"))]
        else:
            e1, e2 = n(f"e1_{t}"), n(f"e2_{t}")
            nodes += [helper.make_node("Sub", [mw, mt], [n(f"d{t}")], name=n(f"d{t}")),
                      helper.make_node("Exp", [n(f"d{t}")], [e1], name=n(f"e1_{t}")),
                      helper.make_node("Sub", [k, mt], [n(f"g{t}")], name=n(f"g{t}")),
                      helper.make_node("Exp", [n(f"g{t}")], [e2], name=n(f"e2_{t}"))]
        nodes += [helper.make_node("Mul", [e1, num], [n(f"nd{t}")], name=n(f"nd{t}")),
                  helper.make_node("Mul", [e2, v], [n(f"nv{t}")], name=n(f"nv{t}")),
                  helper.make_node("Add", [n(f"nd{t}"), n(f"nv{t}")], [n(f"num{t}")], name=n(f"num{t}")),
                  helper.make_node("Mul", [e1, den], [n(f"dd{t}")], name=n(f"dd{t}")),
                  helper.make_node("Add", [n(f"dd{t}"), e2], [n(f"den{t}")], name=n(f"den{t}"))]
        if spec.kind == "linear":   # each state stacked: the chains' readouts
            nodes += [helper.make_node("Unsqueeze", [n(f"num{t}"), n("axis0")], [n(f"yu{t}")], name=n(f"yu{t}")),
                      helper.make_node("Unsqueeze", [n(f"den{t}"), n("axis0")], [n(f"zu{t}")], name=n(f"zu{t}"))]
            extra_outputs.append(n(f"zu{t}"))
        elif spec.kind == "xlstm":   # h_t = num_t / Max(|den_t|, exp(-m_t)): a Max beside the chain, no running one
            nodes += [helper.make_node("Abs", [n(f"den{t}")], [n(f"ad{t}")], name=n(f"ad{t}")),
                      helper.make_node("Neg", [mt], [n(f"nm{t}")], name=n(f"nm{t}")),
                      helper.make_node("Exp", [n(f"nm{t}")], [n(f"en{t}")], name=n(f"en{t}")),
                      helper.make_node("Max", [n(f"ad{t}"), n(f"en{t}")], [n(f"q{t}")], name=n(f"q{t}")),
                      helper.make_node("Div", [n(f"num{t}"), n(f"q{t}")], [n(f"y{t}")], name=n(f"y{t}")),
                      helper.make_node("Unsqueeze", [n(f"y{t}"), n("axis0")], [n(f"yu{t}")], name=n(f"yu{t}"))]
        else:
            nodes += [helper.make_node("Div", [n(f"num{t}"), n(f"den{t}")], [n(f"y{t}")], name=n(f"y{t}")),
                      helper.make_node("Unsqueeze", [n(f"y{t}"), n("axis0")], [n(f"yu{t}")], name=n(f"yu{t}"))]
        readouts.append(n(f"yu{t}"))
        m, num, den = mt, n(f"num{t}"), n(f"den{t}")
        if spec.identity and spec.identity[t]:
            nodes.append(helper.make_node("Identity", [mt], [n(f"mi{t}")], name=n(f"mi{t}")))
            m = n(f"mi{t}")
    nodes.append(helper.make_node("Concat", readouts, [n("y")], axis=0, name=n("concat_y")))
    outputs = [helper.make_tensor_value_info(n("y"), TensorProto.FLOAT, [L, D])]
    if extra_outputs:
        nodes.append(helper.make_node("Concat", extra_outputs, [n("z")], axis=0, name=n("concat_z")))
        outputs.append(helper.make_tensor_value_info(n("z"), TensorProto.FLOAT, [L, D]))
    if spec.middle_output is not None:
        outputs.append(helper.make_tensor_value_info(n(f"m{spec.middle_output}"), TensorProto.FLOAT, [D]))
    graph = helper.make_graph(nodes, "max_loop", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def max_runs(spec: MaxLoop) -> list[list[int]]:
    """The steps of each run of Max steps chained through Add(m_{t-1}, w): a Min step, a Sub step or the cut starts a
    new one (a Min step is in none)."""
    runs, run_ = [], []
    for t in range(spec.length):
        if spec.broken == ("Min", t):
            runs.append(run_)
            run_ = []
            continue
        if t > 0 and (spec.broken == ("Sub", t) or spec.cut == t or spec.broken == ("Min", t - 1)):
            runs.append(run_)
            run_ = []
        run_.append(t)
    runs.append(run_)
    return [r for r in runs if r]


def max_feeds(spec: MaxLoop, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = lambda text: _name(spec, text)   # noqa: E731
    w_shape = (spec.length, D) if spec.w == "per_step" else (D,)
    return {n("k"): rng.standard_normal((spec.length, D)).astype(np.float32),
            n("v"): rng.standard_normal((spec.length, D)).astype(np.float32),
            n("w"): -np.exp(rng.standard_normal(w_shape)).astype(np.float32),
            n("m_init"): rng.standard_normal(D).astype(np.float32)}


NOTE_RE = (r"running maximum at '(?P<anchor>[^']*)' \((?P<steps>\d+) steps\), m_t = Max\(m_\{t-1\} \+ w_t, k_t\), "
           r"rescales the linear steps at '(?P<first>[^']*)'(?: and (?P<more>\d+) more)?: (?:their decays and drives "
           r"are computed from it, a max-plus recurrence, not a linear step \((?P<why>.*)\)|the maximum re-rolls as a "
           r"max-plus scan, but no chain of those steps does \(their own notes say why\)): left unrolled")


def edges(model: onnx.ModelProto) -> list:
    return [(node.op_type, node.name, list(node.input), list(node.output)) for node in model.graph.node]


@st.composite
def max_loops(draw, kind: Optional[str] = None) -> MaxLoop:
    length = draw(st.integers(2, 12))
    spec = MaxLoop(length=length, kind=kind or draw(st.sampled_from(["rwkv", "xlstm"])),
                   max_first=draw(st.lists(st.booleans(), min_size=length, max_size=length)),
                   add_first=draw(st.lists(st.booleans(), min_size=length, max_size=length)),
                   w=draw(st.sampled_from(["const", "input", "per_step"])),
                   initial=draw(st.sampled_from(["const", "input"])),
                   identity=draw(st.lists(st.booleans(), min_size=length, max_size=length)))
    if draw(st.booleans()):
        spec.broken = (draw(st.sampled_from(["Min", "Sub"])), draw(st.integers(0, length - 1)))
    if draw(st.booleans()):
        spec.middle_output = draw(st.integers(0, length - 1))
    if length > 2 and draw(st.booleans()):
        spec.cut = draw(st.integers(1, length - 1))
    return spec


def rerolls(spec: MaxLoop) -> bool:
    """The loop's num and den chains re-roll (s36: the running maximum as a max-plus scan): one run of Max steps over
    the whole loop, adding one w (not computed per step: xLSTM's log sigmoid, a step of an input), each step's Add in
    one operand order and no Identity between a maximum and the next step (the decays then one subgraph)."""
    return (spec.kind == "rwkv" and spec.w != "per_step" and spec.broken is None and spec.cut is None
            and spec.length >= MIN_STEPS and len(set(spec.add_first)) == 1 and not any(spec.identity[:-1]))


def check_max_loop(spec: MaxLoop, seed: int = 0) -> None:
    model = max_loop(spec)
    onnx.checker.check_model(model, full_check=True)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    runs = [r for r in max_runs(spec) if len(r) >= MIN_STEPS]
    feeds = max_feeds(spec, seed)
    if rerolls(spec):
        assert (result.stats["rerolled"], result.stats["steps"]) == (2, 2 * spec.length), result.notes
    if result.stats["rerolled"]:   # (elsewhere, the chains up to a step whose decay is made otherwise: its Add's order)
        assert spec.kind == "rwkv" and spec.w != "per_step", result.notes
        for actual, expected in zip(run(out, feeds), run(model, feeds), strict=True):
            assert rel_l2(actual, expected) <= 1e-6
    else:   # nothing re-rolled: the graph node for node as it was (every scan and replay put back)
        assert not result.changed
        assert edges(out) == edges(model)
        for actual, expected in zip(run(out, feeds), run(model, feeds), strict=True):
            np.testing.assert_array_equal(actual, expected)
    notes = [re.fullmatch(NOTE_RE, note) for note in result.notes if "running maximum" in note]
    assert all(notes), result.notes
    named = [(note["anchor"], int(note["steps"])) for note in notes]
    every = [(_name(spec, f"max{r[0]}"), len(r)) for r in runs]
    if result.stats["rerolled"]:
        assert [item for item in every if item in named] == named, result.notes
    else:
        assert named == every, result.notes
    run_of = {_name(spec, f"max{r[0]}"): r for r in runs}
    for note in notes:
        r = run_of[note["anchor"]]
        # the steps rescaled: those of the run's steps and at most the two after (their decays read its last Max)
        assert note["first"] == _name(spec, f"num{r[0]}")
        count = 1 + int(note["more"] or 0)
        assert 2 * len(r) <= count <= 2 * (len(r) + 2), (count, r)
        if spec.w == "per_step" or spec.kind == "xlstm":   # w_t a different tensor at every step: named
            assert note["why"] is not None and note["why"].startswith("its w_t is not one tensor at every step")
    found = find_running_maxima(gs.import_onnx(model))
    assert [[node.name for node in chain.maxes] for chain in found] == \
        [[_name(spec, f"max{t}") for t in r] for r in runs]


@FUZZ
@given(spec=max_loops(), seed=st.integers(0, 2**16))
def test_running_maximum_notes_are_exact_and_the_graph_is_unchanged(spec, seed):
    check_max_loop(spec, seed)


@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=max_loops(kind="linear"), seed=st.integers(0, 2**16))
def test_linear_chains_beside_a_max_chain_reroll_without_a_running_maximum_note(spec, seed):
    """num and den decay by sigmoid(k_t): two linear chains that re-roll, whatever the Max chain beside them is."""
    model = max_loop(spec)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert (result.stats["rerolled"], result.stats["steps"]) == (2, 2 * spec.length), result.notes
    assert not any("running maximum" in note for note in result.notes), result.notes
    feeds = max_feeds(spec, seed)
    for actual, expected in zip(run(out, feeds), run(model, feeds), strict=True):
        assert rel_l2(actual, expected) <= 1e-6


# --- buffers written from their own earlier values ---------------------------------------------------------------

N = 13   # rows of the buffer: up to 12 writes


@dataclass
class Writes:
    reads: list                # per write: "values", "shape" or "none" (the update read from x alone)
    op: str = "ScatterND"      # or "ScatterElements"
    identity: list = field(default_factory=list)   # per write: the buffer it writes into seen through an Identity
    cut: Optional[int] = None  # write t writes into x, not the buffer before
    prefix: str = ""


def writes_model(spec: Writes) -> onnx.ModelProto:
    n = lambda text: spec.prefix + text   # noqa: E731
    inits = [numpy_helper.from_array(np.array([0], np.int64), n("axis0")),
             numpy_helper.from_array(np.array([1], np.int64), n("one")),
             numpy_helper.from_array(np.array([2], np.int64), n("two"))]
    nodes, buffer = [], n("x")
    for t, reads in enumerate(spec.reads):
        i = t + 1
        if spec.cut == t:
            buffer = n("x")
        if spec.identity and spec.identity[t]:
            nodes.append(helper.make_node("Identity", [buffer], [n(f"through{i}")], name=n(f"through{i}")))
            buffer = n(f"through{i}")
        inits.append(numpy_helper.from_array(np.array(i, np.int64), n(f"i{i}")))
        if reads == "values":
            nodes += [helper.make_node("Gather", [buffer, n(f"i{i}")], [n(f"row{i}")], name=n(f"row{i}")),
                      helper.make_node("Unsqueeze", [n(f"row{i}"), n("one")], [n(f"col{i}")], name=n(f"col{i}")),
                      helper.make_node("Mul", [n(f"col{i}"), buffer], [n(f"terms{i}")], name=n(f"terms{i}")),
                      helper.make_node("ReduceSum", [n(f"terms{i}"), n("axis0")], [n(f"sum{i}")], keepdims=0,
                                       name=n(f"sum{i}")),
                      helper.make_node("Add", [n(f"row{i}"), n(f"sum{i}")], [n(f"new{i}")], name=n(f"new{i}"))]
        elif reads == "shape":
            nodes += [helper.make_node("Shape", [buffer], [n(f"shape{i}")], name=n(f"shape{i}")),
                      helper.make_node("Slice", [n(f"shape{i}"), n("one"), n("two")], [n(f"width{i}")],
                                       name=n(f"width{i}")),
                      helper.make_node("Gather", [n("x"), n(f"i{i}")], [n(f"row{i}")], name=n(f"row{i}")),
                      helper.make_node("Expand", [n(f"row{i}"), n(f"width{i}")], [n(f"new{i}")], name=n(f"new{i}"))]
        else:
            nodes += [helper.make_node("Gather", [n("x"), n(f"i{i}")], [n(f"row{i}")], name=n(f"row{i}")),
                      helper.make_node("Tanh", [n(f"row{i}")], [n(f"new{i}")], name=n(f"new{i}"))]
        nodes.append(helper.make_node("Unsqueeze", [n(f"new{i}"), n("axis0")], [n(f"update{i}")], name=n(f"update{i}")))
        if spec.op == "ScatterND":
            inits.append(numpy_helper.from_array(np.array([[i]], np.int64), n(f"at{i}")))
        else:
            inits.append(numpy_helper.from_array(np.full((1, N), i, np.int64), n(f"at{i}")))
        nodes.append(helper.make_node(spec.op, [buffer, n(f"at{i}"), n(f"update{i}")], [n(f"buf{i}")],
                                      name=n(f"write{i}")))
        buffer = n(f"buf{i}")
    nodes.append(helper.make_node("Identity", [buffer], [n("y")], name=n("y")))
    graph = helper.make_graph(nodes, "writes", [helper.make_tensor_value_info(n("x"), TensorProto.FLOAT, [N, N])],
                              [helper.make_tensor_value_info(n("y"), TensorProto.FLOAT, [N, N])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def substitution_runs(spec: Writes) -> list[list[int]]:
    """Runs of writes (by index) each after the first reading the values of the buffer the one before wrote."""
    runs, run_ = [], []
    for t, reads in enumerate(spec.reads):
        if t == 0 or spec.cut == t or reads != "values":
            runs.append(run_)
            run_ = []
        run_.append(t)
    runs.append(run_)
    return [r for r in runs if len(r) >= MIN_STEPS]


def substitution_note(anchor: str, steps: int, op: str) -> str:
    return (f"buffer written at {steps} steps from '{anchor}' ({op}), each write's update computed from the buffer "
            "written before it: a forward substitution (a triangular solve, each step reading every earlier one), not "
            "a linear step: left unrolled")


@st.composite
def write_chains(draw) -> Writes:
    length = draw(st.integers(2, 12))
    spec = Writes(reads=draw(st.lists(st.sampled_from(["values", "values", "shape", "none"]), min_size=length,
                                      max_size=length)),
                  op=draw(st.sampled_from(["ScatterND", "ScatterElements"])),
                  identity=draw(st.lists(st.booleans(), min_size=length, max_size=length)))
    if length > 2 and draw(st.booleans()):
        spec.cut = draw(st.integers(1, length - 1))
    return spec


def check_writes(spec: Writes, seed: int = 0) -> None:
    model = writes_model(spec)
    onnx.checker.check_model(model, full_check=True)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert (result.changed, result.stats["rerolled"]) == (False, 0), result.notes
    assert edges(out) == edges(model)
    x = np.random.default_rng(seed).normal(size=(N, N)).astype(np.float32) / N
    np.testing.assert_array_equal(run(out, {spec.prefix + "x": x})[0], run(model, {spec.prefix + "x": x})[0])
    runs = substitution_runs(spec)
    assert [note for note in result.notes if "forward substitution" in note] == \
        [substitution_note(spec.prefix + f"write{r[0] + 1}", len(r), spec.op) for r in runs]
    assert [[node.name for node in chain.writes] for chain in find_substitution_writes(gs.import_onnx(model))] == \
        [[spec.prefix + f"write{t + 1}" for t in r] for r in runs]


@FUZZ
@given(spec=write_chains(), seed=st.integers(0, 2**16))
def test_substitution_notes_are_exact_and_the_graph_is_unchanged(spec, seed):
    check_writes(spec, seed)


def test_a_write_chain_mostly_of_state_writes_is_no_substitution():
    """Found by the fuzz above: eight writes, three of them (after the first) reading the buffer's values and four
    only its Shape, were named "buffer written at 8 steps .., each write's update computed from the buffer written
    before it" (the chain needed 3 value-reading writes, not each). Now a run of writes each reading the one before,
    none here of 4."""
    spec = Writes(reads=["none", "values", "values", "shape", "values", "shape", "shape", "shape"])
    check_writes(spec)
    assert find_substitution_writes(gs.import_onnx(writes_model(spec))) == []


# --- hostile names through `python -m passes.apply --explain` ----------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
EVIL = "\u202eevil\n\x1b[31merror: fake\r\t\x00\u2066\u2028"


@pytest.mark.parametrize("prefix", [EVIL, "L" * 5000 + EVIL], ids=["controls", "long"])
def test_explain_prints_hostile_names_escaped_one_note_a_line(tmp_path, prefix):
    """Node and tensor names with newlines, escapes, NUL, right-to-left overrides and isolates, 5,000 characters
    long, in a running-maximum chain and a substitution chain: each note one line (a pipe's 80 columns), its names
    escaped (and cut past 300 characters), nothing of them raw on stdout or stderr."""
    from passes.one_line import printable

    models = [max_loop(MaxLoop(6, max_first=[True, False] * 3, add_first=[False, True] * 3, w="per_step",
                               prefix=prefix)),
              writes_model(Writes(reads=["values"] * 6, prefix=prefix))]
    why = (f"its w_t is not one tensor at every step (step 2 adds '{prefix}w2' where step 1 adds '{prefix}w1': a "
           "per-step gate, as xLSTM's log forget gate); the max-plus scan is built for a w constant over the steps")
    expected = [f"  - running maximum at '{printable(prefix + 'max0')}' (6 steps), m_t = Max(m_{{t-1}} + w_t, k_t), "
                f"rescales the linear steps at '{printable(prefix + 'num0')}' and 11 more: their decays and drives are "
                f"computed from it, a max-plus recurrence, not a linear step ({printable(why)}): left unrolled",
                "  - " + substitution_note(printable(prefix + "write1"), 6, "ScatterND")]
    for model, note in zip(models, expected):
        path = tmp_path / "m.onnx"
        onnx.save(model, path)
        result = subprocess.run([sys.executable, "-m", "passes.apply", str(path), "--pipeline", "cpu", "-o",
                                 str(tmp_path / "o.onnx"), "--explain"], capture_output=True, text=True,
                                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}, cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert note in lines, lines
        assert lines[lines.index(note) - 1:lines.index(note)] in (["  - 0 scans found"], []), lines
        for character in "\u202e\x1b\r\x00\u2066\u2028":
            assert character not in result.stdout + result.stderr, repr(character)
        assert not any(line.startswith("error") for line in (result.stdout + result.stderr).splitlines())


# --- cost ---------------------------------------------------------------------------------------------------------

def layers_of_loops(layers: int, length: int = 8) -> gs.Graph:
    nodes, inits, inputs, outputs = [], [], [], []
    for layer in range(layers):
        spec = MaxLoop(length, max_first=[True] * length, add_first=[True] * length, prefix=f"l{layer}/")
        graph = max_loop(spec).graph
        nodes += graph.node
        inits += graph.initializer
        inputs += graph.input
        outputs += graph.output
    return gs.import_onnx(helper.make_model(helper.make_graph(nodes, "layers", inputs, outputs, inits),
                                            opset_imports=[helper.make_opsetid("", 17)]))


def test_rescaled_steps_are_found_in_one_walk_whatever_the_number_of_chains(monkeypatch):
    """fuzz23: each chain walked every Add of the graph again: quadratic in the layers (RWKV-like, 24 layers of 256
    steps, 92,184 nodes: 7.5 s in _running_max_notes, dev 2-core; 0.58 s now). The walks back from the Adds' operands
    are as many for 8 layers as 8 times one layer's, and each chain's steps are those it has alone."""
    import patterns.running_max as running_max

    def walks(graph):
        calls = []
        original = running_max._reached
        monkeypatch.setattr(running_max, "_reached", lambda *args: calls.append(1) or original(*args))
        runnings = find_running_maxima(graph)
        found = running_max.rescaled_steps_of_each(graph, runnings)
        monkeypatch.setattr(running_max, "_reached", original)
        return len(calls), runnings, found

    one, (running,), (steps,) = walks(layers_of_loops(1))
    eight, runnings, found = walks(layers_of_loops(8))
    assert len(steps) == 2 * 8 and one > 0   # num_t and den_t
    assert eight == 8 * one                  # 64 times one layer's walks, one per chain, before
    assert [[node.name for node in chain] for chain in found] == \
        [[f"l{layer}/{kind}{t}" for t in range(8) for kind in ("num", "den")] for layer in range(8)]


# --- chains that fork ----------------------------------------------------------------------------------------------

def forked_max_chains() -> onnx.ModelProto:
    """m0 .. m3 = Max(m + w, k_t), then two chains from m3, a4 .. a9 and b4 .. b9 (each Max(m + w, k_t) of its own)."""
    nodes, outputs = [], []
    inits = [numpy_helper.from_array(np.zeros(D, np.float32), "m_init"),
             numpy_helper.from_array(np.full(D, -0.5, np.float32), "w")]
    for t in range(10):
        inits.append(numpy_helper.from_array(np.array(t, np.int64), f"i{t}"))
        nodes.append(helper.make_node("Gather", ["k", f"i{t}"], [f"k{t}"]))
    previous = {"": "m_init"}
    for branch, steps in (("", range(4)), ("a", range(4, 10)), ("b", range(4, 10))):
        m = previous.get(branch, "m3")
        for t in steps:
            nodes += [helper.make_node("Add", [m, "w"], [f"{branch}mw{t}"]),
                      helper.make_node("Max", [f"{branch}mw{t}", f"k{t}"], [f"{branch}m{t}"], name=f"{branch}max{t}")]
            m = f"{branch}m{t}"
        outputs.append(helper.make_tensor_value_info(m, TensorProto.FLOAT, [D]))
    graph = helper.make_graph(nodes, "forked", [helper.make_tensor_value_info("k", TensorProto.FLOAT, [10, D])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def forked_writes() -> onnx.ModelProto:
    """A buffer written at rows 1 .. 4, each update reading the buffer before, then two chains of writes from the
    fourth, rows 5 .. 8 (a) and 9 .. 12 (b), each the same way."""
    inits = [numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    nodes, outputs = [], []
    for branch, rows, buffer in (("", range(1, 5), "x"), ("a", range(5, 9), "buf4"), ("b", range(9, 13), "buf4")):
        for i in rows:
            inits += [numpy_helper.from_array(np.array(i, np.int64), f"i{i}"),
                      numpy_helper.from_array(np.array([[i]], np.int64), f"at{i}")]
            nodes += [helper.make_node("Gather", [buffer, f"i{i}"], [f"row{i}"]),
                      helper.make_node("Unsqueeze", [f"row{i}", "one"], [f"col{i}"]),
                      helper.make_node("Mul", [f"col{i}", buffer], [f"terms{i}"]),
                      helper.make_node("ReduceSum", [f"terms{i}", "axis0"], [f"sum{i}"], keepdims=0),
                      helper.make_node("Add", [f"row{i}", f"sum{i}"], [f"new{i}"]),
                      helper.make_node("Unsqueeze", [f"new{i}", "axis0"], [f"update{i}"]),
                      helper.make_node("ScatterND", [buffer, f"at{i}", f"update{i}"], [f"buf{i}"], name=f"write{i}")]
            buffer = f"buf{i}"
        if branch:
            outputs.append(helper.make_tensor_value_info(buffer, TensorProto.FLOAT, [N, N]))
    graph = helper.make_graph(nodes, "forked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, N])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_chains_after_a_fork_are_chains_of_their_own():
    """A Max (or a write) read by two that continue it ends its chain; the two that follow begin chains of their own.
    Found by fuzz23: they were never a chain's first (each had a Max, or a write, before it), so a fork hid every
    step after it: here two chains of 6 Max steps, and two of 4 writes, were not found."""
    model = forked_max_chains()
    onnx.checker.check_model(model, full_check=True)
    assert [[node.name for node in chain.maxes] for chain in find_running_maxima(gs.import_onnx(model))] == [
        [f"max{t}" for t in range(4)], [f"amax{t}" for t in range(4, 10)], [f"bmax{t}" for t in range(4, 10)]]
    model = forked_writes()
    onnx.checker.check_model(model, full_check=True)
    assert [[node.name for node in chain.writes] for chain in find_substitution_writes(gs.import_onnx(model))] == [
        [f"write{i}" for i in rows] for rows in (range(1, 5), range(5, 9), range(9, 13))]


def test_a_chain_named_as_a_rescaled_step_keeps_its_own_notes():
    """Node names need not be unique. Two loops: A, rescaled by a running maximum of 6 steps (w per step: left unrolled since s36 too); B, its maximum broken
    by a Min at step 2 (no run of 4), whose nodes bear A's node names. B's chains' notes (their decays and drives not
    one subgraph) were dropped (fuzz23): the notes left out for A's rescaled steps were matched by name, and B's
    first Adds are named 'num0' and 'den0' as A's are. Now by node."""
    length = 6
    b = max_loop(MaxLoop(length, max_first=[True] * length, add_first=[True] * length, broken=("Min", 2), prefix="b/"))
    _, alone = apply_pass(b, RerollScans(form="parallel", chunk=2))
    b_notes = [note.replace("'b/num0'", "'num0'").replace("'b/den0'", "'den0'") for note in alone.notes[1:]]
    assert len(b_notes) == 4 and not any("running maximum" in note for note in b_notes), alone.notes
    a = max_loop(MaxLoop(length, max_first=[True] * length, add_first=[True] * length, w="per_step"))
    for node in b.graph.node:
        node.name = node.name.removeprefix("b/")
    graph = helper.make_graph([*a.graph.node, *b.graph.node], "two", [*a.graph.input, *b.graph.input],
                              [*a.graph.output, *b.graph.output], [*a.graph.initializer, *b.graph.initializer])
    _, result = apply_pass(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                           RerollScans(form="parallel", chunk=2))
    a_note = ("running maximum at 'max0' (6 steps), m_t = Max(m_{t-1} + w_t, k_t), rescales the linear steps at 'num0' "
              "and 11 more: their decays and drives are computed from it, a max-plus recurrence, not a linear step (its "
              "w_t is not one tensor at every step (step 2 adds 'w2' where step 1 adds 'w1': a per-step gate, as "
              "xLSTM's log forget gate); the max-plus scan is built for a w constant over the steps): left unrolled")
    assert result.notes == ["0 scans found", *b_notes, a_note]


# --- s35's restore order: a Split's pieces put back after what was made from them ---------------------------------

SPLIT_SHAPE = [2, 3, 4, 2]
READERS = ["add", "mul", "squeeze", "output", "two", "none"]


@st.composite
def split_graphs(draw):
    axis = draw(st.integers(0, 3))
    width = SPLIT_SHAPE[axis]
    sizes = draw(st.sampled_from([[1] * width, [width - 1, 1] if width > 1 else [1], [1, width - 1] if width > 1
                                  else [1]]))
    readers = draw(st.lists(st.sampled_from(READERS), min_size=len(sizes), max_size=len(sizes)))
    return axis, sizes, readers, draw(st.sampled_from([13, 17, 18]))


def split_model(axis: int, sizes: list, readers: list, opset: int) -> onnx.ModelProto:
    """x split along `axis` into pieces of `sizes`, each read as `readers` says: Add(piece, c) or Mul(piece, c) (c
    broadcast along the axis), Squeeze of a one-position piece, the piece a graph output, two Adds, or nothing."""
    inits = [numpy_helper.from_array(np.array(sizes, np.int64), "sizes"),
             numpy_helper.from_array(np.array([axis], np.int64), "axes")]
    c_shape = [1 if a == axis else d for a, d in enumerate(SPLIT_SHAPE)]
    pieces = [f"p{i}" for i in range(len(sizes))]
    nodes = [helper.make_node("Split", ["x", "sizes"], pieces, axis=axis, name="split")]
    outputs = []
    for i, (size, reader) in enumerate(zip(sizes, readers)):
        shape = [size if a == axis else d for a, d in enumerate(SPLIT_SHAPE)]
        if reader == "squeeze" and size == 1:
            nodes.append(helper.make_node("Squeeze", [f"p{i}", "axes"], [f"r{i}"], name=f"r{i}"))
            shape = [d for a, d in enumerate(shape) if a != axis]
        elif reader in ("add", "mul", "squeeze"):
            nodes.append(helper.make_node("Mul" if reader == "mul" else "Add", [f"p{i}", "c"], [f"r{i}"], name=f"r{i}"))
        elif reader == "two":
            nodes += [helper.make_node("Add", [f"p{i}", "c"], [f"r{i}"], name=f"r{i}"),
                      helper.make_node("Add", ["c", f"p{i}"], [f"s{i}"], name=f"s{i}")]
            outputs.append(helper.make_tensor_value_info(f"s{i}", TensorProto.FLOAT, shape))
        elif reader == "output":
            nodes.append(helper.make_node("Identity", [f"p{i}"], [f"r{i}"], name=f"r{i}"))
        else:
            continue
        outputs.append(helper.make_tensor_value_info(f"r{i}", TensorProto.FLOAT, shape))
    if not outputs:
        nodes.append(helper.make_node("Identity", ["p0"], ["r0"], name="r0"))
        shape = [sizes[0] if a == axis else d for a, d in enumerate(SPLIT_SHAPE)]
        outputs.append(helper.make_tensor_value_info("r0", TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SPLIT_SHAPE),
                                               helper.make_tensor_value_info("c", TensorProto.FLOAT, c_shape)],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@FUZZ
@given(case=split_graphs(), seed=st.integers(0, 2**16))
@example(case=(1, [1, 1, 1], ["add", "add", "squeeze"], 13), seed=0)
def test_split_pieces_with_no_recurrence_are_put_back_as_they_were(case, seed):
    """reroll-scans slices a Split's pieces and gathers the Slices that keep their axis, then, with nothing re-rolled,
    puts both back (s35: the Split last). Whatever reads the pieces, the graph comes back node for node, passes the
    full checker (apply_pass) and computes the same. Found by fuzz23 (the example): pieces read by Adds and a Squeeze
    came back as Split, Squeeze, Add, Add (a RankMap built while the Gathers stood after the Adds sorted the graph)."""
    model = split_model(*case)
    onnx.checker.check_model(model, full_check=True)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    assert (result.changed, result.stats["rerolled"]) == (False, 0)
    assert edges(out) == edges(model)
    rng = np.random.default_rng(seed)
    c_shape = [1 if a == case[0] else d for a, d in enumerate(SPLIT_SHAPE)]
    feeds = {"x": rng.standard_normal(SPLIT_SHAPE).astype(np.float32),
             "c": rng.standard_normal(c_shape).astype(np.float32)}
    for actual, expected in zip(run(out, feeds), run(model, feeds), strict=True):
        np.testing.assert_array_equal(actual, expected)

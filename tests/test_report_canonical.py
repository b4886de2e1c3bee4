"""The canonical print of one region (passes/report/canonical.py), called on hand-built snapshots so every line is
known: boundary and internal names, context above and below, constants, the canonical order and its ties, long
argument lists, the summary of a big side, the anchor. Session s30 (mut30): these kill mutmut's survivors of
canonical.py (docs/MUTATION.md, "Session s30 (mut30)"); test_report_regions.py covers it through whole diffs.
"""
from __future__ import annotations

import onnx
from onnx import helper

from passes.report.canonical import FULL_PRINT_MAX_NODES, print_region
from passes.report.regions import Region, SnapshotDiff
from passes.report.snapshot import GraphSnapshot, NodeRecord


def snap(nodes, inputs=(), outputs=()) -> GraphSnapshot:
    """(name, op, inputs, outputs[, attributes[, constant_texts]]) per node."""
    records = []
    for name, op, ins, outs, *rest in nodes:
        attributes = rest[0] if rest else {}
        constants = rest[1] if len(rest) > 1 else {}
        records.append(NodeRecord(name, op, tuple(ins), tuple(outs), constants, attributes, None))
    return GraphSnapshot(records, tuple(inputs), tuple(outputs))


def printed(before: GraphSnapshot, after: GraphSnapshot, removed: list, added: list):
    return print_region(SnapshotDiff(before, after, removed, added, []), Region(removed, added))


def scalar(value: float) -> onnx.TensorProto:
    return helper.make_tensor("v", onnx.TensorProto.FLOAT, [], [value])


def test_a_region_prints_boundary_and_internal_names_context_constants_and_its_identity():
    before = snap([
        ("/m/src", "Sigmoid", ["x"], ["p"]),
        ("/m/blk/two", "Constant", [], ["two"], {"value": scalar(2.0)}),
        ("/m/blk/mul", "Mul", ["p", "two"], ["m"]),
        ("/m/blk/clip", "Clip", ["m", "", "hi"], ["c"], {}, {2: "const<f32>(6)"}),
        ("/m/blk/add", "Add", ["c", "x"], ["y"]),
        ("/m/blk/side", "Neg", ["m"], ["s"]),
        ("/m/blk/third", "Exp", ["m"], ["e"]),
        ("/m/use", "Relu", ["y"], ["z"]),
        ("/m/use2", "Tanh", ["y"], ["w"]),
        ("/m/use3", "Abs", ["s"], ["v"]),
    ], inputs=["x"], outputs=["z", "y", "w", "v", "e"])
    after = snap([
        ("/m/src", "Sigmoid", ["x"], ["p"]),
        ("/n/k0", "Constant", [], ["k0"], {"value": scalar(1.0), "extra": 3}),
        ("/n/k1", "Constant", [], ["k1"], {"value": scalar(3.0)}),
        ("/m/blk/fused", "Add", ["p", "k0"], ["t"]),
        ("/m/blk/add2", "Add", ["t", "x", "k1"], ["y"], {"beta": "b", "alpha": 1.5}),
        ("/m/blk/side2", "Split", ["t"], ["", "s", "e"]),
        ("/m/use", "Relu", ["y"], ["z"]),
        ("/m/use2", "Tanh", ["y"], ["w"]),
        ("/m/use3", "Abs", ["s"], ["v"]),
    ], inputs=["x"], outputs=["z", "y", "w", "v", "e"])
    result = printed(before, after, [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5])
    assert result.before == [
        ["context", "%in0 ← Sigmoid", "/m/src"],
        ["context", "%in1 ← graph input", "x"],
        ["node", "%0 = Mul(%in0, const<f32>(2))", "/m/blk/mul"],
        ["node", "%1 = Clip(%0, _, const<f32>(6))", "/m/blk/clip"],
        ["node", "%out0 = Add(%1, %in1)", "/m/blk/add"],
        ["node", "%out1 = Exp(%0)", "/m/blk/third"],
        ["node", "%out2 = Neg(%0)", "/m/blk/side"],
        ["more", "+ 1 Constant node (values shown where used)", ""],
        ["context", "%out0 → Relu, Tanh, graph output", "/m/use"],
        ["context", "%out1 → graph output", "e"],
        ["context", "%out2 → Abs", "/m/use3"],
    ]
    assert result.after == [
        ["context", "%in0 ← Sigmoid", "/m/src"],
        ["context", "%in1 ← graph input", "x"],
        ["node", "%0 = Add(%in0, const)", "/m/blk/fused"],
        ["node", "%out0 = Add(%0, %in1, const<f32>(3)) {alpha=1.5, beta=\"b\"}", "/m/blk/add2"],
        ["node", "_, %out2, %out1 = Split(%0)", "/m/blk/side2"],
        ["more", "+ 2 Constant nodes (values shown where used)", ""],
        ["context", "%out0 → Relu, Tanh, graph output", "/m/use"],
        ["context", "%out1 → graph output", "e"],
        ["context", "%out2 → Abs", "/m/use3"],
    ]
    assert result.identity == ("%0 = Mul(%in0, const<f32>(2))\n%1 = Clip(%0, _, const<f32>(6))\n%out0 = Add(%1, %in1)\n"
                               "%out1 = Exp(%0)\n%out2 = Neg(%0)\n=>\n%0 = Add(%in0, const)\n"
                               "%out0 = Add(%0, %in1, const<f32>(3)) {alpha=1.5, beta=\"b\"}\n_, %out2, %out1 = Split(%0)")
    assert result.removed_ops == {"Constant": 1, "Mul": 1, "Clip": 1, "Add": 1, "Neg": 1, "Exp": 1}
    assert result.added_ops == {"Constant": 2, "Add": 2, "Split": 1}
    assert result.anchor == "/m/blk/"


def test_a_graph_output_read_by_nothing_names_itself_and_an_unknown_input_has_no_context():
    """An escaping value with no reader outside: its context line carries its own name; an input that no node
    makes and that is no graph input (a name from an outer scope) is a boundary input without a context line."""
    before = snap([("a", "Neg", ["outer"], ["y"]), ("b", "Exp", ["x"], ["q"]), ("c", "Relu", ["q"], ["r"])],
                  inputs=["x"], outputs=["y", "r"])
    after = snap([("a", "Neg", ["outer"], ["y"]), ("b2", "Exp", ["x"], ["q"]), ("c", "Relu", ["q"], ["r"])],
                 inputs=["x"], outputs=["y", "r"])
    result = printed(before, after, [0], [])
    assert result.before == [["node", "%out0 = Neg(%in0)", "a"], ["context", "%out0 → graph output", "y"]]
    assert result.after == [["more", "(nothing)", ""]]
    assert result.identity == "%out0 = Neg(%in0)\n=>\n(nothing)"
    assert (result.removed_ops, result.added_ops, result.anchor) == ({"Neg": 1}, {}, "a")
    # only an added node: the anchor is the added side's
    result = printed(before, after, [], [1])
    assert result.before == [["more", "(nothing)", ""]]
    assert result.after == [["context", "%in0 ← graph input", "x"], ["node", "%out0 = Exp(%in0)", "b2"],
                            ["context", "%out0 → Relu", "c"]]
    assert result.anchor == "b2"


def test_a_side_of_constants_only_prints_its_note_and_nothing_in_the_identity():
    before = snap([("k", "Constant", [], ["k"], {"value": scalar(1.0)}), ("u", "Add", ["x", "k"], ["y"])],
                  inputs=["x"], outputs=["y"])
    after = snap([("u", "Add", ["x", "x"], ["y"])], inputs=["x"], outputs=["y"])
    result = printed(before, after, [0], [])
    assert result.before == [["more", "+ 1 Constant node (values shown where used)", ""]]
    assert result.identity == "(nothing)\n=>\n(nothing)"
    assert result.anchor == "k"


def test_ready_nodes_print_by_op_then_canonical_inputs_then_graph_position():
    """Three ready nodes in reversed op order print Abs, Exp, Neg; the after side's two Negs read %in1 and %in0
    (named on the before side) and print in that name order, not in graph order; two Negs of the same input keep
    graph order. The order names the internal values."""
    before = snap([
        ("n", "Neg", ["a"], ["t0"]), ("e", "Exp", ["b"], ["t1"]), ("s", "Abs", ["a"], ["t2"]),
        ("sum", "Sum", ["t0", "t1", "t2"], ["y"]),
    ], inputs=["a", "b"], outputs=["y"])
    after = snap([
        ("n1", "Neg", ["b"], ["u0"]), ("n0", "Neg", ["a"], ["u1"]), ("n2", "Neg", ["a"], ["u2"]),
        ("sum2", "Sum", ["u0", "u1", "u2"], ["y"]),
    ], inputs=["a", "b"], outputs=["y"])
    result = printed(before, after, [0, 1, 2, 3], [0, 1, 2, 3])
    assert [text for kind, text, _ in result.before if kind == "node"] == [
        "%0 = Abs(%in0)", "%1 = Exp(%in1)", "%2 = Neg(%in0)", "%out0 = Sum(%2, %1, %0)"]
    assert [name for kind, _, name in result.after if kind == "node"] == ["n0", "n2", "n1", "sum2"]
    assert [text for kind, text, _ in result.after if kind == "node"] == [
        "%0 = Neg(%in0)", "%1 = Neg(%in0)", "%2 = Neg(%in1)", "%out0 = Sum(%2, %0, %1)"]


def test_a_node_waits_for_every_producer_inside_the_region():
    """Add reads Neg's and Exp's outputs: it comes after both, though 'Add' sorts first; a node reading one
    value twice waits for its producer once."""
    before = snap([("n", "Neg", ["x"], ["t"]), ("e", "Exp", ["t"], ["u"]), ("a", "Add", ["t", "u"], ["y"]),
                   ("m", "Mul", ["y", "y"], ["z"])], inputs=["x"], outputs=["z"])
    after = snap([], inputs=["x"], outputs=["z"])
    result = printed(before, after, [0, 1, 2, 3], [])
    assert [text for kind, text, _ in result.before if kind == "node"] == [
        "%0 = Neg(%in0)", "%1 = Exp(%0)", "%2 = Add(%0, %1)", "%out0 = Mul(%2, %2)"]


def test_a_tie_between_ready_nodes_is_broken_by_their_internal_input_names():
    """Relu(pE) comes before Relu(pA) in the graph, but pA is %0 (Abs sorts before Exp): Relu(%0) prints first."""
    before = snap([("a", "Abs", ["x"], ["pA"]), ("e", "Exp", ["x"], ["pE"]), ("r1", "Relu", ["pE"], ["y1"]),
                   ("r0", "Relu", ["pA"], ["y0"])], inputs=["x"], outputs=["y0", "y1"])
    result = printed(before, snap([]), [0, 1, 2, 3], [])
    assert [(text, name) for kind, text, name in result.before if kind == "node"] == [
        ("%0 = Abs(%in0)", "a"), ("%1 = Exp(%in0)", "e"), ("%out0 = Relu(%0)", "r0"), ("%out1 = Relu(%1)", "r1")]


def test_a_node_reading_its_own_output_does_not_wait_for_itself():
    """Not ONNX, but a snapshot can hold it: an Abs reading its own output is ready at once and sorts first."""
    before = snap([("r", "Relu", ["x"], ["q"]), ("s", "Abs", ["p", "x"], ["p"])], inputs=["x"], outputs=["q", "p"])
    result = printed(before, snap([]), [0, 1], [])
    assert [(text, name) for kind, text, name in result.before if kind == "node"] == [
        ("%out0 = Abs(%out0, %in0)", "s"), ("%out1 = Relu(%in0)", "r")]


def test_nodes_on_a_cycle_are_all_printed_in_graph_order():
    """No ONNX graph has a cycle, but a snapshot can: the nodes never ready are kept, in graph order."""
    before = snap([("p", "Relu", ["x"], ["r"]), ("b", "Neg", ["a_out"], ["b_out"]), ("a", "Exp", ["b_out"], ["a_out"])],
                  inputs=["x"], outputs=["r"])
    result = printed(before, snap([]), [0, 1, 2], [])
    assert [(text, name) for kind, text, name in result.before if kind == "node"] == [
        ("%out0 = Relu(%in0)", "p"), ("_ = Neg(%in1)", "b"), ("_ = Exp(%in2)", "a")]


def test_a_long_argument_list_prints_its_ends_and_context_in_name_order():
    """12 inputs: the first 8, a count, the last 2 (10 print whole); the context lists %in0 .. %in11 in number
    order (%in10 after %in9, not after %in1)."""
    names = [f"x{i}" for i in range(12)]
    before = snap([("c", "Concat", names, ["y"], {"axis": 0})], inputs=names, outputs=["y"])
    result = printed(before, snap([]), [0], [])
    args = ", ".join(f"%in{i}" for i in range(8)) + ", … 12 inputs …, %in10, %in11"
    assert result.before == ([["context", f"%in{i} ← graph input", f"x{i}"] for i in range(12)]
                             + [["node", f"%out0 = Concat({args}) {{axis=0}}", "c"],
                                ["context", "%out0 → graph output", "y"]])
    before = snap([("c", "Concat", names[:10], ["y"])], inputs=names[:10], outputs=["y"])
    [line] = [line for line in printed(before, snap([]), [0], []).before if line[0] == "node"]
    assert line == ["node", "%out0 = Concat(" + ", ".join(f"%in{i}" for i in range(10)) + ")", "c"]


def test_a_node_without_outputs_prints_empty_parentheses():
    before = snap([("s", "Print", ["x"], [])], inputs=["x"])
    assert printed(before, snap([]), [0], []).before == [["context", "%in0 ← graph input", "x"],
                                                         ["node", "() = Print(%in0)", "s"]]


def chain(count: int, op_of=lambda i: "Neg", last_reads_x: bool = False) -> GraphSnapshot:
    nodes = [(f"/big/n{i}", op_of(i), ["x" if i == 0 else f"v{i - 1}"], [f"v{i}"]) for i in range(count)]
    if last_reads_x:
        nodes[-1][2].append("x")
    return snap(nodes, inputs=["x"], outputs=[f"v{count - 1}"])


def test_a_side_of_80_nodes_prints_whole_and_81_prints_a_summary():
    assert FULL_PRINT_MAX_NODES == 80
    whole = printed(chain(80), snap([]), list(range(80)), [])
    assert [kind for kind, _, _ in whole.before] == ["context"] + ["node"] * 80 + ["context"]
    # 41 Neg, then Exp, Abs, ... (20 each: Exp met first, listed second, by name)
    op_of = (lambda i: "Neg" if i < 41 else ("Exp" if i % 2 else "Abs"))
    summary = printed(chain(81, op_of, last_reads_x=True), snap([]), list(range(81)), [])
    assert summary.before == (
        [["context", "%in0 ← graph input", "x"], ["node", "%0 = Neg(%in0)", "/big/n0"]]
        + [["node", f"%{i} = Neg(%{i - 1})", f"/big/n{i}"] for i in range(1, 8)]
        + [["more", "… 69 more nodes (81 in all: Neg 41, Abs 20, Exp 20) …", ""]]
        + [["node", f"%{i} = {op_of(i)}(%{i - 1})", f"/big/n{i}"] for i in range(77, 80)]
        + [["node", "%out0 = Abs(%79, %in0)", "/big/n80"], ["context", "%out0 → graph output", "v80"]])
    assert summary.identity.count("\n") == 8 + 1 + 4 + 1


def test_a_summary_counts_with_thousands_separators():
    result = printed(chain(1200), snap([]), list(range(1200)), [])
    assert ["more", "… 1,188 more nodes (1,200 in all: Neg 1,200) …", ""] in result.before


def test_the_anchor_is_the_common_path_of_the_non_constant_node_names():
    def anchor(names, ops=None, outputs=None):
        ops = ops or ["Relu"] * len(names)
        outputs = outputs or [[f"o{i}"] for i in range(len(names))]
        before = snap([(name, op, ["x"], outs) for name, op, outs in zip(names, ops, outputs)], inputs=["x"])
        return printed(before, snap([]), list(range(len(names))), []).anchor

    assert anchor(["/l.0/b.1/mul", "/l.0/b.1/add", "/l.0/b.2/x"]) == "/l.0/"
    assert anchor(["/l.0/b.1/mul", "/l.0/b.1/add"]) == "/l.0/b.1/"
    assert anchor(["/l.0/b.1/mul"]) == "/l.0/b.1/mul"                  # one name: itself
    assert anchor(["alpha", "beta"]) == "alpha"                          # nothing in common: the first
    assert anchor(["/shared/k", "/l.0/b.1/mul", "/l.0/b.1/add"], ["Constant", "Relu", "Relu"]) == "/l.0/b.1/"
    assert anchor(["/s/k0", "/s/k1"], ["Constant", "Constant"]) == "/s/"   # only constants: theirs
    assert anchor(["", "/l.0/mul", "/l.0/add"]) == "/l.0/"               # unnamed nodes do not count
    assert anchor(["", ""], outputs=[["", "first"], ["second"]]) == "first"   # no names: the first output
    assert anchor([""], outputs=[[""]]) == ""
    # a huge region: the first 2,000 names decide (the 2,001st, elsewhere, is not read)
    assert anchor([f"/a/b/n{i}" for i in range(2000)] + ["/a/c/n"]) == "/a/b/"

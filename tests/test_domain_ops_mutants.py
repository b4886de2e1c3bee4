"""Mutation tests (s36, mut39) of adv23's ops of other domains (passes/graph_io.py's model_to_graph / graph_to_model
`x.Identity`, still_named_with_its_domain; passes/simplify_onnxsim.py's skip): each case fails with a plausible bug
that test_hardening's two end-to-end cases let through (a node in an If branch or in a function's subgraph, the
"ai.onnx" domain, the skip's exact result)."""
from __future__ import annotations

from collections import Counter

import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper as oh

from passes.base import PassContext
from passes.graph_io import graph_to_model, model_to_graph, still_named_with_its_domain
from passes.registry import get_pass


def _branch(name: str, op: str, domain: str, reads: str = "x") -> onnx.GraphProto:
    return oh.make_graph([oh.make_node(op, [reads], [f"{name}_out"], domain=domain, name=f"{name}_node")], name, [],
                         [oh.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2])])


def _model(posing_in: str) -> onnx.ModelProto:
    """y = F(Relu(x)) * If(c, x.Identity(x), Neg(x)), F a local function of domain x; `posing_in` where the
    one op of domain x named like an ONNX op (Identity) is: "graph" (the top graph), "branch" (the If's then branch),
    "function" (F's body), "function-branch" (an If in F's body), or "none" (F's ops and the If's branches all
    ONNX's or not named like ONNX's)."""
    x_op = "Identity" if posing_in in ("graph", "branch") else "G"
    body_op = "Identity" if posing_in == "function" else "G"
    body_if = "Identity" if posing_in == "function-branch" else "G"
    g = oh.make_function("x", "G", ["a"], ["b"], [oh.make_node("Neg", ["a"], ["b"])],
                         opset_imports=[oh.make_opsetid("", 17)])
    f = oh.make_function("x", "F", ["a", "c"], ["b"], [
        oh.make_node(body_op, ["a"], ["t"], domain="x", name="f_body"),
        oh.make_node("If", ["c"], ["u"], name="f_if", then_branch=_branch("f_then", body_if, "x", "a"),
                     else_branch=_branch("f_else", "Neg", "", "a")),
        oh.make_node("Add", ["t", "u"], ["b"])], opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("x", 1)])
    top_op = "Identity" if posing_in == "graph" else "G"
    graph = oh.make_graph(
        [oh.make_node("Relu", ["x"], ["r"], name="relu"),
         oh.make_node("F", ["r", "c"], ["f"], domain="x", name="call_f"),
         oh.make_node(top_op, ["f"], ["p"], domain="x", name="top\x1b"),
         oh.make_node("If", ["c"], ["i"], name="if", then_branch=_branch("then", x_op, "x"),
                      else_branch=_branch("else", "Neg", "")),
         oh.make_node("Mul", ["p", "i"], ["y"], name="mul")], "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2]), oh.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("x", 1)], ir_version=10,
                          functions=[f, g])
    onnx.checker.check_model(model)
    return model


def _ops(nodes) -> list[tuple[str, str]]:
    return [(node.domain or "", node.op) for node in nodes]


def test_every_node_of_another_domain_carries_it_in_its_op_while_the_passes_run():
    """The top graph, the If's branches, each function's body and the If inside one: x's ops as 'x.F', ONNX's as
    they are."""
    graph = model_to_graph(_model("graph"))
    assert _ops(graph.nodes) == [("", "Relu"), ("x", "x.F"), ("x", "x.Identity"), ("", "If"), ("", "Mul")]
    if_node = graph.nodes[3]
    assert _ops(if_node.attrs["then_branch"].nodes) == [("x", "x.Identity")]
    assert _ops(if_node.attrs["else_branch"].nodes) == [("", "Neg")]
    f, g = graph.functions
    assert _ops(f.nodes) == [("x", "x.G"), ("", "If"), ("", "Add")]
    assert _ops(f.nodes[1].attrs["then_branch"].nodes) == [("x", "x.G")]
    assert _ops(g.nodes) == [("", "Neg")]
    assert [still_named_with_its_domain(node) for node in graph.nodes] == [False, True, True, False, False]


def test_still_named_with_its_domain_is_the_domain_and_a_dot_before_the_op():
    node = gs.Node("x.Identity", domain="x")
    assert still_named_with_its_domain(node)
    node.op = "Identity"   # (own_op_names' rename)
    assert not still_named_with_its_domain(node)
    assert not still_named_with_its_domain(gs.Node("xy.Identity", domain="x"))
    assert not still_named_with_its_domain(gs.Node("x.Relu", domain=""))


def test_the_domain_is_taken_out_of_every_op_written_back():
    model = _model("function-branch")
    written = graph_to_model(model_to_graph(model))
    onnx.checker.check_model(written)

    def all_ops(m: onnx.ModelProto) -> Counter:
        found = Counter()
        stack = [m.graph.node, *(function.node for function in m.functions)]
        while stack:
            for node in stack.pop():
                found[(node.domain, node.op_type)] += 1
                stack += [attribute.g.node for attribute in node.attribute if attribute.HasField("g")]
        return found

    assert all_ops(written) == all_ops(model) == Counter({
        ("", "If"): 2, ("", "Neg"): 3, ("x", "G"): 3, ("x", "Identity"): 1, ("", "Relu"): 1, ("x", "F"): 1,
        ("", "Mul"): 1, ("", "Add"): 1})


@pytest.mark.parametrize("posing_in, where", [
    ("graph", "node 'top\\x1b' (op Identity of domain 'x')"), ("branch", "node 'then_node' (op Identity of domain 'x')"),
    ("function", "node 'f_body' (op Identity of domain 'x')"),
    ("function-branch", "node 'f_then_node' (op Identity of domain 'x')")])
def test_simplify_skips_onnxsim_where_an_op_of_another_domain_is_named_like_an_onnx_op(posing_in, where):
    """Wherever the op is (the top graph, a branch, a function's body, an If in a function), the pass is skipped with
    its stats and one note, the name escaped; the graph unchanged."""
    graph = model_to_graph(_model(posing_in))
    before = _ops(graph.nodes)
    result = get_pass("simplify").run(graph, PassContext(opset=17))
    assert (result.changed, result.stats) == (False, {"removed": 0, "skipped": "op of another domain named like an "
                                                                              "ONNX op"})
    assert result.notes == [f"onnxsim skipped: {where} is named like ONNX's Identity, which onnxsim's optimizer would "
                            "take for that op; graph left unsimplified"]
    assert _ops(graph.nodes) == before


def test_an_op_of_the_domain_ai_onnx_is_onnxs_own():
    """'ai.onnx' names ONNX's domain as '' does: its Relu keeps its op while the passes run and is no op posing as
    ONNX's for simplify."""
    from passes.simplify_onnxsim import _named_like_an_onnx_op

    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["y"], domain="ai.onnx")], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    imported = model_to_graph(model)
    assert _ops(imported.nodes) == [("ai.onnx", "Relu")] and not still_named_with_its_domain(imported.nodes[0])
    assert [(node.domain, node.op_type) for node in graph_to_model(imported).graph.node] == [("ai.onnx", "Relu")]
    assert _named_like_an_onnx_op(model) is None


def test_simplify_runs_where_the_ops_of_other_domains_are_named_unlike_onnx_ops(monkeypatch):
    """x.F, x.G (no ONNX op): onnxsim runs (here a stand-in that hands the model back), given the model with the
    domains out of the ops."""
    import passes.simplify_onnxsim as simplify_module

    model = _model("none")
    assert simplify_module._named_like_an_onnx_op(model) is None
    given = []
    monkeypatch.setattr(simplify_module, "_run_onnxsim", lambda m: given.append(m) or (m, True))
    result = get_pass("simplify").run(model_to_graph(model), PassContext(opset=17))
    assert (result.changed, result.stats, result.notes) == (False, {"removed": 0}, [])
    assert [(node.domain, node.op_type) for node in given[0].graph.node] == [
        ("", "Relu"), ("x", "F"), ("x", "G"), ("", "If"), ("", "Mul")]


def test_an_op_of_another_domain_named_without_it_is_written_as_it_is():
    """A graph imported by onnx-graphsurgeon itself (a tool's, a test's), or a node a pass makes, names an op of
    another domain without the domain: graph_to_model writes it unchanged (the prefix is taken out only where it is
    there; 'or' for 'and' cut 'F' to '')."""
    model = _model("function")
    written = graph_to_model(gs.import_onnx(model))
    assert [(node.domain, node.op_type) for node in written.graph.node] == [
        (node.domain, node.op_type) for node in model.graph.node]
    assert [[(node.domain, node.op_type) for node in f.node] for f in written.functions] == [
        [(node.domain, node.op_type) for node in f.node] for f in model.functions]

"""Run onnxsim on the (already small) graph.

onnxsim takes about a minute on a 50k-node graph, so it is skipped above
``skip_above_nodes``. If it raises, its own check fails or it changes the graph's inputs or
outputs, the input graph is kept and a note says so: simplification is an optimisation, never a reason to fail the pipeline.
onnxsim evaluates every tensor it can compute from constants, however large: a graph where one
would hold more than MAX_FOLDED_ELEMENTS (passes.constant_sizes: a hostile Add of two stored vectors
as a column and a row asked for gigabytes) is not handed to it, nor one on which ONNX's data propagation,
which it runs, would be unbounded (passes.static_shapes.infer_shapes).
"""
from __future__ import annotations

import inspect
from collections import Counter

import onnx
import onnx_graphsurgeon as gs

from passes.base import Option, Pass, PassContext, PassResult
from passes.constant_sizes import MAX_FOLDED_ELEMENTS, oversized_constant_nodes
from passes.graph_io import all_graphs, expanded_node_count, graph_to_model, model_to_graph, replace_graph_contents
from passes.one_line import one_line, printable, terminal_closed
from passes.registry import register_pass
from passes.static_shapes import infer_shapes


def _run_onnxsim(model):
    import onnxsim  # imported late: it is a large module and only this pass needs it

    kwargs = {}
    parameters = inspect.signature(onnxsim.simplify).parameters
    if "certify" in parameters:
        kwargs["certify"] = False  # the Z3 proof is slow and not what we ask for here
    with terminal_closed():
        return onnxsim.simplify(model, **kwargs)


@register_pass
class SimplifyOnnxsim(Pass):
    name = "simplify"
    description = "onnxsim (constant folding, shape inference, onnx-optimizer fusions); keeps the graph on failure"

    skip_above_nodes = Option(int, 20000, "do nothing on graphs with more nodes (onnxsim takes minutes on them)", min=0)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        nodes_before = len(graph.nodes)
        # with each call of a local function counted as its body's nodes: onnxsim runs them all
        counted = (expanded_node_count(graph_to_model(graph), self.skip_above_nodes)
                   if graph.functions and nodes_before <= self.skip_above_nodes else nodes_before)
        if counted > self.skip_above_nodes:
            shown = (f"{counted} nodes >" if counted == nodes_before
                     else "more nodes, each call of a local function expanded, than")
            return PassResult(False, {"removed": 0, "skipped": "too many nodes"},
                              [f"onnxsim skipped: {shown} skip_above_nodes={self.skip_above_nodes} "
                               "(about a minute per 50k nodes)"])
        try:
            model = graph_to_model(graph)
            inferred, unbounded = infer_shapes(model)
            if unbounded is not None:   # onnxsim runs ONNX's data propagation, unbounded there
                return PassResult(False, {"removed": 0, "skipped": "unbounded data propagation"},
                                  [f"onnxsim skipped: {unbounded}; graph left unsimplified"])
            posing = _named_like_an_onnx_op(model)
            if posing is not None:   # onnx-optimizer matches ops by name alone: its eliminate_identity removed a
                # model-local function x.Identity (b = a + 1), the model written wrong (adv23)
                return PassResult(False, {"removed": 0, "skipped": "op of another domain named like an ONNX op"}, [
                    f"onnxsim skipped: {posing}, which onnxsim's optimizer would take for that op; graph left "
                    "unsimplified"])
            oversized = oversized_constant_nodes(model, inferred)
            if oversized:
                node, elements = oversized[0]
                return PassResult(False, {"removed": 0, "skipped": "constant too large"}, [
                    f"onnxsim skipped: {printable(node.op_type)} '{printable(node.name)}' would make {elements:,} "
                    f"elements from constants (> {MAX_FOLDED_ELEMENTS:,}), which onnxsim would evaluate; "
                    "graph left unsimplified"])
            simplified, check_ok = _run_onnxsim(model)
        except Exception as error:
            reason = one_line(error, limit=300)
            return PassResult(False, {"removed": 0}, [f"onnxsim failed: {reason}; graph left unsimplified"])
        if not check_ok:
            return PassResult(False, {"removed": 0},
                              ["onnxsim failed: its output check did not pass; graph left unsimplified"])
        simplified_graph = model_to_graph(simplified)
        interface, simplified_interface = _interface(graph), _interface(simplified_graph)
        if simplified_interface != interface:
            # onnxsim has turned an output into an input (a folded SequenceAt): not the same model
            return PassResult(False, {"removed": 0}, [
                f"onnxsim changed the graph's inputs or outputs (inputs {printable(interface[0])} -> "
                f"{printable(simplified_interface[0])}, outputs {printable(interface[1])} -> "
                f"{printable(simplified_interface[1])}); graph left unsimplified"])
        removed = nodes_before - len(simplified_graph.nodes)
        if removed == 0 and _op_histogram(simplified_graph) == _op_histogram(graph):
            # Nothing a user would call a simplification: keep our graph (and its names),
            # so "changed" stays meaningful and later checks can be skipped.
            return PassResult(False, {"removed": 0})
        replace_graph_contents(graph, simplified_graph)
        return PassResult(changed=True, stats={"removed": removed})


def _named_like_an_onnx_op(model: onnx.ModelProto) -> str | None:
    """'node 'n' (op Identity of domain 'x')' for the first node, in any graph or function of ``model``, of a domain
    other than ONNX's whose op ONNX defines too, else None."""
    graphs = list(all_graphs(model.graph))
    for function in model.functions:
        graphs.append(function)
        for node in function.node:
            for attribute in node.attribute:
                for body in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    graphs.extend(all_graphs(body))
    for graph in graphs:
        for node in graph.node:
            if node.domain not in ("", "ai.onnx") and onnx.defs.has(node.op_type):
                return (f"node '{printable(node.name)}' (op {printable(node.op_type)} of domain "
                        f"'{printable(node.domain)}') is named like ONNX's {printable(node.op_type)}")
    return None


def _interface(graph: gs.Graph) -> tuple[list[str], list[str]]:
    """The graph's input and output names, in order: what a caller feeds and fetches."""
    return [tensor.name for tensor in graph.inputs], [tensor.name for tensor in graph.outputs]


def _op_histogram(graph: gs.Graph) -> Counter:
    return Counter(node.op for node in graph.nodes)

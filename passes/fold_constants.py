"""Cheap constant folding with onnx-graphsurgeon, meant for the graph after re-rolling.

Folding evaluates constant subgraphs with ONNX Runtime. It works on a copy of the graph,
so that when folding fails half way the original graph is kept and a note says why.
Above ``skip_above_nodes`` it does nothing (folding a 100k-node unrolled graph is slow and
is not what this pass is for: run it after the scans are re-rolled).

ONNX Runtime evaluates every tensor of a folded subgraph, also those reduced away after, and
onnx-graphsurgeon's size threshold only looks at the tensors it keeps, when their shape is
recorded. So every node is sized first (passes.constant_sizes: ONNX's shape inference each round,
and the ops that make a tensor larger than their inputs, ConstantOfShape, Expand, Tile and Range,
also from their constant inputs) and left to run time when it would make more than
MAX_FOLDED_ELEMENTS: a hostile ConstantOfShape of (2^20, 2^20) asked for 4 TiB, the Add of two
stored vectors of 2^16 floats as a column and a row for 16 GiB. A size-making op whose size inputs
are themselves still to be folded, and whose size inference does not know, waits for the next round.
A node that draws random values (RandomNormal, Bernoulli, a Dropout in training mode) is never folded: its one
draw would be a constant of the model, the same at every run (adv13: RandomNormal became an initializer), and
the ONNX Runtime sessions the folding opens run with the terminal closed (they log node names raw).

onnx-graphsurgeon folds Shape(x), Gather(Shape(x), i) and Slice(Shape(x), ..) from x's shape without reading
the Shape's `start` and `end` (opset 15): Shape(x, start=0, end=1) of a (2, 8) x became [2, 8], and
Gather(Shape(x, start=1), 1) of a (batch, 8, 16) x became 8, not 16. The dynamo exporter writes such Shapes
(`x.size(0)`), which a pinned symbolic batch (--input-shape) makes foldable. So each is folded as
Slice(Shape(x), [start], [end], [0]), the same values, which it folds right; one left unfolded is put back.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER

from passes.base import Option, Pass, PassContext, PassResult
from passes.constant_sizes import MAX_FOLDED_ELEMENTS, inferred_elements
from passes.graph_builder import taken_prefixes, unique_name
from passes.graph_io import (copy_graph, graph_is_topologically_sorted, graph_to_model, own_op_names,
                             replace_graph_contents, still_named_with_its_domain)
from passes.one_line import one_line, terminal_closed
from passes.registry import register_pass
from patterns.graph_query import declared_static_shape, draws_random_values, toposort

# Rounds of folding while size-making ops wait for their size inputs to be folded.
MAX_ROUNDS = 4
INT64_MAX = 2**63 - 1
BOUNDS_SUFFIX = "/fold_constants_bounds"


def _bounded_shapes_as_slices(graph: gs.Graph) -> list[gs.Node]:
    """Every Shape(x, start, end) as Slice(Shape(x), [start], [end], [0]), in place (the Slice right after the
    Shape, its names under a folder `<shape node>` + BOUNDS_SUFFIX made unique: nameless Shapes, as ONNX allows,
    shared one, and two tensors of one name lost a Shape); the Slices made."""
    nodes, made, taken = [], [], taken_prefixes(graph)
    for node in graph.nodes:
        nodes.append(node)
        start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")
        if node.op != "Shape" or (start == 0 and end is None) or len(node.outputs) != 1:
            continue
        prefix = unique_name(f"{node.name}{BOUNDS_SUFFIX}", taken)
        whole = gs.Variable(f"{prefix}/whole", dtype=np.int64)
        bounds = [gs.Constant(f"{prefix}/{what}", np.array([value], np.int64))
                  for what, value in (("start", start), ("end", INT64_MAX if end is None else int(end)), ("axis", 0))]
        sliced = gs.Node("Slice", prefix, inputs=[whole, *bounds], outputs=[node.outputs[0]])
        node.attrs = {key: value for key, value in node.attrs.items() if key not in ("start", "end")}
        node.outputs = [whole]
        nodes.append(sliced)
        made.append(sliced)
    graph.nodes = nodes
    return made


def _unfolded_bounds_back(graph: gs.Graph, made: list[gs.Node]) -> None:
    """Each Slice of `made` (_bounded_shapes_as_slices') that still reads its Shape: the Shape(x, start, end) again.
    Known by identity, not by name: a Slice of the model's own named like one is left as it is."""
    made_ids, removed = {id(node) for node in made}, set()
    for node in graph.nodes:
        shape = node.inputs[0].inputs[0] if id(node) in made_ids and node.inputs[0].inputs else None
        if (shape is None or shape.op != "Shape" or len(node.inputs[0].outputs) != 1
                or not all(isinstance(t, gs.Constant) for t in node.inputs[1:4])):
            continue
        start, end = (int(np.asarray(t.values).reshape(-1)[0]) for t in node.inputs[1:3])
        shape.attrs = dict(shape.attrs, start=start, **({} if end == INT64_MAX else {"end": end}))
        shape.outputs = [node.outputs[0]]
        node.inputs.clear()
        node.outputs.clear()
        removed.add(id(node))
    graph.nodes = [node for node in graph.nodes if id(node) not in removed]


def _constant(tensor: gs.Tensor) -> Optional[np.ndarray]:
    return np.asarray(tensor.values) if isinstance(tensor, gs.Constant) else None


def _broadcast_elements(first: list[int], second: list[int]) -> int:
    rank = max(len(first), len(second))
    first, second = [1] * (rank - len(first)) + first, [1] * (rank - len(second)) + second
    return math.prod(max(a, b) for a, b in zip(first, second))


def size_made(node: gs.Node) -> Optional[int]:
    """How many elements `node` makes, if it is a size-making op (ConstantOfShape, Expand, Tile,
    Range), from its inputs, before anything runs; None when that is not yet known. -1 for other ops."""
    if node.op == "ConstantOfShape":
        shape = _constant(node.inputs[0])
        return None if shape is None else math.prod(max(int(size), 0) for size in shape.reshape(-1))
    if node.op in ("Expand", "Tile"):
        data_shape, sizes = declared_static_shape(node.inputs[0]), _constant(node.inputs[1])
        if data_shape is None or sizes is None:
            return None
        sizes = [int(size) for size in sizes.reshape(-1)]
        if node.op == "Tile":
            return math.prod(max(size, 0) for size in data_shape) * math.prod(max(size, 0) for size in sizes)
        return _broadcast_elements(data_shape, [max(size, 0) for size in sizes])
    if node.op == "Range":
        bounds = [_constant(tensor) for tensor in node.inputs[:3]]
        if any(bound is None or bound.size != 1 for bound in bounds):
            return None
        start, limit, delta = (float(bound.reshape(-1)[0]) for bound in bounds)
        if delta == 0 or not all(math.isfinite(value) for value in (start, limit, delta)):
            return MAX_FOLDED_ELEMENTS + 1   # ONNX Runtime refuses it: no need to ask
        return max(math.ceil((limit - start) / delta), 0)
    return -1


# Ops whose output is a sequence: a Loop kept with its readouts appended (SequenceEmpty is constant, no inputs).
SEQUENCE_MAKERS = frozenset({"SequenceEmpty", "SequenceConstruct", "SequenceInsert", "SequenceErase", "SplitToSequence"})


class _SizeGate:
    """should_exclude_node for gs.Graph.fold_constants: keeps nodes past the cap (and size-making
    ops of unknown size) out of one round of folding, and remembers why."""

    def __init__(self) -> None:
        self.too_large: dict[str, str] = {}   # node name -> why (for the notes)
        self.random: dict[str, str] = {}      # node name -> why: random draws are never folded
        self.waiting = 0                       # ops whose size inputs are not constants yet
        self.inferred: dict[str, int] = {}     # tensor name -> elements, by shape inference this round

    def __call__(self, node: gs.Node) -> bool:
        if still_named_with_its_domain(node):   # another domain's op named like ONNX's (x.Identity): onnx-graphsurgeon
            return True   # would fold it as that op; left to run time (adv23)
        if node.op in SEQUENCE_MAKERS:
            return True   # onnx-graphsurgeon folds a constant sequence as a list, then fails on its nbytes
        if draws_random_values(node):   # folded, its one draw would be the model's at every run
            self.random[node.name] = (f"{node.op} '{node.name}' draws new values at every run: left to run time")
            return True
        made = size_made(node)
        inferred = max((self.inferred.get(tensor.name, -1) for tensor in node.outputs), default=-1)
        if made is None and inferred < 0:
            self.waiting += 1
            return True
        elements = max(-1 if made is None else made, inferred)
        if elements > MAX_FOLDED_ELEMENTS:
            self.too_large[node.name] = (f"{node.op} '{node.name}' would make {elements:,} elements "
                                         f"(> {MAX_FOLDED_ELEMENTS:,}): left to run time")
            return True
        return False


def _fold_gated(graph: gs.Graph, gate: _SizeGate, **options) -> bool:
    """gs.Graph.fold_constants in its own order (the graph, then its If/Loop/Scan bodies, then If nodes of a constant
    condition flattened), with `gate` asked in the bodies too: onnx-graphsurgeon's own recursion does not pass
    should_exclude_node on, so a body's ConstantOfShape of 2^29 elements was evaluated and a body's RandomNormal
    folded, once its If was flattened, into the model as a constant (adv13). Whether an If was flattened (its
    branch's nodes, now the graph's, fold in the next round)."""
    graph.fold_constants(recurse_subgraphs=False, flatten_subgraphs=False, should_exclude_node=gate, **options)
    for body in graph.subgraphs():
        _fold_gated(body, gate, **options)
    ifs = sum(node.op == "If" for node in graph.nodes)
    graph.fold_constants(recurse_subgraphs=False, flatten_subgraphs=True, should_exclude_node=lambda node: True,
                         **options)
    return sum(node.op == "If" for node in graph.nodes) < ifs


@register_pass
class FoldConstants(Pass):
    name = "fold-constants"
    description = "fold constant subgraphs (and shapes) into initializers; keeps the graph on failure"

    skip_above_nodes = Option(int, 50000, "do nothing on graphs with more nodes (folding a huge unrolled graph is slow)",
                              min=0)
    # A folded Expand/Tile can make the file huge.
    size_threshold_bytes = Option(int, 16 << 20, "do not fold tensors larger than this many bytes", min=0)
    fold_shapes = Option(bool, True, "also fold Shape ops on static shapes")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        nodes_before = len(graph.nodes)
        if nodes_before > self.skip_above_nodes:
            return PassResult(False, {"folded": 0, "skipped": "too many nodes"},
                              [f"skipped: {nodes_before} nodes > skip_above_nodes={self.skip_above_nodes}"])
        working = copy_graph(graph)
        previous_severity = G_LOGGER.severity
        G_LOGGER.severity = G_LOGGER.ERROR  # gs warns per unfoldable node; we report a summary
        try:
            if not graph_is_topologically_sorted(working):
                toposort(working)
            bounds_made = _bounded_shapes_as_slices(working)
            gate = _SizeGate()
            for _ in range(MAX_ROUNDS):
                gate.waiting, nodes_before_round = 0, len(working.nodes)
                gate.inferred = inferred_elements(graph_to_model(working))
                # (own_op_names: a local function F runs in ONNX Runtime as itself, not as model_to_graph's x.F)
                with terminal_closed(), own_op_names(working):   # the ONNX Runtime sessions it opens log node names raw
                    flattened = _fold_gated(working, gate, fold_shapes=self.fold_shapes, error_ok=True,
                                            size_threshold=self.size_threshold_bytes)
                working.cleanup(remove_unused_graph_inputs=False)
                if (not gate.waiting and not flattened) or len(working.nodes) == nodes_before_round:
                    break
            _unfolded_bounds_back(working, bounds_made)
        except Exception as error:  # folding is optional: never fail the pipeline for it
            reason = one_line(error, limit=300)
            return PassResult(False, {"folded": 0}, [f"constant folding failed: {reason}; graph left unfolded"])
        finally:
            G_LOGGER.severity = previous_severity
        notes = sorted(gate.too_large.values()) + sorted(gate.random.values())
        folded = nodes_before - len(working.nodes)
        if folded <= 0:
            return PassResult(False, {"folded": 0}, notes)
        replace_graph_contents(graph, working)
        return PassResult(True, {"folded": folded}, notes)

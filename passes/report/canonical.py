"""Print a region (before beside after) with canonical names, so identical rewrites print identically.

Tensor names depend on where in the model a rewrite happened ("/layers.0/blocks.1/Einsum_7"),
so they are replaced by names that depend only on the region's structure:

    %in0, %in1 ...   values the region reads from outside (same name on both sides)
    %out0, %out1 ... values the region gives to the rest of the graph (same on both sides)
    %0, %1 ...       values inside one side

Nodes are listed in a canonical topological order: among the nodes whose inputs are ready,
the one with the smallest (op, canonical inputs) comes first, so the order does not depend on
where the exporter happened to put nodes. Constants print as their type, or with eight
elements or fewer, as their values.

Each printed line is ``[kind, text, original node name]``; kind is "node", "context" (the
producer of an input or the consumers of an output, outside the region) or "more" (the
summary line of a region too big to print in full).
"""
from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

from passes.report.regions import Region, SnapshotDiff
from passes.report.snapshot import GraphSnapshot, attribute_texts

# A side with more nodes than this prints as op histogram + first and last few nodes.
FULL_PRINT_MAX_NODES = 80
SUMMARY_HEAD_NODES = 8
SUMMARY_TAIL_NODES = 4
# Inputs printed per node; more print as the first few, a count and the last two.
ARGUMENTS_SHOWN = 10


@dataclass
class RegionPrint:
    before: list[list[str]]
    after: list[list[str]]
    # The text that identical rewrites share: both sides' node lines, context left out.
    identity: str
    removed_ops: dict[str, int]
    added_ops: dict[str, int]
    # Where the rewrite happened, in the model's own names (common prefix of the node names).
    anchor: str


@dataclass
class _Names:
    """Canonical names shared by both sides (boundary) and per side (internal)."""

    boundary: dict[str, str] = field(default_factory=dict)
    inputs: int = 0
    outputs: int = 0

    def boundary_input(self, name: str) -> str:
        if name not in self.boundary:
            self.boundary[name] = f"%in{self.inputs}"
            self.inputs += 1
        return self.boundary[name]

    def boundary_output(self, name: str) -> str:
        if name not in self.boundary:
            self.boundary[name] = f"%out{self.outputs}"
            self.outputs += 1
        return self.boundary[name]


class _Side:
    """One side of a region (the removed nodes in ``before``, or the added ones in ``after``)."""

    def __init__(self, snapshot: GraphSnapshot, indices: list[int]) -> None:
        self.snapshot = snapshot
        # Constant nodes are not listed: their values print where they are used.
        self.constant_nodes = [index for index in indices if snapshot.nodes[index].op == "Constant"]
        indices = [index for index in indices if snapshot.nodes[index].op != "Constant"]
        self.indices = indices
        self.local: dict[str, str] = {}  # tensor name -> canonical name, for values made here
        self.internal_values = 0
        self.read_boundary: dict[str, None] = {}  # boundary inputs read here, in order of use
        members = set(indices)
        self.produced_here = {name: index for index in indices for name in snapshot.nodes[index].outputs if name}
        consumers = snapshot.consumer_indices()
        graph_outputs = set(snapshot.graph_outputs)
        # Values read outside the region (or graph outputs): they keep a boundary name.
        self.escaping = {
            name for name in self.produced_here
            if name in graph_outputs or any(reader not in members for reader in consumers.get(name, ()))
        }

    def canonical_order(self, names: _Names) -> list[int]:
        """Kahn's algorithm; ties broken by (op, canonical inputs), then by graph position."""
        nodes = self.snapshot.nodes
        waiting: dict[int, int] = {}
        readers: dict[int, list[int]] = {}
        for index in self.indices:
            producers = {self.produced_here[name] for name in nodes[index].inputs if name in self.produced_here}
            producers.discard(index)
            waiting[index] = len(producers)
            for producer in producers:
                readers.setdefault(producer, []).append(index)
        local = self.local

        def sort_key(index: int) -> tuple:
            node = nodes[index]
            inputs = tuple(local.get(name) or names.boundary.get(name) or "~" for name in node.inputs)
            return (node.op, inputs, index)

        ready = [sort_key(index) for index in self.indices if waiting[index] == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            *_, index = heapq.heappop(ready)
            order.append(index)
            self._name_outputs(index, names, local)
            for reader in readers.get(index, ()):
                waiting[reader] -= 1
                if waiting[reader] == 0:
                    heapq.heappush(ready, sort_key(reader))
        if len(order) < len(self.indices):  # a cycle cannot happen in ONNX; keep every node anyway
            placed = set(order)
            order += [index for index in self.indices if index not in placed]
        return order

    def _name_outputs(self, index: int, names: _Names, local: dict[str, str]) -> None:
        for name in self.snapshot.nodes[index].outputs:
            if not name:
                continue
            if name in self.escaping:
                local[name] = names.boundary_output(name)
            else:
                local[name] = f"%{self.internal_values}"
                self.internal_values += 1

    def value_name(self, node_index: int, position: int, names: _Names) -> str:
        node = self.snapshot.nodes[node_index]
        name = node.inputs[position]
        if not name:
            return "_"  # an omitted optional input
        if position in node.constant_texts:
            return node.constant_texts[position]
        if name in self.local:
            return self.local[name]
        constant = _constant_node_value(self.snapshot, name)
        if constant is not None:
            return constant
        self.read_boundary[name] = None
        return names.boundary_input(name)

    def node_line(self, index: int, names: _Names) -> list[str]:
        node = self.snapshot.nodes[index]
        outputs = ", ".join(self.local.get(name, "_") for name in node.outputs) or "()"
        arguments = [self.value_name(index, position, names) for position in range(len(node.inputs))]
        if len(arguments) > ARGUMENTS_SHOWN:  # a 3,136-input Concat: the ends tell the story
            arguments = arguments[:ARGUMENTS_SHOWN - 2] + [f"… {len(arguments)} inputs …"] + arguments[-2:]
        arguments = ", ".join(arguments)
        attributes = ", ".join(f"{key}={value}" for key, value in attribute_texts(node.attributes))
        text = f"{outputs} = {node.op}({arguments})" + (f" {{{attributes}}}" if attributes else "")
        return ["node", text, node.name]


def _constant_node_value(snapshot: GraphSnapshot, name: str) -> str | None:
    """``const<i64>(2)`` if ``name`` is made by a Constant node (in the region or not)."""
    producer = snapshot.producer_index().get(name)
    if producer is None or snapshot.nodes[producer].op != "Constant":
        return None
    texts = attribute_texts(snapshot.nodes[producer].attributes)
    return "const" + texts[0][1] if len(texts) == 1 else "const"


def _context_lines(side: _Side, names: _Names) -> tuple[list, list]:
    """Producers of the region's inputs (above) and consumers of its outputs (below)."""
    snapshot = side.snapshot
    producers = snapshot.producer_index()
    graph_inputs = set(snapshot.graph_inputs)
    above = []
    # In canonical order (%in0, %in1, ...), not in order of first use.
    for name in sorted(side.read_boundary, key=lambda n: (len(names.boundary[n]), names.boundary[n])):
        producer = producers.get(name)
        if producer is not None:
            above.append(["context", f"{names.boundary[name]} ← {snapshot.nodes[producer].op}", snapshot.nodes[producer].name])
        elif name in graph_inputs:
            above.append(["context", f"{names.boundary[name]} ← graph input", name])
    below = []
    members = set(side.indices)
    consumers = snapshot.consumer_indices()
    graph_outputs = set(snapshot.graph_outputs)
    for name in sorted(side.escaping, key=lambda n: (len(names.boundary[n]), names.boundary[n])):
        readers = [snapshot.nodes[i] for i in consumers.get(name, ()) if i not in members]
        targets = sorted({reader.op for reader in readers}) + (["graph output"] if name in graph_outputs else [])
        first = readers[0].name if readers else name
        below.append(["context", f"{names.boundary[name]} → {', '.join(targets)}", first])
    return above, below


def _print_side(side: _Side, names: _Names) -> tuple[list[list[str]], list[str]]:
    """(lines with context, identity lines without context)."""
    constants_note = []
    if side.constant_nodes:
        count = len(side.constant_nodes)
        constants_note = [["more", f"+ {count} Constant node{'s' if count > 1 else ''} (values shown where used)", ""]]
    if not side.indices:
        return constants_note or [["more", "(nothing)", ""]], ["(nothing)"]
    order = side.canonical_order(names)
    total = len(order)
    if total <= FULL_PRINT_MAX_NODES:
        shown = order
        body = [side.node_line(index, names) for index in shown]
    else:
        head, tail = order[:SUMMARY_HEAD_NODES], order[-SUMMARY_TAIL_NODES:]
        body = [side.node_line(index, names) for index in head]
        histogram = Counter(side.snapshot.nodes[index].op for index in order)
        ops = ", ".join(f"{op} {count:,}" for op, count in sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0])))
        body.append(["more", f"… {total - len(head) - len(tail):,} more nodes ({total:,} in all: {ops}) …", ""])
        body += [side.node_line(index, names) for index in tail]
    above, below = _context_lines(side, names)
    # The exporter shares Constant nodes between blocks; a shared one is removed with the
    # first block's rewrite only. So the note stays out of the identity of the rewrite.
    identity = [line[1] for line in body]
    return above + body + constants_note + below, identity


def _anchor(snapshot: GraphSnapshot, indices: list[int]) -> str:
    """The common '/'-prefix of the node names ("/layers.0/blocks.1/op/"), else the first name.

    Constant nodes do not count when there are others: a shared one may come from any block.
    """
    named = [index for index in indices if snapshot.nodes[index].name]
    not_constant = [index for index in named if snapshot.nodes[index].op != "Constant"]
    names = [snapshot.nodes[index].name for index in (not_constant or named)]
    if not names:
        outputs = [name for index in indices for name in snapshot.nodes[index].outputs if name]
        return outputs[0] if outputs else ""
    parts = [name.split("/") for name in names[:2000]]
    common = []
    for pieces in zip(*parts):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    prefix = "/".join(common)
    if len(names) == 1:
        return names[0]
    return (prefix + "/") if prefix else names[0]


def print_region(diff: SnapshotDiff, region: Region) -> RegionPrint:
    names = _Names()
    before_side = _Side(diff.before, region.removed)
    after_side = _Side(diff.after, region.added)
    before_lines, before_identity = _print_side(before_side, names)
    after_lines, after_identity = _print_side(after_side, names)
    identity = "\n".join(before_identity) + "\n=>\n" + "\n".join(after_identity)
    anchor = _anchor(diff.before, region.removed) if region.removed else _anchor(diff.after, region.added)
    return RegionPrint(
        before=before_lines, after=after_lines, identity=identity,
        removed_ops=dict(Counter(diff.before.nodes[i].op for i in region.removed)),
        added_ops=dict(Counter(diff.after.nodes[i].op for i in region.added)),
        anchor=anchor,
    )

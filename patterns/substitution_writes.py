"""A buffer written step by step from its own earlier values: a forward substitution, no linear recurrence.

transformers' Qwen3Next, exported through dynamo, solves its chunk's unit-triangular system row by row
(`torch_chunk_gated_delta_rule`):

    for i in range(1, chunk_size):
        row = ut[..., i, :i]; sub = ut[..., :i, :i]
        ut[..., i, :i] = row + (row.unsqueeze(-1) * sub).sum(-2)

Each write is a Scatter into the buffer the write before made, and its update reads that buffer's values: row i
depends on every row before it through a matrix, not on one state through a per-channel decay. A loop writing its
states into a buffer (`y[:, t] = h_t`, patterns/buffer_writes.py) reads the buffer at most through its Shape; such
writes are not these. `find_substitution_writes` finds the chains, so reroll-scans can say why nothing re-rolls.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from patterns.graph_query import linked_chains, producer
from patterns.no_ops import see_through

MIN_STEPS = 4   # as passes/step_operands.MIN_EXPLAINED_STEPS
_SCATTERS = frozenset({"ScatterND", "ScatterElements"})
# How far back from a write's update its read of the buffer before is looked for (Qwen3Next through dynamo:
# Unsqueeze(Transpose(ScatterND(Transpose(Gather(buffer)), ..))), five nodes)
_UPDATE_DEPTH = 6
_SHAPE_ONLY = frozenset({"Shape", "Size"})   # reads of a tensor's shape, not its values


@dataclass
class SubstitutionWrites:
    writes: list   # the Scatter nodes, first to last, each writing into the one before's output

    @property
    def anchor(self) -> str:
        first = self.writes[0]
        return first.name or first.outputs[0].name

    @property
    def length(self) -> int:
        return len(self.writes)


def _reads_values_of(tensor: gs.Tensor, target: gs.Tensor, depth: int) -> bool:
    """`target`'s values are read within `depth` producers back from `tensor` (not through Shape or Size)."""
    frontier, seen = [tensor], set()
    for _ in range(depth):
        next_frontier = []
        for t in frontier:
            if t is target:
                return True
            node = producer(t)
            if node is None or id(node) in seen or node.op in _SHAPE_ONLY:
                continue
            seen.add(id(node))
            next_frontier += list(node.inputs)
        frontier = next_frontier
    return any(t is target for t in frontier)


def find_substitution_writes(graph: gs.Graph) -> list[SubstitutionWrites]:
    """Runs of MIN_STEPS or more Scatter writes (ScatterND, ScatterElements, no reduction), each into the buffer the
    one before wrote (through no-ops), each of whose updates but the first's reads that buffer's values."""
    writes = [node for node in graph.nodes if node.op in _SCATTERS and node.attrs.get("reduction", "none") == "none"]
    if len(writes) < MIN_STEPS:
        return []
    by_output = {id(node.outputs[0]): node for node in writes}
    before = {}
    for node in writes:
        previous = by_output.get(id(see_through(node.inputs[0])[0]))
        if previous is not None and previous is not node and previous.op == node.op:
            before[id(node)] = previous
    chains = []
    # after a fork (two writes into one buffer), each write begins a chain of its own
    for chain in linked_chains(writes, before):
        # the runs of writes each reading the values of the one before: a write that reads the buffer through its
        # Shape alone (or not at all) ends one (a chain of state writes with three substitution rows among them was
        # named whole, "each write's update computed from the buffer written before it": fuzz23)
        run = chain[:1]
        for previous, write in zip(chain, chain[1:]):
            if not _reads_values_of(write.inputs[-1], previous.outputs[0], _UPDATE_DEPTH):
                if len(run) >= MIN_STEPS:
                    chains.append(SubstitutionWrites(run))
                run = []
            run.append(write)
        if len(run) >= MIN_STEPS:
            chains.append(SubstitutionWrites(run))
    return chains

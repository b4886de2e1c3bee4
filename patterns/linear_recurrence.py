"""The unrolled linear recurrence: the pattern a naive selective-scan export leaves behind.

    x_i = a_i * x_{i-1} + b_i        for i = 0 .. L-1   (x_{-1} = initial state, often zeros)
    y_i = f(x_i, c_i)                a per-step readout (see patterns/readout.py)
    y   = stack(y_0 .. y_{L-1})

where a_i, b_i, c_i are the i-th slices of three tensors A, B, C along one axis each.
Every step in the graph is Add(Mul(a_i, x_{i-1}), b_i), in either operand order.

`find_recurrences` returns the chains that match and, for candidates that do not, a reason
a person can act on ("index jumps from 4 to 6 at step 5").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import onnx_graphsurgeon as gs

from patterns.graph_query import describe, is_all_zeros, producer
from patterns.indexing import StepSlice, match_step_slice
from patterns.ranks import RankMap
from patterns.readout import ReadoutForm, ReadoutMismatch, ReadoutStep, match_readout

MIN_STEPS = 2


@dataclass
class Step:
    add: gs.Node
    mul: gs.Node
    decay: StepSlice       # a_i
    drive: StepSlice       # b_i
    previous: gs.Tensor    # x_{i-1}

    @property
    def state(self) -> gs.Tensor:
        return self.add.outputs[0]


@dataclass
class Recurrence:
    """A matched chain, described by whole tensors so it can be computed without the steps."""

    length: int
    decay: gs.Tensor                 # A: a_i = A[.., i, ..] along decay_axis
    decay_axis: int
    drive: gs.Tensor                 # B
    drive_axis: int
    initial_state: Optional[gs.Tensor]   # None when the chain starts from zeros
    readout: ReadoutForm
    coeff: Optional[gs.Tensor]       # C, for readouts that have one
    coeff_axis: int
    output: gs.Tensor                # the stacked y (the Concat's output)
    final_state: gs.Tensor           # x_{L-1}
    final_state_escapes: bool        # x_{L-1} is used beyond the chain
    rank: int = 0                    # rank of A (one more than a state's)
    drive_rank: int = 0
    initial_rank: Optional[int] = None
    nodes: list = field(default_factory=list)   # every node the re-rolled form supersedes

    @property
    def anchor(self) -> str:
        return self.nodes[0].name if self.nodes else "?"


@dataclass
class Rejection:
    anchor: str          # name of the first step's Add
    steps: int
    reason: str

    def __str__(self) -> str:
        return f"chain at '{self.anchor}' ({self.steps} steps) not re-rolled: {self.reason}"


@dataclass
class MatchReport:
    recurrences: list[Recurrence]
    rejections: list[Rejection]


def _match_step(add: gs.Node, ranks: RankMap) -> Optional[Step]:
    """Add(Mul(a_i, x), b_i) with a_i and b_i single steps of some tensor."""
    if add.op != "Add" or len(add.inputs) != 2:
        return None
    for mul_side in (0, 1):
        mul = producer(add.inputs[mul_side])
        if mul is None or mul.op != "Mul" or len(mul.inputs) != 2:
            continue
        drive = match_step_slice(add.inputs[1 - mul_side], ranks)
        if drive is None:
            continue
        for decay_side in (0, 1):
            decay = match_step_slice(mul.inputs[decay_side], ranks)
            if decay is not None:
                return Step(add, mul, decay, drive, mul.inputs[1 - decay_side])
    return None


class _ChainMismatch(Exception):
    pass


def _check_indices(slices: list[StepSlice], what: str) -> None:
    first = slices[0]
    for position, item in enumerate(slices):
        if item.key != first.key:
            raise _ChainMismatch(
                f"{what} at step {position} comes from '{item.source.name}' axis {item.axis}, "
                f"not '{first.source.name}' axis {first.axis} like step 0")
        if item.index != position:
            previous = slices[position - 1].index if position else None
            if previous is not None and item.index == previous:
                raise _ChainMismatch(f"{what} index {item.index} is repeated at step {position}")
            raise _ChainMismatch(f"{what} index jumps to {item.index} at step {position} (expected {position})")


def _build_recurrence(chain: list[Step], graph_outputs: set[int], ranks: RankMap) -> Recurrence:
    _check_indices([s.decay for s in chain], "decay a_i")
    _check_indices([s.drive for s in chain], "input b_i")

    readouts: list[ReadoutStep] = []
    for position, step in enumerate(chain):
        next_mul = chain[position + 1].mul if position + 1 < len(chain) else None
        state = step.state
        if position + 1 < len(chain) and id(state) in graph_outputs:
            raise _ChainMismatch(f"intermediate state '{state.name}' at step {position} is a graph output")
        readers = [n for n in state.outputs if n is not next_mul]
        if position + 1 < len(chain):
            if len(readers) != 1:
                names = ", ".join(describe(n) for n in readers) or "nothing"
                raise _ChainMismatch(
                    f"intermediate state '{state.name}' at step {position} is read by {names}; expected one readout")
            try:
                readouts.append(match_readout(state, readers[0], ranks))
            except ReadoutMismatch as error:
                raise _ChainMismatch(f"step {position}: {error}") from None
            continue
        # The last state may also be used elsewhere (a final-state output): pick the reader that fits.
        candidates = []
        for reader in readers:
            try:
                candidates.append(match_readout(state, reader, ranks))
            except ReadoutMismatch:
                pass
        if not candidates:
            raise _ChainMismatch(f"no readout of the last state '{state.name}' matches the per-step form")
        readouts.append(candidates[0])

    form = readouts[0].form
    concat = readouts[0].concat
    for position, readout in enumerate(readouts):
        if readout.form != form:
            raise _ChainMismatch(f"readout at step {position} differs from step 0 ({readout.form} vs {form})")
    if form.kind != "states":
        _check_indices([r.coeff for r in readouts], "readout coefficient c_i")
    pieces = [r.stacked_piece for r in readouts]
    if list(concat.inputs) != pieces:
        raise _ChainMismatch(
            f"{describe(concat)} stacks {len(concat.inputs)} tensors; expected exactly the {len(chain)} step outputs in order")
    for piece in pieces:
        if id(piece) in graph_outputs:
            raise _ChainMismatch(f"per-step output '{piece.name}' is a graph output")

    first = chain[0]
    initial = None if is_all_zeros(first.previous) else first.previous
    last_state = chain[-1].state
    last_readout_nodes = set(id(n) for n in readouts[-1].nodes)
    escapes = id(last_state) in graph_outputs or any(
        id(n) not in last_readout_nodes for n in last_state.outputs)

    nodes: list[gs.Node] = []
    for step, readout in zip(chain, readouts):
        nodes += [step.add, step.mul, *step.decay.nodes, *step.drive.nodes, *readout.nodes]
    nodes.append(concat)
    coeff = readouts[0].coeff
    decay_rank, drive_rank = ranks.rank(first.decay.source), ranks.rank(first.drive.source)
    if decay_rank is None or drive_rank is None:
        raise _ChainMismatch(f"rank of '{first.decay.source.name}' or '{first.drive.source.name}' is unknown")
    if drive_rank != decay_rank:
        raise _ChainMismatch(f"decay (rank {decay_rank}) and input (rank {drive_rank}) ranks differ")
    return Recurrence(
        rank=decay_rank, drive_rank=drive_rank, initial_rank=ranks.rank(initial) if initial is not None else None,
        length=len(chain), decay=first.decay.source, decay_axis=first.decay.axis,
        drive=first.drive.source, drive_axis=first.drive.axis, initial_state=initial,
        readout=form, coeff=coeff.source if coeff else None, coeff_axis=coeff.axis if coeff else -1,
        output=concat.outputs[0], final_state=last_state, final_state_escapes=escapes, nodes=nodes)


def find_recurrences(graph: gs.Graph) -> MatchReport:
    ranks = RankMap(graph)
    steps = [s for s in (_match_step(node, ranks) for node in graph.nodes if node.op == "Add") if s is not None]
    step_by_state = {id(s.state): s for s in steps}
    next_steps: dict[int, list[Step]] = {}
    for step in steps:
        if id(step.previous) in step_by_state:
            next_steps.setdefault(id(step_by_state[id(step.previous)].add), []).append(step)

    graph_outputs = {id(t) for t in graph.outputs}
    recurrences, rejections = [], []
    heads = [s for s in steps if id(s.previous) not in step_by_state]
    for head in heads:
        chain, reason = [head], None
        while True:
            following = next_steps.get(id(chain[-1].add), [])
            if len(following) > 1:
                reason = (f"state '{chain[-1].state.name}' at step {len(chain) - 1} feeds "
                          f"{len(following)} steps (the chain branches)")
                break
            if not following:
                break
            chain.append(following[0])
        if reason is None and len(chain) < MIN_STEPS:
            continue
        if reason is None:
            try:
                recurrences.append(_build_recurrence(chain, graph_outputs, ranks))
                continue
            except _ChainMismatch as error:
                reason = str(error)
        rejections.append(Rejection(head.add.name, len(chain), reason))
    return MatchReport(recurrences, rejections)

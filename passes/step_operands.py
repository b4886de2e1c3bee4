"""Step operands computed inside the loop, read as steps of one tensor, for reroll-scans: a loop that discretises at
every step reads its decays and drives the way a loop over precomputed tensors does.

A user may write the discretisation inside the loop:

    for t in range(L):
        dA = torch.exp(delta[:, t, :, None] * A)
        h = dA * h + delta[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]

Each step's a_t and b_t is then a subgraph of step slices of shared tensors, not a step of one tensor, which is what
the recurrence pattern reads (patterns/linear_recurrence.py). Where a chain of Add(Mul(a_t, x), b_t) steps has such
operands, identical at every step but for the position they take (patterns/step_template.match_operand_templates), the
subgraph is replayed once over every position (passes/scan_forms/step_replay.py: the step axis first) and each step
reads Gather(replayed, p_t, 0), the same values, before matching; `restore` puts the graph back where no re-rolled
scan took them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.piece_reads import Reads, read_back, remove_made
from passes.scan_forms.step_replay import ReplayError, replay_over_steps
from patterns.graph_query import producer
from patterns.indexing import match_step_slice
from patterns.linear_recurrence import Rejection
from patterns.no_ops import see_through
from patterns.ranks import RankMap
from patterns.step_template import TemplateMismatch, match_operand_templates

MIN_STEPS = 2
# A chain this long whose computed operands match no one subgraph is named in the pass's notes (--explain): shorter
# Add(Mul(w, x), b) chains occur outside loops (a scaled residual after a biased MatMul is two such steps).
MIN_EXPLAINED_STEPS = 4


@dataclass
class ReplayedOperands:
    made: list                                   # the replay's nodes and the Gathers
    gathers: list = field(default_factory=list)  # the Gather nodes, one per step operand
    reads: Reads = field(default_factory=list)   # the steps' Mul and Add inputs rewired to read them


def _links(graph: gs.Graph) -> dict[int, tuple]:
    """id(step Add) -> (previous step's Add, Mul, the Mul's input that is the state): Add(Mul(a, x), b) whose x is
    (through no-ops) another Add's output."""
    adds = {id(node.outputs[0]): node for node in graph.nodes
            if node.op == "Add" and len(node.inputs) == 2 and len(node.outputs) == 1}
    links = {}
    for add in adds.values():
        for mul_side in (0, 1):
            mul = producer(add.inputs[mul_side])
            if mul is None or mul.op != "Mul" or len(mul.inputs) != 2:
                continue
            for state_side in (0, 1):
                previous = adds.get(id(see_through(mul.inputs[state_side])[0]))
                if previous is not None and previous is not add:
                    links[id(add)] = (previous, mul, mul_side, state_side)
                    break
            if id(add) in links:
                break
    return links


def _signature(tensor: gs.Tensor, depth: int = 3):
    """The ops that compute `tensor`, `depth` producers back (through no-ops): what a step's decay is made of."""
    node = producer(see_through(tensor)[0])
    if node is None or depth == 0:
        return None if node is None else node.op
    return node.op, tuple(_signature(t, depth - 1) for t in node.inputs if t is not None)


def _decay_signature(links: dict, add_id: int):
    _, mul, _, state_side = links[add_id]
    return _signature(mul.inputs[1 - state_side])


def _continuing(links: dict, after: list[int], signature) -> list[int]:
    """The steps of `after` whose decay is made as `signature`'s: where a state feeds two steps (RWKV's next state
    and its readout's numerator, each Add(Mul(a, x), b)), the chain goes on into the one computed as its own steps."""
    return [add_id for add_id in after if _decay_signature(links, add_id) == signature]


def _chains(graph: gs.Graph, branching: frozenset = frozenset()) -> list[list[tuple]]:
    """Chains of steps, first to last, each step (Add, Mul, Mul's input index of the state, Add's input index of the
    Mul); the first step's Add read like the second's (its state may be any tensor: zeros, an initial state).
    `branching`: ids of Adds whose chain goes on, where a state feeds several steps, into the one step whose decay is
    computed as the chain's first step's (`_continuing`; from it on, a lone step computed otherwise ends the chain)."""
    links = _links(graph)
    following: dict[int, list] = {}
    for add_id, (previous, *_rest) in links.items():
        following.setdefault(id(previous), []).append(add_id)
    by_id = {id(node): node for node in graph.nodes}
    chains = []
    for add_id, (previous, mul, mul_side, state_side) in links.items():
        if id(previous) in links:   # not the second step of a chain
            continue
        first_mul = producer(previous.inputs[mul_side])
        if first_mul is None or first_mul.op != "Mul" or len(first_mul.inputs) != 2:
            continue
        signature = None
        if id(previous) in branching:
            signature = _signature(first_mul.inputs[1 - state_side])
            if len(following[id(previous)]) > 1 and _continuing(links, following[id(previous)], signature) != [add_id]:
                continue   # another step goes on from the first: this one reads the state
        chain = [(previous, first_mul, state_side, mul_side)]
        current = add_id
        while True:
            _, step_mul, step_mul_side, step_state_side = links[current]
            chain.append((by_id[current], step_mul, step_state_side, step_mul_side))
            after = following.get(current, [])
            if signature is not None:
                after = _continuing(links, after, signature)
            if len(after) != 1:
                break
            current = after[0]
        if len(chain) >= MIN_STEPS:
            chains.append(chain)
    return chains


# Ops that end a step slice (patterns/indexing.match_step_slice): an operand made by another is computed per step.
_STEP_INDEX_OPS = frozenset({"Gather", "Squeeze", "If"})


def _computed(tensor: gs.Tensor) -> bool:
    """`tensor` is made by an op no step slice ends in (cheap: no ranks needed)."""
    node = producer(see_through(tensor)[0])
    return node is not None and node.op not in _STEP_INDEX_OPS and node.op != "Constant"


def _is_step_slice(tensor: gs.Tensor, ranks: RankMap) -> bool:
    return match_step_slice(see_through(tensor)[0], ranks) is not None


def replay_step_operands(graph: gs.Graph, opset: int, taken: set[str],
                         misses: Optional[list[tuple[int, Rejection]]] = None,
                         allow_offset: bool = False, branching: frozenset = frozenset()) -> list[ReplayedOperands]:
    """Every chain's decays and drives that are computed per step (not steps of a tensor), replayed over all
    positions and read as Gather(replayed, p_t, 0); what was made, for `restore`. `misses` gets (id of the chain's
    first Add, why) for chains of MIN_EXPLAINED_STEPS or more whose computed operands could not be replayed.
    `allow_offset`: an operand may read a tensor at its step's position plus an offset of its own (m_{t-1} and m_t,
    Gathers of a running maximum's scan: passes/running_max_scan.py); `branching`: as `_chains`'."""
    if not any(node.op == "Add" for node in graph.nodes):
        return []
    chains = _chains(graph, branching)
    ranks: list[RankMap] = []   # built for the first chain whose operands may be computed (ranks cost on a large graph)
    done = []
    # id(a Gather made below) -> the operand it replaced: a node two chains share (TorchScript's one Mul for RWKV's
    # num and den first steps, both a_0 * zeros) is read as it was when the second chain's operands are compared
    replaced: dict[int, gs.Tensor] = {}
    # the ids of the operands replayed -> their Gathers: where another chain's are the very same tensors (RWKV's num
    # and den decay by one exp(m_{t-1} + w - m_t)) it reads those Gathers, so both chains' steps read one tensor
    gathered: dict[tuple, list] = {}
    for chain in chains:
        decays = [(mul, 1 - state_side) for _, mul, state_side, _ in chain]
        drives = [(add, 1 - mul_side) for add, _, _, mul_side in chain]
        for kind, uses in (("decays", decays), ("drives", drives)):
            operands = [replaced.get(id(node.inputs[index]), node.inputs[index]) for node, index in uses]
            if not any(_computed(operand) for operand in operands):
                continue   # steps of tensors (or constants), as a loop over precomputed tensors reads them
            if not ranks:
                ranks.append(RankMap(graph))
            if all(_is_step_slice(operand, ranks[0]) for operand in operands):
                continue
            key = tuple(id(operand) for operand in operands)
            if key in gathered:
                made = ReplayedOperands([], gathers=list(gathered[key]))
                for (node, index), gather in zip(uses, gathered[key]):
                    made.reads.append((node, index, node.inputs[index]))
                    node.inputs[index] = gather.outputs[0]
                done.append(made)
                continue
            shared = see_through(operands[0])[0]
            if all(see_through(operand)[0] is shared for operand in operands):   # MiniMax's exp(-slope * block)
                _missed(misses, chain, f"its {kind} are one tensor, '{shared.name}', read by every step: a {kind[:-1]} "
                                       "shared by all steps, not a step of a tensor, is not taken")
                continue
            try:
                template, positions = match_operand_templates(operands, ranks[0], allow_offset=allow_offset)
            except TemplateMismatch as mismatch:
                _missed(misses, chain, f"its {kind} are computed at every step, but not by one subgraph ({mismatch})")
                continue
            builder = GraphBuilder(graph, opset, prefix=f"reroll_scans/step_operands{len(done)}", taken=taken)
            try:
                # positions 0 .. p + n - 1 where the steps take p .. p + n - 1 (a loop from the second position: p 1),
                # so each step reads its own position, as its readout's coefficients do; reroll-scans slices the chain's
                replayed = replay_over_steps(builder, template, gs.Variable.empty(), min(positions) + len(operands))
            except ReplayError as error:
                remove_made(graph, list(builder.nodes))
                _missed(misses, chain, f"its {kind} are computed at every step and cannot be replayed over all of "
                                       f"them ({error})")
                continue
            made = ReplayedOperands([])
            for (node, index), position in zip(uses, positions):
                step = builder.gather(replayed, position, 0)
                made.gathers.append(builder.nodes[-1])
                made.reads.append((node, index, node.inputs[index]))
                replaced[id(step)] = replaced.get(id(node.inputs[index]), node.inputs[index])
                node.inputs[index] = step
            made.made = list(builder.nodes)
            gathered[key] = made.gathers
            done.append(made)
    return done


def _missed(misses: Optional[list], chain: list[tuple], reason: str) -> None:
    if misses is not None and len(chain) >= MIN_EXPLAINED_STEPS:
        first_add = chain[0][0]
        anchor = first_add.name or first_add.outputs[0].name   # nodes may be nameless; their outputs are not
        misses.append((id(first_add), Rejection(anchor, len(chain), reason)))


def restore(graph: gs.Graph, replayed: ReplayedOperands) -> None:
    """The steps read their own operands again and the nodes made for them are gone: the graph as it was."""
    read_back(replayed.reads)
    remove_made(graph, replayed.made)

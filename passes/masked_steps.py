"""Masked steps read as linear steps, for reroll-scans: `h = torch.where(m_t, a_t * h + b_t, h)` (a padding mask) is
the step h = where(m_t, a_t, 1) * h + where(m_t, b_t, 0), exactly (patterns/masked_step.py).

Each masked step's Where becomes that step in place: the Where node is the step's Add (its output, and so every
reader, kept), its Mul reads the decay Where(cond, a_t, 1) and the Add the drive Where(cond, b_t, 0) (the step in the
else branch, `torch.where(~m, h, a * h + b)`: Where(cond, 1, a_t) and Where(cond, 0, b_t)); the step's own Add, read by
the Where alone, is taken out. The decays and drives are then computed at every step, which passes/step_operands.py
replays over all positions like any loop that computes them per step; a decay Where(c, Exp(z), 1) keeps its log,
Where(c, z, 0) (passes/scan_forms/decays.py), so the log-space forms take it too. `restore` puts every Where back where
no re-rolled scan took its step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.one_line import printable
from passes.piece_reads import remove_made
from patterns.graph_query import element_type
from patterns.indexing import match_step_slice
from patterns.linear_recurrence import MIN_STEPS, Rejection
from patterns.masked_step import MaskedMiss, MaskedStep, find_masked_steps
from patterns.no_ops import see_through
from patterns.ranks import RankMap
from patterns.small_constants import MAX_ELEMENTS, small_value


@dataclass
class MaskedRewrite:
    where: gs.Node
    inputs: list                 # the Where's inputs before
    add: gs.Node                 # the step's own Add, out of the graph while the Where is the step
    add_inputs: list
    add_outputs: list
    mul: gs.Node
    decay_side: int
    decay: gs.Tensor             # what the Mul read there before
    made: list = field(default_factory=list)


def _element_type(step: MaskedStep) -> Optional[np.dtype]:
    kept = step.where.inputs[3 - step.step_branch]
    for tensor in (step.where.outputs[0], step.add.outputs[0], step.decay, step.drive, kept):
        found = element_type(tensor)
        if found is not None and not isinstance(found, int):
            return np.dtype(found)
    return None


def _rewrite(builder: GraphBuilder, step: MaskedStep, dtype: np.dtype,
             cond: Optional[gs.Tensor] = None) -> MaskedRewrite:
    """`step`'s Where as its linear step; `cond`: the step's mask read as a step of one stacked constant (made by the
    caller, its nodes the builder's last), else the Where's own."""
    where, add, mul = step.where, step.add, step.mul
    one, zero = builder.const(np.array(1, dtype)), builder.const(np.array(0, dtype))
    first = len(builder.nodes) - (cond is not None)
    cond = step.cond if cond is None else cond
    then = step.step_branch == 1
    decay = builder.where(cond, step.decay, one) if then else builder.where(cond, one, step.decay)
    drive = builder.where(cond, step.drive, zero) if then else builder.where(cond, zero, step.drive)
    done = MaskedRewrite(where, list(where.inputs), add, list(add.inputs), list(add.outputs), mul,
                         1 - step.state_side, step.decay, made=builder.nodes[first:])
    mul.inputs[1 - step.state_side] = decay
    product = mul.outputs[0]
    add.inputs.clear()
    add.outputs.clear()   # (taken out of graph.nodes by the caller, all at once)
    where.op = "Add"
    where.inputs.clear()
    where.inputs.extend([product, drive] if step.mul_side == 0 else [drive, product])
    return done


def mask_steps(graph: gs.Graph, opset: int, taken: set[str],
               misses: Optional[list[tuple[int, Rejection]]] = None) -> list[MaskedRewrite]:
    """Every masked step in a chain of them rewritten as its linear step; what was done, for `restore`. `misses` gets
    (id of the chain's first Where, why) for chains of MIN_STEPS or more Wheres with a step that is no masked step."""
    if not any(node.op == "Where" for node in graph.nodes):
        return []
    steps, near = find_masked_steps(graph)
    _explain(graph, steps, near, misses)
    done: list[MaskedRewrite] = []
    if not steps:
        return done
    builder = GraphBuilder(graph, opset, prefix="reroll_scans/masked_steps", taken=taken)
    stacked = _stacked_constant_masks(graph, builder, steps)
    for step in steps:
        dtype = _element_type(step)
        if dtype is None:
            _missed(misses, step.where, 1, f"Where '{printable(step.where.name)}' is a masked step whose element type "
                                           "is unknown (the 1 and 0 its decay and drive keep where the mask is off "
                                           "need it)")
            continue
        position = stacked.get(id(step))
        cond = builder.gather(position[0], position[1], 0) if position is not None else None
        done.append(_rewrite(builder, step, dtype, cond))
    adds = {id(rewrite.add) for rewrite in done}
    graph.nodes = [node for node in graph.nodes if id(node) not in adds]
    return done


def _chains(steps: list[MaskedStep]) -> list[list[MaskedStep]]:
    """The masked steps in chains, first to last (each reads the one before's output as its state), unbranched."""
    by_output = {id(step.where.outputs[0]): step for step in steps}
    following: dict[int, list[MaskedStep]] = {}
    previous = {}
    for step in steps:
        before = by_output.get(id(see_through(step.state)[0]))
        if before is not None and before is not step:
            following.setdefault(id(before), []).append(step)
            previous[id(step)] = before
    chains = []
    for head in (step for step in steps if id(step) not in previous):
        chain = [head]
        while len(following.get(id(chain[-1]), [])) == 1 and len(chain) <= len(steps):
            chain.append(following[id(chain[-1])][0])
        chains.append(chain)
    return chains


def _stacked_constant_masks(graph: gs.Graph, builder: GraphBuilder, steps: list[MaskedStep]) -> dict:
    """id(step) -> (one constant, position) for the chains whose masks are computed from constants only
    (patterns/small_constants.py), a different one per step (a mask of lengths fixed at export, which TorchScript folds:
    one bool Constant per step, a Not of it for `~m`): their values stacked along a new
    first axis at each step's position (its decay's or drive's step index, else its place in the chain), so that each
    step reads Gather(stacked, position, 0), the same values, as a step of one tensor (positions below the chain's
    first hold the first step's mask: no step reads them); at most MAX_ELEMENTS values stacked."""
    ranks = None
    stacked = {}
    for chain in _chains(steps):
        if len(chain) < MIN_STEPS or all(see_through(step.cond)[0] is see_through(chain[0].cond)[0] for step in chain):
            continue   # one mask tensor read by every step: the per-step subgraph reads it as it is
        values = [small_value(step.cond) for step in chain]
        if (any(value is None for value in values)
                or any(value.shape != values[0].shape or value.dtype != values[0].dtype for value in values)):
            continue
        ranks = ranks or RankMap(graph)
        positions = _positions(chain, ranks)
        lowest = min(positions)
        if (sorted(positions) != list(range(lowest, lowest + len(chain)))
                or (lowest + len(chain)) * values[0].size > MAX_ELEMENTS):   # (a hostile position or mask size)
            continue
        table = np.stack([values[positions.index(max(p, lowest))] for p in range(lowest + len(chain))])
        constant = builder.const(table)
        stacked.update({id(step): (constant, position) for step, position in zip(chain, positions)})
    return stacked


def _positions(chain: list[MaskedStep], ranks: RankMap) -> list[int]:
    """Each step's position: the index of its decay's step slice, else its drive's, where every step has one; else
    its place in the chain."""
    for operand in ("decay", "drive"):
        slices = [match_step_slice(see_through(getattr(step, operand))[0], ranks) for step in chain]
        if all(item is not None for item in slices):
            return [item.index for item in slices]
    return list(range(len(chain)))


def _missed(misses: Optional[list], where: gs.Node, steps: int, reason: str) -> None:
    if misses is not None:
        misses.append((id(where), Rejection(printable(where.name or where.outputs[0].name), steps, reason)))


def _explain(graph: gs.Graph, steps: list[MaskedStep], near: list[MaskedMiss], misses: Optional[list]) -> None:
    """One reason per chain of Wheres (steps and near-misses, each reading the one before's output as its state, and
    the Where whose output the first of them reads: the loop's first step, from a state no Where made) of MIN_STEPS or
    more that holds a near-miss, naming its first near-miss."""
    if misses is None or not near:
        return
    states = {id(step.where): step.state for step in steps}
    states.update({id(miss.where): miss.state for miss in near})
    wheres = {id(step.where): step.where for step in steps} | {id(miss.where): miss.where for miss in near}
    by_output = {id(node.outputs[0]): node for node in wheres.values()}
    previous = {key: by_output.get(id(see_through(state)[0])) for key, state in states.items()}
    first_of: dict[int, gs.Node] = {}
    for key, where in wheres.items():
        head, seen = where, {key}
        while previous.get(id(head)) is not None and id(previous[id(head)]) not in seen:
            head = previous[id(head)]
            seen.add(id(head))
        first_of[key] = head
    sizes: dict[int, int] = {}
    for head in first_of.values():
        sizes[id(head)] = sizes.get(id(head), 0) + 1
    made_by = {id(node.outputs[0]): node for node in graph.nodes if node.op == "Where" and node.outputs}
    for key, head in list({id(head): head for head in first_of.values()}.items()):
        before = made_by.get(id(see_through(states[key])[0]))
        if before is not None and id(before) not in wheres:   # the loop's first step (its state no Where's output)
            sizes[id(before)] = sizes.pop(key) + 1
            first_of = {member: before if first is head else first for member, first in first_of.items()}
    named = set()
    for miss in near:
        head = first_of[id(miss.where)]
        if sizes[id(head)] < MIN_STEPS or id(head) in named:
            continue
        named.add(id(head))
        _missed(misses, head, sizes[id(head)], _reason(miss))


def _reason(miss: MaskedMiss) -> str:
    where = f"Where '{printable(miss.where.name)}'"
    if miss.readers:
        names = ", ".join(f"{node.op} '{printable(node.name)}'" for node in miss.readers)
        return (f"{where} is a masked step whose step ({miss.add.op} '{printable(miss.add.name)}') is also read by "
                f"{names}; a masked step's step is read by its Where alone")
    return (f"{where} is no masked step: it keeps '{printable(miss.kept.name)}' where its mask is off, not the state "
            f"'{printable(miss.state.name)}' its step ({miss.add.op} '{printable(miss.add.name)}') reads "
            "(a masked step keeps its state: torch.where(m, a * h + b, h))")


def restore(graph: gs.Graph, rewrites: list[MaskedRewrite]) -> None:
    """Each Where back as it was, its step's Add back just before it, and the nodes made for them gone (one pass over
    the graph's nodes for them all)."""
    if not rewrites:
        return
    before = {}
    for done in rewrites:
        where, add = done.where, done.add
        where.op = "Where"
        where.inputs.clear()
        where.inputs.extend(done.inputs)
        done.mul.inputs[done.decay_side] = done.decay
        add.inputs.extend(done.add_inputs)
        add.outputs.extend(done.add_outputs)
        before[id(where)] = add
    nodes = []
    for node in graph.nodes:
        if id(node) in before:
            nodes.append(before[id(node)])
        nodes.append(node)
    graph.nodes = nodes
    remove_made(graph, [node for done in rewrites for node in done.made])

"""Masked steps read as linear steps, for reroll-scans: `h = torch.where(m_t, a_t * h + b_t, h)` (a padding mask) is
the step h = where(m_t, a_t, 1) * h + where(m_t, b_t, 0), exactly (patterns/masked_step.py).

Each masked step's Where becomes that step in place: the Where node is the step's Add (its output, and so every
reader, kept), its Mul reads the decay Where(cond, a_t, 1) and the Add the drive Where(cond, b_t, 0) (the step in the
else branch, `torch.where(~m, h, a * h + b)`: Where(cond, 1, a_t) and Where(cond, 0, b_t)); the step's own Add, read by
the Where alone, is taken out. The decays and drives are then computed at every step, which passes/step_operands.py
replays over all positions like any loop that computes them per step; a decay Where(c, Exp(z), 1) keeps its log,
Where(c, z, 0) (passes/scan_forms/decays.py), so the log-space forms take it too. `restore` puts every Where back where
no re-rolled scan took its step.

A chain that mixes masked and plain steps (patterns/masked_step.PlainStep: the mask on some positions only) becomes one
chain of masked steps: every step's cond is Or(c_t, Gather(K, p_t, 0)) (And(c_t, ..) for the else branch), K a constant
over positions that is true at the plain steps' (false, for And) and false at the masked steps' (true), so that the masked
steps keep their mask exactly and the plain ones take the step; a plain step's c_t is the masked steps' cond subgraph
copied at its own position (patterns/step_template.match_operand_templates), the one mask every step reads, or (masks
fixed at export) a constant stacked with theirs. Exact: Or(c, false) is c, and where(true, a, 1) * h + where(true, b, 0)
is a * h + b.

A float mask, `m * (a*h + b) + (1 - m) * h` or `h + m * (a*h + b - h)` (patterns/masked_step.FloatMaskedStep), is the
linear step (m a - (m - 1)) * h + m * b: equal up to rounding, not bit for bit (docs/GENERALITY.md, session s34: its rel
L2 against float64 is the unrolled graph's own, ~1.6e-07, far inside verification's 1e-5). Its outer Add reads that
step; its inner nodes leave the graph until `restore`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.one_line import printable
from passes.piece_reads import remove_made
from patterns.graph_query import constant_value, element_type
from patterns.indexing import match_step_slice
from patterns.linear_recurrence import MIN_STEPS, Rejection
from patterns.indexing import known_axis_length
from patterns.masked_step import (FloatMaskedStep, MaskedMiss, MaskedStep, PlainStep, find_float_masked_steps,
                                  find_masked_steps, is_cast_bool, steps_before)
from patterns.no_ops import see_through
from patterns.ranks import RankMap
from patterns.small_constants import MAX_ELEMENTS, small_value
from patterns.step_template import StepTemplate, TemplateMismatch, match_operand_templates


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
    op: str = "Where"            # the node's op before: "Add" for a plain step (its drive read there, no Add of its own)
    shared: list = field(default_factory=list)   # nodes made for its chain's steps together (removed when unread)
    detached: list = field(default_factory=list)  # a float-masked step's inner nodes, (node, inputs, outputs)


def _element_type(step) -> Optional[np.dtype]:
    tensors = [step.output, step.add.outputs[0], step.decay, step.drive]
    if isinstance(step, MaskedStep):
        tensors.append(step.where.inputs[3 - step.step_branch])
    for tensor in tensors:
        found = element_type(tensor)
        if found is not None and not isinstance(found, int):
            return np.dtype(found)
    return None


def _rewrite(builder: GraphBuilder, step, dtype: np.dtype, cond: Optional[gs.Tensor] = None, made: tuple = (),
             then: bool = True) -> MaskedRewrite:
    """`step`'s Where as its linear step (a PlainStep: its Add reads the masked step's decay and drive); `cond`: the
    step's mask as the caller made it (`made`: its nodes), else the Where's own; `then`: a plain step's branch (its
    chain's masked steps')."""
    one, zero = builder.const(np.array(1, dtype)), builder.const(np.array(0, dtype))
    first = len(builder.nodes)
    cond = step.cond if cond is None else cond
    then = step.step_branch == 1 if isinstance(step, MaskedStep) else then
    decay = builder.where(cond, step.decay, one) if then else builder.where(cond, one, step.decay)
    drive = builder.where(cond, step.drive, zero) if then else builder.where(cond, zero, step.drive)
    add, mul = step.add, step.mul
    if isinstance(step, PlainStep):
        done = MaskedRewrite(add, list(add.inputs), None, [], [], mul, 1 - step.state_side, step.decay,
                             made=[*made, *builder.nodes[first:]], op="Add")
        mul.inputs[1 - step.state_side] = decay
        add.inputs[1 - step.mul_side] = drive
        return done
    where = step.where
    done = MaskedRewrite(where, list(where.inputs), add, list(add.inputs), list(add.outputs), mul,
                         1 - step.state_side, step.decay, made=[*made, *builder.nodes[first:]])
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
    """Every masked step in a chain (of masked, plain or float-masked steps) rewritten as its linear step; what was done,
    for `restore`. `misses` gets (id of the chain's first Where, why) for chains of MIN_STEPS or more Wheres with a
    step that is no masked step."""
    done: list[MaskedRewrite] = []
    builder = GraphBuilder(graph, opset, prefix="reroll_scans/masked_steps", taken=taken)
    if any(node.op == "Sub" for node in graph.nodes):
        for step in find_float_masked_steps(graph):
            dtype = _element_type(step)
            if dtype is not None:
                done.append(_rewrite_float(builder, step, dtype))
    if not any(node.op == "Where" for node in graph.nodes):
        return _detach(graph, done)
    steps, near = find_masked_steps(graph)
    _explain(graph, steps, near, misses)
    if not steps:
        return _detach(graph, done)
    chains = _chains(steps)
    ranks = RankMap(graph) if any(isinstance(step, PlainStep) for step in steps) else None
    stacked = _stacked_constant_masks(graph, builder, chains, ranks)
    mixed = _mixed_chain_conds(builder, chains, ranks, stacked)
    for chain in chains:
        then = all(step.step_branch == 1 for step in chain if isinstance(step, MaskedStep))
        for step in chain:
            dtype = _element_type(step)
            if isinstance(step, PlainStep) and (dtype is None or (id(step) not in stacked and id(step) not in mixed)):
                continue   # (a chain whose plain steps cannot read a mask: its masked runs alone, as they are)
            if dtype is None:
                _missed(misses, step.where, 1, f"Where '{printable(step.where.name)}' is a masked step whose element "
                                               "type is unknown (the 1 and 0 its decay and drive keep where the mask is "
                                               "off need it)")
                continue
            shared = ()
            if id(step) in stacked:
                first = len(builder.nodes)
                cond = builder.gather(stacked[id(step)][0], stacked[id(step)][1], 0)
                made = tuple(builder.nodes[first:])
            else:
                cond, made, shared = mixed.get(id(step), (None, (), ()))
            done.append(_rewrite(builder, step, dtype, cond, made, then))
            done[-1].shared = list(shared)
    return _detach(graph, done)


def _detach(graph: gs.Graph, done: list[MaskedRewrite]) -> list[MaskedRewrite]:
    """The steps' own Adds (and a float-masked step's inner nodes), disconnected by the rewrites, out of graph.nodes
    all at once; `done`."""
    gone = {id(rewrite.add) for rewrite in done if rewrite.add is not None}
    gone.update(id(node) for rewrite in done for node, _, _ in rewrite.detached)
    if gone:
        graph.nodes = [node for node in graph.nodes if id(node) not in gone]
    _in_order(graph, done)
    return done


def _in_order(graph: gs.Graph, done: list[MaskedRewrite]) -> None:
    """Each rewrite's new nodes (its chain's shared ones with its first step) and its Mul moved to just before its
    step's node: the graph stays in topological order wherever the mask's nodes come before the steps (a loop's
    mask is computed before it), so that no RankMap after it sorts the graph (onnx-graphsurgeon's toposort: 7.5 of
    20.6 s of reroll-scans on a 512-step masked chain, session s34). Elsewhere RankMap sorts, as before."""
    if not done:
        return
    position = {id(node): index for index, node in enumerate(graph.nodes)}
    groups: dict[int, list] = {}
    moved: set[int] = set()
    for rewrite in sorted(done, key=lambda rewrite: position.get(id(rewrite.where), 0)):
        group = [node for node in (*rewrite.shared, *rewrite.made, rewrite.mul) if id(node) not in moved]
        moved.update(id(node) for node in group)
        groups[id(rewrite.where)] = group
    nodes = []
    for node in graph.nodes:
        if id(node) in moved:
            continue
        nodes.extend(groups.get(id(node), ()))
        nodes.append(node)
    graph.nodes = nodes


def _rewrite_float(builder: GraphBuilder, step: FloatMaskedStep, dtype: np.dtype) -> MaskedRewrite:
    """A float-masked step as the linear step (m a - (m - 1)) * h + m b: its outer Add reads Mul(decay, h) and the
    drive; the step's Add and the inner nodes out of the graph until `restore`."""
    first = len(builder.nodes)
    one = builder.const(np.array(1, dtype))
    if is_cast_bool(step.mask):   # m is 0 or 1: the masked step where(m, a h + b, h), whose decay's log is known
        cond = builder.node("Cast", [step.mask], {"to": int(onnx.TensorProto.BOOL)})
        decay = builder.where(cond, step.decay, one)
        drive = builder.where(cond, step.drive, builder.const(np.array(0, dtype)))
    else:
        # m a - (m - 1), not m a + (1 - m): a decay made by an Add of a Mul would read as a step before this one
        # (passes/step_operands.py links Add(Mul(x, s), b) steps by s); exact at m = 1 (a - 0) and m = 0 (0 + 1)
        decay = builder.sub(builder.mul(step.mask, step.decay), builder.sub(step.mask, one))
        drive = builder.mul(step.mask, step.drive)
    node, add, mul = step.node, step.add, step.mul
    done = MaskedRewrite(node, list(node.inputs), add, list(add.inputs), list(add.outputs), mul, 1 - step.state_side,
                         step.decay, made=builder.nodes[first:], op="Add",
                         detached=[(inner, list(inner.inputs), list(inner.outputs)) for inner in step.inner])
    mul.inputs[1 - step.state_side] = decay
    product = mul.outputs[0]
    for detached in (add, *step.inner):
        detached.inputs.clear()
        detached.outputs.clear()
    node.inputs.clear()
    node.inputs.extend([product, drive] if step.mul_side == 0 else [drive, product])
    return done


def _chains(steps: list) -> list[list]:
    """The steps in chains, first to last (each reads the one before's output as its state), unbranched; a step after a
    branch starts a chain of its own."""
    before = steps_before(steps)
    following: dict[int, list] = {}
    for key, previous in before.items():
        following.setdefault(id(previous), []).append(key)
    by_id = {id(step): step for step in steps}
    chains, seen = [], set()
    for head in steps:
        if id(head) in seen or (id(head) in before and len(following[id(before[id(head)])]) == 1):
            continue
        chain = [head]
        seen.add(id(head))
        while len(following.get(id(chain[-1]), [])) == 1 and id(following[id(chain[-1])][0]) not in seen:
            chain.append(by_id[following[id(chain[-1])][0]])
            seen.add(id(chain[-1]))
        chains.append(chain)
    return chains


def _stacked_constant_masks(graph: gs.Graph, builder: GraphBuilder, chains: list[list],
                            ranks: Optional[RankMap]) -> dict:
    """id(step) -> (one constant, position) for the chains whose masks are computed from constants only
    (patterns/small_constants.py), a different one per step (a mask of lengths fixed at export, which TorchScript folds:
    one bool Constant per step, a Not of it for `~m`; a plain step's: all true, all false for the else branch): their
    values stacked along a new first axis at each step's position (its decay's or drive's step index, else its place in
    the chain), so that each step reads Gather(stacked, position, 0), the same values, as a step of one tensor
    (positions below the chain's first hold the first step's mask: no step reads them); at most MAX_ELEMENTS values
    stacked."""
    stacked = {}
    for chain in chains:
        masked = [step for step in chain if isinstance(step, MaskedStep)]
        plain = len(masked) < len(chain)
        if len(chain) < MIN_STEPS or (not plain and all(see_through(step.cond)[0] is see_through(masked[0].cond)[0]
                                                        for step in masked)):
            continue   # one mask tensor read by every step: the per-step subgraph reads it as it is
        if plain and len({step.step_branch for step in masked}) != 1:
            continue
        values = [small_value(step.cond) for step in masked]
        if (any(value is None for value in values)
                or any(value.shape != values[0].shape or value.dtype != values[0].dtype for value in values)):
            continue
        taken_value = np.full(values[0].shape, masked[0].step_branch == 1, values[0].dtype)
        values = iter(values)
        values = [next(values) if isinstance(step, MaskedStep) else taken_value for step in chain]
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


def _mixed_chain_conds(builder: GraphBuilder, chains: list[list], ranks: Optional[RankMap], stacked: dict) -> dict:
    """id(step) -> (cond, nodes made for it alone, nodes its chain shares) for every step of the chains that mix
    masked and plain steps (and whose masks were not stacked as constants): Or(c_t, Gather(K, p_t, 0)) (then branch;
    And and K negated for the else branch), K true at the plain steps' positions, of the cond's rank plus one; c_t the
    one cond every masked step reads, else the masked steps' cond subgraph copied at each step's position (the masked
    steps' too, so that all read one subgraph). A mask that is not known to hold a plain step's position past the
    masked steps' last one (left padding: masked first, plain after) is read as Concat(mask, .., mask) along its step
    axis, k copies that hold it (positions past the mask's own are Or'd with true: any value). Left out: chains whose
    masked steps take both branches, whose steps are not all steps of one tensor at contiguous positions, or whose
    conds are computed by no one subgraph or at other positions than their decays."""
    conds: dict = {}
    for chain in chains:
        masked = [step for step in chain if isinstance(step, MaskedStep)]
        if len(masked) == len(chain) or id(chain[0]) in stacked or len({step.step_branch for step in masked}) != 1:
            continue
        positions = _slice_positions(chain, ranks)
        rank = ranks.rank(masked[0].cond)
        if positions is None or rank is None:
            continue
        lowest = min(positions)
        if sorted(positions) != list(range(lowest, lowest + len(chain))):
            continue
        masked_positions = [p for step, p in zip(chain, positions) if isinstance(step, MaskedStep)]
        shared_cond = see_through(masked[0].cond)[0]
        template, shared = None, []
        if not all(see_through(step.cond)[0] is shared_cond for step in masked):
            try:
                template, cond_positions = match_operand_templates([step.cond for step in masked], ranks,
                                                                   contiguous=False)
            except TemplateMismatch:
                continue
            if cond_positions != masked_positions:
                continue
            first = len(builder.nodes)
            sources = _extended_sources(builder, template, max(positions), max(masked_positions))
            if sources is None:
                continue
            shared = builder.nodes[first:]
        then = masked[0].step_branch == 1
        table = np.zeros((max(positions) + 1,) + (1,) * rank, bool)
        for step, position in zip(chain, positions):
            table[position] = isinstance(step, PlainStep) == then
        constant = builder.const(table)
        for step, position in zip(chain, positions):
            first = len(builder.nodes)
            cond = (shared_cond if template is None
                    else _copy_at(builder, template, position - masked_positions[0], sources))
            cond = builder.node("Or" if then else "And", [cond, builder.gather(constant, position, 0)])
            conds[id(step)] = (cond, tuple(builder.nodes[first:]), tuple(shared))
    return conds


def _slice_positions(chain: list, ranks: RankMap) -> Optional[list[int]]:
    """Each step's position, the index of its decay's step slice (else its drive's) where every step has one."""
    for operand in ("decay", "drive"):
        slices = [match_step_slice(see_through(getattr(step, operand))[0], ranks) for step in chain]
        if all(item is not None for item in slices):
            return [item.index for item in slices]
    return None


def _extended_sources(builder: GraphBuilder, template: StepTemplate, position: int, read: int) -> Optional[dict]:
    """id(tensor) -> the tensor to read in its place, for each tensor the template steps through (a Gather's data
    along its axis, a Slice's along its one axis) not known to hold `position` (its declared length): Concat of
    copies of it along that axis, enough that they do, as it holds `read` (the masked steps read it there); None where
    an axis is not a constant."""
    sources = {}
    for use in template.stepped:
        node = template.nodes[use.node_index]
        if node.op == "Gather":
            axis = node.attrs.get("axis", 0)
        else:
            axes = constant_value(node.inputs[3]) if len(node.inputs) > 3 else np.array([0])
            if axes is None or np.asarray(axes).size != 1:
                return None
            axis = int(np.asarray(axes).reshape(-1)[0])
        source = node.inputs[0]
        rank = template.ranks.get(id(source))
        length = known_axis_length(source, axis if axis >= 0 or rank is None else axis + rank)
        if position <= read or (length is not None and position < length) or id(source) in sources:
            continue
        copies = -(-(position + 1) // (read + 1))   # each copy holds read + 1 positions at least
        sources[id(source)] = builder.concat([source] * copies, axis)
    return sources


def _copy_at(builder: GraphBuilder, template: StepTemplate, shift: int, sources: dict) -> gs.Tensor:
    """The template's nodes copied, each stepped index (Gather's index, Slice's start and end) `shift` past step 0's,
    reading `sources` (id(tensor) -> tensor) in place of what they name: the template's output at that other
    position."""
    copies: dict[int, gs.Tensor] = dict(sources)
    for index, node in enumerate(template.nodes):
        stepped = template.stepped_inputs(index)
        inputs = []
        for number, tensor in enumerate(node.inputs):
            if number in stepped:
                value = np.asarray(stepped[number].values[0])
                inputs.append(builder.const((value + shift).astype(value.dtype)))
            else:
                inputs.append(copies.get(id(tensor), tensor))
        outputs = builder.node_outputs(node.op, inputs, dict(node.attrs), len(node.outputs), node.domain or None)
        copies.update({id(old): new for old, new in zip(node.outputs, outputs)})
    return copies[id(template.output)]


def _positions(chain: list, ranks: RankMap) -> list[int]:
    """Each step's position: the index of its decay's step slice, else its drive's, where every step has one; else
    its place in the chain."""
    positions = _slice_positions(chain, ranks)
    return positions if positions is not None else list(range(len(chain)))


def _missed(misses: Optional[list], where: gs.Node, steps: int, reason: str) -> None:
    if misses is not None:
        misses.append((id(where), Rejection(printable(where.name or where.outputs[0].name), steps, reason)))


def _explain(graph: gs.Graph, steps: list, near: list[MaskedMiss], misses: Optional[list]) -> None:
    """One reason per chain of Wheres (steps and near-misses, each reading the one before's output as its state, and
    the Where whose output the first of them reads: the loop's first step, from a state no Where made) of MIN_STEPS or
    more that holds a near-miss, naming its first near-miss."""
    if misses is None or not near:
        return
    items = [*steps, *near]
    wheres = {id(item): item.node if isinstance(item, (MaskedStep, PlainStep)) else item.where for item in items}
    states = {id(item): item.state for item in items}
    previous = {key: id(item) for key, item in steps_before(items).items()}
    first_of: dict[int, int] = {}
    for key in wheres:
        head, seen = key, {key}
        while previous.get(head) is not None and previous[head] not in seen:
            head = previous[head]
            seen.add(head)
        first_of[key] = head
    sizes: dict[int, int] = {}
    for head in first_of.values():
        sizes[head] = sizes.get(head, 0) + 1
    head_nodes = dict(wheres)
    inside = {id(node) for node in wheres.values()}
    made_by = {id(node.outputs[0]): node for node in graph.nodes if node.op == "Where" and node.outputs}
    for head in set(first_of.values()):
        before = made_by.get(id(see_through(states[head])[0]))
        if before is not None and id(before) not in inside:   # the loop's first step (its state no Where's output)
            sizes[id(before)] = sizes.pop(head) + 1
            head_nodes[id(before)] = before
            first_of = {member: id(before) if first == head else first for member, first in first_of.items()}
    named = set()
    for miss in near:
        head = first_of[id(miss)]
        if sizes[head] < MIN_STEPS or head in named:
            continue
        named.add(head)
        _missed(misses, head_nodes[head], sizes[head], _reason(miss))


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
    """Each Where back as it was, its step's Add back just before it (a plain step's Add reads its own decay and drive
    again), and the nodes made for them gone (one pass over the graph's nodes for them all)."""
    if not rewrites:
        return
    before = {}
    for done in rewrites:
        where, add = done.where, done.add
        where.op = done.op
        where.inputs.clear()
        where.inputs.extend(done.inputs)
        done.mul.inputs[done.decay_side] = done.decay
        if add is None:
            continue
        add.inputs.extend(done.add_inputs)
        add.outputs.extend(done.add_outputs)
        for inner, inputs, outputs in done.detached:
            inner.inputs.extend(inputs)
            inner.outputs.extend(outputs)
        before[id(where)] = [add, *(inner for inner, _, _ in done.detached)]
    nodes = []
    for node in graph.nodes:
        nodes.extend(before.get(id(node), ()))
        nodes.append(node)
    graph.nodes = nodes
    remove_made(graph, [node for done in rewrites for node in done.made])
    shared = {id(node): node for done in rewrites for node in done.shared}
    remove_made(graph, [node for node in shared.values() if not any(out.outputs for out in node.outputs)])

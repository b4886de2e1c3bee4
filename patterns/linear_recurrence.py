"""The unrolled linear recurrence: the pattern a naive selective-scan export leaves behind.

    x_i = a_i * x_{i-1} + b_i        for i = 0 .. L-1   (x_{-1} = initial state, often zeros)
    y_i = f(x_i, c_i)                a per-step readout (see patterns/readout.py)
    y   = stack(y_0 .. y_{L-1})

where a_i, b_i, c_i are the i-th slices of three tensors A, B, C along one axis each. The steps
may also run backward, i = L-1 .. 0 (`for t in reversed(range(L))`: a backward scan, as a
bidirectional block's second direction), and the stack may hold the y_i in either order.
Every step in the graph is Add(Mul(a_i, x_{i-1}), b_i), in either operand order, where x_{i-1}
may reach the Mul through no-op Casts, Identities and shape round trips (patterns/no_ops.py), and the
product may be multiplied by a constant 1 before the Add (`torch.addcmul(b_i, x, a_i)`'s value=1).
The first step may multiply a zeros constant or be missing (x_0 = b_0: no initial state).
The states may also be stacked as they are beside the readout (`hs.append(h)` as well as `ys.append(y)`: each x_i
read by the next step, its readout and an Unsqueeze into a second Concat): a StatesStack the re-roller fills from the
states it computes anyway.
Readouts that none of the named forms of patterns/readout.py fit are compared step with step
(patterns/step_template.py) and re-rolled as one per-step subgraph.

`find_recurrences` returns the chains that match and, for candidates that do not, a reason
a person can act on ("index jumps from 4 to 6 at step 5").
"""
from __future__ import annotations

from collections import Counter
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import onnx
import onnx_graphsurgeon as gs

from patterns.graph_query import describe, is_all_zeros, producer, producer_op
from patterns.indexing import StepSlice, known_shape, match_step_slice
from patterns.no_ops import see_through, times_one
from patterns.ranks import RankMap
from patterns.readout import ReadoutForm, ReadoutMismatch, ReadoutStep, match_readout, stacked_step_outputs
from patterns.step_template import StepTemplate, TemplateMismatch, match_step_templates

MIN_STEPS = 2
# The operands' names, as a near-miss names them
DECAY, DRIVE, COEFF = "decay a_i", "input b_i", "readout coefficient c_i"


@dataclass
class Step:
    add: Optional[gs.Node]          # None for a missing first step (x_0 = b_0)
    mul: Optional[gs.Node]
    decay: Optional[StepSlice]      # a_i
    drive: StepSlice                # b_i
    previous: Optional[gs.Tensor]   # x_{i-1} as the Mul reads it
    previous_origin: Optional[gs.Tensor] = None   # x_{i-1} before no-op Casts and round trips
    link: tuple = ()                # those no-op nodes
    times_one: Optional[gs.Node] = None   # Mul(a_i * x_{i-1}, 1) between the Mul and the Add (addcmul), if any
    # The last step's Identities after its Add, each the only reader of the one before (a loop written out whose last
    # state leaves through the loop's final-value Identity): x_{L-1} is the last one's output
    tail: tuple = ()

    @property
    def state(self) -> gs.Tensor:
        if self.tail:
            return self.tail[-1].outputs[0]
        return self.add.outputs[0] if self.add is not None else self.previous_origin

    @property
    def nodes(self) -> list:
        own = [self.add, self.mul, self.times_one, *self.link, *self.tail, *(self.decay.nodes if self.decay else ())]
        return [n for n in own if n is not None] + list(self.drive.nodes)


@dataclass
class StatesStack:
    """The states x_i themselves stacked beside another readout: each through its own Unsqueeze (after Identities)
    into one Concat (`hs.append(h)` and `ys.append(y)` in one loop; an ONNX Loop's state scan output)."""

    output: gs.Tensor                # the Concat's output
    stack_axis: int
    reversed: bool                   # it holds the state at position L-1 first
    nodes: list = field(default_factory=list)   # the Identities, Unsqueezes and the Concat
    part: tuple = ()                 # the Concat's inputs that are this chain's, where it stacks more (stack_part)


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
    template: Optional[StepTemplate] = None     # readout kind "template": the per-step subgraph
    named_mismatch: str = ""                    # why no named readout form fit (when template is set)
    backward: bool = False           # the chain takes positions L-1, L-2, .., 0 (final_state is x at position 0)
    stack_reversed: bool = False     # the stacked output holds y_{L-1} first (positions in descending order)
    # The first step where it multiplied zeros that were left out (initial_state None): x_0 = a_0 * zeros + b_0 is
    # b_0 only where the zeros add no size to b_0's (checked by the re-roller, which has shapes; where it cannot
    # prove it, it adds the zeros to the drives, `initial_rank` their rank), its drive b_0 and the zeros.
    zeros_dropped: Optional[tuple] = None   # (the first step's Add, b_0 as the Add reads it, the zeros)
    states_stack: Optional[StatesStack] = None   # the states also stacked as they are, beside `readout`
    # The step outputs (Unsqueeze outputs, in the Concat's order) where `output`'s Concat stacks more than this chain's
    # steps (a chain restarted inside one loop: each chain a run of one stack); () where it stacks exactly them.
    stack_part: tuple = ()
    # The lowest position the chain takes: its steps take positions first_position .. first_position + length - 1 of
    # every operand's axis (in descending order when backward), a part of an axis that may hold more; the re-roller
    # slices the operands to them (`for t in range(1, L)`, an inner loop over L - k of L positions).
    first_position: int = 0
    # An operand read at other positions within each step (`h = a[t + 1] * h + b[t]`, `a[t] * h + b[t - 1]` over a
    # loop from 1): its own lowest position, by DECAY / DRIVE / COEFF; one not named here takes first_position's.
    operand_first: dict = field(default_factory=dict)
    # readout kind "gathered": per step, (reader, input index) of every read of its state beyond the chain, each to
    # read Gather(states, step) once re-rolled (`output` is then None: nothing is stacked)
    gathered: tuple = ()

    def first_of(self, operand: str) -> int:
        """The lowest position the chain's steps take of `operand` (DECAY, DRIVE or COEFF)."""
        return self.operand_first.get(operand, self.first_position)

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


def _step_slice(tensor: gs.Tensor, ranks: RankMap) -> Optional[StepSlice]:
    """One step of a tensor, possibly behind no-op Casts (their nodes join the slice's)."""
    origin, wrappers = see_through(tensor)
    found = match_step_slice(origin, ranks)
    if found is None or not wrappers:
        return found
    return StepSlice(found.source, found.axis, found.index, (*wrappers, *found.nodes))


def _match_step(add: gs.Node, ranks: RankMap) -> Optional[Step]:
    """Add(Mul(a_i, x), b_i) with a_i and b_i single steps of some tensor."""
    if add.op != "Add" or len(add.inputs) != 2:
        return None
    for mul_side in (0, 1):
        mul = producer(add.inputs[mul_side])
        product = times_one(mul, ranks)
        one = None
        if product is not None:   # Mul(a_i * x, 1): the product under it
            one, mul = mul, producer(product)
        if mul is None or mul.op != "Mul" or len(mul.inputs) != 2:
            continue
        drive = _step_slice(add.inputs[1 - mul_side], ranks)
        if drive is None:
            continue
        for decay_side in (0, 1):
            decay = _step_slice(mul.inputs[decay_side], ranks)
            if decay is not None:
                previous = mul.inputs[1 - decay_side]
                origin, link = see_through(previous)
                return Step(add, mul, decay, drive, previous, origin, tuple(link), one)
    return None


class _ChainMismatch(Exception):
    pass


def _positions(length: int, backward: bool, first: int = 0) -> list[int]:
    """The position along the scan axis that each step of a chain of `length` steps takes, the lowest `first`."""
    return list(range(first + length - 1, first - 1, -1)) if backward else list(range(first, first + length))


def _frame(chain: list[Step]) -> tuple[bool, int]:
    """The direction and lowest position of the consecutive positions a chain's steps take (any: a loop from the second
    position, over L - k positions; a backward scan, `for t in reversed(range(L))`, takes its highest first): those
    that most of its decay and drive slices agree on, so that a near-miss is named at the slice that departs from them
    (one wrong index among 2L - 1 slices cannot move the frame for L >= 3); ties to position 0, then forward."""
    votes: Counter = Counter()
    for step, step_ in enumerate(chain):
        for item in (step_.decay, step_.drive):
            if item is not None:
                votes[False, item.index - step] += 1
                votes[True, item.index - (len(chain) - 1 - step)] += 1
    return max(votes, key=lambda frame: (votes[frame], frame[1] == 0, not frame[0]))


def _check_indices(slices: list[StepSlice], what: str, positions: list[int], start: int = 0) -> None:
    """slices[k] is step start + k; it must take position positions[start + k] of step 0's tensor and axis."""
    first = slices[0]
    for step, item in enumerate(slices, start):
        if item.key != first.key:
            raise _ChainMismatch(
                f"{what} at step {step} comes from '{item.source.name}' axis {item.axis}, "
                f"not '{first.source.name}' axis {first.axis} like step 0")
        if item.index != positions[step]:
            previous = slices[step - 1 - start].index if step > start else None
            if previous is not None and item.index == previous:
                raise _ChainMismatch(f"{what} index {item.index} is repeated at step {step}")
            raise _ChainMismatch(f"{what} index jumps to {item.index} at step {step} (expected {positions[step]})")


def _own_first(slices: list[StepSlice], what: str, length: int, backward: bool, first: int, start: int = 0) -> int:
    """The lowest position the steps take of one operand: the chain's `first` where its slices take the chain's
    positions; else the lowest position that most of its own slices agree on (in the chain's direction), where every
    one of them takes it (an operand read at an offset within each step, `a[t + 1]` beside `b[t]`); else
    _ChainMismatch naming the slice that departs from the positions most of them agree on (the chain's, or its own)."""
    try:
        _check_indices(slices, what, _positions(length, backward, first), start)
        return first
    except _ChainMismatch:
        votes = Counter(item.index - ((length - 1 - step) if backward else step)
                        for step, item in enumerate(slices, start))
        own = max(votes, key=lambda lowest: (votes[lowest], lowest == first))
        if own == first or own < 0:
            raise
    _check_indices(slices, what, _positions(length, backward, own), start)
    return own


def _stack_order(concat: gs.Node, pieces: list[gs.Tensor], backward: bool) -> bool:
    """Whether `concat` stacks the step outputs `pieces` (in step order) in descending position order
    (stack_reversed); _ChainMismatch unless they are one run of its inputs, in step order or the reverse. The run may
    be part of the Concat (`stack_part`): a chain that restarts inside one loop (`h = b[t]` at a segment boundary)
    leaves two chains whose step outputs share one stack, each its own run of it."""
    inputs = list(concat.inputs)
    count = len(pieces)
    for start in range(len(inputs) - count + 1):
        run = inputs[start:start + count]
        if all(a is b for a, b in zip(run, pieces)):
            return backward
        if all(a is b for a, b in zip(run, pieces[::-1])):
            return not backward
    if len(inputs) == count:
        raise _ChainMismatch(f"{describe(concat)} stacks {len(concat.inputs)} tensors; "
                             f"expected exactly the {count} step outputs in order")
    raise _ChainMismatch(f"{describe(concat)} stacks {len(concat.inputs)} tensors; expected the {count} step "
                         "outputs among them in order, one after another")


def stack_part(concat: gs.Node, pieces: list[gs.Tensor]) -> tuple:
    """The step outputs `pieces` when they are only part of `concat`'s inputs (the re-roller gives their run its own
    Concat), else () (the Concat is the chain's stack)."""
    return tuple(pieces) if len(concat.inputs) != len(pieces) else ()


def _check_not_empty(item: StepSlice, what: str) -> None:
    """The tensor the chain's steps are taken from must not be empty (nothing to scan; the forms' Reshapes do not run
    on a 0). Its steps may be part of its axis: the re-roller slices them out (Recurrence.first_position)."""
    if 0 in (known_shape(item.source) or ()):
        raise _ChainMismatch(f"{what}'s source '{item.source.name}' is empty (its shape holds a 0): nothing to scan")


def _readers(chain: list[Step], position: int, excluded: frozenset = frozenset()) -> list[gs.Node]:
    """Consumers of x_i (or of its no-op aliases on the way to step i + 1) other than the chain itself and the
    nodes in `excluded` (by id: a states stack's first node per step)."""
    following = chain[position + 1] if position + 1 < len(chain) else None
    link = list(following.link) if following else []
    aliases = [chain[position].state] + [n.outputs[0] for n in link]
    own = {id(n) for n in link} | ({id(following.mul)} if following else set()) | set(excluded)
    readers: list[gs.Node] = []
    for alias in aliases:
        for node in alias.outputs:
            if id(node) not in own and all(node is not r for r in readers):
                readers.append(node)
    return readers


def _alias_read(chain: list[Step], position: int, readers: list[gs.Node]) -> gs.Tensor:
    """x_i as `readers` read it: the one no-op alias of it on the way to step i + 1 (a written-out loop's final-value
    Identity) that all of them read, else x_i itself."""
    following = chain[position + 1] if position + 1 < len(chain) else None
    aliases = [n.outputs[0] for n in following.link] if following else []
    read = {id(t): t for reader in readers for t in reader.inputs if any(t is alias for alias in aliases)}
    plain = any(t is chain[position].state for reader in readers for t in reader.inputs)
    return next(iter(read.values())) if len(read) == 1 and not plain else chain[position].state


def _named_readouts(chain: list[Step], graph_outputs: set[int], ranks: RankMap,
                    frame: tuple[bool, int], excluded: frozenset = frozenset()) -> tuple[list[ReadoutStep], int]:
    """Each step's readout in one of the named forms of patterns/readout.py and the lowest position its coefficients
    take (`frame`'s, or their own: `c[t + 1]`), or _ChainMismatch."""
    readouts: list[ReadoutStep] = []
    for position, step in enumerate(chain):
        state = step.state
        if position + 1 < len(chain) and id(state) in graph_outputs:
            raise _ChainMismatch(f"intermediate state '{state.name}' at step {position} is a graph output")
        readers = _readers(chain, position, excluded)
        if position + 1 < len(chain):
            if len(readers) != 1:
                names = ", ".join(describe(n) for n in readers) or "nothing"
                raise _ChainMismatch(
                    f"intermediate state '{state.name}' at step {position} is read by {names}; expected one readout")
            reader = readers[0]
            read = next(t for t in reader.inputs if t is state or any(t is n.outputs[0] for n in chain[position + 1].link))
            try:
                readouts.append(match_readout(read, reader, ranks))
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
    for position, readout in enumerate(readouts):
        if readout.form != form:
            raise _ChainMismatch(f"readout at step {position} differs from step 0 ({readout.form} vs {form})")
    backward, first = frame
    if form.kind != "states":
        first = _own_first([r.coeff for r in readouts], COEFF, len(chain), backward, first)
    return readouts, first


def _template_readout(chain: list[Step], graph_outputs: set[int], ranks: RankMap, positions: list[int],
                      excluded: frozenset = frozenset(), allow_offset: bool = False):
    """The readout as one per-step subgraph compared across steps: (template, stack axis, concat, pieces in
    step order, nodes)."""
    outputs: list[gs.Tensor] = []
    pieces: list[gs.Tensor] = []
    nodes: list[gs.Node] = []
    entries: list[gs.Tensor] = []   # the state as each step's readout reads it (an alias on the way to the next step)
    concat = None
    stack_axis = None
    for position, step in enumerate(chain):
        readers = _readers(chain, position, excluded)
        entries.append(_alias_read(chain, position, readers))
        last = position + 1 == len(chain)
        try:
            if last:   # readers that do not lead to the stack use the final state: keep them
                readers = [r for r in readers if stacked_step_outputs([r], len(chain), graph_outputs, ranks)]
            stacked = stacked_step_outputs(readers, len(chain), graph_outputs, ranks) if readers else None
        except ReadoutMismatch as error:
            raise _ChainMismatch(f"step {position}: {error}") from None
        if stacked is None:
            names = ", ".join(describe(n) for n in readers) or "nothing"
            raise _ChainMismatch(f"the readout of state '{step.state.name}' at step {position} (read by {names}) "
                                 "does not lead only to one stacking Concat")
        if concat is not None and (stacked.concat is not concat or stacked.stack_axis != stack_axis):
            raise _ChainMismatch(f"step {position} is stacked by {describe(stacked.concat)}, not like step 0")
        concat, stack_axis = stacked.concat, stacked.stack_axis
        outputs.append(stacked.output)
        pieces.append(stacked.unsqueeze.outputs[0])
        nodes += [*stacked.forward_nodes]
    states = [s.state for s in chain]
    try:
        template = match_step_templates(outputs, states, positions, ranks, allow_offset)
    except TemplateMismatch as error:
        if all(a is b for a, b in zip(entries, states)):
            raise _ChainMismatch(str(error)) from None
        try:   # the readouts read an alias of some states (each step's no-op node on the way to the next step)
            template = match_step_templates(outputs, entries, positions, ranks, allow_offset)
        except TemplateMismatch:
            raise _ChainMismatch(str(error)) from None
    return template, stack_axis, concat, pieces, nodes + template.all_nodes


def _states_stack(chain: list[Step], ranks: RankMap, backward: bool) -> Optional[tuple[StatesStack, frozenset]]:
    """The states stacked as they are beside another readout, and the ids of each step's first node on the way to
    it (the readout's readers then leave them out); None unless every step's state reaches one Concat so, in step
    order or its reverse, and every state before the last has another reader too (a stack that is the only readout is
    the readout kind "states"; a reader at one step only is no readout: its rejection says so as before)."""
    found: list[tuple[list[gs.Node], ReadoutStep]] = []
    for position, step in enumerate(chain):
        match = None
        readers = _readers(chain, position)
        if position + 1 < len(chain) and len(readers) < 2:
            return None
        for reader in readers:
            passed, node, read = [], reader, step.state
            while node.op == "Identity" and len(node.outputs[0].outputs) == 1:
                passed.append(node)
                read, node = node.outputs[0], node.outputs[0].outputs[0]
            if node.op != "Unsqueeze" or node.inputs[0] is not read:
                continue
            try:
                readout = match_readout(read, node, ranks)
            except ReadoutMismatch:
                continue
            match = (passed, readout)
            break
        if match is None:
            return None
        found.append(match)
    concat, axis = found[0][1].concat, found[0][1].form.stack_axis
    if any(readout.concat is not concat or readout.form.stack_axis != axis for _, readout in found):
        return None
    pieces = [readout.stacked_piece for _, readout in found]
    try:
        reversed_ = _stack_order(concat, pieces, backward)
    except _ChainMismatch:
        return None
    nodes = [node for passed, readout in found for node in (*passed, *readout.nodes)] + [concat]
    first = frozenset(id(passed[0] if passed else readout.nodes[0]) for passed, readout in found)
    return StatesStack(concat.outputs[0], axis, reversed_, nodes, stack_part(concat, pieces)), first


def _gathered_reads(chain: list[Step], graph_outputs: set[int]) -> tuple:
    """Per step, (reader, input index) of each read of its state (or of its no-op alias on the way to the next step)
    beyond the chain; _ChainMismatch where a state is a graph output (no reader to give a Gather to)."""
    reads = []
    for position, step in enumerate(chain):
        if id(step.state) in graph_outputs:
            raise _ChainMismatch(f"state '{step.state.name}' at step {position} is a graph output")
        following = chain[position + 1] if position + 1 < len(chain) else None
        aliases = [step.state] + ([n.outputs[0] for n in following.link] if following else [])
        reads.append(tuple((reader, index) for reader in _readers(chain, position)
                           for index, tensor in enumerate(reader.inputs) if any(tensor is a for a in aliases)))
    return tuple(reads)


def _build_recurrence(chain: list[Step], graph_outputs: set[int], ranks: RankMap,
                      gather: bool = False) -> Recurrence:
    """The chain's recurrence; `gather`: its states read where they are read (readout kind "gathered": each reader
    of x_t reads step t of the states the form computes), for a chain whose readout fits no form (RWKV's numerator
    divided by another chain's denominator)."""
    start = 0 if chain[0].decay is not None else 1     # a missing first step has no decay
    backward, first_position = _frame(chain)
    firsts = {DECAY: _own_first([s.decay for s in chain[start:]], DECAY, len(chain), backward, first_position, start),
              DRIVE: _own_first([s.drive for s in chain], DRIVE, len(chain), backward, first_position)}
    _check_not_empty(chain[start].decay, DECAY)
    _check_not_empty(chain[0].drive, DRIVE)

    template, named_mismatch = None, ""
    states_stack, excluded = ((None, frozenset()) if gather
                              else _states_stack(chain, ranks, backward) or (None, frozenset()))
    gathered: tuple = ()
    if gather:
        if backward:
            raise _ChainMismatch("a backward chain's states are not gathered")
        gathered = _gathered_reads(chain, graph_outputs)
        form, coeff, concat, pieces, readout_nodes = ReadoutForm("gathered"), None, None, [], []
        stack_reversed, last_readout_nodes = False, set()
    else:
        try:
            readouts, firsts[COEFF] = _named_readouts(chain, graph_outputs, ranks, (backward, first_position), excluded)
            form, concat = readouts[0].form, readouts[0].concat
            pieces = [r.stacked_piece for r in readouts]
            stack_reversed = _stack_order(concat, pieces, backward)
            readout_nodes = [n for r in readouts for n in r.nodes]
            last_readout_nodes = set(id(n) for n in readouts[-1].nodes)
            coeff = readouts[0].coeff
            if coeff is not None:
                _check_not_empty(coeff, "readout coefficient c_i")
        except _ChainMismatch as named_error:
            # the per-step subgraph's stepped reads take the chain's positions, or those of its decays or drives; else
            # each its own, at one offset from the chain's at every step (`sum(h * c[t + 1]) + x[t]`)
            tried, template_error = set(), None
            for first, allow_offset in ((first_position, False), (firsts[DRIVE], False), (firsts[DECAY], False),
                                        (first_position, True)):
                if (first, allow_offset) in tried:
                    continue
                tried.add((first, allow_offset))
                try:
                    template, stack_axis, concat, pieces, readout_nodes = _template_readout(
                        chain, graph_outputs, ranks, _positions(len(chain), backward, first), excluded, allow_offset)
                    stack_reversed = _stack_order(concat, pieces, backward)
                except _ChainMismatch as error:
                    template_error = template_error or error
                    continue
                first_position, template_error = first, None
                break
            if template_error is not None:
                raise _ChainMismatch(f"{named_error} (as a per-step subgraph: {template_error})") from None
            named_mismatch = str(named_error)
            form, coeff = ReadoutForm("template", stack_axis=stack_axis), None
            last_readout_nodes = set(id(n) for n in readout_nodes)
    for piece in pieces:
        if id(piece) in graph_outputs:
            raise _ChainMismatch(f"per-step output '{piece.name}' is a graph output")

    first = chain[0]
    zeros_dropped = None
    if first.add is None or is_all_zeros(first.previous):
        initial = None
        if first.add is not None:
            product = (first.times_one or first.mul).outputs[0]
            zeros_dropped = (first.add, next((t for t in first.add.inputs if t is not product), None),
                             first.previous)
    else:
        initial = first.previous
    last_state = chain[-1].state
    if states_stack is not None:   # the last state's way into the states stack is no escape
        last_readout_nodes |= set(id(n) for n in states_stack.nodes)
    escapes = not gathered and (id(last_state) in graph_outputs or any(
        id(n) not in last_readout_nodes for n in last_state.outputs))

    nodes: list[gs.Node] = []
    for step in chain:
        nodes += step.nodes
    nodes += readout_nodes
    if concat is not None:
        nodes.append(concat)
    if states_stack is not None:
        nodes += states_stack.nodes
    nodes = list({id(n): n for n in nodes}.values())   # a node shared by chain and readout, once
    reference = chain[start]
    decay_rank, drive_rank = ranks.rank(reference.decay.source), ranks.rank(first.drive.source)
    if decay_rank is None or drive_rank is None:
        raise _ChainMismatch(f"rank of '{reference.decay.source.name}' or '{first.drive.source.name}' is unknown")
    if drive_rank != decay_rank:
        raise _ChainMismatch(f"decay (rank {decay_rank}) and input (rank {drive_rank}) ranks differ")
    return Recurrence(
        rank=decay_rank, drive_rank=drive_rank,
        initial_rank=ranks.rank(initial if initial is not None else first.previous) if first.add is not None else None,
        length=len(chain), decay=reference.decay.source, decay_axis=reference.decay.axis,
        drive=first.drive.source, drive_axis=first.drive.axis, initial_state=initial,
        readout=form, coeff=coeff.source if coeff else None, coeff_axis=coeff.axis if coeff else -1,
        output=concat.outputs[0] if concat is not None else None, final_state=last_state, final_state_escapes=escapes, nodes=nodes,
        template=template, named_mismatch=named_mismatch, backward=backward, stack_reversed=stack_reversed,
        zeros_dropped=zeros_dropped, states_stack=states_stack, first_position=first_position,
        stack_part=stack_part(concat, pieces) if concat is not None else (), gathered=gathered,
        operand_first={what: first for what, first in firsts.items() if first != first_position})


def _with_tail(last: Step, graph_outputs: set[int]) -> Step:
    """The chain's last step with the Identities its state passes through alone (`Step.tail`): where the loop that
    unroll-loops wrote out nested in a branch, the last state reaches its readout and the carried-out value through
    the inner loop's final Identity, read by both."""
    tail, state = [], last.state
    while (id(state) not in graph_outputs and len(state.outputs) == 1 and state.outputs[0].op == "Identity"
           and len(state.outputs[0].inputs) == 1 and len(state.outputs[0].outputs) == 1):
        tail.append(state.outputs[0])
        state = tail[-1].outputs[0]
    return dataclasses.replace(last, tail=tuple(tail)) if tail else last


def _recurrence_of(chain: list, graph_outputs: set[int], ranks: RankMap,
                   gather: bool = False) -> tuple[Optional[Recurrence], Optional[str]]:
    """The chain's recurrence, or None and why (the reason without the tail). The last state's Identities
    (`_with_tail`) join the chain only where it does not match without them: such an Identity may as well be the
    last step's readout, as every step's (y_t = Identity(x_t): s32, gen19's tail had left that chain unrolled)."""
    tailed = _with_tail(chain[-1], graph_outputs)
    reason = None
    for attempt in [chain] + ([chain[:-1] + [tailed]] if tailed is not chain[-1] else []):
        try:
            return _build_recurrence(attempt, graph_outputs, ranks), None
        except _ChainMismatch as error:
            reason = reason or str(error)
    if gather:   # no readout that stacks: the states read where they are read
        try:
            return _build_recurrence(chain, graph_outputs, ranks, gather=True), None
        except _ChainMismatch as error:
            reason = f"{reason} (its states gathered: {error})"
    return None, reason


def _missing_first_step(head: Step, ranks: RankMap) -> Optional[Step]:
    """x_0 = b_0 written as the slice itself (no initial state): the step before `head`, if so (b_{p-1} before a
    forward chain's position p, b_{p+1} before a backward chain's position p: x_{p-1} = b_{p-1} is the state the
    chain starts from, whatever p)."""
    if head.decay is None or head.decay.index != head.drive.index:
        return None
    drive0 = _step_slice(head.previous, ranks)
    if drive0 is None or drive0.key != head.drive.key or abs(drive0.index - head.drive.index) != 1:
        return None
    return Step(None, None, None, drive0, None, head.previous_origin, ())


# How far back from a step's x_{i-1} to look for the state of another step, through ops that are not
# no-ops: a chain cut into 1-step pieces by them is reported, not dropped in silence.
_BROKEN_LINK_DEPTH = 3


def _broken_link(step: Step, step_by_state: dict[int, Step]) -> Optional[tuple[Step, list[gs.Node]]]:
    """The step whose state reaches `step`'s x_{i-1} through a few single-data-input nodes that are not
    no-ops (a Cast that changes the type, a Neg), and those nodes; None if there is none."""
    tensor, path = step.previous_origin, []
    for _ in range(_BROKEN_LINK_DEPTH):
        node = producer(tensor) if tensor is not None else None
        if node is None:
            return None
        data = [t for t in node.inputs if not isinstance(t, gs.Constant) and producer_op(t) != "Constant"]
        if len(data) != 1:
            return None
        path.append(node)
        tensor, _ = see_through(data[0])
        if id(tensor) in step_by_state:
            return step_by_state[id(tensor)], path[::-1]
    return None


def _broken_chains(single_steps: list[Step], step_by_state: dict[int, Step]) -> list[Rejection]:
    """Steps that matched alone, each reading the last one's state through nodes that are not no-ops:
    one rejection per such run, naming the first link, where MIN_STEPS or more are joined."""
    following: dict[int, tuple[Step, list[gs.Node]]] = {}
    for step in single_steps:
        link = _broken_link(step, step_by_state)
        if link is not None:
            following[id(link[0].state)] = (step, link[1])
    reached = {id(step.state) for step, _ in following.values()}
    rejections = []
    for first in single_steps:
        if id(first.state) in reached or id(first.state) not in following:
            continue
        count, current, seen = 1, first, {id(first.state)}
        while id(current.state) in following and id(following[id(current.state)][0].state) not in seen:
            current = following[id(current.state)][0]
            seen.add(id(current.state))
            count += 1
        if count >= MIN_STEPS:
            nodes = following[id(first.state)][1]
            through = ", ".join(_describe_link_node(n) for n in nodes)
            rejections.append(Rejection(first.add.name, count, (
                f"each step reads the state before it through {through}, which does not keep its value and type "
                "(only same-type Casts, Identities and shape round trips are seen through), so no two steps chain")))
    return rejections


def _describe_link_node(node: gs.Node) -> str:
    if node.op == "Cast" and "to" in node.attrs:
        to = onnx.TensorProto.DataType.Name(int(node.attrs["to"]))
        return f"Cast(to={to}) '{node.name}'"
    return describe(node)


def find_recurrences(graph: gs.Graph, gathered: frozenset = frozenset()) -> MatchReport:
    """The chains and why others did not match; `gathered`: ids of Adds whose chain, where no readout stacks its
    steps, is taken with its states read where they are read (readout kind "gathered": RWKV's steps rescaled by a
    running maximum, passes/running_max_scan.py)."""
    ranks = RankMap(graph)
    steps = [s for s in (_match_step(node, ranks) for node in graph.nodes if node.op == "Add") if s is not None]
    step_by_state = {id(s.state): s for s in steps}
    next_steps: dict[int, list[Step]] = {}
    for step in steps:
        if id(step.previous_origin) in step_by_state:
            next_steps.setdefault(id(step_by_state[id(step.previous_origin)].add), []).append(step)

    graph_outputs = {id(t) for t in graph.outputs}
    recurrences, rejections = [], []
    heads = [s for s in steps if id(s.previous_origin) not in step_by_state]
    single_steps: list[Step] = []
    for head in heads:
        chain, reason = [head], None
        missing = _missing_first_step(head, ranks)
        if missing is not None:
            chain.insert(0, missing)
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
            single_steps.append(head)
            continue
        if reason is None:
            recurrence, reason = _recurrence_of(chain, graph_outputs, ranks,
                                                gather=any(id(step.add) in gathered for step in chain))
            if recurrence is not None:
                recurrences.append(recurrence)
                continue
        anchor = head.add.name
        rejections.append(Rejection(anchor, len(chain), reason))
    return MatchReport(recurrences, rejections + _broken_chains(single_steps, step_by_state))

"""Re-roll unrolled linear recurrences (naive selective-scan exports) into a chunked form.

Finds every chain `x_i = a_i * x_{i-1} + b_i` with per-step readouts stacked into one
tensor (patterns/linear_recurrence.py), and replaces the chain with a form from
passes/scan_forms/ that computes all states at once, then the readout over all steps.
The stacked output keeps its tensor, so consumers downstream are untouched.

The decays reach the form as a decays.Decays: the tensor a_i itself, and log a_i only where every
a_i is provably > 0 (an Exp output, whose input is log a_i exactly; a constant > 0). Forms that only
multiply decays (parallel, batched-doubling, the strided ones) take a_i as it is, exact for any
sign; forms that sum logs (scan_forms.LOG_SPACE: chunk24, batched, window-doubling) are never
handed decays without a log: such a recurrence is left unrolled, with a note that names a form
that would take it. (Log(a_i) of a Tanh output or a negative constant was NaN, written out
unchecked under --verify none.) A form that would build a square constant over the scan's steps
beyond MAX_INDEX_TABLE entries (scan_forms.TABLE_SIDES: shift matrices, bands) is refused the same way.

Step outputs stored by assignment into a preallocated buffer (`out[:, t] = y_t`, one ScatterElements
per step: patterns/buffer_writes.py) are first written as the Concat of the written slices, which is
the same tensor, so that the recurrences behind them are found like those whose outputs are stacked
(stats `buffer_writes_stacked`; done whether a recurrence then re-rolls or not: the Concat is exact).

A loop over `x.unbind(axis)` (TorchScript: one Split into one-position pieces) has its pieces read as
Slices first (passes/split_pieces.py), so its steps are found like `x[:, t]`; a Split whose pieces no
re-rolled scan took is put back (stats `split_pieces_sliced`: those that stayed Slices, dead once re-rolled).

Step outputs that keep their reduced axis and are concatenated along it (`.sum(-1, keepdim=True)`, then
`torch.cat(ys, -1)`) are read as Unsqueeze(Squeeze(y_t)) first (passes/keepdim_pieces.py), put back where no
re-rolled scan stacked them.

A loop that keeps the step axis (`h = a[:, t:t+1] * h + b[:, t:t+1]`) has its one-position Slices read as
Gather(Unsqueeze(x, axis + 1), t) first (passes/step_axis_pieces.py), and its readouts, inferred of size 1 along the
Concat's axis, as keepdim pieces; both put back where no re-rolled scan took them.

States stacked as they are beside the readout (`hs.append(h)` and `ys.append(y)` in one loop; an ONNX Loop's state
scan output beside its readouts, written out by unroll-loops) are the form's states, moved to the stack's axis.

A running maximum m_t = Max(m_{t-1} + w, k_t) that rescales linear steps (RWKV's stabiliser: patterns/running_max.py)
is first computed for all steps by a max-plus scan (passes/running_max_scan.py), so that those steps' decays and drives
are steps of tensors; their chains' states are read back where the loop read them (readout kind "gathered"), and the
forms that invert a chunk's cumulative decay (OVERFLOWS_PAST) are refused them: such decays have no bound below.

A backward chain (positions L-1 .. 0: `for t in reversed(range(L))`) is the forward scan of its
decays and drives reversed along the scan axis: the form runs on those, its states are reversed back
to position order for the readout, and a stack that holds y_{L-1} first is the readout reversed.
"""
from __future__ import annotations

import dataclasses
import string
from typing import Optional, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Option, Pass, PassContext, PassResult
from passes.graph_builder import MAX_INDEX_TABLE, GraphBuilder, taken_prefixes
from passes.graph_io import graph_is_topologically_sorted
from passes.one_line import printable
from passes.registry import register_pass
from passes.scan_forms import ANY_SIGN, FOLDS_READOUT, LOG_SPACE, OVERFLOWS_PAST, SCAN_FORMS, TABLE_SIDES, TAKES_SHAPES
from passes.scan_forms.chunk_axes import INT64_MAX, move_axis, move_axis_perm, transpose_without_unit_axes
from passes.scan_forms.decays import Decays
from passes.scan_forms.parallel_strided import strided_chunk
from passes.static_shapes import named_shapes, partial_shapes, symbolic_named_shapes, symbolic_partial_shapes
from passes.scan_forms.step_replay import ReplayError, replay_over_steps, template_output_rank
from passes.keepdim_pieces import restore as restore_keepdim, squeeze_keepdim_pieces
from passes.split_pieces import restore, slice_split_pieces
from passes.step_axis_pieces import gather_kept_steps, restore as restore_kept_steps
from passes.masked_steps import mask_steps, restore as restore_masked
from passes.step_operands import replay_step_operands, restore as restore_step_operands
from passes.running_max_scan import restore as restore_running_max, scan_running_maxima
from patterns.buffer_writes import find_buffer_writes
from patterns.graph_query import element_type, inputs_all_static, producer, toposort
from patterns.indexing import known_axis_length
from patterns.linear_recurrence import COEFF, DECAY, DRIVE, Recurrence, Rejection, find_recurrences
from patterns.running_max import find_running_maxima, rescaled_steps_of_each
from patterns.substitution_writes import find_substitution_writes
from patterns.small_constants import EVALUATED_OPS, small_value


def _einsum_with_steps(equation: str, state_operand: int, state_axis: int, coeff_axis: int, stack_axis: int) -> str:
    """Turn the per-step einsum into one over all steps by adding a fresh index for the step."""
    inputs, output = equation.split("->")
    terms = inputs.split(",")
    step = next(c for c in string.ascii_letters if c not in equation)
    state_term, coeff_term = terms[state_operand], terms[1 - state_operand]
    terms[state_operand] = state_term[:state_axis] + step + state_term[state_axis:]
    terms[1 - state_operand] = coeff_term[:coeff_axis] + step + coeff_term[coeff_axis:]
    return ",".join(terms) + "->" + output[:stack_axis] + step + output[stack_axis:]


def _reversed(b: GraphBuilder, tensor: gs.Tensor, axis: int, output=None) -> gs.Tensor:
    """`tensor` with its positions along `axis` in the reverse order (a step -1 Slice, as torch.flip exports;
    slice-reverse-to-gather makes it a Gather where a target wants one)."""
    return b.node("Slice", [tensor, b.ints([-1]), b.ints([-INT64_MAX - 1]), b.ints([axis]), b.ints([-1])],
                  output=output)


def _emit_readout(b: GraphBuilder, rec: Recurrence, states: gs.Tensor, full_rank: int) -> None:
    """The readout of `states` (every position, in position order) into rec.output."""
    if rec.readout.kind == "gathered":   # each reader of x_t reads step t of the states
        for position, reads in enumerate(rec.gathered):
            if reads:
                state = b.gather(states, position, rec.decay_axis)
                for reader, index in reads:
                    reader.inputs[index] = state
        return
    if rec.stack_reversed:   # y_{L-1} first: the readout in position order, reversed along the stack axis
        stacked = gs.Variable(f"{b.prefix}/readout_in_position_order", dtype=None)
        _emit_readout_to(b, rec, states, full_rank, stacked)
        _reversed(b, stacked, rec.readout.stack_axis, output=rec.output)
    else:
        _emit_readout_to(b, rec, states, full_rank, rec.output)


def _emit_readout_to(b: GraphBuilder, rec: Recurrence, states: gs.Tensor, full_rank: int, out: gs.Variable) -> None:
    axis, form = rec.decay_axis, rec.readout
    if form.kind == "states":
        moved = move_axis(b, states, full_rank, axis, form.stack_axis)
        b.identity(moved, output=out)
    elif form.kind == "einsum":
        equation = _einsum_with_steps(form.equation, form.state_operand, axis, rec.coeff_axis, form.stack_axis)
        operands = [states, rec.coeff] if form.state_operand == 0 else [rec.coeff, states]
        b.einsum(operands, equation, output=out)
    elif form.kind == "mulsum":
        coeff = move_axis(b, rec.coeff, full_rank, rec.coeff_axis, axis)
        factors = [states, coeff] if form.state_operand == 0 else [coeff, states]
        reduce_axes = [a if a < axis else a + 1 for a in form.reduce_axes]
        step_axis = axis if form.keepdims else axis - sum(a < axis for a in form.reduce_axes)
        summed_rank = full_rank if form.keepdims else full_rank - len(reduce_axes)
        if step_axis == form.stack_axis:
            b.reduce_sum(b.mul(*factors), reduce_axes, form.keepdims, output=out)
        else:
            summed = b.reduce_sum(b.mul(*factors), reduce_axes, form.keepdims)
            b.transpose(summed, move_axis_perm(summed_rank, step_axis, form.stack_axis), output=out)
    elif form.kind == "template":
        # The per-step subgraph, replayed with a leading step axis (passes/scan_forms/step_replay.py).
        stacked = replay_over_steps(b, rec.template, move_axis(b, states, full_rank, axis, 0), rec.length,
                                    start=rec.first_position)
        perm = move_axis_perm(template_output_rank(rec.template) + 1, 0, form.stack_axis)
        if form.stack_axis == 0:
            b.identity(stacked, output=out)
        else:
            b.transpose(stacked, perm, output=out)
    else:
        raise ValueError(f"unknown readout kind {form.kind}")


def _strided_readout(b: GraphBuilder, rec: Recurrence, states: gs.Tensor, start: int, stride: int,
                     count: int, layout: Optional[Sequence[int]] = None) -> tuple[gs.Tensor, int]:
    """The readout of steps start, start + stride, ... (`count` of them; `states` holds them, step
    axis first), step axis first, and its rank: a form that reads out block by block calls this.
    `layout`: the order of `states`' axes in memory (step_replay's Value.layout), None: their own."""
    form = rec.readout
    if form.kind == "template":   # (its stepped Gathers take the chain's own positions, from rec.first_position)
        output = replay_over_steps(b, rec.template, states, count, rec.first_position + start, stride, layout)
        return output, template_output_rank(rec.template) + 1
    if layout is not None:
        states = b.transpose(states, [int(axis) for axis in np.argsort(layout)])
    coeff = b.node("Slice", [rec.coeff, b.ints([start]), b.ints([start + stride * (count - 1) + 1]),
                             b.ints([rec.coeff_axis]), b.ints([stride])])
    equation = _einsum_with_steps(form.equation, form.state_operand, 0, rec.coeff_axis, 0)
    operands = [states, coeff] if form.state_operand == 0 else [coeff, states]
    return b.einsum(operands, equation), len(equation.split("->")[1])


# The scan forms build CumSum (an op from opset 11) and Slices with their bounds as inputs (from 10):
# an older model keeps its scans unrolled rather than get ops it cannot run.
MIN_OPSET = 11


def _opset_refusal(opset: int) -> Optional[str]:
    if opset < MIN_OPSET:
        return (f"opset {opset} is older than {MIN_OPSET}, the first with the ops the scan forms build "
                "(CumSum, Slice bounds as inputs)")
    return None


def _replay_refusal(rec: Recurrence, opset: int) -> Optional[str]:
    """Why the per-step readout cannot be replayed over all steps (a dry run on a scratch graph), or None."""
    if rec.template is None:
        return None
    scratch = GraphBuilder(gs.Graph(), opset, prefix="dry_run")
    try:
        replay_over_steps(scratch, rec.template, gs.Variable("states"), rec.length)
    except ReplayError as error:
        return f"{rec.named_mismatch} (as a per-step subgraph: {error})"
    return None


def _reaches_state(tensor: gs.Tensor, states: set[int], depth: int = 2) -> bool:
    """`tensor` is one of `states` or computed from one within `depth` producers."""
    if id(tensor) in states:
        return True
    node = producer(tensor)
    return depth > 0 and node is not None and any(_reaches_state(t, states, depth - 1) for t in node.inputs)


def _raw_state_read(rec: Recurrence, states: set[int]) -> Optional[str]:
    """Why a chain rescaled by a scanned maximum may not re-roll: one of its states read other than in a ratio of two
    rescaled states (RWKV's y_t = num_t / den_t, or (o1 num + o2 v) / (o1 den + o2) before the update), or None.
    The max-plus scan rounds m_t unlike the loop (d w added at once where the loop adds w d times, a few ulps of m
    apart), and each state is held relative to its m_t: a ratio is unchanged, a state read alone is off by
    exp(that difference) (fuzz24: a Neg of num_39 9e-5 from the loop's at |k| ~ 30, rel L2; the loop's own rounding
    leaves it within 6e-8 of float64)."""
    def ratio(div: gs.Node) -> bool:
        return div.op == "Div" and all(_reaches_state(tensor, states) for tensor in div.inputs)

    for position, reads in enumerate(rec.gathered):
        for reader, _ in reads:
            if ratio(reader) or (reader.op == "Mul" and all(
                    add.op == "Add" and all(ratio(div) for div in add.outputs[0].outputs)
                    for add in reader.outputs[0].outputs) and reader.outputs[0].outputs):
                continue
            return (f"its state at step {position} is read by '{reader.name or reader.outputs[0].name}' "
                    f"({reader.op}), not in a ratio of two rescaled states: the max-plus scan rounds m_t unlike the "
                    "loop by a few ulps, which scales each state by exp of the difference (a ratio num / den is "
                    "unchanged)")
    return None


def _log_space_refusal(form: str, decays: Decays) -> Optional[str]:
    """Why `form` cannot take this recurrence's decays (it sums their logs, and some may be <= 0), or None."""
    if form not in LOG_SPACE or decays.has_log:
        return None
    others = " and ".join(ANY_SIGN)
    return (f"the {form} form sums log a_i, and the decays are not known to be > 0 ({decays.why_no_log}); "
            f"the {others} forms take decays of any sign (reroll-scans{{form={ANY_SIGN[0]}}})")


def _rescaled_overflow_refusal(form: str) -> str:
    others = " and ".join(ANY_SIGN)
    return (f"its decays exp(m_{{t-1}} + w - m_t) are rescaled by a running maximum, with no bound below, and the "
            f"{form} form overflows float32 once a chunk's decays multiply past exp(-{OVERFLOWS_PAST[form]}); the "
            f"{others} forms only multiply decays (reroll-scans{{form={ANY_SIGN[0]}}})")


def table_refusal(form: str, length: int, chunk: int, carry_shifts: str, one_chunk_up_to: int = 0) -> Optional[str]:
    """Why `form` with `chunk` would build a square constant of more than MAX_INDEX_TABLE entries
    over a scan of `length` steps (scan_forms.TABLE_SIDES), or None."""
    side_of = TABLE_SIDES.get(form)
    side = side_of(length, chunk, carry_shifts, one_chunk_up_to) if side_of is not None else 0
    if side * side <= MAX_INDEX_TABLE:
        return None
    return (f"the {form} form with chunk {chunk} builds a {side} x {side} constant (a shift matrix or band over "
            f"this scan's {length} steps), more than the {MAX_INDEX_TABLE} values a constant may hold; a chunk "
            "near the square root of the length keeps its tables small, the parallel form builds none")


def _decays_per_state(rec: Recurrence, shapes: dict) -> bool:
    """The decay varies along the state's last axis: decays per (channel, state), Mamba's d_state
    N > 1 in every layout seen (transformers and mambapy (.., d_inner, N), the fork's (B, KD, L, N)).
    VMamba's N = 1 has size 1 there. False when that size is unknown, and for a state of fewer than
    three axes (batch, channel, state): a gated RNN's (B, width) (RecurrentGemma's RG-LRU) has channels
    last and no state axis, and its decays no small factors for the strided forms to build steps from
    (cpu's channels-last-readout made 572 nodes of a 256-step RG-LRU, the parallel form 148)."""
    shape = shapes.get(rec.decay.name)
    if shape is None or len(shape) < 4:
        return False
    state_axes = [size for index, size in enumerate(shape) if index != rec.decay_axis]
    return state_axes[-1] is not None and state_axes[-1] > 1


def _unit_axes_after_scan(rec: Recurrence, shapes: dict) -> list[int]:
    """The axes after the scan axis that are size 1 in the decay (VMamba's d_state 1) and not known
    to be anything else in the drive; none when the chain has an initial state.

    ONNX shape inference often cannot see the drive's d_state (VMamba's B goes through an Expand
    whose shape comes from a Where): an unknown size is taken as 1, and the Squeeze the form
    starts with fails at run time, loudly, if it is not."""
    axis = rec.decay_axis
    decay_shape, drive_shape = shapes.get(rec.decay.name), shapes.get(rec.drive.name)
    if rec.initial_state is not None or decay_shape is None:
        return []
    if drive_shape is None:
        drive_shape = [None] * rec.drive_rank
    drive_shape = [drive_shape[i] for i in move_axis_perm(rec.drive_rank, rec.drive_axis, axis)]
    trailing = list(range(axis + 1, rec.rank))
    if trailing and all(decay_shape[i] == 1 and drive_shape[i] in (1, None) for i in trailing):
        return trailing
    return []


def _with_step_axis(b: GraphBuilder, rec: Recurrence, state: gs.Tensor) -> gs.Tensor:
    """A state-shaped tensor (the initial state, or the zeros it was) with the step axis put in, where the decays
    have it; a lower-rank one broadcasts from the right, the step axis going in at the same place."""
    initial_rank = rec.initial_rank if rec.initial_rank is not None else rec.rank - 1
    insert_at = rec.decay_axis - ((rec.rank - 1) - initial_rank)
    return b.unsqueeze(state, [insert_at]) if insert_at >= 0 else state


def reroll(graph: gs.Graph, rec: Recurrence, b: GraphBuilder, form: str, chunk: int, shapes: dict,
           unit_axes: Sequence[int] = (), dense_carry: int = 0, carry_shifts: str = "matmul",
           decays: Optional[Decays] = None, one_chunk_up_to: int = 0, zeros_broadcast: bool = False,
           windowed: frozenset = frozenset(), first_decay_unread: bool = False) -> None:
    """Replace the chain of `rec` by `form`; `decays`: its decays (Decays.of(b, rec.decay) when None),
    with a log if `form` is in LOG_SPACE; `zeros_broadcast`: the zeros its first step multiplied, left out, are added
    to the drives (exact: + 0), so that sizes they may add to x_0 are kept (`_zeros_not_proven_within_b0`);
    `windowed`: the operands (`_stacked_operands`' names) whose axis is more than the chain's steps, sliced to them
    (`_operands_to_slice`); `first_decay_unread`: a_0 taken as 1 where it multiplies zeros (Decays.first_step_one:
    a running maximum's first decay, exp(-1e38))."""
    full_rank = rec.rank
    axis = rec.decay_axis
    # Detach the stacked output (and an escaping final state) from the unrolled chain first; where the chain's steps
    # are one run of a Concat that stacks more (a chain restarted inside one loop), the run becomes one tensor the
    # form writes, and the Concat stays.
    shapes = dict(shapes)
    if rec.output is not None:   # (a gathered readout stacks nothing)
        rec = dataclasses.replace(rec, output=_own_stack(b, rec.output, rec.stack_part, rec.readout.stack_axis,
                                                         shapes))
    if rec.final_state_escapes:
        producer(rec.final_state).outputs.clear()
    if rec.states_stack is not None:
        stack = rec.states_stack
        rec = dataclasses.replace(rec, states_stack=dataclasses.replace(
            stack, output=_own_stack(b, stack.output, stack.part, stack.stack_axis, shapes)))

    decays = decays if decays is not None else Decays.of(b, rec.decay)
    if windowed:   # the forms scan whole axes: each operand cut to the chain's positions first
        shapes = dict(shapes)
        whole = rec
        if DECAY in windowed:
            decays = decays.mapped(lambda tensor: _chain_steps(b, whole, tensor, whole.decay_axis, shapes, DECAY))
        rec = dataclasses.replace(
            rec, drive=(_chain_steps(b, rec, rec.drive, rec.drive_axis, shapes, DRIVE) if DRIVE in windowed
                        else rec.drive),
            coeff=(_chain_steps(b, rec, rec.coeff, rec.coeff_axis, shapes, COEFF) if COEFF in windowed
                   else rec.coeff))
    if first_decay_unread and rec.initial_state is None and not rec.backward:
        decays = decays.first_step_one(b, axis, full_rank)
    drive = move_axis(b, rec.drive, rec.drive_rank, rec.drive_axis, axis)
    if rec.backward:   # the forward scan of the reversed sequence
        drive = _reversed(b, drive, axis)
        decays = decays.mapped(lambda tensor: _reversed(b, tensor, axis))
    initial: Optional[gs.Tensor] = None
    if rec.initial_state is not None:
        initial = _with_step_axis(b, rec, rec.initial_state)
    elif zeros_broadcast:   # the dropped zeros' sizes, not proven within b_0's: the drives broadcast by them
        drive = b.node("Add", [drive, _with_step_axis(b, rec, rec.zeros_dropped[2])])
    extra = {"shapes": shapes} if form in TAKES_SHAPES else {}
    if form == "batched":
        extra.update(dense_carry=dense_carry, carry_shifts=carry_shifts)
    if form == "window-doubling":
        extra.update(one_chunk_up_to=one_chunk_up_to)
    if unit_axes:  # the form runs without them: one rank fewer for every tensor it makes
        decays, drive = decays.mapped(lambda tensor: b.squeeze(tensor, unit_axes)), b.squeeze(drive, unit_axes)
    # One chunk: the blocks are single steps, and reading each out alone only multiplies the readout.
    # (A backward chain's blocks are in step order, its readout's coefficients in position order.)
    folded = (form in FOLDS_READOUT and not unit_axes and not rec.final_state_escapes
              and rec.states_stack is None and not rec.backward and not rec.stack_reversed
              and rec.readout.kind in ("template", "einsum") and strided_chunk(rec.length, chunk) < rec.length)
    if folded:   # the form reads out block by block: the readout of every step, step axis first
        extra["readout"] = (lambda block, start, stride, count, layout=None:
                            _strided_readout(b, rec, block, start, stride, count, layout))
    states = SCAN_FORMS[form](b, decays=decays, drive=drive, initial=initial, axis=axis,
                              length=rec.length, chunk=chunk, rank=full_rank - len(unit_axes), **extra)
    if folded:
        rank = (template_output_rank(rec.template) if rec.readout.kind == "template"
                else len(rec.readout.equation.split("->")[1])) + 1
        stack_axis = rec.readout.stack_axis
        if stack_axis == 0:
            b.identity(states, output=rec.output)
        else:
            perm = move_axis_perm(rank, 0, stack_axis)
            shape = shapes.get(rec.output.name)   # the stacked output's; the step-first result's from it
            shape = None if shape is None or len(shape) != rank else [shape[perm.index(axis)] for axis in range(rank)]
            transpose_without_unit_axes(b, states, perm, shape, output=rec.output)
        return
    if unit_axes:
        states = b.unsqueeze(states, unit_axes)
    in_position_order = _reversed(b, states, axis) if rec.backward else states
    _emit_readout(b, rec, in_position_order, full_rank)
    if rec.states_stack is not None:   # the states stacked as they are, beside the readout
        stack = rec.states_stack
        moved = move_axis(b, in_position_order, full_rank, axis, stack.stack_axis)
        if stack.reversed:
            _reversed(b, moved, stack.stack_axis, output=stack.output)
        else:
            b.identity(moved, output=stack.output)
    if rec.final_state_escapes:   # the last step's state (position 0 of a backward chain)
        b.node("Gather", [states, b.ints(rec.length - 1)], {"axis": axis}, output=rec.final_state)


def _own_stack(b: GraphBuilder, stacked: gs.Tensor, part: tuple, axis: int, shapes: dict) -> gs.Tensor:
    """The tensor a re-rolled chain writes its stack to: `stacked`, its Concat detached, or where the chain's step
    outputs `part` (each of size 1 along the Concat's `axis`) are one run of that Concat's inputs, a new tensor in that
    run's place (the run stacked in one tensor is the same values in the same place); its shape put in `shapes` where
    the Concat's is known (the forms that read the stack's shape read it there)."""
    concat = producer(stacked)
    if not part:
        concat.outputs.clear()
        return stacked
    ids = {id(piece) for piece in part}
    at = [index for index, tensor in enumerate(concat.inputs) if id(tensor) in ids]
    own = gs.Variable(b.fresh_name("stack_part"), dtype=stacked.dtype)
    shape = shapes.get(stacked.name)
    if shape is not None and -len(shape) <= axis < len(shape):
        shapes[own.name] = [*shape[:axis % len(shape)], len(part), *shape[axis % len(shape) + 1:]]
    inputs = list(concat.inputs)
    inputs[at[0]:at[-1] + 1] = [own]
    concat.inputs.clear()   # (onnx-graphsurgeon's input list keeps each tensor's readers: no slice assignment)
    concat.inputs.extend(inputs)
    return own


def _chain_steps(b: GraphBuilder, rec: Recurrence, tensor: gs.Tensor, axis: int, shapes: dict,
                 operand: str) -> gs.Tensor:
    """`tensor`'s positions the chain takes of `operand` along `axis` (a Slice; each operand its own:
    `a[t + 1] * h + b[t]`), its shape in `shapes` where its source's is: the strided forms read sizes there."""
    first = rec.first_of(operand)
    sliced = b.slice(tensor, first, first + rec.length, axis)
    shape = shapes.get(tensor.name)
    if shape is not None and 0 <= axis < len(shape):
        shapes[sliced.name] = [*shape[:axis], rec.length, *shape[axis + 1:]]
    return sliced


def stack_buffer_writes(graph: gs.Graph, opset: int, taken: Optional[set[str]] = None,
                        notes: Optional[list[str]] = None) -> int:
    """Each chain of whole-slice writes into a buffer (patterns/buffer_writes.py) as the Concat of its
    slices, in the chain's place; how many chains. A symbolic-batch chain's pieces not proven of one shape are
    stacked broadcast to the slice, each said in `notes`."""
    chains = find_buffer_writes(graph)
    if not chains:
        return 0
    taken = taken_prefixes(graph) if taken is None else taken
    # The pieces' shapes, inferred before any chain is rewritten (only where a chain's y_t are broadcast by its writes)
    symbolic = [chain for chain in chains if chain.broadcast_like is not None]
    shapes = named_shapes(graph, [tensor.name for chain in symbolic for tensor in [chain.broadcast_like, *chain.pieces]]
                          ) if symbolic else {}
    of_the_slice = set()   # chains whose stacked pieces each have the slice's shape: the stack is the buffer's
    for chain in chains:
        if chain.broadcast_like is not None:
            chain.pieces, sliced = _pieces_of_one_shape(chain, shapes, notes)
            if sliced:
                of_the_slice.add(id(chain))
    for index, chain in enumerate(chains):
        builder = GraphBuilder(graph, opset, prefix=f"reroll_scans/stacked_writes{index}", taken=taken)
        for number, (shape_node, value) in enumerate(chain.shape_reads):   # a buffer's shape: that of them all
            _as_constant(shape_node, value, f"{builder.prefix}/shape_{number}")
        _fold_after([node for node, _ in chain.shape_reads], builder.prefix)
        _fold_update_shapes(chain.pieces, builder.prefix)
        output = chain.output
        if chain.broadcast_like is not None:   # a symbolic batch: the y_t stacked, broadcast as the writes did
            for node, index in chain.shape_readers:
                node.inputs[index] = chain.broadcast_like
            chain.nodes[-1].outputs.clear()
            pieces = [builder.unsqueeze(piece, [chain.axis]) for piece in chain.pieces]
            if id(chain) in of_the_slice:
                builder.concat(pieces, chain.axis, output=output)
            else:
                stacked = builder.concat(pieces, chain.axis)
                builder.node("Expand", [stacked, builder.node("Shape", [chain.broadcast_like])], output=output)
            continue
        pieces = [piece if shape is None else builder.unsqueeze(builder.reshape(piece, shape), [chain.axis])
                  for piece, shape in zip(chain.pieces, chain.piece_shapes)]
        chain.nodes[-1].outputs.clear()
        builder.concat(pieces, chain.axis, output=output)
    toposort(graph.cleanup())
    return len(chains)


def _with_rescaled(graph: gs.Graph) -> tuple[list, list]:
    """The running maxima (patterns/running_max.py) and the Adds of the linear steps each rescales."""
    runnings = find_running_maxima(graph)
    return runnings, rescaled_steps_of_each(graph, runnings)


def _running_max_notes(graph: gs.Graph, taken_nodes: set[int],
                       reasons: dict[int, Optional[str]]) -> tuple[list[str], set[int]]:
    """One note per running maximum (patterns/running_max.py) that rescales linear steps no scan took, and the ids
    of those steps' Adds whose chains' other notes are left out (by name, a chain elsewhere whose first Add bore a
    rescaled step's name lost its notes: fuzz23). `reasons`: id(first Max) -> why no max-plus scan took the chain
    (passes/running_max_scan.py), None where one did and the steps it rescales did not re-roll: their own notes say
    why, kept."""
    notes, rescaled = [], set()
    for running, rescaled_adds in zip(*_with_rescaled(graph)):
        steps = [add for add in rescaled_adds if id(add) not in taken_nodes]
        if not steps:
            continue
        first = steps[0].name or steps[0].outputs[0].name
        more = f" and {len(steps) - 1} more" if len(steps) > 1 else ""
        head = (f"running maximum at '{printable(running.anchor)}' ({running.length} steps), m_t = "
                f"Max(m_{{t-1}} + w_t, k_t), rescales the linear steps at '{printable(first)}'{more}")
        key = id(running.maxes[0])
        if key in reasons and reasons[key] is None:
            notes.append(f"{head}: the maximum re-rolls as a max-plus scan, but no chain of those steps does (their "
                         "own notes say why): left unrolled")
            continue
        rescaled.update(id(add) for add in steps)
        why = f" ({printable(reasons[key])})" if reasons.get(key) else " (no scan form computes it)"
        notes.append(f"{head}: their decays and drives are computed from it, a max-plus recurrence, not a linear "
                     f"step{why}: left unrolled")
    return notes, rescaled


def _substitution_notes(graph: gs.Graph) -> list[str]:
    """One note per buffer written from its own earlier values (patterns/substitution_writes.py: Qwen3Next's
    triangular solve through dynamo), which no scan takes."""
    return [f"buffer written at {chain.length} steps from '{printable(chain.anchor)}' ({chain.writes[0].op}), each "
            "write's update computed from the buffer written before it: a forward substitution (a triangular solve, "
            "each step reading every earlier one), not a linear step: left unrolled"
            for chain in find_substitution_writes(graph)]


def _zeros_not_proven_within_b0(graph: gs.Graph, recurrences: list) -> tuple[set[int], list[str]]:
    """The ids of the recurrences whose first step multiplies zeros that were left out (x_0 = b_0) where the zeros
    are not proven to add no size to b_0, and a note each: zeros of a computed shape (zeros(x[:, 0].shape),
    ConstantOfShape(Shape(z))) could be larger than b_0 and broadcast it, so the re-roller adds them to the drives
    (exact: + 0; an Unsqueeze and an Add). Only where a graph input has a size that is not a number: a static model
    runs at its declared shapes alone, which verification checks; with a symbolic batch, b_0 must be inferred of
    x_0's shape. (Before s26 zeros seen through a Cast left the chain unrolled there, and zeros read as they are,
    the dynamo exporter's ConstantOfShape, were left out unchecked: a wrong result at a batch verification did not
    run, tests/test_reroll_scans.py::test_zeros_that_may_be_larger_than_b0_are_added_to_the_drives.)"""
    dropped = [rec for rec in recurrences if rec.zeros_dropped is not None]
    if not dropped or inputs_all_static(graph):
        return set(), []
    pairs = {id(rec): (rec.zeros_dropped[0].outputs[0], rec.zeros_dropped[1]) for rec in dropped}
    names = [tensor.name for pair in pairs.values() for tensor in pair if tensor is not None]
    shapes = named_shapes(graph, names)
    unproven_by_onnx = [rec for rec in dropped if not _within(pairs[id(rec)], shapes)]
    # ONNX's inference names a size anew at each Reshape: ONNX Runtime's tool follows it (seconds on a naive export)
    symbolic = symbolic_named_shapes(graph, names) if unproven_by_onnx else {}
    unproven, notes = set(), []
    for rec in unproven_by_onnx:
        if not _within(pairs[id(rec)], symbolic):
            state, drive = pairs[id(rec)]
            state_shape = shapes.get(state.name)
            drive_shape = shapes.get(drive.name) if drive is not None else None
            unproven.add(id(rec))
            notes.append(f"chain at '{printable(rec.anchor)}' ({rec.length} steps): the zeros its first step multiplies "
                         f"may broadcast b_0 ('{printable(drive.name if drive is not None else '?')}', "
                         f"{printable(_shape_text(drive_shape))}) to x_0's shape "
                         f"{printable(_shape_text(state_shape))}: not proven to add no size, added to the drives")
    return unproven, notes


def _operands_of_unknown_length(rec: Recurrence, shapes: Optional[dict] = None) -> bool:
    """Whether an operand's step axis has no size the graph declares (nor one in `shapes`, where given)."""
    return any(source is not None and known_axis_length(source, axis) is None
               and (shapes is None or _inferred_size(shapes, source, axis) is None)
               for source, axis, _ in _stacked_operands(rec))


def _inferred_size(shapes: dict, source: gs.Tensor, axis: int) -> Optional[int]:
    shape = shapes.get(source.name)
    return shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None


def _stacked_operands(rec: Recurrence) -> list[tuple[Optional[gs.Tensor], int, str]]:
    return [(rec.decay, rec.decay_axis, DECAY), (rec.drive, rec.drive_axis, DRIVE), (rec.coeff, rec.coeff_axis, COEFF)]


def _positions_text(rec: Recurrence, windowed: frozenset) -> str:
    """The positions a chain's sliced operands take, for the log: one range, or one per operand where they differ."""
    if not windowed:
        return ""
    ranges = {what: f"{rec.first_of(what)}..{rec.first_of(what) + rec.length - 1}"
              for source, _, what in _stacked_operands(rec) if source is not None}
    if len(set(ranges.values())) == 1:
        return f", positions {next(iter(ranges.values()))}"
    return ", positions " + ", ".join(f"{what} {text}" for what, text in ranges.items())


def _operands_to_slice(rec: Recurrence, shapes: dict) -> frozenset:
    """The names (`_stacked_operands`') of the operands whose axis may hold more than the chain's positions: those
    that start past position 0, whose axis is declared, else inferred (`shapes`), of another size, or whose size is
    neither (a symbolic length: the Slice of positions 0 .. L-1 is exact whatever it holds). The forms scan whole axes;
    re-rolled whole, such a chain was a Reshape ONNX Runtime refused at run time (exit 3), or, with the size
    declared, was left unrolled (s29); an axis of unknown size from position 0 was taken as the chain's length until
    s31, and an Einsum refused the readout at run time where it held more."""
    sliced = set()
    for source, axis, what in _stacked_operands(rec):
        if source is None:
            continue
        size = known_axis_length(source, axis)
        if size is None:
            size = _inferred_size(shapes, source, axis)
        if rec.first_of(what) != 0 or size != rec.length:
            sliced.add(what)
    return frozenset(sliced)


def _known(shape) -> bool:
    return shape is not None and all(size is not None for size in shape)


def _within(pair: tuple, shapes: dict) -> bool:
    """x_0 (the first step's Add) is inferred of b_0's shape, every size known: the zeros added no size."""
    state, drive = pair
    state_shape = shapes.get(state.name)
    return drive is not None and _known(state_shape) and shapes.get(drive.name) == state_shape


def _pieces_of_one_shape(chain, shapes: dict, notes: Optional[list[str]]) -> tuple[list, bool]:
    """The pieces of a symbolic-batch chain to stack, and whether each has the slice's shape (the buffer's without
    the axis; their stack then has the buffer's, as many pieces as positions: no Expand after it). The y_t as they
    are where inference gives every y_t one shape (each size a number or a name: the Concat takes them wherever the
    writes ran); else each y_t not proven of the slice's shape as its write broadcast it, Expand(y_t,
    Shape(slice)). A y_t of another shape (h_init of (1, D) among (batch, D) states) stacked as it is made a Concat
    that fails at any batch but 1, where the writes ran."""
    piece_shapes = [shapes.get(piece.name) for piece in chain.pieces]
    buffer = shapes.get(chain.broadcast_like.name)
    slice_shape = (None if not _known(buffer) or len(buffer) <= chain.axis
                   else buffer[:chain.axis] + buffer[chain.axis + 1:])
    if _known(piece_shapes[0]) and all(shape == piece_shapes[0] for shape in piece_shapes):
        return list(chain.pieces), piece_shapes[0] == slice_shape
    pieces = []
    for position, (piece, shape, broadcast) in enumerate(zip(chain.pieces, piece_shapes, chain.broadcast_pieces)):
        if _known(shape) and shape == slice_shape:
            pieces.append(piece)
            continue
        pieces.append(broadcast)
        if notes is not None:
            notes.append(f"buffer writes into '{printable(chain.broadcast_like.name)}': the update at position "
                         f"{position} ('{printable(piece.name)}', {printable(_shape_text(shape))}) is not proven "
                         f"of the slice's shape {printable(_shape_text(slice_shape))}: stacked broadcast to it")
    return pieces, True


def _shape_text(shape) -> str:
    if shape is None:
        return "shape unknown"
    return "(" + ", ".join("?" if size is None else repr(size) if isinstance(size, str) else str(size)
                           for size in shape) + ("," if len(shape) == 1 else "") + ")"


def _as_constant(node: gs.Node, value: np.ndarray, name: str) -> None:
    """`node` becomes a Constant node of `value` (its output, and so its readers, kept)."""
    node.op, node.domain = "Constant", None
    node.inputs.clear()
    node.attrs = {"value": gs.Constant(name, np.asarray(value))}


def _fold_after(nodes: list[gs.Node], prefix: str) -> None:
    """The shape arithmetic downstream of `nodes` (now Constants) that is computed from constants only,
    as Constants too, so that every step's update reads the same constants as the first step's."""
    stack, number = [consumer for node in nodes for out in node.outputs for consumer in out.outputs], 0
    while stack:
        node = stack.pop()
        if node.op == "Constant" or node.op not in EVALUATED_OPS or len(node.outputs) != 1:
            continue
        value = small_value(node.outputs[0])
        if value is None:
            continue
        _as_constant(node, value, f"{prefix}/folded_{number}")
        number += 1
        stack += list(node.outputs[0].outputs)


# Ops that carry an update's values to its write, reshaped: their other inputs are shapes.
_UPDATE_SHAPING_OPS = frozenset({"Expand", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast"})


def _fold_update_shapes(pieces: list, prefix: str) -> None:
    """The shapes each written update is expanded or reshaped to, where computed from constants only, as
    Constants. Without constant folding (TorchScript's `do_constant_folding=False`) the first write's update
    is expanded to Shape(a constant slice) and the later ones to Shapes of the buffer, which stacking made
    Constants: the same value spelled two ways, which the per-step template would take for two steps that
    differ."""
    number = 0
    for piece in pieces:
        node = producer(piece)
        while node is not None and node.op in _UPDATE_SHAPING_OPS and node.inputs:
            for tensor in node.inputs[1:]:
                made = producer(tensor) if tensor is not None else None
                if made is None or made.op == "Constant" or made.op not in EVALUATED_OPS or len(made.outputs) != 1:
                    continue
                value = small_value(tensor)
                if value is not None:
                    _as_constant(made, value, f"{prefix}/update_shape_{number}")
                    number += 1
            node = producer(node.inputs[0])


@register_pass
class RerollScans(Pass):
    name = "reroll-scans"
    description = "Find unrolled linear recurrences (naive scan exports) and replace each with a chunked form."

    form = Option(str, "chunk24", "scan form the recurrences become (passes/scan_forms/)",
                  choices=tuple(sorted(SCAN_FORMS)))
    chunk = Option(int, 24, "steps per chunk", min=1)
    state_form = Option(str, "same", "scan form for recurrences whose decays vary along the state's last axis "
                        "(per (channel, state): d_state N > 1), 'same': `form`", choices=("same", *sorted(SCAN_FORMS)))
    state_chunk = Option(int, 0, "steps per chunk for state_form, 0: `chunk`", min=0)
    # tpu-mlir (BM1684X) layer-groups VMamba's scan ops as 4-D tensors, while their 5-D form
    # ((1, K*D, chunks, Q, 1) for d_state 1) ran each op as a global op, DDR to DDR: 39.6 -> 34.2 ms.
    drop_unit_axes = Option(bool, False, "run the form without the state's size-1 axes after the scan axis "
                                         "(one rank fewer; d_state 1)")
    dense_carry = Option(int, 0, "batched form: with at most this many chunks (and no initial state), the carry "
                                 "across chunks as one weight matrix per channel, not a doubling scan; 0: never", min=0)
    # tpu-mlir runs the MatMul shifts as global ops (DDR to DDR) and cuts its layer groups around them,
    # so the chunk tensors of VMamba-T's stages 0-1 went out to DDR and back (docs/TPU.md).
    carry_shifts = Option(str, "matmul", "batched form: the doubling carry across chunks with the chunk axis moved "
                                          "last and shifted by MatMuls (matmul), or left in place as (decay, drive) "
                                          "pairs shifted by Slice + Concat (slices)", choices=("matmul", "slices"))
    one_chunk_up_to = Option(int, 0, "window-doubling form: a scan (or a level of chunks) of at most this many steps "
                                     "is one chunk, with no level below; 0: never", min=0)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        # One scan of the graph's names (0.25 s on VMamba-T's export) serves every builder below: each adds its prefix.
        taken = taken_prefixes(graph)
        write_notes: list[str] = []
        stacked_writes = stack_buffer_writes(graph, ctx.opset, taken, write_notes)
        # the nodes' order, put back below where nothing is re-rolled; not an unsorted graph's (the RankMaps below
        # sort it, and its order put back would not be a valid model: test_step_template's drive one step ahead)
        order = ({id(node): index for index, node in enumerate(graph.nodes)}
                 if graph_is_topologically_sorted(graph) else None)
        sliced_splits = slice_split_pieces(graph, ctx.opset, taken) if ctx.opset >= MIN_OPSET else []
        gathered = gather_kept_steps(graph, ctx.opset, taken) if ctx.opset >= MIN_OPSET else []
        # Step outputs that keep the step axis: their size 1 there is inferred, from the Gathers (only where such steps
        # were found; on a sorted copy: the Gathers made are at the graph's end, after their readers).
        piece_shapes = partial_shapes(toposort(graph.copy())) if gathered else None
        squeezed = (squeeze_keepdim_pieces(graph, ctx.opset, taken, shapes=piece_shapes)
                    if ctx.opset >= MIN_OPSET else [])
        # Masked steps (`h = torch.where(m, a * h + b, h)`) as the linear steps they are, their decays and drives
        # computed per step: replayed with the others below.
        operand_misses: list = []
        masked = mask_steps(graph, ctx.opset, taken, operand_misses) if ctx.opset >= MIN_OPSET else []
        # A running maximum that rescales linear steps (RWKV), computed for all steps by a max-plus scan: the steps'
        # decays and drives are then computed from steps of a tensor (m at t and t + 1), replayed with the others below.
        max_reasons: dict[int, str] = {}
        rescaled_before = ({id(running.maxes[0]): {id(add) for add in adds} for running, adds in zip(
            *_with_rescaled(graph))} if ctx.opset >= MIN_OPSET else {})
        scanned_maxima = (scan_running_maxima(graph, ctx.opset, taken, max_reasons) if rescaled_before else [])
        # Decays and drives computed inside the loop: replayed over all positions, read as steps of the result.
        rescaled_by_scans = frozenset(add for scanned in scanned_maxima
                                      for add in rescaled_before[id(scanned.running.maxes[0])])
        replayed = (replay_step_operands(graph, ctx.opset, taken, operand_misses, allow_offset=bool(scanned_maxima),
                                         branching=rescaled_by_scans) if ctx.opset >= MIN_OPSET else [])
        report = find_recurrences(graph, gathered=rescaled_by_scans)
        # a state read alone keeps every chain its maximum rescales unrolled, decided before any re-rolls (a re-rolled
        # num reads its Gathers where den's Div read num_t), all alike: num and den held relative to different m_t
        # would make their ratio wrong
        rescaled_states = {id(node.outputs[0]) for node in graph.nodes if id(node) in rescaled_by_scans}
        maxima_of = {add: first for first, adds in rescaled_before.items() for add in adds}

        def _max_of(rec: Recurrence) -> Optional[int]:
            return next((maxima_of[id(node)] for node in rec.nodes if id(node) in maxima_of), None)

        raw_reads: dict[int, str] = {}
        for rec in report.recurrences:
            reason = _raw_state_read(rec, rescaled_states) if _max_of(rec) is not None else None
            if reason is not None:
                raw_reads.setdefault(_max_of(rec), f"{reason} (at '{rec.anchor}')")
        recurrences = []
        zeros_broadcast, zeros_notes = _zeros_not_proven_within_b0(graph, report.recurrences)
        for rec in report.recurrences:
            refusal = _opset_refusal(ctx.opset) or _replay_refusal(rec, ctx.opset)
            if refusal is None:
                recurrences.append(rec)
            else:
                report.rejections.append(Rejection(rec.anchor, rec.length, refusal))
        report.recurrences = recurrences
        notes = write_notes + zeros_notes + [str(rejection) for rejection in report.rejections]
        # Shapes only when some recurrence may take another form or lose its unit axes (inference
        # costs seconds on a naive export).
        shapes, symbolic = {}, False
        if report.recurrences and {self.form, self.state_form} & TAKES_SHAPES:
            shapes, symbolic = symbolic_partial_shapes(graph), True   # sizes along the scan axis of the decays' factors
        elif report.recurrences and (self.state_form not in ("same", self.form) or self.drop_unit_axes):
            shapes = partial_shapes(graph)
        # Sizes of the scanned axes the graph does not declare, inferred (only then: seconds on a naive export); by
        # ONNX Runtime's symbolic inference where ONNX's leaves one unknown (an operand of unknown size is sliced)
        axis_shapes = (shapes or partial_shapes(graph)
                       if any(_operands_of_unknown_length(rec) for rec in report.recurrences) else {})
        if axis_shapes and not symbolic and any(_operands_of_unknown_length(rec, axis_shapes)
                                                for rec in report.recurrences):
            axis_shapes = symbolic_partial_shapes(graph)
        self.forms_used = set()
        lowered = part_of_axis = 0
        rerolled: list[Recurrence] = []
        for index, rec in enumerate(report.recurrences):
            dtype = element_type(rec.decay) or np.float32
            builder = GraphBuilder(graph, ctx.opset, prefix=f"reroll_scans/scan{index}", dtype=dtype, taken=taken)
            form = (self.state_form if self.state_form != "same" and shapes and _decays_per_state(rec, shapes)
                    else self.form)
            windowed = _operands_to_slice(rec, axis_shapes)
            decays = Decays.of(builder, rec.decay)
            chunk = self.state_chunk if form != self.form and self.state_chunk else self.chunk
            refusal = (_log_space_refusal(form, decays)
                       or table_refusal(form, rec.length, chunk, self.carry_shifts, self.one_chunk_up_to))
            other = self.state_form if self.state_form not in ("same", form) else None
            if refusal is not None and other is not None and _log_space_refusal(form, decays) is not None:
                # `form` sums log a_i and these decays may be <= 0: the state form, if it takes them
                # (tpu's batched-doubling multiplies decays: a gated RNN's decays of any sign)
                other_chunk = self.state_chunk or self.chunk
                if (_log_space_refusal(other, decays) is None and table_refusal(
                        other, rec.length, other_chunk, self.carry_shifts, self.one_chunk_up_to) is None):
                    form, chunk, refusal = other, other_chunk, None
            rescaled_chain = any(id(node) in rescaled_by_scans for node in rec.nodes)
            if refusal is None and rescaled_chain:
                refusal = raw_reads.get(_max_of(rec))
            if refusal is None and rescaled_chain and form in OVERFLOWS_PAST:
                # decays exp(m_{t-1} + w - m_t) have no bound below: a chunk's cumulative decay may be past what the
                # form inverts in float32 (RWKV's random-init export: exp(122) within 7 steps); the state form, if safe
                other_chunk = self.state_chunk or self.chunk
                if (other is not None and other not in OVERFLOWS_PAST and _log_space_refusal(other, decays) is None
                        and table_refusal(other, rec.length, other_chunk, self.carry_shifts,
                                          self.one_chunk_up_to) is None):
                    form, chunk = other, other_chunk
                else:
                    refusal = _rescaled_overflow_refusal(form)
            if refusal is not None:
                report.rejections.append(Rejection(rec.anchor, rec.length, refusal))
                notes.append(str(report.rejections[-1]))
                continue
            # (zeros added to the drives may have a size where the decays have 1)
            unit_axes = (_unit_axes_after_scan(rec, shapes) if self.drop_unit_axes and id(rec) not in zeros_broadcast
                         else [])
            lowered += bool(unit_axes)
            reroll(graph, rec, builder, form, chunk, shapes, unit_axes, self.dense_carry, self.carry_shifts, decays,
                   self.one_chunk_up_to, zeros_broadcast=id(rec) in zeros_broadcast, windowed=windowed,
                   first_decay_unread=rescaled_chain)
            rerolled.append(rec)
            part_of_axis += bool(windowed)
            self.forms_used.add(form)
            ctx.log(f"re-rolled scan {index}: {rec.length} steps from '{rec.anchor}' ({rec.readout.kind} readout, "
                    f"{form} form{_positions_text(rec, windowed)})")
        taken_nodes = {id(node) for rec in rerolled for node in rec.nodes}
        stacked, kept_squeezed = {id(rec.output) for rec in rerolled}, 0
        for concat in squeezed:   # the keepdim pieces back where no re-rolled scan stacked them
            if id(concat.output) in stacked:
                kept_squeezed += 1
            else:
                restore_keepdim(graph, concat)
        kept_gathered = 0
        for steps in gathered:   # the axis-keeping Slices back where no re-rolled scan took their steps
            if any(id(node) in taken_nodes for node in steps.gathers):
                kept_gathered += 1
            else:
                restore_kept_steps(graph, steps)
        kept_replayed = 0
        for operands in reversed(replayed):   # the steps' own operands back where no scan took the Gathers (last
            # made first: a node two chains share reads the first's Gather where the second's was put back)
            if any(id(node) in taken_nodes for node in operands.gathers):
                kept_replayed += 1
            else:
                restore_step_operands(graph, operands)
        kept_maxima = 0
        for scanned in scanned_maxima:   # the maxima back where no re-rolled scan took a step they rescale
            if rescaled_before[id(scanned.running.maxes[0])] & taken_nodes:
                kept_maxima += 1
            else:
                restore_running_max(graph, scanned)
                max_reasons[id(scanned.running.maxes[0])] = None
        # the Wheres back where no re-rolled scan took their steps (after the operands they read)
        kept_masked = sum(id(step.where) in taken_nodes for step in masked)
        restore_masked(graph, [step for step in masked if id(step.where) not in taken_nodes])
        # the Split back where no re-rolled scan read its pieces, last: it was sliced first, and the steps gathered,
        # squeezed or replayed above read its Slices again when put back (a Split piece read by a kept step axis)
        kept_sliced = 0
        for sliced in sliced_splits:
            if any(id(node) in taken_nodes for node in sliced.slices):
                kept_sliced += 1
            else:
                restore(graph, sliced, remove_slices=not rerolled)
        # Chains no recurrence came from because their operands are computed per step and no one subgraph: say so
        # (else '0 scans found' had no reason), unless the chain was re-rolled or rejected with a reason of its own.
        named = {rejection.anchor for rejection in report.rejections}
        # Steps rescaled by a running maximum (RWKV, xLSTM): named once per Max chain, in place of what their chains
        # gave (nothing where each state also feeds a readout step, or step 0 reading the first maximum's zeros)
        max_notes, rescaled = _running_max_notes(graph, taken_nodes, max_reasons)
        for first_add, miss in operand_misses:
            if first_add not in taken_nodes and miss.anchor not in named and first_add not in rescaled:
                notes.append(str(miss))
        notes.extend(max_notes)
        notes.extend(_substitution_notes(graph))
        if rerolled:
            toposort(graph.cleanup())
        elif order is not None and all(id(node) in order for node in graph.nodes):
            # every piece put back: the graph as it was, in its order too (a RankMap built while the Gathers made
            # for kept-axis Slices stood after their readers sorted the graph, and the readers stayed moved: fuzz23)
            graph.nodes.sort(key=lambda node: order[id(node)])
        stats = {
            "rerolled": len(rerolled),
            "steps": sum(rec.length for rec in rerolled),
            "rejected": len(report.rejections),
        }
        if self.drop_unit_axes:
            stats["unit_axes_dropped"] = lowered
        if part_of_axis:   # chains over part of their step axis, its other positions sliced off
            stats["part_of_axis"] = part_of_axis
        if stacked_writes:
            stats["buffer_writes_stacked"] = stacked_writes
        if kept_sliced:
            stats["split_pieces_sliced"] = kept_sliced
        if kept_squeezed:
            stats["keepdim_pieces_squeezed"] = kept_squeezed
        if kept_gathered:
            stats["step_axis_pieces_gathered"] = kept_gathered
        if kept_replayed:
            stats["step_operands_replayed"] = kept_replayed
        if kept_masked:
            stats["masked_steps"] = kept_masked
        if kept_maxima:
            stats["running_maxima_scanned"] = kept_maxima
        if not rerolled:
            notes.insert(0, "0 scans found")
        return PassResult(changed=bool(rerolled or stacked_writes), stats=stats, notes=notes)

    def non_finite_hint(self) -> Optional[str]:
        risky = sorted(form for form in getattr(self, "forms_used", ()) if form in OVERFLOWS_PAST)
        if not risky:
            return None
        bounds = ", ".join(f"{form} past ~{OVERFLOWS_PAST[form]}" for form in risky)
        return (f"the {'/'.join(risky)} scan form (reroll-scans, chunk {self.chunk}) overflows float32 once one "
                f"chunk's |A| * sum(dt) is too large ({bounds}); the parallel and batched-doubling forms never "
                "overflow (--pipeline cpu; tpu for d_state > 1)")

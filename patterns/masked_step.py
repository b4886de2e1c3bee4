"""The masked step of an unrolled scan: `h = torch.where(m_t, a_t * h + b_t, h)` (padding masks).

Where the mask is off the state is kept, where it is on the step is taken, so the masked step is the linear step

    h_t = where(m_t, a_t, 1) * h_{t-1} + where(m_t, b_t, 0)

exactly (1 * h + 0 is h in floating point, for every finite or infinite h), a step of the recurrence of
patterns/linear_recurrence.py with the decay where(m_t, a_t, 1) and the drive where(m_t, b_t, 0). TorchScript traces
it as Where(cond, Add(Mul(a_t, h), b_t), h); `torch.where(~m_t, h, a_t * h + b_t)` as Where(Not(m_t), h, Add(..)): the
step in the else branch, the decay where(c, 1, a_t), the drive where(c, 0, b_t). The cond is whatever the trace left
(Unsqueezes of a Gather of the mask, a Reshape, a Not): it is read as it is.

A plain step h = a_t * h + b_t in a chain with masked steps (`torch.where` on some positions only: a prefix never
padded, left padding of at most k positions) is the masked step with m_t = 1 (`PlainStep`): where(1, a_t, 1) * h +
where(1, b_t, 0) is a_t * h + b_t exactly, so the whole chain is one recurrence.

`find_masked_steps` returns the Wheres that are such steps (`MaskedStep`, what passes/masked_steps.py rewrites), the
plain steps linked to them (`PlainStep`: Add(Mul(a_t, h), b_t) whose h is a step's output or whose output is a step's
state, a_t and b_t read like the masked steps' own) and the near-misses (`MaskedMiss`): a Where whose branch is a step
Add(Mul(x, s), b) of another such Where's output s, but whose other branch is not that state (`torch.where(m, a * h +
b, h0)`), or whose step is read by more than the Where. `steps_before` links any of them into chains.
`find_float_masked_steps`: the float-mask spellings `m * (a*h + b) + (1 - m) * h` and `h + m * (a*h + b - h)`
(`FloatMaskedStep`), the linear step with decay m a + 1 - m and drive m b up to rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from patterns.graph_query import constant_value, producer
from patterns.no_ops import see_through


class _LinearStepOperands:
    """The operands of a step's Add(Mul(a_t, h), b_t), for every kind of step below: its fields `add`, `mul`,
    `mul_side` (the Add's input that is the Mul's output) and `state_side` (the Mul's input that is the state h)."""
    add: gs.Node
    mul: gs.Node
    mul_side: int
    state_side: int

    @property
    def state(self) -> gs.Tensor:
        return self.mul.inputs[self.state_side]

    @property
    def decay(self) -> gs.Tensor:
        return self.mul.inputs[1 - self.state_side]

    @property
    def drive(self) -> gs.Tensor:
        return self.add.inputs[1 - self.mul_side]


@dataclass
class MaskedStep(_LinearStepOperands):
    where: gs.Node
    step_branch: int       # the Where's input (1: then, 2: else) that holds the step Add(Mul(a_t, h), b_t)
    add: gs.Node           # the step's Add
    mul: gs.Node           # its Mul
    mul_side: int          # the Add's input that is the Mul's output
    state_side: int        # the Mul's input that is the state h (the kept branch, through no-ops)

    @property
    def cond(self) -> gs.Tensor:
        return self.where.inputs[0]

    @property
    def node(self) -> gs.Node:
        """The node whose output is the step's state (the Where)."""
        return self.where

    @property
    def output(self) -> gs.Tensor:
        return self.where.outputs[0]


@dataclass
class PlainStep(_LinearStepOperands):
    """A linear step Add(Mul(a_t, h), b_t) in a chain with masked steps: the masked step with m_t = 1."""
    add: gs.Node
    mul: gs.Node
    mul_side: int
    state_side: int
    cond = None            # (no mask: every position takes the step)

    @property
    def node(self) -> gs.Node:
        return self.add

    @property
    def output(self) -> gs.Tensor:
        return self.add.outputs[0]


@dataclass
class MaskedMiss:
    """A Where that looks like a masked step in a chain of them, and is not one: it keeps `kept`, not the state its
    step reads (`state`, another such Where's output); or its step is masked and also read elsewhere, by `readers` (the
    nodes other than the Where that read the step's Add, or its Mul's other readers)."""
    where: gs.Node
    add: gs.Node
    state: gs.Tensor
    kept: Optional[gs.Tensor] = None
    readers: tuple = ()

    @property
    def output(self) -> gs.Tensor:
        return self.where.outputs[0]


def steps_before(steps: list) -> dict[int, object]:
    """id(step) -> the step before it: the one whose output its state is (through no-ops). `steps`: MaskedStep,
    PlainStep or MaskedMiss (anything with `state` and `output`)."""
    by_output = {id(step.output): step for step in steps}
    before = {}
    for step in steps:
        previous = by_output.get(id(see_through(step.state)[0]))
        if previous is not None and previous is not step:
            before[id(step)] = previous
    return before


def _steps_of(where: gs.Node):
    """(branch, Add, Mul, mul_side) for each branch of `where` that is Add(Mul(x, y), z)."""
    for branch in (1, 2):
        add = producer(where.inputs[branch])
        if add is None or add.op != "Add" or add.domain or len(add.inputs) != 2 or len(add.outputs) != 1:
            continue
        for mul_side in (0, 1):
            mul = producer(add.inputs[mul_side])
            if mul is not None and mul.op == "Mul" and not mul.domain and len(mul.inputs) == 2:
                yield branch, add, mul, mul_side


def _same_value(a: gs.Tensor, b: gs.Tensor) -> bool:
    """`a` and `b` are one tensor through no-op nodes, or constants of one value, type and shape (TorchScript writes
    the zeros a first step multiplies and the zeros it keeps as two Constants)."""
    origin_a, origin_b = see_through(a)[0], see_through(b)[0]
    if origin_a is origin_b:
        return True
    value_a, value_b = constant_value(origin_a), constant_value(origin_b)
    return (value_a is not None and value_b is not None and value_a.dtype == value_b.dtype
            and value_a.shape == value_b.shape and bool(np.array_equal(value_a, value_b)))


def find_masked_steps(graph: gs.Graph) -> tuple[list[MaskedStep], list[MaskedMiss]]:
    """The Wheres of `graph` that are masked steps, each in a chain of at least two (its state another one's output or
    its output another one's state), and the near-misses among Wheres whose step reads another such Where's output."""
    wheres = [node for node in graph.nodes if node.op == "Where" and not node.domain and len(node.inputs) == 3
              and len(node.outputs) == 1 and any(True for _ in _steps_of(node))]
    outputs = {id(node.outputs[0]) for node in wheres}
    steps: list[MaskedStep] = []
    misses: list[MaskedMiss] = []
    for where in wheres:
        found, miss = None, None
        for branch, add, mul, mul_side in _steps_of(where):
            kept = where.inputs[3 - branch]
            for state_side in (0, 1):
                state = mul.inputs[state_side]
                if _same_value(state, kept):
                    found = found or MaskedStep(where, branch, add, mul, mul_side, state_side)
                elif id(see_through(state)[0]) in outputs and miss is None:
                    miss = MaskedMiss(where, add, state, kept=kept)
        if found is not None:
            others = [node for node in found.add.outputs[0].outputs if node is not where]
            if others or len(found.mul.outputs[0].outputs) != 1:
                readers = others or [node for node in found.mul.outputs[0].outputs if node is not found.add]
                misses.append(MaskedMiss(where, found.add, found.state, readers=tuple(readers)))
            else:
                steps.append(found)
        elif miss is not None:
            misses.append(miss)
    steps += _plain_steps(graph, steps, {id(miss.add) for miss in misses})
    # only steps in chains of two or more (a masked step and another, or a plain step, before or after it)
    linked = set()
    for key, previous in steps_before(steps).items():
        linked.update((key, id(previous)))
    return [step for step in steps if id(step) in linked], misses


def _operand_key(tensor: gs.Tensor) -> tuple:
    """What a step's decay or drive is read from, cheaply: (op, its data input) for a step slice (Gather, Slice,
    through Squeezes and Unsqueezes), (op, None) for one computed at each step."""
    origin = see_through(tensor)[0]
    node = producer(origin)
    while node is not None and node.op in ("Squeeze", "Unsqueeze") and node.inputs:
        node = producer(node.inputs[0])
    if node is None:
        return ("tensor", id(origin))
    return (node.op, id(node.inputs[0]) if node.op in ("Gather", "Slice") and node.inputs else None)


def _plain_step(add: gs.Node, mul_side: int, state_side: int, keys: tuple) -> Optional[PlainStep]:
    """Add(Mul(.., ..), ..) read as a plain step with its state at `state_side` of the Mul at `mul_side`, if its decay
    and drive are read as the masked steps' are (`keys`: their decays' and drives' _operand_key sets)."""
    if add.op != "Add" or add.domain or len(add.inputs) != 2 or len(add.outputs) != 1:
        return None
    mul = producer(add.inputs[mul_side])
    if mul is None or mul.op != "Mul" or mul.domain or len(mul.inputs) != 2 or len(mul.outputs) != 1:
        return None
    step = PlainStep(add, mul, mul_side, state_side)
    if _operand_key(step.decay) in keys[0] and _operand_key(step.drive) in keys[1]:
        return step
    return None


def _plain_steps(graph: gs.Graph, masked: list[MaskedStep], excluded: set[int]) -> list[PlainStep]:
    """The plain steps linked, step by step, to `masked`: backward from a state some step reads (its Mul's state side
    the one after it's, or the other), forward to a Mul that reads a step's output and an Add that reads it. Adds of
    masked steps and `excluded` (near-misses' steps) are none."""
    if not masked:
        return []
    keys = ({_operand_key(step.decay) for step in masked}, {_operand_key(step.drive) for step in masked})
    taken = {id(step.add) for step in masked} | excluded
    found: list[PlainStep] = []
    pending: list = list(masked)
    while pending:
        step = pending.pop()
        links = []
        add = producer(see_through(step.state)[0])   # backward: the step before, if a plain one
        if add is not None and id(add) not in taken:
            for mul_side in (step.mul_side, 1 - step.mul_side):
                for state_side in (step.state_side, 1 - step.state_side):
                    links.append(_plain_step(add, mul_side, state_side, keys))
        for mul in list(step.output.outputs):   # forward: the step after, if a plain one
            if mul.op != "Mul" or len(mul.inputs) != 2 or len(mul.outputs) != 1:
                continue
            for add in list(mul.outputs[0].outputs):
                if id(add) not in taken and add.op == "Add" and len(add.inputs) == 2:
                    sides = [side for side in (0, 1) if add.inputs[side] is mul.outputs[0]]
                    states = [side for side in (0, 1) if mul.inputs[side] is step.output]
                    if len(sides) == 1 and len(states) == 1:
                        links.append(_plain_step(add, sides[0], states[0], keys))
        for link in links:
            if link is not None and id(link.add) not in taken:
                taken.add(id(link.add))
                found.append(link)
                pending.append(link)
    return found


@dataclass
class FloatMaskedStep(_LinearStepOperands):
    """A step masked by a float mask m (transformers-style padding multiply): `m * (a*h + b) + (1 - m) * h` ("blend")
    or `h + m * (a*h + b - h)` ("delta"), `node` the outer Add. Algebraically the linear step with decay m a + 1 - m
    and drive m b for any m (a soft mask too); in floating point equal to it up to rounding (passes/masked_steps.py
    says how far). `inner`: the nodes between the step Add(Mul(a, h), b) and `node` (the blend's m * (..) and
    (1 - m) * h, the delta's (..) - h and m * (..)), read by nothing else."""
    node: gs.Node
    add: gs.Node
    mul: gs.Node
    mul_side: int
    state_side: int
    mask: gs.Tensor
    spelling: str
    inner: tuple = ()
    cond = None

    @property
    def output(self) -> gs.Tensor:
        return self.node.outputs[0]


def _binary(tensor: gs.Tensor, op: str) -> Optional[gs.Node]:
    node = producer(tensor)
    if node is None or node.op != op or node.domain or len(node.inputs) != 2 or len(node.outputs) != 1:
        return None
    return node


def _only_reader(tensor: gs.Tensor, node: gs.Node) -> bool:
    """`node` is the one node that reads `tensor` (a graph output among them: find_float_masked_steps)."""
    return len(tensor.outputs) == 1 and tensor.outputs[0] is node


def _linear_steps(tensor: gs.Tensor):
    """(Add, Mul, mul_side, state_side) for `tensor` = Add(Mul(x, y), z), each reading of which side is the state."""
    add = _binary(tensor, "Add")
    if add is None:
        return
    for mul_side in (0, 1):
        mul = _binary(add.inputs[mul_side], "Mul")
        if mul is not None:
            for state_side in (0, 1):
                yield add, mul, mul_side, state_side


def _is_one(tensor: gs.Tensor) -> bool:
    value = constant_value(tensor)
    return value is not None and value.size == 1 and float(value.reshape(-1)[0]) == 1.0


def _float_masked_step(node: gs.Node) -> Optional[FloatMaskedStep]:
    """`node` (an Add) as a float-masked step: blend Add(Mul(m, S), Mul(Sub(1, m), h)) or delta Add(h, Mul(m, Sub(S,
    h))), S = Add(Mul(a, h), b), operands of Add and Mul in either order, h the same tensor (through no-ops) in both
    places, and every node between S and `node` read by the next alone."""
    if node.op != "Add" or node.domain or len(node.inputs) != 2 or len(node.outputs) != 1:
        return None
    for side in (0, 1):
        first, second = node.inputs[side], node.inputs[1 - side]
        # blend: first = m * S, second = (1 - m) * h
        scaled, kept = _binary(first, "Mul"), _binary(second, "Mul")
        if scaled is not None and kept is not None:
            for s_side in (0, 1):
                mask, step = scaled.inputs[1 - s_side], scaled.inputs[s_side]
                for k_side in (0, 1):
                    one_minus = _binary(kept.inputs[k_side], "Sub")
                    if (one_minus is None or not _is_one(one_minus.inputs[0])
                            or see_through(one_minus.inputs[1])[0] is not see_through(mask)[0]):
                        continue
                    held = kept.inputs[1 - k_side]
                    for add, mul, mul_side, state_side in _linear_steps(step):
                        if (_same_value(mul.inputs[state_side], held) and _only_reader(step, scaled)
                                and _only_reader(first, node) and _only_reader(second, node)
                                and _only_reader(mul.outputs[0], add)):
                            return FloatMaskedStep(node, add, mul, mul_side, state_side, mask, "blend",
                                                   (scaled, kept))
        # delta: first = h, second = m * (S - h)
        scaled = _binary(second, "Mul")
        if scaled is None:
            continue
        for s_side in (0, 1):
            mask, difference = scaled.inputs[1 - s_side], _binary(scaled.inputs[s_side], "Sub")
            if difference is None or not _same_value(difference.inputs[1], first):
                continue
            for add, mul, mul_side, state_side in _linear_steps(difference.inputs[0]):
                if (_same_value(mul.inputs[state_side], first) and _only_reader(difference.inputs[0], difference)
                        and _only_reader(difference.outputs[0], scaled) and _only_reader(second, node)
                        and _only_reader(mul.outputs[0], add)):
                    return FloatMaskedStep(node, add, mul, mul_side, state_side, mask, "delta", (difference, scaled))
    return None


def find_float_masked_steps(graph: gs.Graph) -> list[FloatMaskedStep]:
    """The float-masked steps of `graph` in chains of two or more (one's state another's output)."""
    outputs = {id(tensor) for tensor in graph.outputs}
    steps = [step for step in (_float_masked_step(node) for node in graph.nodes if node.op == "Add")
             if step is not None and not any(id(node.outputs[0]) in outputs
                                             for node in (step.add, *step.inner))]
    linked = set()
    for key, previous in steps_before(steps).items():
        linked.update((key, id(previous)))
    return [step for step in steps if id(step) in linked]


# Ops that index or reshape a tensor without changing its values (a mask's step read and broadcast).
_VALUE_KEEPING = frozenset({"Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Gather", "Slice", "Transpose",
                            "Expand"})
_BOOLEAN_OPS = frozenset({"Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor",
                          "IsNaN", "IsInf"})


def is_cast_bool(mask: gs.Tensor, limit: int = 16) -> bool:
    """`mask` holds only 0 and 1: a Cast of a bool tensor (`mask.to(x.dtype)`), read through ops that index or reshape
    it (its step m[:, t, None, None]), so that m * (a h + b) + (1 - m) * h is torch.where(m, a h + b, h)."""
    tensor = mask
    for _ in range(limit):
        node = producer(tensor)
        if node is None or not node.inputs:
            return False
        if node.op == "Cast":
            source = node.inputs[0]
            made = producer(source)
            return (made is not None and made.op in _BOOLEAN_OPS and not made.domain) or (
                getattr(source, "dtype", None) is not None and np.dtype(source.dtype) == np.bool_)
        if node.op not in _VALUE_KEEPING:
            return False
        tensor = node.inputs[0]
    return False

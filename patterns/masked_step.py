"""The masked step of an unrolled scan: `h = torch.where(m_t, a_t * h + b_t, h)` (padding masks).

Where the mask is off the state is kept, where it is on the step is taken, so the masked step is the linear step

    h_t = where(m_t, a_t, 1) * h_{t-1} + where(m_t, b_t, 0)

exactly (1 * h + 0 is h in floating point, for every finite or infinite h), a step of the recurrence of
patterns/linear_recurrence.py with the decay where(m_t, a_t, 1) and the drive where(m_t, b_t, 0). TorchScript traces
it as Where(cond, Add(Mul(a_t, h), b_t), h); `torch.where(~m_t, h, a_t * h + b_t)` as Where(Not(m_t), h, Add(..)): the
step in the else branch, the decay where(c, 1, a_t), the drive where(c, 0, b_t). The cond is whatever the trace left
(Unsqueezes of a Gather of the mask, a Reshape, a Not): it is read as it is.

`find_masked_steps` returns the Wheres that are such steps (`MaskedStep`, what passes/masked_steps.py rewrites) and the
near-misses (`MaskedMiss`): a Where whose branch is a step Add(Mul(x, s), b) of another such Where's output s, but whose
other branch is not that state (`torch.where(m, a * h + b, h0)`), or whose step is read by more than the Where.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from patterns.graph_query import constant_value, producer
from patterns.no_ops import see_through


@dataclass
class MaskedStep:
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
    def state(self) -> gs.Tensor:
        return self.mul.inputs[self.state_side]

    @property
    def decay(self) -> gs.Tensor:
        return self.mul.inputs[1 - self.state_side]

    @property
    def drive(self) -> gs.Tensor:
        return self.add.inputs[1 - self.mul_side]


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
    # only steps in chains of them: a state that is another masked step's output, or an output another one's state
    by_output = {id(step.where.outputs[0]): step for step in steps}
    linked = set()
    for step in steps:
        previous = by_output.get(id(see_through(step.state)[0]))
        if previous is not None and previous is not step:
            linked.update((id(step), id(previous)))
    return [step for step in steps if id(step) in linked], misses

"""One per-step subgraph, found by comparing the unrolled steps with each other.

An unrolled loop repeats the same computation at every step; only the step index changes.
`match_step_templates` walks the subgraphs that compute y_0, y_1, ... backwards in lockstep
from each step's output, and records what step 0's subgraph is made of:

  state     the step's own state x_i (the walk stops there)
  shared    a tensor every step reads (a weight, a whole-sequence tensor such as C)
  constant  a constant with the same value at every step
  stepped   a constant that changes from step to step: it must be the step index i, used
            to take step i of a shared tensor (Gather(C, i), Slice(C, i, i + 1))

Anything else that differs between steps is a near-miss, reported at the first node where
step k departs from step 0. The template is then checked to be affine in the state (the
readout of a linear recurrence is linear: y_i = f(x_i, c_i) with f linear in x_i, plus
terms that do not depend on it) and is replayed over all steps at once by the re-roller
(passes/scan_forms/step_replay.py), which adds a step axis to every tensor that varies.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from patterns.graph_query import constant_value, describe, node_axes, producer
from patterns.ranks import RankMap

MAX_TEMPLATE_NODES = 64

# How a template tensor depends on the state, in the order a readout may combine them.
FREE, AFFINE, NONLINEAR = "free", "affine", "nonlinear"

# Ops that carry an affine function of the state to an affine function (given the other inputs free).
_SHAPE_OPS = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Flatten", "Expand",
              "Gather", "Slice", "Concat", "Neg", "ReduceSum", "ReduceMean"}
_SUMS = {"Add", "Sub"}
_PRODUCTS = {"Mul", "MatMul", "Einsum", "Conv"}   # affine when exactly one operand depends on the state


class TemplateMismatch(Exception):
    pass


@dataclass
class SteppedUse:
    """A constant input of a template node that changes with the step."""
    node_index: int          # position of the node in StepTemplate.nodes
    input_index: int
    values: list             # one np.ndarray per step
    # how far from the chain's positions this read is, the same at every step (`C[:, t + 1]` in the readout while
    # the chain steps t): the replay takes the source's positions from first_position + offset
    offset: int = 0


@dataclass
class StepTemplate:
    nodes: list                       # step 0's nodes, producers first
    output: gs.Tensor                 # step 0's y_0
    state: gs.Tensor                  # step 0's x_0
    ranks: dict = field(default_factory=dict)      # id(tensor) -> rank, for every template tensor
    stepped: list = field(default_factory=list)    # SteppedUse
    all_nodes: list = field(default_factory=list)  # every step's template nodes

    def stepped_inputs(self, node_index: int) -> dict[int, SteppedUse]:
        return {use.input_index: use for use in self.stepped if use.node_index == node_index}


def _same_attrs(a: gs.Node, b: gs.Node) -> bool:
    if a.attrs.keys() != b.attrs.keys():
        return False
    for key, value in a.attrs.items():
        other = b.attrs[key]
        if isinstance(value, gs.Graph) or isinstance(other, gs.Graph):
            return False
        if isinstance(value, gs.Constant) or isinstance(other, gs.Constant):
            if not (isinstance(value, gs.Constant) and isinstance(other, gs.Constant)
                    and np.array_equal(np.asarray(value.values), np.asarray(other.values))):
                return False
        elif value != other:
            return False
    return True


class _Lockstep:
    """Walks step k's subgraph beside step 0's, from the outputs back to the states."""

    def __init__(self, state0: gs.Tensor, statek: gs.Tensor, position: int, other_states: set[int]) -> None:
        self.state0, self.statek, self.position = state0, statek, position
        self.other_states = other_states
        self.pairs: dict[int, gs.Tensor] = {}       # id(step-0 tensor) -> step-k tensor
        self.nodes0: list[gs.Node] = []
        self.nodesk: list[gs.Node] = []
        self.seen: set[int] = set()
        self.varying: dict[tuple, np.ndarray] = {}  # (id(step-0 node), input index) -> step-k value

    def walk(self, t0: gs.Tensor, tk: gs.Tensor) -> None:
        if id(t0) in self.pairs:
            if self.pairs[id(t0)] is not tk:
                raise TemplateMismatch(f"step {self.position} reads '{tk.name}' where step 0 reuses '{t0.name}'")
            return
        self.pairs[id(t0)] = tk
        if t0 is self.state0 or tk is self.statek:
            if not (t0 is self.state0 and tk is self.statek):
                raise TemplateMismatch(f"step {self.position} reads '{tk.name}' where step 0 reads '{t0.name}' "
                                       "(the state enters at a different place)")
            return
        if t0 is tk:
            if id(t0) in self.other_states:
                raise TemplateMismatch(f"the readout reads state '{t0.name}' of another step")
            return
        if id(tk) in self.other_states or id(t0) in self.other_states:
            raise TemplateMismatch(f"step {self.position} reads '{tk.name}', the state of another step")
        n0, nk = producer(t0), producer(tk)
        if n0 is None or nk is None:
            raise TemplateMismatch(f"step {self.position} reads '{tk.name}' where step 0 reads '{t0.name}'")
        if (n0.op != nk.op or n0.domain != nk.domain or len(n0.inputs) != len(nk.inputs)
                or len(n0.outputs) != len(nk.outputs) or n0.outputs.index(t0) != nk.outputs.index(tk)
                or not _same_attrs(n0, nk)):
            raise TemplateMismatch(f"step {self.position} departs from step 0 at {describe(nk)} "
                                   f"(step 0 has {describe(n0)} there)")
        if id(n0) in self.seen:
            return
        self.seen.add(id(n0))
        if len(self.seen) > MAX_TEMPLATE_NODES:
            raise TemplateMismatch(f"the per-step subgraph has more than {MAX_TEMPLATE_NODES} nodes")
        for index, (i0, ik) in enumerate(zip(n0.inputs, nk.inputs)):
            v0, vk = constant_value(i0), constant_value(ik)
            if v0 is not None and vk is not None:
                if v0.dtype == vk.dtype and v0.shape == vk.shape and np.array_equal(v0, vk):
                    continue
                if np.issubdtype(v0.dtype, np.integer) and v0.shape == vk.shape and v0.size == 1:
                    self.varying[(id(n0), index)] = vk
                    continue
                raise TemplateMismatch(f"constant input {index} of {describe(nk)} differs from step 0's "
                                       f"and is not a step index")
            self.walk(i0, ik)
        for o0, ok in zip(n0.outputs, nk.outputs):   # other outputs of a multi-output node pair up too
            self.pairs.setdefault(id(o0), ok)
        self.nodes0.append(n0)
        self.nodesk.append(nk)


def _stepped_uses(template_nodes: list[gs.Node], walks: list[_Lockstep], positions: list[int],
                  allow_offset: bool = False) -> list[SteppedUse]:
    keys = set()
    for walk in walks:
        keys.update(walk.varying)
    index_of = {id(n): i for i, n in enumerate(template_nodes)}
    uses = []
    offsets: dict[int, int] = {}   # a node's offset, from its index or start (its end must keep to it)
    for node_id, input_index in sorted(keys, key=lambda key: (index_of[key[0]], key[1])):
        node = template_nodes[index_of[node_id]]
        first = constant_value(node.inputs[input_index])
        values = [first] + [walk.varying.get((node_id, input_index), first) for walk in walks]
        offset = _check_step_index(node, input_index, values, positions, offsets.get(node_id), allow_offset)
        offsets.setdefault(node_id, offset)
        uses.append(SteppedUse(index_of[node_id], input_index, values, offset))
    return uses


def _check_step_index(node: gs.Node, input_index: int, values: list, positions: list[int],
                      offset: Optional[int] = None, allow_offset: bool = False) -> int:
    """A stepped constant must take step i of a tensor: Gather's index, or Slice's start (and end = i + 1), at the
    chain's positions or, `allow_offset`, at one offset from them at every step (`c[t + 1]`; its step 0's, not below
    position 0); the offset (`offset`: the node's own, from its index or start, where known)."""
    flat = [int(np.asarray(v).reshape(-1)[0]) for v in values]
    if node.op == "Gather" and input_index == 1:
        expected, what = positions, "index"
    elif node.op == "Slice" and input_index == 1:
        expected, what = positions, "start"
    elif node.op == "Slice" and input_index == 2:
        expected, what = [p + 1 for p in positions], "end"
    else:
        raise TemplateMismatch(f"input {input_index} of {describe(node)} changes from step to step "
                               "(only a Gather index or Slice start/end may)")
    if offset is None:
        offset = flat[0] - expected[0] if allow_offset and flat[0] >= 0 and flat[0] - expected[0] + min(
            positions) >= 0 else 0
    for step, (value, want) in enumerate(zip(flat, [p + offset for p in expected])):
        if value != want and not (what == "end" and step == len(flat) - 1 and value > want):
            raise TemplateMismatch(f"{describe(node)} {what} is {value} at step {step} (expected {want}: "
                                   "each step must read its own position)")
    return offset


def _state_dependence(template: StepTemplate) -> str:
    """FREE, AFFINE or NONLINEAR for the template output, with the first nonlinear node named."""
    kind: dict[int, str] = {id(template.state): AFFINE}
    for node in template.nodes:
        inputs = [kind.get(id(t), FREE) for t in node.inputs]
        dependent = [k for k in inputs if k != FREE]
        if not dependent:
            result = FREE
        elif NONLINEAR in dependent:
            result = NONLINEAR
        elif node.op in _SHAPE_OPS:
            data_only = all(k == FREE for k in inputs[1:]) or node.op == "Concat"
            result = AFFINE if data_only else NONLINEAR
        elif node.op in _SUMS:
            result = AFFINE
        elif node.op in _PRODUCTS or node.op == "Div":
            sides = [i for i, k in enumerate(inputs) if k != FREE]
            result = AFFINE if len(sides) == 1 and not (node.op == "Div" and sides[0] == 1) else NONLINEAR
        else:
            result = NONLINEAR
        if result == NONLINEAR:
            raise TemplateMismatch(f"the readout is not linear in the state at {describe(node)}")
        for out in node.outputs:
            kind[id(out)] = result
    return kind.get(id(template.output), FREE)


def match_step_templates(outputs: list[gs.Tensor], states: list[gs.Tensor], positions: list[int],
                         ranks: RankMap, allow_offset: bool = False) -> StepTemplate:
    """The template y_i = f(x_i, step i of shared tensors), identical at every step, or TemplateMismatch.
    `allow_offset`: each stepped read may take the chain's positions at an offset of its own (SteppedUse.offset)."""
    state_ids = {id(s) for s in states}
    walks = []
    for position, (output, state) in list(enumerate(zip(outputs, states)))[1:]:
        walk = _Lockstep(states[0], state, positions[position], state_ids - {id(state), id(states[0])})
        walk.walk(outputs[0], output)
        walks.append(walk)
    template_nodes = walks[0].nodes0
    if not template_nodes:
        raise TemplateMismatch("the per-step output is not computed from the state")
    # A walk stops where its step reads step 0's very tensor: a later step reaching a node there that step 1 shared
    # with step 0 (`c[1]` read at steps 0 and 1, `c[2]` at step 2) has no template node to vary (a KeyError until s31)
    template_ids = {id(node) for node in template_nodes}
    for walk in walks[1:]:
        shared = next((node for node in walk.nodes0 if id(node) not in template_ids), None)
        if shared is not None:
            raise TemplateMismatch(f"step {walks[0].position} reads the output of {describe(shared)} as step 0 does, "
                                   f"where step {walk.position} reads its own")
    template = _template_of_walks(template_nodes, outputs[0], states[0], walks, positions, ranks, allow_offset)
    if ranks.rank(states[0]) is not None:
        template.ranks[id(states[0])] = ranks.rank(states[0])
    if _state_dependence(template) != AFFINE:
        raise TemplateMismatch("the per-step output does not depend on the state")
    _check_replayable(template)
    return template


def _template_of_walks(nodes: list, output: gs.Tensor, state: gs.Tensor, walks: list, positions,
                       ranks: RankMap, allow_offset: bool = False) -> StepTemplate:
    """The template of step 0's `nodes`, with which of their inputs each step reads at its own position, every
    step's nodes (to remove once replayed) and the ranks its tensors have."""
    template = StepTemplate(nodes=nodes, output=output, state=state)
    template.stepped = _stepped_uses(nodes, walks, positions, allow_offset)
    template.all_nodes.extend(nodes)
    for walk in walks:
        template.all_nodes.extend(walk.nodesk)
    for node in nodes:
        for tensor in [*node.inputs, *node.outputs]:
            rank = ranks.rank(tensor)
            if rank is not None:
                template.ranks[id(tensor)] = rank
    return template


def _check_replayable(template: StepTemplate) -> None:
    """Reject what the replay cannot batch here, so that the reason reaches --explain."""
    for index, node in enumerate(template.nodes):
        for tensor in node.inputs:
            if tensor is not None and tensor.name and id(tensor) not in template.ranks and constant_value(tensor) is None:
                raise TemplateMismatch(f"rank of '{tensor.name}' (read by {describe(node)}) is unknown")
        if node.op in ("Squeeze", "Unsqueeze") and node_axes(node) is None:
            raise TemplateMismatch(f"{describe(node)} needs constant axes")
        if template.stepped_inputs(index) and node.op == "Slice":
            steps = constant_value(node.inputs[4]) if len(node.inputs) > 4 else np.array([1])
            axes = constant_value(node.inputs[3]) if len(node.inputs) > 3 else np.array([0])
            if steps is None or axes is None or np.asarray(axes).size != 1 or int(np.asarray(steps).reshape(-1)[0]) != 1:
                raise TemplateMismatch(f"{describe(node)} takes a step along one constant axis with step 1 only")
    if id(template.output) not in template.ranks:
        raise TemplateMismatch(f"rank of the per-step output '{template.output.name}' is unknown")


def match_operand_templates(operands: list[gs.Tensor], ranks: RankMap, contiguous: bool = True,
                            allow_offset: bool = False) -> tuple[StepTemplate, list[int]]:
    """A step operand computed afresh at every step from step slices of shared tensors (`dA = torch.exp(delta[:, t,
    :, None] * A)` inside the loop): the template o_i = f(step p_i of shared tensors), identical at every step and
    reading no state, and each step's position p_i (the index its Gathers and Slices take, one position per step,
    p .. p + n - 1 once each in some order, p the lowest: a loop from the second position, over part of an axis); or
    TemplateMismatch. The template's `state` is a stand-in nothing reads. `contiguous` False: the positions need only be
    distinct (a mixed chain's masked steps, passes/masked_steps.py). `allow_offset`: a stepped read may take the
    positions at an offset of its own, the positions being the lowest read's (a running maximum's steps read m at t
    and t + 1: passes/running_max_scan.py)."""
    stand_in = gs.Variable("step_operand_stand_in")
    walks = []
    for position, operand in list(enumerate(operands))[1:]:
        walk = _Lockstep(stand_in, stand_in, position, set())
        walk.walk(operands[0], operand)
        walks.append(walk)
    template_nodes = walks[0].nodes0 if walks else []
    keys = [key for key in walks[0].varying] if walks else []
    if not template_nodes or not keys:
        raise TemplateMismatch("the step operands are not computed from steps of a tensor")
    index_of = {id(n): i for i, n in enumerate(template_nodes)}

    def positions_of(key: tuple) -> list[int]:
        first = constant_value(template_nodes[index_of[key[0]]].inputs[key[1]])
        return [int(np.asarray(value).reshape(-1)[0])
                for value in [first] + [walk.varying.get(key, first) for walk in walks]]

    ordered = sorted(keys, key=lambda key: (index_of[key[0]], key[1]))
    # with offsets, the positions are the lowest read's, so that every other read is at or after them
    key = min(ordered, key=lambda key: positions_of(key)[0]) if allow_offset else ordered[0]
    positions = positions_of(key)
    lowest = min(positions)
    if (sorted(positions) != list(range(lowest, lowest + len(operands))) if contiguous
            else len(set(positions)) != len(positions)):
        stride = positions[1] - positions[0] if len(positions) > 1 else 0
        strided = stride > 1 and positions == list(range(positions[0], positions[0] + stride * len(positions), stride))
        blocks = (f": a step every {stride} positions (a recurrence over blocks of {stride}, as lightning attention's)"
                  if strided else "")
        raise TemplateMismatch(f"the step operands take positions {positions}{blocks}, not {lowest} .. "
                               f"{lowest + len(operands) - 1} once each")
    template = _template_of_walks(template_nodes, operands[0], stand_in, walks, positions, ranks, allow_offset)
    template.ranks[id(stand_in)] = 0
    _check_replayable(template)
    return template, positions

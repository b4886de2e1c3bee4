"""A running maximum that rescales linear steps: why RWKV's and xLSTM's loops are no linear recurrence.

RWKV's CPU path (transformers' `rwkv_linear_attention_cpu`) and xLSTM's mLSTM step keep their exponentials in range
with a stabiliser m_t carried from step to step:

    m_t = Max(m_{t-1} + w_t, k_t)                          # a max-plus recurrence
    s_t = exp(m_{t-1} + w_t - m_t) * s_{t-1} + exp(k_t - m_t) * v_t

Given m, each s is a linear step, but its decay and drive are computed from m_{t-1} and m_t, the states of the max
chain, which no step slice of a tensor gives (there is no cumulative maximum among ONNX ops). `find_running_maxima`
finds the max chains; `rescaled_steps` the Add(Mul(a, s), b) steps whose a or b reads one of them.
passes/running_max_scan.py computes a chain with one w at every step for all steps at once (a max-plus scan), so that
reroll-scans re-rolls the steps it rescales; where it does not, reroll-scans says why they stay unrolled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import onnx_graphsurgeon as gs

from patterns.graph_query import linked_chains, producer
from patterns.no_ops import see_through

MIN_STEPS = 4   # as passes/step_operands.MIN_EXPLAINED_STEPS: shorter Max chains are not named
# How far a step's decay or drive is followed back to a Max of the chain (xLSTM's drive: Mul(Unsqueeze(Exp(Sub(i_t,
# m_t)))), .. ): five nodes to the Max.
_OPERAND_DEPTH = 6


@dataclass
class RunningMax:
    maxes: list   # the Max nodes m_0 .. m_{n-1}, in step order

    @property
    def anchor(self) -> str:
        first = self.maxes[0]
        return first.name or first.outputs[0].name

    @property
    def length(self) -> int:
        return len(self.maxes)


def _previous_max(node: gs.Node, max_by_output: dict) -> Optional[gs.Node]:
    """The Max m_{t-1} that Max `node` reads as Add(m_{t-1}, w) (either order, through no-ops), else None."""
    for tensor in node.inputs:
        add = producer(see_through(tensor)[0])
        if add is None or add.op != "Add" or len(add.inputs) != 2:
            continue
        for side in add.inputs:
            previous = max_by_output.get(id(see_through(side)[0]))
            if previous is not None and previous is not node:
                return previous
    return None


def find_running_maxima(graph: gs.Graph) -> list[RunningMax]:
    """Chains of two-input Max nodes, each reading the one before as Max(m_{t-1} + w_t, k_t), MIN_STEPS or longer
    (a Max with two readers of that form ends its chain, and each reader begins one)."""
    maxes = [node for node in graph.nodes if node.op == "Max" and len(node.inputs) == 2 and len(node.outputs) == 1]
    if not maxes:
        return []
    max_by_output = {id(node.outputs[0]): node for node in maxes}
    before = {id(node): _previous_max(node, max_by_output) for node in maxes}
    return [RunningMax(chain) for chain in linked_chains(maxes, before) if len(chain) >= MIN_STEPS]


def _reached(tensor: gs.Tensor, owners: dict[int, int], depth: int) -> set[int]:
    """The owners (`owners`: id of a node -> the index of its chain) of the nodes among `depth` producers back from
    `tensor`."""
    frontier, seen, reached = [tensor], set(), set()
    for _ in range(depth):
        nodes = []
        for t in frontier:
            node = producer(t)
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if id(node) in owners:
                reached.add(owners[id(node)])
            nodes.append(node)
        frontier = [t for node in nodes for t in node.inputs]
    return reached


def rescaled_steps_of_each(graph: gs.Graph, runnings: list[RunningMax]) -> list[list[gs.Node]]:
    """`rescaled_steps` of each of `runnings`, in one walk of the graph's Adds (one walk per chain cost 3.4 s on 16
    RWKV-like layers of 64 steps, 15,376 nodes, quadratic in the layers: fuzz23)."""
    owners = {id(node): index for index, running in enumerate(runnings) for node in running.maxes}
    found: list[list[gs.Node]] = [[] for _ in runnings]
    if not owners:
        return found
    adds = [node for node in graph.nodes if node.op == "Add" and len(node.inputs) == 2]
    add_outputs = {id(node.outputs[0]) for node in adds}
    for add in adds:
        reached: set[int] = set()
        for mul_side in (0, 1):
            mul = producer(add.inputs[mul_side])
            if mul is None or mul.op != "Mul" or len(mul.inputs) != 2:
                continue
            operands = [add.inputs[1 - mul_side]] + [t for t in mul.inputs
                                                      if id(see_through(t)[0]) not in add_outputs]
            for operand in operands:
                reached |= _reached(operand, owners, _OPERAND_DEPTH)
        for index in sorted(reached):
            found[index].append(add)
    return found


def rescaled_steps(graph: gs.Graph, running: RunningMax) -> list[gs.Node]:
    """The Add(Mul(a, s), b) steps (either operand order) whose a or b reads a Max of `running` within a few nodes,
    in graph order. s, the state, is left out where it is another Add's output (the step before: it reads the Max
    chain through that step's own operands); a first step's zeros or initial state reads no Max."""
    return rescaled_steps_of_each(graph, [running])[0]

"""A running maximum computed for all steps at once, for reroll-scans: RWKV's stabiliser as a max-plus scan.

RWKV's CPU path (transformers' `rwkv_linear_attention_cpu`) carries a running maximum beside its linear states,

    m_t = Max(m_{t-1} + w, k_t)                                     (patterns/running_max.py finds the chains)
    s_t = exp(m_{t-1} + w - m_t) * s_{t-1} + exp(k_t - m_t) * v_t

Given every m_t, each s step is linear with per-step operands computed from steps of a tensor. With w the same
tensor at every step, m_t = max(m_{-1} + (t + 1) w, max_{j <= t}(k_j + (t - j) w)): a prefix scan in the max-plus
semiring. ONNX has no cumulative maximum, so it is built as a doubling (Hillis-Steele) scan over the sequence
X = [m_{-1}, k_0, .., k_{n-1}] along a leading step axis:

    X_t <- Max(X_t, X_{t-d} + d * w)   for t >= d,   d = 1, 2, 4, ..

ceil(log2(n + 1)) rounds of 7 nodes, after which X_t = m_{t-1}. Why doubling and not the chunked or closed form:
the closed form t w + cummax(k_j - j w) subtracts j w, which grows with the length, from k_j and adds it back,
losing k's low bits to cancellation (and a -1e38 initial maximum would be swallowed by any large j w); each round
here adds one d * w (one rounding of a product of a small integer, exact for d a power of two) to an element the
sequential loop also reaches by additions of w, so the result stays within a few roundings of the loop's own (the
window sums the brief asked for are d * w itself where w is constant). A per-step w (xLSTM's log forget gate) would
need the window sums of w carried beside X; not built: such a chain keeps its named reason.

Each reader of m_t then reads Gather(X, t + 1) and the first step's Add reads Gather(X, 0) for m_{-1}, so that its
decays and drives are the same subgraph at every step (passes/step_operands.py replays them, the Gather at t and
t + 1 an offset of one apart); `restore` puts the graph back where no re-rolled scan took the steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.piece_reads import Reads, read_back, read_instead, remove_made
from passes.scan_forms.step_replay import ReplayError, replay_over_steps
from patterns.graph_query import element_type, producer
from patterns.no_ops import see_through
from patterns.ranks import RankMap
from patterns.running_max import RunningMax, find_running_maxima
from patterns.step_template import TemplateMismatch, match_operand_templates


@dataclass
class ScannedMax:
    running: RunningMax
    made: list                                  # the nodes built: k replayed, the scan, the Gathers
    gathers: list = field(default_factory=list)   # the Gather nodes the steps now read
    reads: Reads = field(default_factory=list)


@dataclass
class _Steps:
    initial: gs.Tensor   # m_{-1} as the first Add reads it; m_{-1} + w itself where `folded`
    initial_index: int   # the first Add's input index that reads it (-1 where `folded`)
    w: gs.Tensor
    keys: list        # k_t, each Max's other input
    first_add: Optional[gs.Node] = None
    folded: bool = False   # the first Max reads m_{-1} + w as one tensor (the dynamo exporter folds -1e38 + w)


def _add_of(node: gs.Node, previous: Optional[gs.Tensor], w: Optional[gs.Tensor]) -> Optional[tuple]:
    """(the Add, Max's input index of it, the Add's input index of m_{t-1}) where Max `node` reads Add(m_{t-1}, w):
    `previous` m_{t-1} (None at the first step: any tensor beside `w`), `w` (None: any tensor beside `previous`)."""
    for side in (0, 1):
        add = producer(see_through(node.inputs[side])[0])
        if add is None or add.op != "Add" or len(add.inputs) != 2:
            continue
        for m_side in (0, 1):
            m_read, w_read = (see_through(add.inputs[index])[0] for index in (m_side, 1 - m_side))
            if (previous is None or m_read is previous) and (w is None or w_read is w):
                return add, side, m_side
    return None


def _folded_first(node: gs.Node, keys: list, ranks: RankMap) -> Optional[tuple[gs.Tensor, gs.Tensor]]:
    """(m_{-1} + w, k_0) where the first Max reads the sum as one tensor: k_0 is the input that the later k_t match
    as one subgraph."""
    for side in (0, 1):
        try:
            match_operand_templates([node.inputs[side], *keys], ranks)
        except TemplateMismatch:
            continue
        return node.inputs[1 - side], node.inputs[side]
    return None


def _steps(running: RunningMax, ranks: RankMap) -> tuple[Optional[_Steps], Optional[str]]:
    """Each Max's Add(m_{t-1}, w) and k_t, or why the chain is not one this scan computes."""
    second = _add_of(running.maxes[1], running.maxes[0].outputs[0], None)
    w = see_through(second[0].inputs[1 - second[2]])[0]
    keys = []
    for position, node in enumerate(running.maxes[1:], 1):
        found = _add_of(node, running.maxes[position - 1].outputs[0], w)
        if found is None:
            other = _add_of(node, running.maxes[position - 1].outputs[0], None)
            added = f"'{see_through(other[0].inputs[1 - other[2]])[0].name}'" if other is not None else "no w"
            return None, (f"its w_t is not one tensor at every step (step {position} adds {added} where step 1 adds "
                          f"'{w.name}': a per-step gate, as xLSTM's log forget gate); the max-plus scan is built for "
                          "a w constant over the steps")
        keys.append(node.inputs[1 - found[1]])
    first = running.maxes[0]
    found = _add_of(first, None, w)
    if found is not None:
        add, side, m_side = found
        return _Steps(add.inputs[m_side], m_side, w, [first.inputs[1 - side], *keys], first_add=add), None
    folded = _folded_first(first, keys, ranks)
    if folded is None:
        return None, ("its first step adds no w to the maximum before it, and neither input of its Max is a step "
                      "like the later k_t")
    return _Steps(folded[0], -1, w, [folded[1], *keys], folded=True), None


def _max_plus_scan(b: GraphBuilder, stacked: gs.Tensor, w: gs.Tensor, count: int) -> gs.Tensor:
    """X_t <- Max(X_t, X_{t-d} + d w) for d = 1, 2, 4, .. < count, along axis 0 (`count` positions)."""
    scanned, distance = stacked, 1
    while distance < count:
        head = b.slice(scanned, 0, distance, 0)
        carried = b.add(b.slice(scanned, 0, count - distance, 0), b.mul(w, b.scalar(float(distance))))
        scanned = b.concat([head, b.max(b.slice(scanned, distance, count, 0), carried)], 0)
        distance *= 2
    return scanned


def scan_running_maxima(graph: gs.Graph, opset: int, taken: set[str],
                        reasons: Optional[dict[int, str]] = None) -> list[ScannedMax]:
    """Every running maximum with a constant w computed by a max-plus scan and read from it, for `restore`;
    `reasons` gets id(first Max) -> why for the chains left as they were."""
    runnings = find_running_maxima(graph)
    if not runnings:
        return []
    ranks = RankMap(graph)
    reasons = reasons if reasons is not None else {}
    done = []
    for running in runnings:
        steps, reason = _steps(running, ranks)
        if steps is None:
            reasons[id(running.maxes[0])] = reason
            continue
        try:
            template, positions = match_operand_templates(steps.keys, ranks)
        except TemplateMismatch as mismatch:
            reasons[id(running.maxes[0])] = f"its k_t are not steps of one tensor ({mismatch})"
            continue
        if positions != list(range(positions[0], positions[0] + len(positions))):
            reasons[id(running.maxes[0])] = f"its k_t take positions {positions}, not in step order"
            continue
        # the scan's d * w constants in the maximum's own type (float32 ones made a float16 or float64 loop's Mul
        # invalid: fuzz24)
        dtype = element_type(steps.w) or element_type(running.maxes[0].outputs[0]) or np.float32
        if np.dtype(dtype).itemsize < 4:
            # The scan adds d w at once where the loop adds w d times: a few ulps of m apart, and the decays
            # exp(m_{t-1} + w - m_t) of the loop's own m are <= 1 where the scan's may exceed it by exp(a few ulps).
            # One ulp of a float16 m of 2^13 is 8: exp(16) is past float16's largest (fuzz24: NaN at k = 6e4); a
            # float32 m needs 2^28 for the same
            reasons[id(running.maxes[0])] = (
                f"its maximum is {np.dtype(dtype).name}: the max-plus scan rounds m_t a few ulps from the loop's, "
                "which overflows a decay exp(m_{t-1} + w - m_t) in a 16-bit float once |m| nears 2^13")
            continue
        builder = GraphBuilder(graph, opset, prefix=f"reroll_scans/running_max{len(done)}", dtype=dtype, taken=taken)
        try:
            keys = replay_over_steps(builder, template, gs.Variable.empty(), positions[-1] + 1)
        except ReplayError as error:
            remove_made(graph, list(builder.nodes))
            reasons[id(running.maxes[0])] = f"its k_t cannot be replayed over all steps ({error})"
            continue
        count = len(steps.keys)
        if positions[0]:   # a loop from a later position: its own steps
            keys = builder.slice(keys, positions[0], positions[0] + count, 0)
        step_shape = builder.node("Slice", [builder.shape(keys), builder.ints([1]), builder.ints([2 ** 62])])
        # m_{-1}; where folded, (m_{-1} + w) - w, one rounding (-1e38 + w is -1e38 in float32: none)
        initial = builder.sub(steps.initial, steps.w) if steps.folded else steps.initial
        initial = builder.unsqueeze(builder.node("Expand", [initial, step_shape]), [0])
        scanned = _max_plus_scan(builder, builder.concat([initial, keys], 0), steps.w, count + 1)
        made = ScannedMax(running, [])
        previous = builder.gather(scanned, 0, 0)
        made.gathers.append(builder.nodes[-1])
        if steps.folded:
            # the first step's reads of m_{-1} + w as the later steps': Add(m_{t-1}, w). Only the first Max's and
            # its readers' (the first decay, exp(m_{-1} + w - m_0)): the folded constant may be shared (both of
            # RWKV's layers, and each layer's output maximum, read one -1e38 through dynamo)
            first_sum = builder.add(previous, steps.w)
            first = running.maxes[0]
            readers = [node for node in steps.initial.outputs
                       if node is first or any(tensor is first.outputs[0] for tensor in node.inputs)]
            for reader in readers:
                for index, tensor in enumerate(reader.inputs):
                    if tensor is steps.initial:
                        made.reads.append((reader, index, tensor))
                        reader.inputs[index] = first_sum
        else:
            made.reads.append((steps.first_add, steps.initial_index, steps.first_add.inputs[steps.initial_index]))
            steps.first_add.inputs[steps.initial_index] = previous
        for position, node in enumerate(running.maxes):
            state = builder.gather(scanned, position + 1, 0)
            made.gathers.append(builder.nodes[-1])
            made.reads += read_instead(node.outputs[0], state)
        made.made = list(builder.nodes)
        done.append(made)
    return done


def restore(graph: gs.Graph, scanned: ScannedMax) -> None:
    """The steps read the chain's own maxima again and the scan is gone: the graph as it was."""
    read_back(scanned.reads)
    remove_made(graph, scanned.made)

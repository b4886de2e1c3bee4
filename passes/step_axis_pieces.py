"""One-position Slices that keep their axis, read as steps, for reroll-scans: a loop over `x[:, t:t+1]`
reads its steps the way a loop over `x[:, t]` does.

A loop may keep the step axis: `h = a[:, t:t+1] * h + b[:, t:t+1]` (h of shape (B, 1, D, N)), each step
a Slice(x, [t], [t + 1], [axis]) whose output still has the axis, of size 1. The recurrence pattern finds a
step by an index node whose output drops the axis (Gather(x, t), Squeeze(Slice)); the same tensor is
Gather(Unsqueeze(x, axis + 1), t, axis): x given a size-1 axis after the step axis, then one step of it. So
each such Slice's readers read that Gather (one Unsqueeze per sliced tensor and axis; only where some such Slice is
read as a step's operand, by an Add or by a Mul into an Add) before matching, and
`restore` puts them back where no re-rolled scan took them (the graph is then as it was: a lone `x[:, 0:1]`,
or one whose readers squeeze it, a step the pattern already knows, is not touched).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.piece_reads import read_back, read_instead, remove_made
from patterns.graph_query import constant_ints, normalize_axis, optional_input
from patterns.indexing import known_axis_length
from patterns.ranks import RankMap
from patterns.small_constants import small_value

# Readers that already make a Slice a step the pattern knows (patterns/indexing.py: Squeeze(Slice)).
_STEP_READERS = frozenset({"Squeeze", "If"})


@dataclass
class GatheredSteps:
    source: gs.Tensor
    axis: int
    made: list                                   # the Unsqueeze, the Gathers
    gathers: list = field(default_factory=list)  # the Gather nodes made, one per Slice
    reads: list = field(default_factory=list)    # piece_reads.Reads: readers rewired to read the Gathers


def _bound(tensor: gs.Tensor):
    """A Slice bound's integers: a constant, or computed from constants (`do_constant_folding=False` exports each as
    Unsqueeze(Constant t)); else None."""
    values = constant_ints(tensor)
    if values is not None:
        return values
    value = small_value(tensor)
    if value is None or value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
        return None
    return [int(v) for v in value]


def _kept_step(node: gs.Node, rank_of):
    """(source, axis, t) of Slice(x, [t], [t + 1], [axis]) with constant bounds and t >= 0, x of rank 2 or more,
    else None."""
    if len(node.inputs) < 3:
        return None
    starts, ends = _bound(node.inputs[1]), _bound(node.inputs[2])
    axes_input, steps_input = optional_input(node, 3), optional_input(node, 4)
    axes = _bound(axes_input) if axes_input is not None else [0]
    steps = _bound(steps_input) if steps_input is not None else [1]
    if None in (starts, ends, axes, steps) or len(starts) != 1 or len(ends) != 1 or len(axes) != 1 or steps != [1]:
        return None
    if starts[0] < 0 or ends[0] != starts[0] + 1:
        return None
    rank = rank_of(node.inputs[0])
    axis = normalize_axis(axes[0], rank) if rank is not None else None
    # rank 2 or more: a state has axes besides the step's (a rank-1 source is a Shape's dims, `shape[0:1]`)
    if axis is None or rank < 2 or not 0 <= axis < rank:
        return None
    return node.inputs[0], axis, starts[0]


def _read_as_step_operand(piece: gs.Tensor) -> bool:
    """`piece` is read as a step's a_i or b_i may be, Add(Mul(a_i, x), b_i): by an Add, or by a Mul that an Add
    reads. The readout's coefficients of such a loop are gathered too (their Gather proves its output's size 1 to
    shape inference), those of a loop whose steps are squeezed (`a_t.squeeze(1)`) are not."""
    for reader in piece.outputs:
        if reader.op == "Add" or (reader.op == "Mul" and any(
                node.op == "Add" for output in reader.outputs for node in output.outputs)):
            return True
    return False


def gather_kept_steps(graph: gs.Graph, opset: int, taken: set[str], min_pieces: int = 2) -> list[GatheredSteps]:
    """Every tensor with `min_pieces` or more one-position axis-keeping Slices along one axis (at distinct
    positions), their readers rewired to Gather(Unsqueeze(x, axis + 1), t, axis), the same tensor."""
    slices = [node for node in graph.nodes if node.op == "Slice" and len(node.outputs) == 1]
    if not slices:
        return []
    ranks: list[RankMap] = []   # built for the first Slice that may be a step (ranks cost on a large graph)

    def rank_of(tensor: gs.Tensor):
        if not ranks:
            ranks.append(RankMap(graph))
        return ranks[0].rank(tensor)

    outputs = {id(tensor) for tensor in graph.outputs}
    groups: dict[tuple, list] = {}
    for node in slices:
        piece = node.outputs[0]
        if id(piece) in outputs or not piece.outputs or any(reader.op in _STEP_READERS for reader in piece.outputs):
            continue
        found = _kept_step(node, rank_of)
        if found is None:
            continue
        source, axis, index = found
        groups.setdefault((id(source), axis), []).append((node, source, axis, index))
    if not any(_read_as_step_operand(node.outputs[0]) for members in groups.values() for node, *_ in members):
        return []   # no step to find (a loop's readout coefficients alone, `(h * c_t)`, stay the Slices they are)
    done = []
    for members in groups.values():
        source, axis = members[0][1], members[0][2]
        length = known_axis_length(source, axis)
        if len({index for *_, index in members}) < min_pieces or (
                length is not None and any(index >= length for *_, index in members)):
            continue   # a Slice past the end is empty, where a Gather would fail
        builder = GraphBuilder(graph, opset, prefix=f"reroll_scans/step_axis_pieces{len(done)}", taken=taken)
        widened = builder.unsqueeze(source, [axis + 1])
        gathered = GatheredSteps(source, axis, [])
        for node, _, _, index in members:
            piece = node.outputs[0]
            step = builder.gather(widened, index, axis)
            gathered.gathers.append(builder.nodes[-1])
            gathered.reads += read_instead(piece, step)
        gathered.made = list(builder.nodes)
        done.append(gathered)
    return done


def restore(graph: gs.Graph, gathered: GatheredSteps) -> None:
    """The readers read the Slices again and the nodes made for them are gone: the graph as it was."""
    read_back(gathered.reads)
    remove_made(graph, gathered.made)

"""Keepdim step outputs concatenated along their size-1 axis, read as stacked, for reroll-scans.

A loop may keep the reduced axis of each step's readout and join the steps along it:
`ys.append((h * c).sum(-1, keepdim=True))`, then `torch.cat(ys, -1)`. The readout patterns find a stack
as Unsqueeze(y_t, s) into a Concat along s (patterns/readout.py); here each y_t already has size 1 at s,
which a Reduce* with keepdims over s proves (its shape, not a declared one). So each piece becomes
Unsqueeze(Squeeze(y_t, s), s), the same tensor, before matching, and `restore` puts the Concat's inputs back
where no re-rolled scan took its output (a keepdim Concat that is not a loop's stack stays as it was).

A loop that keeps the step axis (`torch.cat(ys, 1)` of readouts of a (B, 1, D, N) state: passes/step_axis_pieces.py)
has pieces of size 1 at the Concat's axis that no reduction made: given `shapes` (ONNX shape inference), a piece
inferred of size 1 there is taken too (Squeeze checks it at run time), where not every piece is an Unsqueeze
already (a stack the pattern knows).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.piece_reads import remove_made
from patterns.graph_query import node_axes, normalize_axis, optional_input, producer
from patterns.ranks import RankMap

# Reductions that keep a size-1 axis for every reduced one (keepdims=1); ArgMax/ArgMin take one `axis`.
_KEEPDIM_REDUCTIONS = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                 "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare"})


@dataclass
class SqueezedConcat:
    concat: gs.Node
    output: gs.Tensor            # the Concat's output (a re-rolled scan detaches the Concat from it)
    pieces: list                 # the Concat's inputs as they were
    made: list                   # the Squeeze and Unsqueeze nodes made


def _size_one_at(tensor: gs.Tensor, axis: int, rank: int) -> bool:
    """`tensor` is a keepdims reduction whose reduced axes include `axis`: its size there is 1."""
    node = producer(tensor)
    if node is None or node.op not in _KEEPDIM_REDUCTIONS or not int(node.attrs.get("keepdims", 1)):
        return False
    axes = node_axes(node)
    has_axes_input = "axes" not in node.attrs and optional_input(node, 1) is not None
    if axes is None:
        if has_axes_input:   # computed axes: not known
            return False
        return not int(node.attrs.get("noop_with_empty_axes", 0))   # no axes: every axis reduced
    if not axes:   # empty axes: every axis, unless the reduction is then a no-op
        return not int(node.attrs.get("noop_with_empty_axes", 0))
    return axis in {normalize_axis(a, rank) for a in axes}


def _inferred_one_at(tensor: gs.Tensor, axis: int, rank: int, shapes: Optional[dict]) -> bool:
    shape = shapes.get(tensor.name) if shapes is not None else None
    return shape is not None and len(shape) == rank and shape[axis] == 1


def squeeze_keepdim_pieces(graph: gs.Graph, opset: int, taken: set[str], min_pieces: int = 2,
                           shapes: Optional[dict] = None) -> list[SqueezedConcat]:
    """Every Concat of `min_pieces` or more keepdim reductions along an axis each reduced (or, given `shapes`,
    pieces inferred of size 1 along it), its inputs rewired to Unsqueeze(Squeeze(piece, axis), axis)."""
    concats = [node for node in graph.nodes if node.op == "Concat" and len(node.inputs) >= min_pieces]
    if not concats:
        return []
    ranks: Optional[RankMap] = None
    done = []
    for node in concats:
        made_by = [producer(piece).op if producer(piece) is not None else None for piece in node.inputs]
        if shapes is None and not all(op in _KEEPDIM_REDUCTIONS for op in made_by):
            continue
        if all(op == "Unsqueeze" for op in made_by):
            continue
        ranks = ranks or RankMap(graph)
        rank = ranks.rank(node.inputs[0])
        axis = normalize_axis(int(node.attrs.get("axis", 0)), rank) if rank is not None else None
        if axis is None or not 0 <= axis < rank or not all(
                _size_one_at(piece, axis, rank) or _inferred_one_at(piece, axis, rank, shapes) for piece in node.inputs):
            continue
        builder = GraphBuilder(graph, opset, prefix=f"reroll_scans/keepdim_pieces{len(done)}", taken=taken)
        squeezed = SqueezedConcat(node, node.outputs[0], list(node.inputs), [])
        for position, piece in enumerate(squeezed.pieces):
            node.inputs[position] = builder.unsqueeze(builder.squeeze(piece, [axis]), [axis])
        squeezed.made = list(builder.nodes)
        done.append(squeezed)
    return done


def restore(graph: gs.Graph, squeezed: SqueezedConcat) -> None:
    """The Concat reads its pieces again and the nodes made for it are gone: the graph as it was."""
    for position, piece in enumerate(squeezed.pieces):
        squeezed.concat.inputs[position] = piece
    remove_made(graph, squeezed.made)

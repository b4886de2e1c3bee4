"""One-position Split pieces as Slices, for reroll-scans: a loop over `x.unbind(axis)` reads its steps the
way a loop over `x[:, t]` does.

TorchScript writes `for a_t, b_t in zip(a.unbind(1), b.unbind(1))` (and `x.split(1, 1)`, `x.chunk(L, 1)`)
as one Split per tensor whose outputs are the steps, each then squeezed. The recurrence pattern and the
step template find a step by its own index node (Gather(x, i), Slice(x, i, i + 1)); a Split's outputs
differ only by their output number. So each piece i becomes Slice(x, [i], [i + 1], [axis]), the same
tensor, before matching, and `restore` puts the Split's pieces back where no re-rolled scan took them
(the graph is then as it was: a Split that is not a loop's steps, `q, k, v = qkv.unbind(0)`, stays one).
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.piece_reads import read_back, read_instead, remove_made
from patterns.indexing import one_position_split
from patterns.ranks import RankMap


@dataclass
class SlicedSplit:
    split: gs.Node
    slices: list                 # the Slice node made for each piece
    reads: list                  # piece_reads.Reads: readers rewired to read the Slices' outputs


def slice_split_pieces(graph: gs.Graph, opset: int, taken: set[str], min_pieces: int = 2) -> list[SlicedSplit]:
    """Every Split of some tensor into `min_pieces` or more pieces of one position each, its readers rewired to
    read one Slice per piece (the Split stays in the graph, unread, until cleanup or `restore`)."""
    splits = [node for node in graph.nodes if node.op == "Split" and len(node.outputs) >= min_pieces]
    if not splits:
        return []
    ranks = RankMap(graph)
    outputs = {id(tensor) for tensor in graph.outputs}
    done = []
    for node in splits:
        found = one_position_split(node, ranks)
        if found is None or any(id(piece) in outputs for piece in node.outputs):
            continue
        source, axis = found
        builder = GraphBuilder(graph, opset, prefix=f"reroll_scans/split_pieces{len(done)}", taken=taken)
        sliced = SlicedSplit(node, [], [])
        for index, piece in enumerate(node.outputs):
            sliced_piece = builder.slice(source, index, index + 1, axis)
            sliced.slices.append(builder.nodes[-1])
            sliced.reads += read_instead(piece, sliced_piece)
        done.append(sliced)
    return done


def restore(graph: gs.Graph, sliced: SlicedSplit, remove_slices: bool) -> None:
    """Its readers read the Split's pieces again; `remove_slices`: its Slices are gone too, the graph as it was
    (where nothing was re-rolled: nothing new can read them). Else cleanup removes those nothing reads (a
    re-rolled scan's form may read one, as a whole tensor whose steps it took, which keeps it)."""
    read_back(sliced.reads)
    if remove_slices:
        remove_made(graph, sliced.slices)

"""Rewiring that reroll-scans' spelling helpers undo: split_pieces, step_axis_pieces and keepdim_pieces each
make a loop's pieces read another way before matching, then put the graph back where no scan took them."""
from __future__ import annotations

import onnx_graphsurgeon as gs

# (reader node, input index, the tensor it read there) for each input rewired
Reads = list[tuple[gs.Node, int, gs.Tensor]]


def read_instead(piece: gs.Tensor, replacement: gs.Tensor) -> Reads:
    """Every reader of `piece` reads `replacement` at each input where it read `piece`; what was rewired."""
    reads = []
    for reader in list(piece.outputs):
        for position, tensor in enumerate(reader.inputs):
            if tensor is piece:
                reader.inputs[position] = replacement
                reads.append((reader, position, piece))
    return reads


def read_back(reads: Reads) -> None:
    """Each rewired reader reads what it read before `read_instead`."""
    for reader, position, piece in reads:
        reader.inputs[position] = piece


def remove_made(graph: gs.Graph, made: list[gs.Node]) -> None:
    """The nodes a helper made, disconnected and out of the graph."""
    ids = {id(node) for node in made}
    for node in made:
        node.inputs.clear()
        node.outputs.clear()
    graph.nodes = [node for node in graph.nodes if id(node) not in ids]

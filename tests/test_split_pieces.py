"""passes/split_pieces.py on its own: which Splits have their pieces read as Slices (reroll-scans' loops over
`x.unbind(axis)` are tested end to end in tests/test_reroll_scans.py)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from passes.split_pieces import restore, slice_split_pieces


def _split_graph(pieces: int, piece_is_graph_output: bool = False) -> tuple[gs.Graph, gs.Node, list]:
    """x (2, pieces, 3) split into one-position pieces along axis 1, each piece read by a Neg."""
    x = gs.Variable("x", np.float32, [2, pieces, 3])
    parts = [gs.Variable(f"part{i}", np.float32, [2, 1, 3]) for i in range(pieces)]
    split = gs.Node("Split", "split", attrs={"axis": 1},
                    inputs=[x, gs.Constant("sizes", np.ones(pieces, np.int64))], outputs=parts)
    negs = [gs.Node("Neg", f"neg{i}", inputs=[part], outputs=[gs.Variable(f"y{i}", np.float32, [2, 1, 3])])
            for i, part in enumerate(parts)]
    outputs = [neg.outputs[0] for neg in negs] + (parts[:1] if piece_is_graph_output else [])
    return gs.Graph(nodes=[split, *negs], inputs=[x], outputs=outputs, opset=17), split, negs


@pytest.mark.parametrize("pieces", [2, 5])
def test_every_piece_of_a_one_position_split_is_read_as_a_slice(pieces):
    graph, split, negs = _split_graph(pieces)
    [sliced] = slice_split_pieces(graph, 17, set())
    assert sliced.split is split and len(sliced.slices) == pieces
    for index, (neg, made) in enumerate(zip(negs, sliced.slices)):
        assert neg.inputs[0] is made.outputs[0] and made.op == "Slice"
        starts, ends, axes = (int(np.asarray(t.values).reshape(-1)[0]) for t in made.inputs[1:4])
        assert (made.inputs[0].name, starts, ends, axes) == ("x", index, index + 1, 1)
    restore(graph, sliced, remove_slices=True)
    assert [node.op for node in graph.nodes] == ["Split"] + ["Neg"] * pieces
    assert [neg.inputs[0] for neg in negs] == list(split.outputs)


def test_a_split_whose_piece_is_a_graph_output_is_left_alone():
    """Rewiring its readers would leave the Split alive for the output: nothing is made for it."""
    graph, split, negs = _split_graph(3, piece_is_graph_output=True)
    assert slice_split_pieces(graph, 17, set()) == []
    assert [neg.inputs[0] for neg in negs] == list(split.outputs)
    assert len(graph.nodes) == 4


def test_a_split_into_pieces_of_two_positions_is_left_alone():
    graph, split, negs = _split_graph(4)
    split.inputs[1] = gs.Constant("two_each", np.array([2, 2], np.int64))
    split.outputs = split.outputs[:2]
    assert slice_split_pieces(graph, 17, set()) == []

"""What plane-transpose-to-matmul and plane-transpose-to-gather share: finding a Transpose that
swaps the last two axes of planes of known size, and rebuilding it on the flattened plane.

    X [..., H, W]  ->  swap(Reshape(X, [..., H*W]))  ->  Reshape [..., W, H]
"""
from __future__ import annotations

from typing import Callable, Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder


def swapped_plane(node: gs.Node, shapes) -> Optional[tuple[int, int, int]]:
    """(rank, H, W) when `node` is a Transpose of the last two axes of a non-empty H x W plane of
    known size; None otherwise (an empty plane too: its 0 in a Reshape target would mean "copy")."""
    shape = shapes.get(node.inputs[0].name)
    if shape is None or len(shape) < 3:
        return None
    rank = len(shape)
    if list(node.attrs.get("perm", [])) != list(range(rank - 2)) + [rank - 1, rank - 2]:
        return None
    height, width = shape[-2], shape[-1]
    if not isinstance(height, int) or not isinstance(width, int) or height * width == 0:
        return None
    return rank, height, width


def rebuild_on_flat_plane(b: GraphBuilder, node: gs.Node, plane: tuple[int, int, int], output: gs.Variable,
                          swap_flat: Callable[[gs.Tensor], gs.Tensor]) -> None:
    """`output` = the swap of `node`'s input, with `swap_flat` applied to the (..., H*W) flat planes."""
    rank, height, width = plane
    keep = [0] * (rank - 2)     # Reshape's 0 copies a leading dimension, so a dynamic batch stays dynamic
    flat = b.reshape(node.inputs[0], keep + [height * width])
    b.node("Reshape", [swap_flat(flat), b.ints(keep + [width, height])], output=output)

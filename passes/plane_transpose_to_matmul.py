"""A Transpose that swaps the last two axes of small planes becomes a MatMul by a permutation matrix.

    X [..., H, W]  ->  Reshape(X, [..., H*W]) @ P  ->  Reshape [..., W, H],   P[h*W + w, w*H + h] = 1

ONNX Runtime runs this Transpose as a single-threaded element-by-element copy: on the 16-core host
VMamba-T's cross-scan H/W swaps of [1, 768, 14, 14] and [1, 1536, 7, 7] took 5-6 ms each at 16
threads (docs/BENCHMARKS.md), far more than their 0.6 MB. A MatMul is multi-threaded GEMM, and
exact for finite inputs: every output is one input times 1 plus zeros (an infinity would spread
NaN along its plane, 0 * inf). It costs 2 (H*W)^2 FLOPs per plane, so only planes up to `max_plane`
elements are rewritten: the default 256 takes VMamba-T's stages 2 and 3 (196, 49) and leaves the
large planes of stages 0 and 1 (3136, 784), where the GEMM would cost more than the copy.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Option
from passes.graph_builder import MAX_INDEX_TABLE, GraphBuilder
from passes.plane_swaps import rebuild_on_flat_plane, swapped_plane
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from patterns.graph_query import element_type


def plane_transpose_matrix(height: int, width: int) -> np.ndarray:
    """P with x.reshape(H*W) @ P == x.T.reshape(W*H) for an H x W plane x."""
    matrix = np.zeros((height * width, width * height), dtype=np.float32)
    h, w = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    matrix[(h * width + w).ravel(), (w * height + h).ravel()] = 1.0
    return matrix


@register_pass
class PlaneTransposeToMatMul(NodeRewrite, op="Transpose", shapes="partial"):
    name = "plane-transpose-to-matmul"
    description = "Transposes swapping the last two axes of small float planes as MatMul by a permutation matrix"
    max_plane = Option(int, 256, "largest H*W rewritten (the MatMul costs 2 (H*W)^2 FLOPs per plane)", min=1)

    def check(self, node: gs.Node, shapes) -> Kept | tuple[int, int, int]:
        plane = swapped_plane(node, shapes)
        if plane is None or plane[1] * plane[2] > self.max_plane:
            return Kept()
        if (plane[1] * plane[2]) ** 2 > MAX_INDEX_TABLE:   # max_plane may be set far above the default
            return Kept(f"Transpose '{node.name}' kept: a {plane[1]} x {plane[2]} plane's permutation matrix has more "
                        f"than the {MAX_INDEX_TABLE} values a constant made from declared dims may hold")
        dtype = element_type(node.inputs[0])
        # None: not found (float in VMamba). Not `dtype in (None, ...)`: numpy's dtype == None is float64.
        if dtype is not None and dtype != np.float32:
            return Kept()
        return plane

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple[int, int, int], output: gs.Variable) -> None:
        matrix = b.const(plane_transpose_matrix(plan[1], plan[2]))
        rebuild_on_flat_plane(b, node, plan, output, lambda flat: b.matmul(flat, matrix))

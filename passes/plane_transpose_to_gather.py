"""A Transpose that swaps the last two axes of large planes becomes a Gather of the flattened plane.

    X [..., H, W]  ->  Gather(Reshape(X, [..., H*W]), idx, axis=-1)  ->  Reshape [..., W, H],
    idx[w*H + h] = h*W + w

For many threads. ONNX Runtime 1.30 runs this Transpose as a single-threaded element copy that
gets slower with more threads, while its Gather splits the copy over the thread pool. 16-core
host (docs/BENCHMARKS.md, one interleaved run): a [1, 192, 56, 56] swap took 5.7 ms as a
Transpose and 0.65 ms as this Gather at 16 threads, but 1.2 ms against 3.2 ms at 2 threads.
So the `cpu` pipeline (tuned on 2 cores) keeps the Transpose and `cpu-many` takes this pass.
Exact: every output element is a copy of one input element. Planes up to `min_plane` - 1
elements are left for plane-transpose-to-matmul (a MatMul is faster still on small planes).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Option
from passes.graph_builder import MAX_INDEX_TABLE, GraphBuilder
from passes.plane_swaps import rebuild_on_flat_plane, swapped_plane
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite


def plane_transpose_indices(height: int, width: int) -> np.ndarray:
    """idx with x.reshape(H*W)[idx] == x.T.reshape(W*H) for an H x W plane x."""
    return np.arange(height * width, dtype=np.int64).reshape(height, width).T.reshape(-1)


@register_pass
class PlaneTransposeToGather(NodeRewrite, op="Transpose", shapes="partial"):
    name = "plane-transpose-to-gather"
    description = "Transposes swapping the last two axes of large planes as a Gather of the flat plane (many threads)"
    min_plane = Option(int, 257, "smallest H*W rewritten (smaller planes: plane-transpose-to-matmul)", min=1)

    def check(self, node: gs.Node, shapes) -> Kept | tuple[int, int, int]:
        plane = swapped_plane(node, shapes)
        if plane is None or plane[1] * plane[2] < self.min_plane:
            return Kept()
        _, height, width = plane
        if height * width > MAX_INDEX_TABLE:
            return self.left_alone(node, f"a {height} x {width} plane needs more than the {MAX_INDEX_TABLE} "
                                         "indices a Gather table may hold")
        return plane

    def replace(self, b: GraphBuilder, node: gs.Node, plan: tuple[int, int, int], output: gs.Variable) -> None:
        rank, height, width = plan
        indices = b.const(plane_transpose_indices(height, width))
        rebuild_on_flat_plane(b, node, plan, output, lambda flat: b.node("Gather", [flat, indices], {"axis": rank - 2}))

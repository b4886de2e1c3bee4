"""Give a MatMul's left operand the rank of its right one (leading unit axes).

tpu-mlir asserts (MatMul.cpp:66) on a MatMul whose left operand has fewer axes than a right
operand with batch axes, which ONNX allows by broadcasting: transformers' Mamba exports
`dt_proj.weight @ time_step.transpose(1, 2)` as [d_inner, rank] x [batch, rank, L]. Leading
unit axes change nothing in ONNX's broadcasting, so a constant left operand is stored reshaped
and any other gets an Unsqueeze. A vector (rank 1) left operand is left alone: MatMul treats it
differently from a one-row matrix.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, PassResult
from passes.graph_builder import GraphBuilder, unique_name
from passes.registry import register_pass
from patterns.graph_query import toposort
from patterns.ranks import RankMap


@register_pass
class MatMulLeftRank(Pass):
    name = "matmul-left-rank"
    description = "unsqueeze a MatMul's lower-rank left operand to the right operand's rank (tpu-mlir MatMul.cpp:66)"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        ranks = RankMap(graph)
        builder = GraphBuilder(graph, ctx.opset, prefix="matmul_left_rank")
        lifted = 0
        lifted_constants: dict[tuple[str, int], gs.Constant] = {}   # one lifted copy per constant shared by MatMuls
        taken = set(graph.tensors())   # a model may already have a tensor called like a lifted copy
        for node in [n for n in graph.nodes if n.op == "MatMul"]:
            left, right = node.inputs[:2]
            left_rank, right_rank = ranks.rank(left), ranks.rank(right)
            if left_rank is None or right_rank is None or not 2 <= left_rank < right_rank or right_rank <= 2:
                continue
            missing = right_rank - left_rank
            if isinstance(left, gs.Constant):
                key = (left.name, right_rank)
                if key not in lifted_constants:
                    values = np.asarray(left.values)
                    name = unique_name(f"{left.name}_rank{right_rank}", taken)
                    lifted_constants[key] = gs.Constant(name,
                                                        values.reshape((1,) * missing + values.shape))
                node.inputs[0] = lifted_constants[key]
            else:
                node.inputs[0] = builder.unsqueeze(left, list(range(missing)))
            lifted += 1
        if lifted:
            toposort(graph.cleanup())
        return PassResult(changed=lifted > 0, stats={"lifted": lifted})

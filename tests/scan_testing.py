"""Shared helpers for tests that re-roll graphs: run a pass on a ModelProto, run models in ORT."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from passes.base import PassContext, PassResult
from passes.relative_error import relative_l2

# A five-node graph with one constant to fold and one dead node: the CLI and report tests' input.
TINY_MODEL_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x) => (float[2,3] y) <float[3] w = {1.0, 2.0, 3.0}> {
  ones = Constant<value = float[3] {1.0, 1.0, 1.0}>()
  bias = Add(ones, w)
  shifted = Add(x, bias)
  y = Relu(shifted)
  dead = Exp(x)
}
"""


def apply_pass(model: onnx.ModelProto, pass_) -> tuple[onnx.ModelProto, PassResult]:
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    result = pass_.run(graph, PassContext(opset=opset))
    out = gs.export_onnx(graph)
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.ir_version = model.ir_version
    onnx.checker.check_model(out, full_check=True)
    return out, result


def cumsum_model(shape, axis, **attrs) -> onnx.ModelProto:
    """A one-node model: y = CumSum(x, axis) with x of ``shape`` (float32), the axis an initializer."""
    graph = helper.make_graph(
        [helper.make_node("CumSum", ["x", "axis"], ["y"], name="cs", **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializer=[helper.make_tensor("axis", TensorProto.INT64, [], [axis])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def transpose_model(in_shape, perm, dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    """A one-node model: y = Transpose(x, perm) with x of ``in_shape`` (node name "swap")."""
    out_shape = [in_shape[p] for p in perm]
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["y"], name="swap", perm=perm)], "g",
        [helper.make_tensor_value_info("x", dtype, in_shape)],
        [helper.make_tensor_value_info("y", dtype, out_shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def gated_rnn_steps(length: int, batch: int, width: int, unsqueeze: bool = True
                    ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The unrolled loop h_t = a[:, t] * h_{t-1} + b[:, t], h_{-1} = 0 (a gated RNN: RecurrentGemma's RG-LRU),
    step by step as an exporter writes it: Gather a and b at step t (axis 1), Mul by the state, Add. The state
    is (batch, width), "h_init" then "h{t}"; with ``unsqueeze`` each step also makes "u{t}" = Unsqueeze(h{t}, 1),
    the slice to stack or write into a buffer. Returns the nodes and their initializers ("h_init", "t{t}" and,
    with ``unsqueeze``, "axis1"); the graph inputs "a" and "b", (batch, length, width), are the caller's."""
    nodes = []
    inits = [numpy_helper.from_array(np.zeros((batch, width), np.float32), "h_init")]
    if unsqueeze:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    state = "h_init"
    for t in range(length):
        inits.append(numpy_helper.from_array(np.array(t, np.int64), f"t{t}"))
        nodes += [helper.make_node("Gather", ["a", f"t{t}"], [f"a{t}"], axis=1),
                  helper.make_node("Gather", ["b", f"t{t}"], [f"b{t}"], axis=1),
                  helper.make_node("Mul", [f"a{t}", state], [f"m{t}"]),
                  helper.make_node("Add", [f"m{t}", f"b{t}"], [f"h{t}"])]
        if unsqueeze:
            nodes.append(helper.make_node("Unsqueeze", [f"h{t}", "axis1"], [f"u{t}"]))
        state = f"h{t}"
    return nodes, inits


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


rel_l2 = relative_l2  # the name the scan tests import

"""Remove Identity nodes.

tpu-mlir's ONNX front end breaks on Identity nodes over initializers when its own onnxsim is
off (``KeyError: operand ... not found``), and re-rolling emits Identity to keep an output's
name. Consumers are rewired to the Identity's input; an Identity that feeds a graph output
hands the output's name to its producer instead. The one case left alone (with a note) is an
Identity between a graph input or initializer and a graph output: removing it would change
the graph's interface. With ``copy_inputs`` (the tpu pipelines) an Identity from a graph input to a
graph output becomes Mul(x, 1) instead, exact in every type Mul takes: tpu-mlir 1.30.2 refuses an
input returned as an output ("type of return operand 0 ('tensor<1x4xf32>') doesn't match function
result type ('tensor<*xf32>')", kept Identity or not) and compiles the Mul (cosine 1.0, session s28).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Option, Pass, PassContext, PassResult
from passes.graph_builder import unique_name
from passes.registry import register_pass
from patterns.graph_query import describe


def _replace_in(tensors, old: gs.Tensor, new: gs.Tensor) -> None:
    # Item by item: onnx-graphsurgeon's synchronised lists do not support slice assignment.
    for index, tensor in enumerate(tensors):
        if tensor is old:
            tensors[index] = new


# Element types Mul takes at opset 14+ (13: the float and 32/64-bit integer ones); bool and strings have no Mul.
_MULTIPLIED = {np.dtype(t) for t in ("float16", "float32", "float64", "int32", "int64", "uint32", "uint64")}
_MULTIPLIED_14 = {np.dtype(t) for t in ("int8", "int16", "uint8", "uint16")}


def _one_of(dtype, opset: int) -> np.ndarray | None:
    """A scalar 1 of `dtype` that Mul takes at `opset`, or None (bool, string, bfloat16's numpy stand-in)."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        return None
    if dtype in _MULTIPLIED or (opset >= 14 and dtype in _MULTIPLIED_14):
        return np.ones((), dtype)
    return None


def _replace_uses(old: gs.Tensor, new: gs.Tensor) -> None:
    for consumer in list(old.outputs):
        _replace_in(consumer.inputs, old, new)


@register_pass
class RemoveIdentity(Pass):
    name = "remove-identity"
    description = "remove Identity nodes (rewire consumers; a graph output takes over its producer's tensor)"

    copy_inputs = Option(bool, False, "an Identity from a graph input to a graph output becomes Mul(x, 1) "
                                      "(tpu-mlir refuses an input returned as an output)")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        identities = [node for node in graph.nodes if node.op == "Identity"]
        if not identities:
            return PassResult(False, {"removed": 0})
        graph_outputs = {id(t) for t in graph.outputs}
        graph_inputs = {id(t) for t in graph.inputs}
        notes, removed, multiplied, taken = [], [], 0, None
        for node in identities:
            source, result = node.inputs[0], node.outputs[0]
            if id(result) not in graph_outputs:
                _replace_uses(result, source)
                node.inputs.clear()
                node.outputs.clear()
                removed.append(node)
                continue
            # The result is a graph output: keep its tensor (name, type) and let the source's
            # producer write it directly, if the source is a plain intermediate.
            producer = source.inputs[0] if len(source.inputs) == 1 else None
            one = _one_of(source.dtype, ctx.opset) if self.copy_inputs and id(source) in graph_inputs else None
            if one is not None:
                node.op, node.attrs = "Mul", {}
                taken = taken if taken is not None else set(graph.tensors())
                node.inputs.append(gs.Constant(unique_name(f"{result.name}_one", taken), one))
                multiplied += 1
                continue
            if (producer is None or isinstance(source, gs.Constant) or id(source) in graph_inputs
                    or id(source) in graph_outputs):
                notes.append(f"{describe(node)} kept: it copies a graph input, initializer or another "
                             "graph output into a graph output")
                continue
            node.inputs.clear()
            node.outputs.clear()
            _replace_uses(source, result)
            _replace_in(producer.outputs, source, result)
            removed.append(node)
        stats = {"removed": len(removed)} | ({"multiplied": multiplied} if self.copy_inputs else {})
        if not removed:
            return PassResult(multiplied > 0, stats, notes)
        gone = {id(node) for node in removed}
        graph.nodes = [node for node in graph.nodes if id(node) not in gone]
        graph.cleanup(remove_unused_graph_inputs=False)
        return PassResult(True, stats, notes)

"""A cheap, read-only record of a graph's nodes, to diff the graph before and after a pass.

A snapshot holds, per node, its name, op, input and output tensor names, a short text for
each constant (initializer) input, and a shallow copy of its attributes (passes may edit a
node's attributes in place, so the "before" print must not read the live node). It never
copies tensors or the graph: one pass over the node list, O(nodes + edges).

Two nodes are "the same" across snapshots when their ``key`` (name, op, inputs, outputs) is
equal and their attributes are equal. Constant inputs enter the key by what they hold
(dtype, shape, and values if small), not by name: onnxsim renames and deduplicates
initializers, which is not a change a reader wants to see. A node that a pass rewired (an
input renamed, or an input folded into a constant) shows up as removed + added.

Snapshots are built from an onnx-graphsurgeon graph (inside the pass manager) or from an
``onnx.ModelProto`` (``tools.diffview``); both give the same ``NodeRecord``s.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

# Constants with at most this many elements print their values inline ("const<i64>[0, 2]").
INLINE_VALUES_MAX = 8
# Attribute tensors up to this size are compared by value; larger ones by identity/shape.
COMPARE_VALUES_MAX = 4096


@dataclass(frozen=True, eq=False)
class NodeRecord:
    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    # Input position -> short text of a constant input ("const<f32[64]>", "const<i64>[1]").
    constant_texts: dict[int, str]
    # The attributes as they were when the snapshot was taken: name -> raw value.
    attributes: dict[str, Any]
    # The node object (gs.Node or onnx.NodeProto), for its name in error messages only.
    source: Any = field(repr=False)
    # (name, op, inputs with constants as their text, outputs); computed once, in __post_init__.
    key: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        inputs = self.inputs
        if self.constant_texts:
            inputs = tuple(self.constant_texts.get(position, name) for position, name in enumerate(inputs))
        object.__setattr__(self, "key", (self.name, self.op, inputs, self.outputs))

    def same_attributes(self, other: "NodeRecord") -> bool:
        if self.attributes.keys() != other.attributes.keys():
            return False
        return all(same_value(value, other.attributes[name]) for name, value in self.attributes.items())


@dataclass
class GraphSnapshot:
    nodes: list[NodeRecord]
    graph_inputs: tuple[str, ...]
    graph_outputs: tuple[str, ...]
    _producer: dict[str, int] | None = field(default=None, repr=False)
    _consumers: dict[str, list[int]] | None = field(default=None, repr=False)

    def producer_index(self) -> dict[str, int]:
        """Tensor name -> index of the node that produces it (built once, on demand)."""
        if self._producer is None:
            self._producer = {name: index for index, node in enumerate(self.nodes) for name in node.outputs if name}
        return self._producer

    def consumer_indices(self) -> dict[str, list[int]]:
        """Tensor name -> indices of the nodes that consume it (built once, on demand)."""
        if self._consumers is None:
            consumers: dict[str, list[int]] = defaultdict(list)
            for index, node in enumerate(self.nodes):
                for name in node.inputs:
                    if name:
                        consumers[name].append(index)
            self._consumers = dict(consumers)
        return self._consumers


# --- from onnx-graphsurgeon -------------------------------------------------------------

def snapshot_graph(graph: gs.Graph) -> GraphSnapshot:
    constant_texts: dict[int, str] = {}  # id(gs.Constant) -> text; a weight is described once

    def describe(tensor: gs.Constant) -> str:
        text = constant_texts.get(id(tensor))
        if text is None:
            text = constant_texts[id(tensor)] = describe_tensor(tensor.dtype, tuple(tensor.shape), lambda: tensor.values)
        return text

    records = []
    for node in graph.nodes:
        constants = {position: describe(tensor) for position, tensor in enumerate(node.inputs)
                     if isinstance(tensor, gs.Constant)}
        records.append(NodeRecord(
            node.name, node.op, tuple(t.name for t in node.inputs), tuple(t.name for t in node.outputs),
            constants, dict(node.attrs), node))
    return GraphSnapshot(records, tuple(t.name for t in graph.inputs), tuple(t.name for t in graph.outputs))


# --- from onnx ----------------------------------------------------------------------------

def snapshot_model(model: onnx.ModelProto) -> GraphSnapshot:
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    texts: dict[str, str] = {}

    def describe(name: str) -> str:
        if name not in texts:
            tensor = initializers[name]
            texts[name] = describe_tensor(_onnx_dtype(tensor.data_type), tuple(tensor.dims),
                                          lambda: _stored_values(tensor))
        return texts[name]

    records = []
    for node in graph.node:
        inputs = tuple(node.input)
        constants = {position: describe(name) for position, name in enumerate(inputs) if name in initializers}
        attributes = {attribute.name: attribute for attribute in node.attribute}
        records.append(NodeRecord(node.name, node.op_type, inputs, tuple(node.output), constants, attributes, node))
    graph_inputs = tuple(value.name for value in graph.input if value.name not in initializers)
    return GraphSnapshot(records, graph_inputs, tuple(value.name for value in graph.output))


def _onnx_dtype(data_type: int):
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(data_type) if data_type else None
    except Exception:
        return None


# --- comparing and printing values ------------------------------------------------------

def same_value(a: Any, b: Any) -> bool:
    """Attribute equality that stays cheap: big tensors compare by shape, dtype and identity."""
    if a is b:
        return True
    if isinstance(a, (gs.Constant, np.ndarray)) and isinstance(b, (gs.Constant, np.ndarray)):
        if tuple(a.shape) != tuple(b.shape) or str(a.dtype) != str(b.dtype):
            return False
        if int(np.prod(a.shape)) > COMPARE_VALUES_MAX:
            return False  # different objects of a big tensor: call it changed rather than read it
        values_a = a.values if isinstance(a, gs.Constant) else a
        values_b = b.values if isinstance(b, gs.Constant) else b
        return bool(np.array_equal(values_a, values_b))
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, gs.Graph):
        return False  # distinct subgraph objects: treat as changed
    try:
        return bool(a == b)  # numbers, strings, protobuf messages
    except Exception:
        return False


_SHORT_DTYPES = {"float32": "f32", "float64": "f64", "float16": "f16", "int64": "i64", "int32": "i32",
                 "int8": "i8", "uint8": "u8", "bool": "bool"}


def _stored_values(tensor: onnx.TensorProto) -> np.ndarray:
    """The values a TensorProto holds itself. Data in a file is not read: ``to_array`` would resolve
    its location against the working folder, not the model's (a hostile model could show a file of
    the user's in the diff); its type and shape are enough."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise ValueError("external data is not read")
    return onnx.numpy_helper.to_array(tensor)


def describe_tensor(dtype, shape: tuple, load_values: Callable[[], Any]) -> str:
    """``const<f32[64,1]>``, or with few elements the values: ``const<i64>[0, 2]``."""
    dtype_text = _dtype_text(dtype)
    size = int(np.prod(shape)) if all(isinstance(d, (int, np.integer)) for d in shape) else None
    if size is not None and size <= INLINE_VALUES_MAX:
        try:
            values = np.asarray(load_values()).reshape(-1).tolist()
            return f"const<{dtype_text}>{_format_values(values, scalar=len(shape) == 0)}"
        except Exception:  # values not loadable (external data missing): the shape is enough
            pass
    dims = ",".join(str(d) for d in shape)
    return f"const<{dtype_text}[{dims}]>"


def _dtype_text(dtype) -> str:
    if dtype is None:
        return "?"
    try:
        name = str(np.dtype(dtype))
    except TypeError:  # an onnx-only type such as bfloat16
        name = str(dtype)
    return _SHORT_DTYPES.get(name, name)


def _format_values(values: list, scalar: bool) -> str:
    text = ", ".join(_format_number(v) for v in values)
    return f"({text})" if scalar else f"[{text}]"


def _format_number(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def attribute_texts(attributes: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, short text) per attribute, sorted by name."""
    return sorted((name, _attribute_value_text(value)) for name, value in attributes.items())


def _attribute_value_text(value: Any) -> str:
    if isinstance(value, onnx.AttributeProto):
        value = onnx.helper.get_attribute_value(value)
    if isinstance(value, gs.Constant):
        return describe_tensor(value.dtype, tuple(value.shape), lambda: value.values).removeprefix("const")
    if isinstance(value, onnx.TensorProto):
        return describe_tensor(_onnx_dtype(value.data_type), tuple(value.dims),
                               lambda: _stored_values(value)).removeprefix("const")
    if isinstance(value, np.ndarray):
        return describe_tensor(value.dtype, value.shape, lambda: value).removeprefix("const")
    if isinstance(value, (gs.Graph, onnx.GraphProto)):
        count = len(value.nodes) if isinstance(value, gs.Graph) else len(value.node)
        return f"graph<{count} nodes>"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return '"' + (value if len(value) <= 60 else value[:57] + "...") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_attribute_value_text(item) for item in value[:16]) + (", ..." if len(value) > 16 else "") + "]"
    if isinstance(value, float):
        return _format_number(value)
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."

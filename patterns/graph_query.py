"""Small read-only queries on onnx-graphsurgeon graphs that every pattern needs."""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs


def toposort(graph: gs.Graph) -> gs.Graph:
    """``graph`` with its nodes (and its functions' and subgraphs' nodes) in topological order, in place.
    The order of the model's local functions is left as it is (the input's): onnx-graphsurgeon 0.6.1's
    function sort (toposort's default mode "full") recurses without end, RecursionError, once the graph
    holds an If, Loop or Scan and the model a local function (get_used_funcs walks the main graph's
    subgraphs again at every level), which failed every pass that sorts on such a valid model."""
    return graph.toposort(mode="nodes")


def declared_static_shape(tensor: gs.Tensor) -> Optional[list[int]]:
    """The tensor's shape as the graph declares it, where every size is a number (>= 0); else None."""
    shape = tensor.shape
    if shape is None or not all(isinstance(size, (int, np.integer)) and size >= 0 for size in shape):
        return None
    return [int(size) for size in shape]


def inputs_all_static(graph: gs.Graph) -> bool:
    """Every graph input's declared shape has only numbers: the model runs at those shapes alone, which
    verification runs, so a size inference cannot name is still one fixed size."""
    return all(declared_static_shape(tensor) is not None for tensor in graph.inputs)


def optional_input(node: gs.Node, index: int) -> Optional[gs.Tensor]:
    """The node's optional input `index`, or None where it is absent or left empty ('')."""
    if len(node.inputs) <= index or node.inputs[index] is None or not node.inputs[index].name:
        return None
    return node.inputs[index]


def producer(tensor: gs.Tensor) -> Optional[gs.Node]:
    return tensor.inputs[0] if tensor.inputs else None


def producer_op(tensor: gs.Tensor) -> Optional[str]:
    node = producer(tensor)
    return node.op if node is not None else None


# Ops whose output has their first input's element type.
_SAME_TYPE_OPS = frozenset({
    "Abs", "Add", "Clip", "Concat", "Conv", "CumSum", "Div", "Einsum", "Exp", "Expand", "Flatten", "Gather",
    "Identity", "Log", "MatMul", "Max", "Min", "Mul", "Neg", "Pad", "Pow", "Reciprocal", "ReduceSum", "Relu",
    "Reshape", "Sigmoid", "Slice", "Softplus", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Tile", "Transpose",
    "Unsqueeze"})


def element_type(tensor: gs.Tensor, limit: int = 64) -> Optional[np.dtype]:
    """``tensor``'s numpy element type: its own where recorded, a Cast's target, else its first input's
    through ops that keep it (an exporter need not record intermediate types, and tensors a pass made have
    none); None if not found within ``limit`` producers."""
    for _ in range(limit):
        if getattr(tensor, "dtype", None) is not None:
            return _numpy_type(tensor.dtype)
        node = producer(tensor)
        if node is not None and node.op == "Constant":
            value = constant_node_value(node)
            return value.dtype if value is not None else None
        if node is not None and node.op == "Cast" and "to" in node.attrs:
            return onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"]))
        if node is None or node.op not in _SAME_TYPE_OPS or not node.inputs:
            return None
        tensor = node.inputs[0]
    return None


def _numpy_type(dtype) -> Optional[np.dtype]:
    """onnx-graphsurgeon keeps the ONNX enum (an int) for types numpy lacks: bfloat16, the float8s.
    onnx maps them to ml_dtypes' numpy types, which constants can be made in and exported."""
    if not isinstance(dtype, int):
        return dtype
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype))
    except (KeyError, TypeError, ValueError):
        return None


# ONNX's typed Constant attributes; value_float(s) are float32 and value_int(s) int64 by the spec.
_CONSTANT_ATTRIBUTE_DTYPES = {"value_float": np.float32, "value_floats": np.float32,
                              "value_int": np.int64, "value_ints": np.int64}


def constant_node_value(node: gs.Node) -> Optional[np.ndarray]:
    """The tensor a Constant node makes, or None for kinds not read here (strings, sparse)."""
    value = node.attrs.get("value")
    if isinstance(value, gs.Constant):
        return np.asarray(value.values)
    for key, dtype in _CONSTANT_ATTRIBUTE_DTYPES.items():
        if key in node.attrs:
            return np.asarray(list(node.attrs[key]) if key.endswith("s") else node.attrs[key], dtype=dtype)
    return None


def constant_value(tensor: Optional[gs.Tensor]) -> Optional[np.ndarray]:
    """The value of an initializer or of a Constant node's output, else None."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is None or node.op != "Constant":
        return None
    return constant_node_value(node)


def constant_int(tensor: Optional[gs.Tensor]) -> Optional[int]:
    """A scalar or one-element integer constant as a Python int, else None."""
    value = constant_value(tensor)
    if value is None or value.size != 1 or not np.issubdtype(value.dtype, np.integer):
        return None
    return int(value.reshape(-1)[0])


def constant_ints(tensor: Optional[gs.Tensor]) -> Optional[list[int]]:
    value = constant_value(tensor)
    if value is None or not np.issubdtype(value.dtype, np.integer):
        return None
    return [int(v) for v in value.reshape(-1)]


def rank(tensor: gs.Tensor) -> Optional[int]:
    shape = getattr(tensor, "shape", None)
    return len(shape) if shape is not None else None


def normalize_axis(axis: int, tensor_rank: Optional[int]) -> Optional[int]:
    """Non-negative axis, or None when a negative axis meets an unknown rank."""
    if axis >= 0:
        return axis
    return axis + tensor_rank if tensor_rank is not None else None


def is_all_zeros(tensor: gs.Tensor) -> bool:
    """A constant of zeros, or ConstantOfShape filled with 0 (how the dynamo exporter writes zeros), through Casts
    (zeros in any type: TorchScript's zeros(x[:, 0].shape).to(float32) where the batch is dynamic)."""
    node = producer(tensor)
    while node is not None and node.op == "Cast" and node.inputs and node.inputs[0] is not None:
        tensor = node.inputs[0]
        node = producer(tensor)
    if node is not None and node.op == "ConstantOfShape":
        fill = node.attrs.get("value")
        return fill is None or not np.any(np.asarray(fill.values if isinstance(fill, gs.Constant) else fill))
    value = constant_value(tensor)
    return value is not None and not np.any(value)


def node_axes(node: gs.Node, input_index: int = 1) -> Optional[list[int]]:
    """The `axes` of Squeeze/Unsqueeze/Reduce*: an attribute before opset 13 (18 for Reduce*), an input after."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > input_index:
        return constant_ints(node.inputs[input_index])
    return None


def moved_axis(perm: list[int], axis: int) -> Optional[int]:
    """The input axis that Transpose(perm) puts at `axis`, if perm moves only that axis (the
    others keep their order); None otherwise."""
    rest = [p for position, p in enumerate(perm) if position != axis]
    return perm[axis] if rest == sorted(rest) else None


def describe(node: Optional[gs.Node]) -> str:
    return f"{node.op} '{node.name}'" if node is not None else "graph input"


def cumsum_axis(node: gs.Node, rank: int) -> Optional[int]:
    """The normalised constant axis of a CumSum, or None if it is not a constant."""
    value = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if value is None or value.size != 1:
        return None
    axis = int(value.reshape(-1)[0])
    return axis + rank if axis < 0 else axis


def cumsum_shape_and_axis(node: gs.Node, shapes: dict) -> tuple[tuple[int, ...], int] | str:
    """A CumSum's static input shape and normalised constant axis, or why not (a phrase)."""
    shape = shapes.get(node.inputs[0].name)
    if shape is None:
        return "input shape not static"
    axis = cumsum_axis(node, len(shape))
    return (shape, axis) if axis is not None else "axis is not a constant"


def slice_operands(node: gs.Node) -> Optional[tuple[np.ndarray, ...]]:
    """(starts, ends, axes, steps) as int arrays, or None if any is not a constant."""
    if len(node.inputs) < 5 or node.inputs[4] is None or not node.inputs[4].name:
        return None  # no steps input: all steps are 1 (opset < 10 has no steps at all)
    values = []
    for position in range(1, 5):
        tensor = node.inputs[position]
        value = constant_value(tensor) if tensor is not None and tensor.name else None
        if value is None and position == 3:
            value = np.arange(len(values[0]))  # axes omitted: 0..n-1
        if value is None:
            return None
        values.append(np.asarray(value, dtype=np.int64).reshape(-1))
    return tuple(values)


# Ops that draw new values at every run (a Dropout only in training mode): folding one makes its draw a constant of
# the model, the same at every run (adv13: fold-constants folded RandomNormal into an initializer).
RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
                        "Multinomial"})


def draws_random_values(node: gs.Node) -> bool:
    """Whether the node's outputs are random draws: a RANDOM_OPS node, or a Dropout whose training_mode input is
    given and not a constant false."""
    if node.op in RANDOM_OPS:
        return True
    if node.op != "Dropout":
        return False
    training_mode = optional_input(node, 2)
    if training_mode is None:
        return False
    value = constant_value(training_mode)
    return value is None or bool(np.asarray(value).any())



def linked_chains(nodes: list, before: dict) -> list[list]:
    """The chains `nodes` form, first to last, where `before` maps id(node) to the node before it (absent or None:
    none). A node two others follow ends its chain, and each of those begins one of its own."""
    following: dict[int, list] = {}
    for node in nodes:
        previous = before.get(id(node))
        if previous is not None:
            following.setdefault(id(previous), []).append(node)
    chains = []
    for node in nodes:
        previous = before.get(id(node))
        if previous is not None and len(following[id(previous)]) == 1:
            continue   # within a chain
        chain = [node]
        while len(following.get(id(chain[-1]), [])) == 1:
            chain.append(following[id(chain[-1])][0])
        chains.append(chain)
    return chains

"""Static shapes for passes that need them (the TPU passes: split-cumsum, cumsum-rank4, ...).

onnx-graphsurgeon only knows the shapes that the model carried in value_info; tensors that a
pass made have none. ``static_shapes`` exports the graph (in memory), runs ONNX shape
inference with data propagation, and returns every tensor's shape as a tuple of ints, or
None where a dimension is unknown or symbolic. Constants give their own shape.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, numpy_helper

from passes.graph_builder import unique_name
from passes.graph_io import all_graphs, copy_graph, fed_inputs, graph_to_model
from passes.one_line import printable

Shape = tuple[int, ...]
PartialShape = tuple[Optional[int], ...]

# ONNX's data propagation holds every rank-1 tensor that a data-propagating op (Concat, Slice, Gather,
# Cast, Add, ...) reads as a list of dims, ~150 bytes an element, whatever the tensor holds: a model
# of 84 bytes, one Concat of a 1-D input declared 2^31-1 long, took every byte it was given and
# minutes, in every pass that asked for shapes (and in onnxsim). It runs only where plain inference
# sizes every rank-1 tensor, and all of them together hold at most this many elements (an index
# table of the passes' own, graph_builder.MAX_INDEX_TABLE, fits; VMamba-T's naive export holds 70k).
MAX_PROPAGATED_ELEMENTS = 1 << 22


# Ops whose rank-1 output holds no more than their inputs do (or, for Shape, the rank of its input): a
# rank-1 value of a size plain inference leaves unknown is bounded when it comes from a Shape through
# them (the TorchScript exporter's shape arithmetic on a value of unknown rank), not when a size is made
# from values (ConstantOfShape, Range, Expand, Tile, Reshape ...: data propagation would size it).
_NO_LARGER_THAN_INPUTS = frozenset({"Concat", "Slice", "Gather", "Squeeze", "Unsqueeze", "Cast", "Identity", "Add",
                                    "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Max", "Min", "Equal", "Less",
                                    "Greater", "Not", "Where", "Sign", "Clip"})


# Ops whose output holds no more elements than their first (data) input, whatever its rank, their other inputs only a
# shape, axes or bounds: a rank-1 value reshaped, transposed or sliced from one of known size (or from another such)
# is bounded by it. transformers' Zamba2 hybrid layer, through TorchScript, flattens a OneHot by a target of
# Concat(Slice(Shape(..)), -1), and F.pad's pads are Concat(pads, zeros) reshaped to (-1, 2), reversed, transposed and
# flattened.
_NO_LARGER_THAN_DATA = frozenset({"Reshape", "Flatten", "Transpose", "Slice", "Squeeze", "Unsqueeze", "Identity",
                                  "Cast"})


def _shapes_and_producers(graph: onnx.GraphProto) -> tuple[dict, dict]:
    shapes = {value.name: _partial_shape_of(value.type)
              for value in list(graph.input) + list(graph.value_info) + list(graph.output)}
    for tensor in graph.initializer:
        shapes[tensor.name] = tuple(int(d) for d in tensor.dims)
    for node in graph.node:   # a Constant's output is named by the node, its tensor often not
        if node.op_type == "Constant" and node.output and node.attribute and node.attribute[0].HasField("t"):
            shapes[node.output[0]] = tuple(int(d) for d in node.attribute[0].t.dims)
    producers: dict = {name: node for node in graph.node for name in node.output}
    producers.update({value.name: None for value in graph.input})   # fed as declared: nothing to size
    return shapes, producers


def _shape_of_constant_like(node, shapes: dict, producers: dict) -> Optional[str]:
    """v of ConstantOfShape(Shape(v)) with v rank-1 (TorchScript's expand: ones of v's shape, exactly as many
    elements as v), or None. Only a whole Shape: one dim of a higher-rank v (start/end) could be far larger
    than v, whose other dims may be 0."""
    shape_node = producers.get(node.input[0]) if node.input else None
    if shape_node is None or shape_node.op_type != "Shape" or len(shape_node.attribute) or not shape_node.input:
        return None
    source = shapes.get(shape_node.input[0])
    return shape_node.input[0] if source is not None and len(source) == 1 else None


def _size_bound(name: str, shapes: dict, producers: dict, bounds: dict,
                scalars: Optional[dict] = None) -> Optional[int]:
    """An upper bound on the elements of a rank-1 value of unknown size, or None where there is none: computed
    from Shapes (their input's rank), graph inputs (fed, not propagated: 0), values of known shape (their size)
    and ConstantOfShape(Shape(v)) (v's) through _NO_LARGER_THAN_INPUTS (a Concat the sum of its inputs, the
    others the largest). Walked without recursion (a hostile chain may be long), each value once (`bounds`,
    which this call fills, is shared by the calls on one graph: a walk per value of a long chain was quadratic).
    A Range's is its length where _static_integer knows its start, limit and delta (`scalars`: the graph's
    integer constants of one element, by name): TorchScript's arange(seq_len) of a dynamic-batch export."""
    stack, expanding = [(name, False)], set()
    while stack:
        item, expanded = stack.pop()
        if item in bounds and not expanded:
            continue
        if item not in producers:   # a value of the outer graph
            return None
        node = producers[item]
        if node is None or node.op_type == "Shape":
            source = shapes.get(node.input[0]) if node is not None and node.input else None
            bounds[item] = len(source) if source is not None else 0
            continue
        if node.op_type == "Range":   # exactly its length where start, limit and delta are known numbers
            length = _range_length(node, shapes, producers, scalars)
            if length is None:
                return None
            bounds[item] = length
            continue
        if node.op_type == "ConstantOfShape" and node.input and shapes.get(node.input[0]) == (1,) and scalars is not None:
            length = _static_integer(node.input[0], shapes, producers, scalars)   # a rank-1 fill of a known length
            if length is not None:
                bounds[item] = max(length, 0)
                continue
        if node.op_type == "ConstantOfShape":
            sources = [_shape_of_constant_like(node, shapes, producers)]
            if sources[0] is None:
                return None
        elif node.op_type in _NO_LARGER_THAN_DATA and node.input and node.input[0]:
            sources = node.input[:1]
        elif node.op_type in _NO_LARGER_THAN_INPUTS:
            sources = [source for source in node.input if source]
        else:
            return None
        if expanded:
            expanding.discard(item)
            sizes = [bounds[source] for source in sources]
            bounds[item] = sum(sizes) if node.op_type == "Concat" else max(sizes, default=0)
            continue
        if item in expanding:   # a cycle: no graph ONNX would run
            return None
        expanding.add(item)
        stack.append((item, True))
        for source in sources:
            if source in bounds:
                continue
            shape = shapes.get(source)
            if shape is not None and None not in shape:
                bounds[source] = math.prod(shape)   # exact: a hostile shape's product may pass int64
                continue
            if shape is None or len(shape) != 1 and getattr(producers.get(source), "op_type", None) not in _NO_LARGER_THAN_DATA:
                return None
            stack.append((source, False))   # one being expanded is a cycle, refused when it is popped
    return bounds[name]


_INTEGER_TYPES = frozenset({TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
                            TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64})
MAX_SCALAR_PATH = 8


def _integer_scalars(graph: onnx.GraphProto) -> dict:
    """The graph's integer constants of one element (initializers, Constant nodes), by name, as Python ints."""
    tensors = [(tensor.name, tensor) for tensor in graph.initializer]
    tensors += [(node.output[0], node.attribute[0].t) for node in graph.node if node.op_type == "Constant"
                and node.output and len(node.attribute) == 1 and node.attribute[0].HasField("t")]
    scalars = {}
    for name, tensor in tensors:
        if tensor.data_type in _INTEGER_TYPES and math.prod(tensor.dims) == 1 and not tensor.external_data:
            scalars[name] = int(numpy_helper.to_array(tensor).reshape(-1)[0])
    return scalars


def _static_integer(name: str, shapes: dict, producers: dict, scalars: dict, depth: int = 0) -> Optional[int]:
    """The value of a one-element integer `name` that needs no data propagation: an integer constant, or one size
    of a value whose shape plain inference knows there (Gather(Shape(v), i) with i a constant), through Casts to
    integer types, Identity, Squeeze and Unsqueeze, and Add/Sub/Mul of two such (TorchScript's F.pad: 2 * rank - a
    size); else None. At most MAX_SCALAR_PATH steps and as many nested operations."""
    for _ in range(MAX_SCALAR_PATH):
        if name in scalars:
            return scalars[name]
        node = producers.get(name)
        if node is None or not node.input:
            return None
        if node.op_type == "Cast" and any(attr.name == "to" and attr.i in _INTEGER_TYPES for attr in node.attribute):
            name = node.input[0]
        elif node.op_type in ("Identity", "Squeeze", "Unsqueeze"):
            name = node.input[0]
        elif node.op_type in ("Add", "Sub", "Mul") and len(node.input) == 2 and depth < MAX_SCALAR_PATH:
            left, right = (_static_integer(operand, shapes, producers, scalars, depth + 1) for operand in node.input)
            if left is None or right is None:
                return None
            return left + right if node.op_type == "Add" else left - right if node.op_type == "Sub" else left * right
        elif node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in scalars:
            shape_node = producers.get(node.input[0])
            if shape_node is None or shape_node.op_type != "Shape" or len(shape_node.attribute) or not shape_node.input:
                return None
            shape = shapes.get(shape_node.input[0])
            index = scalars[node.input[1]]
            if shape is None or not -len(shape) <= index < len(shape) or shape[index] is None:
                return None
            return int(shape[index])
        else:
            return None
    return None


def _range_length(node, shapes: dict, producers: dict, scalars: Optional[dict]) -> Optional[int]:
    """How many elements Range(start, limit, delta) makes where all three are _static_integer, else None."""
    if scalars is None or len(node.input) != 3:
        return None
    values = [_static_integer(name, shapes, producers, scalars) for name in node.input]
    if any(value is None for value in values) or values[2] == 0:
        return None
    start, limit, delta = values
    return max(0, -((start - limit) // delta))   # ceil((limit - start) / delta), exact for any size


def data_propagation_refusal(model: onnx.ModelProto) -> Optional[str]:
    """Why ONNX's data propagation would be unbounded on `model` (shapes inferred without it), or None."""
    sizes: dict[str, int] = {}
    for graph in all_graphs(model.graph):
        shapes, producers = _shapes_and_producers(graph)
        bounds: dict[str, int] = {}
        scalars = _integer_scalars(graph)
        for name, shape in shapes.items():
            if shape is None or len(shape) != 1:
                continue
            size = shape[0] if shape[0] is not None else _size_bound(name, shapes, producers, bounds, scalars)
            if size is None:
                return f"rank-1 tensor '{printable(name)}' has a size only data propagation would find"
            sizes[name] = size
    total = sum(sizes.values())
    if total > MAX_PROPAGATED_ELEMENTS:
        largest = max(sizes, key=sizes.get)
        return (f"rank-1 tensors hold {total:,} elements (> {MAX_PROPAGATED_ELEMENTS:,}; '{printable(largest)}' "
                f"{sizes[largest]:,}), which data propagation would write out one by one")
    return None


def infer_shapes(model: onnx.ModelProto,
                 plain: Optional[onnx.ModelProto] = None) -> tuple[onnx.ModelProto, Optional[str]]:
    """ONNX shape inference with data propagation where it is bounded (MAX_PROPAGATED_ELEMENTS), else
    without; and the reason it was left out, or None. `model` itself where inference fails. `plain`:
    `model` already through ONNX's inference without data propagation (a check's strict inference, the
    same model where it passes), not inferred again."""
    if plain is None:
        try:
            plain = onnx.shape_inference.infer_shapes(model)
        except Exception:   # best effort: the callers' shapes stay unknown
            return model, None
    refusal = data_propagation_refusal(plain)
    if refusal is not None:
        return plain, refusal
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True), None
    except Exception:
        return plain, None


class StaticCount(NamedTuple):
    """A value whose every size is a number, and how many elements it holds (a negative size, invalid,
    holds none: ONNX Runtime reads it as unknown)."""
    name: str
    shape: Shape
    elements: int


def static_element_counts(inferred: onnx.ModelProto, *, graph_inputs: bool = True,
                          subgraphs: bool = False) -> Iterator[StaticCount]:
    """The values of `inferred` (a model through infer_shapes) whose shape is static, in order: the graph's
    inputs (with `graph_inputs`), value_info and outputs, of the main graph and, with `subgraphs`, of each
    graph nested in it (If/Loop/Scan bodies), depth first. Symbolic sizes (a dynamic batch) are not static.
    The one count of passes.verify's size cap and of fold-constants' (passes.constant_sizes)."""
    for graph in all_graphs(inferred.graph) if subgraphs else [inferred.graph]:
        for value in (list(graph.input) if graph_inputs else []) + list(graph.value_info) + list(graph.output):
            tensor_type = value.type.tensor_type
            if value.type.HasField("tensor_type") and tensor_type.HasField("shape") and all(
                    dim.HasField("dim_value") for dim in tensor_type.shape.dim):
                shape = tuple(int(dim.dim_value) for dim in tensor_type.shape.dim)
                yield StaticCount(value.name, shape, math.prod(max(size, 0) for size in shape))


def _partial_shape_of(type_proto: onnx.TypeProto) -> Optional[PartialShape]:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else None
                 for d in type_proto.tensor_type.shape.dim)


def partial_shapes(graph: gs.Graph) -> dict[str, Optional[PartialShape]]:
    """Tensor name -> shape with None for unknown or symbolic dims (a dynamic batch), None if the rank is unknown."""
    return _partial_shapes(graph)[0]


def _partial_shapes(graph: gs.Graph) -> tuple[dict[str, Optional[PartialShape]], Optional[str]]:
    """`partial_shapes`, and why data propagation was left out (infer_shapes), or None."""
    inferred, refusal = infer_shapes(graph_to_model(graph))
    return _shapes_of(graph, inferred, _partial_shape_of), refusal


NamedShape = tuple[object, ...]   # each size a number, a name (str) or None


def _named_shape_of(type_proto: onnx.TypeProto) -> Optional[NamedShape]:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0
                 else d.dim_param if d.HasField("dim_param") and d.dim_param else None
                 for d in type_proto.tensor_type.shape.dim)


def named_shapes(graph: gs.Graph, of: Optional[Sequence[str]] = None) -> dict[str, Optional[NamedShape]]:
    """Tensor name -> shape with each size a number, a name or None (unknown): ONNX's shape inference (with data
    propagation where it is bounded) from the graph's inputs and constants alone, the shapes the model declares for
    the values between (value_info) and for its outputs left out: a declaration is no proof (ONNX Runtime checks
    none of them). Two sizes of one name are one size: a graph input's dim_param, which ONNX reads as the same
    size wherever it appears (ONNX Runtime does not check that), or a name inference gave one unknown size and
    carried only where the op makes the size the same (a broadcast of two names is a new one). `of`: the names
    wanted, inferred on the part of the graph that computes them."""
    graph, model = _undeclared_part_computing(graph, of)
    inferred, _ = infer_shapes(model)
    return _named_shapes_of(graph, inferred)


def _undeclared_part_computing(graph: gs.Graph, of: Optional[Sequence[str]]) -> tuple[gs.Graph, onnx.ModelProto]:
    """A copy of `graph` cut to what computes the tensors `of` (all of it where None), and its model with no shape
    declared but the graph inputs'."""
    graph = copy_graph(graph)
    if of is not None:   # only what computes them: data propagation is refused on a graph that also makes, say,
        # index tuples of a Range of a size only it would find (patterns/index_put's)
        tensors, outputs = graph.tensors(), []
        taken = set(tensors) | {node.name for node in graph.nodes}
        for name in dict.fromkeys(of):   # each read by an Identity: inference leaves a graph output's shape as
            if name in tensors:           # declared (here: none)
                outputs.append(gs.Variable(unique_name(f"{name}/named_shape", taken), dtype=tensors[name].dtype))
                graph.nodes.append(gs.Node("Identity", inputs=[tensors[name]], outputs=[outputs[-1]]))
        graph.outputs = outputs
        graph.cleanup()
    model = graph_to_model(graph)
    del model.graph.value_info[:]
    for output in model.graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    return graph, model


def _shapes_of(graph: gs.Graph, inferred: onnx.ModelProto, shape_of: Callable[[onnx.TypeProto], Any]) -> dict:
    """Each tensor's shape as ``shape_of`` reads its type in ``inferred`` (``graph`` exported and inferred; an output's
    declared type read last), a constant's from its values."""
    shapes = {v.name: shape_of(v.type)
              for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    for name, tensor in graph.tensors().items():
        if isinstance(tensor, gs.Constant):
            shapes[name] = tuple(int(d) for d in tensor.shape)
    return shapes


def _named_shapes_of(graph: gs.Graph, inferred: onnx.ModelProto) -> dict[str, Optional[NamedShape]]:
    return _shapes_of(graph, inferred, _named_shape_of)


def symbolic_named_shapes(graph: gs.Graph, of: Sequence[str]) -> dict[str, Optional[NamedShape]]:
    """`named_shapes` of the tensors `of` by ONNX Runtime's symbolic shape inference with no merging of sizes: it
    follows a size through Shape -> Gather -> Concat -> Reshape round trips as one sympy expression, where ONNX's
    inference names it anew at each Reshape (VMamba's dynamic batch: b_0 ('unk__5', ..) against x_0 ('unk__16', ..));
    two different names broadcast together give no name (never taken to be one size, which `auto_merge` would do).
    {} where the tool fails or leaves shapes unknown, or where ONNX's data propagation is unbounded (the tool keeps
    every int64 value it computes)."""
    graph, model = _undeclared_part_computing(graph, of)
    if data_propagation_refusal(model) is not None:
        return {}
    inferred = _symbolic_inference(model, auto_merge=False)
    return _named_shapes_of(graph, inferred) if inferred is not None else {}


def static_shapes(graph: gs.Graph) -> dict[str, Optional[Shape]]:
    """Tensor name -> static shape (None where not fully known). Never raises for inference."""
    shapes: dict[str, Optional[Shape]] = {
        name: tuple(shape) if shape is not None and None not in shape else None
        for name, shape in partial_shapes(graph).items()}
    for name, tensor in graph.tensors().items():
        if shapes.get(name) is None and tensor.shape is not None and all(
                isinstance(d, (int, np.integer)) and d >= 0 for d in tensor.shape):
            shapes[name] = tuple(int(d) for d in tensor.shape)
    return shapes


def reshape_target(shape: PartialShape) -> Optional[list[int]]:
    """A constant Reshape target giving `shape`, -1 for its one unknown size; None where two are unknown or
    a size is 0 (a 0 in a target would copy the input's size)."""
    unknown = [d for d in shape if d is None]
    if len(unknown) > 1 or 0 in shape:
        return None
    return [-1 if d is None else d for d in shape]


def _no_guessed_sizes(ort_tool):
    """ORT's SymbolicShapeInference, except that a symbol broadcast against a size s > 1 stays a
    symbol: auto_merge took it to be s everywhere (the graph input's own dims included), though
    1 broadcasts too, and a pass then baked s into a Reshape that fails at batch 1."""

    class NoGuessedSizes(ort_tool.SymbolicShapeInference):
        def _broadcast_shapes(self, shape1, shape2):
            shape1, shape2 = list(shape1), list(shape2)
            for i in range(1, min(len(shape1), len(shape2)) + 1):
                a, b = shape1[-i], shape2[-i]
                if isinstance(a, str) and ort_tool.is_literal(b) and b != 1:
                    shape1[-i] = b       # the result's size, without merging the symbol into it
                elif isinstance(b, str) and ort_tool.is_literal(a) and a != 1:
                    shape2[-i] = a
            return super()._broadcast_shapes(shape1, shape2)

        def _check_merged_dims(self, dims, allow_broadcast=True):
            if allow_broadcast and any(ort_tool.is_literal(d) and int(d) > 1 for d in dims):
                dims = [d for d in dims if not isinstance(d, str)]   # the symbols may be 1
            super()._check_merged_dims(dims, allow_broadcast)

        def _onnx_infer_subgraph(self, node, subgraph, *args, **kwargs):
            # ORT hands a subgraph (an If's branch, a Loop's body) every value info of the graph as an input, so a
            # graph of many Ifs took time quadratic in its size: an opset-12 dynamic-batch export guards every
            # Squeeze with one (147 Ifs, 2,605 nodes: 6.7 s; VMamba-T-sized: hours). Only the names it reads count.
            every = self.known_vi_
            read = _names_read(subgraph)
            self.known_vi_ = {name: info for name, info in every.items() if name in read}
            try:
                return super()._onnx_infer_subgraph(node, subgraph, *args, **kwargs)
            finally:
                self.known_vi_ = every

    return NoGuessedSizes


def _names_read(graph: onnx.GraphProto) -> set[str]:
    """Every name a node of `graph`, or of a subgraph nested in one, takes as an input."""
    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for nested in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                names |= _names_read(nested)
    return names


_ORT_SYMBOLIC_TOOL = "onnxruntime.tools.symbolic_shape_infer"


def _ort_symbolic_tool():
    """ONNX Runtime's symbolic_shape_infer module, loaded from its file without running onnxruntime.tools'
    __init__, which imports torch where it is installed (pytorch_export_helpers; the import took 3.0-3.4 s that
    way, 1.5-2.1 s this way, dev 2-core); the passes never import torch. Registered under its own name, so a later import finds this one."""
    import importlib.util
    import sys
    from pathlib import Path

    module = sys.modules.get(_ORT_SYMBOLIC_TOOL)
    if module is not None:
        return module
    package = importlib.util.find_spec("onnxruntime")   # a top-level package: found, not imported
    if package is None or not package.submodule_search_locations:
        raise ImportError("onnxruntime is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "tools" / "symbolic_shape_infer.py"
    spec = importlib.util.spec_from_file_location(_ORT_SYMBOLIC_TOOL, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"no {_ORT_SYMBOLIC_TOOL} at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_ORT_SYMBOLIC_TOOL] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_ORT_SYMBOLIC_TOOL]
        raise
    return module


def _symbolic_inference(model: onnx.ModelProto, auto_merge: bool = True) -> Optional[onnx.ModelProto]:
    """ONNX Runtime's symbolic shape inference (`auto_merge`: two symbols broadcast together taken
    to be one), or None where it fails or leaves shapes unknown. Its own ``infer_shapes`` is not
    called: on an incomplete inference it saves 'sym_shape_infer_temp.onnx' into the working
    folder (a file left behind, written through a planted link), and its logger prints dimension
    names, hostile text, raw to stderr."""
    ort_tool = _ort_symbolic_tool()

    opset = ort_tool.get_opset(model)
    if not opset or opset < 7:
        return None
    logger = logging.getLogger(ort_tool.__name__)
    disabled, logger.disabled = logger.disabled, True
    try:
        # infer_shapes' loop (onnxruntime 1.32), without its save and with its logging off
        tool = _no_guessed_sizes(ort_tool)(2**31 - 1, auto_merge, False, 0)
        complete = False
        tool._preprocess(model)
        while tool.run_:
            complete = tool._infer_impl()
        tool._update_output_from_vi()
    except Exception:  # best effort: the caller's ONNX-inferred shapes stand
        return None
    finally:
        logger.disabled = disabled
    return tool.out_mp_ if complete else None


def symbolic_partial_shapes(graph: gs.Graph) -> dict[str, Optional[PartialShape]]:
    """`partial_shapes`, with ONNX Runtime's symbolic shape inference first: it follows shapes
    through Shape/Slice/Concat arithmetic that ONNX's own inference gives up on (transformers'
    Mamba slices its projections with bounds computed from Shape, so its sequence axis was unknown
    to ONNX inference; ORT's tool gives 1024). A dimension it can only name stays None. Falls back
    to `partial_shapes` where the tool fails, and where ONNX's data propagation is unbounded: the tool
    keeps the value of every int64 tensor it can compute as Python numbers (a Concat of 8 ConstantOfShapes
    of 2^22 held ~1 GB)."""
    shapes, refusal = _partial_shapes(graph)
    if refusal is not None:
        return shapes
    inferred = _symbolic_inference(graph_to_model(graph))
    if inferred is None:
        return shapes
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        shape = _partial_shape_of(value.type)
        if shape is not None:
            known = shapes.get(value.name)
            shapes[value.name] = shape if known is None else tuple(
                a if a is not None else b for a, b in zip(shape, known)) if len(known) == len(shape) else shape
    return shapes


class ContradictedValueInfo(NamedTuple):
    """A value_info entry pinning a size that the graph inputs leave symbolic: its declared dims and the dims ONNX's
    shape inference from the inputs alone gives it (numbers, names; None for unknown). `body`: where it is declared,
    () for the main graph, else the path to an If/Loop/Scan body, one (node index, attribute name, index in the
    attribute's graphs) step per level; `label` names that body for a reader (`If(cond).then_branch`, the node's
    name as the model spells it, unescaped)."""
    name: str
    declared: NamedShape
    inferred: NamedShape
    body: tuple = ()
    label: str = ""


# The ONNX ops whose attributes hold graphs (a node of another domain may hold one too: read)
_BODY_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


def _bodies(graph: onnx.GraphProto, path: tuple = (), label: str = "") -> Iterator[tuple[tuple, str, onnx.GraphProto]]:
    """(path, label, body) for every If/Loop/Scan body nested in `graph`, depth first; a path is what
    ContradictedValueInfo.body holds."""
    for index, node in enumerate(graph.node):
        if node.domain in ("", "ai.onnx") and node.op_type not in _BODY_OPS:
            continue   # (no other ONNX op holds a graph: 0.07 s over VMamba-T's 76,529 nodes, reading each one's
            # attributes 0.4 s)
        for attribute in node.attribute:
            bodies = [(0, attribute.g)] if attribute.HasField("g") else []
            bodies += list(enumerate(attribute.graphs))
            for position, body in bodies:
                owner = f"{node.op_type}({node.name})" if node.name else f"{node.op_type}#{index}"
                where = (label + "/" if label else "") + f"{owner}.{attribute.name}" + (
                    f"[{position}]" if not attribute.HasField("g") else "")
                step = path + ((index, attribute.name, position),)
                yield step, where, body
                yield from _bodies(body, step, where)


def _body_at(graph: onnx.GraphProto, path: tuple) -> Optional[onnx.GraphProto]:
    for index, attribute_name, position in path:
        if index >= len(graph.node):
            return None
        attribute = next((a for a in graph.node[index].attribute if a.name == attribute_name), None)
        if attribute is None:
            return None
        graph = attribute.g if attribute.HasField("g") else (
            attribute.graphs[position] if position < len(attribute.graphs) else None)
        if graph is None:
            return None
    return graph


def _declares_a_number(value: onnx.ValueInfoProto) -> bool:
    shape = _named_shape_of(value.type)
    return shape is not None and any(isinstance(size, int) for size in shape)


def _scope_shapes(graph: onnx.GraphProto) -> dict[str, Optional[NamedShape]]:
    shapes = {tensor.name: tuple(int(d) for d in tensor.dims) for tensor in graph.initializer}
    shapes.update({value.name: _named_shape_of(value.type)
                   for value in list(graph.input) + list(graph.value_info) + list(graph.output)})
    return shapes


def _first_iteration_shapes(bare: onnx.ModelProto, inferred: onnx.ModelProto) -> bool:
    """Give each Loop body's carried inputs in `bare` the shapes `inferred` gives the Loop's initial values, where the
    body declares none: ONNX's inference passes a Loop body its carried values' element types only (a carried shape
    may change from one iteration to the next), so a body read nothing from them; the first iteration's shapes are
    what the initial values are. True where a shape was given (inference runs again)."""
    given = False

    def visit(bare_graph: onnx.GraphProto, inferred_graph: onnx.GraphProto, outer: dict) -> None:
        nonlocal given
        scope = {**outer, **_scope_shapes(inferred_graph)}
        for bare_node, inferred_node in zip(bare_graph.node, inferred_graph.node):
            for bare_attribute, inferred_attribute in zip(bare_node.attribute, inferred_node.attribute):
                if not bare_attribute.HasField("g"):
                    continue
                body, inferred_body = bare_attribute.g, inferred_attribute.g
                if bare_node.op_type == "Loop" and bare_attribute.name == "body":
                    for value, outer_name in zip(body.input[2:], bare_node.input[2:]):
                        shape = scope.get(outer_name)
                        tensor_type = value.type.tensor_type
                        if (shape is None or not value.type.HasField("tensor_type")
                                or tensor_type.HasField("shape")):
                            continue
                        tensor_type.shape.SetInParent()   # (a scalar's shape is one without dims)
                        dims = tensor_type.shape.dim
                        for size in shape:
                            dim = dims.add()
                            if isinstance(size, int):
                                dim.dim_value = size
                            elif size is not None:
                                dim.dim_param = size
                        given = True
                visit(body, inferred_body, scope)

    visit(bare.graph, inferred.graph, {})
    return given


def contradicted_value_info(model: onnx.ModelProto) -> list[ContradictedValueInfo]:
    """The main graph's intermediate value_info entries (neither graph input nor output), and every declared value of
    an If/Loop/Scan body (its inputs, value_info and outputs: a body's interface is not the model's), that declare a
    number where ONNX's shape inference, run from the graph inputs alone (a copy with every intermediate value_info,
    output shape and body declaration removed; data propagation where it is bounded), proves the size a graph input's
    dim_param: `t = Relu(x)` declared [1, 4] under an input [N, 4], as an export traced at batch 1 may leave it. A
    value_info is metadata ONNX Runtime never checks; a pass that took it at its word wrote a graph right at N = 1
    only (adv20); inside a body ONNX Runtime takes it at its word itself (an If branch's output buffer is made [1, 4]:
    the model fails at N = 3), unroll-loops copied it onto every step (adv22: the compiled model's input declared
    [1, 4]). ONNX's inference gives a Loop body no carried shape (it may change between iterations); the bodies are
    inferred again with the Loop's initial values' shapes, the first iteration's, where a body declares none. Only a
    proven contradiction counts (that, or another number than inference gives: the entry traced at batch 1 under an
    input --input-shape pinned to 3): an unknown size, a size inference names anew, a rank that differs, or a model
    inference fails on, is no proof. [] at once where no entry declares a number."""
    graph = model.graph
    symbols = {dim.dim_param for value in fed_inputs(graph) if value.type.HasField("tensor_type")
               for dim in value.type.tensor_type.shape.dim if dim.HasField("dim_param") and dim.dim_param}
    interface = {value.name for value in graph.input} | {value.name for value in graph.output}
    declared: dict[tuple, tuple[str, dict]] = {}
    main = {value.name: _named_shape_of(value.type) for value in graph.value_info
            if value.name not in interface and _declares_a_number(value)}
    if main:
        declared[()] = ("", main)
    for path, label, body in _bodies(graph):
        entries = {value.name: _named_shape_of(value.type)
                   for value in list(body.input) + list(body.value_info) + list(body.output) if _declares_a_number(value)}
        if entries:
            declared[path] = (label, entries)
    if not declared:
        return []
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    for output in bare.graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    for _, _, body in _bodies(bare.graph):
        del body.value_info[:]
        for value in list(body.input) + list(body.output):
            if value.type.HasField("tensor_type"):
                value.type.tensor_type.ClearField("shape")
    inferred_model, _ = infer_shapes(bare)
    for _ in range(1 + sum(1 for _ in _bodies(bare.graph))):   # a nested Loop's carried shapes, level by level
        if inferred_model is bare or not _first_iteration_shapes(bare, inferred_model):
            break
        inferred_model, _ = infer_shapes(bare)
    found = []
    for path, (label, entries) in declared.items():
        inferred_graph = _body_at(inferred_model.graph, path)
        if inferred_graph is None:
            continue
        inferred = {value.name: _named_shape_of(value.type) for value in (
            list(inferred_graph.value_info) if not path else
            list(inferred_graph.input) + list(inferred_graph.value_info) + list(inferred_graph.output))}
        for name, shape in entries.items():
            proven = inferred.get(name)
            if proven is not None and len(proven) == len(shape) and any(
                    isinstance(size, int) and (isinstance(proof, str) and proof in symbols
                                               or isinstance(proof, int) and proof != size)
                    for size, proof in zip(shape, proven)):
                found.append(ContradictedValueInfo(name, shape, proven, path, label))
    return found


def drop_value_info_shapes(model: onnx.ModelProto, names: Sequence[str | ContradictedValueInfo]) -> None:
    """Clear the shape (the element type kept) of the value_info entries named `names`, in place: a name, the main
    graph's value_info; a ContradictedValueInfo, the entry where it was found (a body's input, value_info or
    output)."""
    for entry in names:
        name, path = (entry, ()) if isinstance(entry, str) else (entry.name, entry.body)
        graph = _body_at(model.graph, path)
        if graph is None:
            continue
        values = list(graph.value_info) + (list(graph.input) + list(graph.output) if path else [])
        for value in values:
            if value.name == name and value.type.HasField("tensor_type"):
                value.type.tensor_type.ClearField("shape")

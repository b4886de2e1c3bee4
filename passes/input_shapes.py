"""Fix symbolic input dimensions: `--input-shape NAME:D0,D1,...` (onnxsim's convention).

A user who only has the ONNX file (the public fork's exports declare a symbolic batch axis
but bake batch 1 into their Reshapes) can pin every input dimension before compiling. The
input's declared dims are replaced; wherever one of its symbolic dims (dim_param "batch")
appears elsewhere in the graph's declared shapes (outputs, value_info), it gets the same
value, so nothing keeps claiming the old symbol. Static dims must agree with what is given.
"""
from __future__ import annotations

import onnx

from passes.graph_io import fed_inputs
from passes.one_line import is_integer, printable, printable_names

MAX_DIM = 2**31 - 1   # ONNX Runtime's dimensions; a larger value is no shape a model can run with


class InputShapeError(ValueError):
    """A bad --input-shape request (one line, for the CLI)."""


def parse_input_shape(text: str) -> tuple[str, list[int]]:
    """'x:1,3,224,224' -> ('x', [1, 3, 224, 224]). The name may itself contain ':' (the last one splits)."""
    name, sep, dims_text = text.rpartition(":")
    if not sep or not name or not dims_text:
        raise InputShapeError(f"--input-shape '{printable(text)}': expected NAME:D0,D1,... (e.g. input:1,3,224,224)")
    # ASCII digits only (a '-' gets the range error): int() would also take '1_0' (10), other
    # scripts' digits, '+' and spaces
    if not all(d.removeprefix("-").isascii() and d.removeprefix("-").isdigit() for d in dims_text.split(",")):
        raise InputShapeError(f"--input-shape '{printable(text)}': dimensions must be integers")
    dims = [int(d) for d in dims_text.split(",")]
    if any(d < 1 or d > MAX_DIM for d in dims):
        raise InputShapeError(f"--input-shape '{printable(text)}': dimensions must be from 1 to {MAX_DIM}")
    return name, dims


def parse_input_shapes(texts: list[str]) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for text in texts:
        name, dims = parse_input_shape(text)
        if name in shapes:
            raise InputShapeError(f"--input-shape given twice for input '{printable(name)}'")
        shapes[name] = dims
    return shapes


def fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> dict[str, int]:
    """Set the given inputs' dims in `model` (in place). Returns the symbols fixed, {dim_param: value}."""
    inputs = {value.name: value for value in fed_inputs(model.graph)}
    symbols: dict[str, int] = {}
    for name, dims in shapes.items():
        # the CLI's parse_input_shape checks these too; compile_model's callers reach here directly
        if not all(is_integer(d) and 1 <= d <= MAX_DIM for d in dims):
            raise InputShapeError(f"--input-shape: input '{printable(name)}' dims {printable(list(dims))}: each must be an integer "
                                  f"from 1 to {MAX_DIM}")
        if name not in inputs:
            raise InputShapeError(f"--input-shape: the model has no input '{printable(name)}' (inputs: {printable_names(inputs)})")
        tensor_type = inputs[name].type.tensor_type
        declared = tensor_type.shape.dim if tensor_type.HasField("shape") else None
        if declared is not None and len(declared) != len(dims):
            raise InputShapeError(f"--input-shape: input '{printable(name)}' has rank {len(declared)}, got {len(dims)} dims")
        for axis, value in enumerate(dims):
            if declared is None:
                break
            dim = declared[axis]
            if dim.HasField("dim_value") and dim.dim_value != value:
                raise InputShapeError(f"--input-shape: input '{printable(name)}' axis {axis} is {dim.dim_value}, got {value}")
            if dim.HasField("dim_param") and dim.dim_param:
                if symbols.get(dim.dim_param, value) != value:
                    raise InputShapeError(f"--input-shape: symbol '{printable(dim.dim_param)}' given two values "
                                          f"({symbols[dim.dim_param]} and {value})")
                symbols[dim.dim_param] = value
        tensor_type.ClearField("shape")
        for value in dims:
            tensor_type.shape.dim.add().dim_value = value
    for info in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if not info.type.tensor_type.HasField("shape"):
            continue
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in symbols:
                dim.dim_value = symbols[dim.dim_param]
    return symbols


def symbolic_inputs(model: onnx.ModelProto) -> list[str]:
    """Names of graph inputs with a symbolic or unknown dimension."""
    names = []
    for info in fed_inputs(model.graph):
        tensor_type = info.type.tensor_type
        if not tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in tensor_type.shape.dim):
            names.append(info.name)
    return names

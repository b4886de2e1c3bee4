"""Numerical verification with ONNX Runtime: run a model, compare outputs with a reference.

A reference is an ``.npz`` holding the model inputs (keys named like graph inputs) and the
expected outputs (keys named like graph outputs); other keys such as ``logits@float64``
are ignored. ``find_reference_beside("naive.onnx")`` looks for ``naive.ref.npz``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx

from passes.one_line import one_line


class VerificationError(Exception):
    """Outputs differ beyond tolerance (or a model could not run); one line for the user."""


class ReferenceDataError(Exception):
    """No inputs and expected outputs for this model: the reference npz cannot be read or does not
    fit it, or random inputs cannot be made for one of its input types. (Not ``ReferenceError``,
    which is a Python builtin.)"""


@dataclass
class OutputComparison:
    name: str
    max_abs: float
    rel_l2: float
    tolerance: float
    ok: bool
    problem: str = ""  # why it failed beyond the numbers: missing output, shape mismatch, NaN

    def to_dict(self) -> dict:
        return {key: _json_number(value) for key, value in asdict(self).items()}


def _json_number(value):
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # JSON has no inf/nan
    return value


def summarize(comparisons: list[OutputComparison]) -> dict:
    """Worst figures over all outputs, for a report line."""
    return {
        "ok": all(c.ok for c in comparisons),
        "max_abs": _json_number(max((c.max_abs for c in comparisons), default=0.0)),
        "rel_l2": _json_number(max((c.rel_l2 for c in comparisons), default=0.0)),
        "outputs": [c.to_dict() for c in comparisons],
    }


def run_model(model_or_path: onnx.ModelProto | str | os.PathLike, feeds: Mapping[str, np.ndarray],
              log: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Run on ONNX Runtime's CPU provider with default graph optimisations."""
    import onnxruntime as ort

    if isinstance(model_or_path, onnx.ModelProto):
        source = model_or_path.SerializeToString()
        node_count = len(model_or_path.graph.node)
        label = f"{node_count} nodes"
    else:
        source = str(model_or_path)
        label = source
    if log:
        log(f"creating ONNX Runtime session ({label}); large graphs take a while")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's own warnings would break our one-line output
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        input_names = [i.name for i in session.get_inputs()]
        missing = [name for name in input_names if name not in feeds]
        if missing:
            raise VerificationError(f"no input data for model input(s): {', '.join(missing)}")
        output_names = [o.name for o in session.get_outputs()]
        values = session.run(output_names, {name: feeds[name] for name in input_names})
    except VerificationError:
        raise
    except Exception as error:
        raise VerificationError(f"ONNX Runtime could not run the model: {one_line(error, limit=400)}") from None
    return dict(zip(output_names, values))


def compare(outputs: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray],
            rtol_l2: float = 1e-5) -> list[OutputComparison]:
    """Compare every reference output; rel L2 = ||a - b|| / ||b|| (||a - b|| when ||b|| = 0)."""
    comparisons = []
    for name, expected in references.items():
        if name not in outputs:
            comparisons.append(OutputComparison(name, float("inf"), float("inf"), rtol_l2, False, "output missing"))
            continue
        actual = np.asarray(outputs[name])
        expected = np.asarray(expected)
        if actual.shape != expected.shape:
            comparisons.append(OutputComparison(
                name, float("inf"), float("inf"), rtol_l2, False,
                f"shape {list(actual.shape)} != expected {list(expected.shape)}"))
            continue
        a = actual.astype(np.float64)
        b = expected.astype(np.float64)
        difference = a - b
        max_abs = float(np.max(np.abs(difference))) if difference.size else 0.0
        reference_norm = float(np.linalg.norm(b))
        difference_norm = float(np.linalg.norm(difference))
        rel_l2 = difference_norm / reference_norm if reference_norm > 0 else difference_norm
        finite = bool(np.isfinite(rel_l2))  # NaN or inf anywhere makes the norm non-finite
        ok = finite and rel_l2 <= rtol_l2
        comparisons.append(OutputComparison(name, max_abs, rel_l2, rtol_l2, ok,
                                            "" if finite else "non-finite values"))
    return comparisons


def _graph_io_names(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    outputs = [o.name for o in model.graph.output]
    return inputs, outputs


def load_reference(npz_path: str | os.PathLike, model: onnx.ModelProto
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Split a reference npz into (feeds, expected outputs) by the model's input/output names."""
    try:
        archive = np.load(npz_path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ReferenceDataError(f"cannot read reference {npz_path}: {one_line(error)}") from None
    with archive:
        data = {key: archive[key] for key in archive.files}
    input_names, output_names = _graph_io_names(model)
    feeds = {name: data[name] for name in input_names if name in data}
    expected = {name: data[name] for name in output_names if name in data}
    missing_inputs = [name for name in input_names if name not in data]
    if missing_inputs:
        raise ReferenceDataError(f"reference {npz_path} lacks model input(s): {', '.join(missing_inputs)}")
    if not expected:
        raise ReferenceDataError(
            f"reference {npz_path} has none of the model outputs ({', '.join(output_names)}); keys: {', '.join(data)}")
    return feeds, expected


def find_reference_beside(model_path: str | os.PathLike) -> Path | None:
    """``dir/naive.onnx`` -> ``dir/naive.ref.npz`` if it exists."""
    model_path = Path(model_path)
    candidate = model_path.with_name(f"{model_path.stem}.ref.npz")
    return candidate if candidate.is_file() else None


_NUMPY_TYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.BOOL: np.bool_,
}


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for a model without a reference: standard normal floats, small ints; symbolic dims -> 1."""
    rng = np.random.default_rng(seed)
    initializers = {i.name for i in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                 for d in tensor_type.shape.dim]
        dtype = _NUMPY_TYPES.get(tensor_type.elem_type)
        if dtype is None:
            raise ReferenceDataError(f"cannot make random data for input '{value.name}' of type "
                                 f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}")
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[value.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[value.name] = rng.integers(0, 4, shape).astype(dtype)
    return feeds

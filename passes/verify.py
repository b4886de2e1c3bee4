"""Numerical verification with ONNX Runtime: run a model, compare outputs with a reference.

A reference is an ``.npz`` holding the model inputs (keys named like graph inputs) and the
expected outputs (keys named like graph outputs); other keys such as ``logits@float64``
are ignored. ``find_reference_beside("naive.onnx")`` looks for ``naive.ref.npz``.
"""
from __future__ import annotations

import math
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from functools import lru_cache
from typing import Callable, Mapping

import numpy as np
import onnx
import onnx.inliner
import onnx.numpy_helper
from onnx.external_data_helper import uses_external_data

from passes import ort_worker
from passes.files import FOLDER_CHANGED, FileChangedError, checked_file, open_checked
from passes.graph_io import all_graphs, all_tensors, fed_inputs
from passes.npz_arrays import NpzError, npz_member_names, read_npz
from passes.one_line import check_number, one_line, printable, printable_names
from passes.relative_error import difference as exact_difference, relative_l2
from passes.static_shapes import infer_shapes, static_element_counts
from patterns.graph_query import RANDOM_OPS

# The most elements one tensor of a model may hold, by its inferred static shape, before ONNX Runtime
# is asked to run it (4 GiB of float32): a model of a few bytes can describe a Concat of gigabytes,
# which ONNX Runtime would allocate, past any memory the machine has, instead of failing in one line.
MAX_RUN_ELEMENTS = 1 << 30

# Seconds one ONNX Runtime run in verification may take, loading included, before its process is killed
# (compile_model's verify_timeout, the CLI's --verify-timeout): a Loop of 2^62 trips, or one whose condition
# never turns false, is a valid model that ONNX Runtime runs forever. Loading VMamba-T's 76,529-node naive
# export takes minutes on 2 cores, well inside it.
DEFAULT_VERIFY_TIMEOUT = 1800.0


class VerificationError(Exception):
    """Outputs differ beyond tolerance (or a model could not run); one line for the user."""


class RunTimedOut(VerificationError):
    """run_model's run passed its timeout; ONNX Runtime's process was killed."""


def timed_out_advice(timeout: float) -> str:
    """What to do about a verification run that passed its time limit, for a one-line message."""
    return (f"ONNX Runtime's run did not end within {timeout:g} s (a Loop of very many trips, or one whose condition "
            "never turns false, runs that long or forever); its process was killed. --verify-timeout SECONDS allows "
            "longer, --verify none compiles it without running it")


def check_timeout(timeout, name: str = "timeout") -> float | None:
    """A run's time limit as a float, or None for none: a positive, finite real number of seconds (no bool), else
    ValueError("<name> must be None or a positive, finite number of seconds, got <value>") by check_number's rule,
    before ONNX Runtime is started. run_model called directly took anything float() takes (adv18): '5' and b'1'
    as seconds, NaN and infinity as no limit, True as one second, -1 and 0 as 'did not end within -1 s' after a
    child was started, 10**400 or a list as 'ONNX Runtime could not run the model: ...'."""
    if timeout is None:
        return None
    return float(check_number(name, timeout, "None or a positive, finite number of seconds", low=0.0, above_low=True))


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
              log: Callable[[str], None] | None = None, *,
              plain_inferred: onnx.ModelProto | None = None, timeout: float | None = None,
              optimize: bool = True) -> dict[str, np.ndarray]:
    """Run on ONNX Runtime's CPU provider with default graph optimisations (`optimize` False: none, for an input
    model: the values of the graph as written, and a naive VMamba-T export's session took 4.4 s instead of 29.7 s,
    its run at batch 3 about the same, 26-29 s; dev 2-core, ONNX Runtime 1.32). `plain_inferred`: the model
    already through ONNX's shape inference (a check's), which its size cap (oversized_tensor) reuses.
    `timeout`: seconds the run may take, loading included (none: as long as it takes), past which
    ONNX Runtime's process is killed (RunTimedOut); ValueError for a timeout that is not None or a positive,
    finite number (``check_timeout``)."""
    timeout = check_timeout(timeout)
    if isinstance(model_or_path, onnx.ModelProto):
        # ORT would resolve external data of a serialized model against the working directory.
        if any(uses_external_data(tensor) for tensor in all_tensors(model_or_path)):
            raise VerificationError("the model still refers to external data files; load it with "
                                    "passes.graph_io.read_model first")
        if model_or_path.functions:
            # Inlined here, not by ONNX Runtime: its inlining took 13 s where this takes 0.2 (16,384 nodes of
            # calls), and the size check below then sees the tensors of the functions' bodies too.
            model_or_path = onnx.inliner.inline_local_functions(model_or_path)
            plain_inferred = None   # inferred before the inlining: without the functions' tensors
        too_large = oversized_tensor(model_or_path, plain_inferred)
        if too_large:
            raise VerificationError(f"{too_large}: too large to run")
        source = None   # serialized in the try: past protobuf's 2 GiB it raises ValueError
        node_count = len(model_or_path.graph.node)
        label = f"{node_count} nodes"
    else:
        source = str(model_or_path)
        label = source
    if log:
        log(f"creating ONNX Runtime session ({label}); large graphs take a while")
    # In a child process under a memory cap (passes.ort_worker): sizes computed from the input values
    # escape every static check, and ONNX Runtime's native work would hold off Ctrl-C and SIGTERM.
    try:
        model_bytes = _serialized(model_or_path) if source is None else None
        return ort_worker.run(model_bytes, source, feeds, timeout, optimize)
    except ort_worker.TimedOut as error:
        raise RunTimedOut(str(error)) from None
    except ort_worker.MissingInputs as missing:
        raise VerificationError(f"no input data for model input(s): {printable_names(missing.names)}") from None
    except Exception as error:
        raise VerificationError(f"ONNX Runtime could not run the model: {one_line(error, limit=400)}") from None


def oversized_tensor(model: onnx.ModelProto, plain_inferred: onnx.ModelProto | None = None) -> str | None:
    """The first tensor whose inferred static shape holds more than MAX_RUN_ELEMENTS elements, said in a
    line, or None. Symbolic sizes (a dynamic batch) are not known before a run and are not checked; a negative
    size (invalid: ONNX Runtime reads it as unknown) holds none. `plain_inferred`: `model` already through
    ONNX's shape inference without data propagation (static_shapes.infer_shapes' `plain`)."""
    inferred, _ = infer_shapes(model, plain_inferred)
    for value in static_element_counts(inferred, graph_inputs=False, subgraphs=True):
        if value.elements > MAX_RUN_ELEMENTS:
            return (f"tensor '{printable(value.name)}' of shape {_shown_dims(list(value.shape))} would hold "
                    f"{value.elements:,} elements (more than {MAX_RUN_ELEMENTS:,})")
    return None


def _serialized(model: onnx.ModelProto) -> bytes:
    """The model's bytes for ONNX Runtime (ValueError for a model over protobuf's 2 GiB)."""
    return model.SerializeToString()


@lru_cache(maxsize=1)
def _onnxruntime_custom_ops() -> frozenset[tuple[str, str]]:
    """(domain, op) of every kernel ONNX Runtime's CPU build has outside the standard domains."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
        return frozenset((kernel.domain, kernel.op_name) for kernel in ort_state.get_all_opkernel_def())
    except Exception:   # a build without the listing: let ONNX Runtime itself refuse such a node later
        return frozenset()


def op_onnxruntime_lacks(model: onnx.ModelProto) -> str | None:
    """A one-line description of the first node that ONNX Runtime cannot run because its op comes
    from a domain ORT does not implement (e.g. an exporter's custom op) and the model does not define
    it as a function; None if there is none. Standard-domain ops are model_check's business."""
    known = _onnxruntime_custom_ops()
    if not known:
        return None
    functions = {(function.domain, function.name) for function in model.functions}
    for graph in all_graphs(model.graph):
        for node in graph.node:
            if node.domain in ("", "ai.onnx", "ai.onnx.ml") or (node.domain, node.op_type) in functions:
                continue
            if (node.domain, node.op_type) not in known:
                label = f"node '{printable(node.name)}'" if node.name else "a node"
                return (f"{label} is op '{printable(node.op_type)}' of domain '{printable(node.domain)}', "
                        "which ONNX Runtime does not implement and the model does not define")
    return None


def unseeded_random_node(model: onnx.ModelProto) -> str | None:
    """A one-line description of the first node that draws new random values at every run with no ``seed`` (a
    RandomNormal, a Bernoulli, a Dropout whose training_mode is not a constant false), or None: two runs of such a
    model never agree, so there is nothing to verify against (adv13: exit 3, 'rel L2 1.13', blamed on the run)."""
    for graph in all_graphs(model.graph):
        constants = {tensor.name: tensor for tensor in graph.initializer}
        constants.update((node.output[0], attribute.t) for node in graph.node if node.op_type == "Constant"
                         and node.output for attribute in node.attribute if attribute.name == "value")
        for node in graph.node:
            if node.domain not in ("", "ai.onnx") or any(attribute.name == "seed" for attribute in node.attribute):
                continue
            random = node.op_type in RANDOM_OPS
            if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
                mode = constants.get(node.input[2])
                random = mode is None or bool(onnx.numpy_helper.to_array(mode).any())
            if random:
                label = f"node '{printable(node.name)}'" if node.name else "a node"
                return (f"{label} ({printable(node.op_type)}{', training mode' if node.op_type == 'Dropout' else ''}) "
                        "draws new random values at every run with no seed: no two runs agree")
    return None


def compared_as_written(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                        comparisons: list[OutputComparison], tolerance: float,
                        log: Callable[[str], None] | None = None, *, plain_inferred: onnx.ModelProto | None = None,
                        timeout: float | None = None) -> list[OutputComparison] | None:
    """Where `model`'s optimised run missed `expected` (finite values: no comparison failed with a problem), which
    came from a model run as written (optimisations off): `model` run as written too, and its comparisons if they
    pass, else None. In float16 ONNX Runtime's optimisations alone round otherwise (adv23: twelve decomposed
    LayerNorms and MatMuls, compiled by eliminate-dead-nodes, which changed nothing, were rel L2 2.1e-4); compared
    like with like such a graph passes, and an error of the compile's own fails both runs."""
    if all(c.ok for c in comparisons) or any(c.problem for c in comparisons if not c.ok):
        return None
    try:
        as_written = run_model(model, feeds, log=log, plain_inferred=plain_inferred, timeout=timeout, optimize=False)
    except VerificationError:
        return None
    plain = compare(as_written, expected, rtol_l2=tolerance)
    return plain if all(c.ok for c in plain) else None


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
        if actual.dtype.kind not in "biuf" or expected.dtype.kind not in "biuf":
            comparisons.append(OutputComparison(
                name, float("inf"), float("inf"), rtol_l2, False,
                f"{actual.dtype} vs expected {expected.dtype}: only real numbers and booleans can be compared"))
            continue
        if actual.shape != expected.shape:
            comparisons.append(OutputComparison(
                name, float("inf"), float("inf"), rtol_l2, False,
                f"shape {list(actual.shape)} != expected {list(expected.shape)}"))
            continue
        difference = exact_difference(actual, expected)   # integers past 2^53 too (adv19)
        max_abs = float(np.max(np.abs(difference))) if difference.size else 0.0
        rel_l2 = relative_l2(actual, expected)   # the absolute error where the reference is all zeros
        finite = bool(np.isfinite(rel_l2))  # NaN or inf anywhere makes the norm non-finite
        ok = finite and rel_l2 <= rtol_l2
        comparisons.append(OutputComparison(name, max_abs, rel_l2, rtol_l2, ok,
                                            "" if finite else "non-finite values"))
    return comparisons


def _graph_io_names(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    inputs = [value.name for value in fed_inputs(model.graph)]
    outputs = [o.name for o in model.graph.output]
    return inputs, outputs


def load_reference(npz_path: str | os.PathLike, model: onnx.ModelProto, checked: tuple | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Split a reference npz into (feeds, expected outputs) by the model's input/output names.

    Refused (``ReferenceDataError``): what passes.npz_arrays.read_npz refuses (not an npz, a corrupt
    or pickled member, members the model uses that unpack past its cap, a member that is no .npy);
    arrays the model uses that are not real numbers or booleans (complex values would lose their
    imaginary part, strings cannot be compared); inputs whose type or static shape the model does
    not take; expected outputs with NaN or infinity.

    ``checked``: what ``checked_beside`` found for a reference beside the model: the file read is that one, opened
    without following a link; one swapped for a link (or another file) since is refused, never read.
    """
    shown = printable(npz_path)
    if checked is None:
        return _reference_arrays(npz_path, shown, model)
    try:
        fd = open_checked(*checked)
    except FileChangedError as error:
        if error.strerror == FOLDER_CHANGED:
            raise ReferenceDataError(f"reference {shown}: {FOLDER_CHANGED} (renamed, or a symbolic link or another "
                                     "folder put in its place); refused") from None
        raise ReferenceDataError(f"reference {shown} changed between its check and its read (a symbolic link or another "
                                 "file put in its place); refused") from None
    except OSError as error:
        raise ReferenceDataError(f"reference {shown} cannot be read ({printable(error.strerror or error)})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ReferenceDataError(f"reference {shown} is not a regular file; refused")
        return _reference_arrays(handle, shown, model)


def _reference_arrays(npz, shown: str, model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """load_reference's reading and checks, of an npz path or an open file."""
    input_names, output_names = _graph_io_names(model)
    try:
        # Only the members the model uses are read: extra keys (logits@float64) may hold anything.
        data = read_npz(npz, [*input_names, *output_names])
    except NpzError as error:
        raise ReferenceDataError(f"reference {shown}: {error}") from None
    for name, array in data.items():
        if array.dtype.kind not in "biuf":
            raise ReferenceDataError(f"reference {shown}: array '{printable(name)}' is {array.dtype} "
                                 "(only real numbers and booleans can be compared)")
    feeds = {name: data[name] for name in input_names if name in data}
    expected = {name: data[name] for name in output_names if name in data}
    missing_inputs = [name for name in input_names if name not in data]
    if missing_inputs:
        raise ReferenceDataError(f"reference {shown} lacks model input(s): {printable_names(missing_inputs)}")
    if not expected:
        raise ReferenceDataError(
            f"reference {shown} has none of the model outputs ({printable_names(output_names)}); "
            f"keys: {printable_names(npz_member_names(npz))}")
    _check_feeds_fit(shown, feeds, model)
    for name, array in feeds.items():
        # A NaN fed in comes out as NaN: the comparison could then never pass, whatever the passes did.
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ReferenceDataError(f"reference {shown}: input '{printable(name)}' holds NaN or infinity")
    _check_expected_fit(shown, expected, model)
    for name, array in expected.items():
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ReferenceDataError(f"reference {shown}: expected output '{printable(name)}' holds NaN or infinity")
    return feeds, expected


def _declared_dims(value: onnx.ValueInfoProto) -> list[int | None] | None:
    """The static sizes a graph input or output declares (None for a symbolic one), or None if no shape."""
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _shape_contradicts(dims: list[int | None] | None, shape: tuple[int, ...]) -> bool:
    return dims is not None and (len(dims) != len(shape) or any(d is not None and d != n for d, n in zip(dims, shape)))


def _shown_dims(dims: list[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _check_expected_fit(shown: str, expected: Mapping[str, np.ndarray], model: onnx.ModelProto) -> None:
    """Each expected output has the rank and static sizes the graph output declares: a reference made
    for another model is refused here, not reported later as a failed verification."""
    for value in model.graph.output:
        if value.name in expected and _shape_contradicts(_declared_dims(value), expected[value.name].shape):
            raise ReferenceDataError(f"reference {shown}: expected output '{printable(value.name)}' has shape "
                                     f"{list(expected[value.name].shape)}; the model gives "
                                     f"{_shown_dims(_declared_dims(value))}")


def _check_feeds_fit(shown: str, feeds: Mapping[str, np.ndarray], model: onnx.ModelProto) -> None:
    """Each feed has the element type and the rank and static sizes the graph input declares."""
    for value in model.graph.input:
        if value.name not in feeds or not value.type.HasField("tensor_type"):
            continue
        array, tensor_type = feeds[value.name], value.type.tensor_type
        try:
            wanted = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        except Exception:
            wanted = None
        if wanted is not None and array.dtype != wanted:
            raise ReferenceDataError(f"reference {shown}: input '{printable(value.name)}' is {array.dtype}; "
                                 f"the model takes {wanted}")
        if _shape_contradicts(_declared_dims(value), array.shape):
            raise ReferenceDataError(f"reference {shown}: input '{printable(value.name)}' has shape "
                                     f"{list(array.shape)}; the model takes {_shown_dims(_declared_dims(value))}")


def check_tolerance(tolerance: float) -> float:
    """A usable relative-L2 tolerance: finite and >= 0 (NaN would fail every comparison), else ValueError."""
    return check_number("--tolerance", tolerance, ">= 0 and finite", low=0.0)


def checked_beside(model_path: str | os.PathLike, path: str | os.PathLike, folder: tuple[int, int] | None = None
                   ) -> tuple[str, str, os.stat_result | None, tuple[int, int] | None] | None:
    """The check of ``path``, a file found beside the model: (the model folder's real path, the file's, what it is
    now) for ``load_reference(checked=)`` to read that same file (passes.files.open_checked); None where it resolves,
    through symbolic links, outside the model's folder: the rule for external data (passes.graph_io), so that a
    link planted beside a model never makes the run read another file. ``folder``: the identity of the folder the
    model was read from (graph_io.LoadedModel.folder), which the read checks the folder against (adv23)."""
    base, resolved, status = checked_file(os.path.dirname(os.fspath(model_path)) or ".", path)
    return None if os.path.commonpath([base, resolved]) != base else (base, resolved, status, folder)


def find_reference_beside(model_path: str | os.PathLike) -> Path | None:
    """``dir/naive.onnx`` -> ``dir/naive.ref.npz`` if it exists."""
    model_path = Path(model_path)
    candidate = model_path.with_name(f"{model_path.stem}.ref.npz")
    return candidate if candidate.is_file() else None


def reference_beside_problem(model_path: str | os.PathLike) -> str | None:
    """Why ``dir/naive.ref.npz``, where something of that name is there, is no file to read (a named pipe, a
    folder, a device, a broken link), or None: find_reference_beside passed it over, and the run verified against
    random inputs with 'no reference npz (looked for naive.ref.npz)', exit 0 (adv13)."""
    model_path = Path(model_path)
    candidate = model_path.with_name(f"{model_path.stem}.ref.npz")
    if not os.path.lexists(candidate) or candidate.is_file():
        return None
    kind = ("a broken link" if not candidate.exists() else "a folder" if candidate.is_dir()
            else "a named pipe" if candidate.is_fifo() else "a socket" if candidate.is_socket() else "a device")
    return (f"reference {printable(candidate)} beside the model is {kind}, not a file; refused (remove it, or give "
            "--reference, or --verify none)")


_NUMPY_TYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.BOOL: np.bool_,
}


# Random verification inputs above this many elements (1 GiB of float32), one input or all together,
# are refused rather than failing with a MemoryError: a declared dimension like 10**12 is bad input, not a bug.
MAX_RANDOM_FEED_ELEMENTS = 2**28
# The size every symbolic input dimension takes in verification's second run, where the first (random inputs: 1; a
# reference: its arrays) may not tell a graph right at one size only (adv20: a value_info traced at batch 1).
SECOND_SYMBOLIC_SIZE = 3
# numpy (2.x) makes no array of more axes than this: an input declared with more is bad input, whatever its size
# (a 5,000-axis input of ones took a ValueError traceback out of numpy's random generator)
MAX_RANDOM_FEED_RANK = 64


def random_feeds(model: onnx.ModelProto, seed: int = 0, symbolic_size: int = 1) -> dict[str, np.ndarray]:
    """Inputs for a model without a reference: standard normal floats, small ints; symbolic dims -> `symbolic_size`
    (1; compile_model's check at a second size gives SECOND_SYMBOLIC_SIZE)."""
    rng = np.random.default_rng(seed)
    feeds, elements = {}, 0
    for value in fed_inputs(model.graph):
        tensor_type = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else symbolic_size   # a declared 0 stays 0
                 for d in tensor_type.shape.dim]
        if len(shape) > MAX_RANDOM_FEED_RANK:   # nor can an npz hold its data, nor ONNX Runtime take it
            raise ReferenceDataError(
                f"input '{printable(value.name)}' has {len(shape):,} axes, more than the {MAX_RANDOM_FEED_RANK} an "
                "array can have: it cannot be run; give --verify none")
        if math.prod(shape) > MAX_RANDOM_FEED_ELEMENTS:
            raise ReferenceDataError(
                f"input '{printable(value.name)}' of shape {shape} is too large to make random data for; "
                "give a --reference npz or --verify none")
        elements += math.prod(shape)
        if elements > MAX_RANDOM_FEED_ELEMENTS:   # many inputs under the cap each: as many times its memory
            raise ReferenceDataError(
                f"the model's inputs up to '{printable(value.name)}' hold {elements:,} elements in all, too many to "
                f"make random data for (> {MAX_RANDOM_FEED_ELEMENTS:,}); give a --reference npz or --verify none")
        dtype = _NUMPY_TYPES.get(tensor_type.elem_type)
        if dtype is None:
            raise ReferenceDataError(f"cannot make random data for input '{printable(value.name)}' of type "
                                 f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}")
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[value.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[value.name] = rng.integers(0, 4, shape).astype(dtype)
    return feeds

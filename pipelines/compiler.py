"""``compile_model``: load a model, run a pipeline on it, verify, write, report. The front door.

    from pipelines import compile_model
    result = compile_model("naive.onnx", "cpu", output="cpu.onnx", report="report/")
    print(result.nodes_before, "->", result.nodes_after, result.verification["rel_l2"])

The life of one model (docs/ARCHITECTURE.md tells it at length):

1. everything the caller asked for is checked before the slow part: the pipeline (named,
   text, a ``Pipeline`` or a list of passes) is built, every destination is checked in
   ``_check_destinations`` and the reference file must exist;
2. the model is read (with its external data) and, for verification, the reference npz is
   split into inputs and expected outputs (or the input graph is run on random inputs);
3. the model is imported into onnx-graphsurgeon once; ``PassManager`` runs every pass on that
   one in-memory graph, checks each graph a pass changed and, with ``verify="each"``, runs it;
4. the graph is exported, run in ONNX Runtime and compared with the reference;
5. only then is the output written (atomically), and the report folder.

Errors are typed: ``BadInput`` (exit code 2 in the CLI), ``VerificationFailed`` (3),
``PassFailed`` (4); each has ``exit_code`` and a one-line message. Option names in messages
mirror the CLI flags (``--in-place``, ``--tolerance``).

It lives in ``pipelines`` (the top room: it resolves pipeline names) and imports only downward,
from ``passes`` and ``patterns``; nothing below imports it except the CLI entry module.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Iterator, Set as AbstractSet
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx.external_data_helper import uses_external_data

from passes.base import Pass, PassContext, PassInputError, PassOptionError
from passes.files import (DestinationError, check_folder_destination, check_not_read, folders_made,
                          input_file_problem)
from passes.graph_io import (GraphIOError, ModelMeta, all_tensors, check_output_path, freeze_initializer_inputs,
                             graph_to_model, has_default_domain_spelled_long, has_negative_perms,
                             initializer_inputs, model_to_graph, normalize_default_domain, normalize_negative_perms,
                             read_model, save_model_atomic)
from passes.input_shapes import InputShapeError, fix_input_shapes, symbolic_inputs
from passes.manager import PassCheckError, PassManager, PassVerificationError, PipelineError, PipelineRun, ProgressHook
from passes.model_check import (InvalidModelError, check_model, einsum_output_mismatch, if_branch_mismatch,
                                transpose_rank_mismatch)
from passes.static_shapes import ContradictedValueInfo, contradicted_value_info, drop_value_info_shapes
from passes.one_line import check_number, is_integer, is_real, one_line, printable, printable_names
from passes.registry import UnknownPassError, import_failures
from passes.report.recorder import PassRecorder
from passes.report.writer import REPORT_FILES, check_report_dir
from passes.verify import (DEFAULT_VERIFY_TIMEOUT, ReferenceDataError, RunTimedOut, VerificationError, check_tolerance,
                           compared_as_written,
                           compare, find_reference_beside, timed_out_advice,
                           checked_beside,
                           op_onnxruntime_lacks, reference_beside_problem, unseeded_random_node,
                           load_reference, random_feeds, run_model, summarize, SECOND_SYMBOLIC_SIZE)
from pipelines import Pipeline, PipelineSyntaxError, UnknownPipelineError, get_pipeline

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_VERIFY, EXIT_PASS = 0, 1, 2, 3, 4
VERIFY_MODES = ("each", "end", "none")


class CompileError(Exception):
    """Base of the errors ``compile_model`` raises on purpose; ``exit_code`` is the CLI's."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report  # what report.json says about the failed run, when it got that far


class BadInput(CompileError):
    """Bad usage or bad input: unknown pipeline or pass, a refused option, a model or
    reference that cannot be read, an output that cannot be written. Nothing was written."""

    exit_code = EXIT_USAGE


class VerificationFailed(CompileError):
    """The compiled model (or a pass, with verify="each") differs from the reference beyond
    the tolerance, or does not run. No output was written."""

    exit_code = EXIT_VERIFY


class PassFailed(CompileError):
    """A pass raised; the message names it and the passes that ran before it."""

    exit_code = EXIT_PASS


@dataclass
class CompileResult:
    model: onnx.ModelProto               # the compiled model, nodes stamped with the pass that made them
    run: PipelineRun                     # per-pass records (``run.records``) and the final graph
    pipeline: str                        # the pipeline as text, exactly as run
    pipeline_name: str
    verification: dict[str, Any] | None  # verify.summarize() of the final check, plus "against"; None if off
    output: Path | None                  # where the model was written, if asked
    report: dict[str, Any]               # what report.json holds (before its derived fields)
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def records(self):
        return self.run.records

    @property
    def nodes_before(self) -> int:
        return self.run.nodes_before

    @property
    def nodes_after(self) -> int:
        return len(self.model.graph.node)


@dataclass
class _SecondSize:
    """What the run at a second size of the symbolic input dimensions found: its report record, a warning where it
    could not be made (the input model does not run there), or the failure to raise (its error type and line)."""
    record: dict[str, Any] | None = None
    warning: str | None = None
    failure: tuple[type[CompileError], str] | None = None


def _second_size_check(model: onnx.ModelProto, final_model: onnx.ModelProto, progress: ProgressHook,
                       timeout: float | None, tolerance: float) -> _SecondSize:
    """The input model and the compiled one run on random inputs with every symbolic input dimension at
    SECOND_SYMBOLIC_SIZE and compared, where the model has such a dimension: the first verification runs at one size
    (random inputs' 1, a reference's), at which a graph that bakes that size in (a Reshape to [4, 1] from a value_info
    traced at batch 1, adv20) is right. An input model that does not run there (an export that bakes batch 1 into
    its own Reshapes) is no fault of the compiled one: said, not refused."""
    symbolic = symbolic_inputs(model)
    if not symbolic:
        return _SecondSize()
    size = SECOND_SYMBOLIC_SIZE
    try:
        feeds = random_feeds(model, seed=1, symbolic_size=size)
    except ReferenceDataError as error:
        # its advice (a reference npz) is for the first run's inputs, not this one's
        return _SecondSize(warning=f"not verified with symbolic input sizes at {size}: "
                                   f"{one_line(error).split('; give a --reference npz')[0]}")
    shapes = {name: list(feeds[name].shape) for name in symbolic}
    where = (f"with symbolic input sizes at {size} ("
             + ", ".join(f"'{printable(name)}' {shape}" for name, shape in list(shapes.items())[:3])
             + (f", ... ({len(shapes) - 3} more)" if len(shapes) > 3 else "") + ")")
    with progress.step(f"verify with symbolic input sizes at {size} in ONNX Runtime"):
        try:
            expected = run_model(model, feeds, log=progress.stage, timeout=timeout, optimize=False)
        except VerificationError as error:   # its run timed out too
            return _SecondSize(warning=f"not verified {where}: the input model does not run there "
                                       f"({one_line(error, limit=200)}); --input-shape compiles it for one size")
        not_finite = _first_not_finite(expected)
        if not_finite is not None:
            return _SecondSize(warning=f"not verified {where}: the input model's output '{printable(not_finite)}' "
                                       "holds NaN or infinity there")
        record: dict[str, Any] = {"size": size, "inputs": shapes}
        try:
            outputs = run_model(final_model, feeds, log=progress.stage, timeout=timeout)
        except RunTimedOut:
            return _SecondSize(record={**record, "ok": False, "error": "timed out"}, failure=(
                BadInput, f"cannot verify {where}: the compiled model's run: {timed_out_advice(timeout)}; "
                          "no output written"))
        except VerificationError as error:
            return _SecondSize(record={**record, "ok": False, "error": one_line(error)}, failure=(
                VerificationFailed, f"verification failed {where}, where the input model runs: the compiled model "
                                    f"does not: {one_line(error)}; no output written"))
        comparisons = compare(outputs, expected, rtol_l2=tolerance)
        plain = compared_as_written(final_model, feeds, expected, comparisons, tolerance, progress.stage,
                                    timeout=timeout)
    if plain is not None:   # ONNX Runtime's optimisations' rounding, not the compile's (the first check's words)
        record.update(summarize(plain))
        return _SecondSize(record=record, warning=_optimisation_warning(f" {where}", comparisons, plain, tolerance))
    record.update(summarize(comparisons))
    if record["ok"]:
        return _SecondSize(record=record)
    worst = _worst_failure(comparisons)
    return _SecondSize(record=record, failure=(VerificationFailed, (
        f"verification failed {where}: {_failure_text(worst, tolerance)} against the input model, right at the first "
        "sizes only; no output written")))


def _optimisation_warning(where: str, comparisons, plain, tolerance: float) -> str:
    worst = _worst_failure(comparisons)
    return (f"the compiled model run with ONNX Runtime's graph optimisations is {_failure_text(worst, tolerance)} "
            f"from the input model run without them{where}; run without them too it is rel L2 "
            f"{summarize(plain)['rel_l2']:.3g}: the optimisations' own rounding, not the compile's; "
            "verified so")


def _first_not_finite(outputs: Mapping[str, Any]) -> str | None:
    """The name of the first float or complex output holding NaN or infinity, else None."""
    return next((name for name, array in outputs.items()
                 if np.asarray(array).dtype.kind in "fc" and not np.all(np.isfinite(array))), None)


def _worst_failure(comparisons):
    """The failing comparison of largest rel L2, NaN counted largest (it compares False with every number, so an output
    holding NaN after a finite failure was passed over, and the passes' NaN hints with it); the first of equals."""
    return max((c for c in comparisons if not c.ok), key=lambda c: math.inf if math.isnan(c.rel_l2) else c.rel_l2)


def _failure_text(worst, tolerance: float) -> str:
    """output 'y' rel L2 .. > tolerance .. (max abs ..[, its problem]): the words of every verification failure."""
    return (f"output '{printable(worst.name)}' rel L2 {worst.rel_l2:.3g} > tolerance {tolerance:g} "
            f"(max abs {worst.max_abs:.3g}{', ' + worst.problem if worst.problem else ''})")


@dataclass
class _Destinations:
    """Every path the run will write, checked before any work."""

    output: Path | None
    report: Path | None
    intermediates: Path | None


def intermediate_name(index: int, pass_name: str) -> str:
    """The file --keep-intermediates writes after pass number ``index`` (0-based)."""
    return f"{index + 1:02d}-{pass_name}.onnx"


def resolve_pipeline(pipeline: str | Pipeline | Sequence[Pass],
                     override_options: Mapping[str, Any] | None = None) -> tuple[str, str, list[Pass]]:
    """(pipeline text, pipeline name, pass instances); bad names and options raise BadInput."""
    try:
        if isinstance(pipeline, str):
            pipeline = get_pipeline(pipeline)
        if isinstance(pipeline, Pipeline):
            if override_options:
                pipeline = pipeline.with_overrides(**override_options)
            return str(pipeline), pipeline.name, pipeline.build()
    except (UnknownPipelineError, PipelineSyntaxError, UnknownPassError, PassOptionError) as error:
        raise BadInput(one_line(error)) from None
    passes = list(pipeline)
    if override_options:
        raise BadInput("override_options need a pipeline (name, text or Pipeline), not a list of passes")
    if not all(isinstance(pass_, Pass) for pass_ in passes):
        raise BadInput("pipeline must be a name, pipeline text, a Pipeline or a list of Pass instances")
    return ",".join(repr(pass_) for pass_ in passes), "custom", passes


def _check_destinations(output, report, keep_intermediates: bool, input_path: Path | None,
                        in_place: bool) -> _Destinations:
    """The one place where every destination is decided and checked, before minutes of work: each
    is absent or a regular file (never a device, a pipe, a folder) in a folder that takes files;
    the report and intermediates folders are folders (or can be made)."""
    output_path = None
    if output is not None:
        try:
            output_path = check_output_path(output, input_path=input_path, allow_overwrite_input=in_place)
        except GraphIOError as error:
            raise BadInput(one_line(error)) from None
    report_dir = Path(report) if report is not None else None
    intermediates = None
    if keep_intermediates:
        if report_dir is not None:
            intermediates = report_dir / "intermediates"
        elif output_path is not None:
            intermediates = output_path.with_name(output_path.name + ".intermediates")
        else:
            raise BadInput("keep_intermediates needs an output or a report folder to put them in")
    try:
        if report is not None:
            check_report_dir(report)   # as given: Path() makes an empty path '.'
        if intermediates is not None:
            if intermediates.is_symlink():   # a name the run derives, not the user's: a link there is planted
                raise DestinationError(f"--keep-intermediates folder {printable(intermediates)} is a symbolic link "
                                       f"(to {printable(os.readlink(intermediates))}); refused (remove it)")
            check_folder_destination(intermediates, "--keep-intermediates folder")
    except DestinationError as error:
        raise BadInput(one_line(error)) from None
    return _Destinations(output_path, report_dir, intermediates)


def _shapeless_graph_value(model: onnx.ModelProto) -> str | None:
    """A graph input or output typed without a shape (make_tensor_value_info(name, FLOAT, None)): ONNX Runtime runs
    it, onnx.checker refuses it, so the check after the first pass that changed the graph failed on it and blamed
    that pass (adv11/adv12: exit 3 'pass einsum-to-matmul produced an invalid model: Field 'shape' ... missing')."""
    for role, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            if value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape"):
                return (f"graph {role} '{printable(value.name)}' declares a type but no shape, which onnx.checker "
                        "requires (declare its dims, named where they vary)")
    return None


def _shape_inference_error(model: onnx.ModelProto) -> str | None:
    """What ONNX's strict shape inference finds wrong with the input model (an attribute value that
    does not fit its input: a Transpose perm naming an axis the input lacks), or None. Asked only
    when a pass failed or its output failed a check, to tell bad input (exit 2) from a failing pass."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except onnx.shape_inference.InferenceError as error:
        return one_line(str(error).removeprefix("[ShapeInferenceError] Inference error(s): "), limit=300)
    except Exception:   # a model over 2 GiB, say: inference cannot tell
        return None
    # ONNX's inference takes a Transpose perm shorter than its input's rank; a pass's output check then failed on it
    # and was blamed (adv12: Relu of a (3, 4, 1) input, then perm [0, 1]: simplify, exit 3).
    graph = inferred.graph
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    return transpose_rank_mismatch(graph, values) or einsum_output_mismatch(graph, values) or if_branch_mismatch(graph)


def _non_finite_hints(passes: Sequence[Pass], problem: str) -> list[str]:
    """What the passes know about where NaN or infinity came from (a scan form that overflows)."""
    if problem != "non-finite values":
        return []
    return [hint for hint in (p.non_finite_hint() for p in passes) if hint]


def _run_input_model(model: onnx.ModelProto, feeds, log, timeout: float | None) -> tuple[dict | None, str]:
    """The input model's outputs on the verification feeds, or (None, why it does not run). Asked only
    when the final model failed verification, to tell whose fault it is."""
    try:
        return run_model(model, feeds, log=log, timeout=timeout, optimize=False), ""
    except VerificationError as error:
        return None, one_line(error)


def _input_misses_reference(input_outputs: Mapping[str, Any], outputs: Mapping[str, Any],
                            expected: Mapping[str, Any], tolerance: float) -> str | None:
    """A hint when the input model itself misses the reference by more than the tolerance in ONNX
    Runtime (float16 arithmetic, say: ORT rounds otherwise than PyTorch did), while the compiled model
    stays close to the input model; else None."""
    own = [c for c in compare(input_outputs, expected, rtol_l2=tolerance) if not c.ok]
    if not own:
        return None
    worst = max(own, key=lambda c: c.rel_l2)
    kept = summarize(compare(outputs, input_outputs, rtol_l2=tolerance))
    return (f"the input model itself is rel L2 {worst.rel_l2:.3g} from the reference in ONNX Runtime (output "
            f"'{printable(worst.name)}'; float16 arithmetic or an export unlike its PyTorch model) and the compiled "
            f"model rel L2 {kept['rel_l2']:.3g} from the input model: give --tolerance above {worst.rel_l2:.2g} "
            "to accept what ONNX Runtime can reach")


def _files_written(destinations: _Destinations, passes: Sequence[Pass]) -> list[tuple[Path, str]]:
    """Every file the run may write, known before the work: the output, the report's files and one
    model per pass for --keep-intermediates (named by position and pass). (A model's weights file,
    with external data, gets a new name from its content: save_model_atomic.)"""
    written: list[tuple[Path, str]] = []
    if destinations.output is not None:
        written.append((destinations.output, "output"))
    if destinations.report is not None:
        written += [(destinations.report / name, "report file") for name in REPORT_FILES]
    if destinations.intermediates is not None:
        for index, pass_ in enumerate(passes):
            written.append((destinations.intermediates / intermediate_name(index, pass_.name), "intermediate model"))
    return written


def _check_destinations_apart(written: list[tuple[Path, str]], destinations: _Destinations) -> None:
    """No two things the run writes are the same path: a file written twice, or a file where a
    folder of the run goes (``-o R/index.html --report R``, ``-o R --report R``)."""
    def where(path: Path) -> Path:   # one spelling per place: '..' and linked folders resolved
        return Path(os.path.realpath(path))

    seen: dict[Path, tuple[str, Path]] = {}
    for path, what in written:
        key = where(path)
        if key in seen:
            raise BadInput(f"{what} {printable(path)} is also the {seen[key][0]} {printable(seen[key][1])}; "
                           "give them different paths")
        seen[key] = (what, path)
    folders = [(destinations.report, "--report folder"), (destinations.intermediates, "--keep-intermediates folder")]
    for folder, folder_what in folders:
        if folder is None:
            continue
        for path, what in written:
            if where(folder).is_relative_to(where(path)):
                raise BadInput(f"{what} {printable(path)} is where the {folder_what} {printable(folder)} goes; "
                               "give them different paths")


def _check_nothing_read_is_written(written: list[tuple[Path, str]], reads: list[tuple[str, Path]]) -> None:
    """A run never writes over a file it reads (the input, its external data, the reference, a
    plugin): refused before any work, also through links and hard links."""
    try:
        for path, what in written:
            check_not_read(path, reads, what)
    except DestinationError as error:
        raise BadInput(one_line(error)) from None


def frozen_inputs_notice(frozen: Sequence[str]) -> str:
    """The one line that says graph inputs with initializers were frozen (names escaped, a few shown)."""
    count = len(frozen)
    inputs = "graph input that has an initializer" if count == 1 else "graph inputs that have initializers"
    return (f"froze {count} {inputs} (weights a caller could override, as torch.onnx.export"
            f"(keep_initializers_as_inputs=True) writes them) as constants: the compiled model does not take "
            f"{'it' if count == 1 else 'them'} as input ({printable_names(frozen, shown=3)})")


def negative_perms_notice(names: Sequence[str]) -> str:
    """The one line that says Transpose perms counting axes from the end were read as ONNX's (names escaped)."""
    count = len(names)
    return (f"read {count} Transpose perm{'' if count == 1 else 's'} with negative axes (TorchScript's export of "
            f"permute(0, -2, -1, 1); ONNX Runtime refuses them) as counted from the end: "
            f"{printable_names(names, shown=3)}")


def contradicted_value_info_notice(contradicted: Sequence[ContradictedValueInfo]) -> str:
    """The one line that says value_info shapes contradicting the graph inputs were dropped (names escaped)."""
    count, first = len(contradicted), contradicted[0]

    def where(entry: ContradictedValueInfo) -> str:   # a body's entry after the body's label: If(c).then_branch/t
        return f"{entry.label}/{entry.name}" if entry.body else entry.name

    def dims(shape) -> str:
        return "[" + ", ".join("?" if size is None else str(size) if isinstance(size, int) else printable(size)
                               for size in shape) + "]"

    return (f"dropped the declared shape of {count} value_info entr{'y' if count == 1 else 'ies'} "
            f"({printable_names([where(entry) for entry in contradicted], shown=3)}) that shape inference from the graph "
            f"inputs contradicts: '{printable(where(first))}' declares {dims(first.declared)}, inference gives "
            f"{dims(first.inferred)} (an export traced at one size leaves such entries); element types kept")


def left_out_notice(model: onnx.ModelProto) -> str | None:
    """The one line naming the input's fields the compiled model does not carry (a training algorithm, a multi-device
    configuration, the graph's quantization annotation and metadata), with their entry counts; None where it has none
    (adv20: training_info was dropped without a word)."""
    fields = [("training_info", len(model.training_info)),
              ("configuration", len(model.configuration)),
              ("graph quantization_annotation", len(model.graph.quantization_annotation)),
              ("graph metadata_props", len(model.graph.metadata_props))]
    named = [f"{name} ({count} entr{'y' if count == 1 else 'ies'})" for name, count in fields if count]
    if not named:
        return None
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return (f"the compiled model leaves out the input's {listed}: it holds the inference graph and the model's own "
            "metadata_props only")


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_path_argument(name: str, value: Any, optional: bool = True) -> None:
    """A path argument is text or os.PathLike (giving text), or None where optional."""
    if value is None and optional:
        return
    path = value
    if isinstance(value, os.PathLike):
        try:
            path = os.fspath(value)
        except Exception as error:
            raise BadInput(f"{name}: os.fspath() of the {_type_name(value)} failed: {one_line(error)}") from None
    if not isinstance(path, str):
        none = " or None" if optional else ""
        raise BadInput(f"{name} must be a path (str or os.PathLike){none}, got {printable(_type_name(path))}")


def _check_bool_argument(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise BadInput(f"{name} must be True or False, got {printable(_type_name(value))}")


def _check_pipeline_fields(pipeline: Pipeline) -> None:
    """A Pipeline made by hand holds a name, a description and a list of Steps, each a pass name and options by name:
    ``Pipeline("p", "d", steps="remove-identity")`` was an AttributeError from deep inside (adv23)."""
    from pipelines.pipeline import Step

    steps = pipeline.steps
    if not isinstance(pipeline.name, str) or not isinstance(pipeline.description, str):
        raise BadInput("pipeline: a Pipeline's name and description must be text")
    if not isinstance(steps, (list, tuple)) or not all(isinstance(step, Step) for step in steps):
        raise BadInput(f"pipeline: a Pipeline's steps must be a list of pipelines.pipeline.Step, got "
                       f"{printable(_type_name(steps))}")
    for step in steps:
        if (not isinstance(step.pass_name, str) or not isinstance(step.options, Mapping)
                or not all(isinstance(key, str) for key in step.options)):
            raise BadInput("pipeline: each Step holds a pass name (text) and its options as a mapping from option "
                           f"names (text), got {printable(_type_name(step.pass_name))} and "
                           f"{printable(_type_name(step.options))}")


def _check_argument_types(model_or_path, pipeline, output, reference, verify, tolerance, verify_timeout, report,
                          override_options, explain, in_place, keep_intermediates, input_shapes, progress,
                          protected_files) -> None:
    """Every argument of ``compile_model`` is of a type it takes, or BadInput naming it, before anything
    else: a wrong type (``output=3``) was a TypeError or AttributeError from deep inside."""
    if not isinstance(model_or_path, onnx.ModelProto):
        try:
            _check_path_argument("model", model_or_path, optional=False)
        except BadInput:
            raise BadInput(f"model must be a path (str or os.PathLike) or an onnx.ModelProto, "
                           f"got {printable(_type_name(model_or_path))}") from None
    if not isinstance(pipeline, (str, Pipeline)):
        if isinstance(pipeline, (bytes, Mapping)) or not isinstance(pipeline, Sequence) \
                or not all(isinstance(pass_, Pass) for pass_ in pipeline):
            raise BadInput("pipeline must be a name, pipeline text, a Pipeline or a list of Pass instances, "
                           f"got {printable(_type_name(pipeline))}")
    if isinstance(pipeline, Pipeline):
        _check_pipeline_fields(pipeline)
    for name, value in (("output", output), ("reference", reference), ("report", report)):
        _check_path_argument(name, value)
    if not isinstance(verify, str):
        raise BadInput(f"verify must be one of {', '.join(VERIFY_MODES)}, got {printable(_type_name(verify))}")
    if not is_real(tolerance):
        raise BadInput(f"tolerance must be a number, got {printable(_type_name(tolerance))}")
    if verify_timeout is not None and not is_real(verify_timeout):
        raise BadInput(f"verify_timeout must be a number of seconds or None, got {printable(_type_name(verify_timeout))}")
    if override_options is not None:
        if not isinstance(override_options, Mapping) or not all(isinstance(key, str) for key in override_options):
            raise BadInput(f"override_options must be a mapping of option names to values or None, "
                           f"got {printable(_type_name(override_options))}")
    for name, value in (("explain", explain), ("in_place", in_place), ("keep_intermediates", keep_intermediates)):
        _check_bool_argument(name, value)
    if input_shapes is not None:
        if not isinstance(input_shapes, Mapping):
            raise BadInput(f"input_shapes must be a mapping of input names to dims or None, "
                           f"got {printable(_type_name(input_shapes))}")
        for key, dims in input_shapes.items():
            if not isinstance(key, str):
                raise BadInput(f"input_shapes: an input name must be text, got {printable(_type_name(key))}")
            if isinstance(dims, (str, bytes)) or not isinstance(dims, Iterable) or isinstance(dims, Iterator) \
                    or not all(is_integer(dim) for dim in dims):
                raise BadInput(f"input_shapes['{printable(key)}'] must be a sequence of integers, "
                               f"got {printable(_type_name(dims))}")
    hooks = [name for name in vars(ProgressHook) if not name.startswith("_")]
    if progress is not None and not isinstance(progress, ProgressHook) \
            and not all(callable(getattr(progress, name, None)) for name in hooks):
        raise BadInput(f"progress must be a passes.manager.ProgressHook (or have its methods: {', '.join(hooks)}) "
                       f"or None, got {printable(_type_name(progress))}")
    if isinstance(protected_files, (str, bytes, os.PathLike)) or not isinstance(protected_files, (Sequence, AbstractSet)):
        raise BadInput(f"protected_files must be a sequence of paths, got {printable(_type_name(protected_files))}")
    for index, value in enumerate(protected_files):
        _check_path_argument(f"protected_files[{index}]", value, optional=False)


def compile_model(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    pipeline: str | Pipeline | Sequence[Pass],
    *,
    output: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    verify: str = "end",
    tolerance: float = 1e-5,
    verify_timeout: float | None = DEFAULT_VERIFY_TIMEOUT,
    report: str | os.PathLike | None = None,
    override_options: Mapping[str, Any] | None = None,
    explain: bool = False,
    in_place: bool = False,
    keep_intermediates: bool = False,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    progress: ProgressHook | None = None,
    protected_files: Sequence[str | os.PathLike] = (),
) -> CompileResult:
    """Compile one model with one pipeline; see the module docstring for the steps.

    ``pipeline``: a named pipeline ("cpu"), pipeline text ("lower-einsum,simplify"), a
    ``pipelines.Pipeline`` or a list of ``Pass`` instances. ``override_options`` sets an option
    in every step that has it (the CLI's ``--chunk``). ``reference``: an npz of inputs and
    expected outputs; by default ``<stem>.ref.npz`` beside an input path, else the input model
    is run on random inputs. ``verify``: "end", "each" (also after every pass that changed the
    graph) or "none". ``verify_timeout``: seconds each ONNX Runtime run of the verification may take, loading
    included (None: no limit); past it the run is killed and the compile refused (BadInput: a Loop that
    runs for very long or forever). ``output``: written only after verification passed; None keeps the
    model in memory (``result.model``). ``report``: a folder for report.json and index.html,
    written also when the run fails. ``explain``: passes add notes on near-misses.
    ``input_shapes``: {input name: dims} fixes symbolic input dimensions before the pipeline
    and the verification (the CLI's ``--input-shape NAME:D0,D1,...``; passes/input_shapes.py).
    ``protected_files``: files the run must not write over besides those it reads itself (the CLI
    passes its plugins' source files).

    Refused before any work (``BadInput``): an argument of a type it does not take (``output=3``); a destination that is not a regular file or sits in a
    folder that takes no file; a destination that is a file the run reads (the input, its external
    data files, the reference, ``protected_files``): inputs are never written, ``in_place`` aside.
    Refused right after loading: a model that breaks ONNX's structure (passes/model_check.py).

    Graph inputs that also have an initializer (overridable weights) are frozen: compiled as the
    constants they hold and left out of the compiled model's inputs, said in ``warnings`` and in the
    report's ``frozen_inputs``; verification feeds only the other inputs.
    """
    _check_argument_types(model_or_path, pipeline, output, reference, verify, tolerance, verify_timeout, report,
                          override_options, explain, in_place, keep_intermediates, input_shapes, progress, protected_files)
    if verify_timeout is not None:   # as a float: a Fraction or a numpy float32 broke the timer's thread (adv17)
        verify_timeout = float(check_number("verify_timeout", verify_timeout, "a positive, finite number of seconds",
                                            low=0.0, above_low=True, error=BadInput))
    progress = progress or ProgressHook()
    if verify not in VERIFY_MODES:
        raise BadInput(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
    try:
        check_tolerance(tolerance)
    except ValueError as error:
        raise BadInput(one_line(error)) from None
    pipeline_text, pipeline_name, passes = resolve_pipeline(pipeline, override_options)
    input_path = None if isinstance(model_or_path, onnx.ModelProto) else Path(model_or_path)
    destinations = _check_destinations(output, report, keep_intermediates, input_path, in_place)
    reference_path = Path(reference) if reference is not None else None
    problem = input_file_problem(reference_path, "reference", missing="reference file") if reference_path is not None else None
    if problem:
        raise BadInput(problem)
    input_label = str(model_or_path) if input_path is not None else "<in-memory model>"

    started = time.perf_counter()
    report_data: dict[str, Any] = {
        "tool": "passes.apply", "input": input_label, "output": str(destinations.output) if destinations.output else None,
        "pipeline": pipeline_text, "pipeline_name": pipeline_name, "verify_mode": verify, "tolerance": tolerance}
    # Sees which nodes each pass changed: provenance metadata always, region diffs for a report.
    recorder = PassRecorder(regions=destinations.report is not None)
    intermediate_paths: dict[int, str] = {}
    warnings: list[str] = []
    for where, error in import_failures().items():  # a broken pass module is said, not skipped silently
        warnings.append(f"pass module {where} failed to import: {error}")
        progress.warn(warnings[-1])

    def write_report(status: str, exit_code: int) -> None:
        if destinations.report is None:
            return
        from passes.report.writer import write_report_dir

        report_data.update(status=status, exit_code=exit_code, total_seconds=round(time.perf_counter() - started, 3))
        try:
            write_report_dir(destinations.report, report_data, recorder.region_descriptions, intermediate_paths,
                             recorder.seconds)
        except OSError as error:   # the folder changed under us since it was checked
            raise BadInput(f"cannot write the report: {one_line(error)}") from None

    def fail(error_type: type[CompileError], message: str, status: str) -> CompileError:
        write_report(status, error_type.exit_code)
        return error_type(message, report_data if destinations.report is not None else None)

    if input_path is not None:
        with progress.step(f"load {input_path}"):
            try:
                loaded = read_model(input_path)
            except GraphIOError as error:
                raise BadInput(one_line(error)) from None
        model, used_external_data = loaded.model, loaded.used_external_data
    else:
        model, used_external_data = model_or_path, False
        # No folder to read it from: onnx and the passes would resolve the location against the
        # working folder (its bytes folded into the output), or keep a reference to nothing.
        referring = next((tensor for tensor in all_tensors(model) if uses_external_data(tensor)), None)
        if referring is not None:
            location = next((entry.value for entry in referring.external_data if entry.key == "location"), "")
            raise BadInput(f"the in-memory model refers to external data files (tensor '{printable(referring.name)}' "
                           f"in '{printable(location)}'); pass the model's path, or load it with "
                           "passes.graph_io.read_model")
    try:
        with progress.step(f"check {len(model.graph.node):,} nodes"):   # seconds for VMamba-T's 76,529
            check_model(model)
    except InvalidModelError as error:
        raise BadInput(f"{printable(input_label)}: {one_line(error)}") from None
    # The reference beside the input is protected even when unused (--verify none, or another given).
    beside = find_reference_beside(input_path) if input_path is not None else None
    reference_checked = None   # the beside reference as checked, so that the file read is that one
    if verify != "none" and reference_path is None:
        reference_path = beside
        problem = reference_beside_problem(input_path) if input_path is not None and beside is None else None
        if problem is not None:
            raise BadInput(problem)
        reference_checked = checked_beside(input_path, beside, loaded.folder) if beside is not None else None
        if beside is not None and reference_checked is None:
            raise BadInput(f"reference {printable(beside)} beside the model leads out of the model's folder through a "
                           "symbolic link; refused (give it with --reference to use it)")
    reads = [("input", input_path)] if input_path is not None else []
    reads += [("external data file", path) for path in (loaded.data_files if input_path is not None else [])]
    reads += [("reference", path) for path in dict.fromkeys((reference_path, beside)) if path is not None]
    reads += [("protected file", Path(path)) for path in protected_files]
    if in_place:   # the one write over a read file that was asked for
        reads = [(role, path) for role, path in reads if role != "input"]
    written = _files_written(destinations, passes)
    _check_destinations_apart(written, destinations)
    _check_nothing_read_is_written(written, reads)
    read_files = [path for _, path in reads] + ([input_path] if input_path is not None else [])
    # Written over the input (--in-place, the same path): the input's weights file, if this writer
    # named it, is the one the new model replaces, removed once the new pair is in place.
    output_keeps = read_files
    if in_place and input_path is not None and destinations.output is not None \
            and os.path.realpath(destinations.output) == os.path.realpath(input_path):
        output_keeps = [path for role, path in reads if role != "external data file"] + [input_path]
    if input_path is None and (input_shapes or initializer_inputs(model) or has_negative_perms(model)
                               or has_default_domain_spelled_long(model)):
        model = copy.deepcopy(model)   # the caller's model stays as it was
    left_out = left_out_notice(model)
    if left_out:
        warnings.append(left_out)
        progress.warn(warnings[-1])
    frozen = freeze_initializer_inputs(model)
    if frozen:
        report_data["frozen_inputs"] = frozen
        warnings.append(frozen_inputs_notice(frozen))
        progress.warn(warnings[-1])
    normalize_default_domain(model)
    counted_from_start = normalize_negative_perms(model)
    if counted_from_start:
        warnings.append(negative_perms_notice(counted_from_start))
        progress.warn(warnings[-1])
    if input_shapes:
        try:
            fixed = fix_input_shapes(model, {name: list(dims) for name, dims in input_shapes.items()})
        except InputShapeError as error:
            raise BadInput(one_line(error)) from None
        report_data["input_shapes"] = {name: list(dims) for name, dims in input_shapes.items()}
        progress.stage(f"fixed input shapes: {', '.join(f'{n}:{list(d)}' for n, d in input_shapes.items())}"
                       + (f" ({', '.join(f'{k}={v}' for k, v in fixed.items())})" if fixed else ""))
    # After --input-shape: a size it pins is no longer symbolic, and a value_info agreeing with it no contradiction.
    contradicted = contradicted_value_info(model)
    if contradicted:
        if model is model_or_path:
            model = copy.deepcopy(model)   # the caller's model stays as it was
        drop_value_info_shapes(model, contradicted)
        warnings.append(contradicted_value_info_notice(contradicted))
        progress.warn(warnings[-1])
    meta = ModelMeta.from_model(model)
    input_nodes = len(model.graph.node)
    report_data["nodes"] = {"input": input_nodes}

    # Verification inputs: reference npz (given or beside the input), else random feeds
    # with the input model's own outputs as the expected values.
    feeds = expected = baseline_outputs = None
    if verify != "none":
        lacking = op_onnxruntime_lacks(model) or unseeded_random_node(model)
        if lacking is not None:
            raise BadInput(f"cannot verify: {lacking} (--verify none compiles it without running it)")
        try:
            if reference_path is not None:
                feeds, expected = load_reference(reference_path, model, reference_checked)
            else:
                feeds = random_feeds(model)
        except ReferenceDataError as error:
            raise BadInput(one_line(error)) from None
        report_data["reference"] = str(reference_path) if reference_path else None
        # adv19: an output the reference lacks was never compared, and the run said 'verified against' it
        unreferenced = [] if expected is None else [o.name for o in model.graph.output if o.name not in expected]
        if unreferenced:
            warning = (f"reference {printable(reference_path)} lacks output(s) {printable_names(unreferenced)}; "
                       "compared with the input model's run on its inputs instead")
            warnings.append(warning)
            progress.warn(warning)
        if reference_path is None or verify == "each" or unreferenced:
            if reference_path is None:
                looked_for = f" (looked for {input_path.stem}.ref.npz)" if input_path is not None else ""
                warning = (f"no reference npz{looked_for}; running the input graph ({input_nodes:,} nodes) "
                           "on random inputs to compare against")
                warnings.append(warning)
                progress.warn(warning)
            with progress.step(f"run input model in ONNX Runtime ({input_nodes:,} nodes)"):
                try:
                    baseline_outputs = run_model(model, feeds, log=progress.stage, timeout=verify_timeout,
                                                 optimize=False)
                except RunTimedOut:
                    raise BadInput(f"cannot verify: the input model's run: {timed_out_advice(verify_timeout)}") from None
                except VerificationError as error:
                    # Nothing of ours has touched the model yet: it is the input that is unusable.
                    raise BadInput(f"the input model does not run: {one_line(error)} "
                                   "(--verify none compiles it without running it)") from None
            if expected is None or unreferenced:
                from_input = baseline_outputs if expected is None else {n: baseline_outputs[n] for n in unreferenced}
                # Random inputs on which the input model itself gives NaN or infinity: the comparison could never
                # pass (inf - inf), and a scan form's overflow hint would be blamed, after the whole compile.
                not_finite = _first_not_finite(from_input)
                if not_finite is not None:
                    raise BadInput(f"the input model's output '{printable(not_finite)}' holds NaN or infinity on "
                                   f"{'random inputs' if expected is None else 'the reference inputs'}, which "
                                   "verification cannot compare against (give --reference with finite outputs, or "
                                   "--verify none)")
                expected = from_input if expected is None else {**expected, **from_input}

    with progress.step(f"import {input_nodes:,} nodes into onnx-graphsurgeon"):
        graph = model_to_graph(model)

    keep_intermediate = None
    if destinations.intermediates is not None:
        def keep_intermediate(index, record, changed_model) -> None:
            path = destinations.intermediates / intermediate_name(index, record.name)
            # Made with the first model it holds: a run failing or interrupted before leaves no folder.
            try:
                with folders_made(destinations.intermediates):
                    save_model_atomic(changed_model, path, external_data=used_external_data, keep_files=read_files)
            except OSError as error:   # the folder could not be made (the model's own errors are OutputError)
                raise BadInput(f"cannot make {printable(destinations.intermediates)}: {one_line(error)}") from None
            except GraphIOError as error:   # a full disk, say: an output that cannot be written, like -o's
                kept = (f"; the {len(intermediate_paths)} intermediate model(s) written before it are kept in "
                        f"{printable(destinations.intermediates)}, no output written" if intermediate_paths else "")
                raise BadInput(one_line(error) + kept) from None
            # Relative to the report directory when it is inside it, so the folder can move.
            inside_report = destinations.report is not None and path.is_relative_to(destinations.report)
            intermediate_paths[index] = str(path.relative_to(destinations.report)) if inside_report else str(path)

    manager = PassManager(
        passes, pipeline_text=pipeline_text, verify_each=verify == "each", check=True, progress=progress,
        meta=meta, verify_feeds=feeds, initial_outputs=baseline_outputs, tolerance=tolerance, verify_timeout=verify_timeout,
        on_changed_model=keep_intermediate, recorder=recorder,
    )
    try:
        run = manager.run(graph, PassContext(opset=meta.opset, explain=explain, log=progress.stage))
    except PassVerificationError as error:
        if error.run is not None:
            report_data["run"] = error.run.to_dict()
        if error.timed_out:
            raise fail(BadInput, f"cannot verify: the run after pass '{printable(error.pass_name)}': "
                       f"{timed_out_advice(verify_timeout)}; no output written", "verification-failed") from None
        invalid = None
        if isinstance(error, PassCheckError):   # the input already fails the check the pass's output failed?
            shapeless = "Field 'shape' of 'type' is required" in str(error)
            invalid = (_shapeless_graph_value(model) if shapeless else None) or _shape_inference_error(model)
        if invalid is not None:   # the input already fails the check the pass's output failed
            raise fail(BadInput, f"{printable(input_label)}: invalid model: {invalid} (found after pass "
                       f"'{printable(error.pass_name)}')", "verification-failed") from None
        raise fail(VerificationFailed, f"verification failed: {one_line(error)}; no output written",
                   "verification-failed") from None
    except PipelineError as error:
        if error.run is not None:
            report_data["run"] = error.run.to_dict()
        report_data["error"] = str(error)
        if isinstance(error.__cause__, PassInputError):   # the model's interface, which no pass may change
            raise fail(BadInput, f"{printable(input_label)}: {one_line(error.__cause__)} (found by pass "
                       f"'{printable(error.pass_name)}')", "pass-failed") from None
        invalid = _shape_inference_error(model)
        if invalid is not None:   # the input is what is wrong, not the pass that met it
            cause = error.__cause__ or error
            raise fail(BadInput, f"{printable(input_label)}: invalid model: {invalid} (pass '{printable(error.pass_name)}' "
                       f"failed on it: {type(cause).__name__}: {one_line(cause, limit=200)})", "pass-failed") from None
        raise fail(PassFailed, one_line(error), "pass-failed") from None
    report_data["run"] = run.to_dict()

    with progress.step(f"export {run.nodes_after:,} nodes"):
        final_model = graph_to_model(run.graph, meta)
        recorder.stamp(final_model)
    report_data["nodes"]["output"] = len(final_model.graph.node)

    verification = None
    if verify != "none":
        with progress.step("verify final model in ONNX Runtime"):
            try:
                outputs = run_model(final_model, feeds, log=progress.stage, timeout=verify_timeout)
                comparisons = compare(outputs, expected, rtol_l2=tolerance)
            except RunTimedOut as error:
                report_data["verification"] = {"ok": False, "error": one_line(error)}
                raise fail(BadInput, f"cannot verify: the compiled model's run: {timed_out_advice(verify_timeout)}; "
                           "no output written", "verification-failed") from None
            except VerificationError as error:
                report_data["verification"] = {"ok": False, "error": one_line(error)}
                input_error = (_run_input_model(model, feeds, progress.stage, verify_timeout)[1]
                               if baseline_outputs is None else "")
                if input_error:   # not ours: a float64 Conv, say, that ONNX Runtime's CPU provider has no kernel for
                    raise fail(BadInput, f"cannot verify: the input model does not run in ONNX Runtime either: "
                               f"{input_error} (--verify none compiles it without running it); no output written",
                               "verification-failed") from None
                raise fail(VerificationFailed, f"verification failed: {one_line(error)}; no output written",
                           "verification-failed") from None
        if reference_path is None and not summarize(comparisons)["ok"]:   # (expected: the input model's run as written)
            with progress.step("run the compiled model without ONNX Runtime's optimisations, as the input model ran"):
                plain = compared_as_written(final_model, feeds, expected, comparisons, tolerance, progress.stage,
                                            timeout=verify_timeout)
            if plain is not None:
                warning = _optimisation_warning("", comparisons, plain, tolerance)
                warnings.append(warning)
                progress.warn(warning)
                comparisons = plain
        verification = summarize(comparisons)
        verification["against"] = str(reference_path) if reference_path else "input model on random inputs"
        report_data["verification"] = verification
        if not verification["ok"]:
            worst = _worst_failure(comparisons)
            hints = _non_finite_hints(passes, worst.problem)
            if reference_path is not None and not worst.problem:   # the expected values are not the input's own
                input_outputs = baseline_outputs
                if input_outputs is None:
                    with progress.step("run input model in ONNX Runtime (to compare)"):
                        input_outputs, _ = _run_input_model(model, feeds, progress.stage, verify_timeout)
                hint = _input_misses_reference(input_outputs, outputs, expected, tolerance) if input_outputs else None
                hints += [hint] if hint else []
            raise fail(VerificationFailed, (
                f"verification failed: {_failure_text(worst, tolerance)}; "
                + "".join(f"{hint}; " for hint in hints)
                + "no output written"), "verification-failed")
        second = _second_size_check(model, final_model, progress, verify_timeout, tolerance)
        if second.record is not None:
            verification["second_size"] = second.record
        if second.warning is not None:
            warnings.append(second.warning)
            progress.warn(second.warning)
        if second.failure is not None:
            raise fail(*second.failure, "verification-failed")

    output_written = False
    try:
        if destinations.output is not None:
            with progress.step(f"write {destinations.output}"):
                try:
                    save_model_atomic(final_model, destinations.output, external_data=used_external_data,
                                      input_path=input_path, allow_overwrite_input=in_place, keep_files=output_keeps)
                except GraphIOError as error:
                    raise BadInput(one_line(error)) from None
            output_written = True
        write_report("ok", EXIT_OK)
    except KeyboardInterrupt as interrupt:
        # Ctrl-C or SIGTERM between the output and the report: say what is on disk, not "nothing".
        interrupt.written_output = destinations.output if output_written else None
        raise
    except BadInput as error:
        if not output_written:
            raise
        # The report failed (a full disk) after the output was written: say what is there.
        kept = (f" and {len(intermediate_paths)} intermediate model(s) in {printable(destinations.intermediates)}"
                if intermediate_paths else "")
        raise BadInput(f"wrote {printable(destinations.output)}{kept}, but {error}", error.report) from None
    return CompileResult(final_model, run, pipeline_text, pipeline_name, verification, destinations.output,
                         report_data, time.perf_counter() - started, warnings)

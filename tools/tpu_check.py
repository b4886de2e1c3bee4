"""Compile an ONNX model with Sophgo's tpu-mlir and say whether it works on the TPU.

    python -m tools.tpu_check model.onnx [--input sample.npz] [--chip bm1684x]
        [--quantize F32|BF16|F16|INT8] [--calibration CAL.npz] [--qtable auto|projections|none|FILE]
        [--no-layer-group] [--workdir DIR] [--json PATH]

Steps (tpu-mlir 1.30.2, installed on first use into .tpu-venv/ by tools/tpu_setup.sh):
  1. model_transform: ONNX -> MLIR, checked layer by layer against ONNX Runtime (--test_input);
  2. model_deploy: MLIR -> bmodel for the chip (layer grouping on unless --no-layer-group),
     run on the bundled cmodel simulator and compared with the MLIR results;
  3. model_runner on the bmodel, compared here with ONNX Runtime (cosine, max abs error);
  4. tpu-mlir's own estimate of the bmodel's run time (compiler_profile_0.txt).

INT8 adds, between 1 and 2: run_calibration over a calibration set (``--calibration``: an npz
with one array per model input, samples stacked on a new leading axis; make one with
tools.tpu_calibration), and a quantization table that keeps the scan and its decay/exponent
arithmetic in ``--float-mode`` (BF16 by default) while projections and convolutions go INT8
(``--qtable auto``, tools.tpu_qtable; ``projections`` for all but the projections in float, ``none``
for all-INT8, or a file of your own).

tpu-mlir's onnxsim and constant folding are off by default (``--do_onnx_sim ''``): our
pipelines already simplify, and on large graphs tpu-mlir's own pass does not finish.

Exit codes: 0 compiled and accurate; 2 usage or bad input; 3 did not compile (the
compiler's reason is printed); 4 compiled but cosine below --min-cosine (default 0.9999 for
F32, 0.99 for BF16/F16/INT8); 5 tpu-mlir could not be installed; 1 internal error.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from passes.files import DestinationError, atomic_open, input_file_problem, write_text_atomic
from passes.interrupts import exit_code, sigterm_as_interrupt
from passes.one_line import OneLineArgumentParser, number_text, one_line, positive_int, printable, rich_text
from passes.relative_error import relative_l2
from tools import tpu_toolchain as tc
from passes.graph_io import model_and_data_files
from tools.json_destination import json_destination_refused

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_NOT_COMPILED, EXIT_INACCURATE, EXIT_SETUP = 0, 1, 2, 3, 4, 5
QTABLE_KINDS = ("auto", "projections", "none")   # --qtable words; anything else is a table file
DEFAULT_MIN_COSINE = {"F32": 0.9999, "BF16": 0.99, "F16": 0.99, "INT8": 0.99}


class UsageError(Exception):
    pass


@dataclass
class OutputMatch:
    name: str
    bmodel_name: str
    cosine: float
    max_abs: float
    rel_l2: float


@dataclass
class Verdict:
    model: str
    chip: str
    quantize: str
    layer_group: bool
    nodes: int
    compiled: bool = False
    stage_failed: Optional[str] = None  # "transform", "calibration" or "deploy"
    reason: Optional[str] = None
    transform_seconds: Optional[float] = None
    deploy_seconds: Optional[float] = None
    runner_seconds: Optional[float] = None
    calibration_seconds: Optional[float] = None
    calibration_samples: Optional[int] = None
    # INT8: ops kept in floating point by the quantization table, by reason (scan, decay, exponent)
    float_ops: dict[str, int] = field(default_factory=dict)
    qtable: Optional[str] = None
    transform_check: Optional[str] = None  # tpu-mlir's ONNX vs MLIR comparison: "passed"/"failed"
    deploy_check: Optional[str] = None  # tpu-mlir's MLIR vs cmodel comparison
    outputs: list[OutputMatch] = field(default_factory=list)
    min_cosine: Optional[float] = None
    max_abs: Optional[float] = None
    cosine_threshold: float = 0.9999
    estimated_ms: Optional[float] = None
    estimated_cycles: Optional[int] = None
    estimated_flops: Optional[int] = None
    # Share of the estimated time per tpu-mlir layer type, largest first (from the profile's timeline).
    time_shares: dict[str, float] = field(default_factory=dict)
    bmodel: Optional[str] = None
    workdir: str = ""
    ok: bool = False

    def to_dict(self) -> dict[str, Any]:
        """As JSON takes it: a NaN or infinite number (a bmodel output of infinity) as null, which json.dumps
        would write as NaN or Infinity, no JSON (jq refuses it)."""
        return _finite_or_null(asdict(self))


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(item) for item in value]
    return value


# --- inputs and the ONNX Runtime reference ------------------------------------------------

def model_interface(model_or_path):
    """(inputs as (name, static dims, dtype), output names, node count) of a model (``check``'s: the one read), or
    of the file at a path (its external data not read)."""
    import onnx

    from passes.graph_io import fed_inputs
    from passes.model_check import InvalidModelError, check_local_functions
    from passes.verify import MAX_RANDOM_FEED_RANK

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else \
        onnx.load(str(model_or_path), format="protobuf", load_external_data=False)
    try:   # before ONNX Runtime inlines them, past any interrupt (passes.apply's own check)
        check_local_functions(model)
    except InvalidModelError as error:
        raise UsageError(str(error)) from None
    inputs = []
    for value in fed_inputs(model.graph):
        if not value.type.HasField("tensor_type"):
            raise UsageError(f"input '{printable(value.name)}' is no tensor (a sequence or map): tpu-mlir takes tensors")
        if not value.type.tensor_type.HasField("shape"):   # else read as a scalar: [] dims, all static
            raise UsageError(f"input '{printable(value.name)}' declares no shape: tpu-mlir needs static shapes "
                             "(export with a fixed batch)")
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)) \
            if value.type.tensor_type.elem_type in onnx.helper.get_all_tensor_dtypes() else np.dtype(object)
        if dtype.kind in "OUSc":   # strings (random floats in an object array), complex
            name = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type) \
                if value.type.tensor_type.elem_type in onnx.TensorProto.DataType.values() else "unknown"
            raise UsageError(f"input '{printable(value.name)}' is of type {name}, not a number tpu-mlir takes")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if len(dims) > MAX_RANDOM_FEED_RANK:   # numpy's limit (passes.verify): no input npz nor random data holds it
            raise UsageError(f"input '{printable(value.name)}' has {len(dims):,} axes, more than the "
                             f"{MAX_RANDOM_FEED_RANK} an array can have")
        if any(d is None or d <= 0 for d in dims):
            raise UsageError(f"input '{printable(value.name)}' has a non-static shape {dims}: tpu-mlir needs static shapes "
                             "(export with a fixed batch)")
        inputs.append((value.name, tuple(dims), dtype))
    outputs = [value.name for value in model.graph.output]
    return inputs, outputs, len(model.graph.node)


def _load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    from passes.npz_arrays import NpzError, read_npz

    try:
        return read_npz(path)   # sizes checked before unpacking, as the compiler reads its reference
    except NpzError as error:
        raise UsageError(f"{what} {printable(path)}: {error}") from None


def _index_bounds(model_or_path) -> dict[str, int]:
    import onnx

    from tools.tpu_calibration import index_bounds

    return index_bounds(model_or_path if isinstance(model_or_path, onnx.ModelProto) else
                        onnx.load(str(model_or_path), format="protobuf", load_external_data=False))


def make_inputs(interface, sample: Optional[Path], bounds: Optional[dict[str, int]] = None) -> dict[str, np.ndarray]:
    """The inputs of ``sample`` (an npz), or random ones drawn as tools.tpu_calibration's synthetic set draws
    them (an integer input: ids over the ``bounds`` rows of the table it indexes, ``index_bounds``)."""
    from passes.verify import MAX_RANDOM_FEED_ELEMENTS
    from tools.tpu_calibration import random_inputs

    feeds = {}
    stored = _load_npz(sample, "input npz") if sample else {}
    elements = sum(math.prod(shape) for _, shape, _ in interface)
    if not sample and elements > MAX_RANDOM_FEED_ELEMENTS:   # the compiler's cap on random inputs (passes.verify)
        raise UsageError(f"the model's inputs hold {elements:,} elements, too many to make random data for "
                         f"(> {MAX_RANDOM_FEED_ELEMENTS:,}); give --input")
    if not sample:
        try:
            return random_inputs(interface, bounds or {}, np.random.default_rng(0), advice="give --input")
        except ValueError as error:
            raise UsageError(str(error)) from None
    for name, shape, dtype in interface:
        if name not in stored:
            raise UsageError(f"{sample} has no array '{printable(name)}' (has: {printable(', '.join(stored)) or 'nothing'})")
        value = stored[name]
        if tuple(value.shape) != shape:
            raise UsageError(f"{sample}['{printable(name)}'] has shape {list(value.shape)}, the model wants {list(shape)}")
        # adv19: NaN fed in made ONNX Runtime's reference NaN, a verdict known before the minutes of compiling; a
        # float array for an integer input was cut to integers without a word (2.7 -> 2), as the compiler never takes it
        if value.dtype.kind not in "biuf" or (value.dtype.kind == "f" and not np.all(np.isfinite(value))):
            raise UsageError(f"{printable(sample)}['{printable(name)}'] is {value.dtype} holding NaN or infinity"
                             if value.dtype.kind == "f" else f"{printable(sample)}['{printable(name)}'] is {value.dtype}")
        if value.dtype.kind == "f" and np.dtype(dtype).kind != "f":
            raise UsageError(f"{printable(sample)}['{printable(name)}'] is {value.dtype}; the model takes {np.dtype(dtype)}")
        feeds[name] = value.astype(dtype)
    return feeds


def calibration_samples(interface, path: Path, count: Optional[int]) -> list[dict[str, np.ndarray]]:
    """Per-sample feeds from an npz of arrays stacked on a leading sample axis ([S, *input shape])."""
    stored = _load_npz(path, "calibration set")
    samples = None
    for name, shape, dtype in interface:
        if name not in stored:
            raise UsageError(f"calibration set {path} has no array '{printable(name)}' (has: {printable(', '.join(stored)) or 'nothing'})")
        value = stored[name]
        if tuple(value.shape[1:]) != shape:
            raise UsageError(f"calibration set {path}['{printable(name)}'] has shape {list(value.shape)}, "
                             f"want [samples, {', '.join(map(str, shape))}]")
        if samples is not None and len(value) != samples:
            raise UsageError(f"calibration set {path}: inputs have different sample counts")
        samples = len(value)
    samples = min(samples or 0, count) if count else (samples or 0)
    if samples == 0:
        raise UsageError(f"calibration set {path} has no samples")
    return [{name: stored[name][i].astype(dtype) for name, _, dtype in interface} for i in range(samples)]


def onnxruntime_outputs(model, feeds: dict[str, np.ndarray], timeout: float | None = None) -> dict[str, np.ndarray]:
    """The model's outputs from ONNX Runtime, run as verification runs it (passes.verify.run_model):
    in a child process under a memory cap, which SIGTERM and Ctrl-C end at once. In this process a
    Loop whose trip count is the input's value held the tool past SIGTERM, and a size taken from the
    input's values allocated what it asked for. ``model``: the ModelProto ``check`` read once (its external
    data from its folder only, held in it), never the path again; VerificationError (one line) if it cannot run it, or not
    within ``timeout`` seconds (--timeout: a Loop of 10^9 trips held the tool for hours before its first
    tpu-mlir step, whose --timeout it had)."""
    from passes.verify import run_model

    return run_model(model, feeds, timeout=timeout)


def worst_match(matches: list[OutputMatch]) -> tuple[float, float]:
    """The lowest cosine and the largest max abs error over the outputs, NaN counted the worst: min() and max()
    skip a NaN that comes after a number (adv19: an output of infinity beside one of cosine 1.0 was 'OK')."""
    return (min((m.cosine for m in matches), key=lambda cosine: (not math.isnan(cosine), cosine)),
            max((m.max_abs for m in matches), key=lambda error: (math.isnan(error), error)))


def match_outputs(reference: dict[str, np.ndarray], produced: dict[str, np.ndarray]) -> list[OutputMatch]:
    """Pair ONNX outputs with bmodel outputs (tpu-mlir appends '_<Op>' to names), then by order."""
    matches, unused = [], list(produced)
    for index, (name, expected) in enumerate(reference.items()):
        key = name if name in produced else next((k for k in unused if k.startswith(name + "_")), None)
        if key is None and index < len(unused):
            key = unused[index] if len(unused) == len(reference) - len(matches) else unused[0]
        if key is None:
            continue
        unused.remove(key)
        actual = np.asarray(produced[key], dtype=np.float64).reshape(-1)
        wanted = np.asarray(expected, dtype=np.float64).reshape(-1)
        if actual.size != wanted.size:
            raise ValueError(f"bmodel output '{key}' has {actual.size} values, ONNX output '{name}' {wanted.size}")
        norms = np.linalg.norm(actual) * np.linalg.norm(wanted)
        finite = bool(np.all(np.isfinite(actual)) and np.all(np.isfinite(wanted)))
        if not finite:   # NaN or infinity: no cosine (a NaN gave cosine 0 by array_equal, infinity numpy's NaN)
            cosine = math.nan
        else:
            cosine = float(actual @ wanted / norms) if norms > 0 else float(np.array_equal(actual, wanted))
        with np.errstate(invalid="ignore"):   # inf - inf: NaN, said by the max abs itself
            max_abs = float(np.max(np.abs(actual - wanted))) if actual.size else 0.0
        rel_l2 = relative_l2(actual, wanted)
        matches.append(OutputMatch(name, key, cosine, max_abs, rel_l2))
    return matches


# --- the run ------------------------------------------------------------------------------

class Display:
    """A spinner with the step name, elapsed time and the tool's last log line."""

    def __init__(self, console) -> None:
        self.console = console
        self.progress = None

    def __enter__(self):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 TextColumn("[dim]{task.fields[tail]}"), console=self.console, transient=True)
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def run(self, name: str, command, cwd, env, log, timeout) -> tc.StepResult:
        task = self.progress.add_task(name, tail="")

        def tick(line: str) -> None:
            self.progress.update(task, tail=rich_text(line[:70]))

        result = tc.run_logged(name, command, cwd, env, log, timeout=timeout, tick=tick)
        self.progress.remove_task(task)
        mark = "[green]✓[/]" if result.ok else "[red]✗[/]"
        extra = " (timed out)" if result.timed_out else ""
        self.console.print(f"{mark} {name} {result.seconds:.1f} s{extra}  [dim]{rich_text(log)}[/]", highlight=False)
        return result


def _timed_out(step: tc.StepResult) -> str:
    last = tc.last_line(step.log)
    percents = re.findall(r"(\d+)%", last)
    shown = f"progress bar at {percents[-1]}%" if percents else f"last output: {last[-120:]}"
    return f"timed out after {step.seconds:.0f} s (--timeout); {shown}"


def _safe_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", path.stem) or "model"


WORKDIR_MARK = ".tpu_check"   # in every --workdir this tool made; only such a folder is emptied
CHECKED_MODEL_NAME = "checked-model.onnx"   # the model as read and checked, given to tpu-mlir (no {name}* file has a "-")


def prepare_workdir(workdir: Path, kept: list[tuple[str, Path]]) -> None:
    """Make ``workdir``, or empty the one an earlier run made (stale files, an old bmodel or profile,
    would mislead the verdict). A folder this tool did not make (``--workdir .``, a home folder) or
    one holding a file or folder of ``kept`` (what the run reads, the working directory) is refused,
    never deleted."""
    workdir = Path(workdir).resolve()   # a relative one would never contain the resolved paths of ``kept``
    if workdir.exists():
        shown = printable(workdir)
        if not workdir.is_dir():
            raise UsageError(f"--workdir {shown} exists and is not a directory")
        for role, path in kept:
            if path.resolve().is_relative_to(workdir):
                raise UsageError(f"--workdir {shown} holds {role} ({printable(path)}) and would be emptied; "
                                 "give another folder")
        # The mark as a regular file, never a link to one (a planted link is no mark). A folder holding only the
        # onnxruntime_outputs.npz of the runs before the mark existed is no longer emptied (adv20's leftover).
        mark = workdir / WORKDIR_MARK
        made_here = mark.is_file() and not mark.is_symlink()
        if not made_here and any(workdir.iterdir()):
            raise UsageError(f"--workdir {shown} is not empty and was not made by tools.tpu_check; refusing to "
                             "empty it (give a new folder)")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / WORKDIR_MARK).write_text("made by tools.tpu_check; its next run with this --workdir empties it\n")


def _check_input_file(path, what: str) -> None:
    problem = input_file_problem(path, what)
    if problem:
        raise UsageError(problem)


def check(args, console) -> tuple[Verdict, int]:
    from passes.graph_io import InputError
    from passes.model_check import runtime_bytes, runtime_model

    model_path = Path(args.model).resolve()
    _check_input_file(args.model, "model")
    try:
        # Read once: the interface, ONNX Runtime's reference and tpu-mlir's copy all come from these bytes (adv24:
        # each opened the path again, so a file put in its place after the check was what ran and was compiled).
        model = runtime_model(args.model)
        interface, output_names, nodes = model_interface(model)
        model_bytes = runtime_bytes(model, args.model)
    except InputError as error:
        raise UsageError(str(error)) from None
    except UsageError:
        raise
    except Exception as error:
        raise UsageError(f"cannot read {args.model} as ONNX: {one_line(error, 200)}") from None
    sample = Path(args.input) if args.input else None
    if sample is not None:
        _check_input_file(sample, "input npz")
    quantize = args.quantize.upper()
    calibration = Path(args.calibration) if args.calibration else None
    if quantize == "INT8" and calibration is None:
        raise UsageError("--quantize INT8 needs --calibration (an npz of stacked inputs: python -m tools.tpu_calibration)")
    if calibration is not None and quantize != "INT8":
        raise UsageError("--calibration is for --quantize INT8 only")
    if calibration is not None:
        _check_input_file(calibration, "calibration set")
    if args.qtable not in QTABLE_KINDS:
        _check_input_file(args.qtable, "quantization table")
    threshold = args.min_cosine if args.min_cosine is not None else DEFAULT_MIN_COSINE[quantize]
    name = _safe_name(model_path)
    workdir = Path(args.workdir or f"out/tpu-check/{name}-{args.chip}-{quantize.lower()}"
                   f"{'-nolg' if args.no_layer_group else ''}").resolve()
    # the model's external data too: read into memory by now, but the user's (adv24: a --workdir holding the weights
    # and an earlier run's mark was emptied, the weights with it)
    read = [("the model", model_path), *[("an external data file of the model", file) for _, file in
                                         model_and_data_files(model_path)[1:]],
            ("the input npz", sample), ("the calibration set", calibration),
            ("the quantization table", Path(args.qtable) if args.qtable not in QTABLE_KINDS else None),
            ("the working directory", Path.cwd())]
    bounds = None if sample else _index_bounds(model)
    feeds = make_inputs(interface, sample, bounds)   # bad npz files are refused before the workdir is touched
    calibration_set = calibration_samples(interface, calibration, args.calibration_count) if calibration else []
    from passes.verify import RunTimedOut

    try:   # before the workdir is touched: a model ONNX Runtime refuses is bad input, not a traceback
        reference = onnxruntime_outputs(model, feeds, args.timeout)
    except RunTimedOut:
        raise UsageError(f"ONNX Runtime's reference run of {printable(args.model)} did not end within "
                         f"{args.timeout:g} s (--timeout); its process was killed") from None
    except Exception as error:   # its external data outside its folder, an op it lacks, a failing kernel
        reason = str(error).removeprefix("ONNX Runtime could not run the model: ")   # run_model's own words
        raise UsageError(f"ONNX Runtime cannot run {printable(args.model)}: {one_line(reason, 300)}") from None
    prepare_workdir(workdir, [(role, path) for role, path in read if path is not None])

    verdict = Verdict(model=str(args.model), chip=args.chip, quantize=quantize, layer_group=not args.no_layer_group,
                      nodes=nodes, cosine_threshold=threshold, workdir=str(workdir))
    tc.save_npz(workdir / "input.npz", feeds)
    tc.save_npz(workdir / "onnxruntime_outputs.npz", reference)
    checked_copy = workdir / CHECKED_MODEL_NAME   # tpu-mlir reads a path: this run's copy of what was checked
    with atomic_open(checked_copy, "wb", "the checked model's copy") as copy:
        copy.write(model_bytes)

    venv = tc.venv_dir(args.venv)
    with Display(console) as display:
        if not tc.is_installed(venv):
            console.print(f"tpu-mlir not installed in {rich_text(venv)}: installing (first use, about 3 minutes)")
            setup = display.run("install tpu-mlir", tc.setup_command(venv), tc.REPO_ROOT, tc.tool_environment(venv),
                                workdir / "setup.log", timeout=1800)
            if not setup.ok or not tc.is_installed(venv):
                raise SetupFailed(tc.failure_reason((workdir / "setup.log").read_text(errors="replace")))
        env = tc.tool_environment(venv)

        transform = ["model_transform", "--model_name", name, "--model_def", CHECKED_MODEL_NAME,
                     "--test_input", "input.npz", "--test_result", f"{name}_top_outputs.npz", "--mlir", f"{name}.mlir"]
        if not args.tpu_onnxsim:
            transform += ["--do_onnx_sim", ""]  # argparse type=bool: only an empty string is False
        step = display.run("model_transform", transform, workdir, env, workdir / "transform.log", args.timeout)
        verdict.transform_seconds = round(step.seconds, 2)
        log_text = step.log.read_text(errors="replace")
        verdict.transform_check = "failed" if tc.comparison_failed(log_text) else ("passed" if step.ok else None)
        if not (workdir / f"{name}.mlir").is_file() or (not step.ok and not tc.comparison_failed(log_text)):
            verdict.stage_failed = "transform"
            verdict.reason = _timed_out(step) if step.timed_out else tc.failure_reason(log_text)
            return verdict, EXIT_NOT_COMPILED

        bmodel = workdir / f"{name}.bmodel"
        deploy = ["model_deploy", "--mlir", f"{name}.mlir", "--chip", args.chip, "--quantize", quantize,
                  "--model", bmodel.name]
        if quantize == "INT8":
            failed = _calibrate(verdict, calibration_set, args, name, workdir, env, display, model_path, model)
            if failed is not None:
                return verdict, failed
            deploy += ["--calibration_table", f"{name}_cali_table"]
            if verdict.qtable:
                deploy += ["--quantize_table", verdict.qtable]
            # tpu-mlir stops without a bmodel when the INT8 MLIR's outputs are below its own
            # tolerance (0.90 cosine); we compile regardless and judge the bmodel's cosine.
            deploy += ["--tolerance", "0,0"]
        if not args.skip_simulation_check:
            deploy += ["--test_input", f"{name}_in_f32.npz", "--test_reference", f"{name}_top_outputs.npz"]
        if args.no_layer_group:
            deploy += ["--disable_layer_group"]
        step = display.run("model_deploy", deploy, workdir, env, workdir / "deploy.log", args.timeout)
        verdict.deploy_seconds = round(step.seconds, 2)
        log_text = step.log.read_text(errors="replace")
        if not bmodel.is_file():
            verdict.stage_failed = "deploy"
            verdict.reason = _timed_out(step) if step.timed_out else tc.failure_reason(log_text)
            return verdict, EXIT_NOT_COMPILED
        verdict.compiled = True
        verdict.bmodel = str(bmodel)
        if not args.skip_simulation_check:
            verdict.deploy_check = "passed" if step.ok else "failed"
            if not step.ok:
                verdict.reason = tc.failure_reason(log_text)
        profile = tc.read_profile(workdir)
        if profile is not None:
            verdict.estimated_ms = round(profile.milliseconds, 4)
            verdict.estimated_cycles = profile.cycles
            verdict.estimated_flops = profile.flops
            verdict.time_shares = {kind: round(share, 4) for kind, share in profile.shares.items()}
        if args.estimate_only:
            verdict.ok = True
            verdict.reason = "bmodel not run on the cmodel simulator (--estimate-only): no cosine"
            return verdict, EXIT_OK

        runner = ["model_runner", "--input", f"{name}_in_f32.npz", "--model", bmodel.name,
                  "--output", "bmodel_outputs.npz"]
        step = display.run("model_runner (cmodel)", runner, workdir, env, workdir / "runner.log", args.timeout)
        verdict.runner_seconds = round(step.seconds, 2)
        if not step.ok or not (workdir / "bmodel_outputs.npz").is_file():
            verdict.reason = "model_runner failed: " + tc.failure_reason(step.log.read_text(errors="replace"))
            return verdict, EXIT_INACCURATE
    produced = dict(np.load(workdir / "bmodel_outputs.npz"))
    verdict.outputs = match_outputs(reference, produced)
    if verdict.outputs:
        verdict.min_cosine, verdict.max_abs = worst_match(verdict.outputs)
    verdict.ok = verdict.min_cosine is not None and verdict.min_cosine >= threshold
    return verdict, EXIT_OK if verdict.ok else EXIT_INACCURATE


class SetupFailed(Exception):
    pass


def _calibrate(verdict: Verdict, samples, args, name: str, workdir: Path, env, display, model_path: Path,
               model) -> Optional[int]:
    """run_calibration over the samples, then the quantization table; an exit code if it failed."""
    from tools import tpu_qtable

    dataset = workdir / "calibration"
    dataset.mkdir()
    for index, sample in enumerate(samples):
        tc.save_npz(dataset / f"sample_{index:04d}.npz", sample)
    verdict.calibration_samples = len(samples)
    command = ["run_calibration", f"{name}.mlir", "--dataset", dataset.name, "--input_num", str(len(samples)),
               "--tune_num", str(args.calibration_tune), "--chip", args.chip, "-o", f"{name}_cali_table"]
    step = display.run("run_calibration", command, workdir, env, workdir / "calibration.log", args.timeout)
    verdict.calibration_seconds = round(step.seconds, 2)
    if not step.ok or not (workdir / f"{name}_cali_table").is_file():
        verdict.stage_failed = "calibration"
        verdict.reason = _timed_out(step) if step.timed_out else tc.failure_reason(step.log.read_text(errors="replace"))
        return EXIT_NOT_COMPILED
    if args.qtable == "none":
        return None
    if args.qtable not in ("auto", "projections"):
        verdict.qtable = str(Path(args.qtable).resolve())
        return None
    table = tpu_qtable.quantization_table(model, tpu_qtable.mlir_op_names((workdir / f"{name}.mlir").read_text()),
                                          args.float_mode, tc.NPU_LANES.get(args.chip, tpu_qtable.DEFAULT_LANES),
                                          projections_only=args.qtable == "projections")
    for *_, node in table:
        verdict.float_ops[node.why] = verdict.float_ops.get(node.why, 0) + 1
    write_text_atomic(workdir / f"{name}_qtable", tpu_qtable.format_table(table, model_path.name), "quantization table")
    verdict.qtable = str(workdir / f"{name}_qtable")
    return None


def render(verdict: Verdict, console) -> None:
    lg = "layer group on" if verdict.layer_group else "layer group off"
    console.print(f"[bold]tpu-check[/] {rich_text(verdict.model)} · {verdict.nodes:,} nodes · {verdict.chip} {verdict.quantize} · {lg}",
                  highlight=False)
    if verdict.transform_seconds is not None:
        check = f", ONNX Runtime vs MLIR {verdict.transform_check}" if verdict.transform_check else ""
        console.print(f"  model_transform {verdict.transform_seconds:.1f} s{check}", highlight=False)
    if verdict.calibration_seconds is not None:
        kept = ", ".join(f"{rich_text(why)} {count}" for why, count in verdict.float_ops.items())
        table = f"; {sum(verdict.float_ops.values())} ops kept float ({kept})" if verdict.float_ops else ""
        console.print(f"  run_calibration {verdict.calibration_seconds:.1f} s, {verdict.calibration_samples} samples{table}",
                      highlight=False)
    if verdict.deploy_seconds is not None:
        check = f", MLIR vs cmodel {verdict.deploy_check}" if verdict.deploy_check else ""
        console.print(f"  model_deploy    {verdict.deploy_seconds:.1f} s{check}", highlight=False)
    if not verdict.compiled:
        console.print(f"  [red]NOT COMPILED[/] ({verdict.stage_failed}): {rich_text(verdict.reason)}", highlight=False)
        return
    if verdict.estimated_ms is not None:
        cycles = f", {verdict.estimated_cycles:,} cycles" if verdict.estimated_cycles else ""
        console.print(f"  estimated TPU time {verdict.estimated_ms:.3f} ms{cycles} (tpu-mlir compiler_profile)",
                      highlight=False)
    if verdict.time_shares:
        top = ", ".join(f"{rich_text(kind)} {share:.0%}" for kind, share in list(verdict.time_shares.items())[:6])
        console.print(f"  where the time goes: {top}", highlight=False)
    for match in verdict.outputs:
        console.print(f"  bmodel vs ONNX Runtime '{rich_text(match.name)}': cosine {match.cosine:.7f}, max abs {match.max_abs:.3g}, "
                      f"rel L2 {match.rel_l2:.3g}", highlight=False)
    if verdict.reason:
        console.print(f"  note: {rich_text(verdict.reason)}", highlight=False)
    status = "[green]PASS[/]" if verdict.ok else "[red]FAIL[/]"
    if verdict.min_cosine is None and verdict.ok:
        console.print(f"  {status}: compiled (accuracy not checked)", highlight=False)
        return
    cosine = f"{verdict.min_cosine:.7f}" if verdict.min_cosine is not None else "n/a"
    console.print(f"  {status}: compiled, cosine {cosine} (threshold {verdict.cosine_threshold})", highlight=False)


def _timeout(text: str) -> float:
    """Checked before tpu-mlir is installed or started ('--timeout -1' installed it, then timed out every step)."""
    return number_text(text, "a number of seconds above 0", low=0.0, high=10.0**9, above_low=True)


def _cosine(text: str) -> float:
    """'--min-cosine nan' failed the verdict after the whole compile and run."""
    return number_text(text, "a number from -1 to 1", low=-1.0, high=1.0)


def _tune_count(text: str) -> int:
    return 0 if text == "0" else positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m tools.tpu_check", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="ONNX model with static shapes")
    parser.add_argument("--input", metavar="NPZ", help="inputs by name (e.g. the export's .ref.npz); default: random normal, an integer input ids over the rows of the table it indexes")
    parser.add_argument("--chip", default="bm1684x", choices=tc.CHIPS)
    parser.add_argument("--quantize", default="F32", type=str.upper, choices=["F32", "BF16", "F16", "INT8"])
    parser.add_argument("--calibration", metavar="NPZ",
                        help="INT8: calibration set, one array per input with samples stacked first (tools.tpu_calibration)")
    parser.add_argument("--calibration-count", type=positive_int, metavar="N", help="INT8: use the first N samples only")
    parser.add_argument("--calibration-tune", type=_tune_count, default=0, metavar="N",
                        help="INT8: run_calibration's per-op threshold tuning on N samples (default 0: KL thresholds "
                             "as they are; tuning took 6 min on micro-digits with 5 samples, 2-core machine)")
    parser.add_argument("--qtable", default="auto", metavar="auto|projections|none|FILE",
                        help="INT8: ops kept in floating point: auto = the scan and its decay arithmetic (tools.tpu_qtable), "
                             "projections = all but the projections (Conv, MatMul/Gemm with a weight), "
                             "none = all INT8, or a tpu-mlir quantization table file")
    parser.add_argument("--float-mode", default="BF16", type=str.upper, choices=["BF16", "F16", "F32"],
                        help="INT8: the mode of the ops the auto table keeps in floating point (default BF16)")
    parser.add_argument("--no-layer-group", action="store_true", help="model_deploy --disable_layer_group")
    parser.add_argument("--workdir", help="where tpu-mlir writes (default out/tpu-check/<model>-<chip>-<quant>)")
    parser.add_argument("--json", metavar="PATH", help="write the verdict as JSON ('-' for stdout)")
    parser.add_argument("--min-cosine", type=_cosine, help="accuracy threshold (default 0.9999 F32, 0.99 BF16/F16/INT8)")
    parser.add_argument("--timeout", type=_timeout, default=3600,
                        help="seconds per tpu-mlir step and for the ONNX Runtime reference run (default 3600)")
    parser.add_argument("--skip-simulation-check", action="store_true",
                        help="model_deploy without its layer-by-layer cmodel comparison (faster)")
    parser.add_argument("--estimate-only", action="store_true",
                        help="stop after model_deploy: compile and estimate, no cmodel run, no cosine (to compare graph forms)")
    parser.add_argument("--tpu-onnxsim", action="store_true", help="let tpu-mlir run its own constant folding and onnxsim")
    parser.add_argument("--venv", help="tpu-mlir venv (default .tpu-venv in the repository, or $TPU_VENV)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    out = Console(soft_wrap=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    qtable_file = args.qtable if args.qtable not in QTABLE_KINDS else None
    if json_destination_refused(args.json, dash_is_stdout=True, reads=[
            *model_and_data_files(args.model), ("input", args.input), ("calibration", args.calibration), ("qtable", qtable_file)]):
        return EXIT_USAGE
    try:
        with sigterm_as_interrupt():   # SIGTERM stops the tools and cleans up like Ctrl-C
            verdict, code = check(args, console)
    except (UsageError, DestinationError) as error:
        sys.stderr.write(f"error: {one_line(error)}\n")   # names from the model: escaped
        return EXIT_USAGE
    except SetupFailed as error:
        sys.stderr.write(f"error: tpu-mlir could not be installed: {error}\n")
        return EXIT_SETUP
    except KeyboardInterrupt as interrupt:
        sys.stderr.write("error: interrupted\n")
        return exit_code(interrupt)
    render(verdict, out)
    out.print(f"  total {time.perf_counter() - started:.1f} s · logs in {rich_text(verdict.workdir)}", highlight=False)
    if args.json:
        text = json.dumps(verdict.to_dict(), indent=2)
        if args.json == "-":
            print(text)
        else:
            write_text_atomic(args.json, text + "\n", "--json")
    return code


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

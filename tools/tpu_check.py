"""Compile an ONNX model with Sophgo's tpu-mlir and say whether it works on the TPU.

    python -m tools.tpu_check model.onnx [--input sample.npz] [--chip bm1684x]
        [--quantize F32|BF16|F16] [--no-layer-group] [--workdir DIR] [--json PATH]

Steps (tpu-mlir 1.30.2, installed on first use into .tpu-venv/ by tools/tpu_setup.sh):
  1. model_transform: ONNX -> MLIR, checked layer by layer against ONNX Runtime (--test_input);
  2. model_deploy: MLIR -> bmodel for the chip (layer grouping on unless --no-layer-group),
     run on the bundled cmodel simulator and compared with the MLIR results;
  3. model_runner on the bmodel, compared here with ONNX Runtime (cosine, max abs error);
  4. tpu-mlir's own estimate of the bmodel's run time (compiler_profile_0.txt).

tpu-mlir's onnxsim and constant folding are off by default (``--do_onnx_sim ''``): our
pipelines already simplify, and on large graphs tpu-mlir's own pass does not finish.

Exit codes: 0 compiled and accurate; 2 usage or bad input; 3 did not compile (the
compiler's reason is printed); 4 compiled but cosine below --min-cosine (default 0.9999 for
F32, 0.99 for BF16/F16); 5 tpu-mlir could not be installed; 1 internal error.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tools import tpu_toolchain as tc

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_NOT_COMPILED, EXIT_INACCURATE, EXIT_SETUP = 0, 1, 2, 3, 4, 5
DEFAULT_MIN_COSINE = {"F32": 0.9999, "BF16": 0.99, "F16": 0.99}


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
    stage_failed: Optional[str] = None  # "transform" or "deploy"
    reason: Optional[str] = None
    transform_seconds: Optional[float] = None
    deploy_seconds: Optional[float] = None
    runner_seconds: Optional[float] = None
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
        return asdict(self)


# --- inputs and the ONNX Runtime reference ------------------------------------------------

def model_interface(path: Path):
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if any(d is None or d <= 0 for d in dims):
            raise UsageError(f"input '{value.name}' has a non-static shape {dims}: tpu-mlir needs static shapes "
                             "(export with a fixed batch)")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        inputs.append((value.name, tuple(dims), dtype))
    outputs = [value.name for value in model.graph.output]
    return inputs, outputs, len(model.graph.node)


def make_inputs(interface, sample: Optional[Path]) -> dict[str, np.ndarray]:
    feeds = {}
    stored = dict(np.load(sample)) if sample else {}
    random = np.random.default_rng(0)
    for name, shape, dtype in interface:
        if sample:
            if name not in stored:
                raise UsageError(f"{sample} has no array '{name}' (has: {', '.join(stored) or 'nothing'})")
            value = stored[name]
            if tuple(value.shape) != shape:
                raise UsageError(f"{sample}['{name}'] has shape {list(value.shape)}, the model wants {list(shape)}")
            feeds[name] = value.astype(dtype)
        else:
            feeds[name] = random.standard_normal(shape).astype(dtype)
    return feeds


def onnxruntime_outputs(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


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
        cosine = float(actual @ wanted / norms) if norms > 0 else float(np.array_equal(actual, wanted))
        max_abs = float(np.max(np.abs(actual - wanted))) if actual.size else 0.0
        rel_l2 = float(np.linalg.norm(actual - wanted) / max(np.linalg.norm(wanted), 1e-30))
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
            self.progress.update(task, tail=line[:70])

        result = tc.run_logged(name, command, cwd, env, log, timeout=timeout, tick=tick)
        self.progress.remove_task(task)
        mark = "[green]✓[/]" if result.ok else "[red]✗[/]"
        extra = " (timed out)" if result.timed_out else ""
        self.console.print(f"{mark} {name} {result.seconds:.1f} s{extra}  [dim]{log}[/]", highlight=False)
        return result


def _timed_out(step: tc.StepResult) -> str:
    last = tc.last_line(step.log)
    percents = re.findall(r"(\d+)%", last)
    shown = f"progress bar at {percents[-1]}%" if percents else f"last output: {last[-120:]}"
    return f"timed out after {step.seconds:.0f} s (--timeout); {shown}"


def _safe_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", path.stem) or "model"


def check(args, console) -> tuple[Verdict, int]:
    model_path = Path(args.model).resolve()
    if not model_path.is_file():
        raise UsageError(f"model not found: {args.model}")
    try:
        interface, output_names, nodes = model_interface(model_path)
    except UsageError:
        raise
    except Exception as error:
        raise UsageError(f"cannot read {args.model} as ONNX: {' '.join(str(error).split())[:200]}") from None
    sample = Path(args.input) if args.input else None
    if sample is not None and not sample.is_file():
        raise UsageError(f"input npz not found: {sample}")
    quantize = args.quantize.upper()
    threshold = args.min_cosine if args.min_cosine is not None else DEFAULT_MIN_COSINE[quantize]
    name = _safe_name(model_path)
    workdir = Path(args.workdir or f"out/tpu-check/{name}-{args.chip}-{quantize.lower()}"
                   f"{'-nolg' if args.no_layer_group else ''}").resolve()
    if workdir.exists():
        shutil.rmtree(workdir)  # stale files (an old bmodel, an old profile) would mislead the verdict
    workdir.mkdir(parents=True)

    verdict = Verdict(model=str(args.model), chip=args.chip, quantize=quantize, layer_group=not args.no_layer_group,
                      nodes=nodes, cosine_threshold=threshold, workdir=str(workdir))
    feeds = make_inputs(interface, sample)
    np.savez(workdir / "input.npz", **feeds)
    reference = onnxruntime_outputs(model_path, feeds)
    np.savez(workdir / "onnxruntime_outputs.npz", **reference)

    venv = tc.venv_dir(args.venv)
    with Display(console) as display:
        if not tc.is_installed(venv):
            console.print(f"tpu-mlir not installed in {venv}: installing (first use, about 3 minutes)")
            setup = display.run("install tpu-mlir", tc.setup_command(venv), tc.REPO_ROOT, tc.tool_environment(venv),
                                workdir / "setup.log", timeout=1800)
            if not setup.ok or not tc.is_installed(venv):
                raise SetupFailed(tc.failure_reason((workdir / "setup.log").read_text(errors="replace")))
        env = tc.tool_environment(venv)

        transform = ["model_transform", "--model_name", name, "--model_def", str(model_path),
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
        verdict.min_cosine = min(m.cosine for m in verdict.outputs)
        verdict.max_abs = max(m.max_abs for m in verdict.outputs)
    verdict.ok = verdict.min_cosine is not None and verdict.min_cosine >= threshold
    return verdict, EXIT_OK if verdict.ok else EXIT_INACCURATE


class SetupFailed(Exception):
    pass


def render(verdict: Verdict, console) -> None:
    lg = "layer group on" if verdict.layer_group else "layer group off"
    console.print(f"[bold]tpu-check[/] {verdict.model} · {verdict.nodes:,} nodes · {verdict.chip} {verdict.quantize} · {lg}",
                  highlight=False)
    if verdict.transform_seconds is not None:
        check = f", ONNX Runtime vs MLIR {verdict.transform_check}" if verdict.transform_check else ""
        console.print(f"  model_transform {verdict.transform_seconds:.1f} s{check}", highlight=False)
    if verdict.deploy_seconds is not None:
        check = f", MLIR vs cmodel {verdict.deploy_check}" if verdict.deploy_check else ""
        console.print(f"  model_deploy    {verdict.deploy_seconds:.1f} s{check}", highlight=False)
    if not verdict.compiled:
        console.print(f"  [red]NOT COMPILED[/] ({verdict.stage_failed}): {verdict.reason}", highlight=False)
        return
    if verdict.estimated_ms is not None:
        cycles = f", {verdict.estimated_cycles:,} cycles" if verdict.estimated_cycles else ""
        console.print(f"  estimated TPU time {verdict.estimated_ms:.3f} ms{cycles} (tpu-mlir compiler_profile)",
                      highlight=False)
    if verdict.time_shares:
        top = ", ".join(f"{kind} {share:.0%}" for kind, share in list(verdict.time_shares.items())[:6])
        console.print(f"  where the time goes: {top}", highlight=False)
    for match in verdict.outputs:
        console.print(f"  bmodel vs ONNX Runtime '{match.name}': cosine {match.cosine:.7f}, max abs {match.max_abs:.3g}, "
                      f"rel L2 {match.rel_l2:.3g}", highlight=False)
    if verdict.reason:
        console.print(f"  note: {verdict.reason}", highlight=False)
    status = "[green]PASS[/]" if verdict.ok else "[red]FAIL[/]"
    if verdict.min_cosine is None and verdict.ok:
        console.print(f"  {status}: compiled (accuracy not checked)", highlight=False)
        return
    cosine = f"{verdict.min_cosine:.7f}" if verdict.min_cosine is not None else "n/a"
    console.print(f"  {status}: compiled, cosine {cosine} (threshold {verdict.cosine_threshold})", highlight=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.tpu_check", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="ONNX model with static shapes")
    parser.add_argument("--input", metavar="NPZ", help="inputs by name (e.g. the export's .ref.npz); default: random normal")
    parser.add_argument("--chip", default="bm1684x", choices=["bm1684x", "bm1688", "cv183x", "bm1684", "bm1690", "cv186x"])
    parser.add_argument("--quantize", default="F32", type=str.upper, choices=["F32", "BF16", "F16"])
    parser.add_argument("--no-layer-group", action="store_true", help="model_deploy --disable_layer_group")
    parser.add_argument("--workdir", help="where tpu-mlir writes (default out/tpu-check/<model>-<chip>-<quant>)")
    parser.add_argument("--json", metavar="PATH", help="write the verdict as JSON ('-' for stdout)")
    parser.add_argument("--min-cosine", type=float, help="accuracy threshold (default 0.9999 F32, 0.99 BF16/F16)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per tpu-mlir step (default 3600)")
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
    try:
        verdict, code = check(args, console)
    except UsageError as error:
        sys.stderr.write(f"error: {error}\n")
        return EXIT_USAGE
    except SetupFailed as error:
        sys.stderr.write(f"error: tpu-mlir could not be installed: {error}\n")
        return EXIT_SETUP
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    render(verdict, out)
    out.print(f"  total {time.perf_counter() - started:.1f} s · logs in {verdict.workdir}", highlight=False)
    if args.json:
        text = json.dumps(verdict.to_dict(), indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())

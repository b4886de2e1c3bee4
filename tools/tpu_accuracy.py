"""Held-out digits accuracy through the compiled bmodel: micro-digits on tpu-mlir's cmodel.

    python -m tools.tpu_accuracy [--quantize F32 BF16 INT8] [--count 500] [--batch 10]
        [--chip bm1684x] [--calibration-count 32] [--exporter torchscript|dynamo] [--workdir DIR] [--json PATH]

Exports micro-digits with a static batch (``--batch``; TorchScript, or the dynamo exporter's opset-18
graph with ``--exporter dynamo``), runs the ``tpu`` pipeline, compiles
it with tools.tpu_check for each ``--quantize`` (INT8: calibrated on digits *training*
images, the scan kept in BF16 by the auto quantization table), then runs each bmodel on the
cmodel simulator over the first ``--count`` held-out digits (the last batch padded with its
last image, the padding dropped) and compares with PyTorch on the same images.

Prints per mode: top-1, agreement of the predicted class with PyTorch, the lowest per-image
cosine of the logits to PyTorch's, the estimate, the compile and simulation times. The acceptance rule (exit 0, else 4): F32 and BF16 top-1 equal
PyTorch's, INT8 top-1 within 1 point of F32's (``--int8-max-drop``). Exit 3 when a mode does
not compile, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from passes.files import DestinationError, atomic_open, check_destination, write_text_atomic
from passes.interrupts import exit_code, sigterm_as_interrupt
from passes.one_line import OneLineArgumentParser, folder_path, number_text, one_line, positive_int, printable
from passes.relative_error import relative_l2
from tools import tpu_toolchain as tc
from tools.json_destination import json_destination_refused, workdir_refused

EXIT_OK, EXIT_USAGE, EXIT_NOT_COMPILED, EXIT_INACCURATE = 0, 2, 3, 4
MODES = ("F32", "BF16", "F16", "INT8")


@dataclass
class ModeAccuracy:
    quantize: str
    compiled: bool
    images: int = 0
    top1: Optional[float] = None  # % of images whose predicted class is the label
    agreement: Optional[float] = None  # % of images where the bmodel predicts PyTorch's class
    max_abs_logit: Optional[float] = None  # vs PyTorch
    min_cosine: Optional[float] = None  # the lowest per-image cosine of the logits to PyTorch's
    rel_l2: Optional[float] = None  # ||logits - PyTorch's|| / ||PyTorch's|| over all images
    estimated_ms: Optional[float] = None
    compile_seconds: Optional[float] = None  # transform + calibration + deploy
    simulate_seconds: Optional[float] = None
    reason: Optional[str] = None


def _run(command: list[str], log: Path, cwd: Path = tc.REPO_ROOT) -> subprocess.CompletedProcess:
    # an exclusive temporary renamed over the log: a link planted in the workdir is replaced, never followed
    with atomic_open(log, "w", "log") as sink:
        # Not subprocess.run: on Ctrl-C or SIGTERM it SIGKILLs the child, and tools.tpu_check could
        # not stop its model_deploy (a session of its own). Its own session too, so the terminal's
        # Ctrl-C reaches it once, as our SIGTERM; then 10 s to stop before SIGKILL.
        process = subprocess.Popen(command, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, text=True,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            process.wait()
        except BaseException:
            tc.stop_group(process)
            raise
        return subprocess.CompletedProcess(command, process.returncode)


def _files_written(workdir: Path, modes: list[str]) -> list[Path]:
    """What this tool writes in --workdir itself (the models, verdicts and logits are written by the
    tools it runs, each with its own checks)."""
    names = ["export.log", "apply.log", "held_out.npz"] + (["calibration.npz"] if "INT8" in modes else [])
    names += [f"{mode.lower()}.{kind}.log" for mode in modes for kind in ("check", "run")]
    return [workdir / name for name in names]


def batched(images: np.ndarray, batch: int) -> np.ndarray:
    """[n, ...] -> [ceil(n / batch), batch, ...], the last batch padded with the last image."""
    padding = (-len(images)) % batch
    if padding:
        images = np.concatenate([images, np.repeat(images[-1:], padding, axis=0)])
    return images.reshape(len(images) // batch, batch, *images.shape[1:])


def score(logits: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> tuple[float, float, float, float]:
    """(top-1 %, agreement with the reference's classes %, max abs logit difference, lowest
    per-image cosine of the logits to the reference's)."""
    predicted = logits.argmax(axis=1)
    top1 = 100.0 * float(np.mean(predicted == labels))
    agreement = 100.0 * float(np.mean(predicted == reference.argmax(axis=1)))
    a, b = logits.astype(np.float64), reference.astype(np.float64)
    cosines = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return top1, agreement, float(np.max(np.abs(logits - reference))), float(np.min(cosines))


def acceptance(results: list[ModeAccuracy], torch_top1: float, int8_max_drop: float) -> list[str]:
    """What breaks the rule: F32/BF16/F16 top-1 == PyTorch's, INT8 within int8_max_drop points of F32."""
    problems = []
    by_mode = {r.quantize: r for r in results}
    for result in results:
        if result.top1 is None:
            continue
        if result.quantize in ("F32", "BF16", "F16") and abs(result.top1 - torch_top1) > 1e-9:
            problems.append(f"{result.quantize} top-1 {result.top1:.2f}% != PyTorch {torch_top1:.2f}%")
        if result.quantize == "INT8":
            base = by_mode["F32"].top1 if "F32" in by_mode and by_mode["F32"].top1 is not None else torch_top1
            if base - result.top1 > int8_max_drop + 1e-9:
                problems.append(f"INT8 top-1 {result.top1:.2f}% is {base - result.top1:.2f} points below "
                                f"{'F32' if 'F32' in by_mode else 'PyTorch'} ({base:.2f}%)")
    return problems


def _points(text: str) -> float:
    """--int8-max-drop: percentage points from 0 to 100 in ASCII ('nan' made every INT8 result pass: no
    drop compares greater than NaN)."""
    return number_text(text, "a number of points from 0 to 100", low=0.0, high=100.0)


def main(argv: Optional[list[str]] = None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.tpu_accuracy", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quantize", nargs="+", type=str.upper, default=["F32", "BF16", "INT8"], choices=MODES)
    parser.add_argument("--count", type=positive_int, default=500, help="held-out images, the first N of 500 (default all)")
    parser.add_argument("--batch", type=positive_int, default=10, help="the bmodel's static batch (default 10)")
    parser.add_argument("--chip", default="bm1684x", choices=tc.CHIPS)
    parser.add_argument("--exporter", default="torchscript", choices=("torchscript", "dynamo"),
                        help="torch.onnx.export's exporter for micro-digits (default torchscript; dynamo writes opset 18)")
    parser.add_argument("--pipeline", default="tpu", help="the passes.apply pipeline (default tpu; tpu-bm1688, ...)")
    parser.add_argument("--calibration-count", type=positive_int, default=32,
                        help="INT8: calibration samples of --batch training images each (default 32)")
    parser.add_argument("--int8-max-drop", type=_points, default=1.0, help="INT8 top-1 may be this many points below F32")
    parser.add_argument("--workdir", type=folder_path, default="out/tpu-accuracy")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--venv", help="tpu-mlir venv (default .tpu-venv or $TPU_VENV)")
    args = parser.parse_args(argv)
    if args.count > 500:
        sys.stderr.write(f"error: --count must be between 1 and 500, got {args.count}\n")
        return EXIT_USAGE
    if "INT8" in args.quantize and args.calibration_count * args.batch > 1297:
        # only INT8 is calibrated: an F32/BF16 run at batch 50 must not trip on the INT8 default
        sys.stderr.write(f"error: --calibration-count x --batch must be at most 1297 training images "
                         f"(got {args.calibration_count} x {args.batch})\n")
        return EXIT_USAGE

    # adv22: an unknown pipeline was found by passes.apply after the export (exit 3, 'passes.apply ... failed'), and
    # its name printed raw ('x\x1b[2J' cleared the terminal); an unknown --chip by tools.tpu_check per mode, after the
    # export and the compile
    from pipelines import UnknownPipelineError, get_pipeline
    try:
        get_pipeline(args.pipeline)
    except UnknownPipelineError as error:
        sys.stderr.write(f"error: --pipeline: {one_line(error)}\n")
        return EXIT_USAGE
    if json_destination_refused(args.json) or workdir_refused(args.workdir):
        return EXIT_USAGE
    workdir = Path(args.workdir).resolve()
    try:
        with sigterm_as_interrupt():   # SIGTERM ends the run like Ctrl-C: the tool it runs is stopped
            if workdir.is_dir():   # before the work: a file of an earlier run is replaced, a folder or a device refused
                for path in _files_written(workdir, args.quantize):
                    check_destination(path, "--workdir file")
            return _measure(args, workdir)
    except DestinationError as error:   # refused then, or planted during the work
        sys.stderr.write(f"error: {one_line(error)}\n")
        return EXIT_USAGE
    except KeyboardInterrupt as interrupt:
        sys.stderr.write("error: interrupted\n")
        return exit_code(interrupt)


def _measure(args: argparse.Namespace, workdir: Path) -> int:
    """Export, compile, run every mode and report (the arguments checked)."""
    from tools.eval_digits import torch_predict
    from tools.tpu_calibration import digits_set
    from vmamba_ref.digits import load_digits_split

    workdir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    naive, tpu = workdir / "naive.onnx", workdir / "tpu.onnx"
    started = time.perf_counter()
    print(f"micro-digits, batch {args.batch}, {args.exporter} exporter: export and {printable(args.pipeline)} pipeline -> "
          f"{printable(tpu)}",
          flush=True)
    for command, log in (([python, "-m", "vmamba_ref.export", "--model", "micro-digits", "--batch", str(args.batch),
                           "--exporter", args.exporter, "-o", str(naive)], workdir / "export.log"),
                         ([python, "-m", "passes.apply", str(naive), "--pipeline", args.pipeline, "-o", str(tpu)],
                          workdir / "apply.log")):
        if _run(command, log).returncode != 0:
            sys.stderr.write(f"error: {' '.join(command[2:4])} failed (log: {printable(log)})\n")
            return EXIT_NOT_COMPILED

    split = load_digits_split()
    images, labels = split.x_test[: args.count], split.y_test[: args.count]
    reference = torch_predict(images)
    torch_top1 = 100.0 * float(np.mean(reference.argmax(axis=1) == labels))
    held_out = workdir / "held_out.npz"
    tc.save_npz(held_out, {"input": batched(images, args.batch)})
    calibration = workdir / "calibration.npz"
    if "INT8" in args.quantize:
        tc.save_npz(calibration, digits_set(args.calibration_count, args.batch))

    venv = tc.venv_dir(args.venv)
    results = []
    for quantize in args.quantize:
        mode_dir = workdir / quantize.lower()
        verdict_path = workdir / f"{quantize.lower()}.verdict.json"
        # --estimate-only: the held-out images below are the accuracy check (the cmodel is slow)
        check = [python, "-m", "tools.tpu_check", str(tpu), "--input", str(naive.with_suffix(".ref.npz")),
                 "--quantize", quantize, "--chip", args.chip, "--workdir", str(mode_dir), "--skip-simulation-check",
                 "--estimate-only", "--json", str(verdict_path)]
        if args.venv:
            check += ["--venv", args.venv]
        if quantize == "INT8":
            check += ["--calibration", str(calibration)]
        print(f"{quantize}: compiling (tools.tpu_check) ...", flush=True)
        checked = _run(check, workdir / f"{quantize.lower()}.check.log")
        verdict = json.loads(verdict_path.read_text()) if verdict_path.is_file() else {}
        result = ModeAccuracy(quantize, bool(verdict.get("compiled")), estimated_ms=verdict.get("estimated_ms"))
        result.compile_seconds = round(sum(verdict.get(k) or 0 for k in
                                           ("transform_seconds", "calibration_seconds", "deploy_seconds")), 1)
        if not result.compiled or checked.returncode != 0:
            result.compiled = False
            result.reason = verdict.get("reason") or f"tools.tpu_check exit {checked.returncode}"
            results.append(result)
            continue
        outputs = workdir / f"{quantize.lower()}.logits.npz"
        print(f"{quantize}: {args.count} held-out images on the cmodel ...", flush=True)
        simulate_started = time.perf_counter()
        ran = _run(tc.bmodel_run_command(venv, Path(verdict["bmodel"]), held_out, outputs),
                   workdir / f"{quantize.lower()}.run.log", cwd=mode_dir)
        result.simulate_seconds = round(time.perf_counter() - simulate_started, 1)
        if ran.returncode != 0 or not outputs.is_file():
            result.reason = f"bmodel run failed (log: {printable(workdir / f'{quantize.lower()}.run.log')})"
            results.append(result)
            continue
        logits = next(iter(np.load(outputs).values())).reshape(-1, reference.shape[1])[: args.count]
        result.images = len(logits)
        result.top1, result.agreement, result.max_abs_logit, result.min_cosine = score(logits, labels, reference)
        result.rel_l2 = relative_l2(logits, reference)
        results.append(result)

    print(f"\nmicro-digits held-out accuracy through the bmodel: {args.chip}, tpu-mlir cmodel, "
          f"first {args.count} of 500 images, batch {args.batch}, {args.exporter} exporter")
    print(f"  PyTorch (float32): top-1 {torch_top1:.2f}%")
    for r in results:
        if r.top1 is None:
            print(f"  {r.quantize:5s} not measured: {r.reason}")
            continue
        print(f"  {r.quantize:5s} top-1 {r.top1:.2f}%, agreement with PyTorch {r.agreement:.2f}%, "
              f"logits: min cosine {r.min_cosine:.5f}, rel L2 {r.rel_l2:.3g}, max abs diff {r.max_abs_logit:.3g}; est. {r.estimated_ms:.3f} ms/batch, "
              f"compile {r.compile_seconds:.0f} s, cmodel {r.simulate_seconds:.0f} s")
    problems = acceptance(results, torch_top1, args.int8_max_drop)
    not_compiled = [r for r in results if not r.compiled]
    verdict = "PASS" if not problems and all(r.top1 is not None for r in results) else "FAIL"
    print(f"  {verdict}" + (f": {'; '.join(problems)}" if problems else "") + f" · total {time.perf_counter() - started:.0f} s")
    if args.json:
        write_text_atomic(args.json, json.dumps({"chip": args.chip, "count": args.count, "batch": args.batch,
                                                 "exporter": args.exporter,
                                                 "torch_top1": torch_top1, "problems": problems,
                                                 "modes": [asdict(r) for r in results]}, indent=2) + "\n", "--json")
    if not_compiled:
        return EXIT_NOT_COMPILED
    return EXIT_OK if verdict == "PASS" else EXIT_INACCURATE


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

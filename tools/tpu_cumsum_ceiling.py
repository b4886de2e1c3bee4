"""Measure a chip's CumSum size ceiling with the real compiler (the figures behind split-cumsum's table).

    python -m tools.tpu_cumsum_ceiling --chip bm1688 [--quantize F16] [--workdir DIR] [--json PATH]

Single-CumSum models (``CumSum`` then ``Mul``, as in docs/TPU.md) compiled by tools.tpu_check
(transform + deploy, ``--estimate-only``):

1. one channel, the sum along the last axis, [1, 1, L]: the largest L that compiles, by
   doubling then bisection = the elements one NPU lane may hold (``budget``);
2. the lane count: [1, C, budget] compiles for C = lanes and fails for C = lanes + 1 when the
   chip spreads C over ``lanes`` NPU lanes (tried for 16, 32 and 64);
3. a check of the model on a 2-D case: [1, 2 * lanes, budget / 2] compiles and
   [1, 2 * lanes, budget / 2 + 1] does not.

A failure that is not the kernel's "too large" assert stops the measurement (it would say
nothing about the size). Prints each compile and the result; ``--json`` writes them.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from onnx import TensorProto, helper, save

from passes.files import write_text_atomic
from passes.one_line import OneLineArgumentParser
from tools import tpu_toolchain as tc
from tools.json_destination import json_destination_refused, workdir_refused

TOO_LARGE = "too large"


def cumsum_model(shape: list[int], axis: int, path: Path) -> None:
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    graph = helper.make_graph(nodes, "cumsum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              [helper.make_tensor("axis", TensorProto.INT64, [], [axis])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))


class Prober:
    def __init__(self, chip: str, quantize: str, workdir: Path, venv: Optional[str]) -> None:
        self.chip, self.quantize, self.workdir, self.venv = chip, quantize, workdir, venv
        self.trials: list[dict] = []

    def compiles(self, shape: list[int], axis: int = -1) -> bool:
        axis = axis % len(shape)
        name = "x".join(map(str, shape)) + f"_a{axis}"
        model = self.workdir / f"{name}.onnx"
        cumsum_model(shape, axis, model)
        command = [sys.executable, "-m", "tools.tpu_check", str(model), "--chip", self.chip, "--quantize", self.quantize,
                   "--workdir", str(self.workdir / name), "--estimate-only", "--skip-simulation-check", "--json", "-"]
        if self.venv:
            command += ["--venv", self.venv]
        done = subprocess.run(command, cwd=tc.REPO_ROOT, capture_output=True, text=True)
        verdict = json.loads(done.stdout[done.stdout.index("{"):]) if "{" in done.stdout else {}
        compiled = bool(verdict.get("compiled"))
        reason = verdict.get("reason") or done.stderr.strip()[-300:]
        self.trials.append({"shape": shape, "axis": axis, "compiled": compiled,
                            "reason": None if compiled else reason})
        print(f"  {shape} axis {axis}: {'compiles' if compiled else 'no: ' + str(reason)[:100]}", flush=True)
        if not compiled and TOO_LARGE not in str(reason):
            raise RuntimeError(f"{shape} axis {axis} failed for another reason: {reason}")
        return compiled


def largest_compiling(prober: Prober, shape_of, low: int, high_limit: int) -> int:
    """The largest n with shape_of(n) compiling, given shape_of(low) compiles: doubling, then bisection."""
    high = low * 2
    while high <= high_limit and prober.compiles(shape_of(high)):
        low, high = high, high * 2
    if high > high_limit:
        raise RuntimeError(f"still compiles at {low}: no ceiling up to {high_limit}")
    if not prober.compiles(shape_of(low + 1)):  # the usual case: a power of two, two compiles
        return low
    low += 1
    while high - low > 1:
        middle = (low + high) // 2
        if prober.compiles(shape_of(middle)):
            low = middle
        else:
            high = middle
    return low


def measure(prober: Prober) -> dict:
    if not prober.compiles([1, 1, 1024]):
        raise RuntimeError("[1, 1, 1024] does not compile")
    budget = largest_compiling(prober, lambda n: [1, 1, n], 1024, 1 << 20)
    lanes = None
    for candidate in (16, 32, 64):
        if prober.compiles([1, candidate, budget]) and not prober.compiles([1, candidate + 1, budget]):
            lanes = candidate
            break
    checked = None
    if lanes is not None and budget % 2 == 0:
        checked = prober.compiles([1, 2 * lanes, budget // 2]) and not prober.compiles([1, 2 * lanes, budget // 2 + 1])
    return {"chip": prober.chip, "quantize": prober.quantize, "budget": budget, "lanes": lanes,
            "two_dimensional_check": checked, "trials": prober.trials}


def main(argv: Optional[list[str]] = None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.tpu_cumsum_ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chip", required=True, choices=["bm1684x", "bm1688", "cv186x"])
    parser.add_argument("--quantize", default="F32", type=str.upper, choices=["F32", "BF16", "F16"])
    parser.add_argument("--workdir", help="where the probe models compile (default: a temporary folder)")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--venv")
    args = parser.parse_args(argv)
    if json_destination_refused(args.json) or workdir_refused(args.workdir):
        return 2
    with tempfile.TemporaryDirectory(prefix="cumsum-ceiling-") as scratch:
        workdir = Path(args.workdir or scratch).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        prober = Prober(args.chip, args.quantize, workdir, args.venv)
        print(f"CumSum ceiling on {args.chip} {args.quantize} (tpu-mlir, transform + deploy):", flush=True)
        try:
            result = measure(prober)
        except RuntimeError as error:
            sys.stderr.write(f"error: {error}\n")
            return 3
    print(f"{args.chip} {args.quantize}: one lane holds at most {result['budget']} elements; "
          f"lanes {result['lanes']}; 2-D check {result['two_dimensional_check']} ({len(result['trials'])} compiles)")
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n", "--json")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

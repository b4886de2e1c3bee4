"""Where ONNX Runtime's CPU time goes in a model, by op type, at one or more thread counts.

    python -m tools.ort_profile model.onnx [--threads 1,2,16] [--batch 1] [--runs 5] [--json out.json]

Runs the model with ORT's profiler on (random normal inputs, a symbolic batch set by --batch),
sums the kernel times of the timed runs per op type and prints a table: milliseconds per run
for each thread count, and how much each op type speeds up from the first thread count to the
last. Ops that do not speed up with threads are the ones that keep a graph from scaling.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from passes.files import input_file_problem, write_text_atomic
from passes.one_line import MAX_THREADS, OneLineArgumentParser, one_line, positive_int, printable, thread_count
from passes.graph_io import InputError, model_and_data_files
from passes.model_check import model_for_runtime
from tools.json_destination import json_destination_refused

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def _inputs(session, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    from passes.verify import MAX_RANDOM_FEED_ELEMENTS, MAX_RANDOM_FEED_RANK

    feeds, elements = {}, 0
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in spec.shape]
        dtype = _DTYPES.get(spec.type)
        if dtype is None:
            raise SystemExit(f"error: input '{printable(spec.name)}' has type {spec.type}, which this tool cannot fill")
        if len(shape) > MAX_RANDOM_FEED_RANK:   # numpy's limit (passes.verify)
            raise SystemExit(f"error: input '{printable(spec.name)}' has {len(shape):,} axes, more than the "
                             f"{MAX_RANDOM_FEED_RANK} an array can have")
        elements += math.prod(shape)
        if elements > MAX_RANDOM_FEED_ELEMENTS:   # the compiler's cap on random inputs (passes.verify)
            raise SystemExit(f"error: the model's inputs up to '{printable(spec.name)}' (shape {shape}) hold {elements:,} "
                             f"elements, too many to make random data for (> {MAX_RANDOM_FEED_ELEMENTS:,})")
        feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def profile(model: Path, threads: int, batch: int, runs: int, seed: int = 0, data: bytes | None = None) -> dict:
    """Per-op-type kernel milliseconds per run and the median wall time of a run, measured in a child
    process under verification's memory cap (passes.ort_worker.memory_limit): the model's sizes can come
    from its input values, past any static check, and ONNX Runtime's native work would hold off Ctrl-C
    and SIGTERM (a Loop whose trip count is computed from the input ran for hours past SIGTERM). The
    parent waits on the child, kills it on an interrupt and removes the profile folder itself.
    SystemExit (one line) for a model ONNX Runtime cannot load, fill or run. ``data``: the model as
    passes.model_check.model_for_runtime read it (main's), which ONNX Runtime is given instead of the path."""
    from passes.ort_worker import ChildFailed, call_capped

    with tempfile.TemporaryDirectory(prefix="ort-profile-") as folder:
        try:
            return call_capped(_profile_child, model, threads, batch, runs, seed, folder, data)
        except ChildFailed as failure:
            if failure.exit_code is not None:
                raise SystemExit(f"error: ONNX Runtime's process ended (exit {failure.exit_code}) profiling "
                                 f"{printable(model)}: a native abort, or the memory it asked for") from None
            raise SystemExit(str(failure)) from None


def _profile_child(model: Path, threads: int, batch: int, runs: int, seed: int, folder: str,
                   data: bytes | None = None) -> dict:
    """_profile_here in call_capped's child: its refusals (SystemExit, one line) as they are, any other
    failure (a MemoryError, a failure in a timed run) as one line naming the model."""
    try:
        return _profile_here(model, threads, batch, runs, seed, folder, data)
    except SystemExit:
        raise
    except BaseException as error:
        raise SystemExit(f"error: ONNX Runtime failed profiling {printable(model)}: {one_line(error, limit=300)}") from None


def _profile_here(model: Path, threads: int, batch: int, runs: int, seed: int, folder: str,
                  data: bytes | None = None) -> dict:
    import onnxruntime as ort

    # the profile files go to the parent's folder, which it removes whatever happens here
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4   # ORT's own error log holds node names raw (a newline, an ESC)
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(folder) / "profile")
    try:
        session = ort.InferenceSession(str(model) if data is None else data, options, providers=["CPUExecutionProvider"])
    except Exception as error:   # not ONNX, an op ORT lacks, ...: the user's file, not a bug here
        raise SystemExit(f"error: ONNX Runtime cannot load {printable(model)}: {one_line(error, limit=300)}") from None
    feeds = _inputs(session, batch, np.random.default_rng(seed))
    try:
        session.run(None, feeds)  # warm-up: not counted (its events come before the first timed run)
    except Exception as error:   # a kernel that fails on the model's own data (a Reshape to a wrong size)
        raise SystemExit(f"error: ONNX Runtime cannot run {printable(model)}: {one_line(error, limit=300)}") from None
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feeds)
        walls.append(time.perf_counter() - t0)
    events = json.loads(Path(session.end_profiling()).read_text())
    # Each session.run is one "model_run" event; kernels before the second one belong to the warm-up.
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    timed_from = run_starts[1] if len(run_starts) > 1 else 0
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if event["ts"] >= timed_from:
            per_op[event.get("args", {}).get("op_name", "?")] += event["dur"] / 1000.0
    return {"threads": threads, "batch": batch, "runs": runs, "wall_ms": float(np.median(walls)) * 1000,
            "op_ms": {op: ms / runs for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])}}


def _thread_counts(text: str) -> list[int] | None:
    """'1,2,16' -> [1, 2, 16]; None unless every entry is a positive integer and there is one."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        counts = [thread_count(part) for part in parts]
    except argparse.ArgumentTypeError:
        return None
    return counts or None


def main(argv: Optional[list[str]] = None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.ort_profile", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", default=str(os.cpu_count() or 1), help="comma-separated thread counts")
    parser.add_argument("--batch", type=positive_int, default=1, help="value for symbolic (batch) dimensions")
    parser.add_argument("--runs", type=positive_int, default=5, help="timed runs after one warm-up")
    parser.add_argument("--top", type=positive_int, default=15, help="op types to show")
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    problem = input_file_problem(args.model, "model")
    if problem:
        sys.stderr.write(f"error: {problem}\n")
        return 2
    if json_destination_refused(args.json, reads=model_and_data_files(args.model)):
        return 2
    # read once, its external data from its folder only, and handed to ONNX Runtime as bytes (adv23: the path, opened
    # again by ONNX Runtime, could be a named pipe by then); a file that is no model, or has local functions ONNX
    # Runtime would hang in, is one line before any 'profiling ...' (adv22: two lines, the progress first)
    try:
        data = model_for_runtime(args.model)
    except InputError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    counts = _thread_counts(args.threads)
    if counts is None:
        sys.stderr.write(f"error: --threads must be comma-separated integers from 1 to {MAX_THREADS}, got '{printable(args.threads)}'\n")
        return 2
    results = []
    for threads in counts:
        sys.stderr.write(f"profiling {printable(args.model.name)} at {threads} thread(s), batch {args.batch}...\n")
        try:
            results.append(profile(args.model, threads, args.batch, args.runs, data=data))
        except SystemExit as refused:   # a model ONNX Runtime cannot load or fill: one line, exit 2
            sys.stderr.write(f"{refused.code}\n")
            return 2
    first, last = results[0], results[-1]
    ops = list(last["op_ms"])[: args.top]
    header = "op type".ljust(22) + "".join(f"{r['threads']:>3} thr ms".rjust(12) for r in results)
    header += "  speed-up" if len(results) > 1 else ""
    print(f"{printable(args.model)} · batch {args.batch} · kernel ms per run (ORT profiler), wall ms median")
    print(header)
    for op in ops:
        row = op.ljust(22) + "".join(f"{r['op_ms'].get(op, 0.0):12.2f}" for r in results)
        if len(results) > 1 and last["op_ms"].get(op):
            row += f"  {first['op_ms'].get(op, 0.0) / last['op_ms'][op]:7.2f}x"
        print(row)
    print("all kernels".ljust(22) + "".join(f"{sum(r['op_ms'].values()):12.2f}" for r in results))
    print("wall".ljust(22) + "".join(f"{r['wall_ms']:12.2f}" for r in results))
    if args.json:
        write_text_atomic(args.json, json.dumps({"model": str(args.model), "results": results}, indent=2) + "\n", "--json")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

"""Benchmark the naive export, every pipeline and PyTorch eager side by side, on this machine.

    python -m tools.bench --model micro-digits --threads 2
    python -m tools.bench --model vmamba-t --threads 2 --naive /tmp/vt16/naive.onnx \\
        --naive-static /tmp/vt/naive.onnx --skip-slow-naive

Rows: the naive ONNX export (scan unrolled), the seed, tpu and cpu pipelines applied to it,
PyTorch eager with the sequential scan and with the chunked scan. Columns: node count, ONNX
Runtime session-creation time, img/s and s/img at each batch with ratios to naive and to
seed, max abs logit error and relative L2 against PyTorch with the float64 scan, and held-out
digits top-1 (digits models) or top-1 agreement with PyTorch float32 sequential.

Method: the naive graph is exported once with a symbolic batch (reused from --workdir or
--naive), so one graph serves every batch; the tpu pipeline needs static shapes, so where it
fails on that graph it runs on a static batch-1 export (--naive-static). Each batch: one
warm-up run per row, then --repeats rounds in which every row runs once, in rotated order;
medians. Writes a section of docs/BENCHMARKS.md (between ``<!-- bench:MODEL:N-core -->``
markers; the rest of the file is kept), the raw timings as JSON, and a bar chart.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from passes.files import (DestinationError, check_destination, check_folder_destination, check_not_read,
                          input_file_problem, is_same_file, read_text_file, write_text_atomic)
from passes.model_check import local_functions_refused
from passes.one_line import OneLineArgumentParser, ascii_float, ascii_int, check_number, folder_path, one_line, positive_int, printable, rich_text, seed_int, thread_count
from tools import bench_report as report
from tools.bench_rows import (DEFAULT_ROWS, GRAPH_OF, PIPELINE_ROWS, ROW_LABELS, TWO_THREAD_ROWS, BenchError, OnnxRunner, OpenVinoRunner,
                              TorchRunner, build_bench_model,
                              compile_pipeline, cpu_ablation_variants, ensure_naive, error_metrics, graph_signature, node_count,
                              onnx_batch_dim, predict_in_batches, random_batch, run_timed, torch_logits)
from tools.bench_workers import SETTLE_SECONDS, OnnxWorker

FLOAT64_KEY = "logits@float64"
CONFIG_FIELDS = ("dims", "depths", "d_state", "ssm_ratio", "dt_rank", "mlp_ratio", "img_size", "num_classes", "in_chans")


def build_parser() -> argparse.ArgumentParser:
    from vmamba_ref.config import add_config_args

    parser = OneLineArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, default_model="micro-digits")
    parser.add_argument("--seed", type=seed_int, default=0, help="init seed (models without weights) and input seed")
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes (default 1,16)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed rounds after the warm-up (default 5)")
    parser.add_argument("--threads", type=thread_count, default=os.cpu_count() or 1,
                        help="ONNX Runtime intra-op threads and torch threads (default: all cores)")
    parser.add_argument("--ort-spinning", action="store_true",
                        help="let ONNX Runtime's intra-op threads spin (its own default; here off unless given: "
                             "session.intra_op.allow_spinning=0); each ONNX Runtime row then runs in a worker process "
                             f"of its own, with a {SETTLE_SECONDS} s pause before each run")
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                        help=f"comma-separated subset of: {', '.join(ROW_LABELS)} (default: {','.join(DEFAULT_ROWS)})")
    parser.add_argument("--workdir", type=folder_path, help="folder for exports and compiled graphs (default out/bench/MODEL)")
    parser.add_argument("--naive", type=Path, help="existing naive export to use (its .ref.npz beside it)")
    parser.add_argument("--fork", type=Path,
                        help="existing export with --scan chunk24 (the fork's method) for the fork rows, its .ref.npz "
                             "beside it (default: exported into workdir)")
    parser.add_argument("--naive-static", type=Path,
                        help="existing static batch-1 naive export for the tpu row, its .ref.npz beside it "
                             "(default: exported into workdir if needed)")
    parser.add_argument("--reuse-compiled", action="store_true",
                        help="reuse compiled graphs in workdir made by the same pipeline text, compiler sources and naive export")
    parser.add_argument("--allow-stale", action="store_true",
                        help="with --reuse-compiled, reuse graphs even if the compiler sources changed since (the rows say so)")
    parser.add_argument("--compile-only", action="store_true",
                        help="export and compile into workdir, then stop (time later with --reuse-compiled when the machine is quiet)")
    parser.add_argument("--skip-slow-naive", action="store_true",
                        help="skip the naive row at a batch > 1 when its batch-1 time x batch exceeds --slow-seconds")
    parser.add_argument("--slow-seconds", type=ascii_float, default=30.0, help="threshold for --skip-slow-naive (default 30)")
    parser.add_argument("--digits-images", type=ascii_int, default=500,
                        help="held-out digits images for the top-1 column (digits-shaped models; 0 = skip)")
    parser.add_argument("--ablation", action="store_true", help="also time cpu pipeline variants with one rewrite removed")
    parser.add_argument("--ablation-variants",
                        help="comma-separated variant keys to time with --ablation (default: all), e.g. "
                             "cpu-no-pointwise-conv-to-matmul,cpu-form-chunk24")
    parser.add_argument("--ablation-batches", help="batch sizes at which to time the ablation variants (default: all)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count and GEMM rate")
    parser.add_argument("--gemm-size", type=ascii_int, default=2048, help="n of the n x n matmul timed for the GEMM rate (default 2048, at most 16384)")
    parser.add_argument("--from-json", type=Path, metavar="JSON",
                        help="measure nothing: rewrite the markdown section and chart from an earlier run's JSON")
    parser.add_argument("--out-md", default="docs/BENCHMARKS.md", help="markdown file to write the section into ('none': skip)")
    parser.add_argument("--json", dest="json_path", help="raw results JSON (default docs/bench/MODEL-Ncore.json; with --from-json: not written unless named; 'none': skip)")
    parser.add_argument("--png", dest="png_path", help="bar chart (default docs/bench/MODEL-Ncore.png; 'none': skip)")
    return parser


# The largest n of the GEMM rate's n x n matmul: 1 GiB a matrix, 8.8e12 FLOP (seconds on a laptop's cores).
MAX_GEMM_SIZE = 16384


def _parse_args(argv):
    from vmamba_ref.config import config_from_args

    args = build_parser().parse_args(argv)
    try:   # ASCII digits (int() took '١' and '1_0')
        args.batches = sorted({positive_int(b.strip()) for b in args.batches.split(",") if b.strip()})
    except argparse.ArgumentTypeError:
        raise BenchError(f"--batches needs comma-separated integers >= 1, got '{printable(args.batches)}'") from None
    if not args.batches or min(args.batches) < 1:
        raise BenchError("--batches needs at least one batch size >= 1")
    try:
        args.ablation_batches = ({positive_int(b.strip()) for b in args.ablation_batches.split(",")}
                                 if args.ablation_batches else None)
    except argparse.ArgumentTypeError:
        raise BenchError(f"--ablation-batches must be comma-separated integers >= 1, "
                         f"got '{printable(args.ablation_batches)}'") from None
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.rows if r not in ROW_LABELS]
    if unknown or not args.rows:
        raise BenchError(f"unknown row(s) {', '.join(unknown) or '(none)'}; valid rows: {', '.join(ROW_LABELS)}")
    args.rows = [r for r in ROW_LABELS if r in args.rows]     # table order
    if args.repeats < 1 or args.threads < 1:
        raise BenchError("--repeats and --threads must be >= 1")
    # Used after the minutes of measuring (the GEMM rate, the naive row's cut-off): checked now.
    if not 1 <= args.gemm_size <= MAX_GEMM_SIZE:   # two n x n float32 matrices: 1 GiB each at the cap
        raise BenchError(f"--gemm-size must be from 1 to {MAX_GEMM_SIZE}, got {args.gemm_size}")
    check_number("--slow-seconds", args.slow_seconds, "a finite number >= 0", low=0.0, error=BenchError)
    if args.ablation and "cpu" not in args.rows:
        raise BenchError("--ablation compares against the cpu row; include it in --rows")
    if args.ablation_variants:
        args.ablation_variants = set(args.ablation_variants.split(","))
        valid = [key for key, _, _ in cpu_ablation_variants()]
        unknown = args.ablation_variants - set(valid)
        if unknown:
            raise BenchError(f"unknown ablation variant(s) {', '.join(sorted(unknown))}; valid: {', '.join(valid)}")
    args.config = config_from_args(args)
    # The inputs of the largest batch, made before its rows run: '--batches 99999999999' was torch's
    # allocation traceback after the export and every compile (the compiler's cap on random inputs).
    from passes.verify import MAX_RANDOM_FEED_ELEMENTS
    elements = max(args.batches) * args.config.in_chans * args.config.img_size ** 2
    if elements > MAX_RANDOM_FEED_ELEMENTS:
        raise BenchError(f"--batches {max(args.batches)}: its inputs would hold {elements:,} elements, more than "
                         f"the {MAX_RANDOM_FEED_ELEMENTS:,} the tools make random data for")
    _default_output_paths(args, args.model, args.threads)
    _check_outputs(args)
    for option, path in (("--naive", args.naive), ("--naive-static", args.naive_static), ("--fork", args.fork)):
        if path is None:
            continue
        # a missing file, a named pipe (its open waits for ever), local functions ONNX Runtime would hang in
        refused = input_file_problem(path, f"{option} model") or local_functions_refused(path)
        if refused:
            raise BenchError(refused)
        reference = path.with_name(path.stem + ".ref.npz")   # vmamba_ref.export's name
        if not reference.is_file():   # without it, ensure_naive exported over the model given
            raise BenchError(f"{option} {printable(path)}: its reference {printable(reference.name)} is not beside it; "
                             f"tools.bench never exports over a model it is given (leave {option} out to export "
                             "into --workdir)")
        if option == "--naive":   # read after the model is built: checked now, before that work
            read_reference(reference, args.config)
        for written, what in _workdir_writes(args):
            if is_same_file(path, written):
                raise BenchError(f"{option} model {printable(path)} is also where this run writes its {what}; give "
                                 "another --workdir or move the model")
    return args


def _workdir_writes(args) -> list[tuple[Path, str]]:
    """What compile_rows writes into --workdir for the rows asked: '--fork WORK/cpu.onnx' was replaced by the cpu
    row's graph, which the fork row then timed as the fork's method (adv20)."""
    wanted = set(args.rows) | {GRAPH_OF[key] for key in args.rows if key in GRAPH_OF}
    keys = [key for key in PIPELINE_ROWS if key in wanted]
    if args.ablation:
        keys += [key for key, _, _ in cpu_ablation_variants()
                 if not args.ablation_variants or key in args.ablation_variants]
    writes = [(args.workdir / f"{key}{suffix}", f"{key} row's {what}") for key in keys
              for suffix, what in ((".onnx", "compiled graph"), (".log", "log"), (".json", "record"))]
    # exported there where not given (or reused if there: '--fork WORK/naive.onnx' was timed as the naive export)
    if args.naive is None:
        writes.append((args.workdir / "naive.onnx", "naive export"))
    if args.fork is None and ("fork" in args.rows or "ov-fork" in args.rows):
        writes.append((args.workdir / "fork.onnx", "fork's-method export"))
    if args.naive_static is None and "tpu" in keys:
        writes.append((args.workdir / "naive-b1.onnx", "static batch-1 export"))
    return writes


def _check_outputs(args) -> None:
    """Before the minutes of measuring: --workdir is a folder (or can be made) and each of --out-md,
    --json and --png is absent or a regular file in a folder that exists or can be made (a folder,
    a device or a file in the way was found out after the run, as a traceback)."""
    naive = getattr(args, "naive", None)
    reads = [("--from-json file", getattr(args, "from_json", None)), ("--naive model", naive),
             ("--naive reference", naive and naive.with_name(naive.stem + ".ref.npz")),   # vmamba_ref.export's name
             ("--naive-static model", getattr(args, "naive_static", None)), ("--fork model", getattr(args, "fork", None))]
    reads = [(role, path) for role, path in reads if path is not None]
    try:
        if getattr(args, "workdir", None) is not None and not getattr(args, "from_json", None):
            check_folder_destination(args.workdir, "--workdir")
        written: dict[str, str] = {}   # one spelling per place ('./x', a linked folder): the flag that writes it
        for path, what in ((args.out_md, "--out-md"), (args.json_path, "--json"), (args.png_path, "--png")):
            if path is None:
                continue
            place = os.path.realpath(path)
            if place in written:   # the later write would replace the earlier ('--out-md README.md --png README.md')
                raise DestinationError(f"{what} {printable(path)} is also the {written[place]} file; give them "
                                       "different paths")
            written[place] = what
            if os.path.lexists(path) or path.parent.is_dir():
                check_destination(path, what)
                check_not_read(path, reads, what)   # '--png run.json' replaced the figures it was drawing
            else:
                check_folder_destination(path.parent, f"{what} folder")
    except DestinationError as error:
        raise BenchError(one_line(error)) from None


def _default_output_paths(args, model: str, threads: int) -> None:
    tag = f"{model}-{threads}core"
    args.workdir = args.workdir or Path("out/bench") / args.model
    args.out_md = None if args.out_md in (None, "none", "") else Path(args.out_md)   # None: worked out before
    args.given_paths = getattr(args, "given_paths", None) or (args.json_path, args.png_path)
    args.json_path, args.png_path = args.given_paths
    args.json_path = None if args.json_path in ("none", "") else Path(args.json_path or f"docs/bench/{tag}.json")
    args.png_path = None if args.png_path in ("none", "") else Path(args.png_path or f"docs/bench/{tag}.png")


def _check_read_result(result) -> None:
    """A --from-json file may come from another machine (or anyone): its model and thread count name
    the default chart (docs/bench/MODEL-Ncore.png) and the markdown section's markers, and its strings
    go into the markdown between HTML comment markers (the rule of tools.bench_mamba's load_result)."""
    model, threads = result["model"], result["threads"]
    if not (isinstance(model, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model)):
        raise BenchError(f"model '{printable(model)}' is not a plain name (letters, digits, '.', '_', '-')")
    if type(threads) is not int or threads < 1:
        raise BenchError(f"threads must be a positive integer, got '{printable(threads)}'")
    unsafe = report.unsafe_string_in(result)
    if unsafe is not None:
        raise BenchError(f"a string holds a control character or an HTML comment marker: '{printable(unsafe)}'")


# ---------------------------------------------------------------------------------- display
class Display:
    """Rich progress on stderr: one line per stage with elapsed time, a bar for the timing rounds."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        # Bound to the real stderr now: the pipelines run with stdout/stderr redirected to a log.
        self.console = Console(file=sys.stderr)
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                                 redirect_stdout=False, redirect_stderr=False, transient=True)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def log(self, message: str) -> None:
        self.progress.console.print(message, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def stage(self, text: str, total: int | None = None):
        task = self.progress.add_task(text, total=total)
        t0 = time.perf_counter()

        def update(detail: str | None = None, advance: int = 0):
            description = text if detail is None else f"{text}: {detail}"
            self.progress.update(task, description=description, advance=advance)

        ok = False
        try:
            yield update
            ok = True
        finally:
            self.progress.remove_task(task)
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self.log(f"{mark} {text} [dim]({time.perf_counter() - t0:.1f} s)[/]")


# ---------------------------------------------------------------------------------- stages
def _prepare_naive(args, model, sample, display) -> tuple[Path, int | str | None]:
    naive = args.naive or args.workdir / "naive.onnx"
    with display.stage(f"naive export {rich_text(naive)}") as update:
        exported = ensure_naive(model, sample, naive, dynamic_batch=True, status=lambda m: update(m))
    if not exported:
        display.log(f"  reusing {rich_text(naive)}")
    from vmamba_ref.export import ref_path_for

    if not ref_path_for(naive).exists():
        raise BenchError(f"{ref_path_for(naive)} is missing (the naive export's reference npz)")
    return naive, onnx_batch_dim(naive)


def _prepare_fork(args, model, sample, display) -> Path:
    """The fork's method: the model exported with the hand-written chunk24 scan (--scan chunk24), dynamic batch."""
    fork = args.fork or args.workdir / "fork.onnx"
    with display.stage(f"fork's-method export {rich_text(fork)}") as update:
        exported = ensure_naive(model, sample, fork, dynamic_batch=True, status=lambda m: update(m), scan="chunk24")
    if not exported:
        display.log(f"  reusing {rich_text(fork)}")
    return fork


def read_reference(path: Path, config) -> dict[str, np.ndarray]:
    """The naive export's reference npz (vmamba_ref.export's input, logits and logits@float64),
    read as the compiler reads its own (passes.npz_arrays.read_npz) before anything uses it:
    BenchError, one line, for what read_npz refuses (not an npz, deflated zeros, an object array),
    a file that lacks its input or logits, or whose input is not a float32 batch of this model's
    images (PyTorch would fail on it)."""
    from passes.npz_arrays import NpzError, read_npz

    shown = printable(path)
    try:
        ref = read_npz(path)
    except NpzError as error:
        raise BenchError(f"reference {shown}: {error}") from None
    image = (config.in_chans, config.img_size, config.img_size)
    for key in ("input", "logits"):
        if not isinstance(ref.get(key), np.ndarray) or ref[key].dtype.kind != "f":
            raise BenchError(f"reference {shown} has no float array '{key}' (vmamba_ref.export writes input and logits)")
    for key in ("input", "logits"):   # adv19: NaN made the match below rel L2 nan, which '> 1e-4' let through
        if not np.all(np.isfinite(ref[key])):
            raise BenchError(f"reference {shown}: {key} holds NaN or infinity")
    x = ref["input"]
    if x.dtype != np.float32 or x.ndim != 4 or tuple(x.shape[1:]) != image or len(x) < 1:
        raise BenchError(f"reference {shown}: input is {x.dtype} of shape {list(x.shape)}, not float32 images of "
                         f"shape [batch, {', '.join(map(str, image))}] for this model")
    return ref


def _check_reference_matches_model(model, ref: dict, display) -> None:
    """The naive export must come from this very model: PyTorch on its sample must give its logits."""
    got = torch_logits(model, ref["input"], "sequential")
    err = error_metrics(got, ref["logits"])
    if not err["rel_l2"] <= 1e-4:   # NaN too
        raise BenchError(f"the naive export's reference logits differ from this model's (rel L2 {err['rel_l2']:.2e}): "
                         "exported with other weights, seed or config?")
    display.log(f"  naive export matches the PyTorch model (rel L2 {err['rel_l2']:.1e} on its sample)")


IN_PROCESS_MAX_NODES = 20_000   # bigger naive graphs are compiled in a child process (peak memory)
COMPILER_PACKAGES = ("passes", "patterns", "pipelines")


def _git_describe() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__.split("-")[0]


def compiler_fingerprint() -> str:
    """Hash of the compiler's sources: a compiled graph is reused only if the compiler is unchanged."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in COMPILER_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def read_sidecar(path: Path) -> dict | None:
    """A compiled graph's KEY.json, or None when it is missing or unreadable (cut short by a crash
    before it was written atomically, edited by hand): the graph is then compiled again."""
    try:
        saved = json.loads(read_text_file(path))
    except (OSError, ValueError, RecursionError):
        return None
    return saved if isinstance(saved, dict) else None


def _compile_rows(args, naive: Path, naive_dynamic: bool, model, sample, display) -> dict[str, dict]:
    """Pipeline rows (and ablation variants): key -> {path, pipeline, compile_s, note} or {error}.

    Each compiled graph gets a sidecar KEY.json (pipeline text, source graph, note) so that
    --reuse-compiled reuses only graphs made by the same pipeline from the same naive export.
    """
    from pipelines import get_pipeline

    wanted = set(args.rows) | {GRAPH_OF[key] for key in args.rows if key in GRAPH_OF}
    jobs = [(key, str(get_pipeline(key))) for key in PIPELINE_ROWS if key in wanted]
    labels = {}
    if args.ablation:
        for key, label, text in cpu_ablation_variants():
            if args.ablation_variants and key not in args.ablation_variants:
                continue
            jobs.append((key, text))
            labels[key] = label
    in_process = node_count(naive) <= IN_PROCESS_MAX_NODES
    fingerprint = compiler_fingerprint()
    built: dict[str, dict] = {}
    for key, text in jobs:
        output = args.workdir / f"{key}.onnx"
        log = args.workdir / f"{key}.log"
        sidecar = args.workdir / f"{key}.json"
        entry = {"pipeline": text, "label": labels.get(key)}
        saved = read_sidecar(sidecar) if args.reuse_compiled and output.exists() else None
        if saved is not None:
            same_source = saved.get("pipeline") == text and saved.get("naive") == str(naive.resolve()) \
                and output.stat().st_mtime >= naive.stat().st_mtime
            stale = saved.get("compiler") != fingerprint
            if same_source and (not stale or args.allow_stale):
                display.log(f"  reusing {rich_text(output)}" + (" [yellow](compiler sources changed since)[/]" if stale else ""))
                reused = dict(entry, path=output, compile_s=saved.get("compile_s"), compiler=saved.get("compiler"),
                              **{k: saved[k] for k in ("note", "static_from") if k in saved})
                if stale:
                    reused["note"] = "; ".join(filter(None, [reused.get("note"), "compiled by an earlier version of the "
                                                             f"compiler (sources {saved.get('compiler')}, now {fingerprint})"]))
                built[key] = reused
                continue
        with display.stage(f"{key} pipeline on {rich_text(naive.name)}"):
            result = compile_pipeline(naive, text, output, log, in_process=in_process)
        if not result.ok and key == "tpu" and naive_dynamic:
            # Static shapes are a premise of the tpu pipeline: run it on a static batch-1 export.
            reason = result.message.removeprefix("error: ")
            reason = reason.split("PassError: ", 1)[-1]     # keep the pass's own words, not the pass list
            reason = " | ".join(reason.split(" | ")[:2])   # the first kinds of violation say enough
            display.log(f"  tpu pipeline on the dynamic-batch export failed ([dim]{rich_text(reason[:160])}[/]); "
                        "using a static batch-1 export")
            static = args.naive_static or args.workdir / "naive-b1.onnx"
            with display.stage(f"static batch-1 naive export {rich_text(static)}") as update:
                ensure_naive(model, sample, static, dynamic_batch=False, status=lambda m: update(m))
            batch_dim = onnx_batch_dim(static)
            if batch_dim != 1:
                raise BenchError(f"{static} is not a static batch-1 export (batch dimension {batch_dim!r})")
            with display.stage(f"tpu pipeline on {rich_text(static)}"):
                result = compile_pipeline(static, text, output, log, in_process=in_process)
            if result.ok:
                entry.update(static_from=str(static),
                             note=f"compiled from a static batch-1 export ({static}); on the dynamic-batch "
                                  f"export the pipeline stops: {reason[:240]}")
        if result.ok:
            built[key] = dict(entry, path=output, compile_s=result.seconds, compiler=fingerprint)
            write_text_atomic(sidecar, json.dumps({"pipeline": text, "naive": str(naive.resolve()), "compile_s": result.seconds,
                                                   "compiler": fingerprint,
                                                   **{k: entry[k] for k in ("note", "static_from") if k in entry}}, indent=1))
            continue
        display.log(f"  [red]{key} pipeline failed[/]: {rich_text(result.message)} (log: {rich_text(log)})")
        built[key] = dict(entry, error=result.message, log=str(log))
    return built


def _inputs_and_references(args, model, ref: dict, display) -> dict[int, dict]:
    """Per batch: input, float64-scan reference logits, float32 sequential logits."""
    refs = {}
    for batch in args.batches:
        if len(ref["input"]) == batch and FLOAT64_KEY in ref:
            refs[batch] = {"x": np.ascontiguousarray(ref["input"]), "f64": ref[FLOAT64_KEY], "f32": ref["logits"],
                           "source": "the export's sample and reference npz"}
            continue
        with display.stage(f"PyTorch float64-scan reference at batch {batch}"):
            x = random_batch(args.config, batch, args.seed)
            refs[batch] = {"x": x, "f64": torch_logits(model, x, "float64"), "f32": None,
                           "compute_f32": lambda x=x: torch_logits(model, x, "sequential"),
                           "source": f"torch.randn seeded {args.seed + batch}"}
    return refs


def settle(args) -> None:
    """With spinning on, a pause before each run: the previous row's spinning threads go idle first."""
    if args.ort_spinning:
        time.sleep(SETTLE_SECONDS)


def _time_rows(args, rows: list[dict], refs: dict, display, checkpoint=None) -> None:
    """Warm-up and interleaved rounds per batch; fills times, skipped, errors, agreement of every row.

    ``checkpoint()`` is called after each batch so that a long run leaves its figures so far.
    """
    by_key = {row["key"]: row for row in rows}
    for batch in args.batches:
        x, f64, f32 = refs[batch]["x"], refs[batch]["f64"], refs[batch]["f32"]
        active = []
        for row in rows:
            reason = row["runner"].unsupported(batch)
            naive_b1 = report.median_seconds(by_key.get("naive", {}), 1) if row["key"] == "naive" else None
            if reason is None and args.skip_slow_naive and row["key"] == "naive" and batch > 1 and naive_b1:
                if naive_b1 * batch > args.slow_seconds:
                    reason = f"skipped: ~{naive_b1 * batch:.0f} s a run"
            if reason is None and row.get("ablation") and args.ablation_batches and batch not in args.ablation_batches:
                reason = "not timed at this batch"
            if reason:
                row["skipped"][str(batch)] = reason
                continue
            active.append(row)
        outputs = {}
        with display.stage(f"warm-up at batch {batch}", total=len(active)) as update:
            for row in active:
                update(row["key"])
                settle(args)
                out, row["warmup_s"][str(batch)] = run_timed(row["runner"], x)
                outputs[row["key"]] = out
                row["errors"][str(batch)] = error_metrics(out, f64)
                update(row["key"], advance=1)
        if f32 is None:     # the PyTorch float32 sequential row's own output is that reference
            f32 = outputs.get("torch-sequential")
            if f32 is None:
                with display.stage(f"PyTorch float32 sequential reference at batch {batch}"):
                    f32 = refs[batch]["compute_f32"]()
        for row in active:
            row["agreement"][str(batch)] = float(np.mean(outputs[row["key"]].argmax(1) == f32.argmax(1)))
        warmups = {row["key"]: row["warmup_s"][str(batch)] for row in active}
        display.log("  warm-up: " + ", ".join(f"{key} {report.fmt_seconds(t)}" for key, t in warmups.items())
                    + f"; the {args.repeats} rounds should take ~{args.repeats * sum(warmups.values()) / 60:.1f} min")
        with display.stage(f"{args.repeats} interleaved rounds at batch {batch}", total=args.repeats * len(active)) as update:
            for round_index in range(args.repeats):
                shift = round_index % max(len(active), 1)
                for row in active[shift:] + active[:shift]:
                    update(f"round {round_index + 1}, {row['key']}")
                    settle(args)
                    row["times"].setdefault(str(batch), []).append(run_timed(row["runner"], x)[1])
                    update(advance=1)
        if checkpoint:
            checkpoint()


def _without_runner(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "runner"}


def _digits_top1(args, rows: list[dict], display) -> int:
    from vmamba_ref.digits import load_digits_split

    split = load_digits_split(args.config.img_size)
    x, y = split.x_test[:args.digits_images], split.y_test[:args.digits_images]
    with display.stage(f"held-out digits top-1 through every row ({len(x)} images)", total=len(rows)) as update:
        predictions = {}
        for row in rows:
            update(row["key"])
            predictions[row["key"]] = predict_in_batches(row["runner"], x).argmax(1)
            row["digits_top1"] = float(np.mean(predictions[row["key"]] == y))
            update(advance=1)
        reference = predictions.get("torch-sequential")
        if reference is not None:
            for row in rows:
                row["digits_same_as_torch"] = int(np.sum(predictions[row["key"]] == reference))
    return len(x)


def _print_table(result: dict, console) -> None:
    """A compact console view; the markdown section has every column."""
    from rich.table import Table

    batches = result["batches"]
    digits = result.get("digits_images")
    table = Table(title=f"{report.model_title(result)}: {report.machine_line(result['machine'])}", title_justify="left")
    columns = ["row", "nodes", "session"]
    for b in batches:
        columns += [f"img/s b{b}", f"s/img b{b}", f"×naive b{b}", f"×seed b{b}"]
    columns += ["worst rel L2", f"digits top-1" if digits else f"agree b{result['agreement_batch']}"]
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=i == 0)

    def cells(row, ratio_keys):
        out = [row["label"], f"{row['nodes']:,}" if row.get("nodes") else report.NA,
               report.fmt_seconds(row.get("session_s"))]
        for b in batches:
            f = row["figures"][str(b)]
            out += [report.cell_for_batch(row, b, report.fmt_rate(f["img_per_s"])), report.fmt_seconds(f["s_per_img"])]
            out += [report.fmt_ratio(f.get(k)) for k in ratio_keys]
        rel = [e["rel_l2"] for e in row.get("errors", {}).values()]
        out.append(report.fmt_error(max(rel)) if rel else report.NA)
        out.append(report.fmt_fraction(row.get("digits_top1") if digits
                                       else row.get("agreement", {}).get(str(result["agreement_batch"]))))
        return out

    for row in result["rows"]:
        table.add_row(*cells(row, ("x_naive", "x_seed")))
    if result.get("ablation"):
        table.add_section()
        for row in result["ablation"]:
            table.add_row(*cells(row, ("x_naive", "x_cpu")))
    console.print(table)
    if result.get("ablation"):
        console.print("(ablation rows: the last ratio column is relative to the cpu pipeline)", style="dim")
    for line in report.limit_lines(result):
        console.print(line.replace("**", ""), highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------- main

def _skip_row(row: dict, note: str, reason: str, batches) -> None:
    """A row with nothing to run (its graph is missing or failed): noted, skipped at every batch."""
    row["note"] = note
    row["runner"] = None
    for batch in batches:
        row["skipped"][str(batch)] = reason

def run(args, display) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = {
        "tool": "tools.bench", "model": args.model, "config": args.config.to_dict(), "threads": args.threads,
        "batches": args.batches, "repeats": args.repeats, "seed": args.seed, "ort_spinning": args.ort_spinning,
        **({"settle_s": SETTLE_SECONDS} if args.ort_spinning else {}),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m tools.bench " + " ".join(shlex.quote(a) for a in args.argv),
        "machine": report.machine_info(args.threads),
        "git": _git_describe(), "compiler": compiler_fingerprint(), "openvino": _openvino_version(),
        "config_overrides": {k: v for k, v in vars(args).items() if k in CONFIG_FIELDS and v is not None},
    }
    display.log(f"[bold]{args.model}[/] on {report.machine_line(result['machine'])}")

    with display.stage(f"building {args.model}"):
        model, sample = build_bench_model(args.model, args.config, seed=args.seed)
    onnx_rows = [k for k in ("naive", *PIPELINE_ROWS) if k in args.rows or k in {GRAPH_OF.get(r) for r in args.rows}]
    naive = naive_dim = None
    ref = None
    if onnx_rows:
        naive, naive_dim = _prepare_naive(args, model, sample, display)
        from vmamba_ref.export import ref_path_for

        ref = read_reference(ref_path_for(naive), args.config)
        _check_reference_matches_model(model, ref, display)
        result["naive"] = {"path": str(naive), "batch_dim": naive_dim}
    else:
        ref = {"input": sample.numpy(), "logits": torch_logits(model, sample.numpy(), "sequential"),
               FLOAT64_KEY: torch_logits(model, sample.numpy(), "float64")}
    compiled = _compile_rows(args, naive, isinstance(naive_dim, str) or naive_dim is None, model, sample, display) \
        if naive is not None else {}
    if "fork" in args.rows or "ov-fork" in args.rows:
        compiled["fork"] = {"path": _prepare_fork(args, model, sample, display)}
    if args.compile_only:
        return None

    rows: list[dict] = []
    ablation: list[dict] = []
    try:
        for key in args.rows + [k for k in compiled if k not in ROW_LABELS]:
            row = {"key": key, "label": ROW_LABELS.get(key) or compiled[key]["label"], "times": {}, "skipped": {},
                   "errors": {}, "agreement": {}, "warmup_s": {}}
            target = rows if key in ROW_LABELS else ablation
            target.append(row)
            if target is ablation:
                row["ablation"] = True
            if key.startswith("torch-"):
                row["kind"] = "torch"
                row["runner"] = TorchRunner(model, key.removeprefix("torch-"))
                continue
            if key in GRAPH_OF and key not in TWO_THREAD_ROWS:
                source = compiled.get(GRAPH_OF[key], {})
                row["kind"] = "openvino"
                if "error" in source or "path" not in source:
                    _skip_row(row, f"no {GRAPH_OF[key]} graph", "no graph", args.batches)
                    continue
                row["path"] = str(source["path"])
                row["nodes"] = node_count(source["path"])
                precision = None if key.endswith("-default") else "f32"
                with display.stage(f"OpenVINO compile for {key} ({row['nodes']:,} nodes)"):
                    row["runner"] = OpenVinoRunner(source["path"], args.threads, precision)
                row["session_s"] = row["runner"].session_seconds
                row["precision"] = row["runner"].precision_used
                if precision is None:
                    row["label"] = f"OpenVINO {row['precision']} (its default here), cpu pipeline graph"
                continue
            row["kind"] = "onnx"
            info = compiled.get(GRAPH_OF.get(key, key), {"path": naive})
            row.update({k: v for k, v in info.items() if k in ("pipeline", "compile_s", "note", "static_from", "compiler")})
            if "error" in info:
                _skip_row(row, f"pipeline failed: {info['error']}", "pipeline failed", args.batches)
                continue
            row["path"] = str(info["path"])
            row["nodes"] = node_count(info["path"])
            row["graph_signature"] = graph_signature(info["path"])
            with display.stage(f"ONNX Runtime session for {key} ({row['nodes']:,} nodes)"):
                threads = 2 if key in TWO_THREAD_ROWS else args.threads
                # Spinning sessions slow each other in one process: each gets a worker process then.
                runner_class = OnnxWorker if args.ort_spinning else OnnxRunner
                row["runner"] = runner_class(info["path"], threads, spinning=args.ort_spinning)
            row["session_s"] = row["runner"].session_seconds

        live = [row for row in rows + ablation if row.get("runner") is not None]
        refs = _inputs_and_references(args, model, ref, display)
        result["reference_note"] = "; ".join(f"batch {b}: {refs[b]['source']}" for b in args.batches)
        result["agreement_batch"] = max(args.batches)
        partial = args.workdir / "bench.partial.json"

        def checkpoint():
            snapshot = dict(result, rows=[_without_runner(r) for r in rows], ablation=[_without_runner(r) for r in ablation])
            report.write_json(partial, snapshot)

        _time_rows(args, live, refs, display, checkpoint)
        result["machine"]["load_average_end"] = report.load_average()

        config = args.config
        if args.digits_images > 0 and config.num_classes == 10 and config.in_chans == 3:
            result["digits_images"] = _digits_top1(args, [r for r in rows if r.get("runner")], display)
    finally:
        for row in rows + ablation:
            if row.get("runner") is not None:
                row["runner"].close()
            row.pop("runner", None)

    if not args.no_flops:
        with display.stage("FLOP count and GEMM rate"):
            from tools.bench_flops import flop_limit

            config = args.config
            result["flops"] = flop_limit(model, (config.in_chans, config.img_size, config.img_size), args.threads,
                                         gemm_size=args.gemm_size)
    result["rows"], result["ablation"] = rows, ablation
    report.derive(result)
    return result


def write_outputs(args, result: dict, display) -> None:
    if args.json_path:
        result["json_path"] = str(args.json_path)
    if args.png_path:
        result["png_path"] = str(args.png_path)
    if args.out_md:
        result["md_path"] = str(args.out_md)
    if args.png_path:
        report.write_png(args.png_path, result)
    if args.json_path:
        report.write_json(args.json_path, result)
    if args.out_md:
        tag = report.section_tag(result["model"], result["threads"])
        report.write_section(args.out_md, tag, report.markdown_section(result))
    written = [str(p) for p in (args.out_md, args.json_path, args.png_path) if p]
    if written:
        display.log(f"wrote {rich_text(', '.join(written))}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse_args(argv)
    except BenchError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    args.argv = argv
    display = Display()
    if args.from_json:
        import json as json_module

        try:
            result = json_module.loads(read_text_file(args.from_json))
            _check_read_result(result)
            # The JSON is written only where --json says: by default the run's figures stay in the file
            # they were read from, and the section links to it (the default docs/bench/MODEL-Ncore.json
            # may hold another run's figures, which a rewrite from this file replaced).
            keep_in_place = args.given_paths[0] is None
            if keep_in_place:
                args.given_paths = ("none", args.given_paths[1])
            _default_output_paths(args, result["model"], result["threads"])   # the run's model, not --model
            if keep_in_place:
                result["json_path"] = str(args.from_json)
            _check_outputs(args)
            result["rewritten"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            report.derive(result)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, BenchError) as error:
            print(f"error: --from-json {printable(args.from_json)}: "
                  f"{type(error).__name__ + ': ' if isinstance(error, (KeyError, TypeError, AttributeError)) else ''}"
                  f"{one_line(error)}", file=sys.stderr)
            return 2
        with display:
            write_outputs(args, result, display)
        return 0
    try:
        with display:
            result = run(args, display)
            if result is None:
                display.log(f"compiled into {rich_text(args.workdir)}; rerun with --reuse-compiled to time")
                return 0
            write_outputs(args, result, display)
    except BenchError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    from rich.console import Console

    _print_table(result, Console(width=max(160, Console().width)))
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

"""Benchmark a Mamba-130m-shaped stack exported from transformers: naive graph vs cpu graph vs PyTorch.

    python -m tools.bench_mamba --threads 2 --machine "dev 2-core" --write-docs

The model is transformers' MambaModel with Mamba-130m's layer shape (d_model 768, expand 2,
d_state 16, conv 4, dt_rank 48), fewer layers (--layers, default 2), random init, a sequence of
--length tokens (default 1024), batch 1. Rows: the naive TorchScript export (the scan unrolled,
~10 nodes per step) and the `cpu` pipeline's graph, both on ONNX Runtime, and PyTorch eager:
transformers' sequential slow path (what the export unrolls) and its mambapy parallel scan
(use_mambapy, when mambapy is installed). One warm-up per row, then --repeats rounds in which
every row runs once, in rotated order; medians. Errors are relative L2 against the slow path.
Prints a markdown table; --write-docs also writes docs/bench/mamba-130m-<N>core.json and the
section of docs/BENCHMARKS.md between `<!-- bench:mamba-130m:N-core -->` markers.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from passes.files import DestinationError, read_text_file, write_text_atomic
from passes.graph_io import InputError, save_model_atomic
from passes.model_check import InvalidModelError, model_for_runtime
from passes.one_line import OneLineArgumentParser, folder_path, one_line, positive_int, printable, seed_int, thread_count
from passes.relative_error import relative_l2
from tools import bench_report as report
from tools.external_exports import INPUT_NAME, export_module, hf_mamba
from tools.json_destination import json_destination_refused, workdir_refused

DOCS = Path(__file__).resolve().parent.parent / "docs"


def scan_removed(naive: Path, output: Path) -> None:
    """The naive graph with every unrolled scan's stacked output replaced by zeros of its shape.

    What is left is the model without its scan: projections, the causal conv, norms, gating, the
    D skip. The scan's inputs (exp(A * dt), dt * B * u and what only feeds them: dt_proj,
    Softplus) go as dead code. Its time is the floor any scan form adds to: by Amdahl's law
    naive / floor is the most any re-rolled graph can gain over the naive one."""
    import onnx
    import onnx_graphsurgeon as gs

    from passes.static_shapes import partial_shapes
    from patterns.graph_query import producer
    from patterns.linear_recurrence import find_recurrences

    graph = gs.import_onnx(onnx.load(str(naive)))
    shapes = partial_shapes(graph)
    for index, rec in enumerate(find_recurrences(graph).recurrences):
        producer(rec.output).outputs.clear()
        # The export's batch axis is unknown to shape inference (token ids through Gather); the bench runs batch 1.
        shape = [1 if size is None else size for size in shapes[rec.output.name]]
        zeros = gs.Constant(f"scan{index}_removed", np.zeros(shape, dtype=np.float32))
        graph.nodes.append(gs.Node("Identity", name=f"scan{index}_removed", inputs=[zeros], outputs=[rec.output]))
    graph.cleanup().toposort()
    save_model_atomic(gs.export_onnx(graph), output)   # never through a link planted in a reused --workdir (adv24)


def _ort_runner(path: Path, threads: int):
    import onnxruntime as ort

    # --workdir's graphs may be anyone's (--reuse-compiled, a reused export): read once and checked (local functions
    # ONNX Runtime would inline in native code, past SIGTERM), ONNX Runtime given those bytes, never the path again
    try:
        data = model_for_runtime(path)
    except InputError as error:
        raise InvalidModelError(str(error)) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    started = time.perf_counter()
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    created = time.perf_counter() - started
    return (lambda ids: session.run(None, {INPUT_NAME: ids})[0]), created


def _torch_runner(model, use_mambapy: bool):
    import torch

    def run(ids: np.ndarray) -> np.ndarray:
        for layer in model.model.layers:
            layer.mixer.use_mambapy = use_mambapy
        with torch.no_grad():
            return model(torch.from_numpy(ids)).numpy()
    return run


def run(args) -> dict:
    import onnx
    import torch

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    model, ids = hf_mamba(args.d_model, args.d_state, args.layers, args.length, vocab=1000, seed=args.seed)
    naive = args.workdir / f"naive-L{args.length}-x{args.layers}.onnx"
    export_seconds = None   # None: a naive export from an earlier run in --workdir was reused
    if not naive.exists():
        started = time.perf_counter()
        export_module(model, ids, naive)
        export_seconds = round(time.perf_counter() - started, 1)
    compiled = args.workdir / f"cpu-L{args.length}-x{args.layers}.onnx"
    floor = args.workdir / f"no-scan-L{args.length}-x{args.layers}.onnx"
    compile_seconds = None   # None: graphs compiled earlier (e.g. on another machine) were reused
    if not (args.reuse_compiled and compiled.exists() and floor.exists()):
        from pipelines import CompileError, compile_model

        started = time.perf_counter()
        try:
            compile_model(naive, "cpu", output=compiled)
        except CompileError as error:
            raise SystemExit(f"the cpu pipeline failed on the naive export: {error}") from None
        compile_seconds = round(time.perf_counter() - started, 1)
        scan_removed(naive, floor)
    machine = report.machine_info(args.threads)
    feed = ids.numpy()
    rows = {"naive": {"label": "naive ONNX export (ORT)", "path": naive},
            "cpu": {"label": "`--pipeline cpu` (ORT)", "path": compiled},
            "no-scan": {"label": "floor: the naive graph with its scans removed (ORT; not the model)", "path": floor},
            "torch-slow": {"label": "PyTorch eager, transformers' sequential slow path"},
            "torch-mambapy": {"label": "PyTorch eager, transformers with use_mambapy (parallel scan)"}}
    for key, row in rows.items():
        if "path" in row:
            row["nodes"] = len(onnx.load(str(row["path"]), load_external_data=False).graph.node)
            row["runner"], row["session_seconds"] = _ort_runner(row["path"], args.threads)
        else:
            row["runner"] = _torch_runner(model, key == "torch-mambapy")
    reference = rows["torch-slow"]["runner"](feed)
    for key, row in rows.items():
        output = row["runner"](feed)   # also the warm-up
        row["rel_l2"] = None if key == "no-scan" else relative_l2(output, reference)
        row["seconds"] = []
    order = list(rows)
    for round_index in range(args.repeats):
        for key in order[round_index % len(order):] + order[:round_index % len(order)]:
            started = time.perf_counter()
            rows[key]["runner"](feed)
            rows[key]["seconds"].append(time.perf_counter() - started)
        print(f"round {round_index + 1}/{args.repeats}: "
              + ", ".join(f"{k} {rows[k]['seconds'][-1]:.3f} s" for k in order), flush=True)
    machine["load_average_end"] = report.load_average()
    # The FLOP limit: the model's GEMM FLOPs (projections, causal conv; not the scan's elementwise
    # work) at this machine's best float32 GEMM rate. No graph of this model runs faster.
    from tools.bench_flops import gemm_rate, module_flops

    flops, by_op = module_flops(model, ids)
    flop_limit = {"flops": flops, "by_op": by_op, **gemm_rate(args.threads)}
    flop_limit["seconds"] = flops / flop_limit["gemm_flops_per_s"]
    for row in rows.values():
        row["median_seconds"] = statistics.median(row["seconds"])
        row.pop("runner")
        if "path" in row:
            row["path"] = str(row["path"])
    return {"config": {"d_model": args.d_model, "d_state": args.d_state, "expand": 2, "layers": args.layers,
                       "length": args.length, "batch": 1, "threads": args.threads, "repeats": args.repeats},
            "machine_label": args.machine, "machine": machine, "export_seconds": export_seconds,
            "compile_seconds": compile_seconds, "rows": rows, "flop_limit": flop_limit}


def markdown(result: dict) -> str:
    rows, config = result["rows"], result["config"]
    naive, cpu = rows["naive"]["median_seconds"], rows["cpu"]["median_seconds"]
    lines = [f"### Mamba-130m-shaped stack from transformers ({result['machine_label']})", "",
             f"transformers `MambaModel`, d_model {config['d_model']}, expand {config['expand']}, d_state "
             f"{config['d_state']}, {config['layers']} layers, L {config['length']}, batch 1, random init; "
             f"`python -m tools.bench_mamba --threads {config['threads']}`; {config['repeats']} interleaved rounds, "
             "medians. Machine: " + report.machine_line(result["machine"]) + ".", "",
             "| row | nodes | s / sequence | vs naive | vs PyTorch slow path | rel. L2 vs slow path |",
             "|---|---|---|---|---|---|"]
    slow = rows["torch-slow"]["median_seconds"]
    for row in rows.values():
        seconds = row["median_seconds"]
        nodes = f"{row['nodes']:,}" if "nodes" in row else "–"
        error = "–" if row["rel_l2"] is None else f"{row['rel_l2']:.1e}"
        lines.append(f"| {row['label']} | {nodes} | {seconds:.3f} | {naive / seconds:.1f}x | {slow / seconds:.1f}x "
                     f"| {error} |")
    limit = result["flop_limit"]
    lines.append(f"| FLOP limit: {limit['flops'] / 1e9:.1f} GFLOP of matmuls and convolutions at this machine's "
                 f"GEMM rate ({limit['gemm_flops_per_s'] / 1e9:.0f} GFLOP/s: {limit['gemm_method']}) | – | "
                 f"{limit['seconds']:.3f} | {naive / limit['seconds']:.1f}x | {slow / limit['seconds']:.1f}x | – |")
    floor = rows["no-scan"]["median_seconds"]
    lines += ["", f"`cpu` graph: {naive / cpu:.1f}x the naive graph, {slow / cpu:.1f}x PyTorch's sequential slow path "
              + (f"(export {result['export_seconds']} s, " if result["export_seconds"] is not None else "(naive export reused, ")
              + (f"compile {result['compile_seconds']} s). " if result["compile_seconds"] is not None
                 else "graphs compiled earlier and reused). ")
              + f"Without its scans the graph takes {floor / naive:.0%} of the "
              f"naive graph's time, so no scan form can make it more than {naive / floor:.1f}x faster than the naive "
              f"graph; the `cpu` graph's scans take {cpu - floor:.3f} s, the naive graph's {naive - floor:.3f} s. "
              f"20x the naive graph would be {naive / 20:.3f} s per sequence"
              + (f", below the FLOP limit ({limit['seconds']:.3f} s): the projections alone cannot run that fast "
                 "on this machine, whatever the scan costs." if naive / 20 < limit["seconds"] else ".")]
    return "\n".join(lines)


def section_label(result: dict) -> str:
    """'16-core' for a run on all of a machine's cores, '16-core-2-threads' for fewer: both runs keep a section."""
    cores, threads = result["machine"]["cores"], result["config"]["threads"]
    return f"{cores}-core" if threads == cores else f"{cores}-core-{threads}-threads"


class ResultError(ValueError):
    """A --from-json file that is not a result this tool wrote (one line)."""


def load_result(path: Path) -> dict:
    """A --json run's result, checked: it may come from another machine (or anyone), and its labels
    go into a file name and into docs/BENCHMARKS.md between comment markers."""
    shown = printable(path)
    try:
        text = read_text_file(path)
    except (OSError, UnicodeDecodeError) as error:
        raise ResultError(f"cannot read {shown}: {one_line(getattr(error, 'strerror', None) or error)}") from None
    try:
        result = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:   # RecursionError: nested too deep
        raise ResultError(f"{shown} is not JSON: {one_line(error)}") from None
    try:
        markdown(result)
        cores, threads = result["machine"]["cores"], result["config"]["threads"]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as error:
        raise ResultError(f"{shown} is not a tools.bench_mamba --json result "
                          f"({type(error).__name__}: {one_line(error)})") from None
    unsafe = report.unsafe_string_in(result)
    if unsafe is not None:
        raise ResultError(f"{shown} holds a string with a control character or an HTML comment marker: "
                          f"'{printable(unsafe)}'")
    if not all(type(n) is int and n >= 1 for n in (cores, threads)):
        raise ResultError(f"{shown} machine cores and threads must be positive integers, got "
                          f"'{printable(cores)}' and '{printable(threads)}'")
    return result


def write_docs(result: dict, threads_label: str) -> None:
    path = DOCS / "BENCHMARKS.md"
    text = path.read_text()
    begin, end = f"<!-- bench:mamba-130m:{threads_label} -->", f"<!-- /bench:mamba-130m:{threads_label} -->"
    section = f"{begin}\n{markdown(result)}\n{end}"
    if begin in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    write_text_atomic(path, text)


def main(argv=None) -> int:
    ap = OneLineArgumentParser(prog="python -m tools.bench_mamba", description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=positive_int, default=2)
    ap.add_argument("--length", type=positive_int, default=1024)
    ap.add_argument("--d-model", type=positive_int, default=768)
    ap.add_argument("--d-state", type=positive_int, default=16)
    ap.add_argument("--threads", type=thread_count, default=2)
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--seed", type=seed_int, default=0)
    ap.add_argument("--machine", default="dev 2-core", help="how docs name the machine")
    ap.add_argument("--workdir", type=folder_path, default=Path("out/bench/mamba-130m"))
    ap.add_argument("--json", type=Path, help="also write the raw timings here")
    ap.add_argument("--write-docs", action="store_true",
                    help="write docs/bench/mamba-130m-<N>core.json and the docs/BENCHMARKS.md section")
    ap.add_argument("--reuse-compiled", action="store_true",
                    help="time the cpu and no-scan graphs already in --workdir instead of compiling them")
    ap.add_argument("--from-json", type=Path, metavar="JSON",
                    help="measure nothing: print (and with --write-docs write) the result a --json run saved, "
                         "e.g. one taken on another machine")
    args = ap.parse_args(argv)
    if json_destination_refused(args.json, reads=[("--from-json", args.from_json)]) or (not args.from_json and workdir_refused(args.workdir)):
        return 2
    try:
        result = load_result(args.from_json) if args.from_json else run(args)
    except (ResultError, DestinationError, InvalidModelError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    print(markdown(result))
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n", "--json")
    if args.write_docs:
        label = section_label(result)
        write_text_atomic(DOCS / "bench" / f"mamba-130m-{label.replace('-core', 'core')}.json",
                          json.dumps(result, indent=1) + "\n")
        write_docs(result, label)
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

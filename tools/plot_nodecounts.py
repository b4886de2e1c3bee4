"""Plot the node count after every pass, one panel per pipeline, from passes.apply reports.

    python -m tools.plot_nodecounts out/seed/report.json out/cpu/report.json out/tpu/report.json -o docs/nodecounts.png
    python -m tools.plot_nodecounts --model naive.onnx -o docs/nodecounts.png   # runs seed, cpu, tpu first

A report argument may be the report.json or its directory. With --model, each pipeline
runs once with --report into --work (default out/nodecounts/<pipeline>/). The y axis is
logarithmic (77k nodes in, a few thousand out); points where a pass changed nothing are
hollow.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from passes.files import DestinationError, atomic_target, check_destination, check_not_read, read_text_file
from passes.one_line import OneLineArgumentParser, one_line, printable

DEFAULT_PIPELINES = "seed,cpu,tpu"


def _report_file(path: str | Path) -> Path:
    """A report argument: the report.json, or its directory."""
    path = Path(path)
    return path / "report.json" if path.is_dir() else path


def check_output(output: str | Path, reads: list[tuple[str, Path]]) -> None:
    """Before any work: ``output`` is a destination (passes.files.check_destination) that is none of the
    files the run reads (``reads``: (role, path); '-o run.png run.png' drew the chart over the report it
    was drawing from), in a format matplotlib writes (its name's suffix: '-o nodes.onnx' ran every
    pipeline of --model, then failed)."""
    from matplotlib.figure import Figure

    check_destination(output)
    check_not_read(output, reads)
    kind = Path(output).suffix[1:].lower() or "png"
    supported = Figure().canvas.get_supported_filetypes()
    if kind not in supported:
        raise DestinationError(f"output {printable(output)}: matplotlib writes no '{printable(kind)}' files "
                               f"(give one of .{', .'.join(sorted(supported))})")


def load_report(path: str | Path) -> dict:
    """A passes.apply report.json, its shape checked before plotting: a file that is no UTF-8, no JSON or another
    JSON is refused naming the file (adv22: "'utf-8' codec can't decode byte 0xff in position 7", "Expecting value:
    line 1 column 1 (char 0)", "TypeError: list indices must be integers or slices, not str", none naming it)."""
    path = _report_file(path)
    shown = printable(path)
    try:
        report = json.loads(read_text_file(path))
    except UnicodeDecodeError:
        raise ValueError(f"report {shown} is not UTF-8 text (a passes.apply report.json is)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"report {shown} is not JSON ({one_line(error)})") from None
    if not isinstance(report, dict):
        raise ValueError(f"report {shown} is a JSON {type(report).__name__}, not a passes.apply report")
    if "run" not in report:
        raise ValueError(f"report {shown}: no run recorded (status {printable(str(report.get('status')))})")
    run = report["run"]
    passes = run.get("passes") if isinstance(run, dict) else None
    if not isinstance(passes, list) or not _is_count(run.get("nodes_before")):
        raise ValueError(f"report {shown}: its run holds no nodes_before count and passes list")
    for number, entry in enumerate(passes, 1):
        if not isinstance(entry, dict) or not _is_count(entry.get("nodes_after")) or "name" not in entry \
                or not isinstance(entry.get("changed"), bool):
            raise ValueError(f"report {shown}: pass {number} of its run lacks a name, a nodes_after count or "
                             "changed true/false")
    return report


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_pipelines(pipelines: list[str]) -> None:
    """Before any runs: each --pipelines entry resolves (an unknown one was found after the ones before it
    had run) and is one folder name under --work ('/abs/x' and '../x' made folders outside it)."""
    from pipelines import get_pipeline

    for pipeline in pipelines:
        if pipeline in ("", ".", "..") or "/" in pipeline or "\\" in pipeline or "\0" in pipeline:
            raise ValueError(f"--pipelines '{printable(pipeline)}' is no folder name under --work "
                             "(give named pipelines or passes)")
        get_pipeline(pipeline)


def run_pipelines(model: str, pipelines: list[str], work: Path) -> list[dict]:
    from pipelines import CompileError, compile_model

    reports = []
    for pipeline in pipelines:
        directory = work / pipeline
        directory.mkdir(parents=True, exist_ok=True)
        try:
            compile_model(model, pipeline, output=directory / f"{pipeline}.onnx", report=directory / "report")
        except CompileError as error:
            raise RuntimeError(f"pipeline {pipeline}: {error}") from None
        reports.append(load_report(directory / "report"))
    return reports


# Longest name a label shows: pass and pipeline names are a few words; a report's are anyone's (a 100 KB
# name took 10 s to lay out, and no chart can show it).
MAX_LABEL = 60


def _label(text: object) -> str:
    text = str(text)
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"


def plot(reports: list[dict], output: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    # Names come from the reports (a pass, a pipeline, a model file): text, never TeX (as mathtext, '$\\frac$'
    # refused the plot and a name of 20,000 '\\int's took 20 s to lay out), and shortened (_label).
    figure, axes = plt.subplots(len(reports), 1, figsize=(10, 2.9 * len(reports) + 0.6), sharey=True, squeeze=False)
    for axis, report in zip(axes[:, 0], reports):
        passes = report["run"]["passes"]
        labels = ["input"] + [_label(f"{entry.get('index', i + 1)} {entry['name']}") for i, entry in enumerate(passes)]
        counts = [report["run"]["nodes_before"]] + [entry["nodes_after"] for entry in passes]
        changed = [True] + [entry["changed"] for entry in passes]
        steps = range(len(counts))
        axis.plot(steps, counts, color="#0969da", linewidth=2, zorder=1)
        axis.scatter([s for s in steps if changed[s]], [counts[s] for s in steps if changed[s]],
                     color="#0969da", zorder=2, s=28)
        axis.scatter([s for s in steps if not changed[s]], [counts[s] for s in steps if not changed[s]],
                     facecolor="white", edgecolor="#a8b1ba", zorder=2, s=28)
        for step in steps:
            if step == 0 or counts[step] != counts[step - 1]:
                axis.annotate(f"{counts[step]:,}", (step, counts[step]), textcoords="offset points", xytext=(0, 7),
                              ha="center", fontsize=8)
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        axis.set_xticks(list(steps))
        axis.set_xticklabels(labels, rotation=30, ha="right", fontsize=8, parse_math=False)
        for tick, is_changed in zip(axis.get_xticklabels(), changed):
            tick.set_color("black" if is_changed else "#a8b1ba")
        axis.set_ylabel("nodes")
        axis.set_title(f"{_label(report.get('pipeline_name', '?'))}: {counts[0]:,} → {counts[-1]:,} nodes", fontsize=10, loc="left",
                       parse_math=False)
        axis.grid(axis="y", color="#eaeef2")
        axis.margins(y=0.25)
    model = _label(Path(str(reports[0].get("input", ""))).name)
    figure.suptitle(title or f"Node count after each pass ({model})", fontsize=12, parse_math=False)
    figure.tight_layout()
    with atomic_target(output, suffix=output.suffix or ".png") as temporary:
        figure.savefig(temporary, dpi=110, format=(output.suffix[1:] or "png"))
    plt.close(figure)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.plot_nodecounts", description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="*", help="report.json files (or their directories)")
    parser.add_argument("--model", help="run the pipelines on this naive model first")
    parser.add_argument("--pipelines", default=DEFAULT_PIPELINES, help=f"with --model (default {DEFAULT_PIPELINES})")
    parser.add_argument("--work", default="out/nodecounts", help="with --model: where the runs go")
    parser.add_argument("--title")
    parser.add_argument("-o", "--output", default="docs/nodecounts.png")
    args = parser.parse_args(argv)
    if bool(args.reports) == bool(args.model):
        parser.error("give report files, or --model (not both)")
    try:
        reads = [("report", _report_file(path)) for path in args.reports]
        if args.model:
            from passes.graph_io import model_and_data_files
            reads += model_and_data_files(args.model)
        check_output(args.output, reads)   # before running pipelines, not after
        if args.model:
            check_pipelines(args.pipelines.split(","))
            reports = run_pipelines(args.model, args.pipelines.split(","), Path(args.work))
        else:
            reports = [load_report(path) for path in args.reports]
        written = plot(reports, Path(args.output), args.title)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as error:
        # a report.json of the wrong shape (a list, a pass without nodes_after) is bad input too
        sys.stderr.write(f"error: {type(error).__name__ + ': ' if isinstance(error, (KeyError, TypeError, AttributeError)) else ''}"
                         f"{one_line(error)}\n")
        return 2
    print(f"wrote {printable(written)}")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

"""The quick-start job: compile the embedded digits VMamba and show what each pipeline did.

    python -m tools.demo --out out/demo            (what `make demo` runs)

1. exports the embedded `micro` model (trained on scikit-learn's digits) naively: every scan
   step unrolled, as a plain torch.onnx.export writes it, with its PyTorch reference outputs;
2. compiles it with each pipeline (seed, cpu, tpu) through `pipelines.compile_model`, verified against them,
   writing a report folder per pipeline;
3. prints node counts, and the held-out digits accuracy through every graph in ONNX Runtime.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from passes.files import DestinationError, check_folder_destination, make_folders, remove_empty_folders
from passes.one_line import OneLineArgumentParser, folder_path, one_line, printable
from passes.report.writer import check_report_dir

PIPELINES = ("seed", "cpu", "tpu")


def main(argv=None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=folder_path, default=Path("out/demo"), help="folder for models and reports")
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help="comma-separated pipelines to run")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    from pipelines import get_pipeline
    pipelines = args.pipelines.split(",")
    try:   # before the export: an unknown pipeline or an --out that cannot take the files is one line
        for name in pipelines:
            get_pipeline(name)
        files = ["naive.onnx", "naive.ref.npz"] + [f"{name}.onnx" for name in pipelines]
        check_folder_destination(args.out, "--out folder", files)
        for name in pipelines:   # compile_model checks them only after the export (found by adv5)
            check_report_dir(args.out / f"report-{name}")
    except (ValueError, DestinationError) as error:   # an unknown pipeline or bad pipeline text
        sys.stderr.write(f"error: {one_line(error)}\n")
        return 2
    made = make_folders(args.out)
    try:
        return _demo(args, console, pipelines)
    except BaseException:   # an interrupt or a failure before anything is written leaves no empty folder
        remove_empty_folders(made)
        raise


def _demo(args, console: Console, pipelines: list[str]) -> int:
    from passes.apply_display import RichProgress, closing_table
    from tools.eval_digits import onnx_predict, torch_predict
    from vmamba_ref import default_model
    from vmamba_ref.digits import load_digits_split
    from vmamba_ref.export import export_naive
    from pipelines import CompileError, compile_model

    naive = args.out / "naive.onnx"
    with console.status("exporting the embedded digits model naively (every scan step unrolled)") as status:
        exported = export_naive(default_model(), naive, batch=1, status=lambda m: status.update(m))
    console.print(f"[green]✓[/] {escape(printable(naive))}: {exported.nodes:,} nodes, exported in "
                  f"{exported.export_seconds:.1f} s", highlight=False)

    outputs = {"naive": naive}
    for name in pipelines:
        target = args.out / f"{name}.onnx"
        console.rule(f"pipeline {name}")
        try:
            with RichProgress(console) as display:
                compiled = compile_model(naive, name, output=target, report=args.out / f"report-{name}", progress=display)
        except CompileError as error:
            console.print(f"[red]pipeline {escape(printable(name))} failed[/]: {escape(one_line(error))}", highlight=False)
            return error.exit_code
        Console().print(closing_table(compiled.run))
        outputs[name] = target

    split = load_digits_split()
    with console.status("held-out digits accuracy, PyTorch and every graph in ONNX Runtime"):
        reference = torch_predict(split.x_test).argmax(1)
        predictions = {name: onnx_predict(path, split.x_test).argmax(1) for name, path in outputs.items()}

    import onnx
    table = Table(title=f"embedded digits VMamba ({len(split.y_test)} held-out images)")
    for column in ("graph", "nodes", "accuracy", "same predictions as PyTorch"):
        table.add_column(column, justify="right" if column != "graph" else "left")
    table.add_row("PyTorch (sequential scan)", "–", f"{np.mean(reference == split.y_test):.4f}", "–")
    for name, path in outputs.items():
        nodes = len(onnx.load(str(path), format="protobuf", load_external_data=False).graph.node)
        same = int(np.sum(predictions[name] == reference))
        table.add_row(f"{name}  ({escape(printable(path))})", f"{nodes:,}", f"{np.mean(predictions[name] == split.y_test):.4f}",
                      f"{same}/{len(reference)}")
    Console().print(table)
    reports = ", ".join(str(args.out / f"report-{n}" / "report.json") for n in outputs if n != "naive")
    console.print(f"reports: {escape(printable(reports))}", highlight=False)
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

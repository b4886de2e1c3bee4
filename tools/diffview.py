"""The region diff between any two ONNX models, as text and/or a self-contained HTML page.

    python -m tools.diffview naive.onnx rolled.onnx --text
    python -m tools.diffview before.onnx after.onnx -o diff.html

Nodes match when name, op, inputs, outputs and attributes agree (constant inputs by what
they hold, not by name). The rest are grouped into connected regions: removed nodes beside
the added nodes that replaced them, printed with canonical names so identical rewrites
group ("x60 identical, showing 1"). The same code draws the regions of ``passes.apply
--report``; see passes/report/.

Exit codes: 0 ok, 2 bad input (one line on stderr).
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import onnx

from passes.files import DestinationError, check_destination, check_not_read, input_file_problem, write_text_atomic
from passes.interrupts import exit_code, sigterm_as_interrupt
from passes.one_line import OneLineArgumentParser, printable, printable_message, one_line


class DiffError(Exception):
    pass


def _load(path: str) -> onnx.ModelProto:
    from passes.graph_io import InputError, read_structure
    from passes.model_check import InvalidModelError, check_model

    shown = printable(path)
    problem = input_file_problem(path, "model")
    if problem:
        raise DiffError(problem)
    try:
        # Weights in external files are not needed: large constants print as type and shape.
        model = read_structure(path)
    except InputError as error:
        raise DiffError(str(error)) from None
    try:
        check_model(model)
    except InvalidModelError as error:
        raise DiffError(f"{shown}: {error}") from None
    return model


def _data_files(path: str, model: onnx.ModelProto) -> list[tuple[str, Path]]:
    """The external data files ``model`` (read from ``path``) names, as (role, path) pairs."""
    from passes.graph_io import external_data_files

    return [(f"external data file of {printable(path)}", file) for file in external_data_files(path, model)]


def diff_models(before: onnx.ModelProto, after: onnx.ModelProto) -> tuple[dict, Counter, Counter]:
    """(describe_regions() of the diff, op histogram before, op histogram after)."""
    from passes.report.grouping import describe_regions
    from passes.report.regions import diff_snapshots
    from passes.report.snapshot import snapshot_model

    description = describe_regions(diff_snapshots(snapshot_model(before), snapshot_model(after)))
    return (description, Counter(node.op_type for node in before.graph.node),
            Counter(node.op_type for node in after.graph.node))


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def text_report(before_path: str, after_path: str, description: dict, before_ops: Counter, after_ops: Counter) -> str:
    from passes.report.text import format_delta, group_kind, regions_text

    delta = Counter(after_ops)
    delta.subtract(before_ops)
    kinds = Counter()
    for group in description["groups"]:
        kinds[group_kind(group)] += group["count"]
    lines = [
        printable_message(f"before: {before_path} ({sum(before_ops.values()):,} nodes)"),
        printable_message(f"after:  {after_path} ({sum(after_ops.values()):,} nodes)"),
        printable_message(f"op histogram: {format_delta(delta)}"),
        f"{_count(description['regions'], 'region')} in {_count(description['groups_total'], 'group')}: "
        f"{kinds['changed']:,} changed, {kinds['removed']:,} removed, {kinds['added']:,} added",
        "",
        regions_text(description, "only in before", "only in after"),
    ]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.diffview",
                                     description="Region diff of two ONNX models (text and/or HTML).")
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("-o", "--output", metavar="DIFF.html", help="write a self-contained HTML page")
    parser.add_argument("--text", action="store_true", help="print the diff as text (the default without -o)")
    args = parser.parse_args(argv)
    try:
        with sigterm_as_interrupt():   # SIGTERM cleans up like Ctrl-C: no temporary file is left
            return _diff(args)
    except KeyboardInterrupt as interrupt:
        sys.stderr.write("error: interrupted; no output written\n")
        return exit_code(interrupt)


def _diff(args: argparse.Namespace) -> int:
    from rich.console import Console

    from passes.one_line import rich_text

    # A spinner on a terminal's stderr (nothing where it is not one): VMamba-T's naive export against itself was
    # 44 s of silence, two reads and checks of 76,529 nodes and the diff (dev 2-core, adv20).
    with Console(stderr=True).status("") as spinner:
        def status(text: str) -> None:   # the spinner named: rich draws the text at once, not at its next tick
            spinner.update(text, spinner="dots")

        try:
            if args.output:   # before the work, so a bad destination costs nothing and leaves nothing
                check_destination(args.output)
            status(f"reading and checking {rich_text(args.before)}")
            before = _load(args.before)
            status(f"reading and checking {rich_text(args.after)}")
            after = _load(args.after)
            if args.output:   # the models and their weights files (not read here, but the models' own)
                check_not_read(args.output, [("model", args.before), ("model", args.after)]
                               + _data_files(args.before, before) + _data_files(args.after, after))
        except (DiffError, DestinationError) as error:
            spinner.stop()
            sys.stderr.write(f"error: {error}\n")
            return 2
        status(f"comparing {len(before.graph.node):,} and {len(after.graph.node):,} nodes")
        description, before_ops, after_ops = diff_models(before, after)
    if args.text or not args.output:
        sys.stdout.write(text_report(args.before, args.after, description, before_ops, after_ops))
    if args.output:
        from passes.report.html import render_diff_html

        page = render_diff_html(args.before, args.after, before_ops, after_ops, description)
        try:
            write_text_atomic(args.output, page)
        except OSError as error:
            sys.stderr.write(f"error: cannot write {printable(args.output)}: {one_line(error)}\n")
            return 2
        if not args.text:
            print(f"wrote {printable(args.output)}")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

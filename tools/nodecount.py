"""Node counts and op histograms of ONNX models, side by side.

    python -m tools.nodecount naive.onnx rolled.onnx [--json | --csv]

Ops are rows (total first, then by largest count), models are columns. Only the top-level
graph is counted (a Loop body counts as its one Loop node). Fast on 100k-node models: plain
``onnx.load`` without external data and without onnx-graphsurgeon.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter
from pathlib import Path

from passes.files import input_file_problem
from passes.graph_io import InputError, read_structure
from passes.one_line import OneLineArgumentParser, printable


class CountError(Exception):
    pass


def count_ops(path: str | Path) -> Counter:
    path = Path(path)
    problem = input_file_problem(path, "model")
    if problem:
        raise CountError(problem)
    try:
        model = read_structure(path)
    except InputError as error:
        raise CountError(str(error)) from None
    counts = Counter(node.op_type for node in model.graph.node)
    for op in counts:   # proto2 hands over an op type that is not UTF-8 as bytes: no row can sort or print it
        if isinstance(op, bytes):
            raise CountError(f"{printable(path)}: an op type holds bytes that are not UTF-8 text: "
                             f"{printable(repr(op[:60]))}")
    return counts


def histogram_rows(histograms: dict[str, Counter]) -> list[tuple[str, list[int]]]:
    """[("total", [n, m]), (op, [count per model]), ...] sorted by largest count, then name."""
    models = list(histograms)
    ops = set().union(*histograms.values()) if histograms else set()
    ordered = sorted(ops, key=lambda op: (-max(histograms[m][op] for m in models), op))
    rows = [("total", [sum(histograms[m].values()) for m in models])]
    rows += [(op, [histograms[m][op] for m in models]) for op in ordered]
    return rows


def to_json(histograms: dict[str, Counter]) -> str:
    return json.dumps({
        "models": {name: {"nodes": sum(counts.values()), "ops": dict(sorted(counts.items()))}
                   for name, counts in histograms.items()}
    }, indent=2)


# A spreadsheet opening the CSV runs a cell that starts with one of these as a formula (`=HYPERLINK(..)` as an op
# type); no ONNX op type or plain path starts so, so a leading apostrophe (what spreadsheets read as "text") costs
# real data nothing.
# (A tab or carriage return, the other two such starts, never reaches a cell: printable escapes them first.)
_FORMULA_STARTS = ("=", "+", "-", "@")


def _csv_text(text: str) -> str:
    # Escaped as everywhere else (the table does the same): a raw ESC or newline from a model would reach a
    # terminal or a line-based reader of the CSV.
    shown = printable(text)
    return "'" + shown if shown.startswith(_FORMULA_STARTS) else shown


def to_csv(histograms: dict[str, Counter]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["op", *map(_csv_text, histograms)])
    for op, counts in histogram_rows(histograms):
        writer.writerow([_csv_text(op), *counts])
    return buffer.getvalue()


def print_table(histograms: dict[str, Counter]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    table.add_column("op")
    for name in histograms:
        table.add_column(Text(printable(name)), justify="right")   # text from outside: never markup
    for index, (op, counts) in enumerate(histogram_rows(histograms)):
        cells = [f"{count:,}" if count else "" for count in counts]
        table.add_row(Text(printable(op), style="bold" if index == 0 else ""), *cells, end_section=index == 0)
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.nodecount", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help=".onnx files")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON: {models: {path: {nodes, ops}}}")
    output.add_argument("--csv", action="store_true", help="print CSV: op, one column per model; total row first")
    args = parser.parse_args(argv)
    try:
        histograms = {path: count_ops(path) for path in args.models}
    except CountError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    if args.json:
        sys.stdout.write(to_json(histograms) + "\n")
    elif args.csv:
        sys.stdout.write(to_csv(histograms))
    else:
        print_table(histograms)
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

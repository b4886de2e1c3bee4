"""Does the compiler's own work grow linearly with graph size? Time it on synthetic scans.

    python -m tools.bench_scaling --lengths 1568,3136,6272,12544 --channels 8

Builds one unrolled scan of each length (about 11 nodes per step, like a real export), then
times onnx-graphsurgeon import, pattern matching and the whole reroll-scans pass, and prints
microseconds per node: flat columns mean linear scaling.
"""
from __future__ import annotations

import argparse
import sys
import time

import onnx
import onnx_graphsurgeon as gs
from rich.console import Console
from rich.table import Table

from passes.base import PassContext
from passes.one_line import OneLineArgumentParser, positive_int
from passes.reroll_scans import RerollScans
from patterns.linear_recurrence import find_recurrences
from tools.synthetic_scans import ScanSpec, unrolled_scan_model


def measure(length: int, channels: int) -> dict:
    model = unrolled_scan_model(ScanSpec(length=length, channels=channels, state=1))
    nodes = len(model.graph.node)
    started = time.perf_counter()
    graph = gs.import_onnx(model)
    imported = time.perf_counter()
    report = find_recurrences(graph)
    matched = time.perf_counter()
    assert len(report.recurrences) == 1, report.rejections
    graph = gs.import_onnx(model)
    started_pass = time.perf_counter()
    RerollScans(form="parallel", chunk=16).run(graph, PassContext(opset=17))
    finished = time.perf_counter()
    return {"length": length, "nodes": nodes, "import_s": imported - started, "match_s": matched - imported,
            "reroll_s": finished - started_pass}


# About 11 nodes a step: 10^5 steps is a 1.1M-node graph, 14x VMamba-T's naive export; channels are a tensor
# dimension of the synthetic inputs. Past these the model was built until protobuf refused a dimension past 2^63
# ('--lengths 99999999999999999999': a ValueError traceback, exit 1, adv22) or memory ran out.
MAX_LENGTH = 100_000
MAX_CHANNELS = 65_536


def _bounded(text: str, high: int) -> int:
    value = positive_int(text)
    if value > high:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {high:,}, got '{text}'")
    return value


def _lengths(text: str) -> list[int]:
    """argparse type: comma-separated scan lengths, each an integer from 1 to MAX_LENGTH."""
    return [_bounded(part, MAX_LENGTH) for part in text.split(",")]


def _channels(text: str) -> int:
    """argparse type: the scan's channels, an integer from 1 to MAX_CHANNELS."""
    return _bounded(text, MAX_CHANNELS)


def main(argv=None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.bench_scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=_lengths, default=[1568, 3136, 6272, 12544], help="comma-separated scan lengths")
    parser.add_argument("--channels", type=_channels, default=8)
    args = parser.parse_args(argv)
    table = Table(title="compiler work vs graph size (one synthetic unrolled scan)")
    for column in ("steps L", "nodes", "import s", "match s", "reroll-scans s", "µs/node import", "µs/node match",
                   "µs/node reroll"):
        table.add_column(column, justify="right")
    for length in args.lengths:
        row = measure(length, args.channels)
        per = lambda key: f"{1e6 * row[key] / row['nodes']:.1f}"
        table.add_row(str(length), f"{row['nodes']:,}", f"{row['import_s']:.2f}", f"{row['match_s']:.2f}",
                      f"{row['reroll_s']:.2f}", per("import_s"), per("match_s"), per("reroll_s"))
    Console().print(table)
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

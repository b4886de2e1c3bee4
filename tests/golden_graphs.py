"""Golden graph records: what a pipeline makes of a model, kept in tests/golden/ and diffed readably.

A record holds the op histogram and node count of the output, the node count after every
pass, the number of scans re-rolled and a bound on the numerical error (rel L2 of the
output against the export's reference npz). A mismatch fails with one line per difference:

    nodes: 479 -> 480 (+1)
    Relu: 0 -> 1 (+1)
    after pass 4 simplify: 479 -> 480 nodes (+1)

Accept a deliberate change with ``pytest --update-golden``; nothing else writes a golden file (not an
environment variable left set, not a missing file: that is a failure, so a typo in a name or a
lost file never passes by recording whatever the code does today).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).parent / "golden"
# A new bound is this many times the measured error (rounded up to one significant digit),
# so float noise from another ONNX Runtime build does not fail the test, but a real loss does.
ERROR_BOUND_FACTOR = 10
ERROR_BOUND_FLOOR = 1e-6


def update_requested(request) -> bool:
    """Only the explicit ``--update-golden`` switch (declared in tests/conftest.py)."""
    try:
        return bool(request.config.getoption("--update-golden"))
    except ValueError:  # run without tests/conftest.py
        return False


def error_bound(measured: float) -> float:
    value = max(measured * ERROR_BOUND_FACTOR, ERROR_BOUND_FLOOR)
    exponent = math.floor(math.log10(value))
    return math.ceil(value / 10 ** exponent) * 10 ** exponent


def graph_record(model: str, report: dict[str, Any]) -> dict[str, Any]:
    """The golden record of one ``passes.apply`` run, from its report.json."""
    run = report["run"]
    return {
        "model": model,
        "pipeline": report["pipeline_name"],
        "pipeline_text": report["pipeline"],
        "nodes_input": run["nodes_before"],
        "nodes": run["nodes_after"],
        "rerolled_scans": report["totals"]["rerolled_scans"],
        "nodes_after_each_pass": [f"{entry['index']} {entry['name']}: {entry['nodes_after']}" for entry in run["passes"]],
        "op_histogram": dict(sorted(run["ops_after"].items())),
        "rel_l2": report["verification"]["rel_l2"],
    }


def _change(before: int, after: int) -> str:
    return f"{before:,} -> {after:,} ({after - before:+,})"


def golden_differences(golden: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """One readable line per difference; empty when the record matches the golden one."""
    lines = []
    if golden["pipeline_text"] != actual["pipeline_text"]:
        lines.append(f"pipeline text: {golden['pipeline_text']} -> {actual['pipeline_text']}")
    for key in ("nodes_input", "nodes", "rerolled_scans"):
        if golden[key] != actual[key]:
            lines.append(f"{key.replace('_', ' ')}: {_change(golden[key], actual[key])}")
    expected_ops, actual_ops = golden["op_histogram"], actual["op_histogram"]
    for op in sorted(set(expected_ops) | set(actual_ops)):
        before, after = expected_ops.get(op, 0), actual_ops.get(op, 0)
        if before != after:
            lines.append(f"{op}: {_change(before, after)}")
    expected_passes, actual_passes = golden["nodes_after_each_pass"], actual["nodes_after_each_pass"]
    for expected, got in zip(expected_passes, actual_passes):
        expected_name, _, expected_count = expected.rpartition(": ")
        got_name, _, got_count = got.rpartition(": ")
        if expected_name != got_name:
            lines.append(f"pass {expected_name} is now {got_name}")
        elif expected_count != got_count:
            lines.append(f"after pass {got_name}: {_change(int(expected_count), int(got_count))} nodes")
    if len(expected_passes) != len(actual_passes):
        lines.append(f"passes: {len(expected_passes)} -> {len(actual_passes)}")
    if actual["rel_l2"] > golden["rel_l2_bound"]:
        lines.append(f"rel L2 vs reference: {actual['rel_l2']:.3g} > bound {golden['rel_l2_bound']:.3g} "
                     f"(was {golden['rel_l2']:.3g})")
    return lines


def check_golden(name: str, actual: dict[str, Any], update: bool, directory: Path = GOLDEN_DIR) -> None:
    """Compare with ``directory/name.json``; write it only when asked to (``update``)."""
    path = directory / f"{name}.json"
    if update:
        record = dict(actual, rel_l2_bound=error_bound(actual["rel_l2"]))
        path.write_text(json.dumps(record, indent=2) + "\n")
        return
    if not path.exists():
        raise AssertionError(f"golden file {path} is missing; record it deliberately with "
                             "pytest tests/test_golden_graphs.py --update-golden")
    golden = json.loads(path.read_text())
    differences = golden_differences(golden, actual)
    if differences:
        raise AssertionError(
            f"graph regression for {name} ({path.relative_to(path.parents[1])}):\n  "
            + "\n  ".join(differences)
            + "\naccept a deliberate change with: pytest tests/test_golden_graphs.py --update-golden")

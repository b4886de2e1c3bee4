"""Write a report directory: ``report.json`` (schema: docs/REPORT_SCHEMA.md) and ``index.html``.

``passes.apply`` collects the run into a plain dict as it goes; ``write_report_dir`` adds
what is derived (totals, per-pass numbering, region summaries, intermediate paths) and
writes both files atomically and together (both written in full before either replaces the old one), so
a reader never sees half a report, nor this run's report.json beside another run's index.html, also
after a failure or an interrupt.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from passes.files import atomic_targets, check_folder_destination, folders_made
from passes.report.grouping import regions_summary
from passes.report.html import render_html
from passes.report.schema import SCHEMA_VERSION


def _totals(run: Mapping[str, Any], recorder_seconds: float | None) -> dict[str, Any]:
    passes = run.get("passes", [])
    totals = {
        "passes": len(passes),
        "passes_changed": sum(1 for p in passes if p["changed"]),
        "nodes_before": run["nodes_before"],
        "nodes_after": passes[-1]["nodes_after"] if passes else run["nodes_before"],
        "pass_seconds": round(sum(p["seconds"] for p in passes), 4),
        "check_seconds": round(sum(p["check_seconds"] for p in passes), 4),
        "verify_seconds": round(sum(p["verify_seconds"] for p in passes), 4),
        # The pipelines' headline number: scans found unrolled and rolled back up.
        "rerolled_scans": sum(int(p["stats"].get("rerolled", 0)) for p in passes
                              if isinstance(p["stats"].get("rerolled", 0), int)),
    }
    if recorder_seconds is not None:
        totals["report_seconds"] = round(recorder_seconds, 4)
    return totals


def complete_report(report: dict[str, Any], region_descriptions: Mapping[int, dict] | None = None,
                    intermediates: Mapping[int, str] | None = None,
                    recorder_seconds: float | None = None) -> dict[str, Any]:
    """The report with its derived fields filled in (a new dict; ``report`` is not changed)."""
    completed = {"schema_version": SCHEMA_VERSION, **report}
    run = report.get("run")
    if run is not None:
        run = dict(run)
        passes = []
        for index, entry in enumerate(run.get("passes", [])):
            entry = dict(entry, index=index + 1)
            if entry.get("verification") is not None:
                entry["verification"] = dict(entry["verification"], tolerance=report.get("tolerance"))
            if region_descriptions is not None and index in region_descriptions:
                entry["regions"] = regions_summary(region_descriptions[index])
            if intermediates and index in intermediates:
                entry["intermediate"] = intermediates[index]
            passes.append(entry)
        run["passes"] = passes
        completed["run"] = run
        completed["totals"] = _totals(run, recorder_seconds)
    verification = report.get("verification")
    if verification is not None and "tolerance" not in verification:
        completed["verification"] = dict(verification, tolerance=report.get("tolerance"))
    return completed


REPORT_FILES = ("report.json", "index.html")


def check_report_dir(directory: str | os.PathLike) -> Path:
    """Before the work: DIR is a folder (or can be made) that takes files, and its report.json and
    index.html are absent or regular files. Raises ``passes.files.DestinationError``."""
    return check_folder_destination(directory, "--report folder", REPORT_FILES)


def write_report_dir(directory: str | os.PathLike, report: dict[str, Any],
                     region_descriptions: Mapping[int, dict] | None = None,
                     intermediates: Mapping[int, str] | None = None,
                     recorder_seconds: float | None = None) -> dict[str, Any]:
    """Write DIR/report.json and DIR/index.html; returns the completed report.
    Raises ``passes.files.DestinationError`` (an OSError) when DIR cannot take them."""
    directory = check_report_dir(directory)
    completed = complete_report(report, region_descriptions, intermediates, recorder_seconds)
    json_text = json.dumps(completed, indent=2, default=str) + "\n"
    html = render_html(completed, region_descriptions or {})
    # A failure or Ctrl-C while writing leaves no empty folder. Both files are written in full before
    # either is put in place (a full disk refused index.html after report.json had replaced the old one:
    # a new report.json beside the previous run's page), then renamed together, interrupts held.
    with folders_made(directory), atomic_targets(*(directory / name for name in REPORT_FILES),
                                                 what="report file") as temporaries:
        for temporary, text in zip(temporaries, (json_text, html)):
            # backslashreplace: a path that is not UTF-8 (a surrogate such as \udcff) is written as its escape
            with open(temporary, "w", encoding="utf-8", errors="backslashreplace") as handle:
                handle.write(text)
    return completed

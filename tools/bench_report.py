"""Report side of tools.bench: derived figures (medians, ratios), machine facts, markdown, JSON, PNG.

Pure functions over the raw result dict that tools.bench builds; no timing happens here.
The result dict (also what the JSON holds) looks like::

    {"model": "micro-digits", "threads": 2, "batches": [1, 16], "machine": {...},
     "rows": [{"key": "naive", "label": ..., "kind": "onnx", "nodes": 4219, "session_s": 3.1,
               "times": {"1": [s, s, ...], "16": [...]},       # seconds per run, one per round
               "skipped": {"16": "reason"}, "errors": {"1": {"max_abs": .., "rel_l2": ..}},
               "agreement": {"16": 1.0}, "digits_top1": 0.98}, ...],
     "ablation": [...same row shape...], "flops": {...}, ...}
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
from pathlib import Path

from passes.files import atomic_target, write_text_atomic
from passes.one_line import printable

NA = "–"


def _strings_in(value):
    """Every string of a JSON value, keys included: what a result read back (--from-json) puts in the docs."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings_in(key)
            yield from _strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_in(item)


def unsafe_string_in(value) -> str | None:
    """The first string of a JSON value (keys included) holding a control character or an HTML comment
    marker, or None: a result read back (--from-json) may come from anyone, and its strings go into the
    markdown between comment markers (tools.bench and tools.bench_mamba refuse such a file)."""
    return next((text for text in _strings_in(value)
                 if printable(text, limit=None) != text or "<!--" in text or "-->" in text), None)


# ---------------------------------------------------------------------------------- machine
def cpu_model_name(cpuinfo: str | None = None) -> str:
    """'model name' from /proc/cpuinfo (first core), else platform.processor()."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or "unknown CPU")


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(threads: int) -> dict:
    import numpy
    import onnxruntime
    import torch

    return {
        "cpu": cpu_model_name(),
        "cores": os.cpu_count(),
        "threads": threads,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_average_start": load_average(),
    }


def machine_line(machine: dict) -> str:
    load = machine.get("load_average_start"), machine.get("load_average_end")
    load_text = ""
    if load[0]:
        load_text = f"; load average (1/5/15 min) {'/'.join(f'{v:.2f}' for v in load[0])} at start"
        if load[1]:
            load_text += f", {'/'.join(f'{v:.2f}' for v in load[1])} at end"
    return (f"{machine['cpu']}, {machine['cores']} cores, {machine['threads']} threads; "
            f"ONNX Runtime {machine['onnxruntime']}, PyTorch {machine['torch']}, numpy {machine['numpy']}, "
            f"Python {machine['python']}{load_text}")


# ---------------------------------------------------------------------------------- figures
def median_seconds(row: dict, batch: int) -> float | None:
    times = row.get("times", {}).get(str(batch))
    return statistics.median(times) if times else None


def images_per_second(row: dict, batch: int) -> float | None:
    t = median_seconds(row, batch)
    return batch / t if t else None


def seconds_per_image(row: dict, batch: int) -> float | None:
    t = median_seconds(row, batch)
    return t / batch if t else None


def ratio(row: dict, baseline: dict | None, batch: int) -> float | None:
    """Speed of row relative to baseline at one batch (img/s over img/s = baseline time over row time)."""
    if baseline is None:
        return None
    mine, theirs = median_seconds(row, batch), median_seconds(baseline, batch)
    if not mine or not theirs:
        return None
    return theirs / mine


def derive(result: dict) -> dict:
    """Add medians, img/s, s/img and ratios to naive and seed to every row (in place); returns result."""
    by_key = {row["key"]: row for row in result["rows"]}
    naive, seed, fork = by_key.get("naive"), by_key.get("seed"), by_key.get("fork")
    for row in result["rows"] + result.get("ablation", []):
        figures = {}
        for batch in result["batches"]:
            times = row.get("times", {}).get(str(batch)) or []
            figures[str(batch)] = {
                "median_s": median_seconds(row, batch),
                "min_s": min(times) if times else None,
                "max_s": max(times) if times else None,
                "img_per_s": images_per_second(row, batch),
                "s_per_img": seconds_per_image(row, batch),
                "x_naive": ratio(row, naive, batch),
                "x_seed": ratio(row, seed, batch),
                "x_fork": ratio(row, fork, batch),
            }
        row["figures"] = figures
    cpu = by_key.get("cpu")
    for row in result.get("ablation", []):
        for batch in result["batches"]:
            row["figures"][str(batch)]["x_cpu"] = ratio(row, cpu, batch)
    return result


def best_row(result: dict, batch: int) -> dict | None:
    timed = [row for row in result["rows"] if images_per_second(row, batch)]
    return max(timed, key=lambda row: images_per_second(row, batch)) if timed else None


# ---------------------------------------------------------------------------------- formatting
def fmt_rate(value: float | None) -> str:
    if value is None:
        return NA
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return NA
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return NA
    return f"{value:.3g}x" if value < 100 else f"{value:,.0f}x"


def fmt_error(value: float | None) -> str:
    return NA if value is None else f"{value:.1e}"


def fmt_fraction(value: float | None) -> str:
    return NA if value is None else f"{100 * value:.1f}%"


def cell_for_batch(row: dict, batch: int, value: str) -> str:
    """The value, or the reason the row did not run at this batch."""
    reason = row.get("skipped", {}).get(str(batch))
    return f"n/a ({reason})" if reason and value == NA else value


# ---------------------------------------------------------------------------------- markdown
def section_markers(tag: str) -> tuple[str, str]:
    return f"<!-- bench:{tag} -->", f"<!-- /bench:{tag} -->"


def section_tag(model: str, threads: int) -> str:
    return f"{model}:{threads}-core"


def replace_section(document: str, tag: str, body: str) -> str:
    """Put body between the tag's markers (markers included), leaving everything else untouched.

    Without markers the section is appended at the end, after one blank line.
    """
    begin, end = section_markers(tag)
    section = f"{begin}\n{body.strip()}\n{end}"
    start = document.find(begin)
    if start >= 0:
        stop = document.find(end, start)
        if stop < 0:
            raise ValueError(f"marker {begin!r} has no closing {end!r}; fix the file by hand")
        return document[:start] + section + document[stop + len(end):]
    if not document.strip():
        return "# Benchmarks\n\n" + section + "\n"
    return document.rstrip("\n") + "\n\n" + section + "\n"


def write_section(path: Path, tag: str, body: str) -> None:
    old = path.read_text() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, replace_section(old, tag, body))


def _table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def main_table(result: dict) -> list[str]:
    batches = result["batches"]
    digits = any(row.get("digits_top1") is not None for row in result["rows"])
    agreement_batch = result.get("agreement_batch")
    fork = any(row["key"] == "fork" for row in result["rows"])
    header = ["row", "nodes", "session"]
    for b in batches:
        header += [f"img/s b{b}", f"s/img b{b}", f"vs naive b{b}", f"vs seed b{b}"] + ([f"vs fork b{b}"] if fork else [])
    for b in batches:
        header += [f"max abs err b{b}", f"rel L2 b{b}"]
    if digits:
        header.append(f"digits top-1 ({result.get('digits_images', 500)} img)")
    if agreement_batch:
        header.append(f"top-1 agree b{agreement_batch}")
    lines = []
    for row in result["rows"]:
        cells = [row["label"], f"{row['nodes']:,}" if row.get("nodes") else NA,
                 fmt_seconds(row.get("session_s"))]
        for b in batches:
            f = row["figures"][str(b)]
            cells += [cell_for_batch(row, b, fmt_rate(f["img_per_s"])), fmt_seconds(f["s_per_img"]),
                      fmt_ratio(f["x_naive"]), fmt_ratio(f["x_seed"])] + ([fmt_ratio(f.get("x_fork"))] if fork else [])
        for b in batches:
            err = row.get("errors", {}).get(str(b), {})
            cells += [fmt_error(err.get("max_abs")), fmt_error(err.get("rel_l2"))]
        if digits:
            cells.append(fmt_fraction(row.get("digits_top1")))
        if agreement_batch:
            cells.append(fmt_fraction(row.get("agreement", {}).get(str(agreement_batch))))
        lines.append(cells)
    return _table(header, lines, ["l"] + ["r"] * (len(header) - 1))


def ablation_table(result: dict) -> list[str]:
    batches = result["batches"]
    header = ["cpu pipeline variant", "nodes"]
    for b in batches:
        header += [f"img/s b{b}", f"vs cpu b{b}"]
    header.append("pipeline")
    lines = []
    cpu = next((row for row in result["rows"] if row["key"] == "cpu"), {})
    for row in result.get("ablation", []):
        same = row.get("graph_signature") and row.get("graph_signature") == cpu.get("graph_signature")
        label = row["label"] + (" (same graph as cpu)" if same else "")
        cells = [label, f"{row['nodes']:,}" if row.get("nodes") else NA]
        for b in batches:
            f = row["figures"][str(b)]
            cells += [cell_for_batch(row, b, fmt_rate(f["img_per_s"])), fmt_ratio(f.get("x_cpu"))]
        cells.append(f"`{row.get('pipeline', '')}`")
        lines.append(cells)
    return _table(header, lines, ["l"] + ["r"] * (len(header) - 2) + ["l"])


def under_load(machine: dict) -> bool:
    """Other jobs ran beside the benchmark: the 1-minute load before it, or after it less its own threads, was high."""
    cores = machine.get("cores") or 0
    start = (machine.get("load_average_start") or [0.0])[0]
    end = (machine.get("load_average_end") or [0.0])[0] - machine.get("threads", 0)
    return bool(cores) and max(start, end) > 1.25 * cores


STALE_NOTE = re.compile(r"compiled by an earlier version of the compiler \(sources (\w+), now (\w+)\)")


def row_notes(rows: list[dict]) -> list[str]:
    """One line per row note; 'compiled by an earlier compiler' notes grouped into one line."""
    lines, stale = [], {}
    for row in rows:
        note = row.get("note") or ""
        match = STALE_NOTE.search(note)
        if match:
            stale.setdefault(match.groups(), []).append(row["label"])
            note = STALE_NOTE.sub("", note).strip("; ")
        if " | " in note:   # a list of violation kinds, cut off: the first kind says enough
            note = note.split(" | ")[0] + "; ..."
        if note:
            lines.append(f"- {row['label']}: {note}")
    for (then, now), labels in stale.items():
        lines.append(f"- compiled by an earlier version of the compiler (passes/patterns/pipelines sources {then}; "
                     f"{now} at the time of the run), reused with --allow-stale: {', '.join(labels)}")
    return lines


def noise_line(result: dict) -> str | None:
    """How much the rounds of one row disagreed (max/min), over all timed rows: the noise floor of the table."""
    spreads = []
    for row in result["rows"] + result.get("ablation", []):
        for times in row.get("times", {}).values():
            if len(times) > 1 and min(times) > 0:
                spreads.append(max(times) / min(times))
    if not spreads:
        return None
    return (f"Noise: the slowest round of a row took {min(spreads):.2f}x to {max(spreads):.2f}x its fastest "
            f"(median {statistics.median(spreads):.2f}x over {len(spreads)} row/batch pairs); differences smaller "
            "than that are not resolved by this run.")


def limit_lines(result: dict) -> list[str]:
    flops = result.get("flops")
    if not flops or not flops.get("limit_s_per_img"):
        return []
    limit = flops["limit_s_per_img"]
    lines = [f"FLOP limit: {flops['flops_per_img'] / 1e9:.3g} GFLOP/img ({flops['method']}) at the measured "
             f"float32 GEMM rate of {flops['gemm_flops_per_s'] / 1e9:.0f} GFLOP/s ({flops['gemm_method']}) "
             f"= **limit {fmt_seconds(limit)}/img**."]
    by_key = {row["key"]: row for row in result["rows"]}
    for batch in result["batches"]:
        parts = []
        best = best_row(result, batch)
        for row in [by_key.get("cpu"), best]:
            if row is None or (parts and row is by_key.get("cpu")):
                continue
            per_img = seconds_per_image(row, batch)
            if per_img:
                parts.append(f"{row['label']} at {fmt_seconds(per_img)}/img = {per_img / limit:.3g}x the limit")
        if parts:
            best_note = f" (best row: {best['label']})" if best and best["key"] != "cpu" else ""
            lines.append(f"- batch {batch}: " + "; ".join(dict.fromkeys(parts)) + best_note)
    return lines


def spinning_method(result: dict) -> str:
    """How a run with ONNX Runtime's spinning on kept its sessions apart (empty for a run with it off)."""
    if not result.get("ort_spinning"):
        return ""
    if "settle_s" not in result:    # runs before the worker processes: every session in one process
        return " (ONNX Runtime's default; every session in one process)"
    return (f" (ONNX Runtime's default; each ONNX Runtime row in a process of its own, timed there, and a "
            f"{result['settle_s']:g} s pause before every run so that the previous row's spinning threads are idle)")


def markdown_section(result: dict) -> str:
    machine = result["machine"]
    lines = [f"### {model_title(result)} on {machine['cpu']} ({result['threads']} threads)", ""]
    rewritten = f" (section rewritten from its JSON on {result['rewritten']})" if result.get("rewritten") else ""
    lines.append(f"Generated by `{result['command']}` on {result['date']}{rewritten}. Machine: {machine_line(machine)}.")
    lines.append("")
    rounds = f"{result['repeats']} round{'s' if result['repeats'] != 1 else ''}"
    lines.append(f"Method: one warm-up run per row and batch, then {rounds} in which every row runs "
                 "once (interleaved, row order rotated each round); figures are medians of the rounds. ONNX Runtime "
                 f"{machine['onnxruntime']} CPU provider, intra_op_num_threads={result['threads']}, "
                 f"session.intra_op.allow_spinning={'1' if result.get('ort_spinning') else '0'}"
                 f"{spinning_method(result)}, default graph optimisations; PyTorch eager with torch.set_num_threads({result['threads']}). 'session' is the "
                 "ONNX Runtime session-creation time; errors are against PyTorch with the float64 scan "
                 f"({result.get('reference_note', '')}).")
    if any(row.get("kind") == "openvino" for row in result["rows"]):
        lines.append(f"OpenVINO {result.get('openvino', '')} CPU plugin: the ONNX file read as is, compiled for a static "
                     f"batch, INFERENCE_NUM_THREADS={result['threads']}, one stream, PERFORMANCE_HINT=LATENCY; "
                     "'f32' rows set INFERENCE_PRECISION_HINT=f32, the 'default' row keeps the plugin's choice "
                     "(errors say what it costs); 'session' is read + compile at batch 1.")
    lines.append("")
    lines += main_table(result)
    if under_load(machine):
        lines += ["", f"**Measured under load** (1-minute load average above 1.25 x the {machine['cores']} cores, "
                      "this run's own threads not counted: other jobs shared the machine); compare rows within this "
                      "table only, and take absolute figures as pessimistic."]
    noise = noise_line(result)
    if noise:
        lines += ["", noise]
    notes = row_notes(result["rows"])
    if notes:
        lines += [""] + notes
    limit = limit_lines(result)
    if limit:
        lines += [""] + limit
    if result.get("ablation"):
        lines += ["", "Ablation of the cpu pipeline (one rewrite removed or swapped per variant; timed in the same "
                  "interleaved rounds as the rows above):", ""]
        lines += ablation_table(result)
        notes = row_notes(result["ablation"])
        if notes:
            lines += [""] + notes
    artefacts = [p for p in (result.get("json_path"), result.get("png_path")) if p]
    if artefacts:
        lines += ["", "Raw timings: " + ", ".join(f"[{Path(p).name}]({_rel_link(p, result.get('md_path'))})"
                                                   for p in artefacts) + "."]
    return "\n".join(lines)


def model_title(result: dict) -> str:
    overrides = result.get("config_overrides") or {}
    if not overrides:
        return result["model"]
    text = ", ".join(f"{k} {','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in overrides.items())
    return f"{result['model']} ({text})"


def _rel_link(path: str, md_path: str | None) -> str:
    if not md_path:
        return path
    try:
        return os.path.relpath(Path(path).resolve(), Path(md_path).resolve().parent)
    except ValueError:
        return path


# ---------------------------------------------------------------------------------- JSON, PNG
def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result, indent=1, default=_json_default))


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_png(path: Path, result: dict) -> None:
    """Grouped bar chart: img/s per row (log scale), one bar per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"] + result.get("ablation", [])
    batches = result["batches"]
    width = 0.8 / len(batches)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.2))
    for i, batch in enumerate(batches):
        xs, ys = [], []
        for j, row in enumerate(rows):
            rate = images_per_second(row, batch)
            if rate:
                xs.append(j + (i - (len(batches) - 1) / 2) * width)
                ys.append(rate)
        bars = ax.bar(xs, ys, width, label=f"batch {batch}")
        for x, y in zip(xs, ys):
            ax.text(x, y, fmt_rate(y), ha="center", va="bottom", fontsize=7)
    if result.get("ablation"):
        ax.axvline(len(result["rows"]) - 0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    # labels as text, never TeX: a JSON read back (--from-json) may hold '$\\frac$' (a traceback as mathtext)
    ax.set_xticklabels([row["label"] for row in rows], rotation=25, ha="right", fontsize=8, parse_math=False)
    ax.set_ylabel("images / s (log scale)")
    machine = result["machine"]
    ax.set_title(f"{model_title(result)}: {machine['cpu']}, {result['threads']} threads", fontsize=9, parse_math=False)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path, ".png") as temporary:   # the suffix tells savefig the format
        fig.savefig(temporary, dpi=110)
    plt.close(fig)

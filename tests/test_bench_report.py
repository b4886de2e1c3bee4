"""tools.bench_report on hand-made results, in process, no benchmark run: the medians, the "x faster" ratios (the
baseline's time over the row's, so a faster row is above 1x), the number formats at their boundaries, the tables
cell by cell, the FLOP-limit lines, the load and noise lines, the notes, and the section as written into a
markdown file. test_bench checks the same on one real run, by consistency with its raw times; here every expected
figure is worked out from the times by hand, so a flipped ratio or a wrong column cannot pass."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tools import bench_report as br

NA = "–"


def rows():
    return [
        {"key": "naive", "label": "naive", "kind": "onnx", "nodes": 4219, "session_s": 3.1,
         "times": {"1": [0.5, 0.3, 0.4], "16": [3.2, 3.2]},
         "errors": {"1": {"max_abs": 1.234e-6, "rel_l2": 5.67e-8}}, "agreement": {"16": 1.0}, "digits_top1": 0.98},
        {"key": "fork", "label": "fork", "kind": "onnx", "nodes": 1234, "session_s": 0.0123,
         "times": {"1": [0.2]}, "skipped": {"16": "out of memory"}, "agreement": {"16": 0.5}},
        {"key": "seed", "label": "seed", "kind": "onnx", "nodes": 900, "session_s": 0.5,
         "times": {"1": [0.12, 0.1, 0.08], "16": [0.8]}, "digits_top1": 0.5},
        {"key": "cpu", "label": "cpu", "kind": "onnx", "nodes": 800, "session_s": 0.25,
         "times": {"1": [0.05, 0.05], "16": [0.4, 0.6]}, "graph_signature": "abc"},
        {"key": "fused", "label": "fused", "kind": "onnx", "times": {"1": [0.0625], "16": [0.32]}},
    ]


def ablation():
    return [{"key": "cpu-no-x", "label": "cpu without x", "nodes": 850, "times": {"1": [0.1], "16": [1.0]},
             "pipeline": "a,b"},
            {"key": "cpu-same", "label": "cpu again", "times": {"1": [0.025]}, "skipped": {"16": "static"},
             "graph_signature": "abc", "pipeline": "cpu"}]


def result(**extra):
    value = {"model": "micro-digits", "threads": 2, "batches": [1, 16], "rows": rows(), "ablation": ablation(),
             "agreement_batch": 16, "digits_images": 20}
    value.update(extra)
    return br.derive(value)


# ------------------------------------------------------------------------------------------- figures
def test_medians_rates_and_per_image_times():
    naive = rows()[0]
    assert br.median_seconds(naive, 1) == 0.4 and br.median_seconds(naive, 16) == 3.2
    assert br.median_seconds(rows()[1], 16) is None and br.median_seconds({}, 1) is None
    assert br.median_seconds({"times": {"1": []}}, 1) is None
    assert br.images_per_second(naive, 16) == pytest.approx(16 / 3.2) and br.images_per_second(rows()[1], 16) is None
    assert br.seconds_per_image(naive, 16) == pytest.approx(3.2 / 16) and br.seconds_per_image(rows()[1], 16) is None
    assert br.images_per_second({"times": {"1": [0.0]}}, 1) is None   # a zero time is no rate
    assert br.seconds_per_image({"times": {"1": [0.0]}}, 1) is None


def test_a_ratio_is_the_baselines_time_over_the_rows_so_faster_is_above_one():
    naive, seed = rows()[0], rows()[2]
    assert br.ratio(seed, naive, 1) == pytest.approx(0.4 / 0.1) == pytest.approx(4.0)   # seed is 4x faster
    assert br.ratio(naive, seed, 1) == pytest.approx(0.25)
    assert br.ratio(seed, None, 1) is None
    assert br.ratio(rows()[1], naive, 16) is None and br.ratio(naive, rows()[1], 16) is None


def test_derive_adds_every_figure_to_every_row_and_the_ablation():
    value = result()
    figures = {row["key"]: row["figures"] for row in value["rows"] + value["ablation"]}
    assert figures["seed"]["1"] == pytest.approx({
        "median_s": 0.1, "min_s": 0.08, "max_s": 0.12, "img_per_s": 10.0, "s_per_img": 0.1,
        "x_naive": 4.0, "x_seed": 1.0, "x_fork": 2.0})
    assert figures["cpu"]["16"] == pytest.approx({
        "median_s": 0.5, "min_s": 0.4, "max_s": 0.6, "img_per_s": 32.0, "s_per_img": 0.5 / 16,
        "x_naive": 3.2 / 0.5, "x_seed": 0.8 / 0.5, "x_fork": None})
    assert figures["fork"]["16"] == {"median_s": None, "min_s": None, "max_s": None, "img_per_s": None,
                                     "s_per_img": None, "x_naive": None, "x_seed": None, "x_fork": None}
    assert figures["cpu-no-x"]["1"] == pytest.approx({
        "median_s": 0.1, "min_s": 0.1, "max_s": 0.1, "img_per_s": 10.0, "s_per_img": 0.1, "x_naive": 4.0,
        "x_seed": 1.0, "x_fork": 2.0, "x_cpu": 0.5})
    assert figures["cpu-same"]["1"]["x_cpu"] == pytest.approx(2.0) and figures["cpu-same"]["16"]["x_cpu"] is None
    assert figures["cpu-no-x"]["16"]["x_cpu"] == pytest.approx(0.5)
    assert "x_cpu" not in figures["cpu"]["1"]
    no_ablation = br.derive({"batches": [1], "rows": rows()[:1]})
    assert no_ablation["rows"][0]["figures"]["1"]["x_seed"] is None


def test_the_best_row_is_the_one_with_most_images_per_second():
    value = result()
    assert br.best_row(value, 1)["key"] == "cpu"       # 2 / 0.1 = 20 img/s; fused 16 img/s
    assert br.best_row(value, 16)["key"] == "fused"    # 16 / 0.32 = 50 img/s; cpu 32 img/s
    assert br.best_row({"rows": [rows()[1]]}, 16) is None


# ------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("value, text", [
    (None, NA), (1234.6, "1,235"), (100.0, "100"), (99.94, "99.9"), (10.0, "10.0"), (9.994, "9.99"), (1.0, "1.00"),
    (0.99, "0.99"), (0.123456, "0.123")])
def test_fmt_rate(value, text):
    assert br.fmt_rate(value) == text


@pytest.mark.parametrize("value, text", [
    (None, NA), (12.345, "12.35 s"), (1.0, "1.00 s"), (0.9994, "999 ms"), (0.001, "1 ms"), (0.0123456, "12.3 ms"),
    (0.000999, "999 µs"), (2.5e-6, "2.5 µs")])
def test_fmt_seconds(value, text):
    assert br.fmt_seconds(value) == text


@pytest.mark.parametrize("value, text", [
    (None, NA), (4.0, "4x"), (0.25, "0.25x"), (99.94, "99.9x"), (100.0, "100x"), (12345.6, "12,346x")])
def test_fmt_ratio(value, text):
    assert br.fmt_ratio(value) == text


def test_fmt_error_fraction_and_a_skipped_cell():
    assert (br.fmt_error(None), br.fmt_error(1.24e-6), br.fmt_error(0.0)) == (NA, "1.2e-06", "0.0e+00")
    assert (br.fmt_fraction(None), br.fmt_fraction(0.98), br.fmt_fraction(1.0)) == (NA, "98.0%", "100.0%")
    row = {"skipped": {"16": "static batch"}}
    assert br.cell_for_batch(row, 16, NA) == "n/a (static batch)"
    assert br.cell_for_batch(row, 16, "3.00") == "3.00"     # ran after all: the value
    assert br.cell_for_batch(row, 1, NA) == NA
    assert br.cell_for_batch({"skipped": {"16": ""}}, 16, NA) == NA


# ------------------------------------------------------------------------------------------- tables
def test_the_main_table_cell_by_cell():
    lines = br.main_table(result())
    assert lines[0] == ("| row | nodes | session | img/s b1 | s/img b1 | vs naive b1 | vs seed b1 | vs fork b1 | img/s b16 "
                        "| s/img b16 | vs naive b16 | vs seed b16 | vs fork b16 | max abs err b1 | rel L2 b1 | "
                        "max abs err b16 | rel L2 b16 | digits top-1 (20 img) | top-1 agree b16 |")
    assert lines[1] == "|:---|" + "---:|" * 18
    cells = [line.split(" | ") for line in lines[2:]]
    assert lines[2] == ("| naive | 4,219 | 3.10 s | 2.50 | 400 ms | 1x | 0.25x | 0.5x | 5.00 | 200 ms | 1x | 0.25x | – "
                        "| 1.2e-06 | 5.7e-08 | – | – | 98.0% | 100.0% |")
    assert lines[3] == ("| fork | 1,234 | 12.3 ms | 5.00 | 200 ms | 2x | 0.5x | 1x | n/a (out of memory) | – | – | – "
                        "| – | – | – | – | – | – | 50.0% |")
    assert lines[4] == ("| seed | 900 | 500 ms | 10.0 | 100 ms | 4x | 1x | 2x | 20.0 | 50 ms | 4x | 1x | – "
                        "| – | – | – | – | 50.0% | – |")
    assert lines[5].startswith("| cpu | 800 | 250 ms | 20.0 | 50 ms | 8x | 2x | 4x | 32.0 | 31.2 ms | 6.4x | 1.6x | – |")
    assert lines[6].startswith("| fused | – | – | 16.0 | 62.5 ms | 6.4x | 1.6x | 3.2x | 50.0 | 20 ms | 10x | 2.5x | – |")
    assert len(lines) == 7 and all(len(c) == 19 for c in cells)


def test_the_main_table_without_fork_digits_or_agreement():
    value = br.derive({"batches": [1], "rows": [r for r in rows() if r["key"] in ("naive", "seed")]})
    for row in value["rows"]:
        row.pop("digits_top1", None)
    lines = br.main_table(value)
    assert lines[0] == "| row | nodes | session | img/s b1 | s/img b1 | vs naive b1 | vs seed b1 | max abs err b1 | rel L2 b1 |"
    assert lines[2] == "| naive | 4,219 | 3.10 s | 2.50 | 400 ms | 1x | 0.25x | 1.2e-06 | 5.7e-08 |"
    value["rows"][0]["digits_top1"] = 0.5
    assert br.main_table(value)[0].endswith("| digits top-1 (500 img) |")   # 500 images unless said


def test_the_ablation_table_against_cpu():
    lines = br.ablation_table(result())
    assert lines == ["| cpu pipeline variant | nodes | img/s b1 | vs cpu b1 | img/s b16 | vs cpu b16 | pipeline |",
                     "|:---|---:|---:|---:|---:|---:|:---|",
                     "| cpu without x | 850 | 10.0 | 0.5x | 16.0 | 0.5x | `a,b` |",
                     "| cpu again (same graph as cpu) | – | 40.0 | 2x | n/a (static) | – | `cpu` |"]
    value = br.derive({"batches": [1, 16], "rows": [r for r in rows() if r["key"] != "cpu"], "ablation": ablation()})
    value["ablation"][0].pop("pipeline")
    assert br.ablation_table(value)[2:] == ["| cpu without x | 850 | 10.0 | – | 16.0 | – | `` |",
                                            "| cpu again | – | 40.0 | – | n/a (static) | – | `cpu` |"]


def test_table_alignment_row():
    assert br._table(["a", "b"], [["1", "2"]], ["l", "r"]) == ["| a | b |", "|:---|---:|", "| 1 | 2 |"]


# ------------------------------------------------------------------------------------------- lines
@pytest.mark.parametrize("machine, loaded", [
    ({"cores": 2, "threads": 2, "load_average_start": [2.6, 1, 1]}, True),      # 2.6 > 1.25 x 2
    ({"cores": 2, "threads": 2, "load_average_start": [2.5, 1, 1]}, False),     # not above
    ({"cores": 2, "threads": 2, "load_average_start": [0.1], "load_average_end": [4.6]}, True),   # 4.6 - 2 > 2.5
    ({"cores": 2, "threads": 2, "load_average_start": [0.1], "load_average_end": [4.5]}, False),
    ({"cores": 2, "load_average_end": [2.6]}, True),                            # threads unknown: 0
    ({"cores": 0, "threads": 2, "load_average_start": [9.0]}, False),
    ({"threads": 2, "load_average_start": [9.0]}, False),
    ({"cores": 4, "threads": 2}, False),
])
def test_under_load(machine, loaded):
    assert br.under_load(machine) is loaded


def test_the_noise_line_spans_every_row_and_batch_with_several_rounds():
    value = result()
    # rounds per row/batch with more than one: naive b1 0.5/0.3, naive b16 1, seed b1 0.12/0.08, cpu b1 1, cpu b16 1.5
    spreads = sorted([0.5 / 0.3, 1.0, 0.12 / 0.08, 1.0, 0.6 / 0.4])
    assert br.noise_line(value) == (
        f"Noise: the slowest round of a row took {spreads[0]:.2f}x to {spreads[-1]:.2f}x its fastest (median "
        f"{spreads[2]:.2f}x over 5 row/batch pairs); differences smaller than that are not resolved by this run.")
    assert "1.00x to 1.67x" in br.noise_line(value) and "median 1.50x" in br.noise_line(value)
    assert br.noise_line({"rows": [{"times": {"1": [0.1]}}, {"times": {"1": [0.0, 0.1]}}]}) is None
    assert br.noise_line({"rows": [], "ablation": [{"times": {"1": [1.0, 2.0]}}]}).startswith(
        "Noise: the slowest round of a row took 2.00x to 2.00x its fastest (median 2.00x over 1 row/batch pairs)")


def test_row_notes_group_the_stale_ones_and_cut_violation_lists():
    stale = "compiled by an earlier version of the compiler (sources abc123, now def456)"
    lines = br.row_notes([
        {"label": "a", "note": "static batch-1 export"},
        {"label": "b", "note": f"{stale}; also slow"},
        {"label": "c", "note": stale},
        {"label": "d", "note": "violates: lanes | dtype | shape"},
        {"label": "e"}, {"label": "f", "note": ""},
        {"label": "g", "note": "compiled by an earlier version of the compiler (sources 1, now 2)"}])
    assert lines == [
        "- a: static batch-1 export", "- b: also slow", "- d: violates: lanes; ...",
        "- compiled by an earlier version of the compiler (passes/patterns/pipelines sources abc123; def456 at the "
        "time of the run), reused with --allow-stale: b, c",
        "- compiled by an earlier version of the compiler (passes/patterns/pipelines sources 1; 2 at the time of the "
        "run), reused with --allow-stale: g"]


def test_the_flop_limit_lines_name_cpu_and_the_best_row_against_the_limit():
    flops = {"flops_per_img": 2.5e9, "method": "fvcore", "gemm_flops_per_s": 1.0e11, "gemm_method": "numpy 2048",
             "limit_s_per_img": 0.025}
    lines = br.limit_lines(result(flops=flops))
    assert lines[0] == ("FLOP limit: 2.5 GFLOP/img (fvcore) at the measured float32 GEMM rate of 100 GFLOP/s "
                        "(numpy 2048) = **limit 25 ms/img**.")
    # b1: cpu 0.1 s / 2 img = 50 ms = 2x the 25 ms limit, and the best row; b16: cpu 0.5 / 16 = 31.25 ms = 1.25x,
    # the best row fused 0.32 / 16 = 20 ms = 0.8x
    assert lines[1:] == ["- batch 1: cpu at 50 ms/img = 2x the limit",
                         "- batch 16: cpu at 31.2 ms/img = 1.25x the limit; fused at 20 ms/img = 0.8x the limit "
                         "(best row: fused)"]
    assert br.limit_lines(result()) == [] and br.limit_lines(result(flops={"limit_s_per_img": 0})) == []
    no_cpu = result(flops=flops)
    no_cpu["rows"] = [r for r in no_cpu["rows"] if r["key"] not in ("cpu", "fused")]
    no_cpu["batches"] = [1, 16, 4]
    assert no_cpu and br.limit_lines(no_cpu)[1:] == [
        "- batch 1: seed at 100 ms/img = 4x the limit (best row: seed)",
        "- batch 16: seed at 50 ms/img = 2x the limit (best row: seed)"]


def test_machine_line_and_load():
    machine = {"cpu": "EPYC", "cores": 2, "threads": 1, "onnxruntime": "1.32.0", "torch": "2.13.0", "numpy": "2.1",
               "python": "3.11.7"}
    base = "EPYC, 2 cores, 1 threads; ONNX Runtime 1.32.0, PyTorch 2.13.0, numpy 2.1, Python 3.11.7"
    assert br.machine_line(machine) == base
    assert br.machine_line({**machine, "load_average_start": [0.5, 1.25, 2], "load_average_end": [3, 2, 1]}) == \
        base + "; load average (1/5/15 min) 0.50/1.25/2.00 at start, 3.00/2.00/1.00 at end"
    assert br.machine_line({**machine, "load_average_start": [0.5, 1, 2]}) == \
        base + "; load average (1/5/15 min) 0.50/1.00/2.00 at start"
    assert br.machine_line({**machine, "load_average_start": None, "load_average_end": [3, 2, 1]}) == base
    assert br.load_average() == [round(v, 2) for v in os.getloadavg()]


def test_cpu_model_name_falls_back(monkeypatch):
    assert br.cpu_model_name("model name\t:  AMD EPYC 7B13  \nmodel name : other\n") == "AMD EPYC 7B13"
    monkeypatch.setattr(br.platform, "processor", lambda: "x86_64")
    assert br.cpu_model_name("processor : 0\n") == "x86_64"
    monkeypatch.setattr(br.platform, "processor", lambda: "")
    assert br.cpu_model_name("") == "unknown CPU"


def test_spinning_method_and_model_title():
    assert br.spinning_method({}) == "" and br.spinning_method({"ort_spinning": False, "settle_s": 1}) == ""
    assert br.spinning_method({"ort_spinning": True}) == " (ONNX Runtime's default; every session in one process)"
    assert br.spinning_method({"ort_spinning": True, "settle_s": 0.25}) == (
        " (ONNX Runtime's default; each ONNX Runtime row in a process of its own, timed there, and a 0.25 s pause "
        "before every run so that the previous row's spinning threads are idle)")
    assert br.model_title({"model": "vmamba-t"}) == "vmamba-t"
    assert br.model_title({"model": "m", "config_overrides": {}}) == "m"
    assert br.model_title({"model": "m", "config_overrides": {"depths": [1, 2], "dim": 32, "t": (3,)}}) == \
        "m (depths 1,2, dim 32, t 3)"


def test_unsafe_strings_are_found_in_keys_values_and_lists():
    assert br.unsafe_string_in({"a": ["ok", {"b": 1.5}], "c": None}) is None
    assert br.unsafe_string_in({"a": ["ok", {"b\x1b": 1}]}) == "b\x1b"
    assert br.unsafe_string_in({"a": ["ok", "x <!-- y"]}) == "x <!-- y"
    assert br.unsafe_string_in(["fine", "y --> z", "w\n"]) == "y --> z"
    assert br.unsafe_string_in("line\nbreak") == "line\nbreak"
    assert br.unsafe_string_in(3) is None


# ------------------------------------------------------------------------------------------- the section
def section_result(**extra):
    machine = {"cpu": "EPYC", "cores": 2, "threads": 2, "onnxruntime": "1.32.0", "torch": "2.13.0", "numpy": "2.1",
               "python": "3.11.7"}
    return result(**{"machine": machine, "command": "python -m tools.bench", "date": "2026-12-05", "repeats": 3,
                     "reference_note": "float64 scan", **extra})


def test_the_section_says_how_it_was_measured():
    text = br.markdown_section(section_result())
    lines = text.split("\n")
    assert lines[0] == "### micro-digits on EPYC (2 threads)" and lines[1] == ""
    assert lines[2] == ("Generated by `python -m tools.bench` on 2026-12-05. Machine: EPYC, 2 cores, 2 threads; ONNX "
                        "Runtime 1.32.0, PyTorch 2.13.0, numpy 2.1, Python 3.11.7.")
    assert lines[4] == (
        "Method: one warm-up run per row and batch, then 3 rounds in which every row runs once (interleaved, row "
        "order rotated each round); figures are medians of the rounds. ONNX Runtime 1.32.0 CPU provider, "
        "intra_op_num_threads=2, session.intra_op.allow_spinning=0, default graph optimisations; PyTorch eager with "
        "torch.set_num_threads(2). 'session' is the ONNX Runtime session-creation time; errors are against PyTorch "
        "with the float64 scan (float64 scan).")
    assert lines[3] == "" and lines[5] == "" and lines[6:13] == br.main_table(section_result())
    assert lines[13] == "" and lines[14] == br.noise_line(section_result())
    assert lines[15:18] == ["", "Ablation of the cpu pipeline (one rewrite removed or swapped per variant; timed in "
                            "the same interleaved rounds as the rows above):", ""]
    assert lines[18:] == br.ablation_table(section_result())
    assert "OpenVINO" not in text and "Measured under load" not in text and "Raw timings" not in text


def test_the_section_with_every_optional_part(tmp_path):
    value = section_result(repeats=1, ort_spinning=True, rewritten="2026-12-06", openvino="2025.1",
                           json_path=str(tmp_path / "data" / "b.json"), png_path=str(tmp_path / "data" / "b.png"),
                           md_path=str(tmp_path / "docs" / "BENCHMARKS.md"),
                           flops={"flops_per_img": 1e9, "method": "m", "gemm_flops_per_s": 1e10, "gemm_method": "g",
                                  "limit_s_per_img": 0.1})
    value["machine"]["load_average_start"] = [9.0, 1, 1]
    value["rows"][0]["kind"] = "openvino"
    value["rows"][1]["note"] = "static batch-1 export"
    value["ablation"][0]["note"] = "slower"
    lines = br.markdown_section(value).split("\n")
    assert lines[2].startswith("Generated by `python -m tools.bench` on 2026-12-05 (section rewritten from its JSON "
                               "on 2026-12-06). Machine: EPYC")
    assert "then 1 round in which" in lines[4]
    assert "allow_spinning=1 (ONNX Runtime's default; every session in one process), default graph" in lines[4]
    assert lines[5] == ("OpenVINO 2025.1 CPU plugin: the ONNX file read as is, compiled for a static batch, "
                        "INFERENCE_NUM_THREADS=2, one stream, PERFORMANCE_HINT=LATENCY; 'f32' rows set "
                        "INFERENCE_PRECISION_HINT=f32, the 'default' row keeps the plugin's choice (errors say what it "
                        "costs); 'session' is read + compile at batch 1.")
    table_end = 7 + len(br.main_table(value))
    assert lines[table_end:table_end + 2] == [
        "", "**Measured under load** (1-minute load average above 1.25 x the 2 cores, this run's own threads not "
            "counted: other jobs shared the machine); compare rows within this table only, and take absolute figures "
            "as pessimistic."]
    at = table_end + 2
    assert lines[at:at + 2] == ["", br.noise_line(value)]
    assert lines[at + 2:at + 4] == ["", "- fork: static batch-1 export"]
    assert lines[at + 4:at + 5 + len(br.limit_lines(value))] == [""] + br.limit_lines(value)
    assert lines[-5:] == [br.ablation_table(value)[-1], "", "- cpu without x: slower", "",
                          "Raw timings: [b.json](../data/b.json), [b.png](../data/b.png)."]
    value.pop("md_path")
    assert br.markdown_section(value).split("\n")[-1] == \
        f"Raw timings: [b.json]({tmp_path}/data/b.json), [b.png]({tmp_path}/data/b.png)."


def test_rel_link_falls_back_to_the_path(monkeypatch):
    assert br._rel_link("/a/b/c.json", None) == "/a/b/c.json"
    assert br._rel_link("/a/b/c.json", "/a/docs/x.md") == "../b/c.json"

    def refuse(*_):
        raise ValueError("path is on mount 'C:', start on mount 'D:'")
    monkeypatch.setattr(br.os.path, "relpath", refuse)
    assert br._rel_link("/a/b/c.json", "/a/docs/x.md") == "/a/b/c.json"


def test_write_section_and_json(tmp_path):
    target = tmp_path / "new" / "docs" / "BENCHMARKS.md"
    br.write_section(target, "m:2-core", "| a |\n")
    assert target.read_text() == "# Benchmarks\n\n<!-- bench:m:2-core -->\n| a |\n<!-- /bench:m:2-core -->\n"
    br.write_section(target, "m:2-core", "| b |")
    assert target.read_text() == "# Benchmarks\n\n<!-- bench:m:2-core -->\n| b |\n<!-- /bench:m:2-core -->\n"
    assert br.section_tag("vmamba-t", 16) == "vmamba-t:16-core"
    out = tmp_path / "j" / "k" / "r.json"
    br.write_json(out, {"a": np.float32(0.5), "b": Path("x/y"), "c": [np.int64(3)]})
    assert out.read_text() == '{\n "a": 0.5,\n "b": "x/y",\n "c": [\n  3\n ]\n}'
    with pytest.raises(TypeError, match=r"^not JSON serialisable: object$"):
        br.write_json(tmp_path / "bad.json", {"a": object()})
    assert json.loads(out.read_text())["c"] == [3]


def test_replace_section_keeps_what_follows_and_appends_after_one_blank_line():
    document = "# B\n\n<!-- bench:t -->\nold\n<!-- /bench:t -->\nafter\n<!-- bench:u -->\nu\n<!-- /bench:u -->\n"
    assert br.replace_section(document, "t", "\nnew\n\n") == \
        "# B\n\n<!-- bench:t -->\nnew\n<!-- /bench:t -->\nafter\n<!-- bench:u -->\nu\n<!-- /bench:u -->\n"
    assert br.replace_section("intro\n\n\n", "t", "x") == "intro\n\n<!-- bench:t -->\nx\n<!-- /bench:t -->\n"
    assert br.replace_section("  \n", "t", "x") == "# Benchmarks\n\n<!-- bench:t -->\nx\n<!-- /bench:t -->\n"
    with pytest.raises(ValueError, match=r"^marker '<!-- bench:t -->' has no closing '<!-- /bench:t -->'; fix the "
                                         r"file by hand$"):
        br.replace_section("<!-- bench:t -->\n<!-- /bench:u -->", "t", "x")


def test_a_long_string_is_safe_unless_it_holds_a_control_character():
    assert br.unsafe_string_in({"note": "x" * 400}) is None
    assert br.unsafe_string_in({"note": "x" * 400 + "\x1b"}) == "x" * 400 + "\x1b"


def test_the_cpu_model_read_from_proc_cpuinfo_or_else_the_platform(monkeypatch):
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or "model name" not in cpuinfo.read_text():
        pytest.skip("no /proc/cpuinfo with a model name here")
    first = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("model name"))
    assert br.cpu_model_name() == first.split(":", 1)[1].strip()

    def unreadable(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(br.Path, "read_text", unreadable)
    monkeypatch.setattr(br.platform, "processor", lambda: "x86_64")
    assert br.cpu_model_name() == "x86_64"


def test_machine_info_names_every_version():
    import platform

    import onnxruntime
    import torch

    info = br.machine_info(3)
    load = info.pop("load_average_start")
    assert info == {"cpu": br.cpu_model_name(), "cores": os.cpu_count(), "threads": 3,
                    "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "numpy": np.__version__,
                    "python": platform.python_version(), "platform": platform.platform(terse=True)}
    assert isinstance(load, list) and len(load) == 3


def test_a_row_without_times_or_a_result_without_ablation():
    value = br.derive({"batches": [1], "rows": [{"key": "x", "label": "x"}]})
    assert value["rows"][0]["figures"]["1"]["min_s"] is None
    assert br.ablation_table({"batches": [1], "rows": []}) == [
        "| cpu pipeline variant | nodes | img/s b1 | vs cpu b1 | pipeline |", "|:---|---:|---:|---:|:---|"]


def test_microseconds_to_three_significant_digits():
    assert br.fmt_seconds(123.4999e-6) == "123 µs"


def test_replace_section_finds_the_closing_marker_after_its_opening_one():
    stray_before = "<!-- /bench:t -->\nA\n<!-- bench:t -->\nold\n<!-- /bench:t -->\nB\n"
    assert br.replace_section(stray_before, "t", "new") == \
        "<!-- /bench:t -->\nA\n<!-- bench:t -->\nnew\n<!-- /bench:t -->\nB\n"
    stray_after = "<!-- bench:t -->\nold\n<!-- /bench:t -->\nkeep\n<!-- /bench:t -->\n"
    assert br.replace_section(stray_after, "t", "new") == \
        "<!-- bench:t -->\nnew\n<!-- /bench:t -->\nkeep\n<!-- /bench:t -->\n"


def test_appending_strips_only_the_documents_trailing_newlines():
    assert br.replace_section("intro  \n\n", "t", "x") == "intro  \n\n<!-- bench:t -->\nx\n<!-- /bench:t -->\n"
    assert br.replace_section("BOX\n", "t", "x") == "BOX\n\n<!-- bench:t -->\nx\n<!-- /bench:t -->\n"


def test_write_section_keeps_the_files_other_content(tmp_path):
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\nHand-written intro.\n")
    br.write_section(target, "m:2-core", "| a |")
    assert target.read_text() == "# Benchmarks\n\nHand-written intro.\n\n<!-- bench:m:2-core -->\n| a |\n" \
                                 "<!-- /bench:m:2-core -->\n"


def test_a_stale_note_keeps_the_rest_of_the_note_whole():
    stale = "compiled by an earlier version of the compiler (sources a1, now b2)"
    assert br.row_notes([{"label": "r", "note": f"{stale}; Xeon only X"}])[0] == "- r: Xeon only X"


def test_noise_over_rows_without_times():
    assert br.noise_line({"rows": [{"key": "x"}, {"times": {"1": [1.0, 1.5]}}]}).startswith(
        "Noise: the slowest round of a row took 1.50x to 1.50x its fastest (median 1.50x over 1 row/batch pairs)")


def test_the_flop_limit_is_in_units_of_exactly_1e9():
    # each figure a hair past a rounding edge in GFLOP: any other divisor rounds it the other way
    flops = {"flops_per_img": 1.2350000005e9, "method": "m", "gemm_flops_per_s": 100.5000001e9, "gemm_method": "g",
             "limit_s_per_img": 0.0123}
    assert br.limit_lines(result(flops=flops))[0].startswith(
        "FLOP limit: 1.24 GFLOP/img (m) at the measured float32 GEMM rate of 101 GFLOP/s (g) = **limit 12.3 ms/img**.")


def test_the_method_line_without_a_reference_note():
    value = section_result()
    value.pop("reference_note")
    assert br.markdown_section(value).split("\n")[4].endswith("errors are against PyTorch with the float64 scan ().")


def test_the_chart_has_a_bar_per_row_and_batch_at_its_rate(tmp_path, monkeypatch):
    import struct

    import matplotlib.pyplot as plt

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))
    value = section_result()
    value["rows"][0]["label"] = "$\\frac{a}{b}$ naive"
    target = tmp_path / "new" / "deeper" / "b.png"
    br.write_png(target, value)
    (fig,) = figures
    try:
        ax = fig.axes[0]
        width = 0.8 / 2
        # batch 1 left of each row's tick, batch 16 right; fork (b16) and "cpu again" (b16) did not run
        rates_b1 = [1 / 0.4, 1 / 0.2, 1 / 0.1, 1 / 0.05, 1 / 0.0625, 1 / 0.1, 1 / 0.025]
        rates_b16 = {0: 16 / 3.2, 2: 16 / 0.8, 3: 16 / 0.5, 4: 16 / 0.32, 5: 16 / 1.0}
        b1, b16 = ax.containers
        assert [round(bar.get_x() + bar.get_width() / 2, 9) for bar in b1] == [round(j - width / 2, 9) for j in range(7)]
        assert [bar.get_height() for bar in b1] == pytest.approx(rates_b1)
        assert [round(bar.get_x() + bar.get_width() / 2, 9) for bar in b16] == \
            [round(j + width / 2, 9) for j in rates_b16]
        assert [bar.get_height() for bar in b16] == pytest.approx(list(rates_b16.values()))
        assert all(bar.get_width() == pytest.approx(width) for bar in [*b1, *b16])
        assert [b1.get_label(), b16.get_label()] == ["batch 1", "batch 16"]
        assert [t.get_text() for t in ax.texts] == [br.fmt_rate(r) for r in rates_b1 + list(rates_b16.values())]
        assert [(t.get_position(), t.get_ha(), t.get_va(), t.get_fontsize()) for t in ax.texts][0] == \
            ((pytest.approx(-width / 2), pytest.approx(2.5)), "center", "bottom", 7)
        assert ax.get_yscale() == "log" and ax.get_ylabel() == "images / s (log scale)"
        assert list(ax.get_xticks()) == list(range(7))
        labels = ax.get_xticklabels()
        assert [label.get_text() for label in labels] == [row["label"] for row in value["rows"] + value["ablation"]]
        assert {(label.get_rotation(), label.get_ha(), label.get_fontsize()) for label in labels} == {(25, "right", 8)}
        assert not any(label.get_parse_math() for label in labels)   # '$\\frac' shown as written, never TeX
        assert ax.get_title() == "micro-digits: EPYC, 2 threads" and ax.title.get_fontsize() == 9
        assert not ax.title.get_parse_math()
        assert ax.yaxis.get_gridlines()[0].get_visible() and not ax.xaxis.get_gridlines()[0].get_visible()
        assert [line.get_xdata()[0] for line in ax.lines] == [4.5]   # the rows | the ablation
        divider = ax.lines[0]
        assert (divider.get_color(), divider.get_linestyle(), divider.get_linewidth()) == ("grey", ":", 1)
        assert ax.get_legend().get_texts()[0].get_fontsize() == 8
        grid = ax.yaxis.get_gridlines()[0]
        assert grid.get_alpha() == 0.3
        assert ax.yaxis.get_minor_ticks()[0].gridline.get_visible()   # which="both": the minor lines too
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["batch 1", "batch 16"]
        assert tuple(fig.get_size_inches()) == pytest.approx((1.1 * 7 + 2, 4.2))
    finally:
        close(fig)
    one = br.derive({"batches": [1], "rows": rows()[:1], "model": "m", "threads": 1, "machine": {"cpu": "c"}})
    br.write_png(tmp_path / "one.png", one)
    try:
        assert tuple(figures[1].get_size_inches()) == pytest.approx((6.0, 4.2)) and not figures[1].axes[0].lines
        assert [bar.get_x() + bar.get_width() / 2 for bar in figures[1].axes[0].containers[0]] == [0.0]
        assert figures[1].axes[0].containers[0][0].get_width() == pytest.approx(0.8)
    finally:
        close(figures[1])
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (round((1.1 * 7 + 2) * 110), round(4.2 * 110))   # dpi 110
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.png"]   # no temporary file left


def test_the_openvino_line_without_a_version():
    value = section_result()
    value["rows"][0]["kind"] = "openvino"
    assert br.markdown_section(value).split("\n")[5].startswith("OpenVINO  CPU plugin: the ONNX file read as is")

"""tools.bench: one small end-to-end run (micro, 2 stages at 32x32) shared by the tests, plus pure helpers."""
from __future__ import annotations

import json
import statistics

import pytest

from tools import bench, bench_report

ROW_LABELS = [bench.ROW_LABELS[key] for key in bench.DEFAULT_ROWS]
BATCHES = (1, 2)
OTHER_CONTENT = "# Benchmarks\n\nHand-written intro that must survive.\n\n<!-- bench:other:2-core -->\nkeep me\n<!-- /bench:other:2-core -->\n\nTrailing notes.\n"
STALE = "<!-- bench:micro:1-core -->\nSTALE TABLE\n<!-- /bench:micro:1-core -->"


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    md = tmp / "BENCHMARKS.md"
    md.write_text(OTHER_CONTENT + "\n" + STALE + "\n\nAfter the section.\n")
    paths = {"md": md, "json": tmp / "bench.json", "png": tmp / "bench.png", "work": tmp / "work"}
    argv = ["--model", "micro", "--resolution", "32", "--depths", "1,1", "--repeats", "1",
            "--batches", ",".join(map(str, BATCHES)), "--threads", "1", "--workdir", str(tmp / "work"),
            "--digits-images", "20", "--gemm-size", "256",
            "--out-md", str(md), "--json", str(paths["json"]), "--png", str(paths["png"])]
    code = bench.main(argv)
    assert code == 0
    return paths, json.loads(paths["json"].read_text())


def test_every_row_and_column_is_in_the_outputs(bench_run):
    paths, result = bench_run
    assert [row["label"] for row in result["rows"]] == ROW_LABELS
    section = paths["md"].read_text()
    for label in ROW_LABELS:
        assert f"| {label} |" in section
    for column in ("nodes", "session", "img/s b1", "s/img b1", "vs naive b1", "vs seed b1", "vs fork b1", "img/s b2",
                   "max abs err b1", "rel L2 b1", "digits top-1"):
        assert f"| {column}" in section or f" {column} |" in section, column
    assert result["machine"]["cpu"] and result["machine"]["onnxruntime"] and result["machine"]["torch"]
    assert "FLOP limit" in section and result["flops"]["limit_s_per_img"] > 0
    assert paths["png"].stat().st_size > 1000


def test_every_row_ran_and_matches_float64(bench_run):
    _, result = bench_run
    rows = {row["key"]: row for row in result["rows"]}
    for key, row in rows.items():
        assert len(row["times"]["1"]) == 1, key
        assert row["errors"]["1"]["rel_l2"] < 1e-5, key
        if key != "tpu":
            assert row["errors"]["2"]["rel_l2"] < 1e-5, key
            assert row["agreement"]["2"] == 1.0, key
    for key in ("naive", "fork", "seed", "tpu", "cpu"):
        assert rows[key]["nodes"] > 0 and rows[key]["session_s"] > 0
    assert rows["naive"]["nodes"] > rows["cpu"]["nodes"]
    assert len({rows[k]["graph_signature"] for k in ("naive", "fork", "seed", "tpu", "cpu")}) == 5
    assert rows["fork"]["path"].endswith("fork.onnx")
    # tpu needs static shapes: compiled from a batch-1 export, not run at batch 2
    assert rows["tpu"]["skipped"] == {"2": "static batch"} and "static batch-1" in rows["tpu"]["note"]


def test_ratios_are_consistent_with_raw_times(bench_run):
    _, result = bench_run
    rows = {row["key"]: row for row in result["rows"]}
    for batch in map(str, BATCHES):
        naive = statistics.median(rows["naive"]["times"][batch])
        seed = statistics.median(rows["seed"]["times"][batch])
        for row in rows.values():
            if batch not in row["times"]:
                assert row["figures"][batch]["img_per_s"] is None
                continue
            mine = statistics.median(row["times"][batch])
            f = row["figures"][batch]
            assert f["img_per_s"] == pytest.approx(int(batch) / mine)
            assert f["s_per_img"] == pytest.approx(mine / int(batch))
            assert f["x_naive"] == pytest.approx(naive / mine)
            assert f["x_seed"] == pytest.approx(seed / mine)
            assert f["x_fork"] == pytest.approx(statistics.median(rows["fork"]["times"][batch]) / mine)
    assert rows["naive"]["figures"]["1"]["x_naive"] == pytest.approx(1.0)


def test_section_replacement_keeps_other_content(bench_run):
    paths, result = bench_run
    text = paths["md"].read_text()
    assert text.startswith(OTHER_CONTENT)
    assert text.rstrip().endswith("After the section.")
    assert "STALE TABLE" not in text
    begin, end = bench_report.section_markers("micro:1-core")
    assert text.count(begin) == 1 and text.count(end) == 1
    assert text.index(begin) < text.index("| naive ONNX (unrolled) |") < text.index(end)


def test_digits_top1_of_every_onnx_row_equals_pytorch(bench_run):
    _, result = bench_run
    rows = {row["key"]: row for row in result["rows"]}
    torch_top1 = rows["torch-sequential"]["digits_top1"]
    assert result["digits_images"] == 20
    for key in ("naive", "seed", "tpu", "cpu"):
        assert rows[key]["digits_top1"] == torch_top1, key
        assert rows[key]["digits_same_as_torch"] == 20, key


def test_second_run_reuses_exports_and_compiled_graphs(bench_run, tmp_path):
    paths, _ = bench_run
    work = paths["work"]
    stamps = {p.name: p.stat().st_mtime for p in work.glob("*.onnx")}
    out = tmp_path / "again.json"
    assert bench.main(["--model", "micro", "--resolution", "32", "--depths", "1,1", "--repeats", "1", "--batches", "1,2",
                       "--threads", "1", "--workdir", str(work), "--rows", "naive,tpu", "--reuse-compiled",
                       "--digits-images", "0", "--no-flops", "--out-md", "none", "--png", "none", "--json", str(out)]) == 0
    assert {p.name: p.stat().st_mtime for p in work.glob("*.onnx")} == stamps
    result = json.loads(out.read_text())
    assert [row["key"] for row in result["rows"]] == ["naive", "tpu"]
    assert "static batch-1" in result["rows"][1]["note"]
    assert result["rows"][1]["figures"]["1"]["x_naive"] > 0
    # no PyTorch sequential row: the batch-2 agreement reference is computed on its own
    assert result["rows"][0]["agreement"]["2"] == 1.0 and "2" not in result["rows"][1]["agreement"]


def test_from_json_rewrites_the_same_section(bench_run, tmp_path):
    paths, _ = bench_run
    md = tmp_path / "B.md"
    md.write_text("# Mine\n")
    assert bench.main(["--from-json", str(paths["json"]), "--out-md", str(md), "--json", "none",
                       "--png", str(tmp_path / "b.png")]) == 0
    begin, end = bench_report.section_markers("micro:1-core")
    text = md.read_text()
    original = paths["md"].read_text()
    assert text.startswith("# Mine\n")
    section = lambda t: t[t.index(begin):t.index(end)]
    # same tables and figures; the header says it was rewritten, the links to raw outputs name other paths
    tables = lambda t: [line for line in section(t).splitlines() if line.startswith(("|", "- ", "FLOP", "Noise"))]
    assert tables(text) == tables(original)
    assert "rewritten from its JSON" in text


def test_from_json_leaves_the_default_json_alone(bench_run, tmp_path, monkeypatch):
    """--from-json OTHER.json without --json wrote OTHER's figures over docs/bench/MODEL-Ncore.json, the
    file of another run (found in session s17 regenerating a section from a second run's JSON): the
    JSON now stays where it was read from and the section links to it."""
    paths, _ = bench_run
    monkeypatch.chdir(tmp_path)
    default_json = tmp_path / "docs" / "bench" / "micro-1core.json"
    default_json.parent.mkdir(parents=True)
    default_json.write_text('{"another": "run"}')
    other = tmp_path / "other-run.json"
    other.write_bytes(paths["json"].read_bytes())
    md = tmp_path / "B.md"
    assert bench.main(["--from-json", str(other), "--out-md", str(md), "--png", "none"]) == 0
    assert default_json.read_text() == '{"another": "run"}'
    assert other.read_bytes() == paths["json"].read_bytes()
    assert "[other-run.json](other-run.json)" in md.read_text()


def test_openvino_rows_and_a_second_thread_count(bench_run, tmp_path):
    """OpenVINO on the cpu graph (f32: as exact as ORT; default precision: labelled with it) and the
    cpu graph at 2 threads, in one interleaved run reusing the shared run's graphs."""
    pytest.importorskip("openvino")
    paths, _ = bench_run
    out = tmp_path / "ov.json"
    assert bench.main(["--model", "micro", "--resolution", "32", "--depths", "1,1", "--repeats", "1", "--batches", "1,2",
                       "--threads", "1", "--workdir", str(paths["work"]), "--reuse-compiled",
                       "--rows", "fork,cpu,cpu-2t,cpu-many,cpu-many-2t,ov-fork,ov-cpu,ov-cpu-default,ov-cpu-many,ov-ov",
                       "--digits-images", "0", "--no-flops",
                       "--out-md", str(tmp_path / "ov.md"), "--png", "none", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {row["key"]: row for row in result["rows"]}
    assert list(rows) == ["fork", "cpu", "cpu-2t", "cpu-many", "cpu-many-2t", "ov-fork", "ov-cpu", "ov-cpu-default",
                          "ov-cpu-many", "ov-ov"]
    assert rows["cpu-2t"]["graph_signature"] == rows["cpu"]["graph_signature"]
    assert rows["cpu-many-2t"]["graph_signature"] == rows["cpu-many"]["graph_signature"]
    assert rows["ov-cpu-many"]["path"] == rows["cpu-many"]["path"] and rows["ov-cpu-many"]["precision"] == "f32"
    assert rows["ov-cpu"]["kind"] == rows["ov-fork"]["kind"] == "openvino" and rows["ov-cpu"]["precision"] == "f32"
    assert rows["ov-ov"]["kind"] == "openvino" and rows["ov-ov"]["precision"] == "f32"
    assert rows["ov-ov"]["path"].endswith("ov.onnx")     # the ov pipeline's own graph
    for key in ("fork", "cpu", "cpu-2t", "cpu-many", "cpu-many-2t", "ov-fork", "ov-cpu", "ov-cpu-many", "ov-ov"):
        assert rows[key]["errors"]["1"]["rel_l2"] <= 1e-5 and rows[key]["errors"]["2"]["rel_l2"] <= 1e-5, key
    default = rows["ov-cpu-default"]
    assert default["label"] == f"OpenVINO {default['precision']} (its default here), cpu pipeline graph"
    assert default["errors"]["2"]["rel_l2"] < (1e-5 if default["precision"] == "f32" else 5e-2)
    assert "INFERENCE_PRECISION_HINT=f32" in (tmp_path / "ov.md").read_text()


def test_ort_spinning_runs_each_onnx_row_in_a_worker_process(bench_run, tmp_path):
    """--ort-spinning: the ONNX Runtime rows run in worker processes (same outputs: errors as small as in
    process), the method line says so, and every worker is gone when the run ends."""
    from tests.test_bench_workers import _child_pids

    paths, shared = bench_run
    before = _child_pids()
    out = tmp_path / "spin.json"
    assert bench.main(["--model", "micro", "--resolution", "32", "--depths", "1,1", "--repeats", "2", "--batches", "1,2",
                       "--threads", "1", "--workdir", str(paths["work"]), "--reuse-compiled", "--ort-spinning",
                       "--rows", "naive,cpu,torch-chunked", "--digits-images", "0", "--no-flops",
                       "--out-md", str(tmp_path / "spin.md"), "--png", "none", "--json", str(out)]) == 0
    assert _child_pids() == before
    result = json.loads(out.read_text())
    assert result["ort_spinning"] is True and result["settle_s"] == 0.25
    rows = {row["key"]: row for row in result["rows"]}
    in_process = {row["key"]: row for row in shared["rows"]}
    for key in ("naive", "cpu"):
        assert rows[key]["errors"] == in_process[key]["errors"], key
        assert len(rows[key]["times"]["1"]) == len(rows[key]["times"]["2"]) == 2
    assert "allow_spinning=1 (ONNX Runtime's default; each ONNX Runtime row in a process of its own, timed there, " \
           "and a 0.25 s pause before every run" in (tmp_path / "spin.md").read_text()


# ---------------------------------------------------------------------------------- pure helpers
def test_replace_section_variants():
    body = "| a |\n|---|"
    assert bench_report.replace_section("", "m:2-core", body) == \
        "# Benchmarks\n\n<!-- bench:m:2-core -->\n| a |\n|---|\n<!-- /bench:m:2-core -->\n"
    appended = bench_report.replace_section("intro\n", "m:2-core", body)
    assert appended.startswith("intro\n\n<!-- bench:m:2-core -->")
    replaced = bench_report.replace_section(appended + "tail\n", "m:2-core", "new")
    assert replaced == "intro\n\n<!-- bench:m:2-core -->\nnew\n<!-- /bench:m:2-core -->\ntail\n"
    with pytest.raises(ValueError, match="no closing"):
        bench_report.replace_section("<!-- bench:m:2-core -->\nx", "m:2-core", "new")


def test_ablation_variants_remove_or_swap_one_step_of_cpu():
    from pipelines import get_pipeline, parse_pipeline
    from tools.bench_rows import cpu_ablation_variants

    cpu_steps = [str(step) for step in get_pipeline("cpu").steps]
    variants = cpu_ablation_variants()
    removable = {step.split("{")[0] for step in cpu_steps} - {"reroll-scans", "unroll-loops"}
    assert {key.removeprefix("cpu-no-") for key, _, _ in variants if key.startswith("cpu-no-")} == removable
    for key, label, text in variants:
        steps = [str(step) for step in parse_pipeline(text).steps]
        if key == "cpu-form-chunk24":
            assert steps[0] == cpu_steps[0] == "unroll-loops"
            assert steps[2:] == cpu_steps[2:] and steps[1].startswith("reroll-scans{form=chunk24")
        else:
            removed = key.removeprefix("cpu-no-")
            assert steps == [s for s in cpu_steps if s.split("{")[0] != removed], key


def test_cpu_model_name_from_cpuinfo():
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6240R CPU @ 2.40GHz\n"
    assert bench_report.cpu_model_name(text) == "Intel(R) Xeon(R) Gold 6240R CPU @ 2.40GHz"


def test_bad_arguments_are_one_line_errors(capsys):
    assert bench.main(["--rows", "naive,bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bogus" in err and "\n" not in err
    assert bench.main(["--batches", "0"]) == 2
    capsys.readouterr()
    assert bench.main(["--rows", "cpu", "--ablation", "--ablation-variants", "cpu-no-simplify,cpu-no-bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown ablation variant(s) cpu-no-bogus; valid: cpu-form-chunk24, ") and "\n" not in err


@pytest.mark.parametrize("argv, message", [
    # found by s16-adv: after the whole run, --gemm-size 0 divided by a zero GEMM rate and -1 was
    # torch.randn's RuntimeError, both tracebacks that lost the measured rows
    (["--gemm-size", "0"], "error: --gemm-size must be from 1 to 16384, got 0"),
    (["--gemm-size", "-1"], "error: --gemm-size must be from 1 to 16384, got -1"),
    # adv11: after the whole run, torch.randn's 'can't allocate memory: you tried to allocate 4000000000000 bytes'
    # RuntimeError, a traceback (50000: two 10 GB matrices, then a matmul of hours)
    (["--gemm-size", "1000000"], "error: --gemm-size must be from 1 to 16384, got 1000000"),
    (["--gemm-size", "16385"], "error: --gemm-size must be from 1 to 16384, got 16385"),
    (["--slow-seconds", "nan"], "error: --slow-seconds must be a finite number >= 0, got nan"),
    # found by adv5: torch's allocation traceback after the export and every compile; other scripts'
    # digits read as a batch the text does not show
    (["--batches", "1,99999999999"], "error: --batches 99999999999: its inputs would hold 1,228,799,999,987,712 "
                                     "elements, more than the 268,435,456 the tools make random data for"),
    (["--batches", "\u0661"], "error: --batches needs comma-separated integers >= 1, got '\u0661'"),
    (["--ablation-batches", "0"], "error: --ablation-batches must be comma-separated integers >= 1, got '0'"),
])
def test_bad_numbers_are_refused_before_the_run(argv, message):
    with pytest.raises(bench.BenchError) as error:   # main prints it as one 'error:' line, exit 2
        bench._parse_args(argv + ["--rows", "cpu", "--out-md", "none", "--json", "none", "--png", "none"])
    assert f"error: {error.value}" == message


@pytest.mark.parametrize("argv, message", [
    (["--gemm-size", "1_024"], "error: argument --gemm-size: must be an integer written in ASCII digits, got '1_024' (see --help)"),
    (["--slow-seconds", "3_0"], "error: argument --slow-seconds: must be a number written in ASCII, got '3_0' (see --help)"),
    (["--digits-images", "\u0665"], "error: argument --digits-images: must be an integer written in ASCII digits, got '\u0665' (see --help)"),
])
def test_numbers_not_written_in_ascii_are_usage_errors(argv, message, capsys):
    """adv18: int() and float() took '1_024', '3_0' and other scripts' digits (positive_int's rule: a number the
    text does not show); refused as one usage line, exit 2, before the run."""
    with pytest.raises(SystemExit) as exit_:
        bench._parse_args(argv + ["--rows", "cpu", "--out-md", "none", "--json", "none", "--png", "none"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == message + "\n"


@pytest.mark.parametrize("key", ["input", "logits"])
def test_a_reference_holding_nan_is_refused(key, tmp_path):
    """A naive export's reference whose input or logits hold NaN: PyTorch's logits on it compared as rel L2 nan,
    which 'rel_l2 > 1e-4' let through as 'naive export matches the PyTorch model' (adv19). Refused on reading."""
    from types import SimpleNamespace

    import numpy as np

    arrays = {"input": np.zeros((1, 3, 4, 4), np.float32), "logits": np.zeros((1, 10), np.float32)}
    arrays[key].flat[1] = np.nan
    np.savez(tmp_path / "naive.ref.npz", **arrays)
    with pytest.raises(bench.BenchError) as error:
        bench.read_reference(tmp_path / "naive.ref.npz", SimpleNamespace(in_chans=3, img_size=4))
    assert str(error.value) == f"reference {tmp_path / 'naive.ref.npz'}: {key} holds NaN or infinity"


@pytest.mark.parametrize("option, name, rows", [("--fork", "cpu.onnx", "fork,cpu"),
                                                 ("--naive-static", "tpu.onnx", "tpu"),
                                                 ("--fork", "seed.log", "fork,seed"),
                                                 ("--fork", "naive.onnx", "naive,fork")])
def test_a_model_given_is_never_a_file_the_run_writes_into_its_workdir(option, name, rows, tmp_path):
    """`--fork WORK/cpu.onnx` (its cpu.ref.npz beside it, as --fork asks): the cpu row compiled the naive export
    into WORK/cpu.onnx, over the fork's model the run reads, and the fork row then timed our cpu graph as the fork's
    method (adv20). Refused before any work, naming both."""
    import onnx.parser

    work = tmp_path / "work"
    work.mkdir()
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1,3,4,4] input) => (float[1,3,4,4] logits) { logits = Relu(input) }""")
    (work / name).write_bytes(model.SerializeToString())
    (work / (name.rsplit(".", 1)[0] + ".ref.npz")).write_bytes(b"")
    with pytest.raises(bench.BenchError) as error:
        bench._parse_args([option, str(work / name), "--workdir", str(work), "--rows", rows, "--model", "micro",
                           "--out-md", "none", "--json", "none", "--png", "none"])
    what = {"cpu.onnx": "cpu row's compiled graph", "tpu.onnx": "tpu row's compiled graph", "seed.log": "seed row's log",
            "naive.onnx": "naive export"}[name]
    assert str(error.value) == (f"{option} model {work / name} is also where this run writes its {what}; give another "
                                "--workdir or move the model")

"""Tools that write a file refuse a destination they cannot write before their work, in one escaped
line with exit 2, and write through an exclusive temporary file (nothing half-written is left)."""
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tools import plot_nodecounts, report_screenshot, variants_table

REPO = Path(__file__).resolve().parents[1]


def _report(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"input": "m.onnx", "pipeline_name": "cpu", "run": {"nodes_before": 100, "passes": [
        {"index": 1, "name": "reroll-scans", "nodes_after": 10, "changed": True}]}}))
    return path


def test_variants_table_refuses_a_directory_before_compiling(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(variants_table, "build_table", lambda *a, **k: pytest.fail("compiled before the check"))
    (tmp_path / "out\x1b[2J").mkdir()
    assert variants_table.main(["--output", str(tmp_path / "out\x1b[2J")]) == 2
    assert capsys.readouterr().err == f"error: output is a directory: {tmp_path}/out\\x1b[2J\n"


def test_variants_table_writes_atomically(tmp_path, monkeypatch):
    monkeypatch.setattr(variants_table, "build_table", lambda *a, **k: "| table |\n")
    out = tmp_path / "VARIANTS.md"
    assert variants_table.main(["--output", str(out)]) == 0
    assert out.read_text() == "| table |\n" and sorted(p.name for p in tmp_path.iterdir()) == ["VARIANTS.md"]


def test_report_screenshot_refuses_a_directory_before_starting_a_browser(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report_screenshot, "HeadlessChromium", lambda: pytest.fail("browser started"))
    page = tmp_path / "index.html"
    page.write_text("<html></html>")
    (tmp_path / "shot.png").mkdir()
    assert report_screenshot.main([str(page), "-o", str(tmp_path / "shot.png")]) == 2
    assert capsys.readouterr().err == f"error: --output is a directory: {tmp_path}/shot.png\n"


def test_plot_nodecounts_leaves_no_file_when_the_plot_fails(tmp_path, capsys, monkeypatch):
    def broken_savefig(self, *args, **kwargs):
        with open(args[0], "wb") as half:
            half.write(b"\x89PNG half")
        raise OSError("disk full")
    import matplotlib.figure
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    out = tmp_path / "plots" / "nodes.png"
    out.parent.mkdir()
    assert plot_nodecounts.main([str(_report(tmp_path)), "-o", str(out)]) == 2
    assert capsys.readouterr().err == "error: disk full\n"
    assert list(out.parent.iterdir()) == []


def test_plot_nodecounts_refuses_a_directory_in_one_line(tmp_path, capsys):
    (tmp_path / "nodes.png").mkdir()
    assert plot_nodecounts.main([str(_report(tmp_path)), "-o", str(tmp_path / "nodes.png")]) == 2
    assert capsys.readouterr().err == f"error: output is a directory: {tmp_path}/nodes.png\n"


def test_plot_nodecounts_refuses_a_report_that_is_a_pipe_in_one_line(tmp_path, capsys):
    """Found by s15-adv: a report.json that is a named pipe was read for ever."""
    (tmp_path / "r").mkdir()
    os.mkfifo(tmp_path / "r" / "report.json")
    assert plot_nodecounts.main([str(tmp_path / "r"), "-o", str(tmp_path / "nodes.png")]) == 2
    assert capsys.readouterr().err == f"error: [Errno 22] not a regular file (a named pipe): '{tmp_path}/r/report.json'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_plot_nodecounts_writes_a_png(tmp_path):
    out = tmp_path / "nodes.png"
    assert plot_nodecounts.main([str(_report(tmp_path)), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodes.png", "report.json"]


@pytest.mark.parametrize("case", ["device", "file", "unknown-pipeline", "report-folder-is-a-file"])
def test_demo_refuses_bad_usage_in_one_line_before_exporting(case, tmp_path, capsys, monkeypatch):
    """Found by s14: 'make demo'-s tool made --out with mkdir: --out /dev/null or a file was a
    FileExistsError traceback (exit 1); an unknown --pipelines entry was found after the export.
    Found by adv5: a file where a pipeline's report folder goes (out/report-seed) was found by
    compile_model after the export ('pipeline seed failed')."""
    import vmamba_ref.export
    from tools import demo

    monkeypatch.setattr(vmamba_ref.export, "export_naive", lambda *a, **k: pytest.fail("exported before the check"))
    (tmp_path / "a file").write_text("mine")
    if case == "report-folder-is-a-file":
        (tmp_path / "demo").mkdir()
        (tmp_path / "demo" / "report-seed").write_text("mine")
    out = {"device": "/dev/null", "file": str(tmp_path / "a file")}.get(case, str(tmp_path / "demo"))
    pipelines = "seed,no-such-pipeline" if case == "unknown-pipeline" else "seed"
    assert demo.main(["--out", out, "--pipelines", pipelines]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert {"device": "--out folder /dev/null exists and is a character device, not a directory",
            "file": "exists and is a regular file, not a directory",
            "unknown-pipeline": "no-such-pipeline",
            "report-folder-is-a-file": "report-seed exists and is a regular file, not a directory"}[case] in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a file"] + (["demo"] if case == "report-folder-is-a-file" else [])


@pytest.mark.parametrize("case", ["json-is-a-folder", "png-is-a-device", "workdir-is-a-file", "from-json-a-list",
                                  "from-json-cut", "from-json-a-pipe", "from-json-nested-deep"])
def test_bench_refuses_bad_destinations_before_measuring(case, tmp_path, capsys, monkeypatch):
    """Found by s14: tools.bench checked none of --json, --png, --out-md, --workdir before its minutes
    of measuring (a folder there was found after the run), and --from-json with a file of the wrong
    shape was a traceback; s15-adv: --from-json of a named pipe read for ever, JSON nested 100,000 deep
    was a RecursionError traceback."""
    from tools import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("measured before the check"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "a file").write_text("mine")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "cut.json").write_text('{"model": "micro", "thr')
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    os.mkfifo(tmp_path / "pipe.json")
    args = {"json-is-a-folder": ["--json", str(tmp_path / "folder")], "png-is-a-device": ["--png", "/dev/null"],
            "workdir-is-a-file": ["--workdir", str(tmp_path / "a file")],
            "from-json-a-list": ["--from-json", str(tmp_path / "list.json")],
            "from-json-cut": ["--from-json", str(tmp_path / "cut.json")],
            "from-json-a-pipe": ["--from-json", str(tmp_path / "pipe.json")],
            "from-json-nested-deep": ["--from-json", str(tmp_path / "deep.json")]}[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    # nothing is written to docs/ whatever happens: the case's own flag comes last and wins
    assert bench.main(["--model", "micro", "--out-md", "none", "--json", "none", "--png", "none", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert {"json-is-a-folder": "--json is a directory", "png-is-a-device": "--png /dev/null is a character device",
            "workdir-is-a-file": "--workdir", "from-json-a-list": "--from-json", "from-json-cut": "--from-json",
            "from-json-a-pipe": "not a regular file", "from-json-nested-deep": "maximum recursion depth"}[case] in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("output", ["/dev/null", "folder", "folder/x.onnx-reference-is-a-folder"])
def test_external_exports_checks_its_destinations_before_building(output, tmp_path, capsys, monkeypatch):
    """Found by s14: 'tools.external_exports NAME -o /dev/null' built the model, then failed in the
    temporary writer with a DestinationError traceback (exit 1)."""
    from tools import external_exports

    monkeypatch.setattr(external_exports, "export", lambda *a, **k: pytest.fail("built before the check"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x.ref.npz").mkdir()
    target = {"/dev/null": "/dev/null", "folder": str(tmp_path / "folder"),
              "folder/x.onnx-reference-is-a-folder": str(tmp_path / "folder" / "x.onnx")}[output]
    assert external_exports.main(["hf-mamba-n16", "-o", target]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and {
        "/dev/null": "output /dev/null is a character device", "folder": "output is a directory",
        "folder/x.onnx-reference-is-a-folder": "reference output is a directory"}[output] in err, err


@pytest.mark.parametrize("tool", ["ort_profile", "tpu_check", "bench_mamba"])
def test_json_is_never_a_file_the_tool_reads(tool, tmp_path, capsys):
    """Found by adv3 (s17): 'tools.ort_profile m.onnx --json m.onnx' profiled the model, then replaced it
    with the results (exit 0); the --json check looked at the destination's kind, not at what the tool reads."""
    import importlib
    read = tmp_path / "read\x1b[2J.onnx"
    read.write_bytes(b"the tool's input")
    link = tmp_path / "link.json"
    link.symlink_to(read)
    argv = {"ort_profile": [str(read), "--runs", "1", "--threads", "1"],
            "tpu_check": [str(read)],
            "bench_mamba": ["--from-json", str(read)]}[tool]
    for destination in (read, link):
        assert importlib.import_module(f"tools.{tool}").main(argv + ["--json", str(destination)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --json {tmp_path}/") and "which this run reads" in err and "\x1b" not in err, err
        assert err.count("\n") == 1
    assert read.read_bytes() == b"the tool's input"


@pytest.mark.parametrize("argv", [["tools.demo", "--out"], ["tools.bench", "--workdir"], ["tools.bench_mamba", "--workdir"],
                                  ["tools.tpu_accuracy", "--workdir"]])
def test_an_empty_folder_is_refused_not_the_working_folder(argv, tmp_path, capsys, monkeypatch):
    """Found by adv3 (s17): 'tools.demo --out ""' (a --out "$DIR" with DIR unset) ran the whole demo into
    the working folder: argparse's type=Path made '' the folder '.'. Now a usage error, nothing written."""
    import importlib
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        importlib.import_module(argv[0]).main(argv[1:] + [""])
    assert info.value.code == 2 and list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err
    assert err == f"error: argument {argv[1]}: is an empty path; give a folder ('.' for the current one) (see --help)\n"



@pytest.mark.parametrize("case", ["model-leads-out", "threads-is-text", "comment-marker"])
def test_bench_from_json_takes_no_file_name_nor_marker_from_the_json(case, tmp_path, capsys, monkeypatch):
    """Found by adv7 (s21): --from-json named the default chart docs/bench/{model}-{threads}core.png after
    the JSON's own 'model' and 'threads': a JSON with model '../../../../tmp/x' had the chart written
    at /tmp/x-2core.png, out of docs/bench (tools.bench_mamba checks its JSON so since s13); a string
    holding '-->' went into the markdown section, whose bounds are HTML comments. Refused, one line,
    nothing written."""
    from tools import bench

    monkeypatch.chdir(tmp_path)
    result = json.loads((REPO / "docs" / "bench" / "micro-digits-2core.json").read_text())
    outside = tmp_path / "outside" / "pwned"
    outside.parent.mkdir()
    if case == "model-leads-out":
        result["model"] = f"../../{os.path.relpath(outside, tmp_path / 'docs' / 'bench')}"
    elif case == "threads-is-text":
        result["threads"] = "2/.."
    else:
        result["rows"][0]["label"] = "naive --> <!-- planted"
    (tmp_path / "run.json").write_text(json.dumps(result))
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    assert bench.main(["--from-json", str(tmp_path / "run.json"), "--out-md", str(tmp_path / "B.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --from-json"), err
    assert {"model-leads-out": "is not a plain name", "threads-is-text": "threads must be a positive integer",
            "comment-marker": "HTML comment marker"}[case] in err
    assert list((tmp_path / "outside").iterdir()) == [] and not (tmp_path / "B.md").exists()
    assert list((tmp_path / "docs" / "bench").iterdir()) == []


def test_bench_from_json_with_out_md_none_skips_the_markdown(tmp_path, capsys, monkeypatch):
    """Found by adv7 (s21): --from-json F --out-md none ended in 'TypeError: expected str, bytes or
    os.PathLike object, not NoneType' (exit 2): the default paths were worked out twice, the second
    time from the None the first had made of 'none'."""
    from tools import bench

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.json").write_bytes((REPO / "docs" / "bench" / "micro-digits-2core.json").read_bytes())
    assert bench.main(["--from-json", str(tmp_path / "run.json"), "--out-md", "none",
                       "--png", str(tmp_path / "chart.png")]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart.png", "run.json"]


@pytest.mark.parametrize("flag", ["--png", "--out-md", "--json", "--naive"])
def test_bench_never_writes_over_the_json_it_reads(flag, tmp_path, capsys, monkeypatch):
    """Found by adv7 (s21): tools.bench --from-json run.json --png run.json drew the chart over the
    figures it was drawing (and --out-md wrote the markdown there, --json the JSON back); the
    --naive model (--json naive.onnx) and its reference npz were not protected either. Refused, one
    line, exit 2, before any measuring."""
    from tools import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("measured before the check"))
    read = tmp_path / ("naive.onnx" if flag == "--naive" else "run.json")
    read.write_bytes((REPO / "docs" / "bench" / "micro-digits-2core.json").read_bytes())
    before = read.read_bytes()
    others = {"--png": "none", "--out-md": "none", "--json": "none"}
    others["--json" if flag == "--naive" else flag] = str(read)
    source = ["--model", "micro", "--naive", str(read)] if flag == "--naive" else ["--from-json", str(read)]
    assert bench.main(source + [item for pair in others.items() for item in pair]) == 2
    err = capsys.readouterr().err
    role = "--json {} is the --naive model" if flag == "--naive" else flag + " {} is the --from-json file"
    assert err.count("\n") == 1 and role.format(read) in err, err
    assert read.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [read.name]


@pytest.mark.parametrize("flag", ["--naive", "--fork", "--naive-static"])
def test_bench_never_exports_over_a_model_it_is_given(flag, tmp_path, capsys, monkeypatch):
    """Found by adv9 (s23): a --naive (--fork, --naive-static) model with no .ref.npz beside it was
    exported again, over the file given (ensure_naive exports unless both exist): the user's model
    replaced by a fresh export, exit 0. Now one line, exit 2, before any work; the file untouched."""
    from tools import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("started before the check"))
    model = tmp_path / "mine.onnx"
    model.write_bytes(b"the user's own model")
    assert bench.main(["--model", "micro", flag, str(model), "--rows", "naive,cpu,tpu,fork", "--workdir",
                       str(tmp_path / "work"), "--out-md", "none", "--json", "none", "--png", "none"]) == 2
    assert capsys.readouterr().err == (f"error: {flag} {model}: its reference mine.ref.npz is not beside it; tools.bench "
                                       f"never exports over a model it is given (leave {flag} out to export into "
                                       "--workdir)\n")
    assert model.read_bytes() == b"the user's own model" and [p.name for p in tmp_path.iterdir()] == ["mine.onnx"]


BAD_BENCH_REFERENCES = {
    "not-an-npz": (lambda path: path.write_bytes(b"garbage"), "reference {}: not a readable npz (This file contains pickled"),
    "object-array": (lambda path: np.savez(path, input=np.array([None], dtype=object), logits=np.zeros(3)),
                     "reference {}: not a readable npz (Object arrays cannot be loaded when allow_pickle=False"),
    "no-input": (lambda path: np.savez(path, logits=np.zeros(3)),
                 "reference {} has no float array 'input' (vmamba_ref.export writes input and logits)"),
    "not-images": (lambda path: np.savez(path, input=np.zeros((1, 3), np.float32), logits=np.zeros(3)),
                   "reference {}: input is float32 of shape [1, 3], not float32 images of shape [batch, 3, 64, 64] "
                   "for this model"),
    "unpacks-too-large": (lambda path: np.savez_compressed(path, input=np.zeros((1, 3, 64, 64), np.float32),
                                                           logits=np.zeros(10)),
                          "reference {}: array 'input' unpacks to {size:,} bytes, over the 4,096 one array may take"),
}


@pytest.mark.parametrize("case", list(BAD_BENCH_REFERENCES))
def test_bench_refuses_a_naive_reference_it_cannot_use_before_the_work(case, tmp_path, capsys, monkeypatch):
    """Found by adv9 (s23): tools.bench read the --naive model's reference with a bare np.load after
    building the model: a file that is not an npz, an object array, a missing 'input' or a wrong
    shape each ended in a traceback (exit 1), and every member was unpacked whole (deflated zeros
    take the machine's memory). Now checked as the compiler checks its reference: one line, exit 2,
    before any work."""
    from passes import npz_arrays
    from tools import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("started before the check"))
    monkeypatch.setattr(npz_arrays, "MAX_NPZ_BYTES", 4096)
    make, message = BAD_BENCH_REFERENCES[case]
    model, reference = tmp_path / "naive.onnx", tmp_path / "naive.ref.npz"
    model.write_bytes(b"model")
    make(reference)
    assert bench.main(["--model", "micro", "--naive", str(model), "--rows", "naive", "--workdir", str(tmp_path / "work"),
                       "--out-md", "none", "--json", "none", "--png", "none"]) == 2
    err = capsys.readouterr().err
    size = zipfile.ZipFile(reference).getinfo("input.npy").file_size if case == "unpacks-too-large" else 0
    assert err.startswith("error: " + message.format(reference, size=size)) and err.count("\n") == 1, err


@pytest.mark.parametrize("kind", ["missing", "named-pipe"])
def test_bench_refuses_a_model_it_cannot_read_in_one_escaped_line(kind, tmp_path, capsys):
    """Found by adv9 (s23): '--naive' of a missing path printed it raw ('x\\x1b[2J.onnx does not
    exist' cleared the terminal), and a named pipe passed the existence check and blocked the run
    when it was opened; now passes.files.input_file_problem's line, escaped, exit 2."""
    from tools import bench

    model = tmp_path / "x\x1b[2J.onnx"
    if kind == "named-pipe":
        os.mkfifo(model)
    assert bench.main(["--naive", str(model), "--rows", "naive", "--workdir", str(tmp_path / "work"),
                       "--out-md", "none", "--json", "none", "--png", "none"]) == 2
    shown = f"{tmp_path}/x\\x1b[2J.onnx"
    assert capsys.readouterr().err == {"missing": f"error: --naive model not found: {shown}\n",
                                       "named-pipe": f"error: --naive model {shown} is not a regular file "
                                                     "(a named pipe)\n"}[kind]


def test_bench_shows_paths_as_text_not_markup(tmp_path, capsys, monkeypatch):
    """Found by adv9 (s23): tools.bench's progress printed its paths as rich markup: '--workdir a[/]w'
    ended the run in rich's MarkupError traceback once the naive export's stage was logged (after
    building the model and exporting it), and an ESC in a path went to the terminal raw."""
    import argparse

    from tools import bench

    naive = tmp_path / "a[" / "]w\x1b[2J" / "naive.onnx"
    naive.parent.mkdir(parents=True)
    naive.write_bytes(b"model")
    naive.with_name("naive.ref.npz").write_bytes(b"reference")
    monkeypatch.setattr(bench, "ensure_naive", lambda *args, **kwargs: False)   # reused, as a second run does
    monkeypatch.setattr(bench, "onnx_batch_dim", lambda path: 1)
    with bench.Display() as display:
        bench._prepare_naive(argparse.Namespace(naive=naive), None, None, display)
    shown = str(naive).replace("\x1b", "\\x1b")
    err = capsys.readouterr().err
    assert f"naive export {shown} (" in err and f"  reusing {shown}\n" in err and "\x1b" not in err, err


def test_demo_shows_its_paths_as_text_not_markup(tmp_path, capsys, monkeypatch):
    """Found by adv9 (s23): tools.demo ('make demo') printed the --out paths as rich markup: '--out
    x[/]y' ended in rich's MarkupError traceback right after the export, an ESC reached the terminal."""
    import types

    import pipelines
    import vmamba_ref
    import vmamba_ref.export
    from tools import demo

    def export_naive(model, path, **kwargs):
        return types.SimpleNamespace(nodes=7, export_seconds=0.5)

    def compile_model(*args, **kwargs):
        raise pipelines.BadInput("stopped here")

    monkeypatch.setattr(vmamba_ref, "default_model", lambda: None)
    monkeypatch.setattr(vmamba_ref.export, "export_naive", export_naive)
    monkeypatch.setattr(pipelines, "compile_model", compile_model)
    monkeypatch.setenv("COLUMNS", "400")   # the line unwrapped
    out = tmp_path / "x[" / "]y\x1b[2J"
    assert demo.main(["--out", str(out), "--pipelines", "seed"]) == 2
    err = capsys.readouterr().err
    shown = str(out).replace("\x1b", "\\x1b")
    assert f"✓ {shown}/naive.onnx: 7 nodes, exported in 0.5 s\n" in err and "\x1b" not in err, err
    assert "pipeline seed failed: stopped here" in err


def test_plot_nodecounts_shows_names_as_text_not_tex(tmp_path, capsys, monkeypatch):
    """Found by adv7 (s21): the names a report holds went to matplotlib as mathtext: a pass named
    '$\\frac$' refused the plot (exit 2, 'Expected \\frac{num}{den}'), one of 20,000 '\\int's took 20 s
    to lay out. Names are now plain text (parse_math=False), shortened to MAX_LABEL characters."""
    import matplotlib.text

    report = json.loads(_report(tmp_path).read_text())
    report["pipeline_name"] = "$" + "\\int" * 20000 + "$"
    report["run"]["passes"][0]["name"] = "$\\frac$"
    (tmp_path / "report.json").write_text(json.dumps(report))
    shown = []
    real_init = matplotlib.text.Text.__init__
    monkeypatch.setattr(matplotlib.text.Text, "__init__",
                        lambda self, *a, **k: (real_init(self, *a, **k), shown.append(self))[0])
    assert plot_nodecounts.main([str(tmp_path / "report.json"), "-o", str(tmp_path / "n.png")]) == 0, capsys.readouterr().err
    assert (tmp_path / "n.png").stat().st_size > 0
    texts = {text.get_text(): text for text in shown if text.get_text()}
    assert "1 $\\frac$" in texts and "$" + "\\int" * 14 + "\\i…: 100 → 10 nodes" in texts
    assert not texts["1 $\\frac$"]._parse_math and all(len(t) <= 80 for t in texts)


def test_bench_from_json_draws_labels_as_text_not_tex(tmp_path, capsys):
    """Found by adv7 (s21): a row label '$\\frac$' in a --from-json file ended tools.bench in matplotlib's
    mathtext ParseSyntaxException, a traceback (exit 1) after the checks; labels are now plain text."""
    from tools import bench

    result = json.loads((REPO / "docs" / "bench" / "micro-digits-2core.json").read_text())
    result["rows"][0]["label"] = "$\\frac$"
    (tmp_path / "run.json").write_text(json.dumps(result))
    assert bench.main(["--from-json", str(tmp_path / "run.json"), "--out-md", "none", "--json", "none",
                       "--png", str(tmp_path / "chart.png")]) == 0, capsys.readouterr().err
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("flags", [("--out-md", "--png"), ("--json", "--png"), ("--out-md", "--json")])
def test_bench_refuses_two_of_its_outputs_at_one_path(flags, tmp_path, capsys, monkeypatch):
    """Found by adv10 (s24): tools.bench --from-json run.json --out-md notes.md --png sub/../notes.md wrote the
    markdown section into the user's notes.md, then the chart over it (exit 0, 'wrote notes.md, notes.md'):
    the markdown file it had read was gone; --json and --png at one path kept only the JSON. Two of
    --out-md, --json and --png naming one place (another spelling too) are refused, one line, exit 2,
    before anything is written."""
    from tools import bench

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.json").write_bytes((REPO / "docs" / "bench" / "micro-digits-2core.json").read_bytes())
    (tmp_path / "notes.md").write_text("# my notes\n")
    paths = {"--out-md": "none", "--json": "none", "--png": "none"}
    (tmp_path / "sub").mkdir()
    paths[flags[0]], paths[flags[1]] = "notes.md", "sub/../notes.md"
    assert bench.main(["--from-json", "run.json", *[item for pair in paths.items() for item in pair]]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {flags[1]} sub/../notes.md is also the {flags[0]} file; give them different paths\n"
    assert (tmp_path / "notes.md").read_text() == "# my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md", "run.json", "sub"]


def test_plot_nodecounts_never_draws_over_a_report_or_model_it_reads(tmp_path, capsys, monkeypatch):
    """Found by adv10 (s24): tools.plot_nodecounts checked its -o as a destination only, so a report kept as
    run.png ('plot_nodecounts run.png -o run.png', or its folder's report.json under any name) was replaced
    by the chart drawn from it (exit 0), and '--model m.onnx -o m.onnx' would have met the model. Refused,
    one line, exit 2, before any work; the report untouched."""
    report = _report(tmp_path)
    kept = tmp_path / "run.png"
    kept.write_bytes(report.read_bytes())
    assert plot_nodecounts.main([str(kept), "-o", str(kept)]) == 2
    assert capsys.readouterr().err == (f"error: output {kept} is the report {kept}, which this run reads; "
                                       "refusing to overwrite it\n")
    os.link(report, tmp_path / "linked.png")
    assert plot_nodecounts.main([str(tmp_path), "-o", str(tmp_path / "linked.png")]) == 2   # a folder, a hard link
    assert "is the report" in capsys.readouterr().err
    model = tmp_path / "m.png"
    model.write_bytes(b"not read: refused first")
    monkeypatch.setattr(plot_nodecounts, "run_pipelines", lambda *a, **k: pytest.fail("ran before the check"))
    assert plot_nodecounts.main(["--model", str(model), "-o", str(model)]) == 2
    assert capsys.readouterr().err == f"error: output {model} is the model {model}, which this run reads; refusing to overwrite it\n"
    assert kept.read_bytes() == report.read_bytes() == (tmp_path / "linked.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linked.png", "m.png", "report.json", "run.png"]


def test_plot_nodecounts_refuses_a_format_it_cannot_write_before_running_pipelines(tmp_path, capsys, monkeypatch):
    """Found by adv10 (s24): '--model naive.onnx -o nodes.onnx' ran every pipeline, then failed in matplotlib
    ("Format 'onnx' is not supported"). The suffix is checked first; '.svg' and no suffix (png) pass."""
    monkeypatch.setattr(plot_nodecounts, "run_pipelines", lambda *a, **k: pytest.fail("ran before the check"))
    assert plot_nodecounts.main(["--model", str(tmp_path / "naive.onnx"), "-o", str(tmp_path / "nodes.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: output {tmp_path / 'nodes.onnx'}: matplotlib writes no 'onnx' files (give one of ")
    assert ".png" in err and ".svg" in err and err.count("\n") == 1
    assert plot_nodecounts.main([str(_report(tmp_path)), "-o", str(tmp_path / "nodes.svg")]) == 0
    assert plot_nodecounts.main([str(tmp_path / "report.json"), "-o", str(tmp_path / "nodes")]) == 0
    assert (tmp_path / "nodes").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodes", "nodes.svg", "report.json"]


def test_report_screenshot_never_draws_over_its_page_nor_leaves_a_folder(tmp_path, capsys, monkeypatch):
    """Found by adv10 (s24): tools.report_screenshot checked -o as a destination only, so '-o index.html' (or
    a hard link to it) would replace the page with its own screenshot; and it made -o's folder before any
    check, so a run refused or failing (no browser) left that folder behind. The page is refused as -o,
    one line, exit 2, before a browser starts; the folder is made only for the screenshot."""
    class NoBrowser:
        def __enter__(self):
            raise report_screenshot.BrowserError("no chromium found")

        def __exit__(self, *exc):
            return False

    page = tmp_path / "index.html"
    page.write_text("<html></html>")
    os.link(page, tmp_path / "shot.png")
    monkeypatch.setattr(report_screenshot, "HeadlessChromium", lambda: pytest.fail("browser started"))
    for output in (page, tmp_path / "shot.png"):
        assert report_screenshot.main([str(page), "-o", str(output)]) == 2
        assert capsys.readouterr().err == (f"error: --output {output} is the page {page}, which this run reads; "
                                           "refusing to overwrite it\n")
    monkeypatch.setattr(report_screenshot, "HeadlessChromium", NoBrowser)
    assert report_screenshot.main([str(page), "-o", str(tmp_path / "new" / "sub" / "shot.png")]) == 2
    assert capsys.readouterr().err == "error: no chromium found\n"
    assert page.read_text() == "<html></html>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "shot.png"]


@pytest.mark.parametrize("entry", ["{outside}", "../escaped", "no-such-pipeline"])
def test_plot_nodecounts_checks_every_pipeline_before_running_one(entry, tmp_path, capsys, monkeypatch):
    """adv11: --pipelines entries are folder names under --work: 'cpu,/abs/x' ran cpu, then made /abs/x (and
    '../escaped' a folder beside --work) before compile_model refused the name, leaving both folders behind; an
    unknown name was found only after the pipelines before it had run. Now each is resolved, and must be one
    folder name, before any runs or any folder is made."""
    from pipelines import compiler

    monkeypatch.setattr(compiler, "compile_model", lambda *a, **k: pytest.fail("a pipeline ran before the check"))
    model = tmp_path / "in" / "m.onnx"
    model.parent.mkdir()
    model.write_bytes(b"not read before the check")
    entry = entry.format(outside=tmp_path / "outside")
    work = tmp_path / "work"
    assert plot_nodecounts.main(["--model", str(model), "--work", str(work), "--pipelines", f"seed,{entry}",
                                 "-o", str(tmp_path / "n.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    if entry == "no-such-pipeline":
        assert err.startswith("error: unknown pipeline 'no-such-pipeline'; valid pipelines: seed, cpu, ")
    else:
        assert err == (f"error: --pipelines '{entry}' is no folder name under --work (give named pipelines or "
                       "passes)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_variants_table_shows_an_unknown_variant_escaped_in_one_line(tmp_path, capsys):
    """adv11: '--only' names were printed raw: a newline made a second 'error:' line and an ESC reached the
    terminal. They are text, as the model's names are."""
    from tools import variants_table

    assert variants_table.main(["--only", "base,x\nerror: fake\x1b[2J", "-o", str(tmp_path / "v.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown variant(s) x\\nerror: fake\\x1b[2J; known: base, ") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def _model_with_backslash_location(folder: Path) -> Path:
    """m.onnx whose weight's external data location is 'sub\\w.bin' (a Windows export), sub/w.bin its bytes."""
    import onnx
    from onnx import TensorProto, helper

    (folder / "sub").mkdir()
    (folder / "sub" / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    weight = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "sub\\w.bin"), ("offset", "0"), ("length", "16")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=[weight])
    path = folder / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("tool", ["tpu_calibration", "diffview", "ort_profile"])
def test_a_backslash_location_names_the_file_that_is_read_to_the_destination_checks(tool, tmp_path, capsys):
    """adv24 (s35's leftover): the model is read with 'sub\\w.bin' as sub/w.bin (graph_io._external_location), but the
    tools' check that they write over nothing the model names (model_and_data_files, diffview's own list) took it as
    one file named 'sub\\w.bin': 'tools.tpu_calibration synthetic m.onnx -o sub/w.bin' wrote its npz over the
    model's weights, exit 0; diffview's page and ort_profile's --json likewise. Both lists now split the location
    as the reading does (graph_io.location_parts)."""
    import importlib

    model = _model_with_backslash_location(tmp_path)
    weights = tmp_path / "sub" / "w.bin"
    kept = weights.read_bytes()
    argv = {"tpu_calibration": ["synthetic", str(model), "-o", str(weights)],
            "diffview": [str(model), str(model), "-o", str(weights)],
            "ort_profile": [str(model), "--runs", "1", "--threads", "1", "--json", str(weights)]}[tool]
    assert importlib.import_module(f"tools.{tool}").main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "which this run reads" in err, err
    assert weights.read_bytes() == kept


def test_a_windows_location_that_climbs_out_is_refused_and_listed_both_ways(tmp_path):
    """'..\\x' is '../x' to the reading (refused: it leaves the folder) and to the destination checks, which list
    the name ONNX Runtime on Linux would read too (one file named '..\\x' beside the model)."""
    import onnx

    from passes.graph_io import InputError, external_data_files, read_model

    model_path = _model_with_backslash_location(tmp_path)
    model = onnx.load(str(model_path), load_external_data=False)
    model.graph.initializer[0].external_data[0].value = "..\\secret.bin"
    (tmp_path.parent / "secret.bin").write_bytes(bytes(16))
    onnx.save(model, model_path)
    with pytest.raises(InputError, match=r"external data '\.\.\\secret\.bin' of tensor 'w': '\.\.' leaves the "
                                         r"model's folder; refused"):
        read_model(model_path)
    assert external_data_files(model_path, model) == [tmp_path / ".." / "secret.bin", tmp_path / "..\\secret.bin"]


def test_bench_never_writes_a_rows_log_through_a_link_planted_in_its_workdir(tmp_path):
    """adv24: tools.bench wrote each row's compile log (WORK/<row>.log) with Path.write_text, so a link planted at that
    name in a reused --workdir had the log written through it into the file it led to. Now the log goes through an
    exclusive temporary renamed over the name: the link is replaced, its target kept."""
    import onnx
    from onnx import parser

    from scan_testing import TINY_MODEL_TEXT
    from tools.bench_rows import compile_pipeline

    naive = tmp_path / "naive.onnx"
    onnx.save(parser.parse_model(TINY_MODEL_TEXT), naive)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    work = tmp_path / "work"
    work.mkdir()
    (work / "cpu.log").symlink_to(victim)
    build = compile_pipeline(naive, "eliminate-dead-nodes", work / "cpu.onnx", work / "cpu.log")
    assert build.ok
    assert victim.read_text() == "keep me"
    assert not (work / "cpu.log").is_symlink() and "eliminate-dead-nodes" in (work / "cpu.log").read_text()

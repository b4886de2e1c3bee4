"""tools.diffview: the region diff of two models, as text and as a page."""
import onnx
import onnx.parser

from tools.diffview import main

BEFORE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4] x) => (float[4] y, float[4] z) {
  two = Constant<value = float {2.0}>()
  a = Mul(x, two)
  y = Relu(a)
  b = Mul(x, two)
  z = Sigmoid(b)
}
"""
AFTER = BEFORE.replace("Mul(x, two)", "Add(x, x)").replace("  two = Constant<value = float {2.0}>()\n", "")


def write(tmp_path, name, text):
    path = tmp_path / name
    onnx.save(onnx.parser.parse_model(text), path)
    return path


def test_text(tmp_path, capsys):
    before, after = write(tmp_path, "a.onnx", BEFORE), write(tmp_path, "b.onnx", AFTER)
    assert main([str(before), str(after), "--text"]) == 0
    out = capsys.readouterr().out
    assert "op histogram: +2 Add, -2 Mul, -1 Constant" in out
    assert "2 regions in 1 group: 2 changed, 0 removed, 0 added" in out
    assert "x2 identical, showing 1" in out
    assert "- %out0 = Mul(%in0, const<f32>(2))" in out and "+ %out0 = Add(%in0, %in0)" in out


def test_html(tmp_path, capsys):
    before, after = write(tmp_path, "a.onnx", BEFORE), write(tmp_path, "b.onnx", AFTER)
    page = tmp_path / "diff.html"
    assert main([str(before), str(after), "-o", str(page)]) == 0
    assert f"wrote {page}" in capsys.readouterr().out
    html = page.read_text()
    assert "×2 identical" in html and '<span class="chip minus">−2 Mul</span>' in html


def test_same_model_has_no_regions(tmp_path, capsys):
    before = write(tmp_path, "a.onnx", BEFORE)
    assert main([str(before), str(before)]) == 0
    assert "0 regions" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk" * 10)
    assert main([str(tmp_path / "junk.onnx"), str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")


def test_a_terminal_sees_what_it_waits_for_and_a_pipe_nothing(tmp_path):
    """VMamba-T's naive export against itself: 44 s with nothing on the terminal (two reads and checks of 76,529
    nodes, then the diff; dev 2-core, adv20). A spinner on a terminal's stderr names each step, the model's name
    escaped; stderr that is no terminal gets nothing."""
    import os
    import pty
    import select
    import subprocess
    import sys
    from pathlib import Path

    model = tmp_path / "m\x1b[2J[b].onnx"
    model.write_bytes(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) { y = Relu(x) }""").SerializeToString())
    repo = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin", "TERM": "xterm"}
    master, slave = pty.openpty()
    process = subprocess.run([sys.executable, "-m", "tools.diffview", str(model), str(model)], stdout=subprocess.PIPE,
                             stderr=slave, env=env, cwd=repo, timeout=120)
    os.close(slave)
    seen = b""
    while select.select([master], [], [], 0.5)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert process.returncode == 0
    assert b" reading and checking " in seen and b" comparing 1 and 1 nodes\r" in seen, seen
    assert b"m\\x1b[2J[b].onnx" in seen and b"\x1b[2J" not in seen   # the name escaped (the line may wrap before it)
    piped = subprocess.run([sys.executable, "-m", "tools.diffview", str(model), str(model)], capture_output=True,
                           env=env, cwd=repo, timeout=120)
    assert piped.returncode == 0 and piped.stderr == b""


# --- in process, each line exactly (mutation testing, s33) --------------------------------------------------------
import re  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tools import diffview  # noqa: E402


def test_the_text_report_header_lines_exactly(tmp_path, capsys):
    before, after = write(tmp_path, "a\n.onnx", BEFORE), write(tmp_path, "b.onnx", AFTER)
    assert main([str(before), str(after)]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[:6] == [f"before: {tmp_path}/a\\n.onnx (5 nodes)", f"after:  {after} (4 nodes)",
                         "op histogram: +2 Add, -2 Mul, -1 Constant",
                         "2 regions in 1 group: 2 changed, 0 removed, 0 added", "",
                         "== group 1: x2 identical, showing 1 (changed): +1 Add, -1 Constant, -1 Mul"]
    assert "  --- only in before: 2 nodes" in lines and "  +++ only in after: 1 node" in lines
    assert lines[-1] == "" and lines[-2] != ""


def test_regions_removed_and_added_are_counted_by_kind():
    description = {"regions": 1, "groups_total": 3, "groups": [
        {"count": 2, "removed": [{"op": "Mul"}], "added": [{"op": "Add"}]},
        {"count": 3, "removed": [{"op": "Mul"}], "added": []},
        {"count": 1234, "removed": [], "added": [{"op": "Add"}]},
        {"count": 5, "removed": [{"op": "Mul"}], "added": [{"op": "Add"}]}]}
    from collections import Counter

    import passes.report.text as text
    kinds = {id(g): k for g, k in zip(description["groups"], ["changed", "removed", "added", "changed"])}
    original = text.group_kind
    text.group_kind = lambda group: kinds[id(group)]
    text.regions_text, regions = (lambda d, a, b: f"[{a}|{b}]"), text.regions_text
    try:
        report = diffview.text_report("b", "a", description, Counter({"Mul": 2}), Counter({"Add": 1234}))
    finally:
        text.group_kind, text.regions_text = original, regions
    assert report.split("\n") == ["before: b (2 nodes)", "after:  a (1,234 nodes)",
                                  "op histogram: +1,234 Add, -2 Mul",
                                  "1 region in 3 groups: 7 changed, 3 removed, 1,234 added", "",
                                  "[only in before|only in after]", ""]


def test_each_refusal_to_read_a_model_is_its_line(tmp_path):
    with pytest.raises(diffview.DiffError) as error:
        diffview._load(str(tmp_path / "none.onnx"))
    assert str(error.value) == f"model not found: {tmp_path}/none.onnx"
    bad = tmp_path / "b\x1b.onnx"
    bad.write_bytes(b"\xff\xff not onnx")
    with pytest.raises(diffview.DiffError) as error:
        diffview._load(str(bad))
    assert str(error.value).startswith(f"not an ONNX file, or truncated: {tmp_path}/b\\x1b.onnx (")
    invalid = onnx.parser.parse_model(BEFORE)
    invalid.graph.node[1].input[0] = "nowhere"
    path = tmp_path / "i\x1b.onnx"
    onnx.save(invalid, path)
    with pytest.raises(diffview.DiffError) as error:
        diffview._load(str(path))
    assert str(error.value).startswith(f"{tmp_path}/i\\x1b.onnx: ") and "nowhere" in str(error.value)


def external(tmp_path, name="m.onnx"):
    weight = numpy_helper.from_array(np.arange(300, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [300])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [300])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / name, save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    return tmp_path / name


def test_the_weights_files_a_model_names(tmp_path):
    path = external(tmp_path, "m\n.onnx")
    model = onnx.load(path, load_external_data=False)
    assert diffview._data_files(str(path), model) == [(f"external data file of {tmp_path}/m\\n.onnx",
                                                       tmp_path / "w.bin")]
    entry = model.graph.initializer[0].external_data.add()
    entry.key, entry.value = "checksum", "other.bin"
    model.graph.initializer[0].external_data[0].value = "a\x00b"
    assert diffview._data_files(str(path), model) == []


@pytest.mark.parametrize("target, role", [("a.onnx", "model"), ("b.onnx", "model"), ("w.bin", "external data file")])
def test_the_output_is_never_a_file_the_diff_reads(target, role, tmp_path, capsys):
    before, after = write(tmp_path, "a.onnx", BEFORE), external(tmp_path, "b.onnx")
    read = {"a.onnx": before, "b.onnx": after, "w.bin": tmp_path / "w.bin"}[target]
    what = role if role == "model" else f"{role} of {after}"
    assert main([str(before), str(after), "-o", str(read)]) == 2
    assert capsys.readouterr() == ("", f"error: output {read} is the {what} {read}, which this run reads; refusing "
                                       "to overwrite it\n")
    external(tmp_path, "c.onnx")
    assert main([str(tmp_path / "c.onnx"), str(before), "-o", str(tmp_path / "w.bin")]) == 2
    assert capsys.readouterr().err == (f"error: output {tmp_path}/w.bin is the external data file of {tmp_path}/c.onnx "
                                       f"{tmp_path}/w.bin, which this run reads; refusing to overwrite it\n")


def test_a_page_that_cannot_be_written_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    before = write(tmp_path, "a.onnx", BEFORE)

    def full(path, text):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(diffview, "write_text_atomic", full)
    assert main([str(before), str(before), "-o", str(tmp_path / "d\x1b.html")]) == 2
    assert capsys.readouterr() == ("", f"error: cannot write {tmp_path}/d\\x1b.html: [Errno 28] No space left on "
                                       "device\n")


def test_text_and_page_together(tmp_path, capsys):
    before = write(tmp_path, "a.onnx", BEFORE)
    assert main([str(before), str(before), "-o", str(tmp_path / "d.html"), "--text"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"before: {before} (5 nodes)\n") and "wrote" not in out
    assert (tmp_path / "d.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("interrupt, code", [(KeyboardInterrupt(), 130), (None, 143)])
def test_an_interrupt_is_one_line(interrupt, code, tmp_path, capsys, monkeypatch):
    from passes.interrupts import Terminated

    def stopped(args):
        raise interrupt or Terminated()
    monkeypatch.setattr(diffview, "_diff", stopped)
    assert main(["a", "b"]) == code
    assert capsys.readouterr() == ("", "error: interrupted; no output written\n")


def test_the_spinner_names_each_step_on_stderr(tmp_path, capsys, monkeypatch):
    import rich.console

    calls = []

    class Status:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            calls.append("exit")

        def update(self, *args, **kwargs):
            calls.append(("update", args, kwargs))

        def stop(self):
            calls.append("stop")

    class FakeConsole:
        def __init__(self, **kwargs):
            calls.append(("console", kwargs))

        def status(self, *args, **kwargs):
            calls.append(("status", args, kwargs))
            return Status()

    monkeypatch.setattr(rich.console, "Console", FakeConsole)
    before, after = write(tmp_path, "a[b].onnx", BEFORE), write(tmp_path, "b.onnx", AFTER)
    assert main([str(before), str(after)]) == 0
    assert calls == [("console", {"stderr": True}), ("status", ("",), {}),
                     ("update", (f"reading and checking {tmp_path}/a\\[b].onnx",), {"spinner": "dots"}),
                     ("update", (f"reading and checking {after}",), {"spinner": "dots"}),
                     ("update", ("comparing 5 and 4 nodes",), {"spinner": "dots"}), "exit"]
    calls.clear()
    assert main([str(before), str(tmp_path / "none.onnx")]) == 2
    assert calls[-2:] == ["stop", "exit"]


def test_the_usage_names_the_program_and_the_page_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m tools.diffview [-h] [-o DIFF.html] [--text] before after")
    lines = out.splitlines()
    assert lines[1] == "" and lines[2].strip() and lines[3] == ""   # a description between usage and arguments
    at = lines.index("  -o DIFF.html, --output DIFF.html")   # every option with a help text
    assert lines[at + 1].startswith(" " * 20) and lines[at + 1].strip()
    assert re.fullmatch(r"  --text +\S.*", next(line for line in lines if line.startswith("  --text")))

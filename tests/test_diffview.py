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

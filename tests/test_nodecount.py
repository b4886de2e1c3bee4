"""tools.nodecount: histograms side by side as table, JSON and CSV."""
import json
import subprocess
import sys
from pathlib import Path

import onnx
import onnx.parser
import pytest

from tools.nodecount import count_ops, histogram_rows

REPO = Path(__file__).resolve().parents[1]


def save(path, body):
    onnx.save(onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) {{ {body} }}"""), path)
    return path


def models(tmp_path):
    naive = save(tmp_path / "naive.onnx", "a = Mul(x, x)  b = Mul(a, x)  c = Add(b, x)  y = Relu(c)")
    rolled = save(tmp_path / "rolled.onnx", "a = Mul(x, x)  y = Relu(a)")
    return naive, rolled


def nodecount(*args):
    return subprocess.run([sys.executable, "-m", "tools.nodecount", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "COLUMNS": "200"})


def test_rows_total_first_then_by_count(tmp_path):
    naive, rolled = models(tmp_path)
    rows = histogram_rows({"naive": count_ops(naive), "rolled": count_ops(rolled)})
    assert rows == [("total", [4, 2]), ("Mul", [2, 1]), ("Add", [1, 0]), ("Relu", [1, 1])]


def test_json(tmp_path):
    naive, rolled = models(tmp_path)
    result = nodecount(naive, rolled, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["models"][str(naive)] == {"nodes": 4, "ops": {"Add": 1, "Mul": 2, "Relu": 1}}
    assert data["models"][str(rolled)] == {"nodes": 2, "ops": {"Mul": 1, "Relu": 1}}


def test_csv(tmp_path):
    naive, rolled = models(tmp_path)
    result = nodecount(naive, rolled, "--csv")
    assert result.stdout.splitlines() == [f"op,{naive},{rolled}", "total,4,2", "Mul,2,1", "Add,1,0", "Relu,1,1"]


def test_table(tmp_path):
    naive, rolled = models(tmp_path)
    lines = nodecount(naive, rolled).stdout.splitlines()
    total_line = next(line for line in lines if "total" in line)
    assert [cell.strip() for cell in total_line.split("│")[1:-1]] == ["total", "4", "2"]
    assert lines.index(total_line) < next(i for i, line in enumerate(lines) if "Mul" in line)


def test_bad_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xff not onnx")
    result = nodecount(bad)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_file_that_is_no_model_is_said_as_the_compiler_says_it(tmp_path):
    """tools.nodecount, tools.diffview and the compiler read a model's structure with one function
    (passes.graph_io.read_structure, since tidy29: the tools had their own copies, 'no graph' without 'or version')."""
    from tools.diffview import DiffError, _load
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    message = f"not an ONNX model (no graph or version found): {empty}"
    assert nodecount(empty).stderr == f"error: {message}\n"
    with pytest.raises(DiffError) as refused:
        _load(str(empty))
    assert str(refused.value) == message
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xff not onnx")
    assert nodecount(bad).stderr.startswith(f"error: not an ONNX file, or truncated: {bad} (")


def test_hostile_op_types_and_paths_are_shown_escaped(tmp_path):
    """Found by a model whose op type is '[/]\\x1b[2J\\nEvil' (adversarial session s13): the table
    died with rich's MarkupError traceback (exit 1), and a path with a newline split the error
    line in two. Op types and paths are text from outside: escaped, never markup."""
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17, "custom" : 1]>
        g (float[4] x) => (float[4] y) { y = custom.Evil(x) }""")
    model.graph.node[0].op_type = "[/]\x1b[2J\nEvil"
    onnx.save(model, tmp_path / "evil.onnx")
    result = nodecount(tmp_path / "evil.onnx")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert next(line for line in result.stdout.splitlines() if "Evil" in line).split("│")[1].strip() \
        == "[/]\\x1b[2J\\nEvil"
    (tmp_path / "a\nerror: fake").mkdir()
    result = nodecount(tmp_path / "a\nerror: fake")
    assert result.returncode == 2 and result.stderr == f"error: model {tmp_path}/a\\nerror: fake is not a regular file (a directory)\n"
    result = nodecount()
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: the following arguments are required: models")


def test_an_op_type_that_is_not_utf8_is_one_line_exit_2(tmp_path):
    """Found by a model whose op type holds the bytes 'OP\\xff\\xfeRK' (adversarial session s13):
    proto2 hands it over as bytes, and sorting it among str op types was a TypeError traceback."""
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17, "c" : 1]>
        g (float[4] x) => (float[4] y) { t = Relu(x)  y = c.OPMARK(t) }""")
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString().replace(b"OPMARK", b"OP\xff\xfeRK"))
    for flag in ([], ["--json"], ["--csv"]):
        result = nodecount(path, *flag)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr == f"error: {path}: an op type holds bytes that are not UTF-8 text: b'OP\\xff\\xfeRK'\n"


def test_csv_escapes_op_types_from_the_model(tmp_path):
    """Found by s14: --csv wrote an op type's ESC and newline raw (in a quoted field), where the table
    and every error line escape them."""
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17, "c" : 1]>
        g (float[4] x) => (float[4] y) { t = Relu(x)  y = c.OPMARK(t) }""")
    model.graph.node[1].op_type = "Ev\x1b[2J\nerror: x"
    path = tmp_path / "evil.onnx"
    onnx.save(model, path)
    result = nodecount(path, "--csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"op,{path}\ntotal,2\nEv\\x1b[2J\\nerror: x,1\nRelu,1\n"


@pytest.mark.parametrize("op_type", ["=HYPERLINK(1)", "+SUM(A1)", "-2+3", "@cmd", "\tX"])
def test_csv_cells_a_spreadsheet_would_run_are_text(tmp_path, op_type):
    """adv21 (s33): --csv wrote an op type `=HYPERLINK(1)` as it came, which a spreadsheet opening the file runs as a
    formula; such a cell now starts with an apostrophe (a tab is escaped by printable first, so '\\tX' stays)."""
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17, "c" : 1]>
        g (float[4] x) => (float[4] y) { t = Relu(x)  y = c.OPMARK(t) }""")
    model.graph.node[1].op_type = op_type
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = nodecount(path, "--csv")
    assert result.returncode == 0, result.stderr
    shown = "\\tX" if op_type == "\tX" else "'" + op_type
    cell = f'"{shown}"' if "," in shown or '"' in shown else shown
    assert result.stdout == f"op,{path}\ntotal,2\n{cell},1\nRelu,1\n"

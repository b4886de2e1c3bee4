"""tools.nodecount in process: the row order's tie-breaks, the JSON and CSV exactly, the table's cells and styles, and
each refusal's line. test_nodecount runs the command in a subprocess; these are the same outputs, checked whole."""
import io
import json

import onnx
import onnx.parser
import pytest
from rich.console import Console

from tools import nodecount
from tools.nodecount import CountError, count_ops, histogram_rows


def save(path, body):
    onnx.save(onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) {{ {body} }}"""), path)
    return path


@pytest.fixture
def pair(tmp_path):
    # a: 3 Mul, 1 Add, 1 Relu, 1 Abs; b: 1 Mul, 2 Add, 1 Relu, 1 Neg
    a = save(tmp_path / "a.onnx", "m1 = Mul(x, x)  m2 = Mul(m1, x)  m3 = Mul(m2, x)  s = Add(m3, x)  r = Relu(s)  "
                                  "y = Abs(r)")
    b = save(tmp_path / "b.onnx", "m1 = Mul(x, x)  s = Add(m1, x)  t = Add(s, x)  r = Relu(t)  y = Neg(r)")
    return a, b


def test_rows_by_largest_count_in_any_model_then_by_name(pair):
    a, b = pair
    histograms = {"a": count_ops(a), "b": count_ops(b)}
    assert histogram_rows(histograms) == [("total", [6, 5]), ("Mul", [3, 1]), ("Add", [1, 2]), ("Abs", [1, 0]),
                                          ("Neg", [0, 1]), ("Relu", [1, 1])]
    assert histogram_rows({}) == [("total", [])]
    assert histogram_rows({"b": count_ops(b)}) == [("total", [5]), ("Add", [2]), ("Mul", [1]), ("Neg", [1]),
                                                   ("Relu", [1])]


def test_json_and_csv_exactly(pair, capsys):
    a, b = pair
    assert nodecount.main([str(a), str(b), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {"models": {str(a): {"nodes": 6, "ops": {"Abs": 1, "Add": 1, "Mul": 3, "Relu": 1}},
                                          str(b): {"nodes": 5, "ops": {"Add": 2, "Mul": 1, "Neg": 1, "Relu": 1}}}}
    assert out.endswith("}\n") and out.startswith('{\n  "models": {\n    "')
    assert list(json.loads(out)["models"][str(a)]["ops"]) == ["Abs", "Add", "Mul", "Relu"]   # sorted by name
    assert nodecount.main([str(a), str(b), "--csv"]) == 0
    assert capsys.readouterr().out == (f"op,{a},{b}\ntotal,6,5\nMul,3,1\nAdd,1,2\nAbs,1,0\nNeg,0,1\nRelu,1,1\n")
    with pytest.raises(SystemExit):
        nodecount.main([str(a), "--csv", "--json"])
    err = capsys.readouterr().err
    assert err == "error: argument --json: not allowed with argument --csv (see --help)\n"


def test_the_table_has_a_total_section_bold_and_blank_zeros(pair, monkeypatch):
    a, b = pair
    a_big = save(a.parent / "big.onnx", "  ".join(f"m{i} = Relu({'x' if i == 0 else f'm{i - 1}'})"
                                                  for i in range(1234)) + "  y = Relu(m1233)")
    console = Console(file=io.StringIO(), width=200, record=True, color_system="standard")
    monkeypatch.setattr("rich.console.Console", lambda *args, **kwargs: console)
    assert nodecount.main([str(a_big), str(b)]) == 0
    lines = [line.rstrip() for line in console.export_text(clear=False).splitlines()]
    assert [cell.strip() for cell in lines[1].split("┃")[1:-1]] == ["op", str(a_big), str(b)]
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if "│" in line]
    assert cells == [["total", "1,235", "5"], ["Relu", "1,235", "1"], ["Add", "", "2"],
                     ["Mul", "", "1"], ["Neg", "", "1"]]
    # a rule below the header and one below the total row, none after the others
    rules = [i for i, line in enumerate(lines) if line.startswith("├") or line.startswith("┡")]
    assert rules == [2, 4]
    styled = console.export_text(styles=True, clear=False)
    assert "\x1b[1mtotal" in styled and "\x1b[1mRelu" not in styled and "\x1b[1mAdd" not in styled
    assert lines[1].rstrip("┃ ").endswith(str(b))    # model columns right-justified: the name flush right
    row = next(line for line in lines if "Neg" in line)
    assert row.split("│")[3].endswith("1 ") and row.split("│")[3].startswith("  ")


def test_refusals_are_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "none.onnx"
    assert nodecount.main([str(missing)]) == 2
    assert capsys.readouterr() == ("", f"error: model not found: {missing}\n")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xff not onnx")
    with pytest.raises(CountError) as error:
        count_ops(str(bad))
    assert str(error.value).startswith(f"not an ONNX file, or truncated: {bad} (")
    assert nodecount.main([str(bad)]) == 2
    assert capsys.readouterr() == ("", f"error: {error.value}\n")


def test_an_op_type_of_bytes_is_named_with_its_first_60(tmp_path):
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17, "c" : 1]>
        g (float[4] x) => (float[4] y) { t = Relu(x)  y = c.%s(t) }""" % ("O" * 70))
    path = tmp_path / "bad\n.onnx"
    op = b"\xff" + b"O" * 69
    path.write_bytes(model.SerializeToString().replace(b"O" * 70, op))
    with pytest.raises(CountError) as error:
        count_ops(path)
    assert str(error.value) == (f"{tmp_path}/bad\\n.onnx: an op type holds bytes that are not UTF-8 text: "
                                f"{repr(op[:60])}")


def test_the_help_names_the_program_and_says_what_it_does(capsys):
    with pytest.raises(SystemExit):
        nodecount.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m tools.nodecount [-h] [--json | --csv] models [models ...]")
    assert "\nNode counts and op histograms of ONNX models, side by side.\n" in out


def test_every_argument_is_documented_in_the_help(capsys):
    with pytest.raises(SystemExit):
        nodecount.main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    for option in ("  models ", "  --json ", "  --csv "):
        line = next(line for line in lines if line.startswith(option))
        assert line[len(option):].strip(), option   # its help beside it

"""tools.json_destination: the --json check the measuring tools make before their work."""
from tools.json_destination import json_destination_refused


def test_no_json_and_a_writable_destination_pass_and_create_nothing(tmp_path, capsys):
    assert json_destination_refused(None) is False
    assert json_destination_refused(tmp_path / "out.json") is False
    assert list(tmp_path.iterdir()) == [] and capsys.readouterr().err == ""


def test_dash_is_stdout_only_where_the_tool_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-").mkdir()   # so '-' as a file name is refused
    assert json_destination_refused("-", dash_is_stdout=True) is False
    assert json_destination_refused("-") is True
    assert capsys.readouterr().err == "error: --json is a directory: -\n"


def test_a_refusal_is_one_escaped_line(tmp_path, capsys):
    hostile = tmp_path / "no\nsuch\x1b[31m" / "out.json"
    assert json_destination_refused(hostile) is True
    assert capsys.readouterr().err == (
        f"error: --json directory does not exist: {tmp_path}/no\\nsuch\\x1b[31m\n")

"""tools.json_destination: the --json check the measuring tools make before their work."""
import pytest

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


def test_a_workdir_that_is_not_a_folder_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    """Found by s14: tools.tpu_accuracy, bench_mamba and tpu_cumsum_ceiling made --workdir with
    mkdir(exist_ok=True): a file or /dev/null there was a FileExistsError traceback (exit 1)."""
    from tools import bench_mamba, tpu_accuracy, tpu_cumsum_ceiling
    from tools.json_destination import workdir_refused

    (tmp_path / "a file").write_text("mine")
    assert workdir_refused(None) is False and workdir_refused(tmp_path / "new" / "work") is False
    assert workdir_refused(tmp_path / "a file") is True
    assert capsys.readouterr().err == f"error: --workdir {tmp_path}/a file exists and is a regular file, not a directory\n"
    monkeypatch.setattr(bench_mamba, "run", lambda *a: pytest.fail("measured before the check"))
    for main in (lambda: tpu_accuracy.main(["--workdir", "/dev/null"]),
                 lambda: bench_mamba.main(["--workdir", "/dev/null"]),
                 lambda: tpu_cumsum_ceiling.main(["--chip", "bm1684x", "--workdir", "/dev/null"])):
        assert main() == 2
        assert capsys.readouterr().err == ("error: --workdir /dev/null exists and is a character device, "
                                           "not a directory\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a file"]

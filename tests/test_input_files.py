"""A file a tool is given to read is checked by one helper (passes.files.input_file_problem) before any
work: missing, a named pipe, a device, a folder are each said in one line, exit 2, and a named pipe is
never opened (its open waits for a writer, for ever)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from passes.files import input_file_problem

REPO = Path(__file__).resolve().parents[1]


def test_input_file_problem_says_what_is_wrong(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "m.onnx")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert input_file_problem(tmp_path / "m.onnx", "model") is None
    assert input_file_problem(tmp_path / "link", "model") is None
    assert input_file_problem(tmp_path / "pipe", "model") == f"model {tmp_path}/pipe is not a regular file (a named pipe)"
    assert input_file_problem("/dev/null", "model") == "model /dev/null is not a regular file (a character device)"
    assert input_file_problem(tmp_path, "model") == f"model {tmp_path} is not a regular file (a directory)"
    assert input_file_problem(tmp_path / "none", "model") == f"model not found: {tmp_path}/none"
    assert input_file_problem(tmp_path / "none", "reference", missing="reference file") \
        == f"reference file not found: {tmp_path}/none"
    assert input_file_problem(tmp_path / "dangling", "model") == f"model {tmp_path}/dangling is a broken symbolic link"
    assert input_file_problem(tmp_path / "m.onnx" / "x", "model").startswith(f"model {tmp_path}/m.onnx/x cannot be read (")
    assert input_file_problem(str(tmp_path / "a\x00b"), "model") == f"model {tmp_path}/a\\x00b holds a NUL byte, which no path can"
    assert input_file_problem(tmp_path / "p\x1b[2J\nq", "model") == f"model not found: {tmp_path}/p\\x1b[2J\\nq"


def _tools_given(pipe: Path, tmp_path: Path) -> dict[str, list[str]]:
    return {
        "ort_profile": ["-m", "tools.ort_profile", str(pipe), "--threads", "1", "--runs", "1"],
        "nodecount": ["-m", "tools.nodecount", str(pipe)],
        "diffview": ["-m", "tools.diffview", str(pipe), str(pipe), "--text"],
        "report_screenshot": ["-m", "tools.report_screenshot", str(pipe), "-o", str(tmp_path / "shot.png")],
        "tpu_calibration": ["-m", "tools.tpu_calibration", "synthetic", str(pipe), "-o", str(tmp_path / "cal.npz")],
        "tpu_check": ["-m", "tools.tpu_check", str(pipe), "--workdir", str(tmp_path / "w")],
    }


@pytest.mark.parametrize("tool", ["ort_profile", "nodecount", "diffview", "report_screenshot", "tpu_calibration",
                                  "tpu_check"])
def test_a_named_pipe_for_the_model_is_said_so_and_not_read(tool, tmp_path):
    """Found by the lead (s18): tools.ort_profile said 'model not found' for a named pipe (tools.tpu_check
    and tools.tpu_calibration too; tools.nodecount, tools.diffview and tools.report_screenshot said
    'not a file'); each tool had its own copy of the check."""
    pipe = tmp_path / "model.onnx"
    os.mkfifo(pipe)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, *_tools_given(pipe, tmp_path)[tool]], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    what = "page" if tool == "report_screenshot" else "model"
    assert result.stderr == f"error: {what} {pipe} is not a regular file (a named pipe)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_compile_model_reference_uses_the_same_check(tmp_path):
    import onnx.parser
    from scan_testing import TINY_MODEL_TEXT

    from pipelines import BadInput, compile_model

    os.mkfifo(tmp_path / "ref.npz")
    with pytest.raises(BadInput, match=r"^reference .*ref.npz is not a regular file \(a named pipe\)$"):
        compile_model(onnx.parser.parse_model(TINY_MODEL_TEXT), "eliminate-dead-nodes", reference=tmp_path / "ref.npz")

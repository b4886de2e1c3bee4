"""tools.ort_profile: per-op-type kernel time from ONNX Runtime's profiler, warm-up left out."""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save

from tools import ort_profile


def _model(path):
    weight = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])], [weight])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_profile_counts_each_op_type_per_timed_run(tmp_path):
    model = tmp_path / "m.onnx"
    _model(model)
    result = ort_profile.profile(model, threads=1, batch=8, runs=3)
    assert set(result["op_ms"]) == {"MatMul", "Relu"}
    assert result["runs"] == 3 and result["wall_ms"] > 0
    assert all(ms > 0 for ms in result["op_ms"].values())


def test_cli_table_and_json(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    _model(model)
    assert ort_profile.main([str(model), "--threads", "1,2", "--runs", "2", "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "  1 thr ms" in out and "  2 thr ms" in out and "speed-up" in out and "MatMul" in out
    data = json.loads((tmp_path / "p.json").read_text())
    assert [r["threads"] for r in data["results"]] == [1, 2]
    assert ort_profile.main([str(tmp_path / "missing.onnx")]) == 2


def test_a_json_destination_is_checked_before_profiling(tmp_path, capsys):
    """Found with '--json no/such/dir/p.json' (adversarial session s13): every thread count was
    profiled, then write_text died with a FileNotFoundError traceback and the numbers were lost."""
    model = tmp_path / "m.onnx"
    _model(model)
    assert ort_profile.main([str(model), "--threads", "1", "--runs", "1", "--json", str(tmp_path / "no" / "p.json")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: --json directory does not exist: {tmp_path}/no\n" and captured.out == ""


def test_bad_arguments_and_models_are_one_line_errors(tmp_path, capsys):
    """Found by s16-adv: '--threads ,' died with an IndexError traceback after nothing was profiled,
    '--runs 0' with a ZeroDivisionError after the profile, a file that is not ONNX with ONNX Runtime's
    InvalidProtobuf traceback; argparse's own errors printed its whole usage block."""
    model = tmp_path / "m.onnx"
    _model(model)
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    cases = {
        (str(model), "--threads", ","): "error: --threads must be comma-separated integers from 1 to 4096, got ','",
        (str(model), "--threads", "1,-2"): "error: --threads must be comma-separated integers from 1 to 4096, got '1,-2'",
        # a C int's worth of threads: ONNX Runtime's TypeError traceback (found by adv5)
        (str(model), "--threads", "2,99999999999"):
            "error: --threads must be comma-separated integers from 1 to 4096, got '2,99999999999'",
        (str(model), "--runs", "0"): "error: argument --runs: must be an integer >= 1, got '0' (see --help)",
        (str(model), "--batch", "-1"): "error: argument --batch: must be an integer >= 1, got '-1' (see --help)",
        # adv11: '--top -3' was int(): exit 0 with every op type but the last 3 shown
        (str(model), "--top", "-3"): "error: argument --top: must be an integer >= 1, got '-3' (see --help)",
        # (adv22: read before the 'profiling' line, not left to ONNX Runtime after it)
        (str(tmp_path / "bad.onnx"),): f"error: not an ONNX file, or truncated: {tmp_path}/bad.onnx (",
        (str(model), "--bogus"): "error: unrecognized arguments: --bogus (see --help)",
    }
    for argv, message in cases.items():
        try:
            code = ort_profile.main(list(argv))
        except SystemExit as exit_:   # argparse's usage errors
            code = exit_.code
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if not line.startswith("profiling ")]
        assert code == 2 and len(errors) == 1 and errors[0].startswith(message) and captured.out == "", argv

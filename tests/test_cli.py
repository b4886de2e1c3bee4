"""The apply CLI end to end, via subprocess with the venv's python: exit codes, one-line
errors, no output file after a failure, report.json."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
from scan_testing import TINY_MODEL_TEXT

REPO = Path(__file__).resolve().parents[1]
CLEANUP = "eliminate-dead-nodes,fold-constants"

BROKEN_PASS_PLUGIN = '''
from passes.base import Pass, PassResult
from passes.registry import register_pass

@register_pass
class Explodes(Pass):
    name = "test-explodes"
    def run(self, graph, ctx):
        raise RuntimeError("node 'shifted' (Add): cannot handle this")

@register_pass
class ChangesNumbers(Pass):
    name = "test-changes-numbers"
    def run(self, graph, ctx):
        for node in graph.nodes:
            if node.op == "Relu":
                node.op = "Neg"
        return PassResult(changed=True, stats={"broken": 1})

@register_pass
class BreaksGraph(Pass):
    name = "test-breaks-graph"
    def run(self, graph, ctx):
        graph.nodes[0].op = "NoSuchOp"   # onnx.checker refuses an op no opset has
        return PassResult(changed=True)
'''


def apply_cli(*args, cwd=REPO, extra_path=None):
    env = {"PYTHONPATH": str(REPO) + (f":{extra_path}" if extra_path else ""), "COLUMNS": "200",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "passes.apply", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def assert_one_line_error(result, code, *phrases):
    assert result.returncode == code, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "naive.onnx"
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), path)
    return path


def write_reference(path, scale=1.0):
    x = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    y = np.maximum(x + np.array([2.0, 3.0, 4.0], np.float32), 0) * scale
    np.savez(path, x=x, y=y, **{"y@float64": y.astype(np.float64)})


def test_success_writes_output_and_report(tmp_path, model_path):
    write_reference(tmp_path / "naive.ref.npz")  # found automatically beside the input
    out = tmp_path / "rolled.onnx"
    result = apply_cli(model_path, "--pipeline", CLEANUP, "-o", out, "--report", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Add", "Relu"]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["status"] == "ok" and report["exit_code"] == 0
    assert report["nodes"] == {"input": 5, "output": 2}
    assert report["verification"]["ok"] and report["reference"].endswith("naive.ref.npz")
    assert [p["name"] for p in report["run"]["passes"]] == ["eliminate-dead-nodes", "fold-constants"]
    assert "eliminate-dead-nodes" in result.stdout and "rel L2" in result.stdout


def test_verify_each_without_reference_and_keep_intermediates(tmp_path, model_path):
    out = tmp_path / "rolled.onnx"
    result = apply_cli(model_path, "--pipeline", CLEANUP, "-o", out, "--verify", "each", "--keep-intermediates")
    assert result.returncode == 0, result.stderr
    assert "no reference npz" in result.stderr
    assert sorted(p.name for p in (tmp_path / "rolled.onnx.intermediates").iterdir()) == \
        ["01-eliminate-dead-nodes.onnx", "02-fold-constants.onnx"]


def test_verification_failure_exits_3_and_writes_no_output(tmp_path, model_path):
    write_reference(tmp_path / "wrong.npz", scale=1.5)
    out = tmp_path / "rolled.onnx"
    result = apply_cli(model_path, "--pipeline", CLEANUP, "-o", out, "--reference", tmp_path / "wrong.npz",
                       "--report", tmp_path / "report")
    assert_one_line_error(result, 3, "verification failed", "output 'y'", "no output written")
    assert not out.exists()
    assert json.loads((tmp_path / "report" / "report.json").read_text())["status"] == "verification-failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["naive.onnx", "report", "wrong.npz"]


def test_verify_each_names_the_pass_that_broke_numbers(tmp_path, model_path):
    (tmp_path / "plugin_passes.py").write_text(BROKEN_PASS_PLUGIN)
    out = tmp_path / "rolled.onnx"
    result = apply_cli(model_path, "--plugin", "plugin_passes", "--pipeline",
                       "eliminate-dead-nodes,test-changes-numbers", "-o", out, "--verify", "each",
                       extra_path=tmp_path)
    assert_one_line_error(result, 3, "test-changes-numbers")
    assert not out.exists()


def test_a_pass_whose_output_fails_the_checker_stops_the_run_even_with_verify_none(tmp_path, model_path):
    (tmp_path / "plugin_passes.py").write_text(BROKEN_PASS_PLUGIN)
    out = tmp_path / "rolled.onnx"
    result = apply_cli(model_path, "--plugin", "plugin_passes", "--pipeline",
                       "eliminate-dead-nodes,test-breaks-graph", "-o", out, "--verify", "none",
                       extra_path=tmp_path)
    assert_one_line_error(result, 3, "pass 'test-breaks-graph'", "onnx.checker", "no output written")
    assert not out.exists()


def test_pass_failure_exits_4_naming_the_pass(tmp_path, model_path):
    (tmp_path / "plugin_passes.py").write_text(BROKEN_PASS_PLUGIN)
    out = tmp_path / "rolled.onnx"
    result = apply_cli(model_path, "--plugin", "plugin_passes", "--pipeline",
                       "eliminate-dead-nodes,test-explodes,simplify", "-o", out, extra_path=tmp_path)
    assert_one_line_error(result, 4, "pass 'test-explodes' failed after [eliminate-dead-nodes]",
                          "node 'shifted' (Add)")
    assert not out.exists()


def test_unknown_pipeline_lists_valid_names(tmp_path, model_path):
    result = apply_cli(model_path, "--pipeline", "sead", "-o", tmp_path / "o.onnx")
    assert_one_line_error(result, 2, "unknown pipeline 'sead'", "seed")


def test_unknown_pass_lists_valid_names(tmp_path, model_path):
    result = apply_cli(model_path, "--pipeline", "eliminate-dead-nodes,nope", "-o", tmp_path / "o.onnx")
    assert_one_line_error(result, 2, "unknown pass 'nope'", "eliminate-dead-nodes", "simplify")


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe definitely not protobuf \x00\x01")
    result = apply_cli(bad, "--pipeline", CLEANUP, "-o", tmp_path / "o.onnx")
    assert_one_line_error(result, 2, str(bad))


def test_missing_input(tmp_path):
    result = apply_cli(tmp_path / "none.onnx", "--pipeline", CLEANUP, "-o", tmp_path / "o.onnx")
    assert_one_line_error(result, 2, "input file not found")


def test_output_equal_to_input_needs_in_place(model_path):
    before = model_path.read_bytes()
    result = apply_cli(model_path, "--pipeline", CLEANUP, "-o", model_path)
    assert_one_line_error(result, 2, "--in-place")
    assert model_path.read_bytes() == before
    in_place = apply_cli(model_path, "--pipeline", CLEANUP, "-o", model_path, "--in-place")
    assert in_place.returncode == 0, in_place.stderr
    assert len(onnx.load(model_path).graph.node) == 2


def test_unwritable_output_directory(tmp_path, model_path):
    result = apply_cli(model_path, "--pipeline", CLEANUP, "-o", tmp_path / "missing" / "o.onnx")
    assert_one_line_error(result, 2, "output directory does not exist")


def test_bad_argument_is_one_line(tmp_path, model_path):
    result = apply_cli(model_path, "--verify", "sometimes", "-o", tmp_path / "o.onnx")
    assert_one_line_error(result, 2, "--verify")


def test_chunk_override_needs_a_step_with_that_option(tmp_path, model_path):
    result = apply_cli(model_path, "--pipeline", CLEANUP, "--chunk", "16", "-o", tmp_path / "o.onnx")
    assert_one_line_error(result, 2, "chunk")


def test_lists_and_help():
    listing = apply_cli("--list-pipelines", "--list-passes")
    assert listing.returncode == 0
    assert "seed" in listing.stdout and "reroll-scans{form=chunk24,chunk=24}" in listing.stdout
    for name in ("eliminate-dead-nodes", "fold-constants", "simplify"):
        assert name in listing.stdout
    help_text = apply_cli("--help").stdout
    assert "exit codes" in help_text and "3 verification failed" in help_text


def test_the_closing_line_names_the_second_size_where_an_input_is_symbolic(tmp_path):
    """Session s33: where a graph input has a symbolic dimension the final check also runs at size 3; the summary line
    says so after the first comparison (a static model's line is as before)."""
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    result = apply_cli(tmp_path / "m.onnx", "--pipeline", CLEANUP, "-o", tmp_path / "o.onnx")
    assert result.returncode == 0, result.stderr
    assert (f"wrote {tmp_path / 'o.onnx'} · verified against input model on random inputs: max abs 0, rel L2 0 "
            "(tolerance 1e-05), and the input model with symbolic input sizes at 3: rel L2 0\n") in result.stdout

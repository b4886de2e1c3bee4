"""The compiler runs where PyTorch is not installed: torch is an optional extra (pyproject.toml), and
a user compiles an export made elsewhere. test_layering.py reads the import statements; this runs the
CLI and the library API in a process where `torch`, `vmamba_ref` and `tools` cannot be imported, so a
late import inside a pass, or a dependency that starts needing torch, fails here.
(`sys.modules[name] = None` is how Python marks a module absent: `import torch` raises
ModuleNotFoundError and importlib.util.find_spec gives None, as onnxruntime.tools asks.)"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ABSENT = ("torch", "vmamba_ref", "tools")

CLI_WITHOUT_TORCH = f"""
import runpy, sys
for name in {ABSENT!r}:
    sys.modules[name] = None
sys.argv = ["passes.apply"] + sys.argv[1:]
runpy.run_module("passes.apply", run_name="__main__", alter_sys=True)
"""

API_WITHOUT_TORCH = f"""
import sys
for name in {ABSENT!r}:
    sys.modules[name] = None
from pipelines import compile_model
result = compile_model(sys.argv[1], sys.argv[2], output=sys.argv[3])
print(result.verification["rel_l2"], len(result.model.graph.node))
"""


def _run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("pipeline", ["cpu", "tpu"])
def test_apply_compiles_verifies_and_reports_without_torch(micro_naive, micro_report, tmp_path, pipeline):
    out, report = tmp_path / f"{pipeline}.onnx", tmp_path / "report"
    done = _run(CLI_WITHOUT_TORCH, micro_naive, "--pipeline", pipeline, "-o", out, "--report", report,
                "--verify", "end")
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.is_file() and (report / "index.html").is_file()
    summary = json.loads((report / "report.json").read_text())
    assert summary["status"] == "ok" and summary["totals"]["rerolled_scans"] == 5
    assert summary["verification"]["ok"] and summary["verification"]["rel_l2"] <= 1e-5
    # The same graph as with torch importable: a pass that keeps the graph when its library fails
    # (simplify does) would otherwise hide a missing import behind a larger graph.
    with_torch = json.loads((micro_report(pipeline) / "report.json").read_text())
    assert summary["run"]["ops_after"] == with_torch["run"]["ops_after"]
    assert [p["stats"] for p in summary["run"]["passes"]] == [p["stats"] for p in with_torch["run"]["passes"]]


def test_library_api_compiles_without_torch(micro_naive, tmp_path):
    out = tmp_path / "seed.onnx"
    done = _run(API_WITHOUT_TORCH, micro_naive, "seed", out)
    assert done.returncode == 0, done.stderr[-2000:]
    rel_l2, nodes = done.stdout.split()
    assert float(rel_l2) <= 1e-5 and out.is_file()
    assert 0 < int(nodes) < 4008 / 2   # re-rolled: the naive export has 4,008 nodes


def test_the_runner_really_hides_torch(micro_naive, tmp_path):
    # The check above can fail: a plugin that imports torch, run the same way, is refused as torch-less.
    plugin = tmp_path / "needs_torch_plugin.py"
    plugin.write_text("import torch\n")
    done = subprocess.run([sys.executable, "-c", CLI_WITHOUT_TORCH, str(micro_naive), "--pipeline", "seed",
                           "-o", str(tmp_path / "x.onnx"), "--plugin", "needs_torch_plugin"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": f"{REPO}:{tmp_path}"})
    assert done.returncode == 2
    assert "torch" in done.stderr and not (tmp_path / "x.onnx").exists()

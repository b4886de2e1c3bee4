"""Naive ONNX export of the reference model: golden op histogram, ORT vs PyTorch, dynamic batch, CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from golden_graphs import update_requested

from vmamba_ref import build_model, get_config
from vmamba_ref.export import ExportError, export_naive, main, ref_path_for, rel_l2, run_onnxruntime

GOLDEN = Path(__file__).parent / "golden" / "micro_naive_export.json"
REPO = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def micro():
    return build_model(get_config("micro"), seed=0)


@pytest.fixture(scope="module")
def static_export(micro, tmp_path_factory):
    path = tmp_path_factory.mktemp("static") / "naive.onnx"
    return export_naive(micro, path, batch=1, opset=17, seed=0)


@pytest.fixture(scope="module")
def dynamic_export(micro, tmp_path_factory):
    path = tmp_path_factory.mktemp("dynamic") / "naive.onnx"
    return export_naive(micro, path, batch=2, dynamic_batch=True, opset=17, seed=0)


def test_golden_histogram(static_export, request):
    record = {
        "model": "micro", "seed": 0, "batch": 1, "dynamic_batch": False, "opset": 17,
        "readout": "einsum", "index": "gather", "torch": torch.__version__.split("+")[0],
        "nodes": static_export.nodes, "op_histogram": static_export.op_histogram,
    }
    if update_requested(request):
        GOLDEN.write_text(json.dumps(record, indent=2) + "\n")
    assert GOLDEN.exists(), f"golden file {GOLDEN} is missing; record it deliberately with --update-golden"
    golden = json.loads(GOLDEN.read_text())
    assert static_export.op_histogram == golden["op_histogram"]
    assert static_export.nodes == golden["nodes"]


def test_files_and_reference(static_export):
    onnx_path, ref = static_export.onnx_path, static_export.ref_path
    assert ref == ref_path_for(onnx_path) and ref.name == "naive.ref.npz"
    assert sorted(p.name for p in onnx_path.parent.iterdir()) == ["naive.onnx", "naive.ref.npz"]
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    data = np.load(ref)
    assert set(data.files) == {"input", "logits", "logits@float64"}
    assert data["input"].shape == (1, 3, 64, 64) and data["logits"].shape == (1, 10)
    assert rel_l2(data["logits"], data["logits@float64"]) <= 1e-5


def test_onnxruntime_matches_pytorch(static_export):
    data = np.load(static_export.ref_path)
    got = run_onnxruntime(static_export.onnx_path, data["input"])
    assert rel_l2(got, data["logits"]) <= 1e-5
    assert static_export.checks["batch1"]["rel_l2"] <= 1e-5


def test_export_depends_on_input(static_export):
    # NOTES.md s.1: a broken CrossScan export gives a graph that ignores its input
    a = run_onnxruntime(static_export.onnx_path, np.zeros((1, 3, 64, 64), np.float32))
    b = run_onnxruntime(static_export.onnx_path, np.ones((1, 3, 64, 64), np.float32))
    assert np.abs(a - b).max() > 1e-3


def test_dynamic_batch_is_symbolic(micro, dynamic_export):
    model = onnx.load(str(dynamic_export.onnx_path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for b in (1, 3):
        x = torch.randn(b, 3, 64, 64, generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            want = micro(x).numpy()
        got = run_onnxruntime(dynamic_export.onnx_path, x.numpy())
        assert got.shape == (b, 10)
        assert rel_l2(got, want) <= 1e-5
    assert set(dynamic_export.checks) == {"batch1", "batch2", "batch3"}


def test_fork_chunk24_export_matches_pytorch_without_einsum(micro, tmp_path):
    """--scan chunk24: the fork's method, exported; checked against PyTorch on random inputs (not by
    shape: NOTES.md s.1) at two batch sizes, and the Einsums are gone as in the fork's graphs."""
    result = export_naive(micro, tmp_path / "fork.onnx", dynamic_batch=True, scan="chunk24", seed=0)
    assert result.op_histogram.get("Einsum", 0) == 0 and result.op_histogram["Conv"] > 0
    assert set(result.checks) == {"batch1", "batch3"}
    assert all(check["rel_l2"] <= 1e-5 for check in result.checks.values())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = micro(x).numpy()   # the model's own (sequential) scan, not the exported one
    assert rel_l2(run_onnxruntime(result.onnx_path, x.numpy()), want) <= 1e-5
    with pytest.raises(ExportError, match="unknown scan 'parallel'"):
        export_naive(micro, tmp_path / "x.onnx", scan="parallel")


def test_bad_requests(micro, tmp_path):
    with pytest.raises(ExportError, match="conv"):
        export_naive(micro, tmp_path / "x.onnx", readout="conv", dynamic_batch=True)
    with pytest.raises(ExportError, match="opset"):
        export_naive(micro, tmp_path / "x.onnx", opset=11)
    with pytest.raises(ExportError, match="does not exist"):
        export_naive(micro, tmp_path / "nowhere" / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vmamba_ref.export", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,needle", [
    (["--model", "micro", "--ckpt", "{tmp}/garbage.pt"], "not a checkpoint"),
    (["--model", "micro", "--ckpt", "{tmp}/missing.pt"], "no such file"),
    (["--model", "micro", "--readout", "conv", "--dynamic-batch"], "cannot be exported with --dynamic-batch"),
    (["--model", "nope"], "invalid choice"),
    (["--model", "micro", "--scan", "chunk24", "--readout", "mulsum"], "--readout and --index apply to --scan sequential only"),
    (["--model", "micro", "--depths", "1,x"], "depths must be comma-separated ints"),
    # an empty entry was dropped: "1,,2" built two stages (s35)
    (["--model", "micro", "--depths", "1,,2"], "depths must be comma-separated ints, got '1,,2'"),
    (["--model", "micro", "--depths", "1,2,"], "depths must be comma-separated ints, got '1,2,'"),
    (["--model", "micro", "--depths", "\u0661"], "depths must be comma-separated ints, got '\u0661'"),
    (["--model", "micro", "--depths", ""], "depths must not be empty"),
    (["--model", "micro", "--dims", "-4"], "dims must be a positive even int"),
    # session s32 (gen20): --resolution H, HxW or H,W
    (["--model", "micro", "--resolution", "24x"],
     "resolution must be H (square) or HxW (or H,W) in ASCII digits, e.g. 224 or 192x256, got '24x'"),
    (["--model", "micro", "--resolution", "24x32x40"], "got '24x32x40'"),
    (["--model", "micro", "--resolution", "24x-32"], "got '24x-32'"),
    (["--model", "micro", "--resolution", "24x3"], "img_width must be >= 4, got 3"),
    (["--model", "micro", "--resolution", "2,32"], "img_size must be >= 4, got 2"),
])
def test_cli_errors_are_one_line(tmp_path, args, needle):
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 100)
    out = tmp_path / "out.onnx"
    proc = run_cli(*[a.format(tmp=tmp_path) for a in args], "-o", str(out))
    assert proc.returncode == 2
    err_lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(err_lines) == 1 and needle in err_lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.pt"]


@pytest.mark.parametrize("resolution, shape, steps", [("24x32", (24, 32), 6 * 8 + 3 * 4 + 2 * 2),
                                                      ("36,28", (36, 28), 9 * 7 + 5 * 4 + 3 * 2)])
def test_cli_exports_a_non_square_input(tmp_path, capsys, resolution, shape, steps):
    """Session s32 (gen20): HxW planes (36x28 gives 9x7, 5x4, 3x2: odd sides after the stride-2 convs)."""
    out = tmp_path / "wide.onnx"
    assert main(["--model", "micro", "--dims", "16", "--depths", "1,1,1", "--resolution", resolution,
                 "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    data = np.load(ref_path_for(out))
    assert data["input"].shape == (1, 3, *shape)
    assert rel_l2(run_onnxruntime(out, data["input"]), data["logits"]) <= 1e-6
    model = onnx.load(str(out))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, *shape]
    # one readout per step, and each of the 3 blocks' deltaA and deltaB_u
    assert sum(n.op_type == "Einsum" for n in model.graph.node) == steps + 2 * 3
    assert "rel L2" in stdout


def test_cli_exports_micro_digits(tmp_path, capsys):
    out = tmp_path / "digits.onnx"
    assert main(["--model", "micro-digits", "--readout", "mulsum", "--index", "slice", "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "wrote" in stdout and "rel L2" in stdout
    data = np.load(ref_path_for(out))
    assert data["input"].shape == (1, 3, 64, 64)
    assert rel_l2(run_onnxruntime(out, data["input"]), data["logits"]) <= 1e-5

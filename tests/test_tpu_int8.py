"""INT8 through the real compiler (Sophgo tpu-mlir 1.30.2, BM1684X cmodel): micro-digits
calibrated on digits training images, the scan kept in BF16, accuracy on held-out images.

Runs only when the tpu-mlir venv is installed (.tpu-venv/ or $TPU_VENV) or TPU_CHECK=1.
CI: 6 min 18 s on the loaded dev 2-core machine (one batch-10 cmodel run is most of it).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tpu_testing import TPU_COMPILER_MARKS


pytestmark = TPU_COMPILER_MARKS

REPO = Path(__file__).resolve().parent.parent


def test_micro_digits_int8_bmodel_keeps_held_out_accuracy(tmp_path):
    """10 held-out digits through the INT8 bmodel (one batch of 10): the class PyTorch predicts
    on each, logits within cosine 0.99 of PyTorch's; compiled with the scan kept in BF16."""
    results = tmp_path / "accuracy.json"
    done = subprocess.run([sys.executable, "-m", "tools.tpu_accuracy", "--quantize", "INT8", "--count", "10",
                           "--batch", "10", "--calibration-count", "8", "--workdir", str(tmp_path / "work"),
                           "--json", str(results)], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(results.read_text())
    [int8] = report["modes"]
    assert int8["quantize"] == "INT8" and int8["compiled"] and int8["images"] == 10
    assert int8["agreement"] == 100.0
    assert int8["min_cosine"] >= 0.99
    assert int8["estimated_ms"] > 0
    verdict = json.loads((tmp_path / "work" / "int8.verdict.json").read_text())
    assert verdict["calibration_samples"] == 8
    # the auto quantization table kept the scan (198 ops: the carry across chunks as (decay, drive)
    # pairs in the chunk layout), its decay arithmetic (23: reshape-through-elementwise left fewer
    # Reshapes between the softplus and the scan), the merge (90: out_norm written out by
    # layernorm-channels-first) and the other LayerNorm2ds (144, each Sqrt's Rsqrt that tpu-mlir
    # makes of Div(x, Sqrt(v)) included) in BF16, and stage 3's x_proj (a grouped Conv of 72
    # channels: the kernel rule)
    assert verdict["float_ops"] == {"norm": 144, "decay": 23, "scan": 198, "merge": 90, "kernel": 1}
    assert "PASS" in done.stdout

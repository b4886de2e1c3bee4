"""Same input, same pipeline: a byte-identical model and the same report.json apart from timings,
also across processes with different hash seeds (set and dict orders must not leak into the graph)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _normalized(report_path: Path, folder: Path):
    """report.json without timings, with this run's folder written as <run>."""
    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items() if not k.endswith("seconds")}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            return value.replace(str(folder), "<run>")
        return value

    return walk(json.loads(report_path.read_text()))


@pytest.mark.parametrize("pipeline", ["seed", "cpu", "tpu"])
def test_same_input_same_output(pipeline, micro_naive, micro_report, tmp_path):
    first_folder = micro_report(pipeline).parent          # run in this process
    second_folder = tmp_path                               # run in a child with another hash seed
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO), COLUMNS="200")
    call = (f"from pipelines import compile_model; compile_model({str(micro_naive)!r}, {pipeline!r}, "
            f"output={str(second_folder / f'{pipeline}.onnx')!r}, report={str(second_folder / 'report')!r})")
    result = subprocess.run([sys.executable, "-c", call], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    first_model = (first_folder / f"{pipeline}.onnx").read_bytes()
    assert (second_folder / f"{pipeline}.onnx").read_bytes() == first_model
    first = _normalized(first_folder / "report" / "report.json", first_folder)
    second = _normalized(second_folder / "report" / "report.json", second_folder)
    assert first == second

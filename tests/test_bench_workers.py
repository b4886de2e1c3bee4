"""tools.bench_workers: ONNX Runtime rows in worker processes (tools.bench --ort-spinning), on a tiny model."""
from __future__ import annotations

import os
from multiprocessing import resource_tracker
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tools import bench
from tools.bench_rows import BenchError, OnnxRunner
from tools.bench_workers import SETTLE_SECONDS, OnnxWorker


def _tiny_model(path: Path, seed: int) -> Path:
    """input [N, 3, 4, 4] -> Flatten -> MatMul [48, 10] -> Relu: logits for 10 classes, dynamic batch."""
    weight = np.random.default_rng(seed).standard_normal((48, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["mm"]),
         helper.make_node("Relu", ["mm"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def _child_pids() -> set[int]:
    """Processes whose parent is this one (multiprocessing's resource tracker started first, so it is in both sets)."""
    resource_tracker.ensure_running()
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                children.add(int(entry.name))
    return children


@pytest.fixture
def x():
    return np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)


def test_worker_gives_the_in_process_output_and_its_own_time(tmp_path, x):
    before = _child_pids()
    path = _tiny_model(tmp_path / "tiny.onnx", seed=0)
    local = OnnxRunner(path, 1, spinning=True)
    worker = OnnxWorker(path, 1, spinning=True)
    try:
        assert worker.session_seconds > 0 and worker.static_batch is None and worker.unsupported(5) is None
        assert _child_pids() - before == {worker.process.pid}
        for _ in range(2):
            np.testing.assert_array_equal(worker.run(x), local.run(x))
            assert 0 < worker.last_seconds < 5
        assert len(worker.started) == 2 and worker.started[0] < worker.started[1]
    finally:
        worker.close()
    assert worker.process.exitcode == 0 and _child_pids() == before


def test_rows_run_interleaved_in_rotated_order_with_a_pause_before_each(tmp_path, x):
    """bench._time_rows with three worker rows: warm-up in row order, then each round rotated by one;
    the worker-side start times give the order, and consecutive runs are at least SETTLE_SECONDS apart."""
    keys = ["a", "b", "c"]
    rows = [{"key": key, "runner": OnnxWorker(_tiny_model(tmp_path / f"{key}.onnx", seed=i), 1), "times": {},
             "skipped": {}, "errors": {}, "agreement": {}, "warmup_s": {}} for i, key in enumerate(keys)]
    args = SimpleNamespace(batches=[2], repeats=3, ort_spinning=True, skip_slow_naive=False, ablation_batches=None)
    try:
        expected = {row["key"]: row["runner"].run(x) for row in rows}
        refs = {2: {"x": x, "f64": expected["a"], "f32": expected["a"]}}
        with bench.Display() as display:
            bench._time_rows(args, rows, refs, display)
    finally:
        for row in rows:
            row["runner"].close()
    runs = sorted((started, row["key"]) for row in rows for started in row["runner"].started[1:])   # [0]: the call above
    assert [key for _, key in runs] == ["a", "b", "c",  "a", "b", "c",  "b", "c", "a",  "c", "a", "b"]
    gaps = np.diff([started for started, _ in runs])
    assert gaps.min() >= SETTLE_SECONDS
    for row in rows:
        assert len(row["times"]["2"]) == 3 and all(0 < t < SETTLE_SECONDS for t in row["times"]["2"])
    assert rows[0]["errors"]["2"]["rel_l2"] == 0 and rows[1]["errors"]["2"]["rel_l2"] > 0.1
    assert rows[0]["agreement"]["2"] == 1.0


def test_a_model_the_worker_cannot_load_is_a_one_line_error_and_leaves_no_process(tmp_path):
    before = _child_pids()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file\n")
    with pytest.raises(BenchError) as caught:
        OnnxWorker(bad, 1)
    message = str(caught.value)
    assert message.startswith(f"{bad}: ONNX Runtime could not load it: ") and "\n" not in message
    assert _child_pids() == before


def test_a_worker_that_dies_mid_run_is_a_one_line_error(tmp_path, x):
    before = _child_pids()
    worker = OnnxWorker(_tiny_model(tmp_path / "tiny.onnx", seed=0), 1)
    worker.process.kill()
    worker.process.join()
    with pytest.raises(BenchError, match=r"^the ONNX Runtime worker for .*tiny\.onnx died \(exit code -9\)$"):
        worker.run(x)
    worker.close()
    assert _child_pids() == before

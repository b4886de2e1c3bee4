"""passes/ort_worker.py and its child passes/ort_child.py on their own: the frames both sides read and write, the
memory cap, and how a run says that the child failed (the signal and hardening tests in tests/test_hardening.py
drive them end to end). Written for s23's mutation run: these had no test of their own."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from passes import ort_child, ort_worker


class _Trickle(io.RawIOBase):
    """A stream that gives at most `step` bytes a read, as a pipe gives a long frame in pieces."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self.data, self.step = data, step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        chunk, self.data = self.data[:size], self.data[size:]
        return chunk


def test_frames_are_read_whole_from_a_stream_that_gives_a_few_bytes_at_a_time():
    written = io.BytesIO()
    frames = [b"", b"x", bytes(range(256)) * 5, b'{"names": ["a\\nb"]}']
    for frame in frames:
        ort_child.write_frame(written, frame)
    data = written.getvalue()
    assert data[:8] == bytes(8) and data[8:16] == (1).to_bytes(8, "little")   # 8-byte little-endian lengths
    stream = _Trickle(data)
    assert [ort_child.read_frame(stream) for _ in frames] == frames
    with pytest.raises(EOFError):
        ort_child.read_frame(stream)


@pytest.mark.parametrize("cut", [0, 5, 8, 9, 12])
def test_a_frame_cut_short_is_an_eof_error(cut):
    """Cut in its length (0, 5 bytes) or in its bytes (8 + 0, 1, 4 of 5): EOFError, which the worker reads as the
    child's end; never a short frame taken for a whole one."""
    written = io.BytesIO()
    ort_child.write_frame(written, b"hello")
    with pytest.raises(EOFError):
        ort_child.read_frame(_Trickle(written.getvalue()[:cut]))


def _rlimit_in_a_child(code: str) -> tuple[int, int]:
    """RLIMIT_AS (soft, hard) after `code` runs in a fresh Python (a hard cap cannot be raised again in this one)."""
    script = ("import resource, sys; sys.path.insert(0, 'passes'); import ort_child\n" + code +
              "\nprint(*resource.getrlimit(resource.RLIMIT_AS))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(ort_child.__file__))))
    assert done.returncode == 0, done.stderr
    soft, hard = done.stdout.split()
    return int(soft), int(hard)


def test_the_address_space_cap_is_set_and_never_raised_past_a_cap_already_there():
    gib = 1 << 30
    assert _rlimit_in_a_child(f"ort_child.cap_address_space({3 * gib})") == (3 * gib, 3 * gib)
    already = f"resource.setrlimit(resource.RLIMIT_AS, ({2 * gib}, {2 * gib}))\n"
    assert _rlimit_in_a_child(already + f"ort_child.cap_address_space({3 * gib})") == (2 * gib, 2 * gib)
    assert _rlimit_in_a_child(already + f"ort_child.cap_address_space({gib})") == (gib, gib)


def test_a_system_that_takes_no_address_space_cap_runs_uncapped(monkeypatch):
    import resource

    def refuse(*args):
        raise ValueError("not supported")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    ort_child.cap_address_space(1 << 30)   # no error: uncapped, as before the cap


@pytest.mark.parametrize("page, pages, limit", [(4096, 1 << 20, 2 << 30), (4096, 0, 16 << 30)])
def test_memory_limit_is_half_the_machines_memory(monkeypatch, page, pages, limit):
    values = {"SC_PAGE_SIZE": page, "SC_PHYS_PAGES": pages}
    monkeypatch.setattr(ort_worker.os, "sysconf", lambda name: values[name])
    assert ort_worker.memory_limit() == limit


def test_memory_limit_falls_back_to_16_gib_where_memory_cannot_be_read(monkeypatch):
    def unreadable(name):
        raise ValueError(name)

    monkeypatch.setattr(ort_worker.os, "sysconf", unreadable)
    assert ort_worker.memory_limit() == 16 << 30


@pytest.mark.parametrize("code, message", [
    (-signal.SIGKILL, "ONNX Runtime's process ended by SIGKILL (a native abort or the memory it asked for: "
                      "verification lets it take 1.5 GiB of address space)"),
    (-99, "ONNX Runtime's process ended by signal 99 (a native abort or the memory it asked for: "
          "verification lets it take 1.5 GiB of address space)"),
    (3, "ONNX Runtime's process ended (exit 3)"),
    (0, "ONNX Runtime's process ended (exit 0)"),
])
def test_a_child_that_ended_is_said_how(code, message):
    worker = ort_worker._Worker.__new__(ort_worker._Worker)
    worker.limit = 3 << 29
    worker.process = type("Ended", (), {"returncode": code})()
    assert worker._how_it_ended() == message


def _identity_model(names: list[str]) -> bytes:
    graph = helper.make_graph([helper.make_node("Identity", [name], [f"{name} out"]) for name in names], "g",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names],
                              [helper.make_tensor_value_info(f"{name} out", TensorProto.FLOAT, None) for name in names])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_run_brings_back_every_output_by_name_whole():
    """Names that are hostile text (a newline, an npz member's name), and 4 MiB each way (many pipe reads)."""
    names = ["arr_1", "x\ny", "arr_0.npy"]
    feeds = {name: np.random.default_rng(index).normal(size=(1 << 20,)).astype(np.float32)
             for index, name in enumerate(names)}
    outputs = ort_worker.run(_identity_model(names), None, feeds)
    assert list(outputs) == [f"{name} out" for name in names]
    for name in names:
        np.testing.assert_array_equal(outputs[f"{name} out"], feeds[name])


def test_a_model_read_from_a_path_and_a_missing_input(tmp_path):
    path = tmp_path / "identity.onnx"
    path.write_bytes(_identity_model(["a", "b"]))
    outputs = ort_worker.run(None, str(path), {"a": np.ones(2, np.float32), "b": np.zeros(3, np.float32)})
    assert [(name, value.tolist()) for name, value in outputs.items()] == [("a out", [1.0, 1.0]),
                                                                            ("b out", [0.0, 0.0, 0.0])]
    with pytest.raises(ort_worker.MissingInputs) as missing:
        ort_worker.run(None, str(path), {"a": np.ones(2, np.float32)})
    assert (missing.value.names, str(missing.value)) == (["b"], "missing inputs")


def test_a_child_killed_mid_run_is_one_error_and_the_next_run_starts_another():
    ort_worker.run(_identity_model(["a"]), None, {"a": np.ones(1, np.float32)})
    first = ort_worker._worker
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    outputs = ort_worker.run(_identity_model(["a"]), None, {"a": np.full(1, 2.0, np.float32)})
    assert ort_worker._worker is not first and ort_worker._worker.alive() and outputs["a out"].tolist() == [2.0]
    with pytest.raises(ort_worker.WorkerError) as failed:
        ort_worker.run(b"not a model", None, {})
    assert "INVALID_PROTOBUF" in str(failed.value)   # ONNX Runtime's own message
    assert ort_worker._worker.alive()   # a failed run is an answer: the same child goes on


def test_a_sequence_output_is_stacked_and_a_ragged_one_refused():
    assert ort_child._as_array("s", [np.zeros(2), np.ones(2)]).tolist() == [[0.0, 0.0], [1.0, 1.0]]
    array = np.arange(3)
    assert ort_child._as_array("t", array) is array
    with pytest.raises(ValueError) as ragged:
        ort_child._as_array("s\n", [np.zeros(2), np.ones(3)])
    assert str(ragged.value) == ("output 's\\n' is a sequence of tensors of different shapes, which verification "
                                 "cannot compare")


def test_one_child_serves_every_run_of_a_process():
    ort_worker.run(_identity_model(["a"]), None, {"a": np.ones(1, np.float32)})
    first = ort_worker._worker
    ort_worker.run(_identity_model(["a"]), None, {"a": np.ones(1, np.float32)})
    assert ort_worker._worker is first and first.alive() and first.owner == os.getpid()


def test_a_child_that_died_answers_how_it_ended():
    worker = ort_worker._Worker(ort_worker.memory_limit())
    worker.process.kill()
    worker.process.wait()
    with pytest.raises(ort_worker.WorkerError) as ended:
        worker.run(_identity_model(["a"]), None, {"a": np.ones(1, np.float32)})
    assert str(ended.value).startswith("ONNX Runtime's process ended by SIGKILL (a native abort or the memory")


def test_an_interrupt_mid_run_kills_the_child_and_the_next_run_starts_another(monkeypatch):
    ort_worker.run(_identity_model(["a"]), None, {"a": np.ones(1, np.float32)})
    first = ort_worker._worker

    def interrupted(self, *args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(ort_worker._Worker, "run", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ort_worker.run(_identity_model(["a"]), None, {"a": np.ones(1, np.float32)})
    assert ort_worker._worker is None and not first.alive()
    assert ort_worker.run(_identity_model(["a"]), None, {"a": np.ones(1, np.float32)})["a out"].tolist() == [1.0]


def test_the_child_imports_nothing_from_pythonpath_or_the_working_folder(tmp_path, monkeypatch):
    """`python -I`: an onnxruntime.py or numpy.py planted on PYTHONPATH or in the working folder is never run."""
    for name in ("onnxruntime.py", "numpy.py"):
        (tmp_path / name).write_text("raise SystemExit('planted module imported')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    if ort_worker._worker is not None:
        ort_worker._worker.kill()
    outputs = ort_worker.run(_identity_model(["a"]), None, {"a": np.full(2, 3.0, np.float32)})
    assert outputs["a out"].tolist() == [3.0, 3.0]
    ort_worker._worker.kill()   # the next test's child starts where PYTHONPATH is as it was


def test_a_child_started_by_a_thread_that_ended_serves_the_next_run():
    """PR_SET_PDEATHSIG kills the child when the *thread* that started it ends: compile_model in a thread that
    then ended left a child that the kernel killed, and another thread's run in flight was blamed on its model
    ('the input model does not run: ... ended by SIGKILL', exit 2; adv20). The child is started by one lasting
    thread now: the same child serves the next run."""
    import threading
    import time

    ort_worker._stop()   # a fresh child, started by the thread below
    ort_worker._worker = None
    thread = threading.Thread(target=ort_worker.run, args=(_identity_model(["a"]), None, {"a": np.ones(1, np.float32)}))
    thread.start()
    thread.join()
    first = ort_worker._worker
    time.sleep(0.5)   # the kernel's signal, were it sent, is delivered by now
    assert first.alive()
    assert ort_worker.run(_identity_model(["a"]), None, {"a": np.ones(1, np.float32)})["a out"].tolist() == [1.0]
    assert ort_worker._worker is first


def _decomposed_gelu_model() -> bytes:
    """x * (1 + erf(x / sqrt 2)) * 0.5 as five nodes: ONNX Runtime fuses them into its Gelu kernel at its default
    level, whose rounding differs from the five ops' on some elements."""
    nodes = [helper.make_node("Div", ["x", "root2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    constants = [helper.make_tensor(name, TensorProto.FLOAT, [], [value])
                 for name, value in (("root2", 1.4142135381698608), ("one", 1.0), ("half", 0.5))]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [10000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [10000])], constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_optimize_false_runs_the_graph_as_written_and_true_as_onnx_runtime_would():
    """The input model's runs ask for no graph optimisations (a naive VMamba-T export's session: 4.4 s instead of
    29.7 s); the flag must reach the child's session, and the default must stay ONNX Runtime's own."""
    import onnxruntime as ort

    model = _decomposed_gelu_model()
    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 3

    def in_process(level):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    as_written = ort_worker.run(model, None, {"x": x}, optimize=False)["y"]
    optimised = ort_worker.run(model, None, {"x": x})["y"]
    np.testing.assert_array_equal(as_written, in_process(ort.GraphOptimizationLevel.ORT_DISABLE_ALL))
    np.testing.assert_array_equal(optimised, in_process(ort.GraphOptimizationLevel.ORT_ENABLE_ALL))
    assert np.count_nonzero(as_written != optimised) > 100   # else this model could not tell the two apart


def test_a_feed_of_python_objects_is_refused_in_one_line_and_the_child_goes_on_serving():
    """Found by adv23: an object array among the feeds (run_model from the library) was pickled by np.savez, which the
    child never unpickles: it died on it, and the run was said to have 'ended by SIGKILL (a native abort or the memory
    it asked for)'. Now refused before anything is sent, naming the input (escaped); the same child serves the next."""
    model = _identity_model(["x\x1b"])
    ort_worker.run(model, None, {"x\x1b": np.ones(2, np.float32)})
    child = ort_worker._worker.process.pid
    with pytest.raises(ort_worker.WorkerError) as refused:
        ort_worker.run(model, None, {"x\x1b": np.array([object(), object()])})
    assert str(refused.value) == "input 'x\\x1b' is an array of Python objects, not of numbers, booleans or strings"
    assert ort_worker._worker.process.pid == child
    np.testing.assert_array_equal(ort_worker.run(model, None, {"x\x1b": np.ones(2, np.float32)})["x\x1b out"], np.ones(2))

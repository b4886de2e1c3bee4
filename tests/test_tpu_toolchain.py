"""tools.tpu_toolchain without the compiler: reasons from logs, the profile estimate, output matching."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from passes.interrupts import Terminated
from tools import tpu_check, tpu_toolchain as tc

FIRMWARE_LOG = """[0] nodechip_cumsum axis = 2:
ERROR: ASSERT /workspace/tpu-latest/firmware_core/src/global_layer/nodechip_cumsum.c: nodechip_cumsum: 147: false
ASSERT info: cumsum input tensor is too large, need to slice

Obtained 10 stack frames.
Traceback (most recent call last):
RuntimeError: [!Error]: tpuc-opt ...
"""

MLIR_LOG = """<unknown>:0: error: loc("x_Einsum"): 'top.Einsum' op attribute 'mode' failed to satisfy constraint
Traceback (most recent call last):
RuntimeError: [!Error]: tpuc-opt tpu_origin.mlir --shape-infer -o tpu.mlir
"""

CPP_ASSERT_LOG = """tpuc-opt: /work/lib/Dialect/Top/Canonicalize/Slice.cpp:97: auto MergeSlicePattern::matchAndRewrite(...): Assertion `cur_s > 0' failed.
Aborted (core dumped)
"""


def test_firmware_assert_reason_includes_info_and_place():
    reason = tc.failure_reason(FIRMWARE_LOG)
    assert reason.startswith("cumsum input tensor is too large, need to slice")
    assert "nodechip_cumsum.c" in reason and "147" in reason


def test_mlir_diagnostic_preferred_over_python_traceback():
    assert tc.failure_reason(MLIR_LOG).startswith("loc(\"x_Einsum\"): 'top.Einsum' op attribute 'mode'")


MLIR_ASSERT_LOG = """[Running]: tpuc-opt m_origin.mlir --shape-infer -o m.mlir
ASSERT executed at/__w/tpu-mlir/tpu-mlir/lib/Dialect/Top/Interfaces/MatMul.cpp:66
ASSERT INFO:a_s[i] == b_s[i] || a_s[i] == 1 || b_s[i] == 1
RuntimeError: [!Error]: tpuc-opt m_origin.mlir --shape-infer -o m.mlir
"""


def test_mlir_side_assert_reason_includes_condition_and_place():
    assert tc.failure_reason(MLIR_ASSERT_LOG) == "a_s[i] == b_s[i] || a_s[i] == 1 || b_s[i] == 1 (MatMul.cpp:66)"


def test_cpp_assertion_reason():
    assert "Assertion `cur_s > 0' failed" in tc.failure_reason(CPP_ASSERT_LOG)


def test_python_error_last_line_and_fallback():
    assert tc.failure_reason("x\nKeyError: 'a'\nValueError: bad\n") == "ValueError: bad"
    assert tc.failure_reason("just this\n") == "just this"


def test_profile_estimate_is_read_and_summed(tmp_path):
    (tmp_path / "compiler_profile_0.txt").write_text(
        "API_END total_cycle:4450702|b:3139|g:6280\nTCYC : 4450702\n\n"
        "flops: 401344, runtime: 4.450702ms, ComputationAbility: 0.000090T\n")
    estimate = tc.read_profile(tmp_path)
    assert estimate.milliseconds == 4.450702 and estimate.cycles == 4450702 and estimate.flops == 401344
    assert tc.read_profile(tmp_path / "nothing") is None


PROFILE_TIMELINE = """ENGINE_BD                    ENGINE_GDMA
                             Conv2D_16|GDMA_TENSOR|s:0|b:0|g:1|e:302|t:303|dr:0|sz:1728|bw:5.31
Conv2D_16|CONV|s:303|b:1|g:3|e:700|t:398
                             Permute_17|GDMA_TENSOR|s:701|b:1|g:5|e:800|t:100|dr:0|sz:65536|bw:12.58
Permute_17|AR|s:801|b:2|g:5|e:900|t:100
MatMul_30|AR|s:901|b:3|g:5|e:1000|t:100    Permute_31|GDMA_TENSOR|s:901|b:3|g:6|e:1000|t:100|dr:1|sz:64|bw:1
"""


def test_time_shares_by_layer_type_from_the_timeline():
    # Spans (first start to last end): Conv2D_16 0..700, Permute_17 701..900, Permute_31 and MatMul_30 901..1000.
    shares = tc.layer_type_shares(PROFILE_TIMELINE)
    assert list(shares) == ["Conv2D", "Permute", "MatMul"]
    assert shares == {"Conv2D": 700 / 1097, "Permute": (199 + 99) / 1097, "MatMul": 99 / 1097}
    assert tc.layer_type_shares("no timeline here") == {}


def test_outputs_matched_by_tpu_mlir_suffix_then_order():
    reference = {"logits": np.array([[1.0, 2.0, 3.0]]), "state": np.ones((2, 2))}
    produced = {"state_Add": np.ones((2, 2)), "logits_Gemm": np.array([[1.0, 2.0, 3.1]])}
    matches = {m.name: m for m in tpu_check.match_outputs(reference, produced)}
    assert matches["logits"].bmodel_name == "logits_Gemm" and matches["state"].cosine == 1.0
    assert abs(matches["logits"].max_abs - 0.1) < 1e-12 and matches["logits"].cosine < 1.0


def test_tool_environment_puts_the_venv_first(tmp_path):
    env = tc.tool_environment(tmp_path)
    assert env["PATH"].startswith(str(tmp_path / "bin")) and env["PYTHONPATH"] == str(tmp_path / "shim")


def _gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for a parent that does not reap counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as status:
            return status.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Terminated])
def test_an_interrupt_stops_the_tool_and_the_tools_it_started(interrupt, tmp_path):
    """Found by s16-adv: SIGTERM to tools.tpu_check (exit 143) and Ctrl-C (exit 130) left model_deploy,
    in a session of its own, compiling for minutes with no parent."""
    pid_file = tmp_path / "pid"

    def tick(line):
        if pid_file.exists() and pid_file.read_text().strip():
            raise interrupt()

    command = ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"]
    with pytest.raises(interrupt):
        tc.run_logged("sleep", command, tmp_path, dict(os.environ), tmp_path / "log", tick=tick)
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def test_tpu_check_turns_sigterm_into_exit_143(monkeypatch, tmp_path, capsys):
    def interrupted_check(args, console):
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)   # SIGTERM cleans up too
        raise Terminated()

    monkeypatch.setattr(tpu_check, "check", interrupted_check)
    (tmp_path / "m.onnx").write_bytes(b"")
    assert tpu_check.main([str(tmp_path / "m.onnx")]) == 143
    assert capsys.readouterr().err == "error: interrupted\n"


# Found by the s16 trust review: run_logged wrote its log with plain open() and tpu_check its npz with
# np.savez, so a link planted at the name wrote through it, and an interrupt left half a log.
class _Tool:
    """A stand-in for subprocess.Popen: the tool prints a line and exits 0, or is interrupted half way."""

    interrupted = False

    def __init__(self, command, stdout, **kwargs):
        stdout.write(b"logged\n" if not self.interrupted else b"half a l")
        stdout.flush()
        self.returncode = 0

    def wait(self, timeout=None):
        if self.interrupted:
            raise KeyboardInterrupt
        return 0


def test_run_logged_never_writes_through_a_planted_link(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "step.log").symlink_to(victim)
    monkeypatch.setattr(tc.subprocess, "Popen", _Tool)
    step = tc.run_logged("step", ["tool"], tmp_path, {}, tmp_path / "step.log")
    assert step.ok and victim.read_text() == "keep me"
    assert not step.log.is_symlink() and step.log.read_text() == "logged\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step.log", "victim.txt"]


def test_run_logged_interrupted_leaves_no_half_log(tmp_path, monkeypatch):
    import pytest

    (tmp_path / "old.log").write_text("the last run's log\n")
    monkeypatch.setattr(tc.subprocess, "Popen", type("Interrupted", (_Tool,), {"interrupted": True}))
    stopped = []
    monkeypatch.setattr(tc, "stop_group", stopped.append)     # the stand-in has no process group to stop
    for name in ("new.log", "old.log"):
        with pytest.raises(KeyboardInterrupt):
            tc.run_logged("step", ["tool"], tmp_path, {}, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.log"]
    assert (tmp_path / "old.log").read_text() == "the last run's log\n"
    assert len(stopped) == 2


def test_tpu_check_never_writes_its_npz_through_a_planted_link(tmp_path, monkeypatch):
    import onnx
    import onnx.parser
    import pytest
    from scan_testing import TINY_MODEL_TEXT

    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), tmp_path / "tiny.onnx")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    work = tmp_path / "work"
    real_prepare = tpu_check.prepare_workdir

    def prepare_then_plant(workdir, kept):
        real_prepare(workdir, kept)
        for name in ("input.npz", "onnxruntime_outputs.npz"):
            (workdir / name).symlink_to(victim)

    class Stop(Exception):
        pass

    def stop(*args):   # the npz are written; what follows needs tpu-mlir
        raise Stop

    monkeypatch.setattr(tpu_check, "prepare_workdir", prepare_then_plant)
    monkeypatch.setattr(tc, "venv_dir", stop)
    args = tpu_check.build_parser().parse_args([str(tmp_path / "tiny.onnx"), "--workdir", str(work)])
    with pytest.raises(Stop):
        tpu_check.check(args, console=None)
    assert victim.read_bytes() == b"keep me"
    for name in ("input.npz", "onnxruntime_outputs.npz"):
        assert not (work / name).is_symlink()
    assert np.load(work / "input.npz")["x"].shape == (2, 3)
    assert np.load(work / "onnxruntime_outputs.npz")["y"].shape == (2, 3)

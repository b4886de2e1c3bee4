"""INT8 tooling without the compiler: calibration sets, tools.tpu_check's usage errors and workdir,
tools.tpu_accuracy's batching, scoring and acceptance rule."""
from __future__ import annotations

import math
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, save

from passes.interrupts import Terminated
from tools import tpu_accuracy, tpu_calibration
from tools.tpu_accuracy import ModeAccuracy

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def relu_model(tmp_path) -> Path:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    path = tmp_path / "relu.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_synthetic_calibration_set_is_fixed_and_shaped_like_the_inputs(relu_model):
    first = tpu_calibration.synthetic_set(relu_model, count=4, seed=0)
    again = tpu_calibration.synthetic_set(relu_model, count=4, seed=0)
    assert list(first) == ["x"] and first["x"].shape == (4, 2, 3) and first["x"].dtype == np.float32
    np.testing.assert_array_equal(first["x"], again["x"])
    np.testing.assert_array_equal(first["x"], np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32))


def _token_model(path: Path, gathered: bool = True) -> Path:
    """int64 ids [1, 8] -> an embedding of 64 rows (transformers' input_ids), or -> Cast (no table)."""
    from onnx import numpy_helper

    node = helper.make_node("Gather", ["table", "ids"], ["y"]) if gathered else helper.make_node("Cast", ["ids"], ["y"], to=1)
    table = [numpy_helper.from_array(np.arange(64 * 4, dtype=np.float32).reshape(64, 4), "table")] if gathered else []
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4] if gathered else [1, 8])],
                              table)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_synthetic_token_ids_are_drawn_from_the_embedding_rows(tmp_path):
    """hf-mamba2's input_ids (int64, vocab 64): before s26 standard-normal values cast to int64, ids -3..3 with
    negative ones (the first of 8 samples [0 0 0 0 0 0 1 0]); now uniform over the table's 64 rows."""
    ids = tpu_calibration.synthetic_set(_token_model(tmp_path / "tokens.onnx"), count=8, seed=0)["ids"]
    assert ids.shape == (8, 1, 8) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, np.random.default_rng(0).integers(0, 64, (8, 1, 8)))
    assert ids.min() >= 0 and ids.max() <= 63 and len(np.unique(ids)) > 30


def test_synthetic_refuses_an_integer_input_that_indexes_no_table(tmp_path):
    with pytest.raises(ValueError) as refused:
        tpu_calibration.synthetic_set(_token_model(tmp_path / "ints.onnx", gathered=False), count=8, seed=0)
    assert str(refused.value) == ("input 'ids' is of type int64 and indexes no constant table (a Gather): standard-normal "
                                  "values are no sample of it; give a calibration set of your own")


def test_digits_calibration_set_uses_training_images_only():
    from vmamba_ref.digits import load_digits_split

    split = load_digits_split()
    cal = tpu_calibration.digits_set(3, batch=2)["input"]
    assert cal.shape == (3, 2, 3, 64, 64)
    np.testing.assert_array_equal(cal.reshape(6, 3, 64, 64), split.x_train[:6])
    with pytest.raises(ValueError, match="between 1 and 1297"):
        tpu_calibration.digits_set(1000, batch=2)


@pytest.mark.parametrize("extra, message", [
    ([], "error: --quantize INT8 needs --calibration (an npz of stacked inputs: python -m tools.tpu_calibration)\n"),
    (["--calibration", "/nonexistent/cal.npz"], "error: calibration set not found: /nonexistent/cal.npz\n"),
])
def test_tpu_check_int8_usage_errors(relu_model, tmp_path, extra, message):
    done = run("-m", "tools.tpu_check", str(relu_model), "--quantize", "INT8", "--workdir", str(tmp_path / "w"), *extra)
    assert done.returncode == 2 and done.stderr == message
    assert not (tmp_path / "w").exists()


def test_tpu_check_refuses_a_calibration_set_of_the_wrong_shape(relu_model, tmp_path):
    np.savez(tmp_path / "cal.npz", x=np.zeros((4, 3, 2), np.float32))
    done = run("-m", "tools.tpu_check", str(relu_model), "--quantize", "INT8", "--calibration", str(tmp_path / "cal.npz"),
               "--workdir", str(tmp_path / "w"))
    assert done.returncode == 2
    assert done.stderr == f"error: calibration set {tmp_path / 'cal.npz'}['x'] has shape [4, 3, 2], want [samples, 2, 3]\n"


def test_calibration_only_with_int8(relu_model, tmp_path):
    np.savez(tmp_path / "cal.npz", x=np.zeros((4, 2, 3), np.float32))
    done = run("-m", "tools.tpu_check", str(relu_model), "--quantize", "BF16", "--calibration", str(tmp_path / "cal.npz"),
               "--workdir", str(tmp_path / "w"))
    assert done.returncode == 2 and done.stderr == "error: --calibration is for --quantize INT8 only\n"


def test_batched_pads_the_last_batch_with_the_last_image():
    images = np.arange(5, dtype=np.float32).reshape(5, 1)
    assert tpu_accuracy.batched(images, 2).tolist() == [[[0], [1]], [[2], [3]], [[4], [4]]]
    assert tpu_accuracy.batched(images, 5).shape == (1, 5, 1)


def test_score_counts_top1_and_agreement():
    logits = np.array([[0, 1.0], [1.0, 0], [1.0, 0], [0, 1.0]])
    reference = np.array([[0, 1.0], [1.0, 0], [0, 1.0], [0, 2.0]])
    top1, agreement, max_abs, min_cosine = tpu_accuracy.score(logits, np.array([1, 0, 0, 0]), reference)
    assert (top1, agreement, max_abs, min_cosine) == (75.0, 75.0, 1.0, 0.0)


def test_acceptance_rule():
    def mode(name, top1):
        return ModeAccuracy(name, True, images=500, top1=top1)

    assert tpu_accuracy.acceptance([mode("F32", 99.0), mode("BF16", 99.0), mode("INT8", 98.0)], 99.0, 1.0) == []
    assert tpu_accuracy.acceptance([mode("F32", 99.0), mode("BF16", 98.8), mode("INT8", 97.8)], 99.0, 1.0) == [
        "BF16 top-1 98.80% != PyTorch 99.00%", "INT8 top-1 97.80% is 1.20 points below F32 (99.00%)"]
    # without F32 in the run, INT8 is held against PyTorch
    assert tpu_accuracy.acceptance([mode("INT8", 97.0)], 99.0, 1.0) == [
        "INT8 top-1 97.00% is 2.00 points below PyTorch (99.00%)"]


def test_calibration_size_is_checked_only_when_int8_is_compiled(tmp_path, capsys, monkeypatch):
    """32 x 50 training images do not exist (1,297): refused for INT8, but a BF16-only run at batch
    50 (all 500 held-out images) has nothing to calibrate and goes on to its work."""
    assert tpu_accuracy.main(["--quantize", "INT8", "--batch", "50", "--workdir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("error: --calibration-count x --batch must be at most 1297 training images "
                                       "(got 32 x 50)\n")

    class Started(Exception):
        pass

    def started(*args, **kwargs):
        raise Started
    monkeypatch.setattr(tpu_accuracy, "_run", started)
    with pytest.raises(Started):
        tpu_accuracy.main(["--quantize", "BF16", "--batch", "50", "--workdir", str(tmp_path)])


def test_tpu_accuracy_exports_with_the_exporter_asked_for(tmp_path, monkeypatch):
    """--exporter dynamo (s26): micro-digits through the dynamo exporter's opset-18 graph, the same calibration and
    held-out images; the default stays TorchScript."""
    commands = []

    class Started(Exception):
        pass

    def started(command, log, cwd=None):
        commands.append(command)
        raise Started
    monkeypatch.setattr(tpu_accuracy, "_run", started)
    for extra, exporter in (([], "torchscript"), (["--exporter", "dynamo"], "dynamo")):
        with pytest.raises(Started):
            tpu_accuracy.main(["--quantize", "BF16", "--workdir", str(tmp_path / exporter), *extra])
        export = commands[-1]
        assert export[1:4] == ["-m", "vmamba_ref.export", "--model"]
        assert export[export.index("--exporter") + 1] == exporter


def test_relative_l2_of_the_logits():
    reference = np.array([[3.0, 4.0], [0.0, 0.0]])
    assert tpu_accuracy.relative_l2(reference + np.array([[0.0, 0.5], [0.0, 0.0]]), reference) == pytest.approx(0.1, abs=1e-15)
    assert tpu_accuracy.relative_l2(reference, reference) == 0.0


def test_tpu_check_never_empties_a_folder_it_did_not_make(relu_model, tmp_path, capsys, monkeypatch):
    """Found by 'python -m tools.tpu_check relu.onnx --workdir .' (adversarial session s13): the
    existing workdir was deleted with shutil.rmtree before anything else, the model and every other
    file of the folder with it. Now a folder holding what the run reads, or one the tool did not
    make, is refused (exit 2, nothing touched); its own workdir of an earlier run is emptied."""
    from tools import tpu_check

    (tmp_path / "precious.txt").write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.chdir(tmp_path)
    assert tpu_check.main([str(relu_model), "--workdir", "."]) == 2
    assert capsys.readouterr().err == (f"error: --workdir {tmp_path} holds the model ({tmp_path}/relu.onnx) and "
                                       "would be emptied; give another folder\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert tpu_check.main([str(relu_model), "--workdir", str(other)]) == 2
    assert capsys.readouterr().err == (f"error: --workdir {other} is not empty and was not made by tools.tpu_check; "
                                       "refusing to empty it (give a new folder)\n")
    monkeypatch.chdir(other)
    assert tpu_check.main([str(relu_model), "--workdir", str(tmp_path)]) == 2
    assert "holds the model" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["other"])
    assert (tmp_path / "precious.txt").read_text() == "keep me" and (other / "notes.txt").read_text() == "mine"

    made = tmp_path / "made"
    tpu_check.prepare_workdir(made, [("the model", relu_model)])
    (made / "stale.bmodel").write_bytes(b"old")
    tpu_check.prepare_workdir(made, [("the model", relu_model)])
    assert sorted(p.name for p in made.iterdir()) == [".tpu_check"]


def test_tpu_check_empties_only_a_folder_it_marked(relu_model, tmp_path, capsys):
    """adv20's leftover (session s32): a folder holding onnxruntime_outputs.npz (what the tool's runs before its mark
    wrote first) was taken for its own and emptied, whatever else it held; and a mark that is a symbolic link (planted,
    to any file) counted as the mark. Now only a folder holding the mark as a regular file is emptied: each of those
    is refused in one line, exit 2, nothing touched."""
    from tools import tpu_check

    for name, plant in (("npz", lambda folder: (folder / "onnxruntime_outputs.npz").write_bytes(b"old")),
                        ("link", lambda folder: (folder / tpu_check.WORKDIR_MARK).symlink_to(relu_model))):
        folder = tmp_path / name
        folder.mkdir()
        plant(folder)
        (folder / "notes.txt").write_text("mine")
        before = sorted(p.name for p in folder.iterdir())
        assert tpu_check.main([str(relu_model), "--workdir", str(folder)]) == 2
        assert capsys.readouterr().err == (f"error: --workdir {folder} is not empty and was not made by "
                                           "tools.tpu_check; refusing to empty it (give a new folder)\n")
        assert sorted(p.name for p in folder.iterdir()) == before and (folder / "notes.txt").read_text() == "mine"


def test_tpu_check_bad_inputs_are_one_escaped_line_before_any_work(relu_model, tmp_path, capsys):
    """Found with a text file given as --input (adversarial session s13): np.load's traceback came
    after the workdir was already emptied; an input named 'x\\nerror: fake' printed two error lines;
    '--json no/such/dir/v.json' was only found out after the whole compile."""
    from tools import tpu_check

    work = tmp_path / "w"
    (tmp_path / "bad.npz").write_text("not an npz")
    assert tpu_check.main([str(relu_model), "--input", str(tmp_path / "bad.npz"), "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: input npz {tmp_path}/bad.npz: not a readable npz (") and err.count("\n") == 1
    assert tpu_check.main([str(relu_model), "--json", str(tmp_path / "no" / "v.json"), "--workdir", str(work)]) == 2
    assert capsys.readouterr().err == f"error: --json directory does not exist: {tmp_path}/no\n"
    graph = helper.make_graph([helper.make_node("Relu", ["x\nerror: fake"], ["y"])], "g",
                              [helper.make_tensor_value_info("x\nerror: fake", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "dyn.onnx"))
    assert tpu_check.main([str(tmp_path / "dyn.onnx"), "--workdir", str(work)]) == 2
    assert capsys.readouterr().err == ("error: input 'x\\nerror: fake' has a non-static shape [None, 3]: tpu-mlir "
                                       "needs static shapes (export with a fixed batch)\n")
    assert not work.exists()


def test_calibration_output_never_follows_a_planted_link_nor_replaces_the_model(relu_model, tmp_path, capsys):
    """Found by planting a link at 'cal.npz.partial.npz' (adversarial session s13): tools.tpu_calibration
    wrote its npz through the predictable temporary name, so the link's target was overwritten; '-o
    relu.onnx' replaced the model it read, and '-o no/dir/cal.npz' was a traceback."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "cal.npz.partial.npz").symlink_to(victim)
    assert tpu_calibration.main(["synthetic", str(relu_model), "--count", "2", "-o", str(tmp_path / "cal.npz")]) == 0
    assert victim.read_text() == "keep me"
    with np.load(tmp_path / "cal.npz") as written:
        assert written["x"].shape == (2, 2, 3)
    model_bytes = relu_model.read_bytes()
    capsys.readouterr()
    assert tpu_calibration.main(["synthetic", str(relu_model), "-o", str(relu_model)]) == 2
    assert capsys.readouterr().err == (f"error: output {relu_model} is the model {relu_model}, which this run reads; "
                                       "refusing to overwrite it\n")
    assert relu_model.read_bytes() == model_bytes
    assert tpu_calibration.main(["synthetic", str(relu_model), "-o", str(tmp_path / "no" / "cal.npz")]) == 2
    assert capsys.readouterr().err == f"error: output directory does not exist: {tmp_path}/no\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.npz", "cal.npz.partial.npz", "relu.onnx", "victim.txt"]


def test_tpu_accuracy_checks_its_json_destination_before_the_work(tmp_path, capsys):
    """Found with '--json no/such/dir/a.json' (adversarial session s13): export, compiles and cmodel
    runs came first, then write_text died with a FileNotFoundError traceback."""
    assert tpu_accuracy.main(["--quantize", "BF16", "--workdir", str(tmp_path / "w"),
                              "--json", str(tmp_path / "no" / "a.json")]) == 2
    assert capsys.readouterr().err == f"error: --json directory does not exist: {tmp_path}/no\n"
    assert not (tmp_path / "w").exists()


def test_tpu_accuracy_never_writes_through_a_link_planted_in_its_workdir(tmp_path, capsys):
    """Found by s15: its logs (and the held-out and calibration npz) were written with plain open():
    a link planted at <workdir>/export.log wrote the export's output into the file it led to. Now
    each goes to an exclusive temporary renamed over the link; a folder where one goes is refused
    before the work (exit 2, one line)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    work = tmp_path / "w"
    work.mkdir()
    for name in ("export.log", "held_out.npz"):
        (work / name).symlink_to(victim)
    tpu_accuracy._run([sys.executable, "-c", "print('logged')"], work / "export.log")
    assert victim.read_text() == "keep me"
    tpu_accuracy.tc.save_npz(work / "held_out.npz", {"input": np.arange(3.0)})
    assert victim.read_text() == "keep me"
    assert not (work / "export.log").is_symlink() and (work / "export.log").read_text() == "logged\n"
    assert not (work / "held_out.npz").is_symlink()
    np.testing.assert_array_equal(np.load(work / "held_out.npz")["input"], np.arange(3.0))
    (work / "bf16.run.log").mkdir()
    assert tpu_accuracy.main(["--quantize", "BF16", "--workdir", str(work)]) == 2
    assert capsys.readouterr().err == f"error: --workdir file is a directory: {work}/bf16.run.log\n"
    assert sorted(p.name for p in work.iterdir()) == ["bf16.run.log", "export.log", "held_out.npz"]


@pytest.mark.parametrize("count", ["0", "-3"])
def test_a_calibration_count_below_one_is_refused_before_the_work(count, tmp_path, capsys, monkeypatch):
    """Found by s16-adv: --calibration-count -3 exported and compiled the model (minutes), then
    tools.tpu_calibration's digits_set raised ValueError: a traceback. Refused by argparse now
    (passes.one_line.positive_int), as a usage error."""
    def started(*args, **kwargs):
        raise AssertionError("the work started")
    monkeypatch.setattr(tpu_accuracy, "_measure", started)
    with pytest.raises(SystemExit) as exit_:
        tpu_accuracy.main(["--quantize", "INT8", "--calibration-count", count, "--workdir", str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (f"error: argument --calibration-count: must be an integer >= 1, got '{count}' "
                                       "(see --help)\n")


@pytest.mark.parametrize("interrupt, code", [(KeyboardInterrupt, 130), (Terminated, 143)])
def test_an_interrupt_is_one_line_with_its_exit_code(interrupt, code, tmp_path, capsys, monkeypatch):
    """Found by s16-adv: Ctrl-C during tools.tpu_accuracy's work printed a KeyboardInterrupt traceback,
    and SIGTERM had no handler (the tools it runs went on)."""
    def interrupted(*args, **kwargs):
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)   # SIGTERM cleans up too
        raise interrupt()
    monkeypatch.setattr(tpu_accuracy, "_measure", interrupted)
    assert tpu_accuracy.main(["--quantize", "BF16", "--workdir", str(tmp_path)]) == code
    assert capsys.readouterr().err == "error: interrupted\n"


FAKE_TPU_CHECK = """
import os, signal, sys, time
def stop(signum, frame):   # tpu_check stops its own model_deploy child here
    open(sys.argv[1] + ".stopped", "w").write("SIGTERM")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
open(sys.argv[1] + ".ready", "w").write(str(os.getpid()))
time.sleep(60)
"""


def test_an_interrupted_run_forwards_sigterm_to_the_tool_it_runs(tmp_path, request):
    """Found by s16-adv: _run used subprocess.run, which SIGKILLs its child on Ctrl-C or SIGTERM, so
    tools.tpu_check could not stop its model_deploy (a session of its own, minutes of compiling on
    with no parent). Now the child is sent SIGTERM, given time to stop, then killed.

    In a fresh interpreter (pytest again on this one test): its SIGALRM handler in the pytest process
    crashed the whole fast suite (SIGSEGV, at 92%) once tests/test_bench.py's OpenVINO test had run
    (found by adv5; as tests/test_hardening.py's signal tests, 9cd2cfd)."""
    import os
    import time

    if os.environ.get("VMAMBA_TEST_FRESH_INTERPRETER") != "1":
        repo = Path(__file__).resolve().parents[1]
        env = dict(os.environ, VMAMBA_TEST_FRESH_INTERPRETER="1", PYTHONPATH=str(repo))
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid],
                                capture_output=True, text=True, cwd=repo, env=env, timeout=600)
        assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
        return

    script, marker = tmp_path / "fake_check.py", tmp_path / "child"
    script.write_text(FAKE_TPU_CHECK)
    ready = tmp_path / "child.ready"

    def interrupt_once_ready(signum, frame):
        if ready.exists() and ready.read_text():
            signal.setitimer(signal.ITIMER_REAL, 0)
            raise KeyboardInterrupt
    previous = signal.signal(signal.SIGALRM, interrupt_once_ready)
    signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            tpu_accuracy._run([sys.executable, str(script), str(marker)], tmp_path / "check.log", cwd=tmp_path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 30
    assert (tmp_path / "child.stopped").read_text() == "SIGTERM"
    with pytest.raises(ProcessLookupError):   # reaped, not left running
        os.kill(int(ready.read_text()), 0)


# " 5": float() strips padding; refused since tidy29 gave tools.tpu_check's and this option one parser
# (passes.one_line.number_text), as tpu_check's --timeout and --min-cosine refused it before
@pytest.mark.parametrize("drop", ["nan", "inf", "-1", "101", "1_0", " 5"])
def test_an_int8_max_drop_that_is_not_a_number_of_points_is_refused_before_the_work(drop, tmp_path, capsys, monkeypatch):
    """Found by adv5: --int8-max-drop was read with float() and never checked, so 'nan' made every INT8
    result pass the acceptance rule (no drop compares greater than NaN), after minutes of work."""
    monkeypatch.setattr(tpu_accuracy, "_measure", lambda *args, **kwargs: pytest.fail("the work started"))
    with pytest.raises(SystemExit) as exit_:
        tpu_accuracy.main(["--quantize", "INT8", "--int8-max-drop", drop, "--workdir", str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (f"error: argument --int8-max-drop: must be a number of points from 0 to 100, "
                                       f"got '{drop}' (see --help)\n")


def _one_input_model(path: Path, name: str) -> Path:
    graph = helper.make_graph([helper.make_node("Relu", [name], ["y"])], "g",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.mark.parametrize("name", ["file", "allow_pickle", "x\x1b[2J\nforged"])
def test_synthetic_calibration_writes_any_input_name_and_shows_it_escaped(name, tmp_path, capsys):
    """Found by adv10 (s24): tools.tpu_calibration synthetic wrote its npz with np.savez(path, **arrays), so an
    input named 'file' ended in a TypeError traceback (exit 1; tools.tpu_check's input.npz too, through
    tpu_toolchain.save_npz) and one named 'allow_pickle' was taken for np.savez's flag: an empty npz, 'wrote
    cal.npz: allow_pickle [8, 2]', exit 0 (tpu_check's transform then failed on it); and the line printed the
    path and names raw (an ESC, a forged second line). Each input is now its own member, the line escaped."""
    model = _one_input_model(tmp_path / "m.onnx", name)
    assert tpu_calibration.main(["synthetic", str(model), "-o", str(tmp_path / "cal.npz"), "--count", "3"]) == 0
    stored = np.load(tmp_path / "cal.npz")
    assert list(stored) == [name] and stored[name].shape == (3, 2) and stored[name].dtype == np.float32
    shown = name.replace("\x1b", "\\x1b").replace("\n", "\\n")
    assert capsys.readouterr().out == f"wrote {tmp_path / 'cal.npz'}: {shown} [3, 2]\n"


def test_toolchain_npz_holds_every_name_as_np_load_reads_it(tmp_path):
    """tools.tpu_toolchain.save_npz (tools.tpu_check's input.npz, onnxruntime_outputs.npz, calibration samples):
    names np.savez would take for its own arguments, a name with a folder in it and an empty one, each read
    back by np.load under its name with its values."""
    from tools.tpu_toolchain import save_npz

    arrays = {"file": np.arange(3, dtype=np.float32), "allow_pickle": np.ones((2, 2), np.int64),
              "args": np.zeros(0, np.float16), "a/../b": np.array([True]), "": np.float64(2.5)}
    save_npz(tmp_path / "x.npz", arrays)
    stored = np.load(tmp_path / "x.npz", allow_pickle=False)
    assert list(stored) == list(arrays)
    for name, array in arrays.items():
        assert stored[name].dtype == array.dtype and np.array_equal(stored[name], array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def _fake_tpu_mlir_runtime(monkeypatch, output_names: list[str]) -> None:
    """tools/tpu_bmodel_run.py's imports (tpu-mlir's model_runner, lowering and pyruntime_bm) as stand-ins:
    one bmodel input 'x', outputs named `output_names`, each output x + its index."""
    import types

    class Tensor:
        def __init__(self, name):
            self.name, self.dtype, self.qzero_point, self.qscale = name, "f32", 0, 0.0
            self.data = np.zeros(3, np.float32)

    class Net:
        def __init__(self):
            self.inputs, self.outputs = [Tensor("x")], [Tensor(name) for name in output_names]

        def forward(self):
            for index, out in enumerate(self.outputs):
                out.data[:] = self.inputs[0].data + index

    class Model:
        networks = ["net"]

        def __init__(self, *args):
            pass

        def Net(self, name):
            return Net()

    runner = types.SimpleNamespace(get_chip_from_model=lambda path: "bm1684x", link_cmodel_so=lambda *a: None,
                                   link_custom_so=lambda *a: None, link_bmlib_so=lambda *a: None,
                                   bind_cmodel_so=lambda *a: None)
    lowering = types.SimpleNamespace(bf16_to_fp32=lambda data: data, lowering=lambda value, **kwargs: value)
    modules = {"tpu_mlir": types.ModuleType("tpu_mlir"), "tpu_mlir.python": types.ModuleType("tpu_mlir.python"),
               "tpu_mlir.python.tools": types.SimpleNamespace(model_runner=runner),
               "tpu_mlir.python.tools.model_runner": runner,
               "tpu_mlir.python.utils": types.ModuleType("tpu_mlir.python.utils"),
               "tpu_mlir.python.utils.lowering": lowering,
               "pyruntime_bm": types.SimpleNamespace(Model=Model)}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_bmodel_run_writes_outputs_of_any_name(tmp_path, monkeypatch):
    """tools/tpu_bmodel_run.py (tpu-mlir's venv, no project imports) wrote its outputs with np.savez(**names): a
    bmodel output named 'file' was a TypeError and one named 'allow_pickle' was left out. Every output is now a
    member under its own name, written through a temporary renamed over the destination (nothing else left)."""
    from tools import tpu_bmodel_run

    names = ["file", "allow_pickle", "y/../z", "\x1b[31m"]
    _fake_tpu_mlir_runtime(monkeypatch, names)
    monkeypatch.chdir(tmp_path)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.savez(tmp_path / "in.npz", x=x)
    assert tpu_bmodel_run.main("m.bmodel", str(tmp_path / "in.npz"), str(tmp_path / "out.npz")) == 0
    stored = np.load(tmp_path / "out.npz", allow_pickle=False)
    assert list(stored) == names
    for index, name in enumerate(names):
        assert stored[name].dtype == np.float32 and np.array_equal(stored[name], x + index)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "out.npz"]


@pytest.mark.parametrize("case", ["no-shape", "string", "sequence"])
def test_inputs_tpu_mlir_cannot_take_are_refused_before_any_work(case, tmp_path, capsys):
    """adv11: an input declaring no shape was read as a scalar (tools.tpu_calibration synthetic wrote samples of
    shape [count], exit 0; tools.tpu_check ran tpu-mlir for minutes into 'IndexError: tuple index out of range');
    a string input was random floats in an object array (tpu_calibration: np.save's 'Object arrays cannot be
    saved' traceback, exit 1; tpu_check: ONNX Runtime's process killed), a sequence input a KeyError."""
    from tools import tpu_check

    value = {"no-shape": helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
             "string": helper.make_tensor_value_info("x", TensorProto.STRING, [2]),
             "sequence": helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, [2])}[case]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value],
                              [helper.make_value_info("y", value.type)])
    model = tmp_path / "m.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    why = {"no-shape": "declares no shape: tpu-mlir needs static shapes (export with a fixed batch)",
           "string": "is of type STRING, not a number tpu-mlir takes",
           "sequence": "is no tensor (a sequence or map): tpu-mlir takes tensors"}[case]
    assert tpu_calibration.main(["synthetic", str(model), "--count", "2", "-o", str(tmp_path / "cal.npz")]) == 2
    assert capsys.readouterr().err == f"error: input 'x' {why}\n"
    assert tpu_check.main([str(model), "--workdir", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err == f"error: input 'x' {why}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_tpu_check_random_token_ids_are_drawn_from_the_embedding_rows(tmp_path):
    """adv13: tools.tpu_check without --input cast standard-normal values to int64, ids -3..3 with negative ones (ONNX
    Runtime's Gather reads -1 as the last row, tpu-mlir's may not); now drawn as the synthetic calibration set draws
    them, uniform over the table's 64 rows, and an integer input that indexes no table is refused (give --input)."""
    from tools import tpu_check

    model = _token_model(tmp_path / "tokens.onnx")
    interface, _, _ = tpu_check.model_interface(model)
    ids = tpu_check.make_inputs(interface, None, tpu_check._index_bounds(model))["ids"]
    np.testing.assert_array_equal(ids, np.random.default_rng(0).integers(0, 64, (1, 8)))
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() <= 63
    floats = tpu_check.make_inputs([("x", (2, 3), np.dtype(np.float32))], None, {})["x"]   # unchanged for floats
    np.testing.assert_array_equal(floats, np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32))
    with pytest.raises(tpu_check.UsageError) as refused:
        tpu_check.make_inputs(interface, None, {})
    assert str(refused.value) == ("input 'ids' is of type int64 and indexes no constant table (a Gather): "
                                  "standard-normal values are no sample of it; give --input")


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_bmodel_output_holding_infinity_or_nan_is_never_accurate(bad):
    """The cmodel gave output b an infinity (a BF16 overflow): its cosine was numpy's NaN, which min() skips
    after a number, so the verdict read output a's 1.0000000, 'OK', exit 0 (adv19); a NaN gave cosine 0 beside a
    max abs of 0.0 (max() skipped it too). Both are the worst value now, and below any threshold."""
    from tools.tpu_check import match_outputs, worst_match

    reference = {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}
    produced = {"a": np.ones(4, np.float32), "b": np.array([bad, 1, 1, 1], np.float32)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # numpy's 'invalid value' RuntimeWarning was a raw line on stderr
        matches = match_outputs(reference, produced)
    cosine, max_abs = worst_match(matches)
    assert math.isnan(cosine) and not cosine >= 0.0 and (math.isnan(max_abs) or max_abs == math.inf)
    assert [m.cosine for m in matches][0] == 1.0
    from tools.tpu_check import Verdict
    verdict = Verdict(model="m.onnx", chip="bm1684x", quantize="F32", layer_group=True, nodes=1, outputs=matches,
                      min_cosine=cosine, max_abs=max_abs)
    shown = verdict.to_dict()   # JSON, not json.dumps' NaN or Infinity
    assert (shown["min_cosine"], shown["max_abs"], shown["outputs"][1]["cosine"]) == (None, None, None)


def test_tpu_check_refuses_an_input_of_nan_or_of_floats_for_integers_before_any_work(relu_model, tmp_path, capsys):
    """--input holding NaN: ONNX Runtime's reference NaN, the verdict 'inaccurate' known before the compile; float
    ids for an int64 input were cut to integers without a word (adv19). One line, exit 2, no workdir."""
    from tools import tpu_check

    work = tmp_path / "w"
    np.savez(tmp_path / "nan.npz", x=np.full((2, 3), np.nan, np.float32))
    assert tpu_check.main([str(relu_model), "--input", str(tmp_path / "nan.npz"), "--workdir", str(work)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}/nan.npz['x'] is float32 holding NaN or infinity\n"
    graph = helper.make_graph([helper.make_node("Neg", ["ids"], ["y"])], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [2])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "ids.onnx"))
    np.savez(tmp_path / "ids.npz", ids=np.array([2.7, 1.0]))
    assert tpu_check.main([str(tmp_path / "ids.onnx"), "--input", str(tmp_path / "ids.npz"), "--workdir", str(work)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}/ids.npz['ids'] is float64; the model takes int64\n"
    assert not work.exists()

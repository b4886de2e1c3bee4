"""Every command-line module in tools/ and vmamba_ref/ answers a bad option with one line on stderr
and exit 2 (passes.one_line.OneLineArgumentParser), never argparse's usage block or a traceback.

The modules are found, not listed: a new tool with a parser is checked the day it is added."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def command_line_modules() -> list[str]:
    modules = []
    for folder in ("tools", "vmamba_ref"):
        for path in sorted((REPO / folder).glob("*.py")):
            source = path.read_text()
            if "parse_args(" in source and re.search(r'^if __name__ == "__main__":', source, re.M):
                modules.append(f"{folder}.{path.stem}")
    return modules


def test_the_modules_are_found():
    found = command_line_modules()
    assert {"tools.bench", "tools.train_digits", "tools.tpu_calibration", "vmamba_ref.export"} <= set(found)
    assert len(found) >= 20


@pytest.mark.parametrize("module", command_line_modules())
def test_a_bad_option_is_one_line_and_exit_2(module):
    """Found by the s16 review: eight tools printed argparse's multi-line usage block (tools.tpu_accuracy,
    tools.tpu_calibration, tools.train_digits, ...)."""
    env = {"PYTHONPATH": str(REPO), "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", module, "--no-such-option"], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("(see --help)"), result.stderr


def seed_modules() -> list[tuple[str, ...]]:
    """(module, subcommand...) of every command line with a --seed option."""
    found = []
    for module in command_line_modules():
        source = (REPO / (module.replace(".", "/") + ".py")).read_text()
        match = re.search(r'(\w+)\.add_argument\("--seed"', source)
        if match:
            subcommand = re.search(rf'{match.group(1)} = \w+\.add_parser\("([\w-]+)"', source)
            found.append((module,) + ((subcommand.group(1),) if subcommand else ()))
    return found


def test_the_seed_modules_are_found():
    assert {("vmamba_ref.export",), ("tools.bench",), ("tools.tpu_calibration", "synthetic")} <= set(seed_modules())


@pytest.mark.parametrize("seed", ["99999999999999999999999", "５", "-5", "1_0"])
@pytest.mark.parametrize("command", seed_modules(), ids=" ".join)
def test_a_seed_is_ascii_digits_in_range(command, seed):
    """Found by adv5: '--seed 99999999999999999999999' was torch.manual_seed's ValueError traceback (exit 1)
    after the model was built (vmamba_ref.export, tools.bench), '--seed ５' a seed the text does not show,
    tools.tpu_calibration's '--seed -1' numpy's 'expected non-negative integer'."""
    env = {"PYTHONPATH": str(REPO), "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", *command, "--seed", seed], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=600)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "argument --seed: must be an integer from 0 to 2^63-1" in lines[0], result.stderr


@pytest.mark.parametrize("module", ["tools.bench", "tools.bench_mamba"])
def test_a_thread_count_is_refused_beyond_the_cap(module):
    """Found by adv5: 'tools.bench --threads 99999999999' exported and compiled, then died in
    torch.set_num_threads with a ValueError traceback (exit 1). '--help' after it: the refusal comes
    while parsing, before --help is reached (without it the run would start)."""
    env = {"PYTHONPATH": str(REPO), "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    for threads in ("99999999999", "4097"):
        result = subprocess.run([sys.executable, "-m", module, "--threads", threads, "--help"], capture_output=True,
                                text=True, cwd=REPO, env=env, timeout=600)
        assert result.returncode == 2, result.stdout[-300:]
        assert result.stderr.splitlines() == [
            f"error: argument --threads: must be an integer from 1 to 4096, got '{threads}' (see --help)"]


def test_every_command_line_ends_an_interrupt_in_one_line():
    """Found by adv5: 19 command lines (tools.demo, what 'make demo' runs, among them) had no SIGTERM
    handler, so a kill left their exclusive temporaries half-written, and Ctrl-C printed a traceback."""
    for module in command_line_modules():
        source = (REPO / (module.replace(".", "/") + ".py")).read_text()
        main_block = source.split('\nif __name__ == "__main__":\n', 1)[1]
        assert "run_command_line(main" in main_block, module


DEMO_KILLED_WHILE_WRITING = """
import runpy, signal, sys
import vmamba_ref.export
from passes.files import atomic_targets

SIGNAL = int(sys.argv[2])

def export_naive(model, path, **options):   # the real writer, killed half-way as 'kill' would
    with atomic_targets(path, path.with_name("naive.ref.npz")) as temporaries:
        for temporary in temporaries:
            temporary.write_bytes(b"half a model")
        signal.raise_signal(SIGNAL)
        raise AssertionError("went on after the signal")

vmamba_ref.export.export_naive = export_naive
signal.signal(signal.SIGINT, signal.default_int_handler)   # as in a terminal
sys.argv = ["tools.demo", "--out", sys.argv[1], "--pipelines", "cpu"]
runpy.run_module("tools.demo", run_name="__main__")
"""


@pytest.mark.parametrize("signal_number, code", [(15, 143), (2, 130)])
def test_make_demo_killed_while_writing_leaves_no_temporary(tmp_path, signal_number, code):
    """Found by adv5: 'make demo' (tools.demo) sent SIGTERM while exporting left
    '.naive.onnx.*.onnx.tmp' and '.naive.ref.npz.*.npz.tmp' in out/demo (exit -15); Ctrl-C printed a
    KeyboardInterrupt traceback."""
    out = tmp_path / "demo"
    env = {"PYTHONPATH": str(REPO), "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", DEMO_KILLED_WHILE_WRITING, str(out), str(signal_number)], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=600)
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == "error: interrupted (no file left half-written)"
    assert not out.exists()   # nor the folder it made for them (it was left empty)


@pytest.mark.parametrize("option, value", [
    ("--timeout", "-1"), ("--timeout", "0"), ("--timeout", "nan"), ("--timeout", "inf"), ("--timeout", "1e400"),
    ("--timeout", "1_0"), ("--min-cosine", "nan"), ("--min-cosine", "2"), ("--min-cosine", "+2.5"),
    ("--calibration-count", "-3"), ("--calibration-count", "\uff15"), ("--calibration-tune", "-3")])
def test_tpu_check_refuses_odd_numbers_before_any_work(option, value, capsys):
    """Found by adv5: tools.tpu_check read --timeout and --min-cosine with float() and its counts with int(),
    checked nothing, and went to work: '--timeout -1' installed tpu-mlir, then timed out its first step
    (exit 3), '--min-cosine nan' or '2' failed the verdict after the whole compile and cmodel run (exit 4),
    '--calibration-count -3' took all samples but three. Parsed only here: nothing is installed or run."""
    from tools.tpu_check import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["m.onnx", option, value])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: argument {option}: must be"), lines


def test_tpu_check_takes_ordinary_numbers():
    from tools.tpu_check import build_parser

    args = build_parser().parse_args(["m.onnx", "--timeout", "0.5", "--min-cosine", "-1", "--calibration-tune", "0",
                                      "--calibration-count", "8"])
    assert (args.timeout, args.min_cosine, args.calibration_tune, args.calibration_count) == (0.5, -1.0, 0, 8)
    assert build_parser().parse_args(["m.onnx", "--timeout", "1e3", "--min-cosine", ".99"]).timeout == 1000.0


@pytest.mark.parametrize("lr", ["inf", "1e400", "nan", "0", "-1", "1_0"])
def test_train_digits_refuses_a_learning_rate_that_is_no_positive_number_before_the_work(lr, capsys, monkeypatch):
    """Found by tidy29: '--lr inf' was taken (float(), and torch's AdamW only refuses nan and negatives), trained
    into NaN weights and wrote them over the digits checkpoint; nan and -1 were torch's traceback."""
    from tools import train_digits
    monkeypatch.setattr(train_digits, "load_digits_split", lambda: pytest.fail("the work started"))
    with pytest.raises(SystemExit) as exit_:
        train_digits.main(["--lr", lr])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: argument --lr: must be a positive, finite number, got '{lr}' (see --help)\n"


def test_one_rule_for_the_numbers_a_user_gives_bounds_nan_infinity_and_ints_beyond_float():
    """passes.one_line's number checks (tidy29 made them the one rule for compile_model's tolerance and
    verify_timeout, pass options, the tools' argparse types and vmamba_ref's ratios): bounds inclusive unless
    above_low, and nothing that is not a finite real number passes, 10**400 included (math.isfinite's
    OverflowError), NaN included (it compares false with every bound)."""
    import argparse

    import numpy as np

    from passes.one_line import check_number, finite_real, is_integer, number_text
    assert check_number("x", 0, "y", low=0.0) == 0 and check_number("x", 100, "y", high=100.0) == 100
    assert check_number("x", np.float32(0.5), "y", low=0.0, above_low=True) == np.float32(0.5)
    for bad, shown in ((0, "0"), (100.5, "100.5"), (float("nan"), "nan"), (float("inf"), "inf"), (True, "True"),
                       ("1", "1"), (None, "None"), (10**400, "1000")):
        with pytest.raises(ValueError) as refused:
            check_number("x", bad, "above 0, at most 100", low=0.0, high=100.0, above_low=True)
        assert str(refused.value).startswith(f"x must be above 0, at most 100, got {shown}")
    assert number_text("1e3", "y", low=0.0) == 1000.0 and number_text("+.5", "y") == 0.5 and number_text("5.", "y") == 5.0
    for text in ("nan", "inf", "1e400", "1_0", " 5", "\u0661", "0x10", "", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"^must be y, got '{re.escape(text)}'$"):
            number_text(text, "y", low=0.0)
    assert (finite_real(np.float64(2)), finite_real(10**400), finite_real(False)) == (True, False, False)
    assert (is_integer(np.int64(3)), is_integer(True), is_integer(3.0)) == (True, False, False)


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_reader_that_goes_away_ends_no_tool_in_failure(unbuffered, tmp_path):
    """`tools.nodecount m.onnx | head -1`: the reader gone before the first line ended tools.nodecount in exit 1,
    silent (rich's broken-pipe answer) or with a BrokenPipeError traceback (--json, --csv), and tools.diffview
    likewise (--text, and its 'wrote' line after -o's page) (adv19's leftover, adv20). The rest of the output goes
    to /dev/null, the work goes on: exit 0, nothing said, -o's page written; python -u or not."""
    import onnx.parser

    model = tmp_path / "m.onnx"
    model.write_bytes(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) { y = Relu(x) }""").SerializeToString())
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **({"PYTHONUNBUFFERED": "1"} if unbuffered else {})}
    commands = [["tools.nodecount", model, "--json"], ["tools.diffview", model, model, "-o", tmp_path / "d.html"]]
    if not unbuffered:
        commands += [["tools.nodecount", model], ["tools.nodecount", model, "--csv"], ["tools.diffview", model, model],
                     ["tools.nodecount", "--help"]]
    for command in commands:
        process = subprocess.Popen([sys.executable, "-m", *map(str, command)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=env, cwd=REPO)
        process.stdout.close()   # the reader is gone before the first line
        _, said = process.communicate(timeout=120)
        assert (process.returncode, said) == (0, b""), command
    assert (tmp_path / "d.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("args,message", [
    (["--lengths", "99999999999999999999"], "argument --lengths: must be an integer from 1 to 100,000, got '99999999999999999999'"),
    (["--lengths", "8,100001"], "argument --lengths: must be an integer from 1 to 100,000, got '100001'"),
    (["--lengths", "8", "--channels", "99999999999999999999"],
     "argument --channels: must be an integer from 1 to 65,536, got '99999999999999999999'"),
])
def test_bench_scaling_refuses_sizes_past_its_caps(args, message, capsys, monkeypatch):
    """Found by adv22: '--lengths 99999999999999999999' (or --channels) built the model until protobuf refused the
    dimension: 'ValueError: Value out of range', a traceback, exit 1."""
    from tools import bench_scaling

    monkeypatch.setattr(bench_scaling, "measure", lambda *a: pytest.fail("measured before the check"))
    with pytest.raises(SystemExit) as exited:
        bench_scaling.main(args)
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"error: {message} (see --help)\n"


@pytest.mark.parametrize("args,message", [
    (["--chip", "x\x1b[2J"], "error: argument --chip: invalid choice: 'x\\x1b[2J' (choose from 'bm1684x', 'bm1688', "
                             "'cv183x', 'bm1684', 'bm1690', 'cv186x') (see --help)\n"),
    (["--pipeline", "nope\x1b[2J"], "error: --pipeline: unknown pipeline 'nope\\x1b[2J'; valid pipelines: seed, cpu, "
                                    "cpu-many, ov, tpu, tpu-bm1688, tpu-cv186x (or pass text like "
                                    "'eliminate-dead-nodes,simplify')\n"),
])
def test_tpu_accuracy_refuses_an_unknown_chip_or_pipeline_before_any_work(args, message, tmp_path, capsys, monkeypatch):
    """Found by adv22: an unknown --pipeline was found by passes.apply after the export (exit 3, 'passes.apply ...
    failed'), its name printed raw first ('nope\\x1b[2J' cleared the terminal); an unknown --chip by tools.tpu_check
    in each mode, after the export and the compile (exit 3, the chip printed raw in the closing lines)."""
    from tools import tpu_accuracy

    monkeypatch.setattr(tpu_accuracy, "_measure", lambda *a: pytest.fail("worked before the check"))
    try:
        code = tpu_accuracy.main([*args, "--workdir", str(tmp_path / "work")])
    except SystemExit as exited:
        code = exited.code
    assert code == 2
    assert capsys.readouterr().err == message
    assert not (tmp_path / "work").exists()


def test_ort_profile_refuses_a_file_that_is_no_model_in_one_line(tmp_path, capsys, monkeypatch):
    """Found by adv22: a file that is no ONNX model was left to ONNX Runtime, after the progress line: two lines."""
    from tools import ort_profile

    monkeypatch.setattr(ort_profile, "profile", lambda *a: pytest.fail("profiled before the check"))
    (tmp_path / "g.onnx").write_bytes(b"garbage\xff")
    (tmp_path / "e.onnx").write_bytes(b"")
    assert ort_profile.main([str(tmp_path / "g.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: not an ONNX file, or truncated: {tmp_path}/g.onnx (") and err.count("\n") == 1
    assert ort_profile.main([str(tmp_path / "e.onnx")]) == 2
    assert capsys.readouterr().err == f"error: not an ONNX model (no graph or version found): {tmp_path}/e.onnx\n"


@pytest.mark.parametrize("content,message", [
    (b"garbage\xff", "is not UTF-8 text (a passes.apply report.json is)"),
    (b"", "is not JSON (Expecting value: line 1 column 1 (char 0))"),
    (b"[1, 2]", "is a JSON list, not a passes.apply report"),
    (b'{"status": "\\u001b[2J"}', ": no run recorded (status \\x1b[2J)"),
    (b'{"run": 5}', ": its run holds no nodes_before count and passes list"),
    (b'{"run": {"nodes_before": 3, "passes": [{"name": "x", "nodes_after": 2}]}}',
     ": pass 1 of its run lacks a name, a nodes_after count or changed true/false"),
])
def test_plot_nodecounts_names_the_report_it_cannot_read(content, message, tmp_path, capsys):
    """Found by adv22: a report that was no UTF-8, no JSON or another JSON was "'utf-8' codec can't decode byte 0xff
    in position 7", "Expecting value: line 1 column 1 (char 0)", "TypeError: list indices must be integers or
    slices, not str" or "KeyError: 'changed'": one line, exit 2, but naming neither the file nor what it should be."""
    from tools import plot_nodecounts

    report = tmp_path / "r\x1b.json"
    report.write_bytes(content)
    assert plot_nodecounts.main([str(report), "-o", str(tmp_path / "n.png")]) == 2
    assert capsys.readouterr().err == f"error: report {tmp_path}/r\\x1b.json {message}\n".replace(".json :", ".json:")
    assert not (tmp_path / "n.png").exists()


RELU_MODEL_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] input) => (float[N, 4] y) { y = Relu(input) }"""


def test_ort_profile_runs_the_model_it_read_not_the_path_again(tmp_path, capsys, monkeypatch):
    """adv22's leftover (adv23): tools.ort_profile checked the model by its path, then handed ONNX Runtime the path,
    which it opened again by name: what was there by then ran (a named pipe put there held the tool for ever; here a
    file that is no model: 'cannot load', exit 2). Now the model is read once (its external data from its folder only)
    and ONNX Runtime given those bytes."""
    import onnx

    from tools import ort_profile

    model = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model(RELU_MODEL_TEXT), model)
    real = ort_profile.profile

    def replace_then_profile(*args, **kwargs):
        model.write_bytes(b"no model any more\xff")
        return real(*args, **kwargs)

    monkeypatch.setattr(ort_profile, "profile", replace_then_profile)
    assert ort_profile.main([str(model), "--threads", "1", "--runs", "1"]) == 0
    captured = capsys.readouterr()
    assert "Relu" in captured.out and "cannot" not in captured.err


def test_eval_digits_runs_the_model_it_read_not_the_path_again(tmp_path, monkeypatch):
    """adv23: tools.eval_digits --onnx handed ONNX Runtime's child the path, opened there again by name after the
    check (local_functions_refused): a file put in its place meanwhile ran, or refused the run. Now the child gets
    the bytes read once."""
    import numpy as np
    import onnx

    import passes.ort_worker as ort_worker
    from tools.eval_digits import onnx_predict

    model = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model(RELU_MODEL_TEXT), model)
    real = ort_worker.call_capped

    def replace_then_call(*args, **kwargs):
        model.write_bytes(b"no model any more\xff")
        return real(*args, **kwargs)

    monkeypatch.setattr(ort_worker, "call_capped", replace_then_call)
    x = np.array([[-1, 2, -3, 4]] * 3, np.float32)
    np.testing.assert_array_equal(onnx_predict(model, x, batch=2), np.maximum(x, 0))


def test_tpu_check_runs_and_compiles_the_model_it_read_not_the_path_again(tmp_path, monkeypatch):
    """adv24 (s35's leftover): tools.tpu_check read the model's interface by its path, handed ONNX Runtime the path
    for the reference run and tpu-mlir the path again: a file put in its place after the check was what ran ('ONNX
    Runtime cannot run': exit 2 here; a model of the same interface ran unchecked) and what was compiled. Now the
    model is read once (passes.model_check.runtime_model); ONNX Runtime gets that ModelProto and tpu-mlir this run's
    copy of its bytes in the workdir."""
    import numpy as np
    import onnx

    from tools import tpu_check
    from tools import tpu_toolchain as tc

    model = tmp_path / "m.onnx"
    original = onnx.parser.parse_model(RELU_MODEL_TEXT.replace("[N, 4]", "[3, 4]"))
    onnx.save(original, model)
    real_make_inputs = tpu_check.make_inputs

    def replace_then_make_inputs(*args, **kwargs):
        model.write_bytes(b"no model any more\xff")
        return real_make_inputs(*args, **kwargs)

    given = []

    class Stop(Exception):
        pass

    def first_step(self, name, command, cwd, env, log, timeout):
        given.append((command, Path(cwd)))
        raise Stop

    monkeypatch.setattr(tpu_check, "make_inputs", replace_then_make_inputs)
    monkeypatch.setattr(tc, "venv_dir", lambda venv: tmp_path / "venv")
    monkeypatch.setattr(tc, "is_installed", lambda venv: True)
    monkeypatch.setattr(tc, "tool_environment", lambda venv: {})
    monkeypatch.setattr(tpu_check.Display, "run", first_step)
    work = tmp_path / "work"
    args = tpu_check.build_parser().parse_args([str(model), "--workdir", str(work)])
    from rich.console import Console
    with pytest.raises(Stop):
        tpu_check.check(args, console=Console(file=open(os.devnull, "w")))
    feeds, outputs = np.load(work / "input.npz"), np.load(work / "onnxruntime_outputs.npz")
    np.testing.assert_array_equal(outputs["y"], np.maximum(feeds["input"], 0))
    (command, cwd), = given
    model_def = command[command.index("--model_def") + 1]
    assert onnx.load(str(cwd / model_def)).graph.node[0].op_type == "Relu"
    assert (cwd / model_def).resolve() != model.resolve()


@pytest.mark.parametrize("call", ["tools.bench_rows:OnnxRunner", "tools.bench_mamba:_ort_runner",
                                  "tools.variants_table:_run"])
def test_bench_sessions_run_the_graph_they_checked_not_the_path_again(tmp_path, monkeypatch, call):
    """adv24 (s35's leftover): tools.bench's rows, tools.bench_mamba and tools.variants_table checked the graph's local
    functions by its path, then gave ONNX Runtime the path: a file put in its place between the two (a --workdir's
    graph may be anyone's) was what ran, unchecked. Now the graph is read once (model_for_runtime) and ONNX Runtime
    given those bytes."""
    import importlib

    import numpy as np
    import onnx
    import onnxruntime as ort

    module_name, function = call.split(":")
    module = importlib.import_module(module_name)
    model = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model(RELU_MODEL_TEXT), model)
    x = np.array([[-1, 2, -3, 4]], np.float32)
    np.savez(tmp_path / "m.ref.npz", input=x, y=np.maximum(x, 0))
    real_session = ort.InferenceSession

    def replace_then_load(*args, **kwargs):
        model.write_bytes(b"no model any more\xff")
        return real_session(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", replace_then_load)
    if function == "OnnxRunner":
        np.testing.assert_array_equal(module.OnnxRunner(model, 1).run(x), np.maximum(x, 0))
    elif function == "_ort_runner":
        run, _ = module._ort_runner(model, 1)
        np.testing.assert_array_equal(run(x), np.maximum(x, 0))
    else:
        assert module._run(model, tmp_path / "m.ref.npz") == 0.0


def test_tpu_calibration_draws_from_the_one_model_it_read(tmp_path, monkeypatch):
    """adv24: tools.tpu_calibration synthetic read the model's inputs by its path, then the tables its ids index by the
    path again: a file swapped in between was read for the second (here no model: 'cannot read', exit 2; another
    model: its bounds for the first one's inputs). Now one read serves both."""
    import onnx

    from tools import tpu_calibration, tpu_check

    model = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model(RELU_MODEL_TEXT.replace("[N, 4]", "[3, 4]")), model)
    real_interface = tpu_check.model_interface

    def interface_then_replace(*args, **kwargs):
        interface = real_interface(*args, **kwargs)
        model.write_bytes(b"no model any more\xff")
        return interface

    monkeypatch.setattr(tpu_check, "model_interface", interface_then_replace)
    arrays = tpu_calibration.synthetic_set(model, 2, 0)
    assert {name: array.shape for name, array in arrays.items()} == {"input": (2, 3, 4)}

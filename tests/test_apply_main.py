"""passes.apply in process: the parser's options and defaults, what ``_main`` hands ``compile_model`` and
``print_result``, each error's exact line and exit code, the listings. test_cli runs the same command line end to
end in a subprocess and checks its errors by phrase; these check them exactly and fast."""
import argparse
import math
import re
import sys
from types import SimpleNamespace

import onnx
import onnx.parser
import pytest
from scan_testing import TINY_MODEL_TEXT

import passes.apply as apply
import passes.apply_display as apply_display
import pipelines.compiler as compiler
from passes.interrupts import Terminated
from passes.verify import DEFAULT_VERIFY_TIMEOUT


def run_main(argv, capsys):
    code = apply.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- the parser ------------------------------------------------------------------------------------------------

DEFAULTS = dict(input=None, output=None, pipeline="seed", report=None, verify="end", reference=None,
                verify_timeout=DEFAULT_VERIFY_TIMEOUT, tolerance=1e-5, chunk=None, input_shape=[],
                list_pipelines=False, list_passes=False, explain=False, in_place=False, keep_intermediates=False,
                plugin=[])


def test_defaults_are_those_the_help_and_the_module_document():
    assert vars(apply.build_parser().parse_args([])) == DEFAULTS
    help_text = apply.build_parser().format_help()
    assert "max relative L2 error per output (default 1e-5)" in help_text and DEFAULTS["tolerance"] == 1e-5
    assert f"(default {DEFAULT_VERIFY_TIMEOUT:g}: a Loop" in " ".join(help_text.split())


def test_every_option_is_read_into_its_field():
    argv = ["in.onnx", "-o", "o.onnx", "--pipeline", "cpu", "--report", "R", "--verify", "each", "--reference",
            "r.npz", "--verify-timeout", "2.5", "--tolerance", "3", "--chunk", "16", "--input-shape", "x:1,2",
            "--input-shape", "y:3", "--list-pipelines", "--list-passes", "--explain", "--in-place",
            "--keep-intermediates", "--plugin", "a", "--plugin", "b.c"]
    args = vars(apply.build_parser().parse_args(argv))
    assert args == dict(input="in.onnx", output="o.onnx", pipeline="cpu", report="R", verify="each",
                        reference="r.npz", verify_timeout=2.5, tolerance=3.0, chunk=16, input_shape=["x:1,2", "y:3"],
                        list_pipelines=True, list_passes=True, explain=True, in_place=True, keep_intermediates=True,
                        plugin=["a", "b.c"])
    assert type(args["tolerance"]) is float and type(args["chunk"]) is int
    assert vars(apply.build_parser().parse_args(["--output", "p.onnx", "--verify", "none"]))["output"] == "p.onnx"


def test_the_help_names_the_program_the_metavars_and_the_exit_codes_of_the_module_docstring():
    help_text = apply.build_parser().format_help()
    assert help_text.startswith("usage: python -m passes.apply [-h]")
    for shown in ("--report DIR", "--reference REF.npz", "--verify-timeout SECONDS", "--input-shape NAME:D0,D1,...",
                  "--plugin MODULE", "--verify {each,end,none}", "-o OUTPUT, --output OUTPUT", "--chunk CHUNK"):
        assert shown in help_text, shown
    epilog = " ".join(help_text[help_text.index("exit codes:"):].split())
    docstring = " ".join(apply.__doc__.split())
    for said in ("0 ok", "1 internal error", "2 usage or bad input", "3 verification failed (no output written)",
                 "4 a pass failed", "130 Ctrl-C, 143 SIGTERM"):
        assert said in docstring and said in epilog, said
    assert ("Re-roll and clean up a VMamba ONNX graph with a pass pipeline, verify it, write it."
            in " ".join(help_text.split()))


@pytest.mark.parametrize("option, text, message", [
    ("--chunk", "1_000", "argument --chunk: invalid int value: '1_000' (see --help)"),
    ("--chunk", "2.5", "argument --chunk: invalid int value: '2.5' (see --help)"),
    ("--chunk", "١٢", "argument --chunk: invalid int value: '١٢' (see --help)"),
    ("--tolerance", "1_0", "argument --tolerance: invalid float value: '1_0' (see --help)"),
    ("--verify-timeout", "soon", "argument --verify-timeout: invalid float value: 'soon' (see --help)"),
])
def test_numbers_are_ascii_digits_as_pipeline_text_writes_them(option, text, message, capsys):
    code, out, err = run_main(["in.onnx", "-o", "o.onnx", option, text], capsys)
    assert (code, out) == (2, "")
    assert err == f"error: {message}\n"


def test_a_float_option_takes_an_integer_and_a_huge_exponent_as_floats():
    parse = apply._number(float, "float")
    assert parse("3") == 3.0 and type(parse("3")) is float
    assert parse("1e400") == math.inf
    assert parse("0.25") == 0.25
    assert apply._number(int, "int")("-7") == -7 and type(apply._number(int, "int")("-7")) is int
    with pytest.raises(argparse.ArgumentTypeError, match=r"^invalid count value: '3.0'$"):
        apply._number(int, "count")("3.0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^invalid float value: 'abc'$"):
        parse("abc")


# --- what _main hands on -----------------------------------------------------------------------------------------

@pytest.fixture
def calls(monkeypatch):
    seen = {}

    def compile_model(*args, **kwargs):
        seen["compile"] = (args, kwargs)
        kwargs["progress"].warn("from the fake")
        return "RESULT"

    def print_result(stdout, stderr, result, *, explain):
        seen["print"] = (stdout, stderr, result, explain)

    monkeypatch.setattr(compiler, "compile_model", compile_model)
    monkeypatch.setattr(apply_display, "print_result", print_result)
    monkeypatch.delenv("COLUMNS", raising=False)
    return seen


def test_main_hands_every_option_to_compile_model(calls, capsys):
    code, out, err = run_main(["in.onnx", "-o", "o.onnx", "--pipeline", "cpu", "--report", "R", "--verify", "each",
                               "--reference", "r.npz", "--verify-timeout", "2.5", "--tolerance", "0.5", "--chunk",
                               "16", "--input-shape", "x:1,2", "--explain", "--in-place", "--keep-intermediates"],
                              capsys)
    assert (code, out) == (0, "")
    assert err == "warning: from the fake\n"
    args, kwargs = calls["compile"]
    progress = kwargs.pop("progress")
    assert isinstance(progress, apply_display.RichProgress) and progress.console.stderr
    assert args == ("in.onnx", "cpu")
    assert kwargs == dict(output="o.onnx", reference="r.npz", verify="each", tolerance=0.5, report="R",
                          verify_timeout=2.5, explain=True, in_place=True, override_options={"chunk": 16},
                          keep_intermediates=True, input_shapes={"x": [1, 2]}, protected_files=[])
    stdout, stderr, result, explain = calls["print"]
    assert (result, explain) == ("RESULT", True)
    assert stdout.width == 120 and not stdout.stderr and stderr.stderr   # piped, no COLUMNS: 120 columns


def test_main_passes_defaults_and_no_override_without_chunk(calls, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "157")
    assert run_main(["in.onnx", "-o", "o.onnx"], capsys)[0] == 0
    args, kwargs = calls["compile"]
    kwargs.pop("progress")
    assert args == ("in.onnx", "seed")
    assert kwargs == dict(output="o.onnx", reference=None, verify="end", tolerance=1e-5, report=None,
                          verify_timeout=DEFAULT_VERIFY_TIMEOUT, explain=False, in_place=False, override_options=None,
                          keep_intermediates=False, input_shapes={}, protected_files=[])
    stdout, _, _, explain = calls["print"]
    assert explain is False and stdout.width == 157


def test_chunk_zero_is_still_an_override(calls, capsys):
    assert run_main(["in.onnx", "-o", "o.onnx", "--chunk", "0"], capsys)[0] == 0
    assert calls["compile"][1]["override_options"] == {"chunk": 0}


def test_a_plugin_is_imported_first_and_its_file_protected(calls, capsys, tmp_path, monkeypatch):
    (tmp_path / "mut36_plugin.py").write_text("IMPORTED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mut36_plugin", raising=False)   # imported afresh from this tmp_path
    assert run_main(["in.onnx", "-o", "o.onnx", "--plugin", "mut36_plugin", "--plugin", "sys"], capsys)[0] == 0
    assert sys.modules["mut36_plugin"].IMPORTED
    # sys is built in: no __file__ to protect
    assert calls["compile"][1]["protected_files"] == [str(tmp_path / "mut36_plugin.py")]


@pytest.mark.parametrize("body, said", [
    ("raise ValueError('bad\\nthing')", "bad thing"),
    ("import sys; sys.exit(3)", "SystemExit: 3 raised while it was imported"),
    ("import sys; sys.exit()", "SystemExit raised while it was imported"),
    ("raise GeneratorExit", "GeneratorExit raised while it was imported"),
])
def test_a_plugin_that_fails_to_import_is_bad_input_in_one_line(body, said, calls, capsys, tmp_path, monkeypatch):
    (tmp_path / "mut36_bad_plugin.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mut36_bad_plugin", raising=False)
    code, out, err = run_main(["in.onnx", "-o", "o.onnx", "--plugin", "mut36_bad_plugin"], capsys)
    assert (code, out, err) == (2, "", f"error: cannot import plugin mut36_bad_plugin: {said}\n")
    assert "compile" not in calls


def test_ctrl_c_while_a_plugin_imports_is_an_interrupt(calls, capsys, tmp_path, monkeypatch):
    (tmp_path / "mut36_ctrl_c.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mut36_ctrl_c", raising=False)
    code, out, err = run_main(["in.onnx", "-o", "o.onnx", "--plugin", "mut36_ctrl_c"], capsys)
    assert (code, out, err) == (130, "", "error: interrupted; no output written\n")


def test_an_unknown_plugin_is_named(calls, capsys):
    code, out, err = run_main(["in.onnx", "-o", "o.onnx", "--plugin", "no_such_mod\nule"], capsys)
    assert (code, out) == (2, "")
    assert err == "error: cannot import plugin no_such_mod\\nule: No module named 'no_such_mod\\nule'\n"


@pytest.mark.parametrize("argv, message", [
    ([], "an input model is required"),
    (["-o", "o.onnx"], "an input model is required"),
    (["in.onnx"], "-o/--output is required"),
    (["in.onnx", "-o", "o.onnx", "--input-shape", "x"], None),
])
def test_missing_arguments_are_usage_errors(argv, message, calls, capsys):
    code, out, err = run_main(argv, capsys)
    assert (code, out) == (2, "") and "compile" not in calls
    if message is None:   # the input-shape parser's own message, as it gives it
        from passes.input_shapes import InputShapeError, parse_input_shapes
        with pytest.raises(InputShapeError) as error:
            parse_input_shapes(["x"])
        message = str(error.value)
    assert err == f"error: {message}\n"


def test_help_is_exit_0_on_stdout(capsys):
    code, out, err = run_main(["--help"], capsys)
    assert (code, err) == (0, "") and out.startswith("usage: python -m passes.apply")


# --- main's error lines ------------------------------------------------------------------------------------------

def raising(error):
    def _main(argv):
        raise error
    return _main


@pytest.mark.parametrize("error, code, line", [
    (compiler.BadInput("bad\n  input"), 2, "error: bad input"),
    (compiler.VerificationFailed("off by 2"), 3, "error: off by 2"),
    (compiler.PassFailed("pass 'x' failed"), 4, "error: pass 'x' failed"),
    (KeyboardInterrupt(), 130, "error: interrupted; no output written"),
    (Terminated(), 143, "error: interrupted; no output written"),
    (ValueError("a bug\nhere"), 1, "error: internal error: ValueError: a bug here"),
    (ZeroDivisionError(), 1, "error: internal error: ZeroDivisionError: ZeroDivisionError"),
])
def test_each_error_is_one_line_and_its_exit_code(error, code, line, capsys, monkeypatch):
    monkeypatch.delenv("VMAMBA_PASSES_TRACEBACK", raising=False)
    monkeypatch.setattr(apply, "_main", raising(error))
    assert run_main([], capsys) == (code, "", line + "\n")


def test_an_interrupt_after_the_write_names_the_file(capsys, monkeypatch):
    interrupt = KeyboardInterrupt()
    interrupt.written_output = "out/\x1bo.onnx"
    monkeypatch.setattr(apply, "_main", raising(interrupt))
    assert run_main([], capsys) == (130, "", "error: interrupted after writing out/\\x1bo.onnx; the report was not "
                                              "written\n")


def test_the_traceback_only_when_asked(capsys, monkeypatch):
    monkeypatch.setattr(apply, "_main", raising(RuntimeError("boom")))
    monkeypatch.setenv("VMAMBA_PASSES_TRACEBACK", "1")
    code, out, err = run_main([], capsys)
    assert code == 1 and err.startswith("Traceback (most recent call last):")
    assert err.endswith("RuntimeError: boom\nerror: internal error: RuntimeError: boom\n")
    monkeypatch.setenv("VMAMBA_PASSES_TRACEBACK", "")
    assert run_main([], capsys) == (1, "", "error: internal error: RuntimeError: boom\n")


# --- listings and a real run -------------------------------------------------------------------------------------

def test_the_listings_name_every_pipeline_and_pass_with_their_options(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "5000")
    from passes.registry import all_passes, pass_options
    from pipelines import list_pipelines

    code, out, err = run_main(["--list-pipelines"], capsys)
    expected = []
    for name, pipeline in list_pipelines().items():
        expected += [f"{name}  {pipeline.description}", f"    {pipeline}"]
    assert (code, err, out.splitlines()) == (0, "", expected)
    code, out, err = run_main(["--list-passes"], capsys)
    expected = []
    for name, cls in all_passes().items():
        expected.append(f"{name}  {cls.description}")
        expected += [f"    {key}: {option.describe() if option else '(undeclared)'}"
                     for key, option in pass_options(cls).items()]
    assert (code, err, out.splitlines()) == (0, "", expected)
    assert any(line.startswith("    chunk: ") for line in expected) and len(expected) > 40
    code, out, err = run_main(["--list-passes", "--list-pipelines"], capsys)
    assert out.splitlines()[:2] == [f"seed  {list_pipelines()['seed'].description}", f"    {list_pipelines()['seed']}"]


def test_a_pass_module_that_failed_to_load_is_listed(capsys, monkeypatch):
    import passes.registry as registry
    monkeypatch.setenv("COLUMNS", "5000")
    monkeypatch.setattr(registry, "import_failures",
                        lambda: {"passes.broken": "ImportError: cannot import name 'x' (/home/[/]/[b]p.py)\x1b"})
    code, out, err = run_main(["--list-passes"], capsys)
    assert (code, err) == (0, "")   # was exit 1: MarkupError, closing tag '[/]' has nothing to close
    assert out.splitlines()[-1] == "not loaded passes.broken: ImportError: cannot import name 'x' (/home/[/]/[b]p.py)\\x1b"
    code, out, err = run_main(["--list-pipelines"], capsys)
    assert "not loaded" not in out


def test_a_real_run_in_process(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), tmp_path / "naive.onnx")
    code, out, err = run_main([str(tmp_path / "naive.onnx"), "--pipeline", "eliminate-dead-nodes,fold-constants",
                               "-o", str(tmp_path / "o.onnx"), "--verify", "none"], capsys)
    assert code == 0, err
    assert [n.op_type for n in onnx.load(tmp_path / "o.onnx").graph.node] == ["Add", "Relu"]
    assert re.search(r"total \d+\.\d s · 5 → 2 nodes · wrote .*o\.onnx · not verified", " ".join(out.split()))
    assert out.splitlines()[0].rstrip() == "pipeline eliminate-dead-nodes,fold-constants"


def test_every_option_is_documented_and_the_epilog_keeps_its_lines():
    parser = apply.build_parser()
    undocumented = [action.dest for action in parser._actions if not action.help]
    assert undocumented == []   # --verify had none (mut36), shown by its choices only
    assert apply._EPILOG in parser.format_help()   # RawDescriptionHelpFormatter: the lines as written


def test_a_reader_gone_silences_stdout_and_points_it_at_devnull(calls, capfd):
    import os

    assert apply.main(["in.onnx", "-o", "o.onnx"]) == 0
    stdout = calls["print"][0]
    stdout.on_broken_pipe()   # what rich calls on BrokenPipeError (`| head -1`)
    assert stdout.quiet is True
    assert os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull))


def test_listings_print_names_descriptions_and_pipelines_as_text_without_highlighting(monkeypatch):
    import io

    import passes.registry as registry
    import pipelines
    from rich.console import Console

    class Shown:
        description = "joins [x, x^T] in 2 steps, 'quoted'"

        def __str__(self):
            return "p{k=[b]1[/b]},q"

    class FakePass:
        description = "a 3 'pass' [b]"

    monkeypatch.setattr(pipelines, "list_pipelines", lambda: {"pl": Shown()})
    monkeypatch.setattr(registry, "all_passes", lambda: {"fake-pass": FakePass})
    monkeypatch.setattr(registry, "pass_options", lambda cls: {"chunk": None, "k": SimpleNamespace(
        describe=lambda: "an integer, default 24 [x]")})
    monkeypatch.setattr(registry, "import_failures", lambda: {"m": "E: 12 'x'"})
    console = Console(file=io.StringIO(), width=300, record=True, color_system="standard")
    apply._list(console, True, True)
    assert console.export_text(clear=False).splitlines() == [
        "pl  joins [x, x^T] in 2 steps, 'quoted'", "    p{k=[b]1[/b]},q", "fake-pass  a 3 'pass' [b]",
        "    chunk: (undeclared)", "    k: an integer, default 24 [x]", "not loaded m: E: 12 'x'"]
    styled = console.export_text(styles=True, clear=False).splitlines()
    assert styled[0].startswith("\x1b[1mpl\x1b[0m  joins ")   # a pipeline's description is highlighted
    assert styled[1:] == ["    p{k=[b]1[/b]},q",
                      "\x1b[1mfake-pass\x1b[0m  a 3 'pass' [b]", "    chunk: (undeclared)",
                      "    k: an integer, default 24 [x]", "\x1b[33mnot loaded\x1b[0m m: E: 12 'x'"]

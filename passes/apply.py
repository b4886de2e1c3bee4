"""The command line around ``pipelines.compile_model``: parse, call, print, map errors to exit codes.

    python -m passes.apply naive.onnx --pipeline seed -o rolled.onnx --report out/

The only module below ``pipelines`` that imports it: it is the entry point the user's
command names (docs/ARCHITECTURE.md). Exit codes: 0 ok; 1 internal error (a bug; set
VMAMBA_PASSES_TRACEBACK=1 to see the traceback); 2 usage or bad input; 3 verification failed
(no output written); 4 a pass failed; 130 Ctrl-C, 143 SIGTERM. Every error is one line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from passes.input_shapes import InputShapeError, parse_input_shapes
from passes.interrupts import exit_code, sigterm_as_interrupt
from passes.one_line import OneLineArgumentParser, one_line, printable, usable_text_streams
from passes.verify import DEFAULT_VERIFY_TIMEOUT
from pipelines.compiler import EXIT_INTERNAL, EXIT_OK, EXIT_PASS, EXIT_USAGE, EXIT_VERIFY, BadInput, CompileError

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_INTERNAL", "EXIT_USAGE", "EXIT_VERIFY", "EXIT_PASS"]

_EPILOG = """exit codes: 0 ok; 1 internal error; 2 usage or bad input (unknown pipeline/pass,
not an ONNX file or not a valid model, output is a file the run reads, a destination that is not a
regular file or cannot be written); 3 verification failed (no output written); 4 a pass failed
(named in the message); 130 Ctrl-C, 143 SIGTERM (temporary files removed)."""


def _number(kind: type, name: str):
    """argparse type for an int or float written as pipeline text writes numbers (ASCII digits, no
    '_': int() and float() would take '1_000' and other scripts' digits)."""
    def parse(text: str):
        from pipelines.pipeline import parse_value
        value = parse_value(text)
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise argparse.ArgumentTypeError(f"invalid {name} value: '{text}'")
        return float(text) if kind is float else value   # float(): 10^400 is inf (refused later), not an error
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m passes.apply",
        description="Re-roll and clean up a VMamba ONNX graph with a pass pipeline, verify it, write it.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("input", nargs="?", help="input .onnx model")
    add("-o", "--output", help="output .onnx path (written only if verification passes)")
    add("--pipeline", default="seed", help="named pipeline (see --list-pipelines) or text like 'eliminate-dead-nodes,simplify'")
    add("--report", metavar="DIR", help="write DIR/report.json (docs/REPORT_SCHEMA.md) and DIR/index.html (per-pass region diffs)")
    add("--verify", choices=["each", "end", "none"], default="end",
        help="check the output against the input model in ONNX Runtime at the end (default), after every pass that "
             "changed the graph too (each), or not at all (none)")
    add("--reference", metavar="REF.npz", help="inputs and expected outputs (default: <input stem>.ref.npz beside the input)")
    add("--verify-timeout", type=_number(float, "float"), default=DEFAULT_VERIFY_TIMEOUT, metavar="SECONDS",
        help="seconds each ONNX Runtime run of the verification may take, loading included, before it is killed "
             "and the compile refused (default %(default)g: a Loop of 2^62 trips or one that never ends runs forever)")
    add("--tolerance", type=_number(float, "float"), default=1e-5, help="max relative L2 error per output (default 1e-5)")
    add("--chunk", type=_number(int, "int"), help="override the 'chunk' option in every step that has it")
    add("--input-shape", action="append", default=[], metavar="NAME:D0,D1,...",
        help="fix a symbolic input's dimensions before the pipeline and in verification (onnxsim's convention); repeatable")
    add("--list-pipelines", action="store_true", help="list named pipelines and exit")
    add("--list-passes", action="store_true", help="list registered passes and exit")
    add("--explain", action="store_true", help="ask passes for notes (why patterns did not match) and print them")
    add("--in-place", action="store_true", help="allow the output to be the input file")
    add("--keep-intermediates", action="store_true",
        help="write the model after every pass that changed it (into DIR/intermediates or OUTPUT.intermediates)")
    add("--plugin", action="append", default=[], metavar="MODULE",
        help="import MODULE first (it may register extra passes); repeatable")
    return parser


def main(argv: list[str] | None = None) -> int:
    def fail(code: int, message: str) -> int:
        sys.stderr.write(f"error: {message}\n")  # plain write: rich would wrap a long message
        return code

    usable_text_streams()   # PYTHONIOENCODING=ascii, a closed stdout: each was an internal error, exit 1 (adv19)
    try:
        with sigterm_as_interrupt():   # SIGTERM cleans up like Ctrl-C: no temporary file is left
            return _main(argv)
    except CompileError as error:
        return fail(error.exit_code, one_line(error))
    except KeyboardInterrupt as interrupt:
        written = getattr(interrupt, "written_output", None)
        return fail(exit_code(interrupt), f"interrupted after writing {printable(written)}; the report was not written"
                    if written is not None else "interrupted; no output written")
    except Exception as error:
        if os.environ.get("VMAMBA_PASSES_TRACEBACK"):
            traceback.print_exc()
        return fail(EXIT_INTERNAL, f"internal error: {type(error).__name__}: {one_line(error)}")


def _list(console, pipelines: bool, passes: bool) -> None:
    from rich.markup import escape

    from passes.one_line import rich_text
    from passes.registry import all_passes, import_failures, pass_options
    from pipelines import list_pipelines

    # Names, descriptions and import errors as text, never markup: slice-parts-before-concat's "[x, x^T]" was
    # dropped from its description, and an import error quoting a path with '[/]' ended --list-passes in a
    # MarkupError (exit 1, "internal error").
    for name, pipeline in (list_pipelines() if pipelines else {}).items():
        console.print(f"[bold]{escape(name)}[/]  {escape(pipeline.description)}")
        console.print(f"    {pipeline}", markup=False, highlight=False)
    for name, cls in (all_passes() if passes else {}).items():
        console.print(f"[bold]{escape(name)}[/]  {escape(cls.description)}", highlight=False)
        for option_name, option in pass_options(cls).items():
            console.print(f"    {option_name}: {option.describe() if option else '(undeclared)'}", markup=False, highlight=False)
    for module, error in (import_failures() if passes else {}).items():
        console.print(f"[yellow]not loaded[/] {escape(module)}: {rich_text(error)}", highlight=False)


def _main(argv: list[str] | None) -> int:
    from rich.console import Console

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0), or a one-line usage error already printed (2)
        return exit_.code
    # Piped output: rich would assume 80 columns and wrap the table; logs are read wider.
    stdout = Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=120)
    stderr = Console(stderr=True)

    def reader_gone() -> None:   # `| head -1` (adv19): rich's own answer was exit 1, said nowhere, after the work
        stdout.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    stdout.on_broken_pipe = reader_gone
    plugin_files = []
    for module in args.plugin:
        try:
            imported = importlib.import_module(module)
        except KeyboardInterrupt:
            raise
        except BaseException as error:   # SystemExit too: a plugin's sys.exit(0) on import was exit 0, nothing said
            said = one_line(error) if isinstance(error, Exception) else \
                f"{type(error).__name__}{': ' + one_line(error) if str(error) else ''} raised while it was imported"
            raise BadInput(f"cannot import plugin {printable(module)}: {said}") from None
        if getattr(imported, "__file__", None):
            plugin_files.append(imported.__file__)
    if args.list_pipelines or args.list_passes:
        _list(stdout, args.list_pipelines, args.list_passes)
        return EXIT_OK
    if not args.input:
        raise BadInput("an input model is required")
    if not args.output:
        raise BadInput("-o/--output is required")
    try:
        input_shapes = parse_input_shapes(args.input_shape)
    except InputShapeError as error:
        raise BadInput(str(error)) from None

    from passes.apply_display import RichProgress, print_result
    from pipelines.compiler import compile_model

    with RichProgress(stderr) as display:
        result = compile_model(
            args.input, args.pipeline, output=args.output, reference=args.reference, verify=args.verify,
            tolerance=args.tolerance, report=args.report, verify_timeout=args.verify_timeout, explain=args.explain,
            in_place=args.in_place,
            override_options={"chunk": args.chunk} if args.chunk is not None else None,
            keep_intermediates=args.keep_intermediates, input_shapes=input_shapes, progress=display,
            protected_files=plugin_files)

    print_result(stdout, stderr, result, explain=args.explain)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

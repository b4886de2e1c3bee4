"""Apply a pass pipeline to an ONNX model, verify the result, and write it.

    python -m passes.apply naive.onnx --pipeline seed -o rolled.onnx --report out/

Flow: load -> import into onnx-graphsurgeon -> run the pipeline's passes on one in-memory
graph -> export -> verify with ONNX Runtime -> write (atomically, never over the input).

Verification (``--verify``):
  end   (default) run the final model and compare every output with the reference npz
        (``--reference``, or ``<input stem>.ref.npz`` beside the input); without one, with
        the input model run on the same random inputs (this runs the big input graph).
  each  also compare every pass that changed the graph with the graph before it.
  none  no numerical check.

Exit codes:
  0  success
  1  internal error (a bug; set VMAMBA_PASSES_TRACEBACK=1 to see the traceback)
  2  usage or bad input: unknown pipeline or pass (valid names are listed), not an ONNX
     file, unusable reference, output == input without --in-place, unwritable output
  3  verification failed: outputs differ beyond --tolerance; no output is written
  4  a pass failed; the message names the pass and the passes that ran before it

Every error is one line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_VERIFY, EXIT_PASS = 0, 1, 2, 3, 4

_EPILOG = """exit codes: 0 ok; 1 internal error; 2 usage or bad input (unknown pipeline/pass,
not an ONNX file, output is the input without --in-place, unwritable output);
3 verification failed (no output written); 4 a pass failed (named in the message)."""


class UsageError(Exception):
    """Exit code 2 with a one-line message."""


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we want one line
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m passes.apply",
        description="Re-roll and clean up a VMamba ONNX graph with a pass pipeline, verify it, write it.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", nargs="?", help="input .onnx model")
    parser.add_argument("-o", "--output", help="output .onnx path (written only if verification passes)")
    parser.add_argument("--pipeline", default="seed",
                        help="named pipeline (see --list-pipelines) or text like 'eliminate-dead-nodes,simplify'")
    parser.add_argument("--report", metavar="DIR",
                        help="write DIR/report.json (docs/REPORT_SCHEMA.md) and DIR/index.html (per-pass region diffs)")
    parser.add_argument("--verify", choices=["each", "end", "none"], default="end")
    parser.add_argument("--reference", metavar="REF.npz", help="inputs and expected outputs (default: <input stem>.ref.npz beside the input)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max relative L2 error per output (default 1e-5)")
    parser.add_argument("--chunk", type=int, help="override the 'chunk' option in every step that has it")
    parser.add_argument("--list-pipelines", action="store_true", help="list named pipelines and exit")
    parser.add_argument("--list-passes", action="store_true", help="list registered passes and exit")
    parser.add_argument("--explain", action="store_true", help="ask passes for notes (why patterns did not match) and print them")
    parser.add_argument("--in-place", action="store_true", help="allow the output to be the input file")
    parser.add_argument("--keep-intermediates", action="store_true",
                        help="write the model after every pass that changed it (into DIR/intermediates or OUTPUT.intermediates)")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it may register extra passes); repeatable")
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    stderr = Console(stderr=True)

    def fail(code: int, message: str) -> int:
        # Plain write: rich would wrap a long message over several lines.
        sys.stderr.write(f"error: {message}\n")
        return code

    try:
        return _main(argv, stderr)
    except UsageError as error:
        return fail(EXIT_USAGE, _one_line(error))
    except KeyboardInterrupt:
        return fail(130, "interrupted; no output written")
    except _Exit as exit_:
        return fail(exit_.code, exit_.message)
    except Exception as error:
        if os.environ.get("VMAMBA_PASSES_TRACEBACK"):
            traceback.print_exc()
        return fail(EXIT_INTERNAL, f"internal error: {type(error).__name__}: {_one_line(error)}")


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _list_pipelines(console) -> None:
    from pipelines import list_pipelines

    for name, pipeline in list_pipelines().items():
        console.print(f"[bold]{name}[/]  {pipeline.description}")
        console.print(f"    {pipeline}", markup=False, highlight=False)


def _list_passes(console) -> None:
    from passes.registry import all_passes, import_failures, pass_option_names

    for name, cls in all_passes().items():
        options = pass_option_names(cls)
        console.print(f"[bold]{name}[/]  {cls.description}" + (f"  [dim](options: {', '.join(options)})[/]" if options else ""))
    for module, error in import_failures().items():
        console.print(f"[yellow]not loaded[/] {module}: {error}", highlight=False)


def _main(argv: list[str] | None, stderr) -> int:
    from rich.console import Console

    args = build_parser().parse_args(argv)
    # Piped output: rich would assume 80 columns and wrap the table; logs are read wider.
    stdout = Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=120)
    for module in args.plugin:
        try:
            importlib.import_module(module)
        except Exception as error:
            raise UsageError(f"cannot import plugin {module}: {_one_line(error)}") from None
    if args.list_pipelines or args.list_passes:
        if args.list_pipelines:
            _list_pipelines(stdout)
        if args.list_passes:
            _list_passes(stdout)
        return EXIT_OK
    if not args.input:
        raise UsageError("an input model is required")
    if not args.output:
        raise UsageError("-o/--output is required")
    if args.tolerance < 0:
        raise UsageError("--tolerance must be >= 0")

    # Everything that can be wrong with the command line is checked before the slow part.
    from passes.graph_io import GraphIOError, ModelMeta, check_output_path, graph_to_model, model_to_graph, read_model, save_model_atomic
    from passes.registry import UnknownPassError
    from pipelines import PipelineSyntaxError, UnknownPipelineError, get_pipeline

    try:
        pipeline = get_pipeline(args.pipeline)
        if args.chunk is not None:
            pipeline = pipeline.with_overrides(chunk=args.chunk)
        passes = pipeline.build()
    except (UnknownPipelineError, PipelineSyntaxError, UnknownPassError) as error:
        raise UsageError(_one_line(error)) from None
    try:
        output_path = check_output_path(args.output, input_path=args.input, allow_overwrite_input=args.in_place)
    except GraphIOError as error:
        raise UsageError(_one_line(error)) from None
    reference_path = Path(args.reference) if args.reference else None
    if reference_path is not None and not reference_path.is_file():
        raise UsageError(f"reference file not found: {reference_path}")

    from passes.apply_display import RichProgress, closing_table, print_notes
    from passes.base import PassContext
    from passes.manager import PassManager, PassVerificationError, PipelineError
    from passes.verify import ReferenceError, VerificationError, compare, find_reference_beside, load_reference, random_feeds, run_model, summarize

    started = time.perf_counter()
    report: dict = {"tool": "passes.apply", "input": str(args.input), "output": str(output_path),
                    "pipeline": str(pipeline), "pipeline_name": pipeline.name, "verify_mode": args.verify,
                    "tolerance": args.tolerance}

    # Sees which nodes each pass changed: provenance metadata always, region diffs for --report.
    from passes.report.recorder import PassRecorder

    recorder = PassRecorder(regions=bool(args.report))
    intermediate_paths: dict[int, str] = {}

    def write_report(status: str, exit_code: int) -> None:
        if not args.report:
            return
        from passes.report.writer import write_report_dir

        report.update(status=status, exit_code=exit_code, total_seconds=round(time.perf_counter() - started, 3))
        write_report_dir(args.report, report, recorder.region_descriptions, intermediate_paths, recorder.seconds)

    with RichProgress(stderr) as display:
        with display.step(f"load {args.input}"):
            try:
                loaded = read_model(args.input)
            except GraphIOError as error:
                raise UsageError(_one_line(error)) from None
        model = loaded.model
        meta = ModelMeta.from_model(model)
        input_nodes = len(model.graph.node)
        report["nodes"] = {"input": input_nodes}

        # Verification inputs: reference npz (given or beside the input), else random feeds
        # with the input model's own outputs as the expected values.
        feeds = expected = None
        baseline_outputs = None
        if args.verify != "none":
            reference_path = reference_path or find_reference_beside(args.input)
            try:
                if reference_path is not None:
                    feeds, expected = load_reference(reference_path, model)
                else:
                    feeds = random_feeds(model)
            except ReferenceError as error:
                raise UsageError(_one_line(error)) from None
            report["reference"] = str(reference_path) if reference_path else None
            if reference_path is None or args.verify == "each":
                if reference_path is None:
                    stderr.print(f"[yellow]warning[/]: no reference npz (looked for {Path(args.input).stem}.ref.npz); "
                                 f"running the input graph ({input_nodes:,} nodes) on random inputs to compare against",
                                 highlight=False, soft_wrap=True)
                with display.step(f"run input model in ONNX Runtime ({input_nodes:,} nodes)"):
                    try:
                        baseline_outputs = run_model(model, feeds, log=display.stage)
                    except VerificationError as error:
                        raise _Exit(EXIT_VERIFY, f"the input model does not run: {_one_line(error)}") from None
                if expected is None:
                    expected = baseline_outputs

        with display.step(f"import {input_nodes:,} nodes into onnx-graphsurgeon"):
            graph = model_to_graph(model)

        intermediates_dir = None
        if args.keep_intermediates:
            intermediates_dir = (Path(args.report) / "intermediates") if args.report else output_path.with_name(output_path.name + ".intermediates")
            intermediates_dir.mkdir(parents=True, exist_ok=True)

        def keep_intermediate(index, record, changed_model) -> None:
            path = intermediates_dir / f"{index + 1:02d}-{record.name}.onnx"
            save_model_atomic(changed_model, path, external_data=loaded.used_external_data)
            # Relative to the report directory when it is inside it, so the folder can move.
            intermediate_paths[index] = (str(path.relative_to(args.report)) if args.report
                                         and path.is_relative_to(args.report) else str(path))

        manager = PassManager(
            passes, verify_each=args.verify == "each", check=True, progress=display, meta=meta,
            verify_feeds=feeds, initial_outputs=baseline_outputs, tolerance=args.tolerance,
            on_changed_model=keep_intermediate if intermediates_dir else None, log=display.stage,
            recorder=recorder,
        )
        manager.pipeline_text = str(pipeline)
        ctx = PassContext(opset=meta.opset, explain=args.explain, log=display.stage)
        try:
            run = manager.run(graph, ctx)
        except PassVerificationError as error:
            if error.run is not None:
                report["run"] = error.run.to_dict()
            write_report("verification-failed", EXIT_VERIFY)
            raise _Exit(EXIT_VERIFY, f"verification failed: {_one_line(error)}; no output written") from None
        except PipelineError as error:
            if error.run is not None:
                report["run"] = error.run.to_dict()
            report["error"] = str(error)
            write_report("pass-failed", EXIT_PASS)
            raise _Exit(EXIT_PASS, _one_line(error)) from None
        report["run"] = run.to_dict()

        with display.step(f"export {run.nodes_after:,} nodes"):
            final_model = graph_to_model(run.graph, meta)
            recorder.stamp(final_model)
        report["nodes"]["output"] = len(final_model.graph.node)

        verification = None
        if args.verify != "none":
            with display.step("verify final model in ONNX Runtime"):
                try:
                    outputs = run_model(final_model, feeds, log=display.stage)
                    comparisons = compare(outputs, expected, rtol_l2=args.tolerance)
                except VerificationError as error:
                    report["verification"] = {"ok": False, "error": _one_line(error)}
                    write_report("verification-failed", EXIT_VERIFY)
                    raise _Exit(EXIT_VERIFY, f"verification failed: {_one_line(error)}; no output written") from None
            verification = summarize(comparisons)
            verification["against"] = str(reference_path) if reference_path else "input model on random inputs"
            report["verification"] = verification
            if not verification["ok"]:
                worst = max((c for c in comparisons if not c.ok), key=lambda c: c.rel_l2)
                write_report("verification-failed", EXIT_VERIFY)
                raise _Exit(EXIT_VERIFY, (
                    f"verification failed: output '{worst.name}' rel L2 {worst.rel_l2:.3g} > tolerance "
                    f"{args.tolerance:g} (max abs {worst.max_abs:.3g}{', ' + worst.problem if worst.problem else ''}); "
                    "no output written"))

        with display.step(f"write {output_path}"):
            try:
                save_model_atomic(final_model, output_path, external_data=loaded.used_external_data,
                                  input_path=args.input, allow_overwrite_input=args.in_place)
            except GraphIOError as error:
                raise UsageError(_one_line(error)) from None

    write_report("ok", EXIT_OK)
    stdout.print(closing_table(run))
    total = time.perf_counter() - started
    summary = f"total {total:.1f} s · {input_nodes:,} → {report['nodes']['output']:,} nodes · wrote {output_path}"
    if verification is not None:
        summary += (f" · verified against {verification['against']}: max abs {verification['max_abs']:.3g}, "
                    f"rel L2 {verification['rel_l2']:.3g} (tolerance {args.tolerance:g})")
    else:
        summary += " · not verified"
    stdout.print(summary, highlight=False, soft_wrap=True)
    for record in run.records:  # the count users look for first: how many scans were found
        if record.name == "reroll-scans":
            found, rejected = record.stats.get("rerolled", 0), record.stats.get("rejected", 0)
            line = f"{found} scans found and re-rolled ({record.stats.get('steps', 0):,} steps)" if found else "0 scans found"
            if rejected:
                line += f"; {rejected} candidate chains left unrolled (--explain says why)"
            stdout.print(line, highlight=False, soft_wrap=True)
    if args.explain:
        print_notes(stdout, run)
    else:  # without --explain, still say when a pass gave up on something
        for record in run.records:
            for note in record.notes:
                if "failed" in note or "skipped" in note:
                    stderr.print(f"[yellow]note[/] {record.name}: {note}", highlight=False, soft_wrap=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

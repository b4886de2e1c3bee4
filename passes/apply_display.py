"""What ``python -m passes.apply`` shows: a spinner line per step and pass, and a closing table.

Progress goes to stderr (so stdout stays the table and can be redirected); each finished
line stays on screen with its elapsed time.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from passes.base import Pass
from passes.one_line import printable, printable_message, rich_text
from passes.manager import PassRecord, PipelineRun, ProgressHook


class _StepMark(SpinnerColumn):
    """The spinner, ✓ for a finished step, ✗ for one that failed or was interrupted (adv18: a write interrupted
    by Ctrl-C, or a file that did not load, showed '✓ write out.onnx' above 'error: interrupted; no output
    written')."""

    def render(self, task):
        return Text("✗", style="red") if task.fields.get("failed") else super().render(task)


def _failure(error: BaseException | None) -> str:
    return "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"


class RichProgress(ProgressHook):
    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            _StepMark(finished_text="[green]✓[/]"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.console = console
        self._task: TaskID | None = None
        self._label = ""
        self._started = False

    def __enter__(self) -> "RichProgress":
        # Started with the first step, not here: a stopped display that never showed a line still
        # prints an empty one, which would stand before a usage error's one line.
        self._started = False
        return self

    def __exit__(self, *exc_info) -> None:
        if self._task is not None:   # a pass the error or interrupt stopped (a finished one has no task left)
            self._end(f"{self._label} [red]· {_failure(exc_info[1])}[/]", failed=exc_info[1] is not None)
        if self._started:
            self.progress.stop()

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """A spinner line for a slow step outside the passes (load, import, verify, write)."""
        self._begin(label)
        try:
            yield
        except BaseException as error:
            self._end(f"{self._label} [red]· {_failure(error)}[/]", failed=True)
            raise
        self._end(self._label)

    def _begin(self, label: str) -> None:
        self._label = label = escape(printable(label))   # paths and names: no markup, no control characters
        if not self._started:
            self.progress.start()
            self._started = True
        self._task = self.progress.add_task(label, total=1)

    def _end(self, description: str, failed: bool = False) -> None:
        if self._task is not None:
            self.progress.update(self._task, description=description, completed=1, failed=failed)
            self.progress.stop_task(self._task)
            self._task = None

    # ProgressHook
    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning[/]: {rich_text(message)}", highlight=False, soft_wrap=True)

    def pass_started(self, index: int, total: int, pass_: Pass) -> None:
        self._begin(f"[{index + 1}/{total}] {pass_.name}")

    def stage(self, text: str) -> None:
        if self._task is not None:
            self.progress.update(self._task, description=f"{self._label} [dim]· {rich_text(text)}[/]")

    def pass_finished(self, index: int, total: int, record: PassRecord) -> None:
        change = f"{record.nodes_before:,} → {record.nodes_after:,} nodes" if record.changed else "unchanged"
        self._end(f"{self._label} [dim]· {change}[/]")


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 60 else f"{value / 60:.1f} min"


def _check_cell(record: PassRecord) -> str:
    if record.checker.startswith("error") or record.shape_inference.startswith("error"):
        return "[red]error[/]"
    if record.checker == "ok":
        return "ok"
    return "–"


def closing_table(run: PipelineRun) -> Table:
    table = Table(title=f"pipeline {run.pipeline}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("pass", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("nodes", justify="right", no_wrap=True)
    table.add_column("rewrites")
    table.add_column("checks")
    table.add_column("rel L2 vs before", justify="right")
    for index, record in enumerate(run.records, start=1):
        stat = record.main_stat
        verified = record.verification
        table.add_row(
            str(index), record.name, _seconds(record.seconds + record.check_seconds + record.verify_seconds),
            f"{record.nodes_before:,} → {record.nodes_after:,}",
            f"{stat[0]}={stat[1]}" if stat else "",
            _check_cell(record),
            f"{verified['rel_l2']:.2e}" if verified else "",
        )
    return table


def print_result(stdout: Console, stderr: Console, result, *, explain: bool) -> None:
    """The closing table, a summary line, the scan count, and notes (``result``: a CompileResult)."""
    stdout.print(closing_table(result.run))
    summary = f"total {result.seconds:.1f} s · {result.nodes_before:,} → {result.nodes_after:,} nodes · wrote {result.output}"
    verification = result.verification
    if verification is not None:
        summary += (f" · verified against {verification['against']}: max abs {verification['max_abs']:.3g}, "
                    f"rel L2 {verification['rel_l2']:.3g} (tolerance {result.report['tolerance']:g})")
        second = verification.get("second_size")
        if second is not None:   # the input model and this one with the symbolic input sizes at 3
            summary += f", and the input model with symbolic input sizes at {second['size']}: rel L2 {second['rel_l2']:.3g}"
    else:
        summary += " · not verified"
    stdout.print(printable_message(summary), markup=False, highlight=False, soft_wrap=True)
    for record in result.records:  # the count users look for first: how many scans were found
        if record.name == "reroll-scans":
            found, rejected = record.stats.get("rerolled", 0), record.stats.get("rejected", 0)
            line = f"{found} scans found and re-rolled ({record.stats.get('steps', 0):,} steps)" if found else "0 scans found"
            if rejected:
                line += f"; {rejected} candidate chains left unrolled (--explain says why)"
            stdout.print(line, highlight=False, soft_wrap=True)
    if explain:
        print_notes(stdout, result.run)
    else:  # without --explain, still say when a pass gave up on something
        for record in result.records:
            for note in record.notes:
                if "failed" in note or "skipped" in note:
                    stderr.print(f"[yellow]note[/] {escape(record.name)}: {rich_text(note)}", highlight=False,
                                 soft_wrap=True)


def print_notes(console: Console, run: PipelineRun) -> None:
    for record in run.records:
        if record.notes:
            console.print(f"[bold]{record.name}[/]")
            for note in record.notes:
                # one line each, as the warnings: a note is grepped for (s35's running-maximum note, 300 characters,
                # was cut into four lines at a pipe's 80 columns: fuzz23)
                console.print(f"  - {printable_message(note)}", markup=False, highlight=False, soft_wrap=True)

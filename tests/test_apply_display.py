"""passes.apply_display called directly (in process, no model compiled): the spinner lines a run leaves on stderr,
the closing table's cells, the summary line, the scan count and the notes, each exactly. The CLI tests
(test_cli, test_apply_hardening) see these only through a subprocess's text, by phrase."""
import io
import re
from types import SimpleNamespace

import pytest
from rich.console import Console

from passes.apply_display import RichProgress, _check_cell, _failure, _seconds, closing_table, print_notes, \
    print_result
from passes.manager import PassRecord, PipelineRun

RED, GREEN, YELLOW, DIM, BOLD = "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[2m", "\x1b[1m"


def console(width=120):
    return Console(file=io.StringIO(), width=width, record=True, color_system="standard")


def shown(out):
    return [line.rstrip() for line in out.export_text(clear=False).splitlines()]


def steps(out):
    """A display's lines, each ending in its elapsed time (0:00:00 here), taken off."""
    lines = shown(out)
    assert all(re.search(r"[^ ] +0:00:0\d$", line) for line in lines), lines
    return [re.sub(r" +0:00:0\d$", "", line) for line in lines]


def record(name="p", *, changed=True, before=10, after=7, stats=None, notes=(), checker="off", shapes="off",
           seconds=0.0, check_seconds=0.0, verify_seconds=0.0, verification=None):
    return PassRecord(name=name, options={}, seconds=seconds, changed=changed, stats=dict(stats or {}),
                      notes=list(notes), nodes_before=before, nodes_after=after, ops_before={}, ops_after={},
                      ops_delta={}, checker=checker, shape_inference=shapes, check_seconds=check_seconds,
                      verification=verification, verify_seconds=verify_seconds)


def named(name):
    return SimpleNamespace(name=name)


def test_finished_steps_and_passes_stay_on_screen_each_with_its_outcome():
    out = console()
    with RichProgress(out) as display:
        with display.step("load m.onnx"):
            assert [task.description for task in display.progress.tasks] == ["load m.onnx"]
        display.pass_started(0, 12, named("reroll-scans"))
        display.pass_finished(0, 12, record(changed=True, before=12345, after=678))
        display.pass_started(11, 12, named("simplify"))
        display.pass_finished(11, 12, record(changed=False, before=678, after=678))
    assert steps(out) == ["✓ load m.onnx", "✓ [1/12] reroll-scans · 12,345 → 678 nodes", "✓ [12/12] simplify · unchanged"]
    styled = out.export_text(styles=True, clear=False)
    assert styled.count(f"{GREEN}✓") == 3 and RED not in styled
    assert f"{DIM}· 12,345 → 678 nodes" in styled and f"{DIM}· unchanged" in styled


def test_a_display_that_never_showed_a_step_prints_nothing():
    """Not even an empty line: it would stand before a usage error's one line."""
    out = console()
    with RichProgress(out):
        pass
    assert out.export_text(clear=False) == ""
    with pytest.raises(ValueError), RichProgress(out):
        raise ValueError
    assert out.export_text(clear=False) == ""


def test_a_failed_step_is_marked_red_with_what_ended_it_and_shown_once():
    out = console()
    with pytest.raises(OSError), RichProgress(out) as display:
        with display.step("verify"):
            pass
        with display.step("write o.onnx"):
            raise OSError("disk full")
    assert steps(out) == ["✓ verify", "✗ write o.onnx · failed"]
    styled = out.export_text(styles=True, clear=False)
    assert f"{RED}✗" in styled and f"{RED}· failed" in styled


def test_a_pass_stopped_by_ctrl_c_or_an_error_is_marked_with_its_cause():
    out = console()
    with pytest.raises(KeyboardInterrupt), RichProgress(out) as display:
        display.pass_started(2, 3, named("fold-constants"))
        display.stage("onnx.checker")
        raise KeyboardInterrupt
    assert steps(out) == ["✗ [3/3] fold-constants · interrupted"]
    assert f"{RED}✗" in out.export_text(styles=True, clear=False)


def test_a_stage_shows_beside_the_pass_and_is_ignored_between_passes():
    out = console()
    with RichProgress(out) as display:
        display.stage("ignored: no pass running")
        display.pass_started(0, 2, named("p"))
        display.stage("ORT session [b]1[/b]\n")
        task = display.progress.tasks[0]
        assert task.description == "[1/2] p [dim]· ORT session \\[b]1\\[/b]\\n[/]"
        display.pass_finished(0, 2, record(changed=False))
        display.stage("ignored too")
        assert [t.description for t in display.progress.tasks] == ["[1/2] p [dim]· unchanged[/]"]
    assert steps(out) == ["✓ [1/2] p · unchanged"]


def test_labels_are_shown_as_text_never_as_markup_or_control_characters():
    out = console(width=200)
    with RichProgress(out) as display:
        with display.step("write out/[red]x[/]\n\x1b.onnx"):
            pass
        display.pass_started(0, 1, named("[bold]evil[/]"))
        display.pass_finished(0, 1, record(changed=True, before=3, after=2))
    assert steps(out) == ["✓ write out/[red]x[/]\\n\\x1b.onnx", "✓ [1/1] [bold]evil[/] · 3 → 2 nodes"]


def test_a_warning_is_one_yellow_line_of_escaped_text_never_wrapped():
    out = console(width=30)
    display = RichProgress(out)
    display.warn("no reference npz beside [/]in.onnx\x07; verification compares with 'x', 12 outputs")
    assert out.export_text(clear=False) == ("warning: no reference npz beside [/]in.onnx\\x07; verification compares with "
                                            "'x', 12 outputs\n")
    styled = out.export_text(styles=True, clear=False)
    assert styled.startswith(f"{YELLOW}warning\x1b[0m: no reference")
    assert styled.count("\x1b[") == 2   # no highlighting of the number or the quoted name


def test_a_display_used_without_with_starts_at_its_first_step():
    """compile_model takes any ProgressHook: one not entered still shows its steps."""
    display = RichProgress(console())
    with display.step("load"):
        assert display.progress.live.is_started
    display.progress.stop()
    assert steps(display.console) == ["✓ load"]


def test_failure_names_ctrl_c_interrupted_and_anything_else_failed():
    assert _failure(KeyboardInterrupt()) == "interrupted"
    assert _failure(ValueError()) == "failed"
    assert _failure(SystemExit(1)) == "failed"
    assert _failure(None) == "failed"


@pytest.mark.parametrize("value, text", [(0.0, "0.00 s"), (1.234, "1.23 s"), (59.99, "59.99 s"),
                                         (60.0, "1.0 min"), (90.0, "1.5 min"), (3600.0, "60.0 min")])
def test_seconds_below_a_minute_in_seconds_then_in_minutes(value, text):
    assert _seconds(value) == text


@pytest.mark.parametrize("checker, shapes, cell", [
    ("ok", "ok", "ok"), ("ok", "off", "ok"), ("error: bad graph", "ok", "[red]error[/]"),
    ("ok", "error: rank mismatch", "[red]error[/]"), ("off", "error: x", "[red]error[/]"),
    ("off", "off", "–"), ("skipped (unchanged)", "skipped (unchanged)", "–"), ("ok error", "off", "–"),
])
def test_check_cell(checker, shapes, cell):
    assert _check_cell(record(checker=checker, shapes=shapes)) == cell


def run_of(records, pipeline="seed", before=10, after=7):
    return PipelineRun(pipeline=pipeline, records=records, graph=None, total_seconds=0.0, nodes_before=before,
                       nodes_after=after, ops_before={}, ops_after={})


def test_the_closing_table_has_one_row_a_pass_with_its_time_nodes_headline_checks_and_error():
    records = [
        record("reroll-scans", before=12345, after=1234, stats={"rerolled": 11, "steps": 9}, checker="ok",
               shapes="ok", seconds=1.5, check_seconds=0.25, verify_seconds=0.125,
               verification={"rel_l2": 0.000012345, "max_abs": 1.0}),
        record("simplify", changed=False, before=1234, after=1234, seconds=61.0, checker="error: x"),
    ]
    table = closing_table(run_of(records))
    assert table.title == "pipeline seed" and table.title_justify == "left"
    assert [(c.header, c.justify, c.no_wrap) for c in table.columns] == [
        ("#", "right", False), ("pass", "left", True), ("time", "right", True), ("nodes", "right", True),
        ("rewrites", "left", False), ("checks", "left", False), ("rel L2 vs before", "right", False)]
    assert [list(c._cells) for c in table.columns] == [
        ["1", "2"], ["reroll-scans", "simplify"], ["1.88 s", "1.0 min"], ["12,345 → 1,234", "1,234 → 1,234"],
        ["rerolled=11", ""], ["ok", "[red]error[/]"], ["1.23e-05", ""]]
    out = console(width=200)
    out.print(table)
    lines = shown(out)
    assert lines[0] == "pipeline seed"
    assert re.search(r"│ +1 │ reroll-scans +│ +1\.88 s │ 12,345 → 1,234 │ rerolled=11 │ ok +│ +1\.23e-05 │", lines[4])


def test_the_summary_line_says_time_nodes_output_and_the_verification_exactly():
    out, err = console(width=40), console()
    result = SimpleNamespace(
        run=run_of([record("eliminate-dead-nodes", before=5, after=2)]), records=[], seconds=12.34,
        nodes_before=12345, nodes_after=2, output="out/[b]rolled\n.onnx",
        verification={"against": "naive.ref.npz", "max_abs": 0.000123456, "rel_l2": 2.5e-7},
        report={"tolerance": 1e-5})
    print_result(out, err, result, explain=False)
    lines = shown(out)
    assert lines[-1] == ("total 12.3 s · 12,345 → 2 nodes · wrote out/[b]rolled\\n.onnx · verified against "
                         "naive.ref.npz: max abs 0.000123, rel L2 2.5e-07 (tolerance 1e-05)")
    assert lines[0] == "pipeline seed"
    styled = out.export_text(styles=True, clear=False).splitlines()[-1]
    assert "\x1b" not in styled   # no highlighting
    assert err.export_text(clear=False) == ""
    result.verification = None
    out = console(width=200)
    print_result(out, err, result, explain=False)
    assert shown(out)[-1] == "total 12.3 s · 12,345 → 2 nodes · wrote out/[b]rolled\\n.onnx · not verified"


@pytest.mark.parametrize("stats, line", [
    ({"rerolled": 11, "steps": 12345, "rejected": 0}, "11 scans found and re-rolled (12,345 steps)"),
    ({"rerolled": 2, "rejected": 3}, "2 scans found and re-rolled (0 steps); 3 candidate chains left unrolled "
                                     "(--explain says why)"),
    ({"rejected": 1}, "0 scans found; 1 candidate chains left unrolled (--explain says why)"),
    ({}, "0 scans found"),
])
def test_the_scan_count_follows_the_summary(stats, line):
    out, err = console(width=40), console()
    records = [record("eliminate-dead-nodes", stats={"rerolled": 5}), record("reroll-scans", stats=stats)]
    result = SimpleNamespace(run=run_of(records), records=records, seconds=1.0, nodes_before=10, nodes_after=7,
                             output="o.onnx", verification=None, report={})
    print_result(out, err, result, explain=False)
    assert shown(out)[-2:] == ["total 1.0 s · 10 → 7 nodes · wrote o.onnx · not verified", line]
    assert "\x1b" not in out.export_text(styles=True, clear=False).splitlines()[-1]


def test_notes_all_with_explain_else_only_what_failed_or_was_skipped_on_stderr():
    records = [record("reroll-scans", notes=["chain at 'a' not matched: [x] differs", "rewrite failed: boom\n"]),
               record("quiet", notes=[]),
               record("simp.2", notes=["skipped: too big (123 nodes)", "fine"])]
    result = SimpleNamespace(run=run_of(records), records=records, seconds=1.0, nodes_before=10, nodes_after=7,
                             output="o.onnx", verification=None, report={})
    out, err = console(width=200), console(width=30)
    print_result(out, err, result, explain=False)
    assert err.export_text(clear=False) == "note reroll-scans: rewrite failed: boom\\n\nnote simp.2: skipped: too big (123 nodes)\n"
    assert err.export_text(styles=True, clear=False).startswith(f"{YELLOW}note")
    assert not re.search(r"\x1b\[[0-9;]*m123", err.export_text(styles=True, clear=False))   # no highlighting
    assert not any("note" in line or "- " in line for line in shown(out))
    out, err = console(width=200), console()
    print_result(out, err, result, explain=True)
    assert err.export_text(clear=False) == ""
    assert shown(out)[-6:] == ["reroll-scans", "  - chain at 'a' not matched: [x] differs", "  - rewrite failed: boom\\n",
                               "simp.2", "  - skipped: too big (123 nodes)", "  - fine"]


def test_a_note_is_one_line_however_narrow_the_console():
    """fuzz23: notes were wrapped at the console's width (80 columns in a pipe): the running-maximum note, ~300
    characters, came out as four lines, a name in it cut across two."""
    note = "running maximum at 'max0' (6 steps), " + "word " * 60 + "\u202e\n'left unrolled"
    out = console(width=30)
    print_notes(out, run_of([record("reroll-scans", notes=[note])]))
    assert shown(out) == ["reroll-scans", "  - " + note.replace("\u202e", "\\u202e").replace("\n", "\\n")]


def test_print_notes_names_each_pass_with_notes_in_bold_then_its_notes_as_text():
    out = console(width=200)
    print_notes(out, run_of([record("a", notes=["x [bold]y[/] 12"]), record("b"), record("c", notes=["z"])]))
    assert shown(out) == ["a", "  - x [bold]y[/] 12", "c", "  - z"]
    styled = out.export_text(styles=True, clear=False).splitlines()
    assert styled[0] == f"{BOLD}a\x1b[0m" and styled[1] == "  - x [bold]y[/] 12"

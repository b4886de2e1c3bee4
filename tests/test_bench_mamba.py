"""tools.bench_mamba on a tiny stack: every row runs, the graph is re-rolled and matches PyTorch (no speed asserted)."""
import json
import os
from pathlib import Path

import pytest

from tools.bench_mamba import main


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_tiny_stack_rows_errors_and_table(tmp_path, capsys):
    out = tmp_path / "timings.json"
    code = main(["--d-model", "8", "--d-state", "4", "--layers", "1", "--length", "12", "--repeats", "2",
                 "--threads", "1", "--workdir", str(tmp_path / "work"), "--json", str(out), "--machine", "test box"])
    assert code == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert list(rows) == ["naive", "cpu", "no-scan", "torch-slow", "torch-mambapy"]
    assert all(len(row["seconds"]) == 2 for row in rows.values())
    assert rows["torch-slow"]["rel_l2"] == 0.0
    assert max(row["rel_l2"] for key, row in rows.items() if key != "no-scan") <= 1e-5
    assert rows["no-scan"]["rel_l2"] is None
    assert rows["cpu"]["nodes"] < rows["naive"]["nodes"]
    # the floor keeps no scan and none of what only fed it: no Exp (exp(A * dt)), no Softplus (dt)
    import onnx
    floor_ops = {node.op_type for node in onnx.load(rows["no-scan"]["path"]).graph.node}
    assert rows["no-scan"]["nodes"] < rows["cpu"]["nodes"] and not floor_ops & {"Exp", "Softplus"}
    printed = capsys.readouterr().out
    assert "### Mamba-130m-shaped stack from transformers (test box)" in printed
    assert "| `--pipeline cpu` (ORT) | " in printed and "x PyTorch's sequential slow path" in printed
    assert "| floor: the naive graph with its scans removed (ORT; not the model) | " in printed
    assert "no scan form can make it more than" in printed
    # the FLOP limit: in_proj (8 -> 32), x_proj (16 -> 9), dt_proj (1 -> 16), out_proj (16 -> 8) over 12
    # tokens, 2 FLOPs per multiply-add, plus the causal conv and the slow path's per-step readout MatMuls
    limit = result["flop_limit"]
    linear = 2 * 12 * (8 * 32 + 16 * 9 + 1 * 16 + 16 * 8)
    assert limit["flops"] == sum(limit["by_op"].values()) and limit["flops"] > linear
    assert limit["seconds"] == limit["flops"] / limit["gemm_flops_per_s"]
    assert "| FLOP limit: 0.0 GFLOP of matmuls and convolutions at this machine's GEMM rate (" in printed
    assert "20x the naive graph would be" in printed


def test_reuse_compiled_times_the_graphs_in_workdir_and_from_json_reprints(tmp_path, capsys, monkeypatch):
    """A run on another machine: graphs compiled here are timed as they are; its JSON prints the same table here."""
    work, first, second = tmp_path / "work", tmp_path / "first.json", tmp_path / "second.json"
    tiny = ["--d-model", "8", "--d-state", "4", "--layers", "1", "--length", "12", "--repeats", "1",
            "--threads", "1", "--workdir", str(work), "--machine", "test box"]
    assert main(tiny + ["--json", str(first)]) == 0
    compiled = work / "cpu-L12-x1.onnx"
    compiled_bytes = compiled.read_bytes()

    import pipelines

    def no_compile(*args, **kwargs):
        raise AssertionError("--reuse-compiled compiled again")

    monkeypatch.setattr(pipelines, "compile_model", no_compile)
    capsys.readouterr()
    assert main(tiny + ["--reuse-compiled", "--json", str(second)]) == 0
    result = json.loads(second.read_text())
    assert result["compile_seconds"] is None and result["export_seconds"] is None
    assert compiled.read_bytes() == compiled_bytes
    assert max(row["rel_l2"] for key, row in result["rows"].items() if key != "no-scan") <= 1e-5
    measured = capsys.readouterr().out
    assert "(naive export reused, graphs compiled earlier and reused)." in measured

    assert main(["--from-json", str(second)]) == 0
    table = measured[measured.index("### Mamba"):]   # what follows the per-round progress lines
    assert capsys.readouterr().out == table


def test_section_label_keeps_a_run_on_fewer_threads_apart():
    from tools.bench_mamba import section_label

    assert section_label({"machine": {"cores": 2}, "config": {"threads": 2}}) == "2-core"
    assert section_label({"machine": {"cores": 16}, "config": {"threads": 16}}) == "16-core"
    assert section_label({"machine": {"cores": 16}, "config": {"threads": 2}}) == "16-core-2-threads"


def _saved_result(**changes):
    row = lambda label, seconds: {"label": label, "median_seconds": seconds, "rel_l2": 1e-7}   # noqa: E731
    result = {"config": {"d_model": 8, "d_state": 4, "expand": 2, "layers": 1, "length": 12, "batch": 1,
                         "threads": 2, "repeats": 1},
              "machine_label": "test box", "export_seconds": 1.0, "compile_seconds": 2.0,
              "machine": {"cpu": "cpu", "cores": 2, "threads": 2, "onnxruntime": "1", "torch": "2", "numpy": "2",
                          "python": "3"},
              "rows": {"naive": row("naive", 0.4), "cpu": row("cpu", 0.2), "torch-slow": row("slow", 0.8),
                       "no-scan": row("no scan", 0.1)},
              "flop_limit": {"flops": 1e9, "gemm_flops_per_s": 1e11, "gemm_method": "numpy", "seconds": 0.01}}
    result.update(changes)
    return result


@pytest.mark.parametrize("text, message", [
    ("nope", "is not JSON: Expecting value: line 1 column 1 (char 0)"),
    ("{}", "is not a tools.bench_mamba --json result (KeyError: 'rows')"),
    ("[1]", "is not a tools.bench_mamba --json result (TypeError: list indices must be integers or slices, not str)"),
    (json.dumps(_saved_result(machine_label="box -->\n<!-- /bench:mamba-130m:2-core -->")),
     "holds a string with a control character or an HTML comment marker: 'box -->\\n<!-- /bench:mamba-130m:2-core -->'"),
    (json.dumps(_saved_result(machine={**_saved_result()["machine"], "cores": "../../x"}, config={
        **_saved_result()["config"], "threads": "../../x"})),
     "machine cores and threads must be positive integers, got '../../x' and '../../x'"),
])
def test_from_json_refuses_a_hostile_result_in_one_line(text, message, tmp_path, capsys, monkeypatch):
    """Found by hand-written JSON files (adversarial session s13): --from-json died with tracebacks
    (exit 1) on a file that is not JSON or not a result, and --write-docs took the machine's cores
    and the labels from the file into a file name and into docs/BENCHMARKS.md (a label holding the
    section's end marker would make the next --write-docs cut the wrong section)."""
    import tools.bench_mamba as bench_mamba

    monkeypatch.setattr(bench_mamba, "DOCS", tmp_path / "docs")
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "docs" / "BENCHMARKS.md").write_text("# Benchmarks\n")
    saved = tmp_path / "saved.json"
    saved.write_text(text)
    assert main(["--from-json", str(saved), "--write-docs"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"error: {saved} {message}\n"
    assert listing(tmp_path) == ["docs", "docs/BENCHMARKS.md", "docs/bench", "saved.json"]
    assert (tmp_path / "docs" / "BENCHMARKS.md").read_text() == "# Benchmarks\n"


def test_from_json_writes_docs_and_missing_files_are_one_line(tmp_path, capsys, monkeypatch):
    import tools.bench_mamba as bench_mamba

    monkeypatch.setattr(bench_mamba, "DOCS", tmp_path / "docs")
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "docs" / "BENCHMARKS.md").write_text("# Benchmarks\n")
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(_saved_result()))
    assert main(["--from-json", str(saved), "--write-docs"]) == 0
    assert json.loads((tmp_path / "docs" / "bench" / "mamba-130m-2core.json").read_text()) == _saved_result()
    assert "<!-- bench:mamba-130m:2-core -->\n### Mamba-130m-shaped stack from transformers (test box)" in \
        (tmp_path / "docs" / "BENCHMARKS.md").read_text()
    capsys.readouterr()
    assert main(["--from-json", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err == f"error: cannot read {tmp_path}/missing.json: No such file or directory\n"


def test_a_json_destination_is_checked_before_the_run(tmp_path, capsys, monkeypatch):
    """Found with '--json no/such/dir/x.json': the whole benchmark ran, then json's write died with
    a FileNotFoundError traceback and the timings were lost."""
    import tools.bench_mamba as bench_mamba

    def no_run(args):
        raise AssertionError("the benchmark ran before its destination was checked")

    monkeypatch.setattr(bench_mamba, "run", no_run)
    assert main(["--json", str(tmp_path / "no" / "x.json")]) == 2
    assert capsys.readouterr().err == f"error: --json directory does not exist: {tmp_path}/no\n"


@pytest.mark.parametrize("make, message", [
    (lambda path: os.mkfifo(path), "cannot read {path}: not a regular file"),
    (lambda path: path.write_text("[" * 100000 + "]" * 100000), "is not JSON: maximum recursion depth exceeded"),
])
def test_from_json_of_a_pipe_or_deep_nesting_is_one_line(make, message, tmp_path, capsys):
    """Found by s15-adv: --from-json read a named pipe for ever (and /dev/zero until memory ran out),
    and JSON nested 100,000 deep was a RecursionError traceback (exit 1)."""
    saved = tmp_path / "saved.json"
    make(saved)
    assert main(["--from-json", str(saved)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message.format(path=saved) in err


@pytest.mark.parametrize("flag, value", [("--threads", "0"), ("--layers", "0"), ("--length", "-1"),
                                         ("--d-state", "0"), ("--repeats", "0")])
def test_sizes_and_counts_below_one_are_one_line_errors_before_the_work(flag, value, tmp_path, capsys):
    """Found by s16-adv: --threads 0 was torch's RuntimeError traceback; --layers 0, --length -1 or
    --repeats 0 failed inside transformers or the timing, after an export, as tracebacks."""
    with pytest.raises(SystemExit) as exit_:
        main([flag, value, "--workdir", str(tmp_path / "work")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: argument {flag}: must be an integer >= 1, got '{value}' (see --help)\n"
    assert not (tmp_path / "work").exists()

"""tools.bench_mamba on a tiny stack: every row runs, the graph is re-rolled and matches PyTorch (no speed asserted)."""
import json

from tools.bench_mamba import main


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

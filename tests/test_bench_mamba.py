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
    assert list(rows) == ["naive", "cpu", "torch-slow", "torch-mambapy"]
    assert all(len(row["seconds"]) == 2 for row in rows.values())
    assert rows["torch-slow"]["rel_l2"] == 0.0
    assert max(row["rel_l2"] for row in rows.values()) <= 1e-5
    assert rows["cpu"]["nodes"] < rows["naive"]["nodes"]
    printed = capsys.readouterr().out
    assert "### Mamba-130m-shaped stack from transformers (test box)" in printed
    assert "| `--pipeline cpu` (ORT) | " in printed and "x PyTorch's sequential slow path" in printed

"""The README's library example (``compile_model`` from Python), run exactly as written on the embedded
digits model, with what it prints pinned: a renamed attribute or a stale count fails here. The example in
docs/ARCHITECTURE.md ("The life of one model") is the README's first two lines, so it runs here too."""
import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import onnx

REPO = Path(__file__).resolve().parents[1]

# What the README's example prints for the embedded digits model with the `cpu` pipeline (the same
# counts as tests/golden/micro_cpu.json); the first line's rel L2 is checked as a bound below.
PER_PASS_LINES = """\
unroll-loops 4008 -> 4008 {'unrolled': 0}
reroll-scans 4008 -> 1211 {'rerolled': 5, 'steps': 356, 'rejected': 0}
lower-einsum 1211 -> 1251 {'lowered': 15, 'kept': 0}
softplus-to-exp-log 1251 -> 1271 {'rewritten': 5}
eliminate-dead-nodes 1271 -> 1271 {'removed': 0, 'removed_tensors': 0}
fold-constants 1271 -> 842 {'folded': 429}
einsum-to-matmul 842 -> 842 {'lowered': 0, 'kept': 0}
unit-axes-to-reshape 842 -> 842 {'rewritten': 15}
expand-to-broadcast 842 -> 792 {'rewritten': 10}
pointwise-conv-to-matmul 792 -> 822 {'rewritten': 20, 'transposes_cancelled': 10}
plane-transpose-to-matmul 822 -> 842 {'rewritten': 10}
slice-parts-before-concat 842 -> 842 {'rewritten': 5}
min-max-to-clip 842 -> 842 {'rewritten': 5}
reshape-target-to-constant 842 -> 697 {'rewritten': 40}
simplify 697 -> 636 {'removed': 61}
"""


def python_block_after(document: str, label: str) -> str:
    """The first fenced python block after the line containing ``label``."""
    text = (REPO / document).read_text(encoding="utf-8")
    match = re.search(re.escape(label) + r".*?```python\n(.*?)\n```", text, re.S)
    assert match, f"{document} has no python block after {label!r}"
    return match.group(1) + "\n"


def test_readme_library_example_runs_as_written(micro_naive, tmp_path, monkeypatch):
    readme_example = python_block_after("README.md", "From Python, the same in one call")
    architecture_example = python_block_after("docs/ARCHITECTURE.md", "## The life of one model")
    assert readme_example.startswith(architecture_example)

    shutil.copy(micro_naive, tmp_path / "naive.onnx")
    shutil.copy(micro_naive.with_suffix(".ref.npz"), tmp_path / "naive.ref.npz")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example, "README.md", "exec"), namespace)

    first, rest = printed.getvalue().split("\n", 1)
    match = re.fullmatch(r"4008 -> 636 nodes, rel L2 (\S+)", first)
    assert match, first
    assert 0 < float(match.group(1)) <= 1e-6
    assert rest == PER_PASS_LINES

    # The example's closing comment names the errors; each is importable from pipelines, a CompileError
    # with the CLI's exit code.
    import pipelines

    raised = re.search(r"# failures raise (\w+), (\w+) or (\w+) \(all (\w+), each with its exit_code\)", readme_example)
    assert raised, readme_example
    *errors, base = (getattr(pipelines, name) for name in raised.groups())
    assert [(error.__name__, issubclass(error, base), error.exit_code) for error in errors] == [
        ("BadInput", True, 2), ("VerificationFailed", True, 3), ("PassFailed", True, 4)]

    result = namespace["result"]
    assert result.output == Path("cpu.onnx")
    assert len(onnx.load("cpu.onnx").graph.node) == 636
    assert sorted(path.name for path in Path("report").iterdir()) == ["index.html", "report.json"]
    # README: result.report is report.json before its derived fields; given report=, status and exit_code are in it.
    assert (result.report["status"], result.report["exit_code"], result.report["pipeline_name"]) == ("ok", 0, "cpu")
    assert "totals" not in result.report and "schema_version" not in result.report
    written = json.loads(Path("report/report.json").read_text())
    assert written["totals"]["nodes_after"] == 636 and written["totals"]["rerolled_scans"] == 5

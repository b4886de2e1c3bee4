"""The README's example pass, as written there, is one new file plus one test: on a copy of the
compiler with only those two files added it shows in --list-passes, runs in a pipeline string,
refuses an option it does not declare, and its own test passes."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import onnx.parser

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("passes", "patterns", "pipelines")


def readme_block_after(label: str) -> str:
    """The fenced code block that follows the line ending with ``label``."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(re.escape(label) + r"\s*\n\s*```python\n(.*?)\n```", readme, re.S)
    assert match, f"README has no python block after {label!r}"
    return match.group(1) + "\n"


def run(tree: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=tree, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def test_readme_example_pass_is_one_file_plus_one_test(tmp_path):
    tree = tmp_path / "tree"
    for room in ROOMS:
        shutil.copytree(REPO / room, tree / room, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "tests").mkdir()
    (tree / "passes" / "square_to_mul.py").write_text(readme_block_after("`passes/square_to_mul.py`:"))
    (tree / "tests" / "test_square_to_mul.py").write_text(readme_block_after("and `tests/test_square_to_mul.py`:"))

    listing = run(tree, "-m", "passes.apply", "--list-passes")
    assert listing.returncode == 0, listing.stderr
    assert "square-to-mul  rewrite Pow(x, 2) as Mul(x, x)" in listing.stdout

    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 3] x) => (float[2, 3] y) { two = Constant<value = float {2.0}>()  s = Pow(x, two)  y = Relu(s) }""")
    onnx.save(model, tree / "m.onnx")
    compiled = run(tree, "-m", "passes.apply", "m.onnx", "--pipeline", "square-to-mul,simplify", "-o", "out.onnx")
    assert compiled.returncode == 0, compiled.stderr
    assert [node.op_type for node in onnx.load(tree / "out.onnx").graph.node] == ["Mul", "Relu"]

    refused = run(tree, "-m", "passes.apply", "m.onnx", "--pipeline", "square-to-mul{x=1}", "-o", "o.onnx")
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("error: bad options for pass 'square-to-mul': unknown option(s) x; "
                                      "accepted options: (none)")

    own_test = run(tree, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_square_to_mul.py")
    assert own_test.returncode == 0, own_test.stdout + own_test.stderr
    assert "1 passed" in own_test.stdout

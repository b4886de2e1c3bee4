"""The import direction of docs/ARCHITECTURE.md, read from the source with ast (lazy imports included).

patterns <- passes <- pipelines (named pipelines and compile_model); nothing in them imports torch,
vmamba_ref or tools; the one exception is passes/apply.py, the CLI entry module, which imports the
API above it.
A pass module does not import another pass module (shared code lives in patterns/ or a helper).
"""
import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# room -> the rooms it may import from (itself included)
ALLOWED = {
    "patterns": {"patterns"},
    "passes": {"passes", "patterns"},
    "pipelines": {"pipelines", "passes", "patterns"},
}
FORBIDDEN_EVERYWHERE = {"torch", "vmamba_ref", "tools", "tests"}
ENTRY_MODULES = {"passes/apply.py": {"pipelines"}}
ROOMS = set(ALLOWED) | FORBIDDEN_EVERYWHERE


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in the file, relative ones resolved."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def room_files(room: str) -> list[Path]:
    return sorted((REPO / room).rglob("*.py"))


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_imports_only_go_down(room):
    wrong = []
    for path in room_files(room):
        relative = str(path.relative_to(REPO))
        allowed = ALLOWED[room] | ENTRY_MODULES.get(relative, set())
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in FORBIDDEN_EVERYWHERE or (top in ROOMS and top not in allowed):
                wrong.append(f"{relative}:{line} imports {module}")
    assert wrong == []


def test_pass_modules_do_not_import_each_other():
    from passes.registry import pass_module_names

    pass_modules = set(pass_module_names())
    wrong = []
    for name in sorted(pass_modules):
        path = REPO / (name.replace(".", "/") + ".py")
        wrong += [f"{name}:{line} imports {module}" for line, module in imported_modules(path)
                  if module in pass_modules and module != name]
    assert wrong == []


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The check can fail: a patterns module importing passes is reported with its line."""
    fake_repo = tmp_path
    (fake_repo / "patterns").mkdir()
    (fake_repo / "patterns" / "bad.py").write_text("import numpy\n\ndef f():\n    from passes.base import Pass\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", fake_repo)
    with pytest.raises(AssertionError, match=r"patterns/bad.py:4 imports passes.base"):
        test_imports_only_go_down("patterns")

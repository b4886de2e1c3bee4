"""Named pipelines, one small module each (``pipelines/<name>.py`` defining ``PIPELINE``), and the
library's front door, ``compile_model`` (``pipelines/compiler.py``)::

    from pipelines import compile_model
    result = compile_model("naive.onnx", "cpu", output="cpu.onnx", report="report/")

``get_pipeline("seed")`` returns a named pipeline; any other text is parsed as a pipeline
(``"eliminate-dead-nodes,simplify{skip_above_nodes=5000}"``).
"""
from __future__ import annotations

import ast
import functools
import importlib
from pathlib import Path

from pipelines.pipeline import Pipeline, PipelineSyntaxError, Step, parse_pipeline

# The order --list-pipelines shows the shipped pipelines in. A new module of pipelines/ that assigns
# ``PIPELINE`` is found without being listed here (after these, by module name): see pipeline_modules().
PIPELINE_MODULES = ("pipelines.seed", "pipelines.cpu", "pipelines.cpu_many", "pipelines.ov", "pipelines.tpu", "pipelines.tpu_bm1688", "pipelines.tpu_cv186x")

__all__ = ["Pipeline", "Step", "PipelineSyntaxError", "UnknownPipelineError",
           "parse_pipeline", "get_pipeline", "list_pipelines",
           "compile_model", "CompileResult", "CompileError", "BadInput", "VerificationFailed", "PassFailed",
           "resolve_pipeline"]

# The front door is loaded on first use: listing pipelines should not import ONNX Runtime.
_FRONT_DOOR = {"compile_model", "CompileResult", "CompileError", "BadInput", "VerificationFailed", "PassFailed",
               "resolve_pipeline"}


def __getattr__(name: str):
    if name in _FRONT_DOOR:
        from pipelines import compiler

        return getattr(compiler, name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


class UnknownPipelineError(ValueError):
    """Neither a named pipeline nor valid pipeline text; the message lists the names."""


@functools.lru_cache(maxsize=None)
def pipeline_modules() -> tuple[str, ...]:
    """PIPELINE_MODULES, then every other module of pipelines/ that assigns ``PIPELINE`` at its top
    level, by name (found with ``ast``, as the pass registry finds passes: nothing else is imported)."""
    found = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        module_name = f"pipelines.{path.stem}"
        if module_name in PIPELINE_MODULES or path.name == "__init__.py":
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except OSError:
            continue
        except (SyntaxError, ValueError):   # imported anyway, so that its error is raised, not skipped
            found.append(module_name)
            continue
        if any(isinstance(target, ast.Name) and target.id == "PIPELINE"
               for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
               for target in (node.targets if isinstance(node, ast.Assign) else [node.target])):
            found.append(module_name)
    return PIPELINE_MODULES + tuple(found)


def list_pipelines() -> dict[str, Pipeline]:
    """Named pipelines, by name: PIPELINE_MODULES' in that order, then any other ``pipelines/`` module's."""
    pipelines = {}
    for module_name in pipeline_modules():
        pipeline = importlib.import_module(module_name).PIPELINE
        pipelines[pipeline.name] = pipeline
    return pipelines


def get_pipeline(name_or_text: str) -> Pipeline:
    named = list_pipelines()
    if name_or_text in named:
        return named[name_or_text]
    valid = ", ".join(named)
    looks_like_text = any(c in name_or_text for c in ",{") or _is_registered_pass(name_or_text)
    if not looks_like_text:
        raise UnknownPipelineError(
            f"unknown pipeline '{name_or_text}'; valid pipelines: {valid} (or pass text like 'eliminate-dead-nodes,simplify')"
        )
    try:
        return parse_pipeline(name_or_text)
    except PipelineSyntaxError as error:
        raise UnknownPipelineError(f"{error}; valid pipelines: {valid}") from None


def _is_registered_pass(name: str) -> bool:
    from passes.registry import all_passes

    return name in all_passes()

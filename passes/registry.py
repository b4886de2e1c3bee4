"""Pass classes by name.

Each pass module decorates its class with ``@register_pass``. The registry imports the
built-in pass modules on first use (listed in ``BUILTIN_PASS_MODULES``); a module that does
not exist yet is skipped, so the CLI works while ``passes.reroll_scans`` is being written.
A module that exists but fails to import is remembered and its error shown when someone
asks for a pass that is then missing.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from passes.base import Pass

BUILTIN_PASS_MODULES = (
    "passes.reroll_scans",
    "passes.lower_einsum",
    "passes.softplus_to_exp_log",
    "passes.unit_axes_to_reshape",
    "passes.cumsum_to_matmul",
    "passes.eliminate_dead_nodes",
    "passes.fold_constants",
    "passes.simplify_onnxsim",
    "passes.split_cumsum",
    "passes.cumsum_plain",
    "passes.cumsum_rank4",
    "passes.slice_reverse_to_gather",
    "passes.remove_identity",
    "passes.matmul_left_rank",
    "passes.tpu_legality",
    "passes.constants_to_initializers",
)

_passes: dict[str, type[Pass]] = {}
_import_failures: dict[str, str] = {}
_builtins_loaded = False


class UnknownPassError(ValueError):
    """No pass of that name; the message lists the valid names."""


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available by its ``name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must set a class attribute 'name' to register")
    existing = _passes.get(name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"pass name '{name}' is taken by {existing.__module__}.{existing.__qualname__}")
    _passes[name] = cls
    return cls


def unregister_pass(name: str) -> None:
    """For tests that register throw-away passes."""
    _passes.pop(name, None)


def _load_builtin_passes() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module_name in BUILTIN_PASS_MODULES:
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue  # not written yet
            _import_failures[module_name] = f"{type(error).__name__}: {error}"
        except Exception as error:  # a broken pass must not take down the others
            _import_failures[module_name] = f"{type(error).__name__}: {error}"


def all_passes() -> dict[str, type[Pass]]:
    """Registered pass classes, sorted by name."""
    _load_builtin_passes()
    return dict(sorted(_passes.items()))


def import_failures() -> dict[str, str]:
    """Built-in pass modules that exist but raised on import: module -> error."""
    _load_builtin_passes()
    return dict(_import_failures)


def get_pass_class(name: str) -> type[Pass]:
    passes = all_passes()
    if name in passes:
        return passes[name]
    message = f"unknown pass '{name}'; valid passes: {', '.join(passes) or '(none)'}"
    if _import_failures:
        broken = "; ".join(f"{module}: {error}" for module, error in _import_failures.items())
        message += f" (failed to import: {broken})"
    raise UnknownPassError(message)


def get_pass(name: str, **options: Any) -> Pass:
    """Instantiate a pass by name. Bad options give a one-line error naming the pass."""
    cls = get_pass_class(name)
    try:
        return cls(**options)
    except TypeError as error:
        accepted = pass_option_names(cls)
        raise UnknownPassError(
            f"bad options for pass '{name}': {error}; accepted options: {', '.join(accepted) or '(none)'}"
        ) from None
    except ValueError as error:  # a known option with a value the pass refuses (form=fast, chunk=0)
        raise UnknownPassError(f"bad option value for pass '{name}': {error}") from None


def pass_option_names(cls: type[Pass]) -> list[str]:
    """Names of the keyword options a pass class takes (from its ``__init__``)."""
    if cls.__init__ is Pass.__init__:
        return []
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in parameters
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

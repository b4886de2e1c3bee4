"""Pass classes by name.

A pass registers itself: its module decorates the class with ``@register_pass``. Nothing
else lists it. On first use the registry imports

- every module directly in the ``passes`` package with a class decorated ``@register_pass``
  (read with ``ast``, so infrastructure modules are not imported; a new pass is one new file), and
- every entry point in the group ``vmamba_passes.passes`` (so an installed package adds
  passes the same way: ``[project.entry-points."vmamba_passes.passes"] mine = "mypkg.mypass"``).

A module or entry point that fails to import does not take the other passes down, and is not
skipped silently: ``import_failures()`` names it with its error, ``--list-passes`` shows it,
``compile_model`` warns about it, and asking for a pass that is then missing says why.
"""
from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import pkgutil
import threading
from pathlib import Path
from typing import Any

from passes.one_line import one_line
from passes.base import Option, Pass, PassOptionError

ENTRY_POINT_GROUP = "vmamba_passes.passes"
_REGISTERS_A_PASS = "register_pass"  # a cheap filter before parsing

_passes: dict[str, type[Pass]] = {}
_import_failures: dict[str, str] = {}
_discovered = False
_discovery_lock = threading.RLock()


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


def pass_module_names() -> list[str]:
    """Modules directly in the ``passes`` package that register a pass (read, not imported)."""
    package = Path(__file__).parent
    names = []
    for module in pkgutil.iter_modules([str(package)]):
        if module.ispkg:
            continue
        source = (package / f"{module.name}.py").read_text(encoding="utf-8")
        if _REGISTERS_A_PASS in source and _decorates_a_class_with_register_pass(source):
            names.append(f"passes.{module.name}")
    return sorted(names)


def _decorates_a_class_with_register_pass(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return True  # import it, so that the error is recorded and shown
    return any(isinstance(node, ast.ClassDef) and any(
        isinstance(decorator, ast.Name) and decorator.id == "register_pass" for decorator in node.decorator_list)
        for node in tree.body)


def _record_failure(where: str, error: BaseException) -> None:
    _import_failures[where] = f"{type(error).__name__}: {one_line(error)}"


def _discover() -> None:
    # Under the lock: another thread read the registry empty while the first still imported (adv19: compile_model
    # from four threads, three "unknown pass 'unroll-loops'; valid passes: (none)"). Marked done first, so that
    # an import asking again (the same thread: the lock is reentrant) returns.
    global _discovered
    with _discovery_lock:
        if _discovered:
            return
        _discovered = True
        _import_all()


def _import_all() -> None:
    for module_name in pass_module_names():
        try:
            importlib.import_module(module_name)
        except Exception as error:  # a broken pass must not take down the others
            _record_failure(module_name, error)
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {entry_point.name} = {entry_point.value}"
        try:
            loaded = entry_point.load()  # a module (its passes register on import) or a Pass class
        except Exception as error:
            _record_failure(where, error)
            continue
        if inspect.isclass(loaded) and issubclass(loaded, Pass) and loaded.name not in _passes:
            register_pass(loaded)


def all_passes() -> dict[str, type[Pass]]:
    """Registered pass classes, sorted by name."""
    _discover()
    return dict(sorted(_passes.items()))


def import_failures() -> dict[str, str]:
    """Pass modules and entry points that raised on import: where -> error."""
    _discover()
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
    """Instantiate a pass by name. A bad option raises PassOptionError naming pass and option."""
    cls = get_pass_class(name)
    if cls.declared_options or cls.__init__ is Pass.__init__:
        return cls(**options)  # Pass.__init__ checks every value against its declaration
    # A pass that takes its options in its own __init__ (no declarations): its errors, one line.
    try:
        return cls(**options)
    except TypeError as error:
        accepted = pass_option_names(cls)
        raise PassOptionError(
            f"bad options for pass '{name}': {error}; accepted options: {', '.join(accepted) or '(none)'}") from None
    except ValueError as error:
        raise PassOptionError(f"bad option value for pass '{name}': {error}") from None


def pass_options(cls: type[Pass]) -> dict[str, Option | None]:
    """Option name -> its declaration (None for a pass that only has ``__init__`` parameters)."""
    if cls.declared_options or cls.__init__ is Pass.__init__:
        return dict(cls.declared_options)
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: None for p in parameters
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def pass_option_names(cls: type[Pass]) -> list[str]:
    return list(pass_options(cls))

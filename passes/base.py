"""The pass interface: a pass is a small named class that rewrites one in-memory graph.

Every pass works on an onnx-graphsurgeon ``gs.Graph`` and returns a ``PassResult`` saying
whether it changed anything and how much. The pass manager (``passes/manager.py``) owns
timing, node counts, checking and verification, so passes stay about the rewrite alone.

A pass declares its options as class attributes, each an ``Option`` with a type, a default,
a range or choices and one line of help::

    class SplitCumSum(Pass):
        name = "split-cumsum"
        budget = Option(int, 4096, "elements per NPU lane a CumSum may hold", min=2)

``Pass.__init__`` checks every value against its declaration (``check_option``, the only
place options are validated) and sets it on the instance, so ``self.budget`` is an int >= 2.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import onnx_graphsurgeon as gs

from passes.one_line import finite_real, is_integer


class PassError(Exception):
    """A pass could not do its job; the message names the node and op type at fault."""


class PassInputError(PassError):
    """What the pass met is the input model's own, which no pass may change (its interface: a graph output
    that is a graph input): the compile is refused as bad input (exit code 2), not as a failed pass."""


class PassOptionError(ValueError):
    """An option a pass does not have, or a value outside its declared type or range.
    One line that names the pass and the option (a usage error: exit code 2)."""


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


@dataclass(frozen=True)
class Option:
    """A declared pass option: ``type`` (bool, int, float or str), ``default``, one line of
    ``help``, and for numbers an inclusive ``min``/``max``, for strings ``choices``."""

    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None

    def expectation(self) -> str:
        """What a valid value is, in words: "an integer >= 1", "one of chunk24, parallel"."""
        if self.choices is not None:
            return f"one of {', '.join(self.choices)}"
        text = _TYPE_NAMES[self.type]
        if self.min is not None and self.max is not None:
            return f"{text} in [{self.min:g}, {self.max:g}]"
        if self.min is not None:
            return f"{text} >= {self.min:g}"
        if self.max is not None:
            return f"{text} <= {self.max:g}"
        return text

    def describe(self) -> str:
        """One line for --list-passes: type, range, default, help."""
        return f"{self.expectation()}, default {_shown(self.default)}: {self.help}"


def _shown(value: Any) -> str:
    """A value as pipeline text writes it (true, 24, chunk24)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_option(pass_name: str, option_name: str, option: Option, value: Any, written: str | None = None) -> Any:
    """``value`` as the option's type, or PassOptionError naming the pass and the option.

    Text a pipeline parsed into another type (``form=8``) is taken back for a string option;
    nothing else is converted: a bool is no integer, 1.9 and inf are no integers, "maybe" is
    no bool, and a number must be finite. ``written``: the pipeline text the value was parsed
    from; a string option takes it as it is, and a refusal quotes it (``1e3``, not ``1000.0``).
    """
    if option.type is str and written is not None:
        value = written
    if option.type is bool:
        valid = isinstance(value, bool)
    elif option.type is int:
        valid = is_integer(value)
    elif option.type is float:
        valid = finite_real(value)   # pipeline text reads 10^400 as an int, beyond float
    elif option.type is str:
        value = _shown(value) if isinstance(value, (bool, numbers.Number)) else value
        valid = isinstance(value, str) and (option.choices is None or value in option.choices)
    else:
        raise TypeError(f"pass '{pass_name}': option '{option_name}' has unsupported type {option.type!r}")
    if valid and option.type in (int, float):
        value = option.type(value)
        valid = (option.min is None or value >= option.min) and (option.max is None or value <= option.max)
    if not valid:
        raise PassOptionError(f"bad option value for pass '{pass_name}': option '{option_name}' must be "
                              f"{option.expectation()}, got '{_shown(value) if written is None else written}'")
    return value


@dataclass
class PassResult:
    changed: bool
    # Counts a user cares about, e.g. {"rerolled": 11, "steps": 8918}. Numbers or short strings.
    stats: dict[str, Any] = field(default_factory=dict)
    # Human-readable remarks: why a candidate did not match, what was skipped.
    notes: list[str] = field(default_factory=list)


@dataclass
class PassContext:
    """What a pass may know about the model beyond its graph."""

    opset: int
    explain: bool = False
    log: Callable[[str], None] = lambda message: None


class Pass:
    """Base class. Subclasses set ``name`` and ``description``, declare their options as
    ``Option`` class attributes and implement ``run``.

    ``options()`` returns the values, in declaration order, so a run records exactly what ran.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    # name -> Option, collected from the class attributes of the class and its bases.
    declared_options: ClassVar[dict[str, Option]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = dict(cls.declared_options)
        declared.update({key: value for key, value in vars(cls).items() if isinstance(value, Option)})
        cls.declared_options = declared

    def __init__(self, **options: Any) -> None:
        unknown = [key for key in options if key not in self.declared_options]
        if unknown:
            accepted = ", ".join(self.declared_options) or "(none)"
            raise PassOptionError(f"bad options for pass '{self.name}': unknown option(s) {', '.join(unknown)}; "
                                  f"accepted options: {accepted}")
        for key, option in self.declared_options.items():
            value = options[key] if key in options else option.default
            setattr(self, key, check_option(self.name, key, option, value))

    def options(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.declared_options}

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    def non_finite_hint(self) -> Optional[str]:
        """Why this pass's last run may have made the graph compute NaN or infinity (a form known to
        overflow float32), for the message when verification finds non-finite values; None if not."""
        return None

    def __repr__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options().items()))
        return f"{self.name}{{{opts}}}" if opts else self.name

"""The pass interface: a pass is a small named class that rewrites one in-memory graph.

Every pass works on an onnx-graphsurgeon ``gs.Graph`` and returns a ``PassResult`` saying
whether it changed anything and how much. The pass manager (``passes/manager.py``) owns
timing, node counts, checking and verification, so passes stay about the rewrite alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import onnx_graphsurgeon as gs


class PassError(Exception):
    """A pass could not do its job; the message names the node and op type at fault."""


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
    """Base class. Subclasses set ``name`` and ``description`` and implement ``run``.

    Options are keyword arguments of ``__init__``; ``options()`` returns them so that a
    pipeline can be printed back exactly as it was given.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"pass '{self.name}' takes no options, got {sorted(options)}")

    def options(self) -> dict[str, Any]:
        return {}

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options().items()))
        return f"{self.name}{{{opts}}}" if opts else self.name

"""A recurrence's decays a_i as a scan form takes them: as they are, or as log a_i where that is sound.

Most forms only multiply decays (`values`): exact for any sign. A form that sums log decays
(chunk24's cumsum, `batched`, `window-doubling`'s band MatMuls) needs `log`, which exists only
when every a_i is provably > 0:
  - a_i = Exp(z): log a_i is z, for free and exactly (every naive Mamba/VMamba export);
  - a_i a constant whose values are all finite and > 0: Log of it, which fold-constants folds.
Anything else (a Tanh, a graph input, a constant with an entry <= 0, a Sigmoid, which is 0 in float32
below about -104) has no log: Log(a_i) would be NaN or -inf there. Both are built into the
graph only when a form asks, so a form that takes only one leaves no dead node for the other.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from patterns.graph_query import constant_value, producer


# Ops that only move or reshape elements: log commutes with them.
_MOVES_ONLY = frozenset({"Unsqueeze", "Squeeze", "Reshape", "Transpose", "Identity"})
# ... and with a Slice, which only selects elements: seen through inside a masked decay only (step_replay's step of a
# source whose step axis has no declared size: a masked step's Exp(z) replayed from a TorchScript export), where a log is
# what lets the log-space forms take the chain at all. Elsewhere the decays stay as before s33 (the strided forms take
# a log where there is one: 6 more nodes in cpu's graph of user-bidirectional-s6-scan-op-dynamo).
_MOVES_AND_SLICES = _MOVES_ONLY | {"Slice"}


def _masked(builder: GraphBuilder, node: Optional[gs.Node]) -> Optional["Decays"]:
    """The decays of Where(c, a, 1) or Where(c, 1, a) with their log, where a's has one (else None)."""
    if node is None or node.op != "Where" or node.domain or len(node.inputs) != 3:
        return None
    for kept in (2, 1):
        value = constant_value(node.inputs[kept])
        if value is not None and value.size and np.all(value == 1):
            return Decays._of_masked(builder, node, kept)
    return None


class Decays:
    """The decays a_i: `values` (always) and `log` (log a_i, None unless every a_i is provably > 0)."""

    def __init__(self, make_values: Callable[[], gs.Tensor], make_log: Optional[Callable[[], gs.Tensor]],
                 why_no_log: str = "") -> None:
        self._make_values, self._make_log = make_values, make_log
        self._values: Optional[gs.Tensor] = None
        self._log: Optional[gs.Tensor] = None
        self.why_no_log = why_no_log   # what the decays are, when they have no log: for rejection notes

    @classmethod
    def of(cls, builder: GraphBuilder, decay: gs.Tensor, through_slices: bool = False) -> "Decays":
        """The decays held by the graph's tensor `decay` (`through_slices`: an Exp's log seen through Slices too)."""
        node = producer(decay)
        if node is not None and node.op == "Exp" and not node.domain:
            exponent = node.inputs[0]
            return cls(lambda: decay, lambda: exponent)
        moves, inner = [], node
        moving = _MOVES_AND_SLICES if through_slices else _MOVES_ONLY
        while inner is not None and inner.op in moving and not inner.domain and inner.inputs:
            moves.append(inner)
            inner = producer(inner.inputs[0])
        if moves and inner is not None and inner.op == "Exp" and not inner.domain:
            # An Exp moved by shape ops (passes/step_axis_pieces.py's Unsqueeze): the same ops move its exponent.
            def moved_log(exponent=inner.inputs[0]):
                for move in reversed(moves):
                    exponent = builder.node(move.op, [exponent, *move.inputs[1:]], dict(move.attrs))
                return exponent
            return cls(lambda: decay, moved_log)
        masked = _masked(builder, node)
        if masked is not None:
            return masked
        if isinstance(decay, gs.Constant):
            values = np.asarray(decay.values)
            if values.size and np.all(np.isfinite(values)) and np.all(values > 0):
                return cls(lambda: decay, lambda: builder.log(decay))
            return cls(lambda: decay, None, f"the constant '{decay.name}' holds a value <= 0 or not finite")
        made_by = f"a {node.op} output ('{decay.name}')" if node is not None else f"the graph input '{decay.name}'"
        return cls(lambda: decay, None, f"they are {made_by}, not an Exp output or a constant > 0")

    @classmethod
    def _of_masked(cls, builder: GraphBuilder, where: gs.Node, kept: int) -> Optional["Decays"]:
        """Where(c, a, 1) (`kept` 2; Where(c, 1, a): 1), a masked step's decays (passes/masked_steps.py): log a_i is
        Where(c, log a_i, 0) where a_i has a log (log 1 = 0 exactly), else None."""
        inner = cls.of(builder, where.inputs[3 - kept], through_slices=True)
        if not inner.has_log:
            return None
        ones = np.asarray(constant_value(where.inputs[kept]))

        def masked_log():
            zeros = builder.const(np.zeros_like(ones))
            inputs = [where.inputs[0], inner.log, zeros] if kept == 2 else [where.inputs[0], zeros, inner.log]
            return builder.node("Where", inputs)
        return cls(lambda: where.outputs[0], masked_log)

    @classmethod
    def from_log(cls, builder: GraphBuilder, log_decay: gs.Tensor) -> "Decays":
        """Decays given in log space (a carry one level up, a test): values are Exp(log_decay)."""
        return cls(lambda: builder.exp(log_decay), lambda: log_decay)

    @property
    def values(self) -> gs.Tensor:
        """a_i, exact for any sign."""
        if self._values is None:
            self._values = self._make_values()
        return self._values

    @property
    def has_log(self) -> bool:
        return self._make_log is not None

    @property
    def log(self) -> gs.Tensor:
        """log a_i; only where `has_log` (a log-space form is never handed decays without one)."""
        if self._make_log is None:
            raise ValueError(f"no log of decays that may be <= 0: {self.why_no_log}")
        if self._log is None:
            self._log = self._make_log()
        return self._log

    def first_step_one(self, builder: GraphBuilder, axis: int, rank: int) -> "Decays":
        """The decays with a_0 = 1 (log a_0 = 0), the others as they are: exact where x_{-1} is zeros, which a_0
        only multiplies. A running maximum's first decay exp(m_{-1} + w - m_0), m_{-1} = -1e38 (RWKV's start),
        is exp(-1e38): summed into the log-space forms' cumulative logs it swallowed every later step's (NaN)."""
        def first_one(tensor: gs.Tensor, one: float) -> gs.Tensor:
            later = builder.node("Slice", [tensor, builder.ints([1]), builder.ints([2 ** 62]), builder.ints([axis])])
            return builder.pad_axis(later, rank, axis, 1, 0, one)
        make_log = (lambda: first_one(self.log, 0.0)) if self.has_log else None
        return Decays(lambda: first_one(self.values, 1.0), make_log, self.why_no_log)

    def mapped(self, change: Callable[[gs.Tensor], gs.Tensor]) -> "Decays":
        """The same decays through a change that commutes with log (a Squeeze, a Transpose)."""
        make_log = (lambda: change(self.log)) if self.has_log else None
        return Decays(lambda: change(self.values), make_log, self.why_no_log)

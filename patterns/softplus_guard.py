"""PyTorch's softplus threshold guard as the dynamo exporter writes ``F.softplus(x)`` (beta 1, threshold T = 20):
``Where(Greater(x, T), x, Softplus(x))`` (the TorchScript exporter writes the bare Softplus). softplus-to-exp-log and
softplus-guard-off drop it where Softplus(x) is x past T in float32 anyway."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from patterns.graph_query import constant_value, producer

# From here on 1 + e^x rounds to e^x in float32 (e^x >= 2^24 from x = 16.64), so log(1 + e^x) is x:
# a guard Where(x > T, x, Softplus(x)) with T >= GUARD_FROM picks what Softplus (and softplus-to-exp-log's form) gives.
GUARD_FROM = 17.0


def _guard_threshold(node: gs.Node, x: gs.Tensor) -> float | None:
    """T of a ``Greater(x, T)`` node whose output is x's shape: T a one-element float constant of rank 0,
    or of rank 1 where x's rank is known and not 0 (a rank-1 T would make a scalar x's condition [1])."""
    if node is None or node.op != "Greater" or node.domain or len(node.inputs) != 2 or node.inputs[0] is not x:
        return None
    value = constant_value(node.inputs[1])
    if value is None or value.size != 1 or not np.issubdtype(value.dtype, np.floating):
        return None
    if value.ndim > 1 or (value.ndim == 1 and (x.shape is None or len(x.shape) == 0)):
        return None
    return float(value.reshape(-1)[0])


def threshold_guard(node: gs.Node, graph_outputs: frozenset[str], guard_from: float = GUARD_FROM) -> gs.Node | None:
    """The Where that guards Softplus ``node`` as PyTorch's threshold does, ``Where(Greater(x, T), x,
    Softplus(x))`` with T >= ``guard_from``, when it is the Softplus output's only reader; else None."""
    x, output = node.inputs[0], node.outputs[0]
    if output.name in graph_outputs or len(output.outputs) != 1:
        return None
    where = output.outputs[0]
    if where.op != "Where" or where.domain or len(where.inputs) != 3 or where.inputs[1] is not x \
            or where.inputs[2] is not output:   # another domain's Where or Greater means what that domain says
        return None
    condition = where.inputs[0]
    threshold = _guard_threshold(producer(condition), x)
    if threshold is None or not threshold >= guard_from:   # NaN too
        return None
    return where

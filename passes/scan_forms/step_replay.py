"""Replay a per-step subgraph (patterns/step_template.py) over every step at once.

Every tensor of the template that varies with the step gets a leading step axis of length L;
tensors shared by all steps stay as they are and broadcast. Each op is rewritten for the extra
axis by a small rule (axes shifted by one, a Reshape target prefixed with L, a MatMul or Einsum
with one more batch axis, ...). Step i of a shared tensor (Gather(C, i), Slice(C, i, i + 1))
becomes the whole tensor with that axis moved to the front. A grouped Conv whose every group is
one dot product (kernel as long as its input, one output channel per group: both spellings of
the ONNX fork's readout) becomes that dot product, a Mul and a ReduceSum, since its weights
differ per step. An op without a rule raises ReplayError, caught by the matcher's dry run.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.scan_forms.chunk_axes import move_axis
from patterns.graph_query import constant_ints, constant_value, describe, node_axes, normalize_axis, producer
from patterns.no_ops import is_same_type_cast
from patterns.step_template import StepTemplate

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where", "Equal", "Less", "Greater", "And", "Or",
               "Cast", "Identity", "Neg", "Exp", "Log", "Abs", "Sqrt", "Reciprocal", "Relu", "Sigmoid", "Tanh",
               "Softplus", "Erf", "Sin", "Cos", "Floor", "Ceil", "Sign", "Not"}
REDUCTIONS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"}


class ReplayError(Exception):
    pass


@dataclass
class Value:
    tensor: gs.Tensor
    batched: bool        # has the leading step axis
    rank: int            # rank of one step's tensor (without the step axis)
    # The order in memory: axis j of `tensor` is axis layout[j] of the value (step axis 0 included,
    # always first); None: as the value's axes. Only the state comes in laid out otherwise (a form
    # that keeps its blocks channels-last); rules that can, keep the layout, the others undo it first.
    layout: Optional[tuple] = None


class _Replay:
    def __init__(self, b: GraphBuilder, template: StepTemplate, length: int, start: int = 0, stride: int = 1) -> None:
        self.b, self.t, self.length = b, template, length
        self.start, self.stride = start, stride   # the steps replayed: start, start + stride, ... (length of them)
        self.env: dict[int, Value] = {}
        self.unsqueezed: dict[int, tuple] = {}   # id(output of our Unsqueeze) -> (input, axes)

    # -- helpers --------------------------------------------------------------------------
    def rank_of(self, tensor: gs.Tensor) -> int:
        if id(tensor) in self.t.ranks:
            return self.t.ranks[id(tensor)]
        value = constant_value(tensor)
        if value is not None:
            return value.ndim
        raise ReplayError(f"rank of '{tensor.name}' is unknown")

    def value(self, tensor: gs.Tensor) -> Value:
        if id(tensor) in self.env:
            return self.env[id(tensor)]
        return Value(tensor, False, self.rank_of(tensor))

    def unsqueeze(self, x: gs.Tensor, axes: list[int]) -> gs.Tensor:
        out = self.b.unsqueeze(x, axes)
        self.unsqueezed[id(out)] = (x, tuple(axes))
        return out

    def squeeze(self, x: gs.Tensor, axes: list[int]) -> gs.Tensor:
        undone = self.unsqueezed.get(id(x))
        if undone is not None and undone[1] == tuple(axes):
            return undone[0]
        return self.b.squeeze(x, axes)

    def lift(self, v: Value, rank: int) -> gs.Tensor:
        """A batched value with rank-`rank` steps (unit axes after the step axis), for broadcasting."""
        if not v.batched or v.rank >= rank:
            return v.tensor
        return self.unsqueeze(v.tensor, list(range(1, 1 + rank - v.rank)))

    def step_of(self, source: gs.Tensor, axis: int, keep_axis: bool, offset: int = 0) -> Value:
        """Step i of `source` along `axis`, for every replayed i at once: the axis moved to the front. `offset`: the
        read's own distance from the steps' positions (SteppedUse.offset: `c[t + 1]`)."""
        rank = self.rank_of(source)
        shape = getattr(source, "shape", None)
        start = self.start + offset
        if self.stride != 1:
            end = start + self.stride * (self.length - 1) + 1
            source = self.b.node("Slice", [source, self.b.ints([start]), self.b.ints([end]),
                                           self.b.ints([axis]), self.b.ints([self.stride])])
        elif start or not (shape is not None and axis < len(shape) and shape[axis] == self.length):
            source = self.b.slice(source, start, start + self.length, axis)
        moved = move_axis(self.b, source, rank, axis, 0)
        if keep_axis:
            return Value(self.unsqueeze(moved, [axis + 1]), True, rank)
        return Value(moved, True, rank - 1)

    def logical(self, v: Value) -> Value:
        """`v` with its axes in their own order (a Transpose when it was laid out otherwise)."""
        if v.layout is None:
            return v
        return Value(self.b.transpose(v.tensor, [int(i) for i in np.argsort(v.layout)]), v.batched, v.rank)

    def keeps_layout(self, node: gs.Node, ins: list) -> bool:
        """`node` has a rule for its laid-out input (see Value.layout): no Transpose before it."""
        laid_out = [i for i, v in enumerate(ins) if v is not None and v.layout is not None]
        if node.op in ("Identity", "Cast") and (node.op == "Identity" or is_same_type_cast(node)):
            return True
        if node.op in ("Gather", "Squeeze") and laid_out == [0] and not self.t.stepped_inputs(self.t.nodes.index(node)):
            return node.op == "Squeeze" or (len(ins) == 2 and not ins[1].batched
                                            and constant_value(ins[1].tensor) is not None
                                            and np.asarray(constant_value(ins[1].tensor)).ndim == 0)
        if node.op == "MatMul" and len(laid_out) == 1 and all(v.rank >= 2 for v in ins):
            v = ins[laid_out[0]]
            if v.rank < max(w.rank for w in ins):
                return False
            swapped = list(range(v.rank + 1))
            swapped[-2:] = swapped[-1], swapped[-2]
            return tuple(v.layout) == tuple(swapped)   # (.., N, D) in memory for (.., D, N): x @ w = (wT @ xT)T
        return False

    def drop_axes(self, v: Value, axes: list[int]) -> tuple[list[int], Optional[tuple]]:
        """Where value axes `axes` (step axis excluded) lie in memory, and the layout without them."""
        full = {axis + 1 for axis in axes}
        physical = sorted(v.layout.index(axis) for axis in full)
        left = [axis for axis in v.layout if axis not in full]
        layout = tuple(sorted(left).index(axis) for axis in left)
        return physical, (None if layout == tuple(range(len(layout))) else layout)

    def rule_laid_out_Gather(self, node: gs.Node, ins: list) -> Value:
        data, indices = ins
        (physical,), layout = self.drop_axes(data, [normalize_axis(int(node.attrs.get("axis", 0)), data.rank)])
        out = self.b.node("Gather", [data.tensor, indices.tensor], {"axis": physical})
        return Value(out, True, data.rank - 1, layout)

    def rule_laid_out_Squeeze(self, node: gs.Node, ins: list) -> Value:
        data = ins[0]
        axes = node_axes(node)
        if axes is None:   # squeeze every size-1 axis: which ones is known only from the logical shape
            return self.rule_Squeeze(node, [self.logical(data)] + ins[1:])
        physical, layout = self.drop_axes(data, [normalize_axis(a, data.rank) for a in axes])
        return Value(self.b.squeeze(data.tensor, physical), True, data.rank - len(physical), layout)

    def rule_laid_out_MatMul(self, node: gs.Node, ins: list) -> Value:
        """x @ w with x laid out as its last two axes swapped: wT @ xT, the output laid out the same way."""
        rank = max(v.rank for v in ins)
        index = next(i for i, v in enumerate(ins) if v.layout is not None)
        other = ins[1 - index]
        if other.batched:
            other_tensor = self.lift(other, rank)
        else:
            other_tensor = self.unsqueeze(other.tensor, list(range(rank + 1 - other.rank)))
        swap = list(range(rank + 1))
        swap[-2:] = swap[-1], swap[-2]
        laid = ins[index].tensor
        product = (self.b.matmul(self.b.transpose(other_tensor, swap), laid) if index == 0
                   else self.b.matmul(laid, self.b.transpose(other_tensor, swap)))
        return Value(product, True, rank, tuple(swap))

    # -- the rules ------------------------------------------------------------------------
    def emit(self, index: int, node: gs.Node) -> None:
        ins = [self.value(t) if t is not None and t.name else None for t in node.inputs]
        if any(v is not None and v.layout is not None for v in ins) and not self.keeps_layout(node, ins):
            ins = [self.logical(v) if v is not None else None for v in ins]
        stepped = self.t.stepped_inputs(index)
        if stepped:
            result = self.stepped_slice(node, ins, stepped)
        elif not any(v is not None and v.batched for v in ins):
            # named by the builder, not after the model's node (names may repeat or be empty)
            outs = self.b.node_outputs(node.op, [v.tensor if v else gs.Variable.empty() for v in ins],
                                       dict(node.attrs), len(node.outputs), node.domain)
            for out, new in zip(node.outputs, outs):
                self.env[id(out)] = Value(new, False, self.rank_of(out))
            return
        elif node.op in ("Identity", "Cast") and (node.op == "Identity" or is_same_type_cast(node)):
            result = ins[0]   # a no-op per step is a no-op over all steps: no copy of the states
        elif any(v is not None and v.layout is not None for v in ins):
            result = getattr(self, f"rule_laid_out_{node.op}")(node, ins)
        else:
            rule = getattr(self, f"rule_{node.op}", None)
            if rule is None:
                rule = self.rule_elementwise if node.op in ELEMENTWISE else None
            if rule is None and node.op in REDUCTIONS:
                rule = self.rule_reduce
            if rule is None:
                raise ReplayError(f"{describe(node)} has no rule for replaying it over all steps")
            result = rule(node, ins)
        if len(node.outputs) != 1:
            raise ReplayError(f"{describe(node)}: multi-output ops are not replayed")
        self.env[id(node.outputs[0])] = result

    def stepped_slice(self, node: gs.Node, ins: list, stepped: dict) -> Value:
        data = ins[0]
        if data.batched:
            raise ReplayError(f"{describe(node)} takes step i of a tensor that depends on the state")
        offset = stepped[1].offset if 1 in stepped else 0
        if node.op == "Gather":
            axis = normalize_axis(int(node.attrs.get("axis", 0)), data.rank)
            keep = np.asarray(stepped[1].values[0]).ndim > 0
            return self.step_of(data.tensor, axis, keep, offset)
        axes = constant_ints(node.inputs[3]) if len(node.inputs) > 3 else [0]
        return self.step_of(data.tensor, normalize_axis(axes[0], data.rank), True, offset)

    def rule_elementwise(self, node: gs.Node, ins: list) -> Value:
        rank = max(v.rank for v in ins if v is not None)
        inputs = [self.lift(v, rank) if v is not None else gs.Variable.empty() for v in ins]
        out = self.b.node(node.op, inputs, dict(node.attrs))
        return Value(out, True, rank)

    def rule_Unsqueeze(self, node: gs.Node, ins: list) -> Value:
        data = ins[0]
        axes = node_axes(node)
        out_rank = data.rank + len(axes)
        shifted = sorted(normalize_axis(a, out_rank) + 1 for a in axes)
        return Value(self.unsqueeze(data.tensor, shifted), True, out_rank)

    def rule_Squeeze(self, node: gs.Node, ins: list) -> Value:
        data = ins[0]
        axes = node_axes(node)
        if axes is None:   # the matcher refuses it first today; a TypeError here escaped the dry run (mut34)
            raise ReplayError(f"{describe(node)}: a Squeeze of every size-1 axis is not replayed (its axes are not given)")
        shifted = sorted(normalize_axis(a, data.rank) + 1 for a in axes)
        return Value(self.squeeze(data.tensor, shifted), True, data.rank - len(axes))

    def rule_Reshape(self, node: gs.Node, ins: list) -> Value:
        data, target = ins[0], ins[1]
        if target.batched:
            raise ReplayError(f"{describe(node)}: its target shape depends on the state")
        values = constant_ints(target.tensor)
        # allowzero changes only what a 0 in the target means; the dynamo exporter sets it on every view().
        if int(node.attrs.get("allowzero", 0)) and (values is None or 0 in values):
            raise ReplayError(f"{describe(node)}: allowzero reshapes to a shape that may hold a 0 are not replayed")
        length = self.b.ints([self.length])
        if values is not None:
            shape = self.b.ints([self.length, *values])
            rank = len(values)
        else:
            shape = self.b.concat([length, target.tensor], 0)
            rank = self.rank_of(node.outputs[0])
        return Value(self.b.reshape(data.tensor, shape), True, rank)

    def rule_Expand(self, node: gs.Node, ins: list) -> Value:
        # Expand(x_i, shape) (the TorchScript exporter's `out[:, t] = x` shapes the update so): the step
        # axis in front of a constant target, which broadcasts from the right like the steps' own.
        data, target = ins
        values = constant_ints(target.tensor) if not target.batched else None
        if values is None:
            raise ReplayError(f"{describe(node)}: its target shape is not a constant")
        rank = max(data.rank, len(values))
        shape = self.b.ints([1, *[1] * (rank - len(values)), *values])
        return Value(self.b.node("Expand", [self.lift(data, rank), shape]), True, rank)

    def rule_Transpose(self, node: gs.Node, ins: list) -> Value:
        data = ins[0]
        perm = node.attrs.get("perm", list(reversed(range(data.rank))))
        return Value(self.b.transpose(data.tensor, [0, *[p + 1 for p in perm]]), True, data.rank)

    def rule_Gather(self, node: gs.Node, ins: list) -> Value:
        data, indices = ins
        if indices.batched:
            raise ReplayError(f"{describe(node)}: its indices depend on the state")
        axis = normalize_axis(int(node.attrs.get("axis", 0)), data.rank)
        out = self.b.node("Gather", [data.tensor, indices.tensor], {"axis": axis + 1})
        return Value(out, True, data.rank - 1 + indices.rank)

    def rule_Slice(self, node: gs.Node, ins: list) -> Value:
        data = ins[0]
        if any(v is not None and v.batched for v in ins[1:]):
            raise ReplayError(f"{describe(node)}: its bounds depend on the state")
        starts = constant_ints(node.inputs[1])
        axes = constant_ints(node.inputs[3]) if len(node.inputs) > 3 else list(range(len(starts or [])))
        if axes is None:
            raise ReplayError(f"{describe(node)} needs constant axes")
        shifted = self.b.ints([normalize_axis(a, data.rank) + 1 for a in axes])
        inputs = [data.tensor, ins[1].tensor, ins[2].tensor, shifted] + [v.tensor for v in ins[4:] if v is not None]
        return Value(self.b.node("Slice", inputs), True, data.rank)

    def rule_reduce(self, node: gs.Node, ins: list) -> Value:
        data = ins[0]
        axes = node_axes(node)
        keepdims = int(node.attrs.get("keepdims", 1))
        if axes is None or not axes:
            if int(node.attrs.get("noop_with_empty_axes", 0)):
                raise ReplayError(f"{describe(node)}: empty axes with noop_with_empty_axes")
            axes = list(range(data.rank))
        shifted = sorted(normalize_axis(a, data.rank) + 1 for a in axes)
        rank = data.rank if keepdims else data.rank - len(shifted)
        attrs = {k: v for k, v in node.attrs.items() if k != "axes"}
        if (node.op == "ReduceSum" and self.b.opset >= 13) or self.b.opset >= 18:
            return Value(self.b.node(node.op, [data.tensor, self.b.ints(shifted)], attrs), True, rank)
        attrs["axes"] = shifted
        return Value(self.b.node(node.op, [data.tensor], attrs), True, rank)

    def rule_Concat(self, node: gs.Node, ins: list) -> Value:
        if not all(v.batched for v in ins):
            raise ReplayError(f"{describe(node)} joins step-dependent and shared tensors")
        rank = ins[0].rank
        axis = normalize_axis(int(node.attrs["axis"]), rank) + 1
        return Value(self.b.concat([v.tensor for v in ins], axis), True, rank)

    def rule_MatMul(self, node: gs.Node, ins: list) -> Value:
        if any(v.rank < 2 for v in ins):
            raise ReplayError(f"{describe(node)}: a MatMul with a vector operand is not replayed")
        rank = max(v.rank for v in ins)
        # Both operands get every axis (a shared one leading unit axes): tpu-mlir asserts on a
        # lower-rank left operand, and ONNX broadcasting makes it free.
        left, right = (self.lift(v, rank) if v.batched else self.unsqueeze(v.tensor, list(range(rank + 1 - v.rank)))
                       for v in ins)
        return Value(self.b.matmul(left, right), True, rank)

    def rule_Einsum(self, node: gs.Node, ins: list) -> Value:
        equation = node.attrs["equation"].replace(" ", "")
        if "..." in equation or "->" not in equation:
            raise ReplayError(f"{describe(node)}: einsum with '...' or an implicit output is not replayed")
        terms, output = equation.split("->")
        step = next(c for c in string.ascii_letters if c not in equation)
        terms = [step + term if v.batched else term for term, v in zip(terms.split(","), ins)]
        out = self.b.einsum([v.tensor for v in ins], ",".join(terms) + "->" + step + output)
        return Value(out, True, len(output))

    def rule_Conv(self, node: gs.Node, ins: list) -> Value:
        """A grouped 1-D Conv that is one dot product per group: y[g] = sum(x[g] * w[g])."""
        x, w = ins[0], ins[1]
        groups = int(node.attrs.get("group", 1))
        x_shape, w_shape = _static_shape(node.inputs[0]), _static_shape(node.inputs[1])
        plain = all(all(v == 1 for v in node.attrs.get(k, [1])) for k in ("strides", "dilations"))
        if (x_shape is None or w_shape is None or len(x_shape) != 3 or len(w_shape) != 3 or x_shape[0] != 1
                or len(ins) > 2 or not plain or any(node.attrs.get("pads", [0])) or node.attrs.get("auto_pad", "NOTSET") != "NOTSET"):
            raise ReplayError(f"{describe(node)}: only a plain 1-D Conv of batch 1 with static shapes is replayed")
        _, channels, width = x_shape
        outputs, per_group, kernel = w_shape
        if outputs != groups or kernel != width or channels != groups * per_group:
            raise ReplayError(f"{describe(node)}: not one dot product per group ({groups} groups, "
                              f"input {x_shape}, weight {w_shape})")
        dims = [groups, per_group, width]
        xs = self.b.reshape(x.tensor, [self.length, *dims] if x.batched else dims)
        ws = self.b.reshape(w.tensor, [self.length, *dims] if w.batched else dims)
        dot = self.b.reduce_sum(self.b.mul(xs, ws), [2, 3], keepdims=0)      # (L, groups)
        return Value(self.b.reshape(dot, [self.length, 1, groups, 1]), True, 3)


def _static_shape(tensor: gs.Tensor) -> Optional[list[int]]:
    shape = getattr(tensor, "shape", None)
    if shape is not None and all(isinstance(d, int) and d >= 0 for d in shape):
        return list(shape)
    node = producer(tensor)
    if node is not None and node.op == "Reshape":
        target = constant_ints(node.inputs[1])
        if target is not None and all(d > 0 for d in target):
            return target
    return None


def replay_over_steps(b: GraphBuilder, template: StepTemplate, states: gs.Tensor, length: int,
                      start: int = 0, stride: int = 1, layout: Optional[Sequence[int]] = None) -> gs.Tensor:
    """template's output for every step, stacked on a new leading axis; `states` has the step axis first.
    With `start` and `stride`, only steps start, start + stride, ... (`length` of them), which `states` holds.
    `layout`: the order of `states`' axes in memory (Value.layout), step axis first; the output comes
    in its own order."""
    replay = _Replay(b, template, length, start, stride)
    rank = template.ranks[id(template.state)]
    if layout is not None and tuple(layout) == tuple(range(rank + 1)):
        layout = None
    replay.env[id(template.state)] = Value(states, True, rank, None if layout is None else tuple(layout))
    for index, node in enumerate(template.nodes):
        replay.emit(index, node)
    result = replay.env.get(id(template.output))
    if result is None or not result.batched:
        raise ReplayError("the per-step output does not depend on the step")
    return replay.logical(result).tensor


def template_output_rank(template: StepTemplate) -> int:
    return template.ranks[id(template.output)]


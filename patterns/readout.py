"""Recognise the per-step readout `y_i = f(x_i, c_i)` and the stacking of the y_i.

Readouts exporters produce:
  einsum   Einsum('bdn,bdn->bd', x_i, c_i)            (upstream selective_scan_torch)
  mulsum   ReduceSum(Mul(x_i, c_i), axes=[n])          ((x * C[..., i]).sum(-1))
  conv     Reshape(Conv(Reshape(x_i, [1, G, n]), Reshape(c_i, [G, 1, n]), group=G))
           a grouped conv1d whose G groups are length-n dot products (the public ONNX fork's
           "no_einsum" code); re-rolled like mulsum over the last axis
  states   no readout: the states themselves are stacked
Stacking: Unsqueeze(y_i, axes=[s]) for every i, all into one Concat(axis=s) in step order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import onnx_graphsurgeon as gs

from patterns.graph_query import constant_ints, describe, node_axes, normalize_axis, producer
from patterns.indexing import StepSlice, match_step_slice
from patterns.ranks import RankMap


@dataclass(frozen=True)
class ReadoutForm:
    """What is identical in every step's readout; the re-roller computes it once over all steps."""

    kind: str                      # "einsum" | "mulsum" | "states" | "template" (patterns/step_template.py)
    equation: str = ""             # einsum: the per-step equation
    state_operand: int = 0         # einsum/mulsum: which input is the state
    reduce_axes: tuple = ()        # mulsum: axes of the per-step product that are summed
    keepdims: int = 1              # mulsum
    stack_axis: int = 0            # axis of the stacked output that runs over steps
    written_as: str = ""           # how the export spelled it, when that differs from `kind`


@dataclass
class ReadoutStep:
    form: ReadoutForm
    coeff: Optional[StepSlice]     # c_i (None for "states")
    stacked_piece: gs.Tensor       # the Unsqueeze output that goes into the Concat
    concat: gs.Node
    nodes: list = field(default_factory=list)


class ReadoutMismatch(Exception):
    pass


def _stacking(y: gs.Tensor, ranks: RankMap, unsqueeze: Optional[gs.Node] = None) -> tuple[gs.Node, gs.Node, int]:
    """The Unsqueeze -> Concat that stacks y over steps: (unsqueeze, concat, axis)."""
    if unsqueeze is None:
        if len(y.outputs) != 1:
            raise ReadoutMismatch(f"per-step output '{y.name}' has {len(y.outputs)} consumers, expected one Unsqueeze")
        unsqueeze = y.outputs[0]
    if unsqueeze.op != "Unsqueeze":
        raise ReadoutMismatch(f"per-step output '{y.name}' goes to {describe(unsqueeze)}, expected Unsqueeze")
    axes = node_axes(unsqueeze)
    out_rank = ranks.rank(y) + 1 if ranks.rank(y) is not None else None
    if axes is None or len(axes) != 1:
        raise ReadoutMismatch(f"{describe(unsqueeze)} must insert exactly one constant axis")
    axis = normalize_axis(axes[0], out_rank)
    piece = unsqueeze.outputs[0]
    if len(piece.outputs) != 1 or piece.outputs[0].op != "Concat":
        raise ReadoutMismatch(f"{describe(unsqueeze)} output is not consumed by a single Concat")
    concat = piece.outputs[0]
    concat_axis = normalize_axis(int(concat.attrs.get("axis", 0)), out_rank)
    if axis is None or concat_axis != axis:
        raise ReadoutMismatch(f"{describe(concat)} joins along axis {concat.attrs.get('axis')} but steps were stacked on axis {axes[0]}")
    return unsqueeze, concat, axis


def match_readout(state: gs.Tensor, reader: gs.Node, ranks: RankMap) -> ReadoutStep:
    """The readout of one state x_i through its consumer `reader`."""
    if reader.op == "Unsqueeze":
        unsqueeze, concat, axis = _stacking(state, ranks, reader)
        return ReadoutStep(ReadoutForm("states", stack_axis=axis), None, unsqueeze.outputs[0], concat, [unsqueeze])
    if reader.op == "Einsum" and len(reader.inputs) == 2:
        state_operand = reader.inputs.index(state)
        coeff = match_step_slice(reader.inputs[1 - state_operand], ranks)
        if coeff is None:
            raise ReadoutMismatch(f"{describe(reader)}: the other operand is not one step of a tensor")
        equation = reader.attrs["equation"].replace(" ", "")
        if "..." in equation:
            raise ReadoutMismatch(f"{describe(reader)}: einsum with '...' is not supported")
        unsqueeze, concat, axis = _stacking(reader.outputs[0], ranks)
        form = ReadoutForm("einsum", equation=equation, state_operand=state_operand, stack_axis=axis)
        return ReadoutStep(form, coeff, unsqueeze.outputs[0], concat, [reader, unsqueeze, *coeff.nodes])
    if reader.op == "Mul":
        state_operand = reader.inputs.index(state)
        coeff = match_step_slice(reader.inputs[1 - state_operand], ranks)
        product = reader.outputs[0]
        if coeff is None:
            raise ReadoutMismatch(f"{describe(reader)}: the other factor is not one step of a tensor")
        if len(product.outputs) != 1 or product.outputs[0].op != "ReduceSum":
            raise ReadoutMismatch(f"{describe(reader)}: product is not summed by a single ReduceSum")
        reduce = product.outputs[0]
        axes = node_axes(reduce)
        product_rank = ranks.rank(product)
        if not axes or product_rank is None:
            raise ReadoutMismatch(f"{describe(reduce)}: axes must be constant and the rank known")
        if ranks.rank(coeff.source) is None or ranks.rank(state) != ranks.rank(coeff.source) - 1:
            raise ReadoutMismatch(f"{describe(reader)}: state and coefficient ranks differ (broadcast readout)")
        axes = tuple(sorted(normalize_axis(a, product_rank) for a in axes))
        unsqueeze, concat, axis = _stacking(reduce.outputs[0], ranks)
        form = ReadoutForm("mulsum", state_operand=state_operand, reduce_axes=axes,
                           keepdims=int(reduce.attrs.get("keepdims", 1)), stack_axis=axis)
        return ReadoutStep(form, coeff, unsqueeze.outputs[0], concat, [reader, reduce, unsqueeze, *coeff.nodes])
    if reader.op == "Reshape":
        return _grouped_conv_readout(state, reader, ranks)
    raise ReadoutMismatch(
        f"state '{state.name}' is read by {describe(reader)}, not an Einsum, Mul+ReduceSum, grouped Conv or Unsqueeze")


def _single_consumer(tensor: gs.Tensor, op: str, what: str) -> gs.Node:
    if len(tensor.outputs) != 1 or tensor.outputs[0].op != op:
        raise ReadoutMismatch(f"{what} '{tensor.name}' is not read by exactly one {op}")
    return tensor.outputs[0]


def _grouped_conv_readout(state: gs.Tensor, flatten: gs.Node, ranks: RankMap) -> ReadoutStep:
    conv = _single_consumer(flatten.outputs[0], "Conv", "flattened state")
    state_rank = ranks.rank(state)
    flat_shape = constant_ints(flatten.inputs[1])
    if state_rank is None or flat_shape is None or len(flat_shape) != 3 or flat_shape[0] != 1:
        raise ReadoutMismatch(f"{describe(flatten)}: state must be flattened to a constant [1, groups, n]")
    _, groups, n = flat_shape
    if conv.inputs[0] is not flatten.outputs[0] or len(conv.inputs) != 2:
        raise ReadoutMismatch(f"{describe(conv)}: expected the flattened state as input and no bias")
    plain = all(all(v == 1 for v in conv.attrs.get(k, [1])) for k in ("strides", "dilations"))
    if (conv.attrs.get("group", 1) != groups or list(conv.attrs.get("kernel_shape", [n])) != [n]
            or any(conv.attrs.get("pads", [0])) or not plain):
        raise ReadoutMismatch(f"{describe(conv)}: not a grouped length-{n} dot product over {groups} groups")
    weight = producer(conv.inputs[1])
    if weight is None or weight.op != "Reshape" or constant_ints(weight.inputs[1]) != [groups, 1, n]:
        raise ReadoutMismatch(f"{describe(conv)}: weight is not a step of a tensor reshaped to [{groups}, 1, {n}]")
    coeff = match_step_slice(weight.inputs[0], ranks)
    if coeff is None or ranks.rank(coeff.source) != state_rank + 1:
        raise ReadoutMismatch(f"{describe(conv)}: weight is not one step of a tensor shaped like the state")
    known = [getattr(t, "shape", None) for t in (state, weight.inputs[0])]
    if None not in known and list(known[0]) != list(known[1]):
        raise ReadoutMismatch(f"{describe(conv)}: state {known[0]} and coefficient {known[1]} shapes differ")
    unflatten = _single_consumer(conv.outputs[0], "Reshape", "conv output")
    unsqueeze, concat, axis = _stacking(unflatten.outputs[0], ranks)
    form = ReadoutForm("mulsum", state_operand=0, reduce_axes=(state_rank - 1,), keepdims=0,
                       stack_axis=axis, written_as="conv")
    nodes = [flatten, weight, conv, unflatten, unsqueeze, *coeff.nodes]
    return ReadoutStep(form, coeff, unsqueeze.outputs[0], concat, nodes)


MAX_READOUT_NODES = 64


@dataclass
class StackedOutput:
    """Where one step's readout ends: y_i, unsqueezed and joined into the stacking Concat."""
    output: gs.Tensor        # y_i
    unsqueeze: gs.Node
    concat: gs.Node
    stack_axis: int
    forward_nodes: list


def _reach(readers: list[gs.Node], min_inputs: int, graph_outputs: set[int]) -> tuple[list, list, list]:
    """Nodes reachable from `readers` (not past a Concat of >= min_inputs tensors), the (Concat, tensor)
    pairs where they end, and the tensors that leave the readout (graph outputs, or too far)."""
    seen: dict[int, gs.Node] = {}
    stack, ends, escapes = list(readers), [], []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        if len(seen) > MAX_READOUT_NODES:
            escapes.append(node.outputs[0] if node.outputs else None)
            break
        for out in node.outputs:
            if id(out) in graph_outputs:
                escapes.append(out)
            for consumer in out.outputs:
                if consumer.op == "Concat" and len(consumer.inputs) >= min_inputs:
                    ends.append((consumer, out))
                else:
                    stack.append(consumer)
    return list(seen.values()), ends, escapes


def stacked_step_outputs(readers: list[gs.Node], steps: int, graph_outputs: set[int],
                         ranks: RankMap) -> Optional[StackedOutput]:
    """Follow one state's readers forward to the Concat that stacks all steps; None if they leave it."""
    nodes, ends, escapes = _reach(readers, steps, graph_outputs)
    if escapes or len({id(concat) for concat, _ in ends}) != 1 or len({id(t) for _, t in ends}) != 1:
        return None
    concat, piece = ends[0]
    unsqueeze = producer(piece)
    if unsqueeze is None or unsqueeze.op != "Unsqueeze" or id(unsqueeze) not in {id(n) for n in nodes}:
        raise ReadoutMismatch(f"per-step output '{piece.name}' enters {describe(concat)} without an Unsqueeze")
    _, concat, axis = _stacking(unsqueeze.inputs[0], ranks, unsqueeze)
    return StackedOutput(unsqueeze.inputs[0], unsqueeze, concat, axis, nodes)

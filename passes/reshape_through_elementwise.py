"""Move Reshapes of the spatial axes through the elementwise ops next to them.

A Reshape that splits spatial axes (batch and channel axes untouched), like the chunked scan's
(1, K*D, L, 1) -> (1, K*D, L / Q, Q), moves up through the elementwise ops, shape ops and pointwise
Convs that make its input; one that merges them moves down through the elementwise ops that use
its output. The ops passed over then run in the split layout, the Reshapes end up at the borders
of the chain, and two that meet fold into one (or none). Nothing changes numerically: an
elementwise op commutes with any Reshape of all its full-size operands (an operand broadcast over
a whole group of axes stays broadcast), and a 1x1 Conv with any Reshape of its spatial axes.

Why: tpu-mlir (BM1684X) cuts its layer groups at such a Reshape when the ops on its two sides
want different slicings. VMamba-T's scan at stages 0-1 computed its log-decays and drive in
(1, 768, 3136, 1), reshaped them to chunks, and read the states out after reshaping back: the
softplus, the drive's products and the readout each ran in a group of their own, every (1, 768,
3136) tensor between them stored to DDR and loaded again (docs/TPU.md, "A faster VMamba-T graph").

Static shapes are needed; a Reshape whose shapes are not fully known is left alone.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, PassResult
from passes.registry import register_pass
from passes.static_shapes import static_shapes
from patterns.graph_query import toposort

Shape = tuple[int, ...]

UNARY = {"Abs", "Ceil", "Cos", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "LeakyRelu",
         "Log", "Mish", "Neg", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Softplus",
         "Softsign", "Sqrt", "Tanh", "Cast"}
BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"}
SHAPE_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}


def axis_groups(source: Shape, target: Shape) -> Optional[list[tuple[list[int], list[int]]]]:
    """Pair up the axes of two shapes of the same size: groups of consecutive axes with equal
    products, each as small as possible (a trailing size-1 axis joins the group before it)."""
    if math.prod(source) != math.prod(target) or 0 in source:
        return None
    groups, i, j = [], 0, 0
    while i < len(source) or j < len(target):
        s_axes, t_axes = [], []
        s_size = t_size = 1
        while True:
            if i < len(source) and (not s_axes or s_size < t_size):
                s_size *= source[i]; s_axes.append(i); i += 1
            elif j < len(target) and (not t_axes or t_size < s_size):
                t_size *= target[j]; t_axes.append(j); j += 1
            else:
                break
        while i < len(source) and source[i] == 1 and (j >= len(target) or target[j] != 1):
            s_axes.append(i); i += 1   # a trailing unit axis with nothing to pair with
        while j < len(target) and target[j] == 1 and (i >= len(source) or source[i] != 1):
            t_axes.append(j); j += 1
        if s_size != t_size:
            return None
        groups.append((s_axes, t_axes))
    return groups


def spatial_only(source: Shape, target: Shape) -> Optional[list[tuple[list[int], list[int]]]]:
    """The groups when a Reshape keeps axes 0 (batch) and 1 (channels) and reshapes only the rest."""
    groups = axis_groups(source, target)
    if (groups is None or len(source) < 3 or len(target) < 3 or groups[0] != ([0], [0])
            or groups[1] != ([1], [1])):
        return None
    return groups


def non_unit(shape: Shape) -> int:
    return sum(1 for d in shape[2:] if d != 1)


def mapped_operand(shape: Shape, source: Shape, target: Shape, groups) -> Optional[Shape]:
    """The shape an operand broadcast against `source` takes in `target`'s layout: each group of
    axes either full (the target's sizes) or broadcast (ones); None if an operand is neither."""
    if len(shape) > len(source):
        return None
    shape = (1,) * (len(source) - len(shape)) + tuple(shape)
    mapped: list[int] = []
    for s_axes, t_axes in groups:
        sizes = [shape[a] for a in s_axes]
        if sizes == [source[a] for a in s_axes]:
            mapped += [target[a] for a in t_axes]
        elif all(size == 1 for size in sizes):
            mapped += [1] * len(t_axes)
        else:
            return None
    return tuple(mapped)


def _pointwise_conv(node: gs.Node) -> bool:
    if node.op != "Conv" or not isinstance(node.inputs[1], gs.Constant):
        return False
    kernel = node.inputs[1].shape[2:]
    return (all(k == 1 for k in kernel) and all(s == 1 for s in node.attrs.get("strides", [1]))
            and not any(node.attrs.get("pads", [0])) and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"))


class _Mover:
    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.shapes = static_shapes(graph)
        self.count = 0
        self.moved = 0
        # A model's names are hostile text: one may already be called like a name made here.
        self.taken = {node.name for node in graph.nodes} | set(graph.tensors())

    def unique(self, name: str) -> str:
        candidate, copy = name, 1
        while candidate in self.taken:
            copy += 1
            candidate = f"{name}#{copy}"
        self.taken.add(candidate)
        return candidate

    def shape(self, tensor: gs.Tensor) -> Optional[Shape]:
        if isinstance(tensor, gs.Constant):
            return tuple(int(d) for d in tensor.values.shape)
        return self.shapes.get(tensor.name)

    def fresh(self, base: str, shape: Shape, dtype) -> gs.Variable:
        self.count += 1
        name = self.unique(f"reshape_through_elementwise/{base.rsplit('/', 1)[-1]}_{self.count}")
        self.shapes[name] = tuple(shape)
        return gs.Variable(name, dtype=dtype, shape=list(shape))

    def target_constant(self, name: str, shape: Shape) -> gs.Constant:
        self.count += 1
        return gs.Constant(self.unique(f"{name}/shape_{self.count}"), np.asarray(shape, dtype=np.int64))

    def reshaped(self, tensor: gs.Tensor, shape: Shape) -> gs.Tensor:
        """tensor in `shape`: a new Constant for a constant, else a Reshape node."""
        if self.shape(tensor) == tuple(shape):
            return tensor
        if isinstance(tensor, gs.Constant):
            self.count += 1
            return gs.Constant(self.unique(f"reshape_through_elementwise/{tensor.name.rsplit('/', 1)[-1]}_{self.count}"),
                               np.ascontiguousarray(tensor.values.reshape(shape)))
        out = self.fresh(tensor.name, shape, tensor.dtype)
        target = gs.Constant(self.unique(f"{out.name}/shape"), np.asarray(shape, dtype=np.int64))
        self.graph.nodes.append(gs.Node("Reshape", name=self.unique(f"{out.name}/Reshape"), inputs=[tensor, target],
                                        outputs=[out]))
        return out

    # -- one step -----------------------------------------------------------------------
    def step(self, node: gs.Node) -> bool:
        source, target = self.shape(node.inputs[0]), self.shape(node.outputs[0])
        if source is None or target is None or None in source or None in target:
            return False
        if source == target and not self._is_graph_output(node.outputs[0]):
            self._bypass(node)
            return True
        for sibling in list(node.inputs[0].outputs):   # the same Reshape twice: one
            if sibling is not node and sibling.op == "Reshape" and self.shape(sibling.outputs[0]) == target \
                    and not self._is_graph_output(sibling.outputs[0]):
                self._replace_uses(sibling.outputs[0], node.outputs[0])
                sibling.outputs.clear()
                sibling.inputs.clear()
        groups = spatial_only(source, target)
        producer = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
        if producer is not None and producer.op in SHAPE_OPS and len(node.inputs[0].outputs) == 1 \
                and not self._is_graph_output(node.inputs[0]):
            node.inputs[0] = producer.inputs[0]             # Reshape of a shape op: one Reshape
            node.inputs[1] = self.target_constant(node.outputs[0].name, target)   # a 0 in the old target
            producer.outputs.clear()                                               # copied the old input's dim
            producer.inputs.clear()
            return True
        if groups is None:
            return False
        if non_unit(target) > non_unit(source):
            return self.hoist(node, source, target, groups)
        if non_unit(target) < non_unit(source):
            return self.sink(node, source, target, groups)
        return False

    def _is_graph_output(self, tensor: gs.Tensor) -> bool:
        return any(tensor is out for out in self.graph.outputs)

    @staticmethod
    def _replace_uses(old: gs.Tensor, new: gs.Tensor) -> None:
        for consumer in list(old.outputs):
            for index, tensor in enumerate(consumer.inputs):
                if tensor is old:
                    consumer.inputs[index] = new

    def _bypass(self, node: gs.Node) -> None:
        self._replace_uses(node.outputs[0], node.inputs[0])
        node.outputs.clear()
        node.inputs.clear()

    def hoist(self, node: gs.Node, source: Shape, target: Shape, groups) -> bool:
        """Reshape(op(a, b)) -> op(Reshape(a), Reshape(b)) for the op that makes the input."""
        value = node.inputs[0]
        producer = value.inputs[0] if value.inputs else None
        if producer is None or len(value.outputs) != 1 or self._is_graph_output(value) or len(producer.outputs) != 1:
            return False
        if producer.op in UNARY or producer.op in BINARY:
            operands = []
            for tensor in producer.inputs:
                shape = self.shape(tensor)
                mapped = None if shape is None else mapped_operand(shape, source, target, groups)
                if mapped is None:
                    return False
                operands.append((tensor, mapped))
            if producer.op in UNARY and len(operands) != 1:
                return False
            for index, (tensor, mapped) in enumerate(operands):
                producer.inputs[index] = self.reshaped(tensor, mapped)
        elif _pointwise_conv(producer):
            data, weight = producer.inputs[0], producer.inputs[1]
            data_shape = self.shape(data)
            if data_shape is None:
                return False
            spatial = target[2:]
            producer.inputs[0] = self.reshaped(data, tuple(data_shape[:2]) + tuple(spatial))
            self.count += 1
            producer.inputs[1] = gs.Constant(self.unique(f"reshape_through_elementwise/{weight.name.rsplit('/', 1)[-1]}_{self.count}"),
                                             np.ascontiguousarray(weight.values.reshape(
                                                 tuple(weight.values.shape[:2]) + (1,) * len(spatial))))
            producer.attrs.update(kernel_shape=[1] * len(spatial), strides=[1] * len(spatial),
                                  dilations=[1] * len(spatial), pads=[0] * (2 * len(spatial)))
        else:
            return False
        producer.outputs[0] = node.outputs[0]
        node.outputs.clear()
        node.inputs.clear()
        self.moved += 1
        return True

    def sink(self, node: gs.Node, source: Shape, target: Shape, groups) -> bool:
        """op(Reshape(x), b) -> Reshape(op(x, Reshape(b))) for every op that uses the output."""
        result = node.outputs[0]
        consumers = list(result.outputs)
        if not consumers or self._is_graph_output(result):
            return False
        back = [(t_axes, s_axes) for s_axes, t_axes in groups]
        plans = []
        for consumer in consumers:
            if consumer.op in SHAPE_OPS:
                if self.shape(consumer.outputs[0]) is None or len(consumer.outputs) != 1:
                    return False
                plans.append((consumer, None))
                continue
            if consumer.op not in UNARY and consumer.op not in BINARY or len(consumer.outputs) != 1:
                return False
            operands = []
            for tensor in consumer.inputs:
                if tensor is result:
                    operands.append((tensor, None))
                    continue
                shape = self.shape(tensor)
                mapped = None if shape is None else mapped_operand(shape, target, source, back)
                if mapped is None:
                    return False
                operands.append((tensor, mapped))
            out_shape = self.shape(consumer.outputs[0])
            if out_shape != target:   # the op broadcast the Reshape's output itself
                return False
            plans.append((consumer, operands))
        for consumer, operands in plans:
            if operands is None:   # a shape op after the Reshape: one Reshape of the Reshape's input, to
                consumer.op = "Reshape"   # the static shape (a 0 in a Reshape's target would copy a dim)
                consumer.attrs = {}
                while consumer.inputs:
                    consumer.inputs.pop()
                consumer.inputs.append(node.inputs[0])
                consumer.inputs.append(self.target_constant(consumer.outputs[0].name, self.shape(consumer.outputs[0])))
                continue
            for index, (tensor, mapped) in enumerate(operands):
                consumer.inputs[index] = node.inputs[0] if mapped is None else self.reshaped(tensor, mapped)
            output = consumer.outputs[0]
            inner = self.fresh(output.name, source, output.dtype)
            consumer.outputs[0] = inner
            shape_const = gs.Constant(self.unique(f"{inner.name}/shape"), np.asarray(target, dtype=np.int64))
            self.graph.nodes.append(gs.Node("Reshape", name=self.unique(f"{inner.name}/Reshape"), inputs=[inner, shape_const],
                                            outputs=[output]))
        node.outputs.clear()
        node.inputs.clear()
        self.moved += 1
        return True


@register_pass
class ReshapeThroughElementwise(Pass):
    name = "reshape-through-elementwise"
    description = ("move Reshapes of spatial axes through adjacent elementwise ops and 1x1 Convs: splits up, "
                   "merges down, so the ops between run in the split layout")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        if not any(node.op == "Reshape" for node in graph.nodes):
            return PassResult(False, {"moved": 0})
        mover = _Mover(graph)
        changed = True
        steps = 0
        while changed:
            changed = False
            for node in list(graph.nodes):
                if node.op == "Reshape" and node.outputs and node.inputs and mover.step(node):
                    changed = True
                    steps += 1
            toposort(graph.cleanup(remove_unused_graph_inputs=False))
        reshapes_after = sum(node.op == "Reshape" for node in graph.nodes)
        return PassResult(steps > 0, {"moved": mover.moved, "steps": steps, "reshapes": reshapes_after})

"""An opset-18 graph written as opset 17, where every node has an opset-17 spelling: tpu-mlir 1.30.2 refuses opset
18's ReduceMean (its axes an input, as in every dynamo export's RMS norm: "RuntimeError: Unsupport opset for
ReduceMean" in model_transform, whose fusion patterns are written with opset 17's one-input ReduceMean), and its ONNX
frontend reads ReduceLogSumExp's axes and Pad's axes from opset 17's places only (an axes input is ignored).

Lowering the opset is exact: each rewrite below states the same operation in the older spelling, so every value is
bit for bit what it was (ReduceMean as ReduceSum * (1/n) would round differently, and would leave the other
opset-18 spellings as they are). The ops whose opset-18 version differs from 17's:

  ReduceMean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare  a constant axes input -> the `axes` attribute; no axes
                       input reduces every axis in both (noop_with_empty_axes=1 with no axes has no opset-17 spelling)
  Split                `num_outputs` -> dropped where the axis divides evenly (17 splits equally into the outputs),
                       else the sizes as a `split` input (the last piece smaller, as 18 cuts it; the size must be static)
  Pad                  a constant axes input -> pads over every axis (zeros elsewhere; the rank must be known)
  Resize               antialias=0, keep_aspect_ratio_policy=stretch and no `axes`: the new attributes dropped
  ScatterElements/ND   reduction none/add/mul: unchanged (max/min are new in 18)
  LpPool               ceil_mode=0: dropped
ReduceSum took its axes as an input already in 13: unchanged. Any other op new or changed in 18 (Bitwise*,
CenterCropPad, Col2Im, GroupNormalization, Mish, Optional*), an axes input that is not a constant, a subgraph or a
local function: the graph is left at 18, every such node named in the notes (and tpu-legality names the spellings
tpu-mlir refuses). Opsets other than 18 are left as they are.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, PassResult
from passes.graph_builder import unique_name
from passes.registry import register_pass
from passes.static_shapes import static_shapes
from patterns.graph_query import constant_ints, describe, optional_input

FROM_OPSET, TO_OPSET = 18, 17

# Reductions whose axes moved from an attribute to an input in opset 18 (ReduceSum's moved in 13).
REDUCTIONS = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                        "ReduceLogSumExp", "ReduceSumSquare"})


def changed_in_opset_18(op: str) -> bool:
    """True for an ONNX op whose opset-18 version is not its opset-17 one (new in 18, or updated in 18)."""
    try:
        return onnx.defs.get_schema(op, FROM_OPSET, "").since_version == FROM_OPSET
    except onnx.defs.SchemaError:
        return False   # not an ONNX op at all: nothing of opset 18's to undo


def _keep_inputs(node: gs.Node, count: int) -> None:
    """Drop the node's inputs after the first `count` (one at a time: onnx-graphsurgeon's lists take no slices)."""
    while len(node.inputs) > count:
        node.inputs.pop()


def _not_int64(tensor: Optional[gs.Tensor]) -> bool:
    """A constant axes or pads input stored as another integer type than int64, which opset 18's schema (and ONNX
    Runtime) refuses: as an attribute it would be valid, the model made to run (adv12: int32 ReduceMean axes)."""
    if tensor is not None and not isinstance(tensor, gs.Constant) and len(tensor.inputs) == 1 \
            and tensor.inputs[0].op == "Constant":
        tensor = tensor.inputs[0].attrs.get("value")
    return isinstance(tensor, gs.Constant) and tensor.values.dtype != np.int64


def _plan(node: gs.Node, shapes: Callable[[], dict],
          fresh: Callable[[str], str]) -> tuple[Optional[Callable[[], object]], Optional[str]]:
    """(rewrite, None) for a node with an opset-17 spelling (rewrite None: already spelled so), or (None, reason).
    `fresh(base)`: a tensor name no other tensor has (a Pad named 'pd' beside an input named 'pd_pads': adv12)."""
    op, attrs = node.op, node.attrs
    if op in REDUCTIONS:
        axes_input = optional_input(node, 1)
        axes = constant_ints(axes_input) if axes_input is not None else []
        if axes is None:
            return None, "its axes input is not a constant"
        if _not_int64(axes_input):
            return None, "its axes input is not int64"
        if not axes and attrs.get("noop_with_empty_axes", 0):
            return None, "noop_with_empty_axes=1 with no axes (no opset-17 spelling)"

        def reduction(node=node, axes=axes):
            _keep_inputs(node, 1)
            node.attrs.pop("noop_with_empty_axes", None)
            if axes:
                node.attrs["axes"] = axes
        return reduction, None
    if op == "Split":
        if "num_outputs" not in attrs:
            return None, None
        if optional_input(node, 1) is not None:
            return None, "both a split input and num_outputs"
        pieces = int(attrs["num_outputs"])
        shape = shapes().get(node.inputs[0].name)
        if shape is None:
            return None, "num_outputs on an input of unknown shape"
        length = shape[int(attrs.get("axis", 0)) % len(shape)]
        step = -(-length // pieces)
        sizes = [min(step, length - start) for start in range(0, length, step)] if length else [0] * pieces
        if len(sizes) != len(node.outputs):
            return None, f"num_outputs={pieces} cuts an axis of {length} into {len(sizes)}, not its {len(node.outputs)} outputs"

        def split(node=node, sizes=sizes, even=length % pieces == 0):
            node.attrs.pop("num_outputs")
            if not even:
                _keep_inputs(node, 1)
                node.inputs.append(gs.Constant(fresh(f"{node.name or node.outputs[0].name}_split_sizes"),
                                               np.array(sizes, dtype=np.int64)))
        return split, None
    if op == "Pad":
        axes_input = optional_input(node, 3)
        if axes_input is None:   # already opset 17's Pad (an empty axes name trimmed)
            return ((lambda node=node: _keep_inputs(node, 3)) if len(node.inputs) > 3 else None), None
        pads_input = optional_input(node, 1)
        axes, pads = constant_ints(axes_input), constant_ints(pads_input)
        shape = shapes().get(node.inputs[0].name)
        if axes is None or pads is None:
            return None, "its axes or pads input is not a constant"
        if _not_int64(axes_input) or _not_int64(pads_input):
            return None, "its axes or pads input is not int64"
        if shape is None:
            return None, "axes on an input of unknown rank"
        rank = len(shape)
        if len(pads) != 2 * len(axes) or any(not -rank <= axis < rank for axis in axes) \
                or len({axis % rank for axis in axes}) != len(axes):
            # ONNX Runtime refuses such a Pad; read as given it became an opset-17 Pad that runs (adv12)
            return None, f"axes {axes} with {len(pads)} pads do not name distinct axes of its {rank} with two pads each"
        full = [0] * (2 * rank)
        for position, axis in enumerate(axes):
            full[axis % rank], full[rank + axis % rank] = pads[position], pads[len(axes) + position]

        def pad(node=node, full=full):
            pads_name = fresh(f"{node.name or node.outputs[0].name}_pads")
            value = [tensor for tensor in node.inputs[2:3] if tensor is not None and tensor.name]   # constant_value
            _keep_inputs(node, 1)
            for tensor in [gs.Constant(pads_name, np.array(full, dtype=np.int64))] + value:
                node.inputs.append(tensor)
        return pad, None
    if op == "Resize":
        if attrs.get("antialias", 0) or attrs.get("keep_aspect_ratio_policy", "stretch") not in ("stretch", b"stretch") \
                or "axes" in attrs:
            return None, "antialias, keep_aspect_ratio_policy or axes (new in 18) set"
        if "antialias" not in attrs and "keep_aspect_ratio_policy" not in attrs:
            return None, None
        return (lambda node=node: [node.attrs.pop(key, None) for key in ("antialias", "keep_aspect_ratio_policy")]), None
    if op in ("ScatterElements", "ScatterND"):
        reduction = attrs.get("reduction", "none")
        reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
        return (None, None) if reduction in ("none", "add", "mul") else (None, f"reduction={reduction} (new in 18)")
    if op == "LpPool":
        if attrs.get("ceil_mode", 0):
            return None, "ceil_mode=1 (new in 18)"
        if "ceil_mode" not in attrs:
            return None, None
        return (lambda node=node: node.attrs.pop("ceil_mode", None)), None
    if changed_in_opset_18(op):
        return None, "new or changed in opset 18, without an opset-17 spelling here"
    return None, None


@register_pass
class Opset18To17(Pass):
    name = "opset18-to-17"
    description = ("write an opset-18 graph as opset 17 (Reduce* axes back as attributes, ...), exactly, where every "
                   "node allows it: tpu-mlir refuses opset 18's ReduceMean")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        if graph.opset != FROM_OPSET:
            return PassResult(False, {"lowered": 0}, [f"opset {graph.opset}, not {FROM_OPSET}: left as it is"])
        if graph.functions or any(isinstance(value, gs.Graph) for node in graph.nodes for value in node.attrs.values()):
            return PassResult(False, {"lowered": 0}, ["a local function or subgraph: left at opset 18"])
        cache: dict = {}

        def shapes():
            if "shapes" not in cache:
                cache["shapes"] = static_shapes(graph)
            return cache["shapes"]

        taken = set(graph.tensors())

        def fresh(base: str) -> str:
            name = unique_name(base, taken)
            taken.add(name)
            return name

        rewrites, refused = [], []
        for node in graph.nodes:
            if (node.domain or "") not in ("", "ai.onnx"):
                continue
            rewrite, reason = _plan(node, shapes, fresh)
            if reason is not None:
                refused.append(f"{describe(node)}: {reason}")
            elif rewrite is not None:
                rewrites.append(rewrite)
        if refused:
            more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
            return PassResult(False, {"lowered": 0, "refused": len(refused)},
                              [f"left at opset 18: {len(refused)} node(s) without an opset-17 spelling "
                               f"({'; '.join(refused[:3])}{more})"])
        read_before = {id(tensor): tensor for node in graph.nodes for tensor in node.inputs if tensor is not None}
        for rewrite in rewrites:
            rewrite()
        # The axes (and pads) no node reads now: a Constant node that made one goes too.
        unread = [tensor for tensor in read_before.values() if not tensor.outputs and len(tensor.inputs) == 1
                  and tensor.inputs[0].op == "Constant" and tensor not in graph.outputs]
        for tensor in unread:
            graph.nodes.remove(tensor.inputs[0])
        graph.opset = TO_OPSET
        if graph.import_domains is not None:   # what onnx-graphsurgeon writes as the model's opset_import
            graph.import_domains = [onnx.helper.make_opsetid(domain, TO_OPSET) if domain in ("", "ai.onnx")
                                    else onnx.helper.make_opsetid(domain, version)
                                    for domain, version in ((o.domain, o.version) for o in graph.import_domains)]
        return PassResult(True, {"lowered": 1, "respelled": len(rewrites)})

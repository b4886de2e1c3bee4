"""Check a graph against what Sophgo's tpu-mlir 1.30.2 can compile for BM1684X.

Each rule was seen to fail on the real compiler (docs/TPU.md). The pass changes nothing; with
``strict`` (default) it raises a PassError naming every offending node, else it reports them
as notes. Rules:

  Loop, Scan, If             Scan is not supported, Loop crashes the compiler
  Slice with a step < 0      MergeSlicePattern asserts 'cur_s > 0'       (slice-reverse-to-gather)
  Einsum (most equations)    only a fixed list of equations converts      (lower-einsum, einsum-to-matmul)
  IsNaN                      "Op not support:{'IsNaN'}" in model_transform  (isnan-to-equal)
  ReduceMean, axes an input  "Unsupport opset for ReduceMean" (opset 18)   (opset18-to-17)
  ReduceLogSumExp/Pad, axes an input   the frontend reads no axes input: wrong results (opset18-to-17)
  Constant with value_int/... KeyError: 'value' in model_transform      (constants-to-initializers)
  Identity                   breaks conversion when tpu-mlir's onnxsim is off (remove-identity)
  output = input             "type of return operand 0 ... doesn't match function result type" (Identity or not;
                             remove-identity{copy_inputs=true} makes an Identity's copy x * 1, which compiles)
  output = constant          left out of the bmodel (its other outputs compiled, cosine 1.0)
  output from constants      computed from constants and Shapes only (a ConstantOfShape fold-constants leaves for
                             its size): model_transform's ConstantFolding (its default; tools.tpu_check turns it
                             off, and then the output is computed, cosine 1.0) folds it to a weight, left out
  nothing computed           every output a copy (x * 1): tpu-mlir folds it away and deploy asserts '!empty()'
  CumSum axis not constant   the axis must be an attribute in tpu-mlir
  CumSum exclusive/reverse   silently ignored: wrong results              (cumsum-plain)
  CumSum rank > 4            CumSum.cpp asserts num_dims <= 4             (cumsum-rank4)
  CumSum too large           "cumsum input tensor is too large"           (split-cumsum)
  unknown shapes             the TPU flow needs static shapes
"""
from __future__ import annotations

import shlex
from collections import defaultdict

import onnx_graphsurgeon as gs

from passes.base import Option, Pass, PassContext, PassError, PassInputError, PassResult
from passes.registry import register_pass
from passes.static_shapes import static_shapes
from passes.tpu_memory import DEFAULT_BUDGET, DEFAULT_LANES, footprint
from patterns.graph_query import constant_value, cumsum_axis, describe, optional_input, slice_operands

# Einsum equations tpu-mlir 1.30.2 converts (its 'top.Einsum' mode constraint), letters renamed
# in order of first appearance. Others fail in model_transform; lower-einsum rewrites them.
SUPPORTED_EINSUM = frozenset("""
a,b->ab ab,ab->a ab,acb->ac ab,cdb->acd abc,db->adc abcd,cde->abe abcd,acd->abc abcd,bed->abce
abcd,ced->abce abcd,abed->abce abcd,abde->abce abcd,abce->acde abc,adc->abd abc,adc->adb
abc,abd->acd abcd,cde->abce abc,acde->abde abc,abde->acde abc,bd->abcd abc,abdc,abc->abcd
abcd,acde,abc->abce abc,abc->ab abcd,aecd->aeb abc,cde->abde abcd,aeb->aecd abcde,afbc->abdef
abcde,abfge->abcdfg abcd,aecd->abec abcd,acde->abde abcd,abef->acdef abcd,abce->abde ab,abc->ac
abcd,aecd->acbe abcd,adbe->acbe
""".split())


def canonical_einsum(equation: str) -> str:
    """Rename letters in order of first appearance: 'bdl,bdn->bln' -> 'abc,abd->acd'."""
    names: dict[str, str] = {}
    out = []
    for char in equation.replace(" ", ""):
        if char.isalpha():
            names.setdefault(char, chr(ord("a") + len(names)))
            out.append(names[char])
        else:
            out.append(char)
    return "".join(out)


# Opset 18's axes inputs that tpu-mlir 1.30.2 does not take: ReduceMean's stops model_transform (its fusion
# patterns are written with the one-input ReduceMean of opset 17); OnnxConverter.py reads ReduceLogSumExp's axes
# from the attribute only and never reads Pad's fourth input. Other reductions' axes inputs it reads as constants.
AXES_INPUTS = {"ReduceMean": (1, "model_transform: \"Unsupport opset for ReduceMean\""),
               "ReduceLogSumExp": (1, "its axes input is ignored (every axis reduced)"),
               "Pad": (3, "its axes input is ignored (pads read as every axis')")}
AXES_INPUT_RULE = "opset-18 axes input tpu-mlir does not take (run opset18-to-17; its notes say why it could not)"

# unroll-loops (first in the tpu pipelines) writes out every Loop and Scan it can prove; its note says why one was left.
CONTROL_FLOW = {"Loop": "Loop crashes the compiler; unroll-loops' note says why it was left",
                "Scan": "Scan is not supported; unroll-loops' note says why it was left", "If": "If is not supported"}


# Seen on tpu-mlir 1.30.2 (session s28, tools.tpu_check, F32): properties of the model's interface, which the
# pipeline keeps as it came; a run that breaks only these is refused as bad input (exit 2), not as a failed pass.
OUTPUT_IS_INPUT = ("graph output that is a graph input passed through (tpu-mlir's model_transform: \"type of return "
                   "operand 0 doesn't match function result type\"; the caller has the input: drop the output)")
OUTPUT_IS_CONSTANT = ("graph output that is a constant (tpu-mlir leaves it out of the bmodel; the caller knows it: "
                      "drop the output)")
OUTPUT_FROM_CONSTANTS = ("graph output computed from constants and shapes only (model_transform's own constant folding, "
                         "on unless --do_onnx_sim is off, folds it to a weight and leaves it out of the bmodel; the "
                         "caller can compute it: drop the output)")
# Ops tpu-mlir 1.30.2's ConstantFolding (transform/OnnxOpt.py) never folds although their inputs are constant.
_NEVER_FOLDED = frozenset(("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                           "Bernoulli", "If", "Loop", "Scan"))
IDENTITY_COPY = ("Identity copying a graph input or constant into a graph output (tpu-mlir refuses an input returned "
                 "as an output; remove-identity{copy_inputs=true} makes it x * 1 where Mul takes its type)")
NOTHING_COMPUTED = ("nothing computed: every graph output is a graph input or a constant, copied (tpu-mlir folds x * 1 "
                    "away and its model_deploy asserts on the empty network: \"Assertion `!empty()' failed\")")
INTERFACE_RULES = frozenset((OUTPUT_IS_INPUT, OUTPUT_IS_CONSTANT, OUTPUT_FROM_CONSTANTS, IDENTITY_COPY, NOTHING_COMPUTED))


def _from_constants(tensor: gs.Tensor, graph_inputs: set[int], memo: dict[int, bool]) -> bool:
    """`tensor` is what tpu-mlir's ConstantFolding folds: a constant, a Shape of anything (static shapes), or the
    output of a node with inputs, all of them so (random draws and control flow aside). Iterative: a chain of
    100,000 nodes is no recursion."""
    stack, visiting = [tensor], set()
    while stack:
        top = stack[-1]
        if id(top) in memo:
            stack.pop()
            continue
        if isinstance(top, gs.Constant) or (not top.inputs and id(top) not in graph_inputs and not top.name):
            memo[id(top)] = True   # a constant, or an omitted optional input ('')
        elif id(top) in graph_inputs or not top.inputs:
            memo[id(top)] = False
        else:
            node = top.inputs[0]
            if node.op == "Shape":
                memo[id(top)] = True
            elif node.op in _NEVER_FOLDED or not node.inputs:
                memo[id(top)] = node.op == "Constant"
            else:
                pending = [t for t in node.inputs if id(t) not in memo]
                if pending and id(top) not in visiting:
                    visiting.add(id(top))
                    stack.extend(pending)
                    continue
                memo.update((id(t), False) for t in pending)   # a cycle (model_check refuses one): not folded
                memo[id(top)] = all(memo[id(t)] for t in node.inputs)
        stack.pop()
    return memo[id(tensor)]


def _copied_input(tensor: gs.Tensor, graph_inputs: set[int]) -> bool:
    """`tensor` is x * 1 (or Identity(x)) of a graph input or a constant x."""
    if len(tensor.inputs) != 1:
        return False
    node = tensor.inputs[0]
    sources = [t for t in node.inputs if not (node.op == "Mul" and _is_one(t))]
    return (node.op in ("Identity", "Mul") and len(sources) == 1 and len(node.inputs) == (1 if node.op == "Identity" else 2)
            and (id(sources[0]) in graph_inputs or isinstance(sources[0], gs.Constant)))


def _is_one(tensor: gs.Tensor) -> bool:
    value = constant_value(tensor)
    return value is not None and value.size == 1 and value.item() == 1


def _interface_violations(graph: gs.Graph) -> tuple[dict[str, list[str]], set[int]]:
    """Rule -> the outputs (or Identity nodes) at fault, and the ids of the Identity nodes named."""
    violations: dict[str, list[str]] = defaultdict(list)
    identities: set[int] = set()
    graph_inputs = {id(t) for t in graph.inputs}
    copies = 0
    memo: dict[int, bool] = {}
    for tensor in graph.outputs:
        if id(tensor) in graph_inputs:
            violations[OUTPUT_IS_INPUT].append(f"output '{tensor.name}'")
        elif isinstance(tensor, gs.Constant) or not tensor.inputs:
            violations[OUTPUT_IS_CONSTANT].append(f"output '{tensor.name}'")
        elif _copied_input(tensor, graph_inputs):
            copies += 1
            if tensor.inputs[0].op == "Identity":
                violations[IDENTITY_COPY].append(describe(tensor.inputs[0]))
                identities.add(id(tensor.inputs[0]))
        elif _from_constants(tensor, graph_inputs, memo):
            violations[OUTPUT_FROM_CONSTANTS].append(f"output '{tensor.name}' ({describe(tensor.inputs[0])})")
    if graph.outputs and copies and copies + sum(len(v) for k, v in violations.items() if k != IDENTITY_COPY) \
            == len(graph.outputs):
        violations[NOTHING_COMPUTED].extend(f"output '{t.name}'" for t in graph.outputs)
    return dict(violations), identities


def find_violations(graph: gs.Graph, budget: int = DEFAULT_BUDGET, lanes: int = DEFAULT_LANES) -> dict[str, list[str]]:
    """Rule -> offending nodes (as 'Op name [detail]'). Empty when the graph is legal."""
    interface, identity_copies = _interface_violations(graph)   # listed after the node rules
    violations: dict[str, list[str]] = defaultdict(list)
    shapes = None
    for tensor in graph.inputs:
        if tensor.shape is None or not all(isinstance(d, int) and d >= 0 for d in tensor.shape):
            # The name is quoted for a shell: the suggestion is made to be pasted, and names are hostile text.
            if tensor.shape is None:
                example = f"{shlex.quote(f'{tensor.name}:D0,D1,...')} (its rank is not declared)"
            else:
                dims = ",".join(str(d) if isinstance(d, int) and d >= 0 else "1" for d in tensor.shape)
                example = shlex.quote(f"{tensor.name}:{dims}")
            violations["graph input without a static shape (fix it with passes.apply --input-shape NAME:D0,D1,..., "
                       "or export with static shapes)"].append(
                f"input '{tensor.name}' {tensor.shape}: e.g. --input-shape {example}")
    for node in graph.nodes:
        if node.op in CONTROL_FLOW:
            violations[f"{node.op} op ({CONTROL_FLOW[node.op]})"].append(describe(node))
        elif node.op == "Einsum" and canonical_einsum(node.attrs.get("equation", "")) not in SUPPORTED_EINSUM:
            violations["Einsum equation tpu-mlir does not know (run lower-einsum, then einsum-to-matmul)"].append(
                f"{describe(node)} '{node.attrs.get('equation', '')}'")
        elif node.op == "IsNaN":
            violations["IsNaN op (model_transform: \"Op not support:{'IsNaN'}\"; run isnan-to-equal)"].append(
                describe(node))
        elif node.op in AXES_INPUTS and optional_input(node, AXES_INPUTS[node.op][0]) is not None:
            violations[AXES_INPUT_RULE].append(f"{describe(node)}: {AXES_INPUTS[node.op][1]}")
        elif node.op == "Constant" and "value" not in node.attrs:
            violations["Constant node without a 'value' attribute (run constants-to-initializers)"].append(
                f"{describe(node)} {sorted(node.attrs)}")
        elif node.op == "Identity" and id(node) not in identity_copies:
            violations["Identity node (run remove-identity)"].append(describe(node))
        elif node.op == "Slice" and optional_input(node, 4) is not None:
            operands = slice_operands(node)
            if operands is None and constant_value(node.inputs[4]) is None:
                violations["Slice with non-constant steps (must be > 0)"].append(describe(node))
            elif operands is not None and (operands[3] < 0).any():
                violations["Slice with a negative step (run slice-reverse-to-gather)"].append(describe(node))
        elif node.op == "MatMul":
            if shapes is None:
                shapes = static_shapes(graph)
            left, right = (shapes.get(t.name) for t in node.inputs[:2])
            if left is not None and right is not None and len(left) < len(right) and len(right) > 2:
                violations["MatMul with a lower-rank left operand broadcast over the right's batch axes "
                           "(MatMul.cpp:66 asserts)"].append(f"{describe(node)} {list(left)} x {list(right)}")
        elif node.op == "CumSum":
            if shapes is None:
                shapes = static_shapes(graph)
            shape = shapes.get(node.inputs[0].name)
            axis = cumsum_axis(node, len(shape)) if shape is not None else cumsum_axis(node, 0)
            if axis is None:
                violations["CumSum with a non-constant axis"].append(describe(node))
            if node.attrs.get("exclusive", 0) or node.attrs.get("reverse", 0):
                violations["CumSum with exclusive/reverse, ignored by tpu-mlir (run cumsum-plain)"].append(describe(node))
            if shape is None:
                violations["CumSum input shape not static (size limit cannot be checked)"].append(describe(node))
                continue
            if len(shape) > 4:
                violations["CumSum input of rank > 4 (run cumsum-rank4)"].append(f"{describe(node)} {list(shape)}")
            elif axis is not None and footprint(shape, axis, lanes) > budget:
                violations[f"CumSum input too large: over {budget} elements per lane (run split-cumsum)"].append(
                    f"{describe(node)} {list(shape)} axis {axis}: {footprint(shape, axis, lanes)}")
    return dict(violations) | interface


def format_violations(violations: dict[str, list[str]], shown: int = 3) -> list[str]:
    lines = []
    for rule, offenders in violations.items():
        more = f" and {len(offenders) - shown} more" if len(offenders) > shown else ""
        lines.append(f"{rule}: {len(offenders)} ({'; '.join(offenders[:shown])}{more})")
    return lines


@register_pass
class TpuLegality(Pass):
    name = "tpu-legality"
    description = "check the graph against tpu-mlir's limits (control flow, Identity, step<0 Slice, CumSum rules)"

    strict = Option(bool, True, "fail the pipeline on a violation (false: only report it)")
    budget = Option(int, DEFAULT_BUDGET, "largest CumSum, in elements per NPU lane, the kernel takes", min=2)
    lanes = Option(int, DEFAULT_LANES, "NPU lanes", min=1)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        violations = find_violations(graph, self.budget, self.lanes)
        lines = format_violations(violations)
        count = sum(len(offenders) for offenders in violations.values())
        if count and self.strict:
            # Only the model's interface at fault: nothing a pass may change, the input is what tpu-mlir cannot take.
            error = PassInputError if set(violations) <= INTERFACE_RULES else PassError
            raise error(f"{count} tpu-mlir legality violation(s): " + " | ".join(lines))
        return PassResult(False, {"violations": count}, lines)

"""A Loop or Scan with a constant trip count written out step by step, so reroll-scans can re-roll it.

A recurrence kept as a loop reaches ONNX as one control-flow node: torch.jit.script's `for t in range(L)`
through the TorchScript exporter is a Loop (its readouts appended to a sequence: SequenceInsert in the body,
ConcatFromSequence after it), torch's scan higher-order op through the dynamo exporter is a Scan, and other
frameworks write either. reroll-scans finds nothing in them, ONNX Runtime runs them one step at a time,
and tpu-mlir refuses both (tpu-legality). This pass copies the body once per iteration into the main
graph with ONNX's semantics exactly:

- Loop(M, cond, v...): body (iteration_num, cond, v...) -> (cond, v..., scan outputs...); each step's
  iteration number is the constant i, its cond the constant true; the loop-carried values of step i are the
  body outputs of step i - 1; each scan output is the step values stacked on a new axis 0
  (Unsqueeze + Concat).
- Scan(states..., scan inputs...): step i reads scan input j at position i, or L - 1 - i where
  scan_input_directions[j] is 1, along scan_input_axes[j] (a Gather of one index); scan output k is the step
  values stacked along scan_output_axes[k], in reverse step order where scan_output_directions[k] is 1.
- A sequence built by the steps, SequenceEmpty (or SequenceConstruct of the first elements: `ys = [y_0]`) then one
  SequenceInsert (no position) per step and read only by ConcatFromSequence (TorchScript's `ys.append(..)` then
  `torch.stack(ys, ..)`), becomes the Concat of its elements, each Unsqueezed first where new_axis is 1.
- A body node that reads nothing a step changes is written once for all steps, or not at all where the graph
  computes the same node before the loop (the first step written out by the user, `C[:, 0]`, reads it too).
- Gather indices computed from static sizes (`deltaBx[:, length - 1]` before a backward loop) are folded, as each
  step's index is.
- An If whose cond is a constant or computed from constants and static sizes (TorchScript's `if x.size(1) > 1:` with a
  dynamic batch) and whose branches hold a Loop or Scan is first replaced by the branch taken.
- A Loop in a Loop's body (`for k in range(2):` around `for t in range(L):`) is copied per outer step, what its body
  reads from around it (the outer iteration number, a_k) remapped to that step's values, then written out in its turn;
  everything the copies write counts against the outer loop's `max_nodes`. A Scan in a Loop's body is copied the same
  way, its length the static one the body records for its scan inputs. A nested Loop's trip count may read a value
  the outer loop carries where that is computed step after step from constants (`n = n - 1`).
- An If in a loop's body whose cond is computed from constants, static sizes, the iteration number and the values the
  loop carries so (TorchScript's `if t == 0:` in a scripted loop) is written at each step as the branch taken then (its
  branches hold no subgraph of their own).

A trip count is a constant, read from a static size: Gather(Shape(x), k) where x's size k is known while its
batch is not (TorchScript's `range(x.shape[1])` exported with a dynamic batch), or computed from those through
index arithmetic (TorchScript's `range(1, length)`: Cast(Ceil(Div(Cast(length - 1), 1))); patterns/small_constants.py's
evaluator with the static sizes bound); a Scan's is its inputs' size along the scan axis. Left unchanged, with the reason as a note (and `left` in the stats): a trip count known neither way (a
dynamic length), a Loop whose cond is not constant true in and out
of the body (an early exit), a body If whose cond is not so computed or whose branches hold a subgraph, a nested Loop
whose trip count is not computed from constants, static sizes, the outer iteration number and what it carries from them
(a count carried from a graph input) or that may exit early, a nested Scan of no recorded length, an If holding a loop
whose cond is not known, a body with a seeded random op (its copies would
repeat one draw), a trip count below 1,
a Scan of opset 8 (its batch axis), and a loop whose steps times nodes a step (body nodes, a Gather per scan input, an
Unsqueeze per stacked output; an If as its larger branch) and what it writes after them (an Identity per carried value, a
Concat per stacked output) exceed `max_nodes`.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator, Optional

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Option, Pass, PassContext, PassResult
from passes.graph_builder import GraphBuilder, taken_prefixes, unique_name
from passes.one_line import printable
from passes.registry import register_pass
from passes.static_shapes import partial_shapes, symbolic_named_shapes
from patterns.graph_query import constant_int, constant_value, producer
from patterns.small_constants import EVALUATED_OPS, small_value

# Scan-8 iterates over a batch axis as well; its semantics differ from Scan-9's.
MIN_SCAN_OPSET = 9
# How often (in steps) a long unroll reports its progress on the pass's status line.
PROGRESS_EVERY_SECONDS = 1.0
# The largest integer tensor a step's index arithmetic is folded into (indices, shapes: a handful of numbers).
MAX_STEP_CONSTANT = 64
# Ops whose value differs from one evaluation to the next: never written once for all steps.
RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                        "Bernoulli"})


def _constant_true(tensor: Optional[gs.Tensor], body_cond: Optional[gs.Tensor] = None) -> bool:
    """Whether `tensor` is true on every step: a constant true, the body's cond input (true on every step when
    it is true on entry and on every exit), or either through Identity."""
    for _ in range(64):
        if tensor is None:
            return False
        if body_cond is not None and tensor is body_cond:
            return True
        value = constant_value(tensor)
        if value is not None:
            return value.dtype == np.bool_ and value.size == 1 and bool(value.reshape(-1)[0])
        node = producer(tensor)
        if node is None or node.op != "Identity":
            return False
        tensor = node.inputs[0]
    return False


def _nested_nodes(body: gs.Graph) -> list[gs.Node]:
    """The nodes of `body` that hold a subgraph (If, Loop, Scan)."""
    return [node for node in body.nodes if any(isinstance(value, gs.Graph) for value in node.attrs.values())]


def _seeded(graph: gs.Graph) -> Optional[gs.Node]:
    """A seeded random op of `graph` or of a subgraph in it, or None."""
    for node in graph.nodes:
        if node.op in RANDOM_OPS and "seed" in node.attrs:
            return node
        for value in node.attrs.values():
            found = _seeded(value) if isinstance(value, gs.Graph) else None
            if found is not None:
                return found
    return None


def _free_reads(graph: gs.Graph) -> list[gs.Tensor]:
    """The tensors `graph` (and the subgraphs in it) reads from the scopes around it, constants left out."""
    local = {id(t) for t in graph.inputs} | {id(t) for node in graph.nodes for t in node.outputs}
    reads: dict[int, gs.Tensor] = {}
    for node in graph.nodes:
        for tensor in _node_reads(node):
            if not _is_empty(tensor) and id(tensor) not in local and not isinstance(tensor, gs.Constant):
                reads.setdefault(id(tensor), tensor)
    for tensor in graph.outputs:
        if id(tensor) not in local and not isinstance(tensor, gs.Constant):
            reads.setdefault(id(tensor), tensor)
    return list(reads.values())


def _node_reads(node: gs.Node) -> list[gs.Tensor]:
    """What `node` reads: its inputs, and what its subgraphs read from around them (a nested Loop's body reading
    the outer step's iteration number)."""
    return list(node.inputs) + [t for value in node.attrs.values() if isinstance(value, gs.Graph)
                                for t in _free_reads(value)]


def _static_dims(shape) -> tuple[int, ...] | None:
    """A shape of plain sizes as a tuple; None where it is missing or a size is symbolic."""
    if shape is None or not all(isinstance(size, int) and not isinstance(size, bool) for size in shape):
        return None
    return tuple(shape)


def _copied_graph(graph: gs.Graph, lookup, name: str) -> gs.Graph:
    """A copy of the subgraph `graph` whose reads from around it go through `lookup` (an outer body's tensor -> the
    step's value), its own tensors new, named `name`/their name (the copies of one body are siblings in one graph)."""
    copies: dict[int, gs.Tensor] = {}

    def new(tensor: gs.Tensor) -> gs.Variable:
        made = gs.Variable(f"{name}/{tensor.name}", dtype=tensor.dtype, shape=tensor.shape)
        made.type = tensor.type
        copies[id(tensor)] = made
        return made

    def get(tensor: gs.Tensor) -> gs.Tensor:
        if _is_empty(tensor):
            return gs.Variable.empty()
        if id(tensor) in copies:
            return copies[id(tensor)]
        return tensor if isinstance(tensor, gs.Constant) else lookup(tensor)

    inputs = [new(t) for t in graph.inputs]
    nodes = []
    for node in graph.nodes:
        attrs = _copied_attrs(node, get, name)
        reads = [get(t) for t in node.inputs]
        nodes.append(gs.Node(node.op, name=f"{name}/{node.name}" if node.name else node.name, attrs=attrs,
                             inputs=reads, outputs=[new(t) for t in node.outputs], domain=node.domain))
    return gs.Graph(nodes=nodes, inputs=inputs, outputs=[get(t) for t in graph.outputs], name=graph.name,
                    opset=graph.opset)


def _copied_attrs(node: gs.Node, lookup, name: str) -> dict:
    """`node`'s attributes, each subgraph copied (`_copied_graph`)."""
    return {key: _copied_graph(value, lookup, f"{name}/{key}") if isinstance(value, gs.Graph) else value
            for key, value in node.attrs.items()}


def _nested_loops_size(node: gs.Node, body: gs.Graph, plan: "_Plan", shapes: "_Shapes") -> int | str:
    """How many nodes the Loops nested in `body` will write once each outer step's copy is written out (each trip
    count evaluated with the outer step's iteration number bound), or why they cannot be: a trip count that is not
    computed from constants, static sizes and the iteration number on every step (it reads a carried value), or a
    nested Loop that may exit early."""
    # (loop, the outer steps that write it, how the note names it): in the body at every step; in a branch of a body
    # If at the steps that take that branch
    nested = [(inner, [True] * plan.trip, f"its body's nested {inner.op} '{printable(inner.name)}'")
              for inner in body.nodes if inner.op in ("Loop", "Scan")]
    for if_node in body.nodes + [deeper for inner in body.nodes if id(inner) in plan.branches
                                 for deeper in _ifs_in(_plain_branches(inner))]:
        if id(if_node) not in plan.branches:
            continue
        for key, inner in _branch_loops(if_node):
            steps = [taken == (key == "then_branch") for taken in plan.branches[id(if_node)]]
            nested.append((inner, steps, f"its body's If '{printable(if_node.name)}' holds {inner.op} "
                                         f"'{printable(inner.name)}' in its {key.split('_')[0]} branch, which"))
    if not nested:
        return 0
    outer = _outer_tensors(shapes.graph)
    iteration = body.inputs[0] if node.op == "Loop" and body.inputs else None
    carried: list = []   # per outer step, the carried values known then (computed once, where a trip count needs them)
    total = 0
    for inner, written, label in nested:
        if inner.op == "Scan":   # the same length at every outer step: its scan inputs' static one
            size = _nested_scan_size(inner)
            if isinstance(size, str):
                return f"{label} {size}"
            total += sum(written) * size
            continue
        inner_body = inner.attrs.get("body")
        if not isinstance(inner_body, gs.Graph) or len(inner.inputs) < 2 or len(inner_body.outputs) < 1:
            return f"{label} has no body graph or no trip count"
        if (not _is_empty(inner.inputs[1]) and not _constant_true(inner.inputs[1])) or not _constant_true(
                inner_body.outputs[0], inner_body.inputs[1] if len(inner_body.inputs) > 1 else None):
            return f"{label} may exit early (its cond is not constant true)"
        per_step = max(len(inner_body.nodes) + max(len(inner_body.outputs) - len(inner.inputs) + 1, 0), 1)
        trip = inner.inputs[0]
        uncomputed = (f"{label} has a trip count that is not computed from constants, static sizes, the iteration "
                      "number and the values the loop carries from them")
        if _is_empty(trip):
            return uncomputed
        for value, writes in zip(_values_at_steps(trip, plan, iteration, shapes, outer, carried), written):
            if not writes:   # (a branch not taken at this step)
                continue
            if value is None or value.size != 1 or not np.issubdtype(value.dtype, np.integer):
                return uncomputed
            # its steps, and an Identity per carried value and a Concat per stacked output once
            total += max(int(value.reshape(-1)[0]), 0) * per_step + max(len(inner_body.outputs) - 1, 0)
    return total


def _plain_branches(node: gs.Node) -> Optional[tuple[gs.Graph, gs.Graph]]:
    """An If's (then, else) branches where both are graphs of no inputs, as many outputs as the If, and no subgraph of
    their own but such Ifs (TorchScript's `elif`: an If in the else branch), Loops and Scans (what a body's If is
    written out as, per step: the branch taken's nodes, a Loop or Scan in it copied, written out on the next round as
    a loop nested in the body is); else None."""
    branches = (node.attrs.get("then_branch"), node.attrs.get("else_branch"))
    if not node.inputs or not all(isinstance(branch, gs.Graph) and not branch.inputs
                                  and len(branch.outputs) == len(node.outputs)
                                  and all(inner.op in ("Loop", "Scan")
                                          or (inner.op == "If" and _plain_branches(inner) is not None)
                                          for inner in _nested_nodes(branch))
                                  for branch in branches):
        return None
    return branches


def _branch_loops(node: gs.Node) -> list[tuple[str, gs.Node]]:
    """The Loops and Scans in a body If's plain branches (not in its Ifs'): (branch key, node)."""
    return [(key, inner) for key in ("then_branch", "else_branch") for inner in node.attrs[key].nodes
            if inner.op in ("Loop", "Scan")]


def _branch_subgraph(node: gs.Node) -> Optional[str]:
    """What makes an If's branches not plain where they hold a subgraph that is not such an If, Loop or Scan:
    "its else branch holds X 'x'"; None for other reasons (or none)."""
    for key in ("then_branch", "else_branch"):
        branch = node.attrs.get(key)
        if not isinstance(branch, gs.Graph):
            continue
        for inner in _nested_nodes(branch):
            if inner.op in ("Loop", "Scan"):
                continue
            if inner.op != "If" or _plain_branches(inner) is None:
                deeper = _branch_subgraph(inner) if inner.op == "If" else None
                return (f"its {key.split('_')[0]} branch holds {inner.op} '{printable(inner.name)}'"
                        + (f", {deeper}" if deeper else ""))
    return None


def _ifs_in(branches: tuple) -> list[gs.Node]:
    """The Ifs in plain branches (`_plain_branches`), at any depth."""
    found = []
    for branch in branches:
        for inner in branch.nodes:
            if inner.op == "If":
                found += [inner, *_ifs_in(_plain_branches(inner))]
    return found


def _written_size(branch: gs.Graph) -> int:
    """How many nodes a plain branch writes at most: each of its Ifs as its larger branch."""
    return sum(max(_written_size(inner_branch) for inner_branch in _plain_branches(node)) if node.op == "If" else 1
               for node in branch.nodes)


def _branches_taken(node: gs.Node, body: gs.Graph, plan: "_Plan", shapes: "_Shapes") -> dict | str:
    """For each If of `body` (plain branches, `_plain_branches`) and each If in their branches, whether its cond is
    true at each step of `plan`'s loop, where computed from constants, static sizes, the iteration number and the
    values the loop carries from them (TorchScript's `if t == 0:` in a scripted loop: Equal(t, 0); an `elif`'s cond
    computed in the else branch); or why not."""
    ifs = [inner for inner in body.nodes if inner.op == "If" and _plain_branches(inner) is not None]
    ifs = list({id(found): found for found in [*ifs, *(deeper for inner in ifs
                                                       for deeper in _ifs_in(_plain_branches(inner)))]}.values())
    if not ifs:
        return {}
    outer = _outer_tensors(shapes.graph)
    iteration = body.inputs[0] if node.op == "Loop" and body.inputs else None
    # a Loop's cond in the body: true at every step (a loop that may exit early is refused before this)
    fixed = {id(body.inputs[1]): np.asarray(True)} if node.op == "Loop" and len(body.inputs) > 1 else {}
    carried: list = []
    taken = {}
    for inner in ifs:
        steps = []
        for value in _values_at_steps(inner.inputs[0], plan, iteration, shapes, outer, carried, fixed):
            if value is None or value.size != 1:
                return (f"its body's If '{printable(inner.name)}' has a cond that is not computed from constants, static "
                        "sizes, the iteration number and the values the loop carries from them")
            steps.append(bool(value.reshape(-1)[0]))
        taken[id(inner)] = steps
    return taken


def _write_branch(b: GraphBuilder, branch: gs.Graph, read, before: set[int], then_taken) -> list[gs.Tensor]:
    """The nodes of an If's `branch` written into `b`'s graph, reading what is around it through `read`; its outputs.
    A node that computes what one already written does (`before`: their ids, to which this adds its own) is read from
    there: `deltaA[:, t]`'s Slice of the whole deltaA in either branch, at every step, is then one tensor, whose steps
    the matcher reads as one source's; index arithmetic on the iteration number is folded as in the body. An If in the
    branch is written as its branch taken in turn (`then_taken(node)`: whether it takes its then branch, this step)."""
    local: dict[int, gs.Tensor] = {}

    def get(tensor: gs.Tensor) -> gs.Tensor:
        if _is_empty(tensor):
            return gs.Variable.empty()
        return local[id(tensor)] if id(tensor) in local else tensor if isinstance(tensor, gs.Constant) else read(tensor)

    for node in branch.nodes:
        if node.op == "If":   # (plain branches hold no other subgraph)
            taken = _plain_branches(node)[0 if then_taken(node) else 1]
            local.update({id(old): new for old, new in zip(
                node.outputs, _write_branch(b, taken, get, before, then_taken))})
            continue
        inputs = [get(t) for t in node.inputs]
        same = _same_node_before(node, inputs, before)
        if same is not None:
            local.update({id(old): new for old, new in zip(node.outputs, same.outputs)})
            continue
        # (a Loop or Scan in the branch copied with this step's values for what its body reads from around it)
        attrs = (_copied_attrs(node, get, b.fresh_name(f"branch_{node.op}")) if node.op in ("Loop", "Scan")
                 else dict(node.attrs))
        outputs = b.node_outputs(node.op, inputs, attrs, len(node.outputs), domain=node.domain)
        before.add(id(b.nodes[-1]))
        for old, new in zip(node.outputs, outputs):
            new.dtype, new.shape, new.type = old.dtype, old.shape, old.type
            local[id(old)] = _step_constant(b, node, inputs, new)
    return [get(t) for t in branch.outputs]


def _values_at_steps(tensor: gs.Tensor, plan: "_Plan", iteration: Optional[gs.Tensor], shapes: "_Shapes", outer: set,
                     carried: list, fixed: Optional[dict] = None) -> Iterator[Optional[np.ndarray]]:
    """The value a tensor of a loop's body takes at each step of `plan`'s loop, None where it is not computed from
    constants, static sizes (`fixed`: more values known at every step), the iteration number and the values the loop
    carries from them (a count carried `n = n - 1`). `carried`: those carried values per step
    (`_carried_per_step`), filled at their first need and shared between the calls for one loop."""
    sizes = {**_static_sizes(tensor, shapes, outer), **(fixed or {})}
    for step in range(plan.trip):
        bound = sizes if iteration is None else {**sizes, id(iteration): np.asarray(step, np.int64)}
        value = small_value(tensor, bound)
        if value is None:
            if not carried:
                carried.extend(_carried_per_step(plan, iteration, shapes, outer))
            value = small_value(tensor, {**bound, **carried[step]})
        yield value


def _carried_per_step(plan: "_Plan", iteration: Optional[gs.Tensor], shapes: "_Shapes", outer: set) -> list[dict]:
    """For each step of `plan`'s loop, the values its body reads as carried then (id of the body input -> value), where
    they are computed from constants, static sizes and the iteration number, step after step from their initial values
    (a count the loop carries: `n = n - 1`); a value not so computed is left out (its readers then are not evaluated)."""
    known = {}
    for body_input, initial in zip(plan.state_inputs, plan.carried):
        value = _computed_value(initial, shapes)
        if value is not None:
            known[id(body_input)] = value
    per_step = []
    for step in range(plan.trip):
        per_step.append(known)
        bound = dict(known) if iteration is None else {**known, id(iteration): np.asarray(step, np.int64)}
        following = {}
        for body_input, output in zip(plan.state_inputs, plan.state_outputs):
            value = _computed_value(output, shapes, bound, outer)
            if value is not None:
                following[id(body_input)] = value
        known = following
    return per_step


def _nested_scan_size(scan: gs.Node) -> int | str:
    """How many nodes a Scan in a loop body writes once its copy is written out (its steps, a Gather per scan input and
    an Unsqueeze per stacked output a step, an Identity per state and a Concat per stacked output after them), its
    length the static size its body's graph records for its scan inputs; or why not."""
    body = scan.attrs.get("body")
    scanned = int(scan.attrs.get("num_scan_inputs", 0))
    states = len(scan.inputs) - scanned
    if not isinstance(body, gs.Graph) or scanned < 1 or states < 0:
        return "has no body graph or no scan input"
    axes = list(scan.attrs.get("scan_input_axes", [0] * scanned))
    lengths = set()
    for tensor, axis in zip(scan.inputs[states:], axes):
        shape = getattr(tensor, "shape", None)
        size = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
        lengths.add(size if isinstance(size, (int, np.integer)) else None)
    if len(lengths) != 1 or None in lengths:
        return "has scan inputs of no one static length recorded in the body"
    outputs = len(scan.outputs) - states
    return int(lengths.pop()) * max(len(body.nodes) + scanned + outputs, 1) + states + outputs


def _is_empty(tensor: Optional[gs.Tensor]) -> bool:
    return tensor is None or (isinstance(tensor, gs.Variable) and tensor.name == "")


class _Shapes:
    """Partial shapes (None for a symbolic size: a dynamic batch), inferred once, on first use."""

    def __init__(self, graph: gs.Graph) -> None:
        self.graph, self._shapes = graph, None
        self._symbolic: dict = {}   # name -> its shape by ONNX Runtime's inference (one run per name)

    def get(self, name: str) -> Optional[tuple]:
        if self._shapes is None:
            self._shapes = partial_shapes(self.graph)
        return self._shapes.get(name)

    def candidates(self, name: str):
        """`name`'s partial shape, then (ONNX's inference loses a static length behind a dynamic batch's Reshapes)
        its shape by ONNX Runtime's symbolic inference, sizes unmerged."""
        shape = self.get(name)
        if shape is not None:
            yield shape
        if name not in self._symbolic:
            self._symbolic[name] = symbolic_named_shapes(self.graph, [name]).get(name)
        if self._symbolic[name] is not None:
            yield self._symbolic[name]


def _shape_gather(node: Optional[gs.Node]) -> Optional[tuple[gs.Tensor, Callable[[int], Optional[int]]]]:
    """Gather(Shape(x), k) (axis 0, k a constant): x, and the axis of x it reads for a rank of x (None where k is past
    what Shape's start and end keep); None for any other node."""
    if node is None or node.op != "Gather" or int(node.attrs.get("axis", 0)) != 0 or len(node.inputs) < 2:
        return None
    index, shape_node = constant_int(node.inputs[1]), producer(node.inputs[0])
    if index is None or shape_node is None or shape_node.op != "Shape" or not shape_node.inputs:
        return None
    start, end = int(shape_node.attrs.get("start", 0)), shape_node.attrs.get("end")

    def axis_for(rank: int) -> Optional[int]:
        axes = list(range(rank))[slice(start, None if end is None else int(end))]
        return axes[index] if -len(axes) <= index < len(axes) else None
    return shape_node.inputs[0], axis_for


def _static_size_read(tensor: gs.Tensor, shapes: _Shapes, exact: bool = False) -> Optional[np.ndarray | int]:
    """A trip count read from a shape, Gather(Shape(x), k) (through Cast, Identity, Squeeze), where x's size k is
    static while others are not: TorchScript's `range(x.shape[1])` with a dynamic batch. `exact`: the Gather's own
    int64 value (its index's shape), no Cast or Squeeze before it."""
    node = producer(tensor)
    for _ in range(0 if exact else 8):
        if node is None or node.op not in ("Cast", "Identity", "Squeeze") or not node.inputs:
            break
        node = producer(node.inputs[0])
    read = _shape_gather(node)
    if read is None:
        return None
    source, axis_for = read
    for shape in shapes.candidates(source.name):
        axis = axis_for(len(shape))
        if axis is not None and isinstance(shape[axis], (int, np.integer)):
            if exact:
                return np.full(np.shape(constant_value(node.inputs[1])), int(shape[axis]), dtype=np.int64)
            return int(shape[axis])
    return None


# How many tensors `_static_sizes` looks at upstream of one value (index arithmetic: a handful).
MAX_WALK = 256


def _walk_up(tensor: gs.Tensor, visit: Callable[[gs.Tensor, gs.Node], bool]) -> None:
    """Calls visit(t, producer of t) for `tensor` and each tensor it is computed from (constants and empty inputs
    left out, each once, at most MAX_WALK), going on into a node's inputs where visit returns True."""
    seen: set = set()
    stack = [tensor]
    while stack and len(seen) < MAX_WALK:
        tensor = stack.pop()
        if _is_empty(tensor) or id(tensor) in seen or constant_value(tensor) is not None:
            continue
        seen.add(id(tensor))
        node = producer(tensor)
        if node is not None and node.inputs and visit(tensor, node):
            stack.extend(node.inputs)


def _static_sizes(tensor: gs.Tensor, shapes: _Shapes, outer: Optional[set] = None) -> dict:
    """The static sizes `tensor` is computed from, as small_value's `bound` (by id of the tensor): each
    Gather(Shape(x), k) of a static size k (x's others may be symbolic) its value, each Shape(x) of an x whose shape is
    static its value. `outer`: ids of the main graph's tensors, the only ones whose shapes are known (a body's tensor
    named like one of them is not it)."""
    bound: dict = {}

    def visit(tensor: gs.Tensor, node: gs.Node) -> bool:
        if node.op not in EVALUATED_OPS:
            return False
        if outer is None or id(tensor) in outer:
            size = _static_size_read(tensor, shapes, exact=True)
            if size is not None:
                bound[id(tensor)] = size
                return False
            if node.op == "Shape":
                shape = next((shape for shape in shapes.candidates(node.inputs[0].name)
                              if all(isinstance(size, (int, np.integer)) for size in shape)), None)
                if shape is not None:   # a stand-in of that shape: Shape reads no values
                    value = small_value(tensor, {id(node.inputs[0]): np.broadcast_to(np.zeros((), np.float32), shape)})
                    if value is not None:
                        bound[id(tensor)] = value
                return False
        return True

    _walk_up(tensor, visit)
    return bound


def _symbolic_size_read(tensor: gs.Tensor, graph: gs.Graph) -> str:
    """Where a trip count that is no static size reads a graph input's size that is not a number, Gather(Shape(x), k)
    (TorchScript's `range(x.shape[1])` with a dynamic length), that size, and that --input-shape makes it one (the
    trip count is then computed like any static size's): " (it reads axis 1 of the graph input 'x', of symbolic size
    'length': --input-shape fixes it)"; "" where it reads none."""
    inputs = {id(t) for t in graph.inputs}
    found: list[str] = []

    def visit(tensor: gs.Tensor, node: gs.Node) -> bool:
        if found:   # the first one found is the one named
            return False
        read = _shape_gather(node)
        if read is not None and id(read[0]) in inputs:
            source, axis_for = read
            shape = list(source.shape or [])
            axis = axis_for(len(shape))
            if axis is not None and not isinstance(shape[axis], (int, np.integer)):
                size = shape[axis]
                named = f"symbolic size '{printable(size)}'" if isinstance(size, str) and size else "a size not given"
                found.append(f" (it reads axis {axis} of the graph input '{printable(source.name)}', of {named}: "
                             "--input-shape fixes it)")
                return False
        return True

    _walk_up(tensor, visit)
    return found[0] if found else ""


def _computed_value(tensor: gs.Tensor, shapes: _Shapes, bound: Optional[dict] = None,
                    outer: Optional[set] = None) -> Optional[np.ndarray]:
    """`tensor`'s value where it is computed from constants and static sizes only (patterns/small_constants.py's
    evaluator with the sizes `_static_sizes` reads bound; TorchScript's `range(1, length)` is
    Cast(Ceil(Div(Cast(Sub(length, 1)), 1))), its `if length > 1:` Cast(Greater(length, 1))), at most
    MAX_STEP_CONSTANT elements; `bound`: more values known (an iteration number); None otherwise."""
    value = small_value(tensor, {**_static_sizes(tensor, shapes, outer), **(bound or {})})
    return None if value is None or value.size > MAX_STEP_CONSTANT else value


class _Plan:
    """What one unroll needs: the trip count and how step i reads and writes."""

    def __init__(self, trip: int, body: gs.Graph, state_inputs: list, state_outputs: list,
                 carried: list, finals: list, stacked: list, read_step=None, fixed_inputs=()) -> None:
        self.trip, self.body = trip, body
        self.state_inputs, self.state_outputs = state_inputs, state_outputs   # body tensors
        self.carried, self.finals = carried, finals                          # outer tensors: initial, final
        self.stacked = stacked          # (body output, outer output, axis, reversed)
        self.read_step = read_step      # step -> {id(body input): outer tensor} (Scan's slices)
        self.fixed_inputs = fixed_inputs  # (body input, step -> value) (Loop's iteration number and cond)
        self.sliced = 0                 # scan inputs: one Gather each a step
        self.branches: dict = {}        # id(an If of the body) -> per step, whether its cond is true (then_branch)


@register_pass
class UnrollLoops(Pass):
    name = "unroll-loops"
    description = ("a Loop or Scan with a constant trip count (nested Loops too) copied once per step (ONNX semantics "
                   "exactly), so reroll-scans can re-roll the recurrence inside")
    max_nodes = Option(int, 200_000, "the most nodes one unrolled loop may add (steps x nodes a step)", min=1)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        shapes = _Shapes(graph)
        inlined, notes = (_inline_decided_ifs(graph, ctx.opset, shapes) if any(node.op == "If" for node in graph.nodes)
                          else (0, []))
        if inlined:
            shapes = _Shapes(graph)
        taken = None
        unrolled = {"Loop": 0, "Scan": 0}
        steps = added = index = body_ifs = 0
        refused: set[int] = set()
        # A loop copied out of another's body shares the max_nodes of the outermost one: [nodes it still allows]
        budgets: dict[int, list] = {}
        fresh = False
        while True:   # a loop copied out of an unrolled body is written out on the next round
            loops = [node for node in graph.nodes if node.op in ("Loop", "Scan") and id(node) not in refused]
            if not loops:
                break
            for node in loops:
                budget = budgets.get(id(node))
                plan = self._plan(node, ctx.opset, shapes, budget)
                if isinstance(plan, str):
                    notes.append(f"{node.op} '{printable(node.name)}' left as it is: {plan}")
                    refused.add(id(node))
                    index += 1
                    continue
                taken = taken_prefixes(graph) if taken is None else taken
                builder = GraphBuilder(graph, ctx.opset, prefix=f"unroll_loops/{node.op.lower()}{index}", taken=taken)
                index += 1
                self._unroll(builder, node, plan, ctx, index - 1, shapes)
                _put_in_place(graph, node, builder.nodes)
                unrolled[node.op] += 1
                body_ifs += len(plan.branches)
                steps += plan.trip
                added += len(builder.nodes)
                family = budget if budget is not None else [self.max_nodes]
                family[0] -= len(builder.nodes)
                copied = [made for made in builder.nodes if made.op in ("Loop", "Scan")]
                budgets.update({id(made): family for made in copied})
                fresh = fresh or bool(copied)
            if fresh:   # the copied loops' tensors are new
                shapes, fresh = _Shapes(graph), False
        stats: dict = {"unrolled": unrolled["Loop"] + unrolled["Scan"]}
        if stats["unrolled"]:
            stats.update({"loops_unrolled": unrolled["Loop"], "scans_unrolled": unrolled["Scan"], "steps": steps,
                          "nodes_added": added, "sequences_concatenated": _sequences_to_concat(graph, ctx.opset, taken)})
        if stats["unrolled"] or notes:
            stats["left"] = len(notes)
        if stats["unrolled"]:
            folded, bounds = _fold_static_indices(graph, ctx.opset, taken, shapes)
            if folded:
                stats["indices_folded"] = folded
            if bounds:
                stats["slice_bounds_folded"] = bounds
        if inlined:
            stats["ifs_inlined"] = inlined
        if body_ifs:   # Ifs in loop bodies, each step written as its branch taken then
            stats["body_ifs_inlined"] = body_ifs
        if stats["unrolled"] or inlined:
            # Every new node sits where the node it replaces sat, so the graph stays in topological order: no toposort
            # (onnx-graphsurgeon's took 3.8 of 12 s on a 3,136-step loop).
            graph.cleanup()
        return PassResult(bool(stats["unrolled"] or inlined), stats, notes)

    # -- what can be unrolled ------------------------------------------------------------------
    def _plan(self, node: gs.Node, opset: int, shapes: "_Shapes", budget: Optional[list] = None) -> _Plan | str:
        body = node.attrs.get("body")
        if not isinstance(body, gs.Graph):
            return "no body graph"
        nested = next((inner for inner in _nested_nodes(body) if inner.op not in ("Loop", "Scan") and not (
            inner.op == "If" and _plain_branches(inner) is not None)), None)
        if nested is not None:
            deeper = _branch_subgraph(nested) if nested.op == "If" else None
            return (f"its body holds a nested subgraph ({nested.op} '{printable(nested.name)}'"
                    + (f": {deeper}, which is written out only in the body itself" if deeper else "") + ")")
        # A seeded generator inside a loop draws on from one step to the next; copies of it would each start again
        # from the seed and repeat the first step's numbers (a nested loop's too: the outer steps would repeat it).
        seeded = _seeded(body)
        if seeded is not None:
            return (f"its body draws seeded random numbers ({seeded.op} '{printable(seeded.name)}': a copy per step "
                    "would repeat the first step's draw)")
        plan = self._loop_plan(node, body, shapes) if node.op == "Loop" else self._scan_plan(node, body, opset, shapes)
        if isinstance(plan, str):
            return plan
        if plan.trip < 1:
            return f"trip count {plan.trip} (nothing to write out step by step)"
        # a step writes its body nodes, a Gather per scan input and an Unsqueeze per stacked output: a one-node body
        # over many scan inputs is many nodes a step; a nested Loop is then written out step by step in its turn
        plan.branches = _branches_taken(node, body, plan, shapes)
        if isinstance(plan.branches, str):
            return plan.branches
        # an If written as its larger branch's nodes
        per_step = max(len(body.nodes) + plan.sliced + len(plan.stacked)
                       + sum(max(_written_size(branch) for branch in _plain_branches(inner)) - 1
                             for inner in body.nodes if id(inner) in plan.branches), 1)
        # after the last step: an Identity per carried value and a Concat per stacked output (s29 left them out: a
        # Scan of 61 nodes passed max_nodes=60)
        last = len(plan.finals) + len(plan.stacked)
        inner = _nested_loops_size(node, body, plan, shapes)
        if isinstance(inner, str):
            return inner
        limit = self.max_nodes if budget is None else budget[0]
        if plan.trip * per_step + last + inner > limit:
            return (f"{plan.trip} steps x {per_step} nodes a step + {last} after them = "
                    f"{plan.trip * per_step + last} nodes"
                    + (f" and {inner} in its nested loops" if inner else "") + f", over max_nodes={self.max_nodes}"
                    + ("" if budget is None else f" ({self.max_nodes - budget[0]} written by the loops around it)"))
        return plan

    def _loop_plan(self, node: gs.Node, body: gs.Graph, shapes: "_Shapes") -> _Plan | str:
        count = len(node.inputs) - 2
        if count < 0 or len(body.inputs) != count + 2 or len(body.outputs) < count + 1:
            return "inputs and body signature do not match"
        trip = None if _is_empty(node.inputs[0]) else constant_int(node.inputs[0])
        if trip is None and not _is_empty(node.inputs[0]):
            trip = _static_size_read(node.inputs[0], shapes)
        if trip is None and not _is_empty(node.inputs[0]):   # computed from static sizes: `range(1, length)`
            value = _computed_value(node.inputs[0], shapes)
            if value is not None and value.size == 1 and np.issubdtype(value.dtype, np.integer):
                trip = int(value.reshape(-1)[0])
        if trip is None:
            return ("its trip count M is neither a constant nor a static size"
                    + ("" if _is_empty(node.inputs[0]) else _symbolic_size_read(node.inputs[0], shapes.graph)))
        if not _is_empty(node.inputs[1]) and not _constant_true(node.inputs[1]):
            return "its cond input is not a constant true"
        if not _constant_true(body.outputs[0], body.inputs[1]):
            return "its body's cond output is not constant true (the loop may exit early)"
        scan_outputs = body.outputs[1 + count:]
        if len(node.outputs) != count + len(scan_outputs):
            return "outputs and body signature do not match"
        stacked = [(out, node.outputs[count + k], 0, False) for k, out in enumerate(scan_outputs)]
        fixed = [(body.inputs[0], lambda b, i: b.const(np.asarray(i, dtype=np.int64))),
                 (body.inputs[1], lambda b, i: b.const(np.asarray(True)))]
        return _Plan(trip, body, list(body.inputs[2:]), list(body.outputs[1:1 + count]), list(node.inputs[2:]),
                     list(node.outputs[:count]), stacked, fixed_inputs=fixed)

    def _scan_plan(self, node: gs.Node, body: gs.Graph, opset: int, shapes: "_Shapes") -> _Plan | str:
        if opset < MIN_SCAN_OPSET:
            return f"Scan of opset {opset} (before 9 it iterates over a batch axis as well)"
        scanned = int(node.attrs.get("num_scan_inputs", 0))
        states = len(node.inputs) - scanned
        if scanned < 1 or states < 0 or len(body.inputs) != len(node.inputs) or len(body.outputs) != len(node.outputs):
            return "inputs and body signature do not match"
        input_axes = list(node.attrs.get("scan_input_axes", [0] * scanned))
        input_directions = list(node.attrs.get("scan_input_directions", [0] * scanned))
        output_count = len(node.outputs) - states
        output_axes = list(node.attrs.get("scan_output_axes", [0] * output_count))
        output_directions = list(node.attrs.get("scan_output_directions", [0] * output_count))
        if (len(input_axes), len(input_directions), len(output_axes), len(output_directions)) != (
                scanned, scanned, output_count, output_count):
            return "scan axes or directions do not match its inputs and outputs"
        lengths = set()
        for tensor, axis in zip(node.inputs[states:], input_axes):
            shape = shapes.get(tensor.name)
            if shape is None or not -len(shape) <= axis < len(shape) or shape[axis] is None:
                return f"scan input '{printable(tensor.name)}' has no static size along axis {axis}"
            lengths.add(shape[axis])
        if len(lengths) != 1:
            return f"its scan inputs differ in length ({sorted(lengths)})"
        trip = lengths.pop()
        scan_body_inputs = list(body.inputs[states:])
        scan_inputs = list(node.inputs[states:])

        def read_step(b: GraphBuilder, step: int) -> dict:
            return {id(body_input): b.gather(outer, trip - 1 - step if direction else step, axis)
                    for body_input, outer, axis, direction in zip(scan_body_inputs, scan_inputs, input_axes,
                                                                  input_directions)}

        stacked = [(body.outputs[states + k], node.outputs[states + k], output_axes[k], bool(output_directions[k]))
                   for k in range(output_count)]
        plan = _Plan(trip, body, list(body.inputs[:states]), list(body.outputs[:states]), list(node.inputs[:states]),
                     list(node.outputs[:states]), stacked, read_step=read_step)
        plan.sliced = scanned
        return plan

    # -- writing it out --------------------------------------------------------------------------
    def _unroll(self, b: GraphBuilder, node: gs.Node, plan: _Plan, ctx: PassContext, index: int,
                shapes: _Shapes) -> None:
        body = plan.body
        produced = {id(out) for body_node in body.nodes for out in body_node.outputs}
        # Nodes that read nothing a step changes (Constants, `dA[:, t]`'s Slice of the whole outer tensor before
        # its Gather) are written once, not once per step: every step then reads one tensor, as an unrolled export
        # does, and the matcher sees each step's operand taken from the same source.
        body_inputs = {id(t) for t in body.inputs}
        hoisted: dict[int, gs.Tensor] = {}
        invariant: set[int] = set()
        # The body's own initializers are copied under this unroll's names: kept as they are, two bodies' initializers
        # of one name (each Loop's `w`), or one named like an outer tensor, would collide in the main graph.
        outer = _outer_tensors(b.graph)
        for tensor in [t for body_node in body.nodes for t in body_node.inputs] + list(body.outputs):
            if isinstance(tensor, gs.Constant) and id(tensor) not in outer and id(tensor) not in hoisted:
                hoisted[id(tensor)] = b.const(tensor.values)
        # A static size the body reads from the outer graph, Gather(Shape(x), k) (`length = x.shape[1]` with a dynamic
        # batch), as its constant: `t = length - 1 - i` is then a constant index in each step.
        for body_node in body.nodes:
            for tensor in body_node.inputs:
                if (_is_empty(tensor) or id(tensor) in produced or id(tensor) in body_inputs or id(tensor) in hoisted
                        or isinstance(tensor, gs.Constant)):
                    continue
                size = _static_size_read(tensor, shapes, exact=True)
                if size is not None:
                    hoisted[id(tensor)] = b.const(size)
        position = next(index for index, outer_node in enumerate(b.graph.nodes) if outer_node is node)
        before = {id(outer_node) for outer_node in b.graph.nodes[:position]}
        for number, body_node in enumerate(body.nodes):
            if body_node.op in RANDOM_OPS or not all(
                    _is_empty(t) or id(t) in hoisted or (id(t) not in produced and id(t) not in body_inputs)
                    for t in _node_reads(body_node)):
                continue
            inputs = [gs.Variable.empty() if _is_empty(t) else hoisted.get(id(t), t) for t in body_node.inputs]
            invariant.add(id(body_node))
            # The same node already computed before the loop (`C[:, 0]` before a loop from 1 reads C's Slice as each
            # step does): read it, so that the first step's operand and the others' come from one tensor.
            same = _same_node_before(body_node, inputs, before)
            if same is not None:
                hoisted.update({id(old): new for old, new in zip(body_node.outputs, same.outputs)})
                continue
            if id(body_node) in plan.branches:   # an If that reads nothing a step changes: its branch taken, once
                branch = _plain_branches(body_node)[0 if plan.branches[id(body_node)][0] else 1]
                outputs = _write_branch(b, branch, lambda t: hoisted.get(id(t), t), before,
                                        lambda inner: plan.branches[id(inner)][0])
                hoisted.update({id(old): new for old, new in zip(body_node.outputs, outputs)})
                continue
            # (a nested Loop's body reads the outer values through the same map)
            attrs = _copied_attrs(body_node, lambda t: hoisted.get(id(t), t), f"{b.prefix}/once/{number}")
            outputs = b.node_outputs(body_node.op, inputs, attrs, len(body_node.outputs), domain=body_node.domain)
            for old, new in zip(body_node.outputs, outputs):
                new.dtype, new.shape, new.type = old.dtype, old.shape, old.type
                hoisted[id(old)] = _step_constant(b, body_node, inputs, new)
        node.inputs.clear()
        node.outputs.clear()
        before.update(id(made) for made in b.nodes)   # (what the branches of its Ifs may read instead of writing again)
        carried = list(plan.carried)
        # The body's declared shapes hold at its first iteration (checked on load, passes.static_shapes); at a later
        # one only where each carried value's shape, declared static, comes back the same: a carried value that
        # grows (h = Concat(h, h)) made the first step's declaration wrong at every later step (adv23). Elsewhere
        # the later steps keep their element types, their shapes inferred.
        shapes_hold_later = all(
            _static_dims(came) is not None and _static_dims(came) == _static_dims(output.shape)
            for came, output in zip((body_input.shape if body_input.shape is not None else initial.shape
                                     for body_input, initial in zip(plan.state_inputs, plan.carried)), plan.state_outputs))
        step_values: list[list[gs.Tensor]] = [[] for _ in plan.stacked]
        started = last_report = time.perf_counter()
        for step in range(plan.trip):
            values: dict[int, gs.Tensor] = dict(hoisted)
            values.update({id(inp): value for inp, value in zip(plan.state_inputs, carried)})
            for body_input, value_of in plan.fixed_inputs:
                values[id(body_input)] = value_of(b, step)
            if plan.read_step is not None:
                values.update(plan.read_step(b, step))

            def read(tensor: gs.Tensor) -> gs.Tensor:
                if id(tensor) in values:
                    return values[id(tensor)]
                if isinstance(tensor, gs.Constant) or id(tensor) not in produced:
                    return tensor     # an initializer, an empty optional input or a tensor of the outer graph
                raise ValueError(f"body tensor '{printable(tensor.name)}' read before it is written")

            for number, body_node in enumerate(body.nodes):
                if id(body_node) in invariant:
                    continue
                if id(body_node) in plan.branches:   # an If: the nodes of its branch taken at this step
                    branch = _plain_branches(body_node)[0 if plan.branches[id(body_node)][step] else 1]
                    outputs = _write_branch(b, branch, read, before,
                                            lambda inner, step=step: plan.branches[id(inner)][step])
                    values.update({id(old): new for old, new in zip(body_node.outputs, outputs)})
                    continue
                inputs = [gs.Variable.empty() if _is_empty(t) else read(t) for t in body_node.inputs]
                # a nested Loop copied with this step's values for what its body reads from around it
                attrs = _copied_attrs(body_node, read, f"{b.prefix}/step{step}/{number}")
                outputs = b.node_outputs(body_node.op, inputs, attrs, len(body_node.outputs), domain=body_node.domain)
                for old, new in zip(body_node.outputs, outputs):
                    new.dtype, new.shape, new.type = old.dtype, old.shape, old.type
                    if step and not shapes_hold_later:
                        new.shape = None
                    values[id(old)] = _step_constant(b, body_node, inputs, new)
            carried = [read(out) for out in plan.state_outputs]
            for values_of, (out, _, _, _) in zip(step_values, plan.stacked):
                values_of.append(read(out))
            now = time.perf_counter()
            if now - last_report >= PROGRESS_EVERY_SECONDS:
                last_report = now
                ctx.log(f"unrolling {node.op} {index}: step {step + 1}/{plan.trip}, "
                        f"{len(b.nodes)} nodes, {now - started:.0f} s")
        for value, outer in zip(carried, plan.finals):
            b.identity(value, output=outer)
        for values_of, (_, outer, axis, reverse) in zip(step_values, plan.stacked):
            ordered = values_of[::-1] if reverse else values_of
            b.concat([b.unsqueeze(value, [axis]) for value in ordered], axis, output=outer)


def _holds_loop(graph: gs.Graph) -> bool:
    """Whether `graph` has a Loop or Scan, in it or in a subgraph of its nodes."""
    return any(node.op in ("Loop", "Scan") or any(isinstance(value, gs.Graph) and _holds_loop(value)
                                                  for value in node.attrs.values()) for node in graph.nodes)


def _inline_decided_ifs(graph: gs.Graph, opset: int, shapes: _Shapes) -> int:
    """Each If of the main graph whose cond is a constant, or computed from constants and static sizes (TorchScript's
    `if x.size(1) > 1:` with a dynamic batch: Cast(Greater(Gather(Shape(x), 1), 1))), and whose branches hold a
    Loop or Scan replaced by the branch taken's nodes (its outputs reach the If's through Identities), so the loop is
    in the main graph to be written out (or gone with the branch not taken); a branch's tensor named like another of the main graph is renamed. Returns how
    many, and a note for each If left whose branches hold a loop."""
    inlined, taken = 0, None
    for _ in range(64):   # a branch may hold such an If in turn
        found, notes = None, []
        for node in graph.nodes:
            # (an If without a loop is not looked at: evaluating its cond may ask ONNX Runtime for shapes)
            if node.op != "If" or not node.inputs or not any(isinstance(g, gs.Graph) and _holds_loop(g)
                                                             for g in node.attrs.values()):
                continue
            value = _computed_value(node.inputs[0], shapes)
            if value is None or value.size != 1:
                notes.append(f"If '{printable(node.name)}' left as it is: its cond is neither a constant nor "
                             "computed from constants and static sizes (a branch holds a Loop or Scan)")
                continue
            branch = node.attrs.get("then_branch" if bool(value.reshape(-1)[0]) else "else_branch")
            if isinstance(branch, gs.Graph) and not branch.inputs and len(branch.outputs) == len(node.outputs):
                found = node, branch
                break
        if found is None:
            return inlined, notes
        node, branch = found
        taken = taken_prefixes(graph) if taken is None else taken
        names = graph.tensors()
        for tensor in [t for branch_node in branch.nodes for t in [*branch_node.inputs, *branch_node.outputs]]:
            if tensor.name and tensor.name in names and names[tensor.name] is not tensor:
                tensor.name = unique_name(tensor.name, set(names))
                names[tensor.name] = tensor
        results, outputs = list(branch.outputs), list(node.outputs)
        node.inputs.clear()
        node.outputs.clear()
        b = GraphBuilder(graph, opset, prefix=f"unroll_loops/if{inlined}", taken=taken)
        for result, output in zip(results, outputs):
            b.identity(result, output=output)
        _put_in_place(graph, node, list(branch.nodes) + b.nodes)
        inlined += 1
    return inlined, []


def _same_value(a: gs.Tensor, b: gs.Tensor) -> bool:
    if a is b:
        return True
    if _is_empty(a) or _is_empty(b):
        return _is_empty(a) and _is_empty(b)
    x, y = constant_value(a), constant_value(b)
    return x is not None and y is not None and x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def _plain_attrs(attrs: dict) -> Optional[dict]:
    plain = {}
    for key, value in attrs.items():
        if isinstance(value, (list, tuple)):
            value = tuple(value)
        if not isinstance(value, (int, float, str, bytes, tuple)):
            return None
        plain[key] = value
    return plain


def _same_node_before(body_node: gs.Node, inputs: list, before: set[int]) -> Optional[gs.Node]:
    """A node of the outer graph, before the loop (`before`: ids), that computes what `body_node` would from `inputs`:
    the same op, attributes and inputs (the same tensor, or constants of one value); None if there is none."""
    if body_node.op in RANDOM_OPS or not body_node.outputs:
        return None
    attrs = _plain_attrs(body_node.attrs)
    read = next((t for t in inputs if not _is_empty(t) and constant_value(t) is None), None)
    if attrs is None or read is None:
        return None
    for candidate in read.outputs:
        if (id(candidate) in before and candidate.op == body_node.op and candidate.domain == body_node.domain
                and len(candidate.inputs) == len(inputs) and len(candidate.outputs) == len(body_node.outputs)
                and _plain_attrs(candidate.attrs) == attrs
                and all(_same_value(x, y) for x, y in zip(candidate.inputs, inputs))):
            return candidate
    return None


def _outer_tensors(graph: gs.Graph) -> set[int]:
    """The tensors the main graph itself reads or writes (not its subgraphs'), by id."""
    tensors = {id(t) for t in graph.inputs} | {id(t) for t in graph.outputs}
    for node in graph.nodes:
        tensors.update(id(t) for t in node.inputs)
        tensors.update(id(t) for t in node.outputs)
    return tensors


def _step_constant(b: GraphBuilder, body_node: gs.Node, inputs: list, output: gs.Variable) -> gs.Tensor:
    """`output` as a constant where the step made it one: index arithmetic on the iteration number
    (`t = L - 1 - i`: Sub(9, i)) is a constant index in each step, which is what the matcher reads."""
    if body_node.op not in EVALUATED_OPS or not all(_is_empty(t) or constant_value(t) is not None for t in inputs):
        return output
    value = small_value(output)
    if value is None or value.size > MAX_STEP_CONSTANT or not np.issubdtype(value.dtype, np.integer):
        return output
    return b.const(value)


def _put_in_place(graph: gs.Graph, replaced: gs.Node, made: list[gs.Node]) -> None:
    """The nodes `made` (appended by a builder, in order) moved to where `replaced` was, `replaced` dropped: they read
    only what was computed before it, and what read its outputs comes after it."""
    made_ids = {id(node) for node in made}
    rest = [node for node in graph.nodes if id(node) not in made_ids]
    position = next(index for index, node in enumerate(rest) if node is replaced)
    graph.nodes = rest[:position] + list(made) + rest[position + 1:]


def _fold_static_indices(graph: gs.Graph, opset: int, taken: set, shapes: _Shapes) -> tuple[int, int]:
    """Each Gather index computed from static sizes (`deltaBx[:, length - 1]` before a backward loop from its second
    position, length = Gather(Shape(x), 1) with a dynamic batch) as its constant, as every unrolled step's index is:
    the user's first step then reads a position like the steps after it; so each Slice bound (starts, ends, axes,
    steps: `deltaBx[:, length - 1:length]`, Unsqueeze(Sub(length, 1))). Returns how many indices, how many bounds."""
    b = GraphBuilder(graph, opset, prefix="unroll_loops/static_index", taken=taken)
    folded = bounds = 0
    for node in graph.nodes:
        if node.op == "Slice":
            positions = range(1, min(len(node.inputs), 5))
        elif node.op == "Gather" and len(node.inputs) == 2:
            positions = range(1, 2)
        else:
            continue
        for position in positions:
            tensor = node.inputs[position]
            if _is_empty(tensor) or constant_value(tensor) is not None:
                continue
            value = _computed_value(tensor, shapes)
            if value is not None and np.issubdtype(value.dtype, np.integer):
                node.inputs[position] = b.const(value)
                if node.op == "Gather":
                    folded += 1
                else:
                    bounds += 1
    return folded, bounds


def _through_identity(tensor: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]]:
    passed = []
    while (node := producer(tensor)) is not None and node.op == "Identity" and len(tensor.outputs) == 1:
        passed.append(node)
        tensor = node.inputs[0]
    return tensor, passed


def _sequences_to_concat(graph: gs.Graph, opset: int, taken: set) -> int:
    """ConcatFromSequence of SequenceEmpty or SequenceConstruct(x...) + SequenceInsert(seq, x) (appends, each sequence
    read once) as a Concat of the x (Unsqueezed first where new_axis is 1). Returns how many were rewritten."""
    rewritten = 0
    for concat in [node for node in graph.nodes if node.op == "ConcatFromSequence"]:
        elements, sequence, passed = [], concat.inputs[0], []
        while True:
            sequence, through = _through_identity(sequence)
            passed += through
            node = producer(sequence)
            if node is None or (len(sequence.outputs) != 1 and node.op == "SequenceInsert"):
                break
            if node.op == "SequenceInsert" and len(node.inputs) == 2:
                elements.append(node.inputs[1])
                passed.append(node)
                sequence = node.inputs[0]
                continue
            break
        node = producer(sequence)
        # (a start may be read by other appends too: a sequence is a value, SequenceInsert makes a new one; a nested
        # loop's `ys = []` is written once for all outer steps)
        if node is None or node.op not in ("SequenceEmpty", "SequenceConstruct"):
            continue
        elements.reverse()
        if node.op == "SequenceConstruct":   # `ys = [y_0]` before the loop: its elements first
            elements[0:0] = list(node.inputs)
        if not elements:
            continue
        axis = int(concat.attrs.get("axis"))
        new_axis = int(concat.attrs.get("new_axis", 0))
        output = concat.outputs[0]
        concat.inputs.clear()
        concat.outputs.clear()
        b = GraphBuilder(graph, opset, prefix="unroll_loops/sequence", taken=taken)
        pieces = [b.unsqueeze(x, [axis]) for x in elements] if new_axis else elements
        b.concat(pieces, axis, output=output)
        _put_in_place(graph, concat, b.nodes)
        rewritten += 1
    return rewritten

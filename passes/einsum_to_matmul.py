"""Lower a two-operand Einsum contraction into ReduceSum, Transpose, Reshape and one MatMul, exactly.

Every letter of ``left,right->out`` is one of:

    batch       in both operands and the output        the MatMul's leading (batch) axis
    contracted  in both operands, not in the output    the MatMul's inner axis K
    free        in one operand and the output          the MatMul's row (M, left) or column (N, right) axis
    summed      in one operand only                    summed away first: ReduceSum on that operand

So ``out = Transpose(Reshape(MatMul(Reshape(Transpose(left)), Reshape(Transpose(right)))))`` with each
Transpose or Reshape written only where the axes are not already in place; the order of the letters
inside each group (and which operand goes left) is chosen to need the fewest Transposes. Static batch
sizes are flattened into one axis, so the MatMul is at most 3-D and both operands have the same rank
(tpu-mlir refuses a MatMul that broadcasts above 4-D, docs/TPU.md); a symbolic batch size stays its own
axis, copied by a 0 in the Reshape targets, and one unknown size elsewhere is a -1.

lower-einsum keeps what it does well (broadcast products plus sums: the scan's readouts) and leaves
contractions, which this pass takes: Mamba2's chunked SSD (transformers' Mamba2, Zamba2, Bamba,
NemotronH, FalconH1, GraniteMoeHybrid) writes five, e.g. 'bclhn,bcshn->bclsh', which tpu-mlir's list of
Einsum equations lacks and whose MatMul it compiles. Left alone, with the reason (--explain): one or
three operands (lower-einsum's), a letter repeated in a term (a diagonal), an axis of size 1 broadcast
against a larger one or against a size not known before the run (a dynamic batch), a contracted letter whose two sizes may differ at
run time (two symbolic names, or a name and a number: a batch letter so stays its own MatMul axis), sizes a Reshape target cannot say (two unknown in one target), an unknown rank.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import onnx_graphsurgeon as gs

from passes.base import PassContext, PassResult
from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from passes.static_shapes import named_shapes
from patterns.graph_query import inputs_all_static

Label = str                  # one letter, or "...k" for the k-th axis an ellipsis stands for
Group = tuple[Label, ...]    # the letters one axis of a reshaped tensor holds (() is an axis of size 1)


class NotLowered(ValueError):
    """Why an equation is left as it is."""


def _term_labels(term: str, rank: Optional[int], ellipsis_rank: int) -> list[Label]:
    if term.count("...") > 1:
        raise NotLowered(f"term '{term}' has two ellipses")
    letters = term.replace("...", "")
    if not all(c.isalpha() for c in letters):
        raise NotLowered(f"term '{term}' is not letters")
    if "..." not in term:
        return list(term)
    if rank is None:
        raise NotLowered(f"the rank of the operand of '{term}' is unknown")
    covered = rank - len(letters)
    if covered < 0:
        raise NotLowered(f"term '{term}' has more letters than its operand's rank {rank}")
    before, after = term.split("...")
    # Ellipsis axes are aligned from the right, as numpy broadcasts them.
    return list(before) + [f"...{k}" for k in range(ellipsis_rank - covered, ellipsis_rank)] + list(after)


def parse_equation(equation: str, ranks: Sequence[Optional[int]]) -> tuple[list[list[Label]], list[Label]]:
    """The labels of each operand's axes and of the output's (implicit output: numpy's rule, the ellipsis
    axes then the letters used once, sorted)."""
    equation = equation.replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(ranks):
        raise NotLowered(f"{len(terms)} terms for {len(ranks)} operands")
    ellipsis_rank = 0
    for term, rank in zip(terms, ranks):
        if "..." in term and rank is not None:
            ellipsis_rank = max(ellipsis_rank, rank - len(term.replace("...", "")))
    labels = [_term_labels(term, rank, ellipsis_rank) for term, rank in zip(terms, ranks)]
    if arrow:
        if "..." not in output and any(label.startswith("...") for term in labels for label in term):
            raise NotLowered("the output has no ellipsis for the operands' ellipsis axes")
        out = _term_labels(output, ellipsis_rank + len(output.replace("...", "")), ellipsis_rank)
    else:
        letters = [label for term in labels for label in term if not label.startswith("...")]
        out = [f"...{k}" for k in range(ellipsis_rank)] + sorted(c for c in set(letters) if letters.count(c) == 1)
    for term in labels + [out]:
        repeated = sorted({label for label in term if term.count(label) > 1})
        if repeated:
            raise NotLowered(f"letter '{repeated[0]}' is repeated in a term (a diagonal)")
    if not set(out) <= {label for term in labels for label in term}:
        raise NotLowered("the output has a letter no operand has")
    return labels, out


@dataclass(frozen=True)
class Layout:
    """One way to lay the contraction out as a MatMul: which operand is left, each group's letter order."""

    left: int                  # input index of the MatMul's left operand
    batch: tuple[Label, ...]
    rows: tuple[Label, ...]    # the left operand's free letters
    inner: tuple[Label, ...]   # the contracted letters
    columns: tuple[Label, ...]  # the right operand's free letters


@dataclass(frozen=True)
class ContractionPlan:
    summed: tuple[list[int], list[int]]          # per input: axes to ReduceSum away first
    perms: tuple[Optional[list[int]], Optional[list[int]]]   # per input (after the sums): Transpose, or None
    targets: tuple[Optional[list[int]], Optional[list[int]]]  # per input: Reshape target, or None
    left: int
    product_target: Optional[list[int]]   # the MatMul's output back to one axis per letter
    output_perm: Optional[list[int]]


def _order(letters: set, *sources: Sequence[Label]) -> list[tuple[Label, ...]]:
    """The orders worth trying for a group: as it comes in each source, without repeats."""
    orders = []
    for source in sources:
        order = tuple(label for label in source if label in letters)
        if order not in orders:
            orders.append(order)
    return orders


def _perm(source: Sequence[Label], target: Sequence[Label]) -> Optional[list[int]]:
    perm = [list(source).index(label) for label in target]
    return None if perm == sorted(perm) else perm


def _target(source: list[Group], target: list[Group], sizes: dict[Label, Optional[int]]) -> Optional[list[int]]:
    """The Reshape target taking axes `source` to `target`, or None where they are the same axes. A size that is
    not known is a 0 where the same group is at the same index (Reshape copies it), else the one -1."""
    if source == target:
        return None
    entries, unknown = [], 0
    for index, group in enumerate(target):
        group_sizes = [sizes[label] for label in group]
        if all(size is not None for size in group_sizes):
            entries.append(math.prod(group_sizes))
        elif index < len(source) and source[index] == group:
            entries.append(0)
        else:
            unknown += 1
            entries.append(-1)
    if unknown > 1:
        raise NotLowered("a Reshape target would have two unknown sizes")
    return entries


def plan_contraction(labels: list[list[Label]], out: list[Label],
                     shapes: Sequence[Sequence[Optional[int]]], dynamic: bool = True) -> ContractionPlan:
    sizes: dict[Label, Optional[int]] = {}
    for term, shape in zip(labels, shapes):
        for label, size in zip(term, shape):
            if size == 0:
                raise NotLowered("an operand is empty")
            known = sizes.get(label)
            if dynamic and label in sizes and 1 in (known, size) and None in (known, size):
                # Einsum broadcasts a 1 against the other operand's size, which is known only at run time
                raise NotLowered(f"axis '{label}' of size 1 may be broadcast against a size not known before the run")
            if known is not None and size is not None and known != size:
                raise NotLowered(f"axis '{label}' of size {min(known, size)} is broadcast against {max(known, size)}")
            if known is None:
                sizes[label] = size
    in_both = set(labels[0]) & set(labels[1])
    kept = [[label for label in term if label in out or label in in_both] for term in labels]
    summed = tuple([axis for axis, label in enumerate(term) if label not in kept[i]] for i, term in enumerate(labels))
    batch = in_both & set(out)
    inner = in_both - set(out)
    best: Optional[tuple[int, Layout]] = None
    for left in (0, 1):
        right = 1 - left
        rows, columns = set(kept[left]) - in_both, set(kept[right]) - in_both
        for layout in itertools.product(_order(batch, out, kept[left], kept[right]), _order(rows, out, kept[left]),
                                        _order(inner, kept[left], kept[right]), _order(columns, out, kept[right])):
            candidate = Layout(left, *layout)
            transposes = sum(perm is not None for perm in (
                _perm(kept[left], candidate.batch + candidate.rows + candidate.inner),
                _perm(kept[right], candidate.batch + candidate.inner + candidate.columns),
                _perm(candidate.batch + candidate.rows + candidate.columns, out)))
            if best is None or transposes < best[0]:
                best = (transposes, candidate)
    layout = best[1]
    right = 1 - layout.left
    # A batch of known sizes is one axis (the MatMul at most 3-D); one of unknown sizes keeps its axes.
    if layout.batch and all(sizes[label] is not None for label in layout.batch):
        batch_axes = [layout.batch]
    else:
        batch_axes = [(label,) for label in layout.batch]
    left_axes = [(label,) for label in layout.batch + layout.rows + layout.inner]
    right_axes = [(label,) for label in layout.batch + layout.inner + layout.columns]
    product_axes = batch_axes + [layout.rows, layout.columns]
    perms = [None, None]
    targets = [None, None]
    perms[layout.left] = _perm(kept[layout.left], layout.batch + layout.rows + layout.inner)
    perms[right] = _perm(kept[right], layout.batch + layout.inner + layout.columns)
    targets[layout.left] = _target(left_axes, batch_axes + [layout.rows, layout.inner], sizes)
    targets[right] = _target(right_axes, batch_axes + [layout.inner, layout.columns], sizes)
    product_target = _target(product_axes, [(label,) for label in layout.batch + layout.rows + layout.columns], sizes)
    output_perm = _perm(layout.batch + layout.rows + layout.columns, out)
    return ContractionPlan(summed, tuple(perms), tuple(targets), layout.left, product_target, output_perm)


@register_pass
class EinsumToMatMul(NodeRewrite, op="Einsum", shapes="partial", counted_as="lowered", routine_keeps=True):
    name = "einsum-to-matmul"
    description = ("rewrite two-operand Einsum contractions as ReduceSum, Transpose, Reshape and one MatMul "
                   "(run lower-einsum first for products)")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        # With every graph input's shape declared, a size unknown here is one fixed size (the model runs at its
        # declared shapes alone, which verification checks), so a 1 meeting it is planned as the axis' size, as
        # transformers' static exports need; with a symbolic input size it may be broadcast: left (adv11).
        self.dynamic_inputs = not inputs_all_static(graph)
        # Sizes by name: two symbolic sizes of one letter are one size only where they carry one name (adv12).
        operands = [x.name for node in graph.nodes if node.op == "Einsum" for x in node.inputs]
        self.named = named_shapes(graph, operands) if self.dynamic_inputs and operands else {}
        return super().run(graph, ctx)

    def _sizes_may_differ(self, node: gs.Node, labels: list[list[Label]], out: list[Label]) -> set[Label]:
        """A letter of both operands whose two sizes are not one (two symbolic names, or a name or an unknown size
        against a number): Einsum broadcasts a size that is 1 at run time against the other, where the MatMul's K axis
        or a Reshape planned for the other size fails ('ij,jk->ik' of (2, N) and (3, 4) at N=1: ONNX Runtime's Einsum
        runs, the lowered MatMul was refused; adv12). Such a contracted or summed letter is left (NotLowered); such a
        batch letter is returned, to be planned as unknown: its own MatMul axis, which broadcasts as Einsum does."""
        named = [self.named.get(x.name) for x in node.inputs]
        if any(shape is None or len(shape) != len(term) for shape, term in zip(named, labels)):
            return set()
        first = dict(zip(labels[0], named[0]))
        unsure = set()
        for label, size in zip(labels[1], named[1]):
            other = first.get(label, size)
            if other == size or (isinstance(other, int) and isinstance(size, int)) or 1 in (other, size):
                continue   # one size, two numbers (plan_contraction's), or a 1 against a name (plan_contraction's)
            if label not in out:
                shown = ["unknown" if s is None else repr(s) if isinstance(s, str) else str(s) for s in (other, size)]
                raise NotLowered(f"axis '{label}' has sizes {shown[0]} and {shown[1]}, which may differ before the run "
                                 "(Einsum broadcasts a 1 against the other)")
            unsure.add(label)
        return unsure

    def check(self, node: gs.Node, shapes) -> Kept | ContractionPlan:
        equation = node.attrs.get("equation", "")
        if len(node.inputs) != 2:
            return Kept(f"{node.op} '{node.name}' kept: '{equation}' has {len(node.inputs)} operands, not 2")
        operand_shapes = [shapes.get(x.name) if shapes.get(x.name) is not None else x.shape for x in node.inputs]
        operand_shapes = [None if shape is None else tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
                          for shape in operand_shapes]
        try:
            labels, out = parse_equation(equation, [None if s is None else len(s) for s in operand_shapes])
            if any(shape is None or len(shape) != len(term) for shape, term in zip(operand_shapes, labels)):
                raise NotLowered("an operand's rank is unknown or does not match its term")
            if self.dynamic_inputs:
                unsure = self._sizes_may_differ(node, labels, out)
                operand_shapes = [tuple(None if label in unsure else size for label, size in zip(term, shape))
                                  for term, shape in zip(labels, operand_shapes)]
            return plan_contraction(labels, out, operand_shapes, dynamic=self.dynamic_inputs)
        except NotLowered as why:
            return Kept(f"{node.op} '{node.name}' kept: '{equation}': {why}")

    def replace(self, b: GraphBuilder, node: gs.Node, plan: ContractionPlan, output: gs.Variable) -> None:
        operands = []
        for x, summed, perm, target in zip(node.inputs, plan.summed, plan.perms, plan.targets):
            if summed:
                x = b.reduce_sum(x, summed, keepdims=0)
            if perm is not None:
                x = b.transpose(x, perm)
            if target is not None:
                x = b.reshape(x, target)
            operands.append(x)
        last = plan.product_target is None and plan.output_perm is None
        product = b.matmul(operands[plan.left], operands[1 - plan.left], output=output if last else None)
        if plan.product_target is not None:
            product = b.node("Reshape", [product, b.ints(plan.product_target)],
                             output=output if plan.output_perm is None else None)
        if plan.output_perm is not None:
            b.transpose(product, plan.output_perm, output=output)

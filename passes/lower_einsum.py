"""Lower Einsum ops that are broadcast products plus sums into Transpose/Unsqueeze, Mul, ReduceSum.

ONNX Runtime's CPU Einsum is slow on the scan's equations (e.g. 'bdln,bdnl->bdl' over a
stage-0 scan took ~300 ms where Mul + ReduceSum take ~3 ms), and a TPU compiler handles
Mul/ReduceSum as well as Einsum. Only equations whose broadcast product is no bigger than an
operand or the output are lowered, so a real contraction (a matrix product) is left alone.
"""
from __future__ import annotations

from typing import Optional

import onnx_graphsurgeon as gs

from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite


class EinsumPlan:
    """How to compute one equation as aligned operands -> product -> sum over the dropped letters."""

    def __init__(self, terms: list[str], output: str) -> None:
        self.terms, self.output = terms, output
        summed = []
        for term in terms:
            summed += [c for c in term if c not in output and c not in summed]
        self.order = output + "".join(summed)          # axis order of the product
        self.summed_axes = list(range(len(output), len(self.order)))

    @staticmethod
    def parse(equation: str) -> Optional["EinsumPlan"]:
        equation = equation.replace(" ", "")
        if "..." in equation or "->" not in equation:
            return None
        inputs, output = equation.split("->")
        terms = inputs.split(",")
        if any(len(set(term)) != len(term) for term in terms + [output]):
            return None  # a repeated letter is a diagonal/trace, not a product
        letters = set("".join(terms))
        if not set(output) <= letters:
            return None
        if letters != set(output) and not any(set(term) == letters for term in terms):
            return None  # the product would be bigger than every operand and the output
        return EinsumPlan(terms, output)

    def align(self, b: GraphBuilder, operand: gs.Tensor, term: str) -> gs.Tensor:
        """Permute the operand's axes into product order and insert size-1 axes for missing letters."""
        present = [c for c in self.order if c in term]
        perm = [term.index(c) for c in present]
        if perm != sorted(perm):
            operand = b.transpose(operand, perm)
        missing = [axis for axis, c in enumerate(self.order) if c not in term]
        return b.unsqueeze(operand, missing) if missing else operand


@register_pass
class LowerEinsum(NodeRewrite, op="Einsum", counted_as="lowered", routine_keeps=True):
    name = "lower-einsum"
    description = "rewrite Einsum ops that are broadcast products plus sums as Mul and ReduceSum"

    def check(self, node: gs.Node, shapes) -> Kept | EinsumPlan:
        plan = EinsumPlan.parse(node.attrs.get("equation", ""))
        if plan is None or len(plan.terms) != len(node.inputs):
            return Kept(f"{node.op} '{node.name}' kept: '{node.attrs.get('equation')}' is a contraction, not a product")
        return plan

    def replace(self, b: GraphBuilder, node: gs.Node, plan: EinsumPlan, output: gs.Variable) -> None:
        operands = [plan.align(b, x, term) for x, term in zip(node.inputs, plan.terms)]
        product = operands[0]
        for position, operand in enumerate(operands[1:], start=2):
            is_last = position == len(operands) and not plan.summed_axes
            product = b.node("Mul", [product, operand], output=output if is_last else None)
        if plan.summed_axes:
            b.reduce_sum(product, plan.summed_axes, keepdims=0, output=output)
        elif len(operands) == 1:
            b.identity(product, output=output)

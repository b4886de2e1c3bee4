"""Cut every CumSum whose input is larger than a budget into pieces that each fit.

Sophgo's tpu-mlir runs CumSum only as a "global" op and its code generator refuses inputs
above a size ("cumsum input tensor is too large, need to slice"); the vendor's fix is what the
seed fork called chunkCumsum. For a CumSum over ``axis`` of an input of shape S:

1. Axes other than the summed one are cut first: those pieces are independent (no carry).
2. Only when one line along the summed axis alone is over the budget is the summed axis cut
   too; piece k then starts from the last value of piece k-1 (the carry)::

       z_0 = CumSum(x[0:e0])
       z_k = CumSum(Concat(last(z_{k-1}), x[s_k:e_k]))[1:]

   Summing the carry in *before* the piece (rather than adding it after) keeps the order of
   additions of a sequential CumSum, so the result is bitwise the unsplit one in ONNX Runtime.

Size is measured as the kernel needs it (``footprint``): BM1684X spreads the channel axis
(axis 1 of N,C,H,W) over its 64 NPU lanes, and its CumSum kernel fails once one lane would
hold more than 4096 elements (16 KiB of float32): N * ceil(C/64) * H * W <= 4096, measured
exactly at [1,1,4096] / [1,128,2048] / [2,64,2048] (pass) and one element more (fail). When
the sum runs along C itself, the whole tensor counts (measured: [1,4096,1] passes, [1,3136,64]
fails). ``lanes=1`` turns this into a plain element count.

The plan (``plan_split``) gives the fewest pieces whose every CumSum input, carry row
included, has a footprint of at most ``budget``; pieces along one axis differ in length by at
most 1. Defaults: budget 4096, lanes 64 (BM1684X, tpu-mlir 1.30.2; docs/TPU.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import onnx_graphsurgeon as gs

from passes.base import Option
from passes.graph_builder import GraphBuilder
from passes.registry import register_pass
from passes.rewrite import Kept, NodeRewrite
from passes.static_shapes import Shape
from passes.tpu_memory import DEFAULT_BUDGET, DEFAULT_LANES, footprint, lane_axis
from patterns.graph_query import cumsum_shape_and_axis, describe

# The most pieces one CumSum is cut into (some 300k nodes; VMamba-T's whole tpu graph has 1,531).
MAX_PIECES = 1 << 16


@dataclass(frozen=True)
class SplitPlan:
    shape: Shape
    axis: int
    pieces: tuple[int, ...]  # pieces per axis (1 = not cut)
    lanes: int = 1

    @property
    def total_pieces(self) -> int:
        return math.prod(self.pieces)

    @property
    def carried(self) -> bool:
        return self.pieces[self.axis] > 1

    def bounds(self, axis: int) -> list[tuple[int, int]]:
        return even_bounds(self.shape[axis], self.pieces[axis])

    def largest_piece_shape(self) -> tuple[int, ...]:
        """Shape of the largest CumSum input, the carry row included."""
        dims = [-(-size // count) for size, count in zip(self.shape, self.pieces)]
        if self.carried:
            dims[self.axis] += 1
        return tuple(dims)

    def largest_piece_footprint(self) -> int:
        return footprint(self.largest_piece_shape(), self.axis, self.lanes)


def even_bounds(size: int, count: int) -> list[tuple[int, int]]:
    """``count`` consecutive ranges covering ``range(size)``, lengths differing by at most 1."""
    base, extra = divmod(size, count)
    bounds, start = [], 0
    for index in range(count):
        end = start + base + (1 if index < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def _piece_counts(size: int) -> list[int]:
    """For each distinct piece length ceil(size/p), the smallest p giving it, ascending.

    From one length the next count is the smallest giving a shorter length, ceil(size / (length - 1)):
    O(sqrt(size)) steps, not one per count (a declared axis of 2^31 - 1 took 2^31)."""
    counts, count = [], 1
    while True:
        counts.append(count)
        length = -(-size // count)
        if length <= 1:
            return counts
        count = -(-size // (length - 1))


def plan_split(shape: Sequence[int], axis: int, budget: int, lanes: int = 1) -> Optional[SplitPlan]:
    """The fewest pieces with every piece (carry row included) within ``budget`` (footprint).

    The summed axis is cut only when a single line along it is over the budget. Among plans
    with as many pieces, fewer cuts of the summed axis win, then cuts of outer axes (inner
    rows stay contiguous). Returns None when the input already fits.
    """
    shape = tuple(int(d) for d in shape)
    if budget < 2:
        raise ValueError(f"budget must be >= 2 elements, got {budget}")
    if footprint(shape, axis, lanes) <= budget:
        return None
    spread = lane_axis(len(shape), axis, lanes)

    def cost(i: int, length: int) -> int:
        return -(-length // lanes) if i == spread else length

    line = shape[axis]
    others = [i for i in range(len(shape)) if i != axis and shape[i] > 1]

    def summed_pieces(cap: int) -> Optional[int]:
        if line <= cap:
            return 1
        if line <= budget or cap < 2:
            return None  # cut other axes further rather than carry
        return -(-line // (cap - 1))  # each later piece also holds the carry row

    best: list = [None, None]  # (key, pieces per axis)

    def search(position: int, cap: int, chosen: dict[int, int], count_so_far: int) -> None:
        if best[0] is not None and count_so_far > best[0][0]:
            return
        if position == len(others):
            along = summed_pieces(cap)
            if along is None:
                return
            total = count_so_far * along
            # Ties: fewer summed-axis cuts, then cuts on outer axes rather than inner ones.
            key = (total, along, tuple(chosen.get(i, 1) for i in reversed(others)))
            if best[0] is None or key < best[0]:
                pieces = [1] * len(shape)
                for i, count in chosen.items():
                    pieces[i] = count
                pieces[axis] = along
                best[0], best[1] = key, tuple(pieces)
            return
        size = shape[others[position]]
        for count in _piece_counts(size):
            if best[0] is not None and count_so_far * count > best[0][0]:
                break
            length = cost(others[position], -(-size // count))
            if length > cap:
                continue
            chosen[others[position]] = count
            search(position + 1, cap // length, chosen, count_so_far * count)
            del chosen[others[position]]

    search(0, budget, {}, 1)
    if best[1] is None:  # unreachable for budget >= 2: all-ones pieces always fit
        raise AssertionError(f"no split of {shape} on axis {axis} within {budget}")
    return SplitPlan(shape, axis, best[1], lanes)


def emit_split_cumsum(b: GraphBuilder, x: gs.Tensor, plan: SplitPlan, output: gs.Variable) -> int:
    """Add the pieces for one CumSum; the result is written into ``output``. Returns #CumSum."""
    cut_axes = [i for i, count in enumerate(plan.pieces) if count > 1 and i != plan.axis]
    cumsums = 0

    def along_summed_axis(piece: gs.Tensor, out: Optional[gs.Variable]) -> gs.Tensor:
        nonlocal cumsums
        bounds = plan.bounds(plan.axis)
        if len(bounds) == 1:
            cumsums += 1
            return b.node("CumSum", [piece, b.ints(plan.axis)], output=out)
        results, carry = [], None
        for start, end in bounds:
            part = b.slice(piece, start, end, plan.axis)
            if carry is None:
                summed = b.cumsum(part, plan.axis)
                results.append(summed)
                length = end - start
            else:
                summed = b.cumsum(b.concat([carry, part], plan.axis), plan.axis)
                length = end - start + 1
                results.append(b.slice(summed, 1, length, plan.axis))
            cumsums += 1
            if end < plan.shape[plan.axis]:
                carry = b.slice(summed, length - 1, length, plan.axis)
        return b.concat(results, plan.axis, output=out)

    def over_axes(piece: gs.Tensor, depth: int, out: Optional[gs.Variable]) -> gs.Tensor:
        if depth == len(cut_axes):
            return along_summed_axis(piece, out)
        cut = cut_axes[depth]
        parts = [over_axes(b.slice(piece, start, end, cut), depth + 1, None) for start, end in plan.bounds(cut)]
        return b.concat(parts, cut, output=out)

    over_axes(x, 0, output)
    return cumsums


@register_pass
class SplitCumSum(NodeRewrite, op="CumSum", shapes="static", counted_as="split"):
    """Cut CumSum ops whose input exceeds the local-memory budget into chained pieces."""

    name = "split-cumsum"
    description = ("cut CumSum ops over `budget` elements per NPU lane into pieces "
                   "(other axes first, then the summed axis with a carry)")

    budget = Option(int, DEFAULT_BUDGET, "largest CumSum, in elements per NPU lane, left whole", min=2)
    lanes = Option(int, DEFAULT_LANES, "NPU lanes the other axes are spread over", min=1)

    def check(self, node: gs.Node, shapes) -> Kept | SplitPlan:
        found = cumsum_shape_and_axis(node, shapes)
        if isinstance(found, str):
            return self.left_alone(node, f"{found} (run fold-constants/simplify first, or export with static shapes)")
        shape, axis = found
        if footprint(shape, axis, self.lanes) <= self.budget:
            return Kept()
        if node.attrs.get("exclusive", 0) or node.attrs.get("reverse", 0):
            return self.left_alone(node, "exclusive/reverse CumSum (run cumsum-plain first)")
        # Each piece holds at most `budget`: at least footprint / budget of them (declared dims need no
        # data: a (1, 1, 2^31 - 1) input would be 524,416 pieces, millions of nodes).
        fewest = -(-footprint(shape, axis, self.lanes) // self.budget)
        plan = plan_split(shape, axis, self.budget, self.lanes) if fewest <= MAX_PIECES else None
        if plan is None or plan.total_pieces > MAX_PIECES:
            # The plan's own count when there is one: footprint / budget is only a lower bound
            # (carry rows and uneven cuts add pieces).
            pieces_needed = plan.total_pieces if plan is not None else fewest
            return self.left_alone(node, f"{list(shape)} axis {axis} needs at least {pieces_needed} pieces within the "
                                         f"budget, more than the {MAX_PIECES} a CumSum is cut into")
        return plan

    def replace(self, b: GraphBuilder, node: gs.Node, plan: SplitPlan, output: gs.Variable) -> dict:
        return {"pieces": emit_split_cumsum(b, node.inputs[0], plan, output), "carried": plan.carried,
                "largest_piece": plan.largest_piece_footprint(),
                "note": f"{describe(node)} {list(plan.shape)} axis {plan.axis}: {plan.total_pieces} pieces "
                        f"(per axis {list(plan.pieces)}), largest {list(plan.largest_piece_shape())} "
                        f"= {plan.largest_piece_footprint()} per lane"}

    def summarize(self, rewritten: int, kept: int, sites: list[dict]) -> dict:
        if not rewritten:
            return {"split": 0, "pieces": 0}
        return {"split": rewritten, "pieces": sum(site["pieces"] for site in sites),
                "carried": sum(site["carried"] for site in sites),
                "largest_piece": max(site["largest_piece"] for site in sites)}

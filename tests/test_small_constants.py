"""patterns/small_constants.py: index and shape arithmetic evaluated in numpy from constants only.

Each op is checked against ONNX Runtime on the spellings the exporters write and the
corners they may (negative axes and indices, clamped Shape bounds, a 0 in a Reshape target, default
attributes); the caps are checked at their edges: MAX_ELEMENTS elements are made, one more is not,
and what an op would make is counted before it is allocated.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from patterns.small_constants import MAX_DEPTH, MAX_ELEMENTS, _elements_made, small_value
from scan_testing import run

# Every case: ONNX text of a graph with no inputs (every leaf an initializer), the outputs to evaluate.
CASES = {
    "shape": """
        <ir_version: 8, opset_import: ["" : 17]>
        g () => (int64[4] all, int64[2] middle, int64[2] last_two, int64[4] clamped, int64[0] empty, int64[1] one,
                 int64[0] up_to_0)
            <float[2,3,4,5] x = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}> {
            all = Shape(x)
            middle = Shape<start = 1, end = -1>(x)
            last_two = Shape<start = -2>(x)
            clamped = Shape<start = -10, end = 10>(x)
            empty = Shape<start = 3, end = 1>(x)
            one = Shape<start = 0, end = 1>(x)
            up_to_0 = Shape<end = 0>(x)
        }""",
    "gather": """
        <ir_version: 8, opset_import: ["" : 17]>
        g () => (int64[3,2] columns, int64[4] row, int64[3] last_column, int64[2,2,4] rows)
            <int64[3,4] data = {0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23}, int64[2] pick = {-1, 0},
             int64 two = {2}, int64 minus_one = {-1}, int64[2,2] grid = {0, 2, 1, -1}> {
            columns = Gather<axis = 1>(data, pick)
            row = Gather(data, two)
            last_column = Gather<axis = -1>(data, minus_one)
            rows = Gather<axis = 0>(data, grid)
        }""",
    "slice": """
        <ir_version: 8, opset_import: ["" : 17]>
        g () => (int64[4,3] backwards, int64[2,4] defaults, int64[4,2] last_axis, int64[4,6] flipped,
                 int64[1,6] first_row, int64[4,0] nothing, int64[4,2] head, int64[4,0] up_to_0, int64[4,0] before_0,
                 int64[4,2] down_to_1, int64[4,0] empty_backwards, int64[2,6] stepped_no_axes)
            <int64[4,6] data = {0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 20, 21, 22, 23, 24, 25,
                                30, 31, 32, 33, 34, 35},
             int64[1] from_end = {-1}, int64[1] before_start = {-100}, int64[1] axis1 = {1}, int64[1] minus_two = {-2},
             int64[2] starts = {1, 2}, int64[2] ends = {3, 9223372036854775807}, int64[1] minus_one = {-1},
             int64[1] four = {4}, int64[1] axis0 = {0}, int64[1] lowest = {-9223372036854775807},
             int64[1] below_start = {-10}, int64[1] zero = {0}, int64[1] two = {2}> {
            backwards = Slice(data, from_end, before_start, axis1, minus_two)
            defaults = Slice(data, starts, ends)
            last_axis = Slice(data, four, from_end, minus_one)
            flipped = Slice(data, from_end, lowest, axis1, minus_one)
            first_row = Slice(data, below_start, lowest, axis0, minus_one)
            nothing = Slice(data, zero, two, axis1, minus_one)
            head = Slice(data, zero, two, axis1)
            up_to_0 = Slice(data, zero, zero, axis1)
            before_0 = Slice(data, zero, before_start, axis1)
            down_to_1 = Slice(data, two, zero, axis1, minus_one)
            empty_backwards = Slice(data, from_end, from_end, axis1, minus_one)
            stepped_no_axes = Slice(data, from_end, lowest, , minus_two)
        }""",
    "concat-unsqueeze-squeeze": """
        <ir_version: 8, opset_import: ["" : 17]>
        g () => (int64[2,3] joined, int64[1,2,1] around, int64[2] squeezed_all, int64[1,2] squeezed_one)
            <int64[2,1] left = {1, 2}, int64[2,2] right = {3, 4, 5, 6}, int64[2] ends = {-1, 0},
             int64[1,2,1] boxed = {7, 8}, int64[1] minus_one = {-1}, int64[2] pair = {7, 8}> {
            joined = Concat<axis = -1>(left, right)
            around = Unsqueeze(pair, ends)
            squeezed_all = Squeeze(boxed)
            squeezed_one = Squeeze(boxed, minus_one)
        }""",
    "unsqueeze-attribute": """
        <ir_version: 7, opset_import: ["" : 11]>
        g () => (int64[2,1,1] twice, int64[2] back)
            <int64[2] pair = {7, 8}, int64[1,2,1] boxed = {7, 8}> {
            twice = Unsqueeze<axes = [1, -1]>(pair)
            back = Squeeze<axes = [0, -1]>(boxed)
        }""",
    "reshape-expand": """
        <ir_version: 8, opset_import: ["" : 17]>
        g () => (int64[3,2] kept, int64[0,3] zero_size, int64[2,3,4] widened, int64[3,2] ones)
            <int64[2,3] data = {1, 2, 3, 4, 5, 6}, int64[2] keep_first = {0, -1}, int64[2] by_zero = {0, 3},
             int64[3,1] column = {1, 2, 3}, int64[3] to = {2, 1, 4}, int64[1] one = {5}, int64[2] three_two = {3, 2},
             int64[0,2] nothing = {}, int64[2] as_is = {2, 3}> {
            flat = Reshape(data, keep_first)
            kept = Reshape(flat, three_two)
            empty = Reshape<allowzero = 1>(nothing, by_zero)
            zero_size = Identity(empty)
            widened = Expand(column, to)
            ones = Expand(one, three_two)
        }""",
    "constant-of-shape": """
        <ir_version: 8, opset_import: ["" : 17]>
        g () => (int64[2,3] sevens, float[3] zeros, int64[0,3] none)
            <int64[2] two_three = {2, 3}, int64[1] three = {3}, int64[2] zero_three = {0, 3}> {
            sevens = ConstantOfShape<value = int64[1] {7}>(two_three)
            zeros = ConstantOfShape(three)
            none = ConstantOfShape<value = int64[1] {7}>(zero_three)
        }""",
    "arithmetic": """
        <ir_version: 8, opset_import: ["" : 17]>
        g () => (int64[2,3] product, int64[2,3] total, int64[2,3] difference, bool[2,3] same, int64[2,3] picked,
                 int32[3] narrow, float[3] real, int64[3,2] swapped, int64[2,3] back, int64[2] copied)
            <int64[2,1] column = {2, 3}, int64[3] row = {3, 4, 5}, bool[3] mask = {1, 0, 1}, int64 minus = {-1},
             int64[2,3] block = {1, 2, 3, 4, 5, 6}> {
            product = Mul(column, row)
            total = Add(column, row)
            difference = Sub(row, column)
            same = Equal(column, row)
            picked = Where(mask, product, minus)
            narrow = Cast<to = 6>(row)
            real = Cast<to = 1>(row)
            swapped = Transpose<perm = [1, 0]>(block)
            reversed = Transpose(block)
            back = Transpose(reversed)
            copied = Identity(column_flat)
            column_flat = Squeeze(column)
        }""",
    # s29: the ops a trip count and an If's cond are computed with (TorchScript's `range(1, length)` is
    # Cast(Ceil(Div(Cast(Sub(length, 1)), 1))), its `if length > 1:` Cast(Greater(length, 1))); before, small_value
    # gave None for every one of these outputs (unroll-loops had its own evaluator for the first six)
    "trip-counts-and-conditions": """
        <ir_version: 8, opset_import: ["" : 17]>
        g () => (float[4] up, float[4] down, int64[4] truncated, float[4] halves, int64[4] largest, int64[4] smallest,
                 int64[4] negated, int64[4] magnitude, bool[4] greater, bool[4] less, bool[4] at_least,
                 bool[4] at_most, bool[4] inverted, bool[4] both, bool[4] either, bool[4] one_of, int64 count)
            <float[4] real = {-1.5, -0.5, 0.5, 2.25}, int64[4] ints = {-7, -1, 7, 9}, int64[4] by = {2, -2, -2, 4},
             int64 one = {1}, int64[4] tens = {10, -10, 10, 0}, bool[4] mask = {1, 0, 1, 0},
             bool[4] other = {1, 1, 0, 0}, int64 length = {10}, float step = {3.0}> {
            up = Ceil(real)
            down = Floor(real)
            truncated = Div(ints, by)
            halves = Div(real, real)
            largest = Max(ints, one, by)
            smallest = Min(ints, tens)
            negated = Neg(ints)
            magnitude = Abs(ints)
            greater = Greater(ints, one)
            less = Less(ints, by)
            at_least = GreaterOrEqual(ints, tens)
            at_most = LessOrEqual(by, ints)
            inverted = Not(mask)
            both = And(mask, other)
            either = Or(mask, other)
            one_of = Xor(mask, other)
            from_one = Sub(length, one)
            as_real = Cast<to = 1>(from_one)
            steps = Div(as_real, step)
            steps_up = Ceil(steps)
            count = Cast<to = 7>(steps_up)
        }""",
    # s33: TorchScript's index_copy shapes its indices as the buffer's shape with 1 at the axis, written so
    "scatter_elements": """
        <ir_version: 8, opset_import: ["" : 17]>
        g () => (int64[3] one_at_axis, int64[3] from_the_end, int64[2,3] rows, float[2,2] columns)
            <int64[3] shape = {2, 10, 8}, int64[1] axis = {1}, int64[1] last = {-1}, int64[1] five = {5},
             int64[2,3] data = {1, 2, 3, 4, 5, 6}, int64[1,2] where = {2, 0}, int64[1,2] what = {7, 9},
             float[2,2] x = {1.0, 2.0, 3.0, 4.0}, int64[2,1] at = {1, -2}, float[2,1] put = {8.0, 9.0}> {
            one_at_axis = ScatterElements<axis = 0>(shape, axis, axis)
            from_the_end = ScatterElements<axis = 0>(shape, last, five)
            rows = ScatterElements<axis = 1>(data, where, what)
            columns = ScatterElements<axis = 1>(x, at, put)
        }""",
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_op_evaluates_as_onnx_does(case):
    """Before: a Slice of negative step that reaches element 0 (a flip's spelling: start -1, end -2^63 + 1,
    step -1) was empty, its Python bounds (5, -1, -2) read again as a slice, -1 the last element."""
    model = onnx.parser.parse_model(CASES[case])
    graph = gs.import_onnx(model)
    graph.toposort()
    model = gs.export_onnx(graph)
    expected = run(model, {})
    tensors = graph.tensors()
    for output, want in zip(model.graph.output, expected):
        got = small_value(tensors[output.name])
        assert got is not None, output.name
        assert got.dtype == want.dtype and got.shape == want.shape, (output.name, got, want)
        np.testing.assert_array_equal(got, want, err_msg=output.name)


def test_a_shape_reads_a_stand_in_of_the_tensor_and_nothing_else():
    """Shape(x) of a graph input: its stand-in's shape when one is bound, else None; Shape(x)'s consumers
    too (a Gather of it): the stand-in's values are never read."""
    x = gs.Variable("x", np.float32, [2, 3, 4])
    dims = gs.Variable("dims")
    second = gs.Variable("second")
    gs.Graph(nodes=[gs.Node("Shape", inputs=[x], outputs=[dims]),
                    gs.Node("Gather", inputs=[dims, gs.Constant("one", np.array(1, np.int64))], outputs=[second])],
             inputs=[x], outputs=[second])
    assert small_value(second) is None
    stand_in = np.broadcast_to(np.zeros((), np.float32), (2, 3, 4))
    assert small_value(second, {id(x): stand_in}).tolist() == 3
    np.testing.assert_array_equal(small_value(dims, {id(x): stand_in}), [2, 3, 4])


def test_an_input_that_is_not_known_gives_none():
    """Any op but Shape needs the values of all its inputs: Add(constant, graph input) is None, and so is an
    op outside EVALUATED_OPS (Mod; Div is evaluated since s29) of two constants, and an integer Div by zero."""
    x = gs.Variable("x", np.int64, [2])
    added, remainder, by_zero = gs.Variable("added"), gs.Variable("remainder"), gs.Variable("by_zero")
    two = gs.Constant("two", np.array([2, 2], np.int64))
    zero = gs.Constant("zero", np.array([1, 0], np.int64))
    gs.Graph(nodes=[gs.Node("Add", inputs=[two, x], outputs=[added]),
                    gs.Node("Mod", inputs=[two, two], outputs=[remainder]),
                    gs.Node("Div", inputs=[two, zero], outputs=[by_zero])], inputs=[x],
             outputs=[added, remainder, by_zero])
    assert small_value(added) is None
    assert small_value(remainder) is None
    assert small_value(by_zero) is None
    assert small_value(None) is None


def _chain(length: int) -> gs.Tensor:
    """Identity applied `length` times to a constant."""
    tensor, nodes = gs.Constant("seed", np.array([5], np.int64)), []
    for i in range(length):
        out = gs.Variable(f"i{i}")
        nodes.append(gs.Node("Identity", inputs=[tensor], outputs=[out]))
        tensor = out
    gs.Graph(nodes=nodes, outputs=[tensor])
    return tensor


def test_a_chain_is_followed_up_to_max_depth_producers():
    assert MAX_DEPTH == 32
    assert small_value(_chain(MAX_DEPTH)).tolist() == [5]
    assert small_value(_chain(MAX_DEPTH + 1)) is None


def _one_op(op: str, inputs: list[np.ndarray], **attrs) -> tuple[gs.Node, gs.Tensor]:
    out = gs.Variable("out")
    node = gs.Node(op, inputs=[gs.Constant(f"in{i}", value) for i, value in enumerate(inputs)], outputs=[out],
                   attrs=attrs)
    gs.Graph(nodes=[node], outputs=[out])
    return node, out


@pytest.mark.parametrize("op, inputs, attrs", [
    ("ConstantOfShape", [np.array([1 << 11, 1 << 11], np.int64)], {}),
    ("Expand", [np.ones((1, 1 << 11), np.int32), np.array([1 << 11, 1], np.int64)], {}),
    ("Mul", [np.ones((1 << 11, 1), np.int32), np.ones((1, 1 << 11), np.int32)], {}),
    ("Gather", [np.ones((1, 1 << 10), np.int32), np.zeros(1 << 12, np.int64)], {"axis": 0}),
])
def test_max_elements_are_made_and_one_more_row_is_not(op, inputs, attrs):
    """The cap is inclusive: an op that makes exactly MAX_ELEMENTS (4M) elements is evaluated; with one
    more row (2^11 or 2^10 more elements) it is not."""
    assert MAX_ELEMENTS == 1 << 22
    node, out = _one_op(op, inputs, **attrs)
    value = small_value(out)
    assert value is not None and value.size == MAX_ELEMENTS
    if op == "ConstantOfShape":
        grown = [np.array([(1 << 11) + 1, 1 << 11], np.int64)]
    elif op == "Expand":
        grown = [inputs[0], np.array([(1 << 11) + 1, 1], np.int64)]
    elif op == "Mul":
        grown = [np.ones(((1 << 11) + 1, 1), np.int32), inputs[1]]
    else:
        grown = [inputs[0], np.zeros((1 << 12) + 1, np.int64)]
    _, out = _one_op(op, grown, **attrs)
    assert small_value(out) is None


def test_a_constant_larger_than_the_cap_is_not_handed_out():
    big = gs.Constant("big", np.zeros(MAX_ELEMENTS + 1, np.int8))
    assert small_value(big) is None
    assert small_value(gs.Constant("fits", np.zeros(MAX_ELEMENTS, np.int8))).size == MAX_ELEMENTS


@pytest.mark.parametrize("op, inputs, attrs, made", [
    ("ConstantOfShape", [np.array([3, 5, 7], np.int64)], {}, 105),
    ("ConstantOfShape", [np.array([4, -2], np.int64)], {}, 0),      # a negative size makes nothing, not -8
    ("Expand", [np.ones((3, 1), np.int64), np.array([2, 1, 4], np.int64)], {}, 24),
    ("Expand", [np.ones((3, 5), np.int64), np.array([1, 1], np.int64)], {}, 15),
    ("Expand", [np.ones((1, 3), np.int64), np.array([0, 3], np.int64)], {}, 0),
    ("Gather", [np.ones((1, 5), np.int64), np.zeros(7, np.int64)], {"axis": 0}, 35),
    ("Gather", [np.ones((3, 4, 5), np.int64), np.zeros((2, 6), np.int64)], {"axis": 1}, 3 * 5 * 12),
    ("Gather", [np.ones((3, 4, 5), np.int64), np.zeros(7, np.int64)], {}, 4 * 5 * 7),
    ("Gather", [np.ones((3, 0, 5), np.int64), np.zeros(7, np.int64)], {"axis": 1}, 0),
    ("Mul", [np.ones((6, 1)), np.ones((1, 7))], {}, 42),
    ("Add", [np.ones((6, 1)), np.ones(7)], {}, 42),
    ("Sub", [np.ones(1), np.ones((2, 3))], {}, 6),
    ("Equal", [np.ones((2, 1, 3)), np.ones((4, 1))], {}, 24),
    ("Where", [np.ones((5, 1), bool), np.ones(3), np.ones((2, 1, 1))], {}, 30),
    ("Max", [np.ones((5, 1)), np.ones(3), np.ones((2, 1, 1))], {}, 30),     # s29: the trip-count ops broadcast too
    ("Div", [np.ones((6, 1)), np.ones(7)], {}, 42),
    ("Greater", [np.ones((2, 1, 3)), np.ones((4, 1))], {}, 24),
    ("Or", [np.ones((2, 1), bool), np.ones(5, bool)], {}, 10),
    ("Neg", [np.ones((2, 3))], {}, 0),                               # makes what it reads
    ("Concat", [np.ones(3), np.ones(4)], {"axis": 0}, 7),
    ("Transpose", [np.ones((2, 3))], {}, 0),                         # makes what it reads: not counted
])
def test_what_an_op_would_make_is_counted_before_it_is_made(op, inputs, attrs, made):
    """The count the cap is checked against before anything is allocated: the output's element count for
    the ops that can make more than they read."""
    node, _ = _one_op(op, inputs, **attrs)
    assert _elements_made(node, inputs) == made


@pytest.mark.parametrize("op, inputs", [
    ("ConstantOfShape", [np.array([1 << 20, 1 << 20], np.int64)]),
    ("Expand", [np.ones((1, 1), np.int64), np.array([1 << 20, 1 << 20], np.int64)]),
    ("Mul", [np.ones((1 << 12, 1), np.int64), np.ones((1, 1 << 12), np.int64)]),
    ("Gather", [np.ones((2, 4), np.int64), np.zeros(1 << 21, np.int64)]),
])
def test_a_hostile_op_is_refused_before_numpy_is_asked_for_its_output(op, inputs, monkeypatch):
    """Refused from the count alone: numpy's allocating calls are never made (each raises here), so numpy
    is never asked for a ConstantOfShape of (2^20, 2^20), 4 TiB."""
    node, out = _one_op(op, inputs)

    def refuse(*args, **kwargs):
        raise AssertionError(f"{op}: numpy was asked to allocate")

    for name in ("full", "broadcast_to", "take", "multiply"):
        monkeypatch.setattr(np, name, refuse)
    assert small_value(out) is None


def test_a_tensor_read_twice_is_evaluated_once(monkeypatch):
    """x_{k+1} = Add(x_k, x_k), 16 deep: 16 evaluations, not 2^16 (each tensor's value is remembered; a
    hostile graph of 32 such levels would otherwise take 2^32)."""
    import patterns.small_constants as small_constants

    evaluated = []
    evaluate = small_constants._evaluate
    monkeypatch.setattr(small_constants, "_evaluate", lambda node, inputs: evaluated.append(node) or evaluate(node, inputs))
    tensor, nodes = gs.Constant("seed", np.array([3], np.int64)), []
    for k in range(16):
        out = gs.Variable(f"x{k}")
        nodes.append(gs.Node("Add", inputs=[tensor, tensor], outputs=[out]))
        tensor = out
    gs.Graph(nodes=nodes, outputs=[tensor])
    assert small_value(tensor).tolist() == [3 << 16]
    assert len(evaluated) == 16


@pytest.mark.parametrize("indices, reduction", [(np.array([3], np.int64), "none"), (np.array([-4], np.int64), "none"),
                                                (np.array([1], np.int64), "add")])
def test_scatter_elements_out_of_range_or_reducing_is_not_evaluated(indices, reduction):
    # ONNX Runtime refuses an index outside [-3, 3) of an axis of 3; a reduction is no copy: neither is evaluated
    data = gs.Constant("data", np.array([2, 10, 8], np.int64))
    out = gs.Variable("out")
    attrs = {"axis": 0} if reduction == "none" else {"axis": 0, "reduction": reduction}
    gs.Graph(nodes=[gs.Node("ScatterElements", attrs=attrs, inputs=[data, gs.Constant("i", indices),
                                                                      gs.Constant("u", np.array([1], np.int64))],
                            outputs=[out])], outputs=[out])
    assert small_value(out) is None

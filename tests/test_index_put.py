"""patterns/index_put.axis_size: a buffer's size along its written axis, followed back to a declared size (a
TorchScript dynamic-batch export declares no intermediate shapes): RecurrentGemma's buffer is zeros_like of its causal
Conv's output cut to the sequence length, Transpose(Slice(Conv(Transpose(embed[ids])), 0, Shape(h)[1], axis 2))."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from patterns.index_put import axis_size, index_put_position
from patterns.ranks import RankMap

L, WIDTH = 8, 4


def _conv_buffer(pads=(3, 3), stride=1, dilation=1, end=None, slice_step=None):
    """zeros_like(Transpose(Slice(Conv(Transpose(Gather(embedding, ids))), 0, end, axis 2))), ids ("batch", L); end:
    None for Shape(h)[1] (L), "bool" for Cast(Cast(Shape(h)[1], bool), int64) (1), else a constant; slice_step
    "input": the graph input "step"."""
    ids = gs.Variable("ids", np.int64, ["batch", L])
    inputs = [ids]
    embedding = gs.Constant("embedding", np.zeros((16, WIDTH), np.float32))
    weight = gs.Constant("weight", np.zeros((WIDTH, 1, 4), np.float32))
    h, moved, conv, cut, back, shape, zeros = (gs.Variable(name) for name in
                                               ("h", "moved", "conv", "cut", "back", "shape", "zeros"))
    nodes = [gs.Node("Gather", inputs=[embedding, ids], outputs=[h], attrs={"axis": 0}),
             gs.Node("Transpose", inputs=[h], outputs=[moved], attrs={"perm": [0, 2, 1]}),
             gs.Node("Conv", inputs=[moved, weight], outputs=[conv],
                     attrs={"group": WIDTH, "kernel_shape": [4], "pads": list(pads), "strides": [stride],
                            "dilations": [dilation]})]
    if end in (None, "bool"):
        h_shape, length, ends = gs.Variable("h_shape"), gs.Variable("length"), gs.Variable("ends")
        nodes += [gs.Node("Shape", inputs=[h], outputs=[h_shape]),
                  gs.Node("Gather", inputs=[h_shape, gs.Constant("one", np.array(1, np.int64))], outputs=[length],
                          attrs={"axis": 0})]
        if end == "bool":
            flag, cast = gs.Variable("flag"), gs.Variable("cast")
            nodes += [gs.Node("Cast", inputs=[length], outputs=[flag], attrs={"to": TensorProto.BOOL}),
                      gs.Node("Cast", inputs=[flag], outputs=[cast], attrs={"to": TensorProto.INT64})]
            length = cast
        nodes.append(gs.Node("Unsqueeze", inputs=[length, gs.Constant("zero_axis", np.array([0], np.int64))],
                             outputs=[ends]))
    else:
        ends = gs.Constant("ends", np.array([end], np.int64))
    slice_inputs = [conv, gs.Constant("starts", np.array([0], np.int64)), ends, gs.Constant("axes", np.array([2]))]
    if slice_step == "input":
        inputs.append(gs.Variable("step", np.int64, [1]))
        slice_inputs.append(inputs[-1])
    elif slice_step is not None:
        slice_inputs.append(gs.Constant("steps", np.array([slice_step], np.int64)))
    nodes += [gs.Node("Slice", inputs=slice_inputs, outputs=[cut]),
              gs.Node("Transpose", inputs=[cut], outputs=[back], attrs={"perm": [0, 2, 1]}),
              gs.Node("Shape", inputs=[back], outputs=[shape]),
              gs.Node("ConstantOfShape", inputs=[shape], outputs=[zeros])]
    graph = gs.Graph(nodes=nodes, inputs=inputs, outputs=[zeros], opset=17)
    return graph, graph.tensors()


@pytest.mark.parametrize("kwargs, axis, expected", [
    ({}, 1, L),                                   # Slice(conv (L + 3), 0, Shape(h)[1] = L)
    ({}, 2, WIDTH),                               # the Conv's output channels, through the Transpose
    ({"end": 100}, 1, L + 3),                     # an end past the size: the size
    ({"end": 5}, 1, 5),
    ({"pads": (0, 0), "end": 100}, 1, L - 3),     # no padding: L - k + 1
    ({"stride": 2, "end": 100}, 1, (L + 6 - 4) // 2 + 1),
    ({"dilation": 2, "end": 100}, 1, L + 6 - 7 + 1),
    ({"slice_step": 2}, 1, None),                 # a strided Slice: not followed
    ({"slice_step": "input"}, 1, None),           # a step known at run time only: may be 2 (s23, was taken as 1)
    ({"end": "bool"}, 1, None),                   # an end through a Cast to bool is 1, not L (s23, was L)
    ({}, 0, None),                                # the batch: named, no size
])
def test_axis_size_follows_a_declared_size_through_the_ops_that_keep_or_change_it(kwargs, axis, expected):
    graph, tensors = _conv_buffer(**kwargs)
    assert axis_size(tensors["zeros"], axis, RankMap(graph)) == expected


# -- index_put_position: the proof that TorchScript's dynamic-batch index tuples are a whole slice (session s24) -----

def _index_tuples_model(columns=2, written=1, position=3, spoil=None, extra_adds=0) -> onnx.ModelProto:
    """TorchScript's dynamic-batch index tuples of `out[:, .., p, .., :] = y` over a buffer of symbolic sizes: the
    constant p (shape (1,) * (columns - written)) at column `written`, every other column j Reshape(Range(0,
    Cast(Shape(buffer)[j]), 1), [-1, 1 ..]) (the Range itself for the last column), T = Where(Equal(S, Mul(ones, -1)),
    ones, S) of S = Shape(the columns' sum) (plus `extra_adds` Adds of a constant 0 of shape (1,)), indices =
    Concat(Unsqueeze(Expand(column, T), -1) ..). `spoil` changes one thing (each a near miss)."""
    last = columns - 1
    inits = {"zero": np.array(0, np.int64), "one": np.array(1, np.int64), "minus1": np.array(-1, np.int64),
             "nought": np.array(0, np.int64), "last_axis": np.array([-1], np.int64),
             "first_axis": np.array([0], np.int64), "columns_axis": np.array([columns], np.int64),
             "p": np.full((1,) * (columns - written), position, np.int64), "zeros1": np.zeros(1, np.int64),
             "ones_deep": np.ones((1,) * (columns + 1), np.int64), "fixed_rows": np.arange(2, dtype=np.int64),
             "fixed_target": np.array([2] + [1] * last, np.int64), "ones_vector": np.ones(columns, np.int64)}
    inputs = [helper.make_tensor_value_info("buffer", TensorProto.FLOAT, [f"n{i}" for i in range(3)])]
    nodes = [helper.make_node("Shape", ["buffer"], ["shape"])]
    if spoil == "size-of-another-tensor":
        inputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [f"m{i}" for i in range(3)]))
        nodes.append(helper.make_node("Shape", ["other"], ["other_shape"]))
    if spoil == "shape-from-axis-1":
        nodes.append(helper.make_node("Shape", ["buffer"], ["shape_from_1"], start=1))
    column_names, summed = [], None
    for j in range(columns):
        if j == written:
            column = "p"
        else:
            first = j == min(k for k in range(columns) if k != written)
            shape = ("other_shape" if spoil == "size-of-another-tensor" and first else
                     "shape_from_1" if spoil == "shape-from-axis-1" and first else "shape")
            inits[f"axis{j}"] = np.array(j, np.int64)   # of Shape(buffer, start=1): the size of axis j + 1
            inits[f"target{j}"] = np.array([-1] + [1] * (last - j), np.int64)
            nodes += [helper.make_node("Gather", [shape, f"axis{j}"], [f"size{j}"], axis=0),
                      helper.make_node("Cast", [f"size{j}"], [f"size64_{j}"], to=TensorProto.INT64)]
            if spoil == "clip-for-range" and first:
                nodes.append(helper.make_node("Clip", ["zero", f"size64_{j}", "one"], [f"range{j}"]))
            else:
                nodes.append(helper.make_node("Range", ["zero", f"size64_{j}", "one"], [f"range{j}"]))
            column = f"range{j}"
            if spoil == "constant-rows" and first:
                column = "fixed_rows"   # the batch at export time, a constant
            if j != last and not (spoil == "range-not-reshaped" and first):
                nodes.append(helper.make_node("Reshape", [column, f"target{j}"], [f"v{j}"]))
                column = f"v{j}"
        column_names.append(column)
        if summed is None:
            summed = column
        else:
            nodes.append(helper.make_node("Add", [summed, column], [f"sum{j}"]))
            summed = f"sum{j}"
    for k in range(extra_adds):
        nodes.append(helper.make_node("Add", [summed, "zeros1"], [f"plus{k}"]))
        summed = f"plus{k}"
    if spoil == "deeper-ones-in-the-tree":   # T an axis longer than the tuples: Concat's axis `columns` is not the last
        nodes.append(helper.make_node("Add", [summed, "ones_deep"], ["deeper"]))
        summed = "deeper"
    nodes += [helper.make_node("Shape", [summed], ["S"]), helper.make_node("Shape", ["S"], ["S_len"]),
              helper.make_node("ConstantOfShape", ["S_len"], ["ones"],
                               value=numpy_helper.from_array(np.array([1], np.int64)))]
    factor = {"minus-zero": "nought", "minus-computed": "factor"}.get(spoil, "minus1")
    if spoil == "minus-computed":
        inputs.append(helper.make_tensor_value_info("factor", TensorProto.INT64, []))
    nodes.append(helper.make_node("Add" if spoil == "minus-by-add" else "Mul", ["ones", factor], ["minus"]))
    nodes.append(helper.make_node("Greater" if spoil == "greater-for-equal" else "Equal", ["S", "minus"], ["eq"]))
    other = "ones_vector" if spoil == "where-else-a-constant" else "ones"
    nodes.append(helper.make_node("Where", ["eq", other, "S"], ["where"]))
    target = {"no-where": "S", "constant-target": "fixed_target"}.get(spoil, "where")
    unsqueezed = []
    for j, column in enumerate(column_names):
        axes = {"unsqueeze-first": "first_axis", "unsqueeze-at-columns": "columns_axis"}.get(spoil, "last_axis")
        nodes += [helper.make_node("Expand", [column, target], [f"e{j}"]),
                  helper.make_node("Unsqueeze", [f"e{j}", axes], [f"u{j}"])]
        unsqueezed.append(f"u{j}")
    concat_axis = {"concat-first": 0, "concat-at-columns": columns, "deeper-ones-in-the-tree": columns}.get(spoil, -1)
    if spoil == "gather-for-concat":
        nodes.append(helper.make_node("Gather", unsqueezed[:2], ["indices"], axis=-1))
    else:
        nodes.append(helper.make_node("Concat", unsqueezed, ["indices"], axis=concat_axis))
    graph = helper.make_graph(nodes, "index_tuples", inputs,
                              [helper.make_tensor_value_info("indices", TensorProto.INT64, None)],
                              [numpy_helper.from_array(value, name) for name, value in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _proven(model: onnx.ModelProto):
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    return index_put_position(tensors["indices"], {id(tensors["buffer"])})


def _tuples(model: onnx.ModelProto, shape) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"buffer": np.zeros(shape, np.float32)})[0]


def _whole_slice(columns: int, written: int, position: int, shape) -> np.ndarray:
    """(i_0, .., p, .., i_{k-1}) at index (i_0, .., 0, .., i_{k-1}): every element of the slice, row-major."""
    grid = list(shape[:columns])
    grid[written] = 1
    expected = np.stack(np.indices(grid), axis=-1)
    expected[..., written] = position
    return expected


@pytest.mark.parametrize("columns, written", [(2, 1), (3, 1), (2, 0), (3, 2), (3, 0)])
@pytest.mark.parametrize("spoil", [None, "no-where", "unsqueeze-at-columns", "concat-at-columns"])
def test_index_tuples_proven_whole_are_the_whole_slice_at_every_size(columns, written, spoil):
    """Every column written (out[p, :], out[:, p], out[:, p, :], out[:, :, p], out[p, :, :]), T with or without its
    Where, the Unsqueeze and the Concat at the positive last axis: proven (axis, p), and ONNX Runtime's tuples are
    exactly the slice at p, in row-major order, at sizes 1, 2 and 5 of every axis."""
    model = _index_tuples_model(columns, written, position=3, spoil=spoil)
    assert _proven(model) == (written, 3)
    for shape in [(2, 5, 4), (1, 4, 6), (5, 7, 2)]:
        np.testing.assert_array_equal(_tuples(model, shape), _whole_slice(columns, written, 3, shape))


def test_a_negative_position_is_read_as_it_is():
    assert _proven(_index_tuples_model(position=-2)) == (1, -2)


@pytest.mark.parametrize("spoil", ["size-of-another-tensor", "shape-from-axis-1", "clip-for-range", "constant-rows",
                                   "greater-for-equal", "where-else-a-constant", "constant-target", "minus-zero",
                                   "minus-by-add", "minus-computed", "unsqueeze-first", "concat-first",
                                   "gather-for-concat", "deeper-ones-in-the-tree"])
def test_near_misses_of_the_index_tuples_are_not_proven(spoil):
    """Rows counted to another tensor's size or to Shape(buffer, start=1)[0], a Clip where the Range was, the rows of
    a constant (the batch at export time); T as Where(Greater(S, -1s)) (the ones everywhere), Where(.., a constant,
    S), a constant, Where(Equal(S, 0s)), -1s made by an Add or by a factor known at run time only; the Unsqueeze or
    the Concat at axis 0, a Gather for the Concat; a T one axis longer than the tuples (ones of rank columns + 1 in
    the sum, so the Concat's axis `columns` is not the last): none is proven."""
    assert _proven(_index_tuples_model(2, 1, spoil=spoil)) is None


def test_a_range_not_reshaped_before_the_last_column_is_not_proven():
    """out[:, p, :] whose first column is Range(n_0) itself, not reshaped to (n_0, 1, 1): it broadcasts against the
    last column's Range, and where the two sizes are equal the tuples are the diagonal (i, p, i), not the slice."""
    model = _index_tuples_model(3, 1, spoil="range-not-reshaped")
    assert _proven(model) is None
    assert _tuples(model, (3, 5, 3)).shape == (1, 3, 3)   # 3 tuples where the slice has 9


def test_the_deeper_ones_near_miss_writes_whole_rows_not_elements():
    """Why the constants in T's sum are at most `columns` axes deep: with a (1, 1, 1) one in out[:, p]'s sum, the
    Concat at axis 2 stacks the columns along T's own unit axis, and the tuples are one index long (whole rows)."""
    assert _tuples(_index_tuples_model(2, 1, spoil="deeper-ones-in-the-tree"), (2, 5, 4)).shape[-1] == 1


@pytest.mark.parametrize("extra_adds, proven", [(7, True), (8, False)])
def test_the_broadcast_tree_is_read_up_to_its_bound(extra_adds, proven):
    """MAX_BROADCAST_TREE ops in the tree whose Shape is T are read, one more is not (out[:, p]'s own Add and
    `extra_adds` more)."""
    from patterns.index_put import MAX_BROADCAST_TREE
    assert MAX_BROADCAST_TREE == 8
    assert (_proven(_index_tuples_model(extra_adds=extra_adds)) is not None) is proven


def test_indices_that_are_a_graph_input_or_columns_that_are_not_expanded_are_not_proven():
    graph = gs.import_onnx(_index_tuples_model())
    tensors = graph.tensors()
    buffers = {id(tensors["buffer"])}
    assert index_put_position(tensors["buffer"], buffers) is None    # no producer at all
    concat = tensors["indices"].inputs[0]
    concat.inputs[0] = tensors["p"]                                   # a column that is no Unsqueeze
    assert index_put_position(tensors["indices"], buffers) is None
    concat.inputs[0] = tensors["u0"]
    tensors["u0"].inputs[0].inputs[0] = tensors["p"]                  # an Unsqueeze of no Expand
    assert index_put_position(tensors["indices"], buffers) is None
    tensors["u0"].inputs[0].inputs[0] = tensors["e0"]
    assert index_put_position(tensors["indices"], buffers) == (1, 3)
    tensors["v0"].inputs[0].inputs[0] = tensors["buffer"]            # Reshape(buffer), no Range
    assert index_put_position(tensors["indices"], buffers) is None
    tensors["e0"].inputs[0].inputs[0] = tensors["buffer"]            # Expand(buffer): no Reshape at all
    assert index_put_position(tensors["indices"], buffers) is None


# -- axis_size, op by op (session s24: mutants of each branch survived the RecurrentGemma-like buffer above) -----------

def _sizes(node_specs, inputs, axes=None):
    """axis_size of the last node's output along each of its axes (or `axes`); node_specs: (op, inputs, attrs),
    an input given by name (a graph input or an earlier node's output) or as a numpy constant; no shape is
    declared past the inputs."""
    tensors = {name: gs.Variable(name, np.float32 if dtype is None else dtype, shape)
               for name, (shape, dtype) in inputs.items()}
    nodes = []
    for index, (op, operands, attrs) in enumerate(node_specs):
        operands = [tensors[x] if isinstance(x, str) else gs.Constant(f"c{index}_{k}", np.asarray(x))
                    for k, x in enumerate(operands)]
        tensors[f"t{index}"] = gs.Variable(f"t{index}")
        nodes.append(gs.Node(op, inputs=operands, outputs=[tensors[f"t{index}"]], attrs=attrs))
    graph = gs.Graph(nodes=nodes, inputs=[tensors[name] for name in inputs], outputs=[nodes[-1].outputs[0]],
                     opset=17)
    ranks = RankMap(graph)
    out = nodes[-1].outputs[0]
    return [axis_size(out, axis, ranks) for axis in (range(ranks.rank(out)) if axes is None else axes)]


X = {"x": ((2, 8, 5), None)}
I64 = np.int64


@pytest.mark.parametrize("specs, inputs, expected", [
    ([("ConstantOfShape", [np.array([2, 0, 5], I64)], {})], {}, [2, 0, 5]),
    ([("Shape", ["x"], {}), ("ConstantOfShape", ["t0"], {})], X, [2, 8, 5]),
    ([("Shape", ["x"], {"start": 1}), ("ConstantOfShape", ["t0"], {})], X, [None, None]),   # not Shape(x): (8, 5)
    ([("Concat", [np.array([2], I64), np.array([3], I64)], {"axis": 0}), ("ConstantOfShape", ["t0"], {})], {},
     [None, None]),
    ([("Cast", ["x"], {"to": TensorProto.FLOAT16})], {"x": (("a", 8, 5), None)}, [None, 8, 5]),
    # broadcasting: the first operand of a size other than 1 there, right-aligned; a size 1 or an axis it lacks
    # passes to the other operand
    ([("Add", [np.zeros((4, 5, 1), np.float32), "x"], {})], {"x": ((3, "b", "c", 7), None)}, [3, 4, 5, 7]),
    ([("Mul", ["x", np.zeros((2, 1), np.float32)], {})], {"x": (("a", "b", "c", 7), None)}, [None, None, 2, 7]),
    ([("Slice", ["x", np.array([1]), np.array([6]), np.array([1])], {})], X, [2, 5, 5]),
    ([("Slice", ["x", np.array([1]), np.array([6]), np.array([1]), np.array([1])], {})], X, [2, 5, 5]),
    ([("Slice", ["x", np.array([2]), np.array([100]), np.array([-2])], {})], X, [2, 6, 5]),
    ([("Slice", ["x", np.array([-3]), np.array([8]), np.array([1])], {})], X, [2, None, 5]),   # a start from the end
    ([("Slice", ["x", np.array([1]), np.array([0]), np.array([1])], {})], X, [2, 0, 5]),
    ([("Slice", ["x", np.array([0, 1]), np.array([1, 4]), np.array([0, 2])], {})], X, [1, 8, 3]),
    ([("Slice", ["x", np.array([0]), np.array([1]), "axes"], {})], {**X, "axes": ((1,), I64)}, [None, None, None]),
    ([("Slice", ["x", np.array([0, 0, 0]), np.array([1, 1, 1])], {})], X, [None, None, None]),   # no axes input
    # the end read from Shape(h)[k] through Gather (its axis omitted), Squeeze, Identity, Unsqueeze
    ([("Shape", ["h"], {}), ("Gather", ["t0", np.array([1], I64)], {}), ("Squeeze", ["t1"], {}),
      ("Identity", ["t2"], {}), ("Unsqueeze", ["t3", np.array([0], I64)], {}),
      ("Slice", ["x", np.array([0]), "t4", np.array([1])], {})], {**X, "h": ((4, 6), None)}, [2, 6, 5]),
    ([("Shape", ["h"], {}), ("Gather", ["t0", np.array(0, I64)], {"axis": 0}),
      ("Unsqueeze", ["t1", np.array([0], I64)], {}), ("Slice", ["x", np.array([0]), "t2", np.array([1])], {})],
     {**X, "h": ((4, 6), None)}, [2, 4, 5]),
    ([("Shape", ["h"], {}), ("Gather", ["t0", "k"], {"axis": 0}), ("Unsqueeze", ["t1", np.array([0], I64)], {}),
      ("Slice", ["x", np.array([0]), "t2", np.array([1])], {})], {**X, "h": ((4, 6), None), "k": ((), I64)},
     [2, None, 5]),                                       # which size of h the end is: known at run time only
    ([("Gather", ["x", np.zeros((4, 6), I64)], {"axis": 1})], X, [2, 4, 6, 5]),
    ([("Gather", ["x", np.zeros(4, I64)], {})], {"x": ((3, 5), None)}, [4, 5]),
    ([("Gather", ["x", np.zeros(4, I64)], {"axis": -1})], X, [2, 8, 4]),
    # MatMul: the left's rows and the right's columns; no batch axis, no 1-D operand's
    ([("MatMul", ["x", np.zeros((5, 3), np.float32)], {})], X, [None, 8, 3]),
    ([("MatMul", ["x", "y"], {})], {"x": ((3, 4), None), "y": ((4, 6), None)}, [3, 6]),
    ([("MatMul", ["x", "y"], {})], {"x": ((3, 4), None), "y": ((4,), None)}, [None]),
    ([("Transpose", ["x"], {})], X, [5, 8, 2]),
    ([("Transpose", ["x"], {"perm": [1, 2, 0]})], X, [8, 5, 2]),
    ([("Expand", ["x", np.array([2, 8, 5], I64)], {})], X, [None, None, None]),
    ([("Pow", ["x", "y"], {})], {"x": ((1, 4), None), "y": ((3, 4), None)}, [None, None]),   # no rule: not MatMul's
])
def test_axis_size_reads_each_op_exactly(specs, inputs, expected):
    assert _sizes(specs, inputs, axes=range(len(expected))) == expected


def test_axis_size_reads_declared_sizes_zero_included_and_nothing_past_the_rank():
    assert _sizes([("Identity", ["x"], {})], {"x": ((0, 3), None)}, axes=[0, 1, 2, -1]) == [0, 3, None, None]


@pytest.mark.parametrize("attrs, kernel", [
    ({"pads": [1, 0, 2, 1], "strides": [2, 3], "dilations": [1, 2]}, (3, 2)),
    ({}, (3, 3)),                                                       # the defaults: no pads, stride 1
    ({"pads": [0, 2, 0, 2], "strides": [1, 2]}, (1, 4)),
])
def test_axis_size_reads_a_convs_output_size_as_onnx_runtime_makes_it(attrs, kernel):
    weight = np.zeros((4, 2) + kernel, np.float32)
    specs = [("Conv", ["x", weight], {"kernel_shape": list(kernel), **attrs})]
    x = np.zeros((1, 2, 9, 7), np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=list(kernel), **attrs)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = list(session.run(None, {"x": x})[0].shape)
    sizes = _sizes(specs, {"x": (x.shape, None)})
    assert sizes == expected and all(type(size) is int for size in sizes)


def test_axis_size_leaves_a_convs_spatial_sizes_with_auto_pad_or_a_computed_weight():
    x = {"x": ((1, 2, 9, 7), None)}
    assert _sizes([("Conv", ["x", np.zeros((4, 2, 3, 3), np.float32)], {"auto_pad": "SAME_UPPER"})], x) == \
        [1, 4, None, None]
    assert _sizes([("Conv", ["x", "w"], {})], {**x, "w": (None, None)}) == [1, None, None, None]


@pytest.mark.parametrize("op", ["Identity", "Add", "Slice-same-axis", "Slice-other-axis", "Slice-to-its-length",
                                "Transpose", "Gather", "MatMul", "Conv-batch", "Conv-spatial", "ConstantOfShape"])
@pytest.mark.parametrize("steps, found", [(33, True), (34, False)])
def test_axis_size_follows_at_most_MAX_SIZE_WALK_producers(op, steps, found):
    """A size 33 ops of one kind back (one per step of the walk) is found, 34 back is not: every kind counts one."""
    from patterns.index_put import MAX_SIZE_WALK
    assert MAX_SIZE_WALK == 32
    specs, previous = [], "x"
    for step in range(steps):
        specs += {
            "Identity": [("Identity", [previous], {})],
            "Add": [("Add", [previous, np.zeros(1, np.float32)], {})],
            "Slice-same-axis": [("Slice", [previous, np.array([0]), np.array([100]), np.array([1])], {})],
            "Slice-other-axis": [("Slice", [previous, np.array([0]), np.array([100]), np.array([2])], {})],
            "Slice-to-its-length": [("Shape", [previous], {}), ("Gather", ["SHAPE", np.array([1], I64)], {}),
                                    ("Slice", [previous, np.array([0]), "GATHERED", np.array([1])], {})],
            "Transpose": [("Transpose", [previous], {"perm": [2, 1, 0]})],
            "Gather": [("Gather", [previous, np.zeros(1, I64)], {"axis": 0})],
            "MatMul": [("MatMul", [previous, np.zeros((1, 1), np.float32)], {})],
            "Conv-batch": [("Conv", [previous, np.zeros((1, 1, 1), np.float32)], {})],
            "Conv-spatial": [("Conv", [previous, np.zeros((1, 1, 1), np.float32)], {})],
            "ConstantOfShape": [("Shape", [previous], {}), ("ConstantOfShape", ["SHAPE"], {})],
        }[op]
        if op == "Slice-to-its-length":
            specs[-2] = ("Gather", [f"t{len(specs) - 3}", np.array([1], I64)], {})
            specs[-1] = ("Slice", [previous, np.array([0]), f"t{len(specs) - 2}", np.array([1])], {})
        if op == "ConstantOfShape":
            specs[-1] = ("ConstantOfShape", [f"t{len(specs) - 2}"], {})
        previous = f"t{len(specs) - 1}"
    axis = {"Conv-batch": 0, "Conv-spatial": 2, "MatMul": 1}.get(op, 1)
    shape = (3, 1, 5) if op in ("MatMul", "Conv-batch", "Conv-spatial") else (3, 4, 5)
    assert _sizes(specs, {"x": (shape, None)}, axes=[axis]) == [shape[axis] if found else None]


@pytest.mark.parametrize("left, right, expected", [
    ((4,), (2, 4, 6), [None, 6]),        # (2, 6)
    ((2, 3, 4), (4,), [None, None]),     # (2, 3): the last axis is the left's rows, not read
    ((4,), (4,), []),                    # a scalar
])
def test_a_matmul_of_a_vector_drops_its_axis(left, right, expected):
    """Session s24: patterns/ranks.py gave MatMul the larger operand's rank even where one is 1-D (numpy drops the
    vector's axis), so Add(MatMul(v (4,), m (2, 4, 6)), c (2, 6)) was read as rank 3, its axis 1 as c's axis 0:
    a size of 2 where ONNX Runtime makes 6. And with (2, 3, 4) @ (4,) ranked 2, its axis 0 would have been read as
    the left's rows (3). Now the rank drops the vector's axis and the rows are read only when both operands are
    matrices."""
    specs = [("MatMul", ["x", "y"], {})]
    inputs = {"x": (left, None), "y": (right, None)}
    assert _sizes(specs, inputs) == expected
    if left == (4,) and right == (2, 4, 6):
        specs.append(("Add", ["t0", np.zeros((2, 6), np.float32)], {}))
        assert _sizes(specs, inputs) == [2, 6]


def test_axis_size_reads_each_tensor_once_per_depth():
    """Session s24: 40 residual steps Add(x, Relu(x)) over a size known nowhere: each step's two operands both lead
    to x, and the walk took them both at every step (1 s at 18 steps on the dev machine, twice as long a step more, up
    to its depth bound; the chain of Slices to Shape(x)[1] of the walk test above was 2^34 paths). Now each (tensor,
    axis, depth) is read once. The declared 5 is 40 steps back: past MAX_SIZE_WALK."""
    import time
    x = gs.Variable("x", np.float32, ("batch", "length", 5))
    nodes, tensor = [], x
    for step in range(40):
        relu, added = gs.Variable(f"relu{step}"), gs.Variable(f"added{step}")
        nodes += [gs.Node("Relu", inputs=[tensor], outputs=[relu]),
                  gs.Node("Add", inputs=[tensor, relu], outputs=[added])]
        tensor = added
    graph = gs.Graph(nodes=nodes, inputs=[x], outputs=[tensor], opset=17)
    ranks = RankMap(graph)
    start = time.monotonic()
    assert [axis_size(tensor, axis, ranks) for axis in range(3)] == [None, None, None]
    assert time.monotonic() - start < 2.0

"""passes.graph_builder (session s32, mut35): the builder every scan form and rewrite writes its nodes through. Each
helper's node exactly (op, names, inputs in order, constant values and dtypes, attributes) at opset 11 (axes and split
sizes as attributes) and 13 (as inputs), the names made unique against the graph's, the constants shared, and both
opsets' graphs run in ONNX Runtime against numpy."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from passes.graph_builder import MAX_INDEX_TABLE, GraphBuilder, taken_prefixes, unique_name


def _described(tensor):
    """A node input as the test reads it: a Constant's dtype, shape and values, a Variable's name."""
    if isinstance(tensor, gs.Constant):
        return (str(tensor.values.dtype), tensor.values.shape, tensor.values.tolist())
    return tensor.name


def _node(builder, index=-1):
    node = builder.nodes[index]
    return node.op, node.name, [_described(t) for t in node.inputs], dict(node.attrs), [t.name for t in node.outputs]


def test_the_index_table_cap_is_2_to_the_22():
    assert MAX_INDEX_TABLE == 4194304


def test_taken_prefixes_are_the_folders_of_node_and_tensor_names():
    x, y = gs.Variable("in/x", np.float32, (2,)), gs.Variable("a/b/Mul_1_out", np.float32, (2,))
    node = gs.Node("Neg", "n/m/Neg", inputs=[x], outputs=[y])
    plain = gs.Node("Relu", "plain", inputs=[y], outputs=[gs.Variable("z", np.float32, (2,))])
    graph = gs.Graph(nodes=[node, plain], inputs=[x], outputs=plain.outputs)
    assert taken_prefixes(graph) == {"in", "a/b", "n/m"}


def test_unique_name_takes_the_first_free_copy_and_records_it():
    taken = {"p", "p#2", "q#2"}
    assert unique_name("p", taken) == "p#3"
    assert unique_name("q", taken) == "q"
    assert unique_name("q", taken) == "q#3"   # q and q#2 are taken now
    assert unique_name("r", taken) == "r"
    assert taken == {"p", "p#2", "p#3", "q", "q#2", "q#3", "r"}


def test_the_prefix_is_made_unique_against_the_graph_or_the_given_set():
    x = gs.Variable("x", np.float32, (2,))
    graph = gs.Graph(nodes=[gs.Node("Neg", "p/Neg_1", inputs=[x], outputs=[gs.Variable("p#2/y", np.float32, (2,))])],
                     inputs=[x])
    assert GraphBuilder(graph, 17, "p").prefix == "p#3"
    assert GraphBuilder(graph, 17, "q").prefix == "q"
    taken = {"q"}
    assert GraphBuilder(graph, 17, "p", taken=taken).prefix == "p"   # the given set, not the graph's
    assert GraphBuilder(graph, 17, "q", taken=taken).prefix == "q#2"
    assert taken == {"q", "p", "q#2"}
    empty = set()
    assert GraphBuilder(graph, 17, "p", taken=empty).prefix == "p" and empty == {"p"}   # an empty set is still used


def test_node_names_its_node_and_output_by_prefix_op_and_count_and_adds_it_to_the_graph():
    graph = gs.Graph(opset=17)
    b = GraphBuilder(graph, 17, "pre")
    assert (b.graph, b.opset, b.dtype, b.nodes) == (graph, 17, np.float32, [])
    x = gs.Variable("x", np.float32, (3,))
    out = b.node("Neg", [x])
    assert (out.name, out.dtype, out.shape) == ("pre/Neg_1_out", None, None)
    assert _node(b) == ("Neg", "pre/Neg_1", ["x"], {}, ["pre/Neg_1_out"])
    given = gs.Variable("given", np.float32, (3,))
    assert b.node("Relu", (out,), {"a": 1}, output=given) is given
    assert _node(b) == ("Relu", "pre/Relu_2", ["pre/Neg_1_out"], {"a": 1}, ["given"])
    assert graph.nodes == b.nodes and len(b.nodes) == 2
    assert given.inputs[0] is b.nodes[1] and out.inputs[0] is b.nodes[0]


def test_node_outputs_names_each_output_and_keeps_the_domain():
    graph = gs.Graph(opset=17)
    b = GraphBuilder(graph, 17, "pre")
    x = gs.Variable("x", np.float32, (3,))
    outs = b.node_outputs("Gelu", [x], domain="com.microsoft")
    assert [(o.name, o.dtype) for o in outs] == [("pre/Gelu_1_out0", None)]
    node = b.nodes[0]
    assert (node.op, node.name, node.domain, dict(node.attrs), node.inputs) == ("Gelu", "pre/Gelu_1", "com.microsoft",
                                                                             {}, [x])
    three = b.node_outputs("Split", [x], {"axis": 0}, 3)
    assert [o.name for o in three] == ["pre/Split_2_out0", "pre/Split_2_out1", "pre/Split_2_out2"]
    assert b.nodes[1].outputs == three and dict(b.nodes[1].attrs) == {"axis": 0} and b.nodes[1].domain is None
    assert graph.nodes == b.nodes


def test_constants_are_shared_by_dtype_shape_and_bytes_and_named_in_order():
    b = GraphBuilder(gs.Graph(opset=17), 17, "pre")
    one = b.const([1, 2], dtype=np.int64)
    assert (one.name, str(one.values.dtype), one.values.tolist()) == ("pre/const_0", "int64", [1, 2])
    assert b.ints([1, 2]) is one
    assert b.ints((1, 2)) is one
    other_dtype = b.const([1, 2], dtype=np.int32)
    assert other_dtype is not one and other_dtype.name == "pre/const_1" and str(other_dtype.values.dtype) == "int32"
    scalar, vector = b.ints(3), b.ints([3])
    assert scalar is not vector and (scalar.values.shape, vector.values.shape) == ((), (1,))
    assert (scalar.name, vector.name) == ("pre/const_2", "pre/const_3")
    assert b.ints([2, 1]) is not one   # the same bytes in another order are another constant
    assert b.ints(np.array([1, 2], np.int32)) is one   # ints are int64 whatever they come as: sizes of numpy's,
    assert b.ints([1.0, 2.0]) is one                   # or computed as floats (length / chunk)
    assert str(b.ints(3.0).values.dtype) == "int64" and b.ints(3.0) is scalar
    floats = b.const(np.array([0.5], np.float64))
    assert str(floats.values.dtype) == "float64"   # no dtype given: the array's own
    assert str(b.scalar(0.5).values.dtype) == "float32" and b.scalar(0.5).values.shape == ()
    half = GraphBuilder(gs.Graph(opset=17), 17, "h", dtype=np.float16)
    assert str(half.scalar(2.0).values.dtype) == "float16" and half.scalar(2.0).values.tolist() == 2.0
    assert b.nodes == []


ELEMENTWISE = [("add", "Add", 2), ("sub", "Sub", 2), ("mul", "Mul", 2), ("div", "Div", 2), ("exp", "Exp", 1),
               ("log", "Log", 1), ("neg", "Neg", 1), ("relu", "Relu", 1), ("abs", "Abs", 1), ("max", "Max", 2),
               ("min", "Min", 2), ("where", "Where", 3), ("less", "Less", 2)]


@pytest.mark.parametrize("method, op, arity", ELEMENTWISE)
def test_each_elementwise_helper_is_its_op_on_its_inputs_in_order(method, op, arity):
    b = GraphBuilder(gs.Graph(opset=17), 17, "e")
    inputs = [gs.Variable(f"in{i}", np.float32, (2,)) for i in range(arity)]
    out = getattr(b, method)(*inputs)
    assert _node(b) == (op, f"e/{op}_1", [f"in{i}" for i in range(arity)], {}, [f"e/{op}_1_out"])
    assert out is b.nodes[0].outputs[0] and len(b.nodes) == 1


F32 = "float32"
I64 = "int64"


def _shape_nodes(opset):
    """Every shape helper once, on x (2, 3, 4); the nodes as _node reads them."""
    b = GraphBuilder(gs.Graph(opset=opset), opset, "s")
    x = gs.Variable("x", np.float32, (2, 3, 4))
    given = gs.Variable("given", np.float32, None)
    b.slice(x, 1, 3, 2)
    b.split(x, [1, 3], 2)
    b.gather(x, 2, 1)
    b.unsqueeze(x, [0, 4])
    b.unsqueeze(x, (1,), output=given)
    b.squeeze(x, [0])
    b.concat([x, x], 1)
    b.concat((x,), -1, output=gs.Variable("cat", np.float32, None))
    b.pad_axis(x, 3, 1, 2, 1)
    b.pad_axis(x, 3, 2, 0, 3, value=-1.5)
    b.transpose(x, (2, 0, 1))
    b.transpose(x, [1, 0, 2], output=gs.Variable("t", np.float32, None))
    b.reshape(x, (6, 4))
    b.reshape(x, given)
    b.shape(x)
    b.cumsum(x, 2)
    b.reduce_sum(x, [1, 2])
    b.reduce_sum(x, (0,), keepdims=0, output=gs.Variable("r", np.float32, None))
    b.einsum([x, x], "abc,abc->ab")
    b.einsum((x,), "abc->cab", output=gs.Variable("ein", np.float32, None))
    b.matmul(x, x)
    b.matmul(x, x, output=gs.Variable("mm", np.float32, None))
    b.identity(x)
    b.identity(x, output=gs.Variable("id", np.float32, None))
    return b, [_node(b, i) for i in range(len(b.nodes))]


def _i64(values):
    return (I64, (len(values),), list(values))


def test_the_shape_helpers_at_opset_13_take_axes_and_sizes_as_inputs():
    b, nodes = _shape_nodes(13)
    assert nodes == [
        ("Slice", "s/Slice_1", ["x", _i64([1]), _i64([3]), _i64([2])], {}, ["s/Slice_1_out"]),
        ("Split", "s/Split_2", ["x", _i64([1, 3])], {"axis": 2}, ["s/Split_2_out0", "s/Split_2_out1"]),
        ("Gather", "s/Gather_3", ["x", (I64, (), 2)], {"axis": 1}, ["s/Gather_3_out"]),
        ("Unsqueeze", "s/Unsqueeze_4", ["x", _i64([0, 4])], {}, ["s/Unsqueeze_4_out"]),
        ("Unsqueeze", "s/Unsqueeze_5", ["x", _i64([1])], {}, ["given"]),
        ("Squeeze", "s/Squeeze_6", ["x", _i64([0])], {}, ["s/Squeeze_6_out"]),
        ("Concat", "s/Concat_7", ["x", "x"], {"axis": 1}, ["s/Concat_7_out"]),
        ("Concat", "s/Concat_8", ["x"], {"axis": -1}, ["cat"]),
        ("Pad", "s/Pad_9", ["x", _i64([0, 2, 0, 0, 1, 0]), (F32, (), 0.0)], {"mode": "constant"}, ["s/Pad_9_out"]),
        ("Pad", "s/Pad_10", ["x", _i64([0, 0, 0, 0, 0, 3]), (F32, (), -1.5)], {"mode": "constant"},
         ["s/Pad_10_out"]),
        ("Transpose", "s/Transpose_11", ["x"], {"perm": [2, 0, 1]}, ["s/Transpose_11_out"]),
        ("Transpose", "s/Transpose_12", ["x"], {"perm": [1, 0, 2]}, ["t"]),
        ("Reshape", "s/Reshape_13", ["x", _i64([6, 4])], {}, ["s/Reshape_13_out"]),
        ("Reshape", "s/Reshape_14", ["x", "given"], {}, ["s/Reshape_14_out"]),
        ("Shape", "s/Shape_15", ["x"], {}, ["s/Shape_15_out"]),
        ("CumSum", "s/CumSum_16", ["x", (I64, (), 2)], {}, ["s/CumSum_16_out"]),
        ("ReduceSum", "s/ReduceSum_17", ["x", _i64([1, 2])], {"keepdims": 1}, ["s/ReduceSum_17_out"]),
        ("ReduceSum", "s/ReduceSum_18", ["x", _i64([0])], {"keepdims": 0}, ["r"]),
        ("Einsum", "s/Einsum_19", ["x", "x"], {"equation": "abc,abc->ab"}, ["s/Einsum_19_out"]),
        ("Einsum", "s/Einsum_20", ["x"], {"equation": "abc->cab"}, ["ein"]),
        ("MatMul", "s/MatMul_21", ["x", "x"], {}, ["s/MatMul_21_out"]),
        ("MatMul", "s/MatMul_22", ["x", "x"], {}, ["mm"]),
        ("Identity", "s/Identity_23", ["x"], {}, ["s/Identity_23_out"]),
        ("Identity", "s/Identity_24", ["x"], {}, ["id"]),
    ]
    assert all(node.domain is None for node in b.nodes)


def test_the_shape_helpers_below_opset_13_take_axes_and_sizes_as_attributes():
    _, nodes = _shape_nodes(11)
    _, at_13 = _shape_nodes(13)
    changed = {i: node for i, node in enumerate(nodes) if node != at_13[i]}
    assert changed == {
        1: ("Split", "s/Split_2", ["x"], {"axis": 2, "split": [1, 3]}, ["s/Split_2_out0", "s/Split_2_out1"]),
        3: ("Unsqueeze", "s/Unsqueeze_4", ["x"], {"axes": [0, 4]}, ["s/Unsqueeze_4_out"]),
        4: ("Unsqueeze", "s/Unsqueeze_5", ["x"], {"axes": [1]}, ["given"]),
        5: ("Squeeze", "s/Squeeze_6", ["x"], {"axes": [0]}, ["s/Squeeze_6_out"]),
        16: ("ReduceSum", "s/ReduceSum_17", ["x"], {"axes": [1, 2], "keepdims": 1}, ["s/ReduceSum_17_out"]),
        17: ("ReduceSum", "s/ReduceSum_18", ["x"], {"axes": [0], "keepdims": 0}, ["r"]),
    }
    _, at_12 = _shape_nodes(12)
    assert at_12 == nodes


@pytest.mark.parametrize("opset", [11, 12, 13, 17])
def test_the_helpers_graph_runs_in_onnx_runtime_as_numpy_computes_it(opset):
    """One graph of every axes-taking helper, run: each output against numpy exactly."""
    graph = gs.Graph(opset=opset)
    b = GraphBuilder(graph, opset, "g")
    x = gs.Variable("x", np.float32, (2, 3, 4))
    graph.inputs = [x]
    one, three = b.split(x, [1, 3], 2)
    outs = [b.slice(x, 1, 3, 2), one, three, b.gather(x, 2, 1), b.unsqueeze(x, [0, 4]),
            b.squeeze(b.unsqueeze(x, [0]), [0]), b.pad_axis(x, 3, 1, 2, 1, value=-1.5), b.cumsum(x, 2),
            b.reduce_sum(x, [1, 2]), b.reduce_sum(x, [0], keepdims=0), b.transpose(x, [2, 0, 1]),
            b.reshape(x, (6, 4)), b.concat([x, x], 1)]
    for out in outs:
        out.dtype = np.float32
    graph.outputs = outs
    value = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    session = ort.InferenceSession(gs.export_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": value})
    want = [value[:, :, 1:3], value[:, :, :1], value[:, :, 1:], value[:, 2], value[None, :, :, :, None], value,
            np.pad(value, ((0, 0), (2, 1), (0, 0)), constant_values=-1.5), np.cumsum(value, 2),
            value.sum((1, 2), keepdims=True), value.sum(0), value.transpose(2, 0, 1), value.reshape(6, 4),
            np.concatenate([value, value], 1)]
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)

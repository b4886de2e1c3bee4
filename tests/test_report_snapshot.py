"""The diff viewer's node records: constant and attribute texts, and when two attribute values count as the same.

Exact texts, because they are what a reader sees in the per-pass diff; `same_value` decides whether a node shows as
changed. (s29: mut29's hand mutants of passes/report/snapshot.py left 85 survivors against the region tests.)"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.report.snapshot import (COMPARE_VALUES_MAX, INLINE_VALUES_MAX, NodeRecord, _stored_values,
                                    attribute_texts, describe_tensor, same_value, snapshot_graph, snapshot_model)


def _values(*values):
    return lambda: list(values)


@pytest.mark.parametrize("dtype, text", [(np.float32, "f32"), (np.float64, "f64"), (np.float16, "f16"),
                                         (np.int64, "i64"), (np.int32, "i32"), (np.int8, "i8"), (np.uint8, "u8"),
                                         (np.bool_, "bool"), (np.uint16, "uint16"), (None, "?")])
def test_a_large_constant_is_its_short_type_and_shape(dtype, text):
    assert describe_tensor(dtype, (64, 1), _values()) == f"const<{text}[64,1]>"


def test_small_constants_show_their_values_up_to_the_inline_limit():
    assert INLINE_VALUES_MAX == 8
    assert describe_tensor(np.int64, (2,), _values(0, 2)) == "const<i64>[0, 2]"
    assert describe_tensor(np.int64, (2, 4), lambda: np.arange(8).reshape(2, 4)) == "const<i64>[0, 1, 2, 3, 4, 5, 6, 7]"
    assert describe_tensor(np.int64, (9,), lambda: np.arange(9)) == "const<i64[9]>"
    assert describe_tensor(np.float32, (), lambda: np.float32(1) / 3) == "const<f32>(0.333333)"
    assert describe_tensor(np.float32, (0,), _values()) == "const<f32>[]"


def test_a_constant_whose_values_cannot_be_read_or_whose_size_is_symbolic_shows_its_shape():
    def unreadable():
        raise OSError("missing external file")

    assert describe_tensor(np.float32, (2,), unreadable) == "const<f32[2]>"
    assert describe_tensor(np.float32, ("batch", 3), _values(1.0)) == "const<f32[batch,3]>"


def test_attribute_texts_are_sorted_and_short():
    graph = gs.Graph(nodes=[gs.Node("Relu"), gs.Node("Relu"), gs.Node("Relu")])
    texts = dict(attribute_texts({
        "z": "x" * 60, "y": "x" * 61, "bytes": b"ab\xff", "ints": list(range(17)), "few": [1, 2.5],
        "graph": graph, "proto_graph": helper.make_graph([], "g", [], []),
        "array": np.array([1, 2], np.int64), "big": np.zeros((3, 3), np.float32),
        "constant": gs.Constant("c", np.array([0.5], np.float32)),
        "tensor": numpy_helper.from_array(np.array([4], np.int32)),
        "alpha": 0.1, "count": 5, "long": 10 ** 61, "over": 10 ** 60, "fits": 10 ** 59,
        "sixteen": list(range(16))}))
    assert texts == {
        "z": '"' + "x" * 60 + '"', "y": '"' + "x" * 57 + '..."', "bytes": '"ab\ufffd"',
        "ints": "[" + ", ".join(str(i) for i in range(16)) + ", ...]", "few": "[1, 2.5]",
        "graph": "graph<3 nodes>", "proto_graph": "graph<0 nodes>",
        "array": "<i64>[1, 2]", "big": "<f32[3,3]>",
        "constant": "<f32>[0.5]", "tensor": "<i32>[4]", "alpha": "0.1", "count": "5",
        "long": "1" + "0" * 56 + "...", "over": "1" + "0" * 56 + "...", "fits": "1" + "0" * 59,
        "sixteen": "[" + ", ".join(str(i) for i in range(16)) + "]"}
    assert [name for name, _ in attribute_texts({"b": 1, "a": 2, "c": 3})] == ["a", "b", "c"]


def test_an_external_tensor_attribute_shows_its_shape_and_is_never_read(tmp_path):
    tensor = numpy_helper.from_array(np.arange(4, dtype=np.float32), "t")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../etc/passwd")
    assert dict(attribute_texts({"value": tensor})) == {"value": "<f32[4]>"}


def test_same_value_compares_small_tensors_by_value_and_big_ones_by_identity():
    small = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert same_value(small, small.copy())
    assert same_value(small, gs.Constant("c", small.copy()))
    assert same_value(small, small + 1) is False
    assert same_value(small, small.reshape(3, 2)) is False
    assert same_value(small, small.astype(np.float64)) is False
    assert COMPARE_VALUES_MAX == 4096
    at_limit = np.zeros(COMPARE_VALUES_MAX, np.float32)
    assert same_value(at_limit, at_limit.copy())
    past_limit = np.zeros(COMPARE_VALUES_MAX + 1, np.float32)
    assert same_value(past_limit, past_limit.copy()) is False   # distinct big objects: called changed, not read
    assert same_value(past_limit, past_limit)


def test_same_value_on_lists_numbers_graphs_and_values_that_cannot_compare():
    assert same_value([1, 2], [1, 2]) and same_value((1, [2.5]), (1, [2.5]))
    assert not same_value([1, 2], [1, 2, 3]) and not same_value([1, 2, 3], [1, 2])
    assert not same_value([1, 2], [1, 3]) and not same_value([], [1])
    assert [same_value([1, 2], (1, 2)), same_value(1, 1.0), same_value(np.zeros(2), [0.0, 0.0])] == [False] * 3
    # distinct objects of equal value (interned strings and small ints are one object: `a is b` answers first)
    text, number = "".join(["a", "b"]), int("1000000")
    assert same_value(text, "ab") is True and same_value(number, 10 ** 6) is True
    assert same_value(text, "ba") is False and same_value(number, 10 ** 6 + 1) is False
    graph = gs.Graph()
    assert same_value(graph, graph) and same_value(graph, gs.Graph()) is False

    class Unequal:
        def __eq__(self, other):
            raise RuntimeError("no")

    assert same_value(Unequal(), Unequal()) is False


def test_node_records_compare_their_attributes_by_name_and_value():
    def record(**attributes):
        return NodeRecord("n", "Op", ("x",), ("y",), {}, attributes, None)

    assert record(axis=1, perm=[0, 1]).same_attributes(record(perm=[0, 1], axis=1))
    assert not record(axis=1).same_attributes(record(axis=2))
    assert record(axis=1).same_attributes(record(axis=1, keepdims=0)) is False
    assert not record(axis=1, keepdims=0).same_attributes(record(axis=1))
    # records are frozen and compared by identity (two equal records are still two nodes)
    first, second = record(axis=1), record(axis=1)
    assert first != second and first == first
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.name = "m"
    assert record().key == ("n", "Op", ("x",), ("y",))
    assert NodeRecord("n", "Add", ("x", "w"), ("y",), {1: "const<f32>[1.0]"}, {}, None).key == (
        "n", "Add", ("x", "const<f32>[1.0]"), ("y",))


def test_model_and_graph_snapshots_agree_and_leave_initializers_out_of_the_inputs():
    weight = numpy_helper.from_array(np.array([2.0], np.float32), "w")
    big = numpy_helper.from_array(np.zeros(16, np.float32), "big")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["m"], name="mul"), helper.make_node("Add", ["m", "big"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16]),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16])], [weight, big])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    from_model = snapshot_model(model)
    from_graph = snapshot_graph(gs.import_onnx(model))
    assert from_model.graph_inputs == ("x",) and from_model.graph_outputs == ("y",)
    assert [record.key for record in from_model.nodes] == [
        ("mul", "Mul", ("x", "const<f32>[2]"), ("m",)), ("", "Add", ("m", "const<f32[16]>"), ("y",))]
    assert [record.key for record in from_graph.nodes] == [
        ("mul", "Mul", ("x", "const<f32>[2]"), ("m",)), ("", "Add", ("m", "const<f32[16]>"), ("y",))]
    assert from_model.producer_index() == {"m": 0, "y": 1}
    assert from_model.consumer_indices() == {"x": [0], "w": [0], "m": [1], "big": [1]}


def test_an_external_initializer_is_described_by_its_shape_without_reading_it():
    tensor = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../secret.bin")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [tensor])
    (record,) = snapshot_model(helper.make_model(graph)).nodes
    assert record.constant_texts == {1: "const<f32[4]>"}
    with pytest.raises(ValueError, match="^external data is not read$"):
        _stored_values(tensor)

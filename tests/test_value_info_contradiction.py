"""static_shapes.drop_value_info_shapes against the mutant the first tests left alive (session s34, mut37;
docs/MUTATION.md): only the entries named lose their shape; an intermediate entry without a type is no refusal."""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from passes.static_shapes import ContradictedValueInfo, contradicted_value_info, drop_value_info_shapes


def test_only_the_value_info_entries_named_lose_their_shape():
    # t traced at batch 1 (contradicted), u = Neg(t) declared [N, 4] (agrees): dropping t's leaves u's shape and
    # both element types
    nodes = [helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Neg", ["t"], ["u"]),
             helper.make_node("Transpose", ["u"], ["y"], perm=[1, 0])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, "N"])],
                              value_info=[helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4]),
                                          helper.make_tensor_value_info("u", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    contradicted = contradicted_value_info(model)
    assert contradicted == [ContradictedValueInfo("t", (1, 4), ("N", 4))]
    drop_value_info_shapes(model, [entry.name for entry in contradicted])
    t, u = model.graph.value_info
    assert (t.type.tensor_type.elem_type, t.type.tensor_type.HasField("shape")) == (TensorProto.FLOAT, False)
    assert u.type.tensor_type.elem_type == TensorProto.FLOAT
    assert [dim.dim_param or dim.dim_value for dim in u.type.tensor_type.shape.dim] == ["N", 4]
    onnx.checker.check_model(model)


def test_an_intermediate_value_info_with_no_type_is_accepted():
    # onnx.checker requires a type of a graph's inputs and outputs only: an intermediate entry holding just its name
    # (left to inference) is no reason to refuse the model (model_check's refusal is for inputs and outputs)
    from passes.model_check import check_model

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Neg", ["t"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    graph.value_info.add().name = "t"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    check_model(model)


def test_an_intermediate_value_info_of_element_type_0_is_accepted():
    # UNDEFINED (0) is refused on a graph's inputs and outputs, which onnx.checker requires typed; an intermediate
    # entry of element type 0 is left to inference
    from passes.model_check import check_model

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Neg", ["t"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              value_info=[helper.make_tensor_value_info("t", TensorProto.UNDEFINED, [4])])
    check_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_the_notice_counts_the_entries_names_three_and_shows_unknown_sizes():
    from pipelines.compiler import contradicted_value_info_notice

    entries = [ContradictedValueInfo(f"t{index}", (1, None, 4), ("N", None, "W\x1b")) for index in range(5)]
    assert contradicted_value_info_notice(entries) == (
        "dropped the declared shape of 5 value_info entries (t0, t1, t2, ... (2 more)) that shape inference from the "
        "graph inputs contradicts: 't0' declares [1, ?, 4], inference gives [N, ?, W\\x1b] (an export traced at one "
        "size leaves such entries); element types kept")
    assert contradicted_value_info_notice(entries[:3]).startswith(
        "dropped the declared shape of 3 value_info entries (t0, t1, t2) that ")

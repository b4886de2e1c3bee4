"""Model loading and saving: one-line errors, external data kept, atomic writes."""
import os

import numpy as np
import onnx
import onnx.parser
import pytest

from passes.graph_io import (InputError, ModelMeta, OutputError, graph_to_model, model_to_graph,
                             read_model, save_model_atomic)

MODEL_TEXT = """
<ir_version: 8, opset_import: ["" : 17, "com.example" : 1], producer_name: "vmamba-test">
g (float[4] x) => (float[4] y) { y = Relu(x) }
"""


def big_weight_model():
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1024] x) => (float[1024] y) <float[1024] w> { y = Add(x, w) }""")
    del model.graph.initializer[:]
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.arange(1024, dtype=np.float32), "w"))
    return model


@pytest.mark.parametrize("content,phrase", [
    (b"this is not a protobuf at all \xff\xff\xff", "ONNX"),
    (b"", "not an ONNX model"),
])
def test_bad_files_give_one_line_input_errors(tmp_path, content, phrase):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_model(path)
    assert phrase in str(caught.value) and "\n" not in str(caught.value)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.onnx"
    data = big_weight_model().SerializeToString()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated|ONNX"):
        read_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="input file not found"):
        read_model(tmp_path / "nope.onnx")


def test_external_data_is_detected_and_kept(tmp_path):
    source = tmp_path / "ext.onnx"
    onnx.save_model(big_weight_model(), source, save_as_external_data=True, location="ext.weights",
                    size_threshold=0)
    loaded = read_model(source)
    assert loaded.used_external_data
    out = tmp_path / "out" / "rolled.onnx"
    out.parent.mkdir()
    save_model_atomic(loaded.model, out, external_data=True)
    assert (out.parent / "rolled.onnx.data").is_file()
    again = read_model(out)
    assert again.used_external_data
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(again.model.graph.initializer[0]), np.arange(1024))
    # the caller's model still holds its data inline
    assert loaded.model.graph.initializer[0].raw_data


def test_save_refuses_the_input_unless_allowed_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model(MODEL_TEXT), path)
    with pytest.raises(OutputError, match="--in-place"):
        save_model_atomic(onnx.parser.parse_model(MODEL_TEXT), path, input_path=path)
    save_model_atomic(onnx.parser.parse_model(MODEL_TEXT), path, input_path=path, allow_overwrite_input=True)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_save_into_missing_directory_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        save_model_atomic(onnx.parser.parse_model(MODEL_TEXT), tmp_path / "no" / "m.onnx")


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", failing_save)
    with pytest.raises(OutputError, match="disk full"):
        save_model_atomic(onnx.parser.parse_model(MODEL_TEXT), path)
    assert path.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_graph_round_trip_keeps_model_fields():
    model = onnx.parser.parse_model(MODEL_TEXT)
    model.metadata_props.add(key="source", value="naive export")
    model.doc_string = "hello"
    graph = model_to_graph(model)
    out = graph_to_model(graph, ModelMeta.from_model(model))
    assert out.ir_version == 8 and out.producer_name == "vmamba-test" and out.doc_string == "hello"
    assert {(o.domain, o.version) for o in out.opset_import} == {("", 17), ("com.example", 1)}
    assert {p.key: p.value for p in out.metadata_props} == {"source": "naive export"}
    assert ModelMeta.from_model(model).opset == 17


def test_export_sorts_nodes_left_out_of_order():
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) { a = Relu(x)  y = Neg(a) }""")
    graph = model_to_graph(model)
    graph.nodes.reverse()
    out = graph_to_model(graph)
    onnx.checker.check_model(out)
    assert [n.op_type for n in out.graph.node] == ["Relu", "Neg"]


def test_file_cut_right_after_its_graph_is_refused(tmp_path):
    """The graph field parses whole; what follows it (opset_import) is missing."""
    model = big_weight_model()
    without_opsets = onnx.ModelProto()
    without_opsets.CopyFrom(model)
    del without_opsets.opset_import[:]
    cut = len(without_opsets.SerializeToString())
    path = tmp_path / "cut.onnx"
    path.write_bytes(model.SerializeToString()[:cut])
    with pytest.raises(InputError, match="no opset_import; truncated"):
        read_model(path)


def test_unwritable_directory_is_found_before_any_work(tmp_path, monkeypatch):
    # os.access cannot tell (root, read-only mounts): a real file is created and removed there.
    import tempfile

    from passes.graph_io import check_output_path

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(OutputError, match="output directory is not writable: .*Permission denied"):
        check_output_path(tmp_path / "out.onnx")
    monkeypatch.undo()
    assert check_output_path(tmp_path / "out.onnx") == tmp_path / "out.onnx"
    assert list(tmp_path.iterdir()) == []

"""Mutation tests (s36, mut39) of adv23's reads through the model's folder (passes/files.py open_model_file,
folder_identity, open_checked(folder=); passes/graph_io.py read_model / read_structure / _load_external_data;
passes/verify.py load_reference / checked_beside / compared_as_written; passes/model_check.py model_for_runtime): each
case fails with a plausible bug that the tests before let through."""
from __future__ import annotations

import errno
import os

import onnx
import pytest
from onnx import TensorProto, helper

import passes.graph_io as graph_io
from passes.graph_io import InputError, read_model


def _tiny(name: str) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], name,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_model_read_is_the_file_opened_through_its_folder(tmp_path, monkeypatch):
    """The model replaced by another right after open_model_file opened it: the one opened is read (read_structure
    handed the open file, not the path to open again)."""
    path, other = tmp_path / "m.onnx", tmp_path / "other.onnx"
    onnx.save(_tiny("opened"), path)
    onnx.save(_tiny("put_in_its_place"), other)
    opened = graph_io.open_model_file

    def open_then_replace(target):
        result = opened(target)
        os.replace(other, path)
        return result

    monkeypatch.setattr(graph_io, "open_model_file", open_then_replace)
    assert read_model(path).model.graph.name == "opened"


def test_a_file_that_parses_to_no_model_is_named_by_its_path(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(InputError) as refused:
        read_model(path)
    assert str(refused.value) == f"not an ONNX model (no graph or version found): {path}"


def test_read_model_says_what_it_read_and_from_which_folder(tmp_path):
    """LoadedModel: the path given, whether external data was read, the data files read (resolved) and the
    (device, inode) of the folder the model was read from; a model without external data reads no data file."""
    import numpy as np
    from onnx import numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data

    plain = tmp_path / "plain.onnx"
    onnx.save(_tiny("plain"), plain)
    folder = os.stat(tmp_path)
    loaded = read_model(plain)
    assert (loaded.path, loaded.used_external_data, loaded.data_files, loaded.folder) == (
        plain, False, [], (folder.st_dev, folder.st_ino))

    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "external",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])],
                              [numpy_helper.from_array(np.arange(64, dtype=np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    convert_model_to_external_data(model, location="w.bin", size_threshold=0)
    external = tmp_path / "external.onnx"
    onnx.save(model, external)
    loaded = read_model(external)
    assert (loaded.path, loaded.used_external_data, loaded.data_files, loaded.folder) == (
        external, True, [(tmp_path / "w.bin").resolve()], (folder.st_dev, folder.st_ino))
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.model.graph.initializer[0]), np.arange(64))


# --- verify.compared_as_written ---------------------------------------------------------------------------------

def _as_written(monkeypatch, outputs):
    """compared_as_written with run_model replaced by a spy returning `outputs` (or raising it); the calls made."""
    import passes.verify as verify

    calls = []

    def spy(model, feeds, log=None, **kwargs):
        calls.append((model, feeds, log, kwargs))
        if isinstance(outputs, Exception):
            raise outputs
        return outputs

    monkeypatch.setattr(verify, "run_model", spy)
    return verify, calls


def test_compared_as_written_runs_the_model_as_written_only_where_the_optimised_run_missed(monkeypatch):
    import numpy as np

    verify, calls = _as_written(monkeypatch, {"y": np.float32([1.0, 2.0])})
    model, feeds, expected = _tiny("m"), {"x": np.float32([1, 2])}, {"y": np.float32([1.0, 2.0])}
    log, inferred = (lambda line: None), _tiny("inferred")
    ok = verify.OutputComparison("y", 0.0, 0.0, 1e-5, True)
    missed = verify.OutputComparison("y", 0.1, 0.05, 1e-5, False)
    non_finite = verify.OutputComparison("z", float("inf"), float("nan"), 1e-5, False, "non-finite values")
    assert verify.compared_as_written(model, feeds, expected, [ok], 1e-5) is None
    assert verify.compared_as_written(model, feeds, expected, [missed, non_finite], 1e-5) is None
    assert calls == []   # all passed, or one failed with a problem: never run again
    assert verify.compared_as_written(model, feeds, expected, [ok, missed], 1e-5, log, plain_inferred=inferred,
                                      timeout=7.5) == [verify.OutputComparison("y", 0.0, 0.0, 1e-5, True)]
    assert calls == [(model, feeds, log, {"plain_inferred": inferred, "timeout": 7.5, "optimize": False})]


@pytest.mark.parametrize("tolerance, passes", [(1e-2, True), (1e-5, False)])
def test_compared_as_written_compares_at_the_tolerance_given(monkeypatch, tolerance, passes):
    """As written the output is off by rel L2 1e-3: passed at 1e-2 (its comparisons, at that tolerance), None at 1e-5."""
    import numpy as np

    expected = {"y": np.float32([3.0, 4.0])}
    verify, _ = _as_written(monkeypatch, {"y": np.float32([3.003, 4.004])})
    missed = verify.OutputComparison("y", 0.1, 0.05, tolerance, False)
    result = verify.compared_as_written(_tiny("m"), {}, expected, [missed], tolerance)
    if passes:
        (comparison,) = result
        assert (comparison.name, comparison.tolerance, comparison.ok) == ("y", tolerance, True)
        assert comparison.rel_l2 == pytest.approx(1e-3, rel=1e-3)
    else:
        assert result is None


def test_compared_as_written_is_none_where_the_run_as_written_fails(monkeypatch):
    import numpy as np

    from passes.verify import VerificationError

    verify, calls = _as_written(monkeypatch, VerificationError("ONNX Runtime cannot load the model"))
    missed = verify.OutputComparison("y", 0.1, 0.05, 1e-5, False)
    assert verify.compared_as_written(_tiny("m"), {}, {"y": np.float32([1.0])}, [missed], 1e-5) is None
    assert len(calls) == 1


# --- model_check.model_for_runtime ------------------------------------------------------------------------------

def test_model_for_runtime_hands_back_the_bytes_of_the_model_read(tmp_path):
    from passes.model_check import model_for_runtime

    path = tmp_path / "m.onnx"
    onnx.save(_tiny("read"), path)
    data = model_for_runtime(path)
    assert onnx.load_from_string(data) == read_model(path).model


@pytest.mark.parametrize("what", [None, "teacher"])
def test_model_for_runtime_refuses_a_missing_file_a_folder_and_a_cycle_of_functions_by_name(tmp_path, what):
    from passes.model_check import InputError as CheckInputError, model_for_runtime

    kwargs = {} if what is None else {"what": what}
    shown = what or "model"
    with pytest.raises(CheckInputError) as refused:
        model_for_runtime(tmp_path / "missing.onnx", **kwargs)
    assert str(refused.value) == f"{shown} not found: {tmp_path / 'missing.onnx'}"
    with pytest.raises(CheckInputError) as refused:
        model_for_runtime(tmp_path, **kwargs)
    assert str(refused.value) == f"{shown} {tmp_path} is not a regular file (a directory)"
    f = helper.make_function("x", "F", ["a"], ["b"], [helper.make_node("F", ["a"], ["b"], domain="x")],
                             opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("x", 1)])
    graph = helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="x")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "cycle\x1b.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("x", 1)],
                                functions=[f]), path)
    with pytest.raises(CheckInputError) as refused:
        model_for_runtime(path, **kwargs)
    assert str(refused.value) == (f"{tmp_path}/cycle\\x1b.onnx: model-local functions call each other in a cycle: "
                                  "x::F -> x::F")


def test_read_structure_opens_the_path_itself_where_no_file_is_handed_to_it(tmp_path):
    """tools.nodecount's and tools.diffview's read: the path opened here, once, and refused in one line where it is
    missing (the open's error) or a named pipe (never waited on)."""
    from passes.graph_io import read_structure

    path = tmp_path / "m.onnx"
    onnx.save(_tiny("structure"), path)
    assert read_structure(path).graph.name == "structure"
    with pytest.raises(InputError) as refused:
        read_structure(tmp_path / "missing\x1b.onnx")
    assert str(refused.value) == f"input {tmp_path}/missing\\x1b.onnx cannot be read (No such file or directory)"
    os.mkfifo(tmp_path / "pipe.onnx")
    with pytest.raises(InputError) as refused:
        read_structure(tmp_path / "pipe.onnx")
    assert str(refused.value) == f"input {tmp_path}/pipe.onnx is not a regular file (a named pipe)"


# --- files.open_checked(folder=), verify.checked_beside ----------------------------------------------------------

def test_a_folder_other_than_the_models_is_refused_with_estale_its_words_and_the_path(tmp_path):
    from passes.files import FOLDER_CHANGED, FileChangedError, checked_file, folder_identity, open_checked

    (tmp_path / "w.bin").write_bytes(b"1234")
    base, resolved, status = checked_file(tmp_path, tmp_path / "w.bin")
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        identity = folder_identity(fd)
    finally:
        os.close(fd)
    os.close(open_checked(base, resolved, status, identity))   # the model's own folder: opened
    with pytest.raises(FileChangedError) as refused:
        open_checked(base, resolved, status, (identity[0], identity[1] + 1))
    assert (refused.value.errno, refused.value.strerror, refused.value.filename) == (
        errno.ESTALE, FOLDER_CHANGED, resolved)


def test_checked_beside_is_none_for_a_file_beside_the_model_leading_out_of_its_folder(tmp_path):
    from passes.verify import checked_beside

    (tmp_path / "m").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.npz").write_bytes(b"x")
    os.symlink("../elsewhere/secret.npz", tmp_path / "m" / "naive.ref.npz")
    (tmp_path / "m" / "own.ref.npz").write_bytes(b"y")
    model = tmp_path / "m" / "naive.onnx"
    assert checked_beside(model, tmp_path / "m" / "naive.ref.npz", (1, 2)) is None
    base, resolved, status, folder = checked_beside(model, tmp_path / "m" / "own.ref.npz", (1, 2))
    assert (base, resolved, status.st_size, folder) == (
        str((tmp_path / "m").resolve()), str((tmp_path / "m" / "own.ref.npz").resolve()), 1, (1, 2))


def test_model_for_runtime_refuses_a_model_past_protobufs_limit_in_one_line(tmp_path, monkeypatch):
    """(read_model refuses such a model first; the check kept for one that grew, forced here)"""
    import passes.graph_io as graph_io
    from passes.model_check import InputError as CheckInputError, model_for_runtime

    path = tmp_path / "big\x1b.onnx"
    onnx.save(_tiny("big"), path)
    monkeypatch.setattr(graph_io, "serialized_model", lambda model: (None, 3_000_000_000))
    with pytest.raises(CheckInputError) as refused:
        model_for_runtime(path)
    assert str(refused.value) == f"{tmp_path}/big\\x1b.onnx: 3,000,000,000 bytes, past protobuf's 2 GiB"


def test_a_model_named_without_a_folder_is_read_from_the_working_folder(tmp_path, monkeypatch):
    onnx.save(_tiny("here"), tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    loaded = read_model("m.onnx")
    folder = os.stat(tmp_path)
    assert (loaded.model.graph.name, loaded.folder) == ("here", (folder.st_dev, folder.st_ino))


def test_open_model_file_refuses_a_named_pipe_by_its_whole_path(tmp_path):
    from passes.files import open_model_file

    os.mkfifo(tmp_path / "pipe.onnx")
    with pytest.raises(OSError) as refused:
        open_model_file(tmp_path / "pipe.onnx")
    assert (refused.value.errno, refused.value.strerror, refused.value.filename) == (
        errno.EINVAL, "not a regular file (a named pipe)", str(tmp_path / "pipe.onnx"))

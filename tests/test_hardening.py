"""Hostile models and careless users (issue 12): what is read stays in the model's folder, what is
written never replaces something that is not a regular file, never goes through a planted link,
never leaves a temporary behind, and every bad input is one escaped line with exit 2.

passes.apply runs as a process here (its exit code and stderr are the contract); the export
CLIs run in process, except where a signal is sent.
"""
import json
import os
import signal
import subprocess
import sys
import time
import weakref
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper
from file_spies import record_opened_files
from test_cli import REPO, apply_cli, assert_one_line_error

from passes.files import (DestinationError, atomic_target, check_destination, check_folder_destination,
                          atomic_targets, check_not_read, write_text_atomic)
from passes.graph_io import InputError, read_model, save_model_atomic
from passes.interrupts import Terminated, sigterm_as_interrupt
from passes.model_check import InvalidModelError, check_model
from passes.one_line import printable
from passes.verify import ReferenceDataError, VerificationError, check_tolerance, load_reference, run_model

WEIGHT = np.arange(4, dtype=np.float32) + 0.5
X = np.array([1.0, -2.0, 3.0, -4.0], np.float32)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- models whose weights live in a file, inside an If branch or at the top --------------------------

def _external(array: np.ndarray, name: str, location: str, offset: int = 0, length: int | None = None) -> TensorProto:
    tensor = numpy_helper.from_array(array, name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset), "length": str(array.nbytes if length is None else length)}
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)
    return tensor


def subgraph_weight_model(location: str = "w.bin", **external) -> onnx.ModelProto:
    """y = If(true) then x + w else -x, with w stored in ``location``: only the branch has external data."""
    then_branch = oh.make_graph([oh.make_node("Add", ["x", "w"], ["t"], name="add_w")], "then", [],
                                [oh.make_tensor_value_info("t", TensorProto.FLOAT, [4])],
                                initializer=[_external(WEIGHT, "w", location, **external)])
    else_branch = oh.make_graph([oh.make_node("Neg", ["x"], ["e"], name="neg")], "else", [],
                                [oh.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
    nodes = [oh.make_node("Constant", [], ["cond"], name="cond", value=numpy_helper.from_array(np.array(True), "c")),
             oh.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_branch, else_branch=else_branch)]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def top_weight_model(location: str = "w.bin") -> onnx.ModelProto:
    graph = oh.make_graph([oh.make_node("Add", ["x", "w"], ["y"], name="add_w")], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                          initializer=[_external(WEIGHT, "w", location)])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def save_with_data(folder: Path, model: onnx.ModelProto, data_name: str | None = "w.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if data_name:
        (folder / data_name).write_bytes(WEIGHT.tobytes())
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_subgraph_external_data_is_read_from_the_model_folder_not_the_cwd(tmp_path):
    model_path = save_with_data(tmp_path / "m", subgraph_weight_model())
    np.savez(tmp_path / "m" / "model.ref.npz", x=X, y=X + WEIGHT)
    out = tmp_path / "out" / "rolled.onnx"
    out.parent.mkdir()
    # The working directory (the repo) holds no w.bin: the data must come from the model's folder.
    result = apply_cli(model_path, "--pipeline", "eliminate-dead-nodes", "-o", out, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "verified against" in result.stdout
    # The output refers to no file of the input's folder (16 bytes of weights stay inside it).
    assert sorted(p.name for p in out.parent.iterdir()) == ["rolled.onnx"]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    np.testing.assert_array_equal(got, X + WEIGHT)


def test_read_model_inlines_every_tensor_and_names_the_files_read(tmp_path):
    model_path = save_with_data(tmp_path, subgraph_weight_model())
    loaded = read_model(model_path)
    assert loaded.used_external_data and loaded.data_files == [(tmp_path / "w.bin").resolve()]
    branch = next(a.g for a in loaded.model.graph.node[1].attribute if a.name == "then_branch")
    assert branch.initializer[0].data_location == TensorProto.DEFAULT
    np.testing.assert_array_equal(numpy_helper.to_array(branch.initializer[0]), WEIGHT)


def _outside_file(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(WEIGHT.tobytes())
    return secret


HOSTILE_LOCATIONS = {
    # name -> (make the location inside tmp_path/m, phrase of the refusal)
    "dot-dot": (lambda tmp: "../secret.bin", "'..' leaves the model's folder"),
    "absolute": (lambda tmp: str(tmp / "secret.bin"), "absolute locations are refused"),
    "symlink-out": (lambda tmp: (os.symlink(tmp / "secret.bin", tmp / "m" / "link.bin"), "link.bin")[1],
                    "leads out of the model's folder through a symbolic link"),
    "fifo": (lambda tmp: (os.mkfifo(tmp / "m" / "pipe.bin"), "pipe.bin")[1], "is not a regular file"),
    "past-the-end": (lambda tmp: "w.bin", "lie outside 'w.bin'"),
}


@pytest.mark.parametrize("case", list(HOSTILE_LOCATIONS))
@pytest.mark.parametrize("where", ["subgraph", "top"])
def test_external_data_outside_the_model_folder_is_refused(case, where, tmp_path):
    _outside_file(tmp_path)
    (tmp_path / "m").mkdir()
    make_location, phrase = HOSTILE_LOCATIONS[case]
    location = make_location(tmp_path)
    if case == "past-the-end":
        model = subgraph_weight_model(location, offset=8) if where == "subgraph" else top_weight_model(location)
        if where == "top":
            model.graph.initializer[0].external_data[1].value = "8"
    else:
        model = subgraph_weight_model(location) if where == "subgraph" else top_weight_model(location)
    model_path = save_with_data(tmp_path / "m", model, "w.bin")
    before = listing(tmp_path)
    out = tmp_path / "m" / "out.onnx"
    # --verify none: nothing but the refusal stands between a hostile model and the output.
    result = apply_cli(model_path, "--pipeline", "eliminate-dead-nodes", "--verify", "none", "-o", out)
    assert_one_line_error(result, 2, phrase)
    assert listing(tmp_path) == before


def _tiny_model_beside_a_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """tmp_path/m/naive.onnx (test_cli's tiny model) and an empty tmp_path/elsewhere; the model's inputs (ones) and
    ONNX Runtime's outputs for them, by name: what a reference holds."""
    from test_cli import TINY_MODEL_TEXT

    (tmp_path / "m").mkdir()
    (tmp_path / "elsewhere").mkdir()
    model_path = tmp_path / "m" / "naive.onnx"
    model = onnx.parser.parse_model(TINY_MODEL_TEXT)
    onnx.save(model, model_path)
    feeds = {value.name: np.ones([d.dim_value for d in value.type.tensor_type.shape.dim], np.float32)
             for value in model.graph.input}
    outputs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    return model_path, {**feeds, **{value.name: array for value, array in zip(model.graph.output, outputs)}}


def test_a_reference_beside_the_model_leading_out_of_its_folder_is_refused(tmp_path):
    """Found by adv5: naive.ref.npz beside the model, a link planted to ../elsewhere/secret.npz, was read
    and verified against (exit 0), though external data leading out so is refused; the user may still
    give that file with --reference."""
    model_path, arrays = _tiny_model_beside_a_folder(tmp_path)
    secret = tmp_path / "elsewhere" / "secret.npz"
    np.savez(secret, **arrays)
    os.symlink("../elsewhere/secret.npz", tmp_path / "m" / "naive.ref.npz")
    before = listing(tmp_path)
    out = tmp_path / "m" / "out.onnx"
    result = apply_cli(model_path, "--pipeline", "eliminate-dead-nodes", "-o", out)
    assert_one_line_error(result, 2, "naive.ref.npz beside the model leads out of the model's folder through a symbolic link")
    assert listing(tmp_path) == before
    assert apply_cli(model_path, "--pipeline", "eliminate-dead-nodes", "-o", out, "--verify", "none").returncode == 0
    given = apply_cli(model_path, "--pipeline", "eliminate-dead-nodes", "-o", out, "--reference", secret)
    assert given.returncode == 0, given.stderr


@pytest.mark.parametrize("swap", ["file-to-link", "file-to-file"])
def test_a_reference_beside_swapped_after_its_link_check_is_never_read(swap, tmp_path, monkeypatch):
    """adv21's leftover (adv22): naive.ref.npz beside the model was checked to stay inside the model's folder, then
    read again by its path (np.load): swapped for a link to a file outside between the two, that file was read
    and verified against, exit 0. Now it is opened from the folder without following links and must be the file
    checked (device, inode): one line, exit 2 (BadInput), the outside file never opened, nothing written."""
    import pipelines.compiler as compiler
    from pipelines import BadInput, compile_model
    model_path, arrays = _tiny_model_beside_a_folder(tmp_path)
    np.savez(tmp_path / "m" / "naive.ref.npz", **arrays)
    secret = tmp_path / "elsewhere" / "secret.npz"
    np.savez(secret, **arrays)   # a file the run would verify against without a word
    checked = compiler.checked_beside

    def check_then_swap(*args):
        found = checked(*args)
        (tmp_path / "m" / "naive.ref.npz").rename(tmp_path / "m" / "old.npz")   # (kept: its inode not reused)
        if swap == "file-to-link":
            (tmp_path / "m" / "naive.ref.npz").symlink_to(secret)
        else:
            np.savez(tmp_path / "m" / "naive.ref.npz", **arrays)
        return found

    monkeypatch.setattr(compiler, "checked_beside", check_then_swap)
    opened = record_opened_files(monkeypatch, builtin_open=True)
    out = tmp_path / "m" / "out.onnx"
    with pytest.raises(BadInput) as refused:
        compile_model(model_path, "eliminate-dead-nodes", output=out)
    monkeypatch.undo()
    assert str(refused.value) == (
        f"reference {printable(tmp_path / 'm' / 'naive.ref.npz')} changed between its check and its read (a symbolic "
        "link or another file put in its place); refused")
    assert (secret.stat().st_dev, secret.stat().st_ino) not in opened
    assert opened and not out.exists()


def test_a_reference_beside_the_model_in_a_folder_swapped_after_the_model_read_is_never_read(tmp_path, monkeypatch):
    """adv22's leftover (adv23): the reference beside the model was checked and read through the model folder's path,
    resolved again after the model's read: the folder renamed and a link to an outside folder holding a
    `naive.ref.npz` put in its place had the run verify against that file, exit 0. Now the read checks the folder is
    the one the model was read from."""
    import pipelines.compiler as compiler
    from passes.one_line import printable
    from pipelines import BadInput, compile_model
    model_path, arrays = _tiny_model_beside_a_folder(tmp_path)
    np.savez(tmp_path / "m" / "naive.ref.npz", **arrays)
    secret = tmp_path / "elsewhere" / "naive.ref.npz"
    np.savez(secret, **arrays)
    real = compiler.read_model

    def read_then_swap(*args):
        loaded = real(*args)
        (tmp_path / "m").rename(tmp_path / "was-m")
        (tmp_path / "m").symlink_to(tmp_path / "elsewhere")
        return loaded

    monkeypatch.setattr(compiler, "read_model", read_then_swap)
    opened = record_opened_files(monkeypatch)
    with pytest.raises(BadInput) as refused:
        compile_model(model_path, "eliminate-dead-nodes", output=tmp_path / "out.onnx")
    monkeypatch.undo()
    assert str(refused.value) == (
        f"reference {printable(tmp_path / 'm' / 'naive.ref.npz')}: the model's folder was replaced since the model was "
        "read (renamed, or a symbolic link or another folder put in its place); refused")
    assert (secret.stat().st_dev, secret.stat().st_ino) not in opened
    assert opened and not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("tool", ["tpu_calibration", "ort_profile", "tpu_qtable", "tpu_check"])
def test_tools_never_write_over_the_weights_of_the_model_they_read(tool, tmp_path, monkeypatch, capsys):
    """Found by adv5: 'tools.tpu_calibration synthetic m.onnx -o w.bin' replaced the model's weights file
    with the calibration npz (exit 0), as could ort_profile's and tpu_check's --json and tpu_qtable's -o:
    their check named the model only (tools.diffview's was fixed so in 72bc66e). The weights of a model in
    an If branch count too."""
    from tools import ort_profile, tpu_calibration, tpu_check, tpu_qtable

    model_path = save_with_data(tmp_path, subgraph_weight_model("w.bin"))
    data = tmp_path / "w.bin"
    monkeypatch.setattr(tpu_check, "check", lambda *args: pytest.fail("tpu_check went to work"))
    argv = {"tpu_calibration": ["synthetic", str(model_path), "-o", str(data)],
            "ort_profile": [str(model_path), "--json", str(data)],
            "tpu_qtable": [str(model_path), str(tmp_path / "m.mlir"), "-o", str(data)],
            "tpu_check": [str(model_path), "--json", str(data)]}[tool]
    main = {"tpu_calibration": tpu_calibration, "ort_profile": ort_profile, "tpu_qtable": tpu_qtable,
            "tpu_check": tpu_check}[tool].main
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "is the external data file of the model" in lines[0] and "refusing to overwrite" in lines[0]
    assert data.read_bytes() == WEIGHT.tobytes() and listing(tmp_path) == ["model.onnx", "w.bin"]


def test_external_data_of_the_wrong_size_is_refused(tmp_path):
    model_path = save_with_data(tmp_path, subgraph_weight_model(length=12))
    with pytest.raises(InputError, match="holds 12 bytes; its type and shape need 16"):
        read_model(model_path)



def _tensors_naming_one_range(count: int) -> onnx.ModelProto:
    """y = x + w0 + ... + w(count-1), every wi stored at offset 0 of w.bin: one range read count times."""
    weights = [_external(WEIGHT, f"w{i}", "w.bin") for i in range(count)]
    graph = oh.make_graph([oh.make_node("Sum", ["x"] + [w.name for w in weights], ["y"], name="sum")], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=weights)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def test_external_data_read_over_and_over_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """Found by adv4 (s18): 2,000 tensors naming one 1 MiB range of a 1 MiB file made a 150 KB model take
    4.8 GB of memory (a segmentation fault under a 5 GB limit; 600 of them: 1.9 GB and a 600 MB output);
    the bytes read again, all together, are capped (MAX_REREAD_EXTERNAL_BYTES, 2 GiB; 16 bytes here)."""
    from passes import graph_io

    monkeypatch.setattr(graph_io, "MAX_REREAD_EXTERNAL_BYTES", 16, raising=False)
    read = read_model(save_with_data(tmp_path / "tied", _tensors_naming_one_range(2)))   # 16 bytes again: a tied weight
    assert [numpy_helper.to_array(t).tolist() for t in read.model.graph.initializer] == [WEIGHT.tolist()] * 2
    path = save_with_data(tmp_path / "bomb", _tensors_naming_one_range(3))
    with pytest.raises(InputError, match="name the same bytes over and over \\(32 bytes read again, over the 16 allowed"):
        read_model(path)
    assert graph_io._bytes_read_again({Path("a"): [(8, 8), (0, 12), (20, 4), (0, 4)], Path("b"): [(0, 4)]}) == 8

def test_onnx_runtime_never_gets_a_model_with_file_references(tmp_path, monkeypatch):
    # A model still pointing at "w.bin" would make ORT read ./w.bin from the working directory.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.bin").write_bytes(WEIGHT.tobytes())
    with pytest.raises(VerificationError, match="still refers to external data"):
        run_model(top_weight_model(), {"x": X})


# --- destinations: regular files only, folders that take files, nothing the run reads ------------------

def test_check_destination_refuses_what_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    os.symlink("/dev/null", tmp_path / "to-null")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    for path, phrase in [("/dev/null", "is a character device, not a regular file"),
                         (tmp_path / "fifo", "is a named pipe, not a regular file"),
                         (tmp_path / "to-null", "is a character device"),
                         (tmp_path / "dangling", "is a broken symbolic link"),
                         (tmp_path, "output is a directory"),
                         (tmp_path / "missing" / "x", "output directory does not exist")]:
        with pytest.raises(DestinationError, match=phrase):
            check_destination(path)
    (tmp_path / "file").write_text("x")
    assert check_destination(tmp_path / "file") == tmp_path / "file"
    assert check_destination(tmp_path / "new") == tmp_path / "new"
    assert sorted(os.listdir(tmp_path)) == ["dangling", "fifo", "file", "to-null"]


def test_a_destination_with_a_nul_byte_is_bad_input_for_library_callers(tmp_path):
    """Found by compile_model(..., output='o\\x00.onnx') and report='r\\x00' (adversarial session s13): os.lstat's
    ValueError ('embedded null byte') came out raw instead of BadInput."""
    from pipelines.compiler import BadInput, compile_model
    from scan_testing import TINY_MODEL_TEXT

    model = onnx.parser.parse_model(TINY_MODEL_TEXT)
    with pytest.raises(BadInput) as error:
        compile_model(model, "eliminate-dead-nodes", output=str(tmp_path / "o\x00.onnx"))
    assert str(error.value) == f"output {tmp_path}/o\\x00.onnx holds a NUL byte, which no path can"
    with pytest.raises(BadInput) as error:
        compile_model(model, "eliminate-dead-nodes", report=str(tmp_path / "r\x00"))
    assert str(error.value) == f"--report folder {tmp_path}/r\\x00 holds a NUL byte, which no path can"
    assert os.listdir(tmp_path) == []
    # Found by adv4 (s18): with the model given as a path, comparing the output with it came first and
    # raised the raw ValueError (passes.files.is_same_file).
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(BadInput) as error:
        compile_model(tmp_path / "m.onnx", "eliminate-dead-nodes", output=str(tmp_path / "o\x00.onnx"))
    assert str(error.value) == f"output {tmp_path}/o\\x00.onnx holds a NUL byte, which no path can"
    assert os.listdir(tmp_path) == ["m.onnx"]


@pytest.mark.parametrize("destination", ["/dev/null", "fifo", "link-to-null"])
def test_apply_refuses_a_destination_that_is_not_a_regular_file(destination, tmp_path):
    from scan_testing import TINY_MODEL_TEXT

    model_path = tmp_path / "naive.onnx"
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), model_path)
    os.mkfifo(tmp_path / "fifo")
    os.symlink("/dev/null", tmp_path / "link-to-null")
    out = destination if destination.startswith("/") else tmp_path / destination
    before = listing(tmp_path)
    result = apply_cli(model_path, "--pipeline", "eliminate-dead-nodes", "-o", out)
    assert_one_line_error(result, 2, "not a regular file")
    assert Path("/dev/null").is_char_device()
    assert listing(tmp_path) == before and (tmp_path / "fifo").is_fifo()


def test_a_destination_written_as_a_folder_is_refused(tmp_path, capsys):
    """Found by s16-adv: '-o newdir/' (a trailing '/', a folder to most tools) wrote the model as a
    file named 'newdir'; so did the export CLIs."""
    from scan_testing import TINY_MODEL_TEXT
    from vmamba_ref.export import main as export_main

    model_path = tmp_path / "naive.onnx"
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), model_path)
    with pytest.raises(DestinationError, match="ends in '/', which names a folder"):
        check_destination(f"{tmp_path}/new/")
    before = listing(tmp_path)
    result = apply_cli(model_path, "--pipeline", "eliminate-dead-nodes", "-o", f"{tmp_path}/newdir/")
    assert_one_line_error(result, 2, f"output {tmp_path}/newdir/ ends in '/', which names a folder; give a file path")
    assert export_main(["--model", "micro", "--no-check", "-o", f"{tmp_path}/newdir/"]) == 2
    assert capsys.readouterr().err.endswith("ends in '/', which names a folder; give a file path\n")
    assert listing(tmp_path) == before


def test_check_folder_destination(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").mkdir()
    with pytest.raises(DestinationError, match="--report folder .*file exists and is a regular file, not a directory"):
        check_folder_destination(tmp_path / "file", "--report folder")
    with pytest.raises(DestinationError, match="--report folder file is a directory: .*index.html"):
        check_folder_destination(tmp_path / "report", "--report folder", ["report.json", "index.html"])
    with pytest.raises(DestinationError, match="cannot be made: .*file is not a directory"):
        check_folder_destination(tmp_path / "file" / "sub", "--report folder")
    with pytest.raises(DestinationError, match="not writable: /proc"):
        check_folder_destination("/proc/new-report", "--report folder")
    assert check_folder_destination(tmp_path / "new" / "deeper", "--report folder") == tmp_path / "new" / "deeper"
    assert sorted(os.listdir(tmp_path)) == ["file", "report"]


def test_check_not_read_sees_through_links(tmp_path):
    data = tmp_path / "o.onnx.data"
    data.write_bytes(b"weights")
    os.symlink(data, tmp_path / "alias")
    with pytest.raises(DestinationError, match="is the external data file .*which this run reads"):
        check_not_read(tmp_path / "alias", [("input", tmp_path / "m.onnx"), ("external data file", data)])
    check_not_read(tmp_path / "other", [("external data file", data)])


# --- temporary files: exclusive, unique, never through a link, never left behind ---------------------

def test_report_writer_does_not_follow_a_planted_link(tmp_path):
    from passes.report.writer import write_report_dir

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    for name in ("report.json", "index.html"):   # the old fixed temporary names
        os.symlink(victim, report_dir / f".{name}.tmp")
    write_report_dir(report_dir, {"tool": "passes.apply", "status": "ok"})
    assert victim.read_text() == "precious"
    assert json.loads((report_dir / "report.json").read_text())["status"] == "ok"
    assert sorted(os.listdir(report_dir)) == [".index.html.tmp", ".report.json.tmp", "index.html", "report.json"]


def test_report_files_replace_the_old_pair_together(tmp_path, monkeypatch):
    """A disk that fills up while index.html is written leaves the previous report as it was: report.json
    was put in place first, so the folder held this run's report.json beside the previous run's page
    (found by adv5 writing the micro export's report into a 200 KB tmpfs)."""
    import builtins
    import errno

    from passes.report.writer import write_report_dir

    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "report.json").write_text('{"status": "old"}')
    (report_dir / "index.html").write_text("old page")
    real_open = builtins.open

    def full_disk_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.basename(os.fspath(file)).startswith(".index.html."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk_open)
    with pytest.raises(OSError, match="No space left"):
        write_report_dir(report_dir, {"tool": "passes.apply", "status": "ok"})
    monkeypatch.undo()
    assert (report_dir / "report.json").read_text() == '{"status": "old"}'
    assert (report_dir / "index.html").read_text() == "old page"
    assert sorted(os.listdir(report_dir)) == ["index.html", "report.json"]   # no temporary left


def test_diffview_does_not_follow_a_planted_link(tmp_path):
    from tools.diffview import main as diffview

    model = tmp_path / "a.onnx"
    onnx.save(onnx.parser.parse_model(DUPLICATE_NAMES), model)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, tmp_path / ".diff.html.tmp")
    assert diffview([str(model), str(model), "-o", str(tmp_path / "diff.html")]) == 0
    assert victim.read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == [".diff.html.tmp", "a.onnx", "diff.html", "victim.txt"]


def test_atomic_target_is_exclusive_unique_and_cleaned_up(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_target(target) as first, atomic_target(tmp_path / "other.bin") as second:
        assert first != second and first.parent == tmp_path and first.stat().st_mode & 0o777 != 0
        first.write_bytes(b"new")
        second.write_bytes(b"x")
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError):
        with atomic_target(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("failure in the middle")
    assert target.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["other.bin", "out.bin"]
    with pytest.raises(DestinationError, match="character device"):
        write_text_atomic("/dev/null", "never")


# --- the export CLIs ---------------------------------------------------------------------------------------

def _export(module: str, args: list[str], capsys) -> tuple[int, str]:
    import importlib

    code = importlib.import_module(module).main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("module", ["vmamba_ref.export", "vmamba_ref.mamba1d"])
# "/" and ".": found by s16-adv, a ValueError traceback (no name to put '.ref.npz' after)
@pytest.mark.parametrize("destination", ["/dev/null", "folder", "fifo", "fifo-reference", "link-to-null", "/", "."])
def test_export_clis_check_destinations_before_the_export(module, destination, tmp_path, capsys, monkeypatch):
    import vmamba_ref.export as export

    def no_export(*args, **kwargs):   # the check must come first: the export itself must never start
        raise AssertionError("export started")

    monkeypatch.setattr(export, "_torch_onnx_export", no_export)
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.mkfifo(tmp_path / "x.ref.npz")
    os.symlink("/dev/null", tmp_path / "link-to-null")
    out = {"/dev/null": "/dev/null", "fifo-reference": str(tmp_path / "x.onnx"), "/": "/", ".": "."}.get(
        destination, str(tmp_path / destination))
    before = listing(tmp_path)
    args = (["--model", "micro", "--no-check"] if module.endswith("export") else []) + ["-o", out]
    code, err = _export(module, args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert ("directory" if destination in ("folder", "/", ".") else "not a regular file") in lines[0]
    assert listing(tmp_path) == before and Path("/dev/null").is_char_device()


def test_export_refuses_to_write_over_its_checkpoint(tmp_path, capsys):
    import torch

    from vmamba_ref import build_model, get_config

    ckpt = tmp_path / "weights.onnx"   # a checkpoint named like the output
    torch.save({"model": build_model(get_config("micro"), seed=0).state_dict()}, ckpt)
    data = ckpt.read_bytes()
    code, err = _export("vmamba_ref.export", ["--model", "micro", "--ckpt", str(ckpt), "-o", str(ckpt)], capsys)
    assert code == 2 and "is the checkpoint" in err and "refusing to overwrite" in err, err
    assert ckpt.read_bytes() == data and sorted(os.listdir(tmp_path)) == ["weights.onnx"]


def _crafted_checkpoint(kind: str, path: Path) -> Path:
    """A real torch zip, then damaged: truncated pickle, a persistent id that is not a storage,
    a storage record missing from the archive. It carries an object weights_only refuses, so
    the restricted loader is the one that meets the damage."""
    import argparse

    import torch

    good = path.with_suffix(".good")
    torch.save({"model": {"w": torch.zeros(3)}, "config": argparse.Namespace(lr=1)}, good)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if kind == "truncated-pickle" and name.endswith("data.pkl"):
                data = data[: len(data) - 20]
            if kind == "bad-persistent-id" and name.endswith("data.pkl"):
                data = data.replace(b"X\x07\x00\x00\x00storage", b"X\x07\x00\x00\x00storagx")
            if kind == "missing-storage" and "/data/" in name:
                continue
            target.writestr(name, data)
    good.unlink()
    return path


@pytest.mark.parametrize("kind", ["truncated-pickle", "bad-persistent-id", "missing-storage"])
def test_crafted_checkpoints_are_one_line_errors(kind, tmp_path, capsys):
    ckpt = _crafted_checkpoint(kind, tmp_path / f"{kind}.pt")
    code, err = _export("vmamba_ref.export", ["--model", "micro", "--ckpt", str(ckpt), "-o", str(tmp_path / "x.onnx")],
                        capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {ckpt}: not a checkpoint"), lines[0]
    assert sorted(os.listdir(tmp_path)) == [ckpt.name]


def test_checkpoint_keys_are_escaped_in_the_error(tmp_path, capsys):
    import torch

    ckpt = tmp_path / "evil.pt"
    torch.save({"model": {"layers.0\nerror: fake\x1b[31m": "not a tensor"}}, ckpt)
    code, err = _export("vmamba_ref.export", ["--model", "micro", "--ckpt", str(ckpt), "-o", str(tmp_path / "x.onnx")],
                        capsys)
    assert code == 2 and err.count("\n") == 1 and "\x1b" not in err, repr(err)
    assert "layers.0\\nerror: fake\\x1b[31m" in err


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def with_ctrl_c() -> None:
    """Popen preexec_fn: a child started from a background job inherits SIGINT ignored (POSIX shells
    do that to `cmd &`), and Python then leaves Ctrl-C ignored; the tests send it on purpose."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_export_cli_cleans_up_on_sigterm_like_on_ctrl_c(sig, code, tmp_path):
    # A long sequence: tracing takes seconds, long enough to be interrupted with temporaries on disk.
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([sys.executable, "-m", "vmamba_ref.mamba1d", "--length", "3000", "-o",
                                str(tmp_path / "m.onnx")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=with_ctrl_c)
    try:
        assert _wait_for(lambda: len(os.listdir(tmp_path)) >= 2, 120), "no temporary files appeared"
        process.send_signal(sig)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    # Ctrl-C may also end the export by the signal itself (-SIGINT) once torch's tracing has seen it
    # (one CI run in two); the message and the clean folder below are what the user relies on.
    assert process.returncode in ((code, -sig) if sig == signal.SIGINT else (code,)), err
    assert err.strip().splitlines() == ["error: interrupted (no file written)"]
    assert os.listdir(tmp_path) == []



class _ModuleLock:
    """Stands for importlib's module lock: the weakref callback of one runs during imports."""


@pytest.mark.parametrize("writer", ["atomic_targets", "save_model_atomic"])
@pytest.mark.parametrize("sig, interrupt", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_an_interrupt_whose_exception_python_drops_still_stops_the_write(sig, interrupt, writer, tmp_path, monkeypatch,
                                                                         capfd, request):
    """The flaky test above (one full-suite run in several, rc 0 and m.onnx written): the SIGTERM
    arrived while torch.onnx imported a module, and its handler ran inside importlib's module-lock
    weakref callback, where Python prints the exception ("Exception ignored in: <function
    _get_module_lock.<locals>.cb>") and drops it; the export went on and wrote its files. Ctrl-C
    likewise. The interrupt is recorded and raised again before anything is put in place, and the
    traceback Python printed is not (the CLI's one line is all the user sees).

    In a fresh interpreter (pytest run again on this one test): signal.raise_signal in the pytest process
    crashed it (SIGSEGV, the whole fast suite ended at 36%) whenever tests/test_bench.py's OpenVINO test
    had run before, as the Ctrl-C test below found (9cd2cfd)."""
    if os.environ.get("VMAMBA_TEST_FRESH_INTERPRETER") != "1":
        env = dict(os.environ, VMAMBA_TEST_FRESH_INTERPRETER="1", PYTHONPATH=str(REPO))
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid],
                                capture_output=True, text=True, cwd=REPO, env=env, timeout=600, preexec_fn=with_ctrl_c)
        assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
        return
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))
    called = []

    def work():
        lock = _ModuleLock()
        kept = weakref.ref(lock, lambda ref: called.append(signal.raise_signal(sig)))
        del lock   # the callback runs here, and the signal's handler in it
        assert kept() is None and called == []   # the handler's exception ended the callback

    with pytest.raises(interrupt) as info, sigterm_as_interrupt():
        if writer == "atomic_targets":
            with atomic_targets(tmp_path / "m.onnx", tmp_path / "m.ref.npz") as temporaries:
                work()
                for temporary in temporaries:
                    temporary.write_bytes(b"done")
        else:
            work()
            save_model_atomic(MODEL, tmp_path / "m.onnx")
    assert type(info.value) is interrupt and os.listdir(tmp_path) == []
    assert dropped == [] and capfd.readouterr().err == ""   # not reported as ignored: it was not
    with sigterm_as_interrupt():   # an exception other than an interrupt still is
        kept = weakref.ref(_ModuleLock(), lambda ref: 1 / 0)
    assert kept() is None and dropped == [ZeroDivisionError]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handlers given back
    with sigterm_as_interrupt():   # and a later run is not taken for interrupted
        write_text_atomic(tmp_path / "later.txt", "x")
    assert os.listdir(tmp_path) == ["later.txt"]


# --- references, tolerance ---------------------------------------------------------------------------------

MODEL = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[batch,3] pixels) => (float[batch,3] logits) { logits = Relu(pixels) }
""")
PIXELS = np.ones((1, 3), np.float32)


def _corrupt_member(path: Path) -> Path:
    np.savez_compressed(path, pixels=PIXELS, logits=np.arange(3000, dtype=np.float32).reshape(1000, 3))
    data = bytearray(path.read_bytes())
    start = data.index(b"logits.npy") + 200
    data[start:start + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


def _member_not_npy(path: Path) -> Path:
    """An npz whose expected output is a zip member not named .npy: numpy hands it over as raw bytes."""
    np.savez(path, pixels=PIXELS)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("logits", b"not an array")
    return path


BAD_REFERENCES = {
    "complex": (lambda p: np.savez(p, pixels=PIXELS, logits=PIXELS.astype(np.complex64) * 1j), "complex64"),
    "string": (lambda p: np.savez(p, pixels=PIXELS, logits=np.array(["a", "b", "c"])), "<U1"),
    "object": (lambda p: np.savez(p, pixels=PIXELS, logits=np.array([None, 1, "x"], dtype=object)),
               "not a readable npz (Object arrays cannot be loaded"),
    "corrupt-member": (_corrupt_member, "not a readable npz ("),
    "single-npy": (lambda p: np.save(open(p, "wb"), PIXELS), "not an npz archive"),
    "input-dtype": (lambda p: np.savez(p, pixels=PIXELS.astype(np.float64), logits=PIXELS), "is float64; the model takes float32"),
    "input-shape": (lambda p: np.savez(p, pixels=np.ones((1, 4), np.float32), logits=PIXELS), "has shape [1, 4]"),
    "nan-expected": (lambda p: np.savez(p, pixels=PIXELS, logits=PIXELS * np.nan), "NaN or infinity"),
    # found by adv9 (s23): 'internal error: AttributeError: 'bytes' object has no attribute 'dtype'', exit 1
    "member-not-npy": (_member_not_npy, "member 'logits' is not an .npy array"),
}


@pytest.mark.parametrize("case", list(BAD_REFERENCES))
def test_unusable_references_are_refused(case, tmp_path):
    make, phrase = BAD_REFERENCES[case]
    path = tmp_path / "ref.npz"
    make(path)
    with pytest.raises(ReferenceDataError) as info:
        load_reference(path, MODEL)
    assert phrase in str(info.value) and "\n" not in str(info.value)


def test_a_reference_array_too_large_to_unpack_is_refused_before_unpacking(tmp_path, monkeypatch):
    """Found with a 510 KB npz whose expected output is 512 MB of deflated zeros (adversarial session
    s13): it was unpacked whole (744 MB resident for a 4-float model; 20 MB of npz would take 20 GB).
    The size the zip's directory declares is checked before anything is unpacked."""
    from passes import npz_arrays

    monkeypatch.setattr(npz_arrays, "MAX_NPZ_BYTES", 4096)
    path = tmp_path / "ref.npz"
    np.savez_compressed(path, pixels=PIXELS, logits=np.zeros((1024, 3), np.float32), unused=np.zeros(9999))
    unpacked = zipfile.ZipFile(path).getinfo("logits.npy").file_size
    with pytest.raises(ReferenceDataError) as info:
        load_reference(path, MODEL)
    assert str(info.value) == (f"reference {path}: array 'logits' unpacks to {unpacked:,} bytes, over the 4,096 "
                               "one array may take")
    np.savez_compressed(path, pixels=PIXELS, logits=np.zeros((300, 3), np.float32), unused=np.zeros(9999))
    feeds, expected = load_reference(path, MODEL)   # under the cap, and a member the model does not use is not read
    assert expected["logits"].shape == (300, 3)


def test_reference_arrays_too_large_to_unpack_together_are_refused_before_unpacking(tmp_path, monkeypatch):
    """Found by adv3 (s17): the cap was per array, so a model of 6 outputs and a 6 MB npz of six 1 GiB
    members of deflated zeros took 6.4 GB of memory before the first shape check refused it (100
    outputs: 100 GiB). The arrays the model uses are capped all together, before any is unpacked."""
    from passes import npz_arrays

    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y0, float[4] y1) { y0 = Identity(x)  y1 = Neg(x) }""")
    path = tmp_path / "ref.npz"
    np.savez_compressed(path, x=np.zeros(4, np.float32), y0=np.zeros(4, np.float32), y1=np.zeros(4, np.float32))
    sizes = [zipfile.ZipFile(path).getinfo(f"{key}.npy").file_size for key in ("x", "y0", "y1")]
    monkeypatch.setattr(npz_arrays, "MAX_NPZ_BYTES", sum(sizes) - 1)   # each under it, not all three
    unpacked = []
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, key: unpacked.append(key))
    with pytest.raises(ReferenceDataError) as info:
        load_reference(path, model)
    assert str(info.value) == (f"reference {path}: the 3 arrays read unpack to {sum(sizes):,} bytes in all, "
                               f"over the {sum(sizes) - 1:,} they may take")
    assert unpacked == []


@pytest.mark.parametrize("case", ["complex", "object", "corrupt-member", "member-not-npy"])
def test_apply_refuses_unusable_references_with_exit_2(case, tmp_path):
    model_path = tmp_path / "m.onnx"
    onnx.save(MODEL, model_path)
    BAD_REFERENCES[case][0](tmp_path / "m.ref.npz")
    before = listing(tmp_path)
    result = apply_cli(model_path, "--pipeline", "eliminate-dead-nodes", "-o", tmp_path / "o.onnx")
    assert_one_line_error(result, 2)
    assert "Warning" not in result.stderr and listing(tmp_path) == before


def test_tolerance_must_be_a_finite_number():
    assert check_tolerance(0.0) == 0.0 and check_tolerance(1e-5) == 1e-5
    for bad in (float("nan"), float("inf"), -1e-9):
        with pytest.raises(ValueError, match="--tolerance must be >= 0 and finite"):
            check_tolerance(bad)


# --- invalid models -----------------------------------------------------------------------------------------

CYCLE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4] x) => (float[4] y) { a = Relu(b)  b = Neg(a)  y = Add(a, x) }
"""
DUPLICATE_NAMES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4] x) => (float[4] y) { a = Relu(x)  b = Neg(x)  y = Add(a, b) }
"""


def _invalid(kind: str) -> onnx.ModelProto:
    if kind == "cycle":
        return onnx.parser.parse_model(CYCLE)
    if kind == "subgraph-node-shadows-outer":   # found by adv4 (s18): onnx.checker's SSA spans scopes; --verify
        model = subgraph_weight_model()         # none wrote the model, which nothing loads (exit 0)
        branch = next(a.g for a in model.graph.node[1].attribute if a.name == "else_branch")
        branch.node[0].output[0] = branch.output[0].name = "cond"
        return model
    model = onnx.parser.parse_model(DUPLICATE_NAMES)
    if kind == "duplicate-tensor":
        model.graph.node[1].output[0] = "a"
    elif kind == "duplicate-graph-output":
        model.graph.output.append(model.graph.output[0])
    elif kind == "unknown-op":
        model.graph.node[1].op_type = "Frobnicate"
    elif kind == "future-opset":
        model.opset_import[0].version = 999
    elif kind == "op-newer-than-opset":
        model.graph.node[0].op_type = "Gelu"   # opset 20
    elif kind == "undefined-input":
        model.graph.node[0].input[0] = "nowhere"
    elif kind == "ancient-ir":   # found by s13's hostile models: compiled, and written out as invalid
        model.ir_version = 1
    elif kind == "negative-ir":
        model.ir_version = -1
    elif kind == "recursive-function":   # found by s13: compiled with --verify none into a model nothing runs
        model.opset_import.append(oh.make_opsetid("local", 1))
        model.functions.append(oh.make_function("local", "F", ["a"], ["b"], [oh.make_node("F", ["a"], ["b"], domain="local")],
                                                opset_imports=[oh.make_opsetid("local", 1)]))
        model.graph.node[1].op_type, model.graph.node[1].domain = "F", "local"
    elif kind == "duplicate-function":   # found by s13: written out with --verify none; ONNX Runtime refuses it
        model.opset_import.append(oh.make_opsetid("local", 1))
        for _ in range(2):
            model.functions.append(oh.make_function("local", "F\n", ["a"], ["b"], [oh.make_node("Neg", ["a"], ["b"])],
                                                    opset_imports=[oh.make_opsetid("", 17)]))
        model.graph.node[1].op_type, model.graph.node[1].domain = "F\n", "local"
    elif kind == "not-utf8":   # found by s13: proto2 keeps such a name as bytes; a pass died on it (exit 1)
        model.graph.node[0].output[0] = model.graph.node[2].input[0] = "a\x01\x02"
        model = onnx.ModelProto.FromString(model.SerializeToString().replace(b"a\x01\x02", b"a\xed\xa0"))
    # found by s14: written out with --verify none (ONNX Runtime refuses each), or a pass failed on it (exit 4)
    elif kind == "unknown-attribute":
        model.graph.node[0].attribute.append(oh.make_attribute("bogus", 3))
    elif kind == "attribute-of-the-wrong-type":
        model.graph.node[2].op_type = "Concat"
        model.graph.node[2].attribute.append(oh.make_attribute("axis", "zero"))
    elif kind == "missing-attribute":
        model.graph.node[2].op_type = "Concat"
    elif kind == "too-many-inputs":
        model.graph.node[0].input.append("x")
    elif kind == "deprecated-op":
        model.opset_import[0].version = 10
        model.graph.node[0].op_type = "Upsample"
    # found by s15-adv: onnx-graphsurgeon reads no sparse tensor; a sparse initializer became dense
    # float64 zeros (written so with --verify none), a sparse Constant a model ONNX Runtime refused
    elif kind in ("sparse-initializer", "sparse-constant"):
        sparse = oh.make_sparse_tensor(onnx.numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "w"),
                                       onnx.numpy_helper.from_array(np.array([1, 3], np.int64), "w_idx"), [4])
        if kind == "sparse-initializer":
            model.graph.sparse_initializer.append(sparse)
        else:
            model.graph.node.insert(0, oh.make_node("Constant", [], ["w"], sparse_value=sparse))
        model.graph.node[-1].input[1] = "w"
    # found by s16-adv: ONNX Runtime and onnx-graphsurgeon each took one of the two, so every
    # pipeline failed verification (exit 3) and --verify none wrote a model computing other numbers
    elif kind == "duplicate-initializer":
        for value in (1.0, 2.0):
            model.graph.initializer.append(onnx.numpy_helper.from_array(np.full(4, value, np.float32), "w"))
        model.graph.node[2].input[1] = "w"
    elif kind == "duplicate-graph-input":
        model.graph.input.append(model.graph.input[0])
    # found by adv4 (s18): onnx-graphsurgeon's export failed on an optional or a map (UnboundLocalError,
    # exit 1 after the work, --verify none too) and wrote a sequence of sequences back as a sequence of untyped tensors
    elif kind == "optional-value":
        tensor_type = oh.make_tensor_type_proto(TensorProto.FLOAT, [4])
        model.graph.value_info.append(oh.make_value_info(model.graph.node[0].output[0], oh.make_optional_type_proto(tensor_type)))
    elif kind in ("value-info-retypes-an-output", "value-info-twice"):   # found by adv4 (s18): onnx-graphsurgeon
        # gives a value its last value_info's type: the compiled model's output became double [7] while ONNX
        # Runtime ran the input's float (exit 3 blaming the pipeline; --verify none wrote a model nothing loads)
        name = model.graph.output[0].name if kind == "value-info-retypes-an-output" else model.graph.node[0].output[0]
        if kind == "value-info-twice":
            model.graph.value_info.append(oh.make_tensor_value_info(name, TensorProto.FLOAT, None))
        model.graph.value_info.append(oh.make_tensor_value_info(name, TensorProto.DOUBLE, [7]))
    elif kind == "function-overload":   # found by adv4 (s18): onnx-graphsurgeon drops overloads: verification
        # failed (exit 3), and --verify none wrote two functions local::F, an invalid model (exit 0)
        model.opset_import.append(oh.make_opsetid("local", 1))
        for overload, op in (("neg", "Neg"), ("relu", "Relu")):
            function = oh.make_function("local", "F", ["a"], ["b"], [oh.make_node(op, ["a"], ["b"])],
                                        opset_imports=[oh.make_opsetid("", 17)])
            function.overload = overload
            model.functions.append(function)
        model.graph.node[1].op_type, model.graph.node[1].domain, model.graph.node[1].overload = "F", "local", "relu"
    elif kind in ("string-initializer", "int4-constant"):   # found by adv4 (s18): onnx-graphsurgeon writes
        # neither back (TypeError / ValueError on export: exit 1 after the work; a Constant once a pass folds it)
        tensor = (oh.make_tensor("w", TensorProto.STRING, [2], [b"a", b"b"]) if kind == "string-initializer"
                  else oh.make_tensor("w", TensorProto.INT4, [4], [1, 2, 3, 4]))
        if kind == "string-initializer":
            model.graph.initializer.append(tensor)
        else:
            model.graph.node.insert(0, oh.make_node("Constant", [], ["w4"], value=tensor))
    elif kind == "sequence-of-sequences-output":
        inner = oh.make_sequence_type_proto(oh.make_tensor_type_proto(TensorProto.FLOAT, [4]))
        model.graph.output[0].type.CopyFrom(oh.make_sequence_type_proto(inner))
    return model


INVALID_MODELS = {
    "cycle": "graph has a cycle through a (Relu|Neg) node",
    "duplicate-tensor": "tensor 'a' in graph is produced twice",
    "duplicate-graph-output": "output name 'y' is listed twice",
    "unknown-op": "no op 'Frobnicate' in opset 17",
    "future-opset": "opset 999 is newer than the newest this onnx knows",
    "op-newer-than-opset": "no op 'Gelu' in opset 17",
    "undefined-input": "reads 'nowhere', which nothing produces",
    "ancient-ir": r"IR version 1 is older than 3, the first with opset imports \(onnx.checker refuses it\)",
    "negative-ir": r"IR version -1 is older than 3",
    "recursive-function": r"model-local functions call each other in a cycle: local::F -> local::F",
    "duplicate-function": r"model-local function local::F\\n is defined twice",
    "not-utf8": r"a NodeProto's output holds bytes that are not UTF-8 text: b'a\\xed\\xa0'",
    "unknown-attribute": r"a Relu node in graph: Unrecognized attribute: bogus for operator Relu$",
    "attribute-of-the-wrong-type": r"a Concat node in graph: Mismatched attribute type in ' : axis'. Expected: 'INT', actual: 'STRING'$",
    "missing-attribute": r"a Concat node in graph: Required attribute 'axis' is missing.$",
    "too-many-inputs": r"a Relu node in graph: Node with schema\(::Relu:14\) has input size 2 not in range \[min=1, max=1\].$",
    "deprecated-op": r"a Upsample node in graph: Op registered for Upsample is deprecated in domain_version of 10$",
    "sparse-initializer": r"sparse initializer 'w': sparse tensors are not supported \(store it dense\)$",
    "sparse-constant": r"a Constant node holds a sparse tensor attribute: sparse tensors are not supported",
    "duplicate-initializer": r"initializer 'w' is defined twice in graph$",
    "duplicate-graph-input": r"input name 'x' is listed twice in graph$",
    "value-info-retypes-an-output": r"value_info 'y' of graph '.*' gives a value another type than its graph output entry$",
    "value-info-twice": r"value_info '.*' of graph '.*' gives a value another type than its earlier value_info entry$",
    "function-overload": r"model-local function local::F:neg is an overload: function overloads are not supported$",
    "subgraph-node-shadows-outer": r"tensor 'cond' in subgraph 'else_branch' of node 'branch' \(If\) is produced twice: by the outer graph and by node 'neg' \(Neg\)$",
    "string-initializer": r"tensor 'w' is STRING: stored tensors of 4-bit types and strings are not supported$",
    "int4-constant": r"tensor 'w' is INT4: stored tensors of 4-bit types and strings are not supported$",
    "optional-value": r"value_info '.*' of graph '.*' is an optional: only tensors and sequences of tensors are supported$",
    "sequence-of-sequences-output": r"output 'y' of graph '.*' is a sequence of sequences: only tensors and sequences",
}


@pytest.mark.parametrize("kind", list(INVALID_MODELS))
def test_invalid_models_are_named(kind):
    with pytest.raises(InvalidModelError, match=INVALID_MODELS[kind]):
        check_model(_invalid(kind))


def test_valid_models_pass_the_model_check(tmp_path):
    check_model(onnx.parser.parse_model(DUPLICATE_NAMES))
    check_model(subgraph_weight_model())   # the branch reads x from the outer scope
    sequences = onnx.parser.parse_model(DUPLICATE_NAMES)   # a sequence of tensors is carried
    sequences.graph.value_info.append(oh.make_value_info(sequences.graph.node[0].output[0], oh.make_sequence_type_proto(
        oh.make_tensor_type_proto(TensorProto.FLOAT, [4]))))
    check_model(sequences)
    named = onnx.parser.parse_model(DUPLICATE_NAMES)   # a value_info repeating an output, its dims named otherwise
    output = named.graph.output[0]
    output.type.tensor_type.shape.dim[0].dim_param = "batch"
    repeated = onnx.ValueInfoProto()
    repeated.CopyFrom(output)
    repeated.type.tensor_type.shape.dim[0].dim_param = "N"
    named.graph.value_info.append(repeated)
    check_model(named)
    with pytest.raises(InvalidModelError, match="node 'add_w' .Add. in subgraph 'then_branch' of node 'branch' .If. reads 'nowhere'"):
        model = subgraph_weight_model()
        next(a.g for a in model.graph.node[1].attribute if a.name == "then_branch").node[0].input[0] = "nowhere"
        check_model(model)


def test_diffview_refuses_a_cyclic_model_and_a_folder_as_output(tmp_path, capsys):
    from tools.diffview import main as diffview

    good, cyclic = tmp_path / "good.onnx", tmp_path / "cyclic.onnx"
    onnx.save(onnx.parser.parse_model(DUPLICATE_NAMES), good)
    onnx.save(onnx.parser.parse_model(CYCLE), cyclic)
    (tmp_path / "folder").mkdir()
    before = listing(tmp_path)
    assert diffview([str(cyclic), str(good)]) == 2
    assert capsys.readouterr().err == f"error: {cyclic}: graph has a cycle through a Relu node\n"
    assert diffview([str(good), str(good), "-o", str(tmp_path / "folder")]) == 2
    assert "output is a directory" in capsys.readouterr().err
    assert listing(tmp_path) == before


# --- names with control characters ---------------------------------------------------------------------

def test_printable_escapes_controls_and_keeps_the_rest():
    assert printable("y\nerror: fake\x1b[31m\x00\x7f\u2028\u202e") == "y\\nerror: fake\\x1b[31m\\x00\\x7f\\u2028\\u202e"
    assert printable("naïve/ß 模型 [bold]") == "naïve/ß 模型 [bold]"
    assert printable(Path("a\tb")) == "a\\tb"


def test_diffview_text_escapes_names_from_the_model(tmp_path, capsys):
    from tools.diffview import main as diffview

    evil = "evil\n== group 9: fake\x1b[2J"
    models = []
    for op in ("Neg", "Relu"):
        model = onnx.parser.parse_model(DUPLICATE_NAMES)
        model.graph.node[1].op_type = op
        model.graph.node[1].output[0] = model.graph.node[2].input[1] = evil   # the tensor b
        models.append(model)
    before, after = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(models[0], before)
    onnx.save(models[1], after)
    assert diffview([str(before), str(after), "--text"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\n== group 9" not in out
    assert "at evil\\n== group 9: fake\\x1b[2J" in out


def test_diffview_never_reads_external_data_from_the_working_folder(tmp_path, capsys, monkeypatch):
    """Found by a hostile model whose 4-float weight names 'secret.bin': diffview printed the values of
    ./secret.bin (the working folder, not the model's) inline in the diff. Weights in files are shown
    by type and shape, never read."""
    from tools.diffview import main as diffview

    secret = np.array([1.5, 2.5, 3.5, 4.5], np.float32)
    secret.tofile(tmp_path / "secret.bin")
    (tmp_path / "models").mkdir()
    paths = []
    for op in ("Add", "Sub"):
        model = top_weight_model("secret.bin")
        model.graph.node[0].op_type = op
        paths.append(tmp_path / "models" / f"{op}.onnx")
        onnx.save(model, paths[-1])
    monkeypatch.chdir(tmp_path)
    assert diffview([str(paths[0]), str(paths[1]), "--text"]) == 0
    out = capsys.readouterr().out
    assert "1.5" not in out
    assert "- %out0 = Add(%in0, const<f32[4]>)" in out and "+ %out0 = Sub(%in0, const<f32[4]>)" in out


# --- the report page ---------------------------------------------------------------------------------------

def test_report_json_island_has_no_raw_less_than(tmp_path):
    from passes.report.html import render_html
    from passes.report.writer import complete_report

    evil = "<!--<script>"
    description = {"regions": 1, "groups_total": 1, "removed_nodes": 1, "added_nodes": 1, "hidden_groups": {},
                   "groups": [{"count": 1, "removed_nodes": 1, "added_nodes": 1, "removed_ops": {"Relu": 1},
                               "added_ops": {"Neg": 1},
                               "instances": [{"anchor": evil, "before": [["node", f"%0 = Relu(%in0)", evil]],
                                              "after": [["node", "%0 = Neg(%in0)", "</script><b>"]]}]}]}
    report = {"pipeline_name": "x", "input": "m.onnx", "status": "ok",
              "run": {"nodes_before": 1, "passes": [{"name": "p", "changed": True, "nodes_before": 1, "nodes_after": 1,
                                                      "seconds": 0.0, "check_seconds": 0.0, "verify_seconds": 0.0,
                                                      "stats": {}, "notes": [], "ops_delta": {}}]}}
    page = render_html(complete_report(report), {0: description})
    opening = '<script type="application/json" id="region-data">'
    island = page[page.index(opening) + len(opening):]
    island = island[: island.index("</script>")]
    assert "<" not in island
    assert json.loads(island)["0"][0][0]["anchor"] == evil
    assert evil not in page.replace("&lt;!--&lt;script&gt;", "")   # elsewhere it is HTML-escaped



def test_report_page_shows_names_with_their_controls_escaped(tmp_path):
    """Found by adv4 (s18): index.html held names from the model raw, HTML-escaped only: a right-to-left
    override in a node's name showed the rest of its note, anchor or tooltip reversed, an ESC or a NUL
    hid in the page (and in the JSON its script shows); now written as the terminal shows them (\\u202e)."""
    from scan_testing import TINY_MODEL_TEXT
    from pipelines import compile_model

    evil = "\u202eevil\x1b[31m\n\x00"
    model = onnx.parser.parse_model(TINY_MODEL_TEXT)
    for index, node in enumerate(model.graph.node):
        node.name = f"n{index}{evil}"
    for node in model.graph.node:
        node.output[:] = [name + evil if name == "y" else name for name in node.output]
    model.graph.output[0].name = "y" + evil
    compile_model(model, "eliminate-dead-nodes,fold-constants", report=tmp_path / "r")
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert not any(character in page for character in "\u202e\x1b\x00"), [c for c in "\u202e\x1b\x00" if c in page]
    assert "y\\u202eevil\\x1b[31m\\n\\x00" in page                      # the output's name, escaped
    assert "n4\\u202eevil\\x1b[31m\\n\\x00" in page                     # the removed Exp's name (a tooltip)
    island = page[page.index('id="region-data">'):]
    assert "\\\\u202e" in island   # in the script's JSON too: the escape as text, shown as such

# --- the docs writers go through the one temporary writer (found by s13's adversarial pass) ----------------

def _bench_result() -> dict:
    return {"model": "micro", "threads": 1, "batches": [1], "machine": {"cpu": "test cpu"}, "rows": [
        {"key": "naive", "label": "naive", "times": {"1": [0.5]}}]}


@pytest.mark.parametrize("writer", ["bench-section", "bench-json", "bench-png", "nodecount-png"])
@pytest.mark.parametrize("link", ["temporary-name", "destination"])
def test_docs_writers_never_write_through_a_planted_link(writer, link, tmp_path):
    """tools.bench_report wrote docs/BENCHMARKS.md through '<name>.tmp', a fixed name: a link planted
    there was followed (its target overwritten) and two runs shared one temporary file; the PNG
    writers saved straight to the destination, through a link planted there."""
    from tools import bench_report, plot_nodecounts

    victim = tmp_path / "victim"
    victim.write_text("precious")
    name = {"bench-section": "BENCH.md", "bench-json": "bench.json", "bench-png": "bench.png",
            "nodecount-png": "nodecounts.png"}[writer]
    target = tmp_path / name
    planted = [f"{name}.tmp", f".{name}.tmp"] if link == "temporary-name" else [name]
    for planted_name in planted:
        os.symlink(victim, tmp_path / planted_name)
    if writer == "bench-section":
        bench_report.write_section(target, "micro:1-core", "| table |\n")
    elif writer == "bench-json":
        bench_report.write_json(target, _bench_result())
    elif writer == "bench-png":
        bench_report.write_png(target, bench_report.derive(_bench_result()))
    else:
        report = {"pipeline_name": "cpu", "input": "m.onnx", "run": {"nodes_before": 5, "passes": [
            {"name": "eliminate-dead-nodes", "nodes_after": 4, "changed": True}]}}
        plot_nodecounts.plot([report], target)
    assert victim.read_text() == "precious"
    assert target.is_file() and not target.is_symlink() and target.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({name, "victim", *planted})


@pytest.mark.parametrize("case", ["device", "folder", "missing-folder", "report-is-a-list", "pass-without-counts"])
def test_plot_nodecounts_refuses_bad_destinations_and_reports_in_one_line(case, tmp_path, capsys):
    """Found by s14: -o /dev/null or a folder was a traceback (exit 1), -o /missing/x.png made /missing,
    a report.json of the wrong shape a traceback."""
    from tools import plot_nodecounts

    report = tmp_path / "report.json"
    good = {"pipeline_name": "cpu", "run": {"nodes_before": 5, "passes": [{"name": "p", "nodes_after": 4, "changed": True}]}}
    report.write_text(json.dumps({"report-is-a-list": [good], "pass-without-counts": {
        "run": {"nodes_before": 5, "passes": [{"name": "p"}]}}}.get(case, good)))
    (tmp_path / "folder").mkdir()
    output = {"device": "/dev/null", "folder": tmp_path / "folder", "missing-folder": tmp_path / "missing" / "x.png"}.get(
        case, tmp_path / "x.png")
    before = listing(tmp_path)
    assert plot_nodecounts.main([str(report), "-o", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert listing(tmp_path) == before


def test_tpu_check_never_empties_a_relative_workdir_holding_the_model(tmp_path, monkeypatch):
    """Found by s14: prepare_workdir compared the resolved paths it keeps with the workdir as given,
    so a library caller's relative workdir (an earlier run's, marked) was emptied, the model in it too."""
    from tools.tpu_check import WORKDIR_MARK, UsageError, prepare_workdir

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / WORKDIR_MARK).write_text("made by tools.tpu_check\n")
    (tmp_path / "w" / "m.onnx").write_bytes(b"model")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"--workdir .*/w holds the model \(.*/w/m\.onnx\) and would be emptied"):
        prepare_workdir(Path("w"), [("the model", (tmp_path / "w" / "m.onnx").resolve())])
    assert (tmp_path / "w" / "m.onnx").read_bytes() == b"model"


def test_tpu_check_never_empties_a_workdir_holding_the_models_weights(tmp_path, capsys):
    """adv24: tools.tpu_check kept from its --workdir's emptying the model, its npz files and the working folder, not
    the model's external data: a workdir an earlier run made (marked) that holds the model's weights now (m.onnx
    beside it, its data in w/w.bin, --workdir w) was emptied, the weights with it (after they were read: the run went
    on). Now refused, nothing touched."""
    from tools import tpu_check
    from tools.tpu_check import WORKDIR_MARK

    model = save_with_data(tmp_path, top_weight_model("w/w.bin"), data_name=None)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "w.bin").write_bytes(WEIGHT.tobytes())
    (tmp_path / "w" / WORKDIR_MARK).write_text("made by tools.tpu_check\n")
    assert tpu_check.main([str(model), "--workdir", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err == (f"error: --workdir {tmp_path}/w holds an external data file of the model "
                                       f"({tmp_path}/w/w.bin) and would be emptied; give another folder\n")
    assert (tmp_path / "w" / "w.bin").read_bytes() == WEIGHT.tobytes()


def test_a_destination_linking_to_an_open_file_is_refused(tmp_path, capsys):
    """Found by s14: 'tools.diffview a b -o /dev/stdout' with stdout redirected to a file passed the
    check (a link to a regular file) and the atomic rename replaced the link /dev/stdout itself with
    a regular file, for every process on the machine. Any link into /proc/<pid>/fd is refused now."""
    from tools import diffview

    sink = tmp_path / "sink.txt"
    with open(sink, "w") as handle:
        link = tmp_path / "stdout"
        os.symlink(f"/proc/self/fd/{handle.fileno()}", link)
        with pytest.raises(DestinationError, match=r"output .*/stdout is a link to an open file \(/proc/self/fd/\d+\)"):
            check_destination(link)
        chained = tmp_path / "chained"
        os.symlink(link, chained)   # a link to /dev/stdout, say
        with pytest.raises(DestinationError, match="is a link to an open file"):
            check_destination(chained)
        through_folder = tmp_path / "through-folder"
        os.symlink(f"/dev/fd/{handle.fileno()}", through_folder)   # /dev/fd is itself a link to /proc/self/fd
        with pytest.raises(DestinationError, match=r"is a link to an open file \(/proc/\d+/fd/\d+\)"):
            check_destination(through_folder)
        model = tmp_path / "m.onnx"
        onnx.save(onnx.parser.parse_model(DUPLICATE_NAMES), model)
        assert diffview.main([str(model), str(model), "-o", str(link)]) == 2
    assert "is a link to an open file" in capsys.readouterr().err
    assert link.is_symlink() and chained.is_symlink() and through_folder.is_symlink() and sink.read_text() == ""


_CTRL_C_BETWEEN_RENAMES = """
import os, signal, sys, time
from pathlib import Path
import passes.files as files

folder = Path(sys.argv[1])
model, reference = folder / "naive.onnx", folder / "naive.ref.npz"
real_replace = os.replace

def replace_then_ctrl_c(source, destination):
    real_replace(source, destination)
    # Raised in this (the main) thread: os.kill(getpid()) may land on an idle library thread, which a
    # loaded machine can leave unscheduled until after the script ends (the signal then never seen).
    signal.raise_signal(signal.SIGINT)   # arrives between the two renames
    time.sleep(0.05)

files.os.replace = replace_then_ctrl_c
try:
    with files.atomic_targets(model, reference, suffixes=(".onnx.tmp", ".npz.tmp")) as (new_model, new_reference):
        new_model.write_text("new model")
        new_reference.write_text("new reference")
except KeyboardInterrupt:
    print("interrupted after the block")
"""


def test_a_model_and_its_reference_are_replaced_together_despite_ctrl_c(tmp_path):
    """Found by s14: the export wrote naive.onnx and naive.ref.npz with two nested atomic_targets; a
    Ctrl-C between their renames left the new reference beside the old model (passes.apply then
    verified one against the other). The renames now hold Ctrl-C back until both are in place.
    In a fresh interpreter: a real SIGINT to the pytest process itself crashed it (SIGSEGV in the
    signal handler) once tests/test_bench.py had run OpenVINO in it."""
    model, reference = tmp_path / "naive.onnx", tmp_path / "naive.ref.npz"
    model.write_text("old model")
    reference.write_text("old reference")
    done = subprocess.run([sys.executable, "-c", _CTRL_C_BETWEEN_RENAMES, str(tmp_path)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
                          preexec_fn=with_ctrl_c)
    assert (done.returncode, done.stdout, done.stderr) == (0, "interrupted after the block\n", "")
    assert (model.read_text(), reference.read_text()) == ("new model", "new reference")
    assert listing(tmp_path) == ["naive.onnx", "naive.ref.npz"]


def test_a_destination_name_too_long_for_the_files_beside_it_is_refused_before_the_work(tmp_path):
    """Found by s14: -o with a 245-character name ran the whole pipeline, then failed to make its
    temporary file ('.NAME.tmp-...': File name too long). Exit 2 either way; now before the work."""
    from pipelines.compiler import BadInput, compile_model

    model = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model(DUPLICATE_NAMES), model)

    long_name = "a" * 245 + ".onnx"
    with pytest.raises(BadInput, match=r"output name a{245}\.onnx is too long: the files written beside it"):
        compile_model(model, "eliminate-dead-nodes", output=tmp_path / long_name, verify="none",
                      progress=_FailOnFirstPass())
    check_destination(tmp_path / ("a" * 200 + ".onnx"))   # room left for what is derived from it
    with pytest.raises(BadInput, match=r"--report folder .* cannot be made: a name in it is longer than the 255 bytes"):
        compile_model(model, "eliminate-dead-nodes", report=tmp_path / "new" / ("r" * 256), verify="none",
                      progress=_FailOnFirstPass())
    assert listing(tmp_path) == ["m.onnx"]


class _FailOnFirstPass:
    """A progress hook that fails the test if a pass starts (the check must come before the work)."""

    def __getattr__(self, name):
        from passes.manager import ProgressHook
        return getattr(ProgressHook(), name)

    def pass_started(self, index, total, pass_):
        pytest.fail("a pass ran before the destination was refused")


@pytest.mark.parametrize("text", [None, '{"pipeline": "cpu", "compile_', "[1, 2]", "\xff\xfe"])
def test_bench_reuses_only_a_sidecar_it_can_read(text, tmp_path):
    """Found by s14: tools.bench --reuse-compiled json.loads' a compiled graph's KEY.json as it found
    it: one cut short (written in place before s14) or a list was a traceback, not a recompile."""
    from tools.bench import read_sidecar

    sidecar = tmp_path / "cpu.json"
    if text is not None:
        sidecar.write_bytes(text.encode("latin-1"))
    assert read_sidecar(sidecar) is None
    sidecar.write_text('{"pipeline": "cpu"}')
    assert read_sidecar(sidecar) == {"pipeline": "cpu"}


def test_diffview_never_writes_over_a_compared_models_weights(tmp_path, capsys):
    """Found by s14: 'tools.diffview in.onnx in.onnx -o in.data' replaced the weights file of the model
    it compared (diffview reads no weights, but they are the model's): the model was lost."""
    from tools import diffview

    path = save_with_data(tmp_path / "m", top_weight_model("w.bin"))
    before = (tmp_path / "m" / "w.bin").read_bytes()
    assert diffview.main([str(path), str(path), "-o", str(tmp_path / "m" / "w.bin")]) == 2
    assert capsys.readouterr().err == (f"error: output {tmp_path}/m/w.bin is the external data file of "
                                       f"{tmp_path}/m/model.onnx {tmp_path}/m/w.bin, which this run reads; "
                                       "refusing to overwrite it\n")
    assert (tmp_path / "m" / "w.bin").read_bytes() == before and listing(tmp_path / "m") == ["model.onnx", "w.bin"]


def test_a_folder_another_run_makes_meanwhile_is_taken_not_claimed(tmp_path, monkeypatch):
    """Two runs writing reports under one new folder: the one whose mkdir comes second used to fail
    (FileExistsError, 'cannot write the report'); it now uses the folder and never removes it."""
    import passes.files as files

    real_mkdir = os.mkdir

    def made_meanwhile(path, *args):
        real_mkdir(path, *args)   # the other run
        real_mkdir(path, *args)   # ours: FileExistsError

    monkeypatch.setattr(files.os, "mkdir", made_meanwhile)
    assert files.make_folders(tmp_path / "R" / "sub") == []
    monkeypatch.setattr(files.os, "mkdir", real_mkdir)
    files.remove_empty_folders([])
    assert (tmp_path / "R" / "sub").is_dir()


# --- tools that hand a model to ONNX Runtime themselves -----------------------------------------

def _failing_reshape_model() -> onnx.ModelProto:
    """Loads in ONNX Runtime, fails when run: a Reshape of 4 values to 3, named with an ESC and a newline."""
    graph = oh.make_graph([oh.make_node("Reshape", ["x", "s"], ["y"], name="evil\x1b[31m\nname")], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(np.array([3], np.int64), "s")])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("tool", ["ort_profile", "tpu_check"])
@pytest.mark.parametrize("case", ["fails-when-run", "data-outside-its-folder"])
def test_tools_refuse_a_model_onnx_runtime_cannot_run_in_one_line(tool, case, tmp_path):
    """Found by adv4 (s18): tools.tpu_check ended in a traceback (exit 1) on a model ONNX Runtime
    refuses (external data outside its folder) or fails to run, after making its --workdir, and
    tools.ort_profile on one that fails when run; both let ONNX Runtime's own error log print the
    node's name raw (ESC, newline) on stderr."""
    folder = tmp_path / "m"
    if case == "fails-when-run":
        model = save_with_data(folder, _failing_reshape_model(), data_name=None)
    else:
        (tmp_path / "secret.bin").write_bytes(WEIGHT.tobytes())
        model = save_with_data(folder, top_weight_model("../secret.bin"), data_name=None)
    workdir = tmp_path / "work"
    extra = ["--workdir", str(workdir)] if tool == "tpu_check" else ["--runs", "1"]
    result = subprocess.run([sys.executable, "-m", f"tools.{tool}", str(model), *extra], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    # (ort_profile since adv23 and tpu_check since adv24 read the model and its data themselves, and hand ONNX Runtime
    # what they read: refused there)
    read_first = case == "data-outside-its-folder"
    assert_one_line_error(result, 2, "'..' leaves the model's folder; refused" if read_first else "ONNX Runtime cannot")
    assert "\x1b" not in result.stderr and result.stderr.count("\n") <= 2, result.stderr
    assert not workdir.exists()


@pytest.mark.parametrize("tool", ["ort_profile", "tpu_check", "tpu_calibration"])
def test_tools_refuse_inputs_too_large_to_make_random_data_for(tool, tmp_path):
    """Found by adv4 (s18): a 100-byte model declaring an input of 2^30 floats made tools.tpu_check and
    tools.ort_profile allocate 8 GiB of random float64 (and 2^40: a MemoryError traceback, exit 1), and
    tools.tpu_calibration 'synthetic' count times that; the compiler caps its random inputs at
    passes.verify.MAX_RANDOM_FEED_ELEMENTS (2^28, all together), and so do the tools now, before any."""
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2**40])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2**40])])
    model = tmp_path / "huge.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8), model)
    args = {"ort_profile": [str(model), "--runs", "1"], "tpu_check": [str(model), "--workdir", str(tmp_path / "work")],
            "tpu_calibration": ["synthetic", str(model), "--count", "1", "-o", str(tmp_path / "cal.npz")]}[tool]
    result = subprocess.run([sys.executable, "-m", f"tools.{tool}", *args], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert_one_line_error(result, 2, "1,099,511,627,776 elements, too many to make")
    assert not (tmp_path / "work").exists() and not (tmp_path / "cal.npz").exists()


def test_tpu_check_refuses_an_npz_that_unpacks_too_large_before_unpacking(tmp_path, monkeypatch):
    """Found by adv4 (s18): tools.tpu_check unpacked every member of its --input npz and --calibration set
    (a few MB of deflated zeros unpack to tens of GB), while the compiler refuses such a reference npz
    before unpacking it; the tool now sums the sizes the zip's directory declares first, under the same
    cap (passes.npz_arrays.MAX_NPZ_BYTES; 64 bytes here)."""
    from passes import npz_arrays
    from tools import tpu_check

    np.savez_compressed(tmp_path / "in.npz", x=np.zeros((4, 4), np.float32))   # 64 bytes of data, 192 with headers
    monkeypatch.setattr(npz_arrays, "MAX_NPZ_BYTES", 64)
    unpacked = []
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, key: unpacked.append(key))
    with pytest.raises(tpu_check.UsageError, match=r"input npz .*in\.npz: array 'x' unpacks to 192 bytes, over the 64 one array may take"):
        tpu_check.make_inputs([("x", (4, 4), np.float32)], tmp_path / "in.npz")
    assert unpacked == []


def test_tpu_check_refuses_an_npz_member_that_is_not_an_array(tmp_path):
    """Found by adv9 (s23): a zip member not named .npy comes out of numpy's NpzFile as its raw bytes;
    tools.tpu_check took them for an array (AttributeError traceback, exit 1). One line now."""
    from tools import tpu_check

    _member_not_npy(tmp_path / "in.npz")
    with pytest.raises(tpu_check.UsageError) as info:
        tpu_check.make_inputs([("pixels", tuple(PIXELS.shape), np.float32)], tmp_path / "in.npz")
    assert str(info.value) == f"input npz {tmp_path}/in.npz: member 'logits' is not an .npy array"


def test_tpu_check_shows_names_from_the_model_and_logs_as_text(tmp_path):
    """Found by adv9 (s23): tools.tpu_check's verdict printed the model's output names, its path and
    tpu-mlir's reasons as rich markup, raw: an output named 'y<ESC>[2J<RLO>evil<newline>line' cleared the
    terminal and split the line after a whole compile (exit 0), one holding '[/]' ended the run in
    rich's MarkupError traceback; now escaped (printable) and shown as text."""
    import io

    from rich.console import Console

    from tools.tpu_check import OutputMatch, Verdict, render

    hostile = "y\x1b[2J\u202eevil\nline[/]"
    verdict = Verdict(model=f"m[/]{hostile}.onnx", chip="bm1684x", quantize="F32", layer_group=True, nodes=3,
                      compiled=True, reason=f"note on {hostile}", time_shares={hostile: 1.0},
                      outputs=[OutputMatch(name=hostile, bmodel_name="b", cosine=1.0, max_abs=0.0, rel_l2=0.0)],
                      min_cosine=1.0, ok=True)
    shown = io.StringIO()
    render(verdict, Console(file=shown, soft_wrap=True, width=400))
    lines = shown.getvalue().splitlines()
    escaped = "y\\x1b[2J\\u202eevil\\nline[/]"
    assert lines[0] == f"tpu-check m[/]{escaped}.onnx · 3 nodes · bm1684x F32 · layer group on"
    assert f"  where the time goes: {escaped} 100%" in lines
    assert f"  bmodel vs ONNX Runtime '{escaped}': cosine 1.0000000, max abs 0, rel L2 0" in lines
    assert f"  note: note on {escaped}" in lines
    assert "\x1b" not in shown.getvalue() and "\u202e" not in shown.getvalue()


def _long_rank1_model(path: Path) -> Path:
    """84 bytes: y = Concat(x) with x a 1-D input declared 2^31-1 long (nothing to fold, nothing stored)."""
    graph = oh.make_graph([oh.make_node("Concat", ["x"], ["y"], axis=0)], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2**31 - 1])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2**31 - 1])])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def _address_space_cap(limit: int):
    def cap():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return cap


def test_a_long_rank1_tensor_never_reaches_onnx_data_propagation(tmp_path):
    """Found by adv6 (s20): ONNX's data propagation (infer_shapes(data_prop=True), run for every pass that asks
    for shapes, for fold-constants' and simplify's size checks, and by onnxsim) writes out each rank-1 tensor a
    Concat, Slice, Gather, Cast, Add ... reads as a list of dims, ~150 bytes an element: this 84-byte model
    took 7 GB and ran on past its 120 s timeout (SIGTERM waits for the C++ call) under 'ulimit -v 8000000',
    all memory without one. Now data propagation runs only where plain inference sizes every rank-1 tensor
    and they hold 2^22 elements all together (passes.static_shapes.infer_shapes); onnxsim is skipped with a
    note. The cpu pipeline's passes run here, under a 6 GB address-space cap."""
    model = _long_rank1_model(tmp_path / "long.onnx")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "passes.apply", str(model), "--pipeline", "cpu", "-o",
                             str(tmp_path / "out.onnx"), "--verify", "none"], capture_output=True, text=True,
                            cwd=REPO, timeout=300, preexec_fn=_address_space_cap(6 << 30))
    assert result.returncode == 0, result.stderr[-2000:]
    assert time.monotonic() - started < 120
    assert "onnxsim skipped: rank-1 tensors hold 4,294,967,294 elements (> 4,194,304; 'x' 2,147,483,647)" in result.stderr
    assert (tmp_path / "out.onnx").is_file()


def test_data_propagation_still_sizes_ordinary_shape_arithmetic():
    """The bound of the test above leaves data propagation to models whose rank-1 tensors are small: a
    Reshape to Concat(Shape(x)[0:1], [-1]) is sized (2, 12) through it, and not without it."""
    from passes.static_shapes import infer_shapes

    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 3, 4] x) => (float[?, ?] y) {
        s = Shape(x)  zero = Constant<value = int64[1] {0}>()  one = Constant<value = int64[1] {1}>()
        b = Slice(s, zero, one)  rest = Constant<value = int64[1] {-1}>()  t = Concat<axis = 0>(b, rest)
        y = Reshape(x, t) }""")
    inferred, refusal = infer_shapes(model)
    assert refusal is None
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == [2, 12]
    unknown = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 3, 4] x) => (int64[?] y) { s = Shape(x)  zero = Constant<value = int64[1] {0}>()
        one = Constant<value = int64[1] {1}>()  b = Slice(s, zero, one)  r = ConstantOfShape(b)  y = Cast<to = 7>(r) }""")
    assert "rank-1 tensor 'b'" not in str(infer_shapes(unknown)[1])
    assert infer_shapes(unknown)[1] == "rank-1 tensor 'r' has a size only data propagation would find"
    # the TorchScript exporter's Shape of a value of unknown rank (opset 12 exports of VMamba): small, propagated
    unknown_rank = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 3, 4] x, int64[?] t) => (float[?, ?] y) { r = Reshape(x, t)  s = Shape(r)
        zero = Constant<value = int64[1] {0}>()  one = Constant<value = int64[1] {1}>()  b = Slice(s, zero, one)
        rest = Constant<value = int64[1] {-1}>()  u = Concat<axis = 0>(b, rest)  y = Reshape(x, u) }""")
    assert infer_shapes(unknown_rank)[1] is None


def test_data_propagation_sizes_the_exporters_ones_like_shape_and_counts_it():
    """Found in s21 (a dynamic-batch export compiled 1.4x larger than before s20's bound): TorchScript writes
    x.expand(shape) as Where(Equal(shape, -1), ConstantOfShape(Shape(shape)), shape); plain inference cannot size
    ConstantOfShape(Shape(v)), which holds exactly v's elements, so the bound refused the whole model and
    unit-axes-to-reshape, expand-to-broadcast and onnxsim did nothing. It is bounded by v, and counted as v."""
    from passes.static_shapes import MAX_PROPAGATED_ELEMENTS, data_propagation_refusal, infer_shapes

    def expand_idiom(copies: int, length: int, shape_attrs: str = "", v_type: str = "int64[3]") -> onnx.ModelProto:
        body = "  ".join(f"o{i} = ConstantOfShape{shape_attrs}(s)  y{i} = Mul(o{i}, m)" for i in range(copies))
        outputs = ", ".join(f"int64[?] y{i}" for i in range(copies))
        return onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g ({v_type} v, int64[{length}] m) => ({outputs}) {{ s = Shape{shape_attrs}(v)  {body} }}""")

    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[?, 3] x) => (float[?, 3, 2] y) {
        s = Shape(x)  zero = Constant<value = int64[1] {0}>()  one = Constant<value = int64[1] {1}>()
        b = Slice(s, zero, one)  rest = Constant<value = int64[2] {3, 2}>()  t = Concat<axis = 0>(b, rest)
        u = Unsqueeze(x, one)  ts = Shape(t)  ones = ConstantOfShape<value = int64[1] {1}>(ts)
        minus = Constant<value = int64[1] {-1}>()  n = Mul(ones, minus)  e = Equal(t, n)  w = Where(e, ones, t)
        y = Expand(u, w) }""")
    inferred, refusal = infer_shapes(model)
    assert refusal is None
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim][1:] == [3, 2]
    assert data_propagation_refusal(onnx.shape_inference.infer_shapes(expand_idiom(1, 3))) is None
    # each ConstantOfShape(Shape(v)) holds v's elements, and each Mul of it as many: all counted (v, m, 3 o, 3 y
    # and Shape(v)'s one), so a few of a large v are refused, and one fewer Mul's worth is not
    many = MAX_PROPAGATED_ELEMENTS // 8
    assert data_propagation_refusal(onnx.shape_inference.infer_shapes(
        expand_idiom(3, many, v_type=f"int64[{many}]"))) == (
        f"rank-1 tensors hold {8 * many + 1:,} elements (> {MAX_PROPAGATED_ELEMENTS:,}; 'v' {many:,}), "
        "which data propagation would write out one by one")
    assert data_propagation_refusal(onnx.shape_inference.infer_shapes(
        expand_idiom(3, many - 1, v_type=f"int64[{many - 1}]"))) is None
    # not the same idiom: one dim of a value of higher rank (its other dims may be 0), or of a vector whose size
    # a value makes (a graph input of unknown size is fed, not propagated: bounded)
    assert data_propagation_refusal(onnx.shape_inference.infer_shapes(expand_idiom(1, 3, "<start = 1>", "int64[0, 9]"))) \
        == "rank-1 tensor 'o0' has a size only data propagation would find"
    assert data_propagation_refusal(onnx.shape_inference.infer_shapes(expand_idiom(1, 3, v_type="int64[?]"))) is None
    joined = onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
    g (int64[{many}] v) => (int64[?] c) {{ s = Shape(v)  o = ConstantOfShape(s)  c = Concat<axis = 0>(o, o, o, o, o, o) }}""")
    assert data_propagation_refusal(onnx.shape_inference.infer_shapes(joined)) == (   # a Concat: the sum, 6 o
        f"rank-1 tensors hold {8 * many + 1:,} elements (> {MAX_PROPAGATED_ELEMENTS:,}; 'c' {6 * many:,}), "
        "which data propagation would write out one by one")
    made = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (int64[1] n) => (int64[?] y) { v = ConstantOfShape(n)  s = Shape(v)  y = ConstantOfShape(s) }""")
    assert data_propagation_refusal(onnx.shape_inference.infer_shapes(made)) \
        == "rank-1 tensor 'v' has a size only data propagation would find"


def test_onnxsim_prints_nothing_from_the_model_on_the_terminal(tmp_path):
    """Found by adv6 (s20): onnxsim (simplify, in every pipeline) runs each node it can fold in ONNX Runtime and
    writes what fails straight to file descriptor 2: ONNX Runtime's error log in ANSI colours and its own
    'WARNING: failed to run "Range" op (name is "...")' with a Python traceback, the node's name as the model
    has it, so a Range of step 0 named '\\x1b[2J...\\nerror: forged line' cleared the screen and forged an error
    line (exit 0). Now onnxsim runs with descriptors 1 and 2 closed to it; the run's own lines stay."""
    evil = "\x1b[2J\x1b[31mEVIL\nerror: forged line"
    graph = oh.make_graph([oh.make_node("Range", ["z", "ten", "z"], ["r"], name=evil),
                           oh.make_node("ReduceSum", ["r"], ["s"], keepdims=0),
                           oh.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT), oh.make_node("Add", ["x", "sf"], ["y"])],
                          "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                          [numpy_helper.from_array(np.array(0, np.int64), "z"),
                           numpy_helper.from_array(np.array(10, np.int64), "ten")])
    model = tmp_path / "range.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), model)
    result = subprocess.run([sys.executable, "-m", "passes.apply", str(model), "--pipeline", "seed", "-o",
                             str(tmp_path / "out.onnx"), "--verify", "none"], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "forged" not in stream and "Traceback" not in stream
    assert "wrote" in result.stdout and (tmp_path / "out.onnx").is_file()


def test_onnx_runtime_symbolic_inference_is_not_run_where_data_propagation_is_not():
    """Found by adv6 (s20): ONNX Runtime's symbolic shape inference (passes asking for 'symbolic' shapes:
    unit-axes-to-reshape, expand-to-broadcast, slice-reverse-to-gather, reroll-scans' wider forms) keeps the
    value of every int64 tensor it can compute as Python numbers: a Concat of 8 ConstantOfShapes of 2^22
    (a few hundred bytes of model) held ~1 GB, a Concat of 200 would hold all memory. It runs only where
    ONNX's data propagation is bounded (passes.static_shapes.infer_shapes); the ONNX-inferred shapes stand
    otherwise."""
    import tracemalloc

    import onnx_graphsurgeon as gs
    from passes.static_shapes import symbolic_partial_shapes

    nodes = [oh.make_node("ConstantOfShape", ["size"], [f"piece{i}"],
                          value=numpy_helper.from_array(np.array([1], np.int64))) for i in range(8)]
    nodes += [oh.make_node("Concat", [f"piece{i}" for i in range(8)], ["big"], axis=0),
              oh.make_node("Shape", ["big"], ["n"]), oh.make_node("Transpose", ["x"], ["y"], perm=[1, 0])]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           oh.make_tensor_value_info("n", TensorProto.INT64, None)],
                          [numpy_helper.from_array(np.array([1 << 22], np.int64), "size")])
    model = gs.import_onnx(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))
    tracemalloc.start()
    try:
        shapes = symbolic_partial_shapes(model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shapes["y"] == (3, 1) and shapes["big"] == (1 << 25,)
    assert peak < 100 << 20


def test_the_data_propagation_bound_is_checked_in_linear_time():
    """Found by adv6 (s20) in its own first cut of the bound above: each rank-1 value of unknown size was
    walked back to its Shapes on its own, so a chain of 8,000 Adds over the Shape of a value of unknown
    rank (~240 KB of model) took a minute before any pass ran, 50,000 of them most of an hour. The walks
    now stop at values found bounded before."""
    from passes.static_shapes import infer_shapes

    count = 8000
    nodes = [oh.make_node("Reshape", ["x", "t"], ["r"]), oh.make_node("Shape", ["r"], ["s0"])]
    nodes += [oh.make_node("Add", [f"s{i}", f"s{i}"], [f"s{i + 1}"]) for i in range(count)]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                       oh.make_tensor_value_info("t", TensorProto.INT64, [None])],
                          [oh.make_tensor_value_info(f"s{count}", TensorProto.INT64, None)])
    started = time.monotonic()
    assert infer_shapes(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]))[1] is None
    assert time.monotonic() - started < 10


def _concat_of_gigabytes(copies: int, rows: int) -> onnx.ModelProto:
    """y = ReduceSum(Concat(copies x ConstantOfShape([rows]) * x)): a few hundred bytes describing a Concat
    of copies * rows float32s (the open item adv6 left in s20: verification ran such a model as it was)."""
    nodes = [oh.make_node("ConstantOfShape", ["rows"], ["ones"], value=numpy_helper.from_array(np.array([1.0], np.float32))),
             oh.make_node("Mul", ["ones", "x"], ["scaled"]),
             oh.make_node("Concat", ["scaled"] * copies, ["joined"], axis=0),
             oh.make_node("ReduceSum", ["joined"], ["y"], keepdims=1)]
    graph = oh.make_graph(nodes, "concat_of_gigabytes", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                          [numpy_helper.from_array(np.array([rows], np.int64), "rows")])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_verification_refuses_to_run_a_model_whose_tensor_would_not_fit(tmp_path):
    """A Concat of 300 x 2^23 float32s (10 GB) in a model of a few hundred bytes: verification ran the input
    model in ONNX Runtime as it was, which allocated it (under an 8 GB cap: a failed allocation, exit 2;
    with none, 10 GB of a 23 GB machine). Now a tensor whose inferred static shape holds more than
    passes.verify.MAX_RUN_ELEMENTS elements is refused before ONNX Runtime is asked, in one line, exit 2,
    no output; here under a 3 GB cap, which ONNX Runtime's attempt would hit with another message."""
    model = tmp_path / "huge.onnx"
    onnx.save(_concat_of_gigabytes(copies=300, rows=1 << 23), model)
    result = subprocess.run([sys.executable, "-m", "passes.apply", str(model), "--pipeline", "cpu", "-o",
                             str(tmp_path / "out.onnx")], capture_output=True, text=True, cwd=REPO, timeout=300,
                            preexec_fn=_address_space_cap(3 << 30))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: the input model does not run: tensor 'joined' of shape [2516582400] would hold "
                      "2,516,582,400 elements (more than 1,073,741,824): too large to run (--verify none "
                      "compiles it without running it)"]
    assert not (tmp_path / "out.onnx").exists()


def test_verification_runs_a_model_whose_tensors_fit_the_cap():
    """The cap of the test above leaves ordinary models alone: 4 x 2^20 floats run, and the cap's edge
    is exact (a tensor of exactly MAX_RUN_ELEMENTS passes, one more element does not)."""
    from passes.verify import MAX_RUN_ELEMENTS, oversized_tensor, run_model

    small = _concat_of_gigabytes(copies=4, rows=1 << 20)
    assert oversized_tensor(small) is None
    assert run_model(small, {"x": np.array([0.5], np.float32)})["y"].tolist() == [2.0 * (1 << 20)]
    at_cap = _concat_of_gigabytes(copies=1, rows=MAX_RUN_ELEMENTS)
    assert oversized_tensor(at_cap) is None
    over = _concat_of_gigabytes(copies=1, rows=MAX_RUN_ELEMENTS + 1)
    assert oversized_tensor(over) == ("tensor 'ones' of shape [1073741825] would hold 1,073,741,825 elements "
                                      "(more than 1,073,741,824)")


def test_verification_counts_no_elements_in_a_negative_dimension():
    """A value_info of shape [-70000, -70000] (invalid: ONNX Runtime reads a negative size as unknown, and
    runs the model) was refused as a tensor of 4,900,000,000 elements, the product of the signed sizes;
    a negative size counts as none, as fold-constants' sizes (passes.constant_sizes) count it."""
    from passes.verify import oversized_tensor, run_model

    graph = oh.make_graph([oh.make_node("Identity", ["x"], ["middle"]), oh.make_node("Identity", ["middle"], ["y"])],
                          "negative_sizes", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                          value_info=[oh.make_tensor_value_info("middle", TensorProto.FLOAT, [-70000, -70000])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    assert oversized_tensor(model) is None
    assert run_model(model, {"x": np.array([1.0, 2.0], np.float32)})["y"].tolist() == [1.0, 2.0]


def test_verification_refuses_a_tensor_of_a_subgraph_past_the_cap():
    """The cap looks into If/Loop/Scan bodies: a ConstantOfShape of 2^30 + 1 in an If's then-branch is
    named, while its graph's outputs, of unknown shape, are not counted."""
    from passes.verify import oversized_tensor

    def branch(rows: int, name: str) -> onnx.GraphProto:
        nodes = [oh.make_node("Constant", [], [f"{name}_rows"], value=numpy_helper.from_array(np.array([rows], np.int64))),
                 oh.make_node("ConstantOfShape", [f"{name}_rows"], [f"{name}_ones"],
                              value=numpy_helper.from_array(np.array([1.0], np.float32))),
                 oh.make_node("ReduceSum", [f"{name}_ones"], [f"{name}_sum"], keepdims=1)]
        return oh.make_graph(nodes, name, [], [oh.make_tensor_value_info(f"{name}_sum", TensorProto.FLOAT, None)])

    def model(rows: int) -> onnx.ModelProto:
        choice = oh.make_node("If", ["flag"], ["y"], then_branch=branch(rows, "then"), else_branch=branch(4, "else"))
        graph = oh.make_graph([choice], "branches", [oh.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])

    assert oversized_tensor(model((1 << 30) + 1)) == ("tensor 'then_ones' of shape [1073741825] would hold "
                                                      "1,073,741,825 elements (more than 1,073,741,824)")
    assert oversized_tensor(model(1 << 30)) is None


@pytest.mark.parametrize("tool", ["apply", "ort_profile", "tpu_check"])
def test_an_input_of_more_axes_than_an_array_can_have_is_one_line(tool, tmp_path):
    """Found by adv7 (s21): a model whose input is declared with 65 axes of 1 (one element) ended
    passes.apply (exit 1, 'internal error'), tools.ort_profile and tools.tpu_check in numpy's ValueError
    ('maximum supported dimension for an ndarray is currently 64') when they made its random data; no
    reference npz can hold such an input either. Now one line, exit 2, before any file is written."""
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1] * 65)],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1] * 65)])
    model = tmp_path / "axes.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8), model)
    if tool == "apply":
        result = apply_cli(model, "--pipeline", "cpu", "-o", tmp_path / "out.onnx", "--report", tmp_path / "r")
    else:
        args = {"ort_profile": ["--runs", "1"], "tpu_check": ["--workdir", str(tmp_path / "work")]}[tool]
        result = subprocess.run([sys.executable, "-m", f"tools.{tool}", str(model), *args], capture_output=True,
                                text=True, cwd=REPO, timeout=120)
    assert_one_line_error(result, 2, "input 'x' has 65 axes, more than the 64 an array can have")
    assert listing(tmp_path) == ["axes.onnx"]


def _doubling_functions(depth: int) -> onnx.ModelProto:
    """y = F<depth>(x), where F<k> calls F<k-1> twice and F0 is one Neg: 2^depth nodes expanded, in ~80 bytes a level."""
    functions = [oh.make_function("local", "F0", ["a"], ["out"], [oh.make_node("Neg", ["a"], ["out"])],
                                  [oh.make_opsetid("", 17)])]
    for k in range(1, depth + 1):
        body = [oh.make_node(f"F{k - 1}", ["a"], ["t"], domain="local"),
                oh.make_node(f"F{k - 1}", ["t"], ["out"], domain="local")]
        functions.append(oh.make_function("local", f"F{k}", ["a"], ["out"], body,
                                          [oh.make_opsetid("", 17), oh.make_opsetid("local", 1)]))
    graph = oh.make_graph([oh.make_node(f"F{depth}", ["x"], ["y"], domain="local", name="top")], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("local", 1)], ir_version=8,
                         functions=functions)


@pytest.mark.parametrize("pipeline", ["seed", "cpu", "cpu-many"])
def test_a_model_with_a_local_function_and_an_if_compiles(pipeline):
    """Found by adv10 (s24), fuzzing a model of a local function, an If and a Loop: any valid model holding both a
    model-local function and an If, Loop or Scan failed at the first pass that sorts the graph ('pass
    lower-einsum failed: RecursionError', exit 4): onnx-graphsurgeon 0.6.1's toposort, in its default mode,
    also sorts the functions, and that sort walks the main graph's subgraphs again at every level, without
    end. The passes now sort nodes only (patterns.graph_query.toposort); the functions keep their order."""
    from collections import Counter

    from pipelines import compile_model

    function = oh.make_function("local", "F", ["a"], ["b"], [oh.make_node("Softplus", ["a"], ["b"])],
                                [oh.make_opsetid("", 17)])
    then_branch = oh.make_graph([oh.make_node("Neg", ["s"], ["t"])], "then", [],
                                [oh.make_tensor_value_info("t", TensorProto.FLOAT, [4])])
    else_branch = oh.make_graph([oh.make_node("Abs", ["s"], ["e"])], "else", [],
                                [oh.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
    nodes = [oh.make_node("F", ["x"], ["s"], domain="local"), oh.make_node("ReduceSum", ["s"], ["r"], keepdims=0),
             oh.make_node("Greater", ["r", "zero"], ["positive"]),
             oh.make_node("If", ["positive"], ["z"], then_branch=then_branch, else_branch=else_branch),
             oh.make_node("Einsum", ["z", "w"], ["y"], equation="i,ij->j")]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                          initializer=[numpy_helper.from_array(np.float32(0), "zero"),
                                       numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("local", 1)], ir_version=8,
                          functions=[function])
    result = compile_model(model, pipeline)
    assert Counter(node.op_type for node in result.model.graph.node) == {
        "F": 1, "ReduceSum": 2, "Greater": 1, "If": 1, "Unsqueeze": 1, "Mul": 1}   # the Einsum lowered
    assert [(f.domain, f.name, [n.op_type for n in f.node]) for f in result.model.functions] == [("local", "F", ["Softplus"])]
    assert result.verification["rel_l2"] <= 1e-6


def test_an_input_model_that_gives_infinity_on_random_inputs_is_refused_before_the_work(tmp_path):
    """Found by adv10 (s24), fuzzing weights: without a reference the input model's own outputs on random inputs
    are what the compiled model is compared with; where they hold infinity or NaN (y = Log(Relu(x)): -inf
    wherever x < 0) the comparison cannot pass (inf - inf), so the whole compile ran and ended 'verification
    failed: ... non-finite values' (exit 3, blaming the compile; seed's overflow hint would name its scan
    form). It is refused at the input model's run, one line, exit 2, as a reference's non-finite expected
    output is; --verify none compiles it."""
    model = tmp_path / "log_relu.onnx"
    onnx.save(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[64] x) => (float[64] y) { r = Relu(x)  y = Log(r) }"""), model)
    result = apply_cli(model, "--pipeline", "cpu", "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, 2)
    assert result.stderr.splitlines()[-1] == (
        "error: the input model's output 'y' holds NaN or infinity on random inputs, which verification cannot "
        "compare against (give --reference with finite outputs, or --verify none)")
    assert listing(tmp_path) == ["log_relu.onnx"]
    assert apply_cli(model, "--pipeline", "cpu", "-o", tmp_path / "out.onnx", "--verify", "none").returncode == 0


def test_local_functions_that_expand_past_the_cap_are_refused(tmp_path):
    """Found by adv7 (s21): model-local functions each calling the one before twice stand for 2^depth nodes:
    16 deep (1.4 KB) ran past 6 minutes, most of it in ONNX Runtime's own inlining (13 s at 14 deep, 2 s for
    the same nodes stored flat), 60 deep would never end; onnxsim, skipped above 20,000 nodes, counted
    the one call. Now a model whose calls, expanded, make more than model_check.MAX_EXPANDED_NODES nodes
    is refused in one line, exit 2, at once; below it verification inlines the functions itself and
    simplify counts the expanded nodes."""
    from passes.model_check import MAX_EXPANDED_NODES

    model = tmp_path / "doubling.onnx"
    onnx.save(_doubling_functions(60), model)
    started = time.perf_counter()
    result = apply_cli(model, "--pipeline", "cpu", "-o", tmp_path / "out.onnx", "--report", tmp_path / "r")
    assert_one_line_error(result, 2, f"local functions, each call expanded (as ONNX Runtime inlines them), make more "
                                     f"than {MAX_EXPANDED_NODES:,} nodes")
    assert time.perf_counter() - started < 60 and listing(tmp_path) == ["doubling.onnx"]


def test_expanded_node_count_counts_every_call_once_per_call():
    from passes.graph_io import expanded_node_count

    assert expanded_node_count(_doubling_functions(18), 1 << 18) == 1 << 18
    assert expanded_node_count(_doubling_functions(19), 1 << 18) == (1 << 18) + 1   # capped, not 2^19
    assert expanded_node_count(_doubling_functions(3000), 100) == 101               # a chain of thousands
    # a call inside an If branch counts; a plain node beside it once; an unknown op is one node
    model = _doubling_functions(3)
    branch = oh.make_graph([oh.make_node("F2", ["x"], ["b"], domain="local"), oh.make_node("Relu", ["b"], ["c"])],
                           "then", [], [oh.make_tensor_value_info("c", TensorProto.FLOAT, [4])])
    model.graph.node.append(oh.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch))
    assert expanded_node_count(model, 1000) == 8 + 1 + 2 * (4 + 1)
    model.functions[0].node.append(oh.make_node("F3", ["out"], ["again"], domain="local"))   # a cycle
    assert expanded_node_count(model, 1000) == 1001


def test_verification_sees_a_tensor_inside_a_local_function(tmp_path):
    """Found by adv7 (s21): the 2^30-element cap of verification read the inferred shapes of the graphs only:
    a 285-byte model whose local function makes a ConstantOfShape of 2^31 floats (8 GB) reached ONNX
    Runtime (under a 3 GB cap: its allocation error; with none, 8 GB of the machine). The functions are
    now inlined before the check, which names the tensor: one line, exit 2, no output."""
    body = [oh.make_node("Constant", [], ["shape"],
                         value=numpy_helper.from_array(np.array([1 << 16, 1 << 15], np.int64), "s")),
            oh.make_node("ConstantOfShape", ["shape"], ["big"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32), "v")),
            oh.make_node("ReduceSum", ["big"], ["s"], keepdims=0), oh.make_node("Add", ["a", "s"], ["out"])]
    function = oh.make_function("local", "Big", ["a"], ["out"], body, [oh.make_opsetid("", 17)])
    graph = oh.make_graph([oh.make_node("Big", ["x"], ["y"], domain="local", name="big")], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = tmp_path / "big.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("local", 1)],
                            ir_version=8, functions=[function]), model)
    result = subprocess.run([sys.executable, "-m", "passes.apply", str(model), "--pipeline", "cpu", "-o",
                             str(tmp_path / "out.onnx")], capture_output=True, text=True, cwd=REPO, timeout=300,
                            preexec_fn=_address_space_cap(3 << 30))
    assert_one_line_error(result, 2, "would hold 2,147,483,648 elements (more than 1,073,741,824): too large to run")
    assert listing(tmp_path) == ["big.onnx"]


@pytest.mark.parametrize("tool", ["tools.ort_profile", "tools.tpu_check", "tools.diffview", "tools.eval_digits",
                                  "tools.bench"])
def test_tools_that_run_a_model_refuse_local_functions_past_the_cap(tmp_path, tool):
    """Found by adv8 (s22): tools.ort_profile and tools.tpu_check gave the model to ONNX Runtime without
    passes.apply's cap on expanded local functions: 60 levels of functions calling the one before twice
    (~5 KB) held either tool in ONNX Runtime's inlining for ever (past 10 minutes), and SIGTERM did not
    end it. All three tools now ask model_check.check_local_functions first (diffview through
    check_model): one line, exit 2, at once, nothing written. adv9 (s23): so do tools.eval_digits
    --onnx (held for ever before) and tools.bench --naive (before, with no reference beside it, it
    exported over the model; with one, its naive row's session held it)."""
    from passes.model_check import MAX_EXPANDED_NODES

    model = tmp_path / "doubling.onnx"
    onnx.save(_doubling_functions(60), model)
    argv = {"tools.ort_profile": [model, "--threads", "1", "--runs", "1"],
            "tools.tpu_check": [model, "--workdir", tmp_path / "w"], "tools.diffview": [model, model],
            "tools.eval_digits": ["--onnx", model],
            "tools.bench": ["--naive", model, "--rows", "naive", "--workdir", tmp_path / "w", "--out-md", "none",
                            "--json", "none", "--png", "none"]}[tool]
    result = subprocess.run([sys.executable, "-m", tool, *map(str, argv)], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert_one_line_error(result, 2, f"local functions, each call expanded (as ONNX Runtime inlines them), make more "
                                     f"than {MAX_EXPANDED_NODES:,} nodes")
    assert listing(tmp_path) == ["doubling.onnx"]


@pytest.mark.parametrize("call", ["tools.bench_rows:OnnxRunner(path, 1)", "tools.bench_mamba:_ort_runner(path, 1)",
                                  "tools.variants_table:_run(path, npz)"])
def test_tools_sessions_refuse_local_functions_past_the_cap(tmp_path, call):
    """Found by adv9 (s23): the ONNX Runtime sessions tools.bench, tools.bench_mamba and
    tools.variants_table build in their own process (to time it there) loaded whatever graph was in
    --workdir (--reuse-compiled, a reused export: anyone's file) with no cap on its local functions,
    and ONNX Runtime's inlining of 60 doubling levels held them past SIGTERM for ever. Each session
    now asks model_check.local_functions_refused first, its own one-line error."""
    model, npz = tmp_path / "doubling.onnx", tmp_path / "doubling.ref.npz"
    onnx.save(_doubling_functions(60), model)
    np.savez(npz, x=np.ones(4, np.float32), y=np.ones(4, np.float32))
    module, expression = call.split(":")
    code = (f"import sys\nfrom pathlib import Path\nimport {module} as tool\npath, npz = map(Path, sys.argv[1:])\n"
            f"try:\n    tool.{expression}\nexcept Exception as error:\n    print(type(error).__name__, error)\n"
            "    sys.exit(2)\n")
    result = subprocess.run([sys.executable, "-c", code, str(model), str(npz)], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.endswith(f"{model}: the model's local functions, each call expanded (as ONNX Runtime inlines "
                                  "them), make more than 262,144 nodes\n"), result.stdout


def test_eval_digits_shows_onnx_runtimes_error_in_one_escaped_line(tmp_path):
    """Found by adv9 (s23): tools.eval_digits --onnx let ONNX Runtime's own error log print a failing
    node's name raw (an ESC drove the terminal, a newline split the line) and its own error line
    collapsed whitespace but kept the ESC; now ONNX Runtime logs nothing and the line is one_line's."""
    model_proto = _failing_reshape_model()
    model_proto.graph.input[0].CopyFrom(oh.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "C", "H", "W"]))
    model_proto.graph.node[0].input[0] = "input"
    model = tmp_path / "failing.onnx"
    onnx.save(model_proto, model)
    result = subprocess.run([sys.executable, "-m", "tools.eval_digits", "--onnx", str(model)], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert_one_line_error(result, 2, "Reshape node. Name:'evil\\x1b[31m name'")
    assert "\x1b" not in result.stderr and result.stderr.count("\n") == 1, result.stderr


# --- sizes and run times that come from the input's values: only a run finds them ------------------

def _counting_body() -> onnx.GraphProto:
    """A Loop body that adds 1 to its carried value at every trip."""
    return oh.make_graph([oh.make_node("Identity", ["c"], ["c_out"]), oh.make_node("Add", ["v", "one"], ["v_out"])],
                         "body", [oh.make_tensor_value_info("i", TensorProto.INT64, []),
                                  oh.make_tensor_value_info("c", TensorProto.BOOL, []),
                                  oh.make_tensor_value_info("v", TensorProto.FLOAT, [1])],
                         [oh.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                          oh.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
                         initializer=[numpy_helper.from_array(np.ones(1, np.float32), "one")])


def _counted_loop_model(from_any_value: bool = False) -> onnx.ModelProto:
    """y = 0 + 1 + 1 + ..., n times: a Loop whose trip count is the input's value (no static check sees it);
    from_any_value: exp(4 (|n| + 5)) times instead, past 4.8 * 10^8 whatever random value n holds."""
    body = _counting_body()
    grow = [oh.make_node("Abs", ["n"], ["a"]), oh.make_node("Add", ["a", "five"], ["b"]),
            oh.make_node("Mul", ["b", "four"], ["c"]), oh.make_node("Exp", ["c"], ["m"])] if from_any_value else []
    graph = oh.make_graph(grow + [oh.make_node("Cast", ["m" if from_any_value else "n"], ["count"], to=TensorProto.INT64),
                           oh.make_node("Reshape", ["count", "scalar"], ["trips"]),
                           oh.make_node("Loop", ["trips", "", "zero"], ["y"], body=body)], "g",
                          [oh.make_tensor_value_info("n", TensorProto.FLOAT, [1])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                          initializer=[numpy_helper.from_array(np.array([], np.int64), "scalar"),
                                       numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
                                       numpy_helper.from_array(np.array([5.0], np.float32), "five"),
                                       numpy_helper.from_array(np.array([4.0], np.float32), "four")])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (ONNX Runtime's child is started by a thread of its own, adv20)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return children


def _sigterm_inside_native_work(arguments: list[str], settle_s: float) -> tuple[int, str, list[int]]:
    """`python -m <arguments>` run from the repository, sent SIGTERM `settle_s` seconds after its first child
    process appears (the child started and into the model's Loop): (exit code, stderr, the children then)."""
    process = subprocess.Popen([sys.executable, "-m", *arguments], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _children(process.pid) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(settle_s)
    workers = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    return process.returncode, stderr, workers


def test_sigterm_ends_a_run_inside_onnx_runtimes_native_work(tmp_path):
    """Found by adv7 (s21), fixed by adv8 (s22): ONNX Runtime's native work returns to Python only when it
    ends, so SIGTERM (and Ctrl-C) during verification waited for it: a Loop whose trip count is the
    reference input's value, 10^9, held passes.apply for hours. Verification now runs ONNX Runtime in a
    child process (passes.ort_worker): the parent takes the signal at once, kills the child, removes its
    temporary files and ends with 143 in one line."""
    model = tmp_path / "loop.onnx"
    onnx.save(_counted_loop_model(), model)
    np.savez(tmp_path / "loop.ref.npz", n=np.array([1e9], np.float32), y=np.array([1e9], np.float32))
    returncode, stderr, workers = _sigterm_inside_native_work(
        ["passes.apply", str(model), "--pipeline", "cpu", "-o", str(tmp_path / "out.onnx")], settle_s=2)
    assert returncode == 143, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == ["error: interrupted; no output written"]
    assert workers and not any(Path(f"/proc/{pid}").exists() for pid in workers)   # the child is gone too
    assert listing(tmp_path) == ["loop.onnx", "loop.ref.npz"]


def test_sigterm_ends_eval_digits_inside_onnx_runtimes_native_work(tmp_path):
    """Found by adv9 (s23): tools.eval_digits --onnx (and tools.demo's accuracy, through its onnx_predict)
    ran ONNX Runtime in its own process, so a Loop whose trip count is computed from the images (past
    10^12 trips) held it past SIGTERM, and a size taken from their values allocated what it asked for.
    It now runs in a child under verification's memory cap (passes.ort_worker.call_capped): SIGTERM
    ends it at once, 143 in one line, the child killed."""
    body = _counting_body()
    graph = oh.make_graph([oh.make_node("ReduceMax", ["input"], ["peak"], keepdims=0),
                           oh.make_node("Abs", ["peak"], ["size"]), oh.make_node("Add", ["size", "many"], ["count"]),
                           oh.make_node("Cast", ["count"], ["trips"], to=TensorProto.INT64),
                           oh.make_node("Loop", ["trips", "", "zero"], ["y"], body=body)], "g",
                          [oh.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 64, 64])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                          initializer=[numpy_helper.from_array(np.array(1e12, np.float32), "many"),
                                       numpy_helper.from_array(np.zeros(1, np.float32), "zero")])
    model = tmp_path / "loop.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8), model)
    returncode, stderr, workers = _sigterm_inside_native_work(["tools.eval_digits", "--onnx", str(model)], settle_s=3)
    assert returncode == 143, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == \
        ["error: interrupted (no file left half-written)"], stderr
    deadline = time.monotonic() + 10   # multiprocessing's resource tracker ends a moment after its parent
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers and not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_size_from_the_input_values_meets_the_verification_memory_cap(monkeypatch):
    """Found by adv7 (s21), fixed by adv8 (s22): a ConstantOfShape whose size is computed from the input's
    values escapes the static 2^30-element cap (shape inference cannot know it), and ONNX Runtime, in the
    compiler's own process, allocated whatever it asked for. It now runs under an address-space cap
    (passes.ort_worker.memory_limit, half the machine's memory): past it, ONNX Runtime's allocation fails,
    said in one line, and the next run goes on in a fresh or the same child."""
    from passes import ort_worker

    graph = oh.make_graph([oh.make_node("Cast", ["n"], ["size"], to=TensorProto.INT64),
                           oh.make_node("ConstantOfShape", ["size"], ["big"],
                                        value=numpy_helper.from_array(np.array([1.0], np.float32))),
                           oh.make_node("ReduceSum", ["big"], ["y"], keepdims=0)], "g",
                          [oh.make_tensor_value_info("n", TensorProto.FLOAT, [1])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    monkeypatch.setattr(ort_worker, "memory_limit", lambda: 2 << 30)
    with pytest.raises(VerificationError) as refused:
        run_model(model, {"n": np.array([float(1 << 30)], np.float32)})   # 4 GiB of ones
    assert "\n" not in str(refused.value)
    assert "ONNX Runtime could not run the model" in str(refused.value) and "allocate" in str(refused.value)
    assert float(run_model(model, {"n": np.array([1000.0], np.float32)})["y"]) == 1000.0


def test_sigterm_ends_tpu_check_inside_onnx_runtimes_native_work(tmp_path):
    """Found by adv8 (s22): tools.tpu_check ran its ONNX Runtime reference in its own process, so a Loop whose
    trip count is the --input npz's value (10^9) held it past SIGTERM, as verification did. It now runs
    the reference as verification does (passes.verify.run_model, in the capped child): 143 at once, one
    line, the child gone, no working folder made."""
    model = tmp_path / "loop.onnx"
    onnx.save(_counted_loop_model(), model)
    np.savez(tmp_path / "input.npz", n=np.array([1e9], np.float32))
    returncode, stderr, workers = _sigterm_inside_native_work(
        ["tools.tpu_check", str(model), "--input", str(tmp_path / "input.npz"), "--workdir", str(tmp_path / "work")],
        settle_s=2)
    assert returncode == 143, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == ["error: interrupted"]
    assert workers and not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert listing(tmp_path) == ["input.npz", "loop.onnx"]


def test_tpu_check_timeout_covers_its_onnx_runtime_reference_run(tmp_path):
    """Found by adv10 (s24): tools.tpu_check --timeout bounded each tpu-mlir step but not the ONNX Runtime
    reference run before them, so a Loop whose trip count is the --input npz's value (10^9) held it for
    hours whatever --timeout said. The reference run now has the same limit: ONNX Runtime's process is
    killed, one line, exit 2, no working folder made."""
    model = tmp_path / "loop.onnx"
    onnx.save(_counted_loop_model(), model)
    np.savez(tmp_path / "input.npz", n=np.array([1e9], np.float32))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "tools.tpu_check", str(model), "--input", str(tmp_path / "input.npz"),
                             "--workdir", str(tmp_path / "work"), "--timeout", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"error: ONNX Runtime's reference run of {model} did not end within 2 s (--timeout); "
                             "its process was killed\n")
    assert time.monotonic() - started < 60
    assert listing(tmp_path) == ["input.npz", "loop.onnx"]


def test_sigterm_ends_ort_profile_inside_onnx_runtimes_native_work(tmp_path):
    """Found by adv8 (s22): tools.ort_profile ran ONNX Runtime in its own process, so a Loop whose trip count
    is computed from the random input (past 4.8 * 10^8 trips) held it past SIGTERM, and a size taken from the
    input's values allocated what it asked for. It now profiles in a child under verification's memory cap:
    SIGTERM ends it at once (143, one line), the child killed and its profile folder removed."""
    import tempfile

    model = tmp_path / "loop.onnx"
    onnx.save(_counted_loop_model(from_any_value=True), model)
    before = set(Path(tempfile.gettempdir()).glob("ort-profile-*"))
    returncode, stderr, workers = _sigterm_inside_native_work(
        ["tools.ort_profile", str(model), "--threads", "1", "--runs", "1"], settle_s=4)   # spawned: loads slower
    assert returncode == 143, stderr
    assert len([line for line in stderr.splitlines() if line.startswith("error:")]) == 1, stderr
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 10   # multiprocessing's resource tracker ends a moment after its parent
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers and not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert set(Path(tempfile.gettempdir()).glob("ort-profile-*")) == before
    assert listing(tmp_path) == ["loop.onnx"]


def test_a_reference_replaced_by_a_named_pipe_after_its_check_is_refused_not_waited_on(tmp_path, monkeypatch):
    """Found by adv22: --reference was looked at (input_file_problem: a regular file), then np.load opened it again by
    name: a named pipe put in its place between the two made the run wait for a writer for ever. Now it is opened
    once, without waiting, and refused unless what was opened is a regular file: BadInput, nothing written."""
    import signal

    import pipelines.compiler as compiler
    from pipelines import BadInput, compile_model
    from test_cli import TINY_MODEL_TEXT

    model_path = tmp_path / "naive.onnx"
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), model_path)
    reference = tmp_path / "given.npz"
    np.savez(reference, x=np.ones((2, 3), np.float32))
    checked = compiler.input_file_problem

    def check_then_swap(path, *args, **kwargs):
        problem = checked(path, *args, **kwargs)
        if path == reference:
            reference.unlink()
            os.mkfifo(reference)
        return problem

    monkeypatch.setattr(compiler, "input_file_problem", check_then_swap)
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("waited on the named pipe"))
    signal.alarm(60)
    try:
        with pytest.raises(BadInput) as refused:
            compile_model(model_path, "eliminate-dead-nodes", reference=reference, output=tmp_path / "out.onnx")
    finally:
        signal.alarm(0)
    assert str(refused.value) == f"reference {reference}: not a regular file (a named pipe)"
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("pipeline,verify", [("remove-identity", "none"), ("remove-identity", "end"), ("cpu", "none"),
                                             ("tpu", "none")])
def test_an_op_of_another_domain_named_like_an_onnx_op_is_never_rewritten_as_it(pipeline, verify, tmp_path):
    """Found by adv23: the passes match ops by name alone, so a model-local function `x.Identity` (b = a + 1), or any
    custom op so named, was taken for ONNX's Identity: remove-identity took it out (with --verify none the model was
    written computing (relu x)^2 for (relu x + 1)^2, exit 0; verified, exit 3 blaming the pass). Now a node of
    another domain carries it in its op while the passes run (`x.Identity`), written back as it came."""
    from pipelines import compile_model

    function = oh.make_function("x", "Identity", ["a"], ["b"], [
        oh.make_node("Constant", [], ["one"], value=oh.make_tensor("one", TensorProto.FLOAT, [], [1.0])),
        oh.make_node("Add", ["a", "one"], ["b"])], opset_imports=[oh.make_opsetid("", 17)])
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["r"]), oh.make_node("Identity", ["r"], ["t"], domain="x"),
                           oh.make_node("Mul", ["t", "t"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("x", 1)], ir_version=10,
                          functions=[function])
    result = compile_model(model, pipeline, output=tmp_path / "out.onnx", verify=verify)
    written = onnx.load(tmp_path / "out.onnx")
    assert ("x", "Identity") in {(node.domain, node.op_type) for node in written.graph.node}
    assert [(f.domain, f.name) for f in written.functions] == [("x", "Identity")]
    x = np.array([[-1, 2, -3, 4], [5, -6, 7, 0]], np.float32)
    session = ort.InferenceSession(written.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], (np.maximum(x, 0) + 1) ** 2)
    assert result.nodes_after == 3


@pytest.mark.parametrize("name", ["F", "Identity"])
def test_constant_folding_runs_a_local_function_as_itself_and_leaves_one_named_like_an_onnx_op(name, tmp_path):
    """adv23, after the fix above: with every node of another domain named `x.F` while the passes run, fold-constants
    (onnx-graphsurgeon's export, run in ONNX Runtime) met an op ONNX Runtime does not know and folded nothing at all,
    not even Add(c2, c3). Now a function of its own name (F) is folded as itself, as on main; one named like an ONNX op
    (Identity), which onnx-graphsurgeon would fold as that op, is left to run time, and the rest folds."""
    from collections import Counter

    from pipelines import compile_model

    function = oh.make_function("x", name, ["a"], ["b"], [
        oh.make_node("Constant", [], ["one"], value=oh.make_tensor("one", TensorProto.FLOAT, [], [1.0])),
        oh.make_node("Add", ["a", "one"], ["b"])], opset_imports=[oh.make_opsetid("", 17)])
    graph = oh.make_graph(
        [oh.make_node(name, ["c"], ["t"], domain="x"), oh.make_node("Add", ["c2", "c3"], ["u"]),
         oh.make_node("Mul", ["x", "t"], ["v"]), oh.make_node("Add", ["v", "u"], ["y"])], "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])], [oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=[numpy_helper.from_array(np.arange(4, dtype=np.float32) + k, n) for k, n in [(0, "c"), (1, "c2"), (2, "c3")]])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("x", 1)], ir_version=10,
                          functions=[function])
    result = compile_model(model, "fold-constants", output=tmp_path / "out.onnx")
    written = onnx.load(tmp_path / "out.onnx")
    ops = Counter((node.domain, node.op_type) for node in written.graph.node)
    assert ops == ({("", "Mul"): 1, ("", "Add"): 1} if name == "F" else {("x", "Identity"): 1, ("", "Mul"): 1, ("", "Add"): 1})
    assert result.verification["rel_l2"] == 0
    x = np.array([1, -2, 3, -4], np.float32)
    session = ort.InferenceSession(written.SerializeToString(), providers=["CPUExecutionProvider"])
    c = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x * (c + 1) + (c + 1) + (c + 2))

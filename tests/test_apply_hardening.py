"""passes.apply / compile_model against careless users and hostile files (issue 12): nothing the run
reads is written, every destination is checked before the work, SIGTERM cleans up like Ctrl-C, and
whatever pipeline text and option values come in, the answer is 0 or one escaped line with exit 2.
"""
import contextlib
import json
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from fuzz_budget import examples
from scan_testing import TINY_MODEL_TEXT
from test_cli import REPO, apply_cli, assert_one_line_error
from test_hardening import DUPLICATE_NAMES, _invalid, listing, with_ctrl_c

from passes.base import Pass, PassResult
from pipelines.compiler import BadInput, PassFailed, VerificationFailed, compile_model

X = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
Y = np.maximum(X + np.array([2.0, 3.0, 4.0], np.float32), 0)


@pytest.fixture
def work(tmp_path):
    """tmp/work/naive.onnx (the tiny model) with naive.ref.npz beside it."""
    folder = tmp_path / "work"
    folder.mkdir()
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), folder / "naive.onnx")
    np.savez(folder / "naive.ref.npz", x=X, y=Y)
    return folder


def _external_input(folder: Path, data_name: str) -> Path:
    """folder/in.onnx whose weight (a 4096-float initializer) lives in folder/<data_name>."""
    model = onnx.parser.parse_model(TINY_MODEL_TEXT)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(4096, np.float32), "unused_weight"))
    onnx.save_model(model, folder / "in.onnx", save_as_external_data=True, location=data_name, size_threshold=0)
    np.savez(folder / "in.ref.npz", x=X, y=Y)
    return folder / "in.onnx"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


# --- 1. a run never writes over a file it reads -------------------------------------------------------

def test_the_outputs_weights_never_go_over_the_inputs_external_data(work):
    """-o o.onnx beside an input whose weights are in o.onnx.data (the output's weights file's name
    until s14): the output's weights get a name from their content, the input's file is untouched."""
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1024] x) => (float[1024] y) <float[1024] w> { y = Add(x, w) }""")
    del model.graph.initializer[:]
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.arange(1024, dtype=np.float32), "w"))
    model_path = work / "in.onnx"
    onnx.save_model(model, model_path, save_as_external_data=True, location="o.onnx.data", size_threshold=0)
    before = _snapshot(work)
    result = apply_cli(model_path, "--pipeline", "eliminate-dead-nodes", "-o", work / "o.onnx", "--verify", "none")
    assert result.returncode == 0, result.stderr
    after = _snapshot(work)
    added = sorted(set(after) - set(before))
    assert {name: after[name] for name in before} == before
    assert len(added) == 2 and added[0] == "o.onnx" and added[1].startswith("o.onnx.") and added[1].endswith(".data")
    assert added[1] != "o.onnx.data" and after[added[1]] == before["o.onnx.data"]   # the same weights, anew


def test_a_weights_file_the_run_reads_named_like_the_outputs_is_never_replaced(work, tmp_path):
    """The output's weights file is named by their content, which anyone can compute: an input whose
    weights sit (at offset 64) in the file that name gives was run over, its weights file replaced by
    the output's and the input left unreadable (found by s15-adv). Refused, nothing written."""
    from onnx.external_data_helper import set_external_data
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1024] x) => (float[1024] y) <float[1024] w> { y = Add(x, w) }""")
    del model.graph.initializer[:]
    weights = np.arange(1024, dtype=np.float32)
    model.graph.initializer.append(onnx.numpy_helper.from_array(weights, "w"))
    (tmp_path / "learn").mkdir()
    onnx.save_model(model, tmp_path / "learn" / "in.onnx", save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    compile_model(tmp_path / "learn" / "in.onnx", "eliminate-dead-nodes", output=tmp_path / "learn" / "o.onnx",
                  verify="none")
    data_name = next(p.name for p in (tmp_path / "learn").iterdir() if p.name.endswith(".data"))
    tensor = onnx.numpy_helper.from_array(weights, "w")
    set_external_data(tensor, data_name, offset=64, length=weights.nbytes)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    model.graph.initializer[0].CopyFrom(tensor)
    (work / data_name).write_bytes(b"\0" * 64 + weights.tobytes())
    onnx.save_model(model, work / "in.onnx")
    before = _snapshot(work)
    with pytest.raises(BadInput, match=f"output data file .*{data_name} is a file this run reads"):
        compile_model(work / "in.onnx", "eliminate-dead-nodes", output=work / "o.onnx", verify="none")
    assert _snapshot(work) == before


@pytest.mark.parametrize("target", ["reference", "plugin", "data-through-link"])
def test_output_onto_a_file_the_run_reads_is_refused(target, work):
    (work / "plugin_passes.py").write_text("X = 1\n")
    model_path = _external_input(work, "weights.bin")
    if target == "data-through-link":
        os.symlink(work / "weights.bin", work / "alias.onnx")
    output = {"reference": work / "in.ref.npz", "plugin": work / "plugin_passes.py",
              "data-through-link": work / "alias.onnx"}[target]
    before = _snapshot(work)
    result = apply_cli(model_path, "--plugin", "plugin_passes", "--pipeline", "eliminate-dead-nodes", "-o", output,
                       extra_path=work)
    role = {"reference": "is the reference", "plugin": "is the protected file",
            "data-through-link": "is the external data file"}[target]
    assert_one_line_error(result, 2, role, "refusing to overwrite it")
    assert _snapshot(work) == before


def test_library_users_get_the_same_refusal(work):
    model_path = _external_input(work, "o.onnx.data")
    with pytest.raises(BadInput, match="is the external data file"):
        compile_model(model_path, "eliminate-dead-nodes", output=work / "o.onnx.data")
    with pytest.raises(BadInput, match="is the reference"):
        compile_model(model_path, "eliminate-dead-nodes", output=work / "in.ref.npz")


def test_an_in_memory_model_with_file_references_is_refused(tmp_path, monkeypatch):
    """Found by a library call on ``onnx.load(path, load_external_data=False)``'s model: with
    --verify none its weight was read from ./secret.bin (the working folder) and folded into the
    output (x + w * 2 came out as x + [3, 5, 7, 9]); unfolded, the output kept an EXTERNAL tensor
    with no location at all. A model in memory has no folder to read from: refused up front."""
    from test_hardening import top_weight_model

    np.array([1.5, 2.5, 3.5, 4.5], np.float32).tofile(tmp_path / "secret.bin")
    model = top_weight_model("secret.bin")
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.full(4, 2, np.float32), "two"))
    model.graph.node.insert(0, onnx.helper.make_node("Mul", ["w", "two"], ["w2"], name="double"))
    model.graph.node[1].input[1] = "w2"
    monkeypatch.chdir(tmp_path)
    for pipeline in ("fold-constants", "eliminate-dead-nodes"):
        with pytest.raises(BadInput) as error:
            compile_model(model, pipeline, verify="none", output=tmp_path / "out.onnx")
        assert str(error.value) == ("the in-memory model refers to external data files (tensor 'w' in "
                                    "'secret.bin'); pass the model's path, or load it with passes.graph_io.read_model")
    assert listing(tmp_path) == ["secret.bin"]


def test_in_place_is_still_allowed(work):
    result = apply_cli(work / "naive.onnx", "--pipeline", "eliminate-dead-nodes", "-o", work / "naive.onnx", "--in-place")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("model, output", [("link.onnx", "link.onnx"), ("naive.onnx", "link.onnx")])
def test_in_place_through_a_symbolic_link_is_refused(work, model, output):
    """--in-place with the output a link to the input replaced the link by a regular file holding the
    new model (exit 0), the model it led to left as it was: neither written in place nor a refusal.
    A link is never written through nor replaced: refused before the work, the file it leads to named."""
    (work / "link.onnx").symlink_to("naive.onnx")
    before = (work / "naive.onnx").read_bytes()
    result = apply_cli(work / model, "--pipeline", "eliminate-dead-nodes", "-o", work / output, "--in-place")
    assert_one_line_error(result, 2, f"output {work / 'link.onnx'} is a symbolic link to the input",
                          f"give the file it leads to, {work / 'naive.onnx'}")
    assert os.readlink(work / "link.onnx") == "naive.onnx" and (work / "naive.onnx").read_bytes() == before
    assert listing(work) == ["link.onnx", "naive.onnx", "naive.ref.npz"]


def test_in_place_on_the_file_a_link_leads_to_is_allowed(work):
    """Read through the link, written to the file itself: the link still leads to it, now the new model."""
    (work / "link.onnx").symlink_to("naive.onnx")
    result = apply_cli(work / "link.onnx", "--pipeline", "eliminate-dead-nodes", "-o", work / "naive.onnx",
                       "--in-place", "--reference", work / "naive.ref.npz")
    assert result.returncode == 0, result.stderr
    assert os.readlink(work / "link.onnx") == "naive.onnx"
    assert len(onnx.load(work / "link.onnx").graph.node) == 4   # the dead Exp removed


def test_in_place_on_a_model_with_external_data_removes_the_weights_it_replaced(work):
    """Found by s15: --in-place on a model whose weights this writer had named (<name>.<hash>.data)
    left that file beside the new one, as the run read it (a file the run reads is never removed).
    Only ours goes: a weights file of another name the input shares is left alone."""
    from passes.graph_io import save_model_atomic

    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1024] x) => (float[1024] y) <float[1024] w, float[1024] unused> { y = Add(x, w) }""")
    del model.graph.initializer[:]
    for name in ("w", "unused"):
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.arange(1024, dtype=np.float32), name))
    path = save_model_atomic(model, work / "m.onnx", external_data=True)
    (old,) = [name for name in listing(work) if name.startswith("m.onnx.")]
    result = apply_cli(path, "--pipeline", "eliminate-dead-nodes", "-o", path, "--in-place", "--verify", "none")
    assert result.returncode == 0, result.stderr
    (new,) = [name for name in listing(work) if name.startswith("m.onnx.")]
    assert new != old and new.endswith(".data")   # the unused weight dropped: other bytes, another name
    assert [init.name for init in onnx.load(path).graph.initializer] == ["w"]
    assert listing(work) == sorted(["m.onnx", new, "naive.onnx", "naive.ref.npz"])
    onnx.save_model(onnx.load(path), path, save_as_external_data=True, location="shared.bin")
    result = apply_cli(path, "--pipeline", "eliminate-dead-nodes", "-o", path, "--in-place", "--verify", "none")
    assert result.returncode == 0, result.stderr
    assert "shared.bin" in listing(work)


# --- 5. destinations are checked before the work ----------------------------------------------------

def _report_on_a_file(work):
    (work / "taken").write_text("x")
    return ["--report", work / "taken"], "exists and is a regular file, not a directory"


def _report_index_is_a_folder(work):
    (work / "report" / "index.html").mkdir(parents=True)
    return ["--report", work / "report"], "index.html"


def _report_unwritable(work):
    return ["--report", "/proc/report"], "not writable: /proc"


def _intermediates_name_is_a_file(work):
    (work / "o.onnx.intermediates").write_text("x")
    return ["--keep-intermediates"], "--keep-intermediates folder"


def _output_is_a_device(work):
    return [], "character device"


DESTINATIONS = {"report-on-a-file": _report_on_a_file, "report-index-is-a-folder": _report_index_is_a_folder,
                "report-unwritable": _report_unwritable, "intermediates-name-is-a-file": _intermediates_name_is_a_file}


@pytest.mark.parametrize("case", list(DESTINATIONS))
def test_destinations_are_refused_before_any_work(case, work):
    extra, phrase = DESTINATIONS[case](work)
    before = listing(work)
    result = apply_cli(work / "naive.onnx", "--pipeline", "eliminate-dead-nodes", "-o", work / "o.onnx", *extra)
    assert_one_line_error(result, 2, phrase)
    assert listing(work) == before, "written before the refusal"
    # The refusal comes before the pipeline: no pass ran (the progress shows none).
    assert "eliminate-dead-nodes" not in result.stderr.replace(phrase, "")


# --- 6. bad input is exit 2 ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["cycle", "duplicate-tensor", "duplicate-graph-output", "unknown-op", "future-opset",
                                  "ancient-ir", "not-utf8", "recursive-function",
                                  "duplicate-function", "unknown-attribute", "attribute-of-the-wrong-type",
                                  "missing-attribute", "too-many-inputs", "deprecated-op"])
def test_invalid_models_are_bad_input(kind, tmp_path):
    from test_hardening import INVALID_MODELS

    path = tmp_path / "bad.onnx"
    path.write_bytes(_invalid(kind).SerializeToString())
    result = apply_cli(path, "--pipeline", "eliminate-dead-nodes", "-o", tmp_path / "o.onnx", "--verify", "none")
    assert_one_line_error(result, 2, "bad.onnx")
    assert __import__("re").search(INVALID_MODELS[kind], result.stderr), result.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.onnx"]


def test_a_pass_failing_on_an_invalid_model_is_bad_input(tmp_path):
    """Found by s14: a Transpose whose perm names an axis the input lacks made unit-axes-to-reshape fail
    (IndexError, exit 4, 'a pass failed'). The input is what is wrong: ONNX's strict shape inference
    says so, and the run is refused as bad input, naming the node and the pass that met it."""
    path = tmp_path / "bad.onnx"
    onnx.save(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[3,2] y) { y = Transpose<perm = [5, 0]>(x) }"""), path)
    result = apply_cli(path, "--pipeline", "cpu", "-o", tmp_path / "o.onnx", "--verify", "none")
    assert_one_line_error(result, 2, "bad.onnx: a Transpose node: perm [5, 0] is not a permutation of 2 axes")
    assert sorted(os.listdir(tmp_path)) == ["bad.onnx"]


@pytest.mark.parametrize("shape, perm, out_shape, message", [
    ("1,3,1,4", "0, 0, 1, 3", "1,1,3,4", "perm [0, 0, 1, 3] is not a permutation of 4 axes"),
    ("1,3,4", "1, 2", "3,4", "perm [1, 2] is not a permutation of 2 axes"),
    ("1,3,4", "2, -1, 0", "4,3,1", "perm [2, -1, 0] is not a permutation of 3 axes"),
    ("3,4,1", "0, 1", "3,4", "perm [0, 1] has 2 axes, its input 'x' 3"),
])
def test_a_transpose_perm_onnx_runtime_refuses_is_bad_input_even_unverified(shape, perm, out_shape, message, tmp_path):
    """adv12: with --verify none, unit-axes-to-reshape read such a perm as given and made the Transpose a Reshape,
    writing a model ONNX Runtime runs from one it refuses (exit 0). Now the model check refuses it, exit 2."""
    path = tmp_path / "bad.onnx"
    onnx.save(onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[{shape}] x) => (float[{out_shape}] y) {{ t = Transpose<perm = [{perm}]>(x)  y = Relu(t) }}"""), path)
    result = apply_cli(path, "--pipeline", "cpu", "-o", tmp_path / "o.onnx", "--verify", "none")
    assert_one_line_error(result, 2, f"bad.onnx: a Transpose node: {message}")
    assert sorted(os.listdir(tmp_path)) == ["bad.onnx"]


@pytest.mark.parametrize("pipeline", ["cpu", "unit-axes-to-reshape"])
def test_a_transpose_perm_shorter_than_an_inner_values_rank_is_bad_input(pipeline, tmp_path):
    """adv12: perm [0, 1] of Relu's (3, 4, 1) output (no declared rank for the model check): unit-axes-to-reshape made it
    a Reshape (exit 0, a model ONNX Runtime runs); with the pass keeping it, simplify's output check failed on it and
    was blamed (exit 3), and `--pipeline unit-axes-to-reshape --verify none` wrote it as it came (exit 0, adv13). ONNX's
    inference takes the short perm; the model check reads the rank inference finds, exit 2 before any pass."""
    path = tmp_path / "bad.onnx"
    onnx.save(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3,4,1] x) => (float[3,4] y) { r = Relu(x)  y = Transpose<perm = [0, 1]>(r) }"""), path)
    result = apply_cli(path, "--pipeline", pipeline, "-o", tmp_path / "o.onnx", "--verify", "none")
    assert_one_line_error(result, 2, "error: " + str(path) + ": a Transpose node: perm [0, 1] has 2 axes, its input 'r' 3")
    assert result.stderr.splitlines()[-1] == "error: " + str(path) + ": a Transpose node: perm [0, 1] has 2 axes, its input 'r' 3"
    assert "import" not in result.stderr   # refused before onnx-graphsurgeon's import, before any pass
    assert sorted(os.listdir(tmp_path)) == ["bad.onnx"]


def test_an_einsum_whose_declared_output_contradicts_its_operands_is_bad_input(tmp_path):
    """adv12's lead, adv13: `bcij,bcjk->bcik` of (N, C, 2, 3) and (M, 5, 3, 4) declared (N, 2, 2, 4): ONNX's Einsum
    inference leaves c a name, so strict inference passes it; einsum-to-matmul's output check (its MatMul sees 5 vs 2)
    failed and the pass was blamed, exit 3. The input is what is wrong: exit 2, naming the node."""
    path = tmp_path / "bad.onnx"
    onnx.save(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,C,2,3] a, float[M,5,3,4] b) => (float[N,2,2,4] y) {
            y = Einsum<equation = "bcij,bcjk->bcik">(a, b) }"""), path)
    for verify in ("none", "end"):
        result = apply_cli(path, "--pipeline", "einsum-to-matmul", "-o", tmp_path / "o.onnx", "--verify", verify)
        assert_one_line_error(result, 2)
        assert result.stderr.splitlines()[-1] == (
            f"error: {path}: invalid model: a Einsum node: equation 'bcij,bcjk->bcik' gives 'c' size 5 (input 'b' axis 1), "
            "its output 'y' declares 2 at axis 1 (found after pass 'einsum-to-matmul')")
        assert sorted(os.listdir(tmp_path)) == ["bad.onnx"]


def test_an_error_naming_a_huge_name_is_a_short_line_that_still_finds_it(tmp_path):
    """adv12's lead, adv13: an output of a 200,000-character name that nothing produces made a 200 KB error line.
    Names are shown as their first 200 and last 60 characters with the count cut between them."""
    name = "H" * 100_000 + "T" * 100_000
    model = onnx.parser.parse_model(TINY_MODEL_TEXT)
    model.graph.output.add().CopyFrom(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [4]))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = apply_cli(path, "--pipeline", "cpu", "-o", tmp_path / "o.onnx", "--verify", "none")
    assert_one_line_error(result, 2)
    assert result.stderr.splitlines()[-1] == (f"error: {path}: output '{'H' * 200}...(199,740 of 200,000 characters "
                                              f"cut)...{'T' * 60}' of graph is produced by nothing")
    assert len(result.stderr) < 1_000


def test_one_line_cuts_a_huge_message_that_no_printable_name_cut():
    """A message quoting a name raw (ONNX's own errors do) is cut as a whole, past 4,000 characters."""
    from passes.one_line import MESSAGE_LIMIT, one_line, printable

    line = one_line(ValueError("node " + "\x1b" + "n" * 300_000 + " failed"))
    assert len(line) < MESSAGE_LIMIT + 60 and line.startswith("node \\x1bnnn") and line.endswith("nnn failed")
    assert "...(296," in line and "of 300,013 characters cut)..." in line
    assert printable("a\nb" * 10) == "a\\nb" * 10   # short names: only escaped
    assert printable("x" * 301) == "x" * 200 + "...(41 of 301 characters cut)..." + "x" * 60
    assert printable("x" * 300) == "x" * 300 and printable("x" * 10**6, limit=None) == "x" * 10**6


def test_printable_keeps_a_character_each_side_at_the_smallest_limits_and_one_line_cuts_at_its_limit():
    """Session s28's mutants of the caps: head and tail are at least one character (limit 1 gives 0 of each by the
    ratio), one_line's limit cuts exactly there, and a message that is empty once collapsed is named by its type."""
    from passes.one_line import one_line, printable
    assert printable("abcdef", limit=1) == "a...(4 of 6 characters cut)...f"
    assert printable("abcdef", limit=2) == "a...(4 of 6 characters cut)...f"
    assert printable("a\nbcdef\x1b", limit=3) == "a\\n...(5 of 8 characters cut)...\\x1b"   # cut, then escaped
    assert one_line("abc\x1bdef", limit=5) == "abc\\x" and one_line("abc def") == "abc def"
    assert one_line(ValueError(" \n ")) == "ValueError" and one_line(" \n ") == "" and one_line("") == ""


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_tolerance_must_be_finite_and_not_negative(value, work):
    result = apply_cli(work / "naive.onnx", "--pipeline", "eliminate-dead-nodes", "-o", work / "o.onnx",
                       f"--tolerance={value}")
    assert_one_line_error(result, 2, "--tolerance must be >= 0 and finite")


# --- 7. names with control characters stay on one line -------------------------------------------------

def test_an_output_name_cannot_forge_a_second_error_line(tmp_path):
    evil = "y\nerror: everything is fine\x1b[32m"
    model = onnx.parser.parse_model(DUPLICATE_NAMES)
    model.graph.node[2].output[0] = model.graph.output[0].name = evil
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = np.arange(4, dtype=np.float32)
    np.savez(tmp_path / "m.ref.npz", **{"x": x, evil: np.zeros(4, np.float32) + 99})
    result = apply_cli(path, "--pipeline", "eliminate-dead-nodes", "-o", tmp_path / "o.onnx")
    assert result.returncode == 3, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        result.stderr.splitlines()[-1]] and "\x1b" not in result.stderr
    assert "output 'y\\nerror: everything is fine\\x1b[32m' rel L2" in result.stderr


def test_a_path_with_markup_and_controls_is_shown_as_it_is(tmp_path):
    folder = tmp_path / "[bold]a[i]\x1b[2J"
    folder.mkdir()
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), folder / "naive.onnx")
    result = apply_cli(folder / "naive.onnx", "--pipeline", "eliminate-dead-nodes", "-o", folder / "o.onnx",
                       "--verify", "none")
    assert result.returncode == 0, result.stderr
    assert "\x1b[2J" not in result.stdout + result.stderr and "[bold]a[i]\\x1b[2J" in result.stdout


# --- 8. SIGTERM cleans up like Ctrl-C -------------------------------------------------------------------

SLOW_SAVE_PLUGIN = '''
import pathlib, time
import onnx
_save = onnx.save_model

def _slow_save(*args, **kwargs):   # the model is half-way into its temporary folder: then wait
    _save(*args, **kwargs)
    pathlib.Path({marker!r}).write_text("saving")
    time.sleep(60)

onnx.save_model = _slow_save
'''


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_apply_cleans_up_on_sigterm_like_on_ctrl_c(sig, code, work, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    marker = tmp_path / "marker"
    (plugins / "slow_save.py").write_text(SLOW_SAVE_PLUGIN.format(marker=str(marker)))
    before = listing(work)
    env = {"PYTHONPATH": f"{REPO}:{plugins}", "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([sys.executable, "-m", "passes.apply", str(work / "naive.onnx"), "--plugin", "slow_save",
                                "--pipeline", "eliminate-dead-nodes", "-o", str(work / "o.onnx")],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=with_ctrl_c)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the output was never being written"
        assert listing(work) != before, "no temporary folder to clean up"
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == code, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == ["error: interrupted; no output written"]
    assert listing(work) == before


# --- the whole command line, fuzzed ------------------------------------------------------------------

def _pass_names_and_options():
    from passes.registry import all_passes, pass_options

    return {name: sorted(pass_options(cls)) for name, cls in all_passes().items()}


PASSES = _pass_names_and_options()
# Passes that are slow on any model (onnxsim) or need a TPU-shaped graph stay out of the draw.
FUZZED_PASSES = sorted(set(PASSES) - {"simplify"})
VALUES = st.one_of(st.integers(-3, 100).map(str), st.sampled_from(
    ["inf", "-inf", "nan", "1.9", "true", "false", "maybe", "", "1e9", "0x10", "parallel", "batched", "chunk24",
     "fast", "None", "[1]", "{", "}", ",", "=", " 4 "]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6))


@st.composite
def pipeline_texts(draw):
    steps = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(FUZZED_PASSES + ["no-such-pass", "reroll_scans", "seed"]))
        known = PASSES.get(name, [])
        options = draw(st.lists(st.tuples(st.sampled_from(known + ["bogus"]) if known else st.just("bogus"), VALUES),
                                max_size=3))
        text = name + ("{" + ",".join(f"{k}={v}" for k, v in options) + "}" if options or draw(st.booleans()) else "")
        steps.append(text)
    return draw(st.sampled_from([",", ", ", ",,"])).join(steps) if steps else draw(st.sampled_from(["", " ", "cpu", "tpu"]))


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(pipeline=pipeline_texts(), chunk=st.one_of(st.none(), st.integers(-2, 40)),
       tolerance=st.sampled_from([None, "0", "1e-5", "nan", "-1", "abc", "1e300"]))
def test_any_command_line_is_0_or_one_clean_line_with_exit_2(pipeline, chunk, tolerance, tmp_path_factory):
    from passes.apply import main

    folder = tmp_path_factory.mktemp("fuzz")
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), folder / "naive.onnx")
    np.savez(folder / "naive.ref.npz", x=X, y=Y)
    before = listing(folder)
    argv = [str(folder / "naive.onnx"), "--pipeline", pipeline, "-o", str(folder / "o.onnx")]
    argv += ["--chunk", str(chunk)] if chunk is not None else []
    argv += [f"--tolerance={tolerance}"] if tolerance is not None else []
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
    assert code in (0, 2), (argv, err.getvalue())
    assert "Traceback" not in err.getvalue()
    if code == 2:
        assert len(errors) == 1 and err.getvalue().endswith("\n"), err.getvalue()
        assert listing(folder) == before
    else:
        assert errors == [] and listing(folder) == sorted(before + ["o.onnx"])


# --- what the run writes never meets what it reads, nor itself (found by an adversarial pass) ---------

def test_intermediates_never_write_over_the_input(work):
    """The input lies where --keep-intermediates would write its first model: refused, input intact."""
    folder = work / "out.onnx.intermediates"
    folder.mkdir()
    model_path = folder / "01-eliminate-dead-nodes.onnx"
    (work / "naive.onnx").rename(model_path)
    before = _snapshot(work)
    with pytest.raises(BadInput, match=r"intermediate model .*01-eliminate-dead-nodes\.onnx is the input"):
        compile_model(model_path, "eliminate-dead-nodes", output=work / "out.onnx", keep_intermediates=True,
                      verify="none")
    assert _snapshot(work) == before


def test_intermediates_never_write_over_the_reference(work):
    reference = work / "R" / "intermediates" / "01-eliminate-dead-nodes.onnx"
    reference.parent.mkdir(parents=True)
    (work / "naive.ref.npz").rename(reference)
    before = _snapshot(work)
    with pytest.raises(BadInput, match=r"intermediate model .* is the reference"):
        compile_model(work / "naive.onnx", "eliminate-dead-nodes", output=work / "out.onnx", reference=reference,
                      report=work / "R", keep_intermediates=True)
    assert _snapshot(work) == before


def test_an_explicit_reference_is_never_written_even_unverified(work):
    before = _snapshot(work)
    result = apply_cli(work / "naive.onnx", "--reference", work / "naive.ref.npz", "-o", work / "naive.ref.npz",
                       "--verify", "none", "--pipeline", "eliminate-dead-nodes")
    assert_one_line_error(result, 2, "is the reference", "which this run reads")
    assert _snapshot(work) == before


@pytest.mark.parametrize("case", ["output-is-a-report-file", "output-is-the-report-folder",
                                  "output-is-the-intermediates-folder", "output-is-an-intermediate"])
def test_destinations_that_clash_with_each_other_are_refused_before_any_work(case, work):
    report = work / "R"
    output = {"output-is-a-report-file": report / "index.html", "output-is-the-report-folder": report,
              "output-is-the-intermediates-folder": report / "intermediates",
              "output-is-an-intermediate": report / "intermediates" / "01-eliminate-dead-nodes.onnx"}[case]
    message = {"output-is-a-report-file": r"report file .*index\.html is also the output",
               "output-is-the-report-folder": r"output .*R is where the --report folder",
               "output-is-the-intermediates-folder": r"output .*intermediates is where the --keep-intermediates folder",
               "output-is-an-intermediate": r"intermediate model .* is also the output"}[case]
    if case != "output-is-the-report-folder":
        report.mkdir()
    if case == "output-is-an-intermediate":
        (report / "intermediates").mkdir()
    before = _snapshot(work)
    with pytest.raises(BadInput, match=message):
        compile_model(work / "naive.onnx", "eliminate-dead-nodes", output=output, report=report,
                      keep_intermediates=True)
    assert _snapshot(work) == before


@pytest.mark.parametrize("spelling", ["dot-dot", "linked-folder"])
def test_destinations_that_clash_under_another_spelling_are_refused(spelling, work):
    """Found by '-o R/../R/index.html --report R' and '-o L/report.json --report R' with L a link to R
    (adversarial session s13): the clash was not seen, the run said "wrote R/../R/index.html" with
    exit 0, and the report's page had replaced the compiled model."""
    report = work / "R"
    report.mkdir()
    (work / "L").symlink_to(report)
    output = {"dot-dot": report / ".." / "R" / "index.html", "linked-folder": work / "L" / "report.json"}[spelling]
    before = _snapshot(work)
    result = apply_cli(work / "naive.onnx", "--pipeline", "eliminate-dead-nodes", "-o", output, "--report", report)
    assert_one_line_error(result, 2, f"report file {report}/{output.name} is also the output {output}; "
                                     "give them different paths")
    assert _snapshot(work) == before and listing(report) == []


def test_diffview_never_writes_over_a_model_it_reads(work, tmp_path):
    model = work / "naive.onnx"
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    before = model.read_bytes()
    for destination in (model, link):
        result = subprocess.run([sys.executable, "-m", "tools.diffview", str(model), str(model), "-o", str(destination)],
                                capture_output=True, text=True, cwd=REPO, timeout=120)
        assert_one_line_error(result, 2, "is the model", "refusing to overwrite it")
    assert model.read_bytes() == before
    usage = subprocess.run([sys.executable, "-m", "tools.diffview"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1 and usage.stderr.startswith("error: ")


def test_huge_dimensions_are_bad_input_not_a_memory_error(work):
    model = onnx.parser.parse_model(TINY_MODEL_TEXT.replace("float[2,3] x", "float[N,3] x")
                                    .replace("float[2,3] y", "float[N,3] y"))
    onnx.save(model, work / "dynamic.onnx")
    result = apply_cli(work / "dynamic.onnx", "--input-shape", "x:99999999999,3", "-o", work / "out.onnx")
    assert_one_line_error(result, 2, "dimensions must be from 1 to 2147483647")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 10**12
    onnx.save(model, work / "huge.onnx")
    result = apply_cli(work / "huge.onnx", "-o", work / "out.onnx", "--pipeline", "eliminate-dead-nodes")
    assert_one_line_error(result, 2, "too large to make random data for", "--reference")
    assert not (work / "out.onnx").exists()


def test_an_interrupt_after_the_output_says_the_output_was_written(work, monkeypatch, capsys):
    import passes.report.writer
    from passes import apply

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(passes.report.writer, "write_report_dir", interrupted)
    code = apply.main([str(work / "naive.onnx"), "-o", str(work / "out.onnx"), "--report", str(work / "R"),
                       "--pipeline", "eliminate-dead-nodes"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 130 and (work / "out.onnx").is_file()
    assert errors == [f"error: interrupted after writing {work / 'out.onnx'}; the report was not written"]


@pytest.mark.parametrize("args", [("-o", "missing-folder/out.onnx"), ("--pipeline", "no-such-pass{", "-o", "out.onnx")])
def test_an_error_before_any_step_is_the_whole_of_stderr(args, work):
    result = apply_cli(work / "naive.onnx", *args, cwd=work)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, repr(result.stderr)


# --- a run that fails or is interrupted leaves no folder it made (found by s13's adversarial pass) ------

class _Raises(Pass):
    """The first pass of a pipeline, failing or interrupted before anything was changed."""

    name = "test-raises"

    def __init__(self, error: BaseException):
        super().__init__()
        self.error = error

    def run(self, graph, ctx):
        raise self.error


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["failure", "ctrl-c"])
@pytest.mark.parametrize("where", ["next-to-output", "in-report"])
def test_no_intermediates_folder_is_left_when_nothing_was_kept(error, where, work):
    """-o out.onnx --keep-intermediates made out.onnx.intermediates/ (and --report R/sub made R/ and
    R/sub/) before the first pass: a pass failing or Ctrl-C left them behind, empty."""
    before = listing(work)
    report = work / "R" / "sub" if where == "in-report" else None
    with pytest.raises((PassFailed, KeyboardInterrupt)):
        compile_model(work / "naive.onnx", [_Raises(error)], output=work / "out.onnx", keep_intermediates=True,
                      verify="none", report=report)
    # a failed run's report is written (it says what failed); an interrupted run writes none
    written = ["R", "R/sub", "R/sub/index.html", "R/sub/report.json"] if report and isinstance(error, RuntimeError) else []
    assert listing(work) == sorted(before + written)


def test_an_interrupted_report_leaves_no_folder(work, monkeypatch):
    import passes.report.writer as writer

    def interrupted(*args, **kwargs):   # Ctrl-C while the report's files are written, in their folder
        raise KeyboardInterrupt()

    monkeypatch.setattr(writer, "atomic_targets", interrupted)
    before = listing(work)
    with pytest.raises(KeyboardInterrupt):
        compile_model(work / "naive.onnx", "eliminate-dead-nodes", report=work / "R" / "sub", verify="none")
    assert listing(work) == before


def test_an_intermediate_that_cannot_be_written_is_a_one_line_error(work, monkeypatch):
    """Found by s14: a --keep-intermediates model failing to write (a full disk) escaped as an
    internal error (exit 1, 'OutputError'); it is an output that cannot be written, like -o's."""
    import pipelines.compiler as compiler
    from passes.graph_io import OutputError

    def disk_full(model, path, **kwargs):
        raise OutputError(f"cannot write {path}: [Errno 28] No space left on device")

    monkeypatch.setattr(compiler, "save_model_atomic", disk_full)
    before = listing(work)
    with pytest.raises(BadInput, match=r"cannot write .*01-fold-constants\.onnx: \[Errno 28\] No space left on device"):
        compile_model(work / "naive.onnx", "fold-constants", output=work / "out.onnx", keep_intermediates=True,
                      verify="none")
    assert listing(work) == before


def test_a_report_failing_after_the_output_says_the_output_was_written(work, monkeypatch):
    """Found by s14 on a full file system: the output fitted, the report did not; the one error line
    said only 'cannot write the report', as if nothing had been written."""
    import passes.report.writer as writer

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_report_dir", disk_full)
    with pytest.raises(BadInput) as error:
        compile_model(work / "naive.onnx", "eliminate-dead-nodes", output=work / "out.onnx", report=work / "R")
    assert str(error.value) == (f"wrote {work / 'out.onnx'}, but cannot write the report: "
                                "[Errno 28] No space left on device")
    assert (work / "out.onnx").is_file() and not (work / "R").exists()


def test_paths_that_are_not_utf8_reach_the_report(tmp_path):
    """Found by s14: a folder named with the byte 0xff (a surrogate, \\udcff, in Python's str) made
    index.html fail to encode after the output was written: exit 1, report.json without its page."""
    folder = tmp_path / os.fsdecode(b"work\xff")
    folder.mkdir()
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), folder / "naive.onnx")
    compile_model(folder / "naive.onnx", "eliminate-dead-nodes", output=folder / "o.onnx", report=folder / "R",
                  verify="none")
    page = (folder / "R" / "index.html").read_bytes()
    assert b"work\\udcff" in page and b"\xff" not in page
    assert json.loads((folder / "R" / "report.json").read_text())["input"] == str(folder / "naive.onnx")


@pytest.mark.parametrize("pipeline", ["einsum-to-matmul", "softplus-to-exp-log", "cpu"])
def test_a_graph_output_typed_without_a_shape_is_named_as_bad_input(pipeline, tmp_path):
    """adv11/adv12: an output declared make_tensor_value_info('y', FLOAT, None) (ONNX Runtime runs it, onnx.checker
    refuses it) failed the check after the first pass that changed the graph, which was blamed: exit 3 'pass
    'einsum-to-matmul' produced an invalid model: onnx.checker: Field 'shape' of 'type' is required but missing'."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    w = onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [3, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    nodes = [onnx.helper.make_node("Einsum", ["x", "w"], ["e"], equation="ij,jk->ik"),
             onnx.helper.make_node("Softplus", ["e"], ["y"])]
    path = tmp_path / "bad.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x, w], [y]),
                                     opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    result = apply_cli(path, "--pipeline", pipeline, "-o", tmp_path / "o.onnx", "--verify", "none")
    assert_one_line_error(result, 2, "bad.onnx: invalid model: graph output 'y' declares a type but no shape, which "
                          "onnx.checker requires (declare its dims, named where they vary) (found after pass '")
    assert sorted(os.listdir(tmp_path)) == ["bad.onnx"]


def test_two_nodes_of_one_name_are_bad_input_even_unverified(tmp_path):
    """adv12: ONNX Runtime refuses a graph in which two nodes share a name ('two nodes with same node name'), so
    --verify end refused it (exit 2), while --verify none wrote it (exit 0; before opset18-to-17 named its constants
    freely, two opset-18 Pads of one name got one pads tensor: exit 3). The model check refuses it."""
    path = tmp_path / "bad.onnx"
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[2,3] y) { r = Relu(x)  y = Relu(r) }""")
    for node in model.graph.node:
        node.name = "same\x1b"
    onnx.save(model, path)
    result = apply_cli(path, "--pipeline", "cpu", "-o", tmp_path / "o.onnx", "--verify", "none")
    assert_one_line_error(result, 2, "bad.onnx: node name 'same\\x1b' is given to two nodes in graph")
    assert sorted(os.listdir(tmp_path)) == ["bad.onnx"]


# --- adv13 -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, label, op", [
    ("n = RandomNormal<shape = [4], dtype = 1>()", "a node (RandomNormal)", "RandomNormal"),
    ("r = Constant<value = float {0.5}>()  t = Constant<value = bool {1}>()  n = Dropout(x, r, t)",
     "a node (Dropout, training mode)", "Dropout"),
])
def test_a_model_that_draws_random_values_is_not_verified(body, label, op, tmp_path):
    """adv13: a RandomNormal with no seed, or a Dropout in training mode: the input model's run and the output's never
    agree, and verification said 'verification failed: output 'y' rel L2 1.13' (exit 3, the run's fault). Now refused
    before the work, exit 2; --verify none compiles it, the draw left to run time (fold-constants had folded the
    RandomNormal into an initializer: test_cleanup_passes.py)."""
    path = tmp_path / "random.onnx"
    onnx.save(onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) {{ {body}  y = Add(x, n) }}"""), path)
    result = apply_cli(path, "--pipeline", "cpu", "-o", tmp_path / "o.onnx")
    assert_one_line_error(result, 2)
    assert result.stderr.splitlines()[-1] == (f"error: cannot verify: {label} draws new random values at every run with no "
                                              "seed: no two runs agree (--verify none compiles it without running it)")
    assert sorted(os.listdir(tmp_path)) == ["random.onnx"]
    result = apply_cli(path, "--pipeline", "cpu", "-o", tmp_path / "o.onnx", "--verify", "none")
    assert result.returncode == 0, result.stderr
    assert [node.op_type for node in onnx.load(tmp_path / "o.onnx").graph.node] == [op, "Add"]


@pytest.mark.parametrize("make, kind", [
    (os.mkfifo, "a named pipe"),
    (lambda path: os.symlink("nowhere.npz", path), "a broken link"),
    (os.mkdir, "a folder"),
])
def test_a_reference_beside_the_model_that_is_no_file_is_refused(make, kind, work):
    """adv13: naive.ref.npz beside the model as a named pipe, a broken link or a folder was passed over: 'no reference
    npz (looked for naive.ref.npz)', verified on random inputs, exit 0. Now one line, exit 2 (--verify none runs)."""
    (work / "naive.ref.npz").unlink(missing_ok=True)
    make(work / "naive.ref.npz")
    result = apply_cli(work / "naive.onnx", "--pipeline", "eliminate-dead-nodes", "-o", work / "o.onnx")
    assert_one_line_error(result, 2)
    assert result.stderr.splitlines()[-1] == (f"error: reference {work / 'naive.ref.npz'} beside the model is {kind}, not "
                                              "a file; refused (remove it, or give --reference, or --verify none)")
    assert not (work / "o.onnx").exists()
    result = apply_cli(work / "naive.onnx", "--pipeline", "eliminate-dead-nodes", "-o", work / "o.onnx", "--verify", "none")
    assert result.returncode == 0, result.stderr


def test_the_arabic_letter_mark_is_escaped_like_the_other_bidi_controls():
    """adv13: U+061C (Unicode's Bidi_Control set, beside U+200E/F and U+202A-E) reached the terminal and the report raw."""
    from passes.one_line import printable

    assert printable("a\u061cb\u200ec") == "a\\u061cb\\u200ec"


@pytest.mark.parametrize("report", [True, False])
def test_a_planted_link_where_the_intermediates_go_is_refused(report, work, tmp_path):
    """adv13: R/intermediates (or OUT.intermediates) planted as a symbolic link to another folder: the run wrote its
    intermediate models there (01-eliminate-dead-nodes.onnx in the link's target), a folder the user never named.
    Now refused before the work, exit 2, the target untouched."""
    victim = tmp_path / "victim"
    victim.mkdir()
    folder = work / ("R" if report else "o.onnx.intermediates")
    if report:
        folder.mkdir()
        folder = folder / "intermediates"
    folder.symlink_to(victim)
    where = ["--report", work / "R"] if report else []
    result = apply_cli(work / "naive.onnx", "--pipeline", "eliminate-dead-nodes", "-o", work / "o.onnx", *where,
                       "--keep-intermediates", "--verify", "none")
    assert_one_line_error(result, 2)
    assert result.stderr.splitlines()[-1] == (f"error: --keep-intermediates folder {folder} is a symbolic link (to "
                                              f"{victim}); refused (remove it)")
    assert os.listdir(victim) == [] and not (work / "o.onnx").exists()


# --- adv16: verification is bounded in time ---------------------------------------------------------

def _endless_loop_model(trips: int | None) -> onnx.ModelProto:
    """y = Relu(x) carried through a Loop whose body copies it: `trips` steps (None: no trip count, the
    condition true at every step, a loop that never ends). Valid ONNX; ONNX Runtime runs it that long."""
    from onnx import TensorProto, helper
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2, 3])])
    initializers = [helper.make_tensor("cond", TensorProto.BOOL, [], [True])]
    if trips is not None:
        initializers.append(helper.make_tensor("M", TensorProto.INT64, [], [trips]))
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Loop", ["M" if trips else "", "cond", "r"], ["y"], body=body)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("trips", [2 ** 62, None], ids=["2^62-trips", "endless"])
@pytest.mark.parametrize("with_reference", [False, True], ids=["random-inputs", "reference"])
def test_a_loop_that_runs_for_ever_is_refused_within_the_verify_timeout(trips, with_reference, tmp_path):
    """adv15's open lead: the input model's run (random inputs) or, with a reference, the compiled model's run
    held the compile until SIGTERM (exit 143). Now each ONNX Runtime run is killed past --verify-timeout."""
    model = tmp_path / "loop.onnx"
    onnx.save(_endless_loop_model(trips), model)
    if with_reference:
        np.savez(tmp_path / "loop.ref.npz", x=X, y=np.maximum(X, 0))
    started = time.monotonic()
    result = apply_cli(model, "--pipeline", "cpu", "-o", tmp_path / "out.onnx", "--verify-timeout", "2",
                       "--report", tmp_path / "report")
    assert time.monotonic() - started < 60
    whose = "the compiled model's run" if with_reference else "the input model's run"
    assert_one_line_error(result, 2, f"cannot verify: {whose}: ONNX Runtime's run did not end within 2 s",
                          "--verify none compiles it")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["loop.onnx"] + (["loop.ref.npz", "report"] if with_reference else []))


def test_the_verify_timeout_has_a_bound_by_default_and_refuses_what_is_no_time():
    import inspect
    assert inspect.signature(compile_model).parameters["verify_timeout"].default == 1800.0
    model = _endless_loop_model(3)
    for bad, shown in ((0, "positive, finite number of seconds, got 0"), (float("inf"), "got inf"),
                       (-1.0, "got -1.0"), ("10", "a number of seconds or None, got str"), (True, "got bool")):
        with pytest.raises(BadInput, match="^verify_timeout must be ") as refused:
            compile_model(model, "cpu", verify_timeout=bad)
        assert shown in str(refused.value)
    assert compile_model(model, "cpu", verify_timeout=None).verification["ok"]


def test_a_report_failing_after_the_output_names_the_intermediates_kept(tmp_path):
    """adv13's open lead, seen again by adv16 under `ulimit -f 1`: the output and the intermediate models fitted,
    report.json did not; the line said only 'wrote o.onnx, but cannot write the report', the folder of
    intermediate models left unnamed in the report folder the user thinks failed."""
    import resource
    model = tmp_path / "naive.onnx"
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), model)
    np.savez(tmp_path / "naive.ref.npz", x=X, y=Y)

    def small_files():   # a file may grow to 4 KiB: the models fit, report.json (~5 KB) does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    # No bytecode written: CPython's own .pyc writes are cut at the limit too (a 4,096-byte compiler.pyc
    # broke every later import of pipelines.compiler with "EOFError: marshal data too short").
    env = {"PYTHONPATH": str(REPO), "COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-m", "passes.apply", str(model), "--pipeline", "fold-constants,simplify",
                             "-o", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "R"), "--keep-intermediates"],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=120, preexec_fn=small_files)
    kept = sorted(p.name for p in (tmp_path / "R" / "intermediates").iterdir())
    assert kept and not (tmp_path / "R" / "report.json").exists()
    assert_one_line_error(result, 2, f"wrote {tmp_path / 'o.onnx'} and {len(kept)} intermediate model(s) in "
                                     f"{tmp_path / 'R' / 'intermediates'}, but cannot write the report: "
                                     "[Errno 27] File too large")
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


def test_an_intermediate_model_that_cannot_be_written_names_those_kept(tmp_path, monkeypatch):
    """adv17, a 64 KiB tmpfs (`-o fs/o.onnx --report fs/R --keep-intermediates`, --pipeline cpu on Softplus and
    Identity chains): 04-softplus-to-exp-log.onnx fitted, 13-min-max-to-clip.onnx did not; the line said only
    'cannot write fs/R/intermediates/13-min-max-to-clip.onnx: [Errno 28] No space left on device', the first model
    left unnamed in a folder the failed run made. The disk filled here by a stand-in for the writer."""
    import pipelines.compiler as compiler
    from passes.graph_io import GraphIOError
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y) { a = Softplus(x) b = Identity(a) c = Min(b, b) y = Relu(c) }"""
    written = []

    def save(model, path, **kwargs):
        if written:
            raise GraphIOError(f"cannot write {path}: [Errno 28] No space left on device")
        written.append(path)
        return real_save(model, path, **kwargs)

    real_save = compiler.save_model_atomic
    monkeypatch.setattr(compiler, "save_model_atomic", save)
    with pytest.raises(BadInput) as refused:
        compile_model(onnx.parser.parse_model(text), "cpu", output=tmp_path / "o.onnx", report=tmp_path / "R",
                      keep_intermediates=True)
    folder = tmp_path / "R" / "intermediates"
    assert [p.name for p in folder.iterdir()] == [written[0].name] == ["04-softplus-to-exp-log.onnx"]
    assert str(refused.value) == (f"cannot write {folder / '13-min-max-to-clip.onnx'}: [Errno 28] No space left "
                                  f"on device; the 1 intermediate model(s) written before it are kept in {folder}, "
                                  "no output written")
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "R" / "report.json").exists()


@pytest.mark.parametrize("body, said", [
    ("import sys\nsys.exit(0)\n", "SystemExit: 0 raised while it was imported"),
    ("raise SystemExit(3)\n", "SystemExit: 3 raised while it was imported"),
    ("import sys\nsys.exit('bye\\nerror: forged')\n", "SystemExit: bye error: forged raised while it was imported"),
    ("raise GeneratorExit\n", "GeneratorExit raised while it was imported"),
], ids=["exit-0", "exit-3", "exit-message", "generator-exit"])
def test_a_plugin_that_exits_while_imported_is_bad_input(tmp_path, body, said):
    """adv17: `--plugin` of a module calling sys.exit(0) on import ended the CLI with exit 0 and nothing said (no
    output written); SystemExit(3) was exit 3, 'verification failed' to a script; sys.exit(text) printed the text raw
    (two lines), exit 1; GeneratorExit was a traceback."""
    (tmp_path / "quitting.py").write_text(body)
    model = tmp_path / "naive.onnx"
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), model)
    result = apply_cli(model, "--plugin", "quitting", "--pipeline", "cpu", "-o", tmp_path / "o.onnx", extra_path=tmp_path)
    assert_one_line_error(result, 2, f"cannot import plugin quitting: {said}")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("raised", ["sys.exit(0)", "raise GeneratorExit('x')"])
def test_a_pass_that_exits_is_a_failed_pass(tmp_path, raised):
    """adv17: a pass (a plugin's, or a caller's Pass given to compile_model) calling sys.exit(0) in run() left
    compile_model by SystemExit: the CLI ended with exit 0, no output and nothing said, the report not written."""
    (tmp_path / "quitting_pass.py").write_text(f"""import sys
from passes.base import Pass
from passes.registry import register_pass


@register_pass
class Quit(Pass):
    name = "test-quits"
    description = "exits"

    def run(self, graph, ctx):
        {raised}
""")
    model = tmp_path / "naive.onnx"
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), model)
    result = apply_cli(model, "--plugin", "quitting_pass", "--pipeline", "test-quits", "-o", tmp_path / "o.onnx",
                       "--report", tmp_path / "R", extra_path=tmp_path)
    shown = "SystemExit: 0" if raised.startswith("sys") else "GeneratorExit: x"
    assert_one_line_error(result, 4, f"error: pass 'test-quits' failed after []: {shown}")
    assert not (tmp_path / "o.onnx").exists()
    assert json.loads((tmp_path / "R" / "report.json").read_text())["status"] == "pass-failed"


@pytest.mark.parametrize("verify", ["none", "end"])
def test_an_if_branch_contradicting_its_declared_output_is_bad_input(tmp_path, verify):
    """adv17: If(false) whose else branch concatenates x with itself, (1, 8), under a declared (1, 4): ONNX's inference
    merges the branches, ONNX Runtime runs it; fold-constants flattened the If and the check after it failed, exit 3
    'verification failed: pass 'fold-constants' produced an invalid model ... (8) vs (4)'."""
    model = tmp_path / "m.onnx"
    onnx.save(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y) {
  c = Constant<value = bool {0}>()
  y = If(c) <then_branch = t () => (float[1,4] a) { a = Relu(x) },
      else_branch = e () => (float[1,8] z) { z = Concat<axis = 1>(x, x) }> }"""), model)
    result = apply_cli(model, "--pipeline", "cpu", "-o", tmp_path / "o.onnx", "--verify", verify)
    assert_one_line_error(result, 2, f"error: {model}: invalid model: a If node: its else branch's output 'z' has "
                                     "shape (1, 8), where 'y' is declared (1, 4) (found after pass 'fold-constants')")
    assert not (tmp_path / "o.onnx").exists()


def test_a_verify_timeout_of_any_real_number_type_or_size_is_kept_or_refused_in_one_line(tmp_path):
    """adv17: verify_timeout=Fraction(1, 2) or numpy.float32(0.5) passed the type check, then the timer's thread died
    ('cannot be interpreted as an integer', a traceback on stderr) and the run had no limit (a Loop that never ends
    held the caller for ever); 10**400 raised OverflowError out of compile_model; `--verify-timeout 1e10` (past
    threading.TIMEOUT_MAX, 292 years) printed two thread tracebacks beside the compile's lines."""
    import fractions
    for bad in (10 ** 400, -(10 ** 400)):
        with pytest.raises(BadInput) as refused:
            compile_model(_endless_loop_model(3), "cpu", verify_timeout=bad)
        assert str(refused.value).startswith("verify_timeout must be a positive, finite number of seconds, got ")
        assert "characters cut" in str(refused.value)
    script = ("import fractions, numpy, sys\nsys.path.insert(0, 'tests')\nfrom test_apply_hardening import "
              "_endless_loop_model\nfrom pipelines.compiler import BadInput, compile_model\n"
              "for limit in (fractions.Fraction(1, 2), numpy.float32(0.5)):\n"
              "    try:\n        compile_model(_endless_loop_model(None), 'cpu', verify_timeout=limit)\n"
              "    except BadInput as error:\n        print(str(error)[:90])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=240,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    said = "cannot verify: the input model's run: ONNX Runtime's run did not end within 0.5 s (a Loop "
    assert (result.stdout.splitlines(), result.stderr) == ([said, said], "")
    model = tmp_path / "naive.onnx"
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), model)
    result = apply_cli(model, "--pipeline", "cpu", "-o", tmp_path / "o.onnx", "--verify-timeout", "1e10")
    assert result.returncode == 0 and "Traceback" not in result.stderr and "Exception" not in result.stderr, result.stderr


# --- adv18 ------------------------------------------------------------------------------------------------------

def test_an_external_data_file_cut_while_it_is_read_is_said_so(work, monkeypatch):
    """adv18 (adv17's 'model file replaced during the run'): the weights file is sized once, then read; cut between
    the two (another process rewriting it), the short read was blamed on the model ("tensor 'unused_weight'
    declares dims [4096] (16,384 bytes) but holds 100"). Now said as what happened, exit 2, nothing written;
    a file replaced meanwhile (renamed over) is read whole from the handle opened first."""
    import passes.graph_io as graph_io

    model_path = _external_input(work, "w.bin")
    counted = graph_io._bytes_read_again

    def cut_first(spans):   # runs after every file is opened and sized, before any is read
        os.truncate(work / "w.bin", 100)
        return counted(spans)

    monkeypatch.setattr(graph_io, "_bytes_read_again", cut_first)
    with pytest.raises(BadInput) as refused:
        compile_model(model_path, "eliminate-dead-nodes", output=work / "o.onnx", verify="none")
    assert refused.value.exit_code == 2
    assert str(refused.value) == ("external data 'w.bin' of tensor 'unused_weight' changed while it was read: 100 of "
                                  "16,384 bytes at offset 0 (the file was cut meanwhile); refused")
    assert sorted(os.listdir(work)) == ["in.onnx", "in.ref.npz", "naive.onnx", "naive.ref.npz", "w.bin"]


def test_a_model_file_is_onnx_protobuf_whatever_its_name_ends_in(work):
    """adv18: onnx.load and onnx.save_model pick a format by the file name's ending: a binary model named m.json
    was refused as "'utf-8' codec can't decode byte 0x80", and `-o cpu.json` (or .textproto, .onnxtxt) wrote the
    verified model as JSON or text, which ONNX Runtime and tpu-mlir cannot load ("Protobuf parsing failed").
    Read and written as ONNX's protobuf, as every consumer reads it; --keep-intermediates' models too."""
    import onnxruntime

    model = work / "m.json"
    (work / "naive.onnx").rename(model)
    for name in ("o.json", "o.textproto", "o.onnxtxt"):
        result = apply_cli(model, "--pipeline", "cpu", "-o", work / name, "--reference", work / "naive.ref.npz",
                           "--keep-intermediates")
        assert result.returncode == 0, result.stderr
        written = onnx.load_model_from_string((work / name).read_bytes())
        assert [node.op_type for node in written.graph.node] == ["Add", "Relu"]
        session = onnxruntime.InferenceSession(str(work / name), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, {"x": X})[0], Y)
        for intermediate in (work / f"{name}.intermediates").iterdir():
            onnx.load_model_from_string(intermediate.read_bytes())


@pytest.mark.parametrize("imports", [["ai.onnx"], ["ai.onnx", ""]])
def test_the_default_domain_spelled_ai_onnx_compiles_to_a_model_onnx_runtime_runs(imports, work):
    """adv18: a model importing ONNX's default domain as 'ai.onnx' (onnx's checker and ONNX Runtime take it; the
    input ran) came out of onnx-graphsurgeon importing 'ai.onnx' 17 and '' 1: ONNX Runtime read its Add as Add-1,
    exit 3 'Could not find an implementation for Add(1)' after any pass, and with --verify none exit 0 with that
    model written. Named '' on loading; the caller's in-memory model is left as it was. (A node of domain 'ai.onnx'
    is refused by model_check: "No opset import for domain 'ai.onnx'", exit 2.)"""
    model = onnx.parser.parse_model(TINY_MODEL_TEXT)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, 17) for domain in imports)
    onnx.save(model, work / "naive.onnx")
    result = apply_cli(work / "naive.onnx", "--pipeline", "cpu", "-o", work / "o.onnx")
    assert result.returncode == 0, result.stderr
    written = onnx.load(work / "o.onnx")
    assert [(entry.domain, entry.version) for entry in written.opset_import] == [("", 17)]
    assert {node.domain for node in written.graph.node} == {""}
    before = model.SerializeToString()
    assert compile_model(model, "eliminate-dead-nodes").verification["rel_l2"] == 0
    assert model.SerializeToString() == before


@pytest.mark.parametrize("domain, newest", [("ai.onnx.ml", 5), ("ai.onnx.preview.training", 1), ("ai.onnx.preview", 1)])
@pytest.mark.parametrize("verify", ["end", "none"])
def test_an_onnx_domain_imported_at_a_version_onnx_does_not_know_is_refused_on_input(domain, newest, verify, work):
    """adv18: only the default domain's opset was held to what onnx knows; ai.onnx.ml 99 (or a preview domain's 99)
    was written with --verify none, exit 0, and under verification refused by ONNX Runtime in a line of its C++
    template names ('model_load_utils.h:46 void onnxruntime::model_load_utils::ValidateOpsetForDomain(const
    std::unordered_map<...'). Refused by model_check, one line, exit 2, nothing written."""
    assert onnx.defs.onnx_ml_opset_version() == 5   # onnx 1.23.2's newest; the test names it
    model = onnx.parser.parse_model(TINY_MODEL_TEXT)
    model.opset_import.append(onnx.helper.make_opsetid(domain, 99))
    onnx.save(model, work / "naive.onnx")
    result = apply_cli(work / "naive.onnx", "--pipeline", "cpu", "-o", work / "o.onnx", "--verify", verify)
    assert_one_line_error(result, 2)
    assert result.stderr.splitlines()[-1] == (f"error: {work / 'naive.onnx'}: opset 99 of domain '{domain}' is newer "
                                              f"than the newest this onnx knows ({newest})")
    assert not (work / "o.onnx").exists()


def test_a_step_that_fails_or_is_interrupted_is_never_shown_done(tmp_path):
    """adv18: a step's line was marked done in a `finally`, whatever ended it: a model that did not load showed
    '✓ load m.onnx' above its error, and Ctrl-C during the write '✓ write out/o.onnx' above 'error: interrupted;
    no output written' (seen with two SIGINTs into a 240 MB write). Now ✗ and what ended it; a pass stopped by
    the error likewise (it showed its spinner's last frame)."""
    import re
    (tmp_path / "m.onnx").write_bytes(b"garbage")
    result = apply_cli(tmp_path / "m.onnx", "--pipeline", "cpu", "-o", tmp_path / "o.onnx")
    assert_one_line_error(result, 2, "not an ONNX file, or truncated")
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and re.fullmatch(rf"✗ load {re.escape(str(tmp_path / 'm.onnx'))} · failed +0:00:0\d",
                                            lines[0].rstrip()), lines
    from passes.apply_display import RichProgress
    from rich.console import Console
    console = Console(file=io.StringIO(), width=120)
    with pytest.raises(KeyboardInterrupt), RichProgress(console) as display:
        with display.step("write o.onnx"):
            raise KeyboardInterrupt
    with pytest.raises(ValueError), RichProgress(console) as display:
        display.pass_started(0, 1, type("P", (), {"name": "some-pass"})())
        raise ValueError
    shown = [line.rstrip() for line in console.file.getvalue().splitlines()]
    assert [re.sub(r" +0:00:0\d$", "", line) for line in shown] == ["✗ write o.onnx · interrupted",
                                                                     "✗ [1/1] some-pass · failed"]


@pytest.mark.parametrize("verify", ["none", "end"])
def test_a_model_whose_external_data_passes_2_gib_is_refused_before_it_is_read(verify, tmp_path):
    """adv18: weights of 2 GiB + 1 MiB in an external file (sparse here) were read in whole (4.3 GB of memory, a
    minute), then with --verify none 'internal error: EncodeError: Failed to serialize proto' (exit 1); with
    verification 'the input model does not run: ... Failed to serialize proto (--verify none compiles it ...)',
    advice that failed too. Protobuf's limit holds the compiler's one in-memory model: refused before any byte is
    read, exit 2."""
    from onnx.external_data_helper import set_external_data
    count = (2**31 + 2**20) // 4
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y, int64[1] size) { y = Relu(x)  size = Shape(w) }""")
    weight = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[count], raw_data=b"-")
    set_external_data(weight, "w.bin", 0, count * 4)
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    model.graph.initializer.append(weight)
    onnx.save(model, tmp_path / "m.onnx")
    with open(tmp_path / "w.bin", "wb") as data:
        data.truncate(count * 4)
    whole = model.ByteSize() + count * 4
    result = apply_cli(tmp_path / "m.onnx", "--pipeline", "cpu", "-o", tmp_path / "o.onnx", "--verify", verify)
    assert_one_line_error(result, 2)
    assert result.stderr.splitlines()[-1] == (
        f"error: {tmp_path / 'm.onnx'} with its external data read in would be {whole:,} bytes, over protobuf's limit "
        "of 2,147,483,648 (2 GiB) on one model, which is how the compiler holds it; not supported")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "w.bin"]


def test_a_second_ctrl_c_during_the_cleanup_of_the_first_leaves_no_temporary_file(tmp_path, monkeypatch):
    """adv18: the cleanup that Ctrl-C runs (the model's staging folder, a report's temporary files, a folder the
    run made) was itself interruptible: a second Ctrl-C (or a SIGTERM after it) arriving as it began left
    '.o.onnx.tmp-*' with a partial model, '.report.json.*.tmp' or an empty folder behind. The cleanup now holds
    interrupts and raises the held one after it (exit 130 or 143 as before)."""
    import shutil
    import passes.files as files
    import passes.graph_io as graph_io
    from passes.interrupts import sigterm_as_interrupt

    def second_signal_first(function):
        def wrapped(*args, **kwargs):
            signal.raise_signal(signal.SIGINT)   # the second Ctrl-C, as the cleanup starts
            return function(*args, **kwargs)
        return wrapped

    def interrupted_write(model, path, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise KeyboardInterrupt   # the first Ctrl-C, mid-write

    model = onnx.parser.parse_model(TINY_MODEL_TEXT)
    monkeypatch.setattr(graph_io.onnx, "save_model", interrupted_write)
    monkeypatch.setattr(graph_io.shutil, "rmtree", second_signal_first(shutil.rmtree))
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        graph_io.save_model_atomic(model, tmp_path / "o.onnx")
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()

    real_unlink = os.unlink
    monkeypatch.setattr(os, "unlink", second_signal_first(real_unlink))
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        with files.atomic_targets(tmp_path / "report.json", tmp_path / "index.html"):
            raise KeyboardInterrupt
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []

    monkeypatch.setattr(files, "remove_empty_folders", second_signal_first(files.remove_empty_folders))
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        with files.folders_made(tmp_path / "R" / "intermediates"):
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_terminal_that_cannot_encode_the_summary_gets_it_escaped(encoding, work):
    """PYTHONIOENCODING=ascii (a C-locale ssh session, a Latin-1 terminal): passes.apply wrote its output,
    then ended in 'internal error: UnicodeEncodeError: ... '\\u2192'', exit 1; tools.nodecount (U+2026) and
    tools.diffview (U+2190) in a traceback (adv19). The characters are written as escapes."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "PYTHONIOENCODING": encoding}
    commands = [["passes.apply", work / "naive.onnx", "--pipeline", "cpu", "-o", work / "o.onnx", "--explain",
                 "--report", work / "R"],
                ["tools.nodecount", work / "naive.onnx", work / "o.onnx"],
                ["tools.diffview", work / "naive.onnx", work / "o.onnx"]]
    for command in commands:
        result = subprocess.run([sys.executable, "-m", *map(str, command)], capture_output=True, env=env,
                                cwd=REPO, timeout=120)
        said = (result.stdout + result.stderr).decode(encoding)
        assert result.returncode == 0 and "Error" not in said, (command, said)
    assert (work / "o.onnx").is_file() and (work / "R" / "report.json").is_file()


def test_a_pass_that_grows_the_model_past_2_gib_is_refused_in_one_line(tmp_path, monkeypatch):
    """A model of 13 KB whose 132 ConstantOfShape nodes fold-constants folds into 16 MiB constants each (its size
    gate is per tensor): 2.2 GB, which the run carried to 'internal error: EncodeError: Failed to serialize proto'
    at the write, exit 1, 137 s and 8.7 GB later (adv19, dev 2-core). Now refused after the pass that grew it:
    exit 2, nothing written. Run here with the limit lowered to 200 KB and two folded constants of 256 KiB."""
    from passes import graph_io

    monkeypatch.setattr(graph_io, "MAX_MODEL_BYTES", 200_000)
    s = onnx.numpy_helper.from_array(np.array([65536], np.int64), "s")
    nodes = [onnx.helper.make_node("ConstantOfShape", ["s"], [c], value=onnx.helper.make_tensor("v", 1, [1], [v]))
             for c, v in (("a", 1.0), ("b", 2.0))]
    nodes += [onnx.helper.make_node("Add", ["x", c], [o]) for c, o in (("a", "y"), ("b", "z"))]
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", 1, [1])],
                                   [onnx.helper.make_tensor_value_info(o, 1, [65536]) for o in "yz"], [s])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    with pytest.raises(BadInput) as caught:
        compile_model(tmp_path / "m.onnx", "fold-constants", output=tmp_path / "o.onnx", report=tmp_path / "R",
                      verify="none")
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"{tmp_path / 'm.onnx'}: compiled, it grows to 524,434 bytes, over "
        "protobuf's limit of 200,001 (2 GiB) on one model, which is how the compiler holds it; not supported "
        "(found by pass 'fold-constants')")
    assert sorted(os.listdir(tmp_path)) == ["R", "m.onnx"]   # the report of the failed run, no output


class _ExpToRelu(Pass):
    """Changes output z only: Exp -> Relu."""
    name = "test-exp-to-relu"

    def run(self, graph, ctx):
        for node in graph.nodes:
            if node.op == "Exp":
                node.op = "Relu"
        return PassResult(changed=True)


def test_an_output_the_reference_lacks_is_compared_with_the_input_models_run(tmp_path):
    """A reference npz holding y of a model giving y and z: z was never compared, the run said 'verified against'
    it and a pass breaking z wrote its output, exit 0 (adv19). z is now compared with the input model's run on the
    reference's inputs, with a warning."""
    onnx.save(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y, float[2] z) { y = Relu(x)
                                                      z = Exp(x) }"""), tmp_path / "m.onnx")
    x = np.array([1.0, -1.0], np.float32)
    np.savez(tmp_path / "m.ref.npz", x=x, y=np.maximum(x, 0))
    with pytest.raises(VerificationFailed) as caught:
        compile_model(tmp_path / "m.onnx", [_ExpToRelu()], output=tmp_path / "o.onnx")
    assert caught.value.exit_code == 3 and str(caught.value) == (
        "verification failed: output 'z' rel L2 0.641 > tolerance 1e-05 (max abs 1.72); no output written")
    assert not (tmp_path / "o.onnx").exists()
    result = compile_model(tmp_path / "m.onnx", "cpu")
    assert [c["name"] for c in result.verification["outputs"]] == ["y", "z"] and result.verification["ok"]
    assert result.warnings[-1] == (f"reference {tmp_path / 'm.ref.npz'} lacks output(s) z; compared with the "
                                   "input model's run on its inputs instead")


def test_a_closed_stdout_changes_nothing_but_where_the_summary_goes(work, monkeypatch):
    """`>&-` (Python makes sys.stdout None): passes.apply ended in 'internal error: AttributeError: 'NoneType'
    object has no attribute 'isatty'', exit 1, tools.diffview in a traceback; and terminal_closed's flush of None
    failed fold-constants and simplify, 'graph left unfolded': a caller with no stdout (pythonw, a daemon) got a
    graph of 4 nodes where others get 2 (adv19)."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    commands = [["passes.apply", work / "naive.onnx", "--pipeline", "cpu", "-o", work / "o.onnx"],
                ["tools.diffview", work / "naive.onnx", work / "o.onnx"]]
    for command in commands:
        result = subprocess.run([sys.executable, "-m", *map(str, command)], capture_output=True, text=True, env=env,
                                cwd=REPO, timeout=120, preexec_fn=lambda: os.close(1))
        assert result.returncode == 0 and "Error" not in result.stderr, (command, result.stderr)
    assert [node.op_type for node in onnx.load(work / "o.onnx").graph.node] == ["Add", "Relu"]   # the bias folded
    monkeypatch.setattr(sys, "stdout", None)
    result = compile_model(work / "naive.onnx", "cpu")
    assert (result.nodes_after, [note for record in result.records for note in record.notes if "failed" in note]) \
        == (2, [])


def test_a_reader_of_the_summary_that_goes_away_is_no_failure(work):
    """`passes.apply ... | head -1`: the pipe closed before the summary; rich's answer to the broken pipe is
    SystemExit(1): exit 1, 'internal error' by the documented codes, with no line said, after the output was written
    (adv19). The rest of the summary goes nowhere; exit 0."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([sys.executable, "-m", "passes.apply", str(work / "naive.onnx"), "--pipeline", "cpu",
                                "-o", str(work / "o.onnx"), "--explain"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, cwd=REPO)
    process.stdout.close()   # the reader is gone before the first line
    _, said = process.communicate(timeout=120)
    assert process.returncode == 0 and b"error" not in said, said
    assert (work / "o.onnx").is_file()

"""tools.bench_rows on tiny graphs and stand-in runners, in process: the batch dimension and node count read from a
file, the graph signature's invariances, the compile log, the ablation variants, the ONNX Runtime row's session
options, the timing and batching helpers and the error figures, each exactly. test_bench runs the real rows once."""
import hashlib
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import TensorProto, helper, numpy_helper
from scan_testing import TINY_MODEL_TEXT

from tools import bench_rows
from tools.bench_rows import BenchError

REPO = Path(__file__).resolve().parents[1]


def model(path, batch="N", *, names=("a", "b", "c"), weight_first=False, alpha=0.5, doc="", other_input=False,
          weights=(1.0, 2.0)):
    """input [batch, 2] -> Mul(w) -> LeakyRelu(alpha) -> Add(v) -> logits."""
    inits = [numpy_helper.from_array(np.array(weights, np.float32), "w"),
             numpy_helper.from_array(np.array([3.0, 4.0], np.float32), "v")]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 2])]
    if other_input:
        inputs.insert(0, helper.make_tensor_value_info("mask", TensorProto.FLOAT, [7, 2]))
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "w"], ["m"], name=names[0]),
         helper.make_node("LeakyRelu", ["m"], ["r"], name=names[1], alpha=alpha),
         helper.make_node("Add", ["r", "v"], ["logits"], name=names[2])],
        "g", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 2])],
        inits[::-1] if weight_first else inits, doc_string=doc)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def test_the_batch_dimension_static_symbolic_or_unknown(tmp_path):
    assert bench_rows.onnx_batch_dim(model(tmp_path / "s.onnx", 4, other_input=True)) == 4
    assert bench_rows.onnx_batch_dim(model(tmp_path / "d.onnx", "batch")) == "batch"
    assert bench_rows.onnx_batch_dim(model(tmp_path / "u.onnx", None)) is None
    m = onnx.load(tmp_path / "s.onnx")
    m.graph.input[1].name = "x"
    onnx.save(m, tmp_path / "x.onnx")
    with pytest.raises(BenchError) as error:
        bench_rows.onnx_batch_dim(tmp_path / "x.onnx")
    assert str(error.value) == f"{tmp_path / 'x.onnx'}: no graph input named 'input'"


def test_node_count(tmp_path):
    assert bench_rows.node_count(model(tmp_path / "m.onnx")) == 3


def signature_by_hand(path):
    """The docstring's recipe written out: op(inputs)->outputs and sorted attributes per node, the initializers by
    name, then the inputs and outputs."""
    m = onnx.load(path, format="protobuf")
    parts = []
    for node in m.graph.node:
        parts.append(f"{node.op_type}({','.join(node.input)})->{','.join(node.output)}".encode())
        parts += [a.SerializeToString(deterministic=True) for a in sorted(node.attribute, key=lambda a: a.name)]
    parts += [t.SerializeToString(deterministic=True) for t in sorted(m.graph.initializer, key=lambda t: t.name)]
    parts += [v.SerializeToString(deterministic=True) for v in [*m.graph.input, *m.graph.output]]
    return hashlib.sha256(b"".join(parts)).hexdigest()[:16]


def test_the_graph_signature_is_what_the_graph_computes(tmp_path):
    base = bench_rows.graph_signature(model(tmp_path / "a.onnx"))
    assert base == signature_by_hand(tmp_path / "a.onnx") and re.fullmatch(r"[0-9a-f]{16}", base)
    # node names, doc strings and initializer order are left out
    assert bench_rows.graph_signature(model(tmp_path / "b.onnx", names=("x", "y", "z"), weight_first=True,
                                            doc="other")) == base
    # an attribute, a weight, an input's shape: another graph
    changed = [model(tmp_path / "c.onnx", alpha=0.25), model(tmp_path / "d.onnx", weights=(1.0, 2.5)),
               model(tmp_path / "e.onnx", 3), model(tmp_path / "f.onnx", other_input=True)]
    signatures = {bench_rows.graph_signature(path) for path in changed}
    assert len(signatures) == 4 and base not in signatures
    for path in changed:
        assert bench_rows.graph_signature(path) == signature_by_hand(path)


def test_the_naive_export_is_made_only_when_the_model_or_its_reference_is_missing(tmp_path, monkeypatch):
    import vmamba_ref.export as export

    calls = []
    monkeypatch.setattr(export, "export_naive", lambda *args, **kwargs: calls.append((args, kwargs)))
    path = tmp_path / "new" / "deeper" / "naive.onnx"
    original = SimpleNamespace(weights=[1])
    status = print
    assert bench_rows.ensure_naive(original, "SAMPLE", path, dynamic_batch=True, status=status) is True
    assert path.parent.is_dir()
    (args, kwargs), = calls
    assert args[1:] == (path,) and args[0] is not original and args[0].weights == [1]
    assert args[0].weights is not original.weights   # a deep copy: the export may change the model
    assert kwargs == dict(batch=1, dynamic_batch=True, sample="SAMPLE", check=False, status=status,
                          scan="sequential")
    path.write_bytes(b"x")
    assert bench_rows.ensure_naive(original, "S", path, dynamic_batch=False, status=status, scan="chunk24") is True
    assert calls[1][1]["scan"] == "chunk24" and calls[1][1]["dynamic_batch"] is False
    export.ref_path_for(path).write_bytes(b"x")
    assert bench_rows.ensure_naive(original, "S", path, dynamic_batch=False, status=status) is False
    assert len(calls) == 2
    path.unlink()
    assert bench_rows.ensure_naive(original, "S", path, dynamic_batch=False, status=status) is True


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "naive.onnx"
    onnx.save(onnx.parser.parse_model(TINY_MODEL_TEXT), path)
    return path


def test_compile_pipeline_logs_every_pass_and_the_summary(tiny, tmp_path):
    output, log = tmp_path / "out" / "deeper" / "o.onnx", tmp_path / "o.log"
    started = time.perf_counter()
    build = bench_rows.compile_pipeline(tiny, "eliminate-dead-nodes,fold-constants", output, log)
    assert 0 < build.seconds <= time.perf_counter() - started
    summary = "5 -> 2 nodes, rel L2 0 against input model on random inputs"
    assert (build.ok, build.message, build.log_path) == (True, summary, log) and build.seconds > 0
    lines = log.read_text().split("\n")
    assert lines[0] == f"compile_model({str(tiny)!r}, 'eliminate-dead-nodes,fold-constants', output={str(output)!r})"
    assert re.fullmatch(r"1\. eliminate-dead-nodes: 5 -> 4 nodes, \d+\.\d\d s", lines[1])
    assert re.fullmatch(r"2\. fold-constants: 4 -> 2 nodes, \d+\.\d\d s", lines[2])
    assert lines[3:] == [summary, ""]


def test_compile_pipeline_errors_are_one_line_in_the_table(tiny, tmp_path, monkeypatch):
    output, log = tmp_path / "o.onnx", tmp_path / "o.log"
    build = bench_rows.compile_pipeline(tiny, "eliminate-dead-nodes,no-such-pass", output, log)
    assert build.ok is False and build.message.startswith("error: unknown pass 'no-such-pass'; valid passes: ")
    ok, message, text = bench_rows._compile_and_log(str(tiny), "eliminate-dead-nodes,no-such-pass", str(output))
    assert (ok, text) == (False, message) and message == build.message
    assert log.read_text() == f"compile_model({str(tiny)!r}, 'eliminate-dead-nodes,no-such-pass', output={str(output)!r})\n{build.message}\n"
    import pipelines

    def broken(*args, **kwargs):
        raise RuntimeError("a\nb")
    monkeypatch.setattr(pipelines, "compile_model", broken)
    assert bench_rows._compile_and_log(str(tiny), "x", str(output)) == (
        False, "error: internal error: RuntimeError: a b", "error: internal error: RuntimeError: a b")


def test_a_build_whose_output_is_missing_is_not_ok(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_rows, "_compile_and_log", lambda *args: (True, "fine", "fine"))
    build = bench_rows.compile_pipeline(tiny, "p", tmp_path / "missing" / "o.onnx", tmp_path / "l.log")
    assert build.ok is False and (tmp_path / "missing").is_dir()


def test_ablation_variants_of_a_given_cpu_pipeline(monkeypatch):
    import pipelines
    from pipelines.pipeline import parse_pipeline

    def fake(text):
        return lambda name: parse_pipeline(text) if name == "cpu" else None
    monkeypatch.setattr(pipelines, "get_pipeline",
                        fake("unroll-loops,reroll-scans{form=parallel,state_chunk=4},a-pass,b{k=1}"))
    assert bench_rows.cpu_ablation_variants() == [
        ("cpu-form-chunk24", "cpu, chunk24 scan form",
         "unroll-loops,reroll-scans{form=chunk24,state_chunk=4,chunk=24},a-pass,b{k=1}"),
        ("cpu-no-a-pass", "cpu without a-pass", "unroll-loops,reroll-scans{form=parallel,state_chunk=4},b{k=1}"),
        ("cpu-no-b", "cpu without b", "unroll-loops,reroll-scans{form=parallel,state_chunk=4},a-pass")]
    monkeypatch.setattr(pipelines, "get_pipeline", fake("reroll-scans{form=chunk24,chunk=24},a-pass"))
    assert bench_rows.cpu_ablation_variants() == [("cpu-no-a-pass", "cpu without a-pass",
                                                   "reroll-scans{form=chunk24,chunk=24}")]


def test_an_onnx_row_is_unsupported_only_at_another_batch_than_its_static_one(tmp_path):
    row = bench_rows.OnnxRow(str(tmp_path / "m.onnx"), 4)
    assert row.path == tmp_path / "m.onnx" and isinstance(row.path, Path) and row.kind == "onnx"
    assert (row.unsupported(4), row.unsupported(1)) == (None, "static batch")
    assert bench_rows.OnnxRow(tmp_path, None).unsupported(3) is None


def test_the_onnx_runtime_row_sets_its_threads_and_spinning(tmp_path):
    started = time.perf_counter()
    runner = bench_rows.OnnxRunner(model(tmp_path / "d.onnx"), 2)
    assert 0 < runner.session_seconds <= time.perf_counter() - started
    options = runner.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level) == (2, 1, 3)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert runner.session_seconds > 0 and runner.static_batch is None and runner.output_name == "logits"
    assert runner.session.get_providers() == ["CPUExecutionProvider"]
    x = np.array([[1.0, -1.0], [-2.0, 3.0]], np.float32)
    expected = np.where(x * [1, 2] > 0, x * [1, 2], 0.5 * x * [1, 2]) + [3, 4]
    np.testing.assert_allclose(runner.run(x), expected, rtol=1e-6)
    runner.close()
    assert runner.session is None
    spinning = bench_rows.OnnxRunner(model(tmp_path / "s.onnx", 2), 1, spinning=True)
    assert spinning.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spinning.static_batch == 2 and spinning.unsupported(1) == "static batch"


def test_the_openvino_rows_say_what_to_install():
    pytest.importorskip("onnx")
    try:
        import openvino  # noqa: F401
        pytest.skip("openvino is installed")
    except ImportError:
        pass
    with pytest.raises(BenchError) as error:
        bench_rows.OpenVinoRunner(Path("m.onnx"), 1, "f32")
    assert str(error.value) == "the OpenVINO rows need the openvino package (pip install .[openvino])"


def test_the_torch_row_runs_a_copy_with_its_scan_without_gradients(monkeypatch):
    import torch
    import vmamba_ref

    seen = []
    monkeypatch.setattr(vmamba_ref, "set_scan", lambda m, scan: seen.append(scan) or m)
    module = torch.nn.Sequential(torch.nn.Linear(2, 1))
    module.train()
    runner = bench_rows.TorchRunner(module, "chunked")
    assert seen == ["chunked"] and runner.model is not module and not runner.model.training
    assert module.training and module[0].training   # a deep copy put in eval mode, the caller's left as it was
    assert (runner.kind, runner.session_seconds, runner.unsupported(7)) == ("torch", None, None)
    x = np.array([[1.0, 2.0]], np.float32)
    out = runner.run(x)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, module(torch.from_numpy(x)).detach().numpy())
    runner.close()
    assert runner.model is None


def test_random_batch_is_seeded_by_seed_plus_batch():
    import torch

    config = SimpleNamespace(in_chans=3, img_size=4)
    x = bench_rows.random_batch(config, 2, 5)
    expected = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(7)).numpy()
    assert x.shape == (2, 3, 4, 4) and np.array_equal(x, expected)


class Clocked:
    def __init__(self, last_seconds=None, static_batch=None):
        self.last_seconds, self.static_batch, self.seen = last_seconds, static_batch, []

    def run(self, x):
        self.seen.append(x.copy())
        time.sleep(0.002)
        return x.reshape(len(x), -1).sum(axis=1, keepdims=True)


def test_run_timed_prefers_the_runners_own_clock():
    x = np.ones((2, 3), np.float32)
    out, seconds = bench_rows.run_timed(Clocked(last_seconds=123.0), x)
    assert seconds == 123.0 and out.tolist() == [[3.0], [3.0]]
    for runner in (Clocked(), Clocked(last_seconds=0.0)):
        out, seconds = bench_rows.run_timed(runner, x)
        assert 0.002 <= seconds < 1.0


def test_predict_in_batches_pads_a_static_batch_with_the_last_image():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    runner = Clocked(static_batch=4)
    out = bench_rows.predict_in_batches(runner, x)
    assert out.ravel().tolist() == list(range(10))
    assert [s.ravel().tolist() for s in runner.seen] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]]
    runner = Clocked()
    out = bench_rows.predict_in_batches(runner, x, batch=3)
    assert out.ravel().tolist() == list(range(10))
    assert [len(s) for s in runner.seen] == [3, 3, 3, 1]
    runner = Clocked()
    bench_rows.predict_in_batches(runner, np.arange(150, dtype=np.float32)[::-1].reshape(150, 1)[::1])
    assert [len(s) for s in runner.seen] == [100, 50]
    strided = np.arange(20, dtype=np.float32).reshape(10, 2)[:, :1]
    runner = Clocked(static_batch=10)
    bench_rows.predict_in_batches(runner, strided)
    assert runner.seen[0].flags["C_CONTIGUOUS"]


class ContiguityChecked(Clocked):
    def run(self, x):
        assert x.flags["C_CONTIGUOUS"]
        return super().run(x)


def test_predict_in_batches_hands_the_runner_contiguous_arrays():
    strided = np.arange(20, dtype=np.float32).reshape(10, 2)[:, :1]
    assert bench_rows.predict_in_batches(ContiguityChecked(), strided, batch=4).ravel().tolist() == list(range(0, 20, 2))


def test_error_metrics_in_float64():
    got, reference = np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, 2.0, 5.0], np.float32)
    assert bench_rows.error_metrics(got, reference) == {"max_abs": 2.0, "rel_l2": pytest.approx(2 / 30 ** 0.5)}
    tiny = bench_rows.error_metrics(np.array([1e-30], np.float32), np.array([0.0], np.float32))
    assert tiny["max_abs"] == pytest.approx(1e-30, rel=1e-6)   # float32 squares would underflow to 0
    assert type(tiny["max_abs"]) is float


def test_every_row_label_run_so_far_is_a_row_of_the_published_tables():
    """docs/BENCHMARKS.md was written by tools.bench: a label changed here would no longer match its rows."""
    published = (REPO / "docs" / "BENCHMARKS.md").read_text()
    unpublished = {"ov-cpu-default"}
    assert set(bench_rows.ROW_LABELS) >= set(bench_rows.DEFAULT_ROWS) | set(bench_rows.GRAPH_OF)
    for key, label in bench_rows.ROW_LABELS.items():
        assert (f"| {label} |" in published) is (key not in unpublished), key


def test_a_model_file_is_read_as_protobuf_whatever_its_name_and_without_its_weights(tmp_path):
    path = model(tmp_path / "m.onnx", 3).rename(tmp_path / "m.json")   # onnx.load would guess JSON from the name
    assert bench_rows.onnx_batch_dim(path) == 3
    assert bench_rows.graph_signature(path) == signature_by_hand(path)
    m = onnx.load(path, format="protobuf")
    onnx.save(m, tmp_path / "e.onnx", save_as_external_data=True, location="e.bin", size_threshold=0)
    (tmp_path / "e.bin").unlink()   # the batch dimension needs no weights
    assert bench_rows.onnx_batch_dim(tmp_path / "e.onnx") == 3


def test_the_signature_sorts_a_nodes_attributes_and_joins_its_outputs(tmp_path):
    m = onnx.load(model(tmp_path / "a.onnx"))
    node = helper.make_node("Split", ["logits"], ["s0", "s1"], axis=1, num_outputs=2)
    reversed_attributes = list(node.attribute)[::-1]
    del node.attribute[:]
    node.attribute.extend(reversed_attributes)        # stored num_outputs, axis: the signature sorts them
    m.graph.node.append(node)
    m.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("s0", "s1")])
    onnx.save(m, tmp_path / "split.onnx")
    assert bench_rows.graph_signature(tmp_path / "split.onnx") == signature_by_hand(tmp_path / "split.onnx")


def test_an_onnx_row_refuses_a_graph_whose_local_functions_call_themselves(tmp_path):
    from passes.model_check import local_functions_refused

    function = helper.make_function("local", "loop", ["a"], ["b"], [helper.make_node("loop", ["a"], ["b"],
                                                                                      domain="local")],
                                    [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    graph = helper.make_graph([helper.make_node("loop", ["input"], ["logits"], domain="local")], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])])
    path = tmp_path / "cycle.onnx"
    onnx.save(helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17),
                                                                          helper.make_opsetid("local", 1)]), path)
    said = local_functions_refused(path)
    assert said and "cycle" in said
    with pytest.raises(BenchError) as error:
        bench_rows.OnnxRunner(path, 1)
    assert str(error.value) == said


def test_the_bench_model_seeded_or_with_the_digit_weights(tmp_path, monkeypatch):
    import torch

    import vmamba_ref
    from vmamba_ref import build_model, get_config, load_checkpoint
    from vmamba_ref.digits import load_digits_split
    from vmamba_ref.export import reference_logits

    config = get_config("micro", depths=(1, 1), img_size=32)
    model, sample = bench_rows.build_bench_model("micro", config, seed=3)
    expected = build_model(config, scan="sequential", seed=3)
    assert not model.training and sample.dtype == torch.float32 and sample.is_contiguous()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))
    assert torch.equal(sample, torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)))
    _, unseeded = bench_rows.build_bench_model("micro", config)     # seed 0 unless said, as vmamba_ref.export
    assert torch.equal(unseeded, torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    x = np.asarray(sample.numpy())
    np.testing.assert_array_equal(bench_rows.torch_logits(model, x, "chunked"),
                                  reference_logits(expected.eval(), torch.from_numpy(x), "chunked"))
    digits = get_config("micro-digits")
    model, sample = bench_rows.build_bench_model("micro-digits", digits)
    weights = build_model(digits, scan="sequential", seed=0)
    load_checkpoint(weights, vmamba_ref.DIGITS_WEIGHTS)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), weights.state_dict().values()))
    assert torch.equal(sample, torch.from_numpy(load_digits_split().x_test[:1]).float())
    other = get_config("micro-digits", img_size=32)    # not the digits' 64x64: a seeded random sample
    _, sample = bench_rows.build_bench_model("micro-digits", other, seed=5)
    assert torch.equal(sample, torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5)))
    monkeypatch.setattr(vmamba_ref, "DIGITS_WEIGHTS", tmp_path / "none.pt")
    with pytest.raises(BenchError) as error:
        bench_rows.build_bench_model("micro-digits", digits)
    assert str(error.value) == f"{tmp_path / 'none.pt'} is missing (train it with python -m tools.train_digits)"


def test_compile_pipeline_in_a_child_process(tiny, tmp_path):
    output, log = tmp_path / "o.onnx", tmp_path / "o.log"
    build = bench_rows.compile_pipeline(tiny, "eliminate-dead-nodes", output, log, in_process=False)
    assert (build.ok, build.message) == (True, "5 -> 4 nodes, rel L2 0 against input model on random inputs")
    assert log.read_text().split("\n")[0] == f"compile_model({str(tiny)!r}, 'eliminate-dead-nodes', output={str(output)!r})"
    assert len(onnx.load(output).graph.node) == 4


class Bare:
    """A runner with neither a clock of its own nor a static batch."""
    def __init__(self):
        self.seen = []

    def run(self, x):
        self.seen.append(x.copy())
        return x


def test_runners_without_a_clock_or_a_static_batch():
    out, seconds = bench_rows.run_timed(Bare(), np.ones((1, 1), np.float32))
    assert seconds > 0
    runner = Bare()
    assert bench_rows.predict_in_batches(runner, np.arange(5, dtype=np.float32).reshape(5, 1), batch=2).ravel().tolist() \
        == [0, 1, 2, 3, 4]
    assert [s.ravel().tolist() for s in runner.seen] == [[0, 1], [2, 3], [4]]


def test_a_static_batch_is_padded_with_copies_of_the_last_image_only():
    runner = Clocked(static_batch=4)
    bench_rows.predict_in_batches(runner, np.arange(11, dtype=np.float32).reshape(11, 1))
    assert [s.ravel().tolist() for s in runner.seen] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 10]]

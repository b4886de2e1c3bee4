"""Graph regression: what each pipeline makes of the micro model, against tests/golden/*.json.

A failure lists what moved ("CumSum: 34 -> 35 (+1)"); accept a deliberate change with
``pytest tests/test_golden_graphs.py --update-golden``. VMamba-T has golden files too, checked
only with ``-m slow`` and VMAMBA_T_NAIVE=/path/to/naive.onnx (its .ref.npz beside it).
"""
import json
from pathlib import Path

import onnx_graphsurgeon as gs
import pytest

from golden_graphs import check_golden, error_bound, golden_differences, graph_record, update_requested
from pipelines import compile_model
from passes.simplify_onnxsim import SimplifyOnnxsim

PIPELINES = ["seed", "cpu", "cpu-many", "ov", "tpu"]


def load_report(directory: Path) -> dict:
    return json.loads((directory / "report.json").read_text())


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_micro_matches_golden(pipeline, micro_report, request):
    record = graph_record("micro-digits", load_report(micro_report(pipeline)))
    assert record["rerolled_scans"] == 5  # one scan per block: depths (1, 1, 2, 1)
    check_golden(f"micro_{pipeline}", record, update_requested(request))


# tpu needs a static batch (tpu-mlir); the others take a symbolic one as it comes
DYNAMIC_BATCH_PIPELINES = ["seed", "cpu", "cpu-many", "ov"]


@pytest.mark.parametrize("pipeline", DYNAMIC_BATCH_PIPELINES)
def test_micro_dynamic_batch_matches_golden(pipeline, micro_dynamic_naive, micro_report, tmp_path, request):
    """A symbolic batch axis costs nothing in the CPU pipelines: their graph of a dynamic-batch export is the
    static export's, op for op (reshape-target-to-constant makes the computed Reshape targets constants).
    s20's data-propagation bound refused TorchScript's expand idiom, ConstantOfShape(Shape(shape)), and with
    it every shape such an export has, so unit-axes-to-reshape, expand-to-broadcast and onnxsim did nothing
    (cpu 741 -> 1,007 nodes on this model; VMamba-T's dynamic-batch cpu-many 2,256 nodes, and OpenVINO ran
    it 4.4x slower: docs/BENCHMARKS.md). seed keeps the fork's shape arithmetic."""
    compile_model(micro_dynamic_naive, pipeline, output=tmp_path / f"{pipeline}.onnx", report=tmp_path / "report")
    record = graph_record("micro-digits-dynamic-batch", load_report(tmp_path / "report"))
    assert record["rerolled_scans"] == 5
    check_golden(f"micro-dynamic-batch_{pipeline}", record, update_requested(request))
    if pipeline != "seed":
        static = graph_record("micro-digits", load_report(micro_report(pipeline)))
        assert (record["nodes"], record["op_histogram"]) == (static["nodes"], static["op_histogram"])


def _add_one_relu(graph: gs.Graph) -> None:
    """Relu after the first Sigmoid: numerically a no-op (sigmoid >= 0), structurally one more op."""
    sigmoid = next(node for node in graph.nodes if node.op == "Sigmoid")
    original = sigmoid.outputs[0]
    fresh = gs.Variable(f"{original.name}_before_relu", dtype=original.dtype, shape=original.shape)
    sigmoid.outputs = [fresh]
    graph.nodes.append(gs.Node("Relu", name="deliberate_relu", inputs=[fresh], outputs=[original]))
    graph.toposort()


def test_one_op_change_fails_with_readable_diff(micro_naive, tmp_path, monkeypatch):
    # simplify is the seed pipeline's last pass, so nothing after it can undo the extra op.
    original_run = SimplifyOnnxsim.run

    def run_and_add_relu(self, graph, ctx):
        result = original_run(self, graph, ctx)
        _add_one_relu(graph)
        return result

    monkeypatch.setattr(SimplifyOnnxsim, "run", run_and_add_relu)
    report_dir = tmp_path / "report"
    compile_model(micro_naive, "seed", output=tmp_path / "out.onnx", report=report_dir)
    record = graph_record("micro-digits", load_report(report_dir))
    golden = json.loads((Path(__file__).parent / "golden" / "micro_seed.json").read_text())
    with pytest.raises(AssertionError) as failure:
        check_golden("micro_seed", record, update=False)
    message = str(failure.value)
    nodes = golden["nodes"]
    assert f"nodes: {nodes:,} -> {nodes + 1:,} (+1)" in message
    assert "Relu: 0 -> 1 (+1)" in message
    simplify_index = len(golden["nodes_after_each_pass"])   # simplify is the seed pipeline's last pass
    assert f"after pass {simplify_index} simplify: {nodes:,} -> {nodes + 1:,} (+1) nodes" in message
    assert "--update-golden" in message


def test_differences_name_op_and_count():
    golden = {"pipeline_text": "a", "nodes_input": 10, "nodes": 5, "rerolled_scans": 1,
              "op_histogram": {"CumSum": 34, "Mul": 2}, "nodes_after_each_pass": ["1 a: 5"],
              "rel_l2": 1e-7, "rel_l2_bound": 1e-6}
    actual = dict(golden, nodes=6, op_histogram={"CumSum": 35, "Mul": 2}, nodes_after_each_pass=["1 a: 6"],
                  rel_l2=3e-6)
    assert golden_differences(golden, golden | {"rel_l2": 9e-7}) == []
    assert golden_differences(golden, actual) == [
        "nodes: 5 -> 6 (+1)",
        "CumSum: 34 -> 35 (+1)",
        "after pass 1 a: 5 -> 6 (+1) nodes",
        "rel L2 vs reference: 3e-06 > bound 1e-06 (was 1e-07)",
    ]


def test_error_bound_rounds_up_with_margin():
    assert error_bound(6.17e-7) == pytest.approx(7e-6)
    assert error_bound(1e-12) == pytest.approx(1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_vmamba_t_matches_golden(pipeline, vmamba_t_report, request):
    record = graph_record("vmamba-t", load_report(vmamba_t_report(pipeline)))
    check_golden(f"vmamba-t_{pipeline}", record, update_requested(request))

"""Graph inputs that are also initializers (ONNX's overridable initializers, IR >= 4; every weight of
``torch.onnx.export(keep_initializers_as_inputs=True)``): frozen as the constants they hold, left out
of the compiled model's inputs, and said so (one stderr line, report.json's ``frozen_inputs``)."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from passes.report.schema import load_schema
from pipelines import compile_model

REPO = Path(__file__).resolve().parents[1]
WEIGHT = "w\nforged: line"   # a name that would split the notice into two lines if echoed raw



def reroll_record(result):
    """reroll-scans' record in a pipeline run (unroll-loops runs before it in cpu and tpu)."""
    (record,) = [record for record in result.records if record.name == "reroll-scans"]
    return record

def weight_input_model() -> onnx.ModelProto:
    """y = Relu(x + w), w an initializer also listed as a graph input."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", WEIGHT], ["s"]), helper.make_node("Relu", ["s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info(WEIGHT, TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[helper.make_tensor(WEIGHT, TensorProto.FLOAT, [3], [1.0, -2.0, 3.0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_cli_says_how_many_inputs_it_froze_in_one_line_and_in_the_report(tmp_path):
    path = tmp_path / "naive.onnx"
    onnx.save(weight_input_model(), path)
    x = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    np.savez(tmp_path / "naive.ref.npz", x=x, y=np.maximum(x + np.array([1.0, -2.0, 3.0], np.float32), 0))
    env = {"PYTHONPATH": str(REPO), "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "passes.apply", str(path), "--pipeline", "eliminate-dead-nodes",
                             "-o", str(tmp_path / "out.onnx"), "--report", str(tmp_path / "report")],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "froze" in line]
    assert len(notices) == 1 and notices[0].startswith("warning: froze 1 graph input "), result.stderr
    assert "w\\nforged: line" in notices[0]
    assert not any(line.startswith("forged") for line in result.stderr.splitlines())
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    jsonschema.validate(report, load_schema(), cls=jsonschema.Draft202012Validator)
    assert report["frozen_inputs"] == [WEIGHT]
    assert report["verification"]["ok"]
    written = onnx.load(tmp_path / "out.onnx")
    assert [value.name for value in written.graph.input] == ["x"]
    assert [tensor.name for tensor in written.graph.initializer] == [WEIGHT]


def test_in_memory_model_is_left_as_it_was():
    model = weight_input_model()
    result = compile_model(model, "eliminate-dead-nodes")
    assert [value.name for value in model.graph.input] == ["x", WEIGHT]
    assert [value.name for value in result.model.graph.input] == ["x"]
    assert result.report["frozen_inputs"] == [WEIGHT]
    assert any(warning.startswith("froze 1 graph input ") for warning in result.warnings)


def test_a_model_without_such_inputs_says_nothing():
    model = weight_input_model()
    del model.graph.input[1]
    result = compile_model(model, "eliminate-dead-nodes")
    assert "frozen_inputs" not in result.report and not any("froze" in warning for warning in result.warnings)


def test_keep_initializers_as_inputs_export_rerolls_and_matches_pytorch(tmp_path):
    """A real export with every weight listed as an input: the scan re-rolls (its weights are
    constants), the verifier feeds only the sample input, and the result matches PyTorch."""
    torch = pytest.importorskip("torch")
    from tools.external_exports import fork_channels

    module, sample = fork_channels(4, 9)
    path = tmp_path / "naive.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = module(sample).numpy()
        torch.onnx.export(module, (sample,), str(path), input_names=["input"], output_names=["logits"],
                          opset_version=17, do_constant_folding=True, dynamo=False, keep_initializers_as_inputs=True)
    np.savez(tmp_path / "naive.ref.npz", input=sample.numpy(), logits=expected)
    naive = onnx.load(path)
    weights = [value.name for value in naive.graph.input if value.name != "input"]
    assert weights and set(weights) <= {tensor.name for tensor in naive.graph.initializer}

    result = compile_model(path, "cpu")
    assert reroll_record(result).stats["rerolled"] == 1
    assert result.verification["ok"] and result.verification["rel_l2"] <= 1e-5
    assert result.verification["against"].endswith("naive.ref.npz")
    assert [value.name for value in result.model.graph.input] == ["input"]
    assert result.report["frozen_inputs"] == weights
    assert any(warning.startswith(f"froze {len(weights)} graph inputs ") for warning in result.warnings)


def test_an_ir_3_model_compiles_into_ir_4():
    """IR 3 lists every initializer as a graph input (the first IR with opset imports: accepted);
    frozen, and with the constants the passes add, the compiled graph lists none, which only IR 4 on
    allows: the output kept IR 3 and onnx.checker refused the first pass's output (exit 3)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["ones", "w"], ["bias"]), helper.make_node("Add", ["x", "bias"], ["s"]),
         helper.make_node("Relu", ["s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("ones", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[helper.make_tensor("ones", TensorProto.FLOAT, [3], [1.0, 1.0, 1.0]),
                     helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, -4.0, 3.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], ir_version=3)
    onnx.checker.check_model(model)
    result = compile_model(model, "eliminate-dead-nodes,fold-constants")
    assert result.report["frozen_inputs"] == ["ones", "w"]
    assert result.model.ir_version == 4 and [value.name for value in result.model.graph.input] == ["x"]
    assert [node.op_type for node in result.model.graph.node] == ["Add", "Relu"]
    onnx.checker.check_model(result.model, full_check=True)
    assert result.verification["ok"]


def test_an_ir_3_model_whose_constants_a_pass_makes_initializers_compiles_into_ir_4():
    """No input frozen: a Constant node that fold-constants stores as an initializer was refused
    by onnx.checker under IR 3 the same way (graph_to_model raises the IR version itself)."""
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [3], [1.0, 1.0, 1.0])),
         helper.make_node("Add", ["x", "ones"], ["s"]), helper.make_node("Relu", ["s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], ir_version=3)
    result = compile_model(model, "fold-constants")
    assert "frozen_inputs" not in result.report
    assert result.model.ir_version == 4 and [tensor.name for tensor in result.model.graph.initializer] == ["ones"]
    onnx.checker.check_model(result.model, full_check=True)
    assert result.verification["ok"]

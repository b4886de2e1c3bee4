"""--input-shape NAME:D0,D1,... (passes/input_shapes.py): parsing, fixing symbolic dims, errors."""
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from passes.input_shapes import InputShapeError, fix_input_shapes, parse_input_shapes, symbolic_inputs
from passes.tpu_legality import find_violations
from tests.scan_testing import run

MODEL_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[batch,3,4] x, float[batch,4] s) => (float[batch,3,4] y) {
  t = Relu(x)
  y = Add(t, x)
}
"""


def test_parse_several_inputs_and_a_name_with_colons():
    assert parse_input_shapes(["x:2,3,4", "a:b:1"]) == {"x": [2, 3, 4], "a:b": [1]}


@pytest.mark.parametrize("text, message", [
    ("x", "expected NAME:D0,D1,... (e.g. input:1,3,224,224)"),
    ("x:", "expected NAME:D0,D1,..."),
    ("x:1,a", "dimensions must be integers"),
    ("x:1,0", "dimensions must be from 1 to 2147483647"),
    ("x:1,2147483648", "dimensions must be from 1 to 2147483647"),
    # found by s13: int() also reads '1_0' as 10, '٣' (Arabic-Indic) as 3 and ' 2' as 2
    ("x:1_0,3", "dimensions must be integers"),
    ("x:\u0663,3", "dimensions must be integers"),
    ("x:+2,3", "dimensions must be integers"),
    ("x:-2,3", "dimensions must be from 1 to 2147483647"),
])
def test_bad_requests_are_one_line_errors(text, message):
    with pytest.raises(InputShapeError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        parse_input_shapes([text])


def test_fixing_batch_pins_the_symbol_everywhere_it_is_declared():
    model = onnx.parser.parse_model(MODEL_TEXT)
    assert symbolic_inputs(model) == ["x", "s"]
    assert fix_input_shapes(model, {"x": [2, 3, 4]}) == {"batch": 2}
    dims = lambda info: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in info.type.tensor_type.shape.dim]
    assert [dims(i) for i in model.graph.input] == [[2, 3, 4], [2, 4]]   # s shares the symbol
    assert dims(model.graph.output[0]) == [2, 3, 4]
    assert symbolic_inputs(model) == []
    onnx.checker.check_model(model, full_check=True)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 12
    np.testing.assert_array_equal(run(model, {"x": x, "s": np.zeros((2, 4), np.float32)})[0], np.maximum(x, 0) + x)


@pytest.mark.parametrize("shapes, message", [
    ({"z": [1]}, "the model has no input 'z' (inputs: x, s)"),
    ({"x": [2, 3]}, "input 'x' has rank 3, got 2 dims"),
    ({"x": [2, 5, 4]}, "input 'x' axis 1 is 3, got 5"),
    ({"x": [2, 3, 4], "s": [3, 4]}, "symbol 'batch' given two values (2 and 3)"),
    # compile_model(input_shapes=...) reaches here without the CLI's parsing: -1 was written into the model
    ({"x": [-1, 3, 4]}, "input 'x' dims [-1, 3, 4]: each must be an integer from 1 to 2147483647"),
    ({"x": [0, 3, 4]}, "input 'x' dims [0, 3, 4]: each must be an integer from 1 to 2147483647"),
    ({"x": [2**31, 3, 4]}, "input 'x' dims [2147483648, 3, 4]: each must be an integer from 1 to 2147483647"),
    ({"x": [True, 3, 4]}, "input 'x' dims [True, 3, 4]: each must be an integer from 1 to 2147483647"),
    ({"x": [2.0, 3, 4]}, "input 'x' dims [2.0, 3, 4]: each must be an integer from 1 to 2147483647"),
])
def test_inconsistent_requests_are_refused(shapes, message):
    with pytest.raises(InputShapeError) as error:
        fix_input_shapes(onnx.parser.parse_model(MODEL_TEXT), shapes)
    assert message in str(error.value)


def test_names_in_input_shape_errors_are_escaped_and_the_input_list_is_cut():
    """Found by s14: a newline in a name (given or the model's) showed as a space after one_line, so
    'a_in\\n' read 'a_in '; a model declaring thousands of inputs listed every one in the error line."""
    model = onnx.parser.parse_model(MODEL_TEXT)
    model.graph.input[0].name = "x\ny"
    for index in range(20):
        model.graph.input.append(onnx.helper.make_tensor_value_info(f"extra{index}", onnx.TensorProto.FLOAT, [1]))
    with pytest.raises(InputShapeError) as error:
        fix_input_shapes(model, {"z\t": [1]})
    assert str(error.value) == ("--input-shape: the model has no input 'z\\t' (inputs: x\\ny, s, extra0, extra1, extra2, "
                                "extra3, extra4, extra5, ... (14 more))")
    with pytest.raises(InputShapeError, match=r"input 'x\\ny' has rank 3, got 1 dims"):
        fix_input_shapes(model, {"x\ny": [1]})


def test_tpu_legality_suggests_the_flag_for_a_symbolic_input():
    violations = find_violations(gs.import_onnx(onnx.parser.parse_model(MODEL_TEXT)))
    rule = "graph input without a static shape (fix it with passes.apply --input-shape NAME:D0,D1,..., " \
           "or export with static shapes)"
    assert violations[rule] == ["input 'x' ['batch', 3, 4]: e.g. --input-shape x:1,3,4",
                                "input 's' ['batch', 4]: e.g. --input-shape s:1,4"]


def test_the_suggested_flag_is_quoted_for_a_shell_and_valid_for_an_unknown_rank():
    """Found by a model whose symbolic input is named 'x; rm -rf ~' (adversarial session s13): the
    suggestion 'e.g. --input-shape x; rm -rf ~:1,4' pasted into a shell ran the name as a command;
    an input with no shape at all was told '--input-shape x:', which the flag itself refuses."""
    model = onnx.parser.parse_model(MODEL_TEXT)
    model.graph.input[0].name = model.graph.node[0].input[0] = model.graph.node[1].input[1] = "x; rm -rf ~"
    model.graph.input[1].type.tensor_type.ClearField("shape")
    violations = find_violations(gs.import_onnx(model))
    rule = "graph input without a static shape (fix it with passes.apply --input-shape NAME:D0,D1,..., " \
           "or export with static shapes)"
    assert violations[rule] == ["input 'x; rm -rf ~' ['batch', 3, 4]: e.g. --input-shape 'x; rm -rf ~:1,3,4'",
                                "input 's' None: e.g. --input-shape s:D0,D1,... (its rank is not declared)"]


@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory):
    """A 1-D Mamba block exported with a symbolic batch (its reference at batch 2)."""
    from vmamba_ref.mamba1d import build_mamba1d, export_mamba1d_naive

    path = tmp_path_factory.mktemp("dynamic") / "dyn.onnx"
    export_mamba1d_naive(build_mamba1d(8, 4), path, length=6, batch=2, dynamic_batch=True, check=False)
    return path


def test_cli_fixes_a_symbolic_batch_so_the_tpu_pipeline_runs(dynamic_export, tmp_path, capsys):
    from passes.apply import main

    out = tmp_path / "tpu.onnx"
    assert main([str(dynamic_export), "--pipeline", "tpu", "-o", str(out)]) == 4
    assert "--input-shape input:1,6,8" in capsys.readouterr().err
    assert not out.exists()
    assert main([str(dynamic_export), "--pipeline", "tpu", "-o", str(out), "--input-shape", "input:2,6,8"]) == 0
    printed = capsys.readouterr().out
    assert "1 scans found and re-rolled (6 steps)" in printed and "rel L2" in printed
    model = onnx.load(str(out))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [2, 6, 8]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [2, 6, 8]


@pytest.mark.parametrize("flag, message", [
    ("input:2,6", "error: --input-shape: input 'input' has rank 3, got 2 dims"),
    ("x:1,6,8", "error: --input-shape: the model has no input 'x' (inputs: input)"),
    ("input", "error: --input-shape 'input': expected NAME:D0,D1,..."),
])
def test_cli_refuses_a_bad_input_shape_with_exit_2(dynamic_export, tmp_path, capsys, flag, message):
    from passes.apply import main

    out = tmp_path / "o.onnx"
    assert main([str(dynamic_export), "--pipeline", "cpu", "-o", str(out), "--input-shape", flag]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message)
    assert not out.exists()


def test_compile_model_leaves_the_callers_model_alone(dynamic_export):
    from pipelines import compile_model

    model = onnx.load(str(dynamic_export))
    result = compile_model(model, "cpu", reference=dynamic_export.with_name("dyn.ref.npz"), input_shapes={"input": [2, 6, 8]})
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in result.model.graph.input[0].type.tensor_type.shape.dim] == [2, 6, 8]


def test_report_records_the_fixed_shapes_and_validates(dynamic_export, tmp_path):
    import json

    import jsonschema

    from passes.apply import main

    assert main([str(dynamic_export), "--pipeline", "cpu", "-o", str(tmp_path / "o.onnx"),
                 "--input-shape", "input:2,6,8", "--report", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["input_shapes"] == {"input": [2, 6, 8]}
    schema = json.loads((Path(__file__).parent.parent / "passes/report/report_schema.json").read_text())
    jsonschema.validate(report, schema)


# --- edges found by hand mutants (docs/MUTATION.md, session s16) ---------------------------------------

def test_the_largest_dimension_is_taken_and_an_input_given_twice_is_refused():
    """mutants: '>=' for '>' refused MAX_DIM; the same input given twice silently kept the last."""
    assert parse_input_shapes(["x:2147483647"]) == {"x": [2147483647]}
    with pytest.raises(InputShapeError, match="--input-shape given twice for input 'x'"):
        parse_input_shapes(["x:1,3,4", "x:2,3,4"])


def test_more_dims_than_the_rank_are_refused_in_one_line():
    """mutant: only fewer dims than the rank refused (more was an IndexError)."""
    with pytest.raises(InputShapeError, match="input 'x' has rank 3, got 4 dims"):
        fix_input_shapes(onnx.parser.parse_model(MODEL_TEXT), {"x": [2, 3, 4, 5]})


def test_an_initializer_listed_as_an_input_is_no_input_to_fix():
    """A weight also listed among the graph inputs (older exporters) is neither fixed nor reported
    symbolic (mutants: initializers taken as inputs, in fix_input_shapes and in symbolic_inputs)."""
    model = onnx.parser.parse_model(MODEL_TEXT)
    model.graph.input.append(onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, ["batch", 4]))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((2, 4), np.float32), "w"))
    assert symbolic_inputs(model) == ["x", "s"]
    with pytest.raises(InputShapeError, match="the model has no input 'w' .inputs: x, s."):
        fix_input_shapes(model, {"w": [2, 4]})


def test_the_symbol_is_pinned_in_value_info_too():
    """mutant: value_info left out, so an intermediate kept claiming the old symbol."""
    model = onnx.parser.parse_model(MODEL_TEXT)
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, ["batch", 3, 4]))
    fix_input_shapes(model, {"x": [2, 3, 4]})
    assert [d.dim_value for d in model.graph.value_info[0].type.tensor_type.shape.dim] == [2, 3, 4]


def test_an_unknown_dim_or_a_missing_shape_is_symbolic():
    """A dim with neither value nor name, and an input with no shape at all, need --input-shape too
    (mutants: only named dims counted; an input without a shape skipped)."""
    model = onnx.parser.parse_model(MODEL_TEXT)
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    model.graph.input[1].type.tensor_type.ClearField("shape")
    model.graph.input[1].type.tensor_type.shape.dim.add().dim_value = 2   # s: static now ...
    assert symbolic_inputs(model) == ["x"]
    model.graph.input[1].type.tensor_type.ClearField("shape")             # ... and no shape at all
    assert symbolic_inputs(model) == ["x", "s"]

"""--input-shape NAME:D0,D1,... (passes/input_shapes.py): parsing, fixing symbolic dims, errors."""
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
    ("x:1,0", "dimensions must be >= 1"),
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
])
def test_inconsistent_requests_are_refused(shapes, message):
    with pytest.raises(InputShapeError) as error:
        fix_input_shapes(onnx.parser.parse_model(MODEL_TEXT), shapes)
    assert message in str(error.value)


def test_tpu_legality_suggests_the_flag_for_a_symbolic_input():
    violations = find_violations(gs.import_onnx(onnx.parser.parse_model(MODEL_TEXT)))
    rule = "graph input without a static shape (fix it with passes.apply --input-shape NAME:D0,D1,..., " \
           "or export with static shapes)"
    assert violations[rule] == ["input 'x' ['batch', 3, 4]: e.g. --input-shape x:1,3,4",
                                "input 's' ['batch', 4]: e.g. --input-shape s:1,4"]

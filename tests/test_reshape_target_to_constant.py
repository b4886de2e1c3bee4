"""reshape-target-to-constant: a Reshape to a target computed from shapes (a dynamic batch's x.view(B, C, -1))
becomes one to a constant target with -1 at the batch; a target with two unknown sizes, or a constant one,
stays. The dynamic-batch micro export's cpu graph equals the static export's, op for op, is checked by its
golden file (tests/golden/micro-dynamic-batch_cpu.json)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from passes.reshape_target_to_constant import ReshapeTargetToConstant
from patterns.graph_query import constant_value
from scan_testing import apply_pass, op_histogram, run

import onnx_graphsurgeon as gs

# x.view(B, C, -1) as TorchScript writes it for a symbolic batch: Shape, Slice, Concat with a constant
VIEW_B_C_REST = """<ir_version: 8, opset_import: ["" : 17]>
g (float[batch, 3, 4, 5] x) => (float[batch, 3, 20] y) {
    s = Shape(x)  zero = Constant<value = int64[1] {0}>()  two = Constant<value = int64[1] {2}>()
    head = Slice(s, zero, two)  rest = Constant<value = int64[1] {-1}>()  t = Concat<axis = 0>(head, rest)
    y = Reshape(x, t) }"""


def reshape_targets(model: onnx.ModelProto) -> list:
    graph = gs.import_onnx(model)
    return [None if (value := constant_value(node.inputs[1])) is None else value.tolist()
            for node in graph.nodes if node.op == "Reshape"]


def test_a_computed_target_becomes_a_constant_with_minus_one_at_the_batch():
    model = onnx.parser.parse_model(VIEW_B_C_REST)
    out, result = apply_pass(model, ReshapeTargetToConstant())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Reshape": 1}          # the shape arithmetic went with the computed target
    assert reshape_targets(out) == [[-1, 3, 20]]
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal([batch, 3, 4, 5]).astype(np.float32)
        np.testing.assert_array_equal(run(out, {"x": x})[0], run(model, {"x": x})[0])


def test_a_target_with_two_unknown_sizes_stays():
    """x.view(B, T, -1) of x (batch, time, 4): two sizes known only at run time, no constant target fits."""
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[batch, time, 4] x) => (float[batch, time, 2, 2] y) {
        s = Shape(x)  zero = Constant<value = int64[1] {0}>()  two = Constant<value = int64[1] {2}>()
        head = Slice(s, zero, two)  rest = Constant<value = int64[2] {2, -1}>()  t = Concat<axis = 0>(head, rest)
        y = Reshape(x, t) }""")
    out, result = apply_pass(model, ReshapeTargetToConstant())
    assert result.stats == {"rewritten": 0}
    assert reshape_targets(out) == [None]
    assert op_histogram(out) == op_histogram(model)
    assert any("more than one size of its output unknown" in note for note in result.notes)


@pytest.mark.parametrize("target", ["[0, 3, 20]", "[-1, 3, 20]"])
def test_a_constant_target_is_left_as_it_is(target):
    model = onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
    g (float[batch, 3, 4, 5] x) => (float[batch, 3, 20] y) {{
        t = Constant<value = int64[3] {{{target[1:-1]}}}>()  y = Reshape(x, t) }}""")
    out, result = apply_pass(model, ReshapeTargetToConstant())
    assert result.stats == {"rewritten": 0}
    assert reshape_targets(out) == [[int(v) for v in target[1:-1].split(", ")]]


def test_notes_say_why_a_computed_target_stays():
    """The report's reasons, exact: two sizes unknown; an output declared a scalar for a target of unknown
    length (trusting the declaration made the target [], a Reshape that fails at run time)."""
    two_unknown = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[batch, time, 4] x) => (float[batch, time, 2, 2] y) {
        s = Shape(x)  zero = Constant<value = int64[1] {0}>()  two = Constant<value = int64[1] {2}>()
        head = Slice(s, zero, two)  rest = Constant<value = int64[2] {2, -1}>()  t = Concat<axis = 0>(head, rest)
        y = Reshape(x, t) }""")
    declared_scalar = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[batch, time, 4] x, int64[n] t) => (float y) { y = Reshape(x, t) }""")
    for model, why in ((two_unknown, "more than one size of its output unknown, or a size 0"),
                       (declared_scalar, "its target's length not known to be its output's rank 0")):
        [node for node in model.graph.node if node.op_type == "Reshape"][0].name = "view"
        out, result = apply_pass(model, ReshapeTargetToConstant())
        assert result.stats == {"rewritten": 0}
        assert result.notes == [f"Reshape 'view' left alone: {why}"]
        assert reshape_targets(out) == [None]

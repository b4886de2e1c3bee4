"""isnan-to-equal: Where(IsNaN(x), a, b) as Where(Equal(x, x), b, a), a lone IsNaN as Not(Equal(x, x)); exact on NaN,
infinities, zeros and finite values, as TorchScript's scaled_dot_product_attention guard writes it."""
from __future__ import annotations

import numpy as np
import onnx.parser

from passes.isnan_to_equal import IsNanToEqual
from scan_testing import apply_pass, op_histogram, run

VALUES = np.array([[np.nan, 1.0, -np.inf, 0.0], [np.inf, -0.0, np.nan, 3.5]], dtype=np.float32)


def test_the_sdpa_guard_becomes_equal_with_the_branches_swapped():
    """p = Softmax(s); Where(IsNaN(p), 0, p), as torch writes it; before s24 tpu-mlir refused the IsNaN."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] s) => (float[2,4] y) {
      zero = Constant<value = float {0.0}>()
      nan = IsNaN(s)
      y = Where(nan, zero, s)
    }""")
    out, result = apply_pass(model, IsNanToEqual())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Constant": 1, "Equal": 1, "Where": 1}
    equal = next(node for node in out.graph.node if node.op_type == "Equal")
    where = next(node for node in out.graph.node if node.op_type == "Where")
    assert list(equal.input) == ["s", "s"] and list(where.input) == [equal.output[0], "s", "zero"]
    np.testing.assert_array_equal(run(out, {"s": VALUES})[0], np.where(np.isnan(VALUES), 0, VALUES))


def test_an_isnan_read_otherwise_becomes_not_equal():
    """Read by a Cast as well as a Where: it becomes Not(Equal(x, x)), which both read (the Where as it was)."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] x) => (float[2,4] y, float[2,4] flags) {
      zero = Constant<value = float {0.0}>()
      nan = IsNaN(x)
      y = Where(nan, zero, x)
      flags = Cast<to = 1>(nan)
    }""")
    out, result = apply_pass(model, IsNanToEqual())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Cast": 1, "Constant": 1, "Equal": 1, "Not": 1, "Where": 1}
    y, flags = run(out, {"x": VALUES})
    np.testing.assert_array_equal(y, np.where(np.isnan(VALUES), 0, VALUES))
    np.testing.assert_array_equal(flags, np.isnan(VALUES).astype(np.float32))


def test_an_isnan_read_as_a_where_branch_is_not_a_condition():
    """Where(c, a, IsNaN(x)): a value there, not the condition; it becomes Not(Equal(x, x)) itself."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] x, bool[2,4] c) => (float[2,4] y) {
      nan = IsNaN(x)
      pick = Where(c, c, nan)
      y = Cast<to = 1>(pick)
    }""")
    out, result = apply_pass(model, IsNanToEqual())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Cast": 1, "Equal": 1, "Not": 1, "Where": 1}


def test_tpu_legality_names_isnan_and_the_pass_that_takes_it():
    """tpu-mlir 1.30.2's model_transform refused FalconH1's tpu graph: "Op not support:{'IsNaN'}" (s24); tpu-legality
    says so, and after isnan-to-equal the graph passes (cosine 1.0000000 in tpu-mlir F32, docs/GENERALITY.md s24)."""
    import onnx_graphsurgeon as gs

    from passes.tpu_legality import find_violations

    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] s) => (float[2,4] y) {
      zero = Constant<value = float {0.0}>()
      nan = IsNaN(s)
      y = Where(nan, zero, s)
    }""")
    before = find_violations(gs.import_onnx(model))
    assert {rule: list(nodes) for rule, nodes in before.items() if "IsNaN" in rule} == {
        "IsNaN op (model_transform: \"Op not support:{'IsNaN'}\"; run isnan-to-equal)": ["IsNaN ''"]}
    out, _ = apply_pass(model, IsNanToEqual())
    assert not [rule for rule in find_violations(gs.import_onnx(out)) if "IsNaN" in rule]

"""isnan-to-equal: Where(IsNaN(x), a, b) as Where(Equal(x, x), b, a), a lone IsNaN as Not(Equal(x, x)); exact on NaN,
infinities, zeros and finite values, as TorchScript's scaled_dot_product_attention guard writes it."""
from __future__ import annotations

import numpy as np
import onnx.parser
import onnx.reference

from passes.isnan_to_equal import IsNanToEqual
from scan_testing import apply_pass, op_histogram, run

# p = Softmax(s); Where(IsNaN(p), 0, p), as TorchScript writes scaled_dot_product_attention's guard
SDPA_GUARD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,4] s) => (float[2,4] y) {
  zero = Constant<value = float {0.0}>()
  nan = IsNaN(s)
  y = Where(nan, zero, s)
}"""
VALUES = np.array([[np.nan, 1.0, -np.inf, 0.0], [np.inf, -0.0, np.nan, 3.5]], dtype=np.float32)


def test_the_sdpa_guard_becomes_equal_with_the_branches_swapped():
    """p = Softmax(s); Where(IsNaN(p), 0, p), as torch writes it; before s24 tpu-mlir refused the IsNaN."""
    model = onnx.parser.parse_model(SDPA_GUARD)
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

    model = onnx.parser.parse_model(SDPA_GUARD)
    before = find_violations(gs.import_onnx(model))
    assert {rule: list(nodes) for rule, nodes in before.items() if "IsNaN" in rule} == {
        "IsNaN op (model_transform: \"Op not support:{'IsNaN'}\"; run isnan-to-equal)": ["IsNaN ''"]}
    out, _ = apply_pass(model, IsNanToEqual())
    assert not [rule for rule in find_violations(gs.import_onnx(out)) if "IsNaN" in rule]


def test_an_isnan_that_is_a_wheres_condition_and_its_first_branch_is_not_left_behind():
    """Where(IsNaN(x), IsNaN(x), c): read as a branch too, so it becomes Not(Equal(x, x)); no IsNaN stays (s25: the
    branch check reading only the second branch left it)."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] x, bool[2,4] c) => (bool[2,4] y) {
      nan = IsNaN(x)
      y = Where(nan, nan, c)
    }""")
    out, result = apply_pass(model, IsNanToEqual())
    assert op_histogram(out) == {"Equal": 1, "Not": 1, "Where": 1}
    nodes = {node.op_type: node for node in out.graph.node}
    assert list(nodes["Equal"].input) == ["x", "x"] and list(nodes["Not"].input) == [nodes["Equal"].output[0]]
    assert list(nodes["Where"].input) == [nodes["Not"].output[0], nodes["Not"].output[0], "c"]
    c = np.array([[True, False] * 2] * 2)   # ONNX Runtime has no bool Where: ONNX's reference evaluator runs it
    y = onnx.reference.ReferenceEvaluator(out).run(None, {"x": VALUES, "c": c})[0]
    np.testing.assert_array_equal(y, np.where(np.isnan(VALUES), True, c))


def test_other_readers_with_three_inputs_or_one_are_no_where():
    """Concat(IsNaN(x), a, b) and Cast(IsNaN(x)) read the IsNaN's value: it becomes Not(Equal(x, x)) and they stay
    as they are. (s25's mutants matching any 3-input or 1-input node as a Where survive this, equivalent: such a reader
    makes the IsNaN read otherwise, so it is Not(Equal(x, x)) before the reader is looked at.)"""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] x, bool[2,4] a, bool[2,4] b) => (bool[6,4] y, float[2,4] f) {
      nan = IsNaN(x)
      y = Concat<axis = 0>(nan, a, b)
      f = Cast<to = 1>(nan)
    }""")
    out, result = apply_pass(model, IsNanToEqual())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Cast": 1, "Concat": 1, "Equal": 1, "Not": 1}
    a, b = np.ones((2, 4), bool), np.zeros((2, 4), bool)
    y, f = run(out, {"x": VALUES, "a": a, "b": b})
    np.testing.assert_array_equal(y, np.concatenate([np.isnan(VALUES), a, b]))
    np.testing.assert_array_equal(f, np.isnan(VALUES).astype(np.float32))


def test_an_isnan_that_is_a_graph_output_becomes_not_equal():
    """adv11: an IsNaN read by no node, or only as Where conditions, was taken for dead once the Wheres were
    rewritten; as a graph output it stayed (tpu-legality then refused the run, exit 4), exact but not lowered.
    Now it becomes Not(Equal(x, x)) and the Where still takes Equal with its branches swapped."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] x, float[2,4] s) => (bool[2,4] flags, bool[2,4] guard, float[2,4] y) {
      zero = Constant<value = float {0.0}>()
      flags = IsNaN(x)
      guard = IsNaN(s)
      y = Where(guard, zero, s)
    }""")
    out, result = apply_pass(model, IsNanToEqual())
    assert op_histogram(out) == {"Constant": 1, "Equal": 2, "Not": 2, "Where": 1}
    flags, guard, y = run(out, {"x": VALUES, "s": VALUES[::-1].copy()})
    np.testing.assert_array_equal(flags, np.isnan(VALUES))
    np.testing.assert_array_equal(guard, np.isnan(VALUES[::-1]))
    np.testing.assert_array_equal(y, np.where(np.isnan(VALUES[::-1]), 0, VALUES[::-1]))

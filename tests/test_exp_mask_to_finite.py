"""exp-mask-to-finite: Exp(Where(c, x, -inf)) with the -inf as -128, bitwise the same Exp outputs; left alone where the
Where is read by anything but Exp, is a graph output, or is not float32/float16."""
from __future__ import annotations

import numpy as np
import onnx.parser

from passes.exp_mask_to_finite import ExpMaskToFinite
from scan_testing import apply_pass, op_histogram, run

SEGSUM = np.array([[0.0, -1.5, 2.0, -80.0], [-103.0, 3.0, -0.25, 88.0]], dtype=np.float32)
MASK = np.array([[True, False, True, False], [False, True, True, False]])


def _segsum_decay(dtype: str = "float", reader: str = "y = Exp(masked)", outputs: str = "float[2,4] y") -> onnx.ModelProto:
    """transformers' Mamba2 SSD as both exporters write it: exp(segsum.masked_fill(~mask, -inf))."""
    return onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g ({dtype}[2,4] s, bool[2,4] c) => ({outputs}) {{
      minus_inf = Constant<value = {dtype} {{-inf}}>()
      masked = Where(c, s, minus_inf)
      {reader}
    }}""")


def _constants(model: onnx.ModelProto) -> list[float]:
    return sorted(float(v) for node in model.graph.node if node.op_type == "Constant"
                  for v in onnx.numpy_helper.to_array(node.attribute[0].t).ravel()) + sorted(
        float(v) for init in model.graph.initializer for v in onnx.numpy_helper.to_array(init).ravel())


def test_the_mamba2_segsum_mask_becomes_minus_128_and_every_exp_output_is_bitwise_the_same():
    """Before s26 tpu-mlir 1.30.2's BF16 bmodel of hf-mamba2 gave NaN for every output and INT8's deploy aborted on
    this -inf; with -128 BF16 compiled to cosine 0.99997 against ONNX Runtime (docs/GENERALITY.md s26)."""
    model = _segsum_decay()
    out, result = apply_pass(model, ExpMaskToFinite())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Exp": 1, "Where": 1}
    assert _constants(out) == [-128.0]
    feeds = {"s": SEGSUM, "c": MASK}
    [before], [after] = run(model, feeds), run(out, feeds)
    assert after.dtype == np.float32 and before.tobytes() == after.tobytes()
    assert np.count_nonzero(after[~MASK]) == 0


def test_two_exps_and_the_mask_on_the_true_branch():
    """float16, the -inf an initializer on Where's true branch, read by two Exps."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Where", ["c", "minus_inf", "s"], ["masked"]), helper.make_node("Exp", ["masked"], ["y"]),
         helper.make_node("Exp", ["masked"], ["z"])], "g",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT16, [2, 4]), helper.make_tensor_value_info("c", TensorProto.BOOL, [2, 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT16, [2, 4]) for name in ("y", "z")],
        [numpy_helper.from_array(np.array([-np.inf, 1.0], dtype=np.float16)[:1].reshape(()), "minus_inf")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    out, result = apply_pass(model, ExpMaskToFinite())
    assert result.stats == {"rewritten": 1}
    assert _constants(out) == [-128.0]
    feeds = {"s": SEGSUM.astype(np.float16), "c": MASK}
    assert [a.tobytes() for a in run(model, feeds)] == [a.tobytes() for a in run(out, feeds)]
    assert np.count_nonzero(run(out, feeds)[0][MASK]) == 0


def test_left_alone_where_minus_inf_is_read_otherwise_or_not_exact():
    """A softmax mask (-inf read by Add, then Softmax: a fully masked row is NaN with -inf, uniform with -128), a Where
    that is a graph output, and float64 (exp(-128) = 2.6e-56 there): each left, with the reason."""
    cases = {
        "read by ['Softmax'], not by Exp alone": _segsum_decay(reader="y = Softmax(masked)"),
        "read by ['Exp', 'Neg'], not by Exp alone": _segsum_decay(
            reader="y = Exp(masked)\n      z = Neg(masked)", outputs="float[2,4] y, float[2,4] z"),
        "a graph output, not by Exp alone": _segsum_decay(reader="y = Exp(masked)",
                                                          outputs="float[2,4] y, float[2,4] masked"),
        "-inf of type float64: exp(-128) is no 0 there": _segsum_decay(dtype="double", outputs="double[2,4] y"),
    }
    for why, model in cases.items():
        out, result = apply_pass(model, ExpMaskToFinite())
        assert result.stats.get("rewritten", 0) == 0, why
        assert _constants(out) == [-np.inf], why
        assert any(why in note for note in result.notes), (why, result.notes)


def _explained(model: onnx.ModelProto):
    import onnx_graphsurgeon as gs

    from passes.base import PassContext

    graph = gs.import_onnx(model)
    result = ExpMaskToFinite().run(graph, PassContext(opset=17, explain=True))
    return result.stats, result.notes, graph


def test_every_reason_is_the_whole_note_naming_the_where():
    cases = {
        "read by ['Softmax'], not by Exp alone": _segsum_decay(reader="y = Softmax(masked)"),
        "a graph output, not by Exp alone": _segsum_decay(reader="y = Exp(masked)", outputs="float[2,4] y, float[2,4] masked"),
        "-inf of type float64: exp(-128) is no 0 there": _segsum_decay(dtype="double", outputs="double[2,4] y"),
        "read by nothing, not by Exp alone": _segsum_decay(reader="y = Exp(s)"),     # the Where is read by no node
    }
    for why, model in cases.items():
        model.graph.node[1].name = "mask_fill"
        stats, notes, _ = _explained(model)
        assert (stats, notes) == ({"rewritten": 0}, [f"Where 'mask_fill' left alone: its -inf branch is {why}"]
                                  if not why.startswith("-inf") else [f"Where 'mask_fill' left alone: {why}"])


def test_a_branch_of_minus_inf_and_finite_values_keeps_the_finite_ones():
    """Only the -inf entries become -128; the branch's other values are kept as they were."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] s, bool[2,4] c) => (float[2,4] y) {
      fill = Constant<value = float[2,4] {-inf, 0.5, -inf, -3.0, 7.25, -inf, 1.0, -inf}>()
      masked = Where(c, s, fill)
      y = Exp(masked)
    }""")
    out, result = apply_pass(model, ExpMaskToFinite())
    assert result.stats == {"rewritten": 1}
    assert _constants(out) == [-128.0, -128.0, -128.0, -128.0, -3.0, 0.5, 1.0, 7.25]
    feeds = {"s": SEGSUM, "c": MASK}
    assert run(model, feeds)[0].tobytes() == run(out, feeds)[0].tobytes()


def test_a_where_without_minus_inf_or_another_op_with_one_is_no_candidate():
    """A Where of finite branches read by Exp, and Clip(x, -inf, 0) read by Exp (three inputs, a -inf constant):
    neither is looked at (no note), each stays as it was."""
    finite = _segsum_decay(dtype="float")
    finite.graph.node[0].attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(-5.0, np.float32)))
    clip = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] s) => (float[2,4] y) {
      low = Constant<value = float {-inf}>()
      high = Constant<value = float {0.0}>()
      clipped = Clip(s, low, high)
      y = Exp(clipped)
    }""")
    for model, ops in ((finite, ["Constant", "Where", "Exp"]), (clip, ["Constant", "Constant", "Clip", "Exp"])):
        stats, notes, graph = _explained(model)
        assert (stats, notes) == ({"rewritten": 0}, [])
        assert [node.op for node in graph.nodes] == ops

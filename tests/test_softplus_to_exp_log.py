"""softplus-to-exp-log: exact op list, and equal to Softplus over the whole float32 range."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from passes.softplus_to_exp_log import SoftplusToExpLog
from scan_testing import apply_pass, op_histogram, run


def test_softplus_is_rewritten_and_exact_everywhere():
    graph = helper.make_graph(
        [helper.make_node("Softplus", ["x"], ["y"], name="sp")], "sp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 1000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 1000])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    out, result = apply_pass(model, SoftplusToExpLog())
    assert result.stats == {"rewritten": 1}
    assert op_histogram(out) == {"Add": 1, "Exp": 1, "Log": 1, "Max": 1, "Min": 1}
    # Inputs from -1e4 to 1e4, where a naive log(1 + exp(x)) overflows, and around the cap of 20.
    x = np.concatenate([np.linspace(-1e4, 1e4, 3000), np.linspace(-30, 30, 2000), np.linspace(19, 21, 1000)]).astype(np.float32).reshape(6, 1000)
    expected = np.logaddexp(0.0, x.astype(np.float64))
    actual = run(out, {"x": x})[0]
    assert np.all(np.isfinite(actual))
    np.testing.assert_allclose(actual, expected, rtol=2e-7, atol=1e-7)


def test_softplus_stays_below_opset_8():
    """Found by s16-adv: at opsets 6 and 7 the rewrite's Min(x, 20) and Add(1, ..) need broadcasting
    those versions do not have (ONNX Runtime: 'Could not find an implementation for Add(6)'), so the
    cpu pipelines failed verification on a valid model (exit 3) and --verify none wrote a broken one."""
    from pipelines import compile_model

    for opset in (6, 7):
        graph = helper.make_graph(
            [helper.make_node("Softplus", ["x"], ["y"], name="sp")], "sp",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=4)
        result = compile_model(model, "softplus-to-exp-log", verify="each")
        assert [node.op_type for node in result.model.graph.node] == ["Softplus"]
        assert result.records[0].notes == [f"Softplus 'sp' left alone: opset {opset} has no broadcasting Min "
                                           "(from opset 8)"]


def test_bfloat16_softplus_gets_bfloat16_constants():
    """Found by session s17's generality probe (transformers' Mamba as model.to(torch.bfloat16), dynamo
    exporter, opset 23): onnx-graphsurgeon keeps bfloat16 as the ONNX enum 16, which the builder took for
    a numpy type ('TypeError: Cannot interpret '16' as a data type', the pass failed, exit 4).
    patterns.graph_query.element_type maps it to ml_dtypes' bfloat16, the type onnx exports."""
    graph = helper.make_graph(
        [helper.make_node("Softplus", ["x"], ["y"], name="sp")], "sp",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])   # bfloat16 Softplus: 22
    out, result = apply_pass(model, SoftplusToExpLog())   # onnx.checker with full_check: types agree
    assert result.stats == {"rewritten": 1}
    constants = [node.attribute[0].t for node in out.graph.node if node.op_type == "Constant"]
    constants += list(out.graph.initializer)
    assert constants and {tensor.data_type for tensor in constants} == {TensorProto.BFLOAT16}

"""softplus-guard-off: the dynamo exporter's Where(Greater(x, 20), x, Softplus(x)) as Softplus(x), bitwise the same
on ONNX Runtime; left alone below the threshold where that holds, and where the Softplus is read otherwise."""
from __future__ import annotations

import numpy as np
import onnx.parser

from passes.softplus_guard_off import SoftplusGuardOff
from scan_testing import apply_pass, op_histogram, run

# Around the guard's threshold, far past it (a naive log(1 + e^x) overflows from 88.7) and below 0.
X = np.concatenate([np.linspace(-1e4, 1e4, 1001), np.linspace(-30, 30, 1201), np.linspace(16, 24, 798),
                    [20.0, np.nextafter(np.float32(20), np.float32(21)), 88.7, 89.0, 3e38]]).astype(np.float32).reshape(1, -1)


def _guarded(threshold: str = "20.0", extra: str = "", outputs: str = "float[1,3005] y") -> onnx.ModelProto:
    """``F.softplus(x)`` as the dynamo exporter writes it (beta 1, threshold 20)."""
    return onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[1,3005] x) => ({outputs}) {{
      t = Constant<value = float {{{threshold}}}>()
      c = Greater(x, t)
      s = Softplus(x)
      y = Where(c, x, s)
      {extra}
    }}""")


def test_the_dynamo_softplus_guard_goes_and_the_output_is_bitwise_the_same():
    """Session s26 (int8dyn): the guard's Where kept BF16 in tpu-mlir 1.30.2's INT8 gave its x branch, the dt
    projection, the softplus range as u8 (SelectiveWhere): the projection read as all zeros, micro-digits' dynamo
    export agreed with PyTorch on 90% of 20 held-out digits (docs/TPU.md)."""
    model = _guarded()
    out, result = apply_pass(model, SoftplusGuardOff())
    assert result.stats == {"guards_removed": 1}
    assert op_histogram(out) == {"Softplus": 1}
    assert [node.input for node in out.graph.node] == [["x"]] and [node.output for node in out.graph.node] == [["y"]]
    [before], [after] = run(model, {"x": X}), run(out, {"x": X})
    assert after.dtype == np.float32 and before.tobytes() == after.tobytes()


def test_17_is_the_lowest_threshold_taken_and_lower_ones_stay():
    """From 17 on Softplus(x) is x in float32 past the threshold; at 10 it is not (softplus(10.5) = 10.5000275)."""
    for threshold, removed in (("17.0", 1), ("16.5", 0), ("10.0", 0)):
        out, result = apply_pass(_guarded(threshold), SoftplusGuardOff())
        assert result.stats == {"guards_removed": removed}
        assert op_histogram(out) == ({"Softplus": 1} if removed else {"Constant": 1, "Greater": 1, "Softplus": 1,
                                                                      "Where": 1})
        if removed:
            assert run(out, {"x": X})[0].tobytes() == run(_guarded(threshold), {"x": X})[0].tobytes()


def test_left_alone_where_the_softplus_is_read_by_more_than_the_guard_or_the_guard_is_another_form():
    model = _guarded(extra="z = Neg(s)", outputs="float[1,3005] y, float[1,3005] z")
    out, result = apply_pass(model, SoftplusGuardOff())
    assert result.stats == {"guards_removed": 0}
    assert op_histogram(out) == {"Constant": 1, "Greater": 1, "Neg": 1, "Softplus": 1, "Where": 1}
    swapped = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[1,4] x) => (float[1,4] y) {
      t = Constant<value = float {20.0}>()
      c = Greater(x, t)
      s = Softplus(x)
      y = Where(c, s, x)
    }""")
    assert apply_pass(swapped, SoftplusGuardOff())[1].stats == {"guards_removed": 0}


def test_the_tpu_pipeline_leaves_the_dynamo_graph_a_bare_softplus_as_the_torchscript_export_has():
    """Before s26 (int8dyn) the tpu pipeline kept the guard: Greater, Softplus, Where (what tpu-mlir's INT8 broke)."""
    from pipelines import compile_model

    result = compile_model(_guarded(), "tpu", verify="none")
    assert op_histogram(result.model) == {"Softplus": 1}
    assert run(result.model, {"x": X})[0].tobytes() == run(_guarded(), {"x": X})[0].tobytes()

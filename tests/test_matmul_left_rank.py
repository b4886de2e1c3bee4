"""matmul-left-rank: a lower-rank left MatMul operand gets leading unit axes (tpu-mlir MatMul.cpp:66)."""
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.base import PassContext
from passes.registry import get_pass
from passes.tpu_legality import TpuLegality
from tests.scan_testing import op_histogram, run

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def _apply(text):
    model = onnx.parser.parse_model(text)
    graph = gs.import_onnx(model)
    result = get_pass("matmul-left-rank").run(graph, PassContext(opset=17))
    out = gs.export_onnx(graph)
    onnx.checker.check_model(out, full_check=True)
    return model, out, result


def test_weight_and_activation_left_operands_get_the_right_rank():
    # transformers' Mamba: dt_proj.weight [4, 2] @ time_step [1, 2, 5]; and an activation [3, 2] @ [2, 2, 5]
    text = f"""{HEADER}
    g (float[1,2,5] t, float[3,2] a, float[2,2,5] r) => (float[1,4,5] y, float[2,3,5] z)
      <float[4,2] w = {{1,2,3,4,5,6,7,8}}> {{
      y = MatMul(w, t)
      z = MatMul(a, r)
    }}"""
    before, after, result = _apply(text)
    assert result.stats == {"lifted": 2}
    assert op_histogram(after) == {"MatMul": 2, "Unsqueeze": 1}
    assert sorted(list(i.dims) for i in after.graph.initializer) == [[1], [1, 4, 2]]   # Unsqueeze axes, w
    rng = np.random.default_rng(0)
    feeds = {"t": rng.standard_normal((1, 2, 5)).astype(np.float32),
             "a": rng.standard_normal((3, 2)).astype(np.float32),
             "r": rng.standard_normal((2, 2, 5)).astype(np.float32)}
    for expected, actual in zip(run(before, feeds), run(after, feeds)):
        np.testing.assert_array_equal(actual, expected)
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(after))
    assert TpuLegality().run(graph, PassContext(opset=17)).changed is False


def test_vector_and_equal_rank_operands_are_left_alone():
    text = f"""{HEADER}
    g (float[2] v, float[3,2,5] r, float[3,4,2] l) => (float[3,5] y, float[3,4,5] z) {{
      y = MatMul(v, r)
      z = MatMul(l, r)
    }}"""
    _, after, result = _apply(text)
    assert not result.changed and result.stats == {"lifted": 0}
    assert op_histogram(after) == {"MatMul": 2}


def test_a_constant_shared_by_two_matmuls_is_lifted_once():
    """The batched-doubling form shifts two tensors by one shifted identity: one lifted copy of it, not
    two distinct tensors with one name (onnx-graphsurgeon warned on export and kept one of them)."""
    model = onnx.parser.parse_model(f"""{HEADER}
    g (float[1,2,3,2] x, float[1,2,3,2] y) => (float[1,2,3,2] u, float[1,2,3,2] v)
      <float[3,3] shift = {{0,0,0, 1,0,0, 0,1,0}}> {{
      u = MatMul(shift, x)
      v = MatMul(shift, y)
    }}""")
    graph = gs.import_onnx(model)
    result = get_pass("matmul-left-rank").run(graph, PassContext(opset=17))
    assert result.stats == {"lifted": 2}
    lifted = [node.inputs[0] for node in graph.nodes]
    assert lifted[0] is lifted[1] and (lifted[0].name, lifted[0].shape) == ("shift_rank4", (1, 1, 3, 3))
    after = gs.export_onnx(graph)
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((1, 2, 3, 2)).astype(np.float32) for name in ("x", "y")}
    for expected, actual in zip(run(model, feeds), run(after, feeds)):
        np.testing.assert_array_equal(actual, expected)


def test_a_lifted_constant_does_not_take_a_name_the_model_has():
    """The model already has a tensor called 'w_rank3' (names are hostile text): the lifted copy of w
    gets another name, and the model stays valid (one producer per tensor)."""
    text = f"""{HEADER}
    g (float[1,2,5] t, float[1,4,5] w_rank3) => (float[1,4,5] y)
      <float[4,2] w = {{1,2,3,4,5,6,7,8}}> {{
      m = MatMul(w, t)
      y = Add(m, w_rank3)
    }}"""
    before, after, result = _apply(text)
    assert result.stats == {"lifted": 1}
    assert [i.name for i in after.graph.initializer] == ["w_rank3#2"]
    rng = np.random.default_rng(1)
    feeds = {"t": rng.standard_normal((1, 2, 5)).astype(np.float32),
             "w_rank3": rng.standard_normal((1, 4, 5)).astype(np.float32)}
    np.testing.assert_array_equal(run(after, feeds)[0], run(before, feeds)[0])

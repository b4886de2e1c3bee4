"""tools.tpu_qtable: which tpu-mlir ops stay in floating point under INT8 (no compiler needed)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tools import tpu_qtable
from tools.tpu_qtable import DECAY, EXPONENT, MERGE, NORM, SCAN, WHERE


def _node(op, inputs, outputs, name="", made_by=None, **attrs):
    node = helper.make_node(op, inputs, outputs, name=name, **attrs)
    if made_by:
        node.metadata_props.add(key="pass", value=made_by)
        node.metadata_props.add(key="pass_index", value="1")
    return node


def small_scan_model():
    """A projection, dt = Softplus, the decay dt*A into a re-rolled scan (one node made by
    reroll-scans, one named after it by a later pass, one unnamed onnxsim Gemm on the scan's
    constant), the scan's output added to the projection (the merge), an output projection,
    then an unrelated Exp and Softplus."""
    f = np.float32
    initializers = [numpy_helper.from_array(np.ones((8, 8), f), "W"),
                    numpy_helper.from_array(np.full((1, 4, 8), -0.5, f), "A"),
                    numpy_helper.from_array(np.array([4, 8], np.int64), "shape2d"),
                    numpy_helper.from_array(np.triu(np.ones((8, 8), f)), "tri"),
                    numpy_helper.from_array(np.eye(8, dtype=f), "reroll_scans/scan0/const_7"),
                    numpy_helper.from_array(np.array([1, 4, 8], np.int64), "shape3d")]
    nodes = [
        _node("MatMul", ["x", "W"], ["proj_out"], "/proj/MatMul"),
        _node("Softplus", ["proj_out"], ["dt"], "/op/Softplus"),
        _node("Mul", ["dt", "A"], ["dA"], "/op/Einsum/Mul"),
        _node("Reshape", ["dA", "shape2d"], ["_v_1"]),
        _node("MatMul", ["_v_1", "tri"], ["cs_out"], "cumsum_to_matmul/reroll_scans/scan0/CumSum_1/MatMul"),
        _node("Exp", ["cs_out"], ["reroll_scans/scan0/Exp_2_out"], "reroll_scans/scan0/Exp_2", made_by="reroll-scans"),
        _node("Gemm", ["reroll_scans/scan0/Exp_2_out", "reroll_scans/scan0/const_7"], ["_v_9"]),
        _node("Reshape", ["_v_9", "shape3d"], ["_v_10"], "Reshape_3", made_by="simplify"),
        _node("Mul", ["_v_10", "x"], ["scan_y"], "reroll_scans/scan0/Mul_3", made_by="reroll-scans"),
        _node("Add", ["scan_y", "proj_out"], ["sum"], "/op/Add"),
        _node("Mul", ["sum", "A"], ["scaled"], "/op/out_norm/Mul"),
        _node("MatMul", ["scaled", "W"], ["o"], "/op/out_proj/MatMul"),
        _node("Add", ["o", "x"], ["residual"], "/Add"),
        _node("Exp", ["residual"], ["e"], "/head/Exp"),
        _node("Softplus", ["e"], ["sp"], "/head/Softplus"),
        _node("Sigmoid", ["sp"], ["out"], "/head/Sigmoid"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_precise_nodes_are_the_scan_its_decay_arithmetic_and_exponents():
    found = [(p.output, p.op_type, p.why) for p in tpu_qtable.precise_nodes(small_scan_model())]
    assert found == [
        ("dt", "Softplus", DECAY),
        ("dA", "Mul", DECAY),
        ("_v_1", "Reshape", DECAY),
        ("cs_out", "MatMul", SCAN),                          # named after reroll-scans' node
        ("reroll_scans/scan0/Exp_2_out", "Exp", SCAN),       # pass metadata
        ("_v_9", "Gemm", SCAN),                              # reads the scan's constant
        ("_v_10", "Reshape", SCAN),                          # reads a scan tensor
        ("scan_y", "Mul", SCAN),
        ("sum", "Add", MERGE),                               # up to the next projection
        ("scaled", "Mul", MERGE),
        ("e", "Exp", EXPONENT),
        ("sp", "Softplus", EXPONENT),                        # a Softplus that feeds no scan
    ]


# tpu-mlir's names: "<ONNX output>_<op type>"; ops its converter adds get a further suffix.
MLIR = '''module attributes {module.name = "g"} {
  func.func @main(%arg0: tensor<1x4x8xf32> loc(unknown)) -> tensor<1x4x8xf32> {
    %0 = "top.None"() : () -> none loc(#loc0)
    %1 = "top.Input"(%arg0) : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc1)
    %2 = "top.Weight"() : () -> tensor<8x8xf32> loc(#loc2)
    %3 = "top.MatMul"(%1, %2, %0) {do_relu = false} : (tensor<1x4x8xf32>, tensor<8x8xf32>, none) -> tensor<1x4x8xf32> loc(#loc3)
    %4 = "top.Softplus"(%3) : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc4)
    %5 = "top.Mul"(%4, %2) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc5)
    %6 = "top.Add"(%5, %2) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc6)
    %7 = "top.MatMul"(%6, %2, %0) : (tensor<4x8xf32>, tensor<8x8xf32>, none) -> tensor<4x8xf32> loc(#loc7)
    %8 = "top.Exp"(%7) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc(#loc8)
    %9 = "top.MatMul"(%8, %2, %0) : (tensor<4x8xf32>, tensor<8x8xf32>, none) -> tensor<4x8xf32> loc(#loc9)
    %10 = "top.Mul"(%9, %1) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc10)
    %11 = "top.Add"(%10, %3) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc11)
    %15 = "top.MulConst"(%11) {const_val = -5.000000e-01 : f64} : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc15)
    %16 = "top.MatMul"(%15, %2, %0) : (tensor<1x4x8xf32>, tensor<8x8xf32>, none) -> tensor<1x4x8xf32> loc(#loc16)
    %17 = "top.Add"(%16, %1) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc17)
    %12 = "top.Exp"(%17) : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc12)
    %13 = "top.Softplus"(%12) : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc13)
    %14 = "top.Sigmoid"(%13) : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc14)
    return %14 : tensor<1x4x8xf32> loc(#loc)
  } loc(#loc)
} loc(#loc)
#loc = loc(unknown)
#loc0 = loc(unknown)
#loc1 = loc("x")
#loc2 = loc("W")
#loc3 = loc("proj_out_MatMul")
#loc4 = loc("dt_Softplus")
#loc5 = loc("dA_Mul")
#loc6 = loc("dA_Mul_bias")
#loc7 = loc("cs_out_MatMul")
#loc8 = loc("reroll_scans/scan0/Exp_2_out_Exp")
#loc9 = loc("_v_9_Gemm")
#loc10 = loc("scan_y_Mul")
#loc11 = loc("sum_Add")
#loc12 = loc("e_Exp")
#loc13 = loc("sp_Softplus")
#loc14 = loc("out_Sigmoid")
#loc15 = loc("scaled_Mul")
#loc16 = loc("o_MatMul")
#loc17 = loc("residual_Add")
'''


def test_mlir_op_names_skip_weights_inputs_and_none():
    assert tpu_qtable.mlir_op_names(MLIR) == [
        "proj_out_MatMul", "dt_Softplus", "dA_Mul", "dA_Mul_bias", "cs_out_MatMul", "reroll_scans/scan0/Exp_2_out_Exp",
        "_v_9_Gemm", "scan_y_Mul", "sum_Add", "scaled_Mul", "o_MatMul", "residual_Add", "e_Exp", "sp_Softplus",
        "out_Sigmoid"]


def test_match_op_takes_the_longest_output_name():
    outputs = {"a", "a_b", "_v_1"}
    assert tpu_qtable.match_op("a_b_Mul", outputs) == "a_b"
    assert tpu_qtable.match_op("a_Mul", outputs) == "a"
    assert tpu_qtable.match_op("_v_1_Reshape", outputs) == "_v_1"
    assert tpu_qtable.match_op("b_Mul", outputs) is None


def test_quantization_table_exact_text():
    table = tpu_qtable.quantization_table(small_scan_model(), tpu_qtable.mlir_op_names(MLIR), "BF16")
    assert tpu_qtable.format_table(table, "small.onnx") == (
        "# tools.tpu_qtable for small.onnx: ops kept in floating point, the rest INT8\n"
        "# 11 ops: scan 4, decay 3, merge 2, norm 0, exponent 2, kernel 0\n"
        "# op_name quantize_mode\n"
        "dt_Softplus BF16\n"
        "dA_Mul BF16\n"
        "dA_Mul_bias BF16\n"
        "cs_out_MatMul BF16\n"
        "reroll_scans/scan0/Exp_2_out_Exp BF16\n"
        "_v_9_Gemm BF16\n"
        "scan_y_Mul BF16\n"
        "sum_Add BF16\n"
        "scaled_Mul BF16\n"
        "e_Exp BF16\n"
        "sp_Softplus BF16\n")


def test_projection_and_residual_stay_int8_and_bad_float_mode_is_refused():
    table = tpu_qtable.quantization_table(small_scan_model(), tpu_qtable.mlir_op_names(MLIR), "F16")
    names = {name for name, mode, _ in table}
    assert not names & {"proj_out_MatMul", "o_MatMul", "residual_Add", "out_Sigmoid"}
    assert {mode for _, mode, _ in table} == {"F16"}
    try:
        tpu_qtable.quantization_table(small_scan_model(), [], "INT4")
    except ValueError as error:
        assert str(error) == "float mode 'INT4' is not one of BF16, F16, F32"
    else:
        raise AssertionError("INT4 accepted")


@pytest.mark.parametrize("weight_shape, group, refused", [
    ((104, 192, 1), 4, True),     # VMamba-T's x_proj at stage 2: 104 output channels, 4 groups
    ((200, 384, 1), 4, True),
    ((3072, 6, 1), 4, False),     # dt_proj: 3072 = 48 x 64 channels
    ((192, 1, 3, 3), 192, False),  # depthwise
    ((104, 768, 1), 1, False),    # not grouped
    ((56, 96, 1), 4, False),      # stage 1's x_proj: 56 <= 64 lanes, compiled in INT8
])
def test_int8_conv_kernel_rule(weight_shape, group, refused):
    weights = {"w": numpy_helper.from_array(np.zeros(weight_shape, np.float32), "w")}
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=group)
    assert tpu_qtable._int8_conv_refused(node, weights, lanes=64) is refused


def test_layernorm_written_out_by_layernorm_channels_first_stays_float():
    """The residual stream's LayerNorm2d as layernorm-channels-first writes it (a real pass run on a
    hand-written Transpose / LayerNormalization / Transpose): every node it made is NORM; the 1x1
    Conv after it stays INT8."""
    import onnx_graphsurgeon as gs
    import onnx
    from passes.base import PassContext
    from passes.layernorm_channels_first import LayerNormChannelsFirst
    f = np.float32
    initializers = [numpy_helper.from_array(np.full(4, 2.0, f), "scale"), numpy_helper.from_array(np.ones(4, f), "bias"),
                    numpy_helper.from_array(np.ones((4, 4, 1, 1), f), "W")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="/norm/Transpose", perm=[0, 2, 3, 1]),
             helper.make_node("LayerNormalization", ["t", "scale", "bias"], ["n"], name="/norm/LayerNormalization", axis=-1),
             helper.make_node("Transpose", ["n"], ["nchw"], name="/norm/Transpose_1", perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "W"], ["out"], name="/fc1/Conv")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 3, 3])], initializers)
    imported = gs.import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    LayerNormChannelsFirst().run(imported, PassContext(opset=17))
    found = [(p.op_type, p.why) for p in tpu_qtable.precise_nodes(gs.export_onnx(imported))]
    assert found == [("Conv", NORM), ("Sub", NORM), ("Mul", NORM), ("Conv", NORM), ("Add", NORM), ("Sqrt", NORM),
                     ("Div", NORM), ("Mul", NORM), ("Add", NORM)]


def test_a_dividing_sqrt_also_names_the_rsqrt_tpu_mlir_makes_of_it():
    """tpu-mlir's deploy turns Div(x, Sqrt(v)) into x * Rsqrt(v), an op named '<Sqrt op>_inv' with
    the Sqrt's calibrated range; left INT8 it saturated at max(sqrt(v)) and micro-digits' LayerNorms
    stopped normalising (docs/TPU.md). A Sqrt that is the dividend makes no such op."""
    nodes = [_node("Sqrt", ["v"], ["s"], "/norm/Sqrt"), _node("Div", ["x", "s"], ["d"], "/norm/Div"),
             _node("Sqrt", ["x"], ["t"], "/other/Sqrt"), _node("Div", ["t", "v"], ["e"], "/other/Div"),
             _node("Add", ["d", "e"], ["out"], "/Add")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "v")]
    graph = helper.make_graph(nodes, "g", io, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    table = tpu_qtable.quantization_table(model, ["s_Sqrt", "d_Div", "t_Sqrt", "e_Div", "out_Add"], "F16")
    assert [(name, mode, node.output, node.why) for name, mode, node in table] == [
        ("s_Sqrt", "F16", "s", EXPONENT), ("s_Sqrt_inv", "F16", "s", EXPONENT), ("t_Sqrt", "F16", "t", EXPONENT)]


def test_cli_output_never_follows_a_planted_link_nor_replaces_what_it_reads(tmp_path, capsys):
    """Found by planting a link at 'q.txt.partial' (adversarial session s13): tools.tpu_qtable wrote
    the table through that predictable temporary name, overwriting the link's target; '-o' naming the
    .mlir it reads replaced it."""
    import onnx

    model, mlir = tmp_path / "m.onnx", tmp_path / "m.mlir"
    onnx.save(small_scan_model(), model)
    mlir.write_text(MLIR)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "q.txt.partial").symlink_to(victim)
    assert tpu_qtable.main([str(model), str(mlir), "-o", str(tmp_path / "q.txt")]) == 0
    assert victim.read_text() == "keep me" and (tmp_path / "q.txt").read_text().startswith("#")
    assert tpu_qtable.main([str(model), str(mlir), "-o", str(mlir)]) == 2
    assert capsys.readouterr().err == (f"error: output {mlir} is the .mlir {mlir}, which this run reads; "
                                       "refusing to overwrite it\n")
    assert mlir.read_text() == MLIR


@pytest.mark.parametrize("pipe", ["model", "mlir"])
def test_a_named_pipe_for_an_input_is_one_line(pipe, tmp_path, capsys):
    """Found by s15-adv: a named pipe given as the model or the .mlir was read for ever."""
    import os

    import onnx

    model, mlir = tmp_path / "m.onnx", tmp_path / "m.mlir"
    onnx.save(small_scan_model(), model)
    mlir.write_text(MLIR)
    piped = {"model": model, "mlir": mlir}[pipe]
    piped.unlink()
    os.mkfifo(piped)
    assert tpu_qtable.main([str(model), str(mlir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not a regular file (a named pipe)" in err


def test_lanes_below_one_is_a_one_line_usage_error(tmp_path, capsys):
    """Found by s16-adv: '--lanes 0' divided by zero on a grouped Conv (a traceback, exit 1)."""
    model, mlir = tmp_path / "m.onnx", tmp_path / "m.mlir"
    with pytest.raises(SystemExit) as exited:
        tpu_qtable.main([str(model), str(mlir), "--lanes", "0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: argument --lanes: must be an integer >= 1, got '0' (see --help)\n"


def test_the_header_escapes_the_model_file_name(tmp_path, capsys):
    """Found by s16-adv: a file name with a newline or an escape sequence went raw into the table."""
    import onnx

    model, mlir = tmp_path / "m\n\x1b[2Jx.onnx", tmp_path / "m.mlir"
    onnx.save(small_scan_model(), model)
    mlir.write_text(MLIR)
    assert tpu_qtable.main([str(model), str(mlir)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "# tools.tpu_qtable for m\\n\\x1b[2Jx.onnx: ops kept in floating point, the rest INT8"


def test_projections_only_keeps_every_op_but_the_projections_in_float():
    """--qtable projections (s26): hf-mamba2's chunked SSD, which the auto table's rules do not know (no re-rolled scan),
    gave cosine 0.941 with the auto table and 0.99967 with only its projections INT8. The MatMuls by the weight W stay
    INT8; every other op is kept, those the auto rules name with their reason, the rest as 'rest'."""
    table = tpu_qtable.quantization_table(small_scan_model(), tpu_qtable.mlir_op_names(MLIR), "F16",
                                          projections_only=True)
    assert [(name, mode, node.why) for name, mode, node in table] == [
        ("dt_Softplus", "F16", DECAY), ("dA_Mul", "F16", DECAY), ("dA_Mul_bias", "F16", DECAY),
        ("cs_out_MatMul", "F16", SCAN), ("reroll_scans/scan0/Exp_2_out_Exp", "F16", SCAN), ("_v_9_Gemm", "F16", SCAN),
        ("scan_y_Mul", "F16", SCAN), ("sum_Add", "F16", MERGE), ("scaled_Mul", "F16", MERGE),
        ("residual_Add", "F16", "rest"), ("e_Exp", "F16", EXPONENT), ("sp_Softplus", "F16", EXPONENT),
        ("out_Sigmoid", "F16", "rest")]
    assert tpu_qtable.format_table(table, "small.onnx").splitlines()[1] == (
        "# 13 ops: scan 4, decay 3, merge 2, norm 0, exponent 2, kernel 0, rest 2")


def shared_branch_where_model():
    """A projection p read by three nodes: a Where(p > 0, p, 0.1 p) (a leaky ReLU as a Where, p its x branch),
    the residual Add and a second Where whose branches are read by it alone (q = 2 p and a constant)."""
    f = np.float32
    initializers = [numpy_helper.from_array(np.ones((8, 8), f), "W"), numpy_helper.from_array(np.zeros((), f), "zero"),
                    numpy_helper.from_array(np.array(0.1, f), "slope"), numpy_helper.from_array(np.array(2.0, f), "two")]
    nodes = [
        _node("MatMul", ["x", "W"], ["p"], "/proj/MatMul"),
        _node("Greater", ["p", "zero"], ["positive"], "/act/Greater"),
        _node("Mul", ["p", "slope"], ["leak"], "/act/Mul"),
        _node("Where", ["positive", "p", "leak"], ["act"], "/act/Where"),          # x branch p: shared
        _node("Add", ["act", "p"], ["residual"], "/Add"),
        _node("Mul", ["residual", "two"], ["q"], "/gate/Mul"),
        _node("Where", ["positive", "q", "zero"], ["out"], "/gate/Where"),       # q read by this Where alone
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


WHERE_MLIR = '''module attributes {module.name = "g"} {
  func.func @main(%arg0: tensor<1x4x8xf32> loc(unknown)) -> tensor<1x4x8xf32> {
    %0 = "top.None"() : () -> none loc(#loc0)
    %1 = "top.Input"(%arg0) : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc1)
    %2 = "top.Weight"() : () -> tensor<8x8xf32> loc(#loc2)
    %3 = "top.MatMul"(%1, %2, %0) {do_relu = false} : (tensor<1x4x8xf32>, tensor<8x8xf32>, none) -> tensor<1x4x8xf32> loc(#loc3)
    %4 = "top.CompareConst"(%3) {const_val = 0.000000e+00 : f64, mode = "Greater"} : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc4)
    %5 = "top.MulConst"(%3) {const_val = 1.000000e-01 : f64} : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc5)
    %6 = "top.Where"(%4, %3, %5) {x_is_const = false, y_is_const = false} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc6)
    %7 = "top.Add"(%6, %3) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc7)
    %8 = "top.MulConst"(%7) {const_val = 2.000000e+00 : f64} : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc(#loc8)
    %9 = "top.Where"(%4, %8, %0) {x_is_const = false, y_const_val = 0.000000e+00 : f64, y_is_const = true} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, none) -> tensor<1x4x8xf32> loc(#loc9)
    return %9 : tensor<1x4x8xf32> loc(#loc)
  } loc(#loc)
} loc(#loc)
#loc = loc(unknown)
#loc0 = loc(unknown)
#loc1 = loc("x")
#loc2 = loc("W")
#loc3 = loc("p_MatMul")
#loc4 = loc("positive_Greater")
#loc5 = loc("leak_Mul")
#loc6 = loc("act_Where")
#loc7 = loc("residual_Add")
#loc8 = loc("q_Mul")
#loc9 = loc("out_Where")
'''


@pytest.mark.parametrize("float_mode, where_mode", [("BF16", "F32"), ("F16", "F16"), ("F32", "F32")])
def test_a_where_with_a_shared_branch_is_kept_f32_or_f16(float_mode, where_mode):
    """tpu-mlir's SelectiveWhere (convert-top-to-tpu) gives a Where's non-constant branches the Where's calibrated range
    unless the Where is F32 or F16 in the table (BF16 is not enough): p, the projection the residual Add reads too,
    would be requantized to the leaky Where's range (session s26: the softplus guard's, VMamba's dt projection all 0).
    The Where whose branch only it reads is left INT8, and so is p's MatMul: only the Where is named."""
    table = tpu_qtable.quantization_table(shared_branch_where_model(), tpu_qtable.mlir_op_names(WHERE_MLIR), float_mode)
    assert tpu_qtable.format_table(table, "where.onnx") == (
        "# tools.tpu_qtable for where.onnx: ops kept in floating point, the rest INT8\n"
        "# 1 ops: scan 0, decay 0, merge 0, norm 0, exponent 0, kernel 0, where 1\n"
        "# op_name quantize_mode\n"
        f"act_Where {where_mode}\n")


def test_a_where_whose_branch_is_a_graph_output_or_a_constant_node():
    """A branch that is a graph output counts as shared (what leaves the graph would be requantized); a Constant node's
    output is no computed branch (tpu-mlir makes it a constant operand, which SelectiveWhere does not touch)."""
    model = _where_model("c", "leak")
    assert tpu_qtable.precise_nodes(model) == []                      # leak: the Where's alone; c: a constant
    model.graph.output.append(helper.make_tensor_value_info("leak", TensorProto.FLOAT, [1, 4, 8]))
    assert [(p.output, p.why) for p in tpu_qtable.precise_nodes(model)] == [("out", WHERE)]
    del model.graph.output[1]
    model.graph.node[4].input[1] = "p"                                # p: read by Greater and Mul as well
    assert [(p.output, p.why) for p in tpu_qtable.precise_nodes(model)] == [("out", WHERE)]


def test_projections_only_keeps_a_shared_branch_where_f32_too():
    """--qtable projections kept every op in the float mode, the Where too: BF16, so SelectiveWhere still requantized its
    shared branch (s26: --qtable projections was as bad as the auto table on the dynamo graph). The Where's line is F32."""
    table = tpu_qtable.quantization_table(shared_branch_where_model(), tpu_qtable.mlir_op_names(WHERE_MLIR), "BF16",
                                          projections_only=True)
    assert [(name, mode, node.why) for name, mode, node in table] == [
        ("positive_Greater", "BF16", "rest"), ("leak_Mul", "BF16", "rest"), ("act_Where", "F32", WHERE),
        ("residual_Add", "BF16", "rest"), ("q_Mul", "BF16", "rest"), ("out_Where", "BF16", "rest")]


def _where_model(x_branch: str, y_branch: str, made_by=None, constant_read_twice: bool = False):
    """p = MatMul(x, W) read by Greater, Mul (leak) and the Where(positive, x_branch, y_branch); `constant_read_twice`: a
    Constant node c read by the Where and by a Mul too."""
    f = np.float32
    nodes = [
        _node("MatMul", ["x", "W"], ["p"], "/proj/MatMul"),
        _node("Greater", ["p", "zero"], ["positive"], "/act/Greater"),
        _node("Mul", ["p", "slope"], ["leak"], "/act/Mul"),
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((1, 4, 8), f))),
        _node("Where", ["positive", x_branch, y_branch], ["out"], "/act/Where", made_by=made_by),
    ]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8])]
    if constant_read_twice:
        nodes.append(_node("Mul", ["c", "slope"], ["c_scaled"], "/other/Mul"))
        outputs.append(helper.make_tensor_value_info("c_scaled", TensorProto.FLOAT, [1, 4, 8]))
    initializers = [numpy_helper.from_array(np.ones((8, 8), f), "W"), numpy_helper.from_array(np.zeros((), f), "zero"),
                    numpy_helper.from_array(np.array(0.1, f), "slope")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_where_rule_reads_the_y_branch_constant_nodes_read_twice_and_comes_before_the_scan():
    """The where rule's edges (session s28's mutants): a shared y branch (every earlier test shared the x branch); a
    Constant node's output read by another node too is still a constant; a Where that reroll-scans made, with a shared
    branch, is 'where' (its mode differs from the scan's float mode), not 'scan'."""
    assert [(p.output, p.why) for p in tpu_qtable.precise_nodes(_where_model("leak", "p"))] == [("out", WHERE)]
    assert [(p.output, p.why) for p in tpu_qtable.precise_nodes(_where_model("leak", "c"))] == []
    assert [(p.output, p.why) for p in tpu_qtable.precise_nodes(_where_model("c", "leak", constant_read_twice=True))] == []
    made_by_scan = _where_model("p", "leak", made_by="reroll-scans")
    assert [(p.output, p.why) for p in tpu_qtable.precise_nodes(made_by_scan)] == [("out", WHERE)]
    assert [(p.output, p.why) for p in tpu_qtable.precise_nodes(_where_model("c", "leak", made_by="reroll-scans"))] == [
        ("out", SCAN)]
    table = tpu_qtable.quantization_table(made_by_scan, ["positive_Greater", "leak_Mul", "out_Where"], "BF16")
    assert [(name, mode, node.why) for name, mode, node in table] == [("out_Where", "F32", WHERE)]

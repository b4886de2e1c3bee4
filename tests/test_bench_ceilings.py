"""tools.bench_ceilings: each variant frees exactly the kind of node it names, and nothing else moves.

The ceilings in docs/BENCHMARKS.md (issue #13, session s36) are only as good as the variants: a flip left in place, a
swap freed that is no swap, or weights filled back into the wrong inputs would make a ceiling wrong without a word.
"""
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from passes.relative_error import relative_l2
from tools import bench_ceilings as tool


@pytest.fixture(scope="module")
def cpu_graph(micro_naive, tmp_path_factory):
    from pipelines import compile_model

    out = tmp_path_factory.mktemp("ceilings") / "cpu.onnx"
    compile_model(micro_naive, "cpu", output=out)
    return out


@pytest.fixture(scope="module")
def variants(cpu_graph, tmp_path_factory):
    folder = tmp_path_factory.mktemp("variants") / "v"
    assert tool.main([str(cpu_graph), "--out", str(folder)]) == 0
    return folder


def histogram(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(path).graph.node)


def negative_step_slices(model) -> int:
    constants = tool._constants(model)
    return sum(1 for node in model.graph.node if node.op_type == "Slice" and len(node.input) > 4
               and (constants[node.input[4]] < 0).any())


def test_each_variant_frees_its_kind_and_nothing_else(cpu_graph, variants):
    compiled = onnx.load(cpu_graph)
    blocks = Counter(node.op_type for node in compiled.graph.node)["Log"]   # one softplus per SS2D block
    assert blocks >= 2
    assert negative_step_slices(compiled) == 3 * blocks   # two flips at the cross-scan, one at the merge
    v = [histogram(variants / f"{name}.onnx") for name in tool.VARIANTS]
    assert v[0] == Counter(node.op_type for node in compiled.graph.node)
    assert v[1] == v[0] and negative_step_slices(onnx.load(variants / "v1-no-flips.onnx")) == 0
    swaps = v[2]["Identity"]
    assert swaps == 2 * blocks   # the cross-scan's H/W swap and the merge's swap back, each block
    assert v[2] - v[1] == Counter({"Identity": swaps})
    assert (v[1] - v[2]).total() == swaps and set(v[1] - v[2]) <= {"Transpose", "MatMul"}
    assert v[3] - v[2] == Counter({"Reshape": 2 * blocks}) and v[2] - v[3] == Counter({"Transpose": 2 * blocks})
    assert v[4] - v[3] == Counter({"Identity": blocks}) and v[3] - v[4] == Counter({"Log": blocks})


def test_the_weights_left_out_are_inputs_and_filled_back_give_the_compiled_numbers(cpu_graph, variants):
    compiled = onnx.load(cpu_graph)
    weights = {init.name: numpy_helper.to_array(init) for init in compiled.graph.initializer}
    image = np.random.default_rng(0).normal(0, 1, [d.dim_value for d in compiled.graph.input[0].type.tensor_type.shape.dim])
    feeds = {compiled.graph.input[0].name: image.astype(np.float32)}
    expected = ort.InferenceSession(str(cpu_graph), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    outputs = {}
    for name in tool.VARIANTS:
        session = ort.InferenceSession(str(variants / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        left_out = [spec.name for spec in session.get_inputs()][1:]
        assert all(weights[input_name].size > tool.LARGE_WEIGHT for input_name in left_out)
        outputs[name] = session.run(None, {**feeds, **{n: weights[n] for n in left_out}})[0]
    assert left_out   # (micro's MLP weights are over 4,096 values)
    # (not bit for bit: weights fed as inputs are not prepacked or folded by ONNX Runtime as initializers are)
    assert relative_l2(outputs["v0-as-compiled"], expected) <= 1e-6
    for name in tool.VARIANTS[1:]:   # each freeing changes the numbers: the nodes freed were live
        assert outputs[name].shape == expected.shape and relative_l2(outputs[name], expected) > 1e-3


def test_the_spec_holds_each_weight_left_out_with_its_shape_mean_and_std(cpu_graph, variants):
    import json

    spec = json.loads((variants / tool.SPEC).read_text())
    weights = {init.name: numpy_helper.to_array(init) for init in onnx.load(cpu_graph).graph.initializer}
    assert spec and set(spec) <= set(weights)
    for name, (shape, mean, std) in spec.items():
        assert shape == list(weights[name].shape)
        assert mean == pytest.approx(float(weights[name].mean()), rel=1e-6, abs=1e-9)
        assert std == pytest.approx(float(weights[name].std()), rel=1e-6)


def test_timing_prints_every_variant_against_v0(variants, capsys):
    assert tool.main(["--time", str(variants), "--rounds", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# ONNX Runtime ") and ", 1 threads, spinning off, 1 interleaved rounds;" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == list(tool.VARIANTS)
    assert lines[1].endswith(" 1.000x v0")


def test_bad_uses_are_one_line_and_exit_2(cpu_graph, variants, tmp_path, capsys):
    planted = tmp_path / "v0-as-compiled.onnx"
    planted.write_bytes(cpu_graph.read_bytes())
    assert tool.main([str(planted), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: --out {tmp_path / 'v0-as-compiled.onnx'} is the model {planted}, which this run reads; refusing to "
        "overwrite it\n")
    assert planted.read_bytes() == cpu_graph.read_bytes()
    with pytest.raises(SystemExit) as refused:
        tool.main(["--time", str(tmp_path)])
    assert refused.value.code == 2
    assert "lacks v1-no-flips.onnx, v2-no-flips-swaps.onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main([str(cpu_graph)])
    assert "give a model and --out (or --time DIR)" in capsys.readouterr().err
    assert tool.main([str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_rounds_run_every_variant_once_each_in_a_rotated_order():
    order = list(tool.interleaved(("a", "b", "c"), 4))
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]


def _plane_model(nodes, inputs, initializers=()):
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
                                           for name, shape in inputs],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
                              list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_only_square_plane_swaps_and_permutation_matmuls_are_freed():
    from onnx import helper

    permutation = np.eye(4, dtype=np.float32)[[1, 0, 3, 2]]
    model = _plane_model(
        [helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 1, 3, 2]),        # square plane: a swap
         helper.make_node("Transpose", ["y"], ["t2"], perm=[0, 1, 3, 2]),        # 2 x 3 plane: a reshape of data, kept
         helper.make_node("Transpose", ["x"], ["t3"], perm=[0, 2, 1, 3]),        # not the last two axes: kept
         helper.make_node("MatMul", ["x", "perm"], ["m1"]),                      # by a permutation: freed
         helper.make_node("MatMul", ["x", "eye"], ["m2"]),                       # by the identity: kept
         helper.make_node("MatMul", ["x", "dense"], ["m3"]),                     # kept
         helper.make_node("Concat", ["t1", "t3", "m1", "m2", "m3"], ["out"], axis=1)],
        [("x", [1, 2, 4, 4]), ("y", [1, 2, 2, 3])],
        [numpy_helper.from_array(permutation, "perm"), numpy_helper.from_array(np.eye(4, dtype=np.float32), "eye"),
         numpy_helper.from_array(np.full((4, 4), 0.25, np.float32), "dense")])
    assert tool.free_swaps(model) == 2
    assert [node.op_type for node in model.graph.node] == ["Identity", "Transpose", "Transpose", "Identity", "MatMul",
                                                           "MatMul", "Concat"]


def test_only_the_layout_transposes_of_the_ss2d_region_are_freed():
    from onnx import helper

    weight = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "depthwise")
    dense = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "dense")
    scale = numpy_helper.from_array(np.ones(4, np.float32), "scale")
    model = _plane_model(
        [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 3, 1, 2]),         # to a depthwise Conv: freed
         helper.make_node("Conv", ["a", "depthwise"], ["c1"], group=4, pads=[1, 1, 1, 1]),
         helper.make_node("Transpose", ["x"], ["b"], perm=[0, 3, 1, 2]),         # to a dense Conv: kept
         helper.make_node("Conv", ["b", "dense"], ["c2"]),
         helper.make_node("Reshape", ["c1", "shape"], ["r"]),
         helper.make_node("Transpose", ["r"], ["n1"], perm=[0, 2, 3, 1]),        # a Reshape's, to LayerNorm: freed
         helper.make_node("LayerNormalization", ["n1", "scale"], ["l1"], axis=-1),
         helper.make_node("Transpose", ["c2"], ["n2"], perm=[0, 2, 3, 1]),       # a Conv's, to LayerNorm: kept
         helper.make_node("LayerNormalization", ["n2", "scale"], ["l2"], axis=-1),
         helper.make_node("Add", ["l1", "l2"], ["out"])],
        [("x", [1, 5, 5, 4])],
        [weight, dense, scale, numpy_helper.from_array(np.array([1, 4, 5, 5], np.int64), "shape")])
    assert tool.free_layout(model) == 2
    assert [node.op_type for node in model.graph.node] == ["Reshape", "Conv", "Transpose", "Conv", "Reshape", "Reshape",
                                                           "LayerNormalization", "Transpose", "LayerNormalization", "Add"]


@pytest.mark.parametrize("spoiled, message", [
    ("v2-no-flips-swaps.onnx", "INVALID_PROTOBUF"),
    ("weights.json", "cannot unpack non-iterable int object"),
])
def test_a_spoiled_variants_folder_is_one_line_and_exit_2(variants, tmp_path, capsys, spoiled, message):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(variants, folder)
    (folder / spoiled).write_text('{"w": 3}' if spoiled.endswith(".json") else "garbage")
    assert tool.main(["--time", str(folder), "--rounds", "1", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder}: ") and message in err and err.count("\n") == 1


def test_a_failure_part_way_writes_no_variant_and_keeps_the_folder_as_it_was(cpu_graph, variants, tmp_path,
                                                                             monkeypatch, capsys):
    import shutil

    folder = tmp_path / "kept"
    shutil.copytree(variants, folder)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    def fails(model):
        raise ValueError("no Log to free here")

    monkeypatch.setattr(tool, "free_logs", fails)
    assert tool.main([str(cpu_graph), "--out", str(folder)]) == 2   # the last step fails, after four variants made
    assert capsys.readouterr().err == f"error: {cpu_graph}: no Log to free here\n"
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before   # no temporaries left either
    assert tool.main([str(cpu_graph), "--out", str(tmp_path / "new" / "v")]) == 2
    assert not (tmp_path / "new").exists()

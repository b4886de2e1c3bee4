"""opset18-to-17: an opset-18 graph written as opset 17 where every node allows it (tpu-mlir 1.30.2 refuses opset 18's
ReduceMean: "Unsupport opset for ReduceMean", s24 on hf-mamba2-dynamo); exact op lists and attributes after, outputs
bit for bit equal in ONNX Runtime, and what has no opset-17 spelling left at 18 and named, by it and by tpu-legality."""
from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from passes.base import PassContext
from passes.graph_io import ModelMeta, graph_to_model
from passes.opset18_to_17 import Opset18To17
from passes.tpu_legality import AXES_INPUT_RULE, find_violations
from scan_testing import op_histogram, run

RNG = np.random.default_rng(18)


def lower(model: onnx.ModelProto):
    """Run the pass as the pipelines do (graph_to_model with the input model's meta); the full checker on the result."""
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    result = Opset18To17().run(graph, PassContext(opset=18))
    out = graph_to_model(graph, ModelMeta.from_model(model))
    onnx.checker.check_model(out, full_check=True)
    return out, result


def nodes(model: onnx.ModelProto) -> list[tuple]:
    """(op, input count, attributes) of every node, in order."""
    return [(node.op_type, len(node.input), {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
            for node in model.graph.node]


def test_the_dynamo_rms_norm_reducemean_gets_its_axes_back_as_an_attribute():
    """x * 1/sqrt(mean(x^2, -1) + eps), as the dynamo exporter writes Mamba2's RMS norm (IR 10, opset 18)."""
    model = onnx.parser.parse_model("""
    <ir_version: 10, opset_import: ["" : 18]>
    g (float[2,3,8] x) => (float[2,3,8] y) {
      two = Constant<value = float {2.0}>()
      eps = Constant<value = float {1e-6}>()
      axes = Constant<value = int64[1] {-1}>()
      square = Pow(x, two)
      mean = ReduceMean<keepdims = 1, noop_with_empty_axes = 0>(square, axes)
      shifted = Add(mean, eps)
      root = Sqrt(shifted)
      scale = Reciprocal(root)
      y = Mul(x, scale)
    }""")
    out, result = lower(model)
    assert result.stats == {"lowered": 1, "respelled": 1}
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 17)] and out.ir_version == 8
    assert op_histogram(out) == {"Add": 1, "Constant": 2, "Mul": 1, "Pow": 1, "Reciprocal": 1, "ReduceMean": 1, "Sqrt": 1}
    assert [entry for entry in nodes(out) if entry[0] == "ReduceMean"] == [("ReduceMean", 1, {"keepdims": 1, "axes": [-1]})]
    x = RNG.standard_normal((2, 3, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(model, {"x": x})[0])
    assert AXES_INPUT_RULE in find_violations(gs.import_onnx(model))
    assert AXES_INPUT_RULE not in find_violations(gs.import_onnx(out))


def test_every_reduction_split_and_pad_spelled_in_17_exactly():
    """Reductions with axes inputs (and one without: every axis), Split by num_outputs (even, and uneven: sizes as an
    input, the last piece smaller), Pad with axes (pads over every axis); ReduceSum unchanged (axes an input since 13)."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[2,5,6] x) => (float[2,1,6] a, float[2,5] b, float[2,6] c, float[2,5] d, float[2,5,1] e, float y,
                           float[1,5,6] f, float[2,2,6] s0, float[2,2,6] s1, float[2,1,6] s2, float[2,5,3] t0,
                           float[2,5,3] t1, float[2,5,9] p) {
      ax1 = Constant<value = int64[1] {1}>()
      ax2 = Constant<value = int64[1] {-1}>()
      ax0 = Constant<value = int64[1] {0}>()
      pads = Constant<value = int64[2] {1, 2}>()
      a = ReduceMax<keepdims = 1>(x, ax1)
      b = ReduceL2<keepdims = 0>(x, ax2)
      c = ReduceLogSumExp<keepdims = 0>(x, ax1)
      d = ReduceSumSquare<keepdims = 0>(x, ax2)
      e = ReduceMin<keepdims = 1>(x, ax2)
      y = ReduceProd<keepdims = 0>(x)
      f = ReduceSum<keepdims = 1>(x, ax0)
      s0, s1, s2 = Split<axis = 1, num_outputs = 3>(x)
      t0, t1 = Split<axis = 2, num_outputs = 2>(x)
      p = Pad<mode = "constant">(x, pads, , ax2)
    }""")
    out, result = lower(model)
    assert result.stats == {"lowered": 1, "respelled": 9}
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 17)]
    assert op_histogram(out) == {"Constant": 1, "Pad": 1, "ReduceL2": 1, "ReduceLogSumExp": 1, "ReduceMax": 1, "ReduceMin": 1,
                                 "ReduceProd": 1, "ReduceSum": 1, "ReduceSumSquare": 1, "Split": 2}
    by_output = {node.output[0]: node for node in out.graph.node}
    assert {node.output[0]: entry for node, entry in zip(out.graph.node, nodes(out)) if node.op_type != "Constant"} == {
        "a": ("ReduceMax", 1, {"keepdims": 1, "axes": [1]}), "b": ("ReduceL2", 1, {"keepdims": 0, "axes": [-1]}),
        "c": ("ReduceLogSumExp", 1, {"keepdims": 0, "axes": [1]}),
        "d": ("ReduceSumSquare", 1, {"keepdims": 0, "axes": [-1]}), "e": ("ReduceMin", 1, {"keepdims": 1, "axes": [-1]}),
        "y": ("ReduceProd", 1, {"keepdims": 0}), "f": ("ReduceSum", 2, {"keepdims": 1}),
        "s0": ("Split", 2, {"axis": 1}), "t0": ("Split", 1, {"axis": 2}), "p": ("Pad", 2, {"mode": b"constant"})}
    split_sizes = onnx.numpy_helper.to_array(next(i for i in out.graph.initializer if i.name == by_output["s0"].input[1]))
    pads = onnx.numpy_helper.to_array(next(i for i in out.graph.initializer if i.name == by_output["p"].input[1]))
    assert split_sizes.tolist() == [2, 2, 1] and pads.tolist() == [0, 0, 1, 0, 0, 2]
    x = RNG.standard_normal((2, 5, 6)).astype(np.float32)
    for before, after in zip(run(model, {"x": x}), run(out, {"x": x})):
        np.testing.assert_array_equal(after, before)


def test_what_has_no_opset_17_spelling_leaves_the_graph_at_18_and_named():
    """A ReduceMean whose axes are computed, and a Mish (new in 18): nothing changes, both are named;
    tpu-legality names the ReduceMean (what the user would otherwise meet as exit 3 in model_transform)."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[2,4,6] x, int64[1] axes) => (float[2,4,1] m, float[2,4,6] n) {
      m = ReduceMean<keepdims = 1>(x, axes)
      n = Mish(x)
    }""")
    out, result = lower(model)
    assert result.changed is False and result.stats == {"lowered": 0, "refused": 2}
    assert result.notes == ["left at opset 18: 2 node(s) without an opset-17 spelling (ReduceMean '': its axes input "
                            "is not a constant; Mish '': new or changed in opset 18, without an opset-17 "
                            "spelling here)"]
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 18)] and nodes(out) == nodes(model)
    assert find_violations(gs.import_onnx(out))[AXES_INPUT_RULE] == [
        "ReduceMean '': model_transform: \"Unsupport opset for ReduceMean\""]


def test_other_opsets_are_left_alone():
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,4] x) => (float[2,1] y) {
      y = ReduceMean<axes = [1]>(x)
    }""")
    out, result = lower(model)
    assert result.changed is False and result.notes == ["opset 17, not 18: left as it is"]
    assert nodes(out) == nodes(model) and out.ir_version == 8


def refuse(model: onnx.ModelProto):
    """Run the pass on a graph it should leave at 18 (no checker: some of these graphs are opset-18-only spellings)."""
    def shown(m):   # Constants' values as arrays, subgraphs as their op lists (the round trip may respell both)
        return sorted(repr((op, count, {k: onnx.numpy_helper.to_array(v).tolist() if k == "value" else
                                        [n.op_type for n in v.node] if isinstance(v, onnx.GraphProto) else v
                                        for k, v in attrs.items()})) for op, count, attrs in nodes(m))
    graph = gs.import_onnx(model)
    result = Opset18To17().run(graph, PassContext(opset=18))
    out = graph_to_model(graph, ModelMeta.from_model(model))
    assert result.changed is False and shown(out) == shown(model)
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 18)]
    return result


def test_resize_scatter_and_lppool_lose_only_the_attributes_opset_17_lacks():
    """Resize with antialias=0 or keep_aspect_ratio_policy=stretch (each alone, and both) loses them; a Resize, a
    LpPool and Scatters of reductions none/add/mul already spelled in 17 are not counted as respelled; LpPool's
    ceil_mode=0 goes; a ReduceMean with axes and noop_with_empty_axes=0 or 1 loses the attribute (it only speaks of
    empty axes). Every output bit for bit as before."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[1,2,4,4] x, int64[2,4] i, float[2,4] u) => (float[1,2,8,8] r0, float[1,2,8,8] r1, float[1,2,8,8] r2,
                           float[1,2,8,8] r3, float[1,2,3,3] l0, float[1,2,3,3] l1, float[2,4] s0, float[2,4] s1,
                           float[2,4] s2, float[2,4] s3, float[1,2,4,1] m0, float[1,1,4,4] m1) {
      scales = Constant<value = float[4] {1.0, 1.0, 2.0, 2.0}>()
      ax = Constant<value = int64[1] {3}>()
      ax1 = Constant<value = int64[1] {1}>()
      flat = Reshape(x, shape)
      shape = Constant<value = int64[2] {2, 16}>()
      r0 = Resize<mode = "nearest", antialias = 0>(x, , scales)
      r1 = Resize<mode = "nearest", keep_aspect_ratio_policy = "stretch">(x, , scales)
      r2 = Resize<mode = "linear", antialias = 0, keep_aspect_ratio_policy = "stretch">(x, , scales)
      r3 = Resize<mode = "nearest">(x, , scales)
      l0 = LpPool<kernel_shape = [2, 2], p = 2, ceil_mode = 0>(x)
      l1 = LpPool<kernel_shape = [2, 2], p = 1>(x)
      data = Slice(flat, zero, four, one)
      zero = Constant<value = int64[1] {0}>()
      four = Constant<value = int64[1] {4}>()
      one = Constant<value = int64[1] {1}>()
      s0 = ScatterElements<axis = 1, reduction = "add">(u, i, u)
      s1 = ScatterElements<axis = 1, reduction = "mul">(u, i, u)
      s2 = ScatterElements<axis = 1>(u, i, u)
      s3 = ScatterElements<axis = 1, reduction = "none">(u, i, u)
      m0 = ReduceMean<keepdims = 1, noop_with_empty_axes = 1>(x, ax)
      m1 = ReduceMax<keepdims = 1, noop_with_empty_axes = 0>(x, ax1)
    }""")
    out, result = lower(model)
    assert result.changed is True and result.stats == {"lowered": 1, "respelled": 6}
    got = {node.output[0]: entry for node, entry in zip(out.graph.node, nodes(out))}
    assert {name: got[name] for name in ("r0", "r1", "r2", "r3", "l0", "l1", "s0", "s1", "s2", "s3", "m0", "m1")} == {
        "r0": ("Resize", 3, {"mode": b"nearest"}), "r1": ("Resize", 3, {"mode": b"nearest"}),
        "r2": ("Resize", 3, {"mode": b"linear"}), "r3": ("Resize", 3, {"mode": b"nearest"}),
        "l0": ("LpPool", 1, {"kernel_shape": [2, 2], "p": 2}), "l1": ("LpPool", 1, {"kernel_shape": [2, 2], "p": 1}),
        "s0": ("ScatterElements", 3, {"axis": 1, "reduction": b"add"}),
        "s1": ("ScatterElements", 3, {"axis": 1, "reduction": b"mul"}),
        "s2": ("ScatterElements", 3, {"axis": 1}), "s3": ("ScatterElements", 3, {"axis": 1, "reduction": b"none"}),
        "m0": ("ReduceMean", 1, {"keepdims": 1, "axes": [3]}), "m1": ("ReduceMax", 1, {"keepdims": 1, "axes": [1]})}
    feeds = {"x": RNG.standard_normal((1, 2, 4, 4)).astype(np.float32),
             "i": np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.int64),
             "u": RNG.standard_normal((2, 4)).astype(np.float32)}
    for before, after in zip(run(model, feeds), run(out, feeds)):
        np.testing.assert_array_equal(after, before)


def test_a_scatternd_of_reduction_add_and_a_pad_without_axes_are_kept_as_they_are():
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[4,3] u, int64[2,1] i, float[2,3] v) => (float[4,3] y, float[4,3] z, float[6,3] p) {
      y = ScatterND<reduction = "add">(u, i, v)
      z = ScatterND(u, i, v)
      pads = Constant<value = int64[4] {1, 0, 1, 0}>()
      cv = Constant<value = float {2.0}>()
      p = Pad(u, pads, cv)
    }""")
    out, result = lower(model)
    assert result.changed is True and result.stats == {"lowered": 1, "respelled": 0}
    assert nodes(out) == nodes(model) and [(o.domain, o.version) for o in out.opset_import] == [("", 17)]


def test_every_refusal_names_its_node_and_reason_and_counts_the_rest():
    """One node of each reason: the first three named, the others counted (a 4th would show with `[:4]`)."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[1,2,4,4] x, int64[2] p, float[2,N] w, float[6,4] v) =>
        (float[1,2,8,8] a, float[1,2,8,8] b, float[1,2,8,8] c, float[1,2,8,8] d, float[1,2,3,3] e, float[1,2,4,4] f,
         float[1,2,4,4] g1, float[2,N] h) {
      scales = Constant<value = float[4] {1.0, 1.0, 2.0, 2.0}>()
      ax = Constant<value = int64[1] {3}>()
      two = Constant<value = int64[2] {1, 1}>()
      a = Resize<mode = "linear", antialias = 1>(x, , scales)
      b = Resize<mode = "nearest", keep_aspect_ratio_policy = "not_larger">(x, , scales)
      c = Resize<mode = "nearest", axes = [2, 3]>(x, , scales2)
      scales2 = Constant<value = float[2] {2.0, 2.0}>()
      d = Resize<mode = "nearest", antialias = 1, keep_aspect_ratio_policy = "stretch">(x, , scales)
      e = LpPool<kernel_shape = [2, 2], ceil_mode = 1>(x)
      f = ReduceMean<noop_with_empty_axes = 1>(x)
      g1 = Pad(x, p, , ax)
      h = ScatterElements<axis = 1, reduction = "max">(w, wi, w)
      wi = Constant<value = int64[2,1] {0, 0}>()
    }""")
    result = refuse(model)
    assert result.stats == {"lowered": 0, "refused": 8}
    assert result.notes == ["left at opset 18: 8 node(s) without an opset-17 spelling (Resize '': antialias, "
                            "keep_aspect_ratio_policy or axes (new in 18) set; Resize '': antialias, "
                            "keep_aspect_ratio_policy or axes (new in 18) set; Resize '': antialias, "
                            "keep_aspect_ratio_policy or axes (new in 18) set and 5 more)"]
    for op_line, reason in [
            ('e = LpPool<kernel_shape = [2, 2], ceil_mode = 1>(x)', "LpPool '': ceil_mode=1 (new in 18)"),
            ('e = ReduceMean<noop_with_empty_axes = 1>(x)',
             "ReduceMean '': noop_with_empty_axes=1 with no axes (no opset-17 spelling)"),
            ('e = Pad(x, p, , ax)', "Pad '': its axes or pads input is not a constant"),
            ('e = ScatterElements<axis = 1, reduction = "max">(x, wi, x)', "ScatterElements '': reduction=max (new in 18)"),
            ('e = ScatterND<reduction = "min">(x, ni, x4)', "ScatterND '': reduction=min (new in 18)"),
            ('e = Split<axis = 1, num_outputs = 2>(x, sp)', "Split '': both a split input and num_outputs"),
            ('e = Split<axis = 1, num_outputs = 2>(w)', "Split '': num_outputs on an input of unknown shape"),
            ('e = Split<axis = 2, num_outputs = 4>(v)', "Split '': num_outputs=4 cuts an axis of 6 into 3, not its 4 outputs"),
            ('e = Pad(w, q, , ax)', "Pad '': axes on an input of unknown rank")]:
        outputs = "e, e1, e2, e3" if "num_outputs = 4" in op_line else "e, e1" if "num_outputs" in op_line else "e"
        single = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[1,2,4,4] x, int64[2] p, float[2,N] w, float[1,1,6] v, float[2] w2) => (float e) {{
          ax = Constant<value = int64[1] {{3}}>()
          wi = Constant<value = int64[1,2,4,4] {{{', '.join(['0'] * 32)}}}>()
          ni = Constant<value = int64[1,1] {{0}}>()
          x4 = Constant<value = float[2,4,4] {{{', '.join(['1.0'] * 32)}}}>()
          sp = Constant<value = int64[2] {{1, 1}}>()
          q = Constant<value = int64[2] {{1, 1}}>()
          {op_line.replace('e = ', outputs + ' = ', 1)}
        }}""")
        if "(w, q" in op_line:   # a Pad of an input of no shape at all
            single.graph.input[2].type.tensor_type.ClearField("shape")
        result = refuse(single)
        assert result.stats == {"lowered": 0, "refused": 1}
        assert result.notes == [f"left at opset 18: 1 node(s) without an opset-17 spelling ({reason})"], op_line


@pytest.mark.parametrize("count, more", [(3, ""), (4, " and 1 more")])
def test_three_refusals_are_all_named_and_a_fourth_is_counted(count, more):
    model = onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[2,4] x) => ({', '.join(f'float[2,4] y{k}' for k in range(count))}) {{
      {' '.join(f'y{k} = Mish(x)' for k in range(count))}
    }}""")
    mish = "Mish '': new or changed in opset 18, without an opset-17 spelling here"
    assert refuse(model).notes == [f"left at opset 18: {count} node(s) without an opset-17 spelling "
                                   f"({mish}; {mish}; {mish}{more})"]


def test_splits_and_pads_name_their_constants_after_the_node_or_its_output_and_keep_a_pad_value():
    """An uneven Split with an empty split input (''), named and unnamed; a Split of a zero-length axis; an explicit
    empty axes input trimmed off a Pad; two axes whose pads are all different; a Pad's constant_value kept."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[5,6] x, float[0,4] z) => (float[2,6] a0, float[2,6] a1, float[1,6] a2, float[5,2] b0, float[5,2] b1,
                                      float[5,2] b2, float[0,4] z0, float[0,4] z1, float[8,11] p, float[7,7] q,
                                      float[5,9] r) {
      a0, a1, a2 = Split<num_outputs = 3>(x, )
      b0, b1, b2 = Split<axis = 1, num_outputs = 3>(x, )
      z0, z1 = Split<axis = 0, num_outputs = 2>(z)
      pads = Constant<value = int64[4] {1, 0, 2, 5}>()
      axes = Constant<value = int64[2] {0, -1}>()
      cv = Constant<value = float {3.5}>()
      p = Pad(x, pads, cv, axes)
      pads2 = Constant<value = int64[4] {1, 1, 1, 0}>()
      q = Pad(x, pads2, , )
      axes1 = Constant<value = int64[1] {1}>()
      pads1 = Constant<value = int64[2] {1, 2}>()
      r = Pad(x, pads1, , axes1)
    }""")
    model.graph.node[0].input.append("")   # a0.. = Split(x, ''), q = Pad(x, pads2, '', ''): the parser drops a
    model.graph.node[8].input.append("")   # trailing empty input
    assert model.graph.node[8].output == ["q"] and len(model.graph.node[8].input) == 4
    named = onnx.ModelProto()
    named.CopyFrom(model)
    named.graph.node[0].name, named.graph.node[6].name = "cut", "frame"
    for case, split_name, pad_name in [(model, "a0_split_sizes", "p_pads"), (named, "cut_split_sizes", "frame_pads")]:
        out, result = lower(case)
        assert result.stats == {"lowered": 1, "respelled": 6}
        by_output = {node.output[0]: node for node in out.graph.node}
        got = {node.output[0]: entry for node, entry in zip(out.graph.node, nodes(out))}
        assert [got[name] for name in ("a0", "b0", "z0", "p", "q", "r")] == [
            ("Split", 2, {}), ("Split", 1, {"axis": 1}), ("Split", 1, {"axis": 0}), ("Pad", 3, {}), ("Pad", 3, {}),
            ("Pad", 2, {})]
        assert list(by_output["a0"].input) == ["x", split_name] and by_output["p"].input[1] == pad_name
        assert list(by_output["q"].input) == ["x", "pads2", ""] and list(by_output["b0"].input) == ["x"]
        constants = {i.name: onnx.numpy_helper.to_array(i).tolist() for i in out.graph.initializer}
        assert constants[split_name] == [2, 2, 1] and constants[pad_name] == [1, 0, 2, 5]
        assert constants[by_output["r"].input[1]] == [0, 1, 0, 2]
        x = RNG.standard_normal((5, 6)).astype(np.float32)
        feeds = {"x": x, "z": np.zeros((0, 4), np.float32)}
        for before, after in zip(run(model, feeds), run(out, feeds)):
            np.testing.assert_array_equal(after, before)
        assert run(out, feeds)[8][0, 0] == np.float32(3.5)


def test_subgraphs_local_functions_and_other_domains():
    """A subgraph or a local function: left at 18 with its note; nodes of other domains are skipped, not the end of
    the walk (a Mish of its own domain is not ONNX's); other domains' imports keep their versions."""
    branch = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (bool c, float[2,4] x) => (float[2,4] y) {
      y = If(c) <then_branch = t () => (float[2,4] a) { a = Identity(x) },
                 else_branch = e () => (float[2,4] b) { b = Neg(x) }>
    }""")
    result = refuse(branch)
    assert result.stats == {"lowered": 0} and result.notes == ["a local function or subgraph: left at opset 18"]
    function = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18, "local" : 1]>
    g (float[2,4] x) => (float[2,4] y) {
      y = local.twice(x)
    }
    <domain: "local", opset_import: ["" : 18]>
    twice (a) => (b) { b = Add(a, a) }""")
    graph = gs.import_onnx(function)
    result = Opset18To17().run(graph, PassContext(opset=18))
    assert result.changed is False and result.stats == {"lowered": 0}
    assert result.notes == ["a local function or subgraph: left at opset 18"] and graph.opset == 18
    mixed = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18, "custom" : 3]>
    g (float[2,4] x) => (float[2,4] g1, float[2,1] m, float[2,1] n) {
      g1 = custom.Mish(x)
      ax = Constant<value = int64[1] {1}>()
      m = ReduceMean<keepdims = 1>(x, ax)
      n = ReduceMax<keepdims = 1>(x, ax)
    }""")
    graph = gs.import_onnx(mixed)
    result = Opset18To17().run(graph, PassContext(opset=18))
    assert result.changed is True and result.stats == {"lowered": 1, "respelled": 2}
    out = graph_to_model(graph, ModelMeta.from_model(mixed))
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 17), ("custom", 3)]
    assert [(node.op_type, len(node.input)) for node in out.graph.node] == [("Mish", 1), ("ReduceMean", 1),
                                                                           ("ReduceMax", 1)]


def test_other_opsets_are_left_alone_with_nothing_counted():
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[2,4] x) => (float[2,4] y) { y = Relu(x) }""")
    result = Opset18To17().run(gs.import_onnx(model), PassContext(opset=13))
    assert result.changed is False and result.stats == {"lowered": 0}
    assert result.notes == ["opset 13, not 18: left as it is"]


def test_changed_in_opset_18_names_exactly_the_ops_whose_version_is_18():
    from passes.opset18_to_17 import changed_in_opset_18
    assert [op for op in ("ReduceMean", "Split", "Pad", "Mish", "Relu", "ReduceSum", "MatMul", "NoSuchOp", "Gelu")
            if changed_in_opset_18(op)] == ["ReduceMean", "Split", "Pad", "Mish"]


def test_a_pad_onnx_runtime_refuses_is_not_respelled_into_one_it_runs(tmp_path):
    """adv12: a Pad whose constant axes name an axis past the rank, one axis twice, or come with pads of another
    length than two per axis (ONNX Runtime refuses each at opset 18) was read as given (axis % rank, the last of two
    pads kept): with --verify none, an opset-17 Pad that ONNX Runtime runs was written, exit 0. Now it is left at 18."""
    import pytest
    from test_cli import apply_cli
    import onnxruntime as ort
    for axes, pads in (([3], [1, 1]), ([1, 1], [1, 2, 1, 2]), ([1, -1], [1, 2, 1, 2]), ([1], [1, 1, 1])):
        model = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[2,4] x) => (float[a,b] y) {{
          p = Constant<value = int64[{len(pads)}] {{{", ".join(map(str, pads))}}}>()
          ax = Constant<value = int64[{len(axes)}] {{{", ".join(map(str, axes))}}}>()
          y = Pad(x, p, , ax)
        }}""")
        path, out = tmp_path / "pad.onnx", tmp_path / "out.onnx"
        onnx.save(model, path)
        with pytest.raises(Exception, match="Pad"):
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        result = apply_cli(path, "--pipeline", "opset18-to-17", "--verify", "none", "-o", out, "--explain")
        assert result.returncode == 0, result.stderr
        assert "left at opset 18: 1 node(s) without an opset-17 spelling" in result.stdout + result.stderr, axes
        assert onnx.load(out).opset_import[0].version == 18 and onnx.load(out).graph.node[-1].op_type == "Pad"
        out.unlink()


def test_a_new_constant_never_takes_the_name_of_a_tensor_the_model_has(tmp_path):
    """adv12: a Pad named 'pd' beside a graph input named 'pd_pads': the pass named its new pads 'pd_pads' too, and
    ONNX Runtime then read the float input as the Pad's pads (exit 3, 'Type 'tensor(float)' of input parameter
    (pd_pads) ... is invalid'); likewise a Split's sizes. The new constants take free names."""
    from test_cli import apply_cli
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[2,5] x, float[2] pd_pads, float[2] sp_split_sizes) => (float[2,7] px, float[2,3] a, float[2,2] b,
                                                                     float[2] q, float[2] r) {
      p1 = Constant<value = int64[2] {1, 1}>()
      ax = Constant<value = int64[1] {1}>()
      px = Pad(x, p1, , ax)
      a, b = Split<axis = 1, num_outputs = 2>(x)
      q = Relu(pd_pads)
      r = Relu(sp_split_sizes)
    }""")
    model.graph.node[2].name, model.graph.node[3].name = "pd", "sp"
    onnx.save(model, tmp_path / "m.onnx")
    result = apply_cli(tmp_path / "m.onnx", "--pipeline", "opset18-to-17", "-o", tmp_path / "out.onnx")
    assert result.returncode == 0, result.stderr
    out = onnx.load(tmp_path / "out.onnx")
    assert [(node.op_type, list(node.input)) for node in out.graph.node] == [
        ("Pad", ["x", "pd_pads#2"]), ("Split", ["x", "sp_split_sizes#2"]), ("Relu", ["pd_pads"]),
        ("Relu", ["sp_split_sizes"])]


def test_an_axes_or_pads_input_that_is_not_int64_is_left_at_18(tmp_path):
    """adv12: int32 axes of a ReduceMean (an initializer or a Constant) or int32 pads of a Pad: opset 18's schema and
    ONNX Runtime refuse them, and as opset 17's attribute (or int64 pads) they became a model that runs, written with
    --verify none, exit 0. Now the node is left at 18, named."""
    from test_cli import apply_cli
    for body, op in (("ax = Constant<value = int32[1] {1}>()  y = ReduceMean(x, ax)", "ReduceMean"),
                     ("p = Constant<value = int32[2] {1, 1}>()  ax = Constant<value = int64[1] {1}>()  y = Pad(x, p, , ax)",
                      "Pad")):
        model = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[2,5] x) => (float[a,b] y) {{ {body} }}""")
        onnx.save(model, tmp_path / "m.onnx")
        result = apply_cli(tmp_path / "m.onnx", "--pipeline", "opset18-to-17", "--verify", "none", "-o",
                           tmp_path / "out.onnx", "--explain")
        assert result.returncode == 0, result.stderr
        assert f"left at opset 18: 1 node(s) without an opset-17 spelling ({op} '': its " in result.stdout, result.stdout
        assert onnx.load(tmp_path / "out.onnx").opset_import[0].version == 18

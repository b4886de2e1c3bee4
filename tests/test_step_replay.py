"""step_replay's rules on templates built by hand (session s31, mut34): each replayed over L steps at once and run
in ONNX Runtime beside the template itself run step by step (the unrolled graph), rel L2 <= 1e-6, with the exact ops
of the replay; each refusal with its exact message. The rules no runner test of mut33's reached (reduce, Slice,
Einsum, Concat, Transpose, the laid-out Gather and Squeeze) and rule_Conv's guards, which no test offered a Conv to
refuse."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from passes.graph_builder import GraphBuilder
from passes.relative_error import relative_l2
from passes.scan_forms.step_replay import ReplayError, replay_over_steps
from patterns.step_template import StepTemplate, SteppedUse

L = 5


def V(name, shape=None, dtype=np.float32):
    return gs.Variable(name, dtype, shape)


def C(name, value):
    return gs.Constant(name, np.asarray(value))


def _template(nodes, state, output, ranks=None, stepped=()):
    """A StepTemplate of `nodes`; every Variable's rank from its shape unless `ranks` names it."""
    known = {}
    for node in nodes:
        for tensor in [*node.inputs, *node.outputs]:
            if isinstance(tensor, gs.Variable) and tensor.shape is not None:
                known[id(tensor)] = len(tensor.shape)
    known.update(ranks or {})
    return StepTemplate(nodes=nodes, output=output, state=state, ranks=known, stepped=list(stepped))


def _session(graph):
    return ort.InferenceSession(gs.export_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])


def _replay(nodes, state, output, states_value, opset=17, ranks=None, stepped=(), **extra):
    """replay_over_steps of the template over `states_value` (steps first, in memory as `layout` says): its output
    in ONNX Runtime and the replay's op histogram (Constants aside)."""
    template = _template(nodes, state, output, ranks, stepped)
    states = gs.Variable("states", np.float32, states_value.shape)
    graph = gs.Graph(inputs=[states], opset=opset)
    out = replay_over_steps(GraphBuilder(graph, opset, prefix="replay"), template, states, L, **extra)
    out.dtype = np.float32
    graph.outputs = [out]
    graph.cleanup().toposort()
    return _session(graph).run(None, {"states": states_value})[0], Counter(node.op for node in graph.nodes)


def _per_step(nodes, state, output, steps_value, opset=17, stepped=(), start=0, stride=1):
    """The template run once per step in ONNX Runtime (a stepped constant takes that step's value: steps start,
    start + stride, ...), stacked."""
    outs = []
    for j in range(len(steps_value)):
        i = start + stride * j
        saved = []
        for use in stepped:
            tensor = nodes[use.node_index].inputs[use.input_index]
            saved.append((tensor, tensor.values))
            tensor.values = use.values[i]
        graph = gs.Graph(nodes=list(nodes), inputs=[state], outputs=[output], opset=opset)
        outs.append(_session(graph).run(None, {state.name: steps_value[j]})[0])
        for tensor, values in saved:
            tensor.values = values
    return np.stack(outs)


def _exact(nodes, state, output, steps_value, ops, opset=17, layout=None, stepped=(), ranks=None, start=0, stride=1):
    """Replayed == run step by step (rel L2 <= 1e-6), with exactly `ops`."""
    want = _per_step(nodes, state, output, steps_value, opset, stepped, start, stride).astype(np.float64)
    states_value = steps_value if layout is None else np.ascontiguousarray(steps_value.transpose(layout))
    got, histogram = _replay(nodes, state, output, states_value, opset, ranks, stepped, layout=layout, start=start,
                             stride=stride)
    assert got.shape == want.shape
    assert relative_l2(got, want) <= 1e-6
    assert dict(histogram) == ops


def _refused(nodes, state, output, message, shape=(3, 4), ranks=None, opset=17, stepped=()):
    with pytest.raises(ReplayError) as error:
        _replay(nodes, state, output, np.zeros((L, *shape), np.float32), opset, ranks, stepped)
    assert str(error.value) == message


def _steps(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal((L, *shape)).astype(np.float32)


# --- rule_Conv: the fork's readout, a grouped 1-D Conv that is one dot product per group -----------------------------

G, P, W = 3, 2, 4


def _conv_template(attrs=None, x_shape=(1, G * P, W), w_shape=(G, P, W), bias=False, weights_from_state=False):
    """y_i = Conv(x_i, w) with w shared, or (weights_from_state) Conv(c, Reshape(x_i, w_shape)) with c shared: the
    weights of each step from the state, of no shape of their own (_static_shape reads the Reshape's target)."""
    rng = np.random.default_rng(7)
    attrs = {"group": G} if attrs is None else attrs
    output = V("y0")
    if weights_from_state:
        state = V("x0", (w_shape[0], int(np.prod(w_shape[1:]))))
        w = V("w0")
        nodes = [gs.Node("Reshape", "r0", inputs=[state, C("wshape", np.array(w_shape, np.int64))], outputs=[w])]
        inputs = [C("c", rng.standard_normal(x_shape).astype(np.float32)), w]
        ranks = {id(w): len(w_shape), id(output): 3}
    else:
        state = V("x0", x_shape)
        nodes, ranks = [], {id(output): 3}
        inputs = [state, C("w", rng.standard_normal(w_shape).astype(np.float32))]
    if bias:
        inputs.append(C("bias", np.zeros(w_shape[0], np.float32)))
    nodes.append(gs.Node("Conv", "conv0", attrs=attrs, inputs=inputs, outputs=[output]))
    return nodes, state, output, ranks


@pytest.mark.parametrize("weights_from_state", [False, True])
@pytest.mark.parametrize("group", ["attr", "default"])
def test_a_grouped_conv_of_one_dot_product_per_group_replays_as_mul_and_reducesum(weights_from_state, group):
    """Conv(x_i, w) (x_i (1, G*P, W), w (G, P, W), group G) and Conv(c, w_i) (w_i = Reshape(x_i) of no shape: its
    static shape is the Reshape's target), and a single group given by the default (no group attribute, w (1, P, W)):
    a Reshape per operand, Mul, ReduceSum over both inner axes, a Reshape to (L, 1, G, 1). Exact ops."""
    if group == "attr":
        nodes, state, output, ranks = _conv_template(weights_from_state=weights_from_state)
    else:
        nodes, state, output, ranks = _conv_template({}, (1, P, W), (1, P, W), weights_from_state=weights_from_state)
    shape = tuple(state.shape)
    _exact(nodes, state, output, _steps(*shape, seed=1), {"Reshape": 3 + weights_from_state, "Mul": 1, "ReduceSum": 1},
           ranks=ranks)


CONV_PLAIN = "Conv 'conv0': only a plain 1-D Conv of batch 1 with static shapes is replayed"


@pytest.mark.parametrize("attrs, x_shape, w_shape, bias, message", [
    ({"group": G, "strides": [2]}, None, None, False, CONV_PLAIN),
    ({"group": G, "dilations": [2]}, None, None, False, CONV_PLAIN),
    ({"group": G, "strides": [1], "dilations": [1], "pads": [0, 1]}, None, None, False, CONV_PLAIN),
    ({"group": G, "auto_pad": "SAME_UPPER"}, None, None, False, CONV_PLAIN),
    ({"group": G}, None, None, True, CONV_PLAIN),
    ({"group": G}, (2, G * P, W), None, False, CONV_PLAIN),
    ({"group": G}, (1, G * P, W, 1), (G, P, W, 1), False, CONV_PLAIN),
    ({"group": G}, (1, G * P, W), (G, P, W, 1), False, CONV_PLAIN),
    ({"group": G}, (1, G * P, W + 1), None, False,
     f"Conv 'conv0': not one dot product per group ({G} groups, input [1, {G * P}, {W + 1}], weight [{G}, {P}, {W}])"),
    ({"group": G}, None, (G, P, W - 1), False,
     f"Conv 'conv0': not one dot product per group ({G} groups, input [1, {G * P}, {W}], weight [{G}, {P}, {W - 1}])"),
    ({"group": 1}, None, None, False,
     f"Conv 'conv0': not one dot product per group (1 groups, input [1, {G * P}, {W}], weight [{G}, {P}, {W}])"),
    ({"group": G}, (1, G * P + 1, W), None, False,
     f"Conv 'conv0': not one dot product per group ({G} groups, input [1, {G * P + 1}, {W}], weight [{G}, {P}, {W}])"),
])
def test_convs_that_are_not_one_plain_dot_product_per_group_are_refused_with_their_names(attrs, x_shape, w_shape, bias,
                                                                                        message):
    """Every guard of rule_Conv on its own (the other attributes plain, the shapes a replayable readout's): strides 2,
    dilations 2, a pad, auto_pad, a bias, batch 2, a 2-D Conv, a 4-D weight; kernel != width, G output channels of
    one group, channels != groups * per_group. Exact messages (the second names the shapes)."""
    nodes, state, output, ranks = _conv_template(attrs, x_shape or (1, G * P, W), w_shape or (G, P, W), bias)
    _refused(nodes, state, output, message, shape=tuple(state.shape), ranks=ranks)


def test_a_conv_of_unknown_input_shape_is_refused():
    nodes, state, output, ranks = _conv_template()
    state.shape = None
    ranks[id(state)] = 3
    _refused(nodes, state, output, CONV_PLAIN, shape=(1, G * P, W), ranks=ranks)


def test_a_conv_readout_keeps_its_rank_3_for_the_ops_after_it():
    """Conv(x_i, w) then Squeeze(axes=[-1]): the Conv's steps are (1, G, 1) (rank 3), so -1 is its width axis:
    (L, 1, G)."""
    nodes, state, output, ranks = _conv_template()
    squeezed = V("s0")
    nodes.append(gs.Node("Squeeze", "sq0", inputs=[output, C("axes", np.array([-1], np.int64))], outputs=[squeezed]))
    _exact(nodes, state, squeezed, _steps(1, G * P, W, seed=2), {"Reshape": 3, "Mul": 1, "ReduceSum": 1, "Squeeze": 1},
           ranks=ranks)


@pytest.mark.parametrize("case", ["weights of no shape", "symbolic channels", "zero channels", "target from Shape",
                                  "target with a 0"])
def test_conv_operands_of_no_static_shape_are_refused(case):
    """_static_shape: a weight of no shape not made by a Reshape, a symbolic dim, a Reshape target that is not a
    constant or holds a 0 (copy that dim): not static, refused as not plain; a 0-sized dim is static (and then not one
    dot product per group)."""
    if case in ("weights of no shape", "target from Shape", "target with a 0"):
        state = V("x0", (G, P * W))
        w, nodes = V("w0"), []
        if case == "weights of no shape":
            nodes.append(gs.Node("Neg", "neg0", inputs=[state], outputs=[w]))
            ranks = {id(w): 2}
        else:
            if case == "target from Shape":
                target = V("wshape0", (3,), np.int64)
                nodes.append(gs.Node("Shape", "shape0", inputs=[C("like", np.zeros((G, P, W), np.float32))],
                                     outputs=[target]))
            else:
                target = C("wshape", np.array([0, P, W], np.int64))
            nodes.append(gs.Node("Reshape", "r0", inputs=[state, target], outputs=[w]))
            ranks = {id(w): 3}
        output = V("y0")
        ranks[id(output)] = 3
        nodes.append(gs.Node("Conv", "conv0", attrs={"group": G},
                             inputs=[C("c", np.ones((1, G * P, W), np.float32)), w], outputs=[output]))
        _refused(nodes, state, output, CONV_PLAIN, shape=(G, P * W), ranks=ranks)
        return
    channels = "C" if case == "symbolic channels" else 0
    nodes, state, output, ranks = _conv_template(x_shape=(1, channels, W))
    ranks[id(state)] = 3
    message = (CONV_PLAIN if channels == "C" else
               f"Conv 'conv0': not one dot product per group ({G} groups, input [1, 0, {W}], weight [{G}, {P}, {W}])")
    _refused(nodes, state, output, message, shape=(1, 0, W), ranks=ranks)


# --- reductions, Slice, Einsum, Concat, Transpose: each followed by Unsqueeze(-1), which reads the rank it gave ---

def _tail(nodes, tensor, opset=17):
    """Unsqueeze(tensor, [-1]): a wrong rank for `tensor` puts the new axis elsewhere."""
    out = V("tail0")
    if opset >= 13:
        nodes.append(gs.Node("Unsqueeze", "tail", inputs=[tensor, C("tail_axes", np.array([-1], np.int64))],
                             outputs=[out]))
    else:
        nodes.append(gs.Node("Unsqueeze", "tail", attrs={"axes": [-1]}, inputs=[tensor], outputs=[out]))
    return out


@pytest.mark.parametrize("op, opset, axes, keepdims, ops", [
    ("ReduceSum", 17, [-1], 0, {"ReduceSum": 1, "Unsqueeze": 1}),
    ("ReduceSum", 17, [0, -1], None, {"ReduceSum": 1, "Unsqueeze": 1}),
    ("ReduceSum", 11, [1], 1, {"ReduceSum": 1, "Unsqueeze": 1}),
    ("ReduceSum", 13, [1], 0, {"ReduceSum": 1, "Unsqueeze": 1}),
    ("ReduceSum", 17, None, 0, {"ReduceSum": 1, "Unsqueeze": 1}),
    ("ReduceSum", 17, [], 0, {"ReduceSum": 1, "Unsqueeze": 1}),
    ("ReduceMean", 17, [-2], 0, {"ReduceMean": 1, "Unsqueeze": 1}),
    ("ReduceMax", 18, [2, 0], 0, {"ReduceMax": 1, "Unsqueeze": 1}),
    ("ReduceMin", 13, None, None, {"ReduceMin": 1, "Unsqueeze": 1}),
    ("ReduceProd", 17, [1], None, {"ReduceProd": 1, "Unsqueeze": 1}),
])
def test_reductions_replay_over_the_shifted_axes(op, opset, axes, keepdims, ops):
    """x_i (2, 3, 4) reduced over `axes` (an input for ReduceSum from opset 13 and every reduction from 18, else an
    attribute; none or empty: every axis), keepdims 0 or 1 or its default 1: one reduction over the axes + 1."""
    state = V("x0", (2, 3, 4))
    out, attrs, inputs = V("r0"), {}, [state]
    if keepdims is not None:
        attrs["keepdims"] = keepdims
    if axes is not None:
        if (op == "ReduceSum" and opset >= 13) or opset >= 18:
            inputs.append(C("axes", np.array(axes, np.int64)))
        else:
            attrs["axes"] = axes
    rank = 3 if keepdims in (None, 1) else 3 - (len(axes) if axes else 3)
    nodes = [gs.Node(op, "red0", attrs=attrs, inputs=inputs, outputs=[out])]
    tail = _tail(nodes, out, opset)
    _exact(nodes, state, tail, _steps(2, 3, 4, seed=3), ops, opset=opset, ranks={id(out): rank, id(tail): rank + 1})


def test_a_reduction_of_empty_axes_that_is_a_no_op_is_refused():
    state, out = V("x0", (3, 4)), V("r0")
    nodes = [gs.Node("ReduceSum", "red0", attrs={"noop_with_empty_axes": 1}, inputs=[state], outputs=[out])]
    _refused(nodes, state, out, "ReduceSum 'red0': empty axes with noop_with_empty_axes", ranks={id(out): 2})


@pytest.mark.parametrize("bounds", ["axes -1", "axes and steps", "no axes", "axes 0"])
def test_slices_replay_with_their_axes_shifted(bounds):
    """Slice(x_i (3, 4), ...) with axes [-1], axes [1] and steps [2], no axes input (every axis from 0), axes [0]:
    one Slice of axes + 1."""
    state, out = V("x0", (3, 4)), V("s0")
    starts, ends, axes, steps = {"axes -1": ([1], [3], [-1], None), "axes and steps": ([0], [4], [1], [2]),
                                 "no axes": ([1, 0], [3, 3], None, None), "axes 0": ([1], [10], [0], None)}[bounds]
    inputs = [state, C("starts", np.array(starts, np.int64)), C("ends", np.array(ends, np.int64))]
    if axes is not None:
        inputs.append(C("axes", np.array(axes, np.int64)))
    if steps is not None:
        inputs.append(C("steps", np.array(steps, np.int64)))
    nodes = [gs.Node("Slice", "sl0", inputs=inputs, outputs=[out])]
    tail = _tail(nodes, out)
    _exact(nodes, state, tail, _steps(3, 4, seed=4), {"Slice": 1, "Unsqueeze": 1}, ranks={id(out): 2, id(tail): 3})


@pytest.mark.parametrize("bound", ["from the state", "axes not constant"])
def test_slices_of_bounds_from_the_state_or_of_unknown_axes_are_refused(bound):
    state, out = V("x0", (3, 4)), V("s0")
    nodes, ranks = [], {id(out): 2}
    starts = C("starts", np.array([1], np.int64))
    axes = C("axes", np.array([1], np.int64))
    if bound == "from the state":
        starts = V("starts0", (1,), np.int64)
        row = V("row0", (1,))
        one = [C("z", np.array([0], np.int64)), C("o", np.array([1], np.int64))]
        nodes.append(gs.Node("Slice", "pick0", inputs=[state, *one, C("a1", np.array([1], np.int64))],
                             outputs=[V("pick0", (3, 1))]))
        nodes.append(gs.Node("Reshape", "flat0", inputs=[nodes[0].outputs[0], C("shape3", np.array([3], np.int64))],
                             outputs=[V("flat0", (3,))]))
        nodes.append(gs.Node("Slice", "first0", inputs=[nodes[1].outputs[0], C("z1", np.array([0], np.int64)),
                                                        C("o1", np.array([1], np.int64))], outputs=[row]))
        nodes.append(gs.Node("Cast", "cast0", attrs={"to": 7}, inputs=[row], outputs=[starts]))
        message = "Slice 'sl0': its bounds depend on the state"
    else:
        axes = V("axes0", (1,), np.int64)
        nodes.append(gs.Node("Shape", "shape0", inputs=[C("like", np.zeros(1, np.float32))], outputs=[axes]))
        message = "Slice 'sl0' needs constant axes"
    nodes.append(gs.Node("Slice", "sl0", inputs=[state, starts, C("ends", np.array([3], np.int64)), axes],
                         outputs=[out]))
    _refused(nodes, state, out, message, ranks=ranks)


@pytest.mark.parametrize("equation, shared, ops", [
    ("ij,jk->ik", "right", {"Einsum": 1, "Unsqueeze": 1}),
    ("kj,ij->ik", "left", {"Einsum": 1, "Unsqueeze": 1}),
    ("ab, bc -> ca", "right", {"Einsum": 1, "Unsqueeze": 1}),
    ("ij,ij->i", "none", {"Neg": 1, "Einsum": 1, "Unsqueeze": 1}),
])
def test_einsums_replay_with_a_step_letter_of_their_own(equation, shared, ops):
    """Einsum of x_i (3, 4) with c (4, 2) shared (right or left), spaces in the equation and the letters a, b, c
    taken (the step letter is then d), or of x_i with -x_i: the step letter before every batched term and the output."""
    state, out = V("x0", (3, 4)), V("e0")
    nodes = []
    if shared == "none":
        other = V("n0", (3, 4))
        nodes.append(gs.Node("Neg", "neg0", inputs=[state], outputs=[other]))
        inputs = [state, other]
    else:
        c = C("c", np.random.default_rng(5).standard_normal((4, 2)).astype(np.float32))
        inputs = [state, c] if shared == "right" else [c if equation.startswith("kj") else state, state]
        if equation.startswith("kj"):
            c.values = np.ascontiguousarray(c.values.T)
    nodes.append(gs.Node("Einsum", "es0", attrs={"equation": equation}, inputs=inputs, outputs=[out]))
    rank = len(equation.split("->")[1].strip())
    tail = _tail(nodes, out)
    _exact(nodes, state, tail, _steps(3, 4, seed=5), ops, ranks={id(out): rank, id(tail): rank + 1})


@pytest.mark.parametrize("equation", ["...j,jk->...k", "ij,jk"])
def test_einsums_with_an_ellipsis_or_an_implicit_output_are_refused(equation):
    state, out = V("x0", (3, 4)), V("e0")
    nodes = [gs.Node("Einsum", "es0", attrs={"equation": equation}, inputs=[state, C("c", np.ones((4, 2), np.float32))],
                     outputs=[out])]
    _refused(nodes, state, out, "Einsum 'es0': einsum with '...' or an implicit output is not replayed",
             ranks={id(out): 2})


@pytest.mark.parametrize("axis", [-1, 0])
def test_a_concat_of_step_dependent_tensors_replays_on_the_next_axis(axis):
    state, neg, out = V("x0", (3, 4)), V("n0", (3, 4)), V("cat0")
    nodes = [gs.Node("Neg", "neg0", inputs=[state], outputs=[neg]),
             gs.Node("Concat", "cat0", attrs={"axis": axis}, inputs=[state, neg], outputs=[out])]
    tail = _tail(nodes, out)
    _exact(nodes, state, tail, _steps(3, 4, seed=6), {"Neg": 1, "Concat": 1, "Unsqueeze": 1},
           ranks={id(out): 2, id(tail): 3})


def test_a_concat_of_a_step_dependent_and_a_shared_tensor_is_refused():
    state, out = V("x0", (3, 4)), V("cat0")
    nodes = [gs.Node("Concat", "cat0", attrs={"axis": 0}, inputs=[state, C("c", np.ones((1, 4), np.float32))],
                     outputs=[out])]
    _refused(nodes, state, out, "Concat 'cat0' joins step-dependent and shared tensors", ranks={id(out): 2})


@pytest.mark.parametrize("perm", [[1, 2, 0], None])
def test_a_transpose_replays_with_the_step_axis_kept_first(perm):
    """Transpose of x_i (2, 3, 4) by perm (1, 2, 0) or none (reversed): perm (0, p + 1 ...)."""
    state, out = V("x0", (2, 3, 4)), V("t0")
    nodes = [gs.Node("Transpose", "tr0", attrs={} if perm is None else {"perm": perm}, inputs=[state], outputs=[out])]
    tail = _tail(nodes, out)
    _exact(nodes, state, tail, _steps(2, 3, 4, seed=7), {"Transpose": 1, "Unsqueeze": 1},
           ranks={id(out): 3, id(tail): 4})


# --- a state laid out otherwise (Value.layout; channels-last-readout's blocks): the rules that keep the layout --------

@pytest.mark.parametrize("case, shape, layout, ops", [
    ("gather scalar axis 0", (3, 4), (0, 2, 1), {"Gather": 1}),
    ("gather scalar axis -1", (2, 3, 4), (0, 3, 2, 1), {"Gather": 1, "Transpose": 1}),
    ("gather scalar axis -1 in order", (2, 3, 4), (0, 3, 1, 2), {"Gather": 1}),
    ("gather scalar no axis", (2, 3, 4), (0, 1, 3, 2), {"Gather": 1, "Transpose": 1}),
    ("gather rows", (3, 4), (0, 2, 1), {"Transpose": 1, "Gather": 1}),
    ("squeeze axis 1", (2, 1, 4), (0, 3, 2, 1), {"Squeeze": 1, "Transpose": 1}),
    ("squeeze axes 0 -2", (1, 1, 4), (0, 2, 3, 1), {"Squeeze": 1}),
    ("identity", (3, 4), (0, 2, 1), {"Transpose": 1}),
    ("same-type cast", (3, 4), (0, 2, 1), {"Transpose": 1}),
    ("cast to double", (3, 4), (0, 2, 1), {"Transpose": 1, "Cast": 2}),
    ("matmul left", (3, 4), (0, 2, 1), {"Unsqueeze": 1, "Transpose": 2, "MatMul": 1}),
    ("matmul right", (3, 4), (0, 2, 1), {"Unsqueeze": 1, "Transpose": 2, "MatMul": 1}),
    ("matmul of a lower rank", (3, 4), (0, 2, 1), {"Transpose": 1, "Unsqueeze": 2, "MatMul": 1}),
    ("matmul other layout", (2, 3, 4), (0, 2, 1, 3), {"Transpose": 1, "Unsqueeze": 1, "MatMul": 1}),
    ("matmul of two batched", (3, 4), (0, 2, 1), {"Transpose": 4, "Neg": 1, "MatMul": 1}),
])
def test_a_laid_out_state_is_kept_as_it_lies_where_a_rule_can(case, shape, layout, ops, tail=False):
    """States in memory as `layout` (axis j of memory = axis layout[j] of the steps): Gather of a scalar index and
    Squeeze of named axes take the axis where it lies (Gather(axis 0) of (L, 4, 3) is memory axis 2; the axes left
    keep their order, one Transpose at the end when that is not theirs); Identity and a same-type Cast pass it on; a
    MatMul whose laid-out operand is of the top rank with its last two axes swapped becomes wT @ xT (left or right);
    every other op (a Gather of rows, a Cast to double, a MatMul of a lower-rank laid-out operand or of another
    layout) gets the states in their own order first, one Transpose."""
    rng = np.random.default_rng(8)
    state, out = V("x0", shape), V("y0", dtype=None)
    nodes, ranks = [], {}
    if case.startswith("gather"):
        index = np.array([0, 2], np.int64) if case == "gather rows" else np.array(1, np.int64)
        attrs = {} if case.endswith("no axis") else {"axis": -1 if "-1" in case else 0}
        nodes.append(gs.Node("Gather", "g0", attrs=attrs, inputs=[state, C("index", index)], outputs=[out]))
        ranks[id(out)] = len(shape) - 1 + index.ndim
    elif case.startswith("squeeze"):
        axes = [1] if case.endswith("axis 1") else [0, -2]
        nodes.append(gs.Node("Squeeze", "sq0", inputs=[state, C("axes", np.array(axes, np.int64))], outputs=[out]))
        ranks[id(out)] = len(shape) - len(axes)
    elif case == "identity":
        nodes.append(gs.Node("Identity", "id0", inputs=[state], outputs=[out]))
        ranks[id(out)] = 2
    elif case.endswith("cast"):
        nodes.append(gs.Node("Cast", "cast0", attrs={"to": 1}, inputs=[state], outputs=[out]))
        ranks[id(out)] = 2
    elif case == "cast to double":
        double = V("d0", shape, np.float64)
        nodes += [gs.Node("Cast", "cast0", attrs={"to": 11}, inputs=[state], outputs=[double]),
                  gs.Node("Cast", "cast1", attrs={"to": 1}, inputs=[double], outputs=[out])]
        ranks[id(out)] = 2
    elif case == "matmul of two batched":
        neg, back = V("n0", shape), V("nt0", shape[::-1])
        nodes += [gs.Node("Neg", "neg0", inputs=[state], outputs=[neg]),
                  gs.Node("Transpose", "tr0", attrs={"perm": [1, 0]}, inputs=[neg], outputs=[back]),
                  gs.Node("MatMul", "mm0", inputs=[state, back], outputs=[out])]
        ranks[id(out)] = 2
    else:
        if case == "matmul right":
            c = C("c", rng.standard_normal((2, shape[0])).astype(np.float32))
            inputs = [c, state]
        elif case == "matmul of a lower rank":
            inputs = [state, C("c", rng.standard_normal((2, 4, 2)).astype(np.float32))]
        else:
            inputs = [state, C("c", rng.standard_normal((4, 2)).astype(np.float32))]
        nodes.append(gs.Node("MatMul", "mm0", inputs=inputs, outputs=[out]))
        ranks[id(out)] = max(len(shape), 3 if case == "matmul of a lower rank" else 2)
    out.dtype = np.float32
    if tail:
        out = _tail(nodes, out)
        ranks[id(out)] = ranks[id(nodes[-2].outputs[0])] + 1
        ops = dict(ops, Unsqueeze=ops.get("Unsqueeze", 0) + 1)
    _exact(nodes, state, out, _steps(*shape, seed=9), ops, layout=layout, ranks=ranks)


# --- step i of a shared tensor (Gather(c, i), Slice(c, i, i + 1)): the axis moved to the front ---

@pytest.mark.parametrize("op, axis, width, start, stride, ops", [
    ("Slice", -1, L, 0, 1, {"Transpose": 1, "Unsqueeze": 1, "Mul": 1}),
    ("Slice", 1, L + 3, 0, 1, {"Slice": 1, "Transpose": 1, "Unsqueeze": 1, "Mul": 1}),
    ("Slice", -1, 2 * L + 1, 1, 2, {"Slice": 1, "Transpose": 1, "Unsqueeze": 1, "Mul": 1}),
    ("Slice", None, L, 0, 1, {"Unsqueeze": 1, "Mul": 1}),
    ("Slice", None, L + 2, 2, 1, {"Slice": 1, "Unsqueeze": 1, "Mul": 1}),
    ("Gather", -1, L, 0, 1, {"Transpose": 1, "Mul": 1}),
    ("Gather", None, L, 0, 1, {"Mul": 1}),
    ("Gather [i]", 1, L + 1, 1, 1, {"Slice": 1, "Transpose": 1, "Unsqueeze": 1, "Mul": 1}),
])
def test_step_i_of_a_shared_tensor_is_the_tensor_with_that_axis_first(op, axis, width, start, stride, ops):
    """y_i = x_i * c[:, i] (Slice(c, [i], [i + 1], axes) keeps the axis; Gather(c, i) drops it, Gather(c, [i]) keeps
    it), c (3, width) or (width, 3) when the step axis is 0 (no axes input / no axis attribute): the whole c, sliced
    only where its axis is not the L steps' (longer, or from step `start`, or every `stride`-th), moved to the front;
    a kept axis comes back as a unit axis."""
    rng = np.random.default_rng(10)
    first = axis is None
    c = C("c", rng.standard_normal((width, 3) if first else (3, width)).astype(np.float32))
    state, picked, out = V("x0", (3, 1)), V("p0"), V("y0")
    steps = range(start + stride * L)
    if op == "Slice":
        inputs = [c, C("starts", np.array([start], np.int64)), C("ends", np.array([start + 1], np.int64))]
        if not first:
            inputs.append(C("axes", np.array([axis], np.int64)))
        node = gs.Node("Slice", "sl0", inputs=inputs, outputs=[picked])
        stepped = [SteppedUse(0, 1, [np.array([i], np.int64) for i in steps]),
                   SteppedUse(0, 2, [np.array([i + 1], np.int64) for i in steps])]
        rank = 2
    else:
        kept = op == "Gather [i]"
        index = (lambda i: np.array([i], np.int64)) if kept else (lambda i: np.array(i, np.int64))
        node = gs.Node("Gather", "g0", attrs={} if first else {"axis": axis}, inputs=[c, C("index", index(start))],
                       outputs=[picked])
        stepped = [SteppedUse(0, 1, [index(i) for i in steps])]
        rank = 2 if kept else 1
        if not kept:
            state = V("x0", (3,))
    nodes = [node, gs.Node("Mul", "mul0", inputs=[state, picked], outputs=[out])]
    tail = _tail(nodes, out)
    ranks = {id(picked): rank, id(out): 2 if op != "Gather" else 1}
    ranks[id(tail)] = ranks[id(out)] + 1
    _exact(nodes, state, tail, _steps(*state.shape, seed=11), dict(ops, Unsqueeze=ops.get("Unsqueeze", 0) + 1),
           stepped=stepped, ranks=ranks, start=start, stride=stride)


@pytest.mark.parametrize("op", ["Slice", "Gather"])
def test_step_i_of_a_tensor_from_the_state_is_refused(op):
    state, out = V("x0", (3, L)), V("y0")
    if op == "Slice":
        node = gs.Node("Slice", "sl0", inputs=[state, C("starts", np.array([0], np.int64)),
                                               C("ends", np.array([1], np.int64)), C("axes", np.array([1], np.int64))],
                       outputs=[out])
        stepped = [SteppedUse(0, 1, [np.array([i]) for i in range(L)]),
                   SteppedUse(0, 2, [np.array([i + 1]) for i in range(L)])]
    else:
        node = gs.Node("Gather", "sl0", attrs={"axis": 1}, inputs=[state, C("index", np.array(0, np.int64))],
                       outputs=[out])
        stepped = [SteppedUse(0, 1, [np.array(i) for i in range(L)])]
    _refused([node], state, out, f"{op} 'sl0' takes step i of a tensor that depends on the state", shape=(3, L),
             ranks={id(out): 2}, stepped=stepped)


@pytest.mark.parametrize("case, shape, layout, ops", [
    ("gather scalar axis -1", (2, 3, 4), (0, 3, 2, 1), {"Gather": 1, "Transpose": 1}),
    ("squeeze axis 1", (2, 1, 4), (0, 3, 2, 1), {"Squeeze": 1, "Transpose": 1}),
    ("matmul left", (3, 4), (0, 2, 1), {"Unsqueeze": 1, "Transpose": 2, "MatMul": 1}),
])
def test_a_laid_out_result_keeps_its_rank_for_the_ops_after_it(case, shape, layout, ops):
    """The laid-out Gather (rank - 1), Squeeze (rank - 1) and MatMul (rank) followed by Unsqueeze(-1), which has no
    laid-out rule: the layout undone (the same one Transpose, now before it), the new axis last by the rank given."""
    test_a_laid_out_state_is_kept_as_it_lies_where_a_rule_can(case, shape, layout, ops, tail=True)


def test_an_identity_layout_is_no_layout():
    """layout (0, 1, 2) is the states' own order: Neg replayed alone, no Transpose."""
    state, out = V("x0", (3, 4)), V("y0")
    nodes = [gs.Node("Neg", "neg0", inputs=[state], outputs=[out])]
    _exact(nodes, state, out, _steps(3, 4, seed=12), {"Neg": 1}, layout=(0, 1, 2), ranks={id(out): 2})


def test_a_shared_op_is_made_once_with_its_attributes():
    """Cast(c, to=float) of a double c reads no step: made once as it is (its `to` kept), then x_i * it."""
    state, cast, out = V("x0", (3, 4)), V("c0", (4,)), V("y0")
    nodes = [gs.Node("Cast", "cast0", attrs={"to": 1}, inputs=[C("c", np.linspace(-1, 1, 4))], outputs=[cast]),
             gs.Node("Mul", "mul0", inputs=[state, cast], outputs=[out])]
    _exact(nodes, state, out, _steps(3, 4, seed=13), {"Cast": 1, "Mul": 1}, ranks={id(out): 2})


def test_a_template_whose_output_reads_no_step_or_a_tensor_of_unknown_rank_is_refused():
    state, out = V("x0", (3, 4)), V("y0")
    nodes = [gs.Node("Neg", "neg0", inputs=[C("c", np.ones(4, np.float32))], outputs=[out])]
    _refused(nodes, state, out, "the per-step output does not depend on the step", ranks={id(out): 1, id(state): 2})
    nodes = [gs.Node("Mul", "mul0", inputs=[state, gs.Variable("ext")], outputs=[out])]
    _refused(nodes, state, out, "rank of 'ext' is unknown", ranks={id(out): 2})


def test_a_readout_that_is_only_step_i_of_a_shared_tensor_depends_on_the_step():
    """y_i = Slice(c, [i], [i + 1], [1]) (c (3, L)), the state unread: still one value per step, c's axis moved
    first."""
    state, out = V("x0", (3, 1)), V("y0")
    inputs = [C("c", np.random.default_rng(14).standard_normal((3, L)).astype(np.float32)),
              C("starts", np.array([0], np.int64)), C("ends", np.array([1], np.int64)),
              C("axes", np.array([1], np.int64))]
    nodes = [gs.Node("Slice", "sl0", inputs=inputs, outputs=[out])]
    stepped = [SteppedUse(0, 1, [np.array([i], np.int64) for i in range(L)]),
               SteppedUse(0, 2, [np.array([i + 1], np.int64) for i in range(L)])]
    _exact(nodes, state, out, _steps(3, 1, seed=14), {"Transpose": 1, "Unsqueeze": 1}, stepped=stepped,
           ranks={id(out): 2, id(state): 2})


def test_an_empty_optional_input_is_passed_on_empty():
    """Slice(., starts, ends, '', steps) (axes left out by an empty name): of the state, refused for its axes (not for a
    rank of ''); of a shared c, made once as it is, with the empty input kept (then x_i * it)."""
    state, out = V("x0", (3, 4)), V("y0")
    bounds = [C("starts", np.array([1], np.int64)), C("ends", np.array([3], np.int64)), gs.Variable.empty(),
              C("steps", np.array([1], np.int64))]
    nodes = [gs.Node("Slice", "sl0", inputs=[state, *bounds], outputs=[out])]
    _refused(nodes, state, out, "Slice 'sl0' needs constant axes", ranks={id(out): 2})
    picked, out = V("p0", (2, 4)), V("y1")
    nodes = [gs.Node("Slice", "sl1", inputs=[C("c", np.arange(16, dtype=np.float32).reshape(4, 4)), *bounds],
                     outputs=[picked]),
             gs.Node("Mul", "mul0", inputs=[V("x1", (2, 4)), picked], outputs=[out])]
    state = nodes[1].inputs[0]
    _exact(nodes, state, out, _steps(2, 4, seed=15), {"Slice": 1, "Mul": 1}, ranks={id(out): 2})


@pytest.mark.parametrize("op", ["Reshape", "Expand"])
def test_a_reshape_to_a_computed_shape_and_an_expand_hand_on_their_rank(op):
    """Reshape(x_i (3, 4), Shape(c)) (c (2, 6) shared: a target known only when run, the steps' axis prefixed by a
    Concat) and Expand(x_i (3, 1), [2, 3, 4]) (rank 3), each followed by Unsqueeze(-1)."""
    if op == "Reshape":
        state, target, out = V("x0", (3, 4)), V("shape0", (2,), np.int64), V("r0")
        nodes = [gs.Node("Shape", "shape0", inputs=[C("like", np.zeros((2, 6), np.float32))], outputs=[target]),
                 gs.Node("Reshape", "r0", inputs=[state, target], outputs=[out])]
        ops = {"Shape": 1, "Concat": 1, "Reshape": 1, "Unsqueeze": 1}
    else:
        state, out = V("x0", (3, 1)), V("r0")
        nodes = [gs.Node("Expand", "r0", inputs=[state, C("shape", np.array([2, 3, 4], np.int64))], outputs=[out])]
        ops = {"Expand": 1, "Unsqueeze": 2}
    rank = 2 if op == "Reshape" else 3
    tail = _tail(nodes, out)
    _exact(nodes, state, tail, _steps(*state.shape, seed=16), ops, ranks={id(out): rank, id(tail): rank + 1})


@pytest.mark.parametrize("layout", [None, (0, 2, 1, 3)])
def test_a_squeeze_of_every_unit_axis_is_refused_as_a_replay_error(layout):
    # mut34: a TypeError ('NoneType' object is not iterable) before, which the pass's dry run (catching ReplayError)
    # would not have caught; the matcher refuses such a template first, so no pass reached it
    x0, y0 = gs.Variable("x0", np.float32, (3, 1, 4)), gs.Variable("y0", np.float32)
    template = StepTemplate(nodes=[gs.Node("Squeeze", "sq0", inputs=[x0], outputs=[y0])], output=y0, state=x0,
                            ranks={id(x0): 3, id(y0): 2})
    with pytest.raises(ReplayError, match=r"^Squeeze 'sq0': a Squeeze of every size-1 axis is not replayed \(its axes "
                                          r"are not given\)$"):
        replay_over_steps(GraphBuilder(gs.Graph(), 17, prefix="r"), template, gs.Variable("states"), 5, layout=layout)


# --- session s32 (mut35): mut34's three open emit mutants ---------------------------------------------------------

def test_a_laid_out_state_beside_an_empty_optional_input_is_put_in_order_and_the_empty_input_kept():
    """A laid-out state into an op with no layout rule and an empty optional input: the state alone gets its own
    order back (one Transpose), the empty input stays empty. ReduceSum(x_i, '') at opset 18 (no axes: every axis)
    replays as one ReduceSum over the axes after the steps'; Slice(x_i, starts, ends, '', steps) is refused for its
    axes, as without a layout."""
    state, out = V("x0", (3, 4)), V("y0")
    nodes = [gs.Node("ReduceSum", "red0", attrs={"keepdims": 0}, inputs=[state, gs.Variable.empty()], outputs=[out])]
    _exact(nodes, state, out, _steps(3, 4, seed=17), {"Transpose": 1, "ReduceSum": 1}, opset=18, layout=(0, 2, 1),
           ranks={id(out): 0})
    state, out = V("x1", (3, 4)), V("y1")
    bounds = [C("starts", np.array([1], np.int64)), C("ends", np.array([3], np.int64)), gs.Variable.empty(),
              C("steps", np.array([1], np.int64))]
    nodes = [gs.Node("Slice", "sl0", inputs=[state, *bounds], outputs=[out])]
    with pytest.raises(ReplayError) as error:
        _replay(nodes, state, out, np.zeros((L, 4, 3), np.float32), ranks={id(out): 2}, layout=(0, 2, 1))
    assert str(error.value) == "Slice 'sl0' needs constant axes"


def test_a_shared_op_of_another_domain_keeps_its_domain():
    """com.microsoft Gelu(c) reads no step: made once in its own domain (ONNX Runtime runs it there; the default
    domain has no Gelu before opset 20), then x_i * it."""
    state, gelu, out = V("x0", (3, 4)), V("g0", (4,)), V("y0")
    nodes = [gs.Node("Gelu", "gelu0", inputs=[C("c", np.linspace(-2, 2, 4).astype(np.float32))], outputs=[gelu],
                     domain="com.microsoft"),
             gs.Node("Mul", "mul0", inputs=[state, gelu], outputs=[out])]
    template = _template(nodes, state, out, {id(out): 2})
    states = gs.Variable("states", np.float32, (L, 3, 4))
    graph = gs.Graph(inputs=[states], opset=17)
    replayed = replay_over_steps(GraphBuilder(graph, 17, prefix="replay"), template, states, L)
    assert [(node.op, node.domain) for node in graph.nodes] == [("Gelu", "com.microsoft"), ("Mul", None)]
    replayed.dtype = np.float32
    graph.outputs = [replayed]
    value = _steps(3, 4, seed=18)
    got = _session(graph).run(None, {"states": value})[0]
    want = _per_step(nodes, state, out, value)
    assert got.shape == want.shape == (L, 3, 4)
    assert relative_l2(got.astype(np.float64), want.astype(np.float64)) <= 1e-6

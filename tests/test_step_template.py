"""Readouts compared step with step (patterns/step_template.py) and replayed over all steps at once.

The graphs are written the way transformers' Mamba slow path exports (no-op Cast between states,
first step multiplying a zeros constant, readout MatMul(h_i, Unsqueeze(C[:, i])) then Gather),
with one change at a time: a missing first step, a reshape round trip between states, and the
near-misses that must stay unrolled with a reason.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.reroll_scans import RerollScans
from passes.scan_forms import LOG_SPACE
from tests.scan_testing import apply_pass, op_histogram, rel_l2, run

B, D, N = 2, 3, 4
REL_L2_TOL = 1e-5


def _const(nodes, name, value):
    nodes.append(helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(np.asarray(value), name)))
    return name


def hf_style_model(length=6, first="zeros", link="cast", near_miss="", at=3, decay_states=None, n=N,
                   log_decays=False, dtype=np.float32, start=0):
    """y[:, :, i] = (h_i @ C[:, i, :, None])[:, :, 0] with h_i = dA[:, :, i] * h_{i-1} + dBu[:, :, i].
    `log_decays`: dA = Exp(log_dA), log_dA the input (the log-space forms take no decays given directly).
    `dtype`: every tensor's element type, the no-op Casts' target too (model.half() or .double()). `start` (mut31): the
    steps take positions start .. start + length - 1 of axes that hold start + length (C: one more)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    decay_states = n if decay_states is None else decay_states
    nodes = [helper.make_node("Exp", ["log_dA"], ["dA"], name="exp_dA")] if log_decays else []
    prev = None
    pieces = []
    for i in range(length):
        idx = _const(nodes, f"i{i}", np.array(start + i, dtype=np.int64))
        b_i = f"b{i}"
        nodes.append(helper.make_node("Gather", ["dBu", idx], [b_i], name=f"gather_b{i}", axis=2))
        if i == 0 and first == "absent":
            h = b_i
        else:
            if prev is None:
                prev = _const(nodes, "zeros", np.zeros((B, D, n), dtype=dtype))
            a_i = f"a{i}"
            nodes.append(helper.make_node("Gather", ["dA", idx], [a_i], name=f"gather_a{i}", axis=2))
            nodes.append(helper.make_node("Mul", [a_i, prev], [f"m{i}"], name=f"mul{i}"))
            h = f"h{i}"
            nodes.append(helper.make_node("Add", [f"m{i}", b_i], [h], name=f"add{i}"))
        if link == "cast":
            nodes.append(helper.make_node("Cast", [h], [f"hc{i}"], name=f"cast{i}", to=elem))
            carried = f"hc{i}"
        elif link == "half-round-trip":   # the state rounded to float16 and back between steps: not a no-op
            nodes.append(helper.make_node("Cast", [h], [f"hh{i}"], name=f"to_half{i}", to=TensorProto.FLOAT16))
            nodes.append(helper.make_node("Cast", [f"hh{i}"], [f"hc{i}"], name=f"to_float{i}", to=elem))
            carried = f"hc{i}"
        else:   # flatten and reshape back, as some loops do
            flat = _const(nodes, f"flat{i}", np.array([-1], dtype=np.int64))
            back = _const(nodes, f"back{i}", np.array([B, D, n], dtype=np.int64))
            nodes.append(helper.make_node("Reshape", [h, flat], [f"hf{i}"], name=f"flatten{i}"))
            nodes.append(helper.make_node("Reshape", [f"hf{i}", back], [f"hc{i}"], name=f"unflatten{i}"))
            carried = f"hc{i}"
        prev = carried
        read = carried
        if near_miss == "nonlinear":
            nodes.append(helper.make_node("Exp", [read], [f"e{i}"], name=f"exp{i}"))
            read = f"e{i}"
        if near_miss == "differs" and i == at:
            nodes.append(helper.make_node("Neg", [read], [f"n{i}"], name=f"neg{i}"))
            read = f"n{i}"
        c_index = i + 1 if near_miss == "coeff_ahead" and i == at else i
        cidx = _const(nodes, f"ci{i}", np.array(start + c_index, dtype=np.int64))
        nodes.append(helper.make_node("Gather", ["C", cidx], [f"c{i}"], name=f"gather_c{i}", axis=1))
        nodes.append(helper.make_node("Unsqueeze", [f"c{i}", _const(nodes, f"ax{i}", np.array([-1], dtype=np.int64))],
                                      [f"cu{i}"], name=f"unsq_c{i}"))
        nodes.append(helper.make_node("MatMul", [read, f"cu{i}"], [f"y{i}"], name=f"matmul{i}"))
        zero = _const(nodes, f"z{i}", np.array(0, dtype=np.int64))
        nodes.append(helper.make_node("Gather", [f"y{i}", zero], [f"yg{i}"], name=f"gather_y{i}", axis=2))
        nodes.append(helper.make_node("Unsqueeze", [f"yg{i}", _const(nodes, f"sax{i}", np.array([-1], dtype=np.int64))],
                                      [f"p{i}"], name=f"stack{i}"))
        pieces.append(f"p{i}")
    nodes.append(helper.make_node("Concat", pieces, ["y"], name="concat", axis=-1))
    graph = helper.make_graph(
        nodes, "hf_style",
        [helper.make_tensor_value_info("log_dA" if log_decays else "dA", elem, [B, D, start + length, decay_states]),
         helper.make_tensor_value_info("dBu", elem, [B, D, start + length, n]),
         helper.make_tensor_value_info("C", elem, [B, start + length + 1, n])],
        [helper.make_tensor_value_info("y", elem, [B, D, length])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds(length, seed=0, decay_states=None, n=N):
    decay_states = n if decay_states is None else decay_states
    rng = np.random.default_rng(seed)
    decays = rng.uniform(0.5, 1.0, (B, D, length, decay_states)).astype(np.float32)
    return {"dA": decays, "log_dA": np.log(decays),   # the model takes the one it has as input
            "dBu": rng.standard_normal((B, D, length, n)).astype(np.float32),
            "C": rng.standard_normal((B, length + 1, n)).astype(np.float32)}


def reference(inputs, length):
    h = np.zeros(inputs["dBu"].shape[:2] + inputs["dBu"].shape[3:])
    ys = []
    for i in range(length):
        h = inputs["dA"][:, :, i] * h + inputs["dBu"][:, :, i]
        ys.append((h @ inputs["C"][:, i, :, None])[:, :, 0])
    return np.stack(ys, -1)


@pytest.mark.parametrize("first, link", [("zeros", "cast"), ("absent", "cast"), ("zeros", "reshape")])
@pytest.mark.parametrize("form", ["parallel", "batched"])
def test_matmul_readout_behind_casts_is_rerolled_and_exact(first, link, form):
    length = 9
    model = hf_style_model(length, first=first, link=link, log_decays=form in LOG_SPACE)
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 1, "steps": length, "rejected": 0}
    # the readout replayed once over all steps: one Gather left (the [:, :, 0] column), no per-step node
    assert op_histogram(out)["Gather"] == 1
    assert not any(n.name.startswith(("gather_", "add", "mul", "matmul", "cast", "stack")) for n in out.graph.node)
    inputs = feeds(length)
    assert rel_l2(run(out, inputs)[0], reference(inputs, length)) <= REL_L2_TOL


@pytest.mark.parametrize("form", ["parallel", "strided-readout"])
def test_a_replayed_readout_over_part_of_the_axis_reads_the_chains_own_positions(form):
    # mut31: 8 steps from position 2 of 10 (C: 11), the MatMul readout replayed over the steps: its stepped Gathers of
    # C take positions 2..9 (the whole-step replay in parallel, block by block in strided-readout's folded readout);
    # from position 0 they read C[:, 0..7]
    model = hf_style_model(length=8, start=2)
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 1, "steps": 8, "rejected": 0, "part_of_axis": 1}
    inputs = feeds(10)
    inputs["C"] = np.random.default_rng(5).standard_normal((B, 11, N)).astype(np.float32)
    expected = reference({"dA": inputs["dA"][:, :, 2:], "dBu": inputs["dBu"][:, :, 2:], "C": inputs["C"][:, 2:]}, 8)
    assert rel_l2(run(out, inputs)[0], expected) <= 1e-6


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_no_op_casts_of_a_half_or_double_export_are_seen_through(dtype):
    """model.double() (or .half()) exported: the chain's Cast(to=DOUBLE) reads a state whose type the export
    does not record. is_same_type_cast took every untyped tensor for float32, so each Cast looked like a
    type change, the chain broke into 1-step pieces and reroll-scans said only '0 scans found' (transformers'
    MambaModel.double(), probed in session s17); the type is now followed back to a typed tensor."""
    from pipelines import compile_model

    length = 7
    model = hf_style_model(length, dtype=dtype)
    assert not model.graph.value_info   # as an exporter writes it: the states' types are not recorded
    result = compile_model(model, "reroll-scans{form=parallel,chunk=3}", verify="none")
    reroll = result.records[0]
    assert (reroll.stats["rerolled"], reroll.stats["steps"]) == (1, length)
    inputs = {name: value.astype(dtype) for name, value in feeds(length).items()}
    (actual,) = run(result.model, inputs)
    assert actual.dtype == dtype
    assert rel_l2(actual, reference(inputs, length)) <= (REL_L2_TOL if dtype == np.float64 else 2e-3)


@pytest.mark.parametrize("names", ["empty", "repeated"])
def test_repeated_or_empty_node_names_re_roll_into_a_valid_model(names):
    """Found by s15's review: the replay named the outputs of a step's nodes that do not depend on the
    state (the readout's scale -(-S) here) '<prefix>/<node name>_<output index>', so two such nodes
    named alike, or both nameless, in a hostile model gave two outputs one name (a tensor produced
    twice: onnx.checker refuses it). The GraphBuilder names them now."""
    length = 6
    model = hf_style_model(length)
    # every step scales its readout by -(-S): two nodes that read no step's data
    model.graph.initializer.append(numpy_helper.from_array(np.array([1.5], np.float32), "S"))
    nodes = []
    for original in model.graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        if node.op_type == "Gather" and node.input[0].startswith("y"):   # gather_y{i}: y{i}[:, :, 0]
            i = node.input[0][1:]
            nodes += [helper.make_node("Neg", ["S"], [f"sn{i}"]), helper.make_node("Neg", [f"sn{i}"], [f"ss{i}"]),
                      helper.make_node("Mul", [f"y{i}", f"ss{i}"], [f"ys{i}"])]
            node.input[0] = f"ys{i}"
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for node in model.graph.node:
        node.name = "" if names == "empty" else "step"
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=4))   # runs onnx.checker, full_check
    assert result.stats == {"rerolled": 1, "steps": length, "rejected": 0}
    produced = [name for node in out.graph.node for name in node.output]
    assert len(set(produced)) == len(produced)
    replayed = [node.name for node in out.graph.node if node.name.startswith("reroll_scans/")]
    assert len(set(replayed)) == len(replayed) and any("/Neg_" in name for name in replayed)
    inputs = feeds(length)
    assert rel_l2(run(out, inputs)[0], 1.5 * reference(inputs, length)) <= REL_L2_TOL


@pytest.mark.parametrize("n", [1, 16, 64])
def test_state_sizes_from_1_to_64(n):
    length = 7
    out, result = apply_pass(hf_style_model(length, n=n), RerollScans(form="parallel", chunk=3))
    assert result.stats == {"rerolled": 1, "steps": length, "rejected": 0}
    inputs = feeds(length, n=n)
    assert rel_l2(run(out, inputs)[0], reference(inputs, length)) <= REL_L2_TOL


@pytest.mark.parametrize("form", ["chunk24", "parallel", "batched"])
def test_decay_per_channel_broadcast_over_the_state_axis(form):
    """a_i of shape (B, D, 1) against states (B, D, N): one decay per channel, as Mamba-2-like code writes it."""
    length = 10
    model = hf_style_model(length, decay_states=1, log_decays=form in LOG_SPACE)
    out, result = apply_pass(model, RerollScans(form=form, chunk=4))
    assert result.stats == {"rerolled": 1, "steps": length, "rejected": 0}
    inputs = feeds(length, decay_states=1)
    assert rel_l2(run(out, inputs)[0], reference(inputs, length)) <= REL_L2_TOL


def test_parallel_form_exact_ops_for_the_matmul_readout():
    """From the states (the scan form's last Reshape) to y: the per-step readout once, over all steps."""
    out, _ = apply_pass(hf_style_model(8), RerollScans(form="parallel", chunk=4))
    producers = {o: n for n in out.graph.node for o in n.output}
    cone, stack = [], ["y"]
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.op_type in ("Reshape", "Constant") or node in cone:
            continue
        cone.append(node)
        stack.extend(node.input)
    # states moved step-first (the no-op Cast dropped: it would copy every state), C's steps (cut to L,
    # moved first, unsqueezed), the MatMul, the [:, :, 0] Gather, and the step axis moved to where the
    # Concat stacked it
    assert sorted(n.op_type for n in cone) == sorted(
        ["Transpose", "Slice", "Transpose", "Unsqueeze", "MatMul", "Gather", "Transpose"])


@pytest.mark.parametrize("near_miss, reason", [
    ("differs", "step 3 departs from step 0 at Neg 'neg3' (step 0 has Cast 'cast0' there)"),
    ("nonlinear", "the readout is not linear in the state at Exp 'exp0'"),
    ("coeff_ahead", "Gather 'gather_c0' index is 4 at step 3 (expected 3: each step must read its own position)"),
])
def test_readout_near_misses_stay_unrolled_with_the_first_departing_node(near_miss, reason):
    model = hf_style_model(6, near_miss=near_miss)
    out, result = apply_pass(model, RerollScans())
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert op_histogram(out) == op_histogram(model)
    assert reason in result.notes[1], result.notes[1]
    assert "not an Einsum, Mul+ReduceSum, grouped Conv or Unsqueeze (as a per-step subgraph: " in result.notes[1]


def test_a_chain_cut_by_a_type_round_trip_is_named_not_dropped():
    """Steps linked only through Casts that change the type match one by one: each was a 1-step chain,
    dropped in silence ('0 scans found' and nothing under --explain; float64 exports did this until
    no_ops followed untyped tensors' types). Now one rejection names the link."""
    length = 6
    model = hf_style_model(length, link="half-round-trip")
    out, result = apply_pass(model, RerollScans(form="parallel"))
    assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
    assert op_histogram(out) == op_histogram(model)
    assert result.notes[1] == (
        f"chain at 'add0' ({length} steps) not re-rolled: each step reads the state before it through "
        "Cast(to=FLOAT16) 'to_half0', Cast(to=FLOAT) 'to_float0', which does not keep its value and type (only "
        "same-type Casts, Identities and shape round trips are seen through), so no two steps chain")


def test_drive_read_one_step_ahead_is_rejected():
    model = hf_style_model(6)
    for node in model.graph.node:
        if node.name == "gather_b4":
            node.input[1] = "i5"
    _, result = apply_pass(model, RerollScans())
    assert result.stats["rerolled"] == 0
    assert "input b_i index jumps to 5 at step 4 (expected 4)" in result.notes[1]


def _gated_readout_model(readout: str, length=5, batch=3, width=4) -> onnx.ModelProto:
    """h_t = a[:, t] * h_{t-1} + b[:, t] (scan_testing.gated_rnn_steps), each state read out to a (batch,
    width) tensor by `readout`'s per-step ops, stacked on axis 1 (Unsqueeze, Concat)."""
    from tests.scan_testing import gated_rnn_steps

    nodes, inits = gated_rnn_steps(length, batch, width)   # u{t} is not read: the readout's Unsqueeze stacks
    nodes = [node for node in nodes if node.op_type != "Unsqueeze"]
    ints = lambda name, values: inits.append(numpy_helper.from_array(np.array(values, np.int64), name)) or name  # noqa: E731
    computed = "rows_w"   # [batch, width] computed from a graph input's shape: no constant
    ints("shapes", [[batch, width]] * length)   # a shape per step, read as Gather(shapes, t)
    inits.append(numpy_helper.from_array(np.linspace(-2, 2, width).astype(np.float32), "gate"))
    nodes += [helper.make_node("Shape", ["a"], ["a_shape"]),
              helper.make_node("Gather", ["a_shape", ints("first", [0])], ["rows"]),
              helper.make_node("Concat", ["rows", ints("w", [width])], [computed], axis=0)]
    for t in range(length):
        h, r = f"h{t}", f"r{t}"
        nodes += {
            "identity": lambda: [helper.make_node("Identity", [h], [r])],
            "squeeze": lambda: [helper.make_node("Unsqueeze", [h, ints(f"ax{t}", [2])], [f"x{t}"]),
                                helper.make_node("Squeeze", [f"x{t}", ints(f"sq{t}", [-1])], [f"z{t}"]),
                                helper.make_node("Unsqueeze", [f"z{t}", ints(f"ax2{t}", [-1])], [f"x2{t}"]),
                                helper.make_node("Squeeze", [f"x2{t}", ints(f"sq2{t}", [2])], [r])],
            "reshape-keeping-a-size": lambda: [helper.make_node("Reshape", [h, ints(f"s{t}", [0, width])], [r])],
            "reshape-allowzero": lambda: [helper.make_node("Reshape", [h, ints(f"s{t}", [batch, width, 1])], [f"x{t}"],
                                                           allowzero=1),
                                          helper.make_node("Squeeze", [f"x{t}", ints(f"sq{t}", [2])], [r])],
            "reshape-to-a-computed-shape": lambda: [helper.make_node("Reshape", [h, computed], [r])],
            "reshape-allowzero-to-a-computed-shape": lambda: [helper.make_node("Reshape", [h, computed], [r],
                                                                               allowzero=1)],
            "reshape-to-a-shape-of-the-state": lambda: [helper.make_node("Shape", [h], [f"hs{t}"]),
                                                        helper.make_node("Reshape", [h, f"hs{t}"], [r])],
            "shared-factor": lambda: [helper.make_node("Sigmoid", ["gate"], [f"g{t}"]),
                                      helper.make_node("Mul", [h, f"g{t}"], [r])],
            "half-round-trip": lambda: [helper.make_node("Cast", [h], [f"f{t}"], to=TensorProto.FLOAT16),
                                        helper.make_node("Cast", [f"f{t}"], [r], to=TensorProto.FLOAT)],
            "reshape-to-the-shape-of-a-step": lambda: [helper.make_node("Shape", [f"b{t}"], [f"bs{t}"]),
                                                       helper.make_node("Reshape", [h, f"bs{t}"], [r])],
            "reshape-to-a-shape-of-a-step": lambda: [helper.make_node("Gather", ["shapes", f"t{t}"], [f"bs{t}"]),
                                                     helper.make_node("Reshape", [h, f"bs{t}"], [r])],
            "expand-to-fewer-axes": lambda: [helper.make_node("Expand", [h, ints(f"e{t}", [width])], [r])],
            "expand-to-a-computed-shape": lambda: [helper.make_node("Expand", [h, computed], [r])],
        }[readout]()
        nodes.append(helper.make_node("Unsqueeze", [r, "axis1"], [f"y{t}"]))
    nodes.append(helper.make_node("Concat", [f"y{t}" for t in range(length)], ["out"], axis=1))
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, length, width]) for n in ("a", "b", "out")]
    model = helper.make_model(helper.make_graph(nodes, "gated_readout", info[:2], info[2:], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("readout, replayed", [
    ("squeeze", {}),   # the replayed Unsqueeze (axes [3]) undone by the replayed Squeeze (axes [-1] + 1)
    ("reshape-keeping-a-size", {"Reshape": 1}), ("reshape-allowzero", {"Reshape": 1, "Squeeze": 1}),
    ("reshape-to-a-computed-shape", {"Concat": 2, "Gather": 1, "Reshape": 1, "Shape": 1}),
    ("expand-to-fewer-axes", {"Expand": 1}),
    ("shared-factor", {"Mul": 1, "Sigmoid": 1}),   # Sigmoid(gate) reads no step: made once, as it is
    ("half-round-trip", {"Cast": 2}),
    ("reshape-to-the-shape-of-a-step", None),     # Shape has no replay rule
    ("reshape-allowzero-to-a-computed-shape", None), ("reshape-to-a-shape-of-the-state", None),
    ("reshape-to-a-shape-of-a-step", None),
    ("expand-to-a-computed-shape", None),
])
def test_squeeze_reshape_and_expand_readouts_are_replayed_exactly_or_left(readout, replayed):
    """Per-step Squeeze (negative axis), Reshape (a 0 that keeps a size; allowzero with a constant target of
    no 0; a target computed from a graph input's shape) and Expand (to fewer axes than the step's) are each
    replayed once over all steps (`replayed`: the ops beyond an Identity readout's graph), equal to the
    loop. Left unrolled (None): an allowzero Reshape to a computed shape (it may hold a 0, which the replayed
    Reshape would read as 'keep'), a Reshape to a shape read from the state or one read per step
    (Gather(shapes, t): it has the step axis), an Expand to a computed shape."""
    length = 5
    model = _gated_readout_model(readout, length)
    out, result = apply_pass(model, RerollScans(form="parallel", chunk=2))
    if replayed is not None:
        assert result.stats == {"rerolled": 1, "steps": length, "rejected": 0}
        identity, _ = apply_pass(_gated_readout_model("identity", length), RerollScans(form="parallel", chunk=2))
        assert "Identity" not in op_histogram(identity)   # a no-op per step is a no-op over all steps
        beyond = Counter(op_histogram(out))
        beyond.subtract(op_histogram(identity))
        assert {op: count for op, count in beyond.items() if count} == replayed
    else:
        assert result.stats == {"rerolled": 0, "steps": 0, "rejected": 1}
        assert op_histogram(out) == op_histogram(model)
    rng = np.random.default_rng(0)
    inputs = {"a": rng.uniform(-1, 1, (3, length, 4)).astype(np.float32),
              "b": rng.normal(size=(3, length, 4)).astype(np.float32)}
    h, expected = np.zeros((3, 4)), []
    for t in range(length):
        h = inputs["a"][:, t] * h + inputs["b"][:, t]
        expected.append(h.astype(np.float32).astype(np.float16) if readout == "half-round-trip" else
                        h / (1 + np.exp(-np.linspace(-2, 2, 4))) if readout == "shared-factor" else h)
    assert rel_l2(run(out, inputs)[0], np.stack(expected, axis=1)) <= 1e-6


# --- step_replay's MatMul and Gather rules on a template built by hand (session s31, mut33) ---------------------

def _replayed(template_nodes, state, output, ranks, length, states_value, **extra):
    """replay_over_steps of a hand-made StepTemplate over `states_value` (step axis first): the output, the ops."""
    import onnx_graphsurgeon as gs
    import onnxruntime as ort

    from passes.graph_builder import GraphBuilder
    from passes.scan_forms.step_replay import replay_over_steps
    from patterns.step_template import StepTemplate

    template = StepTemplate(nodes=template_nodes, output=output, state=state, ranks=ranks)
    states = gs.Variable("states", np.float32, states_value.shape)
    graph = gs.Graph(inputs=[states], opset=17)
    out = replay_over_steps(GraphBuilder(graph, 17, prefix="replay"), template, states, length, **extra)
    out.dtype = np.float32
    graph.outputs = [out]
    graph.cleanup().toposort()
    session = ort.InferenceSession(gs.export_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    unsqueezed = [list(node.inputs[1].values) for node in graph.nodes if node.op == "Unsqueeze"]
    return session.run(None, {"states": states_value})[0], Counter(node.op for node in graph.nodes), unsqueezed


def _matmul_template(c_value, gather=False):
    """y_i = x_i @ c (x_i: (D, N)), or x_i[[0, 2]] @ c by a Gather without an axis attribute (axis 0) or with
    `gather` its axis (-2)."""
    import onnx_graphsurgeon as gs

    state = gs.Variable("x0", np.float32, (D, N))
    nodes, left, ranks = [], state, {}
    if gather:
        left = gs.Variable("rows0", np.float32, (2, N))
        attrs = {} if gather is True else {"axis": gather}
        nodes.append(gs.Node("Gather", "gather0", attrs=attrs, inputs=[state, gs.Constant("rows", np.array([0, 2], np.int64))],
                             outputs=[left]))
        ranks[id(left)] = 2
    output = gs.Variable("y0", np.float32)
    nodes.append(gs.Node("MatMul", "mm", inputs=[left, gs.Constant("c", c_value)], outputs=[output]))
    ranks.update({id(state): 2, id(output): c_value.ndim})
    return nodes, state, output, ranks


@pytest.mark.parametrize("gather", [False, True, -2])
def test_a_matmul_of_rank_2_operands_replays_with_the_shared_one_unsqueezed(gather):
    """MatMul(x_i, c) with x_i (D, N) and c (N, 2) shared: both of rank 2 (not refused as a vector), c unsqueezed to
    (1, N, 2) and one batched MatMul over the L steps; through Gather(x_i, [0, 2]) of no axis attribute (axis 0,
    output rank 1 + 1 = 2) or of axis -2 the same. Exact ops and the Unsqueeze's axes; vs float64."""
    from passes.relative_error import relative_l2

    length = 5
    rng = np.random.default_rng(23)
    c_value = rng.standard_normal((N, 2)).astype(np.float32)
    states_value = rng.standard_normal((length, D, N)).astype(np.float32)
    got, ops, unsqueezed = _replayed(*_matmul_template(c_value, gather), length, states_value)
    rows = states_value.astype(np.float64)[:, [0, 2]] if gather is not False else states_value.astype(np.float64)
    want = rows @ c_value.astype(np.float64)
    assert got.shape == want.shape == (length, D if gather is False else 2, 2)
    assert relative_l2(got, want) <= 1e-6
    assert dict(ops) == ({"Gather": 1, "Unsqueeze": 1, "MatMul": 1} if gather is not False else
                         {"Unsqueeze": 1, "MatMul": 1})
    assert unsqueezed == [[0]]


def test_a_matmul_with_a_vector_operand_is_refused_with_its_name():
    from passes.scan_forms.step_replay import ReplayError

    with pytest.raises(ReplayError) as error:
        _replayed(*_matmul_template(np.ones(N, np.float32)), 5, np.zeros((5, D, N), np.float32))
    assert str(error.value) == "MatMul 'mm': a MatMul with a vector operand is not replayed"


def test_a_gather_whose_indices_depend_on_the_state_is_refused_with_its_name():
    """c[int(x_i)]: the indices vary with the state, so no replay (exact message)."""
    import onnx_graphsurgeon as gs

    from passes.scan_forms.step_replay import ReplayError

    state, indices, output = gs.Variable("x0", np.float32, (D, N)), gs.Variable("i0"), gs.Variable("y0")
    nodes = [gs.Node("Cast", "cast0", attrs={"to": TensorProto.INT64}, inputs=[state], outputs=[indices]),
             gs.Node("Gather", "g", inputs=[gs.Constant("c", np.ones(N, np.float32)), indices], outputs=[output])]
    with pytest.raises(ReplayError) as error:
        _replayed(nodes, state, output, {id(state): 2, id(indices): 2, id(output): 2}, 5, np.zeros((5, D, N), np.float32))
    assert str(error.value) == "Gather 'g': its indices depend on the state"


@pytest.mark.parametrize("op, attrs, target, message", [
    ("Reshape", {}, "state", "Reshape 'r': its target shape depends on the state"),
    ("Reshape", {"allowzero": 1}, np.array([0, -1], np.int64),
     "Reshape 'r': allowzero reshapes to a shape that may hold a 0 are not replayed"),
    ("Expand", {}, "state", "Expand 'r': its target shape is not a constant"),
])
def test_reshapes_and_expands_that_cannot_be_replayed_are_refused_with_their_names(op, attrs, target, message):
    """Session s31 (mut33): the three refusals of rule_Reshape and rule_Expand, exact (a target computed from the
    state, Cast(x_i) to int64; allowzero with a 0 in a constant target)."""
    import onnx_graphsurgeon as gs

    from passes.scan_forms.step_replay import ReplayError

    state, output = gs.Variable("x0", np.float32, (D, N)), gs.Variable("y0")
    nodes, ranks = [], {id(state): 2, id(output): 2}
    if isinstance(target, str):
        shape = gs.Variable("shape0")
        nodes.append(gs.Node("Cast", "cast0", attrs={"to": TensorProto.INT64}, inputs=[state], outputs=[shape]))
        ranks[id(shape)] = 2
    else:
        shape = gs.Constant("shape", target)
    nodes.append(gs.Node(op, "r", attrs=attrs, inputs=[state, shape], outputs=[output]))
    with pytest.raises(ReplayError) as error:
        _replayed(nodes, state, output, ranks, 5, np.zeros((5, D, N), np.float32))
    assert str(error.value) == message


@pytest.mark.parametrize("op", ["MatMul", "Neg"])
def test_a_state_laid_out_with_its_last_two_axes_swapped_is_read_as_its_own_order(op):
    """Session s31 (mut33): states (L, N, D) in memory for (L, D, N) steps (layout (0, 2, 1), what channels-last-readout
    hands a readout): x_i @ c is replayed as (c^T @ x_i^T)^T, c^T (1, 2, N) from one Transpose, the product (L, 2, D)
    transposed back once at the end (2 Transposes); Neg has no rule for the layout: undone first, one Transpose."""
    import onnx_graphsurgeon as gs

    from passes.relative_error import relative_l2

    length = 5
    rng = np.random.default_rng(24)
    c_value = rng.standard_normal((N, 2)).astype(np.float32)
    states_value = rng.standard_normal((length, D, N)).astype(np.float32)
    if op == "MatMul":
        nodes, state, output, ranks = _matmul_template(c_value)
        want = states_value.astype(np.float64) @ c_value.astype(np.float64)
    else:
        state, output = gs.Variable("x0", np.float32, (D, N)), gs.Variable("y0", np.float32)
        nodes, ranks = [gs.Node("Neg", "neg0", inputs=[state], outputs=[output])], {id(state): 2, id(output): 2}
        want = -states_value.astype(np.float64)
    laid_out = np.ascontiguousarray(states_value.transpose(0, 2, 1))
    got, ops, unsqueezed = _replayed(nodes, state, output, ranks, length, laid_out, layout=(0, 2, 1))
    assert got.shape == want.shape
    assert relative_l2(got, want) <= 1e-6
    assert dict(ops) == ({"Unsqueeze": 1, "Transpose": 2, "MatMul": 1} if op == "MatMul" else {"Transpose": 1, "Neg": 1})


def test_step_operands_reading_a_tensor_at_t_and_t_plus_1_match_with_an_offset():
    """exp(x[t] - x[t + 1]) at every step, as a running maximum's decays read its scan (m_{t-1} at t, m_t at t + 1:
    passes/running_max_scan.py): one template with `allow_offset`, the positions the lower read's and the other read
    one after; without it (and on main before s36) refused at the step-ahead read."""
    import onnx_graphsurgeon as gs
    from patterns.ranks import RankMap
    from patterns.step_template import TemplateMismatch, match_operand_templates

    nodes, operands = [], []
    for t in range(5):
        nodes += [helper.make_node("Gather", ["x", f"i{t}"], [f"now{t}"], axis=0),
                  helper.make_node("Gather", ["x", f"i{t + 1}"], [f"next{t}"], axis=0),
                  helper.make_node("Sub", [f"now{t}", f"next{t}"], [f"d{t}"]),
                  helper.make_node("Exp", [f"d{t}"], [f"o{t}"])]
        operands.append(f"o{t}")
    nodes.append(helper.make_node("Sum", operands, ["y"]))
    inits = [numpy_helper.from_array(np.array(t, np.int64), f"i{t}") for t in range(6)]
    graph = gs.import_onnx(helper.make_model(helper.make_graph(
        nodes, "offsets", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [D])], inits)))
    tensors = graph.tensors()
    ranks = RankMap(graph)
    with pytest.raises(TemplateMismatch, match=r"Gather '' index is 1 at step 0 \(expected 0: each step must read "
                                               r"its own position\)"):
        match_operand_templates([tensors[name] for name in operands], ranks)
    template, positions = match_operand_templates([tensors[name] for name in operands], ranks, allow_offset=True)
    assert positions == [0, 1, 2, 3, 4]
    assert sorted(use.offset for use in template.stepped) == [0, 1]

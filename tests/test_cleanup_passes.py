"""Cleanup passes on small hand-written graphs: exact op lists after each pass."""
import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from passes.base import PassContext
from passes.constant_sizes import MAX_FOLDED_ELEMENTS
from passes.graph_io import graph_to_model, model_to_graph
from passes.registry import get_pass
from passes.verify import run_model

MODEL_WITH_DEAD_AND_CONSTANT_WORK = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x) => (float[2,3] y)
  <float[3] w = {1.0, 2.0, 3.0}, float[3] unused_weight = {3.0, 4.0, 5.0}> {
  ones = Constant<value = float[3] {1.0, 1.0, 1.0}>()
  bias = Add(ones, w)
  shifted = Add(x, bias)
  same = Identity(shifted)
  y = Relu(same)
  dead_square = Mul(x, x)
  dead_exp = Exp(dead_square)
}
"""


def graph_of(text: str) -> gs.Graph:
    return model_to_graph(onnx.parser.parse_model(text))


def ops(graph: gs.Graph) -> list[str]:
    return [node.op for node in graph.nodes]


def run_pass(name: str, graph: gs.Graph, **options):
    return get_pass(name, **options).run(graph, PassContext(opset=17))


def test_eliminate_dead_nodes_removes_exactly_the_unused_chain():
    graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)
    result = run_pass("eliminate-dead-nodes", graph)
    assert ops(graph) == ["Constant", "Add", "Add", "Identity", "Relu"]
    assert result.changed and result.stats["removed"] == 2
    exported = graph_to_model(graph)
    onnx.checker.check_model(exported, full_check=True)
    assert [init.name for init in exported.graph.initializer] == ["w"]  # unused initializer gone


def test_eliminate_dead_nodes_on_clean_graph_reports_no_change():
    graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)
    run_pass("eliminate-dead-nodes", graph)
    again = run_pass("eliminate-dead-nodes", graph)
    assert not again.changed and again.stats["removed"] == 0


def test_eliminate_dead_nodes_keeps_unused_graph_inputs():
    graph = graph_of("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x, float[2] unused_input) => (float[2] y) { y = Relu(x) }""")
    run_pass("eliminate-dead-nodes", graph)
    assert [t.name for t in graph.inputs] == ["x", "unused_input"]


def test_fold_constants_folds_constant_subgraph_and_keeps_numbers():
    graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)
    run_pass("eliminate-dead-nodes", graph)
    before = run_model(graph_to_model(graph), {"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
    result = run_pass("fold-constants", graph)
    assert ops(graph) == ["Add", "Identity", "Relu"]
    assert result.changed and result.stats["folded"] == 2
    after = run_model(graph_to_model(graph), {"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
    np.testing.assert_array_equal(after["y"], before["y"])


def test_fold_constants_folds_around_a_constant_sequence():
    """A kept Loop's readouts appended to SequenceEmpty (a dynamic-length TorchScript export): onnx-graphsurgeon folded the
    empty sequence as a list and failed ("'list' object has no attribute 'nbytes'"), so nothing was folded (before s27)."""
    graph = graph_of("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2, 2] y) {
          one = Constant<value = float[2] {1.0, 1.0}>()
          two = Add(one, one)
          empty = SequenceEmpty<dtype = 1>()
          first = SequenceInsert(empty, x)
          both = SequenceInsert(first, two)
          y = ConcatFromSequence<axis = 0, new_axis = 1>(both)
        }""")
    result = run_pass("fold-constants", graph)
    assert (result.changed, result.stats, result.notes) == (True, {"folded": 2}, [])
    assert ops(graph) == ["SequenceEmpty", "SequenceInsert", "SequenceInsert", "ConcatFromSequence"]
    after = run_model(graph_to_model(graph), {"x": np.array([3.0, 4.0], np.float32)})
    np.testing.assert_array_equal(after["y"], [[3.0, 4.0], [2.0, 2.0]])


def test_fold_constants_keeps_graph_and_notes_reason_when_folding_fails(monkeypatch):
    graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)

    def broken_fold(self, *args, **kwargs):
        self.nodes.clear()  # damage the copy, to prove the original is kept
        raise RuntimeError("simulated folding crash")

    monkeypatch.setattr(gs.Graph, "fold_constants", broken_fold)
    ops_before = ops(graph)
    result = run_pass("fold-constants", graph)
    assert ops(graph) == ops_before
    assert (result.changed, result.stats) == (False, {"folded": 0})
    assert result.notes == ["constant folding failed: simulated folding crash; graph left unfolded"]


def test_fold_constants_skips_big_graphs_with_a_note():
    """Past skip_above_nodes (7 nodes, 6 allowed) nothing is done; at it (7 allowed) the graph is folded."""
    graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)
    result = run_pass("fold-constants", graph, skip_above_nodes=6)
    assert (result.changed, result.stats, result.notes) == (
        False, {"folded": 0, "skipped": "too many nodes"}, ["skipped: 7 nodes > skip_above_nodes=6"])
    assert len(graph.nodes) == 7
    assert run_pass("fold-constants", graph, skip_above_nodes=7).changed


def test_fold_constants_that_folds_nothing_says_so_and_keeps_unused_inputs():
    """Nothing to fold: changed False, 0 folded, no note, the graph object's nodes untouched; a graph input no
    node reads stays an input (the model's interface) when something folds."""
    graph = graph_of("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x, float[2] unused) => (float[2] y) { y = Relu(x) }""")
    nodes = list(graph.nodes)
    result = run_pass("fold-constants", graph)
    assert (result.changed, result.stats, result.notes, graph.nodes) == (False, {"folded": 0}, [], nodes)
    graph = graph_of("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x, float[2] unused) => (float[2] y) <float two = {2.0}> { four = Add(two, two)
          y = Mul(x, four) }""")
    result = run_pass("fold-constants", graph)
    assert (result.changed, result.stats, ops(graph)) == (True, {"folded": 1}, ["Mul"])
    assert [t.name for t in graph.inputs] == ["x", "unused"]


def test_fold_constants_folds_a_size_op_in_a_later_round_once_its_size_is_folded():
    """ConstantOfShape(Cast(c)), c = [2.0, 3.0]: shape inference cannot size it, so the gate holds it while its
    shape is a Cast still to fold (round 1), then folds it (round 2): no node left but the Add."""
    graph = graph_of("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) <float[2] c = {2.0, 3.0}> {
          both = Cast<to = 7>(c)
          ones = ConstantOfShape(both)
          total = ReduceSum<keepdims = 0>(ones)
          y = Add(x, total) }""")
    result = run_pass("fold-constants", graph)
    assert (result.changed, ops(graph)) == (True, ["Add"])
    assert float(np.asarray(graph.nodes[0].inputs[1].values)) == 0.0   # ConstantOfShape's default value is 0


def test_simplify_removes_identity():
    graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)
    result = run_pass("simplify", graph)
    # onnxsim folds the bias into a Constant node and drops the Identity and the dead chain.
    assert ops(graph) == ["Constant", "Add", "Relu"]
    assert result.changed and result.stats["removed"] == 4


def test_simplify_keeps_graph_when_onnxsim_raises(monkeypatch):
    import passes.simplify_onnxsim as simplify_module

    def broken_onnxsim(model):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setattr(simplify_module, "_run_onnxsim", broken_onnxsim)
    graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)
    result = run_pass("simplify", graph)
    assert len(graph.nodes) == 7 and not result.changed
    assert result.notes == ["onnxsim failed: simulated onnxsim crash; graph left unsimplified"]


def test_simplify_keeps_graph_when_onnxsim_check_fails(monkeypatch):
    import passes.simplify_onnxsim as simplify_module

    monkeypatch.setattr(simplify_module, "_run_onnxsim", lambda model: (onnx.ModelProto(), False))
    graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)
    result = run_pass("simplify", graph)
    assert len(graph.nodes) == 7 and not result.changed
    assert "graph left unsimplified" in result.notes[0]


SEQUENCE_ROUND_TRIP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x) => (float[2] y) <int64 zero = {0}> { s = SequenceConstruct(x)  y = SequenceAt(s, zero) }
"""


def test_simplify_keeps_the_graph_when_onnxsim_changes_its_inputs_or_outputs():
    """Found by s16-adv: onnxsim turned this valid model into one whose only input is 'y' (and no
    node): every pipeline failed verification (exit 3, "no input data for model input(s): y") and
    --verify none wrote the model with another interface."""
    from pipelines import compile_model

    graph = graph_of(SEQUENCE_ROUND_TRIP)
    result = run_pass("simplify", graph)
    assert ops(graph) == ["SequenceConstruct", "SequenceAt"] and not result.changed
    assert result.notes == ["onnxsim changed the graph's inputs or outputs (inputs ['x'] -> ['y'], outputs "
                            "['y'] -> ['y']); graph left unsimplified"]
    compiled = compile_model(onnx.parser.parse_model(SEQUENCE_ROUND_TRIP), "cpu").model
    assert [value.name for value in compiled.graph.input] == ["x"]


def test_simplify_skips_above_threshold():
    graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)
    result = run_pass("simplify", graph, skip_above_nodes=5)
    assert len(graph.nodes) == 7 and not result.changed
    assert result.notes[0].startswith("onnxsim skipped: 7 nodes > skip_above_nodes=5")


@pytest.mark.parametrize("name", ["eliminate-dead-nodes", "fold-constants", "simplify"])
def test_cleanup_passes_are_registered_with_descriptions(name):
    assert get_pass(name).description


# Folding evaluated any constant subgraph with ONNX Runtime, however large its tensors: a hostile
# ConstantOfShape / Expand / Tile / Range of 2^40 elements reduced to one number asked ORT for 4 TiB
# (found by the s16 trust review). Each is now sized from its inputs before anything runs.
TERABYTE_SIZE_MAKERS = {
    "ConstantOfShape": """
      shape = Constant<value = int64[2] {1048576, 1048576}>()
      big = ConstantOfShape<value = float[1] {1.0}>(shape)""",
    "ConstantOfShape of a folded shape": """
      rows = Constant<value = int64[1] {1048576}>()
      shape = Concat<axis = 0>(rows, rows)
      big = ConstantOfShape<value = float[1] {1.0}>(shape)""",
    "Expand": """
      one = Constant<value = float[1, 1] {1.0}>()
      shape = Constant<value = int64[2] {1048576, 1048576}>()
      big = Expand(one, shape)""",
    "Tile": """
      one = Constant<value = float[1, 1] {1.0}>()
      repeats = Constant<value = int64[2] {1048576, 1048576}>()
      big = Tile(one, repeats)""",
    "Range": """
      start = Constant<value = float {0.0}>()
      limit = Constant<value = float {1099511627776.0}>()
      delta = Constant<value = float {1.0}>()
      big = Range(start, limit, delta)""",
}


def _reduced_to_one_number(body: str) -> gs.Graph:
    return graph_of(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) {{ {body}
          total = ReduceSum<keepdims = 0>(big)
          y = Add(x, total) }}""")


def _onnxruntime_spy(monkeypatch) -> list:
    """The op types of every model folding hands to ONNX Runtime."""
    import onnxruntime
    seen, real = [], onnxruntime.InferenceSession

    def spy(model, *args, **kwargs):
        seen.extend(node.op_type for node in onnx.load_from_string(model).graph.node)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    return seen


@pytest.mark.parametrize("maker", sorted(TERABYTE_SIZE_MAKERS))
def test_fold_constants_never_evaluates_a_tensor_past_its_cap(monkeypatch, maker):
    graph = _reduced_to_one_number(TERABYTE_SIZE_MAKERS[maker])
    op = maker.split()[0]
    evaluated = _onnxruntime_spy(monkeypatch)
    result = run_pass("fold-constants", graph)
    assert op not in evaluated
    assert op in ops(graph) and "ReduceSum" in ops(graph)   # left to run time
    assert any(f"{op} " in note and "elements" in note for note in result.notes), result.notes
    onnx.checker.check_model(graph_to_model(graph))   # still a model


def test_fold_constants_leaves_a_tensor_just_past_the_cap_and_folds_one_at_it():
    from passes.fold_constants import MAX_FOLDED_ELEMENTS
    for rows, folded in ((MAX_FOLDED_ELEMENTS // 1024, True), (MAX_FOLDED_ELEMENTS // 1024 + 1, False)):
        graph = _reduced_to_one_number(f"""
          shape = Constant<value = int64[2] {{{rows}, 1024}}>()
          big = ConstantOfShape<value = float[1] {{1.0}}>(shape)""")
        run_pass("fold-constants", graph)
        assert ("ConstantOfShape" not in ops(graph)) == folded, rows
        out = run_model(graph_to_model(graph), {"x": np.zeros(2, dtype=np.float32)})
        np.testing.assert_array_equal(out["y"], np.full(2, rows * 1024, dtype=np.float32))


# Not only the size-making ops: any op on constants can make a tensor far larger than its inputs,
# and both folders evaluated them. Two stored vectors added as a column and a row (a 2^16 + 2^16
# float file) made 2^32 elements; simplify (onnxsim) also evaluated the size-making ops above
# fold-constants' cap (a 200-byte ConstantOfShape of (2^14, 2^14) took 5.5 GB of memory). Both now
# size every node by shape inference first (passes.constant_sizes).
def _outer_sum(rows: int, columns: int) -> gs.Graph:
    column = gs.Constant("column", np.ones((rows, 1), dtype=np.float32))
    row = gs.Constant("row", np.ones((1, columns), dtype=np.float32))
    x, y = gs.Variable("x", np.float32, [2]), gs.Variable("y", np.float32, [2])
    big, total = gs.Variable("big"), gs.Variable("total")
    nodes = [gs.Node("Add", "outer", inputs=[column, row], outputs=[big]),
             gs.Node("ReduceSum", "total", attrs={"keepdims": 0}, inputs=[big], outputs=[total]),
             gs.Node("Add", "shifted", inputs=[x, total], outputs=[y])]
    return gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=17)


def _onnxsim_spy(monkeypatch) -> list:
    import passes.simplify_onnxsim as simplify_module
    handed, real = [], simplify_module._run_onnxsim

    def spy(model):
        handed.append(model)
        return real(model)

    monkeypatch.setattr(simplify_module, "_run_onnxsim", spy)
    return handed


def test_fold_constants_never_evaluates_an_outer_sum_past_the_cap(monkeypatch):
    from passes.constant_sizes import MAX_FOLDED_ELEMENTS
    graph = _outer_sum(4096, MAX_FOLDED_ELEMENTS // 4096 + 1)
    evaluated = _onnxruntime_spy(monkeypatch)
    result = run_pass("fold-constants", graph)
    assert "ReduceSum" not in evaluated and ops(graph) == ["Add", "ReduceSum", "Add"]
    assert any("Add 'outer'" in note and "elements" in note for note in result.notes), result.notes
    small = _outer_sum(4096, MAX_FOLDED_ELEMENTS // 4096)   # at the cap: folded
    run_pass("fold-constants", small)
    assert ops(small) == ["Add"]


@pytest.mark.parametrize("maker", sorted(TERABYTE_SIZE_MAKERS))
def test_simplify_never_hands_onnxsim_a_tensor_past_the_cap(monkeypatch, maker):
    graph = _reduced_to_one_number(TERABYTE_SIZE_MAKERS[maker])
    handed = _onnxsim_spy(monkeypatch)
    result = run_pass("simplify", graph)
    assert not handed and not result.changed and "ReduceSum" in ops(graph)
    assert "onnxsim skipped" in result.notes[0] and "elements" in result.notes[0], result.notes


def test_simplify_never_hands_onnxsim_an_outer_sum_or_declared_dims_past_the_cap(monkeypatch):
    from passes.constant_sizes import MAX_FOLDED_ELEMENTS
    from_declared_dims = graph_of("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1048576, 1048576] x) => (float[1048576, 1048576] y) {
          shape = Shape(x)
          big = ConstantOfShape<value = float[1] {1.0}>(shape)
          total = ReduceSum<keepdims = 0>(big)
          y = Add(x, total) }""")
    handed = _onnxsim_spy(monkeypatch)
    for graph in (_outer_sum(4096, MAX_FOLDED_ELEMENTS // 4096 + 1), from_declared_dims):
        result = run_pass("simplify", graph)
        assert not result.changed and "onnxsim skipped" in result.notes[0], result.notes
        assert result.stats == {"removed": 0, "skipped": "constant too large"}
    assert not handed
    small = _outer_sum(4096, MAX_FOLDED_ELEMENTS // 4096)
    assert run_pass("simplify", small).changed and handed


def test_simplify_infers_the_model_once_for_both_refusals(monkeypatch):
    """simplify's two refusals (unbounded data propagation, a constant past the cap) read one inference
    of the model: the second (oversized_constant_nodes) inferred it again, with and without data
    propagation, before onnxsim was asked."""
    inferences = []
    real = onnx.shape_inference.infer_shapes

    def counted(model, *args, **kwargs):
        inferences.append("data_prop" if kwargs.get("data_prop") else "plain")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", counted)
    import passes.simplify_onnxsim as simplify_module
    monkeypatch.setattr(simplify_module, "_run_onnxsim", lambda model: (inferences.append("onnxsim"), (model, True))[1])
    run_pass("simplify", graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK))
    assert inferences == ["plain", "data_prop", "onnxsim"]


@pytest.mark.parametrize("text, feed, folded_ops", [
    # Shape(x, start=0, end=1) of a static x: onnx-graphsurgeon folded it to the whole shape [2, 8], so the Reshape
    # target became [2, 8, -1] (an invalid model before session s22)
    ("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2,8] x) => (float[2,8] y) <int64[1] rest = {-1}> {
          lead = Shape<start = 0, end = 1>(x)
          target = Concat<axis = 0>(lead, rest)
          y = Reshape(x, target)
        }""", (2, 8), ["Reshape"]),
    # end without start (start 0), and start without end, of a static x: [2] and [8]
    ("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2,8] x) => (float[8,2] y) <int64[1] zero = {0}> {
          lead = Shape<end = 1>(x)
          tail = Shape<start = -1>(x)
          target = Concat<axis = 0>(tail, lead)
          flipped = Transpose<perm = [1, 0]>(x)
          y = Reshape(flipped, target)
        }""", (2, 8), ["Transpose", "Reshape"]),
    # a symbolic batch: Gather(Shape(x, start=1), 1) is x's size 2, 16; it was folded to 8 (size 1)
    ("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[batch,8,16] x) => (float[batch,8,16] y) <int64 one = {1}, int64[1] zero = {0}> {
          tail = Shape<start = 1>(x)
          last = Gather<axis = 0>(tail, one)
          last1 = Unsqueeze(last, zero)
          f = Cast<to = 1>(last1)
          y = Mul(x, f)
        }""", (3, 8, 16), ["Mul"]),
])
def test_fold_constants_reads_a_shapes_start_and_end(text, feed, folded_ops):
    """The exact ops left (a fold that failed as a whole keeps the graph, whose numbers are right: s23's mutants of
    the bounds' Slice, its names and axis, passed a numbers-only check)."""
    graph = graph_of(text)
    x = np.arange(np.prod(feed), dtype=np.float32).reshape(feed)
    before = run_model(graph_to_model(graph), {"x": x})
    result = run_pass("fold-constants", graph)
    assert (result.changed, result.notes, ops(graph)) == (True, [], folded_ops)
    exported = graph_to_model(graph)
    onnx.checker.check_model(exported, full_check=True)
    np.testing.assert_array_equal(run_model(exported, {"x": x})["y"], before["y"])


def test_fold_constants_puts_back_a_bounded_shape_it_cannot_fold():
    """Shape(x, start=0, end=1) of a symbolic batch stays one Shape with its bounds (no Slice added)."""
    graph = graph_of("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[batch,8] x) => (float[batch,8] y) <int64[1] rest = {-1}> {
          lead = Shape<start = 0, end = 1>(x)
          target = Concat<axis = 0>(lead, rest)
          y = Reshape(x, target)
        }""")
    run_pass("fold-constants", graph)
    assert ops(graph) == ["Shape", "Concat", "Reshape"]
    assert graph.nodes[0].attrs == {"start": 0, "end": 1}


def test_fold_constants_puts_back_bounded_shapes_beside_what_it_folds():
    """Something folds (two + two), so the working graph is kept: each bounded Shape of the symbolic batch that did not
    fold is one Shape again with exactly its bounds (end only: start 0 written; start only: no end), writing its own
    output (three nameless ones: each its own names); a plain Shape keeps no bounds, and Slices that fold-constants did not make (of an input, of a plain Shape)
    stay. Before s23's test the put-back was only tested where nothing folded, where the pass keeps the graph as it
    was: dropping the put-back, or breaking its loop at the first other node, passed."""
    graph = graph_of("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[batch,8] x) => (float[batch,8] y, int64[2] whole, int64[2] tail, float[1,8] first, int64[1] lead2,
                                 int64[1] last)
          <int64[1] rest = {-1}, float two = {2.0}, int64[1] zero = {0}, int64[1] one = {1}> {
          first = Slice(x, zero, one, zero)
          lead = Shape<end = 1>(x)
          target = Concat<axis = 0>(lead, rest)
          r = Reshape(x, target)
          four = Add(two, two)
          y = Mul(r, four)
          whole = Shape(x)
          tail = Shape<start = -2>(x)
          last = Shape<start = -1, end = 2>(x)
          shape = Shape(x)
          lead2 = Slice(shape, zero, one, zero)
        }""")
    x = np.arange(24, dtype=np.float32).reshape(3, 8)
    before = run_model(graph_to_model(graph), {"x": x})
    result = run_pass("fold-constants", graph)
    assert (result.changed, result.stats) == (True, {"folded": 2})   # two + two, and x.shape[-1:2] = [8]
    assert [(node.op, node.attrs, [t.name for t in node.outputs]) for node in graph.nodes] == [
        ("Slice", {}, ["first"]), ("Shape", {"start": 0, "end": 1}, ["lead"]), ("Concat", {"axis": 0}, ["target"]),
        ("Reshape", {}, ["r"]), ("Mul", {}, ["y"]), ("Shape", {}, ["whole"]), ("Shape", {"start": -2}, ["tail"]),
        ("Shape", {}, ["shape"]), ("Slice", {}, ["lead2"])]
    exported = graph_to_model(graph)
    onnx.checker.check_model(exported, full_check=True)
    after = run_model(exported, {"x": x})
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


def test_fold_constants_leaves_a_models_slice_named_like_its_bounds():
    """A Slice of the model's own named '<x>/fold_constants_bounds' (names are the model's text), taking every second
    dim of Shape(x): kept as it is. Before s23 the put-back knew its Slices by that name and made this one
    Shape(x, start 0, end 4), the whole shape where two dims were asked for."""
    graph = graph_of("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[batch,8,4,6] x) => (int64[2] every_second, float[batch,8,4,6] y)
          <int64[1] zero = {0}, int64[1] four = {4}, int64[1] two = {2}, float half = {0.5}> {
          shape = Shape(x)
          every_second = Slice(shape, zero, four, zero, two)
          one = Add(half, half)
          y = Mul(x, one)
        }""")
    [sliced] = [node for node in graph.nodes if node.op == "Slice"]
    sliced.name = "x/fold_constants_bounds"
    x = np.ones((3, 8, 4, 6), np.float32)
    result = run_pass("fold-constants", graph)
    assert (result.changed, ops(graph)) == (True, ["Shape", "Slice", "Mul"])
    assert graph.nodes[0].attrs == {} and graph.nodes[1].name == "x/fold_constants_bounds"
    exported = graph_to_model(graph)
    onnx.checker.check_model(exported, full_check=True)
    assert run_model(exported, {"x": x})["every_second"].tolist() == [3, 4]


def _size_node(op: str, *inputs) -> gs.Node:
    """`op` of constants (arrays) or graph inputs (gs.Variables)."""
    tensors = [value if isinstance(value, gs.Tensor) else gs.Constant(f"in{index}", np.asarray(value))
               for index, value in enumerate(inputs)]
    return gs.Node(op, inputs=tensors, outputs=[gs.Variable("out")])


@pytest.mark.parametrize("op, inputs, elements", [
    ("ConstantOfShape", [np.array([3, 4], np.int64)], 12),
    ("ConstantOfShape", [np.array([3, -4], np.int64)], 0),                      # a negative size holds none
    ("ConstantOfShape", [np.array([], np.int64)], 1),                           # a scalar
    ("Expand", [np.zeros((2, 1), np.float32), np.array([1, 3], np.int64)], 6),
    ("Expand", [np.zeros((2, 1), np.float32), np.array([1, 1, 3], np.int64)], 6),    # sizes of a higher rank
    ("Expand", [np.zeros((1, 1, 5), np.float32), np.array([3, 5], np.int64)], 15),   # sizes of a lower rank
    ("Expand", [np.zeros((2, 1), np.float32), np.array([-1, 3], np.int64)], 6),      # -1 broadcasts as 1 would
    ("Tile", [np.zeros((2, 3), np.float32), np.array([2, 5], np.int64)], 60),
    ("Tile", [np.zeros((2, 3), np.float32), np.array([0, 5], np.int64)], 0),
    ("Tile", [np.zeros((2, 0), np.float32), np.array([4, 5], np.int64)], 0),
    ("Range", [np.array(1.0), np.array(10.0), np.array(3.0)], 3),               # 1, 4, 7
    ("Range", [np.array(10), np.array(1), np.array(-4)], 3),                    # 10, 6, 2
    ("Range", [np.array(5), np.array(1), np.array(1)], 0),                      # limit below start
    ("Range", [np.array(0), np.array(5), np.array(0)], MAX_FOLDED_ELEMENTS + 1),   # ONNX Runtime refuses it
    ("Range", [np.array(0.0), np.array(np.inf), np.array(1.0)], MAX_FOLDED_ELEMENTS + 1),
    ("Range", [np.array([0, 1]), np.array(5), np.array(1)], None),              # not one number each
    ("Add", [np.zeros(3, np.float32), np.zeros(3, np.float32)], -1),            # no size-making op
])
def test_size_made_counts_each_size_making_op_exactly(op, inputs, elements):
    """The count fold-constants' size gate reads before anything runs (s23's mutmut: a ConstantOfShape of no size,
    a Tile divided, a Range multiplied by its delta or from limit + start, negative sizes taken as 1, all passed:
    the gate also reads the sizes shape inference gives, which hid them)."""
    from passes.fold_constants import size_made

    assert size_made(_size_node(op, *inputs)) == elements


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile", "Range"])
def test_size_made_is_unknown_until_the_size_inputs_are_constants(op):
    from passes.fold_constants import size_made

    computed = gs.Variable("computed", np.int64, [2])
    inputs = {"ConstantOfShape": [computed], "Expand": [np.zeros((2, 1), np.float32), computed],
              "Tile": [np.zeros((2, 1), np.float32), computed], "Range": [np.array(0), computed, np.array(1)]}[op]
    assert size_made(_size_node(op, *inputs)) is None
    if op in ("Expand", "Tile"):   # data of an unknown shape: unknown too
        assert size_made(_size_node(op, gs.Variable("data", np.float32, ["batch", 1]), np.array([1, 3]))) is None


def test_the_size_gate_waits_for_unknown_sizes_and_keeps_what_is_too_large():
    """fold-constants' should_exclude_node: a size-making op of a computed size that inference does not know waits
    (counted, not folded this round); one inference sizes is judged by that; past MAX_FOLDED_ELEMENTS, by either
    count, it is left to run time with a note; at the cap it folds."""
    from passes.fold_constants import _SizeGate

    gate = _SizeGate()
    assert (gate.waiting, gate.too_large, gate.inferred) == (0, {}, {})
    computed = gs.Variable("computed", np.int64, [2])
    waiting = _size_node("ConstantOfShape", computed)
    waiting.name = "waits"
    assert gate(waiting) is True and gate(waiting) is True and gate.waiting == 2
    gate.inferred = {"out": 0}
    assert gate(waiting) is False and gate.waiting == 2   # inference knows its size now: none
    gate.inferred = {"out": 12}
    assert gate(waiting) is False and gate.waiting == 2
    gate.inferred = {"out": MAX_FOLDED_ELEMENTS + 1}
    assert gate(waiting) is True and gate.waiting == 2
    gate.inferred = {}
    at_cap = _size_node("ConstantOfShape", np.array([MAX_FOLDED_ELEMENTS], np.int64))
    past = _size_node("ConstantOfShape", np.array([MAX_FOLDED_ELEMENTS + 1], np.int64))
    past.name = "big"
    assert gate(at_cap) is False and gate(past) is True
    assert gate.too_large == {name: f"ConstantOfShape '{name}' would make {MAX_FOLDED_ELEMENTS + 1:,} elements "
                                    f"(> {MAX_FOLDED_ELEMENTS:,}): left to run time" for name in ("waits", "big")}
    gate.inferred = {"out": MAX_FOLDED_ELEMENTS + 1}   # inference counts more than the constant sizes say
    assert gate(at_cap) is True
    assert gate(_size_node("Add", np.zeros(3, np.float32), np.zeros(3, np.float32))) is True
    gate.inferred = {}
    assert gate(_size_node("Add", np.zeros(3, np.float32), np.zeros(3, np.float32))) is False
    assert gate.waiting == 2


EXPANDED_CONSTANT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1024] x) => (float[1024] y) <float[1] two = {2.0}, int64[1] size = {1024}> {
  wide = Expand(two, size)
  y = Add(x, wide)
}"""


def test_fold_constants_folds_a_tensor_of_exactly_size_threshold_bytes_and_not_one_byte_more():
    """size_threshold_bytes bounds what a fold may write into the file (a folded Expand can be huge):
    the (1024,) float32 Expand is 4,096 bytes."""
    at_threshold, below = graph_of(EXPANDED_CONSTANT), graph_of(EXPANDED_CONSTANT)
    assert run_pass("fold-constants", at_threshold, size_threshold_bytes=4096).stats == {"folded": 1}
    assert ops(at_threshold) == ["Add"]
    result = run_pass("fold-constants", below, size_threshold_bytes=4095)
    assert (result.changed, result.stats, ops(below)) == (False, {"folded": 0}, ["Expand", "Add"])


def test_fold_constants_failure_note_is_one_line_of_at_most_300_characters(monkeypatch):
    def broken_fold(self, *args, **kwargs):
        raise RuntimeError("node 'x\n" + "y" * 1000 + "' cannot fold")

    monkeypatch.setattr(gs.Graph, "fold_constants", broken_fold)
    result = run_pass("fold-constants", graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK))
    prefix, suffix = "constant folding failed: ", "; graph left unfolded"
    [note] = result.notes
    assert note.startswith(prefix + "node 'x y") and note.endswith(suffix) and "\n" not in note
    assert len(note) == len(prefix) + 300 + len(suffix)


@pytest.mark.parametrize("random_node, kept", [
    ("n = RandomNormal<shape = [4], dtype = 1>()", ["RandomNormal", "Add"]),
    ("c = Constant<value = float[4] {1.0, 2.0, 3.0, 4.0}>()  n = RandomUniformLike(c)", ["RandomUniformLike", "Add"]),
    ("p = Constant<value = float[4] {0.5, 0.5, 0.5, 0.5}>()  n = Bernoulli(p)", ["Bernoulli", "Add"]),
    ("r = Constant<value = float {0.5}>()  t = Constant<value = bool {1}>()  c = Constant<value = float[4] {1.0, 2.0, "
     "3.0, 4.0}>()  n = Dropout(c, r, t)", ["Dropout", "Add"]),
])
def test_fold_constants_never_folds_a_random_draw(random_node, kept, capfd):
    """adv13: fold-constants evaluated RandomNormal (and a Bernoulli of a constant, a training-mode Dropout of
    one) with ONNX Runtime and stored the draw as an initializer: the compiled model added the same noise at every
    run (`cpu --verify none`: exit 0). The Bernoulli's ONNX Runtime session also logged to the terminal, raw, in ANSI
    colours ('Could not find a CPU kernel ... Bernoulli node'): the folding runs with the terminal closed."""
    graph = graph_of(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) {{ {random_node}  y = Add(x, n) }}""")
    result = run_pass("fold-constants", graph)
    assert ops(graph) == kept
    assert f"{kept[0]} '' draws new values at every run: left to run time" in result.notes
    captured = capfd.readouterr()
    assert captured.out == captured.err == ""


def test_fold_constants_folds_a_dropout_out_of_training_mode():
    graph = graph_of("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) { r = Constant<value = float {0.5}>()  t = Constant<value = bool {0}>()
            c = Constant<value = float[4] {1.0, 2.0, 3.0, 4.0}>()  n = Dropout(c, r, t)  y = Add(x, n) }""")
    run_pass("fold-constants", graph)
    assert ops(graph) == ["Add"]


def _if_of_constant_condition(body_nodes: str) -> gs.Graph:
    """If(true) whose then branch computes `r` from constants alone and returns x + r; the else branch returns x."""
    return graph_of(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) {{
            c = Constant<value = bool {{1}}>()
            y = If(c) <then_branch = then (float[4] x) => (float[4] o) {{ {body_nodes}  o = Add(x, r) }},
                       else_branch = other () => (float[4] e) {{ e = Identity(x) }}> }}""".replace(
        "then (float[4] x)", "then ()"))


@pytest.mark.parametrize("body_nodes, note", [
    ("r = RandomNormal<shape = [4], dtype = 1>()", "RandomNormal '' draws new values at every run: left to run time"),
    ("s = Constant<value = int64[2] {4096, 4096}>()  big = ConstantOfShape<value = float[1] {1.0}>(s)  "
     "r = ReduceSum<keepdims = 0>(big)", "ConstantOfShape '' would make 16,777,216 elements (> 4,194,304): left to run time"),
    # adv17 (adv13's lead): a column and a row of 4,096 and 2,048 ones added, sized by shape inference alone, which
    # the gate read in the main graph only: the body's Add was evaluated whole (a column and a row of 2^16 make 16 GiB)
    ("s = Constant<value = int64[2] {4096, 1}>()  t = Constant<value = int64[2] {1, 2048}>()  "
     "a = ConstantOfShape<value = float[1] {1.0}>(s)  b = ConstantOfShape<value = float[1] {1.0}>(t)  big = Add(a, b)  "
     "r = ReduceSum<keepdims = 0>(big)", "Add '' would make 8,388,608 elements (> 4,194,304): left to run time"),
])
def test_fold_constants_asks_its_gate_inside_if_bodies_too(body_nodes, note):
    """adv13: onnx-graphsurgeon folds If/Loop/Scan bodies without passing should_exclude_node on: a then branch's
    RandomNormal became the initializer 'r_subg_1_then' once the If (of a constant condition) was flattened, and a
    body's ConstantOfShape past MAX_FOLDED_ELEMENTS was evaluated (2^29 elements summed to 1.68e7). Now the
    bodies are folded with the gate too; nothing random or oversized is folded."""
    graph = _if_of_constant_condition(body_nodes)
    result = run_pass("fold-constants", graph)
    assert note in result.notes
    assert not any(isinstance(tensor, gs.Constant) and tensor.name.startswith("r") for tensor in graph.tensors().values())


def test_fold_constants_sizes_a_loop_bodys_values_by_inference():
    """adv17: a Loop body's Add of a stored column and row (2^23 elements) was folded by ONNX Runtime in the pass's
    own process (the gate had no size for body values); now left to run time with the note, the body unchanged."""
    graph = graph_of("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y) {
            m = Constant<value = int64 {2}>()  c = Constant<value = bool {1}>()
            y = Loop(m, c, x) <body = b (int64 i, bool ci, float[4] h) => (bool co, float[4] o) {
                s = Constant<value = int64[2] {4096, 1}>()  t = Constant<value = int64[2] {1, 2048}>()
                col = ConstantOfShape<value = float[1] {1.0}>(s)  row = ConstantOfShape<value = float[1] {1.0}>(t)
                big = Add(col, row)  r = ReduceSum<keepdims = 0>(big)  o = Add(h, r)  co = Identity(ci) }> }""")
    result = run_pass("fold-constants", graph)
    assert result.notes == ["Add '' would make 8,388,608 elements (> 4,194,304): left to run time"]
    body = graph.nodes[-1].attrs["body"]   # the column and the row (4,096 and 2,048 elements) folded, their sum not
    assert [(node.op, [type(t).__name__ for t in node.inputs]) for node in body.nodes] == [
        ("Add", ["Constant", "Constant"]), ("ReduceSum", ["Variable"]), ("Add", ["Variable", "Variable"]),
        ("Identity", ["Variable"])]


@pytest.mark.parametrize("condition", ["c = Constant<value = bool {1}>()", "c = Greater(n, n)"])
def test_simplify_never_hands_onnxsim_a_body_past_the_cap(monkeypatch, condition):
    """adv17: an If branch's Add of a stored column (16,384) and row (4,096) was handed to onnxsim, which evaluated
    its 2^26 elements (1.67 GB peak, dev 2-core); the gate read the main graph's nodes only."""
    graph = graph_of(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x, float n) => (float[4] y) {{
            {condition}
            y = If(c) <then_branch = t () => (float[4] o) {{
                s = Constant<value = int64[2] {{16384, 1}}>()  u = Constant<value = int64[2] {{1, 4096}}>()
                col = ConstantOfShape<value = float[1] {{1.0}}>(s)  row = ConstantOfShape<value = float[1] {{1.0}}>(u)
                big = Add(col, row)  r = ReduceSum<keepdims = 0>(big)  o = Add(x, r) }},
              else_branch = e () => (float[4] p) {{ p = Neg(x) }}> }}""")
    handed = _onnxsim_spy(monkeypatch)
    result = run_pass("simplify", graph)
    assert not handed and not result.changed
    assert result.notes == ["onnxsim skipped: Add '' would make 67,108,864 elements from constants (> 4,194,304), "
                            "which onnxsim would evaluate; graph left unsimplified"]


def test_fold_constants_still_flattens_and_folds_a_small_if_body():
    graph = _if_of_constant_condition("s = Constant<value = int64[2] {4, 4}>()  big = ConstantOfShape<value = float[1] "
                                      "{1.0}>(s)  r = ReduceSum<keepdims = 0>(big)")
    result = run_pass("fold-constants", graph)
    assert (ops(graph), result.stats) == (["Add"], {"folded": 1})
    assert [float(tensor.values) for tensor in graph.nodes[0].inputs if isinstance(tensor, gs.Constant)] == [16.0]


# Session s29 (mut29): survivors of hand mutants of eliminate-dead-nodes and constant_sizes.
def test_eliminate_dead_nodes_says_what_it_removed_only_when_asked_and_keeps_unused_outputs():
    text = """<ir_version: 8, opset_import: ["" : 18]>
        g (float[4] x) => (float[2] y) {
          y, unused_half = Split<num_outputs = 2>(x)
          dead = Exp(x)
          dead_too = Neg(dead) }"""
    graph = graph_of(text)
    result = get_pass("eliminate-dead-nodes").run(graph, PassContext(opset=18))
    assert (result.changed, result.stats, result.notes) == (True, {"removed": 2, "removed_tensors": 2}, [])
    assert [len(node.outputs) for node in graph.nodes] == [2]   # the Split keeps its unused output
    explained = get_pass("eliminate-dead-nodes").run(graph_of(text), PassContext(opset=18, explain=True))
    assert explained.notes == ["removed 2 nodes whose results no output uses"]


def test_oversized_constant_nodes_reads_shapes_of_declared_dims_and_nothing_else_of_an_input():
    """Shape(x) of a declared (2048, 4096) input is a constant; so is the ConstantOfShape it sizes (2^23 elements,
    past the cap); the Relu of x, as large, is not computed from constants."""
    from passes.constant_sizes import oversized_constant_nodes

    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2048, 4096] x) => (float[2048, 4096] y, float[2048, 4096] r) {
          shape = Shape(x)
          big = ConstantOfShape<value = float[1] {1.0}>(shape)
          y = Add(x, big)
          r = Relu(x) }""")
    assert 2048 * 4096 > MAX_FOLDED_ELEMENTS
    assert [(node.op_type, elements) for node, elements in oversized_constant_nodes(model)] == [
        ("ConstantOfShape", 2048 * 4096)]
    sized = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2048, 4096] x) => (int64 n, float[2048, 4096] r) {
          n = Size(x)
          r = Relu(x) }""")
    assert oversized_constant_nodes(sized) == []


# --- session s32 (mut35): simplify's every outcome exactly (result, stats, notes), onnxsim stubbed where it must
# fail or answer in a given way ---------------------------------------------------------------------------------------

LOCAL_FUNCTION = """
<ir_version: 8, opset_import: ["" : 17, "local" : 1]>
g (float[2] x) => (float[2] y) { y = local.f(x) }
<domain: "local", opset_import: ["" : 17]>
f (a) => (b) { c = Neg(a)  d = Abs(c)  b = Relu(d) }
"""


def _simplify_with(monkeypatch, answer, text=MODEL_WITH_DEAD_AND_CONSTANT_WORK, **options):
    """simplify with _run_onnxsim replaced by answer(model) -> (model, check_ok); the result and the graph."""
    import passes.simplify_onnxsim as simplify_module

    monkeypatch.setattr(simplify_module, "_run_onnxsim", answer)
    graph = graph_of(text)
    return run_pass("simplify", graph, **options), graph


def _outcome(result):
    return result.changed, result.stats, result.notes


def test_simplify_skips_by_plain_and_by_expanded_node_counts():
    """7 nodes over 5 and 6: skipped; at 7 it runs. A graph of one call of a 3-node local function counts 3
    (onnxsim runs the body): skipped at skip_above_nodes 1 and 2, though it has only 1 node, run at 3."""
    def skipped(shown, limit):
        return (False, {"removed": 0, "skipped": "too many nodes"},
                [f"onnxsim skipped: {shown} skip_above_nodes={limit} (about a minute per 50k nodes)"])

    for limit in (5, 6):
        graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)
        assert _outcome(run_pass("simplify", graph, skip_above_nodes=limit)) == skipped("7 nodes >", limit)
        assert len(graph.nodes) == 7
    assert run_pass("simplify", graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK), skip_above_nodes=7).changed
    for limit in (1, 2):
        graph = graph_of(LOCAL_FUNCTION)
        assert len(graph.nodes) == 1 and len(graph.functions) == 1
        assert _outcome(run_pass("simplify", graph, skip_above_nodes=limit)) == skipped(
            "more nodes, each call of a local function expanded, than", limit)
    assert "skipped" not in run_pass("simplify", graph_of(LOCAL_FUNCTION), skip_above_nodes=3).stats
    twice = LOCAL_FUNCTION.replace("{ y = local.f(x) }", "{ h = local.f(x)  y = local.f(h) }")
    assert _outcome(run_pass("simplify", graph_of(twice), skip_above_nodes=0)) == skipped("2 nodes >", 0)


def test_simplify_refusals_and_failures_are_exact(monkeypatch):
    import passes.simplify_onnxsim as simplify_module

    left = "graph left unsimplified"
    monkeypatch.setattr(simplify_module, "infer_shapes", lambda model: (model, "Range 'r' is unbounded"))
    graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)
    assert _outcome(run_pass("simplify", graph)) == (
        False, {"removed": 0, "skipped": "unbounded data propagation"},
        [f"onnxsim skipped: Range 'r' is unbounded; {left}"])
    monkeypatch.undo()
    big = onnx.helper.make_node("Add", ["a", "b"], ["c"], name="big\n")
    monkeypatch.setattr(simplify_module, "oversized_constant_nodes", lambda model, inferred: [(big, 5_000_000)])
    graph = graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK)
    assert _outcome(run_pass("simplify", graph)) == (
        False, {"removed": 0, "skipped": "constant too large"},
        [f"onnxsim skipped: Add 'big\\n' would make 5,000,000 elements from constants (> {MAX_FOLDED_ELEMENTS:,}), "
         f"which onnxsim would evaluate; {left}"])
    monkeypatch.undo()

    def crash(model):
        raise RuntimeError("x" * 400)

    result, graph = _simplify_with(monkeypatch, crash)
    assert _outcome(result) == (False, {"removed": 0}, [f"onnxsim failed: {'x' * 300}; {left}"])
    result, graph = _simplify_with(monkeypatch, lambda model: (onnx.ModelProto(), False))
    assert _outcome(result) == (False, {"removed": 0}, [f"onnxsim failed: its output check did not pass; {left}"])
    assert len(graph.nodes) == 7

    def renamed(model):
        other = onnx.ModelProto()
        other.CopyFrom(model)
        other.graph.input[0].name = "a"
        other.graph.output[0].name = "b"
        for node in other.graph.node:
            node.input[:] = ["a" if name == "x" else name for name in node.input]
            node.output[:] = ["b" if name == "y" else name for name in node.output]
        return other, True

    result, graph = _simplify_with(monkeypatch, renamed)
    assert _outcome(result) == (False, {"removed": 0}, [
        f"onnxsim changed the graph's inputs or outputs (inputs ['x'] -> ['a'], outputs ['y'] -> ['b']); {left}"])


def test_simplify_reports_a_change_only_when_nodes_or_ops_change(monkeypatch):
    """onnxsim's answer as the graph was: unchanged, no note, the graph's own names kept; the same count with another
    op: changed, 0 removed; fewer nodes: changed, the count removed."""
    result, graph = _simplify_with(monkeypatch, lambda model: (model, True))
    assert _outcome(result) == (False, {"removed": 0}, [])
    names = [node.name for node in graph_of(MODEL_WITH_DEAD_AND_CONSTANT_WORK).nodes]
    assert [node.name for node in graph.nodes] == names

    def relu_to_abs(model):
        other = onnx.ModelProto()
        other.CopyFrom(model)
        for node in other.graph.node:
            if node.op_type == "Relu":
                node.op_type = "Abs"
        return other, True

    result, graph = _simplify_with(monkeypatch, relu_to_abs)
    assert _outcome(result) == (True, {"removed": 0}, []) and "Abs" in ops(graph) and "Relu" not in ops(graph)

    def drop_last(model):
        other = onnx.ModelProto()
        other.CopyFrom(model)
        dead = [node for node in other.graph.node if node.op_type == "Neg" or node.output[0].startswith("dead")]
        assert dead
        other.graph.node.remove(dead[-1])
        return other, True

    result, graph = _simplify_with(monkeypatch, drop_last)
    assert _outcome(result) == (True, {"removed": 1}, []) and len(graph.nodes) == 6


@pytest.mark.parametrize("certify", [True, False])
def test_onnxsim_is_asked_not_to_certify_where_it_can_be(certify, monkeypatch):
    import onnxsim

    from passes.simplify_onnxsim import _run_onnxsim

    asked = []
    if certify:
        def simplify(model, certify=True):
            asked.append({"certify": certify})
            return model, True
    else:
        def simplify(model, **kwargs):
            asked.append(kwargs)
            return model, True
    monkeypatch.setattr(onnxsim, "simplify", simplify)
    model = onnx.ModelProto()
    assert _run_onnxsim(model) == (model, True)
    assert asked == [{"certify": False} if certify else {}]

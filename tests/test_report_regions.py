"""Region diffs: which nodes changed, how they group into rewrites, and their canonical print."""
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from passes.base import Pass, PassContext, PassResult
from passes.manager import PassManager
from passes.report.canonical import FULL_PRINT_MAX_NODES
from passes.report.grouping import describe_regions
from passes.report.provenance import read_provenance
from passes.report.recorder import PassRecorder
from passes.report.regions import changed_nodes, diff_snapshots
from passes.report.snapshot import snapshot_model
from passes.graph_io import graph_to_model


def model(body: str, inputs="float[4] x", outputs="float[4] y, float[4] z", initializers="") -> onnx.ModelProto:
    init = f"<{initializers}>" if initializers else ""
    return onnx.parser.parse_model(f"""
<ir_version: 8, opset_import: ["" : 17]>
g ({inputs}) => ({outputs}) {init} {{
{body}
}}""")


def describe(before: onnx.ModelProto, after: onnx.ModelProto) -> dict:
    return describe_regions(diff_snapshots(snapshot_model(before), snapshot_model(after)))


def node_texts(lines):
    return [text for kind, text, _ in lines if kind == "node"]


# Two blocks doing the same thing under different names; the rewrite turns x*2 into x+x.
TWO_BLOCKS = """
  two = Constant<value = float {2.0}>()
  {a} = Mul(x, two)
  y = Relu({a})
  {b} = Mul(x, two)
  z = Sigmoid({b})
"""


def two_blocks(a: str, b: str) -> str:
    return TWO_BLOCKS.replace("{a}", a).replace("{b}", b)


def test_identical_rewrites_group_and_print_without_model_names():
    before = model(two_blocks("block0_mul", "block1_mul"))
    after = model("""
  block0_mul = Add(x, x)
  y = Relu(block0_mul)
  block1_mul = Add(x, x)
  z = Sigmoid(block1_mul)
""")
    description = describe(before, after)
    assert description["regions"] == 2
    [group] = description["groups"]
    assert group["count"] == 2
    first, second = group["instances"]
    assert node_texts(first["before"]) == ["%out0 = Mul(%in0, const<f32>(2))"]
    assert node_texts(first["after"]) == ["%out0 = Add(%in0, %in0)"]
    assert node_texts(second["before"]) == node_texts(first["before"])
    # Context names the neighbours outside the region.
    assert ["context", "%out0 → Relu", ""] in [[k, t, ""] for k, t, _ in first["after"]]


def test_shared_constant_node_does_not_merge_rewrites():
    # "two" is one Constant node read by both blocks; it is removed with them but must not
    # join the two rewrites into one region.
    before = model(two_blocks("m0", "m1"))
    after = model("""
  m0 = Add(x, x)
  y = Relu(m0)
  m1 = Add(x, x)
  z = Sigmoid(m1)
""")
    assert describe(before, after)["regions"] == 2


def test_unchanged_graph_has_no_regions_and_renamed_initializer_is_not_a_change():
    body = "y = Add(x, w)\n  z = Relu(x)"
    before = model(body, initializers="float[4] w = {1.0, 2.0, 3.0, 4.0}")
    renamed = model(body.replace("w", "w_renamed"), initializers="float[4] w_renamed = {1.0, 2.0, 3.0, 4.0}")
    assert changed_nodes(snapshot_model(before), snapshot_model(before)) == ([], [])
    assert describe(before, renamed)["regions"] == 0


def test_attribute_change_is_a_change():
    before = model("y = Transpose<perm = [0]>(x)\n  z = Relu(x)")
    after = model("y = Transpose<perm = [0]>(x)\n  z = Relu(x)")
    after.graph.node[0].attribute[0].ints[:] = [1]  # not a valid model; the diff need not care
    description = describe(before, after)
    assert description["regions"] == 1
    instance = description["groups"][0]["instances"][0]
    assert node_texts(instance["before"]) == ["%out0 = Transpose(%in0) {perm=[0]}"]
    assert node_texts(instance["after"]) == ["%out0 = Transpose(%in0) {perm=[1]}"]


def test_canonical_print_does_not_depend_on_node_order():
    body_a = "t = Neg(x)\n  u = Exp(x)\n  y = Add(t, u)\n  z = Relu(x)"
    body_b = "u = Exp(x)\n  t = Neg(x)\n  y = Add(t, u)\n  z = Relu(x)"
    base = model("y = Identity(x)\n  z = Relu(x)")
    print_a = describe(base, model(body_a))["groups"][0]["instances"][0]["after"]
    print_b = describe(base, model(body_b))["groups"][0]["instances"][0]["after"]
    assert node_texts(print_a) == node_texts(print_b)


def test_huge_region_prints_summarised():
    steps = FULL_PRINT_MAX_NODES + 50
    lines = ["v0 = Neg(x)"] + [f"v{i} = Neg(v{i - 1})" for i in range(1, steps)] + [f"y = Identity(v{steps - 1})",
                                                                                      "z = Relu(x)"]
    before = model("\n  ".join(lines))
    after = model("y = Identity(x)\n  z = Relu(x)")
    [group] = describe(before, after)["groups"]
    printed = group["instances"][0]["before"]
    assert len(printed) < 20
    assert any(kind == "more" and f"in all: Neg {steps:,}" in text for kind, text, _ in printed)


class ReluToMax(Pass):
    """Relu(x) -> Max(x, 0): a pass that makes one new node per Relu."""

    name = "test-relu-to-max"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        count = 0
        for node in list(graph.nodes):
            if node.op == "Relu":
                zero = gs.Constant(f"{node.name}_zero", values=__import__("numpy").zeros((), "float32"))
                graph.nodes.append(gs.Node("Max", name=f"{node.name}_as_max", inputs=[node.inputs[0], zero],
                                           outputs=list(node.outputs)))
                node.outputs.clear()
                count += 1
        graph.cleanup().toposort()
        return PassResult(changed=count > 0, stats={"rewritten": count})


def test_recorder_gives_regions_and_provenance():
    source = model("r = Relu(x)\n  y = Neg(r)\n  z = Exp(x)")
    for index, node in enumerate(source.graph.node):
        node.name = f"n{index}"
    graph = gs.import_onnx(source)
    recorder = PassRecorder()
    PassManager([ReluToMax()], recorder=recorder, check=False).run(graph, PassContext(opset=17))
    [group] = recorder.region_descriptions[0]["groups"]
    assert group["removed_ops"] == {"Relu": 1} and group["added_ops"] == {"Max": 1}
    exported = graph_to_model(graph)
    assert recorder.stamp(exported) == 1
    assert read_provenance(exported) == {"n0_as_max": {"pass": "test-relu-to-max", "pass_index": "1"}}


def test_recorder_costs_nothing_for_unchanged_passes():
    class Nothing(Pass):
        name = "test-nothing"

        def run(self, graph, ctx):
            return PassResult(changed=False)

    graph = gs.import_onnx(model("y = Relu(x)\n  z = Exp(x)"))
    recorder = PassRecorder()
    PassManager([Nothing()], recorder=recorder, check=False).run(graph, PassContext(opset=17))
    assert recorder.region_descriptions == {} and recorder.origins == {}


@pytest.mark.parametrize("count", [1, 3])
def test_group_counts_and_pages(count):
    blocks = "\n  ".join(f"m{i} = Mul(x, x)\n  o{i} = Relu(m{i})" for i in range(count))
    rewritten = blocks.replace("Mul(x, x)", "Add(x, x)")
    outputs = ", ".join(f"float[4] o{i}" for i in range(count))
    description = describe(model(blocks, outputs=outputs), model(rewritten, outputs=outputs))
    [group] = description["groups"]
    assert group["count"] == count and len(group["instances"]) == count


# Kill the mutants of session s29 (docs/MUTATION.md, "Session s29 (mut29)"): the fallback pairing of added nodes
# by what they read, what counts as a source node, and the order of the regions.
def test_an_added_node_without_a_removed_partner_pairs_with_the_removed_reader_of_its_input():
    """The dead Exp is replaced by a dead Neg under another name: nothing shares a name, so the Neg is paired
    with the removed node that read its input x: one region, not a removed-only and an added-only one."""
    before = model("d = Exp(x)\n  y = Identity(x)\n  z = Relu(x)")
    after = model("y = Identity(x)\n  e = Neg(x)\n  z = Relu(x)")
    diff = diff_snapshots(snapshot_model(before), snapshot_model(after))
    assert [(region.removed, region.added) for region in diff.regions] == [([0], [1])]


def test_an_added_node_reading_only_a_weight_the_removed_node_read_is_not_paired_by_it():
    """A weight read on both sides is no link: the Mul's region stays apart from the added Add of w with w."""
    weights = "float[4] w = {1.0, 2.0, 3.0, 4.0}"
    before = model("d = Mul(x, w)\n  y = Identity(x)\n  z = Relu(x)", initializers=weights)
    after = model("y = Identity(x)\n  e = Add(w, w)\n  z = Relu(x)", initializers=weights)
    diff = diff_snapshots(snapshot_model(before), snapshot_model(after))
    assert [(region.removed, region.added) for region in diff.regions] == [([0], []), ([], [1])]


def test_a_node_of_weights_alone_is_a_source_and_a_node_of_values_is_not():
    """An Identity of a weight read by two blocks is a source (it joins its first reader only: two regions, as a
    shared Constant node); a Neg of the input x read by two removed nodes links them (one region)."""
    shared = two_blocks("m0", "m1").replace("two = Constant<value = float {2.0}>()", "two = Identity(w)")
    before = model(shared, initializers="float w = {2.0}")
    after = model("m0 = Add(x, x)\n  y = Relu(m0)\n  m1 = Add(x, x)\n  z = Sigmoid(m1)", initializers="float w = {2.0}")
    assert describe(before, after)["regions"] == 2
    before = model("t = Neg(x)\n  y = Exp(t)\n  z = Sigmoid(t)")
    after = model("y = Abs(x)\n  z = Relu(x)")
    diff = diff_snapshots(snapshot_model(before), snapshot_model(after))
    assert [(region.removed, region.added) for region in diff.regions] == [([0, 1, 2], [0, 1])]


def test_regions_are_ordered_by_their_first_removed_node_and_added_only_ones_come_last():
    before = model("a = Neg(x)\n  b = Exp(x)\n  y = Identity(x)\n  z = Relu(x)")
    after = model("q = Sigmoid(y)\n  y = Identity(x)\n  z = Relu(x)\n  b = Abs(x)\n  a = Tanh(x)")
    diff = diff_snapshots(snapshot_model(before), snapshot_model(after))
    assert [(region.removed, region.added) for region in diff.regions] == [([0], [4]), ([1], [3]), ([], [0])]


def test_an_unnamed_node_is_stamped_and_read_under_its_first_named_output():
    from passes.report.provenance import Origin, stamp_provenance

    unnamed = model("t = Neg(x)\n  y = Identity(t)\n  z = Relu(x)")
    unnamed.graph.node[0].metadata_props.add(key="kept", value="1")
    assert stamp_provenance(unnamed, {"output:t": Origin("test-pass", 2), "output:z": Origin("other", 1)}) == 2
    assert read_provenance(unnamed) == {"output:t": {"pass": "test-pass", "pass_index": "2"},
                                        "output:z": {"pass": "other", "pass_index": "1"}}
    assert [(p.key, p.value) for p in unnamed.graph.node[0].metadata_props] == [
        ("kept", "1"), ("pass", "test-pass"), ("pass_index", "2")]


# --- session s32 (mut35): PassRecorder called directly --------------------------------------------------------------

class _Record:
    def __init__(self, name, changed=True):
        self.name, self.changed = name, changed


def _relu_to_max(graph):
    ReluToMax().run(graph, PassContext(opset=17))


def _exp_to_abs(graph):
    """Exp -> Abs under a new name, and Neg -> Sign of no name (keyed by its first output)."""
    for node in graph.nodes:
        if node.op == "Exp":
            node.op, node.name = "Abs", f"{node.name}_as_abs"
        if node.op == "Neg":
            node.op, node.name = "Sign", ""


def _recorded_graph():
    source = model("r = Relu(x)\n  y = Neg(r)\n  z = Exp(x)")
    for index, node in enumerate(source.graph.node):
        node.name = f"n{index}"
    return gs.import_onnx(source)


@pytest.mark.parametrize("regions", [True, False])
def test_the_recorder_keys_each_changed_pass_by_its_index_and_diffs_against_the_last_change(regions):
    """Two changing passes at indices 1 and 3 (0 and 2 unchanged): origins numbered 2 and 4 (1-based), region
    descriptions under 1 and 3 when asked for, none without; the second diff is against the graph after the first
    change (its Relu -> Max not counted again); an unchanged record or one before pipeline_started records nothing."""
    graph = _recorded_graph()
    recorder = PassRecorder(regions=regions)
    assert (recorder.regions, recorder.origins, recorder.region_descriptions, recorder.seconds) == (regions, {}, {},
                                                                                                     0.0)
    recorder.pass_finished(0, _Record("early"), graph)   # no snapshot yet
    assert (recorder.origins, recorder.region_descriptions) == ({}, {})
    recorder.pipeline_started(graph)
    recorder.pass_finished(0, _Record("nothing", changed=False), graph)
    _relu_to_max(graph)
    recorder.pass_finished(1, _Record("relu-to-max"), graph)
    recorder.pass_finished(2, _Record("nothing", changed=False), graph)
    _exp_to_abs(graph)
    recorder.pass_finished(3, _Record("exp-to-abs"), graph)
    assert {key: (o.pass_name, o.pass_index) for key, o in recorder.origins.items()} == {
        "n0_as_max": ("relu-to-max", 2), "n2_as_abs": ("exp-to-abs", 4), "output:y": ("exp-to-abs", 4)}
    if not regions:
        assert recorder.region_descriptions == {}
        return
    assert sorted(recorder.region_descriptions) == [1, 3]
    [first] = recorder.region_descriptions[1]["groups"]
    assert (first["removed_ops"], first["added_ops"]) == ({"Relu": 1}, {"Max": 1})
    second = [(g["removed_ops"], g["added_ops"]) for g in recorder.region_descriptions[3]["groups"]]
    assert sorted(second, key=str) == [({"Exp": 1}, {"Abs": 1}), ({"Neg": 1}, {"Sign": 1})]


@pytest.mark.parametrize("enabled", [True, False])
def test_the_recorder_pauses_the_collector_while_it_works_and_counts_its_time(enabled, monkeypatch):
    """The cyclic GC off while a snapshot is taken and left as it was found; each timed call adds its own
    perf_counter difference to `seconds` (a clock that steps 0.25 a read: 0.25 per call)."""
    import gc
    import itertools

    import passes.report.recorder as recorder_module

    seen = []
    real_snapshot = recorder_module.snapshot_graph

    def snapshot(graph):
        seen.append(gc.isenabled())
        return real_snapshot(graph)

    clock = itertools.count()
    monkeypatch.setattr(recorder_module, "snapshot_graph", snapshot)
    monkeypatch.setattr(recorder_module.time, "perf_counter", lambda: next(clock) * 0.25)
    graph = _recorded_graph()
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        recorder = PassRecorder()
        recorder.pipeline_started(graph)
        assert (gc.isenabled(), recorder.seconds) == (enabled, 0.25)
        _relu_to_max(graph)
        recorder.pass_finished(0, _Record("relu-to-max"), graph)
        assert (gc.isenabled(), recorder.seconds) == (enabled, 0.5)
        recorder.pass_finished(1, _Record("nothing", changed=False), graph)
        assert (gc.isenabled(), recorder.seconds) == (enabled, 0.5)
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False, False]

"""compile_model's check at a second size (every symbolic input dimension at SECOND_SYMBOLIC_SIZE, session s33) against
the mutants the first tests left alive (session s34, mut37; docs/MUTATION.md): the inputs named in its words (three,
then a count), an input model that gives infinity there, the worst of several failing outputs and a failure's
problem, the compiled model's run timing out, the timeout handed to both runs."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.base import Pass, PassResult
from passes.manager import ProgressHook
from passes.verify import SECOND_SYMBOLIC_SIZE, random_feeds
from pipelines import BadInput, VerificationFailed, compile_model

CLEANUP = "eliminate-dead-nodes,fold-constants"


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _batch_minus_three(x: str, prefix: str = ""):
    """Nodes computing float(N) - 3 from x's first dimension (0 at the second size, -2 at the first), and their
    constants."""
    p = prefix
    nodes = [helper.make_node("Shape", [x], [p + "shape"]),
             helper.make_node("Gather", [p + "shape", p + "zero"], [p + "n"], axis=0),
             helper.make_node("Cast", [p + "n"], [p + "n_float"], to=TensorProto.FLOAT),
             helper.make_node("Sub", [p + "n_float", p + "three"], [p + "n_minus_three"])]
    constants = [numpy_helper.from_array(np.array(0, np.int64), p + "zero"),
                 numpy_helper.from_array(np.array(3, np.float32), p + "three")]
    return nodes, constants


def test_the_size_is_three():
    assert SECOND_SYMBOLIC_SIZE == 3
    model = _model([helper.make_node("Relu", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "W"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "W"])])
    assert random_feeds(model)["x"].shape == (1, 4, 1)
    assert random_feeds(model, symbolic_size=SECOND_SYMBOLIC_SIZE)["x"].shape == (3, 4, 3)
    # a declared 0 stays 0 (an empty batch is a size, not a symbol)
    empty = _model([helper.make_node("Relu", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 0, 1])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 0, 1])])
    assert random_feeds(empty, symbolic_size=SECOND_SYMBOLIC_SIZE)["x"].shape == (3, 0, 1)


def test_an_input_model_that_gives_infinity_at_the_second_size_is_said_not_refused():
    # y = x / (N - 3): finite at N = 1 (the first check passes), infinite at N = 3 in the input model itself
    nodes, constants = _batch_minus_three("x")
    model = _model(nodes + [helper.make_node("Div", ["x", "n_minus_three"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], constants)
    result = compile_model(model, CLEANUP)
    assert result.warnings[-1] == ("not verified with symbolic input sizes at 3 ('x' [3, 4]): the input model's "
                                   "output 'y' holds NaN or infinity there")
    assert "second_size" not in result.verification and result.verification["ok"] is True


def test_the_inputs_are_named_three_at_most_then_counted(tmp_path):
    # five symbolic inputs, all added: the words name the first three with their shapes at the second size, then
    # how many more; the report records every input's shape
    names = ["a", "b", "c\x1b[2J", "d", "e"]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 2]) for name in names]
    nodes = [helper.make_node("Sum", names, ["y"])]
    model = _model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])

    class BakesBatchOne(Pass):
        name = "test-bakes-batch-one-of-five"

        def run(self, graph, ctx):   # y = Reshape(Sum(..), [1, 2]): right at N = 1 only
            y = graph.outputs[0]
            inner = gs.Variable("sum_before", dtype=np.float32)
            y.inputs[0].outputs[0] = inner
            graph.nodes.append(gs.Node("Reshape", inputs=[inner, gs.Constant("to", np.array([1, 2], np.int64))],
                                       outputs=[y]))
            graph.toposort()
            return PassResult(changed=True)

    with pytest.raises(VerificationFailed) as error:
        compile_model(model, [BakesBatchOne()], report=tmp_path / "R")
    assert str(error.value).startswith(
        "verification failed with symbolic input sizes at 3 ('a' [3, 2], 'b' [3, 2], 'c\\x1b[2J' [3, 2], ... (2 more)), "
        "where the input model runs: the compiled model does not: ")
    assert error.value.exit_code == 3
    report = json.loads((tmp_path / "R" / "report.json").read_text())
    assert report["verification"]["second_size"]["inputs"] == {name: [3, 2] for name in names}
    assert report["verification"]["second_size"]["ok"] is False
    assert report["verification"]["second_size"]["error"].startswith("ONNX Runtime could not run the model: ")
    assert report["verification"]["second_size"]["error"] in str(error.value)
    four = _model([helper.make_node("Sum", names[:4], ["y"])], inputs[:4],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    with pytest.raises(VerificationFailed) as error:
        compile_model(four, [BakesBatchOne()])
    assert str(error.value).startswith(
        "verification failed with symbolic input sizes at 3 ('a' [3, 2], 'b' [3, 2], 'c\\x1b[2J' [3, 2], ... (1 more)), "
        "where the input model runs: ")
    three = _model([helper.make_node("Sum", names[:3], ["y"])], inputs[:3],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    with pytest.raises(VerificationFailed) as error:
        compile_model(three, [BakesBatchOne()])
    assert str(error.value).startswith(
        "verification failed with symbolic input sizes at 3 ('a' [3, 2], 'b' [3, 2], 'c\\x1b[2J' [3, 2]), where the "
        "input model runs: ")


class WrongAtThree(Pass):
    """Adds (N - 3) * 0 to `y1` (NaN at N = 3: the output's problem) and reads `y2`'s and `y3`'s input rows as the
    first row (right at N = 1 only; y3 twice as far off as y2)."""
    name = "test-wrong-at-three"

    def __init__(self, nan: bool = True) -> None:
        super().__init__()
        self.nan = nan

    def run(self, graph, ctx):
        x = graph.inputs[0]
        by_output = {tensor.name: tensor for tensor in graph.outputs}
        one = gs.Constant("one_f", np.array(1, np.float32))
        zero_f = gs.Constant("zero_f", np.array(0, np.float32))
        if self.nan:
            shape, n = gs.Variable("shape_w", dtype=np.int64), gs.Variable("n_w", dtype=np.int64)
            n_float, diff = gs.Variable("nf_w", dtype=np.float32), gs.Variable("d_w", dtype=np.float32)
            inverse, nan = gs.Variable("inv_w", dtype=np.float32), gs.Variable("nan_w", dtype=np.float32)
            y1 = by_output["y1"]
            before = gs.Variable("y1_before", dtype=np.float32)
            y1.inputs[0].outputs[0] = before
            graph.nodes += [
                gs.Node("Shape", inputs=[x], outputs=[shape]),
                gs.Node("Gather", inputs=[shape, gs.Constant("zero_i", np.array(0, np.int64))], outputs=[n],
                        attrs={"axis": 0}),
                gs.Node("Cast", inputs=[n], outputs=[n_float], attrs={"to": TensorProto.FLOAT}),
                gs.Node("Sub", inputs=[n_float, gs.Constant("three_f", np.array(3, np.float32))], outputs=[diff]),
                gs.Node("Div", inputs=[one, diff], outputs=[inverse]),
                gs.Node("Mul", inputs=[inverse, zero_f], outputs=[nan]),
                gs.Node("Add", inputs=[before, nan], outputs=[y1])]
        row, shape_x, first = (gs.Variable("row", dtype=np.float32), gs.Variable("shape_x", dtype=np.int64),
                               gs.Variable("first", dtype=np.float32))
        graph.nodes += [gs.Node("Slice", inputs=[x, gs.Constant("s0", np.array([0], np.int64)),
                                                 gs.Constant("s1", np.array([1], np.int64)),
                                                 gs.Constant("s2", np.array([0], np.int64))], outputs=[row]),
                        gs.Node("Shape", inputs=[x], outputs=[shape_x]),
                        gs.Node("Expand", inputs=[row, shape_x], outputs=[first])]
        for name in ("y2", "y3"):
            node = by_output[name].inputs[0]
            node.inputs[0] = first
        graph.toposort()
        return PassResult(changed=True)


def _three_outputs() -> onnx.ModelProto:
    # y1 = Relu(x), y2 = Sum(x, x, x), y3 = Neg(x); WrongAtThree reads the first of each of y2's and y3's inputs as
    # x's first row: the same error d, y2's rel L2 |d| / |3 x|, y3's |d| / |x|, three times as large
    nodes = [helper.make_node("Relu", ["x"], ["y1"]), helper.make_node("Sum", ["x", "x", "x"], ["y2"]),
             helper.make_node("Neg", ["x"], ["y3"])]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 4]) for name in ("y1", "y2", "y3")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])], outputs)


def test_the_worst_of_several_failing_outputs_is_named_with_its_problem(tmp_path):
    # y1 NaN at N = 3 (its problem said), y2 and y3 off by their first row: the worst, y1 (rel L2 nan), is named
    with pytest.raises(VerificationFailed) as error:
        compile_model(_three_outputs(), [WrongAtThree()], output=tmp_path / "o.onnx", report=tmp_path / "R")
    message = str(error.value)
    assert message.startswith("verification failed with symbolic input sizes at 3 ('x' [3, 4]): output 'y1' rel L2 "
                              "nan > tolerance 1e-05 (max abs nan, ")
    assert message.endswith(") against the input model, right at the first sizes only; no output written")
    assert not (tmp_path / "o.onnx").exists()
    report = json.loads((tmp_path / "R" / "report.json").read_text())
    second = report["verification"]["second_size"]
    assert (report["status"], second["ok"], [o["ok"] for o in second["outputs"]]) == (
        "verification-failed", False, [False, False, False])


def test_the_worst_failing_output_is_the_one_of_largest_rel_l2(tmp_path):
    # no NaN: y1 right, y2 and y3 off by their first row, y3 three times as far (rel L2): y3 is named, not the first
    # failing output
    with pytest.raises(VerificationFailed) as error:
        compile_model(_three_outputs(), [WrongAtThree(nan=False)], report=tmp_path / "R")
    report = json.loads((tmp_path / "R" / "report.json").read_text())
    by_name = {output["name"]: output for output in report["verification"]["second_size"]["outputs"]}
    assert [by_name[name]["ok"] for name in ("y1", "y2", "y3")] == [True, False, False]
    assert by_name["y3"]["rel_l2"] == pytest.approx(3 * by_name["y2"]["rel_l2"], rel=1e-5)
    # the second size's inputs are random_feeds' of seed 1 (the first run's are seed 0's): the figure repeats run to
    # run, and is that of y3 = -x read as -x[0] on them
    x = random_feeds(_three_outputs(), seed=1, symbolic_size=3)["x"].astype(np.float64)
    assert by_name["y3"]["rel_l2"] == pytest.approx(np.linalg.norm(x[:1] - x) / np.linalg.norm(x), rel=1e-5)
    assert str(error.value) == (
        f"verification failed with symbolic input sizes at 3 ('x' [3, 4]): output 'y3' rel L2 "
        f"{by_name['y3']['rel_l2']:.3g} > tolerance 1e-05 (max abs {by_name['y3']['max_abs']:.3g}) against the "
        "input model, right at the first sizes only; no output written")


def test_an_output_with_nan_is_the_worst_whatever_its_place():
    # y1 NaN at N = 3 but the last output: a NaN rel L2 compared False with every number, so the worst was whichever
    # output came first (y3, rel L2 1.34 here) and the NaN went unsaid (session s34, mut37); now y1 is named
    model = _three_outputs()
    outputs = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend([outputs[1], outputs[2], outputs[0]])
    with pytest.raises(VerificationFailed) as error:
        compile_model(model, [WrongAtThree()])
    assert str(error.value).startswith("verification failed with symbolic input sizes at 3 ('x' [3, 4]): output 'y1' "
                                       "rel L2 nan > tolerance 1e-05 (max abs nan, non-finite values) against")


class NanAfterAnError(Pass):
    """y2 off by 1 everywhere, y3 NaN everywhere (Sqrt(-1) added), with a hint for NaN."""
    name = "test-nan-after-an-error"

    def run(self, graph, ctx):
        by_output = {tensor.name: tensor for tensor in graph.outputs}
        for name, op, constant in (("y2", "Add", 1.0), ("y3", "Add", np.nan)):
            node = by_output[name].inputs[0]
            before = gs.Variable(name + "_before", dtype=np.float32)
            node.outputs[0] = before
            graph.nodes.append(gs.Node(op, inputs=[before, gs.Constant(name + "_c", np.array(constant, np.float32))],
                                       outputs=[by_output[name]]))
        graph.toposort()
        return PassResult(changed=True)

    def non_finite_hint(self):
        return "the test pass adds NaN"


def test_the_first_check_names_an_output_with_nan_and_its_hint_after_a_finite_failure():
    # the first check shares the choice: y2 off by one before y3 NaN named y2 and dropped the passes' NaN hints
    with pytest.raises(VerificationFailed) as error:
        compile_model(_three_outputs(), [NanAfterAnError()])
    assert str(error.value) == ("verification failed: output 'y3' rel L2 nan > tolerance 1e-05 (max abs nan, "
                                "non-finite values); the test pass adds NaN; no output written")


class Shown(ProgressHook):
    """A progress display that keeps what it was asked to show as a warning."""

    def __init__(self) -> None:
        self.warned: list[str] = []

    def warn(self, message: str) -> None:
        self.warned.append(message)


def test_every_warning_of_the_load_and_the_second_size_is_shown_as_it_is_made():
    # the model's left-out fields, a contradicted value_info and the second size's warning: each shown on the
    # progress display when made, the same lines as the result's warnings
    nodes, constants = _batch_minus_three("x")
    model = _model(nodes + [helper.make_node("Div", ["x", "n_minus_three"], ["t"]),
                            helper.make_node("Identity", ["t"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], constants)
    model.graph.value_info.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4]))
    model.graph.metadata_props.add(key="k", value="v")
    shown = Shown()
    result = compile_model(model, CLEANUP, progress=shown)
    assert shown.warned == result.warnings
    assert [warning.split(" ")[0:3] for warning in result.warnings] == [
        ["the", "compiled", "model"], ["dropped", "the", "declared"], ["no", "reference", "npz;"],
        ["not", "verified", "with"]]


def _recording_runs(monkeypatch, time_out_at: int | None = None, fail_at: int | None = None):
    """compile_model's ONNX Runtime runs recorded as (first input's shape, timeout); `time_out_at`: the run of that
    number (from 0) times out instead; `fail_at`: that run fails with a message of 300 'e's."""
    import pipelines.compiler as compiler
    from passes.verify import RunTimedOut, VerificationError

    runs, real = [], compiler.run_model

    def run_model(model, feeds, log=None, **kwargs):
        runs.append((list(next(iter(feeds.values())).shape), kwargs.get("timeout")))
        if len(runs) - 1 == time_out_at:
            raise RunTimedOut("timed out")
        if len(runs) - 1 == fail_at:
            raise VerificationError("e" * 300)
        return real(model, feeds, log=log, **kwargs)

    monkeypatch.setattr(compiler, "run_model", run_model)
    return runs


def test_both_runs_at_the_second_size_take_the_verify_timeout(monkeypatch):
    runs = _recording_runs(monkeypatch)
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    compile_model(model, CLEANUP, verify_timeout=7)
    assert runs == [([1, 4], 7.0), ([1, 4], 7.0), ([3, 4], 7.0), ([3, 4], 7.0)]


def test_the_compiled_models_run_timing_out_at_the_second_size_is_bad_input(monkeypatch, tmp_path):
    from passes.verify import timed_out_advice

    runs = _recording_runs(monkeypatch, time_out_at=3)
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    with pytest.raises(BadInput) as error:
        compile_model(model, CLEANUP, verify_timeout=7, output=tmp_path / "o.onnx", report=tmp_path / "R")
    assert str(error.value) == (f"cannot verify with symbolic input sizes at 3 ('x' [3, 4]): the compiled model's "
                                f"run: {timed_out_advice(7.0)}; no output written")
    assert error.value.exit_code == 2 and not (tmp_path / "o.onnx").exists() and len(runs) == 4
    report = json.loads((tmp_path / "R" / "report.json").read_text())
    assert report["verification"]["second_size"] == {"size": 3, "inputs": {"x": [3, 4]}, "ok": False,
                                                     "error": "timed out"}


def test_an_input_model_failing_at_the_second_size_is_said_in_200_characters_of_its_error(monkeypatch):
    _recording_runs(monkeypatch, fail_at=2)
    model = _model([helper.make_node("Relu", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    assert compile_model(model, CLEANUP).warnings[-1] == (
        "not verified with symbolic input sizes at 3 ('x' [3, 4]): the input model does not run there ("
        + "e" * 200 + "); --input-shape compiles it for one size")


class Steps(ProgressHook):
    """A progress display that keeps its steps and stage lines in order."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []

    def step(self, label: str):
        import contextlib

        self.shown.append(("step", label))
        return contextlib.nullcontext()

    def stage(self, text: str) -> None:
        self.shown.append(("stage", text))


def test_the_second_size_is_one_step_on_the_display_with_both_runs_stages():
    model = _model([helper.make_node("Relu", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    steps = Steps()
    compile_model(model, CLEANUP, progress=steps)
    labels = [text for kind, text in steps.shown if kind == "step"]
    assert labels[-1] == "verify with symbolic input sizes at 3 in ONNX Runtime"
    after = steps.shown[steps.shown.index(("step", labels[-1])) + 1:]
    assert [text.split(" (")[0] for kind, text in after] == ["creating ONNX Runtime session"] * 2


def test_the_second_size_compares_at_the_tolerance_given():
    # y2, y3 off by their first row at N = 3 (rel L2 about 0.45 and 1.3): within a tolerance of 10, recorded so
    result = compile_model(_three_outputs(), [WrongAtThree(nan=False)], tolerance=10)
    second = result.verification["second_size"]
    assert second["ok"] is True and 1 < second["rel_l2"] < 10
    assert [output["tolerance"] for output in second["outputs"]] == [10, 10, 10]

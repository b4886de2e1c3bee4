"""Run a list of passes on one in-memory graph and record what each did.

The graph is never serialised between passes. Only after a pass that changed the graph is
it exported (in memory) for ``onnx.checker`` and strict shape inference, and, with
``verify_each``, run in ONNX Runtime and compared with the outputs of the graph before the
pass. Passes that changed nothing skip all of that (at 50k nodes an export alone is ~3 s).
A graph that fails either check stops the run (``PassCheckError``, naming the pass): no later
pass, and no output, sees an invalid model.

Op histograms are one ``Counter`` over the node list per pass (O(n)); the histogram after
one pass is the histogram before the next.
"""
from __future__ import annotations

import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, PassInputError, PassResult
from passes.graph_io import ModelMeta, graph_to_model, over_protobuf_limit, serialized_model
from passes.one_line import one_line
from passes.verify import (RunTimedOut, VerificationError, check_timeout, compare, compared_as_written, run_model,
                           summarize)


class PipelineError(Exception):
    """A pass raised. The message names it and the passes that ran before it."""

    def __init__(self, message: str, pass_name: str, ran_before: list[str], run: "PipelineRun | None" = None):
        super().__init__(message)
        self.pass_name = pass_name
        self.ran_before = ran_before
        self.run = run  # what completed before the failure, for a report


class PassVerificationError(VerificationError):
    """With verify_each: a pass changed the model's outputs beyond tolerance."""

    def __init__(self, message: str, pass_name: str, run: "PipelineRun | None" = None, timed_out: bool = False):
        super().__init__(message)
        self.pass_name = pass_name
        self.run = run
        self.timed_out = timed_out   # ONNX Runtime's run passed verify_timeout: no verdict on the pass


class PassCheckError(PassVerificationError):
    """The graph after a pass fails onnx.checker or strict shape inference. Raised with or without
    verify_each: it is recorded in the pass's record too."""


@dataclass
class PassRecord:
    name: str
    options: dict[str, Any]
    seconds: float
    changed: bool
    stats: dict[str, Any]
    notes: list[str]
    nodes_before: int
    nodes_after: int
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    # After minus before, both signs, zero entries left out: {"Loop": +11, "Mul": -40000}.
    ops_delta: dict[str, int]
    # "ok", "error: <message>", "skipped (unchanged)" or "off".
    checker: str = "off"
    shape_inference: str = "off"
    check_seconds: float = 0.0
    # verify.summarize() of the comparison with the graph before this pass, if verified.
    verification: dict[str, Any] | None = None
    verify_seconds: float = 0.0

    @property
    def main_stat(self) -> tuple[str, Any] | None:
        """The first stat, which by convention is the pass's headline count ("rerolled": 11)."""
        return next(iter(self.stats.items()), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "options": self.options, "seconds": round(self.seconds, 4),
            "changed": self.changed, "stats": self.stats, "notes": self.notes,
            "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
            "ops_before": self.ops_before, "ops_after": self.ops_after, "ops_delta": self.ops_delta,
            "checker": self.checker, "shape_inference": self.shape_inference,
            "check_seconds": round(self.check_seconds, 4),
            "verification": self.verification, "verify_seconds": round(self.verify_seconds, 4),
        }


@dataclass
class PipelineRun:
    pipeline: str
    records: list[PassRecord]
    graph: gs.Graph
    total_seconds: float
    nodes_before: int
    nodes_after: int
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    # Outputs of the input graph on the verification feeds, when verify_each computed them
    # (the CLI reuses them for the final check instead of running the big graph twice).
    initial_outputs: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (the graph itself is left out)."""
        return {
            "pipeline": self.pipeline,
            "total_seconds": round(self.total_seconds, 4),
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "ops_before": self.ops_before,
            "ops_after": self.ops_after,
            "ops_delta": op_delta(self.ops_before, self.ops_after),
            "passes": [record.to_dict() for record in self.records],
        }


class ProgressHook:
    """What the manager (and ``compile_model``) tell a display; every method is optional.
    The CLI subclasses it with a rich spinner."""

    def step(self, label: str) -> ContextManager[None]:
        """A context manager around a slow step outside the passes (load, verify, write)."""
        return nullcontext()

    def warn(self, message: str) -> None:
        """Something the user should know that does not stop the run."""

    def pass_started(self, index: int, total: int, pass_: Pass) -> None: ...

    def stage(self, text: str) -> None:
        """A slow step inside the current pass's slot: export, checker, ORT session."""

    def pass_finished(self, index: int, total: int, record: PassRecord) -> None: ...


def op_histogram(graph: gs.Graph) -> dict[str, int]:
    return dict(Counter(node.op for node in graph.nodes))


def op_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    delta = Counter(after)
    delta.subtract(before)  # keeps negative counts, unlike Counter '-'
    return {op: count for op, count in sorted(delta.items()) if count != 0}


class PassManager:
    def __init__(
        self,
        passes: Sequence[Pass],
        *,
        pipeline_text: str | None = None,
        verify_each: bool = False,
        check: bool = True,
        progress: ProgressHook | None = None,
        meta: ModelMeta | None = None,
        verify_feeds: Mapping[str, np.ndarray] | None = None,
        initial_outputs: Mapping[str, np.ndarray] | None = None,
        tolerance: float = 1e-5,
        verify_timeout: float | None = None,
        on_changed_model: Callable[[int, PassRecord, onnx.ModelProto], None] | None = None,
        recorder: Any = None,
    ) -> None:
        """``passes``: Pass instances (``Pipeline.build()`` makes them from a pipeline);
        ``pipeline_text`` names the run in its record (default: the passes' reprs).

        ``verify_timeout``: seconds each ONNX Runtime run of verify_each may take (none: no limit).

        ``on_changed_model(index, record, model)`` is called with the exported model after
        every pass that changed the graph (used by --keep-intermediates).

        ``recorder`` (e.g. ``passes.report.recorder.PassRecorder``) is told
        ``pipeline_started(graph)`` and ``pass_finished(index, record, graph)``; it sees which
        nodes each pass changed (report regions, node provenance). Its models are stamped
        with provenance before ``on_changed_model`` sees them.
        """
        self.passes: list[Pass] = list(passes)
        self.pipeline_text = pipeline_text if pipeline_text is not None else ",".join(repr(p) for p in self.passes)
        self.verify_each = verify_each
        self.check = check
        self.progress = progress or ProgressHook()
        self.meta = meta
        self.verify_feeds = verify_feeds
        self.initial_outputs = initial_outputs
        self.tolerance = tolerance
        self.verify_timeout = check_timeout(verify_timeout, "verify_timeout")   # refused here, before any pass runs
        self.on_changed_model = on_changed_model
        self.recorder = recorder

    def run(self, graph: gs.Graph, ctx: PassContext | None = None) -> PipelineRun:
        ctx = ctx or PassContext(opset=self.meta.opset if self.meta else graph.opset)
        started = time.perf_counter()
        ops_initial = op_histogram(graph)
        run = PipelineRun(self.pipeline_text, [], graph, 0.0, len(graph.nodes), len(graph.nodes),
                          ops_initial, ops_initial)

        if self.recorder is not None:
            self.recorder.pipeline_started(graph)
        previous_outputs = None
        if self.verify_each:
            previous_outputs = self._initial_outputs(graph)
            run.initial_outputs = previous_outputs

        ops_before = ops_initial
        unmeasured_change = None   # the record of the last change no export measured (check=False, adv20)
        for index, pass_ in enumerate(self.passes):
            self.progress.pass_started(index, len(self.passes), pass_)
            nodes_before = len(graph.nodes)
            pass_started = time.perf_counter()
            try:
                result = pass_.run(graph, ctx)
                if not isinstance(result, PassResult):
                    raise TypeError(f"run() returned {type(result).__name__}, not PassResult")
            except (Exception, SystemExit, GeneratorExit) as error:   # a pass's sys.exit(0) was the CLI's exit 0 (adv17)
                ran = [record.name for record in run.records]
                run.total_seconds = time.perf_counter() - started
                raise PipelineError(
                    f"pass '{pass_.name}' failed after [{', '.join(ran)}]: {type(error).__name__}: {one_line(error, limit=400)}",
                    pass_.name, ran, run,
                ) from error
            seconds = time.perf_counter() - pass_started
            ops_after = op_histogram(graph)
            record = PassRecord(
                name=pass_.name, options=pass_.options(), seconds=seconds, changed=bool(result.changed),
                stats=dict(result.stats), notes=list(result.notes),
                nodes_before=nodes_before, nodes_after=len(graph.nodes),
                ops_before=ops_before, ops_after=ops_after, ops_delta=op_delta(ops_before, ops_after),
            )
            run.records.append(record)
            ops_before = ops_after
            if self.recorder is not None:
                self.progress.stage("recording changes")
                self.recorder.pass_finished(index, record, graph)

            if record.changed:
                model = inferred = None
                if self.check or self.verify_each or self.on_changed_model:
                    self.progress.stage("exporting")
                    model = graph_to_model(graph, self.meta)
                    # adv19: 132 folded constants of 16 MiB went on to 'internal error: EncodeError: Failed to
                    # serialize proto' at the write (exit 1, 137 s and 8.7 GB later); the checks cannot look past it
                    data, size = serialized_model(model)
                    self._refuse_past_protobuf_limit(size, len(run.records) - 1, run)
                    unmeasured_change = None
                else:
                    unmeasured_change = len(run.records) - 1
                if self.check:
                    inferred = self._check(data, record, run)
                if self.verify_each:
                    previous_outputs = self._verify(model, record, previous_outputs, run, inferred)
                if self.on_changed_model:
                    if self.recorder is not None:
                        self.recorder.stamp(model)
                    self.on_changed_model(index, record, model)
            else:
                skipped = "skipped (unchanged)"
                record.checker = record.shape_inference = skipped if self.check else "off"
            self.progress.pass_finished(index, len(self.passes), record)

        if unmeasured_change is not None:
            # check=False with no verification and no intermediates exported nothing: the caller's own write met
            # protobuf's 'EncodeError: Failed to serialize proto' past 2 GiB (adv19's leftover). One export and
            # serialization here, at the end (what a checked run pays after every pass that changes the graph).
            self._refuse_past_protobuf_limit(serialized_model(graph_to_model(graph, self.meta))[1],
                                             unmeasured_change, run)
        run.total_seconds = time.perf_counter() - started
        run.nodes_after = len(graph.nodes)
        run.ops_after = ops_before
        return run

    @staticmethod
    def _refuse_past_protobuf_limit(size: int, record_index: int, run: PipelineRun) -> None:
        """PipelineError (from PassInputError: compile_model's bad input, exit 2) for a model past 2 GiB, naming the
        pass of ``run.records[record_index]``, after which it was measured."""
        too_large = over_protobuf_limit("compiled, it grows to", size)
        if too_large:
            pass_name = run.records[record_index].name
            ran_before = [record.name for record in run.records[:record_index]]
            raise PipelineError(f"pass '{pass_name}': {too_large}", pass_name, ran_before, run) \
                from PassInputError(too_large)

    def _initial_outputs(self, graph: gs.Graph) -> dict[str, np.ndarray]:
        if self.verify_feeds is None:
            raise ValueError("verify_each needs verify_feeds")
        if self.initial_outputs is not None:
            return dict(self.initial_outputs)
        self.progress.stage("running the input graph for per-pass verification")
        return run_model(graph_to_model(graph, self.meta), self.verify_feeds, log=self.progress.stage,
                         timeout=self.verify_timeout, optimize=False)

    def _check(self, model: bytes, record: PassRecord, run: PipelineRun) -> onnx.ModelProto | None:
        """Raises PassCheckError where the model (serialized: both checks take its bytes, which they would each
        serialize again from a ModelProto) is invalid; returns what shape inference made of it (verification's size
        cap reuses it), or None where it could not look."""
        check_started = time.perf_counter()
        failures = []
        checks = (("onnx.checker", "checker", lambda: onnx.checker.check_model(model, full_check=False)),
                  ("shape inference", "shape_inference", lambda: onnx.shape_inference.infer_shapes(model, strict_mode=True)))
        inferred = None
        for stage, field_name, run_check in checks:
            self.progress.stage(stage)
            try:
                result = run_check()
                setattr(record, field_name, "ok")
                if field_name == "shape_inference":
                    inferred = result
            except Exception as error:
                setattr(record, field_name, f"error: {one_line(error, limit=400)}")
                # Only what the check found wrong with the model stops the run; a model it cannot
                # look at (over protobuf's 2 GiB: ValueError) is recorded and left to ONNX Runtime.
                if isinstance(error, (onnx.checker.ValidationError, onnx.shape_inference.InferenceError)):
                    failures.append(f"{stage}: {one_line(error, limit=300)}")
        record.check_seconds = time.perf_counter() - check_started
        if failures:
            raise PassCheckError(f"pass '{record.name}' produced an invalid model: {failures[0]}", record.name, run)
        return inferred

    def _verify(self, model, record, previous_outputs, run, inferred=None) -> dict[str, np.ndarray]:
        verify_started = time.perf_counter()
        self.progress.stage("verifying with ONNX Runtime")
        try:
            outputs = run_model(model, self.verify_feeds, log=self.progress.stage, plain_inferred=inferred,
                                timeout=self.verify_timeout)
        except VerificationError as error:
            raise PassVerificationError(f"after pass '{record.name}': {error}", record.name, run,
                                        timed_out=isinstance(error, RunTimedOut)) from None
        comparisons = compare(outputs, previous_outputs, rtol_l2=self.tolerance)
        # the graph before it may have run as written (the input graph: optimisations off), this one optimised: in
        # float16 the optimisations alone moved a graph rel L2 2.1e-4, blamed on the first pass that changed it
        # (adv23). Run as written too, like with like; passing so, the pass is not what moved it.
        comparisons = compared_as_written(model, self.verify_feeds, previous_outputs, comparisons, self.tolerance,
                                          self.progress.stage, plain_inferred=inferred,
                                          timeout=self.verify_timeout) or comparisons
        record.verification = summarize(comparisons)
        record.verify_seconds = time.perf_counter() - verify_started
        failed = [c for c in comparisons if not c.ok]
        if failed:
            worst = max(failed, key=lambda c: c.rel_l2)
            raise PassVerificationError(
                f"pass '{record.name}' changed output '{worst.name}': rel L2 {worst.rel_l2:.3g} > "
                f"{self.tolerance:g}, max abs {worst.max_abs:.3g}{' (' + worst.problem + ')' if worst.problem else ''}",
                record.name, run)
        return outputs

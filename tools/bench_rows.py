"""The rows that tools.bench times: how each is built (export, pipeline) and how it runs.

An ONNX row wraps an ONNX Runtime session (its creation is timed); a PyTorch row wraps an
eager model with one scan. Both have ``run(x) -> logits`` and ``unsupported(batch) -> reason``.
"""
from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from passes.files import write_text_atomic
from passes.relative_error import relative_l2

INPUT_NAME = "input"

# Row keys in table order, with their labels; ablation rows are added by cpu_ablation_variants.
ROW_LABELS = {
    "naive": "naive ONNX (unrolled)",
    "fork": "fork's method (chunk24 by hand, exported)",
    "seed": "seed pipeline",
    "tpu": "tpu pipeline",
    "cpu": "cpu pipeline",
    "cpu-2t": "cpu pipeline, 2 threads",
    "cpu-many": "cpu-many pipeline (for many threads)",
    "cpu-many-2t": "cpu-many pipeline, 2 threads",
    "ov": "ov pipeline (for OpenVINO), on ONNX Runtime",
    "ov-fork": "OpenVINO f32, fork's method graph",
    "ov-cpu": "OpenVINO f32, cpu pipeline graph",
    "ov-cpu-default": "OpenVINO default precision, cpu pipeline graph",
    "ov-cpu-many": "OpenVINO f32, cpu-many pipeline graph",
    "ov-ov": "OpenVINO f32, ov pipeline graph",
    "torch-sequential": "PyTorch eager, sequential scan",
    "torch-chunked": "PyTorch eager, chunked scan",
    "torch-chunk24": "PyTorch eager, fork's chunk24 scan",
}
PIPELINE_ROWS = ("seed", "tpu", "cpu", "cpu-many", "ov")
# Rows run unless --rows says otherwise; the OpenVINO rows need the optional extra (pip install .[openvino]),
# cpu-2t and cpu-many-2t compare thread counts within one run (on a many-core host).
DEFAULT_ROWS = ("naive", "fork", "seed", "tpu", "cpu", "torch-sequential", "torch-chunked", "torch-chunk24")
# Rows that run another row's graph: key -> (graph of row, runtime, precision).
GRAPH_OF = {"cpu-2t": "cpu", "cpu-many-2t": "cpu-many", "ov-fork": "fork", "ov-cpu": "cpu", "ov-cpu-default": "cpu",
            "ov-cpu-many": "cpu-many", "ov-ov": "ov"}
# Rows that run their graph in ONNX Runtime at 2 threads whatever --threads says.
TWO_THREAD_ROWS = ("cpu-2t", "cpu-many-2t")


class BenchError(RuntimeError):
    """A benchmark that cannot go on; the message is one line for the user."""


# ---------------------------------------------------------------------------------- model
def build_bench_model(name: str, config, seed: int = 0):
    """(model in eval mode, batch-1 sample the naive export uses) for a named model and its config.

    Mirrors ``python -m vmamba_ref.export``: micro-digits loads the embedded weights and uses
    the first held-out digit as its sample; other models get the official init with ``seed``
    and a seeded random sample, so an export made by that CLI with the same seed matches.
    """
    import torch

    from vmamba_ref import build_model, load_checkpoint

    model = build_model(config, scan="sequential", seed=seed)
    sample = None
    if name == "micro-digits":
        from vmamba_ref import DIGITS_WEIGHTS

        if not Path(DIGITS_WEIGHTS).exists():
            raise BenchError(f"{DIGITS_WEIGHTS} is missing (train it with python -m tools.train_digits)")
        load_checkpoint(model, DIGITS_WEIGHTS)
        if (config.img_size, config.in_chans) == (64, 3):
            from vmamba_ref.digits import load_digits_split

            sample = torch.from_numpy(load_digits_split().x_test[:1])
    if sample is None:
        gen = torch.Generator().manual_seed(seed)
        sample = torch.randn(1, config.in_chans, config.img_size, config.img_size, generator=gen)
    return model.eval(), sample.float().contiguous()


def random_batch(config, batch: int, seed: int) -> np.ndarray:
    import torch

    gen = torch.Generator().manual_seed(seed + batch)
    return torch.randn(batch, config.in_chans, config.img_size, config.img_size, generator=gen).numpy()


def torch_logits(model, x: np.ndarray, scan: str) -> np.ndarray:
    from vmamba_ref.export import reference_logits
    import torch

    return reference_logits(model, torch.from_numpy(x), scan)


# ---------------------------------------------------------------------------------- ONNX files
def onnx_batch_dim(path: Path) -> int | str | None:
    """The input's batch dimension: an int (static), a symbol name (dynamic), or None (unknown)."""
    import onnx

    model = onnx.load(str(path), format="protobuf", load_external_data=False)
    for value in model.graph.input:
        if value.name == INPUT_NAME:
            dim = value.type.tensor_type.shape.dim[0]
            return int(dim.dim_value) if dim.HasField("dim_value") else (dim.dim_param or None)
    raise BenchError(f"{path}: no graph input named {INPUT_NAME!r}")


def node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), format="protobuf", load_external_data=False).graph.node)


def graph_signature(path: Path) -> str:
    """Hash of what a graph computes: nodes (op, inputs, outputs, attributes) in order and the initializers.

    Node names, metadata and initializer order are left out, so two pipelines that made the
    same graph get the same signature even when their files differ byte for byte.
    """
    import hashlib

    import onnx

    model = onnx.load(str(path), format="protobuf")
    digest = hashlib.sha256()
    for node in model.graph.node:
        digest.update(node.op_type.encode() + b"(" + ",".join(node.input).encode() + b")->" + ",".join(node.output).encode())
        for attribute in sorted(node.attribute, key=lambda a: a.name):
            digest.update(attribute.SerializeToString(deterministic=True))
    for tensor in sorted(model.graph.initializer, key=lambda t: t.name):
        digest.update(tensor.SerializeToString(deterministic=True))
    for value in list(model.graph.input) + list(model.graph.output):
        digest.update(value.SerializeToString(deterministic=True))
    return digest.hexdigest()[:16]


def ensure_naive(model, sample, path: Path, *, dynamic_batch: bool, status: Callable[[str], None],
                 scan: str = "sequential") -> bool:
    """Export the naive graph (or with scan="chunk24" the fork's method) to path (+ .ref.npz) unless both
    exist; True if it exported."""
    from vmamba_ref.export import export_naive, ref_path_for

    if path.exists() and ref_path_for(path).exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    export_naive(copy.deepcopy(model), path, batch=1, dynamic_batch=dynamic_batch, sample=sample,
                 check=False, status=status, scan=scan)
    return True


@dataclass
class PipelineBuild:
    ok: bool
    seconds: float
    message: str          # a summary line, or "error: ..." when not ok
    log_path: Path


def _compile_and_log(naive: str, pipeline: str, output: str) -> tuple[bool, str, str]:
    """(ok, message, log text) of ``compile_model``; top level so that a child process can run it."""
    from passes.one_line import one_line
    from pipelines import CompileError, compile_model

    try:
        result = compile_model(naive, pipeline, output=output)
    except CompileError as error:
        message = f"error: {one_line(error)}"
        return False, message, message
    except Exception as error:  # a bug: the table says so instead of dying
        message = f"error: internal error: {type(error).__name__}: {one_line(error)}"
        return False, message, message
    lines = [f"{index}. {record.name}: {record.nodes_before:,} -> {record.nodes_after:,} nodes, {record.seconds:.2f} s"
             for index, record in enumerate(result.records, start=1)]
    message = (f"{result.nodes_before:,} -> {result.nodes_after:,} nodes, rel L2 "
               f"{result.verification['rel_l2']:.3g} against {result.verification['against']}")
    return True, message, "\n".join([*lines, message])


def compile_pipeline(naive: Path, pipeline: str, output: Path, log_path: Path, *, in_process: bool = True) -> PipelineBuild:
    """``compile_model(naive, pipeline, output=output)``, one line per pass to log_path.

    In process for small graphs (no second interpreter start); in a child process for big
    ones, so that the compiler's peak memory is returned before the sessions are created.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if in_process:
        ok, message, text = _compile_and_log(str(naive), pipeline, str(output))
    else:
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
            ok, message, text = child.submit(_compile_and_log, str(naive), pipeline, str(output)).result()
    seconds = time.perf_counter() - t0
    # --workdir may be reused or anyone's: a link planted at the log's name is replaced, never written through (adv24)
    write_text_atomic(log_path, f"compile_model({str(naive)!r}, {pipeline!r}, output={str(output)!r})\n{text}\n", "log")
    return PipelineBuild(ok and output.exists(), seconds, message, log_path)


def cpu_ablation_variants() -> list[tuple[str, str, str]]:
    """(key, label, pipeline text): the cpu pipeline with one rewrite removed, or its scan form swapped."""
    from pipelines import get_pipeline
    from pipelines.pipeline import Pipeline, Step

    cpu = get_pipeline("cpu")
    variants = []
    for index, step in enumerate(cpu.steps):
        if step.pass_name == "reroll-scans":
            if step.options.get("form") != "chunk24":
                options = dict(step.options, form="chunk24", chunk=24)
                swapped = Pipeline("x", "", cpu.steps[:index] + [Step(step.pass_name, options)] + cpu.steps[index + 1:])
                variants.append(("cpu-form-chunk24", "cpu, chunk24 scan form", str(swapped)))
            continue    # without the re-roll it is the naive graph, cleaned up: the naive row covers it
        if step.pass_name == "unroll-loops":
            continue    # VMamba's export has no Loop or Scan: without it the graph is the same
        rest = Pipeline("x", "", cpu.steps[:index] + cpu.steps[index + 1:])
        variants.append((f"cpu-no-{step.pass_name}", f"cpu without {step.pass_name}", str(rest)))
    return variants


# ---------------------------------------------------------------------------------- runners
class OnnxRow:
    """What an ONNX Runtime row knows of its graph, wherever its session lives (this process:
    ``OnnxRunner``; a worker process: ``tools.bench_workers.OnnxWorker``): the file, and the batch
    its input is fixed at (None: any batch)."""
    kind = "onnx"

    def __init__(self, path: Path, static_batch: int | None):
        self.path = Path(path)
        self.static_batch = static_batch

    def unsupported(self, batch: int) -> str | None:
        if self.static_batch is not None and batch != self.static_batch:
            return "static batch"
        return None


def checked_model_bytes(path: Path) -> bytes:
    """The graph at ``path`` read once, as the compiler reads a model (passes.model_check.model_for_runtime: a
    regular file, its external data from its folder only, its local functions within the compiler's expansion cap
    and without a cycle), serialized for ONNX Runtime; BenchError (one line) otherwise. A graph in --workdir may be
    anyone's (reused, planted): ONNX Runtime given the path opened it again after the check (adv24: a file put in
    its place between the two was what ran, unchecked), and inlined local functions past the cap in native code that
    SIGTERM does not interrupt (adv9). (OpenVINO refuses local functions: 'No conversion rule found for
    operations'.)"""
    from passes.graph_io import InputError
    from passes.model_check import model_for_runtime

    try:
        return model_for_runtime(path)
    except InputError as error:
        raise BenchError(str(error)) from None


class OnnxRunner(OnnxRow):
    """An ONNX Runtime session in this process."""

    def __init__(self, path: Path, threads: int, spinning: bool = False):
        import onnxruntime as ort

        data = checked_model_bytes(path)   # before the session's timer: it times ONNX Runtime's load of the bytes
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning workers fight the caller (and the next row) for the cores on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.log_severity_level = 3
        t0 = time.perf_counter()
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.session_seconds = time.perf_counter() - t0
        self.output_name = self.session.get_outputs()[0].name
        dim0 = next(i for i in self.session.get_inputs() if i.name == INPUT_NAME).shape[0]
        super().__init__(path, dim0 if isinstance(dim0, int) else None)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {INPUT_NAME: x})[0]

    def close(self) -> None:
        self.session = None


class OpenVinoRunner:
    """OpenVINO's CPU plugin on an ONNX file, compiled for a static batch on first use at that batch.

    ``precision`` "f32" sets INFERENCE_PRECISION_HINT=f32; None keeps the plugin's default (bf16 on CPUs
    with AVX-512 BF16 or AMX), which ``precision_used`` reports. One stream, ``threads`` inference threads.
    """
    kind = "openvino"

    def __init__(self, path: Path, threads: int, precision: str | None):
        try:
            import openvino
        except ImportError:
            raise BenchError("the OpenVINO rows need the openvino package (pip install .[openvino])") from None
        self.core = openvino.Core()
        self.path, self.threads, self.precision = path, threads, precision
        self.compiled: dict[int, object] = {}
        t0 = time.perf_counter()
        self.model = self.core.read_model(str(path))
        self._compile(1)
        self.session_seconds = time.perf_counter() - t0
        hint = self.compiled[1][0].get_property("INFERENCE_PRECISION_HINT")
        self.precision_used = hint.to_string() if hasattr(hint, "to_string") else str(hint)   # "bf16", "f32"
        self.static_batch = None

    def _compile(self, batch: int):
        import openvino

        model = self.model.clone()
        inputs = model.inputs
        shape = list(inputs[0].get_partial_shape())
        shape[0] = batch
        model.reshape({inputs[0]: openvino.PartialShape(shape)})
        config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if self.precision:
            config["INFERENCE_PRECISION_HINT"] = self.precision
        compiled = self.core.compile_model(model, "CPU", config)
        self.compiled[batch] = (compiled, compiled.create_infer_request())

    def unsupported(self, batch: int) -> str | None:
        return None

    def run(self, x: np.ndarray) -> np.ndarray:
        if len(x) not in self.compiled:
            self._compile(len(x))
        _, request = self.compiled[len(x)]
        return np.array(request.infer([x])[0])

    def close(self) -> None:
        self.compiled = {}


class TorchRunner:
    kind = "torch"
    session_seconds = None

    def __init__(self, model, scan: str):
        from vmamba_ref import set_scan

        self.model = set_scan(copy.deepcopy(model), scan).eval()

    def unsupported(self, batch: int) -> str | None:
        return None

    def run(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy()

    def close(self) -> None:
        self.model = None


def run_timed(runner, x: np.ndarray) -> tuple[np.ndarray, float]:
    """(output, seconds) of one run; a runner with a clock of its own (``last_seconds``: a worker
    process) gives its time of the run, without the input's transfer."""
    t0 = time.perf_counter()
    out = runner.run(x)
    seconds = time.perf_counter() - t0
    return out, getattr(runner, "last_seconds", None) or seconds


def predict_in_batches(runner, x: np.ndarray, batch: int = 100) -> np.ndarray:
    """Logits for many images; a static-batch ONNX row gets exactly its batch (the last one padded)."""
    step = getattr(runner, "static_batch", None) or batch
    chunks = []
    for start in range(0, len(x), step):
        xb = x[start:start + step]
        n = len(xb)
        if n < step and getattr(runner, "static_batch", None):
            xb = np.concatenate([xb, np.repeat(xb[-1:], step - n, axis=0)])
        chunks.append(runner.run(np.ascontiguousarray(xb))[:n])
    return np.concatenate(chunks)


def error_metrics(got: np.ndarray, reference: np.ndarray) -> dict:
    got64, ref64 = np.asarray(got, np.float64), np.asarray(reference, np.float64)
    return {"max_abs": float(np.abs(got64 - ref64).max()),
            "rel_l2": relative_l2(got64, ref64)}

"""Naive ONNX export of the reference VMamba (the compiler's input).

    python -m vmamba_ref.export --model micro-digits -o out/naive.onnx
    python -m vmamba_ref.export --model vmamba-t --ckpt vssm_tiny_0230_ckpt_epoch_262.pth --dynamic-batch -o t.onnx
    python -m vmamba_ref.export --model micro --resolution 192x256 -o wide.onnx    # height x width

Uses the TorchScript exporter (dynamo=False) by default, or with ``--exporter dynamo`` the
torch.export-based one (opset 18, needs onnxscript); both unroll the sequential scan's Python
loop into one group of nodes per time step. Beside ``X.onnx`` it writes ``X.ref.npz``: the sample
input under the ONNX input name ("input"), the float32 PyTorch logits under the output name
("logits") and the float64-scan logits under "logits@float64".
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from passes.files import DestinationError, atomic_targets, check_destination, check_not_read
from passes.interrupts import exit_code, sigterm_as_interrupt
from passes.one_line import OneLineArgumentParser, ascii_int, one_line, printable, seed_int
from passes.relative_error import relative_l2 as rel_l2  # noqa: F401 (mamba1d and the tests import it from here)

from .checkpoint import CheckpointError, load_checkpoint
from .config import MAX_SIZE, ConfigError, VMambaConfig, add_config_args, config_from_args
from .model import VSSM, build_model, set_scan
from .scan import INDEXES, READOUTS, add_step_hook, remove_step_hook

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
FLOAT64_KEY = "logits@float64"
EXPORTERS = ("torchscript", "dynamo")
# The scan forms an export can carry: the naive per-step loop (the compiler's input), or
# chunk24 written by hand like the ONNX fork (no Einsum): the baseline a user of the fork runs.
EXPORT_SCANS = ("sequential", "chunk24")
DYNAMO_OPSET = 18   # the dynamo exporter writes opset 18; lower requests come back as 18 (or fail)


class ExportError(RuntimeError):
    """An export request that cannot be honoured (message is one line)."""


@dataclass
class ExportResult:
    onnx_path: Path
    ref_path: Path
    nodes: int
    op_histogram: dict[str, int]
    export_seconds: float
    checks: dict[str, dict[str, float]] = field(default_factory=dict)   # batch label -> metrics


def ref_path_for(onnx_path: str | os.PathLike) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.stem + ".ref.npz")


def op_histogram(model_proto) -> dict[str, int]:
    hist: dict[str, int] = {}
    for node in model_proto.graph.node:
        hist[node.op_type] = hist.get(node.op_type, 0) + 1
    return dict(sorted(hist.items()))


def reference_logits(model: VSSM, x: torch.Tensor, scan: str = "sequential", **scan_options) -> np.ndarray:
    """Logits of ``model`` with the given scan; the model's own scan is restored afterwards."""
    saved = [(m, m.scan_fn) for m in model.modules() if hasattr(m, "scan_fn")]
    try:
        set_scan(model, scan, **scan_options)
        with torch.no_grad():
            return model(x).numpy()
    finally:
        for m, fn in saved:
            m.scan_fn = fn


def run_onnxruntime(onnx_path: str | os.PathLike, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    return sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def default_opset(exporter: str) -> int:
    return DYNAMO_OPSET if exporter == "dynamo" else 17


def validate_request(path: Path, *, opset: int, readout: str, index: str, dynamic_batch: bool,
                     exporter: str = "torchscript", reads: tuple = ()) -> None:
    """Raise ExportError (one line) for requests that cannot be exported, before the (long) export.

    Both destinations, ``path`` and its ``.ref.npz``, must be absent or regular files in a folder
    that takes files, and neither may be a file the export reads (``reads``: (role, path) pairs,
    e.g. the checkpoint).
    """
    try:
        check_destination(path, "output")   # first: '/' or '.' have no name to derive the reference's from
        for destination, what in ((Path(path), "output"), (ref_path_for(path), "reference output")):
            check_destination(destination, what)
            check_not_read(destination, reads, what)
    except DestinationError as error:
        raise ExportError(str(error)) from None
    if not 12 <= opset <= 18:
        raise ExportError(f"opset must be in 12..18, got {opset}")
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r} (known: {', '.join(EXPORTERS)})")
    if exporter == "dynamo" and opset != DYNAMO_OPSET:
        raise ExportError(f"the dynamo exporter writes opset {DYNAMO_OPSET} only, got --opset {opset}")
    if readout not in READOUTS:
        raise ExportError(f"unknown readout {readout!r} (known: {', '.join(READOUTS)})")
    if index not in INDEXES:
        raise ExportError(f"unknown index {index!r} (known: {', '.join(INDEXES)})")
    if readout.startswith("conv") and dynamic_batch:
        raise ExportError(f"readout '{readout}' bakes batch * channels into the Conv groups attribute; "
                          "it cannot be exported with --dynamic-batch")


def torch_onnx_export(module: torch.nn.Module, sample: torch.Tensor, path: str | os.PathLike, *, opset: int,
                      dynamic_batch: bool = False, exporter: str = "torchscript", input_name: str = INPUT_NAME,
                      output_name: str = OUTPUT_NAME) -> None:
    """``torch.onnx.export`` of ``module(sample)`` with one input and one output, either exporter.

    Weights stay inside the file. A dynamic batch is the symbolic axis 0 named "batch".
    An exporter failure becomes an ExportError with the exporter's first line.
    """
    try:
        _torch_onnx_export(module, sample, path, opset=opset, dynamic_batch=dynamic_batch, exporter=exporter,
                           input_name=input_name, output_name=output_name)
    except ExportError:
        raise
    except Exception as error:
        first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ExportError(f"{exporter} exporter failed: {type(error).__name__}: {first.strip()[:300]}") from error


def _torch_onnx_export(module, sample, path, *, opset, dynamic_batch, exporter, input_name, output_name) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            dynamic_axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(module, (sample,), str(path), input_names=[input_name], output_names=[output_name],
                              opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True,
                              dynamo=False)
            return
        if exporter != "dynamo":
            raise ExportError(f"unknown exporter {exporter!r} (known: {', '.join(EXPORTERS)})")
        dynamic_shapes = None
        if dynamic_batch:
            dynamic_shapes = ({0: torch.export.Dim("batch")},)
            if len(sample) == 1:   # torch.export specialises size-1 axes: trace at batch 2
                sample = torch.cat([sample, sample])
        torch_onnx_logger = logging.getLogger("torch.onnx")   # "torchvision is not installed" x4
        level = torch_onnx_logger.level
        torch_onnx_logger.setLevel(logging.ERROR)
        try:
            torch.onnx.export(module, (sample,), str(path), input_names=[input_name], output_names=[output_name],
                              opset_version=opset, dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False,
                              verbose=False)
        finally:
            torch_onnx_logger.setLevel(level)


def export_naive(model: VSSM, path: str | os.PathLike, *, batch: int = 1, dynamic_batch: bool = False,
                 opset: int | None = None, readout: str = "einsum", index: str = "gather", seed: int = 0,
                 sample: torch.Tensor | None = None, resolution: int | tuple[int, int] | None = None, check: bool = True,
                 check_batch: int = 3, exporter: str = "torchscript", status=None,
                 scan: str = "sequential") -> ExportResult:
    """Export ``model`` with the sequential scan to ``path`` (+ ``.ref.npz``), atomically.

    ``sample`` (N, C, H, W) overrides the seeded random input, whose (H, W) is ``resolution`` (an int:
    square) or the config's ``img_hw``; ``check`` runs onnxruntime on the
    sample (and, with ``dynamic_batch``, also at batch 1 and ``check_batch``) against PyTorch.
    ``status(msg)`` receives progress messages. ``opset`` defaults to 17 (torchscript) or 18 (dynamo).
    ``scan="chunk24"`` exports the fork-style chunk24 instead (readout/index do not apply); its
    reference logits are PyTorch's with that same scan.
    """
    import onnx

    say = status or (lambda msg: None)
    cfg: VMambaConfig = model.config
    path = Path(path)
    opset = default_opset(exporter) if opset is None else opset
    validate_request(path, opset=opset, readout=readout, index=index, dynamic_batch=dynamic_batch, exporter=exporter)
    if scan not in EXPORT_SCANS:
        raise ExportError(f"unknown scan {scan!r} (known: {', '.join(EXPORT_SCANS)})")
    scan_options = dict(readout=readout, index=index) if scan == "sequential" else {}
    res = cfg.img_hw if resolution is None else (resolution, resolution) if isinstance(resolution, int) else resolution
    if sample is None:
        if batch < 1:
            raise ExportError(f"batch must be >= 1, got {batch}")
        gen = torch.Generator().manual_seed(seed)
        sample = torch.randn(batch, cfg.in_chans, *res, generator=gen)
    res = tuple(int(side) for side in sample.shape[2:])   # the steps traced are the sample's
    sample = sample.float().contiguous()

    model.eval()
    say(f"computing PyTorch reference logits (float32 {scan}, float64)")
    ref32 = reference_logits(model, sample, scan, **scan_options)
    ref64 = reference_logits(model, sample, "float64")

    set_scan(model, scan, **scan_options)
    steps_per_forward = max(cfg.scan_steps(res), 1)
    traced = [0]

    def on_step(i, L):
        traced[0] += 1
        if traced[0] % 64 == 0:
            done = (traced[0] - 1) % steps_per_forward + 1
            say(f"tracing: {done}/{steps_per_forward} scan steps")

    t0 = time.time()
    # The model and its reference replace the old pair together (an interrupt between them is held back).
    with atomic_targets(path, ref_path_for(path), suffixes=(".onnx.tmp", ".npz.tmp")) as (tmp_onnx, tmp_npz):
        say(f"tracing ({exporter} exporter)")
        add_step_hook(on_step)
        try:
            torch_onnx_export(model, sample, tmp_onnx, opset=opset, dynamic_batch=dynamic_batch, exporter=exporter)
        finally:
            remove_step_hook(on_step)
        export_seconds = time.time() - t0
        say("writing reference npz")
        with open(tmp_npz, "wb") as f:
            np.savez(f, **{INPUT_NAME: sample.numpy(), OUTPUT_NAME: ref32, FLOAT64_KEY: ref64})
        say("loading exported graph")
        proto = onnx.load(str(tmp_onnx), load_external_data=False)
        result = ExportResult(path, ref_path_for(path), len(proto.graph.node), op_histogram(proto), export_seconds)
        del proto
        if check:
            say("running onnxruntime check")
            got = run_onnxruntime(tmp_onnx, sample.numpy())
            result.checks[f"batch{len(sample)}"] = _metrics(got, ref32, ref64)
            if dynamic_batch:
                for b in sorted({1, check_batch} - {len(sample)}):
                    gen = torch.Generator().manual_seed(seed + b)
                    xb = torch.randn(b, cfg.in_chans, *res, generator=gen)
                    got_b = run_onnxruntime(tmp_onnx, xb.numpy())
                    want_b = reference_logits(model, xb, scan, **scan_options)
                    result.checks[f"batch{b}"] = _metrics(got_b, want_b, None)
    return result


def _metrics(got: np.ndarray, ref32: np.ndarray, ref64: np.ndarray | None) -> dict[str, float]:
    if got.shape != ref32.shape:
        raise ExportError(f"onnxruntime output shape {list(got.shape)} != PyTorch {list(ref32.shape)}")
    out = {"max_abs": float(np.abs(got.astype(np.float64) - ref32).max()), "rel_l2": rel_l2(got, ref32)}
    if ref64 is not None:
        out["rel_l2_vs_float64"] = rel_l2(got, ref64)
    return out


# ---------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    ap = OneLineArgumentParser(prog="python -m vmamba_ref.export",
                        description="Naive (unrolled sequential scan) ONNX export of the reference VMamba.")
    add_config_args(ap, default_model="micro-digits", non_square=True)
    ap.add_argument("--ckpt", type=Path, help="checkpoint ({'model': sd}, {'model_ema': sd} or a state dict)")
    ap.add_argument("--batch", type=ascii_int, default=1, help="sample batch size (default 1)")
    ap.add_argument("--dynamic-batch", action="store_true", help="symbolic batch axis (checked at batch 1 and 3)")
    ap.add_argument("--opset", type=ascii_int, choices=range(12, 19), metavar="{12..18}",
                    help="ONNX opset (default 17; the dynamo exporter writes 18 only)")
    ap.add_argument("--exporter", default="torchscript", choices=EXPORTERS,
                    help="torch.onnx.export with dynamo=False (default) or dynamo=True (needs onnxscript)")
    ap.add_argument("--scan", default="sequential", choices=EXPORT_SCANS,
                    help="sequential: the naive per-step loop (default, the compiler's input); chunk24: the ONNX "
                         "fork's hand-written chunk24 without Einsum (the baseline a fork user runs)")
    ap.add_argument("--readout", default="einsum", choices=READOUTS)
    ap.add_argument("--index", default="gather", choices=INDEXES)
    ap.add_argument("--seed", type=seed_int, default=0, help="seed of the init (no checkpoint) and of the sample input")
    ap.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    ap.add_argument("-o", "--output", required=True)   # str: Path() would drop a trailing '/'
    return ap


def _build(args) -> tuple[VSSM, torch.Tensor | None]:
    cfg = config_from_args(args)
    model = build_model(cfg, scan="sequential", seed=args.seed)
    sample = None
    if args.model == "micro-digits" and args.ckpt is None:
        from . import DIGITS_WEIGHTS
        load_checkpoint(model, DIGITS_WEIGHTS)
        if (cfg.img_hw, cfg.in_chans) == ((64, 64), 3):   # real held-out digits as the sample input
            from .digits import load_digits_split
            sample = torch.from_numpy(load_digits_split().x_test[: args.batch])
    elif args.ckpt is not None:
        load_checkpoint(model, args.ckpt)
    return model, sample


def _checkpoint_read(args) -> tuple:
    """(role, path) of the weights file the export will read, for the destination checks."""
    if args.ckpt is not None:
        return (("checkpoint", args.ckpt),)
    if args.model == "micro-digits":
        from . import DIGITS_WEIGHTS
        return (("embedded weights file", DIGITS_WEIGHTS),)
    return ()


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    with sigterm_as_interrupt():
        return _main(args)


def _main(args) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    t_start = time.time()
    try:
        if args.batch < 1:
            raise ExportError(f"--batch must be >= 1, got {args.batch}")
        if args.batch > MAX_SIZE:   # adv21: past int64, torch's TypeError traceback
            raise ExportError(f"--batch must be at most {MAX_SIZE} (a tensor dimension), got {args.batch}")
        opset = default_opset(args.exporter) if args.opset is None else args.opset
        validate_request(args.output, opset=opset, readout=args.readout, index=args.index,
                         dynamic_batch=args.dynamic_batch, exporter=args.exporter, reads=_checkpoint_read(args))
        if args.scan != "sequential" and (args.readout, args.index) != ("einsum", "gather"):
            raise ExportError("--readout and --index apply to --scan sequential only")
        model, sample = _build(args)
        cfg = model.config
        console.print(f"[bold]{args.model}[/]: dims {cfg.dims}, depths {list(cfg.depths)}, d_state {cfg.d_state}, "
                      f"{cfg.img_hw[0]}x{cfg.img_hw[1]}, {cfg.scan_steps()} scan steps, "
                      f"scan {args.scan}, readout {args.readout}, index {args.index}, opset {opset}, {args.exporter} exporter, "
                      f"batch {'dynamic' if args.dynamic_batch else args.batch}")
        with console.status("starting") as spinner:
            def status(msg):
                spinner.update(f"{msg}  [dim]({time.time() - t_start:.0f}s)[/]")
                if not msg.startswith("tracing:"):
                    console.log(msg)
            result = export_naive(model, args.output, batch=args.batch, dynamic_batch=args.dynamic_batch,
                                  opset=opset, readout=args.readout, index=args.index, seed=args.seed,
                                  sample=sample, check=not args.no_check, exporter=args.exporter, status=status,
                                  scan=args.scan)
    except (ConfigError, CheckpointError, ExportError, OSError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        # "Storage size calculation overflowed": sizes each under 2^31 whose product passes int64 (adv21)
        if isinstance(exc, RuntimeError) and not any(
                text in str(exc) for text in ("can't allocate memory", "Storage size calculation overflowed")):
            raise   # a bug, not a size: exit 1 with its traceback
        # --dims, --resolution or --d-state too large for this machine (torch's allocator says so)
        print(f"error: the model or its sample does not fit in memory: {one_line(exc, limit=300)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print("error: interrupted (no file written)", file=sys.stderr)
        return exit_code(interrupt)
    top = ", ".join(f"{op} {n}" for op, n in sorted(result.op_histogram.items(), key=lambda kv: -kv[1])[:8])
    print(f"wrote {printable(result.onnx_path)} ({result.nodes} nodes; {top}) in {result.export_seconds:.1f}s "
          f"and {printable(result.ref_path)}")
    for label, m in result.checks.items():
        extra = f", rel L2 vs float64 {m['rel_l2_vs_float64']:.2e}" if "rel_l2_vs_float64" in m else ""
        print(f"onnxruntime vs PyTorch at {label}: max abs logit diff {m['max_abs']:.2e}, rel L2 {m['rel_l2']:.2e}{extra}")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

"""A plain 1-D Mamba block (a sequence model, not vision) and its naive ONNX export.

The block of Mamba v1 (``mamba_simple.Mamba``) with the reference's pluggable scan:

    in_proj -> (x, z);  x -> causal depthwise conv1d -> SiLU -> x_proj -> (dt, B, C)
    dt -> dt_proj (bias as the scan's delta_bias, softplus inside the scan)
    y = selective_scan(x, dt, A = -exp(A_log), B, C, D);  y * SiLU(z) -> out_proj

It has one selective scan over the sequence, so its naive export holds one unrolled chain
(the compiler must find it in a graph that is not VMamba's).

    python -m vmamba_ref.mamba1d --length 37 -o m.onnx      # writes m.onnx and m.ref.npz
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from passes.files import atomic_targets
from passes.interrupts import exit_code, sigterm_as_interrupt
from passes.one_line import OneLineArgumentParser, ascii_int, one_line, printable, seed_int

from .config import MAX_SIZE
from .export import (EXPORTERS, ExportError, default_opset, ref_path_for, rel_l2, torch_onnx_export,
                     validate_request)
from .model import _dt_init
from .scan import INDEXES, READOUTS, get_scan

INPUT_NAME = "input"
OUTPUT_NAME = "output"
FLOAT64_KEY = "output@float64"


class Mamba1D(nn.Module):
    """(batch, length, d_model) -> (batch, length, d_model)."""

    def __init__(self, d_model: int = 16, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto"):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, kernel_size=d_conv, groups=d_inner, padding=d_conv - 1)
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        weight, bias = _dt_init(self.dt_rank, d_inner)
        with torch.no_grad():
            self.dt_proj.weight.copy_(weight)
            self.dt_proj.bias.copy_(bias)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.scan_fn = get_scan("sequential")

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        length = int(hidden.shape[1])        # static; only the batch axis may be symbolic
        N, R = self.d_state, self.dt_rank
        xz = self.in_proj(hidden).transpose(1, 2)                           # (b, 2D, L)
        x, z = xz.chunk(2, dim=1)
        x = self.act(self.conv1d(x)[..., :length])                           # causal: drop the right padding
        x_dbl = self.x_proj(x.transpose(1, 2))                               # (b, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [R, N, N], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)               # (b, D, L); bias goes to the scan
        B = B.transpose(1, 2).unsqueeze(1).contiguous()                      # (b, 1, N, L): one group
        C = C.transpose(1, 2).unsqueeze(1).contiguous()
        A = -torch.exp(self.A_log.float())
        y = self.scan_fn(x, dt, A, B, C, self.D.float(), self.dt_proj.bias.float(), True)
        y = y * self.act(z)
        return self.out_proj(y.transpose(1, 2))


def build_mamba1d(d_model: int = 16, d_state: int = 16, seed: int | None = 0, **kwargs) -> Mamba1D:
    if seed is None:
        return Mamba1D(d_model, d_state, **kwargs).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Mamba1D(d_model, d_state, **kwargs).eval()


def _run(model: Mamba1D, x: torch.Tensor, scan: str, **options) -> np.ndarray:
    saved = model.scan_fn
    try:
        model.scan_fn = get_scan(scan, **options)
        with torch.no_grad():
            return model(x).numpy()
    finally:
        model.scan_fn = saved


@dataclass
class Mamba1DExport:
    onnx_path: Path
    ref_path: Path
    nodes: int
    export_seconds: float
    rel_l2: float | None     # onnxruntime vs PyTorch on the sample (None without check)


def export_mamba1d_naive(model: Mamba1D, path: str | os.PathLike, *, length: int = 37, batch: int = 1,
                         dynamic_batch: bool = False, opset: int | None = None, readout: str = "einsum",
                         index: str = "gather", exporter: str = "torchscript", seed: int = 0,
                         check: bool = True) -> Mamba1DExport:
    """Export with the sequential scan to ``path`` and ``<stem>.ref.npz`` (input, output, output@float64)."""
    import onnx

    opset = default_opset(exporter) if opset is None else opset
    validate_request(path, opset=opset, readout=readout, index=index, dynamic_batch=dynamic_batch, exporter=exporter)
    path = Path(path)
    if length < 1 or batch < 1:
        raise ExportError(f"length and batch must be >= 1, got {length} and {batch}")
    sample = torch.randn(batch, length, model.d_model, generator=torch.Generator().manual_seed(seed))
    ref32 = _run(model, sample, "sequential", readout=readout, index=index)
    ref64 = _run(model, sample, "float64")
    saved = model.scan_fn
    model.scan_fn = get_scan("sequential", readout=readout, index=index)
    t0 = time.time()
    try:
        with atomic_targets(path, ref_path_for(path), suffixes=(".onnx.tmp", ".npz.tmp")) as (tmp_onnx, tmp_npz):
            torch_onnx_export(model, sample, tmp_onnx, opset=opset, dynamic_batch=dynamic_batch, exporter=exporter,
                              input_name=INPUT_NAME, output_name=OUTPUT_NAME)
            seconds = time.time() - t0
            with open(tmp_npz, "wb") as f:
                np.savez(f, **{INPUT_NAME: sample.numpy(), OUTPUT_NAME: ref32, FLOAT64_KEY: ref64})
            nodes = len(onnx.load(str(tmp_onnx), load_external_data=False).graph.node)
            error = None
            if check:
                import onnxruntime as ort

                session = ort.InferenceSession(str(tmp_onnx), providers=["CPUExecutionProvider"])
                error = rel_l2(session.run([OUTPUT_NAME], {INPUT_NAME: sample.numpy()})[0], ref32)
    finally:
        model.scan_fn = saved
    return Mamba1DExport(path, ref_path_for(path), nodes, seconds, error)


def main(argv=None) -> int:
    ap = OneLineArgumentParser(prog="python -m vmamba_ref.mamba1d",
                        description="Naive (unrolled sequential scan) ONNX export of a 1-D Mamba block.")
    ap.add_argument("--d-model", type=ascii_int, default=16)
    ap.add_argument("--d-state", type=ascii_int, default=16)
    ap.add_argument("--length", type=ascii_int, default=37, help="sequence length L (static)")
    ap.add_argument("--batch", type=ascii_int, default=1)
    ap.add_argument("--dynamic-batch", action="store_true")
    ap.add_argument("--opset", type=ascii_int, choices=range(12, 19), metavar="{12..18}")
    ap.add_argument("--exporter", default="torchscript", choices=EXPORTERS)
    ap.add_argument("--readout", default="einsum", choices=READOUTS)
    ap.add_argument("--index", default="gather", choices=INDEXES)
    ap.add_argument("--seed", type=seed_int, default=0)
    ap.add_argument("-o", "--output", required=True)   # str: Path() would drop a trailing '/'
    args = ap.parse_args(argv)
    with sigterm_as_interrupt():
        return _main(args)


def _main(args) -> int:
    try:
        if args.d_model < 1 or args.d_state < 1:
            raise ExportError("--d-model and --d-state must be >= 1")
        for flag, value in (("--d-model", args.d_model), ("--d-state", args.d_state), ("--length", args.length),
                            ("--batch", args.batch)):
            if value > MAX_SIZE:   # adv21: past int64, torch's TypeError traceback, exit 1
                raise ExportError(f"{flag} must be at most {MAX_SIZE} (a tensor dimension), got {value}")
        model = build_mamba1d(args.d_model, args.d_state, seed=args.seed)
        result = export_mamba1d_naive(model, args.output, length=args.length, batch=args.batch,
                                      dynamic_batch=args.dynamic_batch, opset=args.opset, readout=args.readout,
                                      index=args.index, exporter=args.exporter, seed=args.seed)
    except (ExportError, OSError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:   # as vmamba_ref.export: a size too large for this machine
        if isinstance(exc, RuntimeError) and not any(
                text in str(exc) for text in ("can't allocate memory", "Storage size calculation overflowed")):
            raise   # a bug, not a size: exit 1 with its traceback
        print(f"error: the model or its sample does not fit in memory: {one_line(exc, limit=300)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print("error: interrupted (no file written)", file=sys.stderr)
        return exit_code(interrupt)
    print(f"wrote {printable(result.onnx_path)} ({result.nodes} nodes) in {result.export_seconds:.1f}s and {printable(result.ref_path)}; "
          f"onnxruntime vs PyTorch rel L2 {result.rel_l2:.2e}")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

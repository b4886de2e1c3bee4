"""Export variants: every way a naive export can come out, each re-rolled by every pipeline.

    python -m tools.variants_table                    # rewrite docs/VARIANTS.md
    python -m tools.variants_table --only opset12-slice-dynamic,mamba1d -o /tmp/v.md

Each variant is a real export (``vmamba_ref.export`` or ``vmamba_ref.mamba1d``) of a small
model, compiled with ``passes.apply`` (in process) by the pipelines that make sense for it
(tpu only where shapes are static). tests/test_export_variants.py checks the same variants.
"""
from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from passes.files import DestinationError, check_destination, write_text_atomic
from passes.one_line import OneLineArgumentParser, one_line, printable
from passes.relative_error import relative_l2
from tools.tpu_qtable import NORM_LINEAGE  # layernorm-channels-first names its nodes with it

# Small on purpose: a few seconds per export. Stages at 24x24 are 6x6, 3x3, 2x2: L = 36, 9, 4,
# none a multiple of the chunk sizes (24 seed/tpu, 8 cpu), and every stage has a chain (L >= 2).
DIMS, DEPTHS, RESOLUTION = 16, (1, 1, 1), 24
MAMBA1D_LENGTH, MAMBA1D_D_MODEL = 37, 16
CHECK_BATCH = 3          # dynamic-batch variants are also checked at this batch
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Variant:
    name: str
    what: str                     # the one thing this variant varies, for the table
    model: str = "vmamba"         # vmamba | mamba1d
    exporter: str = "torchscript"
    opset: int | None = None      # None: the exporter's default (17 torchscript, 18 dynamo)
    batch: int = 1
    dynamic_batch: bool = False
    readout: str = "einsum"
    index: str = "gather"
    d_state: int = 1
    resolution: int | tuple[int, int] = RESOLUTION   # a square side, or (height, width)
    ssm_ratio: float | None = None   # None: the config's (2.0)
    dt_rank: int | None = None       # None: "auto", ceil(dim / 16) per stage

    @property
    def height_width(self) -> tuple[int, int]:
        return (self.resolution, self.resolution) if isinstance(self.resolution, int) else self.resolution

    def config(self):
        from vmamba_ref.config import get_config

        height, width = self.height_width
        return get_config("micro", dims=DIMS, depths=DEPTHS, img_size=height,
                          img_width=width if width != height else None, d_state=self.d_state,
                          ssm_ratio=self.ssm_ratio, dt_rank=self.dt_rank)

    @property
    def resolved_opset(self) -> int:
        return self.opset if self.opset is not None else (18 if self.exporter == "dynamo" else 17)

    @property
    def pipelines(self) -> tuple[str, ...]:
        # The tpu pipeline assumes static shapes (tpu-mlir compiles one fixed shape).
        return ("seed", "cpu") if self.dynamic_batch else ("seed", "cpu", "tpu")

    @property
    def expected_scans(self) -> int:
        return 1 if self.model == "mamba1d" else sum(DEPTHS)   # one SS2D per block, one scan each

    @property
    def scan_lengths(self) -> list[int]:
        if self.model == "mamba1d":
            return [MAMBA1D_LENGTH]
        config = self.config()
        return [h * w for depth, (h, w) in zip(config.depths, config.stage_resolutions()) for _ in range(depth)]


VARIANTS: list[Variant] = [
    Variant("base", "opset 17, gather, einsum, batch 1, N 1 (the default export)"),
    Variant("opset12-gather", "opset 12", opset=12),
    Variant("opset12-slice-mulsum", "opset 12, Slice+Squeeze, Mul+ReduceSum", opset=12, index="slice", readout="mulsum"),
    Variant("opset12-slice-dynamic", "opset 12, Slice, dynamic batch: every Squeeze inside an If", opset=12,
            index="slice", dynamic_batch=True),
    Variant("opset13-slice", "opset 13, Slice+Squeeze (axes as inputs)", opset=13, index="slice"),
    Variant("opset13-mulsum", "opset 13, Mul+ReduceSum", opset=13, readout="mulsum"),
    Variant("opset18-gather", "opset 18", opset=18),
    Variant("opset18-slice-mulsum", "opset 18, Slice+Squeeze, Mul+ReduceSum", opset=18, index="slice", readout="mulsum"),
    Variant("batch2", "static batch 2", batch=2),
    Variant("dynamic", "dynamic batch", dynamic_batch=True),
    Variant("dynamic-slice-mulsum", "dynamic batch, Slice, Mul+ReduceSum", dynamic_batch=True, index="slice",
            readout="mulsum"),
    Variant("conv", "grouped conv1d readout", readout="conv"),
    Variant("conv-batch2", "grouped conv1d readout, batch 2 (groups = 2 * KD)", readout="conv", batch=2),
    Variant("conv-channels-n4", "the fork's d_state > 1 readout: grouped conv1d over N channels, N = 4",
            readout="conv-channels", d_state=4),
    Variant("n16", "d_state N = 16", d_state=16),
    Variant("n16-slice-mulsum", "N = 16, Slice, Mul+ReduceSum", d_state=16, index="slice", readout="mulsum"),
    Variant("res32", "32x32: L = 64, 16, 4 (multiples of 8)", resolution=32),
    Variant("res40", "40x40: L = 100, 25, 9 (several chunks, ragged last chunk)", resolution=40),
    # Session s32 (gen20): planes other than square (detection and segmentation inputs); the cross-scan's
    # H/W swap turns an H x W plane into W x H. Both orders, odd sides, and the d_state/ssm_ratio/dt_rank knobs.
    Variant("res24x32", "24x32 (H < W): planes 6x8, 3x4, 2x2", resolution=(24, 32)),
    Variant("res36x28", "36x28 (H > W): planes 9x7, 5x4, 3x2 (odd sides)", resolution=(36, 28)),
    Variant("res28x36-n4-ratio1-dt3", "28x36, N = 4, ssm_ratio 1, dt_rank 3", resolution=(28, 36), d_state=4,
            ssm_ratio=1.0, dt_rank=3),
    Variant("res36x28-n16-dynamic", "36x28, N = 16, dynamic batch", resolution=(36, 28), d_state=16,
            dynamic_batch=True),
    Variant("dynamo", "dynamo exporter (opset 18)", exporter="dynamo"),
    Variant("dynamo-dynamic", "dynamo exporter, dynamic batch", exporter="dynamo", dynamic_batch=True),
    Variant("dynamo-slice-mulsum", "dynamo exporter, Slice, Mul+ReduceSum", exporter="dynamo", index="slice",
            readout="mulsum"),
    # Session s17's generality probe: re-rolled nothing before, the dynamo exporter writes each view() as a
    # Reshape with allowzero=1, which the per-step replay of this readout refused.
    Variant("dynamo-conv-channels-n4", "dynamo exporter, the fork's grouped conv1d over N = 4 channels "
            "(view()s as allowzero Reshapes)", exporter="dynamo", readout="conv-channels", d_state=4),
    Variant("mamba1d", f"1-D Mamba block, L = {MAMBA1D_LENGTH}, N = 16", model="mamba1d", d_state=16),
    Variant("mamba1d-opset12-dynamic", "1-D Mamba, opset 12, Slice, dynamic batch (If-guarded)", model="mamba1d",
            d_state=16, opset=12, index="slice", dynamic_batch=True),
    Variant("mamba1d-conv-channels", "1-D Mamba, N = 16, grouped conv1d over channels (the fork's loop)",
            model="mamba1d", d_state=16, readout="conv-channels"),
    Variant("mamba1d-dynamo", "1-D Mamba, dynamo exporter", model="mamba1d", d_state=16, exporter="dynamo"),
]
VARIANTS_BY_NAME = {v.name: v for v in VARIANTS}

# Ops an unrolled scan has one or more of per step (the step's index, readout and stacking).
# After re-rolling, what remains of them must not grow with the steps: the model's own
# (outside the scans) plus a few per scan. Slice is left out: Slice+Squeeze steps show in
# Squeeze, and the scan forms slice chunks (a count that grows with the chunk, not with L).
STEP_OPS = ("Gather", "Squeeze", "If", "Unsqueeze", "Einsum", "ReduceSum", "Conv")
MAX_STEP_OPS_PER_SCAN = 8


def own_step_ops(naive: Path) -> dict[str, int]:
    """Count of each step op in the naive graph outside the unrolled scans (which the patterns delimit)."""
    import onnx
    import onnx_graphsurgeon as gs

    from patterns.linear_recurrence import find_recurrences

    graph = gs.import_onnx(onnx.load(str(naive)))
    in_scans = Counter(node.op for rec in find_recurrences(graph).recurrences for node in rec.nodes)
    everywhere = Counter(node.op for node in graph.nodes)
    return {op: everywhere[op] - in_scans[op] for op in STEP_OPS}


def step_ops_left(histogram: dict[str, int], own: dict[str, int], scans: int) -> dict[str, int]:
    """Step ops above `own + MAX_STEP_OPS_PER_SCAN * scans` (empty: no unrolled steps left)."""
    return {op: histogram.get(op, 0) for op in STEP_OPS
            if histogram.get(op, 0) > own.get(op, 0) + MAX_STEP_OPS_PER_SCAN * scans}


def export_args(variant: Variant, output: Path) -> list[str]:
    """The export command line (``python -m vmamba_ref.export`` or ``vmamba_ref.mamba1d``) of a variant."""
    args = ["--exporter", variant.exporter, "--readout", variant.readout, "--index", variant.index,
            "--batch", str(variant.batch), "--d-state", str(variant.d_state), "--seed", "0"]
    if variant.model == "mamba1d":
        args += ["--d-model", str(MAMBA1D_D_MODEL), "--length", str(MAMBA1D_LENGTH)]
    else:
        args += ["--model", "micro", "--dims", str(DIMS), "--depths", ",".join(map(str, DEPTHS)),
                 "--resolution", "x".join(map(str, variant.height_width)), "--no-check"]
        if variant.ssm_ratio is not None:
            args += ["--ssm-ratio", str(variant.ssm_ratio)]
        if variant.dt_rank is not None:
            args += ["--dt-rank", str(variant.dt_rank)]
    if variant.opset is not None:
        args += ["--opset", str(variant.opset)]
    if variant.dynamic_batch:
        args.append("--dynamic-batch")
    return args + ["-o", str(output)]


def export_variant(variant: Variant, directory: Path) -> Path:
    """The naive export through the export CLI (and its .ref.npz; dynamic batch: also ``naive.batch3.npz``)."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "naive.onnx"
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        if variant.model == "mamba1d":
            from vmamba_ref.mamba1d import INPUT_NAME, OUTPUT_NAME, build_mamba1d, main as export_main
        else:
            from vmamba_ref.export import INPUT_NAME, OUTPUT_NAME, main as export_main
        code = export_main(export_args(variant, path))
    if code != 0:
        raise RuntimeError(f"export of variant {variant.name} exited {code}: {sink.getvalue().strip()[-300:]}")
    if not variant.dynamic_batch:
        return path
    # The PyTorch answer at another batch, to run the compiled graph on (same seed, same weights).
    if variant.model == "mamba1d":
        model = build_mamba1d(MAMBA1D_D_MODEL, variant.d_state, seed=0)
        sample = torch.randn(CHECK_BATCH, MAMBA1D_LENGTH, MAMBA1D_D_MODEL, generator=torch.Generator().manual_seed(7))
    else:
        from vmamba_ref import build_model

        model = build_model(variant.config(), seed=0)
        sample = torch.randn(CHECK_BATCH, 3, *variant.height_width, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(sample).numpy()
    np.savez(directory / f"naive.batch{CHECK_BATCH}.npz", **{INPUT_NAME: sample.numpy(), OUTPUT_NAME: expected})
    return path


@dataclass
class Compiled:
    output: Path
    rerolled: int
    steps: int
    nodes_before: int
    nodes_after: int
    histogram: dict[str, int]
    rel_l2: float                 # vs the PyTorch reference in .ref.npz
    rel_l2_other_batch: float | None
    seconds: float
    step_ops_left: dict[str, int]
    symbolic_batch: bool          # the output's first input axis is still symbolic


def _run(path: Path, npz: Path) -> float:
    import onnxruntime as ort

    from passes.graph_io import InputError
    from passes.model_check import model_for_runtime

    try:   # read once and checked (local functions ONNX Runtime would inline past SIGTERM); the bytes run, not the path
        model = model_for_runtime(path)
    except InputError as error:
        raise RuntimeError(str(error)) from None
    data = np.load(npz)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    return relative_l2(session.run([output], {session.get_inputs()[0].name: data[session.get_inputs()[0].name]})[0],
                  data[output])


def compile_variant(naive: Path, pipeline: str, directory: Path, own: dict[str, int] | None = None) -> Compiled:
    """Compile ``naive`` with pipeline P into directory/P.onnx, its report in directory/P-report."""
    from pipelines import CompileError, compile_model

    own = own_step_ops(naive) if own is None else own

    output, report_dir = directory / f"{pipeline}.onnx", directory / f"{pipeline}-report"
    started = time.perf_counter()
    try:
        result = compile_model(naive, pipeline, output=output, report=report_dir, tolerance=TOLERANCE)
    except CompileError as error:
        raise RuntimeError(f"pipeline {pipeline} on {naive} failed (exit code {error.exit_code}): {error}") from None
    seconds = time.perf_counter() - started
    reroll = next(record for record in result.records if record.name == "reroll-scans")
    histogram = dict(sorted(Counter(n.op_type for n in result.model.graph.node).items()))
    # layernorm-channels-first (tpu) writes each LayerNorm2d's means as two 1x1 Convs: the model's own
    # normalisations, not scan steps, so they are left out of the step-op count.
    step_histogram = Counter(n.op_type for n in result.model.graph.node
                             if not n.name.startswith(NORM_LINEAGE))
    symbolic = bool(result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param)
    other = naive.with_name(f"naive.batch{CHECK_BATCH}.npz")
    rerolled = reroll.stats["rerolled"]
    return Compiled(output, rerolled, reroll.stats["steps"], result.nodes_before, result.nodes_after, histogram, _run(output, naive.with_name("naive.ref.npz")),
                    _run(output, other) if other.exists() else None, seconds,
                    step_ops_left(step_histogram, own, rerolled), symbolic)


# ------------------------------------------------------------------------------ the table
def _row(variant: Variant, naive_nodes: int, compiled: dict[str, Compiled]) -> str:
    cells = []
    for pipeline in ("seed", "cpu", "tpu"):
        c = compiled.get(pipeline)
        if c is None:
            cells.append("n/a (dynamic)")
            continue
        flag = "" if c.rerolled == variant.expected_scans and not c.step_ops_left else " **!**"
        other = f", b{CHECK_BATCH} {c.rel_l2_other_batch:.1e}" if c.rel_l2_other_batch is not None else ""
        cells.append(f"{c.nodes_after:,} ({c.rel_l2:.1e}{other}){flag}")
    batch = "dynamic" if variant.dynamic_batch else str(variant.batch)
    lengths = ", ".join(map(str, variant.scan_lengths))
    first = next(iter(compiled.values()))
    return (f"| {variant.name} | {variant.what} | {variant.exporter} | {variant.resolved_opset} | {batch} | "
            f"{variant.readout} | {variant.index} | {variant.d_state} | {lengths} | "
            f"{first.rerolled}/{variant.expected_scans} | {naive_nodes:,} | " + " | ".join(cells) + " |")


HEADER = """# Export variants

Every variant is a real naive export of a small model, compiled by each pipeline with
`passes.apply` and verified against PyTorch. Generated by `python -m tools.variants_table`
(tests/test_export_variants.py asserts the same things); refresh it after changing a pattern,
a scan form or the exporter.

VMamba variants: `micro` config with dims {dims}, depths {depths}, {res}x{res} unless the row says
otherwise (one SS2D block per stage, one scan each). 1-D Mamba: `vmamba_ref/mamba1d.py`, d_model
{d_model}, L = {length}. Pipeline cells: nodes after the pipeline (relative L2 of the output vs the
float32 PyTorch reference on the export's sample; for dynamic batch also at batch {check_batch}). A
**!** marks a variant where scans were missed or per-step ops were left. `tpu` needs static shapes:
it is not run on dynamic-batch exports.

torch {torch}, onnx {onnx}, onnxruntime {ort}{onnxscript}.

| variant | what varies | exporter | opset | batch | readout | index | N | L per scan | scans re-rolled | naive nodes | seed | cpu | tpu |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def _versions() -> dict[str, str]:
    from importlib import metadata

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    onnxscript = version("onnxscript")
    return {"torch": version("torch").split("+")[0], "onnx": version("onnx"), "ort": version("onnxruntime"),
            "onnxscript": f", onnxscript {onnxscript} (dynamo exporter)" if onnxscript != "not installed" else ""}


def build_table(variants: list[Variant], workdir: Path, log=print) -> str:
    rows = []
    for variant in variants:
        directory = workdir / variant.name
        started = time.perf_counter()
        naive = export_variant(variant, directory)
        import onnx

        naive_nodes = len(onnx.load(str(naive), load_external_data=False).graph.node)
        own = own_step_ops(naive)
        compiled = {p: compile_variant(naive, p, directory, own) for p in variant.pipelines}
        rows.append(_row(variant, naive_nodes, compiled))
        log(f"{variant.name}: {naive_nodes} nodes -> "
            + ", ".join(f"{p} {c.nodes_after} ({c.rerolled} scans, {c.rel_l2:.1e})" for p, c in compiled.items())
            + f" [{time.perf_counter() - started:.0f} s]")
    header = HEADER.format(dims=DIMS, depths=",".join(map(str, DEPTHS)), res=RESOLUTION, d_model=MAMBA1D_D_MODEL,
                           length=MAMBA1D_LENGTH, check_batch=CHECK_BATCH, **_versions())
    return header + "\n".join(rows) + "\n"


def main(argv=None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.variants_table", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/VARIANTS.md"))
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    args = parser.parse_args(argv)
    variants = VARIANTS
    if args.only:
        unknown = [n for n in args.only.split(",") if n not in VARIANTS_BY_NAME]
        if unknown:
            print(f"error: unknown variant(s) {printable(', '.join(unknown))}; known: {', '.join(VARIANTS_BY_NAME)}",
                  file=sys.stderr)
            return 2
        variants = [VARIANTS_BY_NAME[n] for n in args.only.split(",")]
    try:
        check_destination(args.output)   # before minutes of compiling, not after
    except DestinationError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="variants-") as workdir:
        table = build_table(variants, Path(workdir), log=lambda m: print(m, file=sys.stderr))
    write_text_atomic(args.output, table)
    print(f"wrote {printable(args.output)} ({len(variants)} variants)")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

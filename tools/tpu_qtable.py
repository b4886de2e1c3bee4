"""tpu-mlir's quantization table for INT8 with the scan kept precise, from our own graph knowledge.

    python -m tools.tpu_qtable tpu.onnx model.mlir [-o qtable.txt] [--float-mode BF16]

In INT8 mode every tpu-mlir op is INT8 unless the quantization table (``model_deploy
--quantize_table``) names it with another mode, one ``op_name mode`` line each. We name the
ops that must stay in floating point, and leave the rest (the projections, the convolutions,
LayerNorm, activations, the residual adds) to INT8 with run_calibration's thresholds:

- **scan**: the nodes ``reroll-scans`` created (node metadata ``pass`` = ``reroll-scans``),
  and nodes later passes made out of them: their names and tensors carry the lineage prefix
  ``reroll_scans/`` (e.g. cumsum-to-matmul's ``cumsum_to_matmul/cumsum_rank4/reroll_scans/
  scan0/CumSum_11/...``, onnxsim's Gemms over the scan's ``reroll_scans/scan0/const_7``), and
  nodes enclosed by those (all their producers and consumers scan nodes: onnxsim's Reshapes). The
  chunked scan multiplies ``exp(S - m)`` by ``exp(m - S)`` with S a running sum of log-decays
  over 32 steps: an INT8 grid (256 levels per tensor) cannot hold either factor.
- **norm**: LayerNorm2d written out by ``layernorm-channels-first`` (node names
  ``layernorm_channels_first/...``): mean, centring, variance, division. As one LayerNorm op
  tpu-mlir computed it in float inside its INT8 kernel; as separate INT8 ops micro-digits' INT8
  top-1 fell from 100% to 50% on 10 images (logits' cosine 0.11; measured before the rsqrt rule
  below, whose missing Rsqrt was then INT8 too).
- **rsqrt**: tpu-mlir's deploy (``processor-top-optimize``: after the calibration table is read,
  before this table is) rewrites ``Div(x, Sqrt(v))`` as ``x * Rsqrt(v)``, a new op named
  ``<Sqrt op>_inv`` that inherits the Sqrt's calibrated range. Left out of the table it became an
  INT8 lookup whose output saturated at max(sqrt(v)) (0.958 where 1/sqrt(v) runs 1.04-9.85): every
  LayerNorm2d that layernorm-channels-first writes out multiplied by a constant instead of
  normalising (micro-digits' INT8 logits cosine 0.85; docs/TPU.md). So each Sqrt in the table that
  divides also names its ``_inv`` op, in the Sqrt's float mode.
- **decay/exponent arithmetic**: every Exp, Log, Softplus, Pow, Sqrt, Reciprocal (values
  spread over many orders of magnitude), and every node on a path from a Softplus (the step
  size dt) into the scan: dt * A (the log-decay) and dt * B * x (the drive), with the Reshapes
  between. Those paths end at scan nodes and never cross a projection.

- **where** (in F32, or F16 where the float mode is F16; counted only where there are any): a Where
  whose x or y branch is a computed tensor that another node also reads (or a graph output).
  convert-top-to-tpu's ``SelectiveWhere`` (sophgo/tpu-mlir lib/Conversion/TopToTpu/TopToTpuPass.cpp,
  the 1.30.2 wheel alike) gives each non-constant branch of a Where the Where's own calibrated range,
  for every Where but one that is F32 or F16 in this table: INT8 and BF16 Wheres alike. A branch
  read by the Where alone loses only values the Where drops; a shared branch is requantized for all
  its readers: the dynamo exporter's softplus guard Where(x > 20, x, Softplus(x)) kept BF16 turned
  VMamba's dt projection (+-6.9) into u8 [0, 0.112], all zeros (session s26; softplus-guard-off
  removes that guard, this rule covers every other such Where). Only the Where is named: kept F32
  or F16 it leaves its branches' own ranges alone, so their producers stay INT8.

With ``projections_only`` (``--projections-only``; tools.tpu_check ``--qtable projections``) every op
but the projections (Conv, and MatMul/Gemm with a weight) is kept in floating point as well as what
the rules above name, reason **rest**: for graphs the rules above know nothing of, such as transformers' Mamba2 chunked SSD
(no re-rolled scan; its decays exp(segsum) and their products all INT8 but the Exps): hf-mamba2
with the auto table (float mode F16) gave cosine 0.941 against ONNX Runtime, with only the
projections INT8 0.99967 (session s26, docs/GENERALITY.md).

tpu-mlir names an op ``<ONNX output>_<ONNX op type>`` (``/x/Conv_output_0_Conv``), and ops
its converter adds carry a further suffix (``..._Mul_bias``); each MLIR op is matched to the
ONNX node whose output name is its longest such prefix. Only names that are in the MLIR go
into the table (tpu-mlir's own canonicalisation removes some nodes, e.g. Reshapes it folds).
"""
from __future__ import annotations

import re
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import onnx

from passes.one_line import OneLineArgumentParser, one_line, positive_int, printable
from passes.files import (DestinationError, check_destination, check_not_read, read_regular_file, read_text_file,
                          write_text_atomic)
from passes.report.provenance import PASS_KEY
from passes.graph_io import model_and_data_files

SCAN_PASS = "reroll-scans"
SCAN_LINEAGE = "reroll_scans/"
EXPONENT_OPS = frozenset({"Exp", "Log", "Softplus", "Pow", "Sqrt", "Reciprocal"})
DECAY_SOURCE_OPS = frozenset({"Softplus"})
FLOAT_MODES = ("BF16", "F16", "F32")

NORM_LINEAGE = "layernorm_channels_first/"
SCAN, DECAY, MERGE, NORM, EXPONENT, KERNEL = "scan", "decay", "merge", "norm", "exponent", "kernel"
REASONS = (SCAN, DECAY, MERGE, NORM, EXPONENT, KERNEL)
REST = "rest"   # projections_only: every op but the projections
WHERE = "where"  # a Where with a shared branch: F32 (F16 in F16 mode), which SelectiveWhere leaves alone
WHERE_MODES = {"BF16": "F32", "F16": "F16", "F32": "F32"}  # BF16 is not enough: SelectiveWhere skips F32/F16 only
RSQRT_SUFFIX = "_inv"  # tpu-mlir's name for the Rsqrt it makes of Div(x, Sqrt(v))
DEFAULT_LANES = 64  # BM1684X's NPU lanes
PROJECTION_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class PreciseNode:
    output: str  # the node's first output: tpu-mlir names its op after it
    op_type: str
    why: str  # SCAN, DECAY, MERGE, NORM, EXPONENT, KERNEL, WHERE (or REST)


def _is_scan_node(node: onnx.NodeProto) -> bool:
    props = {p.key: p.value for p in node.metadata_props}
    if props.get(PASS_KEY) == SCAN_PASS:
        return True
    names = [node.name, *node.input, *node.output]
    return any(SCAN_LINEAGE in name for name in names if name)


def _is_projection(node: onnx.NodeProto, initializers: set[str]) -> bool:
    """A convolution, or a matrix product with a weight (an initializer operand)."""
    if node.op_type not in PROJECTION_OPS:
        return False
    return node.op_type.startswith("Conv") or any(name in initializers for name in node.input)


def _int8_conv_refused(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto], lanes: int) -> bool:
    """A grouped (not depthwise) Conv with more output channels than NPU lanes, no multiple of them.

    BM1684X's INT8 conv kernel asserts ``ocslice % NPU_NUM == 0 || groups * oc <= NPU_NUM``
    (nodechip_conv_quant_parallel.c.h:1020): VMamba-T's x_proj, a Conv with 4 groups and
    104 or 200 output channels, stopped its INT8 codegen there; with 32 or 56 it compiled."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
        return False
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    out_channels, in_per_group = weights[node.input[1]].dims[0], weights[node.input[1]].dims[1]
    depthwise = in_per_group == 1 and group == out_channels
    return group > 1 and not depthwise and out_channels > lanes and out_channels % lanes != 0


def _shared_branch_wheres(nodes: list[onnx.NodeProto], consumers: dict[str, list[int]], constants: set[str],
                          graph_outputs: set[str]) -> set[int]:
    """Wheres with an x or y branch that is computed (no initializer, no Constant) and read by another node too,
    or is a graph output: the branches tpu-mlir's SelectiveWhere would requantize to the Where's range."""
    found = set()
    for index, node in enumerate(nodes):
        if node.op_type != "Where":
            continue
        for branch in node.input[1:3]:
            if not branch or branch in constants:
                continue
            if branch in graph_outputs or any(reader != index for reader in consumers.get(branch, [])):
                found.add(index)
    return found


def precise_nodes(model: onnx.ModelProto, lanes: int = DEFAULT_LANES) -> list[PreciseNode]:
    """The ONNX nodes that stay in floating point, in graph order (see the module doc)."""
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = {}
    producer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
        for name in node.output:
            producer[name] = index
    scan = {index for index, node in enumerate(nodes) if _is_scan_node(node)}
    # Nodes enclosed by the scan (every producer and every consumer a scan node), e.g. the
    # Reshapes onnxsim puts between them under fresh names, are the scan's too.
    changed = True
    while changed:
        changed = False
        for index, node in enumerate(nodes):
            if index in scan:
                continue
            sources = [producer[name] for name in node.input if name in producer]
            sinks = [c for name in node.output for c in consumers.get(name, [])]
            if sources and sinks and all(s in scan for s in sources) and all(c in scan for c in sinks):
                scan.add(index)
                changed = True

    # Forward from each Softplus without entering the scan: what dt feeds before the scan.
    reached: set[int] = set()
    queue = deque(index for index, node in enumerate(nodes) if node.op_type in DECAY_SOURCE_OPS)
    while queue:
        index = queue.popleft()
        if index in reached or index in scan:
            continue
        reached.add(index)
        for name in nodes[index].output:
            queue.extend(consumers.get(name, []))
    # ... and backward from the scan: keep only what flows into it.
    feeds_scan: set[int] = set()
    queue = deque(scan)
    while queue:
        index = queue.popleft()
        for name in nodes[index].input:
            source = producer.get(name)
            if source is not None and source in reached and source not in feeds_scan:
                feeds_scan.add(source)
                queue.append(source)
    decay = reached & feeds_scan

    # Forward from the scan to the next projection: the directions' outputs added up with
    # D * x, the merge of the cross-scan and out_norm. Their INT8 thresholds, calibrated on
    # sums of values of very different sizes, cost most of micro-digits' INT8 error.
    initializers = {init.name for init in model.graph.initializer}
    merge: set[int] = set()
    queue = deque(c for index in scan for name in nodes[index].output for c in consumers.get(name, []))
    while queue:
        index = queue.popleft()
        if index in scan or index in merge or _is_projection(nodes[index], initializers):
            continue
        merge.add(index)
        for name in nodes[index].output:
            queue.extend(consumers.get(name, []))

    weights = {init.name: init for init in model.graph.initializer}
    constants = set(weights) | {name for node in nodes if node.op_type == "Constant" for name in node.output}
    shared_branch = _shared_branch_wheres(nodes, consumers, constants, {o.name for o in model.graph.output})
    found = []
    for index, node in enumerate(nodes):
        if index in shared_branch:   # first: its mode differs from the float mode (module doc, "where")
            why = WHERE
        elif index in scan:
            why = SCAN
        elif index in decay:
            why = DECAY
        elif index in merge:
            why = MERGE
        elif node.name.startswith(NORM_LINEAGE):
            why = NORM
        elif node.op_type in EXPONENT_OPS:
            why = EXPONENT
        elif _int8_conv_refused(node, weights, lanes):
            why = KERNEL
        else:
            continue
        found.append(PreciseNode(node.output[0], node.op_type, why))
    return found


_OP_LINE = re.compile(r'=\s*"?top\.(?P<op>\w+)"?.*\sloc\((?P<loc>#loc\d+|"[^"]*")\)\s*$')
_LOC_DEF = re.compile(r'^(?P<ref>#loc\d+)\s*=\s*loc\("(?P<name>[^"]*)"\)')
_NOT_OPS = frozenset({"Weight", "None", "Input"})


def mlir_op_names(mlir_text: str) -> list[str]:
    """Names of the computing ops of a tpu-mlir top-dialect file, in file order."""
    locations = {m.group("ref"): m.group("name") for m in map(_LOC_DEF.match, mlir_text.splitlines()) if m}
    names = []
    for line in mlir_text.splitlines():
        match = _OP_LINE.search(line)
        if not match or match.group("op") in _NOT_OPS:
            continue
        loc = match.group("loc")
        name = loc.strip('"') if loc.startswith('"') else locations.get(loc)
        if name:
            names.append(name)
    return names


def match_op(op_name: str, outputs: dict[str, PreciseNode] | Iterable[str]) -> Optional[str]:
    """The ONNX output that ``op_name`` was made from: the longest one followed by '_' (or equal)."""
    best = None
    for cut in [len(op_name)] + [i for i, ch in enumerate(op_name) if ch == "_"]:
        prefix = op_name[:cut]
        if prefix in outputs and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def quantization_table(model: onnx.ModelProto, op_names: list[str], float_mode: str = "BF16",
                       lanes: int = DEFAULT_LANES, projections_only: bool = False) -> list[tuple[str, str, PreciseNode]]:
    """(MLIR op name, mode, the ONNX node it came from) for every op to keep in ``float_mode`` (a Where with a
    shared branch in ``WHERE_MODES[float_mode]``); with ``projections_only`` every op that is no projection
    (module doc)."""
    if float_mode not in FLOAT_MODES:
        raise ValueError(f"float mode {float_mode!r} is not one of {', '.join(FLOAT_MODES)}")
    precise = {node.output: node for node in precise_nodes(model, lanes)}
    if projections_only:
        initializers = {init.name for init in model.graph.initializer}
        precise.update({node.output[0]: PreciseNode(node.output[0], node.op_type, REST) for node in model.graph.node
                        if node.output and node.output[0] not in precise and not _is_projection(node, initializers)})
    all_outputs = {name for node in model.graph.node for name in node.output}
    divisors = {node.input[1] for node in model.graph.node if node.op_type == "Div" and len(node.input) > 1}
    table = []
    for op_name in op_names:
        source = match_op(op_name, all_outputs)
        if source is not None and source in precise:
            mode = WHERE_MODES[float_mode] if precise[source].why == WHERE else float_mode
            table.append((op_name, mode, precise[source]))
            if precise[source].op_type == "Sqrt" and source in divisors and op_name == f"{source}_Sqrt":
                table.append((op_name + RSQRT_SUFFIX, float_mode, precise[source]))
    return table


def format_table(table: list[tuple[str, str, PreciseNode]], model_name: str) -> str:
    counts = {why: sum(1 for *_, node in table if node.why == why) for why in REASONS}
    for optional in (WHERE, REST):   # named only where there are any (tables without them read as before)
        if any(node.why == optional for *_, node in table):
            counts[optional] = sum(1 for *_, node in table if node.why == optional)
    lines = [f"# tools.tpu_qtable for {printable(model_name)}: ops kept in floating point, the rest INT8",
             f"# {len(table)} ops: " + ", ".join(f"{why} {count}" for why, count in counts.items()),
             "# op_name quantize_mode"]
    lines += [f"{op_name} {mode}" for op_name, mode, _ in table]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = OneLineArgumentParser(prog="python -m tools.tpu_qtable", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the ONNX model given to model_transform (with its node metadata)")
    parser.add_argument("mlir", help="model_transform's top-dialect .mlir of that model")
    parser.add_argument("-o", "--output", help="write the table here (default stdout)")
    parser.add_argument("--float-mode", default="BF16", type=str.upper, choices=FLOAT_MODES)
    parser.add_argument("--projections-only", action="store_true",
                        help="keep every op but the projections (Conv, MatMul/Gemm with a weight) in floating point")
    parser.add_argument("--lanes", type=positive_int, default=DEFAULT_LANES, help="the chip's NPU lanes (64 on BM1684X)")
    args = parser.parse_args(argv)
    try:
        if args.output:
            check_destination(args.output)
            check_not_read(args.output, model_and_data_files(args.model) + [(".mlir", args.mlir)])
    except DestinationError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    try:
        model = onnx.load_model_from_string(read_regular_file(args.model, limit=2 << 30))
        mlir_text = read_text_file(args.mlir, limit=1 << 30)
    except Exception as error:
        sys.stderr.write(f"error: {one_line(error, 200)}\n")
        return 2
    table = quantization_table(model, mlir_op_names(mlir_text), args.float_mode, args.lanes, args.projections_only)
    text = format_table(table, Path(args.model).name)
    if args.output:
        write_text_atomic(args.output, text)   # exclusive temporary: never through a planted link
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))

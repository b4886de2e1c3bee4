"""The tpu pipeline: a graph that Sophgo's tpu-mlir compiles for BM1684X (docs/TPU.md).

Write out a Loop or Scan with a constant trip count (unroll-loops: tpu-mlir takes neither), re-roll the scans,
lower the readout Einsums to Mul + ReduceSum (tpu-mlir knows only a fixed
list of Einsum equations), clean up while shapes become static, then lower the Einsum contractions
left (Mamba2's chunked SSD) to MatMuls of at most 3-D (einsum-to-matmul, where a TorchScript export's
shapes are known) and IsNaN, which tpu-mlir lacks (TorchScript's attention guards its softmax with one), to
Equal(x, x) (isnan-to-equal), a dynamo export's softplus guard Where(x > 20, x, Softplus(x)) as the bare Softplus
(softplus-guard-off: tpu-mlir's INT8 gave the guarded dt projection the softplus range through the Where), then make the graph legal for
tpu-mlir (no Identity, no lower-rank left MatMul operand, no negative-step Slice, CumSum plain, at most 4-D and small enough for
the kernel), clean up again, write an opset-18 graph (a dynamo export) as opset 17, exactly, where every node allows
it (opset18-to-17: tpu-mlir refuses opset 18's ReduceMean) and check every rule (tpu-legality fails the pipeline if one
is broken). Static shapes are assumed: export with a fixed batch for this target.

The scan form is `batched` (chunk24's arithmetic, every chunk at once, a doubling carry across
chunks): on VMamba-T it gives ~1,300-1,500 nodes where chunks in sequence give ~6,400, and
tpu-mlir's layer-group search, which did not finish in 30 minutes on the 6,400-node graph,
takes seconds. What tpu-mlir's estimate chose (docs/TPU.md, "A faster VMamba-T"):
- the form runs without d_state 1's unit axis (`drop_unit_axes`): tpu-mlir layer-groups the
  4-D (1, K*D, chunks, Q) ops, the 5-D ones ran one by one through DDR;
- the in-chunk CumSums are depthwise Convs of ones (cumsum-to-conv), which join the layer
  group; as MatMuls by a triangular matrix (cumsum-to-matmul, kept for the rest) they were
  global ops, and the Conv needs Q <= 16 (its pad Q - 1 fits tpu-mlir's Conv);
- chunk 14: Q = 14, 14, 14, 7 on VMamba-T's 3136, 784, 196, 49 steps, no padding.
- LayerNorm2d without its Transposes (layernorm-channels-first): 27.4 -> 21.5 ms in BF16. Its
  Div(x, Sqrt(var)) becomes an Rsqrt in tpu-mlir's deploy, which tools.tpu_qtable keeps in float
  for INT8 (left INT8 it saturated and micro-digits' INT8 lost its accuracy). A LayerNorm2d that
  reads another's output centres by one (C, C) Conv (centring=matrix-after-norm): its means are
  float noise on a random-init VMamba-T, and tpu-mlir's ONNX-vs-MLIR check failed on them.
- the carry across chunks as a doubling scan of (decay, drive) pairs that stays in the chunk
  layout, shifted by Slice + Concat (carry_shifts=slices): tpu-mlir layer-groups those, where the
  shift MatMuls of the doubling scan (and the dense carry's MatMul, dense_carry=16, 21.5 -> 19.3
  ms) were global ops that cut the scan's layer groups;
- the scan's own elementwise neighbours (softplus, dt * A, dt * B * u, the 1x1 dt projection, the
  readout by C, + D * u) in the chunk layout too (reshape-through-elementwise): no Reshape inside
  the scan for tpu-mlir to cut a group at. Both: 19.3 -> 11.9 ms BF16.
Decays per (channel, state) (d_state N > 1, Mamba) take `batched-doubling`, with its own chunk 32:
with |A| up to N, batched's exp(-cumsum) overflowed float32 on a Mamba-130m-shaped model.
"""
from passes.tpu_memory import CHIP_LIMITS
from pipelines.pipeline import Pipeline, parse_pipeline


def tpu_pipeline(chip: str, name: str) -> Pipeline:
    """The tpu pipeline for one chip: split-cumsum's budget and lanes from its measured table."""
    limit = CHIP_LIMITS[chip]
    return parse_pipeline(
        "unroll-loops,reroll-scans{form=batched,chunk=14,drop_unit_axes=true,state_form=batched-doubling,state_chunk=32,"
        "carry_shifts=slices},"
        "lower-einsum,eliminate-dead-nodes,fold-constants,simplify,einsum-to-matmul,isnan-to-equal,exp-mask-to-finite,softplus-guard-off,"
        "layernorm-channels-first{centring=matrix-after-norm},"
        "unit-axes-to-reshape,reshape-through-elementwise,"
        "remove-identity{copy_inputs=true},matmul-left-rank,slice-reverse-to-gather,cumsum-plain,cumsum-rank4,cumsum-to-conv,"
        "cumsum-to-matmul{max_length=32},"
        f"split-cumsum{{budget={limit.budget},lanes={limit.lanes}}},"
        "eliminate-dead-nodes,fold-constants,simplify,constants-to-initializers,opset18-to-17,tpu-legality",
        name=name,
        description=f"re-roll scans (all chunks at once), then make the graph legal for Sophgo tpu-mlir ({chip.upper()}): "
                    "no Identity, no step<0 Slice, short CumSums as MatMul, the rest plain, <=4-D and cut to the "
                    "kernel's size; checked at the end",
    )


PIPELINE = tpu_pipeline("bm1684x", "tpu")

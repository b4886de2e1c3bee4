"""The tpu pipeline: a graph that Sophgo's tpu-mlir compiles for BM1684X (docs/TPU.md).

Re-roll the scans, lower the readout Einsums to Mul + ReduceSum (tpu-mlir knows only a fixed
list of Einsum equations), clean up while shapes become static, then make the graph legal for
tpu-mlir (no Identity, no negative-step Slice, CumSum plain, at most 4-D and small enough for
the kernel), clean up again and check every rule (tpu-legality fails the pipeline if one is
broken). Static shapes are assumed: export with a fixed batch for this target.

Speed (tpu-mlir's estimate, micro, F32): the CumSum kernel was 69% of the time, so short
in-chunk CumSums become MatMuls by a triangular ones matrix (cumsum-to-matmul): 4.43 -> 1.81 ms.
chunk24 beats the parallel form there (parallel: 6.17 ms, three quarters of it in Permutes).
"""
from pipelines.pipeline import parse_pipeline

PIPELINE = parse_pipeline(
    "reroll-scans{form=chunk24,chunk=24},lower-einsum,eliminate-dead-nodes,fold-constants,simplify,"
    "remove-identity,slice-reverse-to-gather,cumsum-plain,cumsum-rank4,cumsum-to-matmul{max_length=32},"
    "split-cumsum{budget=4096,lanes=64},"
    "eliminate-dead-nodes,fold-constants,simplify,constants-to-initializers,tpu-legality",
    name="tpu",
    description="re-roll scans, then make the graph legal for Sophgo tpu-mlir (BM1684X): no Identity, "
                "no step<0 Slice, short CumSums as MatMul, the rest plain, <=4-D and cut to the kernel's size; checked at the end",
)

"""The tpu pipeline: a graph that Sophgo's tpu-mlir compiles for BM1684X (docs/TPU.md).

Re-roll the scans, lower the readout Einsums to Mul + ReduceSum (tpu-mlir knows only a fixed
list of Einsum equations), clean up while shapes become static, then make the graph legal for
tpu-mlir (no Identity, no lower-rank left MatMul operand, no negative-step Slice, CumSum plain, at most 4-D and small enough for
the kernel), clean up again and check every rule (tpu-legality fails the pipeline if one is
broken). Static shapes are assumed: export with a fixed batch for this target.

The scan form is `batched` (chunk24's arithmetic, every chunk at once, a doubling carry across
chunks by MatMuls): on VMamba-T it gives ~1,270 nodes where chunks in sequence give ~6,400, and
tpu-mlir's layer-group search, which did not finish in 30 minutes on the 6,400-node graph,
takes seconds. Its two in-chunk CumSums become MatMuls by a triangular ones matrix
(cumsum-to-matmul: the CumSum kernel is a slow global op on BM1684X). Chunk 32 (Q = 32, 28, 28,
and 7 padded to 32 on VMamba-T's 3136, 784, 196, 49 steps) by tpu-mlir's estimate; numbers in
docs/TPU.md. Decays per (channel, state) (d_state N > 1, Mamba) take `batched-doubling`: with |A|
up to N, batched's exp(-cumsum) overflowed float32 on a Mamba-130m-shaped model; VMamba's N = 1
graphs do not change.
"""
from passes.tpu_memory import CHIP_LIMITS
from pipelines.pipeline import Pipeline, parse_pipeline


def tpu_pipeline(chip: str, name: str) -> Pipeline:
    """The tpu pipeline for one chip: split-cumsum's budget and lanes from its measured table."""
    limit = CHIP_LIMITS[chip]
    return parse_pipeline(
        "reroll-scans{form=batched,chunk=32,state_form=batched-doubling},lower-einsum,eliminate-dead-nodes,fold-constants,simplify,"
        "unit-axes-to-reshape,remove-identity,matmul-left-rank,slice-reverse-to-gather,cumsum-plain,cumsum-rank4,"
        "cumsum-to-matmul{max_length=32},"
        f"split-cumsum{{budget={limit.budget},lanes={limit.lanes}}},"
        "eliminate-dead-nodes,fold-constants,simplify,constants-to-initializers,tpu-legality",
        name=name,
        description=f"re-roll scans (all chunks at once), then make the graph legal for Sophgo tpu-mlir ({chip.upper()}): "
                    "no Identity, no step<0 Slice, short CumSums as MatMul, the rest plain, <=4-D and cut to the "
                    "kernel's size; checked at the end",
    )


PIPELINE = tpu_pipeline("bm1684x", "tpu")

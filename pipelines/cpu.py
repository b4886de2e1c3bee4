"""The cpu pipeline: the fastest graph ONNX Runtime's CPU provider runs, with no accuracy traded.

First a Loop or Scan with a constant trip count (a recurrence kept as a loop: torch.jit.script, torch's scan op) is
written out step by step (unroll-loops), so that reroll-scans re-rolls it like an unrolled export; graphs without
one do not change (docs/GENERALITY.md, s27).

The scans become the "parallel" form (fixed node count, never overflows), Einsums that are
products become Mul + ReduceSum (ORT's Einsum kernel dominated the run time), Softplus becomes
Max(x, Log(1 + Exp(Min(x, 20)))), Transposes and reductions that move no data (d_state 1) become
Reshapes, the scan's B and C are broadcast instead of expanded to every channel, 1x1 Convs become MatMuls over channels-last data so that LayerNorm2d's permutes
cancel (ORT's Transposes and NCHWc reorders are single-threaded copies: the graph did not speed
up from 2 to 16 threads), and the cross-scan's H/W swaps of small planes (stages 2, 3) become
MatMuls by a permutation matrix (multi-threaded, exact), the cross-scan's [A, flip(A)] with
A = [x, x^T] one Concat of x, x^T and their flips (slice-parts-before-concat: A is not copied on
its own), and Softplus's clamp Min(x, 20) a Clip
(min-max-to-clip: ORT's broadcasting Min is a slow element loop; 1.02-1.03x for the whole graph on
2 threads, docs/BENCHMARKS.md), and Reshape targets computed from shapes (a dynamic-batch export's
view(B, ...)) constants with -1 for the batch (reshape-target-to-constant: the dynamic-batch graph is then
the static one's, node for node); then cleanup. Chunk 8: on one stage-0 scan (768 x 3136) with 2 threads, Q = 8 ran
in 21.2 ms, Q = 16 in 21.8, Q = 4 in 28.0, chunk24 in 25.7 (16-core Xeon host pinned to 2 cores). docs/BENCHMARKS.md measures each step's gain.
Recurrences with decays per (channel, state) (d_state N > 1, Mamba) take "channels-last-readout"
(Q = 32): the same sweeps on strided steps computed from the decays' small factors, so the
(L, d_inner, N) decays and drives are never written, the readout applied block by block, so
the states are not either, and every block laid out (chunks, .., N, d_inner), so that broadcasts
run along d_inner and no block is transposed for the readout (docs/BENCHMARKS.md, Mamba section);
VMamba's N = 1 graphs do not change.
Einsum contractions that lower-einsum leaves (Mamba2's chunked SSD: 'bclhn,bcshn->bclsh', ...) become
Transpose/Reshape and one MatMul (einsum-to-matmul, after fold-constants, where a TorchScript export's
shapes are known): ONNX Runtime's Einsum ran them 2.1-4.6x slower on 2 threads at Mamba2-130m's sizes,
and a Mamba2Model of hidden 256, 8 heads of 64, d_state 64, chunk 64, L 256, 2 layers ran in 60.4 ms
with its Einsums, 46.2 ms without (2-core dev machine, interleaved medians; docs/GENERALITY.md, s24).
VMamba has no contraction: its graphs do not change.
"""
from pipelines.pipeline import parse_pipeline

PIPELINE = parse_pipeline(
    "unroll-loops,reroll-scans{form=parallel,chunk=8,state_form=channels-last-readout,state_chunk=32},lower-einsum,softplus-to-exp-log,"
    "eliminate-dead-nodes,fold-constants,einsum-to-matmul,unit-axes-to-reshape,expand-to-broadcast,pointwise-conv-to-matmul,plane-transpose-to-matmul,slice-parts-before-concat,min-max-to-clip,reshape-target-to-constant,simplify",
    name="cpu",
    description="re-roll scans into the stable parallel form, lower Einsum (products to Mul/ReduceSum, contractions "
                "to MatMul) and Softplus for ONNX Runtime CPU, "
                "B and C broadcast, not expanded, 1x1 Convs as channels-last MatMuls (LayerNorm2d permutes cancel), "
                "small H/W swaps as MatMuls, the cross-scan's flips taken part by part, clamps as Clip, computed Reshape "
                "targets as constants, clean up",
)

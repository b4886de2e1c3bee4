"""The cpu pipeline for many threads (8 and more): the `cpu` graph with its scans as whole-tensor
ops and its data copies spread over the thread pool. ONNX Runtime 1.30 runs a step -1 Slice and a
Transpose of the last two axes as single-threaded element copies (they get slower, not faster,
from 2 to 16 threads); a Gather of the same elements is split over the threads. So the
cross-scan's flips become Gathers of reversed indices and its H/W swaps of large planes (stages
0, 1; small ones are MatMuls already) Gathers of the flat plane. Exact (copies). On 2 threads the
copies are faster, hence two pipelines: docs/BENCHMARKS.md measures both on both thread counts.
(Softplus's clamp as a Clip, min-max-to-clip, first made for this pipeline, 137.5 -> 125.1 ms at
16 threads, is in `cpu` now.)
The scans take the window-doubling form (chunk 16, without d_state 1's unit axis): the parallel
form's ~130 nodes per scan run on 1/Q blocks, each a thread-pool hand-off, and its Split and
Concat on the Q axis are single-threaded strided copies (37 of ~160 profiled ms at 16 threads);
window-doubling has no Split or Concat and runs each round on the whole scan. On the 16-core
host, 16 threads, interleaved: 116.7 ms against 125.8 for parallel Q = 4, which had run 120.3
against 123.4 for the parallel Q = 8 form on another machine; slower on 2 threads (313 vs 280 ms),
hence `cpu` keeps the parallel form.
x_proj's grouped Conv1d (4 groups of 192+ channels) as one batched MatMul (`grouped-conv1d-to-matmul`,
session s16): Conv kernels 7.8 -> 4.2 and 9.2 -> 4.3 ms per run at 16 threads (sums of per-node
minima, ORT profiler, two runs of 15), whole graph 85.1 -> 83.8 and 87.4 -> 84.5 ms (two interleaved
runs of 41 rounds, spinning on): 1.5-3.4%.
Scans (and levels of chunks) of at most 64 steps as one chunk (`one_chunk_up_to=64`, session s18):
VMamba-T's stage-3 scans (49 steps) had been padded to 4 chunks of 16 with a level below, more and
smaller nodes, each a thread-pool hand-off: their 16-thread time 5.1 -> 2.3-2.8 ms (ORT profiler,
sums of per-node minima), with the carry into the chunks a MatMul (window_doubling.py) the whole
graph 1.3%, 4.4% and 7.0% faster in three interleaved runs of 31-41 rounds on two 16-core hosts
(docs/BENCHMARKS.md).
"""
from pipelines.cpu import PIPELINE as CPU
from pipelines.pipeline import Pipeline, Step

assert CPU.steps[1].pass_name == "reroll-scans" and CPU.steps[-1].pass_name == "simplify"
_REROLL = Step("reroll-scans", {"form": "window-doubling", "chunk": 16, "drop_unit_axes": True,
                                "state_form": "strided-readout", "state_chunk": 32, "one_chunk_up_to": 64})
_BEFORE_SIMPLIFY = [Step("slice-reverse-to-gather"), Step("plane-transpose-to-gather"), Step("grouped-conv1d-to-matmul")]

PIPELINE = Pipeline(
    "cpu-many",
    "the cpu pipeline for 8+ threads: scans as window-doubling (whole-tensor rounds, no Split/Concat), cross-scan "
    "flips and large H/W swaps as Gathers (multi-threaded copies)",
    CPU.steps[:1] + [_REROLL] + CPU.steps[2:-1] + _BEFORE_SIMPLIFY + CPU.steps[-1:],
)

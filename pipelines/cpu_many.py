"""The cpu pipeline for many threads (8 and more): the `cpu` graph with its data copies spread
over the thread pool. ONNX Runtime 1.30 runs a step -1 Slice and a Transpose of the last two
axes as single-threaded element copies (they get slower, not faster, from 2 to 16 threads); a
Gather of the same elements is split over the threads. So the cross-scan's flips become Gathers
of reversed indices and its H/W swaps of large planes (stages 0, 1; small ones are MatMuls
already) Gathers of the flat plane. Exact (copies). On 2 threads the copies are faster, hence
two pipelines: docs/BENCHMARKS.md measures both on both thread counts. (Softplus's clamp as a Clip,
min-max-to-clip, first made for this pipeline, 137.5 -> 125.1 ms at 16 threads, is in `cpu` now.)
"""
from pipelines.cpu import PIPELINE as CPU
from pipelines.pipeline import Pipeline, Step

_BEFORE_SIMPLIFY = [Step("slice-reverse-to-gather"), Step("plane-transpose-to-gather")]
assert CPU.steps[-1].pass_name == "simplify"

PIPELINE = Pipeline(
    "cpu-many",
    "the cpu pipeline for 8+ threads: cross-scan flips and large H/W swaps as Gathers (multi-threaded copies)",
    CPU.steps[:-1] + _BEFORE_SIMPLIFY + CPU.steps[-1:],
)

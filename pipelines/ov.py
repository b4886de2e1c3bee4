"""The pipeline for OpenVINO's CPU plugin (many threads): the `cpu-many` graph with the parallel
scan form's step blocks cut and joined by Gathers. OpenVINO 2026.4 runs the form's Transposes
(Q to the front and back) and interleaving copies as reference one-thread kernels, the largest
layers of its profile at 16 threads; its Gathers are JIT kernels over the thread pool. On the
16-core host (f32, 16 threads, tools.bench, batch 1): 58.6 ms against 69.9 for the cpu-many graph
and 292 for the fork's method (50.2 vs 63.8 ms/img at batch 16); ONNX Runtime does not gain from
the two passes (docs/BENCHMARKS.md, 16-core section), so they are a pipeline of their own.
"""
from pipelines.cpu import PIPELINE as CPU
from pipelines.cpu_many import PIPELINE as CPU_MANY
from pipelines.pipeline import Pipeline, Step

_BEFORE_SIMPLIFY = [Step("unit-split-to-gather"), Step("unit-concat-to-gather")]
assert CPU_MANY.steps[-1].pass_name == "simplify"

PIPELINE = Pipeline(
    "ov",
    "the cpu-many pipeline for OpenVINO's CPU plugin: the scan's step blocks cut and joined by Gathers",
    # The parallel scan form (cpu's), whose step blocks the two passes cut and join; cpu-many's
    # window-doubling form has none.
    CPU.steps[:1] + CPU_MANY.steps[1:-1] + _BEFORE_SIMPLIFY + CPU_MANY.steps[-1:],
)

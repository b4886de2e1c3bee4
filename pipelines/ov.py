"""The pipeline for OpenVINO's CPU plugin (many threads): the `cpu-many` graph, OpenVINO's fastest
form measured. Until session s15 it was cpu-many with cpu's parallel scan form and that form's step
blocks cut and joined by Gathers (`unit-split-to-gather`, `unit-concat-to-gather`: OpenVINO 2026.4
runs the form's Transposes and interleaving copies as one-thread reference kernels, its Gathers on
all threads), which beat the parallel-form cpu-many graph (58.6 vs 69.9 ms). The window-doubling
form has no such blocks and beat that graph in every run on the 16-core host (f32, 16 threads,
batch 1, interleaved medians: 52.5 vs 62.5 ms in s14; 85.5 vs 96.1, 56.5 vs 68.0, 50.7 vs 58.1,
47.2 vs 59.7 in s15's two calls), and tied at batch 16 (67.9 vs 67.6 ms/img; docs/BENCHMARKS.md,
16-core section). So `ov` is cpu-many's steps under the name an OpenVINO user picks; the two passes
stay available for the parallel form (pipeline text). Not `grouped-conv1d-to-matmul`, which
cpu-many took in session s16 from ONNX Runtime measurements: it was not timed under OpenVINO; nor
re-roll's `one_chunk_up_to` (cpu-many's since session s18), so `ov` re-rolls without it; nor
`einsum-to-matmul` (cpu's since session s24, from ONNX Runtime measurements on Mamba2's contractions):
OpenVINO runs its own Einsum, and the MatMul spelling was not timed there. The
window-doubling form's carry into the chunks, a MatMul by a shifted identity since s18 (it was
Slice + Pad), is the form's own and so `ov`'s too, also untimed under OpenVINO.
"""
from pipelines.cpu_many import PIPELINE as CPU_MANY
from pipelines.pipeline import Pipeline, Step

_UNTIMED_UNDER_OPENVINO = {"grouped-conv1d-to-matmul", "einsum-to-matmul"}
_UNTIMED_OPTIONS = {"reroll-scans": {"one_chunk_up_to"}}


def _timed_options(step: Step) -> Step:
    untimed = _UNTIMED_OPTIONS.get(step.pass_name, set())
    return Step(step.pass_name, {key: value for key, value in step.options.items() if key not in untimed})

PIPELINE = Pipeline(
    "ov",
    "the pipeline for OpenVINO's CPU plugin: the cpu-many graph (its window-doubling scans beat the parallel "
    "form with Gather-cut step blocks under OpenVINO)",
    [_timed_options(step) for step in CPU_MANY.steps if step.pass_name not in _UNTIMED_UNDER_OPENVINO],
)

"""The seed pipeline: the ONNX fork's method, reproduced by the compiler.

The fork re-wrote the scan by hand as chunk-24 loops and replaced every Einsum by hand
(Conv/MatMul/Mul+sum; "no einsum" in its run script), because ONNX Runtime's Einsum kernel is
slow. So this pipeline re-rolls the scans into chunk-24 loops and lowers Einsum the same way,
then cleans up: "vs seed" in the benchmarks means vs the fork's approach, not vs a graph that
keeps 33 Einsums (3,979 ms on VMamba-T, dev 2-core, 89% of it in Einsum).
"""
from pipelines.pipeline import parse_pipeline

PIPELINE = parse_pipeline(
    "reroll-scans{form=chunk24,chunk=24},lower-einsum,eliminate-dead-nodes,fold-constants,simplify",
    name="seed",
    description="the fork's method: re-roll selective scans into chunk-24 loops (the fork's layout), lower Einsum "
                "like the fork did by hand, then dead-node removal, folding, onnxsim",
)

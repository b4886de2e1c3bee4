"""The cpu pipeline: the fastest graph ONNX Runtime's CPU provider runs, with no accuracy traded.

The scans become the "parallel" form (fixed node count, never overflows), Einsums that are
products become Mul + ReduceSum (ORT's Einsum kernel dominated the run time), Softplus becomes
Relu + Log(1 + Exp(-|x|)); then cleanup. docs/BENCHMARKS.md measures each step's gain.
"""
from pipelines.pipeline import parse_pipeline

PIPELINE = parse_pipeline(
    "reroll-scans{form=parallel,chunk=16},lower-einsum,softplus-to-exp-log,"
    "eliminate-dead-nodes,fold-constants,simplify",
    name="cpu",
    description="re-roll scans into the stable parallel form, lower Einsum and Softplus for ONNX Runtime CPU, clean up",
)

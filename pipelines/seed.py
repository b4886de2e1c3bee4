"""The seed pipeline: re-roll the unrolled scans into chunk-24 loops, then clean up."""
from pipelines.pipeline import parse_pipeline

PIPELINE = parse_pipeline(
    "reroll-scans{form=chunk24,chunk=24},eliminate-dead-nodes,fold-constants,simplify",
    name="seed",
    description="re-roll selective scans into chunk-24 form (the fork's layout), then dead-node removal, folding, onnxsim",
)

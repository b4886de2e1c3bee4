"""The tpu pipeline for Sophgo CV186X: the same passes, split-cumsum cut to this chip's
measured CumSum limit (passes/tpu_memory.py CHIP_LIMITS: 8192 elements on each of 32 NPU
lanes; docs/TPU.md, "More chips")."""
from pipelines.tpu import tpu_pipeline

PIPELINE = tpu_pipeline("cv186x", "tpu-cv186x")

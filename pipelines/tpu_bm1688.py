"""The tpu pipeline for Sophgo BM1688: the same passes, split-cumsum cut to this chip's
measured CumSum limit (passes/tpu_memory.py CHIP_LIMITS: 8192 elements on each of 32 NPU
lanes; docs/TPU.md, "More chips")."""
from pipelines.tpu import tpu_pipeline

PIPELINE = tpu_pipeline("bm1688", "tpu-bm1688")

"""The FLOP limit for tools.bench: the model's FLOPs over this machine's float32 GEMM rate.

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode on the chunked-scan model (two
FLOPs per multiply-add; it counts convolutions, matmuls and the einsums that lower to them,
not elementwise ops, which is the part a GEMM rate bounds). The GEMM rate is the best of a few
timed n x n float32 torch.matmul calls at the benchmark's thread count.
"""
from __future__ import annotations

import time


def count_flops(model, image_shape: tuple[int, ...]) -> dict:
    """FLOPs of one forward pass per image, by FlopCounterMode, with the chunked scan."""
    import copy

    import torch

    from vmamba_ref import set_scan

    counted = set_scan(copy.deepcopy(model), "chunked")
    flops, by_op = module_flops(counted, torch.zeros((1, *image_shape)))
    return {"flops_per_img": flops, "by_op": by_op,
            "method": "torch FlopCounterMode on the chunked-scan model, 2 FLOPs per multiply-add"}


def module_flops(module, *inputs) -> tuple[int, dict[str, int]]:
    """FLOPs of module(*inputs) by FlopCounterMode (matmuls, convolutions, einsums; not elementwise
    ops), total and by op."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*inputs)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def gemm_rate(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """Best float32 GEMM rate (FLOP/s) of torch.matmul on n x n matrices with `threads` threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen)
        b = torch.randn(n, n, generator=gen)
        torch.matmul(a, b)   # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    return {"gemm_flops_per_s": 2 * n ** 3 / best,
            "gemm_method": f"best of {repeats} torch.matmul {n}x{n} float32, {threads} threads"}


def flop_limit(model, image_shape: tuple[int, ...], threads: int, gemm_size: int = 2048) -> dict:
    out = count_flops(model, image_shape)
    out.update(gemm_rate(threads, n=gemm_size))
    out["limit_s_per_img"] = out["flops_per_img"] / out["gemm_flops_per_s"]
    return out

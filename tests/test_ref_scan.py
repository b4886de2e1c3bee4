"""Selective scans: sequential (all readout/index variants), chunked and float64 agree."""
import math

import pytest
import torch

from passes.relative_error import relative_l2
from vmamba_ref.scan import (get_scan, selective_scan_chunk24, selective_scan_chunked, selective_scan_float64,
                             selective_scan_sequential)


rel_l2 = relative_l2  # CPU tensors without grad convert to numpy as they are


def official_init_inputs(b=2, K=4, D=16, N=1, L=50, seed=0):
    """Inputs with the statistics of an official init: dt in [1e-3, 1e-1], A = -(1..N)."""
    g = torch.Generator().manual_seed(seed)
    KD = K * D
    u = torch.randn(b, KD, L, generator=g)
    delta = 0.1 * torch.randn(b, KD, L, generator=g)
    dt = torch.exp(torch.rand(KD, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    delta_bias = dt + torch.log(-torch.expm1(-dt))
    A = -torch.arange(1, N + 1.0).repeat(KD, 1)
    B = torch.randn(b, K, N, L, generator=g)
    C = torch.randn(b, K, N, L, generator=g)
    Dv = torch.ones(KD)
    return u, delta, A, B, C, Dv, delta_bias


def naive_loop(u, delta, A, B, C, D, delta_bias):
    """The recurrence written per scalar (independent of the implementations under test)."""
    u, delta, A, B, C, D, delta_bias = (t.double() for t in (u, delta, A, B, C, D, delta_bias))
    b, KD, L = u.shape
    K, N = B.shape[1], A.shape[1]
    dt = torch.nn.functional.softplus(delta + delta_bias[:, None])
    y = torch.zeros(b, KD, L, dtype=torch.float64)
    for d in range(KD):
        k = d // (KD // K)
        h = torch.zeros(b, N, dtype=torch.float64)
        for t in range(L):
            h = torch.exp(dt[:, d, t, None] * A[d]) * h + dt[:, d, t, None] * B[:, k, :, t] * u[:, d, t, None]
            y[:, d, t] = (h * C[:, k, :, t]).sum(-1) + D[d] * u[:, d, t]
    return y


@pytest.mark.parametrize("N", [1, 4])
def test_float64_matches_scalar_loop(N):
    args = official_init_inputs(N=N, D=4, L=20)
    torch.testing.assert_close(selective_scan_float64(*[a.double() for a in args]), naive_loop(*args),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N", [1, 4])
@pytest.mark.parametrize("readout", ["einsum", "mulsum", "conv"])
@pytest.mark.parametrize("index", ["gather", "slice"])
def test_sequential_variants_vs_float64(N, readout, index):
    args = official_init_inputs(N=N)
    y = selective_scan_sequential(*args, readout=readout, index=index)
    assert y.dtype == torch.float32 and y.shape == (2, 64, 50)
    assert rel_l2(y, selective_scan_float64(*args)) <= 1e-6


@pytest.mark.parametrize("N", [1, 4])
@pytest.mark.parametrize("L,chunk", [(50, 24), (48, 24), (7, 24), (50, 1), (50, 16)])
def test_chunked_vs_float64(N, L, chunk):
    args = official_init_inputs(N=N, L=L)
    y = selective_scan_chunked(*args, chunk_size=chunk)
    assert y.shape == (2, 64, L)
    assert rel_l2(y, selective_scan_float64(*args)) <= 1e-5


@pytest.mark.parametrize("N", [1, 4])
@pytest.mark.parametrize("L,chunk", [(50, 24), (48, 24), (7, 24), (50, 1)])
def test_fork_chunk24_vs_float64(N, L, chunk):
    args = official_init_inputs(N=N, L=L)
    y = selective_scan_chunk24(*args, chunk_size=chunk)
    assert y.dtype == torch.float32 and y.shape == (2, 64, L)
    assert rel_l2(y, selective_scan_float64(*args)) <= 1e-5


def test_sequential_vs_chunked_long():
    args = official_init_inputs(L=300, D=8, seed=3)
    ref = selective_scan_float64(*args)
    assert rel_l2(get_scan("sequential")(*args), ref) <= 1e-5
    assert rel_l2(get_scan("chunked")(*args), ref) <= 1e-5
    assert rel_l2(get_scan("sequential")(*args), get_scan("chunked")(*args)) <= 1e-5


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown scan"):
        get_scan("magic")
    with pytest.raises(ValueError, match="unknown readout"):
        selective_scan_sequential(*official_init_inputs(L=3), readout="dot")

"""Selective-scan implementations (the SS2D core's inner recurrence).

All share upstream's signature ``selective_scan_torch(u, delta, A, B, C, D, delta_bias,
delta_softplus=True)`` with shapes u, delta: (b, KD, L); A: (KD, N); B, C: (b, K, N, L);
D: (KD,); delta_bias: (KD,) and return y: (b, KD, L) in u's dtype.

Recurrence per channel d, state n, step t (NOTES.md section 2):
    h_t = exp(dt_t * A[d, n]) * h_{t-1} + dt_t * B_t[n] * u_t
    y_t = sum_n C_t[n] * h_t[n] + D[d] * u_t
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

READOUTS = ("einsum", "mulsum", "conv", "conv-channels")
INDEXES = ("gather", "slice")

# Callbacks called once per unrolled step of the sequential scan as hook(step, steps_in_this_scan).
# The export CLI uses this to show how many scan steps have been traced so far.
_STEP_HOOKS: list[Callable[[int, int], None]] = []


def add_step_hook(hook: Callable[[int, int], None]) -> None:
    _STEP_HOOKS.append(hook)


def remove_step_hook(hook: Callable[[int, int], None]) -> None:
    if hook in _STEP_HOOKS:
        _STEP_HOOKS.remove(hook)


def _prepare(delta, delta_bias, delta_softplus):
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _repeat_groups(t: torch.Tensor, repeats: int) -> torch.Tensor:
    """(b, K, N, L) -> (b, K*repeats, N, L), == t.repeat_interleave(repeats, dim=1).

    Written as expand + flatten: the TorchScript exporter cannot export repeat_interleave at
    opset < 13 once a dim is symbolic (dynamic batch), and this form exports at every opset.
    """
    return t.unsqueeze(2).expand(-1, -1, repeats, -1, -1).flatten(1, 2)


def _readout(x: torch.Tensor, c_i: torch.Tensor, readout: str) -> torch.Tensor:
    """y_i[b, d] = sum_n x[b, d, n] * c_i[b, d, n]."""
    if readout == "einsum":
        return torch.einsum("bdn,bdn->bd", x, c_i)
    if readout == "mulsum":
        return (x * c_i).sum(-1)
    if readout == "conv":
        # The ONNX fork's "no_einsum" form: one grouped conv1d whose groups are the (b, d) pairs,
        # each a length-N dot product. groups = b * KD is a static attribute, so this readout
        # cannot have a symbolic batch axis.
        b, kd, n = x.shape
        y = F.conv1d(x.reshape(1, b * kd, n), c_i.reshape(b * kd, 1, n), groups=b * kd)
        return y.reshape(b, kd)
    if readout == "conv-channels":
        # The fork's loop with d_state > 1: one group per (b, d) pair over its N *channels*, kernel 1.
        b, kd, n = x.shape
        y = F.conv1d(x.reshape(1, b * kd * n, 1), c_i.reshape(b * kd, n, 1), groups=b * kd)
        return y.reshape(b, kd)
    raise ValueError(f"unknown readout {readout!r} (known: {', '.join(READOUTS)})")


def selective_scan_sequential(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True,
                              readout: str = "einsum", index: str = "gather"):
    """The per-timestep loop of the public reference; its TorchScript export unrolls the loop."""
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r} (known: {', '.join(READOUTS)})")
    if index not in INDEXES:
        raise ValueError(f"unknown index {index!r} (known: {', '.join(INDEXES)})")
    dtype_in = u.dtype
    b, KD, L = u.shape
    K = B.shape[1]
    delta = _prepare(delta, delta_bias, delta_softplus)
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    B = _repeat_groups(B, KD // K)
    C = _repeat_groups(C, KD // K)
    deltaB_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    x = A.new_zeros((b, KD, A.shape[1]))
    ys = []
    for i in range(L):
        if index == "gather":
            x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
            c_i = C[:, :, :, i]
        else:
            x = deltaA[:, :, i:i + 1].squeeze(2) * x + deltaB_u[:, :, i:i + 1].squeeze(2)
            c_i = C[:, :, :, i:i + 1].squeeze(3)
        ys.append(_readout(x, c_i, readout))
        for hook in _STEP_HOOKS:
            hook(i, L)
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None]
    return out.to(dtype_in)


def selective_scan_chunked(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True,
                           chunk_size: int = 24):
    """chunk24 (mamba-mini's ``selective_scan_easy``): closed form inside each chunk, carry h across.

    Inside a chunk: Ats = cumsum(dt) * A, h_i = exp(Ats_i) * (h_prefix + cumsum(dtBu * exp(-Ats))_i).
    Exact in real arithmetic; exp(-Ats) overflows in float32 once |A| * sum(dt) over a chunk
    passes ~87 (fine at official-init statistics, not on stress inputs).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype_in = u.dtype
    b, KD, L = u.shape
    K, N = B.shape[1], A.shape[1]
    delta = _prepare(delta, delta_bias, delta_softplus)
    # time-major: (L, b, KD[, N])
    dts = delta.permute(2, 0, 1)
    dtus = (delta * u).permute(2, 0, 1)
    Bs = _repeat_groups(B, KD // K).permute(3, 0, 1, 2)
    Cs = _repeat_groups(C, KD // K).permute(3, 0, 1, 2)
    h = A.new_zeros((b, KD, N))
    ys = []
    for start in range(0, L, chunk_size):
        end = min(start + chunk_size, L)
        Ats = torch.einsum("lbd,dn->lbdn", dts[start:end].cumsum(0), A)
        decay = Ats.exp()
        dtBus = dtus[start:end, :, :, None] * Bs[start:end]
        hs = decay * (h[None] + (dtBus / decay).cumsum(0))
        ys.append(torch.einsum("lbdn,lbdn->lbd", hs, Cs[start:end]))
        h = hs[-1]
    y = torch.cat(ys, dim=0).permute(1, 2, 0)
    out = y if D is None else y + u * D[:, None]
    return out.to(dtype_in)


def selective_scan_chunk24(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True,
                           chunk_size: int = 24):
    """The ONNX fork's chunk24, written by hand the way a user of the fork exports it.

    mamba-mini's ``selective_scan_easy`` in the fork's time-major (L, b, G, D[, N]) layout with
    its Einsums replaced as the fork did: dt*A as a grouped Conv1d, dt*u*B as a batched MatMul,
    the readout as Mul + ReduceSum (the fork's grouped-Conv readout bakes the batch into
    ``groups``; Mul + ReduceSum keeps a symbolic batch). Each chunk divides by its last decay
    (``scale``), like the fork. Its export is the baseline "the seed's method" in tools.bench.
    Overflows like ``selective_scan_chunked`` once |A| * sum(dt) over a chunk passes ~87.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype_in = u.dtype
    # int(): the tracer would record sizes read from shapes as graph values (Conv weights of unknown shape)
    KD, L = int(u.shape[1]), int(u.shape[2])
    G, N = int(B.shape[1]), int(A.shape[1])
    Dg = KD // G
    delta = _prepare(delta, delta_bias, delta_softplus)
    us = u.reshape(-1, G, Dg, L).permute(3, 0, 1, 2)          # (L, b, G, D)
    dts = delta.reshape(-1, G, Dg, L).permute(3, 0, 1, 2)
    Bs = B.permute(3, 0, 1, 2)                                   # (L, b, G, N)
    Cs = C.permute(3, 0, 1, 2)
    A_weight = A.reshape(G * Dg * N, 1, 1)
    h = None
    ys = []
    for start in range(0, L, chunk_size):
        end = min(start + chunk_size, L)
        q = end - start
        ts = dts[start:end].cumsum(0)                                                   # (q, b, G, D)
        Ats = F.conv1d(ts.reshape(-1, G * Dg, 1), A_weight, groups=G * Dg)             # ts * A per state
        Ats = Ats.exp().reshape(q, -1, G, Dg, N)
        rAts = Ats / (Ats[-1] + 1e-30)
        duts = dts[start:end] * us[start:end]
        dtBus = torch.matmul(duts.reshape(-1, Dg, 1), Bs[start:end].reshape(-1, 1, N)).reshape(q, -1, G, Dg, N)
        hs = rAts * (dtBus / (rAts + 1e-30)).cumsum(0)
        if h is not None:
            hs = hs + Ats * h[None]
        ys.append((hs * Cs[start:end, :, :, None, :]).sum(-1))                         # (q, b, G, D)
        h = hs[-1]
    y = torch.cat(ys, dim=0)
    if D is not None:
        y = y + D.reshape(G, Dg) * us
    out = y.permute(1, 2, 3, 0).reshape(-1, KD, L)
    return out.to(dtype_in)


def selective_scan_float64(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """Ground truth: the sequential recurrence in float64 on the same inputs, cast back."""
    dtype_in = u.dtype
    f64 = lambda t: None if t is None else t.to(torch.float64)
    y = _recurrence_vectorised(f64(u), f64(delta), f64(A), f64(B), f64(C), f64(D), f64(delta_bias),
                               delta_softplus)
    return y.to(dtype_in)


def _recurrence_vectorised(u, delta, A, B, C, D, delta_bias, delta_softplus):
    # Same math as selective_scan_sequential (einsum readout), written with fewer Python ops per step.
    b, KD, L = u.shape
    K = B.shape[1]
    delta = _prepare(delta, delta_bias, delta_softplus)
    deltaA = torch.exp(delta[:, :, :, None] * A[None, :, None, :])           # (b, KD, L, N)
    Bf = _repeat_groups(B, KD // K)                                            # (b, KD, N, L)
    Cf = _repeat_groups(C, KD // K)
    deltaB_u = (delta * u)[:, :, :, None] * Bf.transpose(2, 3)                 # (b, KD, L, N)
    x = A.new_zeros((b, KD, A.shape[1]))
    hs = torch.empty_like(deltaA)
    for i in range(L):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        hs[:, :, i] = x
    y = (hs * Cf.transpose(2, 3)).sum(-1)
    return y if D is None else y + u * D[:, None]


SCANS: dict[str, Callable] = {
    "sequential": selective_scan_sequential,
    "chunked": selective_scan_chunked,
    "chunk24": selective_scan_chunk24,
    "float64": selective_scan_float64,
}


def get_scan(name: str, **options) -> Callable:
    """A scan function by name; options (readout=, index=, chunk_size=) are bound with partial."""
    if name not in SCANS:
        raise ValueError(f"unknown scan {name!r} (known: {', '.join(SCANS)})")
    fn = SCANS[name]
    return functools.partial(fn, **options) if options else fn

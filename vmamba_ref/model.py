"""Pure-PyTorch VMamba v2 (forward_type v05_noz, norm ln2d, channel-first).

Faithful to upstream MzeroMiko/VMamba ``classification/models/vmamba.py`` in structure,
state-dict keys and shapes (official checkpoints load with strict=True), with two
deliberate differences:
  * CrossScan / CrossMerge are built from stack/flip/transpose/cat (upstream's
    autograd.Function with new_empty + slice writes exports to a constant, NOTES.md s.1);
  * the selective scan is pluggable (``build_model(cfg, scan=...)``, ``set_scan``).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import VMambaConfig
from .scan import get_scan


class Linear2d(nn.Linear):
    """A 1x1 conv that stores its weight 2-D like nn.Linear (upstream's layout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Accept a 4-D [out, in, 1, 1] conv weight as well as the 2-D one.
        key = prefix + "weight"
        w = state_dict.get(key)
        if w is not None and w.dim() == 4 and w.shape[2:] == (1, 1) and w.shape[:2] == self.weight.shape:
            state_dict[key] = w.view(self.weight.shape)
        return super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                             unexpected_keys, error_msgs)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4, C, H*W): row-major, column-major, and both reversed."""
    rows = x.flatten(2, 3)
    cols = x.transpose(2, 3).flatten(2, 3)
    xs = torch.stack([rows, cols], dim=1)
    return torch.cat([xs, xs.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, 4, C, H*W) -> (B, C, H*W): undo the flips and the transpose, sum the 4 directions."""
    y = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    rows, cols = y[:, 0], y[:, 1]
    # reshape with -1 for the batch (not unflatten: opset 12 has no export for aten::unflatten)
    cols = cols.reshape(-1, int(cols.shape[1]), W, H).transpose(2, 3).flatten(2, 3)
    return rows + cols


class SS2D(nn.Module):
    def __init__(self, d_model: int, d_state: int, ssm_ratio: float, dt_rank: int, d_conv: int = 3,
                 eps: float = 1e-5, scan_fn: Callable | None = None, k_group: int = 4):
        super().__init__()
        d_inner = int(ssm_ratio * d_model)
        self.d_inner, self.d_state, self.dt_rank, self.k_group = d_inner, d_state, dt_rank, k_group
        self.in_proj = Linear2d(d_model, d_inner, bias=False)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(d_inner, d_inner, kernel_size=d_conv, padding=(d_conv - 1) // 2,
                                groups=d_inner, bias=False)
        x_proj = [nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False) for _ in range(k_group)]
        self.x_proj_weight = nn.Parameter(torch.stack([t.weight for t in x_proj], dim=0))  # (K, R+2N, D)
        dt_w, dt_b = zip(*(_dt_init(dt_rank, d_inner) for _ in range(k_group)))
        self.dt_projs_weight = nn.Parameter(torch.stack(dt_w, dim=0))                        # (K, D, R)
        self.dt_projs_bias = nn.Parameter(torch.stack(dt_b, dim=0))                          # (K, D)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k_group * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(A))                                             # (K*D, N)
        self.Ds = nn.Parameter(torch.ones(k_group * d_inner))                                # (K*D)
        self.out_norm = LayerNorm2d(d_inner, eps=eps)
        self.out_proj = Linear2d(d_inner, d_model, bias=False)
        self.scan_fn = scan_fn or get_scan("sequential")

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        # Only the batch axis may be symbolic. Sizes read from x.shape are recorded by the
        # TorchScript tracer as graph values; reshape targets built from them lose every static
        # dim (weights then have "unknown kernel shape", repeat_interleave fails at opset 12).
        # So: channel sizes from module attributes, spatial sizes baked with int(), batch as -1.
        H, W = int(x.shape[2]), int(x.shape[3])
        K, N, R, D = self.k_group, self.d_state, self.dt_rank, self.d_inner
        xs = cross_scan(x).flatten(1, 2)                                     # (B, K*D, L)
        x_dbl = F.conv1d(xs, self.x_proj_weight.reshape(-1, D, 1), groups=K)  # (B, K*(R+2N), L)
        L = H * W
        dts, Bs, Cs = torch.split(x_dbl.reshape(-1, K, R + 2 * N, L), [R, N, N], dim=2)
        dts = F.conv1d(dts.flatten(1, 2), self.dt_projs_weight.reshape(K * D, R, 1), groups=K)
        As = -torch.exp(self.A_logs.float())
        ys = self.scan_fn(xs, dts, As, Bs.contiguous(), Cs.contiguous(), self.Ds.float(),
                          self.dt_projs_bias.reshape(-1).float(), True)     # (B, K*D, L)
        y = cross_merge(ys.reshape(-1, K, D, L), H, W)                        # (B, D, L)
        y = y.reshape(-1, D, H, W)
        return self.out_norm(y).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2d(self.in_proj(x)))
        return self.out_proj(self.forward_core(x))


def _dt_init(dt_rank: int, d_inner: int, dt_min: float = 1e-3, dt_max: float = 1e-1,
             floor: float = 1e-4, dt_scale: float = 1.0):
    std = dt_rank ** -0.5 * dt_scale
    weight = torch.empty(d_inner, dt_rank).uniform_(-std, std)
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    bias = dt + torch.log(-torch.expm1(-dt))   # inverse softplus
    return weight, bias


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear2d(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    def __init__(self, dim: int, cfg: VMambaConfig, stage: int, scan_fn: Callable | None):
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=cfg.norm_eps)
        self.op = SS2D(dim, cfg.d_state, cfg.ssm_ratio, cfg.stage_dt_rank(stage), cfg.ssm_conv,
                       eps=cfg.norm_eps, scan_fn=scan_fn)
        self.norm2 = LayerNorm2d(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))

    def forward(self, x):
        x = x + self.op(self.norm(x))
        return x + self.mlp(self.norm2(x))


class VSSM(nn.Module):
    def __init__(self, cfg: VMambaConfig, scan_fn: Callable | None = None):
        super().__init__()
        self.config = cfg
        dims = cfg.stage_dims
        eps = cfg.norm_eps
        d0 = dims[0]
        # patch embed v2: indices 0..7 match upstream's Sequential (Identity slots keep numbering)
        self.patch_embed = nn.Sequential(
            nn.Conv2d(cfg.in_chans, d0 // 2, kernel_size=3, stride=2, padding=1),
            nn.Identity(),
            LayerNorm2d(d0 // 2, eps=eps),
            nn.Identity(),
            nn.GELU(),
            nn.Conv2d(d0 // 2, d0, kernel_size=3, stride=2, padding=1),
            nn.Identity(),
            LayerNorm2d(d0, eps=eps),
        )
        self.layers = nn.ModuleList()
        for i, depth in enumerate(cfg.depths):
            if i < len(dims) - 1:   # downsample v3 at the end of each stage but the last
                downsample = nn.Sequential(nn.Identity(),
                                           nn.Conv2d(dims[i], dims[i + 1], kernel_size=3, stride=2, padding=1),
                                           nn.Identity(),
                                           LayerNorm2d(dims[i + 1], eps=eps))
            else:
                downsample = nn.Identity()
            blocks = nn.Sequential(*(VSSBlock(dims[i], cfg, i, scan_fn) for _ in range(depth)))
            self.layers.append(nn.Sequential(OrderedDict(blocks=blocks, downsample=downsample)))
        self.classifier = nn.Sequential(OrderedDict(
            norm=LayerNorm2d(dims[-1], eps=eps),
            avgpool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(1),
            head=nn.Linear(dims[-1], cfg.num_classes),
        ))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module):
        # upstream: trunc_normal_(std=.02) for nn.Linear weights (Linear2d included), zero bias; LN ones/zeros
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(x)


def set_scan(model: nn.Module, scan: str | Callable = "sequential", **options) -> nn.Module:
    """Switch every SS2D core to another scan (name + options, or a callable); returns model."""
    fn = get_scan(scan, **options) if isinstance(scan, str) else scan
    for m in model.modules():
        if isinstance(m, SS2D):
            m.scan_fn = fn
    return model


def build_model(config: VMambaConfig, scan: str | Callable = "sequential", seed: int | None = None,
                **scan_options) -> VSSM:
    """A VSSM in eval mode with official-style init; ``seed`` makes the init reproducible."""
    fn = get_scan(scan, **scan_options) if isinstance(scan, str) else scan
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = VSSM(config, fn)
    else:
        model = VSSM(config, fn)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

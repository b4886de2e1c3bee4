"""Vision Mamba blocks whose scans visit the pixels in other orders than VMamba's cross-scan (session s36, gen25).

Written by hand from the papers' descriptions (no package ships them), randomly initialised, tiny, each with a
per-step selective scan in a plain Python loop (the `selective_scan_ref` recurrence a user's reference code has), so
a TorchScript or dynamo export unrolls it. `vision_mamba(kind)` returns (module, sample input):

  zigzag      PlainMamba: four continuous (snake) 2-D orders: rows alternately left-to-right and right-to-left from
              the top-left corner, the same by columns, and each of the two run backwards; every order a constant
              index Gather of the flattened plane, the outputs gathered back by the inverse permutation
  windows     LocalMamba: the plane cut into k x k windows, each window's pixels consecutive (view + permute +
              reshape), the global row-major order, and each of the two flipped
  atrous      EfficientVMamba: the plane split into 4 sub-planes by stride-2 sampling (x[:, :, i::2, j::2]), each
              scanned in its own direction (row-major, column-major, and those two backwards) over a quarter of the
              steps, written back into a zeros plane by strided assignment
  vim         Vision Mamba (Vim): patch tokens with a class token in the middle of the sequence, one bidirectional
              Mamba layer (v2: its own causal conv1d, x_proj, dt_proj (dt rank), A and D per direction; the backward
              direction runs on the flipped sequence and is flipped back, as Vim's code does), the middle token read
  mambavision MambaVision's mixer: in_proj split in halves, a selective scan on one half (after a non-causal conv1d),
              a conv1d + SiLU branch with no SSM on the other, the two concatenated before out_proj
"""
from __future__ import annotations

VISION_KINDS = ("zigzag", "windows", "atrous", "vim", "mambavision")


def _selective_scan(u, delta, A, B, C, D):
    """selective_scan_ref's recurrence, one step per position: u, delta (b, d, l); A (d, n); B, C (b, n, l)."""
    import torch

    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    x = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    return torch.stack(ys, dim=2) + u * D[:, None]


def _zigzag_orders(height: int, width: int) -> list[list[int]]:
    rows = [r * width + (c if r % 2 == 0 else width - 1 - c) for r in range(height) for c in range(width)]
    cols = [(r if c % 2 == 0 else height - 1 - r) * width + c for c in range(width) for r in range(height)]
    return [rows, rows[::-1], cols, cols[::-1]]


def vision_mamba(kind: str, state: int = 1, height: int = 4, width: int = 4, channels: int = 4, batch: int = 2,
                 seed: int = 0):
    import torch
    import torch.nn.functional as F

    if kind not in VISION_KINDS:
        raise ValueError(f"unknown vision scan kind {kind!r} (known: {', '.join(VISION_KINDS)})")
    torch.manual_seed(seed)
    d_inner, rank = 2 * channels, 2

    class Directions(torch.nn.Module):
        """x_proj, dt_proj, A and D for each of `k` scan directions over (b, d, l) sequences."""

        def __init__(self, k: int) -> None:
            super().__init__()
            self.x_proj = torch.nn.Parameter(torch.randn(k, rank + 2 * state, d_inner) * d_inner ** -0.5)
            self.dt_proj = torch.nn.Parameter(torch.randn(k, d_inner, rank) * rank ** -0.5)
            self.dt_bias = torch.nn.Parameter(torch.rand(k, d_inner) * 2 - 3)
            self.A_log = torch.nn.Parameter(torch.log(torch.arange(1, state + 1.0)).repeat(k, d_inner, 1))
            self.D = torch.nn.Parameter(torch.ones(k, d_inner))

        def scan(self, u, k: int):
            dbc = torch.einsum("cd,bdl->bcl", self.x_proj[k], u)
            dt, B, C = dbc.split([rank, state, state], dim=1)
            delta = F.softplus(torch.einsum("dr,brl->bdl", self.dt_proj[k], dt) + self.dt_bias[k][:, None])
            return _selective_scan(u, delta, -torch.exp(self.A_log[k]), B, C, self.D[k])

    class PlaneBlock(torch.nn.Module):
        """in_proj, depthwise 3x3 Conv + SiLU, the kind's scans over the plane, gated by SiLU(z), out_proj."""

        def __init__(self) -> None:
            super().__init__()
            self.in_proj = torch.nn.Conv2d(channels, 2 * d_inner, 1)
            self.dwconv = torch.nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner)
            self.directions = Directions(4)
            self.out_proj = torch.nn.Conv2d(d_inner, channels, 1)
            self.window = 2
            self.orders = _zigzag_orders(height, width)

        def scans(self, x):
            b, d, h, w = x.shape
            if kind == "zigzag":
                flat, y = x.flatten(2), 0
                for k, order in enumerate(self.orders):
                    index = torch.tensor(order)
                    inverse = torch.argsort(index)
                    y = y + self.directions.scan(flat[:, :, index], k)[:, :, inverse]
                return y.view(b, d, h, w)
            if kind == "windows":
                s = self.window
                local = x.view(b, d, h // s, s, w // s, s).permute(0, 1, 2, 4, 3, 5).reshape(b, d, h * w)
                global_ = x.flatten(2)
                ys = [self.directions.scan(global_, 0), self.directions.scan(global_.flip(-1), 1).flip(-1)]
                local_ys = [self.directions.scan(local, 2), self.directions.scan(local.flip(-1), 3).flip(-1)]
                local_y = (local_ys[0] + local_ys[1]).view(b, d, h // s, w // s, s, s).permute(0, 1, 2, 4, 3, 5)
                return (ys[0] + ys[1]).view(b, d, h, w) + local_y.reshape(b, d, h, w)
            y = torch.zeros_like(x)   # atrous
            for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
                sub = x[:, :, i::2, j::2]
                hs, ws = sub.shape[2], sub.shape[3]
                seq = sub.flatten(2) if k % 2 == 0 else sub.transpose(2, 3).flatten(2)
                if k >= 2:
                    seq = seq.flip(-1)
                out = self.directions.scan(seq, k)
                if k >= 2:
                    out = out.flip(-1)
                out = out.view(b, d, hs, ws) if k % 2 == 0 else out.view(b, d, ws, hs).transpose(2, 3)
                y[:, :, i::2, j::2] = out
            return y

        def forward(self, image):
            x, z = self.in_proj(image).chunk(2, dim=1)
            x = F.silu(self.dwconv(x))
            return self.out_proj(self.scans(x) * F.silu(z))

    class Vim(torch.nn.Module):
        """Patch embedding, a class token in the middle, one bidirectional Mamba (v2) layer, the middle token's head."""

        def __init__(self) -> None:
            super().__init__()
            self.patch = torch.nn.Conv2d(3, channels, 2, stride=2)
            self.cls = torch.nn.Parameter(torch.randn(1, 1, channels))
            self.pos = torch.nn.Parameter(torch.randn(1, height * width // 4 + 1, channels) * 0.02)
            self.norm = torch.nn.LayerNorm(channels)
            self.in_proj = torch.nn.Linear(channels, 2 * d_inner, bias=False)
            self.conv1d = torch.nn.ModuleList(torch.nn.Conv1d(d_inner, d_inner, 4, padding=3, groups=d_inner)
                                              for _ in range(2))
            self.directions = Directions(2)
            self.out_proj = torch.nn.Linear(d_inner, channels, bias=False)
            self.head = torch.nn.Linear(channels, 5)

        def forward(self, image):
            tokens = self.patch(image).flatten(2).transpose(1, 2)   # (b, l, c)
            middle = tokens.shape[1] // 2
            cls = self.cls.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([tokens[:, :middle], cls, tokens[:, middle:]], dim=1) + self.pos
            xz = self.in_proj(self.norm(tokens)).transpose(1, 2)   # (b, 2 d_inner, l)
            length = xz.shape[2]
            out = 0
            for k in range(2):
                xz_k = xz if k == 0 else xz.flip(-1)
                x, z = xz_k.chunk(2, dim=1)
                x = F.silu(self.conv1d[k](x)[:, :, :length])
                y = self.directions.scan(x, k) * F.silu(z)
                out = out + (y if k == 0 else y.flip(-1))
            hidden = tokens + self.out_proj(out.transpose(1, 2) / 2)
            return self.head(self.norm(hidden[:, middle]))

    class MambaVisionMixer(torch.nn.Module):
        """in_proj to two halves: conv1d + SiLU + selective scan on one, conv1d + SiLU on the other; concat, out_proj."""

        def __init__(self) -> None:
            super().__init__()
            half = d_inner // 2
            self.in_proj = torch.nn.Linear(channels, d_inner)
            self.conv_x = torch.nn.Conv1d(half, half, 3, padding=1, groups=half, bias=False)
            self.conv_z = torch.nn.Conv1d(half, half, 3, padding=1, groups=half, bias=False)
            self.directions = Directions(1)
            self.directions.x_proj = torch.nn.Parameter(torch.randn(1, rank + 2 * state, half) * half ** -0.5)
            self.directions.dt_proj = torch.nn.Parameter(torch.randn(1, half, rank) * rank ** -0.5)
            self.directions.dt_bias = torch.nn.Parameter(torch.rand(1, half) * 2 - 3)
            self.directions.A_log = torch.nn.Parameter(torch.log(torch.arange(1, state + 1.0)).repeat(1, half, 1))
            self.directions.D = torch.nn.Parameter(torch.ones(1, half))
            self.out_proj = torch.nn.Linear(d_inner, channels)

        def forward(self, image):
            tokens = image.flatten(2).transpose(1, 2)   # (b, l, c)
            x, z = self.in_proj(tokens).transpose(1, 2).chunk(2, dim=1)
            y = self.directions.scan(F.silu(self.conv_x(x)), 0)
            z = F.silu(self.conv_z(z))
            return tokens + self.out_proj(torch.cat([y, z], dim=1).transpose(1, 2))

    if kind == "vim":
        module = Vim()
        sample = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    else:
        module = MambaVisionMixer() if kind == "mambavision" else PlaneBlock()
        sample = torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))
    return module.eval(), sample

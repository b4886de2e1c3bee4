"""VMamba v2 configurations (forward_type v05_noz, ln2d, channel-first).

Named configs follow the official checkpoints (see NOTES.md section 1); ``micro`` is the
small model trained on sklearn's digits and used as the project's embedded default.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Sequence

from passes.one_line import ascii_float, ascii_int, finite_real

MAX_SIZE = 2**31 - 1   # ONNX Runtime's dimensions (passes.input_shapes.MAX_DIM): no size of the model is larger


_ASCII_DIGITS = re.compile(r"[0-9]+")


class ConfigError(ValueError):
    """A config name or override that cannot describe a model."""


@dataclass(frozen=True)
class VMambaConfig:
    dims: int = 96                     # stage-0 channel count; doubles per stage
    depths: tuple[int, ...] = (2, 2, 5, 2)
    d_state: int = 1                   # N
    ssm_ratio: float = 2.0             # d_inner = ssm_ratio * dim
    dt_rank: int | str = "auto"        # "auto" -> ceil(dim / 16) per stage
    mlp_ratio: float = 4.0
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    img_size: int = 224                # input height, and width unless img_width is set
    img_width: int | None = None       # input width of a non-square input (None: img_size)
    ssm_conv: int = 3
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        checks = [
            (self.dims > 0 and self.dims % 2 == 0, f"dims must be a positive even int, got {self.dims}"),
            (len(self.depths) >= 1 and all(d >= 1 for d in self.depths), f"depths must be >= 1 each, got {self.depths}"),
            (self.d_state >= 1, f"d_state must be >= 1, got {self.d_state}"),
            (finite_real(self.ssm_ratio) and int(self.ssm_ratio * self.dims) >= 1,
             f"ssm_ratio must be finite and give d_inner = int(ssm_ratio * dims) >= 1, got {self.ssm_ratio}"),
            (finite_real(self.mlp_ratio) and int(self.mlp_ratio * self.dims) >= 1,
             f"mlp_ratio must be finite and give int(mlp_ratio * dims) >= 1 hidden channels, got {self.mlp_ratio}"),
            (self.dt_rank == "auto" or (isinstance(self.dt_rank, int) and self.dt_rank >= 1),
             f"dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}"),
            (self.patch_size == 4, f"only patch_size 4 is supported (patch embed v2), got {self.patch_size}"),
            (self.in_chans >= 1, f"in_chans must be >= 1, got {self.in_chans}"),
            (self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}"),
            (self.img_size >= self.patch_size, f"img_size must be >= {self.patch_size}, got {self.img_size}"),
            (self.img_width is None or self.img_width >= self.patch_size,
             f"img_width must be >= {self.patch_size}, got {self.img_width}"),
        ]
        # adv21: a size past int64 (--resolution 99999999999999999999) was torch's TypeError traceback, exit 1
        sizes = [("dims", self.dims), ("d_state", self.d_state), ("in_chans", self.in_chans),
                 ("num_classes", self.num_classes), ("img_size", self.img_size), ("img_width", self.img_width),
                 ("dt_rank", self.dt_rank if isinstance(self.dt_rank, int) else None)]
        sizes += [("depths", depth) for depth in self.depths]
        checks += [(value is None or value <= MAX_SIZE, f"{name} must be at most {MAX_SIZE} (a tensor dimension), got {value}")
                   for name, value in sizes]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    @property
    def stage_dims(self) -> list[int]:
        return [self.dims * 2 ** i for i in range(len(self.depths))]

    def d_inner(self, stage: int) -> int:
        return int(self.ssm_ratio * self.stage_dims[stage])

    def stage_dt_rank(self, stage: int) -> int:
        if self.dt_rank == "auto":
            return math.ceil(self.stage_dims[stage] / 16)
        return int(self.dt_rank)

    @property
    def img_hw(self) -> tuple[int, int]:
        """Input (height, width)."""
        return self.img_size, self.img_size if self.img_width is None else self.img_width

    def stage_resolutions(self, img_size: int | tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Feature-map (H, W) per stage for an input of ``img_size`` (an int: square; default the config's).

        Every stride-2 conv (k3 s2 p1: two in the patch embed, one per downsample) halves each side
        rounding up, so any H, W >= 1 runs; the planes need not be square or even (30x38 gives 8x10,
        4x5, 2x3 and 1x2).
        """
        if img_size is None:
            h, w = self.img_hw
        elif isinstance(img_size, int):
            h = w = img_size
        else:
            h, w = img_size
        h, w = (h + 3) // 4, (w + 3) // 4
        out = []
        for _ in self.depths:
            out.append((h, w))
            h, w = (h + 1) // 2, (w + 1) // 2
        return out

    def scan_steps(self, img_size: int | tuple[int, int] | None = None) -> int:
        """Sequential scan steps per direction over the whole model (8918 for VMamba-T at 224)."""
        return sum(d * h * w for d, (h, w) in zip(self.depths, self.stage_resolutions(img_size)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


NAMED_CONFIGS: dict[str, VMambaConfig] = {
    "vmamba-t": VMambaConfig(dims=96, depths=(2, 2, 5, 2)),
    "vmamba-s": VMambaConfig(dims=96, depths=(2, 2, 15, 2)),
    "vmamba-b": VMambaConfig(dims=128, depths=(2, 2, 15, 2)),
    "micro": VMambaConfig(dims=32, depths=(1, 1, 2, 1), num_classes=10, img_size=64),
}
# Shortcut names that also carry weights (resolved by vmamba_ref.default_model / export CLI).
WEIGHTED_ALIASES = {"micro-digits": "micro"}


def get_config(name: str, **overrides) -> VMambaConfig:
    """Named config with field overrides; ``None`` overrides are ignored."""
    key = WEIGHTED_ALIASES.get(name.lower(), name.lower())
    if key not in NAMED_CONFIGS:
        known = ", ".join(list(NAMED_CONFIGS) + list(WEIGHTED_ALIASES))
        raise ConfigError(f"unknown model {name!r} (known: {known})")
    fields = {f.name for f in dataclasses.fields(VMambaConfig)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ConfigError(f"unknown config field(s): {', '.join(bad)}")
    return dataclasses.replace(NAMED_CONFIGS[key], **overrides)


def _parse_depths(text: str) -> tuple[int, ...]:
    tokens = text.replace(" ", "").split(",")
    if tokens == [""]:
        raise argparse.ArgumentTypeError("depths must not be empty")
    # An empty entry ("1,,2", "1,2,") is refused, not dropped: a typo would otherwise build a model of fewer stages.
    if not all(token.isascii() and token.isdigit() for token in tokens):
        raise argparse.ArgumentTypeError(f"depths must be comma-separated ints, got {text!r}")
    return tuple(int(token) for token in tokens)


def _parse_dt_rank(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dt-rank must be 'auto' or an int, got {text!r}") from None


def _parse_resolution(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '192x256' or '192,256' -> (192, 256): height first, as torch's (N, C, H, W)."""
    parts = re.split(r"[x,]", text)
    if len(parts) not in (1, 2) or not all(_ASCII_DIGITS.fullmatch(p) for p in parts):
        raise argparse.ArgumentTypeError(
            f"resolution must be H (square) or HxW (or H,W) in ASCII digits, e.g. 224 or 192x256, got '{text}'")
    h, w = (int(parts[0]), int(parts[-1]))
    return h, w


def add_config_args(parser: argparse.ArgumentParser, default_model: str = "micro",
                    model_choices: Sequence[str] | None = None, non_square: bool = False) -> argparse.ArgumentParser:
    """Add ``--model`` and the config-override flags shared by every CLI.

    ``non_square``: ``--resolution`` also takes HxW (a CLI that builds square samples leaves it off).
    """
    g = parser.add_argument_group("model config")
    choices = list(model_choices) if model_choices is not None else list(NAMED_CONFIGS) + list(WEIGHTED_ALIASES)
    g.add_argument("--model", default=default_model, choices=choices, help="named config (default: %(default)s)")
    g.add_argument("--dims", type=ascii_int, help="stage-0 channels")
    g.add_argument("--depths", type=_parse_depths, help="blocks per stage, e.g. 1,1,2,1")
    g.add_argument("--d-state", dest="d_state", type=ascii_int, help="SSM state size N")
    g.add_argument("--ssm-ratio", dest="ssm_ratio", type=ascii_float, help="d_inner / dim")
    g.add_argument("--dt-rank", dest="dt_rank", type=_parse_dt_rank, help="'auto' or an int")
    g.add_argument("--mlp-ratio", dest="mlp_ratio", type=ascii_float)
    if non_square:
        g.add_argument("--resolution", dest="img_size", type=_parse_resolution, metavar="H|HxW",
                       help="input height = width (224), or height x width (192x256 or 192,256); any sides >= 4 "
                            "(each stride-2 conv rounds up, so no multiple of 32 is needed)")
    else:
        g.add_argument("--resolution", dest="img_size", type=ascii_int, help="input height = width")
    g.add_argument("--classes", dest="num_classes", type=ascii_int, help="number of classes")
    g.add_argument("--in-chans", dest="in_chans", type=ascii_int)
    return parser


_CLI_FIELDS = ("dims", "depths", "d_state", "ssm_ratio", "dt_rank", "mlp_ratio", "img_size", "num_classes", "in_chans")


def config_from_args(args: argparse.Namespace) -> VMambaConfig:
    overrides = {k: getattr(args, k, None) for k in _CLI_FIELDS}
    if isinstance(overrides["img_size"], tuple):   # --resolution HxW (add_config_args(non_square=True))
        height, width = overrides["img_size"]
        overrides["img_size"] = height
        overrides["img_width"] = width if width != height else None
    return get_config(args.model, **overrides)

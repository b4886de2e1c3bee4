"""Pure-PyTorch reference VMamba v2 (the model the pass suite compiles), its scans and export."""
from __future__ import annotations

from pathlib import Path

from .config import VMambaConfig, get_config, add_config_args, config_from_args, NAMED_CONFIGS
from .model import build_model, set_scan, count_parameters, VSSM
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DIGITS_WEIGHTS = WEIGHTS_DIR / "micro_digits.pt"
DIGITS_META = WEIGHTS_DIR / "micro_digits.json"


def default_model(scan: str = "sequential", **scan_options) -> VSSM:
    """The embedded default: the ``micro`` config with the digits weights loaded, in eval mode."""
    model = build_model(get_config("micro"), scan=scan, **scan_options)
    load_checkpoint(model, DIGITS_WEIGHTS)
    return model.eval()


__all__ = [
    "VMambaConfig", "get_config", "add_config_args", "config_from_args", "NAMED_CONFIGS",
    "build_model", "set_scan", "count_parameters", "VSSM",
    "CheckpointError", "load_checkpoint", "save_checkpoint", "default_model",
    "WEIGHTS_DIR", "DIGITS_WEIGHTS", "DIGITS_META",
]

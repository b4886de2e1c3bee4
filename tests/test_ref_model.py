"""Reference VMamba: configs, parameter count, shapes, upstream state-dict layout."""
import argparse
import re

import pytest
import torch

from vmamba_ref import build_model, count_parameters, get_config, set_scan
from vmamba_ref.config import ConfigError, add_config_args, config_from_args

VMAMBA_T_PARAMS = 30_705_832   # computed by this implementation; upstream reports "30M"


def test_vmamba_t_parameter_count():
    model = build_model(get_config("vmamba-t"))
    n = count_parameters(model)
    assert n == VMAMBA_T_PARAMS
    assert 29e6 <= n <= 31e6


def test_named_configs():
    t, s, b, m = (get_config(n) for n in ("vmamba-t", "vmamba-s", "vmamba-b", "micro"))
    assert (t.dims, t.depths, t.d_state, t.ssm_ratio, t.num_classes, t.img_size) == (96, (2, 2, 5, 2), 1, 2.0, 1000, 224)
    assert (s.dims, s.depths) == (96, (2, 2, 15, 2))
    assert (b.dims, b.depths) == (128, (2, 2, 15, 2))
    assert (m.dims, m.depths, m.num_classes, m.img_size) == (32, (1, 1, 2, 1), 10, 64)
    assert t.scan_steps() == 8918      # NOTES.md s.1
    assert [t.stage_dt_rank(i) for i in range(4)] == [6, 12, 24, 48]
    assert get_config("micro", d_state=4, depths=[1, 1, 1, 1]).d_state == 4
    with pytest.raises(ConfigError, match="unknown model"):
        get_config("vmamba-xl")
    with pytest.raises(ConfigError, match="unknown config field"):
        get_config("micro", colour=3)
    # an int beyond float: math.isfinite raised OverflowError from the config's checks (tidy29: passes.one_line.finite_real)
    with pytest.raises(ConfigError, match=r"^ssm_ratio must be finite and give d_inner = int\(ssm_ratio \* dims\) >= 1, got 1000"):
        get_config("micro", ssm_ratio=10**400)


def test_cli_overrides():
    ap = add_config_args(argparse.ArgumentParser())
    args = ap.parse_args("--model micro --dims 16 --depths 1,1,2,1 --d-state 4 --ssm-ratio 2 "
                         "--resolution 32 --classes 7".split())
    cfg = config_from_args(args)
    assert (cfg.dims, cfg.depths, cfg.d_state, cfg.ssm_ratio, cfg.img_size, cfg.num_classes) == \
        (16, (1, 1, 2, 1), 4, 2.0, 32, 7)


def test_cli_resolution_height_by_width():
    """Session s32 (gen20): --resolution H, HxW or H,W where the CLI allows non-square inputs."""
    ap = add_config_args(argparse.ArgumentParser(), non_square=True)
    for text, hw, width in (("32", (32, 32), None), ("24x40", (24, 40), 40), ("40,24", (40, 24), 24),
                            ("24x24", (24, 24), None)):
        cfg = config_from_args(ap.parse_args(["--resolution", text]))
        assert (cfg.img_hw, cfg.img_width) == (hw, width)
    # CLIs that build square samples (tools.bench) keep an int
    square = add_config_args(argparse.ArgumentParser())
    with pytest.raises(SystemExit):
        square.parse_args(["--resolution", "24x40"])
    # every stride-2 conv rounds up: no multiple of 32 needed, planes of any shape
    cfg = get_config("micro", img_size=30, img_width=38)
    assert cfg.stage_resolutions() == [(8, 10), (4, 5), (2, 3), (1, 2)]
    assert cfg.scan_steps() == 80 + 20 + 2 * 6 + 2
    assert cfg.stage_resolutions(64) == get_config("micro").stage_resolutions() == [(16, 16), (8, 8), (4, 4), (2, 2)]
    with pytest.raises(ConfigError, match="^img_width must be >= 4, got 3$"):
        get_config("micro", img_width=3)


def test_non_square_model_matches_float64_and_cross_merge_undoes_cross_scan():
    """A 28x36 input runs (planes 7x9, 4x5, 2x3, 1x2) and float32 matches float64; on a 3x5 plane,
    cross_merge puts each of the 4 directions back in place (an H/W mix-up would not)."""
    from vmamba_ref.model import cross_merge, cross_scan

    plane = torch.arange(2 * 15.0).reshape(1, 2, 3, 5)
    assert torch.equal(cross_merge(cross_scan(plane), 3, 5), 4 * plane.flatten(2, 3))
    assert cross_scan(plane)[0, 1, 0].tolist() == [0, 5, 10, 1, 6, 11, 2, 7, 12, 3, 8, 13, 4, 9, 14]
    model = build_model(get_config("micro", img_size=28, img_width=36), scan="sequential", seed=1)
    x = torch.randn(1, 3, 28, 36)
    with torch.no_grad():
        a = model(x).double()
        b = set_scan(model, "float64")(x).double()
    assert a.shape == (1, 10)
    assert float((a - b).norm() / b.norm()) <= 1e-5


@pytest.mark.parametrize("d_state", [1, 4])
def test_output_shapes(d_state):
    cfg = get_config("micro", d_state=d_state)
    model = build_model(cfg, scan="chunked", seed=0)
    with torch.no_grad():
        y = model(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()
    op = model.layers[0].blocks[0].op
    assert op.A_logs.shape == (4 * 64, d_state)
    assert torch.allclose(op.A_logs, torch.log(torch.arange(1, d_state + 1.0)).repeat(4 * 64, 1))


def test_odd_resolution_and_scan_switch():
    model = build_model(get_config("micro", img_size=48), scan="sequential", seed=1)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        a = model(x)
        b = set_scan(model, "chunked", chunk_size=5)(x)
    assert a.shape == (1, 10)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_init_statistics():
    op = build_model(get_config("micro"), seed=0).layers[0].blocks[0].op
    assert torch.all(op.Ds == 1)
    dt = torch.nn.functional.softplus(op.dt_projs_bias)
    assert dt.min() >= 1e-4 * 0.999 and dt.max() <= 1e-1 * 1.001


# One block's keys and shapes, written out from NOTES.md s.1 (stage 0 of micro: dim 32,
# d_inner 64, R = ceil(32/16) = 2, N = 1, K = 4).
BLOCK_KEYS = {
    "norm.weight": [32], "norm.bias": [32],
    "op.in_proj.weight": [64, 32],
    "op.conv2d.weight": [64, 1, 3, 3],
    "op.x_proj_weight": [4, 2 + 2 * 1, 64],
    "op.dt_projs_weight": [4, 64, 2],
    "op.dt_projs_bias": [4, 64],
    "op.A_logs": [4 * 64, 1],
    "op.Ds": [4 * 64],
    "op.out_norm.weight": [64], "op.out_norm.bias": [64],
    "op.out_proj.weight": [32, 64],
    "norm2.weight": [32], "norm2.bias": [32],
    "mlp.fc1.weight": [128, 32], "mlp.fc1.bias": [128],
    "mlp.fc2.weight": [32, 128], "mlp.fc2.bias": [32],
}


def test_state_dict_matches_upstream_layout():
    cfg = get_config("micro")
    sd = build_model(cfg).state_dict()
    shapes = {k: list(v.shape) for k, v in sd.items()}
    assert {k[len("layers.0.blocks.0."):]: v for k, v in shapes.items()
            if k.startswith("layers.0.blocks.0.")} == BLOCK_KEYS
    expected = set()
    for idx in (0, 2, 5, 7):
        expected |= {f"patch_embed.{idx}.weight", f"patch_embed.{idx}.bias"}
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            expected |= {f"layers.{i}.blocks.{j}.{k}" for k in BLOCK_KEYS}
        if i < len(cfg.depths) - 1:
            expected |= {f"layers.{i}.downsample.{idx}.{p}" for idx in (1, 3) for p in ("weight", "bias")}
    expected |= {"classifier.norm.weight", "classifier.norm.bias", "classifier.head.weight", "classifier.head.bias"}
    assert set(sd) == expected
    assert shapes["patch_embed.0.weight"] == [16, 3, 3, 3]
    assert shapes["layers.0.downsample.1.weight"] == [64, 32, 3, 3]
    assert shapes["layers.3.blocks.0.op.x_proj_weight"] == [4, 16 + 2, 512]
    assert shapes["classifier.head.weight"] == [10, 256]
    assert all(re.fullmatch(r"(patch_embed|layers|classifier)\..*", k) for k in sd)

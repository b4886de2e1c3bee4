"""Checkpoint IO: round trip, layouts, and one-line CheckpointError messages."""
import argparse
import os
import pickle

import pytest
import torch

from vmamba_ref import CheckpointError, build_model, get_config, load_checkpoint, save_checkpoint
from vmamba_ref.checkpoint import read_checkpoint


@pytest.fixture(scope="module")
def micro():
    return build_model(get_config("micro"), seed=0)


def fresh():
    return build_model(get_config("micro"), seed=123)


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def one_line_error(path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(fresh(), path)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 500
    return msg


def test_round_trip(micro, tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(micro, path, epoch=3)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]     # no temp file left behind
    model = fresh()
    report = load_checkpoint(model, path)
    assert same(model, micro) and report.source_key == "model" and not report.skipped
    assert torch.load(path, weights_only=True)["epoch"] == 3


def test_half_storage_upcasts(micro, tmp_path):
    save_checkpoint(micro, tmp_path / "h.pt", half=True)
    model = fresh()
    assert load_checkpoint(model, tmp_path / "h.pt").upcast
    assert model.classifier.head.weight.dtype == torch.float32
    torch.testing.assert_close(model.classifier.head.weight, micro.classifier.head.weight, rtol=1e-3, atol=1e-4)


def test_layouts(micro, tmp_path):
    sd = micro.state_dict()
    other = {k: torch.zeros_like(v) for k, v in sd.items()}
    torch.save(sd, tmp_path / "bare.pt")
    torch.save({"model_ema": sd}, tmp_path / "ema.pt")
    torch.save({"model": sd, "model_ema": other}, tmp_path / "both.pt")
    for name, source in [("bare.pt", None), ("ema.pt", "model_ema"), ("both.pt", "model")]:
        model = fresh()
        assert load_checkpoint(model, tmp_path / name).source_key == source
        assert same(model, micro), name


def test_training_checkpoint_with_objects_is_loaded_without_unpickling_them(micro, tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.remove, (str(tmp_path / "canary"),))

    (tmp_path / "canary").write_text("alive")
    torch.save({"model": micro.state_dict(), "config": argparse.Namespace(lr=1), "boom": Boom(),
                "optimizer": {"lr": 0.1}}, tmp_path / "train.pt")
    model = fresh()
    report = load_checkpoint(model, tmp_path / "train.pt")
    assert same(model, micro)
    assert (tmp_path / "canary").exists()
    assert sorted(report.skipped) == ["boom (posix.remove)", "config (argparse.Namespace)"]


def test_conv_shaped_1x1_weights_load(micro, tmp_path):
    sd = dict(micro.state_dict())
    sd["layers.0.blocks.0.op.in_proj.weight"] = sd["layers.0.blocks.0.op.in_proj.weight"][:, :, None, None]
    torch.save({"model": sd}, tmp_path / "conv.pt")
    model = fresh()
    load_checkpoint(model, tmp_path / "conv.pt")
    assert same(model, micro)


def test_wrong_keys_and_shapes(micro, tmp_path):
    sd = dict(micro.state_dict())
    for k in ["classifier.head.bias", "classifier.norm.bias", "layers.0.blocks.0.op.Ds", "patch_embed.0.bias",
              "patch_embed.2.bias", "patch_embed.5.bias", "patch_embed.7.bias"]:
        del sd[k]
    sd["head.weight"] = torch.zeros(1)
    sd["classifier.head.weight"] = torch.zeros(1000, 256)
    torch.save({"model": sd}, tmp_path / "bad.pt")
    msg = one_line_error(tmp_path / "bad.pt")
    # listed in the model's own order, truncated after 5
    assert "missing 7 keys: patch_embed.0.bias, patch_embed.2.bias, patch_embed.5.bias, patch_embed.7.bias, " \
           "layers.0.blocks.0.op.Ds, ... (+2 more)" in msg
    assert "unexpected 1 key: head.weight" in msg
    assert "shape mismatch in 1 key: classifier.head.weight [1000, 256] vs model [10, 256]" in msg


def test_wrong_config(tmp_path):
    save_checkpoint(build_model(get_config("micro", d_state=4)), tmp_path / "n4.pt")
    msg = one_line_error(tmp_path / "n4.pt")
    assert "does not fit the model" in msg and "layers.0.blocks.0.op.A_logs [256, 4] vs model [256, 1]" in msg


@pytest.mark.parametrize("kind", ["random", "text", "pickled-list", "torch-list", "missing", "empty-dict"])
def test_not_a_checkpoint(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "text":
        path.write_text("hello\nworld\n")
    elif kind == "pickled-list":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    elif kind == "torch-list":
        torch.save([torch.zeros(2)], path)
    elif kind == "empty-dict":
        torch.save({}, path)
    msg = one_line_error(path)
    assert msg.startswith(str(path))
    assert ("no such file" if kind == "missing" else "not a checkpoint") in msg


def test_read_checkpoint_rejects_non_tensor_state(tmp_path):
    torch.save({"model": {"a": 1}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint|non-tensor"):
        read_checkpoint(tmp_path / "x.pt")


@pytest.mark.parametrize("kind", ["folder", "named pipe"])
def test_a_checkpoint_path_that_is_no_regular_file_is_said_so(tmp_path, kind):
    """`vmamba_ref.export --ckpt` of a folder or a named pipe said 'X: no such file' of a path that exists (adv20)."""
    path = tmp_path / "ckpt"
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert str(caught.value) == f"checkpoint {path} is not a regular file (a {'directory' if kind == 'folder' else kind})"

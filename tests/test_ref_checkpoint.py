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

# --- session s32 (mut35): every refusal's exact message, and what the restricted loader keeps ------------------------

import argparse  # noqa: E402
import warnings  # noqa: E402
import zipfile  # noqa: E402

import torch.nn as nn  # noqa: E402

from vmamba_ref.checkpoint import _listing, _restricted_load, _skipped_type  # noqa: E402


class FakeStorage:
    """A global whose name ends in Storage outside torch: refused like any other, not looked up in torch."""


class OldTensor:
    """Pickles as torch._utils._rebuild_tensor (the pre-v2 rebuild) of elements 1-2 of its tensor's storage."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # TypedStorage is deprecated
            return (torch._utils._rebuild_tensor, (self.tensor.storage(), 1, (2,), (1,)))


def _message(path):
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    return str(info.value)


def _rewrite(source, target, change):
    """A copy of zip `source` with each member through change(name, data) -> (name, data) or None (left out)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            member = change(name, src.read(name))
            if member is not None:
                dst.writestr(*member)
    return target


def test_listing_counts_and_cuts_after_five():
    assert _listing("missing", ["a"]) == "missing 1 key: a"
    assert _listing("missing", list("abcde")) == "missing 5 keys: a, b, c, d, e"
    assert _listing("missing", list("abcdef")) == "missing 6 keys: a, b, c, d, e, ... (+1 more)"
    assert _listing("x", ["a\nb"], limit=1) == "x 1 key: a\\nb"


def test_a_refused_global_is_an_inert_class_named_skipped():
    cls = _skipped_type("os.system")
    assert cls.__name__ == "Skipped" and repr(cls("rm", x=1)) == "<skipped os.system>"


@pytest.mark.parametrize("kind, message", [
    ("random", "not a checkpoint (Unsupported operand 0)"),   # torch's advice cut to its WeightsUnpickler error
    ("text", "not a checkpoint (torch.load failed: KeyError: 101)"),
    ("list", "not a checkpoint (holds a list, expected a state dict or a dict with 'model'/'model_ema')"),
    ("empty", "not a checkpoint (holds a dict, expected a state dict or a dict with 'model'/'model_ema')"),
    ("non-tensor", "not a state dict (non-tensor entries in 7 keys: k0, k1, k2, k3, k4, ... (+2 more))"),
    ("legacy", "not a checkpoint (neither a torch zip archive nor loadable by torch.load)"),
    ("truncated", "not a checkpoint (unpickling failed: UnpicklingError: pickle data was truncated)"),
    ("bad-persistent-id", "not a checkpoint (bad persistent id ('storagx', <class 'torch.FloatStorage'>, '0', 'cpu', "
                          "3))"),
    ("missing-storage", "not a checkpoint (storage 0 is missing from the archive)"),
    ("no-data-pkl", "not a checkpoint (zip archive without data.pkl)"),
])
def test_each_refusal_has_its_exact_message(kind, message, tmp_path):
    """The restricted loader's refusals are met by a file whose refused global (a Namespace) comes before the
    damage, as a training checkpoint's config can; a legacy (non-zip) file with one has no archive to read."""
    path = tmp_path / f"{kind}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "random":
            path.write_bytes(bytes(range(256)) * 4)
        elif kind == "text":
            path.write_text("hello\nworld\n")
        elif kind == "list":
            torch.save([torch.zeros(2)], path)
        elif kind == "empty":
            torch.save({}, path)
        elif kind == "non-tensor":
            torch.save({"model": {f"k{i}": i for i in range(7)}}, path)
        elif kind == "legacy":
            torch.save({"model": {"w": torch.zeros(3)}, "config": argparse.Namespace(lr=1)}, path,
                       _use_new_zipfile_serialization=False)
        else:
            good = tmp_path / "good.pt"
            torch.save({"config": argparse.Namespace(lr=1), "model": {"w": torch.zeros(3)}}, good)
            pickled = {"truncated": lambda n, b: (n, b[:-20] if n.endswith("data.pkl") else b),
                       "bad-persistent-id": lambda n, b: (n, b.replace(b"X\x07\x00\x00\x00storage",
                                                                       b"X\x07\x00\x00\x00storagx")),
                       "missing-storage": lambda n, b: None if "/data/" in n else (n, b)}
            if kind == "no-data-pkl":
                _rewrite(good, path, lambda n, b: None if n.endswith("data.pkl") else (n, b))
                with pytest.raises(CheckpointError) as info:
                    _restricted_load(str(path))
                assert str(info.value) == f"{path}: {message}"
                return
            _rewrite(good, path, pickled[kind])
    assert _message(path) == f"{path}: {message}"


def test_the_restricted_loader_keeps_parameters_sizes_old_tensors_and_every_storage_dtype(tmp_path):
    """A training checkpoint with a refused global first: Parameters, int64 and float16 storages and a tensor of
    the pre-v2 rebuild come back with their values and dtypes; a torch.Size is kept (not listed as skipped); a
    refused class (not an instance) and a non-torch '...Storage' global are skipped by name."""
    path = tmp_path / "mixed.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({"config": argparse.Namespace(lr=1), "cls": argparse.Namespace, "fake": FakeStorage(),
                    "shape": torch.Size([2, 3]),
                    "model": {"w": nn.Parameter(torch.tensor([1.5, -2.0])), "i": torch.tensor([3, -4]),
                              "h": torch.tensor([0.5, 2.0], dtype=torch.float16),
                              "old": OldTensor(torch.tensor([7.0, 8.0, 9.0]))}}, path)
    sd, report = read_checkpoint(path)
    assert {k: (type(v).__name__, v.dtype, v.tolist()) for k, v in sd.items()} == {
        "w": ("Parameter", torch.float32, [1.5, -2.0]), "i": ("Tensor", torch.int64, [3, -4]),
        "h": ("Tensor", torch.float16, [0.5, 2.0]), "old": ("Tensor", torch.float32, [8.0, 9.0])}
    assert (report.source_key, report.skipped) == ("model", [
        "config (argparse.Namespace)", "cls (argparse.Namespace)", f"fake ({FakeStorage.__module__}.FakeStorage)"])


def test_a_zip_with_data_pkl_at_its_root_is_read(tmp_path):
    """data.pkl and data/ at the archive's root (no folder): the restricted loader finds both."""
    good = tmp_path / "good.pt"
    torch.save({"config": argparse.Namespace(lr=1), "model": {"w": torch.tensor([1.0, 2.0])}}, good)
    path = _rewrite(good, tmp_path / "root.pt", lambda n, b: (n.split("/", 1)[1], b))
    assert zipfile.ZipFile(path).namelist()[0] == "data.pkl"
    loaded = _restricted_load(str(path))
    assert repr(loaded["config"]) == "<skipped argparse.Namespace>" and loaded["model"]["w"].tolist() == [1.0, 2.0]


def _training_file(tmp_path, model, name="train.pt", **extra):
    """A checkpoint whose refused global (a Namespace config) comes first: the restricted loader reads it."""
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({"config": argparse.Namespace(lr=1), "model": model, **extra}, path)
    return path


def test_the_restricted_loader_reads_storages_of_other_types_locations_and_sizes(tmp_path):
    """An empty tensor (a storage of no bytes); a storage whose type is refused (not torch's: float32 assumed);
    a storage saved on cuda:0 (mapped to the cpu); a nested refused object named by its path; and no warning
    (TypedStorage's deprecation) reaching the caller."""
    path = _training_file(tmp_path, {"e": torch.zeros(0), "w": torch.tensor([1.0, 2.0])},
                          optimizer={"state": {"cfg": argparse.Namespace(x=1)}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sd, report = read_checkpoint(path)
    assert {k: (v.dtype, v.tolist()) for k, v in sd.items()} == {"e": (torch.float32, []),
                                                                 "w": (torch.float32, [1.0, 2.0])}
    assert report.skipped == ["config (argparse.Namespace)", "optimizer.state.cfg (argparse.Namespace)"]
    for name, old, new in [("refused-type", b"ctorch\nFloatStorage\n", b"cevilx\nFloatStorage\n"),
                           ("cuda", b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")]:
        changed = _rewrite(_training_file(tmp_path, {"w": torch.tensor([1.0, 2.0])}), tmp_path / f"{name}.pt",
                           lambda n, b: (n, b.replace(old, new) if n.endswith("data.pkl") else b))
        with zipfile.ZipFile(changed) as archive:
            assert new in archive.read("train/data.pkl"), name
        sd, _ = read_checkpoint(changed)
        assert {k: (v.dtype, v.device.type, v.tolist()) for k, v in sd.items()} == {
            "w": (torch.float32, "cpu", [1.0, 2.0])}, name


def test_long_persistent_ids_keys_and_errors_are_cut(tmp_path):
    """The bad persistent id cut at 60 characters (a complex128 storage's is 62), a missing storage's key at 60."""
    good = _training_file(tmp_path, {"w": torch.zeros(2, dtype=torch.complex128)})
    bad = _rewrite(good, tmp_path / "bad.pt", lambda n, b: (n, b.replace(b"X\x07\x00\x00\x00storage",
                                                                         b"X\x07\x00\x00\x00storagx")))
    pid = str(("storagx", torch.ComplexDoubleStorage, "0", "cpu", 2))
    assert len(pid) > 60 and _message(bad) == f"{bad}: not a checkpoint (bad persistent id {pid[:60]})"
    key = "k" * 70
    missing = _rewrite(good, tmp_path / "missing.pt", lambda n, b: None if "/data/" in n else (
        n, b.replace(b"X\x01\x00\x00\x000", b"X\x46\x00\x00\x00" + key.encode(), 1)))
    assert _message(missing) == f"{missing}: not a checkpoint (storage {key[:60]} is missing from the archive)"


def test_a_tensor_past_the_end_of_its_storage_is_refused_by_both_loaders(tmp_path):
    """s32 (mut35), a fault: the restricted loader's storages are resizable, so a crafted _rebuild_tensor_v2 of 100
    elements on a storage of 3 grew it with uninitialised memory and was loaded as weights; torch.load's own
    storages refuse. Both are refusals now, the tensor read by weights_only first or after a refused global."""

    class Past:
        def __init__(self, tensor):
            self.tensor = tensor

        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (self.tensor.untyped_storage(), 0, (100,), (1,), False, {}))

    plain = tmp_path / "plain.pt"
    torch.save({"model": {"w": Past(torch.zeros(3))}}, plain)
    assert _message(plain) == (f"{plain}: not a checkpoint (torch.load failed: RuntimeError: Trying to resize storage "
                               "that is not resizable)")
    past = _training_file(tmp_path, {"ok": torch.ones(2), "w": Past(torch.zeros(3))}, name="past.pt")
    assert _message(past) == f"{past}: not a checkpoint (a tensor reaches past the end of storage 1)"


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(2, 3), nn.Linear(3, 4), nn.Linear(4, 5)


def _fit_message(changes, drop=()):
    from vmamba_ref.checkpoint import check_state_dict

    model = _Tiny()
    sd = {k: torch.zeros(changes.get(k, tuple(v.shape))) for k, v in model.state_dict().items() if k not in drop}
    sd.update({k: torch.zeros(shape) for k, shape in changes.items() if k not in sd})
    with pytest.raises(CheckpointError) as info:
        check_state_dict(model, sd)
    return str(info.value)


def test_check_state_dict_names_each_misfit_exactly():
    """A 1x1-conv-shaped weight fits its Linear and the keys after it are still checked; a 4-D weight that is not
    (o, i, 1, 1) of the model's (o, i) does not; mismatches listed up to 3, '+N more' past; missing, unexpected and
    mismatched parts joined by '; '; the default name 'state dict'."""
    head = "state dict: does not fit the model: "
    assert _fit_message({"a.weight": (3, 2, 1, 1), "b.weight": (4, 4)}) == (
        head + "shape mismatch in 1 key: b.weight [4, 4] vs model [4, 3]")
    assert _fit_message({"a.weight": (3, 2, 1, 2), "b.weight": (4, 4, 1, 1), "c.weight": (5, 4, 1)}) == (
        head + "shape mismatch in 3 keys: a.weight [3, 2, 1, 2] vs model [3, 2], b.weight [4, 4, 1, 1] vs model "
        "[4, 3], c.weight [5, 4, 1] vs model [5, 4]")
    assert _fit_message({"a.weight": (3, 3), "a.bias": (4,), "b.weight": (4, 4), "b.bias": (5,)}) == (
        head + "shape mismatch in 4 keys: a.weight [3, 3] vs model [3, 2], a.bias [4] vs model [3], b.weight [4, 4] "
        "vs model [4, 3], ... (+1 more)")
    assert _fit_message({"extra": (1,), "c.bias": (6,)}, drop=("a.bias",)) == (
        head + "missing 1 key: a.bias; unexpected 1 key: extra; shape mismatch in 1 key: c.bias [6] vs model [5]")


def test_load_checkpoint_names_the_file_keeps_float_weights_as_they_are_and_saves_dicts_into_new_folders(tmp_path):
    model = _Tiny()
    path = tmp_path / "new" / "deeper" / "tiny.pt"
    save_checkpoint(dict(model.state_dict()), path)   # a dict, not a module; two folders made
    report = load_checkpoint(_Tiny(), path)
    assert (report.path, report.source_key, report.skipped, report.upcast) == (str(path), "model", [], False)
    sd = dict(model.state_dict())
    sd["c.bias"] = torch.zeros(6)
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_Tiny(), tmp_path / "bad.pt")
    assert str(info.value) == (f"{tmp_path / 'bad.pt'}: does not fit the model: shape mismatch in 1 key: c.bias [6] "
                               "vs model [5]")


def test_torch_load_errors_are_cut_at_120_characters(tmp_path):
    """A storage missing from the archive with no refused global before it: torch.load's own error, its first line
    cut at 120 characters."""
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(3)}}, good)
    path = _rewrite(good, tmp_path / "missing.pt", lambda n, b: None if "/data/" in n else (n, b))
    assert _message(path) == (f"{path}: not a checkpoint (torch.load failed: RuntimeError: PytorchStreamReader failed "
                              "locating file data/0: file not found. This is an internal miniz error. If you are "
                              "seeing this)")


def test_a_checkpoint_saved_on_a_gpu_is_read_onto_the_cpu(tmp_path):
    """torch.load's own path (no refused global) with the storage's location rewritten to cuda:0: mapped to the
    cpu, where loading it as saved would need a GPU."""
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.tensor([1.0, 2.0])}}, good)
    path = _rewrite(good, tmp_path / "cuda.pt", lambda n, b: (n, b.replace(b"X\x03\x00\x00\x00cpu",
                                                                           b"X\x06\x00\x00\x00cuda:0")))
    with zipfile.ZipFile(path) as archive:
        assert b"cuda:0" in archive.read("good/data.pkl")
    sd, report = read_checkpoint(path)
    assert {k: (v.device.type, v.tolist()) for k, v in sd.items()} == {"w": ("cpu", [1.0, 2.0])}
    assert report.path == str(path)


def test_an_error_without_text_is_named_by_its_type_and_a_long_one_cut_at_120(tmp_path, monkeypatch):
    """mut35's 7 open mutants: no file gives pickle or torch such an error, so the helpers get them directly, and
    read_checkpoint a torch.load that raises one."""
    import pickle

    import torch

    from vmamba_ref import checkpoint

    long = "y" * 130
    assert checkpoint._first_line(ValueError()) == "ValueError"
    assert checkpoint._first_line(ValueError(" \n\t\n")) == "ValueError"
    assert checkpoint._first_line(ValueError(f"\n  {long}\nsecond")) == "ValueError: " + "y" * 120
    assert checkpoint._weights_only_reason(pickle.UnpicklingError()) == "UnpicklingError"
    assert checkpoint._weights_only_reason(pickle.UnpicklingError("advice\nWeightsUnpickler error:\n ")) == \
        "UnpicklingError"
    assert checkpoint._weights_only_reason(pickle.UnpicklingError(f"WeightsUnpickler error: {long}")) == "y" * 120
    path = tmp_path / "c.pt"
    path.write_bytes(b"x")

    def empty_error(*args, **kwargs):
        raise RuntimeError("  ")
    monkeypatch.setattr(torch, "load", empty_error)
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.read_checkpoint(path)
    assert str(error.value) == f"{path}: not a checkpoint (torch.load failed: RuntimeError: RuntimeError)"

"""passes.npz_arrays.read_npz: the one reader of npz files nobody vouches for (the reference, tools.bench's
reference, tools.tpu_check's inputs). Each refusal is one exact line that does not name the file."""

import zipfile

import numpy as np
import pytest

from passes import npz_arrays
from passes.npz_arrays import NpzError, npz_member_names, read_npz
from tests.test_hardening import _corrupt_member, _member_not_npy


def _unpacking_recorded(monkeypatch) -> list:
    unpacked = []
    original = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__",
                        lambda self, key: unpacked.append(key) or original(self, key))
    return unpacked


def test_reads_only_the_members_asked_for(tmp_path, monkeypatch):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.arange(3, dtype=np.float32), y=np.ones((2, 2)), other=np.array(["text"]))
    unpacked = _unpacking_recorded(monkeypatch)
    arrays = read_npz(path, ["y", "x", "absent"])
    assert sorted(arrays) == ["x", "y"] and sorted(unpacked) == ["x", "y"]
    np.testing.assert_array_equal(arrays["x"], np.arange(3, dtype=np.float32))
    assert arrays["y"].dtype == np.float64 and arrays["y"].shape == (2, 2)
    assert sorted(read_npz(path)) == ["other", "x", "y"] and npz_member_names(path) == ["x", "y", "other"]


def test_one_member_over_the_cap_is_refused_before_anything_is_unpacked(tmp_path, monkeypatch):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, small=np.zeros(2), big=np.zeros(1000))
    size = zipfile.ZipFile(path).getinfo("big.npy").file_size
    unpacked = _unpacking_recorded(monkeypatch)
    with pytest.raises(NpzError) as info:
        read_npz(path, max_bytes=size - 1)
    assert str(info.value) == f"array 'big' unpacks to {size:,} bytes, over the {size - 1:,} one array may take"
    assert unpacked == []
    assert read_npz(path, ["big"], max_bytes=size)["big"].shape == (1000,)   # the cap itself is allowed


def test_the_member_sized_is_the_member_numpy_unpacks(tmp_path, monkeypatch):
    """adv11: a zip holding both 'y' and 'y.npy': numpy reads 'y' (the exact name first), the cap was taken from
    'y.npy'. A small 'y.npy' beside a deflated 'y' of any size (zeros: a few KB a GB) unpacked it whole."""
    import io

    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in (("y.npy", np.zeros(2)), ("y", np.zeros(1000))):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array)
            archive.writestr(name, buffer.getvalue())
    size = zipfile.ZipFile(path).getinfo("y").file_size
    unpacked = _unpacking_recorded(monkeypatch)
    with pytest.raises(NpzError) as info:
        read_npz(path, ["y"], max_bytes=1000)
    assert str(info.value) == f"array 'y' unpacks to {size:,} bytes, over the 1,000 one array may take"
    assert unpacked == []
    assert read_npz(path, max_bytes=size)["y"].shape == (1000,)   # counted once, though numpy lists it twice


def test_members_over_the_cap_together_are_refused_and_the_module_cap_is_the_default(tmp_path, monkeypatch):
    path = tmp_path / "a.npz"
    np.savez(path, a=np.zeros(8), b=np.zeros(8))
    sizes = [zipfile.ZipFile(path).getinfo(f"{key}.npy").file_size for key in "ab"]
    monkeypatch.setattr(npz_arrays, "MAX_NPZ_BYTES", sum(sizes) - 1)
    unpacked = _unpacking_recorded(monkeypatch)
    with pytest.raises(NpzError) as info:
        read_npz(path)
    assert str(info.value) == (f"the 2 arrays read unpack to {sum(sizes):,} bytes in all, "
                               f"over the {sum(sizes) - 1:,} they may take")
    assert unpacked == [] and sorted(read_npz(path, ["a"])) == ["a"]   # one of them is under it


BAD_FILES = {
    "garbage": (lambda p: p.write_bytes(b"garbage"), "not a readable npz (This file contains pickled (object) data"),
    "empty": (lambda p: p.write_bytes(b""), "not a readable npz ("),
    "object-array": (lambda p: np.savez(p, x=np.array([None], dtype=object)),
                     "not a readable npz (Object arrays cannot be loaded when allow_pickle=False"),
    "single-npy": (lambda p: np.save(open(p, "wb"), np.zeros(2)), "a single .npy array, not an npz archive of named arrays"),
    "member-not-npy": (_member_not_npy, "member 'logits' is not an .npy array"),
    "corrupt-member": (_corrupt_member, "not a readable npz ("),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_unusable_files_are_one_line_that_does_not_name_the_file(case, tmp_path):
    make, message = BAD_FILES[case]
    path = tmp_path / "secret-name.npz"
    make(path)
    with pytest.raises(NpzError) as info:
        read_npz(path)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text and "secret-name" not in text


def test_member_names_are_escaped_in_messages(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, **{"x\x1b[2J\nnext": np.zeros(64)})
    with pytest.raises(NpzError) as info:
        read_npz(path, max_bytes=8)
    assert "\x1b" not in str(info.value) and "\n" not in str(info.value) and "next" in str(info.value)


def test_arrays_saved_in_the_other_byte_order_come_back_in_this_machines(tmp_path):
    """Found by adv23: a reference whose float32 input was saved big-endian ('>f4', an npz written on such a machine)
    was refused, "input 'x' is >f4; the model takes float32", exit 2: the values are float32. Now read_npz hands back
    every array in this machine's byte order, values unchanged."""
    from pipelines import compile_model
    import onnx

    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    np.savez(tmp_path / "be.npz", x=x.astype(">f4"), y=np.maximum(x, 0).astype(">i8"))
    arrays = read_npz(tmp_path / "be.npz")
    assert arrays["x"].dtype == np.float32 and arrays["y"].dtype == np.int64
    np.testing.assert_array_equal(arrays["x"], x)
    np.testing.assert_array_equal(arrays["y"], np.maximum(x, 0).astype(np.int64))
    model = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[2, 4] x) => (float[2, 4] y) { y = Relu(x) }')
    np.savez(tmp_path / "ref.npz", x=x.astype(">f4"), y=np.maximum(x, 0).astype(">f4"))
    result = compile_model(model, "eliminate-dead-nodes", reference=tmp_path / "ref.npz")
    assert result.verification["rel_l2"] == 0

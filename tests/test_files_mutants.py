"""passes.files' checked reads (checked_file, open_checked, open_regular_file) against the mutants the first tests left
alive (session s35, mut38; docs/MUTATION.md): the callers (graph_io's external data, verify's reference beside) turn
every FileChangedError into one message, so what each refusal says (errno, words, the path) and that nothing of the
kind a check refused is ever waited on (a named pipe in place of a folder or of the file) are asserted here."""
from __future__ import annotations

import errno
import os
import signal

import pytest

from passes.files import FileChangedError, checked_file, open_checked, open_regular_file


@pytest.fixture
def no_wait():
    """Fail (not hang) where an open waits for a named pipe's writer."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("waited on a named pipe"))
    signal.alarm(10)
    yield
    signal.alarm(0)


def _folder(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "w.bin").write_bytes(b"weights")
    return folder


def _refused(base, resolved, checked):
    with pytest.raises(FileChangedError) as refused:
        os.close(open_checked(base, resolved, checked))
    return refused.value.errno, refused.value.strerror, refused.value.filename


def test_checked_file_gives_real_paths_and_none_for_a_file_it_cannot_look_at(tmp_path):
    folder = _folder(tmp_path)
    (tmp_path / "link").symlink_to(folder)
    base, resolved, status = checked_file(tmp_path / "link", tmp_path / "link" / "sub" / "w.bin")
    assert (base, resolved) == (str(folder), str(folder / "sub" / "w.bin"))
    assert (status.st_dev, status.st_ino) == (os.stat(folder / "sub" / "w.bin").st_dev, os.stat(folder / "sub" / "w.bin").st_ino)
    assert checked_file(folder, folder / "missing") == (str(folder), str(folder / "missing"), None)


def test_the_file_checked_is_opened_and_read(tmp_path):
    folder = _folder(tmp_path)
    fd = open_checked(*checked_file(folder, folder / "sub" / "w.bin"))
    with os.fdopen(fd, "rb") as handle:
        assert handle.read() == b"weights"


def test_a_path_outside_the_folder_is_refused_by_name(tmp_path):
    folder = _folder(tmp_path)
    (tmp_path / "outside").write_bytes(b"secret")
    outside = str(tmp_path / "outside")
    assert _refused(str(folder), outside, None) == (errno.EXDEV, "not inside the folder it was checked in", outside)


def test_a_file_that_became_a_link_is_refused_by_name(tmp_path):
    folder = _folder(tmp_path)
    (tmp_path / "outside").write_bytes(b"secret")
    checked = checked_file(folder, folder / "sub" / "w.bin")
    (folder / "sub" / "w.bin").unlink()
    (folder / "sub" / "w.bin").symlink_to(tmp_path / "outside")
    assert _refused(*checked) == (errno.ELOOP, "it became a symbolic link", str(folder / "sub" / "w.bin"))


def test_a_folder_on_the_way_that_became_a_link_or_a_file_is_refused_by_name(tmp_path):
    folder = _folder(tmp_path)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "w.bin").write_bytes(b"secret")
    checked = checked_file(folder, folder / "sub" / "w.bin")
    (folder / "sub").rename(folder / "was-sub")
    (folder / "sub").symlink_to(tmp_path / "outside")
    resolved = str(folder / "sub" / "w.bin")
    # (Linux: O_DIRECTORY | O_NOFOLLOW on a link is ENOTDIR, not ELOOP)
    assert _refused(*checked) == (errno.ENOTDIR, "a folder on its way became a symbolic link", resolved)
    (folder / "sub").unlink()
    (folder / "sub").write_bytes(b"a file")   # a regular file where the folder was: opened as one, it would be read on
    assert _refused(*checked) == (errno.ENOTDIR, "a folder on its way became a symbolic link", resolved)


def test_a_folder_on_the_way_replaced_by_a_named_pipe_is_refused_not_waited_on(tmp_path, no_wait):
    folder = _folder(tmp_path)
    checked = checked_file(folder, folder / "sub" / "w.bin")
    (folder / "sub").rename(folder / "was-sub")
    os.mkfifo(folder / "sub")
    assert _refused(*checked) == (errno.ENOTDIR, "a folder on its way became a symbolic link",
                                  str(folder / "sub" / "w.bin"))


def test_the_folder_itself_replaced_by_a_named_pipe_is_refused_not_waited_on(tmp_path, no_wait):
    folder = _folder(tmp_path)
    checked = checked_file(folder, folder / "sub" / "w.bin")
    folder.rename(tmp_path / "was-model")
    os.mkfifo(folder)
    with pytest.raises(NotADirectoryError) as refused:
        open_checked(*checked)
    assert refused.value.filename == str(folder)


def test_the_file_replaced_by_a_named_pipe_is_another_file_not_waited_on(tmp_path, no_wait):
    folder = _folder(tmp_path)
    checked = checked_file(folder, folder / "sub" / "w.bin")
    (folder / "sub" / "w.bin").rename(folder / "old")   # kept: a file removed may hand its inode number on
    os.mkfifo(folder / "sub" / "w.bin")
    assert _refused(*checked) == (errno.ESTALE, "another file was put in its place", str(folder / "sub" / "w.bin"))
    # looked at as nothing (checked None): opened without waiting, the caller refuses what it is
    fd = open_checked(checked[0], checked[1], None)
    try:
        assert os.fstat(fd).st_ino == os.stat(folder / "sub" / "w.bin").st_ino
    finally:
        os.close(fd)


def test_open_regular_file_refuses_a_named_pipe_by_name_not_waited_on(tmp_path, no_wait):
    os.mkfifo(tmp_path / "m.onnx")
    with pytest.raises(OSError) as refused:
        open_regular_file(tmp_path / "m.onnx")
    assert (refused.value.errno, refused.value.strerror, refused.value.filename) == (
        errno.EINVAL, "not a regular file (a named pipe)", str(tmp_path / "m.onnx"))
    (tmp_path / "w.bin").write_bytes(b"weights")
    with open_regular_file(tmp_path / "w.bin") as handle:
        assert handle.read() == b"weights"

"""passes/files.py at its edges: each test kills a hand mutant that the destination tests of
test_hardening, test_tool_destinations, test_json_destination and test_graph_io let live
(docs/MUTATION.md, session s16)."""
import os

import pytest

from passes.files import (DestinationError, atomic_target, check_folder_destination, folders_made, is_same_file,
                          read_regular_file)


def test_a_missing_file_is_the_same_file_under_another_spelling(tmp_path):
    """Two destinations not yet written, spelled differently, are one file (mutant: paths compared
    as written, not resolved)."""
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    assert is_same_file(tmp_path / "real" / "new.onnx", tmp_path / "alias" / "new.onnx")
    assert is_same_file(tmp_path / "real" / ".." / "new.onnx", tmp_path / "new.onnx")
    assert not is_same_file(tmp_path / "real" / "new.onnx", tmp_path / "new.onnx")


def test_a_folder_name_of_exactly_the_file_systems_limit_is_taken(tmp_path):
    """A name of NAME_MAX bytes can be made; one byte more cannot (mutant: '>=' for '>')."""
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    longest = tmp_path / "new" / ("r" * limit)
    assert check_folder_destination(longest, "--report folder") == longest
    os.makedirs(longest)   # the file system agrees
    with pytest.raises(DestinationError, match=f"a name in it is longer than the {limit} bytes"):
        check_folder_destination(tmp_path / "other" / ("r" * (limit + 1)), "--report folder")


def test_folders_made_for_a_failed_block_are_all_removed(tmp_path):
    """Nested folders made for a block that fails are removed innermost first, so the outer ones are
    empty when their turn comes (mutant: outermost first, which leaves all but the innermost)."""
    with pytest.raises(RuntimeError), folders_made(tmp_path / "a" / "b" / "c") as made:
        assert made == [tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"]
        raise RuntimeError("the write failed")
    assert os.listdir(tmp_path) == []


def test_a_destination_that_becomes_a_named_pipe_during_the_work_is_not_replaced(tmp_path):
    """The destination is checked again before the rename (mutant: only before the work): a named
    pipe made there meanwhile is refused and kept, and no temporary file is left."""
    target = tmp_path / "out.onnx"
    with pytest.raises(DestinationError, match="is a named pipe, not a regular file"):
        with atomic_target(target) as temporary:
            temporary.write_bytes(b"new")
            os.mkfifo(target)
    assert target.is_fifo() and os.listdir(tmp_path) == ["out.onnx"]


def test_read_regular_file_reads_up_to_its_limit_exactly(tmp_path):
    """A file of exactly ``limit`` bytes is read; one byte more is refused (mutant: '>=' for '>')."""
    path = tmp_path / "saved.json"
    path.write_bytes(b"x" * 10)
    assert read_regular_file(path, limit=10) == b"x" * 10
    with pytest.raises(OSError, match="10 bytes, more than the 9 read back"):
        read_regular_file(path, limit=9)

"""The --json destination (and --workdir) check every measuring tool makes before its work.

A tool that measures or compiles for minutes must refuse a --json destination it could never write
(a directory, a planted device, a missing or read-only folder) before it starts, not after, so the
user loses no minutes and gets the tool's usual one-line error and exit 2.
"""
from __future__ import annotations

import sys
from typing import Iterable

from passes.files import DestinationError, check_destination, check_folder_destination, check_not_read
from passes.one_line import one_line


def json_destination_refused(path, *, dash_is_stdout: bool = False, reads: Iterable[tuple[str, object]] = ()) -> bool:
    """Check ``path`` as --json's destination; on refusal print one line on stderr and return True.

    ``None`` (no --json) passes; so does ``-`` where the tool writes JSON to stdout for it. ``reads``:
    (role, path) pairs of the files the tool reads (a None path: not given), which --json must not
    be (``--json model.onnx`` replaced the model with the results)."""
    if path is None or path == "" or (dash_is_stdout and str(path) == "-"):
        return False
    try:
        check_destination(path, "--json")
        check_not_read(path, [(role, read) for role, read in reads if read is not None], "--json")
    except DestinationError as error:
        sys.stderr.write(f"error: {one_line(error)}\n")   # names the path: escaped
        return True
    return False


def workdir_refused(path) -> bool:
    """Check ``path`` as --workdir (made if missing); on refusal (a file, a device, a folder that
    takes no file) print one line on stderr and return True. ``None`` passes."""
    if path is None or path == "":
        return False
    try:
        check_folder_destination(path, "--workdir")
    except DestinationError as error:
        sys.stderr.write(f"error: {one_line(error)}\n")
        return True
    return False

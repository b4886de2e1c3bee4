"""Named arrays from an npz file that nobody vouches for.

An npz is a zip of .npy members: a few MB of deflated zeros can unpack to tens of GB, a member can
hold a pickle (allow_pickle stays off) or be bytes that are no .npy at all (numpy hands those over
raw). Sizes are taken from the zip's directory before anything is unpacked. The compiler's
reference (passes.verify), tools.bench's reference and tools.tpu_check's inputs all read through
here, so the three answer one bad file the same way.
"""

from __future__ import annotations

import errno
import os
from typing import IO, Iterable

import numpy as np

from passes.files import open_regular_file
from passes.one_line import one_line, printable

# 2 GiB: 2^28 float64 values, the random feeds' own cap (passes.verify); the members read, all
# together, too (a model of many outputs, each member under the cap).
MAX_NPZ_BYTES = 2**31


class NpzError(ValueError):
    """Why the file cannot be used, in one line that does not name it: the caller says which file
    it was ("reference X: " + reason)."""


def read_npz(path: str | os.PathLike | IO[bytes], names: Iterable[str] | None = None,
             max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The members of the npz at `path` whose names are in `names` (all of them when None), each a
    numpy array; members not asked for are never unpacked, so they may hold anything.

    NpzError for a file that is not an npz or has a corrupt or pickled member; a member asked for
    that unpacks to more than `max_bytes` (MAX_NPZ_BYTES by default), or members that do together;
    a member that is not an .npy array."""
    if hasattr(path, "seek"):   # an open file (a reference opened once, checked: passes.verify)
        path.seek(0)
        return _read_npz(path, names, max_bytes)
    try:   # opened once: a named pipe put in place of the file checked is refused, not waited on (adv22)
        handle = open_regular_file(path)
    except OSError as error:
        raise NpzError(printable(error.strerror or error) if error.errno == errno.EINVAL
                       else f"cannot be read ({printable(error.strerror or error)})") from None
    with handle:
        return _read_npz(handle, names, max_bytes)


def _read_npz(npz: IO[bytes], names: Iterable[str] | None, max_bytes: int | None) -> dict[str, np.ndarray]:
    cap = MAX_NPZ_BYTES if max_bytes is None else max_bytes
    try:
        archive = np.load(npz, allow_pickle=False)
    except Exception as error:   # not a zip, a truncated file, a pickle
        raise NpzError(f"not a readable npz ({one_line(error, limit=200)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise NpzError("a single .npy array, not an npz archive of named arrays")
    with archive:
        wanted = set(archive.files) if names is None else set(names)
        keys = [key for key in dict.fromkeys(archive.files) if key in wanted]   # 'y' and 'y.npy' are both 'y'
        members = set(archive.zip.namelist())
        total = 0
        for key in keys:   # sizes from the zip's directory, before anything is unpacked; of the member numpy
            # unpacks for the key: the one of exactly that name where there is one, else NAME.npy
            size = archive.zip.getinfo(key if key in members else f"{key}.npy").file_size
            if size > cap:
                raise NpzError(f"array '{printable(key)}' unpacks to {size:,} bytes, over the {cap:,} one array may take")
            total += size
        if total > cap:   # many members under the cap each: as many times its memory
            raise NpzError(f"the {len(keys)} arrays read unpack to {total:,} bytes in all, over the {cap:,} they may take")
        try:
            arrays = {key: archive[key] for key in keys}
        except Exception as error:   # a corrupt member (BadZipFile, zlib.error, EOFError), an object array
            raise NpzError(f"not a readable npz ({one_line(error, limit=200)})") from None
    for key, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise NpzError(f"member '{printable(key)}' is not an .npy array")
    # in this machine's byte order: a float32 saved big-endian ('>f4', an npz written on such a machine) is float32,
    # which the checks compare with the model's type (adv23: "input 'x' is >f4; the model takes float32", exit 2)
    return {key: array if array.dtype.isnative or array.dtype.fields is not None
            else array.astype(array.dtype.newbyteorder("=")) for key, array in arrays.items()}


def npz_member_names(path: str | os.PathLike | IO[bytes]) -> list[str]:
    """The array names an npz holds (read from its directory only), for messages; `path` may be an open file."""
    if hasattr(path, "seek"):
        path.seek(0)
    with np.load(path, allow_pickle=False) as archive:
        return list(archive.files)

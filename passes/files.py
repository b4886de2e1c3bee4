"""Destinations: checked before the work, written atomically, never through a planted link.

Rules every writer in the project follows (the model writer, the report, diffview, the export CLIs):

- A destination that exists must be a regular file (or a link to one): ``-o /dev/null`` or
  ``-o fifo`` is refused, never replaced by a regular file.
- Its folder must exist and take a new file (probed, since ``os.access`` says yes to root).
- The data is written to a temporary file created exclusively (``O_CREAT | O_EXCL``, a unique
  name, mode 0600) in the same folder, then renamed over the destination: a reader sees the old
  file or the new one, a failure or an interrupt leaves neither half a file nor the temporary.
  ``O_EXCL`` fails on any existing name, symlinks included, so a link planted in the folder is
  never followed.

All refusals are ``DestinationError`` (an ``OSError``) with a one-line message.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterable, Iterator

from passes.interrupts import raise_if_interrupted
from passes.one_line import printable


class DestinationError(OSError):
    """A destination that must not or cannot be written; the message is one line."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "destination refused"


_KINDS = {stat.S_IFREG: "a regular file", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a named pipe",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def file_kind(mode: int) -> str:
    """'a named pipe', 'a directory', ... for a file's ``st_mode``."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _refuse_nul(path: Path, shown: str, what: str) -> None:
    # os.lstat would raise ValueError ('embedded null byte'), not an OSError: no path holds one
    if "\x00" in str(path):
        raise DestinationError(f"{what} {shown} holds a NUL byte, which no path can")


def _file_descriptor_link(path: Path) -> str | None:
    """Where a chain of symbolic links from ``path`` enters /proc (``/dev/stdout`` -> ``/proc/self/fd/1``),
    else None. Such a destination names a process's open file, not a place: replacing it would
    replace the link (``/dev/stdout`` made a regular file for every process on the machine)."""
    for _ in range(40):   # the kernel's own limit on links followed
        try:
            target = os.readlink(path)
        except OSError:   # not a link (or gone): the chain ends outside /proc
            return None
        path = Path(os.path.normpath(os.path.join(os.path.dirname(path), target)))
        # also with its folder's links resolved: /dev/fd/1 is /proc/<pid>/fd/1
        for spelling in (path, Path(os.path.realpath(path.parent)) / path.name):
            if spelling.parts[:2] == ("/", "proc"):
                return str(spelling)
    return None


def check_destination(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse (``DestinationError``) a destination that exists and is not a regular file, or whose
    folder is missing or takes no new file. Nothing is left behind by the check."""
    if isinstance(path, str) and path.endswith(("/", os.sep)) and path.strip("/" + os.sep):
        # Path() drops the '/': 'out/' would be written as a file named 'out'
        raise DestinationError(f"{what} {printable(path)} ends in '/', which names a folder; give a file path")
    path = Path(path)
    shown = printable(path)
    _refuse_nul(path, shown, what)
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        link = None
    except OSError as error:
        raise DestinationError(f"{what} {shown} cannot be examined: {printable(error.strerror or error)}") from None
    if link is not None:
        descriptor = _file_descriptor_link(path) if stat.S_ISLNK(link.st_mode) else None
        if descriptor is not None:
            raise DestinationError(f"{what} {shown} is a link to an open file ({printable(descriptor)}), not a place "
                                   "to write a file; refusing to replace it (give a file path)")
        try:
            target = os.stat(path)
        except OSError:
            raise DestinationError(f"{what} {shown} is a broken symbolic link") from None
        if stat.S_ISDIR(target.st_mode):
            raise DestinationError(f"{what} is a directory: {shown}")
        if not stat.S_ISREG(target.st_mode):
            raise DestinationError(f"{what} {shown} is {file_kind(target.st_mode)}, not a regular file; "
                                   "refusing to replace it")
    check_folder_writable(_folder(path), what, beside=path.name)
    return path


def is_same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """The same file (hard links and symbolic links included), or the same path if one is missing."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, ValueError):   # ValueError: a NUL in a path, which names no file (check_destination says so)
        return False


def check_not_read(destination: str | os.PathLike, read_files: Iterable[tuple[str, str | os.PathLike]],
                   what: str = "output") -> None:
    """Refuse a destination that is (or links to) a file the run reads; ``read_files``: (role, path)
    pairs such as ("input", ...), ("external data file", ...), ("reference", ...), ("plugin", ...)."""
    for role, read in read_files:
        if is_same_file(destination, read):
            raise DestinationError(f"{what} {printable(destination)} is the {role} {printable(read)}, which this "
                                   "run reads; refusing to overwrite it")


# The longest name a writer derives from a destination's name: '.NAME.' + 8 random characters +
# '.tmp-...' for its temporary files, 'NAME.<16 hex>.data' for a model's weights. The probe's is longer.
_PROBE_SUFFIX = ".probe-" + "x" * 16


def check_folder_writable(folder: str | os.PathLike, what: str = "output", beside: str = "") -> Path:
    """The folder exists and a new file can be created in it (probed: ``os.access`` says yes to root
    everywhere and knows nothing of read-only or special file systems); with ``beside``, a file
    named like the temporary files and data files derived from that name (a name near the file
    system's limit is refused here, not after the work)."""
    folder = Path(folder)
    shown = printable(folder)
    if not folder.is_dir():
        if folder.exists():
            raise DestinationError(f"{what} directory is not a directory: {shown}")
        raise DestinationError(f"{what} directory does not exist: {shown}")
    try:
        with tempfile.NamedTemporaryFile(prefix=f".{beside}." if beside else ".probe-",
                                         suffix=_PROBE_SUFFIX if beside else "", dir=folder):
            pass
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise DestinationError(f"{what} name {printable(beside)} is too long: the files written beside it "
                                   f"(its temporary file, a model's weights file) would pass the folder's limit "
                                   f"on names") from None
        raise DestinationError(f"{what} directory is not writable: {shown} ({printable(error.strerror or error)})") from None
    return folder


def check_folder_destination(folder: str | os.PathLike, what: str, files: Iterable[str] = ()) -> Path:
    """A folder the run will write into (made if missing, with its parents): if it exists it is a
    directory that takes files, and each of ``files`` in it is absent or a regular file; if not,
    the nearest existing ancestor is a directory that takes files. An empty path names no folder
    (Path('') is '.': '--report "$DIR"' with DIR unset wrote into the working folder)."""
    if os.fspath(folder) in ("", b""):
        raise DestinationError(f"{what} is an empty path; give a folder ('.' for the current one)")
    folder = Path(folder)
    shown = printable(folder)
    _refuse_nul(folder, shown, what)
    if os.path.lexists(folder):
        if not folder.is_dir():
            kind = "a broken symbolic link" if not folder.exists() else file_kind(os.stat(folder).st_mode)
            raise DestinationError(f"{what} {shown} exists and is {kind}, not a directory")
        check_folder_writable(folder, what)
        for name in files:
            check_destination(folder / name, f"{what} file")
        return folder
    ancestor = folder.absolute().parent
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DestinationError(f"{what} {shown} cannot be made: {printable(ancestor)} is not a directory")
    check_folder_writable(ancestor, what)
    try:
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in folder.absolute().relative_to(ancestor).parts:
        if len(os.fsencode(part)) > limit:
            raise DestinationError(f"{what} {shown} cannot be made: a name in it is longer than the {limit} bytes "
                                   "its file system takes")
    return folder


def make_folders(folder: str | os.PathLike) -> list[Path]:
    """``mkdir -p folder``; the folders it made, outermost first (for ``remove_empty_folders``)."""
    folder = Path(folder)
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = folder.parent
    made = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:   # another run made it meanwhile: theirs, not ours to remove
            if not folder.is_dir():
                raise
            continue
        made.append(folder)
    return made


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove those of ``folders`` (made by ``make_folders``) that are still empty, innermost first:
    a run that fails or is interrupted leaves no folder of its own behind, and nothing in one."""
    for folder in reversed(list(folders)):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


@contextlib.contextmanager
def folders_made(folder: str | os.PathLike) -> Iterator[list[Path]]:
    """``make_folders(folder)`` for a block that writes into it: if the block fails or is
    interrupted, the folders it made are removed again while empty."""
    made = make_folders(folder)
    try:
        yield made
    except BaseException:
        with interrupts_held():   # a second Ctrl-C while cleaning up (adv18) waits for the cleanup to end
            remove_empty_folders(made)
        raise


def normal_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 less the umask (mkstemp gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _normal_permissions(fd: int) -> None:
    os.fchmod(fd, normal_file_mode())   # mkstemp creates 0600; the result gets what open() would give


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM received inside the block take effect at its end (main thread only: the
    handlers run there; blocking the signal would not do, another thread of torch or ONNX Runtime
    would take it and the handler would still run between two statements)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda number, frame: received.append(number)) for number in held}
    try:
        yield
    finally:
        for number, handler in previous.items():   # None: a handler not set from Python, of which
            signal.signal(number, signal.SIG_DFL if handler is None else handler)   # the default is nearest
        if received:
            signal.raise_signal(received[0])   # now handled as it would have been


@contextlib.contextmanager
def atomic_targets(*paths: str | os.PathLike, suffixes: Iterable[str] | None = None,
                   what: str = "output") -> Iterator[list[Path]]:
    """Files that belong together (a model and its reference outputs): yield one exclusively created
    temporary file beside each; they replace their destinations only if the block succeeds, one after
    another with Ctrl-C and SIGTERM held back until all are in place (an interrupt never leaves a new
    model beside an old reference), and are removed in every case (errors, Ctrl-C, SIGTERM)."""
    paths = [check_destination(path, what) for path in paths]
    suffixes = list(suffixes) if suffixes is not None else [".tmp"] * len(paths)
    temporaries: list[str] = []
    try:
        for path, suffix in zip(paths, suffixes):
            fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=_folder(path))
            temporaries.append(temporary)
            try:
                _normal_permissions(fd)
            finally:
                os.close(fd)
        yield [Path(temporary) for temporary in temporaries]
        for path in paths:
            check_destination(path, what)   # it may have changed during the work
        with interrupts_held():
            raise_if_interrupted()   # one whose exception Python dropped (passes.interrupts)
            for temporary, path in zip(temporaries, paths):
                os.replace(temporary, path)
    finally:
        with interrupts_held():   # a second Ctrl-C while cleaning up left the temporaries (adv18)
            for temporary in temporaries:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike, suffix: str = ".tmp", what: str = "output") -> Iterator[Path]:
    """Yield the path of an exclusively created temporary file beside ``path``; it replaces ``path``
    only if the block succeeds, and is removed in every case (errors, Ctrl-C, SIGTERM)."""
    with atomic_targets(path, suffixes=[suffix], what=what) as (temporary,):
        yield temporary


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", what: str = "output", **open_args) -> Iterator[IO]:
    """``open(path, mode)`` through an exclusive temporary file (see ``atomic_target``)."""
    with atomic_target(path, ".tmp", what) as temporary, open(temporary, mode, **open_args) as handle:
        yield handle


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "output") -> Path:
    # backslashreplace: a path that is not UTF-8 (a surrogate such as \udcff in the text) is written
    # as its escape; strict UTF-8 failed on it after the work (a report naming such a path)
    with atomic_open(path, "w", what, encoding="utf-8", errors="backslashreplace") as handle:
        handle.write(text)
    return Path(path)


def input_file_problem(path: str | os.PathLike, what: str = "input", missing: str | None = None) -> str | None:
    """Why ``path`` cannot be an input file, in one line, or None where it is a regular file (or a
    link to one). Only looks (stat), never opens: a named pipe's open waits for a writer, its read
    for ever. 'model not found: X' (``missing`` instead of ``what`` there: 'reference file not found'),
    'model X is not a regular file (a named pipe)'. The one check the tools make on a file they are
    given to read, before any work."""
    shown = printable(path)
    if "\x00" in os.fspath(path):   # os.stat would raise ValueError, not an OSError
        return f"{what} {shown} holds a NUL byte, which no path can"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.lexists(path):
            return f"{what} {shown} is a broken symbolic link"
        return f"{missing or what} not found: {shown}"
    except OSError as error:   # a folder on the way that is a file, or that cannot be searched, a link loop
        return f"{what} {shown} cannot be read ({printable(error.strerror or error)})"
    if not stat.S_ISREG(mode):
        return f"{what} {shown} is not a regular file ({file_kind(mode)})"
    return None


# A folder opened to open files in it, never to list it: O_PATH (Linux) needs no read permission on it, as a path through
# it needs none (a model in a home folder of mode 0711 was 'Permission denied' to another user, adv23); O_RDONLY elsewhere
_FOLDER_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY


class FileChangedError(OSError):
    """A file checked by its path is no longer that file when opened (a link or another file put in its place)."""


def checked_file(folder: str | os.PathLike, path: str | os.PathLike) -> tuple[str, str, os.stat_result | None]:
    """The check half of reading a file inside a folder: the folder's real path, ``path``'s real path (links
    resolved) and what it is now (``os.stat``; None where it cannot be looked at: the open says why). The caller
    checks that the real path lies inside the folder; ``open_checked`` then opens that same file."""
    base = os.path.realpath(folder)
    resolved = os.path.realpath(path)
    try:
        status = os.stat(resolved)
    except (OSError, ValueError):
        status = None
    return base, resolved, status


def open_checked(base: str, resolved: str, checked: os.stat_result | None,
                 folder: tuple[int, int] | None = None) -> int:
    """A read-only descriptor of ``resolved``, a real path inside the real folder ``base`` that was checked there
    (``checked_file``), opened from ``base`` one component at a time without following a link (O_NOFOLLOW;
    O_NONBLOCK: a named pipe's open does not wait for a writer). A link put on its way after the check, or another
    file in its place (device and inode not the ones checked), is FileChangedError, never followed: a check by path
    and a later read by the same path are two looks, and someone who can write the folder could swap the file
    between them for a link out of it (adv21's leftover, adv22). ``folder``: the (device, inode) of the folder the
    model was read from (``folder_identity``); ``base`` opened must be that folder, so that the folder itself renamed
    and a link (or another folder) put in its place after the model's read is refused too (adv22's leftover, adv23):
    ``base`` is a path, resolved again by the open. Other failures are os.open's OSErrors."""
    parts = os.path.relpath(resolved, base).split(os.sep)
    if parts[0] == "..":
        raise FileChangedError(errno.EXDEV, "not inside the folder it was checked in", resolved)
    # (the folder itself is ["."]: opened as it is, and refused by the caller as no regular file)
    directory = os.open(base, _FOLDER_FLAGS)
    try:
        if folder is not None and folder_identity(directory) != tuple(folder):
            raise FileChangedError(errno.ESTALE, FOLDER_CHANGED, resolved)
        for part in parts[:-1]:
            try:
                inner = os.open(part, _FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=directory)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise FileChangedError(error.errno, "a folder on its way became a symbolic link", resolved) from None
                raise
            os.close(directory)
            directory = inner
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=directory)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise FileChangedError(error.errno, "it became a symbolic link", resolved) from None
            raise
    finally:
        os.close(directory)
    status = os.fstat(fd)
    if checked is not None and (status.st_dev, status.st_ino) != (checked.st_dev, checked.st_ino):
        os.close(fd)
        raise FileChangedError(errno.ESTALE, "another file was put in its place", resolved)
    return fd


# FileChangedError's strerror where the model's folder, not a file in it, is what changed
FOLDER_CHANGED = "the model's folder was replaced since the model was read"


def folder_identity(fd: int) -> tuple[int, int]:
    """(device, inode) of an open folder (or file), what ``open_checked(folder=)`` compares."""
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


def open_model_file(path: str | os.PathLike) -> tuple[IO[bytes], tuple[int, int]]:
    """``path`` opened for reading as ``open_regular_file`` does, through its folder opened first, and that folder's
    identity (``folder_identity``): the folder the model was read from, which its external data and the reference
    beside it are read from too (``open_checked(folder=)``), whatever its path names later."""
    path = os.fspath(path)
    folder = os.open(os.path.dirname(path) or ".", _FOLDER_FLAGS)
    try:
        handle = open_regular_file(os.path.basename(path), dir_fd=folder, shown=path)
        return handle, folder_identity(folder)
    finally:
        os.close(folder)


# Text a tool reads back (a saved result, a report): far more than any it writes.
MAX_TEXT_BYTES = 64 << 20


def read_text_file(path: str | os.PathLike, limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path``, a regular file of at most ``limit`` bytes (``read_regular_file``);
    UnicodeDecodeError for bytes that are not UTF-8."""
    return read_regular_file(path, limit).decode("utf-8")


def open_regular_file(path: str | os.PathLike, dir_fd: int | None = None, shown: str | os.PathLike | None = None
                      ) -> IO[bytes]:
    """``path`` opened for reading once, and refused (OSError, EINVAL) unless what was opened is a regular file: a
    check by path before (``input_file_problem``) looked at a file someone may have replaced since by a named pipe,
    whose read would wait for ever (O_NONBLOCK: its open does not)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK, dir_fd=dir_fd)
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"not a regular file ({file_kind(status.st_mode)})", os.fspath(shown or path))
    return os.fdopen(fd, "rb")


def read_regular_file(path: str | os.PathLike, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes: a named pipe would block
    the read for ever, /dev/zero never end it. OSError (its strerror says why) otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)   # O_NONBLOCK: a pipe's open does not wait for a writer
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({file_kind(status.st_mode)})", os.fspath(path))
        if status.st_size > limit:
            raise OSError(errno.EFBIG, f"{status.st_size} bytes, more than the {limit} read back", os.fspath(path))
        return handle.read(limit + 1)

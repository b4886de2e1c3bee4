"""Which files a run opened: the trust tests' witness that a swapped-in file was never read."""
from __future__ import annotations

import builtins
import os


def record_opened_files(monkeypatch, *, builtin_open: bool = False) -> list:
    """Spy on os.open (and builtins.open with `builtin_open`) from now on: returns the list that each file opened
    is appended to as (st_dev, st_ino), so a test can assert a planted file's identity is not in it. Install it
    after the test's own files are written, or they are recorded too."""
    opened = []
    real_os_open, real_open = os.open, builtins.open

    def record(fd):
        status = os.fstat(fd)
        opened.append((status.st_dev, status.st_ino))

    def os_open_spy(path, flags, *args, **kwargs):
        fd = real_os_open(path, flags, *args, **kwargs)
        record(fd)
        return fd

    def open_spy(file, *args, **kwargs):
        handle = real_open(file, *args, **kwargs)
        if hasattr(handle, "fileno"):
            record(handle.fileno())
        return handle

    monkeypatch.setattr(os, "open", os_open_spy)
    if builtin_open:
        monkeypatch.setattr(builtins, "open", open_spy)
    return opened

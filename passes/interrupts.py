"""SIGTERM (what CI, ``timeout`` and ``kill`` send) handled like Ctrl-C.

Python's default for SIGTERM is to die on the spot: no ``finally`` runs, so temporary files
and folders stay behind. Inside ``sigterm_as_interrupt()`` SIGTERM raises ``Terminated``, a
``KeyboardInterrupt``, so the cleanup written for Ctrl-C runs for both; the CLIs exit with
``exit_code(interrupt)``: 130 for Ctrl-C, 143 for SIGTERM (128 + the signal number).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """Raised by SIGTERM inside ``sigterm_as_interrupt``."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` for the duration (main thread only: signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    return 128 + signal.SIGTERM if isinstance(interrupt, Terminated) else 130

"""SIGTERM (what CI, ``timeout`` and ``kill`` send) handled like Ctrl-C.

Python's default for SIGTERM is to die on the spot: no ``finally`` runs, so temporary files
and folders stay behind. Inside ``sigterm_as_interrupt()`` SIGTERM raises ``Terminated``, a
``KeyboardInterrupt``, so the cleanup written for Ctrl-C runs for both; the CLIs exit with
``exit_code(interrupt)``: 130 for Ctrl-C, 143 for SIGTERM (128 + the signal number).

A handler runs between any two bytecodes of the main thread, also inside a ``__del__`` or a
weakref callback (importlib's module-lock callback runs during every import), where Python
prints the exception it raises ("Exception ignored in ...") and drops it: the run went on and
wrote its output. So the handlers also record the signal, and the places that put results in
place (``passes.files.atomic_targets``, ``passes.graph_io.save_model_atomic``) ask
``raise_if_interrupted()`` first: an interrupt that was lost is raised again there (and its
"Exception ignored" traceback is not printed: the CLIs end with their one line).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator

from passes.one_line import usable_text_streams


class Terminated(KeyboardInterrupt):
    """Raised by SIGTERM inside ``sigterm_as_interrupt``."""


_received: list[int] = []   # the signals whose handler ran inside the outermost sigterm_as_interrupt()
_depth = 0


def _raise_terminated(signum, frame) -> None:
    _received.append(signum)
    raise Terminated()


def _raise_keyboard_interrupt(signum, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt()


def _unraisable_hook(previous):
    def hook(unraisable) -> None:
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and _received):   # else raised again later
            previous(unraisable)
    return hook


def raise_if_interrupted() -> None:
    """Raise the interrupt the block of ``sigterm_as_interrupt`` received, if any (one whose
    exception a ``__del__`` or a weakref callback dropped); nothing outside such a block."""
    if signal.SIGTERM in _received:
        raise Terminated()
    if _received:
        raise KeyboardInterrupt()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` for the duration (main thread only: signals go there), and
    record SIGTERM and Ctrl-C for ``raise_if_interrupted`` (Ctrl-C still raises KeyboardInterrupt;
    an ignored SIGINT stays ignored)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    _depth += 1
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable_hook(previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        _depth -= 1
        if _depth == 0:
            _received.clear()
        if previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    return 128 + signal.SIGTERM if isinstance(interrupt, Terminated) else 130


def run_command_line(main: Callable[..., int | None], *args) -> int | None:
    """``main(*args)`` of a command line (``sys.exit(run_command_line(main))``) with SIGTERM handled
    like Ctrl-C, and either ending it in one line, exit 143 / 130: without it SIGTERM killed the
    process where it stood, leaving the exclusive temporary files of a write half-done (``make demo``
    left '.naive.onnx.*.onnx.tmp'), and Ctrl-C printed a KeyboardInterrupt traceback. The temporary
    files are removed as the interrupt unwinds (``passes.files``); files finished before it stay. A character
    the terminal's encoding lacks is written escaped, a closed stream to /dev/null (``one_line.usable_text_streams``)."""
    usable_text_streams()
    try:
        with sigterm_as_interrupt():
            return main(*args)
    except KeyboardInterrupt as interrupt:
        sys.stderr.write("error: interrupted (no file left half-written)\n")
        return exit_code(interrupt)

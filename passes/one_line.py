"""Errors shown to a user are one line: ``one_line(error)`` and ``OneLineArgumentParser`` are the
only spellings of that rule (the export CLIs and tools use them too).

Text from outside (node, tensor and output names, op types, paths, checkpoint keys) goes through
``printable`` before it is echoed: a newline in a name would split a one-line ``error:`` message
into two (a reader, or a script that greps for ``error:``, sees a fake second error), an ESC would
drive the terminal, a bidi override would show the line in another order than it is.
``one_line`` applies it to the whole message.

Numbers a user gives (argparse types, ``compile_model``'s tolerance and timeout, pass options) are
checked here too, by one rule each: ``finite_real``, ``check_number``, ``number_text``, ``positive_int``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import numbers
import os
import re
import stat
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 and C1 controls, DEL, line/paragraph separators, and the bidi marks and overrides (Unicode's Bidi_Control
# set: U+061C, the Arabic letter mark, was let through until adv13).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    character = match.group()
    if character in _NAMED:
        return _NAMED[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# A name longer than this is shown as its head and tail with the count cut between them: an error naming a
# 200,000-character tensor was a 200 KB line. Head and tail keep it findable (grep the model for them).
NAME_LIMIT = 300
_HEAD, _TAIL = 200, 60
# A whole message (one_line, the progress lines, the notes) longer than this is cut the same way.
MESSAGE_LIMIT = 4000


def printable(text: object, limit: int | None = NAME_LIMIT) -> str:
    """``text`` (``str()`` of it) with every control character written as an escape: ``\\n``, ``\\x1b``;
    past ``limit`` characters, its first and last ones with how many were cut between them
    (``abc...(199,740 of 200,000 characters cut)...xyz``). ``limit=None`` never cuts (for text a caller
    cuts itself)."""
    text = str(text)
    if limit is None or len(text) <= limit:
        return _UNPRINTABLE.sub(_escape, text)
    head = max(1, limit * _HEAD // NAME_LIMIT)
    tail = max(1, limit * _TAIL // NAME_LIMIT)
    cut = len(text) - head - tail
    return (f"{_UNPRINTABLE.sub(_escape, text[:head])}...({cut:,} of {len(text):,} characters cut)..."
            f"{_UNPRINTABLE.sub(_escape, text[-tail:])}")


def printable_message(text: object) -> str:
    """A whole line for the user (names in it already ``printable``): escaped, cut past ``MESSAGE_LIMIT``."""
    return printable(text, MESSAGE_LIMIT)


def printable_names(names, shown: int = 8) -> str:
    """Names from a model, escaped and comma-separated, the first ``shown`` of them: a model may
    declare thousands, and the error line names a few."""
    names = list(names)
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(printable(name) for name in names[:shown]) + more


def one_line(error: BaseException | str, limit: int | None = None) -> str:
    """The message with its whitespace (newlines included) collapsed and the other control characters
    escaped (``printable``), cut to ``limit`` characters. Names inside a message are best escaped
    where they are put in (``printable(name)``), so that a newline in one shows as ``\\n``.

    An exception without a message is named by its type, so the line is never empty.
    """
    text = printable_message(" ".join(str(error).split()))
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text[:limit] if limit is not None else text


@contextlib.contextmanager
def terminal_closed():
    """File descriptors 1 and 2 lead nowhere meanwhile (native code that prints past sys.stderr: onnxsim,
    ONNX Runtime sessions that onnx-graphsurgeon's folding opens). onnxsim writes what fails to fold there, past
    sys.stderr, with the node's name as the model has it (ONNX Runtime's error log in ANSI colours, its
    own 'WARNING: failed to run ... (name is "...")' and a traceback): a name could clear the screen
    or forge an 'error:' line. What it had to say is in its result (or its exception).

    The descriptors are the process's: threads share one closing, the first to enter closes them and the last
    to leave opens them again (adv19: two compile_model threads each saved what the other had closed, and the
    process's stdout stayed /dev/null for good)."""
    global _closed_depth, _saved_descriptors
    with _terminal_lock:
        if _closed_depth == 0:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:   # None where closed: 'no attribute flush' failed fold-constants (adv19)
                    stream.flush()
            _saved_descriptors = [_duplicate(1), _duplicate(2)]
            with open(os.devnull, "wb") as nowhere:
                os.dup2(nowhere.fileno(), 1)
                os.dup2(nowhere.fileno(), 2)
        _closed_depth += 1
    try:
        yield
    finally:
        with _terminal_lock:
            _closed_depth -= 1
            if _closed_depth == 0:
                for descriptor, saved in zip((1, 2), _saved_descriptors):
                    if saved is not None:   # one closed before stays on /dev/null
                        os.dup2(saved, descriptor)
                        os.close(saved)


def _duplicate(descriptor: int) -> int | None:
    try:
        return os.dup(descriptor)
    except OSError:   # closed (EBADF)
        return None


_terminal_lock = threading.Lock()
_closed_depth = 0
_saved_descriptors: list[int | None] = []


def usable_text_streams() -> None:
    """sys.stdout and sys.stderr write a character their encoding lacks as an escape (``\\u2192``) instead of
    raising: under PYTHONIOENCODING=ascii (or a terminal in Latin-1) the summary's arrow ended passes.apply in
    'internal error: UnicodeEncodeError', exit 1, after its output was written, and tools.nodecount and
    tools.diffview in a traceback. A closed one (``>&-``: Python makes it None) writes to /dev/null: passes.apply
    ended in 'internal error: AttributeError', tools.diffview in a traceback (adv19). A pipe whose reader goes away
    (``| head -1``) takes the rest to /dev/null and the command goes on (``_ReaderMayGo``): tools.nodecount and
    tools.diffview ended in exit 1, silent (rich) or with a BrokenPipeError traceback (--json, --csv, --text; adv20).
    Called first by every command line (interrupts.run_command_line, passes.apply.main)."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
        with contextlib.suppress(AttributeError, ValueError, OSError):   # not a TextIOWrapper
            getattr(sys, name).reconfigure(errors="backslashreplace")
        stream = getattr(sys, name)
        with contextlib.suppress(AttributeError, ValueError, OSError, io.UnsupportedOperation):
            fd = stream.fileno()
            mode = os.fstat(fd).st_mode
            raw = getattr(stream.buffer, "raw", stream.buffer)   # unbuffered (python -u): the FileIO itself
            if (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) and not isinstance(raw, _ReaderMayGo):
                stream.flush()
                setattr(sys, name, io.TextIOWrapper(io.BufferedWriter(_ReaderMayGo(fd)), encoding=stream.encoding,
                                                    errors="backslashreplace", line_buffering=stream.line_buffering,
                                                    write_through=stream.write_through))


class _ReaderMayGo(io.RawIOBase):
    """Writes to a pipe or socket, and to /dev/null from the moment its reader has gone (EPIPE), as if it read on:
    what the command does besides printing (a file it writes, its exit code) is the same with or without
    ``| head -1``. The descriptor stays open (it is the process's stdout or stderr)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def write(self, data) -> int:
        try:
            return os.write(self._fd, data)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._fd)
            finally:
                os.close(devnull)
            return len(data)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, ``error: <message> (see --help)``, exit code 2
    (argparse itself prints the whole usage block before the message)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {one_line(message)} (see --help)\n")


def rich_text(text: object) -> str:
    """Text from outside (paths, names, messages quoting them, tpu-mlir's log lines) as rich prints it: control
    characters escaped (``printable_message``) and '[...]' not read as markup ('--workdir a[/]w' and an output
    named '[/]' ended tools.bench and tools.tpu_check in rich's MarkupError)."""
    from rich.markup import escape

    return escape(printable_message(text))


def is_integer(value: Any) -> bool:
    """An integral number that is no bool (``True`` is an int to Python, never a count or a dimension to us)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number that is no bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def finite_real(value: Any) -> bool:
    """A real number, no bool, finite as a float: an int beyond float's range (``10**400``, which Python and
    pipeline text both write) is not, where ``math.isfinite`` raises OverflowError."""
    if not is_real(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _in_range(value: Any, low: float, high: float, above_low: bool) -> bool:
    return finite_real(value) and (value > low if above_low else value >= low) and value <= high


def check_number(name: str, value: Any, expected: str, *, low: float = -math.inf, high: float = math.inf,
                 above_low: bool = False, error: type[Exception] = ValueError) -> Any:
    """``value`` if it is a finite real number from ``low`` (above it where ``above_low``) to ``high``, else
    ``error("<name> must be <expected>, got <value>")``: a NaN compares false with every bound and would pass
    a check written as ``value < low``; an infinity or 10**400 is no tolerance or timeout either."""
    if _in_range(value, low, high, above_low):
        return value
    raise error(f"{name} must be {expected}, got {printable(str(value))}")


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def number_text(text: str, expected: str, *, low: float = -math.inf, high: float = math.inf,
                above_low: bool = False) -> float:
    """argparse type body: ``text`` a decimal number written in ASCII (float() also takes 'nan', 'inf', '1_0',
    padding and other scripts' digits), finite and in range as ``check_number`` has it, else
    ArgumentTypeError("must be <expected>, got '<text>'"), before any work."""
    value = float(text) if text.isascii() and _DECIMAL.fullmatch(text) else math.nan
    if not _in_range(value, low, high, above_low):
        raise argparse.ArgumentTypeError(f"must be {expected}, got '{text}'")   # OneLineArgumentParser escapes it
    return value


ASCII_INTEGER = re.compile("-?[0-9]+")   # a str pattern: [0-9] is ASCII's ten digits


def ascii_int(text: str) -> int:
    """argparse type for an integer whose range the tool checks itself (with its own message): ASCII digits
    and a '-' only; int() took '1_6' as 16 and Arabic-Indic '\u0661\u0666' too ('--dims 1_6' exported a
    16-channel model, adv18)."""
    if not ASCII_INTEGER.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be an integer written in ASCII digits, got '{text}'")
    return int(text)


def ascii_float(text: str) -> float:
    """argparse type for a number whose range the tool checks itself: a decimal written in ASCII (as
    ``number_text`` reads it), or nan and inf, which float() spells so and the tool's own check then names;
    float() also took '1_0', padding and other scripts' digits."""
    if text.isascii() and (_DECIMAL.fullmatch(text) or text.lower().lstrip("+-") in ("nan", "inf", "infinity")):
        return float(text)
    raise argparse.ArgumentTypeError(f"must be a number written in ASCII, got '{text}'")


def positive_int(text: str) -> int:
    """argparse type for counts and sizes: ASCII digits only (int() would also take '1_0' and other
    scripts' digits, a number the text does not show) and >= 1, refused before any work."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got '{text}'")
    return int(text)


# More threads than any machine these tools measure has; ONNX Runtime's and torch's thread counts are
# C ints ('--threads 99999999999' was a TypeError or ValueError traceback), and a count near that
# would start that many threads.
MAX_THREADS = 4096


def thread_count(text: str) -> int:
    """argparse type for a thread count: ``positive_int`` up to ``MAX_THREADS``."""
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_THREADS}, got '{text}'")
    return value


# numpy's generators take any integer >= 0, torch.manual_seed one below 2^64 (a larger seed was a
# ValueError traceback after the model was built); both take this range.
MAX_SEED = 2**63 - 1


def seed_int(text: str) -> int:
    """argparse type for a random seed: ASCII digits (int() would take '1_0' and other scripts' digits),
    0 to 2^63-1, refused before any work."""
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2^63-1, got '{text}'")
    return int(text)


def folder_path(text: str) -> Path:
    """argparse type for a folder the tool writes into: never empty text, which Path() makes '.', the
    working folder ('--out "$DIR"' with DIR unset filled it with the tool's files)."""
    if not text:
        raise argparse.ArgumentTypeError("is an empty path; give a folder ('.' for the current one)")
    return Path(text)

"""Errors shown to a user are one line: ``one_line(error)`` and ``OneLineArgumentParser`` are the
only spellings of that rule (the export CLIs and tools use them too)."""
from __future__ import annotations

import argparse
from typing import NoReturn


def one_line(error: BaseException | str, limit: int | None = None) -> str:
    """The message with its whitespace (newlines included) collapsed, cut to ``limit`` characters.

    An exception without a message is named by its type, so the line is never empty.
    """
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text[:limit] if limit is not None else text


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, ``error: <message> (see --help)``, exit code 2
    (argparse itself prints the whole usage block before the message)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {one_line(message)} (see --help)\n")

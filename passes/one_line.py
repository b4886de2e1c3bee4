"""Errors shown to a user are one line: ``one_line(error)`` is the only spelling of that rule."""
from __future__ import annotations


def one_line(error: BaseException | str, limit: int | None = None) -> str:
    """The message with its whitespace (newlines included) collapsed, cut to ``limit`` characters.

    An exception without a message is named by its type, so the line is never empty.
    """
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text[:limit] if limit is not None else text

"""A pipeline is data: a name, a one-line description and an ordered list of steps.

The textual form follows MLIR's ``--pass-pipeline``::

    reroll-scans{form=chunk24,chunk=24},eliminate-dead-nodes,fold-constants,simplify

Option values are parsed as bool (``true``/``false``), int, float, else string, and the
text of each value is kept so that ``str(parse_pipeline(text)) == text`` exactly (for text
without spaces).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_FORBIDDEN_IN_VALUES = set(",{}= ")


class PipelineSyntaxError(ValueError):
    """The pipeline text cannot be parsed; the message says where."""


_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_value(text: str) -> Any:
    if text in ("true", "True"):
        return True
    if text in ("false", "False"):
        return False
    if _INTEGER.fullmatch(text):
        try:
            return int(text)
        except ValueError:   # more digits than Python converts (4300): float() makes it inf
            pass
    # Numbers in ASCII, without '_' separators: int() and float() take '1_000' and other scripts'
    # digits, which would read as another number than the text shows.
    if text.isascii() and "_" not in text:
        try:
            return float(text)
        except ValueError:
            pass
    return text


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, float) else str(value)
    if not text or _FORBIDDEN_IN_VALUES & set(text):
        raise PipelineSyntaxError(f"option value {value!r} cannot be written in pipeline text")
    return text


@dataclass
class Step:
    pass_name: str
    options: dict[str, Any] = field(default_factory=dict)
    # The text each option value was written as, so printing gives back the same text.
    option_text: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def written_text(self, key: str) -> str | None:
        """The text option ``key`` was written as, if its value is still what that text parses to."""
        written = self.option_text.get(key)
        if written is None:
            return None
        parsed, value = parse_value(written), self.options[key]
        if type(parsed) is not type(value) or not (parsed == value or parsed != parsed and value != value):
            return None
        return written

    def written_options(self) -> dict[str, Any]:
        """The options for the pass, each checked against the pass's declaration as written in the
        pipeline text: a refused value is quoted as written (PassOptionError), and a string option gets
        the text itself (``tag=1e3`` is '1e3', not '1000.0'). Options the pass does not declare, or
        a pass that declares none, are left to ``get_pass`` to refuse."""
        from passes.base import check_option
        from passes.registry import get_pass_class, pass_options

        declared = pass_options(get_pass_class(self.pass_name))
        if any(declared.get(key) is None for key in self.options):
            return dict(self.options)
        options = {}
        for key, value in self.options.items():
            written = self.written_text(key)
            options[key] = value if written is None else check_option(
                self.pass_name, key, declared[key], value, written=written)
        return options

    def __str__(self) -> str:
        if not self.options:
            return self.pass_name
        parts = []
        for key, value in self.options.items():
            written = self.written_text(key)
            if written is None:
                written = format_value(value)
            parts.append(f"{key}={written}")
        return f"{self.pass_name}{{{','.join(parts)}}}"


@dataclass
class Pipeline:
    name: str
    description: str
    steps: list[Step]

    def __str__(self) -> str:
        return ",".join(str(step) for step in self.steps)

    def with_overrides(self, **overrides: Any) -> "Pipeline":
        """Set each given option in every step that already has an option of that name.

        ``seed.with_overrides(chunk=16)`` is what the CLI's ``--chunk 16`` does. An option
        no step has is an error, so that a typo does not pass silently.
        """
        unused = set(overrides)
        steps = []
        for step in self.steps:
            options = dict(step.options)
            option_text = dict(step.option_text)
            for key, value in overrides.items():
                if key in options:
                    options[key] = value
                    option_text.pop(key, None)
                    unused.discard(key)
            steps.append(Step(step.pass_name, options, option_text))
        if unused:
            raise PipelineSyntaxError(
                f"option(s) {', '.join(sorted(unused))} not used by any step of pipeline '{self.name}' ({self})"
            )
        return Pipeline(self.name, self.description, steps)

    def build(self) -> list:
        """Instantiate the passes (UnknownPassError for a bad name, PassOptionError for a bad option).

        A value given in pipeline text is checked as the user wrote it: a refusal quotes that text
        (``chunk=1e3`` is refused as '1e3', not as '1000.0'), and a string option takes it as written.
        """
        from passes.registry import get_pass

        return [get_pass(step.pass_name, **step.written_options()) for step in self.steps]


def parse_pipeline(text: str, name: str = "custom", description: str = "given on the command line") -> Pipeline:
    """Parse ``a{k=v,...},b,...`` into a Pipeline."""
    steps: list[Step] = []
    position = 0
    text_length = len(text)

    def fail(message: str) -> PipelineSyntaxError:
        return PipelineSyntaxError(f"bad pipeline text at column {position + 1}: {message} in {text!r}")

    if not text.strip():
        raise PipelineSyntaxError("empty pipeline text")
    while True:
        match = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*").match(text, position)
        if not match:
            raise fail("expected a pass name")
        pass_name = match.group(1)
        position = match.end()
        options: dict[str, Any] = {}
        option_text: dict[str, str] = {}
        if position < text_length and text[position] == "{":
            close = text.find("}", position)
            if close < 0:
                raise fail("missing '}'")
            body = text[position + 1:close]
            for item in body.split(",") if body.strip() else []:
                key, equals, value = item.partition("=")
                key, value = key.strip(), value.strip()
                if not equals or not _NAME.match(key) or not value:
                    raise fail(f"expected key=value, got {item.strip()!r}")
                if key in options:
                    raise fail(f"option '{key}' given twice for '{pass_name}'")
                options[key] = parse_value(value)
                option_text[key] = value
            position = close + 1
            while position < text_length and text[position].isspace():
                position += 1
        steps.append(Step(pass_name, options, option_text))
        if position >= text_length:
            break
        if text[position] != ",":
            raise fail(f"expected ',' or end, got {text[position]!r}")
        position += 1
    return Pipeline(name, description, steps)

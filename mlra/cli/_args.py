"""argparse types shared by the ``mlra`` subcommands: a bad argument is argparse's one-line usage
error naming the value (exit 2), before any command imports a heavy library or starts a service.

Each type takes the argument's text and returns the parsed value, or raises
``argparse.ArgumentTypeError`` with a message that names the value and says what is expected.
Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "choice",
    "cron",
    "existing_dir",
    "existing_file",
    "existing_path",
    "int_at_least",
    "non_negative_int",
    "positive_int",
    "seconds",
    "step_limit",
    "text",
    "version",
]

_INT: Final = re.compile(r"[+-]?\d+")
_CRON_FIELD: Final = re.compile(r"[0-9A-Za-z*?/,#-]+")
_CRON_FIELDS: Final = 5  # as mlra.config.CRON_FIELDS (not imported: it pulls in yaml)


def _int(value: str, what: str, expected: str) -> int:
    raw = value.strip()
    if not _INT.fullmatch(raw) or len(raw) > 18:
        raise argparse.ArgumentTypeError(f"invalid {what} {value!r}: expected {expected}")
    return int(raw)


def version(value: str) -> str:
    """A model version: a positive integer, returned as its canonical string ("007" is "7")."""
    number = _int(value, "version", "a positive integer (1, 2, 3, ...)")
    if number < 1:
        raise argparse.ArgumentTypeError(
            f"invalid version {value!r}: expected a positive integer (1, 2, 3, ...)"
        )
    return str(number)


def positive_int(value: str) -> int:
    """An integer >= 1."""
    number = _int(value, "value", "a positive integer (>= 1)")
    if number < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: expected an integer >= 1")
    return number


def non_negative_int(value: str) -> int:
    """An integer >= 0."""
    number = _int(value, "value", "an integer >= 0")
    if number < 0:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: expected an integer >= 0")
    return number


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= ``low``."""

    def parse(value: str) -> int:
        number = _int(value, "value", f"an integer >= {low}")
        if number < low:
            raise argparse.ArgumentTypeError(
                f"invalid value {value!r}: expected an integer >= {low}"
            )
        return number

    parse.__name__ = f"int_at_least_{low}"
    return parse


def step_limit(value: str) -> int:
    """A step count >= 1, or -1 (no limit: the epoch count decides)."""
    number = _int(value, "step count", "an integer >= 1, or -1 (no limit)")
    if number < 1 and number != -1:
        raise argparse.ArgumentTypeError(
            f"invalid step count {value!r}: expected an integer >= 1, or -1 (no limit)"
        )
    return number


def seconds(value: str) -> int:
    """A duration in whole seconds, >= 0."""
    number = _int(value, "number of seconds", "whole seconds >= 0")
    if number < 0:
        raise argparse.ArgumentTypeError(
            f"invalid number of seconds {value!r}: expected whole seconds >= 0"
        )
    return number


def text(value: str) -> str:
    """A name or reason as it will be recorded: non-empty once stripped, at most 2,000 characters
    (what the registry stores whole), no control characters but tab and newline."""
    stripped = value.strip()
    if not stripped:
        raise argparse.ArgumentTypeError(f"empty value {value!r}: expected some text")
    if len(stripped) > 2000:
        raise argparse.ArgumentTypeError(
            f"value of {len(stripped):,} characters: expected at most 2,000"
        )
    if any(ord(c) < 32 and c not in "\t\n" for c in stripped):
        raise argparse.ArgumentTypeError(f"value {value!r} holds control characters")
    return stripped


def existing_file(value: str) -> Path:
    """A path to a file that exists."""
    path = Path(value)
    if not value.strip():
        raise argparse.ArgumentTypeError("empty path: expected a file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a folder: expected a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {value!r}")
    return path


def existing_dir(value: str) -> Path:
    """A path to a folder that exists."""
    path = Path(value)
    if not value.strip():
        raise argparse.ArgumentTypeError("empty path: expected a folder")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a file: expected a folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {value!r}")
    return path


def existing_path(value: str) -> Path:
    """A path to a file or folder that exists (a link that points nowhere counts: the command
    reports it)."""
    path = Path(value)
    if not value.strip():
        raise argparse.ArgumentTypeError("empty path: expected a file or folder")
    if not (path.exists() or path.is_symlink()):
        raise argparse.ArgumentTypeError(f"no such file or folder: {value!r}")
    return path


def cron(value: str) -> str:
    """A 5-field cron expression (minute hour day month weekday), e.g. ``0 3 * * 1``."""
    fields = value.split()
    if len(fields) != _CRON_FIELDS or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise argparse.ArgumentTypeError(
            f"invalid cron expression {value!r}: expected 5 fields "
            "(minute hour day month weekday), e.g. '0 3 * * 1'"
        )
    return " ".join(fields)


def choice(what: str, choices: Sequence[str]) -> Callable[[str], str]:
    """One of ``choices`` (case-insensitive), named ``what`` in the error."""
    allowed = {c.lower(): c for c in choices}

    def parse(value: str) -> str:
        found = allowed.get(value.strip().lower())
        if found is None:
            raise argparse.ArgumentTypeError(
                f"invalid {what} {value!r}: expected one of {', '.join(choices)}"
            )
        return found

    parse.__name__ = what
    return parse

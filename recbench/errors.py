"""The one user-error type (docs/architecture.md, Errors): the CLI catches it, prints one line, exits non-zero.

Anything that is not a :class:`RecbenchError` is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RecbenchError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""


class UnknownNameError(RecbenchError):
    """An unknown dataset, method or suite name; the message suggests the closest names."""

    def __init__(self, kind: str, name: str, known: Iterable[str], extra: str = "") -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        listing = f" Known {kind}s: {', '.join(known)}." if known else f" No {kind}s are known."
        super().__init__(f"unknown {kind} '{name}'.{hint}{listing}{extra}")
        self.suggestions = close


class DataError(RecbenchError):
    """Malformed, missing, corrupt or empty data (names the file and, where it can, the line)."""


class ConfigError(RecbenchError):
    """A configuration key that does not exist or a value of the wrong type."""


class RunError(RecbenchError):
    """A run directory that is missing, unfinished or inconsistent with the request."""

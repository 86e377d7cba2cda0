"""One rule for every name that becomes part of a path: datasets, methods, labels, suites.

A name is letters, digits and ``. _ + - @``, starting with a letter or digit, at most 100
characters. So ``../x``, ``a/b``, ``/abs`` and ``.hidden`` are refused (``@`` is there for user
subsamples such as ``scientific@0.1``) before any path is built from them, and a name read from
a file (a manifest, a run record) is never trusted to build a path: paths come from the names the
user gave, checked here.
"""

from __future__ import annotations

import re

from recbench.errors import RecbenchError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]{0,99}")


class InvalidNameError(RecbenchError):
    """A name that cannot safely become a directory name."""


def check_name(kind: str, name: str) -> str:
    """Return ``name`` unchanged if it is safe as one path component; raise :class:`InvalidNameError` otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"{name!r} cannot name a {kind}: use at most 100 letters, digits and . _ + - @, "
            "starting with a letter or digit (it becomes a directory name)"
        )
    return name

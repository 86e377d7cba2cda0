"""Item text the way UniSRec builds it: each metadata field cleaned, fields joined in a fixed order.

UniSRec (``dataset/preprocessing/process_amazon.py``, ``clean_text`` and ``generate_text``):

- a list is joined with spaces, a dict becomes ``str(dict)``;
- HTML entities are unescaped, every ``"``, ``\\n`` and ``\\r`` is removed;
- trailing dots are replaced by exactly one dot. UniSRec's loop never looks at the first
  character, so a field made only of dots (``"."``, ``"..."``) becomes ``".."``;
- a cleaned field of 2000 characters or more becomes the empty string;
- each present field is followed by one space, so a text ends with a space.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping

MAX_TEXT_CHARS = 2000
AMAZON_TEXT_FIELDS = ("title", "category", "brand")  # UniSRec's order for Amazon 2018 metadata
_QUOTES_AND_NEWLINES = re.compile(r'["\n\r]')


def clean_text(raw: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    """UniSRec's ``clean_text`` for one metadata field."""
    if isinstance(raw, list):
        text = " ".join(str(part) for part in raw)
    elif isinstance(raw, dict):
        text = str(raw)
    else:
        text = str(raw)
    text = _QUOTES_AND_NEWLINES.sub("", html.unescape(text))
    stripped = text.rstrip(".")
    if not stripped and text:  # only dots: UniSRec's loop stops before the first character
        stripped = text[0]
    text = stripped + "."
    return "" if len(text) >= max_chars else text


def unisrec_text(
    record: Mapping[str, object], fields: Iterable[str] = AMAZON_TEXT_FIELDS, max_chars: int = MAX_TEXT_CHARS
) -> str:
    """Every field present in ``record`` (even an empty one, which becomes ``"."``), cleaned, plus a space.

    A JSON ``null`` is skipped (UniSRec would crash on it).
    """
    return "".join(clean_text(record[name], max_chars) + " " for name in fields if record.get(name) is not None)


def nonempty_fields_text(record: Mapping[str, object], fields: Iterable[str], max_chars: int = MAX_TEXT_CHARS) -> str:
    """Like :func:`unisrec_text` but skipping empty fields: for already-processed item tables."""
    return "".join(
        clean_text(record[name], max_chars) + " " for name in fields if record.get(name) not in (None, "", [])
    )

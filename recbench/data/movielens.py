"""GroupLens MovieLens (``ml-1m.zip``) -> canonical dataset.

Files (Harper & Konstan 2015; the layout of ML-1M and ML-10M):

- ``ratings.dat``: one rating per line, ``UserID::MovieID::Rating::Timestamp`` (Unix seconds);
- ``movies.dat``: ``MovieID::Title::Genres`` with genres separated by ``|``. ML-1M's is encoded in
  ISO-8859-1 (latin-1), not UTF-8 (``Misérables, Les (1995)``).

The import reads them from the zip archive as GroupLens ships it (or from an extracted directory),
keeps every rating (no rating cut-off; exact duplicate lines, which ML-1M does not have, are dropped
and counted), sorts each user's ratings by timestamp with a stable sort so that same-second ratings
keep their file order, numbers users by first appearance in the file and items by first appearance
in the sorted sequences. Item text is the title and the genres, each cleaned as UniSRec cleans
fields (:func:`recbench.data.itemtext.nonempty_fields_text`): ``Toy Story (1995). Animation
Children's Comedy.``. Filters (e.g. AutoMLP's 10 ratings per user) are applied afterwards, by
:func:`recbench.data.download.finish`.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recbench.data.formats import Imported, decode_block, nul_error, sequences_from_rows
from recbench.data.itemtext import nonempty_fields_text
from recbench.errors import DataError

RATINGS_FILE = "ratings.dat"
MOVIES_FILE = "movies.dat"
MOVIES_ENCODING = "latin-1"
SEPARATOR = "::"
TEXT_FIELDS = ("title", "genres")
TIE_ORDER = "same-timestamp ratings keep their order in ratings.dat"


@dataclass
class _Source:
    """The bytes of ratings.dat and (if present) movies.dat, and how messages name them."""

    ratings: bytes
    ratings_label: str
    movies: bytes | None
    movies_label: str
    files: list[Path]


def _read_archive(path: Path) -> _Source:
    try:
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == RATINGS_FILE]
            if len(members) != 1:
                raise DataError(f"{path}: expected one {RATINGS_FILE} in the archive, found {len(members)}")
            folder = members[0][: -len(RATINGS_FILE)]
            movies_member = folder + MOVIES_FILE
            movies = archive.read(movies_member) if movies_member in archive.namelist() else None
            ratings = archive.read(members[0])
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise DataError(f"{path}: not a readable zip archive ({err}); delete it and download it again") from None
    return _Source(ratings, f"{path}/{members[0]}", movies, f"{path}/{movies_member}", [path])


def _find_directory(directory: Path) -> Path:
    if (directory / RATINGS_FILE).is_file():
        return directory
    found = sorted(p.parent for p in directory.glob(f"*/{RATINGS_FILE}"))
    if len(found) != 1:
        raise DataError(
            f"{directory}: expected {RATINGS_FILE} (MovieLens) in it or in one sub-directory, found {len(found)}"
        )
    return found[0]


def read_source(source: Path) -> _Source:
    """ratings.dat and movies.dat from a zip archive, a directory holding them, or ratings.dat itself."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} does not exist")
    if source.is_file() and source.suffix.lower() == ".zip":
        return _read_archive(source)
    directory = source.parent if source.is_file() else _find_directory(source)
    ratings_path, movies_path = directory / RATINGS_FILE, directory / MOVIES_FILE
    if not ratings_path.is_file():
        raise DataError(f"missing file {ratings_path} (MovieLens needs {RATINGS_FILE}, and {MOVIES_FILE} for text)")
    movies = movies_path.read_bytes() if movies_path.is_file() else None
    files = [ratings_path] + ([movies_path] if movies is not None else [])
    return _Source(ratings_path.read_bytes(), str(ratings_path), movies, str(movies_path), files)


def parse_ratings(data: bytes, label: str) -> pd.DataFrame:
    """Every rating line as (user, item, rating, time, line); a malformed line names file and line."""
    text = decode_block(data, Path(label), 1)  # NUL bytes and invalid UTF-8 name their line
    users, items, ratings, times, lines = [], [], [], [], []
    expected = "expected 'UserID::MovieID::Rating::Timestamp'"
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split(SEPARATOR)
        try:
            if len(parts) != 4 or not parts[0].strip() or not parts[1].strip():
                raise ValueError
            rating, time = float(parts[2]), int(parts[3])
        except ValueError:
            raise DataError(f"{label}:{number}: {expected}, got {line[:80]!r}") from None
        users.append(parts[0].strip())
        items.append(parts[1].strip())
        ratings.append(rating)
        times.append(time)
        lines.append(number)
    if not users:
        raise DataError(f"{label}: no ratings")
    return pd.DataFrame({"user": users, "item": items, "rating": ratings, "time": times, "line": lines})


def parse_movies(data: bytes, label: str) -> dict[str, str]:
    """MovieID -> item text (title and genres, cleaned); the first line of a repeated id counts."""
    if (nul := data.find(b"\0")) >= 0:
        raise nul_error(Path(label), data.count(b"\n", 0, nul) + 1, nul - (data.rfind(b"\n", 0, nul) + 1))
    texts: dict[str, str] = {}
    for number, line in enumerate(data.decode(MOVIES_ENCODING).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split(SEPARATOR)
        if len(parts) != 3 or not parts[0].strip():
            raise DataError(f"{label}:{number}: expected 'MovieID::Title::Genres', got {line[:80]!r}")
        movie, title, genres = (part.strip() for part in parts)
        record = {"title": title, "genres": [g for g in genres.split("|") if g] or None}
        texts.setdefault(movie, nonempty_fields_text(record, TEXT_FIELDS))
    return texts


def import_movielens(source: Path) -> Imported:
    """Read a MovieLens ``ratings.dat`` (+ ``movies.dat``) from ``source`` (zip or directory)."""
    found = read_source(source)
    frame = parse_ratings(found.ratings, found.ratings_label)
    notes = []
    duplicate = frame.duplicated(subset=["user", "item", "rating", "time"], keep="first").to_numpy()
    if duplicate.any():
        first = int(frame["line"].to_numpy()[np.flatnonzero(duplicate)[0]])
        notes.append(f"dropped {int(duplicate.sum()):,} exact duplicate ratings (first: line {first})")
        frame = frame[~duplicate]
    user_ids, sequences, item_ids = sequences_from_rows(
        frame["user"].to_numpy(dtype=object), frame["item"].to_numpy(dtype=object), frame["time"].to_numpy()
    )
    notes.append(
        f"{RATINGS_FILE}: {len(frame):,} ratings of {len(user_ids):,} users on {len(item_ids):,} movies, all kept "
        f"(no rating cut-off); sorted by timestamp, {TIE_ORDER}"
    )
    texts = None
    if found.movies is not None:
        by_movie = parse_movies(found.movies, found.movies_label)
        texts = [by_movie.get(item, "") for item in item_ids]
        missing = sum(1 for item in item_ids if item not in by_movie)
        notes.append(
            f"item text from {MOVIES_FILE} ({MOVIES_ENCODING}): title and genres"
            + (f"; {missing:,} rated movies have no line there (empty text)" if missing else "")
        )
    else:
        notes.append(f"no {MOVIES_FILE}: the dataset is ID-only (text-based methods cannot use it)")
    return Imported(
        user_ids,
        sequences,
        item_ids,
        texts,
        "movielens",
        found.files,
        notes,
        details={
            "preprocess": {
                "pipeline": "recbench MovieLens import",
                "text_fields": list(TEXT_FIELDS),
                "movies_encoding": MOVIES_ENCODING,
                "tie_order": TIE_ORDER,
            },
            "stats": {"ratings": len(frame), "duplicates_dropped": int(duplicate.sum())},
        },
    )

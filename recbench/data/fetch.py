"""HTTP downloads that survive bad networks: mirrors, resume, retries, checksums, atomic rename.

:func:`fetch` streams a URL into ``<dest>.part`` (with a rich progress bar), resumes a partial file
with an HTTP ``Range`` request (``If-Range`` guards against a file that changed upstream), retries
transient failures with exponential backoff, falls back to the next mirror on permanent ones
(connection refused, 404, ...) and on a corrupt result, verifies size / sha256 / gzip or zip integrity, and
only then renames the file into place. Nothing here prompts; everything is the standard library.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recbench import __version__
from recbench.errors import DataError

CHUNK_BYTES = 1 << 20
USER_AGENT = f"recbench/{__version__} (dataset downloader; Python urllib)"


class _Transient(Exception):
    """Worth retrying the same URL (timeouts, resets, 5xx, a cut transfer)."""


class _Permanent(Exception):
    """This URL will not work: go to the next mirror (refused, unknown host, 404, ...)."""


@dataclass
class Fetched:
    """A verified file and how it was obtained."""

    path: Path
    url: str
    sha256: str
    size: int
    resumed: bool = False
    problems: list[str] = field(default_factory=list)  # failed attempts before success


def sha256_file(path: Path, chunk: int = CHUNK_BYTES) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def gzip_problem(path: Path) -> str | None:
    """None if the gzip file decodes to its end (CRC and length checked), else what is wrong."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(CHUNK_BYTES * 8):
                pass
    except (EOFError, OSError, zlib.error) as err:
        return f"corrupt or truncated gzip ({err or type(err).__name__})"
    return None


def zip_problem(path: Path) -> str | None:
    """None if the zip archive reads to its end with every member's CRC right, else what is wrong."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        return f"corrupt or truncated zip ({err or type(err).__name__})"
    return f"corrupt zip (member {bad} fails its CRC)" if bad is not None else None


def verify_file(
    path: Path,
    sha256: str | None = None,
    size: int | None = None,
    check_gzip: bool | None = None,
    check_zip: bool | None = None,
) -> tuple[str | None, str]:
    """``(problem or None, actual sha256)``: size, then sha256, then (if no sha256 is known) gzip or
    zip integrity; ``check_gzip`` / ``check_zip`` default to whether the name ends with ``.gz`` / ``.zip``."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        kind = "truncated" if actual_size < size else "too long"
        return f"{kind}: {actual_size:,} bytes, expected {size:,}", ""
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256.lower():
        return f"sha256 is {digest}, expected {sha256.lower()}", digest
    if sha256 is None and (path.name.endswith(".gz") if check_gzip is None else check_gzip):
        return gzip_problem(path), digest
    if sha256 is None and (path.name.endswith(".zip") if check_zip is None else check_zip):
        return zip_problem(path), digest
    return None, digest


@contextmanager
def byte_progress(description: str, total: int | None, enabled: bool = True) -> Iterator[Any]:
    """Progress over bytes (a bar on a terminal, one line at the end elsewhere); yields ``advance(n)``."""
    from recbench.progress import ProgressDisplay

    started, received = time.perf_counter(), 0
    with ProgressDisplay("bytes", enabled=enabled, transient=True) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int) -> None:
            nonlocal received
            received += n
            progress.advance(task, n)

        yield advance
        progress.line(f"{description}: {received:,} bytes in {time.perf_counter() - started:.1f} s")


def fetch(
    urls: Sequence[str],
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 3,
    backoff: float = 2.0,
    timeout: float = 60.0,
    show_progress: bool = True,
) -> Fetched:
    """Download ``dest`` from the first of ``urls`` that yields a verified file.

    A partial ``<dest>.part`` left by an interrupted run is resumed. Transient failures are retried
    ``retries`` times per URL (waiting ``backoff * 2**k`` seconds); a permanent failure or a corrupt
    file moves on to the next URL. Raises :class:`DataError` naming the file and every failure.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    problems: list[str] = []
    for url in urls:
        fresh_retry = True  # one restart from byte 0 if a resumed file turns out corrupt
        attempt = 0
        while True:
            try:
                resumed = _transfer(url, part, timeout, show_progress)
            except _Permanent as err:
                problems.append(f"{url}: {err}")
                break
            except _Transient as err:
                problems.append(f"{url}: {err}")
                if attempt >= retries:
                    break
                time.sleep(backoff * 2**attempt)
                attempt += 1
                continue
            problem, digest = verify_file(
                part, sha256, size, check_gzip=dest.name.endswith(".gz"), check_zip=dest.name.endswith(".zip")
            )
            if problem is None:
                os.replace(part, dest)  # atomic: dest is either absent or complete
                _state_path(part).unlink(missing_ok=True)
                return Fetched(dest, url, digest, dest.stat().st_size, resumed, problems)
            problems.append(f"{url}: {dest.name} is corrupt: {problem}")
            _discard(part)
            if not (resumed and fresh_retry):
                break
            fresh_retry = False
    reasons = "; ".join(problems) or "no URL to download from"
    raise DataError(f"could not download {dest.name} to {dest.parent}: {reasons}")


def _state_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _state_path(part).unlink(missing_ok=True)


def _open(url: str, offset: int, state: dict[str, Any], timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if state.get("validator"):
            headers["If-Range"] = state["validator"]  # a changed file comes back whole (200)
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            raise _RangeNotSatisfiable(err.headers.get("Content-Range", "")) from None
        if err.code in (408, 429) or err.code >= 500:
            raise _Transient(f"HTTP {err.code} {err.reason}") from None
        raise _Permanent(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, (ConnectionRefusedError, socket.gaierror)) or isinstance(err.reason, str):
            raise _Permanent(f"cannot connect ({err.reason})") from None
        raise _Transient(f"connection failed ({err.reason})") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
        raise _Transient(f"connection failed ({err!r})") from None


class _RangeNotSatisfiable(Exception):
    pass


def _transfer(url: str, part: Path, timeout: float, show_progress: bool) -> bool:
    """Bring ``part`` to the full file at ``url``; returns whether earlier bytes were reused."""
    state_path = _state_path(part)
    offset = part.stat().st_size if part.exists() else 0
    state = json.loads(state_path.read_text()) if offset and state_path.is_file() else {}
    try:
        response = _open(url, offset, state, timeout)
    except _RangeNotSatisfiable as err:
        total = _total_from_content_range(str(err))
        if total == offset:  # the part was already complete
            return True
        _discard(part)
        raise _Transient(f"server refused to resume at byte {offset:,}; starting over") from None
    with response:
        total = _content_length(response)
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range", ""))
            if start != offset or (state.get("total") and total != state["total"]):
                _discard(part)  # another file (or another mirror's different copy): start over
                raise _Transient("the server's copy differs from the partial file; starting over")
        else:
            offset = 0  # the server sent the whole file (no range support, or it changed)
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        state_path.write_text(json.dumps({"url": url, "total": total, "validator": validator}))
        written = offset
        with (
            open(part, "ab" if offset else "wb") as out,
            byte_progress(part.name[: -len(".part")], total, show_progress) as advance,
        ):
            advance(offset)
            while True:
                try:
                    block = response.read(CHUNK_BYTES)
                except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
                    raise _Transient(f"transfer interrupted after {written:,} bytes ({type(err).__name__})") from None
                if not block:
                    break
                out.write(block)  # a local write error (disk full) is not retried: it propagates
                written += len(block)
                advance(len(block))
    if total is not None and written < total:
        raise _Transient(f"connection closed after {written:,} of {total:,} bytes")
    return offset > 0


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _parse_content_range(value: str) -> tuple[int, int | None]:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", value.strip())
    if not match:
        raise _Transient(f"unusable Content-Range {value!r}")
    return int(match[1]), None if match[2] == "*" else int(match[2])


def _total_from_content_range(value: str) -> int | None:
    match = re.search(r"/(\d+)\s*$", value)
    return int(match[1]) if match else None

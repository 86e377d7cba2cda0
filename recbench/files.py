"""Atomic file writes and exclusive locks: what keeps every record whole.

Every record recbench writes (datasets, embedding caches, run records) goes through here: the
bytes go to a temporary sibling, are flushed to disk, then renamed over the target, so a reader
sees the old file or the new one, never half of one. A writer that must be alone (a run, a
dataset import, an embedding-cache entry) holds :func:`exclusive_lock` while it writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recbench.errors import RecbenchError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted, strictly valid JSON (no NaN or Infinity), atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


class LockedError(RecbenchError):
    """Another live process holds the lock on a run, dataset or cache entry."""


@contextlib.contextmanager
def exclusive_lock(lock_file: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` for the block: one writer per run, dataset or cache entry.

    The lock is an ``flock`` on the file, so the kernel releases it when its holder dies (even
    by ``kill -9``): a stale lock file never blocks anyone. The holder writes its pid, host and
    start time into the file so that a refused process can name it. ``wait=False`` refuses at
    once with :class:`LockedError`; ``wait=True`` blocks until the holder is done (used where
    the second process can then reuse the first one's result, e.g. an embedding cache).
    Local file systems only: ``flock`` over NFS is not reliable.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise LockedError(f"{what} is in use by {holder}; wait for it to finish or stop that process") from None
            print(f"waiting for {what}, in use by {holder} ...", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            ).encode(),
            0,
        )
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (ValueError, KeyError, OSError):
        return "another process"

"""``recbench download NAME --release R``: an authors' released dataset with its text features.

A release (``[releases.R]`` in ``datasets.toml``, :class:`recbench.data.catalog.ReleaseSpec`) is one
archive holding several preprocessed datasets in UniSRec's atomic format plus a feature file per
dataset (UniSRec: ``downstream-datasets.zip`` with ``downstream/Scientific/Scientific.feat1CLS``, ...).

1. The archive is made present and verified in ``$RECBENCH_HOME/releases/R/`` (:func:`ensure_archive`):
   Google Drive first (:func:`drive_fetch`, through the optional ``gdown``, ``resume=True``), then
   the plain HTTP(S) ``urls`` through :func:`recbench.data.fetch.fetch` (mirrors, Range resume,
   retries). Its sha256 is the pinned one, else the one recorded at the first download in
   ``releases/R/manifest.json`` (the record format of raw files); a file failing it is fetched again.
2. The dataset's files are extracted to ``releases/R/extracted/<Folder>/`` (replaced whole) and
   imported as the ``unisrec`` format: counts checked against ``[datasets.NAME]``, saved atomically.
3. The feature file (raw float32 rows in ``X.item2index`` order, ``dims`` wide) is mapped by item
   token to recbench's item ids and stored as the embedding cache of the release's encoder setting
   (:func:`recbench.data.encode.save_embeddings`), so text methods with that encoder read it.

``--from PATH`` takes a copy already on disk: the archive itself, a directory holding it, the
``downstream/`` directory (or its parent) or the dataset's own folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from recbench.data.catalog import ReleaseSpec, get_dataset_spec, get_release_spec, recbench_home
from recbench.data.dataset import dataset_lock
from recbench.data.download import (
    IngestResult,
    _read_raw_manifest,
    _record,
    _write_raw_manifest,
    finish,
    resolve_target,
)
from recbench.data.encode import EncoderSpec, save_embeddings
from recbench.data.fetch import fetch, sha256_file, verify_file
from recbench.data.ingest import import_unisrec
from recbench.errors import DataError, RecbenchError
from recbench.files import exclusive_lock
from recbench.names import check_name

__all__ = [
    "INSTALL_HINT",
    "download_release",
    "drive_fetch",
    "ensure_archive",
    "extract_dataset",
    "feature_table",
    "read_features",
    "release_dir",
]

INSTALL_HINT = "pip install 'recbench[release]'"


def release_dir(release: str) -> Path:
    """Where release ``release``'s archive, checksum manifest and extracted datasets live."""
    return recbench_home() / "releases" / check_name("release", release).lower()


def release_encoder_spec(release: ReleaseSpec) -> EncoderSpec:
    """The embedding-cache key of the release's features (word drop 0, float32: as computed)."""
    features = release.features
    return EncoderSpec(features.encoder, features.pooling, features.max_tokens)


# --- fetching the archive -----------------------------------------------------------------------
def _import_gdown() -> Any:
    try:
        import gdown
    except ImportError:
        return None
    return gdown


def drive_fetch(folder_id: str, file_name: str, dest: Path, show_progress: bool = True) -> str:
    """Download ``file_name`` of the Google Drive folder ``folder_id`` to ``dest`` with gdown.

    The folder is listed (gdown, no download), the file is found by name and downloaded with
    ``resume=True`` (gdown keeps a partial ``<dest>XXXXXXXX.part`` beside ``dest`` and resumes it).
    Returns where it came from. Raises :class:`RecbenchError` when gdown is not installed and
    :class:`DataError` when Drive fails (gdown's errors, named).
    """
    gdown = _import_gdown()
    if gdown is None:
        raise RecbenchError(f"downloading from Google Drive needs gdown: {INSTALL_HINT}")
    failures = tuple(
        getattr(gdown.exceptions, name)
        for name in ("DownloadError", "FileURLRetrievalError", "FolderContentsMaximumLimitError")
        if hasattr(gdown, "exceptions") and hasattr(gdown.exceptions, name)
    )
    try:
        listing = gdown.download_folder(id=folder_id, skip_download=True, quiet=True)
    except (OSError, ValueError, *failures) as err:  # requests' errors are OSErrors
        raise DataError(f"cannot list Google Drive folder {folder_id} ({type(err).__name__}: {err})") from None
    entries = {PurePosixPath(str(entry.path).replace("\\", "/")).name: entry for entry in listing or []}
    if file_name not in entries:
        found = ", ".join(sorted(entries)) or "nothing"
        raise DataError(f"Google Drive folder {folder_id} has no {file_name} (it lists: {found})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        gdown.download(id=entries[file_name].id, output=str(dest), quiet=not show_progress, resume=True)
    except (OSError, ValueError, *failures) as err:
        raise DataError(f"Google Drive download of {file_name} failed ({type(err).__name__}: {err})") from None
    if not dest.is_file():
        raise DataError(f"Google Drive download of {file_name} left no file at {dest}")
    return f"https://drive.google.com/drive/folders/{folder_id} ({file_name}, id {entries[file_name].id})"


def ensure_archive(
    release: ReleaseSpec, show_progress: bool = True, **fetch_options: Any
) -> tuple[Path, str, list[str]]:
    """Make the release archive present and verified; returns ``(path, sha256, messages)``.

    As :func:`recbench.data.download.ensure_raw_files`: a file on disk that fails its sha256 (pinned,
    else recorded at the first download) is named and fetched again; a first download is checked as
    a whole zip and its sha256 recorded in ``releases/R/manifest.json``.
    """
    directory = release_dir(release.name)
    directory.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(directory / ".archive.lock", f"release archive {release.archive_file}", wait=True):
        return _ensure_archive(release, directory, show_progress, fetch_options)


def _ensure_archive(
    release: ReleaseSpec, directory: Path, show_progress: bool, fetch_options: dict[str, Any]
) -> tuple[Path, str, list[str]]:
    manifest_path = directory / "manifest.json"
    manifest = _read_raw_manifest(manifest_path)
    name = release.archive_file
    path = directory / name
    recorded = manifest["files"].get(name, {})
    sha256, size = release.sha256 or recorded.get("sha256"), release.size or recorded.get("size")
    messages: list[str] = []
    if path.is_file():
        problem, digest = verify_file(path, sha256, size, check_zip=True)
        if problem is None:
            if sha256 is None:
                _record(manifest, name, digest, path.stat().st_size, "local file")
                _write_raw_manifest(manifest_path, manifest)
                messages.append(f"recorded the sha256 of {path} in {manifest_path.name}")
            return path, digest, messages
        messages.append(f"WARNING: {path} failed verification ({problem}); downloading it again")
        path.unlink()
    problems: list[str] = []
    origin = digest = None
    if release.drive_folder:
        try:
            origin = drive_fetch(release.drive_folder, name, path, show_progress)
        except DataError as err:
            problems.append(f"Google Drive: {err}")
        except RecbenchError as err:  # gdown missing: fatal unless a plain URL is left to try
            if not release.urls:
                raise RecbenchError(f"{err} (or download {name} yourself and pass it with --from)") from None
            messages.append(f"{err}; skipped Google Drive")
        if origin is not None:
            problem, digest = verify_file(path, sha256, size, check_zip=True)
            if problem is not None:
                problems.append(f"Google Drive: {name} is corrupt: {problem}")
                path.unlink()
                origin = None
    if origin is None and release.urls:
        urls = sorted(release.urls, key=lambda url: not url.lower().startswith("https://"))
        try:
            fetched = fetch(urls, path, sha256=sha256, size=size, show_progress=show_progress, **fetch_options)
        except DataError as err:
            problems.append(str(err))
        else:
            origin, digest = fetched.url, fetched.sha256
            if fetched.resumed:
                messages.append(f"resumed the partial download of {name}")
            if sha256 is None and not fetched.url.lower().startswith("https://"):
                messages.append(
                    f"WARNING: {name} came over plain http from {fetched.url} and no sha256 is pinned for it: "
                    "its content could not be checked against a known value"
                )
    if origin is None or digest is None:
        hint = (
            f" The expected sha256 was recorded at the first download in {manifest_path}; if the upstream file "
            "really changed, delete that file and run download again."
            if sha256 and not release.sha256
            else ""
        )
        manual = f" Copies needing a browser: {'; '.join(release.manual)}." if release.manual else ""
        raise DataError(
            f"could not download {name} of release '{release.name}': {'; '.join(problems) or 'no source to try'}."
            f"{hint}{manual} A copy on disk imports with --release {release.name} --from FILE"
        )
    messages.append(f"downloaded {name} from {origin} ({path.stat().st_size:,} bytes)")
    if sha256 is None:
        _record(manifest, name, digest, path.stat().st_size, origin)
        _write_raw_manifest(manifest_path, manifest)
        messages.append(f"recorded sha256 {digest} of {name} in {manifest_path}: later uses are verified against it")
    return path, digest, messages


# --- the dataset's files ------------------------------------------------------------------------
def _usable_member(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return not any(part == "__MACOSX" or part.startswith("._") for part in parts)


def extract_dataset(archive: Path, release: ReleaseSpec, folder: str, into: Path) -> Path:
    """Extract ``<Folder>/<Folder>.<suffix>`` of every release file suffix from the zip ``archive``
    into ``into/<Folder>/`` (replacing it whole); returns that directory.

    A member may sit at any depth (``downstream/Scientific/Scientific.text``); two candidates for one
    file prefer the one under ``downstream/``. A corrupt or truncated archive is a :class:`DataError`.
    """
    try:
        with zipfile.ZipFile(archive) as zipped:
            chosen: dict[str, zipfile.ZipInfo] = {}
            for info in zipped.infolist():
                parts = PurePosixPath(info.filename).parts
                if info.is_dir() or len(parts) < 2 or parts[-2] != folder or not _usable_member(info.filename):
                    continue
                suffix = parts[-1][len(folder) + 1 :] if parts[-1].startswith(f"{folder}.") else None
                if suffix not in release.files:
                    continue
                if suffix in chosen and "downstream" not in parts:
                    continue
                chosen[suffix] = info
            missing = [s for s in release.files if s not in chosen and s != "train.inter"]
            if missing:
                raise DataError(
                    f"{archive}: no {', '.join(f'{folder}/{folder}.{s}' for s in missing)} in the archive "
                    f"(is it release '{release.name}'s {release.archive_file}?)"
                )
            into.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=into))
            try:
                for suffix, info in chosen.items():
                    with zipped.open(info) as source, open(staging / f"{folder}.{suffix}", "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
                final = into / folder
                if final.exists():
                    shutil.rmtree(final)
                os.replace(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise DataError(f"{archive}: corrupt or truncated zip ({err or type(err).__name__})") from None
    return final


def _dataset_folder(directory: Path, folder: str) -> Path | None:
    """The directory holding ``<Folder>.test.inter`` among the layouts a release copy can have."""
    for candidate in (directory, directory / folder, directory / "downstream" / folder):
        if (candidate / f"{folder}.test.inter").is_file():
            return candidate
    return None


def locate(source: Path, release: ReleaseSpec, folder: str) -> tuple[Path | None, Path | None]:
    """``(dataset directory, archive)`` of a copy given with ``--from``: one of them is set."""
    source = Path(source)
    if source.is_file():
        return None, source
    if not source.is_dir():
        raise DataError(f"{source} does not exist")
    found = _dataset_folder(source, folder)
    if found is not None:
        return found, None
    if (source / release.archive_file).is_file():
        return None, source / release.archive_file
    raise DataError(
        f"{source}: neither {folder}/{folder}.test.inter, downstream/{folder}/{folder}.test.inter "
        f"nor {release.archive_file} is there (release '{release.name}')"
    )


# --- the features -------------------------------------------------------------------------------
def read_features(path: Path, dims: int, count: int) -> np.ndarray:
    """The (count, dims) rows of a raw float32 feature file, as UniSRec reads it
    (``np.fromfile(path, float32).reshape(-1, dims)``): its size must be exactly ``count`` rows, and
    every value finite."""
    size = path.stat().st_size
    expected = count * dims * 4
    if size != expected:
        rows = f"{size / (dims * 4):,.2f}" if size % (dims * 4) else f"{size // (dims * 4):,}"
        raise DataError(
            f"{path}: {size:,} bytes = {rows} rows of {dims} float32, expected {count:,} rows "
            f"(one per item of the item2index file) = {expected:,} bytes"
        )
    rows = np.fromfile(path, dtype=np.float32).reshape(-1, dims)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        raise DataError(f"{path}: row {int(np.flatnonzero(~finite)[0])} holds NaN or infinite values")
    return rows


def feature_table(rows: np.ndarray, index_tokens: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
    """The (N + 1, d) embedding table of a dataset: row k of ``rows`` is the item with index k of
    ``X.item2index`` (``index_tokens[k]``), row j of the table recbench's item id j
    (``item_ids[j - 1]``), matched by item token; row 0 (padding) is zeros."""
    position = {token: k for k, token in enumerate(index_tokens)}
    absent = [token for token in item_ids if token not in position]
    if absent:
        raise DataError(f"item {absent[0]!r} of the dataset has no feature row ({len(absent):,} such items)")
    table = np.zeros((len(item_ids) + 1, rows.shape[1]), dtype=np.float32)
    table[1:] = rows[[position[token] for token in item_ids]]
    return table


# --- the command --------------------------------------------------------------------------------
def _release_and_folders(names: Sequence[str], release_name: str) -> tuple[ReleaseSpec, dict[str, str]]:
    release = get_release_spec(release_name)
    folders = {}
    for name in names:
        key = check_name("dataset", name).lower()
        if key not in release.datasets:
            raise DataError(
                f"release '{release.name}' has no dataset '{name}'; its datasets: {', '.join(sorted(release.datasets))}"
            )
        get_dataset_spec(key)  # a release dataset is imported under its catalogue entry (and its counts)
        folders[key] = release.datasets[key]
    return release, folders


def download_release(
    names: Sequence[str],
    release_name: str,
    source: Path | None = None,
    root: Path | None = None,
    show_progress: bool = True,
    **fetch_options: Any,
) -> list[IngestResult]:
    """``recbench download NAME... --release R [--from PATH]``: import each dataset and store its features."""
    if not names:
        raise DataError("name at least one dataset")
    release, folders = _release_and_folders(names, release_name)
    for name in folders:
        resolve_target(name, None, root)  # a copy on disk with another filter fails before any download
    archive: Path | None = None
    directory: Path | None = None
    archive_sha = None
    messages: list[str] = []
    if source is None:
        archive, archive_sha, messages = ensure_archive(release, show_progress, **fetch_options)
    results = []
    for name, folder in folders.items():
        with dataset_lock(name, root):
            if source is not None:
                directory, archive = locate(source, release, folder)
                archive_sha = sha256_file(archive) if archive is not None else None
            if archive is not None:
                directory = extract_dataset(archive, release, folder, release_dir(release.name) / "extracted")
            assert directory is not None
            result = _import_one(name, folder, directory, release, archive, archive_sha, root)
        result.messages[:0] = messages
        results.append(result)
    return results


def _import_one(
    name: str,
    folder: str,
    directory: Path,
    release: ReleaseSpec,
    archive: Path | None,
    archive_sha: str | None,
    root: Path | None,
) -> IngestResult:
    features = release.features
    feature_path = directory / f"{folder}.{features.suffix}"
    if not feature_path.is_file():
        raise DataError(f"missing file {feature_path} (release '{release.name}' ships {folder}.{features.suffix})")
    imported = import_unisrec(directory, prefix=folder)
    files = {p.name: sha256_file(p) for p in [*imported.files, feature_path]}
    record: dict[str, Any] = {"format": "unisrec", "release": release.name, "path": str(directory), "files": files}
    if archive is not None:
        record["archive"] = {"file": str(archive), "sha256": archive_sha}
    rows = read_features(feature_path, features.dims, len(imported.item_ids))  # before anything is saved
    result = finish(resolve_target(name, None, root), imported, record, root)
    dataset = result.dataset
    table = feature_table(rows, imported.item_ids, dataset.item_ids)
    spec = release_encoder_spec(release)
    saved = save_embeddings(dataset, spec, table, str(feature_path))
    result.messages.append(
        f"stored {feature_path.name} ({dataset.num_items:,} items x {features.dims}) as the text embeddings of "
        f"{spec.name} / {spec.pooling} pooling / {spec.max_tokens} tokens in {saved}"
    )
    result.messages.append(
        f"use them with --set text_encoder={spec.name} --set text_pooling={spec.pooling} "
        f"--set text_max_tokens={spec.max_tokens}"
    )
    return result

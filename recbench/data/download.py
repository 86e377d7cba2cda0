"""``recbench download``: bring a dataset into the canonical format, from the web or local files.

- A catalogued Amazon 2018 name without ``--from``: the raw ratings CSV and meta file are fetched
  into ``$RECBENCH_HOME/raw/<name>/`` (:mod:`recbench.data.fetch`: mirrors, resume, retries), verified
  (sha256 from ``datasets.toml``, else the one recorded at the first download in
  ``raw/<name>/manifest.json``), then preprocessed exactly as UniSRec (:mod:`recbench.data.amazon`).
- ``--from PATH``: files in another tool's format are imported (:mod:`recbench.data.ingest`).

Either way the canonical checks of :func:`recbench.data.dataset.build_dataset` apply, the counts are
compared with ``datasets.toml`` (a mismatch is returned for a loud warning, naming both numbers) and
the dataset is written atomically under its lock (:func:`recbench.data.dataset.dataset_lock`). A
download holds that lock from the first raw file to the save, so a second download of the same name
waits and then verifies what the first fetched; an import from local files reads them unlocked (a
failed import leaves nothing on disk) and takes the lock to save.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recbench.data.catalog import DatasetSpec, family_preprocess, get_dataset_spec, raw_dir
from recbench.data.dataset import Dataset, build_dataset, count_mismatches, dataset_lock, save_dataset
from recbench.data.fetch import fetch, sha256_file, verify_file
from recbench.data.formats import Imported, ImportOptions
from recbench.data.ingest import FORMATS, check_options, detect_format, run_importer
from recbench.errors import DataError, UnknownNameError
from recbench.names import check_name

__all__ = ["IngestResult", "download", "download_datasets", "ensure_raw_files", "import_local", "sha256_file"]


@dataclass
class IngestResult:
    """The dataset written and everything worth telling the user about it."""

    dataset: Dataset
    path: Path
    messages: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def _spec_or_none(name: str) -> DatasetSpec | None:
    try:
        return get_dataset_spec(name)
    except UnknownNameError:
        return None


def finish(name: str, imported: Imported, source: dict[str, Any], root: Path | None = None) -> IngestResult:
    """Canonical checks, count check against the catalogue, atomic save."""
    manifest = {"source": source, **imported.details}
    dataset, report = build_dataset(
        name.lower(), imported.user_ids, imported.sequences, imported.item_ids, imported.item_texts, manifest
    )  # type: ignore[arg-type]
    spec = _spec_or_none(name)
    mismatches = count_mismatches(dataset, spec.expected if spec else None)
    dataset.manifest["count_mismatches"] = mismatches
    path = save_dataset(dataset, root)
    return IngestResult(dataset, path, imported.notes + report.lines(), mismatches)


def import_local(
    name: str,
    source: Path,
    fmt: str | None = None,
    root: Path | None = None,
    options: ImportOptions | None = None,
    show_progress: bool = False,
) -> IngestResult:
    """Import files in another tool's format (or raw Amazon 2018 files) as the canonical dataset ``name``.

    Counts are checked against ``datasets.toml`` when ``name`` is catalogued; a mismatch is
    reported (both numbers), not fatal, because stand-ins of other preprocessings are legitimate.
    """
    check_name("dataset", name)
    source = Path(source)
    options = options or ImportOptions()
    fmt = fmt or detect_format(source)
    if fmt not in FORMATS:
        raise UnknownNameError("import format", fmt, FORMATS)
    check_options(fmt, options)
    if fmt == "amazon":
        imported = _import_raw_amazon(name, source, show_progress)
    else:
        imported = run_importer(fmt, source, options)
    files = {p.name: sha256_file(p) for p in imported.files}
    return finish(name, imported, {"format": fmt, "path": str(source.resolve()), "files": files}, root)


def _amazon_params(spec: DatasetSpec | None) -> Any:
    from recbench.data.amazon import AmazonParams

    return AmazonParams.from_mapping(spec.preprocess if spec else family_preprocess("amazon2018"))


def _import_raw_amazon(name: str, source: Path, show_progress: bool) -> Imported:
    from recbench.data.amazon import import_amazon

    spec = _spec_or_none(name)
    full_name = spec.full_name if spec and spec.family == "amazon2018" else None
    return import_amazon(source, full_name, _amazon_params(spec), name.lower(), show_progress=show_progress)


# --- raw files ----------------------------------------------------------------------------------
def _read_raw_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"files": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: unreadable checksum manifest ({err.msg}); delete it to record checksums anew"
        ) from None


def _write_raw_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def ensure_raw_files(
    spec: DatasetSpec, show_progress: bool = True, **fetch_options: Any
) -> tuple[dict[str, Path], list[str]]:
    """Make every raw file of ``spec`` present and verified; returns ``({role: path}, messages)``.

    A file that fails verification is named and fetched again. Where ``datasets.toml`` has no
    sha256, the first download's sha256 is recorded in ``raw/<name>/manifest.json`` and every later
    use is checked against it (a gzip file must also decode to its end before it is recorded).
    """
    if not spec.raw_files:
        raise DataError(f"dataset '{spec.name}' has no raw files to download")
    directory = raw_dir(spec.name)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / "manifest.json"
    manifest = _read_raw_manifest(manifest_path)
    paths: dict[str, Path] = {}
    messages: list[str] = []
    for role, info in spec.raw_files.items():
        path = directory / info["file"]
        recorded = manifest["files"].get(info["file"], {})
        sha256, size = info.get("sha256") or recorded.get("sha256"), info.get("size") or recorded.get("size")
        if path.is_file():
            problem, digest = verify_file(path, sha256, size)
            if problem is None:
                if sha256 is None:
                    _record(manifest, info["file"], digest, path.stat().st_size, "local file")
                    messages.append(f"recorded the sha256 of {path} in {manifest_path.name}")
                paths[role] = path
                continue
            messages.append(f"WARNING: {path} failed verification ({problem}); downloading it again")
            path.unlink()
        # https first: a mirror on plain http is a last resort (stable order otherwise)
        urls = sorted(info["urls"], key=lambda url: not url.lower().startswith("https://"))
        try:
            fetched = fetch(urls, path, sha256=sha256, size=size, show_progress=show_progress, **fetch_options)
        except DataError as err:
            if sha256 and not info.get("sha256"):
                raise DataError(
                    f"{err}. The expected sha256 was recorded at the first download in {manifest_path}; "
                    "if the upstream file really changed, delete that file and run download again"
                ) from None
            raise
        resumed = ", resumed" if fetched.resumed else ""
        messages.append(f"downloaded {path.name} from {fetched.url} ({fetched.size:,} bytes{resumed})")
        if sha256 is None and not fetched.url.lower().startswith("https://"):
            messages.append(
                f"WARNING: {path.name} came over plain http from {fetched.url} "
                "and no sha256 is pinned for it in datasets.toml: "
                "its content could not be checked against a known value "
                "(compare the recorded sha256 with a trusted copy)"
            )
        if sha256 is None:
            _record(manifest, info["file"], fetched.sha256, fetched.size, fetched.url)
            messages.append(
                f"recorded sha256 {fetched.sha256} of {path.name} in {manifest_path}: "
                "later uses are verified against it"
            )
        paths[role] = path
        _write_raw_manifest(manifest_path, manifest)  # after each file: an interrupted run keeps what it verified
    _write_raw_manifest(manifest_path, manifest)
    return paths, messages


def _record(manifest: dict[str, Any], file: str, sha256: str, size: int, origin: str) -> None:
    manifest["files"][file] = {
        "sha256": sha256,
        "size": size,
        "origin": origin,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def download_amazon(
    spec: DatasetSpec, root: Path | None = None, show_progress: bool = True, **fetch_options: Any
) -> IngestResult:
    """Fetch (or verify) the raw files of an Amazon 2018 dataset and preprocess them as UniSRec."""
    from recbench.data.amazon import preprocess_amazon

    paths, messages = ensure_raw_files(spec, show_progress, **fetch_options)
    imported = preprocess_amazon(
        paths["ratings"], paths["meta"], _amazon_params(spec), spec.name, show_progress=show_progress
    )
    manifest = json.loads((raw_dir(spec.name) / "manifest.json").read_text(encoding="utf-8"))
    checksums = {
        p.name: manifest["files"].get(p.name, {}).get("sha256") or spec.raw_files[role].get("sha256")
        for role, p in paths.items()
    }
    result = finish(
        spec.name, imported, {"format": "amazon", "path": str(raw_dir(spec.name)), "files": checksums}, root
    )
    result.messages[:0] = messages
    return result


def download(
    name: str,
    source: Path | None = None,
    fmt: str | None = None,
    root: Path | None = None,
    options: ImportOptions | None = None,
    show_progress: bool = True,
) -> IngestResult:
    """Make the canonical dataset ``name``: import ``source`` if given, else download and preprocess
    its raw files (Amazon 2018) or generate it (synthetic demo data)."""
    if source is None and (fmt is not None or (options is not None and options.given())):
        raise DataError("--format and the import options only apply with --from PATH")
    if source is not None:
        return import_local(name, source, fmt, root, options, show_progress)
    spec = get_dataset_spec(name)
    with dataset_lock(name, root):
        return _download_catalogued(spec, root, show_progress)


def _download_catalogued(spec: DatasetSpec, root: Path | None, show_progress: bool) -> IngestResult:
    if spec.synthetic:
        from recbench.data.synthetic import generate

        dataset = generate(spec.name, spec.generator)
        return IngestResult(
            dataset, save_dataset(dataset, root), ["SYNTHETIC demo data (recbench.data.synthetic), not a real dataset"]
        )
    if spec.family == "amazon2018":
        return download_amazon(spec, root, show_progress)
    raise DataError(
        f"recbench cannot download the '{spec.family}' family of '{spec.name}'; "
        f"import local copies with `recbench download {spec.name} --from DIR`"
    )


def download_datasets(
    names: Sequence[str],
    source: Path | None = None,
    fmt: str | None = None,
    options: ImportOptions | None = None,
    root: Path | None = None,
    show_progress: bool = True,
) -> list[IngestResult]:
    """``recbench download NAME...``: every name in turn (``--from`` imports exactly one)."""
    if not names:
        raise DataError("name at least one dataset")
    if source is not None and len(names) != 1:
        raise DataError(f"--from imports one dataset, but {len(names)} names were given")
    for name in names:  # unknown names fail before anything is downloaded
        if source is None:
            get_dataset_spec(name)
    return [download(name, source, fmt, root, options, show_progress) for name in names]

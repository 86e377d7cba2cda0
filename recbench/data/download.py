"""``recbench download``: bring a dataset into the canonical format, from the web or local files.

- A catalogued name without ``--from``: its raw files are fetched into ``$RECBENCH_HOME/raw/<name>/``
  (:mod:`recbench.data.fetch`: mirrors, resume, retries), verified (sha256 from ``datasets.toml``,
  else the one recorded at the first download in ``raw/<name>/manifest.json``), then preprocessed:
  Amazon 2018 exactly as UniSRec (:mod:`recbench.data.amazon`), Amazon 2014
  (:mod:`recbench.data.amazon2014`), MovieLens (:mod:`recbench.data.movielens`).
- ``--from PATH``: files in another tool's format are imported (:mod:`recbench.data.ingest`).

Either way the interaction filter (:mod:`recbench.data.filters`: the catalogue entry's, or the one
asked for) is applied, the canonical checks of :func:`recbench.data.dataset.build_dataset` apply, the
counts are compared with ``datasets.toml`` (a mismatch is returned for a loud warning, naming both
numbers) and the dataset is written atomically under its lock (:func:`recbench.data.dataset.dataset_lock`).

A filter other than the catalogue entry's never reuses the entry's name: ``download beauty
--min-user-interactions 5 --min-item-interactions 5`` writes ``beauty-u5-i5-kcore``. A name that is
already on disk with another filter is an error (:func:`resolve_target`), so a filtered and an
unfiltered copy never replace one another silently. A
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

import numpy as np

from recbench.data.catalog import Counts, DatasetSpec, family_preprocess, get_dataset_spec, raw_dir
from recbench.data.dataset import (
    MIN_INTERACTIONS,
    Dataset,
    build_dataset,
    compare_counts,
    count_mismatches,
    dataset_lock,
    dataset_path,
    read_manifest,
    save_dataset,
)
from recbench.data.fetch import fetch, sha256_file, verify_file
from recbench.data.filters import InteractionFilter, apply_filter, describe_filter, filter_from_record
from recbench.data.formats import Imported, ImportOptions
from recbench.data.ingest import FORMATS, check_options, detect_format, run_importer
from recbench.errors import DataError, UnknownNameError
from recbench.names import check_name

__all__ = [
    "IngestResult",
    "Target",
    "download",
    "download_datasets",
    "ensure_raw_files",
    "import_local",
    "resolve_target",
    "sha256_file",
]


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


@dataclass(frozen=True)
class Target:
    """Where an import goes: the dataset name, its filter and the catalogue entry whose counts apply."""

    name: str
    interaction_filter: InteractionFilter | None  # canonical form; None: no filter
    spec: DatasetSpec | None  # the catalogue entry of the name asked for (its raw data), if any
    catalogued: bool  # ``name`` is the entry's own name, so its post-filter counts apply
    renamed_from: str | None = None  # the name asked for, when another filter gave a new name


def resolve_target(name: str, requested: InteractionFilter | None = None, root: Path | None = None) -> Target:
    """The dataset an import of ``name`` writes, with the filter ``requested`` (None: the catalogue's).

    A catalogued name keeps its name with its own filter; another filter writes ``NAME-SUFFIX``
    (:meth:`InteractionFilter.name_suffix`, ``NAME-unfiltered`` for none). A name already on disk
    with another filter is a :class:`DataError` (checked again just before saving).
    """
    check_name("dataset", name)
    spec = _spec_or_none(name)
    default = spec.interaction_filter if spec else None
    chosen = requested.canonical() if requested is not None else default
    if spec is not None and spec.synthetic and requested is not None:
        raise DataError(
            f"'{spec.name}' is SYNTHETIC demo data: the interaction filters do not apply to it "
            "(--min-user-interactions, --min-item-interactions, --filter)"
        )
    if spec is None or chosen == default:
        target = Target(name.lower(), chosen, spec, spec is not None)
    else:
        derived = check_name("dataset", f"{spec.name}-{chosen.name_suffix() if chosen else 'unfiltered'}")
        target = Target(derived.lower(), chosen, spec, False, renamed_from=spec.name)
    _check_same_filter(target, root)
    return target


def _check_same_filter(target: Target, root: Path | None) -> None:
    """Refuse to replace a dataset that is on disk with another filter (a damaged one may be replaced)."""
    path = dataset_path(target.name, root)
    if not (path / "manifest.json").is_file():
        return
    try:
        existing = filter_from_record(read_manifest(target.name, root).get("filter"))
    except DataError:
        return  # unreadable: re-importing is how a damaged dataset is repaired
    if existing != target.interaction_filter:
        new = target.interaction_filter
        raise DataError(
            f"dataset '{target.name}' already exists with {describe_filter(existing)}, but this import asks for "
            f"{describe_filter(new)}: import it under another name (e.g. "
            f"'{target.name}-{new.name_suffix() if new else 'unfiltered'}') or delete {path} first"
        )


def _imported_counts(imported: Imported) -> Counts:
    """Users with an interaction, distinct items and interactions of an import, before any filter."""
    lengths = [len(s) for s in imported.sequences]
    parts = [np.asarray(s, dtype=np.int64) for s in imported.sequences if len(s)]
    used = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
    return Counts(sum(1 for n in lengths if n), len(used), int(sum(lengths)))


def finish(name: str | Target, imported: Imported, source: dict[str, Any], root: Path | None = None) -> IngestResult:
    """Filter, canonical checks, count checks against the catalogue, atomic save."""
    target = name if isinstance(name, Target) else resolve_target(name, root=root)
    spec = target.spec
    notes = list(imported.notes)
    mismatches = []
    if spec is not None and spec.expected_unfiltered is not None:
        mismatches += compare_counts(
            target.name, _imported_counts(imported), spec.expected_unfiltered, "before the filter"
        )
    user_ids, sequences = imported.user_ids, imported.sequences
    manifest: dict[str, Any] = {"source": source, **imported.details, "filter": None}
    chosen = target.interaction_filter
    if chosen is not None:
        outcome = apply_filter(sequences, chosen, user_floor=MIN_INTERACTIONS)
        if not len(outcome.kept_users):
            raise DataError(f"{target.name}: the filter ({chosen.describe()}) leaves no users; lower its thresholds")
        user_ids, sequences = [user_ids[u] for u in outcome.kept_users], outcome.sequences
        manifest["filter"] = chosen.record()
        manifest["filter_outcome"] = outcome.record()
        notes.append(
            f"filter {chosen.describe()}: removed {outcome.removed_users:,} users, {outcome.removed_items:,} items, "
            f"{outcome.removed_interactions:,} interactions"
            + (f" in {outcome.rounds} round(s)" if chosen.mode == "kcore" else "")
        )
    texts = imported.item_texts
    kept = [np.asarray(s, dtype=np.int64) for s in sequences if len(s)]
    if imported.deferred_texts is not None and kept:  # texts of the items left after the filter only
        used = np.unique(np.concatenate(kept))
        found, text_notes = imported.deferred_texts([imported.item_ids[i] for i in used])
        texts = [""] * len(imported.item_ids)
        for index, text in zip(used, found):
            texts[index] = text
        notes += text_notes
    dataset, report = build_dataset(target.name, user_ids, sequences, imported.item_ids, texts, manifest)  # type: ignore[arg-type]
    if target.catalogued and spec is not None:
        mismatches += count_mismatches(dataset, spec.expected)
    dataset.manifest["count_mismatches"] = mismatches
    if target.renamed_from:
        notes.insert(
            0,
            f"saved as '{target.name}': the catalogue's '{target.renamed_from}' is defined with "
            f"{describe_filter(spec.interaction_filter if spec else None)}",
        )
    with dataset_lock(target.name, root):
        _check_same_filter(target, root)  # again under the lock: another import may have saved meanwhile
        path = save_dataset(dataset, root)
    return IngestResult(dataset, path, notes + report.lines(), mismatches)


def import_local(
    name: str,
    source: Path,
    fmt: str | None = None,
    root: Path | None = None,
    options: ImportOptions | None = None,
    show_progress: bool = False,
    interaction_filter: InteractionFilter | None = None,
) -> IngestResult:
    """Import files in another tool's format (or raw files) as the canonical dataset ``name``.

    ``interaction_filter`` None applies the catalogue entry's filter (none for a name not in the
    catalogue); see :func:`resolve_target` for how another filter names the dataset. Counts are
    checked against ``datasets.toml`` when ``name`` is catalogued; a mismatch is reported (both
    numbers), not fatal, because stand-ins of other preprocessings are legitimate.
    """
    target = resolve_target(name, interaction_filter, root)
    source = Path(source)
    options = options or ImportOptions()
    fmt = fmt or detect_format(source)
    if fmt not in FORMATS:
        raise UnknownNameError("import format", fmt, FORMATS)
    check_options(fmt, options)
    if fmt == "amazon":
        imported = _import_raw_amazon(target.spec, name, source, show_progress)
    else:
        imported = run_importer(fmt, source, options)
    files = {p.name: sha256_file(p) for p in imported.files}
    return finish(target, imported, {"format": fmt, "path": str(source.resolve()), "files": files}, root)


def _amazon_params(spec: DatasetSpec | None) -> Any:
    from recbench.data.amazon import AmazonParams

    return AmazonParams.from_mapping(spec.preprocess if spec else family_preprocess("amazon2018"))


def _import_raw_amazon(spec: DatasetSpec | None, name: str, source: Path, show_progress: bool) -> Imported:
    from recbench.data.amazon import import_amazon

    full_name = spec.full_name if spec and spec.family == "amazon2018" else None
    spec = spec if spec and spec.family == "amazon2018" else None
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


def _preprocess_amazon2018(spec: DatasetSpec, paths: dict[str, Path], show_progress: bool) -> Imported:
    from recbench.data.amazon import preprocess_amazon

    return preprocess_amazon(
        paths["ratings"], paths["meta"], _amazon_params(spec), spec.name, show_progress=show_progress
    )


def _preprocess_amazon2014(spec: DatasetSpec, paths: dict[str, Path], show_progress: bool) -> Imported:
    from recbench.data.amazon2014 import preprocess_amazon2014

    return preprocess_amazon2014(paths["ratings"], paths.get("meta"))


def _preprocess_movielens(spec: DatasetSpec, paths: dict[str, Path], show_progress: bool) -> Imported:
    from recbench.data.movielens import import_movielens

    return import_movielens(paths["archive"])


# family -> (import format recorded in the manifest, preprocessing of the downloaded raw files)
RAW_FAMILIES = {
    "amazon2018": ("amazon", _preprocess_amazon2018),
    "amazon2014": ("amazon2014", _preprocess_amazon2014),
    "movielens": ("movielens", _preprocess_movielens),
}


def download_raw(
    spec: DatasetSpec,
    target: Target | None = None,
    root: Path | None = None,
    show_progress: bool = True,
    **fetch_options: Any,
) -> IngestResult:
    """Fetch (or verify) the raw files of a catalogued dataset, preprocess them and save the dataset."""
    target = target or resolve_target(spec.name, root=root)
    paths, messages = ensure_raw_files(spec, show_progress, **fetch_options)
    fmt, preprocess = RAW_FAMILIES[spec.family]
    imported = preprocess(spec, paths, show_progress)
    manifest = json.loads((raw_dir(spec.name) / "manifest.json").read_text(encoding="utf-8"))
    checksums = {
        p.name: manifest["files"].get(p.name, {}).get("sha256") or spec.raw_files[role].get("sha256")
        for role, p in paths.items()
    }
    result = finish(target, imported, {"format": fmt, "path": str(raw_dir(spec.name)), "files": checksums}, root)
    result.messages[:0] = messages
    return result


def download(
    name: str,
    source: Path | None = None,
    fmt: str | None = None,
    root: Path | None = None,
    options: ImportOptions | None = None,
    show_progress: bool = True,
    interaction_filter: InteractionFilter | None = None,
) -> IngestResult:
    """Make the canonical dataset ``name``: import ``source`` if given, else download and preprocess
    its raw files or generate it (synthetic demo data).

    ``interaction_filter`` None applies the catalogue entry's filter; another filter writes a dataset
    of its own name (:func:`resolve_target`).
    """
    if source is None and (fmt is not None or (options is not None and options.given())):
        raise DataError("--input-format and the import options only apply with --from PATH")
    if source is not None:
        return import_local(name, source, fmt, root, options, show_progress, interaction_filter)
    spec = get_dataset_spec(name)
    target = resolve_target(name, interaction_filter, root)
    with dataset_lock(spec.name, root):  # the entry's lock guards its raw files, whatever name is written
        return _download_catalogued(spec, target, root, show_progress)


def _download_catalogued(spec: DatasetSpec, target: Target, root: Path | None, show_progress: bool) -> IngestResult:
    if spec.synthetic:
        from recbench.data.synthetic import generate

        dataset = generate(spec.name, spec.generator)
        return IngestResult(
            dataset, save_dataset(dataset, root), ["SYNTHETIC demo data (recbench.data.synthetic), not a real dataset"]
        )
    if spec.family in RAW_FAMILIES:
        return download_raw(spec, target, root, show_progress)
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
    interaction_filter: InteractionFilter | None = None,
) -> list[IngestResult]:
    """``recbench download NAME...``: every name in turn (``--from`` imports exactly one)."""
    if not names:
        raise DataError("name at least one dataset")
    if source is not None and len(names) != 1:
        raise DataError(f"--from imports one dataset, but {len(names)} names were given")
    for name in names:  # unknown names and filter conflicts fail before anything is downloaded
        if source is None:
            get_dataset_spec(name)
        resolve_target(name, interaction_filter, root)
    return [download(name, source, fmt, root, options, show_progress, interaction_filter) for name in names]

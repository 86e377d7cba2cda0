"""``recbench download``: bring a dataset into the canonical format, from local files or the web."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from recbench.catalog import get_dataset_spec
from recbench.data import Dataset, build_dataset, count_mismatches, save_dataset
from recbench.errors import DataError, UnknownNameError
from recbench.ingest import IMPORTERS, detect_format


@dataclass
class IngestResult:
    """The dataset written and everything worth telling the user about it."""

    dataset: Dataset
    path: Path
    messages: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def import_local(name: str, source: Path, fmt: str | None = None, root: Path | None = None) -> IngestResult:
    """Import files in another tool's format as the canonical dataset ``name``.

    Counts are checked against ``datasets.toml`` when ``name`` is catalogued; a mismatch is
    reported (both numbers), not fatal, because stand-ins of other preprocessings are legitimate.
    """
    source = Path(source)
    fmt = fmt or detect_format(source)
    if fmt not in IMPORTERS:
        raise UnknownNameError("import format", fmt, IMPORTERS)
    imported = IMPORTERS[fmt](source)
    manifest = {
        "source": {
            "format": fmt,
            "path": str(source.resolve()),
            "files": {p.name: sha256_file(p) for p in imported.files},
        }
    }
    dataset, report = build_dataset(name.lower(), imported.user_ids, imported.sequences, imported.item_ids, imported.item_texts, manifest)
    try:
        expected = get_dataset_spec(name).expected
    except UnknownNameError:
        expected = None
    mismatches = count_mismatches(dataset, expected)
    dataset.manifest["count_mismatches"] = mismatches
    path = save_dataset(dataset, root)
    if dataset.num_items == 0:
        raise DataError(f"{name}: no items after import")
    return IngestResult(dataset, path, imported.notes + report.lines(), mismatches)


def download(name: str, source: Path | None = None, fmt: str | None = None, root: Path | None = None) -> IngestResult:
    """Make the canonical dataset ``name``: import ``source`` if given, generate a synthetic one.

    Fetching and preprocessing the raw Amazon files is not available in this version; the error
    says how to import local copies instead.
    """
    if source is not None:
        return import_local(name, source, fmt, root)
    spec = get_dataset_spec(name)
    if spec.synthetic:
        from recbench.synthetic import generate

        dataset = generate(spec.name, spec.generator)
        return IngestResult(dataset, save_dataset(dataset, root), ["SYNTHETIC demo data (recbench.synthetic), not a real dataset"])
    raise DataError(
        f"downloading the raw {spec.family} files of '{spec.name}' is not available yet; "
        f"import local copies with `recbench download {spec.name} --from DIR`"
    )

"""The dataset catalogue: ``datasets.toml`` (shipped inside the package) and where data lives.

Data lives under ``$RECBENCH_HOME`` (default ``~/.cache/recbench``): ``datasets/<name>/`` holds the
canonical Dataset, ``raw/<name>/`` the downloaded raw files, ``embeddings/`` the text-encoder cache.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from recbench.errors import UnknownNameError


def recbench_home() -> Path:
    """Root of recbench's data cache: ``$RECBENCH_HOME`` or ``~/.cache/recbench``."""
    return Path(os.environ.get("RECBENCH_HOME", Path.home() / ".cache" / "recbench")).expanduser()


def datasets_dir() -> Path:
    """Directory holding one canonical Dataset per sub-directory."""
    return recbench_home() / "datasets"


def raw_dir(name: str) -> Path:
    """Where the raw files of dataset ``name`` are downloaded (with their checksum manifest)."""
    from recbench.names import check_name

    return recbench_home() / "raw" / check_name("dataset", name).lower()


def family_preprocess(family: str) -> dict[str, Any]:
    """The ``[families.<family>.preprocess]`` defaults (for imports under a name not in the catalogue)."""
    return dict(load_catalog().get("families", {}).get(family, {}).get("preprocess", {}))


@dataclass(frozen=True)
class Counts:
    """Users / items / interactions of a preprocessed dataset."""

    users: int
    items: int
    interactions: int


@dataclass(frozen=True)
class DatasetSpec:
    """One ``[datasets.NAME]`` entry of ``datasets.toml``, with its family's defaults filled in."""

    name: str
    family: str
    full_name: str
    expected: Counts | None
    raw_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    generator: dict[str, Any] = field(default_factory=dict)
    """Parameters of :func:`recbench.data.synthetic.generate` (synthetic family only)."""

    @property
    def synthetic(self) -> bool:
        return self.family == "synthetic"


@dataclass(frozen=True)
class Suite:
    """Source domains for pre-training and target domains for evaluation."""

    name: str
    description: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, Any]:
    """Parse the packaged ``datasets.toml`` (works from a checkout and from a wheel)."""
    text = resources.files("recbench.data").joinpath("datasets.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def dataset_names() -> list[str]:
    """Every dataset name in the catalogue."""
    return sorted(load_catalog().get("datasets", {}))


def _expand(template: str, full_name: str) -> str:
    return template.format(full_name=full_name)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The catalogue entry for ``name`` (case-insensitive); unknown names get suggestions."""
    catalog = load_catalog()
    key = name.lower()
    entries = catalog.get("datasets", {})
    if key not in entries:
        raise UnknownNameError("dataset", name, entries)
    entry = entries[key]
    family = catalog.get("families", {}).get(entry["family"], {})
    full_name = entry.get("full_name", key)
    raw_files = {}
    for role in ("ratings", "meta"):
        if f"{role}_file" in family:
            raw_files[role] = {
                "file": _expand(family[f"{role}_file"], full_name),
                "urls": [_expand(u, full_name) for u in family.get(f"{role}_urls", [])],
                "sha256": entry.get("sha256", {}).get(role),
                "size": entry.get("size", {}).get(role),
            }
    expected = entry.get("expected")
    return DatasetSpec(
        name=key,
        family=entry["family"],
        full_name=full_name,
        expected=Counts(**expected) if expected else None,
        raw_files=raw_files,
        preprocess={**family.get("preprocess", {}), **entry.get("preprocess", {})},
        generator=dict(entry.get("generator", {})),
    )


def get_suite(name: str) -> Suite:
    """The ``[suites.NAME]`` entry of the catalogue."""
    from recbench.names import check_name

    suites = load_catalog().get("suites", {})
    if check_name("suite", name).lower() not in suites:
        raise UnknownNameError("suite", name, suites)
    entry = suites[name.lower()]
    return Suite(
        name=name.lower(),
        description=entry.get("description", ""),
        sources=tuple(entry.get("sources", [])),
        targets=tuple(entry.get("targets", [])),
    )


def suite_names() -> list[str]:
    """Every suite name in the catalogue."""
    return sorted(load_catalog().get("suites", {}))

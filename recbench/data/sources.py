"""Multi-domain sources for pre-training, and the suites of ``datasets.toml``.

:func:`source_union` is the union of several canonical datasets as transfer methods pre-train on it
(UniSRec's FHCKM): users and items stay apart per domain (tokens prefixed ``"<domain>-"``), every
item keeps its text, and arrays record the domain of each user and item. The union itself is
:func:`recbench.data.dataset.union_of`, so pre-training runs keyed on it are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recbench.data.catalog import get_dataset_spec, get_suite, suite_names
from recbench.data.dataset import Dataset, downloaded_names, load_dataset, union_of
from recbench.errors import DataError


@dataclass
class SourceUnion:
    """The union of source domains, with the domain of every user and item."""

    dataset: Dataset
    domains: tuple[str, ...]  # domain index k -> dataset name (sorted, as union_of orders them)
    user_domain: np.ndarray  # (U,) int16: domain index of each user
    item_domain: np.ndarray  # (N + 1,) int16: domain index of each item id; -1 for padding id 0

    def domain_of_item(self, item_id: int) -> str:
        return self.domains[int(self.item_domain[item_id])]


def source_union(sources: Sequence[str | Dataset], root: Path | None = None) -> SourceUnion:
    """Union of ``sources`` (names of downloaded datasets, or Datasets) with domain arrays."""
    datasets = [load_dataset(s, root) if isinstance(s, str) else s for s in sources]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise DataError(f"a source domain appears twice: {', '.join(names)}")
    union = union_of(datasets)
    ordered = sorted(datasets, key=lambda d: d.name)
    if union.num_users != sum(d.num_users for d in ordered) or union.num_items != sum(d.num_items for d in ordered):
        raise DataError(
            f"{union.name}: the union dropped users or items; its domains cannot be recorded"
        )  # not for canonical inputs
    user_domain = np.repeat(np.arange(len(ordered), dtype=np.int16), [d.num_users for d in ordered])
    item_domain = np.concatenate(
        [[-1], np.repeat(np.arange(len(ordered), dtype=np.int16), [d.num_items for d in ordered])]
    ).astype(np.int16)
    return SourceUnion(union, tuple(d.name for d in ordered), user_domain, item_domain)


def suite_sources(suite: str, root: Path | None = None) -> SourceUnion:
    """The union of a suite's source domains (each must be downloaded)."""
    return source_union(list(get_suite(suite).sources), root)


@dataclass(frozen=True)
class SuiteRow:
    """One suite as ``recbench list datasets`` shows it."""

    name: str
    description: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    missing: tuple[str, ...]  # datasets of the suite not downloaded yet
    source_interactions: int | None  # expected size of the pre-training union (datasets.toml), if known

    @property
    def ready(self) -> bool:
        return not self.missing


def suite_rows(root: Path | None = None) -> list[SuiteRow]:
    """Every suite of the catalogue, with what is downloaded and the expected pre-training size."""
    downloaded = set(downloaded_names(root))
    rows = []
    for name in suite_names():
        suite = get_suite(name)
        expected = [get_dataset_spec(s).expected for s in suite.sources]
        total = sum(e.interactions for e in expected if e) if all(expected) and expected else None
        missing = tuple(d for d in (*suite.sources, *suite.targets) if d not in downloaded)
        rows.append(SuiteRow(name, suite.description, suite.sources, suite.targets, missing, total))
    return rows

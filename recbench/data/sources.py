"""The suites of ``datasets.toml`` (sources to pre-train on, targets to evaluate on), as listed.

The pre-training union of a suite's sources is :func:`recbench.data.dataset.union_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recbench.data.catalog import get_dataset_spec, get_suite, suite_names
from recbench.data.dataset import downloaded_names


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

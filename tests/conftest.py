"""Shared fixtures: small synthetic data that the tests generate themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from recbench import testing
from recbench.data.dataset import Dataset, save_dataset


def make_cyclic_dataset(name: str = "toy", **options: int | float) -> Dataset:
    """The plugin kit's learnable toy data (users walk item i -> i + 1 with random jumps), one source for both."""
    return testing.toy_dataset(name, **options)


@pytest.fixture
def recbench_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $RECBENCH_HOME for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("RECBENCH_HOME", str(home))
    return home


@pytest.fixture
def toy_dataset(recbench_home: Path) -> Dataset:
    """A saved cyclic toy dataset called 'toy'."""
    dataset = make_cyclic_dataset()
    save_dataset(dataset)
    return dataset

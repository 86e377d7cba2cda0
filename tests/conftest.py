"""Shared fixtures: small synthetic data that the tests generate themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recbench.data.dataset import Dataset, build_dataset, save_dataset


def make_cyclic_dataset(
    name: str = "toy",
    users: int = 60,
    items: int = 30,
    min_len: int = 4,
    max_len: int = 12,
    seed: int = 0,
    noise: float = 0.1,
) -> Dataset:
    """Users walk item i -> i + 1 (mod N) with occasional random jumps: next items are learnable."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(users):
        length = int(rng.integers(min_len, max_len + 1))
        current = int(rng.integers(items))
        sequence = []
        for _ in range(length):
            sequence.append(current)
            current = int(rng.integers(items)) if rng.random() < noise else (current + 1) % items
        sequences.append(sequence)
    texts = [f"item {i} in group {i % 5}" for i in range(items)]
    dataset, _ = build_dataset(name, [f"u{u}" for u in range(users)], sequences, [f"i{i}" for i in range(items)], texts)
    return dataset


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

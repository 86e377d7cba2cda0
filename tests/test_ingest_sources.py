"""Multi-domain pre-training sources and suite rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recbench.data.dataset import build_dataset, load_dataset, save_dataset, union_of
from recbench.data.sources import suite_rows


def small(name: str, items: list[str], users: int) -> None:
    sequences = [[(u + k) % len(items) for k in range(3 + u % 2)] for u in range(users)]
    dataset, _ = build_dataset(name, [f"u{u}" for u in range(users)], sequences, items, [f"text of {i}" for i in items])
    save_dataset(dataset)


def test_union_prefixes_ids_keeps_text_and_keeps_domains_apart(recbench_home: Path) -> None:
    small("home", ["A", "B", "C"], 4)
    small("food", ["A", "X"], 3)  # item 'A' exists in both domains: it must stay two items
    dataset = union_of([load_dataset("home"), load_dataset("food")])
    assert dataset.item_ids == ["food-A", "food-X", "home-A", "home-B", "home-C"]
    assert dataset.item_texts[2] == "text of A" and dataset.user_ids[0] == "food-u0"
    item_domain = np.array([-1, 0, 0, 1, 1, 1])  # id 0 is padding; food items first
    user_domain = np.array([0, 0, 0, 1, 1, 1, 1])
    for user in range(dataset.num_users):  # every user's items come from the user's own domain
        assert np.all(item_domain[dataset.sequence(user)] == user_domain[user])


def test_suite_rows_list_sources_targets_and_what_is_missing(recbench_home: Path) -> None:
    rows = {row.name: row for row in suite_rows()}
    paper = rows["paper"]
    assert paper.sources == ("food", "home", "cds", "kindle", "movies") and "arts" in paper.targets
    assert paper.source_interactions == 1027413 + 6451926 + 1118563 + 2204596 + 3226731  # = 14,029,229 (paper Table 1)
    assert not paper.ready and "home" in paper.missing

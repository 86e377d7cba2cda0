"""UniSRec atomic files -> canonical Dataset: a round trip on a generated fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from recbench.data.dataset import load_dataset
from recbench.data.download import import_local
from recbench.errors import DataError

MAX_HISTORY = 50


def write_unisrec(
    directory: Path, name: str, sequences: dict[str, list[str]], texts: dict[str, str] | None, with_train: bool = True
) -> None:
    """Write files the way UniSRec's process_amazon.py does (index order = first appearance)."""
    directory.mkdir(parents=True, exist_ok=True)
    users, items = {}, {}
    for user, sequence in sequences.items():
        users.setdefault(user, len(users))
        for item in sequence:
            items.setdefault(item, len(items))
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    rows = {"train": [header], "valid": [header], "test": [header]}
    for user, sequence in sequences.items():
        ids = [items[i] for i in sequence]
        train = ids[:-2]
        for t in range(1, len(train)):  # longest prefix first
            history = train[:-t][-MAX_HISTORY:]
            rows["train"].append(f"{users[user]}\t{' '.join(map(str, history))}\t{train[-t]}\n")
        rows["valid"].append(f"{users[user]}\t{' '.join(map(str, train[-MAX_HISTORY:]))}\t{ids[-2]}\n")
        rows["test"].append(f"{users[user]}\t{' '.join(map(str, ids[:-1][-MAX_HISTORY:]))}\t{ids[-1]}\n")
    for split, lines in rows.items():
        if split != "train" or with_train:
            (directory / f"{name}.{split}.inter").write_text("".join(lines))
    (directory / f"{name}.item2index").write_text("".join(f"{i}\t{k}\n" for i, k in items.items()))
    (directory / f"{name}.user2index").write_text("".join(f"{u}\t{k}\n" for u, k in users.items()))
    if texts is not None:
        (directory / f"{name}.text").write_text(
            "item_id:token\ttext:token_seq\n" + "".join(f"{i}\t{t}\n" for i, t in texts.items())
        )


def fixture_sequences() -> dict[str, list[str]]:
    long_user = [f"B{i % 70:03d}" for i in range(64)]  # longer than the 50-item history cap, with repeats
    return {
        "U1": ["B001", "B002", "B003", "B004", "B005"],
        "U2": ["B003", "B003", "B006"],  # a repeat purchase
        "U3": long_user,
        "U4": ["B006", "B001", "B002", "B007"],
    }


def test_unisrec_import_rebuilds_full_sequences_counts_and_text(tmp_path: Path, recbench_home: Path) -> None:
    sequences = fixture_sequences()
    items = sorted({i for s in sequences.values() for i in s})
    texts = {item: f"Title of {item}. Category. Brand. " for item in items}
    write_unisrec(tmp_path / "src", "Toy", sequences, texts)
    result = import_local("toy", tmp_path / "src")
    dataset = load_dataset("toy")
    assert (dataset.num_users, dataset.num_items) == (4, len(items))
    assert dataset.num_interactions == sum(len(s) for s in sequences.values())
    for user, (token, sequence) in enumerate(sequences.items()):
        assert dataset.user_ids[user] == token
        assert [dataset.item_ids[i - 1] for i in dataset.sequence(user)] == sequence
    assert dataset.item_texts == [texts[t] for t in dataset.item_ids]  # trailing space kept
    assert result.mismatches == []  # not a catalogued name: nothing to compare


def test_missing_train_file_is_rebuilt_from_histories_with_a_warning(tmp_path: Path, recbench_home: Path) -> None:
    sequences = fixture_sequences()
    write_unisrec(tmp_path / "src", "Toy", sequences, None, with_train=False)
    result = import_local("toy", tmp_path / "src")
    assert any("missing" in m and "1 users" in m for m in result.messages)
    dataset = load_dataset("toy")
    assert [dataset.item_ids[i - 1] for i in dataset.sequence(0)] == sequences["U1"]
    assert [dataset.item_ids[i - 1] for i in dataset.sequence(2)] == sequences["U3"][-52:]


def test_catalogued_name_with_other_counts_reports_both_numbers(tmp_path: Path, recbench_home: Path) -> None:
    write_unisrec(tmp_path / "src", "Scientific", fixture_sequences(), None)
    result = import_local("scientific", tmp_path / "src")
    assert any("users = 4 but datasets.toml expects 8,442" in m for m in result.mismatches)


def test_malformed_line_names_file_and_line(tmp_path: Path, recbench_home: Path) -> None:
    write_unisrec(tmp_path / "src", "Toy", fixture_sequences(), None)
    path = tmp_path / "src" / "Toy.valid.inter"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = "1\tnot numbers\t3\n"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"Toy\.valid\.inter:3"):
        import_local("toy", tmp_path / "src")


def test_inconsistent_train_rows_are_rejected(tmp_path: Path, recbench_home: Path) -> None:
    write_unisrec(tmp_path / "src", "Toy", fixture_sequences(), None)
    path = tmp_path / "src" / "Toy.train.inter"
    lines = path.read_text().splitlines(keepends=True)
    user, history, target = lines[1].rstrip("\n").split("\t")
    lines[1] = f"{user}\t{history}\t{int(target) + 1}\n"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match="inconsistent|does not match"):
        import_local("toy", tmp_path / "src")

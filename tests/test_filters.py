"""Interaction filters (minimum interactions per user / item), checked against a brute-force reference.

The reference works on plain Python lists and removes one offending user or item at a time (the
k-core) or does the single pass literally (users, then items); it shares no code with
:mod:`recbench.data.filters`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recbench.cli import app
from recbench.data.dataset import load_dataset, verify_fingerprint
from recbench.data.download import import_local
from recbench.data.filters import InteractionFilter, apply_filter
from recbench.errors import DataError

runner = CliRunner()


def reference_filter(sequences: list[list[int]], min_user: int, min_item: int, mode: str) -> dict[int, list[int]]:
    """User position -> kept items (in order), by brute force."""
    kept = {user: list(items) for user, items in enumerate(sequences) if items}
    if mode == "once":
        kept = {user: items for user, items in kept.items() if len(items) >= min_user}
        item_counts = Counter(item for items in kept.values() for item in items)
        kept = {user: [item for item in items if item_counts[item] >= min_item] for user, items in kept.items()}
        return {user: items for user, items in kept.items() if items}
    while True:  # remove one offending user or item, recount, until there is none
        short_user = next((user for user, items in kept.items() if len(items) < min_user), None)
        if short_user is not None:
            del kept[short_user]
            continue
        item_counts = Counter(item for items in kept.values() for item in items)
        rare_item = next((item for item, count in item_counts.items() if count < min_item), None)
        if rare_item is None:
            return kept
        kept = {user: [item for item in items if item != rare_item] for user, items in kept.items()}
        kept = {user: items for user, items in kept.items() if items}


def random_sequences(rng: random.Random) -> list[list[int]]:
    users, items = rng.randint(1, 30), rng.randint(1, 20)
    return [[rng.randrange(items) for _ in range(rng.randint(0, 14))] for _ in range(users)]


@pytest.mark.parametrize("mode", ["kcore", "once"])
def test_filter_equals_brute_force_on_random_interactions(mode: str) -> None:
    rng = random.Random(20240501)
    checked_removals = 0
    for _ in range(300):
        sequences = random_sequences(rng)
        min_user, min_item = rng.randint(1, 6), rng.randint(1, 6)
        user_floor = rng.choice([1, 1, 3])
        outcome = apply_filter(sequences, InteractionFilter(min_user, min_item, mode), user_floor=user_floor)
        expected = reference_filter(sequences, max(min_user, user_floor), min_item, mode)
        got = {int(user): items.tolist() for user, items in zip(outcome.kept_users, outcome.sequences)}
        assert got == expected, (sequences, min_user, min_item, user_floor)
        assert outcome.removed_interactions == sum(map(len, sequences)) - sum(map(len, expected.values()))
        checked_removals += outcome.removed_interactions > 0
    assert checked_removals > 100  # the thresholds did remove something in most cases


def test_kcore_meets_both_thresholds_and_once_may_not() -> None:
    sequences = [[0, 1, 2], [0, 1, 3], [0, 1, 2]]  # item 3 has one interaction, every user has three
    kcore = apply_filter(sequences, InteractionFilter(3, 2, "kcore"))
    once = apply_filter(sequences, InteractionFilter(3, 2, "once"))
    # removing item 3 leaves user 1 with two interactions: the k-core removes it in a second round ...
    assert kcore.kept_users.tolist() == [0, 2] and kcore.rounds == 2
    # ... one pass (users first, then items) does not go back
    assert [s.tolist() for s in once.sequences] == [[0, 1, 2], [0, 1], [0, 1, 2]] and once.rounds == 1
    assert apply_filter([[0, 1, 2], [0, 1, 2], [3]], InteractionFilter(2, 2, "once")).kept_users.tolist() == [0, 1]


def test_one_threshold_is_recorded_as_once_and_threshold_one_as_no_filter() -> None:
    assert InteractionFilter(10, 1, "kcore").canonical() == InteractionFilter(10, 1, "once")
    assert InteractionFilter(5, 5, "kcore").canonical() == InteractionFilter(5, 5, "kcore")
    assert InteractionFilter(1, 1, "kcore").canonical() is None
    assert InteractionFilter(5, 5, "kcore").name_suffix() == "u5-i5-kcore"
    assert InteractionFilter(10, 1, "once").name_suffix() == "u10"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ((0, None, None), "--min-user-interactions must be at least 1"),
        ((None, -3, None), "--min-item-interactions must be at least 1"),
        ((None, None, "kcore"), "--filter kcore needs --min-user-interactions and/or --min-item-interactions"),
        ((5, None, "twice"), "--filter must be one of kcore, once"),
    ],
)
def test_bad_filter_options_are_clear_errors(options: tuple, message: str) -> None:
    with pytest.raises(DataError, match=message):
        InteractionFilter.from_options(*options)


def write_log(path: Path, seed: int = 3, skewed: bool = True) -> list[tuple[str, str, int]]:
    """A random interactions CSV (skewed: a long tail of users and items), all timestamps distinct."""
    rng = random.Random(seed)
    users, items = [f"u{k}" for k in range(40)], [f"i{k}" for k in range(25)]
    user_weights = [1 + k for k in range(40)] if skewed else None
    item_weights = [1 + k * k for k in range(25)] if skewed else None
    rows = [(rng.choices(users, user_weights)[0], rng.choices(items, item_weights)[0], time) for time in range(600)]
    rng.shuffle(rows)
    path.write_text("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return rows


def expected_dataset(rows: list[tuple[str, str, int]], min_user: int, min_item: int, mode: str) -> dict:
    """User token -> item tokens after the filter and the canonical 3-interaction minimum, by brute force."""
    by_user: dict[str, list[str]] = {}
    for user, item, _ in sorted(rows, key=lambda row: row[2]):
        by_user.setdefault(user, []).append(item)
    users, vocabulary = list(by_user), sorted({item for _, item, _ in rows})
    coded = [[vocabulary.index(item) for item in by_user[user]] for user in users]
    kept = reference_filter(coded, max(min_user, 3), min_item, mode)  # filters count users from 3 up
    return {users[u]: [vocabulary[i] for i in items] for u, items in kept.items() if len(items) >= 3}


@pytest.mark.parametrize(("min_user", "min_item", "mode"), [(14, 22, "kcore"), (14, 22, "once"), (1, 25, "kcore")])
def test_import_applies_the_filter_and_records_it(
    tmp_path: Path, recbench_home: Path, min_user: int, min_item: int, mode: str
) -> None:
    rows = write_log(tmp_path / "log.csv")
    wanted = InteractionFilter(min_user, min_item, mode)
    result = import_local("toy", tmp_path / "log.csv", interaction_filter=wanted)
    dataset = load_dataset("toy")
    got = {user: [dataset.item_ids[i - 1] for i in dataset.sequence(u)] for u, user in enumerate(dataset.user_ids)}
    assert got == expected_dataset(rows, min_user, min_item, mode)
    assert 0 < len(got) < 40  # the filter removed some users, not all
    assert dataset.manifest["filter"] == wanted.canonical().record()
    assert dataset.manifest["filter_outcome"]["removed_interactions"] > 0
    assert any(m.startswith("filter ") and "removed" in m for m in result.messages)
    verify_fingerprint(dataset)  # the recorded fingerprint (filter included) is reproduced on load


def test_filter_is_part_of_the_identity(tmp_path: Path, recbench_home: Path) -> None:
    write_log(tmp_path / "log.csv", skewed=False)
    plain = import_local("plain", tmp_path / "log.csv").dataset
    assert plain.manifest["filter"] is None
    # every user has >= 3 and every item >= 2 interactions: this filter removes nothing, yet is recorded
    noop = InteractionFilter(3, 2, "kcore")
    same = import_local("same", tmp_path / "log.csv", interaction_filter=noop).dataset
    assert same.manifest["filter_outcome"]["removed_interactions"] == 0
    assert (same.items == plain.items).all() and same.fingerprint != plain.fingerprint
    with pytest.raises(DataError, match=r"dataset 'plain' already exists with no filter, but this import asks for"):
        import_local("plain", tmp_path / "log.csv", interaction_filter=InteractionFilter(14, 1))
    with pytest.raises(DataError, match=r"'same' already exists with users >= 3, items >= 2 .*asks for no filter"):
        import_local("same", tmp_path / "log.csv")
    import_local("same", tmp_path / "log.csv", interaction_filter=noop)  # the same filter again: replaced
    assert load_dataset("plain").fingerprint == plain.fingerprint  # the refused imports left it alone


def test_a_catalogued_name_keeps_its_filter_and_another_filter_gets_its_own_name(
    tmp_path: Path, recbench_home: Path
) -> None:
    rows = write_log(tmp_path / "log.csv")
    recbench_home.mkdir(parents=True, exist_ok=True)
    (recbench_home / "datasets.toml").write_text(
        '[families.logs]\ndescription = "interaction logs"\n\n'
        '[datasets.catlog]\nfamily = "logs"\nfilter = { min_user_interactions = 14, mode = "once" }\n'
    )
    default = import_local("catlog", tmp_path / "log.csv")
    assert default.dataset.name == "catlog" and default.dataset.manifest["filter"]["min_user_interactions"] == 14
    other = import_local("catlog", tmp_path / "log.csv", interaction_filter=InteractionFilter(14, 22, "kcore"))
    assert other.dataset.name == "catlog-u14-i22-kcore" and other.messages[0].startswith("saved as 'catlog-u14-i22")
    dataset = load_dataset("catlog-u14-i22-kcore")
    assert len(dataset.user_ids) == len(expected_dataset(rows, 14, 22, "kcore"))
    none = import_local("catlog", tmp_path / "log.csv", interaction_filter=InteractionFilter(1, 1))
    assert none.dataset.name == "catlog-unfiltered" and none.dataset.manifest["filter"] is None
    assert load_dataset("catlog").manifest["filter"]["mode"] == "once"  # untouched by the other two


def test_cli_filter_options_and_one_line_errors(tmp_path: Path, recbench_home: Path) -> None:
    rows = write_log(tmp_path / "log.csv")
    base = ["download", "toy", "--from", str(tmp_path / "log.csv")]
    result = runner.invoke(app, [*base, "--min-user-interactions", "14", "--min-item-interactions", "22"])
    assert result.exit_code == 0, result.output
    expected = expected_dataset(rows, 14, 22, "kcore")
    assert f"toy: {len(expected)} users" in result.output and "users >= 14, items >= 22 (k-core" in result.output
    manifest = json.loads((recbench_home / "datasets" / "toy" / "manifest.json").read_text())
    assert manifest["filter"] == {"min_user_interactions": 14, "min_item_interactions": 22, "mode": "kcore"}
    listing = runner.invoke(app, ["list", "datasets"], env={"COLUMNS": "400"})
    row = next(line for line in listing.output.splitlines() if line.startswith("│ toy "))
    assert "users >= 14, items >= 22 (k-core" in row

    for extra, message in [
        (["--min-user-interactions", "0"], "--min-user-interactions must be at least 1"),
        (["--min-item-interactions", "-2"], "--min-item-interactions must be at least 1"),
        (["--filter", "once"], "--filter once needs --min-user-interactions"),
        (["--min-user-interactions", "5", "--filter", "sometimes"], "--filter must be one of kcore, once"),
        (["--min-user-interactions", "1000"], "fresh: the filter (users >= 1000) leaves no users"),
        (["--min-user-interactions", "15"], "dataset 'toy' already exists with users >= 14, items >= 22"),
    ]:
        name = "toy" if "already exists" in message else "fresh"
        failed = runner.invoke(app, ["download", name, *base[2:], *extra])
        assert failed.exit_code == 1, (extra, failed.output)
        assert failed.output.startswith("error: ") and message in failed.output, (extra, failed.output)
        assert failed.output.count("\n") == 1 and "Traceback" not in failed.output
    synthetic = runner.invoke(app, ["download", "synthetic-a", "--min-user-interactions", "5"])
    assert synthetic.exit_code == 1 and "SYNTHETIC demo data" in synthetic.output

"""Raw Amazon 2018 -> canonical dataset, checked against an independent transcription of UniSRec."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from recbench.data.amazon import AmazonParams, k_core, preprocess_amazon
from recbench.data.dataset import load_dataset
from recbench.data.download import import_local
from recbench.data.itemtext import clean_text
from recbench.errors import DataError
from tests.raw_fixtures import LONG, clean_text_reference, expected_output, make_raw


def tokens_of(imported) -> list[list[str]]:
    return [[imported.item_ids[i] for i in sequence] for sequence in imported.sequences]


@pytest.fixture
def raw(tmp_path: Path) -> tuple[Path, Path]:
    return make_raw(tmp_path / "raw")


@pytest.mark.parametrize(("fast", "block_bytes"), [(True, 1 << 20), (True, 600), (False, 1 << 20)])
def test_preprocessing_matches_unisrec_transcription(raw: tuple[Path, Path], fast: bool, block_bytes: int) -> None:
    expected = expected_output(*raw)
    assert expected.rounds >= 3 and len(expected.users) > 20  # the fixture exercises several k-core rounds
    imported = preprocess_amazon(*raw, AmazonParams(), "toy", block_bytes=block_bytes, fast=fast)
    assert imported.user_ids == expected.users
    assert tokens_of(imported) == expected.sequences
    assert imported.item_ids == expected.items
    assert imported.item_texts == [expected.texts[i] for i in expected.items]
    assert imported.details["stats"]["k_core_rounds"] == expected.rounds


def test_text_cleaning_cases_reach_the_dataset(raw: tuple[Path, Path]) -> None:
    imported = preprocess_amazon(*raw)
    text = dict(zip(imported.item_ids, imported.item_texts))
    assert text["I00"] == "Plain title. Arts Paint. Acme. "
    assert text["I01"] == "Fish & Chips deluxe. Food. Cod & Co. "
    assert text["I02"] == "Say hinow. . Q. "  # quotes/newlines removed; empty list -> '.'
    assert text["I11"] == "Ends with dots. A. B. Dots. "  # trailing dots -> one dot
    assert text["I04"] == " Long. L. "  # >= 2000 characters -> empty field, its space stays
    assert text["I05"] == "First record wins. One. "  # first meta record; no category
    assert text["I06"] == "Dict brand. D. {'name': 'Acme', 'id': 1}. "
    assert text["I07"] == ". Empty title. . "
    assert text["I08"] == ".. Only dots. "
    assert text["I09"] == "Null brand. N. "
    assert text["I10"] == "No title. B. "


@pytest.mark.parametrize(
    "raw_value", ["", ".", "...", "a...", "x.", ["A", "B."], {"k": 1}, LONG, LONG[:-1], 'q"\r\n', "&lt;b&gt;"]
)
def test_clean_text_equals_unisrec_loop(raw_value: object) -> None:
    assert clean_text(raw_value) == clean_text_reference(raw_value)


def test_malformed_lines_are_skipped_and_reported_with_line_numbers(raw: tuple[Path, Path]) -> None:
    expected = expected_output(*raw)
    imported = preprocess_amazon(*raw)
    warning = next(n for n in imported.notes if "malformed" in n)
    assert f"{len(expected.malformed_lines)} malformed lines" in warning
    for line in expected.malformed_lines:
        assert f"{raw[0].name}:{line}:" in warning
    assert imported.details["stats"]["malformed_lines"] == len(expected.malformed_lines) == 4


def test_same_timestamp_interactions_keep_file_order(tmp_path: Path) -> None:
    rows = [f"I{k},U0,5.0,{100 if k in (2, 4, 3) else k}" for k in (9, 4, 2, 3, 1, 5)]  # 4, 2, 3 tie at t=100
    rows += [f"I{k},U{u},5.0,{k}" for u in (1, 2, 3, 4) for k in (1, 2, 3, 4, 5, 9)]
    directory = tmp_path / "raw"
    directory.mkdir()
    (directory / "T.csv").write_text("\n".join(rows) + "\n")
    with gzip.open(directory / "meta_T.json.gz", "wt") as f:
        f.writelines(json.dumps({"asin": f"I{k}", "title": f"t{k}"}) + "\n" for k in range(10))
    imported = preprocess_amazon(directory / "T.csv", directory / "meta_T.json.gz")
    assert tokens_of(imported)[0] == ["I1", "I5", "I9", "I4", "I2", "I3"]
    assert "first occurrence in the ratings file" in imported.details["preprocess"]["tie_order"]


def test_k_core_iterates_until_stable() -> None:
    # k = 2: item 3 has 1 -> user 1 falls to 1 -> item 2 falls to 1 -> user 0 falls to 1: four rounds
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    items = np.array([0, 2, 2, 3, 0, 1, 0, 1])
    kept, rounds = k_core(users, items, 2, 2)
    assert kept.tolist() == [4, 5, 6, 7] and rounds == 4


def test_import_of_a_raw_directory_checks_counts_against_the_catalogue(
    raw: tuple[Path, Path], recbench_home: Path, tmp_path: Path
) -> None:
    expected = expected_output(*raw)
    result = import_local("toy-raw", raw[0].parent)
    dataset = load_dataset("toy-raw")
    assert dataset.counts.users == len(expected.users) and result.mismatches == []
    assert dataset.manifest["source"]["format"] == "amazon"
    assert dataset.manifest["preprocess"]["user_k"] == 5
    # Under a catalogued name the raw files are looked up by its full name, and counts are compared.
    scientific = tmp_path / "sci"
    make_raw(scientific, "Industrial_and_Scientific")
    result = import_local("scientific", scientific)
    assert any(f"users = {len(expected.users)} but datasets.toml expects 8,442" in m for m in result.mismatches)


def test_truncated_meta_gzip_is_reported_not_preprocessed(raw: tuple[Path, Path]) -> None:
    data = raw[1].read_bytes()
    raw[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"meta_Toy_Category\.json\.gz: corrupt or truncated gzip"):
        preprocess_amazon(*raw)


def test_malformed_meta_line_names_file_and_line(raw: tuple[Path, Path]) -> None:
    with gzip.open(raw[1], "at") as f:
        f.write('{"asin": "Q1", "title": \n')
    with pytest.raises(DataError, match=r"meta_Toy_Category\.json\.gz:\d+: malformed JSON"):
        preprocess_amazon(*raw)


def test_fast_parser_equals_exact_parser_or_declines() -> None:
    from recbench.data.amazon import _parse_exact, _parse_fast

    clean = "I1,U1,5.0,100\nI2,U 2,4,0101 \r\nI3,,1.5,7\n"
    fast, exact = _parse_fast(clean.encode(), clean), _parse_exact(clean, Path("x.csv"), 1)
    assert fast is not None and exact.malformed == []
    for a, b in zip(
        (fast.items, fast.users, fast.rating, fast.time), (exact.items, exact.users, exact.rating, exact.time)
    ):
        assert list(a) == list(b)
    for dirty in (
        " I1,U1,5.0,1\n",
        "I1,U1\r,5.0,1\n",
        "I1,U1,5.0,1,x\n",
        "I1,U1,five,1\n",
        "I1,U1,5.0,1.0\n",
        "\ufeffI1,U1,5.0,1\n",
        "I1,U1,5,1\n\n",
    ):
        assert _parse_fast(dirty.encode(), dirty) is None, dirty


def test_exact_duplicates_follow_python_set_semantics() -> None:
    from recbench.data.amazon import Ratings, first_occurrences

    rows = [
        ("u1", "i1", 5.0, 1),
        ("u1", "i1", 5.0, 1),
        ("u1", "i1", float("nan"), 1),
        ("u1", "i1", float("nan"), 1),
        ("u1", "i1", -0.0, 2),
        ("u1", "i1", 0.0, 2),
        ("u1", "i1", 5.0, 2),
        ("u2", "i1", 5.0, 1),
        ("u1", "i2", 5.0, 1),
    ]
    seen: dict[tuple, None] = {}
    expected = [k for k, row in enumerate(rows) if row not in seen and not seen.setdefault(row, None)]
    hashes = {t: np.uint64(0x9E3779B97F4A7C15 * (k + 1) % 2**64) for k, t in enumerate(["u1", "u2", "i1", "i2"])}
    ratings = Ratings(
        item_hash=np.array([hashes[r[1]] for r in rows], dtype=np.uint64),
        user_hash=np.array([hashes[r[0]] for r in rows], dtype=np.uint64),
        rating=np.array([r[2] for r in rows]),
        time=np.array([r[3] for r in rows], dtype=np.int64),
        lines=len(rows),
        malformed=0,
        malformed_examples=[],
    )
    assert first_occurrences(ratings).tolist() == expected == [0, 2, 3, 4, 6, 7, 8]


def test_a_hash_collision_that_matters_is_an_error_not_a_silent_merge(
    raw: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import recbench.data.amazon as amazon

    weak = lambda tokens: np.array([len(t) % 2 for t in tokens], dtype=np.uint64)  # noqa: E731 - everything collides
    monkeypatch.setattr(amazon, "token_hash", weak)
    with pytest.raises(DataError, match="share a 64-bit hash"):
        preprocess_amazon(*raw)

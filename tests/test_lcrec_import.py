"""LC-Rec style import and UniSRec's item-text cleaning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recbench.data.dataset import load_dataset
from recbench.data.download import import_local
from recbench.data.ingest import clean_text, item_text
from recbench.errors import DataError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Plain title", "Plain title."),
        ("Ends with dots...", "Ends with dots."),
        (["Tools", "Hand Tools"], "Tools Hand Tools."),
        ('Say "hi"\nnow\r', "Say hinow."),
        ("Fish &amp; Chips", "Fish & Chips."),
        ({"a": 1}, "{'a': 1}."),
        ("", "."),
        ("x" * 1999, ""),  # 1999 + the final dot = 2000 characters -> dropped
    ],
)
def test_clean_text_follows_unisrec(raw: object, expected: str) -> None:
    assert clean_text(raw) == expected


def test_item_text_orders_title_categories_brand_and_skips_missing_fields() -> None:
    assert item_text({"brand": "Acme", "title": "Hammer", "description": "ignored"}) == "Hammer. Acme. "
    assert item_text({}) == ""


def write_lcrec(directory: Path, with_text: bool = True) -> None:
    directory.mkdir()
    (directory / "Toy.inter.json").write_text(
        json.dumps({"0": [0, 1, 2, 3], "1": [2, 1, 0], "2": [3, 3, 1, 2, 0]}, indent=4)
    )
    (directory / "Toy.item2id").write_text("".join(f"ASIN{i}\t{i}\n" for i in range(4)))
    (directory / "Toy.user2id").write_text("".join(f"U{i}\t{i}\n" for i in range(3)))
    if with_text:
        (directory / "Toy.item.json").write_text(
            json.dumps({str(i): {"title": f"Item {i}", "brand": "B"} for i in range(3)})
        )


def test_lcrec_import_keeps_order_tokens_and_text(tmp_path: Path, recbench_home: Path) -> None:
    write_lcrec(tmp_path / "src")
    result = import_local("toy", tmp_path / "src")
    dataset = load_dataset("toy")
    assert (dataset.num_users, dataset.num_items, dataset.num_interactions) == (3, 4, 12)
    assert [dataset.item_ids[i - 1] for i in dataset.sequence(2)] == ["ASIN3", "ASIN3", "ASIN1", "ASIN2", "ASIN0"]
    assert dataset.user_ids == ["U0", "U1", "U2"]
    assert dataset.item_texts[0] == "Item 0. B. " and dataset.item_texts[3] == ""
    assert any("1 items have none" in m for m in result.messages)


def test_lcrec_without_item_json_is_id_only(tmp_path: Path, recbench_home: Path) -> None:
    write_lcrec(tmp_path / "src", with_text=False)
    result = import_local("toy", tmp_path / "src")
    assert load_dataset("toy").item_texts is None and any("ID-only" in m for m in result.messages)


def test_malformed_json_names_file_and_line(tmp_path: Path, recbench_home: Path) -> None:
    write_lcrec(tmp_path / "src")
    (tmp_path / "src" / "Toy.inter.json").write_text('{\n "0": [0, 1,\n')
    with pytest.raises(DataError, match=r"Toy\.inter\.json:\d+: malformed JSON"):
        import_local("toy", tmp_path / "src")


def test_non_utf8_bytes_name_the_file(tmp_path: Path, recbench_home: Path) -> None:
    write_lcrec(tmp_path / "src")
    (tmp_path / "src" / "Toy.item2id").write_bytes(b"ASIN0\t0\n\xff\xfe\t1\n")
    with pytest.raises(DataError, match=r"Toy\.item2id:2: not valid UTF-8"):
        import_local("toy", tmp_path / "src")

"""RecBole atomic files, plain tables, LC-Rec partial text and format detection, on generated files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recbench.data.dataset import load_dataset
from recbench.data.download import import_local
from recbench.data.formats import ImportOptions
from recbench.data.ingest import detect_format
from recbench.errors import DataError

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def sequence_tokens(name: str, user: str) -> list[str]:
    dataset = load_dataset(name)
    return [dataset.item_ids[i - 1] for i in dataset.sequence(dataset.user_ids.index(user))]


def write_recbole(directory: Path, rows: list[str], item_rows: list[str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "toy.inter").write_text(INTER_HEADER + "".join(r + "\n" for r in rows))
    if item_rows is not None:
        header = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        (directory / "toy.item").write_text(header + "".join(r + "\n" for r in item_rows))
    return directory


def test_recbole_sorts_by_timestamp_keeps_ties_in_file_order_and_drops_duplicate_lines(
    tmp_path: Path, recbench_home: Path
) -> None:
    rows = ["u1\ti3\t5\t30", "u1\ti1\t4\t10", "u1\ti2\t3\t20", "u1\ti5\t3\t20", "u1\ti1\t4\t10", "u1\ti4\t1\t40"]
    rows += [f"u2\ti{k}\t5\t{k}" for k in (2, 1, 3)]
    items = ["i1\tFirst &amp; best\t1995\tDrama Comedy", "i2\tSecond\t1996\tAction", "i9\tUnused\t2000\tNone"]
    result = import_local("toy", write_recbole(tmp_path / "src", rows, items))
    assert sequence_tokens("toy", "u1") == ["i1", "i2", "i5", "i3", "i4"]  # i2 and i5 tie at 20: file order
    assert any("dropped 1 exact duplicate lines of toy.inter (first: line 6)" in m for m in result.messages)
    texts = dict(zip(load_dataset("toy").item_ids, load_dataset("toy").item_texts))
    assert texts["i1"] == "First & best. Drama Comedy. " and texts["i3"] == ""  # token_seq fields, cleaned as UniSRec


def test_recbole_text_fields_can_be_chosen(tmp_path: Path, recbench_home: Path) -> None:
    rows = [f"u1\ti{k}\t5\t{k}" for k in (1, 2, 3)]
    src = write_recbole(tmp_path / "src", rows, ["i1\tA film\t1995\tDrama"])
    import_local("toy", src, options=ImportOptions(text_fields=("release_year",)))
    assert load_dataset("toy").item_texts[0] == "1995. "


def test_table_with_named_columns_dates_and_text_table(tmp_path: Path, recbench_home: Path) -> None:
    table = tmp_path / "log.tsv"
    table.write_text(
        "who\twhat\twhen\n"
        + "".join(f"a\tx{k}\t2020-01-0{k}\n" for k in (3, 1, 2))
        + "b\tx1\t2020-01-01\nb\tx2\t2020-01-01\nb\tx1\t2020-01-05\n"
    )
    texts = tmp_path / "items.csv"
    texts.write_text('what,title,brand\nx1,"Hammer, big",Acme\nx2,Saw,\nx9,Unused,Z\n')
    options = ImportOptions(user_col="who", item_col="what", time_col="when", item_text=texts)
    result = import_local("toy", table, options=options)
    assert sequence_tokens("toy", "a") == ["x1", "x2", "x3"]
    assert sequence_tokens("toy", "b") == ["x1", "x2", "x1"]  # tie in file order, repeat kept
    dataset = load_dataset("toy")
    assert dict(zip(dataset.item_ids, dataset.item_texts)) == {"x1": "Hammer, big. Acme. ", "x2": "Saw. ", "x3": ""}
    assert any("for 2 of 3 items" in m for m in result.messages)


def test_table_columns_are_found_by_common_names_and_a_text_column_is_kept_as_is(
    tmp_path: Path, recbench_home: Path
) -> None:
    table = tmp_path / "log.csv"
    table.write_text("user_id,item_id,timestamp,rating\n" + "".join(f"u,i{k},{k},5\n" for k in range(4)))
    texts = tmp_path / "items.jsonl"
    texts.write_text("".join(json.dumps({"item_id": f"i{k}", "text": f"Raw text {k}..."}) + "\n" for k in range(4)))
    import_local("toy", table, options=ImportOptions(item_text=texts))
    assert load_dataset("toy").item_texts[0] == "Raw text 0..."


def test_parquet_tables_are_read(tmp_path: Path, recbench_home: Path) -> None:
    pytest.importorskip("pyarrow")
    import pandas as pd

    pd.DataFrame({"user": ["u"] * 3, "item": [3, 1, 2], "time": [3, 1, 2]}).to_parquet(tmp_path / "log.parquet")
    import_local("toy", tmp_path / "log.parquet")
    assert sequence_tokens("toy", "u") == ["1", "2", "3"]


def test_lcrec_partial_text_is_used_only_when_asked(tmp_path: Path, recbench_home: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Arts.inter.json").write_text(json.dumps({"0": [0, 1, 2, 3], "1": [3, 2, 1]}))
    (src / "Arts.item2id").write_text("".join(f"A{i}\t{i}\n" for i in range(4)))
    (src / "Arts.item.partial.json").write_text(
        json.dumps({"0": {"title": "Paint", "brand": "Acme", "asin": "A0", "lcrec_id": 7}})
    )
    result = import_local("arts-ids", src)
    assert load_dataset("arts-ids").item_texts is None
    assert any("ID-only" in m and "1 of 4 items" in m and "--partial-text" in m for m in result.messages)
    import_local("arts-text", src, options=ImportOptions(partial_text=True))
    assert load_dataset("arts-text").item_texts == ["Paint. Acme. ", "", "", ""]


def test_formats_are_detected_from_the_files(tmp_path: Path) -> None:
    cases = {
        "unisrec": ["X.test.inter"],
        "lcrec": ["X.inter.json"],
        "amazon": ["meta_X.json.gz", "X.csv"],
        "recbole": ["X.inter"],
        "table": ["log.parquet"],
    }
    for fmt, files in cases.items():
        directory = tmp_path / fmt
        directory.mkdir()
        for name in files:
            (directory / name).write_text("")
        assert detect_format(directory) == fmt
    assert detect_format(tmp_path / "recbole" / "X.inter") == "recbole"


def test_an_option_the_format_does_not_use_is_an_error(tmp_path: Path, recbench_home: Path) -> None:
    src = write_recbole(tmp_path / "src", [f"u\ti{k}\t5\t{k}" for k in range(3)])
    with pytest.raises(DataError, match="--partial-text does not apply to the recbole format"):
        import_local("toy", src, options=ImportOptions(partial_text=True))

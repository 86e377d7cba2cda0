"""The bad-input catalogue: each mistake gets one clear DataError / UnknownNameError."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from recbench.data.download import download, download_datasets, import_local
from recbench.data.formats import ImportOptions
from recbench.errors import DataError, UnknownNameError


def test_unknown_dataset_suggests_the_closest_names(recbench_home: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: scientific") as err:
        download_datasets(["scientifc"])
    assert "scientific" in err.value.suggestions


def test_misspelt_second_name_fails_before_anything_is_downloaded(recbench_home: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: arts"):
        download_datasets(["synthetic-a", "artz"])
    assert not (recbench_home / "datasets").exists()


def test_missing_file_is_named(tmp_path: Path, recbench_home: Path) -> None:
    (tmp_path / "raw").mkdir()
    with gzip.open(tmp_path / "raw" / "meta_Toy.json.gz", "wt") as f:
        f.write(json.dumps({"asin": "A"}) + "\n")
    with pytest.raises(DataError, match=r"missing file .*raw/Toy\.csv"):
        import_local("toy", tmp_path / "raw")
    with pytest.raises(DataError, match="does not exist"):
        import_local("toy", tmp_path / "nowhere")


def test_malformed_line_names_file_and_line(tmp_path: Path, recbench_home: Path) -> None:
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ti1\t1\nu\ti2\nu\ti3\t3\n")
    with pytest.raises(DataError, match=r"toy\.inter:3: expected 3 fields"):
        import_local("toy", tmp_path / "toy.inter")
    (tmp_path / "log.csv").write_text("user,item,timestamp\nu,i1,1\nu,i2,soon\n")
    with pytest.raises(DataError, match=r"log\.csv:3: timestamp 'soon'"):
        import_local("toy", tmp_path / "log.csv")


def test_dataset_empty_after_filtering_is_an_error(tmp_path: Path, recbench_home: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "Toy.csv").write_text("".join(f"I{k},U{k % 3},5.0,{k}\n" for k in range(12)))
    with gzip.open(tmp_path / "raw" / "meta_Toy.json.gz", "wt") as f:
        f.writelines(json.dumps({"asin": f"I{k}"}) + "\n" for k in range(12))
    with pytest.raises(DataError, match="toy: empty after filtering"):
        import_local("toy", tmp_path / "raw")
    (tmp_path / "log.csv").write_text("user,item,timestamp\nu,i1,1\nu,i2,2\nv,i1,1\n")  # nobody has 3 interactions
    with pytest.raises(DataError, match="empty after filtering"):
        import_local("toy", tmp_path / "log.csv")


def test_text_table_matching_no_items_is_an_error(tmp_path: Path, recbench_home: Path) -> None:
    (tmp_path / "log.csv").write_text("user,item,timestamp\n" + "".join(f"u,i{k},{k}\n" for k in range(3)))
    (tmp_path / "items.csv").write_text("item,title\nB001,Hammer\nB002,Saw\n")
    with pytest.raises(DataError, match=r"items\.csv: its 2 items .* match none of the 3 interacted items"):
        import_local("toy", tmp_path / "log.csv", options=ImportOptions(item_text=tmp_path / "items.csv"))


def test_non_utf8_bytes_name_file_and_line(tmp_path: Path, recbench_home: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "Toy.csv").write_bytes(b"I1,U1,5.0,1\nI2,U\xff1,5.0,2\n")
    with gzip.open(tmp_path / "raw" / "meta_Toy.json.gz", "wt") as f:
        f.write(json.dumps({"asin": "I1"}) + "\n")
    with pytest.raises(DataError, match=r"Toy\.csv:2: not valid UTF-8"):
        import_local("toy", tmp_path / "raw")
    (tmp_path / "log.csv").write_bytes(b"user,item,timestamp\nu,i1,1\nu,\xe9,2\n")
    with pytest.raises(DataError, match=r"log\.csv:3: not valid UTF-8"):
        import_local("toy", tmp_path / "log.csv")


def test_import_options_without_from_are_rejected(recbench_home: Path) -> None:
    with pytest.raises(DataError, match="only apply with --from"):
        download("synthetic-a", options=ImportOptions(user_col="who"))

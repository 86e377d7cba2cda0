"""Embedding caches: a damaged or mismatched entry is named and encoded again, never used; imports are refused."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recbench.cli import app
from recbench.data.dataset import Dataset, build_dataset, save_dataset
from recbench.data.encode import (
    EncoderSpec,
    _entry_record,
    _store,
    cache_path,
    encode_texts_cached,
    export_feat,
    item_embeddings,
)
from recbench.errors import DataError
from recbench.files import exclusive_lock
from tests.conftest import make_cyclic_dataset


class CountingEncoder:
    """text -> (length, vowels, words); counts the texts it encoded; optionally slow or poisoned."""

    def __init__(self, delay: float = 0.0, nan_text: str | None = None) -> None:
        self.seen, self.delay, self.nan_text = 0, delay, nan_text

    def encode(self, sentences, batch_size=32, convert_to_numpy=True, show_progress_bar=False):
        time.sleep(self.delay)
        self.seen += len(sentences)
        rows = [[len(s), sum(c in "aeiou" for c in s), len(s.split())] for s in sentences]
        out = np.array(rows, dtype=np.float32)
        out[[s == self.nan_text for s in sentences]] = np.nan
        return out


def _npy(array: np.ndarray) -> bytes:
    np.save(buffer := io.BytesIO(), array)
    return buffer.getvalue()


def _forge(path: Path, array: np.ndarray) -> None:
    """Replace an entry's table and make its sidecar agree (digest, shape): only the content checks can tell."""
    data = _npy(array)
    path.write_bytes(data)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar.update(sha256=hashlib.sha256(data).hexdigest(), shape=list(np.shape(array)))
    path.with_suffix(".json").write_text(json.dumps(sidecar))


def _shuffled(table: np.ndarray) -> np.ndarray:
    out = table.copy()
    out[1:] = table[1:][::-1]
    return out


def _with_nan(table: np.ndarray) -> np.ndarray:
    out = table.copy()
    out[4, 1] = np.nan
    return out


def _row0(table: np.ndarray) -> np.ndarray:
    out = table.copy()
    out[0] = 1
    return out


def _edit_sidecar(change: Callable[[dict], None]) -> Callable[[Path, np.ndarray], None]:
    def edit(path: Path, table: np.ndarray) -> None:
        sidecar = json.loads(path.with_suffix(".json").read_text())
        change(sidecar)
        path.with_suffix(".json").write_text(json.dumps(sidecar))

    return edit


CACHE_DAMAGE: dict[str, tuple[Callable[[Path, np.ndarray], None], str]] = {
    "rows shuffled in place": (
        lambda p, t: p.write_bytes(_npy(_shuffled(t))),
        "does not match the sha256 in its sidecar",
    ),
    "wrong shape": (lambda p, t: p.write_bytes(_npy(np.zeros((36, 3), np.float32))), "does not match the sha256"),
    "wrong shape, sidecar updated": (
        lambda p, t: _forge(p, np.zeros((36, 3), np.float32)),
        r"shape \(36, 3\), expected \(31, d\)",
    ),
    "one dimensional": (lambda p, t: _forge(p, t[:, 0].copy()), "expected a 2-D float32 array"),
    "float64": (lambda p, t: _forge(p, t.astype(np.float64)), "expected a 2-D float32 array, found float64"),
    "a pickled object array": (lambda p, t: _forge(p, np.array([{"x": 1}], dtype=object)), r"not a \.npy array"),
    "empty file": (lambda p, t: p.write_bytes(b""), "does not match the sha256"),
    "a NaN row": (lambda p, t: _forge(p, _with_nan(t)), "row 4 holds NaN or infinite values"),
    "row 0 not zeros": (lambda p, t: _forge(p, _row0(t)), r"row 0 \(padding\) is not zeros"),
    "sidecar missing": (lambda p, t: p.with_suffix(".json").unlink(), "no sidecar"),
    "sidecar garbage": (lambda p, t: p.with_suffix(".json").write_text("{nope"), "unreadable sidecar"),
    "sidecar of an older recbench": (_edit_sidecar(lambda s: s.pop("sha256")), "older recbench"),
    "sidecar of other texts": (_edit_sidecar(lambda s: s.update(texts_sha256="0" * 64)), "another texts digest"),
    "sidecar of another pooling": (_edit_sidecar(lambda s: s.update(pooling="cls")), "another pooling"),
}
# the NaN row is forged consistently, so the sidecar digest cannot be what catches it
assert "sha256" not in CACHE_DAMAGE["a NaN row"][1]


@pytest.mark.parametrize("damage", list(CACHE_DAMAGE))
def test_a_damaged_entry_is_named_and_encoded_again(
    damage: str, recbench_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = make_cyclic_dataset()
    encoder = CountingEncoder()
    table, _ = item_embeddings(dataset, encoder=encoder, show_progress=False)
    edit, message = CACHE_DAMAGE[damage]
    edit(cache_path(dataset, EncoderSpec()), table)
    capsys.readouterr()
    again, cached = item_embeddings(dataset, encoder=encoder, show_progress=False)
    err = capsys.readouterr().err
    assert not cached and encoder.seen == 2 * dataset.num_items and np.array_equal(again, table)
    assert err.count("\n") == 1 and err.startswith("WARNING: embedding cache ") and "encoding again" in err
    assert re.search(message, err), err
    assert item_embeddings(dataset, encoder=encoder, show_progress=False)[1]  # repaired: a hit again


def test_an_entry_for_items_in_another_order_is_caught_by_the_text_digest(recbench_home: Path, capsys) -> None:
    dataset = make_cyclic_dataset()
    texts = list(reversed(dataset.item_texts))  # the same items, their texts in another order
    sequences = [dataset.sequence(u) - 1 for u in range(dataset.num_users)]
    other, _ = build_dataset("toy", dataset.user_ids, sequences, dataset.item_ids, texts)
    encoder = CountingEncoder()
    table, _ = item_embeddings(dataset, encoder=encoder, show_progress=False)
    item_embeddings(other, encoder=encoder, show_progress=False)
    for suffix in (".npy", ".json"):
        source = cache_path(other, EncoderSpec()).with_suffix(suffix)
        cache_path(dataset, EncoderSpec()).with_suffix(suffix).write_bytes(source.read_bytes())
    capsys.readouterr()
    again, cached = item_embeddings(dataset, encoder=encoder, show_progress=False)
    assert not cached and np.array_equal(again, table)
    assert "records another" in capsys.readouterr().err


def test_an_encoder_giving_nan_is_an_error_naming_the_item(recbench_home: Path) -> None:
    dataset = make_cyclic_dataset()
    encoder = CountingEncoder(nan_text=dataset.item_texts[6])
    with pytest.raises(DataError, match=r"encoder output for item 7 \('i\d+'\) holds NaN"):
        item_embeddings(dataset, encoder=encoder, show_progress=False)
    assert not cache_path(dataset, EncoderSpec()).exists()


# --- imported tables -----------------------------------------------------------------------------
def _import(tmp_path: Path, table: np.ndarray) -> object:
    export_feat(table, tmp_path / "toy.feat1CLS")
    return CliRunner().invoke(app, ["encode", "toy", "--import", str(tmp_path / "toy.feat1CLS")])


def _table(dataset: Dataset) -> np.ndarray:
    table = np.random.default_rng(0).normal(size=(dataset.num_items + 1, 4)).astype(np.float32)
    table[0] = 0
    return table


def test_an_imported_table_with_a_nan_row_is_refused(tmp_path: Path, recbench_home: Path) -> None:
    dataset = make_cyclic_dataset()
    save_dataset(dataset)
    table = _table(dataset)
    table[5, 2] = np.nan
    result = _import(tmp_path, table)
    assert result.exit_code == 1 and "Traceback" not in result.output and result.output.count("\n") == 1
    assert result.output.startswith("error: ") and "row 4 (item id 5, 'i" in result.output and "NaN" in result.output
    assert not cache_path(dataset, EncoderSpec()).exists()


def test_an_empty_feat_file_is_refused(tmp_path: Path, recbench_home: Path) -> None:
    save_dataset(make_cyclic_dataset())
    (tmp_path / "toy.feat1CLS").write_bytes(b"")
    result = CliRunner().invoke(app, ["encode", "toy", "--import", str(tmp_path / "toy.feat1CLS")])
    assert result.exit_code == 1 and result.output.startswith("error: ") and "empty file" in result.output


@pytest.mark.parametrize("damage", ["rows shuffled in place", "a NaN row", "wrong shape, sidecar updated"])
def test_a_damaged_imported_entry_is_an_error_not_a_recompute(damage: str, tmp_path: Path, recbench_home: Path) -> None:
    dataset = make_cyclic_dataset()
    save_dataset(dataset)
    table = _table(dataset)
    assert _import(tmp_path, table).exit_code == 0
    CACHE_DAMAGE[damage][0](cache_path(dataset, EncoderSpec()), table)
    encoder = CountingEncoder()
    with pytest.raises(DataError, match=r"imported from .*toy\.feat1CLS and cannot be encoded again") as error:
        item_embeddings(dataset, encoder=encoder, show_progress=False)
    assert encoder.seen == 0 and "\n" not in str(error.value)


# --- the content-keyed cache ---------------------------------------------------------------------
TEXTS = [f"text number {i} about things" for i in range(12)]


@pytest.mark.parametrize(
    "damage", ["rows shuffled in place", "a NaN row", "sidecar missing", "wrong shape, sidecar updated"]
)
def test_the_content_keyed_cache_is_checked_the_same_way(damage: str, recbench_home: Path, capsys) -> None:
    encoder = CountingEncoder()
    vectors = encode_texts_cached(TEXTS, encoder, "enc-1")
    assert np.array_equal(encode_texts_cached(TEXTS, encoder, "enc-1"), vectors) and encoder.seen == len(TEXTS)
    (path,) = (recbench_home / "embeddings" / "_by_content").glob("*.npy")
    edit = CACHE_DAMAGE[damage][0]
    edit(path, vectors)
    capsys.readouterr()
    again = encode_texts_cached(TEXTS, encoder, "enc-1")
    assert np.array_equal(again, vectors) and encoder.seen == 2 * len(TEXTS)
    assert capsys.readouterr().err.startswith("WARNING: embedding cache ")


def test_the_content_keyed_cache_refuses_a_nan_encoding(recbench_home: Path) -> None:
    with pytest.raises(DataError, match=r"encoder output for text 3 \('text number 3"):
        encode_texts_cached(TEXTS, CountingEncoder(nan_text=TEXTS[3]), "enc-1")


# --- one encoder per entry -----------------------------------------------------------------------
def test_a_second_process_waits_for_the_first_then_gets_its_result(recbench_home: Path) -> None:
    dataset = make_cyclic_dataset()
    encoder = CountingEncoder(delay=0.5)
    results: list[tuple[np.ndarray, bool]] = []
    threads = [
        threading.Thread(target=lambda: results.append(item_embeddings(dataset, encoder=encoder, show_progress=False)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(10)
    assert encoder.seen == dataset.num_items  # encoded once
    assert sorted(cached for _, cached in results) == [False, True] and np.array_equal(results[0][0], results[1][0])


def test_an_entry_being_written_is_not_read_half_way(recbench_home: Path) -> None:
    dataset = make_cyclic_dataset()
    path = cache_path(dataset, EncoderSpec())
    encoder = CountingEncoder()
    results: list[tuple[np.ndarray, bool]] = []
    with exclusive_lock(path.with_suffix(".lock"), "test"):  # another process is encoding this entry
        waiter = threading.Thread(
            target=lambda: results.append(item_embeddings(dataset, encoder=encoder, show_progress=False))
        )
        waiter.start()
        time.sleep(0.3)
        assert not results
        # other entries are not held up
        item_embeddings(dataset, EncoderSpec(pooling="cls"), encoder=CountingEncoder(), show_progress=False)
        table = _table(dataset)
        _store(path, table, _entry_record(dataset, EncoderSpec()))  # what the other process writes
    waiter.join(10)
    assert results and results[0][1] and np.array_equal(results[0][0], table) and encoder.seen == 0

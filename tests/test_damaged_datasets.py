"""Damaged datasets: an interrupted save never loses the old copy, and every load names a damaged file."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recbench.cli import app
from recbench.data.dataset import (
    Dataset,
    dataset_lock,
    downloaded_names,
    is_downloaded,
    load_dataset,
    read_manifest,
    save_dataset,
    verify_fingerprint,
)
from recbench.errors import DataError
from recbench.files import exclusive_lock
from tests.conftest import make_cyclic_dataset


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs in the dying process (no except Exception handler)."""


def _kill_after_first_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patch ``os.replace`` so that the second call (the rename into place) kills the saver."""
    real, calls = os.replace, []

    def replace(src: object, dst: object) -> None:
        calls.append((src, dst))
        if len(calls) > 1:
            raise Killed
        real(src, dst)

    monkeypatch.setattr("recbench.data.dataset.os.replace", replace)


def _dot_entries(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.name.startswith(".") and p.is_dir())


# --- replacing a dataset -------------------------------------------------------------------------
def test_a_kill_between_the_two_renames_keeps_the_old_dataset(
    toy_dataset: Dataset, recbench_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = recbench_home / "datasets"
    newer = make_cyclic_dataset(seed=1)
    with monkeypatch.context() as patch, pytest.raises(Killed):
        _kill_after_first_replace(patch)
        save_dataset(newer)
    assert not (base / "toy").exists() and [n for n in _dot_entries(base) if n.startswith(".toy.old-")]
    loaded = load_dataset("toy")  # restores the old copy
    assert loaded.fingerprint == toy_dataset.fingerprint and np.array_equal(loaded.items, toy_dataset.items)
    assert _dot_entries(base) == [] and downloaded_names() == ["toy"]


def test_listing_and_is_downloaded_restore_an_interrupted_replacement(
    toy_dataset: Dataset, recbench_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch, pytest.raises(Killed):
        _kill_after_first_replace(patch)
        save_dataset(make_cyclic_dataset(seed=1))
    assert is_downloaded("toy")
    assert load_dataset("toy").fingerprint == toy_dataset.fingerprint


def test_leftover_copies_are_never_listed_and_are_removed_once_unlocked(
    toy_dataset: Dataset, recbench_home: Path
) -> None:
    base = recbench_home / "datasets"
    for leftover in (".toy.tmp-k1ll3d", ".toy.old-123-abcd"):  # what a killed save can leave behind
        (base / leftover).mkdir()
        (base / leftover / "manifest.json").write_text((base / "toy" / "manifest.json").read_text())
    (base / ".other.tmp-x").mkdir()  # a temp copy of a dataset that was never completed
    with exclusive_lock(base / ".toy.lock", "dataset 'toy'"):  # another process is saving 'toy'
        assert downloaded_names() == ["toy"]
        assert len(_dot_entries(base)) == 3  # its files are left alone while it may use them
    result = CliRunner().invoke(app, ["list", "datasets"])
    assert result.exit_code == 0, result.output
    assert ".toy" not in result.output and "old-" not in result.output and "tmp-" not in result.output
    assert downloaded_names() == ["toy"]
    save_dataset(make_cyclic_dataset(seed=2))  # a save of 'toy' removes what earlier saves of 'toy' left
    assert _dot_entries(base) == [".other.tmp-x"]


def test_a_second_save_of_one_name_waits_for_the_first(toy_dataset: Dataset, recbench_home: Path) -> None:
    newer = make_cyclic_dataset(seed=3)
    done = threading.Event()

    def save() -> None:
        save_dataset(newer)
        done.set()

    with dataset_lock("toy"):  # held as an import holds it
        worker = threading.Thread(target=save)
        worker.start()
        time.sleep(0.3)
        assert not done.is_set()
        assert load_dataset("toy").fingerprint == toy_dataset.fingerprint
    worker.join(10)
    assert done.is_set() and load_dataset("toy").fingerprint == newer.fingerprint


def test_a_download_holds_the_lock_from_its_first_file_to_its_save(recbench_home: Path) -> None:
    from recbench.data.download import download

    done = threading.Event()
    worker = threading.Thread(target=lambda: (download("synthetic-a", show_progress=False), done.set()))
    with dataset_lock("synthetic-a"):  # another process is downloading it
        worker.start()
        time.sleep(0.3)
        assert not done.is_set() and not is_downloaded("synthetic-a")
    worker.join(30)
    assert done.is_set() and is_downloaded("synthetic-a")


def test_a_damaged_manifest_is_named_by_read_manifest(toy_dataset: Dataset, recbench_home: Path) -> None:
    assert read_manifest("toy")["counts"]["users"] == 60
    (recbench_home / "datasets" / "toy" / "manifest.json").write_text("{")
    with pytest.raises(DataError, match=r"manifest\.json: not valid JSON .* re-run `recbench download toy`"):
        read_manifest("toy")
    with pytest.raises(DataError, match="is not downloaded"):
        read_manifest("other")


def test_dataset_lock_is_reentrant_so_an_import_can_save(recbench_home: Path) -> None:
    with dataset_lock("toy"), dataset_lock("toy"):
        save_dataset(make_cyclic_dataset())
    assert load_dataset("toy").num_users == 60


# --- cheap checks on every load ------------------------------------------------------------------
def _npz(**arrays: np.ndarray) -> bytes:
    np.savez(buffer := io.BytesIO(), **arrays)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    np.save(buffer := io.BytesIO(), array)
    return buffer.getvalue()


def _edit_npz(change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        with np.load(directory / "sequences.npz") as archive:
            arrays = {k: archive[k] for k in archive.files}
        change(arrays)
        (directory / "sequences.npz").write_bytes(_npz(**arrays))

    return edit


def _edit_text(file: str, change: Callable[[str], str]) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        (directory / file).write_text(change((directory / file).read_text(encoding="utf-8")), encoding="utf-8")

    return edit


def _edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        manifest = json.loads((directory / "manifest.json").read_text())
        change(manifest)
        (directory / "manifest.json").write_text(json.dumps(manifest))

    return edit


def _set(arrays: dict[str, np.ndarray], key: str, value: np.ndarray) -> None:
    arrays[key] = value


def _swap_offsets(arrays: dict[str, np.ndarray]) -> None:
    arrays["offsets"][[2, 3]] = arrays["offsets"][[3, 2]]


def _item(value: int) -> Callable[[dict[str, np.ndarray]], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays["items"][7] = value

    return change


DAMAGE = {
    "users.txt loses its last line": (
        _edit_text("users.txt", lambda t: "".join(t.splitlines(True)[:-1])),
        r"users\.txt: 59 lines but manifest\.json counts 60 users",
    ),
    "users.txt gains a line": (_edit_text("users.txt", lambda t: t + "stranger\n"), r"users\.txt: 61 lines"),
    "users.txt cut mid-line": (
        _edit_text("users.txt", lambda t: t[:-2]),
        r"users\.txt: line 60 has no newline at its end",
    ),
    "users.txt empty": (_edit_text("users.txt", lambda t: ""), r"users\.txt: 0 lines"),
    "users.txt deleted": (lambda d: (d / "users.txt").unlink(), r"users\.txt: missing"),
    "items.jsonl garbage line": (
        _edit_text("items.jsonl", lambda t: t.replace('{"id": "i2"', "#garbage", 1)),
        r"items\.jsonl:\d+: not valid JSON",
    ),
    "items.jsonl line not a record": (
        _edit_text("items.jsonl", lambda t: "[1, 2]\n" + "".join(t.splitlines(True)[1:])),
        r"items\.jsonl:1: expected",
    ),
    "items.jsonl loses a line": (
        _edit_text("items.jsonl", lambda t: "".join(t.splitlines(True)[:-1])),
        r"items\.jsonl: 29 lines but manifest\.json counts 30 items",
    ),
    "items.jsonl not UTF-8": (
        lambda d: (d / "items.jsonl").write_bytes(b"\xff\xfe" + (d / "items.jsonl").read_bytes()),
        r"items\.jsonl: not valid UTF-8",
    ),
    "manifest.json garbage": (
        _edit_text("manifest.json", lambda t: t[: len(t) // 2]),
        r"manifest\.json: not valid JSON",
    ),
    "manifest.json a list": (_edit_text("manifest.json", lambda t: "[]"), r"manifest\.json: expected a JSON object"),
    "manifest.json without counts": (_edit_manifest(lambda m: m.pop("counts")), r"manifest\.json: no valid 'counts'"),
    "manifest.json counts one user more": (
        _edit_manifest(lambda m: m["counts"].update(users=61)),
        r"sequences\.npz: 'offsets' has 61 entries but manifest\.json counts 61 users",
    ),
    "manifest.json counts more interactions": (
        _edit_manifest(lambda m: m["counts"].update(interactions=m["counts"]["interactions"] + 1)),
        r"sequences\.npz: \d+ interactions but manifest\.json counts",
    ),
    "sequences.npz empty": (lambda d: (d / "sequences.npz").write_bytes(b""), r"sequences\.npz: empty file"),
    "sequences.npz not an archive": (
        lambda d: (d / "sequences.npz").write_text("hello"),
        r"sequences\.npz: not a readable \.npz archive",
    ),
    "sequences.npz cut in half": (
        lambda d: (d / "sequences.npz").write_bytes((d / "sequences.npz").read_bytes()[:300]),
        r"sequences\.npz: not a readable \.npz archive",
    ),
    "sequences.npz a plain .npy": (
        lambda d: (d / "sequences.npz").write_bytes(_npy(np.arange(3))),
        r"sequences\.npz: a single \.npy array",
    ),
    "sequences.npz without items": (
        lambda d: (d / "sequences.npz").write_bytes(_npz(offsets=np.zeros(61, dtype=np.int64))),
        r"sequences\.npz: no array 'items'",
    ),
    "offsets of the wrong dtype": (
        _edit_npz(lambda a: _set(a, "offsets", a["offsets"].astype(np.int32))),
        r"'offsets' is int32 of shape \(61,\), expected 1-D int64",
    ),
    "items of the wrong shape": (
        _edit_npz(lambda a: _set(a, "items", a["items"].reshape(1, -1))),
        r"'items' is int32 of shape \(1, \d+\), expected 1-D int32",
    ),
    "offsets not starting at 0": (
        _edit_npz(lambda a: _set(a, "offsets", a["offsets"] + 1)),
        r"'offsets' runs from 1 to",
    ),
    "offsets decreasing": (_edit_npz(_swap_offsets), r"'offsets' decrease at position"),
    "an item id of 0": (_edit_npz(_item(0)), r"item ids run from 0 to \d+, outside 1\.\.30"),
    "an item id above N": (_edit_npz(_item(31)), r"item ids run from \d+ to 31, outside 1\.\.30"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_damage_is_named_on_load(damage: str, toy_dataset: Dataset, recbench_home: Path) -> None:
    edit, message = DAMAGE[damage]
    edit(recbench_home / "datasets" / "toy")
    with pytest.raises(DataError, match=message) as error:
        load_dataset("toy")
    assert "re-run `recbench download toy`" in str(error.value) and "\n" not in str(error.value)


def test_a_damaged_dataset_is_one_error_line_in_the_cli(toy_dataset: Dataset, recbench_home: Path) -> None:
    DAMAGE["users.txt loses its last line"][0](recbench_home / "datasets" / "toy")
    result = CliRunner().invoke(app, ["encode", "toy"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1 and "users.txt" in result.output


# --- the fingerprint -----------------------------------------------------------------------------
def test_fingerprint_check_passes_on_an_untouched_dataset(toy_dataset: Dataset) -> None:
    assert verify_fingerprint(load_dataset("toy")) == toy_dataset.fingerprint


@pytest.mark.parametrize(
    "edit",
    [
        _edit_npz(lambda a: _set(a, "items", a["items"][::-1].copy())),  # same counts, same id range
        _edit_text("items.jsonl", lambda t: t.replace("in group", "in grupo", 1)),
        _edit_text("users.txt", lambda t: t.replace("u1\n", "z1\n", 1)),
    ],
    ids=["sequences reordered", "an item text edited", "a user token edited"],
)
def test_fingerprint_check_catches_edits_the_cheap_checks_cannot(
    edit: Callable[[Path], None], toy_dataset: Dataset, recbench_home: Path
) -> None:
    edit(recbench_home / "datasets" / "toy")
    dataset = load_dataset("toy")  # consistent in shape, so it loads
    with pytest.raises(DataError, match=r"dataset 'toy': its files do not match the fingerprint in manifest\.json"):
        verify_fingerprint(dataset)


def test_fingerprint_check_needs_a_recorded_fingerprint(toy_dataset: Dataset, recbench_home: Path) -> None:
    _edit_manifest(lambda m: m.pop("fingerprint"))(recbench_home / "datasets" / "toy")
    with pytest.raises(DataError, match="records no fingerprint"):
        verify_fingerprint(load_dataset("toy"))

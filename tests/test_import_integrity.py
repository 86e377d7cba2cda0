"""Imports that would silently change data: each is refused in one `error:` line or reported in a note."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recbench.cli import app
from recbench.data.dataset import Dataset, load_dataset
from tests.test_lcrec_import import write_lcrec
from tests.test_unisrec_import import fixture_sequences, write_unisrec

BIG = "1" * 40  # an id of 40 digits: beyond int64


def _snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` with its bytes: what "nothing changed on disk" compares."""
    return {str(p): p.read_bytes() for root in roots if root.exists() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(result, pattern: str) -> None:
    import re

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert re.search(pattern, result.output), result.output


def _flat(output: str) -> str:
    """Output with rich's line wrapping undone (notes are long)."""
    return " ".join(output.split())


# --- sources that must be refused ----------------------------------------------------------------
def _csv(tmp: Path, body: bytes, name: str = "log.csv", header: bytes = b"user,item,timestamp\n") -> Path:
    (tmp / name).write_bytes(header + body)
    return tmp / name


ROWS = b"".join(b"u%d,i%d,16000000%02d\n" % (u, i, 10 * u + i) for u in range(3) for i in range(4))


def _unisrec(tmp: Path, edit: Callable[[Path], None] | None = None) -> Path:
    write_unisrec(tmp / "src", "Toy", fixture_sequences(), None)
    if edit:
        edit(tmp / "src")
    return tmp / "src"


def _lcrec(tmp: Path, edit: Callable[[Path], None]) -> Path:
    write_lcrec(tmp / "src")
    edit(tmp / "src")
    return tmp / "src"


def _replace_line(file: str, number: int, change: Callable[[str], str]) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        lines = (directory / file).read_text().split("\n")
        lines[number - 1] = change(lines[number - 1])
        (directory / file).write_text("\n".join(lines))

    return edit


def _edit_json(file: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        data = json.loads((directory / file).read_text())
        change(data)
        (directory / file).write_text(json.dumps(data))

    return edit


def _raw_json(file: str, text: str) -> Callable[[Path], None]:
    return lambda directory: (directory / file).write_text(text)


def _cut_train_within_a_user(directory: Path) -> None:
    lines = (directory / "Toy.train.inter").read_text().splitlines(keepends=True)
    (directory / "Toy.train.inter").write_text("".join(lines[:10]))  # keeps 7 of user 2's 61 rows


REFUSED: dict[str, tuple[Callable[[Path], Path], str]] = {
    # (b) a CSV / RecBole file cut mid-line
    "csv cut inside the last timestamp": (
        lambda t: _csv(t, ROWS + b"u2,i5,16000"),
        r"log\.csv:14: the last line has no newline and its timestamp '16000' .* looks cut",
    ),
    "recbole file cut inside the last timestamp": (
        lambda t: _csv(
            t,
            ROWS.replace(b",", b"\t") + b"u2\ti5\t1600",
            "toy.inter",
            b"user_id:token\titem_id:token\ttimestamp:float\n",
        ),
        r"toy\.inter:14: the last line has no newline and its timestamp '1600'",
    ),
    "csv cut inside the last fixed-width item": (
        lambda t: _csv(
            t,
            b"".join(b"u%d,16000000%02d,B00000000%d\n" % (k % 3, k, k % 10) for k in range(12)) + b"u2,1600000099,B000",
            header=b"user,timestamp,item\n",
        ),
        r"log\.csv:14: the last line has no newline and its item 'B000'",
    ),
    "csv cut between fields": (lambda t: _csv(t, ROWS + b"u2,i5"), r"log\.csv:14: expected 3 fields"),
    # (c) NUL bytes
    "NUL byte in a csv item": (
        lambda t: _csv(t, ROWS + b"u2,i\x005,1600000099\n"),
        r"log\.csv:14: NUL byte at byte 4 of the line",
    ),
    "zero-filled tail of a csv": (lambda t: _csv(t, ROWS + b"\0" * 64), r"log\.csv:14: NUL byte at byte 0"),
    "NUL byte in a UniSRec item2index": (
        lambda t: _unisrec(t, _replace_line("Toy.item2index", 3, lambda line: "\0" + line)),
        r"Toy\.item2index:3: NUL byte",
    ),
    "NUL byte in an LC-Rec item2id": (
        lambda t: _lcrec(t, _replace_line("Toy.item2id", 2, lambda line: "A\0" + line)),
        r"Toy\.item2id:2: NUL byte at byte 1",
    ),
    # (f) ids beyond int64, keys that are no index
    "40-digit user in a UniSRec test.inter": (
        lambda t: _unisrec(t, _replace_line("Toy.test.inter", 3, lambda line: BIG + line[line.index("\t") :])),
        r"Toy\.test\.inter:3: user index 1{24}\.\.\. \(40 characters\) is outside 0\.\.3",
    ),
    "40-digit item in a UniSRec valid.inter history": (
        lambda t: _unisrec(t, _replace_line("Toy.valid.inter", 2, lambda line: line.replace("\t", f"\t{BIG} ", 1))),
        r"Toy\.valid\.inter:2: item index 1{24}\.\.\. \(40 characters\) is outside 0\.\.\d+",
    ),
    "40-digit target in a UniSRec train.inter": (
        lambda t: _unisrec(t, _replace_line("Toy.train.inter", 2, lambda line: line[: line.rindex("\t") + 1] + BIG)),
        r"Toy\.train\.inter:2: item index 1{24}",
    ),
    "40-digit item in an LC-Rec inter.json": (
        lambda t: _lcrec(t, _raw_json("Toy.inter.json", f'{{"0": [0, 1, 2], "1": [2, 1, {BIG}], "2": [3, 3, 1]}}')),
        r"Toy\.inter\.json: user 1: item index 1{24}\.\.\. \(40 characters\) is outside 0\.\.3",
    ),
    "LC-Rec user key not in user2id": (
        lambda t: _lcrec(t, _raw_json("Toy.inter.json", '{"0": [0, 1, 2], "1": [2, 1, 0], "7": [3, 3, 1]}')),
        r"Toy\.inter\.json: user key '7' is not an index of Toy\.user2id \(0\.\.2\)",
    ),
    "40-digit LC-Rec user key": (
        lambda t: _lcrec(t, _raw_json("Toy.inter.json", f'{{"0": [0, 1, 2], "1": [2, 1, 0], "{BIG}": [3, 3, 1]}}')),
        r"Toy\.inter\.json: user key '1{24}\.\.\. \(40 characters\)' is not an index of Toy\.user2id",
    ),
    "LC-Rec user key of non-ASCII digits": (
        lambda t: _lcrec(t, _edit_json("Toy.inter.json", lambda d: d.update({"²": [0, 1, 2]}))),
        r"Toy\.inter\.json: user keys must be integer indices, found '²'",
    ),
    # (a) a train.inter cut inside a user's rows cannot be rebuilt
    "UniSRec train.inter cut inside a user": (
        lambda t: _unisrec(t, _cut_train_within_a_user),
        r"Toy\.train\.inter:\d+: train row of user 2 is inconsistent",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_source_that_would_change_silently_is_refused(
    case: str, toy_dataset: Dataset, tmp_path: Path, recbench_home: Path
) -> None:
    make, pattern = REFUSED[case]
    source = make(tmp_path)
    before = _snapshot(recbench_home, tmp_path)
    result = CliRunner().invoke(app, ["download", "imp", "--from", str(source)])
    _refused(result, pattern)
    assert _snapshot(recbench_home, tmp_path) == before  # no dataset, no leftover, the source untouched


# --- sources imported with a note saying what changed --------------------------------------------
def _cut_train_at_user_boundary(directory: Path) -> None:
    lines = (directory / "Toy.train.inter").read_text().splitlines(keepends=True)
    (directory / "Toy.train.inter").write_text("".join(lines[:3]))  # header + user 0's 2 rows: users 2 and 3 lose all


def _item_table(tmp: Path) -> list[str]:
    _csv(tmp, ROWS)
    (tmp / "items.csv").write_text("item,title\ni0,Zero\ni1,One\ni2,Two\ni1,Other one\ni3,Three\ni2,Other two\n")
    return ["--from", str(tmp / "log.csv"), "--item-text", str(tmp / "items.csv")]


def _item_table_unterminated(tmp: Path) -> list[str]:
    _csv(tmp, ROWS)
    (tmp / "items.csv").write_text("item,title\ni0,Zero\ni1,One\ni2,Two\ni3,Thr")
    return ["--from", str(tmp / "log.csv"), "--item-text", str(tmp / "items.csv")]


def _unisrec_text(tmp: Path) -> list[str]:
    items = sorted({i for s in fixture_sequences().values() for i in s})
    write_unisrec(tmp / "src", "Toy", fixture_sequences(), {i: f"Title {i}" for i in items})
    with open(tmp / "src" / "Toy.text", "a") as f:
        f.write("B002\tA second title\n")
    return ["--from", str(tmp / "src")]


def _lcrec_text(tmp: Path) -> list[str]:
    write_lcrec(tmp / "src")
    (tmp / "src" / "Toy.item.json").write_text(
        '{"0": {"title": "Zero"}, "1": {"title": "One"}, "0": {"title": "Again"}}'
    )
    return ["--from", str(tmp / "src")]


_REPEATED_USER = '{"0": [0, 1, 2], "1": [2, 1, 0], "2": [3, 3, 1], "1": [1, 2, 3]}'


NOTED: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "UniSRec train.inter cut at a user boundary": (
        lambda t: ["--from", str(_unisrec(t, _cut_train_at_user_boundary))],
        "WARNING: Toy.train.inter has no rows for 2 users whose valid history implies some (e.g. user 2; "
        "was the file cut?); their sequences are rebuilt from the valid histories: 1 of them (e.g. user 2) "
        "hit the 50-item cap",
    ),
    "csv whose whole last line lacks its newline": (
        lambda t: ["--from", str(_csv(t, ROWS + b"u2,i5,1600000099"))],
        "the last line of log.csv (line 14) has no newline at its end; its values look whole: kept",
    ),
    "item-text table with repeated items": (
        _item_table,
        "items.csv repeats items (extra rows: 2, first: line 5, item 'i1'); the first row of each item was used",
    ),
    "item-text table whose last line lacks its newline": (
        _item_table_unterminated,
        "the last line of items.csv has no newline at its end: if the file was cut, so is the text of item 'i3'",
    ),
    "UniSRec text file with a repeated item": (
        _unisrec_text,
        "Toy.text repeats items (extra lines: 1, first: line 66, item 'B002'); the first line of each item was used",
    ),
    "LC-Rec inter.json with a repeated user key": (
        lambda t: ["--from", str(_lcrec(t, _raw_json("Toy.inter.json", _REPEATED_USER)))],
        "Toy.inter.json repeats keys (extra: 1, first: '1'); the last value of each was used",
    ),
    "LC-Rec item.json with a repeated key": (
        _lcrec_text,
        "it repeats keys (extra: 1, first: '0'), the last value of each was used",
    ),
}


@pytest.mark.parametrize("case", list(NOTED))
def test_a_change_made_while_importing_is_reported(case: str, tmp_path: Path, recbench_home: Path) -> None:
    make, note = NOTED[case]
    result = CliRunner().invoke(app, ["download", "imp", *make(tmp_path)])
    assert result.exit_code == 0, result.output
    assert note in _flat(result.output)


def test_the_cut_train_file_really_lost_what_the_note_says(tmp_path: Path, recbench_home: Path) -> None:
    CliRunner().invoke(app, ["download", "imp", "--from", str(_unisrec(tmp_path, _cut_train_at_user_boundary))])
    dataset = load_dataset("imp")
    assert dataset.lengths.tolist() == [5, 3, 52, 4]  # user 2 had 64 items: 12 lost, as the note warns


# --- results of other tools (recbench eval --import) ---------------------------------------------
def _lists(dataset: Dataset, items: int) -> str:
    return "".join("\t".join([u, " ".join(dataset.item_ids[:items])]) + "\n" for u in dataset.user_ids)


def _npy(tmp: Path, array: np.ndarray, name: str = "scores.npy") -> Path:
    with open(tmp / name, "wb") as f:
        np.save(f, array)
    return tmp / name


def _write(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def _scores(dataset: Dataset, value: float | complex, dtype: type = np.float32) -> np.ndarray:
    return np.full((dataset.num_users, dataset.num_items + 1), value, dtype=dtype)


def _directory(tmp: Path) -> Path:
    (tmp / "results").mkdir()
    return tmp / "results"


def _npz(tmp: Path) -> Path:
    np.savez(tmp / "scores.npz", scores=np.zeros(3))
    return tmp / "scores.npz"


EVAL_REFUSED: dict[str, tuple[Callable[[Path, Dataset], Path], str]] = {
    "ranked lists all empty": (
        lambda t, d: _write(t, "run.tsv", _lists(d, 0).encode()),
        r"run\.tsv: every ranked list is empty",
    ),
    "an all-NaN score matrix": (lambda t, d: _npy(t, _scores(d, np.nan)), r"scores\.npy: every score is NaN"),
    "an all-NaN matrix but its padding column": (
        lambda t, d: _npy(t, np.concatenate([np.zeros((d.num_users, 1), np.float32), _scores(d, np.nan)[:, 1:]], 1)),
        r"every score is NaN",
    ),
    "a complex score matrix": (lambda t, d: _npy(t, _scores(d, 1 + 2j, np.complex64)), r"scores\.npy: complex scores"),
    "an empty .npy": (
        lambda t, d: _write(t, "scores.npy", b""),
        r"scores\.npy: empty file, expected a \.npy score matrix",
    ),
    "a .npy cut in its header": (
        lambda t, d: _write(t, "cut.npy", _npy(t, _scores(d, 0.0)).read_bytes()[:60]),
        r"cut\.npy: not a numeric \.npy array",
    ),
    "an empty list file": (lambda t, d: _write(t, "run.tsv", b""), r"run\.tsv: empty file, expected ranked lists"),
    "a .npz archive": (
        lambda t, d: _npz(t),
        r"scores\.npz: a \.npz archive is not a supported import: give ranked lists \(\.tsv/\.csv/\.txt\) "
        r"or a score matrix \(\.npy\)",
    ),
    "a .npz archive under a list name": (lambda t, d: _write(t, "run.tsv", _npz(t).read_bytes()), r"a \.npz archive"),
    "a .npy under a list name": (
        lambda t, d: _write(t, "run.txt", _npy(t, _scores(d, 0.0)).read_bytes()),
        r"name it \*\.npy",
    ),
    "a directory": (lambda t, d: _directory(t), r"results: is a directory, expected a file"),
    "a missing file": (lambda t, d: t / "nowhere.tsv", r"nowhere\.tsv does not exist"),
    "NUL bytes in ranked lists": (
        lambda t, d: _write(t, "run.tsv", _lists(d, 3).encode() + b"\0\0\0"),
        r"run\.tsv:61: NUL byte at byte 0",
    ),
}


@pytest.mark.parametrize("case", list(EVAL_REFUSED))
def test_a_result_file_that_is_not_one_is_refused(
    case: str, toy_dataset: Dataset, tmp_path: Path, recbench_home: Path
) -> None:
    make, pattern = EVAL_REFUSED[case]
    (tmp_path / "files").mkdir()
    path = make(tmp_path / "files", toy_dataset)
    before = _snapshot(recbench_home, tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--import",
            str(path),
            "--dataset",
            "toy",
            "--name",
            "other-tool",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
    )
    _refused(result, pattern)
    assert _snapshot(recbench_home, tmp_path) == before and not (tmp_path / "runs").exists()


def test_partly_nan_scores_and_partly_empty_lists_are_still_accepted(toy_dataset: Dataset, tmp_path: Path) -> None:
    scores = np.random.default_rng(0).normal(size=(toy_dataset.num_users, toy_dataset.num_items + 1)).astype(np.float32)
    scores[3] = np.nan  # one user left unscored: ranked last, as documented
    path = _npy(tmp_path, scores)
    args = ["--dataset", "toy", "--runs-dir", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, ["eval", "--import", str(path), "--name", "matrix", *args])
    assert result.exit_code == 0, result.output
    lists = _lists(toy_dataset, 3).split("\n")
    lists[0] = toy_dataset.user_ids[0]  # one empty list
    (tmp_path / "run.tsv").write_text("\n".join(lists))
    result = CliRunner().invoke(app, ["eval", "--import", str(tmp_path / "run.tsv"), "--name", "lists", *args])
    assert result.exit_code == 0, result.output

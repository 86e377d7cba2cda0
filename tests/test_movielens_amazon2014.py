"""MovieLens-1M and Amazon-2014 Beauty: importers, catalogue downloads (local HTTP server), AutoMLP's filter.

Expected sequences come from a plain-Python reading of the generated files (csv / split, sorted(),
dicts); expected texts are written out by hand.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import random
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recbench.cli import app
from recbench.data import download as download_module
from recbench.data.catalog import get_dataset_spec
from recbench.data.dataset import load_dataset
from recbench.data.download import download, import_local
from recbench.data.filters import InteractionFilter
from recbench.data.ingest import detect_format
from recbench.errors import DataError
from tests.raw_fixtures import Route, file_server, refused_url

runner = CliRunner()
FAST = {"retries": 1, "backoff": 0.0, "timeout": 10.0}


# --- generated raw files -------------------------------------------------------------------------
def rating_rows(seed: int, separator: str) -> list[str]:
    """Users with 3..25 ratings over 40 items, many same-second ties, lines shuffled."""
    rng = random.Random(seed)
    lines = []
    for user in range(1, 31):
        for item in rng.sample(range(1, 41), rng.randint(3, 25)):
            lines.append(separator.join([str(user), str(item), str(rng.randint(1, 5)), str(900 + rng.randint(0, 8))]))
    rng.shuffle(lines)
    return lines


def reference_sequences(lines: list[str], separator: str, min_user: int) -> dict[str, list[str]]:
    """User -> items by time (ties in file order), users with fewer than ``min_user`` ratings left out."""
    by_user: dict[str, list[tuple[int, int, str]]] = {}
    for position, line in enumerate(lines):
        user, item, _, time = line.split(separator)
        by_user.setdefault(user, []).append((int(time), position, item))
    return {user: [item for *_, item in sorted(rows)] for user, rows in by_user.items() if len(rows) >= min_user}


def token_sequences(name: str) -> dict[str, list[str]]:
    dataset = load_dataset(name)
    return {user: [dataset.item_ids[i - 1] for i in dataset.sequence(u)] for u, user in enumerate(dataset.user_ids)}


MOVIES = {
    "1": ("Toy Story (1995)", "Animation|Children's|Comedy"),
    "2": ("Misérables, Les (1995)", "Drama|Musical"),  # latin-1 in movies.dat
    "3": ('"Great" Escape, The (1963)', "Adventure|War"),
}


def make_ml1m_zip(path: Path, seed: int = 11) -> list[str]:
    lines = rating_rows(seed, "::")
    movies = "".join(f"{k}::{title}::{genres}\n" for k, (title, genres) in MOVIES.items())
    movies += "".join(f"{k}::Movie {k} (2000)::Drama\n" for k in range(4, 39))  # 39 and 40 have no line
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ml-1m/ratings.dat", "\n".join(lines) + "\n")
        archive.writestr("ml-1m/movies.dat", movies.encode("latin-1"))
        archive.writestr("ml-1m/README", "toy copy")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return lines


META = [
    {"asin": "B1", "title": 'L\'Oreal "Pro" mascara', "categories": [["Beauty", "Makeup"], ["Beauty", "Eyes"]]},
    {"asin": "B2", "brand": "Acme", "categories": [["Beauty"]], "related": {"also_bought": ["B1", "B3"]}},
    {"asin": "B2", "title": "Second record of B2: ignored"},
    {"asin": "B3", "title": "Crème éclat", "price": 9.99, "salesRank": {"Beauty": 12}},
]


def make_beauty(directory: Path, seed: int = 5, extra_meta: list[str] | None = None) -> list[str]:
    rng = random.Random(seed)
    lines = [
        f"A{user:03d},B{item},{rng.choice(['5.0', '4.0', '1.0'])},{1300000000 + rng.randint(0, 5)}"
        for user in range(40)
        for item in rng.sample(range(1, 30), rng.randint(1, 16))
    ]
    rng.shuffle(lines)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings_Beauty.csv").write_text("\n".join(lines) + "\n")
    records = [repr(record) for record in META] + [repr({"asin": f"B{k}", "title": f"Item {k}"}) for k in range(4, 29)]
    with gzip.open(directory / "meta_Beauty.json.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(records + (extra_meta or [])) + "\n")
    return lines


# --- MovieLens -----------------------------------------------------------------------------------
def test_movielens_zip_import_sorts_keeps_ties_and_reads_latin1_titles(tmp_path: Path, recbench_home: Path) -> None:
    lines = make_ml1m_zip(tmp_path / "ml-1m.zip")
    assert detect_format(tmp_path / "ml-1m.zip") == "movielens"
    result = import_local("ml", tmp_path / "ml-1m.zip")
    assert token_sequences("ml") == reference_sequences(lines, "::", 3)
    dataset = load_dataset("ml")
    text = dict(zip(dataset.item_ids, dataset.item_texts))
    assert text["1"] == "Toy Story (1995). Animation Children's Comedy. "
    assert text["2"] == "Misérables, Les (1995). Drama Musical. "
    assert text["3"] == "Great Escape, The (1963). Adventure War. "  # quotes removed as UniSRec does
    assert text.get("39", "") == "" and any("have no line there" in m for m in result.messages)
    assert dataset.manifest["filter"] is None  # not a catalogued name: no filter unless asked


def test_movielens_extracted_directory_and_errors(tmp_path: Path, recbench_home: Path) -> None:
    lines = make_ml1m_zip(tmp_path / "ml-1m.zip")
    with zipfile.ZipFile(tmp_path / "ml-1m.zip") as archive:
        archive.extractall(tmp_path / "extracted")
    assert detect_format(tmp_path / "extracted") == "movielens"
    import_local("ml", tmp_path / "extracted")
    assert token_sequences("ml") == reference_sequences(lines, "::", 3)
    bad = tmp_path / "extracted" / "ml-1m" / "ratings.dat"
    bad.write_text("1::2::5::978300760\n1::3::5\n")
    with pytest.raises(DataError, match=r"ratings\.dat:2: expected 'UserID::MovieID::Rating::Timestamp'"):
        import_local("ml", tmp_path / "extracted")
    (tmp_path / "cut.zip").write_bytes((tmp_path / "ml-1m.zip").read_bytes()[:200])
    with pytest.raises(DataError, match=r"cut\.zip: not a readable zip archive"):
        import_local("ml", tmp_path / "cut.zip")


def local_spec(name: str, base: str, routes_prefix: str = ""):
    """The catalogue entry of ``name`` with its URLs on the local server (a refused mirror first)."""
    spec = get_dataset_spec(name)
    raw_files = {
        role: {**info, "urls": [refused_url(), f"{base}{routes_prefix}/{info['file']}"]}
        for role, info in spec.raw_files.items()
    }
    return dataclasses.replace(spec, raw_files=raw_files)


def test_ml1m_download_resumes_records_checksum_and_applies_automlp_filter(
    tmp_path: Path, recbench_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = make_ml1m_zip(tmp_path / "srv" / "ml-1m.zip")
    body = (tmp_path / "srv" / "ml-1m.zip").read_bytes()
    route = Route(body, cut_after=len(body) // 3)  # the first transfer breaks off: resumed with a Range request
    with file_server({"/ml-1m.zip": route}) as base:
        monkeypatch.setattr(download_module, "get_dataset_spec", lambda name: local_spec(name, base))
        monkeypatch.setattr(download_module, "fetch", _fast(download_module.fetch))
        result = download("ml-1m", show_progress=False)
    assert any(r.get("Range", "").startswith("bytes=") for r in route.requests[1:])
    raw_manifest = json.loads((recbench_home / "raw" / "ml-1m" / "manifest.json").read_text())
    assert raw_manifest["files"]["ml-1m.zip"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert token_sequences("ml-1m") == reference_sequences(lines, "::", 10)  # AutoMLP: users with < 10 removed
    dataset = load_dataset("ml-1m")
    assert dataset.manifest["filter"] == {"min_user_interactions": 10, "min_item_interactions": 1, "mode": "once"}
    assert dataset.manifest["source"]["files"]["ml-1m.zip"] == hashlib.sha256(body).hexdigest()
    assert any("before the filter, users = 30 but datasets.toml expects 6,040" in m for m in result.mismatches)
    assert any(f"users = {dataset.num_users} but datasets.toml expects 6,040" in m for m in result.mismatches)

    # later: the recorded checksum is verified, nothing is fetched (the server is gone)
    again = download("ml-1m", show_progress=False)
    assert not any(m.startswith("downloaded") for m in again.messages)
    assert again.dataset.fingerprint == dataset.fingerprint


def _fast(fetch):
    def fetch_quickly(*args, **kwargs):
        return fetch(*args, **{**kwargs, **FAST})

    return fetch_quickly


def test_a_truncated_zip_without_a_known_checksum_is_refused(
    tmp_path: Path, recbench_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_ml1m_zip(tmp_path / "srv" / "ml-1m.zip")
    body = (tmp_path / "srv" / "ml-1m.zip").read_bytes()
    with file_server({"/ml-1m.zip": Route(body[:-40])}) as base:
        monkeypatch.setattr(download_module, "get_dataset_spec", lambda name: local_spec(name, base))
        monkeypatch.setattr(download_module, "fetch", _fast(download_module.fetch))
        with pytest.raises(DataError, match="ml-1m.zip is corrupt: corrupt or truncated zip"):
            download("ml-1m", show_progress=False)
    assert not (recbench_home / "raw" / "ml-1m" / "ml-1m.zip").exists()


def test_cli_imports_ml1m_with_its_catalogue_filter_and_renames_another_filter(
    tmp_path: Path, recbench_home: Path
) -> None:
    lines = make_ml1m_zip(tmp_path / "ml-1m.zip")
    result = runner.invoke(app, ["download", "ml-1m", "--from", str(tmp_path / "ml-1m.zip")])
    assert result.exit_code == 0, result.output
    kept = reference_sequences(lines, "::", 10)
    assert f"ml-1m: {len(kept)} users" in result.output and "WARNING: count mismatch:" in result.output
    assert "filter users >= 10: removed" in result.output
    other = runner.invoke(
        app, ["download", "ml-1m", "--from", str(tmp_path / "ml-1m.zip"), "--min-user-interactions", "5"]
    )
    assert other.exit_code == 0, other.output
    assert "saved as 'ml-1m-u5': the catalogue's 'ml-1m' is defined with users >= 10" in other.output
    assert token_sequences("ml-1m-u5") == reference_sequences(lines, "::", 5)
    assert token_sequences("ml-1m") == kept  # the catalogued copy is untouched


# --- Amazon 2014 ---------------------------------------------------------------------------------
def test_beauty_2014_meta_is_read_as_python_literals_for_the_items_left(tmp_path: Path, recbench_home: Path) -> None:
    lines = make_beauty(tmp_path / "raw")
    assert detect_format(tmp_path / "raw") == "amazon2014"
    result = import_local("b", tmp_path / "raw", interaction_filter=InteractionFilter(10, 1))
    reference = reference_sequences(lines, ",", 10)
    assert token_sequences("b") == reference and 0 < len(reference) < 40
    dataset = load_dataset("b")
    text = dict(zip(dataset.item_ids, dataset.item_texts))
    assert text["B1"] == "L'Oreal Pro mascara. Beauty Makeup Eyes. "  # category paths flattened, repeats left out
    assert text["B2"] == "Beauty. Acme. "  # the first record of an item counts
    assert text["B3"] == "Crème éclat. "
    assert text.get("B29", "") == ""  # no meta record: no text, still an item
    assert ("B29" in text) == any("1 of" in m and "no record there" in m for m in result.messages)


def test_beauty_2014_meta_never_runs_code_and_bad_lines_name_file_and_line(tmp_path: Path, recbench_home: Path) -> None:
    marker = tmp_path / "ran"
    evil = "{'asin': 'B7', 'title': __import__('os').system('touch " + str(marker) + "')}"
    make_beauty(tmp_path / "raw", extra_meta=[evil])  # B7 is rated, so its line is parsed
    with pytest.raises(DataError, match=r"meta_Beauty\.json\.gz:30: not a Python dict literal nor JSON"):
        import_local("b", tmp_path / "raw")
    assert not marker.exists()
    (tmp_path / "raw" / "ratings_Beauty.csv").write_text("A1,B1,5.0,1300000000\nA1,B2,5.0\n")
    with pytest.raises(DataError, match=r"ratings_Beauty\.csv:2: expected 'user,item,rating,timestamp' \(Amazon"):
        import_local("b", tmp_path / "raw")


def test_beauty_2014_with_a_header_line_is_read_too(tmp_path: Path, recbench_home: Path) -> None:
    lines = make_beauty(tmp_path / "raw")
    ratings = tmp_path / "raw" / "ratings_Beauty.csv"
    ratings.write_text("UserId,ProductId,Rating,Timestamp\n" + ratings.read_text())
    result = import_local("b", tmp_path / "raw")
    assert token_sequences("b") == reference_sequences(lines, ",", 3)
    assert any("ratings_Beauty.csv:1 is a header line" in m for m in result.messages)


def test_beauty_download_checks_the_papers_counts_before_the_filter(
    tmp_path: Path, recbench_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = make_beauty(tmp_path / "srv")
    routes = {f"/{p.name}": Route(p.read_bytes()) for p in (tmp_path / "srv").iterdir()}
    with file_server(routes) as base:
        monkeypatch.setattr(download_module, "get_dataset_spec", lambda name: local_spec(name, base))
        monkeypatch.setattr(download_module, "fetch", _fast(download_module.fetch))
        result = download("beauty", show_progress=False)
    assert token_sequences("beauty") == reference_sequences(lines, ",", 10)
    users = len({line.split(",")[0] for line in lines})
    assert any(
        f"before the filter, users = {users} but datasets.toml expects 1,210,271" in m for m in result.mismatches
    )
    assert any(f"interactions = {len(lines)} but datasets.toml expects 2,023,070" in m for m in result.mismatches)
    raw = json.loads((recbench_home / "raw" / "beauty" / "manifest.json").read_text())
    assert set(raw["files"]) == {"ratings_Beauty.csv", "meta_Beauty.json.gz"}

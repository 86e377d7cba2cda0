"""Downloads against a local HTTP server (127.0.0.1, started by each test): never the internet."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest

from recbench.data import download as download_module
from recbench.data.catalog import get_dataset_spec
from recbench.data.dataset import load_dataset
from recbench.data.download import download, ensure_raw_files
from recbench.data.fetch import fetch
from recbench.errors import DataError
from tests.raw_fixtures import Route, expected_output, file_server, make_raw, refused_url

BODY = os.urandom(300_000)
SHA = hashlib.sha256(BODY).hexdigest()
FAST = {"retries": 2, "backoff": 0.0, "timeout": 10.0, "show_progress": False}


def test_full_file_is_verified_and_renamed_into_place(tmp_path: Path) -> None:
    with file_server({"/f": Route(BODY)}) as base:
        fetched = fetch([f"{base}/f"], tmp_path / "f.bin", sha256=SHA, size=len(BODY), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY and fetched.sha256 == SHA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no .part left behind


def test_interrupted_transfer_resumes_with_a_range_request(tmp_path: Path) -> None:
    route = Route(BODY, cut_after=120_000)
    with file_server({"/f": route}) as base:
        fetched = fetch([f"{base}/f"], tmp_path / "f.bin", sha256=SHA, **FAST)
    assert (tmp_path / "f.bin").read_bytes() == BODY and fetched.resumed
    assert route.requests[1]["Range"] == "bytes=120000-" and route.requests[1]["If-Range"] == '"v1"'
    assert any("closed after 120,000 of 300,000 bytes" in p for p in fetched.problems)


def test_partial_file_of_an_earlier_run_is_resumed(tmp_path: Path) -> None:
    (tmp_path / "f.bin.part").write_bytes(BODY[:50_000])
    route = Route(BODY)
    with file_server({"/f": route}) as base:
        fetch([f"{base}/f"], tmp_path / "f.bin", sha256=SHA, **FAST)
    assert route.requests[0]["Range"] == "bytes=50000-" and (tmp_path / "f.bin").read_bytes() == BODY


def test_server_errors_are_retried(tmp_path: Path) -> None:
    route = Route(BODY, failures=2)
    with file_server({"/f": route}) as base:
        fetched = fetch([f"{base}/f"], tmp_path / "f.bin", sha256=SHA, **FAST)
    assert len(route.requests) == 3 and sum("HTTP 503" in p for p in fetched.problems) == 2


def test_wrong_checksum_is_reported_naming_file_and_both_checksums(tmp_path: Path) -> None:
    with file_server({"/f": Route(BODY[:-1] + b"!")}) as base, pytest.raises(DataError) as err:
        fetch([f"{base}/f"], tmp_path / "f.bin", sha256=SHA, **FAST)
    assert "f.bin" in str(err.value) and SHA in str(err.value) and "sha256 is" in str(err.value)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


def test_corrupt_copy_on_one_mirror_falls_back_to_the_next(tmp_path: Path) -> None:
    routes = {"/bad": Route(b"x" * len(BODY)), "/good": Route(BODY)}
    with file_server(routes) as base:
        fetched = fetch([f"{base}/bad", f"{base}/good"], tmp_path / "f.bin", sha256=SHA, **FAST)
    assert fetched.url.endswith("/good") and (tmp_path / "f.bin").read_bytes() == BODY


@pytest.mark.parametrize("down", ["refused", "404"])
def test_first_mirror_down_second_mirror_used(tmp_path: Path, down: str) -> None:
    with file_server({"/f": Route(BODY)}) as base:
        first = refused_url() if down == "refused" else f"{base}/missing"
        fetched = fetch([first, f"{base}/f"], tmp_path / "f.bin", sha256=SHA, **FAST)
    assert fetched.url == f"{base}/f"
    assert len(fetched.problems) == 1  # a down mirror is not retried
    assert ("404" if down == "404" else "cannot connect") in fetched.problems[0]


def test_truncated_gzip_is_corrupt_even_without_a_known_checksum(tmp_path: Path) -> None:
    data = gzip.compress(b'{"asin": "A"}\n' * 5000)
    with (
        file_server({"/m.json.gz": Route(data[: len(data) // 2])}) as base,
        pytest.raises(DataError, match="corrupt or truncated gzip"),
    ):
        fetch([f"{base}/m.json.gz"], tmp_path / "m.json.gz", **FAST)
    assert not (tmp_path / "m.json.gz").exists()


def local_spec(name: str, base: str, **changes: object):
    """The catalogue entry of ``name`` with its raw-file URLs pointing at the local server."""
    spec = get_dataset_spec(name)
    raw_files = {
        role: {**info, "urls": [refused_url(), f"{base}/{info['file']}"]} for role, info in spec.raw_files.items()
    }
    return dataclasses.replace(spec, raw_files=raw_files, **changes)


def raw_routes(directory: Path, full_name: str) -> dict[str, Route]:
    ratings, meta = make_raw(directory, full_name)
    return {f"/{p.name}": Route(p.read_bytes()) for p in (ratings, meta)}


def test_first_download_records_checksums_and_later_uses_are_verified(tmp_path: Path, recbench_home: Path) -> None:
    routes = raw_routes(tmp_path / "srv", "Industrial_and_Scientific")
    with file_server(routes) as base:
        spec = local_spec("scientific", base)
        paths, messages = ensure_raw_files(
            spec, show_progress=False, **{k: v for k, v in FAST.items() if k != "show_progress"}
        )
        manifest = json.loads((recbench_home / "raw" / "scientific" / "manifest.json").read_text())
        assert (
            manifest["files"]["Industrial_and_Scientific.csv"]["sha256"]
            == hashlib.sha256(routes["/Industrial_and_Scientific.csv"].body).hexdigest()
        )
        assert any("recorded sha256" in m for m in messages)

        paths["ratings"].write_bytes(paths["ratings"].read_bytes()[:-10])  # damaged on disk: named and fetched again
        _, messages = ensure_raw_files(spec, show_progress=False, retries=0, backoff=0.0)
        assert any("Industrial_and_Scientific.csv failed verification" in m for m in messages)
        assert paths["ratings"].read_bytes() == routes["/Industrial_and_Scientific.csv"].body

        routes["/Industrial_and_Scientific.csv"].body += b"I01,NEW,5.0,1\n"  # upstream changed since the first download
        paths["ratings"].unlink()
        with pytest.raises(DataError, match="recorded at the first download"):
            ensure_raw_files(spec, show_progress=False, retries=0, backoff=0.0)


def test_download_fetches_preprocesses_and_warns_on_count_mismatch(
    tmp_path: Path, recbench_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = raw_routes(tmp_path / "srv", "Industrial_and_Scientific")
    expected = expected_output(
        tmp_path / "srv" / "Industrial_and_Scientific.csv", tmp_path / "srv" / "meta_Industrial_and_Scientific.json.gz"
    )
    with file_server(routes) as base:
        monkeypatch.setattr(download_module, "get_dataset_spec", lambda name: local_spec(name, base))
        result = download("scientific", show_progress=False)
    dataset = load_dataset("scientific")
    assert dataset.user_ids == expected.users and dataset.item_ids == expected.items
    assert (
        dataset.manifest["source"]["files"]["Industrial_and_Scientific.csv"]
        == hashlib.sha256(routes["/Industrial_and_Scientific.csv"].body).hexdigest()
    )
    assert any(f"users = {len(expected.users)} but datasets.toml expects 8,442" in m for m in result.mismatches)
    assert any(m.startswith("downloaded Industrial_and_Scientific.csv") for m in result.messages)

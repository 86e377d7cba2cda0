"""Security: no file recbench reads can run code, no name can place a file outside its directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from recbench.cli import app
from recbench.data.download import ensure_raw_files
from recbench.errors import RecbenchError, RunError
from recbench.names import InvalidNameError, check_name
from recbench.runs.record import RunRecord
from tests.raw_fixtures import Route, file_server, make_raw
from tests.test_download_fetch import FAST, local_spec
from tests.test_train import TINY, interrupted_at_epoch, train_toy

runner = CliRunner()


class _Planted:
    """Unpickling this creates a directory: proof that code in a file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _plant_pickle(path: Path, marker: Path) -> None:
    torch.save({"model": {}, "epoch": 1, "payload": _Planted(marker)}, path)


def _interrupted_run(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> RunRecord:
    with interrupted_at_epoch(2, monkeypatch), pytest.raises(KeyboardInterrupt):
        train_toy(runs_dir)
    [status] = list(runs_dir.rglob("checkpoint.pt"))
    return RunRecord(status.parent)


def test_a_planted_pickle_in_checkpoint_is_refused_not_executed(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    run = _interrupted_run(runs, monkeypatch)
    marker = tmp_path / "code-ran"
    # The planted file works as a pickle: unrestricted torch.load would run it.
    _plant_pickle(tmp_path / "probe.pt", tmp_path / "probe-ran")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert (tmp_path / "probe-ran").is_dir()

    _plant_pickle(run.path / "checkpoint.pt", marker)
    with pytest.raises(RunError, match="refused without loading"):
        run.load_checkpoint()
    result = runner.invoke(
        app,
        [
            "train",
            "sasrec",
            "-d",
            "toy",
            "--seed",
            "5",
            "--runs-dir",
            str(runs),
            "--resume",
            "--device",
            "cpu",
            *sum((["--set", f"{k}={v}"] for k, v in TINY.items()), []),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "checkpoint.pt" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_a_planted_pickle_in_best_weights_is_refused_by_leaderboard_free_paths(toy_dataset, tmp_path: Path) -> None:
    run = train_toy(tmp_path / "runs")
    marker = tmp_path / "code-ran"
    _plant_pickle(run.path / "best.pt", marker)
    result = runner.invoke(app, ["eval", str(run.path), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "best.pt" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_a_real_checkpoint_loads_with_weights_only_and_resumes_bit_identically(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _interrupted_run(tmp_path / "a", monkeypatch)
    state = torch.load(run.path / "checkpoint.pt", weights_only=True)  # would raise on any pickled object
    assert state["epoch"] == 2 and set(state["rng"]) >= {"python", "numpy", "torch"}
    resumed = train_toy(tmp_path / "a", resume=True)
    straight = train_toy(tmp_path / "b")
    assert resumed.metrics["test"] == straight.metrics["test"]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x80\x02garbage"])
def test_empty_or_truncated_checkpoint_is_one_clear_error(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    run = _interrupted_run(tmp_path / "runs", monkeypatch)
    (run.path / "checkpoint.pt").write_bytes(content)
    with pytest.raises(RunError, match="checkpoint.pt"):
        run.load_checkpoint()


@pytest.mark.parametrize("name", ["../x", "../../etc", "a/b", "/abs", ".hidden", "", "a" * 101, "x\x00y", "a..b"])
def test_the_name_rule_refuses_path_like_names(name: str) -> None:
    with pytest.raises(InvalidNameError):
        check_name("dataset", name)


@pytest.mark.parametrize("name", ["scientific", "Office", "a+b", "scientific@0.1", "movielens-100k", "x_1.2"])
def test_the_name_rule_accepts_ordinary_names(name: str) -> None:
    assert check_name("dataset", name) == name


@pytest.mark.parametrize(
    "args",
    [
        ["train", "sasrec", "--dataset", "../../escape"],
        ["encode", "../escape"],
        ["download", "../escape", "--from", "."],
        ["eval", "--import", "ranked.tsv", "--dataset", "../escape", "--name", "x"],
        ["eval", "--import", "ranked.tsv", "--dataset", "toy", "--name", "../escape"],
        ["compare", "--datasets", "../escape", "--methods", "sasrec"],
        ["compare", "--suite", "../escape"],
    ],
)
def test_path_like_names_are_refused_by_every_command_and_nothing_is_written(
    args: list[str], toy_dataset, recbench_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ranked.tsv").write_text("u0\ti1\n")
    before = {p for p in tmp_path.rglob("*")}
    result = runner.invoke(
        app, [*args, "--runs-dir", str(tmp_path / "runs")] if args[0] not in ("download", "encode") else args
    )
    assert result.exit_code == 1, result.output
    assert "cannot name a" in result.output and "Traceback" not in result.output
    assert {p for p in tmp_path.rglob("*")} == before
    assert not (tmp_path.parent / "escape").exists()


def test_a_dataset_manifest_name_never_builds_a_path(toy_dataset, recbench_home: Path, tmp_path: Path) -> None:
    manifest_path = recbench_home / "datasets" / "toy" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["name"] = "../../hijacked"
    manifest_path.write_text(json.dumps(manifest))
    run = train_toy(tmp_path / "runs")
    assert run.path.parent.parent.name == "toy"
    assert not (tmp_path / "hijacked").exists() and not (recbench_home.parent / "hijacked").exists()


def test_a_file_fetched_over_plain_http_without_a_pinned_checksum_is_announced(
    tmp_path: Path, recbench_home: Path
) -> None:
    ratings, meta = make_raw(tmp_path / "srv", "Industrial_and_Scientific")
    with file_server({f"/{p.name}": Route(p.read_bytes()) for p in (ratings, meta)}) as base:
        assert base.startswith("http://")
        _, messages = ensure_raw_files(
            local_spec("scientific", base),
            show_progress=False,
            **{k: v for k, v in FAST.items() if k != "show_progress"},
        )
    warnings = [m for m in messages if "plain http" in m]
    assert len(warnings) == 2 and all("no sha256 is pinned" in m for m in warnings)


def test_https_mirrors_are_tried_before_plain_http_ones(monkeypatch: pytest.MonkeyPatch, recbench_home: Path) -> None:
    import recbench.data.download as download_module
    from recbench.data.catalog import get_dataset_spec

    tried: list[list[str]] = []

    def record(urls, dest, **kwargs):
        tried.append(list(urls))
        raise RecbenchError("stop here")

    monkeypatch.setattr(download_module, "fetch", record)
    with pytest.raises(RecbenchError):
        ensure_raw_files(get_dataset_spec("scientific"), show_progress=False)
    urls = tried[0]
    schemes = [u.split(":")[0] for u in urls]
    assert schemes == sorted(schemes, key=lambda s: s != "https") and "http" in schemes

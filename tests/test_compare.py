"""compare: the grid runs through the library, isolates failures, reuses runs, matches leaderboard."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import recbench.registry as registry
from recbench.compare import QUICK, GridCell, compare, grid, run_grid
from recbench.results.leaderboard import leaderboard

TINY = {"hidden_size": 8, "inner_size": 8, "max_seq_length": 8, "epochs": 2}

FAILING_PLUGIN = '''
from recbench.method import Method
from recbench.registry import register


@register("test-always-fails")
class AlwaysFails(Method):
    """A method whose construction fails, to test failure isolation."""

    def __init__(self, config, spec):
        raise RuntimeError("this method always fails")

    def loss(self, batch):
        raise AssertionError

    def score(self, batch):
        raise AssertionError
'''


@pytest.fixture
def failing_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A temporary plugin registering a method that always fails (registry restored afterwards)."""
    import recbench_plugins

    registry.discover()
    directory = tmp_path / "plugins_extra"
    directory.mkdir()
    (directory / "zz_failing.py").write_text(FAILING_PLUGIN)
    monkeypatch.setattr(recbench_plugins, "__path__", [*recbench_plugins.__path__, str(directory)])
    monkeypatch.setattr(registry, "_methods", dict(registry._methods))
    monkeypatch.setattr(registry, "_failures", {})
    registry.discover(force=True)
    yield "test-always-fails"
    sys.modules.pop("recbench_plugins.zz_failing", None)


def test_grid_covers_every_dataset_method_and_seed() -> None:
    cells = grid(["A", "b"], ["sasrec"], seeds=3)
    assert cells[0] == GridCell("a", "sasrec", 2020) and len(cells) == 6 and cells[-1].seed == 2022


def test_a_failed_cell_is_reported_and_does_not_stop_the_others(
    recbench_home: Path, tmp_path: Path, failing_method: str
) -> None:
    report, outcomes = compare(
        ["synthetic-c"],
        ["sasrec", failing_method],
        runs_dir=tmp_path / "runs",
        overrides=[TINY],
        device="cpu",
        live=False,
    )
    by_method = {o.cell.method: o for o in outcomes}
    assert by_method["sasrec"].error is None and by_method["sasrec"].run_dir
    assert "always fails" in by_method[failing_method].error
    assert "Traceback" in Path(by_method[failing_method].traceback_file).read_text()  # kept for the method's author
    assert report.cell("synthetic-c", failing_method).failed
    assert "failed" in report.to_markdown()


def test_a_dataset_that_cannot_be_made_fails_its_cells_once_and_not_the_others(
    recbench_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recbench.data.download
    from recbench.errors import DataError, UnknownNameError

    calls: list[str] = []
    real_download = recbench.data.download.download

    def download(name: str, **options):  # no network in tests: the real data is "unreachable"
        calls.append(name)
        if name == "scientific":
            raise DataError(
                "cannot reach the mirrors; import local copies with `recbench download scientific --from DIR`"
            )
        return real_download(name, **options)

    monkeypatch.setattr(recbench.data.download, "download", download)
    _, outcomes = compare(
        ["scientific", "synthetic-c"],
        ["sasrec"],
        seeds=2,
        runs_dir=tmp_path / "runs",
        overrides=[TINY],
        device="cpu",
        live=False,
    )
    assert [o.error is None for o in outcomes] == [False, False, True, True]
    assert "recbench download scientific --from DIR" in outcomes[0].error and calls == ["scientific", "synthetic-c"]
    with pytest.raises(UnknownNameError, match="Did you mean: synthetic-c"):
        compare(["synthetic-cc"], ["sasrec"], runs_dir=tmp_path / "runs", live=False)


def test_a_finished_cell_is_reused_not_rerun(recbench_home: Path, tmp_path: Path) -> None:
    cells = [GridCell("synthetic-c", "sasrec", 2020)]
    first = run_grid(cells, tmp_path / "runs", [TINY], device="cpu")
    written = {p.name: p.stat().st_mtime_ns for p in Path(first[0].run_dir).iterdir()}
    again = run_grid(cells, tmp_path / "runs", [TINY], device="cpu")
    assert not first[0].reused and again[0].reused and again[0].run_dir == first[0].run_dir
    assert {p.name: p.stat().st_mtime_ns for p in Path(again[0].run_dir).iterdir()} == written


def test_leaderboard_from_the_runs_equals_what_compare_reported(recbench_home: Path, tmp_path: Path) -> None:
    report, _ = compare(
        ["synthetic-c"],
        ["sasrec"],
        seeds=2,
        runs_dir=tmp_path / "runs",
        overrides=[TINY],
        device="cpu",
        live=False,
        out=str(tmp_path / "table"),
        formats=["md", "json"],
    )
    rebuilt = leaderboard(tmp_path / "runs")
    assert rebuilt.to_markdown() == report.to_markdown()
    assert (tmp_path / "table.md").read_text() == report.to_markdown()
    assert rebuilt.to_json() == (tmp_path / "table.json").read_text()


def test_quick_preset_lies_under_the_users_settings(recbench_home: Path, tmp_path: Path) -> None:
    _, outcomes = compare(
        ["synthetic-c"], ["sasrec"], runs_dir=tmp_path / "runs", overrides=[TINY], device="cpu", live=False, quick=True
    )
    from recbench.runs.record import RunRecord

    config = RunRecord(outcomes[0].run_dir).config["config"]
    assert config["patience"] == QUICK["patience"] and config["hidden_size"] == TINY["hidden_size"]


def test_two_local_jobs_give_the_same_runs_as_one(recbench_home: Path, tmp_path: Path) -> None:
    cells = grid(["synthetic-c"], ["sasrec"], seeds=2)
    serial = run_grid(cells, tmp_path / "serial", [TINY], jobs=1, device="cpu")
    parallel = run_grid(cells, tmp_path / "parallel", [TINY], jobs=2, device="cpu")
    from recbench.runs.record import RunRecord

    for a, b in zip(serial, parallel):
        assert a.error is None and b.error is None, (a.error, b.error)
        assert RunRecord(a.run_dir).metrics["test"] == RunRecord(b.run_dir).metrics["test"]


def test_ray_executor_runs_the_same_cells(recbench_home: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    cells = [GridCell("synthetic-c", "sasrec", 2020)]
    local = run_grid(cells, tmp_path / "local", [TINY], device="cpu")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_grid(cells, tmp_path / "ray", [TINY], executor="ray", device="cpu")
    finally:
        ray.shutdown()
    from recbench.runs.record import RunRecord

    assert remote[0].error is None, remote[0].error
    assert RunRecord(remote[0].run_dir).metrics["test"] == RunRecord(local[0].run_dir).metrics["test"]


class HashedWords:
    """A stand-in sentence encoder: each text -> a fixed random sum of its words' vectors."""

    def encode(self, sentences: list[str], **_: object) -> np.ndarray:
        def vector(word: str) -> np.ndarray:
            return np.random.default_rng(zlib.crc32(word.encode())).normal(size=16)

        return np.stack([sum((vector(w) for w in text.split()), np.zeros(16)) for text in sentences]).astype(np.float32)


@pytest.fixture
def cached_text(recbench_home: Path) -> None:
    """Text embeddings of the demo domains already in the on-disk cache (spawned workers read it
    too), so the test does not spend its time loading and running a real sentence encoder."""
    from recbench.data.dataset import load_dataset, union_of
    from recbench.data.download import download
    from recbench.data.encode import EncoderSpec, item_embeddings

    for name in ("synthetic-a", "synthetic-c"):
        download(name, show_progress=False)
    for dataset in (load_dataset("synthetic-c"), union_of([load_dataset("synthetic-a")])):
        item_embeddings(dataset, EncoderSpec(), encoder=HashedWords(), show_progress=False)


def test_transfer_methods_pretrain_on_the_sources_in_a_grid(
    recbench_home: Path, tmp_path: Path, cached_text: None
) -> None:
    small = {
        "item_size": 8,
        "semantic_hidden_size": 8,
        "inner_size": 8,
        "max_seq_length": 8,
        "epochs": 1,
        "pretrain_epochs": 1,
        "hidden_size": 8,
    }
    _, outcomes = compare(
        ["synthetic-c"],
        ["idasr", "sasrec"],
        runs_dir=tmp_path / "runs",
        overrides=[small],
        device="cpu",
        live=False,
        pretrain_on=["synthetic-a"],
        jobs=2,
    )
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    from recbench.runs.record import RunRecord

    configs = {o.cell.method: RunRecord(o.run_dir).config for o in outcomes}
    assert "pretrained" in configs["idasr"] and "pretrained" not in configs["sasrec"]


def test_a_fixed_pretrain_seed_pre_trains_once_for_every_seed_of_a_grid(
    recbench_home: Path, tmp_path: Path, cached_text: None
) -> None:
    small = {
        "item_size": 8,
        "semantic_hidden_size": 8,
        "inner_size": 8,
        "max_seq_length": 8,
        "epochs": 1,
        "pretrain_epochs": 1,
    }
    _, outcomes = compare(
        ["synthetic-c"],
        ["idasr"],
        seeds=2,
        runs_dir=tmp_path / "runs",
        overrides=[small],
        device="cpu",
        live=False,
        pretrain_on=["synthetic-a"],
        jobs=2,
        pretrain_seed=7,
    )
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    from recbench.runs.record import RunRecord

    (pretrain_run,) = [p.parent.name for p in (tmp_path / "runs" / "_pretrain").rglob("status.json")]
    assert pretrain_run.startswith("seed7-")
    assert sorted(o.cell.seed for o in outcomes) == [2020, 2021]
    assert {RunRecord(o.run_dir).config["pretrained"] for o in outcomes} == {pretrain_run}


def test_grid_wide_overrides_skip_unknown_keys_and_the_keys_a_variant_preset_defines() -> None:
    from recbench.compare import overrides_for

    # idp-zeroshot's preset fixes epochs = 0: --quick's epochs must not reach it (nor AutoMLP's keys)
    assert overrides_for("idp-zeroshot", [QUICK]) == [
        {"patience": 3, "pretrain_epochs": 2, "max_seq_length": 20, "hidden_size": 64, "inner_size": 128}
    ]
    assert overrides_for("unisrec-id", [{"use_id": False, "hidden_size": 8}]) == [{"hidden_size": 8}]
    assert overrides_for("unisrec", [{"use_id": True}]) == [{"use_id": True}]  # not a preset of the base name

"""compare: the grid runs through the library, isolates failures, reuses runs, matches leaderboard."""

from __future__ import annotations

from pathlib import Path

import pytest

import recbench.registry as registry
from recbench.compare import GridCell, compare, grid, run_grid
from recbench.leaderboard import leaderboard
from recbench.synthetic import generate

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
def failing_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    import recbench_plugins

    registry.discover()
    directory = tmp_path / "plugins_extra"
    directory.mkdir()
    (directory / "zz_failing.py").write_text(FAILING_PLUGIN)
    monkeypatch.setattr(recbench_plugins, "__path__", [*recbench_plugins.__path__, str(directory)])
    monkeypatch.setattr(registry, "_methods", dict(registry._methods))
    registry.discover(force=True)
    return "test-always-fails"


def test_synthetic_data_is_deterministic_and_labelled() -> None:
    first, second = generate("synthetic-x", {"seed": 4, "users": 50}), generate("synthetic-x", {"seed": 4, "users": 50})
    assert first.fingerprint == second.fingerprint
    assert "SYNTHETIC" in first.manifest["source"]["note"] and first.has_text


def test_grid_covers_every_dataset_method_and_seed() -> None:
    cells = grid(["A", "b"], ["sasrec"], seeds=3)
    assert cells[0] == GridCell("a", "sasrec", 2020) and len(cells) == 6 and cells[-1].seed == 2022


def test_a_failed_cell_is_reported_and_does_not_stop_the_others(recbench_home: Path, tmp_path: Path, failing_method: str) -> None:
    report, outcomes = compare(["synthetic-c"], ["sasrec", failing_method], runs_dir=tmp_path / "runs", overrides=[TINY], device="cpu", live=False)
    by_method = {o.cell.method: o for o in outcomes}
    assert by_method["sasrec"].error is None and by_method["sasrec"].run_dir
    assert "always fails" in by_method[failing_method].error
    assert report.cell("synthetic-c", failing_method).failed
    assert "failed" in report.to_markdown()


def test_a_finished_cell_is_reused_not_rerun(recbench_home: Path, tmp_path: Path) -> None:
    cells = [GridCell("synthetic-c", "sasrec", 2020)]
    first = run_grid(cells, tmp_path / "runs", [TINY], device="cpu")
    again = run_grid(cells, tmp_path / "runs", [TINY], device="cpu")
    assert not first[0].reused and again[0].reused and again[0].run_dir == first[0].run_dir


def test_leaderboard_from_the_runs_equals_what_compare_reported(recbench_home: Path, tmp_path: Path) -> None:
    report, _ = compare(["synthetic-c"], ["sasrec"], seeds=2, runs_dir=tmp_path / "runs", overrides=[TINY], device="cpu", live=False, out=str(tmp_path / "table"), formats=["md", "json"])
    rebuilt = leaderboard(tmp_path / "runs")
    assert rebuilt.to_markdown() == report.to_markdown()
    assert (tmp_path / "table.md").read_text() == report.to_markdown()


def test_two_local_jobs_give_the_same_runs_as_one(recbench_home: Path, tmp_path: Path) -> None:
    cells = grid(["synthetic-c"], ["sasrec"], seeds=2)
    serial = run_grid(cells, tmp_path / "serial", [TINY], jobs=1, device="cpu")
    parallel = run_grid(cells, tmp_path / "parallel", [TINY], jobs=2, device="cpu")
    from recbench.runs import RunRecord

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
    from recbench.runs import RunRecord

    assert remote[0].error is None, remote[0].error
    assert RunRecord(remote[0].run_dir).metrics["test"] == RunRecord(local[0].run_dir).metrics["test"]


def test_transfer_methods_pretrain_on_the_sources_in_a_grid(recbench_home: Path, tmp_path: Path) -> None:
    small = {"item_size": 8, "semantic_hidden_size": 8, "inner_size": 8, "max_seq_length": 8, "epochs": 1, "pretrain_epochs": 1, "hidden_size": 8}
    _, outcomes = compare(["synthetic-c"], ["idasr", "sasrec"], runs_dir=tmp_path / "runs", overrides=[small], device="cpu", live=False, pretrain_on=["synthetic-a"], jobs=2)
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    from recbench.runs import RunRecord

    configs = {o.cell.method: RunRecord(o.run_dir).config for o in outcomes}
    assert "pretrained" in configs["idasr"] and "pretrained" not in configs["sasrec"]

"""The example plugin keeps recbench's method contract, learns, and is recorded in its runs."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from recbench.testing import check_method


def test_example_fmc_keeps_the_recbench_contract() -> None:
    check_method("example-fmc")


def test_a_run_learns_the_transitions_and_records_the_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recbench.data.dataset import save_dataset
    from recbench.runs.experiment import run_experiment
    from recbench.testing import toy_dataset

    monkeypatch.setenv("RECBENCH_HOME", str(tmp_path / "home"))
    dataset = toy_dataset()  # users walk item i -> i + 1 (mod 30), with 10% random jumps
    save_dataset(dataset)
    settings = {"hidden_size": 16, "learning_rate": 0.01, "epochs": 30, "train_batch_targets": 64}
    result = run_experiment(
        "example-fmc", dataset.name, seed=0, overrides=[settings], runs_dir=tmp_path / "runs", show_progress=False
    )
    # the last item decides the next one 90% of the time: far above the 10/30 of a random ranking
    assert result.run.metrics["test"]["hr@10"] > 0.6
    assert result.run.config["versions"]["plugin"] == {
        "module": "recbench_example_plugin.fmc",
        "package": "recbench-example-plugin",
        "version": version("recbench-example-plugin"),
    }

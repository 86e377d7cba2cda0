"""Run records: digests verified on read, damaged runs named and shown (never dropped or averaged),
diverged and untrained runs recorded for what they are, metrics.json always valid JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recbench.cli import app
from recbench.errors import RunError
from recbench.results.leaderboard import leaderboard
from recbench.runs.experiment import run_experiment
from recbench.runs.record import DamagedRunError, RunRecord, find_runs
from recbench.runs.trainer import BatchLoss
from tests.test_train import TINY, train_toy

runner = CliRunner()
ORIGINAL_FORWARD = BatchLoss.forward


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the toy dataset and two finished sasrec runs (seeds 5 and 6), trained once per module."""
    from recbench.data.dataset import save_dataset
    from tests.conftest import make_cyclic_dataset

    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECBENCH_HOME", str(root / "home"))
        save_dataset(make_cyclic_dataset())
        for seed in (5, 6):
            _train_seed(root / "runs", seed)
    return root


@pytest.fixture
def two_seeds(trained_once: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[RunRecord]]:
    """A fresh copy of the two finished runs (and of their home) for one test to damage."""
    shutil.copytree(trained_once, tmp_path / "copy")
    monkeypatch.setenv("RECBENCH_HOME", str(tmp_path / "copy" / "home"))
    runs = tmp_path / "copy" / "runs"
    return runs, sorted(find_runs(runs), key=lambda run: run.config["seed"])


def _train_seed(runs: Path, seed: int) -> RunRecord:
    return run_experiment(
        "sasrec", "toy", seed=seed, overrides=[TINY], runs_dir=runs, device="cpu", show_progress=False
    ).run


def _damage_ranks_by_truncation(run: RunRecord) -> None:
    data = (run.path / "ranks.npz").read_bytes()
    (run.path / "ranks.npz").write_bytes(data[: len(data) // 2])


def _replace_ranks(run: RunRecord, transform) -> None:
    with np.load(run.path / "ranks.npz") as arrays:
        splits = {k: transform(arrays[k]) for k in arrays.files}
    np.savez(run.path / "ranks.npz", **splits)


DAMAGES = {
    "ranks truncated": _damage_ranks_by_truncation,
    "ranks deleted": lambda run: (run.path / "ranks.npz").unlink(),
    "ranks emptied": lambda run: (run.path / "ranks.npz").write_bytes(b""),
    "rank 0": lambda run: _replace_ranks(run, lambda r: np.where(np.arange(len(r)) == 0, 0, r)),
    "rank beyond N": lambda run: _replace_ranks(run, lambda r: r + 10_000),
    "float ranks with NaN": lambda run: _replace_ranks(run, lambda r: np.full(len(r), np.nan)),
    "metrics edited": lambda run: (run.path / "metrics.json").write_text(
        (run.path / "metrics.json").read_text().replace('"hr@10": 0', '"hr@10": 1')
    ),
    "metrics deleted": lambda run: (run.path / "metrics.json").unlink(),
    "metrics garbage": lambda run: (run.path / "metrics.json").write_text("{not json"),
    "config garbage": lambda run: (run.path / "config.json").write_text("\x00\x01"),
    "config dataset edited": lambda run: (run.path / "config.json").write_text(
        (run.path / "config.json").read_text().replace('"dataset": "toy"', '"dataset": "other"')
    ),
    "status garbage": lambda run: (run.path / "status.json").write_text("[1, 2"),
    "best.pt replaced": lambda run: torch.save({"x": torch.zeros(1)}, run.path / "best.pt"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_run_is_named_and_shown_damaged_while_the_others_still_make_the_table(two_seeds, damage: str) -> None:
    runs, (damaged, healthy) = two_seeds
    DAMAGES[damage](damaged)
    result = runner.invoke(app, ["leaderboard", str(runs), "--format", "md"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    damaged_lines = [line for line in result.output.splitlines() if line.startswith("damaged:")]
    needs_best = damage == "best.pt replaced"  # a leaderboard never reads the weights
    if needs_best:
        assert not damaged_lines
    else:
        assert len(damaged_lines) == 1 and str(damaged.path) in damaged_lines[0]
        assert "damaged |" in result.output  # the cell says damaged: seed 5 is not averaged away
    # `recbench eval RUN` names what is damaged, in one line
    evaluated = runner.invoke(app, ["eval", str(damaged.path), "--device", "cpu"])
    assert evaluated.exit_code == 1 and "Traceback" not in evaluated.output
    assert evaluated.output.startswith("error:") and len(evaluated.output.strip().splitlines()) == 1
    assert healthy.metrics["test"]  # the other run is untouched and readable


def test_an_intact_run_verifies_and_rereads_to_the_same_metrics(two_seeds) -> None:
    _, (run, _) = two_seeds
    status = json.loads((run.path / "status.json").read_text())
    assert set(status["files"]) == {"config.json", "metrics.json", "ranks.npz", "best.pt"}
    run.check()
    assert run.recomputed_metrics("test")["ndcg@10"] == pytest.approx(run.metrics["test"]["ndcg@10"])


def test_a_run_damaged_after_finishing_is_retrained_only_on_restart(two_seeds) -> None:
    runs, (run, _) = two_seeds
    (run.path / "status.json").write_text("garbage")
    with pytest.raises(RunError, match="--restart"):
        train_toy(runs)
    again = train_toy(runs, restart=True)
    assert again.is_finished and again.path == run.path


def test_find_runs_lists_a_run_with_an_unreadable_status_so_it_cannot_vanish(two_seeds) -> None:
    runs, (run, _) = two_seeds
    (run.path / "status.json").write_text("{")
    assert run.path in [r.path for r in find_runs(runs)]
    with pytest.raises(DamagedRunError):
        run.is_finished  # noqa: B018 - the read itself is the check


def _diverging(monkeypatch: pytest.MonkeyPatch, at_call: int) -> None:
    """From the ``at_call``-th batch on, the training loss is NaN."""
    original = BatchLoss.forward
    calls = {"n": 0}

    def forward(self, batch):
        calls["n"] += 1
        loss = original(self, batch)
        return loss * float("nan") if calls["n"] >= at_call else loss

    monkeypatch.setattr(BatchLoss, "forward", forward)


def test_a_diverged_loss_fails_the_run_which_is_never_finished_nor_ranked(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _diverging(monkeypatch, at_call=5)
    with pytest.raises(RunError, match="training diverged: the loss is nan"):
        train_toy(tmp_path / "runs")
    [status] = list((tmp_path / "runs").rglob("status.json"))
    run = RunRecord(status.parent)
    assert not run.is_finished and "diverged" in run.failure
    assert find_runs(tmp_path / "runs") == []
    monkeypatch.setattr(BatchLoss, "forward", ORIGINAL_FORWARD)
    with pytest.raises(RunError, match="failed: training diverged"):  # not silently retried
        train_toy(tmp_path / "runs", resume=True)
    assert train_toy(tmp_path / "runs", restart=True).is_finished


def test_a_huge_learning_rate_fails_with_one_line_through_the_cli(toy_dataset, tmp_path: Path) -> None:
    settings = sum((["--set", f"{k}={v}"] for k, v in {**TINY, "learning_rate": 1e12}.items()), [])
    result = runner.invoke(
        app, ["train", "sasrec", "-d", "toy", "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), *settings]
    )
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training diverged: the loss is nan" in errors[0] and "Traceback" not in result.output


def test_an_untrained_run_says_so_in_its_record_and_table_and_metrics_json_is_strict_json(
    toy_dataset, tmp_path: Path
) -> None:
    run = run_experiment(
        "sasrec",
        "toy",
        seed=5,
        overrides=[{**TINY, "epochs": 0}],
        runs_dir=tmp_path / "runs",
        device="cpu",
        show_progress=False,
    ).run
    text = (run.path / "metrics.json").read_text()
    fit = json.loads(text, parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}"))["fit"]
    assert fit["trained"] is False and fit["best_valid"] is None and fit["epochs_run"] == 0
    report = leaderboard(tmp_path / "runs")
    assert "Not trained on this dataset (epochs = 0, zero-shot): sasrec." in report.to_markdown()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "-1"], "--seed must be an integer from 0"),
        (["--seed", "99999999999"], "--seed must be an integer from 0"),
        (["--device", "mps"], "device 'mps' requested"),
        (["--device", "cuda:7"], "device 'cuda:7'"),
    ],
)
def test_bad_seeds_and_devices_are_one_line_and_write_nothing(
    args: list[str], message: str, toy_dataset, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["train", "sasrec", "-d", "toy", "--runs-dir", str(tmp_path / "runs"), *args])
    assert result.exit_code == 1, result.output
    assert (
        result.output.startswith("error:") and message in result.output and len(result.output.strip().splitlines()) == 1
    )
    assert not (tmp_path / "runs").exists()


def test_a_device_that_is_no_device_name_is_a_usage_error(toy_dataset, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "sasrec", "-d", "toy", "--runs-dir", str(tmp_path / "runs"), "--device", "tpu"]
    )
    words = " ".join(result.output.replace("│", " ").split())  # the usage-error box may wrap the line
    assert result.exit_code == 2 and "'tpu' is not one of auto, cpu, cuda, cuda:N, mps" in words
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["checkpoint.pt", "best.pt"])
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04\x14\x00"])
def test_truncated_or_empty_weights_are_one_line(name: str, content: bytes, two_seeds) -> None:
    runs, (run, _) = two_seeds
    (run.path / name).write_bytes(content)
    if name == "best.pt":
        result = runner.invoke(app, ["eval", str(run.path), "--device", "cpu"])
    else:
        (run.path / "status.json").unlink()  # an interrupted run being resumed
        settings = sum((["--set", f"{k}={v}"] for k, v in TINY.items()), [])
        result = runner.invoke(
            app,
            [
                "train",
                "sasrec",
                "-d",
                "toy",
                "--seed",
                "5",
                "--resume",
                "--device",
                "cpu",
                "--runs-dir",
                str(runs),
                *settings,
            ],
        )
    assert result.exit_code == 1, result.output
    assert name in result.output and "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_garbage_manifest_json_does_not_take_down_list_datasets(toy_dataset, recbench_home: Path) -> None:
    (recbench_home / "datasets" / "toy" / "manifest.json").write_text("{oops")
    result = runner.invoke(app, ["list", "datasets"])
    assert result.exit_code == 0, result.output
    assert "damaged" in result.output and "toy" in result.output


def test_console_output_keeps_text_as_written(tmp_path: Path) -> None:
    result = runner.invoke(app, ["leaderboard", str(tmp_path / "file:100:[bold]x[/]")])
    assert result.exit_code == 1
    assert "file:100:[bold]x[/]" in result.output


def test_compare_with_a_failed_cell_reports_the_others_and_exits_non_zero(recbench_home: Path, tmp_path: Path) -> None:
    tiny = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    result = runner.invoke(
        app,
        [
            "compare",
            "--datasets",
            "synthetic-c",
            "--methods",
            "sasrec",
            "--device",
            "cpu",
            "--runs-dir",
            str(tmp_path / "runs"),
            *tiny,
            "--set",
            "learning_rate=1e12",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "1 of 1 cells failed" in result.output and "training diverged" in result.output
    assert "Traceback" not in result.output


def test_find_runs_follows_links_to_run_directories_once_each_and_ends_on_a_link_cycle(
    two_seeds, tmp_path: Path
) -> None:
    runs, (first, second) = two_seeds
    chosen = tmp_path / "chosen" / "toy"
    chosen.mkdir(parents=True)
    (chosen / "first").symlink_to(first.path, target_is_directory=True)
    (chosen / "first-again").symlink_to(first.path, target_is_directory=True)
    (chosen / "loop").symlink_to(tmp_path / "chosen", target_is_directory=True)
    assert [run.path for run in find_runs(tmp_path / "chosen")] == [chosen / "first"]
    # A link inside the runs directory to one of its own runs adds nothing.
    (runs / "link-to-second").symlink_to(second.path, target_is_directory=True)
    assert len(find_runs(runs)) == 2

"""Progress off a terminal: plain lines, flushed as they happen, no escape codes; bars stay on a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recbench.compare import CellOutcome, GridCell, LiveGrid
from recbench.progress import LiveDisplay, ProgressDisplay, shows_bars
from recbench.runs.experiment import run_experiment

ESCAPE = "\x1b"
TINY = {"hidden_size": 8, "inner_size": 8, "max_seq_length": 8, "epochs": 3, "patience": 5}
RICH_OVERRIDES = ("TTY_INTERACTIVE", "TTY_COMPATIBLE", "FORCE_COLOR", "FORCE_TERMINAL")


class FlushCountingStream(io.StringIO):
    """A file-like non-terminal stream that counts flushes (what a pipe reader waits for)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No environment override of rich's terminal detection: only the stream decides."""
    for name in RICH_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def test_off_a_terminal_milestones_are_flushed_lines_and_bar_updates_print_nothing(plain_environment) -> None:
    stream = FlushCountingStream()
    with ProgressDisplay(stream=stream) as progress:
        task = progress.add_task("train", total=10)
        progress.update(task, advance=3, status="loss 1.0")
        progress.advance(task)
        assert stream.getvalue() == ""  # per-step updates are for bars only
        progress.line("epoch 0: loss 1.0000")
        assert stream.getvalue() == "epoch 0: loss 1.0000\n" and stream.flushes >= 1  # readable before the run ends
        progress.line("epoch 1: loss 0.5000")
    assert not progress.bars and stream.getvalue().splitlines() == ["epoch 0: loss 1.0000", "epoch 1: loss 0.5000"]


def test_on_a_terminal_the_rich_bar_stays_and_milestones_are_not_repeated_as_lines(plain_environment) -> None:
    terminal = FakeTerminal()
    assert shows_bars(terminal)
    with ProgressDisplay(stream=terminal) as progress:
        task = progress.add_task("epoch 0", total=4)
        progress.update(task, advance=4, status="loss 1.0")
        progress.line("epoch 0: loss 1.0000")
    assert progress.bars and ESCAPE in terminal.getvalue()  # rich drew (and redrew) a bar
    assert "epoch 0: loss 1.0000\n" not in terminal.getvalue()


def test_a_dumb_terminal_gets_lines(plain_environment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")  # it cannot move its cursor back over a bar
    assert not shows_bars(FakeTerminal())


def test_a_disabled_display_prints_nothing_anywhere(plain_environment) -> None:
    for stream in (io.StringIO(), FakeTerminal()):
        with ProgressDisplay(enabled=False, stream=stream) as progress:
            progress.update(progress.add_task("x", total=1), advance=1)
            progress.line("epoch 0")
        with LiveDisplay(lambda: "table", enabled=False, stream=stream) as live:
            live.refresh()
            live.line("cell 1/1")
        assert stream.getvalue() == ""


def test_the_compare_grid_prints_one_line_per_finished_cell_off_a_terminal(plain_environment) -> None:
    cells = [GridCell("synthetic-c", "sasrec", 2020), GridCell("synthetic-c", "gru4rec", 2020)]
    stream = FlushCountingStream()
    with LiveGrid(cells, stream=stream) as view:
        view(cells[0], "running", None)
        view(cells[1], "running", None)
        assert stream.getvalue() == ""  # a started cell is not a line; its end is
        view(cells[1], "failed", CellOutcome(cells[1], error="RuntimeError: boom\nsecond line", seconds=0.25))
        view(cells[0], "done", CellOutcome(cells[0], run_dir="runs/x", seconds=12.34))
    assert stream.getvalue().splitlines() == [
        "cell 1/2: synthetic-c / gru4rec / seed 2020: failed in 0.2 s: RuntimeError: boom",
        "cell 2/2: synthetic-c / sasrec / seed 2020: done in 12.3 s",
    ]
    assert stream.flushes >= 2


def test_training_prints_one_line_per_finished_epoch_off_a_terminal(
    toy_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str], plain_environment
) -> None:
    result = run_experiment("sasrec", "toy", seed=1, overrides=[TINY], runs_dir=tmp_path, device="cpu")
    lines = capsys.readouterr().err.splitlines()  # pytest's captured stderr is not a terminal
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    log = result.run.log
    assert len(epoch_lines) == len(log) == 3
    for line, entry in zip(epoch_lines, log):
        assert line.startswith(f"epoch {entry['epoch']}: loss {entry['loss']:.4f}, valid ndcg@10 ")
        assert f"{entry['valid']['ndcg@10']:.4f}" in line and line.endswith(" s")
    assert not any(ESCAPE in line for line in lines)


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``python -m recbench ARGS`` with its output to a pipe, as under CI, nohup or ``> file``."""
    environment = {k: v for k, v in os.environ.items() if k not in RICH_OVERRIDES}
    return subprocess.run(
        [sys.executable, "-m", "recbench", *args],
        capture_output=True,  # both streams are pipes
        text=True,
        env={**environment, "PYTHONPATH": str(Path(__file__).parents[1]), "TERM": "xterm-256color"},
        timeout=300,
    )


def settings(values: dict[str, int]) -> list[str]:
    return [argument for key, value in values.items() for argument in ("--set", f"{key}={value}")]


def test_train_and_compare_write_plain_lines_to_a_pipe(toy_dataset, tmp_path: Path) -> None:
    runs = ["--runs-dir", str(tmp_path / "runs"), "--device", "cpu"]
    train = run_cli(["train", "sasrec", "--dataset", "toy", *runs, *settings(TINY)])
    assert train.returncode == 0, train.stderr
    assert ESCAPE not in train.stdout + train.stderr
    epochs = [line for line in train.stderr.splitlines() if line.startswith("epoch ")]
    assert not any(line.startswith("epoch ") for line in train.stdout.splitlines())  # stdout: results only
    assert [line.split(":")[0] for line in epochs] == ["epoch 0", "epoch 1", "epoch 2"]

    compare = run_cli(["compare", "--datasets", "toy", "--methods", "sasrec", "--seeds", "2", *runs, *settings(TINY)])
    assert compare.returncode == 0, compare.stderr
    assert ESCAPE not in compare.stdout + compare.stderr
    cells = [line for line in compare.stderr.splitlines() if line.startswith("cell ")]
    assert len(cells) == 2 and cells[0].startswith("cell 1/2: toy / sasrec / seed 20")
    assert cells[1].startswith("cell 2/2: toy / sasrec / seed 20")
    # seed 2020 with these settings was trained by `train` above: compare reuses it
    assert {line.split(": ")[2].split(" in ")[0] for line in cells} == {"reused", "done"}
    assert "NDCG@10" in compare.stdout and "cell " not in compare.stdout  # the table alone on stdout

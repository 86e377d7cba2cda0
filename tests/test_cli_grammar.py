"""One CLI grammar: fixed choices refused at parse time, --runs-dir / --out / --format / --json alike everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from recbench import cli
from recbench.cli import app
from recbench.results import stats
from tests.test_report import write_run

runner = CliRunner()


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for method in ("base", "other"):
        for seed in (1, 2):
            write_run(tmp_path / "runs", "arts", method, seed, rng.integers(1, 500, size=80).astype(np.int32))
    return tmp_path / "runs"


@pytest.mark.parametrize(
    "args",
    [
        ["leaderboard", "--test", "ttest"],
        ["leaderboard", "--correction", "fdr"],
        ["leaderboard", "--split", "train"],
        ["leaderboard", "--by", "age"],
        ["leaderboard", "--format", "html"],
        ["compare", "--datasets", "a", "--executor", "slurm"],
        ["compare", "--datasets", "a", "--format", "md,docx"],
        ["train", "sasrec", "-d", "a", "--device", "gpu"],
        ["train", "sasrec", "-d", "a", "--protocol", "full,nope"],
        ["eval", "somewhere", "--split", "train"],
    ],
)
def test_a_value_outside_the_choices_is_a_usage_error_naming_them(args: list[str], recbench_home: Path) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output


def test_runs_dir_is_an_option_and_the_old_positional_form_still_works(runs: Path) -> None:
    by_option = runner.invoke(app, ["leaderboard", "--runs-dir", str(runs), "--format", "json"])
    by_argument = runner.invoke(app, ["leaderboard", str(runs), "--format", "json"])
    assert by_option.exit_code == 0 and json.loads(by_option.output) == json.loads(by_argument.output)
    both = runner.invoke(app, ["leaderboard", "elsewhere", "--runs-dir", str(runs)])
    assert both.exit_code == 1 and "two runs directories" in both.output


def test_out_is_a_file_by_its_suffix_or_a_prefix_per_format(runs: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["leaderboard", "--runs-dir", str(runs), "--out", str(tmp_path / "t"), "--format", "md,tex"]
    )
    assert result.exit_code == 0 and (tmp_path / "t.md").is_file() and (tmp_path / "t.tex").is_file()
    single = runner.invoke(app, ["leaderboard", "--runs-dir", str(runs), "--out", str(tmp_path / "one.csv")])
    assert single.exit_code == 0 and (tmp_path / "one.csv").read_text().startswith("dataset,metric")
    clash = runner.invoke(
        app, ["leaderboard", "--runs-dir", str(runs), "--out", str(tmp_path / "x.md"), "--format", "tex"]
    )
    assert clash.exit_code == 1 and "give a prefix" in clash.output
    several = runner.invoke(app, ["leaderboard", "--runs-dir", str(runs), "--format", "md,tex"])
    assert several.exit_code == 1 and "need --out PREFIX" in several.output


def test_leaderboard_exposes_the_statistics_settings(runs: Path) -> None:
    result = runner.invoke(
        app,
        ["leaderboard", "--runs-dir", str(runs), "--format", "json", "--test", "permutation", "--permutations", "500",
         "--resamples", "300", "--seed", "7", "--baseline", "base"],
    )  # fmt: skip
    settings = json.loads(result.output)["settings"]
    assert (settings["test"], settings["n_permutations"], settings["n_resamples"], settings["seed"]) == (
        "permutation", 500, 300, 7
    )  # fmt: skip
    assert cli.DEFAULT_PERMUTATIONS_OPTION == stats.DEFAULT_PERMUTATIONS
    assert cli.DEFAULT_RESAMPLES_OPTION == stats.DEFAULT_RESAMPLES


@pytest.mark.parametrize("what", ["methods", "datasets", "protocols", "recipes"])
def test_list_json(what: str, recbench_home: Path) -> None:
    result = runner.invoke(app, ["list", what, "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert rows and all(isinstance(row, dict) for row in rows)
    if what == "methods":
        assert {"sasrec", "unisrec", "automlp"} <= {row["name"] for row in rows}


def test_list_methods_is_readable_at_80_columns(recbench_home: Path) -> None:
    result = runner.invoke(app, ["list", "methods"], env={"COLUMNS": "80"})
    names = [line.split(":")[0] for line in result.output.splitlines() if line and not line.startswith(" ")]
    assert "idp-newencoder" in names and "unisrec-id" in names  # whole, never cut or wrapped


def test_download_and_train_json(recbench_home: Path, tmp_path: Path) -> None:
    downloaded = runner.invoke(app, ["download", "synthetic-c", "--json"])
    assert downloaded.exit_code == 0, downloaded.output
    assert json.loads(downloaded.stdout)[0]["name"] == "synthetic-c"
    args = ["train", "sasrec", "-d", "synthetic-c", "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"]
    tiny = ["--set", "hidden_size=8", "--set", "inner_size=8", "--set", "epochs=1", "--set", "max_seq_length=8"]
    trained = runner.invoke(app, [*args, *tiny, "--pretrain-on", "none", "--json"])
    assert trained.exit_code == 0, trained.output
    record = json.loads(trained.stdout)  # progress lines go to stderr
    assert record["reused"] is False and record["protocols"] == ["full"] and "hr@10" in record["test"]
    assert Path(record["run"], "status.json").is_file()


def test_every_command_has_an_example_in_its_help() -> None:
    group = get_command(app)
    for name, command in group.commands.items():
        assert "Example:" in (command.help or ""), f"recbench {name} --help has no example"

"""The ``recbench download`` command: thin, several names, import options, one-line errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from recbench.cli import app

runner = CliRunner()


def test_download_imports_a_table_with_named_columns(tmp_path: Path, recbench_home: Path) -> None:
    (tmp_path / "log.csv").write_text("who,what,when\n" + "".join(f"u{k % 2},i{k},{k}\n" for k in range(8)))
    result = runner.invoke(
        app,
        [
            "download",
            "toy",
            "--from",
            str(tmp_path / "log.csv"),
            "--user-col",
            "who",
            "--item-col",
            "what",
            "--time-col",
            "when",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "toy: 2 users, 8 items, 8 interactions" in result.output


def test_download_of_several_synthetic_names(recbench_home: Path) -> None:
    result = runner.invoke(app, ["download", "synthetic-a", "synthetic-c"])
    assert result.exit_code == 0, result.output
    assert "synthetic-a:" in result.output and "synthetic-c:" in result.output


def test_download_errors_are_one_line(tmp_path: Path, recbench_home: Path) -> None:
    result = runner.invoke(app, ["download", "a", "b", "--from", str(tmp_path)])
    assert result.exit_code == 1 and "--from imports one dataset" in result.output
    result = runner.invoke(app, ["download", "scientifc"])
    assert result.exit_code == 1 and "Did you mean: scientific" in result.output

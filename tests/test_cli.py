"""The command line: every command has help, user errors are one line, the main path works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recbench.cli import app
from tests.test_unisrec_import import write_unisrec

runner = CliRunner()
COMMANDS = sorted(command.name or command.callback.__name__ for command in app.registered_commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_every_command_appears_in_the_readme() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [c for c in COMMANDS if f"recbench {c}" not in readme]
    assert not missing


def test_help_does_not_import_torch() -> None:
    code = "import sys, recbench.cli; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_user_error_prints_one_line_and_exits_non_zero(recbench_home: Path) -> None:
    result = runner.invoke(app, ["train", "sasrek", "--dataset", "toy"])
    assert result.exit_code == 1
    assert "Did you mean: sasrec" in result.output
    assert "Traceback" not in result.output


def test_download_train_eval_list_end_to_end(tmp_path: Path, recbench_home: Path) -> None:
    sequences = {f"U{u}": [f"I{(u + k) % 12}" for k in range(6 + u % 4)] for u in range(30)}
    write_unisrec(tmp_path / "src", "Toy", sequences, {f"I{i}": f"text {i}" for i in range(12)})
    result = runner.invoke(app, ["download", "toy", "--from", str(tmp_path / "src")])
    assert result.exit_code == 0, result.output
    assert "30 users" in result.output

    listing = runner.invoke(app, ["list", "datasets"])
    assert "toy" in listing.output and "30 / 12" in listing.output
    assert "suite" in listing.output and "synthetic-a" in listing.output  # the demo suite's source domain

    args = ["train", "sasrec", "--dataset", "toy", "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"]
    for assignment in ("hidden_size=8", "inner_size=8", "epochs=2", "max_seq_length=8"):
        args += ["--set", assignment]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs").rglob("status.json")).parent
    stored = json.loads((run_dir / "metrics.json").read_text())["test"]

    result = runner.invoke(app, ["eval", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["metrics"] == pytest.approx(stored)

    masked = runner.invoke(app, ["eval", str(run_dir), "--mask-history", "--json"])
    assert json.loads(masked.output)["protocol"]["mask_history"] is True


def test_train_pre_trains_on_sources_with_the_given_pretrain_seed(tmp_path: Path, recbench_home: Path) -> None:
    from recbench.data.dataset import save_dataset
    from tests.conftest import make_cyclic_dataset

    for name, seed in (("src", 1), ("target", 2)):
        save_dataset(make_cyclic_dataset(name, items=20, seed=seed))
    args = [
        "train",
        "idasr",
        "--dataset",
        "target",
        "--seed",
        "7",
        "--pretrain-on",
        "src",
        "--pretrain-seed",
        "3",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--device",
        "cpu",
    ]
    for assignment in (
        "item_size=8",
        "semantic_hidden_size=8",
        "inner_size=8",
        "max_seq_length=8",
        "epochs=1",
        "pretrain_epochs=1",
    ):
        args += ["--set", assignment]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (pretrain_run,) = [p.parent.name for p in (tmp_path / "runs" / "_pretrain").rglob("status.json")]
    (fine_tuned,) = [p.parent for p in (tmp_path / "runs" / "target").rglob("status.json")]
    assert pretrain_run.startswith("seed3-") and fine_tuned.name.startswith("seed7-")
    assert json.loads((fine_tuned / "config.json").read_text())["pretrained"] == pretrain_run


def test_list_methods_shows_sasrec() -> None:
    result = runner.invoke(app, ["list", "methods"])
    assert result.exit_code == 0 and "sasrec" in result.output


def test_readme_shows_the_real_sasrec_plugin() -> None:
    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    plugin = (root / "plugins" / "sasrec.py").read_text()
    model = plugin[plugin.index("@register") :].rstrip()
    assert model in readme


def test_version_prints_the_package_version() -> None:
    from recbench import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"recbench {__version__}"


def test_show_lists_every_config_field_with_type_default_and_docstring() -> None:
    from recbench.registry import get_method, resolve_config

    result = runner.invoke(app, ["show", "idp-zeroshot"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    config = resolve_config(get_method("idp-zeroshot"))
    for name in type(config).model_fields:
        assert f"│ {name} " in result.output
    assert "0 (preset)" in result.output  # the variant's preset is shown as such
    assert "float | None" in result.output and "Adam learning rate." in result.output
    unknown = runner.invoke(app, ["show", "sasrek"])
    assert unknown.exit_code == 1 and "Did you mean: sasrec" in unknown.output

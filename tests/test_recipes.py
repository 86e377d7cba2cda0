"""Recipes: published tables as TOML, run end to end on SYNTHETIC data, published numbers beside ours."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recbench.cli import app
from recbench.compare import check_overrides, overrides_for
from recbench.errors import RecbenchError
from recbench.recipes import get_recipe, recipe_names, run_recipe

RECIPE = """
title = "A test table"
source = "Nobody et al., Test 2026, Table 1"
protocol = "full-masked"
metrics = ["hr@10", "ndcg@10"]
seeds = 1
datasets = ["synthetic-c"]
notes = "SYNTHETIC data."

[stand_ins]
synthetic-c = "synthetic-b"

[[rows]]
label = "SASRec (paper)"
method = "sasrec"
settings = { hidden_size = 8, inner_size = 8 }
[rows.published]
synthetic-c = { "hr@10" = 0.5, "ndcg@10" = 0.25 }

[[rows]]
label = "SASRec (same run)"
method = "sasrec"
settings = { inner_size = 8, hidden_size = 8 }

[[rows]]
label = "SASRec w/o dropout"
method = "sasrec"
settings = { hidden_size = 8, inner_size = 8, hidden_dropout_prob = 0.0, attn_dropout_prob = 0.0 }
"""
SMALL = {"max_seq_length": 8, "epochs": 2}


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "test-table.toml"
    path.write_text(RECIPE)
    return path


def test_a_recipe_runs_end_to_end_with_its_published_numbers(recbench_home, recipe_file: Path, tmp_path: Path) -> None:
    report, outcomes = run_recipe(
        str(recipe_file),
        tmp_path / "runs",
        overrides=[SMALL],
        device="cpu",
        live=False,
        out=str(tmp_path / "t"),
        formats=("md", "csv", "json"),
    )
    assert all(o.error is None for o in outcomes) and len(outcomes) == 3
    # Two rows of one method with different settings are two runs and two rows; rows resolving to the
    # same run share it (run once).
    assert report.methods == ["SASRec (paper)", "SASRec (same run)", "SASRec w/o dropout"]
    assert len({o.run_dir for o in outcomes}) == 2 and outcomes[0].run_dir == outcomes[1].run_dir
    assert report.protocols["synthetic-c"]["name"] == "full-masked"
    measured = report.cell("synthetic-c", "SASRec (paper)").mean["hr@10"]
    assert report.delta_pct("synthetic-c", "SASRec (paper)", "hr@10") == pytest.approx(100 * (measured / 0.5 - 1))
    assert report.delta_pct("synthetic-c", "SASRec w/o dropout", "hr@10") is None  # nothing published for it
    markdown = (tmp_path / "t.md").read_text()
    assert "published (Δ%)" in markdown and "0.5000 (" in markdown and "Nobody et al., Test 2026, Table 1" in markdown
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    paper = next(r for r in rows if r["method"] == "SASRec (paper)" and r["metric"] == "ndcg@10")
    assert float(paper["published"]) == 0.25 and paper["delta_pct"]
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["published"]["synthetic-c"]["SASRec (paper)"]["hr@10"] == 0.5

    # Running it again reuses every finished run: the same command is the recipe's leaderboard.
    again, outcomes = run_recipe(str(recipe_file), tmp_path / "runs", overrides=[SMALL], device="cpu", live=False)
    assert all(o.reused for o in outcomes)
    assert again.cell("synthetic-c", "SASRec (paper)").mean == report.cell("synthetic-c", "SASRec (paper)").mean


def test_stand_ins_are_used_on_request_and_said_in_the_caption(
    recbench_home, recipe_file: Path, tmp_path: Path
) -> None:
    report, _ = run_recipe(
        str(recipe_file), tmp_path / "runs", stand_ins=True, overrides=[SMALL], device="cpu", live=False
    )
    assert report.datasets == ["synthetic-b"]
    assert "synthetic-b stands in for the paper's synthetic-c" in report.to_markdown()
    assert report.published_value("synthetic-b", "SASRec (paper)", "hr@10") == 0.5
    with pytest.raises(RecbenchError, match="does not use: arts"):
        run_recipe(str(recipe_file), tmp_path / "runs", use={"arts": "x"}, live=False)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (('"hr@10" = 0.5', '"hr@20" = 0.5'), "not in metrics"),
        (('"hr@10" = 0.5', '"hr@10" = 50.0'), "fractions"),
        (("seeds = 1", "seeds = 0"), "seeds"),
        (('label = "SASRec w/o dropout"', 'label = "SASRec (paper)"'), "share the label"),
        (('title = "A test table"', 'title = "A test table"\ncolour = "red"'), "colour"),
        (('protocol = "full-masked"', 'protocol = "full-masked'), "not valid TOML"),
    ],
)
def test_a_bad_recipe_is_one_clear_error(tmp_path: Path, change: tuple[str, str], problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(RECIPE.replace(*change))
    with pytest.raises(RecbenchError, match=problem):
        get_recipe(str(path))


def test_every_shipped_recipe_is_valid_and_runnable_here() -> None:
    from recbench.data.catalog import get_dataset_spec
    from recbench.registry import get_method, resolve_config
    from recbench.runs.protocols import get_protocol

    assert len(recipe_names()) >= 9
    for name, source in recipe_names().items():
        assert source == "built in"
        recipe = get_recipe(name)
        get_protocol(recipe.protocol)
        for dataset in [*recipe.datasets, *recipe.pretrain_on]:
            get_dataset_spec(dataset)  # in the catalogue
        for row in recipe.rows:
            shared = overrides_for(row.method, [recipe.settings])[0]
            resolve_config(get_method(row.method), shared, row.settings)  # a registered method that knows its settings
            for settings in row.dataset_settings.values():
                resolve_config(get_method(row.method), shared, row.settings, settings)
        check_overrides([row.method for row in recipe.rows], [recipe.settings])  # every shared key reaches a row
        assert recipe.source and recipe.title
        pretrains = recipe.pretrain_on and any(
            row.pretrain and get_method(row.method).cls.supports_pretraining for row in recipe.rows
        )
        if pretrains:  # the official 300 epochs is the default: a recipe states its budget, and says so
            budget = recipe.settings.get("pretrain_epochs")
            assert isinstance(budget, int), f"{name} pre-trains but sets no pretrain_epochs"
            assert f"pretrain_epochs = {budget}" in recipe.notes or f"pretrain_epochs {budget}" in recipe.notes, name
            assert "default is 10" not in recipe.notes and "default (10)" not in recipe.notes, name


def test_recipe_settings_lie_beneath_set_and_the_rows_own(recbench_home, tmp_path: Path) -> None:
    from recbench.runs.record import RunRecord

    text = RECIPE.replace(
        'notes = "SYNTHETIC data."', 'notes = "SYNTHETIC data."\nsettings = { hidden_size = 12, epochs = 1 }'
    )
    text = text.replace("settings = { hidden_size = 8, inner_size = 8 }\n", "settings = { inner_size = 8 }\n", 1)
    path = tmp_path / "shared.toml"
    path.write_text(text)
    assert get_recipe(str(path)).settings == {"hidden_size": 12, "epochs": 1}
    report, outcomes = run_recipe(str(path), tmp_path / "runs", overrides=[SMALL], device="cpu", live=False)
    configs = {o.cell.row: RunRecord(Path(o.run_dir)).config["config"] for o in outcomes}
    assert configs["SASRec (paper)"]["hidden_size"] == 12  # the recipe's shared setting
    assert configs["SASRec (same run)"]["hidden_size"] == 8  # a row's own setting wins
    assert {c["epochs"] for c in configs.values()} == {SMALL["epochs"]}  # --set wins over the recipe's
    path.write_text(text.replace("epochs = 1 }", "epochs = 1, no_such_key = 1 }"))
    with pytest.raises(RecbenchError, match="no_such_key"):
        run_recipe(str(path), tmp_path / "runs", device="cpu", live=False)


def test_cli_recipe(recbench_home, recipe_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    sets = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    result = runner.invoke(
        app,
        ["compare", "--recipe", str(recipe_file), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", *sets],
    )
    assert result.exit_code == 0, result.output
    assert "published (Δ%)" in result.output
    clash = runner.invoke(app, ["compare", "--recipe", str(recipe_file), "--datasets", "arts"])
    assert clash.exit_code == 1 and "drop --datasets" in clash.output
    listed = runner.invoke(app, ["list", "recipes"])
    assert listed.exit_code == 0


def test_a_row_without_pre_training_reads_no_sources() -> None:
    from recbench.compare import MethodRow, _needs, grid

    scratch, transfer = grid(["a"], [MethodRow("w/o PT", "vqrec", {}, pretrain=False), "vqrec"], seeds=1)
    assert _needs(scratch, ["food"]) == ["a"] and _needs(transfer, ["food"]) == ["a", "food"]


def test_a_row_with_init_reads_no_sources_and_dataset_settings_apply_to_their_dataset_only() -> None:
    from recbench.compare import MethodRow, _needs, grid

    row = MethodRow(
        "official",
        "vqrec",
        {"learning_rate": 0.003},
        init="official:X",
        dataset_settings={"b": {"learning_rate": 0.001}},
    )
    on_a, on_b = grid(["a", "b"], [row], seeds=1)
    assert not on_a.grid_pretraining and _needs(on_a, ["food"]) == ["a"]
    assert json.loads(on_a.settings) == {"learning_rate": 0.003} and json.loads(on_b.settings) == {
        "learning_rate": 0.001
    }
    assert on_a.init == on_b.init == "official:X"


def test_dataset_settings_for_a_dataset_the_recipe_does_not_use_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        RECIPE.replace(
            "settings = { inner_size = 8, hidden_size = 8 }",
            "settings = { inner_size = 8, hidden_size = 8 }\ndataset_settings = { arts = { hidden_size = 4 } }",
        )
    )
    with pytest.raises(RecbenchError, match="dataset_settings for \\['arts'\\]"):
        get_recipe(str(path))


def test_a_recipe_row_with_init_is_fine_tuned_from_that_checkpoint(recbench_home, tmp_path: Path) -> None:
    from recbench.data.dataset import save_dataset
    from recbench.runs.official import read_checkpoint
    from tests.conftest import make_cyclic_dataset
    from tests.test_official_checkpoints import UNISREC, official_unisrec_state, save_official

    save_dataset(make_cyclic_dataset("target", items=20, seed=2))
    checkpoint = save_official(tmp_path / "official.pth", official_unisrec_state(text=384))
    settings = ", ".join(f"{key} = {json.dumps(value)}" for key, value in {**UNISREC, "epochs": 0}.items())
    recipe = tmp_path / "official-route.toml"
    recipe.write_text(
        f"""title = "T"\nsource = "S"\nmetrics = ["hr@10"]\nseeds = 1\ndatasets = ["target"]\npretrain_on = ["food"]
[[rows]]
label = "UniSRec (official checkpoint)"
method = "unisrec"
init = {json.dumps(str(checkpoint))}
settings = {{ {settings} }}
"""
    )
    report, (outcome,) = run_recipe(str(recipe), tmp_path / "runs", device="cpu", live=False)
    assert outcome.error is None, outcome.error
    record = json.loads((Path(outcome.run_dir) / "config.json").read_text())
    assert record["init"]["sha256"] == read_checkpoint(checkpoint).sha256
    assert not (tmp_path / "runs" / "_pretrain").exists()  # the recipe's sources were never pre-trained on

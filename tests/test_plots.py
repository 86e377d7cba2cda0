"""Figures and breakdowns of stored runs on the SYNTHETIC demo suite (runs written directly, no training).

Every figure is checked to be a valid file, and every plotted number against what the leaderboard
computes: rank-CDF points are hit rates of the stored ranks, seed values and forest intervals are the
leaderboard JSON's cells and comparisons, and the groups of a breakdown are checked user by user.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recbench.cli import app
from recbench.data.dataset import Dataset, load_dataset
from recbench.errors import RecbenchError, RunError
from recbench.results.breakdown import (
    COLD_MAX,
    HEAD_SHARE,
    breakdown_leaderboard,
    history_groups,
    popularity_groups,
)
from recbench.results.leaderboard import leaderboard, load_results
from recbench.results.plots import (
    KINDS,
    breakdown_bars,
    figure_path,
    forest_data,
    plot,
    pretraining_curves,
    rank_cdf_points,
    seed_values,
    training_curves,
    write_figures,
)
from recbench.results.report import build_report
from recbench.results.stats import per_user_metric
from recbench.runs.metrics import metrics_from_ranks
from recbench.runs.record import RunRecord
from tests.test_report import write_run

runner = CliRunner()
DATASETS = ("synthetic-b", "synthetic-c")
SEEDS = (2020, 2021)
QUALITY = {"sasrec": 0.02, "bert4rec": 0.012, "unisrec": 0.03}  # geometric rank parameter: larger = better
PRETRAIN_RUN = "seed2020-0123456789"
HEADERS = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}


def ranks_for(dataset: Dataset, method: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, len(method), dataset.num_users])
    return np.minimum(rng.geometric(QUALITY[method], size=dataset.num_users), dataset.num_items).astype(np.int32)


def log_for(method: str, seed: int, epochs: int = 4) -> list[dict]:
    return [
        {
            "epoch": e,
            "loss": 6.0 - 0.1 * e - 0.01 * (seed - 2020),
            "valid": {"ndcg@10": 0.02 + 0.01 * e + QUALITY[method]},
            "train_seconds": 1.0,
            "valid_seconds": 0.1,
        }
        for e in range(epochs)
    ]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """($RECBENCH_HOME, runs dir): two SYNTHETIC datasets, three methods (unisrec fine-tuned from a
    pre-training run, bert4rec with one seed), written as `recbench train` leaves them."""
    from recbench.data.download import download

    home, runs = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECBENCH_HOME", str(home))
        for name in DATASETS:
            download(name, show_progress=False)
            dataset = load_dataset(name)
            for method in QUALITY:
                for seed in SEEDS[:1] if method == "bert4rec" else SEEDS:
                    pretrained = PRETRAIN_RUN if method == "unisrec" else None
                    ranks = ranks_for(dataset, method, seed)
                    run = write_run(
                        runs,
                        name,
                        method,
                        seed,
                        ranks,
                        fingerprint=dataset.fingerprint,
                        pretrained=pretrained,
                        num_candidates=dataset.num_items,
                    )
                    run.write_log(log_for(method, seed))
        pretrain = RunRecord(runs / "_pretrain" / "synthetic-a" / "unisrec" / PRETRAIN_RUN)
        pretrain.write_config({"method": "unisrec", "seed": 2020, "stage": "pretrain", "dataset": "synthetic-a"})
        pretrain.write_log([{"epoch": e, "loss": 9.0 - e, "valid": {}} for e in range(3)])
        pretrain.mark_finished()
    return home, runs


@pytest.fixture
def runs(suite: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RECBENCH_HOME", str(suite[0]))
    return suite[1]


def report_json(runs: Path, **options) -> dict:
    return json.loads(leaderboard(runs, **options).to_json())


def cell(data: dict, dataset: str, method: str) -> dict:
    return next(c for c in data["cells"] if c["dataset"] == dataset and c["method"] == method)


# --- plotted numbers -------------------------------------------------------------------------
def test_rank_cdf_points_are_hit_rates_of_the_stored_ranks_averaged_over_seeds(runs: Path) -> None:
    results = load_results(runs)
    ks = [1, 3, 10, 50, 77, 250]
    points = rank_cdf_points(results, "synthetic-c", ks)
    dataset = load_dataset("synthetic-c")
    single = ranks_for(dataset, "bert4rec", 2020)
    assert points["bert4rec"].share.tolist() == [np.mean(single <= k) for k in ks]
    per_seed = [ranks_for(dataset, "sasrec", s) for s in SEEDS]
    expected = [np.mean([np.mean(r <= k) for r in per_seed]) for k in ks]
    assert points["sasrec"].share == pytest.approx(expected, abs=1e-15)
    data = report_json(runs, metrics=["hr@10", "hr@50"])
    for method in ("sasrec", "unisrec (pre-trained)", "bert4rec"):  # the leaderboard's HR@k, seeds averaged per user
        for k in (10, 50):
            share = points[method].share[ks.index(k)]
            assert share == pytest.approx(cell(data, "synthetic-c", method)["mean"][f"hr@{k}"], abs=1e-12)
    default = rank_cdf_points(results, "synthetic-c")["sasrec"]
    assert default.ks[0] == 1 and default.ks[-1] == dataset.num_items and default.share[-1] == 1.0
    assert np.all(np.diff(default.share) >= 0) and {5, 10, 20, 50} <= set(default.ks.tolist())


def test_seed_values_are_the_leaderboard_cells_per_seed(runs: Path) -> None:
    data = report_json(runs, metrics=["ndcg@10", "mrr"])
    results = load_results(runs)
    for metric in ("ndcg@10", "mrr"):
        values = seed_values(results, "synthetic-b", metric)
        assert set(values) == {"sasrec", "bert4rec", "unisrec (pre-trained)"}
        for method, by_seed in values.items():
            shown = cell(data, "synthetic-b", method)
            assert sorted(by_seed) == shown["seeds"]
            assert np.mean(list(by_seed.values())) == pytest.approx(shown["mean"][metric], abs=1e-12)
            if len(by_seed) > 1:
                assert np.std(list(by_seed.values()), ddof=1) == pytest.approx(shown["std"][metric], abs=1e-12)
            else:
                assert shown["std"][metric] is None  # one seed: NaN, null in JSON
        dataset = load_dataset("synthetic-b")
        assert values["bert4rec"][2020] == metrics_from_ranks(ranks_for(dataset, "bert4rec", 2020), (10,))[metric]


def test_forest_data_are_the_leaderboard_json_comparisons(runs: Path) -> None:
    options = {"metrics": ["hr@10", "ndcg@10"], "baseline": "sasrec", "correction": "bonferroni"}
    report = leaderboard(runs, **options)
    data = report_json(runs, **options)
    for dataset in DATASETS:
        for metric in options["metrics"]:
            rows = forest_data(report, dataset, metric)
            expected = [c for c in data["comparisons"] if c["dataset"] == dataset and c["metric"] == metric]
            assert [r.method for r in rows] == [c["method"] for c in expected] == ["bert4rec", "unisrec (pre-trained)"]
            for row, c in zip(rows, expected):
                assert row.baseline == c["other"] == "sasrec"
                assert (row.mean_diff, row.ci_low, row.ci_high) == (
                    c["stats"]["mean_diff"],
                    c["stats"]["ci_low"],
                    c["stats"]["ci_high"],
                )
                assert (row.p_adjusted, row.significant) == (c["p_adjusted"], c["significant"])
                assert row.ci_low <= row.mean_diff <= row.ci_high
    with pytest.raises(RecbenchError, match="--baseline"):
        forest_data(leaderboard(runs), "synthetic-b", "hr@10")


def test_curves_are_the_run_logs_and_the_pre_training_log(runs: Path) -> None:
    results = load_results(runs)
    curves = training_curves(results, "synthetic-c")
    assert {m: [c.seed for c in cs] for m, cs in curves.items()} == {
        "bert4rec": [2020],
        "sasrec": [2020, 2021],
        "unisrec (pre-trained)": [2020, 2021],
    }
    sasrec = curves["sasrec"][1]
    assert sasrec.loss == [e["loss"] for e in log_for("sasrec", 2021)]
    assert sasrec.valid == [e["valid"]["ndcg@10"] for e in log_for("sasrec", 2021)] and sasrec.epochs == [0, 1, 2, 3]
    pretraining = pretraining_curves(results, "synthetic-c")
    assert list(pretraining) == ["unisrec (pre-trained)"]  # both seeds were fine-tuned from the same run: once
    (curve,) = pretraining["unisrec (pre-trained)"]
    assert curve.loss == [9.0, 8.0, 7.0] and all(math.isnan(v) for v in curve.valid)
    assert curve.source.endswith(f"_pretrain/synthetic-a/unisrec/{PRETRAIN_RUN}")


# --- breakdowns ------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["test", "valid"])
def test_history_groups_by_brute_force(runs: Path, split: str) -> None:
    dataset = load_dataset("synthetic-c")
    groups = history_groups(dataset, split)
    assert [g.name for g in groups] == ["1-5", "6-10", "11-20", "21+"]
    expected: dict[str, list[int]] = {g.name: [] for g in groups}
    for user in range(dataset.num_users):
        before = len(dataset.sequence(user)) - (1 if split == "test" else 2)  # items before the target
        name = "1-5" if before <= 5 else "6-10" if before <= 10 else "11-20" if before <= 20 else "21+"
        expected[name].append(user)
    assert {g.name: g.users.tolist() for g in groups} == expected
    _, lengths, _ = dataset.eval_examples(split, max_history=1000)  # the evaluator's histories, uncut
    assert all(((lengths[g.users] >= g.low) & (lengths[g.users] <= (g.high or 10**9))).all() for g in groups)


@pytest.mark.parametrize("split", ["test", "valid"])
def test_popularity_groups_by_brute_force(runs: Path, split: str) -> None:
    dataset = load_dataset("synthetic-b")
    counts: Counter[int] = Counter()
    for user in range(dataset.num_users):
        counts.update(int(i) for i in dataset.sequence(user)[:-2])  # training part: all but the last two
    by_item = sorted((counts[i] for i in range(1, dataset.num_items + 1)), reverse=True)
    head_min = max(by_item[math.ceil(HEAD_SHARE * dataset.num_items) - 1], COLD_MAX + 1)
    expected: dict[str, list[int]] = {"cold": [], "mid": [], "head": []}
    for user in range(dataset.num_users):
        target = int(dataset.sequence(user)[-1 if split == "test" else -2])
        count = counts[target]
        expected["cold" if count <= COLD_MAX else "head" if count >= head_min else "mid"].append(user)
    groups = popularity_groups(dataset, split)
    assert {g.name: g.users.tolist() for g in groups} == expected
    assert all(expected.values())  # the SYNTHETIC data fill every group
    head = next(g for g in groups if g.name == "head")
    share = sum(c >= head_min for c in by_item) / dataset.num_items
    assert share >= HEAD_SHARE  # the top 20%, and items tied with the last of them
    assert (
        head.low == head_min
        and f"at least {head_min} training interactions, the top {round(100 * share, 1):g}% of items" in head.label
    )


@pytest.mark.parametrize("by", ["history", "popularity"])
def test_breakdown_tables_are_leaderboards_of_the_groups_users(runs: Path, by: str) -> None:
    report = breakdown_leaderboard(runs, by, metrics=["hr@10", "ndcg@10"], baseline="sasrec")
    data = json.loads(report.to_json())
    groups = data["breakdown"]["groups"]
    for name in DATASETS:
        dataset = load_dataset(name)
        mine = [g for g in groups if g["dataset"] == name]
        omitted = [g for g in data["breakdown"]["omitted"] if g["dataset"] == name]
        assert sum(g["n_users"] for g in mine + omitted) == dataset.num_users  # every user in exactly one group
        assert all(g["n_users"] < 2 for g in omitted)
        for group in report.groups_of(name):
            assert group.label.startswith(f"{name}, ") and group.label in report.datasets
            for method, seeds in (("sasrec", SEEDS), ("bert4rec", SEEDS[:1])):
                shown = cell(data, group.label, method)
                per_seed = [metrics_from_ranks(ranks_for(dataset, method, s)[group.users], (10,)) for s in seeds]
                for metric in ("hr@10", "ndcg@10"):
                    assert shown["mean"][metric] == pytest.approx(np.mean([m[metric] for m in per_seed]), abs=1e-12)
            # the paired tests within the group are build_report's on the restricted runs
            subset = [r for r in load_results(runs, [name])]
            for r in subset:
                r.dataset, r.ranks = "group", r.ranks[group.users]
            alone = build_report(subset, ["hr@10", "ndcg@10"], baseline="sasrec")
            assert [c.stats for c in alone.comparisons] == [c.stats for c in report.comparisons_for(group.label)]
            assert [c.p_adjusted for c in alone.comparisons] == [
                c.p_adjusted for c in report.comparisons_for(group.label)
            ]
    markdown = report.to_markdown()
    if by == "popularity":
        assert "cold targets (at most 5 training interactions)" in markdown and "% of items)" in markdown
    else:
        assert "users with 6-10 interactions before the target" in markdown
    assert "SYNTHETIC demo data" in markdown  # group tables keep the dataset's caption


@pytest.mark.parametrize("by", ["history", "popularity"])
def test_breakdown_bars_are_the_group_cells(runs: Path, by: str) -> None:
    report = breakdown_leaderboard(runs, by, metrics=["ndcg@10"], baseline="sasrec")
    data = json.loads(report.to_json())
    bars = breakdown_bars(report, "synthetic-c", "ndcg@10")
    groups = report.groups_of("synthetic-c")
    assert bars.groups == [g.name for g in groups] and bars.n_users == [g.n_users for g in groups]
    for group in groups:
        for method in bars.methods:
            shown = cell(data, group.label, method)
            assert bars.mean[method, group.name] == shown["mean"]["ndcg@10"]
            significant = [
                c
                for c in data["comparisons"]
                if c["dataset"] == group.label and c["method"] == method and c["significant"]
            ]
            expected = ("+" if significant[0]["stats"]["mean_diff"] > 0 else "-") if significant else ""
            assert bars.marks[method, group.name] == expected


def test_a_breakdown_needs_the_data_the_runs_were_made_on(runs: Path, tmp_path: Path) -> None:
    dataset = load_dataset("synthetic-c")
    other = tmp_path / "runs"
    write_run(other, "synthetic-c", "sasrec", 1, ranks_for(dataset, "sasrec", 1), fingerprint="0" * 64,
              num_candidates=dataset.num_items)  # fmt: skip
    with pytest.raises(RunError, match="not the data its runs were made on"):
        breakdown_leaderboard(other, "history")
    with pytest.raises(RecbenchError, match="unknown breakdown 'age'"):
        breakdown_leaderboard(runs, "age")
    result = runner.invoke(app, ["leaderboard", str(other), "--by", "popularity"])
    assert result.exit_code == 1 and "not the data its runs were made on" in result.output
    assert "Traceback" not in result.output


# --- files -----------------------------------------------------------------------------------
# each kind once, each format twice (formats: matplotlib's own writers, the same for every kind)
@pytest.mark.parametrize(
    ("kind", "fmt"),
    list(zip(KINDS, ["pdf", "svg", "png", "pdf", "svg", "png"])),
)
def test_every_kind_of_figure_is_written(runs: Path, tmp_path: Path, kind: str, fmt: str) -> None:
    out = tmp_path / f"{kind}.{fmt}"
    path = plot(kind, runs, out, dataset="synthetic-c", metrics=["ndcg@10"], baseline="sasrec")
    assert path == out and out.stat().st_size > 1000
    assert out.read_bytes().startswith(HEADERS[fmt])
    if fmt == "svg":
        assert b"<svg" in out.read_bytes()[:2000]
    assert plot(kind, runs, tmp_path / kind, dataset="synthetic-c", baseline="sasrec", fmt="png").suffix == ".png"


def test_plot_command_writes_the_figure_and_leaderboard_by_prints_the_groups(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "forest"
    args = ["plot", str(runs), "--kind", "forest", "--out", str(out), "--format", "svg", "--dataset", "synthetic-b"]
    result = runner.invoke(app, [*args, "--baseline", "sasrec", "--metrics", "hr@10,ndcg@10"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "forest.svg").read_bytes().startswith(HEADERS["svg"]) and "forest.svg" in result.output
    result = runner.invoke(app, ["plot", str(runs), "--kind", "seeds"])
    assert result.exit_code == 1 and "pick one with --dataset" in result.output
    result = runner.invoke(app, ["plot", str(runs), "--kind", "forest", "--dataset", "synthetic-b"])
    assert result.exit_code == 1 and "pass --baseline" in result.output
    result = runner.invoke(app, ["leaderboard", str(runs), "--by", "popularity", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["breakdown"]["by"] == "popularity" and len(data["breakdown"]["groups"]) == 6
    result = runner.invoke(app, ["leaderboard", str(runs), "--by", "history", "--datasets", "synthetic-c"])
    assert result.exit_code == 0 and "11-20 interactions before the target" in result.output


def test_figure_format_comes_from_the_suffix_or_format(tmp_path: Path) -> None:
    assert figure_path(tmp_path / "a.PDF") == (tmp_path / "a.PDF", "pdf")
    assert figure_path(tmp_path / "a", "svg") == (tmp_path / "a.svg", "svg")
    with pytest.raises(RecbenchError, match="pass --format"):
        figure_path(tmp_path / "a.jpg")
    with pytest.raises(RecbenchError, match="make them agree"):
        figure_path(tmp_path / "a.png", "pdf")


def test_without_matplotlib_plot_is_one_line_and_compare_skips_figures_with_a_note(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(RecbenchError, match=r"pip install 'recbench\[plot\]'"):
        plot("curves", runs, tmp_path / "x.png", dataset="synthetic-b")
    result = runner.invoke(app, ["plot", str(runs), "--kind", "curves", "--dataset", "synthetic-b"])
    assert result.exit_code == 1 and "pip install 'recbench[plot]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    report = leaderboard(runs)
    assert write_figures(report, load_results(runs), tmp_path / "t") == []
    assert capsys.readouterr().err.count("note: figures not written") == 1
    assert not list(tmp_path.glob("t-*"))


def test_compare_writes_figures_next_to_its_tables(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import recbench.compare
    import recbench.results.plots as plots
    from recbench.compare import CellOutcome, compare

    stored = {(r.dataset, RunRecord(r.source).config["method"], r.seed): r.source for r in load_results(runs)}

    def finished_grid(cells, *args, **kwargs) -> list[CellOutcome]:  # the grid's runs exist already
        return [CellOutcome(c, stored[c.dataset, c.method, c.seed], reused=True) for c in cells]

    monkeypatch.setattr(recbench.compare, "run_grid", finished_grid)
    prefix = tmp_path / "out" / "demo"
    options = {"methods": ["sasrec", "unisrec"], "seeds": 2, "runs_dir": runs, "live": False, "formats": ["md"]}
    compare(["synthetic-c"], baseline="sasrec", out=str(prefix), **options)
    names = sorted(p.name for p in prefix.parent.iterdir())
    assert names == ["demo-curves.png", "demo-forest.png", "demo-rank-cdf.png", "demo-seeds.png", "demo.md"]
    assert all(p.read_bytes().startswith(HEADERS["png"]) for p in prefix.parent.glob("*.png"))
    assert "note:" not in capsys.readouterr().err

    def sketch(*args) -> Path:  # names only: each figure as an empty file
        Path(args[-1]).touch()
        return Path(args[-1])

    for name in ("plot_curves", "plot_rank_cdf", "plot_seeds", "plot_forest"):
        monkeypatch.setattr(plots, name, sketch)
    compare(list(DATASETS), out=str(tmp_path / "two" / "demo"), **options)  # no baseline: no forest
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == sorted(
        ["demo.md"] + [f"demo-{k}-{d}.png" for k in ("curves", "rank-cdf", "seeds") for d in DATASETS]
    )

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    compare(["synthetic-c"], out=str(tmp_path / "none" / "demo"), **options)
    assert sorted(p.name for p in (tmp_path / "none").iterdir()) == ["demo.md"]
    assert capsys.readouterr().err.count("pip install 'recbench[plot]'") == 1


def test_seed_values_use_the_per_user_metric_of_the_report(runs: Path) -> None:
    dataset = load_dataset("synthetic-c")
    values = seed_values(load_results(runs, ["synthetic-c"]), "synthetic-c", "ndcg@20")
    ranks = ranks_for(dataset, "sasrec", 2021)
    assert values["sasrec"][2021] == per_user_metric(ranks, "ndcg@20").mean()

"""Reports and leaderboards: built from run directories holding synthetic
per-user ranks (no model is trained here), exported tables checked against golden files.

Regenerate the golden files after an intended change with ``RECBENCH_UPDATE_GOLDEN=1 pytest tests/test_report.py``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from rich.console import Console

from recbench.errors import RecbenchError, RunError, UnknownNameError
from recbench.results.leaderboard import leaderboard, load_results
from recbench.results.report import RunResult, build_report, latex_escape
from recbench.results.stats import adjust, per_user_metric
from recbench.runs.metrics import TIE_POLICY, EvalResult, metrics_from_ranks
from recbench.runs.record import RunRecord

GOLDEN = Path(__file__).parent / "golden"
USERS = 400


def synthetic_ranks(spread: int, shift: int = 0, users: int = USERS) -> np.ndarray:
    """Deterministic per-user ranks in 1..spread (smaller spread = better method), no RNG involved."""
    return (1 + (np.arange(users) * 37 + shift) % spread).astype(np.int32)


def protocol(users: int = USERS, mask_history: bool = False) -> dict:
    return {
        "split": "test",
        "candidates": "all items",
        "num_candidates": 500,
        "num_users": users,
        "mask_history": mask_history,
        "ties": TIE_POLICY,
        "max_history": 50,
    }


def write_run(
    runs_dir: Path,
    dataset: str,
    method: str,
    seed: int,
    ranks: np.ndarray,
    fingerprint: str = "fp1",
    tag: str = "",
    pretrained: str | None = None,
    config: dict | None = None,
    **protocol_changes,
) -> RunRecord:
    """A finished run directory as `recbench train` leaves it, with the given test ranks."""
    identity = {
        "method": method,
        "config": config if config is not None else {"tag": tag},
        "dataset": dataset,
        "fingerprint": fingerprint,
        "seed": seed,
    }
    if pretrained is not None:
        identity["pretrained"] = pretrained
    run = RunRecord.for_experiment(runs_dir, dataset, method, seed, identity)
    run.write_config(identity)
    test_protocol = {**protocol(len(ranks)), **protocol_changes}
    run.finish(
        EvalResult("valid", ranks, metrics_from_ranks(ranks), {**test_protocol, "split": "valid"}),
        EvalResult("test", ranks, metrics_from_ranks(ranks), test_protocol),
    )
    return run


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Two datasets, three methods, two seeds: 'strong' beats 'base', 'same' equals it."""
    root = tmp_path / "runs"
    for dataset in ("arts", "office"):
        for seed in (1, 2):
            write_run(root, dataset, "base", seed, synthetic_ranks(60, seed))
            write_run(root, dataset, "strong", seed, synthetic_ranks(25, seed))
            write_run(root, dataset, "same", seed, synthetic_ranks(60, seed))
    return root


def golden_results() -> list[RunResult]:
    """The report behind the golden files: names needing escaping, a failed cell, a missing one."""
    results = []
    for seed in (1, 2, 3):
        for method, spread in (("SASRec", 60), ("UniSRec_t", 30), ("BERT4Rec", 120), ("VQ-Rec", 55)):
            results.append(RunResult("Arts_2018", method, seed, synthetic_ranks(spread + seed, 3 * seed), protocol()))
        results.append(
            RunResult(
                "Office", "SASRec", seed, synthetic_ranks(60 + seed, seed, users=300), protocol(300, mask_history=True)
            )
        )
        results.append(
            RunResult(
                "Office",
                "UniSRec_t",
                seed,
                synthetic_ranks(45 - seed, seed, users=300),
                protocol(300, mask_history=True),
            )
        )
    results.append(RunResult("Arts_2018", "IDP", 1, error="CUDA out of memory"))
    return results


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("RECBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), (
        f"{name} differs from the golden file; if intended, regenerate it (see module docstring)"
    )


# --- golden files -----------------------------------------------------------------------------
def test_markdown_matches_golden_file() -> None:
    report = build_report(golden_results(), ["hr@10", "ndcg@10", "mrr"], baseline="SASRec")
    check_golden("leaderboard.md", report.to_markdown())


def test_latex_matches_golden_file() -> None:
    report = build_report(golden_results(), ["hr@10", "ndcg@10", "mrr"], baseline="SASRec")
    check_golden("leaderboard.tex", report.to_latex())


def test_all_pairs_markdown_matches_golden_file() -> None:
    report = build_report(golden_results(), ["hr@10", "ndcg@10"], correction="bonferroni", alpha=0.01)
    check_golden("leaderboard_all_pairs.md", report.to_markdown())


# --- numbers ----------------------------------------------------------------------------------
def test_cell_means_are_the_evaluator_metrics_averaged_over_seeds(runs_dir: Path) -> None:
    report = leaderboard(runs_dir, metrics=["hr@10", "ndcg@20"])
    per_seed = [metrics_from_ranks(synthetic_ranks(25, seed)) for seed in (1, 2)]
    cell = report.cell("arts", "strong")
    assert cell.mean["ndcg@20"] == pytest.approx(np.mean([m["ndcg@20"] for m in per_seed]), abs=1e-12)
    assert cell.std["hr@10"] == pytest.approx(np.std([m["hr@10"] for m in per_seed], ddof=1), abs=1e-12)


def test_p_values_are_paired_t_tests_on_per_user_metrics_averaged_over_seeds(runs_dir: Path) -> None:
    report = leaderboard(runs_dir, metrics=["ndcg@10"], baseline="base")
    averaged = {
        m: np.mean([per_user_metric(synthetic_ranks(spread, s), "ndcg@10") for s in (1, 2)], axis=0)
        for m, spread in (("strong", 25), ("base", 60))
    }
    (comparison,) = [c for c in report.comparisons_for("arts") if c.method == "strong"]
    assert comparison.stats.p_value == pytest.approx(
        scipy.stats.ttest_rel(averaged["strong"], averaged["base"]).pvalue, rel=1e-9
    )


def test_p_values_are_holm_corrected_over_one_dataset_table(runs_dir: Path) -> None:
    report = leaderboard(runs_dir, metrics=["hr@10", "ndcg@10"], baseline="base", test="wilcoxon")
    table = report.comparisons_for("office")
    assert len(table) == 4  # 2 methods vs base x 2 metrics
    assert [c.p_adjusted for c in table] == pytest.approx(adjust([c.stats.p_value for c in table], "holm"))


def test_report_uses_the_chosen_test(runs_dir: Path) -> None:
    report = leaderboard(runs_dir, metrics=["hr@10"], baseline="base", test="wilcoxon", correction="none")
    strong = per_user_metric(synthetic_ranks(25, 1), "hr@10") / 2 + per_user_metric(synthetic_ranks(25, 2), "hr@10") / 2
    base = per_user_metric(synthetic_ranks(60, 1), "hr@10") / 2 + per_user_metric(synthetic_ranks(60, 2), "hr@10") / 2
    (comparison,) = [c for c in report.comparisons_for("arts") if c.method == "strong"]
    assert comparison.p_adjusted == pytest.approx(scipy.stats.wilcoxon(strong, base).pvalue, rel=1e-9)


# --- marks and emphasis -----------------------------------------------------------------------
def test_better_method_is_marked_and_an_identical_one_is_not(runs_dir: Path) -> None:
    markdown = leaderboard(runs_dir, metrics=["ndcg@10"], baseline="base").to_markdown()
    rows = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("| ")}
    assert "↑" in rows["strong"] and "↑" not in rows["same"] and "↓" not in rows["same"]


def test_worse_method_is_marked_down(runs_dir: Path) -> None:
    markdown = leaderboard(runs_dir, metrics=["ndcg@10"], baseline="strong").to_markdown()
    assert all("↓" in line for line in markdown.splitlines() if line.startswith(("| base", "| same")))


def test_all_pairs_letters_name_the_beaten_methods(runs_dir: Path) -> None:
    report = leaderboard(runs_dir, metrics=["ndcg@10"], datasets=["arts"])
    # methods in run order: base (a), same (b), strong (c); strong beats both, nothing else differs
    assert "(c) strong |" in report.to_markdown() and "<sup>ab</sup>" in report.to_markdown()
    assert report.to_markdown().count("<sup>") == 1


def test_best_is_bold_and_second_underlined_in_latex() -> None:
    latex = build_report(golden_results(), ["hr@10"], baseline="SASRec").to_latex()
    rows = {line.split("&")[0].strip(): line for line in latex.splitlines() if "&" in line and "Method" not in line}
    assert r"\textbf{" in rows[r"UniSRec\_t"] and r"\underline{" in rows["SASRec"]
    assert r"\textbf{" not in rows["VQ-Rec"] and r"\underline{" not in rows["VQ-Rec"]


# --- failed and missing cells -----------------------------------------------------------------
def failed_report():
    results = golden_results()
    return build_report(results, ["hr@10"], baseline="SASRec")


def test_failed_cell_shows_as_failed_in_markdown_and_latex() -> None:
    report = failed_report()
    assert any(line.startswith("| IDP") and "failed" in line for line in report.to_markdown().splitlines())
    assert r"IDP & \textit{failed} \\" in report.to_latex()


def test_failed_cell_keeps_its_error_in_csv_and_json() -> None:
    report = failed_report()
    (row,) = [r for r in csv.DictReader(io.StringIO(report.to_csv())) if r["method"] == "IDP"]
    assert (row["status"], row["error"]) == ("failed", "seed 1: CUDA out of memory")
    (cell,) = [c for c in json.loads(report.to_json())["cells"] if c["method"] == "IDP"]
    assert cell["error"] == "seed 1: CUDA out of memory"


def test_failed_method_takes_part_in_no_comparison() -> None:
    assert all("IDP" not in (c.method, c.other) for c in failed_report().comparisons)


def test_failed_baseline_means_no_marks_and_the_caption_says_why() -> None:
    report = build_report(golden_results(), ["hr@10"], baseline="IDP")
    assert report.comparisons == []
    assert "No significance tests: baseline IDP has no finished run here." in report.to_markdown()


def test_method_not_run_on_a_dataset_shows_a_dash() -> None:
    markdown = failed_report().to_markdown().split("### Office")[1]
    assert any(line.startswith("| BERT4Rec") and "–" in line for line in markdown.splitlines())


def test_terminal_table_shows_values_and_failures() -> None:
    console = Console(record=True, width=200)
    for table in failed_report().rich_tables():
        console.print(table)
    text = " ".join(console.export_text().split())  # captions wrap
    assert "IDP failed: seed 1: CUDA out of memory" in text
    unisrec = np.mean([metrics_from_ranks(synthetic_ranks(30 + seed, 3 * seed))["hr@10"] for seed in (1, 2, 3)])
    assert f"{unisrec:.4f} ±" in text


# --- LaTeX ------------------------------------------------------------------------------------
def test_latex_escape_escapes_every_special_character() -> None:
    assert (
        latex_escape(r"a_b 50% & #1 {x} $ ~ ^ \ ")
        == r"a\_b 50\% \& \#1 \{x\} \$ \textasciitilde{} \textasciicircum{} \textbackslash{} "
    )


def test_latex_table_escapes_names_from_runs() -> None:
    results = [
        RunResult("d_1", name, 1, synthetic_ranks(spread), protocol())
        for name, spread in (("a_b", 30), ("50% & #1", 40))
    ]
    latex = build_report(results, ["hr@10"]).to_latex()
    assert r"(a) a\_b &" in latex and r"(b) 50\% \& \#1 &" in latex and r"Results on d\_1 " in latex
    assert r"\label{tab:recbench-d-1}" in latex


def test_latex_caption_states_protocol_test_correction_and_alpha() -> None:
    report = build_report(
        golden_results(),
        ["hr@10", "ndcg@10", "mrr"],
        baseline="SASRec",
        test="permutation",
        correction="bh",
        alpha=0.01,
        n_permutations=2000,
    )
    caption = next(line for line in report.to_latex().splitlines() if r"\caption{" in line and "Office" in line)
    for phrase in (
        "300 users",
        "full ranking over all 500 items",
        "history masked",
        r"ties pessimistic (rank = 1 + \#higher",
        "paired randomisation test, 2,000 sign flips",
        "Benjamini-Hochberg correction over the 3 comparisons",
        "$p < 0.01$",
    ):
        assert phrase in caption


def test_standalone_latex_is_a_complete_document() -> None:
    latex = failed_report().to_latex(standalone=True)
    assert latex.startswith("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n") and latex.endswith(
        "\\end{document}\n"
    )


# --- CSV and JSON -----------------------------------------------------------------------------
def test_csv_carries_each_comparison_once_with_its_numbers(runs_dir: Path) -> None:
    report = leaderboard(runs_dir, metrics=["hr@10", "ndcg@10"], baseline="base")
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(rows) == 2 * 2 * 3  # datasets x metrics x methods (the baseline row has no comparison)
    (row,) = [r for r in rows if (r["dataset"], r["metric"], r["method"]) == ("office", "ndcg@10", "strong")]
    (comparison,) = [c for c in report.comparisons_for("office", "ndcg@10") if c.method == "strong"]
    assert float(row["p_value"]) == comparison.stats.p_value and float(row["ci_low"]) == comparison.stats.ci_low
    assert (int(row["wins"]), int(row["ties"]), int(row["losses"])) == (
        comparison.stats.wins,
        comparison.stats.ties,
        comparison.stats.losses,
    )


def test_json_holds_p_values_cis_effect_sizes_and_win_tie_loss(tmp_path: Path) -> None:
    run_root = tmp_path / "one-seed"
    write_run(run_root, "arts", "base", 1, synthetic_ranks(60))
    write_run(run_root, "arts", "strong", 1, synthetic_ranks(25))
    data = json.loads(leaderboard(run_root, metrics=["hr@10"], baseline="base").to_json())
    (comparison,) = data["comparisons"]
    assert comparison["stats"]["ci_low"] < comparison["stats"]["mean_diff"] < comparison["stats"]["ci_high"]
    assert sum(comparison["stats"][k] for k in ("wins", "ties", "losses")) == USERS
    assert {"p_value", "effect_dz", "relative_pct"} <= comparison["stats"].keys() and comparison[
        "p_adjusted"
    ] is not None
    assert data["cells"][0]["std"]["hr@10"] is None  # one seed: no std, and valid JSON (no NaN)


# --- reading runs -----------------------------------------------------------------------------
def test_runs_with_different_protocols_are_not_compared(tmp_path: Path) -> None:
    write_run(tmp_path, "arts", "base", 1, synthetic_ranks(60))
    write_run(tmp_path, "arts", "masked", 1, synthetic_ranks(60), mask_history=True)
    with pytest.raises(RunError, match="different protocols.*full-masked.*--protocol"):
        leaderboard(tmp_path)


def test_runs_over_different_users_are_not_compared(tmp_path: Path) -> None:
    write_run(tmp_path, "arts", "base", 1, synthetic_ranks(60))
    write_run(tmp_path, "arts", "short", 1, synthetic_ranks(60, users=USERS - 1), num_users=USERS - 1)
    with pytest.raises(RunError, match="same users"):
        leaderboard(tmp_path)


def test_ranks_that_disagree_with_their_own_protocol_make_the_run_damaged_not_compared(tmp_path: Path) -> None:
    write_run(tmp_path, "arts", "base", 1, synthetic_ranks(60))
    write_run(tmp_path, "arts", "short", 1, synthetic_ranks(60, users=USERS - 1), num_users=USERS)
    report = leaderboard(tmp_path)
    cell = report.cell("arts", "short")
    assert cell.damaged and "cover 399 users, the protocol says 400" in cell.error
    assert " damaged |" in report.to_markdown() and not report.comparisons


def test_two_finished_runs_of_one_seed_and_config_are_an_error(tmp_path: Path) -> None:
    write_run(tmp_path / "copy1", "arts", "base", 1, synthetic_ranks(60), tag="lr=1e-3")
    write_run(tmp_path / "copy2", "arts", "base", 1, synthetic_ranks(50), tag="lr=1e-3")
    with pytest.raises(RunError, match="two finished runs of base on arts with seed 1 and the same config"):
        load_results(tmp_path)


def test_runs_of_one_method_with_different_configs_are_rows_named_by_what_differs(tmp_path: Path) -> None:
    for seed in (1, 2):
        write_run(
            tmp_path,
            "arts",
            "lshsr",
            seed,
            synthetic_ranks(25, seed),
            config={"use_gate": True, "tasks": ["next", "mask"], "lr": 0.001},
        )
        write_run(
            tmp_path,
            "arts",
            "lshsr",
            seed,
            synthetic_ranks(60, seed),
            config={"use_gate": False, "tasks": ["next"], "lr": 0.001},
        )
        write_run(tmp_path, "arts", "sasrec", seed, synthetic_ranks(60, seed), config={"lr": 0.01})
    report = leaderboard(tmp_path, metrics=["ndcg@10"], baseline="lshsr [tasks=[next,mask], use_gate=true]")
    assert set(report.methods) == {
        "lshsr [tasks=[next,mask], use_gate=true]",
        "lshsr [tasks=[next], use_gate=false]",
        "sasrec",
    }
    ablation = next(c for c in report.comparisons_for("arts") if c.method == "lshsr [tasks=[next], use_gate=false]")
    assert ablation.stats.mean_diff < 0  # the ablated runs were given the worse ranks


def test_a_method_from_scratch_and_pre_trained_are_two_compared_rows(tmp_path: Path) -> None:
    for seed in (1, 2):
        write_run(tmp_path, "arts", "unisrec", seed, synthetic_ranks(60, seed))
        write_run(tmp_path, "arts", "unisrec", seed, synthetic_ranks(25, seed), pretrained="seed2020-0123456789")
    report = leaderboard(tmp_path, metrics=["ndcg@10"], baseline="unisrec")
    assert report.cell("arts", "unisrec (pre-trained)").seeds == [1, 2]
    (comparison,) = report.comparisons_for("arts")
    assert comparison.method == "unisrec (pre-trained)" and comparison.stats.mean_diff > 0


def test_runs_made_on_different_data_are_an_error(tmp_path: Path) -> None:
    write_run(tmp_path, "arts", "base", 1, synthetic_ranks(60), fingerprint="fp1")
    write_run(tmp_path, "arts", "strong", 1, synthetic_ranks(25), fingerprint="fp2")
    with pytest.raises(RunError, match="different data"):
        load_results(tmp_path)


def test_unknown_baseline_suggests_close_names(runs_dir: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: strong"):
        leaderboard(runs_dir, baseline="strog")


def test_unknown_dataset_is_an_error_naming_the_known_ones(runs_dir: Path) -> None:
    with pytest.raises(UnknownNameError, match="Known datasets: arts, office"):
        leaderboard(runs_dir, datasets=["art"])


def test_dataset_filter_keeps_only_those_datasets(runs_dir: Path) -> None:
    assert leaderboard(runs_dir, datasets=["office"]).datasets == ["office"]


def test_out_file_holds_the_report_in_the_format_of_its_suffix(runs_dir: Path, tmp_path: Path) -> None:
    report = leaderboard(runs_dir, metrics=["hr@10"], baseline="base", out=tmp_path / "table.tex")
    assert (tmp_path / "table.tex").read_text() == report.to_latex()


def test_out_without_a_table_suffix_is_a_prefix(runs_dir: Path, tmp_path: Path) -> None:
    leaderboard(runs_dir, out=tmp_path / "table.txt", fmt=["md", "csv"])
    assert (tmp_path / "table.txt.md").is_file() and (tmp_path / "table.txt.csv").is_file()
    with pytest.raises(RecbenchError, match="give a prefix"):
        leaderboard(runs_dir, out=tmp_path / "table.md", fmt="tex")


# --- command line -----------------------------------------------------------------------------
def test_leaderboard_command_prints_the_library_report(runs_dir: Path) -> None:
    from typer.testing import CliRunner

    from recbench.cli import app

    result = CliRunner().invoke(
        app, ["leaderboard", str(runs_dir), "--format", "md", "--metrics", "hr@10,ndcg@10", "--baseline", "base"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == leaderboard(runs_dir, metrics=["hr@10", "ndcg@10"], baseline="base").to_markdown()


def test_leaderboard_command_reports_a_bad_option_in_one_line(runs_dir: Path) -> None:
    from typer.testing import CliRunner

    from recbench.cli import app

    result = CliRunner().invoke(app, ["leaderboard", str(runs_dir), "--test", "anova"])
    assert result.exit_code == 2  # a usage error, refused before any run is read, naming the choices
    words = " ".join(result.output.replace("│", " ").split())  # the usage-error box may wrap the line
    assert "'anova' is not one of 't', 'wilcoxon', 'permutation'" in words and "Traceback" not in result.output

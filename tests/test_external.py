"""External results: ranked lists and score matrices get the ranks the Evaluator would give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recbench.cli import app
from recbench.errors import DataError, RunError
from recbench.results.leaderboard import load_results
from recbench.runs.evaluate import ranks_from_scores
from recbench.runs.external import import_note, import_results


def test_score_matrix_ranks_equal_the_evaluators(toy_dataset, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(toy_dataset.num_users, toy_dataset.num_items + 1)).astype(np.float32)
    np.save(tmp_path / "scores.npy", scores)
    _, _, targets = toy_dataset.eval_examples("test", 50)
    run = import_results(tmp_path / "scores.npy", "toy", "other-tool", runs_dir=tmp_path / "runs")
    expected = ranks_from_scores(torch.from_numpy(scores.copy()), torch.from_numpy(targets))
    assert run.ranks("test").tolist() == expected.tolist()


def test_score_matrix_without_padding_column_is_shifted(toy_dataset, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(toy_dataset.num_users, toy_dataset.num_items)).astype(np.float32)
    np.save(tmp_path / "scores.npy", scores)
    _, _, targets = toy_dataset.eval_examples("test", 50)
    run = import_results(tmp_path / "scores.npy", "toy", "other-tool", runs_dir=tmp_path / "runs")
    brute = [1 + int((scores[u] >= scores[u, targets[u] - 1]).sum()) - 1 for u in range(toy_dataset.num_users)]
    assert run.ranks("test").tolist() == brute


def test_ranked_lists_give_the_target_position_or_the_worst_rank(toy_dataset, tmp_path: Path) -> None:
    _, _, targets = toy_dataset.eval_examples("test", 50)
    lines, expected = [], []
    for user, token in enumerate(toy_dataset.user_ids):
        others = [i for i in range(1, toy_dataset.num_items + 1) if i != targets[user]][:5]
        listed = others[: user % 4] + [int(targets[user])] + others[user % 4 :] if user % 3 else others
        lines.append("\t".join([token, " ".join(toy_dataset.item_ids[i - 1] for i in listed)]))
        expected.append(user % 4 + 1 if user % 3 else toy_dataset.num_items)
    (tmp_path / "run.tsv").write_text("\n".join(lines) + "\n")
    run = import_results(tmp_path / "run.tsv", "toy", "lists", runs_dir=tmp_path / "runs")
    assert run.ranks("test").tolist() == expected
    assert [r.method for r in load_results(tmp_path / "runs")] == ["lists"]


def test_unknown_item_token_names_the_line(toy_dataset, tmp_path: Path) -> None:
    (tmp_path / "run.tsv").write_text(
        f"{toy_dataset.user_ids[0]}\t{toy_dataset.item_ids[0]}\n{toy_dataset.user_ids[1]}\tNOT_AN_ITEM\n"
    )
    with pytest.raises(DataError, match=r"run\.tsv:2: unknown item token 'NOT_AN_ITEM'"):
        import_results(tmp_path / "run.tsv", "toy", "lists", runs_dir=tmp_path / "runs")


def test_missing_users_are_an_error(toy_dataset, tmp_path: Path) -> None:
    (tmp_path / "run.tsv").write_text(f"{toy_dataset.user_ids[0]}\t{toy_dataset.item_ids[0]}\n")
    with pytest.raises(DataError, match="users have no line"):
        import_results(tmp_path / "run.tsv", "toy", "lists", runs_dir=tmp_path / "runs")


def test_wrong_matrix_shape_is_an_error(toy_dataset, tmp_path: Path) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(DataError, match="expected"):
        import_results(tmp_path / "bad.npy", "toy", "x", runs_dir=tmp_path / "runs")


def test_top_k_lists_cut_from_a_score_matrix_agree_with_the_matrix_up_to_k(toy_dataset, tmp_path: Path) -> None:
    k = 7
    scores = np.random.default_rng(2).normal(size=(toy_dataset.num_users, toy_dataset.num_items + 1)).astype(np.float32)
    np.save(tmp_path / "scores.npy", scores)
    top = np.argsort(-scores[:, 1:], axis=1)[:, :k] + 1  # (U, k) item ids, best first
    lines = [
        f"{user},{' '.join(toy_dataset.item_ids[i - 1] for i in row)}" for user, row in zip(toy_dataset.user_ids, top)
    ]
    (tmp_path / "top.csv").write_text("user_id,items\n" + "\n".join(lines) + "\n")
    from_scores = import_results(tmp_path / "scores.npy", "toy", "dense", runs_dir=tmp_path / "runs").ranks("test")
    from_lists = import_results(tmp_path / "top.csv", "toy", "top7", runs_dir=tmp_path / "runs")
    expected = np.where(from_scores <= k, from_scores, toy_dataset.num_items)
    assert from_lists.ranks("test").tolist() == expected.tolist()
    assert from_lists.metrics["list_length"] == k and "k <= 7" in import_note(from_lists)


def test_an_imported_label_is_its_own_row(toy_dataset, tmp_path: Path) -> None:
    first = toy_dataset.user_ids[0]
    lines = "".join(f"{u}\t{toy_dataset.item_ids[0]}\n" for u in toy_dataset.user_ids)
    (tmp_path / "a.tsv").write_text(lines)
    (tmp_path / "b.tsv").write_text(
        lines.replace(f"{first}\t{toy_dataset.item_ids[0]}", f"{first}\t{toy_dataset.item_ids[1]}")
    )
    with pytest.raises(DataError, match="registered recbench method"):
        import_results(tmp_path / "a.tsv", "toy", "sasrec", runs_dir=tmp_path / "runs")
    run = import_results(tmp_path / "a.tsv", "toy", "other", runs_dir=tmp_path / "runs")
    assert import_results(tmp_path / "a.tsv", "toy", "other", runs_dir=tmp_path / "runs").path == run.path
    with pytest.raises(RunError, match="already holds results labelled 'other'"):
        import_results(tmp_path / "b.tsv", "toy", "other", runs_dir=tmp_path / "runs")


def test_cli_imports_a_file_and_bad_tokens_are_one_line_naming_the_line(toy_dataset, tmp_path: Path) -> None:
    scores = np.random.default_rng(3).normal(size=(toy_dataset.num_users, toy_dataset.num_items)).astype(np.float32)
    np.save(tmp_path / "scores.npy", scores)
    runs = str(tmp_path / "runs")
    ok = CliRunner().invoke(
        app,
        [
            "eval",
            "--import",
            str(tmp_path / "scores.npy"),
            "--dataset",
            "toy",
            "--name",
            "ext",
            "--runs-dir",
            runs,
            "--json",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert [r.method for r in load_results(runs)] == ["ext"]
    (tmp_path / "bad.tsv").write_text(f"{toy_dataset.user_ids[0]}\t{toy_dataset.item_ids[0]} ???\n")
    bad = CliRunner().invoke(
        app, ["eval", "--import", str(tmp_path / "bad.tsv"), "--dataset", "toy", "--name", "bad", "--runs-dir", runs]
    )
    assert bad.exit_code == 1 and "bad.tsv:1: unknown item token '???'" in bad.output and "Traceback" not in bad.output

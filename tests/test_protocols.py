"""Evaluation protocols: ranks against brute-force loops, sampled negatives, runs under several protocols."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from recbench.cli import app
from recbench.data.dataset import Dataset, build_dataset, save_dataset
from recbench.errors import RecbenchError, RunError
from recbench.method import Batch, DataSpec, Method, MethodConfig
from recbench.results.leaderboard import leaderboard, load_results
from recbench.runs.evaluate import Evaluator, ranks_from_candidate_scores, ranks_from_scores
from recbench.runs.experiment import evaluate_run, run_experiment
from recbench.runs.external import import_results
from recbench.runs.protocols import (
    BUILTIN,
    Protocol,
    draw_negatives,
    get_protocol,
    negatives_cache_file,
    negatives_for,
    parse_protocols,
    training_popularity,
)
from recbench.runs.record import RunRecord

TINY = {
    "hidden_size": 16,
    "inner_size": 16,
    "max_seq_length": 10,
    "epochs": 2,
    "patience": 2,
    "train_batch_targets": 64,
}
FIVE_POP = Protocol(name="pop5", negatives=5, sampler="popularity", mask_history=True)
FIVE_UNIFORM = Protocol(name="uniform5", negatives=5, sampler="uniform", mask_history=False)


def brute_rank(scores: np.ndarray, target: int, candidates: list[int], ties: str) -> float | list[int]:
    """1 + #other candidates scoring higher (NaN counts as higher) + #tied (pessimistic) or half of them;
    under random ties the [best, worst] pair (1 + #higher, 1 + #higher + #tied)."""
    t = scores[target]
    if np.isnan(t):
        return [len(candidates)] * 2 if ties == "random" else float(len(candidates))
    higher = tied = 0
    for item in candidates:
        if item == target:
            continue
        s = scores[item]
        if np.isnan(s) or s > t:
            higher += 1
        elif s == t:
            tied += 1
    if ties == "random":
        return [1 + higher, 1 + higher + tied]
    return 1 + higher + (tied if ties == "pessimistic" else tied / 2)


def history_before(dataset: Dataset, user: int, split: str) -> list[int]:
    sequence = dataset.sequence(user).tolist()
    return sequence[: len(sequence) - (1 if split == "test" else 2)]


class UserTable(Method):
    """Scores from a fixed (users x (N + 1)) table; the user is found from the first history item,
    which the dataset below makes unique per user (item u + 1 starts user u's sequence)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(MethodConfig(), DataSpec(num_items=table.shape[1] - 1, max_seq_length=200))
        self.table = table

    def loss(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - never trained
        raise AssertionError

    def score(self, batch: Batch) -> torch.Tensor:
        return self.table[batch.items[:, 0] - 1].clone()


def keyed_dataset(name: str = "keyed", users: int = 40, items: int = 60, seed: int = 0) -> Dataset:
    """Users 0..U-1 start with item u + 1 (so a scorer can tell them apart), then random items."""
    rng = np.random.default_rng(seed)
    sequences = [[u] + rng.integers(0, items, size=int(rng.integers(4, 15))).tolist() for u in range(users)]
    dataset, _ = build_dataset(name, [f"u{u}" for u in range(users)], sequences, [f"i{i}" for i in range(items)], None)
    return dataset


@pytest.mark.parametrize("ties", ["pessimistic", "expected", "random"])
@pytest.mark.parametrize("levels", [None, 2])  # continuous scores, then heavily tied ones
@pytest.mark.parametrize(
    "kind",
    [
        dict(negatives=0, mask_history=False),
        dict(negatives=0, mask_history=True),
        dict(negatives=7, sampler="uniform", mask_history=False),
        dict(negatives=7, sampler="uniform", mask_history=True),
        dict(negatives=7, sampler="popularity", mask_history=True),
    ],
)
def test_evaluator_ranks_equal_a_brute_force_loop(recbench_home, ties: str, levels: int | None, kind: dict) -> None:
    dataset = keyed_dataset()
    rng = np.random.default_rng(3)
    table = rng.normal(size=(dataset.num_users, dataset.num_items + 1))
    if levels:
        table = np.floor(table * levels / 2)
    table[::7, 5] = np.nan  # some NaN scores, sometimes the target's
    protocol = Protocol(name="p", ties=ties, **kind)
    for split in ("valid", "test"):
        result = Evaluator(dataset, split, max_history=50, batch_size=9, protocol=protocol).run(
            UserTable(torch.from_numpy(table).float())
        )
        negatives = draw_negatives(dataset, split, protocol) if protocol.sampled else None
        expected = []
        for user in range(dataset.num_users):
            history = history_before(dataset, user, split)
            target = dataset.sequence(user)[len(history)]
            if negatives is not None:
                candidates = [int(target), *negatives[user].tolist()]
            else:
                masked = set(history) - {target} if protocol.mask_history else set()
                candidates = [i for i in range(1, dataset.num_items + 1) if i not in masked]
            expected.append(brute_rank(table[user].astype(np.float32), int(target), candidates, ties))
        assert result.ranks.tolist() == expected, split


def test_rank_functions_agree_with_each_other_on_gathered_candidates() -> None:
    rng = np.random.default_rng(5)
    scores = torch.from_numpy(np.floor(rng.normal(size=(50, 31)) * 2)).float()
    targets = torch.from_numpy(rng.integers(1, 31, size=50))
    for ties in ("pessimistic", "expected", "random"):
        full = ranks_from_scores(scores.clone(), targets, ties=ties)
        candidates = torch.cat([targets[:, None], torch.tensor([i for i in range(1, 31)]).repeat(50, 1)], dim=1)
        keep = candidates[:, 1:] != targets[:, None]
        gathered = [
            ranks_from_candidate_scores(
                scores[b : b + 1].gather(1, candidates[b : b + 1, torch.cat([torch.tensor([True]), keep[b]])]), ties
            )
            for b in range(50)
        ]
        assert full.tolist() == torch.cat(gathered).tolist()


def test_negatives_are_deterministic_and_never_the_target_or_masked_history(recbench_home) -> None:
    dataset = keyed_dataset()
    for protocol in (FIVE_POP, FIVE_UNIFORM):
        for split in ("valid", "test"):
            first, second = draw_negatives(dataset, split, protocol), draw_negatives(dataset, split, protocol)
            assert np.array_equal(first, second) and first.shape == (dataset.num_users, 5)
            for user in range(dataset.num_users):
                history = history_before(dataset, user, split)
                target = int(dataset.sequence(user)[len(history)])
                row = first[user].tolist()
                assert len(set(row)) == 5 and target not in row and all(1 <= i <= dataset.num_items for i in row)
                if protocol.mask_history:
                    assert not set(row) & set(history)
    other_seed = Protocol(name="x", negatives=5, sample_seed=1)
    assert not np.array_equal(
        draw_negatives(dataset, "test", other_seed), draw_negatives(dataset, "test", FIVE_UNIFORM)
    )


def test_popularity_sampler_follows_training_counts_only(recbench_home) -> None:
    # One negative per user, many users: its item frequencies must follow the training counts.
    rng = np.random.default_rng(0)
    items = 12
    popular = np.arange(1, items + 1) ** 2
    sequences = [rng.choice(items, size=5, p=popular / popular.sum()).tolist() for _ in range(6000)]
    dataset, _ = build_dataset("pop", [f"u{u}" for u in range(6000)], sequences, [f"i{i}" for i in range(items)], None)
    protocol = Protocol(name="pop1", negatives=1, sampler="popularity", mask_history=False)
    drawn = draw_negatives(dataset, "test", protocol)[:, 0]
    counts = training_popularity(dataset)[1:].astype(float)
    targets = dataset.items[dataset.offsets[1:] - 1]
    # P(item) for a user = count / (total - count of the user's target); expected frequency summed over users
    expected = np.zeros(items)
    for target in targets:
        weights = counts.copy()
        weights[target - 1] = 0
        expected += weights / weights.sum()
    observed = np.bincount(drawn - 1, minlength=items)
    assert stats.chisquare(observed, expected).pvalue > 0.001

    # The test interactions never reach the sampler: change every test item, the counts stay.
    changed = [s[:-1] + [(s[-1] + 1) % items] for s in sequences]
    other, _ = build_dataset("pop", [f"u{u}" for u in range(6000)], changed, [f"i{i}" for i in range(items)], None)
    assert np.array_equal(training_popularity(other), training_popularity(dataset))
    # ... and a user's negatives depend only on its own exclusions: users whose target is unchanged keep theirs.
    before = draw_negatives(dataset, "valid", FIVE_POP.model_copy(update={"mask_history": False}))
    after = draw_negatives(other, "valid", FIVE_POP.model_copy(update={"mask_history": False}))
    assert np.array_equal(before, after)  # valid targets and training parts are the same


def test_negatives_are_cached_with_the_dataset_and_a_bad_cache_is_redrawn(recbench_home) -> None:
    dataset = keyed_dataset()
    save_dataset(dataset)
    drawn = negatives_for(dataset, "test", FIVE_POP)
    path = negatives_cache_file(dataset, "test", FIVE_POP)
    assert path is not None and path.is_file() and np.array_equal(np.load(path), drawn)
    np.save(path, np.zeros_like(drawn))  # a damaged cache (every negative 0) is never used
    assert np.array_equal(negatives_for(dataset, "test", FIVE_POP), drawn)


def test_too_few_items_to_draw_is_a_clear_error(recbench_home) -> None:
    dataset = keyed_dataset(items=8, users=5)
    with pytest.raises(RecbenchError, match="has only .* items that may be drawn"):
        draw_negatives(dataset, "test", Protocol(name="big", negatives=50))


def test_user_protocols_file(recbench_home: Path) -> None:
    recbench_home.mkdir(parents=True, exist_ok=True)
    (recbench_home / "protocols.toml").write_text(
        '[protocols.pop50]\nnegatives = 50\nsampler = "popularity"\nmask_history = true\nks = [1, 10]\n'
    )
    assert get_protocol("pop50").definition() == {
        "negatives": 50,
        "sampler": "popularity",
        "sample_seed": 0,
        "mask_history": True,
        "ties": "pessimistic",
    }
    assert [p.name for p in parse_protocols("full,pop50,full")] == ["full", "pop50"]
    (recbench_home / "protocols.toml").write_text("[protocols.full]\nnegatives = 3\n")
    with pytest.raises(RecbenchError, match="built in"):
        get_protocol("full")
    (recbench_home / "protocols.toml").write_text("[protocols.bad]\nnegatives = -3\nsampler = 'zipf'\n")
    with pytest.raises(RecbenchError, match="negatives.*sampler|sampler.*negatives"):
        get_protocol("bad")
    (recbench_home / "protocols.toml").write_text("[protocols.k]\nks = [5]\n")
    with pytest.raises(RecbenchError, match="must include 10"):
        get_protocol("k")
    (recbench_home / "protocols.toml").write_text("[protocols\n")
    with pytest.raises(RecbenchError, match="not valid TOML"):
        get_protocol("full")
    (recbench_home / "protocols.toml").unlink()
    with pytest.raises(RecbenchError, match="unknown protocol 'pop1000'"):
        get_protocol("pop1000")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_under_several_protocols_and_one_added_later(toy_dataset, recbench_home: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (recbench_home / "protocols.toml").write_text(
        "[protocols.pop5]\nnegatives = 5\nsampler = 'popularity'\nmask_history = true\n"
    )
    common = dict(overrides=[TINY], runs_dir=runs, device="cpu", show_progress=False)
    sasrec = run_experiment("sasrec", "toy", seed=1, protocols="full,pop5", **common).run
    gru_tiny = {k: v for k, v in TINY.items() if k != "inner_size"} | {"embedding_size": 16}
    gru = run_experiment("gru4rec", "toy", seed=1, protocols=["full"], **{**common, "overrides": [gru_tiny]}).run
    assert sasrec.protocol_names() == ["full", "pop5"] and gru.protocol_names() == ["full"]
    assert sasrec.ranks("test", "pop5").max() <= 6

    # A table under pop5 needs every run to have it: gru4rec does not yet, and the error says how.
    with pytest.raises(RunError, match="no results under protocol 'pop5'.*recbench eval"):
        leaderboard(runs, protocol="pop5")

    kept = {name: _digest(gru.path / name) for name in ("ranks.npz", "metrics.json", "config.json", "best.pt")}
    result = evaluate_run(gru.path, protocol="pop5", device="cpu")
    assert gru.protocol_names() == ["full", "pop5"]
    assert {name: _digest(gru.path / name) for name in kept} == kept  # its other results are untouched
    gru.check()
    assert np.array_equal(gru.ranks("test", "pop5"), result.ranks)
    again = evaluate_run(gru.path, protocol="pop5", device="cpu")
    assert np.array_equal(again.ranks, result.ranks) and gru.protocol_names() == [
        "full",
        "pop5",
    ]  # re-evaluation reproduces it

    report = leaderboard(runs, protocol="pop5", metrics=["hr@5"])
    card = report.protocols["toy"]
    assert card["name"] == "pop5" and card["num_candidates"] == 6
    assert "5 negatives sampled by training popularity" in report.to_markdown()
    assert json.loads(report.to_json())["protocols"]["toy"]["definition"]["sampler"] == "popularity"
    by_full = {r.method: r for r in load_results(runs)}
    assert by_full["sasrec"].protocol["name"] == "full"
    # Every method ranked against the same negatives:
    by_pop = {r.method: r for r in load_results(runs, protocol="pop5")}
    assert by_pop["sasrec"].protocol["negatives_sha256"] == by_pop["gru4rec"].protocol["negatives_sha256"]

    # A run whose *first* protocol is pop5 stopped early on it: another run, and a table mixing is refused.
    first_pop = run_experiment("sasrec", "toy", seed=2, protocols="pop5", **common).run
    assert first_pop.path.name.split("-")[1] != sasrec.path.name.split("-")[1]
    assert json.loads((first_pop.path / "config.json").read_text())["protocol"]["valid_protocol"] == "pop5"
    with pytest.raises(RunError, match="different protocols"):
        leaderboard(runs)
    assert leaderboard(runs, protocol="pop5").protocols["toy"]["name"] == "pop5"

    # A file of the added protocol edited afterwards makes the run damaged, not a different number.
    path = gru.path / "evals" / "pop5.json"
    path.write_text(path.read_text().replace('"test"', '"test" ', 1))
    with pytest.raises(RunError, match="damaged.*evals/pop5.json"):
        RunRecord(gru.path).check()


def test_imported_score_matrix_under_a_sampled_protocol_and_lists_refused(
    toy_dataset, recbench_home: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(toy_dataset.num_users, toy_dataset.num_items + 1)).astype(np.float32)
    np.save(tmp_path / "scores.npy", scores)
    run = import_results(tmp_path / "scores.npy", "toy", "other-tool", tmp_path / "runs")
    protocol = Protocol(name="u5", negatives=5, mask_history=True)
    (recbench_home / "protocols.toml").write_text("[protocols.u5]\nnegatives = 5\nmask_history = true\n")
    result = evaluate_run(run.path, protocol="u5")
    negatives = negatives_for(toy_dataset, "test", protocol)
    _, _, targets = toy_dataset.eval_examples("test", 50)
    expected = [
        brute_rank(scores[u], int(targets[u]), [int(targets[u]), *negatives[u].tolist()], "pessimistic")
        for u in range(toy_dataset.num_users)
    ]
    assert run.protocol_names() == ["full", "u5"] and result.ranks.tolist() == expected
    lines = "\n".join(
        f"u{u} " + " ".join(f"i{i - 1}" for i in np.argsort(-scores[u, 1:]) + 1) for u in range(toy_dataset.num_users)
    )
    (tmp_path / "lists.tsv").write_text(lines)
    listed = import_results(tmp_path / "lists.tsv", "toy", "lists-tool", tmp_path / "runs")
    with pytest.raises(RunError, match="cannot be read from a list of positions"):
        evaluate_run(listed.path, protocol="u5")


def test_cli_protocol_options(toy_dataset, tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["list", "protocols"])
    assert listed.exit_code == 0 and all(name in listed.output for name in BUILTIN)
    runs = str(tmp_path / "runs")
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    trained = runner.invoke(
        app,
        [
            "train",
            "sasrec",
            "-d",
            "toy",
            "--runs-dir",
            runs,
            "--device",
            "cpu",
            "--protocol",
            "full,full-masked",
            *sets,
        ],
    )
    assert trained.exit_code == 0, trained.output
    run_dir = next((tmp_path / "runs").rglob("status.json")).parent
    assert RunRecord(run_dir).protocol_names() == ["full", "full-masked"]
    evaluated = runner.invoke(app, ["eval", str(run_dir), "--protocol", "full-expected", "--json"])
    assert evaluated.exit_code == 0 and json.loads(evaluated.output)["stored"] is True
    table = runner.invoke(app, ["leaderboard", runs, "--protocol", "full-masked", "--format", "md"])
    assert table.exit_code == 0 and "protocol full-masked" in table.output and "history masked" in table.output
    unknown = runner.invoke(app, ["leaderboard", runs, "--protocol", "nope"])
    assert unknown.exit_code == 1 and "no results under protocol 'nope'" in unknown.output

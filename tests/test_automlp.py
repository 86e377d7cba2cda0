"""AutoMLP against the method document: the fused embedding layer, the output layer, the BCE loss and
the cosine scores against brute-force computations of their formulas, negative sampling, alignment of
histories, and the DARTS search of the short-term length (its choice, decisiveness and trajectory)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recbench import layers
from recbench.data.dataset import build_dataset
from recbench.method import Batch, DataSpec, SearchData, SearchOutcome
from recbench.registry import get_method, resolve_config
from recbench.runs.batching import TrainingWindows
from recbench.runs.experiment import SEARCH_STATE_FILE, architecture_search, search_state_hooks, valid_batches
from recbench.runs.trainer import seed_everything
from recbench_plugins.automlp import (
    AutoMLP,
    AutoMLPID,
    by_length,
    cut_batch,
    right_aligned,
    sample_negatives,
)

TINY = {"hidden_size": 16, "sequence_hidden_size": 16, "channel_hidden_size": 32, "dropout_prob": 0.0}
TEXT_SIZE = 6


def text_table(num_items: int, size: int = TEXT_SIZE) -> torch.Tensor:
    """Fixed random item text embeddings, row 0 (padding) zero, as DataSpec carries them."""
    text = torch.randn(num_items + 1, size, generator=torch.Generator().manual_seed(5))
    text[0] = 0
    return text


def build(name: str, num_items: int = 9, **overrides) -> AutoMLP | AutoMLPID:
    """A tiny seeded model of ``automlp`` (with text) or ``automlp-id``, without dropout."""
    seed_everything(0)
    entry = get_method(name)
    config = resolve_config(entry, TINY, {"max_seq_length": 6, "short_length": 2}, overrides)
    text = text_table(num_items) if entry.cls.needs_text else None
    return entry.cls(config, DataSpec(num_items=num_items, max_seq_length=6, item_text_embeddings=text))


def lagged_dataset(lag: int, users: int = 300, items: int = 12, length: int = 14, seed: int = 0):
    """x[t + 1] = x[t + 1 - lag] + 1 (mod items): the next item is fixed by the last ``lag`` items and
    independent of any shorter suffix (the first ``lag`` items of a user are drawn at random)."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(users):
        sequence = list(rng.integers(items, size=lag))
        while len(sequence) < length:
            sequence.append((sequence[-lag] + 1) % items)
        sequences.append([int(i) for i in sequence])
    dataset, _ = build_dataset(
        "lagged", [f"u{u}" for u in range(users)], sequences, [f"i{i}" for i in range(items)], None
    )
    return dataset


def lagged_search(lag: int, candidates: list[int], hooks: tuple | None = None, **overrides) -> SearchOutcome:
    """AutoMLP-ID's search on :func:`lagged_dataset`, with the search's own defaults unless overridden.

    long_layers = 0: the long-term module is the last item's embedding alone, so only the short-term
    candidates with k >= lag can predict; every shorter k sees pure noise.
    """
    dataset = lagged_dataset(lag)
    config = resolve_config(
        get_method("automlp-id"),
        TINY,
        {"max_seq_length": 8, "long_layers": 0, "short_layers": 2, "short_length_candidates": candidates},
        {"learning_rate": 0.01, "search_steps": 300},  # a toy model learns fast; Adam's default 1e-3 is slow
        overrides,
    )
    windows = TrainingWindows(*dataset.train_sequences(), window=config.max_seq_length)
    data = SearchData(
        build=lambda c: AutoMLPID(c, DataSpec(num_items=dataset.num_items, max_seq_length=c.max_seq_length)),
        train_batches=lambda epoch: windows.batches(config.train_batch_targets, np.random.default_rng(epoch)),
        valid_batches=lambda: valid_batches(dataset, config.max_seq_length, 128, seed=0),
        save_state=hooks[0] if hooks else None,
        load_state=hooks[1] if hooks else None,
    )
    seed_everything(0)
    outcome = AutoMLPID.search_architecture(config, data, seed=0, device="cpu")
    assert outcome is not None
    return outcome


@pytest.mark.parametrize(("lag", "candidates"), [(2, [2, 1]), (4, [1, 2, 4])])
def test_search_picks_the_shortest_length_that_holds_the_signal_and_is_decisive(
    lag: int, candidates: list[int]
) -> None:
    # The alpha learning rate, its Adam and the search batch size are the defaults.
    outcome = lagged_search(lag, candidates)
    assert outcome.config_updates == {"short_length": lag}
    weights = outcome.details["weights"]
    assert max(weights, key=weights.get) == lag
    # alpha stops once the valid loss is near 0 (the toy task is solved): about 0.8 for the best k
    assert weights[lag] > 0.75 and outcome.details["margin"] > 0.5


def test_search_records_the_softmax_alpha_trajectory() -> None:
    outcome = lagged_search(2, [1, 2, 4], search_steps=25)
    details = outcome.details
    trajectory = details["trajectory"]
    assert details["lengths"] == [1, 2, 4] and details["steps"] == 25
    # start + every 25 // 10 = 2 steps, the last step included
    assert [point["step"] for point in trajectory] == [0, *range(2, 25, 2), 25]
    assert trajectory[0]["weights"] == pytest.approx([1 / 3] * 3, abs=1e-4)
    for point in trajectory:
        assert sum(point["weights"]) == pytest.approx(1, abs=1e-3)
    for point in trajectory[1:]:
        assert np.isfinite(point["train_loss"]) and np.isfinite(point["valid_loss"])
    epochs = [point["epochs"] for point in trajectory]
    assert epochs == sorted(epochs) and epochs[-1] == details["epochs"] > 1  # toy epochs are a few steps
    assert trajectory[-1]["weights"] == [details["weights"][k] for k in (1, 2, 4)]
    assert trajectory[1]["weights"] != trajectory[-1]["weights"]  # alpha moved


def test_a_search_warmup_trains_the_weights_alone_then_searches() -> None:
    outcome = lagged_search(2, [1, 2, 4], search_warmup_steps=6, search_steps=10)
    details = outcome.details
    trajectory = details["trajectory"]
    assert details["warmup_steps"] == 6 and details["steps"] == 10
    # warm-up points every 10 // 10 = 1 step, flagged, alpha untouched (uniform), no validation loss
    warmup = [point for point in trajectory[1:] if point.get("warmup")]
    assert [point["step"] for point in warmup] == list(range(1, 7))
    for point in warmup:
        assert point["weights"] == pytest.approx([1 / 3] * 3, abs=1e-4) and "valid_loss" not in point
        assert np.isfinite(point["train_loss"])
    search = trajectory[1 + len(warmup) :]
    assert [point["step"] for point in search] == list(range(7, 17))
    assert all(np.isfinite(point["valid_loss"]) for point in search)
    assert search[-1]["weights"] != trajectory[0]["weights"]  # alpha moves once the search proper starts
    # the weights did train during the warm-up: its training loss fell
    assert warmup[-1]["train_loss"] < warmup[0]["train_loss"]


def test_without_warmup_the_search_is_unchanged() -> None:
    plain = lagged_search(2, [1, 2, 4], search_steps=12)
    explicit = lagged_search(2, [1, 2, 4], search_steps=12, search_warmup_steps=0)
    assert plain.details["trajectory"] == explicit.details["trajectory"]
    assert not any(point.get("warmup") for point in plain.details["trajectory"])


def test_the_search_batches_are_the_trainers_cut_to_the_search_batch_size() -> None:
    batch = Batch(
        items=torch.tensor([[1, 2, 3], [4, 5, 0], [6, 0, 0], [7, 8, 9]]),
        lengths=torch.tensor([3, 2, 1, 3]),
        targets=torch.tensor([[2, 3, 4], [5, 6, 0], [7, 0, 0], [8, 9, 1]]),
    )
    pieces = cut_batch(batch, targets=5)
    assert [piece.items.tolist() for piece in pieces] == [[[1, 2, 3], [4, 5, 0]], [[6, 0, 0], [7, 8, 9]]]
    assert [int((piece.targets > 0).sum()) for piece in pieces] == [5, 4]
    # a window with more targets than the size stays whole; each piece is as wide as its longest window
    pieces = cut_batch(batch, targets=2)
    assert [piece.items.tolist() for piece in pieces] == [[[1, 2, 3]], [[4, 5]], [[6]], [[7, 8, 9]]]
    assert [piece.targets.tolist() for piece in pieces] == [[[2, 3, 4]], [[5, 6]], [[7]], [[8, 9, 1]]]
    assert [piece.lengths.tolist() for piece in pieces] == [[3], [2], [1], [3]]


@pytest.mark.parametrize("name", ["automlp", "automlp-id"])
def test_a_fixed_short_length_needs_no_search(name: str) -> None:
    entry = get_method(name)
    config = resolve_config(entry, {"short_length": 4})
    assert entry.cls.search_architecture(config, data=None, seed=0, device="cpu") is None  # type: ignore[arg-type]


def test_only_automlp_reads_text_and_fuses_it_with_the_id_by_a_fully_connected_layer() -> None:
    assert get_method("automlp").cls.needs_text and not get_method("automlp-id").cls.needs_text
    model = build("automlp")
    items = torch.tensor([[3, 0], [9, 1]])
    ids, text = model.item_embedding.weight, model.text
    # x_i = W_e [e_i ; t_i] + b_e, one item at a time
    expected = torch.stack(
        [
            torch.stack([model.fuse.weight @ torch.cat([ids[i], text[i]]) + model.fuse.bias for i in row])
            for row in items
        ]
    )
    torch.testing.assert_close(model.item_vectors(items), expected)
    torch.testing.assert_close(model.item_table()[items], expected)
    assert "text" not in model.state_dict()  # frozen and dataset-specific
    plain = build("automlp-id")
    assert plain.fuse is None and plain.text is None
    torch.testing.assert_close(plain.item_vectors(items), plain.item_embedding.weight[items])


def test_automlp_refuses_to_build_without_text() -> None:
    config = resolve_config(get_method("automlp"), TINY)
    with pytest.raises(ValueError, match="item_text_embeddings"):
        AutoMLP(config, DataSpec(num_items=9, max_seq_length=50))


def test_histories_are_right_aligned_and_cut_to_the_last_items() -> None:
    items = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7]])
    aligned = right_aligned(items, torch.tensor([0, 1, 1]), torch.tensor([2, 3, 1]), width=3)
    assert aligned.tolist() == [[1, 2, 3], [5, 6, 7], [0, 4, 5]]


@pytest.mark.parametrize("name", ["automlp", "automlp-id"])
def test_prefixes_represented_in_length_groups_equal_one_frame_as_wide_as_the_batch(name: str, monkeypatch) -> None:
    monkeypatch.setattr(layers, "MIN_GROUP_ROWS", 1)  # groups of a few rows, so a small batch has several
    # Each group's frame is as wide as its longest prefix (capped at max_seq_length = 6; windows are
    # 9 wide): h and every weight's gradient equal those of all prefixes in one batch-wide frame.
    model = build(name, num_items=30, short_length=4).eval()
    generator = torch.Generator().manual_seed(3)
    items = torch.randint(1, 31, (8, 9), generator=generator)
    rows = torch.arange(8).repeat_interleave(5)
    ends = torch.randint(0, 9, (40,), generator=generator)  # prefix lengths 1..9, in no order
    weights = torch.randn(40, 16, generator=generator)

    def h_and_grads(represent) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        hidden = represent()
        (hidden * weights).sum().backward()
        return hidden.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    grouped, grouped_grads = h_and_grads(lambda: model.represent_prefixes(items, rows, ends))
    whole, whole_grads = h_and_grads(lambda: model.represent(right_aligned(items, rows, ends, 6)))
    torch.testing.assert_close(grouped, whole, rtol=1e-5, atol=1e-6)
    assert len(grouped_grads) == len(whole_grads)
    for mine, reference in zip(grouped_grads, whole_grads):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-5)
    # The evaluation path groups an evaluation batch's histories the same way.
    lengths = torch.tensor([1, 9, 3, 6, 2, 7, 5, 4])
    evaluated = model.user_representation(Batch(items=items, lengths=lengths))
    torch.testing.assert_close(evaluated, model.represent(right_aligned(items, torch.arange(8), lengths - 1, 6)))


WINDOWS = Batch(
    items=torch.tensor([[3, 5, 7, 2], [4, 1, 0, 0]]),
    lengths=torch.tensor([4, 2]),
    targets=torch.tensor([[5, 7, 2, 9], [1, 6, 0, 0]]),
)
"""Two training windows: 4 and 2 target positions."""


def prefixes_of(batch: Batch) -> list[tuple[list[int], int]]:
    """(history, next item) of every target position of a training batch, window by window."""
    return [
        (batch.items[b, : t + 1].tolist(), int(batch.targets[b, t]))
        for b in range(batch.size)
        for t in range(batch.items.shape[1])
        if batch.targets[b, t] > 0
    ]


def hidden_after(model: AutoMLP | AutoMLPID, history: list[int]) -> torch.Tensor:
    """h_T after one history, computed alone."""
    return model.user_representation(Batch(items=torch.tensor([history]), lengths=torch.tensor([len(history)])))[0]


@pytest.mark.parametrize("name", ["automlp", "automlp-id"])
def test_the_bce_loss_is_the_papers_formula_over_every_target_position(name: str) -> None:
    # L = -sum_t [log sigma(r_pos,t) + sum_j log(1 - sigma(r_j,t))], here averaged over the 6 positions;
    # r = h_t . x_item, each prefix scored alone. A 0 negative is no negative.
    model = build(name).eval()
    negatives = torch.tensor([[8, 1], [6, 6], [4, 0], [1, 3], [9, 2], [0, 0]])
    terms = []
    for (history, target), drawn in zip(prefixes_of(WINDOWS), negatives.tolist()):
        h = hidden_after(model, history)
        term = torch.log(torch.sigmoid(h @ model.item_vectors(torch.tensor(target))))
        for j in drawn:
            if j:
                term = term + torch.log(1 - torch.sigmoid(h @ model.item_vectors(torch.tensor(j))))
        terms.append(-term)
    with torch.no_grad():
        torch.testing.assert_close(model.loss_with_negatives(WINDOWS, negatives), torch.stack(terms).mean())


def test_negatives_are_uniform_over_the_items_not_in_the_users_sequence() -> None:
    torch.manual_seed(0)
    seen = torch.tensor([[1, 2, 3, 0], [1, 2, 3, 4], [1, 2, 3, 5], [0, 0, 0, 0]])
    drawn = sample_negatives(seen.repeat(500, 1), count=3, num_items=5).view(500, 4, 3)
    assert (drawn[:, 0] >= 4).all() and (drawn[:, 0] <= 5).all()
    assert (drawn[:, 1] == 5).all() and (drawn[:, 2] == 4).all()  # the one item left
    counts = torch.bincount(drawn[:, 3].flatten(), minlength=6)[1:]
    assert counts.sum() == 1500 and counts.min() > 240  # about 300 each of 1..5
    assert (sample_negatives(torch.tensor([[1, 2, 3]]), count=2, num_items=3) == 0).all()  # nothing left: none
    unsorted = sample_negatives(torch.tensor([[5, 1, 5, 3, 0]]).repeat(600, 1), count=1, num_items=6)
    counts = torch.bincount(unsorted.flatten(), minlength=7)
    assert counts[[0, 1, 3, 5]].sum() == 0 and counts[[2, 4, 6]].min() > 160  # about 200 each of 2, 4, 6


@pytest.mark.parametrize("name", ["automlp", "automlp-id"])
def test_the_loss_draws_its_negatives_outside_the_windows_inputs_and_targets(name: str) -> None:
    # Items 1..5; the window shows 1, 2, 3 and the target 4: every negative must be 5.
    model = build(name, num_items=5).eval()
    window = Batch(items=torch.tensor([[1, 2, 3]]), lengths=torch.tensor([3]), targets=torch.tensor([[2, 3, 4]]))
    with torch.no_grad():
        torch.testing.assert_close(model.loss(window), model.loss_with_negatives(window, torch.full((3, 1), 5)))


def test_the_output_layer_projects_the_layer_normed_short_and_long_term_states() -> None:
    # h_T = W_o LayerNorm([x_s ; x_l]) + b_o with x_s, x_l each module's state at the last position.
    model = build("automlp", short_length=3).eval()
    history = torch.tensor([[0, 0, 4, 2, 8, 1]])  # right-aligned, T = 6
    real = (history > 0).unsqueeze(-1).float()
    with torch.no_grad():
        x = model.item_vectors(history) * real
        joint = torch.cat([model.short_term[0](x, real)[0], model.long_term(x, real)[0]])
        normed = (joint - joint.mean()) / torch.sqrt(joint.var(unbiased=False) + model.config.layer_norm_eps)
        normed = normed * model.output_norm.weight + model.output_norm.bias
        expected = model.output.weight @ normed + model.output.bias
        torch.testing.assert_close(hidden_after(model, [4, 2, 8, 1]), expected)


@pytest.mark.parametrize("name", ["automlp", "automlp-id"])
def test_scores_are_cosine_similarities_of_h_and_every_item_embedding(name: str) -> None:
    model = build(name).eval()
    histories = [[3, 5, 7], [4], [2, 8, 1, 6, 9, 5, 3]]  # the last is longer than max_seq_length = 6
    batch = Batch(
        items=torch.tensor([h + [0] * (7 - len(h)) for h in histories]), lengths=torch.tensor(list(map(len, histories)))
    )
    with torch.no_grad():
        expected = torch.tensor(
            [
                [
                    torch.nn.functional.cosine_similarity(
                        hidden_after(model, history[-6:]), model.item_vectors(torch.tensor(i)), dim=0
                    )
                    for i in range(1, 10)
                ]
                for history in histories
            ]
        )
        scores = model.score(batch)
        torch.testing.assert_close(scores[:, 1:], expected)
        candidates = torch.tensor([[9, 1], [2, 2], [5, 4]])
        torch.testing.assert_close(model.score_candidates(batch, candidates), scores.gather(1, candidates))
        query, items = model.query_and_items(batch)
        torch.testing.assert_close(query @ items.T, scores)


@pytest.mark.parametrize("name", ["automlp", "automlp-id"])
def test_the_ce_option_is_the_full_softmax_over_every_target_position(name: str) -> None:
    model = build(name, loss="ce").eval()
    with torch.no_grad():
        expected = [
            torch.nn.functional.cross_entropy(hidden_after(model, history) @ model.item_table().T, torch.tensor(target))
            for history, target in prefixes_of(WINDOWS)
        ]
        torch.testing.assert_close(model.loss(WINDOWS), torch.stack(expected).mean())


def test_the_search_groups_validation_histories_by_length() -> None:
    dataset = lagged_dataset(2, users=10)
    given = valid_batches(dataset, 8, 4, seed=0)
    regrouped = by_length(given, size=3, seed=1)
    assert [b.size for b in regrouped if b.size != 3] == [1]  # 10 users: 3 + 3 + 3 + 1

    def rows(batches: list[Batch]) -> list[tuple[tuple[int, ...], int]]:
        """(history, valid item) of every user, sorted."""
        return sorted(
            (tuple(b.items[r, : b.lengths[r]].tolist()), int(b.targets[r, b.lengths[r] - 1]))
            for b in batches
            for r in range(b.size)
        )

    assert rows(regrouped) == rows(given)  # the same users, histories and valid items
    for batch in regrouped:
        assert batch.items.shape[1] == int(batch.lengths.max())
        assert ((batch.targets > 0).sum(dim=1) == 1).all()
    groups = sorted((int(b.lengths.min()), int(b.lengths.max())) for b in regrouped)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(groups, groups[1:]))  # by length


def test_valid_batches_hold_one_target_after_each_history() -> None:
    dataset = lagged_dataset(2, users=10)
    batches = valid_batches(dataset, 8, 4, seed=0)
    assert sum(b.size for b in batches) == 10
    for batch in batches:
        assert ((batch.targets > 0).sum(dim=1) == 1).all()
        assert (batch.targets[torch.arange(batch.size), batch.lengths - 1] > 0).all()


def test_an_interrupted_search_continues_from_its_kept_state_to_the_same_outcome(tmp_path: Path) -> None:
    settings = {"search_steps": 20, "dropout_prob": 0.2}  # dropout and the loss's negatives draw from the RNG
    uninterrupted = lagged_search(2, [1, 2, 4], **settings)
    save, load = search_state_hooks(tmp_path / SEARCH_STATE_FILE)
    kept: list[int] = []

    def save_then_die(state: dict) -> None:
        save(state)
        kept.append(state["step"])
        if len(kept) == 3:
            raise KeyboardInterrupt  # the run is killed right after the search kept its third state

    with pytest.raises(KeyboardInterrupt):
        lagged_search(2, [1, 2, 4], hooks=(save_then_die, load), **settings)
    assert kept == [2, 4, 6]  # a state at every point of the trajectory
    resumed = lagged_search(2, [1, 2, 4], hooks=(save, load), **settings)
    assert resumed.details["resumed_at_step"] == 6 and "resumed_at_step" not in uninterrupted.details
    assert resumed.details["trajectory"] == uninterrupted.details["trajectory"]  # every weight and loss, exactly
    assert resumed.details["weights"] == uninterrupted.details["weights"]
    assert resumed.config_updates == uninterrupted.config_updates
    # the last state holds the finished search: asked again, it answers without another step
    again = lagged_search(2, [1, 2, 4], hooks=(save, load), **settings)
    assert again.details["resumed_at_step"] == 20 and again.details["trajectory"] == uninterrupted.details["trajectory"]


@pytest.mark.parametrize("dies_at", [3, 8])  # during the warm-up, during the search proper
def test_a_search_interrupted_in_either_phase_continues_to_the_same_outcome(tmp_path: Path, dies_at: int) -> None:
    settings = {"search_warmup_steps": 5, "search_steps": 10, "dropout_prob": 0.2}
    uninterrupted = lagged_search(2, [1, 2, 4], **settings)
    save, load = search_state_hooks(tmp_path / SEARCH_STATE_FILE)

    def save_then_die(state: dict) -> None:
        save(state)
        if state["step"] == dies_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lagged_search(2, [1, 2, 4], hooks=(save_then_die, load), **settings)
    resumed = lagged_search(2, [1, 2, 4], hooks=(save, load), **settings)
    assert resumed.details["resumed_at_step"] == dies_at
    assert resumed.details["trajectory"] == uninterrupted.details["trajectory"]
    assert resumed.config_updates == uninterrupted.config_updates


def test_a_run_keeps_its_search_state_in_its_directory_and_a_restart_forgets_it(tmp_path: Path) -> None:
    entry = get_method("automlp-id")
    config = resolve_config(entry, TINY, {"max_seq_length": 8, "short_length": 2})  # fixed k: no search
    kept = tmp_path / SEARCH_STATE_FILE
    kept.write_bytes(b"an earlier attempt's state")
    run = SimpleNamespace(path=tmp_path, has_checkpoint=False)
    dataset = lagged_dataset(2)
    architecture_search(entry, config, dataset, run, seed=0, device="cpu", reuse=False)  # type: ignore[arg-type]
    assert kept.is_file()  # continued, not thrown away
    architecture_search(entry, config, dataset, run, seed=0, device="cpu", reuse=False, restart=True)  # type: ignore[arg-type]
    assert not kept.exists()


def test_a_run_killed_during_its_search_continues_the_search_and_deletes_its_state_when_finished(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recbench.runs.experiment as experiment

    overrides = {**TINY, "max_seq_length": 8, "short_length_candidates": [1, 2, 4], "search_steps": 10, "epochs": 1}

    def train() -> experiment.ExperimentResult:
        return experiment.run_experiment(
            "automlp-id", "toy", seed=3, overrides=[overrides], runs_dir=tmp_path, device="cpu", show_progress=False
        )

    hooks = experiment.search_state_hooks

    def dying_hooks(path: Path):
        save, load = hooks(path)

        def save_then_die(state: dict) -> None:
            save(state)
            if state["step"] == 4:
                raise KeyboardInterrupt

        return save_then_die, load

    monkeypatch.setattr(experiment, "search_state_hooks", dying_hooks)
    with pytest.raises(KeyboardInterrupt):
        train()
    (kept,) = tmp_path.glob(f"toy/automlp-id/*/{SEARCH_STATE_FILE}")
    monkeypatch.setattr(experiment, "search_state_hooks", hooks)
    result = train()  # no checkpoint yet, so no --resume needed: the search goes on from step 4
    assert result.run.path == kept.parent and not kept.exists()
    assert result.run.config["search"]["details"]["resumed_at_step"] == 4

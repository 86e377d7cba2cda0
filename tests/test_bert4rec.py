"""BERT4Rec: what the cloze task masks, what it trains on, and where scoring reads its output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recbench import layers
from recbench.layers import length_groups
from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.record import RunRecord
from recbench.runs.trainer import Trainer, seed_everything
from recbench_plugins.bert4rec import BERT4Rec
from tests.conftest import make_cyclic_dataset

NUM_ITEMS = 20


def model(**overrides) -> BERT4Rec:
    seed_everything(0)
    config = resolve_config(
        get_method("bert4rec"), {"hidden_size": 16, "inner_size": 16, "max_seq_length": 10}, overrides
    )
    return BERT4Rec(config, DataSpec(num_items=NUM_ITEMS, max_seq_length=config.max_seq_length))


def padded_sequences(rows: int = 4000, width: int = 11) -> torch.Tensor:
    """Random items 1..N with random lengths 1..width, right-padded with 0."""
    generator = torch.Generator().manual_seed(0)
    items = torch.randint(1, NUM_ITEMS + 1, (rows, width), generator=generator)
    lengths = torch.randint(1, width + 1, (rows, 1), generator=generator)
    return items * (torch.arange(width) < lengths)


def test_masking_never_masks_padding() -> None:
    sequences = padded_sequences()
    inputs, predicted = model(mask_ratio=0.9).mask_items(sequences)
    assert (inputs[sequences == 0] == 0).all()
    assert not predicted[sequences == 0].any()


def test_each_item_is_masked_with_the_mask_ratio() -> None:
    sequences = padded_sequences()
    inputs, _ = model().mask_items(sequences)
    masked = inputs == NUM_ITEMS + 1
    rate = masked.sum() / (sequences > 0).sum()
    assert abs(float(rate) - 0.2) < 0.01


def test_at_most_the_last_mask_ratio_times_max_length_masked_positions_are_predicted() -> None:
    sequences = padded_sequences()
    inputs, predicted = model(mask_ratio=0.5).mask_items(sequences)  # int(0.5 * 10) = 5 predictions at most
    masked = inputs == NUM_ITEMS + 1
    assert predicted.sum(dim=1).max() == 5
    assert (predicted <= masked).all()  # every predicted position is masked in the input
    # rows with more than 5 masks keep them all masked but predict exactly their last 5
    crowded = masked.sum(dim=1) > 5
    assert crowded.any()
    last_five = masked & (masked.flip(1).cumsum(1).flip(1) <= 5)
    assert torch.equal(predicted[crowded], last_five[crowded])
    assert torch.equal(predicted[~crowded], masked[~crowded])


def test_training_rows_are_the_samples_with_their_targets() -> None:
    batch = Batch(
        items=torch.tensor([[3, 5, 7], [4, 6, 0]]),
        lengths=torch.tensor([3, 2]),
        targets=torch.tensor([[5, 7, 9], [6, 8, 0]]),
    )
    rows = {
        mode: model(training_input=mode).training_sequences(batch).tolist()
        for mode in ("samples", "prefixes", "window")
    }
    assert rows["samples"] == [[3, 5, 0, 0], [3, 5, 7, 0], [3, 5, 7, 9], [4, 6, 0, 0], [4, 6, 8, 0]]
    assert rows["prefixes"] == [[3, 0, 0], [3, 5, 0], [3, 5, 7], [4, 0, 0], [4, 6, 0]]  # RecBole's item_seq
    assert rows["window"] == [[3, 5, 7, 9], [4, 6, 8, 0]]


def test_shuffled_prefixes_train_recboles_rows_from_the_trainers_sample_rows(tmp_path: Path) -> None:
    """``shuffled_prefixes`` makes the Trainer batch one (prefix, target) sample per row; each such row
    is masked whole (its target, the only one, is not an input), exactly as ``prefixes`` reads it."""
    dataset = make_cyclic_dataset(users=20, min_len=3, max_len=30)
    shuffled = model(training_input="shuffled_prefixes")

    def trainer_of(bert4rec: BERT4Rec) -> Trainer:
        return Trainer(bert4rec, dataset, bert4rec.config, RunRecord(tmp_path), seed=0, show_progress=False)

    trainer = trainer_of(shuffled)
    assert trainer.windows.samples
    assert not any(trainer_of(model(training_input=mode)).windows.samples for mode in ("window", "samples", "prefixes"))
    batch = trainer.windows.batches(64, np.random.default_rng(0))[0]
    rows = shuffled.training_sequences(batch)
    assert torch.equal(rows, batch.items)  # every row is its sample's whole prefix, nothing cut
    assert torch.equal(rows, model(training_input="prefixes").training_sequences(batch))


def test_a_batch_without_any_masked_item_gives_a_zero_loss_with_gradients() -> None:
    bert4rec = model(mask_ratio=0.0)
    batch = Batch(items=torch.tensor([[3, 5]]), lengths=torch.tensor([2]), targets=torch.tensor([[5, 7]]))
    loss = bert4rec.loss(batch)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(loss)


def test_scoring_appends_the_mask_token_after_the_last_item_and_reads_that_position() -> None:
    bert4rec = model().eval()
    batch = Batch(
        items=torch.tensor([[1, 2, 3, 0], [5, 6, 9, 9]]), lengths=torch.tensor([3, 2])
    )  # row 2: junk past its end
    seen: list[torch.Tensor] = []
    hook = bert4rec.item_embedding.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    with torch.no_grad():
        scores = bert4rec.score(batch)
    hook.remove()
    mask = NUM_ITEMS + 1
    assert seen[0].tolist() == [[1, 2, 3, mask, 0], [5, 6, mask, 0, 0]]
    # the scores are the output at the mask position (full forward pass, all positions computed)
    with torch.no_grad():
        hidden = bert4rec.encode(seen[0])  # (B, L + 1, d)
        expected = hidden[torch.arange(2), batch.lengths] @ bert4rec.item_embedding.weight[: NUM_ITEMS + 1].T
    torch.testing.assert_close(scores, expected)
    assert scores.shape == (2, NUM_ITEMS + 1)


def test_the_mask_token_embedding_drives_the_scores() -> None:
    bert4rec = model().eval()
    batch = Batch(items=torch.tensor([[1, 2, 3]]), lengths=torch.tensor([3]))
    with torch.no_grad():
        before = bert4rec.score(batch)
        bert4rec.item_embedding.weight[NUM_ITEMS + 1] += 1.0  # the mask row, not a candidate
        after = bert4rec.score(batch)
    assert not torch.allclose(before, after)


def test_recbole_s_prefix_rows_never_predict_a_masked_first_item_the_other_modes_do() -> None:
    batch = Batch(
        items=torch.tensor([[3, 5, 7], [4, 6, 0]]),
        lengths=torch.tensor([3, 2]),
        targets=torch.tensor([[5, 7, 9], [6, 8, 0]]),
    )
    for mode in ("prefixes", "samples", "window"):
        bert4rec = model(training_input=mode, mask_ratio=1.0).eval()  # every item masked, no dropout
        sequences = bert4rec.training_sequences(batch)
        with torch.no_grad():
            loss = bert4rec.loss(batch)
            hidden = bert4rec.encode(sequences.masked_fill(sequences > 0, NUM_ITEMS + 1))  # all masked in the input
            everything = sequences > 0
            all_but_first = everything.clone()
            all_but_first[:, 0] = False

            logits = bert4rec.item_logits(hidden)
            with_first = F.cross_entropy(logits[everything], sequences[everything])
            without_first = F.cross_entropy(logits[all_but_first], sequences[all_but_first])
        if mode == "prefixes":  # RecBole: masked in the input, left out of the loss
            torch.testing.assert_close(loss, without_first)
            assert not torch.allclose(loss, with_first)
        else:
            torch.testing.assert_close(loss, with_first)


def test_sample_rows_encoded_in_length_groups_give_the_loss_and_gradients_of_one_full_width_frame(monkeypatch) -> None:
    monkeypatch.setattr(layers, "MIN_GROUP_ROWS", 1)  # groups of a few rows, so a small batch has several
    # "prefixes" and "samples" rows are encoded in groups of similar length, each only as wide as its
    # longest row; with the same masks (seeded) and no dropout, loss and gradients equal those of every
    # row encoded at the batch's full width.
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(2, 11, (12,), generator=generator)
    items = torch.randint(1, NUM_ITEMS + 1, (12, 10), generator=generator) * (torch.arange(10) < lengths[:, None])
    targets = torch.roll(items, -1, dims=1) * (torch.arange(10) < (lengths - 1)[:, None])
    batch = Batch(items=items, lengths=lengths, targets=targets)
    for mode in ("prefixes", "samples"):
        bert4rec = model(training_input=mode, mask_ratio=0.5).eval()
        torch.manual_seed(7)
        loss = bert4rec.loss(batch)
        loss.backward()
        grouped_grads = [p.grad.clone() for p in bert4rec.parameters()]
        bert4rec.zero_grad()
        torch.manual_seed(7)  # the same masks
        sequences = bert4rec.training_sequences(batch)
        inputs, predicted = bert4rec.mask_items(sequences)
        if mode == "prefixes":
            predicted[:, 0] = False
        hidden = bert4rec.encode(inputs)  # every row at the full width
        reference = F.cross_entropy(bert4rec.item_logits(hidden[predicted]), sequences[predicted])
        reference.backward()
        assert len(set(lengths.tolist())) > 4 and predicted.sum() > 10  # the groups really differ in width
        torch.testing.assert_close(loss, reference)
        for mine, expected in zip(grouped_grads, (p.grad for p in bert4rec.parameters())):
            torch.testing.assert_close(mine, expected, rtol=1e-4, atol=1e-6)


def test_length_groups_cut_the_rows_sorted_by_length_into_at_most_the_set_number_of_groups() -> None:
    lengths = torch.tensor([5, 1, 3, 3, 9, 2, 7, 1, 4, 6])
    assert len(length_groups(lengths)) == 1  # fewer than MIN_GROUP_ROWS rows a group: one group
    assert len(length_groups(lengths, groups=4, min_rows=3)) == 3  # no group below min_rows
    groups = length_groups(lengths, groups=4, min_rows=2)
    assert len(groups) == 4 and all(len(group) for group in groups)
    order = torch.cat(groups)
    assert sorted(order.tolist()) == list(range(10))  # a permutation of the rows
    assert (lengths[order][1:] >= lengths[order][:-1]).all()  # sorted by length
    assert len(length_groups(lengths, groups=50, min_rows=1)) == 10  # never more groups than rows
    assert length_groups(torch.tensor([], dtype=torch.long)) == []

"""FPMC: the score against its two factorisations, BPR pairs and negatives as RecBole, initialisation, training."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.trainer import seed_everything
from recbench_plugins.fpmc import FPMC
from tests.baseline_checks import assert_learns_the_toy_task

NUM_ITEMS = 20
NUM_USERS = 6


def model(**overrides) -> FPMC:
    seed_everything(0)
    config = resolve_config(get_method("fpmc"), {"embedding_size": 8, "max_seq_length": 10}, overrides)
    return FPMC(config, DataSpec(num_items=NUM_ITEMS, max_seq_length=10, num_users=NUM_USERS))


def brute_force_score(fpmc: FPMC, user: int, last: int, item: int) -> float:
    """The paper's x(u, l, i) with one-item baskets, a loop over the factor columns of each table."""
    mf = sum(fpmc.ui_emb.weight[user, f] * fpmc.iu_emb.weight[item, f] for f in range(8))
    fmc = sum(fpmc.il_emb.weight[item, f] * fpmc.li_emb.weight[last, f] for f in range(8))
    return float(mf + fmc)


BATCH = Batch(
    items=torch.tensor([[3, 7, 1, 0], [5, 6, 0, 0], [9, 8, 2, 4]]),
    lengths=torch.tensor([3, 2, 4]),
    users=torch.tensor([2, 6, 1]),
)


def test_the_score_is_mf_of_user_and_item_plus_fmc_of_last_item_and_item() -> None:
    fpmc = model().eval()
    with torch.no_grad():
        scores = fpmc.score(BATCH)
        for row, (user, last) in enumerate([(2, 1), (6, 6), (1, 4)]):
            expected = torch.tensor([brute_force_score(fpmc, user, last, i) for i in range(NUM_ITEMS + 1)])
            torch.testing.assert_close(scores[row], expected, rtol=1e-5, atol=1e-6)
            # RecBole's forward scores one (user, last item, candidate) triple: the same numbers
            pairs = fpmc.pair_scores(torch.full((5,), user), torch.full((5,), last), torch.arange(1, 6))
            torch.testing.assert_close(pairs, expected[1:6], rtol=1e-5, atol=1e-6)
        candidates = torch.tensor([[4, 1, 20], [2, 2, 9], [13, 17, 3]])
        torch.testing.assert_close(fpmc.score_candidates(BATCH, candidates), scores.gather(1, candidates))
    assert scores.shape == (3, NUM_ITEMS + 1)


def test_only_the_user_and_the_last_item_matter() -> None:
    fpmc = model().eval()
    with torch.no_grad():
        base = fpmc.score(BATCH)
        earlier = Batch(items=BATCH.items.clone(), lengths=BATCH.lengths, users=BATCH.users)
        earlier.items[:, 0] = torch.tensor([11, 12, 13])  # not the last item of any row
        torch.testing.assert_close(fpmc.score(earlier), base)
        other_last = Batch(items=BATCH.items.clone(), lengths=BATCH.lengths, users=BATCH.users)
        other_last.items[0, 2] = 14
        assert not torch.allclose(fpmc.score(other_last)[0], base[0]) and torch.equal(
            fpmc.score(other_last)[1:], base[1:]
        )
        other_user = Batch(items=BATCH.items, lengths=BATCH.lengths, users=torch.tensor([3, 6, 1]))
        assert not torch.allclose(fpmc.score(other_user)[0], base[0])


def test_an_unknown_user_scores_by_the_last_item_alone_and_its_row_never_trains() -> None:
    fpmc = model().train()
    assert torch.count_nonzero(fpmc.ui_emb.weight[0]) == 0
    with torch.no_grad():
        anonymous = fpmc.score(Batch(items=BATCH.items, lengths=BATCH.lengths))
        fmc_only = fpmc.li_emb.weight[torch.tensor([1, 6, 4])] @ fpmc.il_emb.weight.T
        torch.testing.assert_close(anonymous, fmc_only)
        beyond = fpmc.score(Batch(items=BATCH.items, lengths=BATCH.lengths, users=torch.tensor([0, 7, 99])))
        torch.testing.assert_close(beyond, fmc_only)
    window = Batch(
        items=torch.tensor([[3, 5, 7], [4, 6, 0]]),
        lengths=torch.tensor([3, 2]),
        targets=torch.tensor([[5, 7, 2], [6, 8, 0]]),
        users=torch.tensor([0, 9]),  # unknown and out of range: both read row 0
    )
    fpmc.loss(window).backward()
    assert torch.count_nonzero(fpmc.ui_emb.weight.grad) == 0  # the padding row takes no gradient


def test_the_loss_is_bpr_over_every_target_paired_with_its_user_and_previous_item() -> None:
    fpmc = model().train()
    window = Batch(
        items=torch.tensor([[3, 5, 7, 2], [4, 6, 0, 0]]),
        lengths=torch.tensor([4, 2]),
        targets=torch.tensor([[5, 7, 2, 9], [6, 8, 0, 0]]),
        users=torch.tensor([4, 1]),
    )
    # RecBole's samples: (user, last item of the history, target), one per training interaction
    samples = [(4, 3, 5), (4, 5, 7), (4, 7, 2), (4, 2, 9), (1, 4, 6), (1, 6, 8)]
    torch.manual_seed(5)
    loss = fpmc.loss(window)
    torch.manual_seed(5)
    negatives = fpmc.sample_negatives(torch.tensor([target for _, _, target in samples]))
    with torch.no_grad():
        margins = [
            brute_force_score(fpmc, u, last, pos) - brute_force_score(fpmc, u, last, int(neg))
            for (u, last, pos), neg in zip(samples, negatives)
        ]
        expected = -sum(math.log(1e-10 + 1 / (1 + math.exp(-m))) for m in margins) / len(margins)
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


def test_negatives_are_uniform_over_every_item_but_the_target() -> None:
    fpmc = model()
    torch.manual_seed(0)
    positives = torch.full((42_000,), 7)
    negatives = fpmc.sample_negatives(positives)
    counts = torch.bincount(negatives, minlength=NUM_ITEMS + 1)
    assert counts[0] == 0 and counts[7] == 0  # never the padding item, never the target
    others = counts[[i for i in range(1, NUM_ITEMS + 1) if i != 7]].double()
    # 19 other items, 2,211 draws each expected: a 5-sigma band around it
    assert (others - 42_000 / 19).abs().max() < 5 * math.sqrt(42_000 / 19)
    # the target at either end of the range is skipped as well
    for target in (1, NUM_ITEMS):
        drawn = fpmc.sample_negatives(torch.full((5_000,), target))
        assert drawn.min() >= 1 and drawn.max() <= NUM_ITEMS and not (drawn == target).any()
        assert len(drawn.unique()) == NUM_ITEMS - 1


def test_initialisation_is_recbole_s_xavier_normal_with_an_empty_unknown_user_row() -> None:
    seed_everything(0)
    fpmc = FPMC(resolve_config(get_method("fpmc")), DataSpec(num_items=3000, max_seq_length=50, num_users=2000))
    assert fpmc.config.embedding_size == 64  # FPMC.yaml
    for table, rows in ((fpmc.ui_emb, 2001), (fpmc.iu_emb, 3001), (fpmc.li_emb, 3001), (fpmc.il_emb, 3001)):
        std = math.sqrt(2.0 / (rows + 64))  # xavier_normal_ on a (rows, 64) weight
        assert abs(table.weight[1:].std().item() - std) < 0.03 * std
    assert torch.count_nonzero(fpmc.ui_emb.weight[0]) == 0
    assert torch.count_nonzero(fpmc.li_emb.weight[0]) > 0  # xavier overwrote the padding row, as RecBole


def test_training_on_a_toy_task_lowers_the_loss_and_beats_chance(toy_dataset, tmp_path: Path) -> None:
    assert_learns_the_toy_task("fpmc", {"embedding_size": 16}, toy_dataset, tmp_path)

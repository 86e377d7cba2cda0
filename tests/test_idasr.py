"""IDA-SR / LSH-SR specifics: pre-training augmentations, learnable LSH codes, task switches."""

from __future__ import annotations

import pytest
import torch

from recbench.errors import ConfigError
from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench_plugins.idasr import choose_positions, full_sequences, permute_positions, shift
from recbench_plugins.lshsr import LearnableLSH

SMALL = {"item_size": 16, "semantic_hidden_size": 16, "inner_size": 16, "max_seq_length": 12}


def build(name: str, **overrides):
    config = resolve_config(get_method(name), SMALL, overrides)
    text = torch.randn(41, 24, generator=torch.Generator().manual_seed(0))
    text[0] = 0
    torch.manual_seed(0)
    return get_method(name).cls(config, DataSpec(num_items=40, max_seq_length=12, item_text_embeddings=text))


def sample_sequences(rows: int = 400, length: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    sequences = torch.randint(1, 41, (rows, length), generator=generator)
    lengths = torch.randint(2, length + 1, (rows,), generator=generator)
    return torch.where(torch.arange(length) < lengths[:, None], sequences, 0)


def test_chosen_positions_follow_the_ratio_and_never_touch_padding() -> None:
    torch.manual_seed(0)
    sequences = sample_sequences(2000)
    chosen = choose_positions(sequences, 0.1)
    assert not chosen[sequences == 0].any()
    assert chosen.sum() / (sequences > 0).sum() == pytest.approx(0.1, abs=0.01)


def test_permutation_shuffles_only_chosen_positions_and_keeps_each_sequences_items() -> None:
    torch.manual_seed(0)
    sequences = sample_sequences()
    permuted = permute_positions(sequences, 0.3)
    assert (permuted[sequences == 0] == 0).all()
    for before, after in zip(sequences, permuted):
        assert sorted(before.tolist()) == sorted(after.tolist())
    changed = (permuted != sequences).sum() / (sequences > 0).sum()
    assert 0.05 < changed < 0.3  # some chosen items land back in place


def test_full_sequences_append_the_last_target_and_shift_inverts_it() -> None:
    items = torch.tensor([[3, 4, 5], [7, 0, 0]])
    targets = torch.tensor([[4, 5, 6], [8, 0, 0]])
    sequences = full_sequences(Batch(items=items, lengths=torch.tensor([3, 1]), targets=targets))
    assert sequences.tolist() == [[3, 4, 5, 6], [7, 8, 0, 0]]
    inputs, shifted = shift(sequences)  # the appended item becomes an input with no next item
    assert inputs.tolist() == [[3, 4, 5], [7, 8, 0]] and shifted.tolist() == [[4, 5, 6], [8, 0, 0]]


def test_masked_item_loss_predicts_the_original_items_at_masked_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build("idasr").eval()
    sequences = torch.tensor([[5, 6, 7, 8, 0], [9, 10, 0, 0, 0]])
    seen = {}
    original_ce = torch.nn.functional.cross_entropy

    def spy(logits, targets):
        seen["targets"] = targets.tolist()
        return original_ce(logits, targets)

    monkeypatch.setattr("recbench_plugins.idasr.F.cross_entropy", spy)
    monkeypatch.setattr(
        "recbench_plugins.idasr.choose_positions",
        lambda s, r: torch.tensor([[False, True, False, True, False], [True, False, False, False, False]]),
    )
    model.masked_item_loss(sequences, model.item_table())
    assert seen["targets"] == [6, 8, 9]


@pytest.mark.parametrize("tasks", [["next"], ["mask"], ["permute"], ["next", "mask", "permute"]])
def test_each_pretraining_task_gives_a_finite_loss(tasks: list[str]) -> None:
    model = build("idasr", tasks=tasks).train()
    sequences = sample_sequences(8)
    inputs, targets = shift(sequences)
    lengths = (inputs > 0).sum(dim=1)
    keep = lengths > 0
    batch = Batch(items=inputs[keep], lengths=lengths[keep], targets=targets[keep])
    loss = model.pretrain_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()


def test_unknown_pretraining_task_is_rejected() -> None:
    with pytest.raises(ConfigError, match="config key 'tasks' of method 'idasr': item 2 must be 'next', 'mask' or"):
        build("idasr", tasks=["next", "shuffle"])


def test_lsh_codes_are_deterministic_for_fixed_hyperplanes() -> None:
    lsh = LearnableLSH(24, 10, 3, 8, 1.0, 0.02)
    lsh.reset_parameters()
    text = torch.randn(50, 24)
    codes = lsh.codes(text)
    assert codes.shape == (50, 3) and codes.min() >= 0 and codes.max() < 1024
    assert torch.equal(codes, lsh.codes(text.clone()))
    bits = (lsh.project(text) > 0).long()
    assert torch.equal(codes, (bits * 2 ** torch.arange(10)).sum(-1))  # c = sum_j 2^(j-1) bit_j


def test_similar_embeddings_share_more_code_bits_than_dissimilar_ones() -> None:
    torch.manual_seed(0)
    lsh = LearnableLSH(64, 10, 3, 8, 1.0, 0.02)
    lsh.reset_parameters()
    anchors = torch.randn(500, 64)
    similar = anchors + 0.1 * torch.randn(500, 64)
    unrelated = torch.randn(500, 64)

    def shared_bits(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((lsh.project(a) > 0) == (lsh.project(b) > 0)).float().mean().item()

    assert shared_bits(anchors, similar) > 0.9 > 0.6 > shared_bits(anchors, unrelated)
    assert (lsh.codes(anchors) == lsh.codes(similar)).float().mean() > (
        lsh.codes(anchors) == lsh.codes(unrelated)
    ).float().mean()


def test_straight_through_lsh_forwards_hard_codes_and_trains_the_hyperplanes() -> None:
    lsh = LearnableLSH(24, 4, 2, 8, 1.0, 0.02)
    lsh.reset_parameters()
    text = torch.randn(30, 24)
    lsh.train()
    out = lsh(text)
    hard = lsh.tables[torch.arange(2), lsh.codes(text)]
    assert torch.equal(out, hard)
    out.square().sum().backward()
    assert lsh.hyperplanes.grad is not None and lsh.hyperplanes.grad.abs().sum() > 0


def test_straight_through_gradient_is_that_of_the_expected_table_vector_under_soft_bits() -> None:
    """Cross-check against autograd through E = sum_c P(c) E_k[c], P(c) a product over the bits."""
    torch.manual_seed(0)
    n_planes, n_tables, temperature = 3, 2, 0.7
    lsh = LearnableLSH(6, n_planes, n_tables, 5, temperature, 0.5).double()
    lsh.reset_parameters()
    text, weights = torch.randn(9, 6, dtype=torch.float64), torch.randn(9, n_tables, 5, dtype=torch.float64)
    lsh.train()
    (lsh(text) * weights).sum().backward()
    hyperplanes = lsh.hyperplanes.detach().clone().requires_grad_()
    soft_bits = torch.sigmoid(torch.einsum("nt,mth->nmh", text, hyperplanes) / temperature)  # (N, m, h)
    expected = torch.zeros(9, n_tables, 5, dtype=torch.float64)
    for code in range(2**n_planes):
        bits = torch.tensor([(code >> j) & 1 for j in range(n_planes)], dtype=torch.float64)
        probability = (bits * soft_bits + (1 - bits) * (1 - soft_bits)).prod(dim=-1)  # (N, m)
        expected = expected + probability[..., None] * lsh.tables.detach()[:, code]
    (expected * weights).sum().backward()
    torch.testing.assert_close(lsh.hyperplanes.grad, hyperplanes.grad)
    hard_grad = torch.zeros_like(lsh.tables)
    codes = lsh.codes(text)
    for table in range(n_tables):
        hard_grad[table].index_add_(0, codes[:, table], weights[:, table])
    torch.testing.assert_close(lsh.tables.grad, hard_grad)  # the tables learn from the hard look-up only


def test_lshsr_without_gate_is_a_different_model() -> None:
    gated, plain = build("lshsr"), build("lshsr", use_gate=False)
    assert gated.gate_logit is not None and plain.gate_logit is None

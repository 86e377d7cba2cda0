"""GRU4Rec: the forward pass against a hand-written GRU, RecBole's initialisation, training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.trainer import seed_everything
from recbench_plugins.gru4rec import GRU4Rec
from tests.baseline_checks import assert_learns_the_toy_task, manual_gru

NUM_ITEMS = 20


def model(**overrides) -> GRU4Rec:
    seed_everything(0)
    config = resolve_config(
        get_method("gru4rec"), {"embedding_size": 12, "hidden_size": 8, "max_seq_length": 10}, overrides
    )
    return GRU4Rec(config, DataSpec(num_items=NUM_ITEMS, max_seq_length=config.max_seq_length))


@pytest.mark.parametrize("layers", [1, 2])
def test_scores_match_a_hand_written_gru_loop_then_dense_then_dot_products(layers: int) -> None:
    gru4rec = model(num_layers=layers).eval()
    sequences = [[3, 7, 1], [5, 6], [9, 8, 2, 4, 20]]
    width = max(map(len, sequences))
    items = torch.tensor([s + [0] * (width - len(s)) for s in sequences])
    with torch.no_grad():
        scores = gru4rec.score(Batch(items=items, lengths=torch.tensor([len(s) for s in sequences])))
        for row, sequence in enumerate(sequences):
            output = gru4rec.dense(manual_gru(gru4rec.gru, [gru4rec.item_embedding.weight[i] for i in sequence]))
            expected = gru4rec.item_embedding.weight @ output  # every row, padding included
            torch.testing.assert_close(scores[row], expected, rtol=1e-5, atol=1e-5)
    assert scores.shape == (3, NUM_ITEMS + 1)


def test_training_loss_is_the_mean_ce_of_every_prefix_scored_on_its_own() -> None:
    # one causal pass over a window = RecBole's (prefix, target) samples, without dropout
    gru4rec = model().eval()
    window = Batch(
        items=torch.tensor([[3, 5, 7, 2], [4, 6, 0, 0]]),
        lengths=torch.tensor([4, 2]),
        targets=torch.tensor([[5, 7, 2, 9], [6, 8, 0, 0]]),
    )
    prefixes = Batch(
        items=torch.tensor([[3, 0, 0, 0], [3, 5, 0, 0], [3, 5, 7, 0], [3, 5, 7, 2], [4, 0, 0, 0], [4, 6, 0, 0]]),
        lengths=torch.tensor([1, 2, 3, 4, 1, 2]),
    )
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(gru4rec.score(prefixes), torch.tensor([5, 7, 2, 9, 6, 8]))
        torch.testing.assert_close(gru4rec.loss(window), expected)


def test_the_packed_pass_over_real_items_equals_the_padded_pass_in_values_and_gradients() -> None:
    # mixed lengths take the packed path; the padded pass (no lengths) is the reference
    gru4rec = model(num_layers=2).eval()
    items = torch.tensor([[3, 5, 7, 2, 0, 0], [4, 6, 0, 0, 0, 0], [9, 1, 2, 3, 4, 5]])
    lengths = torch.tensor([4, 2, 6])
    real = torch.arange(items.shape[1])[None, :] < lengths[:, None]

    def states_and_gradients(packed: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        gru4rec.zero_grad()
        states = gru4rec.encode(items, lengths if packed else None)
        (states[real] * torch.linspace(-1, 1, states.shape[-1])).sum().backward()
        used = (*gru4rec.item_embedding.parameters(), *gru4rec.gru.parameters())  # encode does not reach dense
        return states.detach(), [p.grad.clone() for p in used]

    packed, packed_grads = states_and_gradients(packed=True)
    padded, padded_grads = states_and_gradients(packed=False)
    torch.testing.assert_close(packed[real], padded[real], rtol=1e-5, atol=1e-6)
    assert (packed[~real] == 0).all()
    for got, expected in zip(packed_grads, padded_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_initialisation_is_recbole_s() -> None:
    seed_everything(0)
    config = resolve_config(get_method("gru4rec"), {"num_layers": 2})  # embedding 300, hidden 128
    gru4rec = GRU4Rec(config, DataSpec(num_items=2000, max_seq_length=50))
    embedding = gru4rec.item_embedding.weight
    assert embedding[0].abs().sum() > 0  # xavier_normal_ overwrote the padding row too
    xavier_std = math.sqrt(2.0 / (embedding.shape[0] + embedding.shape[1]))
    assert abs(embedding.std().item() - xavier_std) < 0.05 * xavier_std
    hidden, width = 128, 300
    for name, fan_in in (("weight_ih_l0", width), ("weight_hh_l0", hidden)):
        bound = math.sqrt(6.0 / (fan_in + 3 * hidden))  # xavier_uniform_ on the (3 hidden, fan_in) matrix
        weight = getattr(gru4rec.gru, name)
        assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound
    default = 1 / math.sqrt(hidden)  # the second layer keeps PyTorch's uniform(+-1/sqrt(hidden))
    for name in ("weight_ih_l1", "weight_hh_l1"):
        weight = getattr(gru4rec.gru, name)
        assert weight.abs().max() <= default and weight.abs().max() > 0.95 * default
    assert gru4rec.gru.bias is False and not any("bias" in n for n, _ in gru4rec.gru.named_parameters())
    assert gru4rec.dense.bias.abs().sum() > 0  # nn.Linear's own initialisation, untouched
    assert not gru4rec.gru.dropout  # no dropout between GRU layers


def test_dropout_applies_to_the_input_embeddings_in_training_only() -> None:
    gru4rec = model(dropout_prob=0.5)
    batch = Batch(items=torch.tensor([[3, 5, 7]]), lengths=torch.tensor([3]))
    with torch.no_grad():
        gru4rec.eval()
        assert torch.equal(gru4rec.score(batch), gru4rec.score(batch))
        gru4rec.train()
        torch.manual_seed(1)
        first = gru4rec.score(batch)
        assert not torch.equal(first, gru4rec.score(batch))


def test_training_on_a_toy_task_lowers_the_loss_and_beats_chance(toy_dataset, tmp_path: Path) -> None:
    assert_learns_the_toy_task("gru4rec", {"embedding_size": 16, "hidden_size": 16}, toy_dataset, tmp_path)

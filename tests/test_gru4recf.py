"""GRU4RecF: the two parallel GRUs against a hand-written GRU, the text feature path, initialisation, training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.trainer import seed_everything
from recbench_plugins.gru4recf import GRU4RecF
from tests.baseline_checks import NUM_ITEMS, assert_learns_the_toy_task, manual_gru, text_table


def model(text: torch.Tensor | None = None, **overrides) -> GRU4RecF:
    seed_everything(0)
    config = resolve_config(
        get_method("gru4recf"), {"embedding_size": 12, "hidden_size": 8, "max_seq_length": 10}, overrides
    )
    text = text_table() if text is None else text
    return GRU4RecF(config, DataSpec(num_items=NUM_ITEMS, max_seq_length=10, item_text_embeddings=text))


@pytest.mark.parametrize("layers", [1, 2])
def test_scores_match_two_hand_written_grus_concatenated_then_dense(layers: int) -> None:
    gru4recf = model(num_layers=layers).eval()
    sequences = [[3, 7, 1], [5, 6], [9, 8, 2, 4, 20]]
    width = max(map(len, sequences))
    items = torch.tensor([s + [0] * (width - len(s)) for s in sequences])
    with torch.no_grad():
        scores = gru4recf.score(Batch(items=items, lengths=torch.tensor([len(s) for s in sequences])))
        adapter = gru4recf.feature_adapter
        for row, sequence in enumerate(sequences):
            item_state = manual_gru(gru4recf.item_gru, [gru4recf.item_embedding.weight[i] for i in sequence])
            features = [torch.relu(adapter.weight @ gru4recf.text[i] + adapter.bias) for i in sequence]
            feature_state = manual_gru(gru4recf.feature_gru, features)
            output = gru4recf.dense(torch.cat([item_state, feature_state]))
            torch.testing.assert_close(scores[row], gru4recf.item_embedding.weight @ output, rtol=1e-5, atol=1e-5)
    assert scores.shape == (3, NUM_ITEMS + 1)


def test_the_text_of_history_items_is_read_and_candidates_are_scored_by_their_id_only() -> None:
    batch = Batch(items=torch.tensor([[3, 7, 1]]), lengths=torch.tensor([3]))
    text = text_table()
    with torch.no_grad():
        base = model(text).eval().score(batch)
        candidate_changed = text.clone()
        candidate_changed[12] += 5.0  # not in the history
        torch.testing.assert_close(model(candidate_changed).eval().score(batch), base)
        history_changed = text.clone()
        history_changed[7] += 5.0
        assert not torch.allclose(model(history_changed).eval().score(batch), base)


def test_dropout_touches_the_item_embeddings_not_the_text_feature() -> None:
    gru4recf = model(dropout_prob=0.9).train()
    items = torch.tensor([[3, 7, 1, 4]])
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        gru4recf.item_gru.register_forward_hook(lambda m, args, out: seen.__setitem__("item", args[0])),
        gru4recf.feature_gru.register_forward_hook(lambda m, args, out: seen.__setitem__("feature", args[0])),
    ]
    with torch.no_grad():
        gru4recf.score(Batch(items=items, lengths=torch.tensor([4])))
    for hook in hooks:
        hook.remove()
    assert not torch.equal(seen["item"], gru4recf.item_embedding(items))  # 90% of the entries dropped
    torch.testing.assert_close(seen["feature"], gru4recf.feature_embedding(items))


def test_the_loss_over_real_items_only_equals_the_padded_pass_in_value_and_gradients() -> None:
    # a batch of mixed lengths takes the packed path (padding never embedded nor stepped through)
    gru4recf = model(num_layers=2).eval()
    batch = Batch(
        items=torch.tensor([[3, 5, 7, 2, 0], [4, 6, 0, 0, 0], [9, 1, 2, 3, 4]]),
        lengths=torch.tensor([4, 2, 5]),
        targets=torch.tensor([[5, 7, 2, 9, 0], [6, 8, 0, 0, 0], [1, 2, 3, 4, 11]]),
    )
    has_target = batch.targets > 0

    def loss_and_gradients(packed: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        gru4recf.zero_grad()
        if packed:
            loss = gru4recf.loss(batch)
        else:  # every position through both GRUs, padding included
            outputs = gru4recf.encode(batch.items)[has_target]
            loss = torch.nn.functional.cross_entropy(
                outputs @ gru4recf.item_embedding.weight.T, batch.targets[has_target]
            )
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in gru4recf.parameters()]

    packed_loss, packed_grads = loss_and_gradients(packed=True)
    padded_loss, padded_grads = loss_and_gradients(packed=False)
    torch.testing.assert_close(packed_loss, padded_loss)
    for got, expected in zip(packed_grads, padded_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_initialisation_is_recbole_s_and_the_text_is_a_frozen_buffer() -> None:
    seed_everything(0)
    text = text_table(2000, 64)
    config = resolve_config(get_method("gru4recf"))  # embedding 300, hidden 128
    gru4recf = GRU4RecF(config, DataSpec(num_items=2000, max_seq_length=50, item_text_embeddings=text))
    for weight in (gru4recf.item_embedding.weight, gru4recf.feature_adapter.weight, gru4recf.dense.weight):
        xavier_std = math.sqrt(2.0 / (weight.shape[0] + weight.shape[1]))
        assert abs(weight.std().item() - xavier_std) < 0.1 * xavier_std
    assert gru4recf.item_embedding.weight[0].abs().sum() > 0  # the padding row too
    assert not gru4recf.feature_adapter.bias.any() and not gru4recf.dense.bias.any()
    default = 1 / math.sqrt(128)  # both GRUs keep PyTorch's uniform(+-1/sqrt(hidden)), no biases
    for gru in (gru4recf.item_gru, gru4recf.feature_gru):
        assert all(0.95 * default < w.abs().max() <= default for w in gru.parameters())
        assert not any("bias" in name for name, _ in gru.named_parameters())
    assert torch.equal(gru4recf.text, text)
    assert "text" not in gru4recf.state_dict() and all(p is not gru4recf.text for p in gru4recf.parameters())


def test_training_on_a_toy_task_lowers_the_loss_and_beats_chance(toy_dataset, tmp_path: Path) -> None:
    assert_learns_the_toy_task("gru4recf", {"embedding_size": 16, "hidden_size": 16}, toy_dataset, tmp_path)

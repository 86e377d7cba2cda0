"""FDSA (contract checks: tests/test_contract.py): both streams read, causal, the forward of UniSRec's baseline."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from recbench.layers import causal_mask
from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.trainer import seed_everything
from recbench_plugins.fdsa import FDSA, FDSAConfig
from tests.baseline_checks import assert_learns_the_toy_task, text_table


def model(text: torch.Tensor | None = None, **overrides) -> FDSA:
    seed_everything(0)
    config = resolve_config(get_method("fdsa"), {"hidden_size": 12, "inner_size": 16, "max_seq_length": 10}, overrides)
    text = text_table() if text is None else text
    return FDSA(config, DataSpec(num_items=text.shape[0] - 1, max_seq_length=10, item_text_embeddings=text))


BATCH = Batch(items=torch.tensor([[3, 7, 1, 0], [5, 6, 2, 9]]), lengths=torch.tensor([3, 4]))


def test_defaults_are_recbole_s_fdsa_yaml_with_unisrec_s_hidden_size() -> None:
    config = FDSAConfig()
    assert (config.hidden_size, config.inner_size, config.n_layers, config.n_heads) == (300, 256, 2, 2)
    assert (config.hidden_dropout_prob, config.attn_dropout_prob, config.layer_norm_eps) == (0.5, 0.5, 1e-12)
    assert config.initializer_range == 0.02


def test_changing_only_the_text_of_a_history_item_changes_the_scores() -> None:
    text = text_table()
    with torch.no_grad():
        base = model(text).eval().score(BATCH)
        candidate_changed = text.clone()
        candidate_changed[12] += 5.0  # in no history: candidates are scored by their ID embedding only
        torch.testing.assert_close(model(candidate_changed).eval().score(BATCH), base)
        history_changed = text.clone()
        history_changed[7] += 5.0  # same ids, same weights: only the feature stream sees it
        changed = model(history_changed).eval().score(BATCH)
    assert not torch.allclose(changed[0], base[0])
    torch.testing.assert_close(changed[1], base[1])  # item 7 is not in the second history


def test_changing_only_the_id_of_a_history_item_changes_the_scores() -> None:
    text = text_table()
    text[15] = text[7]  # item 15 has item 7's text: replacing 7 by 15 changes the ID stream only
    fdsa = model(text).eval()
    with torch.no_grad():
        base = fdsa.score(BATCH)
        items = BATCH.items.clone()
        items[0, 1] = 15
        features = fdsa.feature_embedding(BATCH.items)
        torch.testing.assert_close(fdsa.feature_embedding(items), features)
        assert not torch.allclose(fdsa.score(Batch(items=items, lengths=BATCH.lengths))[0], base[0])


def test_each_position_reads_only_the_items_up_to_it() -> None:
    items = torch.tensor([[3, 7, 1, 4, 8, 2]])  # distinct items: a text change touches one position
    text = text_table()
    fdsa = model(text).eval()
    with torch.no_grad():
        base = fdsa.encode(items)  # (1, 6, d)
        for position in range(6):
            other_id = items.clone()
            other_id[0, position] = 19
            other_text = text.clone()
            other_text[items[0, position]] += 3.0
            for changed in (fdsa.encode(other_id), model(other_text).eval().encode(items)):
                torch.testing.assert_close(changed[:, :position], base[:, :position])
                assert not torch.allclose(changed[:, position], base[:, position])


def test_the_forward_is_unisrec_s_fdsa_baseline() -> None:
    fdsa = model().eval()
    with torch.no_grad():
        positions = fdsa.position_embedding.weight[:4]
        mask = causal_mask(BATCH.items)
        item_hidden = fdsa.item_encoder(fdsa.norm(fdsa.item_embedding.weight[BATCH.items] + positions), mask)
        adapted = torch.relu(fdsa.text[BATCH.items] @ fdsa.adapter.weight.T + fdsa.adapter.bias)
        feature_hidden = fdsa.feature_encoder(fdsa.norm(adapted + positions), mask)
        rows, last = torch.arange(2), BATCH.lengths - 1
        concatenated = torch.cat([item_hidden[rows, last], feature_hidden[rows, last]], dim=1)
        output = fdsa.norm(concatenated @ fdsa.concat.weight.T + fdsa.concat.bias)
        torch.testing.assert_close(fdsa.score(BATCH), output @ fdsa.item_embedding.weight.T)
        training = Batch(items=BATCH.items, lengths=BATCH.lengths, targets=torch.tensor([[7, 1, 4, 0], [6, 2, 9, 11]]))
        all_positions = fdsa.norm(fdsa.concat(torch.cat([item_hidden, feature_hidden], dim=-1)))
        has_target = training.targets > 0
        expected = F.cross_entropy(
            all_positions[has_target] @ fdsa.item_embedding.weight.T, training.targets[has_target]
        )
        torch.testing.assert_close(fdsa.loss(training), expected)


def test_initialisation_is_recbole_s_and_the_text_is_a_frozen_buffer() -> None:
    text = text_table(2000, 64)
    fdsa = model(text, hidden_size=300)
    for weight in (fdsa.item_embedding.weight, fdsa.adapter.weight, fdsa.concat.weight):
        assert abs(weight.std().item() - 0.02) < 0.002
    assert fdsa.item_embedding.weight[0].abs().sum() > 0  # the padding row too, as RecBole
    assert not fdsa.adapter.bias.any() and not fdsa.concat.bias.any()
    assert torch.equal(fdsa.text, text)  # never re-initialised (the official baseline's slip)
    assert "text" not in fdsa.state_dict() and all(p is not fdsa.text for p in fdsa.parameters())
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in fdsa.modules()) == 1 + 2 * 2 * 2  # shared + 2 encoders


def test_training_on_a_toy_task_lowers_the_loss_and_beats_chance(toy_dataset, tmp_path: Path) -> None:
    overrides = {"hidden_size": 16, "inner_size": 16, "hidden_dropout_prob": 0.1, "attn_dropout_prob": 0.1}
    assert_learns_the_toy_task("fdsa", overrides, toy_dataset, tmp_path)


def test_official_random_feature_replaces_the_text_by_a_fixed_random_table_kept_in_the_state_dict() -> None:
    text = text_table(2000, 64)
    fdsa = model(text, hidden_size=300, feature="official_random")
    assert fdsa.text.shape == (len(text), 768) and fdsa.adapter.in_features == 768  # their BERT width
    assert abs(fdsa.text.std().item() - 0.02) < 0.002  # N(0, initializer_range), as the official re-draw
    assert "text" in fdsa.state_dict() and all(p is not fdsa.text for p in fdsa.parameters())  # saved, never trained
    again = model(text, hidden_size=300, feature="official_random")
    assert torch.equal(again.text, fdsa.text)  # drawn from the seeded generator with the other weights
    fresh = model(text_table(2000, 64) * 3, hidden_size=300, feature="official_random")
    torch.testing.assert_close(fresh.text, fdsa.text)  # the real text never reaches the model

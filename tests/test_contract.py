"""Contract tests run against every registered method (docs/architecture.md, Methods)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from recbench.method import Batch, DataSpec, Method
from recbench.registry import get_method, method_names, resolve_config
from recbench.runs.batching import TrainingWindows
from recbench.runs.trainer import seed_everything
from tests.conftest import make_cyclic_dataset

SMALL = {
    "hidden_size": 16,
    "item_size": 16,
    "semantic_hidden_size": 16,
    "inner_size": 16,
    "n_heads": 2,
    "max_seq_length": 10,
    "code_dim": 4,
    "code_cap": 8,
}
# Regularisation slows a 16-wide model on a 30-item toy task without telling us anything about
# the gradient path; the learnability test switches it off where the method has these keys.
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "dropout_prob": 0.0}


def small_config(name: str) -> dict:
    """Shrink the model where the method has these keys, so the tests stay fast."""
    fields = get_method(name).cls.Config.model_fields
    return {k: v for k, v in SMALL.items() if k in fields}


def build(name: str, num_items: int = 30, seed: int = 0, **overrides) -> Method:
    entry = get_method(name)
    config = resolve_config(entry, small_config(name), overrides)
    text = None
    if entry.cls.needs_text:  # fixed random "text embeddings", the same for every build
        text = torch.randn(num_items + 1, 12, generator=torch.Generator().manual_seed(0))
        text[0] = 0
    seed_everything(seed)
    return entry.cls(
        config, DataSpec(num_items=num_items, max_seq_length=config.max_seq_length, item_text_embeddings=text)
    )


def training_batches(num_items: int = 30, window: int = 10, seed: int = 0) -> list[Batch]:
    dataset = make_cyclic_dataset(items=num_items, seed=seed, noise=0.0)
    windows = TrainingWindows(*dataset.train_sequences(), window=window)
    return windows.batches(64, np.random.default_rng(seed))


def eval_batch() -> Batch:
    items = torch.tensor([[1, 2, 3, 0, 0], [5, 6, 0, 0, 0], [7, 8, 9, 10, 11]])
    return Batch(items=items, lengths=torch.tensor([3, 2, 5]))


ALL_METHODS = method_names()


@pytest.mark.parametrize("name", ALL_METHODS)
def test_score_has_one_column_per_item_plus_padding(name: str) -> None:
    model = build(name).eval()
    with torch.no_grad():
        scores = model.score(eval_batch())
    assert scores.shape == (3, 31)
    assert torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("name", ALL_METHODS)
def test_loss_is_a_finite_scalar_with_gradients(name: str) -> None:
    model = build(name).train()
    loss = model.loss(training_batches()[0])
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", ALL_METHODS)
def test_score_ignores_items_beyond_the_sequence_length(name: str) -> None:
    if not get_method(name).cls.causal:
        pytest.skip("bidirectional method: items beyond the length are padding by contract")
    model = build(name).eval()
    batch = eval_batch()
    filled = batch.items.clone()
    filled[filled == 0] = 4  # put real items after each sequence's end
    with torch.no_grad():
        plain = model.score(batch)
        with_future = model.score(Batch(items=filled, lengths=batch.lengths))
    torch.testing.assert_close(plain, with_future)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_loss_falls_on_a_learnable_toy_task(name: str) -> None:
    fields = get_method(name).cls.Config.model_fields
    model = build(name, learning_rate=0.01, **{k: v for k, v in NO_DROPOUT.items() if k in fields}).train()
    batches = training_batches()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)

    def mean_loss() -> float:
        with torch.no_grad():
            return float(np.mean([model.loss(b).item() for b in batches]))

    model.eval()
    before = mean_loss()
    model.train()
    for _ in range(40):  # a cloze task (BERT4Rec) predicts ~20% of positions per step
        for batch in batches:
            optimizer.zero_grad()
            model.loss(batch).backward()
            optimizer.step()
    model.eval()
    assert mean_loss() < 0.7 * before


@pytest.mark.parametrize("name", ALL_METHODS)
def test_same_seed_gives_the_same_model_and_loss(name: str) -> None:
    batch = training_batches()[0]
    losses = []
    for _ in range(2):
        model = build(name, seed=7).train()
        torch.manual_seed(3)
        losses.append(model.loss(batch).item())
    assert losses[0] == losses[1]


@pytest.mark.parametrize("name", ALL_METHODS)
def test_weights_survive_a_save_load_round_trip(name: str) -> None:
    model = build(name, seed=1).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = build(name, seed=2).eval()
    other.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(model.score(eval_batch()), other.score(eval_batch()))

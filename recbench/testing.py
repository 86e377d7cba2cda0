"""Contract checks for method plugins: what every registered method must do to run in recbench.

:func:`check_method` runs the checks on one registered method, the built-in ones as well as a
third-party plugin's. Use it in the plugin's own tests::

    from recbench.testing import check_method

    def test_my_method_keeps_the_contract() -> None:
        check_method("my-method")

A failed check raises :class:`AssertionError` naming the method and the check. The checks, in the
order they run, are the keys of :data:`CHECKS`. They build small models (the config keys in
:data:`SMALL`, where the method has them) on small generated data in a temporary directory: they
read no dataset and no cache, and write nothing outside that directory. The end-to-end checks put
a stand-in encoder's item text embeddings (hashed words) in that directory's cache, so recbench
loads no text encoder for them; a method that loads one itself (IDP's matcher) still does.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recbench.data.dataset import Dataset, build_dataset
from recbench.errors import ConfigError
from recbench.method import (
    FINE_TUNING_KEYS,
    Batch,
    DataSpec,
    Method,
    MethodConfig,
    TextMethodConfig,
    TransferConfig,
)
from recbench.registry import MethodEntry, get_method, methods, resolve_config

BUILTIN_PACKAGE = "recbench_plugins"
"""The package of the built-in methods (the ``plugins/`` folder of recbench)."""

TEST_PLUGINS_ENV = "RECBENCH_TEST_PLUGINS"
"""Environment variable naming (comma-separated) the installed third-party methods that recbench's
own contract tests check as well; without it they check the built-in methods only."""

SMALL: dict[str, Any] = {
    "hidden_size": 16,
    "item_size": 16,
    "semantic_hidden_size": 16,
    "inner_size": 16,
    "n_heads": 2,
    "max_seq_length": 10,
    "code_dim": 4,
    "code_cap": 8,
}
"""Config values the checks use where the method has the key, so that its models are small and fast."""

NO_DROPOUT: dict[str, Any] = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "dropout_prob": 0.0}
"""Switched off (where the method has the key) for the learnability check: regularisation slows a
16-wide model on a 30-item toy task without telling anything about the gradient path."""

SHORT_RUN: dict[str, Any] = {"epochs": 2, "patience": 2, "pretrain_epochs": 1, "search_steps": 2}
"""Config values of the end-to-end checks, on top of :data:`SMALL` (a variant's preset keeps its own)."""

NUM_ITEMS = 30
"""Items of the generated data; scores must have ``NUM_ITEMS + 1`` columns."""

NUM_USERS = 60
"""Users of the generated data (:func:`toy_dataset`'s default): models are built with this many, so
the user ids of :func:`training_batches` (1..60) and :func:`eval_batch` are all known."""

TEXT_DIM = 12
"""Width of the random item text embeddings the unit checks give methods that need text."""


# --- which methods recbench's own tests check --------------------------------------------------


def is_builtin(entry: MethodEntry) -> bool:
    """True if the method is one of recbench's own (its class is defined under ``recbench_plugins``)."""
    return entry.module == BUILTIN_PACKAGE or entry.module.startswith(f"{BUILTIN_PACKAGE}.")


def builtin_method_names() -> list[str]:
    """Registered names of the built-in methods, variants included, sorted."""
    return [entry.name for entry in methods() if is_builtin(entry)]


def opted_in_method_names(value: str | None = None) -> list[str]:
    """Third-party methods to check as well: the names in ``value`` (default: ``$RECBENCH_TEST_PLUGINS``).

    Names are comma-separated; each must be registered (else :class:`recbench.errors.UnknownNameError`).
    """
    raw = os.environ.get(TEST_PLUGINS_ENV, "") if value is None else value
    return [get_method(name).name for name in (part.strip() for part in raw.split(",")) if name]


def methods_to_test() -> list[str]:
    """What recbench's contract tests check: every built-in method, then the opted-in ones (no duplicates)."""
    names = builtin_method_names()
    return names + [name for name in opted_in_method_names() if name not in names]


# --- small generated data ----------------------------------------------------------------------


def toy_dataset(
    name: str = "toy",
    users: int = NUM_USERS,
    items: int = NUM_ITEMS,
    min_len: int = 4,
    max_len: int = 12,
    seed: int = 0,
    noise: float = 0.1,
) -> Dataset:
    """Users walk item i -> i + 1 (mod N) with occasional random jumps: next items are learnable."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(users):
        length = int(rng.integers(min_len, max_len + 1))
        current = int(rng.integers(items))
        sequence = []
        for _ in range(length):
            sequence.append(current)
            current = int(rng.integers(items)) if rng.random() < noise else (current + 1) % items
        sequences.append(sequence)
    texts = [f"item {i} in group {i % 5}" for i in range(items)]
    user_ids = [f"u{u}" for u in range(users)]
    dataset, _ = build_dataset(name, user_ids, sequences, [f"i{i}" for i in range(items)], texts)
    return dataset


def training_batches(num_items: int = NUM_ITEMS, window: int = 10, seed: int = 0) -> list[Batch]:
    """One epoch of training batches (64 targets each) of a noiseless toy dataset, as the Trainer makes them."""
    from recbench.runs.batching import TrainingWindows

    dataset = toy_dataset(items=num_items, seed=seed, noise=0.0)
    windows = TrainingWindows(*dataset.train_sequences(), window=window)
    return windows.batches(64, np.random.default_rng(seed))


def eval_batch() -> Batch:
    """Three right-padded histories of lengths 3, 2 and 5, of users 1, 2 and NUM_USERS."""
    items = torch.tensor([[1, 2, 3, 0, 0], [5, 6, 0, 0, 0], [7, 8, 9, 10, 11]])
    return Batch(items=items, lengths=torch.tensor([3, 2, 5]), users=torch.tensor([1, 2, NUM_USERS]))


def small_config(name: str) -> dict[str, Any]:
    """The :data:`SMALL` values of the keys the method has."""
    fields = get_method(name).cls.Config.model_fields
    return {key: value for key, value in SMALL.items() if key in fields}


def build(
    name: str,
    num_items: int = NUM_ITEMS,
    seed: int = 0,
    device: str = "cpu",
    num_users: int = NUM_USERS,
    **overrides: Any,
) -> Method:
    """A small model of a registered method, seeded, with the data its flags ask for.

    Methods that need text get fixed random text embeddings (the same for every build), those
    that need raw text get short generated texts. Every model is told ``num_users`` users.
    """
    from recbench.runs.trainer import seed_everything

    entry = get_method(name)
    config = resolve_config(entry, small_config(name), overrides)
    cls = entry.cls
    text = None
    if cls.needs_text_for(config):
        text = torch.randn(num_items + 1, TEXT_DIM, generator=torch.Generator().manual_seed(0))
        text[0] = 0
    spec = DataSpec(
        num_items=num_items,
        max_seq_length=config.max_seq_length,
        item_text_embeddings=text,
        item_text_embeddings_word_dropped=text.clone() if text is not None and cls.needs_word_dropped_text else None,
        train_item_mask=torch.ones(num_items + 1, dtype=torch.bool),
        item_texts=[f"item {i} in group {i % 5}" for i in range(num_items)] if cls.needs_raw_text else None,
        num_users=num_users,
    )
    seed_everything(seed)
    return cls(config, spec).to(device)


# --- the checks --------------------------------------------------------------------------------
# Each takes the method name and the device; it returns None when it passed, or the reason it does
# not apply to this method, and raises AssertionError (or the method's own error) when it failed.

Check = Callable[[str, str], str | None]


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, message: str, **tolerances: float) -> None:
    """``torch.testing.assert_close``, failing with ``message: <torch's reason>`` (the check's own words first)."""
    try:
        torch.testing.assert_close(actual, expected, **tolerances)
    except AssertionError as err:
        raise AssertionError(f"{message}: {err}") from None


def _check_config(name: str, device: str) -> str | None:
    entry = get_method(name)
    cls = entry.cls
    assert isinstance(cls, type) and issubclass(cls, Method), f"{cls!r} is not a subclass of recbench.Method"
    config_cls = cls.Config
    assert isinstance(config_cls, type) and issubclass(config_cls, MethodConfig), (
        f"{cls.__name__}.Config must subclass recbench.MethodConfig, got {config_cls!r}"
    )
    if cls.needs_text:
        assert issubclass(config_cls, TextMethodConfig), (
            f"{cls.__name__} needs text (needs_text = True): its Config must subclass recbench.TextMethodConfig"
        )
    if cls.supports_pretraining:
        assert issubclass(config_cls, TransferConfig), (
            f"{cls.__name__} pre-trains (supports_pretraining = True): its Config must subclass recbench.TransferConfig"
        )
    if cls.pretrains_on_target:
        assert cls.supports_pretraining, (
            f"{cls.__name__} pre-trains on its target (pretrains_on_target = True): it must set supports_pretraining"
        )
    undocumented = [key for key, info in config_cls.model_fields.items() if not (info.description or "").strip()]
    assert not undocumented, f"config keys without a docstring: {', '.join(undocumented)}"
    try:
        config_cls()
    except Exception as err:
        raise AssertionError(f"the config defaults do not validate: {err}") from err
    try:
        config = resolve_config(entry)  # defaults and the variant's preset
    except ConfigError as err:
        raise AssertionError(f"the config of '{name}' (defaults and preset) does not validate: {err}") from err
    stored = json.loads(json.dumps(config.model_dump()))  # as a run's config.json holds it
    try:
        again = resolve_config(entry, stored)
    except ConfigError as err:
        raise AssertionError(f"the config does not survive a JSON round trip (as runs store it): {err}") from err
    assert again == config, f"the config changes in a JSON round trip: {config!r} -> {again!r}"
    unknown = "no_such_key_for_the_contract_check"
    try:
        resolve_config(entry, {unknown: 1})
    except ConfigError:
        pass
    else:
        raise AssertionError("an unknown config key is accepted; configs must reject them (extra='forbid')")
    if cls.supports_pretraining:
        _check_pretraining_identity(cls, config)
    return None


def _check_pretraining_identity(cls: type[Method], config: MethodConfig) -> None:
    """Fine-tuning keys never reach the pre-training config: two fine-tunings that differ only in
    them share one pre-training run (an override of ``pretraining_config`` must call the base's)."""
    changed = config.model_copy(
        update={
            "learning_rate": config.learning_rate * 3,
            "train_batch_targets": config.train_batch_targets + 1,
            "epochs": config.epochs + 1,
            "patience": config.patience + 1,
            "eval_batch_size": config.eval_batch_size + 1,
        }
    )
    kept = [
        key
        for key in FINE_TUNING_KEYS
        if getattr(cls.pretraining_config(changed), key) != getattr(cls.pretraining_config(config), key)
    ]
    assert not kept, (
        f"pretraining_config keeps the fine-tuning keys {', '.join(kept)}, so they split pre-training runs; "
        "an override must return super().pretraining_config(...)"
    )


def _check_build(name: str, device: str) -> str | None:
    model = build(name, device=device)
    entry = get_method(name)
    assert isinstance(model, entry.cls), f"building '{name}' gave a {type(model).__name__}, not a {entry.cls.__name__}"
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable, "the model has no trainable parameters"
    assert all(torch.isfinite(p).all() for p in trainable), "the initial weights hold NaN or infinite values"
    return None


def _check_score(name: str, device: str) -> str | None:
    model = build(name, device=device).eval()
    batch = eval_batch()
    with torch.no_grad():
        scores = model.score(batch.to(device))
    expected = (batch.size, NUM_ITEMS + 1)
    assert isinstance(scores, torch.Tensor), f"score returned {type(scores).__name__}, expected a tensor"
    assert tuple(scores.shape) == expected, (
        f"score returned shape {tuple(scores.shape)}, expected {expected} = (batch size, N + 1) for N = {NUM_ITEMS}"
    )
    assert scores.is_floating_point(), f"score returned {scores.dtype} values, expected floating point"
    assert torch.isfinite(scores[:, 1:]).all(), "score returned NaN or infinite scores for real items (columns 1..N)"
    candidates = torch.randint(1, NUM_ITEMS + 1, (batch.size, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sampled = model.score_candidates(batch.to(device), candidates.to(device))
    _assert_close(
        sampled,
        scores.gather(1, candidates.to(device)),
        "score_candidates differs from score(batch).gather(1, candidates)",
        rtol=1e-4,
        atol=1e-5,
    )
    return None


def _assert_scalar_with_gradients(model: Method, loss: Any, what: str) -> None:
    assert isinstance(loss, torch.Tensor), f"{what} returned {type(loss).__name__}, expected a tensor"
    assert loss.dim() == 0, f"{what} returned shape {tuple(loss.shape)}, expected a scalar"
    assert torch.isfinite(loss), f"{what} is not finite ({loss.item()})"
    assert loss.requires_grad, f"{what} has no gradient (it does not depend on any trainable parameter)"
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), (
        f"{what} gives no parameter a non-zero gradient"
    )


def _check_loss(name: str, device: str) -> str | None:
    model = build(name, device=device).train()
    loss = model.loss(training_batches()[0].to(device))
    _assert_scalar_with_gradients(model, loss, "the training loss")
    return None


def _check_pretrain_loss(name: str, device: str) -> str | None:
    cls = get_method(name).cls
    if not cls.supports_pretraining:
        return "the method does not pre-train (supports_pretraining is False)"
    model = build(name, device=device).train()
    loss = model.pretrain_loss(training_batches()[0].to(device))
    _assert_scalar_with_gradients(model, loss, "the pre-training loss")
    return None


def _check_padding(name: str, device: str) -> str | None:
    model = build(name, device=device).eval()
    batch = eval_batch()
    wider = torch.cat([batch.items, torch.zeros(batch.size, 3, dtype=batch.items.dtype)], dim=1)
    with torch.no_grad():
        plain = model.score(batch.to(device))
        padded = model.score(Batch(items=wider, lengths=batch.lengths, users=batch.users).to(device))
    _assert_close(plain, padded, "more right padding (0) after the same histories changes the scores")
    if not get_method(name).cls.causal:
        return None  # bidirectional: whatever lies beyond a length is padding by contract
    filled = batch.items.clone()
    filled[filled == 0] = 4  # real items after each sequence's end
    with torch.no_grad():
        with_future = model.score(Batch(items=filled, lengths=batch.lengths, users=batch.users).to(device))
    _assert_close(
        plain,
        with_future,
        "items placed beyond a sequence's length change its scores (the method declares causal = True)",
    )
    return None


def _check_users(name: str, device: str) -> str | None:
    model = build(name, device=device).eval()
    batch = eval_batch()

    def scores(users: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            return model.score(Batch(items=batch.items, lengths=batch.lengths, users=users).to(device))

    given = scores(batch.users)
    anonymous = scores(None)
    if not get_method(name).cls.needs_users:
        _assert_close(
            given,
            anonymous,
            "the users of a batch change the scores of a method that does not read them (needs_users False)",
        )
        return None
    assert torch.isfinite(anonymous[:, 1:]).all(), "scores of unknown users (Batch.users None) are not finite"
    outside = torch.tensor([0, NUM_USERS + 1, -3])  # the unknown id, one past the table, a negative id
    _assert_close(
        scores(outside),
        anonymous,
        "users 0 and ids outside 1..num_users do not score as the unknown user (Batch.users None)",
    )
    swapped = scores(batch.users.flip(0))
    assert not torch.allclose(swapped, given), (
        "the method declares needs_users = True but other users give the same scores"
    )
    return None


def _check_learns(name: str, device: str) -> str | None:
    fields = get_method(name).cls.Config.model_fields
    no_dropout = {key: value for key, value in NO_DROPOUT.items() if key in fields}
    model = build(name, device=device, learning_rate=0.01, **no_dropout).train()
    batches = [batch.to(device) for batch in training_batches()]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)

    def mean_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = float(np.mean([model.loss(batch).item() for batch in batches]))
        model.train()
        return value

    before = mean_loss()
    for _ in range(40):  # a cloze task (BERT4Rec) predicts ~20% of positions per step
        for batch in batches:
            optimizer.zero_grad()
            model.loss(batch).backward()
            optimizer.step()
    after = mean_loss()
    assert after < 0.7 * before, (
        f"the training loss does not fall on a learnable toy task (next item = last item + 1): "
        f"{before:.4f} before, {after:.4f} after 40 epochs with Adam lr 0.01; expected below {0.7 * before:.4f}"
    )
    return None


def _check_deterministic(name: str, device: str) -> str | None:
    batch = training_batches()[0].to(device)
    states, losses = [], []
    for _ in range(2):
        model = build(name, seed=7, device=device).train()
        states.append({key: value.detach().clone() for key, value in model.state_dict().items()})
        torch.manual_seed(3)
        losses.append(model.loss(batch).item())
    differing = [key for key in states[0] if not torch.equal(states[0][key], states[1][key])]
    assert not differing, f"two models built with the same seed differ in {', '.join(differing[:5])}"
    exact = torch.device(device).type == "cpu"
    same = losses[0] == losses[1] if exact else math.isclose(losses[0], losses[1], rel_tol=1e-5)
    assert same, f"the same seed gives different losses: {losses[0]!r} and {losses[1]!r}"
    if exact:
        _check_repeatable_gradients(name, device)
    return None


def _check_repeatable_gradients(name: str, device: str) -> None:
    """Five backward passes of the same seeded model and batch give the same gradient bits, on at
    least two threads, for three batches: a sum whose order depends on the threads (e.g. the
    backward of an advanced-index gather with repeated indices) breaks the bit-identical resume of
    a run. Such an order shows up in some passes only, so this catches it often, not always."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        model = build(name, seed=7, device=device).train()
        for batch in training_batches()[:3]:
            gradients = []
            for _ in range(5):
                model.zero_grad(set_to_none=True)
                torch.manual_seed(3)
                model.loss(batch.to(device)).backward()
                gradients.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
            differing = [
                key for key in gradients[0] if any(not torch.equal(g[key], gradients[0][key]) for g in gradients)
            ]
            assert not differing, (
                f"the same seed and batch give different gradients of {', '.join(differing[:5])} on "
                f"{torch.get_num_threads()} threads: a backward pass sums in a thread-dependent order (e.g. an "
                "advanced-index gather with repeated indices); an interrupted run would not resume bit-identically"
            )
    finally:
        torch.set_num_threads(threads)


def _check_state_dict(name: str, device: str) -> str | None:
    model = build(name, seed=1, device=device).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    try:
        state = torch.load(buffer, weights_only=True)
    except Exception as err:
        raise AssertionError(f"the state dict does not load with torch.load(weights_only=True): {err}") from err
    other = build(name, seed=2, device=device).eval()
    other.load_state_dict(state)
    with torch.no_grad():
        _assert_close(
            model.score(eval_batch().to(device)),
            other.score(eval_batch().to(device)),
            "a model loaded from another's state dict scores differently",
        )
    return None


class _HashedWords:
    """A stand-in sentence encoder: each text -> a fixed random sum of its words' vectors."""

    def encode(self, sentences: list[str], **_: object) -> np.ndarray:
        def vector(word: str) -> np.ndarray:
            return np.random.default_rng(zlib.crc32(word.encode())).normal(size=TEXT_DIM)

        rows = [sum((vector(word) for word in text.split()), np.zeros(TEXT_DIM)) for text in sentences]
        return np.stack(rows).astype(np.float32)


@contextlib.contextmanager
def _temporary_home() -> Iterator[Path]:
    """A fresh ``$RECBENCH_HOME`` for the block (restored afterwards) and a directory for its runs."""
    with tempfile.TemporaryDirectory(prefix="recbench-check-") as directory:
        previous = os.environ.get("RECBENCH_HOME")
        os.environ["RECBENCH_HOME"] = str(Path(directory) / "home")
        try:
            yield Path(directory)
        finally:
            if previous is None:
                os.environ.pop("RECBENCH_HOME", None)
            else:
                os.environ["RECBENCH_HOME"] = previous


def _cache_text(entry: MethodEntry, config: MethodConfig, dataset: Dataset, pretraining: bool = False) -> None:
    """Put the stand-in encoder's item embeddings where the method will look for its text embeddings."""
    from dataclasses import replace

    from recbench.data.encode import EncoderSpec, item_embeddings
    from recbench.runs.experiment import WORD_DROP_RATIO

    if not (entry.cls.needs_text_for(config) and isinstance(config, TextMethodConfig)):
        return
    spec = EncoderSpec(
        config.text_encoder, config.text_pooling, config.text_max_tokens, precision=config.text_precision
    )
    specs = (
        [spec, replace(spec, word_drop=WORD_DROP_RATIO)]
        if pretraining and entry.cls.needs_word_dropped_text
        else [spec]
    )
    for each in specs:
        item_embeddings(dataset, each, encoder=_HashedWords(), show_progress=False)


def _short_run(entry: MethodEntry) -> dict[str, Any]:
    """:data:`SMALL` and :data:`SHORT_RUN` values of the keys the method has and its variant does not preset."""
    fields = entry.cls.Config.model_fields
    values = {**SMALL, **SHORT_RUN}
    return {key: value for key, value in values.items() if key in fields and key not in entry.preset}


def _check_run(run: Any, dataset: Dataset, config: MethodConfig) -> None:
    """A finished run record with sound ranks and metrics, and a finite loss for every epoch it logged."""
    assert run.is_finished, f"the run {run.path} did not finish"
    ranks = run.ranks("test")
    assert len(ranks) == dataset.num_users, f"{len(ranks)} test ranks for {dataset.num_users} users"
    assert ranks.min() >= 1 and ranks.max() <= dataset.num_items, (
        f"test ranks outside 1..{dataset.num_items}: {ranks.min()}..{ranks.max()}"
    )
    ndcg = run.metrics["test"]["ndcg@10"]
    assert math.isfinite(ndcg) and 0 <= ndcg <= 1, f"test NDCG@10 = {ndcg}"
    epochs = len(run.log)
    assert epochs <= config.epochs, f"{epochs} epochs logged with epochs = {config.epochs}"
    losses = [epoch["loss"] for epoch in run.log]
    assert all(math.isfinite(loss) for loss in losses), f"non-finite training losses: {losses}"


def _check_train_and_evaluate(name: str, device: str) -> str | None:
    from recbench.data.dataset import save_dataset
    from recbench.runs.experiment import evaluate_run, run_experiment

    entry = get_method(name)
    overrides = _short_run(entry)
    config = resolve_config(entry, overrides)
    with _temporary_home() as directory:
        dataset = toy_dataset()
        save_dataset(dataset)
        _cache_text(entry, config, dataset)
        result = run_experiment(
            name,
            dataset.name,
            seed=0,
            overrides=[overrides],
            runs_dir=directory / "runs",
            device=device,
            show_progress=False,
        )
        assert result.fit is not None and not result.reused, "the run was not trained"
        assert result.fit.trained == (config.epochs > 0), (
            f"trained {result.fit.epochs_run} epochs with epochs = {config.epochs}"
        )
        _check_run(result.run, dataset, config)
        again = evaluate_run(result.run.path, "test", device=device)
        stored = result.run.ranks("test")
        assert np.array_equal(np.asarray(again.ranks), stored), (
            "re-evaluating the run's stored best weights gives other test ranks than the run recorded"
        )
    return None


def _check_pretrain_and_fine_tune(name: str, device: str) -> str | None:
    from recbench.data.dataset import load_dataset, save_dataset, union_of
    from recbench.runs.experiment import run_experiment

    entry = get_method(name)
    if not entry.cls.supports_pretraining:
        return "the method does not pre-train (supports_pretraining is False)"
    overrides = _short_run(entry)
    config = resolve_config(entry, overrides)
    if entry.cls.pretrains_on_target:
        return _check_pretrain_on_target_and_fine_tune(name, device, overrides, config)
    with _temporary_home() as directory:
        source, target = toy_dataset("toy-source", items=20, seed=1), toy_dataset(seed=2)
        save_dataset(source)
        save_dataset(target)
        _cache_text(entry, entry.cls.pretraining_config(config), union_of([load_dataset(source.name)]), True)
        _cache_text(entry, config, target)
        result = run_experiment(
            name,
            target.name,
            seed=0,
            overrides=[overrides],
            runs_dir=directory / "runs",
            device=device,
            show_progress=False,
            pretrain_on=[source.name],
        )
        assert result.fit is not None and not result.reused, "the run was not trained"
        assert "pretrained" in result.run.config, "the fine-tuned run does not record its pre-training run"
        pretrained = list((directory / "runs" / "_pretrain").rglob("status.json"))
        assert len(pretrained) == 1, f"expected one finished pre-training run, found {len(pretrained)}"
        _check_run(result.run, target, config)
    return None


def _check_pretrain_on_target_and_fine_tune(
    name: str, device: str, overrides: dict[str, Any], config: MethodConfig
) -> str | None:
    """A method with ``pretrains_on_target``: one pre-training run on the target itself, then training from it."""
    from recbench.data.dataset import save_dataset
    from recbench.runs.experiment import run_experiment

    entry = get_method(name)
    with _temporary_home() as directory:
        target = toy_dataset(seed=2)
        save_dataset(target)
        _cache_text(entry, config, target)
        result = run_experiment(
            name, target.name, seed=0, overrides=[overrides], runs_dir=directory / "runs", device=device,
            show_progress=False,
        )  # fmt: skip
        assert result.fit is not None and not result.reused, "the run was not trained"
        assert "pretrained" in result.run.config, "the run does not record its pre-training run on the target"
        pretrained = list((directory / "runs" / "_pretrain" / target.name).rglob("status.json"))
        assert len(pretrained) == 1, f"expected one finished pre-training run on the target, found {len(pretrained)}"
        _check_run(result.run, target, config)
    return None


CHECKS: dict[str, tuple[Check, str]] = {
    "config": (
        _check_config,
        "the config class, its defaults and preset validate, documented, unknown keys refused; "
        "pretraining_config drops the fine-tuning keys",
    ),
    "build": (_check_build, "the method builds on a small DataSpec with finite trainable weights"),
    "score": (
        _check_score,
        "score(batch) is a (B, N + 1) float tensor, finite for items 1..N; score_candidates gathers from it",
    ),
    "loss": (_check_loss, "loss(batch) is a finite scalar that gives parameters gradients"),
    "pretrain_loss": (_check_pretrain_loss, "transfer methods: pretrain_loss(batch) is as loss(batch)"),
    "padding": (_check_padding, "right padding is ignored; a causal method ignores items beyond each length"),
    "users": (
        _check_users,
        "users: ignored unless needs_users; else they matter and unknown ids (None, 0, > num_users) score alike",
    ),
    "learns": (_check_learns, "the loss falls below 70% of its start on a learnable toy task"),
    "deterministic": (
        _check_deterministic,
        "the same seed builds the same weights and gives the same loss (and, on CPU, the same gradient bits)",
    ),
    "state_dict": (_check_state_dict, "weights survive torch.save / torch.load(weights_only=True) / load_state_dict"),
    "train_and_evaluate": (
        _check_train_and_evaluate,
        "a short run through the Trainer and Evaluator finishes with sound ranks, reproduced on re-evaluation",
    ),
    "pretrain_and_fine_tune": (
        _check_pretrain_and_fine_tune,
        "transfer methods: pre-training on a source domain (on the target itself with pretrains_on_target), "
        "then fine-tuning on the target, finishes",
    ),
}
"""Check name -> (function, what it checks), in the order :func:`check_method` runs them."""


def run_check(name: str, check: str, *, device: str = "cpu") -> str | None:
    """Run one check of :data:`CHECKS` on a registered method.

    Returns None if it passed, or the reason it does not apply to this method (e.g. pre-training
    checks on a method that does not pre-train). Raises :class:`AssertionError` naming the method
    and the check if it failed, whatever the method raised.
    """
    if check not in CHECKS:
        raise ValueError(f"unknown contract check '{check}'; expected one of {', '.join(CHECKS)}")
    function, _ = CHECKS[check]
    try:
        return function(name, device)
    except AssertionError as err:
        raise AssertionError(f"method '{name}' failed the contract check '{check}': {err}") from err
    except Exception as err:
        message = f"{type(err).__name__}: {err}"
        raise AssertionError(f"method '{name}' failed the contract check '{check}': {message}") from err


def check_method(name: str, *, device: str = "cpu", checks: Iterable[str] | None = None) -> None:
    """Run the contract checks (:data:`CHECKS`, or those named in ``checks``) on a registered method.

    ``name`` is the name given to ``@register`` (or one of its variants). Stops at the first check
    that fails, with an :class:`AssertionError` naming the method and the check. ``device`` is the
    torch device the models run on (``cpu``, ``cuda``, ...). The checks reseed torch's, NumPy's and
    Python's global random generators, and set ``$RECBENCH_HOME`` to a temporary directory while
    the end-to-end checks run (so they are not meant to run in parallel threads of one process).
    """
    try:
        get_method(name)
    except Exception as err:
        raise AssertionError(f"method '{name}' is not registered: {err}") from err
    selected = list(CHECKS) if checks is None else list(checks)
    unknown = [check for check in selected if check not in CHECKS]
    if unknown:
        raise ValueError(f"unknown contract check(s) {', '.join(unknown)}; expected some of {', '.join(CHECKS)}")
    for check in selected:
        run_check(name, check, device=device)

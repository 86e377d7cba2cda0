"""VQ-Rec: item codes, Gumbel-Sinkhorn permutation, pre-training loss, fine-tuning schedule, transfer."""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

import recbench_plugins.vqrec as vqrec
from recbench import layers
from recbench.method import Batch, DataSpec
from recbench.runs.record import RunRecord
from recbench.runs.trainer import Trainer
from recbench_plugins.vqrec import (
    ASSIGNING,
    REASSIGNED,
    VQRec,
    VQRecConfig,
    encode_codes,
    gumbel_sinkhorn,
    hard_permutation,
    item_codes,
    official_argmax_assignment,
    semi_synthetic_codes,
    sinkhorn,
    train_quantizer,
)
from tests.conftest import make_cyclic_dataset

TINY = {"hidden_size": 16, "inner_size": 16, "code_dim": 4, "code_cap": 8, "max_seq_length": 10}


def text_embeddings(num_items: int = 30, dim: int = 12, seed: int = 0) -> torch.Tensor:
    text = torch.randn(num_items + 1, dim, generator=torch.Generator().manual_seed(seed))
    text[0] = 0
    return text


def build(
    text: torch.Tensor | None = None, train_mask: torch.Tensor | None = None, seed: int = 0, **overrides
) -> VQRec:
    text = text_embeddings() if text is None else text
    config = VQRecConfig(**{**TINY, **overrides})
    torch.manual_seed(seed)
    return VQRec(
        config,
        DataSpec(
            num_items=text.shape[0] - 1,
            max_seq_length=config.max_seq_length,
            item_text_embeddings=text,
            train_item_mask=train_mask,
        ),
    )


def trainable(model: VQRec) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def eval_batch() -> Batch:
    return Batch(items=torch.tensor([[1, 2, 3, 0], [5, 6, 7, 8]]), lengths=torch.tensor([3, 4]))


def training_batch() -> Batch:
    items = torch.tensor([[1, 2, 3, 4], [7, 3, 0, 0], [9, 8, 4, 0]])
    targets = torch.tensor([[2, 3, 4, 5], [3, 5, 0, 0], [8, 4, 5, 0]])  # targets 3, 4 and 5 repeat across rows
    return Batch(items=items, lengths=torch.tensor([4, 2, 3]), targets=targets)


# --- (a) Gumbel-Sinkhorn --------------------------------------------------------------------
def test_sinkhorn_makes_doubly_stochastic_matrices() -> None:
    trans = torch.randn(4, 9, 9, generator=torch.Generator().manual_seed(0))
    soft = gumbel_sinkhorn(trans, iterations=3, temperature=0.7, noise=True).exp()
    torch.testing.assert_close(soft.sum(dim=-2), torch.ones(4, 9))  # the last step normalises columns
    converged = gumbel_sinkhorn(trans, iterations=500, temperature=0.7, noise=True).exp()
    torch.testing.assert_close(converged.sum(dim=-1), torch.ones(4, 9), atol=1e-3, rtol=0)
    torch.testing.assert_close(converged.sum(dim=-2), torch.ones(4, 9))


def test_hard_assignment_is_a_permutation_per_sub_space_and_ignores_sinkhorn_iterations() -> None:
    logits = torch.randn(4, 9, 9, generator=torch.Generator().manual_seed(1))
    hard = hard_permutation(sinkhorn(logits, 3))
    assert set(hard.detach().unique().tolist()) == {0.0, 1.0}
    assert (hard.detach().sum(dim=-1) == 1).all() and (hard.detach().sum(dim=-2) == 1).all()
    # Row/column normalisations add the same constant to every permutation's total weight.
    torch.testing.assert_close(hard.detach(), hard_permutation(logits).detach())


def test_permutation_phase_trains_the_permutation_through_the_straight_through_estimator() -> None:
    model = build().train()
    model.on_epoch_start(0)
    model.loss(training_batch()).backward()
    assert trainable(model) == {"trans_matrix"}
    assert model.trans_matrix.grad is not None and model.trans_matrix.grad.abs().sum() > 0


def test_official_argmax_assignment_is_the_row_argmax_not_injective_and_passes_no_gradient() -> None:
    trans = torch.randn(32, 257, 257, generator=torch.Generator().manual_seed(0), requires_grad=True)
    log_soft = sinkhorn(torch.log(torch.exp(trans) + 1e-6) / 0.7, 3)
    matrix = official_argmax_assignment(log_soft)
    expected = torch.nn.functional.one_hot(log_soft.argmax(dim=-1), 257).float()  # a brute row-wise argmax
    assert torch.equal(matrix.detach(), expected)
    distinct = (matrix.detach().sum(dim=-2) > 0).sum(dim=-1).float() / 257  # columns some row still uses
    assert (distinct < 1).all()  # the official rule merges code slots: not a permutation
    matrix.sum().backward()
    assert torch.equal(trans.grad, torch.zeros_like(trans))  # ceil: a connected graph, a zero gradient


def test_official_argmax_permutation_phase_leaves_trans_matrix_where_it_started() -> None:
    model = build(assignment="official_argmax").train()
    model.on_epoch_start(0)
    start = model.trans_matrix.detach().clone()
    optimizer = torch.optim.Adam([model.trans_matrix], lr=0.1)
    model.loss(training_batch()).backward()  # backpropagates (the graph is connected) ...
    optimizer.step()
    assert torch.equal(model.trans_matrix.detach(), start)  # ... and changes nothing, as the official code


# --- (b) item codes ---------------------------------------------------------------------------
def test_codes_are_deterministic_offset_per_sub_space_and_zero_for_padding() -> None:
    text = text_embeddings(200, 16)
    first, again = item_codes(text, None, 4, 8, seed=3), item_codes(text, None, 4, 8, seed=3)
    torch.testing.assert_close(first, again)
    assert (first[0] == 0).all()
    low = torch.arange(4) * 9 + 1  # sub-space k holds rows k * (cap + 1) + 1 .. k * (cap + 1) + cap
    assert ((first[1:] >= low) & (first[1:] < low + 8)).all()
    assert not torch.equal(first, item_codes(text, None, 4, 8, seed=4))


def test_codes_are_learnt_from_training_items_only() -> None:
    text = text_embeddings(200, 16)
    train_mask = torch.ones(201, dtype=torch.bool)
    train_mask[[0, 50, 120]] = False  # two cold items
    codes = item_codes(text, train_mask, 4, 8, seed=0)
    moved = text.clone()
    moved[[50, 120]] = 100 * torch.randn(2, 16)
    moved_codes = item_codes(moved, train_mask, 4, 8, seed=0)
    keep = train_mask.clone()
    keep[0] = True
    torch.testing.assert_close(codes[keep], moved_codes[keep])
    assert (moved_codes[[50, 120]] > 0).all()  # cold items get codes as well


def test_codes_reject_a_text_size_not_divisible_by_code_dim_and_too_few_training_items() -> None:
    with pytest.raises(ValueError, match="not divisible by code_dim"):
        item_codes(text_embeddings(30, 10), None, 4, 8, seed=0)
    too_few = torch.zeros(31, dtype=torch.bool)
    too_few[1:6] = True
    with pytest.raises(ValueError, match="fewer than code_cap"):
        item_codes(text_embeddings(30, 12), too_few, 4, 8, seed=0)


# --- (c) the quantiser reconstructs the vectors ------------------------------------------------
def decode(index: faiss.Index, codes: np.ndarray, code_cap: int) -> np.ndarray:
    """(n, M) codes -> (n, d) vectors: PQ centroids of the residual, + coarse centroid, un-rotated."""
    rotation = faiss.downcast_VectorTransform(index.chain.at(0))
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    matrix = faiss.vector_to_array(rotation.A).reshape(rotation.d_out, rotation.d_in)
    centroids = faiss.vector_to_array(ivf.pq.centroids).reshape(codes.shape[1], code_cap, -1)  # (M, K, d / M)
    rotated = np.concatenate([centroids[space, codes[:, space]] for space in range(codes.shape[1])], axis=1)
    return (rotated + ivf.quantizer.reconstruct(0)) @ matrix  # the rotation is orthonormal: its inverse is A^T


def test_codes_reconstruct_the_vectors_better_than_random_codes() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16)).astype(np.float32) * 3
    vectors = (centres[rng.integers(20, size=2000)] + rng.normal(size=(2000, 16))).astype(np.float32)
    index = train_quantizer(vectors, code_dim=4, code_cap=16, seed=0)
    codes = encode_codes(index, vectors, code_dim=4, code_cap=16)
    own = decode(index, codes, 16)
    # The unpacked codes are faiss's own: decoding them gives faiss's reconstruction.
    np.testing.assert_allclose(own, index.sa_decode(index.sa_encode(vectors)), atol=1e-4)
    random = decode(index, rng.integers(16, size=codes.shape), 16)
    own_error, random_error = ((own - vectors) ** 2).mean(), ((random - vectors) ** 2).mean()
    assert own_error < 0.3 * random_error


# --- (d) the pre-training loss ---------------------------------------------------------------
def test_semi_synthetic_codes_replace_codes_within_their_sub_space() -> None:
    codes = item_codes(text_embeddings(200, 16), None, 4, 8, seed=0)[1:]
    torch.manual_seed(0)
    fakes = semi_synthetic_codes(codes, 8, 0.75)
    low = torch.arange(4) * 9 + 1
    assert ((fakes >= low) & (fakes < low + 8)).all()
    changed = (fakes != codes).float().mean().item()
    assert abs(changed - 0.75 * 7 / 8) < 0.05  # a replacement draws the old code with chance 1/8
    assert torch.equal(semi_synthetic_codes(codes, 8, 0.0), codes)


@pytest.mark.parametrize("mask_same_sequence", [True, False])
def test_pretrain_loss_equals_a_brute_force_infonce(monkeypatch: pytest.MonkeyPatch, mask_same_sequence: bool) -> None:
    """Own positive, other rows' positives (a same-target one at logit 0), the semi-synthetic negative;
    the same sequence's other samples are left out unless the switch is off."""
    model = build(pretrain_mask_same_sequence=mask_same_sequence).eval()  # no dropout: deterministic outputs
    recorded: list[torch.Tensor] = []
    original = vqrec.semi_synthetic_codes

    def recording(codes: torch.Tensor, code_cap: int, ratio: float) -> torch.Tensor:
        recorded.append(original(codes, code_cap, ratio))
        return recorded[-1]

    monkeypatch.setattr(vqrec, "semi_synthetic_codes", recording)
    batch = training_batch()
    torch.manual_seed(0)
    loss = model.pretrain_loss(batch).item()

    with torch.no_grad():
        hidden = model.encode(batch.items, model.code_table())
    table, tau = model.code_embedding.weight.detach().double(), model.config.temperature
    rows = [(b, t) for b in range(batch.size) for t in range(batch.items.shape[1]) if batch.targets[b, t] > 0]
    targets = [int(batch.targets[b, t]) for b, t in rows]

    def unit(vector: torch.Tensor) -> torch.Tensor:
        return vector / vector.norm()

    sequences = [unit(hidden[b, t].double()) for b, t in rows]
    positives = [unit(table[model.codes[item]].mean(dim=0)) for item in targets]
    fakes = [unit(table[codes].mean(dim=0)) for codes in recorded[0]]
    losses = []
    for i, sequence in enumerate(sequences):
        positive = math.exp(float(sequence @ positives[i]) / tau)
        allowed = [j for j in range(len(rows)) if j == i or not (mask_same_sequence and rows[j][0] == rows[i][0])]
        negatives = sum(
            1.0 if (j != i and targets[j] == targets[i]) else math.exp(float(sequence @ positives[j]) / tau)
            for j in allowed
        )
        fake = math.exp(float(sequence @ fakes[i]) / tau)
        losses.append(-math.log(positive / (negatives + fake)))
    assert loss == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_samples_input_encodes_each_prefix_alone_and_matches_one_pass_without_dropout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``training_input = "samples"`` hands the encoder each (prefix, target) sample as its own row
    (the prefix, zero after it); with dropout off its losses and gradients equal the one-pass ones."""
    monkeypatch.setattr(layers, "MIN_GROUP_ROWS", 3)  # 3 groups of 3 on this batch, one of mixed length
    batch = training_batch()
    encoded_rows: list[torch.Tensor] = []
    for phase in (ASSIGNING, REASSIGNED):
        results = {}
        for mode in ("window", "samples"):
            model = build(training_input=mode).eval()
            model.phase.fill_(phase)
            if mode == "samples":
                original = model.encode

                def recording(items: torch.Tensor, table: torch.Tensor, last=None, original=original) -> torch.Tensor:
                    encoded_rows.extend(row[: int(end) + 1] for row, end in zip(items, last))
                    assert all(not row[int(end) + 1 :].any() for row, end in zip(items, last))
                    return original(items, table, last=last)

                monkeypatch.setattr(model, "encode", recording)
            torch.manual_seed(3)  # the same semi-synthetic negatives in both modes
            loss = model.loss(batch) + model.pretrain_loss(batch)
            loss.backward()
            results[mode] = (
                loss.detach(),
                {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            )
        torch.testing.assert_close(results["samples"][0], results["window"][0])
        assert results["samples"][1].keys() == results["window"][1].keys()
        for name, grad in results["window"][1].items():
            torch.testing.assert_close(results["samples"][1][name], grad, rtol=1e-4, atol=1e-6)
    # two phases, each encoding the samples for the fine-tuning and the pre-training loss
    expected = [tuple(batch.items[b, : t + 1].tolist()) for b, t in (batch.targets > 0).nonzero().tolist()] * 4
    assert sorted(tuple(row.tolist()) for row in encoded_rows) == sorted(expected)


def test_samples_input_draws_dropout_per_sample() -> None:
    """In training mode a window's prefixes no longer share a dropout draw: from the same generator
    state, the per-sample outputs are not the one-pass outputs (a shared draw would make them equal)."""
    model = build(training_input="samples", hidden_dropout_prob=0.5).train()
    items = torch.tensor([[1, 2, 3, 4]])
    targets = torch.tensor([[2, 3, 4, 5]])
    table = model.code_table()
    torch.manual_seed(0)
    one_pass = model.encode(items, table)[0]
    torch.manual_seed(0)
    own_rows = layers.encode_each_prefix(lambda rows, last: model.encode(rows, table, last=last), items, targets)
    assert own_rows.shape == one_pass.shape
    assert not torch.allclose(own_rows, one_pass)


def test_shuffled_samples_train_on_the_trainers_single_sample_rows(tmp_path: Path) -> None:
    """``training_input = "shuffled_samples"`` makes the Trainer batch one (prefix, target) sample a
    row (as the official loader); on such rows it computes what ``samples`` computes."""
    dataset = make_cyclic_dataset(users=20, min_len=3, max_len=30)
    text = text_embeddings(num_items=dataset.num_items)

    def trainer_of(mode: str) -> Trainer:
        model = build(text, training_input=mode)
        return Trainer(model, dataset, model.config, RunRecord(tmp_path), seed=0, show_progress=False)

    shuffled = trainer_of("shuffled_samples")
    assert shuffled.windows.samples
    assert not any(trainer_of(mode).windows.samples for mode in ("window", "samples"))
    batch = shuffled.windows.batches(16, np.random.default_rng(0))[0]
    assert int((batch.targets > 0).sum()) == batch.size  # one target a row
    losses = []
    for mode in ("shuffled_samples", "samples"):
        model = build(text, training_input=mode).eval()
        torch.manual_seed(3)  # the same semi-synthetic negatives
        losses.append(model.loss(batch) + model.pretrain_loss(batch))
    torch.testing.assert_close(losses[0], losses[1])


# --- (e) the fine-tuning schedule --------------------------------------------------------------
def test_only_the_permutation_trains_before_reassignment_and_the_table_stays() -> None:
    model = build()
    table = model.code_embedding.weight.detach().clone()
    for epoch in range(5):
        model.on_epoch_start(epoch)
        assert trainable(model) == {"trans_matrix"} and int(model.phase) == ASSIGNING
    torch.testing.assert_close(model.code_embedding.weight, table)
    model.eval()
    with torch.no_grad():  # noise-free permutation when scoring
        torch.testing.assert_close(model.score(eval_batch()), model.score(eval_batch()))


def test_reassignment_writes_the_validated_permutation_once_then_freezes_the_encoder() -> None:
    model = build().eval()
    for epoch in range(5):
        model.on_epoch_start(epoch)
    with torch.no_grad():
        validated = model.score(eval_batch())
        expected = model.permuted_table(noise=False)
    expected[0] = 0
    model.on_epoch_start(5)
    torch.testing.assert_close(model.code_embedding.weight.detach(), expected)
    assert int(model.phase) == REASSIGNED
    with torch.no_grad():  # the same scores for every real item (only the padding row was zeroed)
        torch.testing.assert_close(model.score(eval_batch())[:, 1:], validated[:, 1:])
    frozen = {
        name
        for name, _ in model.named_parameters()
        if name.startswith(("position_embedding.", "encoder.")) or name == "trans_matrix"
    }
    assert trainable(model) == {name for name, _ in model.named_parameters()} - frozen
    unfrozen = build(freeze_encoder=False)
    for epoch in range(6):
        unfrozen.on_epoch_start(epoch)
    assert trainable(unfrozen) == {name for name, _ in unfrozen.named_parameters()} - {"trans_matrix"}
    written = model.code_embedding.weight.detach().clone()
    for epoch in (5, 6):
        model.on_epoch_start(epoch)
        torch.testing.assert_close(model.code_embedding.weight.detach(), written)
        assert trainable(model) == {name for name, _ in model.named_parameters()} - frozen


def test_a_resumed_run_does_not_permute_the_table_again() -> None:
    model = build()
    for epoch in range(6):
        model.on_epoch_start(epoch)
    resumed = build(seed=1)
    resumed.load_state_dict(model.state_dict())
    resumed.on_epoch_start(5)  # what the Trainer calls after loading a checkpoint taken after epoch 5
    torch.testing.assert_close(resumed.code_embedding.weight, model.code_embedding.weight)


def test_without_the_schedule_everything_trains_on_the_plain_table() -> None:
    model = build()
    assert trainable(model) == {name for name, _ in model.named_parameters()}
    torch.testing.assert_close(model.code_table()[1:], model.code_embedding.weight[1:])


# --- (f) transfer ------------------------------------------------------------------------------
def test_load_pretrained_keeps_the_target_codes_and_schedule_state() -> None:
    source = build(text_embeddings(seed=1), seed=1)
    for epoch in range(6):
        source.on_epoch_start(epoch)
    target = build(text_embeddings(seed=2), seed=2)
    own_codes = target.codes.clone()
    assert not torch.equal(own_codes, source.codes)  # same shape, other content
    not_loaded = target.load_pretrained(source.state_dict())
    assert {"codes", "phase"} <= set(not_loaded)
    torch.testing.assert_close(target.codes, own_codes)
    assert int(target.phase) == 0
    torch.testing.assert_close(target.code_embedding.weight, source.code_embedding.weight)
    torch.testing.assert_close(target.encoder.attention[0].query.weight, source.encoder.attention[0].query.weight)


def test_fewer_training_items_than_dimensions_still_get_codes() -> None:
    # faiss's OPQ training corrupted memory on such inputs before the points were repeated
    embeddings = torch.randn(31, 96, generator=torch.Generator().manual_seed(0))
    codes = item_codes(embeddings, None, code_dim=4, code_cap=8, seed=0)
    assert codes.shape == (31, 4) and (codes[1:] > 0).all()

"""UniSRec specifics: the MoE adaptor, the contrastive losses, the augmentations, fine-tuning freeze."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recbench.layers import contrastive_loss, same_row_mask, same_target_mask, target_rows
from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench_plugins.unisrec import MoEAdaptor, UniSRec, drop_items, last_kept

SMALL = {"hidden_size": 16, "inner_size": 16, "max_seq_length": 8}


def build(name: str = "unisrec", num_items: int = 20, word_dropped: bool = True, **overrides):
    config = resolve_config(get_method(name), SMALL, overrides)
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(num_items + 1, 12, generator=generator)
    text[0] = 0
    dropped = text + 0.1 * torch.randn(text.shape, generator=generator) if word_dropped else None
    torch.manual_seed(0)
    spec = DataSpec(
        num_items=num_items, max_seq_length=8, item_text_embeddings=text, item_text_embeddings_word_dropped=dropped
    )
    return get_method(name).cls(config, spec)


def test_adaptor_maps_text_to_hidden_size_and_starts_with_uniform_gates() -> None:
    adaptor = MoEAdaptor(12, 5, experts=8, dropout=0.0, noisy=True).eval()
    text = torch.randn(3, 7, 12)
    assert adaptor(text).shape == (3, 7, 5)
    torch.testing.assert_close(adaptor.gates(text), torch.full((3, 7, 8), 1 / 8))


def test_each_expert_is_a_parametric_whitening_of_the_text() -> None:
    adaptor = MoEAdaptor(4, 3, experts=2, dropout=0.0, noisy=False).eval()
    with torch.no_grad():
        adaptor.bias.normal_()
        adaptor.gate.normal_()
    x = torch.randn(5, 4)
    gates = torch.softmax(x @ adaptor.gate, dim=-1)
    expected = sum(gates[:, k : k + 1] * ((x - adaptor.bias[k]) @ adaptor.weight[k]) for k in range(2))
    torch.testing.assert_close(adaptor(x), expected)


def test_gate_noise_is_drawn_in_training_only() -> None:
    adaptor = MoEAdaptor(6, 4, experts=8, dropout=0.0, noisy=True)
    x = torch.randn(10, 6)
    adaptor.eval()
    torch.testing.assert_close(adaptor.gates(x), adaptor.gates(x))
    adaptor.train()
    assert not torch.allclose(adaptor.gates(x), adaptor.gates(x))
    torch.testing.assert_close(adaptor.gates(x).sum(-1), torch.ones(10))


def test_same_target_rows_are_marked_but_not_the_row_itself() -> None:
    mask = same_target_mask(torch.tensor([3, 5, 3]))
    assert mask.tolist() == [[False, False, True], [False, False, False], [True, False, False]]


def test_contrastive_loss_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    anchors, positives = F.normalize(torch.randn(4, 6), dim=-1), F.normalize(torch.randn(4, 6), dim=-1)
    excluded = same_target_mask(torch.tensor([1, 2, 1, 3]))
    tau = 0.07
    total = 0.0
    for i in range(4):
        # a same-target row contributes exp(0) = 1, as in the official code
        denominator = sum(1.0 if excluded[i, j] else math.exp(float(anchors[i] @ positives[j]) / tau) for j in range(4))
        total += -math.log(math.exp(float(anchors[i] @ positives[i]) / tau) / denominator)
    assert contrastive_loss(anchors, positives, tau, excluded).item() == pytest.approx(total / 4, rel=1e-5)


def brute_force_infonce(
    anchors: torch.Tensor, candidates: torch.Tensor, targets: list[int], rows: list[int] | None, tau: float
) -> float:
    """Mean over anchors of -log(exp(s_ii) / sum over allowed j of exp(s_ij)), j = i always allowed; a
    same-sequence j is not allowed (rows given); a same-target j of another sequence counts exp(0) = 1."""
    total = 0.0
    for i in range(len(targets)):
        denominator = 0.0
        for j in range(len(targets)):
            if j != i and rows is not None and rows[j] == rows[i]:
                continue
            same = j != i and targets[j] == targets[i]
            denominator += 1.0 if same else math.exp(float(anchors[i].double() @ candidates[j].double()) / tau)
        total += -math.log(math.exp(float(anchors[i].double() @ candidates[i].double()) / tau) / denominator)
    return total / len(targets)


def test_target_rows_name_the_sequence_of_each_target_position() -> None:
    targets = torch.tensor([[2, 3, 0], [0, 0, 0], [5, 5, 6]])
    assert target_rows(targets).tolist() == [0, 0, 2, 2, 2]
    assert same_row_mask(target_rows(targets)).tolist() == [
        [False, True, False, False, False],
        [True, False, False, False, False],
        [False, False, False, True, True],
        [False, False, True, False, True],
        [False, False, True, True, False],
    ]


def test_contrastive_loss_leaves_the_same_sequence_out_of_each_denominator() -> None:
    torch.manual_seed(1)
    # three sequences, several targets each; target 4 repeats across sequences, 7 within sequence 2
    targets = torch.tensor([[3, 4, 5, 0], [4, 6, 0, 0], [7, 8, 7, 4]])
    flat, rows = targets[targets > 0], target_rows(targets)
    anchors = F.normalize(torch.randn(len(flat), 6), dim=-1)
    candidates = F.normalize(torch.randn(len(flat), 6), dim=-1)
    tau = 0.07
    same_target, same_row = same_target_mask(flat), same_row_mask(rows)
    masked = contrastive_loss(anchors, candidates, tau, same_target, same_row).item()
    assert masked == pytest.approx(
        brute_force_infonce(anchors, candidates, flat.tolist(), rows.tolist(), tau), rel=1e-5
    )
    unmasked = contrastive_loss(anchors, candidates, tau, same_target).item()
    assert unmasked == pytest.approx(brute_force_infonce(anchors, candidates, flat.tolist(), None, tau), rel=1e-5)
    assert masked != pytest.approx(unmasked)
    anchors.requires_grad_(True)
    contrastive_loss(anchors, candidates, tau, same_target, same_row).backward()
    assert torch.isfinite(anchors.grad).all()  # the removed (-inf) logits give no NaN


@pytest.mark.parametrize("mask_same_sequence", [True, False])
def test_pretrain_loss_equals_brute_force_seq_item_and_seq_seq_infonce(
    monkeypatch: pytest.MonkeyPatch, mask_same_sequence: bool
) -> None:
    model = build(pretrain_mask_same_sequence=mask_same_sequence, seq_seq_weight=0.5).eval()  # no dropout or noise
    batch = Batch(
        items=torch.tensor([[1, 2, 3, 4], [7, 3, 0, 0], [9, 8, 4, 0]]),
        lengths=torch.tensor([4, 2, 3]),
        targets=torch.tensor([[2, 3, 4, 5], [3, 5, 0, 0], [8, 4, 4, 0]]),  # 3, 4, 5 repeat across rows, 4 within
    )
    augmented: list[torch.Tensor] = []
    original = UniSRec.augmented_outputs

    def recording(self, *args, **kwargs):
        augmented.append(original(self, *args, **kwargs))
        return augmented[-1]

    monkeypatch.setattr(UniSRec, "augmented_outputs", recording)
    loss = model.pretrain_loss(batch).item()
    with torch.no_grad():
        table = model.adaptor(model.text)
        hidden = F.normalize(model.encode(table[batch.items], batch.items)[batch.targets > 0], dim=-1)
        positives = F.normalize(table[batch.targets[batch.targets > 0]], dim=-1)
        views = F.normalize(augmented[0].detach(), dim=-1)
    targets = batch.targets[batch.targets > 0].tolist()
    rows = target_rows(batch.targets).tolist() if mask_same_sequence else None
    tau = model.config.temperature
    expected = brute_force_infonce(hidden, positives, targets, rows, tau) + 0.5 * brute_force_infonce(
        hidden, views, targets, rows, tau
    )
    assert loss == pytest.approx(expected, rel=1e-4)


def test_item_drop_packs_the_kept_items_left_and_tracks_where_each_prefix_ends() -> None:
    items = torch.tensor([[4, 5, 6, 7, 0], [8, 9, 0, 0, 0]])
    keep = torch.tensor([[True, False, True, False, True], [True, True, False, False, False]])
    packed, source = drop_items(items, keep)
    assert packed.tolist() == [[4, 6, 0, 0, 0], [8, 9, 0, 0, 0]]
    assert source.tolist() == [[0, 2, -1, -1, -1], [0, 1, -1, -1, -1]]
    assert last_kept(keep & (items > 0)).tolist() == [[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]]


def test_augmented_prefix_outputs_equal_encoding_each_augmented_prefix_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build().eval()  # no dropout: outputs are deterministic
    items = torch.tensor([[3, 4, 5, 6, 7]])
    batch = Batch(items=items, lengths=torch.tensor([5]), targets=torch.tensor([[4, 5, 6, 7, 8]]))
    keep = torch.tensor([[True, True, False, True, False]])  # rand >= 0.2 where True
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.where(keep, 0.9, 0.1))
    monkeypatch.setattr("recbench_plugins.unisrec.random.random", lambda: 0.0)  # item drop
    table = model.adaptor(model.text)
    outputs = model.augmented_outputs(batch, table[items], model.text_word_dropped, items)
    for t in range(5):  # prefix ending at t keeps the kept items among positions 0..t
        prefix = items[0, : t + 1][keep[0, : t + 1]][None]
        alone = model.encode(table[prefix], prefix, last=torch.tensor([prefix.shape[1] - 1]))
        torch.testing.assert_close(outputs[t], alone[0])


def test_word_drop_replaces_only_the_chosen_positions_text(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build().eval()
    items = torch.tensor([[3, 4, 5]])
    batch = Batch(items=items, lengths=torch.tensor([3]), targets=torch.tensor([[4, 5, 6]]))
    keep = torch.tensor([[True, False, True]])
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.where(keep, 0.9, 0.1))
    monkeypatch.setattr("recbench_plugins.unisrec.random.random", lambda: 0.95)  # word drop
    table = model.adaptor(model.text)
    outputs = model.augmented_outputs(batch, table[items], model.text_word_dropped, items)
    mixed = table[items].clone()
    mixed[0, 1] = model.adaptor(model.text_word_dropped[4])
    torch.testing.assert_close(outputs, model.encode(mixed, items)[0])


def test_pretraining_loss_is_seq_item_plus_lambda_seq_seq_and_reaches_the_adaptor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = build(seq_seq_weight=0.5).train()
    batch = Batch(
        items=torch.tensor([[1, 2, 3], [4, 5, 0]]),
        lengths=torch.tensor([3, 2]),
        targets=torch.tensor([[2, 3, 4], [5, 6, 0]]),
    )
    for branch in (0.0, 0.95):  # item drop, word drop
        monkeypatch.setattr("recbench_plugins.unisrec.random.random", lambda branch=branch: branch)
        model.zero_grad()
        loss = model.pretrain_loss(batch)
        loss.backward()
        assert torch.isfinite(loss) and model.adaptor.weight.grad.abs().sum() > 0


def test_pretraining_without_the_word_dropped_view_is_an_error() -> None:
    model = build(word_dropped=False).train()
    batch = Batch(items=torch.tensor([[1, 2]]), lengths=torch.tensor([2]), targets=torch.tensor([[2, 3]]))
    with pytest.raises(ValueError, match="word"):
        model.pretrain_loss(batch)


def test_fine_tuning_from_a_checkpoint_freezes_position_and_transformer_only() -> None:
    source = build(num_items=30)
    target = build("unisrec-id", num_items=20)
    skipped = target.load_pretrained(source.state_dict())
    assert skipped == ["id_embedding.weight"]
    torch.testing.assert_close(target.adaptor.weight, source.adaptor.weight)
    frozen = {name for name, p in target.named_parameters() if not p.requires_grad}
    assert frozen == {
        name for name, _ in target.named_parameters() if name.startswith(("position_embedding.", "encoder."))
    }


def test_scores_are_cosines_and_the_variants_differ_only_by_the_id_embedding() -> None:
    model = build("unisrec").eval()
    batch = Batch(items=torch.tensor([[1, 2, 3]]), lengths=torch.tensor([3]))
    with torch.no_grad():
        scores = model.score(batch)
    assert scores.abs().max() <= 1.0 + 1e-5
    with_id = build("unisrec-id")
    assert {n for n, _ in with_id.named_parameters()} - {n for n, _ in model.named_parameters()} == {
        "id_embedding.weight"
    }


def test_pipeline_pretrains_with_both_text_views_and_fine_tuning_keeps_the_frozen_weights(
    recbench_home, tmp_path
) -> None:
    from recbench.data.dataset import save_dataset
    from recbench.runs.experiment import run_experiment
    from tests.conftest import make_cyclic_dataset

    for name, seed in (("src", 1), ("target", 2)):
        save_dataset(make_cyclic_dataset(name, items=20, seed=seed))
    small = {**SMALL, "epochs": 2, "pretrain_epochs": 2}
    result = run_experiment(
        "unisrec-id",
        "target",
        seed=1,
        overrides=[small],
        runs_dir=tmp_path,
        device="cpu",
        show_progress=False,
        pretrain_on=["src"],
    )
    assert len(list((recbench_home / "embeddings" / "src").glob("*.npy"))) == 2  # the text and its word-dropped view
    pretrained = torch.load(next((tmp_path / "_pretrain").rglob("best.pt")), weights_only=True)
    tuned = result.run.load_best()
    for name, weight in pretrained.items():
        if name.startswith(("encoder.", "position_embedding.")):
            torch.testing.assert_close(tuned[name], weight)
    assert not torch.allclose(tuned["adaptor.weight"], pretrained["adaptor.weight"])

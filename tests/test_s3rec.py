"""S3-Rec: the four pre-training losses against hand computations, each falls on a toy task, pre-training on the
target itself through run_experiment, and fine-tuning from the pre-trained encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recbench import layers
from recbench.compare import takes_sources
from recbench.errors import RecbenchError
from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.experiment import run_experiment
from recbench.runs.record import RunRecord
from recbench.runs.trainer import seed_everything
from recbench.testing import training_batches
from recbench_plugins.s3rec import LOSSES, S3Rec

NUM_ITEMS = 30
SMALL = {"hidden_size": 16, "inner_size": 16, "max_seq_length": 10}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}


def text_table(num_items: int = NUM_ITEMS, size: int = 8) -> torch.Tensor:
    text = torch.randn(num_items + 1, size, generator=torch.Generator().manual_seed(5))
    text[0] = 0
    return text


def model(**overrides) -> S3Rec:
    seed_everything(0)
    config = resolve_config(get_method("s3rec"), SMALL, overrides)
    return S3Rec(config, DataSpec(num_items=NUM_ITEMS, max_seq_length=10, item_text_embeddings=text_table()))


def window() -> Batch:
    return Batch(
        items=torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]]),
        lengths=torch.tensor([4, 2]),
        targets=torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0]]),
    )


def test_pre_training_samples_are_every_prefix_left_padded_to_max_seq_length() -> None:
    sequences = model().prefixes(window())
    expected = [[0] * 9 + [3], [0] * 8 + [3, 4], [0] * 7 + [3, 4, 5], [0] * 6 + [3, 4, 5, 6], [0] * 9 + [7]]
    assert sequences.tolist() == expected + [[0] * 8 + [7, 8]]


def test_segments_mask_a_segment_and_keep_it_in_place_in_the_positive() -> None:
    s3rec = model()
    sequences = s3rec.prefixes(window())
    mask = s3rec.mask_token
    torch.manual_seed(1)
    masked, positive, negative = s3rec.segments(sequences)
    flat = sequences[sequences > 0].tolist()
    for row in range(len(sequences)):
        real = sequences[row] > 0
        items, ctx, pos, neg = (t[row][real].tolist() for t in (sequences, masked, positive, negative))
        assert (masked[row][~real] == 0).all() and (positive[row][~real] == 0).all()
        if len(items) < 2:
            assert ctx == pos == neg == items
            continue
        inside = [i for i, token in enumerate(ctx) if token == mask]
        assert 1 <= len(inside) <= len(items) // 2 and inside == list(range(inside[0], inside[-1] + 1))
        assert [pos[i] for i in inside] == [items[i] for i in inside]
        assert all(
            pos[i] == mask and neg[i] == mask and ctx[i] == items[i] for i in range(len(items)) if i not in inside
        )
        segment = [neg[i] for i in inside]
        assert any(flat[s : s + len(segment)] == segment for s in range(len(flat)))  # cut from the concatenation


def test_negative_items_are_never_in_their_prefix() -> None:
    s3rec = model()
    sequences = s3rec.prefixes(window())
    torch.manual_seed(0)
    negatives = s3rec.negative_items(sequences)
    assert ((negatives >= 1) & (negatives <= NUM_ITEMS)).all()
    assert not (negatives[:, :, None] == sequences[:, None, :]).any()


@pytest.mark.parametrize("min_group_rows", [128, 1])  # one length group; several of different widths
def test_the_four_losses_are_recbole_s_sums_with_the_item_s_text_as_its_attribute(
    monkeypatch: pytest.MonkeyPatch, min_group_rows: int
) -> None:
    # The losses encode in frames narrower than max_seq_length (10 here, rows of 1..4 items); the hand
    # computation below encodes every row at the full width.
    monkeypatch.setattr(layers, "MIN_GROUP_ROWS", min_group_rows)
    s3rec = model(**NO_DROPOUT).eval()
    batch = window()
    torch.manual_seed(4)
    losses = s3rec.pretrain_losses(batch)
    # replay the same draws by hand
    torch.manual_seed(4)
    sequences = s3rec.prefixes(batch)
    masked = (sequences > 0) & (torch.rand(sequences.shape) < 0.2)
    negatives = s3rec.negative_items(sequences)
    context, positive, negative = s3rec.segments(sequences)
    inputs = torch.where(masked, s3rec.mask_token, sequences)
    with torch.no_grad():
        hidden = s3rec.encode(inputs, bidirectional=True)
        attributes = F.relu(s3rec.text @ s3rec.adapter.weight.T + s3rec.adapter.bias)
        aap = map_ = mip = torch.tensor(0.0)
        for p, t in zip(*((sequences > 0).nonzero(as_tuple=True))):
            one_hot = F.one_hot(sequences[p, t], NUM_ITEMS + 1).float()
            if masked[p, t]:
                h = s3rec.map_norm(hidden[p, t])
                map_ = map_ + F.binary_cross_entropy_with_logits(attributes @ h, one_hot, reduction="sum")
                h = s3rec.mip_norm(hidden[p, t])
                pos = torch.sigmoid(h @ s3rec.item_embedding.weight[sequences[p, t]])
                neg = torch.sigmoid(h @ s3rec.item_embedding.weight[negatives[p, t]])
                mip = mip - F.logsigmoid(pos - neg)
            else:
                h = s3rec.aap_norm(hidden[p, t])
                aap = aap + F.binary_cross_entropy_with_logits(attributes @ h, one_hot, reduction="sum")
        c, pos_seg, neg_seg = (s3rec.encode(x, bidirectional=True)[:, -1] for x in (context, positive, negative))
        c = s3rec.sp_norm(c)
        sp = -F.logsigmoid(torch.sigmoid((c * pos_seg).sum(-1)) - torch.sigmoid((c * neg_seg).sum(-1))).sum()
    assert masked.any() and (~masked & (sequences > 0)).any()
    for name, expected in (("aap", aap), ("mip", mip), ("map", map_), ("sp", sp)):
        torch.testing.assert_close(losses[name].detach(), expected, msg=name)
    torch.manual_seed(4)
    total = s3rec.pretrain_loss(batch)
    torch.testing.assert_close(total.detach(), 1.0 * aap + 0.2 * mip + 1.0 * map_ + 0.5 * sp)


# The pairwise losses (MIP, SP) are BCE of a difference of two sigmoids: per sample between
# -log sigmoid(1) = 0.31 and log 2 = 0.69 at the start, so they cannot fall below 45% of it.
@pytest.mark.parametrize(
    ("task", "epochs", "learning_rate", "share"),
    [("aap", 4, 0.01, 0.5), ("mip", 20, 0.01, 0.85), ("map", 4, 0.01, 0.5), ("sp", 40, 0.003, 0.85)],
)
def test_each_pre_training_loss_falls_on_a_toy_task(task: str, epochs: int, learning_rate: float, share: float) -> None:
    weights = {f"{name}_weight": float(name == task) for name in LOSSES}  # this task alone
    s3rec = model(**NO_DROPOUT, **weights)
    batches = training_batches()  # users walk item i -> i + 1: masked items, texts and segments are predictable

    def total() -> float:
        s3rec.eval()
        torch.manual_seed(123)  # the same masks, negatives and segments before and after
        with torch.no_grad():
            value = sum(s3rec.pretrain_losses(batch, (task,))[task].item() for batch in batches)
        s3rec.train()
        return value

    before = total()
    optimizer = torch.optim.Adam(s3rec.parameters(), lr=learning_rate)
    for _ in range(epochs):
        for batch in batches:
            optimizer.zero_grad()
            s3rec.pretrain_loss(batch).backward()
            optimizer.step()
    after = total()
    assert after < share * before, (task, before, after)


def test_fine_tuning_scores_rows_0_to_n_and_trains_against_the_mask_token_too() -> None:
    s3rec = model().eval()
    batch = window()
    with torch.no_grad():
        scores = s3rec.score(Batch(items=batch.items, lengths=batch.lengths))
        assert scores.shape == (2, NUM_ITEMS + 1)
        hidden = s3rec.encode(batch.items)
        logits = hidden[batch.targets > 0] @ s3rec.item_embedding.weight.T
        assert logits.shape[1] == NUM_ITEMS + 2
        torch.testing.assert_close(s3rec.loss(batch), F.cross_entropy(logits, batch.targets[batch.targets > 0]))
        torch.testing.assert_close(scores[0], logits[3, : NUM_ITEMS + 1])  # causal: the prefix read at its end


SHORT = {**SMALL, "epochs": 0, "pretrain_epochs": 2, "train_batch_targets": 64}


def test_pre_training_runs_on_the_target_itself_and_fine_tuning_starts_from_its_encoder(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recbench.data import encode
    from recbench.testing import _HashedWords

    monkeypatch.setattr(encode, "load_encoder", lambda spec: _HashedWords())  # no text encoder download
    result = run_experiment(
        "s3rec", "toy", seed=1, overrides=[SHORT], runs_dir=tmp_path, device="cpu", show_progress=False
    )
    pretrained_runs = [p.parent for p in (tmp_path / "_pretrain" / "toy").rglob("status.json")]
    assert len(pretrained_runs) == 1 and result.run.config["pretrained"] == pretrained_runs[0].name
    pretrained = RunRecord(pretrained_runs[0]).load_best()
    assert len(RunRecord(pretrained_runs[0]).log) == 2  # two pre-training epochs on the target
    fine_tuned = result.run.load_best()  # epochs = 0: the weights fine-tuning starts from
    assert set(fine_tuned) == set(pretrained)
    assert all(torch.equal(fine_tuned[name], pretrained[name]) for name in pretrained)
    fresh = model()
    assert not torch.equal(fine_tuned["encoder.attention.0.query.weight"], fresh.encoder.attention[0].query.weight)
    # pretrain_epochs = 0: no pre-training stage; another dataset as source: refused
    scratch = run_experiment(
        "s3rec", "toy", seed=1, overrides=[{**SHORT, "pretrain_epochs": 0}], runs_dir=tmp_path, device="cpu",
        show_progress=False,
    )  # fmt: skip
    assert "pretrained" not in scratch.run.config
    with pytest.raises(RecbenchError, match="pre-trains on its target 'toy' itself"):
        run_experiment("s3rec", "toy", overrides=[SHORT], runs_dir=tmp_path, pretrain_on=["other"], device="cpu")


def test_a_grid_gives_its_sources_to_transfer_methods_but_not_to_s3rec() -> None:
    assert takes_sources(get_method("unisrec").cls) and not takes_sources(get_method("unisrec").cls, pretrain=False)
    assert not takes_sources(get_method("s3rec").cls) and not takes_sources(get_method("sasrec").cls)


def test_official_right_padded_targets_are_the_item_at_the_same_column_of_the_right_padded_prefix() -> None:
    s3rec = model(**NO_DROPOUT, mask_ratio=0.0, attribute_targets="official_right_padded").eval()
    batch = window()
    right = s3rec.right_padded_prefixes(batch)
    assert right.tolist()[:2] == [[3] + [0] * 9, [3, 4] + [0] * 8]  # RecBole's item_seq of the first two samples
    losses = s3rec.pretrain_losses(batch, ("aap",))  # nothing masked: AAP at every real position
    sequences = s3rec.prefixes(batch)
    with torch.no_grad():
        hidden = s3rec.aap_norm(s3rec.encode(sequences, bidirectional=True))
        attributes = s3rec.attribute_table()
        expected = torch.tensor(0.0)
        for p, t in zip(*((sequences > 0).nonzero(as_tuple=True))):
            one_hot = F.one_hot(right[p, t], NUM_ITEMS + 1).float()  # the column's item in the right-padded prefix
            expected = expected + F.binary_cross_entropy_with_logits(
                attributes @ hidden[p, t], one_hot, reduction="sum"
            )
        aligned = model(**NO_DROPOUT, mask_ratio=0.0).eval().pretrain_losses(batch, ("aap",))["aap"]
    torch.testing.assert_close(losses["aap"].detach(), expected)
    assert not torch.allclose(losses["aap"].detach(), aligned.detach())  # the default targets differ


def test_official_random_attributes_are_a_frozen_random_table_kept_in_the_state_dict() -> None:
    s3rec = model(attributes="official_random")
    text = text_table()
    assert s3rec.text.shape == (len(text), 768) and s3rec.adapter.in_features == 768  # their BERT width
    assert abs(s3rec.text.std().item() - 0.02) < 0.004  # N(0, initializer_range), the padding row too
    assert "text" in s3rec.state_dict() and "text" not in model().state_dict()
    assert not any(p is s3rec.text for p in s3rec.parameters())  # frozen
    torch.testing.assert_close(model(attributes="official_random").text, s3rec.text)  # seeded
    torch.testing.assert_close(s3rec.attribute_table(), F.relu(s3rec.adapter(s3rec.text)))


def test_both_stages_take_unisrec_s_props_batch_of_1024() -> None:
    config = resolve_config(get_method("s3rec"))
    assert (config.train_batch_targets, config.pretrain_batch_targets) == (1024, 1024)
    assert resolve_config(get_method("sasrec")).train_batch_targets == 2048  # RecBole's default elsewhere

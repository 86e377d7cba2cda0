"""PeterRec: the serial patch position, near-identity patches, fine-tuning moves only the patches, LayerNorm 2
and the target item table, and a pre-training + fine-tuning run through run_experiment."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.experiment import run_experiment
from recbench.runs.trainer import seed_everything
from recbench.testing import toy_dataset, training_batches
from recbench_plugins.peterrec import PeterRec

SMALL = {"embedding_size": 16, "patch_size": 4, "max_seq_length": 10}


def model(num_items: int = 30, seed: int = 0, **overrides) -> PeterRec:
    seed_everything(seed)
    config = resolve_config(get_method("peterrec"), SMALL, overrides)
    return PeterRec(config, DataSpec(num_items=num_items, max_seq_length=10))


def fine_tuned(**overrides) -> tuple[PeterRec, dict[str, torch.Tensor]]:
    """A target model (30 items) loaded from a pre-trained source model (20 items, a few steps of pre-training)."""
    source = model(num_items=20, seed=1, **overrides)
    optimizer = torch.optim.Adam(source.parameters(), lr=0.01)
    for batch in training_batches(num_items=20)[:3]:
        optimizer.zero_grad()
        source.pretrain_loss(batch).backward()
        optimizer.step()
    state = {name: value.detach().clone() for name, value in source.state_dict().items()}
    target = model(seed=2, **overrides)
    target.load_pretrained(state)
    return target, state


def test_patches_sit_after_each_convolution_before_its_layer_norm() -> None:
    peterrec = model().eval()
    block = peterrec.residual_blocks[0]
    x = torch.randn(2, 5, 16)

    def patch(module, h):
        return h + module.up(F.gelu(module.down(h), approximate="tanh"))

    with torch.no_grad():
        out = F.relu(block.ln1(patch(block.patch1, block.causal_conv(block.conv1, x, 1))))
        out = F.relu(block.ln2(patch(block.patch2, block.causal_conv(block.conv2, out, 2))))
        torch.testing.assert_close(block(x), out + x)
        plain = F.relu(
            block.ln2(block.causal_conv(block.conv2, F.relu(block.ln1(block.causal_conv(block.conv1, x, 1))), 2))
        )
        torch.testing.assert_close(block(x, patched=False), plain + x)
    assert block.patch1.down.out_features == 4 and block.patch1.up.out_features == 16
    assert [b.dilation for b in peterrec.residual_blocks] == [1, 4] * 4


def test_initialisation_is_the_official_truncated_normal() -> None:
    peterrec = PeterRec(resolve_config(get_method("peterrec")), DataSpec(num_items=3000, max_seq_length=50))
    block = peterrec.residual_blocks[0]
    for weight in (
        peterrec.item_embedding.weight,
        block.conv1.weight,
        block.patch1.down.weight,
        block.patch2.up.weight,
    ):
        assert weight.abs().max() <= 0.04 and abs(weight.std().item() - 0.0176) < 0.002  # N(0, 0.02) cut at 2 std
    assert not block.conv1.bias.any() and not block.patch1.up.bias.any() and not peterrec.source_output.bias.any()
    assert torch.all(block.ln2.weight == 1) and block.ln2.eps == 1e-8
    assert block.patch1.down.out_features == 16  # channels 64 / 4


def test_with_near_identity_patches_fine_tuning_starts_from_the_backbone_s_outputs() -> None:
    peterrec, _ = fine_tuned()
    peterrec.eval()
    items = torch.randint(1, 31, (4, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        backbone = peterrec.encode(items, patched=False)
        patched = peterrec.encode(items)
        assert (patched - backbone).norm() < 0.02 * backbone.norm()  # the official init: near-identity
        for block in peterrec.residual_blocks:
            for patch in (block.patch1, block.patch2):
                patch.up.weight.zero_()
        torch.testing.assert_close(peterrec.encode(items), backbone, rtol=0, atol=0)  # exactly, with up = 0


def test_fine_tuning_changes_only_the_patches_layer_norm_2_and_the_target_items() -> None:
    peterrec, pretrained = fine_tuned()
    before = {name: value.detach().clone() for name, value in peterrec.state_dict().items()}
    backbone = [n for n in pretrained if n.startswith("residual_blocks.") and ".patch" not in n]
    assert all(torch.equal(before[name], pretrained[name]) for name in backbone)  # loaded
    trainable = {name for name, p in peterrec.named_parameters() if p.requires_grad}
    assert trainable == {"item_embedding.weight"} | {
        name for name, _ in peterrec.named_parameters() if ".patch" in name or ".ln2." in name
    }
    optimizer = torch.optim.Adam([p for p in peterrec.parameters() if p.requires_grad], lr=0.01)
    for batch in training_batches()[:3]:
        optimizer.zero_grad()
        peterrec.loss(batch).backward()
        optimizer.step()
    after = peterrec.state_dict()
    changed = {name for name in after if not torch.equal(after[name], before[name])}
    frozen = [n for n in backbone if ".ln2." not in n] + ["source_output.weight", "source_output.bias"]
    assert not changed & set(frozen)  # every frozen backbone weight bitwise unchanged
    assert (
        "item_embedding.weight" in changed
        and any(".patch" in n for n in changed)
        and any(".ln2." in n for n in changed)
    )
    frozen_too, _ = fine_tuned(train_layer_norm=False)
    assert not any(".ln2." in n for n, p in frozen_too.named_parameters() if p.requires_grad)


def test_the_target_loss_is_ce_of_the_output_against_the_new_item_table_plus_the_l2_penalty() -> None:
    peterrec, _ = fine_tuned()
    batch = Batch(
        items=torch.tensor([[3, 4, 5], [7, 8, 0]]),
        lengths=torch.tensor([3, 2]),
        targets=torch.tensor([[4, 5, 6], [8, 9, 0]]),
    )
    with torch.no_grad():
        hidden = peterrec.encode(batch.items)
        table = peterrec.item_embedding.weight
        ce = F.cross_entropy(hidden[batch.targets > 0] @ table.T, torch.tensor([4, 5, 6, 8, 9]))
        torch.testing.assert_close(peterrec.loss(batch), ce + 0.01 * table.pow(2).sum())
        scores = peterrec.score(Batch(items=batch.items, lengths=batch.lengths))
        torch.testing.assert_close(scores[1], hidden[1, 1] @ table.T)  # read at the last item


def test_pre_training_on_a_source_then_fine_tuning_keeps_the_backbone(recbench_home: Path, tmp_path: Path) -> None:
    from recbench.data.dataset import save_dataset
    from recbench.runs.record import RunRecord

    save_dataset(toy_dataset("toy-source", items=20, seed=1))
    save_dataset(toy_dataset("toy", seed=2))
    overrides = {**SMALL, "epochs": 2, "pretrain_epochs": 2, "train_batch_targets": 64}
    result = run_experiment(
        "peterrec", "toy", seed=0, overrides=[overrides], runs_dir=tmp_path, device="cpu", show_progress=False,
        pretrain_on=["toy-source"],
    )  # fmt: skip
    (status,) = (tmp_path / "_pretrain").rglob("status.json")
    pretrained = RunRecord(status.parent).load_best()
    final = result.run.load_best()
    for name, value in pretrained.items():
        if name.startswith("residual_blocks.") and ".patch" not in name and ".ln2." not in name:
            assert torch.equal(final[name], value), name
    assert result.fit.epochs_run == 2 and result.run.metrics["test"]["ndcg@10"] >= 0

"""NextItNet: causal receptive field, RecBole's read-out after padding, regularisation, initialisation, training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.experiment import run_experiment
from recbench.runs.trainer import seed_everything
from recbench_plugins.nextitnet import NextItNet

NUM_ITEMS = 20


def model(**overrides) -> NextItNet:
    seed_everything(0)
    config = resolve_config(get_method("nextitnet"), {"embedding_size": 8, "max_seq_length": 10}, overrides)
    return NextItNet(config, DataSpec(num_items=NUM_ITEMS, max_seq_length=config.max_seq_length))


def random_items(rows: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, NUM_ITEMS + 1, (rows, width), generator=torch.Generator().manual_seed(seed))


def test_the_output_at_t_ignores_every_item_after_t() -> None:
    nextitnet = model().eval()  # RecBole's dilations and blocks: receptive field 151 > 12
    items = random_items(4, 12)
    with torch.no_grad():
        base = nextitnet.encode(items)
        for t in range(11):
            changed = items.clone()
            changed[:, t + 1 :] = random_items(4, 11 - t, seed=t + 1)
            torch.testing.assert_close(nextitnet.encode(changed)[:, : t + 1], base[:, : t + 1])
            assert not torch.allclose(nextitnet.encode(changed)[:, t + 1 :], base[:, t + 1 :])


@pytest.mark.parametrize(("kernel_size", "dilation"), [(3, 1), (3, 4), (2, 8), (5, 2)])
def test_each_convolution_is_a_dilated_causal_convolution_with_zeros_before_the_first_item(
    kernel_size: int, dilation: int
) -> None:
    block = model(kernel_size=kernel_size).residual_blocks[0]
    x = torch.randn(3, 11, 8, generator=torch.Generator().manual_seed(1))
    got = block.causal_conv(block.conv1, x, dilation)
    weight, bias = block.conv1.weight, block.conv1.bias  # (out, in, k): tap k looks (k_size - 1 - k) x d back
    expected = torch.zeros_like(got)
    for t in range(x.shape[1]):
        expected[:, t] = bias
        for k in range(kernel_size):
            source = t - (kernel_size - 1 - k) * dilation
            if source >= 0:
                expected[:, t] += x[:, source] @ weight[:, :, k].T
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_receptive_field_is_one_plus_3_k_minus_1_times_the_summed_dilations() -> None:
    # kernel 2, dilations [1] twice: blocks with dilations (1, 2), (1, 2) -> 1 + 3 * 1 * 2 = 7 positions
    nextitnet = model(kernel_size=2, dilations=[1], block_num=2).eval()
    items = random_items(3, 12)
    last = 11
    with torch.no_grad():
        base = nextitnet.encode(items)[:, last]
        for position, matters in ((last - 6, True), (last - 7, False), (0, False)):
            changed = items.clone()
            changed[:, position] = changed[:, position] % NUM_ITEMS + 1
            moved = not torch.allclose(nextitnet.encode(changed)[:, last], base)
            assert moved == matters, position


def test_scores_read_the_last_column_after_padding_to_max_seq_length_as_recbole() -> None:
    nextitnet = model().eval()
    batch = Batch(items=torch.tensor([[3, 7, 1, 9, 9], [5, 6, 2, 4, 8]]), lengths=torch.tensor([3, 5]))
    with torch.no_grad():
        scores = nextitnet.score(batch)
        recbole_input = torch.tensor([[3, 7, 1] + [0] * 7, [5, 6, 2, 4, 8] + [0] * 5])  # junk after the length dropped
        hidden = nextitnet.encode(recbole_input)[:, -1]
        expected = nextitnet.final_layer(hidden) @ nextitnet.item_embedding.weight.T
        torch.testing.assert_close(scores, expected)
        at_last_item = nextitnet.encode(batch.items)[torch.arange(2), batch.lengths - 1]
        assert not torch.allclose(hidden, at_last_item, atol=1e-3)  # the padding is read through
    assert scores.shape == (2, NUM_ITEMS + 1)


def test_the_last_item_read_out_scores_the_output_at_the_last_item() -> None:
    nextitnet = model(readout="last_item").eval()
    batch = Batch(items=torch.tensor([[3, 7, 1, 9, 9], [5, 6, 2, 4, 8]]), lengths=torch.tensor([3, 5]))
    with torch.no_grad():
        hidden = nextitnet.encode(batch.items)[torch.arange(2), batch.lengths - 1]
        expected = nextitnet.final_layer(hidden) @ nextitnet.item_embedding.weight.T
        torch.testing.assert_close(nextitnet.score(batch), expected)


def test_a_full_width_history_reads_the_same_output_either_way() -> None:
    batch = Batch(items=random_items(2, 10), lengths=torch.tensor([10, 10]))
    with torch.no_grad():
        torch.testing.assert_close(model().eval().score(batch), model(readout="last_item").eval().score(batch))


@pytest.mark.parametrize("readout", ["padded_end", "last_item"])
def test_training_loss_is_the_mean_ce_of_every_prefix_scored_on_its_own_plus_recbole_s_penalty(readout: str) -> None:
    nextitnet = model(readout=readout, reg_weight=1e-3).eval()
    window = Batch(
        items=torch.tensor([[3, 5, 7, 2], [4, 6, 0, 0]]),
        lengths=torch.tensor([4, 2]),
        targets=torch.tensor([[5, 7, 2, 9], [6, 8, 0, 0]]),
    )
    prefixes = Batch(
        items=torch.tensor([[3, 0, 0, 0], [3, 5, 0, 0], [3, 5, 7, 0], [3, 5, 7, 2], [4, 0, 0, 0], [4, 6, 0, 0]]),
        lengths=torch.tensor([1, 2, 3, 4, 1, 2]),
    )
    names = {name for name, _ in nextitnet.residual_blocks.named_parameters() if name.endswith("weight")}
    assert names == {f"{b}.{p}.weight" for b in range(10) for p in ("conv1", "ln1", "conv2", "ln2")}
    penalty = nextitnet.item_embedding.weight.norm() + nextitnet.final_layer.weight.norm()
    for block in nextitnet.residual_blocks:
        penalty = penalty + sum(torch.linalg.vector_norm(p) for p in (block.conv1.weight, block.conv2.weight))
        penalty = penalty + block.ln1.weight.norm() + block.ln2.weight.norm()  # LayerNorm scales count too
    with torch.no_grad():
        ce = F.cross_entropy(nextitnet.score(prefixes), torch.tensor([5, 7, 2, 9, 6, 8]))
        torch.testing.assert_close(nextitnet.loss(window), ce + 1e-3 * penalty)


def test_initialisation_is_recbole_s() -> None:
    seed_everything(0)
    nextitnet = NextItNet(resolve_config(get_method("nextitnet")), DataSpec(num_items=3000, max_seq_length=50))
    embedding = nextitnet.item_embedding.weight
    bound = math.sqrt(1.0 / 3001)
    assert embedding.abs().max() <= bound and embedding.abs().max() > 0.99 * bound
    assert embedding[0].abs().sum() > 0  # the padding row too
    assert torch.all(nextitnet.final_layer.bias == 0.1)
    xavier_std = math.sqrt(2.0 / (64 + 64))
    assert abs(nextitnet.final_layer.weight.std().item() - xavier_std) < 0.1 * xavier_std
    block = nextitnet.residual_blocks[0]
    assert torch.all(block.ln1.weight == 1) and torch.all(block.ln1.bias == 0) and block.ln1.eps == 1e-8
    conv_bound = 1 / math.sqrt(64 * 3)  # PyTorch's default: kaiming_uniform(a=sqrt(5)) -> 1 / sqrt(fan_in)
    assert block.conv1.weight.abs().max() <= conv_bound and block.conv2.dilation == (2,)
    assert [b.dilation for b in nextitnet.residual_blocks] == [1, 4] * 5


# RecBole's read-out through the padding learns slower on the toy task than the last-item one
@pytest.mark.parametrize(("readout", "epochs", "times_chance"), [("padded_end", 20, 1.5), ("last_item", 8, 3)])
def test_training_on_a_toy_task_lowers_the_loss_and_beats_chance(
    toy_dataset, tmp_path: Path, readout: str, epochs: int, times_chance: float
) -> None:
    overrides = {
        "embedding_size": 16,
        "max_seq_length": 10,
        "readout": readout,
        "epochs": epochs,
        "patience": epochs,
        "train_batch_targets": 64,
        "learning_rate": 0.01,
    }
    result = run_experiment(
        "nextitnet", "toy", seed=3, overrides=[overrides], runs_dir=tmp_path, device="cpu", show_progress=False
    )
    losses = [entry["loss"] for entry in result.run.log]
    assert len(losses) == epochs and losses[-1] < 0.6 * losses[0]
    chance = 5 / toy_dataset.num_items
    assert result.run.metrics["test"]["hr@5"] > times_chance * chance

"""Caser: both convolution branches against brute-force loops, the L-item window and RecBole's padding,
loss and penalties, the user path, initialisation, training."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.experiment import run_experiment
from recbench.runs.trainer import seed_everything
from recbench_plugins.caser import Caser, CaserConfig

NUM_ITEMS = 20
NUM_USERS = 5
L = 4


def model(**overrides) -> Caser:
    seed_everything(0)
    config = resolve_config(
        get_method("caser"), {"embedding_size": 6, "max_seq_length": L, "nv": 3, "nh": 2}, overrides
    )
    return Caser(config, DataSpec(num_items=NUM_ITEMS, max_seq_length=L, num_users=NUM_USERS))


def test_defaults_are_recbole_s_caser_yaml_from_v1_1_1_on() -> None:
    config = CaserConfig()
    assert (config.embedding_size, config.nv, config.nh) == (64, 4, 8)
    assert (config.dropout_prob, config.reg_weight, config.max_seq_length) == (0.4, 1e-4, 50)


def test_the_horizontal_branch_equals_a_brute_force_loop() -> None:
    caser = model().eval()
    history = [3, 9, 14, 0]  # right-padded: the padding row is part of the "image", as in RecBole
    with torch.no_grad():
        image = caser.item_embedding.weight[history]  # (L, d)
        got = caser.horizontal(image[None, None])[0]
        expected = []
        for height in range(1, L + 1):
            conv = caser.conv_h[height - 1]
            for f in range(2):
                windows = []
                for start in range(L - height + 1):
                    total = conv.bias[f].item()
                    for a in range(height):
                        for k in range(6):
                            total += conv.weight[f, 0, a, k].item() * image[start + a, k].item()
                    windows.append(max(total, 0.0))  # ReLU, then max over time
                expected.append(max(windows))
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert got.shape == (2 * L,)


def test_the_vertical_branch_is_a_weighted_sum_over_all_l_positions() -> None:
    caser = model().eval()
    history = torch.tensor([3, 9, 14, 5])
    with torch.no_grad():
        image = caser.item_embedding.weight[history]
        got = caser.vertical(image[None, None])[0]
        weights = caser.conv_v.weight[:, 0, :, 0]  # (nv, L)
        expected = torch.cat([weights[c] @ image + caser.conv_v.bias[c] for c in range(3)])
        torch.testing.assert_close(got, expected)


def test_every_one_of_the_l_positions_reaches_the_output_through_the_vertical_branch() -> None:
    caser = model().eval()
    with torch.no_grad():
        for conv in caser.conv_h:  # switch the horizontal branch off: a constant 0 goes into fc1
            conv.weight.zero_()
            conv.bias.zero_()
        users = torch.tensor([2])
        history = torch.tensor([[3, 9, 14, 5]])
        base = caser.represent(history, users)
        for j in range(L):
            changed = history.clone()
            changed[0, j] = 17
            assert not torch.allclose(caser.represent(changed, users), base), j
            assert not torch.allclose(
                caser.vertical(caser.item_embedding(changed)[:, None]),
                caser.vertical(caser.item_embedding(history)[:, None]),
            )


def test_items_older_than_the_last_l_never_change_the_score() -> None:
    caser = model().eval()
    items = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 0, 0], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]])
    batch = Batch(items=items, lengths=torch.tensor([8, 10]), users=torch.tensor([1, 2]))
    with torch.no_grad():
        base = caser.score(batch)
        older = items.clone()
        older[0, :4] = torch.tensor([20, 19, 18, 17])  # positions 0..3 of a length-8 history: older than the last 4
        older[1, :6] = 9
        torch.testing.assert_close(caser.score(Batch(items=older, lengths=batch.lengths, users=batch.users)), base)
        recent = items.clone()
        recent[0, 4] = 20  # the oldest of the last 4 items
        assert not torch.allclose(
            caser.score(Batch(items=recent, lengths=batch.lengths, users=batch.users))[0], base[0]
        )
        # the score is RecBole's forward on the last L items
        expected = caser.represent(torch.tensor([[5, 6, 7, 8], [17, 18, 19, 20]]), batch.users)
        torch.testing.assert_close(base, expected @ caser.item_embedding.weight.T)


def test_short_histories_are_right_padded_as_recbole_and_the_padding_row_is_read() -> None:
    caser = model().eval()
    batch = Batch(items=torch.tensor([[3, 7, 9, 9, 9], [5, 0, 0, 0, 0]]), lengths=torch.tensor([2, 1]))
    with torch.no_grad():
        recbole_input = torch.tensor([[3, 7, 0, 0], [5, 0, 0, 0]])  # item_id_list: zeros(L), history first
        expected = caser.represent(recbole_input, torch.zeros(2, dtype=torch.long))
        torch.testing.assert_close(caser.score(batch), expected @ caser.item_embedding.weight.T)
        assert torch.count_nonzero(caser.item_embedding.weight[0]) > 0  # padding embedding: random, not zero
        caser.item_embedding.weight[0] = 0
        assert not torch.allclose(caser.score(batch), expected @ caser.item_embedding.weight.T)


def test_the_loss_is_ce_of_each_target_on_its_own_history_plus_recbole_s_penalties() -> None:
    caser = model(reg_weight=1e-3).eval()  # no dropout: a deterministic comparison
    window = Batch(
        items=torch.tensor([[3, 5, 7, 2, 6, 1], [4, 6, 0, 0, 0, 0]]),
        lengths=torch.tensor([6, 2]),
        targets=torch.tensor([[5, 7, 2, 6, 1, 9], [6, 8, 0, 0, 0, 0]]),
        users=torch.tensor([3, 5]),
    )
    # RecBole's samples: the last L items before each target, right-padded, with the user
    histories = torch.tensor(
        [[3, 0, 0, 0], [3, 5, 0, 0], [3, 5, 7, 0], [3, 5, 7, 2], [5, 7, 2, 6], [7, 2, 6, 1], [4, 0, 0, 0], [4, 6, 0, 0]]
    )
    users = torch.tensor([3] * 6 + [5] * 2)
    targets = torch.tensor([5, 7, 2, 6, 1, 9, 6, 8])
    with torch.no_grad():
        logits = caser.represent(histories, users) @ caser.item_embedding.weight.T
        penalty = sum(
            torch.linalg.matrix_norm(w)
            for w in (caser.user_embedding.weight, caser.item_embedding.weight, caser.fc1.weight, caser.fc2.weight)
        )
        penalty += caser.conv_v.weight.flatten().norm() + sum(conv.weight.flatten().norm() for conv in caser.conv_h)
        torch.testing.assert_close(caser.loss(window), F.cross_entropy(logits, targets) + 1e-3 * penalty)


def test_the_user_enters_through_fc2_and_an_unknown_user_is_a_zero_vector() -> None:
    caser = model().eval()
    history = torch.tensor([[3, 9, 14, 5]])
    with torch.no_grad():
        image = caser.item_embedding(history)[:, None]
        z = F.relu(caser.fc1(torch.cat([caser.vertical(image), caser.horizontal(image)], dim=1)))
        assert torch.count_nonzero(z) > 0  # the sequence part is alive: the user is not all there is
        for user in (1, 4):
            expected = F.relu(caser.fc2(torch.cat([z, caser.user_embedding.weight[user][None]], dim=1)))
            torch.testing.assert_close(caser.represent(history, torch.tensor([user])), expected)
        unknown = F.relu(caser.fc2(torch.cat([z, torch.zeros(1, 6)], dim=1)))
        batch = Batch(items=history, lengths=torch.tensor([4]))
        torch.testing.assert_close(caser.score(batch), unknown @ caser.item_embedding.weight.T)
        too_far = Batch(items=history, lengths=torch.tensor([4]), users=torch.tensor([NUM_USERS + 1]))
        torch.testing.assert_close(caser.score(too_far), caser.score(batch))
        assert not torch.allclose(
            caser.represent(history, torch.tensor([1])), caser.represent(history, torch.tensor([4]))
        )


def test_the_unknown_user_row_stays_zero_under_the_loss_and_its_penalty() -> None:
    caser = model(reg_weight=1e-2).train()
    window = Batch(
        items=torch.tensor([[3, 5, 7], [4, 6, 0]]),
        lengths=torch.tensor([3, 2]),
        targets=torch.tensor([[5, 7, 2], [6, 8, 0]]),
        users=torch.tensor([0, NUM_USERS + 4]),  # both read row 0
    )
    caser.loss(window).backward()
    gradient = caser.user_embedding.weight.grad
    assert torch.count_nonzero(gradient[0]) == 0 and torch.count_nonzero(gradient[1:]) > 0  # rows 1.. by the penalty


def test_initialisation_is_recbole_s() -> None:
    seed_everything(0)
    caser = Caser(
        resolve_config(get_method("caser"), {"max_seq_length": 10}),
        DataSpec(num_items=3000, max_seq_length=10, num_users=2000),
    )
    for table in (caser.item_embedding, caser.user_embedding):
        assert abs(table.weight[1:].std().item() - 1 / 64) < 0.02 / 64  # normal(0, 1 / d)
    assert torch.count_nonzero(caser.item_embedding.weight[0]) > 0  # the padding item row too
    assert torch.count_nonzero(caser.user_embedding.weight[0]) == 0  # the unknown user: zero
    for layer in (caser.fc1, caser.fc2):
        fan_out, fan_in = layer.weight.shape
        std = math.sqrt(2.0 / (fan_in + fan_out))
        assert abs(layer.weight.std().item() - std) < 0.1 * std and torch.count_nonzero(layer.bias) == 0
    assert caser.fc1.in_features == 4 * 64 + 8 * 10 and caser.fc2.in_features == 128
    assert [conv.kernel_size for conv in caser.conv_h] == [(h, 64) for h in range(1, 11)]
    assert caser.conv_v.kernel_size == (10, 1) and caser.conv_v.out_channels == 4
    bound = 1 / math.sqrt(10)  # PyTorch's default for conv_v: fan_in = 1 x L x 1
    assert caser.conv_v.weight.abs().max() <= bound


def test_dropout_acts_on_the_convolution_outputs_in_training_only() -> None:
    caser = model(dropout_prob=0.5)
    batch = Batch(items=torch.tensor([[3, 5, 7]]), lengths=torch.tensor([3]), users=torch.tensor([1]))
    with torch.no_grad():
        caser.eval()
        assert torch.equal(caser.score(batch), caser.score(batch))
        caser.train()
        torch.manual_seed(1)
        assert not torch.equal(caser.score(batch), caser.score(batch))


def test_training_on_a_toy_task_lowers_the_loss_and_beats_chance(toy_dataset, tmp_path: Path) -> None:
    # RecBole's normal(0, 1 / d) embeddings start small: the loss barely moves for the first epochs
    overrides = {
        "embedding_size": 16,
        "max_seq_length": 5,
        "epochs": 20,
        "patience": 20,
        "train_batch_targets": 64,
        "learning_rate": 0.01,
    }
    result = run_experiment(
        "caser", "toy", seed=3, overrides=[overrides], runs_dir=tmp_path, device="cpu", show_progress=False
    )
    losses = [entry["loss"] for entry in result.run.log]
    assert len(losses) == 20 and losses[-1] < 0.6 * losses[0]
    assert result.run.metrics["test"]["hr@5"] > 2 * 5 / toy_dataset.num_items  # chance: 5 of 30 items


def random_windows(generator: torch.Generator, count: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, width) right-padded item windows with random lengths 1..width (one of full width)."""
    lengths = torch.randint(1, width + 1, (count,), generator=generator)
    lengths[0] = width
    items = torch.randint(1, NUM_ITEMS + 1, (count, width), generator=generator)
    return items * (torch.arange(width) < lengths[:, None]), lengths


def test_the_horizontal_branch_of_prefixes_equals_the_convolutions_on_each_padded_history() -> None:
    """The shared-window computation (training) against the direct convolutions, values and gradients."""
    generator = torch.Generator().manual_seed(5)
    for length, width in [(4, 4), (7, 5), (12, 12), (12, 3)]:
        seed_everything(length + width)
        config = resolve_config(get_method("caser"), {"embedding_size": 5, "max_seq_length": length, "nh": 3})
        caser = Caser(config, DataSpec(num_items=NUM_ITEMS, max_seq_length=length, num_users=NUM_USERS))
        windows, lengths = random_windows(generator, 6, width)
        rows, positions = (windows > 0).nonzero(as_tuple=True)  # every prefix of every window
        histories = caser.recent(windows[rows], positions + 1)
        assert (histories[:, width:] == 0).all()  # right-padded with item 0, as RecBole's input
        direct = caser.horizontal(caser.item_embedding(histories).unsqueeze(1))
        shared = caser.horizontal_of_prefixes(windows, rows, positions + 1)
        torch.testing.assert_close(shared, direct, rtol=1e-5, atol=1e-6)
        weights = [caser.item_embedding.weight, caser.conv_h[0].weight, caser.conv_h[-1].weight, caser.conv_h[1].bias]
        upstream = torch.randn(direct.shape, generator=generator)
        expected = torch.autograd.grad((direct * upstream).sum(), weights)
        got = torch.autograd.grad((shared * upstream).sum(), weights)
        for name, a, b in zip(["items", "height 1", f"height {length}", "bias"], got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        assert torch.count_nonzero(got[0][0]) == 0  # the padding row gets no gradient as an input


def test_a_batch_mixing_window_lengths_gives_the_loss_and_gradients_of_the_convolutions() -> None:
    """Random batches (windows of many lengths, padded to the longest) are split by length for the
    shared-window computation; the loss and every gradient equal the direct convolutions'."""
    generator = torch.Generator().manual_seed(11)
    short, short_lengths = random_windows(generator, 299, 4)  # 700+ targets: several groups
    windows = torch.cat([torch.randint(1, NUM_ITEMS + 1, (1, 10), generator=generator), F.pad(short, (0, 6))])
    lengths = torch.cat([torch.tensor([10]), short_lengths])
    assert len(lengths.unique()) == 5 and 4 * (lengths**2).sum() < 300 * 10**2  # the batch is split
    targets = torch.randint(1, NUM_ITEMS + 1, windows.shape, generator=generator) * (windows > 0)
    batch = Batch(items=windows, lengths=lengths, targets=targets, users=torch.arange(300) % NUM_USERS + 1)
    caser = model(max_seq_length=10, embedding_size=5, nh=2, reg_weight=0.0).eval()
    rows, positions = (targets > 0).nonzero(as_tuple=True)
    histories = caser.recent(windows[rows], positions + 1)
    logits = caser.represent(histories, batch.users[rows]) @ caser.item_embedding.weight.T  # convolutions
    expected_loss = F.cross_entropy(logits, targets[rows, positions])
    expected = torch.autograd.grad(expected_loss, list(caser.parameters()), allow_unused=True)
    loss = caser.loss(batch)
    got = torch.autograd.grad(loss, list(caser.parameters()), allow_unused=True)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    for (name, _), a, b in zip(caser.named_parameters(), got, expected, strict=True):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0, name
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_short_and_long_scored_histories_take_their_paths_and_equal_the_convolutions() -> None:
    seed_everything(3)
    length = 20  # lengths 1..20 cover every group (2, 4, 8, 16) and the direct path (17..20)
    config = resolve_config(get_method("caser"), {"embedding_size": 5, "max_seq_length": length, "nh": 2})
    caser = Caser(config, DataSpec(num_items=NUM_ITEMS, max_seq_length=length, num_users=NUM_USERS)).eval()
    generator = torch.Generator().manual_seed(9)
    windows, _ = random_windows(generator, 40, length)
    lengths = torch.arange(1, 41).remainder(length) + 1
    windows = windows.masked_fill(torch.arange(length) >= lengths[:, None], 0)
    with torch.no_grad():
        direct = caser.horizontal(caser.item_embedding(windows).unsqueeze(1))
        torch.testing.assert_close(caser.horizontal_of_histories(windows, lengths), direct, rtol=1e-5, atol=1e-6)
        batch = Batch(items=windows, lengths=lengths, users=torch.arange(40) % NUM_USERS + 1)
        expected = caser.represent(windows, batch.users) @ caser.item_embedding.weight.T
        torch.testing.assert_close(caser.score(batch), expected, rtol=1e-5, atol=1e-6)


def test_the_loss_gradient_is_bitwise_repeatable_on_several_threads() -> None:
    """The shared-window computation adds nothing up in a thread-dependent order (resumed runs must
    continue bit-identically): four backward passes on two threads give the same bits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generator = torch.Generator().manual_seed(1)
        windows, lengths = random_windows(generator, 40, 12)
        targets = torch.randint(1, NUM_ITEMS + 1, windows.shape, generator=generator) * (windows > 0)
        batch = Batch(items=windows, lengths=lengths, targets=targets, users=torch.arange(40) % NUM_USERS + 1)
        gradients = []
        for _ in range(4):
            caser = model(max_seq_length=12, embedding_size=16, nh=4, dropout_prob=0.0)
            caser.loss(batch).backward()
            gradients.append(torch.cat([p.grad.flatten() for p in caser.parameters() if p.grad is not None]))
        for other in gradients[1:]:
            assert torch.equal(other, gradients[0])
    finally:
        torch.set_num_threads(threads)

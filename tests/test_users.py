"""User ids on the data path: training windows, evaluation and search batches, DataSpec, unknown users."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recbench.method import Batch, DataSpec, Method, MethodConfig
from recbench.registry import get_method, resolve_config
from recbench.runs.batching import TrainingWindows
from recbench.runs.evaluate import Evaluator
from recbench.runs.experiment import build_method, valid_batches
from recbench.runs.protocols import BUILTIN, Protocol
from tests.conftest import make_cyclic_dataset


def test_every_training_window_carries_the_id_of_the_user_it_comes_from() -> None:
    # long sequences and a short window: users with several windows, batches mixing users
    dataset = make_cyclic_dataset(users=25, min_len=3, max_len=40, noise=0.5)
    windows = TrainingWindows(*dataset.train_sequences(), window=6)
    seen = set()
    for bucket in (True, False):
        for batch in windows.batches(32, np.random.default_rng(0), bucket_by_length=bucket):
            assert batch.users is not None and batch.users.dtype == torch.long and batch.users.shape == (batch.size,)
            for row in range(batch.size):
                user = int(batch.users[row]) - 1  # ids are dataset positions + 1
                length = int(batch.lengths[row])
                window = np.concatenate([batch.items[row, :length].numpy(), batch.targets[row, length - 1 : length]])
                training_part = dataset.sequence(user)[:-2]
                # the window (inputs then its last target) is a contiguous piece of that user's training part
                assert any(
                    np.array_equal(training_part[s : s + length + 1], window)
                    for s in range(len(training_part) - length)
                ), (user, window)
                seen.add(user)
    with_targets = {u for u in range(dataset.num_users) if dataset.lengths[u] - 2 >= 2}  # one training item: none
    assert seen == with_targets and len(with_targets) < dataset.num_users


class UserTable(Method):
    """Scores from a fixed (users + 1) x (items + 1) table, row ``Batch.users``: ranks tell which users it got."""

    needs_users = True

    def __init__(self, table: torch.Tensor) -> None:
        spec = DataSpec(num_items=table.shape[1] - 1, max_seq_length=50, num_users=table.shape[0] - 1)
        super().__init__(MethodConfig(), spec)
        self.table = table

    def loss(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - never trained
        raise AssertionError

    def score(self, batch: Batch) -> torch.Tensor:
        return self.table[self.user_rows(batch)].clone()


PROTOCOLS = {**BUILTIN, "uniform5": Protocol(name="uniform5", negatives=5, sampler="uniform")}  # 30 toy items


@pytest.mark.parametrize("protocol", ["full", "full-masked", "uniform5"])
def test_the_evaluator_gives_each_history_its_user(toy_dataset, protocol: str) -> None:
    rng = np.random.default_rng(3)
    shape = (toy_dataset.num_users + 1, toy_dataset.num_items + 1)
    table = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    table[0] = 0  # the unknown user scores every item alike: any mix-up shows as worst ranks
    batches_of_7 = Evaluator(toy_dataset, "test", max_history=50, batch_size=7, protocol=PROTOCOLS[protocol])
    one_batch = Evaluator(toy_dataset, "test", max_history=50, batch_size=1000, protocol=PROTOCOLS[protocol])
    ranks = batches_of_7.run(UserTable(table)).ranks
    assert ranks.tolist() == one_batch.run(UserTable(table)).ranks.tolist()
    _, _, targets = toy_dataset.eval_examples("test", 50)
    if protocol == "full":
        # pessimistic rank: the items 1..N scoring at least the target's score, the target included
        expected = [int((table[u + 1, 1:] >= table[u + 1, targets[u]]).sum()) for u in range(toy_dataset.num_users)]
        assert ranks.tolist() == expected
    unknown = Evaluator(toy_dataset, "test", max_history=50, protocol=PROTOCOLS[protocol])
    for entry in unknown.batches:  # the same batches without their users: the unknown user everywhere
        entry[3].zero_()
    assert (unknown.run(UserTable(table)).ranks > ranks).mean() > 0.5


def test_valid_batches_carry_the_user_of_each_history() -> None:
    dataset = make_cyclic_dataset(users=23, min_len=3, max_len=15)
    histories, lengths, targets = dataset.eval_examples("valid", 8)
    seen = []
    for batch in valid_batches(dataset, 8, 5, seed=1):
        for row in range(batch.size):
            user = int(batch.users[row]) - 1
            length = int(batch.lengths[row])
            assert length == lengths[user]
            assert batch.items[row, :length].tolist() == histories[user, :length].tolist()
            assert int(batch.targets[row, length - 1]) == targets[user]
            seen.append(user)
    assert sorted(seen) == list(range(dataset.num_users))


def test_batch_to_moves_the_users_and_keeps_none() -> None:
    batch = Batch(items=torch.ones(2, 3, dtype=torch.long), lengths=torch.tensor([3, 1]), users=torch.tensor([4, 9]))
    moved = batch.to("meta")
    assert moved.users is not None and moved.users.device.type == "meta" and moved.items.device.type == "meta"
    assert Batch(items=batch.items, lengths=batch.lengths).to("meta").users is None


def test_build_method_tells_the_method_the_number_of_users() -> None:
    dataset = make_cyclic_dataset(users=17)
    entry = get_method("sasrec")
    method = build_method(entry, resolve_config(entry, {"hidden_size": 8, "inner_size": 8}), dataset)
    assert method.spec.num_users == 17


def test_user_rows_keep_known_ids_and_send_the_rest_to_the_unknown_row() -> None:
    method = UserTable(torch.zeros(6, 4))  # users 1..5
    items, lengths = torch.ones(6, 2, dtype=torch.long), torch.full((6,), 2)
    users = torch.tensor([1, 5, 0, 6, -1, 3])
    rows = method.user_rows(Batch(items=items, lengths=lengths, users=users))
    assert rows.tolist() == [1, 5, 0, 0, 0, 3]
    assert method.user_rows(Batch(items=items, lengths=lengths)).tolist() == [0] * 6
    nobody = UserTable(torch.zeros(1, 4))  # a DataSpec that knows no users: every id is unknown
    assert nobody.user_rows(Batch(items=items, lengths=lengths, users=users)).tolist() == [0] * 6

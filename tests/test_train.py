"""The Trainer: early stopping as RecBole, determinism, resume after an interruption."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from recbench.errors import RunError
from recbench.registry import get_method, method_names, resolve_config
from recbench.runs.experiment import run_experiment
from recbench.runs.record import RunRecord
from recbench.runs.trainer import EarlyStopping, Trainer

TINY = {
    "hidden_size": 16,
    "inner_size": 16,
    "max_seq_length": 10,
    "epochs": 6,
    "patience": 2,
    "train_batch_targets": 64,
    "learning_rate": 0.01,
}


def test_early_stopping_counts_ties_as_improvements_and_stops_after_patience_plus_one() -> None:
    stopping = EarlyStopping(patience=2)
    history = [0.1, 0.2, 0.2, 0.1, 0.15, 0.19, 0.3]
    stopped_at = None
    for epoch, value in enumerate(history):
        stopping.update(value, epoch)
        if stopping.should_stop:
            stopped_at = epoch
            break
    assert stopping.best_epoch == 2  # the tie at epoch 2 replaced epoch 1
    assert stopped_at == 5  # three non-improving epochs (3, 4, 5) exceed patience 2


def train_toy(runs_dir: Path, **kwargs) -> RunRecord:
    result = run_experiment(
        "sasrec", "toy", seed=5, overrides=[TINY], runs_dir=runs_dir, device="cpu", show_progress=False, **kwargs
    )
    return result.run


@contextlib.contextmanager
def interrupted_at_epoch(epoch: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside the block, training raises KeyboardInterrupt when it reaches ``epoch`` (as Ctrl-C would)."""
    original = Trainer._train_epoch

    def interrupt(self, current, progress, task):
        if current == epoch:
            raise KeyboardInterrupt
        return original(self, current, progress, task)

    monkeypatch.setattr(Trainer, "_train_epoch", interrupt)
    try:
        yield
    finally:
        monkeypatch.setattr(Trainer, "_train_epoch", original)


def test_same_seed_gives_the_same_metrics(toy_dataset, tmp_path: Path) -> None:
    first = train_toy(tmp_path / "a")
    second = train_toy(tmp_path / "b")
    assert first.metrics["test"] == second.metrics["test"]
    assert np.array_equal(first.ranks("test"), second.ranks("test"))


def test_resume_after_an_interruption_gives_the_same_result(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = train_toy(tmp_path / "straight")

    with interrupted_at_epoch(3, monkeypatch), pytest.raises(KeyboardInterrupt):
        train_toy(tmp_path / "interrupted")

    run = RunRecord(next((tmp_path / "interrupted").rglob("checkpoint.pt")).parent)
    assert not run.is_finished and len(run.log) == 3
    with pytest.raises(RunError, match="--resume"):
        train_toy(tmp_path / "interrupted")
    resumed = train_toy(tmp_path / "interrupted", resume=True)
    assert resumed.metrics["test"] == reference.metrics["test"]
    assert [e["loss"] for e in resumed.log] == [e["loss"] for e in reference.log]


def test_a_finished_run_is_reused_not_retrained(toy_dataset, tmp_path: Path) -> None:
    first = run_experiment(
        "sasrec", "toy", seed=5, overrides=[TINY], runs_dir=tmp_path, device="cpu", show_progress=False
    )
    again = run_experiment(
        "sasrec", "toy", seed=5, overrides=[TINY], runs_dir=tmp_path, device="cpu", show_progress=False
    )
    assert not first.reused and again.reused and again.run.path == first.run.path


def test_a_run_on_a_share_of_the_users_can_be_evaluated_again(toy_dataset, tmp_path: Path) -> None:
    from recbench.data.dataset import load_run_dataset
    from recbench.errors import DataError
    from recbench.runs.experiment import evaluate_run

    share = toy_dataset.subsample_users(0.5, seed=11)
    result = run_experiment(
        "sasrec",
        share.name,
        dataset=share,
        seed=5,
        overrides=[TINY],
        runs_dir=tmp_path,
        device="cpu",
        show_progress=False,
    )
    record = result.run.config
    assert record["dataset"] == "toy@0.5" and record["subsample"] == {"fraction": 0.5, "seed": 11}
    assert load_run_dataset(record).user_ids == share.user_ids  # drawn again, not read from disk
    again = evaluate_run(result.run.path, protocol="full")  # "toy@0.5" is not a saved dataset
    assert again.metrics == pytest.approx(result.run.metrics["test"])
    with pytest.raises(DataError, match="does not record how it was drawn"):
        load_run_dataset({k: v for k, v in record.items() if k != "subsample"})


def test_training_flushes_denormal_floats_and_switches_the_mode_back_off(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from recbench_plugins.sasrec import SASRec

    def denormal_survives() -> bool:
        return torch.tensor([1e-320], dtype=torch.float64).item() != 0.0  # 1e-320 is a float64 denormal

    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    torch.set_flush_denormal(False)
    seen: list[bool] = []
    original = SASRec.loss

    def recording(self, batch):
        seen.append(denormal_survives())
        return original(self, batch)

    monkeypatch.setattr(SASRec, "loss", recording)
    assert denormal_survives()
    train_toy(tmp_path)
    assert seen and not any(seen)  # flushed in every training step
    assert denormal_survives()  # and back to PyTorch's default afterwards


def test_run_record_holds_config_log_best_weights_metrics_and_ranks(toy_dataset, tmp_path: Path) -> None:
    import torch

    run = train_toy(tmp_path)
    config = run.config
    assert config["method"] == "sasrec" and config["seed"] == 5 and config["fingerprint"] == toy_dataset.fingerprint
    assert config["config"]["hidden_size"] == 16 and "torch" in config["versions"]
    assert config["versions"]["torch_threads"] == torch.get_num_threads()  # float sums, hence digits, depend on it
    assert len(run.log) >= 1 and "ndcg@10" in run.log[0]["valid"]
    state = torch.load(run.path / "best.pt", weights_only=True)
    assert "item_embedding.weight" in state
    assert run.ranks("test").dtype == np.int32 and len(run.ranks("test")) == toy_dataset.num_users
    assert run.recomputed_metrics("test") == pytest.approx(run.metrics["test"])


def test_training_learns_the_toy_task(toy_dataset, tmp_path: Path) -> None:
    run = train_toy(tmp_path)
    # Next item = current + 1 (90% of steps): far above the 10/30 a random ranking would give.
    assert run.metrics["test"]["hr@10"] > 0.6


def test_unfinished_run_is_not_read_as_finished(tmp_path: Path) -> None:
    run = RunRecord(tmp_path / "r")
    run.write_config({"method": "sasrec"})
    with pytest.raises(RunError, match="unfinished"):
        run.ranks("test")


def test_pretraining_runs_once_on_the_union_and_fine_tuning_starts_from_it(recbench_home, tmp_path: Path) -> None:
    import torch

    from recbench.data.dataset import load_dataset, save_dataset, union_of
    from tests.conftest import make_cyclic_dataset

    for name, seed in (("src-a", 1), ("src-b", 2), ("target", 3)):
        save_dataset(make_cyclic_dataset(name, items=20, seed=seed))
    small = {
        "item_size": 8,
        "semantic_hidden_size": 8,
        "inner_size": 8,
        "max_seq_length": 8,
        "epochs": 2,
        "pretrain_epochs": 2,
    }
    union = union_of([load_dataset("src-b"), load_dataset("src-a")])
    assert (
        union.num_items == 40
        and union.item_ids[0] == "src-a-i0"
        and union.manifest["union"]["item_ranges"] == [[1, 20], [21, 40]]
    )

    def train(seed: int = 1, **kwargs):
        return run_experiment(
            "idasr",
            "target",
            seed=seed,
            overrides=[small],
            runs_dir=tmp_path,
            device="cpu",
            show_progress=False,
            pretrain_on=["src-a", "src-b"],
            **kwargs,
        )

    first = train()
    pretrain_runs = [p.parent for p in (tmp_path / "_pretrain").rglob("best.pt")]
    assert len(pretrain_runs) == 1 and len(RunRecord(pretrain_runs[0]).log) == 2
    assert first.run.config["pretrained"] == pretrain_runs[0].name
    mtime = (pretrain_runs[0] / "best.pt").stat().st_mtime
    with_id = run_experiment(
        "idasr-id",
        "target",
        seed=1,
        overrides=[small],
        runs_dir=tmp_path,
        device="cpu",
        show_progress=False,
        pretrain_on=["src-a", "src-b"],
    )
    assert [
        p.parent for p in (tmp_path / "_pretrain").rglob("best.pt")
    ] == pretrain_runs  # t and t+ID share pre-training
    assert (pretrain_runs[0] / "best.pt").stat().st_mtime == mtime
    pretrained = torch.load(pretrain_runs[0] / "best.pt", weights_only=True)
    from recbench.registry import get_method, resolve_config
    from recbench.runs.experiment import build_method

    entry = get_method("idasr")
    model = build_method(entry, resolve_config(entry, small), load_dataset("target"))
    skipped = model.load_pretrained(pretrained)
    assert skipped == []  # IDA-SR (text only) transfers every weight
    torch.testing.assert_close(
        model.encoder.state_dict()["attention.0.query.weight"], pretrained["encoder.attention.0.query.weight"]
    )
    from recbench.runs.record import find_runs

    assert sorted(r.path for r in find_runs(tmp_path)) == sorted(
        [first.run.path, with_id.run.path]
    )  # pre-training runs are not results

    second_seed = train(seed=2, pretrain_seed=1)  # a new fine-tuning seed from the same checkpoint
    assert [p.parent for p in (tmp_path / "_pretrain").rglob("best.pt")] == pretrain_runs
    assert second_seed.run.config["pretrained"] == pretrain_runs[0].name and second_seed.run.path != first.run.path
    own_pretraining = train(seed=2)  # without pretrain_seed, the seed pre-trains anew
    assert own_pretraining.run.config["pretrained"] != pretrain_runs[0].name
    assert len(list((tmp_path / "_pretrain").rglob("best.pt"))) == 2


@pytest.mark.parametrize("interrupt_at", [1, 3])  # inside VQ-Rec's permutation epochs, and after the table was written
def test_a_method_with_a_training_schedule_resumes_to_the_same_result(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt_at: int
) -> None:
    schedule = {**TINY, "code_dim": 4, "code_cap": 8, "reassign_steps": 2, "epochs": 5, "patience": 10}

    def train(runs_dir: Path, **kwargs) -> RunRecord:
        return run_experiment(
            "vqrec", "toy", seed=5, overrides=[schedule], runs_dir=runs_dir, device="cpu", show_progress=False, **kwargs
        ).run

    reference = train(tmp_path / "straight")
    with interrupted_at_epoch(interrupt_at, monkeypatch), pytest.raises(KeyboardInterrupt):
        train(tmp_path / "interrupted")
    resumed = train(tmp_path / "interrupted", resume=True)
    assert [e["loss"] for e in resumed.log] == [e["loss"] for e in reference.log]
    assert resumed.metrics["test"] == reference.metrics["test"]
    best = resumed.load_best()
    assert int(best["phase"]) == 2  # the permuted table was written once, at epoch 2


PRETRAINING_METHODS = sorted(
    {entry.cls.name for entry in map(get_method, method_names()) if entry.cls.supports_pretraining}
)


@pytest.mark.parametrize("name", PRETRAINING_METHODS)
def test_interrupted_pretraining_continues_to_bit_identical_weights(
    name: str, recbench_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pre-training (random augmentations included) restarts from its checkpoint, and the same seed gives the same
    weights."""
    import torch

    from recbench.data.dataset import save_dataset
    from recbench.runs.experiment import pretrain
    from tests.conftest import make_cyclic_dataset
    from tests.test_contract import small_config

    def small_text_embeddings(dataset, spec, **kwargs) -> tuple[np.ndarray, bool]:
        # 12-d stand-ins for the 384-d encoder: VQ-Rec's OPQ then trains in well under a second
        generator = np.random.default_rng(round(spec.word_drop * 100))
        table = generator.standard_normal((dataset.num_items + 1, 12), dtype=np.float32)
        table[0] = 0
        return table, True

    monkeypatch.setattr("recbench.data.encode.item_embeddings", small_text_embeddings)
    save_dataset(make_cyclic_dataset("src", items=20, seed=1))
    entry = get_method(name)
    config = resolve_config(entry, small_config(name), {"pretrain_epochs": 3, "pretrain_batch_targets": 64})

    def pretrained(runs_dir: Path) -> RunRecord:
        return pretrain(entry, config, ["src"], seed=1, runs_dir=runs_dir, device="cpu", show_progress=False)

    straight = pretrained(tmp_path / "straight")
    with interrupted_at_epoch(1, monkeypatch), pytest.raises(KeyboardInterrupt):
        pretrained(tmp_path / "interrupted")
    (checkpoint,) = (tmp_path / "interrupted").rglob("checkpoint.pt")
    assert len(RunRecord(checkpoint.parent).log) == 1  # the epoch before the interruption is kept
    resumed = pretrained(tmp_path / "interrupted")
    assert [e["loss"] for e in resumed.log] == [e["loss"] for e in straight.log] and len(straight.log) == 3
    expected, actual = straight.load_best(), resumed.load_best()
    assert expected.keys() == actual.keys()
    assert [key for key in expected if not torch.equal(expected[key], actual[key])] == []


def test_pretraining_uses_its_own_learning_rate_and_batch_size(toy_dataset, tmp_path: Path) -> None:
    """The Trainer's pre-training reads pretrain_learning_rate / pretrain_batch_targets, fine-tuning the others."""
    import torch

    from recbench.method import DataSpec
    from recbench.runs.batching import TrainingWindows

    entry = get_method("idasr")
    small = {"item_size": 8, "semantic_hidden_size": 8, "inner_size": 8, "max_seq_length": 8}
    keys = {"learning_rate": 0.01, "train_batch_targets": 16, "pretrain_learning_rate": 0.004}
    config = resolve_config(entry, small, {**keys, "pretrain_batch_targets": 64, "pretrain_epochs": 1, "epochs": 1})
    text = torch.randn(toy_dataset.num_items + 1, 12, generator=torch.Generator().manual_seed(0))
    spec = DataSpec(toy_dataset.num_items, config.max_seq_length, item_text_embeddings=text)
    sizes: dict[bool, list[int]] = {}
    original = TrainingWindows.batches

    def recorded(self, targets_per_batch, rng, bucket_by_length=True):
        batches = original(self, targets_per_batch, rng, bucket_by_length)
        sizes[pretraining] = [targets_per_batch, *(int((b.targets > 0).sum()) for b in batches)]
        return batches

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainingWindows, "batches", recorded)
        for pretraining, lr in ((True, 0.004), (False, 0.01)):
            record = RunRecord(tmp_path / f"pretrain-{pretraining}")
            trainer = Trainer(
                entry.cls(config, spec), toy_dataset, config, record, seed=0, show_progress=False, pretrain=pretraining
            )
            assert [group["lr"] for group in trainer.optimizer.param_groups] == [lr]
            trainer.fit()
    (pretrain_size, *pretrain_batches), (tune_size, *tune_batches) = sizes[True], sizes[False]
    assert (pretrain_size, tune_size) == (64, 16)
    assert max(pretrain_batches) <= 64 and max(pretrain_batches) > 16 and max(tune_batches) <= 16
    assert len(pretrain_batches) < len(tune_batches)


def test_fine_tuning_keys_do_not_split_the_pretraining_run(
    recbench_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two fine-tunings differing only in learning rate (or batch, epochs, patience) reuse one pre-training run;
    a pre-training key makes another."""
    from recbench.data.dataset import save_dataset
    from tests.conftest import make_cyclic_dataset

    def small_text_embeddings(dataset, spec, **kwargs) -> tuple[np.ndarray, bool]:
        table = np.random.default_rng(0).standard_normal((dataset.num_items + 1, 12), dtype=np.float32)
        table[0] = 0
        return table, True

    monkeypatch.setattr("recbench.data.encode.item_embeddings", small_text_embeddings)
    for name, seed in (("src", 1), ("target", 2)):
        save_dataset(make_cyclic_dataset(name, items=20, seed=seed))
    small = {"item_size": 8, "semantic_hidden_size": 8, "inner_size": 8, "max_seq_length": 8, "epochs": 1}
    small |= {"pretrain_epochs": 1, "pretrain_batch_targets": 64}

    def train(**settings):
        return run_experiment(
            "idasr",
            "target",
            seed=1,
            overrides=[small, settings],
            runs_dir=tmp_path,
            device="cpu",
            show_progress=False,
            pretrain_on=["src"],
        ).run

    def pretraining_runs() -> list[Path]:
        return sorted(p.parent for p in (tmp_path / "_pretrain").rglob("best.pt"))

    first = train()
    (shared,) = pretraining_runs()
    written = (shared / "best.pt").stat().st_mtime_ns
    tuned = train(learning_rate=0.003, train_batch_targets=32, epochs=2, patience=1, eval_batch_size=8)
    assert tuned.path != first.path and tuned.config["pretrained"] == first.config["pretrained"] == shared.name
    assert pretraining_runs() == [shared] and (shared / "best.pt").stat().st_mtime_ns == written
    recorded = RunRecord(shared).config["config"]
    assert recorded["pretrain_learning_rate"] == 1e-3 and recorded["learning_rate"] == 1e-3  # the default, not 0.003
    other = train(pretrain_learning_rate=0.003)
    assert other.config["pretrained"] != shared.name and len(pretraining_runs()) == 2

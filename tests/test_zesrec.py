"""ZESRec (contract checks: tests/test_contract.py): the item MLP, the variants, and a zero-shot run that
evaluates the pre-trained model untouched, scoring target-only items by their text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recbench.data.dataset import save_dataset
from recbench.errors import ConfigError, RecbenchError
from recbench.layers import causal_mask
from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.experiment import build_method, evaluate_run, run_experiment
from recbench.runs.record import RunRecord
from recbench.runs.trainer import seed_everything
from recbench_plugins.zesrec import ZESRec
from tests.baseline_checks import NUM_ITEMS, TEXT_SIZE, text_table
from tests.conftest import make_cyclic_dataset

TINY = {"hidden_size": 12, "inner_size": 16, "max_seq_length": 10}


def model(text: torch.Tensor | None = None, name: str = "zesrec-ft", **overrides) -> ZESRec:
    seed_everything(0)
    config = resolve_config(get_method(name), TINY, overrides)
    text = text_table() if text is None else text
    return ZESRec(config, DataSpec(num_items=text.shape[0] - 1, max_seq_length=10, item_text_embeddings=text))


def test_the_variants_share_one_pretraining_config_and_zero_shot_trains_nothing() -> None:
    zero_shot, tuned = (resolve_config(get_method(name), TINY) for name in ("zesrec", "zesrec-ft"))
    assert (zero_shot.zero_shot, zero_shot.epochs) == (True, 0) and (tuned.zero_shot, tuned.epochs) == (False, 300)
    assert ZESRec.pretraining_config(zero_shot) == ZESRec.pretraining_config(tuned)
    with pytest.raises(ConfigError, match="epochs must be 0"):
        resolve_config(get_method("zesrec"), {"epochs": 3})


def test_items_are_their_text_through_a_two_layer_mlp_without_activation_by_default() -> None:
    zesrec = model().eval()
    first, second = zesrec.adapter[0], zesrec.adapter[2]
    assert isinstance(zesrec.adapter[1], torch.nn.Identity)
    assert isinstance(model(mlp_activation="relu").adapter[1], torch.nn.ReLU)
    batch = Batch(items=torch.tensor([[3, 7, 1, 0], [5, 6, 2, 9]]), lengths=torch.tensor([3, 4]))
    with torch.no_grad():
        table = (zesrec.text @ first.weight.T + first.bias) @ second.weight.T + second.bias
        inputs = table[batch.items] + zesrec.position_embedding.weight[:4]
        hidden = zesrec.encoder(zesrec.norm(inputs), causal_mask(batch.items))
        torch.testing.assert_close(zesrec.score(batch), hidden[torch.arange(2), batch.lengths - 1] @ table.T)
        training = Batch(items=batch.items, lengths=batch.lengths, targets=torch.tensor([[7, 1, 4, 0], [6, 2, 9, 11]]))
        has_target = training.targets > 0
        expected = F.cross_entropy(hidden[has_target] @ table.T, training.targets[has_target])
        torch.testing.assert_close(zesrec.loss(training), expected)
        torch.testing.assert_close(zesrec.pretrain_loss(training), expected)
    assert not any(NUM_ITEMS + 1 in p.shape for p in zesrec.parameters())  # nothing item-specific


def test_a_pretrained_state_that_does_not_fit_is_an_error() -> None:
    source = model(text_table(30, TEXT_SIZE + 2))
    with pytest.raises(RecbenchError, match="adapter.0.weight"):
        model().load_pretrained(source.state_dict())
    target = model()
    assert target.load_pretrained(model(text_table(30)).state_dict()) == []  # another catalogue: fine


def test_zero_shot_evaluates_the_pretrained_model_untouched_and_scores_target_items_by_text(
    recbench_home: Path,
) -> None:
    save_dataset(make_cyclic_dataset("source", items=30, seed=0))
    target = make_cyclic_dataset("target", items=20, seed=1)
    save_dataset(target)
    runs = recbench_home / "runs"
    result = run_experiment(
        "zesrec",
        "target",
        overrides=[{**TINY, "pretrain_epochs": 2}],
        runs_dir=runs,
        device="cpu",
        show_progress=False,
        pretrain_on=["source"],
    )
    assert result.fit.epochs_run == 0 and not result.fit.trained and result.run.log == []
    (status,) = (runs / "_pretrain").rglob("status.json")
    pretrained = RunRecord(status.parent).load_best()
    best = result.run.load_best()
    assert best.keys() == pretrained.keys() and all(torch.equal(best[k], pretrained[k]) for k in best)
    # no target interaction reached the weights; the target items (none of them a source item) are
    # scored through their own text: the model rebuilt on the target scores as the run did, and a
    # target item given another's text takes its score
    zesrec = build_method(get_method("zesrec"), resolve_config(get_method("zesrec"), TINY), target)
    zesrec.load_pretrained(pretrained)
    zesrec.eval()
    again = evaluate_run(result.run.path, "test", device="cpu")
    assert again.metrics == result.run.metrics["test"]
    batch = Batch(items=torch.tensor([[1, 2, 3]]), lengths=torch.tensor([3]))
    with torch.no_grad():
        before = zesrec.score(batch)
        zesrec.text[7] = zesrec.text[15]
        after = zesrec.score(batch)
    assert not torch.equal(before[:, 7], before[:, 15]) and torch.equal(after[:, 7], after[:, 15])
    torch.testing.assert_close(after[:, 15], before[:, 15])
    # the fine-tuned variant reuses the same pre-training run and does train on the target
    tuned = run_experiment(
        "zesrec-ft",
        "target",
        overrides=[{**TINY, "pretrain_epochs": 2, "epochs": 1}],
        runs_dir=runs,
        device="cpu",
        show_progress=False,
        pretrain_on=["source"],
    )
    assert tuned.fit.epochs_run == 1 and len(list((runs / "_pretrain").rglob("status.json"))) == 1
    assert not all(torch.equal(tuned.run.load_best()[k], pretrained[k]) for k in pretrained)

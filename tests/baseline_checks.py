"""Independent computations, checks and data shared by the baseline tests (GRU4Rec, GRU4RecF, FPMC and
the text baselines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from recbench.data.dataset import Dataset
from recbench.runs.experiment import run_experiment

NUM_ITEMS = 20
TEXT_SIZE = 6


def text_table(num_items: int = NUM_ITEMS, size: int = TEXT_SIZE) -> torch.Tensor:
    """A fixed random (num_items + 1, size) item-text table, row 0 (padding) zero."""
    text = torch.randn(num_items + 1, size, generator=torch.Generator().manual_seed(5))
    text[0] = 0
    return text


def manual_gru(gru: nn.GRU, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The last state of a bias-free GRU after ``inputs``, step by step with the GRU equations (as RecBole's)."""
    for layer in range(gru.num_layers):
        w_ir, w_iz, w_in = getattr(gru, f"weight_ih_l{layer}").chunk(3)  # reset, update, new
        w_hr, w_hz, w_hn = getattr(gru, f"weight_hh_l{layer}").chunk(3)
        h = torch.zeros(gru.hidden_size)
        outputs = []
        for x in inputs:
            r = torch.sigmoid(w_ir @ x + w_hr @ h)
            z = torch.sigmoid(w_iz @ x + w_hz @ h)
            n = torch.tanh(w_in @ x + r * (w_hn @ h))
            h = (1 - z) * n + z * h
            outputs.append(h)
        inputs = outputs
    return inputs[-1]


def assert_learns_the_toy_task(method: str, overrides: dict[str, Any], dataset: Dataset, runs_dir: Path) -> None:
    """8 epochs on the toy data: the loss falls below 60% of its start and test HR@5 beats 3x chance."""
    settings = {"max_seq_length": 10, "epochs": 8, "patience": 8, "train_batch_targets": 64, "learning_rate": 0.01}
    result = run_experiment(
        method, dataset.name, seed=3, overrides=[{**settings, **overrides}], runs_dir=runs_dir, device="cpu",
        show_progress=False,
    )  # fmt: skip
    losses = [entry["loss"] for entry in result.run.log]
    assert len(losses) == 8 and losses[-1] < 0.6 * losses[0]
    assert result.run.metrics["test"]["hr@5"] > 3 * 5 / dataset.num_items  # chance: 5 of the items

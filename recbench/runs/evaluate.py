"""The one Evaluator (docs/protocol.md): leave-one-out, full ranking, per-user ranks, metrics from ranks.

- Candidates: every item 1..N of the dataset; padding (column 0) is excluded.
- History items stay candidates by default (RecBole's protocol for sequential models, behind the
  published tables); ``mask_history=True`` removes them, except the target itself.
- Rank of the held-out item = 1 + #{items scoring higher} + #{other items scoring equal}:
  ties count against the target (pessimistic), so constant scores earn nothing.
- Metrics (:mod:`recbench.runs.metrics`) are computed from the ranks.
"""

from __future__ import annotations

import numpy as np
import torch

from recbench.data.dataset import Dataset, Split
from recbench.method import Batch, Method
from recbench.runs.metrics import DEFAULT_KS, TIE_POLICY, EvalResult, metrics_from_ranks


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N + 1) scores, (B,) targets -> (B,) 1-based pessimistic ranks among items 1..N.

    rank = N - #{items scoring strictly lower}: every tie and every NaN counts against the
    target, and a NaN target score gets the worst rank. ``history`` (B, L), if given, is masked
    out except for the target. ``scores`` may be modified.
    """
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    if history is not None:
        scores.scatter_(1, history, -torch.inf)
        scores.scatter_(1, targets[:, None], target_scores)
    num_items = scores.shape[1] - 1
    return num_items - (scores[:, 1:] < target_scores).sum(dim=1)


class Evaluator:
    """Scores every user's history against all items, in length-sorted batches on the device."""

    def __init__(
        self,
        dataset: Dataset,
        split: Split,
        max_history: int,
        batch_size: int = 2048,
        mask_history: bool = False,
        ks: tuple[int, ...] = DEFAULT_KS,
    ) -> None:
        self.split = split
        self.mask_history = mask_history
        self.ks = ks
        histories, lengths, targets = dataset.eval_examples(split, max_history)
        order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
        self.order = order
        self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            self.batches.append(
                (
                    torch.from_numpy(histories[rows, :width]),
                    torch.from_numpy(lengths[rows]),
                    torch.from_numpy(targets[rows]),
                )
            )
        self.protocol = {
            "split": split,
            "candidates": "all items",
            "num_candidates": dataset.num_items,
            "num_users": dataset.num_users,
            "mask_history": mask_history,
            "ties": TIE_POLICY,
            "max_history": max_history,
        }

    @torch.inference_mode()
    def run(self, method: Method, device: torch.device | str = "cpu") -> EvalResult:
        was_training = method.training
        method.eval()
        ranks = np.empty(len(self.order), dtype=np.int32)
        position = 0
        with method.scoring_pass():
            for items, lengths, targets in self.batches:
                items, lengths, targets = items.to(device), lengths.to(device), targets.to(device)
                scores = method.score(Batch(items=items, lengths=lengths)).float()
                batch_ranks = ranks_from_scores(scores, targets, items if self.mask_history else None)
                ranks[self.order[position : position + len(targets)]] = batch_ranks.cpu().numpy()
                position += len(targets)
        method.train(was_training)
        return EvalResult(self.split, ranks, metrics_from_ranks(ranks, self.ks), dict(self.protocol))

"""The one Evaluator (docs/protocol.md): leave-one-out, per-user ranks under a protocol, metrics from ranks.

- Candidates (:mod:`recbench.runs.protocols`): every item 1..N of the dataset (padding, column 0,
  excluded), or the target and n negatives sampled per user. History items stay candidates unless
  the protocol masks them (the target itself always stays).
- Rank of the held-out item = 1 + #{candidates scoring higher} + #{other candidates scoring equal}
  under pessimistic ties (constant scores earn nothing), + half of them under expected ties; under
  random ties the [best, worst] pair (1 + #higher, 1 + #higher + #tied), each metric then being
  its mean over the ranks between (every order of the tied items equally likely). A NaN score
  counts as higher; a NaN target gets the worst rank.
- Metrics (:mod:`recbench.runs.metrics`) are computed from the ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recbench.data.dataset import Dataset, Split
from recbench.method import Batch, Method
from recbench.runs.metrics import EvalResult, metrics_from_ranks
from recbench.runs.protocols import BUILTIN, DEFAULT_PROTOCOL, Protocol, negatives_digest, negatives_for


def ranks_from_scores(
    scores: torch.Tensor,
    targets: torch.Tensor,
    history: torch.Tensor | None = None,
    ties: str = "pessimistic",
) -> torch.Tensor:
    """(B, N + 1) scores, (B,) targets -> (B,) 1-based ranks of the targets among items 1..N.

    ``history`` (B, L), padded with 0, removes those items from the candidates (except the
    target). Pessimistic ties: rank = #candidates - #{candidates scoring strictly lower}, so every
    tie and every NaN counts against the target and a NaN target gets the worst rank. Expected
    ties count half of the tied candidates (the ranks are then floats); random ties give (B, 2)
    [best, worst] ranks.
    """
    candidates = torch.ones_like(scores, dtype=torch.bool)
    candidates[:, 0] = False
    if history is not None:
        candidates.scatter_(1, history, False)
        candidates[:, 0] = False
        candidates.scatter_(1, targets[:, None], True)
    target_scores = scores.gather(1, targets[:, None])
    return _ranks(scores, target_scores, candidates, ties)


def ranks_from_candidate_scores(scores: torch.Tensor, ties: str = "pessimistic") -> torch.Tensor:
    """(B, 1 + n) scores with the target in column 0 -> (B,) 1-based ranks among the 1 + n candidates
    ((B, 2) [best, worst] under random ties)."""
    candidates = torch.ones_like(scores, dtype=torch.bool)
    return _ranks(scores, scores[:, :1], candidates, ties)


def _ranks(scores: torch.Tensor, target_scores: torch.Tensor, candidates: torch.Tensor, ties: str) -> torch.Tensor:
    total = candidates.sum(dim=1)
    lower = ((scores < target_scores) & candidates).sum(dim=1)
    pessimistic = total - lower
    if ties == "pessimistic":
        return pessimistic
    if ties not in ("expected", "random"):
        raise ValueError(f"unknown tie policy {ties!r}")
    # The target ties with itself (unless NaN): the other tied candidates are one fewer.
    tied_others = ((scores == target_scores) & candidates).sum(dim=1) - (~torch.isnan(target_scores[:, 0])).long()
    if ties == "random":
        return torch.stack([pessimistic - tied_others, pessimistic], dim=1)
    return pessimistic.double() - tied_others.double() / 2


def rank_array(num_users: int, ties: str) -> np.ndarray:
    """An empty array for the ranks of ``num_users`` users under a tie policy: (U,) int32 for
    pessimistic ties, (U,) float64 for expected ones, (U, 2) int32 [best, worst] for random ones."""
    if ties == "random":
        return np.empty((num_users, 2), dtype=np.int32)
    return np.empty(num_users, dtype=np.int32 if ties == "pessimistic" else np.float64)


def protocol_record(
    dataset: Dataset, split: Split, protocol: Protocol, max_history: int, negatives: np.ndarray | None
) -> dict[str, Any]:
    """What is stored with every result: the protocol in full, the sizes its ranks are checked against,
    and the sha256 of the sampled negatives (results are only compared when those agree)."""
    record: dict[str, Any] = {
        "name": protocol.name,
        "definition": protocol.definition(),
        "split": split,
        "candidates": (
            f"target + {protocol.negatives} sampled ({protocol.sampler}, seed {protocol.sample_seed})"
            if protocol.sampled
            else "all items"
        ),
        "num_candidates": protocol.negatives + 1 if protocol.sampled else dataset.num_items,
        "num_users": dataset.num_users,
        "mask_history": protocol.mask_history,
        "ties": protocol.tie_policy(),
        "max_history": max_history,
        "card": protocol.card(),
    }
    if negatives is not None:
        record["negatives_sha256"] = negatives_digest(negatives)
    return record


class Evaluator:
    """Scores every user's history against the protocol's candidates, in length-sorted batches on the device."""

    def __init__(
        self,
        dataset: Dataset,
        split: Split,
        max_history: int,
        batch_size: int = 2048,
        protocol: Protocol | None = None,
    ) -> None:
        protocol = protocol or BUILTIN[DEFAULT_PROTOCOL]
        self.split = split
        self.protocol_spec = protocol
        self.ks = protocol.ks
        histories, lengths, targets = dataset.eval_examples(split, max_history)
        negatives = negatives_for(dataset, split, protocol) if protocol.sampled else None
        order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
        self.order = order
        # items, lengths, targets, user ids (dataset user u is u + 1), then either the (B, 1 + n)
        # candidates or the (B, H) full history to mask
        self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            extra = None
            if negatives is not None:
                extra = torch.from_numpy(
                    np.concatenate([targets[rows, None], negatives[rows]], axis=1).astype(np.int64)
                )
            elif protocol.mask_history:
                extra = torch.from_numpy(full_histories(dataset, split, rows))
            self.batches.append(
                (
                    torch.from_numpy(histories[rows, :width]),
                    torch.from_numpy(lengths[rows]),
                    torch.from_numpy(targets[rows]),
                    torch.from_numpy(rows.astype(np.int64) + 1),
                    extra,
                )
            )
        self.protocol = protocol_record(dataset, split, protocol, max_history, negatives)

    @torch.inference_mode()
    def run(self, method: Method, device: torch.device | str = "cpu") -> EvalResult:
        was_training = method.training
        method.eval()
        spec = self.protocol_spec
        ranks = rank_array(len(self.order), spec.ties)
        position = 0
        with method.scoring_pass():
            for items, lengths, targets, users, extra in self.batches:
                items, lengths, targets = items.to(device), lengths.to(device), targets.to(device)
                batch = Batch(items=items, lengths=lengths, users=users.to(device))
                if spec.sampled:
                    scores = method.score_candidates(batch, extra.to(device)).float()
                    batch_ranks = ranks_from_candidate_scores(scores, spec.ties)
                else:
                    history = extra.to(device) if extra is not None else None
                    batch_ranks = ranks_from_scores(method.score(batch).float(), targets, history, spec.ties)
                ranks[self.order[position : position + len(targets)]] = batch_ranks.cpu().numpy()
                position += len(targets)
        method.train(was_training)
        return EvalResult(self.split, ranks, metrics_from_ranks(ranks, self.ks), dict(self.protocol))


def full_histories(dataset: Dataset, split: Split, rows: np.ndarray) -> np.ndarray:
    """(B, H) every item each user of ``rows`` interacted with before the ``split`` target, padded with 0
    (the model may see only the last max_history of them; masking removes them all)."""
    shift = 1 if split == "test" else 2
    starts = dataset.offsets[rows]
    lengths = dataset.offsets[rows + 1] - shift - starts
    width = max(1, int(lengths.max()))
    columns = np.arange(width)
    index = np.minimum(starts[:, None] + columns[None, :], len(dataset.items) - 1)
    return np.where(columns[None, :] < lengths[:, None], dataset.items[index], 0).astype(np.int64)

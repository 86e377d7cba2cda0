"""Benchmark: how much a trained model's recommendations differ between users (a collapse check).

A model whose sequence encoder ignores its input gives every user nearly the same scores: it
recommends by popularity whatever the history. Accuracy alone does not show why a model is weak;
this does. For each finished run it scores every test user's history over all items, in the
Evaluator's test batches (the last ``max_seq_length`` items before the test item), and prints

- ``coverage@10``: distinct items in all users' top-10 lists, as a share of the catalogue;
- ``shared top-10``: the mean share of a user's top 10 that is also in the top 10 of the mean
  score vector (1 when every user gets the same list);
- ``score correlation``: the mean Pearson correlation between two users' score vectors over
  ``--pairs`` random pairs of users (1 when the scores do not depend on the user).

Run directories are those of ``recbench train`` and the benchmark scripts; the run's dataset must
be in ``RECBENCH_HOME``.

    python benchmarks/recommendation_spread.py RUN_DIR [RUN_DIR ...] [--pairs 2000] [--subsample-seed 2020]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def user_scores(run_dir: Path, subsample_seed: int) -> tuple[str, np.ndarray]:
    """(method name, (U, N) float32 test scores of every user over items 1..N) of a finished run.

    A run on a share of a dataset's users (``NAME@FRACTION``, e.g. from ``idp_scientific.py``) gets
    that share drawn again with the seed its record holds, or with ``subsample_seed`` for a run made
    before runs recorded it; the fingerprint check catches a wrong seed."""
    from recbench.data.dataset import load_dataset
    from recbench.errors import RunError
    from recbench.method import Batch
    from recbench.runs.evaluate import Evaluator
    from recbench.runs.experiment import checked_run_dataset, trained_method
    from recbench.runs.record import RunRecord

    run = RunRecord(run_dir)
    run.require_finished()
    record = run.config
    if "imported" in record:
        raise RunError(f"{run_dir} holds imported results, not a model to score with")
    name, _, fraction = record["dataset"].partition("@")
    older_share = fraction and "subsample" not in record  # made before runs recorded their share
    given = load_dataset(name).subsample_users(float(fraction), subsample_seed) if older_share else None
    dataset = checked_run_dataset(run, given)
    method = trained_method(run, dataset).eval()
    # The Evaluator's own test batches: the input it scores.
    evaluator = Evaluator(dataset, "test", method.config.max_seq_length, method.config.eval_batch_size)
    rows = []
    with torch.inference_mode(), method.scoring_pass():
        for items, lengths, _, users, _ in evaluator.batches:
            scores = method.score(Batch(items=items, lengths=lengths, users=users))
            rows.append(scores.float()[:, 1:].numpy())  # column 0 is padding
    by_user = np.empty((len(evaluator.order), dataset.num_items), dtype=np.float32)
    by_user[evaluator.order] = np.concatenate(rows)  # the batches hold users in length order
    return record["method"], by_user


def spread(scores: np.ndarray, pairs: int, seed: int = 0) -> dict[str, float]:
    """Coverage@10, shared top-10 and mean pairwise score correlation of (U, N) scores."""
    top = np.argpartition(-scores, 10, axis=1)[:, :10]  # (U, 10) each user's top 10, unordered
    common = np.argpartition(-scores.mean(0), 10)[:10]
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, len(scores), (2, pairs))
    keep = first != second
    centred = scores - scores.mean(1, keepdims=True)
    unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    return {
        "coverage@10": len(np.unique(top)) / scores.shape[1],
        "shared top-10": float(np.isin(top, common).mean()),
        "score correlation": float((unit[first[keep]] * unit[second[keep]]).sum(1).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--pairs", type=int, default=2000, help="random user pairs for the correlation")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--subsample-seed",
        type=int,
        default=2020,
        help="for runs on a share of the users that do not record their seed",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for run_dir in args.runs:
        method, scores = user_scores(run_dir, args.subsample_seed)
        measured = spread(scores, args.pairs)
        print(
            f"{method} ({run_dir}): " + ", ".join(f"{name} {value:.3f}" for name, value in measured.items()),
            flush=True,
        )


if __name__ == "__main__":
    main()

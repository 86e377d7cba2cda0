"""Leaderboards per group of users: by history length and by the popularity of the target item.

A breakdown splits a dataset's users into groups and builds one leaderboard table per group with
:func:`recbench.results.report.build_report`, from the same stored ranks restricted to the group's
users: the same metrics, seed summaries and paired tests as the full table, the correction taken
over the comparisons of each group's table. Groups need the dataset itself (its sequences), so it
is loaded by name and must be the data the runs were made on (same fingerprint).

Groups (users are placed by the split the ranks belong to, test unless stated otherwise):

- ``history``: the number of interactions before the evaluated target (test: the training part
  plus the valid item; valid: the training part), counted before any cut to a method's
  ``max_history``. Fixed buckets 1-5, 6-10, 11-20 and 21+ (:data:`HISTORY_EDGES`), the same on
  every dataset so that tables of several datasets line up.
- ``popularity``: the number of training interactions of the user's target item (the training
  parts of all users: every sequence without its last two items). *cold*: at most
  :data:`COLD_MAX` (5) training interactions; *head*: the top :data:`HEAD_SHARE` (20%) of the
  dataset's items by that count, i.e. at least as many as the ``ceil(0.2 * N)``-th most popular
  item (ties included, so the head may hold a little more than 20% of the items; the caption
  states its actual share) and more than :data:`COLD_MAX`; *mid*: the others.

A group with fewer than 2 users has no paired test and is left out (listed in the JSON output).
Every table's caption names its group with its thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from recbench.data.dataset import Dataset
from recbench.errors import RecbenchError, RunError
from recbench.results.report import Report, RunResult, build_report, report_dict
from recbench.results.stats import DEFAULT_PERMUTATIONS, DEFAULT_RESAMPLES

BREAKDOWNS = ("history", "popularity")
HISTORY_EDGES = (5, 10, 20)
"""Upper ends of the history buckets: 1-5, 6-10, 11-20, and 21 or more interactions before the target."""
COLD_MAX = 5
"""A target item with at most this many training interactions is *cold*."""
HEAD_SHARE = 0.2
"""The share of items, the most popular by training interactions, whose targets are *head*."""
MIN_GROUP_USERS = 2  # a paired test needs two users


@dataclass
class Group:
    """One group of users of one dataset: which users, and how the group is defined."""

    dataset: str
    by: str  # "history" or "popularity"
    name: str  # short name: "6-10", "21+", "cold", "mid", "head"
    label: str  # the table's name in the report, with the thresholds: "<dataset>, cold targets (...)"
    low: int | None  # smallest history length or training count in the group (None: no lower bound)
    high: int | None  # largest (None: no upper bound)
    users: np.ndarray = field(repr=False)  # (n,) user indices (positions in the ranks), ascending

    @property
    def n_users(self) -> int:
        return len(self.users)


@dataclass
class BreakdownReport(Report):
    """A :class:`Report` whose tables are groups of users; ``groups`` maps each table back to its group.

    Its "datasets" are the groups' labels (``Group.label``); every renderer of :class:`Report`
    works on it unchanged. ``omitted`` lists the groups left out for having fewer than 2 users.
    """

    by: str = "history"
    groups: list[Group] = field(default_factory=list)
    omitted: list[Group] = field(default_factory=list)

    def group(self, label: str) -> Group:
        """The group behind the table ``label``."""
        for group in self.groups:
            if group.label == label:
                return group
        raise RecbenchError(f"no group table named '{label}'")

    def groups_of(self, dataset: str) -> list[Group]:
        """The groups of one (real) dataset, in table order."""
        return [g for g in self.groups if g.dataset == dataset]

    def to_json(self) -> str:
        """The report's JSON (see :func:`recbench.results.report.report_dict`) plus a ``breakdown`` entry
        defining every group (dataset, name, label, bounds, number of users)."""
        import json

        data = report_dict(self)
        data["breakdown"] = breakdown_dict(self)
        return json.dumps(data, indent=2, allow_nan=False) + "\n"


def breakdown_dict(report: BreakdownReport) -> dict[str, Any]:
    """The group definitions of a breakdown as JSON-ready data."""

    def describe(group: Group) -> dict[str, Any]:
        return {k: v for k, v in asdict(group).items() if k != "users"} | {"n_users": group.n_users}

    definition = (
        {"edges": list(HISTORY_EDGES), "length": "interactions before the evaluated target"}
        if report.by == "history"
        else {"cold_max": COLD_MAX, "head_share": HEAD_SHARE, "count": "training interactions of the target item"}
    )
    return {
        "by": report.by,
        "definition": definition,
        "groups": [describe(g) for g in report.groups],
        "omitted": [describe(g) for g in report.omitted],
    }


# --- per-user quantities ---------------------------------------------------------------------
def _shift(split: str) -> int:
    if split not in ("valid", "test"):
        raise RecbenchError(f"unknown split '{split}': expected 'valid' or 'test'")
    return 1 if split == "test" else 2


def history_lengths(dataset: Dataset, split: str = "test") -> np.ndarray:
    """(U,) number of interactions before each user's ``split`` target (not cut to any max_history)."""
    return (dataset.lengths - _shift(split)).astype(np.int64)


def targets(dataset: Dataset, split: str = "test") -> np.ndarray:
    """(U,) item id of each user's ``split`` target."""
    return dataset.items[dataset.offsets[1:] - _shift(split)].astype(np.int64)


def training_counts(dataset: Dataset) -> np.ndarray:
    """(N + 1,) number of training interactions of each item id (position 0, padding, is 0)."""
    _, items = dataset.train_sequences()
    return np.bincount(items, minlength=dataset.num_items + 1).astype(np.int64)


def head_threshold(counts: np.ndarray, share: float = HEAD_SHARE, cold_max: int = COLD_MAX) -> int:
    """The smallest training count of a *head* item: that of the ``ceil(share * N)``-th most popular
    of the N items (``counts[1:]``), and at least ``cold_max + 1``."""
    per_item = np.sort(np.asarray(counts[1:]))[::-1]
    if len(per_item) == 0:
        return cold_max + 1
    top = max(1, math.ceil(share * len(per_item)))
    return max(int(per_item[top - 1]), cold_max + 1)


# --- groups ----------------------------------------------------------------------------------
def history_groups(dataset: Dataset, split: str = "test", edges: Sequence[int] = HISTORY_EDGES) -> list[Group]:
    """Users by history length: buckets ``1..edges[0]``, ``edges[0]+1..edges[1]``, ..., ``edges[-1]+1`` and more."""
    if list(edges) != sorted(set(edges)) or (edges and edges[0] < 1):
        raise RecbenchError(f"history bucket edges must be increasing positive integers, got {list(edges)}")
    lengths = history_lengths(dataset, split)
    bounds = [(low + 1, high) for low, high in zip([0, *edges], edges)] + [((edges[-1] if edges else 0) + 1, None)]
    groups = []
    for low, high in bounds:
        name = f"{low}+" if high is None else f"{low}-{high}"
        members = np.flatnonzero((lengths >= low) & (lengths <= (high if high is not None else np.iinfo(np.int64).max)))
        between = f"{low} or more" if high is None else f"{low}-{high}"
        label = f"{dataset.name}, users with {between} interactions before the target"
        groups.append(Group(dataset.name, "history", name, label, low, high, members))
    return groups


def popularity_groups(
    dataset: Dataset, split: str = "test", cold_max: int = COLD_MAX, head_share: float = HEAD_SHARE
) -> list[Group]:
    """Users by the training-interaction count of their target item: cold, mid and head (module docstring)."""
    counts = training_counts(dataset)
    head_min = head_threshold(counts, head_share, cold_max)
    target_counts = counts[targets(dataset, split)]
    # the head's actual share of items: the target share, or more where items tie at the threshold
    share = f"the top {round(100 * float(np.mean(counts[1:] >= head_min)), 1):g}% of items"
    specs = [
        ("cold", 0, cold_max, f"at most {cold_max} training interactions"),
        ("mid", cold_max + 1, head_min - 1, f"{cold_max + 1}-{head_min - 1} training interactions"),
        ("head", head_min, None, f"at least {head_min} training interactions, {share}"),
    ]
    groups = []
    for name, low, high, text in specs:
        above = target_counts >= (low if low is not None else 0)
        below = target_counts <= (high if high is not None else np.iinfo(np.int64).max)
        label = f"{dataset.name}, {name} targets ({text})"
        groups.append(Group(dataset.name, "popularity", name, label, low, high, np.flatnonzero(above & below)))
    return groups


def user_groups(dataset: Dataset, by: str, split: str = "test") -> list[Group]:
    """The groups of ``by`` ('history' or 'popularity') on one dataset."""
    if by == "history":
        return history_groups(dataset, split)
    if by == "popularity":
        return popularity_groups(dataset, split)
    raise RecbenchError(f"unknown breakdown '{by}'; expected one of: {', '.join(BREAKDOWNS)}")


def subset_results(results: Sequence[RunResult], group: Group) -> list[RunResult]:
    """The runs of the group's dataset restricted to its users, named by the group's label.

    Failed and damaged runs stay failed (they have no ranks to restrict).
    """
    subset = []
    for r in results:
        if r.dataset != group.dataset:
            continue
        ranks = None if r.ranks is None else r.ranks[group.users]
        protocol = {**r.protocol, "num_users": group.n_users} if r.ranks is not None else dict(r.protocol)
        subset.append(
            RunResult(group.label, r.method, r.seed, ranks, protocol, r.error, r.source, r.damaged, r.trained)
        )
    return subset


# --- datasets --------------------------------------------------------------------------------
def runs_fingerprint(results: Sequence[RunResult], dataset: str) -> tuple[str | None, str]:
    """The dataset fingerprint recorded in the run configs of ``dataset`` and one run that records it."""
    from recbench.runs.record import RunRecord

    for r in results:
        if r.dataset == dataset and r.error is None and r.source:
            return RunRecord(r.source).config.get("fingerprint"), r.source
    return None, ""


def dataset_of_runs(results: Sequence[RunResult], name: str, root: Path | None = None) -> Dataset:
    """Load dataset ``name`` and check that it is the data its runs were made on.

    The data are rehashed (:func:`recbench.data.dataset.verify_fingerprint`) and compared with the
    fingerprint in the runs' ``config.json``; their rank vectors must cover its users.
    """
    from recbench.data.dataset import load_dataset, load_run_dataset, verify_fingerprint
    from recbench.runs.record import RunRecord

    recorded, source = runs_fingerprint(results, name)
    if recorded is None:
        if source:
            raise RunError(f"run {source} records no dataset fingerprint: cannot tell which data it was made on")
        return load_dataset(name, root)  # no finished run: nothing to check (the tables show the failures)
    dataset = load_run_dataset(RunRecord(source).config, root)  # a share of the users is drawn again
    computed = verify_fingerprint(dataset)
    if computed != recorded:
        raise RunError(
            f"dataset '{name}' on disk (fingerprint {computed[:12]}) is not the data its runs were made on "
            f"(fingerprint {recorded[:12]} in {source}); a breakdown needs that data: restore it or re-train the runs"
        )
    for r in results:
        if r.dataset == name and r.ranks is not None and len(r.ranks) != dataset.num_users:
            raise RunError(
                f"run {r.source} has ranks for {len(r.ranks)} users, dataset '{name}' has {dataset.num_users}"
            )
    return dataset


# --- reports ---------------------------------------------------------------------------------
def breakdown_report(
    results: Sequence[RunResult],
    datasets: dict[str, Dataset],
    by: str,
    metrics: Sequence[str] = ("hr@10", "ndcg@10"),
    baseline: str | None = None,
    test: str = "t",
    correction: str = "holm",
    alpha: float = 0.05,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> BreakdownReport:
    """One table per group of users of every dataset in ``results`` (``datasets``: name -> its data).

    Each table is what :func:`build_report` makes of the runs restricted to the group's users, so
    its means, std over seeds, paired tests and corrections are those of a leaderboard of those users.
    """
    if by not in BREAKDOWNS:
        raise RecbenchError(f"unknown breakdown '{by}'; expected one of: {', '.join(BREAKDOWNS)}")
    subsets: list[RunResult] = []
    kept: list[Group] = []
    omitted: list[Group] = []
    for name in dict.fromkeys(r.dataset for r in results):
        if name not in datasets:
            if any(r.ranks is not None for r in results if r.dataset == name):
                raise RecbenchError(f"a breakdown by {by} needs the data of dataset '{name}'")
            continue  # no finished run: no users to group
        splits = {r.protocol.get("split", "test") for r in results if r.dataset == name and r.ranks is not None}
        if len(splits) > 1:
            raise RunError(f"dataset '{name}': runs of several splits ({', '.join(sorted(splits))}) cannot be grouped")
        for group in user_groups(datasets[name], by, splits.pop() if splits else "test"):
            if group.n_users < MIN_GROUP_USERS:
                omitted.append(group)
                continue
            kept.append(group)
            subsets += subset_results(results, group)
    if not subsets:
        raise RunError(f"no group of users with at least {MIN_GROUP_USERS} users to break down by {by}")
    report = build_report(
        subsets,
        metrics,
        baseline,
        test,
        correction,
        alpha,
        n_permutations=n_permutations,
        n_resamples=n_resamples,
        seed=seed,
    )
    values = {f.name: getattr(report, f.name) for f in fields(Report)}
    return BreakdownReport(**values, by=by, groups=kept, omitted=omitted)


def breakdown_leaderboard(runs_dir: Path | str, by: str, **options: Any) -> BreakdownReport:
    """``recbench leaderboard --by history|popularity``: :func:`recbench.results.leaderboard.leaderboard`
    with ``by`` (the same options), one table per group of users."""
    from recbench.results.leaderboard import leaderboard

    return leaderboard(runs_dir, by=by, **options)


def breakdown_of(results: list[RunResult], by: str, *report_args: Any, **report_options: Any) -> BreakdownReport:
    """The breakdown report of loaded results: each dataset is loaded by name and checked against
    the runs' fingerprint (:func:`dataset_of_runs`)."""
    if by not in BREAKDOWNS:
        raise RecbenchError(f"unknown breakdown '{by}'; expected one of: {', '.join(BREAKDOWNS)}")
    finished = dict.fromkeys(r.dataset for r in results if r.ranks is not None)
    data = {name: dataset_of_runs(results, name) for name in finished}
    return breakdown_report(results, data, by, *report_args, **report_options)

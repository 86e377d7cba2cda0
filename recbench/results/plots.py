"""Figures of stored runs (``recbench plot``; optional extra ``recbench[plot]``: matplotlib).

Every figure is drawn from numbers the library already computes, so a figure shows what the
leaderboard's JSON holds; each kind has a function returning exactly the plotted numbers:

- ``curves``: training loss and a valid metric per epoch from each run's ``log.jsonl``, one line per
  run (seed), one column per method; a method fine-tuned from pre-training gets the pre-training
  loss curve of its ``_pretrain/`` run on top (:func:`training_curves`, :func:`pretraining_curves`);
- ``rank-cdf``: the share of users whose held-out item ranks within k, for every k, per method on
  one dataset, averaged over seeds as the leaderboard averages per-user values: the point at k is
  the leaderboard's HR@k (:func:`rank_cdf_points`);
- ``seeds``: each seed's metric per method, with the mean and sample std the table shows (:func:`seed_values`);
- ``forest``: each method's mean per-user difference to the baseline with its bootstrap CI, filled
  where significant after correction (:func:`forest_data`, from the report's comparisons);
- ``by-history``, ``by-popularity``: bars per group of users (:mod:`recbench.results.breakdown`),
  with the significance marks of the group's table (:func:`breakdown_bars`).

Figures are drawn on matplotlib's Agg canvas without pyplot (no display, no global state) and
written as PNG, PDF or SVG, without creation dates, so the same runs give the same files.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recbench.errors import RecbenchError
from recbench.results.report import Report, RunResult, marks, metric_label
from recbench.results.stats import CORRECTIONS, across_seeds, per_user_metric

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from recbench.results.breakdown import BreakdownReport

KINDS = ("curves", "rank-cdf", "seeds", "forest", "by-history", "by-popularity")
COMPARE_KINDS = ("curves", "rank-cdf", "seeds", "forest")
"""The figures ``recbench compare --out PREFIX`` writes next to its tables (those that need no dataset)."""
FIGURE_FORMATS = ("png", "pdf", "svg")
INSTALL_HINT = "plotting needs matplotlib: pip install 'recbench[plot]'"
DPI = 150
_NO_DATES = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}, "svg": {"Date": None}}


# --- matplotlib ------------------------------------------------------------------------------
def matplotlib_available() -> bool:
    """Whether matplotlib can be imported (the ``plot`` extra is installed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def require_matplotlib() -> None:
    """Raise a one-line :class:`RecbenchError` naming the extra to install when matplotlib is missing."""
    if not matplotlib_available():
        raise RecbenchError(INSTALL_HINT)


def figure_path(out: Path | str, fmt: str | None = None) -> tuple[Path, str]:
    """The file to write and its format: ``fmt`` (appended as suffix when ``out`` has none) or ``out``'s suffix."""
    out = Path(out)
    suffix = out.suffix.lower().lstrip(".")
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt not in FIGURE_FORMATS:
            raise RecbenchError(f"unknown figure format '{fmt}'; expected one of: {', '.join(FIGURE_FORMATS)}")
        if not suffix:
            return out.with_name(f"{out.name}.{fmt}"), fmt
        if suffix != fmt:
            raise RecbenchError(f"{out} ends in .{suffix} but --format says {fmt}; make them agree")
        return out, fmt
    if suffix not in FIGURE_FORMATS:
        raise RecbenchError(
            f"cannot tell the figure format of {out} from its suffix; use .png, .pdf or .svg or pass --format"
        )
    return out, suffix


def new_figure(rows: int, columns: int, width: float = 4.0, height: float = 3.0) -> tuple[Figure, np.ndarray]:
    """A figure of ``rows`` x ``columns`` axes (always a 2-D array) on the Agg canvas."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def save_figure(figure: Figure, out: Path | str, fmt: str | None = None) -> Path:
    """Write ``figure`` (format from ``fmt`` or the suffix of ``out``) atomically; returns the path written."""
    import matplotlib

    from recbench.files import atomic_write_bytes

    path, fmt = figure_path(out, fmt)
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "recbench", "pdf.compression": 6}):
        figure.savefig(buffer, format=fmt, dpi=DPI, metadata=_NO_DATES[fmt])
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _colours(methods: Sequence[str]) -> dict[str, Any]:
    """One colour per method, by its position among the report's methods (the same in every figure)."""
    import matplotlib

    cycle = matplotlib.colormaps["tab10"]
    return {m: cycle(i % 10) for i, m in enumerate(methods)}


def _finished(results: Sequence[RunResult], dataset: str) -> list[RunResult]:
    return [r for r in results if r.dataset == dataset and r.error is None and r.ranks is not None]


def _methods(results: Sequence[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.method for r in results))


def _by_method(results: Sequence[RunResult], dataset: str) -> dict[str, list[RunResult]]:
    """A dataset's finished runs per method, seeds ascending; methods with a failed seed are left out,
    as the leaderboard shows no numbers for them."""
    out: dict[str, list[RunResult]] = {}
    failed = {r.method for r in results if r.dataset == dataset and (r.error is not None or r.ranks is None)}
    for r in _finished(results, dataset):
        if r.method not in failed:
            out.setdefault(r.method, []).append(r)
    return {m: sorted(runs, key=lambda r: r.seed) for m, runs in out.items()}


def _title(dataset: str) -> str:
    from recbench.data.synthetic import is_synthetic_name

    return f"{dataset} (SYNTHETIC demo data)" if is_synthetic_name(dataset) else dataset


# --- curves ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Curve:
    """One run's log: loss and a valid metric per epoch."""

    method: str
    seed: int
    source: str  # the run directory
    epochs: list[int]
    loss: list[float]
    valid: list[float]  # the valid metric per epoch; NaN where the log has none (pre-training)


def _curve(method: str, seed: int, path: Path, metric: str) -> Curve:
    from recbench.runs.record import RunRecord

    log = RunRecord(path).log
    valid = [float((entry.get("valid") or {}).get(metric, math.nan)) for entry in log]
    return Curve(method, seed, str(path), [int(e["epoch"]) for e in log], [float(e["loss"]) for e in log], valid)


def training_curves(results: Sequence[RunResult], dataset: str, metric: str = "ndcg@10") -> dict[str, list[Curve]]:
    """Per method, the ``log.jsonl`` curve of each finished run of ``dataset`` (runs without a directory
    are skipped; a run trained for 0 epochs has an empty curve)."""
    out: dict[str, list[Curve]] = {}
    for method, runs in _by_method(results, dataset).items():
        out[method] = [_curve(method, r.seed, Path(r.source), metric) for r in runs if r.source]
    return out


def pretraining_curves(results: Sequence[RunResult], dataset: str) -> dict[str, list[Curve]]:
    """Per method, the loss curves of the pre-training runs its runs of ``dataset`` were fine-tuned from.

    A fine-tuned run names its pre-training run in ``config.json`` (``pretrained``: the directory
    name); that run lies under ``<runs dir>/_pretrain/<sources>/<method>/``.
    """
    from recbench.runs.record import RunRecord

    out: dict[str, list[Curve]] = {}
    for method, runs in _by_method(results, dataset).items():
        seen: set[Path] = set()
        for r in runs:
            if not r.source:
                continue
            name = RunRecord(r.source).config.get("pretrained")
            if not name:
                continue
            root = Path(r.source).parents[2] / "_pretrain"
            for path in sorted(root.glob(f"*/*/{name}")):
                if path not in seen and (path / "config.json").is_file():
                    seen.add(path)
                    seed = int(RunRecord(path).config.get("seed", 0))
                    out.setdefault(method, []).append(_curve(method, seed, path, "ndcg@10"))
    return out


def plot_curves(results: Sequence[RunResult], dataset: str, out: Path | str, fmt: str | None = None) -> Path:
    """Training loss and valid NDCG@10 per epoch, one column per method, one line per seed
    (with a pre-training loss row when some method was fine-tuned from pre-training)."""
    curves = {m: c for m, c in training_curves(results, dataset).items() if c}
    if not curves:
        raise RecbenchError(f"dataset '{dataset}': no finished run with a training log to plot")
    pretraining = pretraining_curves(results, dataset)
    rows = (["pre-training loss"] if pretraining else []) + ["training loss", f"valid {metric_label('ndcg@10')}"]
    methods = list(curves)
    figure, axes = new_figure(len(rows), len(methods), 3.6, 2.6)
    from matplotlib.ticker import MaxNLocator

    for column, method in enumerate(methods):
        panels = [pretraining.get(method, [])] if pretraining else []
        panels += [curves[method], curves[method]]
        for row, (label, runs) in enumerate(zip(rows, panels)):
            ax = axes[row, column]
            values = [(c, c.valid if label.startswith("valid") else c.loss) for c in runs]
            for curve, ys in values:
                ax.plot(curve.epochs, ys, marker="o", markersize=2.5, linewidth=1.2, label=f"seed {curve.seed}")
            if not any(len(ys) for _, ys in values):
                empty = "no epochs" if runs else "no pre-training"
                ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="grey")
            if label.startswith("valid") and column > 0:
                ax.sharey(axes[row, 0])  # one scale for the valid metric: methods compare at a glance
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(method if row == 0 else "", fontsize=10)
            ax.set_ylabel(label if column == 0 else "")
            ax.set_xlabel("epoch" if row == len(rows) - 1 else "")
            ax.grid(alpha=0.3)
            if row == 0 and any(len(ys) for _, ys in values):
                ax.legend(fontsize=7)
    figure.suptitle(f"{_title(dataset)}: training curves")
    return save_figure(figure, out, fmt)


# --- rank CDF --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CdfPoints:
    """A method's rank CDF: ``share[i]`` is the share of users whose held-out item ranks within ``ks[i]``,
    averaged over seeds (= the leaderboard's HR@k)."""

    method: str
    ks: np.ndarray
    share: np.ndarray
    n_seeds: int


def default_cutoffs(num_candidates: int, points: int = 200) -> np.ndarray:
    """Roughly log-spaced integer cutoffs 1..num_candidates (always including 5, 10, 20, 50 when in range)."""
    grid = np.geomspace(1, max(num_candidates, 1), points).round().astype(np.int64)
    standard = [k for k in (5, 10, 20, 50) if k <= num_candidates]
    return np.unique(np.concatenate([grid, np.array(standard, dtype=np.int64), [1, max(num_candidates, 1)]]))


def rank_cdf_points(
    results: Sequence[RunResult], dataset: str, ks: Sequence[int] | np.ndarray | None = None
) -> dict[str, CdfPoints]:
    """Per method, the share of users with rank <= k for every k in ``ks`` (default :func:`default_cutoffs`).

    As in the leaderboard, each user's hit (rank <= k) is averaged over the method's seeds first and
    then over users, so the point at k equals the leaderboard's HR@k of the method.
    """
    runs = _by_method(results, dataset)
    if ks is None:
        candidates = [r.protocol.get("num_candidates") or int(r.ranks.max()) for rs in runs.values() for r in rs]
        ks = default_cutoffs(int(max(candidates, default=1)))
    ks = np.asarray(ks, dtype=np.int64)
    out = {}
    for method, seeds in runs.items():
        per_seed = []
        for r in seeds:
            if np.ndim(r.ranks) == 2:  # random ties: each user's chance of rank <= k (HR@k as the leaderboard has it)
                per_seed.append(np.array([per_user_metric(r.ranks, f"hr@{k}").mean() for k in ks]))
                continue
            ordered = np.sort(np.asarray(r.ranks))
            per_seed.append(np.searchsorted(ordered, ks, side="right") / len(ordered))
        out[method] = CdfPoints(method, ks, np.mean(per_seed, axis=0), len(seeds))
    return out


def plot_rank_cdf(results: Sequence[RunResult], dataset: str, out: Path | str, fmt: str | None = None) -> Path:
    """The rank CDF of every method on one dataset (log-scaled ranks)."""
    points = rank_cdf_points(results, dataset)
    if not points:
        raise RecbenchError(f"dataset '{dataset}': no finished run to plot")
    colours = _colours(_methods(results))
    figure, axes = new_figure(1, 1, 6.0, 4.0)
    from matplotlib.ticker import ScalarFormatter

    ax = axes[0, 0]
    for method, p in points.items():
        seeds = f" ({p.n_seeds} seeds)" if p.n_seeds > 1 else ""
        ax.step(p.ks, p.share, where="post", color=colours[method], linewidth=1.4, label=method + seeds)
    for k in (10, 50):
        ax.axvline(k, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("rank k of the held-out item (log scale)")
    ax.set_ylabel("share of users with rank <= k (HR@k)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_title(f"{_title(dataset)}\nrank distribution (hits averaged over seeds per user)", fontsize=10)
    return save_figure(figure, out, fmt)


# --- seeds -----------------------------------------------------------------------------------
def seed_values(results: Sequence[RunResult], dataset: str, metric: str) -> dict[str, dict[int, float]]:
    """Per method, seed -> the metric of that seed's run (mean over users of the per-user values).

    Their mean and sample std are the leaderboard cell's mean and std.
    """
    return {
        method: {r.seed: float(per_user_metric(r.ranks, metric).mean()) for r in runs}
        for method, runs in _by_method(results, dataset).items()
    }


def plot_seeds(
    results: Sequence[RunResult], dataset: str, metrics: Sequence[str], out: Path | str, fmt: str | None = None
) -> Path:
    """Each seed's value per method (dots), with the mean and ± sample std over seeds; one panel per metric."""
    runs = _by_method(results, dataset)
    if not runs:
        raise RecbenchError(f"dataset '{dataset}': no finished run to plot")
    colours = _colours(_methods(results))
    figure, axes = new_figure(1, len(metrics), 4.0, 3.4)
    for ax, metric in zip(axes[0], metrics):
        values = seed_values(results, dataset, metric)
        for x, (method, by_seed) in enumerate(values.items()):
            ys = np.array(list(by_seed.values()))
            offsets = np.linspace(-0.15, 0.15, len(ys)) if len(ys) > 1 else np.zeros(1)
            ax.scatter(x + offsets, ys, s=18, color=colours[method], zorder=3)
            summary = across_seeds([per_user_metric(r.ranks, metric) for r in runs[method]])
            ax.hlines(summary.mean, x - 0.3, x + 0.3, color="black", linewidth=1.2, zorder=2)
            if summary.n_seeds > 1:
                ax.errorbar(x, summary.mean, yerr=summary.std, color="black", capsize=4, linewidth=0.8, zorder=2)
        ax.set_xticks(range(len(values)), list(values), rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3, axis="y")
    figure.suptitle(f"{_title(dataset)}\nper-seed values (line: mean, bar: ± sample std over seeds)", fontsize=10)
    return save_figure(figure, out, fmt)


# --- forest ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForestRow:
    """One method against the baseline on one metric: the numbers of the report's :class:`Comparison`."""

    method: str
    baseline: str
    mean_diff: float
    ci_low: float
    ci_high: float
    relative_pct: float
    p_adjusted: float
    significant: bool


def forest_data(report: Report, dataset: str, metric: str) -> list[ForestRow]:
    """Each method's mean per-user difference to the report's baseline with its bootstrap CI, in method order."""
    if report.baseline is None:
        raise RecbenchError("a forest plot shows each method against a baseline: pass --baseline")
    metric = metric.strip().lower()
    if metric not in report.metrics:
        raise RecbenchError(f"metric '{metric}' is not in the report ({', '.join(report.metrics)})")
    return [
        ForestRow(
            c.method,
            c.other,
            c.stats.mean_diff,
            c.stats.ci_low,
            c.stats.ci_high,
            c.stats.relative_pct,
            c.p_adjusted,
            c.significant,
        )
        for c in report.comparisons_for(dataset, metric)
    ]


def plot_forest(report: Report, dataset: str, out: Path | str, fmt: str | None = None) -> Path:
    """Differences to the baseline with bootstrap CIs, one panel per metric of the report."""
    if not report.comparisons_for(dataset):
        forest_data(report, dataset, report.metrics[0])  # names a missing baseline
        raise RecbenchError(f"dataset '{dataset}': no comparison with the baseline {report.baseline} to plot")
    colours = _colours(report.methods)
    figure, axes = new_figure(1, len(report.metrics), 3.8, 1.6 + 0.4 * len(report.methods))
    for ax, metric in zip(axes[0], report.metrics):
        rows = forest_data(report, dataset, metric)
        for y, row in enumerate(rows):
            error = [[row.mean_diff - row.ci_low], [row.ci_high - row.mean_diff]]
            face = colours[row.method] if row.significant else "white"
            style = {"fmt": "o", "color": colours[row.method], "markerfacecolor": face, "capsize": 3}
            ax.errorbar(row.mean_diff, y, xerr=error, **style)
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [r.method for r in rows], fontsize=8)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric_label(metric)} difference to {report.baseline}")
        ax.grid(alpha=0.3, axis="x")
    ci = f"{100 * report.confidence:g}% bootstrap CI"
    family = f"{CORRECTIONS[report.correction]} correction, p < {report.alpha}"
    figure.suptitle(f"{_title(dataset)}\nmean per-user difference, {ci}; filled: significant ({family})", fontsize=9)
    return save_figure(figure, out, fmt)


# --- breakdowns ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BreakdownBars:
    """A breakdown's numbers for one dataset and metric: per group (x) and method (bar)."""

    groups: list[str]  # group names: "1-5", ..., or "cold", "mid", "head"
    ranges: list[str]  # the group's range of history lengths or training counts: "1-5", "21+", "<= 5", ">= 45"
    n_users: list[int]
    methods: list[str]
    mean: dict[tuple[str, str], float]  # (method, group) -> the group table's cell mean
    std: dict[tuple[str, str], float]  # sample std over seeds (NaN: one seed)
    marks: dict[tuple[str, str], str]  # significance mark of the group's table: '+', '-' or letters


def breakdown_bars(report: BreakdownReport, dataset: str, metric: str) -> BreakdownBars:
    """The cells of every group table of ``dataset`` for ``metric`` (failed cells are left out)."""
    metric = metric.strip().lower()
    if metric not in report.metrics:
        raise RecbenchError(f"metric '{metric}' is not in the report ({', '.join(report.metrics)})")
    groups = report.groups_of(dataset)
    if not groups:
        raise RecbenchError(f"dataset '{dataset}' has no group of users in this breakdown")
    mean, std, marked = {}, {}, {}
    for group in groups:
        group_marks = marks(report, group.label, metric)
        for method in report.methods:
            cell = report.cell(group.label, method)
            if cell is None or cell.failed:
                continue
            mean[method, group.name], std[method, group.name] = cell.mean[metric], cell.std[metric]
            marked[method, group.name] = group_marks.get(method, "")
    methods = [m for m in report.methods if any((m, g.name) in mean for g in groups)]
    ranges = [_range(g.low, g.high) for g in groups]
    return BreakdownBars([g.name for g in groups], ranges, [g.n_users for g in groups], methods, mean, std, marked)


def _range(low: int | None, high: int | None) -> str:
    if high is None:
        return f"{low}+"
    return f"<= {high}" if not low else f"{low}-{high}"


def plot_breakdown(report: BreakdownReport, dataset: str, out: Path | str, fmt: str | None = None) -> Path:
    """Grouped bars: one group of users per position, one bar per method; error bars ± sample std over
    seeds; the group table's significance marks above the bars."""
    colours = _colours(report.methods)
    figure, axes = new_figure(1, len(report.metrics), 4.6, 3.6)
    for ax, metric in zip(axes[0], report.metrics):
        bars = breakdown_bars(report, dataset, metric)
        width = 0.8 / max(len(bars.methods), 1)
        for i, method in enumerate(bars.methods):
            xs = [x for x, g in enumerate(bars.groups) if (method, g) in bars.mean]
            names = [bars.groups[x] for x in xs]
            heights = [bars.mean[method, g] for g in names]
            errors = [0.0 if math.isnan(bars.std[method, g]) else bars.std[method, g] for g in names]
            positions = [x - 0.4 + width * (i + 0.5) for x in xs]
            ax.bar(positions, heights, width, yerr=errors, color=colours[method], label=method, capsize=2)
            for x, h, e, g in zip(positions, heights, errors, names):
                mark = {"+": "↑", "-": "↓"}.get(bars.marks[method, g], bars.marks[method, g])
                if mark:
                    ax.text(x, h + e, mark, ha="center", va="bottom", fontsize=7)
        if report.by == "history":
            ticks = [f"{r}\n({n:,} users)" for r, n in zip(bars.ranges, bars.n_users)]
        else:
            ticks = [f"{g}: {r}\n({n:,} users)" for g, r, n in zip(bars.groups, bars.ranges, bars.n_users)]
        ax.set_xticks(range(len(bars.groups)), ticks, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].legend(fontsize=7)
    what = "interactions before the target" if report.by == "history" else "training interactions of the target item"
    test = f"↑/↓: vs {report.baseline}" if report.baseline else "letters: beats those methods"
    figure.suptitle(f"{_title(dataset)}\nusers by {what}; bars: ± std over seeds; {test} within each group", fontsize=9)
    return save_figure(figure, out, fmt)


# --- entry points ----------------------------------------------------------------------------
def _one_dataset(datasets: Sequence[str], dataset: str | None) -> str:
    if dataset is not None:
        if dataset not in datasets:
            from recbench.errors import UnknownNameError

            raise UnknownNameError("dataset", dataset, datasets, " (no finished runs of it)")
        return dataset
    if len(datasets) != 1:
        raise RecbenchError(f"runs of several datasets ({', '.join(datasets)}): pick one with --dataset")
    return datasets[0]


def plot(
    kind: str,
    runs_dir: Path | str = "runs",
    out: Path | str | None = None,
    dataset: str | None = None,
    metrics: Sequence[str] = ("ndcg@10",),
    baseline: str | None = None,
    test: str = "t",
    correction: str = "holm",
    alpha: float = 0.05,
    fmt: str | None = None,
) -> Path:
    """``recbench plot``: draw figure ``kind`` (see :data:`KINDS`) of the runs under ``runs_dir`` on one dataset.

    The numbers come from the same functions as ``recbench leaderboard`` with the same options
    (``baseline``, ``test``, ``correction``, ``alpha``). ``out`` defaults to ``<kind>-<dataset>.<fmt>``
    (png without ``fmt``). Returns the path written.
    """
    from recbench.results.leaderboard import leaderboard, load_results

    if kind not in KINDS:
        raise RecbenchError(f"unknown figure kind '{kind}'; expected one of: {', '.join(KINDS)}")
    require_matplotlib()
    metrics = [m.strip().lower() for m in metrics if m.strip()]
    results = load_results(runs_dir)
    name = _one_dataset(list(dict.fromkeys(r.dataset for r in results)), dataset)
    out = Path(out) if out is not None else Path(f"{kind}-{name}.{(fmt or 'png').lower().lstrip('.')}")
    figure_path(out, fmt)  # a bad suffix or format fails before any work
    if kind == "curves":
        return plot_curves(results, name, out, fmt)
    if kind == "rank-cdf":
        return plot_rank_cdf(results, name, out, fmt)
    if kind == "seeds":
        from recbench.results.stats import parse_metric

        for metric in metrics:
            parse_metric(metric)
        return plot_seeds(results, name, metrics, out, fmt)
    options = {"metrics": metrics, "datasets": [name], "baseline": baseline, "test": test}
    if kind == "forest":
        return plot_forest(leaderboard(runs_dir, correction=correction, alpha=alpha, **options), name, out, fmt)
    from recbench.results.breakdown import breakdown_leaderboard

    by = kind.removeprefix("by-")
    return plot_breakdown(
        breakdown_leaderboard(runs_dir, by, correction=correction, alpha=alpha, **options), name, out, fmt
    )


def write_figures(
    report: Report, results: Sequence[RunResult], prefix: str | Path, fmt: str = "png", notice: bool = True
) -> list[Path]:
    """The figures of :data:`COMPARE_KINDS` next to a report's tables: ``PREFIX-<kind>.png``, or
    ``PREFIX-<kind>-<dataset>.png`` when the report has several datasets.

    Figures without data (a dataset whose cells all failed, a forest without baseline) are skipped.
    Without matplotlib nothing is written and, with ``notice``, one note line goes to stderr.
    """
    if not matplotlib_available():
        if notice:
            print(f"note: figures not written; {INSTALL_HINT}", file=sys.stderr)
        return []
    written = []
    for dataset in report.datasets:
        if not _by_method(results, dataset):
            continue
        suffix = "" if len(report.datasets) == 1 else f"-{dataset}"
        for kind in COMPARE_KINDS:
            out = Path(f"{prefix}-{kind}{suffix}.{fmt}")
            if kind == "curves" and any(r.source for r in _finished(results, dataset)):
                written.append(plot_curves(results, dataset, out))
            elif kind == "rank-cdf":
                written.append(plot_rank_cdf(results, dataset, out))
            elif kind == "seeds":
                written.append(plot_seeds(results, dataset, report.metrics, out))
            elif kind == "forest" and report.baseline is not None and report.comparisons_for(dataset):
                written.append(plot_forest(report, dataset, out))
    return written

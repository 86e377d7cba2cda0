"""Comparison results as one object with separate renderers.

:func:`build_report` turns per-run per-user ranks into a :class:`Report`: for every dataset a
table of methods × metrics (mean ± std over seeds) and the paired comparisons behind its
significance marks, corrected for multiple comparisons over that table. The renderers
(:meth:`Report.to_markdown`, ``to_latex``, ``to_csv``, ``to_json``, ``rich_tables``) only
format what the object holds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recbench.data.synthetic import NOTE as SYNTHETIC_NOTE
from recbench.data.synthetic import is_synthetic_name
from recbench.errors import RecbenchError, RunError, UnknownNameError
from recbench.results.stats import (
    CORRECTIONS,
    DEFAULT_PERMUTATIONS,
    DEFAULT_RESAMPLES,
    TESTS,
    PairedStats,
    across_seeds,
    adjust,
    comparison_pairs,
    paired_stats,
    parse_metric,
    per_user_metric,
)

# Protocol fields that must agree between runs compared on one dataset.
PROTOCOL_KEYS = (
    "name",
    "definition",
    "split",
    "candidates",
    "num_candidates",
    "num_users",
    "mask_history",
    "ties",
    "negatives_sha256",
)
_METRIC_LABELS = {"hr": "HR", "recall": "Recall", "ndcg": "NDCG", "mrr": "MRR"}


@dataclass
class RunResult:
    """One (dataset, method, seed) run as a report needs it: per-user ranks, or why it failed."""

    dataset: str
    method: str
    seed: int
    ranks: np.ndarray | None = None  # (U,) 1-based ranks of the held-out item, user u at u ((U, 2) under random ties)
    protocol: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set for a failed run (ranks is then None)
    source: str = ""  # where it came from (a run directory), for messages
    damaged: bool = False  # its files are missing, unreadable or changed since it finished (error says how)
    trained: bool = True  # False: evaluated with epochs = 0 (zero-shot by design)


@dataclass
class Cell:
    """One method on one dataset, over its seeds; ``error`` set means the cell failed."""

    dataset: str
    method: str
    seeds: list[int]
    mean: dict[str, float] = field(default_factory=dict)  # metric -> mean of seed-level means
    std: dict[str, float] = field(default_factory=dict)  # metric -> sample std over seeds (NaN: one seed)
    error: str | None = None
    damaged: bool = False  # failed because a stored run is damaged (not because training failed)
    trained: bool = True  # False: no seed trained (epochs = 0), the cell shows untrained weights

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class Comparison:
    """``method`` vs ``other`` on one dataset and metric, with its corrected p-value."""

    dataset: str
    metric: str
    method: str
    other: str
    stats: PairedStats
    p_adjusted: float
    significant: bool  # p_adjusted < alpha


@dataclass
class Report:
    """Everything a leaderboard shows and exports; built by :func:`build_report`."""

    datasets: list[str]
    methods: list[str]
    metrics: list[str]
    cells: list[Cell]
    comparisons: list[Comparison]
    protocols: dict[str, dict[str, Any]]  # dataset -> protocol shared by its runs
    baseline: str | None = None  # None: all pairs are compared
    test: str = "t"
    correction: str = "holm"
    alpha: float = 0.05
    n_permutations: int = DEFAULT_PERMUTATIONS
    n_resamples: int = DEFAULT_RESAMPLES
    confidence: float = 0.95
    seed: int = 0
    decimals: int = 4
    others: dict[str, Report] = field(default_factory=dict)  # compare: the reports under further protocols
    published: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """A recipe's published numbers: dataset -> method (row) -> metric -> value, shown under each row with Δ%."""
    reference: str = ""  # where the published numbers come from (a recipe's source)
    notes: dict[str, str] = field(default_factory=dict)  # dataset -> what a reader must know (e.g. a stand-in)

    def published_value(self, dataset: str, method: str, metric: str) -> float | None:
        return self.published.get(dataset, {}).get(method, {}).get(metric)

    def delta_pct(self, dataset: str, method: str, metric: str) -> float | None:
        """100 * (measured mean / published - 1), or None without both numbers."""
        published, cell = self.published_value(dataset, method, metric), self.cell(dataset, method)
        if not published or cell is None or cell.failed or metric not in cell.mean:
            return None
        return 100.0 * (cell.mean[metric] / published - 1.0)

    def cell(self, dataset: str, method: str) -> Cell | None:
        return next((c for c in self.cells if c.dataset == dataset and c.method == method), None)

    def comparisons_for(self, dataset: str, metric: str | None = None) -> list[Comparison]:
        return [c for c in self.comparisons if c.dataset == dataset and metric in (None, c.metric)]

    def to_markdown(self) -> str:
        """One markdown table per dataset (tabulate, GitHub style) with its caption below."""
        return "\n".join(_markdown_table(self, d) for d in self.datasets)

    def to_latex(self, standalone: bool = False) -> str:
        """One booktabs ``table`` per dataset; ``standalone`` wraps them in a compilable document."""
        body = "\n".join(_latex_table(self, d) for d in self.datasets)
        if standalone:
            return "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + body + "\\end{document}\n"
        return "% requires \\usepackage{booktabs}\n" + body

    def to_csv(self) -> str:
        """Long format: one row per cell and metric, carrying the comparison where that method is the first side."""
        return _csv_text(self)

    def to_json(self) -> str:
        """Every number of the report: settings, protocols, cells, comparisons (NaN as null)."""
        return json.dumps(report_dict(self), indent=2, allow_nan=False) + "\n"

    def rich_tables(self) -> list[Any]:
        """One ``rich.table.Table`` per dataset for the terminal."""
        return [_rich_table(self, d) for d in self.datasets]

    def render(self, fmt: str) -> str:
        """Text in one export format: md, tex, csv or json."""
        renderers = {"md": self.to_markdown, "tex": self.to_latex, "csv": self.to_csv, "json": self.to_json}
        if fmt not in renderers:
            raise RecbenchError(f"unknown format '{fmt}'; expected one of: {', '.join(renderers)}")
        return renderers[fmt]()


def build_report(
    results: Sequence[RunResult],
    metrics: Sequence[str] = ("hr@10", "ndcg@10"),
    baseline: str | None = None,
    test: str = "t",
    correction: str = "holm",
    alpha: float = 0.05,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    decimals: int = 4,
) -> Report:
    """Group runs by (dataset, method, seed), summarise every metric, compare methods per dataset.

    Comparisons are each method vs ``baseline``, or all pairs without one; p-values are
    corrected over all comparisons of one dataset's table (every method and metric in it).
    A method with a failed seed on a dataset is a failed cell and takes part in no comparison.
    """
    if test not in TESTS:
        raise RecbenchError(f"unknown test '{test}'; expected one of: {', '.join(TESTS)}")
    if correction not in CORRECTIONS:
        raise RecbenchError(f"unknown correction '{correction}'; expected one of: {', '.join(CORRECTIONS)}")
    if not 0.0 < alpha < 1.0:
        raise RecbenchError(f"alpha must be between 0 and 1, got {alpha}")
    metrics = [m.strip().lower() for m in metrics if m.strip()]
    if not metrics:
        raise RecbenchError("no metrics to report; name at least one, e.g. ndcg@10")
    for metric in metrics:
        parse_metric(metric)
    if not results:
        raise RunError("no runs to report")
    datasets = list(dict.fromkeys(r.dataset for r in results))
    methods = list(dict.fromkeys(r.method for r in results))
    if baseline is not None and baseline not in methods:
        raise UnknownNameError("method", baseline, methods, " (--baseline must be one of the reported methods)")
    report = Report(
        datasets,
        methods,
        metrics,
        [],
        [],
        {},
        baseline,
        test,
        correction,
        alpha,
        n_permutations,
        n_resamples,
        confidence,
        seed,
        decimals,
    )
    for dataset in datasets:
        runs = [r for r in results if r.dataset == dataset]
        report.protocols[dataset] = _shared_protocol(dataset, runs)
        per_user: dict[tuple[str, str], np.ndarray] = {}  # (method, metric) -> (U,) averaged over seeds
        for method in methods:
            cell = _summarise(dataset, method, [r for r in runs if r.method == method], metrics, per_user)
            if cell is not None:
                report.cells.append(cell)
        report.comparisons += _compare(report, dataset, per_user)
    return report


def _shared_protocol(dataset: str, runs: list[RunResult]) -> dict[str, Any]:
    finished = [r for r in runs if r.error is None]
    if not finished:
        return {}
    first = finished[0]
    shared = {k: first.protocol.get(k) for k in PROTOCOL_KEYS if k in first.protocol}
    shared["num_users"] = len(first.ranks)
    for run in finished[1:]:
        this, that = run.source or run.method, first.source or first.method
        if len(run.ranks) != len(first.ranks):
            raise RunError(
                f"dataset '{dataset}': {this} has ranks for {len(run.ranks)} users, {that} for {len(first.ranks)}; "
                "runs of one dataset must cover the same users"
            )
        for key in PROTOCOL_KEYS:
            if key in ("name", "definition") and run.protocol.get(key) != first.protocol.get(key):
                raise RunError(
                    f"dataset '{dataset}': runs were evaluated under different protocols "
                    f"({run.protocol.get('name')!r} in {this}, {first.protocol.get('name')!r} in {that}); "
                    "one table never mixes protocols: choose one with --protocol"
                )
            if key == "negatives_sha256" and run.protocol.get(key) != first.protocol.get(key):
                raise RunError(
                    f"dataset '{dataset}': {this} and {that} ranked their targets against different sampled "
                    "negatives (their sha256 differs); such runs cannot be compared"
                )
            if run.protocol.get(key) != first.protocol.get(key):
                raise RunError(
                    f"dataset '{dataset}': evaluation protocol differs in '{key}' ({run.protocol.get(key)!r} in {this} "
                    f"vs {first.protocol.get(key)!r} in {that}); such runs cannot be compared"
                )
    return shared


def _summarise(
    dataset: str, method: str, runs: list[RunResult], metrics: list[str], per_user: dict[tuple[str, str], np.ndarray]
) -> Cell | None:
    if not runs:
        return None  # the method was not run on this dataset
    seeds = sorted(r.seed for r in runs)
    if len(set(seeds)) != len(seeds):
        raise RunError(
            f"dataset '{dataset}', method '{method}': "
            f"several runs with the same seed ({', '.join(r.source for r in runs)})"
        )
    failures = [r for r in runs if r.error is not None]
    if failures:  # a mean over fewer seeds than the others would mislead
        return Cell(
            dataset,
            method,
            seeds,
            error="; ".join(f"seed {r.seed}: {r.error}" for r in failures),
            damaged=any(r.damaged for r in failures),
        )
    cell = Cell(dataset, method, seeds, trained=any(r.trained for r in runs))
    for metric in metrics:
        summary = across_seeds([per_user_metric(r.ranks, metric) for r in sorted(runs, key=lambda r: r.seed)])
        cell.mean[metric], cell.std[metric] = summary.mean, summary.std
        per_user[method, metric] = summary.per_user
    return cell


def _compare(report: Report, dataset: str, per_user: dict[tuple[str, str], np.ndarray]) -> list[Comparison]:
    finished = [m for m in report.methods if (m, report.metrics[0]) in per_user]
    if report.baseline is not None and report.baseline not in finished:
        return []  # baseline missing or failed here: nothing to compare against
    labels = [(metric, m, o) for metric in report.metrics for m, o in comparison_pairs(finished, report.baseline)]
    if not labels:
        return []
    # One call per dataset: all columns share the permutation and bootstrap draws.
    a = np.column_stack([per_user[m, metric] for metric, m, _ in labels])
    b = np.column_stack([per_user[o, metric] for metric, _, o in labels])
    stats = paired_stats(a, b, report.test, report.n_permutations, report.n_resamples, report.confidence, report.seed)
    adjusted = adjust([s.p_value for s in stats], report.correction)
    return [
        Comparison(dataset, metric, m, o, s, float(p), bool(p < report.alpha))
        for (metric, m, o), s, p in zip(labels, stats, adjusted)
    ]


# --- shared by the renderers ------------------------------------------------------------------
def metric_label(metric: str) -> str:
    """'ndcg@10' -> 'NDCG@10', 'recall@20' -> 'Recall@20', 'mrr' -> 'MRR'."""
    name, _, cutoff = metric.partition("@")
    return _METRIC_LABELS.get(name, name.upper()) + (f"@{cutoff}" if cutoff else "")


def row_letters(report: Report) -> dict[str, str]:
    """In all-pairs mode each method gets a letter, used to mark whom a cell significantly beats."""
    return {} if report.baseline is not None else {m: chr(ord("a") + i) for i, m in enumerate(report.methods)}


def places(report: Report, dataset: str, metric: str) -> dict[str, int]:
    """Method -> 1 (best) or 2 (second) by the displayed (rounded) mean; ties share a place."""
    shown = {
        c.method: round(c.mean[metric], report.decimals) for c in report.cells if c.dataset == dataset and not c.failed
    }
    ordered = sorted(set(shown.values()), reverse=True)[:2]
    return {m: ordered.index(v) + 1 for m, v in shown.items() if v in ordered}


def marks(report: Report, dataset: str, metric: str) -> dict[str, str]:
    """Method -> '+' / '-' (significantly better / worse than the baseline) or the letters it beats."""
    out: dict[str, str] = {}
    letters = row_letters(report)
    for c in report.comparisons_for(dataset, metric):
        if not c.significant or c.stats.mean_diff == 0:
            continue
        if report.baseline is not None:
            out[c.method] = "+" if c.stats.mean_diff > 0 else "-"
        else:
            winner, loser = (c.method, c.other) if c.stats.mean_diff > 0 else (c.other, c.method)
            out[winner] = "".join(sorted(out.get(winner, "") + letters[loser]))
    return out


def finite_or_none(value: Any) -> Any:
    """NaN and infinities become None (JSON null, empty CSV field)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def report_dict(report: Report) -> dict[str, Any]:
    """The whole report as plain JSON-ready data (NaN -> None)."""

    def clean(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        return finite_or_none(obj)

    settings = {
        k: getattr(report, k)
        for k in ("baseline", "test", "correction", "alpha", "n_permutations", "n_resamples", "confidence", "seed")
    }
    settings["test_name"], settings["correction_name"] = TESTS[report.test], CORRECTIONS[report.correction]
    settings["correction_family"] = "all comparisons of one dataset's table"
    return clean(
        {
            "settings": settings,
            "datasets": report.datasets,
            "methods": report.methods,
            "metrics": report.metrics,
            "protocols": report.protocols,
            **({"published": report.published, "reference": report.reference} if report.published else {}),
            **({"notes": report.notes} if report.notes else {}),
            "cells": [asdict(c) for c in report.cells],
            "comparisons": [asdict(c) for c in report.comparisons],
        }
    )


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (one pass, so backslashes are not doubled)."""
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIALS[m.group()], str(text))


# --- renderers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Style:
    """How one output format spells the pieces of a table and its caption."""

    escape: Callable[[str], str]
    pm: str
    up: str
    down: str
    best: str
    second: str
    p_below: str  # format string taking alpha


_MARKDOWN = _Style(str, "±", "↑", "↓", "in **bold**", "in *italics*", "p < {}")
_LATEX = _Style(latex_escape, r"$\pm$", r"$^{\uparrow}$", r"$^{\downarrow}$", "in bold", "underlined", "$p < {}$")
_TERMINAL = _Style(str, "±", "↑", "↓", "in bold", "underlined", "p < {}")


@dataclass(frozen=True)
class _Entry:
    """One table cell, format-neutral."""

    status: str  # "ok", "failed", "damaged" (a stored run is damaged) or "missing" (method not run on this dataset)
    mean: str = ""
    std: str = ""  # empty with a single seed
    place: int | None = None  # 1 best, 2 second
    mark: str = ""  # '+', '-' or letters of methods significantly beaten


def _rows(report: Report, dataset: str) -> list[tuple[str, list[_Entry]]]:
    letters = row_letters(report)
    per_metric = {m: (places(report, dataset, m), marks(report, dataset, m)) for m in report.metrics}
    rows = []
    for method in report.methods:
        cell = report.cell(dataset, method)
        label = f"({letters[method]}) {method}" if letters else method
        entries = []
        for metric in report.metrics:
            if cell is None or cell.failed:
                entries.append(_Entry("missing" if cell is None else "damaged" if cell.damaged else "failed"))
                continue
            std = cell.std[metric]
            ranked, marked = per_metric[metric]
            entries.append(
                _Entry(
                    "ok",
                    f"{cell.mean[metric]:.{report.decimals}f}",
                    "" if math.isnan(std) else f"{std:.{report.decimals}f}",
                    ranked.get(method),
                    marked.get(method, ""),
                )
            )
        rows.append((label, entries))
        if any(report.published_value(dataset, method, m) is not None for m in report.metrics):
            rows.append(("  published (Δ%)", [_published_entry(report, dataset, method, m) for m in report.metrics]))
    return rows


def _published_entry(report: Report, dataset: str, method: str, metric: str) -> _Entry:
    value = report.published_value(dataset, method, metric)
    if value is None:
        return _Entry("missing")
    delta = report.delta_pct(dataset, method, metric)
    return _Entry("published", f"{value:.{report.decimals}f}" + (f" ({delta:+.1f}%)" if delta is not None else ""))


def caption(report: Report, dataset: str, style: _Style = _MARKDOWN) -> str:
    """Dataset, protocol card, seeds, emphasis and significance legend, in one paragraph.

    Results on SYNTHETIC demo data say so first, so they never pass for results on real data.
    """
    text = _caption_body(report, dataset, style)
    return f"{style.escape(SYNTHETIC_NOTE)}. {text}" if is_synthetic_name(dataset) else text


def _caption_body(report: Report, dataset: str, style: _Style) -> str:
    esc, protocol = style.escape, report.protocols.get(dataset, {})
    if not protocol:
        return f"Results on {esc(dataset)}: no finished run."
    masked = "history masked" if protocol.get("mask_history") else "history not masked"
    negatives = (protocol.get("definition") or {}).get("negatives") or 0
    if negatives:
        definition = protocol["definition"]
        sampler = "by training popularity" if definition.get("sampler") == "popularity" else "uniformly"
        ranking = (
            f"each target ranked against {negatives} negatives sampled {sampler} "
            f"(seed {definition.get('sample_seed')}, the same for every method)"
        )
    else:
        count = f"{protocol['num_candidates']:,} " if "num_candidates" in protocol else ""
        ranking = f"full ranking over all {count}items"
    ties = f", ties {esc(protocol['ties'])}" if protocol.get("ties") else ""
    name = f"protocol {esc(protocol['name'])}, " if protocol.get("name") else ""
    text = (
        f"Results on {esc(dataset)} ({esc(protocol.get('split', 'test'))} split, {protocol['num_users']:,} users): "
        f"{name}{ranking}, {masked}{ties}. "
    )
    seeds = sorted({len(c.seeds) for c in report.cells if c.dataset == dataset and not c.failed})
    if seeds and seeds[-1] > 1:
        span = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        text += f"Mean {style.pm} sample std over {span} seeds. "
    text += f"Best {style.best}, second {style.second}. "
    untrained = [c.method for c in report.cells if c.dataset == dataset and not c.failed and not c.trained]
    if untrained:
        text += f"Not trained on this dataset (epochs = 0, zero-shot): {esc(', '.join(untrained))}. "
    if report.published.get(dataset):
        text += (
            f"Published numbers from {esc(report.reference)}, with the measured mean's difference to them in "
            "% (Δ = measured / published - 1). "
        )
    if report.notes.get(dataset):
        text += f"{esc(report.notes[dataset])} "
    comparisons = report.comparisons_for(dataset)
    test = TESTS[report.test] + (f", {report.n_permutations:,} sign flips" if report.test == "permutation" else "")
    family = f"the {len(comparisons)} comparison{'s' * (len(comparisons) != 1)} in this table"
    correction = (
        "no correction" if report.correction == "none" else f"{CORRECTIONS[report.correction]} correction over {family}"
    )
    how = f"(two-sided {test}, {correction}, {style.p_below.format(report.alpha)})"
    if report.baseline is not None and not comparisons:
        baseline_cell = report.cell(dataset, report.baseline)
        why = (
            "has no finished run here"
            if baseline_cell is None or baseline_cell.failed
            else "is the only method with a finished run here"
        )
        return text + f"No significance tests: baseline {esc(report.baseline)} {why}."
    if report.baseline is not None:
        return text + f"{style.up}/{style.down}: significantly better/worse than {esc(report.baseline)} {how}."
    return text + f"Letters: significantly better than the methods with those letters {how}."


def _failed_word(cell: Cell) -> str:
    return "damaged" if cell.damaged else "failed"


def _markdown_table(report: Report, dataset: str) -> str:
    from tabulate import tabulate

    def text(entry: _Entry) -> str:
        if entry.status == "published":
            return entry.mean
        if entry.status != "ok":
            return entry.status if entry.status in ("failed", "damaged") else "–"
        value = {1: f"**{entry.mean}**", 2: f"*{entry.mean}*"}.get(entry.place, entry.mean)
        value += f" ± {entry.std}" if entry.std else ""
        return value + {"+": " ↑", "-": " ↓", "": ""}.get(entry.mark, f"<sup>{entry.mark}</sup>")

    rows = [[label, *map(text, entries)] for label, entries in _rows(report, dataset)]
    headers = ["Method", *map(metric_label, report.metrics)]
    table = tabulate(
        rows, headers, tablefmt="github", disable_numparse=True, colalign=("left", *["right"] * len(report.metrics))
    )
    failures = "".join(
        f"- {c.method} {_failed_word(c)}: {c.error}\n" for c in report.cells if c.dataset == dataset and c.failed
    )
    return f"### {dataset}\n\n{table}\n\n{caption(report, dataset, _MARKDOWN)}\n" + (
        f"\n{failures}" if failures else ""
    )


def _latex_table(report: Report, dataset: str) -> str:
    def text(entry: _Entry) -> str:
        if entry.status == "published":
            return latex_escape(entry.mean)
        if entry.status != "ok":
            return rf"\textit{{{entry.status}}}" if entry.status in ("failed", "damaged") else "--"
        value = {1: rf"\textbf{{{entry.mean}}}", 2: rf"\underline{{{entry.mean}}}"}.get(entry.place, entry.mean)
        value += rf"{{\scriptsize ${{\pm}}${entry.std}}}" if entry.std else ""
        return value + {"+": _LATEX.up, "-": _LATEX.down, "": ""}.get(entry.mark, rf"$^{{\mathrm{{{entry.mark}}}}}$")

    lines = [
        r"\begin{table}[t]",
        r"  \centering",
        rf"  \caption{{{caption(report, dataset, _LATEX)}}}",
        rf"  \label{{tab:recbench-{re.sub(r'[^A-Za-z0-9]+', '-', dataset)}}}",
        rf"  \begin{{tabular}}{{l{'c' * len(report.metrics)}}}",
        r"    \toprule",
        "    " + " & ".join(["Method", *map(metric_label, report.metrics)]) + r" \\",
        r"    \midrule",
        *(
            "    " + " & ".join([latex_escape(label), *map(text, entries)]) + r" \\"
            for label, entries in _rows(report, dataset)
        ),
        r"    \bottomrule",
        r"  \end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _rich_table(report: Report, dataset: str) -> Any:
    from rich.table import Table
    from rich.text import Text

    def text(entry: _Entry) -> Text:
        if entry.status == "published":
            return Text(entry.mean, style="dim")
        if entry.status != "ok":
            return Text(entry.status, style="red") if entry.status in ("failed", "damaged") else Text("–", style="dim")
        value = Text(entry.mean, style={1: "bold", 2: "underline"}.get(entry.place, ""))
        value.append(f" ± {entry.std}" if entry.std else "")
        return value.append({"+": " ↑", "-": " ↓", "": ""}.get(entry.mark, f" ^{entry.mark}"), style="cyan")

    failures = "".join(
        f"\n{c.method} {_failed_word(c)}: {c.error}" for c in report.cells if c.dataset == dataset and c.failed
    )
    table = Table(
        "Method",
        *map(metric_label, report.metrics),
        title=dataset,
        caption=caption(report, dataset, _TERMINAL) + failures,
        caption_justify="left",
    )
    for label, entries in _rows(report, dataset):
        table.add_row(label, *map(text, entries))
    return table


_CSV_COLUMNS = [
    "dataset",
    "metric",
    "method",
    "seeds",
    "status",
    "error",
    "mean",
    "std",
    "vs",
    "n_users",
    "mean_diff",
    "relative_pct",
    "effect_dz",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "significant",
    "wins",
    "ties",
    "losses",
    "published",
    "delta_pct",
]


def _csv_text(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, _CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for dataset in report.datasets:
        for metric in report.metrics:
            for cell in (report.cell(dataset, m) for m in report.methods):
                if cell is None:
                    continue
                base = {
                    "dataset": dataset,
                    "metric": metric,
                    "method": cell.method,
                    "seeds": " ".join(map(str, cell.seeds)),
                    "status": _failed_word(cell) if cell.failed else "finished",
                    "error": cell.error or "",
                    "mean": finite_or_none(cell.mean.get(metric)),
                    "std": finite_or_none(cell.std.get(metric)),
                    "published": report.published_value(dataset, cell.method, metric),
                    "delta_pct": finite_or_none(report.delta_pct(dataset, cell.method, metric)),
                }
                mine = [c for c in report.comparisons_for(dataset, metric) if c.method == cell.method]
                for c in mine:
                    numbers = {k: finite_or_none(v) for k, v in asdict(c.stats).items() if k in _CSV_COLUMNS}
                    writer.writerow(
                        {**base, "vs": c.other, **numbers, "p_adjusted": c.p_adjusted, "significant": c.significant}
                    )
                if not mine:
                    writer.writerow(base)
    return buffer.getvalue()

"""``recbench leaderboard``: a report from stored runs only; no model is loaded.

Every finished run below a runs directory contributes its per-user ranks; metrics and tests are
recomputed from them, so a leaderboard can be made on any machine from copied run directories.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from recbench.errors import RecbenchError, RunError, UnknownNameError
from recbench.files import atomic_write_bytes
from recbench.results.report import Report, RunResult, build_report
from recbench.results.stats import DEFAULT_PERMUTATIONS, DEFAULT_RESAMPLES
from recbench.runs.protocols import definition_of, name_of
from recbench.runs.record import DamagedRunError, RunRecord, find_runs

DEFAULT_METRICS = ("hr@10", "ndcg@10", "hr@50", "ndcg@50")  # the columns of the published tables
FORMATS = ("md", "tex", "csv", "json")
_SUFFIXES = {".md": "md", ".markdown": "md", ".tex": "tex", ".csv": "csv", ".json": "json"}
PRETRAINED_SUFFIX = " (pre-trained)"


def method_label(config: dict) -> str:
    """A run's row in the leaderboard: its method, marked when it was fine-tuned from pre-training,
    so that a method from scratch and pre-trained are two rows compared like any two methods."""
    return config["method"] + (PRETRAINED_SUFFIX if config.get("pretrained") else "")


def load_results(
    runs_dir: Path | str, datasets: Sequence[str] | None = None, split: str = "test", protocol: str | None = None
) -> list[RunResult]:
    """Per-user ranks and protocol of every finished run (optionally of some datasets only).

    ``protocol`` (a name) takes every run's results under that protocol; a run without them is an
    error saying how to add them. None takes each run's first protocol (a table of runs whose first
    protocols differ is refused when the report is built).

    A method's runs from scratch and its runs fine-tuned from pre-training are two rows (see
    :func:`method_label`). Runs of one method with different configs (an ablation) are one row
    per config, named by the settings in which they differ (see :func:`config_labels`). Two
    finished runs of one (dataset, row, seed) are an error rather than a silent choice; so are
    runs of one dataset name made on different data.
    """
    runs: list[tuple[RunRecord, dict]] = []  # (run, its config.json, read once)
    damaged: list[RunResult] = []
    first_fingerprint: dict[str, tuple[str, str]] = {}  # dataset -> (fingerprint, run path)
    available: set[str] = set()
    for run in find_runs(runs_dir):
        try:
            config = checked_config(run, Path(runs_dir))
        except DamagedRunError as err:
            damaged.append(_damaged_result(run, Path(runs_dir), str(err)))
            available.add(damaged[-1].dataset)
            continue
        dataset = config["dataset"]
        available.add(dataset)
        if datasets and dataset not in datasets:
            continue
        fingerprint = config.get("fingerprint")
        known = first_fingerprint.setdefault(dataset, (fingerprint, str(run.path)))
        if fingerprint != known[0]:
            raise RunError(
                f"runs of dataset '{dataset}' were made on different data "
                f"(fingerprint {fingerprint} in {run.path}, {known[0]} in {known[1]})"
            )
        runs.append((run, config))
    for name in datasets or ():
        if name not in available:
            raise UnknownNameError("dataset", name, available, f" (no finished runs of it under {runs_dir})")
    damaged = [r for r in damaged if not datasets or r.dataset in datasets]
    if not runs and not damaged:
        raise RunError(f"no finished runs under {runs_dir}")
    labels = config_labels([config for _, config in runs])
    results: list[RunResult] = []
    seen: dict[tuple[str, str, int], str] = {}
    for (run, config), method in zip(runs, labels):
        dataset, seed = config["dataset"], int(config.get("seed", 0))
        if (dataset, method, seed) in seen:
            raise RunError(
                f"two finished runs of {method} on {dataset} with seed {seed} and the same config: "
                f"{seen[dataset, method, seed]} and {run.path}; move one out of {runs_dir}"
            )
        seen[dataset, method, seed] = str(run.path)
        results.append(run_result(run, dataset, method, seed, split, protocol))
    return results + damaged


def run_result(
    run: RunRecord, dataset: str, method: str, seed: int, split: str = "test", protocol: str | None = None
) -> RunResult:
    """One finished run as a report row: its ranks and protocol (``protocol``: a name, None: the run's
    first), or, if its files are damaged, why."""
    try:
        metrics = run.metrics
        record = run.evaluation(protocol)
        ranks = run.ranks(split, protocol)
    except DamagedRunError as err:  # shown as damaged: never dropped from, nor averaged into, a mean
        return RunResult(dataset, method, seed, error=str(err), source=str(run.path), damaged=True)
    recorded = (record.get("valid_protocol") if split == "valid" else None) or record.get("protocol", {})
    protocol_card = {**recorded, "name": name_of(recorded), "definition": definition_of(recorded), "split": split}
    trained = (metrics.get("fit") or {}).get("epochs_run", 1) != 0
    return RunResult(dataset, method, seed, ranks, protocol_card, source=str(run.path), trained=trained)


def checked_config(run: RunRecord, runs_dir: Path) -> dict:
    """A finished run's config, verified, and consistent with where the run lies: a run filed under
    ``<runs_dir>/<dataset>/<method>/`` whose config names another dataset would be listed under the
    wrong caption, so it is damaged."""
    config = run.config
    parts = run.path.relative_to(runs_dir).parts
    if len(parts) >= 3 and "_pretrain" not in parts and parts[-3] != config.get("dataset"):
        raise DamagedRunError(
            f"run {run.path} is damaged: its config names dataset {config.get('dataset')!r} "
            f"but it lies under {parts[-3]!r}"
        )
    return config


def _damaged_result(run: RunRecord, runs_dir: Path, error: str) -> RunResult:
    """A damaged run as a table row: dataset, method and seed from its place in the runs directory
    (its own files cannot be trusted), shown as damaged."""
    parts = run.path.relative_to(runs_dir).parts
    dataset, method = (parts[-3], parts[-2]) if len(parts) >= 3 else ("?", "?")
    seed = int(match.group(1)) if (match := re.match(r"seed(\d+)-", parts[-1])) else 0
    return RunResult(dataset, method, seed, error=error, source=str(run.path), damaged=True)


def config_labels(configs: Sequence[dict]) -> list[str]:
    """The leaderboard row of each run config: :func:`method_label`, plus ``[key=value, ...]`` for
    the method-config settings that differ between that method's runs, so that an ablation
    (``--set use_gate=false``) is its own row next to the default. A method run with one config
    keeps its plain name. Computed over all the runs at once so a row has one name in every table."""
    settings: dict[str, list[dict]] = {}
    for config in configs:
        settings.setdefault(method_label(config), []).append(config.get("config", {}))
    differing = {
        label: sorted(key for key in set().union(*group) if len({_format_setting(c.get(key)) for c in group}) > 1)
        for label, group in settings.items()
    }
    labels = []
    for config in configs:
        label = method_label(config)
        keys = differing[label]
        suffix = ", ".join(f"{key}={_format_setting(config.get('config', {}).get(key))}" for key in keys)
        labels.append(f"{label} [{suffix}]" if keys else label)
    return labels


def _format_setting(value: object) -> str:
    """A config value as typed on the command line: true/false, 0.001, [next,mask], {a:1}."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_setting(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_format_setting(v)}" for k, v in sorted(value.items())) + "}"
    return "none" if value is None else str(value)


def output_files(out: Path | str, formats: Sequence[str] | None = None) -> list[tuple[Path, str]]:
    """Where ``--out`` writes, the same in every command: a path whose suffix is a table format
    (``.md``, ``.tex``, ``.csv``, ``.json``) is that one file; any other path is a prefix, written once
    per format (``OUT.md``, ``OUT.tex``, ...; default md)."""
    unknown = [f for f in formats or () if f not in FORMATS]
    if unknown:
        raise RecbenchError(f"unknown format(s) {', '.join(unknown)}; expected one of: {', '.join(FORMATS)}")
    out = Path(out)
    named = _SUFFIXES.get(out.suffix.lower())
    if named is not None:
        if formats and set(formats) != {named}:
            raise RecbenchError(
                f"--out {out} names a .{out.suffix.lstrip('.')} file but --format asks for {', '.join(formats)}; "
                "give a prefix without a suffix to write several formats"
            )
        return [(out, named)]
    return [(Path(f"{out}.{fmt}"), fmt) for fmt in (formats or ["md"])]


def output_prefix(out: Path | str) -> str:
    """``out`` without a table-format suffix: what figures and further reports are named after."""
    path = Path(out)
    return str(path.with_suffix("")) if path.suffix.lower() in _SUFFIXES else str(out)


def write_report(report: Report, out: Path | str, formats: Sequence[str] | None = None) -> list[Path]:
    """Write ``report`` as :func:`output_files` says; returns the files written."""
    written = []
    for path, fmt in output_files(out, formats):
        atomic_write_bytes(path, report.render(fmt).encode())
        written.append(path)
    return written


def leaderboard(
    runs_dir: Path | str = "runs",
    metrics: Sequence[str] = DEFAULT_METRICS,
    datasets: Sequence[str] | None = None,
    baseline: str | None = None,
    test: str = "t",
    correction: str = "holm",
    alpha: float = 0.05,
    fmt: str | Sequence[str] | None = None,
    out: Path | str | None = None,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    split: str = "test",
    protocol: str | None = None,
    by: str | None = None,
) -> Report:
    """Build the report of the finished runs under ``runs_dir``; with ``out``, also write it there
    (:func:`output_files`: a file named by its suffix, or a prefix written in each format ``fmt``).

    ``protocol`` names the protocol whose results are tabulated (None: each run's first; they must
    agree). ``by`` (history or popularity) breaks every table down by groups of users
    (:mod:`recbench.results.breakdown`).
    """
    formats = [fmt] if isinstance(fmt, str) else list(fmt) if fmt else None
    if out is not None:
        output_files(out, formats)  # a bad --out / --format pair fails before any run is read
    elif formats and any(f not in FORMATS for f in formats):
        raise RecbenchError(f"unknown format '{formats[0]}'; expected one of: {', '.join(FORMATS)}")
    results = load_results(runs_dir, datasets, split, protocol)
    options = dict(n_permutations=n_permutations, n_resamples=n_resamples, seed=seed)
    if by is not None:
        from recbench.results.breakdown import breakdown_of

        report = breakdown_of(results, by, metrics, baseline, test, correction, alpha, **options)
    else:
        report = build_report(results, metrics, baseline, test, correction, alpha, **options)
    if out is not None:
        write_report(report, out, formats)
    return report

"""``recbench compare``: the grid (dataset x method x seed) -> runs -> one Report.

Each cell goes through the library (download -> encode -> pre-train -> train -> evaluate) via
:func:`recbench.runs.experiment.run_experiment`, reusing finished runs and resuming unfinished
ones. A failing cell is recorded with its error and never stops the others. Datasets are made
available once, before any cell runs (a dataset that cannot be made fails only its own cells).
Cells run in this process (``jobs=1``), in a local process pool (``jobs > 1``, spawned workers
with cores / jobs torch threads each), or as Ray tasks on a Ray cluster (``executor="ray"``,
optional extra ``recbench[ray]``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from recbench.errors import RecbenchError

if TYPE_CHECKING:
    from recbench.runs.tracking import TrackingSpec

BASE_SEED = 2020  # RecBole's default seed; seed i of a grid is BASE_SEED + i

# ``--quick``: a smoke-test preset (small widths, few epochs) so a whole grid runs in minutes on a
# laptop CPU, e.g. the SYNTHETIC demo suite. Applied before --set (which wins), to every method
# that has the key. Its numbers are NOT the published protocol (that is: no preset).
QUICK: dict[str, Any] = {
    "epochs": 10,
    "patience": 3,
    "pretrain_epochs": 2,
    "search_steps": 50,
    "long_layers": 2,  # AutoMLP's 8 + 8 SRS-MLP layers, cut to keep a quick grid quick
    "short_layers": 2,
    "max_seq_length": 20,
    "hidden_size": 64,
    "inner_size": 128,
    "item_size": 64,
    "semantic_hidden_size": 128,
    "channel_hidden_size": 64,
    "code_cap": 64,  # VQ-Rec's centroids per sub-space: a demo domain has fewer than 256 training items
}


@dataclass(frozen=True)
class MethodRow:
    """A report row of a grid: a registered method under a label, with its own config settings
    (a recipe's rows: the paper's name, and e.g. an ablation switching a component off)."""

    label: str
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    pretrain: bool = True  # False: trained from scratch even when the grid pre-trains (an ablation row)
    init: str = ""  # official:NAME or a path: fine-tuned from that checkpoint, never from the grid's pre-training
    dataset_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # per dataset, over ``settings``

    def settings_for(self, dataset: str) -> dict[str, Any]:
        """The row's settings on ``dataset``: its own, then that dataset's."""
        return {**self.settings, **self.dataset_settings.get(dataset, {})}


@dataclass(frozen=True)
class GridCell:
    """One (dataset, method, seed) cell; ``label`` and ``settings`` (JSON) when it is a :class:`MethodRow`."""

    dataset: str
    method: str
    seed: int
    label: str = ""
    settings: str = ""  # JSON text: the cell stays hashable and picklable
    pretrain: bool = True  # False: never fine-tuned from the grid's pre-training
    init: str = ""  # a checkpoint (``train --init``) the cell starts from instead of any pre-training

    @property
    def grid_pretraining(self) -> bool:
        """False if the cell must not start from the grid's pre-training (an ablation row, or its own init)."""
        return self.pretrain and not self.init

    @property
    def row(self) -> str:
        """The cell's row in the report."""
        return self.label or self.method

    def layers(self, overrides: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The config layers of this cell: the grid's overrides its method has, then the row's settings."""
        return [*overrides_for(self.method, overrides), *([json.loads(self.settings)] if self.settings else [])]


@dataclass
class CellOutcome:
    """How a cell ended: the run directory, or the error that stopped it."""

    cell: GridCell
    run_dir: str | None = None
    error: str | None = None
    reused: bool = False
    seconds: float = 0.0
    traceback: str | None = None  # full traceback of an unexpected error (a bug, not a user error)
    traceback_file: str | None = None  # where compare() wrote it


def ensure_dataset(name: str, show_progress: bool = False) -> None:
    """Make the dataset available: nothing if downloaded, else :func:`recbench.data.download.download`
    (fetch and preprocess the raw files, or generate SYNTHETIC data); its errors name the fix."""
    from recbench.data.dataset import is_downloaded
    from recbench.data.download import download

    if not is_downloaded(name):
        download(name, show_progress=show_progress)


def prepare_datasets(names: Sequence[str], show_progress: bool = False) -> dict[str, str]:
    """Make each dataset available once, in this process; returns name -> why it is unavailable."""
    problems = {}
    for name in dict.fromkeys(names):
        try:
            ensure_dataset(name, show_progress)
        except Exception as err:  # the cells that need it report it as their error
            problems[name] = str(err) if isinstance(err, RecbenchError) else repr(err)
    return problems


def run_cell(
    cell: GridCell,
    runs_dir: str,
    overrides: list[dict[str, Any]],
    device: str,
    pretrain_on: Sequence[str] | None = None,
    pretrain_seed: int | None = None,
    protocols: Sequence[str] | None = None,
    threads: int | None = None,
    log_to: Sequence[TrackingSpec] = (),
) -> CellOutcome:
    """Run one cell to completion (or reuse it); any failure becomes ``CellOutcome.error``.

    ``log_to`` (plain data, sent to worker processes as is) opens the cell's trackers here, in the
    process that trains it: one tracking run per cell.
    """
    started = time.perf_counter()
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        from recbench.registry import get_method
        from recbench.runs.experiment import run_experiment

        transfer = takes_sources(get_method(cell.method).cls, cell.grid_pretraining)
        sources = list(pretrain_on or []) if transfer else []
        for name in [cell.dataset, *sources]:
            ensure_dataset(name)
        own = cell.layers(overrides)
        result = run_experiment(
            cell.method,
            cell.dataset,
            seed=cell.seed,
            overrides=own,
            runs_dir=runs_dir,
            resume=True,
            device=device,
            show_progress=False,
            pretrain_on=sources or None,
            pretrain_seed=pretrain_seed,
            init=cell.init or None,
            protocols=list(protocols) if protocols else None,
            log_to=log_to,
        )
        return CellOutcome(cell, str(result.run.path), reused=result.reused, seconds=time.perf_counter() - started)
    except Exception as err:  # one failing cell must not stop the grid
        if isinstance(err, RecbenchError):
            return CellOutcome(cell, error=str(err), seconds=time.perf_counter() - started)
        message = "".join(traceback.format_exception_only(type(err), err)).strip()
        return CellOutcome(cell, error=message, seconds=time.perf_counter() - started, traceback=traceback.format_exc())


def takes_sources(cls: Any, pretrain: bool = True) -> bool:
    """True if a cell of this method class pre-trains on the grid's source domains (``--pretrain-on``):
    a transfer method in a row that pre-trains, except one that pre-trains on its own target (S3-Rec)."""
    return pretrain and cls.supports_pretraining and not cls.pretrains_on_target


def overrides_for(method: str, overrides: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grid-wide overrides restricted to the keys this method's config has, except the keys its
    variant preset defines (``--set epochs=20`` must not make ``idp-zeroshot`` train, nor
    ``--set use_id=false`` turn ``unisrec-id`` into ``unisrec``)."""
    from recbench.registry import get_method

    entry = get_method(method)
    fields = entry.cls.Config.model_fields
    return [{k: v for k, v in layer.items() if k in fields and k not in entry.preset} for layer in overrides]


def check_overrides(methods: Sequence[str], overrides: list[dict[str, Any]]) -> None:
    """A key that no compared method knows is a typo: fail before running anything."""
    from recbench.errors import UnknownNameError
    from recbench.registry import get_method

    known = set().union(*(get_method(m).cls.Config.model_fields for m in methods))
    for layer in overrides:
        for key in layer:
            if key not in known:
                raise UnknownNameError(
                    "config key", key, known, extra=f" (no compared method has it: {', '.join(methods)})"
                )


def grid(datasets: Sequence[str], methods: Sequence[str | MethodRow], seeds: int) -> list[GridCell]:
    """Every (dataset, method, seed) cell, dataset-major; seeds are BASE_SEED, BASE_SEED + 1, ..."""
    return [
        GridCell(d.lower(), m.lower(), BASE_SEED + s)
        if isinstance(m, str)
        else GridCell(
            d.lower(),
            m.method.lower(),
            BASE_SEED + s,
            m.label,
            json.dumps(m.settings_for(d), sort_keys=True) if m.settings_for(d) else "",
            m.pretrain,
            m.init,
        )
        for d in datasets
        for m in methods
        for s in range(seeds)
    ]


Listener = Callable[[GridCell, str, CellOutcome | None], None]  # (cell, "running" | "done" | "failed", outcome)


def run_grid(
    cells: Sequence[GridCell],
    runs_dir: Path | str,
    overrides: list[dict[str, Any]] | None = None,
    jobs: int = 1,
    executor: str = "local",
    device: str = "auto",
    listener: Listener | None = None,
    pretrain_on: Sequence[str] | None = None,
    unavailable: dict[str, str] | None = None,
    pretrain_seed: int | None = None,
    protocols: Sequence[str] | None = None,
    log_to: str | TrackingSpec | Sequence[str | TrackingSpec] | None = None,
) -> list[CellOutcome]:
    """Run every cell; outcomes in the order of ``cells``.

    Locally, every dataset is made available first, once (``unavailable``: the caller already did,
    with these problems); a cell whose data cannot be made fails with that error. Transfer methods
    are pre-trained on ``pretrain_on`` first, once per (method, seed), or once per method with a
    fixed ``pretrain_seed``, in this process, so parallel cells only ever reuse a finished
    pre-training run. ``log_to`` mirrors each run trained now to experiment trackers (see
    :mod:`recbench.runs.tracking`), one tracking run per cell and per pre-training.
    """
    from recbench.runs import tracking

    if executor not in ("local", "ray"):
        raise RecbenchError(f"unknown executor '{executor}'; expected local or ray")
    # the MLflow store is made here, before parallel cells race to create it
    trackers = tracking.prepare(tracking.parse_log_to(log_to), runs_dir)
    overrides = overrides or []
    notify = listener or (lambda cell, state, outcome: None)
    outcomes: dict[GridCell, CellOutcome] = {}
    if executor == "local":  # each dataset once, here: not concurrently in workers, nor once per cell
        if unavailable is None:
            unavailable = prepare_datasets([*(cell.dataset for cell in cells), *(pretrain_on or [])])
        for cell in cells:
            missing = [name for name in _needs(cell, pretrain_on) if name in unavailable]
            if missing:
                outcomes[cell] = CellOutcome(cell, error=unavailable[missing[0]])
                notify(cell, "failed", outcomes[cell])
    ready = [cell for cell in cells if cell not in outcomes]
    # Rows whose settings resolve to the same run (e.g. two ablation rows that both name the default)
    # run once: in parallel they would contend for one run directory.
    same_run: dict[GridCell, GridCell] = {}
    first_of: dict[tuple, GridCell] = {}
    for cell in ready:
        key = _run_key(cell, overrides, pretrain_on)
        same_run[cell] = first_of.setdefault(key, cell) if key is not None else cell
    duplicates = [cell for cell in ready if same_run[cell] is not cell]
    ready = [cell for cell in ready if same_run[cell] is cell]
    if pretrain_on and (jobs > 1 or executor != "local"):
        _pretrain_first(ready, str(runs_dir), overrides, device, pretrain_on, pretrain_seed, trackers)
    arguments: dict[str, Any] = {
        "runs_dir": str(runs_dir),
        "overrides": overrides,
        "device": device,
        "pretrain_on": list(pretrain_on or []),
        "pretrain_seed": pretrain_seed,
        "log_to": trackers,
        "protocols": list(protocols or []),
    }
    if executor == "ray":
        finished = _run_ray(ready, arguments, notify)
    elif jobs <= 1:
        finished = []
        for cell in ready:
            notify(cell, "running", None)
            finished.append(run_cell(cell, **arguments))
            notify(cell, "failed" if finished[-1].error else "done", finished[-1])
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)  # jobs x threads <= cores
        pool_options = {"initializer": init_worker, "initargs": (os.getpid(),)}
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), **pool_options) as pool:
            futures = {pool.submit(run_cell, cell, **arguments, threads=threads): cell for cell in ready}
            finished = _collect(futures, notify, jobs)
    outcomes.update(zip(ready, finished))
    for cell in duplicates:
        outcomes[cell] = replace(outcomes[same_run[cell]], cell=cell, reused=True)
        notify(cell, "failed" if outcomes[cell].error else "done", outcomes[cell])
    return [outcomes[cell] for cell in cells]


def _run_key(cell: GridCell, overrides: list[dict[str, Any]], pretrain_on: Sequence[str] | None) -> tuple | None:
    """What decides a cell's run: its dataset, method, seed, resolved config and pre-training (None if unknown)."""
    from recbench.registry import get_method, resolve_config

    try:
        entry = get_method(cell.method)
        config = resolve_config(entry, *cell.layers(overrides)).model_dump_json()
    except RecbenchError:  # the cell reports it
        return None
    transfer = takes_sources(entry.cls, cell.grid_pretraining) and bool(pretrain_on)
    return (cell.dataset, entry.name, cell.seed, config, transfer, cell.init)


def init_worker(parent_pid: int) -> None:
    """Worker initializer: flush denormal floats for the whole worker process before torch starts
    its threads (as the ``compare`` command does for itself), and end with the parent."""
    from recbench.runs.trainer import flush_denormals_in_this_process

    flush_denormals_in_this_process()
    stop_with_parent(parent_pid)


def stop_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Worker initializer: end this worker as soon as the compare process that started it is gone.

    A pool's workers outlive a parent killed with ``kill -9`` and would keep training cells nobody
    collects. A daemon thread watches the parent's pid; on its death the worker exits at once (its
    run keeps its last checkpoint and its lock dies with it, so a new compare resumes it).
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(3)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def _needs(cell: GridCell, pretrain_on: Sequence[str] | None) -> list[str]:
    """The datasets a cell reads: its own, and the sources if its method pre-trains."""
    from recbench.registry import get_method

    try:
        transfer = takes_sources(get_method(cell.method).cls, cell.grid_pretraining)
    except RecbenchError:  # an unknown method: the cell itself reports that
        transfer = False
    return [cell.dataset, *(pretrain_on or [])] if transfer else [cell.dataset]


def _pretrain_first(
    cells: Sequence[GridCell],
    runs_dir: str,
    overrides: list[dict[str, Any]],
    device: str,
    sources: Sequence[str],
    pretrain_seed: int | None,
    log_to: Sequence[TrackingSpec] = (),
) -> None:
    from recbench.registry import get_method, resolve_config
    from recbench.runs.experiment import pretrain, resolve_device

    done = set()
    for cell in cells:
        entry = get_method(cell.method)
        seed = cell.seed if pretrain_seed is None else pretrain_seed
        if not takes_sources(entry.cls, cell.grid_pretraining) or (entry.name, seed) in done:
            continue
        done.add((entry.name, seed))
        try:
            for name in sources:
                ensure_dataset(name)
            pretrain(
                entry,
                resolve_config(entry, *cell.layers(overrides)),
                sources,
                seed,
                Path(runs_dir),
                resolve_device(device),
                False,
                log_to,
            )
        except Exception:  # the cell runs it again and reports the error as its own
            pass


def _collect(futures: dict[Future, GridCell], notify: Listener, jobs: int) -> list[CellOutcome]:
    # A pool marks one call more than it has workers as running (its call queue): show at most jobs.
    pending, outcomes, started = dict(futures), {}, set()
    while pending:
        for future, cell in list(pending.items()):
            if future.done():
                try:
                    outcome = future.result()
                except Exception as err:  # e.g. a worker killed for lack of memory
                    outcome = CellOutcome(cell, error=f"worker process failed: {err!r}")
                outcomes[cell] = outcome
                notify(cell, "failed" if outcome.error else "done", outcome)
                del pending[future]
            elif future.running() and cell not in started and len(started - outcomes.keys()) < jobs:
                started.add(cell)
                notify(cell, "running", None)
        time.sleep(0.2)
    return [outcomes[cell] for cell in futures.values()]


def _run_ray(cells: Sequence[GridCell], arguments: dict[str, Any], notify: Listener) -> list[CellOutcome]:
    try:
        import ray
    except ImportError:
        raise RecbenchError("--executor ray needs Ray: pip install 'recbench[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, log_to_driver=False)
    remote_cell = ray.remote(run_cell)
    references = {remote_cell.remote(cell, **arguments): cell for cell in cells}
    for cell in cells:
        notify(cell, "running", None)
    outcomes: dict[GridCell, CellOutcome] = {}
    pending = list(references)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        cell = references[done[0]]
        try:
            outcome = ray.get(done[0])
        except Exception as err:  # a lost node or worker fails its cell only
            outcome = CellOutcome(cell, error=f"Ray task failed: {err!r}")
        outcomes[cell] = outcome
        notify(cell, "failed" if outcome.error else "done", outcome)
    return [outcomes[cell] for cell in cells]


def results_of(outcomes: Sequence[CellOutcome], split: str = "test", protocol: str | None = None) -> list[Any]:
    """Report inputs: per-user ranks of finished cells under ``protocol`` (None: their first), the
    error of failed ones."""
    from recbench.results.leaderboard import run_result
    from recbench.results.report import RunResult
    from recbench.runs.record import RunRecord

    results = []
    for outcome in outcomes:
        cell = outcome.cell
        if outcome.error is not None:
            results.append(RunResult(cell.dataset, cell.row, cell.seed, error=outcome.error))
            continue
        results.append(run_result(RunRecord(outcome.run_dir), cell.dataset, cell.row, cell.seed, split, protocol))
    return results


def _write_tracebacks(outcomes: Sequence[CellOutcome], runs_dir: Path) -> None:
    """Keep the traceback of every cell that failed on a bug, for the method's author."""
    from recbench.files import atomic_write_bytes

    for outcome in outcomes:
        if outcome.traceback:
            cell = outcome.cell
            variant = f"-{hashlib.sha256(cell.settings.encode()).hexdigest()[:8]}" if cell.settings else ""
            path = runs_dir / "_failed" / f"{cell.dataset}-{cell.method}{variant}-seed{cell.seed}.txt"
            atomic_write_bytes(path, outcome.traceback.encode())
            outcome.traceback_file = str(path)


class LiveGrid:
    """The grid as it runs: a live table of every cell's state and elapsed time on a terminal, else one
    plain line per finished cell (:mod:`recbench.progress` decides which)."""

    def __init__(self, cells: Sequence[GridCell], enabled: bool = True, stream: TextIO | None = None) -> None:
        from recbench.progress import LiveDisplay

        self.states = {cell: ("queued", None, None) for cell in cells}
        self.started = time.perf_counter()
        self.finished = 0
        self.display = LiveDisplay(self._table, enabled=enabled, stream=stream)

    def __enter__(self) -> LiveGrid:
        self.display.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.display.__exit__(*exc)

    def __call__(self, cell: GridCell, state: str, outcome: CellOutcome | None) -> None:
        since = time.perf_counter() if state == "running" else self.states[cell][1]
        shown = state if not (outcome and outcome.reused) else "reused"
        self.states[cell] = (shown, since, outcome)
        self.display.refresh()
        if outcome is not None:
            self.finished += 1
            self.display.line(self._finished_line(cell, shown, outcome))

    def _finished_line(self, cell: GridCell, state: str, outcome: CellOutcome) -> str:
        """``cell 3/12: scientific / sasrec / seed 2020: done in 41.2 s`` (a failure adds its error)."""
        line = (
            f"cell {self.finished}/{len(self.states)}: {cell.dataset} / {cell.method} / seed {cell.seed}: "
            f"{state} in {outcome.seconds:.1f} s"
        )
        return f"{line}: {outcome.error.splitlines()[0]}" if outcome.error else line

    def _table(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        counts = {
            s: sum(1 for v in self.states.values() if v[0] == s)
            for s in ("done", "reused", "running", "failed", "queued")
        }
        title = (
            f"compare: {len(self.states)} cells, "
            + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
            + f" ({time.perf_counter() - self.started:.0f} s)"
        )
        table = Table("dataset", "method", "seed", "state", "elapsed", "note", title=title)
        colours = {"done": "green", "reused": "cyan", "running": "yellow", "failed": "red", "queued": "dim"}
        for cell, (state, since, outcome) in self.states.items():
            elapsed = f"{outcome.seconds:.0f} s" if outcome else f"{time.perf_counter() - since:.0f} s" if since else ""
            note = (outcome.error or "")[:80] if outcome else ""
            table.add_row(
                cell.dataset, cell.row, str(cell.seed), Text(state, style=colours[state]), elapsed, Text(note)
            )
        return table


def protocol_output(out: str | Path, protocol: str) -> str:
    """``--out`` of the report under a further protocol: ``OUT-<protocol>`` (before a table suffix)."""
    from recbench.results.leaderboard import output_prefix

    prefix = output_prefix(out)
    return f"{prefix}-{protocol}{str(out)[len(prefix) :]}"


def compare(
    datasets: Sequence[str],
    methods: Sequence[str | MethodRow] | None = None,
    seeds: int = 1,
    runs_dir: Path | str = "runs",
    jobs: int = 1,
    executor: str = "local",
    overrides: list[dict[str, Any]] | None = None,
    device: str = "auto",
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    test: str = "t",
    correction: str = "holm",
    alpha: float = 0.05,
    out: str | None = None,
    formats: Sequence[str] | None = None,
    live: bool = True,
    pretrain_on: Sequence[str] | None = None,
    quick: bool = False,
    pretrain_seed: int | None = None,
    protocols: Sequence[str] | None = None,
    log_to: str | TrackingSpec | Sequence[str | TrackingSpec] | None = None,
    defaults: list[dict[str, Any]] | None = None,
) -> tuple[Any, list[CellOutcome]]:
    """Run the grid and build the report; with ``out``, write it as
    :func:`recbench.results.leaderboard.output_files` says (a prefix: ``out.<fmt>`` for every format),
    and the figures of :func:`recbench.results.plots.write_figures` (``out-curves.png``, ...) when
    matplotlib is installed.

    ``protocols`` (names, default ``full``): every cell is evaluated under each, early stopping on
    the first; the report is the first one's, and with ``out`` the others are written to
    ``out-<protocol>.<fmt>`` (their reports are in ``report.others``).

    ``overrides`` are config layers applied to every method that has their keys (a key no
    compared method has is an error); ``quick`` puts the :data:`QUICK` preset beneath them, and
    ``defaults`` (layers of the same kind: a recipe's shared ``settings``) lie beneath both.
    ``log_to`` (``"tensorboard[:DIR]"``, ``"mlflow[:URI]"``, or several) mirrors every run trained
    now to experiment trackers, one tracking run per cell; finished cells that are reused are not
    logged again.
    """
    from recbench.data.dataset import check_dataset_name
    from recbench.registry import get_method, method_names, resolve_config
    from recbench.results.leaderboard import DEFAULT_METRICS, output_files, output_prefix, write_report
    from recbench.results.report import build_report
    from recbench.runs.protocols import parse_protocols
    from recbench.runs.tracking import parse_log_to

    trackers = parse_log_to(log_to)  # a bad backend or a missing package fails before anything runs
    if not datasets:
        raise RecbenchError("compare needs at least one dataset (--datasets a,b)")
    if seeds < 1:
        raise RecbenchError(f"--seeds must be at least 1, got {seeds}")
    if out is not None:
        output_files(out, formats)  # a bad --out / --format pair fails before anything runs
    methods = [m if isinstance(m, MethodRow) else get_method(m).name for m in methods] if methods else method_names()
    labels = [m.label if isinstance(m, MethodRow) else m for m in methods]
    if len(set(labels)) < len(labels):
        raise RecbenchError(
            f"two compared rows share a name: {', '.join(sorted({x for x in labels if labels.count(x) > 1}))}"
        )
    for row in methods:
        if isinstance(row, MethodRow):  # its method exists and knows its settings: fail before anything runs
            resolve_config(get_method(row.method), row.settings)
    if baseline is not None and baseline not in labels and get_method(baseline).name not in labels:
        raise RecbenchError(f"baseline '{baseline}' is not among the compared methods ({', '.join(labels)})")
    baseline = baseline if baseline is None or baseline in labels else get_method(baseline).name
    check_overrides(
        [m.method if isinstance(m, MethodRow) else m for m in methods], [*(defaults or []), *(overrides or [])]
    )
    chosen = [p.name for p in parse_protocols(list(protocols) if protocols else None)]
    overrides = [*(defaults or []), *([QUICK] if quick else []), *(overrides or [])]
    cells = grid(datasets, methods, seeds)
    if executor not in ("local", "ray"):
        raise RecbenchError(f"unknown executor '{executor}'; expected local or ray")
    unavailable = None
    if executor == "local":  # a Ray cluster's nodes may hold datasets this machine has not
        names = list(dict.fromkeys([*(cell.dataset for cell in cells), *(pretrain_on or [])]))
        for name in names:
            check_dataset_name(name)  # a typo fails here, with suggestions, before anything runs
        unavailable = prepare_datasets(names, show_progress=live)  # before the live view: downloads show progress
    with LiveGrid(cells, enabled=live) as view:
        outcomes = run_grid(
            cells,
            runs_dir,
            overrides,
            jobs,
            executor,
            device,
            listener=view,
            pretrain_on=pretrain_on,
            unavailable=unavailable,
            pretrain_seed=pretrain_seed,
            protocols=chosen,
            log_to=trackers,
        )
    _write_tracebacks(outcomes, Path(runs_dir))
    reports = {
        name: build_report(
            results_of(outcomes, protocol=name), list(metrics or DEFAULT_METRICS), baseline, test, correction, alpha
        )
        for name in chosen
    }
    report = reports[chosen[0]]
    report.others = {name: reports[name] for name in chosen[1:]}
    if out is not None:
        for name in chosen:
            write_report(reports[name], out if name == chosen[0] else protocol_output(out, name), formats)
        from recbench.results.plots import write_figures

        write_figures(
            report, results_of(outcomes), output_prefix(out)
        )  # OUT-curves.png, ...; a note only without matplotlib
    return report, outcomes

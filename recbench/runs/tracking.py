"""Experiment tracking, optional and off by default: mirror each run to TensorBoard and/or MLflow.

``--log-to tensorboard[:DIR]`` and ``--log-to mlflow[:URI]`` (``log_to=`` in the library) open one
tracking run per recbench run, pre-training runs included, and log into it:

* the resolved config (MLflow params; TensorBoard a JSON text and HParams),
* per epoch (step = epoch): the training loss (``train/loss``, or ``pretrain/loss``) and the valid
  metrics (``valid/ndcg@10``, ...),
* at the end (step = epochs run): the final valid and test metrics (``final/valid/...``,
  ``final/test/...``),
* the run directory, run id, dataset, method, seed and stage as tags (TensorBoard: a text).

MLflow does not allow ``@`` in a metric name, so there ``ndcg@10`` is written ``ndcg_at_10``.

The run record (docs/run-record.md) stays the source of truth: trackers get each value after the
record has it, and a tracker that fails (unreachable server, full disk) is dropped with one
:class:`TrackingWarning` while the run goes on. A reused (finished) run opens no tracker. A resumed
run continues its tracking run (MLflow: the unfinished run tagged with its run directory;
TensorBoard: the same directory), so a run interrupted and resumed is still one tracking run.

Backends are optional extras (``recbench[tensorboard]``, ``recbench[mlflow]``); asking for one that
is not installed fails in :func:`parse_log_to`, before anything trains. A :class:`TrackingSpec` is
plain data, so ``compare --jobs N`` sends it to its worker processes, which open their own trackers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

from recbench.errors import RecbenchError
from recbench.runs import distributed

EXPERIMENT_NAME = "recbench"
"""The MLflow experiment every recbench run is logged under."""

Status = Literal["finished", "failed", "killed"]


@dataclass(frozen=True)
class Backend:
    """A tracking backend: its display name, the module it needs and the extra that installs it."""

    label: str
    module: str
    extra: str
    location: str  # what may follow the colon in --log-to


BACKENDS = {
    "tensorboard": Backend("TensorBoard", "tensorboard", "tensorboard", "DIR"),
    "mlflow": Backend("MLflow", "mlflow", "mlflow", "URI"),
}
EXPECTED = " or ".join(f"{name}[:{backend.location}]" for name, backend in BACKENDS.items())


class TrackingWarning(UserWarning):
    """A tracker failed and was dropped; the run went on and its record is complete."""


@dataclass(frozen=True)
class TrackingSpec:
    """One ``--log-to`` entry: a backend and where it writes (None: the default under the runs directory).

    A TensorBoard location is an absolute directory, an MLflow location a tracking URI (a bare path
    becomes an absolute ``file:`` URI), so a spec means the same in any process.
    """

    backend: str
    location: str | None = None

    def __str__(self) -> str:
        return self.backend if self.location is None else f"{self.backend}:{self.location}"


def parse_log_to(values: str | TrackingSpec | Iterable[str | TrackingSpec] | None) -> tuple[TrackingSpec, ...]:
    """``--log-to`` values (repeatable, each comma-separated) as specs; checks that each backend is installed.

    ``tensorboard``, ``tensorboard:DIR``, ``mlflow`` or ``mlflow:URI``. An unknown backend, or one
    whose package is missing, is a :class:`RecbenchError` naming the fix.
    """
    if values is None:
        return ()
    if isinstance(values, (str, TrackingSpec)):
        values = [values]
    specs: list[TrackingSpec] = []
    for value in values:
        if isinstance(value, TrackingSpec):
            parsed = [_checked(value)]
        else:
            parsed = [_parse_one(part.strip()) for part in value.split(",") if part.strip()]
        specs += [spec for spec in parsed if spec not in specs]
    check_installed(specs)
    return tuple(specs)


def _parse_one(text: str) -> TrackingSpec:
    name, _, location = text.partition(":")  # only the first colon: a URI has its own
    return _checked(TrackingSpec(name.strip().lower(), location.strip() or None))


def _checked(spec: TrackingSpec) -> TrackingSpec:
    """The spec with its location made absolute; an unknown backend is a user error."""
    if spec.backend not in BACKENDS:
        raise RecbenchError(f"unknown tracking backend '{spec.backend}' in --log-to; expected {EXPECTED}")
    if spec.location is None:
        return spec
    if spec.backend == "tensorboard":
        return TrackingSpec(spec.backend, str(Path(spec.location).expanduser().resolve()))
    if not urlparse(spec.location).scheme:  # a plain path: MLflow's local file store there
        return TrackingSpec(spec.backend, Path(spec.location).expanduser().resolve().as_uri())
    return spec


def check_installed(specs: Iterable[TrackingSpec]) -> None:
    """Fail, naming the extra to install, if a requested backend's package is missing."""
    for spec in specs:
        backend = BACKENDS[spec.backend]
        if importlib.util.find_spec(backend.module) is None:
            raise RecbenchError(
                f"--log-to {spec.backend} needs {backend.label}, which is not installed: "
                f"pip install 'recbench[{backend.extra}]'"
            )


@dataclass(frozen=True)
class TrackedRun:
    """The recbench run a tracker mirrors."""

    path: Path
    runs_dir: Path
    dataset: str
    method: str
    seed: int
    stage: Literal["train", "pretrain"]
    config: dict[str, Any]
    """What the run's config.json records, with ``config`` the method config the run trains with."""
    resuming: bool = False
    """True when training continues from a checkpoint: the tracking run of the earlier attempt goes on."""

    @property
    def run_id(self) -> str:
        """The run directory's name, ``seed<seed>-<id>``."""
        return self.path.name

    @property
    def relative_path(self) -> Path:
        """The run directory under the runs directory: ``<dataset>/<method>/<run-id>`` (or ``_pretrain/...``)."""
        try:
            return self.path.resolve().relative_to(self.runs_dir.resolve())
        except ValueError:  # not under runs_dir: still one directory per dataset, method and run
            return Path(self.dataset, self.method, self.run_id)

    def tags(self) -> dict[str, str]:
        return {
            "recbench.run_dir": str(self.path.resolve()),
            "recbench.run_id": self.run_id,
            "recbench.dataset": self.dataset,
            "recbench.method": self.method,
            "recbench.seed": str(self.seed),
            "recbench.stage": self.stage,
        }

    def params(self) -> dict[str, str | int | float | bool]:
        """The config as flat parameters: the method config's fields, then the run's own (method, seed, ...).

        Numbers, strings and booleans stay as they are; anything else (lists, dicts, None) is its JSON text.
        """
        method_config = self.config.get("config", {})
        run_fields = {k: v for k, v in self.config.items() if k not in ("config", "versions")}
        return {key: _plain(value) for key, value in {**run_fields, **method_config}.items()}


def _plain(value: Any) -> str | int | float | bool:
    return value if isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True)


class Sink(Protocol):
    """One backend's tracking run. Any exception it raises drops it (see :class:`Tracker`)."""

    label: str

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None: ...

    def log_final(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self, status: Status) -> None: ...


class Tracker:
    """What the Trainer and the experiment call: every open sink gets each value; a failing one is dropped.

    With no sink (tracking off, or not the process that writes the run under ``torchrun``) every
    call does nothing.
    """

    def __init__(self, sinks: list[Sink], run: TrackedRun | None = None) -> None:
        self.sinks = list(sinks)
        self.run = run

    @property
    def active(self) -> bool:
        return bool(self.sinks)

    def log_epoch(self, epoch: int, loss: float, valid: dict[str, float]) -> None:
        """One finished epoch at step ``epoch``: its loss and valid metrics (none when pre-training)."""
        if not self.sinks:
            return
        stage = self.run.stage if self.run is not None else "train"
        metrics = {f"{stage}/loss": loss, **{f"valid/{name}": value for name, value in valid.items()}}
        self._each("log_epoch", epoch, metrics)

    def log_final(self, epochs_run: int, valid: dict[str, float] | None, test: dict[str, float]) -> None:
        """The metrics recorded in metrics.json, at the step after the last epoch."""
        if not self.sinks:
            return
        metrics = {f"final/valid/{name}": value for name, value in (valid or {}).items()}
        metrics |= {f"final/test/{name}": value for name, value in test.items()}
        self._each("log_final", epochs_run, metrics)

    def close(self, status: Status) -> None:
        self._each("close", status)
        self.sinks = []

    def _each(self, action: str, *arguments: Any) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, action)(*arguments)
            except Exception as err:  # a tracker never stops a run: the record has everything
                self._drop(sink, err)

    def _drop(self, sink: Sink, err: Exception) -> None:
        self.sinks.remove(sink)
        where = f" (its record: {self.run.path})" if self.run is not None else ""
        warnings.warn(
            f"tracking to {sink.label} failed and is off for this run: {type(err).__name__}: {err}; "
            f"the run goes on{where}",
            TrackingWarning,
            stacklevel=4,
        )
        with contextlib.suppress(Exception):  # release its files or connections if it still can
            sink.close("failed")


def open_tracker(specs: Iterable[TrackingSpec], run: TrackedRun) -> Tracker:
    """A tracker with one sink per spec; a backend that cannot be opened is left out with a warning."""
    tracker = Tracker([], run)
    if not distributed.is_main():  # under torchrun only the process that writes the run logs it
        return tracker
    for spec in specs:
        try:
            sink = _OPENERS[spec.backend](spec.location, run)
        except Exception as err:
            warnings.warn(
                f"--log-to {spec}: cannot open a tracking run ({type(err).__name__}: {err}); "
                f"the run goes on without it (its record: {run.path})",
                TrackingWarning,
                stacklevel=3,
            )
            continue
        tracker.sinks.append(sink)
    return tracker


@contextlib.contextmanager
def tracking(specs: Iterable[TrackingSpec], run: TrackedRun) -> Iterator[Tracker]:
    """:func:`open_tracker` for the block; closed as finished, failed, or killed (Ctrl-C)."""
    tracker = open_tracker(specs, run)
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.close("killed")
        raise
    except BaseException:
        tracker.close("failed")
        raise
    tracker.close("finished")


def prepare(specs: Iterable[TrackingSpec], runs_dir: Path | str) -> tuple[TrackingSpec, ...]:
    """Before a grid: create once what its parallel runs would race to create (the MLflow store and
    experiment); the specs to use for its runs.

    A store that cannot be reached now is dropped for the whole grid with one warning, instead of
    every cell waiting for it (MLflow retries an unreachable server for minutes) and warning again.
    """
    usable = []
    for spec in specs:
        if spec.backend == "mlflow" and distributed.is_main():
            try:
                _experiment_id(_mlflow_client(spec.location or default_mlflow_uri(runs_dir)))
            except Exception as err:
                warnings.warn(
                    f"--log-to {spec}: cannot reach the MLflow store ({type(err).__name__}: {err}); "
                    "the runs go on without it",
                    TrackingWarning,
                    stacklevel=2,
                )
                continue
        usable.append(spec)
    return tuple(usable)


# --- TensorBoard -------------------------------------------------------------------------------
def default_tensorboard_root(runs_dir: Path | str) -> Path:
    """``<runs-dir>/tensorboard``: each run writes to ``<root>/<dataset>/<method>/<run-id>``."""
    return Path(runs_dir) / "tensorboard"


class TensorBoardSink:
    """Event files in ``<DIR>/<dataset>/<method>/<run-id>`` (pre-training: ``<DIR>/_pretrain/...``).

    A fresh start of a run whose directory already has events (``--restart``) writes beside it, to
    ``<run-id>.2`` (``.3``, ...), so two attempts never mix in one TensorBoard run.
    """

    label = "TensorBoard"

    def __init__(self, root: str | None, run: TrackedRun) -> None:
        from torch.utils.tensorboard import SummaryWriter

        directory = Path(root) if root else default_tensorboard_root(run.runs_dir)
        directory = directory / run.relative_path
        directory = _latest(directory) if run.resuming else _unused(directory)
        self.run = run
        self.directory = directory
        self.writer = SummaryWriter(log_dir=str(directory))
        if not run.resuming:  # the earlier attempt wrote these
            self.writer.add_text("run", "\n".join(f"    {key}: {value}" for key, value in run.tags().items()))
            self.writer.add_text("config", _indented(json.dumps(run.config, indent=2, sort_keys=True)))
        self.writer.flush()

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()  # visible in TensorBoard now, and nothing is lost if the process dies

    def log_final(self, step: int, metrics: dict[str, float]) -> None:
        # HParams: one row per run with its config and final metrics; it also writes them as scalars
        self.writer.add_hparams(self.run.params(), metrics, run_name=".", global_step=step)
        self.writer.flush()

    def close(self, status: Status) -> None:
        if status != "finished":
            self.writer.add_text("status", status)
        self.writer.close()


def _attempts(directory: Path) -> Iterator[Path]:
    """``directory``, ``<name>.2``, ``<name>.3``, ...: one directory per fresh start of a run."""
    yield directory
    number = 2
    while True:
        yield directory.with_name(f"{directory.name}.{number}")
        number += 1


def _latest(directory: Path) -> Path:
    """The directory of the newest attempt, where a resumed run goes on (``directory`` if none exists)."""
    latest = directory
    for candidate in _attempts(directory):
        if not candidate.is_dir():
            break
        latest = candidate
    return latest


def _unused(directory: Path) -> Path:
    """The first of :func:`_attempts` that holds no file yet: a fresh start never mixes with an earlier one."""
    return next(
        candidate for candidate in _attempts(directory) if not (candidate.is_dir() and any(candidate.iterdir()))
    )


def _indented(text: str) -> str:
    """Markdown code block by indentation (TensorBoard renders text summaries as markdown)."""
    return "\n".join(f"    {line}" for line in text.splitlines())


# --- MLflow ------------------------------------------------------------------------------------
def default_mlflow_uri(runs_dir: Path | str) -> str:
    """``file:`` URI of the local MLflow store ``<runs-dir>/mlflow``."""
    return (Path(runs_dir) / "mlflow").resolve().as_uri()


def _mlflow_client(uri: str) -> Any:
    if uri.startswith("file:"):
        # MLflow >= 3.13 refuses its file store unless this is set (it is in maintenance mode, but it
        # is the store that needs no server nor database); a user's own setting wins.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any) -> str:
    """The id of the ``recbench`` experiment, created if missing (another process may create it first)."""
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(EXPERIMENT_NAME)
    except Exception:
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is None:
            raise
        return experiment.experiment_id


def mlflow_key(name: str) -> str:
    """A metric name as MLflow accepts it: ``valid/ndcg@10`` -> ``valid/ndcg_at_10``."""
    return name.replace("@", "_at_")


class MLflowSink:
    """One MLflow run in the ``recbench`` experiment, named ``<dataset>/<method>/<run-id>``."""

    label = "MLflow"

    def __init__(self, uri: str | None, run: TrackedRun) -> None:
        from mlflow.entities import Param

        self.client = _mlflow_client(uri or default_mlflow_uri(run.runs_dir))
        experiment = _experiment_id(self.client)
        earlier = self._earlier_attempt(experiment, run) if run.resuming else None
        if earlier is not None:
            self.run_id = earlier
            self.client.update_run(earlier, status="RUNNING")
            return
        created = self.client.create_run(experiment, tags=run.tags(), run_name=str(run.relative_path))
        self.run_id = created.info.run_id
        params = [Param(key, str(value)) for key, value in run.params().items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def _earlier_attempt(self, experiment: str, run: TrackedRun) -> str | None:
        """The newest unfinished MLflow run of this run directory, if an interrupted attempt left one."""
        found = self.client.search_runs(
            [experiment],
            filter_string=f"tags.`recbench.run_id` = '{run.run_id}'",  # run ids are letters, digits and '-'
            order_by=["attributes.start_time DESC"],
        )
        directory = run.tags()["recbench.run_dir"]
        for candidate in found:
            if candidate.data.tags.get("recbench.run_dir") == directory and candidate.info.status != "FINISHED":
                return candidate.info.run_id
        return None

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(mlflow_key(name), float(value), now, step) for name, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=entries)

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        self._log(step, metrics)

    def log_final(self, step: int, metrics: dict[str, float]) -> None:
        self._log(step, metrics)

    def close(self, status: Status) -> None:
        self.client.set_terminated(self.run_id, status=status.upper())


_OPENERS = {"tensorboard": TensorBoardSink, "mlflow": MLflowSink}

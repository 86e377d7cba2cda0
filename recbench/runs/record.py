"""Run records: one directory per (dataset, method, config, seed).

Files, each written atomically (temporary file, then rename):

- ``config.json``   method, dataset (+ fingerprint), seed, resolved config, versions (and torch thread count), device;
- ``log.jsonl``     one line per epoch: loss, valid metrics, seconds;
- ``checkpoint.pt`` everything needed to resume (model, optimiser, RNG, early-stopping state);
- ``best.pt``       the best-valid model weights (``torch.load(weights_only=True)`` works);
- ``search.pt``     an unfinished run's architecture search state, to continue an interrupted search (AutoMLP);
- ``metrics.json``  valid and test metrics and the evaluation protocol;
- ``ranks.npz``     per-user ranks of the held-out item, valid and test (int32; float64 under expected ties;
                    (U, 2) int32 [best, worst] under random ties);
- ``evals/P.json``, ``evals/P.npz``  metrics and ranks under each further protocol P (``recbench eval --protocol``);
- ``status.json``   written last: ``{"state": "finished", "files": {name: sha256}}`` or
  ``{"state": "failed", "reason": ...}``. Without it a run is unfinished.

Readers verify a finished run's files against the recorded digests and its ranks against its
protocol; ``.pt`` files load with ``weights_only=True`` only. See docs/run-record.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recbench.errors import RunError
from recbench.files import atomic_write_bytes, atomic_write_json, exclusive_lock
from recbench.names import check_name
from recbench.runs.distributed import main_process_only
from recbench.runs.metrics import EvalResult, metrics_from_ranks
from recbench.runs.protocols import definition_of

if TYPE_CHECKING:
    import torch


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch  # imported here so reading runs (leaderboards) never loads torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def safe_torch_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``).

    Every ``.pt`` file recbench reads goes through here. A file that holds anything else (a
    pickled object, i.e. code that would run on load) or is truncated or empty is a
    :class:`RunError` naming the file; nothing in it is executed.
    """
    import pickle
    import zipfile

    import torch

    if not path.is_file():
        raise RunError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise RunError(f"{path} is empty (an interrupted copy?); restart the run")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported content"
        raise RunError(
            f"{path} holds more than tensors and plain values, refused without loading it ({first[:160]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as err:
        raise RunError(
            f"{path} is damaged or truncated ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160] if str(err) else 'unreadable'}); restart the run"
        ) from None


def versions(method: type | None = None) -> dict[str, Any]:
    """What a run's numbers depend on besides its identity: library versions and torch's thread count.

    The thread count changes the order of float sums on CPU, so the same seed with another count
    trains to other last digits (IDA-SR pre-training on Instruments: epoch-0 loss 8.79208315 with
    1 thread, 8.79208322 with 2), and those differences grow over training.

    ``method`` is the class of the method the run trains. If it is not part of recbench (a
    third-party plugin), ``plugin`` records its module and the distribution that provides it, with
    its version (found through its ``recbench.methods`` entry point, else the installed packages;
    None for a module that no installed distribution provides, such as a script's).
    """
    import torch

    import recbench

    record: dict[str, Any] = {
        "recbench": recbench.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }
    module = getattr(method, "__module__", None) or ""
    top = module.partition(".")[0]
    if method is not None and top not in ("recbench", "recbench_plugins"):
        from importlib import metadata

        from recbench.registry import ENTRY_POINT_GROUP

        points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        dist = next((p.dist for p in points if p.dist is not None and p.module.partition(".")[0] == top), None)
        if dist is None and (names := metadata.packages_distributions().get(top)):
            dist = metadata.distribution(names[0])
        package = dist.metadata["Name"] if dist is not None else None
        record["plugin"] = {"module": module, "package": package, "version": dist.version if dist is not None else None}
    return record


def run_id(identity: dict[str, Any]) -> str:
    """Short stable hash of what makes a run what it is (method, config, dataset, seed)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


class DamagedRunError(RunError):
    """A run whose files are missing, unreadable, or changed since it finished."""


RECORDED_FILES = ("config.json", "metrics.json", "ranks.npz", "best.pt")
"""Files whose sha256 a finished run records in ``status.json`` (those it has) and readers verify."""


def read_json(path: Path) -> Any:
    """A JSON record; a missing, unreadable or invalid one is a :class:`DamagedRunError` naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedRunError(f"{path} is missing") from None
    except IsADirectoryError:
        raise DamagedRunError(f"{path} is a directory, expected a JSON file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedRunError(f"{path} is not valid JSON ({str(err)[:120]})") from None
    except OSError as err:
        raise DamagedRunError(f"{path} cannot be read ({err.strerror})") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class RunRecord:
    """A run directory: read and write its files; never reads an unfinished or damaged run as finished.

    ``status.json`` is written last. A finished run's status records the sha256 of its files
    (:data:`RECORDED_FILES`); every read of one of them checks it, so a file that was truncated,
    replaced or edited afterwards makes the run *damaged* (:class:`DamagedRunError`), never a
    silently different number. Runs written before digests were recorded are read unverified.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._verified: set[str] = set()

    @classmethod
    def for_experiment(
        cls, runs_dir: Path, dataset: str, method: str, seed: int, identity: dict[str, Any]
    ) -> RunRecord:
        """The run directory of one experiment; dataset and method names are checked before they become path parts."""
        return cls(
            Path(runs_dir)
            / check_name("dataset", dataset)
            / check_name("method", method)
            / f"seed{seed}-{run_id(identity)}"
        )

    # --- state -----------------------------------------------------------------------------
    @property
    def status(self) -> dict[str, Any] | None:
        """The parsed ``status.json`` (None while the run is unfinished); garbage is a DamagedRunError."""
        path = self.path / "status.json"
        if not path.exists():
            return None
        status = read_json(path)
        if not isinstance(status, dict) or status.get("state") not in ("finished", "failed"):
            raise DamagedRunError(f"{path} does not say finished or failed")
        return status

    @property
    def is_finished(self) -> bool:
        status = self.status
        return status is not None and status["state"] == "finished"

    @property
    def failure(self) -> str | None:
        """Why the run failed (e.g. a diverged loss), or None."""
        status = self.status
        return status.get("reason", "unknown reason") if status is not None and status["state"] == "failed" else None

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / "checkpoint.pt").is_file()

    def lock(self, wait: bool = False) -> contextlib.AbstractContextManager[None]:
        """The run's writer lock (see :func:`recbench.files.exclusive_lock`); a no-op off the main process,
        since under torchrun every process opens the same run and only rank 0 writes it."""
        from recbench.runs.distributed import is_main

        if not is_main():
            return contextlib.nullcontext()
        return exclusive_lock(self.path / ".lock", f"run {self.path}", wait=wait)

    def require_finished(self) -> None:
        if not (self.path / "config.json").is_file():
            raise RunError(f"{self.path} is not a run directory (no config.json)")
        if (reason := self.failure) is not None:
            raise RunError(f"run {self.path} failed: {reason}")
        if not self.is_finished:
            raise RunError(f"run {self.path} is unfinished; continue it with `recbench train ... --resume`")

    def verify(self, name: str) -> Path:
        """The path of the run file ``name``, after checking it against the digest its status recorded."""
        path = self.path / name
        if name in self._verified:
            return path
        status = self.status
        recorded = (status or {}).get("files", {}).get(name) if status and status["state"] == "finished" else None
        if recorded is not None:
            if not path.is_file():
                raise DamagedRunError(f"run {self.path} is damaged: {name} is missing")
            if _sha256(path) != recorded:
                raise DamagedRunError(
                    f"run {self.path} is damaged: {name} changed after the run finished (sha256 differs)"
                )
        self._verified.add(name)
        return path

    def check(self) -> None:
        """Verify a finished run's recorded files and ranks; DamagedRunError names the first problem."""
        self.require_finished()
        recorded = (self.status or {}).get("files", {})
        for name in [*RECORDED_FILES, *(n for n in recorded if n not in RECORDED_FILES)]:
            if (self.path / name).exists() or name in recorded:
                self.verify(name)
        if (self.path / "ranks.npz").exists():
            for protocol in self.protocol_names():
                for split in self._splits(protocol):
                    self.ranks(split, protocol)

    # --- files -----------------------------------------------------------------------------
    @main_process_only
    def write_config(self, record: dict[str, Any], method: type | None = None) -> None:
        atomic_write_json(self.path / "config.json", {**record, "versions": versions(method)})

    @property
    def config(self) -> dict[str, Any]:
        path = self.path / "config.json"
        if not path.is_file():
            raise RunError(f"{self.path} is not a run directory (no config.json)")
        config = read_json(self.verify("config.json"))
        if not isinstance(config, dict) or "method" not in config:
            raise DamagedRunError(f"{path} is not a run config (no method)")
        return config

    @main_process_only
    def write_log(self, epochs: list[dict[str, Any]]) -> None:
        atomic_write_bytes(
            self.path / "log.jsonl", "".join(json.dumps(e, allow_nan=False) + "\n" for e in epochs).encode()
        )

    @property
    def log(self) -> list[dict[str, Any]]:
        path = self.path / "log.jsonl"
        if not path.is_file():
            return []
        try:
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DamagedRunError(f"{path} is not valid JSON lines ({str(err)[:120]})") from None

    @main_process_only
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.path / "checkpoint.pt")

    def load_checkpoint(self) -> dict[str, Any]:
        """The resume state, read without unpickling code: a planted pickle is refused, never run."""
        state = safe_torch_load(self.path / "checkpoint.pt")
        if not isinstance(state, dict) or not {"model", "epoch", "log", "rng", "early_stopping"} <= state.keys():
            raise DamagedRunError(
                f"{self.path / 'checkpoint.pt'} is not a recbench checkpoint; restart the run with --restart"
            )
        return state

    @main_process_only
    def save_best(self, state_dict: dict[str, torch.Tensor]) -> None:
        atomic_torch_save(state_dict, self.path / "best.pt")

    def load_best(self) -> dict[str, torch.Tensor]:
        path = self.path / "best.pt"
        if not path.is_file():
            raise RunError(f"{self.path} has no best.pt")
        return safe_torch_load(self.verify("best.pt"))

    @main_process_only
    def finish(
        self,
        valid: EvalResult | None,
        test: EvalResult,
        extra: dict[str, Any] | None = None,
        more: list[tuple[EvalResult | None, EvalResult]] = (),
    ) -> None:
        """Write metrics and ranks, then mark the run finished (the last write).

        ``valid`` may be None for results imported from another tool (test split only). ``more``
        holds the (valid, test) results under further protocols, stored under ``evals/``.
        """
        self._write_results(self.path / "ranks.npz", self.path / "metrics.json", valid, test, extra)
        for other_valid, other_test in more:
            name = check_name("protocol", other_test.protocol["name"])
            self._write_results(*self._eval_files(name), other_valid, other_test)
        self.mark_finished()

    def _eval_files(self, protocol: str) -> tuple[Path, Path]:
        return self.path / EVALS_DIR / f"{protocol}.npz", self.path / EVALS_DIR / f"{protocol}.json"

    @staticmethod
    def _write_results(
        ranks_file: Path,
        metrics_file: Path,
        valid: EvalResult | None,
        test: EvalResult,
        extra: dict[str, Any] | None = None,
    ) -> None:
        splits = {"test": _stored(test.ranks)} | ({"valid": _stored(valid.ranks)} if valid else {})
        np.savez(buffer := io.BytesIO(), **splits)
        atomic_write_bytes(ranks_file, buffer.getvalue())
        atomic_write_json(
            metrics_file,
            {
                "valid": valid.metrics if valid else None,
                "test": test.metrics,
                "protocol": test.protocol,
                **({"valid_protocol": valid.protocol} if valid and valid.protocol != test.protocol else {}),
                **(extra or {}),
            },
        )

    @main_process_only
    def add_evaluation(self, valid: EvalResult | None, test: EvalResult) -> bool:
        """Store the results under one more protocol in a finished run; False if it has them already.

        The run's other files are verified first and left untouched: only ``evals/P.*`` are
        written and their digests added to ``status.json``.
        """
        name = check_name("protocol", test.protocol["name"])
        if name in self.protocol_names():
            return False
        self.check()
        status = self.status or {}
        self._write_results(*self._eval_files(name), valid, test)
        files = dict(status.get("files", {}))
        for path in self._eval_files(name):
            files[path.relative_to(self.path).as_posix()] = _sha256(path)
        atomic_write_json(self.path / "status.json", {"state": "finished", "files": files})
        self._verified.clear()
        return True

    @main_process_only
    def mark_finished(self) -> None:
        """The last write of a run: from now on it is read as finished, its files checked against these digests."""
        names = [name for name in RECORDED_FILES if (self.path / name).is_file()]
        if (self.path / EVALS_DIR).is_dir():
            names += sorted(f"{EVALS_DIR}/{p.name}" for p in (self.path / EVALS_DIR).iterdir() if p.is_file())
        files = {name: _sha256(self.path / name) for name in names}
        atomic_write_json(self.path / "status.json", {"state": "finished", "files": files})
        self._verified.clear()

    @main_process_only
    def mark_failed(self, reason: str) -> None:
        """Record that the run failed: never read as finished, nor ranked; the checkpoint stays."""
        atomic_write_json(self.path / "status.json", {"state": "failed", "reason": reason})

    def clear_status(self) -> None:
        """Forget a failed or finished state before the run is trained again (``--restart``)."""
        (self.path / "status.json").unlink(missing_ok=True)
        self._verified.clear()

    @property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: the valid and test metrics under the run's first protocol, and that protocol."""
        self.require_finished()
        metrics = read_json(self.verify("metrics.json"))
        if not isinstance(metrics, dict) or not isinstance(metrics.get("test"), dict):
            raise DamagedRunError(f"{self.path / 'metrics.json'} has no test metrics")
        return metrics

    @property
    def primary_protocol(self) -> str:
        """The name of the protocol of ``metrics.json`` (the one training stopped early on)."""
        from recbench.runs.protocols import name_of

        return name_of(self.metrics.get("protocol") or {})

    def protocol_names(self) -> list[str]:
        """Every protocol this finished run has results under, its first protocol first."""
        self.require_finished()
        recorded = (self.status or {}).get("files", {})
        more = sorted(
            name.removeprefix(f"{EVALS_DIR}/").removesuffix(".json")
            for name in recorded
            if name.startswith(f"{EVALS_DIR}/") and name.endswith(".json")
        )
        primary = self.primary_protocol
        return [primary, *(name for name in more if name != primary)]

    def evaluation(self, protocol: str | None = None) -> dict[str, Any]:
        """The metrics record (valid, test, protocol) under ``protocol`` (None: the run's first)."""
        if protocol is None or protocol == self.primary_protocol:
            return self.metrics
        ranks_file, metrics_file = self._result_files(protocol)
        record = read_json(self.verify(metrics_file))
        if not isinstance(record, dict) or not isinstance(record.get("test"), dict):
            raise DamagedRunError(f"{self.path / metrics_file} has no test metrics")
        return record

    def _result_files(self, protocol: str | None) -> tuple[str, str]:
        if protocol is None or protocol == self.primary_protocol:
            return "ranks.npz", "metrics.json"
        if protocol not in self.protocol_names():
            raise MissingProtocolError(
                f"run {self.path} has no results under protocol '{protocol}' (it has: "
                f"{', '.join(self.protocol_names())}); add them with `recbench eval {self.path} --protocol {protocol}`"
            )
        return f"{EVALS_DIR}/{protocol}.npz", f"{EVALS_DIR}/{protocol}.json"

    def _splits(self, protocol: str | None = None) -> list[str]:
        with self._open_ranks(self._result_files(protocol)[0]) as arrays:
            return list(arrays.files)

    def _open_ranks(self, name: str = "ranks.npz") -> Any:
        path = self.verify(name)
        if not path.is_file():
            raise DamagedRunError(f"run {self.path} is damaged: {name} is missing")
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise DamagedRunError(f"run {self.path} is damaged: {name} cannot be read ({str(err)[:120]})") from None

    def ranks(self, split: str = "test", protocol: str | None = None) -> np.ndarray:
        """Per-user ranks of a finished run (user u at position u) under ``protocol`` (None: its
        first), checked against that protocol: one rank per user, each between 1 and the number of
        candidates (integers, multiples of 1/2 under expected ties, [best, worst] pairs under random ties)."""
        self.require_finished()
        name = self._result_files(protocol)[0]
        try:
            with self._open_ranks(name) as arrays:
                if split not in arrays.files:
                    raise RunError(f"{self.path}/{name} has no split '{split}'")
                ranks = arrays[split]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise DamagedRunError(f"run {self.path} is damaged: {name} cannot be read ({str(err)[:120]})") from None
        record = self.evaluation(protocol)
        recorded = (record.get("valid_protocol") if split == "valid" else None) or record.get("protocol") or {}
        ties = definition_of(recorded)["ties"]
        problem = rank_problem(ranks, recorded.get("num_users"), recorded.get("num_candidates"), ties)
        if problem:
            raise DamagedRunError(f"run {self.path} is damaged: {split} ranks {problem}")
        return ranks

    def recomputed_metrics(self, split: str = "test", ks: tuple[int, ...] = (5, 10, 20, 50)) -> dict[str, float]:
        return metrics_from_ranks(self.ranks(split), ks)


class MissingProtocolError(RunError):
    """A finished run that has no results under the protocol asked for."""


EVALS_DIR = "evals"
"""Sub-directory of a run holding its results under further protocols."""


def _stored(ranks: np.ndarray) -> np.ndarray:
    """Ranks as stored: int32, or float64 when ties were split (expected ranks end in .5)."""
    return ranks.astype(np.int32) if np.issubdtype(ranks.dtype, np.integer) else ranks.astype(np.float64)


def rank_problem(
    ranks: np.ndarray, num_users: int | None, num_candidates: int | None, ties: str = "pessimistic"
) -> str | None:
    """What is wrong with stored ranks (None if nothing): dtype, shape, or a value outside 1..candidates.

    Under expected ties a rank may be any multiple of 1/2; under random ties each user has a
    [best, worst] pair of integers with best <= worst."""
    if ties == "expected" and ranks.ndim == 1 and np.issubdtype(ranks.dtype, np.floating):
        if not np.isfinite(ranks).all() or not np.array_equal(ranks * 2, np.round(ranks * 2)):
            return "are not multiples of 1/2"
    elif ties == "random":
        if ranks.ndim != 2 or ranks.shape[1] != 2 or not np.issubdtype(ranks.dtype, np.integer):
            return f"are not [best, worst] integer pairs (dtype {ranks.dtype}, shape {ranks.shape})"
        if (ranks[:, 0] > ranks[:, 1]).any():
            return "include a best rank after its worst"
    elif ranks.ndim != 1 or not np.issubdtype(ranks.dtype, np.integer):
        return f"are not a vector of integers (dtype {ranks.dtype}, shape {ranks.shape})"
    if num_users is not None and len(ranks) != num_users:
        return f"cover {len(ranks)} users, the protocol says {num_users}"
    if len(ranks) and ranks.min() < 1:
        return f"include {int(ranks.min())}; ranks start at 1"
    if num_candidates is not None and len(ranks) and ranks.max() > num_candidates:
        return f"include {int(ranks.max())}, more than the {num_candidates} candidates"
    return None


def _status_files(root: Path) -> list[Path]:
    """Every ``status.json`` below ``root``, also through symbolic links to directories (a folder of
    links is how a user puts chosen runs side by side); each real directory is read once, so a run
    linked twice counts once and a link cycle ends."""
    found: list[Path] = []
    seen: set[str] = set()
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirectories.clear()
            continue
        seen.add(real)
        subdirectories.sort()
        if "status.json" in files:
            found.append(Path(directory) / "status.json")
    return sorted(found)


def find_runs(runs_dir: Path | str) -> list[RunRecord]:
    """Every run below ``runs_dir`` that is finished and evaluated (pre-training runs have no ranks:
    skipped), plus every run whose status cannot be read but that holds results: its readers report
    it as damaged rather than it silently vanishing from a table. Links to run directories are
    followed (see :func:`_status_files`)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise RunError(f"runs directory {root} does not exist")
    found = []
    for path in _status_files(root):
        run = RunRecord(path.parent)
        try:
            status = run.status
        except DamagedRunError:
            if (run.path / "ranks.npz").exists() or (run.path / "metrics.json").exists():
                found.append(run)
            continue
        if (
            status is not None
            and status["state"] == "finished"
            and ((run.path / "ranks.npz").exists() or "ranks.npz" in status.get("files", {}))
        ):
            found.append(run)
    return found

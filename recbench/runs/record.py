"""Run records: one directory per (dataset, method, config, seed).

Files, each written atomically (temporary file, then rename):

- ``config.json``   method, dataset (+ fingerprint), seed, resolved config, versions (and torch thread count), device;
- ``log.jsonl``     one line per epoch: loss, valid metrics, seconds;
- ``checkpoint.pt`` everything needed to resume (model, optimiser, RNG, early-stopping state);
- ``best.pt``       the best-valid model weights (``torch.load(weights_only=True)`` works);
- ``metrics.json``  valid and test metrics and the evaluation protocol;
- ``ranks.npz``     per-user ranks of the held-out item, valid and test (int32);
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
        for name in RECORDED_FILES:
            if (self.path / name).exists() or name in (self.status or {}).get("files", {}):
                self.verify(name)
        if (self.path / "ranks.npz").exists():
            for split in self._splits():
                self.ranks(split)

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
    def finish(self, valid: EvalResult | None, test: EvalResult, extra: dict[str, Any] | None = None) -> None:
        """Write metrics and ranks, then mark the run finished (the last write).

        ``valid`` may be None for results imported from another tool (test split only).
        """
        splits = {"test": test.ranks.astype(np.int32)} | ({"valid": valid.ranks.astype(np.int32)} if valid else {})
        np.savez(buffer := io.BytesIO(), **splits)
        atomic_write_bytes(self.path / "ranks.npz", buffer.getvalue())
        atomic_write_json(
            self.path / "metrics.json",
            {
                "valid": valid.metrics if valid else None,
                "test": test.metrics,
                "protocol": test.protocol,
                **(extra or {}),
            },
        )
        self.mark_finished()

    @main_process_only
    def mark_finished(self) -> None:
        """The last write of a run: from now on it is read as finished, its files checked against these digests."""
        files = {name: _sha256(self.path / name) for name in RECORDED_FILES if (self.path / name).is_file()}
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
        self.require_finished()
        metrics = read_json(self.verify("metrics.json"))
        if not isinstance(metrics, dict) or not isinstance(metrics.get("test"), dict):
            raise DamagedRunError(f"{self.path / 'metrics.json'} has no test metrics")
        return metrics

    def _splits(self) -> list[str]:
        with self._open_ranks() as arrays:
            return list(arrays.files)

    def _open_ranks(self) -> Any:
        path = self.verify("ranks.npz")
        if not path.is_file():
            raise DamagedRunError(f"run {self.path} is damaged: ranks.npz is missing")
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise DamagedRunError(f"run {self.path} is damaged: ranks.npz cannot be read ({str(err)[:120]})") from None

    def ranks(self, split: str = "test") -> np.ndarray:
        """Per-user ranks of a finished run (user u at position u), checked against its protocol:
        one integer rank per user, each between 1 and the number of candidates."""
        self.require_finished()
        try:
            with self._open_ranks() as arrays:
                if split not in arrays.files:
                    raise RunError(f"{self.path}/ranks.npz has no split '{split}'")
                ranks = arrays[split]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise DamagedRunError(f"run {self.path} is damaged: ranks.npz cannot be read ({str(err)[:120]})") from None
        protocol = self.metrics.get("protocol") or {}
        problem = rank_problem(ranks, protocol.get("num_users"), protocol.get("num_candidates"))
        if problem:
            raise DamagedRunError(f"run {self.path} is damaged: {split} ranks {problem}")
        return ranks

    def recomputed_metrics(self, split: str = "test", ks: tuple[int, ...] = (5, 10, 20, 50)) -> dict[str, float]:
        return metrics_from_ranks(self.ranks(split), ks)


def rank_problem(ranks: np.ndarray, num_users: int | None, num_candidates: int | None) -> str | None:
    """What is wrong with a rank vector (None if nothing): dtype, shape, or a value outside 1..candidates."""
    if ranks.ndim != 1 or not np.issubdtype(ranks.dtype, np.integer):
        return f"are not a vector of integers (dtype {ranks.dtype}, shape {ranks.shape})"
    if num_users is not None and len(ranks) != num_users:
        return f"cover {len(ranks)} users, the protocol says {num_users}"
    if len(ranks) and ranks.min() < 1:
        return f"include {int(ranks.min())}; ranks start at 1"
    if num_candidates is not None and len(ranks) and ranks.max() > num_candidates:
        return f"include {int(ranks.max())}, more than the {num_candidates} candidates"
    return None


def find_runs(runs_dir: Path | str) -> list[RunRecord]:
    """Every run below ``runs_dir`` that is finished and evaluated (pre-training runs have no ranks:
    skipped), plus every run whose status cannot be read but that holds results: its readers report
    it as damaged rather than it silently vanishing from a table."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise RunError(f"runs directory {root} does not exist")
    found = []
    for path in sorted(root.rglob("status.json")):
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

"""Run records (design §9): one directory per (dataset, method, config, seed).

Files, each written atomically (temporary file, then rename):

- ``config.json``   method, dataset (+ fingerprint), seed, resolved config, versions (and torch thread count), device;
- ``log.jsonl``     one line per epoch: loss, valid metrics, seconds;
- ``checkpoint.pt`` everything needed to resume (model, optimiser, RNG, early-stopping state);
- ``best.pt``       the best-valid model weights (``torch.load(weights_only=True)`` works);
- ``metrics.json``  valid and test metrics and the evaluation protocol;
- ``ranks.npz``     per-user ranks of the held-out item, valid and test (int32);
- ``status.json``   written last: ``{"state": "finished"}``. Without it a run is unfinished.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import numpy as np

from recbench.files import atomic_write_bytes, atomic_write_json
from recbench.runs.distributed import main_process_only
from recbench.errors import RunError
from recbench.runs.metrics import EvalResult, metrics_from_ranks
from recbench.names import check_name

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
        raise RunError(f"{path} holds more than tensors and plain values, refused without loading it ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as err:
        raise RunError(f"{path} is damaged or truncated ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else 'unreadable'}); restart the run") from None


def versions() -> dict[str, str | int]:
    """What a run's numbers depend on besides its identity: library versions and torch's thread count.

    The thread count changes the order of float sums on CPU, so the same seed with another count
    trains to other last digits (IDA-SR pre-training on Instruments: epoch-0 loss 8.79208315 with
    1 thread, 8.79208322 with 2), and those differences grow over training.
    """
    import torch

    import recbench

    return {"recbench": recbench.__version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(), "torch_threads": torch.get_num_threads()}


def run_id(identity: dict[str, Any]) -> str:
    """Short stable hash of what makes a run what it is (method, config, dataset, seed)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


class RunRecord:
    """A run directory: read and write its files; never reads an unfinished run as finished."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @classmethod
    def for_experiment(cls, runs_dir: Path, dataset: str, method: str, seed: int, identity: dict[str, Any]) -> "RunRecord":
        """The run directory of one experiment; dataset and method names are checked before they become path parts."""
        return cls(Path(runs_dir) / check_name("dataset", dataset) / check_name("method", method) / f"seed{seed}-{run_id(identity)}")

    # --- state -----------------------------------------------------------------------------
    @property
    def is_finished(self) -> bool:
        status = self.path / "status.json"
        return status.is_file() and json.loads(status.read_text()).get("state") == "finished"

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / "checkpoint.pt").is_file()

    def require_finished(self) -> None:
        if not (self.path / "config.json").is_file():
            raise RunError(f"{self.path} is not a run directory (no config.json)")
        if not self.is_finished:
            raise RunError(f"run {self.path} is unfinished; continue it with `recbench train ... --resume`")

    # --- files -----------------------------------------------------------------------------
    @main_process_only
    def write_config(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path / "config.json", {**record, "versions": versions()})

    @property
    def config(self) -> dict[str, Any]:
        path = self.path / "config.json"
        if not path.is_file():
            raise RunError(f"{self.path} is not a run directory (no config.json)")
        return json.loads(path.read_text())

    @main_process_only
    def write_log(self, epochs: list[dict[str, Any]]) -> None:
        atomic_write_bytes(self.path / "log.jsonl", "".join(json.dumps(e) + "\n" for e in epochs).encode())

    @property
    def log(self) -> list[dict[str, Any]]:
        path = self.path / "log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    @main_process_only
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.path / "checkpoint.pt")

    def load_checkpoint(self) -> dict[str, Any]:
        """The resume state, read without unpickling code: a planted pickle is refused, never run."""
        return safe_torch_load(self.path / "checkpoint.pt")

    @main_process_only
    def save_best(self, state_dict: dict[str, torch.Tensor]) -> None:
        atomic_torch_save(state_dict, self.path / "best.pt")

    def load_best(self) -> dict[str, torch.Tensor]:
        path = self.path / "best.pt"
        if not path.is_file():
            raise RunError(f"{self.path} has no best.pt")
        return safe_torch_load(path)

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
            {"valid": valid.metrics if valid else None, "test": test.metrics, "protocol": test.protocol, **(extra or {})},
        )
        self.mark_finished()

    @main_process_only
    def mark_finished(self) -> None:
        """The last write of a run: from now on it is read as finished."""
        atomic_write_json(self.path / "status.json", {"state": "finished"})

    @property
    def metrics(self) -> dict[str, Any]:
        self.require_finished()
        return json.loads((self.path / "metrics.json").read_text())

    def ranks(self, split: str = "test") -> np.ndarray:
        """Per-user ranks of a finished run (user u at position u)."""
        self.require_finished()
        with np.load(self.path / "ranks.npz", allow_pickle=False) as arrays:
            if split not in arrays:
                raise RunError(f"{self.path}/ranks.npz has no split '{split}'")
            return arrays[split]

    def recomputed_metrics(self, split: str = "test", ks: tuple[int, ...] = (5, 10, 20, 50)) -> dict[str, float]:
        return metrics_from_ranks(self.ranks(split), ks)


def find_runs(runs_dir: Path | str) -> list[RunRecord]:
    """Every finished, evaluated run below ``runs_dir`` (pre-training runs have no ranks: skipped)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise RunError(f"runs directory {root} does not exist")
    return [RunRecord(p.parent) for p in sorted(root.rglob("status.json")) if RunRecord(p.parent).is_finished and (p.parent / "ranks.npz").is_file()]

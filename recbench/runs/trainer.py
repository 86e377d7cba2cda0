"""The one Trainer serving every method.

Adam, length-bucketed batches sized by target positions, validation NDCG@10 every epoch, early
stopping exactly as RecBole (values rounded to 4 decimals; a tie counts as an improvement; stop
once the non-improving counter exceeds ``patience``), best weights restored at the end, a
checkpoint every epoch so an interrupted run resumes to the same result.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recbench.data.dataset import Dataset
from recbench.errors import RunError
from recbench.method import Method, MethodConfig
from recbench.progress import ProgressDisplay
from recbench.runs import distributed
from recbench.runs.batching import TrainingWindows
from recbench.runs.evaluate import Evaluator
from recbench.runs.protocols import Protocol
from recbench.runs.record import RunRecord
from recbench.runs.tracking import Tracker

VALID_METRIC = "ndcg@10"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def flushing_denormals() -> bool:
    """Whether this thread's CPU arithmetic treats denormal floats (below 1.2e-38 in float32) as zero."""
    return torch.tensor([1e-320], dtype=torch.float64).item() == 0.0  # 1e-320: a float64 denormal


@contextlib.contextmanager
def denormals_flushed(device: str) -> Iterator[None]:
    """On CPU, treat denormal floats as zero while the block runs, then restore the previous mode.

    x86 arithmetic on denormals is many times slower. S3-Rec's pre-training produces them in its
    activations on some seeds: three of its steps took 8x longer with them than flushed, at the
    same loss (docs/architecture.md, "Speed"). Values that small cannot move a metric. The mode
    belongs to a thread, and a thread inherits it when it is started, so intra-op worker threads
    that already run keep theirs: the ``train`` and ``compare`` commands therefore switch it on for
    the whole process before torch starts any (:func:`flush_denormals_in_this_process`).
    """
    if torch.device(device).type != "cpu" or flushing_denormals() or not torch.set_flush_denormal(True):
        yield  # not a CPU, already flushing, or a CPU that cannot
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def flush_denormals_in_this_process() -> None:
    """Treat denormal floats as zero from now on, in this thread and every thread it starts later
    (call it before torch's first parallel operation, so its intra-op workers inherit the mode)."""
    torch.set_flush_denormal(True)


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors, ints, floats and tuples: what ``torch.load(weights_only=True)`` reads.

    NumPy's legacy state is a tuple holding an ndarray, which the safe loader refuses, so its key
    array travels as a tensor (see docs/run-record.md: checkpoints never need pickle).
    """
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state((saved["bit_generator"], keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class DivergedError(RunError):
    """The training loss became NaN or infinite: the run is recorded as failed, never as finished."""


@dataclass
class FitResult:
    """Where training stopped and how good the restored weights were on valid.

    ``best_epoch`` is -1 and ``best_valid`` None when no epoch ran (``epochs = 0``: the
    initial weights, e.g. a zero-shot variant, are the product; ``trained`` is then False).
    """

    best_epoch: int
    best_valid: float | None
    epochs_run: int
    seconds_per_epoch: float
    seconds_per_eval: float

    @property
    def trained(self) -> bool:
        return self.epochs_run > 0


class EarlyStopping:
    """RecBole's ``early_stopping``: ``value >= best`` resets the counter; stop when it exceeds patience."""

    def __init__(self, patience: int, best: float = -np.inf, counter: int = 0, best_epoch: int = -1) -> None:
        self.patience, self.best, self.counter, self.best_epoch = patience, best, counter, best_epoch

    def update(self, value: float, epoch: int) -> bool:
        """Record one epoch's valid value; True if it is the new best."""
        if value >= self.best:
            self.best, self.counter, self.best_epoch = value, 0, epoch
            return True
        self.counter += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.counter > self.patience


class BatchLoss(torch.nn.Module):
    """The training objective as a module, so DistributedDataParallel can wrap its forward."""

    def __init__(self, method: Method, pretrain: bool) -> None:
        super().__init__()
        self.method, self.pretrain = method, pretrain

    def forward(self, batch: Any) -> torch.Tensor:
        return self.method.pretrain_loss(batch) if self.pretrain else self.method.loss(batch)


class Trainer:
    """Trains one method on one dataset into one run directory.

    With ``pretrain=True`` the objective is the method's ``pretrain_loss`` on (the union of)
    source domains, for ``config.pretrain_epochs`` epochs without validation, at
    ``config.pretrain_learning_rate`` in batches of ``config.pretrain_batch_targets`` target positions
    (the target's ``learning_rate`` and ``train_batch_targets`` are not read); the weights after
    the last epoch are the run's ``best.pt``. Otherwise early stopping watches the valid NDCG@10
    under ``protocol`` (default: full ranking).

    Under ``torchrun`` with several processes (see :mod:`recbench.runs.distributed`) each process takes
    every K-th batch and DistributedDataParallel averages gradients; every process validates the
    same weights (so all take the same early-stopping decisions) and rank 0 writes the run.

    A ``tracker`` (:mod:`recbench.runs.tracking`) gets each finished epoch's loss and valid metrics.
    """

    def __init__(
        self,
        method: Method,
        dataset: Dataset,
        config: MethodConfig,
        run: RunRecord,
        seed: int,
        device: str = "cpu",
        show_progress: bool = True,
        pretrain: bool = False,
        protocol: Protocol | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.pretrain = pretrain
        self.tracker = tracker if tracker is not None else Tracker([])
        self.epochs = config.pretrain_epochs if pretrain else config.epochs
        self.learning_rate = config.pretrain_learning_rate if pretrain else config.learning_rate
        self.batch_targets = config.pretrain_batch_targets if pretrain else config.train_batch_targets
        self.method = method.to(device)
        self.dataset = dataset
        self.config = config
        self.run = run
        self.seed = seed
        self.device = device
        self.show_progress = show_progress
        self.windows = TrainingWindows(
            *dataset.train_sequences(), window=config.max_seq_length, samples=method.trains_on_samples
        )
        self.validator = (
            None
            if pretrain
            else Evaluator(dataset, "valid", config.max_seq_length, config.eval_batch_size, protocol=protocol)
        )
        self.rank, self.world_size = distributed.world()
        self.objective: torch.nn.Module = BatchLoss(self.method, pretrain)
        self.optimizer: torch.optim.Optimizer | None = None
        self._trainable: list[torch.nn.Parameter] = []
        self._refresh_optimizer()

    def _refresh_optimizer(self) -> None:
        """(Re)build Adam over the parameters that require gradients, if that set changed.

        A method's schedule (``Method.on_epoch_start``) may freeze or unfreeze parameters; like
        the official VQ-Rec trainer, the new phase starts with a fresh optimizer state.
        """
        trainable = [p for p in self.method.parameters() if p.requires_grad]
        if self.optimizer is not None and [id(p) for p in trainable] == [id(p) for p in self._trainable]:
            return
        self._trainable = trainable
        # Fused Adam: the same update in one kernel per parameter (about 4x faster steps on CPU,
        # which is most of an epoch for embedding-table models such as FPMC); equal to the
        # unfused update up to float rounding. Other devices keep PyTorch's default.
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in trainable) or None
        self.optimizer = (
            torch.optim.Adam(trainable, lr=self.learning_rate, weight_decay=self.config.weight_decay, fused=fused)
            if trainable
            else None
        )
        if self.world_size > 1 and trainable:  # DDP hooks the parameters that require gradients at construction
            from torch.nn.parallel import DistributedDataParallel

            # Some objectives leave parameters unused on a batch (e.g. a switched-off pre-training task).
            self.objective = DistributedDataParallel(BatchLoss(self.method, self.pretrain), find_unused_parameters=True)

    def _start_epoch(self, epoch: int) -> None:
        if not self.pretrain:
            self.method.on_epoch_start(epoch)
        self._refresh_optimizer()

    def fit(self, resume: bool = False) -> FitResult:
        stopping = EarlyStopping(self.config.patience)
        log: list[dict[str, Any]] = []
        start_epoch = 0
        seed_everything(self.seed)
        best_state = copy.deepcopy(self.method.state_dict())
        if resume and self.run.has_checkpoint:
            checkpoint = self.run.load_checkpoint()
            self.method.load_state_dict(checkpoint["model"])
            self._start_epoch(checkpoint["epoch"] - 1)  # the phase the saved optimizer state belongs to
            if self.optimizer is not None:
                self.optimizer.load_state_dict(checkpoint["optimizer"])
            stopping = EarlyStopping(self.config.patience, **checkpoint["early_stopping"])
            log, start_epoch = checkpoint["log"], checkpoint["epoch"]
            best_state = self.run.load_best() if stopping.best_epoch >= 0 else best_state
            set_rng_state(checkpoint["rng"])
        train_seconds: list[float] = [e["train_seconds"] for e in log]
        eval_seconds: list[float] = [e["valid_seconds"] for e in log]
        with self._progress() as progress, denormals_flushed(self.device):
            task = progress.add_task("train", total=None, status="")
            for epoch in range(start_epoch, self.epochs):
                if stopping.should_stop:
                    break
                self._start_epoch(epoch)
                started = time.perf_counter()
                loss = self._train_epoch(epoch, progress, task)
                train_seconds.append(time.perf_counter() - started)
                started = time.perf_counter()
                valid_metrics = self.validator.run(self.method, self.device).metrics if self.validator else {}
                eval_seconds.append(time.perf_counter() - started)
                # Pre-training has no validation: every epoch "improves", the last weights are kept.
                value = (
                    round(valid_metrics[VALID_METRIC], 4) if self.validator else float(epoch)
                )  # RecBole rounds to 4 decimals
                if stopping.update(value, epoch):
                    best_state = copy.deepcopy(self.method.state_dict())
                    self.run.save_best(best_state)
                log.append(
                    {
                        "epoch": epoch,
                        "loss": loss,
                        "valid": valid_metrics,
                        "train_seconds": train_seconds[-1],
                        "valid_seconds": eval_seconds[-1],
                    }
                )
                self.run.write_log(log)
                self.run.save_checkpoint(
                    {
                        "model": self.method.state_dict(),
                        "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                        "epoch": epoch + 1,
                        "early_stopping": {
                            "best": stopping.best,
                            "counter": stopping.counter,
                            "best_epoch": stopping.best_epoch,
                        },
                        "log": log,
                        "rng": rng_state(),
                    }
                )
                self.tracker.log_epoch(epoch, loss, valid_metrics)  # after the record has the epoch
                seconds = train_seconds[-1] + eval_seconds[-1]
                if self.validator:
                    progress.update(
                        task,
                        status=(
                            f"epoch {epoch} loss {loss:.4f} valid {VALID_METRIC} {value:.4f} "
                            f"(best {stopping.best:.4f} @ {stopping.best_epoch})"
                        ),
                    )
                    progress.line(
                        f"epoch {epoch}: loss {loss:.4f}, valid {VALID_METRIC} {value:.4f} "
                        f"(best {stopping.best:.4f} at epoch {stopping.best_epoch}), {seconds:.1f} s"
                    )
                else:
                    progress.line(f"pre-train epoch {epoch}: loss {loss:.4f}, {seconds:.1f} s")
        if not log:  # nothing to train (epochs = 0, e.g. a zero-shot variant): the initial weights are the product
            self.run.save_best(best_state)
        self.method.load_state_dict(best_state)
        return FitResult(
            best_epoch=stopping.best_epoch,
            best_valid=float(stopping.best) if log else None,
            epochs_run=len(log),
            seconds_per_epoch=float(np.mean(train_seconds)) if train_seconds else 0.0,
            seconds_per_eval=float(np.mean(eval_seconds)) if eval_seconds else 0.0,
        )

    def _train_epoch(self, epoch: int, progress: ProgressDisplay, task: Any) -> float:
        if self.optimizer is None:
            raise RuntimeError(f"{type(self.method).__name__}: no parameter requires a gradient at epoch {epoch}")
        self.method.train()
        batches = self.windows.batches(
            self.batch_targets, np.random.default_rng([self.seed, epoch]), self.config.bucket_by_length
        )
        batches = batches[self.rank :: self.world_size]  # every process makes the same list, then takes its share
        progress.update(
            task, total=len(batches), completed=0, description=f"{'pre-train ' if self.pretrain else ''}epoch {epoch}"
        )
        # DDP's join(): a process with one batch fewer than the others keeps the gradient averaging in step
        with getattr(self.objective, "join", contextlib.nullcontext)():
            total, count = self._train_batches(batches, epoch, progress, task)
        return total / max(count, 1)

    def _train_batches(self, batches: list[Any], epoch: int, progress: ProgressDisplay, task: Any) -> tuple[float, int]:
        total, count, started = 0.0, 0, time.perf_counter()
        for number, batch in enumerate(batches):
            batch = batch.to(self.device)
            loss = self.objective(batch)
            if not torch.isfinite(loss):
                raise DivergedError(
                    f"training diverged: the loss is {loss.item()} at epoch {epoch}, batch {number}; "
                    f"lower {'pretrain_' if self.pretrain else ''}learning_rate or set clip_grad_norm, then --restart"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self._trainable, self.config.clip_grad_norm)
            self.optimizer.step()
            targets = int((batch.targets > 0).sum())
            total, count = total + loss.item() * targets, count + targets
            rate = count / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, status=f"loss {total / count:.4f}  {rate:,.0f} targets/s")
        return total, count

    def _progress(self) -> ProgressDisplay:
        """Bars on a terminal, one line per finished epoch elsewhere; only the process that writes the run shows it."""
        return ProgressDisplay("count", enabled=self.show_progress and distributed.is_main())

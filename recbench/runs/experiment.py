"""One experiment end to end: dataset + method + seed -> trained, evaluated run record.

This is the library function behind ``recbench train`` and each cell of ``recbench compare``.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recbench.data.dataset import Dataset, load_dataset, load_run_dataset, union_of, verify_fingerprint
from recbench.errors import DataError, RecbenchError, RunError
from recbench.method import (
    Batch,
    DataSpec,
    ItemCodes,
    ItemCodesConfig,
    Method,
    MethodConfig,
    SearchData,
    TextMethodConfig,
)
from recbench.registry import MethodEntry, get_method, resolve_config
from recbench.runs import distributed
from recbench.runs.batching import TrainingWindows
from recbench.runs.evaluate import Evaluator
from recbench.runs.metrics import EvalResult
from recbench.runs.official import Checkpoint, load_official, read_checkpoint, resolve_init
from recbench.runs.protocols import DEFAULT_PROTOCOL, Protocol, parse_protocols
from recbench.runs.record import DamagedRunError, RunRecord, atomic_torch_save, safe_torch_load
from recbench.runs.tracking import TrackedRun, TrackingSpec, parse_log_to, tracking
from recbench.runs.trainer import DivergedError, FitResult, Trainer, rng_state, seed_everything, set_rng_state

WORD_DROP_RATIO = 0.15
"""Share of words dropped for the augmented text view (UniSRec's feat2CLS of the pre-training domains)."""


DEVICES = "auto, cpu, cuda, cuda:N or mps"
MAX_SEED = 2**32 - 1  # NumPy's legacy generator takes seeds in [0, 2**32)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' if available, else 'cpu'; an unknown or unavailable device is a user error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if re.fullmatch(r"cuda(:\d+)?", device):
        if not torch.cuda.is_available():
            raise RecbenchError(f"device '{device}' requested but CUDA is not available; use --device cpu")
        if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            raise RecbenchError(
                f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise RecbenchError(
                "device 'mps' requested but Apple's Metal backend is not available here; use --device cpu"
            )
        return device
    raise RecbenchError(f"unknown device '{device}'; expected {DEVICES}")


def check_seed(seed: int, flag: str = "--seed") -> int:
    """Seeds are integers in [0, 2**32 - 1], the range every seeded generator accepts."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RecbenchError(f"{flag} must be an integer from 0 to {MAX_SEED:,}, got {seed}")
    return seed


def imported_item_codes(entry: MethodEntry, config: MethodConfig, dataset: Dataset) -> ItemCodes | None:
    """The imported item codes ``config`` asks for (``item_codes = "imported:NAME"``), read from the
    checked cache entry and checked against the method (:meth:`Method.check_item_codes`); else None."""
    name = config.imported_codes if isinstance(config, ItemCodesConfig) else None
    if name is None:
        return None
    from recbench.data.codes import load_item_codes

    stored = load_item_codes(dataset, name)
    codes = ItemCodes(
        codes=torch.from_numpy(stored.codes.astype(np.int64)),
        has_code=torch.from_numpy(stored.has_code),
        num_codes=stored.num_codes,
        name=name,
        sha256=stored.sha256,
    )
    entry.cls.check_item_codes(config, codes)
    return codes


def item_codes_record(codes: ItemCodes) -> dict[str, Any]:
    """What a run records of its imported codes: the identity part (name, content digest) and the count
    of items the method had to code itself (its fallback is a config value, recorded with the config)."""
    return {"name": codes.name, "sha256": codes.sha256, "items_without_code": codes.items_without_code}


def build_method(
    entry: MethodEntry,
    config: MethodConfig,
    dataset: Dataset,
    show_progress: bool = False,
    pretraining: bool = False,
    item_codes: ItemCodes | None = None,
) -> Method:
    """Instantiate a registered method for a dataset (seed the RNGs first for a reproducible init).

    Methods that need text get the item text embeddings, encoded now if not cached (and, when
    pre-training a method that asks for it, the word-dropped view of the texts as well). A config
    asking for imported item codes gets them in ``DataSpec.item_codes``: ``item_codes`` if given
    (the ones the run's identity was computed from), else read from the cache now.
    """
    cls = entry.cls
    if isinstance(config, ItemCodesConfig) and config.imported_codes is not None:
        if pretraining:
            raise RecbenchError(
                f"{entry.name}: item_codes = '{config.item_codes}' cannot pre-train: imported codes belong to the "
                "dataset they were imported for, the sources have none; pre-train with item_codes = 'text'"
            )
        if item_codes is None:
            item_codes = imported_item_codes(entry, config, dataset)
    else:
        item_codes = None
    text = word_dropped = None
    if cls.needs_text_for(config):
        if not isinstance(config, TextMethodConfig):
            raise TypeError(f"{cls.__name__} needs text: its Config must subclass TextMethodConfig")
        from recbench.data.encode import EncoderSpec, item_embeddings

        spec = EncoderSpec(
            config.text_encoder, config.text_pooling, config.text_max_tokens, precision=config.text_precision
        )
        text = torch.from_numpy(item_embeddings(dataset, spec, show_progress=show_progress)[0])
        if pretraining and cls.needs_word_dropped_text:
            dropped = replace(spec, word_drop=WORD_DROP_RATIO)
            word_dropped = torch.from_numpy(item_embeddings(dataset, dropped, show_progress=show_progress)[0])
    if cls.needs_raw_text and not dataset.has_text:
        raise DataError(f"dataset '{dataset.name}' has no item text; {entry.name} needs it")
    train_items = np.zeros(dataset.num_items + 1, dtype=bool)
    train_items[dataset.train_sequences()[1]] = True
    spec = DataSpec(
        num_items=dataset.num_items,
        max_seq_length=config.max_seq_length,
        item_text_embeddings=text,
        item_text_embeddings_word_dropped=word_dropped,
        train_item_mask=torch.from_numpy(train_items),
        item_texts=[t or "" for t in dataset.item_texts] if cls.needs_raw_text else None,
        item_codes=item_codes,
        num_users=dataset.num_users,
    )
    return cls(config, spec)


@dataclass
class ExperimentResult:
    """A finished run and, if it was trained now, how training went."""

    run: RunRecord
    reused: bool
    fit: FitResult | None = None


def pretrain(
    entry: MethodEntry,
    config: MethodConfig,
    sources: Sequence[str],
    seed: int,
    runs_dir: Path,
    device: str,
    show_progress: bool,
    log_to: Sequence[TrackingSpec] = (),
    on_target: Dataset | None = None,
) -> RunRecord:
    """Pre-train a transfer method on the union of ``sources`` once; reused by every target.

    The run lives under ``runs_dir/_pretrain/<sources>/<method>/`` and is keyed by the method,
    its config, the sources' fingerprints and the seed. With ``log_to``, a pre-training that runs
    now (not a reused one) is mirrored to those trackers (its loss per epoch).

    With ``on_target`` (a method with ``pretrains_on_target``; ``sources`` is then ignored), the
    pre-training runs on that dataset itself, its training part as for every pre-training, with
    the target's own item ids (no union, so no id prefixes and the target's text cache).
    """
    if not entry.cls.supports_pretraining:
        raise RecbenchError(f"method '{entry.name}' does not pre-train; drop --pretrain-on")
    config = entry.cls.pretraining_config(config)
    if isinstance(config, ItemCodesConfig) and config.imported_codes is not None:
        raise RecbenchError(
            f"{entry.name}: pre-training with item_codes = '{config.item_codes}' is not supported (imported codes "
            "cover one dataset, not the sources); drop --pretrain-on or use item_codes = 'text'"
        )
    if on_target is not None:
        union, fingerprints = on_target, {on_target.name: on_target.fingerprint}
    else:
        domains = [load_dataset(name) for name in sources]
        for domain in domains:
            verify_fingerprint(domain)  # the pre-training run is keyed by these fingerprints
        union = union_of(domains)
        fingerprints = union.manifest["union"]["fingerprints"]
    # Keyed by the base method, not the variant: variants that differ only in fine-tuning share it.
    identity = {
        "method": entry.cls.name,
        "config": config.model_dump(),
        "sources": fingerprints,
        "seed": seed,
        "stage": "pretrain",
    }
    if on_target is not None:
        identity["on_target"] = True
    run = RunRecord.for_experiment(runs_dir / "_pretrain", union.name, entry.cls.name, seed, identity)
    if run.is_finished:
        return run
    # Several fine-tuning cells may need this run at once: the second waits, then reuses it.
    with run.lock(wait=True):
        if run.is_finished:
            return run
        if (reason := run.failure) is not None:
            raise RunError(f"pre-training run {run.path} failed: {reason}; remove it to try again")
        record = {**identity, "dataset": union.name, "fingerprint": union.fingerprint, "device": device}
        run.write_config(record, method=entry.cls)
        tracked = TrackedRun(
            run.path, Path(runs_dir), union.name, entry.cls.name, seed, "pretrain", record, run.has_checkpoint
        )
        with tracking(log_to, tracked) as tracker:
            seed_everything(seed)
            method = build_method(entry, config, union, show_progress, pretraining=True)
            trainer = Trainer(
                method,
                union,
                config,
                run,
                seed=seed,
                device=device,
                show_progress=show_progress,
                pretrain=True,
                tracker=tracker,
            )
            _fit_or_record_failure(trainer, run, resume=run.has_checkpoint)
            method.finish_pretraining(show_progress, work_dir=run.path)
            run.save_best(method.state_dict())
            run.mark_finished()  # no evaluation: the pre-trained weights (best.pt) are the product
    distributed.barrier()  # under torchrun, the other processes read best.pt once rank 0 has written it
    return run


def _read_init(
    entry: MethodEntry, config: MethodConfig, init: str | Path, pretrain_on: Sequence[str] | None
) -> tuple[Checkpoint, str]:
    """Read ``--init``'s checkpoint before anything runs: a method without an official mapping, a
    combination with pre-training or an unreadable file fails at once."""
    if pretrain_on:
        raise RecbenchError("--init and --pretrain-on both give the initial weights: use one of them")
    if entry.cls.official_parameter_map(config) is None:
        from recbench.registry import methods

        mapped = [
            e.name
            for e in methods()
            if e.cls.official_parameter_map.__func__ is not Method.official_parameter_map.__func__
        ]
        raise RecbenchError(
            f"method '{entry.name}' has no official checkpoint mapping, so --init cannot load one into it "
            f"(methods with one: {', '.join(mapped) or 'none'})"
        )
    return read_checkpoint(resolve_init(init)), str(init)


def _fit_or_record_failure(trainer: Trainer, run: RunRecord, resume: bool) -> FitResult:
    """Train; a diverged loss marks the run failed (never finished) before the error reaches the user."""
    try:
        return trainer.fit(resume=resume)
    except DivergedError as err:
        run.mark_failed(str(err))
        raise RunError(f"run {run.path} failed: {err}") from None


# --- architecture search hook: Method.search_architecture before the final model ----
SEARCH_STATE_FILE = "search.pt"
"""Where an architecture search keeps its state in the run directory (see docs/run-record.md)."""


def architecture_search(
    entry: MethodEntry,
    config: MethodConfig,
    dataset: Dataset,
    run: RunRecord | None,
    seed: int,
    device: str,
    reuse: bool,
    restart: bool = False,
) -> dict[str, Any] | None:
    """The method's architecture search on train/valid (None for most methods), as recorded in the run.

    A resumed run reuses the search recorded in its config.json instead of searching again. A
    search keeps its state in the run directory (``search.pt``, with the random generators'
    states), so a run interrupted during the search continues it where it stopped, to the same
    outcome; ``restart`` (``--restart``) searches from the start. Without a run (``run`` None, a
    benchmark of the search alone) nothing is kept.
    """
    if run is not None and reuse and run.has_checkpoint:
        return run.config.get("search")
    if run is not None and restart:
        (run.path / SEARCH_STATE_FILE).unlink(missing_ok=True)
    save_state, load_state = search_state_hooks(run.path / SEARCH_STATE_FILE) if run is not None else (None, None)
    windows = TrainingWindows(*dataset.train_sequences(), window=config.max_seq_length)
    data = SearchData(
        build=lambda search_config: build_method(entry, search_config, dataset),
        train_batches=lambda epoch: windows.batches(
            config.train_batch_targets, np.random.default_rng([seed, epoch]), config.bucket_by_length
        ),
        valid_batches=lambda: valid_batches(dataset, config.max_seq_length, config.eval_batch_size, seed),
        save_state=save_state,
        load_state=load_state,
    )
    seed_everything(seed)
    outcome = entry.cls.search_architecture(config, data, seed, device)
    return asdict(outcome) if outcome is not None else None


def search_state_hooks(
    path: Path,
) -> tuple[Callable[[dict[str, Any]], None], Callable[[], dict[str, Any] | None]]:
    """``SearchData.save_state`` / ``load_state`` over ``path``: the search's state with every random
    generator's, written atomically, read back with the safe loader (tensors and plain values only)."""

    def save_state(state: dict[str, Any]) -> None:
        atomic_torch_save({"search": state, "rng": rng_state()}, path)

    def load_state() -> dict[str, Any] | None:
        if not path.is_file():
            return None
        saved = safe_torch_load(path)
        set_rng_state(saved["rng"])
        return saved["search"]

    return save_state, load_state


def valid_batches(dataset: Dataset, max_history: int, batch_size: int, seed: int) -> list[Batch]:
    """Every user's valid history, in random order, with the valid item as the target of its last position
    (and the user's id, dataset user ``u`` being ``u + 1``, as in the Evaluator's batches)."""
    histories, lengths, targets = dataset.eval_examples("valid", max_history)
    order = np.random.default_rng(seed).permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        items = torch.from_numpy(histories[rows, : int(lengths[rows].max())])
        last = torch.from_numpy(lengths[rows] - 1)
        next_items = torch.zeros_like(items)
        next_items[torch.arange(len(rows)), last] = torch.from_numpy(targets[rows])
        users = torch.from_numpy(rows.astype(np.int64) + 1)
        batches.append(Batch(items=items, lengths=torch.from_numpy(lengths[rows]), targets=next_items, users=users))
    return batches


# --- end of the architecture search hook ---------------------------------------------------


def run_experiment(
    method_name: str,
    dataset_name: str,
    seed: int = 2020,
    overrides: list[dict[str, Any]] | None = None,
    runs_dir: Path | str = "runs",
    resume: bool = False,
    restart: bool = False,
    device: str = "auto",
    show_progress: bool = True,
    dataset: Dataset | None = None,
    pretrain_on: Sequence[str] | None = None,
    pretrain_seed: int | None = None,
    protocols: str | Sequence[str | Protocol] | None = None,
    log_to: str | TrackingSpec | Sequence[str | TrackingSpec] | None = None,
    init: str | Path | None = None,
) -> ExperimentResult:
    """Train ``method_name`` on ``dataset_name`` (or reuse a finished identical run), then test it.

    ``protocols`` (names, default ``full``): the run is evaluated under each; early stopping
    watches the first one's valid NDCG@10, so a first protocol other than ``full`` is part of the
    run's identity. A reused run missing one of them is evaluated under it (no retraining).

    With ``pretrain_on`` (source dataset names), a transfer method is first pre-trained on their
    union (or that pre-training run is reused) and then fine-tuned from it on the target. The
    pre-training uses ``pretrain_seed`` (default: ``seed``); one fixed ``pretrain_seed`` lets several
    fine-tuning seeds share one pre-trained checkpoint, so their spread is that of fine-tuning alone.
    A method with ``pretrains_on_target`` (S3-Rec) is pre-trained on the target's own training part
    instead, without ``pretrain_on`` (which may name only the target), unless ``pretrain_epochs = 0``.
    An unfinished run with a checkpoint is continued with ``resume`` or started over with
    ``restart``; with neither, it is an error (nothing is silently thrown away).

    ``log_to`` mirrors the run (and its pre-training) to experiment trackers: ``"tensorboard[:DIR]"``,
    ``"mlflow[:URI]"``, a list of them or :class:`~recbench.runs.tracking.TrackingSpec` (see
    :mod:`recbench.runs.tracking`); a reused run is not logged again.

    ``init`` (a path, or ``official:NAME`` for ``$RECBENCH_HOME/official/NAME``) starts fine-tuning from
    an official pre-trained checkpoint (UniSRec, VQ-Rec), read without running anything in it and mapped
    by the method's :meth:`~recbench.method.Method.official_parameter_map`; its sha256 is part of the
    run's identity (see :mod:`recbench.runs.official`).
    """
    check_seed(seed)
    trackers = parse_log_to(log_to)  # an unknown backend or a missing package fails before anything runs
    if pretrain_seed is not None:
        check_seed(pretrain_seed, "--pretrain-seed")
    chosen = parse_protocols(protocols if isinstance(protocols, str) or protocols is None else list(protocols))
    entry = get_method(method_name)
    config = resolve_config(entry, *(overrides or []))
    initial = _read_init(entry, config, init, pretrain_on) if init is not None else None
    device = distributed.setup(resolve_device(device))
    dataset = dataset or load_dataset(dataset_name)
    verify_fingerprint(dataset)  # the run records this fingerprint: the data must really have it
    # Read (and checked against the config) before any pre-training, so a mismatch fails at once.
    codes = imported_item_codes(entry, config, dataset)
    on_target = None
    if entry.cls.pretrains_on_target:
        if pretrain_on and list(pretrain_on) != [dataset.name]:
            raise RecbenchError(
                f"method '{entry.name}' pre-trains on its target '{dataset.name}' itself; drop --pretrain-on "
                "(set pretrain_epochs = 0 to train it without pre-training)"
            )
        on_target = dataset if config.pretrain_epochs > 0 else None
        pretrain_on = [dataset.name] if on_target is not None else None
    pretrained = (
        pretrain(
            entry,
            config,
            pretrain_on,
            seed if pretrain_seed is None else pretrain_seed,
            Path(runs_dir),
            device,
            show_progress,
            trackers,
            on_target=on_target,
        )
        if pretrain_on
        else None
    )
    identity = {
        "method": entry.name,
        "config": config.model_dump(),
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint,
        "seed": seed,
    }
    if pretrained is not None:
        identity["pretrained"] = pretrained.path.name
    if initial is not None:  # the file's content, not its path: the same weights elsewhere are the same run
        identity["init"] = {"sha256": initial[0].sha256}
    if codes is not None:  # the config names the codes; their digest makes a re-import of other codes a new run
        identity["item_codes"] = {"name": codes.name, "sha256": codes.sha256}
    if chosen[0].name != DEFAULT_PROTOCOL:  # early stopping watched another protocol: another run
        identity["protocol"] = {"name": chosen[0].name, **chosen[0].definition()}
    run = RunRecord.for_experiment(Path(runs_dir), dataset.name, entry.name, seed, identity)
    with contextlib.suppress(DamagedRunError):
        if run.is_finished and not restart:  # reading a finished run needs no lock (nor writes one)
            if set(p.name for p in chosen) <= set(run.protocol_names()):
                return ExperimentResult(run, reused=True)
    with run.lock():  # one writer per run: a second process on the same run stops here, naming the first
        result = _train_and_test(
            entry,
            config,
            dataset,
            run,
            identity,
            seed,
            device,
            show_progress,
            pretrained,
            resume,
            restart,
            chosen,
            trackers=trackers,
            runs_dir=Path(runs_dir),
            item_codes=codes,
            initial=initial,
        )
        if result.reused:
            for protocol in chosen[1:]:
                if protocol.name not in run.protocol_names():
                    _evaluate_stored(run, protocol, device, dataset)
        return result


def _train_and_test(
    entry: MethodEntry,
    config: MethodConfig,
    dataset: Dataset,
    run: RunRecord,
    identity: dict[str, Any],
    seed: int,
    device: str,
    show_progress: bool,
    pretrained: RunRecord | None,
    resume: bool,
    restart: bool,
    protocols: list[Protocol],
    trackers: Sequence[TrackingSpec] = (),
    runs_dir: Path = Path("runs"),
    item_codes: ItemCodes | None = None,
    initial: tuple[Checkpoint, str] | None = None,
) -> ExperimentResult:
    """The body of :func:`run_experiment`, under the run's lock."""
    try:
        state = "finished" if run.is_finished else "failed" if run.failure is not None else None
    except DamagedRunError as err:
        if not restart:
            raise RunError(f"{err}; pass --restart to train it again") from None
        state = None
    if state == "finished" and not restart:
        return ExperimentResult(run, reused=True)
    if state == "failed" and not restart:
        raise RunError(
            f"run {run.path} failed: {run.failure}; change the config, or pass --restart to try the same one again"
        )
    if restart:
        run.clear_status()
    if run.has_checkpoint and not (resume or restart):
        raise RunError(
            f"run {run.path} is unfinished (checkpoint after epoch {run.log[-1]['epoch'] if run.log else '?'}); "
            "pass --resume to continue it or --restart to start over"
        )
    search = architecture_search(
        entry, config, dataset, run, seed, device, reuse=resume and not restart, restart=restart
    )
    config = resolve_config(entry, config.model_dump(), search["config_updates"]) if search else config
    record = {
        **identity,
        **({"item_codes": item_codes_record(item_codes)} if item_codes is not None else {}),
        **({"search": search} if search else {}),
        # Not identity (the fingerprint is): how to draw a share of the users again to re-evaluate the run.
        **({"subsample": dataset.manifest["subsample"]} if "subsample" in dataset.manifest else {}),
        "device": device,
        "protocol": {
            "valid_metric": "ndcg@10",
            "valid_protocol": protocols[0].name,
            "early_stopping": "RecBole (tie = improvement)",
        },
    }
    run.write_config(record, method=entry.cls)
    continuing = resume and not restart and run.has_checkpoint  # then the earlier tracking run goes on
    tracked = TrackedRun(
        run.path,
        runs_dir,
        dataset.name,
        entry.name,
        seed,
        "train",
        {**record, "config": config.model_dump()},
        continuing,
    )
    with tracking(trackers, tracked) as tracker:
        seed_everything(seed)
        method = build_method(entry, config, dataset, show_progress, item_codes=item_codes)
        if pretrained is not None:
            method.load_pretrained(pretrained.load_best())
        if initial is not None:
            report = load_official(method, *initial)
            for line in report.warnings():
                print(line, file=sys.stderr, flush=True)
            record["init"] = report.record()
            run.write_config(record, method=entry.cls)  # now with what the load did
        trainer = Trainer(
            method,
            dataset,
            config,
            run,
            seed=seed,
            device=device,
            show_progress=show_progress,
            tracker=tracker,
            protocol=protocols[0],
        )
        fit = _fit_or_record_failure(trainer, run, resume=resume and not restart)
        started = time.perf_counter()
        valid = trainer.validator.run(method, device)
        test = Evaluator(dataset, "test", config.max_seq_length, config.eval_batch_size, protocols[0]).run(
            method, device
        )
        more = [
            tuple(
                Evaluator(dataset, split, config.max_seq_length, config.eval_batch_size, protocol).run(method, device)
                for split in ("valid", "test")
            )
            for protocol in protocols[1:]
        ]
        fit_record = {**asdict(fit), "trained": fit.trained}
        if not fit.trained:
            fit_record["note"] = "not trained: epochs = 0, the initial (or pre-trained) weights were evaluated"
        extra = {"fit": fit_record, "test_seconds": time.perf_counter() - started}
        run.finish(valid, test, extra={**extra, **({"search": search} if search else {})}, more=more)
        (run.path / SEARCH_STATE_FILE).unlink(missing_ok=True)  # the outcome is in config.json now
        tracker.log_final(fit.epochs_run, valid.metrics, test.metrics)  # what metrics.json now holds
    return ExperimentResult(run, reused=False, fit=fit)


def evaluate_run(
    run_dir: Path | str, split: str = "test", protocol: str | Protocol = DEFAULT_PROTOCOL, device: str = "auto"
) -> EvalResult:
    """Evaluate a finished run's best weights under ``protocol`` (imported score matrices: the
    stored matrix) and return the ``split`` result.

    A run without results under ``protocol`` gets them added (valid and test, under ``evals/``);
    a run that has them keeps them as they were (the result is then a fresh re-evaluation).
    """
    from recbench.runs.protocols import get_protocol

    protocol = get_protocol(protocol)
    if split not in ("valid", "test"):
        raise RecbenchError(f"unknown split '{split}': expected 'valid' or 'test'")
    run = RunRecord(run_dir)
    run.check()  # says which file is damaged, if one is
    already = protocol.name in run.protocol_names()
    if already:
        recorded = definition_of_record(run.evaluation(protocol.name))
        if recorded != protocol.definition():
            raise RunError(
                f"run {run.path} holds results under another protocol named '{protocol.name}' ({recorded}); "
                "rename yours"
            )
    with run.lock(wait=True):
        results = _evaluate_stored(run, protocol, device, store=not already)
    chosen = results[0] if split == "valid" else results[1]
    if chosen is None:
        raise RunError(f"run {run.path} has no {split} split (imported results hold the test split only)")
    return chosen


def definition_of_record(record: dict[str, Any]) -> dict[str, Any]:
    from recbench.runs.protocols import definition_of

    return definition_of(record.get("protocol") or {})


def checked_run_dataset(run: RunRecord, dataset: Dataset | None = None) -> Dataset:
    """The data a finished run was made on: ``dataset``, else loaded as its record says (a share of
    the users drawn again), rehashed and checked against the run's recorded fingerprint."""
    record = run.config
    dataset = dataset or load_run_dataset(record)
    if verify_fingerprint(dataset) != record["fingerprint"]:
        raise RunError(
            f"dataset '{dataset.name}' changed since run {run.path} was made (fingerprint differs); re-train it"
        )
    return dataset


def trained_method(run: RunRecord, dataset: Dataset) -> Method:
    """The model of a finished run (not an imported one) with its best weights, built for ``dataset``
    (the run's own, whose fingerprint the caller has checked), on the CPU."""
    record = run.config
    entry = get_method(record["method"])
    config = resolve_config(entry, record["config"], (record.get("search") or {}).get("config_updates", {}))
    codes = imported_item_codes(entry, config, dataset)
    recorded = (record.get("item_codes") or {}).get("sha256")
    if codes is not None and codes.sha256 != recorded:
        raise RunError(
            f"item codes '{codes.name}' of '{dataset.name}' were imported again since run {run.path} was made "
            "(their digest differs); import the ones it was made with, or re-train it"
        )
    method = build_method(entry, config, dataset, item_codes=codes)
    method.load_state_dict(run.load_best())
    return method


def _evaluate_stored(
    run: RunRecord, protocol: Protocol, device: str, dataset: Dataset | None = None, store: bool = True
) -> tuple[EvalResult | None, EvalResult]:
    """(valid, test) results of a finished run under ``protocol``, stored in it with ``store``."""
    record = run.config
    dataset = checked_run_dataset(run, dataset)
    if "imported" in record:
        from recbench.runs.external import evaluate_imported

        results: tuple[EvalResult | None, EvalResult] = (None, evaluate_imported(run, dataset, protocol))
    else:
        method = trained_method(run, dataset)
        config = method.config
        device = resolve_device(device)
        method.to(device)
        valid, test = (
            Evaluator(dataset, split, config.max_seq_length, config.eval_batch_size, protocol).run(method, device)
            for split in ("valid", "test")
        )
        results = (valid, test)
    if store:
        run.add_evaluation(*results)
    return results

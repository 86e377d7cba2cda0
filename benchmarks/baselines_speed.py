"""Benchmark: seconds per training epoch and per full validation pass, recbench's baselines vs RecBole 1.2.1.

Trains each baseline for a fixed number of epochs (no early stopping) on UniSRec's Scientific, once
with recbench and once with RecBole 1.2.1's implementation of the same model, on the same data
(the UniSRec files: 34,101 training (prefix, target) samples, 8,442 valid users), at the same batch
sizes (2048 training targets, 256 users per evaluation batch), model sizes (recbench's defaults,
read from each plugin's Config and passed to RecBole), learning rate and torch threads, and prints
a markdown table: seconds per training epoch and per full-ranking evaluation of the valid split
(mean over the epochs run), and RecBole's time divided by recbench's.

    recbench  gru4rec fpmc nextitnet caser sasrec gru4recf fdsa s3rec (its fine-tuning epochs; its
              pre-training epochs, without validation, in a row of their own)
    RecBole   GRU4Rec FPMC NextItNet Caser SASRec GRU4RecF FDSA S3Rec

recbench runs in this process (``run_experiment``, device cpu, a fresh runs directory under
``--work``) and its times are the fit record of the run (``metrics.json``: ``fit.seconds_per_epoch``,
``fit.seconds_per_eval``; S3-Rec's pre-training epochs from its pre-training run's ``log.jsonl``).
RecBole runs in a subprocess of ``--recbole-python`` (a venv with ``recbole==1.2.1``), which times
``Trainer._train_epoch`` (one pass over the training data: batching, negative sampling and updates)
and ``Trainer._valid_epoch`` (a full-ranking pass over the valid users) with wall clocks around
them; its data is loaded from ``--work``/recbole-data/Scientific, symlinks to the ``--from`` files
(``benchmark_filename: [train, valid, test]``, ``alias_of_item_id: [item_id_list]``, as UniSRec's
props/finetune.yaml) and a generated ``Scientific.item``, all outside the project.

Item features on RecBole's side: its GRU4RecF, FDSA and S3Rec read item features from RecBole
feature fields. A dense text vector loads as a numerical ``float_seq`` field, but RecBole 1.2.1
embeds each of its components with a vector of its own (a batch x 50 x 384 x 300 float tensor, about
47 GB for a batch of 2048 histories), which does not fit this machine, so RecBole gets a one-token
``token_seq`` field instead: the item's own id (``item_attr``). That is cheaper than recbench's
text features (a 384-wide frozen text vector through a Linear), so RecBole's GRU4RecF / FDSA times
are if anything an underestimate; for S3Rec it is the attribute space recbench's S3-Rec uses (one
attribute per item). RecBole's S3Rec fine-tuning starts from its pre-training checkpoint; with
``--recbole-s3rec-pretrain-epochs 0`` the untrained pre-training model's weights are saved and
loaded instead (fine-tuning speed does not depend on them). RecBole's S3Rec pre-training builds
the multi-hot attribute targets of a batch as Python lists (2048 x 50 x 4,385 entries), so a
pre-training batch is slow and takes several GB. Both pre-trainings are off by default: recbench's
S3-Rec pre-training at batch 2048 grew to 23 GB RSS and was OOM-killed on this 24 GB machine (one
measured run, other work running), so ``--s3rec-pretrain-epochs 0`` fine-tunes from scratch (the
same per-epoch work as fine-tuning from a checkpoint).

RecBole is slow enough (minutes per epoch on 2 cores) that ``--recbole-batches N`` times only the
first N batches of each RecBole training and evaluation pass and scales the time to the pass's
batch count (RecBole pads every history to 50 positions and shuffles, so its batches cost about
the same; the first batch's warm-up is scaled too, so this errs towards RecBole being slower);
the table says when it was used. ``--recbole-epochs`` (default ``--epochs``) sets RecBole's epochs.

    python benchmarks/baselines_speed.py [--methods gru4rec,fpmc,...] [--epochs 2] [--recbole-epochs 1]
        [--recbole-batches 2] [--recbole-python /work/venv-recbole/bin/python] [--from DIR] [--home DIR]
        [--work DIR] [--threads 2] [--s3rec-pretrain-epochs 0] [--recbole-s3rec-pretrain-epochs 0]
        [--skip-recbole]

``--home`` is the RECBENCH_HOME that holds dataset ``scientific`` (imported from ``--from`` if it
is missing) and, for the text methods, its cached text embeddings (the default encoder's). RecBole
runs with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (its checkpoints are pickles) and both sides with
``--threads`` torch threads. Run it niced on a shared machine and say so: other load inflates both
sides, not necessarily equally.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon2018-unisrec" / "Scientific"
DEFAULT_RECBOLE_PYTHON = Path("/work/venv-recbole/bin/python")
DATASET = "scientific"
RECBOLE_DATASET = "Scientific"
TRANSFORMER_KEYS = (
    "hidden_size",
    "inner_size",
    "n_layers",
    "n_heads",
    "hidden_dropout_prob",
    "attn_dropout_prob",
    "layer_norm_eps",
    "initializer_range",
)
TOKEN_FEATURE_NOTE = "RecBole: one-token item feature (own id), not the dense text (see docstring)"


@dataclass(frozen=True)
class Pair:
    """One recbench baseline and the RecBole model it is checked against."""

    recbole_model: str
    keys: tuple[str, ...]
    """recbench Config fields passed to RecBole under the same name."""
    loss: str = "CE"
    feature: str | None = None
    """RecBole config key that names the item feature field (GRU4RecF/FDSA: selected_features)."""
    note: str = ""


PAIRS: dict[str, Pair] = {
    "gru4rec": Pair("GRU4Rec", ("embedding_size", "hidden_size", "num_layers", "dropout_prob")),
    "gru4recf": Pair(
        "GRU4RecF",
        ("embedding_size", "hidden_size", "num_layers", "dropout_prob"),
        feature="selected_features",
        note=TOKEN_FEATURE_NOTE,
    ),
    "fpmc": Pair("FPMC", ("embedding_size",), loss="BPR", note="BPR, one uniform negative per target"),
    "nextitnet": Pair("NextItNet", ("embedding_size", "kernel_size", "dilations", "block_num", "reg_weight")),
    "caser": Pair("Caser", ("embedding_size", "nv", "nh", "dropout_prob", "reg_weight")),
    "fdsa": Pair("FDSA", TRANSFORMER_KEYS, feature="selected_features", note=TOKEN_FEATURE_NOTE),
    "s3rec": Pair(
        "S3Rec",
        (*TRANSFORMER_KEYS, "mask_ratio", "aap_weight", "mip_weight", "map_weight", "sp_weight"),
        feature="item_attribute",
        note="fine-tuning epochs; RecBole: item attribute = own id (one token)",
    ),
    "sasrec": Pair("SASRec", TRANSFORMER_KEYS, note="reference"),
}

# Runs in the RecBole venv: builds the model as run_recbole does, times each epoch, writes JSON.
RECBOLE_DRIVER = r"""
import json, os, sys, time

spec = json.loads(open(sys.argv[1]).read())
import torch

torch.set_num_threads(spec["threads"])
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_logger, init_seed


def build(config_dict):
    config = Config(model=spec["model"], dataset=spec["dataset"], config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return model, trainer, train_data, valid_data, test_data


def timed(trainer, times, cap):
    # Wall clock around each epoch; with cap > 0, only the first cap batches run, scaled to all.

    def wrap(call, key):
        def run(data, *args, **kwargs):
            cls, total, seen = type(data), len(data), [0]
            original = cls.__iter__

            def capped(self):
                for batch in original(self):
                    if cap and seen[0] >= cap:
                        return
                    seen[0] += 1
                    yield batch

            cls.__iter__ = capped
            started = time.perf_counter()
            try:
                out = call(data, *args, **kwargs)
            finally:
                cls.__iter__ = original
            elapsed = time.perf_counter() - started
            times[key].append(elapsed * total / seen[0] if cap and seen[0] else elapsed)
            times[key + "_batches"] = [seen[0], total]
            if key == "valid":  # (valid score, result): the early-stopping metric of this epoch
                times.setdefault("valid_scores", []).append(float(out[0]))
            return out

        return run

    trainer._train_epoch = wrap(trainer._train_epoch, "train")
    trainer._valid_epoch = wrap(trainer._valid_epoch, "valid")


result = {}
config = spec["config"]
if spec.get("pretrain") is not None:  # S3Rec: the pre-training stage first, its checkpoint for fine-tuning
    epochs = spec["pretrain"]
    stage = {**config, "train_stage": "pretrain", "pretrain_epochs": epochs, "save_step": max(epochs, 1)}
    model, trainer, train_data, _, _ = build(stage)
    times = {"train": [], "valid": []}
    timed(trainer, times, spec["batches"])
    path = os.path.join(config["checkpoint_dir"], f"{spec['model']}-{spec['dataset']}-{epochs}.pth")
    if epochs > 0:
        trainer.fit(train_data, show_progress=False)
        result["pretrain"] = times
    else:
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        torch.save({"state_dict": model.state_dict()}, path)
    config = {**config, "train_stage": "finetune", "pre_model_path": path}
model, trainer, train_data, valid_data, test_data = build(config)
times = {"train": [], "valid": []}
timed(trainer, times, spec["batches"])
test = spec.get("test", False)  # to convergence: keep the best valid epoch's weights and evaluate them on test
trainer.fit(train_data, valid_data, saved=test, show_progress=False)
result["fit"] = times
if test:
    scores = times.get("valid_scores", [])
    result["best_epoch"] = scores.index(max(scores)) if scores else None
    metrics = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    result["test"] = {name: float(value) for name, value in metrics.items()}
result["train_samples"] = len(train_data._dataset)
with open(sys.argv[2], "w") as out:
    json.dump(result, out)
"""


def prepare_recbole_data(source: Path, root: Path) -> Path:
    """``root/Scientific``: symlinks to the three .inter files and an item file with ``item_attr``."""
    folder = root / RECBOLE_DATASET
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("train", "valid", "test"):
        link = folder / f"{RECBOLE_DATASET}.{part}.inter"
        if not link.is_symlink():
            link.symlink_to(source / f"{RECBOLE_DATASET}.{part}.inter")
    items = [
        line.split("\t")[1].strip() for line in (source / f"{RECBOLE_DATASET}.item2index").read_text().splitlines()
    ]
    lines = ["item_id:token\titem_attr:token_seq"] + [f"{item}\ti{item}" for item in items]
    (folder / f"{RECBOLE_DATASET}.item").write_text("\n".join(lines) + "\n")
    return root


def recbole_config(method: str, config: Any, pair: Pair, epochs: int, data_root: Path, work: Path) -> dict[str, Any]:
    """RecBole's config_dict: the benchmark files, recbench's sizes and protocol, full-ranking evaluation."""
    load_col: dict[str, list[str]] = {"inter": ["user_id", "item_id_list", "item_id"]}
    settings: dict[str, Any] = {key: getattr(config, key) for key in pair.keys}
    if pair.feature is not None:
        load_col["item"] = ["item_id", "item_attr"]
        settings[pair.feature] = ["item_attr"] if pair.feature == "selected_features" else "item_attr"
    return {
        "data_path": str(data_root),
        "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"],
        "load_col": load_col,
        "MAX_ITEM_LIST_LENGTH": config.max_seq_length,
        "epochs": epochs,
        "stopping_step": epochs,
        "eval_step": 1,
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
        "train_batch_size": config.train_batch_targets,
        "eval_batch_size": config.eval_batch_size,
        "loss_type": pair.loss,
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1} if pair.loss == "BPR" else None,
        "eval_args": {"order": "TO", "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [10, 50],
        "valid_metric": "NDCG@10",
        "use_gpu": False,
        "seed": 2020,
        "reproducibility": True,
        "show_progress": False,
        "worker": 0,
        "checkpoint_dir": str(work / "recbole-saved" / method),
        **settings,
    }


def run_recbole(
    python: Path,
    method: str,
    model: str,
    config: dict[str, Any],
    work: Path,
    threads: int,
    batches: int,
    pretrain: int | None,
    test: bool = False,
) -> dict[str, Any]:
    """Run the driver in the RecBole venv (cwd ``work``: RecBole writes log/ and log_tensorboard/ there).

    With ``test``, RecBole keeps its best valid epoch's weights and the result holds their test metrics
    (``test``) and that epoch (``best_epoch``, 0-based).
    """
    driver = work / "recbole_driver.py"
    driver.write_text(RECBOLE_DRIVER)
    spec_path, out_path = work / f"recbole-{method}.spec.json", work / f"recbole-{method}.result.json"
    spec = {
        "model": model,
        "dataset": RECBOLE_DATASET,
        "config": config,
        "threads": threads,
        "batches": batches,
        "pretrain": pretrain,
        "test": test,
    }
    spec_path.write_text(json.dumps(spec, indent=1))
    out_path.unlink(missing_ok=True)
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(threads)}
    env.pop("RECBENCH_HOME", None)
    log = work / f"recbole-{method}.log"
    with log.open("w") as handle:
        done = subprocess.run(
            [str(python), str(driver), str(spec_path), str(out_path)], cwd=work, env=env, stdout=handle, stderr=handle
        )
    if done.returncode != 0 or not out_path.is_file():
        tail = log.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"RecBole {model} exited {done.returncode}: " + " | ".join(tail) + f" (log: {log})")
    return json.loads(out_path.read_text())


def run_recbench(method: str, epochs: int, pretrain_epochs: int, runs_dir: Path) -> dict[str, Any]:
    """Train ``method`` for ``epochs`` epochs (patience = epochs) and read the run's fit record."""
    from recbench.runs.experiment import run_experiment

    overrides: dict[str, Any] = {"epochs": epochs, "patience": epochs}
    if method == "s3rec":
        overrides["pretrain_epochs"] = pretrain_epochs
    result = run_experiment(
        method, DATASET, seed=2020, overrides=[overrides], runs_dir=runs_dir, restart=True, device="cpu",
        show_progress=False,
    )  # fmt: skip
    fit = result.run.metrics["fit"]
    out = {"epoch": fit["seconds_per_epoch"], "eval": fit["seconds_per_eval"], "epochs": fit["epochs_run"]}
    record = json.loads((result.run.path / "config.json").read_text())
    pretrained = record.get("pretrained") or record.get("identity", {}).get("pretrained")
    if pretrained:
        logs = list((runs_dir / "_pretrain").glob(f"*/{method}/{pretrained}/log.jsonl"))
        if logs:
            epochs_log = [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip()]
            out["pretrain_epoch"] = sum(e["train_seconds"] for e in epochs_log) / len(epochs_log)
    return out


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ratio(recbole: float | None, recbench: float | None) -> str:
    return "-" if recbole is None or not recbench else f"{recbole / recbench:.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(PAIRS), help="comma-separated recbench methods")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--recbole-python", type=Path, default=DEFAULT_RECBOLE_PYTHON)
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--home", type=Path, default=None, help="RECBENCH_HOME (default: the environment's)")
    parser.add_argument("--work", type=Path, default=Path("/work/bench-runs/speed"), help="outside the project")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--s3rec-pretrain-epochs", type=int, default=0, help="recbench S3-Rec pre-training epochs")
    parser.add_argument("--recbole-s3rec-pretrain-epochs", type=int, default=0, help="0: untrained checkpoint")
    parser.add_argument("--recbole-epochs", type=int, default=None, help="RecBole epochs (default: --epochs)")
    parser.add_argument(
        "--recbole-batches", type=int, default=0, help="time only the first N batches of each RecBole pass, scaled"
    )
    parser.add_argument("--skip-recbole", action="store_true")
    args = parser.parse_args()

    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in PAIRS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(PAIRS)}")
    if args.home is not None:
        os.environ["RECBENCH_HOME"] = str(args.home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from recbench.data.dataset import load_dataset
    from recbench.data.download import import_local
    from recbench.errors import DataError
    from recbench.registry import get_method, resolve_config

    try:
        load_dataset(DATASET)
    except DataError:
        import_local(DATASET, args.source)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs_dir = work / "recbench" / stamp
    recbole_work = work / "recbole" / stamp
    data_root = prepare_recbole_data(args.source.resolve(), work / "recbole-data")
    recbole_work.mkdir(parents=True, exist_ok=True)

    rows = []
    for method in methods:
        pair, notes = PAIRS[method], [PAIRS[method].note] if PAIRS[method].note else []
        config = resolve_config(get_method(method))
        print(f"[{method}] recbench ...", file=sys.stderr, flush=True)
        ours = run_recbench(method, args.epochs, args.s3rec_pretrain_epochs, runs_dir)
        theirs: dict[str, Any] = {}
        if not args.skip_recbole:
            print(f"[{method}] RecBole {pair.recbole_model} ...", file=sys.stderr, flush=True)
            recbole_epochs = args.epochs if args.recbole_epochs is None else args.recbole_epochs
            settings = recbole_config(method, config, pair, recbole_epochs, data_root, recbole_work)
            pretrain = args.recbole_s3rec_pretrain_epochs if method == "s3rec" else None
            try:
                theirs = run_recbole(
                    args.recbole_python,
                    method,
                    pair.recbole_model,
                    settings,
                    recbole_work,
                    args.threads,
                    args.recbole_batches,
                    pretrain,
                )
            except RuntimeError as err:
                notes.append(f"RecBole failed: {err}")
        fit = theirs.get("fit", {"train": [], "valid": []})
        if args.recbole_batches and fit["train"]:
            (seen, total), (seen_eval, total_eval) = fit["train_batches"], fit["valid_batches"]
            notes.append(f"RecBole timed on {seen}/{total} train, {seen_eval}/{total_eval} eval batches, scaled")
        rows.append((method, ours["epoch"], mean(fit["train"]), ours["eval"], mean(fit["valid"]), notes))
        if method == "s3rec":
            pre = theirs.get("pretrain", {"train": []})
            pre_notes = [f"pre-training epochs (recbench {args.s3rec_pretrain_epochs}, RecBole "]
            pre_notes[0] += f"{args.recbole_s3rec_pretrain_epochs}), no validation"
            if args.recbole_batches and pre["train"]:
                pre_notes.append("RecBole timed on {}/{} batches, scaled".format(*pre["train_batches"]))
            rows.append(("s3rec pre-train", ours.get("pretrain_epoch"), mean(pre["train"]), None, None, pre_notes))
        print(json.dumps({"method": method, "recbench": ours, "recbole": theirs}), file=sys.stderr, flush=True)

    recbole_epochs = args.epochs if args.recbole_epochs is None else args.recbole_epochs
    print(
        f"\nScientific, cpu, {args.threads} threads; epochs: recbench {args.epochs}, RecBole {recbole_epochs}; "
        "seconds, mean over epochs; ratio = RecBole / recbench\n"
    )
    print("| method | recbench s/epoch | RecBole s/epoch | ratio | recbench s/eval | RecBole s/eval | ratio | notes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, ep, rb_ep, ev, rb_ev, notes in rows:
        print(
            f"| {method} | {cell(ep)} | {cell(rb_ep)} | {ratio(rb_ep, ep)} | {cell(ev)} | {cell(rb_ev)} | "
            f"{ratio(rb_ev, ev)} | {'; '.join(notes)} |"
        )
    print(f"\nrecbench runs: {runs_dir}\nRecBole logs: {recbole_work}")


if __name__ == "__main__":
    main()

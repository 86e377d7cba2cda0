"""The ``recbench`` command line: thin typer commands, each calling one library function.

Heavy imports (torch, numpy, pandas) happen inside the commands so ``--help`` is instant. A
:class:`recbench.errors.RecbenchError` is printed as one line and exits with status 1.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console

from recbench.errors import RecbenchError

app = typer.Typer(
    help="Benchmark transferable sequential recommenders: data, training, evaluation, statistics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# User text (paths, messages, names) is printed as is: no markup, no emoji codes (``file:100:``
# stays a line number), no highlighting. Styles are applied explicitly with :func:`say`.
console = Console(markup=False, emoji=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def _print_version(value: bool) -> None:
    if value:
        from recbench import __version__

        console.print(f"recbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Benchmark transferable sequential recommenders: data, training, evaluation, statistics."""


def say(label: str, message: str = "", style: str = "", err: bool = False) -> None:
    """Print ``label`` in ``style`` followed by ``message`` verbatim (one logical line, never re-wrapped)."""
    from rich.text import Text

    (err_console if err else console).print(Text.assemble((label, style), message), soft_wrap=True)


def user_errors(command: F) -> F:
    """Print a RecbenchError as one line and exit 1; anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RecbenchError as err:
            say("error:", f" {err}", "bold red", err=True)
            sys.exit(1)

    return wrapper


DEFAULT_METRICS_OPTION = "hr@10,ndcg@10,hr@50,ndcg@50"  # the columns of the published tables


# Fixed choices are enums: a bad value is a usage error (exit 2) naming the valid ones, before anything runs.
class Test(str, Enum):
    t = "t"
    wilcoxon = "wilcoxon"
    permutation = "permutation"


class Correction(str, Enum):
    holm = "holm"
    bonferroni = "bonferroni"
    bh = "bh"
    none = "none"


class Split(str, Enum):
    test = "test"
    valid = "valid"


class Executor(str, Enum):
    local = "local"
    ray = "ray"


class Breakdown(str, Enum):
    history = "history"
    popularity = "popularity"


TABLE_FORMATS = ("md", "tex", "csv", "json")
DEFAULT_PERMUTATIONS_OPTION = 10_000  # = recbench.results.stats.DEFAULT_PERMUTATIONS (no heavy import for --help)
DEFAULT_RESAMPLES_OPTION = 1_000  # = recbench.results.stats.DEFAULT_RESAMPLES


def _check_device(value: str) -> str:
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise typer.BadParameter(f"'{value}' is not one of auto, cpu, cuda, cuda:N, mps")
    return value


def _check_table_formats(value: str | None) -> str | None:
    if value is not None:
        unknown = [f for f in value.split(",") if f not in TABLE_FORMATS]
        if unknown:
            raise typer.BadParameter(f"{', '.join(unknown)}: not among {', '.join(TABLE_FORMATS)}")
    return value


def _check_protocols(value: str | None) -> str | None:
    if value is not None:
        from recbench.runs.protocols import parse_protocols

        try:
            parse_protocols(value)
        except RecbenchError as err:
            raise typer.BadParameter(str(err)) from None
    return value


Device = Annotated[str, typer.Option(callback=_check_device, help="auto, cpu, cuda, cuda:N or mps.")]
TestOption = Annotated[Test, typer.Option(help="Paired per-user test.")]
CorrectionOption = Annotated[
    Correction, typer.Option(help="Multiple-comparison correction over the comparisons of each dataset's table.")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")]
ProtocolsOption = Annotated[
    Optional[str],
    typer.Option(
        "--protocol",
        callback=_check_protocols,
        help="Comma-separated evaluation protocols (see `recbench list protocols`; default full): each is "
        "evaluated at the end, early stopping watches the first. E.g. --protocol full,pop100.",
    ),
]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where run directories are written.")]
FinishedRunsDir = Annotated[
    Optional[Path],
    typer.Option(
        "--runs-dir",
        help="Directory of finished runs, searched recursively (links to run directories followed) [default: runs].",
    ),
]
OldRunsDirArgument = Annotated[
    Optional[Path], typer.Argument(metavar="RUNS_DIR", help="Same as --runs-dir (kept for old scripts).")
]
LogTo = Annotated[
    Optional[list[str]],
    typer.Option(
        "--log-to",
        metavar="BACKEND[:WHERE]",
        help="Mirror each run to an experiment tracker: tensorboard[:DIR] (default DIR: RUNS_DIR/tensorboard) "
        "or mlflow[:URI] (default: file store RUNS_DIR/mlflow); repeatable or comma-separated. Off by default.",
    ),
]


@app.command()
@user_errors
def download(
    names: Annotated[
        list[str], typer.Argument(help="Dataset names from datasets.toml (or one new name for an import).")
    ],
    source: Annotated[
        Optional[Path], typer.Option("--from", help="Import local files from this path instead of downloading.")
    ] = None,
    fmt: Annotated[
        Optional[str],
        typer.Option(
            "--input-format",
            help="Format of the --from files (default: detected): unisrec, lcrec, recbole, table, amazon (raw Amazon "
            "2018), amazon2014 (ratings_*.csv + meta), movielens (ml-1m.zip or ratings.dat).",
        ),
    ] = None,
    user_col: Annotated[Optional[str], typer.Option("--user-col", help="table/recbole: the user column.")] = None,
    item_col: Annotated[Optional[str], typer.Option("--item-col", help="table/recbole: the item column.")] = None,
    time_col: Annotated[Optional[str], typer.Option("--time-col", help="table/recbole: the timestamp column.")] = None,
    item_text: Annotated[
        Optional[Path],
        typer.Option("--item-text", help="table: item-text table (CSV/TSV/parquet/JSON lines) keyed by item."),
    ] = None,
    text_fields: Annotated[
        Optional[str],
        typer.Option("--text-fields", help="table/recbole: comma-separated item fields joined into the text."),
    ] = None,
    partial_text: Annotated[
        bool, typer.Option("--partial-text", help="lcrec: use an X.item.partial.json that covers only some items.")
    ] = False,
    min_user_interactions: Annotated[
        Optional[int],
        typer.Option(
            "--min-user-interactions",
            help="Remove users with fewer interactions (default: the catalogue entry's filter, else none).",
        ),
    ] = None,
    min_item_interactions: Annotated[
        Optional[int],
        typer.Option("--min-item-interactions", help="Remove items with fewer interactions."),
    ] = None,
    filter_mode: Annotated[
        Optional[str],
        typer.Option(
            "--filter",
            help="kcore (default: repeat until every user and item meets its minimum) "
            "or once (one pass: users first, then items).",
        ),
    ] = None,
    release: Annotated[
        Optional[str],
        typer.Option(
            "--release",
            help="Take the datasets from this authors' release with their text features (unisrec: UniSRec's "
            "downstream-datasets.zip from Google Drive, needs `pip install 'recbench[release]'`); with --from, a copy "
            "already downloaded (the archive, or a directory holding it or downstream/NAME/).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Download and preprocess datasets (Amazon 2018 as UniSRec, Amazon 2014, MovieLens), or import files with --from.

    A filter other than a catalogued dataset's own writes a dataset of its own name (e.g. beauty-u5-i5-kcore).

    Example: recbench download scientific --from ../data/Scientific --input-format unisrec

    Example: recbench download scientific arts --release unisrec
    """
    from recbench.data.download import download_datasets
    from recbench.data.filters import InteractionFilter
    from recbench.data.formats import ImportOptions

    options = ImportOptions(
        user_col, item_col, time_col, item_text, tuple(text_fields.split(",")) if text_fields else None, partial_text
    )
    interaction_filter = InteractionFilter.from_options(min_user_interactions, min_item_interactions, filter_mode)
    if release is not None:
        from recbench.data.release import download_release

        if fmt is not None or options.given() or interaction_filter is not None:
            raise RecbenchError(
                "--release imports the release's files as published: --input-format, the import options and the "
                "filter options do not apply"
            )
        results = download_release(names, release, source, show_progress=not as_json)
    else:
        results = download_datasets(names, source, fmt, options, interaction_filter=interaction_filter)
    if as_json:
        rows = [
            {
                "name": r.dataset.name,
                "path": str(r.path),
                "counts": asdict(r.dataset.counts),
                "fingerprint": r.dataset.fingerprint,
                "messages": list(r.messages),
                "count_mismatches": list(r.mismatches),
            }
            for r in results
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    for result in results:
        counts = result.dataset.counts
        say(
            result.dataset.name,
            f": {counts.users:,} users, {counts.items:,} items, {counts.interactions:,} interactions -> {result.path}",
            "green",
        )
        for message in result.messages:
            say(f"  {message}")
        for mismatch in result.mismatches:
            say("WARNING: count mismatch:", f" {mismatch}", "bold yellow", err=True)


@app.command()
@user_errors
def encode(
    datasets: Annotated[list[str], typer.Argument(help="Downloaded datasets whose item texts to encode.")],
    encoder: Annotated[
        str, typer.Option(help="Sentence encoder: all-MiniLM-L6-v2 (offline default) or any Hugging Face name.")
    ] = "all-MiniLM-L6-v2",
    pooling: Annotated[str, typer.Option(help="cls or mean.")] = "mean",
    max_tokens: Annotated[int, typer.Option(help="Tokens of each text the encoder reads.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Texts per encoder batch.")] = 64,
    word_drop: Annotated[
        float, typer.Option(help="Drop each word with this probability (UniSRec's augmented view uses 0.15).")
    ] = 0.0,
    precision: Annotated[
        str, typer.Option(help="float32 (reproducible) or bfloat16 (about 2x faster on CPUs with native bf16).")
    ] = "float32",
    export: Annotated[
        Optional[Path], typer.Option(help="Also write UniSRec's raw .feat1CLS layout to this file (one dataset).")
    ] = None,
    import_from: Annotated[
        Optional[Path],
        typer.Option(
            "--import",
            help="Store this UniSRec .feat1CLS/.feat2CLS file as the embeddings of --encoder/--pooling/--word-drop "
            "instead of encoding (one dataset).",
        ),
    ] = None,
    import_codes: Annotated[
        Optional[Path],
        typer.Option(
            "--import-codes",
            help="Store the item codes of this faiss IVF-PQ index (VQ-Rec's X.OPQ32,IVF1,PQ32x8.strict.index) as "
            "--codes-name, for `--set item_codes=imported:NAME`; needs --unisrec-dir (one dataset, no encoding).",
        ),
    ] = None,
    unisrec_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--unisrec-dir",
            help="--import-codes: the UniSRec files the index was built from; row k = the item with the k-th "
            "smallest X.item2index number among the items of X.train.inter. If it holds X.feat1CLS, every item is "
            "coded by encoding its vector with the index, as the official fine-tuning does.",
        ),
    ] = None,
    features: Annotated[
        Optional[Path],
        typer.Option(
            "--features",
            help="--import-codes: code every item by encoding its vector with the index (as the official "
            "fine-tuning does) from this raw float32 file in X.item2index order (default: DIR/X.feat1CLS if present).",
        ),
    ] = None,
    codes_name: Annotated[
        str, typer.Option("--codes-name", help="--import-codes: the name the codes are stored under.")
    ] = "official",
    as_json: JsonFlag = False,
) -> None:
    """Encode item texts into a cached float32 matrix (reused until the text or encoder changes), or import item codes.

    Example: recbench encode scientific --encoder bert-base-uncased --pooling cls

    Example: recbench encode scientific --import-codes Sci.index --unisrec-dir ../Scientific --codes-name official

    Example: recbench encode scientific --import-codes Sci.index --unisrec-dir ../Scientific --features Sci.feat1CLS
    """
    from recbench.data.dataset import load_dataset
    from recbench.data.encode import EncoderSpec, export_feat, import_feat, item_embeddings, save_embeddings

    if import_codes is not None or unisrec_dir is not None or features is not None:
        other = bool(export or import_from)
        _import_codes(datasets, import_codes, unisrec_dir, features, codes_name, as_json, other)
        return
    spec = EncoderSpec(encoder, pooling, max_tokens, word_drop, precision=precision)
    if (export or import_from) and len(datasets) != 1:
        raise RecbenchError("--export and --import take one dataset")
    rows = []
    for name in datasets:
        if import_from is not None:
            dataset = load_dataset(name)
            table = import_feat(import_from, dataset)
            saved = save_embeddings(dataset, spec, table, str(import_from))
            rows.append({"dataset": name, "items": table.shape[0] - 1, "dims": table.shape[1], "origin": "imported"})
            rows[-1]["path"] = str(saved)
            if not as_json:
                console.print(f"{name}: imported {table.shape[0] - 1:,} items x {table.shape[1]} dims to {saved}")
            continue
        table, cached = item_embeddings(load_dataset(name), spec, batch_size, show_progress=not as_json)
        origin = "cache hit" if cached else "encoded and cached"
        rows.append({"dataset": name, "items": table.shape[0] - 1, "dims": table.shape[1], "origin": origin})
        if not as_json:
            console.print(f"{name}: {table.shape[0] - 1:,} items x {table.shape[1]} dims ({origin})")
        if export is not None:
            export_feat(table, export)
            rows[-1]["export"] = str(export)
            if not as_json:
                console.print(f"wrote {export}")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))


def _import_codes(
    datasets: list[str],
    index_file: Path | None,
    unisrec_dir: Path | None,
    features: Path | None,
    name: str,
    as_json: bool,
    other: bool,
) -> None:
    """``encode --import-codes``: store an index's item codes for one dataset and report what was mapped."""
    from recbench.data.codes import CODED_BY_VECTORS, import_faiss_codes
    from recbench.data.dataset import load_dataset

    if index_file is None or unisrec_dir is None:
        raise RecbenchError(
            "--import-codes INDEX_FILE and --unisrec-dir DIR go together (the index's rows follow DIR's X.train.inter)"
            + ("; --features is for --import-codes" if features is not None else "")
        )
    if other:
        raise RecbenchError("--import-codes stores codes only: drop --import / --export")
    if len(datasets) != 1:
        raise RecbenchError("--import-codes takes one dataset")
    stored = import_faiss_codes(load_dataset(datasets[0]), index_file, unisrec_dir, name, features=features)
    record = stored.record
    keys = ("items", "items_with_code", "items_without_code", "distinct_code_rows", "items_sharing_a_code")
    encoded = record["coded_by"] == CODED_BY_VECTORS
    report = {
        "dataset": datasets[0],
        "name": name,
        "path": str(stored.path),
        "sha256": stored.sha256,
        "coded_by": record["coded_by"],
        "code_dim": record["code_dim"],
        "bits": record["bits"],
        **{key: record[key] for key in keys},
        "without_code": record["without_code"],
        "coded_but_not_training": record["coded_but_not_training"],
        "training_but_without_code": record["training_but_without_code"],
    }
    if encoded:
        report |= {key: record[key] for key in ("features", "features_sha256", "strict_rows", "strict_rows_equal")}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    how = "every item's vector encoded by the index, as the official fine-tuning does" if encoded else "index rows"
    say(
        datasets[0],
        f": item codes '{name}' ({record['code_dim']} codes x {record['bits']} bits, {how}): "
        f"{record['items_with_code']:,} of {record['items']:,} items {'coded' if encoded else 'mapped'}, "
        f"{record['distinct_code_rows']:,} distinct code rows, {record['items_sharing_a_code']:,} items share their "
        f"full code with another -> {stored.path}",
        "green",
    )
    if encoded:
        say(
            f"  vectors: {record['features']} (sha256 {record['features_sha256'][:12]}); check: "
            f"{record['strict_rows_equal']:,} of the index's {record['strict_rows']:,} stored rows equal their "
            "item's re-encoded vector"
        )
        if record["strict_rows_equal"] != record["strict_rows"]:
            say(
                "WARNING:",
                f" {record['strict_rows'] - record['strict_rows_equal']:,} stored rows differ from their item's "
                "re-encoded vector: these are not the vectors the index was filled with (the codes stored are "
                "the re-encoded ones, as the official fine-tuning's)",
                "bold yellow",
                err=True,
            )
    else:
        say(
            "  no item vectors (DIR/X.feat1CLS or --features FILE): these are the index's stored rows; with them "
            "every item would be coded by encoding its vector with the index, as the official fine-tuning does"
        )
    if record["items_without_code"]:
        shown = ", ".join(record["without_code"][:5]) + (", ..." if record["items_without_code"] > 5 else "")
        say(
            f"  {record['items_without_code']:,} items have no code in the index ({shown}); the method codes them "
            "itself (vqrec: missing_codes, default nearest)"
        )
    for key, what in (
        ("coded_but_not_training", "items with a row in the index are not training items of the dataset"),
        ("training_but_without_code", "training items of the dataset have no row in the index"),
    ):
        if record[key]:
            say(
                "WARNING:",
                f" {record[key]:,} {what}: was it imported from these UniSRec files?",
                "bold yellow",
                err=True,
            )
    say(f"  use it: recbench train vqrec --dataset {datasets[0]} --set item_codes=imported:{name}")


@app.command()
@user_errors
def train(
    method: Annotated[str, typer.Argument(help="Registered method name (see `recbench list methods`).")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name (downloaded).")],
    seed: Annotated[int, typer.Option(help="Random seed (Python, NumPy, torch).")] = 2020,
    assignments: Annotated[
        Optional[list[str]], typer.Option("--set", help="Config override key=value (repeatable).")
    ] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="TOML file of config overrides.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
    ] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Start the run over even if it exists.")] = False,
    device: Device = "auto",
    runs_dir: RunsDir = Path("runs"),
    pretrain_on: Annotated[
        Optional[str],
        typer.Option(
            "--pretrain-on",
            help="Comma-separated source datasets: pre-train on their union first (transfer methods); "
            "none: from scratch.",
        ),
    ] = None,
    pretrain_seed: Annotated[
        Optional[int],
        typer.Option(
            "--pretrain-seed",
            help="Seed of the pre-training run (default: --seed); "
            "fix it to fine-tune several seeds from one checkpoint.",
        ),
    ] = None,
    protocols: ProtocolsOption = None,
    log_to: LogTo = None,
    init: Annotated[
        Optional[str],
        typer.Option(
            "--init",
            help="Start from an official pre-trained checkpoint (unisrec, unisrec-id, vqrec): a file, or "
            "official:NAME for $RECBENCH_HOME/official/NAME; read without running anything in it.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a method on a dataset, evaluate the best-valid weights on test, write a run record.

    Example: recbench train sasrec --dataset scientific --seed 2020 --set hidden_size=300 --protocol full,pop100
    """
    from recbench.runs.trainer import flush_denormals_in_this_process

    flush_denormals_in_this_process()  # before torch starts its worker threads, so they inherit it
    from recbench.registry import parse_assignments, read_config_file
    from recbench.runs.experiment import run_experiment

    layers = [read_config_file(config_file)] if config_file else []
    layers.append(parse_assignments(assignments or []))
    sources = pretrain_on.split(",") if pretrain_on and pretrain_on != "none" else None
    result = run_experiment(
        method,
        dataset,
        seed=seed,
        overrides=layers,
        runs_dir=runs_dir,
        resume=resume,
        restart=restart,
        device=device,
        pretrain_on=sources,
        pretrain_seed=pretrain_seed,
        protocols=protocols,
        log_to=log_to,
        init=init,
    )
    if as_json:
        metrics = result.run.metrics
        record = {"run": str(result.run.path), "reused": result.reused, "protocols": result.run.protocol_names()}
        typer.echo(json.dumps({**record, "valid": metrics["valid"], "test": metrics["test"]}, indent=2))
        return
    if result.reused:
        console.print(f"finished run already exists, reused: {result.run.path} (pass --restart to train again)")
    _print_metrics(result.run.metrics["test"], f"test metrics ({result.run.path})")


@app.command("eval")
@user_errors
def evaluate(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A finished run directory (omit with --import).")] = None,
    split: Annotated[Split, typer.Option(help="The split to evaluate.")] = Split.test,
    protocol: Annotated[
        Optional[str],
        typer.Option(
            help="Evaluate under this protocol (see `recbench list protocols`) and add its ranks and metrics to the "
            "run if it has none under it (default: full).",
        ),
    ] = None,
    mask_history: Annotated[
        bool,
        typer.Option("--mask-history", help="Shorthand for --protocol full-masked."),
    ] = False,
    device: Device = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    import_file: Annotated[
        Optional[Path],
        typer.Option("--import", help="Evaluate another tool's ranked lists (.tsv/.csv/.txt) or score matrix (.npy)."),
    ] = None,
    dataset: Annotated[Optional[str], typer.Option(help="With --import: the dataset the file scores.")] = None,
    name: Annotated[Optional[str], typer.Option(help="With --import: the method label in leaderboards.")] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Re-evaluate a finished run (adding a protocol's results to it), or evaluate another tool's results
    and store them as a run.

    Example: recbench eval runs/scientific/sasrec/seed2020-<id> --protocol pop100
    """
    if import_file is not None:
        from recbench.runs.external import import_note, import_results

        if not dataset or not name or run_dir is not None:
            raise RecbenchError("--import FILE needs --dataset NAME and --name LABEL, and no RUN_DIR")
        if split is not Split.test or mask_history or protocol:
            raise RecbenchError(
                "--import evaluates the test split under the full protocol; add others afterwards with "
                "`recbench eval RUN_DIR --protocol NAME`"
            )
        run = import_results(import_file, dataset, name, runs_dir)
        metrics, card, where, stored = run.metrics["test"], run.metrics["protocol"], run.path, True
        if note := import_note(run):
            say("note:", f" {note}", "yellow", err=True)
    elif run_dir is None:
        raise RecbenchError("give a RUN_DIR, or --import FILE --dataset NAME --name LABEL")
    else:
        from recbench.runs.experiment import evaluate_run

        if mask_history and protocol not in (None, "full-masked"):
            raise RecbenchError("--mask-history is --protocol full-masked; give one of them")
        from recbench.runs.record import RunRecord

        name = "full-masked" if mask_history else protocol or "full"
        stored = name not in RunRecord(run_dir).protocol_names()
        result = evaluate_run(run_dir, split=split.value, protocol=name, device=device)
        metrics, card, where = result.metrics, result.protocol, run_dir
        if stored and not as_json:
            say("stored:", f" results under protocol {card['name']} added to {run_dir}", "green", err=True)
    if as_json:
        console.print_json(json.dumps({"metrics": metrics, "protocol": card, "stored": bool(stored)}))
    else:
        _print_metrics(metrics, f"{split.value} metrics, {card.get('card') or card.get('name', 'full')} ({where})")


class ListWhat(str, Enum):
    methods = "methods"
    datasets = "datasets"
    protocols = "protocols"
    recipes = "recipes"


@app.command("list")
@user_errors
def list_(
    what: Annotated[ListWhat, typer.Argument(help="methods, datasets, protocols or recipes.")],
    as_json: JsonFlag = False,
) -> None:
    """List registered methods (and plugins that failed to import), datasets (which are downloaded) and suites,
    evaluation protocols (built in, and those of $RECBENCH_HOME/protocols.toml) or paper recipes.

    Example: recbench list datasets --json
    """
    rows = _LISTERS[what]()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if what is ListWhat.datasets:
        _print_datasets(rows)
        return
    # Lines, not tables: names stay whole and descriptions wrap at any width (80 columns included).
    for row in rows:
        if what is ListWhat.methods:
            console.print(f"{row['name']}: {row['summary']}")
            preset = f"; preset {json.dumps(row['preset'])}" if row["preset"] else ""
            console.print(f"    {row['class']}{preset}")
        elif what is ListWhat.protocols:
            console.print(f"{row['name']}: {row['card']}; k = {', '.join(map(str, row['ks']))} ({row['source']})")
            if row["description"]:
                console.print(f"    {row['description']}")
        else:
            console.print(f"{row['name']}: {row['title']} ({row['source']})")
            console.print(
                f"    protocol {row['protocol']}, {row['seeds']} seeds, datasets {', '.join(row['datasets'])}"
            )
            console.print(f"    rows: {', '.join(row['rows'])}")
    if what is ListWhat.methods:
        from recbench.registry import failed_plugins

        for label, error in failed_plugins().items():
            say(f"plugin {label} failed to import:", f" {error}", "yellow", err=True)


def _method_rows() -> list[dict[str, Any]]:
    from recbench.registry import methods

    return [
        {"name": e.name, "class": f"{e.module}.{e.cls.__name__}", "preset": e.preset, "summary": e.summary}
        for e in methods()
    ]


def _protocol_rows() -> list[dict[str, Any]]:
    from recbench.runs.protocols import BUILTIN, protocols, user_protocols_file

    return [
        {
            "name": p.name,
            "card": p.card().split(": ", 1)[1],
            "definition": p.definition(),
            "ks": list(p.ks),
            "source": "built in" if p.name in BUILTIN else str(user_protocols_file()),
            "description": p.description,
        }
        for p in protocols().values()
    ]


def _recipe_rows() -> list[dict[str, Any]]:
    from recbench.recipes import get_recipe, recipe_names

    rows = []
    for name, source in recipe_names().items():
        recipe = get_recipe(name if source == "built in" else source)
        rows.append(
            {
                "name": name,
                "title": recipe.title,
                "source": source,
                "protocol": recipe.protocol,
                "seeds": recipe.seeds,
                "datasets": recipe.datasets,
                "rows": [row.label for row in recipe.rows],
            }
        )
    return rows


def _dataset_rows() -> list[dict[str, Any]]:
    from recbench.data.catalog import BUILTIN, dataset_names, get_dataset_spec
    from recbench.data.dataset import dataset_path, downloaded_names
    from recbench.data.sources import suite_rows

    catalogued = set(dataset_names())
    rows: list[dict[str, Any]] = []
    for name in sorted(catalogued | set(downloaded_names())):
        spec = get_dataset_spec(name) if name in catalogued else None
        manifest_path = dataset_path(name) / "manifest.json"
        expected = [str(spec.expected)] if spec and spec.expected else []
        if spec and spec.expected_unfiltered and spec.expected_unfiltered != spec.expected:
            expected.append(f"before the filter: {spec.expected_unfiltered}")
        if manifest_path.is_file():  # what the copy on disk was filtered with
            filtered = _downloaded_filter(manifest_path)
        else:  # what a download will apply
            filtered = spec.interaction_filter.describe() if spec and spec.interaction_filter else ""
        rows.append(
            {
                "name": name,
                "family": "SYNTHETIC demo" if spec and spec.synthetic else spec.family if spec else "imported",
                "entry": "" if spec is None else "built-in" if spec.origin == BUILTIN else "user file",
                "filter": filtered,
                "downloaded": _downloaded_counts(manifest_path),
                "expected": "; ".join(expected),
            }
        )
    for suite in suite_rows():
        rows.append(
            {
                "suite": suite.name,
                "sources": list(suite.sources),
                "targets": list(suite.targets),
                "not_downloaded": list(suite.missing),
                "description": suite.description,
            }
        )
    return rows


def _print_datasets(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from recbench.data.catalog import user_catalog_path

    table = Table()
    table.add_column("dataset", no_wrap=True)  # names are what users type: never broken across lines
    for header in ("family", "entry", "filter", "downloaded: users / items / interactions", "expected (datasets.toml)"):
        table.add_column(header)
    for row in rows:
        if "name" in row:
            table.add_row(row["name"], row["family"], row["entry"], row["filter"], row["downloaded"], row["expected"])
    console.print(table)
    if any(row.get("entry") == "user file" for row in rows):
        console.print(f"entries marked 'user file' come from {user_catalog_path()} (read over the built-in ones)")
    suites = Table("suite", "pre-train on (sources)", "evaluate on (targets)", "not downloaded yet", "description")
    for row in rows:
        if "suite" in row:
            suites.add_row(
                row["suite"],
                ", ".join(row["sources"]),
                ", ".join(row["targets"]),
                ", ".join(row["not_downloaded"]) or "-",
                row["description"],
            )
    console.print(suites)


_LISTERS: dict[ListWhat, Callable[[], list[dict[str, Any]]]] = {
    ListWhat.methods: _method_rows,
    ListWhat.datasets: _dataset_rows,
    ListWhat.protocols: _protocol_rows,
    ListWhat.recipes: _recipe_rows,
}


@app.command()
@user_errors
def leaderboard(
    runs_dir_argument: OldRunsDirArgument = None,
    runs_dir: FinishedRunsDir = None,
    fmt: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            callback=_check_table_formats,
            help="Comma-separated md, tex, csv, json: printed (one) or written with --out (default: terminal tables).",
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(help="A .md/.tex/.csv/.json file, or a prefix written once per --format (default md)."),
    ] = None,
    metrics: Annotated[str, typer.Option(help="Comma-separated: hr@K, ndcg@K, mrr@K, mrr.")] = DEFAULT_METRICS_OPTION,
    datasets: Annotated[
        Optional[str], typer.Option(help="Comma-separated datasets (default: every dataset with runs).")
    ] = None,
    baseline: Annotated[
        Optional[str], typer.Option(help="Test each method against this one (default: all pairs).")
    ] = None,
    test: TestOption = Test.t,
    correction: CorrectionOption = Correction.holm,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
    permutations: Annotated[
        int, typer.Option(min=100, help="Sign flips of the permutation test.")
    ] = DEFAULT_PERMUTATIONS_OPTION,
    resamples: Annotated[
        int, typer.Option(min=100, help="Bootstrap resamples of the confidence intervals.")
    ] = DEFAULT_RESAMPLES_OPTION,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the permutation test and the bootstrap.")] = 0,
    by: Annotated[
        Optional[Breakdown],
        typer.Option(
            help="One table per group of users: history (interactions before the target: 1-5, 6-10, 11-20, 21+) "
            "or popularity (target's training interactions: cold <= 5, head = top 20% of items, mid). "
            "Needs the downloaded dataset the runs were made on.",
        ),
    ] = None,
    protocol: Annotated[
        Optional[str],
        typer.Option(
            help="Tabulate the results under this protocol (default: each run's first; one table never mixes "
            "protocols). Add a protocol to finished runs with `recbench eval RUN --protocol NAME`.",
        ),
    ] = None,
    split: Annotated[Split, typer.Option(help="test, or valid (the early-stopping split).")] = Split.test,
) -> None:
    """Leaderboard of stored runs with per-user significance tests; no model is loaded.

    Example: recbench leaderboard --runs-dir runs --baseline sasrec --test wilcoxon --out tables/all --format md,tex
    """
    from recbench.results.leaderboard import leaderboard as make_leaderboard
    from recbench.results.leaderboard import output_files

    formats = fmt.split(",") if fmt else None
    if out is None and formats and len(formats) > 1:
        raise RecbenchError("several --format values need --out PREFIX (one file per format)")
    report = make_leaderboard(
        _runs_dir(runs_dir_argument, runs_dir),
        metrics=metrics.split(","),
        datasets=datasets.split(",") if datasets else None,
        baseline=baseline,
        test=test.value,
        correction=correction.value,
        alpha=alpha,
        fmt=formats,
        out=out,
        n_permutations=permutations,
        n_resamples=resamples,
        seed=seed,
        split=split.value,
        protocol=protocol,
        by=by.value if by else None,
    )
    for cell in report.cells:
        if cell.damaged:
            say("damaged:", f" {cell.dataset} / {cell.method}: {cell.error}", "bold red", err=True)
    if out is not None:
        console.print(f"wrote {', '.join(str(path) for path, _ in output_files(out, formats))}")
    elif formats:
        typer.echo(report.render(formats[0]), nl=False)
    else:
        for table in report.rich_tables():
            console.print(table)


def _runs_dir(argument: Path | None, option: Path | None) -> Path:
    """The runs directory of ``leaderboard`` / ``plot``: --runs-dir, or the older positional form."""
    if argument is not None and option is not None and argument != option:
        raise RecbenchError(f"two runs directories given ({argument} and --runs-dir {option}); give one")
    return option or argument or Path("runs")


@app.command()
@user_errors
def plot(
    runs_dir_argument: OldRunsDirArgument = None,
    runs_dir: FinishedRunsDir = None,
    kind: Annotated[
        str,
        typer.Option("--kind", help="curves, rank-cdf, seeds, forest (needs --baseline), by-history or by-popularity."),
    ] = "curves",
    out: Annotated[
        Optional[Path], typer.Option(help="Figure file: .png, .pdf or .svg (default: KIND-DATASET.png).")
    ] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="png, pdf or svg (default: the --out suffix).")] = None,
    dataset: Annotated[
        Optional[str], typer.Option(help="The dataset to plot (needed when the runs cover several).")
    ] = None,
    metrics: Annotated[
        str, typer.Option(help="Comma-separated, one panel each (seeds, forest, by-*): hr@K, ndcg@K, mrr@K, mrr.")
    ] = "hr@10,ndcg@10",
    baseline: Annotated[
        Optional[str], typer.Option(help="Test each method against this one (forest: required).")
    ] = None,
    test: TestOption = Test.t,
    correction: CorrectionOption = Correction.holm,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
) -> None:
    """Figures of stored runs: curves, rank CDF, seed spread, forest plot, breakdowns (extra recbench[plot]).

    Example: recbench plot --runs-dir runs --kind forest --baseline sasrec --out figures/forest.pdf
    """
    from recbench.results.plots import plot as make_plot

    path = make_plot(
        kind,
        _runs_dir(runs_dir_argument, runs_dir),
        out,
        dataset=dataset,
        metrics=metrics.split(","),
        baseline=baseline,
        test=test.value,
        correction=correction.value,
        alpha=alpha,
        fmt=fmt,
    )
    console.print(f"wrote {path}")


@app.command()
@user_errors
def compare(
    datasets: Annotated[
        Optional[str], typer.Option(help="Comma-separated datasets (downloaded, synthetic, or importable).")
    ] = None,
    suite: Annotated[
        Optional[str], typer.Option(help="Use a suite's target datasets from datasets.toml (e.g. demo).")
    ] = None,
    methods: Annotated[
        Optional[str], typer.Option(help="Comma-separated methods (default: every registered method).")
    ] = None,
    seeds: Annotated[
        Optional[int], typer.Option(help="Seeds per cell (2020, 2021, ...); default 1, a recipe's own; 3 recommended.")
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    jobs: Annotated[int, typer.Option(help="Cells run in parallel (local processes).")] = 1,
    executor: Annotated[
        Executor, typer.Option(help="local, or ray (cells as Ray tasks; pip install 'recbench[ray]').")
    ] = Executor.local,
    baseline: Annotated[
        Optional[str], typer.Option(help="Test each method against this one (default: all pairs).")
    ] = None,
    assignments: Annotated[
        Optional[list[str]], typer.Option("--set", help="Config override key=value for every method (repeatable).")
    ] = None,
    metrics: Annotated[str, typer.Option(help="Comma-separated: hr@K, ndcg@K, mrr@K, mrr.")] = DEFAULT_METRICS_OPTION,
    test: TestOption = Test.t,
    correction: CorrectionOption = Correction.holm,
    out: Annotated[
        Optional[str],
        typer.Option(help="A .md/.tex/.csv/.json file, or a prefix written once per --format (and figures OUT-*.png)."),
    ] = None,
    fmt: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            callback=_check_table_formats,
            help="Comma-separated md, tex, csv, json written with --out [default: all four for a prefix].",
        ),
    ] = None,
    device: Device = "auto",
    pretrain_on: Annotated[
        Optional[str],
        typer.Option(
            "--pretrain-on",
            help="Source datasets for transfer methods "
            "(default with --suite: its sources; 'none' to train from scratch).",
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Smoke-test preset beneath --set: small widths, at most 10 epochs (not the published protocol).",
        ),
    ] = False,
    pretrain_seed: Annotated[
        Optional[int],
        typer.Option(
            "--pretrain-seed",
            help="One pre-training run per method with this seed, shared by every seed (default: one per seed).",
        ),
    ] = None,
    protocols: ProtocolsOption = None,
    recipe: Annotated[
        Optional[str],
        typer.Option(
            help="Run a published table (see `recbench list recipes`, or a .toml path): its datasets, rows, "
            "protocol and seeds, with the paper's numbers under ours. E.g. --recipe unisrec-table2 --stand-ins.",
        ),
    ] = None,
    use: Annotated[
        Optional[str],
        typer.Option(help="With --recipe: run other datasets in place of the recipe's, e.g. instruments=my-instr."),
    ] = None,
    stand_ins: Annotated[
        bool, typer.Option("--stand-ins", help="With --recipe: use the recipe's stand-in datasets where it names one.")
    ] = False,
    log_to: LogTo = None,
) -> None:
    """Train and evaluate every method on every dataset (reusing finished runs), then report.

    Example: recbench compare --datasets scientific --methods sasrec,unisrec --seeds 3 --out tables/sci
    """
    from recbench.runs.trainer import flush_denormals_in_this_process

    flush_denormals_in_this_process()  # before torch starts its worker threads, so they inherit it
    from recbench.registry import parse_assignments
    from recbench.results.leaderboard import output_prefix

    formats = fmt.split(",") if fmt else None
    if out is not None and formats is None and output_prefix(out) == out:
        formats = list(TABLE_FORMATS)  # a prefix: every format, as before
    # What every grid takes, whether its datasets and rows come from options or from a recipe.
    grid = {
        "runs_dir": runs_dir,
        "jobs": jobs,
        "executor": executor.value,
        "overrides": [parse_assignments(assignments or [])],
        "device": device,
        "baseline": baseline,
        "test": test.value,
        "correction": correction.value,
        "out": out,
        "formats": formats,
        "quick": quick,
        "log_to": log_to,
    }
    if recipe is not None:
        from recbench.recipes import run_recipe

        clashing = [
            flag
            for flag, value in (
                ("--datasets", datasets),
                ("--suite", suite),
                ("--methods", methods),
                ("--protocol", protocols),
                ("--pretrain-on", pretrain_on),
                ("--metrics", metrics if metrics != DEFAULT_METRICS_OPTION else None),
            )
            if value
        ]
        if clashing:
            raise RecbenchError(
                f"--recipe sets the datasets, rows, metrics, protocol and sources itself; drop {', '.join(clashing)}"
            )
        report, outcomes = run_recipe(
            recipe, use=_dataset_pairs(use), stand_ins=stand_ins, seeds=seeds, pretrain_seed=pretrain_seed, **grid
        )
    else:
        from recbench.compare import compare as run_compare

        if use or stand_ins:
            raise RecbenchError("--use and --stand-ins go with --recipe")
        names = datasets.split(",") if datasets else []
        sources = pretrain_on.split(",") if pretrain_on and pretrain_on != "none" else None
        if suite:
            from recbench.data.catalog import get_suite

            names += list(get_suite(suite).targets)
            if pretrain_on is None:
                sources = list(get_suite(suite).sources)
        report, outcomes = run_compare(
            names,
            methods.split(",") if methods else None,
            seeds or 1,
            metrics=metrics.split(","),
            pretrain_on=sources,
            pretrain_seed=pretrain_seed,
            protocols=protocols.split(",") if protocols else None,
            **grid,
        )
    for shown in [report, *report.others.values()]:
        for table in shown.rich_tables():
            console.print(table)
    for outcome in outcomes:
        if outcome.error:
            where = f" (traceback: {outcome.traceback_file})" if outcome.traceback_file else ""
            cell = outcome.cell
            say("failed:", f" {cell.dataset} / {cell.row} / seed {cell.seed}: {outcome.error}{where}", "red", err=True)
    if out:
        from recbench.compare import protocol_output
        from recbench.results.leaderboard import output_files

        targets = [out, *(protocol_output(out, name) for name in report.others)]
        console.print(f"wrote {', '.join(str(path) for t in targets for path, _ in output_files(t, formats))}")
    failed = [o for o in outcomes if o.error]
    if failed:  # the report shows them; the exit status tells scripts and CI
        say("error:", f" {len(failed)} of {len(outcomes)} cells failed", "bold red", err=True)
        raise typer.Exit(1)


def _dataset_pairs(text: str | None) -> dict[str, str]:
    """``a=b,c=d`` -> {"a": "b", "c": "d"} (``--use``)."""
    pairs = {}
    for pair in (text or "").split(","):
        if pair.strip():
            original, sep, replacement = pair.partition("=")
            if not sep or not original.strip() or not replacement.strip():
                raise RecbenchError(f"--use takes DATASET=REPLACEMENT pairs, got {pair!r}")
            pairs[original.strip()] = replacement.strip()
    return pairs


@app.command()
@user_errors
def show(method: Annotated[str, typer.Argument(help="Registered method name (see `recbench list methods`).")]) -> None:
    """Every config field of a method: type, default (with the variant's preset) and what it means.

    Example: recbench show unisrec-id
    """
    from rich.table import Table

    from recbench.registry import get_method, resolve_config

    entry = get_method(method)
    defaults = resolve_config(entry)
    table = Table("field", "type", "default", "meaning", title=f"{entry.name} ({entry.module}.{entry.cls.__name__})")
    for name, field in type(defaults).model_fields.items():
        preset = " (preset)" if name in entry.preset else ""
        table.add_row(
            name, _type_name(field.annotation), json.dumps(getattr(defaults, name)) + preset, field.description or ""
        )
    console.print(table)


def _type_name(annotation: Any) -> str:
    """A config field's type as a reader writes it: ``float | None``, ``'cls' | 'mean'``, ``list[str]``."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(arg) for arg in args)}]"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _downloaded_counts(manifest_path: Path) -> str:
    """'users / items / interactions' of a downloaded dataset, 'no', or 'damaged: ...' (never a traceback)."""
    if not manifest_path.is_file():
        return "no"
    try:
        counts = json.loads(manifest_path.read_text(encoding="utf-8"))["counts"]
        return " / ".join(f"{int(counts[k]):,}" for k in ("users", "items", "interactions"))
    except (ValueError, KeyError, TypeError, OSError):
        return f"damaged manifest.json: re-run `recbench download {manifest_path.parent.name}`"


def _downloaded_filter(manifest_path: Path) -> str:
    """The interaction filter a downloaded dataset records ('' for none), or '?' if its manifest cannot say."""
    from recbench.data.filters import filter_from_record

    try:
        recorded = filter_from_record(json.loads(manifest_path.read_text(encoding="utf-8")).get("filter"))
        return recorded.describe() if recorded else ""
    except (ValueError, AttributeError, OSError, RecbenchError):
        return "?"


def _print_metrics(metrics: dict[str, float], title: str) -> None:
    from rich.table import Table

    ks = sorted({int(k.split("@")[1]) for k in metrics if "@" in k})
    table = Table("k", "HR@k", "NDCG@k", "MRR@k", title=title)
    for k in ks:
        table.add_row(str(k), f"{metrics[f'hr@{k}']:.4f}", f"{metrics[f'ndcg@{k}']:.4f}", f"{metrics[f'mrr@{k}']:.4f}")
    console.print(table)
    if "mrr" in metrics:
        console.print(f"MRR (all ranks): {metrics['mrr']:.4f}")


if __name__ == "__main__":
    app()

"""Experiment tracking: what TensorBoard and MLflow hold equals the run record (log.jsonl, metrics.json).

The stores are read back with each backend's own reader (TensorBoard's EventAccumulator, MLflow's
client on the local file store). A test skips when its backend is not installed; CI installs both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from recbench.cli import app
from recbench.errors import RecbenchError
from recbench.runs.experiment import run_experiment
from recbench.runs.record import RunRecord
from recbench.runs.tracking import (
    MLflowSink,
    TensorBoardSink,
    TrackingSpec,
    TrackingWarning,
    default_mlflow_uri,
    mlflow_key,
    parse_log_to,
)
from tests.test_train import interrupted_at_epoch

TINY = {"hidden_size": 8, "inner_size": 8, "max_seq_length": 8, "epochs": 4, "patience": 5}
FLOAT32 = 1e-6  # TensorBoard stores scalars as float32; MLflow keeps every digit


def train(runs_dir: Path, log_to: Any, **options: Any) -> RunRecord:
    result = run_experiment(
        "sasrec",
        "toy",
        seed=3,
        overrides=[TINY],
        runs_dir=runs_dir,
        device="cpu",
        show_progress=False,
        log_to=log_to,
        **options,
    )
    return result.run


# --- reading the stores back ---------------------------------------------------------------------
def tensorboard_events(directory: Path) -> Any:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = event_accumulator.EventAccumulator(
        str(directory), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
    )
    events.Reload()
    return events


def scalars(events: Any, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in events.Scalars(tag)]


def text(events: Any, tag: str) -> str:
    (event,) = events.Tensors(f"{tag}/text_summary")
    return event.tensor_proto.string_val[0].decode()


def mlflow_runs(runs_dir: Path) -> list[Any]:
    pytest.importorskip("mlflow")
    from recbench.runs.tracking import EXPERIMENT_NAME, _mlflow_client

    client = _mlflow_client(default_mlflow_uri(runs_dir))
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def mlflow_history(runs_dir: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from recbench.runs.tracking import _mlflow_client

    history = _mlflow_client(default_mlflow_uri(runs_dir)).get_metric_history(run_id, mlflow_key(key))
    return sorted((metric.step, metric.value) for metric in history)


def expected_series(run: RunRecord, stage: str = "train") -> dict[str, list[tuple[int, float]]]:
    """Per metric name, (epoch, value) as log.jsonl records them."""
    series = {f"{stage}/loss": [(entry["epoch"], entry["loss"]) for entry in run.log]}
    for name in run.log[0]["valid"]:
        series[f"valid/{name}"] = [(entry["epoch"], entry["valid"][name]) for entry in run.log]
    return series


def expected_final(run: RunRecord) -> dict[str, float]:
    """Final metrics as metrics.json records them."""
    metrics = run.metrics
    return {f"final/{split}/{name}": value for split in ("valid", "test") for name, value in metrics[split].items()}


# --- specs ---------------------------------------------------------------------------------------
def test_log_to_specs_are_parsed_made_absolute_and_deduplicated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    specs = parse_log_to(["tensorboard,mlflow", "TensorBoard:boards", "mlflow:http://localhost:5000", "mlflow"])
    assert specs == (
        TrackingSpec("tensorboard"),
        TrackingSpec("mlflow"),
        TrackingSpec("tensorboard", str(tmp_path / "boards")),
        TrackingSpec("mlflow", "http://localhost:5000"),
    )
    assert parse_log_to("mlflow:store") == (TrackingSpec("mlflow", (tmp_path / "store").as_uri()),)
    assert parse_log_to(None) == () and parse_log_to([]) == ()


def test_an_unknown_backend_is_a_one_line_error_before_anything_runs(toy_dataset, tmp_path: Path) -> None:
    with pytest.raises(
        RecbenchError, match=r"unknown tracking backend 'wandb' .*tensorboard\[:DIR\] or mlflow\[:URI\]"
    ):
        train(tmp_path / "runs", "wandb")
    result = CliRunner().invoke(
        app, ["train", "sasrec", "--dataset", "toy", "--runs-dir", str(tmp_path / "runs"), "--log-to", "wandb"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (
        "error: unknown tracking backend 'wandb' in --log-to; expected tensorboard[:DIR] or mlflow[:URI]"
    )
    compared = CliRunner().invoke(
        app, ["compare", "--datasets", "toy", "--runs-dir", str(tmp_path / "runs"), "--log-to", "wandb"]
    )
    assert compared.exit_code == 1 and "unknown tracking backend 'wandb'" in compared.output
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


@pytest.mark.parametrize(
    ("backend", "module", "extra"), [("mlflow", "mlflow", "mlflow"), ("tensorboard", "tensorboard", "tensorboard")]
)
def test_a_backend_that_is_not_installed_names_its_extra_before_training(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what the import system sees when the package is missing
    with pytest.raises(RecbenchError, match=rf"pip install 'recbench\[{extra}\]'"):
        train(tmp_path / "runs", backend)
    result = CliRunner().invoke(
        app, ["train", "sasrec", "--dataset", "toy", "--runs-dir", str(tmp_path / "runs"), "--log-to", backend]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: --log-to {backend} needs {'MLflow' if backend == 'mlflow' else 'TensorBoard'}, which is not "
        f"installed: pip install 'recbench[{extra}]'"
    ]
    assert not (tmp_path / "runs").exists()  # refused before any run directory was made


# --- what the stores hold --------------------------------------------------------------------------
def test_tensorboard_holds_the_runs_log_final_metrics_config_and_tags(toy_dataset, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = train(tmp_path, "tensorboard")
    directory = tmp_path / "tensorboard" / "toy" / "sasrec" / run.path.name  # the default location
    events = tensorboard_events(directory)
    for tag, expected in expected_series(run).items():
        logged = scalars(events, tag)
        assert [step for step, _ in logged] == [step for step, _ in expected], tag
        assert [value for _, value in logged] == pytest.approx([value for _, value in expected], rel=FLOAT32), tag
    for tag, value in expected_final(run).items():
        assert scalars(events, tag) == [(len(run.log), pytest.approx(value, rel=FLOAT32))], tag
    config = json.loads("\n".join(line[4:] for line in text(events, "config").splitlines()))
    assert config["config"] == run.config["config"] and config["seed"] == 3 and config["method"] == "sasrec"
    assert f"recbench.run_dir: {run.path.resolve()}" in text(events, "run")
    assert f"recbench.run_id: {run.path.name}" in text(events, "run")
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["hidden_size"].number_value == TINY["hidden_size"] and hparams["method"].string_value == "sasrec"


def test_mlflow_holds_the_runs_log_final_metrics_config_and_tags(toy_dataset, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    run = train(tmp_path, "mlflow")
    (tracked,) = mlflow_runs(tmp_path)  # one tracking run for the recbench run
    assert tracked.info.status == "FINISHED"
    tags = tracked.data.tags
    assert tags["recbench.run_dir"] == str(run.path.resolve()) and tags["recbench.run_id"] == run.path.name
    assert tags["mlflow.runName"] == f"toy/sasrec/{run.path.name}" and tags["recbench.stage"] == "train"
    params = tracked.data.params
    for key, value in run.config["config"].items():
        assert params[key] == str(value if isinstance(value, (str, int, float, bool)) else json.dumps(value)), key
    assert params["fingerprint"] == run.config["fingerprint"] and params["seed"] == "3"
    for key, expected in expected_series(run).items():
        assert mlflow_history(tmp_path, tracked.info.run_id, key) == expected, key  # every digit
    for key, value in expected_final(run).items():
        assert mlflow_history(tmp_path, tracked.info.run_id, key) == [(len(run.log), value)], key


def test_a_reused_run_is_not_logged_again_and_both_backends_log_one_run(toy_dataset, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    first = train(tmp_path, ["tensorboard", "mlflow"])
    board = tmp_path / "tensorboard" / "toy" / "sasrec" / first.path.name
    files = sorted(p.name for p in board.iterdir())
    again = train(tmp_path, "tensorboard,mlflow")
    assert again.path == first.path
    assert len(mlflow_runs(tmp_path)) == 1
    assert sorted(p.name for p in board.iterdir()) == files
    assert [p.name for p in (tmp_path / "tensorboard" / "toy" / "sasrec").iterdir()] == [first.path.name]


def test_a_resumed_run_continues_its_tracking_run(toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    with interrupted_at_epoch(2, monkeypatch), pytest.raises(KeyboardInterrupt):
        train(tmp_path, "mlflow,tensorboard")
    (interrupted,) = mlflow_runs(tmp_path)
    assert interrupted.info.status == "KILLED"
    run = train(tmp_path, "mlflow,tensorboard", resume=True)
    (tracked,) = mlflow_runs(tmp_path)
    assert tracked.info.run_id == interrupted.info.run_id and tracked.info.status == "FINISHED"
    for key, expected in expected_series(run).items():
        assert mlflow_history(tmp_path, tracked.info.run_id, key) == expected, key
    events = tensorboard_events(tmp_path / "tensorboard" / "toy" / "sasrec" / run.path.name)
    assert [step for step, _ in scalars(events, "train/loss")] == [entry["epoch"] for entry in run.log]


def test_pretraining_logs_its_loss_to_its_own_tracking_run(recbench_home: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from recbench.data.dataset import save_dataset
    from tests.conftest import make_cyclic_dataset

    for name, seed in (("src", 1), ("target", 2)):
        save_dataset(make_cyclic_dataset(name, items=20, seed=seed))
    small = {"item_size": 8, "semantic_hidden_size": 8, "inner_size": 8, "max_seq_length": 8, "epochs": 1}
    result = run_experiment(
        "idasr",
        "target",
        seed=1,
        overrides=[{**small, "pretrain_epochs": 2}],
        runs_dir=tmp_path,
        device="cpu",
        show_progress=False,
        pretrain_on=["src"],
        log_to="mlflow",
    )
    by_stage = {run.data.tags["recbench.stage"]: run for run in mlflow_runs(tmp_path)}
    assert sorted(by_stage) == ["pretrain", "train"]
    (pretrain_dir,) = [p.parent for p in (tmp_path / "_pretrain").rglob("status.json")]
    pretraining = RunRecord(pretrain_dir)
    tracked = by_stage["pretrain"]
    assert tracked.data.tags["recbench.run_dir"] == str(pretrain_dir.resolve())
    assert mlflow_history(tmp_path, tracked.info.run_id, "pretrain/loss") == [
        (e["epoch"], e["loss"]) for e in pretraining.log
    ]
    assert len(pretraining.log) == 2
    assert by_stage["train"].data.tags["recbench.run_dir"] == str(result.run.path.resolve())
    assert by_stage["train"].data.params["pretrained"] == pretrain_dir.name


def test_a_tracker_failing_mid_run_warns_once_and_the_run_finishes(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    calls = []

    def disk_full(self: MLflowSink, step: int, metrics: dict[str, float]) -> None:
        calls.append(step)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MLflowSink, "log_epoch", disk_full)
    with pytest.warns(TrackingWarning) as caught:
        run = train(tmp_path, "mlflow,tensorboard")
    tracking_warnings = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(tracking_warnings) == 1 and "No space left on device" in str(tracking_warnings[0].message)
    assert calls == [0]  # dropped after its first failure
    assert run.is_finished and len(run.log) == TINY["epochs"]  # the record is whole
    events = tensorboard_events(tmp_path / "tensorboard" / "toy" / "sasrec" / run.path.name)
    assert len(scalars(events, "train/loss")) == len(run.log)  # the other tracker carried on
    assert mlflow_runs(tmp_path)[0].info.status == "FAILED"


def test_a_tracker_that_cannot_open_is_a_warning_not_a_lost_run(
    toy_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")

    def unreachable(self: TensorBoardSink, root: str | None, run: Any) -> None:
        raise PermissionError(13, "Permission denied", root)

    monkeypatch.setattr(TensorBoardSink, "__init__", unreachable)
    with pytest.warns(TrackingWarning, match="cannot open a tracking run"):
        run = train(tmp_path, "tensorboard:/unwritable")
    assert run.is_finished


def test_compare_gives_every_cell_its_own_tracking_run_in_parallel_workers(recbench_home: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from recbench.compare import compare

    _, outcomes = compare(
        ["synthetic-c"],
        ["sasrec"],
        seeds=2,
        runs_dir=tmp_path,
        overrides=[{**TINY, "epochs": 2}],
        device="cpu",
        live=False,
        jobs=2,
        log_to="mlflow,tensorboard",
    )
    assert all(outcome.error is None for outcome in outcomes), [o.error for o in outcomes]
    tracked = {run.data.tags["recbench.run_dir"]: run for run in mlflow_runs(tmp_path)}
    assert sorted(tracked) == sorted(str(Path(o.run_dir).resolve()) for o in outcomes)
    for outcome in outcomes:
        run = RunRecord(outcome.run_dir)
        mine = tracked[str(run.path.resolve())]
        assert mine.info.status == "FINISHED" and mine.data.tags["recbench.seed"] == str(outcome.cell.seed)
        for key, value in expected_final(run).items():
            assert mlflow_history(tmp_path, mine.info.run_id, key) == [(len(run.log), value)], key
        events = tensorboard_events(tmp_path / "tensorboard" / "synthetic-c" / "sasrec" / run.path.name)
        logged = [value for _, value in scalars(events, "train/loss")]
        assert logged == pytest.approx([entry["loss"] for entry in run.log], rel=FLOAT32)
    assert np.isfinite([run.data.metrics[mlflow_key("final/test/ndcg@10")] for run in tracked.values()]).all()


def test_compare_leaves_out_a_store_it_cannot_reach_with_one_warning_for_the_grid(
    recbench_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    from recbench.compare import compare
    from recbench.runs import tracking

    def unreachable(client: Any) -> str:
        raise ConnectionError("Max retries exceeded with url: /api/2.0/mlflow/experiments/get-by-name")

    monkeypatch.setattr(tracking, "_experiment_id", unreachable)
    with pytest.warns(TrackingWarning) as caught:
        _, outcomes = compare(
            ["synthetic-c"],
            ["sasrec"],
            seeds=2,
            runs_dir=tmp_path,
            overrides=[TINY],
            device="cpu",
            live=False,
            log_to="mlflow:http://127.0.0.1:9",
        )
    assert all(outcome.error is None for outcome in outcomes), [o.error for o in outcomes]
    messages = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(messages) == 1 and "cannot reach the MLflow store" in messages[0]  # not once per cell

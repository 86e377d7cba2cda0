"""One writer per run: a second process on a run in use stops with the holder's name; a shared
pre-training run makes the second process wait and reuse it; compare's workers die with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recbench.files import LockedError, exclusive_lock
from recbench.runs.record import RunRecord
from tests.test_train import train_toy


def _hold_lock_in_subprocess(lock_file: Path, seconds: float = 30.0) -> subprocess.Popen:
    """Another process holding ``lock_file`` (as a training process holds its run) until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from recbench.files import exclusive_lock
        with exclusive_lock(Path({str(lock_file)!r}), "test"):
            print("locked", flush=True)
            time.sleep({seconds})
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_of_a_run_stops_naming_the_holder_and_changes_nothing(toy_dataset, tmp_path: Path) -> None:
    finished = train_toy(tmp_path / "runs")
    run_dir = finished.path
    (run_dir / "status.json").unlink()  # unfinished again: the next call would train it
    holder = _hold_lock_in_subprocess(run_dir / ".lock")
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    try:
        with pytest.raises(LockedError, match=rf"run {run_dir} is in use by process {holder.pid} on "):
            train_toy(tmp_path / "runs", restart=True)
    finally:
        holder.kill()
        holder.wait()
    after = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    assert after == before
    # the holder died (as with kill -9): its lock went with it, the run can be written again
    assert train_toy(tmp_path / "runs", restart=True).is_finished


def test_a_waiting_locker_gets_the_lock_once_the_holder_dies(tmp_path: Path) -> None:
    lock = tmp_path / "entry.lock"
    holder = _hold_lock_in_subprocess(lock, seconds=1.0)
    started = time.perf_counter()
    with exclusive_lock(lock, "cache entry", wait=True):
        waited = time.perf_counter() - started
    holder.wait()
    assert waited > 0.3  # it really waited for the holder


def test_the_lock_is_free_again_after_the_block(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with exclusive_lock(lock, "x"):
        pass
    with exclusive_lock(lock, "x"):
        pass


def test_pretraining_run_in_use_makes_the_second_process_wait_then_reuse_it(
    recbench_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recbench.data.dataset import save_dataset
    from recbench.registry import get_method, resolve_config
    from recbench.runs import experiment
    from tests.conftest import make_cyclic_dataset

    for name, seed in (("src", 1), ("tgt", 2)):
        save_dataset(make_cyclic_dataset(name, seed=seed))
    entry = get_method("unisrec")
    config = resolve_config(
        entry,
        {"hidden_size": 16, "inner_size": 16, "pretrain_epochs": 1, "max_seq_length": 10, "pretrain_batch_targets": 64},
    )
    waits: list[bool] = []
    original = RunRecord.lock

    def recording_lock(self, wait: bool = False):
        waits.append(wait)
        return original(self, wait)

    monkeypatch.setattr(RunRecord, "lock", recording_lock)
    monkeypatch.setattr("recbench.data.encode.item_embeddings", _random_text_embeddings)
    first = experiment.pretrain(entry, config, ["src"], 0, tmp_path / "runs", "cpu", False)
    assert waits == [True] and first.is_finished
    again = experiment.pretrain(entry, config, ["src"], 0, tmp_path / "runs", "cpu", False)
    assert again.path == first.path and waits == [True]  # finished: reused without taking the lock


def _random_text_embeddings(dataset, spec, **kwargs):
    """Random 8-d item text embeddings instead of a sentence encoder (fast, offline)."""
    import numpy as np

    table = np.random.default_rng(0).normal(size=(dataset.num_items + 1, 8)).astype(np.float32)
    table[0] = 0
    return table, True


def test_compare_workers_stop_when_their_parent_is_killed(tmp_path: Path) -> None:
    """A pool worker started with compare's initializer exits once its parent dies (kill -9)."""
    pid_file = tmp_path / "worker.pid"
    code = textwrap.dedent(f"""
        import os, time
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context
        from recbench.compare import stop_with_parent

        def work(path):
            with open(path, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(120)

        if __name__ == "__main__":
            with ProcessPoolExecutor(
                1, mp_context=get_context("spawn"), initializer=stop_with_parent, initargs=(os.getpid(), 0.2)
            ) as pool:
                pool.submit(work, {str(pid_file)!r}).result()
    """)
    script = tmp_path / "parent.py"
    script.write_text(code)
    parent = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(worker):
        assert time.monotonic() < deadline, "the worker outlived its parent"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False

"""Training under torchrun: two CPU processes (gloo) keep one model in step through DDP."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from recbench.data.dataset import save_dataset
from tests.conftest import make_cyclic_dataset

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from recbench.runs import distributed
    from recbench.data.dataset import load_dataset
    from recbench.method import DataSpec
    from recbench.registry import get_method, resolve_config
    from recbench.runs.record import RunRecord
    from recbench.runs.trainer import Trainer, seed_everything

    out = Path(sys.argv[1])
    device = distributed.setup("cpu")
    dataset = load_dataset("toy")
    entry = get_method("idasr")
    small = {"item_size": 8, "semantic_hidden_size": 8, "inner_size": 8, "max_seq_length": 8}
    config = resolve_config(entry, small, {"pretrain_epochs": 2, "pretrain_batch_targets": 40})
    seed_everything(0)
    text = torch.randn(dataset.num_items + 1, 12, generator=torch.Generator().manual_seed(0))
    method = entry.cls(config, DataSpec(dataset.num_items, config.max_seq_length, item_text_embeddings=text))
    torch.save(method.state_dict(), out / "initial.pt")
    record = RunRecord(out / "run")
    trainer = Trainer(method, dataset, config, record, seed=0, device=device, show_progress=False, pretrain=True)
    trainer.fit()
    rank, world = distributed.world()
    torch.save({"state": method.state_dict(), "world": world}, out / f"rank{rank}.pt")
    """
)


def test_two_processes_train_one_model_and_only_rank_zero_writes_the_run(recbench_home: Path, tmp_path: Path) -> None:
    save_dataset(make_cyclic_dataset("toy", users=80))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECBENCH_HOME": str(recbench_home)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path),
    ]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    initial = torch.load(tmp_path / "initial.pt", weights_only=True)
    for name, weight in ranks[0]["state"].items():  # each process saw other batches, yet the weights agree
        torch.testing.assert_close(ranks[1]["state"][name], weight)
    assert any(not torch.equal(initial[n], w) for n, w in ranks[0]["state"].items())
    run = tmp_path / "run"
    assert len((run / "log.jsonl").read_text().splitlines()) == 2 and (run / "best.pt").is_file()
    assert not list(run.glob(".*"))  # no half-written temporary files left by a second writer

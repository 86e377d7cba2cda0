"""Several training processes under ``torchrun``: DistributedDataParallel, gloo on CPU, nccl on GPU.

``torchrun --nproc_per_node K recbench train ...`` (or ``python -m recbench``) starts K copies of
the same command. Each builds the same model from the same seed, takes every K-th batch of an
epoch, and DistributedDataParallel averages the gradients, so an epoch sees every sample once in
K times fewer optimiser steps. Only the first process (rank 0) writes run files; the others read
them after a barrier.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

WriteMethod = TypeVar("WriteMethod", bound=Callable[..., Any])


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless started by torchrun with several processes."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_distributed() -> bool:
    return world()[1] > 1


def is_main() -> bool:
    """True in the process that writes files (rank 0, or the only process)."""
    return world()[0] == 0


def setup(device: str) -> str:
    """Join the process group when started with several processes; the device this process uses.

    CUDA processes use nccl and one GPU each (``cuda:LOCAL_RANK``); CPU processes use gloo.
    """
    if not is_distributed():
        return device
    import torch  # here, so that reading runs (which imports this module) never loads torch

    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return device


def barrier() -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if not is_distributed():
        return
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def main_process_only(write: WriteMethod) -> WriteMethod:
    """Decorate a method that writes files: only rank 0 runs it."""

    @functools.wraps(write)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        return write(*args, **kwargs) if is_main() else None

    return guarded  # type: ignore[return-value]

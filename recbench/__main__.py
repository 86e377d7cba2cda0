"""``python -m recbench``: the CLI, e.g. for ``torchrun --nproc_per_node 2 -m recbench train ...``."""

from recbench.cli import app

app()

"""A factorized first-order Markov chain: the next item is scored from the last item alone.

Rendle, Freudenthaler & Schmidt-Thieme, "Factorizing Personalized Markov Chains for Next-Basket
Recommendation", WWW 2010, without the user term (FMC): the transition score from item i to item
j is the dot product of i's context embedding and j's candidate embedding, here plus a learned
bias of j (its popularity). Training is full-softmax cross-entropy over all N items at every
position of the training sequences, as recbench's other ID-based methods; the padding id 0 is
never a candidate.

It is an example of the plugin contract: a typed config whose fields are documented, a
:class:`recbench.Method` registered by name, ``loss`` and ``score``. The name comes from
``@register("example-fmc")`` below, not from the entry-point key in ``pyproject.toml``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import StrictBool
from torch import nn

from recbench import Batch, DataSpec, Method, MethodConfig, StrictPositiveFloat, StrictPositiveInt, register


class FMCConfig(MethodConfig):
    """Hyper-parameters of the factorized Markov chain (the shared training keys come from MethodConfig)."""

    hidden_size: StrictPositiveInt = 64
    """Width of the context and candidate item embeddings."""
    item_bias: StrictBool = True
    """Add a learned per-item bias to every score (a popularity term); false: dot products alone."""
    initializer_range: StrictPositiveFloat = 0.02
    """Standard deviation of the normal initialisation of both embedding tables."""


@register("example-fmc")
class FMC(Method):
    """Factorized first-order Markov chain: next-item scores from the last item's embedding."""

    Config = FMCConfig

    def __init__(self, config: FMCConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        rows = spec.num_items + 1  # item ids 1..N, 0 is padding
        self.context = nn.Embedding(rows, config.hidden_size, padding_idx=0)
        self.candidate = nn.Embedding(rows, config.hidden_size, padding_idx=0)
        self.bias = nn.Parameter(torch.zeros(rows), requires_grad=config.item_bias)
        for table in (self.context, self.candidate):
            nn.init.normal_(table.weight, std=config.initializer_range)
            with torch.no_grad():
                table.weight[0].zero_()
        # column 0 (padding) is never a candidate: -inf in every row of scores
        self.register_buffer("padding_column", torch.arange(rows) == 0, persistent=False)

    def transition_scores(self, items: torch.Tensor) -> torch.Tensor:
        """(...,) item ids -> (..., N + 1) scores of every item following each of them."""
        scores = self.context(items) @ self.candidate.weight.T + self.bias
        return scores.masked_fill(self.padding_column, float("-inf"))

    def loss(self, batch: Batch) -> torch.Tensor:
        has_target = batch.targets > 0  # (B, L): positions followed by a next item
        logits = self.transition_scores(batch.items[has_target])  # (T, N + 1)
        return F.cross_entropy(logits, batch.targets[has_target])

    def score(self, batch: Batch) -> torch.Tensor:
        rows = torch.arange(batch.size, device=batch.items.device)
        last = batch.items[rows, batch.lengths - 1]  # (B,) the last real item of each history
        return self.transition_scores(last)  # (B, N + 1)

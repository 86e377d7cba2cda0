"""SASRec with ID embeddings and full-softmax cross-entropy, as behind the published tables.

Paper: Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.
Checked against: RecBole ``recbole/model/sequential_recommender/sasrec.py`` and
``recbole/model/layers.py`` (v1.0.1, v1.1.1; the model behind the UniSRec/VQ-Rec SASRec rows,
run as ``run_baseline.py -m SASRec --hidden_size=300``).

Faithful to RecBole: item + learned position embedding -> LayerNorm -> dropout -> post-LN
transformer blocks (separate q/k/v, GELU, no dropout inside the feed-forward), N(0, 0.02) init of
every Linear and Embedding (the padding row included), CE over all N + 1 embedding rows (the
padding row too), hidden 300, inner 256, 2 layers, 2 heads, dropout 0.5/0.5, max length 50.

Deviations: RecBole materialises every training prefix as its own sample; here one causal pass
over a user's training sequence predicts every next item at once, so prefixes of one
user share dropout masks within a step. Sequences longer than ``max_seq_length + 1`` are cut
into consecutive windows by the Trainer, so the first targets of a later window see fewer than
50 items (RecBole would show them the previous 50); this touches users with more than 51
training items only (3 of 8,442 in Scientific).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbench.layers import TransformerEncoder, causal_mask, init_recbole_weights
from recbench.method import Batch, DataSpec, Method, StrictPositiveInt, TransformerConfig
from recbench.registry import register


class SASRecConfig(TransformerConfig):
    """SASRec hyper-parameters; defaults = RecBole SASRec with the papers' hidden size 300."""

    hidden_size: StrictPositiveInt = 300
    """Width of item/position embeddings and transformer layers."""


@register("sasrec")
class SASRec(Method):
    """SASRec-ID: causal self-attention over item ID embeddings, full-softmax CE (RecBole)."""

    Config = SASRecConfig

    def __init__(self, config: SASRecConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.item_embedding = nn.Embedding(spec.num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(spec.max_seq_length, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = TransformerEncoder.from_config(config, config.hidden_size)
        self.apply(lambda module: init_recbole_weights(module, config.initializer_range))

    def encode(self, items: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) item ids -> (B, L, d) outputs; with ``last`` (B,) positions -> (B, d) there only."""
        positions = torch.arange(items.shape[1], device=items.device)
        hidden = self.embed_items(items) + self.position_embedding(positions)
        hidden = self.dropout(self.norm(hidden))
        return self.encoder(hidden, causal_mask(items), query_index=last)

    def item_table(self) -> torch.Tensor:
        """(N + 1, d): the vector of each item id that outputs are scored against and that
        :meth:`embed_items` looks up; here the ID table itself (a subclass may fuse item features in)."""
        return self.item_embedding.weight

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """(B, L) item ids -> (B, L, d) rows of :meth:`item_table` (padding id 0 gets no gradient)."""
        return self.item_embedding(items)

    def loss(self, batch: Batch) -> torch.Tensor:
        hidden = self.encode(batch.items)  # (B, L, d)
        has_target = batch.targets > 0
        logits = hidden[has_target] @ self.item_table().T  # (T, N + 1)
        return F.cross_entropy(logits, batch.targets[has_target])

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(batch.items, last=batch.lengths - 1), self.item_table()  # (B, d), (N + 1, d)

    def score(self, batch: Batch) -> torch.Tensor:
        hidden, items = self.query_and_items(batch)
        return hidden @ items.T

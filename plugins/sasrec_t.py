"""SASRec_T: SASRec whose items are their frozen text embeddings through a linear adapter, no item IDs.

Paper: the text-only SASRec row ("SASRec_T") of Hou, He, McAuley, Zhao, Wen, "Learning
Vector-Quantized Item Representation for Transferable Sequential Recommenders", WWW 2023, Table 2
(SASRec on frozen BERT item features). Its code was never published: RUCAIBox/VQ-Rec @2981845 ships
no baseline, and RUCAIBox/UniSRec @05aa5cb ships FDSA and S3-Rec only (``baselines/``,
``run_baseline.py``); no statement of how SASRec_T was built was found. What the authors wrote of
their text baselines (UniSRec issues #4 and #10, about ZESRec): the PLM is frozen and its item
vectors precomputed, so a text baseline reads the same input as UniSRec, and such a baseline is
"the ablation of UniSRec" with the MoE-enhanced adaptor replaced by "on[e ...]" (the stored copy of
that comment is cut there). SASRec_T here is that reading applied to SASRec: SASRec with its ID
table replaced by one linear layer over the text. Choices no source states are marked (*).

- Item representation, input and output side alike: ``Linear(text)`` (N(0, 0.02) weight, bias 0),
  one layer from the text width to ``hidden_size``: UniSRec's adaptor with one expert, no gate and
  no whitening shift, i.e. the plain linear map (*). The text table is a frozen buffer outside the
  state dict (it is data, not a weight). There is no item ID embedding anywhere: two items with the
  same text are the same item to the model.
- Sequence encoder: exactly SASRec's (``plugins/sasrec.py``, RecBole): adapted item + learned
  position embedding -> LayerNorm -> dropout -> post-LN transformer (hidden 300, inner 256, 2 layers,
  2 heads, dropout 0.5/0.5), the output at the last position.
- Loss and scores: SASRec's CE over all N + 1 rows of the adapted text table with SASRec's dot
  products, not UniSRec's cosine / 0.07 (*); the padding row (the adapter's bias) is a class, as
  SASRec's padding row is.
- Trained on the target only, from scratch, as the SASRec row it extends (*); no pre-training.

Deviations from RecBole's SASRec training are SASRec's (see ``plugins/sasrec.py``): one causal
pass per training window predicts every next item; windows longer than ``max_seq_length + 1`` are
cut by the Trainer. No adapter dropout (UniSRec's adaptor has 0.2 on the text; SASRec's item
embeddings have none before the LayerNorm) (*).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbench.layers import TransformerEncoder, causal_mask, init_recbole_weights
from recbench.method import Batch, DataSpec, Method, StrictPositiveInt, TextMethodConfig, TransformerConfig
from recbench.registry import register


class SASRecTConfig(TextMethodConfig, TransformerConfig):
    """SASRec_T hyper-parameters; defaults = SASRec's (RecBole, hidden 300 as the papers)."""

    hidden_size: StrictPositiveInt = 300
    """Width of the adapted item vectors, position embeddings and transformer layers."""


@register("sasrec-t")
class SASRecT(Method):
    """SASRec_T: SASRec over linearly adapted frozen item text embeddings, no item IDs, CE over all items."""

    Config = SASRecTConfig
    needs_text = True

    def __init__(self, config: SASRecTConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if spec.item_text_embeddings is None:
            raise ValueError(f"{type(self).__name__} needs DataSpec.item_text_embeddings (its items are their texts)")
        # Frozen and dataset-specific: a buffer outside the state dict (so the weights fit other catalogues).
        self.register_buffer("text", spec.item_text_embeddings.float(), persistent=False)
        d = config.hidden_size
        self.adapter = self.build_adapter(config, self.text.shape[1])
        self.position_embedding = nn.Embedding(spec.max_seq_length, d)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = TransformerEncoder.from_config(config, d)
        self.apply(lambda module: init_recbole_weights(module, config.initializer_range))

    def build_adapter(self, config: SASRecTConfig, text_size: int) -> nn.Module:
        """The module mapping (N + 1, text) embeddings to item vectors: one Linear (ZESRec overrides it)."""
        return nn.Linear(text_size, config.hidden_size)

    def item_table(self) -> torch.Tensor:
        """(N + 1, d) representation of every item: the adapted text (row 0: the adapter of a zero text)."""
        return self.adapter(self.text)

    def encode(self, table: torch.Tensor, items: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) item ids -> (B, L, d) outputs; with ``last`` (B,) positions -> (B, d) there only."""
        positions = torch.arange(items.shape[1], device=items.device)
        hidden = self.dropout(self.norm(table[items] + self.position_embedding(positions)))
        return self.encoder(hidden, causal_mask(items), query_index=last)

    def loss(self, batch: Batch) -> torch.Tensor:
        table = self.item_table()
        hidden = self.encode(table, batch.items)  # (B, L, d)
        has_target = batch.targets > 0
        return F.cross_entropy(hidden[has_target] @ table.T, batch.targets[has_target])

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        table = self.once_per_pass("item_table", self.item_table)
        return self.encode(table, batch.items, last=batch.lengths - 1), table  # (B, d), (N + 1, d)

    def score(self, batch: Batch) -> torch.Tensor:
        hidden, items = self.query_and_items(batch)
        return hidden @ items.T

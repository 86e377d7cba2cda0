"""FDSA: item-level and feature-level self-attention, the two last outputs concatenated.

Paper: Zhang, Zhao, Liu, Sheng, Xu, Wang, Liu, Zhou, "Feature-level Deeper Self-Attention Network
for Sequential Recommendation", IJCAI 2019.
Checked against: RecBole ``recbole/model/sequential_recommender/fdsa.py`` and
``recbole/properties/model/FDSA.yaml`` at v1.0.1 (80c58c0a) and 7b02be5e (v1.2.1 + 11 commits; the
model code is the same, formatting only), ``VanillaAttention`` and ``MLPLayers`` in
``recbole/model/layers.py``; and the FDSA baseline of the UniSRec/VQ-Rec tables, RUCAIBox/UniSRec
@05aa5cb ``baselines/fdsa.py`` (added in d7bdfbe), ``props/FDSA.yaml``, ``run_baseline.py``.

Faithful to UniSRec's baseline (RecBole's FDSA with the text as the one feature):
- Item stream: item ID embedding (N + 1 rows) + learned position embedding -> LayerNorm -> dropout
  -> a RecBole transformer (post-LN, separate q/k/v, GELU, causal mask).
- Feature stream: the item's frozen text embedding through the adapter of ``adapter_layers:
  [768, 300]`` (RecBole's ``MLPLayers``: dropout 0 -> Linear -> ReLU), + the same position
  embedding -> LayerNorm -> dropout -> a second transformer of the same shape.
- Output: the two outputs at the last item concatenated -> ``Linear(2 hidden, hidden)`` ->
  LayerNorm -> dropout, scored by dot products with every item ID embedding row (the text is an
  input only); CE over all N + 1 rows (the padding row is a class, as in RecBole).
- One LayerNorm module serves all three places (item input, feature input, output), as in both
  RecBole's and UniSRec's code; one dropout rate (``hidden_dropout_prob``) for all.
- Initialisation: N(0, 0.02) for every Linear and Embedding (the padding row included), biases 0,
  LayerNorm (1, 0).
- Defaults: RecBole's FDSA.yaml (2 layers, 2 heads, inner 256, dropout 0.5/0.5, GELU, eps 1e-12,
  CE) with UniSRec's props hidden size 300 (RecBole's yaml: 64).

RecBole's feature pooling: RecBole embeds each of ``selected_features`` and pools the fields of a
position with ``VanillaAttention`` (Linear -> ReLU -> Linear to one energy per field, softmax over
the fields, weighted sum). With one field the softmax is over a single energy, so its weight is
exactly 1 and the pooled vector is the field's embedding itself (the attention's parameters get no
gradient); UniSRec's baseline drops the layer. With the text as the one feature, so does this model.

Departure from the official baseline, on purpose: in UniSRec's ``baselines/fdsa.py`` the text table
is an ``nn.Embedding`` (``copy.deepcopy(dataset.plm_embedding)``) created before
``self.apply(self._init_weights)``, which re-draws every ``nn.Embedding`` weight N(0, 0.02); the
table is frozen (``requires_grad = False``), so that baseline's "text" feature is a fixed random
vector per item, not the BERT embedding (as read in the code; not run). Here the feature is the
item's real text embedding (a frozen buffer outside the state dict), which is what FDSA with text
features means; expect it to differ from the published FDSA numbers for that reason too.
``feature = "official_random"`` reproduces the official baseline instead: a frozen table 768 wide
(their BERT features' width) drawn N(0, ``initializer_range``) with the model's other weights (a
buffer in the state dict, so a saved model keeps it), in place of the text, for comparing with the
published row. Measured on Scientific (3 seeds, full ranking; published R@10 / N@10 0.0899 / 0.0580):
``official_random`` 0.0877 / 0.0590 (−2.4% / +1.7%), the item text (MiniLM) 0.0975 / 0.0623 (+8.4% /
+7.4%): the published row is the random-feature model.

Deviations: RecBole materialises every training prefix as its own sample; both streams are causal,
so one pass over a training window predicts every next item (same outputs, one dropout mask shared
by the prefixes of a window within a step). Only the CE loss is offered (the default of both yamls).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from recbench.layers import (
    UNISREC_FEATURE_WIDTH,
    TransformerEncoder,
    causal_mask,
    init_recbole_weights,
    use_official_random_features,
)
from recbench.method import Batch, DataSpec, Method, StrictPositiveInt, TextMethodConfig, TransformerConfig
from recbench.registry import register


class FDSAConfig(TextMethodConfig, TransformerConfig):
    """FDSA hyper-parameters; defaults = RecBole's FDSA.yaml with UniSRec's props hidden size 300."""

    hidden_size: StrictPositiveInt = 300
    """Width of item ID, position and adapted text embeddings and of both transformers (RecBole's yaml: 64)."""
    feature: Literal["text", "official_random"] = "text"
    """The feature stream's input: the item text embedding, or official_random, the fixed random
    vector per item that UniSRec's baselines/fdsa.py ends up with (its text table is re-initialised)."""


@register("fdsa")
class FDSA(Method):
    """FDSA: self-attention over item IDs and, apart, over item text features; last outputs concatenated."""

    Config = FDSAConfig
    needs_text = True

    def __init__(self, config: FDSAConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if spec.item_text_embeddings is None:
            raise ValueError("FDSA needs DataSpec.item_text_embeddings (the item feature)")
        # Frozen and dataset-specific: a buffer outside the state dict (and never re-initialised).
        self.register_buffer("text", spec.item_text_embeddings.float(), persistent=False)
        d = config.hidden_size
        self.item_embedding = nn.Embedding(spec.num_items + 1, d, padding_idx=0)
        self.position_embedding = nn.Embedding(spec.max_seq_length, d)
        official = config.feature == "official_random"
        self.adapter = nn.Linear(UNISREC_FEATURE_WIDTH if official else self.text.shape[1], d)
        self.item_encoder = TransformerEncoder.from_config(config, d)
        self.feature_encoder = TransformerEncoder.from_config(config, d)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)  # shared by both inputs and the output
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.concat = nn.Linear(2 * d, d)
        self.apply(lambda module: init_recbole_weights(module, config.initializer_range))
        if official:
            use_official_random_features(self, config.initializer_range)

    def feature_embedding(self, items: torch.Tensor) -> torch.Tensor:
        """(B, L) item ids -> (B, L, d) adapted text features (one field: the pooling is the identity)."""
        return F.relu(self.adapter(self.text[items]))

    def encode(self, items: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) item ids -> (B, L, d) sequence outputs, or (B, d) at the positions ``last`` (B,) only."""
        positions = self.position_embedding(torch.arange(items.shape[1], device=items.device))
        allowed = causal_mask(items)
        item_input = self.dropout(self.norm(self.item_embedding(items) + positions))
        feature_input = self.dropout(self.norm(self.feature_embedding(items) + positions))
        item_output = self.item_encoder(item_input, allowed, query_index=last)
        feature_output = self.feature_encoder(feature_input, allowed, query_index=last)
        return self.dropout(self.norm(self.concat(torch.cat([item_output, feature_output], dim=-1))))

    def loss(self, batch: Batch) -> torch.Tensor:
        has_target = batch.targets > 0
        outputs = self.encode(batch.items)[has_target]  # (T, d)
        return F.cross_entropy(outputs @ self.item_embedding.weight.T, batch.targets[has_target])

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(batch.items, last=batch.lengths - 1), self.item_embedding.weight  # (B, d), (N + 1, d)

    def score(self, batch: Batch) -> torch.Tensor:
        outputs, items = self.query_and_items(batch)
        return outputs @ items.T

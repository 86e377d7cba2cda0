"""GRU4RecF (GRU4Rec+): GRU4Rec with a parallel GRU over item features, as RecBole implements it.

Paper: Hidasi, Quadrana, Karatzoglou, Tikk, "Parallel Recurrent Neural Network Architectures for
Feature-rich Session-based Recommendations", RecSys 2016.
Checked against: RecBole ``recbole/model/sequential_recommender/gru4recf.py``,
``recbole/properties/model/GRU4RecF.yaml``, ``recbole/model/init.py`` and ``FeatureSeqEmbLayer`` in
``recbole/model/layers.py`` at v1.0.1 (80c58c0a), v1.1.1 (9518991a) and 7b02be5e (v1.2.1 + 11
commits); the model code is the same in all three (formatting only).

Faithful to RecBole (its parallel architecture: two GRUs, outputs concatenated):
- item GRU: item embedding (N + 1 rows, row 0 = padding) -> dropout 0.3 -> ``nn.GRU`` without
  biases; feature GRU: the item's feature embedding (no dropout) -> its own ``nn.GRU`` without
  biases, same width and depth; the two states at each position are concatenated and mapped by
  ``nn.Linear(2 hidden, embedding)``; the output at each sequence's last item is scored by dot
  products with every item ID embedding row (features are inputs only, never candidates' scores).
- Loss: CE over all N + 1 ID embedding rows (the padding row is a class, as in RecBole).
- Initialisation (``xavier_normal_initialization``): xavier_normal_ for every embedding and
  ``nn.Linear`` weight (the padding row included), Linear biases 0; both GRUs keep PyTorch's
  uniform(+-1/sqrt(hidden)).
- Defaults: hidden 128, 1 layer, dropout 0.3 (RecBole's yaml); embedding 300, the width
  UniSRec's authors give GRU4Rec (RecBole's yaml says 64).

RecBole's feature fields -> the item text embedding. RecBole embeds each of ``selected_features``
(default ``['class']``, a token-sequence field: sum of its category embeddings) into an
``embedding_size`` vector and concatenates the fields, so the feature GRU reads
``embedding_size * num_feature_field`` inputs. Here the one feature field is the item's text
embedding (``DataSpec.item_text_embeddings``, frozen, from ``text_encoder``; the papers' text
baselines use BERT CLS), so the feature GRU reads ``embedding_size`` inputs. A dense vector has no
faithful RecBole embedding: a float-sequence field that is not discretised gets the same index
for every component in RecBole 1.1.1, so it would embed as (sum of components) x one learned
vector, and v1.0.1's feature layer has no float-sequence fields. The text is therefore mapped as
UniSRec's authors map text for their text-feature baselines (FDSA, S3-Rec: ``adapter_layers:
[768, 300]``, RecBole's ``MLPLayers`` = Linear + ReLU): ``ReLU(Linear(text))``, initialised like
every Linear of GRU4RecF (xavier_normal_, bias 0). The text table itself is never initialised or
trained.

Deviations: RecBole materialises every training prefix as its own sample; both GRUs are causal, so
here one pass over a training window predicts every next item at once (same outputs, one dropout
mask shared by the prefixes of a window within a step). Windows longer than ``max_seq_length + 1``
are cut by the Trainer as for every method. Only the CE loss is offered (RecBole's default).

Batches: windows go into random batches by default (``bucket_by_length = False``), as RecBole
shuffles its samples and as recbench's GRU4Rec does, so that GRU4Rec+ and GRU4Rec differ only in
the feature GRU. Only the real items of a batch are embedded and stepped through the two GRUs;
an epoch still takes about 1.6x as long as with length buckets (docs/reproduction.md, "Speed").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import StrictBool
from torch import nn

from recbench.method import Batch, DataSpec, DropoutProbability, Method, StrictPositiveInt, TextMethodConfig
from recbench.registry import register
from recbench_plugins.gru4rec import grus_over_real_items


class GRU4RecFConfig(TextMethodConfig):
    """GRU4RecF hyper-parameters; defaults = RecBole's GRU4RecF.yaml with UniSRec's embedding size 300."""

    embedding_size: StrictPositiveInt = 300
    """Width of item ID embeddings, of the mapped text feature and of the sequence output (RecBole's yaml: 64)."""
    hidden_size: StrictPositiveInt = 128
    """Width of the hidden state of each GRU."""
    num_layers: StrictPositiveInt = 1
    """Stacked layers of each GRU."""
    dropout_prob: DropoutProbability = 0.3
    """Dropout on the input item ID embeddings (the feature input has none, as RecBole)."""
    bucket_by_length: StrictBool = False
    """Training windows in random batches, as RecBole's shuffled samples and as GRU4Rec (see there)."""


def xavier_normal_initialization(module: nn.Module) -> None:
    """RecBole's ``xavier_normal_initialization``: Embedding and Linear weights xavier_normal_, biases 0."""
    if isinstance(module, (nn.Embedding, nn.Linear)):
        nn.init.xavier_normal_(module.weight)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


@register("gru4recf")
class GRU4RecF(Method):
    """GRU4RecF: parallel GRUs over item IDs and item text, outputs concatenated (RecBole)."""

    Config = GRU4RecFConfig
    needs_text = True

    def __init__(self, config: GRU4RecFConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if spec.item_text_embeddings is None:
            raise ValueError("GRU4RecF needs DataSpec.item_text_embeddings (the item feature)")
        # Frozen and dataset-specific: a buffer outside the state dict.
        self.register_buffer("text", spec.item_text_embeddings.float(), persistent=False)
        width, hidden = config.embedding_size, config.hidden_size
        self.item_embedding = nn.Embedding(spec.num_items + 1, width, padding_idx=0)
        self.feature_adapter = nn.Linear(self.text.shape[1], width)
        self.dropout = nn.Dropout(config.dropout_prob)
        self.item_gru = nn.GRU(width, hidden, num_layers=config.num_layers, bias=False, batch_first=True)
        self.feature_gru = nn.GRU(width, hidden, num_layers=config.num_layers, bias=False, batch_first=True)
        self.dense = nn.Linear(2 * hidden, width)
        self.apply(xavier_normal_initialization)

    def feature_embedding(self, items: torch.Tensor) -> torch.Tensor:
        """Item ids -> mapped text features, one more (last) dimension of width ``embedding_size``."""
        return F.relu(self.feature_adapter(self.text[items]))

    def id_embedding(self, items: torch.Tensor) -> torch.Tensor:
        """Item ids -> their ID embeddings after dropout (the item GRU's inputs)."""
        return self.dropout(self.item_embedding(items))

    def encode(self, items: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) item ids -> (B, L, embedding) outputs; the output at t has read items 0..t only.

        With ``lengths``, padding is neither embedded nor stepped through (``grus_over_real_items``).
        """
        item_states, feature_states = grus_over_real_items(
            [(self.item_gru, self.id_embedding), (self.feature_gru, self.feature_embedding)], items, lengths
        )
        return self.dense(torch.cat([item_states, feature_states], dim=-1))

    def loss(self, batch: Batch) -> torch.Tensor:
        has_target = batch.targets > 0
        outputs = self.encode(batch.items, batch.lengths)[has_target]  # (T, embedding)
        return F.cross_entropy(outputs @ self.item_embedding.weight.T, batch.targets[has_target])

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.last_hidden(self.encode(batch.items, batch.lengths), batch.lengths)  # (B, embedding)
        return outputs, self.item_embedding.weight

    def score(self, batch: Batch) -> torch.Tensor:
        outputs, items = self.query_and_items(batch)
        return outputs @ items.T

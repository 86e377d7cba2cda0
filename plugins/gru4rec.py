"""GRU4Rec with ID embeddings and full-softmax cross-entropy, as RecBole implements it.

Papers: Hidasi, Karatzoglou, Baltrunas, Tikk, "Session-based Recommendations with Recurrent Neural
Networks", ICLR 2016; Tan, Xu, Liu, "Improved Recurrent Neural Networks for Session-based
Recommendations", DLRS 2016 (the reference RecBole cites).
Checked against: RecBole ``recbole/model/sequential_recommender/gru4rec.py`` and
``recbole/properties/model/GRU4Rec.yaml`` at v1.0.1 (80c58c0a), v1.1.1 (9518991a) and 7b02be5e
(v1.2.1 + 11 commits); the model code is the same in all three (formatting only). UniSRec's authors
run this model for their GRU4Rec rows as ``run_baseline.py -m GRU4Rec --embedding_size=300``, which
leaves ``hidden_size`` at RecBole's 128.

Faithful to RecBole:
- item embedding (N + 1 rows, row 0 = padding) -> dropout 0.3 -> ``nn.GRU`` without biases
  (``num_layers`` 1, hidden 128, no dropout between layers) -> ``nn.Linear(hidden, embedding)``;
  the output at each sequence's last item is scored by dot products with every embedding row.
- Loss: CE over all N + 1 rows (the padding row is a class, as in RecBole, whose ``n_items``
  counts the padding). Only RecBole's CE loss is offered (its default; BPR is not).
- Initialisation (RecBole's ``_init_weights``): xavier_normal_ for the item embedding (the padding
  row included: it is random, gets no gradient as an input and trains as a CE class);
  xavier_uniform_ for ``weight_ih_l0`` and ``weight_hh_l0`` only, so GRU layers above the first
  keep PyTorch's uniform(+-1/sqrt(hidden)); the output ``nn.Linear`` keeps PyTorch's default.
- Defaults: embedding 300 (UniSRec's run; RecBole's yaml says 64), hidden 128, 1 layer, dropout 0.3.

Deviations: RecBole materialises every training prefix as its own sample; the GRU is causal, so
here one pass over a training window predicts every next item at once, with the same outputs but
one embedding-dropout mask shared by the prefixes of a window within a step. Sequences longer
than ``max_seq_length + 1`` are cut into consecutive windows by the Trainer, so the first targets
of a later window see fewer than 50 items (RecBole would show them the previous 50).

Batches: windows go into random batches by default (``bucket_by_length = False``, unlike the
shared default), because how the batches are composed moves GRU4Rec's result. On Scientific,
batches of one window length gave R@10 0.0625 (3 seeds), random batches 0.0586 (3 seeds), and
RecBole 1.2.1's own GRU4Rec on the same files 0.0578 (3 seeds; docs/reproduction.md, "Against
RecBole 1.2.1").
In a random batch most positions are padding. Only the real items are embedded, dropped out and
stepped through the GRU (a packed sequence). Random batches still cost about 1.2x the time of
length buckets, because the GRU runs as many steps as the batch's longest window. Dropout masks are drawn for the
real items only, so the masks differ from a pass over the padded batch; the distribution does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from pydantic import StrictBool
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from recbench.method import Batch, DataSpec, DropoutProbability, Method, MethodConfig, StrictPositiveInt
from recbench.registry import register


class GRU4RecConfig(MethodConfig):
    """GRU4Rec hyper-parameters; defaults = RecBole's GRU4Rec.yaml with UniSRec's embedding size 300."""

    embedding_size: StrictPositiveInt = 300
    """Width of the item embeddings and of the sequence output (UniSRec's runs: 300; RecBole's yaml: 64)."""
    hidden_size: StrictPositiveInt = 128
    """Width of the GRU hidden state."""
    num_layers: StrictPositiveInt = 1
    """Stacked GRU layers."""
    dropout_prob: DropoutProbability = 0.3
    """Dropout on the input item embeddings."""
    bucket_by_length: StrictBool = False
    """Training windows in random batches, as RecBole's shuffled samples (the shared default, True,
    batches windows of one length: GRU4Rec then trains to a different, higher optimum; see Deviations)."""


def init_gru4rec_weights(embedding: nn.Embedding, gru: nn.GRU) -> None:
    """RecBole's GRU4Rec ``_init_weights``: xavier_normal_ embedding, xavier_uniform_ first GRU layer."""
    nn.init.xavier_normal_(embedding.weight)
    nn.init.xavier_uniform_(gru.weight_hh_l0)
    nn.init.xavier_uniform_(gru.weight_ih_l0)


def grus_over_real_items(
    grus: Sequence[tuple[nn.GRU, Callable[[torch.Tensor], torch.Tensor]]],
    items: torch.Tensor,
    lengths: torch.Tensor | None,
) -> list[torch.Tensor]:
    """(B, L) item ids -> for each ``(gru, embed)``, the (B, L, hidden) states of ``gru`` over ``embed(items)``.

    The state at t has read items 0..t. With ``lengths`` (real items per row, right-padded after
    them) of mixed values, only the real items are embedded and stepped through each GRU, as one
    packed sequence shared by all of them, and padding positions get zero states: in a random batch
    most positions are padding (the steps stay as many as the longest row's). ``embed`` maps ids of
    any shape to inputs with one more, last, dimension.
    """
    if lengths is None or bool((lengths == items.shape[1]).all()):
        return [gru(embed(items))[0] for gru, embed in grus]
    ids = pack_padded_sequence(items, lengths.cpu(), batch_first=True, enforce_sorted=False)
    width = items.shape[1]
    states = [gru(ids._replace(data=embed(ids.data)))[0] for gru, embed in grus]
    return [pad_packed_sequence(packed, batch_first=True, total_length=width)[0] for packed in states]


@register("gru4rec")
class GRU4Rec(Method):
    """GRU4Rec: a GRU over item ID embeddings, full-softmax CE (RecBole)."""

    Config = GRU4RecConfig

    def __init__(self, config: GRU4RecConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.item_embedding = nn.Embedding(spec.num_items + 1, config.embedding_size, padding_idx=0)
        self.dropout = nn.Dropout(config.dropout_prob)
        self.gru = nn.GRU(
            input_size=config.embedding_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            bias=False,
            batch_first=True,
        )
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        init_gru4rec_weights(self.item_embedding, self.gru)

    def embed_inputs(self, items: torch.Tensor) -> torch.Tensor:
        """Item ids -> their embeddings after dropout (the GRU's inputs)."""
        return self.dropout(self.item_embedding(items))

    def encode(self, items: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) item ids -> (B, L, hidden) GRU states; the state at t has read items 0..t only.

        With ``lengths``, padding is neither embedded nor stepped through (:func:`grus_over_real_items`).
        """
        return grus_over_real_items([(self.gru, self.embed_inputs)], items, lengths)[0]

    def loss(self, batch: Batch) -> torch.Tensor:
        has_target = batch.targets > 0
        outputs = self.dense(self.encode(batch.items, batch.lengths)[has_target])  # (T, embedding)
        return F.cross_entropy(outputs @ self.item_embedding.weight.T, batch.targets[has_target])

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.dense(self.last_hidden(self.encode(batch.items, batch.lengths), batch.lengths))  # (B, embedding)
        return outputs, self.item_embedding.weight

    def score(self, batch: Batch) -> torch.Tensor:
        outputs, items = self.query_and_items(batch)
        return outputs @ items.T

"""IDA-SR: ID-agnostic sequential recommendation from frozen item-text embeddings.

Paper: Mu, Hou, Zhao, Li, Ding, "ID-Agnostic User Behavior Pre-training for Sequential
Recommendation", CCIR 2022 (arXiv 2206.02323), as described by the reproduction report that
also proposes LSH-SR. No official code exists; nothing to check against.

- Item representation: the frozen text embedding m of each item through the semantic
  transformation m~ = sigmoid(sigmoid(m W1 + b1) W2 + b2) (W1: text -> 512, W2: 512 -> 256).
- Sequence encoder: item representation + learned position embedding -> LayerNorm -> dropout ->
  2 RecBole-style self-attention blocks (2 heads, inner 512, dropout 0.5); scores F M~^T over all
  items; cross-entropy over all items.
- Pre-training on source domains: next-item prediction (weight 1) + masked-item prediction
  (BERT4Rec-style, 10% of positions replaced by the [MASK] input, bidirectional attention,
  weight 0.1) + permuted-item prediction (10% of positions swap items among themselves, then
  next-item prediction on the permuted sequence, weight 0.1). ``tasks`` switches tasks off.
- Fine-tuning variants: ``idasr`` (text only, M~) and ``idasr-id`` (text + ID: a learnable item
  ID embedding M_I added to M~, created only for the target domain).

Choices the report leaves open, stated here: sigma is the logistic sigmoid; the transformer
width equals the item representation (256) so that F M~^T is defined, and the report's "hidden
512" is the feed-forward width; the ID embedding of ``idasr-id`` starts at zero (N(0, 0.02) for
every other weight, as RecBole) so fine-tuning starts from the text-only model; the semantic
transformation uses Glorot init (with RecBole's N(0, 0.02) its two sigmoids start flat and the
item representations barely separate).

Parameter layout (``mask_token``, ``extra_position``). The report's Table 3 ("model parameter
distribution", Instruments) counts IDA-SR's parameters by layer. The arithmetic, at the report's
sizes (BERT-base text 768, item size 256, semantic hidden 512, 2 blocks, inner 512):

- frozen item text: 7,653,888 = 768 x 9,966 rows. The report's Instruments has 9,964 items
  (its Table 1), so the table has 9,964 + 2 rows: the padding row and a [MASK] row. The [MASK]
  is a row of the frozen text table, as in RecBole's BERT4Rec (item table of n_items + 1 rows).
- semantic transformation: 525,056 = (768 x 512 + 512) + (512 x 256 + 256) = 393,728 + 131,328.
- transformer: 1,054,208 = 2 x 527,104; per block attention 4 x (256 x 256 + 256) = 263,168,
  its LayerNorm 512, feed-forward (256 x 512 + 512) + (512 x 256 + 256) = 262,912, its LayerNorm 512.
- positions: 13,056 = 51 x 256, i.e. max_seq_length + 1 = 51 rows, not 50.
- other: 512 = one LayerNorm over 256 (the one on the embeddings). So there is no learned mask
  vector (it would add 256) and no ID table (Table 3 is the text-only model).
- total 9,246,720; 7,653,888 / 9,246,720 = 82.77% frozen, as printed.

The defaults follow that layout (tests/test_idasr.py rebuilds the model at these sizes with 9,964
items and checks every row of Table 3):

- ``mask_token = "text_row"``: the [MASK] input is the item representation of one extra frozen
  text row, passed through the semantic transformation like any item. The report does not say
  what that row holds; recbench uses a zero row (the text encoder is not at hand when the model is
  built, so encoding the string "[MASK]" would need another cache entry). The row is never a
  candidate: scores keep N + 1 columns. Because row 0 of the text table (padding) is zero too, the
  [MASK] input equals the padding row's representation; padding is never attended to, so the two
  never meet. ``mask_token = "learned"`` is recbench's earlier layout: a learned 256-d mask vector.
- ``extra_position = true``: the position table has max_seq_length + 1 rows. The report does not
  say what the 51st is for (in BERT4Rec it is the [MASK] appended after the history at
  prediction). Here masked-item prediction uses it: it encodes the whole pre-training window, the
  max_seq_length input items plus their last target (max_seq_length + 1 items), where
  ``extra_position = false`` (the earlier layout) cuts the last target off. Next-item prediction,
  permuted-item prediction and scoring read max_seq_length items and never use the last row.

Changing these defaults changed the identity of IDA-SR and LSH-SR runs made before them; set
``mask_token = "learned"``, ``extra_position = false`` to rebuild the earlier model.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, StrictBool
from torch import nn

from recbench.layers import TransformerEncoder, bidirectional_mask, causal_mask, init_recbole_weights
from recbench.method import (
    Batch,
    DataSpec,
    Method,
    Probability,
    StrictNonNegativeFloat,
    StrictPositiveInt,
    TransferConfig,
    TransformerConfig,
)
from recbench.registry import register

PRETRAIN_TASKS = ("next", "mask", "permute")
PretrainTask = Literal["next", "mask", "permute"]  # the names of PRETRAIN_TASKS


class IDASRConfig(TransferConfig, TransformerConfig):
    """IDA-SR hyper-parameters; defaults = the reproduction report's settings.

    Pre-training epochs, learning rate and batch size: no official value. The report (section 4.3)
    gives lr 0.001 (= the shared default) and a batch of 2048 "for training and evaluation" without
    naming pre-training, and no pre-training epochs; so all three keep the shared ``TransferConfig``
    defaults (UniSRec's official 300 / 1e-3 / 8192). LSH-SR inherits them.
    """

    width_key: ClassVar[str] = "item_size"

    item_size: StrictPositiveInt = 256
    """Width of the item representation and of the transformer."""
    semantic_hidden_size: StrictPositiveInt = 512
    """Intermediate width of the semantic transformation."""
    inner_size: StrictPositiveInt = 512
    """Feed-forward width inside each transformer block (the report's "hidden 512")."""
    use_id: StrictBool = False
    """Add a learnable item ID embedding to the text representation (the t+ID variant)."""
    tasks: Annotated[list[PretrainTask], Field(min_length=1)] = list(PRETRAIN_TASKS)
    """Pre-training tasks: any of next, mask, permute."""
    task_weights: dict[PretrainTask, StrictNonNegativeFloat] = {"next": 1.0, "mask": 0.1, "permute": 0.1}
    """Weight of each pre-training task's loss."""
    mask_ratio: Probability = 0.1
    """Fraction of positions masked in masked-item prediction."""
    permute_ratio: Probability = 0.1
    """Fraction of positions whose items are permuted in permuted-item prediction."""
    mask_token: Literal["text_row", "learned"] = "text_row"
    """The [MASK] input of masked-item prediction: text_row (the report's layout: an extra zero row of
    the frozen item-text table, through the item representation like any item) or learned (a learned
    vector in the item space)."""
    extra_position: StrictBool = True
    """max_seq_length + 1 position rows (the report's layout): masked-item prediction encodes the input
    window plus its last target; false: max_seq_length rows, the last target is cut off."""


class SemanticTransformation(nn.Module):
    """m~ = sigmoid(sigmoid(m W1 + b1) W2 + b2): frozen text embedding -> item representation."""

    def __init__(self, text_size: int, hidden_size: int, item_size: int) -> None:
        super().__init__()
        self.first = nn.Linear(text_size, hidden_size)
        self.second = nn.Linear(hidden_size, item_size)

    def reset_parameters(self) -> None:
        """Glorot init: with N(0, 0.02) the two sigmoids start saturated-flat and barely learn."""
        for layer in (self.first, self.second):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.second(torch.sigmoid(self.first(text))))


@register("idasr", variants={"idasr-id": {"use_id": True}})
class IDASR(Method):
    """IDA-SR: text-only item representations through a semantic transformation, self-attention encoder."""

    Config = IDASRConfig
    needs_text = True
    supports_pretraining = True
    mask_row_has_id: ClassVar[bool] = False
    """True if the item representation reads an ID row too, so the [MASK] text row needs one (LSH-SR)."""

    def __init__(self, config: IDASRConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        unknown = set(config.tasks) - set(PRETRAIN_TASKS)
        if unknown:
            raise ValueError(f"unknown IDA-SR pre-training tasks {sorted(unknown)}; choose from {PRETRAIN_TASKS}")
        text = spec.item_text_embeddings.float()
        if config.mask_token == "text_row":  # row N + 1: the [MASK], a zero row (see the module docstring)
            text = torch.cat([text, text.new_zeros(1, text.shape[1])])
        # Frozen and dataset-specific: a buffer outside the state dict, so weights transfer across domains.
        self.register_buffer("text", text, persistent=False)
        self.item_representation = self.build_item_representation(config, text.shape[1])
        id_rows = text.shape[0] if self.mask_row_has_id else spec.num_items + 1
        self.id_embedding = nn.Embedding(id_rows, config.item_size, padding_idx=0) if config.use_id else None
        positions = spec.max_seq_length + 1 if config.extra_position else spec.max_seq_length
        self.position_embedding = nn.Embedding(positions, config.item_size)
        learned = config.mask_token == "learned"
        self.mask_vector = nn.Parameter(torch.zeros(config.item_size)) if learned else None
        self.norm = nn.LayerNorm(config.item_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = TransformerEncoder.from_config(config, config.item_size)
        self.apply(lambda module: init_recbole_weights(module, config.initializer_range))
        self.item_representation.reset_parameters()
        if self.mask_vector is not None:
            nn.init.normal_(self.mask_vector, std=config.initializer_range)
        if self.id_embedding is not None:
            nn.init.zeros_(self.id_embedding.weight)

    @classmethod
    def pretraining_config(cls, config: IDASRConfig) -> IDASRConfig:
        """The ID embedding of the t+ID variant exists only at fine-tuning: both variants share pre-training."""
        return super().pretraining_config(config.model_copy(update={"use_id": False}))

    def build_item_representation(self, config: IDASRConfig, text_size: int) -> nn.Module:
        """The module mapping (N + 1, text) embeddings to (N + 1, item_size); LSH-SR overrides it."""
        return SemanticTransformation(text_size, config.semantic_hidden_size, config.item_size)

    def text_rows(self) -> torch.Tensor:
        """(R, d): every row of the frozen text table through the item representation; R = N + 1, plus
        the [MASK] row N + 1 when ``mask_token = "text_row"``."""
        return self.item_representation(self.text)

    def item_table(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(N + 1, d) representation of every item (row 0 = padding), from ``text_rows()`` if given."""
        table = (self.text_rows() if rows is None else rows)[: self.spec.num_items + 1]
        return table + self.id_embedding.weight if self.id_embedding is not None else table

    def mask_input(self, rows: torch.Tensor) -> torch.Tensor:
        """(d,) [MASK] input: the [MASK] text row's representation in ``rows``, or the learned vector."""
        return rows[self.spec.num_items + 1] if self.mask_vector is None else self.mask_vector

    def encode(
        self, inputs: torch.Tensor, items: torch.Tensor, allowed: torch.Tensor, last: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L, d) input vectors of the items (B, L) -> transformer outputs."""
        positions = torch.arange(items.shape[1], device=items.device)
        hidden = self.dropout(self.norm(inputs + self.position_embedding(positions)))
        return self.encoder(hidden, allowed, query_index=last)

    def next_item_loss(self, items: torch.Tensor, targets: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        hidden = self.encode(table[items], items, causal_mask(items))  # (B, L, d)
        has_target = targets > 0
        return F.cross_entropy(hidden[has_target] @ table.T, targets[has_target])

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.next_item_loss(batch.items, batch.targets, self.item_table())

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        table = self.once_per_pass("item_table", self.item_table)
        hidden = self.encode(table[batch.items], batch.items, causal_mask(batch.items), last=batch.lengths - 1)
        return hidden, table

    def score(self, batch: Batch) -> torch.Tensor:
        hidden, items = self.query_and_items(batch)
        return hidden @ items.T

    # --- pre-training on the source domains ------------------------------------------------
    def pretrain_loss(self, batch: Batch) -> torch.Tensor:
        """Weighted sum of the enabled pre-training tasks on one batch of source sequences."""
        rows = self.text_rows()
        table = self.item_table(rows)
        sequences = full_sequences(batch)  # (B, L + 1): the window plus its last target
        losses = {
            "next": lambda: self.next_item_loss(batch.items, batch.targets, table),
            "mask": lambda: self.masked_item_loss(sequences, table, self.mask_input(rows)),
            "permute": lambda: self.next_item_loss(
                *shift(permute_positions(sequences, self.config.permute_ratio)), table
            ),
        }
        return sum(self.config.task_weights.get(task, 1.0) * losses[task]() for task in self.config.tasks)

    def masked_item_loss(self, sequences: torch.Tensor, table: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked-item prediction on (B, L + 1) sequences; ``mask`` (d,) is the [MASK] input."""
        if not self.config.extra_position:  # no position for the last target: cut it off
            sequences = sequences[:, : self.spec.max_seq_length]
        masked = choose_positions(sequences, self.config.mask_ratio)  # (B, L') bool
        inputs = torch.where(masked[..., None], mask.expand_as(table[sequences]), table[sequences])
        if not masked.any():  # possible on a tiny batch: no signal, but keep the graph connected
            return table.sum() * 0.0
        hidden = self.encode(inputs, sequences, bidirectional_mask(sequences))
        return F.cross_entropy(hidden[masked] @ table.T, sequences[masked])


def full_sequences(batch: Batch) -> torch.Tensor:
    """(B, L) inputs + next-item targets -> (B, L + 1) item sequences, right-padded with 0."""
    rows = torch.arange(batch.size, device=batch.items.device)
    sequences = F.pad(batch.items, (0, 1))
    sequences[rows, batch.lengths] = batch.targets[rows, batch.lengths - 1]
    return sequences


def shift(sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L + 1) sequences -> (inputs, next-item targets), both (B, L), 0 where there is none."""
    inputs, targets = sequences[:, :-1], sequences[:, 1:].clone()
    targets[inputs == 0] = 0
    return inputs, targets


def choose_positions(sequences: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, L) bool: each non-padding position independently with probability ``ratio``."""
    return (torch.rand(sequences.shape, device=sequences.device) < ratio) & (sequences > 0)


def permute_positions(sequences: torch.Tensor, ratio: float) -> torch.Tensor:
    """Shuffle the items at a random ``ratio`` of each sequence's positions among those positions."""
    chosen = choose_positions(sequences, ratio)
    length = sequences.shape[1]
    position = torch.arange(length, device=sequences.device).expand_as(sequences)
    ascending = torch.where(chosen, position, position + length).argsort(dim=1)  # chosen slots first, in order
    shuffled = torch.rand(sequences.shape, device=sequences.device).masked_fill(~chosen, 2.0).argsort(dim=1)
    first = position < chosen.sum(dim=1, keepdim=True)  # the first count(row) columns are chosen slots
    source = torch.where(first, shuffled, ascending)  # chosen slots read a shuffled slot; others themselves
    return torch.empty_like(sequences).scatter_(1, ascending, sequences.gather(1, source))

"""BERT4Rec with ID embeddings and cloze training, as behind the published tables.

Paper: Sun, Liu, Wu, Pei, Lin, Ou, Jiang, "BERT4Rec: Sequential Recommendation with Bidirectional
Encoder Representations from Transformer", CIKM 2019.
Checked against: RecBole v1.0.1 ``recbole/model/sequential_recommender/bert4rec.py`` and
``recbole/properties/model/BERT4Rec.yaml`` (the model behind the UniSRec/VQ-Rec BERT4Rec rows, run
as ``run_baseline.py -m BERT4Rec --hidden_size=300``).

Faithful to RecBole 1.0.1:
- item embedding with N + 2 rows (0 = padding, 1..N = items, N + 1 = the mask token), learned
  position embedding with max length + 1 rows (room for the mask appended at test time),
  embedding sum -> LayerNorm -> dropout -> bidirectional post-LN transformer (attention to every
  non-padding position), N(0, 0.02) init; 2 layers, 2 heads, hidden 300, inner 256, dropout 0.5/0.5.
- Cloze training: every non-padding item is replaced by the mask token with probability 0.2; the
  loss is the mean CE over the masked positions of the batch, but only the *last*
  ``int(0.2 * max_seq_length)`` (= 10) masked positions of a sequence are predicted (the others
  stay masked in the input). A sequence with no masked item adds nothing to the loss.
- Logits and scores use embedding rows 0..N (``weight[:n_items]`` in RecBole, whose n_items counts
  the padding): the padding row is a class, the mask row is not.
- Scoring: the mask token is written right after each sequence's last item and the output there
  is scored against rows 0..N.

Training input (the one real difference): RecBole trains on (prefix, target) samples and masks
``item_seq`` = the prefix only: a user's training sequence T gives the rows T[:1], ..., T[:-1],
each masked independently, the sample's target is ignored, so the last training item T[-1] is
never input nor predicted. By default (``training_input="window"``, no per-prefix
materialisation) each training window is masked once per step as a whole: its items plus its
final target, i.e. T itself (at most max length + 1 items), as the original BERT4Rec masks whole
sequences. Every training item is a cloze candidate, but only about once per epoch instead of
once per later prefix, so an epoch carries fewer cloze targets than RecBole's (it costs about a
tenth: 8 s instead of about 100 s per epoch on Scientific on one CPU thread).
``training_input="samples"`` makes every (prefix, target) sample the row prefix + target, i.e.
T[:2], ..., T[:n]: RecBole's rows shifted by one (the last training item used, the one-item row
dropped), as many rows as target positions. ``training_input="prefixes"`` reproduces RecBole's
rows T[:1], ..., T[:-1] exactly, cut from recbench's windows, so a batch holds all the rows of the
windows it packs. ``training_input="shuffled_prefixes"`` trains the same rows as RecBole's loader
batches them: the Trainer gives one (prefix, target) sample per row, ``train_batch_targets`` samples
a batch in random order over the whole epoch (``TrainingWindows(samples=True)``), and the prefix of
a target late in a long history is its 50 preceding items, not the rest of its window. Only this
mode reproduces the published BERT4Rec row on Scientific; ``prefixes``, the same rows in
length-bucketed batches, trains a better model (docs/reproduction.md). The three
per-sample modes encode their rows in groups of similar length, each group only as wide as its
longest row (the same outputs): one training step of ``prefixes`` is 2.0x faster on 51-item windows
and 2.4x on windows of 2..12 items than at the batch's full width
(``benchmarks/prefix_length_groups.py``, one thread).

RecBole pads its list of masked indices with 0 and weighs the loss by ``masked_index > 0``, so a
masked *first* position stays masked in the input but is left out of the loss;
``training_input="prefixes"`` and ``"shuffled_prefixes"`` do the same. Deviation: the "window" and
"samples" modes predict a masked first position like any other. A batch with no masked item at all
gives a zero loss (RecBole divides by zero). Only the CE loss is offered.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from recbench.layers import TransformerEncoder, bidirectional_mask, init_recbole_weights, length_groups
from recbench.method import Batch, ConfigRuleError, DataSpec, Method, Probability, StrictPositiveInt, TransformerConfig
from recbench.registry import register


class BERT4RecConfig(TransformerConfig):
    """BERT4Rec hyper-parameters; defaults = RecBole 1.0.1 BERT4Rec with the papers' hidden size 300."""

    hidden_size: StrictPositiveInt = 300
    """Width of item/position embeddings and transformer layers."""
    mask_ratio: Probability = 0.2
    """Probability that each non-padding training item is replaced by the mask token."""
    training_input: Literal["window", "samples", "prefixes", "shuffled_prefixes"] = "window"
    """Rows to mask: each training window once, or every (prefix, target) sample with its target,
    or its prefix only (RecBole's rows), cut from the batch's windows or, with shuffled_prefixes,
    one sample per row in batches shuffled across the epoch (RecBole's loader)."""

    @model_validator(mode="after")
    def _some_mask_is_predicted(self) -> BERT4RecConfig:
        # Only the last int(mask_ratio * max_seq_length) masked positions of a row are predicted:
        # below 1 nothing ever is and training is a no-op (mask_ratio 0 says so explicitly).
        if self.mask_ratio > 0 and int(self.mask_ratio * self.max_seq_length) < 1:
            least = f"{1 / self.max_seq_length:.4g}"
            message = f"must be 0 or at least 1 / max_seq_length = {least}, else no masked item is ever predicted"
            raise ConfigRuleError("mask_ratio", self.mask_ratio, message)
        return self


@register("bert4rec")
class BERT4Rec(Method):
    """BERT4Rec: bidirectional self-attention over item IDs, cloze (masked item) training (RecBole 1.0.1)."""

    Config = BERT4RecConfig
    causal = False

    def __init__(self, config: BERT4RecConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.mask_token = spec.num_items + 1
        self.max_predicted = int(config.mask_ratio * spec.max_seq_length)  # RecBole's mask_item_length
        self.item_embedding = nn.Embedding(spec.num_items + 2, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(spec.max_seq_length + 1, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = TransformerEncoder.from_config(config, config.hidden_size)
        self.apply(lambda module: init_recbole_weights(module, config.initializer_range))

    @property
    def trains_on_samples(self) -> bool:
        return self.config.training_input == "shuffled_prefixes"

    @property
    def rows_are_prefixes(self) -> bool:
        """True if a row is a sample's prefix without its target (RecBole's item_seq)."""
        return self.config.training_input in ("prefixes", "shuffled_prefixes")

    def encode(self, tokens: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        """(B, W) token ids (items, mask tokens, 0 padding) -> (B, W, d); with ``query`` (B,) -> (B, d)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        hidden = self.dropout(self.norm(self.embed_items(tokens) + self.position_embedding(positions)))
        return self.encoder(hidden, bidirectional_mask(tokens), query_index=query)

    def item_table(self) -> torch.Tensor:
        """(N + 2, d): the vector of each token id (padding, items, mask token) that outputs are scored
        against and that :meth:`embed_items` looks up; here the ID table itself (a subclass may fuse
        item features in)."""
        return self.item_embedding.weight

    def embed_items(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, W) token ids -> (B, W, d) rows of :meth:`item_table` (padding id 0 gets no gradient)."""
        return self.item_embedding(tokens)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., N + 1): dot products with rows 0..N (padding included, mask token excluded)."""
        return hidden @ self.item_table()[: self.spec.num_items + 1].T

    # --- training: the cloze task ------------------------------------------------------------
    def training_sequences(self, batch: Batch) -> torch.Tensor:
        """The rows to mask: (#targets, L + 1) samples, (#targets, L) prefixes or (B, L + 1) windows."""
        # targets[b, t] = item t + 1 of the window, so [first item, targets...] is the whole window.
        windows = torch.cat([batch.items[:, :1], batch.targets], dim=1)  # (B, L + 1)
        if self.config.training_input == "window":
            return windows
        rows, ends = (batch.targets > 0).nonzero(as_tuple=True)  # one row per (prefix, target) sample
        if self.rows_are_prefixes:  # RecBole: the prefix items[: t + 1] without its target
            return batch.items[rows] * (torch.arange(batch.items.shape[1], device=batch.items.device) <= ends[:, None])
        return windows[rows] * (torch.arange(windows.shape[1], device=windows.device) <= ends[:, None] + 1)

    def mask_items(self, sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, W) items -> (masked inputs, predicted) as RecBole: each item masked w.p. mask_ratio,
        only the last ``max_predicted`` masked positions of a row are predicted."""
        masked = (torch.rand(sequences.shape, device=sequences.device) < self.config.mask_ratio) & (sequences > 0)
        masked_from_here = masked.flip(1).cumsum(dim=1).flip(1)  # (R, W) masked positions at or after t
        predicted = masked & (masked_from_here <= self.max_predicted)
        return sequences.masked_fill(masked, self.mask_token), predicted

    def loss(self, batch: Batch) -> torch.Tensor:
        sequences = self.training_sequences(batch)  # (R, W)
        inputs, predicted = self.mask_items(sequences)
        if self.rows_are_prefixes:
            # RecBole's masked-index list is padded with 0, and its loss weight is masked_index > 0,
            # so a masked first item stays masked in the input but is never predicted.
            predicted[:, 0] = False
        if not predicted.any():  # possible on a tiny batch: no signal, but keep the graph connected
            return self.encode(inputs).sum() * 0.0
        if self.config.training_input == "window":
            hidden = self.encode(inputs)  # (R, W, d)
            predicted_hidden, predicted_items = hidden[predicted], sequences[predicted]
        else:
            predicted_hidden, predicted_items = self.encode_samples(inputs, sequences, predicted)
        return F.cross_entropy(self.item_logits(predicted_hidden), predicted_items)

    def encode_samples(
        self, inputs: torch.Tensor, sequences: torch.Tensor, predicted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's outputs at the predicted positions of one-sample-per-row inputs (R, W), and
        the items there. A window's samples are 1..W items long, so the rows are encoded in groups of
        similar length (``length_groups``), each only as wide as its longest row: padding keys are
        masked out of the attention, so the outputs are the same, for about half the work."""
        lengths = (inputs > 0).sum(dim=1)
        hidden, items = [], []
        for group in length_groups(lengths):
            width = int(lengths[group].max())
            chosen = predicted[group, :width]
            hidden.append(self.encode(inputs[group, :width])[chosen])
            items.append(sequences[group, :width][chosen])
        return torch.cat(hidden), torch.cat(items)

    # --- evaluation: predict an appended mask token ------------------------------------------
    def with_mask_appended(self, batch: Batch) -> torch.Tensor:
        """(B, L) histories -> (B, L + 1): items up to each length, the mask token at ``lengths``, then 0."""
        columns = torch.arange(batch.items.shape[1] + 1, device=batch.items.device)[None, :]
        tokens = F.pad(batch.items, (0, 1)) * (columns < batch.lengths[:, None])  # drop anything past the end
        return tokens.masked_fill(columns == batch.lengths[:, None], self.mask_token)

    def score(self, batch: Batch) -> torch.Tensor:
        hidden = self.encode(self.with_mask_appended(batch), query=batch.lengths)  # (B, d) at the mask
        return self.item_logits(hidden)

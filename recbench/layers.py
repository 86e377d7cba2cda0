"""Building blocks shared by the transformer-based plugins, faithful to RecBole's.

RecBole's block (``recbole/model/layers.py``) differs from ``torch.nn.TransformerEncoderLayer``
in ways that matter with dropout 0.5: separate q/k/v ``nn.Linear`` layers initialised
N(0, 0.02), post-LN, GELU, and *no* dropout between the two feed-forward layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from recbench.method import TransformerConfig


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections, residual and post-LayerNorm."""

    def __init__(self, hidden: int, heads: int, attn_dropout: float, hidden_dropout: float, eps: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of the number of heads {heads}")
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_dropout = attn_dropout
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(hidden_dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, query_index: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, d); allowed: (B, 1, L, L) bool, True where a query may attend to a key.

        With ``query_index`` (B,), only the query at that position of each row is computed and the
        output is (B, 1, d): the last layer of a causal model needs no other position at test time.
        """
        batch, length, hidden = x.shape
        heads, width = self.heads, hidden // self.heads
        queries = x
        if query_index is not None:
            rows = torch.arange(batch, device=x.device)
            queries = x[rows, query_index][:, None]  # (B, 1, d)
            allowed = allowed.expand(batch, 1, length, length)[rows, :, query_index][:, :, None]  # (B, 1, 1, L)

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, l, d) -> (B, h, l, d/h)
            return t.view(batch, -1, heads, width).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            split(self.query(queries)),
            split(self.key(x)),
            split(self.value(x)),
            attn_mask=allowed,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        context = context.transpose(1, 2).reshape(batch, -1, hidden)
        return self.norm(self.dropout(self.dense(context)) + queries)


class FeedForward(nn.Module):
    """dense -> GELU -> dense -> dropout -> LayerNorm(x + .), as RecBole (no inner dropout)."""

    def __init__(self, hidden: int, inner: int, hidden_dropout: float, eps: float) -> None:
        super().__init__()
        self.dense_1 = nn.Linear(hidden, inner)
        self.dense_2 = nn.Linear(inner, hidden)
        self.dropout = nn.Dropout(hidden_dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(self.dense_2(F.gelu(self.dense_1(x)))) + x)


class TransformerEncoder(nn.Module):
    """A stack of RecBole transformer layers (attention block, then feed-forward block)."""

    def __init__(
        self, layers: int, hidden: int, heads: int, inner: int, hidden_dropout: float, attn_dropout: float, eps: float
    ) -> None:
        super().__init__()
        self.attention = nn.ModuleList(
            MultiHeadAttention(hidden, heads, attn_dropout, hidden_dropout, eps) for _ in range(layers)
        )
        self.feed_forward = nn.ModuleList(FeedForward(hidden, inner, hidden_dropout, eps) for _ in range(layers))

    @classmethod
    def from_config(cls, config: TransformerConfig, hidden: int) -> TransformerEncoder:
        """The encoder a :class:`recbench.method.TransformerConfig` describes, ``hidden`` wide."""
        return cls(
            config.n_layers,
            hidden,
            config.n_heads,
            config.inner_size,
            config.hidden_dropout_prob,
            config.attn_dropout_prob,
            config.layer_norm_eps,
        )

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, query_index: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d) -> (B, L, d); with ``query_index`` (B,), -> (B, d) at those positions only."""
        last = len(self.attention) - 1
        for layer, (attention, feed_forward) in enumerate(zip(self.attention, self.feed_forward)):
            x = feed_forward(attention(x, allowed, query_index if layer == last else None))
        return x[:, 0] if query_index is not None else x


def causal_mask(items: torch.Tensor) -> torch.Tensor:
    """(B, L) item ids -> (B, 1, L, L) bool: attend to earlier-or-same, non-padding positions."""
    length = items.shape[1]
    lower = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
    return (items > 0)[:, None, None, :] & lower


def bidirectional_mask(items: torch.Tensor) -> torch.Tensor:
    """(B, L) item ids -> (B, 1, 1, L) bool: attend to every non-padding position."""
    return (items > 0)[:, None, None, :]


LENGTH_GROUPS = 16
"""How many groups :func:`length_groups` cuts a batch's rows into, at most."""

MIN_GROUP_ROWS = 128
"""Fewest rows of a group: on smaller batches the per-group overhead of a deep model (one pass of
every layer per group) costs more than the narrower frames save (a 300-step toy search took
several times longer with 16 groups of a few rows)."""


def length_groups(lengths: torch.Tensor, groups: int | None = None, min_rows: int | None = None) -> list[torch.Tensor]:
    """Row indices sorted by ``lengths`` (R,) and cut into up to ``groups`` (default
    ``LENGTH_GROUPS``) groups of equal size, each of at least ``min_rows`` (default
    ``MIN_GROUP_ROWS``) rows.

    For models that encode each (prefix, target) sample as its own row: a group of rows of similar
    length can be encoded in a frame as wide as its longest row instead of the batch's widest, which
    gives the same outputs where padding is masked or held at zero, at a cost that follows each row's
    own length (the prefixes of a window are 1..W long: about half the work, less still where the cost
    is quadratic in the width). Concatenated, the groups are a permutation of the rows; its inverse
    (``torch.argsort``) puts per-row results back in order. No rows: no groups."""
    order = torch.argsort(lengths, stable=True)
    count = min(groups or LENGTH_GROUPS, len(order) // (min_rows or MIN_GROUP_ROWS)) or 1
    return [group for group in order.tensor_split(count) if len(group)]


def by_length_groups(
    lengths: torch.Tensor,
    encode_group: Callable[[torch.Tensor, int], torch.Tensor],
    groups: int | None = None,
    min_rows: int | None = None,
) -> torch.Tensor:
    """Per-row results of ``encode_group(group, width)`` over the :func:`length_groups` of
    ``lengths`` (R,) (``groups`` and ``min_rows`` passed on), back in row order: ``group`` holds a
    group's row indices and ``width`` its longest length, the frame it can be encoded in; each call
    returns one result per row of its group."""
    row_groups = length_groups(lengths, groups, min_rows)
    parts = [encode_group(group, int(lengths[group].max())) for group in row_groups]
    return torch.cat(parts)[torch.argsort(torch.cat(row_groups))]


def encode_each_prefix(
    encode_last: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], items: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """(T, d) outputs of a training batch's (prefix, target) samples, each prefix encoded as its own row.

    A causal model encodes every prefix of a window in one pass, and its prefixes then share one
    dropout draw; RecBole's loader gives each sample its own row and so its own draw. Here sample
    ``(b, t)`` (a position with ``targets[b, t] > 0``) is the row ``items[b, : t + 1]``, zero after
    it, and ``encode_last(rows, last)`` returns each row's output at ``last`` ((R, W), (R,) ->
    (R, d)). Rows are encoded in :func:`length_groups`, each frame as wide as its longest row. The
    result is in the row-major order of ``targets > 0``, the order of ``hidden[targets > 0]``, so a
    loss written for the one-pass outputs takes these unchanged; without dropout they are equal."""
    rows, ends = (targets > 0).nonzero(as_tuple=True)

    def encode_group(group: torch.Tensor, width: int) -> torch.Tensor:
        kept = torch.arange(width, device=items.device) <= ends[group, None]
        return encode_last(items[rows[group], :width] * kept, ends[group])

    return by_length_groups(ends + 1, encode_group)


UNISREC_FEATURE_WIDTH = 768
"""Width of the text features UniSRec's baseline scripts read (bert-base-uncased [CLS], their
``plm_size``), so the width of the random tables their FDSA and S3-Rec end up with (the plugins'
``official_random`` options)."""


def use_official_random_features(module: nn.Module, std: float) -> None:
    """Replace ``module.text`` (the frozen item text table) by what UniSRec's FDSA and S3-Rec baseline
    scripts end up with: their text table is a registered module that ``apply(_init_weights)``
    re-draws, so a random N(0, ``std``) table, ``UNISREC_FEATURE_WIDTH`` wide. Call it after the
    other weights are initialised, as theirs is drawn then; it becomes a buffer in the state dict,
    so a saved model (and a fine-tuning model loading pre-trained weights) keeps the same table."""
    rows = module.text.new_empty(len(module.text), UNISREC_FEATURE_WIDTH).normal_(0, std)
    del module.text
    module.register_buffer("text", rows)


def init_recbole_weights(module: nn.Module, std: float = 0.02) -> None:
    """RecBole's ``_init_weights``: Linear/Embedding N(0, std), biases 0, LayerNorm (1, 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()


def recbole_transformer_parameters(layers: int, source: str = "trm_encoder", target: str = "encoder") -> list:
    """The :class:`recbench.method.OfficialParameter` entries of a RecBole ``TransformerEncoder`` of
    ``layers`` blocks named ``source`` in an official checkpoint, onto a :class:`TransformerEncoder`
    named ``target``: ``layer.i.multi_head_attention.{query,key,value,dense,LayerNorm}`` ->
    ``attention.i.{query,key,value,dense,norm}``, ``layer.i.feed_forward.{dense_1,dense_2,LayerNorm}``
    -> ``feed_forward.i.{dense_1,dense_2,norm}`` (weights and biases; same shapes, no transpose)."""
    from recbench.method import OfficialParameter

    blocks = {
        "multi_head_attention": ("attention", {"query": "query", "key": "key", "value": "value", "dense": "dense"}),
        "feed_forward": ("feed_forward", {"dense_1": "dense_1", "dense_2": "dense_2"}),
    }
    entries = []
    for layer in range(layers):
        for official_block, (block, linears) in blocks.items():
            for official_name, name in {**linears, "LayerNorm": "norm"}.items():
                for kind in ("weight", "bias"):
                    entries.append(
                        OfficialParameter(
                            f"{source}.layer.{layer}.{official_block}.{official_name}.{kind}",
                            f"{target}.{block}.{layer}.{name}.{kind}",
                        )
                    )
    return entries


# --- in-batch contrastive losses (UniSRec's and VQ-Rec's pre-training) ----------------------
def target_rows(targets: torch.Tensor) -> torch.Tensor:
    """(B, L) next items (0: none) -> (T,) the batch row of each target position, in the order
    ``targets[targets > 0]`` lists them (row-major): which sequence each (prefix, target) sample is from."""
    rows = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)
    return rows[targets > 0]


def same_target_mask(targets: torch.Tensor) -> torch.Tensor:
    """(T,) next items -> (T, T) bool: True where another sample has the same next item (not a negative)."""
    same = targets[:, None] == targets[None, :]
    return same & ~torch.eye(len(targets), dtype=torch.bool, device=targets.device)


def same_row_mask(rows: torch.Tensor) -> torch.Tensor:
    """(T,) batch rows -> (T, T) bool: True where another sample comes from the same sequence."""
    return same_target_mask(rows)  # the same test: equal values off the diagonal


def contrastive_logits(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float,
    same_target: torch.Tensor | None = None,
    same_row: torch.Tensor | None = None,
) -> torch.Tensor:
    """(T, d) anchors x (T, d) candidates -> (T, T) InfoNCE logits; row i's positive is column i.

    Inputs are normalised, so a logit is a cosine / temperature. Where ``same_target`` (another
    sample with the same next item) the logit is 0, as the official UniSRec/VQ-Rec
    ``torch.where(same_pos_id, 0, logits)``: it still adds exp(0) = 1 to the denominator. Where
    ``same_row`` (another sample of the same sequence) the logit is -inf: the candidate leaves the
    denominator. Such pairs do not occur in the official loaders, which shuffle single (prefix,
    target) samples, but a batch of whole windows has many: the user's own other items and the
    outputs of the sequence's other prefixes, which would be false negatives. ``same_row`` wins
    where both hold.
    """
    logits = anchors @ candidates.T / temperature
    logits = logits if same_target is None else logits.masked_fill(same_target, 0.0)
    return logits if same_row is None else logits.masked_fill(same_row, float("-inf"))


def contrastive_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    temperature: float,
    same_target: torch.Tensor | None = None,
    same_row: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean InfoNCE over the anchors with in-batch negatives: -log(exp(s_ii) / sum_j exp(s_ij)), the
    logits of :func:`contrastive_logits` (same-target negatives at 0, same-sequence ones removed; without
    masks every other row is a negative, as SimCSE)."""
    logits = contrastive_logits(anchors, positives, temperature, same_target, same_row)
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))

"""S3-Rec: self-supervised pre-training (AAP, MIP, MAP, SP) on the target itself, then SASRec fine-tuning.

Paper: Zhou, Wang, Zhao, Zhu, Wang, Zhang, Wang, Wen, "S3-Rec: Self-Supervised Learning for Sequential
Recommendation with Mutual Information Maximization", CIKM 2020.
Checked against: RecBole ``recbole/model/sequential_recommender/s3rec.py`` and
``recbole/properties/model/S3Rec.yaml`` at 7b02be5e (v1.2.1 + 11 commits), and UniSRec's text
version of it, RUCAIBox/UniSRec @05aa5cb ``baselines/s3rec.py``, ``props/S3Rec.yaml`` and
``run_baseline.py`` (the S3-Rec rows of the UniSRec / VQ-Rec tables).

Attributes come from text as UniSRec's authors meant it: an item's only "attribute" is the item
itself, embedded by its text. The attribute table is ``ReLU(Linear(text))`` over every item's text
embedding (their ``MLPLayers(adapter_layers = [768, 300])``, rows 0..N, the padding row's zero text
included), and the attribute target of a position is the one-hot of its own item over those N + 1
rows. So AAP asks the output at an unmasked position which item's text it holds, MAP the same at a
masked position. No clustering or discretisation is involved.
What their code runs is not that (read, not run): its text table is a registered ``nn.Embedding``
that the pre-training stage's ``self.apply(self._init_weights)`` re-draws N(0, 0.02), so the
attributes are a fixed random vector per item, and the AAP / MAP targets are misaligned (see
Deviations). ``attributes = "official_random"`` and ``attribute_targets = "official_right_padded"``
reproduce both, for comparing with the published S3-Rec rows; the defaults are the method as meant.

Faithful (to both, except the weights and width, which are UniSRec's props):
- Encoder: SASRec's (item embedding of N + 2 rows, the last one the mask token, + learned position
  -> LayerNorm -> dropout -> post-LN transformer, RecBole's layers and N(0, 0.02) init for every
  Linear and Embedding, the adapter too); hidden 300, inner 256, 2 layers, 2 heads, dropout 0.5/0.5.
- Pre-training (bidirectional attention) on every (prefix, next item) training sample of the
  target, each prefix left-padded to ``max_seq_length``; per prefix: each item is masked w.p.
  ``mask_ratio`` (0.2) and gets a negative drawn uniformly from the items not in the prefix.
  AAP: BCE with logits of ``aap_norm(h) . attributes`` vs the one-hot, summed over the N + 1
  attributes at unmasked real positions. MAP: the same with ``map_norm`` at masked positions. MIP:
  ``BCE-with-logits(sigmoid(<mip_norm(h), e_pos>) - sigmoid(<mip_norm(h), e_neg>), 1)`` at masked
  positions. SP: a segment of U{1..len // 2} items at a uniform start is masked in the prefix; the
  positive segment (the segment in place, mask tokens elsewhere) and a negative one (as long, cut
  at a uniform start from the batch's prefixes concatenated) are encoded, the last position of
  each read out, ``BCE-with-logits(sigmoid(<sp_norm(c), s_pos>) - sigmoid(<sp_norm(c), s_neg>), 1)``;
  prefixes shorter than 2 give three identical sequences (a constant, as RecBole). Every loss is a
  sum, the total ``aap_weight * AAP + mip_weight * MIP + map_weight * MAP + sp_weight * SP`` with
  UniSRec's props 1.0 / 0.2 / 1.0 / 0.5 (RecBole's yaml: 0.2 / 1.0 / 1.0 / 0.5; set
  ``aap_weight=0.2 mip_weight=1.0`` for those), 300 pre-training epochs (RecBole: 500).
- Fine-tuning: causal attention, CE of the output at each position against all N + 2 embedding
  rows (the padding row and the mask token are classes, as both codes); scores are over rows 0..N
  (the mask token dropped, as ``full_sort_predict``). Every pre-trained weight is loaded.

Where recbench runs it: S3-Rec pre-trains on its target, not on source domains. The class sets
``pretrains_on_target``: ``recbench train s3rec --dataset D`` first pre-trains on D's training part
(the Trainer's pre-training stage; the run under ``runs/_pretrain/D/``, reused by every fine-tuning
of the same config and seed), then fine-tunes from it; ``--pretrain-on`` may name only D, and
``pretrain_epochs=0`` trains SASRec-style from scratch.

Deviations:
- Attribute targets are aligned with the left-padded pre-training input. UniSRec's baseline builds
  them from the right-padded input while the encoded sequences are left-padded, so there a
  position's AAP / MAP target is the item at that column of the right-padded prefix, which is
  another item (or padding) whenever the prefix is shorter than ``max_seq_length``
  (``attribute_targets = "official_right_padded"`` does the same); RecBole's own version pads the
  features at the left, as here.
- Negatives for MIP are drawn from 1..N; both codes draw from 1..N + 1, the mask token included.
- The negative segment may run across two prefixes of the concatenation, as in both codes, but
  the concatenation holds each prefix once (both codes: the same).
- Random draws use torch's generator on the batch's device (vectorised), not Python's ``random``.
- Fine-tuning trains every prefix of a window in one causal pass (as recbench's SASRec).
- Pre-training rows are encoded in groups of similar length, each frame only as wide as its
  longest row (the same outputs at every real position: padding keys are masked out and the
  position ids are those of the full left-padded frame). Dropout is drawn over the narrower
  frames, so a run does not repeat a full-width run's draws bit for bit.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from recbench.layers import (
    UNISREC_FEATURE_WIDTH,
    TransformerEncoder,
    bidirectional_mask,
    by_length_groups,
    causal_mask,
    init_recbole_weights,
    use_official_random_features,
)
from recbench.method import (
    Batch,
    ConfigRuleError,
    DataSpec,
    Method,
    Probability,
    StrictNonNegativeFloat,
    StrictNonNegativeInt,
    StrictPositiveInt,
    TransferConfig,
    TransformerConfig,
)
from recbench.registry import register

LOSSES = ("aap", "mip", "map", "sp")


class S3RecConfig(TransferConfig, TransformerConfig):
    """S3-Rec hyper-parameters; defaults = UniSRec's ``props/S3Rec.yaml`` (RecBole's yaml with hidden 300)."""

    hidden_size: StrictPositiveInt = 300
    """Width of item, position and attribute embeddings and of the transformer."""
    pretrain_epochs: StrictNonNegativeInt = 300
    """Epochs of self-supervised pre-training on the target's training part (0: none, SASRec from scratch)."""
    train_batch_targets: StrictPositiveInt = 1024
    """Fine-tuning batch size in target positions: UniSRec's props set ``train_batch_size: 1024`` for
    both stages (run_baseline.py reads props/S3Rec.yaml for each), not RecBole's 2048."""
    pretrain_batch_targets: StrictPositiveInt = 1024
    """(prefix, next item) samples per pre-training step: UniSRec's props ``train_batch_size: 1024``. Every
    sample is a whole prefix scored against all items (AAP, MAP), so memory grows with it: 2048 on
    Scientific needed over 23 GB."""
    mask_ratio: Probability = 0.2
    """Probability that an item of a pre-training prefix is replaced by the mask token (MIP / MAP)."""
    aap_weight: StrictNonNegativeFloat = 1.0
    """Weight of the associated attribute prediction loss (RecBole's yaml: 0.2)."""
    mip_weight: StrictNonNegativeFloat = 0.2
    """Weight of the masked item prediction loss (RecBole's yaml: 1.0)."""
    map_weight: StrictNonNegativeFloat = 1.0
    """Weight of the masked attribute prediction loss."""
    sp_weight: StrictNonNegativeFloat = 0.5
    """Weight of the segment prediction loss."""
    attributes: Literal["text", "official_random"] = "text"
    """The attribute table's input: the item text embedding, or official_random, the frozen random
    vector per item (N(0, initializer_range), 768 wide) that UniSRec's baselines/s3rec.py
    ends up with: its text table is a registered module, which its ``apply(_init_weights)`` re-draws."""
    attribute_targets: Literal["aligned", "official_right_padded"] = "aligned"
    """A position's AAP / MAP target: its own item (aligned), or official_right_padded, as UniSRec's
    baselines/s3rec.py builds it: the item at the same column of the right-padded prefix, while the
    encoded prefix is left-padded (another item, or padding, in any prefix shorter than max_seq_length)."""

    @model_validator(mode="after")
    def _some_task(self) -> S3RecConfig:
        if not any(getattr(self, f"{name}_weight") > 0 for name in LOSSES):
            raise ConfigRuleError("sp_weight", self.sp_weight, "at least one pre-training loss needs a weight > 0")
        return self


@register("s3rec")
class S3Rec(Method):
    """S3-Rec: SASRec encoder pre-trained with AAP / MIP / MAP / SP on the target, then fine-tuned with CE."""

    Config = S3RecConfig
    needs_text = True
    supports_pretraining = True
    pretrains_on_target = True

    def __init__(self, config: S3RecConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if spec.item_text_embeddings is None:
            raise ValueError("S3-Rec needs DataSpec.item_text_embeddings (the item attributes)")
        # Frozen and dataset-specific: a buffer outside the state dict.
        self.register_buffer("text", spec.item_text_embeddings.float(), persistent=False)
        d = config.hidden_size
        self.mask_token = spec.num_items + 1
        self.item_embedding = nn.Embedding(spec.num_items + 2, d, padding_idx=0)
        self.position_embedding = nn.Embedding(spec.max_seq_length, d)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = TransformerEncoder.from_config(config, d)
        official = config.attributes == "official_random"
        self.adapter = nn.Linear(UNISREC_FEATURE_WIDTH if official else self.text.shape[1], d)
        self.aap_norm = nn.Linear(d, d)
        self.mip_norm = nn.Linear(d, d)
        self.map_norm = nn.Linear(d, d)
        self.sp_norm = nn.Linear(d, d)
        self.apply(lambda module: init_recbole_weights(module, config.initializer_range))
        if official:
            use_official_random_features(self, config.initializer_range)

    def encode(
        self, items: torch.Tensor, bidirectional: bool = False, last: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) item ids -> (B, L, d) outputs (or (B, d) at ``last``); causal unless ``bidirectional``."""
        positions = torch.arange(items.shape[1], device=items.device)
        hidden = self.dropout(self.norm(self.item_embedding(items) + self.position_embedding(positions)))
        mask = bidirectional_mask(items) if bidirectional else causal_mask(items)
        return self.encoder(hidden, mask, query_index=last)

    def encode_left_padded(self, tokens: torch.Tensor) -> torch.Tensor:
        """(P, W) left-padded pre-training rows -> (P, W, d) bidirectional outputs (0 at padding).

        The same outputs as ``encode(tokens, bidirectional=True)`` at every real position, at a
        cost that follows each row's own length: rows are encoded in groups of similar length
        (``length_groups``), each in a frame only as wide as its longest row, cut from the right of
        the W columns with the position ids those columns have; padding keys are masked out of the
        attention either way. Pre-training rows are single samples, most far shorter than W."""
        width = tokens.shape[1]

        def encode_group(group: torch.Tensor, frame: int) -> torch.Tensor:
            cut = tokens[group, width - frame :]
            positions = torch.arange(width - frame, width, device=tokens.device)
            hidden = self.dropout(self.norm(self.item_embedding(cut) + self.position_embedding(positions)))
            return F.pad(self.encoder(hidden, bidirectional_mask(cut)), (0, 0, width - frame, 0))

        return by_length_groups((tokens > 0).sum(dim=1), encode_group)

    # --- fine-tuning ---------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        hidden = self.encode(batch.items)  # (B, L, d)
        has_target = batch.targets > 0
        logits = hidden[has_target] @ self.item_embedding.weight.T  # (T, N + 2): the mask token is a class
        return F.cross_entropy(logits, batch.targets[has_target])

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        last = batch.lengths - 1
        return self.encode(batch.items, last=last), self.item_embedding.weight[: self.spec.num_items + 1]

    def score(self, batch: Batch) -> torch.Tensor:
        hidden, items = self.query_and_items(batch)
        return hidden @ items.T

    # --- pre-training on the target ------------------------------------------------------------
    def attribute_table(self) -> torch.Tensor:
        """(N + 1, d): every item's attribute embedding, ReLU(Linear(text)) (UniSRec's adapter; the
        text is the random table under ``attributes = "official_random"``)."""
        return F.relu(self.adapter(self.text))

    def prefixes(self, batch: Batch) -> torch.Tensor:
        """(P, W) every (prefix, next item) sample of the batch, its prefix left-padded to W = max_seq_length."""
        rows, ends = (batch.targets > 0).nonzero(as_tuple=True)
        lengths = ends + 1
        width = self.spec.max_seq_length  # the Trainer's windows are at most this wide
        source = torch.arange(width, device=rows.device)[None, :] - (width - lengths)[:, None]  # (P, W)
        items = batch.items[rows[:, None], source.clamp(min=0)]
        return torch.where(source >= 0, items, torch.zeros_like(items))

    def right_padded_prefixes(self, batch: Batch) -> torch.Tensor:
        """(P, W) the samples of :meth:`prefixes` padded at the right instead (RecBole's ``item_seq``)."""
        rows, ends = (batch.targets > 0).nonzero(as_tuple=True)
        width = self.spec.max_seq_length
        columns = torch.arange(width, device=rows.device)[None, :]
        items = batch.items[rows[:, None], columns.clamp(max=batch.items.shape[1] - 1)]
        return torch.where(columns <= ends[:, None], items, torch.zeros_like(items))

    def negative_items(self, sequences: torch.Tensor) -> torch.Tensor:
        """(P, W) uniform items of 1..N, each redrawn until it is not in its row (as ``_neg_sample``)."""
        high = self.spec.num_items
        negatives = torch.randint(1, high + 1, sequences.shape, device=sequences.device)
        for _ in range(100):  # a row holding every item would loop forever in the official code
            clash = (negatives[:, :, None] == sequences[:, None, :]).any(dim=-1)
            if not clash.any():
                break
            redrawn = torch.randint(1, high + 1, sequences.shape, device=sequences.device)
            negatives = torch.where(clash, redrawn, negatives)
        return negatives

    def segments(self, sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SP inputs of left-padded prefixes (P, W): the prefix with a segment masked, the positive
        segment and a negative one (mask tokens outside the segment), all left-padded."""
        real = sequences > 0
        lengths = real.sum(dim=1)  # (P,)
        width = sequences.shape[1]
        offset = torch.arange(width, device=sequences.device)[None, :] - (width - lengths)[:, None]  # j in the prefix
        draw = torch.rand(3, len(lengths), device=sequences.device)
        seg_length = 1 + (draw[0] * (lengths // 2).clamp(min=1)).long()  # U{1..len // 2}
        start = (draw[1] * (lengths - seg_length + 1)).long()  # U{0..len - seg_length}
        flat = sequences[real]  # the prefixes concatenated, in order
        neg_start = (draw[2] * (len(flat) - seg_length + 1)).long()
        inside = (offset >= start[:, None]) & (offset < (start + seg_length)[:, None])
        mask = torch.full_like(sequences, self.mask_token)
        negative = flat[(neg_start[:, None] + offset - start[:, None]).clamp(0, len(flat) - 1)]
        masked = torch.where(inside, mask, sequences)
        positive = torch.where(inside, sequences, mask)
        negative = torch.where(inside, negative, mask)
        short = (lengths < 2)[:, None] | ~real  # a prefix of one item: three copies of it; padding stays 0
        return (
            torch.where(short, sequences, masked),
            torch.where(short, sequences, positive),
            torch.where(short, sequences, negative),
        )

    def pretrain_losses(self, batch: Batch, tasks: tuple[str, ...] = LOSSES) -> dict[str, torch.Tensor]:
        """The unweighted pre-training losses ``tasks`` (sums, as RecBole) of every prefix sample of the batch."""
        sequences = self.prefixes(batch)  # (P, W)
        real = sequences > 0
        masked = real & (torch.rand(sequences.shape, device=sequences.device) < self.config.mask_ratio)
        inputs = torch.where(masked, torch.full_like(sequences, self.mask_token), sequences)
        negatives = self.negative_items(sequences)
        hidden = self.encode_left_padded(inputs)  # (P, W, d)
        attributes = self.attribute_table()  # (N + 1, d)
        targets = sequences if self.config.attribute_targets == "aligned" else self.right_padded_prefixes(batch)

        def attribute_loss(norm: nn.Linear, where: torch.Tensor) -> torch.Tensor:
            logits = norm(hidden[where]) @ attributes.T  # (K, N + 1)
            # Summed BCE against one-hot targets, sum(softplus(x) - x * y), without the (K, N + 1) one-hot tensor.
            return F.softplus(logits).sum() - logits.gather(1, targets[where][:, None]).sum()

        def pairwise(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
            distance = torch.sigmoid((anchor * positive).sum(-1)) - torch.sigmoid((anchor * negative).sum(-1))
            return F.binary_cross_entropy_with_logits(distance, torch.ones_like(distance), reduction="sum")

        def segment_loss() -> torch.Tensor:
            context, positive, negative = self.segments(sequences)
            count = len(sequences)
            outputs = self.encode_left_padded(torch.cat([context, positive, negative]))[:, -1]  # (3P, d)
            return pairwise(self.sp_norm(outputs[:count]), outputs[count : 2 * count], outputs[2 * count :])

        losses = {}
        if "aap" in tasks:
            losses["aap"] = attribute_loss(self.aap_norm, real & ~masked)
        if "mip" in tasks:
            anchor = self.mip_norm(hidden[masked])
            losses["mip"] = pairwise(
                anchor, self.item_embedding(sequences[masked]), self.item_embedding(negatives[masked])
            )
        if "map" in tasks:
            losses["map"] = attribute_loss(self.map_norm, masked)
        if "sp" in tasks:
            losses["sp"] = segment_loss()
        return losses

    def pretrain_loss(self, batch: Batch) -> torch.Tensor:
        """The weighted sum of the pre-training losses; a task of weight 0 is not computed."""
        weights = {name: getattr(self.config, f"{name}_weight") for name in LOSSES}
        losses = self.pretrain_losses(batch, tuple(name for name in LOSSES if weights[name] > 0))
        return torch.stack([weights[name] * loss for name, loss in losses.items()]).sum()

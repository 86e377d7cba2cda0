"""UniSRec: universal sequence representations from item text through an MoE adaptor.

Paper: Hou, Mu, Zhao, Li, Ding, Wen, "Towards Universal Sequence Representation Learning for
Recommender Systems", KDD 2022 (arXiv 2206.05941). Checked against the official code,
RUCAIBox/UniSRec @05aa5cb (``unisrec.py``, ``data/transform.py``, ``finetune.py``,
``props/UniSRec.yaml``), with the pre-training loss as fixed by its PR #9 (the published
checkpoint predates that fix: ``pos_logits`` with ``keepdim=True`` broadcast to (B, B)).

- Item text: the frozen text embedding x of each item (the paper: BERT CLS, 768-d; any encoder
  here, see ``text_encoder``) through the MoE adaptor: 8 parametric-whitening experts
  ``W_k^T (dropout(x) - b_k)`` mixed by softmax gates ``x W_gate`` (noisy gating in training:
  ``+ N(0, 1) * (softplus(x W_noise) + 1e-2)``); W_gate, W_noise and b start at zero, W_k N(0, 0.02).
- Sequence encoder: the RecBole SASRec body (hidden 300, 2 layers, 2 heads, inner 256, dropout
  0.5): adaptor(text) (+ ID embedding, text+ID variant) + position -> LayerNorm -> dropout ->
  transformer; the output at the last position.
- Fine-tuning: full-softmax cross-entropy over cosine similarities / temperature 0.07 between the
  sequence and every item's representation (rows 0..N, as the official code); scores are the
  cosines. ``unisrec`` is the inductive (text only) variant, ``unisrec-id`` the transductive one
  (text + a learnable ID embedding added to inputs and candidates, created only on the target).
  From a pre-trained checkpoint the position embedding and the transformer are frozen, as
  ``finetune.py`` does; the adaptor, LayerNorm and ID embedding train.
- Pre-training on the union of source domains: sequence-item contrastive (the sequence output vs
  the adaptor vector of its next item) + lambda (1e-3) * sequence-sequence contrastive (vs the
  output of an augmented view of the same sequence), both InfoNCE with in-batch negatives,
  temperature 0.07; an in-batch row with the same next item is no negative: as in the official
  code its logit is set to 0 (so it adds exp(0) = 1 to the denominator, not exp(s / 0.07)). The
  augmented view is drawn once per batch: w.p. 0.9 item drop (each position kept w.p. 0.8, the
  first always, kept items packed left), otherwise word drop (each position w.p. 0.2 takes the
  embedding of its text with 15% of the words dropped, UniSRec's feat2CLS).

Deviations, all for speed with the same expectation:
- Training batches hold every prefix of a window, so every position with a next item
  is one (prefix, target) sample of the official loader; the augmented view is made once per
  window and each prefix's augmented output is read at the position its last kept item moved to
  (exact for item drop: the kept items of the prefix, packed left). Prefixes of one window share
  one drop mask, where the official loader draws one per sample. A batch of windows holds many
  samples of one sequence, which a batch of the official loader's shuffled samples almost never
  does; those pairs (the user's other next items, the other prefixes' outputs: false negatives)
  are dropped from both contrastive denominators (``pretrain_mask_same_sequence``; the anchor's
  own positive stays), so each anchor's negatives are, as officially, other users' samples.
- Item drop packs exactly the kept items; the official scatter lets a dropped item overwrite the
  slot of the kept item before it (same count of items kept, a different choice of which).
- The adaptor runs once per batch over the items the batch needs; an item's input occurrences and
  its candidate row share one dropout / gate-noise draw within a batch.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from pydantic import StrictBool
from torch import nn

from recbench.layers import (
    TransformerEncoder,
    causal_mask,
    contrastive_loss,
    init_recbole_weights,
    recbole_transformer_parameters,
    same_row_mask,
    same_target_mask,
    target_rows,
)
from recbench.method import (
    Batch,
    DataSpec,
    DropoutProbability,
    Method,
    OfficialParameter,
    OfficialParameterMap,
    Probability,
    StrictNonNegativeFloat,
    StrictPositiveFloat,
    StrictPositiveInt,
    TransferConfig,
    TransformerConfig,
)
from recbench.registry import register


class UniSRecConfig(TransferConfig, TransformerConfig):
    """UniSRec hyper-parameters; defaults = the official ``props/UniSRec.yaml``.

    Pre-training: the shared ``TransferConfig`` defaults are UniSRec's own (``props/pretrain.yaml``:
    300 epochs, ``train_batch_size: 8192`` for both ``pretrain.py`` and ``ddp_pretrain.py``, RecBole's
    lr 0.001).
    """

    hidden_size: StrictPositiveInt = 300
    """Width of the adaptor output, position embeddings and transformer."""
    n_experts: StrictPositiveInt = 8
    """Parametric-whitening experts of the MoE adaptor (n_exps)."""
    adaptor_dropout_prob: DropoutProbability = 0.2
    """Dropout on the text embedding inside each expert."""
    noisy_gating: StrictBool = True
    """Add learned Gaussian noise to the gate logits in training."""
    temperature: StrictPositiveFloat = 0.07
    """Temperature of the cosine logits (fine-tuning and both contrastive losses)."""
    seq_seq_weight: StrictNonNegativeFloat = 1e-3
    """lambda: weight of the sequence-sequence contrastive loss in pre-training."""
    item_drop_ratio: Probability = 0.2
    """Share of positions dropped (item drop) or given word-dropped text (word drop)."""
    item_drop_coefficient: Probability = 0.9
    """Probability that a batch's augmentation is item drop rather than word drop."""
    use_id: StrictBool = False
    """Add a learnable item ID embedding (the transductive text+ID variant)."""
    pretrain_mask_same_sequence: StrictBool = True
    """Pre-training: drop the batch's other samples of an anchor's own sequence (its user's other
    next items, its other prefixes' outputs) from both contrastive denominators, as the official
    loader's shuffled single samples almost never hold them; False keeps them as negatives."""


class MoEAdaptor(nn.Module):
    """Text embeddings (..., t) -> (..., d): softmax-gated mixture of parametric-whitening experts."""

    def __init__(self, text_size: int, hidden_size: int, experts: int, dropout: float, noisy: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(experts, text_size, hidden_size))
        self.bias = nn.Parameter(torch.zeros(experts, text_size))  # the whitening shift b_k
        self.gate = nn.Parameter(torch.zeros(text_size, experts))
        self.noise = nn.Parameter(torch.zeros(text_size, experts))
        self.dropout = nn.Dropout(dropout)
        self.noisy = noisy
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.02)
        for parameter in (self.bias, self.gate, self.noise):
            nn.init.zeros_(parameter)

    def gates(self, text: torch.Tensor) -> torch.Tensor:
        """(..., t) -> (..., K) expert weights (noisy in training)."""
        logits = text @ self.gate
        if self.noisy and self.training:
            logits = logits + torch.randn_like(logits) * (F.softplus(text @ self.noise) + 1e-2)
        return logits.softmax(dim=-1)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        # Each expert draws its own dropout mask, as each official PWLayer has its own dropout.
        shifted = self.dropout(text.unsqueeze(-2).expand(*text.shape[:-1], *self.bias.shape)) - self.bias  # (..., K, t)
        experts = torch.einsum("...kt,ktd->...kd", shifted, self.weight)  # (..., K, d)
        return (self.gates(text).unsqueeze(-1) * experts).sum(dim=-2)


@register("unisrec", variants={"unisrec-id": {"use_id": True}})
class UniSRec(Method):
    """UniSRec: MoE-adapted text representations, SASRec encoder, contrastive pre-training."""

    Config = UniSRecConfig
    needs_text = True
    supports_pretraining = True
    needs_word_dropped_text = True

    def __init__(self, config: UniSRecConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        text = spec.item_text_embeddings
        # Frozen and dataset-specific: buffers outside the state dict, so weights transfer across domains.
        self.register_buffer("text", text.float(), persistent=False)
        dropped = spec.item_text_embeddings_word_dropped
        self.register_buffer("text_word_dropped", dropped.float() if dropped is not None else None, persistent=False)
        d = config.hidden_size
        self.id_embedding = nn.Embedding(spec.num_items + 1, d, padding_idx=0) if config.use_id else None
        self.position_embedding = nn.Embedding(spec.max_seq_length, d)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = TransformerEncoder.from_config(config, d)
        self.apply(lambda module: init_recbole_weights(module, config.initializer_range))
        self.adaptor = MoEAdaptor(text.shape[1], d, config.n_experts, config.adaptor_dropout_prob, config.noisy_gating)

    @classmethod
    def pretraining_config(cls, config: UniSRecConfig) -> UniSRecConfig:
        """Pre-training has no ID embedding: both variants share one pre-training run."""
        return super().pretraining_config(config.model_copy(update={"use_id": False}))

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Carry the adaptor, LayerNorm, position embedding and transformer; freeze the latter two."""
        missing = super().load_pretrained(state)
        for module in (self.position_embedding, self.encoder):
            module.requires_grad_(False)
        return missing

    @classmethod
    def official_parameter_map(cls, config: UniSRecConfig) -> OfficialParameterMap:
        """``UniSRec-FHCKM-300.pth`` (RUCAIBox/UniSRec ``unisrec.py`` on RecBole's SASRec) onto this model.

        Each official expert ``moe_adaptor.experts.k`` (a PWLayer: ``bias`` (t,), ``lin.weight`` (d, t))
        is row k of the stacked ``adaptor.bias`` (K, t) and, transposed, of ``adaptor.weight`` (K, t, d).
        The checkpoint (pre-training stage) has no ``item_embedding``: UniSRec sets it to None outside
        transductive fine-tuning, so ``id_embedding`` (unisrec-id) starts fresh, as the official
        transductive_ft's. ``plm_embedding`` holds a dataset's frozen text features, never weights.
        """
        parameters = [
            OfficialParameter("moe_adaptor.w_gate", "adaptor.gate"),
            OfficialParameter("moe_adaptor.w_noise", "adaptor.noise"),
            *(
                entry
                for k in range(config.n_experts)
                for entry in (
                    OfficialParameter(f"moe_adaptor.experts.{k}.bias", "adaptor.bias", row=k),
                    OfficialParameter(f"moe_adaptor.experts.{k}.lin.weight", "adaptor.weight", row=k, transpose=True),
                )
            ),
            OfficialParameter("position_embedding.weight", "position_embedding.weight"),
            OfficialParameter("LayerNorm.weight", "norm.weight"),
            OfficialParameter("LayerNorm.bias", "norm.bias"),
            *recbole_transformer_parameters(config.n_layers),
        ]
        text = (
            "the official adaptor reads 768-d BERT CLS features: set text_encoder=bert-base-uncased, text_pooling=cls"
        )
        return OfficialParameterMap(
            parameters=tuple(parameters),
            ignored={
                r"item_embedding\..*": "an item-ID table of the pre-training items (unused by official fine-tuning)",
                r"plm_embedding\..*": "a dataset's frozen text features (recbench encodes the target's own)",
            },
            shape_hints={
                "adaptor.weight": text,
                "adaptor.bias": text,
                "adaptor.gate": text,
                "adaptor.noise": text,
                "position_embedding.weight": "the official model reads max_seq_length = 50 items",
            },
        )

    # --- encoder and fine-tuning -------------------------------------------------------------
    def item_table(self) -> torch.Tensor:
        """(N + 1, d) representation of every item: adaptor(text) (+ ID embedding)."""
        table = self.adaptor(self.text)
        return table + self.id_embedding.weight if self.id_embedding is not None else table

    def encode(self, inputs: torch.Tensor, items: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d) item vectors of the items (B, L) -> (B, L, d) outputs, or (B, d) at ``last``."""
        positions = torch.arange(items.shape[1], device=items.device)
        hidden = self.dropout(self.norm(inputs + self.position_embedding(positions)))
        return self.encoder(hidden, causal_mask(items), query_index=last)

    def loss(self, batch: Batch) -> torch.Tensor:
        table = self.item_table()
        hidden = self.encode(table[batch.items], batch.items)  # (B, L, d)
        has_target = batch.targets > 0
        logits = F.normalize(hidden[has_target], dim=-1) @ F.normalize(table, dim=-1).T / self.config.temperature
        return F.cross_entropy(logits, batch.targets[has_target])

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine scoring: the normalised sequence and the normalised item table (once per pass)."""
        table = self.once_per_pass("item_table", self.item_table)
        normalised = self.once_per_pass("normalised_item_table", lambda: F.normalize(table, dim=-1))
        hidden = self.encode(table[batch.items], batch.items, last=batch.lengths - 1)  # (B, d)
        return F.normalize(hidden, dim=-1), normalised

    def score(self, batch: Batch) -> torch.Tensor:
        hidden, items = self.query_and_items(batch)
        return hidden @ items.T

    # --- pre-training on the source domains ------------------------------------------------
    def pretrain_loss(self, batch: Batch) -> torch.Tensor:
        """Sequence-item + lambda * sequence-sequence contrastive loss over every target position."""
        if self.text_word_dropped is None:
            raise ValueError(
                "UniSRec pre-training needs DataSpec.item_text_embeddings_word_dropped (the word-drop view)"
            )
        count = batch.items.numel()
        needed, index = torch.unique(torch.cat([batch.items.flatten(), batch.targets.flatten()]), return_inverse=True)
        vectors = self.adaptor(self.text[needed])  # (U, d): one adaptor pass over the batch's items
        item_index, target_index = index[:count].view_as(batch.items), index[count:].view_as(batch.items)
        inputs = vectors[item_index]  # (B, L, d)
        has_target = batch.targets > 0
        hidden = F.normalize(self.encode(inputs, batch.items)[has_target], dim=-1)  # (T, d)
        positives = F.normalize(vectors[target_index][has_target], dim=-1)  # (T, d)
        augmented = F.normalize(
            self.augmented_outputs(batch, inputs, self.text_word_dropped[needed], item_index), dim=-1
        )
        same_target = same_target_mask(batch.targets[has_target])
        same_row = same_row_mask(target_rows(batch.targets)) if self.config.pretrain_mask_same_sequence else None
        seq_item = contrastive_loss(hidden, positives, self.config.temperature, same_target, same_row)
        seq_seq = contrastive_loss(hidden, augmented, self.config.temperature, same_target, same_row)
        return seq_item + self.config.seq_seq_weight * seq_seq

    def augmented_outputs(
        self, batch: Batch, inputs: torch.Tensor, word_dropped_text: torch.Tensor, item_index: torch.Tensor
    ) -> torch.Tensor:
        """(T, d) outputs of the augmented view of each (prefix, target) sample, drawn once per batch.

        ``inputs`` (B, L, d) are the adaptor vectors of ``batch.items``; ``word_dropped_text`` holds
        the word-dropped text embeddings of the batch's distinct items, indexed by ``item_index``.
        """
        has_target = batch.targets > 0
        keep = (torch.rand(batch.items.shape, device=batch.items.device) >= self.config.item_drop_ratio) & (
            batch.items > 0
        )
        if random.random() < self.config.item_drop_coefficient:  # item drop
            keep[:, 0] = True
            packed, source = drop_items(batch.items, keep)
            packed_inputs = inputs.gather(
                1, source.clamp(min=0)[..., None].expand_as(inputs)
            )  # padding slots: ignored by attention
            hidden = self.encode(packed_inputs, packed)  # (B, L, d)
            rows = torch.arange(batch.size, device=hidden.device)[:, None].expand_as(batch.items)
            return hidden[rows[has_target], last_kept(keep)[has_target]]
        replaced = (~keep & (batch.items > 0))[..., None]  # word drop: these positions read the word-dropped text
        mixed = torch.where(replaced, self.adaptor(word_dropped_text)[item_index], inputs)
        return self.encode(mixed, batch.items)[has_target]


def drop_items(items: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack the kept items of each row to the left.

    Returns the packed (B, L) items (0-padded) and, for each packed slot, the original position
    its item came from (-1 for empty slots).
    """
    keep = keep & (items > 0)
    order = torch.where(keep, 0, 1).argsort(dim=1, stable=True)  # kept positions first, in order
    slot_filled = torch.arange(items.shape[1], device=items.device) < keep.sum(dim=1, keepdim=True)
    packed = torch.where(slot_filled, items.gather(1, order), 0)
    return packed, torch.where(slot_filled, order, -1)


def last_kept(keep: torch.Tensor) -> torch.Tensor:
    """(B, L) bool -> (B, L) long: the packed slot of the last kept item at or before each position."""
    return (keep.long().cumsum(dim=1) - 1).clamp(min=0)

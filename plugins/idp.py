"""IDP: ID-centric pre-training with a cross-domain ID matcher (CDIM).

Specification: the IDP document of the method seeds (``seeds/001_4a0cf4602e270171.txt``), a Chinese
summary of Wu, Xie, Zhang, Zhang, Zhuang, Lin, Kang, Xu, "ID-centric Pre-training for
Recommendation", arXiv 2405.03562 (2024). No official code was released; nothing to check against.

Formulas followed (sim = cosine, tau = ``matcher_temperature``, t = a text embedding of the matcher):

1. Pre-training: e_u = f_seq(s_u | Theta, E, P), f_seq = SASRec (``plugins/sasrec.py``), or BERT4Rec
   (``plugins/bert4rec.py``) with ``sequence_model = "bert4rec"``, on the union of the source
   domains with users and items not aligned (item ids kept apart per domain). L_BPR = mean over the
   predicted positions of -log sigmoid(s_pos - s_neg), s = <transformer output, item ID
   embedding>, one negative per position drawn uniformly from the source items other than the
   positive. SASRec predicts at every target position, BERT4Rec at its cloze (masked) positions.
2. CDIM, text (``simcse_loss``): t_i and t'_i are two dropout passes of the encoder over item i's
   text; l_i^text = -log(e^{sim(t_i, t'_i)/tau} / sum_k e^{sim(t_i, t'_k)/tau}), k over the batch.
3. CDIM, behaviour (``behaviour_loss``): V_s^{v_i} = the k = ``matcher_neighbours`` source items
   of highest cosine to v_i in the pre-trained ID embeddings (``behaviour_neighbours``);
   l_i^behavior = sum_{j in V_s^{v_i}} -log(e^{sim(t_i, t_j)/tau} / (e^{sim(t_i, t_j)/tau} +
   sum_n e^{sim(t_i, t_n)/tau})), n over the batch's other items that are not in V_s^{v_i}.
   The matcher minimises L = sum_i l_i^behavior + l_i^text (``tune_matcher``).
4. Generation (``load_pretrained``, ``generate_id_embeddings``): V_{v_i^T} = TOP([sim(t_i^T,
   t_j^S)]_j, m), m = ``num_similar``; alpha_ij = sim(t_i^T, t_j^S) / sum_{k in V_{v_i^T}}
   sim(t_i^T, t_k^S); e_i^T = sum_{j in V_{v_i^T}} alpha_ij e_j^S (``id_weighting =
   "normalised_cosine"``).
5. Target: e_u^T = f_seq(s_u^T | Theta*, E*^T, P*), everything fine-tuned from the pre-trained
   model and the generated E^T (``idp``, ``idp-bert4rec``), or with Theta unchanged and no training
   at all (``idp-zeroshot``); e_u^T = f_seq^new(s_u^T | theta*, E*^T, P*), a new encoder whose item
   embeddings only start from the generated ones (``transfer = "item_embeddings"``:
   ``idp-newencoder`` with a SASRec, ``idp-bs`` with a BERT4Rec).

Variants, each a registered name: ``idp``, ``idp-zeroshot``, ``idp-newencoder``, ``idp-bs``
(IDP^{B&S} of the universality table on the downstream model: SASRec pre-trained, BERT4Rec
fine-tuned) share one SASRec pre-training run; ``idp-bert4rec`` (IDP^{BERT4Rec} of the universality
table on the pre-training base model) pre-trains and fine-tunes BERT4Rec. ``idp-idt`` is IDP_{ID+t}
of the main table (``text_fusion = "add"``), an inferred reading: the document gives that row of
numbers only and never says how the text joins the ID embedding. It is read as the same table's
UniSRec_{ID+t} does it: each item row (input and scoring alike) is the generated, fine-tuned ID
embedding plus the item's frozen text embedding (``text_encoder``, the matcher's base encoder
before tuning) through one fresh linear adapter (N(0, 0.02) weights, zero bias). UniSRec's own
adaptor is a mixture of experts; one linear map is SASRec_T's choice here, the simplest that fits.
The padding row stays zero and BERT4Rec's mask token stays ID-only. It shares idp's pre-training.

Departures from the document, each with its reason:

- Pre-training loss: the printed BPR formula has terms it does not define for implicit feedback
  (the feedback m_ui, the "bias" y_ui, a difference of two items' ID embeddings with no user side);
  it names BPR, so the standard BPR on the model's output is used.
- The two "contrastive learning" formulas of the form ||t_i - t_j||^2 - sim(t_i, t_j)/tau + m (one
  for the text, one summed over the k neighbours) are not used. Their constant m has no gradient
  and no hinge, so they cannot "keep the similarity above m" as the text says; they have no
  negative term though the text names negatives; and for the text loss the document itself gives
  the InfoNCE form. They are read as paraphrases of InfoNCE, and the behaviour term is l^text's
  InfoNCE with the positive replaced by each of the k neighbours, summed over them as printed.
- l^text is printed as the probability itself (to be maximised); its negative log is minimised.
  Its negatives are printed as t_{v_k}; SimCSE's in-batch negatives (the other items' second
  pass, t'_k) are used, since the document names SimCSE.
- Behaviour negatives ("the other items not in V_s^{v_i}") come from the batch: its other anchors,
  as l^text sums over the batch's N - 1 other items; the neighbours' texts are positives only.
  An anchor with no negative left contributes 0 (-log 1).
- Sums over all items become means over a batch's anchors (mini-batch training; both terms alike,
  so their ratio is the document's).
- V_s^{v_i} uses cosine: the document says "the similarity of the pre-trained embeddings".
- alpha_ij is written in the prose with the ID embeddings e_i^T and e_j^S, but e_i^T is the
  embedding being generated; the TOP(.) and score formulas use the text embeddings, as here.
- alpha_ij edge cases, which the document does not discuss: a negative cosine among the m keeps
  its negative weight (the formula as written; the weights still sum to 1). A row whose m cosines
  sum to zero or less gets uniform weights 1/m: there the formula is undefined or reverses the
  ranking (the best match would weigh least). With a tuned encoder and thousands of source items
  the top m cosines are positive, so neither case is expected on real data; a small positive sum
  of mixed signs gives large weights of both signs, as written. ``id_weighting = "softmax"``
  (softmax of cosine / ``id_softmax_temperature``) is offered as an option.
- Sentence encoder: the document fine-tunes SimCSE (BERT, [CLS] vector); the default here is the
  offline all-MiniLM-L6-v2 with mean pooling (``text_encoder`` and ``text_pooling`` choose others,
  e.g. a SimCSE checkpoint with cls).
- BERT4Rec as the pre-trained model (``idp-bert4rec``): the document says IDP is not tied to
  SASRec but gives no BERT4Rec details. Its pre-training keeps the document's BPR, at the cloze
  positions, the ones a bidirectional model predicts; its mask token (a row of BERT4Rec's item
  table) is transferred with the transformer; generation reads the source items' rows only.
  Under that BPR a BERT4Rec's pre-training on the Instruments stand-in stayed in its first,
  popularity-like phase through 50 epochs, and the model fine-tuned from 10 of them scored every
  user alike (docs/reproduction.md, IDP). ``pretrain_loss = "ce"`` pre-trains with the model's own
  loss instead (BERT4Rec's cloze CE, SASRec's full softmax), a departure offered as an option, not
  the default. With it, 10 pre-training epochs still did not transfer, and 100 did.
- New encoders start with fresh positions (and a fresh mask token in ``idp-bs``): the document's
  P* is trained, and BERT4Rec has one position more than SASRec.
- Target loss: the document does not name L_downstream; ``downstream_loss = "ce"`` (the model's
  own: SASRec's full softmax, BERT4Rec's cloze CE, as their baseline rows) by default, ``"bpr"``
  as in pre-training.
- The padding row of the item table is zero and never trained (RecBole's SASRec and BERT4Rec train
  it as a CE class), so a generated table's row 0 stays zero.
- Not given, chosen here: m = 10, k = 5, tau = 0.05 for both losses (SimCSE's), one matcher epoch
  over the source items, batch 64, AdamW at constant lr 3e-5 (SimCSE's lr, no schedule).
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, StrictBool, model_validator
from torch import nn

from recbench.errors import RecbenchError
from recbench.layers import by_length_groups, contrastive_loss
from recbench.method import (
    Batch,
    ConfigRuleError,
    DataSpec,
    Method,
    StrictNonNegativeInt,
    StrictPositiveFloat,
    StrictPositiveInt,
    TransferConfig,
    with_defaults,
)
from recbench.progress import ProgressDisplay
from recbench.registry import register
from recbench.runs.record import atomic_torch_save
from recbench_plugins.bert4rec import BERT4Rec, BERT4RecConfig
from recbench_plugins.sasrec import SASRec, SASRecConfig

DOWNSTREAM_KEYS = (
    "zero_shot",
    "transfer",
    "new_encoder",
    "downstream_loss",
    "num_similar",
    "id_weighting",
    "id_softmax_temperature",
    "text_fusion",
)
"""IDP's own keys that only matter on the target: reset by ``pretraining_config`` (with the shared
fine-tuning keys of ``recbench.method.FINE_TUNING_KEYS``: epochs, patience, learning rate, ...) so every
variant (and every m of the m search) shares one pre-training run."""
BERT4REC_KEYS = ("mask_ratio", "training_input")
"""BERT4Rec's cloze keys: also reset for a SASRec pre-training, which they do not touch (so idp-bs
shares idp's pre-training run whatever its BERT4Rec settings)."""
CHUNK_SIZE = 1024
"""Query rows per similarity block: memory stays (CHUNK_SIZE, source items) whatever the dataset size."""
MATCHER_PROGRESS = "matcher-progress.pt"  # in the pre-training run's directory while the matcher tunes
MATCHER_SAVE_EVERY = 10  # matcher steps between saves: on CPU a step can take half a minute
MATCHER_GROUP_TEXTS = 32
"""Texts per encoder call while the matcher tunes (:func:`embed_texts`): groups of similar token length."""


def matcher_digest(weights: dict[str, torch.Tensor], settings: str) -> str:
    """A digest of a tuned matcher: its weights (names, dtypes, shapes, bytes) and its settings."""
    digest = hashlib.sha256(settings.encode())
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class IDPConfig(SASRecConfig, BERT4RecConfig, TransferConfig):
    """IDP hyper-parameters: the ID sequence model's (RecBole defaults, hidden 300) plus the matcher's.

    Pre-training epochs, learning rate and batch size: the document gives none and no code was
    released, so they keep the shared ``TransferConfig`` defaults (UniSRec's official 300 / 1e-3 / 8192).
    """

    sequence_model: Literal["sasrec", "bert4rec"] = "sasrec"
    """The ID-based sequence model pre-trained on the sources (and, with transfer = full, fine-tuned
    on the target): sasrec (IDP) or bert4rec (IDP^{BERT4Rec})."""
    transfer: Literal["full", "item_embeddings"] = "full"
    """What the target takes from pre-training: full (transformer, positions, generated item
    embeddings) or item_embeddings (a fresh new_encoder whose item embeddings only are generated)."""
    new_encoder: Literal["sasrec", "bert4rec"] = "sasrec"
    """With transfer = item_embeddings: the fresh sequence model trained on the target around the
    generated item embeddings: sasrec or bert4rec (IDP^{B&S} when SASRec was pre-trained)."""
    zero_shot: StrictBool = False
    """Score the target with the transferred model as it is (requires epochs = 0)."""
    pretrain_loss: Literal["bpr", "ce"] = "bpr"
    """Source pre-training loss: bpr (the document's, one uniform negative per predicted position) or
    ce (the model's own: SASRec's full softmax, BERT4Rec's cloze). A BERT4Rec pre-trained for 10
    epochs with either transferred badly; with ce for 100 epochs it transferred (docs/reproduction.md,
    IDP)."""
    downstream_loss: Literal["ce", "bpr"] = "ce"
    """Target training loss: ce (the model's own: SASRec's full softmax, BERT4Rec's cloze) or bpr
    (as pre-training)."""
    text_fusion: Literal["none", "add"] = "none"
    """none (IDP) or add (IDP_{ID+t}, an inferred reading): every item row is its ID embedding plus its
    frozen text embedding through a fresh linear adapter, in the input and in the scores alike."""
    num_similar: StrictPositiveInt = 10
    """m: source items whose ID embeddings make up each target item's generated embedding."""
    id_weighting: Literal["normalised_cosine", "softmax"] = "normalised_cosine"
    """Weights of the m source ID embeddings: normalised_cosine (the document's alpha_ij, each
    cosine over the sum of the m cosines) or softmax (of cosine / id_softmax_temperature)."""
    id_softmax_temperature: StrictPositiveFloat = 0.05
    """Temperature of id_weighting = softmax (at the default matcher_temperature, 0.05, the weights
    are the tuned matcher's own retrieval distribution over the m)."""
    matcher_epochs: StrictNonNegativeInt = 1
    """Epochs of matcher fine-tuning over the source items (0: the off-the-shelf encoder)."""
    matcher_batch_size: Annotated[int, Field(strict=True, ge=2)] = 64  # a batch of 1 has no in-batch negative
    """Source items per matcher step (the in-batch negatives)."""
    matcher_learning_rate: StrictPositiveFloat = 3e-5
    """AdamW learning rate of the matcher (SimCSE's range 1e-5..5e-5)."""
    matcher_temperature: StrictPositiveFloat = 0.05
    """tau of both contrastive losses of the matcher (SimCSE: 0.05)."""
    matcher_neighbours: StrictPositiveInt = 5
    """k: nearest source items by ID-embedding cosine that are behaviour positives of an item."""

    @property
    def built_model(self) -> Literal["sasrec", "bert4rec"]:
        """The sequence model a model of this config is: the pre-trained one, or the new encoder."""
        return self.sequence_model if self.transfer == "full" else self.new_encoder

    @model_validator(mode="after")
    def _zero_shot_trains_nothing(self) -> IDPConfig:
        if self.zero_shot and self.epochs != 0:
            message = "zero-shot IDP (zero_shot = true) trains nothing on the target, so epochs must be 0"
            raise ConfigRuleError("epochs", self.epochs, message)
        return self

    @model_validator(mode="after")
    def _zero_shot_has_no_untrained_adapter(self) -> IDPConfig:
        if self.zero_shot and self.text_fusion != "none":
            message = "zero-shot IDP trains nothing, so a text adapter (text_fusion = add) would stay random"
            raise ConfigRuleError("text_fusion", self.text_fusion, message)
        return self

    @model_validator(mode="after")
    def _new_encoder_needs_a_fresh_model(self) -> IDPConfig:
        if self.transfer == "full" and self.new_encoder != "sasrec":
            message = "the new encoder is only built with transfer = item_embeddings (full keeps the pre-trained model)"
            raise ConfigRuleError("new_encoder", self.new_encoder, message)
        return self

    @model_validator(mode="after")
    def _some_mask_is_predicted(self) -> IDPConfig:
        # Overrides BERT4Rec's rule of the same name: a config that builds no BERT4Rec has no cloze.
        if "bert4rec" in (self.sequence_model, self.built_model):
            return BERT4RecConfig._some_mask_is_predicted(self)
        return self


# --- pure functions: losses, neighbours, embedding generation ------------------------------
def simcse_loss(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """Unsupervised SimCSE: (B, t) two dropout views of the same texts; view 2 of text i is its positive,
    the other rows its negatives, logits cosine / temperature."""
    return contrastive_loss(F.normalize(first, dim=-1), F.normalize(second, dim=-1), temperature)


def behaviour_loss(
    anchors: torch.Tensor,
    neighbours: torch.Tensor,
    anchor_items: torch.Tensor,
    neighbour_items: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """The document's behaviour term, summed over each anchor's k neighbours and averaged over anchors.

    ``anchors`` (B, t) texts of the batch's items ``anchor_items`` (B,); ``neighbours`` (B, k, t)
    texts of their k pre-trained-ID neighbours ``neighbour_items`` (B, k). With s = cosine / tau,
    anchor i contributes sum_j -log(e^{s(i, j)} / (e^{s(i, j)} + sum_n e^{s(i, n)})) over its
    neighbours j, where n runs over the other anchors of the batch that are not among i's own
    neighbours (the document's negatives: items outside V_s^{v_i}).
    """
    unit_anchors = F.normalize(anchors, dim=-1)
    positive = torch.einsum("bt,bkt->bk", unit_anchors, F.normalize(neighbours, dim=-1)) / temperature  # (B, k)
    negative = unit_anchors @ unit_anchors.T / temperature  # (B, B): anchor i against anchor n
    is_neighbour = (neighbour_items[:, :, None] == anchor_items[None, None, :]).any(dim=1)  # (B, B)
    itself = torch.eye(len(anchors), dtype=torch.bool, device=anchors.device)
    negative = negative.masked_fill(is_neighbour | itself, float("-inf"))
    batch, k = positive.shape
    # Column 0 is the positive; a masked negative is -inf, so it adds nothing to the denominator.
    logits = torch.cat([positive[:, :, None], negative[:, None, :].expand(batch, k, batch)], dim=2)  # (B, k, 1 + B)
    per_pair = F.cross_entropy(
        logits.reshape(batch * k, 1 + batch),
        torch.zeros(batch * k, dtype=torch.long, device=anchors.device),
        reduction="none",
    )
    return per_pair.reshape(batch, k).sum(dim=1).mean()


def behaviour_neighbours(id_embeddings: torch.Tensor, k: int, chunk_size: int = CHUNK_SIZE) -> torch.Tensor:
    """(S, d) ID embeddings -> (S, k) row indices of each row's k most cosine-similar other rows."""
    keys = F.normalize(id_embeddings, dim=1)
    blocks = []
    for start in range(0, len(keys), chunk_size):
        similarity = keys[start : start + chunk_size] @ keys.T  # (c, S)
        rows = torch.arange(len(similarity), device=keys.device)
        similarity[rows, start + rows] = float("-inf")  # an item is not its own neighbour
        blocks.append(similarity.topk(k, dim=1).indices)
    return torch.cat(blocks)


def generation_weights(similarities: torch.Tensor, weighting: str, softmax_temperature: float = 0.05) -> torch.Tensor:
    """(c, m) cosines of each target item to its m chosen source items -> (c, m) weights, rows summing to 1.

    ``normalised_cosine`` is the document's alpha_ij = cos_ij / sum_k cos_ik over the m sources,
    applied as written: a negative cosine among the m gets a negative weight (the row stays an
    affine combination summing to 1). Where the m cosines sum to zero or less the formula is
    undefined (zero) or reverses the ranking (a negative sum makes the best match weigh least),
    so such a row gets the uniform weights 1 / m instead, which is also what the formula gives
    when the m cosines are equal and positive: the text prefers none of them. ``softmax`` is
    softmax(cos / softmax_temperature) over the m.
    """
    if weighting == "softmax":
        return torch.softmax(similarities / softmax_temperature, dim=1)
    if weighting != "normalised_cosine":
        raise ValueError(f"unknown id_weighting '{weighting}'; expected normalised_cosine or softmax")
    totals = similarities.sum(dim=1, keepdim=True)  # (c, 1)
    usable = totals > 0
    uniform = torch.full_like(similarities, 1.0 / max(similarities.shape[1], 1))
    return torch.where(usable, similarities / torch.where(usable, totals, torch.ones_like(totals)), uniform)


def generate_id_embeddings(
    target_text: torch.Tensor,
    source_text: torch.Tensor,
    source_ids: torch.Tensor,
    m: int,
    weighting: str = "normalised_cosine",
    softmax_temperature: float = 0.05,
    chunk_size: int = CHUNK_SIZE,
) -> torch.Tensor:
    """ID embeddings of target items from the ID embeddings of their m most text-similar source items.

    ``target_text`` (N, t), ``source_text`` (S, t), ``source_ids`` (S, d) -> (N, d): row n is
    sum_j w_nj source_ids[j] over the m sources j of highest cosine(target_text[n], source_text[j])
    (all S when S < m), the weights w from :func:`generation_weights` (see there for negative
    cosines and sums of cosines that are not positive).
    """
    m = min(m, len(source_text))
    keys = F.normalize(source_text, dim=1)
    blocks = []
    for start in range(0, len(target_text), chunk_size):
        similarity = F.normalize(target_text[start : start + chunk_size], dim=1) @ keys.T  # (c, S)
        top, index = similarity.topk(m, dim=1)  # (c, m)
        weights = generation_weights(top, weighting, softmax_temperature)
        blocks.append(torch.einsum("cm,cmd->cd", weights, source_ids[index]))  # (c, d)
    return torch.cat(blocks) if blocks else source_ids.new_zeros(0, source_ids.shape[1])


def sample_negatives(positives: torch.Tensor, num_items: int) -> torch.Tensor:
    """(T,) item ids in 1..N -> (T,) ids drawn uniformly from 1..N without the positive."""
    offset = torch.randint(1, num_items, positives.shape, device=positives.device)
    return (positives - 1 + offset) % num_items + 1


def text_tokenizer(encoder: Any) -> Any:
    """The encoder's tokenising callable: ``preprocess`` on newer sentence-transformers, ``tokenize`` before."""
    return getattr(encoder, "preprocess", None) or encoder.tokenize


def embed_texts(encoder: Any, texts: list[str]) -> torch.Tensor:
    """(len(texts), t) sentence embeddings with gradients (the encoder's mode decides dropout).

    The texts are tokenised once and encoded in groups of ``MATCHER_GROUP_TEXTS`` of similar token
    length, each group cut to its own longest text. Padding is masked in the attention and the
    pooling, so the embeddings are those of one call over all texts (dropout draws aside), but time and
    activation memory follow each text's own length: in one call a single 256-token text pads every
    other text of the step to 256 tokens (on the Instruments stand-in, median 22 tokens, such a step
    of about 450 texts took over 20 GB)."""
    features = text_tokenizer(encoder)(texts)  # padded on the right to the longest text
    lengths = features["attention_mask"].sum(dim=1)

    def encode_group(group: torch.Tensor, width: int) -> torch.Tensor:
        part = {
            key: value[group, :width].to(encoder.device) if isinstance(value, torch.Tensor) else value
            for key, value in features.items()
        }
        return encoder(part)["sentence_embedding"]

    return by_length_groups(lengths, encode_group, groups=-(-len(texts) // MATCHER_GROUP_TEXTS), min_rows=1)


@register(
    "idp",
    variants={
        "idp-zeroshot": {"zero_shot": True, "epochs": 0},
        "idp-newencoder": {"transfer": "item_embeddings"},
        "idp-bert4rec": {"sequence_model": "bert4rec"},
        "idp-bs": {"transfer": "item_embeddings", "new_encoder": "bert4rec"},
        "idp-idt": {"text_fusion": "add"},
    },
)
class IDP(Method):
    """IDP: an ID sequence model pre-trained on sources; target ID embeddings generated by a text-based ID matcher.

    ``IDP(config, spec)`` builds an :class:`IDPSASRec` or an :class:`IDPBERT4Rec`, whichever
    ``config.built_model`` names: one registered method covers both, so the pre-training model
    (``sequence_model``) and the target model (a new encoder in idp-bs) may differ while every
    variant shares one pre-training run. This class holds what IDP adds to either model.
    """

    Config = IDPConfig
    supports_pretraining = True
    needs_raw_text = True
    needs_text = True  # the frozen text features of text_fusion = add (see needs_text_for)
    causal = True  # BERT4Rec's scoring also cuts each history at its length (it appends the mask there)

    def __new__(cls, *args: Any, **kwargs: Any) -> IDP:
        if cls is IDP:
            config = args[0] if args else kwargs["config"]
            cls = {"sasrec": IDPSASRec, "bert4rec": IDPBERT4Rec}[config.built_model]
        return super().__new__(cls)

    def __init__(self, config: IDPConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        # CE over the padding column would train the padding row as a class; keep it at zero instead.
        self.item_embedding.weight.register_hook(
            lambda grad: grad.index_fill(0, grad.new_zeros(1, dtype=torch.long), 0.0)
        )
        self.text_adapter: nn.Linear | None = None
        if config.text_fusion == "add":
            text = spec.item_text_embeddings
            if text is None:
                raise RecbenchError("IDP_{ID+t} (text_fusion = add) needs DataSpec.item_text_embeddings")
            self.register_buffer("item_text", text.float(), persistent=False)  # (N + 1, t), row 0 zero
            self.text_adapter = nn.Linear(text.shape[1], config.hidden_size)
            nn.init.normal_(self.text_adapter.weight, std=config.initializer_range)  # RecBole's Linear init
            nn.init.zeros_(self.text_adapter.bias)

    def item_table(self) -> torch.Tensor:
        """The sequence model's ID table, plus (text_fusion = add) each item's adapted text; the padding
        row and BERT4Rec's mask token stay ID-only."""
        table = super().item_table()  # SASRec's or BERT4Rec's (the next class in the MRO)
        if self.text_adapter is None:
            return table
        text = self.text_adapter(self.item_text)  # (N + 1, d)
        text = text * (torch.arange(len(text), device=text.device) > 0)[:, None].to(text.dtype)
        return table + F.pad(text, (0, 0, 0, len(table) - len(text)))

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """Rows of :meth:`item_table` (with text_fusion = add, ID + adapted text; else the ID table's lookup)."""
        if self.text_adapter is None:
            return super().embed_items(items)  # SASRec's or BERT4Rec's
        return F.embedding(items, self.item_table(), padding_idx=0)

    @classmethod
    def needs_text_for(cls, config: IDPConfig) -> bool:  # type: ignore[override]
        """Only IDP_{ID+t} reads text embeddings; the other variants need none encoded."""
        return config.text_fusion == "add"

    @classmethod
    def pretraining_config(cls, config: IDPConfig) -> IDPConfig:
        """Every variant and every m pre-trains the same model: target-only keys take their defaults."""
        reset = DOWNSTREAM_KEYS + (BERT4REC_KEYS if config.sequence_model == "sasrec" else ())
        return super().pretraining_config(with_defaults(config, reset))

    def encoder_spec(self) -> Any:
        from recbench.data.encode import EncoderSpec

        return EncoderSpec(
            self.config.text_encoder,
            self.config.text_pooling,
            self.config.text_max_tokens,
            precision=self.config.text_precision,
        )

    def item_rows(self, table: torch.Tensor) -> torch.Tensor:
        """The rows of an item table that are items 1..N of this model's data (no padding, no mask token)."""
        return table[1 : self.spec.num_items + 1]

    # --- losses ---------------------------------------------------------------------------
    @abstractmethod
    def predicted_positions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, d) outputs where the model predicts an item in its training task, and the (T,) items there
        (:class:`IDPSASRec`: every target position; :class:`IDPBERT4Rec`: the masked positions)."""

    def bpr_loss(self, batch: Batch) -> torch.Tensor:
        """BPR with one uniform negative per predicted position: mean of -log sigmoid(s_pos - s_neg)."""
        hidden, positives = self.predicted_positions(batch)  # (T, d), (T,)
        if len(positives) == 0:  # a cloze batch with nothing masked: no signal, graph kept connected
            return hidden.sum() * 0.0
        negatives = sample_negatives(positives, self.spec.num_items)
        table = self.item_table()
        margin = (hidden * (table[positives] - table[negatives])).sum(-1)  # (T,)
        return -F.logsigmoid(margin).mean()

    def named_loss(self, name: Literal["bpr", "ce"], batch: Batch) -> torch.Tensor:
        """BPR (:meth:`bpr_loss`), or ce: the sequence model's own loss (SASRec's or BERT4Rec's)."""
        return self.bpr_loss(batch) if name == "bpr" else super().loss(batch)

    def pretrain_loss(self, batch: Batch) -> torch.Tensor:
        return self.named_loss(self.config.pretrain_loss, batch)

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.named_loss(self.config.downstream_loss, batch)

    # --- cross-domain ID matcher (pre-training model only) -------------------------------
    def finish_pretraining(self, show_progress: bool = False, work_dir: Path | None = None) -> None:
        """Fine-tune the matcher on the source texts, then store it and every source item's tuned text embedding.

        With ``work_dir``, the tuning saves its progress there every ``MATCHER_SAVE_EVERY`` steps and
        an interrupted run continues from the last save (on CPU, the same result as an uninterrupted one:
        the saved generator state is the CPU one)."""
        from recbench.data.encode import encode_texts, load_encoder

        texts = self.spec.item_texts
        if texts is None:
            raise RecbenchError("IDP's matcher needs the source items' texts (DataSpec.item_texts)")
        device = self.item_embedding.weight.device
        encoder = load_encoder(self.encoder_spec()).to(device)
        with_text = torch.tensor(
            [i for i, text in enumerate(texts) if text.strip()], dtype=torch.long
        )  # 0-based item rows
        if self.config.matcher_epochs > 0 and len(with_text) > 1:
            ids = self.item_rows(self.item_embedding.weight.detach())[with_text]  # (S', d)
            neighbours = with_text[
                behaviour_neighbours(ids, min(self.config.matcher_neighbours, len(with_text) - 1)).cpu()
            ]  # (S', k)
            progress_file = work_dir / MATCHER_PROGRESS if work_dir is not None else None
            self.tune_matcher(encoder, texts, with_text, neighbours, show_progress, progress_file)
        encoder.eval()
        vectors = torch.from_numpy(
            encode_texts(texts, encoder, show_progress=show_progress, precision=self.config.text_precision)
        )
        source_text = torch.zeros(len(texts) + 1, vectors.shape[1], device=device)  # (S + 1, t), row 0 padding
        source_text[1 + with_text] = vectors[with_text].to(device)  # items without text stay zero: never matched
        self.matcher = encoder
        self.register_buffer("source_text", source_text)

    def tune_matcher(
        self,
        encoder: Any,
        texts: list[str],
        items: torch.Tensor,
        neighbours: torch.Tensor,
        show_progress: bool,
        progress_file: Path | None = None,
    ) -> None:
        """SimCSE + behaviour contrastive fine-tuning of ``encoder`` over ``items`` (S',), neighbours (S', k).

        With ``progress_file``, the encoder, the optimizer, the epoch's item order, the position in it
        and the random generator are saved there every ``MATCHER_SAVE_EVERY`` steps, resumed from if
        the file exists, and removed at the end (tensors only: read with ``weights_only=True``)."""
        tau, size = self.config.matcher_temperature, self.config.matcher_batch_size
        optimizer = torch.optim.AdamW(encoder.parameters(), lr=self.config.matcher_learning_rate)
        steps = -(-len(items) // size)
        first_epoch, first_start, saved_order = 0, 0, None
        if progress_file is not None and progress_file.exists():
            saved = torch.load(progress_file, map_location="cpu", weights_only=True)
            encoder.load_state_dict(saved["encoder"])
            optimizer.load_state_dict(saved["optimizer"])
            torch.set_rng_state(saved["rng"])
            first_epoch, first_start, saved_order = int(saved["epoch"]), int(saved["start"]), saved["order"]
        encoder.train()  # dropout on: it makes the two SimCSE views differ
        with ProgressDisplay("count", enabled=show_progress) as progress:
            task = progress.add_task("tune ID matcher", total=self.config.matcher_epochs * steps, status="")
            progress.update(task, completed=first_epoch * steps + first_start // size)
            for epoch in range(first_epoch, self.config.matcher_epochs):
                order = saved_order if epoch == first_epoch and saved_order is not None else torch.randperm(len(items))
                for start in range(first_start if epoch == first_epoch else 0, len(items), size):
                    if progress_file is not None and start > 0 and (start // size) % MATCHER_SAVE_EVERY == 0:
                        state = {"encoder": encoder.state_dict(), "optimizer": optimizer.state_dict()}
                        state |= {"rng": torch.get_rng_state(), "epoch": epoch, "start": start, "order": order}
                        atomic_torch_save(state, progress_file)
                    rows = order[start : start + size]
                    if len(rows) < 2:  # no in-batch negative: nothing to contrast
                        progress.advance(task)
                        continue
                    anchors = items[rows]  # (B,) 0-based item rows
                    anchor_neighbours = neighbours[rows]  # (B, k) 0-based item rows
                    anchor_texts = [texts[i] for i in anchors.tolist()]
                    # A neighbour shared by several anchors is encoded once per step. One call encodes
                    # both dropout views of the anchors and the neighbours, in groups of similar length.
                    distinct, position = torch.unique(anchor_neighbours, return_inverse=True)
                    embedded = embed_texts(encoder, anchor_texts * 2 + [texts[i] for i in distinct.tolist()])
                    first, second, encoded = embedded.split([len(rows), len(rows), len(distinct)])  # (B|B|U, t)
                    # Gathered by a one-hot product: the backward of fancy indexing with repeated rows
                    # accumulates in a thread-dependent order on CPU, which breaks bit-identical resumes.
                    pick = F.one_hot(position.to(encoded.device), len(distinct)).to(encoded.dtype)  # (B, k, U)
                    behaviour = pick @ encoded  # (B, k, t)
                    loss = simcse_loss(first, second, tau) + behaviour_loss(
                        first, behaviour, anchors.to(first.device), anchor_neighbours.to(first.device), tau
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    progress.update(task, advance=1, status=f"epoch {epoch} loss {loss.item():.4f}")
        if progress_file is not None:
            progress_file.unlink(missing_ok=True)

    # --- tuning stage: the target model ---------------------------------------------------
    def load_pretrained(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Generate the target's item ID embeddings with the tuned matcher and load what ``transfer`` says.

        Returns the names of this model's weights that keep their fresh initialisation.
        """
        from recbench.data.encode import encode_texts_cached, load_encoder

        if "source_text" not in state:
            raise RecbenchError("pre-trained IDP state has no matcher: it was saved before finish_pretraining")
        if self.spec.item_texts is None:
            raise RecbenchError(
                "IDP needs the target items' texts (DataSpec.item_texts) to generate their ID embeddings"
            )
        spec = self.encoder_spec()
        matcher = {key.removeprefix("matcher."): value for key, value in state.items() if key.startswith("matcher.")}
        encoder = load_encoder(spec)
        encoder.load_state_dict(matcher)
        encoder.eval()
        # Every variant and m fine-tuned from one checkpoint encodes the same texts with the same matcher.
        identity = matcher_digest(matcher, f"{spec.name}|{spec.pooling}|{spec.max_tokens}")
        target_text = torch.from_numpy(
            encode_texts_cached(self.spec.item_texts, encoder, identity, self.config.text_precision)
        )  # (N, t)
        source_text = state["source_text"][1:].float().cpu()  # (S, t)
        pretrained_table = state["item_embedding.weight"].float().cpu()
        source_ids = pretrained_table[1 : len(source_text) + 1]  # (S, d): items only, never a mask token
        matchable = source_text.abs().sum(dim=1) > 0  # source items without text are never matched
        generated = generate_id_embeddings(
            target_text,
            source_text[matchable],
            source_ids[matchable],
            self.config.num_similar,
            self.config.id_weighting,
            self.config.id_softmax_temperature,
        )
        own = self.state_dict()
        loaded = {"item_embedding.weight"}
        if self.config.transfer == "full":
            # item_embedding is skipped even when the sizes coincide: source rows are other items.
            transferable = {
                k: v for k, v in state.items() if k in own and k != "item_embedding.weight" and own[k].shape == v.shape
            }
            self.load_state_dict(transferable, strict=False)
            loaded |= set(transferable)
            self.load_token_rows(pretrained_table)
        with torch.no_grad():
            self.item_rows(self.item_embedding.weight).copy_(generated)
            self.item_embedding.weight[0].zero_()
        return sorted(set(own) - loaded)

    def load_token_rows(self, pretrained_table: torch.Tensor) -> None:
        """Copy the rows of the item table that are model tokens, not items, from a pre-trained
        table of the same model (SASRec has none besides padding)."""


class IDPSASRec(IDP, SASRec):
    """IDP on SASRec: causal self-attention; every position predicts the next item."""

    def predicted_positions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encode(batch.items)  # (B, L, d)
        has_target = batch.targets > 0
        return hidden[has_target], batch.targets[has_target]


class IDPBERT4Rec(IDP, BERT4Rec):
    """IDP on BERT4Rec: bidirectional self-attention; the masked (cloze) positions predict their items."""

    def predicted_positions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        sequences = self.training_sequences(batch)  # (R, W)
        inputs, predicted = self.mask_items(sequences)
        hidden = self.encode(inputs)  # (R, W, d)
        return hidden[predicted], sequences[predicted]

    def load_token_rows(self, pretrained_table: torch.Tensor) -> None:
        """The mask token (the last row) is a model parameter learnt in pre-training, not an item."""
        with torch.no_grad():
            self.item_embedding.weight[self.mask_token] = pretrained_table[-1].to(self.item_embedding.weight)

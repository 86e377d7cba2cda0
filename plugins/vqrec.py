"""VQ-Rec: vector-quantised item codes from text, code embeddings, a self-attention encoder.

Paper: Hou, He, McAuley, Zhao, Wen, "Learning Vector-Quantized Item Representation for
Transferable Sequential Recommenders", WWW 2023 (arXiv 2210.12316).
Checked against: RUCAIBox/VQ-Rec @2981845 (``vqrec.py`` with the March-2023 fixes 062dae0 and
7ce91ce, ``trainer.py``, ``pq.py``, ``data/dataset.py``, ``props/VQRec.yaml``).

- Item codes: an OPQ rotation + product quantiser (faiss ``OPQ{M},IVF1,PQ{M}x{bits}``, inner
  product metric) trained on the text embeddings of the items that occur in the training part
  (the official "strict" index), then every item (cold ones too) is encoded. Codes are shifted
  by one and offset per sub-space, so the padding item has the all-zero code.
- Imported codes (``item_codes = "imported:NAME"``): instead of quantising recbench's own text
  embeddings, the model takes the codes of an official faiss index, imported once with ``recbench
  encode DATASET --import-codes INDEX --unisrec-dir DIR --codes-name NAME``
  (:mod:`recbench.data.codes`: row order, checks, cache). With the items' released vectors
  (``DIR/X.feat1CLS`` or ``--features FILE``) every item is coded by encoding its vector with the
  index, as the official fine-tuning does; without, the index's stored rows code the strict items
  only. They reach the model as
  ``DataSpec.item_codes`` (raw codes in [0, K) and a has-code mask), offset exactly as text codes;
  ``code_dim`` and ``code_cap`` must equal the index's M and 2**bits (a clear error otherwise). The run's
  identity holds the codes' content digest, so codes imported again with other content make a new
  run. Items without a code (stored rows only; Scientific: 12 items that occur only in valid/test,
  which the official code codes by encoding their BERT features with the index) are coded by
  ``missing_codes``:
  ``nearest`` (default) copies the code of the coded item whose text embedding (under this config's
  ``text_encoder``) has the highest cosine with the item's own, the closest stand-in for encoding the
  item's own text with the official quantiser; the two items then have the same representation and
  so tie exactly on every score (the evaluator ranks ties pessimistically; the official codes already
  give 242 of Scientific's 4,373 coded items a full code shared with another). ``random`` draws each
  code uniformly, seeded by ``(pq_seed, item id)``: no ties, but a representation unrelated to the
  item. The run's ``config.json`` records how many items were coded this way (``item_codes``).
  Pre-training codes the source items from their text (``pretraining_config``; imported codes belong
  to one dataset), as the official code gives each domain its own quantiser: the code-embedding
  table transfers by position. ``text_encoder = "bert-base-uncased"``, ``text_pooling = "cls"`` make
  those text codes (and the ``nearest`` similarities) come from the official features' encoder.
- Item representation: mean of the item's ``code_dim`` code embeddings; sequence: + position
  embedding -> LayerNorm -> dropout -> RecBole transformer; the output at the last position.
- Fine-tuning: CE over cosine / 0.07 against all N + 1 item rows (the padding row too, as the
  official code); scores are cosines. Schedule (official trainer): epochs < ``reassign_steps``
  train only ``trans_matrix``, each batch using the code table permuted per sub-space by a
  Gumbel-Sinkhorn sample; at ``reassign_steps`` the permuted table is written once into the code
  table (row 0 zeroed) and then everything trains except the position embedding, the transformer
  and ``trans_matrix``. The official trainer applies this freeze whatever the fine-tuning flags,
  so a run without pre-training freezes its (random) transformer too; kept, to be faithful
  (``freeze_encoder = false`` trains them). Measured on Scientific from scratch against the paper's
  "w/o pre-training" 0.1104 / 0.0593 (R@10 / N@10): MiniLM codes, lr 0.003, 3 seeds, ``full``:
  0.1028 / 0.0511 frozen, 0.1089 / 0.0540 trained; the official BERT codes, lr 0.001,
  ``full-random``: 0.0987 ± 0.0027 / 0.0542 ± 0.0009 frozen (3 seeds, -10.6% / -8.6%), 0.1078 ±
  0.0013 / 0.0574 ± 0.0005 trained (3 seeds, -2.4% / -3.2%). So the paper's row matches the
  transformer trained, not the official trainer's freeze (recipe ``vqrec-no-pretraining`` has both
  rows).
- Ties: items that share their whole code get exactly the same score, and RecBole's full sort
  (``torch.topk``) orders them arbitrarily, so compare with the paper under the ``full-random``
  protocol (each metric averaged over the orders of the tied items), not the pessimistic ``full``.
  With the official Scientific codes from scratch (lr 1e-3) 8.6% of the test targets tie:
  R@10 / N@10 0.0975 / 0.0498 pessimistic, 0.0987 / 0.0542 random (frozen, 3 seeds); 0.1066 /
  0.0529 pessimistic, 0.1078 / 0.0574 random (trained, 3 seeds).
- Pre-training: seq-item InfoNCE over all target positions with in-batch negatives, plus one
  semi-synthetic negative per instance (the positive's codes, each replaced with probability
  ``fake_idx_ratio`` by a uniformly random code of its sub-space), in the bug-fixed version
  (no ``fake_item_idx[0, :] = 0``, the negative sum reshaped per row). As in the official code,
  a negative with the same target as the row is not dropped: its logit is set to 0, so it adds
  exp(0) = 1 to the denominator. No seq-seq loss.

Deviations:
- Hard assignment: the official code takes the row-wise argmax of the Sinkhorn matrix (then
  ``ceil``), which after 3 iterations is not injective (measured on a randn 32 x 257 x 257
  ``trans_matrix``: only 79% of the slots of a sub-space keep a distinct embedding), and
  ``ceil`` has zero gradient, so ``trans_matrix`` never receives a gradient there. Here the hard
  assignment is the exact permutation of highest Sinkhorn weight (Hungarian algorithm;
  Sinkhorn's row/column normalisations do not change it) with a straight-through row softmax,
  so it is a permutation and ``trans_matrix`` does learn. ``assignment = "official_argmax"`` runs
  the official rule instead (row-wise argmax then ``ceil``), for comparing with the published rows
  (from scratch on Scientific, seed 2020, the two give the same numbers to 0.0004).
- Scoring during the permutation epochs uses the noise-free permutation, and the table written
  at ``reassign_steps`` is that noise-free permutation (the official code writes a fresh noisy
  sample and evaluates with the last training batch's sample), so the best-valid weights of an
  early epoch re-evaluate identically and the write continues what was validated.
- The schedule phase is a state-dict buffer, so best-weights restore and resume see which table
  the weights belong to. Faiss seeds default to faiss's own (1234), configurable.
- Training uses every prefix of a sequence in one causal pass, as the SASRec plugin, so the
  prefixes of a window share one dropout draw; ``training_input = "samples"`` encodes each
  (prefix, target) sample as its own row, as the official loader (same outputs without dropout; from
  scratch on Scientific, 3 seeds, no better: docs/reproduction.md); ``training_input =
  "shuffled_samples"`` also batches them as the official loader does, one sample a row, shuffled
  across users over the epoch (the Trainer's sample rows), in fine-tuning and pre-training (from
  scratch on Scientific, seed 2020, the same numbers as windows to 0.002). In
  pre-training a batch of windows so holds many samples of one sequence, which a batch of the
  official loader's shuffled samples almost never does: the user's other next items are dropped
  from each anchor's InfoNCE denominator (``pretrain_mask_same_sequence``; the own positive and
  the semi-synthetic negative stay), so its in-batch negatives are, as officially, other users'.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, StrictBool, field_validator
from scipy.optimize import linear_sum_assignment
from torch import nn

from recbench.data.codes import unpack_pq_codes
from recbench.errors import ConfigError
from recbench.layers import (
    TransformerEncoder,
    causal_mask,
    contrastive_logits,
    encode_each_prefix,
    init_recbole_weights,
    recbole_transformer_parameters,
    same_row_mask,
    same_target_mask,
    target_rows,
)
from recbench.method import (
    TEXT_CODES,
    Batch,
    DataSpec,
    ItemCodes,
    ItemCodesConfig,
    Method,
    MethodConfig,
    OfficialParameter,
    OfficialParameterMap,
    Probability,
    StrictNonNegativeInt,
    StrictPositiveFloat,
    StrictPositiveInt,
    TransferConfig,
    TransformerConfig,
)
from recbench.registry import register

# Values of the ``phase`` buffer: which code table the weights belong to.
PLAIN, ASSIGNING, REASSIGNED = 0, 1, 2
# The codes and the schedule state describe the target dataset, never the pre-training one.
DATASET_STATE = ("codes", "phase")


class VQRecConfig(TransferConfig, TransformerConfig, ItemCodesConfig):
    """VQ-Rec hyper-parameters; defaults = the official ``props/VQRec.yaml``."""

    hidden_size: StrictPositiveInt = 300
    """Width of code/position embeddings and transformer layers."""
    learning_rate: StrictPositiveFloat = 1e-3
    """Adam learning rate (RecBole's default; the official README fine-tunes most targets, e.g.
    Scientific, at 0.003)."""
    pretrain_batch_targets: StrictPositiveInt = 8192
    """Pre-training batch size in target positions: 8192, the official ``props/pretrain.yaml``
    ``train_batch_size`` (used by ``ddp_pretrain.py``, the multi-GPU command; each GPU's loss then
    sees its 8192 / world-size share as in-batch negatives). The README's single-GPU command
    overrides it with ``--train_batch_size=2048``. Learning rate 1e-3 (RecBole's default, no file
    sets another) and 300 epochs are the shared defaults."""
    code_dim: StrictPositiveInt = 32
    """Sub-vectors per item (PQ's M): each item is ``code_dim`` discrete codes."""
    code_cap: StrictPositiveInt = 256
    """Centroids per sub-space (a power of two: PQ bits = log2(code_cap))."""
    temperature: StrictPositiveFloat = 0.07
    """Temperature of the cosine logits in the fine-tuning CE and the pre-training InfoNCE."""
    sinkhorn_iter: StrictPositiveInt = 3
    """Alternating row/column normalisations of the Gumbel-Sinkhorn permutation."""
    gumbel_temperature: StrictPositiveFloat = 0.7
    """Temperature of the Gumbel-Sinkhorn logits (the official ``gumbel_sinkhorn`` default)."""
    reassign_steps: StrictNonNegativeInt = 5
    """Fine-tuning epochs that learn only the code-embedding permutation before it is fixed."""
    assignment: Literal["permutation", "official_argmax"] = "permutation"
    """Hard code reassignment: permutation (the best exact permutation, trans_matrix learns) or
    official_argmax (the official code's row-wise argmax then ceil: not injective, no gradient, so
    trans_matrix keeps its random initialisation and the permutation epochs train nothing)."""
    freeze_encoder: StrictBool = True
    """After the permutation epochs, keep the position embedding and transformer fixed, as the
    official trainer always does (from scratch too, so a random transformer); False trains them."""
    fake_idx_ratio: Probability = 0.75
    """Probability of replacing each code of the positive in its semi-synthetic negative."""
    training_input: Literal["window", "samples", "shuffled_samples"] = "window"
    """How training (fine-tuning and pre-training) encodes its (prefix, target) samples: window
    (every prefix of a window in one causal pass, so the prefixes share one dropout draw), samples
    (each prefix its own row with its own draw, as the official RecBole loader; the same outputs
    without dropout; on Scientific about twice the time per epoch) or shuffled_samples (samples,
    and batches of single samples shuffled across users, as that loader builds them)."""
    pretrain_mask_same_sequence: StrictBool = True
    """Pre-training: drop the batch's other samples of an anchor's own sequence (its user's other
    next items) from the InfoNCE denominator, as the official loader's shuffled single samples
    almost never hold them; False keeps them as in-batch negatives."""
    pq_seed: Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)] = 1234  # faiss keeps it in a C int
    """Seed of faiss's OPQ/PQ/coarse k-means (1234 is faiss's default, as the official index used);
    also seeds the ``random`` fallback of imported codes."""
    missing_codes: Literal["nearest", "random"] = "nearest"
    """With item_codes = imported:NAME, the code of an item the import has none for (valid/test-only
    items, when the codes are an index's stored rows; codes imported with the items' vectors cover every
    item): nearest (the code of the coded item with the most similar text; exact ties) or random."""

    @field_validator("code_cap")
    @classmethod
    def _code_cap_is_a_power_of_two(cls, code_cap: int) -> int:
        if code_cap < 2 or code_cap & (code_cap - 1):
            raise ValueError("must be a power of two, at least 2: PQ has 2**bits centroids")
        return code_cap


def train_quantizer(vectors: np.ndarray, code_dim: int, code_cap: int, seed: int):
    """Train the official ``OPQ{M},IVF1,PQ{M}x{bits}`` inner-product index on (n, d) float32 vectors."""
    import faiss  # lazily: only VQ-Rec needs it

    dim = vectors.shape[1]
    bits = code_cap.bit_length() - 1
    index = faiss.index_factory(dim, f"OPQ{code_dim},IVF1,PQ{code_dim}x{bits}", faiss.METRIC_INNER_PRODUCT)
    rotation = faiss.downcast_VectorTransform(index.chain.at(0))
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    # OPQ trains its rotation with its own PQ, 8 bits unless given one: give it the final PQ's size.
    rotation_pq = faiss.ProductQuantizer(dim, code_dim, bits)
    rotation_pq.cp.seed = seed
    rotation.pq = rotation_pq
    ivf.cp.seed = seed
    ivf.pq.cp.seed = seed
    # faiss warns (on stderr, once per k-means: hundreds of lines per OPQ run) below 39 points per
    # centroid; a domain of a few thousand items is always below it. The bound only gates that warning.
    for clustering in (rotation_pq.cp, ivf.pq.cp):
        clustering.min_points_per_centroid = 1
    if len(vectors) <= dim:
        # faiss's OPQ training corrupts memory when there are fewer points than dimensions (seen with
        # faiss-cpu 1.15 on 300 x 384). Repeating the points leaves the k-means and Procrustes
        # objectives' minimisers as they are and only happens on toy data (real domains have n >> d).
        vectors = np.tile(vectors, (dim // len(vectors) + 1, 1))
    index.train(np.ascontiguousarray(vectors, dtype=np.float32))
    rotation.pq = None  # a raw pointer to a Python-owned object: drop it before that object goes
    return index


def encode_codes(index, vectors: np.ndarray, code_dim: int, code_cap: int) -> np.ndarray:
    """(n, d) vectors -> (n, code_dim) int64 codes in [0, code_cap) of a trained index."""
    bits = code_cap.bit_length() - 1
    packed = index.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))  # (n, bytes); IVF1 adds no list id
    # One unpacking for these codes and for codes imported from an index's list: the same bytes.
    return unpack_pq_codes(packed, code_dim, bits)


def offset_codes(raw: torch.Tensor, code_cap: int) -> torch.Tensor:
    """(n, M) raw codes in [0, code_cap) -> rows of the code-embedding table: code c of sub-space k
    becomes ``k * (code_cap + 1) + c + 1`` (row ``k * (code_cap + 1)`` is never used: 0 = padding)."""
    return raw.long() + 1 + torch.arange(raw.shape[1], device=raw.device) * (code_cap + 1)


def item_codes(
    embeddings: torch.Tensor, train_mask: torch.Tensor | None, code_dim: int, code_cap: int, seed: int
) -> torch.Tensor:
    """(N + 1, d) text embeddings -> (N + 1, code_dim) long codes, row 0 (padding) all zeros.

    The quantiser is trained on the items where ``train_mask`` is True (None: all items 1..N)
    and encodes every item. Code c of sub-space k becomes ``k * (code_cap + 1) + c + 1``, the
    index of its row in the code-embedding table.
    """
    num_rows, dim = embeddings.shape
    if dim % code_dim:
        raise ValueError(f"VQ-Rec: text embedding size {dim} is not divisible by code_dim {code_dim}")
    if code_cap < 2 or code_cap & (code_cap - 1):
        raise ValueError(f"VQ-Rec: code_cap {code_cap} must be a power of two (PQ centroids = 2**bits)")
    strict = torch.ones(num_rows, dtype=torch.bool) if train_mask is None else train_mask.bool().clone()
    strict[0] = False
    if int(strict.sum()) < code_cap:
        raise ValueError(
            f"VQ-Rec: {int(strict.sum())} training items are fewer than code_cap {code_cap} centroids per sub-space"
        )
    vectors = embeddings.detach().float().cpu().numpy()
    index = train_quantizer(vectors[strict.numpy()], code_dim, code_cap, seed)
    codes = offset_codes(torch.from_numpy(encode_codes(index, vectors[1:], code_dim, code_cap)), code_cap)
    return torch.cat([torch.zeros(1, code_dim, dtype=torch.long), codes])


def fill_missing_codes(
    imported: ItemCodes, embeddings: torch.Tensor | None, how: str, seed: int, block: int = 1024
) -> torch.Tensor:
    """(N + 1, M) raw codes in [0, K): the imported ones, and a code for every item without one.

    - ``nearest``: the code of the coded item whose text embedding has the highest cosine with the
      item's own (ties: the lowest id). The item then shares its full code, and so its representation
      and every score, with that item: an exact tie (the evaluator ranks ties pessimistically).
    - ``random``: M codes drawn uniformly from [0, K) by a generator seeded with ``(seed, item id)``,
      so an item's code depends on nothing else (not on which other items lack one).

    Row 0 (padding) stays zeros; it is never looked up as a code (it is offset to the padding row).
    """
    codes = imported.codes.clone()
    missing = torch.nonzero(~imported.has_code[1:]).flatten() + 1
    if len(missing) == 0:
        return codes
    if how == "random":
        for item in missing.tolist():
            generator = np.random.default_rng([seed, item])
            codes[item] = torch.from_numpy(generator.integers(imported.num_codes, size=imported.code_dim))
        return codes
    if how != "nearest":
        raise ValueError(f"unknown fallback '{how}' for items without a code: expected nearest or random")
    if embeddings is None:
        raise ValueError("the nearest fallback needs the items' text embeddings")
    coded = torch.nonzero(imported.has_code).flatten()
    if len(coded) == 0:
        raise ValueError(f"item codes '{imported.name}' give no item a code: nothing to copy from")
    unit = F.normalize(embeddings.detach().float().cpu(), dim=1)
    for start in range(0, len(missing), block):  # (block, coded) similarities at a time, not (missing, coded)
        rows = missing[start : start + block]
        nearest = (unit[rows] @ unit[coded].T).argmax(dim=1)  # argmax returns the first of equal maxima
        codes[rows] = imported.codes[coded[nearest]]
    return codes


def semi_synthetic_codes(codes: torch.Tensor, code_cap: int, ratio: float) -> torch.Tensor:
    """(..., M) offset codes -> the same with each code replaced, with probability ``ratio``, by a
    uniformly random code of its sub-space (the semi-synthetic negative)."""
    offsets = torch.arange(codes.shape[-1], device=codes.device) * (code_cap + 1) + 1
    random = torch.randint_like(codes, code_cap) + offsets
    return torch.where(torch.rand(codes.shape, device=codes.device) < ratio, random, codes)


def sinkhorn(log_alpha: torch.Tensor, iterations: int) -> torch.Tensor:
    """(M, K, K) logits -> log of an (approximately) doubly stochastic matrix per sub-space."""
    for _ in range(iterations):
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-1, keepdim=True)  # rows sum to 1
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-2, keepdim=True)  # columns sum to 1
    return log_alpha


def gumbel_sinkhorn(trans: torch.Tensor, iterations: int, temperature: float, noise: bool) -> torch.Tensor:
    """(M, K, K) permutation parameters -> log doubly stochastic matrices (Gumbel noise if ``noise``)."""
    logits = torch.log(torch.exp(trans) + 1e-6)  # the official log(exp(trans) + eps)
    if noise:
        uniform = torch.rand_like(logits)
        logits = logits - torch.log(-torch.log(uniform + 1e-6) + 1e-6)
    return sinkhorn(logits / temperature, iterations)


def hard_permutation(log_soft: torch.Tensor) -> torch.Tensor:
    """(M, K, K) log weights -> (M, K, K) one-hot permutations of maximal total log weight, with a
    straight-through gradient of the row softmax of the soft matrix."""
    weights = log_soft.detach().cpu().numpy()
    hard = torch.zeros_like(log_soft)
    for space, matrix in enumerate(weights):  # M small assignments (M = 32): not a hot loop over items
        rows, columns = linear_sum_assignment(matrix, maximize=True)
        hard[space, torch.from_numpy(rows), torch.from_numpy(columns)] = 1.0
    soft = torch.softmax(log_soft.exp(), dim=-1)  # the official differentiable top-1 softmax
    return hard + (soft - soft.detach())  # exactly the hard matrix forward, the soft gradient backward


def official_argmax_assignment(log_soft: torch.Tensor) -> torch.Tensor:
    """(M, K, K) log weights -> (M, K, K) the official ``code_projection``'s matrix: per row a one at the
    column of the highest softmax weight (``differentiable_topk(., 1)``, then ``torch.ceil``).

    Two rows may pick one column, so the result need not be a permutation, and ``ceil`` passes a zero
    gradient: the graph stays connected (the loss can be backpropagated) but ``trans_matrix`` never moves.
    """
    soft = torch.softmax(log_soft.exp(), dim=-1)
    values, columns = soft.max(dim=-1, keepdim=True)
    return torch.ceil(torch.zeros_like(soft).scatter(-1, columns, values))


@register("vqrec")
class VQRec(Method):
    """VQ-Rec: items as OPQ/PQ codes of their text, code embeddings, causal self-attention."""

    Config = VQRecConfig
    needs_text = True
    supports_pretraining = True

    def __init__(self, config: VQRecConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if config.imported_codes is not None:
            if spec.item_codes is None:
                raise ConfigError(
                    f"vqrec: item_codes = '{config.item_codes}' but no imported codes were given (DataSpec.item_codes)"
                )
            self.check_item_codes(config, spec.item_codes)
            raw = fill_missing_codes(spec.item_codes, spec.item_text_embeddings, config.missing_codes, config.pq_seed)
            codes = torch.cat(
                [torch.zeros(1, config.code_dim, dtype=torch.long), offset_codes(raw[1:], config.code_cap)]
            )
        else:
            codes = item_codes(
                spec.item_text_embeddings, spec.train_item_mask, config.code_dim, config.code_cap, config.pq_seed
            )
        self.register_buffer("codes", codes)  # (N + 1, M): persistent, so a saved run re-evaluates identically
        self.register_buffer("phase", torch.tensor(PLAIN))
        slots = config.code_cap + 1
        self.code_embedding = nn.Embedding(config.code_dim * slots, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(spec.max_seq_length, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = TransformerEncoder.from_config(config, config.hidden_size)
        self.trans_matrix = nn.Parameter(torch.randn(config.code_dim, slots, slots))
        self.apply(lambda module: init_recbole_weights(module, config.initializer_range))

    @property
    def trains_on_samples(self) -> bool:
        return self.config.training_input == "shuffled_samples"

    @classmethod
    def check_item_codes(cls, config: MethodConfig, codes: ItemCodes) -> None:
        """Imported codes must have ``code_dim`` codes per item, each of ``code_cap`` values."""
        assert isinstance(config, VQRecConfig)
        if config.code_dim != codes.code_dim:
            raise ConfigError(
                f"vqrec: code_dim = {config.code_dim} but item codes '{codes.name}' have {codes.code_dim} codes per "
                f"item (the index's M); set code_dim = {codes.code_dim}"
            )
        if config.code_cap != codes.num_codes:
            raise ConfigError(
                f"vqrec: code_cap = {config.code_cap} but item codes '{codes.name}' take {codes.num_codes} values "
                f"(2**bits of the index); set code_cap = {codes.num_codes}"
            )

    @classmethod
    def pretraining_config(cls, config: MethodConfig) -> MethodConfig:
        """Pre-training codes the source items from their text: imported codes belong to one dataset."""
        assert isinstance(config, VQRecConfig)
        if config.imported_codes is not None:
            # As the official code: each domain its own quantiser; the code table transfers by position. The
            # fallback is reset too, so this pre-training is the very run a text-codes config shares.
            fallback = VQRecConfig.model_fields["missing_codes"].default
            config = config.model_copy(update={"item_codes": TEXT_CODES, "missing_codes": fallback})
        return super().pretraining_config(config)

    # --- code embeddings --------------------------------------------------------------------
    def permuted_table(self, noise: bool) -> torch.Tensor:
        """(M * (K + 1), d) code table with each sub-space's rows permuted by the assignment."""
        config = self.config
        log_soft = gumbel_sinkhorn(self.trans_matrix, config.sinkhorn_iter, config.gumbel_temperature, noise)
        raw = self.code_embedding.weight.view(config.code_dim, config.code_cap + 1, -1)  # (M, K + 1, d)
        assign = official_argmax_assignment if config.assignment == "official_argmax" else hard_permutation
        return torch.bmm(assign(log_soft), raw).reshape(-1, config.hidden_size)

    def code_table(self) -> torch.Tensor:
        """The code table of the current phase: permuted (a Gumbel sample when training) while assigning."""
        table = self.permuted_table(noise=self.training) if int(self.phase) == ASSIGNING else self.code_embedding.weight
        # Row 0 gets no gradient, as the official padding_idx=0 lookups.
        return torch.cat([table[:1].detach(), table[1:]])

    def embed(self, codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(..., M) codes -> (..., d) item representations: the mean of the code embeddings."""
        flat = F.embedding_bag(codes.reshape(-1, codes.shape[-1]), table, mode="mean")  # no (.., M, d) tensor
        return flat.view(*codes.shape[:-1], table.shape[1])

    def encode(self, items: torch.Tensor, table: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) item ids -> (B, L, d) outputs; with ``last`` (B,) positions -> (B, d) there only."""
        positions = torch.arange(items.shape[1], device=items.device)
        hidden = self.embed(self.codes[items], table) + self.position_embedding(positions)
        hidden = self.dropout(self.norm(hidden))
        return self.encoder(hidden, causal_mask(items), query_index=last)

    def sample_outputs(self, batch: Batch, table: torch.Tensor) -> torch.Tensor:
        """(T, d) outputs at the batch's (prefix, target) samples, in the order of ``targets > 0``."""
        if self.config.training_input != "window":
            return encode_each_prefix(
                lambda rows, last: self.encode(rows, table, last=last), batch.items, batch.targets
            )
        return self.encode(batch.items, table)[batch.targets > 0]

    # --- fine-tuning ------------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        table = self.code_table()
        hidden = self.sample_outputs(batch, table)  # (T, d)
        items = F.normalize(self.embed(self.codes, table), dim=-1)  # (N + 1, d), padding row included
        logits = F.normalize(hidden, dim=-1) @ items.T / self.config.temperature  # (T, N + 1)
        return F.cross_entropy(logits, batch.targets[batch.targets > 0])

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        table, items = self.once_per_pass("tables", self.scoring_tables)
        hidden = self.encode(batch.items, table, last=batch.lengths - 1)  # (B, d)
        return F.normalize(hidden, dim=-1), items

    def score(self, batch: Batch) -> torch.Tensor:
        hidden, items = self.query_and_items(batch)
        return hidden @ items.T

    def scoring_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The code table and the (N + 1, d) normalised item representations, once per scoring pass."""
        table = self.code_table()
        return table, F.normalize(self.embed(self.codes, table), dim=-1)

    def on_epoch_start(self, epoch: int) -> None:
        """Official schedule: learn only the permutation before ``reassign_steps``, then write it
        into the code table once and train everything but position, transformer and permutation."""
        if epoch < self.config.reassign_steps and int(self.phase) != REASSIGNED:
            self.phase.fill_(ASSIGNING)
            for parameter in self.parameters():
                parameter.requires_grad_(False)
            self.trans_matrix.requires_grad_(True)
            return
        if int(self.phase) != REASSIGNED:  # once: the buffer records it for resumed runs
            with torch.no_grad():
                table = self.permuted_table(noise=False)
                table[0] = 0.0
                self.code_embedding.weight.copy_(table)
            self.phase.fill_(REASSIGNED)
        for parameter in self.parameters():
            parameter.requires_grad_(True)
        frozen = (
            [*self.position_embedding.parameters(), *self.encoder.parameters()] if self.config.freeze_encoder else []
        )
        for parameter in [*frozen, self.trans_matrix]:
            parameter.requires_grad_(False)

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Every weight whose shape fits, but never the codes or schedule state of the source data."""
        return super().load_pretrained({k: v for k, v in state.items() if k not in DATASET_STATE})

    @classmethod
    def official_parameter_map(cls, config: MethodConfig) -> OfficialParameterMap:
        """``VQRec-FHCKM-300.pth`` / ``VQRec-FHCKM-300-20230315.pth`` (RUCAIBox/VQ-Rec ``vqrec.py``) onto
        this model: the code table by position (as the official fine-tuning, whose target codes come
        from the target's own quantiser), position embedding, LayerNorm, transformer and ``trans_matrix``
        (the official ``load_state_dict(strict=False)`` loads it too). ``pq_codes`` and
        ``reassigned_code_embedding`` are plain attributes there, never in the state dict; the target's
        ``codes`` and ``phase`` buffers stay the target's."""
        assert isinstance(config, VQRecConfig)
        parameters = [
            OfficialParameter("pq_code_embedding.weight", "code_embedding.weight"),
            OfficialParameter("position_embedding.weight", "position_embedding.weight"),
            OfficialParameter("LayerNorm.weight", "norm.weight"),
            OfficialParameter("LayerNorm.bias", "norm.bias"),
            OfficialParameter("trans_matrix", "trans_matrix"),
            *recbole_transformer_parameters(config.n_layers),
        ]
        codes = "the official model has code_dim = 32 codes of code_cap = 256 values, hidden_size = 300"
        return OfficialParameterMap(
            parameters=tuple(parameters),
            ignored={r"item_embedding\..*": "an item-ID table of the pre-training items (VQ-Rec has none)"},
            shape_hints={
                "code_embedding.weight": codes,
                "trans_matrix": codes,
                "position_embedding.weight": "the official model reads max_seq_length = 50 items",
            },
        )

    # --- pre-training on the source domains -------------------------------------------------
    def pretrain_loss(self, batch: Batch) -> torch.Tensor:
        """Seq-item InfoNCE over every target position with in-batch and semi-synthetic negatives."""
        table = self.code_table()
        sequences = F.normalize(self.sample_outputs(batch, table), dim=-1)  # (T, d)
        targets = batch.targets[batch.targets > 0]  # (T,)
        target_codes = self.codes[targets]  # (T, M)
        positives = F.normalize(self.embed(target_codes, table), dim=-1)  # (T, d)
        same_row = same_row_mask(target_rows(batch.targets)) if self.config.pretrain_mask_same_sequence else None
        # (T, T), diagonal = own positive; same target: logit 0 (official), same sequence: left out
        logits = contrastive_logits(sequences, positives, self.config.temperature, same_target_mask(targets), same_row)
        fakes = semi_synthetic_codes(target_codes, self.config.code_cap, self.config.fake_idx_ratio)
        fake_logits = (sequences * F.normalize(self.embed(fakes, table), dim=-1)).sum(
            -1
        ) / self.config.temperature  # (T,)
        denominator = torch.logsumexp(torch.cat([logits, fake_logits[:, None]], dim=1), dim=1)
        return (denominator - logits.diagonal()).mean()

"""AutoMLP: all-MLP long/short-term sequential recommender with a searched short-term length.

Paper: Li, Zhang, Zhao, Wang, Zhao, Wu, Guo, "AutoMLP: Automated MLP for Sequential
Recommendations", WWW 2023 (arXiv 2303.06337). No official code was found (the authors' sibling
repository Li-Muyang/MLP4Rec is a RecBole 1.0.1 copy). The specification is the project's method
document on AutoMLP (seeds/004_82e4bdcd22444495.txt, a Chinese summary of the paper with its
formulas, protocol, hyper-parameter study and Table 2). Below: each of its formulas as followed,
then every choice it leaves open and every departure, with the reason.

Two registered names:
- ``automlp``: the document's model, whose embedding layer fuses the item ID with the item's other
  features. The document does not say which features the paper used (its datasets section names
  only ratings and timestamps for MovieLens); the item text embedding recbench encodes (title and
  the like, ``text_encoder``, frozen) stands in for them, so the dataset must have item text.
- ``automlp-id``: item IDs alone (one feature, so the embedding layer has nothing to fuse).

Formulas followed:
1. Embedding layer: a lookup table per feature, then a fully connected layer fusing them into x of
   width D: x_i = W_e [e_i ; t_i] + b_e with e_i the ID embedding and t_i the item's text embedding
   (``automlp``); x_i = e_i (``automlp-id``). A history of T items is a T x D sequence.
2. SRS-MLP layer (MLP-Mixer): sequence mixer, for each channel d, x^d + W2 g(W1 LayerNorm(x^d))
   over the time axis (hidden width R_s, ``sequence_hidden_size``); then channel mixer, for each
   step t, x^t + W4 g(W3 LayerNorm(x^t)) with W3 in R^{R_c x D}, W4 in R^{D x R_c} (R_c,
   ``channel_hidden_size``). g is "a non-linear activation" in the document; GELU, as MLP-Mixer.
3. Long-term module: ``long_layers`` SRS-MLP layers over the last T = ``max_seq_length`` items.
   Short-term module: the same structure (the complexity analysis says it differs only in length)
   over the last k items, ``short_layers`` layers. Each module's output is its state at step T.
4. Output layer: h_T = W_o LayerNorm([x_T^s ; x_T^l]) + b_o, W_o in R^{D x 2D}. The document
   typesets this formula and restates it in prose without the LayerNorm; the typeset one is kept.
5. Loss: L = -sum_u sum_t [log sigma(r_{i_t,t}) + sum_{j not in S_u} log(1 - sigma(r_{j,t}))]
   (``loss = "bce"``, the default). r is not defined in the document; the formula is SASRec's, where
   r is the dot product of the output at t and the item's embedding, so r_{j,t} = h_t . x_j.
6. Inference: the cosine similarity of h_T and every item's embedding x_i (``query_and_items``
   returns both scaled to unit length, so ``score`` and ``score_candidates`` agree).
7. Search of k (``short_length = None``): one short-term module per candidate in K
   (``short_length_candidates``), their outputs mixed by softmax(alpha);
   min_alpha L_val(W*(alpha), alpha) s.t. W*(alpha) = argmin_W L_train(W, alpha), with the one-step
   approximation W* ~ W - xi grad_W L_train(W, alpha) differentiated exactly through the step
   (xi: ``unrolled_step``, default the weights' learning rate, as DARTS). alpha steps use validation
   data, W steps training data, alternately. Then the length with the largest alpha is kept, the
   others are dropped, and the model is retrained from scratch with it (``search_architecture``
   returns it; the run records it).
8. Training protocol: Adam, lr 1e-3, betas 0.9 / 0.999, early stopping after 10 epochs without a
   better validation score (recbench's defaults are these).
9. Hyper-parameter study: 8 layers is best. The document does not say of which module; the
   short-term module has the long-term one's structure, so both default to 8.

Choices where the document is silent:
- Negatives: how many and how drawn is not stated. One per target position (``negatives``), drawn
  uniformly from the items not in the user's sequence, as SASRec (the source of the formula)
  samples them. A method only sees its batch, so "the user's sequence" is
  the training window the batch holds (its inputs and targets), not the whole history: a window
  of a history longer than ``max_seq_length`` + 1 may draw an earlier item of the same user.
- The sum over users and positions is averaged over positions (a constant scale, which keeps the
  learning rate independent of the batch size, as RecBole and SASRec do).
- Candidate lengths K = {1, 2, 4, 8, 16, 32} (the document gives none; its efficiency study uses a
  search space of 5), T = 50, D = 64 (the study only says larger embeddings do better),
  R_s = 64, R_c = 256, dropout 0.2 on the embeddings and each mixer's output, N(0, 0.02)
  initialisation: ours, not the paper's.
- The search's length, alpha's optimiser and learning rate (the document refers to an Algorithm
  it does not include): a fixed budget of ``search_steps`` = 500 steps of ``search_batch_targets`` = 256 target
  positions (and 256 validation users), not a number of epochs, so the search costs the same on
  every dataset and alpha always gets 500 steps. alpha uses DARTS's Adam (betas 0.5 / 0.999, weight
  decay 1e-3) at lr 1e-2: lr x steps = 5, about DARTS's 3e-4 x ~19,500 steps. Reason: at the
  Trainer's 2,048 targets a step, Scientific gave 17 steps an epoch; after 2 epochs softmax(alpha)
  was within 0.03 of uniform and the chosen k changed with the seed. On large datasets the
  supernet sees a subsample (500 x 256 targets). The run records softmax(alpha) at 10 evenly
  spaced steps, with the mean losses between them and the final margin (first minus second weight).
- ``search_warmup_steps`` (default 0, the search above) first trains the supernet's weights alone
  for that many steps, alpha held uniform, as DARTS variants do against the early lead a candidate
  gets from its first few weight steps (with the mixture weighting each candidate's gradient, the
  leader trains faster and pulls further ahead). Measured on Scientific (3 seeds, 250 warm-up steps):
  alpha commits harder but to a seed-dependent k (2, 4, 16), so the default stays 0
  (docs/reproduction.md, AutoMLP).
- The validation loss L_val is the training loss of each user's valid item after its valid history
  (the split early stopping uses), with its negatives drawn the same way.
- ``loss = "ce"`` (full softmax over all N + 1 items, dot products) is kept as an option.
- The document's short-term paragraph also mentions a greedy strategy trained over several lengths,
  and its efficiency study an "AutoMLP-s" with another search; neither is described enough to
  implement. The DARTS search of its Framework and Training sections is what is implemented.

Departures, for cost (the model is the same; the search's optimisation differs slightly):
- Alignment: the time mixers have position-specific weights over a fixed length, so each history is
  right-aligned (its last item at the last position T - 1, as the left padding of RecBole's MLP
  models would have it) and padding positions are held at zero after every sub-layer, so padding
  carries no signal and the columns of W1 / rows of W2 that only padding would meet are skipped
  (a batch whose longest history is W costs W, not T, positions).
- Training rows: the full time mixer is not causal, so one pass over a window cannot predict every
  position. Each target position of a training window becomes its own right-aligned prefix row
  (as RecBole's (prefix, target) samples): every next-item target is used; an epoch is
  O(sum of squared window lengths). A batch's prefixes are represented in groups of similar
  length, each group in a frame as wide as its longest prefix (``represent_prefixes``; the same h),
  not as wide as T or the longest window: a training step (loss and backward, one thread) is
  1.7-2.1x faster on 51-item windows and 1.8x on windows of 2..12 items
  (``benchmarks/prefix_length_groups.py``, both settings in one run; two runs on a loaded machine).
- Search: the weight step reuses grad_W L_train of the unrolled step (taken at alpha before its
  step; DARTS recomputes it at the new alpha), saving a forward and backward pass; the validation
  histories are grouped by length (as the Trainer groups training windows), since a random group of
  256 users is as wide as its longest history (this about halved a step on data shaped like
  Scientific). ``unrolled_step = 0`` (DARTS's first-order approximation, not the document's) is an
  option; in the same measurement it also about halved a step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import cycle
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from torch.func import functional_call

from recbench.layers import by_length_groups, init_recbole_weights
from recbench.method import (
    Batch,
    ConfigRuleError,
    DataSpec,
    DropoutProbability,
    Method,
    MethodConfig,
    SearchData,
    SearchOutcome,
    StrictNonNegativeFloat,
    StrictNonNegativeInt,
    StrictPositiveFloat,
    StrictPositiveInt,
    TextMethodConfig,
)
from recbench.registry import register


class AutoMLPConfig(MethodConfig):
    """AutoMLP hyper-parameters of ``automlp-id`` (item IDs only): 8 layers per module as the paper's study
    finds best, Adam lr 1e-3 as the paper trains; widths, dropout and initialisation are our defaults."""

    hidden_size: StrictPositiveInt = 64
    """Width of item embeddings and of every SRS-MLP layer."""
    sequence_hidden_size: StrictPositiveInt = 64
    """R_s: hidden width of the sequence (time) mixers."""
    channel_hidden_size: StrictPositiveInt = 256
    """R_c: hidden width of the channel mixers."""
    # 8: the best layer count of the paper's hyper-parameter study, which does not name the module;
    # the short-term module has the long-term one's structure, so both get it. 0 layers: the module
    # is the last item's embedding alone (an ablation).
    long_layers: StrictNonNegativeInt = 8
    """SRS-MLP layers in the long-term module."""
    short_layers: StrictNonNegativeInt = 8
    """SRS-MLP layers in the short-term module."""
    loss: Literal["bce", "ce"] = "bce"
    """Training loss: bce (the paper's binary cross-entropy, sampled negatives) or ce (full softmax)."""
    negatives: StrictPositiveInt = 1
    """bce: negatives per target position, uniform over the items not in the user's training window."""
    dropout_prob: DropoutProbability = 0.2
    """Dropout on the embeddings and on each mixer's output."""
    layer_norm_eps: StrictPositiveFloat = 1e-12
    """LayerNorm epsilon."""
    initializer_range: StrictPositiveFloat = 0.02
    """Standard deviation of the normal initialisation."""
    short_length: StrictPositiveInt | None = None
    """Short-term length k; None searches it (DARTS) over the candidates before training."""
    short_length_candidates: Annotated[list[StrictPositiveInt], Field(min_length=1)] = [1, 2, 4, 8, 16, 32]
    """Candidate short-term lengths K (those above max_seq_length are dropped)."""
    search_steps: StrictPositiveInt = 500
    """Steps of the bi-level search, each an alpha step on a validation batch and a weight step on a
    training batch (a fixed budget: its cost does not grow with the dataset)."""
    search_warmup_steps: StrictNonNegativeInt = 0
    """Weight-only steps on training batches before the bi-level search, alpha held where it starts
    (uniform): every candidate's weights are trained before alpha compares them."""
    search_batch_targets: StrictPositiveInt = 256
    """Target positions per search step: training batches are the Trainer's cut to at most this many,
    validation batches hold this many users' valid items."""
    arch_learning_rate: StrictPositiveFloat = 1e-2
    """Adam learning rate of the architecture weights alpha."""
    arch_weight_decay: StrictNonNegativeFloat = 1e-3
    """Weight decay of alpha."""
    unrolled_step: StrictNonNegativeFloat | None = None  # 0: DARTS's first-order approximation
    """xi of the one-step approximation W* ~ W - xi grad_W L_train (None: learning_rate, as DARTS)."""

    @model_validator(mode="after")
    def _short_term_fits_the_history(self) -> AutoMLPConfig:
        horizon = self.max_seq_length
        if self.short_length is not None and self.short_length > horizon:
            raise ConfigRuleError("short_length", self.short_length, f"must be at most max_seq_length = {horizon}")
        if self.short_length is None and min(self.short_length_candidates) > horizon:
            message = f"must contain a length of at most max_seq_length = {horizon}"
            raise ConfigRuleError("short_length_candidates", self.short_length_candidates, message)
        return self


class AutoMLPTextConfig(AutoMLPConfig, TextMethodConfig):
    """AutoMLP hyper-parameters of ``automlp``: those of ``automlp-id`` and the item text encoder."""


class SRSMLPLayer(nn.Module):
    """Sequence mixer over time then channel mixer over features, over a frame of ``length`` steps."""

    def __init__(
        self, length: int, hidden: int, sequence_hidden: int, channel_hidden: int, dropout: float, eps: float
    ) -> None:
        super().__init__()
        self.sequence_norm = nn.LayerNorm(hidden, eps=eps)
        self.sequence_in = nn.Linear(length, sequence_hidden)  # W1: mixes time steps
        self.sequence_out = nn.Linear(sequence_hidden, length)  # W2
        self.channel_norm = nn.LayerNorm(hidden, eps=eps)
        self.channel_in = nn.Linear(hidden, channel_hidden)  # W3: mixes features
        self.channel_out = nn.Linear(channel_hidden, hidden)  # W4
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """x: (R, W, d), the last W steps of the frame; real: (R, W, 1), 1 at items, 0 at padding."""
        width = x.shape[1]
        time_major = (self.sequence_norm(x) * real).transpose(1, 2)  # (R, d, W), padding is 0
        mixed = F.gelu(F.linear(time_major, self.sequence_in.weight[:, -width:], self.sequence_in.bias))  # (R, d, R_s)
        mixed = F.linear(mixed, self.sequence_out.weight[-width:], self.sequence_out.bias[-width:])  # (R, d, W)
        x = (x + self.dropout(mixed.transpose(1, 2))) * real
        x = x + self.dropout(self.channel_out(F.gelu(self.channel_in(self.channel_norm(x)))))
        return x * real


class InterestModule(nn.Module):
    """A stack of SRS-MLP layers over the last ``length`` steps; output = state at the last step."""

    def __init__(self, config: AutoMLPConfig, length: int, layers: int) -> None:
        super().__init__()
        self.length = length
        self.layers = nn.ModuleList(
            SRSMLPLayer(
                length,
                config.hidden_size,
                config.sequence_hidden_size,
                config.channel_hidden_size,
                config.dropout_prob,
                config.layer_norm_eps,
            )
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(R, W, d) right-aligned embeddings -> (R, d)."""
        x, real = x[:, -self.length :], real[:, -self.length :]
        for layer in self.layers:
            x = layer(x, real)
        return x[:, -1]


def sample_negatives(seen: torch.Tensor, count: int, num_items: int) -> torch.Tensor:
    """(R, count) item ids drawn uniformly (with replacement) from 1..N minus the items of each row
    of ``seen`` (R, S; 0 and repeats allowed); 0 for a row that holds every item.

    No rejection loop: the u-th smallest unseen item, u uniform below the row's count of unseen
    items, is u + 1 moved up by one for each seen item at or below it (seen items in ascending order).
    """
    ordered = seen.sort(dim=1).values  # (R, S)
    distinct = (ordered > 0) & (ordered <= num_items)
    distinct[:, 1:] &= ordered[:, 1:] != ordered[:, :-1]
    unseen = num_items - distinct.sum(dim=1, keepdim=True)  # (R, 1)
    drawn = (torch.rand(seen.shape[0], count, device=seen.device) * unseen).long() + 1  # u + 1, u in [0, unseen)
    for column in range(ordered.shape[1]):
        drawn = drawn + (distinct[:, column : column + 1] & (ordered[:, column : column + 1] <= drawn))
    return drawn.masked_fill(unseen == 0, 0)


SEARCH_RECORDS = 10
"""Points of the softmax(alpha) trajectory a search records after its start, evenly spaced in steps."""


def cut_batch(batch: Batch, targets: int) -> list[Batch]:
    """A training batch's windows in consecutive groups of at most ``targets`` target positions (a
    longer window stays whole), each as wide as its longest window."""
    counts = (batch.targets > 0).sum(dim=1).tolist()
    bounds, start, filled = [], 0, 0
    for row, count in enumerate(counts):
        if row > start and filled + count > targets:
            bounds.append((start, row))
            start, filled = row, 0
        filled += count
    bounds.append((start, len(counts)))
    pieces = []
    for begin, end in bounds:
        width = int(batch.lengths[begin:end].max())
        pieces.append(
            Batch(
                items=batch.items[begin:end, :width],
                lengths=batch.lengths[begin:end],
                targets=batch.targets[begin:end, :width],
            )
        )
    return pieces


def search_batches(data: SearchData, targets: int) -> Iterator[tuple[float, Batch]]:
    """The search's training batches, epoch after epoch without end, each with the epochs (passes over
    the training data) done once it is used."""
    epoch = 0
    while True:
        pieces = [piece for batch in data.train_batches(epoch) for piece in cut_batch(batch, targets)]
        if not pieces:
            raise ValueError("the search has no training batches")
        for index, piece in enumerate(pieces):
            yield epoch + (index + 1) / len(pieces), piece
        epoch += 1


def by_length(batches: list[Batch], size: int, seed: int) -> list[Batch]:
    """The rows of evaluation-style batches regrouped by history length, ``size`` rows a batch (each as
    wide as its longest history), the batches in a seeded random order."""
    width = max(batch.items.shape[1] for batch in batches)
    items = torch.cat([F.pad(batch.items, (0, width - batch.items.shape[1])) for batch in batches])
    targets = torch.cat([F.pad(batch.targets, (0, width - batch.targets.shape[1])) for batch in batches])
    lengths = torch.cat([batch.lengths for batch in batches])
    order = torch.argsort(lengths, stable=True)
    groups = [order[start : start + size] for start in range(0, len(order), size)]
    shuffled = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
    regrouped = []
    for rows in (groups[i] for i in shuffled):
        longest = int(lengths[rows].max())
        regrouped.append(Batch(items=items[rows, :longest], lengths=lengths[rows], targets=targets[rows, :longest]))
    return regrouped


def right_aligned(items: torch.Tensor, rows: torch.Tensor, ends: torch.Tensor, width: int) -> torch.Tensor:
    """items[rows[r], :ends[r] + 1], its last ``width`` items right-aligned: (R, width), 0 = padding on the left."""
    source = ends[:, None] - (width - 1) + torch.arange(width, device=items.device)[None, :]
    return torch.where(source >= 0, items[rows[:, None], source.clamp(min=0)], 0)


class AutoMLPBase(Method):
    """AutoMLP's long- and short-term MLP-Mixer modules; ``needs_text`` decides the embedding layer."""

    Config = AutoMLPConfig

    def __init__(self, config: AutoMLPConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.horizon = spec.max_seq_length  # T
        lengths = (
            [config.short_length]
            if config.short_length
            else [k for k in config.short_length_candidates if k <= self.horizon]
        )
        if not lengths or max(lengths) > self.horizon:
            raise ValueError(
                f"short-term length(s) {lengths or config.short_length_candidates} "
                f"must be in 1..max_seq_length={self.horizon}"
            )
        self.short_lengths = lengths
        self.item_embedding = nn.Embedding(spec.num_items + 1, config.hidden_size, padding_idx=0)
        text = spec.item_text_embeddings.float() if self.needs_text and spec.item_text_embeddings is not None else None
        if self.needs_text and text is None:
            raise ValueError(f"{type(self).__name__} needs DataSpec.item_text_embeddings (the item feature)")
        # Frozen and dataset-specific: a buffer outside the state dict (as GRU4RecF's); None for IDs only.
        self.register_buffer("text", text, persistent=False)
        # The embedding layer's fully connected layer, [ID embedding ; text] -> x (D); IDs alone need none.
        self.fuse = None if text is None else nn.Linear(config.hidden_size + text.shape[1], config.hidden_size)
        self.dropout = nn.Dropout(config.dropout_prob)
        self.long_term = InterestModule(config, self.horizon, config.long_layers)
        self.short_term = nn.ModuleList(InterestModule(config, k, config.short_layers) for k in lengths)
        self.output_norm = nn.LayerNorm(2 * config.hidden_size, eps=config.layer_norm_eps)
        self.output = nn.Linear(2 * config.hidden_size, config.hidden_size)  # W_o, b_o
        self.apply(lambda module: init_recbole_weights(module, config.initializer_range))
        # alpha: one weight per candidate; a single candidate has softmax(alpha) = 1.
        self.arch_weights = nn.Parameter(torch.zeros(len(lengths)))

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Item ids (any shape) -> their embeddings x (..., D): the ID embedding, fused with the item
        text by the embedding layer's fully connected layer when the method reads text."""
        ids = self.item_embedding(items)
        if self.fuse is None or self.text is None:
            return ids
        return self.fuse(torch.cat([ids, self.text[items]], dim=-1))

    def item_table(self) -> torch.Tensor:
        """(N + 1, D): the embedding x of every item id (row 0 is padding)."""
        if self.fuse is None:
            return self.item_embedding.weight
        return self.item_vectors(torch.arange(self.spec.num_items + 1, device=self.item_embedding.weight.device))

    def represent(self, aligned: torch.Tensor) -> torch.Tensor:
        """(R, W) right-aligned item ids -> (R, d) user representation h."""
        real = (aligned > 0).unsqueeze(-1).float()  # (R, W, 1)
        x = self.dropout(self.item_vectors(aligned)) * real
        mixture = torch.softmax(self.arch_weights, dim=0)  # (|K|,)
        short = sum(weight * module(x, real) for weight, module in zip(mixture, self.short_term))  # (R, d)
        return self.output(self.output_norm(torch.cat([short, self.long_term(x, real)], dim=-1)))

    def represent_prefixes(self, items: torch.Tensor, rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """(R, d): h of every prefix items[rows[r], :ends[r] + 1], in the order of ``rows``.

        The prefixes are represented in groups of similar length (``length_groups``), each in a frame
        as wide as its longest prefix, not the batch's: padding is zero after every sub-layer and the
        mixers skip the weights only padding meets, so a narrower frame gives the same h."""
        lengths = (ends + 1).clamp(max=min(items.shape[1], self.horizon))
        return by_length_groups(
            lengths, lambda group, width: self.represent(right_aligned(items, rows[group], ends[group], width))
        )

    def prefix_representations(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """h of every target position's prefix (one row each, in ``nonzero`` order) and its target."""
        rows, ends = (batch.targets > 0).nonzero(as_tuple=True)
        return self.represent_prefixes(batch.items, rows, ends), batch.targets[rows, ends]

    def loss(self, batch: Batch) -> torch.Tensor:
        if self.config.loss == "ce":
            hidden, targets = self.prefix_representations(batch)
            return F.cross_entropy(hidden @ self.item_table().T, targets)  # over all N + 1 rows
        # j not in S_u: the user's items the batch shows, i.e. its window's inputs and targets.
        rows = (batch.targets > 0).nonzero(as_tuple=True)[0]
        seen = torch.cat([batch.items, batch.targets], dim=1)[rows]
        return self.loss_with_negatives(batch, sample_negatives(seen, self.config.negatives, self.spec.num_items))

    def loss_with_negatives(self, batch: Batch, negatives: torch.Tensor) -> torch.Tensor:
        """The binary cross-entropy of the paper with the given negatives (R, n), 0 = no negative:
        -[log sigma(r_pos) + sum_j log(1 - sigma(r_j))] per target position, averaged over positions,
        with r the dot product of h and the item's embedding."""
        hidden, targets = self.prefix_representations(batch)  # (R, d), (R,)
        positive = (hidden * self.item_vectors(targets)).sum(dim=-1)  # (R,)
        negative = torch.einsum("rd,rnd->rn", hidden, self.item_vectors(negatives))  # (R, n)
        # log(1 - sigma(r)) = log sigma(-r), computed without overflow
        negative_terms = (F.logsigmoid(-negative) * (negatives > 0)).sum(dim=-1)
        return -(F.logsigmoid(positive) + negative_terms).mean()

    def user_representation(self, batch: Batch) -> torch.Tensor:
        """(B, D): h_T after each sequence of an evaluation batch."""
        rows = torch.arange(batch.size, device=batch.items.device)
        return self.represent_prefixes(batch.items, rows, batch.lengths - 1)

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """h_T and the item table, both scaled to unit length: their dot product is the cosine similarity
        the paper ranks by (the zero padding row stays zero)."""
        items = self.once_per_pass("unit items", lambda: F.normalize(self.item_table(), dim=-1))
        return F.normalize(self.user_representation(batch), dim=-1), items

    def score(self, batch: Batch) -> torch.Tensor:
        hidden, items = self.query_and_items(batch)
        return hidden @ items.T

    def forward(self, batch: Batch) -> torch.Tensor:
        """The training loss; lets ``torch.func.functional_call`` evaluate it at other weights."""
        return self.loss(batch)

    # --- short-term length search (DARTS) ----------------------------------------------------
    def weight_parameters(self) -> dict[str, nn.Parameter]:
        """W: every parameter but the architecture weights alpha."""
        return {name: p for name, p in self.named_parameters() if name != "arch_weights"}

    def search_losses(
        self, train: Batch, valid: Batch, step: float
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """L_val(W - xi grad_W L_train(W, alpha), alpha), differentiable w.r.t. alpha through the step
        (xi = 0: L_val at W), with L_train(W, alpha) and grad_W L_train (None where unused), W's order."""
        weights = self.weight_parameters()
        train_loss = self(train)
        grads = torch.autograd.grad(train_loss, list(weights.values()), create_graph=step > 0, allow_unused=True)
        if step == 0:
            return self(valid), train_loss, list(grads)
        unrolled = {name: p if g is None else p - step * g for (name, p), g in zip(weights.items(), grads)}
        valid_loss = functional_call(self, {**unrolled, "arch_weights": self.arch_weights}, (valid,))
        return valid_loss, train_loss, list(grads)

    @classmethod
    def search_architecture(
        cls, config: AutoMLPConfig, data: SearchData, seed: int, device: str
    ) -> SearchOutcome | None:
        """DARTS over the short-term length; returns {"short_length": argmax-alpha k} and records the
        softmax(alpha) trajectory with the mean training and validation losses between its points.

        At every point of the trajectory the search state (supernet, both optimisers, trajectory)
        goes to ``data.save_state``; a search given a saved state continues from it, to the outcome
        of an uninterrupted search."""
        if config.short_length is not None:
            return None
        started = time.perf_counter()
        supernet = data.build(config).to(device).train()
        weights = list(supernet.weight_parameters().values())
        # The paper's optimiser for W (Adam, lr 1e-3, betas 0.9 / 0.999); DARTS's Adam for alpha.
        weight_optimizer = torch.optim.Adam(weights, lr=config.learning_rate, weight_decay=config.weight_decay)
        arch_optimizer = torch.optim.Adam(
            [supernet.arch_weights],
            lr=config.arch_learning_rate,
            betas=(0.5, 0.999),
            weight_decay=config.arch_weight_decay,
        )
        xi = config.learning_rate if config.unrolled_step is None else config.unrolled_step
        train_batches = search_batches(data, config.search_batch_targets)
        # Validation histories grouped by length, as the Trainer groups training windows: a random
        # group of 256 users is as wide as its longest history (often 50), which about doubled a step.
        valid_batches = cycle(by_length(data.valid_batches(), config.search_batch_targets, seed))
        # Steps 1..warmup train W alone; the search proper follows. The trajectory's points and the
        # kept states are at every `every` steps of either phase and at the end of each.
        warmup, total = config.search_warmup_steps, config.search_warmup_steps + config.search_steps
        every = max(1, config.search_steps // SEARCH_RECORDS)
        trajectory = [{"step": 0, "epochs": 0.0, "weights": supernet.mixture()}]
        losses: list[tuple[float, float | None]] = []
        epochs, done = 0.0, 0
        state = data.load_state() if data.load_state is not None else None
        if state is not None:  # an interrupted search continues from the last step it kept
            supernet.load_state_dict(state["model"])
            weight_optimizer.load_state_dict(state["weight_optimizer"])
            arch_optimizer.load_state_dict(state["arch_optimizer"])
            trajectory, done, epochs = state["trajectory"], state["step"], state["epochs"]
            started -= state["seconds"]
            for _ in range(done):  # the batches an uninterrupted search would use from here on
                next(train_batches)
            for _ in range(max(0, done - warmup)):  # only the search proper reads validation batches
                next(valid_batches)
        for step in range(done + 1, total + 1):
            epochs, train = next(train_batches)
            if step <= warmup:
                train_loss = supernet(train.to(device))
                grads = torch.autograd.grad(train_loss, weights, allow_unused=True)
                valid_loss = None
            else:
                valid_loss, train_loss, grads = supernet.search_losses(
                    train.to(device), next(valid_batches).to(device), xi
                )
                arch_optimizer.zero_grad(set_to_none=True)
                valid_loss.backward(inputs=[supernet.arch_weights])
                arch_optimizer.step()
            # In the search proper the weight step reuses grad_W L_train of the unrolled step (taken at
            # alpha before its step) instead of a second forward and backward pass at the new alpha.
            for weight, grad in zip(weights, grads):
                weight.grad = None if grad is None else grad.detach()
            weight_optimizer.step()
            losses.append((float(train_loss.detach()), None if valid_loss is None else float(valid_loss.detach())))
            phase_step = step if step <= warmup else step - warmup
            if phase_step % every == 0 or step in (warmup, total):
                point = {
                    "step": step,
                    "epochs": round(epochs, 3),
                    "weights": supernet.mixture(),
                    "train_loss": round(sum(t for t, _ in losses) / len(losses), 4),
                }
                valid = [v for _, v in losses if v is not None]
                if valid:
                    point["valid_loss"] = round(sum(valid) / len(valid), 4)
                if step <= warmup:
                    point["warmup"] = True
                trajectory.append(point)
                losses = []
                if data.save_state is not None:
                    data.save_state(
                        {
                            "model": supernet.state_dict(),
                            "weight_optimizer": weight_optimizer.state_dict(),
                            "arch_optimizer": arch_optimizer.state_dict(),
                            "trajectory": trajectory,
                            "step": step,
                            "epochs": epochs,
                            "seconds": time.perf_counter() - started,
                        }
                    )
        final = trajectory[-1]["weights"]
        ranked = sorted(final, reverse=True)
        chosen = supernet.short_lengths[final.index(ranked[0])]
        details = {
            "weights": dict(zip(supernet.short_lengths, final)),
            "margin": round(ranked[0] - (ranked[1] if len(ranked) > 1 else 0.0), 4),
            "lengths": supernet.short_lengths,
            "trajectory": trajectory,
            "steps": config.search_steps,
            "warmup_steps": warmup,
            "epochs": round(epochs, 3),
            "seconds": time.perf_counter() - started,
            **({"resumed_at_step": done} if done else {}),
        }
        return SearchOutcome(config_updates={"short_length": chosen}, details=details)

    def mixture(self) -> list[float]:
        """softmax(alpha), one weight per candidate length, rounded for the run record."""
        return [round(float(w), 4) for w in torch.softmax(self.arch_weights.detach(), dim=0).cpu()]


@register("automlp")
class AutoMLP(AutoMLPBase):
    """AutoMLP: item ID and text fused per item, MLP-Mixer long/short-term modules, short length by DARTS."""

    Config = AutoMLPTextConfig
    needs_text = True


@register("automlp-id")
class AutoMLPID(AutoMLPBase):
    """AutoMLP over item IDs alone (no item features), short-term length searched by DARTS."""

    Config = AutoMLPConfig
    needs_text = False

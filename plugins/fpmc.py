"""FPMC: a user-item matrix factorisation plus a factorised first-order Markov chain, as RecBole implements it.

Paper: Rendle, Freudenthaler, Schmidt-Thieme, "Factorizing Personalized Markov Chains for
Next-Basket Recommendation", WWW 2010.
Checked against: RecBole ``recbole/model/sequential_recommender/fpmc.py``,
``recbole/properties/model/FPMC.yaml``, ``recbole/model/loss.py`` (``BPRLoss``) and
``recbole/sampler/sampler.py`` (``RepeatableSampler``) at v1.1.1 (9518991a) and v1.2.0 (362d31f0),
the same code in both; v1.0.1 (80c58c0a) differs only in formatting and in not having a
``loss_type`` key, and 7b02be5e (v1.2.1 + 11 commits) in formatting.

Faithful to RecBole:
- Baskets of one item (RecBole's note): the score of item i after a sequence of user u whose last
  item is l is ``<V_UI[u], V_IU[i]> + <V_IL[i], V_LI[l]>`` (the MF term and the FMC term; the
  paper's ``<V_IL[i], V_LI[l]>`` is averaged over the basket, here a single item). Four tables
  of ``embedding_size`` (64, FPMC.yaml) columns: V_UI (U + 1 rows), V_IU, V_LI and V_IL (N + 1
  rows each, row 0 = the padding item, never a candidate nor a last item).
- Loss: BPR, ``-mean(log(1e-10 + sigmoid(s(u, l, i+) - s(u, l, i-))))``, one negative per target.
  Sequential models run with RecBole's ``RepeatableSampler`` (they require ``repeatable = True``),
  whose only excluded item for a sample is its own positive: the negative is uniform over the N - 1
  items other than the target, the user's other items included, drawn afresh every epoch.
- Initialisation (``_init_weights``): xavier_normal_ on all four tables (padding rows included).
- No regularisation term (RecBole's FPMC has none; ``weight_decay`` stays 0 as RecBole's default).

How each target is formed: RecBole makes one sample (user, history, target) per training
interaction and reads the history's last item. Here one training window of user u holds inputs
``T[s], ..., T[s + n - 1]`` and targets ``T[s + 1], ..., T[s + n]`` of u's training part ``T``, so
the target at window position t is paired with ``Batch.users[b]`` and the input at the same
position, ``items[b, t]``, which is the item right before it in u's sequence (a later window starts
with the item preceding its first target). Every (user, previous item, next item) triple of the
training part is therefore trained once per epoch, as in RecBole; cutting into windows changes
nothing for FPMC, which never looks further back than one item.

Unknown users: ``Batch.users`` None, 0 or outside 1..U (a user the model was not built with) read
row 0 of V_UI, which is zero and receives no gradient, so their score is the FMC term alone
(the last item's transitions). RecBole has no such case: its [PAD] user row is random and unused.

Deviations:
- Row 0 of V_UI is zeroed after the xavier initialisation (RecBole's row 0 is random but never
  read, as no user has id 0) and is a padding row (no gradient), so unknown users score as above.
- Negatives come from torch's generator (seeded per run, saved in checkpoints) as ``randint(1, N)``
  shifted past the target: the same distribution as RecBole's redraw-until-different numpy
  sampler, not the same draws.
- Full ranking scores every item with one product of ``[V_UI[u], V_LI[l]]`` against
  ``[V_IU[i], V_IL[i]]`` (:meth:`FPMC.query_and_items`), equal to RecBole's sum of the two products
  up to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from recbench.method import Batch, DataSpec, Method, MethodConfig, StrictPositiveInt
from recbench.registry import register

BPR_GAMMA = 1e-10
"""RecBole's ``BPRLoss`` gamma: keeps the log finite when sigmoid underflows."""


class FPMCConfig(MethodConfig):
    """FPMC hyper-parameters; defaults = RecBole's FPMC.yaml."""

    embedding_size: StrictPositiveInt = 64
    """Width of each of the four factor tables (user-item, item-user, last item-item, item-last item)."""


@register("fpmc")
class FPMC(Method):
    """FPMC: MF (user x next item) + factorised Markov chain (last item x next item), BPR loss (RecBole)."""

    Config = FPMCConfig
    needs_users = True

    def __init__(self, config: FPMCConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        width = config.embedding_size
        self.ui_emb = nn.Embedding(spec.num_users + 1, width, padding_idx=0)  # V_UI: user -> MF
        self.iu_emb = nn.Embedding(spec.num_items + 1, width)  # V_IU: candidate item -> MF
        self.li_emb = nn.Embedding(spec.num_items + 1, width, padding_idx=0)  # V_LI: last item -> FMC
        self.il_emb = nn.Embedding(spec.num_items + 1, width)  # V_IL: candidate item -> FMC
        for table in (self.ui_emb, self.iu_emb, self.li_emb, self.il_emb):
            nn.init.xavier_normal_(table.weight)
        with torch.no_grad():
            self.ui_emb.weight[0] = 0  # the unknown user: no MF term (see the module docstring)

    def pair_scores(self, users: torch.Tensor, last_items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(T,) user rows and last items, (..., T) candidate items -> (..., T) scores, RecBole's ``forward``."""
        mf = (self.ui_emb(users) * self.iu_emb(candidates)).sum(-1)
        fmc = (self.il_emb(candidates) * self.li_emb(last_items)).sum(-1)
        return mf + fmc

    def sample_negatives(self, positives: torch.Tensor) -> torch.Tensor:
        """One item per positive, uniform over the items 1..N other than it (RecBole's repeatable sampler)."""
        num_items = self.spec.num_items
        if num_items < 2:
            raise ValueError(f"FPMC's BPR loss needs at least 2 items to sample a negative, got {num_items}")
        # uniform over N - 1 values, then skip the positive: exactly uniform over the other items, no redraws
        draws = torch.randint(1, num_items, positives.shape, device=positives.device)
        return draws + (draws >= positives).long()

    def loss(self, batch: Batch) -> torch.Tensor:
        rows, positions = (batch.targets > 0).nonzero(as_tuple=True)
        users = self.user_rows(batch)[rows]
        last_items = batch.items[rows, positions]  # the item right before each target
        positives = batch.targets[rows, positions]
        # both candidates in one call: one look-up per table, where RecBole's two ``forward`` calls
        # look the user and the last item up twice; the same scores
        candidates = torch.stack([positives, self.sample_negatives(positives)])  # (2, T)
        positive_score, negative_score = self.pair_scores(users, last_items, candidates)
        return -torch.log(BPR_GAMMA + torch.sigmoid(positive_score - negative_score)).mean()

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        last_items = batch.items[torch.arange(batch.size, device=batch.items.device), batch.lengths - 1]
        query = torch.cat([self.ui_emb(self.user_rows(batch)), self.li_emb(last_items)], dim=1)  # (B, 2d)
        items = torch.cat([self.iu_emb.weight, self.il_emb.weight], dim=1)  # (N + 1, 2d)
        return query, items

    def score(self, batch: Batch) -> torch.Tensor:
        query, items = self.query_and_items(batch)
        return query @ items.T

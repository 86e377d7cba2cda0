"""Caser: horizontal and vertical convolutions over the last L item embeddings, as RecBole implements it.

Paper: Tang, Wang, "Personalized Top-N Sequential Recommendation via Convolutional Sequence
Embedding", WSDM 2018.
Checked against: RecBole ``recbole/model/sequential_recommender/caser.py``,
``recbole/properties/model/Caser.yaml``, ``recbole/model/loss.py`` (``RegLoss``),
``recbole/data/dataset/sequential_dataset.py`` (how histories are padded) and
``recbole/properties/dataset/sample.yaml`` (``MAX_ITEM_LIST_LENGTH``) at v1.1.1 (9518991a) and
v1.2.0 (362d31f0): the same model code and yaml in both, and in 7b02be5e (v1.2.1 + 11 commits).
v1.0.1 (80c58c0a) has the same model code (formatting only) but Caser.yaml's nv 8 and nh 16; the
defaults here are those of v1.1.1 and later.

Faithful to RecBole:
- Input: the last L = ``max_seq_length`` items before the target, right-padded with the padding
  item 0 to L columns (RecBole's ``item_id_list``: ``zeros(L)`` with the history written into its
  first columns, at most ``MAX_ITEM_LIST_LENGTH`` = 50 items, sample.yaml; Caser.yaml sets no L).
  The padding embedding is not zero (see the initialisation) and goes through the convolutions.
- Vertical convolution: ``nv`` (4) filters of shape (L, 1), each a weighted sum of the L rows of the
  (L, d) embedding matrix -> nv x d values. Horizontal convolutions: for every height h = 1..L,
  ``nh`` (8) filters of shape (h, d), ReLU, max-pooled over the L - h + 1 positions -> nh x L values.
  Both ``nn.Conv2d`` over the (1, L, d) "image", as RecBole (same weight shapes).
- Concatenation -> dropout (``dropout_prob`` 0.4) -> ``fc1`` (to d) -> ReLU; concatenated with the
  user embedding -> ``fc2`` (2d to d) -> ReLU: the sequence representation, scored by dot products
  with every item embedding (d = ``embedding_size`` 64).
- Loss: CE over all N + 1 rows (the padding row is a class, as RecBole's ``n_items`` counts it;
  loss_type CE is Caser.yaml's default, BPR is not offered) + ``reg_weight`` (1e-4) x (||U|| + ||E||
  + ||W_v|| + ||W_fc1|| + ||W_fc2||) + ``reg_weight`` x the sum of ||W_h|| over the horizontal
  filters, Frobenius norms (not squared), per batch, as RecBole's ``RegLoss`` and ``reg_loss_conv_h``.
- Initialisation (``_init_weights``): both embeddings normal(0, std 1 / d), padding rows included
  (the padding item row is random, gets no gradient as an input and trains as a CE class); Linear
  weights xavier_normal_, biases 0; convolutions keep PyTorch's defaults.

Training: RecBole makes one sample per training interaction, its history the last L items before
it. Here each target of a training window becomes its own L-wide row (the last L items of the
window's prefix ending before it, right-padded), so every target is scored as RecBole scores it.
The Trainer cuts a user's training part into windows of ``max_seq_length`` targets, so a target
in an earlier window than the last sees only the items of its own window (fewer than L for its
first positions) where RecBole would show it the previous L items; users with at most L + 1
training items are not affected.

Speed (the same numbers, fewer operations): RecBole convolves every (history, target) sample on
its own, about 10.7M multiply-adds per sample at its sizes. Here the histories of one training
window are prefixes of each other, right-padded with the same padding row, so every filter-row x
item product is computed once per window position and every window sum is read from cumulative
sums along the filters' diagonals (:meth:`Caser.horizontal_of_prefixes`); scored histories of up to
16 items use the same computation, longer ones the convolutions. Its cost grows with the square of
the window width, so a training batch mixing lengths (``bucket_by_length = false``) is split by
window length first (:meth:`Caser.horizontal_of_windows`). Tests hold all three against the
convolutions, values and gradients (the padding row still gets no gradient as an input).

Unknown users: ``Batch.users`` None, 0 or outside 1..U read row 0 of the user table, which is zero
and receives no gradient (a padding row whose Frobenius-norm penalty gradient is 0 at 0), so an
unknown user's representation is fc2 applied to ``[z, 0]``: the sequence part alone.

Deviations:
- Row 0 of the user table is zeroed after initialisation (RecBole's is random and never read:
  no user has id 0); this also leaves it out of ||U||, a negligible change of the penalty.
- Items beyond a history's length in the batch are treated as padding (RecBole's input never
  holds any).
- The paper's own settings (d 50, L 5, T 3 targets per sample, nh 16, dropout 0.5, cross-entropy
  on sampled negatives) are not RecBole's and are not the defaults; L, nv, nh, d and dropout are
  config keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbench.layers import by_length_groups
from recbench.method import (
    Batch,
    DataSpec,
    DropoutProbability,
    Method,
    MethodConfig,
    StrictNonNegativeFloat,
    StrictPositiveInt,
)
from recbench.registry import register


class CaserConfig(MethodConfig):
    """Caser hyper-parameters; defaults = RecBole's Caser.yaml (v1.1.1+), L = ``max_seq_length`` = 50."""

    embedding_size: StrictPositiveInt = 64
    """Width of user and item embeddings and of the sequence representation."""
    nv: StrictPositiveInt = 4
    """Vertical convolution filters (each spans all L positions)."""
    nh: StrictPositiveInt = 8
    """Horizontal convolution filters per height h = 1..L (max_seq_length)."""
    dropout_prob: DropoutProbability = 0.4
    """Dropout on the concatenated convolution outputs, before the first fully connected layer."""
    reg_weight: StrictNonNegativeFloat = 1e-4
    """Weight of the L2 (Frobenius norm) penalty on embeddings, convolution and fully connected weights."""


@register("caser")
class Caser(Method):
    """Caser: convolutions over the last L items + a user embedding, full-softmax CE (RecBole)."""

    Config = CaserConfig
    needs_users = True

    def __init__(self, config: CaserConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        width, length = config.embedding_size, config.max_seq_length
        self.window = length
        self.user_embedding = nn.Embedding(spec.num_users + 1, width, padding_idx=0)
        self.item_embedding = nn.Embedding(spec.num_items + 1, width, padding_idx=0)
        self.conv_v = nn.Conv2d(1, config.nv, kernel_size=(length, 1))
        self.conv_h = nn.ModuleList(nn.Conv2d(1, config.nh, kernel_size=(h, width)) for h in range(1, length + 1))
        self.fc1 = nn.Linear(config.nv * width + config.nh * length, width)
        self.fc2 = nn.Linear(2 * width, width)
        self.dropout = nn.Dropout(config.dropout_prob)
        for table in (self.user_embedding, self.item_embedding):
            nn.init.normal_(table.weight, 0.0, 1.0 / width)
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.user_embedding.weight[0] = 0  # the unknown user (see the module docstring)

    def recent(self, items: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """(R, W) item rows and (R,) prefix lengths -> (R, L): the last L items of each prefix
        ``items[r, :ends[r]]``, oldest first, right-padded with 0 (RecBole's history list)."""
        start = (ends - self.window).clamp(min=0)
        positions = start[:, None] + torch.arange(self.window, device=items.device)
        gathered = items.gather(1, positions.clamp(max=items.shape[1] - 1))
        return torch.where(positions < ends[:, None], gathered, torch.zeros_like(gathered))

    def vertical(self, embedded: torch.Tensor) -> torch.Tensor:
        """(R, 1, L, d) -> (R, nv * d): each filter's weighted sum of the L rows, filter by filter."""
        return self.conv_v(embedded).flatten(1)

    def horizontal(self, embedded: torch.Tensor) -> torch.Tensor:
        """(R, 1, L, d) -> (R, nh * L): per height h, ReLU then max over time, heights 1..L in order."""
        pooled = [F.relu(conv(embedded).squeeze(3)).amax(dim=2) for conv in self.conv_h]
        return torch.cat(pooled, dim=1)

    def horizontal_of_prefixes(self, windows: torch.Tensor, rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """The horizontal branch of every history ``windows[rows[r], :ends[r]]`` right-padded to L.

        (B, W) right-padded item windows with W <= L, (R,) window rows and (R,) prefix lengths
        1..W -> (R, nh * L), equal to :meth:`horizontal` of those histories. Why it is cheaper:
        a training window of W targets is W histories that are prefixes of one another, right-padded
        with the same padding row e_0. So every product W_h[j] . x[s] is computed once per window
        position s (one matrix product), summed along each filter's diagonal once (a cumulative sum
        over j), and each prefix's window sums are read from those sums; the rows of a window that
        reach into the padding add a precomputed sum of W_h[j] . e_0. About 1.3M multiply-adds per
        window position at RecBole's sizes (L 50, nh 8, d 64) instead of 10.7M per history.
        """
        length, heights = self.window, len(self.conv_h)
        count, width = windows.shape
        if width > length:
            raise ValueError(f"windows of {width} items are longer than Caser's L = {length}")
        # W_h[j] for every height h and filter row j < L, zero where j >= h: (L, nh, L, d)
        filters = torch.stack(
            [F.pad(conv.weight[:, 0], (0, 0, 0, length - conv.weight.shape[2])) for conv in self.conv_h]
        )
        bias = torch.stack([conv.bias for conv in self.conv_h]).flatten()  # (L * nh,), height-major
        channels = bias.shape[0]
        # padding_tail[h, f, a] = sum_{a <= j < h} W_h[j] . e_0: the part of a window below the history's end
        # e_0 is detached: as an input the padding row gets no gradient (``padding_idx``), as in RecBole
        on_padding = filters @ self.item_embedding.weight[0].detach()  # (L, nh, L)
        padding_tail = F.pad(on_padding.flip(-1).cumsum(-1).flip(-1), (0, 1)).reshape(channels, length + 1)
        # products[b, hf, j, s] = W_h[j] . x[b, s]; only j < W can meet an item of the window
        embedded = self.item_embedding(windows)  # (B, W, d)
        kernel = filters[:, :, :width].reshape(channels * width, -1)  # (L * nh * W, d)
        products = (kernel @ embedded.transpose(1, 2)).reshape(count, channels, width, width)
        # diagonal[b, hf, j, t] = products[b, hf, j, t + j] (0 past the window), by padding and
        # re-striding (rows of 2W + 1), summed over j' <= j
        skewed = F.pad(F.pad(products, (0, width)).flatten(2), (0, width))
        diagonal = skewed.view(count, channels, width, 2 * width + 1)[..., :width].cumsum(2)
        # + the padding part: a window holding the history's last j + 1 items has its rows j + 1.. on the
        # padding row, worth padding_tail[h, f, j + 1] whatever the window (added here, not gathered
        # per history, whose backward would sum many values per entry in a thread-dependent order)
        diagonal = diagonal + padding_tail[:, 1 : width + 1, None]
        # a prefix of length k: the window starting at t < k holds its k - t last items, then padding
        starts = torch.arange(width, device=windows.device)
        inside = (ends[:, None] - starts).clamp(min=1)  # (R, W): k - t, items of the history in the window
        flat = diagonal.reshape(count, channels, width * width)  # (B, hf, (k - t - 1) * W + t)
        channel = torch.arange(channels, device=windows.device)[:, None]
        sums = flat[rows[:, None, None], channel, ((inside - 1) * width + starts)[:, None, :]]
        values = sums + bias[:, None]
        # a window must start at t <= L - h (it fits in the L rows) and before the history's end
        height_of = torch.arange(1, heights + 1, device=windows.device).repeat_interleave(channels // heights)
        valid = (starts < ends[:, None])[:, None, :] & (starts[None, :] <= length - height_of[:, None])[None]
        best = values.masked_fill(~valid, float("-inf")).amax(dim=2)
        # the windows lying wholly in the padding all hold b_h + sum_j W_h[j] . e_0 (if one fits)
        all_padding = bias + padding_tail[:, 0]
        fits = ends[:, None] <= length - height_of[None, :]
        best = torch.where(fits, torch.maximum(best, all_padding), best)
        return F.relu(best)

    def represent(
        self, histories: torch.Tensor, users: torch.Tensor, horizontal: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(R, L) right-padded histories and (R,) user rows -> (R, d): RecBole's ``forward``.

        ``horizontal``, when given, is the horizontal branch already computed for these histories
        (by :meth:`horizontal_of_prefixes`)."""
        embedded = self.item_embedding(histories).unsqueeze(1)
        if horizontal is None:
            horizontal = self.horizontal(embedded)
        convolved = self.dropout(torch.cat([self.vertical(embedded), horizontal], dim=1))
        z = F.relu(self.fc1(convolved))
        return F.relu(self.fc2(torch.cat([z, self.user_embedding(users)], dim=1)))

    def regularisation(self) -> torch.Tensor:
        """RecBole's penalties: reg_weight x (Frobenius norms of U, E, W_v, W_fc1, W_fc2 and every W_h)."""
        weights = [self.user_embedding.weight, self.item_embedding.weight, self.conv_v.weight]
        weights += [self.fc1.weight, self.fc2.weight] + [conv.weight for conv in self.conv_h]
        return self.config.reg_weight * torch.stack([w.norm(2) for w in weights]).sum()

    def horizontal_of_windows(self, batch: Batch, rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor | None:
        """The horizontal branch of the prefixes ``batch.items[rows[r], :ends[r]]`` (a training batch).

        :meth:`horizontal_of_prefixes` on the targets in groups of similar window length
        (:func:`~recbench.layers.by_length_groups`), each group's windows trimmed to its longest:
        its cost grows with the square of the width, so a batch mixing
        lengths (random batches, ``bucket_by_length = false``) padded to its longest window would
        cost up to 90x more on Scientific. A batch that splitting would save less (one length, as
        bucketed batches) is one call on the batch as it is. None when a window is longer than L
        (the caller convolves those histories directly).
        """
        if batch.items.shape[1] > self.window:
            return None
        widths = batch.lengths
        # split only where that saves three quarters of the work: bucketed batches (one length, or
        # a leftover few, at most 3x on Scientific) keep their arithmetic and repeat earlier runs
        # bit for bit; random batches save 20-90x
        if 4 * int((widths**2).sum()) >= len(widths) * batch.items.shape[1] ** 2:
            return self.horizontal_of_prefixes(batch.items, rows, ends)

        def encode_group(targets: torch.Tensor, width: int) -> torch.Tensor:
            windows, local_rows = rows[targets].unique(return_inverse=True)
            return self.horizontal_of_prefixes(batch.items[windows, :width], local_rows, ends[targets])

        # targets grouped by their window's length, each group's windows trimmed to its longest
        return by_length_groups(widths[rows], encode_group)

    def loss(self, batch: Batch) -> torch.Tensor:
        rows, positions = (batch.targets > 0).nonzero(as_tuple=True)
        histories = self.recent(batch.items[rows], positions + 1)  # one L-wide row per target
        # each history is a prefix of its window
        horizontal = self.horizontal_of_windows(batch, rows, positions + 1)
        output = self.represent(histories, self.user_rows(batch)[rows], horizontal)
        loss = F.cross_entropy(output @ self.item_embedding.weight.T, batch.targets[rows, positions])
        return loss + self.regularisation() if self.config.reg_weight > 0 else loss

    def horizontal_of_histories(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(R, L) right-padded histories holding (R,) items each -> (R, nh * L), as :meth:`horizontal`.

        A history of k items is the last prefix of a window of width k, so the short ones go through
        :meth:`horizontal_of_prefixes` in groups of similar length; it costs about 25.6k x W^2
        multiply-adds per history of a group of width W (RecBole's sizes), less than the direct
        convolutions' 10.7M up to W = 16. Longer histories take the direct convolutions.
        """
        dtype = self.item_embedding.weight.dtype
        output = histories.new_empty(histories.shape[0], self.config.nh * self.window, dtype=dtype)
        shorter = torch.zeros_like(lengths, dtype=torch.bool)
        for width in (w for w in (2, 4, 8, 16) if w < self.window):
            group = (lengths <= width) & ~shorter
            shorter |= group
            if group.any():
                rows = group.nonzero().squeeze(1)
                windows = histories[rows, :width]
                output[rows] = self.horizontal_of_prefixes(
                    windows, torch.arange(len(rows), device=rows.device), lengths[rows]
                )
        if (~shorter).any():
            rows = (~shorter).nonzero().squeeze(1)
            output[rows] = self.horizontal(self.item_embedding(histories[rows]).unsqueeze(1))
        return output

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        histories = self.recent(batch.items, batch.lengths)
        horizontal = self.horizontal_of_histories(histories, batch.lengths.clamp(max=self.window))
        return self.represent(histories, self.user_rows(batch), horizontal), self.item_embedding.weight

    def score(self, batch: Batch) -> torch.Tensor:
        output, items = self.query_and_items(batch)
        return output @ items.T

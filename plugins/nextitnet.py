"""NextItNet: stacked dilated causal convolutions over item ID embeddings, as RecBole implements it.

Paper: Yuan, Karatzoglou, Arapakis, Jose, He, "A Simple Convolutional Generative Network for Next
Item Recommendation", WSDM 2019.
Checked against: RecBole ``recbole/model/sequential_recommender/nextitnet.py``,
``recbole/properties/model/NextItNet.yaml`` and ``recbole/model/loss.py`` (``RegLoss``) at v1.0.1
(80c58c0a), v1.1.1 (9518991a) and 7b02be5e (v1.2.1 + 11 commits); the model code is the same in all
three (formatting only).

Faithful to RecBole:
- item embedding (N + 1 rows, row 0 = padding) -> ``block_num`` repetitions of ``dilations``
  residual blocks -> ``nn.Linear(embedding, embedding)`` -> dot products with every embedding row.
  Defaults: embedding 64, kernel 3, ``dilations`` [1, 4], ``block_num`` 5, so 10 blocks.
- Residual block (the paper's block (b), the one RecBole uses): x -> left zero-pad ->
  conv(kernel k, dilation d) -> LayerNorm(eps 1e-8) -> ReLU -> left zero-pad -> conv(kernel k,
  dilation 2d) -> LayerNorm -> ReLU, + x. Each convolution sees only its position and earlier ones
  (left padding of (k - 1) x dilation), so the block dilations per repetition of [1, 4] are
  1, 2, 4, 8 and the receptive field is 1 + 3 (k - 1) x sum(dilations) x block_num = 151 positions
  with the defaults. Channels = embedding size (RecBole's residual_channels).
- Read-out (``readout="padded_end"``, the default, RecBole's): RecBole right-pads every history to
  ``MAX_ITEM_LIST_LENGTH`` (50) and reads the output at the *last column*, not at the last item, so
  a history of n < 50 items is followed by 50 - n padding embeddings before it is read (the padding
  row is random, see below, and the receptive field spans the whole width). Scoring rebuilds that
  input: the history, then padding up to ``max_seq_length``. ``readout="last_item"`` reads the
  output at the last item instead (the paper's generative reading; cheaper, see below).
- Loss: CE over all N + 1 rows (the padding row is a class) + ``reg_weight`` x (||E||_2 +
  ||W_final||_2) + ``reg_weight`` x the sum of ||w||_2 over every residual-block parameter whose
  name ends in "weight" (convolutions and LayerNorm scales), per batch, as RecBole; norms are
  Frobenius norms, not squared. Only the CE loss is offered (RecBole's default).
- Initialisation (``_init_weights``): the item embedding uniform(+-sqrt(1 / (N + 1))), padding row
  included (no gradient as an input, trained as a CE class); the final Linear xavier_normal_ with
  bias 0.1; convolutions and LayerNorms keep PyTorch's defaults.

Deviations:
- Convolutions are ``nn.Conv1d`` modules (RecBole: ``nn.Conv2d`` with (1, k) kernels): the same
  default initialisation (fan-in = channels x k), state-dict shapes without the singleton axis.
  They run as RecBole's 2-D convolution over a channels-last view (:meth:`ResidualBlock.causal_conv`).
- Padded width: RecBole pads to the longest history list of the dataset, which is 50 whenever a
  history reaches ``MAX_ITEM_LIST_LENGTH``; here always to ``max_seq_length``.
- Training with ``padded_end``: each (prefix, target) sample of a training window becomes its own
  ``max_seq_length``-wide row, as RecBole's samples: the cost and memory of RecBole per sample
  (a 2048-target batch holds 2048 x 50 positions through 20 convolutions). With ``last_item``, one
  causal pass over a window predicts every next item at once (same outputs as per-prefix rows).
  Windows longer than ``max_seq_length + 1`` are cut by the Trainer as for every method.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recbench.method import Batch, DataSpec, Method, MethodConfig, StrictNonNegativeFloat, StrictPositiveInt
from recbench.registry import register


class NextItNetConfig(MethodConfig):
    """NextItNet hyper-parameters; defaults = RecBole's NextItNet.yaml."""

    embedding_size: StrictPositiveInt = 64
    """Width of item embeddings and of every residual block (RecBole's residual_channels)."""
    kernel_size: StrictPositiveInt = 3
    """Width of each causal convolution."""
    dilations: Annotated[list[StrictPositiveInt], Field(min_length=1)] = [1, 4]
    """Dilation d of each residual block of one repetition (the block's second convolution uses 2d)."""
    block_num: StrictPositiveInt = 5
    """Repetitions of ``dilations``: ``block_num * len(dilations)`` residual blocks in all."""
    reg_weight: StrictNonNegativeFloat = 1e-5
    """Weight of the L2 (Frobenius norm) penalty on embeddings, final layer and residual-block weights."""
    readout: Literal["padded_end", "last_item"] = "padded_end"
    """Where the output is read: after padding to max_seq_length (RecBole) or at the last item (paper)."""


class ResidualBlock(nn.Module):
    """The paper's residual block (b): two dilated causal convolutions (d, 2d), each + LayerNorm + ReLU."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.ln1 = nn.LayerNorm(channels, eps=1e-8)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, dilation=2 * dilation)
        self.ln2 = nn.LayerNorm(channels, eps=1e-8)

    def causal_conv(self, conv: nn.Conv1d, x: torch.Tensor, dilation: int) -> torch.Tensor:
        """(B, L, C) -> (B, L, C): left zero-padding, so position t sees positions <= t only.

        Computed as a (1, k) 2-D convolution over the channels-last view of ``x`` (as RecBole's
        ``nn.Conv2d``): no transposed copies in or out, about 1.4x faster per convolution than
        ``conv1d`` over a transposed copy on CPU (same values to float rounding).
        """
        padded = F.pad(x, (0, 0, (self.kernel_size - 1) * dilation, 0))  # (B, pad + L, C), contiguous
        channels_last = padded.permute(0, 2, 1).unsqueeze(2)  # (B, C, 1, pad + L) without a copy
        out = F.conv2d(channels_last, conv.weight.unsqueeze(2), conv.bias, dilation=(1, dilation))
        return out.squeeze(2).permute(0, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.ln1(self.causal_conv(self.conv1, x, self.dilation)))
        out = F.relu(self.ln2(self.causal_conv(self.conv2, out, 2 * self.dilation)))
        return out + x


@register("nextitnet")
class NextItNet(Method):
    """NextItNet: dilated causal residual convolutions over item IDs, full-softmax CE (RecBole)."""

    Config = NextItNetConfig

    def __init__(self, config: NextItNetConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        width = config.embedding_size
        self.item_embedding = nn.Embedding(spec.num_items + 1, width, padding_idx=0)
        self.residual_blocks = nn.Sequential(
            *(ResidualBlock(width, config.kernel_size, d) for d in config.dilations * config.block_num)
        )
        self.final_layer = nn.Linear(width, width)
        bound = math.sqrt(1.0 / (spec.num_items + 1))  # RecBole's n_items counts the padding
        nn.init.uniform_(self.item_embedding.weight, -bound, bound)
        nn.init.xavier_normal_(self.final_layer.weight)
        nn.init.constant_(self.final_layer.bias, 0.1)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """(B, L) item ids -> (B, L, d) block outputs; the output at t depends on items 0..t only."""
        return self.residual_blocks(self.item_embedding(items))

    def padded_rows(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L) histories -> (B, max(L, max_seq_length)): each history, then padding (RecBole's input)."""
        width = max(items.shape[1], self.spec.max_seq_length)
        kept = items * (torch.arange(items.shape[1], device=items.device) < lengths[:, None])
        return F.pad(kept, (0, width - items.shape[1]))

    def regularisation(self) -> torch.Tensor:
        """RecBole's penalties: reg_weight x (Frobenius norms of E, W_final and every block weight)."""
        norms = [self.item_embedding.weight.norm(2), self.final_layer.weight.norm(2)]
        norms += [p.norm(2) for name, p in self.residual_blocks.named_parameters() if name.endswith("weight")]
        return self.config.reg_weight * torch.stack(norms).sum()

    def loss(self, batch: Batch) -> torch.Tensor:
        has_target = batch.targets > 0
        if self.config.readout == "last_item":
            hidden = self.encode(batch.items)[has_target]  # (T, d): every prefix in one causal pass
        else:  # one max_seq_length-wide row per (prefix, target) sample, read at its last column
            rows, ends = has_target.nonzero(as_tuple=True)
            hidden = self.encode(self.padded_rows(batch.items[rows], ends + 1))[:, -1]
        logits = self.final_layer(hidden) @ self.item_embedding.weight.T
        loss = F.cross_entropy(logits, batch.targets[has_target])
        return loss + self.regularisation() if self.config.reg_weight > 0 else loss

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.readout == "last_item":
            hidden = self.last_hidden(self.encode(batch.items), batch.lengths)
        else:
            hidden = self.encode(self.padded_rows(batch.items, batch.lengths))[:, -1]
        return self.final_layer(hidden), self.item_embedding.weight

    def score(self, batch: Batch) -> torch.Tensor:
        hidden, items = self.query_and_items(batch)
        return hidden @ items.T

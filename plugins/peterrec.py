"""PeterRec: a NextItNet pre-trained on source domains, fine-tuned on the target through model patches only.

Paper: Yuan, He, Karatzoglou, Zhang, "Parameter-Efficient Transfer from Sequential Behaviors for
User Modeling and Recommendation", SIGIR 2020.
Checked against the official code, fajieyuan/sigir2020_peterrec @3ae7cf61 (``ops.py``:
``nextitnet_residual_block``, ``get_mp``, ``peter_2mp_serial``; ``generator_recsys_cau.py`` and
``NextitNet_TF_Pretrain.py``: pre-training; ``generator_peterrec_cau_serial.py`` and
``PeterRec_cau_serial.py``: fine-tuning, the README's demo). The residual block is NextItNet's,
imported from recbench's ``nextitnet`` plugin.

Faithful to the official code:
- Backbone: item embedding -> ``dilations`` x ``block_num`` residual blocks (dilations [1, 4] x 4 =
  the official [1, 4, 1, 4, 1, 4, 1, 4], channels 64, kernel 3); each block: causal conv (d) ->
  LayerNorm (eps 1e-8) -> ReLU -> causal conv (2d) -> LayerNorm -> ReLU, + input.
- Pre-training (the transfer stage, ``--pretrain-on SOURCES``): NextItNet's generative objective,
  full-softmax CE of ``Linear(ReLU(h_t))`` (the official 1x1 ``logits`` convolution, its own
  weights, not the item embedding) against every next item; no patches.
- Model patches, serial insertion (``peter_2mp_serial``, the demo's ``PeterRec_cau_serial.py``):
  after each of the two convolutions of every block, before its LayerNorm,
  ``x -> x + up(GELU(down(x)))`` with ``down`` C -> ``patch_size`` and ``up`` back (1x1
  convolutions = Linear layers); bottleneck C / 4 = 16 (``get_mp`` with cardinality 1: one branch
  of width C / (4 x cardinality)); GELU is the tanh approximation, as ``ops.gelu``.
- Initialisation as the official (TF truncated normal = within 2 std): every convolution, patch
  layer, output layer and item table N(0, 0.02) truncated, biases 0, LayerNorm (1, 0). The patch is
  therefore near-identity (a residual around two small layers): a patched backbone's outputs start
  within about 1% of the backbone's (exactly equal with ``up`` zeroed; tested).
- Fine-tuning from a pre-trained run: the backbone's convolutions and first LayerNorms are loaded
  and frozen; trained are the patches, the second LayerNorm of every block (``layer_norm2``, the
  official var_list; ``train_layer_norm=false`` freezes it too) and a new target item table
  (truncated N(0, 0.02), L2 penalty ``item_l2 / 2 x ||E||^2``, the official
  ``l2_regularizer(0.02)``). The output is read at the last item (the official left-pads and reads
  the last column) and scored by dot products with the target item table, no output layer.

Departures (recbench's setting differs from the paper's):
- Target items are their own ids, the target's users are not the sources': the official model
  reads the user's *source* items through the frozen source embedding and scores target items with
  a new table. Here the target sequences are target items, so one new target table (N + 1 rows,
  initialised as the official target table) is both the input embedding and the candidate table,
  and it is trained. The source embedding and the pre-training output layer are not used on the
  target (frozen there; their shapes differ anyway).
- Fine-tuning objective: full-softmax CE over all target items at every position of a window
  (recbench's protocol; the official: one target label per sequence, BCE with one uniform
  negative). Pre-training: full softmax, as the official ``is_negsample = False``.
- Padding: causal convolutions pad with zeros on the left (as recbench's NextItNet); the official
  pads sequences with a padding item whose embedding is learned.
- Only serial insertion (the parallel one, ``peter_2mp_parallel``, adds the block input to the
  convolution output and is no identity at initialisation) and causal convolutions.
- Without ``--pretrain-on`` nothing is frozen: a NextItNet with patches trained end to end.
- Learning rate: recbench's 1e-3 for both stages (official: 1e-3 pre-training, 5e-4 fine-tuning).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field, StrictBool
from torch import nn

from recbench.method import Batch, DataSpec, Method, StrictNonNegativeFloat, StrictPositiveInt, TransferConfig
from recbench.registry import register
from recbench_plugins.nextitnet import ResidualBlock

STD = 0.02


def truncated_normal(tensor: torch.Tensor) -> None:
    """TF's truncated_normal_initializer(stddev=0.02): N(0, 0.02) redrawn outside two standard deviations."""
    nn.init.trunc_normal_(tensor, std=STD, a=-2 * STD, b=2 * STD)


class PeterRecConfig(TransferConfig):
    """PeterRec hyper-parameters; defaults = the official code's model_para."""

    embedding_size: StrictPositiveInt = 64
    """Width of item embeddings and of every residual block (dilated_channels)."""
    kernel_size: StrictPositiveInt = 3
    """Width of each causal convolution."""
    dilations: Annotated[list[StrictPositiveInt], Field(min_length=1)] = [1, 4]
    """Dilation d of each residual block of one repetition (the block's second convolution uses 2d)."""
    block_num: StrictPositiveInt = 4
    """Repetitions of ``dilations`` (official: [1, 4] four times, 8 blocks)."""
    patch_size: StrictPositiveInt = 16
    """Bottleneck width of each model patch (official: channels / 4)."""
    train_layer_norm: StrictBool = True
    """Fine-tune the second LayerNorm of every block with the patches (the official var_list)."""
    item_l2: StrictNonNegativeFloat = 0.02
    """L2 penalty item_l2 / 2 x ||E||^2 on the target item table in fine-tuning (l2_regularizer(0.02))."""


class ModelPatch(nn.Module):
    """x -> x + up(GELU(down(x))): the residual bottleneck grafted after a convolution."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(channels, width)
        self.up = nn.Linear(width, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.gelu(self.down(x), approximate="tanh"))


class PatchedBlock(ResidualBlock):
    """NextItNet's residual block with a model patch after each convolution (serial insertion)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, patch_size: int) -> None:
        super().__init__(channels, kernel_size, dilation)
        self.patch1 = ModelPatch(channels, patch_size)
        self.patch2 = ModelPatch(channels, patch_size)

    def forward(self, x: torch.Tensor, patched: bool = True) -> torch.Tensor:
        def patch(module: ModelPatch, h: torch.Tensor) -> torch.Tensor:
            return module(h) if patched else h

        out = F.relu(self.ln1(patch(self.patch1, self.causal_conv(self.conv1, x, self.dilation))))
        out = F.relu(self.ln2(patch(self.patch2, self.causal_conv(self.conv2, out, 2 * self.dilation))))
        return out + x


@register("peterrec")
class PeterRec(Method):
    """PeterRec: NextItNet pre-trained on sources; patches, LayerNorm 2 and target items fine-tuned."""

    Config = PeterRecConfig
    supports_pretraining = True

    def __init__(self, config: PeterRecConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        width = config.embedding_size
        self.item_embedding = nn.Embedding(spec.num_items + 1, width, padding_idx=0)
        self.residual_blocks = nn.ModuleList(
            PatchedBlock(width, config.kernel_size, d, config.patch_size) for d in config.dilations * config.block_num
        )
        self.source_output = nn.Linear(width, spec.num_items + 1)  # pre-training only (the official `logits`)
        for name, parameter in self.named_parameters():
            if name.endswith("bias") and "ln" not in name:
                nn.init.zeros_(parameter)
            elif "ln" not in name:
                truncated_normal(parameter)

    def encode(self, items: torch.Tensor, patched: bool = True) -> torch.Tensor:
        """(B, L) item ids -> (B, L, d) block outputs (causal); ``patched=False``: the backbone alone."""
        hidden = self.item_embedding(items)
        for block in self.residual_blocks:
            hidden = block(hidden, patched=patched)
        return hidden

    # --- pre-training on the sources: NextItNet without patches --------------------------------------
    def pretrain_loss(self, batch: Batch) -> torch.Tensor:
        has_target = batch.targets > 0
        hidden = self.encode(batch.items, patched=False)[has_target]
        return F.cross_entropy(self.source_output(F.relu(hidden)), batch.targets[has_target])

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Load the backbone's convolutions and LayerNorms and freeze them (LayerNorm 2 trains unless
        ``train_layer_norm`` is false); the item table and the patches stay fresh and train."""
        own = self.state_dict()
        backbone = {
            name: value
            for name, value in state.items()
            if name.startswith("residual_blocks.")
            and ".patch" not in name
            and name in own
            and own[name].shape == value.shape
        }
        self.load_state_dict(backbone, strict=False)
        for block in self.residual_blocks:
            frozen = [block.conv1, block.conv2, block.ln1] + ([] if self.config.train_layer_norm else [block.ln2])
            for module in frozen:
                module.requires_grad_(False)
        self.source_output.requires_grad_(False)  # unused on the target
        return sorted(set(own) - set(backbone))

    # --- the target -----------------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        has_target = batch.targets > 0
        hidden = self.encode(batch.items)[has_target]
        loss = F.cross_entropy(hidden @ self.item_embedding.weight.T, batch.targets[has_target])
        if self.config.item_l2 > 0:
            loss = loss + self.config.item_l2 / 2 * self.item_embedding.weight.pow(2).sum()
        return loss

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.last_hidden(self.encode(batch.items), batch.lengths), self.item_embedding.weight

    def score(self, batch: Batch) -> torch.Tensor:
        hidden, items = self.query_and_items(batch)
        return hidden @ items.T

"""LSH-SR: IDA-SR with a learnable locality-sensitive-hashing semantic mapping fused with item IDs.

Source: the reproduction report of IDA-SR (Mu et al., CCIR 2022) that proposes LSH-SR; no paper or
official code to check against. Same encoder, pre-training tasks and
fine-tuning as IDA-SR (``plugins/idasr.py``); only the item representation changes:

1. m hash functions (``n_hash_tables`` = 3), each with h random hyperplanes w (``n_hyperplanes``
   = 10): bit_j = 1[w_j^T m_i > 0], code c_k = sum_j 2^(j-1) bit_j in [0, 2^h).
2. m hash-embedding tables E_k in R^(2^h x d); item i's m looked-up vectors E_k[c_k(i)] are
   multiplied element-wise with its ID embedding e_i, concatenated (m d), and passed through a
   DNN (``dnn_layers`` = 4, ReLU between layers).
3. Residual gate (Eq. 13-14): gate(m~, e_i) = g * m~ + (1 - g) * e_i with m~ = the DNN output and
   g = sigmoid(learnable vector); the item representation is gate(m~, e_i) + e_i.

The report's ablation "remove resnet gating" (Table 5) is described in its text as removing "the
gating network of the residual connection" (移除残差连接的门控网络). What it removes is the gating
network, i.e. Eq. 13; the residual connection it belongs to (the + e_i of Eq. 14) stays. So
``use_gate = false`` gives m~ + e_i: the DNN output plus the ID embedding, no gate. The other
reading, where the residual goes too, is ``residual = false`` as well (the DNN output alone); the
report runs no such variant. ``residual = false`` with the gate on gives g * m~ + (1 - g) * e_i.

The [MASK] input of masked-item prediction (``mask_token``, see ``plugins/idasr.py``): with
``text_row`` (the default) the [MASK] is one more item, the zero row N + 1 of the frozen text table,
so it goes through steps 1-3 like any item, and so it also has a row (N + 1) in the ID table; that
row is learned, as every ID row is. A zero text row hashes to code 0 in every table, so what sets
the [MASK] apart is its ID row. The report gives no parameter count for LSH-SR.

The hyperplanes are learnable. The sign is not differentiable, so we use a straight-through
estimator: the forward pass uses the hard code's embedding, and the backward pass reaches the
hyperplanes through the expected embedding under independent soft bits sigmoid(w^T m / T)
(against a detached table, so the tables learn only from the hard look-up). Only the gradient of
that expectation is needed, so it is computed in the backward pass alone (``SoftCodeGradient``)
and the forward pass returns the hard look-up exactly.
Hyperplanes start N(0, 1) (random-projection LSH); the ID embedding starts N(0, 0.02).
"""

from __future__ import annotations

import torch
from pydantic import StrictBool, field_validator
from torch import nn

from recbench.method import DataSpec, StrictPositiveFloat, StrictPositiveInt
from recbench.registry import register
from recbench_plugins.idasr import IDASR, IDASRConfig


class LSHSRConfig(IDASRConfig):
    """LSH-SR hyper-parameters; defaults = the reproduction report's settings."""

    use_id: StrictBool = True
    """LSH-SR always fuses hash embeddings with item ID embeddings."""
    n_hyperplanes: StrictPositiveInt = 10
    """Hyperplanes per hash function (codes in [0, 2^h))."""
    n_hash_tables: StrictPositiveInt = 3
    """Number of hash functions, each with its own hash-embedding table."""
    dnn_layers: StrictPositiveInt = 4
    """Layers of the DNN over the concatenated fused vectors."""
    use_gate: StrictBool = True
    """Gate of Eq. 13 between the DNN output and the ID embedding; false = the report's "remove resnet
    gating" ablation: the item representation is DNN output + ID embedding."""
    residual: StrictBool = True
    """The + e_i of Eq. 14 (the residual connection); false drops it (not a variant of the report)."""
    lsh_temperature: StrictPositiveFloat = 1.0
    """Temperature of the soft bits used by the straight-through gradient to the hyperplanes."""

    @field_validator("use_id")
    @classmethod
    def _always_uses_ids(cls, use_id: bool) -> bool:
        if not use_id:
            raise ValueError("must be true: LSH-SR fuses hash embeddings with item ID embeddings")
        return use_id


class LearnableLSH(nn.Module):
    """Text embeddings (N, t) -> hash-table vectors (N, m, d), hard codes forward, soft backward."""

    def __init__(
        self, text_size: int, n_hyperplanes: int, n_tables: int, dim: int, temperature: float, table_std: float
    ) -> None:
        super().__init__()
        self.table_std = table_std
        self.hyperplanes = nn.Parameter(torch.empty(n_tables, text_size, n_hyperplanes))
        self.tables = nn.Parameter(torch.empty(n_tables, 2**n_hyperplanes, dim))
        self.temperature = temperature
        self.register_buffer("powers", 2 ** torch.arange(n_hyperplanes), persistent=False)
        bits = (torch.arange(2**n_hyperplanes)[:, None] // self.powers) % 2  # (2^h, h): the bits of each code
        self.register_buffer("code_bits", bits.float(), persistent=False)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.hyperplanes)
        nn.init.normal_(self.tables, std=self.table_std)

    def project(self, text: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nt,mth->nmh", text, self.hyperplanes)  # (N, m, h)

    def codes(self, text: torch.Tensor) -> torch.Tensor:
        """(N, m) long codes c_k = sum_j 2^(j-1) 1[w_j^T m > 0]."""
        return ((self.project(text) > 0).long() * self.powers).sum(dim=-1)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        projection = self.project(text)  # (N, m, h)
        codes = ((projection > 0).long() * self.powers).sum(dim=-1)  # (N, m)
        hard = self.tables[torch.arange(self.tables.shape[0], device=text.device), codes]  # (N, m, d)
        if not (self.training and self.hyperplanes.requires_grad):
            return hard
        return hard + SoftCodeGradient.apply(projection, self.tables.detach(), self.code_bits, self.temperature)


class SoftCodeGradient(torch.autograd.Function):
    """Zero forward; backward = the gradient of the expected hash-table vector under soft bits.

    With s = sigmoid(w^T m / T) and P(c) = prod_j s_j^b_j (1 - s_j)^(1 - b_j), the expected vector
    is E = sum_c P(c) E_k[c]. Its gradient is all the straight-through estimator needs, so the
    (N, m, 2^h) x (2^h, d) product that would form E itself is skipped: one such product in the
    backward pass instead of two. d log P(c) / d(w^T m / T)_j = b_j(c) - s_j.
    """

    @staticmethod
    def forward(
        ctx, projection: torch.Tensor, tables: torch.Tensor, code_bits: torch.Tensor, temperature: float
    ) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(projection, tables, code_bits)
        ctx.temperature = temperature
        return projection.new_zeros(projection.shape[0], tables.shape[0], tables.shape[2])

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        projection, tables, code_bits = ctx.saved_tensors
        soft_bits = torch.sigmoid(projection / ctx.temperature)  # (N, m, h)
        # d loss / d log P(c) = P(c) <grad, E_k[c]>
        grad_log_prob = code_probabilities(soft_bits) * torch.einsum("nmd,mcd->nmc", grad_output, tables)
        grad_scaled = grad_log_prob @ code_bits - soft_bits * grad_log_prob.sum(dim=-1, keepdim=True)
        return grad_scaled / ctx.temperature, None, None, None


def code_probabilities(soft_bits: torch.Tensor) -> torch.Tensor:
    """(..., h) bit probabilities -> (..., 2^h) P(c) = prod_j P(bit j of c), c = sum_j 2^(j-1) bit_j.

    Built bit by bit as outer products, each new bit the most significant so far: half the time of
    exp(sum of log-probabilities) over the 2^h codes, and no exp.
    """
    per_bit = torch.stack((1 - soft_bits, soft_bits), dim=-1)  # (..., h, 2): P(bit = 0), P(bit = 1)
    probabilities = per_bit[..., 0, :]
    for bit in range(1, soft_bits.shape[-1]):
        probabilities = (per_bit[..., bit, :, None] * probabilities[..., None, :]).flatten(-2)
    return probabilities


@register("lshsr")
class LSHSR(IDASR):
    """LSH-SR: learnable LSH codes of item text, fused with ID embeddings through a gated DNN."""

    Config = LSHSRConfig
    mask_row_has_id = True

    def __init__(self, config: LSHSRConfig, spec: DataSpec) -> None:
        if not config.use_id:
            raise ValueError("LSH-SR fuses hash embeddings with ID embeddings: use_id must be true")
        super().__init__(config, spec)
        d = config.item_size
        sizes = [config.n_hash_tables * d] + [d] * config.dnn_layers
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(zip(sizes, sizes[1:])):
            layers += [nn.Linear(width_in, width_out)] + ([nn.ReLU()] if index < config.dnn_layers - 1 else [])
        self.dnn = nn.Sequential(*layers)
        self.gate_logit = nn.Parameter(torch.zeros(d)) if config.use_gate else None  # g = 0.5 at start
        for module in self.dnn:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=config.initializer_range)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.id_embedding.weight, std=config.initializer_range)

    @classmethod
    def pretraining_config(cls, config: LSHSRConfig) -> LSHSRConfig:
        """LSH-SR fuses source-item ID embeddings during pre-training too: IDA-SR's ``use_id`` reset is
        skipped, the shared reset of the fine-tuning keys (``Method.pretraining_config``) is not."""
        return super(IDASR, cls).pretraining_config(config)

    def build_item_representation(self, config: LSHSRConfig, text_size: int) -> nn.Module:
        return LearnableLSH(
            text_size,
            config.n_hyperplanes,
            config.n_hash_tables,
            config.item_size,
            config.lsh_temperature,
            config.initializer_range,
        )

    def text_rows(self) -> torch.Tensor:
        """(R, d) representation of every text row, each fused with its ID row (R = N + 1, + 1 for [MASK])."""
        ids = self.id_embedding.weight  # (R, d)
        hashed = self.item_representation(self.text)  # (R, m, d)
        return self.fuse(self.dnn((hashed * ids[:, None, :]).flatten(1)), ids)

    def fuse(self, mapped: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Eq. 13-14: g * m~ + (1 - g) * e + e; without the gate m~ + e; without the residual no + e."""
        if self.gate_logit is not None:
            gate = torch.sigmoid(self.gate_logit)
            mapped = gate * mapped + (1 - gate) * ids
        return mapped + ids if self.config.residual else mapped

    def item_table(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(N + 1, d): the item rows of ``text_rows()`` (which already hold the ID embeddings)."""
        return (self.text_rows() if rows is None else rows)[: self.spec.num_items + 1]

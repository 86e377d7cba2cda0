"""IDP: ID-centric pre-training with a cross-domain ID matcher (CDIM).

Paper: Wu, Xie, Zhang, Zhang, Zhuang, Lin, Kang, Xu, "ID-centric Pre-training for
Recommendation", arXiv 2405.03562 (2024). No official code was released; nothing to check against.

1. ID pre-training: SASRec-ID (``plugins/sasrec.py``) on the union of the source domains, item ids
   kept apart per domain (no alignment). Loss: BPR, -log sigmoid(s_pos - s_neg) averaged over
   target positions, s = <transformer output, item ID embedding>, one negative per target
   position drawn uniformly from the source items other than the positive.
2. CDIM (``finish_pretraining``): the sentence encoder (``text_encoder``, default the offline
   MiniLM) fine-tuned on the source items' texts with the sum of two InfoNCE losses, both with
   in-batch negatives and cosine / ``matcher_temperature``: (a) SimCSE, the same text encoded twice
   in train mode (two dropout masks); (b) behaviour, the positive of each anchor is one of its
   ``matcher_neighbours`` nearest source items by cosine of the pre-trained ID embeddings, drawn
   anew each step; in-batch positives of the other anchors are the negatives (those that are the
   same item as the anchor's own positive are masked). The tuned encoder is a submodule of the
   pre-training model only, and the tuned text embedding of every source item a buffer of it.
3. Tuning stage (``load_pretrained``): target texts are encoded with the tuned encoder; each target
   item takes the ``num_similar`` (m) source items of highest text cosine, weights
   softmax(cosine / matcher_temperature) over those m, and its ID embedding is the weighted sum of
   their pre-trained ID embeddings (:func:`generate_id_embeddings`).
4. Variants (one pre-training run): ``idp`` (transformer, positions and generated item embeddings
   loaded, all fine-tuned), ``idp-zeroshot`` (the same, no training on the target: epochs = 0),
   ``idp-newencoder`` (fresh SASRec, only the item embeddings generated). Target loss
   ``downstream_loss``: CE over all items (default, as the SASRec-ID rows) or BPR as pre-training.

Choices the paper leaves open, stated here: the weights (softmax at the matcher's temperature, so
they are the matcher's own retrieval distribution restricted to the top m), m = 10, k = 5, tau =
0.05 for both losses (SimCSE's), one matcher epoch over the source items, batch 64, AdamW at
constant lr 3e-5 (SimCSE's lr, no schedule). Deviation from RecBole's SASRec: the padding row of
the item table is zero and never trained (CE would otherwise train it as a class), so a generated
table's row 0 stays zero.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, StrictBool, model_validator

from recbench.errors import RecbenchError
from recbench.method import (
    Batch,
    ConfigRuleError,
    DataSpec,
    StrictNonNegativeInt,
    StrictPositiveFloat,
    StrictPositiveInt,
    TransferConfig,
)
from recbench.progress import ProgressDisplay
from recbench.registry import register
from recbench_plugins.sasrec import SASRec, SASRecConfig

DOWNSTREAM_KEYS = ("epochs", "patience", "zero_shot", "transfer", "downstream_loss", "num_similar")
"""Keys that only matter on the target: reset by ``pretraining_config`` so every variant (and every
m of the m search) shares one pre-training run."""
CHUNK_SIZE = 1024
"""Query rows per similarity block: memory stays (CHUNK_SIZE, source items) whatever the dataset size."""


def matcher_digest(weights: dict[str, torch.Tensor], settings: str) -> str:
    """A digest of a tuned matcher: its weights (names, dtypes, shapes, bytes) and its settings."""
    digest = hashlib.sha256(settings.encode())
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class IDPConfig(SASRecConfig, TransferConfig):
    """IDP hyper-parameters: SASRec-ID's (RecBole defaults, hidden 300) plus the matcher's."""

    transfer: Literal["full", "item_embeddings"] = "full"
    """What the target takes from pre-training: full (transformer, positions, generated item
    embeddings) or item_embeddings (a fresh SASRec whose item embeddings only are generated)."""
    zero_shot: StrictBool = False
    """Score the target with the transferred model as it is (requires epochs = 0)."""
    downstream_loss: Literal["ce", "bpr"] = "ce"
    """Target training loss: ce (full softmax, as SASRec-ID) or bpr (as pre-training)."""
    num_similar: StrictPositiveInt = 10
    """m: source items whose ID embeddings make up each target item's generated embedding."""
    matcher_epochs: StrictNonNegativeInt = 1
    """Epochs of matcher fine-tuning over the source items (0: the off-the-shelf encoder)."""
    matcher_batch_size: Annotated[int, Field(strict=True, ge=2)] = 64  # a batch of 1 has no in-batch negative
    """Source items per matcher step (the in-batch negatives)."""
    matcher_learning_rate: StrictPositiveFloat = 3e-5
    """AdamW learning rate of the matcher (SimCSE's range 1e-5..5e-5)."""
    matcher_temperature: StrictPositiveFloat = 0.05
    """tau of both contrastive losses and of the generation weights (SimCSE: 0.05)."""
    matcher_neighbours: StrictPositiveInt = 5
    """k: nearest source items by ID-embedding cosine that are behaviour positives of an item."""

    @model_validator(mode="after")
    def _zero_shot_trains_nothing(self) -> IDPConfig:
        if self.zero_shot and self.epochs != 0:
            message = "zero-shot IDP (zero_shot = true) trains nothing on the target, so epochs must be 0"
            raise ConfigRuleError("epochs", self.epochs, message)
        return self


# --- pure functions: losses, neighbours, embedding generation ------------------------------
def info_nce(
    anchors: torch.Tensor, candidates: torch.Tensor, temperature: float, same: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean InfoNCE: anchor i's positive is candidates[i], the other rows are its negatives.

    ``anchors``, ``candidates``: (B, t); logits are cosines / temperature. ``same`` (B, B) bool marks
    off-diagonal candidates that are not negatives of row i (they are the positive item again).
    """
    logits = F.normalize(anchors, dim=-1) @ F.normalize(candidates, dim=-1).T / temperature  # (B, B)
    if same is not None:
        logits = logits.masked_fill(
            same & ~torch.eye(len(logits), dtype=torch.bool, device=logits.device), float("-inf")
        )
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def simcse_loss(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """Unsupervised SimCSE: (B, t) two dropout views of the same texts; view 2 of text i is its positive."""
    return info_nce(first, second, temperature)


def behaviour_loss(
    anchors: torch.Tensor, positives: torch.Tensor, positive_items: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(B, t) anchor texts vs (B, t) texts of their behaviour positives (items ``positive_items`` (B,)).

    Another anchor's positive that is the same item as anchor i's positive is no negative of i.
    """
    same = positive_items[:, None] == positive_items[None, :]  # (B, B)
    return info_nce(anchors, positives, temperature, same)


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


def generate_id_embeddings(
    target_text: torch.Tensor,
    source_text: torch.Tensor,
    source_ids: torch.Tensor,
    m: int,
    temperature: float = 0.05,
    chunk_size: int = CHUNK_SIZE,
) -> torch.Tensor:
    """ID embeddings of target items from the ID embeddings of their m most text-similar source items.

    ``target_text`` (N, t), ``source_text`` (S, t), ``source_ids`` (S, d) -> (N, d): row n is
    sum_j w_j source_ids[j] over the m sources j of highest cosine(target_text[n], source_text[j]),
    w = softmax(cosine / temperature) over those m.
    """
    m = min(m, len(source_text))
    keys = F.normalize(source_text, dim=1)
    blocks = []
    for start in range(0, len(target_text), chunk_size):
        similarity = F.normalize(target_text[start : start + chunk_size], dim=1) @ keys.T  # (c, S)
        top, index = similarity.topk(m, dim=1)  # (c, m)
        weights = torch.softmax(top / temperature, dim=1)
        blocks.append(torch.einsum("cm,cmd->cd", weights, source_ids[index]))  # (c, d)
    return torch.cat(blocks) if blocks else source_ids.new_zeros(0, source_ids.shape[1])


def sample_negatives(positives: torch.Tensor, num_items: int) -> torch.Tensor:
    """(T,) item ids in 1..N -> (T,) ids drawn uniformly from 1..N without the positive."""
    offset = torch.randint(1, num_items, positives.shape, device=positives.device)
    return (positives - 1 + offset) % num_items + 1


def embed_texts(encoder: Any, texts: list[str]) -> torch.Tensor:
    """(len(texts), t) sentence embeddings with gradients (the encoder's mode decides dropout)."""
    tokenize = getattr(encoder, "preprocess", None) or encoder.tokenize
    features = {k: v.to(encoder.device) if isinstance(v, torch.Tensor) else v for k, v in tokenize(texts).items()}
    return encoder(features)["sentence_embedding"]


@register(
    "idp",
    variants={"idp-zeroshot": {"zero_shot": True, "epochs": 0}, "idp-newencoder": {"transfer": "item_embeddings"}},
)
class IDP(SASRec):
    """IDP: SASRec-ID pre-trained on sources; target ID embeddings generated by a text-based ID matcher."""

    Config = IDPConfig
    supports_pretraining = True
    needs_raw_text = True

    def __init__(self, config: IDPConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        # CE over N + 1 columns would train the padding row as a class; keep it at zero instead.
        self.item_embedding.weight.register_hook(
            lambda grad: grad.index_fill(0, grad.new_zeros(1, dtype=torch.long), 0.0)
        )

    @classmethod
    def pretraining_config(cls, config: IDPConfig) -> IDPConfig:
        """Every variant and every m pre-trains the same model: target-only keys take their defaults."""
        defaults = cls.Config.model_fields
        return config.model_copy(update={key: defaults[key].default for key in DOWNSTREAM_KEYS})

    def encoder_spec(self) -> Any:
        from recbench.data.encode import EncoderSpec

        return EncoderSpec(
            self.config.text_encoder,
            self.config.text_pooling,
            self.config.text_max_tokens,
            precision=self.config.text_precision,
        )

    # --- losses ---------------------------------------------------------------------------
    def bpr_loss(self, batch: Batch) -> torch.Tensor:
        """BPR with one uniform negative per target position: mean of -log sigmoid(s_pos - s_neg)."""
        hidden = self.encode(batch.items)  # (B, L, d)
        has_target = batch.targets > 0
        positives = batch.targets[has_target]  # (T,)
        negatives = sample_negatives(positives, self.spec.num_items)
        table = self.item_embedding.weight
        margin = (hidden[has_target] * (table[positives] - table[negatives])).sum(-1)  # (T,)
        return -F.logsigmoid(margin).mean()

    def pretrain_loss(self, batch: Batch) -> torch.Tensor:
        return self.bpr_loss(batch)

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.bpr_loss(batch) if self.config.downstream_loss == "bpr" else super().loss(batch)

    # --- cross-domain ID matcher (pre-training model only) -------------------------------
    def finish_pretraining(self, show_progress: bool = False) -> None:
        """Fine-tune the matcher on the source texts, then store it and every source item's tuned text embedding."""
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
            ids = self.item_embedding.weight.detach()[1:][with_text]  # (S', d)
            neighbours = with_text[
                behaviour_neighbours(ids, min(self.config.matcher_neighbours, len(with_text) - 1)).cpu()
            ]  # (S', k)
            self.tune_matcher(encoder, texts, with_text, neighbours, show_progress)
        encoder.eval()
        vectors = torch.from_numpy(
            encode_texts(texts, encoder, show_progress=show_progress, precision=self.config.text_precision)
        )
        source_text = torch.zeros(len(texts) + 1, vectors.shape[1], device=device)  # (S + 1, t), row 0 padding
        source_text[1 + with_text] = vectors[with_text].to(device)  # items without text stay zero: never matched
        self.matcher = encoder
        self.register_buffer("source_text", source_text)

    def tune_matcher(
        self, encoder: Any, texts: list[str], items: torch.Tensor, neighbours: torch.Tensor, show_progress: bool
    ) -> None:
        """SimCSE + behaviour contrastive fine-tuning of ``encoder`` over ``items`` (S',), neighbours (S', k)."""
        tau, size = self.config.matcher_temperature, self.config.matcher_batch_size
        optimizer = torch.optim.AdamW(encoder.parameters(), lr=self.config.matcher_learning_rate)
        steps = -(-len(items) // size)
        encoder.train()  # dropout on: it makes the two SimCSE views differ
        with ProgressDisplay("count", enabled=show_progress) as progress:
            task = progress.add_task("tune ID matcher", total=self.config.matcher_epochs * steps, status="")
            for epoch in range(self.config.matcher_epochs):
                order = torch.randperm(len(items))
                for start in range(0, len(items), size):
                    rows = order[start : start + size]
                    if len(rows) < 2:  # no in-batch negative: nothing to contrast
                        progress.advance(task)
                        continue
                    anchors = items[rows]  # (B,) 0-based item rows
                    positives = neighbours[rows, torch.randint(neighbours.shape[1], (len(rows),))]  # (B,)
                    anchor_texts = [texts[i] for i in anchors.tolist()]
                    first, second = (
                        embed_texts(encoder, anchor_texts),
                        embed_texts(encoder, anchor_texts),
                    )  # (B, t) each
                    behaviour = embed_texts(encoder, [texts[i] for i in positives.tolist()])  # (B, t)
                    loss = simcse_loss(first, second, tau) + behaviour_loss(
                        first, behaviour, positives.to(first.device), tau
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    progress.update(task, advance=1, status=f"epoch {epoch} loss {loss.item():.4f}")

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
        source_text, source_ids = (
            state["source_text"][1:].float().cpu(),
            state["item_embedding.weight"][1:].float().cpu(),
        )
        matchable = source_text.abs().sum(dim=1) > 0  # source items without text are never matched
        generated = generate_id_embeddings(
            target_text,
            source_text[matchable],
            source_ids[matchable],
            self.config.num_similar,
            self.config.matcher_temperature,
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
        with torch.no_grad():
            self.item_embedding.weight[1:] = generated.to(self.item_embedding.weight)
            self.item_embedding.weight[0].zero_()
        return sorted(set(own) - loaded)

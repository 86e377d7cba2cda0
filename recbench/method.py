"""The plugin contract (docs/architecture.md, Methods): what a method is given and what it must provide.

A method is an ``nn.Module`` subclass of :class:`Method`, registered by name with
:func:`recbench.registry.register`. It is built from its typed config and a :class:`DataSpec`,
and implements ``loss(batch) -> scalar`` and ``score(batch) -> (B, N + 1)``. It never reads files,
splits data, computes metrics or writes results: the Trainer and the Evaluator do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator
from torch import nn

from recbench.names import InvalidNameError, check_name

# Value types of config fields. Strict: a boolean is never a number, nor a number a boolean, and an
# integer field takes no float; a float field still takes an integer (``learning_rate = 1``).
StrictPositiveInt = Annotated[int, Field(strict=True, gt=0)]
"""An integer > 0 (sizes, widths, layers, heads, batch sizes, lengths)."""
StrictNonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
"""An integer >= 0 (epoch counts, patience)."""
StrictPositiveFloat = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
"""A finite number > 0 (learning rates, temperatures, epsilons)."""
StrictNonNegativeFloat = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
"""A finite number >= 0 (weight decays, loss weights)."""
Probability = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
"""A probability or ratio in [0, 1]."""
DropoutProbability = Annotated[float, Field(strict=True, ge=0, lt=1, allow_inf_nan=False)]
"""A dropout probability in [0, 1): dropout at 1 zeroes the whole tensor in training."""


class ConfigRuleError(ValueError):
    """A rule between config keys is broken; raised inside a config's model validator.

    ``key`` is the key the message is about and ``value`` its value:
    :func:`recbench.registry.resolve_config` reports it like a refused single value.
    """

    def __init__(self, key: str, value: Any, message: str) -> None:
        super().__init__(f"{key}: {message} (got {value!r})")
        self.key, self.value, self.message = key, value, message


class MethodConfig(BaseModel):
    """Hyper-parameters every method shares: the training protocol of the published tables.

    Defaults are RecBole's (the framework behind the UniSRec/VQ-Rec tables): Adam, lr 1e-3,
    batch 2048, at most 300 epochs, early stopping on valid NDCG@10 with stopping_step 10.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True, frozen=False)

    learning_rate: StrictPositiveFloat = 1e-3
    """Adam learning rate."""
    weight_decay: StrictNonNegativeFloat = 0.0
    """Adam weight decay (L2)."""
    train_batch_targets: StrictPositiveInt = 2048
    """Training batch size in target positions (RecBole's train_batch_size counts (prefix, target) samples)."""
    bucket_by_length: StrictBool = True
    """Pack training windows of equal length together (no padding); False mixes lengths in each batch."""
    epochs: StrictNonNegativeInt = 300
    """Maximum number of training epochs (0: no training, e.g. a zero-shot variant)."""
    patience: StrictNonNegativeInt = 10
    """Early stopping: stop once more than this many epochs in a row fail to improve valid NDCG@10."""
    max_seq_length: StrictPositiveInt = 50
    """Longest item history the model sees (the last items are kept)."""
    clip_grad_norm: StrictPositiveFloat | None = None
    """Clip the gradient norm to this value (None: no clipping, as RecBole)."""
    eval_batch_size: StrictPositiveInt = 256
    """Users scored per evaluation batch."""


class TransformerConfig(MethodConfig):
    """Shared keys of RecBole-style transformer encoders; defaults = RecBole's SASRec/BERT4Rec."""

    width_key: ClassVar[str] = "hidden_size"
    """The field that holds the transformer's width (subclasses name theirs); heads must divide it."""

    inner_size: StrictPositiveInt = 256
    """Width of the feed-forward layer inside each transformer block."""
    n_layers: StrictPositiveInt = 2
    """Number of transformer blocks."""
    n_heads: StrictPositiveInt = 2
    """Attention heads per block."""
    hidden_dropout_prob: DropoutProbability = 0.5
    """Dropout on embeddings and block outputs."""
    attn_dropout_prob: DropoutProbability = 0.5
    """Dropout on attention weights."""
    layer_norm_eps: StrictPositiveFloat = 1e-12
    """LayerNorm epsilon."""
    initializer_range: StrictPositiveFloat = 0.02
    """Standard deviation of the normal initialisation."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerConfig:
        width = getattr(self, self.width_key, None)
        if isinstance(width, int) and width % self.n_heads:
            raise ConfigRuleError("n_heads", self.n_heads, f"must divide {self.width_key} = {width}")
        return self


class TextMethodConfig(MethodConfig):
    """Shared keys of methods that read item texts: which encoder turns texts into vectors."""

    text_encoder: Annotated[str, Field(min_length=1)] = "all-MiniLM-L6-v2"
    """Sentence encoder (any Hugging Face name; the papers use bert-base-uncased with CLS pooling)."""
    text_pooling: Literal["cls", "mean"] = "mean"
    """Pooling of the encoder's token vectors: cls or mean."""
    text_max_tokens: StrictPositiveInt = 256
    """Tokens of each item text the encoder reads."""
    text_precision: Literal["float32", "bfloat16"] = "float32"
    """Encoder arithmetic: float32 (reproducible) or bfloat16 (about 2x faster on CPUs with native bf16)."""


TEXT_CODES = "text"
IMPORTED_CODES = "imported:"


class ItemCodesConfig(MethodConfig):
    """Shared key of methods that represent items by discrete codes: where the codes come from."""

    item_codes: str = TEXT_CODES
    """Item codes: text (built by the method from its text embeddings) or imported:NAME (the codes
    imported with `recbench encode DATASET --import-codes INDEX --unisrec-dir DIR --codes-name NAME`)."""

    @field_validator("item_codes")
    @classmethod
    def _text_or_imported_name(cls, value: str) -> str:
        if value == TEXT_CODES:
            return value
        if not value.startswith(IMPORTED_CODES):
            raise ValueError(f"must be '{TEXT_CODES}' or '{IMPORTED_CODES}NAME'")
        try:
            check_name("item codes", value[len(IMPORTED_CODES) :])
        except InvalidNameError as err:
            raise ValueError(str(err)) from None
        return value

    @property
    def imported_codes(self) -> str | None:
        """The name of the imported codes asked for, or None for codes built from text."""
        return self.item_codes[len(IMPORTED_CODES) :] if self.item_codes.startswith(IMPORTED_CODES) else None


FINE_TUNING_KEYS = ("learning_rate", "train_batch_targets", "epochs", "patience", "eval_batch_size")
"""MethodConfig keys that only the training on the target reads. :meth:`Method.pretraining_config`
resets them to their defaults, so they never enter a pre-training run's identity: fine-tunings that
differ only in them share one pre-training run. Pre-training has its own ``pretrain_*`` keys."""


def with_defaults(config: MethodConfig, keys: Sequence[str]) -> MethodConfig:
    """A copy of ``config`` with ``keys`` (those its class has) set back to the class's defaults."""
    defaults = type(config).model_fields
    return config.model_copy(update={key: defaults[key].default for key in keys if key in defaults})


class TransferConfig(TextMethodConfig):
    """Shared keys of methods that pre-train on source domains before training on the target.

    The pre-training defaults are UniSRec's and VQ-Rec's official ones (RUCAIBox/UniSRec and
    RUCAIBox/VQ-Rec ``props/pretrain.yaml``: ``pretrain_epochs: 300``, ``train_batch_size: 8192``,
    no learning rate, so RecBole's ``learning_rate: 0.001``). A method whose paper gives other values
    overrides them in its Config; the others keep these and say so.
    """

    pretrain_epochs: StrictNonNegativeInt = 300
    """Epochs of pre-training on the union of the source domains (no validation). 300: the official
    UniSRec/VQ-Rec budget (their released checkpoints are ``*-FHCKM-300.pth``); a full run on the
    five Amazon sources is long, so recipes set their own budget (see their notes)."""
    pretrain_learning_rate: StrictPositiveFloat = 1e-3
    """Adam learning rate of pre-training (``learning_rate`` is the target's only)."""
    pretrain_batch_targets: StrictPositiveInt = 8192
    """Pre-training batch size in target positions (``train_batch_targets`` is the target's only); the
    in-batch negatives of a contrastive pre-training loss are the batch's other targets."""


@dataclass(frozen=True)
class ItemCodes:
    """Externally provided discrete item codes: ``M`` codes per item, each in ``[0, num_codes)``."""

    codes: torch.Tensor
    """(N + 1, M) long; zeros for row 0 (padding) and for items without a code."""
    has_code: torch.Tensor
    """(N + 1,) bool: False for row 0 and for items the source gave no code (the method codes those)."""
    num_codes: int
    """K: values each code can take (2**bits for a product quantiser)."""
    name: str
    """The name the codes were imported under (``item_codes = "imported:NAME"``)."""
    sha256: str
    """Digest of the codes and the mask (part of the run's identity)."""

    @property
    def code_dim(self) -> int:
        """M: codes per item."""
        return int(self.codes.shape[1])

    @property
    def items_without_code(self) -> int:
        """Real items (padding excluded) the source gave no code."""
        return int((~self.has_code[1:]).sum())


@dataclass(frozen=True)
class OfficialParameter:
    """One tensor of an official pre-trained checkpoint and where it goes in the recbench model."""

    source: str
    """Its name in the official ``state_dict``."""
    target: str
    """The recbench state-dict name it is loaded into."""
    row: int | None = None
    """Load it into ``target[row]`` (e.g. one expert of a stacked tensor); None: the whole tensor."""
    transpose: bool = False
    """Transpose it first (``nn.Linear`` keeps (out, in); a stacked recbench weight may keep (in, out))."""


@dataclass(frozen=True)
class OfficialParameterMap:
    """How an official checkpoint's parameters map onto a method (see docs/official-checkpoints.md)."""

    parameters: tuple[OfficialParameter, ...]
    ignored: dict[str, str] = field(default_factory=dict)
    """Official names (regular expressions) deliberately not loaded, with the reason (e.g. a table of
    the pre-training items); still reported as unmapped."""
    shape_hints: dict[str, str] = field(default_factory=dict)
    """Extra advice for a shape mismatch, by recbench target name (e.g. which text encoder fits)."""


@dataclass
class DataSpec:
    """What a method may know about the data: item and user counts, history length and, if declared, text."""

    num_items: int
    """N: item ids are 1..N, 0 is padding; scores have N + 1 columns."""
    max_seq_length: int
    item_text_embeddings: torch.Tensor | None = None
    """(N + 1, d) float32, row 0 zeros; only for methods with ``needs_text = True``."""
    item_text_embeddings_word_dropped: torch.Tensor | None = None
    """(N + 1, d) embeddings of the texts with 15% of words dropped (UniSRec's feat2CLS); only when
    pre-training a method with ``needs_word_dropped_text = True``."""
    train_item_mask: torch.Tensor | None = None
    """(N + 1,) bool: True for items that occur in some user's training part (history or target)."""
    item_texts: list[str] | None = None
    """Raw text of item ids 1..N (position i - 1); only for methods with ``needs_raw_text = True``."""
    item_codes: ItemCodes | None = None
    """Externally provided discrete item codes; only when the config (an :class:`ItemCodesConfig`)
    asks for ``imported:NAME``."""
    num_users: int = 0
    """U: user ids in ``Batch.users`` are 1..U, 0 is the unknown user; a user table has U + 1 rows.
    0 when the users are not known (then every user is the unknown user)."""


@dataclass
class Batch:
    """A batch of item sequences, oldest first, right-padded with 0.

    ``targets[b, t]`` is the next item after position ``t`` (0 where there is none); training
    batches have it, evaluation batches do not. ``users[b]`` is the id of the user whose sequence
    row ``b`` is (dataset user ``u`` has id ``u + 1``; 0 is the unknown user), or None when the
    caller does not know the users; only methods with ``needs_users = True`` read it.
    """

    items: torch.Tensor  # (B, L) long
    lengths: torch.Tensor  # (B,) long, >= 1
    targets: torch.Tensor | None = None  # (B, L) long
    users: torch.Tensor | None = None  # (B,) long, 0..U

    def to(self, device: torch.device | str) -> Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(
            **{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in moved.items()}
        )

    @property
    def size(self) -> int:
        return self.items.shape[0]


# --- architecture search hook (AutoMLP's short-term length) ------------------------
@dataclass
class SearchData:
    """What an architecture search may use; every field is built only when called."""

    build: Callable[[MethodConfig], Method]
    """A fresh model of the method for a config (with the item text, if the method needs it)."""
    train_batches: Callable[[int], list[Batch]]
    """The shuffled training batches of an epoch, exactly as the Trainer makes them."""
    valid_batches: Callable[[], list[Batch]]
    """Every user's valid history with the valid item as its only target (``targets[b, length - 1]``)."""
    save_state: Callable[[dict[str, Any]], None] | None = None
    """Keep the search's state (tensors and plain values) so an interrupted run continues it; the
    caller adds the random generators' states. None: nowhere to keep it (e.g. a direct call)."""
    load_state: Callable[[], dict[str, Any] | None] | None = None
    """The state last given to ``save_state`` (the random generators restored to that point), or
    None if the search has not saved one."""


@dataclass
class SearchOutcome:
    """The result of an architecture search: config updates for the final model, and what to record."""

    config_updates: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)


# --- end of the architecture search hook ---------------------------------------------------


class Method(nn.Module, ABC):
    """Base class of every recommender plugin."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    needs_text: ClassVar[bool] = False
    """True if the method may read ``DataSpec.item_text_embeddings`` (its Config is then a
    TextMethodConfig); :meth:`needs_text_for` says whether a given config does."""
    causal: ClassVar[bool] = True
    """True if the score after a sequence ignores anything placed beyond its length (tested)."""
    supports_pretraining: ClassVar[bool] = False
    """True if the method implements ``pretrain_loss`` (its Config must subclass TransferConfig)."""
    pretrains_on_target: ClassVar[bool] = False
    """True if the method pre-trains on the training part of its target dataset itself (self-supervised
    pre-training, S3-Rec), never on other domains: :func:`recbench.runs.experiment.run_experiment` runs
    that stage before training whenever ``pretrain_epochs > 0``, without ``--pretrain-on`` (requires
    ``supports_pretraining``)."""
    needs_word_dropped_text: ClassVar[bool] = False
    """True if pre-training also needs ``DataSpec.item_text_embeddings_word_dropped``."""
    needs_raw_text: ClassVar[bool] = False
    """True if the method needs ``DataSpec.item_texts`` (e.g. to fine-tune a text encoder)."""
    needs_users: ClassVar[bool] = False
    """True if the method reads ``Batch.users`` (a user embedding table of ``DataSpec.num_users + 1`` rows)."""

    @classmethod
    def needs_text_for(cls, config: MethodConfig) -> bool:
        """Whether a model of this config reads ``DataSpec.item_text_embeddings``, which are then
        encoded (or read from the cache) before it is built; ``needs_text`` unless overridden."""
        return cls.needs_text

    def __init__(self, config: MethodConfig, spec: DataSpec) -> None:
        super().__init__()
        self.config = config
        self.spec = spec
        self._pass_cache: dict[str, Any] | None = None

    @property
    def trains_on_samples(self) -> bool:
        """True if the Trainer's batches should hold one (prefix, target) sample per row, shuffled
        across the epoch as RecBole's training loader builds them (``TrainingWindows(samples=True)``:
        only a row's last position has a target), instead of whole windows."""
        return False

    @contextmanager
    def scoring_pass(self) -> Iterator[None]:
        """One evaluation pass over all users (the Evaluator opens it; weights do not change inside)."""
        self._pass_cache = {}
        try:
            yield
        finally:
            self._pass_cache = None

    def once_per_pass(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, done once per scoring pass (e.g. an item table built from text by a
        network) and reused by every batch of the pass; outside a pass, computed every call."""
        if self._pass_cache is None:
            return compute()
        if key not in self._pass_cache:
            self._pass_cache[key] = compute()
        return self._pass_cache[key]

    @abstractmethod
    def loss(self, batch: Batch) -> torch.Tensor:
        """Scalar training loss of a training batch (``batch.targets`` set)."""

    @abstractmethod
    def score(self, batch: Batch) -> torch.Tensor:
        """(B, N + 1) scores of every item as the next item after each sequence."""

    def score_candidates(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        """(B, C) scores of the items ``candidates`` (B, C) as the next item after each sequence.

        Sampled-candidate protocols call this instead of :meth:`score`. It must equal
        ``score(batch).gather(1, candidates)`` (the contract tests check it). The default computes
        exactly that; a method whose score is a dot product gives :meth:`query_and_items` and only
        the C candidates are scored.
        """
        parts = self.query_and_items(batch)
        if parts is None:
            return self.score(batch).gather(1, candidates)
        query, items = parts
        return torch.einsum("bd,bcd->bc", query, items[candidates])

    def query_and_items(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For a method whose :meth:`score` is ``query @ items.T``: the (B, d) query of each sequence
        and the (N + 1, d) item table. None (the default): the score is not of that form."""
        return None

    @classmethod
    def pretraining_config(cls, config: MethodConfig) -> MethodConfig:
        """The config the pre-training model is built with and its run is keyed by: variants that
        differ only in fine-tuning return the same one, so they share one pre-training run.

        This base resets the :data:`FINE_TUNING_KEYS` (the target's learning rate, batch size, epochs,
        patience, evaluation batch) to their defaults. An override resets its own target-only keys
        and returns ``super().pretraining_config(...)`` of the result, so that step is never lost.
        """
        return with_defaults(config, FINE_TUNING_KEYS)

    @classmethod
    def check_item_codes(cls, config: MethodConfig, codes: ItemCodes) -> None:
        """Raise :class:`recbench.errors.ConfigError` if ``codes`` cannot serve ``config`` (e.g. another
        number of codes per item). Called before any training or pre-training. Default: nothing."""

    @classmethod
    def search_architecture(
        cls, config: MethodConfig, data: SearchData, seed: int, device: str
    ) -> SearchOutcome | None:
        """Search part of the architecture before the final model is built and trained from scratch.

        Called once per run by :func:`recbench.runs.experiment.run_experiment`; the returned config
        updates are applied to the final model and recorded in the run. None: nothing to search.
        """
        return None

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the Trainer before each training epoch on the target (0-based), and on resume
        with the last finished epoch before training continues.

        A method with a training schedule (VQ-Rec's code re-assignment epochs) may change which
        parameters require gradients here; the Trainer rebuilds the optimizer whenever that set
        changes. Must be idempotent: a state change it makes once (e.g. at epoch 5) must be
        recorded in the state dict so that a resumed run does not make it twice.
        """

    def finish_pretraining(self, show_progress: bool = False, work_dir: Path | None = None) -> None:
        """Called once after the last pre-training epoch, before the weights become the
        pre-trained product (IDP tunes its cross-domain matcher here). Default: nothing.

        ``work_dir`` (the pre-training run's directory, or None) is where long work keeps its
        progress, so an interrupted run resumes it instead of starting it over; whatever is
        written there must be removed before returning."""

    def pretrain_loss(self, batch: Batch) -> torch.Tensor:
        """Pre-training loss on a batch of source-domain sequences (transfer methods only)."""
        raise TypeError(f"{type(self).__name__} does not pre-train (supports_pretraining is False)")

    @classmethod
    def official_parameter_map(cls, config: MethodConfig) -> OfficialParameterMap | None:
        """How the authors' released pre-trained checkpoint maps onto this method under ``config``
        (``recbench train METHOD --init FILE``), or None (the default): no official checkpoint is read."""
        return None

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Load the transferable part of a pre-trained state: every weight whose shape matches.

        Item-specific tables (their size depends on the number of items) stay freshly
        initialised. Returns the names that were not loaded. Override to freeze what a paper freezes.
        """
        own = self.state_dict()
        transferable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(transferable, strict=False)
        return sorted(set(own) - set(transferable))

    def user_rows(self, batch: Batch) -> torch.Tensor:
        """(B,) rows of a user table of ``spec.num_users + 1`` rows for the batch's users.

        Row ``u`` for a user id ``u`` in 1..U; row 0, the unknown user, when the batch carries no
        users or an id outside 1..U (a user the model was not built with), so a lookup never
        reaches past the table.
        """
        if batch.users is None:
            return torch.zeros(batch.size, dtype=torch.long, device=batch.items.device)
        users = batch.users.long()
        known = (users >= 1) & (users <= self.spec.num_users)
        return torch.where(known, users, torch.zeros_like(users))

    def last_hidden(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, d) -> (B, d): the output at each sequence's last real position."""
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]

"""Evaluation protocols as data (docs/protocol.md): which candidates a held-out item is ranked against.

A :class:`Protocol` is a small typed value: the candidates (every item, or ``negatives`` sampled
per target uniformly or by training popularity, with a seed), whether the user's history is
masked, the tie policy and the cut-offs. Named protocols ship with recbench (:data:`BUILTIN`); a
user adds more in ``$RECBENCH_HOME/protocols.toml``::

    [protocols.pop50]
    negatives = 50
    sampler = "popularity"
    mask_history = true
    description = "50 negatives by popularity, as in ..."

Sampled negatives are drawn once per (dataset, split, sampling definition), deterministically from
the protocol's seed, and cached next to the dataset, so every method of a table ranks each target
against the same items; the sha256 of the negatives is part of the protocol recorded with every
result, and a leaderboard refuses to put results drawn against different negatives side by side.
"""

from __future__ import annotations

import hashlib
import io
import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from recbench.data.dataset import Dataset, Split
from recbench.errors import DataError, RecbenchError, UnknownNameError
from recbench.names import check_name
from recbench.runs.metrics import DEFAULT_KS, TIE_POLICY

EXPECTED_TIE_POLICY = "expected (rank = 1 + #higher + #tied / 2, metrics at that rank; NaN counts as higher)"
RANDOM_TIE_POLICY = (
    "random (ranks 1 + #higher .. 1 + #higher + #tied equally likely, each metric averaged over them; "
    "NaN counts as higher)"
)
DEFAULT_PROTOCOL = "full"


class Protocol(BaseModel):
    """How the held-out item of each user is ranked. Everything but ``name`` and ``description``
    defines the numbers: two protocols with equal definitions give equal ranks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    negatives: Annotated[int, Field(strict=True, ge=0)] = 0
    """0: rank against every item (full ranking); n > 0: against n negatives sampled per target."""
    sampler: Literal["uniform", "popularity"] = "uniform"
    """How negatives are drawn (without replacement): uniformly, or in proportion to each item's
    count in the training part (items never seen in training are then never drawn)."""
    sample_seed: Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)] = 0
    mask_history: bool = False
    """Remove the items the user interacted with before the target from the candidates (the
    target itself always stays)."""
    ties: Literal["pessimistic", "expected", "random"] = "pessimistic"
    """pessimistic: every tie counts against the target; expected: half of them do (the metrics at
    the mean rank over the orders of the tied items); random: every order of the tied items is
    equally likely and each metric is its mean over them, what a tool that breaks ties
    arbitrarily (e.g. RecBole's ``torch.topk``) gives on average. NDCG and MRR are convex in the
    rank, so "random" is not "expected"."""
    ks: tuple[Annotated[int, Field(strict=True, gt=0)], ...] = DEFAULT_KS
    description: str = ""

    @field_validator("ks")
    @classmethod
    def _early_stopping_cutoff(cls, ks: tuple[int, ...]) -> tuple[int, ...]:
        if 10 not in ks:
            raise ValueError("must include 10: early stopping watches the valid NDCG@10")
        return tuple(sorted(set(ks)))

    @property
    def sampled(self) -> bool:
        return self.negatives > 0

    def definition(self) -> dict[str, Any]:
        """What the numbers depend on (not the name): equal definitions, equal ranks."""
        return {
            "negatives": self.negatives,
            "sampler": self.sampler if self.sampled else None,
            "sample_seed": self.sample_seed if self.sampled else None,
            "mask_history": self.mask_history,
            "ties": self.ties,
        }

    def card(self) -> str:
        """One line for captions: the protocol in full."""
        if self.sampled:
            how = "by popularity" if self.sampler == "popularity" else "uniformly"
            candidates = f"target + {self.negatives} negatives sampled {how} (seed {self.sample_seed})"
        else:
            candidates = "all items"
        history = "history masked" if self.mask_history else "history kept"
        return f"{self.name}: {candidates}, {history}, {self.ties} ties"

    def tie_policy(self) -> str:
        return {"pessimistic": TIE_POLICY, "expected": EXPECTED_TIE_POLICY, "random": RANDOM_TIE_POLICY}[self.ties]


BUILTIN: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="full",
            description="Every item is a candidate, history kept, pessimistic ties: the candidates of the UniSRec / "
            "VQ-Rec tables (RecBole's full-sort evaluation), whose torch.topk orders exactly tied items arbitrarily; "
            "pessimistic ties are a lower bound of its numbers (see full-random). The default.",
        ),
        Protocol(
            name="full-masked",
            mask_history=True,
            description="Every item the user has not interacted with is a candidate: the IDA-SR / LSH-SR report.",
        ),
        Protocol(
            name="full-expected",
            ties="expected",
            description="As full, the metrics at the mean rank over the orders of tied items.",
        ),
        Protocol(
            name="full-random",
            ties="random",
            description="As full, each metric averaged over the orders of tied items: what a tool that breaks "
            "ties arbitrarily (RecBole) gives on average; differs from full only where scores tie exactly.",
        ),
        Protocol(
            name="pop100",
            negatives=100,
            sampler="popularity",
            mask_history=True,
            description="The target against 100 negatives drawn by training popularity among the items the user "
            "has not interacted with: AutoMLP (WWW 2023).",
        ),
        Protocol(
            name="uniform100",
            negatives=100,
            sampler="uniform",
            mask_history=True,
            description="The target against 100 uniformly drawn items the user has not interacted with "
            "(SASRec's and BERT4Rec's papers).",
        ),
    )
}


def user_protocols_file() -> Path:
    from recbench.data.catalog import recbench_home

    return recbench_home() / "protocols.toml"


def _user_protocols(path: Path) -> dict[str, Protocol]:
    if not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise RecbenchError(f"{path}: not valid TOML ({err})") from None
    entries = table.get("protocols", {})
    unknown = set(table) - {"protocols"}
    if unknown or not isinstance(entries, dict):
        raise RecbenchError(f"{path}: expected only [protocols.NAME] tables, found {sorted(unknown) or 'protocols'}")
    found = {}
    for name, fields in entries.items():
        check_name("protocol", name)
        if name in BUILTIN:
            raise RecbenchError(f"{path}: protocol '{name}' is built in; give yours another name")
        if not isinstance(fields, dict):
            raise RecbenchError(f"{path}: [protocols.{name}] must be a table")
        try:
            found[name] = Protocol(name=name, **{k: tuple(v) if k == "ks" else v for k, v in fields.items()})
        except (ValidationError, TypeError) as err:
            problems = (
                "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
                if isinstance(err, ValidationError)
                else str(err)
            )
            raise RecbenchError(f"{path}: [protocols.{name}]: {problems}") from None
    return found


def protocols() -> dict[str, Protocol]:
    """Built-in protocols, then those of ``$RECBENCH_HOME/protocols.toml``."""
    return {**BUILTIN, **_user_protocols(user_protocols_file())}


def get_protocol(name: str | Protocol) -> Protocol:
    """The protocol called ``name`` (a Protocol is returned as is)."""
    if isinstance(name, Protocol):
        return name
    known = protocols()
    if name not in known:
        raise UnknownNameError("protocol", name, known, f" (define it in {user_protocols_file()})")
    return known[name]


def parse_protocols(names: str | list[str] | tuple[str, ...] | None) -> list[Protocol]:
    """``"full,pop100"`` (or a list) -> protocols, in order, without repeats; None -> [full]."""
    if names is None:
        return [BUILTIN[DEFAULT_PROTOCOL]]
    items = names.split(",") if isinstance(names, str) else list(names)
    items = [n.strip() for n in items if n and n.strip()]
    if not items:
        raise RecbenchError("--protocol needs at least one name (see `recbench list protocols`)")
    chosen = [get_protocol(n) for n in dict.fromkeys(items)]
    return chosen


def definition_of(record: dict[str, Any]) -> dict[str, Any]:
    """The protocol definition of a recorded evaluation; records written before protocols were
    named (full ranking, pessimistic ties, history masked or not) map onto ``full`` / ``full-masked``."""
    if "definition" in record:
        return dict(record["definition"])
    return {
        "negatives": 0,
        "sampler": None,
        "sample_seed": None,
        "mask_history": bool(record.get("mask_history", False)),
        "ties": "pessimistic",
    }


def name_of(record: dict[str, Any]) -> str:
    """The protocol name of a recorded evaluation (older records: ``full`` or ``full-masked``)."""
    if "name" in record:
        return str(record["name"])
    return "full-masked" if record.get("mask_history") else "full"


# --- sampled negatives -------------------------------------------------------------------------

_CHUNK_CELLS = 1 << 24  # keys held at once while sampling: 16M float64 = 128 MB


def training_popularity(dataset: Dataset) -> np.ndarray:
    """(N + 1,) interaction counts of each item in the training part only (column 0 = padding = 0):
    the valid and test items never reach the sampler."""
    return np.bincount(dataset.train_sequences()[1], minlength=dataset.num_items + 1).astype(np.int64)


def split_targets(dataset: Dataset, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """(U,) index of each user's ``split`` target in ``dataset.items``, and (U,) the target items."""
    if split not in ("valid", "test"):
        raise DataError(f"unknown split '{split}': expected 'valid' or 'test'")
    ends = dataset.offsets[1:] - (1 if split == "test" else 2)
    return ends, dataset.items[ends].astype(np.int64)


def draw_negatives(dataset: Dataset, split: Split, protocol: Protocol) -> np.ndarray:
    """(U, n) int32 negatives per user, sorted ascending, drawn without replacement.

    Never the target; with ``mask_history``, never an item the user interacted with before the
    target. Weighted sampling without replacement by the Gumbel-top-k trick: item i gets the key
    log w_i + G_i (G standard Gumbel) and the n largest keys win, which is the same as drawing items
    one after another with probability proportional to w among those not drawn yet. Rows are
    drawn in user order from one seeded generator, so a row depends only on its user's exclusions.
    """
    n, num_items = protocol.negatives, dataset.num_items
    if n <= 0:
        raise ValueError("draw_negatives needs a sampled protocol")
    weights = (
        training_popularity(dataset)[1:].astype(np.float64)
        if protocol.sampler == "popularity"
        else np.ones(num_items, dtype=np.float64)
    )
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)  # -inf: never drawn
    ends, targets = split_targets(dataset, split)
    rng = np.random.default_rng([protocol.sample_seed, 0 if split == "valid" else 1, n])
    chunk = max(1, _CHUNK_CELLS // max(1, num_items))
    negatives = np.empty((dataset.num_users, n), dtype=np.int32)
    for start in range(0, dataset.num_users, chunk):
        users = np.arange(start, min(start + chunk, dataset.num_users))
        keys = log_weights[None, :] + rng.gumbel(size=(len(users), num_items))
        rows = np.arange(len(users))
        keys[rows, targets[users] - 1] = -np.inf
        if protocol.mask_history:
            lengths = ends[users] - dataset.offsets[users]
            positions = np.repeat(dataset.offsets[users] - np.cumsum(lengths) + lengths, lengths) + np.arange(
                lengths.sum()
            )
            keys[np.repeat(rows, lengths), dataset.items[positions].astype(np.int64) - 1] = -np.inf
        eligible = np.isfinite(keys).sum(axis=1)
        if (short := np.flatnonzero(eligible < n)).size:
            user = int(users[short[0]])
            raise DataError(
                f"protocol '{protocol.name}' draws {n} negatives per user, but user {dataset.user_ids[user]!r} of "
                f"'{dataset.name}' has only {int(eligible[short[0]])} items that may be drawn ({split} split"
                f"{', history masked' if protocol.mask_history else ''}"
                f"{', items seen in training only' if protocol.sampler == 'popularity' else ''}); "
                "use fewer negatives or a full-ranking protocol"
            )
        chosen = np.argpartition(-keys, n - 1, axis=1)[:, :n] + 1
        negatives[users] = np.sort(chosen, axis=1)
    return negatives


def negatives_digest(negatives: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(negatives, dtype=np.int32).tobytes()).hexdigest()


def negatives_cache_file(dataset: Dataset, split: Split, protocol: Protocol) -> Path | None:
    """Where the negatives of a downloaded dataset are kept (None for a dataset that is not on disk)."""
    from recbench.data.dataset import dataset_path

    try:
        folder = dataset_path(dataset.name)
    except RecbenchError:
        return None
    if not (folder / "manifest.json").is_file():
        return None
    key = f"{split}-{protocol.sampler}{protocol.negatives}-{'masked' if protocol.mask_history else 'kept'}"
    return folder / "negatives" / f"{dataset.fingerprint[:16]}-{key}-seed{protocol.sample_seed}.npy"


@lru_cache(maxsize=16)
def _cached(path: str, mtime: int, size: int) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def negatives_for(dataset: Dataset, split: Split, protocol: Protocol) -> np.ndarray:
    """The negatives of ``protocol`` on ``dataset``'s ``split``: read from the dataset's cache, or
    drawn and stored there (datasets that are not on disk draw them every time: the draw is
    deterministic). A cached file that does not fit the dataset is drawn again."""
    path = negatives_cache_file(dataset, split, protocol)
    if path is not None and path.is_file():
        stat = path.stat()
        try:
            cached = _cached(str(path), stat.st_mtime_ns, stat.st_size)
        except (ValueError, OSError, EOFError):
            cached = None
        if cached is not None and _fits(cached, dataset, split, protocol):
            return cached
    negatives = draw_negatives(dataset, split, protocol)
    if path is not None:
        from recbench.files import atomic_write_bytes

        np.save(buffer := io.BytesIO(), negatives, allow_pickle=False)
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError:  # a read-only dataset directory: the draw is deterministic, so nothing is lost
            pass
    return negatives


def _fits(negatives: np.ndarray, dataset: Dataset, split: Split, protocol: Protocol) -> bool:
    """A cached negatives file has the right shape and values: in range, never the target."""
    if negatives.shape != (dataset.num_users, protocol.negatives) or negatives.dtype != np.int32:
        return False
    if negatives.size and (negatives.min() < 1 or negatives.max() > dataset.num_items):
        return False
    return not bool((negatives == split_targets(dataset, split)[1][:, None]).any())

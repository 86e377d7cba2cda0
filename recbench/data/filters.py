"""Minimum interactions per user and per item: the dataset filters papers apply before splitting.

Two modes:

- ``kcore``: the iterative k-core. Users with fewer than ``min_user_interactions`` and items with
  fewer than ``min_item_interactions`` are removed together, counts are taken again, and this
  repeats until nothing is removed. The result is the largest sub-dataset in which every user and
  every item meets its threshold (it does not depend on the removal order).
- ``once``: a single pass, users first, then items. Users below the user threshold are removed;
  items are then counted over the remaining users and those below the item threshold removed.
  Removing items can leave a user below the user threshold: this mode does not go back.

Interactions are counted as they are stored: a user who interacted with one item twice counts 2.

With a single active threshold both modes give the same result (one pass is already stable), so
such a filter is recorded as ``once``. A threshold of 1 keeps everything; 0 or less is an error.

The filter is recorded in the dataset manifest under ``filter`` and is part of the dataset's
fingerprint (:func:`recbench.data.dataset.compute_fingerprint`), so a filtered copy and an
unfiltered copy never pass for one another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from recbench.errors import DataError

FilterMode = Literal["kcore", "once"]
FILTER_MODES: tuple[FilterMode, ...] = ("kcore", "once")
DEFAULT_MODE: FilterMode = "kcore"
_RECORD_KEYS = ("min_user_interactions", "min_item_interactions", "mode")


@dataclass(frozen=True)
class InteractionFilter:
    """Minimum interactions per user and per item, applied as a k-core or in one pass."""

    min_user_interactions: int = 1
    """Users with fewer interactions are removed (1 keeps every user)."""
    min_item_interactions: int = 1
    """Items with fewer interactions are removed (1 keeps every item)."""
    mode: FilterMode = DEFAULT_MODE
    """``kcore`` (repeat until stable) or ``once`` (users first, then items, one pass)."""

    def __post_init__(self) -> None:
        for key in ("min_user_interactions", "min_item_interactions"):
            value = getattr(self, key)
            if type(value) is not int or value < 1:
                raise DataError(f"{key} must be a whole number of at least 1 (1 keeps everything), got {value!r}")
        if self.mode not in FILTER_MODES:
            raise DataError(f"filter mode must be one of {', '.join(FILTER_MODES)}, got {self.mode!r}")

    @property
    def active(self) -> bool:
        """Whether the filter can remove anything."""
        return self.min_user_interactions > 1 or self.min_item_interactions > 1

    def canonical(self) -> InteractionFilter | None:
        """The equivalent filter in one spelling: None if it removes nothing, ``once`` if one threshold is active.

        Two requests that always give the same dataset have the same canonical form, which is what
        the manifest records and what identity checks compare.
        """
        if not self.active:
            return None
        if self.min_user_interactions > 1 and self.min_item_interactions > 1:
            return self
        return InteractionFilter(self.min_user_interactions, self.min_item_interactions, "once")

    def record(self) -> dict[str, Any]:
        """The manifest record (JSON)."""
        return {
            "min_user_interactions": self.min_user_interactions,
            "min_item_interactions": self.min_item_interactions,
            "mode": self.mode,
        }

    def describe(self) -> str:
        """One phrase for messages: ``users >= 10, items >= 5, k-core``."""
        parts = []
        if self.min_user_interactions > 1:
            parts.append(f"users >= {self.min_user_interactions}")
        if self.min_item_interactions > 1:
            parts.append(f"items >= {self.min_item_interactions}")
        if not parts:
            return "no filter"
        how = "k-core, repeated until stable" if self.mode == "kcore" else "one pass, users first then items"
        return ", ".join(parts) + f" ({how})" if len(parts) == 2 else parts[0]

    def name_suffix(self) -> str:
        """A dataset-name suffix naming the filter: ``u10``, ``i5``, ``u5-i5-kcore``."""
        parts = []
        if self.min_user_interactions > 1:
            parts.append(f"u{self.min_user_interactions}")
        if self.min_item_interactions > 1:
            parts.append(f"i{self.min_item_interactions}")
        if len(parts) == 2:
            parts.append(self.mode)
        return "-".join(parts) or "unfiltered"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str) -> InteractionFilter:
        """A filter from a catalogue table or a manifest record; ``where`` names it in errors."""
        if not isinstance(values, Mapping):
            raise DataError(f"{where}: expected a table with {', '.join(_RECORD_KEYS)}")
        unknown = sorted(set(values) - set(_RECORD_KEYS))
        if unknown:
            raise DataError(f"{where}: unknown filter key(s) {', '.join(unknown)}; expected {', '.join(_RECORD_KEYS)}")
        try:
            return cls(
                values.get("min_user_interactions", 1),
                values.get("min_item_interactions", 1),
                values.get("mode", DEFAULT_MODE),
            )
        except DataError as err:
            raise DataError(f"{where}: {err}") from None

    @classmethod
    def from_options(
        cls, min_user_interactions: int | None, min_item_interactions: int | None, mode: str | None
    ) -> InteractionFilter | None:
        """The filter asked for on the command line, or None when no filter option was given.

        A given filter may still be inactive (``--min-user-interactions 1``): that explicitly asks
        for no filter, e.g. to import a catalogued dataset without its default filter.
        """
        if min_user_interactions is None and min_item_interactions is None:
            if mode is not None:
                raise DataError(f"--filter {mode} needs --min-user-interactions and/or --min-item-interactions")
            return None
        for flag, value in (
            ("--min-user-interactions", min_user_interactions),
            ("--min-item-interactions", min_item_interactions),
        ):
            if value is not None and value < 1:
                raise DataError(f"{flag} must be at least 1 (1 keeps everything), got {value}")
        if mode is not None and mode not in FILTER_MODES:
            raise DataError(f"--filter must be one of {', '.join(FILTER_MODES)}, got {mode!r}")
        return cls(min_user_interactions or 1, min_item_interactions or 1, cast(FilterMode, mode or DEFAULT_MODE))


def filter_from_record(record: object) -> InteractionFilter | None:
    """The filter a manifest records (absent or null: none); an unreadable record is a DataError."""
    if record is None:
        return None
    return InteractionFilter.from_mapping(cast(Mapping[str, Any], record), "manifest.json 'filter'").canonical()


def describe_filter(spec: InteractionFilter | None) -> str:
    """:meth:`InteractionFilter.describe`, or ``no filter``."""
    return spec.describe() if spec is not None else "no filter"


@dataclass
class FilterOutcome:
    """What a filter kept: user positions, their remaining items, and what it removed."""

    kept_users: np.ndarray  # positions (into the input sequences) of the users kept, ascending
    sequences: list[np.ndarray]  # their items, in their original order, removed items left out
    rounds: int  # passes that removed something (kcore) or 1 (once)
    removed_users: int
    removed_items: int  # distinct items present before and absent after
    removed_interactions: int

    def record(self) -> dict[str, int]:
        return {
            "rounds": self.rounds,
            "removed_users": self.removed_users,
            "removed_items": self.removed_items,
            "removed_interactions": self.removed_interactions,
        }


def apply_filter(
    sequences: Sequence[Sequence[int] | np.ndarray], spec: InteractionFilter, user_floor: int = 1
) -> FilterOutcome:
    """Apply ``spec`` to per-user item sequences (item indices >= 0, duplicates count).

    ``user_floor`` raises the user threshold to at least this value: the canonical dataset drops
    users with fewer than 3 interactions after filtering, so a k-core that kept them would stop
    being a k-core once they are gone. Users left with no interaction are removed.
    """
    arrays = [np.asarray(s, dtype=np.int64) for s in sequences]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    users = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
    items = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int64)
    num_items = int(items.max()) + 1 if len(items) else 0
    min_user = max(spec.min_user_interactions, user_floor)
    min_item = spec.min_item_interactions
    keep = np.ones(len(items), dtype=bool)
    rounds = 0
    if spec.mode == "once":
        user_count = np.bincount(users, minlength=len(arrays))
        keep &= user_count[users] >= min_user
        item_count = np.bincount(items[keep], minlength=num_items)
        keep &= item_count[items] >= min_item
        rounds = 1
    else:
        while True:
            user_count = np.bincount(users[keep], minlength=len(arrays))
            item_count = np.bincount(items[keep], minlength=num_items)
            still = keep & (user_count[users] >= min_user) & (item_count[items] >= min_item)
            if np.array_equal(still, keep):
                break
            keep = still
            rounds += 1
    kept_lengths = np.bincount(users[keep], minlength=len(arrays))
    kept_users = np.flatnonzero(kept_lengths > 0)
    cuts = np.cumsum(kept_lengths[kept_users])[:-1]
    kept_items = items[keep]
    return FilterOutcome(
        kept_users=kept_users,
        sequences=np.split(kept_items, cuts) if len(kept_users) else [],
        rounds=rounds,
        removed_users=int((lengths > 0).sum()) - len(kept_users),
        removed_items=len(np.unique(items)) - len(np.unique(kept_items)),
        removed_interactions=int(len(items) - keep.sum()),
    )

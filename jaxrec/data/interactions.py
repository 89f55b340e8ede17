"""The `Interactions` record: dense user/item ids plus optional side columns.

Every data source in jaxrec (readers, the synthetic world, splits) produces one of these.
It is a host-side (numpy) record; the train loop moves the columns it needs to device once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

_INT32_MAX = np.iinfo(np.int32).max


class DataError(ValueError):
  """Bad input data. For a bad row the message reads ``"FILE:LINE: reason"``."""


class DataPathError(DataError, FileNotFoundError):
  """A data path that does not exist (or lacks the expected file); names the path.

  It is both a `DataError` and a `FileNotFoundError`, so either ``except`` catches it.
  """


def _as_index_array(name, values, length, upper):
  """Validates a 1-D integer column with values in [0, upper) and returns it as int32."""
  arr = np.asarray(values)
  if arr.ndim != 1 or (length is not None and arr.shape[0] != length):
    want = f"[{length}]" if length is not None else "1-D"
    raise ValueError(f"Interactions.{name}: expected shape {want}, got {arr.shape}")
  if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"Interactions.{name}: expected an integer array, got dtype {arr.dtype}")
  if arr.size:
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= upper:
      raise ValueError(
          f"Interactions.{name}: values must lie in [0, {upper}), got range [{lo}, {hi}]"
      )
  return arr.astype(np.int32, copy=False)


@dataclasses.dataclass(frozen=True, eq=False)
class Interactions:
  """Implicit-feedback interactions with dense 0-based ids.

  Row e is the event (user_ids[e], item_ids[e]) with optional weights[e] (a rating or play
  count) and timestamps[e]. ``user_groups``/``item_groups`` are optional labels (e.g. the
  "language" of the synthetic world) used by the folding metrics. ``user_raw``/``item_raw``
  map a dense id back to the raw id found in the source file. ``user_features`` /
  ``item_features``: side features per dense id (`jaxrec.data.features.Features`).

  `__post_init__` validates dtypes, shapes and ranges and converts integer columns to the
  canonical dtypes (int32 ids and groups, float32 weights, int64 timestamps); it raises a
  ValueError naming the bad field. Weights must be finite.
  """

  user_ids: np.ndarray
  item_ids: np.ndarray
  num_users: int
  num_items: int
  weights: np.ndarray | None = None
  timestamps: np.ndarray | None = None
  user_groups: np.ndarray | None = None
  item_groups: np.ndarray | None = None
  user_raw: np.ndarray | None = None
  item_raw: np.ndarray | None = None
  # Side features per dense id (`jaxrec.data.features.Features`), or None.
  user_features: Any = None
  item_features: Any = None

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    for name in ("num_users", "num_items"):
      value = getattr(self, name)
      if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"Interactions.{name} must be an int, got {value!r}")
      if not 0 <= int(value) <= _INT32_MAX:
        raise ValueError(f"Interactions.{name} must lie in [0, {_INT32_MAX}], got {value}")
      set_(name, int(value))
    user_ids = _as_index_array("user_ids", self.user_ids, None, self.num_users)
    num_events = user_ids.shape[0]
    set_("user_ids", user_ids)
    set_("item_ids", _as_index_array("item_ids", self.item_ids, num_events, self.num_items))
    if self.weights is not None:
      w = np.asarray(self.weights)
      if w.shape != (num_events,):
        raise ValueError(f"Interactions.weights: expected shape ({num_events},), got {w.shape}")
      if w.dtype == bool or not (
          np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)
      ):
        raise ValueError(f"Interactions.weights: expected a real array, got dtype {w.dtype}")
      with np.errstate(over="ignore"):
        w = w.astype(np.float32, copy=False)
      if not np.all(np.isfinite(w)):
        bad = int(np.flatnonzero(~np.isfinite(w))[0])
        raise ValueError(
            f"Interactions.weights: non-finite value {w[bad]} at row {bad} "
            "(after conversion to float32)"
        )
      set_("weights", w)
    if self.timestamps is not None:
      t = np.asarray(self.timestamps)
      if t.shape != (num_events,):
        raise ValueError(f"Interactions.timestamps: expected shape ({num_events},), got {t.shape}")
      if t.dtype == bool or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"Interactions.timestamps: expected an integer array, got {t.dtype}")
      if t.dtype == np.uint64 and t.size and int(t.max()) > np.iinfo(np.int64).max:
        raise ValueError("Interactions.timestamps: values must fit int64")
      set_("timestamps", t.astype(np.int64, copy=False))
    for name, n in (("user_groups", self.num_users), ("item_groups", self.num_items)):
      if getattr(self, name) is not None:
        set_(name, _as_index_array(name, getattr(self, name), n, _INT32_MAX))
    for name, n in (("user_raw", self.num_users), ("item_raw", self.num_items)):
      raw = getattr(self, name)
      if raw is not None:
        raw = np.asarray(raw)
        if raw.shape != (n,):
          raise ValueError(f"Interactions.{name}: expected shape ({n},), got {raw.shape}")
        set_(name, raw)
    for name, n in (("user_features", self.num_users), ("item_features", self.num_items)):
      feats = getattr(self, name)
      if feats is not None and feats.num_rows != n:
        raise ValueError(f"Interactions.{name}: expected {n} rows, got {feats.num_rows}")

  @property
  def num_interactions(self) -> int:
    """Number of rows E."""
    return int(self.user_ids.shape[0])

  def item_counts(self) -> np.ndarray:
    """Rows per item, ``[num_items]`` int64 (unweighted)."""
    return np.bincount(self.item_ids, minlength=self.num_items).astype(np.int64)

  def user_counts(self) -> np.ndarray:
    """Rows per user, ``[num_users]`` int64 (unweighted)."""
    return np.bincount(self.user_ids, minlength=self.num_users).astype(np.int64)

  def to_csr(self) -> tuple[np.ndarray, np.ndarray]:
    """Per-user sorted item lists in CSR form.

    Returns ``(offsets, items)``: ``offsets`` is ``[num_users + 1]`` int64 and
    ``items[offsets[u]:offsets[u + 1]]`` is user u's item ids in increasing order
    (``[E]`` int32; duplicates, if any, are kept).
    """
    order = np.lexsort((self.item_ids, self.user_ids))
    offsets = np.zeros(self.num_users + 1, np.int64)
    np.cumsum(self.user_counts(), out=offsets[1:])
    return offsets, self.item_ids[order]

  def subset(self, mask) -> Interactions:
    """The rows where ``mask`` ([E] bool) is True, in the same id space (groups/raw ids kept)."""
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (self.num_interactions,):
      raise ValueError(
          f"subset: mask must be bool of shape ({self.num_interactions},), "
          f"got {mask.dtype} {mask.shape}"
      )
    return self._take(np.flatnonzero(mask))

  def union(self, other: Interactions) -> Interactions:
    """This data's rows followed by ``other``'s, in the same id space (e.g. train and
    valid: the pairs a final test evaluation masks). A column one side lacks is dropped."""
    if (self.num_users, self.num_items) != (other.num_users, other.num_items):
      raise ValueError(f"union: different id spaces, {self!r} and {other!r}")
    cat = lambda a, b: None if a is None or b is None else np.concatenate([a, b])
    return dataclasses.replace(
        self,
        user_ids=np.concatenate([self.user_ids, other.user_ids]),
        item_ids=np.concatenate([self.item_ids, other.item_ids]),
        weights=cat(self.weights, other.weights),
        timestamps=cat(self.timestamps, other.timestamps),
    )

  def _take(self, rows) -> Interactions:
    pick = lambda a: None if a is None else a[rows]
    return dataclasses.replace(
        self,
        user_ids=self.user_ids[rows],
        item_ids=self.item_ids[rows],
        weights=pick(self.weights),
        timestamps=pick(self.timestamps),
    )

  def compact(self) -> Interactions:
    """Drops users and items without rows and renumbers the rest densely (order kept).

    Groups and raw ids of the kept users/items are carried over.
    """
    keep_u = np.flatnonzero(self.user_counts() > 0)
    keep_i = np.flatnonzero(self.item_counts() > 0)
    new_u = np.full(self.num_users, -1, np.int64)
    new_u[keep_u] = np.arange(keep_u.size)
    new_i = np.full(self.num_items, -1, np.int64)
    new_i[keep_i] = np.arange(keep_i.size)
    pick = lambda a, idx: None if a is None else a[idx]
    return dataclasses.replace(
        self,
        user_ids=new_u[self.user_ids],
        item_ids=new_i[self.item_ids],
        num_users=int(keep_u.size),
        num_items=int(keep_i.size),
        user_groups=pick(self.user_groups, keep_u),
        item_groups=pick(self.item_groups, keep_i),
        user_raw=pick(self.user_raw, keep_u),
        item_raw=pick(self.item_raw, keep_i),
        user_features=None if self.user_features is None else self.user_features.take(keep_u),
        item_features=None if self.item_features is None else self.item_features.take(keep_i),
    )

  def __repr__(self):
    extras = [
        n
        for n in (
            "weights",
            "timestamps",
            "user_groups",
            "item_groups",
            "user_raw",
            "item_raw",
            "user_features",
            "item_features",
        )
        if getattr(self, n) is not None
    ]
    return (
        f"Interactions(num_users={self.num_users}, num_items={self.num_items}, "
        f"num_interactions={self.num_interactions}, with={extras})"
    )


def k_core(inter: Interactions, min_user: int = 5, min_item: int = 5) -> Interactions:
  """Iterated k-core: keeps rows whose user has >= min_user rows and item >= min_item rows.

  Removing rows can push other users/items below their threshold, so the filter repeats
  until nothing changes (the unique maximal sub-dataset meeting both thresholds). The result
  is compacted: surviving users/items are renumbered densely in their old order, carrying
  groups and raw ids. Counts are rows (duplicated pairs count twice; the readers merge
  duplicates). Raises DataError if nothing survives.
  """
  for name, value in (("min_user", min_user), ("min_item", min_item)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"k_core: {name} must be an int >= 1, got {value!r}")
  users, items = inter.user_ids, inter.item_ids
  rows = np.arange(inter.num_interactions)
  while True:
    uc = np.bincount(users[rows], minlength=inter.num_users)
    ic = np.bincount(items[rows], minlength=inter.num_items)
    keep = (uc[users[rows]] >= min_user) & (ic[items[rows]] >= min_item)
    if keep.all():
      break
    rows = rows[keep]
  if rows.size == 0:
    raise DataError(
        f"k_core(min_user={min_user}, min_item={min_item}) removed every "
        f"interaction of {inter!r}"
    )
  return inter._take(rows).compact()

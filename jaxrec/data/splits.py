"""Seeded train/test splits that keep one id space.

Both halves have the same ``num_users``/``num_items`` and carry the groups and raw ids, so
a model trained on ``train`` is evaluated on ``test`` with train items masked. Every row of
the input lands in exactly one half.
"""

from __future__ import annotations

import numpy as np

from jaxrec.data.interactions import Interactions

SPLIT_KINDS = ("random", "last", "users")


def _per_user_rank(user_ids: np.ndarray, *keys: np.ndarray) -> np.ndarray:
  """Each row's 0-based rank among its user's rows, sorted ascending by ``keys``.

  ``keys`` are given most significant first (the last one breaks the remaining ties).
  """
  order = np.lexsort(tuple(reversed(keys)) + (user_ids,))
  sorted_users = user_ids[order]
  starts = np.flatnonzero(np.diff(sorted_users, prepend=-1))
  run_start = np.repeat(starts, np.diff(np.append(starts, sorted_users.size)))
  rank = np.empty(user_ids.size, np.int64)
  rank[order] = np.arange(user_ids.size) - run_start
  return rank


def _num_test(n: np.ndarray, fraction: float) -> np.ndarray:
  """round(fraction * n) (halves up), clipped to [1, n - 1] for n >= 2; 0 for n < 2."""
  m = np.floor(fraction * n + 0.5).astype(np.int64)
  return np.where(n >= 2, np.clip(m, 1, np.maximum(n - 1, 1)), 0)


def split(inter: Interactions, *, kind: str = "random", test_fraction: float = 0.2,
          seed: int = 0) -> tuple[Interactions, Interactions]:
  """Splits rows into (train, test), deterministic in ``seed``.

  * ``"random"`` (per-user holdout): a user with n >= 2 rows puts ``round(f * n)`` of them,
    clipped to [1, n - 1], chosen uniformly at random, in test; so every such user keeps
    at least one train row and has at least one test row. Users with one row stay in train.
  * ``"last"`` (leave-last-one-out): a user with n >= 2 rows puts the row with the largest
    timestamp in test (ties broken at random by the seed); needs timestamps;
    ``test_fraction`` is not used.
  * ``"users"`` (held-out users): ``round(f * m)`` of the m users with >= 2 rows (at least
    one) are held out at random; each held-out user puts ``round(f * n)`` of its rows
    (clipped to [1, n - 1]) in test as targets and keeps the rest in train as its input
    history (a query-feature tower needs it); other users stay entirely in train. The
    held-out users are exactly the users with test rows: a trainer that wants them truly
    unseen must not train on their rows, only read them as input.
  """
  if kind not in SPLIT_KINDS:
    raise ValueError(f"split: kind={kind!r} is not one of {SPLIT_KINDS}")
  if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.number)) \
      or not 0.0 < test_fraction < 1.0:
    raise ValueError(f"split: test_fraction must be in (0, 1), got {test_fraction!r}")
  rng = np.random.default_rng(seed)
  n_per_user = inter.user_counts()
  tie_break = rng.random(inter.num_interactions)
  users = inter.user_ids
  if kind == "last":
    if inter.timestamps is None:
      raise ValueError("split: kind='last' needs timestamps; this data set has none "
                       f"(choose one of {SPLIT_KINDS[:1] + SPLIT_KINDS[2:]})")
    # Ascending by (timestamp, random): the latest row has rank n - 1.
    rank = _per_user_rank(users, inter.timestamps, tie_break)
    is_test = (rank == n_per_user[users] - 1) & (n_per_user[users] >= 2)
  else:
    num_test = _num_test(n_per_user, float(test_fraction))
    if kind == "users":
      eligible = np.flatnonzero(n_per_user >= 2)
      held = np.zeros(inter.num_users, bool)
      if eligible.size:
        m = int(np.clip(np.floor(test_fraction * eligible.size + 0.5), 1, eligible.size))
        held[rng.choice(eligible, size=m, replace=False)] = True
      num_test = np.where(held, num_test, 0)
    is_test = _per_user_rank(users, tie_break) < num_test[users]
  return inter.subset(~is_test), inter.subset(is_test)

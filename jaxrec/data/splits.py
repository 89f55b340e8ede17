"""Seeded train/(validation/)test splits that keep one id space.

All parts have the same ``num_users``/``num_items`` and carry the groups and raw ids, so
a model trained on ``train`` is evaluated on ``test`` with train items masked. Every row of
the input lands in exactly one part. `split` returns ``(train, test)``; `split3` and
`carve_valid` return a `Splits` ``(train, valid, test)`` whose validation part is carved
out of train, for choosing hyperparameters and steps without reading test.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxrec.data.interactions import DataError, Interactions

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


def split(
    inter: Interactions, *, kind: str = "random", test_fraction: float = 0.2, seed: int = 0
) -> tuple[Interactions, Interactions]:
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
  if (
      isinstance(test_fraction, bool)
      or not isinstance(test_fraction, (int, float, np.number))
      or not 0.0 < test_fraction < 1.0
  ):
    raise ValueError(f"split: test_fraction must be in (0, 1), got {test_fraction!r}")
  rng = np.random.default_rng(seed)
  n_per_user = inter.user_counts()
  tie_break = rng.random(inter.num_interactions)
  users = inter.user_ids
  if kind == "last":
    if inter.timestamps is None:
      raise DataError(
          "split: kind='last' (data.split=last) needs timestamps; this data set has none "
          f"(choose one of {SPLIT_KINDS[:1] + SPLIT_KINDS[2:]})"
      )
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


# The validation carve draws from its own stream, so `split`'s draws (and hence its
# train/test) do not depend on whether a validation part is asked for.
_VALID_STREAM = 1


class Splits(NamedTuple):
  """Three disjoint parts of one data set in one id space (see `split3`)."""

  train: Interactions
  valid: Interactions
  test: Interactions


def _check_valid_fraction(valid_fraction) -> float:
  if (
      isinstance(valid_fraction, bool)
      or not isinstance(valid_fraction, (int, float, np.number))
      or not 0.0 <= valid_fraction < 1.0
  ):
    raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
  return float(valid_fraction)


def carve_valid(
    train: Interactions,
    test: Interactions,
    *,
    kind: str = "random",
    valid_fraction: float,
    seed: int = 0,
    target_fraction: float | None = None,
) -> Splits:
  """Moves a validation part out of ``train``: returns ``Splits(train', valid, test)``.

  ``valid`` takes rows of ``train`` only (``test`` is passed through untouched), by the
  same rule `split` applies to all rows, with the counts taken over each user's *train*
  rows n (so ``valid_fraction`` is a share of train, not of the whole data set):

  * ``"random"``: a user with n >= 2 train rows puts ``round(valid_fraction * n)`` of
    them, clipped to [1, n - 1], chosen uniformly at random, in valid.
  * ``"last"``: a user with n >= 2 train rows puts its latest train row in valid (ties
    broken at random); after `split`'s ``"last"``, that is the second-latest row overall.
    ``valid_fraction`` only switches the carve on (> 0).
  * ``"users"``: among the users with n >= 2 train rows and no test row,
    ``round(valid_fraction * m)`` (at least one) are held out for validation; each puts
    ``round(target_fraction * n)`` of its rows (clipped to [1, n - 1]) in valid as targets
    and keeps the rest in train as input history. ``target_fraction`` defaults to
    ``valid_fraction``; `split3` passes its ``test_fraction`` so validation users look
    like test users. Validation and test users are disjoint.

  For a fixed split read from files (`readers.load_lightgcn`), this is how its train file
  yields a validation part. Deterministic in ``seed`` (a stream separate from `split`'s).
  With ``valid_fraction=0`` the result is ``Splits(train, <no rows>, test)``, ``train``
  the very object passed in. Raises ValueError if ``valid_fraction > 0`` leaves valid
  empty (no user has two train rows).
  """
  if kind not in SPLIT_KINDS:
    raise ValueError(f"carve_valid: kind={kind!r} is not one of {SPLIT_KINDS}")
  valid_fraction = _check_valid_fraction(valid_fraction)
  if target_fraction is None:
    target_fraction = valid_fraction
  elif (
      isinstance(target_fraction, bool)
      or not isinstance(target_fraction, (int, float, np.number))
      or not 0.0 < target_fraction < 1.0
  ):
    raise ValueError(f"carve_valid: target_fraction must be in (0, 1), got {target_fraction!r}")
  if (train.num_users, train.num_items) != (test.num_users, test.num_items):
    raise ValueError(
        "carve_valid: train and test must share one id space, got " f"{train!r} and {test!r}"
    )
  if valid_fraction == 0.0:
    return Splits(train, train.subset(np.zeros(train.num_interactions, bool)), test)
  rng = np.random.default_rng([seed, _VALID_STREAM])
  n_per_user = train.user_counts()
  tie_break = rng.random(train.num_interactions)
  users = train.user_ids
  if kind == "last":
    if train.timestamps is None:
      raise ValueError("carve_valid: kind='last' needs timestamps; this data set has none")
    rank = _per_user_rank(users, train.timestamps, tie_break)
    is_valid = (rank == n_per_user[users] - 1) & (n_per_user[users] >= 2)
  else:
    if kind == "random":
      num_valid = _num_test(n_per_user, valid_fraction)
    else:  # "users"
      num_valid = _num_test(n_per_user, float(target_fraction))
      eligible = np.flatnonzero((n_per_user >= 2) & (test.user_counts() == 0))
      held = np.zeros(train.num_users, bool)
      if eligible.size:
        m = int(np.clip(np.floor(valid_fraction * eligible.size + 0.5), 1, eligible.size))
        held[rng.choice(eligible, size=m, replace=False)] = True
      num_valid = np.where(held, num_valid, 0)
    is_valid = _per_user_rank(users, tie_break) < num_valid[users]
  if not is_valid.any():
    raise ValueError(
        f"carve_valid: valid_fraction={valid_fraction} with kind={kind!r} left "
        "no validation rows (no eligible user has two or more train rows)"
    )
  return Splits(train.subset(~is_valid), train.subset(is_valid), test)


def split3(
    inter: Interactions,
    *,
    kind: str = "random",
    test_fraction: float = 0.2,
    valid_fraction: float = 0.0,
    seed: int = 0,
) -> Splits:
  """`split` followed by `carve_valid` on its train part: ``Splits(train, valid, test)``.

  ``train``/``test`` before the carve are exactly ``split(inter, kind=kind,
  test_fraction=test_fraction, seed=seed)``; so with ``valid_fraction=0`` they are that
  pair bit for bit and ``valid`` has no rows. ``valid_fraction`` is a share of the train
  part (see `carve_valid`; e.g. test 0.2 and valid 0.125 give 70/10/20 for "random"); for
  ``"users"`` each validation user holds out ``test_fraction`` of its rows, as test users do.
  """
  train, test = split(inter, kind=kind, test_fraction=test_fraction, seed=seed)
  return carve_valid(
      train,
      test,
      kind=kind,
      valid_fraction=valid_fraction,
      seed=seed,
      target_fraction=test_fraction,
  )

"""Tests for the three-way splits: `splits.split3` and `splits.carve_valid`."""

import collections

import numpy as np
import pytest

from jaxrec.data import splits
from jaxrec.data.interactions import Interactions

KINDS = ("random", "last", "users")


def _world(num_users=200, seed=7):
  rng = np.random.default_rng(seed)
  n_per_user = rng.integers(1, 40, size=num_users)
  users = np.repeat(np.arange(num_users), n_per_user)
  return Interactions(
      users,
      rng.integers(0, 150, users.size),
      num_users,
      150,
      weights=rng.random(users.size),
      timestamps=rng.integers(0, 10**6, users.size),
      user_groups=np.arange(num_users) % 3,
      item_raw=np.arange(150) + 500,
  )


def _rows(inter):
  """Multiset of full rows (user, item, weight, timestamp)."""
  cols = [inter.user_ids, inter.item_ids, inter.weights, inter.timestamps]
  return collections.Counter(zip(*[c.tolist() for c in cols]))


def _same(a, b):
  for name in ("user_ids", "item_ids", "weights", "timestamps", "user_groups", "item_raw"):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert getattr(a, name).dtype == getattr(b, name).dtype, name
  assert (a.num_users, a.num_items) == (b.num_users, b.num_items)


@pytest.mark.parametrize("kind", KINDS)
def test_valid_fraction_zero_is_split_bit_for_bit(kind):
  inter = _world()
  old_train, old_test = splits.split(inter, kind=kind, test_fraction=0.25, seed=3)
  train, valid, test = splits.split3(inter, kind=kind, test_fraction=0.25, seed=3)
  _same(train, old_train)
  _same(test, old_test)
  assert valid.num_interactions == 0
  assert (valid.num_users, valid.num_items) == (inter.num_users, inter.num_items)


@pytest.mark.parametrize("kind", KINDS)
def test_parts_are_disjoint_and_valid_comes_from_train(kind):
  inter = _world()
  old_train, old_test = splits.split(inter, kind=kind, test_fraction=0.25, seed=0)
  train, valid, test = splits.split3(
      inter, kind=kind, test_fraction=0.25, valid_fraction=0.2, seed=0
  )
  assert valid.num_interactions > 0
  # Rows are distinct (timestamps are drawn from 10**6 values), so multiset identities
  # say: the three parts partition the input, test is split's test, and
  # train + valid is split's train (valid is a subset of the original train).
  assert _rows(train) + _rows(valid) + _rows(test) == _rows(inter)
  _same(test, old_test)
  assert _rows(train) + _rows(valid) == _rows(old_train)
  assert not (set(_rows(valid)) & set(_rows(test)))
  assert not (set(_rows(valid)) & set(_rows(train)))
  for part in (train, valid, test):
    assert (part.num_users, part.num_items) == (inter.num_users, inter.num_items)
    np.testing.assert_array_equal(part.user_groups, inter.user_groups)
    np.testing.assert_array_equal(part.item_raw, inter.item_raw)
  # Every user keeps at least one train row.
  assert np.all(train.user_counts()[inter.user_counts() > 0] >= 1)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_in_seed(kind):
  inter = _world()
  a = splits.split3(inter, kind=kind, test_fraction=0.25, valid_fraction=0.2, seed=5)
  b = splits.split3(inter, kind=kind, test_fraction=0.25, valid_fraction=0.2, seed=5)
  for x, y in zip(a, b):
    _same(x, y)
  if kind != "last":  # "last" has no randomness beyond ties
    c = splits.split3(inter, kind=kind, test_fraction=0.25, valid_fraction=0.2, seed=6)
    assert _rows(c.valid) != _rows(a.valid)


def test_random_valid_fraction_per_user():
  inter = _world()
  train0, _ = splits.split(inter, kind="random", test_fraction=0.2, seed=1)
  out = splits.split3(inter, kind="random", test_fraction=0.2, valid_fraction=0.3, seed=1)
  n = train0.user_counts()
  expected = np.where(n >= 2, np.clip(np.floor(0.3 * n + 0.5), 1, n - 1), 0)
  np.testing.assert_array_equal(out.valid.user_counts(), expected)
  # Overall, about 30% of the train part (rounding per user moves it a little).
  share = out.valid.num_interactions / train0.num_interactions
  assert 0.27 < share < 0.36, share


def test_last_valid_is_the_latest_train_row():
  inter = _world()
  train0, _ = splits.split(inter, kind="last", seed=0)
  train, valid, test = splits.split3(inter, kind="last", valid_fraction=0.1, seed=0)
  n = train0.user_counts()
  np.testing.assert_array_equal(valid.user_counts(), (n >= 2).astype(int))
  for u in np.flatnonzero(n >= 2):
    t_valid = valid.timestamps[valid.user_ids == u][0]
    assert t_valid == train0.timestamps[train0.user_ids == u].max()
    assert t_valid <= test.timestamps[test.user_ids == u][0]
  with pytest.raises(ValueError, match="kind='last'.*needs timestamps"):
    no_ts = Interactions([0, 0], [0, 1], 1, 2)
    splits.carve_valid(no_ts, no_ts.subset(np.zeros(2, bool)), kind="last", valid_fraction=0.5)


def test_users_valid_users_are_disjoint_from_test_users():
  inter = _world(num_users=400)
  train0, test = splits.split(inter, kind="users", test_fraction=0.2, seed=2)
  train, valid, _ = splits.split3(
      inter, kind="users", test_fraction=0.2, valid_fraction=0.25, seed=2
  )
  n = train0.user_counts()
  test_users = np.flatnonzero(test.user_counts() > 0)
  valid_users = np.flatnonzero(valid.user_counts() > 0)
  assert not set(test_users.tolist()) & set(valid_users.tolist())
  eligible = np.flatnonzero((n >= 2) & (test.user_counts() == 0))
  assert valid_users.size == int(np.floor(0.25 * eligible.size + 0.5))
  assert set(valid_users.tolist()) <= set(eligible.tolist())
  # Each validation user holds out test_fraction of its rows, as test users do, and keeps
  # the rest as input history; other users keep all their train rows.
  expected = np.clip(np.floor(0.2 * n[valid_users] + 0.5), 1, n[valid_users] - 1)
  np.testing.assert_array_equal(valid.user_counts()[valid_users], expected)
  assert np.all(train.user_counts()[valid_users] >= 1)
  others = np.setdiff1d(np.arange(inter.num_users), valid_users)
  np.testing.assert_array_equal(train.user_counts()[others], n[others])


def test_carve_valid_on_a_fixed_split():
  """A fixed split (e.g. LightGCN files): valid comes out of train only; test untouched."""
  inter = _world()
  train0, test0 = splits.split(inter, kind="random", seed=9)
  out = splits.carve_valid(train0, test0, kind="random", valid_fraction=0.1, seed=0)
  assert out.test is test0
  assert _rows(out.train) + _rows(out.valid) == _rows(train0)
  zero = splits.carve_valid(train0, test0, valid_fraction=0.0)
  assert zero.train is train0 and zero.test is test0 and zero.valid.num_interactions == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(valid_fraction=1.0), r"valid_fraction must be in \[0, 1\)"),
        (dict(valid_fraction=-0.1), r"valid_fraction must be in \[0, 1\)"),
        (dict(valid_fraction=True), r"valid_fraction must be in \[0, 1\)"),
        (dict(kind="time"), r"kind='time' is not one of"),
    ],
)
def test_split3_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    splits.split3(_world(), **kwargs)


def test_empty_valid_is_an_error():
  one_row_each = Interactions(np.arange(5), np.arange(5), 5, 5)
  with pytest.raises(ValueError, match="left no validation rows"):
    splits.carve_valid(one_row_each, one_row_each.subset(np.zeros(5, bool)), valid_fraction=0.5)

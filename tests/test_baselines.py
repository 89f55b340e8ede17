"""Tests for jaxrec.baselines: popularity and EASE against numpy closed forms."""

import numpy as np
import pytest

from jaxrec import baselines, metrics
from jaxrec.data.interactions import Interactions


def _world(num_users=40, num_items=25, seed=0):
  rng = np.random.default_rng(seed)
  dense = rng.random((num_users, num_items)) < rng.uniform(0.05, 0.5, size=num_items)
  dense[0] = False  # a user without train items
  users, items = np.nonzero(dense)
  # Repeat a few pairs: X is binary, so they must not count twice.
  users, items = np.append(users, users[:5]), np.append(items, items[:5])
  return Interactions(users, items, num_users, num_items), dense.astype(np.float64)


def _ease64(x, lam):
  """Steck (2019) eq. for B, directly: P = inv(X^T X + lam I), B = I - P / diag(P)."""
  p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
  return np.eye(x.shape[1]) - p / np.diag(p)[None, :]


@pytest.mark.parametrize("pair_budget", [1, 7, 1 << 24])
def test_gram_is_xtx(pair_budget):
  train, x = _world()
  g = baselines.gram(train, pair_budget=pair_budget)
  assert g.dtype == np.float32
  np.testing.assert_array_equal(g, x.T @ x)  # small integer counts: exact in float32


@pytest.mark.parametrize("lam", [0.5, 10.0, 200.0])
def test_ease_matches_numpy_closed_form(lam):
  train, x = _world()
  model = baselines.ease(train, lam=lam)
  want = _ease64(x, lam)
  assert model.b_NxN.dtype == np.float32
  np.testing.assert_array_equal(np.diag(model.b_NxN), 0.0)
  # Float32 Cholesky inverse: relative error of P about cond(G) * N * eps32 (Higham,
  # Accuracy and Stability, ch. 10 and 14); B = -P_ij / P_jj adds a few eps.
  g = x.T @ x + lam * np.eye(x.shape[1])
  tol = np.linalg.cond(g) * x.shape[1] * np.finfo(np.float32).eps
  scale = np.abs(want).max()
  np.testing.assert_allclose(model.b_NxN, want, rtol=0, atol=tol * scale)
  assert tol < 1e-3  # so the check is meaningful on this data
  # Scores x_u B for every user, in one batch and in odd batches.
  users = np.arange(train.num_users)
  np.testing.assert_allclose(
      model.scores(users), x @ want, rtol=0, atol=tol * np.abs(x @ want).max() + 1e-6
  )
  np.testing.assert_array_equal(model.scores(users[::-3]), model.scores(users)[::-3])
  np.testing.assert_array_equal(model.scores(np.array([0])), 0.0)  # no train items


def test_ease_on_disjoint_groups_inverts_one_component_at_a_time(monkeypatch):
  """Three groups of users and items that never meet (shuffled ids) plus two items no user
  has: the item components are found (scipy's union, checked against the groups by hand)
  and B equals numpy's float64 closed form over the whole matrix, with the per-component
  inverse taken (and the whole-matrix inverse never called)."""
  rng = np.random.default_rng(3)
  num_items, num_users = 32, 45
  perm = rng.permutation(num_items)
  group_of_item = np.full(num_items, -1)
  group_of_item[perm[:10]], group_of_item[perm[10:20]], group_of_item[perm[20:30]] = 0, 1, 2
  x = np.zeros((num_users, num_items))
  for u in range(num_users):
    g = u % 3
    members = np.flatnonzero(group_of_item == g)
    x[u, rng.choice(members, size=rng.integers(2, 7), replace=False)] = 1.0
  users, items = np.nonzero(x)
  train = Interactions(users, items, num_users, num_items)
  offsets, csr_items, _, _ = baselines._binary_csr(train)
  labels = baselines.item_components(offsets, csr_items, num_users, num_items)
  for g in range(3):  # each group one component (dense enough to be connected here)
    assert len(set(labels[group_of_item == g])) == 1
  assert len(set(labels)) == 5  # 3 groups + the 2 items without users
  calls = []
  whole = baselines.inverse_spd_inplace
  monkeypatch.setattr(
      baselines, "inverse_spd_inplace", lambda a: calls.append(a.shape[0]) or whole(a)
  )
  model = baselines.ease(train, lam=2.0)
  assert sorted(calls) == [1, 1, 10, 10, 10]
  want = _ease64(x, 2.0)
  np.testing.assert_allclose(model.b_NxN, want, rtol=0, atol=1e-5 * np.abs(want).max())
  assert np.all(model.b_NxN[np.ix_(group_of_item == 0, group_of_item == 1)] == 0.0)


def test_ease_scores_in_gather_sub_batches(monkeypatch):
  train, _ = _world()
  model = baselines.ease(train, lam=5.0)
  users = np.arange(train.num_users)
  whole = model.scores(users)
  monkeypatch.setattr(baselines, "_GATHER_BYTES", 4 * train.num_items * 3)  # 3 rows a time
  np.testing.assert_allclose(model.scores(users), whole, rtol=1e-6, atol=1e-6)


def test_ease_through_evaluate_scores_equals_brute_force_ranking():
  train, x = _world(seed=1)
  rng = np.random.default_rng(1)
  test = Interactions(rng.integers(0, 40, 60), rng.integers(0, 25, 60), 40, 25)
  model = baselines.ease(train, lam=3.0)
  got = metrics.evaluate_scores(model.scores, 40, 25, train, test, ks=(5,), query_batch=7)
  # Same numbers as evaluate with the dense scores as query embeddings and items = I.
  want = metrics.evaluate(
      model.scores(np.arange(40)), np.eye(25, dtype=np.float32), train, test, ks=(5,)
  )
  for key in ("recall@5", "recall_full@5", "ndcg@5", "mrr"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)


def test_popularity_ranks_by_train_count():
  # Item j has j + 1 distinct train users (users 0..j), so the ranking is N-1, ..., 0.
  n = 6
  users = np.concatenate([np.arange(j + 1) for j in range(n)])
  items = np.concatenate([np.full(j + 1, j) for j in range(n)])
  train = Interactions(np.append(users, 0), np.append(items, 5), n + 1, n)  # a repeat
  model = baselines.popularity(train)
  np.testing.assert_array_equal(model.counts_N, np.arange(1, n + 1))
  s = model.scores(np.array([3, 6]))
  assert s.shape == (2, n)
  np.testing.assert_array_equal(s[0], s[1])
  # User 6 has no train item: its top-3 is 5, 4, 3; user 2 (items 2..5 seen) gets 1, 0.
  test = Interactions(np.array([6, 6, 2]), np.array([5, 0, 1]), n + 1, n)
  got = metrics.evaluate_scores(model.scores, n + 1, n, train, test, ks=(2,))
  # user 6: top-2 = [5, 4], T = {5, 0}: 1 hit / min(2, 2);  user 2: top-2 = [1, 0],
  # T = {1}: 1 hit / 1.  recall@2 = (1/2 + 1) / 2
  assert got["recall@2"] == pytest.approx(0.75)
  assert got["coverage@2"] == pytest.approx(4 / 6)


def test_ease_rejects_bad_lambda():
  train, _ = _world()
  for lam in (0, -1.0, True, "80"):
    with pytest.raises(ValueError, match="lam must be a positive number"):
      baselines.ease(train, lam=lam)


def test_inverse_is_computed_in_place():
  """The memory claim of `ease`: the Cholesky inverse reuses the Gram buffer (no copy)."""
  rng = np.random.default_rng(3)
  m = rng.standard_normal((300, 200))
  g64 = m.T @ m + 5.0 * np.eye(200)
  g = g64.astype(np.float32)  # C order, as `gram` returns
  p = baselines.inverse_spd_inplace(g)
  assert np.shares_memory(p, g) and p.flags.c_contiguous
  want = np.linalg.inv(g64)
  tol = np.linalg.cond(g64) * 200 * np.finfo(np.float32).eps
  np.testing.assert_allclose(p, want, rtol=0, atol=tol * np.abs(want).max())
  np.testing.assert_array_equal(p, p.T)


@pytest.mark.parametrize("n, max_n", [(200, 64), (201, 100), (7, 3)])
def test_blocked_inverse_matches_numpy(monkeypatch, n, max_n):
  """The 2 x 2 Schur-complement path (recursing twice for 200 / 64) gives the inverse."""
  monkeypatch.setattr(baselines, "_LAPACK_MAX_N", max_n)
  rng = np.random.default_rng(n)
  m = rng.standard_normal((n + 50, n))
  g64 = m.T @ m + 5.0 * np.eye(n)
  g = g64.astype(np.float32)
  p = baselines.inverse_spd_inplace(g)
  assert np.shares_memory(p, g)
  want = np.linalg.inv(g64)
  tol = np.linalg.cond(g64) * n * np.finfo(np.float32).eps
  np.testing.assert_allclose(p, want, rtol=0, atol=tol * np.abs(want).max())
  np.testing.assert_allclose(p, p.T, rtol=0, atol=tol * np.abs(want).max())

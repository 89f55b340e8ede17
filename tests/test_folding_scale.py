"""The chunked folding metrics (`metrics._group_sweep`, `metrics._folding_auc`) against
the computation they replaced: every user's N scores sorted (numpy here), on small random
worlds; and the sampled uniform-pair folding_auc against its exact value.

Reference = the pre-chunking definitions in numpy float64: for user u with U = unseen
(not train) items, same/other = U split by group,
  folding_auc   = mean_u #{(a other, b same): s_a > s_b} + #{... ==} / 2, over |O||S|,
                  counted by sorting the same-group scores (searchsorted left/right);
  folding_score = mean_u mean_{j in U} max(0, (s_j - lo) / (hi - lo) - R[g_u, g_j]);
  held-out AUC / cross_group_heldout as `test_metrics.np_heldout_folding`.
Gaussian embeddings make ties improbable and neighbouring scores ~1e-3 apart, far above
float32 rounding (~1e-7), so rtol 1e-5 holds; integer embeddings give exact float32 dot
products, so with ties the comparison is exact too.
"""

import numpy as np
import pytest

from jaxrec import metrics
from tests.test_metrics import Inter, np_heldout_folding


def sorted_reference(query, items, train, test, rel):
  """The old sort-based definitions (see the module docstring)."""
  scores = query.astype(np.float64) @ items.astype(np.float64).T
  ug, ig = train.user_groups, train.item_groups
  seen, tests = {}, {}
  for u, i in zip(train.user_ids.tolist(), train.item_ids.tolist()):
    seen.setdefault(u, set()).add(i)
  for u, i in zip(test.user_ids.tolist(), test.item_ids.tolist()):
    if i not in seen.get(u, set()):
      tests.setdefault(u, set()).add(i)
  users = sorted(tests)
  aucs, folds = [], []
  for u in users:
    unseen = np.array([j for j in range(items.shape[0]) if j not in seen.get(u, set())])
    s = scores[u, unseen]
    same = ig[unseen] == ug[u]
    b = np.sort(s[same])
    a = s[~same]
    if a.size and b.size:
      less = np.searchsorted(b, a, side="left")
      less_eq = np.searchsorted(b, a, side="right")
      aucs.append(np.sum(less + 0.5 * (less_eq - less)) / (a.size * b.size))
    span = s.max() - s.min()
    norm = (s - s.min()) / span if span > 0 else np.zeros_like(s)
    folds.append(np.mean(np.maximum(0.0, norm - rel[ug[u], ig[unseen]])))
  out = {"folding_auc": np.mean(aucs), "folding_score": np.mean(folds)}
  out.update(np_heldout_folding(scores, train, tests, users))
  return out


def random_world(seed, num_users=23, num_items=97, groups=3, integer=False):
  """Users with 1..9 held-out items (so blocks pad different numbers of positives), one
  user who trained on all but 3 items, random groups."""
  rng = np.random.default_rng(seed)
  if integer:
    query = rng.integers(-2, 3, (num_users, 5)).astype(np.float32)
    items = rng.integers(-2, 3, (num_items, 5)).astype(np.float32)
  else:
    query = rng.normal(size=(num_users, 5)).astype(np.float32)
    items = rng.normal(size=(num_items, 5)).astype(np.float32)
  ug = rng.integers(0, groups, num_users).astype(np.int32)
  ig = rng.integers(0, groups, num_items).astype(np.int32)
  tr_u, tr_i, te_u, te_i = [], [], [], []
  for u in range(num_users):
    perm = rng.permutation(num_items)
    n = num_items - 3 if u == 2 else int(rng.integers(1, 15))
    t = 2 if u == 2 else int(rng.integers(1, 10))
    tr_u += [u] * n
    tr_i += list(perm[:n])
    te_u += [u] * t
    te_i += list(perm[n : n + t])
  train = Inter(np.array(tr_u), np.array(tr_i), num_users, num_items, ug, ig)
  test = Inter(np.array(te_u), np.array(te_i), num_users, num_items)
  return query, items, train, test


KEYS = ("folding_auc", "folding_score", "folding_auc_heldout", "cross_group_heldout")


@pytest.mark.parametrize(
    "seed,chunk_size,query_batch,fractional",
    [
        (0, 7, 3, False),  # 14 chunks (the last overlapping), 8 blocks, identity R
        (1, 16, 5, True),  # R in (0, 1): the second sweep with known bounds
        (2, 4096, 1024, True),  # one chunk, one block
    ],
)
def test_chunked_folding_metrics_equal_the_sorted_computation(
    seed, chunk_size, query_batch, fractional
):
  query, items, train, test = random_world(seed)
  rel = np.random.default_rng(seed).uniform(size=(3, 3)) if fractional else np.eye(3)
  got = metrics.evaluate(
      query,
      items,
      train,
      test,
      ks=(5,),
      relatedness=rel.astype(np.float32) if fractional else None,
      chunk_size=chunk_size,
      query_batch=query_batch,
  )
  want = sorted_reference(query, items, train, test, rel.astype(np.float32).astype(np.float64))
  for key in KEYS:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)


def test_chunked_folding_metrics_count_ties_half_like_the_sorted_computation():
  query, items, train, test = random_world(5, integer=True)
  scores = query @ items.T
  assert np.mean(scores[:, None, :] == scores[:, :, None]) > 0.05  # ties are common
  got = metrics.evaluate(query, items, train, test, ks=(5,), chunk_size=9, query_batch=4)
  want = sorted_reference(query, items, train, test, np.eye(3))
  for key in KEYS:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)


def test_sampled_folding_auc_is_unbiased_within_its_stated_error():
  """Sides of ~1,000 items, auc_samples=64: each user's estimate is a two-sample
  U-statistic of m = n = 64 draws, Var <= (m + n - 1) / (4 m n) (the docstring's bound),
  so over 30 users and 16 seeds the mean has SE <= sqrt(127 / 16384 / 30 / 16) = 0.0040;
  it must lie within 4 SE of the exact value, and one run within 4 of its own SE."""
  rng = np.random.default_rng(7)
  num_users, num_items = 30, 2000
  query = rng.normal(size=(num_users, 4)).astype(np.float32)
  items = rng.normal(size=(num_items, 4)).astype(np.float32)
  ug = rng.integers(0, 2, num_users).astype(np.int32)
  ig = rng.integers(0, 2, num_items).astype(np.int32)
  tr_u = np.repeat(np.arange(num_users), 5)
  tr_i = rng.integers(0, num_items, tr_u.size)
  te_u = np.arange(num_users)
  te_i = (tr_i[::5] + 1) % num_items
  train = Inter(tr_u, tr_i, num_users, num_items, ug, ig)
  test = Inter(te_u, te_i, num_users, num_items)
  exact = sorted_reference(query, items, train, test, np.eye(2))["folding_auc"]
  runs = [
      metrics.evaluate(query, items, train, test, ks=(5,), auc_samples=64, seed=s)["folding_auc"]
      for s in range(16)
  ]
  se_one = np.sqrt(127 / (4 * 64 * 64) / num_users)
  assert np.std(runs) > 0  # it is a sample ...
  assert abs(runs[0] - exact) < 4 * se_one  # ... within its error ...
  assert abs(np.mean(runs) - exact) < 4 * se_one / 4  # ... and unbiased
  # Exhaustive once auc_samples covers both sides: the exact value.
  full = metrics.evaluate(query, items, train, test, ks=(5,), auc_samples=num_items)
  np.testing.assert_allclose(full["folding_auc"], exact, rtol=1e-6)


def test_pair_wins_counts_every_valid_pair_over_full_and_partial_row_batches():
  """`metrics._pair_wins` scores its rows 64 query rows at a time; 100 rows = one full
  batch and a remainder of 36. Integer embeddings make the float32 scores exact and ties
  common, so the count must equal numpy's double loop exactly:
  sum_{a, b valid} [s_a > s_b] + [s_a == s_b] / 2 per row."""
  rng = np.random.default_rng(11)
  rows, m, num_items = 100, 24, 50
  query = rng.integers(-2, 3, (rows, 3)).astype(np.float32)
  items = rng.integers(-2, 3, (num_items, 3)).astype(np.float32)
  other = rng.integers(0, num_items, (rows, m)).astype(np.int32)
  same = rng.integers(0, num_items, (rows, m)).astype(np.int32)
  other_ok = rng.uniform(size=(rows, m)) < 0.8
  same_ok = rng.uniform(size=(rows, m)) < 0.8
  got = np.asarray(metrics._pair_wins(query, items, other, same, other_ok, same_ok))
  s_a = np.einsum("bd,bmd->bm", query, items[other])
  s_b = np.einsum("bd,bmd->bm", query, items[same])
  ok = other_ok[:, :, None] & same_ok[:, None, :]
  diff = s_a[:, :, None] - s_b[:, None, :]
  want = np.sum(ok * ((diff > 0) + 0.5 * (diff == 0)), axis=(1, 2))
  assert np.mean(diff[ok] == 0) > 0.05  # ties are common
  np.testing.assert_array_equal(got, want)


def test_heldout_folding_is_evaluates_keys():
  query, items, train, test = random_world(3)
  got = metrics.heldout_folding(query, items, train, test, chunk_size=11, query_batch=4)
  full = metrics.evaluate(query, items, train, test, ks=(5,))
  assert got == {k: full[k] for k in ("folding_auc_heldout", "cross_group_heldout")}


@pytest.mark.parametrize("chunk_size,query_batch", [(6, 4), (4096, 1024)])
def test_closed_form_counts_with_binary_relatedness_and_a_user_group_without_items(
    chunk_size, query_batch
):
  """|U|, |A|, |O| and the fold sum of a binary R come from closed forms (item-group
  sums of v in float64, train pairs subtracted), not from the sweep: checked against the
  sorted computation with a non-identity 0/1 R (a user group related to nothing, one
  related to two item groups) and a user group (3) that labels no item."""
  query, items, train, test = random_world(11)
  rng = np.random.default_rng(11)
  train.user_groups = rng.integers(0, 4, query.shape[0]).astype(np.int32)
  rel = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 1]], np.float32)
  got = metrics.evaluate(
      query,
      items,
      train,
      test,
      ks=(5,),
      relatedness=rel,
      chunk_size=chunk_size,
      query_batch=query_batch,
  )
  want = sorted_reference(query, items, train, test, rel.astype(np.float64))
  for key in KEYS:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)

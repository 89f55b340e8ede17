"""jaxrec.metrics against brute-force numpy: full [U, N] score matrices, argsort, loops.

Scores are random Gaussian floats, so ties have probability ~0 and the rankings are
unique; the numpy references work in float64, and the gap between neighbouring
scores (~1e-2 at these sizes) is far above float32 rounding (~1e-7).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import metrics

# ----------------------------------------------------------------------------------
# Fixtures and brute-force references
# ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Inter:  # duck-typed stand-in for jaxrec.data.Interactions
  user_ids: np.ndarray
  item_ids: np.ndarray
  num_users: int
  num_items: int
  user_groups: np.ndarray | None = None
  item_groups: np.ndarray | None = None


def make_world(seed, num_users=29, num_items=53, dim=6, num_groups=3):
  """Random embeddings, groups and a train/test split with awkward cases: duplicate
  train pairs, a test pair that repeats a train pair, a user with no test items, and
  a user whose unseen items are fewer than max(K)."""
  rng = np.random.default_rng(seed)
  query = rng.normal(size=(num_users, dim)).astype(np.float32)
  items = rng.normal(size=(num_items, dim)).astype(np.float32)
  ug = rng.integers(0, num_groups, num_users)
  ig = rng.integers(0, num_groups, num_items)
  tr_u, tr_i, te_u, te_i = [], [], [], []
  for u in range(num_users):
    n = num_items - 6 if u == 3 else int(rng.integers(2, 12))  # user 3: 6 unseen
    perm = rng.permutation(num_items)
    tr_u += [u] * n
    tr_i += list(perm[:n])
    if u != 5:  # user 5 has no test items
      t = int(rng.integers(1, 5)) if u != 3 else 3
      te_u += [u] * t
      te_i += list(perm[n : n + t])
  tr_u += [0, 0]  # duplicate train pairs
  tr_i += [tr_i[0], tr_i[0]]
  te_u += [1]  # a test pair that is also a train pair: must be ignored
  te_i += [tr_i[tr_u.index(1)]]
  train = Inter(
      np.array(tr_u, np.int32),
      np.array(tr_i, np.int32),
      num_users,
      num_items,
      ug.astype(np.int32),
      ig.astype(np.int32),
  )
  test = Inter(np.array(te_u, np.int32), np.array(te_i, np.int32), num_users, num_items)
  return query, items, train, test


def np_rankings(query, items, train, users, depth):
  """Per user: items sorted by descending score with train items removed."""
  scores = query.astype(np.float64) @ items.astype(np.float64).T
  seen = {}
  for u, i in zip(train.user_ids, train.item_ids):
    seen.setdefault(int(u), set()).add(int(i))
  out = {}
  for u in users:
    order = [j for j in np.argsort(-scores[u]) if j not in seen.get(u, set())]
    out[u] = order[:depth]
  return scores, seen, out


def np_metrics(query, items, train, test, ks, relatedness=None, eval_users=None):
  tests = {}
  train_pairs = set(zip(train.user_ids.tolist(), train.item_ids.tolist()))
  for u, i in zip(test.user_ids.tolist(), test.item_ids.tolist()):
    if (u, i) not in train_pairs:
      tests.setdefault(u, set()).add(i)
  users = sorted(u for u in tests if eval_users is None or u in eval_users)
  scores, seen, ranks = np_rankings(query, items, train, users, max(ks))
  out = {}
  for k in ks:
    rec, rec_full, ndcg, cov, cross = [], [], [], set(), []
    for u in users:
      top = ranks[u][:k]
      hit = [j in tests[u] for j in top]
      rec.append(sum(hit) / min(k, len(tests[u])))
      rec_full.append(sum(hit) / len(tests[u]))
      dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hit))
      idcg = sum(1 / np.log2(r + 2) for r in range(min(k, len(tests[u]))))
      ndcg.append(dcg / idcg)
      cov.update(top)
      ug, ig = train.user_groups, train.item_groups
      cross.append(np.mean([ig[j] != ug[u] for j in top]))
    out[f"recall@{k}"] = np.mean(rec)
    out[f"recall_full@{k}"] = np.mean(rec_full)
    out[f"ndcg@{k}"] = np.mean(ndcg)
    out[f"coverage@{k}"] = len(cov) / items.shape[0]
    out[f"cross_group@{k}"] = np.mean(cross)
  mrr = []
  for u in users:
    rr = 0.0
    for r, j in enumerate(ranks[u]):
      if j in tests[u]:
        rr = 1.0 / (r + 1)
        break
    mrr.append(rr)
  out["mrr"] = np.mean(mrr)
  # folding AUC by enumerating every (other-group, same-group) unseen pair
  ug, ig = train.user_groups, train.item_groups
  aucs, folds = [], []
  rel = np.eye(ug.max() + 1, ig.max() + 1) if relatedness is None else relatedness
  for u in users:
    unseen = [j for j in range(items.shape[0]) if j not in seen.get(u, set())]
    a = [scores[u, j] for j in unseen if ig[j] != ug[u]]
    b = [scores[u, j] for j in unseen if ig[j] == ug[u]]
    if a and b:
      wins = [(sa > sb) + 0.5 * (sa == sb) for sa in a for sb in b]
      aucs.append(np.mean(wins))
    s = np.array([scores[u, j] for j in unseen])
    norm = (s - s.min()) / (s.max() - s.min())
    r = np.array([rel[ug[u], ig[j]] for j in unseen])
    folds.append(np.mean(np.maximum(0.0, norm - r)))
  out["folding_auc"] = np.mean(aucs)
  out["folding_score"] = np.mean(folds)
  out.update(np_heldout_folding(scores, train, tests, users))
  return out


def np_heldout_folding(scores, train, tests, users):
  """Per held-out pair (u, i), over the items u neither trained on nor held out (A) and
  those of other groups (O): the share of O below s_ui (AUC) and #O above / #A above
  (ties half); mean over u's pairs, then over users."""
  ug, ig = train.user_groups, train.item_groups
  seen = {}
  for u, i in zip(train.user_ids.tolist(), train.item_ids.tolist()):
    seen.setdefault(u, set()).add(i)
  aucs, shares = [], []
  for u in users:
    rest = [j for j in range(scores.shape[1]) if j not in seen.get(u, set()) | tests[u]]
    others = [j for j in rest if ig[j] != ug[u]]
    s_o, s_a = scores[u, others], scores[u, rest]
    if others:
      aucs.append(
          np.mean([np.mean((s_o < scores[u, i]) + 0.5 * (s_o == scores[u, i])) for i in tests[u]])
      )
    per_pair = []
    for i in tests[u]:
      above_o = np.sum(s_o > scores[u, i]) + 0.5 * np.sum(s_o == scores[u, i])
      above_a = np.sum(s_a > scores[u, i]) + 0.5 * np.sum(s_a == scores[u, i])
      per_pair.append(above_o / above_a if above_a > 0 else 0.0)
    shares.append(np.mean(per_pair))
  return {"folding_auc_heldout": np.mean(aucs), "cross_group_heldout": np.mean(shares)}


# ----------------------------------------------------------------------------------
# topk
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k,chunk_size,query_batch,group",
    [
        (7, 16, 5, 1),  # N=101 not divisible by 16, Q=23 not divisible by 5
        (3, 64, 4, 4),  # two-stage group selection inside a chunk (64 >= 4*3*4)
        (2, 64, 4, 5),  # group selection with a padded last group (64 % 5 != 0)
        (2, 60, 6, 3),  # group selection in the remainder chunk too (41 cols, padded)
        (5, 1000, 64, 16),  # one chunk bigger than N, one query batch bigger than Q
        (101, 32, 7, 2),  # k = N: every non-excluded item, then -inf / -1 slots
    ],
)
def test_topk_matches_numpy_with_exclusion(k, chunk_size, query_batch, group):
  rng = np.random.default_rng(0)
  q, n = 23, 101
  query = rng.normal(size=(q, 8)).astype(np.float32)
  items = rng.normal(size=(n, 8)).astype(np.float32)
  rows = rng.integers(0, q, 300)
  cols = rng.integers(0, n, 300)  # includes duplicate pairs
  rows = np.concatenate([rows, np.full(n - 2, 4)])  # query 4: only 2 items left
  cols = np.concatenate([cols, np.arange(2, n)])
  vals, ids = metrics.topk(
      query,
      items,
      k,
      exclude_rows=rows,
      exclude_cols=cols,
      chunk_size=chunk_size,
      query_batch=query_batch,
      group=group,
  )
  scores = query.astype(np.float64) @ items.astype(np.float64).T
  scores[rows, cols] = -np.inf
  for r in range(q):
    order = np.argsort(-scores[r], kind="stable")[:k]
    finite = np.isfinite(scores[r, order])
    np.testing.assert_array_equal(ids[r, : finite.sum()], order[finite])
    np.testing.assert_allclose(
        vals[r, : finite.sum()], scores[r, order[finite]], rtol=1e-5, atol=1e-5
    )
    assert np.all(ids[r, finite.sum() :] == -1)
    assert np.all(np.isneginf(vals[r, finite.sum() :]))
  assert ids[4, :2].tolist() == sorted([0, 1], key=lambda j: -scores[4, j])


def test_topk_without_exclusion_equals_argsort():
  rng = np.random.default_rng(1)
  query = rng.normal(size=(10, 4)).astype(np.float32)
  items = rng.normal(size=(77, 4)).astype(np.float32)
  _, ids = metrics.topk(query, items, 9, chunk_size=10, query_batch=3)
  expect = np.argsort(-(query.astype(np.float64) @ items.T.astype(np.float64)), 1)[:, :9]
  np.testing.assert_array_equal(ids, expect)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=0), "k must be a positive int"),
        (dict(k=78), "exceeds the number of items"),
        (dict(k=3, chunk_size=0), "chunk_size"),
        (dict(k=3, exclude_rows=[0]), "given together"),
        (dict(k=3, exclude_rows=[10], exclude_cols=[0]), "exclude_rows id 10"),
        (dict(k=3, exclude_rows=[0], exclude_cols=[77]), "exclude_cols id 77"),
    ],
)
def test_topk_rejects_bad_input(kwargs, match):
  query, items = np.ones((10, 4), np.float32), np.ones((77, 4), np.float32)
  with pytest.raises(ValueError, match=match):
    metrics.topk(query, items, **kwargs)


# ----------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size,query_batch", [(7, 4), (4096, 1024)])
def test_evaluate_matches_bruteforce(chunk_size, query_batch):
  query, items, train, test = make_world(seed=2)
  got = metrics.evaluate(
      query, items, train, test, ks=(5, 10), chunk_size=chunk_size, query_batch=query_batch
  )
  want = np_metrics(query, items, train, test, ks=(5, 10))
  assert set(got) == set(want)
  for key in want:
    assert isinstance(got[key], float)
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("chunk_size,pair_batch", [(1 << 16, 1024), (7, 5)])
def test_heldout_softmax_loss_matches_numpy(chunk_size, pair_batch):
  query, items, train, test = make_world(seed=4)
  temp = 0.7
  s = np.asarray(query, np.float64) @ np.asarray(items, np.float64).T / temp
  m = s.max(1, keepdims=True)
  log_p = s - m - np.log(np.exp(s - m).sum(1, keepdims=True))
  want = -np.mean(log_p[test.user_ids, test.item_ids])
  got = metrics.heldout_softmax_loss(
      query, items, test, temperature=temp, chunk_size=chunk_size, pair_batch=pair_batch
  )
  np.testing.assert_allclose(got, want, rtol=1e-5)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    metrics.heldout_softmax_loss(query, items, test, temperature=0.0)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _old_softmax_nll_batch(query_PxD, items_NxD, pos_P, inv_t, *, chunk_size):
  """The per-pair held-out loss before the per-user rewrite, verbatim: one log-sum-exp
  over the catalogue per test pair."""
  n = items_NxD.shape[0]
  q = query_PxD * inv_t
  pos_logit = jnp.sum(q * items_NxD[pos_P], axis=1)
  lse = jnp.full(q.shape[:1], -jnp.inf, jnp.float32)
  for start in range(0, n, chunk_size):
    block = jnp.dot(q, items_NxD[start : start + chunk_size].T, precision=jax.lax.Precision.HIGHEST)
    lse = jnp.logaddexp(lse, jax.nn.logsumexp(block, axis=1))
  return lse - pos_logit


def old_heldout_softmax_loss(query, items, users, pos, temperature, chunk_size, pair_batch):
  inv_t = jnp.float32(1.0 / temperature)
  query, items = jnp.asarray(query), jnp.asarray(items)
  chunk = min(chunk_size, items.shape[0])
  total = 0.0
  for start in range(0, users.size, pair_batch):
    u = users[start : start + pair_batch]
    p = pos[start : start + pair_batch]
    real = u.size
    if real < pair_batch and users.size > pair_batch:
      u, p = np.pad(u, (0, pair_batch - real)), np.pad(p, (0, pair_batch - real))
    nll = _old_softmax_nll_batch(
        query[jnp.asarray(u)], items, jnp.asarray(p), inv_t, chunk_size=chunk
    )
    total += float(jnp.sum(nll[:real]))
  return total / users.size


@pytest.mark.parametrize(
    "chunk_size,query_batch,pair_batch", [(1 << 16, 1024, 1 << 16), (7, 3, 5), (53, 4, 2)]
)
def test_heldout_softmax_loss_per_user_matches_numpy_and_the_per_pair_version(
    chunk_size, query_batch, pair_batch
):
  """One log-sum-exp per distinct user, reused by all of that user's pairs: equal to the
  float64 numpy mean of lse_u - s_ui / T and to the old per-pair computation. Test pairs
  repeat users (up to 9 pairs for user 2) and repeat one pair, unsorted; chunk 7 leaves a
  ragged tail of 53 items, chunk 53 none."""
  query, items, _, _ = make_world(seed=6)
  rng = np.random.default_rng(6)
  users = np.concatenate([rng.integers(0, 29, 40), np.full(9, 2), [4, 4]])
  pos = np.concatenate([rng.integers(0, 53, 49), [11, 11]])
  order = rng.permutation(users.size)
  users, pos = users[order], pos[order]
  temp = 0.3
  s = np.asarray(query, np.float64) @ np.asarray(items, np.float64).T / temp
  m = s.max(1)
  lse = m + np.log(np.exp(s - m[:, None]).sum(1))
  want = np.mean(lse[users] - s[users, pos])
  got = metrics.heldout_softmax_loss(
      query,
      items,
      (users, pos),
      temperature=temp,
      chunk_size=chunk_size,
      query_batch=query_batch,
      pair_batch=pair_batch,
  )
  np.testing.assert_allclose(got, want, rtol=1e-6)
  old = old_heldout_softmax_loss(query, items, users, pos, temp, chunk_size, 1024)
  np.testing.assert_allclose(got, old, rtol=1e-6)
  # Each user's loss alone, too (a wrong user -> lse mapping would mix users up).
  for u in (2, 4, int(users[0])):
    mine = users == u
    got_u = metrics.heldout_softmax_loss(
        query, items, (users[mine], pos[mine]), temperature=temp, chunk_size=chunk_size
    )
    np.testing.assert_allclose(got_u, np.mean(lse[u] - s[u, pos[mine]]), rtol=1e-6)


def test_evaluate_eval_users_relatedness_and_plain_pairs():
  query, items, train, test = make_world(seed=3)
  rel = np.random.default_rng(3).uniform(size=(3, 3)).astype(np.float32)
  subset = [0, 1, 3, 5, 8, 13, 21]  # user 5 has no test item: skipped
  got = metrics.evaluate(
      query,
      items,
      (train.user_ids, train.item_ids),
      (test.user_ids, test.item_ids),
      ks=(4,),
      eval_users=subset,
      relatedness=rel,
      user_groups=train.user_groups,
      item_groups=train.item_groups,
      chunk_size=16,
      query_batch=3,
  )
  want = np_metrics(query, items, train, test, ks=(4,), relatedness=rel, eval_users=set(subset))
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_evaluate_without_groups_has_only_ranking_keys():
  query, items, train, test = make_world(seed=4)
  train.user_groups = None
  got = metrics.evaluate(query, items, train, test, ks=(10,))
  assert set(got) == {"recall@10", "recall_full@10", "ndcg@10", "mrr", "coverage@10"}


def test_group_metrics_separate_folded_from_unfolded_embeddings():
  """Closed-form extremes: group-indicator embeddings (user of group g scores 1 on
  group g items, 0 elsewhere) never cross groups: cross_group = folding_auc = 0 and
  folding_score = 0 (unrelated items normalise to 0). Constant scores (everything
  tied, the positive-only collapse) give folding_auc = 0.5 exactly (all ties)."""
  g, per = 3, 10
  ig = np.repeat(np.arange(g), per).astype(np.int32)
  ug = np.arange(g).astype(np.int32)
  onehot = np.eye(g, dtype=np.float32)
  train = Inter(np.array([0, 1, 2], np.int32), np.array([0, 10, 20], np.int32), g, g * per, ug, ig)
  test = Inter(np.array([0, 1, 2], np.int32), np.array([1, 11, 21], np.int32), g, g * per)
  good = metrics.evaluate(onehot, onehot[ig], train, test, ks=(5,))
  assert good["cross_group@5"] == 0.0 and good["folding_auc"] == 0.0
  assert good["folding_score"] == 0.0
  flat = metrics.evaluate(
      np.ones((g, 1), np.float32), np.ones((g * per, 1), np.float32), train, test, ks=(5,)
  )
  assert flat["folding_auc"] == 0.5


@pytest.mark.parametrize("chunk_size,query_batch", [(7, 3), (4096, 1024)])
def test_heldout_folding_matches_bruteforce_with_ties(chunk_size, query_batch):
  """Integer embeddings (exact dot products, many ties) against the numpy enumeration;
  chunks of 7 over 53 items (a last chunk that overlaps its predecessor) and blocks of 3
  users exercise the streaming."""
  query, items, train, test = make_world(seed=6)
  rng = np.random.default_rng(6)
  query = rng.integers(-2, 3, query.shape).astype(np.float32)
  items = rng.integers(-2, 3, items.shape).astype(np.float32)
  got = metrics.heldout_folding(
      query, items, train, test, chunk_size=chunk_size, query_batch=query_batch
  )
  want = {k: v for k, v in np_metrics(query, items, train, test, ks=(5,)).items() if "heldout" in k}
  scores = query.astype(np.float64) @ items.astype(np.float64).T
  assert np.mean(scores[:, None, :] == scores[:, :, None]) > 0.05  # ties are common
  assert set(got) == set(want)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
  # Everything tied (the positive-only collapse): blind, AUC 0.5 exactly.
  flat = metrics.heldout_folding(
      np.full(query.shape, 0.1, np.float32), np.full(items.shape, 0.3, np.float32), train, test
  )
  assert flat["folding_auc_heldout"] == 0.5
  with pytest.raises(ValueError, match="needs user_groups and item_groups"):
    metrics.heldout_folding(query, items, (train.user_ids, train.item_ids), test)


def _group_world(seed=0, groups=4, users_per=60, items_per=250, per_user=12):
  """Users and items in G groups; each user's positives are items of their own group
  drawn by a Zipf popularity (1/(rank+1)), so a group's tail items are rarely anyone's."""
  rng = np.random.default_rng(seed)
  ug = np.repeat(np.arange(groups), users_per).astype(np.int32)
  ig = np.repeat(np.arange(groups), items_per).astype(np.int32)
  pop = 1.0 / (np.arange(items_per) + 1.0)
  pop /= pop.sum()
  tr_u, tr_i, te_u, te_i = [], [], [], []
  for u, g in enumerate(ug):
    picks = g * items_per + rng.choice(items_per, per_user, replace=False, p=pop)
    tr_u += [u] * (per_user - 3)
    tr_i += list(picks[:-3])
    te_u += [u] * 3
    te_i += list(picks[-3:])
  n_u, n_i = ug.size, ig.size
  train = Inter(np.array(tr_u, np.int32), np.array(tr_i, np.int32), n_u, n_i, ug, ig)
  test = Inter(np.array(te_u, np.int32), np.array(te_i, np.int32), n_u, n_i)
  return train, test, ug, ig, pop


def test_folding_auc_heldout_orders_folded_below_separated_and_agrees_with_cross_group():
  """On a group world (4 groups of 250 items, 60 users each, positives by popularity):
  * separated: user and item vectors point along their group's axis, an item's length
    its popularity ** 0.5 -> no other-group item outscores a positive: AUC ~ 1,
    cross_group_heldout ~ 0, cross_group@20 = 0;
  * folded: every group on one shared axis (the positive-only collapse) -> the model
    sees popularity only: AUC = P(a positive is more popular than a random other-group
    item) ~ 0.77, cross_group_heldout ~ 0.8, cross_group@20 ~ 0.86;
  * tail-blind: separated for each group's 30 most popular items, the rest random noise
    (items nobody trains on): cross_group@20 = 0 while the uniform-pair folding_auc reads
    near blind (~0.44). cross_group_heldout stays far below the folded world's (~0.35:
    0 for head positives, ~0.75 for the third drawn from the tail); the AUC (~0.76) is
    diluted by the other groups' tail and does not separate it from the folded world,
    which is why both measures are reported.
  """
  train, test, ug, ig, pop = _group_world()
  rng = np.random.default_rng(1)
  g_count, rank = 4, np.tile(np.arange(pop.size), 4)

  def embed(axis_of_group, strength, noise):
    q = np.eye(g_count)[axis_of_group[ug]] + 0.02 * rng.normal(size=(ug.size, g_count))
    v = np.eye(g_count)[axis_of_group[ig]] * strength[:, None]
    v = v + noise * rng.normal(size=(ig.size, g_count))
    return q.astype(np.float32), v.astype(np.float32)

  sqrt_pop = np.sqrt(pop / pop.max())[rank]
  out = {}
  for name, axes, strength, noise in (
      ("separated", np.arange(g_count), sqrt_pop, 0.01),
      ("folded", np.zeros(g_count, int), sqrt_pop, 0.01),
      ("tail_blind", np.arange(g_count), (rank < 30).astype(float), 0.05),
  ):
    q, v = embed(axes, strength, noise)
    out[name] = metrics.evaluate(q, v, train, test, ks=(20,))
    print(name, {k: round(x, 3) for k, x in out[name].items() if "fold" in k or "cross" in k})
  sep, fold, blind = out["separated"], out["folded"], out["tail_blind"]
  assert sep["folding_auc_heldout"] > 0.99 and sep["cross_group@20"] == 0.0
  assert sep["cross_group_heldout"] < 0.01
  assert fold["folding_auc_heldout"] < 0.85 and fold["cross_group@20"] > 0.6
  assert fold["folding_auc_heldout"] < sep["folding_auc_heldout"] - 0.15
  assert fold["cross_group_heldout"] > 0.6
  assert blind["cross_group@20"] < 0.02
  assert blind["cross_group_heldout"] < fold["cross_group_heldout"] / 2
  assert blind["folding_auc"] > 0.35


def test_popularity_baseline_through_evaluate():
  """Item j is trained on by exactly j + 1 users, so popularity ranks are unique."""
  rng = np.random.default_rng(5)
  num_users, num_items = 40, 15
  tr_u, tr_i = [], []
  for j in range(num_items):
    users = rng.choice(num_users, j + 1, replace=False)
    tr_u += list(users)
    tr_i += [j] * (j + 1)
  train = Inter(np.array(tr_u, np.int32), np.array(tr_i, np.int32), num_users, num_items)
  seen = set(zip(tr_u, tr_i))
  te = [
      (u, j)
      for u in range(num_users)
      for j in range(num_items)
      if (u, j) not in seen and rng.uniform() < 0.2
  ]
  test = Inter(
      np.array([p[0] for p in te], np.int32),
      np.array([p[1] for p in te], np.int32),
      num_users,
      num_items,
  )
  query, items = metrics.popularity_scores(train)
  assert query.shape == (num_users, 1)
  np.testing.assert_array_equal(np.asarray(items)[:, 0], np.bincount(tr_i, minlength=num_items))
  got = metrics.evaluate(query, items, train, test, ks=(3,), chunk_size=4, query_batch=7)
  tests = {}
  for u, j in te:
    tests.setdefault(u, set()).add(j)
  recall = []
  for u in sorted(tests):
    top = [j for j in range(num_items - 1, -1, -1) if (u, j) not in seen][:3]
    recall.append(len(tests[u] & set(top)) / min(3, len(tests[u])))
  assert got["recall@3"] == pytest.approx(np.mean(recall), abs=1e-9)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(ks=(0,)), "positive int"),
        (dict(ks=(54,)), "exceeds the number of items"),
        (dict(eval_users=[99]), "eval_users id 99"),
        (dict(relatedness=np.eye(2)), "relatedness must be"),
        (dict(relatedness=2 * np.eye(3)), r"in \[0, 1\]"),
    ],
)
def test_evaluate_rejects_bad_input(kwargs, match):
  query, items, train, test = make_world(seed=6)
  with pytest.raises(ValueError, match=match):
    metrics.evaluate(query, items, train, test, **kwargs)


def test_evaluate_rejects_out_of_range_ids_and_bad_containers():
  query, items, train, test = make_world(seed=7)
  bad = Inter(np.array([0], np.int32), np.array([53], np.int32), 29, 53)
  with pytest.raises(ValueError, match="test item id 53"):
    metrics.evaluate(query, items, train, bad)
  with pytest.raises(ValueError, match="user_ids, item_ids"):
    metrics.evaluate(query, items, train, {"u": 1})
  wrong = Inter(test.user_ids, test.item_ids, 29, 60)
  with pytest.raises(ValueError, match="num_items=60"):
    metrics.evaluate(query, items, train, wrong)


# ----------------------------------------------------------------------------------
# sampled_hit_rate
# ----------------------------------------------------------------------------------


def test_sampled_hit_rate_matches_numpy_on_same_negatives():
  query, items, train, test = make_world(seed=8)
  key = jax.random.PRNGKey(8)
  got = metrics.sampled_hit_rate(query, items, train, test, num_negatives=20, k=5, key=key, batch=7)
  n = items.shape[0]
  train_keys = np.unique(train.user_ids.astype(np.int64) * n + train.item_ids)
  test_keys = np.unique(test.user_ids.astype(np.int64) * n + test.item_ids)
  test_keys = test_keys[~np.isin(test_keys, train_keys)]
  seen = np.union1d(train_keys, test_keys)
  negs = metrics.sample_unseen_items(key, test_keys // n, seen, n, 20)
  scores = query.astype(np.float64) @ items.astype(np.float64).T
  hits = []
  for p, key_ in enumerate(test_keys):
    u, i = divmod(int(key_), n)
    assert not np.isin(u * n + negs[p], seen).any()  # never an interacted item
    hits.append(np.sum(scores[u, negs[p]] >= scores[u, i]) < 5)
  assert got == pytest.approx(np.mean(hits), abs=1e-12)


def test_sample_unseen_items_is_uniform_over_unseen_and_falls_back():
  """User 0 saw items 0..7 of 10 (rejection rate 0.8 -> some rows reach the exact
  fallback); user 1 saw nothing. Each must draw only unseen items, uniformly.
  Chi-square with 1 (user 0: 2 cells) and 9 (user 1: 10 cells) dof on 6000 draws
  each: thresholds are the 0.999 quantiles (10.83, 27.88), so a correct sampler
  fails with probability < 0.2%."""
  n = 10
  seen = np.arange(8, dtype=np.int64)  # keys of user 0
  key = jax.random.PRNGKey(0)
  negs = metrics.sample_unseen_items(key, np.array([0] * 60 + [1] * 60), seen, n, 100)
  u0, u1 = negs[:60].ravel(), negs[60:].ravel()
  assert set(u0.tolist()) == {8, 9}
  counts0 = np.bincount(u0, minlength=n)[8:]
  chi0 = np.sum((counts0 - 3000) ** 2 / 3000)
  counts1 = np.bincount(u1, minlength=n)
  chi1 = np.sum((counts1 - 600) ** 2 / 600)
  assert chi0 < 10.83 and chi1 < 27.88
  again = metrics.sample_unseen_items(key, np.array([0] * 60 + [1] * 60), seen, n, 100)
  np.testing.assert_array_equal(negs, again)  # deterministic given the key
  with pytest.raises(ValueError, match="every item"):
    metrics.sample_unseen_items(key, np.array([2]), np.arange(20, 30), n, 3)


def test_sampled_hit_rate_rejects_k_above_negatives():
  query, items, train, test = make_world(seed=9)
  with pytest.raises(ValueError, match="num_negatives"):
    metrics.sampled_hit_rate(
        query, items, train, test, num_negatives=5, k=10, key=jax.random.PRNGKey(0)
    )

"""The synthetic world at scale: `make_folding_world` draws in O(interactions).

The law is the one its docstring defines (and the old generator drew by Gumbel-top-k over
every item of a group, O(users x items)); the old generator is kept below, verbatim, as the
reference. Frequency comparisons are chi-square tests at fixed seeds against the 0.1%
critical value (within-user draws without replacement make item counts less variable than
Poisson, so the tests are conservative); each states why it can fail.
"""

import collections
import itertools
import math

import numpy as np
import pytest

from jaxrec import data as jd
from jaxrec.data import synthetic

_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------
# The reference: the generator before the rewrite.


def _gumbel(rng: np.random.Generator, shape) -> np.ndarray:
  """Standard Gumbel noise, float32; never -inf (uniforms are taken in (0, 1])."""
  u = 1.0 - rng.random(shape, dtype=np.float32)
  with np.errstate(divide="ignore"):
    return -np.log(-np.log(u))  # u == 1 gives +inf: that item is simply drawn first


def _top_k(keys_CxM: np.ndarray, k: int) -> np.ndarray:
  """Column indices of each row's k largest keys, largest first ([C,k])."""
  top = np.argpartition(-keys_CxM, k - 1, axis=1)[:, :k]
  order = np.argsort(-np.take_along_axis(keys_CxM, top, axis=1), axis=1, kind="stable")
  return np.take_along_axis(top, order, axis=1)


def gumbel_world(
    *,
    num_groups: int = 4,
    num_users: int = 2000,
    num_items: int = 1000,
    interactions_per_user: int = 20,
    zipf_exponent: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
    topics_per_group: int | None = None,
    topic_affinity: float = 0.8,
) -> jd.Interactions:
  """The generator before the O(interactions) rewrite, verbatim (Gumbel-top-k over
  every item of a group for every user): the reference law."""
  G = synthetic._check_int("num_groups", num_groups, 1)
  U = synthetic._check_int("num_users", num_users, 1)
  N = synthetic._check_int("num_items", num_items, 1)
  k = synthetic._check_int("interactions_per_user", interactions_per_user, 1)
  noise = synthetic._check_prob("noise", noise)
  affinity = synthetic._check_prob("topic_affinity", topic_affinity)
  if (
      isinstance(zipf_exponent, bool)
      or not isinstance(zipf_exponent, (int, float, np.number))
      or not (math.isfinite(zipf_exponent) and zipf_exponent >= 0)
  ):
    raise ValueError(f"zipf_exponent must be a finite number >= 0, got {zipf_exponent!r}")
  if N < G:
    raise ValueError(f"num_items={N} must be >= num_groups={G}")
  smallest_group = N // G
  if k > smallest_group:
    raise ValueError(
        f"interactions_per_user={k} exceeds the smallest group "
        f"({smallest_group} items = num_items // num_groups)"
    )
  if topics_per_group is None:
    T = max(1, min(5, smallest_group // k))
  else:
    T = synthetic._check_int("topics_per_group", topics_per_group, 1)
    if k > smallest_group // T:
      raise ValueError(
          f"interactions_per_user={k} exceeds the smallest topic "
          f"({smallest_group // T} items = num_items // num_groups // "
          f"topics_per_group); lower topics_per_group={T} or interactions_per_user"
      )
  if noise > 0 and G < 2:
    raise ValueError(f"noise={noise} needs num_groups >= 2 (there is no other group)")
  if T == 1:
    affinity = 1.0

  sizes = np.full(G, N // G) + (np.arange(G) < N % G)
  item_groups = np.repeat(np.arange(G), sizes)
  local_rank = np.arange(N) - np.repeat(np.cumsum(sizes) - sizes, sizes)
  item_topics = local_rank % T
  log_w = (-float(zipf_exponent) * np.log1p(local_rank)).astype(np.float32)

  rng = np.random.default_rng(seed)
  user_groups = rng.permutation(np.arange(U) % G)
  user_topics = rng.integers(0, T, size=U)
  probs = [(1 - noise) * affinity, (1 - noise) * (1 - affinity), noise]
  counts_Ux3 = rng.multinomial(k, probs, size=U)

  starts = np.cumsum(sizes) - sizes
  items_per_user = np.empty((U, k), np.int64)
  slot = np.arange(k)
  for g in range(G):
    block = np.arange(starts[g], starts[g] + sizes[g])
    group_users = np.flatnonzero(user_groups == g)
    chunk = max(1, _CHUNK_ELEMENTS // N)
    for lo in range(0, group_users.size, chunk):
      users = group_users[lo : lo + chunk]
      counts = counts_Ux3[users]
      # Sources 0/1 (own topic / rest of the group): keys over the group's block only.
      keys = log_w[block][None, :] + _gumbel(rng, (users.size, block.size))
      in_topic = item_topics[block][None, :] == user_topics[users, None]
      picked = [
          block[_top_k(np.where(in_topic, keys, -np.inf), k)],
          block[_top_k(np.where(in_topic, -np.inf, keys), k)]
          if T > 1
          else np.zeros((users.size, k), np.int64),
      ]
      if noise > 0:  # source 2: every other group's items
        keys = log_w[None, :] + _gumbel(rng, (users.size, N))
        keys[:, block] = -np.inf
        picked.append(_top_k(keys, k))
      else:
        picked.append(np.zeros((users.size, k), np.int64))
      valid = np.concatenate([slot[None, :] < counts[:, s, None] for s in range(3)], axis=1)
      items_per_user[users] = np.concatenate(picked, axis=1)[valid].reshape(users.size, k)
  timestamps = rng.permuted(np.tile(np.arange(k, dtype=np.int64), (U, 1)), axis=1)

  user_ids = np.repeat(np.arange(U), k)
  item_ids = items_per_user.reshape(-1)
  order = np.lexsort((item_ids, user_ids))
  return jd.Interactions(
      user_ids[order],
      item_ids[order],
      U,
      N,
      timestamps=timestamps.reshape(-1)[order],
      user_groups=user_groups,
      item_groups=item_groups,
  )


# --------------------------------------------------------------------------------------
# Helpers.


def homogeneity_chi2(a, b):
  """Two-sample chi-square statistic of count vectors a, b over the same cells (cells
  empty in both dropped) and its degrees of freedom."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  keep = (a + b) > 0
  a, b = a[keep], b[keep]
  na, nb = a.sum(), b.sum()
  expect_a, expect_b = (a + b) * na / (na + nb), (a + b) * nb / (na + nb)
  stat = np.sum((a - expect_a) ** 2 / expect_a) + np.sum((b - expect_b) ** 2 / expect_b)
  return stat, int(keep.sum()) - 1


# Critical values of chi-square at 0.1%, Bonferroni over the 3 groups where marked
# (scipy.stats.chi2.ppf(1 - 0.001 / 3, dof) and chi2.ppf(0.999, dof)).
CRIT_PER_GROUP = {23: 53.303}
CRIT = {5: 20.515}


def cross_share(w):
  return float(np.mean(w.user_groups[w.user_ids] != w.item_groups[w.item_ids]))


def per_group_chi2(new, old):
  """The chi-square statistic of each group's item counts, new vs old."""
  out = []
  for g in range(int(new.item_groups.max()) + 1):
    cells = new.item_groups == g
    out.append(homogeneity_chi2(new.item_counts()[cells], old.item_counts()[cells]))
  return out


# --------------------------------------------------------------------------------------
# The same law as the Gumbel reference.

# 3 groups of 24 items, k = 6, 4 topics: a topic holds exactly k items, so a user whose 6
# draws all come from the topic takes the whole topic (repeats dominate: the exact
# continuation); noise 0.25 and affinity 0.6 give every source its share of draws.
SMALL = dict(
    num_groups=3,
    num_items=72,
    interactions_per_user=6,
    topics_per_group=4,
    topic_affinity=0.6,
    noise=0.25,
)


@pytest.mark.parametrize("zipf", [0.0, 1.3, 4.0])
def test_item_frequencies_per_group_match_the_gumbel_reference(zipf):
  users, n = 6000, 6000 * SMALL["interactions_per_user"]
  new = jd.make_folding_world(num_users=users, zipf_exponent=zipf, seed=11, **SMALL)
  old = gumbel_world(num_users=users, zipf_exponent=zipf, seed=12, **SMALL)
  for stat, dof in per_group_chi2(new, old):
    assert dof == 23 and stat < CRIT_PER_GROUP[dof], stat
  # The test can fail: it tells the world from one with a larger exponent.
  other = gumbel_world(num_users=users, zipf_exponent=zipf * 1.5 + 0.3, seed=13, **SMALL)
  assert max(s for s, _ in per_group_chi2(new, other)) > CRIT_PER_GROUP[23]
  # Cross-group share: the reference's within 4 sd of the difference of two
  # Binomial(n, noise) / n proportions, and each within 4 sd of noise.
  p = SMALL["noise"]
  sd = math.sqrt(p * (1 - p) / n)
  assert abs(cross_share(new) - cross_share(old)) < 4 * math.sqrt(2) * sd
  assert abs(cross_share(new) - p) < 4 * sd


@pytest.mark.parametrize("topics", [1, 3])
def test_noise_free_worlds_match_the_reference(topics):
  # T = 1 (no "other topics" source) and T = 3 with k = 8 = a topic's size.
  kw = dict(SMALL, noise=0.0, topics_per_group=topics, interactions_per_user=8)
  new = jd.make_folding_world(num_users=5000, zipf_exponent=1.0, seed=21, **kw)
  old = gumbel_world(num_users=5000, zipf_exponent=1.0, seed=22, **kw)
  assert cross_share(new) == 0.0 == cross_share(old)
  for stat, dof in per_group_chi2(new, old):
    assert dof == 23 and stat < CRIT_PER_GROUP[dof], stat


def plackett_luce_pairs(w):
  """P({i, j}) of two successive draws without replacement, proportional to w."""
  total = w.sum()
  return {
      (i, j): w[i] / total * w[j] / (total - w[i]) + w[j] / total * w[i] / (total - w[j])
      for i, j in itertools.combinations(range(len(w)), 2)
  }


def pair_chi2(pairs_Rx2, law):
  """Chi-square statistic of the observed unordered pairs against `law` (dict)."""
  keys = sorted(law)
  observed = collections.Counter(tuple(sorted(p)) for p in pairs_Rx2.tolist())
  assert set(observed) <= set(keys)
  n = len(pairs_Rx2)
  return sum((observed[k] - n * law[k]) ** 2 / (n * law[k]) for k in keys)


def test_two_item_sets_follow_plackett_luce():
  # One group, one topic, 4 items, 2 draws: the 6 sets have closed-form probabilities.
  s, users = 1.5, 20000
  w = jd.make_folding_world(
      num_groups=1,
      num_users=users,
      num_items=4,
      interactions_per_user=2,
      zipf_exponent=s,
      topics_per_group=1,
      seed=31,
  )
  law = plackett_luce_pairs((np.arange(4) + 1.0) ** -s)
  assert pair_chi2(w.item_ids.reshape(users, 2), law) < CRIT[5]
  # The test can fail: independent draws proportional to w, conditioned to differ
  # (a different law on sets), are rejected.
  p = (np.arange(4) + 1.0) ** -s
  p /= p.sum()
  indep = {k: p[k[0]] * p[k[1]] for k in law}
  norm = sum(indep.values())
  assert pair_chi2(w.item_ids.reshape(users, 2), {k: v / norm for k, v in indep.items()}) > CRIT[5]


@pytest.mark.parametrize("rounds", [0, 1, synthetic._REJECTION_ROUNDS])
def test_successive_draws_through_a_gap(rounds):
  """`_successive_draws` alone: positions 0..5, the source [0, 6) less the gap [2, 4); rounds=0
  is the exact continuation alone, rounds=1 mixes both. Heavy head: position 0 holds 90% of
  the source's mass, so rejection rounds often end short."""
  w = np.array([9.0, 0.5, 7.0, 7.0, 0.3, 0.2])
  cum = np.concatenate([[0.0], np.cumsum(w)])
  n = 20000
  full = lambda v: np.full(n, v, np.int64)
  src = synthetic._Sources(cum, full(0), full(6), full(2), full(4))
  drawn = synthetic._successive_draws(
      np.random.default_rng(41), src, w, np.arange(n), full(2), rounds=rounds
  )
  assert drawn.shape == (n, 2) and np.all(drawn[:, 0] != drawn[:, 1])
  assert not np.isin(drawn, [2, 3]).any()
  source = np.array([0, 1, 4, 5])
  law = plackett_luce_pairs(w[source])
  as_rank = np.searchsorted(source, drawn)
  assert pair_chi2(as_rank, law) < CRIT[5]


# --------------------------------------------------------------------------------------
# Exact properties.


@pytest.mark.parametrize(
    "kw",
    [
        dict(num_groups=4, num_items=400, interactions_per_user=10, noise=0.0),
        dict(num_groups=4, num_items=400, interactions_per_user=10, noise=1.0),
        dict(num_groups=3, num_items=301, interactions_per_user=7, noise=0.3, topics_per_group=1),
        dict(num_groups=2, num_items=41, interactions_per_user=20, noise=0.5, zipf_exponent=3.0),
        dict(num_groups=3, num_items=3, interactions_per_user=1),  # one item per group
        dict(num_groups=3, num_items=6, interactions_per_user=2, topics_per_group=1),
    ],
)
def test_counts_distinct_items_and_groups(kw):
  users = 300
  w = jd.make_folding_world(num_users=users, seed=51, **kw)
  k = kw["interactions_per_user"]
  np.testing.assert_array_equal(w.user_counts(), k)
  assert len(set(zip(w.user_ids.tolist(), w.item_ids.tolist()))) == users * k
  assert np.all(np.diff(w.user_ids.astype(np.int64) * w.num_items + w.item_ids) > 0)
  np.testing.assert_array_equal(
      np.sort(w.timestamps.reshape(users, k), axis=1), np.tile(np.arange(k), (users, 1))
  )
  same = w.user_groups[w.user_ids] == w.item_groups[w.item_ids]
  if kw.get("noise", 0.0) == 0.0:
    assert same.all()
  if kw.get("noise") == 1.0:
    assert not same.any()
  if kw["num_items"] == kw["num_groups"] * kw["interactions_per_user"]:
    # A group of k items: every user holds exactly its group's items.
    np.testing.assert_array_equal(w.item_groups[w.item_ids], w.user_groups[w.user_ids])


def test_cross_group_share_is_noise():
  noise, users, k = 0.3, 20000, 10
  w = jd.make_folding_world(
      num_groups=5, num_users=users, num_items=5000, interactions_per_user=k, noise=noise, seed=61
  )
  # Cross-group slots ~ Binomial(users * k, noise): 4 sd.
  n = users * k
  assert abs(cross_share(w) * n - n * noise) < 4 * math.sqrt(n * noise * (1 - noise))
  # Spread over the other groups like their weights: each other group gets ~1/4 of a
  # user's cross draws (equal group sizes), the user's own group none.
  cross = w.user_groups[w.user_ids] != w.item_groups[w.item_ids]
  offset = (w.item_groups[w.item_ids] - w.user_groups[w.user_ids]) % 5
  share = np.bincount(offset[cross], minlength=5) / cross.sum()
  assert share[0] == 0.0
  np.testing.assert_allclose(share[1:], 0.25, atol=0.01)


def test_steep_exponent_draws_whole_topics_or_fails_clearly():
  # zipf 8: a topic of 10 items spans weights 1 .. 19^-8 (1e-10): all drawn, exactly.
  w = jd.make_folding_world(
      num_groups=2,
      num_users=200,
      num_items=40,
      interactions_per_user=10,
      zipf_exponent=8.0,
      topics_per_group=2,
      topic_affinity=1.0,
      seed=71,
  )
  np.testing.assert_array_equal(w.user_counts(), 10)
  assert len(set(zip(w.user_ids.tolist(), w.item_ids.tolist()))) == 2000
  # zipf 20: 19^-20 ~ 3e-26 of the mass, below float64's resolution: a one-line error.
  with pytest.raises(ValueError, match="zipf_exponent=20.0 is too steep"):
    jd.make_folding_world(
        num_groups=2,
        num_users=200,
        num_items=40,
        interactions_per_user=10,
        zipf_exponent=20.0,
        topics_per_group=2,
        topic_affinity=1.0,
        seed=71,
    )

"""Synthetic data with known groups, where folding can be seen and measured.

`make_folding_world` builds G disjoint "languages": users of a group interact only (or, with
a noise rate, mostly) with items of their group, so any model that ranks another group's
items high is folding (Xin et al., RecSys 2017, "Folding: Why Good Models Sometimes Make
Spurious Recommendations"). `language_split` builds the same situation from real data
(L copies of the catalogue), as in the YouTube-languages example of that paper.
"""

from __future__ import annotations

import math

import numpy as np

from jaxrec.data.interactions import Interactions

# Rows (user, source) sampled at once: bounds the [rows, ~2k] work arrays.
_ROW_CHUNK = 1 << 17
# Rejection rounds before the exact continuation (`_successive_draws`).
_REJECTION_ROUNDS = 4
# Catalogue size above which `_Sources.locate` sorts its needles (out of cache: 7x faster
# searches at 10M items).
_SORT_NEEDLES_ABOVE = 1 << 20
# Redraws of one row tolerated when float64 rounding lands on an excluded item.
_MAX_REDRAWS = 64


def _check_int(name, value, minimum):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  return int(value)


def _check_prob(name, value):
  if (
      isinstance(value, bool)
      or not isinstance(value, (int, float, np.number))
      or not 0.0 <= value <= 1.0
  ):
    raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
  return float(value)


class _Sources:
  """Per-row sources over positions 0..P-1 weighted by w (``cum[p] = sum_{q<p} w_q``):
  row r draws from [lo_r, hi_r) minus the gap [gap_lo_r, gap_hi_r) (empty when equal).

  A local mass t in [0, total_r) maps to the position p with
  cum[p] <= base_r + t (+ the gap's mass past the gap) < cum[p + 1], so a uniform t is
  a draw with probability w_p / total_r."""

  def __init__(self, cum, lo, hi, gap_lo, gap_hi):
    self.cum, self.lo, self.hi, self.gap_lo, self.gap_hi = cum, lo, hi, gap_lo, gap_hi
    self.base = cum[lo]
    self.gap_at = cum[gap_lo] - self.base
    self.gap_mass = cum[gap_hi] - cum[gap_lo]
    self.total = cum[hi] - self.base - self.gap_mass

  def locate(self, rows, t):
    """Positions of local masses t ([n] or [n, m]) of `rows`."""
    shape = (-1,) + (1,) * (t.ndim - 1)
    at, gap = self.gap_at[rows].reshape(shape), self.gap_mass[rows].reshape(shape)
    v = (self.base[rows].reshape(shape) + t + np.where(t >= at, gap, 0.0)).ravel()
    if self.cum.size < _SORT_NEEDLES_ABOVE:
      return (np.searchsorted(self.cum, v, side="right") - 1).reshape(t.shape)
    # Sorted needles: numpy's binary search reuses its bounds, so fewer cache misses.
    order = np.argsort(v)
    pos = np.empty(v.shape, np.int64)
    pos[order] = np.searchsorted(self.cum, v[order], side="right") - 1
    return pos.reshape(t.shape)

  def inside(self, rows, pos):
    """Whether pos ([n] or [n, m]) lies in the rows' sources (float rounding can land
    just outside)."""
    shape = (-1,) + (1,) * (pos.ndim - 1)
    r = lambda a: a[rows].reshape(shape)
    return (
        (pos >= r(self.lo))
        & (pos < r(self.hi))
        & ~((pos >= r(self.gap_lo)) & (pos < r(self.gap_hi)))
    )


def _first_occurrences(vals_RxM):
  """Mask of the entries that are the first (leftmost) of their value in their row."""
  order = np.argsort(vals_RxM, axis=1, kind="stable")
  s = np.take_along_axis(vals_RxM, order, axis=1)
  first_sorted = np.ones(s.shape, bool)
  first_sorted[:, 1:] = s[:, 1:] != s[:, :-1]
  first = np.empty_like(first_sorted)
  np.put_along_axis(first, order, first_sorted, axis=1)
  return first


def _successive_draws(rng, src, w, rows, counts, *, rounds=_REJECTION_ROUNDS):
  """counts[i] distinct positions for each row rows[i], drawn by successive sampling:
  each next position with probability w_p / (total - mass already drawn) over the not yet
  drawn positions of the row's source (Plackett-Luce, the law of Gumbel-top-k).

  First `rounds` rounds of rejection: i.i.d. draws from w / total, keeping each row's
  first `counts` distinct positions in draw order (the first distinct values of an i.i.d.
  stream are successive draws). Rows still short (heavy heads: most mass already drawn)
  continue exactly: u ~ U[0, total - drawn mass) is mapped through the cumulative weights
  with the drawn positions' mass skipped (the fixed point x = F^-1(u + m(x)), m(x) = drawn
  mass at positions <= x). Cost O(sum counts) draws, each O(log P) (+ O(counts) per exact
  draw). Returns [len(rows), max(counts)] int64 positions, -1 padded, in draw order."""
  n = rows.size
  width = int(counts.max()) if n else 0
  acc = np.full((n, width), -1, np.int64)
  got = np.zeros(n, np.int64)
  size = (src.hi - src.lo) - (src.gap_hi - src.gap_lo)
  if n and np.any(size[rows] < counts):
    i = int(np.argmax(size[rows] < counts))
    raise ValueError(f"a source of {size[rows[i]]} items cannot give {counts[i]} distinct items")
  todo = np.flatnonzero(counts > 0)
  for _ in range(rounds):
    if not todo.size:
      break
    need = counts[todo] - got[todo]
    m = int(need.max()) + max(1, int(need.max()) // 2)
    r = rows[todo]
    t = rng.random((todo.size, m)) * src.total[r][:, None]
    pos = src.locate(r, t)
    pos = np.where(src.inside(r, pos), pos, -1)
    both = np.concatenate([acc[todo], pos], axis=1)  # accepted first, then the new stream
    keep = _first_occurrences(both) & (both >= 0)
    keep &= np.cumsum(keep, axis=1) <= counts[todo, None]
    packed = np.take_along_axis(both, np.argsort(~keep, axis=1, kind="stable"), axis=1)
    k_new = keep.sum(axis=1)
    packed = np.where(np.arange(both.shape[1]) < k_new[:, None], packed, -1)[:, :width]
    acc[todo], got[todo] = packed, k_new
    todo = todo[k_new < counts[todo]]

  redraws = np.zeros(n, np.int64)
  while todo.size:  # exact continuation
    r, s = rows[todo], acc[todo]
    drawn = s >= 0
    w_s = np.where(drawn, w[np.maximum(s, 0)], 0.0)
    rest = src.total[r] - w_s.sum(axis=1)
    u = rng.random(todo.size) * rest
    below = np.zeros(todo.size, np.int64)
    mass = np.zeros(todo.size)
    for _ in range(width + 1):  # m(x) only grows; at most one step per drawn position
      x = src.locate(r, u + mass)
      le = drawn & (s <= x[:, None])
      now = le.sum(axis=1)
      if np.array_equal(now, below):
        break
      below, mass = now, (w_s * le).sum(axis=1)
    ok = src.inside(r, x) & ~(drawn & (s == x[:, None])).any(axis=1) & (rest > 0)
    redraws[todo[~ok]] += 1
    if np.any(redraws > _MAX_REDRAWS):
      raise FloatingPointError("the items left to draw weigh too little for float64")
    done = todo[ok]
    acc[done, got[done]] = x[ok]
    got[done] += 1
    todo = todo[got[todo] < counts[todo]]
  return acc


def make_folding_world(
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
    return_topics: bool = False,
) -> Interactions | tuple[Interactions, np.ndarray, np.ndarray]:
  """G groups of users and items; users stay (mostly) inside their group.

  Layout (deterministic): items are split into G contiguous blocks of sizes differing by at
  most one; inside group g the item with local rank r (0 = lowest id in the block) has
  popularity weight ``(r + 1) ** -zipf_exponent`` and topic ``r % T``. Users are spread
  evenly over the groups at random; each user also gets a preferred topic (uniform).

  Each user draws ``k = interactions_per_user`` distinct items. Each of the k slots picks a
  source with probabilities ``(1 - noise) * topic_affinity`` (own topic),
  ``(1 - noise) * (1 - topic_affinity)`` (own group, other topics) and ``noise`` (items of
  the other groups), i.e. per-user counts ~ Multinomial(k, ...); then the items of each
  source are drawn without replacement with probability proportional to the popularity
  weight: successive (Plackett-Luce) draws, each next item j with probability
  ``w_j / (W - mass already drawn)``, the law of Gumbel-top-k. They are drawn by inverse
  CDF on the cumulative weights, rejecting repeats, with an exact continuation that skips
  the drawn mass when repeats dominate (`_successive_draws`), so the cost is
  O(U k log N) plus O(N log N) setup, never O(U N). So the share of cross-group
  interactions is exactly ``noise`` in expectation, popularity is Zipf-like inside each group
  and each topic, and a personalized model (one that infers the user's topic) beats
  popularity. With T = 1 the "other topics" source is empty and its mass goes to the topic.

  ``topics_per_group`` defaults to as many topics (at most 5) as hold k items each. Returned
  rows are sorted by (user, item); ``timestamps`` are each user's events in a random order
  (0..k-1), so leave-last-out has something to use; no weights; ``user_groups`` and
  ``item_groups`` hold the group labels. Deterministic in ``seed``. With
  ``return_topics``: ``(interactions, user_topics[U], item_topics[N])``, the topic of each
  user and item (0..T-1; the ground truth that synthetic side features are made from).
  """
  G = _check_int("num_groups", num_groups, 1)
  U = _check_int("num_users", num_users, 1)
  N = _check_int("num_items", num_items, 1)
  k = _check_int("interactions_per_user", interactions_per_user, 1)
  noise = _check_prob("noise", noise)
  affinity = _check_prob("topic_affinity", topic_affinity)
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
    T = _check_int("topics_per_group", topics_per_group, 1)
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
  # Positions: the items ordered by (group, topic, rank), so that every source is a
  # range of positions, less at most one inner range (a gap).
  segment = item_groups * T + local_rank % T
  item_at = np.argsort(segment, kind="stable")
  w = np.exp(-float(zipf_exponent) * np.log1p(local_rank[item_at]))  # float64
  cum = np.concatenate([[0.0], np.cumsum(w)])
  seg_hi = np.cumsum(np.bincount(segment, minlength=G * T))
  seg_lo = seg_hi - np.bincount(segment, minlength=G * T)
  grp_lo, grp_hi = seg_lo[::T], seg_hi[T - 1 :: T]

  rng = np.random.default_rng(seed)
  user_groups = rng.permutation(np.arange(U) % G)
  user_topics = rng.integers(0, T, size=U)
  probs = [(1 - noise) * affinity, (1 - noise) * (1 - affinity), noise]
  counts_Ux3 = rng.multinomial(k, probs, size=U)

  # The three sources of a user of group g and topic t, as position ranges (see _Sources).
  gt = user_groups * T + user_topics
  g_lo, g_hi, t_lo, t_hi = grp_lo[user_groups], grp_hi[user_groups], seg_lo[gt], seg_hi[gt]
  zero = np.zeros(U, np.int64)
  sources = [
      _Sources(cum, t_lo, t_hi, t_lo, t_lo),  # own topic
      _Sources(cum, g_lo, g_hi, t_lo, t_hi),  # own group, other topics
      _Sources(cum, zero, zero + N, g_lo, g_hi),  # every other group
  ]
  pair_users, pair_pos = [], []
  for s, src in enumerate(sources):
    users = np.flatnonzero(counts_Ux3[:, s])
    for lo in range(0, users.size, _ROW_CHUNK):
      rows = users[lo : lo + _ROW_CHUNK]
      counts = counts_Ux3[rows, s]
      try:
        drawn = _successive_draws(rng, src, w, rows, counts)
      except FloatingPointError as err:
        raise ValueError(
            f"zipf_exponent={zipf_exponent} is too steep for {k} distinct items per user: "
            f"{err} (the {k}th heaviest item of a source weighs < ~1e-16 of the total)"
        ) from None
      pair_users.append(np.repeat(rows, counts))
      pair_pos.append(drawn[drawn >= 0])  # row-major: each row's counts[i] positions
  user_ids = np.concatenate(pair_users)
  item_ids = item_at[np.concatenate(pair_pos)]
  order = np.lexsort((item_ids, user_ids))
  timestamps = rng.permuted(np.tile(np.arange(k, dtype=np.int64), (U, 1)), axis=1)
  inter = Interactions(
      user_ids[order],
      item_ids[order],
      U,
      N,
      timestamps=timestamps.reshape(-1),
      user_groups=user_groups,
      item_groups=item_groups,
  )
  return (inter, user_topics, local_rank % T) if return_topics else inter


def language_split(inter: Interactions, num_copies: int, seed: int = 0) -> Interactions:
  """L copies of the catalogue; each user lives in one copy (the "language" construction).

  Item j of copy c gets id ``c * num_items + j`` (so ``num_items * L`` items). Users are
  spread evenly over the copies at random (a seeded permutation of ``u % L``) and all of
  a user's rows are mapped into that user's copy. Any cross-copy recommendation is
  therefore spurious by construction (Xin et al. 2017). ``user_groups``/``item_groups``
  become the copy index (input groups are replaced); ``item_raw`` is tiled (copy c of raw
  item x keeps raw id x); weights, timestamps and ``user_raw`` are kept.
  """
  L = _check_int("num_copies", num_copies, 1)
  if (inter.num_items * L) > np.iinfo(np.int32).max:
    raise ValueError(f"language_split: {inter.num_items} items x {L} copies overflows int32")
  rng = np.random.default_rng(seed)
  copy_of_user = rng.permutation(np.arange(inter.num_users) % L)
  item_ids = copy_of_user[inter.user_ids].astype(np.int64) * inter.num_items + inter.item_ids
  return Interactions(
      inter.user_ids,
      item_ids,
      inter.num_users,
      inter.num_items * L,
      weights=inter.weights,
      timestamps=inter.timestamps,
      user_groups=copy_of_user,
      item_groups=np.repeat(np.arange(L), inter.num_items),
      user_raw=inter.user_raw,
      item_raw=None if inter.item_raw is None else np.tile(inter.item_raw, L),
  )

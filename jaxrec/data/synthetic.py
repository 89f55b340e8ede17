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

_CHUNK_ELEMENTS = 1 << 22  # users per chunk * items: bounds the [C,N] key matrix


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
) -> Interactions:
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
  weight (Gumbel-top-k, i.e. successive Plackett-Luce draws). So the share of cross-group
  interactions is exactly ``noise`` in expectation, popularity is Zipf-like inside each group
  and each topic, and a personalized model (one that infers the user's topic) beats
  popularity. With T = 1 the "other topics" source is empty and its mass goes to the topic.

  ``topics_per_group`` defaults to as many topics (at most 5) as hold k items each. Returned
  rows are sorted by (user, item); ``timestamps`` are each user's events in a random order
  (0..k-1), so leave-last-out has something to use; no weights; ``user_groups`` and
  ``item_groups`` hold the group labels. Deterministic in ``seed``.
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
  return Interactions(
      user_ids[order],
      item_ids[order],
      U,
      N,
      timestamps=timestamps.reshape(-1)[order],
      user_groups=user_groups,
      item_groups=item_groups,
  )


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

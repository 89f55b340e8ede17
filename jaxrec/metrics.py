"""Full-corpus evaluation: chunked top-K with exclusion, ranking and folding metrics.

Everything here ranks the *whole* catalogue (training items of the user masked out),
never a sample of it, except `sampled_hit_rate`, which exists only for the
sampled-metrics ablation (Krichene & Rendle, "On Sampled Metrics for Item
Recommendation", KDD 2020) and must never be reported without the full-ranking
numbers beside it.

Inputs are plain arrays: `train` / `test` are either `(user_ids, item_ids)` pairs of
int arrays or any object with `.user_ids` / `.item_ids` attributes (e.g.
`jaxrec.data.Interactions`); group labels come from `.user_groups` / `.item_groups`
of `train` (or `test`) or from explicit keyword arguments.

Scores are dot products `query_u . item_j` in float32 (matmuls at
`Precision.HIGHEST`, so a GPU does not silently rank with TF32).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import chunked

__all__ = [
    "topk",
    "evaluate",
    "evaluate_scores",
    "heldout_folding",
    "heldout_softmax_loss",
    "sampled_hit_rate",
    "sample_unseen_items",
    "popularity_scores",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_QUERY_BATCH",
]

# CPU-tuned defaults (benchmarks/eval_scaling.py): large item chunks amortize the
# fixed per-row cost of XLA's top_k; the query batch bounds the [B, chunk] score block
# (1024 x 65536 float32 = 256 MiB).
DEFAULT_CHUNK_SIZE = 65536
DEFAULT_QUERY_BATCH = 1024
# Group width of the exact two-stage selection inside a chunk (`chunked.chunk_candidates`).
DEFAULT_GROUP = 16
# Elements of a full [B, N] score block in the group-metrics pass (folding_auc/score).
_GROUP_PASS_ELEMENTS = 1 << 22

_HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------
# Input normalisation
# ----------------------------------------------------------------------------------


def _pairs(data: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
  """(user_ids, item_ids) int64 arrays from a pair of arrays or an Interactions-like."""
  if hasattr(data, "user_ids") and hasattr(data, "item_ids"):
    users, items = data.user_ids, data.item_ids
  elif isinstance(data, (tuple, list)) and len(data) == 2:
    users, items = data
  else:
    raise ValueError(
        f"{name} must be a (user_ids, item_ids) pair or an object with .user_ids and "
        f".item_ids (e.g. jaxrec.data.Interactions); got {type(data).__name__}"
    )
  users = np.asarray(users)
  items = np.asarray(items)
  if users.ndim != 1 or items.ndim != 1 or users.shape != items.shape:
    raise ValueError(
        f"{name}: user_ids and item_ids must be 1-D of equal length; got shapes "
        f"{users.shape} and {items.shape}"
    )
  if users.size and not (
      np.issubdtype(users.dtype, np.integer) and np.issubdtype(items.dtype, np.integer)
  ):
    raise ValueError(f"{name}: ids must be integers; got {users.dtype}, {items.dtype}")
  return users.astype(np.int64), items.astype(np.int64)


def _check_range(ids: np.ndarray, upper: int, what: str) -> None:
  if ids.size and (ids.min() < 0 or ids.max() >= upper):
    bad = ids[(ids < 0) | (ids >= upper)][0]
    raise ValueError(f"{what} id {int(bad)} is out of range [0, {upper})")


def _check_sizes(data: Any, name: str, num_users: int, num_items: int) -> None:
  for attr, have, what in (
      ("num_users", num_users, "query_UxD rows"),
      ("num_items", num_items, "items_NxD rows"),
  ):
    declared = getattr(data, attr, None)
    if declared is not None and int(declared) != have:
      raise ValueError(f"{name}.{attr}={declared} but {what}={have}")


def _embeddings(query: Any, items: Any) -> tuple[jax.Array, jax.Array]:
  query = jnp.asarray(query, jnp.float32)
  items = jnp.asarray(items, jnp.float32)
  if query.ndim != 2 or items.ndim != 2 or query.shape[1] != items.shape[1]:
    raise ValueError(
        f"query and items must be [Q, D] and [N, D] with the same D; got "
        f"{query.shape} and {items.shape}"
    )
  return query, items


def _positive_int(value: Any, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"{name} must be a positive int; got {value!r}")
  return int(value)


# ----------------------------------------------------------------------------------
# Top-K
# ----------------------------------------------------------------------------------


def topk(
    query_QxD,
    items_NxD,
    k,
    *,
    exclude_rows=None,
    exclude_cols=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
    query_batch=DEFAULT_QUERY_BATCH,
    group=DEFAULT_GROUP,
):
  """Exact top-k items by dot product for every query, over the whole catalogue.

  scores_qj = query_q . item_j; the pairs (exclude_rows[e], exclude_cols[e]) (e.g.
  each user's training items) get -inf. Items are scanned in chunks of `chunk_size`
  with a running top-k merge (`chunked.topk_batch`: `lax.top_k` on [running, chunk
  candidates]); queries in batches of `query_batch`. Memory is
  O(query_batch * chunk_size + N * D); no [Q, N] array exists.

  Returns numpy (scores_QxK float32, ids_QxK int32), best first. Where a query has
  fewer than k non-excluded items the remaining slots hold score -inf and id -1.
  Tied scores are broken arbitrarily (the set of returned scores is exact).
  """
  query, items = _embeddings(query_QxD, items_NxD)
  num_queries, num_items = query.shape[0], items.shape[0]
  k = _positive_int(k, "k")
  chunk_size = _positive_int(chunk_size, "chunk_size")
  query_batch = _positive_int(query_batch, "query_batch")
  group = _positive_int(group, "group")
  if k > num_items:
    raise ValueError(f"k={k} exceeds the number of items N={num_items}")
  if (exclude_rows is None) != (exclude_cols is None):
    raise ValueError("exclude_rows and exclude_cols must be given together")
  if exclude_rows is None:
    rows = cols = np.zeros(0, np.int64)
  else:
    rows = np.asarray(exclude_rows).astype(np.int64).ravel()
    cols = np.asarray(exclude_cols).astype(np.int64).ravel()
    if rows.shape != cols.shape:
      raise ValueError(
          f"exclude_rows {rows.shape} and exclude_cols {cols.shape} " "must have the same length"
      )
    _check_range(rows, num_queries, "exclude_rows")
    _check_range(cols, num_items, "exclude_cols")
  if num_queries == 0:
    return np.zeros((0, k), np.float32), np.zeros((0, k), np.int32)

  batch = min(query_batch, num_queries)
  parts = chunked.split_exclusions(rows, cols, num_queries, batch)
  vals_out, ids_out = [], []
  for b, (ex_r, ex_c) in enumerate(parts):
    q = query[b * batch : (b + 1) * batch]
    real = q.shape[0]
    if real < batch:  # pad the last batch so every call has one shape
      q = jnp.pad(q, ((0, batch - real), (0, 0)))
    vals, ids = chunked.topk_batch(
        q, items, jnp.asarray(ex_r), jnp.asarray(ex_c), k=k, chunk_size=chunk_size, group=group
    )
    vals_out.append(np.asarray(vals)[:real])
    ids_out.append(np.asarray(ids)[:real])
  return np.concatenate(vals_out), np.concatenate(ids_out)


# ----------------------------------------------------------------------------------
# Group (folding) statistics: one full-row pass, a few rows at a time
# ----------------------------------------------------------------------------------


@jax.jit
def _group_stats(
    query_BxD, items_NxD, user_group_B, item_groups_N, relatedness_GxH, seen_rows, seen_cols
):
  """Exact per-row folding statistics over all N items.

  unseen = not a training item of the row's user; same = item group == user group.
    auc_num  = sum_{a unseen, other} #{b unseen, same: s_b < s_a} + 0.5 #{s_b == s_a}
    fold_sum = sum_{j unseen} max(0, (s_j - lo) / (hi - lo) - R[g_u, g_j])
  with lo / hi the min / max of the row's unseen scores.
  """
  batch, num_items = query_BxD.shape[0], items_NxD.shape[0]
  scores = jnp.dot(query_BxD, items_NxD.T, precision=_HIGHEST)  # [B, N]
  seen = jnp.zeros((batch, num_items), bool).at[seen_rows, seen_cols].set(True, mode="drop")
  unseen = ~seen
  same = item_groups_N[None, :] == user_group_B[:, None]
  other_set = unseen & ~same
  same_set = unseen & same
  same_sorted = jnp.sort(jnp.where(same_set, scores, jnp.inf), axis=1)
  less = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="left"))(same_sorted, scores)
  less_eq = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="right"))(same_sorted, scores)
  wins = less.astype(jnp.float32) + 0.5 * (less_eq - less).astype(jnp.float32)
  auc_num = jnp.sum(jnp.where(other_set, wins, 0.0), axis=1)
  n_other = other_set.sum(axis=1)
  n_same = same_set.sum(axis=1)

  lo = jnp.min(jnp.where(unseen, scores, jnp.inf), axis=1, keepdims=True)
  hi = jnp.max(jnp.where(unseen, scores, -jnp.inf), axis=1, keepdims=True)
  span = hi - lo
  norm = jnp.where(span > 0, (scores - lo) / jnp.where(span > 0, span, 1.0), 0.0)
  related = relatedness_GxH[user_group_B[:, None], item_groups_N[None, :]]
  fold_sum = jnp.sum(jnp.where(unseen, jnp.maximum(0.0, norm - related), 0.0), axis=1)
  return auc_num, n_other, n_same, fold_sum, unseen.sum(axis=1)


@functools.partial(jax.jit, static_argnames=("chunk",))
def _heldout_auc_block(
    query_BxD, user_group_B, items_NxD, item_groups_N, ex_rows, ex_cols, pair_row_P, pos_P, *, chunk
):
  """One user block's held-out AUC counts, streaming the items in chunks of `chunk`.

  For pair p (row r = pair_row_P[p] of the block, positive item pos_P[p]), A_r = the
  items not excluded for r and O_r = those of another group than r's:
    below_p = #{j in O_r: s_rj < s_rp} + 0.5 #{j in O_r: s_rj == s_rp},   n_r = |O_r|,
    above_other_p / above_all_p = #{j in O_r / A_r: s_rj > s_rp} + 0.5 #{... == s_rp}.
  The positive's score comes from a matmul like the chunks' (ties stay ties). Memory
  O((B + P) * chunk); no row is sorted. Padding: rows of ex_rows / pair_row_P == B.
  """
  batch, num_items = query_BxD.shape[0], items_NxD.shape[0]
  num_pairs = pair_row_P.shape[0]
  row_P = jnp.minimum(pair_row_P, batch - 1)
  pos_scores_BxP = jnp.dot(query_BxD, items_NxD[pos_P].T, precision=_HIGHEST)
  s_pos_P = pos_scores_BxP[row_P, jnp.arange(num_pairs)]
  num_chunks = -(-num_items // chunk)

  def body(c, carry):
    below_P, n_B, above_other_P, above_all_P = carry
    start = jnp.minimum(c * chunk, num_items - chunk)  # the last chunk ends at N
    ids_S = start + jnp.arange(chunk)
    rows_SxD = jax.lax.dynamic_slice_in_dim(items_NxD, start, chunk, 0)
    scores_BxS = jnp.dot(query_BxD, rows_SxD.T, precision=_HIGHEST)
    col = ex_cols - start
    col = jnp.where((col >= 0) & (col < chunk), col, chunk)  # outside the chunk: dropped
    excluded = jnp.zeros((batch, chunk), bool).at[ex_rows, col].set(True, mode="drop")
    groups_S = jax.lax.dynamic_slice_in_dim(item_groups_N, start, chunk, 0)
    fresh_S = ids_S >= c * chunk  # items the previous chunk did not cover
    unseen_BxS = fresh_S[None, :] & ~excluded
    valid_BxS = unseen_BxS & (groups_S[None, :] != user_group_B[:, None])
    v_PxS, a_PxS = valid_BxS[row_P], unseen_BxS[row_P]
    s_PxS = scores_BxS[row_P]
    lt_PxS, eq_PxS = s_PxS < s_pos_P[:, None], s_PxS == s_pos_P[:, None]
    gt_PxS = ~lt_PxS & ~eq_PxS

    def count(mask, cmp):
      return jnp.sum(mask & cmp, axis=1).astype(jnp.float32)

    half_o, half_a = 0.5 * count(v_PxS, eq_PxS), 0.5 * count(a_PxS, eq_PxS)
    return (
        below_P + count(v_PxS, lt_PxS) + half_o,
        n_B + jnp.sum(valid_BxS, axis=1),
        above_other_P + count(v_PxS, gt_PxS) + half_o,
        above_all_P + count(a_PxS, gt_PxS) + half_a,
    )

  zeros_P = jnp.zeros(num_pairs, jnp.float32)
  init = (zeros_P, jnp.zeros(batch, jnp.int32), zeros_P, zeros_P)
  below_P, n_B, above_other_P, above_all_P = jax.lax.fori_loop(0, num_chunks, body, init)
  return below_P, n_B[row_P], above_other_P, above_all_P


# Elements of the [pairs or rows, chunk] blocks of the held-out AUC pass.
_HELDOUT_ELEMENTS = 1 << 22


def _pow2(n: int) -> int:
  return 1 << max(0, (int(n) - 1).bit_length())


def _heldout_auc(
    query_users,
    items,
    users,
    user_groups_U,
    item_groups_N,
    test_keys,
    ex_rows,
    ex_cols,
    *,
    chunk_size,
    query_batch,
) -> tuple[float, float]:
  """(folding_auc_heldout, cross_group_heldout) from `evaluate`'s setup (users sorted;
  ex_rows index `users`)."""
  num_items = items.shape[0]
  t_users = test_keys // num_items
  keep = np.isin(t_users, users)
  t_rows = np.searchsorted(users, t_users[keep])
  t_items = test_keys[keep] % num_items
  # Compared against: other-group items the user has neither trained on nor held out.
  all_rows = np.concatenate([ex_rows, t_rows])
  all_cols = np.concatenate([ex_cols, t_items])
  order = np.argsort(all_rows, kind="stable")
  all_rows, all_cols = all_rows[order], all_cols[order]
  n_pairs = np.bincount(t_rows, minlength=users.size)
  auc_sum, auc_cnt = np.zeros(users.size), np.zeros(users.size)
  share_sum = np.zeros(users.size)
  ig = jnp.asarray(item_groups_N, jnp.int32)
  lo = 0
  while lo < users.size:
    # A block of users: at most query_batch, and its [users, pairs] block of positive
    # scores within _HELDOUT_ELEMENTS (a user with more pairs is a block of its own).
    hi, pairs = lo + 1, int(n_pairs[lo])
    while (
        hi < users.size
        and hi - lo < query_batch
        and _pow2(hi + 1 - lo) * _pow2(pairs + n_pairs[hi]) <= _HELDOUT_ELEMENTS
    ):
      pairs += int(n_pairs[hi])
      hi += 1
    rows_pad, pairs_pad = _pow2(hi - lo), _pow2(max(pairs, 1))
    chunk = max(1, min(num_items, chunk_size, _HELDOUT_ELEMENTS // max(rows_pad, pairs_pad)))
    q = jnp.pad(query_users[lo:hi], ((0, rows_pad - (hi - lo)), (0, 0)))
    g = np.zeros(rows_pad, np.int32)
    g[: hi - lo] = user_groups_U[lo:hi]
    a, b = np.searchsorted(t_rows, [lo, hi])  # t_rows is sorted (test keys are)
    p_row = np.full(pairs_pad, rows_pad, np.int32)
    p_item = np.zeros(pairs_pad, np.int32)
    p_row[: b - a] = t_rows[a:b] - lo
    p_item[: b - a] = t_items[a:b]
    ea, eb = np.searchsorted(all_rows, [lo, hi])
    width = _pow2(max(eb - ea, 1))
    e_row = np.full(width, rows_pad, np.int32)
    e_col = np.zeros(width, np.int32)
    e_row[: eb - ea] = all_rows[ea:eb] - lo
    e_col[: eb - ea] = all_cols[ea:eb]
    below, n_cmp, above_o, above_a = _heldout_auc_block(
        q,
        jnp.asarray(g),
        items,
        ig,
        jnp.asarray(e_row),
        jnp.asarray(e_col),
        jnp.asarray(p_row),
        jnp.asarray(p_item),
        chunk=chunk,
    )
    below, n_cmp, above_o, above_a = (
        np.asarray(x, np.float64)[: b - a] for x in (below, n_cmp, above_o, above_a)
    )
    ok = n_cmp > 0
    np.add.at(auc_sum, t_rows[a:b][ok], below[ok] / n_cmp[ok])
    np.add.at(auc_cnt, t_rows[a:b][ok], 1.0)
    share = np.where(above_a > 0, above_o / np.maximum(above_a, 1e-30), 0.0)
    np.add.at(share_sum, t_rows[a:b], share)
    lo = hi
  has = auc_cnt > 0
  auc = float(np.mean(auc_sum[has] / auc_cnt[has])) if has.any() else math.nan
  has_pairs = n_pairs > 0
  cross = float(np.mean(share_sum[has_pairs] / n_pairs[has_pairs]))
  return auc, cross


def heldout_folding(
    query_UxD,
    items_NxD,
    train,
    test,
    *,
    user_groups=None,
    item_groups=None,
    eval_users=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
    query_batch=DEFAULT_QUERY_BATCH,
) -> dict[str, float]:
  """Folding seen from the held-out positives -> {"folding_auc_heldout",
  "cross_group_heldout"}, each a mean over u's held-out pairs, then over users.

  For a held-out pair (u, i), A_u = the items u has neither trained on nor held out and
  O_u = those of another group than u's (ties count half):
    folding_auc_heldout: AUC_ui = #{j in O_u: s_uj < s_ui} / |O_u|  (users with O_u empty
      skipped). 1 = no other-group item outscores a positive, 0.5 = the model cannot
      tell the user's positives from other groups' items, < 0.5 = folded. Higher is
      better, unlike `folding_auc`, which compares uniform unseen items and so, on real
      data with long tails, is dominated by tail items the model scores near random
      (0.41 for the full softmax on language-split ml-latest-small, whose cross_group@20
      is 0.005). Caveat: O_u is mostly other groups' tail too, so a model that ranks by
      popularity alone (the positive-only collapse) still scores well above 0.5 when
      positives are popular (~0.77 on tests/test_metrics.py's Zipf world).
    cross_group_heldout: #{j in O_u: s_uj > s_ui} / #{j in A_u: s_uj > s_ui} (0 if none),
      the share of other groups among the items that outrank the positive: cross_group@K
      with K at each positive's own rank. 0 = never folds, (G-1)/G = blind with G equal
      groups; it agrees with cross_group@K where the AUC is diluted.
  Computed by counting, per item chunk, the items above and below each positive: no row
  is sorted, memory O((users + pairs per block) * chunk), time O(pairs * N + users N D).
  Groups and pairs as in `evaluate` (test pairs that are train pairs dropped).
  """
  query, items = _embeddings(query_UxD, items_NxD)
  num_users, num_items = query.shape[0], items.shape[0]
  chunk_size = _positive_int(chunk_size, "chunk_size")
  query_batch = _positive_int(query_batch, "query_batch")
  users, _, test_keys, ex_rows, ex_cols = _eval_setup(train, test, num_users, num_items, eval_users)
  ug = _groups("user_groups", user_groups, train, test, num_users)
  ig = _groups("item_groups", item_groups, train, test, num_items)
  if ug is None or ig is None:
    raise ValueError("heldout_folding needs user_groups and item_groups")
  auc, cross = _heldout_auc(
      query[jnp.asarray(users, jnp.int32)],
      items,
      users,
      ug[users],
      ig,
      test_keys,
      ex_rows,
      ex_cols,
      chunk_size=chunk_size,
      query_batch=query_batch,
  )
  return {"folding_auc_heldout": auc, "cross_group_heldout": cross}


# ----------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------


def _groups(name, explicit, train, test, size):
  value = explicit
  if value is None:
    value = getattr(train, name, None)
  if value is None:
    value = getattr(test, name, None)
  if value is None:
    return None
  value = np.asarray(value)
  if value.shape != (size,) or not np.issubdtype(value.dtype, np.integer):
    raise ValueError(
        f"{name} must be an int array of shape ({size},); got " f"{value.dtype} {value.shape}"
    )
  if value.size and value.min() < 0:
    raise ValueError(f"{name} must be >= 0; got {int(value.min())}")
  return value.astype(np.int64)


def _pair_keys(train, test, num_users: int, num_items: int):
  """Validated (user, item) pairs as sorted unique keys u * N + i: (train_keys,
  test_keys), with test pairs that also occur in train dropped."""
  tr_u, tr_i = _pairs(train, "train")
  te_u, te_i = _pairs(test, "test")
  for ids, upper, what in (
      (tr_u, num_users, "train user"),
      (tr_i, num_items, "train item"),
      (te_u, num_users, "test user"),
      (te_i, num_items, "test item"),
  ):
    _check_range(ids, upper, what)
  train_keys = np.unique(tr_u * num_items + tr_i)
  test_keys = np.unique(te_u * num_items + te_i)
  return train_keys, test_keys[~np.isin(test_keys, train_keys, assume_unique=True)]


def _check_eval_args(ks, train, test, num_users: int, num_items: int) -> tuple[tuple, int]:
  """The Ks as a tuple of positive ints (<= N) and their max; train/test ids in range."""
  if isinstance(ks, (int, np.integer)):
    ks = (ks,)
  ks = tuple(_positive_int(k, "every K in ks") for k in ks)
  if not ks:
    raise ValueError("ks must name at least one K")
  max_k = max(ks)
  if max_k > num_items:
    raise ValueError(f"max(ks)={max_k} exceeds the number of items N={num_items}")
  for data, name in ((train, "train"), (test, "test")):
    _check_sizes(data, name, num_users, num_items)
  return ks, max_k


def _eval_setup(train, test, num_users: int, num_items: int, eval_users):
  """The evaluated users (sorted), their test counts, the test keys, and the train
  pairs of those users as (row in `users`, item), rows sorted."""
  train_keys, test_keys = _pair_keys(train, test, num_users, num_items)
  test_users = test_keys // num_items
  users = np.unique(test_users)
  if eval_users is not None:
    eval_users = np.asarray(eval_users).astype(np.int64).ravel()
    _check_range(eval_users, num_users, "eval_users")
    users = np.intersect1d(users, eval_users)
  if users.size == 0:
    raise ValueError(
        "no user to evaluate: none has a test item that is not a train "
        "item" + (" among eval_users" if eval_users is not None else "")
    )
  n_test = np.bincount(
      np.searchsorted(users, test_users[np.isin(test_users, users)]), minlength=users.size
  )

  # Train pairs of evaluated users, as (row in `users`, item).
  tr_key_users = train_keys // num_items
  keep = np.isin(tr_key_users, users)
  ex_rows = np.searchsorted(users, tr_key_users[keep])
  ex_cols = train_keys[keep] % num_items
  return users, n_test, test_keys, ex_rows, ex_cols


def _ranking_metrics(
    users, ids, n_test, test_keys, num_items: int, ks: Sequence[int]
) -> dict[str, float]:
  """recall@K, recall_full@K, ndcg@K, mrr, coverage@K from the top-max(ks) ids (-1 =
  empty slot) of each evaluated user (see `evaluate`)."""
  max_k = max(ks)
  valid = ids >= 0
  hits = valid & np.isin(users[:, None] * num_items + ids, test_keys)  # [U', Kmax]

  discount = 1.0 / np.log2(np.arange(2, max_k + 2))
  out: dict[str, float] = {}
  for k in ks:
    h = hits[:, :k]
    denom = np.minimum(k, n_test)
    out[f"recall@{k}"] = float(np.mean(h.sum(1) / denom))
    out[f"recall_full@{k}"] = float(np.mean(h.sum(1) / n_test))
    ideal = np.cumsum(discount[:k])[denom - 1]
    out[f"ndcg@{k}"] = float(np.mean((h * discount[:k]).sum(1) / ideal))
  first = np.where(hits.any(1), hits.argmax(1) + 1, np.inf)
  out["mrr"] = float(np.mean(1.0 / first))
  for k in ks:
    rec = ids[:, :k][valid[:, :k]]
    out[f"coverage@{k}"] = float(np.unique(rec).size / num_items)
  return out


def evaluate(
    query_UxD,
    items_NxD,
    train,
    test,
    *,
    ks: Sequence[int] = (10, 20),
    eval_users=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
    query_batch=DEFAULT_QUERY_BATCH,
    relatedness=None,
    user_groups=None,
    item_groups=None,
    topk_fn=None,
) -> dict[str, float]:
  """Full-ranking metrics over the whole catalogue with each user's train items masked.

  Users: those with >= 1 test item (restricted to `eval_users` if given); a test pair
  that is also a train pair is dropped (a masked item cannot be recommended).
  With T_u the user's test items and hit_r = [item at rank r in T_u] (r = 1..K):
    recall@K      = mean_u  sum_r hit_r / min(K, |T_u|)   (reaches 1 for a perfect top-K)
    recall_full@K = mean_u  sum_r hit_r / |T_u|, the definition of the LightGCN code
                    (He et al., SIGIR 2020) and the BARS benchmark (Zhu et al., 2022);
                    use it to compare with their tables. Equal to recall@K for users
                    with |T_u| <= K, lower otherwise.
    ndcg@K        = mean_u  DCG / IDCG,  DCG = sum_r hit_r / log2(r + 1),
                    IDCG = sum_{r <= min(K, |T_u|)} 1 / log2(r + 1); the same as
                    LightGCN's NDCGatK_r (its ideal list has min(K, |T_u|) hits).
    mrr           = mean_u  1 / (rank of the first test item), 0 if none is in the
                    top max(ks): MRR truncated at max(ks)
    coverage@K    = |union_u top-K(u)| / N
  With user and item groups (same label space; Xin et al., RecSys 2017):
    cross_group@K = mean_u share of u's top-K items whose group != u's group
    folding_auc   = mean_u P(s_a > s_b) (+ half of ties) for a uniform unseen
                    other-group item a and a uniform unseen same-group item b, computed
                    exactly by sorting each user's N scores (users lacking either set
                    are skipped); 0.5 = no separation between groups, 0 = none folded.
                    Dominated by tail items on real data: see `heldout_folding`.
    folding_auc_heldout = mean_u mean_{i in T_u} P(s_ui > s_uj) (+ half of ties) for j
                    an other-group item u neither trained on nor held out: 1 = never
                    folds, 0.5 = blind (`heldout_folding`).
    cross_group_heldout = mean_u mean_{i in T_u} share of other groups among the
                    items that outrank i: cross_group at each positive's rank, 0 = never
                    folds (`heldout_folding`).
    folding_score = mean_u mean_{j unseen} max(0, s~_uj - R[g_u, g_j]), the folding
                    metric of Xin et al. (mean over pairs of max(0, s - r)) with the
                    model score min-max normalised per user over unseen items
                    (s~ in [0, 1]) and relatedness R[user group, item group] in [0, 1]
                    (default identity: same group related). The normalisation is this
                    library's choice, since dot-product scores are unbounded.
  Returns plain Python floats keyed "recall@K", "recall_full@K", "ndcg@K", "mrr",
  "coverage@K" and, with groups, "cross_group@K", "folding_auc", "folding_auc_heldout",
  "cross_group_heldout", "folding_score".
  """
  query, items = _embeddings(query_UxD, items_NxD)
  num_users, num_items = query.shape[0], items.shape[0]
  ks, max_k = _check_eval_args(ks, train, test, num_users, num_items)
  users, n_test, test_keys, ex_rows, ex_cols = _eval_setup(
      train, test, num_users, num_items, eval_users
  )

  query_users = query[jnp.asarray(users, jnp.int32)]
  _, ids = (topk_fn or topk)(
      query_users,
      items,
      max_k,
      exclude_rows=ex_rows,
      exclude_cols=ex_cols,
      chunk_size=chunk_size,
      query_batch=query_batch,
  )
  valid = ids >= 0
  out = _ranking_metrics(users, ids, n_test, test_keys, num_items, ks)

  ug = _groups("user_groups", user_groups, train, test, num_users)
  ig = _groups("item_groups", item_groups, train, test, num_items)
  if ug is None or ig is None:
    if relatedness is not None:
      raise ValueError("relatedness needs both user_groups and item_groups")
    return out

  eval_groups = ug[users]
  for k in ks:
    v = valid[:, :k]
    other = v & (ig[np.where(v, ids[:, :k], 0)] != eval_groups[:, None])
    out[f"cross_group@{k}"] = float(np.mean(other.sum(1) / np.maximum(v.sum(1), 1)))

  num_ug, num_ig = int(ug.max()) + 1, int(ig.max()) + 1
  if relatedness is None:
    rel = np.zeros((num_ug, num_ig), np.float32)
    diag = min(num_ug, num_ig)
    rel[np.arange(diag), np.arange(diag)] = 1.0
  else:
    rel = np.asarray(relatedness, np.float32)
    if rel.ndim != 2 or rel.shape[0] < num_ug or rel.shape[1] < num_ig:
      raise ValueError(
          f"relatedness must be [>= {num_ug} user groups, >= {num_ig} "
          f"item groups]; got shape {rel.shape}"
      )
    if not np.all((rel >= 0) & (rel <= 1)):
      raise ValueError("relatedness values must lie in [0, 1]")

  rows_per = max(1, min(users.size, _GROUP_PASS_ELEMENTS // num_items))
  parts = chunked.split_exclusions(ex_rows, ex_cols, users.size, rows_per)
  items_groups_dev = jnp.asarray(ig, jnp.int32)
  rel_dev = jnp.asarray(rel)
  stats = []
  for b, (ex_r, ex_c) in enumerate(parts):
    sl = slice(b * rows_per, (b + 1) * rows_per)
    q = query_users[sl]
    g = eval_groups[sl]
    real = q.shape[0]
    if real < rows_per:
      q = jnp.pad(q, ((0, rows_per - real), (0, 0)))
      g = np.pad(g, (0, rows_per - real))
    res = _group_stats(
        q,
        items,
        jnp.asarray(g, jnp.int32),
        items_groups_dev,
        rel_dev,
        jnp.asarray(ex_r),
        jnp.asarray(ex_c),
    )
    stats.append(np.stack([np.asarray(x, np.float64)[:real] for x in res], axis=1))
  auc_num, n_other, n_same, fold_sum, n_unseen = np.concatenate(stats).T
  pairs = n_other * n_same
  ok = pairs > 0
  out["folding_auc"] = float(np.mean(auc_num[ok] / pairs[ok])) if ok.any() else math.nan
  out["folding_auc_heldout"], out["cross_group_heldout"] = _heldout_auc(
      query_users,
      items,
      users,
      eval_groups,
      ig,
      test_keys,
      ex_rows,
      ex_cols,
      chunk_size=chunk_size,
      query_batch=query_batch,
  )
  out["folding_score"] = float(np.mean(fold_sum / np.maximum(n_unseen, 1)))
  return out


def evaluate_scores(
    score_fn,
    num_users: int,
    num_items: int,
    train,
    test,
    *,
    ks: Sequence[int] = (10, 20),
    eval_users=None,
    query_batch: int = DEFAULT_QUERY_BATCH,
) -> dict[str, float]:
  """`evaluate`'s ranking metrics for a model given by a scoring function instead of
  embeddings, for scores that are not a low-rank dot product (EASE: s_u = x_u B, with
  B an [N, N] matrix; `jaxrec.baselines`).

  score_fn(users_B) -> scores_BxN (array-like, float) is called on the evaluated
  users (sorted int64 ids) in batches of `query_batch`; so memory is
  O(query_batch * N) beyond the model. Each batch's train items are set to -inf and its
  top-max(ks) taken exactly (ties broken arbitrarily; an excluded item never ranks).
  Same users, pairs and definitions as `evaluate`; returns "recall@K",
  "recall_full@K", "ndcg@K", "mrr", "coverage@K" (no group metrics).
  """
  num_users = _positive_int(num_users, "num_users")
  num_items = _positive_int(num_items, "num_items")
  query_batch = _positive_int(query_batch, "query_batch")
  ks, max_k = _check_eval_args(ks, train, test, num_users, num_items)
  users, n_test, test_keys, ex_rows, ex_cols = _eval_setup(
      train, test, num_users, num_items, eval_users
  )
  ids = np.empty((users.size, max_k), np.int64)
  for lo in range(0, users.size, query_batch):
    hi = min(lo + query_batch, users.size)
    scores = np.array(score_fn(users[lo:hi]), np.float32)  # a copy we may write to
    if scores.shape != (hi - lo, num_items):
      raise ValueError(
          f"score_fn returned shape {scores.shape} for {hi - lo} users; "
          f"expected ({hi - lo}, {num_items})"
      )
    a, b = np.searchsorted(ex_rows, [lo, hi])
    scores[ex_rows[a:b] - lo, ex_cols[a:b]] = -np.inf
    top = np.argpartition(-scores, max_k - 1, axis=1)[:, :max_k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    empty = np.take_along_axis(top_scores, order, axis=1) == -np.inf
    ids[lo:hi] = np.where(empty, -1, top)
  return _ranking_metrics(users, ids, n_test, test_keys, num_items, ks)


# ----------------------------------------------------------------------------------
# Held-out full-softmax loss
# ----------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _softmax_lse_batch(query_BxD, items_NxD, inv_t, *, chunk_size):
  """logsumexp_j (q_b . v_j / T) for each row, streaming the items in chunks:
  lse <- logaddexp(lse, logsumexp(block)) over full chunks (a fori_loop) and the tail."""
  n = items_NxD.shape[0]
  q = query_BxD * inv_t
  num_full, tail = n // chunk_size, n % chunk_size

  def add(lse, block_CxD):
    block = jnp.dot(q, block_CxD.T, precision=_HIGHEST)
    return jnp.logaddexp(lse, jax.nn.logsumexp(block, axis=1))

  lse = jnp.full(q.shape[:1], -jnp.inf, jnp.float32)
  lse = jax.lax.fori_loop(
      0,
      num_full,
      lambda i, acc: add(acc, jax.lax.dynamic_slice_in_dim(items_NxD, i * chunk_size, chunk_size)),
      lse,
  )
  return add(lse, items_NxD[num_full * chunk_size :]) if tail else lse


@jax.jit
def _positive_logits(query_PxD, items_PxD, inv_t):
  """q_p . v_p / T for each pair (rows already gathered)."""
  return jnp.sum(query_PxD * inv_t * items_PxD, axis=1)


def heldout_softmax_loss(
    query_UxD,
    items_NxD,
    test,
    *,
    temperature=1.0,
    chunk_size=DEFAULT_CHUNK_SIZE,
    query_batch=DEFAULT_QUERY_BATCH,
    pair_batch=1 << 16,
) -> float:
  """Mean full-softmax cross-entropy of the held-out pairs (the objective that every
  sampled softmax estimates, Bengio & Senecal 2008):

    loss = mean_{(u,i) in test} [ lse_u - q_u . v_i / T ],  lse_u = logsumexp_j (q_u . v_j / T)

  over all N items (train items are not masked: this is the model's own softmax, not a
  ranking). lse_u depends on the user only: it is computed once per distinct test user,
  `query_batch` users at a time, the items streamed in chunks of `chunk_size` rows
  (memory O(query_batch * chunk_size + N * D)); the pairs' own logits in batches of
  `pair_batch`. Float32 scores, the mean accumulated in float64."""
  query, items = _embeddings(query_UxD, items_NxD)
  users, pos = _pairs(test, "test")
  _check_range(users, query.shape[0], "test user")
  _check_range(pos, items.shape[0], "test item")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0; got {temperature!r}")
  chunk = min(_positive_int(chunk_size, "chunk_size"), items.shape[0])
  query_batch = _positive_int(query_batch, "query_batch")
  pair_batch = _positive_int(pair_batch, "pair_batch")
  if users.size == 0:
    return math.nan
  inv_t = jnp.float32(1.0 / temperature)

  distinct, user_row = np.unique(users, return_inverse=True)
  lse = np.empty(distinct.size, np.float32)
  for start in range(0, distinct.size, query_batch):
    u = distinct[start : start + query_batch]
    real = u.size
    if real < query_batch and distinct.size > query_batch:  # one compiled shape
      u = np.pad(u, (0, query_batch - real))
    out = _softmax_lse_batch(query[jnp.asarray(u)], items, inv_t, chunk_size=chunk)
    lse[start : start + real] = np.asarray(out)[:real]

  total = 0.0
  for start in range(0, users.size, pair_batch):
    u, p = users[start : start + pair_batch], pos[start : start + pair_batch]
    real = u.size
    if real < pair_batch and users.size > pair_batch:
      u, p = np.pad(u, (0, pair_batch - real)), np.pad(p, (0, pair_batch - real))
    logit = np.asarray(_positive_logits(query[jnp.asarray(u)], items[jnp.asarray(p)], inv_t))
    nll = lse[user_row[start : start + real]] - logit[:real]  # float32, as lse - logit
    total += float(np.sum(nll, dtype=np.float64))
  return total / users.size


# ----------------------------------------------------------------------------------
# Sampled metric (ablation only) and popularity baseline
# ----------------------------------------------------------------------------------


def sample_unseen_items(key, user_ids_P, seen_keys, num_items, num_negatives):
  """[P, M] item ids drawn uniformly (with replacement) from the items user_ids_P[p]
  never interacted with. `seen_keys` = sorted unique user * num_items + item.

  Rejection sampling in rounds (round r uses fold_in(key, r)); rows still rejected
  after 64 rounds (users who saw most of the catalogue) are drawn exactly from their
  complement with a numpy generator seeded from the key. Deterministic given key.
  """
  users = np.asarray(user_ids_P, np.int64)
  seen_keys = np.asarray(seen_keys, np.int64)
  shape = (users.size, num_negatives)
  out = np.zeros(shape, np.int64)
  todo = np.ones(shape, bool)
  for r in range(64):
    draw = np.asarray(jax.random.randint(jax.random.fold_in(key, r), shape, 0, num_items), np.int64)
    out = np.where(todo, draw, out)
    hit = np.isin(users[:, None] * num_items + out, seen_keys)
    todo &= hit
    if not todo.any():
      return out.astype(np.int32)
  seed = np.asarray(jax.random.key_data(jax.random.fold_in(key, 64))).ravel()
  rng = np.random.default_rng(seed.astype(np.uint64))
  for p in np.unique(np.nonzero(todo)[0]):
    u = users[p]
    lo, hi = np.searchsorted(seen_keys, [u * num_items, (u + 1) * num_items])
    free = np.setdiff1d(np.arange(num_items), seen_keys[lo:hi] - u * num_items)
    if free.size == 0:
      raise ValueError(f"user {u} has interacted with every item; no negative to sample")
    out[p, todo[p]] = rng.choice(free, size=int(todo[p].sum()))
  return out.astype(np.int32)


def sampled_hit_rate(
    query_UxD, items_NxD, train, test, *, num_negatives=100, k=10, key, batch=4096
) -> float:
  """Sampled HR@k: each test pair (u, i) is ranked against `num_negatives` items drawn
  uniformly from those u never interacted with (train or test); hit iff fewer than k
  negatives score >= s_ui (ties count against the positive). Averaged over test pairs.

  Krichene & Rendle (KDD 2020) show such sampled metrics can rank models differently
  from the full ranking: report this ONLY beside `evaluate`'s full-ranking numbers.
  """
  query, items = _embeddings(query_UxD, items_NxD)
  num_users, num_items = query.shape[0], items.shape[0]
  num_negatives = _positive_int(num_negatives, "num_negatives")
  k = _positive_int(k, "k")
  if k > num_negatives:
    raise ValueError(
        f"k={k} must be <= num_negatives={num_negatives} " "(otherwise every test item is a hit)"
    )
  train_keys, test_keys = _pair_keys(train, test, num_users, num_items)
  if test_keys.size == 0:
    raise ValueError("test has no (user, item) pair outside train")
  seen = np.union1d(train_keys, test_keys)
  users, pos = test_keys // num_items, test_keys % num_items
  negs = sample_unseen_items(key, users, seen, num_items, num_negatives)
  hits = 0
  for lo in range(0, users.size, batch):
    u = jnp.asarray(users[lo : lo + batch], jnp.int32)
    q = query[u]
    s_pos = jnp.einsum(
        "pd,pd->p", q, items[jnp.asarray(pos[lo : lo + batch], jnp.int32)], precision=_HIGHEST
    )
    s_neg = jnp.einsum(
        "pd,pmd->pm", q, items[jnp.asarray(negs[lo : lo + batch], jnp.int32)], precision=_HIGHEST
    )
    ahead = jnp.sum(s_neg >= s_pos[:, None], axis=1)
    hits += int(jnp.sum(ahead < k))
  return hits / users.size


def popularity_scores(train, num_users=None, num_items=None):
  """Most-popular baseline as embeddings of dim 1: query = ones [U, 1], items = train
  interaction counts [N, 1], so score_uj = count_j for every user and the baseline
  goes through the same `evaluate` path (train items masked) as any model.
  """
  users, items = _pairs(train, "train")
  num_users = num_users if num_users is not None else getattr(train, "num_users", None)
  num_items = num_items if num_items is not None else getattr(train, "num_items", None)
  if num_users is None or num_items is None:
    raise ValueError(
        "popularity_scores needs num_users and num_items (pass them or "
        "give an object with .num_users / .num_items)"
    )
  _check_range(users, int(num_users), "train user")
  _check_range(items, int(num_items), "train item")
  counts = np.bincount(items, minlength=int(num_items)).astype(np.float32)
  return (jnp.ones((int(num_users), 1), jnp.float32), jnp.asarray(counts[:, None]))

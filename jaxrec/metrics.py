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
# Group (folding) statistics: one streaming pass over item chunks, no per-user sort
# ----------------------------------------------------------------------------------

# Item chunk and user block of the group pass: a [rows, chunk] float32 score block of
# 256 x 2048 (2 MiB) stays in cache, which matters more on CPU than the matmul's size.
_SWEEP_CHUNK = 2048
_SWEEP_ROWS = 256
# Draws per side for the uniform-pair folding_auc (see `_folding_auc`).
DEFAULT_AUC_SAMPLES = 1024


@functools.partial(jax.jit, static_argnames=("chunk", "fold_given"))
def _group_sweep(
    query_BxD,
    user_group_B,
    items_NxD,
    item_groups_N,
    related_BxG,
    ex_rows_CxE,
    ex_cols_CxE,
    ex_code_CxE,
    pos_BxP,
    lo_B,
    span_B,
    *,
    chunk,
    fold_given,
):
  """Per-row folding statistics that need every score, streaming the N items in chunks.

  Row b (a user), scores s_j = q_b . v_j. Excluded pairs carry a code: 1 = a training
  item of b, 2 = a held-out positive of b; chunk c's pairs are row c of the [C, E]
  arrays (item ids local to the chunk, padding rows = B, dropped), so a chunk scatters
  only its own. U = items not coded 1 (unseen), A = items not coded at all, O = items of
  A in another group than b's. pos_BxP holds the scores t_p of b's positives (NaN in
  padding slots). Returns
    lo, hi    = min / max_{j in U} s_j,
    c_o, c_a  = [B, P]: sum_{j in O (resp. A)} [s_j < t_p] + [s_j <= t_p] = 2 #below +
                #ties, so #below + #ties / 2 = c / 2 (ties count half),
    fold      = with fold_given (lo_B, span_B known): sum_{j in U} max(0, (s_j - lo) /
                span - R_bj) (0 where span == 0); else zeros.
  Counts that need no score (|U|, |A|, |O|) and the binary-R fold sum are closed forms in
  `_group_pass`. Full chunks run in a fori_loop, the ragged tail (N mod chunk items) as
  one statically shaped step. The A and O counts of a chunk travel packed in one int32
  (A in the low 16 bits): exact for chunk <= 16383. Memory O(B * P * chunk); no row is
  sorted, no [B, N] array exists.
  """
  batch, num_items = query_BxD.shape[0], items_NxD.shape[0]
  num_full = num_items // chunk
  t_BxPx1 = pos_BxP[:, :, None]

  def step(carry, c, start, rows_SxD, groups_S):
    lo, hi, c_o, c_a, fold = carry
    width = rows_SxD.shape[0]
    s_BxS = jnp.dot(query_BxD, rows_SxD.T, precision=_HIGHEST)
    code_BxS = (
        jnp.zeros((batch, width), jnp.int8)
        .at[ex_rows_CxE[c], ex_cols_CxE[c]]
        .set(ex_code_CxE[c], mode="drop")
    )
    seen = code_BxS == 1
    lo = jnp.minimum(lo, jnp.min(jnp.where(seen, jnp.inf, s_BxS), axis=1))
    hi = jnp.maximum(hi, jnp.max(jnp.where(seen, -jnp.inf, s_BxS), axis=1))
    other = groups_S[None, :] != user_group_B[:, None]
    weight_BxS = jnp.where(code_BxS == 0, jnp.where(other, 65537, 1), 0)  # A: 1, O: 1 + 2^16
    two = (s_BxS[:, None, :] < t_BxPx1).astype(jnp.int32) + (s_BxS[:, None, :] <= t_BxPx1).astype(
        jnp.int32
    )
    packed = jnp.sum(two * weight_BxS[:, None, :], axis=2)
    if fold_given:
      span = span_B[:, None]
      norm = jnp.where(span > 0, (s_BxS - lo_B[:, None]) / jnp.where(span > 0, span, 1.0), 0.0)
      related_BxS = jnp.take(related_BxG, groups_S, axis=1)
      fold += jnp.sum(jnp.where(seen, 0.0, jnp.maximum(0.0, norm - related_BxS)), axis=1)
    return lo, hi, c_o + (packed >> 16), c_a + (packed & 0xFFFF), fold

  zf = jnp.zeros(batch, jnp.float32)
  zp = jnp.zeros(pos_BxP.shape, jnp.int32)
  carry = (zf + jnp.inf, zf - jnp.inf, zp, zp, zf)

  def body(c, carry):
    start = c * chunk
    return step(
        carry,
        c,
        start,
        jax.lax.dynamic_slice_in_dim(items_NxD, start, chunk, 0),
        jax.lax.dynamic_slice_in_dim(item_groups_N, start, chunk, 0),
    )

  carry = jax.lax.fori_loop(0, num_full, body, carry)
  if num_items % chunk:
    start = num_full * chunk
    carry = step(carry, num_full, start, items_NxD[start:], item_groups_N[start:])
  return carry


def _pow2(n: int) -> int:
  return 1 << max(0, (int(n) - 1).bit_length())


def _blocks(n_pos_U: np.ndarray, rows: int) -> list[np.ndarray]:
  """User rows cut into blocks of <= `rows`, by increasing number of positives (so a
  block pads its positives to about its own users' count)."""
  order = np.argsort(n_pos_U, kind="stable")
  return [order[i : i + rows] for i in range(0, order.size, rows)]


def _chunk_exclusions(rows, cols, codes, num_rows, num_items, chunk):
  """Excluded (row, item, code) triples cut per item chunk -> [C, E] int32 rows, local
  item ids and int8 codes, C = ceil(N / chunk), E a power of two; padding rows =
  num_rows (dropped by `_group_sweep`'s scatter)."""
  num_chunks = -(-num_items // chunk)
  which = cols // chunk
  order = np.argsort(which, kind="stable")
  count = np.bincount(which, minlength=num_chunks)
  width = _pow2(max(1, int(count.max()) if count.size else 1))
  slot = np.arange(rows.size) - np.repeat(np.cumsum(count) - count, count)
  out_r = np.full((num_chunks, width), num_rows, np.int32)
  out_c = np.zeros((num_chunks, width), np.int32)
  out_k = np.zeros((num_chunks, width), np.int8)
  w = which[order]
  out_r[w, slot] = rows[order]
  out_c[w, slot] = cols[order] - w * chunk
  out_k[w, slot] = codes[order]
  return out_r, out_c, out_k


def _group_sums(items_np, item_groups_N, num_groups):
  """[num_groups, D] float64 sums of the item vectors (numpy) of each group."""
  sums = np.zeros((num_groups, items_np.shape[1]))
  order = np.argsort(item_groups_N, kind="stable")
  bounds = np.searchsorted(item_groups_N[order], np.arange(num_groups + 1))
  piece = 1 << 20
  for g in range(num_groups):
    idx = order[bounds[g] : bounds[g + 1]]
    if idx.size and idx[-1] - idx[0] + 1 == idx.size:  # contiguous: no copy
      sums[g] = np.sum(items_np[idx[0] : idx[-1] + 1], axis=0, dtype=np.float64)
      continue
    for i in range(0, idx.size, piece):
      sums[g] += np.sum(items_np[idx[i : i + piece]], axis=0, dtype=np.float64)
  return sums


def _pair_scores64(q, v, rows, cols):
  """q_rows . v_cols in float64 from numpy float32 tables, in pieces."""
  out = np.empty(rows.size)
  piece = 1 << 18
  for i in range(0, rows.size, piece):
    a, b = q[rows[i : i + piece]], v[cols[i : i + piece]]
    out[i : i + piece] = np.einsum("pd,pd->p", a.astype(np.float64), b.astype(np.float64))
  return out


def _group_pass(
    query_users,
    items,
    eval_groups_U,
    item_groups_N,
    related_GxH,
    t_rows,
    t_items,
    ex_rows,
    ex_cols,
    *,
    chunk_size,
    query_batch,
):
  """Folding statistics of all evaluated users -> per-user float64 arrays (n_unseen,
  fold_sum) and per held-out pair (auc numerator, n_o, share), pairs in the order of
  (t_rows, t_items) (t_rows index the users; ex_rows, ex_cols the train pairs, unique).

  `_group_sweep` gives lo, hi and each positive's counts; the rest are closed forms
  (exact, float64): with n_g the size of item group g and X_u = u's train items,
    |U| = N - |X_u|,  |A| = |U| - |T_u|,  |O| = sum_{g != g_u} n_g - #{coded j: g_j != g_u},
  and, for R in {0, 1}, sum_{j in U, R=0} (s_j - lo) = q_u . sum_{j: R=0} v_j
  - sum_{j in X_u, R=0} s_j - lo #{j in U: R=0} (item-group sums of v, float64), so the
  sweep does no per-item fold work; R with values in (0, 1) takes a second sweep."""
  num_users, num_items = query_users.shape[0], items.shape[0]
  chunk = min(chunk_size, _SWEEP_CHUNK, num_items)
  rows = min(query_batch, _SWEEP_ROWS)
  binary = bool(np.all((related_GxH == 0) | (related_GxH == 1)))
  num_h = related_GxH.shape[1]
  n_pos = np.bincount(t_rows, minlength=num_users)
  pair_order = np.argsort(t_rows, kind="stable")
  pair_start = np.concatenate([[0], np.cumsum(n_pos)])

  # Closed forms (see the docstring).
  size_h = np.bincount(item_groups_N, minlength=num_h).astype(np.float64)
  n_train = np.bincount(ex_rows, minlength=num_users).astype(np.float64)
  n_unseen = num_items - n_train
  coded_r = np.concatenate([ex_rows, t_rows])
  coded_c = np.concatenate([ex_cols, t_items])
  coded_other = item_groups_N[coded_c] != eval_groups_U[coded_r]
  own = np.where(eval_groups_U < num_h, size_h[np.minimum(eval_groups_U, num_h - 1)], 0.0)
  n_o = (num_items - own) - np.bincount(coded_r[coded_other], minlength=num_users)
  n_a = n_unseen - n_pos
  rel_users = related_GxH[eval_groups_U]  # [U, H]
  if binary:
    unrelated_UxH = (rel_users == 0).astype(np.float64)
    items_np, q_np = np.asarray(items), np.asarray(query_users)
    sums_HxD = _group_sums(items_np, item_groups_N, num_h)
    lin = np.einsum("ud,ud->u", q_np.astype(np.float64), unrelated_UxH @ sums_HxD)
    n_lin = unrelated_UxH @ size_h
    tr_lin = rel_users[ex_rows, item_groups_N[ex_cols]] == 0
    lin -= np.bincount(
        ex_rows[tr_lin],
        _pair_scores64(q_np, items_np, ex_rows[tr_lin], ex_cols[tr_lin]),
        minlength=num_users,
    )
    n_lin -= np.bincount(ex_rows[tr_lin], minlength=num_users)

  ex_order = np.argsort(ex_rows, kind="stable")
  ex_start = np.searchsorted(ex_rows[ex_order], np.arange(num_users + 1))
  items_groups_dev = jnp.asarray(item_groups_N, jnp.int32)
  fold = np.zeros(num_users)
  auc_num = np.zeros(t_rows.size)
  n_other = np.zeros(t_rows.size)
  share = np.zeros(t_rows.size)
  for block in _blocks(n_pos, rows):
    real = block.size
    b_pad = rows if num_users >= rows else _pow2(real)
    p_pad = _pow2(int(n_pos[block].max()))
    ub = np.zeros(b_pad, np.int64)
    ub[:real] = block
    q = query_users[jnp.asarray(ub)]
    # Positives: slot k of row r = the k-th held-out pair of user block[r].
    slot_pair = np.full((b_pad, p_pad), -1, np.int64)
    for r, u in enumerate(block):
      slot_pair[r, : n_pos[u]] = pair_order[pair_start[u] : pair_start[u + 1]]
    has = slot_pair >= 0
    pos_items = np.where(has, t_items[np.maximum(slot_pair, 0)], 0)
    t_pos = jnp.einsum(
        "bd,bpd->bp", q, items[jnp.asarray(pos_items, jnp.int32)], precision=_HIGHEST
    )
    t_pos = jnp.where(jnp.asarray(has), t_pos, jnp.nan)
    # Exclusions of the block: train (code 1) and held-out (code 2) pairs, per chunk.
    tr = np.concatenate([ex_order[ex_start[u] : ex_start[u + 1]] for u in block])
    te = np.concatenate([pair_order[pair_start[u] : pair_start[u + 1]] for u in block])
    row_of = np.full(num_users, -1, np.int64)
    row_of[block] = np.arange(real)
    e_row = np.concatenate([row_of[ex_rows[tr]], row_of[t_rows[te]]])
    e_col = np.concatenate([ex_cols[tr], t_items[te]])
    e_code = np.concatenate([np.ones(tr.size, np.int8), np.full(te.size, 2, np.int8)])
    ex_r, ex_c, ex_k = _chunk_exclusions(e_row, e_col, e_code, b_pad, num_items, chunk)
    g = np.zeros(b_pad, np.int32)
    g[:real] = eval_groups_U[block]
    rel = np.zeros((b_pad, num_h), np.float32)
    rel[:real] = rel_users[block]
    args = (
        q,
        jnp.asarray(g),
        items,
        items_groups_dev,
        jnp.asarray(rel),
        jnp.asarray(ex_r),
        jnp.asarray(ex_c),
        jnp.asarray(ex_k),
        t_pos,
    )
    zeros = jnp.zeros(b_pad, jnp.float32)
    out = _group_sweep(*args, zeros, zeros, chunk=chunk, fold_given=False)
    b_lo, b_hi, c_o, c_a = (np.asarray(x, np.float64)[:real] for x in out[:4])
    span = b_hi - b_lo
    if binary:  # max(0, s~ - R) = s~ where R = 0, 0 where R = 1: sum_{R=0} (s - lo) / span
      b_lin = n_lin[block]
      total = np.where(b_lin > 0, lin[block] - b_lin * np.where(b_lin > 0, b_lo, 0.0), 0.0)
      b_fold = np.where(span > 0, np.maximum(total, 0.0) / np.where(span > 0, span, 1.0), 0.0)
    else:  # R has values in (0, 1): a second sweep with the bounds known
      b_fold = np.asarray(
          _group_sweep(
              *args,
              jnp.asarray(np.pad(b_lo, (0, b_pad - real)), jnp.float32),
              jnp.asarray(np.pad(span, (0, b_pad - real)), jnp.float32),
              chunk=chunk,
              fold_given=True,
          )[4],
          np.float64,
      )[:real]
    fold[block] = b_fold
    pairs = slot_pair[:real][has[:real]]
    rr = block[np.nonzero(has[:real])[0]]
    below_o = c_o[has[:real]] / 2.0  # #below + #ties / 2
    above_o = n_o[rr] - below_o
    above_a = n_a[rr] - c_a[has[:real]] / 2.0
    auc_num[pairs] = below_o
    n_other[pairs] = n_o[rr]
    share[pairs] = np.where(above_a > 0, above_o / np.maximum(above_a, 1e-30), 0.0)
  return n_unseen, fold, auc_num, n_other, share


def _unseen_draws(rng, user, group, members, offsets, seen_keys, num_items, m, other):
  """Item ids for `_folding_auc`, one side of one user: every unseen item of the set
  (same group as `group`, or the others with other=True) if it has <= m of them, else m
  uniform draws with replacement from them (rejection of seen items; exact fallback).
  Returns (ids, exhaustive)."""
  lo, hi = offsets[group], offsets[group + 1]
  size = hi - lo if not other else members.size - (hi - lo)
  seen_lo, seen_hi = np.searchsorted(seen_keys, [user * num_items, (user + 1) * num_items])
  seen = seen_keys[seen_lo:seen_hi] - user * num_items
  if size - seen.size <= m:  # small enough to count exactly (the seen may be outside)
    pool = members[lo:hi] if not other else np.concatenate([members[:lo], members[hi:]])
    return pool[~np.isin(pool, seen)], True
  out = np.empty(0, np.int64)
  for _ in range(64):
    idx = rng.integers(0, size, m - out.size)
    if other:
      idx = np.where(idx < lo, idx, idx + (hi - lo))
    else:
      idx = idx + lo
    ids = members[idx]
    out = np.concatenate([out, ids[~np.isin(ids, seen)]])
    if out.size == m:
      return out, False
  pool = members[lo:hi] if not other else np.concatenate([members[:lo], members[hi:]])
  pool = pool[~np.isin(pool, seen)]
  return np.concatenate([out, rng.choice(pool, m - out.size)]), False


@jax.jit
def _pair_wins(query_BxD, items_NxD, other_BxM, same_BxM, other_ok_BxM, same_ok_BxM):
  """sum_{a, b valid} [s_a > s_b] + [s_a == s_b] / 2 per row (a: other ids, b: same
  ids), by sorting the [B, M] same-side scores (invalid -> +inf) and searchsorted. The
  item rows are gathered here, 64 query rows at a time: [64, M, D] of them exist at once,
  not [B, M, D] (268 MB a side at B = M = 1,024, D = 64)."""

  def scores(ids_BxM):
    row = lambda q_ids: jnp.dot(items_NxD[q_ids[1]], q_ids[0], precision=_HIGHEST)
    return jax.lax.map(row, (query_BxD, ids_BxM), batch_size=64)

  s_a, s_b = scores(other_BxM), scores(same_BxM)
  s_b = jnp.sort(jnp.where(same_ok_BxM, s_b, jnp.inf), axis=1)
  less = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="left"))(s_b, s_a)
  less_eq = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="right"))(s_b, s_a)
  wins = less.astype(jnp.float32) + 0.5 * (less_eq - less).astype(jnp.float32)
  return jnp.sum(jnp.where(other_ok_BxM, wins, 0.0), axis=1)


def _folding_auc(
    query_users, items, users, eval_groups_U, item_groups_N, train_keys, *, samples, seed
) -> float:
  """folding_auc (see `evaluate`): per user, other-group ids a and same-group ids b
  (all unseen items of a side with <= `samples` of them, else `samples` uniform draws
  with replacement), AUC_u = mean_{a, b} [s_a > s_b] + [s_a == s_b] / 2; mean over users
  with both sides non-empty."""
  num_items = items.shape[0]
  members = np.argsort(item_groups_N, kind="stable")
  top = max(int(item_groups_N.max()), int(eval_groups_U.max()))  # a user group may label no item
  offsets = np.searchsorted(item_groups_N[members], np.arange(top + 2))
  rng = np.random.default_rng([0x666F6C64, int(seed)])
  aucs = []
  block = max(1, (1 << 20) // samples)
  for lo in range(0, users.size, block):
    sides = []
    for r in range(lo, min(lo + block, users.size)):
      u, g = int(users[r]), int(eval_groups_U[r])
      sides.append(
          [
              _unseen_draws(rng, u, g, members, offsets, train_keys, num_items, samples, other)[0]
              for other in (True, False)
          ]
      )
    width = _pow2(max(1, max(max(a.size, b.size) for a, b in sides)))
    ids = np.zeros((2, len(sides), width), np.int64)
    ok = np.zeros((2, len(sides), width), bool)
    for r, pair in enumerate(sides):
      for side, x in enumerate(pair):
        ids[side, r, : x.size] = x
        ok[side, r, : x.size] = True
    wins = np.asarray(
        _pair_wins(
            query_users[lo : lo + len(sides)],
            items,
            jnp.asarray(ids[0], jnp.int32),
            jnp.asarray(ids[1], jnp.int32),
            jnp.asarray(ok[0]),
            jnp.asarray(ok[1]),
        ),
        np.float64,
    )
    pairs = ok[0].sum(1).astype(np.float64) * ok[1].sum(1)
    aucs.append(wins[pairs > 0] / pairs[pairs > 0])
  aucs = np.concatenate(aucs)
  return float(np.mean(aucs)) if aucs.size else math.nan


def _group_metrics(
    query_users,
    items,
    users,
    eval_groups_U,
    item_groups_N,
    related_GxH,
    test_keys,
    ex_rows,
    ex_cols,
    *,
    chunk_size,
    query_batch,
    auc_samples,
    seed,
) -> dict[str, float]:
  """folding_auc (skipped when auc_samples == 0), folding_auc_heldout,
  cross_group_heldout, folding_score (see `evaluate`) from `_eval_setup`'s arrays (users
  sorted, ex_rows index `users`)."""
  num_items = items.shape[0]
  t_users = test_keys // num_items
  keep = np.isin(t_users, users)
  t_rows = np.searchsorted(users, t_users[keep])
  t_items = test_keys[keep] % num_items
  n_unseen, fold, auc_num, n_other, share = _group_pass(
      query_users,
      items,
      eval_groups_U,
      item_groups_N,
      related_GxH,
      t_rows,
      t_items,
      ex_rows,
      ex_cols,
      chunk_size=chunk_size,
      query_batch=query_batch,
  )
  out = {}
  if auc_samples:
    seen_keys = users[ex_rows] * num_items + ex_cols  # sorted: rows, then items, ascend
    out["folding_auc"] = _folding_auc(
        query_users,
        items,
        users,
        eval_groups_U,
        item_groups_N,
        seen_keys,
        samples=auc_samples,
        seed=seed,
    )
  # Held-out measures: mean over a user's pairs, then over users.
  ok = n_other > 0
  auc_sum = np.bincount(t_rows[ok], auc_num[ok] / n_other[ok], minlength=users.size)
  auc_cnt = np.bincount(t_rows[ok], minlength=users.size)
  has = auc_cnt > 0
  out["folding_auc_heldout"] = (
      float(np.mean(auc_sum[has] / auc_cnt[has])) if has.any() else math.nan
  )
  n_pairs = np.bincount(t_rows, minlength=users.size)
  share_sum = np.bincount(t_rows, share, minlength=users.size)
  has_pairs = n_pairs > 0
  out["cross_group_heldout"] = float(np.mean(share_sum[has_pairs] / n_pairs[has_pairs]))
  out["folding_score"] = float(np.mean(fold / np.maximum(n_unseen, 1)))
  return out


def _group_labels(user_groups, item_groups, relatedness, train, test, num_users, num_items):
  """(user groups, item groups, R [user groups, item groups] in [0, 1], default identity:
  same group related), or None without both labels."""
  ug = _groups("user_groups", user_groups, train, test, num_users)
  ig = _groups("item_groups", item_groups, train, test, num_items)
  if ug is None or ig is None:
    if relatedness is not None:
      raise ValueError("relatedness needs both user_groups and item_groups")
    return None
  num_ug, num_ig = int(ug.max()) + 1, int(ig.max()) + 1
  return ug, ig, _relatedness(relatedness, num_ug, num_ig)


def _relatedness(relatedness, num_ug: int, num_ig: int) -> np.ndarray:
  if relatedness is None:
    rel = np.zeros((num_ug, num_ig), np.float32)
    diag = min(num_ug, num_ig)
    rel[np.arange(diag), np.arange(diag)] = 1.0
    return rel
  rel = np.asarray(relatedness, np.float32)
  if rel.ndim != 2 or rel.shape[0] < num_ug or rel.shape[1] < num_ig:
    raise ValueError(
        f"relatedness must be [>= {num_ug} user groups, >= {num_ig} "
        f"item groups]; got shape {rel.shape}"
    )
  if not np.all((rel >= 0) & (rel <= 1)):
    raise ValueError("relatedness values must lie in [0, 1]")
  return rel


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
  Both are exact counts from `evaluate`'s group pass (`_group_sweep`: per item chunk,
  each positive's score against the chunk's; no row is sorted), so this is `evaluate`'s
  two keys without its top-K. Groups and pairs as in `evaluate`.
  """
  query, items = _embeddings(query_UxD, items_NxD)
  num_users, num_items = query.shape[0], items.shape[0]
  chunk_size = _positive_int(chunk_size, "chunk_size")
  query_batch = _positive_int(query_batch, "query_batch")
  users, _, test_keys, ex_rows, ex_cols = _eval_setup(train, test, num_users, num_items, eval_users)
  labels = _group_labels(user_groups, item_groups, None, train, test, num_users, num_items)
  if labels is None:
    raise ValueError("heldout_folding needs user_groups and item_groups")
  ug, ig, rel = labels
  out = _group_metrics(
      query[jnp.asarray(users, jnp.int32)],
      items,
      users,
      ug[users],
      ig,
      rel,
      test_keys,
      ex_rows,
      ex_cols,
      chunk_size=chunk_size,
      query_batch=query_batch,
      auc_samples=0,
      seed=0,
  )
  return {k: out[k] for k in ("folding_auc_heldout", "cross_group_heldout")}


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
    auc_samples=DEFAULT_AUC_SAMPLES,
    seed=0,
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
                    other-group item a and a uniform unseen same-group item b (users
                    lacking either set are skipped); 0.5 = no separation between groups,
                    0 = none folded. Dominated by tail items on real data: see
                    `heldout_folding`. Exact (every pair counted) for a user whose unseen
                    items on each side number <= auc_samples; otherwise that side is
                    auc_samples uniform draws with replacement (seeded by `seed`) and
                    AUC_u is the two-sample U-statistic over the draws: unbiased, with
                    Var_u <= (m + n - 1) / (4 m n) (m, n the two sides' sizes; Hoeffding's
                    decomposition, each variance term <= 1/4), so the reported mean over
                    U users has SE <= sqrt((2M - 1) / (4 M^2 U)): 0.022 / sqrt(U) at the
                    default M = 1024 (0.0005 at 2,000 users). An exact value over N-item
                    sides would need each user's scores ranked (a sort of N), which is
                    what this avoids.
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
  The group metrics but folding_auc come from one streaming pass over item chunks
  (`_group_sweep`: per chunk, each user's min / max unseen score and each held-out
  positive's score compared with the chunk's, counted per group) plus closed forms for
  the counts and the binary-R fold sum (`_group_pass`), a second pass only when
  relatedness has values strictly between 0 and 1: no per-user sort of N scores, memory
  O(256 users x 2048 items x positives per user) (benchmarks/eval_groups.py times it
  against the plain top-K).
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

  labels = _group_labels(user_groups, item_groups, relatedness, train, test, num_users, num_items)
  if labels is None:
    return out
  ug, ig, rel = labels
  eval_groups = ug[users]
  for k in ks:
    v = valid[:, :k]
    other = v & (ig[np.where(v, ids[:, :k], 0)] != eval_groups[:, None])
    out[f"cross_group@{k}"] = float(np.mean(other.sum(1) / np.maximum(v.sum(1), 1)))
  out.update(
      _group_metrics(
          query_users,
          items,
          users,
          eval_groups,
          ig,
          rel,
          test_keys,
          ex_rows,
          ex_cols,
          chunk_size=chunk_size,
          query_batch=query_batch,
          auc_samples=_positive_int(auc_samples, "auc_samples"),
          seed=seed,
      )
  )
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

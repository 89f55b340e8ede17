"""Full-catalogue passes in item chunks: streaming log-sum-exp and top-k, never [B, N].

Every computation over all N items of a catalogue lives here, so that the unsharded
losses and metrics and the per-shard versions in `jaxrec.sharding` run the same code:

  * `logsumexp(query_BxD, items_NxD, chunk_size)`: lse_b = log sum_j exp(q_b . v_j),
    differentiable (custom VJP); `logsumexp_forward` / `logsumexp_backward` are its two
    halves, which `sharding` calls per shard with a global lse.
  * `topk_batch(...)`: exact top-k of a query batch over all items with excluded
    (row, item) pairs masked; `split_exclusions` cuts the excluded pairs per query batch.

Items are read in chunks of `chunk_size` rows (a ragged tail chunk when N is not a
multiple), so memory is O(B * chunk_size + N * D).

References: the memory-efficient softmax of Rabe & Staats 2021 ("Self-attention does not
need O(n^2) memory") and the online softmax of Milakov & Gimelshein 2018.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_NEG_INF = float("-inf")
_HIGHEST = jax.lax.Precision.HIGHEST


def _chunk_bounds(num_items: int, chunk_size: int) -> tuple[int, int, int]:
  """(chunk, number of full chunks, size of the ragged tail chunk), all static."""
  chunk = min(chunk_size, num_items)
  num_full = num_items // chunk
  tail = num_items - num_full * chunk
  return chunk, num_full, tail


# ---------------------------------------------------------------------------------------
# Log-sum-exp.
# ---------------------------------------------------------------------------------------


def logsumexp_forward(query_BxD: Array, items_NxD: Array, chunk_size: int) -> Array:
  """Streaming log-sum-exp of query_BxD @ items_NxD.T over item chunks -> [B].

  Online update per chunk C with running max m and sum s:
    m' = max(m, max_{j in C} s_bj),  s' = s exp(m - m') + sum_{j in C} exp(s_bj - m'),
  and lse_b = m + log s at the end (accumulated in at least float32).

  Full chunks go through a fori_loop (dynamic_slice of the items, no padded copy); the
  ragged tail (N mod chunk rows) is one more, statically shaped, step after the loop.
  """
  num_items = items_NxD.shape[0]
  chunk, num_full, tail = _chunk_bounds(num_items, chunk_size)
  batch = query_BxD.shape[0]
  acc_dtype = jnp.promote_types(query_BxD.dtype, jnp.float32)

  def step(carry, items_CxD):
    max_B, sum_B = carry
    scores_BxC = jnp.dot(query_BxD, items_CxD.T).astype(acc_dtype)
    new_max_B = jnp.maximum(max_B, jnp.max(scores_BxC, axis=1))
    sum_B = sum_B * jnp.exp(max_B - new_max_B) + jnp.sum(
        jnp.exp(scores_BxC - new_max_B[:, None]), axis=1
    )
    return new_max_B, sum_B

  carry = (jnp.full((batch,), -jnp.inf, acc_dtype), jnp.zeros((batch,), acc_dtype))
  carry = jax.lax.fori_loop(
      0,
      num_full,
      lambda i, c: step(c, jax.lax.dynamic_slice_in_dim(items_NxD, i * chunk, chunk, 0)),
      carry,
  )
  if tail:
    carry = step(carry, items_NxD[num_full * chunk :])
  max_B, sum_B = carry
  return max_B + jnp.log(sum_B)


def logsumexp_backward(
    query_BxD: Array, items_NxD: Array, lse_B: Array, g_B: Array, chunk_size: int
) -> tuple[Array, Array]:
  """Cotangents (d query_BxD, d items_NxD) of lse_b = log sum_j exp(q_b . v_j) given g_B.

    d q_b = g_b sum_j p_bj v_j ;  d v_j = sum_b g_b p_bj q_b ;  p_bj = exp(s_bj - lse_b).

  Scores of each chunk are recomputed (p_BxC = exp(s_BxC - lse_B)), so memory stays
  O(B*chunk + N*D): d items is filled chunk by chunk with dynamic_update_slice. lse_B need
  not be this table's own: with the lse of a whole catalogue and items_NxD one shard of
  it, d q is this shard's partial sum and d items this shard's rows (`jaxrec.sharding`).
  """
  num_items = items_NxD.shape[0]
  chunk, num_full, tail = _chunk_bounds(num_items, chunk_size)
  acc_dtype = lse_B.dtype

  def grads(items_CxD):
    scores_BxC = jnp.dot(query_BxD, items_CxD.T).astype(acc_dtype)
    gp_BxC = g_B[:, None].astype(acc_dtype) * jnp.exp(scores_BxC - lse_B[:, None])
    gp_BxC = gp_BxC.astype(query_BxD.dtype)
    # d items = gp^T q, computed as (q^T gp)^T: the barrier keeps XLA from folding the
    # transpose back into a transposed-LHS dot, which XLA:CPU runs ~4x slower; the
    # [D,C] -> [C,D] transpose itself is cheap. Without it the W2 full softmax (B 1,024,
    # N 100k, chunks of 4,096) ran 12% slower through the launcher (docs/RESULTS.md),
    # although at B 256 and N 20k the compiled program is the same.
    ditems_DxC = jax.lax.optimization_barrier(jnp.dot(query_BxD.T, gp_BxC))
    return jnp.dot(gp_BxC, items_CxD), ditems_DxC.T

  def body(i, carry):
    dq_BxD, ditems_NxD = carry
    start = i * chunk
    dq_c, ditems_CxD = grads(jax.lax.dynamic_slice_in_dim(items_NxD, start, chunk, 0))
    ditems_NxD = jax.lax.dynamic_update_slice_in_dim(
        ditems_NxD, ditems_CxD.astype(items_NxD.dtype), start, 0
    )
    return dq_BxD + dq_c, ditems_NxD

  carry = (jnp.zeros(query_BxD.shape, query_BxD.dtype), jnp.zeros_like(items_NxD))
  dq_BxD, ditems_NxD = jax.lax.fori_loop(0, num_full, body, carry)
  if tail:
    start = num_full * chunk
    dq_c, ditems_TxD = grads(items_NxD[start:])
    dq_BxD = dq_BxD + dq_c
    ditems_NxD = jax.lax.dynamic_update_slice_in_dim(
        ditems_NxD, ditems_TxD.astype(items_NxD.dtype), start, 0
    )
  return dq_BxD.astype(query_BxD.dtype), ditems_NxD


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def logsumexp(query_BxD: Array, items_NxD: Array, chunk_size: int) -> Array:
  """lse_b = log sum_j exp(query_b . items_j) over all N items -> [B], differentiable.

  Equals jax.nn.logsumexp(query_BxD @ items_NxD.T, axis=1), but neither pass holds a
  [B, N] array: the forward is `logsumexp_forward`, the custom VJP `logsumexp_backward`
  (scores recomputed chunk by chunk). chunk_size is static; N need not be a multiple.
  """
  return logsumexp_forward(query_BxD, items_NxD, chunk_size)


def _logsumexp_fwd(query_BxD, items_NxD, chunk_size):
  lse_B = logsumexp_forward(query_BxD, items_NxD, chunk_size)
  return lse_B, (query_BxD, items_NxD, lse_B)


def _logsumexp_bwd(chunk_size, residuals, g_B):
  query_BxD, items_NxD, lse_B = residuals
  return logsumexp_backward(query_BxD, items_NxD, lse_B, g_B, chunk_size)


logsumexp.defvjp(_logsumexp_fwd, _logsumexp_bwd)


# ---------------------------------------------------------------------------------------
# Top-k.
# ---------------------------------------------------------------------------------------


def chunk_candidates(scores_BxC: Array, k: int, group: int) -> tuple[Array, Array]:
  """A candidate subset of each row that provably contains the row's top-k.

  Two-stage exact selection: split the row into groups of `group` columns, keep the
  k groups with the largest maxima, return all their elements (k*group of them).
  Proof of exactness: if x is a top-k element in a group g outside the k best groups,
  those k groups each hold an element >= max(g) >= x, so x was not in the top-k.
  It replaces one `top_k` over C columns by a max-reduction plus a `top_k` over
  C/group maxima, much cheaper on CPU; small chunks just return every column.
  Returns (values_BxM, local_index_BxM).
  """
  batch, width = scores_BxC.shape
  all_cols = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), (batch, width))
  if group <= 1 or width < 4 * k * group:
    return scores_BxC, all_cols
  num_groups = -(-width // group)
  pad = num_groups * group - width
  if pad:
    scores_BxC = jnp.pad(scores_BxC, ((0, 0), (0, pad)), constant_values=_NEG_INF)
  blocks = scores_BxC.reshape(batch, num_groups, group)
  _, best = jax.lax.top_k(blocks.max(axis=-1), k)  # [B, k]
  cand = jnp.take_along_axis(blocks, best[:, :, None], axis=1)  # [B, k, g]
  cols = best[:, :, None] * group + jnp.arange(group, dtype=jnp.int32)  # [B, k, g]
  return cand.reshape(batch, k * group), cols.reshape(batch, k * group)


@functools.partial(jax.jit, static_argnames=("k", "chunk_size", "group"))
def topk_batch(query_BxD, items_NxD, ex_rows_E, ex_cols_E, *, k, chunk_size, group):
  """Top-k of one query batch over all items, chunked, with excluded pairs masked.

  scores_bj = query_b . item_j (float32, Precision.HIGHEST), -inf at the excluded pairs;
  items are scanned in chunks with a running top-k merge (`lax.top_k` over [running k,
  `chunk_candidates` of the chunk]). Returns (values_BxK, ids_BxK), best first; slots
  beyond the rankable items hold -inf and id -1.

  ex_rows_E / ex_cols_E: excluded (row within batch, item id) pairs; padding rows
  equal B (out of bounds) and are dropped by the scatter. Item ids outside [0, N) are
  dropped too (`jaxrec.sharding` passes shard-local ids).
  """
  batch = query_BxD.shape[0]
  num_items = items_NxD.shape[0]
  chunk = min(chunk_size, num_items)
  num_full = num_items // chunk
  rem = num_items - num_full * chunk

  def merge(carry, start, items_CxD):
    run_vals, run_ids = carry
    width = items_CxD.shape[0]
    scores = jnp.dot(query_BxD, items_CxD.T, precision=_HIGHEST)  # [B, C]
    local = ex_cols_E - start
    local = jnp.where((local >= 0) & (local < width), local, width)  # OOB -> drop
    scores = scores.at[ex_rows_E, local].set(_NEG_INF, mode="drop")
    cand_vals, cand_cols = chunk_candidates(scores, k, group)
    vals = jnp.concatenate([run_vals, cand_vals], axis=1)
    ids = jnp.concatenate([run_ids, cand_cols + start], axis=1)
    top_vals, pos = jax.lax.top_k(vals, k)
    return top_vals, jnp.take_along_axis(ids, pos, axis=1)

  carry = (jnp.full((batch, k), _NEG_INF, jnp.float32), jnp.full((batch, k), -1, jnp.int32))

  def body(carry, i):
    start = i * chunk
    items_CxD = jax.lax.dynamic_slice_in_dim(items_NxD, start, chunk, axis=0)
    return merge(carry, start, items_CxD), None

  carry, _ = jax.lax.scan(body, carry, jnp.arange(num_full, dtype=jnp.int32))
  if rem:
    start = num_full * chunk
    carry = merge(carry, jnp.int32(start), items_NxD[start:])
  vals, ids = carry
  # Fewer than k rankable items: the -inf slots are not recommendations.
  ids = jnp.where(jnp.isneginf(vals), -1, ids)
  return vals, ids


def split_exclusions(
    rows: np.ndarray, cols: np.ndarray, num_queries: int, batch: int
) -> list[tuple[np.ndarray, np.ndarray]]:
  """Per query batch: (row within batch, col) int32 arrays, padded to one common length.

  Batch b holds the pairs with b*batch <= row < (b+1)*batch; the padded length is the
  longest batch's count rounded up to a power of two (so repeated calls rarely
  recompile `topk_batch`), padding rows equal `batch` (dropped by its scatter).
  """
  num_batches = -(-num_queries // batch)
  order = np.argsort(rows, kind="stable")
  rows, cols = rows[order], cols[order]
  bounds = np.searchsorted(rows, np.arange(num_batches + 1) * batch)
  sizes = np.diff(bounds)
  # Round the padded length up to a power of two so repeated calls rarely recompile.
  longest = int(sizes.max()) if sizes.size else 0
  width = 1 << max(0, (longest - 1).bit_length()) if longest else 1
  out = []
  for b in range(num_batches):
    lo, hi = bounds[b], bounds[b + 1]
    r = np.full(width, batch, np.int32)  # pad row = batch -> dropped
    c = np.zeros(width, np.int32)
    r[: hi - lo] = rows[lo:hi] - b * batch
    c[: hi - lo] = cols[lo:hi]
    out.append((r, c))
  return out

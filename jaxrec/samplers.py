"""Negative samplers for sampled-softmax training: each returns `Negatives(ids, log_q)`.

`REGISTRY` maps a sampler's name (config `sampler.name`) to a `Sampler` record: its draw
function with the one calling convention `draw(key, inputs, spec) -> Negatives` and what
the step, the config validation, the gradient diagnostic and `--help` need to know about
it. Adding a sampler is one draw function, one `REGISTRY` entry and its test
(tests/test_samplers.py runs the sampler contract over every entry).

`log_q` is the log probability that ONE draw returns that id. `losses.sampled_softmax`
subtracts log(K * q) (the log expected count of the id among the K draws) from each
negative logit, as `tf.nn.sampled_softmax_loss` does (Bengio & Senecal 2008; Jean et al.
2015). With that correction

    sum_k exp(s_k - log(K q_k))  is an unbiased estimate of  sum_j exp(s_j) = Z,

for any proposal q with q_j > 0 wherever exp(s_j) > 0, which is what makes the sampled loss
approach the full softmax as K grows.

Shared samplers return `[K]` negatives used by every row of the batch; per-example
samplers return `[B,K]`. None of them removes the row's
positive: a sampled negative equal to the positive is an "accidental hit" that
`sampled_softmax(..., remove_accidental_hits=True)` masks (it compares neg_ids with pos_ids).

All samplers are pure and jit-able with `num_samples`, `pool_size`, `chunk_size`,
`num_items` and `num_uniform` static (python ints). Random draws use float32 uniforms (23
random mantissa bits); the inverse-CDF samplers therefore use two-level tables (blocks of
~sqrt(N) entries) so that an item's probability is resolved to ~sqrt(N) * 2^-23 relative
error instead of N * 2^-23. ids are int32, log_q float32.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class Negatives(NamedTuple):
  """Sampled negatives: ids [K] or [B,K] int32 and log_q of the same shape (float32)."""

  ids: Array
  log_q: Array


# ---------------------------------------------------------------------------------------
# Validation helpers.
# ---------------------------------------------------------------------------------------


def check_int(name: str, value, minimum: int) -> int:
  """`value` as a python int >= `minimum` (a static size under jit), else ValueError."""
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
    raise ValueError(
        f"{name} must be a python int >= {minimum} (static under jit), " f"got {value!r}"
    )
  return int(value)


def _check_temperature(temperature) -> None:
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature!r}")


def _check_embeddings(query_BxD, items_NxD) -> tuple[int, int, int]:
  if jnp.ndim(query_BxD) != 2 or jnp.ndim(items_NxD) != 2:
    raise ValueError(
        f"query_BxD and items_NxD must be 2-D, got shapes "
        f"{jnp.shape(query_BxD)} and {jnp.shape(items_NxD)}"
    )
  (batch, dim), (num_items, dim_items) = jnp.shape(query_BxD), jnp.shape(items_NxD)
  if dim != dim_items:
    raise ValueError(f"query_BxD has dim {dim} but items_NxD has dim {dim_items}")
  if num_items < 1:
    raise ValueError("items_NxD must have at least one row")
  return batch, dim, num_items


_HIGHEST = jax.lax.Precision.HIGHEST


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


# ---------------------------------------------------------------------------------------
# Inverse-CDF machinery (shared by unigram, hard_exact, hard_pool).
# ---------------------------------------------------------------------------------------


def argsort_bounded(keys_M: Array, bound: int) -> Array:
  """Stable argsort of int keys in [0, bound) -> int32 [M], as jnp.argsort(keys,
  stable=True), by LSD radix passes of plain uint32 sorts.

  XLA:CPU sorts one uint32 array ~4.5x faster than the (key, index) pairs of an argsort
  (16,640 keys: 0.64 vs 3.0 ms on the 2-core box). Each pass sorts (digit << b) | i, where
  the low b = bits(M - 1) bits hold the position i in the current order, so the low bits
  of the sorted words are the stable order by that digit; digits of 32 - b key bits, least
  significant first: one pass where a key and a position fit in 32 bits (16,640 keys
  below 2^17), two for keys below 2^34 - 2b. Falls back to jnp.argsort where M > 2^24.
  """
  m = keys_M.shape[0]
  pos_bits = max(1, (m - 1).bit_length())
  key_bits = max(1, (int(bound) - 1).bit_length())
  digit_bits = 32 - pos_bits
  if digit_bits < 8:
    return jnp.argsort(keys_M, stable=True).astype(jnp.int32)
  keys_u = keys_M.astype(jnp.uint32)
  pos_u = jnp.arange(m, dtype=jnp.uint32)
  order_M = None
  for shift in range(0, key_bits, digit_bits):
    current = keys_u if order_M is None else keys_u[order_M]
    digit = (current >> shift) & jnp.uint32((1 << digit_bits) - 1)
    words = jnp.sort((digit << pos_bits) | pos_u)
    perm_M = (words & jnp.uint32((1 << pos_bits) - 1)).astype(jnp.int32)
    order_M = perm_M if order_M is None else order_M[perm_M]
  return order_M


def _last_positive(w_xS: Array) -> Array:
  """int32 index of the last positive-weight entry along the last axis (the clamp for an
  inverse-CDF target that rounds up to the total)."""
  size = w_xS.shape[-1]
  return (size - 1 - jnp.argmax(jnp.flip(w_xS > 0, axis=-1), axis=-1)).astype(jnp.int32)


def _cdf_and_last(w_xS: Array) -> tuple[Array, Array]:
  """Cumulative weights along the last axis, made exactly flat over zero weights.

  cummax() of the cumsum restricted to positive-weight entries guarantees cum[j] ==
  cum[j-1] bit-for-bit whenever w[j] == 0 (a parallel-prefix cumsum need not), so a
  `searchsorted(side="right")` can never land on a zero-weight entry. Also returns the
  index of the last positive-weight entry (the clamp for a target that rounds up to the
  total).
  """
  cum = jnp.cumsum(w_xS, axis=-1)
  cum = jax.lax.cummax(jnp.where(w_xS > 0, cum, 0.0), axis=w_xS.ndim - 1)
  return cum, _last_positive(w_xS)


def _searchsorted_rows(cum_RxS: Array, target_RxK: Array, method: str = "compare_all") -> Array:
  """Row-wise searchsorted(side='right'): first j with cum[r, j] > target[r, k].

  "compare_all" (O(S) per target, cheap to compile) suits short rows (hard_exact's choice
  of a chunk); "scan" (binary search) long ones.
  """
  return jax.vmap(lambda c, t: jnp.searchsorted(c, t, side="right", method=method))(
      cum_RxS, target_RxK
  )


def _draw_rows(u_RxK: Array, w_RxS: Array, method: str = "compare_all") -> Array:
  """Index j with probability w[r, j] / sum_j w[r, j], from uniforms u in [0, 1)."""
  cum_RxS, last_R = _cdf_and_last(w_RxS)
  idx = _searchsorted_rows(cum_RxS, u_RxK * cum_RxS[:, -1:], method)
  return jnp.minimum(idx, last_R[:, None]).astype(jnp.int32)


def _block_size(n: int) -> int:
  return max(1, math.isqrt(n - 1) + 1)  # ceil(sqrt(n))


def _draw_one_blocked(u1_R: Array, u2_R: Array, w_RxS: Array) -> Array:
  """One index j per row with probability w[r, j] / sum_j w[r, j], as two `_draw_rows`
  over b = ceil(sqrt(S)) entries: a block of b by its sum (from u1), then an entry inside
  it (from u2). The same law as `_draw_rows` over the whole row, with O(sqrt S)-wide
  cumulative passes and searches instead of S-wide ones (the kernel's draw inside a leaf:
  ~13 ms of a benchmark step at L = 128 before; docs/RESULTS.md)."""
  rows, size = w_RxS.shape
  b = _block_size(size)
  w_RxCxb = jnp.pad(w_RxS, ((0, 0), (0, -(-size // b) * b - size))).reshape(rows, -1, b)
  c_R = _draw_rows(u1_R[:, None], jnp.sum(w_RxCxb, axis=2))[:, 0]
  inner_Rxb = jnp.take_along_axis(w_RxCxb, c_R[:, None, None], axis=1)[:, 0]
  return c_R * b + _draw_rows(u2_R[:, None], inner_Rxb)[:, 0]


def _draw_rows_blocked_cdf(u_RxK: Array, w_RxS: Array) -> Array:
  """`_draw_rows`'s law for rows whose zero weights, if any, are a suffix (the kernel's
  level masses: only the trailing empty nodes weigh 0), with no cumulative scan: the
  row is cut into c blocks of b = ceil(sqrt(S)); the CDF inside each block and the
  blocks' starting offsets are two matmuls with triangles of ones ([R,c,b] x [b,b] and
  [R,c] x [c,c]), then a target's block is the count of block offsets <= it and its entry
  the count of that block's cumulative weights <= it (O(c + b) per draw). XLA:CPU runs a
  cumulative sum as a reduce-window: ~2 ms a step for B = 256 rows of S = 2,048, with the
  binary search after it, in a `jax.profiler` trace of the 1M kernel step."""
  rows, size = w_RxS.shape
  b = _block_size(size)
  c = -(-size // b)
  w_RxCxb = jnp.pad(w_RxS, ((0, 0), (0, c * b - size))).reshape(rows, c, b)
  # float32 products (HIGHEST: no TF32 on a GPU), or the CDF would drift ~1e-3 from the
  # weights that log_q is computed from
  tri_bxb, tri_cxc = np.triu(np.ones((b, b), np.float32)), np.triu(np.ones((c, c), np.float32), 1)
  within_RxCxb = jnp.dot(w_RxCxb, jnp.asarray(tri_bxb), precision=_HIGHEST)
  total_RxC = within_RxCxb[:, :, -1]
  start_RxC = jnp.dot(total_RxC, jnp.asarray(tri_cxc), precision=_HIGHEST)
  target_RxK = u_RxK * (start_RxC[:, -1:] + total_RxC[:, -1:])
  block_RxK = jnp.sum(start_RxC[:, None, :] <= target_RxK[:, :, None], axis=2) - 1
  block_RxK = jnp.clip(block_RxK, 0, c - 1)
  cum_RxKxb = start_RxC[:, :, None] + within_RxCxb
  cum_RxKxb = jnp.take_along_axis(cum_RxKxb, block_RxK[:, :, None], axis=1)
  j_RxK = block_RxK * b + jnp.sum(cum_RxKxb <= target_RxK[:, :, None], axis=2)
  return jnp.minimum(j_RxK, _last_positive(w_RxS)[:, None]).astype(jnp.int32)


def _search_in_block(cum_flat: Array, offset: Array, target: Array, size: int) -> Array:
  """First j in [0, size) with cum_flat[offset + j] > target (size if none).

  Binary search over one block of a flattened [.., size] cumulative table: O(log size)
  gathers per target and no per-draw copy of the block.
  """
  lo = jnp.zeros(target.shape, jnp.int32)
  hi = jnp.full(target.shape, size, jnp.int32)

  def body(_, lo_hi):
    lo, hi = lo_hi
    mid = (lo + hi) // 2
    right = cum_flat[offset + jnp.minimum(mid, size - 1)] <= target
    active = lo < hi
    return jnp.where(active & right, mid + 1, lo), jnp.where(active & ~right, mid, hi)

  lo, _ = jax.lax.fori_loop(0, size.bit_length(), body, (lo, hi))
  return lo


# Block width of the few-draws path of `draw_from_logits` (benchmarks/hard_exact_draws.py
# sets it to compare the two paths).
SMALL_BLOCK = 32


def draw_from_logits_lse(key: Array, logits_BxN: Array, num_samples: int) -> tuple[Array, Array]:
  """`draw_from_logits` -> (positions [B,K], lse_B): also the row log-sum-exp that the
  draw computes anyway (from its blocks' log-sum-exps), so a caller needing log q = l - lse
  makes no second exp pass over the row.

  K i.i.d. draws per row from softmax(logits_BxN), exactly.

  Two-level inverse CDF: the row is cut into C blocks of S entries; a block c is drawn
  with probability exp(lse_c - lse) and an entry j inside it with exp(l_j - lse_c), whose
  product is exp(l_j - lse) = softmax(l)_j.
  - Many draws (K S >= N): S = ceil(sqrt(N)) and one cumulative table over the whole row
    (O(B N) work, O(log N) per draw).
  - Few draws (K S < N): S = 32; only the K chosen blocks are gathered and searched, so
    beyond the row's block log-sum-exps the work is O(B K S), not a cumulative sum over
    all N entries (2-5x faster on a 2-core CPU for K <= 64 and N ~ 10^4-10^5:
    `python -m benchmarks.hard_exact_draws`).
  Both paths draw from the same distribution (tests); they consume the key differently.
  """
  batch, n = logits_BxN.shape
  few = num_samples * SMALL_BLOCK < n
  size = SMALL_BLOCK if few else _block_size(n)
  blocks = -(-n // size)
  padded = jnp.pad(logits_BxN, ((0, 0), (0, blocks * size - n)), constant_values=-jnp.inf)
  logits_BxCxS = padded.reshape(batch, blocks, size)
  lse_BxC = jax.nn.logsumexp(logits_BxCxS, axis=2)
  lse_B = jax.nn.logsumexp(lse_BxC, axis=1)
  u_2xBxK = jax.random.uniform(key, (2, batch, num_samples))  # one RNG call: cheaper to jit
  block_BxK = _draw_rows(u_2xBxK[0], jnp.exp(lse_BxC - lse_B[:, None]), "scan")
  if few:
    rows_B1 = jnp.arange(batch)[:, None]
    sub_BxKxS = logits_BxCxS[rows_B1, block_BxK]
    w_BKxS = jnp.exp(sub_BxKxS - lse_BxC[rows_B1, block_BxK][:, :, None]).reshape(-1, size)
    j = _draw_rows(u_2xBxK[1].reshape(-1, 1), w_BKxS).reshape(batch, num_samples)
    return block_BxK * size + j, lse_B
  cum_BxCxS, last_BxC = _cdf_and_last(jnp.exp(logits_BxCxS - lse_BxC[:, :, None]))
  offset_BxK = (jnp.arange(batch, dtype=jnp.int32)[:, None] * blocks + block_BxK) * size
  cum_flat = cum_BxCxS.reshape(-1)
  target_BxK = u_2xBxK[1] * cum_flat[offset_BxK + size - 1]
  j = _search_in_block(cum_flat, offset_BxK, target_BxK, size)
  j = jnp.minimum(j, jnp.take_along_axis(last_BxC, block_BxK, axis=1))
  return block_BxK * size + j, lse_B


def draw_from_logits(key: Array, logits_BxN: Array, num_samples: int) -> Array:
  """K i.i.d. draws per row from softmax(logits_BxN) -> positions [B,K], exactly
  (`draw_from_logits_lse` without the row log-sum-exp)."""
  return draw_from_logits_lse(key, logits_BxN, num_samples)[0]


# ---------------------------------------------------------------------------------------
# Shared samplers over the catalogue.
# ---------------------------------------------------------------------------------------


def uniform(key: Array, num_items: int, num_samples: int, *, replace: bool = True) -> Negatives:
  """K ids uniform over the catalogue [0, N) -> Negatives [K], log_q = -log N.

  replace=True: i.i.d. draws, q_j = 1/N exactly.
  replace=False: K distinct ids (a uniformly random K-subset, via jax.random.choice, which
  costs a permutation of N). Each id is then included with probability K/N; by symmetry
  every one of the K slots is marginally uniform, so the per-draw probability is still
  1/N and log(K q) = log(K/N) is exactly the log inclusion probability. With K = N every
  item appears once and log(K q) = 0: the sampled softmax equals the full softmax.
  Raises ValueError if K > N without replacement.
  """
  num_items = check_int("num_items", num_items, 1)
  num_samples = check_int("num_samples", num_samples, 1)
  if replace:
    ids = jax.random.randint(key, (num_samples,), 0, num_items, dtype=jnp.int32)
  else:
    if num_samples > num_items:
      raise ValueError(
          f"num_samples={num_samples} > num_items={num_items}: cannot draw "
          "that many distinct ids without replacement (use replace=True)"
      )
    ids = jax.random.choice(key, num_items, (num_samples,), replace=False).astype(jnp.int32)
  return Negatives(ids, jnp.full((num_samples,), -math.log(num_items), jnp.float32))


class UnigramTable(NamedTuple):
  """Two-level inverse-CDF table for q_j proportional to w_j (see `unigram_table`)."""

  block_cum_C: Array  # [C] cumulative block totals (flat over empty blocks)
  last_block: Array  # () index of the last non-empty block
  cum_CxS: Array  # [C,S] cumulative weights inside each block
  last_in_block_C: Array  # [C] index of the last positive weight in each block
  log_q_N: Array  # [N] log q_j (-inf for weight 0)


# The unigram sampler's pseudo-count: q_j proportional to (count_j + 1)^alpha.
UNIGRAM_PSEUDO_COUNT = 1.0


def unigram_weights(counts: Array, alpha=1.0, pseudo_count=UNIGRAM_PSEUDO_COUNT) -> Array:
  """w_j = (counts_j + pseudo_count) ** alpha; with pseudo_count = 0, w_j = 0 for a zero
  count unless alpha == 0 (then 1).

  alpha = 0 is the uniform distribution over the whole catalogue, alpha = 1 popularity,
  alpha = 0.75 the word2vec choice (Mikolov et al. 2013). The default pseudo-count 1 keeps
  every item in the support (see `unigram`); pseudo_count = 0 is the raw empirical
  frequency (what i.i.d. training positives follow).
  """
  counts = jnp.asarray(counts, jnp.float32)
  alpha = jnp.asarray(alpha, jnp.float32)
  smoothed = counts + jnp.asarray(pseudo_count, jnp.float32)
  safe = jnp.where(smoothed > 0, smoothed, 1.0)
  return jnp.where(smoothed > 0, safe**alpha, jnp.where(alpha == 0, 1.0, 0.0))


def unigram_table(counts: Array, alpha=1.0, *, pseudo_count=UNIGRAM_PSEUDO_COUNT) -> UnigramTable:
  """Builds the O(N) table of `unigram` once (e.g. outside the train step)."""
  if jnp.ndim(counts) != 1 or jnp.shape(counts)[0] < 1:
    raise ValueError(f"counts must be a non-empty 1-D array, got shape {jnp.shape(counts)}")
  if isinstance(alpha, (int, float)) and not alpha >= 0:
    raise ValueError(f"alpha must be >= 0, got {alpha!r}")
  if not (isinstance(pseudo_count, (int, float)) and pseudo_count >= 0):
    raise ValueError(f"pseudo_count must be a number >= 0, got {pseudo_count!r}")
  if _is_concrete(counts):
    c = np.asarray(counts, np.float64)
    if np.any(c < 0) or not np.all(np.isfinite(c)):
      raise ValueError("counts must be finite and >= 0")
    if isinstance(alpha, (int, float)) and alpha > 0 and not np.any(c + pseudo_count > 0):
      raise ValueError(
          f"counts has no positive entry and pseudo_count is 0: q = counts**{alpha} is " "undefined"
      )
  w_N = unigram_weights(counts, alpha, pseudo_count)
  n = w_N.shape[0]
  size = _block_size(n)
  blocks = -(-n // size)
  w_CxS = jnp.pad(w_N, (0, blocks * size - n)).reshape(blocks, size)
  cum_CxS, last_in_block_C = _cdf_and_last(w_CxS)
  block_cum, last_block = _cdf_and_last(cum_CxS[:, -1])
  log_q_N = jnp.log(w_N) - jnp.log(jnp.sum(w_N))
  return UnigramTable(block_cum, last_block, cum_CxS, last_in_block_C, log_q_N)


def unigram_sample(key: Array, table: UnigramTable, num_samples: int) -> Negatives:
  """K i.i.d. draws from a prebuilt `UnigramTable` -> Negatives [K]; O(log N) per draw."""
  num_samples = check_int("num_samples", num_samples, 1)
  u_2xK = jax.random.uniform(key, (2, num_samples))
  block = jnp.searchsorted(table.block_cum_C, u_2xK[0] * table.block_cum_C[-1], side="right")
  block = jnp.minimum(block, table.last_block).astype(jnp.int32)
  size = table.cum_CxS.shape[1]
  cum_flat = table.cum_CxS.reshape(-1)
  offset = block * size
  j = _search_in_block(cum_flat, offset, u_2xK[1] * cum_flat[offset + size - 1], size)
  j = jnp.minimum(j, table.last_in_block_C[block])
  ids = (offset + j).astype(jnp.int32)
  return Negatives(ids, table.log_q_N[ids])


def unigram(
    key: Array,
    counts: Array,
    num_samples: int,
    *,
    alpha=1.0,
    pseudo_count=UNIGRAM_PSEUDO_COUNT,
) -> Negatives:
  """K i.i.d. ids with q_j = (c_j + 1)^alpha / sum_i (c_i + 1)^alpha -> Negatives [K].

  Smoothed counts (pseudo_count, default 1): the log-Q estimate
  sum_k e^{s_k} / (K q_k) of Z = sum_j e^{s_j} is unbiased only if q_j > 0 for every item,
  and the raw counts^alpha give items without training interactions q = 0 (e.g. 781 of
  ml-latest-small's items in its language split), so their logits would never enter the
  partition function. Adding one to every count (Laplace's rule: the posterior mean of the
  item distribution under a uniform Dirichlet prior when alpha = 1) keeps the shape where
  counts are large (a factor (1 + 1/c)^alpha), gives an unseen item the weight a count-1
  item had, keeps alpha = 0 uniform, and needs no new hyperparameter; a mixture with
  uniform would need its weight as one. pseudo_count = 0 is the unsmoothed sampler
  (zero-count items have log_q = -inf and are never drawn).

  Inverse CDF with a two-level table (blocks of ceil(sqrt(N)) items: a block by its total
  weight, then an item inside it; binary search at both levels), O(log N) per draw after
  an O(N) build; in float32 a flat CDF over all N items would blur an item's probability
  by ~N * 2^-24 relative, the two-level table by ~sqrt(N) * 2^-24. The table is rebuilt
  per call (O(N)); inside a train step prefer `unigram_table` once and `unigram_sample` per
  step. Reference: Mikolov et al. 2013 (alpha = 0.75).
  """
  return unigram_sample(key, unigram_table(counts, alpha, pseudo_count=pseudo_count), num_samples)


def log_uniform(key: Array, num_items: int, num_samples: int) -> Negatives:
  """Zipfian ids (0 most popular): P(k) = (log(k+2) - log(k+1)) / log(N+1) -> [K].

  As `tf.random.log_uniform_candidate_sampler` (unique=False): k = floor(exp(u log(N+1)))
  - 1 with u ~ U[0,1), since P(k+1 <= exp(u L) < k+2) = (log(k+2) - log(k+1)) / L. Ids
  must be sorted by decreasing popularity for this to approximate the data's unigram.
  float32 limits: u has 2^-23 resolution and exp() ~2^-24 relative error, so P(k) is
  exact to ~k * 2^-23 relative (e.g. < 1e-3 for k < 1e4).
  """
  num_items = check_int("num_items", num_items, 1)
  num_samples = check_int("num_samples", num_samples, 1)
  log_n1 = math.log1p(num_items)
  u = jax.random.uniform(key, (num_samples,))
  ids = jnp.floor(jnp.exp(u * log_n1)).astype(jnp.int32) - 1
  ids = jnp.clip(ids, 0, num_items - 1)
  k = ids.astype(jnp.float32)
  log_q = jnp.log(jnp.log1p(1.0 / (k + 1.0))) - math.log(log_n1)
  return Negatives(ids, log_q)


# ---------------------------------------------------------------------------------------
# Streaming frequency estimation (Yi et al. 2019) and in-batch / mixed negatives.
# ---------------------------------------------------------------------------------------


class FreqState(NamedTuple):
  """Yi et al. 2019 Algorithm 2/3 arrays, [num_hashes, H] float32 each.

  a: last step at which the bucket was hit (-1: never).
  b: running estimate of the steps between two occurrences of the bucket's item, i.e.
     1 / (its expected count per batch) (0: never hit).
  """

  a: Array
  b: Array


_GOLDEN = 0x9E3779B1
_WEYL = 0x7F4A7C15


def _hash_buckets(ids: Array, num_hashes: int, num_buckets: int) -> Array:
  """[num_hashes, *ids.shape] int32 buckets; fixed, deterministic hash functions.

  Hash 0 is id mod H: collision-free for the dense ids 0..N-1 when H >= N. Hash k >= 1 is
  a multiplicative (Knuth) hash with an odd multiplier and offset per k, finished with the
  murmur3 32-bit mixer, mod H. All arithmetic wraps mod 2^32 (uint32).
  """
  x = jnp.asarray(ids).astype(jnp.uint32)
  out = [(x % jnp.uint32(num_buckets)).astype(jnp.int32)]
  for k in range(1, num_hashes):
    mult = jnp.uint32(((_GOLDEN * (2 * k + 1)) % 2**32) | 1)
    add = jnp.uint32((_WEYL * k) % 2**32)
    h = x * mult + add
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    h = h ^ (h >> 16)
    out.append((h % jnp.uint32(num_buckets)).astype(jnp.int32))
  return jnp.stack(out)


def _row_counts(x_RxB: Array) -> Array:
  """[R,B] -> for each entry, how many entries of its row equal it (>= 1); O(B log B)."""
  sorted_RxB = jnp.sort(x_RxB, axis=1)
  count = jax.vmap(
      lambda s, v: jnp.searchsorted(s, v, side="right") - jnp.searchsorted(s, v, side="left")
  )
  return count(sorted_RxB, x_RxB)


def freq_init(num_buckets: int, num_hashes: int = 1) -> FreqState:
  """Empty estimator: a = -1 ("never hit"), b = 0 ("no gap estimate yet")."""
  num_buckets = check_int("num_buckets", num_buckets, 1)
  num_hashes = check_int("num_hashes", num_hashes, 1)
  shape = (num_hashes, num_buckets)
  return FreqState(jnp.full(shape, -1.0, jnp.float32), jnp.zeros(shape, jnp.float32))


def freq_update(state: FreqState, ids_B: Array, step, *, alpha) -> FreqState:
  """One step of Yi et al. 2019, Algorithm 2 (per hash function, Algorithm 3): once per
  *occurrence* y in the batch,

    b[h(y)] <- (1 - alpha) b[h(y)] + alpha * gap;   a[h(y)] <- t.

  b estimates the mean number of steps between two occurrences, 1 / lambda with lambda the
  expected count of the item per batch (the paper's p = |B| q in its Sec. 6.1), so
  p_hat = 1 / b is an expected count, > 1 for an item drawn several times per batch.

  The c occurrences of a bucket in one step (duplicates of an id, and ids that collide in
  the bucket) are simultaneous: the paper's sequential loop would give the first the gap
  t - a and the others 0, which depends on an arbitrary order and, read right after the
  step, weights the zeros most (for c = 22 every step and alpha = 0.05, p_hat ~ 40). We
  give each of the c occurrences the same share of the interval, gap = (t - a) / c, so
  the c updates compose in closed form (one scatter per bucket):

    b <- (1 - alpha)^c b + (1 - (1 - alpha)^c) (t - a) / c.

  The gaps still sum to the elapsed steps, so their mean per occurrence is
  steps / occurrences -> 1 / lambda; for c = 1 this is the paper's update, for an item
  seen c times in every step b = 1/c exactly. c is counted per bucket by sorting the
  batch's buckets (O(B log B) per step; the state is touched at the batch's buckets only).
  First hit of a bucket (b == 0): b <- (t - a) / c = (t + 1) / c (the item was absent for
  the steps 0..t-1); the literal recursion from b = 0 would give a warm-up bias of a factor
  1/alpha. Call once per step with increasing integer `step` (0-based); steps are stored
  in float32, exact up to 2^24. `alpha` in (0, 1] is the EMA rate per occurrence (paper:
  0.01 to 0.1).
  """
  if isinstance(alpha, (int, float)) and not 0 < alpha <= 1:
    raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
  num_hashes, num_buckets = state.a.shape
  ids_B = jnp.asarray(ids_B).reshape(-1)
  buckets_HxB = _hash_buckets(ids_B, num_hashes, num_buckets)
  rows_HxB = jnp.broadcast_to(jnp.arange(num_hashes)[:, None], buckets_HxB.shape)
  count_HxB = _row_counts(buckets_HxB).astype(jnp.float32)
  t = jnp.asarray(step, jnp.float32)
  a_old = state.a[rows_HxB, buckets_HxB]
  b_old = state.b[rows_HxB, buckets_HxB]
  gap = (t - a_old) / count_HxB
  keep = (1.0 - jnp.asarray(alpha, jnp.float32)) ** count_HxB
  b_new = jnp.where(b_old > 0, keep * b_old + (1.0 - keep) * gap, gap)
  # Every entry of a bucket writes the same values: the scatter is deterministic.
  a = state.a.at[rows_HxB, buckets_HxB].set(jnp.broadcast_to(t, a_old.shape))
  b = state.b.at[rows_HxB, buckets_HxB].set(b_new)
  return FreqState(a, b)


def freq_log_q(state: FreqState, ids: Array) -> Array:
  """log lambda_hat(id) = -log max_k b_k[h_k(id)]: log expected count of id per batch.

  Algorithm 3 of Yi et al.: collisions only shorten a bucket's gaps (inflate lambda), so
  the largest gap over the hash functions is the least contaminated estimate. An id with
  any never-hit bucket has certainly never been seen: lambda_hat = 0, log = -inf.
  """
  num_hashes, num_buckets = state.b.shape
  ids = jnp.asarray(ids)
  buckets = _hash_buckets(ids, num_hashes, num_buckets)
  rows = jnp.arange(num_hashes).reshape((num_hashes,) + (1,) * ids.ndim)
  b = state.b[rows, buckets]
  b = jnp.where(b > 0, b, jnp.inf)
  return -jnp.log(jnp.max(b, axis=0))


def in_batch_log_q(freq_state: FreqState, ids: Array, batch_size: int) -> Array:
  """log q_j = log lambda_hat_j - log B: the per-draw probability of j when the negatives
  are (a prefix of) a batch of B i.i.d. positives, lambda_hat_j its expected count per
  batch (`freq_log_q`). For K of the batch's positives, log(K q_j) = log(lambda_hat_j K / B),
  the expected count of j among them; with K = B it is Yi et al.'s log p_j (eq. 3)."""
  return freq_log_q(freq_state, ids) - math.log(batch_size)


def in_batch(
    pos_ids_B: Array, freq_state: FreqState, num_negatives: Optional[int] = None
) -> Negatives:
  """The batch's positives as shared negatives [K], with Yi et al.'s logQ correction.

  Yi et al. 2019 (eq. 3) correct each in-batch logit by s_ij - log(p_j), p_j the expected
  count of item j in a batch of B (Sec. 6.1: p = |B| q; `freq_update` estimates it). With
  K = num_negatives <= B (default B) the negatives are the first K positives of the batch
  (a uniformly random K of them when the batch is i.i.d. pairs), so j's expected count
  among them is p_j K / B. `sampled_softmax` subtracts log(K q), so we return
  log_q = log(p_j) - log(B) (`in_batch_log_q`), making log(K q) = log(p_j K / B). Call
  after `freq_update` with the whole batch (as the train step does); an id the estimator
  never saw gets log_q = -inf. Row i's own positive may be among the negatives:
  `sampled_softmax` masks it as an accidental hit.
  """
  ids = jnp.asarray(pos_ids_B).astype(jnp.int32)
  if ids.ndim != 1:
    raise ValueError(f"pos_ids_B must be 1-D, got shape {ids.shape}")
  batch = ids.shape[0]
  k = batch if num_negatives is None else check_int("num_negatives", num_negatives, 1)
  if k > batch:
    raise ValueError(f"num_negatives={k} exceeds the batch size {batch}")
  ids = ids[:k]
  return Negatives(ids, in_batch_log_q(freq_state, ids, batch))


def mixed_log_q(
    freq_state: FreqState,
    ids: Array,
    batch_size: int,
    num_batch: int,
    num_uniform: int,
    num_items: int,
) -> Array:
  """log q_j = log(E_j / K) for `mixed`'s K = num_batch + num_uniform negatives, where
  E_j = lambda_hat_j num_batch / B + num_uniform / N is j's expected count among them."""
  lam = jnp.exp(freq_log_q(freq_state, ids))
  expected = lam * (num_batch / batch_size) + num_uniform / num_items
  return jnp.log(expected) - math.log(num_batch + num_uniform)


def mixed(
    key: Array,
    pos_ids_B: Array,
    freq_state: FreqState,
    num_items: int,
    num_uniform: int,
    num_batch: Optional[int] = None,
) -> Negatives:
  """Mixed negative sampling (Yang et al., WWW 2020): K_b in-batch + B' uniform ids.

  K_b = num_batch <= B (default B) of the batch's positives (the first K_b, as in
  `in_batch`) and B' uniform ids form one multiset of K = K_b + B' negatives; the expected
  number of copies of item j in it is

    E_j = p_j K_b / B + B'/N,   p_j = expected count of j per batch (as in `in_batch`),

  and the logQ correction must use this mixture count for EVERY copy of j, whichever part
  drew it (sum over copies of exp(s_j)/E_j then has expectation exp(s_j)). We return
  log_q = log(E_j / K) (`mixed_log_q`) so that `sampled_softmax`'s log(K q) = log(E_j).
  Ids never seen by the estimator have p_j = 0 and E_j = B'/N (finite when B' > 0).
  """
  num_items = check_int("num_items", num_items, 1)
  num_uniform = check_int("num_uniform", num_uniform, 0)
  pos = jnp.asarray(pos_ids_B).astype(jnp.int32)
  if pos.ndim != 1:
    raise ValueError(f"pos_ids_B must be 1-D, got shape {pos.shape}")
  batch = pos.shape[0]
  k_b = batch if num_batch is None else check_int("num_batch", num_batch, 1)
  if k_b > batch:
    raise ValueError(f"num_batch={k_b} exceeds the batch size {batch}")
  extra = jax.random.randint(key, (num_uniform,), 0, num_items, dtype=jnp.int32)
  ids = jnp.concatenate([pos[:k_b], extra])
  return Negatives(ids, mixed_log_q(freq_state, ids, batch, k_b, num_uniform, num_items))


def with_uniform(key: Array, hard: Negatives, num_items: int, num_uniform: int) -> Negatives:
  """Stratified mixture: per-row hard negatives [B,K_h] plus K_u uniform ids -> [B,K].

  Each negative keeps the log q of the sampler that drew it. With K = K_h + K_u,
  `sampled_softmax` then estimates the partition function by

    sum_{j in hard} e^{s_j}/(K q_h(j)) + sum_{j in unif} e^{s_j}/(K/N)
      = (K_h/K) Z_hat_hard + (K_u/K) Z_hat_unif,

  a convex combination of two unbiased estimates of Z: unbiased (stratified importance
  sampling; Owen 2013, ch. 9). The uniform ids are shared by the batch (broadcast)."""
  num_items = check_int("num_items", num_items, 1)
  num_uniform = check_int("num_uniform", num_uniform, 1)
  if hard.ids.ndim != 2:
    raise ValueError(f"hard negatives must be [B,K_h], got shape {hard.ids.shape}")
  batch = hard.ids.shape[0]
  uni = uniform(key, num_items, num_uniform)
  ids = jnp.concatenate([hard.ids, jnp.broadcast_to(uni.ids, (batch, num_uniform))], axis=1)
  log_q = jnp.concatenate([hard.log_q, jnp.broadcast_to(uni.log_q, (batch, num_uniform))], axis=1)
  return Negatives(ids, log_q)


def simulate_frequency_estimation(
    key: Array,
    num_items: int,
    batch_size: int,
    num_buckets: int,
    steps: int,
    switch_step: int,
    alpha,
    num_hashes: int = 1,
) -> Array:
  """Yi et al. 2019 (Sec. 6.1) simulation: estimator error per step -> [steps].

  Items i in [0, M) are drawn (batch_size per step, i.i.d.) with q_i proportional to i^2
  before `switch_step` and to (M-1-i)^2 from then on. After each `freq_update` the error
  is the paper's rescaled L1 distance between the estimate p_hat_i = exp(freq_log_q) and
  the truth p_i = |B| q_i (the expected count of i per batch):
    err_t = sum_i |p_hat_i - p_i| / (2 |B|),
  the total variation between p_hat / |B| and q. Jit-able (lax.scan); alpha may be traced
  (vmap over alphas).
  """
  num_items = check_int("num_items", num_items, 2)
  batch_size = check_int("batch_size", batch_size, 1)
  steps = check_int("steps", steps, 1)
  i = jnp.arange(num_items, dtype=jnp.float32)
  q_before = i**2 / jnp.sum(i**2)
  q_after = q_before[::-1]
  p_before = batch_size * q_before
  p_after = p_before[::-1]
  cdf_before, last_before = _cdf_and_last(q_before)
  cdf_after, last_after = _cdf_and_last(q_after)
  all_ids = jnp.arange(num_items, dtype=jnp.int32)

  def step_fn(state, t):
    after = t >= switch_step
    cdf = jnp.where(after, cdf_after, cdf_before)
    last = jnp.where(after, last_after, last_before)
    u = jax.random.uniform(jax.random.fold_in(key, t), (batch_size,))
    ids = jnp.minimum(jnp.searchsorted(cdf, u * cdf[-1], side="right"), last)
    state = freq_update(state, ids, t, alpha=alpha)
    p_hat = jnp.exp(freq_log_q(state, all_ids))
    p = jnp.where(after, p_after, p_before)
    return state, jnp.sum(jnp.abs(p_hat - p)) / (2 * batch_size)

  _, err = jax.lax.scan(step_fn, freq_init(num_buckets, num_hashes), jnp.arange(steps))
  return err


# ---------------------------------------------------------------------------------------
# Per-example (score-dependent) samplers.
# ---------------------------------------------------------------------------------------


def _block_scores_fn(scaled_BxD: Array, items_NxD: Array, chunk: int):
  """c -> (scores [B,chunk] with -inf on overlap, global ids [chunk]) for item chunk c.

  The last chunk is shifted to end at N (no padded copy of the table); its entries that
  the previous chunk already covered are masked to -inf.
  """
  num_items = items_NxD.shape[0]

  def block(c):
    start = jnp.minimum(c * chunk, num_items - chunk)
    ids_S = start + jnp.arange(chunk, dtype=jnp.int32)
    rows_SxD = jax.lax.dynamic_slice_in_dim(items_NxD, start, chunk, 0)
    scores = jnp.dot(scaled_BxD, rows_SxD.T)
    return jnp.where((ids_S >= c * chunk)[None, :], scores, -jnp.inf), ids_S

  return block


def hard_exact(
    key: Array,
    query_BxD: Array,
    items_NxD: Array,
    num_samples: int,
    *,
    temperature=1.0,
    chunk_size: Optional[int] = None,
) -> Negatives:
  """K i.i.d. draws per row from q_bj = softmax_j(s_bj / T) over the catalogue -> [B,K].

  Exact, with replacement: log_q = s_bj/T - logsumexp_j(s_bj/T). With this q the
  corrected logits s/T - log(K q) all equal log(Z/K): the zero-variance proposal that the
  cheaper samplers approximate (Bengio & Senecal 2008; Blanc & Rendle 2018). (With replacement is
  used instead of Gumbel-top-k, which samples without replacement and whose per-draw
  probabilities are not q after the first draw.)

  chunk_size=None materializes the [B,N] scores and draws by two-level inverse CDF
  (`draw_from_logits_lse`: a block of ceil(sqrt N) items with probability exp(lse_c -
  lse), then an item inside it with exp(s_j/T - lse_c)); the row's lse comes from those
  block log-sum-exps (one exp pass over [B,N]).
  With chunk_size the items are streamed once in chunks (one matmul and one exp per chunk,
  the same two-level draw inside each): each draw is a weighted reservoir of one (Chao
  1982) over the chunks, and the running log-sum-exp gives log q at the end, so no [B,N]
  array exists: memory O(B*chunk + B*K).
  The row's positive can be drawn; `sampled_softmax` masks it as an accidental hit.
  """
  batch, _, num_items = _check_embeddings(query_BxD, items_NxD)
  num_samples = check_int("num_samples", num_samples, 1)
  _check_temperature(temperature)
  scaled_BxD = query_BxD / jnp.asarray(temperature, query_BxD.dtype)
  if chunk_size is None:
    scores_BxN = jnp.dot(scaled_BxD, items_NxD.T)
    ids, lse_B = draw_from_logits_lse(key, scores_BxN, num_samples)  # one exp pass
  else:
    chunk = min(check_int("chunk_size", chunk_size, 1), num_items)
    num_chunks = -(-num_items // chunk)
    block = _block_scores_fn(scaled_BxD, items_NxD, chunk)

    def body(carry, c):
      # Each of the K slots of a row keeps one item; chunk c replaces it, with probability
      # Z_c / Z_{<=c} (Z: the mass exp(s/T) of the chunk, of the chunks so far), by a draw
      # from within the chunk. By induction a slot holds j with probability
      # exp(s_j/T) / Z_{<=c}: after the last chunk, softmax(s/T), the K slots independent.
      ids_BxK, lse_B = carry
      scores_BxS, ids_S = block(c)
      k_item, k_keep = jax.random.split(jax.random.fold_in(key, c))
      if num_samples * SMALL_BLOCK < chunk:  # few draws: only the chosen blocks searched
        j_BxK, chunk_lse_B = draw_from_logits_lse(k_item, scores_BxS, num_samples)
      else:  # many: one cumulative table over the chunk (faster here than sqrt blocks)
        chunk_lse_B = jax.nn.logsumexp(scores_BxS, axis=1)
        u_item = jax.random.uniform(k_item, (batch, num_samples))
        j_BxK = _draw_rows(u_item, jnp.exp(scores_BxS - chunk_lse_B[:, None]), "scan")
      lse_B = jnp.logaddexp(lse_B, chunk_lse_B)
      u_BxK = jax.random.uniform(k_keep, (batch, num_samples))
      take = u_BxK < jnp.exp(chunk_lse_B - lse_B)[:, None]
      return (jnp.where(take, ids_S[j_BxK], ids_BxK), lse_B), None

    init = (
        jnp.zeros((batch, num_samples), jnp.int32),
        jnp.full((batch,), -jnp.inf, scaled_BxD.dtype),
    )
    (ids, lse_B), _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
  ids = ids.astype(jnp.int32)
  scores_BxK = jnp.einsum("bd,bkd->bk", scaled_BxD, items_NxD[ids])
  return Negatives(ids, scores_BxK - lse_B[:, None])


def hard_pool(
    key: Array,
    query_BxD: Array,
    items_NxD: Array,
    num_samples: int,
    *,
    pool_size: int,
    temperature=1.0,
) -> Negatives:
  """Uniform pool of M ids (with replacement, shared by the batch), then K draws per row
  with replacement from softmax(s/T) inside the pool -> Negatives [B,K].

  Given the pool P (c_j = number of copies of j in it, Z_P = sum_{m in P} exp(s_m/T)), a
  draw returns j with probability exactly  c_j exp(s_j/T) / Z_P. That conditional q is NOT
  the right correction: with it the corrected sum_k exp(s_k/T)/(K q_k) equals Z_P, which
  estimates M/N of the full Z (a log(N/M) bias in every negative logit). We return

    log_q_j = log(M/N) + s_j/T - log Z_P = s_j/T - log Z_hat,   Z_hat = (N/M) Z_P,

  i.e. the conditional probability with c_j replaced by its expectation M/N, or the
  softmax over the catalogue with Z replaced by its unbiased pool estimate Z_hat. Then:
    * sum_k exp(s_k/T)/(K q_k) = Z_hat exactly, and E_P[Z_hat] = Z: the denominator
      estimate is unbiased (as with the true marginal q) and has no within-pool variance;
    * for any g, E[g(J)/q_J] = sum_j g(j): q is a valid importance weight (the property the
      tests check: mean over draws of 1{J=j}/q_J -> 1 for every j);
    * E_P[q_j] = the true marginal P(J = j) up to relative error ~ (N/M) exp(s_j/T)/Z
      (j's share of a typical pool's mass); the marginal itself has no closed form.
  As M -> infinity this becomes `hard_exact`. The row's positive can be drawn; the loss
  masks it as an accidental hit.
  """
  batch, _, num_items = _check_embeddings(query_BxD, items_NxD)
  num_samples = check_int("num_samples", num_samples, 1)
  pool_size = check_int("pool_size", pool_size, 1)
  _check_temperature(temperature)
  k_pool, k_draw = jax.random.split(key)
  pool_M = jax.random.randint(k_pool, (pool_size,), 0, num_items, dtype=jnp.int32)
  scaled_BxD = query_BxD / jnp.asarray(temperature, query_BxD.dtype)
  scores_BxM = jnp.dot(scaled_BxD, items_NxD[pool_M].T)
  pos_BxK = draw_from_logits(k_draw, scores_BxM, num_samples)
  log_z_hat_B = jax.nn.logsumexp(scores_BxM, axis=1) + math.log(num_items / pool_size)
  log_q = jnp.take_along_axis(scores_BxM, pos_BxK, axis=1) - log_z_hat_B[:, None]
  return Negatives(pool_M[pos_BxK], log_q)


def hard_topk(
    key: Array,
    query_BxD: Array,
    items_NxD: Array,
    num_samples: int,
    *,
    pool_size: int,
    pos_ids: Optional[Array] = None,
) -> Negatives:
  """Deterministic hard mining: the K highest-scoring distinct ids of a uniform pool of M.

  As TFRS `num_hard_negatives` / RecBole dynamic negatives. The pool (drawn with
  replacement, shared by the batch) is de-duplicated before the per-row top-K. Optional
  `pos_ids` [B] (an addition to the contract signature) excludes each row's positive;
  without it the positive, if in the pool, is likely among the top-K and is then masked by
  the loss as an accidental hit (leaving K-1 negatives). If fewer than K eligible distinct
  candidates exist, the remaining slots repeat ids with -inf score (duplicates/positive).

  There is no proper q: selection is deterministic given the pool. log_q = -log N (the
  uniform pool's per-draw probability) is returned only for shape compatibility; log(K q)
  is then the same constant for every negative, so the "correction" just up-weights all
  negatives by N/K relative to the positive. Train hard_topk without the logQ correction.
  """
  batch, _, num_items = _check_embeddings(query_BxD, items_NxD)
  num_samples = check_int("num_samples", num_samples, 1)
  pool_size = check_int("pool_size", pool_size, 1)
  if num_samples > pool_size:
    raise ValueError(f"num_samples={num_samples} must be <= pool_size={pool_size}")
  pool_M = jax.random.randint(key, (pool_size,), 0, num_items, dtype=jnp.int32)
  order = argsort_bounded(pool_M, num_items)
  sorted_ids = pool_M[order]
  dup_sorted = jnp.concatenate([jnp.zeros((1,), bool), sorted_ids[1:] == sorted_ids[:-1]])
  dup_M = jnp.zeros((pool_size,), bool).at[order].set(dup_sorted)
  scores_BxM = jnp.dot(query_BxD, items_NxD[pool_M].T)
  excluded_BxM = jnp.broadcast_to(dup_M[None, :], scores_BxM.shape)
  if pos_ids is not None:
    pos_ids = jnp.asarray(pos_ids)
    if pos_ids.shape != (batch,):
      raise ValueError(f"pos_ids must have shape [B]=({batch},), got {pos_ids.shape}")
    excluded_BxM = excluded_BxM | (pool_M[None, :] == pos_ids[:, None])
  scores_BxM = jnp.where(excluded_BxM, -jnp.inf, scores_BxM)
  _, pos_BxK = jax.lax.top_k(scores_BxM, num_samples)
  return Negatives(
      pool_M[pos_BxK], jnp.full((batch, num_samples), -math.log(num_items), jnp.float32)
  )


# ---------------------------------------------------------------------------------------
# Kernel-based adaptive sampling (Blanc & Rendle 2018).
# ---------------------------------------------------------------------------------------


class KernelTree(NamedTuple):
  """Blanc & Rendle (ICML 2018, Sec. 4) divide-and-conquer statistics for the quadratic
  kernel, over leaves of L consecutive items (leaf c holds ids [c L, min((c+1) L, N))).

  A complete binary tree of depth d = log2 P (P = the next power of two >= C = ceil(N / L);
  leaves c >= C are empty), one array per level: level l (0 = the root, d = the leaves)
  has 2^l nodes, and node i of level l has the children 2i and 2i + 1 of level l + 1.
  Each node stores the Gramian G_n = sum_{j under n} v_j v_j^T and the count c_n, so that
  its kernel mass for a query x is

    M_n(x) = sum_{j under n} (alpha (x . v_j)^2 + 1) = alpha x^T G_n x + c_n
           = alpha <packed(G_n), packed(w * x x^T)> + c_n,

  packed(.) the F = D (D + 1) / 2 entries of the upper triangle (`_triu`) and w = 1 on the
  diagonal, 2 off it. A level in an array of its own is a dot's operand as it stands (the
  shared level of `kernel_sample`) and is rebuilt by a dense sum (`kernel_tree_update`);
  as slices of one heap, both cost a copy of the level (~4 ms of a 1M step at D = 32, in a
  `jax.profiler` trace).
  Memory 2P (F + 1) floats (N=1M, L=128, D=64: 136 MB).
  """

  grams: tuple[Array, ...]  # level l: [2^l, F] packed Gramians
  counts: tuple[Array, ...]  # level l: [2^l] item counts (float32)


def quadratic_kernel(scores, alpha):
  """Blanc & Rendle's quadratic kernel from the scores s = x . v: K = alpha s^2 + 1."""
  return alpha * jnp.square(scores) + 1.0


def _triu(dim: int) -> tuple[np.ndarray, np.ndarray]:
  """Row and column indices of the upper triangle of a D x D matrix, F = D (D + 1) / 2."""
  return np.triu_indices(dim)


def _packed_outer(x_MxD: Array) -> Array:
  """[M, F]: the upper triangle of each row's outer product x x^T."""
  iu, ju = _triu(x_MxD.shape[-1])
  return x_MxD[:, iu] * x_MxD[:, ju]


def kernel_leaf_size(num_items: int, leaf_size: int) -> int:
  """The leaf size L actually used: min(leaf_size, N)."""
  return max(1, min(int(leaf_size), int(num_items)))


def kernel_tree(items_NxD: Array, leaf_size: int) -> KernelTree:
  """Builds the tree from scratch: O(N D^2) (leaf Gramians) + O(P D^2) (the levels)."""
  num_items, dim = items_NxD.shape
  leaf = kernel_leaf_size(num_items, leaf_size)
  num_leaves = -(-num_items // leaf)
  p = 1 << (num_leaves - 1).bit_length()
  x_CxLxD = jnp.pad(items_NxD, ((0, num_leaves * leaf - num_items), (0, 0))).reshape(
      num_leaves, leaf, dim
  )
  iu, ju = _triu(dim)
  gram_CxF = jnp.einsum("cld,cle->cde", x_CxLxD, x_CxLxD)[:, iu, ju]
  count_C = jnp.minimum(num_items - leaf * jnp.arange(num_leaves), leaf).astype(jnp.float32)
  grams = [jnp.zeros((p, iu.size), items_NxD.dtype).at[:num_leaves].set(gram_CxF)]
  counts = [jnp.zeros((p,), jnp.float32).at[:num_leaves].set(count_C)]
  while grams[0].shape[0] > 1:  # parents: sums of the child pairs
    grams.insert(0, grams[0][0::2] + grams[0][1::2])
    counts.insert(0, counts[0][0::2] + counts[0][1::2])
  return KernelTree(tuple(grams), tuple(counts))


def kernel_tree_update(
    tree: KernelTree, ids_M: Array, old_MxD: Array, new_MxD: Array, leaf_size: int
) -> KernelTree:
  """The tree after rows ids_M changed from old_MxD to new_MxD (duplicate ids hold the
  same rows and count once): G_n += v_new v_new^T - v_old v_old^T on the path of each
  row's leaf to the root (Blanc & Rendle, Fig. 1b), as scatter-adds on the levels with
  more nodes than rows; a level with at most M nodes is rebuilt instead from its child
  pairs (G_n = G_2n + G_2n+1: 2^l F dense adds rather than M F scattered ones). The rows
  are sorted by id first, so that the scatters walk each level in order. Cost
  O(M D^2 log(N / (L M)) + min(M, N / L) D^2 + M log M); the counts do not change."""
  depth = len(tree.grams) - 1
  f = tree.grams[-1].shape[1]
  order_M = argsort_bounded(ids_M, tree.counts[-1].shape[0] * leaf_size)  # ids < P L
  ids_M = ids_M[order_M]
  first_M = jnp.concatenate([jnp.ones((1,), bool), ids_M[1:] != ids_M[:-1]])
  old_MxD = jnp.where(first_M[:, None], old_MxD[order_M], 0.0)
  new_MxD = jnp.where(first_M[:, None], new_MxD[order_M], 0.0)
  delta_MxF = _packed_outer(new_MxD) - _packed_outer(old_MxD)
  leaf_M = ids_M // leaf_size  # (N < leaf_size: one leaf, ids // leaf_size = 0)
  grams = list(tree.grams)
  for level in range(depth, -1, -1):
    if level == depth or (1 << level) > ids_M.shape[0]:
      node_M = leaf_M >> (depth - level)
      grams[level] = grams[level].at[node_M].add(delta_MxF, indices_are_sorted=True)
    else:
      grams[level] = grams[level + 1].reshape(1 << level, 2, f).sum(axis=1)
  return tree._replace(grams=tuple(grams))


# The default number of shared top levels is T = log2 K + KERNEL_SHARED_EXTRA: level T's
# shared product costs 2^T F per row, a per-draw level 2 F per draw (K per row) as a gather
# of scattered rows, several times slower per float on CPU than the dense product
# (`python -m benchmarks.kernel_sampler_scaling --shared_extra=c` compares choices: at
# N = 1M, K = 64, D = 32, c = 4 / 5 / 6 ran the step in 85.9 / 85.0 / 84.0 ms, interleaved
# in one process (c = 7, the whole depth, ~95 in a probe); docs/RESULTS.md).
KERNEL_SHARED_EXTRA = 6
# Floats of leaf rows (C L D) or tree pairs (C 2F) that one block of C draws reads at once.
KERNEL_BLOCK_FLOATS = 1 << 22


def kernel_sample(
    key: Array,
    tree: KernelTree,
    query_BxD: Array,
    items_NxD: Array,
    num_samples: int,
    *,
    alpha,
    leaf_size: int,
    shared_levels: int | None = None,
) -> Negatives:
  """K i.i.d. draws per row from q(j | x_b) = K(x_b, v_j) / sum_i K(x_b, v_i), with the
  quadratic kernel K(x, v) = alpha (x . v)^2 + 1 -> Negatives [B,K], exactly.

  Blanc & Rendle (ICML 2018, Sec. 4.2, quadratic kernel Sec. 4.3): descend the tree from
  the root, going to child c with probability M_c(x) / (M_left(x) + M_right(x)) (masses
  from the stored Gramians, `KernelTree`), then draw an item of the chosen leaf with
  probability K(x, v_j) / sum_{i in leaf} K(x, v_i) from its L rows of items_NxD. The
  product telescopes to q(j | x) when the tree holds the statistics of items_NxD;
  log_q is the product of the probabilities the draw actually took (exact for the
  procedure even if float rounding made a parent differ slightly from its children's
  sum). The first T = `shared_levels` steps are taken for a row's K draws at once: the
  masses of the 2^T nodes of level T are one [B,F] x [F,2^T] product (a parent's mass is
  its children's sum, so drawing a level-T node from them is those T steps), by default
  T = min(depth, log2 K + KERNEL_SHARED_EXTRA), where it costs less than the K T steps it
  replaces; a node of level T is drawn by inverse CDF (`_draw_rows_blocked_cdf` for
  T > 8).
  Below T each step reads the left child's packed Gramian only (the right child's mass is
  the node's minus the left's). The B K draws are sorted by their level-T node and walked
  down in blocks of C = KERNEL_BLOCK_FLOATS / max(L D, 2 F) draws: a node's children keep
  its place in the order, so neighbours in a block share the nodes and leaves they read
  and each is fetched from memory about once per block, not once per draw (at N = 1M,
  D = 32 the 128 MB table does not stay in cache; `benchmarks/kernel_sampler_scaling`).
  Cost per draw O(D^2 (log(N / L) - T) + L D) plus O(2^T D^2) per row, the D^2 a dot
  of a packed Gramian (`KernelTree`); memory O(C L D) per block.
  Unlike softmax(s), q is symmetric in s and never below 1 / (alpha max s^2 + 1) of the
  largest: a proposal whose logQ correction stays bounded (Blanc & Rendle, Sec. 4.3,
  alpha = 100 in their experiments). The row's positive can be drawn; the loss masks it.
  """
  batch, dim, num_items = _check_embeddings(query_BxD, items_NxD)
  num_samples = check_int("num_samples", num_samples, 1)
  leaf = kernel_leaf_size(num_items, leaf_size)
  depth = len(tree.grams) - 1
  alpha = jnp.asarray(alpha, jnp.float32)
  x_BxD = query_BxD.astype(jnp.float32)
  iu, ju = _triu(dim)
  # w * x x^T packed, once per query: a node's x^T G x is then one dot of length F
  xx_BxF = _packed_outer(x_BxD) * jnp.where(iu == ju, 1.0, 2.0).astype(jnp.float32)
  slots_L = jnp.arange(leaf, dtype=jnp.int32)
  if shared_levels is None:
    shared_levels = (num_samples - 1).bit_length() + KERNEL_SHARED_EXTRA
  top = min(depth, check_int("shared_levels", shared_levels, 0))
  k_top, k_slots = jax.random.split(key)
  if top:  # the 2^T nodes of level T, one [B,F] x [F,2^T] product
    mass_BxT = alpha * jnp.dot(xx_BxF, tree.grams[top].T, precision=_HIGHEST) + tree.counts[top]
    mass_BxT = jnp.maximum(mass_BxT, 0.0)
    u_BxK = jax.random.uniform(k_top, (batch, num_samples))
    if top <= 8:  # O(2^T) per draw
      start_node_BxK = _draw_rows(u_BxK, mass_BxT)
    else:  # O(2^(T/2)) per draw, and no cumulative scan over 2^T
      start_node_BxK = _draw_rows_blocked_cdf(u_BxK, mass_BxT)
    start_mass_BxK = jnp.take_along_axis(mass_BxT, start_node_BxK, axis=1)
    start_log_p_BxK = jnp.log(start_mass_BxK) - jnp.log(jnp.sum(mass_BxT, axis=1, keepdims=True))
  else:  # the root
    start_node_BxK = jnp.zeros((batch, num_samples), jnp.int32)
    start_log_p_BxK = jnp.zeros((batch, num_samples), jnp.float32)
    root_B = alpha * jnp.dot(xx_BxF, tree.grams[0][0], precision=_HIGHEST) + tree.counts[0][0]
    start_mass_BxK = jnp.broadcast_to(jnp.maximum(root_B, 0.0)[:, None], (batch, num_samples))

  # The B K draws sorted by their level-T node, walked down in blocks of C: a parent's
  # order is kept by its children (2n + r), so neighbours share the nodes and leaves
  # they read and a block reads each from memory once, not once per draw.
  num_draws = batch * num_samples
  f = xx_BxF.shape[1]
  block = max(1, min(num_draws, KERNEL_BLOCK_FLOATS // max(leaf * dim, 2 * f)))
  num_blocks = -(-num_draws // block)
  order_R = argsort_bounded(start_node_BxK.reshape(-1), 1 << top)
  order_P = jnp.pad(order_R, (0, num_blocks * block - num_draws), mode="edge")
  node_P = start_node_BxK.reshape(-1)[order_P]
  log_p_P = start_log_p_BxK.reshape(-1)[order_P]
  mass_P = start_mass_BxK.reshape(-1)[order_P]
  u_PxV = jax.random.uniform(k_slots, (num_blocks * block, depth - top + 2))

  def one_block(args):  # C draws, in node order: [C]
    node_C, row_C, log_p_C, mass_C, u_CxV = args
    x_CxD, xx_CxF = x_BxD[row_C], xx_BxF[row_C]
    for i in range(depth - top):
      # Only the left child's mass is read (one packed Gramian of F floats); the right
      # child's is the rest of the node's, an empty child's is 0.
      g_CxF = tree.grams[top + i + 1][2 * node_C]
      count_Cx2 = tree.counts[top + i + 1].reshape(-1, 2)[node_C]
      left_C = alpha * jnp.sum(g_CxF * xx_CxF, axis=1) + count_Cx2[:, 0]
      left_C = jnp.clip(left_C, 0.0, mass_C)
      left_C = jnp.where(count_Cx2[:, 1] > 0, left_C, mass_C)
      left_C = jnp.where(count_Cx2[:, 0] > 0, left_C, 0.0)
      right_C = u_CxV[:, i] * mass_C >= left_C
      chosen_C = jnp.where(right_C, mass_C - left_C, left_C)
      log_p_C += jnp.log(chosen_C / mass_C)
      mass_C = chosen_C
      node_C = 2 * node_C + right_C.astype(jnp.int32)
    leaf_C = node_C
    start_C = jnp.minimum(leaf_C * leaf, num_items - leaf)
    rows_CxLxD = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(items_NxD, s, leaf, 0))(start_C)
    ids_CxL = start_C[:, None] + slots_L[None, :]
    kern_CxL = quadratic_kernel(jnp.einsum("cd,cld->cl", x_CxD, rows_CxLxD), alpha)
    kern_CxL = jnp.where(ids_CxL >= (leaf_C * leaf)[:, None], kern_CxL, 0.0)
    j_C = _draw_one_blocked(u_CxV[:, -2], u_CxV[:, -1], kern_CxL)
    kern_C = jnp.take_along_axis(kern_CxL, j_C[:, None], axis=1)[:, 0]
    log_p_C += jnp.log(kern_C) - jnp.log(jnp.sum(kern_CxL, axis=1))
    return jnp.take_along_axis(ids_CxL, j_C[:, None], axis=1)[:, 0], log_p_C

  blocks = (node_P, (order_P // num_samples).astype(jnp.int32), log_p_P, mass_P, u_PxV)
  ids_P, log_q_P = jax.lax.map(
      one_block, jax.tree.map(lambda a: a.reshape(num_blocks, block, *a.shape[1:]), blocks)
  )
  ids_R = (
      jnp.zeros((num_draws,), jnp.int32)
      .at[order_R]
      .set(ids_P.reshape(-1)[:num_draws].astype(jnp.int32), unique_indices=True)
  )
  log_q_R = (
      jnp.zeros((num_draws,), jnp.float32)
      .at[order_R]
      .set(log_q_P.reshape(-1)[:num_draws], unique_indices=True)
  )
  return Negatives(ids_R.reshape(batch, num_samples), log_q_R.reshape(batch, num_samples))


def kernel_direct(num_items: int, num_samples: int, leaf_size: int) -> bool:
  """Whether the `kernel` sampler scores the whole catalogue instead of keeping a tree:
  when N <= K L, a row's one [N] kernel pass (N D) costs no more than the leaf scans of its
  K draws down the tree (K L D), and the tree (O(N D^2) to build, O(M D^2 log(N / L)) to
  update) is not needed."""
  return num_items <= num_samples * kernel_leaf_size(num_items, leaf_size)


def kernel_sample_direct(
    key: Array, query_BxD: Array, items_NxD: Array, num_samples: int, *, alpha
) -> Negatives:
  """`kernel_sample`'s law, K i.i.d. draws per row from q(j | x_b) = K(x_b, v_j) /
  sum_i K(x_b, v_i), K(x, v) = alpha (x . v)^2 + 1, drawn from the [B, N] kernel values
  by `draw_from_logits_lse` on their logs (exact; log_q = log K(x_b, v_j) minus the row's
  log-sum). O(B N D) per step and O(B N) memory, no tree: the `kernel` sampler's path
  where `kernel_direct` holds."""
  _check_embeddings(query_BxD, items_NxD)
  num_samples = check_int("num_samples", num_samples, 1)
  scores_BxN = jnp.dot(query_BxD.astype(jnp.float32), items_NxD.astype(jnp.float32).T)
  log_kern_BxN = jnp.log(quadratic_kernel(scores_BxN, jnp.asarray(alpha, jnp.float32)))
  ids_BxK, lse_B = draw_from_logits_lse(key, log_kern_BxN, num_samples)
  log_q_BxK = jnp.take_along_axis(log_kern_BxN, ids_BxK, axis=1) - lse_B[:, None]
  return Negatives(ids_BxK.astype(jnp.int32), log_q_BxK)


def kernel_log_q(query_BxD: Array, items_NxD: Array, alpha) -> Array:
  """log q(j | x_b) of the quadratic kernel over the whole catalogue, [B,N] (O(B N D);
  for tests and diagnostics)."""
  kern_BxN = quadratic_kernel(jnp.dot(query_BxD, items_NxD.T), alpha)
  return jnp.log(kern_BxN) - jnp.log(jnp.sum(kern_BxN, axis=1, keepdims=True))


# ---------------------------------------------------------------------------------------
# Negative cache (Lindgren et al. 2021).
# ---------------------------------------------------------------------------------------


class NegativeCache(NamedTuple):
  """Lindgren et al. (NeurIPS 2021) cache: every item's embedding as the model scored it
  when its row was last refreshed, and the next row to refresh (round robin)."""

  items_NxD: Array
  cursor: Array  # int32 scalar


def cache_rows_per_step(num_items: int, refresh) -> int:
  """R = ceil(refresh * N) rows refreshed per step (at least 1, at most N)."""
  return min(num_items, max(1, math.ceil(float(refresh) * num_items - 1e-9)))


def cache_staleness(num_items: int, refresh) -> int:
  """The bound on a cached row's age in steps: ceil(N / R) - 1 (0 for a full refresh)."""
  return -(-num_items // cache_rows_per_step(num_items, refresh)) - 1


def cache_init(items_NxD: Array) -> NegativeCache:
  """A fresh cache: a copy of the current embeddings (never the table's own buffer, which
  the step donates separately)."""
  return NegativeCache(jnp.array(items_NxD, copy=True), jnp.zeros((), jnp.int32))


def cache_refresh(
    cache: NegativeCache, read_rows: Callable[[Array], Array], refresh
) -> NegativeCache:
  """Re-reads the next R rows (round robin, `cache_rows_per_step`) with read_rows(ids_R)
  -> [R,D] (the current embeddings); O(R D). After step t every row holds the embedding
  of some step in [t - cache_staleness, t]; refresh = 1 re-reads every row."""
  num_items = cache.items_NxD.shape[0]
  r = cache_rows_per_step(num_items, refresh)
  if r == num_items:
    ids_R = jnp.arange(num_items, dtype=jnp.int32)
    return NegativeCache(read_rows(ids_R).astype(cache.items_NxD.dtype), cache.cursor)
  ids_R = (cache.cursor + jnp.arange(r, dtype=jnp.int32)) % num_items
  items = cache.items_NxD.at[ids_R].set(read_rows(ids_R).astype(cache.items_NxD.dtype))
  return NegativeCache(items, (cache.cursor + r) % num_items)


# ---------------------------------------------------------------------------------------
# The registry: one calling convention, draw(key, inputs, spec) -> Negatives.
# ---------------------------------------------------------------------------------------


class SamplerInputs(NamedTuple):
  """What a train step holds when it draws negatives (fields a sampler does not read may
  be None). Everything here is a constant of the loss (stop-gradient)."""

  num_items: int  # N, static
  pos_ids_B: Array  # the batch's positives
  freq: Any = None  # FreqState after this step's `freq_update` (uses_freq)
  query_BxD: Any = None  # the batch's queries, as the model scores them (needs_scores)
  items_NxD: Any = None  # every item embedding, as the model scores them (needs_scores)
  unigram: Any = None  # UnigramTable of the train counts (uses_unigram)
  pop_order_N: Any = None  # item ids by decreasing train count (log_uniform's ranks)
  state: Any = None  # the sampler's own state (init_state; None: built from items_NxD)


class StateUpdate(NamedTuple):
  """What a step changed, for `Sampler.update_state`: the item rows ids_M went from
  old_MxD to new_MxD (as the model scores them; an id may repeat, with equal rows), and
  read_rows(ids) -> [len(ids), D] reads the updated table at any ids, as scored.
  all_rows: ids_M is arange(N) (the dense path). num_items: N."""

  ids_M: Array
  old_MxD: Array
  new_MxD: Array
  read_rows: Callable[[Array], Array]
  all_rows: bool
  num_items: int


@dataclasses.dataclass(frozen=True)
class Sampler:
  """A registered sampler: `draw(key, inputs: SamplerInputs, spec) -> Negatives`, where
  `spec` is a `jaxrec.config.SamplerSpec` (num_negatives, replace, alpha, pool_size,
  temperature, chunk_size, num_uniform, batch_negatives, hard_fraction, ...), plus:

  help: one line for `--help`.
  config_keys: the `sampler.*` keys the draw reads (validation rejects the optional ones,
    hard_fraction and batch_negatives, for samplers that do not read them).
  per_example: ids [B,K] (else [K], shared by the batch).
  needs_scores: reads inputs.query_BxD / items_NxD.
  uses_freq: reads inputs.freq (the step keeps the Yi et al. estimator in its state).
  uses_unigram: reads inputs.unigram (the step builds the table once, from train counts).
  log_q: "exact": exp(log_q) is the probability that one draw (averaged over the K slots)
    is that id; "weight": an unbiased importance weight, E[1{J=j} / q_J] = 1 for every j
    (hard_pool's pool estimate); "none": no proper q (the step never applies the logQ
    correction).
  iid: the K draws are i.i.d. given the inputs (a prefix of them is a smaller sample; the
    gradient diagnostic reads K = 1..K_max from one draw of K_max).
  support: support(inputs, spec) -> bool [N], the items with q > 0, for a sampler that
    cannot draw every item (None: every item; the gradient diagnostic reads it).
  pos_log_q: pos_log_q(inputs, spec) -> [B], the log q of each row's positive under the
    same law as the negatives, for samplers whose negatives are drawn like the positives
    (in_batch, mixed): with `sampler.correct_positive` the loss subtracts log(K q) from the
    positive's logit too (Yi et al. 2019, eq. 4). None: the positive is never corrected.
  init_state: init_state(items_NxD, spec) -> the sampler's own state, kept in
    `step.TrainState.freq` and passed as inputs.state (None: no state). The draw builds
    it from inputs.items_NxD when inputs.state is None (outside a train step).
  update_state: update_state(state, update: StateUpdate, spec) -> state, after each
    step's row update (O(rows the step touched), not O(N)).
  """

  draw: Callable[..., Negatives]
  help: str
  config_keys: tuple[str, ...] = ("num_negatives",)
  per_example: bool = False
  needs_scores: bool = False
  uses_freq: bool = False
  uses_unigram: bool = False
  log_q: str = "exact"
  iid: bool = True
  support: Optional[Callable[..., Any]] = None
  pos_log_q: Optional[Callable[..., Any]] = None
  init_state: Optional[Callable[..., Any]] = None
  update_state: Optional[Callable[..., Any]] = None

  @property
  def proper_log_q(self) -> bool:
    return self.log_q != "none"


def draw_uniform(key, inputs: SamplerInputs, spec) -> Negatives:
  return uniform(key, inputs.num_items, spec.num_negatives, replace=spec.replace)


def draw_unigram(key, inputs: SamplerInputs, spec) -> Negatives:
  return unigram_sample(key, inputs.unigram, spec.num_negatives)


def draw_log_uniform(key, inputs: SamplerInputs, spec) -> Negatives:
  """Zipf over popularity ranks, mapped back to item ids."""
  neg = log_uniform(key, inputs.num_items, spec.num_negatives)
  return neg._replace(ids=inputs.pop_order_N[neg.ids])


def draw_in_batch(key, inputs: SamplerInputs, spec) -> Negatives:
  del key  # the batch is the randomness
  return in_batch(inputs.pos_ids_B, inputs.freq, spec.batch_negatives or None)


def draw_mixed(key, inputs: SamplerInputs, spec) -> Negatives:
  num_uniform = spec.num_uniform or inputs.pos_ids_B.shape[0]
  return mixed(
      key,
      inputs.pos_ids_B,
      inputs.freq,
      inputs.num_items,
      num_uniform,
      spec.batch_negatives or None,
  )


def in_batch_pos_log_q(inputs: SamplerInputs, spec) -> Array:
  """The batch's positives' log q under `in_batch`'s law (`in_batch_log_q`)."""
  pos = inputs.pos_ids_B
  return in_batch_log_q(inputs.freq, pos, pos.shape[0])


def mixed_pos_log_q(inputs: SamplerInputs, spec) -> Array:
  """The batch's positives' log q under `mixed`'s law (`mixed_log_q`)."""
  pos = inputs.pos_ids_B
  batch = pos.shape[0]
  return mixed_log_q(
      inputs.freq,
      pos,
      batch,
      spec.batch_negatives or batch,
      spec.num_uniform or batch,
      inputs.num_items,
  )


def with_hard_fraction(draw_hard: Callable[..., Negatives]) -> Callable[..., Negatives]:
  """draw_hard(key, inputs, spec, k) -> [B,k] hard negatives  ==>  a registry draw with
  round(spec.hard_fraction * K) hard negatives per row and the rest uniform (shared), as
  `with_uniform`. hard_fraction = 1 passes the key unchanged (the plain hard sampler);
  0 is the uniform sampler."""

  def draw(key, inputs: SamplerInputs, spec) -> Negatives:
    num = spec.num_negatives
    k_hard = int(round(spec.hard_fraction * num))
    if k_hard == 0:
      return uniform(key, inputs.num_items, num)
    k_hard_key, k_uni_key = jax.random.split(key) if k_hard < num else (key, None)
    hard = draw_hard(k_hard_key, inputs, spec, k_hard)
    if k_hard == num:
      return hard
    return with_uniform(k_uni_key, hard, inputs.num_items, num - k_hard)

  draw.__doc__ = draw_hard.__doc__
  return draw


def _hard_exact_rows(key, inputs: SamplerInputs, spec, k: int) -> Negatives:
  """hard_exact draws, on several devices each shard's own (jaxrec.sharding)."""
  from jaxrec import sharding  # sharding imports losses/metrics; kept off the import path

  return sharding.sharded_hard_exact(
      key,
      inputs.query_BxD,
      inputs.items_NxD,
      k,
      temperature=spec.temperature,
      chunk_size=spec.chunk_size,
  )


def _hard_pool_rows(key, inputs: SamplerInputs, spec, k: int) -> Negatives:
  return hard_pool(
      key,
      inputs.query_BxD,
      inputs.items_NxD,
      k,
      pool_size=spec.pool_size,
      temperature=spec.temperature,
  )


def _hard_topk_rows(key, inputs: SamplerInputs, spec, k: int) -> Negatives:
  return hard_topk(
      key, inputs.query_BxD, inputs.items_NxD, k, pool_size=spec.pool_size, pos_ids=inputs.pos_ids_B
  )


def draw_kernel(key, inputs: SamplerInputs, spec) -> Negatives:
  """Blanc & Rendle's quadratic-kernel sampler: `kernel_sample` over the step's tree, or
  the same law from the [B, N] kernel (`kernel_sample_direct`) where `kernel_direct`
  holds (N <= K L)."""
  if kernel_direct(inputs.num_items, spec.num_negatives, spec.kernel_leaf):
    return kernel_sample_direct(
        key, inputs.query_BxD, inputs.items_NxD, spec.num_negatives, alpha=spec.kernel_alpha
    )
  tree = inputs.state
  if tree is None:
    tree = kernel_tree(inputs.items_NxD, spec.kernel_leaf)
  return kernel_sample(
      key,
      tree,
      inputs.query_BxD,
      inputs.items_NxD,
      spec.num_negatives,
      alpha=spec.kernel_alpha,
      leaf_size=spec.kernel_leaf,
  )


def init_kernel(items_NxD: Array, spec):
  """The `kernel` sampler's state: its tree, or () where it draws directly (`kernel_direct`)."""
  if kernel_direct(items_NxD.shape[0], spec.num_negatives, spec.kernel_leaf):
    return ()
  return kernel_tree(items_NxD, spec.kernel_leaf)


def update_kernel(tree: KernelTree, update: StateUpdate, spec) -> KernelTree:
  """The tree after a step: rebuilt from the new table when the step touched at least N
  rows (a rebuild costs O(N D^2); the M leaf-to-root paths O(M D^2 log(N / L)) and [M, F]
  outer products, 8.6 GB at M = 65,792 per-example draws and D = 256), else updated
  along the touched rows' paths. No tree (`kernel_direct`): nothing to update."""
  if kernel_direct(update.num_items, spec.num_negatives, spec.kernel_leaf):
    return tree
  if update.all_rows:
    return kernel_tree(update.new_MxD, spec.kernel_leaf)
  if update.ids_M.shape[0] >= update.num_items:
    return kernel_tree(update.read_rows(jnp.arange(update.num_items)), spec.kernel_leaf)
  return kernel_tree_update(tree, update.ids_M, update.old_MxD, update.new_MxD, spec.kernel_leaf)


def draw_cache(key, inputs: SamplerInputs, spec) -> Negatives:
  """K i.i.d. draws per row from softmax(x_b . c_j / T) over the cached embeddings c_j
  (Lindgren et al. 2021, Alg. 1) -> Negatives [B,K], log_q = that softmax's log.

  The paper draws by Gumbel-max over the cached scores; `hard_exact`'s two-level inverse
  CDF draws from the same categorical law (K independent Gumbel-max draws would need
  B K N noise values). The loss then scores the drawn ids with the current rows. With no
  cache (outside a train step) the cache is items_NxD itself: staleness 0."""
  cached_NxD = inputs.items_NxD if inputs.state is None else inputs.state.items_NxD
  return hard_exact(
      key,
      inputs.query_BxD,
      cached_NxD,
      spec.num_negatives,
      temperature=spec.temperature,
      chunk_size=spec.chunk_size,
  )


def update_cache(cache: NegativeCache, update: StateUpdate, spec) -> NegativeCache:
  return cache_refresh(cache, update.read_rows, spec.cache_refresh)


_HARD_KEYS = ("num_negatives", "temperature", "hard_fraction")

REGISTRY: dict[str, Sampler] = {
    "uniform": Sampler(
        draw_uniform,
        "q_j = 1/N (with or without replacement)",
        config_keys=("num_negatives", "replace"),
    ),
    "unigram": Sampler(
        draw_unigram,
        "q_j proportional to (train count_j + 1) ** sampler.alpha",
        config_keys=("num_negatives", "alpha"),
        uses_unigram=True,
        support=lambda inputs, spec: inputs.unigram.log_q_N > -jnp.inf,
    ),
    "log_uniform": Sampler(
        draw_log_uniform, "Zipf over popularity ranks (tf log_uniform_candidate_sampler)"
    ),
    "in_batch": Sampler(
        draw_in_batch,
        "the batch's positives, q from the Yi et al. 2019 streaming estimate",
        config_keys=("batch_negatives", "freq_alpha", "correct_positive"),
        uses_freq=True,
        iid=False,
        pos_log_q=in_batch_pos_log_q,
    ),
    "mixed": Sampler(
        draw_mixed,
        "in-batch positives + uniform ids (Yang et al. 2020)",
        config_keys=("batch_negatives", "num_uniform", "freq_alpha", "correct_positive"),
        uses_freq=True,
        iid=False,
        pos_log_q=mixed_pos_log_q,
    ),
    "hard_exact": Sampler(
        with_hard_fraction(_hard_exact_rows),
        "q_bj = softmax(s_bj / T) over the catalogue",
        config_keys=_HARD_KEYS,
        per_example=True,
        needs_scores=True,
    ),
    "hard_pool": Sampler(
        with_hard_fraction(_hard_pool_rows),
        "uniform pool of sampler.pool_size, then softmax(s / T) inside it",
        config_keys=_HARD_KEYS + ("pool_size",),
        per_example=True,
        needs_scores=True,
        log_q="weight",
    ),
    "hard_topk": Sampler(
        with_hard_fraction(_hard_topk_rows),
        "top-K scores of a uniform pool (deterministic mining, no logQ)",
        config_keys=_HARD_KEYS + ("pool_size",),
        per_example=True,
        needs_scores=True,
        log_q="none",
        iid=False,
    ),
    "kernel": Sampler(
        draw_kernel,
        "q_bj proportional to sampler.kernel_alpha * s_bj^2 + 1 (Blanc & Rendle 2018 tree)",
        config_keys=("num_negatives", "kernel_alpha", "kernel_leaf"),
        per_example=True,
        needs_scores=True,
        init_state=init_kernel,
        update_state=update_kernel,
    ),
    "neg_cache": Sampler(
        draw_cache,
        "softmax(s / T) over a stale cache of item embeddings (Lindgren et al. 2021)",
        config_keys=("num_negatives", "temperature", "cache_refresh"),
        per_example=True,
        needs_scores=True,
        init_state=lambda items_NxD, spec: cache_init(items_NxD),
        update_state=update_cache,
    ),
}


def get(name: str) -> Sampler:
  """The registered sampler `name`; ValueError naming the valid ones."""
  if name not in REGISTRY:
    raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(REGISTRY)}")
  return REGISTRY[name]


def help_text() -> str:
  """One line per registered sampler (for the launcher's --help)."""
  return "\n".join(f"{name}: {s.help}" for name, s in REGISTRY.items())

"""Samplers against independent computations.

Distribution claims are checked with Pearson chi-square tests (scipy) on many draws from a
fixed seed. Threshold P_MIN = 1e-3: for a correct sampler the p-value is ~U(0,1), so a
fresh seed would fail one test in a thousand; the seeds are fixed, so the tests are
deterministic. Each distribution test also shows its power where cheap (the same counts
against a slightly wrong q give p < 1e-6). Bins with expected count < 5 are merged.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxrec import losses, samplers

P_MIN = 1e-3
PVALUES = {}  # test name -> p-value (printed with pytest -s, for the build notes)


def chi2_pvalue(counts, probs, name):
  """Pearson chi-square p-value of `counts` against `probs` (float64, sums to 1)."""
  counts = np.asarray(counts, np.float64)
  probs = np.asarray(probs, np.float64)
  assert counts.shape == probs.shape
  assert counts[probs == 0].sum() == 0, "drew an id of probability 0"
  expected = probs * counts.sum()
  keep = expected >= 5
  obs = counts[keep]
  exp = expected[keep]
  if expected[~keep].sum() > 0:
    obs = np.append(obs, counts[~keep].sum())
    exp = np.append(exp, expected[~keep].sum())
  p = scipy.stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue
  PVALUES[name] = p
  print(f"chi2 p-value {name}: {p:.4g}")
  return p


def _perturbed(probs, eps=0.05):
  """probs * (1 +- eps) alternating, renormalised: the 'slightly wrong q' of power checks."""
  sign = np.where(np.arange(probs.size) % 2 == 0, 1.0, -1.0)
  w = probs * (1 + eps * sign)
  return w / w.sum()


def _np_log_softmax(s):
  s = np.asarray(s, np.float64)
  m = s.max(axis=-1, keepdims=True)
  return s - m - np.log(np.exp(s - m).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- uniform


@pytest.mark.parametrize(
    "m,bound,passes",
    [
        (1000, 50, 1),  # many ties: stability decides the order
        (16640, 1 << 17, 1),  # 15 position bits + 17 key bits: one pass
        (16640, 1 << 20, 2),  # a 1M-item catalogue's ids
        (3000, 1 << 31, 2),  # any non-negative int32
        (1, 1, 0),  # XLA drops the sort of one element
    ],
)
def test_argsort_bounded_is_numpys_stable_argsort(m, bound, passes):
  """`argsort_bounded` (LSD radix passes of packed uint32 sorts) against numpy's stable
  argsort; with the keys near the bound and with heavy ties."""
  rng = np.random.default_rng(m)
  keys = rng.integers(0, bound, size=m, dtype=np.int64)
  keys[: m // 3] = bound - 1 - rng.integers(0, 3, size=m // 3)  # ties at the top bits
  keys = keys.astype(np.int32)
  fn = jax.jit(lambda k: samplers.argsort_bounded(k, bound))
  got = np.asarray(fn(jnp.asarray(keys)))
  np.testing.assert_array_equal(got, np.argsort(keys, kind="stable"))
  compiled = fn.lower(jnp.asarray(keys)).compile().as_text()
  assert len(re.findall(r"= u32\[\d+\]\{0\} sort\(", compiled)) == passes  # one uint32 sort each


def test_uniform_with_replacement_is_uniform():
  n, k = 37, 200_000
  neg = jax.jit(lambda key: samplers.uniform(key, n, k))(jax.random.PRNGKey(0))
  assert neg.ids.shape == (k,) and neg.ids.dtype == jnp.int32
  counts = np.bincount(np.asarray(neg.ids), minlength=n)
  assert chi2_pvalue(counts, np.full(n, 1 / n), "uniform") > P_MIN
  assert chi2_pvalue(counts, _perturbed(np.full(n, 1 / n)), "uniform-wrong-q") < 1e-6
  np.testing.assert_allclose(neg.log_q, -math.log(n), rtol=1e-7)


def test_uniform_without_replacement_distinct_and_marginally_uniform():
  n, k, draws = 10, 4, 20_000
  keys = jax.random.split(jax.random.PRNGKey(1), draws)
  neg = jax.jit(
      lambda keys: jax.lax.map(lambda key: samplers.uniform(key, n, k, replace=False), keys)
  )(keys)
  ids = np.asarray(neg.ids)
  assert all(len(set(row)) == k for row in ids)  # no repeats within a draw
  # Each slot is marginally uniform (the documented meaning of q = 1/N) ...
  for slot in range(k):
    assert (
        chi2_pvalue(
            np.bincount(ids[:, slot], minlength=n), np.full(n, 1 / n), f"uniform-norep-slot{slot}"
        )
        > P_MIN
    )
  # ... so the inclusion probability is K q = K/N: 4/10, binomial sd sqrt(.24/2e4) = .0035.
  inclusion = np.bincount(ids.reshape(-1), minlength=n) / draws
  np.testing.assert_allclose(inclusion, k / n, atol=5 * 0.0035)
  np.testing.assert_allclose(neg.log_q, -math.log(n), rtol=1e-7)
  # K = N: a permutation, log(K q) = 0.
  full = samplers.uniform(jax.random.PRNGKey(2), n, n, replace=False)
  assert sorted(np.asarray(full.ids).tolist()) == list(range(n))
  with pytest.raises(ValueError, match="num_samples=11 > num_items=10"):
    samplers.uniform(jax.random.PRNGKey(0), n, n + 1, replace=False)
  with pytest.raises(ValueError, match="num_samples"):
    samplers.uniform(jax.random.PRNGKey(0), n, 0)


# ----------------------------------------------------------------------------- unigram


@pytest.mark.parametrize("pseudo_count", [1.0, 0.0])
@pytest.mark.parametrize("alpha", [1.0, 0.75, 0.0])
def test_unigram_matches_counts_to_the_alpha(alpha, pseudo_count):
  """Draws follow q_j ~ (c_j + pseudo_count)^alpha (default pseudo-count 1) and log_q is
  their log; pseudo_count = 0 is the raw counts, which never draw a zero-count item."""
  rng = np.random.default_rng(3)
  n, k = 60, 300_000
  counts = rng.integers(0, 50, n).astype(np.float32)
  counts[[0, 7, 8, 59]] = 0  # zero counts at the edges and in a run
  kwargs = {} if pseudo_count == 1.0 else {"pseudo_count": pseudo_count}
  neg = jax.jit(lambda key: samplers.unigram(key, counts, k, alpha=alpha, **kwargs))(
      jax.random.PRNGKey(4)
  )
  c = counts.astype(np.float64) + pseudo_count
  w = np.ones(n) if alpha == 0 else np.where(c > 0, c**alpha, 0.0)
  q = w / w.sum()
  ids = np.asarray(neg.ids)
  counts_drawn = np.bincount(ids, minlength=n)
  if alpha > 0 and pseudo_count == 0:
    assert counts_drawn[counts == 0].sum() == 0  # zero-count items are never drawn
  name = f"unigram-alpha{alpha}-pseudo{pseudo_count}"
  assert chi2_pvalue(counts_drawn, q, name) > P_MIN
  assert chi2_pvalue(counts_drawn, _perturbed(q), f"{name}-wrong-q") < 1e-6
  np.testing.assert_allclose(neg.log_q, np.log(q[ids]), rtol=1e-5)


def test_unigram_draws_items_without_training_counts():
  """The support condition of log-Q: every item, zero-count ones included, has q > 0 and
  is drawn. Catalogue of 1,000 items, 300 of them with count 0 and the rest Zipf-like
  counts up to 1,000 (alpha = 0.75): a zero-count item has q = 1 / sum_i (c_i + 1)^0.75
  = 2.3e-4; in 2e5 draws each is expected ~46 times (P(never drawn) ~ e^-46)."""
  rng = np.random.default_rng(7)
  n, k, alpha = 1000, 200_000, 0.75
  counts = np.floor(1000.0 / (1 + np.arange(n)) ** 0.8).astype(np.float32)
  zero = rng.choice(n, 300, replace=False)
  counts[zero] = 0
  table = samplers.unigram_table(counts, alpha)
  log_q = np.asarray(table.log_q_N, np.float64)
  q0 = 1.0 / np.sum((counts.astype(np.float64) + 1) ** alpha)
  np.testing.assert_allclose(np.exp(log_q[zero]), q0, rtol=1e-5)
  assert np.isclose(np.exp(log_q).sum(), 1.0, rtol=1e-5)
  neg = jax.jit(lambda key: samplers.unigram_sample(key, table, k))(jax.random.PRNGKey(8))
  drawn = np.bincount(np.asarray(neg.ids), minlength=n)
  assert (drawn[zero] > 0).all(), int((drawn[zero] == 0).sum())
  # Their share of the draws matches their mass (300 q0 = 6.9%; binomial sd 0.06%).
  share, mass = drawn[zero].sum() / k, 300 * q0
  assert abs(share - mass) < 5 * math.sqrt(mass * (1 - mass) / k), (share, mass)
  # The raw counts (pseudo_count = 0) give them q = 0: the bug this smoothing fixes.
  raw = samplers.unigram_table(counts, alpha, pseudo_count=0.0)
  assert np.all(np.asarray(raw.log_q_N)[zero] == -np.inf)


def test_unigram_table_resolves_every_item_in_a_large_catalogue():
  """float32 flat CDFs blur small probabilities; the two-level table must not."""
  rng = np.random.default_rng(5)
  n = 2**18
  w = rng.uniform(0.5, 1.5, n).astype(np.float32)
  w[rng.choice(n, n // 10, replace=False)] = 0.0
  table = samplers.unigram_table(w, 1.0, pseudo_count=0.0)  # the weights as given
  cum = np.asarray(table.cum_CxS, np.float64)
  block_cum = np.asarray(table.block_cum_C, np.float64)
  # Probability of item j implied by the table: P(block) * width of j inside its block.
  width = np.diff(cum, axis=1, prepend=0.0)
  p_block = np.diff(block_cum, prepend=0.0) / block_cum[-1]
  implied = (width / cum[:, -1:] * p_block[:, None]).reshape(-1)[:n]
  want = w.astype(np.float64) / w.astype(np.float64).sum()
  assert np.all(implied[want == 0] == 0)
  rel = np.abs(implied[want > 0] / want[want > 0] - 1)
  # Blocks of 512 items: cum <= ~770, float32 spacing 6e-5, so |width error| <= 1.2e-4
  # on widths >= 0.5, i.e. ~2.4e-4 relative; the flat float32 cumsum (spacing up to 0.016
  # at ~2.4e5) is >10x worse, which the second assert shows.
  assert rel.max() < 1e-3, rel.max()
  flat = np.diff(np.cumsum(w, dtype=np.float32).astype(np.float64), prepend=0.0)
  flat_rel = np.abs(flat[want > 0] / w[want > 0] - 1)
  assert flat_rel.max() > 1e-2
  ids = np.asarray(
      jax.jit(lambda key: samplers.unigram_sample(key, table, 200_000).ids)(jax.random.PRNGKey(6))
  )
  assert ids.min() >= 0 and ids.max() < n
  assert np.all(w[ids] > 0)  # 2e5 draws, none of a zero-weight item


def test_unigram_rejects_bad_counts():
  with pytest.raises(ValueError, match=">= 0"):
    samplers.unigram(jax.random.PRNGKey(0), np.array([1.0, -1.0]), 3)
  with pytest.raises(ValueError, match="no positive entry and pseudo_count is 0"):
    samplers.unigram(jax.random.PRNGKey(0), np.zeros(4), 3, pseudo_count=0.0)
  with pytest.raises(ValueError, match="pseudo_count must be a number >= 0"):
    samplers.unigram(jax.random.PRNGKey(0), np.ones(4), 3, pseudo_count=-1.0)
  # All-zero counts are fine once smoothed: uniform.
  uni = samplers.unigram(jax.random.PRNGKey(0), np.zeros(4), 3)
  np.testing.assert_allclose(uni.log_q, np.log(0.25), rtol=1e-6)
  with pytest.raises(ValueError, match="alpha must be >= 0"):
    samplers.unigram(jax.random.PRNGKey(0), np.ones(4), 3, alpha=-1.0)


# ----------------------------------------------------------------------------- log-uniform


def test_log_uniform_matches_closed_form():
  n, k = 100, 400_000
  neg = jax.jit(lambda key: samplers.log_uniform(key, n, k))(jax.random.PRNGKey(7))
  ids = np.asarray(neg.ids)
  kk = np.arange(n, dtype=np.float64)
  p = (np.log(kk + 2) - np.log(kk + 1)) / np.log(n + 1)  # tf log_uniform_candidate_sampler
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)  # telescopes to log(N+1)/log(N+1)
  counts = np.bincount(ids, minlength=n)
  assert chi2_pvalue(counts, p, "log_uniform") > P_MIN
  assert chi2_pvalue(counts, _perturbed(p), "log_uniform-wrong-q") < 1e-6
  np.testing.assert_allclose(neg.log_q, np.log(p[ids]), rtol=1e-5)


# ----------------------------------------------------------------------------- hard samplers


def _embeddings(seed, b, n, d, scale=1.0):
  rng = np.random.default_rng(seed)
  q = (scale * rng.standard_normal((b, d))).astype(np.float32)
  v = (scale * rng.standard_normal((n, d))).astype(np.float32)
  return jnp.asarray(q), jnp.asarray(v)


@pytest.mark.parametrize("chunk_size", [None, 7, 64])
def test_hard_exact_matches_softmax(chunk_size):
  b, n, d, k, temp = 3, 40, 4, 60_000, 1.5
  q, v = _embeddings(8, b, n, d)
  neg = jax.jit(
      lambda key: samplers.hard_exact(key, q, v, k, temperature=temp, chunk_size=chunk_size)
  )(jax.random.PRNGKey(9))
  assert neg.ids.shape == (b, k)
  log_p = _np_log_softmax(np.asarray(q, np.float64) @ np.asarray(v, np.float64).T / temp)
  ids = np.asarray(neg.ids)
  for row in range(b):
    counts = np.bincount(ids[row], minlength=n)
    probs = np.exp(log_p[row])
    assert chi2_pvalue(counts, probs, f"hard_exact-chunk{chunk_size}-row{row}") > P_MIN
    assert chi2_pvalue(counts, _perturbed(probs), "hard_exact-wrong-q") < 1e-6
  np.testing.assert_allclose(
      neg.log_q, np.take_along_axis(log_p, ids, axis=1), rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize("chunk_size", [None, 130])  # 130: 3 chunks, the last shifted
def test_hard_exact_few_draws_path_matches_softmax(chunk_size):
  """K * 32 < N (or < the chunk): the draws search only the chosen 32-wide blocks (the
  fast path); chunked, each chunk's draw is kept with probability Z_c / Z_{<=c}."""
  b, n, d, k, reps, temp = 2, 300, 4, 4, 15_000, 0.8
  q, v = _embeddings(14, b, n, d)
  keys = jax.random.split(jax.random.PRNGKey(15), reps)
  draw = lambda key: samplers.hard_exact(key, q, v, k, temperature=temp, chunk_size=chunk_size)
  neg = jax.jit(jax.vmap(draw))(keys)
  ids = np.asarray(neg.ids)  # [R, B, K]
  log_p = _np_log_softmax(np.asarray(q, np.float64) @ np.asarray(v, np.float64).T / temp)
  for row in range(b):
    counts = np.bincount(ids[:, row].reshape(-1), minlength=n)
    probs = np.exp(log_p[row])
    assert chi2_pvalue(counts, probs, f"hard_exact-few-row{row}") > P_MIN
    assert chi2_pvalue(counts, _perturbed(probs), "hard_exact-few-wrong-q") < 1e-6
  np.testing.assert_allclose(
      neg.log_q, log_p[np.arange(b)[None, :, None], ids], rtol=1e-5, atol=1e-5
  )


def test_hard_pool_log_q_is_a_valid_importance_weight():
  """E[1{J=j} / q_J] = 1 for every item j, over pools and draws.

  Given the pool, J = j with probability c_j exp(s_j/T)/Z_P and the returned
  q_j = (M/N) exp(s_j/T)/Z_P, so E[1{J=j}/q_J | pool] = c_j N/M, whose mean over uniform
  pools is 1. This is the property a logQ correction needs (it makes sum_k e^{s_k}/(K q_k)
  unbiased for Z); it fails for a wrong within-pool distribution or a wrong scale of q.
  """
  b, n, d, k, m, pools, temp = 2, 30, 4, 64, 15, 20_000, 0.8
  q, v = _embeddings(10, b, n, d)
  keys = jax.random.split(jax.random.PRNGKey(11), pools)
  neg = jax.jit(
      lambda keys: jax.lax.map(
          lambda key: samplers.hard_pool(key, q, v, k, pool_size=m, temperature=temp), keys
      )
  )(keys)
  ids = np.asarray(neg.ids)  # [R,B,K]
  log_q = np.asarray(neg.log_q, np.float64)
  # Within one (pool,row) log_q - s/T is the same constant -log Z_hat for all draws.
  s = np.einsum("bd,rbkd->rbk", np.asarray(q, np.float64), np.asarray(v, np.float64)[ids]) / temp
  offset = log_q - s
  np.testing.assert_allclose(offset, offset[:, :, :1].repeat(k, axis=2), atol=2e-5)
  for row in range(b):
    x = np.zeros((pools, n))  # x[r, j] = (1/K) sum_k 1{J_rk = j} / q_rk
    np.add.at(
        x,
        (np.repeat(np.arange(pools), k), ids[:, row].reshape(-1)),
        np.exp(-log_q[:, row]).reshape(-1) / k,
    )
    z = (x.mean(0) - 1) / (x.std(0, ddof=1) / math.sqrt(pools))
    # R = 2e4 iid pools: z_j ~ N(0,1) by the CLT; Bonferroni over 30 items at 4.5 sd gives a
    # false-failure chance of 30 * 7e-6 = 2e-4.
    print(f"hard_pool row {row}: max |z| = {np.abs(z).max():.2f}")
    assert np.abs(z).max() < 4.5, z
    # Power: the conditional q (c_j replaced by 1, i.e. log q + log(N/M)) fails badly.
    z_wrong = (x.mean(0) * m / n - 1) / (x.std(0, ddof=1) * m / n / math.sqrt(pools))
    assert np.abs(z_wrong).max() > 10


def test_hard_topk_returns_the_top_of_a_covering_pool():
  # M = 400 uniform draws of N = 20 ids miss some id with probability <= 20 * 0.95^400 <
  # 3e-8, so the pool's top-K is the catalogue's top-K.
  b, n, d, k, m = 4, 20, 4, 5, 400
  q, v = _embeddings(12, b, n, d)
  pos = np.array([0, 3, 7, 19], np.int32)
  s = np.asarray(q, np.float64) @ np.asarray(v, np.float64).T
  for excluded in (False, True):
    neg = jax.jit(
        lambda key: samplers.hard_topk(key, q, v, k, pool_size=m, pos_ids=pos if excluded else None)
    )(jax.random.PRNGKey(13))
    got = np.asarray(neg.ids)
    for row in range(b):
      order = [j for j in np.argsort(-s[row]) if not (excluded and j == pos[row])]
      assert got[row].tolist() == order[:k]
    np.testing.assert_allclose(neg.log_q, -math.log(n), rtol=1e-7)
  with pytest.raises(ValueError, match="pool_size"):
    samplers.hard_topk(jax.random.PRNGKey(0), q, v, 6, pool_size=5)


# ----------------------------------------------------------------------------- frequency estimator


def _py_hash(ids, k, h):
  """Pure-python rendering of the documented hash functions (uint32 wrap-around)."""
  out = []
  for y in ids:
    y = int(y) % 2**32
    if k == 0:
      out.append(y % h)
      continue
    x = (y * (((0x9E3779B1 * (2 * k + 1)) % 2**32) | 1) + (0x7F4A7C15 * k) % 2**32) % 2**32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) % 2**32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) % 2**32
    x ^= x >> 16
    out.append(x % h)
  return np.array(out)


def _reference_update(a, b, buckets, t, alpha):
  """Yi et al. Algorithm 2 for one hash array, one update per occurrence: a bucket hit c
  times at step t takes c updates, each with the gap sample (t - a_prev) / c."""
  a_prev, b = a.copy(), b.copy()
  counts = np.bincount(buckets, minlength=len(a))
  for h in buckets.tolist():  # every occurrence, in batch order
    gap = (t - a_prev[h]) / counts[h]
    b[h] = gap if b[h] == 0 else (1 - alpha) * b[h] + alpha * gap
  a = a_prev.copy()
  a[buckets] = t
  return a, b


def _old_once_per_step_update(a, b, buckets, t, alpha):
  """The estimator jaxrec had before (kept as the reference it is compared with): a bucket
  updated at most once per step with gap t - a, so 1/b estimates P(item in the batch)."""
  a, b = a.copy(), b.copy()
  for h in sorted(set(buckets.tolist())):
    gap = t - a[h]
    b[h] = gap if b[h] == 0 else (1 - alpha) * b[h] + alpha * gap
    a[h] = t
  return a, b


@pytest.mark.parametrize("num_hashes", [1, 3])
def test_freq_estimator_matches_reference_algorithm(num_hashes):
  rng = np.random.default_rng(14)
  n, h, batch, steps, alpha = 50, 23, 8, 40, 0.2  # H < N: collisions on purpose
  state = samplers.freq_init(h, num_hashes)
  update = jax.jit(lambda s, ids, t: samplers.freq_update(s, ids, t, alpha=alpha))
  ref = [(np.full(h, -1.0), np.zeros(h)) for _ in range(num_hashes)]
  q = np.arange(1, n + 1, dtype=np.float64) ** 2
  for t in range(steps):
    ids = rng.choice(n, batch, p=q / q.sum()).astype(np.int32)  # duplicates likely
    state = update(state, ids, t)
    ref = [_reference_update(a, b, _py_hash(ids, k, h), t, alpha) for k, (a, b) in enumerate(ref)]
  for k in range(num_hashes):
    np.testing.assert_allclose(state.a[k], ref[k][0], rtol=0, atol=0)
    np.testing.assert_allclose(state.b[k], ref[k][1], rtol=1e-5)
  # Algorithm 3: p_hat(y) = 1 / max_k b_k[h_k(y)]; never-seen buckets -> p_hat = 0.
  ids = np.arange(n + 5)
  b_all = np.stack([ref[k][1][_py_hash(ids, k, h)] for k in range(num_hashes)])
  want = np.where((b_all > 0).all(0), -np.log(b_all.max(0)), -np.inf)
  np.testing.assert_allclose(samplers.freq_log_q(state, ids), want, rtol=1e-5)


def test_freq_estimator_tracks_the_expected_count_per_batch():
  """Zipf stream (N = 200, q_i ~ 1/(i+1), B = 256 i.i.d. draws a step, seed 0): exp(freq_log_q)
  estimates the expected count B q_i (43.5 for the top item), as Yi et al. Sec. 6.1's
  p = |B| q. Over the last 2,000 of 8,000 steps (alpha = 0.01):
    * time-averaged estimate within 4% of B q_i for the 20 most popular items and within
      25% for every item (the EMA's noise, ~sqrt(alpha / 2) per read, on a tail item
      seen ~0.2 times a step, averaged over ~4 memory spans);
    * the paper's error sum_i |p_hat_i - p_i| / (2B) below 0.035 on average over those
      steps and below 0.06 at every one (measured 0.026 and 0.045); the old estimator's is
      ~0.33.
  The old estimator (one update per bucket per step) reads ~1 for every item in most
  batches: its five most popular items are under-estimated by 88% to 98%."""
  n, bsz, steps, tail, alpha = 200, 256, 8000, 2000, 0.01
  q = 1.0 / np.arange(1, n + 1)
  q /= q.sum()
  truth = bsz * q
  draws = np.random.default_rng(0).choice(n, (steps, bsz), p=q).astype(np.int32)

  @jax.jit
  def run(draws):
    def body(state, xs):
      t, ids = xs
      state = samplers.freq_update(state, ids, t, alpha=alpha)
      return state, jnp.exp(samplers.freq_log_q(state, jnp.arange(n)))

    _, est = jax.lax.scan(body, samplers.freq_init(n), (jnp.arange(steps), draws))
    return est[-tail:]

  est = np.asarray(run(jnp.asarray(draws)), np.float64)  # [tail, N]
  rel = est.mean(0) / truth - 1.0
  err = np.abs(est - truth).sum(1) / (2 * bsz)
  a, b = np.full(n, -1.0), np.zeros(n)
  old = np.zeros(n)
  for t in range(steps):
    a, b = _old_once_per_step_update(a, b, draws[t], t, alpha)
    if t >= steps - tail:
      old += np.where(b > 0, 1.0 / np.maximum(b, 1.0), 0.0) / tail
  old_rel = old / truth - 1.0
  old_err = np.abs(old - truth).sum() / (2 * bsz)
  print(
      f"count estimator: top-5 rel err {np.round(rel[:5], 4)}, max |rel| {np.abs(rel).max():.3f},"
      f" paper error mean {err.mean():.4f} max {err.max():.4f}; old: top-5 rel err {np.round(old_rel[:5], 3)},"
      f" paper error (time-avg estimate) {old_err:.3f}"
  )
  assert np.abs(rel[:20]).max() < 0.04
  assert np.abs(rel).max() < 0.25
  assert err.mean() < 0.035 and err.max() < 0.06
  assert (old_rel[:5] < -0.85).all()
  assert old_err > 5 * err.max()


def test_freq_log_q_unseen_in_batch_and_mixed_formulas():
  n, h = 100, 128
  state = samplers.freq_init(h)
  state = samplers.freq_update(state, np.array([1, 2, 2]), 0, alpha=0.1)
  state = samplers.freq_update(state, np.array([1, 3]), 4, alpha=0.1)
  # b: id1 = 0.9*1 + 0.1*4 = 1.3; id2 = 1/2 (seen twice at step 0: expected count 2);
  # id3 = 5 (first at 4).
  np.testing.assert_allclose(
      samplers.freq_log_q(state, np.array([1, 2, 3])), -np.log([1.3, 0.5, 5.0]), rtol=1e-6
  )
  assert samplers.freq_log_q(state, np.array([4]))[0] == -np.inf
  pos = np.array([1, 2, 3], np.int32)
  ib = samplers.in_batch(pos, state)
  np.testing.assert_array_equal(ib.ids, pos)
  np.testing.assert_allclose(ib.log_q, np.log([1 / 1.3, 2.0, 0.2]) - np.log(3), rtol=1e-6)
  mx = samplers.mixed(jax.random.PRNGKey(15), pos, state, n, 5)
  ids = np.asarray(mx.ids)
  np.testing.assert_array_equal(ids[:3], pos)
  p_hat = {1: 1 / 1.3, 2: 2.0, 3: 0.2}
  want = np.log([p_hat.get(int(j), 0.0) + 5 / n for j in ids]) - np.log(8)
  np.testing.assert_allclose(mx.log_q, want, rtol=1e-6)
  # The uniform part is uniform over the catalogue.
  extra = samplers.mixed(jax.random.PRNGKey(16), pos, state, n, 50_000).ids[3:]
  assert (
      chi2_pvalue(
          np.bincount(np.asarray(extra), minlength=n), np.full(n, 1 / n), "mixed-uniform-part"
      )
      > P_MIN
  )


def test_in_batch_and_mixed_with_part_of_the_batch():
  """K of the B batch positives: j's expected count among them is p_j K / B."""
  n, h = 100, 128
  state = samplers.freq_init(h)
  state = samplers.freq_update(state, np.array([1, 2, 3, 4]), 0, alpha=0.1)  # p = 1 each
  pos = np.array([4, 2, 1, 3], np.int32)
  ib = samplers.in_batch(pos, state, num_negatives=3)
  np.testing.assert_array_equal(ib.ids, pos[:3])
  # log(K q) = log(p K / B) = log(3/4)
  np.testing.assert_allclose(math.log(3) + np.asarray(ib.log_q), np.log(0.75), rtol=1e-6)
  mx = samplers.mixed(jax.random.PRNGKey(17), pos, state, n, 5, num_batch=2)
  ids = np.asarray(mx.ids)
  assert ids.shape == (7,)
  np.testing.assert_array_equal(ids[:2], pos[:2])
  want = np.log([(1.0 if j in (1, 2, 3, 4) else 0.0) * 2 / 4 + 5 / n for j in ids])
  np.testing.assert_allclose(math.log(7) + np.asarray(mx.log_q), want, rtol=1e-5)
  with pytest.raises(ValueError, match="exceeds the batch size 4"):
    samplers.in_batch(pos, state, num_negatives=5)


def test_hard_plus_uniform_mixture_estimates_the_partition_function_unbiasedly():
  """E[sum_k e^{s_k} / (K q_k)] = Z = sum_j e^{s_j} for K_h hard (q = softmax(s/T_h))
  plus K_u uniform negatives, each with its own sampler's q and K = K_h + K_u.

  R = 20000 independent draws; z = (mean - Z) / (sd / sqrt R) ~ N(0, 1) per row (CLT);
  |z| < 4.5 over 2 rows fails by chance with probability ~1e-5. Power: correcting each
  stratum with its own size (K_h, K_u: both strata as full estimates) sums to ~2Z."""
  b, n, d, k_h, k_u, draws, t_hard = 2, 30, 4, 3, 5, 20_000, 2.0
  q, v = _embeddings(12, b, n, d)
  s = np.asarray(q, np.float64) @ np.asarray(v, np.float64).T  # [B, N], T = 1
  z_true = np.exp(s).sum(1)

  def one(key):
    k1, k2 = jax.random.split(key)
    hard = samplers.hard_exact(k1, q, v, k_h, temperature=t_hard)
    return samplers.with_uniform(k2, hard, n, k_u)

  neg = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(13), draws))
  ids, log_q = np.asarray(neg.ids), np.asarray(neg.log_q, np.float64)  # [R, B, K]
  assert ids.shape == (draws, b, k_h + k_u)
  # The uniform part is shared by the rows; its log q is -log N.
  np.testing.assert_array_equal(ids[:, 0, k_h:], ids[:, 1, k_h:])
  np.testing.assert_allclose(log_q[:, :, k_h:], -math.log(n), rtol=1e-6)
  es = np.exp(np.take_along_axis(np.broadcast_to(s, (draws, b, n)), ids, axis=2))
  w = es / np.exp(log_q)
  est = w.sum(2) / (k_h + k_u)  # [R, B]
  z = (est.mean(0) - z_true) / (est.std(0, ddof=1) / math.sqrt(draws))
  print(f"hard+uniform mixture: Z {z_true}, mean estimate {est.mean(0)}, z {z}")
  assert np.abs(z).max() < 4.5
  wrong = w[:, :, :k_h].sum(2) / k_h + w[:, :, k_h:].sum(2) / k_u
  assert np.all(np.abs(wrong.mean(0) / z_true - 2.0) < 0.1)


def test_frequency_estimator_reproduces_yi_et_al_simulation():
  """Yi et al. 2019 Fig. (simulation): q_i ~ i^2, switching to (M-1-i)^2 at step 10k."""
  alphas = jnp.array([0.01, 0.1])
  sim = jax.jit(
      jax.vmap(
          lambda a: samplers.simulate_frequency_estimation(
              jax.random.PRNGKey(17), 1000, 128, 5000, 20_000, 10_000, a
          )
      )
  )
  err = np.asarray(sim(alphas))
  settled_before = err[:, 8000:10_000].mean(1)
  just_after = err[:, 10_000:10_100].mean(1)
  recovering = err[:, 10_200:10_400].mean(1)
  settled_after = err[:, 18_000:].mean(1)
  print(
      "Yi simulation (alpha 0.01, 0.1): settled",
      settled_before,
      "after switch",
      just_after,
      "+200..400",
      recovering,
      "end",
      settled_after,
  )
  # The switch makes every estimate stale (error, a total variation, > 0.5), and it then
  # falls again.
  assert np.all(just_after > 0.5)
  assert np.all(settled_after < just_after / 4)
  # Larger alpha recovers faster ...
  assert recovering[1] < 0.7 * recovering[0]
  # ... but settles at a higher error (EMA noise ~ sqrt(alpha)), before and after.
  assert settled_before[1] > 1.5 * settled_before[0]
  assert settled_after[1] > 1.2 * settled_after[0]
  # And with alpha = 0.01 it is accurate: the paper's error (total variation between
  # p_hat / B and q) < 5% in steady state (measured 3.1%).
  assert settled_before[0] < 0.05


# ----------------------------------------------------------------------------- sampled -> full


def _loss_gap(q, v, pos, sample, draws=16):
  """|mean over draws of sampled_softmax - full_softmax| / full_softmax, averaged over rows."""

  def one(key):
    neg = sample(key)
    return losses.sampled_softmax(
        q, v[pos], v[neg.ids], pos_ids=pos, neg_ids=neg.ids, neg_log_q=neg.log_q
    )

  @jax.jit
  def gap(keys):
    full = losses.full_softmax(q, v, pos)
    sampled = jax.lax.map(one, keys).mean(0)  # lax.map: cheaper to compile than vmap
    return jnp.mean(jnp.abs(sampled - full)) / jnp.mean(full)

  return float(gap(jax.random.split(jax.random.PRNGKey(18), draws)))


_N, _B, _D = 1000, 8, 8


def _setup():
  q, v = _embeddings(19, _B, _N, _D, scale=0.8)
  pos = jnp.asarray(np.random.default_rng(20).integers(0, _N, _B).astype(np.int32))
  counts = (1e4 / (np.arange(_N) + 100.0) ** 0.7).astype(np.float32)
  return q, v, pos, counts


@pytest.mark.parametrize("name", ["uniform", "unigram", "log_uniform", "hard_exact", "hard_pool"])
def test_sampled_loss_approaches_full_softmax(name):
  q, v, pos, counts = _setup()
  table = samplers.unigram_table(counts, 0.75)
  make = {
      "uniform": lambda k: lambda key: samplers.uniform(key, _N, k),
      "unigram": lambda k: lambda key: samplers.unigram_sample(key, table, k),
      "log_uniform": lambda k: lambda key: samplers.log_uniform(key, _N, k),
      "hard_exact": lambda k: lambda key: samplers.hard_exact(key, q, v, k),
      "hard_pool": lambda k: lambda key: samplers.hard_pool(key, q, v, k, pool_size=2 * k),
  }[name]
  gaps = [_loss_gap(q, v, pos, make(k)) for k in (8, 512)]
  print(f"{name}: relative loss gap K=8 {gaps[0]:.4g}, K=512 {gaps[1]:.4g}")
  assert gaps[1] < gaps[0] / 2
  assert gaps[1] < 0.01


def test_in_batch_and_mixed_losses_approach_full_softmax():
  """Negatives = a batch drawn from the item stream, q from the warmed Yi estimator
  (log(K q) = the estimated expected count of j in the batch)."""
  q, v, pos, counts = _setup()
  table = samplers.unigram_table(counts, 1.0)
  gaps = {"in_batch": [], "mixed": []}
  for bsz, steps in ((8, 10_000), (64, 3_000)):

    @jax.jit
    def warm(key, bsz=bsz, steps=steps):
      def body(state, t):
        ids = samplers.unigram_sample(jax.random.fold_in(key, t), table, bsz).ids
        return samplers.freq_update(state, ids, t, alpha=0.05), None

      return jax.lax.scan(body, samplers.freq_init(_N), jnp.arange(steps))[0]

    state = warm(jax.random.PRNGKey(21))
    for name in gaps:

      def sample(key, bsz=bsz, steps=steps, state=state, name=name):
        k_batch, k_uniform = jax.random.split(key)
        batch = samplers.unigram_sample(k_batch, table, bsz).ids
        new_state = samplers.freq_update(state, batch, steps, alpha=0.05)  # as train_step
        if name == "in_batch":
          return samplers.in_batch(batch, new_state)
        return samplers.mixed(k_uniform, batch, new_state, _N, bsz)

      gaps[name].append(_loss_gap(q, v, pos, sample))
  for name, (small, large) in gaps.items():
    print(f"{name}: relative loss gap B=8 {small:.4g}, B=64 {large:.4g}")
    assert large < small / 2
    assert large < 0.03


# ---------------------------------------------------------------------------------------
# The sampler contract, over every registered sampler (samplers.REGISTRY).
# ---------------------------------------------------------------------------------------

C_N, C_B, C_D, C_K, C_DRAWS = 12, 4, 3, 5, 20000
# Train counts: item 11 never seen (q = 0 for in-batch, > 0 for the smoothed unigram); the
# in-batch estimator's fixed point is b_j = 1 / (B f_j), the expected count per batch.
C_COUNTS = np.array([6, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1, 0], np.float32)
_VALID_LOG_Q = ("exact", "weight", "none")


def _contract_spec(name):
  from experiments.configs import synthetic
  from jaxrec import config

  section = synthetic.get_config().sampler
  section.name, section.num_negatives, section.pool_size = name, C_K, 8
  return config.SamplerSpec.from_config(section, batch_size=C_B)


def _contract_draws(name):
  """C_DRAWS independent draws; each draws its batch's positives i.i.d. from the count
  frequency f. Inputs hold only what the entry declares (others None), and the
  frequency state is the estimator's accurate fixed point b_j = 1 / (B f_j) (hash 0 is
  id mod N: no collisions), so that the in-batch q is exactly f."""
  entry = samplers.REGISTRY[name]
  spec = _contract_spec(name)
  f = C_COUNTS / C_COUNTS.sum()
  freq_table = samplers.unigram_table(jnp.asarray(C_COUNTS), 1.0, pseudo_count=0.0)
  rng = np.random.default_rng(0)
  query = jnp.asarray(rng.normal(size=(C_B, C_D)), jnp.float32)
  items = jnp.asarray(rng.normal(size=(C_N, C_D)), jnp.float32)
  freq = samplers.FreqState(
      a=jnp.zeros((1, C_N), jnp.float32),
      b=jnp.asarray(np.where(f > 0, 1.0 / np.maximum(C_B * f, 1e-30), 0.0)[None], jnp.float32),
  )
  unigram = samplers.unigram_table(jnp.asarray(C_COUNTS), spec.alpha)
  pop_order = jnp.asarray(np.argsort(-C_COUNTS, kind="stable").astype(np.int32))

  def one(key):
    k_pos, k_neg = jax.random.split(key)
    pos = samplers.unigram_sample(k_pos, freq_table, C_B).ids
    inputs = samplers.SamplerInputs(
        C_N,
        pos,
        freq=freq if entry.uses_freq else None,
        query_BxD=query if entry.needs_scores else None,
        items_NxD=items if entry.needs_scores else None,
        unigram=unigram if entry.uses_unigram else None,
        pop_order_N=pop_order,
    )
    return entry.draw(k_neg, inputs, spec)

  keys = jax.random.split(jax.random.PRNGKey(sorted(samplers.REGISTRY).index(name)), C_DRAWS)
  neg = jax.jit(jax.vmap(one))(keys)
  return entry, spec, np.asarray(neg.ids), np.asarray(neg.log_q, np.float64)


@pytest.mark.parametrize("name", list(samplers.REGISTRY))
def test_every_registered_sampler_meets_the_contract(name):
  """Shapes and metadata as declared; for log_q "exact", the draws' empirical
  distribution matches exp(log_q); for "weight", 1{J=j}/q_J averages to 1 for every j.

  "exact": per row (shared samplers: one row) the n = DRAWS * K draws are independent, so
  E TV(empirical, q) <= (1/2) sum_j sqrt(q_j / n) <= (1/2) sqrt(N / n), and TV moves by at
  most 1/n per draw, so P(TV > E TV + t) <= exp(-2 n t^2) (McDiarmid): t = sqrt(log(1e6) /
  (2 n)) is exceeded with probability 1e-6. q must be a function of (row, id) and sum to
  1 over the row: the mass of ids never drawn has expectation sum_j q_j (1 - q_j)^n <=
  N / (e n), so more than 100x that fails with probability <= 1% (Markov); the seed is
  fixed. "weight": 5 standard errors of the mean over draws per (row, id).
  """
  entry, spec, ids, log_q = _contract_draws(name)
  assert entry.log_q in _VALID_LOG_Q
  assert entry.help and "\n" not in entry.help
  from experiments.configs import synthetic

  assert set(entry.config_keys) <= set(synthetic.get_config().sampler.keys())
  per_row = (C_B,) if entry.per_example else ()
  assert ids.shape == (C_DRAWS,) + per_row + (ids.shape[-1],) == log_q.shape, ids.shape
  assert ids.dtype == np.int32 and ((ids >= 0) & (ids < C_N)).all()
  if not entry.proper_log_q:
    from jaxrec import config

    c = synthetic.get_config()
    c.loss.name, c.sampler.name, c.sampler.pool_size = "sampled", name, 64
    assert not config.StepSpec.from_config(c).use_logq  # never logQ-corrected
    return
  ids_RxSxK = ids.reshape(C_DRAWS, -1, ids.shape[-1])
  log_q_RxSxK = log_q.reshape(ids_RxSxK.shape)
  for row in range(ids_RxSxK.shape[1]):
    r_ids, r_log_q = ids_RxSxK[:, row].ravel(), log_q_RxSxK[:, row].ravel()
    assert np.isfinite(r_log_q).all(), "a drawn id has q = 0"
    if entry.log_q == "exact":
      q = np.full(C_N, np.nan)
      q[r_ids] = np.exp(r_log_q)
      np.testing.assert_allclose(np.exp(r_log_q), q[r_ids], rtol=1e-5)  # q(row, id)
      n = r_ids.size
      seen = ~np.isnan(q)
      unseen_mass = 1.0 - q[seen].sum()
      assert -1e-5 <= unseen_mass <= 100 * C_N / (math.e * n), (name, unseen_mass)
      empirical = np.bincount(r_ids, minlength=C_N) / n
      tv = 0.5 * (np.abs(empirical[seen] - q[seen]).sum() + max(unseen_mass, 0.0))
      bound = 0.5 * math.sqrt(C_N / n) + math.sqrt(math.log(1e6) / (2 * n))
      print(f"{name} row {row}: TV {tv:.4f} <= {bound:.4f}")
      assert tv <= bound, (name, row, tv, bound)
    else:
      k = ids.shape[-1]
      w_RxN = np.zeros((C_DRAWS, C_N))
      np.add.at(
          w_RxN,
          (np.repeat(np.arange(C_DRAWS), k), ids_RxSxK[:, row].ravel()),
          np.exp(-log_q_RxSxK[:, row].ravel()) / k,
      )
      mean, sem = w_RxN.mean(0), w_RxN.std(0, ddof=1) / math.sqrt(C_DRAWS)
      print(f"{name} row {row}: mean weights {np.round(mean, 3)}")
      assert (np.abs(mean - 1.0) <= 5 * sem + 1e-9).all(), (name, row, mean, sem)


def test_registry_metadata_is_what_the_step_and_validation_read():
  """Every sampler.* key an entry declares exists in the default config; the optional
  keys are validated against the entries that read them; help_text lists every entry."""
  import ml_collections

  from experiments.configs import synthetic
  from jaxrec import config

  lines = samplers.help_text().splitlines()
  assert [line.split(":")[0] for line in lines] == list(samplers.REGISTRY)
  for name, entry in samplers.REGISTRY.items():
    c = synthetic.get_config()
    c.loss.name, c.sampler.name, c.sampler.pool_size = "sampled", name, 64
    spec = config.StepSpec.from_config(c)
    assert spec.uses_freq == entry.uses_freq
    assert (spec.unigram_alpha is not None) == entry.uses_unigram
    assert spec.correct_positive == (entry.pos_log_q is not None)
    assert ("correct_positive" in entry.config_keys) == (entry.pos_log_q is not None)
    if "correct_positive" not in entry.config_keys:
      c.sampler.correct_positive = False
      with pytest.raises(
          config.ConfigError, match="correct_positive=False applies to in_batch and mixed, not"
      ):
        config.StepSpec.from_config(c)
      c.sampler.correct_positive = True
    else:
      c.sampler.logq = False  # no log-Q: nothing to correct
      assert not config.StepSpec.from_config(c).correct_positive
      c.sampler.logq = True
      loose = ml_collections.ConfigDict(c.to_dict(), type_safe=False)
      loose.sampler.correct_positive = 1
      with pytest.raises(config.ConfigError, match="correct_positive=1 must be True or False"):
        config.StepSpec.from_config(loose)
    if "batch_negatives" not in entry.config_keys:
      c.sampler.batch_negatives = 4
      with pytest.raises(config.ConfigError, match="batch_negatives=4 applies to"):
        config.StepSpec.from_config(c)

"""hard_exact's one exp pass: the draw's own row log-sum-exp gives log q.

The unchunked `samplers.hard_exact` takes lse from `draw_from_logits_lse` (the log-sum-exp
of its blocks' log-sum-exps) instead of a second `logsumexp` over the [B,N] scores. The
draws must be the very same ids (same key, same draw), and log q must equal the
two-pass value up to float32 rounding, both checked against float64 numpy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jaxrec import samplers

# Tolerance on log q (float32): a log-sum-exp over N terms, computed with the max
# subtracted, has an absolute error of a few ulps of its largest term's scale times
# ~log2(N) (the reduction tree), here |logits| < 20 and N <= 5000: ~13 * 2.4e-6 = 3e-5 at
# worst, typically far less; the gathered score s_j (a float32 dot of D = 16 terms) adds a
# few ulps of 20. 1e-4 bounds both; a wrong normaliser (e.g. one block's lse, or the lse of
# unscaled scores) is off by >= 0.1 here.
ATOL = 1e-4


def _problem(seed, batch, n, dim=16, scale=1.5):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(batch, dim)).astype(np.float32)
  v = (scale * rng.normal(size=(n, dim)) / np.sqrt(dim)).astype(np.float32)
  return jnp.asarray(q), jnp.asarray(v)


@pytest.mark.parametrize("n,k", [(5000, 8), (600, 64)])  # few-draws (K*32 < N), many-draws
def test_one_pass_keeps_the_draws_and_log_q(n, k):
  temperature = 0.5
  q, v = _problem(0, 6, n)
  key = jax.random.PRNGKey(3)
  neg = jax.jit(lambda key: samplers.hard_exact(key, q, v, k, temperature=temperature))(key)

  # The draws: exactly the positions the unchanged two-level draw returns for this key.
  scores = jnp.dot(q / temperature, v.T)
  assert (k * samplers.SMALL_BLOCK < n) == (n == 5000)  # both paths covered
  want_ids = samplers.draw_from_logits(key, scores, k)
  np.testing.assert_array_equal(np.asarray(neg.ids), np.asarray(want_ids))

  # log q: the previous two-pass value (s_j/T - logsumexp(s/T) over the row) and float64.
  ids = np.asarray(neg.ids)
  s64 = (np.asarray(q, np.float64) / temperature) @ np.asarray(v, np.float64).T
  log_q64 = np.take_along_axis(s64, ids, 1) - scipy.special.logsumexp(s64, axis=1)[:, None]
  s32 = np.asarray(scores)
  two_pass = np.take_along_axis(s32, ids, 1) - np.asarray(jax.nn.logsumexp(scores, axis=1))[:, None]
  np.testing.assert_allclose(np.asarray(neg.log_q), log_q64, rtol=0, atol=ATOL)
  np.testing.assert_allclose(np.asarray(neg.log_q), two_pass, rtol=0, atol=ATOL)


def test_draw_from_logits_lse_returns_the_row_log_sum_exp():
  q, v = _problem(1, 4, 3000, scale=4.0)
  logits = jnp.dot(q, v.T)
  for k in (4, 200):  # few-draws and many-draws blocks
    pos, lse = samplers.draw_from_logits_lse(jax.random.PRNGKey(0), logits, k)
    want = scipy.special.logsumexp(np.asarray(logits, np.float64), axis=1)
    np.testing.assert_allclose(np.asarray(lse), want, rtol=0, atol=ATOL)
    assert pos.shape == (4, k)

"""Gradient-fidelity diagnostic against exact cases and a known trend."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import diagnostics


def _batch(seed=0, b=6, n=60, d=6, scale=0.8):
  rng = np.random.default_rng(seed)
  q = jnp.asarray((scale * rng.standard_normal((b, d))).astype(np.float32))
  v = jnp.asarray((scale * rng.standard_normal((n, d))).astype(np.float32))
  pos = jnp.asarray(rng.integers(0, n, b).astype(np.int32))
  return q, v, pos


def test_exact_gradient_matches_numpy_softmax_gradient():
  q, v, pos = _batch()
  dq, dv = diagnostics.exact_gradient(q, v, pos)
  # d/dq_b mean_b CE = (sum_j p_bj v_j - v_pos_b) / B ; d/dv_j = sum_b (p_bj - 1{j=pos_b}) q_b / B
  qn, vn = np.asarray(q, np.float64), np.asarray(v, np.float64)
  s = qn @ vn.T
  p = np.exp(s - s.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  p[np.arange(len(pos)), np.asarray(pos)] -= 1.0
  b = q.shape[0]
  np.testing.assert_allclose(dq, p @ vn / b, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(dv, p.T @ qn / b, rtol=1e-4, atol=1e-6)


def test_every_item_once_gives_zero_bias_and_zero_variance():
  """Uniform without replacement, K = N, logQ: log(K q) = 0 and, with the positive masked
  as an accidental hit, every draw's loss IS the full softmax: bias and variance vanish."""
  q, v, pos = _batch()
  n = v.shape[0]
  out = diagnostics.gradient_fidelity(
      jax.random.PRNGKey(1), q, v, pos, "uniform", n, num_draws=4, sampler_kwargs={"replace": False}
  )
  print("K=N without replacement:", out)
  # float32 gradients of size ~0.1 agree to ~1e-7 relative; allow 1e-5.
  assert abs(out["bias_cosine"]) < 1e-5
  assert out["rel_norm_error"] < 1e-5
  assert out["variance"] < 1e-10


def test_variance_matches_brute_force_over_draws():
  """The streamed (Chan) mean/variance equals a plain numpy computation over the draws."""
  q, v, pos = _batch()
  k, draws = 8, 12
  sample_fn = diagnostics.make_sampler("uniform", num_items=v.shape[0], num_samples=k)
  key = jax.random.PRNGKey(2)
  out = diagnostics.gradient_fidelity(
      key, q, v, pos, sample_fn, num_draws=draws, draws_per_chunk=5
  )  # -> groups of 4 (largest divisor)
  g_star = np.concatenate([np.ravel(x) for x in diagnostics.exact_gradient(q, v, pos)])
  one = jax.jit(
      lambda r: diagnostics.sampled_gradient(jax.random.fold_in(key, r), q, v, pos, sample_fn)
  )
  gs = np.stack([np.concatenate([np.ravel(x) for x in one(r)]) for r in range(draws)])
  g_bar = gs.mean(0)
  cos = g_bar @ g_star / np.linalg.norm(g_bar) / np.linalg.norm(g_star)
  np.testing.assert_allclose(out["bias_cosine"], 1 - cos, atol=1e-5)
  np.testing.assert_allclose(
      out["rel_norm_error"], np.linalg.norm(g_bar - g_star) / np.linalg.norm(g_star), rtol=1e-4
  )
  np.testing.assert_allclose(
      out["variance"], ((gs - g_bar) ** 2).sum(1).mean() / (g_star @ g_star), rtol=1e-4
  )


def test_uniform_logq_bias_decreases_with_k():
  """Bengio & Senecal: the sampled-softmax gradient's bias shrinks as K grows.

  With R = 64 draws the mean's Monte-Carlo noise, sqrt(variance / R), is ~0.09 at K=4 and
  ~0.02 at K=256 (variance printed), well below the gaps between the K levels asserted.
  """
  q, v, pos = _batch(n=300)
  results = {}
  for k in (4, 32, 256):
    results[k] = diagnostics.gradient_fidelity(
        jax.random.PRNGKey(3), q, v, pos, "uniform", k, num_draws=64, logq=True
    )
    print(f"uniform K={k}:", results[k])
  cos = [results[k]["bias_cosine"] for k in (4, 32, 256)]
  norm = [results[k]["rel_norm_error"] for k in (4, 32, 256)]
  assert cos[0] > 2 * cos[1] > 4 * cos[2]
  assert norm[0] > 1.5 * norm[1] > 2.25 * norm[2]


def test_logq_correction_removes_popularity_bias():
  """Popularity (unigram) negatives without logQ keep a bias that K does not remove; with
  logQ the bias at K=256 is several times smaller (Bengio & Senecal 2008)."""
  q, v, pos = _batch(n=300)
  counts = 1000.0 / (np.arange(300) + 5.0)  # counts 200 .. 3: the +1 smoothing is small
  out = {
      lq: diagnostics.gradient_fidelity(
          jax.random.PRNGKey(4),
          q,
          v,
          pos,
          "unigram",
          256,
          num_draws=32,
          logq=lq,
          sampler_kwargs={"counts": counts},
      )
      for lq in (True, False)
  }
  print("unigram K=256 logq on/off:", out)
  assert out[False]["bias_cosine"] > 5 * out[True]["bias_cosine"]
  assert out[False]["rel_norm_error"] > 2 * out[True]["rel_norm_error"]


def test_bad_sampler_arguments():
  q, v, pos = _batch()
  with pytest.raises(ValueError, match="unknown sampler 'nope'"):
    diagnostics.gradient_fidelity(jax.random.PRNGKey(0), q, v, pos, "nope", 4)
  with pytest.raises(ValueError, match="needs num_samples"):
    diagnostics.gradient_fidelity(jax.random.PRNGKey(0), q, v, pos, "uniform")


def _np_softmax(s):
  p = np.exp(s - s.max(-1, keepdims=True))
  return p / p.sum(-1, keepdims=True)


def test_logit_push_exact_is_the_mean_softmax():
  q, v, pos = _batch(b=5, n=40)
  t = 0.5
  exact, _ = diagnostics.logit_push(
      jax.random.PRNGKey(0), q, v, pos, "uniform", 4, num_draws=2, temperature=t
  )
  p = _np_softmax(np.asarray(q, np.float64) @ np.asarray(v, np.float64).T / t)
  np.testing.assert_allclose(exact, p.mean(0), rtol=1e-4, atol=1e-7)


def test_logit_push_every_item_once_equals_the_exact_push():
  """K = N uniform without replacement with log-Q: every draw's loss is the full softmax."""
  q, v, pos = _batch()
  exact, sampled = diagnostics.logit_push(
      jax.random.PRNGKey(3),
      q,
      v,
      pos,
      "uniform",
      v.shape[0],
      num_draws=3,
      sampler_kwargs={"replace": False},
  )
  np.testing.assert_allclose(sampled, exact, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(np.sum(sampled), 1.0, rtol=1e-5)


def test_logit_push_matches_the_enumerated_expectation():
  """Unigram proposal, N = 5, K = 2 with replacement: the expected push, enumerated over
  all 25 ordered draws in numpy (positive + 2 corrected negatives, accidental hits
  masked), vs 4,096 Monte-Carlo draws; tolerance 5 standard errors of the mean."""
  rng = np.random.default_rng(4)
  n, k, b, draws = 5, 2, 3, 4096
  counts = np.array([8.0, 4.0, 2.0, 1.0, 1.0])
  qprob = (counts + 1) / (counts + 1).sum()  # the unigram sampler's smoothed counts
  qe = jnp.asarray(rng.standard_normal((b, 3)).astype(np.float32))
  ve = jnp.asarray(rng.standard_normal((n, 3)).astype(np.float32))
  pos = np.array([0, 3, 1], np.int32)
  s = np.asarray(qe, np.float64) @ np.asarray(ve, np.float64).T
  mean, second = np.zeros(n), np.zeros(n)
  for i in range(n):
    for j in range(n):
      ids = np.array([i, j])
      push = np.zeros(n)
      for r in range(b):
        neg = s[r, ids] - np.log(k * qprob[ids])
        neg = np.where(ids == pos[r], -np.inf, neg)
        w = _np_softmax(np.concatenate([[s[r, pos[r]]], neg]))
        push[pos[r]] += w[0] / b
        np.add.at(push, ids, w[1:] / b)
      mean += qprob[i] * qprob[j] * push
      second += qprob[i] * qprob[j] * push**2
  se = np.sqrt(np.maximum(second - mean**2, 0.0) / draws)
  exact, sampled = diagnostics.logit_push(
      jax.random.PRNGKey(5),
      qe,
      ve,
      jnp.asarray(pos),
      "unigram",
      k,
      num_draws=draws,
      sampler_kwargs={"counts": jnp.asarray(counts), "unigram_alpha": 1.0},
  )
  print("enumerated", mean, "sampled", np.asarray(sampled), "se", se)
  assert np.all(np.abs(np.asarray(sampled) - mean) <= 5 * se + 1e-6)
  np.testing.assert_allclose(exact, _np_softmax(s).mean(0), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(np.sum(sampled), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", diagnostics.nested_names())
def test_nested_samplers_draw_k_max_within_their_support(name):
  """make_nested reads the registry: every measurable sampler draws K_max ids (2 K_max for
  mixed) with finite log q, only from its support (in_batch: items with a train count;
  unigram, with its smoothed counts: every item)."""
  counts = np.array([3, 0, 2, 1, 0, 4, 1, 1], np.float32)
  n, k_max = counts.size, 6
  nested = diagnostics.make_nested(name, num_items=n, k_max=k_max, counts_N=counts, pool_size=5)
  q, v = jnp.ones((2, 3)), jnp.asarray(np.random.default_rng(0).normal(size=(n, 3)), jnp.float32)
  ids, log_q = nested.draw(jax.random.PRNGKey(0), q, v)
  assert ids.shape[-1] == k_max * nested.negatives_per_k
  assert nested.support_N[np.asarray(ids)].all() and np.isfinite(np.asarray(log_q)).all()
  if name == "in_batch":
    np.testing.assert_array_equal(nested.support_N, counts > 0)
  if name == "unigram":
    assert nested.support_N.all()
  with pytest.raises(ValueError, match="unknown sampler 'hard_topk'"):
    diagnostics.make_nested("hard_topk", num_items=n, k_max=2, counts_N=counts)

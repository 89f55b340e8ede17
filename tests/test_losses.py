"""Losses against independent computations: float64 numpy references, finite differences,
brute force over all pairs, and a structural check of the chunked jaxpr."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import losses


def _rand(rng, *shape, scale=1.0):
  return (scale * rng.standard_normal(shape)).astype(np.float32)


def _np_lse(x, axis=-1):
  m = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def np_full_softmax(q, v, pos_ids_BxP, w_BxP, temperature):
  """Textbook float64 cross-entropy: -sum_p w_p log softmax(q V^T / T)[pos_p]."""
  q, v = np.float64(q), np.float64(v)
  s = q @ v.T / temperature
  log_p = s - _np_lse(s)[:, None]
  rows = np.arange(q.shape[0])[:, None]
  ids = np.clip(pos_ids_BxP, 0, v.shape[0] - 1)
  return -np.sum(np.where(w_BxP != 0, w_BxP * log_p[rows, ids], 0.0), axis=1)


def _multi_positive_case(rng, batch, num_items, num_pos):
  """[B,P] ids and weights forming a distribution, with weight-0 padding whose ids are
  deliberately out of range (-1 and N) to show they are inert."""
  ids = rng.integers(0, num_items, (batch, num_pos)).astype(np.int32)
  w = rng.uniform(0.1, 1.0, (batch, num_pos))
  w[0, -1] = 0.0
  ids[0, -1] = -1
  w[1, 1:] = 0.0
  ids[1, 1:] = num_items
  w = (w / w.sum(1, keepdims=True)).astype(np.float32)
  return ids, w


# ----------------------------------------------------------------------------- full softmax


@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_full_softmax_single_positive_matches_numpy(chunk_size, temperature):
  rng = np.random.default_rng(0)
  b, n, d = 5, 11, 4
  q, v = _rand(rng, b, d), _rand(rng, n, d)
  ids = rng.integers(0, n, b).astype(np.int32)
  got = jax.jit(
      lambda q, v: losses.full_softmax(q, v, ids, temperature=temperature, chunk_size=chunk_size)
  )(q, v)
  want = np_full_softmax(q, v, ids[:, None], np.ones((b, 1)), temperature)
  # f32 against f64: scores ~ O(10) after /0.3, relative rounding ~1e-7 per op.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_full_softmax_multi_positive_matches_numpy(chunk_size):
  rng = np.random.default_rng(1)
  b, n, d, p = 4, 13, 3, 4
  q, v = _rand(rng, b, d), _rand(rng, n, d)
  ids, w = _multi_positive_case(rng, b, n, p)
  got = jax.jit(
      lambda q, v: losses.full_softmax(q, v, ids, w, temperature=0.7, chunk_size=chunk_size)
  )(q, v)
  np.testing.assert_allclose(got, np_full_softmax(q, v, ids, w, 0.7), rtol=1e-5, atol=1e-5)
  # pos_weights=None means uniform 1/P over the P positives.
  ids_full = rng.integers(0, n, (b, p)).astype(np.int32)
  got = jax.jit(lambda q, v: losses.full_softmax(q, v, ids_full, chunk_size=chunk_size))(q, v)
  want = np_full_softmax(q, v, ids_full, np.full((b, p), 1.0 / p), 1.0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _np_central_diff(f, x, eps=1e-6):
  """Central finite differences of a float64 scalar function; error O(eps^2 + 1e-16/eps)."""
  x = np.array(x, np.float64)
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    xp, xm = x.copy(), x.copy()
    xp[idx] += eps
    xm[idx] -= eps
    g[idx] = (f(xp) - f(xm)) / (2 * eps)
  return g


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_full_softmax_gradient_matches_finite_differences(chunk_size):
  rng = np.random.default_rng(2)
  b, n, d, p = 3, 10, 4, 3
  q, v = _rand(rng, b, d), _rand(rng, n, d)
  ids, w = _multi_positive_case(rng, b, n, p)
  temperature = 0.5
  # Weighted sum so that every example's gradient is checked with a distinct cotangent.
  ct = np.array([1.0, -0.5, 2.0])

  def jax_loss(q, v, t):
    return jnp.sum(ct * losses.full_softmax(q, v, ids, w, temperature=t, chunk_size=chunk_size))

  gq, gv, gt = jax.jit(jax.grad(jax_loss, argnums=(0, 1, 2)))(q, v, jnp.float32(temperature))
  ref = lambda q_, v_, t_: float(np.sum(ct * np_full_softmax(q_, v_, ids, w, t_)))
  fd_q = _np_central_diff(lambda x: ref(x, v, temperature), q)
  fd_v = _np_central_diff(lambda x: ref(q, x, temperature), v)
  fd_t = _np_central_diff(lambda x: ref(q, v, float(x)), np.array(temperature))
  # FD in float64 is accurate to ~1e-9; the tolerance is the f32 rounding of the jax grads.
  np.testing.assert_allclose(gq, fd_q, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(gv, fd_v, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(gt, fd_t, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("chunk_size", [8, 17, 64])
def test_chunked_equals_unchunked_value_and_gradient(multi, chunk_size):
  rng = np.random.default_rng(3)
  b, n, d = 6, 53, 5  # 53 = 6*8 + 5 = 3*17 + 2 and < 64: ragged tails and chunk > N.
  q, v = _rand(rng, b, d), _rand(rng, n, d)
  if multi:
    ids, w = _multi_positive_case(rng, b, n, 4)
  else:
    ids, w = rng.integers(0, n, b).astype(np.int32), None
  ct = rng.uniform(0.5, 1.5, b).astype(np.float32)

  def make(chunk):
    f = lambda q, v: jnp.sum(
        ct * losses.full_softmax(q, v, ids, w, temperature=0.8, chunk_size=chunk)
    )
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

  val_c, (gq_c, gv_c) = make(chunk_size)(q, v)
  val_u, (gq_u, gv_u) = make(None)(q, v)
  np.testing.assert_allclose(val_c, val_u, rtol=1e-5)
  # atol: a gradient entry that cancels to ~0 has no meaningful relative error; 1e-6 is
  # ~10 ulp of the largest entries (O(1)).
  np.testing.assert_allclose(gq_c, gq_u, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gv_c, gv_u, rtol=1e-5, atol=1e-6)


def _all_avals(jaxpr):
  """Every intermediate and output aval of a jaxpr, recursing into sub-jaxprs (scan/while
  bodies, pjit, custom_vjp, cond branches)."""
  out = [v.aval for v in jaxpr.invars]
  for eqn in jaxpr.eqns:
    out.extend(v.aval for v in eqn.outvars)
    for param in eqn.params.values():
      subs = param if isinstance(param, (list, tuple)) else [param]
      for sub in subs:
        sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, "eqns"):
          out.extend(_all_avals(sub))
  return out


def _has_bxn(fn, b, n, *args):
  jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
  shapes = [tuple(getattr(a, "shape", ())) for a in _all_avals(jaxpr)]
  return any(b in s and n in s for s in shapes), shapes


def test_chunked_never_materializes_batch_by_items():
  rng = np.random.default_rng(4)
  b, n, d, chunk = 7, 53, 3, 8  # distinct primes B, N; D and chunk (and tail 5) differ
  q, v = _rand(rng, b, d), _rand(rng, n, d)
  ids, w = _multi_positive_case(rng, b, n, 2)

  def vg(chunk_size):
    f = lambda q, v, t: jnp.sum(
        losses.full_softmax(q, v, ids, w, temperature=t, chunk_size=chunk_size)
    )
    return jax.value_and_grad(f, argnums=(0, 1, 2))

  found, shapes = _has_bxn(vg(chunk), b, n, q, v, jnp.float32(0.5))
  assert not found, [s for s in shapes if b in s and n in s]
  assert (chunk, d) in shapes  # the walker did reach into the loop bodies
  # The walker can fail: the unchunked version does hold a [B,N] array.
  assert _has_bxn(vg(None), b, n, q, v, jnp.float32(0.5))[0]


# -------------------------------------------------------------------------- sampled softmax


def test_sampled_softmax_with_all_items_equals_full_softmax():
  rng = np.random.default_rng(5)
  b, n, d, t = 6, 13, 4, 0.8
  q, v = _rand(rng, b, d), _rand(rng, n, d)
  ids = rng.integers(0, n, b).astype(np.int32)
  neg_ids = np.arange(n, dtype=np.int32)
  log_q = np.full(n, -math.log(n), np.float32)  # uniform: log(K q) = log(N / N) = 0

  def sampled(q, v):
    return losses.sampled_softmax(
        q,
        v[ids],
        v,
        pos_ids=ids,
        neg_ids=neg_ids,
        neg_log_q=log_q,
        temperature=t,
        remove_accidental_hits=True,
    )

  full = lambda q, v: losses.full_softmax(q, v, ids, temperature=t)
  got = jax.jit(sampled)(q, v)
  np.testing.assert_allclose(got, jax.jit(full)(q, v), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      got, np_full_softmax(q, v, ids[:, None], np.ones((b, 1)), t), rtol=1e-5, atol=1e-5
  )
  # Same gradients too (the masked positive-as-negative contributes exactly nothing).
  g_s = jax.jit(jax.grad(lambda q, v: sampled(q, v).sum(), argnums=(0, 1)))(q, v)
  g_f = jax.jit(jax.grad(lambda q, v: full(q, v).sum(), argnums=(0, 1)))(q, v)
  for a, c in zip(g_s, g_f):
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


def test_sampled_softmax_per_example_equals_shared_when_tiled():
  rng = np.random.default_rng(6)
  b, k, d, n = 5, 7, 3, 9
  q, pos, neg = _rand(rng, b, d), _rand(rng, b, d), _rand(rng, k, d)
  pos_ids = rng.integers(0, n, b).astype(np.int32)
  neg_ids = rng.integers(0, n, k).astype(np.int32)
  neg_ids[2] = pos_ids[0]  # at least one accidental hit
  log_q = np.log(rng.dirichlet(np.ones(n))).astype(np.float32)[neg_ids]
  pos_log_q = rng.uniform(-3, -1, b).astype(np.float32)
  f = jax.jit(
      lambda neg, neg_ids, log_q: losses.sampled_softmax(
          q,
          pos,
          neg,
          neg_ids=neg_ids,
          neg_log_q=log_q,
          pos_ids=pos_ids,
          pos_log_q=pos_log_q,
          temperature=0.6,
      )
  )
  shared = f(neg, neg_ids, log_q)
  tiled = f(
      np.tile(neg[None], (b, 1, 1)), np.tile(neg_ids[None], (b, 1)), np.tile(log_q[None], (b, 1))
  )
  np.testing.assert_allclose(tiled, shared, rtol=1e-6, atol=1e-6)


def np_sampled_softmax(q, pos, neg_BxKxD, neg_log_q_BxK, pos_log_q, temperature, drop_BxK):
  """tf.nn.sampled_softmax_loss with subtract_log_q, in float64: logits minus log(K q),
  where K counts all sampled negatives; dropped negatives are simply left out."""
  q, pos, neg = np.float64(q), np.float64(pos), np.float64(neg_BxKxD)
  k = neg.shape[1]
  out = []
  for i in range(q.shape[0]):
    o_pos = q[i] @ pos[i] / temperature
    if pos_log_q is not None:
      o_pos -= np.log(k * np.exp(np.float64(pos_log_q[i])))
    keep = ~drop_BxK[i]
    o_neg = neg[i][keep] @ q[i] / temperature
    if neg_log_q_BxK is not None:
      o_neg = o_neg - np.log(k * np.exp(np.float64(neg_log_q_BxK[i][keep])))
    logits = np.concatenate([[o_pos], o_neg])
    out.append(_np_lse(logits) - o_pos)
  return np.array(out)


@pytest.mark.parametrize("per_example", [False, True])
def test_removing_accidental_hits_equals_dropping_that_negative(per_example):
  rng = np.random.default_rng(7)
  b, k, d, n = 4, 6, 3, 20
  q, pos = _rand(rng, b, d), _rand(rng, b, d)
  pos_ids = np.array([3, 5, 7, 9], np.int32)
  if per_example:
    neg = _rand(rng, b, k, d)
    neg_ids = rng.integers(10, n, (b, k)).astype(np.int32)
    neg_ids[0, 1] = 3
    neg_ids[2, [0, 4]] = 7  # two hits in one row
  else:
    neg = _rand(rng, k, d)
    neg_ids = np.array([11, 3, 12, 7, 7, 13], np.int32)  # hits rows 0 and 2 (twice)
  log_q = rng.uniform(-4, -2, neg_ids.shape).astype(np.float32)
  neg_b = neg if per_example else np.broadcast_to(neg, (b, k, d))
  ids_b = np.broadcast_to(neg_ids, (b, k))
  lq_b = np.broadcast_to(log_q, (b, k))
  hits = ids_b == pos_ids[:, None]
  assert hits.sum() == 3

  def loss(neg, remove):
    return losses.sampled_softmax(
        q,
        pos,
        neg,
        pos_ids=pos_ids,
        neg_ids=neg_ids,
        neg_log_q=log_q,
        temperature=0.9,
        remove_accidental_hits=remove,
    )

  got = jax.jit(lambda x: loss(x, True))(neg)
  want = np_sampled_softmax(q, pos, neg_b, lq_b, None, 0.9, drop_BxK=hits)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The hits did matter: without removal the loss equals keeping them.
  kept = jax.jit(lambda x: loss(x, False))(neg)
  np.testing.assert_allclose(
      kept,
      np_sampled_softmax(q, pos, neg_b, lq_b, None, 0.9, drop_BxK=np.zeros_like(hits)),
      rtol=1e-5,
      atol=1e-6,
  )
  assert np.all(np.asarray(kept)[hits.any(1)] > np.asarray(got)[hits.any(1)])
  # Gradients stay finite and the masked negatives receive exactly zero gradient.
  g_neg = jax.jit(jax.grad(lambda x: loss(x, True).sum()))(neg)
  assert np.all(np.isfinite(g_neg))
  if per_example:
    assert np.all(np.asarray(g_neg)[hits] == 0.0)


def test_sampled_softmax_gradients_match_float64_numpy_at_small_and_large_logits():
  # d loss_b / d o_bj = p_bj - [j = positive], p = softmax over [o_b, o_b1..o_bK]; through
  # o = q . v - log(K q): d q_b = sum_j p_bj v_j - pos_b, d pos_b = (p_b0 - 1) q_b,
  # d neg_k = sum_b p_bk q_b (shared negatives). Logit scales 1 and 300 (o up to ~1e3:
  # exp overflows unless the max is taken out); one accidental hit, whose p is 0.
  rng = np.random.default_rng(11)
  b, k, d = 5, 7, 4
  for scale in (1.0, 300.0):
    q, pos, neg = _rand(rng, b, d, scale=scale), _rand(rng, b, d), _rand(rng, k, d)
    pos_ids = np.arange(b, dtype=np.int32)
    neg_ids = np.arange(10, 10 + k, dtype=np.int32)
    neg_ids[2] = 1  # row 1's positive drawn as a negative
    log_q = rng.uniform(-5, -1, k).astype(np.float32)
    o_neg = np.float64(q) @ np.float64(neg).T - (np.log(k) + np.float64(log_q))[None, :]
    o_neg[1, 2] = -np.inf
    o_pos = np.sum(np.float64(q) * np.float64(pos), axis=1)
    o = np.concatenate([o_pos[:, None], o_neg], axis=1)
    p = np.exp(o - _np_lse(o)[:, None])
    want_loss = _np_lse(o) - o_pos
    want_dq = p[:, 1:] @ np.float64(neg) + (p[:, :1] - 1.0) * np.float64(pos)
    want_dpos = (p[:, :1] - 1.0) * np.float64(q)
    want_dneg = p[:, 1:].T @ np.float64(q)

    def total(q, pos, neg):
      per = losses.sampled_softmax(q, pos, neg, pos_ids=pos_ids, neg_ids=neg_ids, neg_log_q=log_q)
      return per.sum(), per

    (_, per), grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2), has_aux=True))(
        q, pos, neg
    )
    tol = dict(rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(per, want_loss, **tol)
    for got, want in zip(grads, (want_dq, want_dpos, want_dneg)):
      assert np.all(np.isfinite(got))
      np.testing.assert_allclose(got, want, **tol)
  # K = 0: the softmax over the positive alone, loss 0 and zero gradients.
  q = _rand(rng, b, d)
  per, g_q = jax.value_and_grad(lambda q: losses.sampled_softmax(q, q, np.zeros((0, d))).sum())(q)
  assert per == 0.0 and np.all(np.asarray(g_q) == 0.0)


def test_sampled_softmax_logq_matches_tf_formula():
  rng = np.random.default_rng(8)
  b, k, d = 5, 8, 4
  q, pos, neg = _rand(rng, b, d), _rand(rng, b, d), _rand(rng, k, d)
  neg_log_q = rng.uniform(-5, -1, k).astype(np.float32)
  pos_log_q = rng.uniform(-5, -1, b).astype(np.float32)
  got = jax.jit(
      lambda q, t: losses.sampled_softmax(
          q, pos, neg, neg_log_q=neg_log_q, pos_log_q=pos_log_q, temperature=t
      )
  )(q, 0.5)
  want = np_sampled_softmax(
      q,
      pos,
      np.broadcast_to(neg, (b, k, d)),
      np.broadcast_to(neg_log_q, (b, k)),
      pos_log_q,
      0.5,
      drop_BxK=np.zeros((b, k), bool),
  )
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Without any correction it is the plain softmax over [pos, negs].
  plain = jax.jit(losses.sampled_softmax)(q, pos, neg)
  want_plain = np_sampled_softmax(
      q, pos, np.broadcast_to(neg, (b, k, d)), None, None, 1.0, drop_BxK=np.zeros((b, k), bool)
  )
  np.testing.assert_allclose(plain, want_plain, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ positive-only, gravity


def test_positive_only_matches_numpy():
  rng = np.random.default_rng(9)
  q, pos = _rand(rng, 6, 4), _rand(rng, 6, 4)
  s = np.sum(np.float64(q) * np.float64(pos), 1)
  np.testing.assert_allclose(losses.positive_only(q, pos), (1 - s) ** 2, rtol=1e-5)
  np.testing.assert_allclose(
      losses.positive_only(q, pos, kind="logistic"), np.log1p(np.exp(-s)), rtol=1e-5
  )
  # Stable where the naive -log(sigmoid(s)) overflows / underflows: -log sigmoid(-100) = 100.
  far = np.array([[-10.0, -10.0]], np.float32), np.array([[5.0, 5.0]], np.float32)
  np.testing.assert_allclose(losses.positive_only(*far, kind="logistic"), [100.0], rtol=1e-6)


def test_positive_only_unknown_kind_lists_choices():
  with pytest.raises(ValueError, match="squared.*logistic.*'hinge'"):
    losses.positive_only(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), kind="hinge")


def test_gravity_equals_brute_force_mean_over_pairs():
  rng = np.random.default_rng(10)
  q, v = _rand(rng, 7, 5), _rand(rng, 11, 5)
  brute = np.mean((np.float64(q) @ np.float64(v).T) ** 2)
  np.testing.assert_allclose(jax.jit(losses.gravity)(q, v), brute, rtol=1e-5)


# ------------------------------------------------------------------------------ bad input


def test_bad_input_raises_clear_errors():
  q, v = np.ones((2, 3), np.float32), np.ones((5, 3), np.float32)
  ids = np.zeros(2, np.int32)
  with pytest.raises(ValueError, match="chunk_size"):
    losses.full_softmax(q, v, ids, chunk_size=0)
  with pytest.raises(ValueError, match="temperature"):
    losses.full_softmax(q, v, ids, temperature=0.0)
  with pytest.raises(ValueError, match="temperature"):
    losses.sampled_softmax(q, q, v, temperature=np.float32(-1.0))
  with pytest.raises(ValueError, match="dim"):
    losses.full_softmax(q, np.ones((5, 4), np.float32), ids)
  with pytest.raises(ValueError, match="pos_weights shape"):
    losses.full_softmax(q, v, np.zeros((2, 3), np.int32), np.ones((2, 2), np.float32))
  with pytest.raises(ValueError, match="neg_ids"):
    losses.sampled_softmax(q, q, v, pos_ids=ids)
  with pytest.raises(ValueError, match="neg_log_q"):
    losses.sampled_softmax(q, q, v, neg_log_q=np.zeros(4, np.float32))
  with pytest.raises(ValueError, match="neg must have shape"):
    losses.sampled_softmax(q, q, np.ones((3, 5, 3), np.float32))

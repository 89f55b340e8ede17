"""The chunked full-catalogue passes against dense computations: jax.nn.logsumexp of the
[B, N] scores and its autodiff gradient, float64 numpy, and numpy sorting for the top-k."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import chunked


def _rand(rng, *shape):
  return rng.standard_normal(shape).astype(np.float32)


def _dense_lse(q, v):
  return jax.nn.logsumexp(jnp.dot(q, v.T), axis=1)


# N = 53 = 6*8 + 5 = 3*17 + 2 and < 64: ragged tails, and a chunk larger than N.
@pytest.mark.parametrize("chunk_size", [1, 8, 17, 53, 64])
def test_logsumexp_and_gradient_match_dense_logsumexp(chunk_size):
  rng = np.random.default_rng(0)
  b, n, d = 6, 53, 5
  q, v = 2.0 * _rand(rng, b, d), _rand(rng, n, d)
  ct = rng.uniform(0.5, 1.5, b).astype(np.float32)

  got = jax.jit(lambda q, v: chunked.logsumexp(q, v, chunk_size))(q, v)
  np.testing.assert_allclose(got, _dense_lse(q, v), rtol=1e-6, atol=1e-6)
  s = np.float64(q) @ np.float64(v).T
  m = s.max(1)
  np.testing.assert_allclose(got, m + np.log(np.exp(s - m[:, None]).sum(1)), rtol=1e-5)
  np.testing.assert_allclose(chunked.logsumexp_forward(q, v, chunk_size), got, rtol=0)

  def vg(lse_fn):
    return jax.jit(jax.value_and_grad(lambda q, v: jnp.sum(ct * lse_fn(q, v)), (0, 1)))

  val_c, (gq_c, gv_c) = vg(lambda q, v: chunked.logsumexp(q, v, chunk_size))(q, v)
  val_d, (gq_d, gv_d) = vg(_dense_lse)(q, v)
  np.testing.assert_allclose(val_c, val_d, rtol=1e-6)
  # atol: an entry that cancels to ~0 has no meaningful relative error.
  np.testing.assert_allclose(gq_c, gq_d, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gv_c, gv_d, rtol=1e-5, atol=1e-6)


def test_logsumexp_of_two_halves_with_global_lse_gives_the_whole_gradient():
  """The per-shard use in jaxrec.sharding: lse = logaddexp of the halves' forwards; the
  backward of each half with that global lse gives d query partial sums (summing to the
  whole d query) and that half's rows of d items."""
  rng = np.random.default_rng(1)
  b, n, d, chunk = 5, 40, 3, 7
  q, v = _rand(rng, b, d), _rand(rng, n, d)
  g = rng.uniform(0.5, 1.5, b).astype(np.float32)
  lo, hi = v[: n // 2], v[n // 2 :]
  lse = jnp.logaddexp(
      chunked.logsumexp_forward(q, lo, chunk), chunked.logsumexp_forward(q, hi, chunk)
  )
  np.testing.assert_allclose(lse, _dense_lse(q, v), rtol=1e-6)
  dq_lo, dv_lo = chunked.logsumexp_backward(q, lo, lse, g, chunk)
  dq_hi, dv_hi = chunked.logsumexp_backward(q, hi, lse, g, chunk)
  _, vjp = jax.vjp(_dense_lse, q, v)
  dq, dv = vjp(g)
  np.testing.assert_allclose(dq_lo + dq_hi, dq, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.concatenate([dv_lo, dv_hi]), dv, rtol=1e-5, atol=1e-6)


def test_logsumexp_holds_no_batch_by_items_array_in_either_pass():
  rng = np.random.default_rng(2)
  b, n, d, chunk = 7, 53, 3, 8
  q, v = _rand(rng, b, d), _rand(rng, n, d)
  fn = jax.grad(lambda q, v: jnp.sum(chunked.logsumexp(q, v, chunk)), (0, 1))
  text = str(jax.make_jaxpr(fn)(q, v))
  assert f"{b},{n}]" not in text and f"{n},{b}]" not in text
  assert f"{b},{chunk}]" in text  # the chunk's scores are there
  dense = jax.grad(lambda q, v: jnp.sum(_dense_lse(q, v)), (0, 1))
  assert f"{b},{n}]" in str(jax.make_jaxpr(dense)(q, v))  # the check can fail


@pytest.mark.parametrize("chunk_size,group", [(50, 16), (13, 1), (200, 4), (64, 2)])
def test_topk_batch_matches_numpy_sort_with_exclusions(chunk_size, group):
  rng = np.random.default_rng(3)
  b, n, d, k = 9, 200, 4, 6
  q, v = _rand(rng, b, d), _rand(rng, n, d)
  ex_r = rng.integers(0, b, 60)
  ex_c = rng.integers(0, n, 60)
  ((rows, cols),) = chunked.split_exclusions(ex_r, ex_c, b, b)
  vals, ids = chunked.topk_batch(
      q, v, jnp.asarray(rows), jnp.asarray(cols), k=k, chunk_size=chunk_size, group=group
  )
  s = np.float64(q) @ np.float64(v).T
  s[ex_r, ex_c] = -np.inf
  want_ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
  np.testing.assert_allclose(vals, np.take_along_axis(s, want_ids, 1), rtol=1e-5)
  np.testing.assert_array_equal(np.sort(ids, 1), np.sort(want_ids, 1))


def test_topk_batch_marks_unrankable_slots():
  q = np.ones((2, 2), np.float32)
  v = np.eye(3, 2, dtype=np.float32)
  vals, ids = chunked.topk_batch(
      q, v, jnp.asarray([0, 0]), jnp.asarray([0, 1]), k=3, chunk_size=2, group=1
  )
  assert list(np.asarray(ids[0])) == [2, -1, -1] and np.isneginf(vals[0, 1:]).all()
  assert sorted(np.asarray(ids[1])) == [0, 1, 2]


def test_chunk_candidates_contain_each_rows_top_k():
  rng = np.random.default_rng(4)
  scores = rng.standard_normal((5, 1000)).astype(np.float32)
  vals, cols = chunked.chunk_candidates(jnp.asarray(scores), 7, 16)
  assert vals.shape == (5, 7 * 16)
  np.testing.assert_array_equal(np.take_along_axis(scores, np.asarray(cols), 1), vals)
  np.testing.assert_array_equal(np.sort(np.asarray(vals), 1)[:, -7:], np.sort(scores, 1)[:, -7:])


def test_split_exclusions_keeps_every_pair_once_in_its_batch():
  rng = np.random.default_rng(5)
  rows, cols = rng.integers(0, 23, 50), rng.integers(0, 100, 50)
  parts = chunked.split_exclusions(rows, cols, 23, 5)
  assert len(parts) == 5 and len({r.size for r, _ in parts}) == 1
  width = parts[0][0].size
  assert width & (width - 1) == 0  # a power of two
  got = sorted(
      (int(r) + 5 * b, int(c)) for b, (rs, cs) in enumerate(parts) for r, c in zip(rs, cs) if r < 5
  )
  assert got == sorted(zip(rows.tolist(), cols.tolist()))

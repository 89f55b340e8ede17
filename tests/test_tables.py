"""Sparse row-wise optimizers equal their dense counterparts on the touched rows."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrec import tables

N, D = 23, 5
# Repeated ids (3 three times, 11 twice) and padding ids (== N) in one batch.
IDS = np.array([3, 11, 3, 0, N, 22, 11, 3, N, 7], np.int32)


def _table_and_grads(seed=0, n=N, m=len(IDS)):
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(n, D)).astype(np.float32)
  grads = rng.normal(size=(m, D)).astype(np.float32)
  return table, grads


def _dense_grad(ids, grads, n=N):
  """Dense [N,D] gradient of sum_m <table[ids[m]], grads[m]>: np.add.at, padding dropped."""
  dense = np.zeros((n, grads.shape[1]), np.float32)
  keep = (ids >= 0) & (ids < n)
  np.add.at(dense, ids[keep], grads[keep])
  return dense


def _touched(ids, n=N):
  return np.unique(ids[(ids >= 0) & (ids < n)])


def _untouched(ids, n=N):
  return np.setdiff1d(np.arange(n), _touched(ids, n))


def test_dedup_sum_matches_numpy_add_at():
  _, grads = _table_and_grads()
  uniq, summed = jax.jit(tables.dedup_sum, static_argnums=2)(
      jnp.asarray(IDS), jnp.asarray(grads), N
  )
  uniq, summed = np.asarray(uniq), np.asarray(summed)
  touched = _touched(IDS)
  k = len(touched)
  assert uniq.shape == (len(IDS),) and summed.shape == (len(IDS), D)
  np.testing.assert_array_equal(uniq[:k], touched)
  np.testing.assert_array_equal(uniq[k:], N)  # padding slots carry id N ...
  np.testing.assert_array_equal(summed[k:], 0.0)  # ... and zero gradient
  np.testing.assert_allclose(summed[:k], _dense_grad(IDS, grads)[touched], rtol=1e-6)


def test_dedup_sum_drops_negative_and_large_ids():
  ids = np.array([2, -1, 2, N + 5, 4], np.int32)
  grads = np.arange(5 * D, dtype=np.float32).reshape(5, D)
  uniq, summed = jax.jit(tables.dedup_sum, static_argnums=2)(
      jnp.asarray(ids), jnp.asarray(grads), N
  )
  np.testing.assert_array_equal(np.asarray(uniq), [2, 4, N, N, N])
  np.testing.assert_array_equal(np.asarray(summed)[:2], [grads[0] + grads[2], grads[4]])
  np.testing.assert_array_equal(np.asarray(summed)[2:], 0.0)


@pytest.mark.parametrize("num_rows", [50, 100_000])  # heavy repeats; mostly distinct ids
def test_dedup_sum_on_many_random_ids_matches_numpy(num_rows):
  """5,000 ids with repeats and out-of-range ones: the unique ids sorted and padded with
  num_rows, their summed gradients as np.unique + np.add.at give them."""
  rng = np.random.default_rng(3)
  ids = rng.integers(-3, num_rows + 3, size=5000).astype(np.int32)
  grads = rng.normal(size=(5000, 3)).astype(np.float32)
  uniq, summed = jax.jit(tables.dedup_sum, static_argnums=2)(
      jnp.asarray(ids), jnp.asarray(grads), num_rows
  )
  valid = (ids >= 0) & (ids < num_rows)
  want_ids, inverse = np.unique(ids[valid], return_inverse=True)
  want = np.zeros((len(want_ids), 3))
  np.add.at(want, inverse, grads[valid].astype(np.float64))
  k = len(want_ids)
  np.testing.assert_array_equal(np.asarray(uniq)[:k], want_ids)
  np.testing.assert_array_equal(np.asarray(uniq)[k:], num_rows)
  np.testing.assert_allclose(np.asarray(summed)[:k], want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(summed)[k:], 0.0)


def _dense_optax_step(opt, table, dense_grad, opt_state=None):
  params = jnp.asarray(table)
  opt_state = opt.init(params) if opt_state is None else opt_state
  updates, opt_state = opt.update(jnp.asarray(dense_grad), opt_state, params)
  return np.asarray(optax.apply_updates(params, updates)), opt_state


def test_row_adagrad_equals_dense_optax_adagrad_eagerly_bit_for_bit():
  # Same formula, same op order, executed op by op: optax's dense step and the sparse
  # step must agree exactly on touched rows (summation order of the 3 duplicate
  # gradients is sequential in both np.add.at and XLA's CPU scatter-add).
  table, grads = _table_and_grads()
  opt = tables.row_adagrad(0.3)
  new_table, state = opt.update(
      jnp.asarray(table), opt.init(jnp.asarray(table)), jnp.asarray(IDS), jnp.asarray(grads), 0
  )
  dense_table, dense_state = _dense_optax_step(optax.adagrad(0.3), table, _dense_grad(IDS, grads))
  np.testing.assert_array_equal(np.asarray(new_table), dense_table)
  np.testing.assert_array_equal(
      np.asarray(state.sum_of_squares), np.asarray(dense_state[0].sum_of_squares)
  )


def test_row_adagrad_jitted_multistep_equals_dense_and_leaves_untouched_rows():
  table, _ = _table_and_grads()
  opt = tables.row_adagrad(0.3)
  dense_opt = optax.adagrad(0.3)
  update = jax.jit(opt.update)
  sparse_table, state = jnp.asarray(table), opt.init(jnp.asarray(table))
  dense_table, dense_state = table, None
  rng = np.random.default_rng(1)
  for step in range(4):
    ids = rng.integers(0, N + 1, size=8).astype(np.int32)  # N = padding
    grads = rng.normal(size=(8, D)).astype(np.float32)
    before = np.asarray(sparse_table)
    sparse_table, state = update(sparse_table, state, jnp.asarray(ids), jnp.asarray(grads), step)
    dense_table, dense_state = _dense_optax_step(
        dense_opt, dense_table, _dense_grad(ids, grads), dense_state
    )
    after = np.asarray(sparse_table)
    # Untouched rows: bit-identical to before the step (and hence to dense optax).
    rest = _untouched(ids)
    assert np.array_equal(after[rest], before[rest])
    # Touched rows: XLA may fuse a*b+c into one FMA under jit, so allow a few ulps.
    touched = _touched(ids)
    assert not np.allclose(after[touched], before[touched])
    np.testing.assert_allclose(after, dense_table, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        np.asarray(state.sum_of_squares), np.asarray(dense_state[0].sum_of_squares), rtol=1e-6
    )


def test_row_sgd_equals_dense_sgd():
  table, grads = _table_and_grads(2)
  opt = tables.row_sgd(0.7)
  new_table, _ = jax.jit(opt.update)(
      jnp.asarray(table), opt.init(jnp.asarray(table)), jnp.asarray(IDS), jnp.asarray(grads), 0
  )
  new_table = np.asarray(new_table)
  dense_table, _ = _dense_optax_step(optax.sgd(0.7), table, _dense_grad(IDS, grads))
  rest = _untouched(IDS)
  assert np.array_equal(new_table[rest], table[rest])
  np.testing.assert_allclose(new_table, dense_table, rtol=1e-6, atol=1e-7)


def _numpy_lazy_adam(table, m, v, ids, grads, step, lr, b1=0.9, b2=0.999, eps=1e-8):
  """Reference lazy Adam in float64 numpy (TF LazyAdamOptimizer, optax bias correction)."""
  table, m, v = table.copy(), m.copy(), v.copy()
  g = _dense_grad(ids, grads).astype(np.float64)
  rows = _touched(ids)
  t = step + 1
  m[rows] = b1 * m[rows] + (1 - b1) * g[rows]
  v[rows] = b2 * v[rows] + (1 - b2) * g[rows] ** 2
  m_hat = m[rows] / (1 - b1**t)
  v_hat = v[rows] / (1 - b2**t)
  table[rows] -= lr * m_hat / (np.sqrt(v_hat) + eps)
  return table, m, v


def test_lazy_adam_matches_numpy_reference_over_steps():
  table, _ = _table_and_grads(3)
  opt = tables.lazy_adam(0.05)
  update = jax.jit(opt.update)
  sparse_table, state = jnp.asarray(table), opt.init(jnp.asarray(table))
  ref_t, ref_m, ref_v = table.astype(np.float64), np.zeros((N, D)), np.zeros((N, D))
  rng = np.random.default_rng(4)
  for step in range(5):  # different touched rows each step, some with repeats
    ids = rng.integers(0, N + 1, size=6).astype(np.int32)
    grads = rng.normal(size=(6, D)).astype(np.float32)
    before = np.asarray(sparse_table)
    sparse_table, state = update(sparse_table, state, jnp.asarray(ids), jnp.asarray(grads), step)
    ref_t, ref_m, ref_v = _numpy_lazy_adam(ref_t, ref_m, ref_v, ids, grads, step, 0.05)
    rest = _untouched(ids)
    assert np.array_equal(np.asarray(sparse_table)[rest], before[rest])
    # float32 vs float64 reference: relative error ~1e-6 per op, a handful of ops.
    np.testing.assert_allclose(np.asarray(sparse_table), ref_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.mu), ref_m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(state.nu), ref_v, rtol=1e-5, atol=1e-9)


def test_lazy_adam_with_all_rows_touched_equals_optax_adam():
  n = 6
  table, _ = _table_and_grads(5, n=n)
  opt = tables.lazy_adam(0.1)
  dense_opt = optax.adam(0.1)
  update = jax.jit(opt.update)
  sparse_table, state = jnp.asarray(table), opt.init(jnp.asarray(table))
  dense_table, dense_state = table, None
  rng = np.random.default_rng(6)
  for step in range(3):
    ids = rng.permutation(n).astype(np.int32)
    grads = rng.normal(size=(n, D)).astype(np.float32)
    sparse_table, state = update(sparse_table, state, jnp.asarray(ids), jnp.asarray(grads), step)
    dense_table, dense_state = _dense_optax_step(
        dense_opt, dense_table, _dense_grad(ids, grads, n), dense_state
    )
    np.testing.assert_allclose(np.asarray(sparse_table), dense_table, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam"])
def test_padding_only_batch_changes_nothing(name):
  table, grads = _table_and_grads(7)
  opt = tables.get_row_optimizer(name, 0.5)
  state = opt.init(jnp.asarray(table))
  ids = np.full(len(IDS), N, np.int32)
  new_table, new_state = jax.jit(opt.update)(
      jnp.asarray(table), state, jnp.asarray(ids), jnp.asarray(grads), 0
  )
  assert np.array_equal(np.asarray(new_table), table)
  for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)):
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_get_row_optimizer_rejects_unknown_name():
  with pytest.raises(ValueError, match="'rmsprop'.*adagrad"):
    tables.get_row_optimizer("rmsprop", 0.1)


def test_donated_update_is_in_place():
  """With donate_argnums the old table/state buffers are consumed (no copy kept)."""
  table, grads = _table_and_grads(8)
  opt = tables.row_adagrad(0.1)
  update = jax.jit(opt.update, donate_argnums=(0, 1))
  t = jnp.asarray(table)
  state = opt.init(t)
  new_t, new_state = update(t, state, jnp.asarray(IDS), jnp.asarray(grads), 0)
  assert t.is_deleted() and state.sum_of_squares.is_deleted()
  assert not new_t.is_deleted()
  # The compiled program aliases the donated inputs to the outputs (in-place scatter).
  hlo = update.lower(new_t, new_state, jnp.asarray(IDS), jnp.asarray(grads), 0).compile().as_text()
  assert "input_output_alias" in hlo
  # ... and XLA inserted no full-table copy before scattering into it.
  assert not re.search(rf"f32\[{N},{D}\]\S* copy\(", hlo), hlo


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam"])
def test_many_ids_take_the_dense_combine_path_with_the_same_result(name):
  """With M >= N ids (full softmax, long DNN bags) `_prepare` combines duplicates with a
  dense scatter-add instead of sorting; the update must equal the sorted sparse path's
  on touched rows and leave the untouched rows (and their state) bit-identical."""
  n = 9
  ids = np.array([1, 4, 1, 1, n, 8, 4, -1, 0, 1, 8, n], np.int32)  # M = 12 >= N = 9
  rng = np.random.default_rng(3)
  table = rng.normal(size=(n, D)).astype(np.float32)
  grads = rng.normal(size=(len(ids), D)).astype(np.float32)
  opt = tables.get_row_optimizer(name, 0.1)
  state0 = opt.init(jnp.asarray(table))
  dense_t, dense_s = opt.update(jnp.asarray(table), state0, jnp.asarray(ids), jnp.asarray(grads), 2)
  # reference: the numpy-summed gradients of the 4 unique ids (M' = 4 < N: sparse path)
  touched = _touched(ids, n)
  summed = _dense_grad(ids, grads, n)[touched]
  sparse_t, sparse_s = opt.update(
      jnp.asarray(table),
      opt.init(jnp.asarray(table)),
      jnp.asarray(touched.astype(np.int32)),
      jnp.asarray(summed),
      2,
  )
  np.testing.assert_allclose(np.asarray(dense_t), np.asarray(sparse_t), rtol=1e-6, atol=1e-7)
  for a, b in zip(jax.tree.leaves(dense_s), jax.tree.leaves(sparse_s)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  untouched = _untouched(ids, n)
  np.testing.assert_array_equal(np.asarray(dense_t)[untouched], table[untouched])


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam"])
def test_ids_none_is_every_row_in_order_bit_for_bit(name):
  """ids=None (the full softmax's update: every row, in order) takes dense elementwise math
  instead of a gather and scatter over arange(N); 3 jitted steps equal ids = arange(N)
  bit for bit (a row with zero gradient included), and grads that are not [N, D] fail."""
  n = 7
  rng = np.random.default_rng(5)
  table = jnp.asarray(rng.normal(size=(n, D)).astype(np.float32))
  opt = tables.get_row_optimizer(name, 0.1)
  update = jax.jit(opt.update)
  a_t, a_s = table, opt.init(table)
  b_t, b_s = table, opt.init(table)
  for step in range(3):
    grads = rng.normal(size=(n, D)).astype(np.float32)
    grads[2] = 0.0
    a_t, a_s = update(a_t, a_s, None, jnp.asarray(grads), step)
    b_t, b_s = update(b_t, b_s, jnp.arange(n, dtype=jnp.int32), jnp.asarray(grads), step)
  np.testing.assert_array_equal(np.asarray(a_t), np.asarray(b_t))
  for a, b in zip(jax.tree.leaves(a_s), jax.tree.leaves(b_s)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a_t), np.asarray(table))
  with pytest.raises(ValueError, match=r"ids=None \(every row\) needs grads \[N,D\]"):
    opt.update(table, opt.init(table), None, jnp.zeros((n - 1, D)), 0)

"""Embedding tables as plain [N,D] arrays, updated sparsely by row-wise optimizers.

A sampled-softmax step touches only M = B + K rows of an [N,D] item table. The train
step differentiates w.r.t. the *gathered* rows, combines duplicate ids with
`dedup_sum`, and a `RowOptimizer` rewrites only the unique touched rows with
`.at[ids].set(..., mode="drop")`. Under `jax.jit(..., donate_argnums=...)` on the
table and optimizer state, XLA performs that scatter in place, so a step costs
O(M*D) memory traffic, not O(N*D).

Conventions shared by every optimizer here:
  * ids may repeat (their gradients are summed, as a dense gradient would) and may
    contain out-of-range ids (padding, conventionally id == N, or < 0): those are
    ignored and their gradients discarded.
  * ids = None means every row, in order, with grads [N,D] (the full softmax): the same
    update as ids = arange(N), done as dense elementwise math with no gather or scatter
    (the full-softmax W2 of `benchmarks.peers`; docs/RESULTS.md).
  * rows that are not touched stay bit-identical, and so does their optimizer state
    (this is the "lazy" semantics of TF's LazyAdamOptimizer / sparse Adagrad).
  * `step` is the 0-based number of updates applied before this one (the train state's
    step counter); bias corrections use t = step + 1.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class RowOptimizer(NamedTuple):
  """A row-wise optimizer, like `optax.GradientTransformation` but sparse.

  init(table_NxD) -> state            pytree of arrays with leading dim N (or scalars)
  update(table_NxD, state, ids_M, grads_MxD, step) -> (new_table_NxD, new_state)
  """

  init: Callable[[Array], Any]
  update: Callable[[Array, Any, Array, Array, Any], tuple[Array, Any]]


def dedup_sum(ids_M: Array, grads_MxD: Array, num_rows: int) -> tuple[Array, Array]:
  """Sums gradients of repeated ids: the sparse form of a dense scatter-add.

  Returns (unique_ids_M, summed_MxD): the sorted unique in-range ids, padded to the
  static length M with `num_rows`, and for each the sum of its gradient rows
  (zeros in the padding slots). Ids outside [0, num_rows) are treated as padding and
  their gradients dropped. Equivalent to `np.add.at(dense_NxD, ids, grads)`
  restricted to the touched rows.
  """
  ids_M = jnp.asarray(ids_M, jnp.int32)
  grads_MxD = jnp.asarray(grads_MxD)
  if ids_M.ndim != 1 or grads_MxD.ndim != 2 or grads_MxD.shape[0] != ids_M.shape[0]:
    raise ValueError(
        f"dedup_sum expects ids [M] and grads [M,D]; got {ids_M.shape} and " f"{grads_MxD.shape}"
    )
  m = ids_M.shape[0]
  valid_M = (ids_M >= 0) & (ids_M < num_rows)
  ids_M = jnp.where(valid_M, ids_M, num_rows)
  grads_MxD = jnp.where(valid_M[:, None], grads_MxD, jnp.zeros((), grads_MxD.dtype))
  # One plain sort of the ids, their first occurrences compacted to the front, and each
  # id's slot found by binary search: `jnp.unique(..., return_inverse=True)` sorts (key,
  # index) pairs, which XLA:CPU does 5x slower than keys alone; this dedup_sum takes 5.8 ms
  # instead of 19.6 at M = 65,536 Zipf ids (docs/RESULTS.md).
  sorted_M = jnp.sort(ids_M)
  first_M = jnp.concatenate([jnp.ones((1,), bool), sorted_M[1:] != sorted_M[:-1]])
  slot_M = jnp.cumsum(first_M) - 1
  unique_M = (
      jnp.full((m,), num_rows, jnp.int32)
      .at[jnp.where(first_M, slot_M, m)]
      .set(sorted_M, mode="drop")  # the repeats all aim at slot m and are dropped
  )
  inverse_M = jnp.searchsorted(unique_M, ids_M)
  summed_MxD = jax.ops.segment_sum(grads_MxD, inverse_M, num_segments=m)
  return unique_M, summed_MxD


def _scatter_ids(unique_M: Array, num_rows: int) -> Array:
  """Makes the padding slots distinct out-of-range ids (N, N+1, ...).

  `unique_M` is sorted with every padding slot (== num_rows) at the end, so the result
  is sorted and duplicate-free, which lets the scatter use `unique_indices=True`
  (no atomics / serialization) while all padding writes are still dropped.
  """
  slot_M = jnp.arange(unique_M.shape[0], dtype=jnp.int32)
  return jnp.where(unique_M >= num_rows, num_rows + slot_M, unique_M)


def _gather(x_NxD: Array, ids_M: Array | None) -> Array:
  if ids_M is None:  # every row, in order
    return x_NxD
  # Padding ids clip to row N-1; what is read for them is never written back.
  return x_NxD.at[ids_M].get(mode="clip", indices_are_sorted=True)


def _scatter(x_NxD: Array, ids_M: Array | None, rows_MxD: Array) -> Array:
  if ids_M is None:
    return rows_MxD.astype(x_NxD.dtype)
  return x_NxD.at[ids_M].set(
      rows_MxD.astype(x_NxD.dtype), mode="drop", indices_are_sorted=True, unique_indices=True
  )


def _prepare(table_NxD: Array, ids_M: Array | None, grads_MxD: Array) -> tuple[Array | None, Array]:
  num_rows = table_NxD.shape[0]
  if grads_MxD.ndim != 2 or grads_MxD.shape[1] != table_NxD.shape[1]:
    raise ValueError(
        f"grads must be [M,{table_NxD.shape[1]}] for a table of shape "
        f"{table_NxD.shape}; got {grads_MxD.shape}"
    )
  if ids_M is None:
    if grads_MxD.shape[0] != num_rows:
      raise ValueError(
          f"ids=None (every row) needs grads [N,D]={table_NxD.shape}; got {grads_MxD.shape}"
      )
    return None, grads_MxD
  if ids_M.shape[0] >= num_rows:
    return _dense_combine(ids_M, grads_MxD, num_rows)
  return _sparse_combine(ids_M, grads_MxD, num_rows)


def _sparse_combine(ids_M: Array, grads_MxD: Array, num_rows: int) -> tuple[Array, Array]:
  """`_prepare` when M < N ids touch the table: the sorted unique ids (padding slots made
  distinct out-of-range ids) and their summed gradients, O(M log M + M D)."""
  unique_M, summed_MxD = dedup_sum(ids_M, grads_MxD, num_rows)
  return _scatter_ids(unique_M, num_rows), summed_MxD


def _dense_combine(ids_M: Array, grads_MxD: Array, num_rows: int) -> tuple[Array, Array]:
  """`_prepare` when M >= N ids touch the table (full softmax, long DNN bags): a dense
  scatter-add into [N, D] costs O((M + N) D) and beats sorting M ids. Untouched rows get
  out-of-range ids, so they are dropped exactly as on the sparse path."""
  ids_M = jnp.asarray(ids_M, jnp.int32)
  valid_M = (ids_M >= 0) & (ids_M < num_rows)
  ids_M = jnp.where(valid_M, ids_M, num_rows)
  summed_NxD = (
      jnp.zeros((num_rows, grads_MxD.shape[1]), grads_MxD.dtype)
      .at[ids_M]
      .add(grads_MxD, mode="drop")
  )
  touched_N = jnp.zeros((num_rows,), bool).at[ids_M].set(True, mode="drop")
  slot_N = jnp.arange(num_rows, dtype=jnp.int32)
  return jnp.where(touched_N, slot_N, num_rows + slot_N), summed_NxD


def row_sgd(learning_rate: float) -> RowOptimizer:
  """Sparse SGD: w[i] <- w[i] - lr * sum_{m: ids[m]=i} g[m] on touched rows i."""

  def init(table_NxD):
    del table_NxD
    return ()

  def update(table_NxD, state, ids_M, grads_MxD, step):
    del step
    ids_M, g_MxD = _prepare(table_NxD, ids_M, grads_MxD)
    w_MxD = _gather(table_NxD, ids_M)
    return _scatter(table_NxD, ids_M, w_MxD - learning_rate * g_MxD), state

  return RowOptimizer(init, update)


class AdagradState(NamedTuple):
  sum_of_squares: Array  # [N,D]


def row_adagrad(
    learning_rate: float, initial_accumulator_value: float = 0.1, eps: float = 1e-7
) -> RowOptimizer:
  """Sparse elementwise Adagrad (Duchi et al. 2011), identical to `optax.adagrad`.

  On each touched row i, with g the summed gradient of that row (optax's
  `scale_by_rss` followed by `scale_by_learning_rate`):
    a[i] <- a[i] + g^2
    w[i] <- w[i] + (-lr) * (where(a[i] > 0, rsqrt(a[i] + eps), 0) * g)
  Untouched rows (g = 0 in the dense view) keep w and a unchanged, exactly as optax
  would leave them, so sparse and dense Adagrad coincide.
  """

  def init(table_NxD):
    return AdagradState(jnp.full(table_NxD.shape, initial_accumulator_value, table_NxD.dtype))

  def update(table_NxD, state, ids_M, grads_MxD, step):
    del step
    ids_M, g_MxD = _prepare(table_NxD, ids_M, grads_MxD)
    acc_MxD = _gather(state.sum_of_squares, ids_M) + jnp.square(g_MxD)
    inv_sqrt_MxD = jnp.where(acc_MxD > 0, jax.lax.rsqrt(acc_MxD + eps), 0.0)
    update_MxD = (-learning_rate) * (inv_sqrt_MxD * g_MxD)
    w_MxD = _gather(table_NxD, ids_M) + update_MxD
    return (
        _scatter(table_NxD, ids_M, w_MxD),
        AdagradState(_scatter(state.sum_of_squares, ids_M, acc_MxD)),
    )

  return RowOptimizer(init, update)


class LazyAdamState(NamedTuple):
  mu: Array  # [N,D] first moment
  nu: Array  # [N,D] second moment


def lazy_adam(
    learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> RowOptimizer:
  """Lazy Adam: Adam moments updated only on touched rows (TF LazyAdamOptimizer).

  With t = step + 1 the *global* step, on each touched row i with summed gradient g:
    m[i] <- b1 m[i] + (1 - b1) g;   v[i] <- b2 v[i] + (1 - b2) g^2
    w[i] <- w[i] - lr * (m[i] / (1 - b1^t)) / (sqrt(v[i] / (1 - b2^t)) + eps)
  (optax.adam's bias-corrected form). Untouched rows keep w, m, v unchanged, unlike
  dense Adam whose moments decay every step. When every row is touched at every step
  this is exactly `optax.adam(lr, b1, b2, eps)`. Reference: Kingma & Ba 2015;
  tf.contrib.opt.LazyAdamOptimizer.
  """

  def init(table_NxD):
    return LazyAdamState(jnp.zeros_like(table_NxD), jnp.zeros_like(table_NxD))

  def update(table_NxD, state, ids_M, grads_MxD, step):
    ids_M, g_MxD = _prepare(table_NxD, ids_M, grads_MxD)
    t = jnp.asarray(step, jnp.float32) + 1.0
    m_MxD = b1 * _gather(state.mu, ids_M) + (1.0 - b1) * g_MxD
    v_MxD = b2 * _gather(state.nu, ids_M) + (1.0 - b2) * jnp.square(g_MxD)
    m_hat_MxD = m_MxD / (1.0 - b1**t)
    v_hat_MxD = v_MxD / (1.0 - b2**t)
    w_MxD = _gather(table_NxD, ids_M) - learning_rate * (m_hat_MxD / (jnp.sqrt(v_hat_MxD) + eps))
    return (
        _scatter(table_NxD, ids_M, w_MxD),
        LazyAdamState(_scatter(state.mu, ids_M, m_MxD), _scatter(state.nu, ids_M, v_MxD)),
    )

  return RowOptimizer(init, update)


# config train.optimizer -> row optimizer builder (learning_rate) -> RowOptimizer.
ROW_OPTIMIZERS = {"sgd": row_sgd, "adagrad": row_adagrad, "adam": lazy_adam}


def get_row_optimizer(name: str, learning_rate: float) -> RowOptimizer:
  """Returns the row optimizer `name` in {"sgd", "adagrad", "adam"} (adam = lazy Adam)."""
  if name not in ROW_OPTIMIZERS:
    raise ValueError(f"unknown row optimizer {name!r}; valid choices: {sorted(ROW_OPTIMIZERS)}")
  return ROW_OPTIMIZERS[name](learning_rate)

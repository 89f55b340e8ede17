"""Weighted alternating least squares (WALS / iALS) matrix factorization, and its run.

Objective (Hu, Koren & Volinsky 2008, "Collaborative Filtering for Implicit Feedback
Datasets"), over users i, items j, with S the set of observed (i, j) pairs:

  L(U, V) = sum_{(i,j) in S} w_ij (a_ij - u_i.v_j)^2          a_ij = 1
          + w0 * sum_{(i,j) not in S} (u_i.v_j)^2             unobserved weight w0
          + sum_i lambda_i ||u_i||^2 + sum_j lambda_j ||v_j||^2

Confidence w_ij from the observation's value r_ij (the `Interactions.weights`, 1 when
absent): "linear" 1 + alpha r (Hu et al.), "log" 1 + alpha log(1 + r) (their
logarithmic variant with epsilon = 1), "constant" 1 + alpha (values ignored). Duplicate (i, j) rows
are merged first, their values summed.

Regularization: reg_scaling="none" gives lambda_i = lambda for every row;
reg_scaling="frequency" gives the frequency-scaled form of Rendle, Krichene, Zhang &
Koren 2021 ("Revisiting the Performance of iALS on Item Recommendation Benchmarks"):
lambda_i = lambda * (|S_i| + w0 * K)^nu, with |S_i| the row's number of
observed pairs and K the number of columns of the other side (items when solving a
user, users when solving an item); nu = `reg_exponent` (default 1). Their loss weights
all pairs by alpha_0 (observed ones too) where ours weights only unobserved pairs by w0;
the scaling is taken over with alpha_0 -> w0.

Half-step. With V fixed, each row's problem is a ridge regression whose normal
equations, using "sum over unobserved = sum over all - sum over observed", are

  (w0 G + sum_{j in S_i} (w_ij - w0) v_j v_j^T + lambda_i I) u_i = sum_{j in S_i} w_ij v_j,

with G = V^T V computed once per half-step (the Gramian trick: the all-pairs w0 term
costs O(K D^2), not O(K) per row). All rows are solved at once, jitted:

  * rows are grouped by length into power-of-two buckets (padding <= 2x) and each
    bucket into blocks of rows (`RowBlocks`); every block is solved by a pure function
    of (fixed factors, Gramian, the block's entries), so blocks can be sharded over
    devices without changing the math;
  * solver="cholesky" (exact): in the eigenbasis of G (G = Q diag(s) Q^T), the shared
    part w0 G + lambda_i I is diagonal even with per-row lambda_i. A block whose padded
    row length L is < D is solved with the Woodbury identity (an L x L Cholesky per
    row instead of D x D) when every w_ij >= w0, otherwise with a D x D batched
    Cholesky (`jax.scipy.linalg.cho_factor`);
  * solver="cg": `cg_steps` conjugate-gradient steps per row, warm-started from the
    current row and matrix-free: A_i x = w0 G x + lambda_i x + sum_j (w_ij - w0)(v_j.x) v_j
    (Takacs, Pilaszy & Tikk 2011, "Applications of the Conjugate Gradient Method for
    Implicit Feedback Collaborative Filtering"; the `implicit` library's default).

Exact ALS never increases L (each half-step minimizes it over one side exactly).
"""

from __future__ import annotations

import functools
import math
import time
import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve
import numpy as np

from jaxrec import sharding

Array = jax.Array

SOLVERS = ("cholesky", "cg")
REG_SCALINGS = ("none", "frequency")
CONFIDENCES = ("linear", "log", "constant")

# Block sizes: a block gathers at most _BLOCK_ENTRIES padded entries ([B, L, D] floats)
# and at most _BLOCK_ROWS rows ([B, D, D] floats for the Cholesky path).
_BLOCK_ENTRIES = 1 << 16
_BLOCK_ROWS = 1024


class WALSState(NamedTuple):
  """The two factor tables: scores are users_UxD @ items_NxD.T."""

  users_UxD: Array
  items_NxD: Array


class RowBucket(NamedTuple):
  """Rows whose length is <= L, padded to L, split into G blocks of B rows.

  rows_GxB: row id of each slot (padding slots repeat a valid id; their output is
  dropped). cols_GxBxL / values_GxBxL: column id and raw value r of each entry (padding
  entries have col 0). valid_GxBxL: 1.0 for a real entry, 0.0 for padding.
  counts_GxB: observed entries per row (0 for padding slots).
  """

  rows_GxB: Array
  cols_GxBxL: Array
  values_GxBxL: Array
  valid_GxBxL: Array
  counts_GxB: Array


class RowBlocks(NamedTuple):
  """A CSR matrix laid out for batched per-row solves.

  buckets: one `RowBucket` per padded length. out_index_R: for each row r, its position
  in the concatenation of all buckets' flattened [G*B] slots.
  """

  buckets: tuple[RowBucket, ...]
  out_index_R: Array


# ----------------------------------------------------------------------------- checks


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"{name}={value!r} is not one of {tuple(choices)}")


def _check_hparams(unobserved_weight, regularization, alpha, reg_exponent=1.0) -> None:
  for name, v in (
      ("unobserved_weight", unobserved_weight),
      ("regularization", regularization),
      ("alpha", alpha),
      ("reg_exponent", reg_exponent),
  ):
    if not np.isfinite(v) or v < 0:
      raise ValueError(f"{name}={v!r} must be a finite number >= 0")
  if unobserved_weight == 0 and regularization == 0:
    raise ValueError(
        "unobserved_weight=0 and regularization=0 leave every row with fewer "
        "observations than dimensions singular: make one of them > 0"
    )


# ------------------------------------------------------------------------ host layout


def _merge_pairs(rows, cols, values, num_rows, num_cols):
  """Sorts (row, col) pairs, merging duplicates by summing their values (numpy)."""
  rows = np.asarray(rows, np.int64)
  cols = np.asarray(cols, np.int64)
  values = np.ones(rows.shape, np.float64) if values is None else np.asarray(values, np.float64)
  if rows.shape != cols.shape or values.shape != rows.shape or rows.ndim != 1:
    raise ValueError(
        f"rows, cols and values must be 1-D of one length, got shapes "
        f"{rows.shape}, {cols.shape}, {values.shape}"
    )
  for name, ids, upper in (("row", rows, num_rows), ("column", cols, num_cols)):
    if ids.size and (ids.min() < 0 or ids.max() >= upper):
      raise ValueError(
          f"{name} ids must lie in [0, {upper}), got range " f"[{ids.min()}, {ids.max()}]"
      )
  if values.size and (not np.all(np.isfinite(values)) or values.min() < 0):
    raise ValueError(
        f"interaction values (weights) must be finite and >= 0, got min " f"{values.min()!r}"
    )
  key = rows * num_cols + cols
  uniq, inverse = np.unique(key, return_inverse=True)
  merged = np.zeros(uniq.shape, np.float64)
  np.add.at(merged, inverse, values)
  return (
      (uniq // num_cols).astype(np.int32),
      (uniq % num_cols).astype(np.int32),
      merged.astype(np.float32),
  )


def csr_from_pairs(rows, cols, values, num_rows: int, num_cols: int):
  """(offsets [R+1] int64, cols [E] int32, values [E] float32) with duplicates merged."""
  r, c, v = _merge_pairs(rows, cols, values, num_rows, num_cols)
  offsets = np.zeros(num_rows + 1, np.int64)
  np.cumsum(np.bincount(r, minlength=num_rows), out=offsets[1:])
  return offsets, c, v


def make_row_blocks(
    offsets, cols, values, *, block_entries: int = _BLOCK_ENTRIES, block_rows: int = _BLOCK_ROWS
) -> RowBlocks:
  """Lays a CSR matrix out as power-of-two length buckets of row blocks (host, numpy).

  Row r of length n goes to the bucket of length L = 2^ceil(log2(max(n, 1))); a bucket of
  R_b rows is cut into G = ceil(R_b / B_max) blocks of B = ceil(R_b / G) rows, with
  B_max = min(block_rows, block_entries // L) (at least 1).
  """
  offsets = np.asarray(offsets, np.int64)
  cols = np.asarray(cols, np.int32)
  values = np.asarray(values, np.float32)
  if (
      offsets.ndim != 1
      or offsets.size < 1
      or offsets[0] != 0
      or np.any(np.diff(offsets) < 0)
      or offsets[-1] != cols.size
      or values.shape != cols.shape
  ):
    raise ValueError(
        "offsets must be non-decreasing from 0 to len(cols) and values must "
        f"match cols; got offsets[-1]={offsets[-1] if offsets.size else None}, "
        f"len(cols)={cols.size}, len(values)={values.size}"
    )
  num_rows = offsets.size - 1
  lengths = np.diff(offsets)
  padded = np.left_shift(1, np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64))
  buckets, order = [], []
  for L in np.unique(padded):
    L = int(L)
    rows = np.flatnonzero(padded == L)
    r_b = rows.size
    b_max = max(1, min(block_rows, block_entries // L))
    g = -(-r_b // b_max)
    b = -(-r_b // g)
    slot_rows = np.concatenate([rows, np.full(g * b - r_b, rows[0])])
    slot_len = np.concatenate([lengths[rows], np.zeros(g * b - r_b, np.int64)])
    pos = np.arange(L)[None, :]
    valid = pos < slot_len[:, None]
    idx = np.where(valid, offsets[slot_rows][:, None] + pos, 0)
    ent_cols = np.where(valid, cols[idx] if cols.size else 0, 0).astype(np.int32)
    ent_vals = np.where(valid, values[idx] if values.size else 0, 0).astype(np.float32)
    buckets.append(
        RowBucket(
            rows_GxB=jnp.asarray(slot_rows.reshape(g, b).astype(np.int32)),
            cols_GxBxL=jnp.asarray(ent_cols.reshape(g, b, L)),
            values_GxBxL=jnp.asarray(ent_vals.reshape(g, b, L)),
            valid_GxBxL=jnp.asarray(valid.reshape(g, b, L).astype(np.float32)),
            counts_GxB=jnp.asarray(slot_len.reshape(g, b).astype(np.float32)),
        )
    )
    order.append(rows)
  # Position of row r in the concatenated slot outputs.
  out_index = np.empty(num_rows, np.int32)
  start = 0
  for rows, bk in zip(order, buckets):
    out_index[rows] = start + np.arange(rows.size)
    start += bk.rows_GxB.size
  return RowBlocks(buckets=tuple(buckets), out_index_R=jnp.asarray(out_index))


# ---------------------------------------------------------------------- device solves


def confidence_weights(values, alpha, confidence: str = "linear"):
  """w = 1 + alpha r ("linear"), 1 + alpha log(1 + r) ("log"), 1 + alpha ("constant")."""
  _check_choice("confidence", confidence, CONFIDENCES)
  if confidence == "linear":
    return 1.0 + alpha * values
  if confidence == "log":
    return 1.0 + alpha * jnp.log1p(values)
  return jnp.ones_like(values) * (1.0 + alpha)


def _row_reg(counts, reg, w0, num_cols, reg_scaling, reg_exponent):
  """lambda_i: lambda, or lambda (|S_i| + w0 K)^nu (Rendle et al. 2021)."""
  if reg_scaling == "none":
    return jnp.full_like(counts, reg)
  return reg * (counts + w0 * num_cols) ** reg_exponent


def _block_cholesky(P_BxLxD, w_BxL, c_BxL, shared_BxD):
  """Exact solve of (diag(shared) + P^T diag(c) P) x = P^T w, D x D Cholesky per row."""
  A = jnp.einsum("bl,bld,ble->bde", c_BxL, P_BxLxD, P_BxLxD)
  A = A + jax.vmap(jnp.diag)(shared_BxD)
  rhs = jnp.einsum("bl,bld->bd", w_BxL, P_BxLxD)
  return cho_solve(cho_factor(A, lower=True), rhs[..., None])[..., 0]


def _block_woodbury(P_BxLxD, w_BxL, c_BxL, shared_BxD):
  """Same solve via Woodbury; needs c >= 0. With M = diag(shared), Ps = sqrt(c) P:
  (M + Ps^T Ps)^-1 = M^-1 - M^-1 Ps^T (I + Ps M^-1 Ps^T)^-1 Ps M^-1 (L x L system)."""
  L = P_BxLxD.shape[1]
  d = 1.0 / shared_BxD
  Ps = jnp.sqrt(jnp.maximum(c_BxL, 0.0))[..., None] * P_BxLxD
  t = d * jnp.einsum("bl,bld->bd", w_BxL, P_BxLxD)
  K = jnp.einsum("bld,bd,bmd->blm", Ps, d, Ps) + jnp.eye(L, dtype=P_BxLxD.dtype)
  y = cho_solve(cho_factor(K, lower=True), jnp.einsum("bld,bd->bl", Ps, t)[..., None])[..., 0]
  return t - d * jnp.einsum("bld,bl->bd", Ps, y)


def _solve_block_exact(
    fixed_rot_KxD,
    eig_D,
    bucket_blk,
    *,
    w0,
    reg,
    alpha,
    num_cols,
    reg_scaling,
    reg_exponent,
    confidence,
    use_woodbury,
):
  """One block of rows, exact; returns the solutions in the rotated basis, [B, D]."""
  rows, cols, vals, valid, counts = bucket_blk
  del rows
  P = fixed_rot_KxD[cols] * valid[..., None]
  w = confidence_weights(vals, alpha, confidence) * valid
  c = w - w0 * valid
  lam = _row_reg(counts, reg, w0, num_cols, reg_scaling, reg_exponent)
  shared = w0 * eig_D[None, :] + lam[:, None]
  if not use_woodbury:
    x = _block_cholesky(P, w, c, shared)
  else:
    # Woodbury needs every c >= 0 (i.e. w_ij >= w0); otherwise fall back to D x D.
    x = jax.lax.cond(jnp.all(c >= 0), _block_woodbury, _block_cholesky, P, w, c, shared)
  return jnp.where(counts[:, None] > 0, x, 0.0)


def _solve_block_cg(
    fixed_KxD,
    gram_DxD,
    x0_RxD,
    bucket_blk,
    *,
    w0,
    reg,
    alpha,
    num_cols,
    reg_scaling,
    reg_exponent,
    confidence,
    cg_steps,
):
  """One block of rows, `cg_steps` matrix-free CG steps from the current rows, [B, D]."""
  rows, cols, vals, valid, counts = bucket_blk
  P = fixed_KxD[cols] * valid[..., None]
  w = confidence_weights(vals, alpha, confidence) * valid
  c = w - w0 * valid
  lam = _row_reg(counts, reg, w0, num_cols, reg_scaling, reg_exponent)

  def matvec(x_BxD):
    Px = jnp.einsum("bld,bd->bl", P, x_BxD)
    return w0 * x_BxD @ gram_DxD + lam[:, None] * x_BxD + jnp.einsum("bld,bl->bd", P, c * Px)

  def cg_step(_, carry):
    x, r, p, rs = carry
    Ap = matvec(p)
    pAp = jnp.sum(p * Ap, axis=-1)
    step = jnp.where(pAp > 0, rs / jnp.where(pAp > 0, pAp, 1.0), 0.0)
    x = x + step[:, None] * p
    r = r - step[:, None] * Ap
    rs_new = jnp.sum(r * r, axis=-1)
    beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0)
    return x, r, r + beta[:, None] * p, rs_new

  x = x0_RxD[rows]
  r = jnp.einsum("bl,bld->bd", w, P) - matvec(x)
  x, *_ = jax.lax.fori_loop(0, cg_steps, cg_step, (x, r, r, jnp.sum(r * r, axis=-1)))
  return jnp.where(counts[:, None] > 0, x, 0.0)


def _after(x, dep):
  """x, made to depend on dep at run time (adds dep[0] * 0, which XLA does not fold).

  Used to chain the buckets so that at most one LAPACK call runs at a time: jaxlib's CPU
  LAPACK kernels (potrf, trsm) block a pool thread while waiting on tasks they queue on
  XLA's intra-op pool, and two of them running at once on a 2-thread pool deadlock
  (observed with jax 0.10.2 on 2 CPU cores). `lax.optimization_barrier` does not order
  them: XLA drops it before the CPU thunk schedule.
  """
  return x + 0.0 * dep.ravel()[0]


def _map_blocks(fn, bucket: RowBucket):
  """Applies fn to each of the bucket's G blocks (sequentially, bounding memory)."""
  if bucket.rows_GxB.shape[0] == 1:
    return fn(tuple(a[0] for a in bucket))
  out_GxBxD = jax.lax.map(fn, tuple(bucket))
  return out_GxBxD.reshape(-1, out_GxBxD.shape[-1])


@functools.partial(
    jax.jit, static_argnames=("solver", "reg_scaling", "confidence", "woodbury_max_len")
)
def solve_rows(
    fixed_KxD,
    blocks: RowBlocks,
    x0_RxD,
    *,
    w0,
    reg,
    alpha,
    reg_exponent=1.0,
    solver: str = "cholesky",
    cg_steps=3,
    reg_scaling: str = "none",
    confidence: str = "linear",
    woodbury_max_len: int | None = None,
) -> Array:
  """New factors for all rows of `blocks` with the other side `fixed_KxD` held fixed.

  Jitted; w0, reg, alpha, reg_exponent and cg_steps are traced (no recompilation when
  they change). x0_RxD: the current rows (CG warm start; unused by "cholesky"). woodbury_max_len: the
  largest padded row length solved with Woodbury (default D - 1; 0: never).
  """
  num_cols, dim = fixed_KxD.shape
  common = dict(
      w0=w0,
      reg=reg,
      alpha=alpha,
      num_cols=num_cols,
      reg_scaling=reg_scaling,
      reg_exponent=reg_exponent,
      confidence=confidence,
  )
  gram_DxD = fixed_KxD.T @ fixed_KxD
  outs = []
  if solver == "cholesky":
    eig_D, Q_DxD = jnp.linalg.eigh(gram_DxD)
    eig_D = jnp.maximum(eig_D, 0.0)
    fixed_rot = fixed_KxD @ Q_DxD
    max_len = (dim - 1) if woodbury_max_len is None else woodbury_max_len
    prev = eig_D
    for bucket in blocks.buckets:
      bucket = bucket._replace(valid_GxBxL=_after(bucket.valid_GxBxL, prev))
      fn = functools.partial(
          _solve_block_exact,
          fixed_rot,
          eig_D,
          use_woodbury=bucket.cols_GxBxL.shape[-1] <= max_len,
          **common,
      )
      prev = _map_blocks(fn, bucket)
      outs.append(prev)
    return jnp.concatenate(outs)[blocks.out_index_R] @ Q_DxD.T
  if solver == "cg":
    for bucket in blocks.buckets:
      fn = functools.partial(
          _solve_block_cg, fixed_KxD, gram_DxD, x0_RxD, cg_steps=cg_steps, **common
      )
      outs.append(_map_blocks(fn, bucket))
    return jnp.concatenate(outs)[blocks.out_index_R]
  raise ValueError(f"solver={solver!r} is not one of {SOLVERS}")


def solve_half_step(
    fixed_KxD,
    offsets,
    cols,
    values,
    *,
    w0,
    reg,
    alpha,
    x0=None,
    solver: str = "cholesky",
    cg_steps: int = 3,
    reg_scaling: str = "none",
    reg_exponent: float = 1.0,
    confidence: str = "linear",
    woodbury_max_len: int | None = None,
) -> Array:
  """One WALS half-step: argmin over the rows of a CSR matrix (R rows over K columns).

  offsets [R+1], cols [E], values [E] (raw r_ij; ones for binary data) give row i's
  observed columns cols[offsets[i]:offsets[i+1]]. Returns the new [R, D] rows solving
  (w0 G + sum_{j in S_i} (w_ij - w0) v_j v_j^T + lambda_i I) u_i = sum_{j in S_i} w_ij v_j
  exactly ("cholesky") or approximately with `cg_steps` CG steps from `x0` ("cg"; zeros
  if x0 is None). The layout is built on the host; the solve is `solve_rows` (jitted).
  Fitting loops should build `make_row_blocks` once and call `solve_rows`.
  """
  _check_choice("solver", solver, SOLVERS)
  _check_choice("reg_scaling", reg_scaling, REG_SCALINGS)
  _check_choice("confidence", confidence, CONFIDENCES)
  _check_hparams(w0, reg, alpha, reg_exponent)
  fixed_KxD = jnp.asarray(fixed_KxD, jnp.float32)
  blocks = make_row_blocks(offsets, cols, values)
  num_rows = np.asarray(offsets).size - 1
  x0 = (
      jnp.zeros((num_rows, fixed_KxD.shape[1]), jnp.float32)
      if x0 is None
      else jnp.asarray(x0, jnp.float32)
  )
  return solve_rows(
      fixed_KxD,
      blocks,
      x0,
      w0=w0,
      reg=reg,
      alpha=alpha,
      reg_exponent=reg_exponent,
      solver=solver,
      cg_steps=int(cg_steps),
      reg_scaling=reg_scaling,
      confidence=confidence,
      woodbury_max_len=woodbury_max_len,
  )


# --------------------------------------------------------------------------- objective


@functools.partial(jax.jit, static_argnames=("reg_scaling", "confidence"))
def _objective(
    U,
    V,
    users_E,
    items_E,
    values_E,
    user_counts,
    item_counts,
    w0,
    reg,
    alpha,
    reg_exponent,
    *,
    reg_scaling,
    confidence,
):
  s = jnp.sum(U[users_E] * V[items_E], axis=-1)
  w = confidence_weights(values_E, alpha, confidence)
  observed = jnp.sum(w * (1.0 - s) ** 2)
  # sum over unobserved s^2 = sum over all s^2 - sum over observed s^2, and
  # sum over all (u_i.v_j)^2 = <U^T U, V^T V> (Frobenius): two D x D Gramians.
  all_pairs = jnp.sum((U.T @ U) * (V.T @ V))
  unobserved = all_pairs - jnp.sum(s * s)
  lam_u = _row_reg(user_counts, reg, w0, V.shape[0], reg_scaling, reg_exponent)
  lam_v = _row_reg(item_counts, reg, w0, U.shape[0], reg_scaling, reg_exponent)
  penalty = jnp.sum(lam_u * jnp.sum(U * U, -1)) + jnp.sum(lam_v * jnp.sum(V * V, -1))
  return observed + w0 * unobserved + penalty


class _Problem(NamedTuple):
  users_E: Array
  items_E: Array
  values_E: Array
  user_counts: Array
  item_counts: Array
  user_blocks: RowBlocks
  item_blocks: RowBlocks


def _values(train):
  return None if getattr(train, "weights", None) is None else train.weights


def _prepare(train, with_blocks: bool = True) -> _Problem:
  u, i, v = _merge_pairs(
      train.user_ids, train.item_ids, _values(train), train.num_users, train.num_items
  )
  uc = np.bincount(u, minlength=train.num_users).astype(np.float32)
  ic = np.bincount(i, minlength=train.num_items).astype(np.float32)
  ub = ib = None
  if with_blocks:
    # u, i are sorted by (user, item): user-major CSR directly; item-major via a stable sort.
    offs_u = np.concatenate([[0], np.cumsum(uc.astype(np.int64))])
    ub = make_row_blocks(offs_u, i, v)
    order = np.argsort(i, kind="stable")
    offs_i = np.concatenate([[0], np.cumsum(ic.astype(np.int64))])
    ib = make_row_blocks(offs_i, u[order], v[order])
  return _Problem(
      jnp.asarray(u), jnp.asarray(i), jnp.asarray(v), jnp.asarray(uc), jnp.asarray(ic), ub, ib
  )


def wals_objective(
    state: WALSState,
    train,
    *,
    unobserved_weight: float,
    regularization: float,
    alpha: float,
    reg_scaling: str = "none",
    reg_exponent: float = 1.0,
    confidence: str = "linear",
) -> float:
  """The exact objective L(U, V) of the module docstring, in O(E D + (U + N) D^2).

  The unobserved sum is sum_{all} (u.v)^2 - sum_{observed} (u.v)^2, with the all-pairs
  sum computed as <U^T U, V^T V> (never the U x N score matrix).
  """
  _check_choice("reg_scaling", reg_scaling, REG_SCALINGS)
  _check_choice("confidence", confidence, CONFIDENCES)
  _check_hparams(unobserved_weight, regularization, alpha, reg_exponent)
  p = _prepare(train, with_blocks=False)
  return _objective_of(
      state, p, unobserved_weight, regularization, alpha, reg_exponent, reg_scaling, confidence
  )


def _objective_of(state, p: _Problem, w0, reg, alpha, reg_exponent, reg_scaling, confidence):
  return float(
      _objective(
          state.users_UxD,
          state.items_NxD,
          p.users_E,
          p.items_E,
          p.values_E,
          p.user_counts,
          p.item_counts,
          w0,
          reg,
          alpha,
          reg_exponent,
          reg_scaling=reg_scaling,
          confidence=confidence,
      )
  )


# ------------------------------------------------------------------------------ fitting


def wals_init(key, num_users: int, num_items: int, dim: int, scale: float = 0.1) -> WALSState:
  """Factors drawn from N(0, (scale / sqrt(dim))^2), the scaling of Rendle et al. 2021."""
  if int(dim) < 1 or int(num_users) < 1 or int(num_items) < 1:
    raise ValueError(f"num_users={num_users}, num_items={num_items} and dim={dim} must be >= 1")
  ku, kv = jax.random.split(key)
  std = scale / math.sqrt(dim)
  return WALSState(
      std * jax.random.normal(ku, (num_users, dim), jnp.float32),
      std * jax.random.normal(kv, (num_items, dim), jnp.float32),
  )


def wals_fit(
    train,
    *,
    dim: int,
    unobserved_weight: float,
    regularization: float,
    alpha: float,
    iterations: int,
    seed: int = 0,
    solver: str = "cholesky",
    reg_scaling: str = "none",
    cg_steps: int = 3,
    confidence: str = "linear",
    reg_exponent: float = 1.0,
    init_scale: float = 0.1,
    callback: Callable[[int, WALSState, dict], None] | None = None,
) -> tuple[WALSState, list[dict]]:
  """Fits U, V by alternating exact (or CG) half-steps: users given items, then items.

  `train` is an `Interactions` (user_ids, item_ids, num_users, num_items, weights).
  Returns (state, history) with one dict per iteration: "objective" (L after the
  iteration, from `wals_objective`) and "seconds" (wall time of the two half-steps,
  the first including compilation). callback(iteration, state, record), if given, runs
  after each iteration (1-based).
  """
  _check_choice("solver", solver, SOLVERS)
  _check_choice("reg_scaling", reg_scaling, REG_SCALINGS)
  _check_choice("confidence", confidence, CONFIDENCES)
  _check_hparams(unobserved_weight, regularization, alpha, reg_exponent)
  if int(iterations) != iterations or iterations < 0:
    raise ValueError(f"iterations={iterations!r} must be an integer >= 0")
  if int(cg_steps) != cg_steps or cg_steps < 1:
    raise ValueError(f"cg_steps={cg_steps!r} must be an integer >= 1")
  p = _prepare(train)
  state = wals_init(
      jax.random.PRNGKey(seed), train.num_users, train.num_items, int(dim), init_scale
  )
  mesh = sharding.ambient_mesh()  # set by sharding.mesh_context(); None on one device
  state = sharding.place_rows(state, mesh)  # factors split by rows over the devices
  kw = dict(
      w0=float(unobserved_weight),
      reg=float(regularization),
      alpha=float(alpha),
      reg_exponent=float(reg_exponent),
      solver=solver,
      cg_steps=int(cg_steps),
      reg_scaling=reg_scaling,
      confidence=confidence,
  )
  history = []
  for it in range(1, int(iterations) + 1):
    t0 = time.perf_counter()
    users = solve_rows(state.items_NxD, p.user_blocks, state.users_UxD, **kw)
    items = solve_rows(users, p.item_blocks, state.items_NxD, **kw)
    items.block_until_ready()
    seconds = time.perf_counter() - t0
    state = sharding.place_rows(WALSState(users, items), mesh)
    record = {
        "objective": _objective_of(
            state, p, kw["w0"], kw["reg"], kw["alpha"], kw["reg_exponent"], reg_scaling, confidence
        ),
        "seconds": seconds,
    }
    history.append(record)
    if callback is not None:
      callback(it, state, record)
  return state, history


# --------------------------------------------------------------------------------------
# The closed-form model of the launcher (config model.name = "wals").


@dataclasses.dataclass(frozen=True, eq=False)
class Fitted:
  """WALS factors as the launcher evaluates them (`evaluate.evaluate_scorer`); history has
  one dict per iteration ("objective", "seconds")."""

  query_UxD: Array
  items_NxD: Array
  history: list


def fit_config(config, train) -> Fitted:
  """Fits WALS with config.model's settings on `train` (`wals_fit`)."""
  m = config.model
  state, history = wals_fit(
      train,
      dim=int(m.dim),
      unobserved_weight=float(m.unobserved_weight),
      regularization=float(m.regularization),
      alpha=float(m.alpha),
      iterations=int(m.iterations),
      seed=int(config.seed),
      solver=m.solver,
      reg_scaling=m.reg_scaling,
  )
  return Fitted(state.users_UxD, state.items_NxD, history)

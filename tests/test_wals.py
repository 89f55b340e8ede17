"""WALS: half-steps and objective against dense numpy float64 computations."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from jaxrec import wals
from jaxrec.data import Interactions

# Small dense problem: R users x K items, D factors. Row 3 is empty, row 4 is long (so
# that the bucket layout has Woodbury buckets (L < D) and D x D Cholesky buckets (L >= D)).
R, K, D = 12, 40, 6


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  observed = rng.random((R, K)) < 0.15
  observed[3] = False
  observed[4, :30] = True
  values = rng.integers(1, 6, (R, K)).astype(np.float64) * observed  # ratings 1..5
  fixed = rng.normal(size=(K, D))
  return observed, values, fixed


def _confidence(values, alpha, kind):
  return {
      "linear": 1 + alpha * values,
      "log": 1 + alpha * np.log1p(values),
      "constant": np.full_like(values, 1 + alpha),
  }[kind]


def _dense_weights(observed, values, alpha, w0, kind="linear"):
  """W_ij = w_ij on observed pairs, w0 elsewhere; targets A_ij = 1 on observed pairs."""
  return np.where(observed, _confidence(values, alpha, kind), w0), observed.astype(np.float64)


def _row_lambdas(observed, lam, w0, scaling, nu=1.0):
  n = observed.sum(1)
  if scaling == "none":
    return np.full(n.shape, lam)
  return lam * (n + w0 * observed.shape[1]) ** nu  # Rendle et al. 2021


def _lstsq_rows(fixed, W, A, lambdas):
  """Each row: argmin_u sum_j W_ij (A_ij - u.v_j)^2 + lambda_i |u|^2, as the stacked
  least-squares problem [sqrt(W_i) V; sqrt(lambda_i) I] u ~ [sqrt(W_i) a_i; 0]."""
  out = np.zeros((W.shape[0], fixed.shape[1]))
  for i in range(W.shape[0]):
    sw = np.sqrt(W[i])
    M = np.vstack([sw[:, None] * fixed, np.sqrt(lambdas[i]) * np.eye(fixed.shape[1])])
    y = np.concatenate([sw * A[i], np.zeros(fixed.shape[1])])
    out[i] = np.linalg.lstsq(M, y, rcond=None)[0]
  return out


def _csr(observed, values):
  rows, cols = np.nonzero(observed)
  return wals.csr_from_pairs(rows, cols, values[rows, cols], *observed.shape)


def _dense_objective(
    U, V, observed, values, *, w0, lam, alpha, scaling="none", nu=1.0, kind="linear"
):
  W, A = _dense_weights(observed, values, alpha, w0, kind)
  S = U @ V.T
  reg = _row_lambdas(observed, lam, w0, scaling, nu) @ (U * U).sum(1) + _row_lambdas(
      observed.T, lam, w0, scaling, nu
  ) @ (V * V).sum(1)
  return float(np.sum(W * (A - S) ** 2) + reg)


# Tolerance for float32 solves vs float64 lstsq: the systems here have condition numbers
# below ~1e3, so float32 (eps 6e-8) gives relative errors well under 1e-4.
RTOL = 1e-4

HALF_STEP_CASES = [
    # (alpha, w0): confidence-weighted with w >= w0 (Woodbury path), constant weights
    # w = w0 = 1, and w0 > w (Woodbury inapplicable: falls back to D x D Cholesky).
    (2.0, 0.1),
    (0.0, 1.0),
    (0.0, 2.0),
]
SOLVERS = [
    dict(solver="cholesky"),
    dict(solver="cholesky", woodbury_max_len=0),
    dict(solver="cg", cg_steps=4 * D),
]  # CG converges in <= D exact steps


@pytest.mark.parametrize("alpha,w0", HALF_STEP_CASES)
@pytest.mark.parametrize("solver_kw", SOLVERS, ids=["cholesky", "cholesky-direct", "cg"])
def test_half_step_equals_dense_weighted_least_squares(alpha, w0, solver_kw):
  observed, values, fixed = _problem()
  lam = 0.3
  W, A = _dense_weights(observed, values, alpha, w0)
  expected = _lstsq_rows(fixed, W, A, _row_lambdas(observed, lam, w0, "none"))
  got = wals.solve_half_step(
      fixed.astype(np.float32), *_csr(observed, values), w0=w0, reg=lam, alpha=alpha, **solver_kw
  )
  np.testing.assert_allclose(np.asarray(got), expected, atol=RTOL * np.abs(expected).max())
  assert np.all(np.asarray(got)[3] == 0)  # empty row: the minimizer is 0


@pytest.mark.parametrize("nu", [1.0, 0.5])
def test_frequency_scaled_regularization(nu):
  observed, values, fixed = _problem(1)
  lam, w0, alpha = 0.02, 0.1, 1.0
  W, A = _dense_weights(observed, values, alpha, w0)
  lambdas = _row_lambdas(observed, lam, w0, "frequency", nu)
  assert np.ptp(lambdas) > 0.1 * lambdas.mean()  # the scaling really varies
  expected = _lstsq_rows(fixed, W, A, lambdas)
  for kw in (dict(solver="cholesky"), dict(solver="cg", cg_steps=4 * D)):
    got = wals.solve_half_step(
        fixed.astype(np.float32),
        *_csr(observed, values),
        w0=w0,
        reg=lam,
        alpha=alpha,
        reg_scaling="frequency",
        reg_exponent=nu,
        **kw,
    )
    np.testing.assert_allclose(np.asarray(got), expected, atol=RTOL * np.abs(expected).max())


def test_row_blocks_split_into_several_blocks_give_the_same_rows():
  observed, values, fixed = _problem(2)
  offsets, cols, vals = _csr(observed, values)
  one = wals.make_row_blocks(offsets, cols, vals)
  many = wals.make_row_blocks(offsets, cols, vals, block_rows=2, block_entries=8)
  assert any(b.rows_GxB.shape[0] > 1 for b in many.buckets)
  W, A = _dense_weights(observed, values, 1.0, 0.2)
  expected = _lstsq_rows(fixed, W, A, np.full(R, 0.5))
  for blocks in (one, many):
    for kw in (dict(solver="cholesky"), dict(solver="cg", cg_steps=4 * D)):
      got = wals.solve_rows(
          jnp.asarray(fixed, jnp.float32),
          blocks,
          jnp.zeros((R, D)),
          w0=0.2,
          reg=0.5,
          alpha=1.0,
          **kw,
      )
      np.testing.assert_allclose(np.asarray(got), expected, atol=RTOL * np.abs(expected).max())


def _interactions(observed, values, duplicate=True):
  rows, cols = np.nonzero(observed)
  w = values[rows, cols]
  if duplicate:  # the same pair twice, values split: merged back by summing
    rows = np.append(rows, rows[0])
    cols = np.append(cols, cols[0])
    w = np.append(w, 0.0)
  return Interactions(
      user_ids=rows.astype(np.int32),
      item_ids=cols.astype(np.int32),
      num_users=observed.shape[0],
      num_items=observed.shape[1],
      weights=w.astype(np.float32),
  )


@pytest.mark.parametrize(
    "scaling,kind", [("none", "linear"), ("frequency", "log"), ("none", "constant")]
)
def test_objective_equals_dense_brute_force(scaling, kind):
  observed, values, _ = _problem(3)
  rng = np.random.default_rng(3)
  U = rng.normal(size=(R, D)).astype(np.float32)
  V = rng.normal(size=(K, D)).astype(np.float32)
  hp = dict(w0=0.3, lam=0.05, alpha=2.0)
  expected = _dense_objective(
      U.astype(np.float64),
      V.astype(np.float64),
      observed,
      values,
      scaling=scaling,
      kind=kind,
      nu=0.7,
      **hp,
  )
  got = wals.wals_objective(
      wals.WALSState(jnp.asarray(U), jnp.asarray(V)),
      _interactions(observed, values),
      unobserved_weight=hp["w0"],
      regularization=hp["lam"],
      alpha=hp["alpha"],
      reg_scaling=scaling,
      reg_exponent=0.7,
      confidence=kind,
  )
  # float32 sums of ~500 terms of size ~10: relative error ~1e-6; 1e-5 leaves margin.
  assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("scaling", ["none", "frequency"])
def test_exact_als_objective_decreases_monotonically(scaling):
  observed, values, _ = _problem(4)
  train = _interactions(observed, values, duplicate=False)
  hp = dict(unobserved_weight=0.2, regularization=0.1 if scaling == "none" else 0.01, alpha=1.0)
  states = []
  _, history = wals.wals_fit(
      train,
      dim=D,
      iterations=6,
      seed=0,
      reg_scaling=scaling,
      callback=lambda it, state, rec: states.append(state),
      **hp,
  )
  init = wals.wals_init(jax.random.PRNGKey(0), R, K, D)
  dense = [
      _dense_objective(
          np.asarray(s.users_UxD, np.float64),
          np.asarray(s.items_NxD, np.float64),
          observed,
          values,
          w0=hp["unobserved_weight"],
          lam=hp["regularization"],
          alpha=hp["alpha"],
          scaling=scaling,
      )
      for s in [init] + states
  ]
  # The reported objective is the dense one (float32 vs float64: rel 1e-5).
  np.testing.assert_allclose([h["objective"] for h in history], dense[1:], rtol=1e-5)
  # Exact ALS never increases the objective; allow float32 solve noise (1e-6 relative).
  assert all(b <= a * (1 + 1e-6) for a, b in zip(dense, dense[1:])), dense
  assert dense[-1] < 0.5 * dense[0]  # and it actually optimizes


def test_cg_is_warm_started_and_monotone():
  """CG starts from x0: from the exact solution one step stays there (from zeros it does
  not); and each CG half-step lowers the quadratic, so CG-ALS is monotone too."""
  observed, values, fixed = _problem(5)
  csr = _csr(observed, values)
  hp = dict(w0=0.2, reg=0.1, alpha=1.0)
  exact = wals.solve_half_step(fixed.astype(np.float32), *csr, **hp)
  scale = float(jnp.abs(exact).max())
  warm = wals.solve_half_step(
      fixed.astype(np.float32), *csr, solver="cg", cg_steps=1, x0=exact, **hp
  )
  cold = wals.solve_half_step(fixed.astype(np.float32), *csr, solver="cg", cg_steps=1, **hp)
  np.testing.assert_allclose(np.asarray(warm), np.asarray(exact), atol=RTOL * scale)
  assert float(jnp.abs(cold - exact).max()) > 100 * RTOL * scale
  train = _interactions(observed, values, duplicate=False)
  _, history = wals.wals_fit(
      train,
      dim=D,
      iterations=5,
      solver="cg",
      cg_steps=2,
      unobserved_weight=0.2,
      regularization=0.1,
      alpha=1.0,
  )
  objectives = [h["objective"] for h in history]
  assert all(b <= a * (1 + 1e-6) for a, b in zip(objectives, objectives[1:])), objectives


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(solver="lu"), "solver"),
        (dict(reg_scaling="log"), "reg_scaling"),
        (dict(confidence="exp"), "confidence"),
        (dict(unobserved_weight=-1.0), "unobserved_weight"),
        (dict(unobserved_weight=0.0, regularization=0.0), "singular"),
        (dict(iterations=-1), "iterations"),
        (dict(cg_steps=0), "cg_steps"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
  observed, values, _ = _problem()
  args = dict(dim=D, unobserved_weight=0.1, regularization=0.1, alpha=1.0, iterations=1)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    wals.wals_fit(_interactions(observed, values), **args)


def test_negative_weights_rejected():
  observed, values, _ = _problem()
  with pytest.raises(ValueError, match="weights"):
    wals.wals_fit(
        _interactions(observed, -values),
        dim=D,
        unobserved_weight=0.1,
        regularization=0.1,
        alpha=1.0,
        iterations=1,
    )

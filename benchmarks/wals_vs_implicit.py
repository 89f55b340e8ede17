"""jaxrec WALS vs the `implicit` library's ALS (CPU) on ml-latest-small.

Data: all ratings as positives (binary, r = 1), per-user 80/20 random split
(`jaxrec.data.split(kind="random", seed=0)`). Both models: the same factors (64),
regularization, iterations (15) and confidence, and the same evaluation: full-ranking
recall@20 over all items with train items masked (`jaxrec.metrics.evaluate`, implicit's
factors fed into it too).

Objective mapping. jaxrec minimizes
  sum_obs w (1 - u.v)^2 + w0 sum_unobs (u.v)^2 + lambda (|U|^2 + |V|^2),  w = 1 + alpha r.
implicit (>= 0.5, `implicit/cpu/als.py`: A = YtY + reg I + sum_obs (C - 1) y y^T,
b = sum_obs C y) minimizes
  sum_obs C (1 - u.v)^2 + 1 * sum_unobs (u.v)^2 + reg (|U|^2 + |V|^2),
with C = implicit_alpha * (matrix value): the matrix must already hold the confidence
(no "1 +" is added). Dividing jaxrec's objective by w0 gives implicit's form, so we fit
implicit with matrix values w / w0, implicit alpha = 1 and regularization lambda / w0
(here w0 = 1: values 1 + alpha, reg = lambda). Same minimizers; the script checks one
half-step numerically (implicit's Cholesky `recalculate_user` vs `wals.solve_rows`).
Initializations differ (implicit: uniform [0, 0.01); jaxrec: normal, std 0.1 / sqrt(D)).

Timing: seconds per iteration (both half-steps), median over iterations 2..T; jaxrec's
first iteration also compiles, so compile = first - median. Compared solver to solver:
exact (jaxrec "cholesky" vs implicit use_cg=False) and CG with 3 steps (jaxrec "cg" vs
implicit's default use_cg=True). Threads: implicit num_threads = --threads with
OPENBLAS_NUM_THREADS=1 (as implicit recommends); XLA's CPU client uses every core
(--threads should equal the core count for a fair comparison).

  python -m benchmarks.wals_vs_implicit                 # comparison + a small tuning grid
  python -m benchmarks.wals_vs_implicit --no_tune       # comparison only
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy / scipy / implicit load

import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ml-latest-small"


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data_dir", default=str(DEFAULT_DATA))
  p.add_argument("--dim", type=int, default=64)
  p.add_argument("--iterations", type=int, default=15)
  p.add_argument("--regularization", type=float, default=1.0, help="lambda")
  p.add_argument("--alpha", type=float, default=10.0, help="w = 1 + alpha r")
  p.add_argument("--unobserved_weight", type=float, default=1.0, help="w0")
  p.add_argument("--cg_steps", type=int, default=3)
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no_tune", action="store_true", help="skip the jaxrec tuning grid")
  args = p.parse_args(argv)
  for name in ("dim", "iterations", "cg_steps", "threads"):
    if getattr(args, name) <= 0:
      p.error(f"--{name} must be > 0; got {getattr(args, name)}")
  if args.unobserved_weight <= 0:
    p.error("--unobserved_weight must be > 0 (implicit's objective has w0 = 1 after scaling)")
  return args


def load(data_dir):
  from jaxrec import data

  path = pathlib.Path(data_dir)
  if not path.exists():
    sys.exit(
        f"ml-latest-small not found at {path}: pass --data_dir=DIR (a folder holding "
        "ratings.csv; see ../shared/data/README.md)"
    )
  inter = data.load_movielens(path)
  inter = data.Interactions(
      user_ids=inter.user_ids,
      item_ids=inter.item_ids,
      num_users=inter.num_users,
      num_items=inter.num_items,
  )  # binary
  return data.split(inter, kind="random", test_fraction=0.2, seed=0)


def implicit_matrix(train, values):
  import scipy.sparse as sp

  return sp.csr_matrix(
      (values.astype(np.float32), (train.user_ids, train.item_ids)),
      shape=(train.num_users, train.num_items),
  )


def fit_implicit(train, args, use_cg):
  from implicit.cpu.als import AlternatingLeastSquares

  w = 1.0 + args.alpha  # binary: r = 1
  m = AlternatingLeastSquares(
      factors=args.dim,
      regularization=args.regularization / args.unobserved_weight,
      alpha=1.0,
      iterations=args.iterations,
      use_cg=use_cg,
      num_threads=args.threads,
      random_state=args.seed,
      calculate_training_loss=False,
  )
  m.cg_steps = args.cg_steps
  seconds = []
  m.fit(
      implicit_matrix(train, np.full(train.num_interactions, w / args.unobserved_weight)),
      show_progress=False,
      callback=lambda it, elapsed, loss: seconds.append(elapsed),
  )
  return m, seconds


def mapping_check(train, args):
  """Max |difference| between one implicit Cholesky user half-step and jaxrec's."""
  import jax
  import jax.numpy as jnp
  from implicit.cpu.als import AlternatingLeastSquares
  from jaxrec import wals

  rng = np.random.default_rng(0)
  items = (0.1 * rng.standard_normal((train.num_items, args.dim))).astype(np.float32)
  m = AlternatingLeastSquares(
      factors=args.dim,
      regularization=args.regularization / args.unobserved_weight,
      alpha=1.0,
      use_cg=False,
      num_threads=args.threads,
  )
  m.item_factors = items
  w = 1.0 + args.alpha
  mat = implicit_matrix(train, np.full(train.num_interactions, w / args.unobserved_weight))
  ref = m.recalculate_user(np.arange(train.num_users), mat)
  offsets, cols, vals = wals.csr_from_pairs(
      train.user_ids, train.item_ids, None, train.num_users, train.num_items
  )
  ours = wals.solve_rows(
      jnp.asarray(items),
      wals.make_row_blocks(offsets, cols, vals),
      jnp.zeros((train.num_users, args.dim)),
      w0=args.unobserved_weight,
      reg=args.regularization,
      alpha=args.alpha,
  )
  ours = np.asarray(jax.device_get(ours))
  return float(np.abs(ours - ref).max()), float(np.abs(ref).max())


def main(argv=None):
  args = parse_args(argv)
  import jax
  import threadpoolctl
  from jaxrec import metrics, wals

  train, test = load(args.data_dir)
  print(
      f"ml-latest-small: {train.num_users} users, {train.num_items} items, "
      f"{train.num_interactions} train / {test.num_interactions} test pairs (binary)"
  )
  blas = [
      f"{d['internal_api']}:{d['num_threads']}"
      for d in threadpoolctl.threadpool_info()
      if d["user_api"] == "blas"
  ]
  print(
      f"threads: implicit num_threads={args.threads} (BLAS pools {blas}); jax "
      f"{jax.__version__} on {jax.devices()[0].platform}, XLA CPU pool = "
      f"{os.cpu_count()} cores"
  )
  print(
      f"settings: dim={args.dim} iterations={args.iterations} lambda={args.regularization} "
      f"alpha={args.alpha} w0={args.unobserved_weight} cg_steps={args.cg_steps}"
  )
  print(
      f"mapping: implicit values = (1 + alpha r) / w0 = "
      f"{(1 + args.alpha) / args.unobserved_weight:g}, implicit alpha = 1, implicit "
      f"regularization = lambda / w0 = {args.regularization / args.unobserved_weight:g}"
  )
  diff, scale = mapping_check(train, args)
  print(
      f"mapping check: one user half-step, max |jaxrec - implicit| = {diff:.2e} "
      f"(max |factor| {scale:.2e})"
  )

  hp = dict(
      unobserved_weight=args.unobserved_weight, regularization=args.regularization, alpha=args.alpha
  )
  rows = []
  for solver, use_cg in (("cholesky", False), ("cg", True)):
    state, hist = wals.wals_fit(
        train,
        dim=args.dim,
        iterations=args.iterations,
        seed=args.seed,
        solver=solver,
        cg_steps=args.cg_steps,
        **hp,
    )
    j_sec = [h["seconds"] for h in hist]
    j_rec = metrics.evaluate(state.users_UxD, state.items_NxD, train, test, ks=(20,))
    model, i_sec = fit_implicit(train, args, use_cg)
    i_rec = metrics.evaluate(model.user_factors, model.item_factors, train, test, ks=(20,))
    i_obj = wals.wals_objective(wals.WALSState(model.user_factors, model.item_factors), train, **hp)
    j_med, i_med = float(np.median(j_sec[1:])), float(np.median(i_sec[1:]))
    row = dict(
        solver=solver,
        jaxrec_s_per_iter=j_med,
        implicit_s_per_iter=i_med,
        ratio=j_med / i_med,
        jaxrec_compile_s=j_sec[0] - j_med,
        jaxrec_recall20=j_rec["recall@20"],
        implicit_recall20=i_rec["recall@20"],
        jaxrec_objective=hist[-1]["objective"],
        implicit_objective=i_obj,
    )
    rows.append(row)
    print(
        f"[{solver:8s} vs implicit use_cg={use_cg!s:5s}] s/iter jaxrec {j_med * 1e3:7.1f} ms"
        f"  implicit {i_med * 1e3:7.1f} ms  ratio {row['ratio']:.2f}  (jaxrec compile "
        f"{row['jaxrec_compile_s']:.1f} s) | recall@20 jaxrec {row['jaxrec_recall20']:.4f}"
        f"  implicit {row['implicit_recall20']:.4f} | final objective jaxrec "
        f"{row['jaxrec_objective']:.1f}  implicit {i_obj:.1f}"
    )

  best = best_plain = None
  if not args.no_tune:
    print(
        "tuning jaxrec (cholesky) on this split -- selected on the test pairs, so the "
        "best value is optimistic:"
    )
    grid = [
        dict(regularization=lam, alpha=alpha, unobserved_weight=1.0, reg_scaling="none")
        for alpha in (1.0, 3.0, 10.0)
        for lam in (3.0, 10.0, 30.0, 50.0)
    ]
    grid += [
        dict(regularization=lam, alpha=3.0, unobserved_weight=1.0, reg_scaling="frequency")
        for lam in (0.005, 0.01, 0.02)
    ]
    for hp_t in grid:
      state, _ = wals.wals_fit(
          train, dim=args.dim, iterations=args.iterations, seed=args.seed, **hp_t
      )
      r = metrics.evaluate(state.users_UxD, state.items_NxD, train, test, ks=(20,))
      print(f"  {hp_t}  recall@20 {r['recall@20']:.4f}")
      if best is None or r["recall@20"] > best["jaxrec_recall20"]:
        best = dict(hp_t, jaxrec_recall20=r["recall@20"])
      if hp_t["reg_scaling"] == "none" and (  # a setting implicit can express
          best_plain is None or r["recall@20"] > best_plain["jaxrec_recall20"]
      ):
        best_plain = dict(hp_t, jaxrec_recall20=r["recall@20"])
    tuned = argparse.Namespace(
        **{
            **vars(args),
            **{k: best_plain[k] for k in ("regularization", "alpha", "unobserved_weight")},
        }
    )
    model, _ = fit_implicit(train, tuned, use_cg=False)
    best_plain["implicit_recall20"] = metrics.evaluate(
        model.user_factors, model.item_factors, train, test, ks=(20,)
    )["recall@20"]
    print(f"best without reg scaling, implicit (Cholesky) at the same setting: {best_plain}")
    print(f"best: {best}")
  print(
      "RESULT "
      + json.dumps(
          {
              "comparison": rows,
              "best_tuned": best,
              "best_tuned_no_scaling": best_plain,
              "implicit_threads": args.threads,
          }
      )
  )


if __name__ == "__main__":
  main()

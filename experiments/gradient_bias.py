"""Gradient fidelity of sampled softmax on trained models: bias and variance vs K.

The measurement of experiments/configs/gradient_bias.py (its docstring: the command, what
is measured, the samplers as the diagnostic sees them, what was found), run by
`experiments.sweep` through `analysis` below. The nested-sampler machinery (NestedSampler,
make_nested, the *_corrections, nested_fidelity and its jitted estimator) is marked off
below: it moves to jaxrec/diagnostics.py.

Two choices make this affordable and precise (both tested in tests/test_gradient_bias.py):
  * Nested draws. Every draw takes K_max negatives; the estimate at K uses the first K of
    them (a prefix of i.i.d. draws is K i.i.d. draws; for hard_pool, K draws in the same
    pool), the others masked out of the loss. All K and both logQ settings share the draws
    (common random numbers) and one compilation per (dataset, sampler).
  * A control variate for E g - g*, with the importance-sampling gradient g_IS (closed-form
    mean) of the same negatives; `noise` is the RMS error of the bias vector relative to
    ||g*||; bias below ~2x noise is not resolved. The raw estimate is kept in the CSV
    (raw_rel_norm_err, raw_one_minus_cos).
"""

from __future__ import annotations

import csv
import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments import report as report_lib
from experiments import sweep
from experiments.configs import common
from experiments.configs import synthetic as synthetic_config
from jaxrec import diagnostics, losses, samplers

DATASETS = ("synthetic", "movielens")
SAMPLERS = diagnostics.nested_names()  # the registered samplers it can measure
CSV_FIELDS = (
    "dataset",
    "sampler",
    "K",
    "logq",
    "one_minus_cos",
    "rel_norm_err",
    "variance",
    "num_negatives",
    "noise",
    "raw_rel_norm_err",
    "raw_one_minus_cos",
)
_MASKED = 1e30  # neg_log_q of a masked-out (beyond-K) slot: its logit becomes ~ -1e30


# --------------------------------------------------------------------------------------
# The estimator: all (K, logQ) settings of one sampler from the same R draws.


def _flat(grads):
  return jnp.concatenate([grads[0].reshape(-1), grads[1].reshape(-1)])


def _gather_scores(query_BxD, items_NxD, ids, inv_t):
  """s_bk = q_b . v_ids / T for shared ids [S] or per-example ids [B,S] -> [B,S]."""
  if ids.ndim == 1:
    return jnp.dot(query_BxD, items_NxD[ids].T) * inv_t
  return jnp.einsum("bd,bsd->bs", query_BxD, items_NxD[ids]) * inv_t


def nested_fidelity(
    key,
    query_BxD,
    items_NxD,
    pos_ids_B,
    nested: diagnostics.NestedSampler,
    ks: Sequence[int],
    *,
    num_draws: int,
    temperature: float = 1.0,
) -> dict[str, np.ndarray]:
  """Bias and variance of the sampled-softmax gradient for every K in `ks`, logQ on and off.

  Draw r uses fold_in(key, r) (as `diagnostics.gradient_fidelity`). Returns arrays [2*len(ks)]
  in the order (K_1, logQ), (K_1, no logQ), (K_2, logQ), ... under keys "K", "logq",
  "one_minus_cos", "rel_norm_err", "variance", "noise", "raw_one_minus_cos",
  "raw_rel_norm_err" (see the module docstring).
  """
  num_draws = samplers.check_int("num_draws", num_draws, 2)
  ks = [samplers.check_int("K", int(k), 1) for k in ks]
  ks_C = jnp.asarray(np.repeat(ks, 2), jnp.float32)
  logq_C = jnp.asarray(np.tile([True, False], len(ks)))
  support_N = jnp.asarray(nested.support_N)
  out = _run(
      key,
      jnp.asarray(query_BxD, jnp.float32),
      jnp.asarray(items_NxD, jnp.float32),
      jnp.asarray(pos_ids_B, jnp.int32),
      ks_C,
      logq_C,
      support_N,
      draw=nested.draw,
      corrections=nested.corrections,
      num_draws=num_draws,
      temperature=float(temperature),
  )
  out = {k: np.asarray(v, np.float64) for k, v in out.items()}
  out["K"] = np.repeat(ks, 2)
  out["logq"] = np.tile([True, False], len(ks))
  return out


def _run_impl(
    key,
    query_BxD,
    items_NxD,
    pos_ids_B,
    ks_C,
    logq_C,
    support_N,
    *,
    draw,
    corrections,
    num_draws,
    temperature,
):
  inv_t = 1.0 / temperature
  batch = query_BxD.shape[0]
  rows_B = jnp.arange(batch)
  g_star = _flat(
      diagnostics.exact_gradient(query_BxD, items_NxD, pos_ids_B, temperature=temperature)
  )
  norm2 = jnp.sum(jnp.square(g_star))

  # The exact softmax (constants of every surrogate below).
  scores_BxN = jnp.dot(query_BxD, items_NxD.T) * inv_t
  log_z_B = jax.nn.logsumexp(scores_BxN, axis=1)
  p_BxN = jnp.exp(scores_BxN - log_z_B[:, None])
  p_pos_B = p_BxN[rows_B, pos_ids_B]

  def pos_term(q, v):
    return (p_pos_B - 1.0) * jnp.sum(q * v[pos_ids_B], axis=1) * inv_t

  # E[g_IS] in closed form: sum over the drawable non-positive items of p_bj grad s_bj.
  not_pos_BxN = jnp.arange(items_NxD.shape[0])[None, :] != pos_ids_B[:, None]
  w_BxN = jnp.where(support_N[None, :] & not_pos_BxN, p_BxN, 0.0)

  def expected_is(q, v):
    return jnp.mean(jnp.sum(w_BxN * jnp.dot(q, v.T) * inv_t, axis=1) + pos_term(q, v))

  e_gis = _flat(jax.grad(expected_is, argnums=(0, 1))(query_BxD, items_NxD))

  def one_draw(r):
    ids, log_q = draw(jax.random.fold_in(key, r), query_BxD, items_NxD)
    ids, log_q = jax.lax.stop_gradient(ids), jax.lax.stop_gradient(log_q)
    num_slots = ids.shape[-1]
    hit_BxS = (ids[None, :] if ids.ndim == 1 else ids) == pos_ids_B[:, None]
    scores_BxS = _gather_scores(query_BxD, items_NxD, ids, inv_t)

    def one_setting(k, logq):
      active, c_loss, c_true = corrections(ids, log_q, k)
      neg_log_q = jnp.where(active, jnp.where(logq, c_loss, 0.0) - math.log(num_slots), _MASKED)

      def sampled(q, v):
        return jnp.mean(
            losses.sampled_softmax(
                q,
                v[pos_ids_B],
                v[ids],
                pos_ids=pos_ids_B,
                neg_ids=ids,
                neg_log_q=neg_log_q,
                temperature=temperature,
            )
        )

      w_BxS = jnp.where(active & ~hit_BxS, jnp.exp(scores_BxS - log_z_B[:, None] - c_true), 0.0)

      def importance(q, v):
        s = _gather_scores(q, v, ids, inv_t)
        return jnp.mean(jnp.sum(w_BxS * s, axis=1) + pos_term(q, v))

      g = _flat(jax.grad(sampled, argnums=(0, 1))(query_BxD, items_NxD))
      g_is = _flat(jax.grad(importance, argnums=(0, 1))(query_BxD, items_NxD))
      return g, g - g_is

    return jax.vmap(one_setting)(ks_C, logq_C)

  def body(carry, r):  # Welford's running means and co-moments of g and d = g - g_IS
    mean_g, mean_d, m2_g, m2_d, c_gd = carry
    g_CxP, d_CxP = one_draw(r)
    n = (r + 1).astype(jnp.float32)
    delta_g, delta_d = g_CxP - mean_g, d_CxP - mean_d
    mean_g = mean_g + delta_g / n
    mean_d = mean_d + delta_d / n
    m2_g = m2_g + jnp.sum(delta_g * (g_CxP - mean_g), axis=1)
    m2_d = m2_d + jnp.sum(delta_d * (d_CxP - mean_d), axis=1)
    c_gd = c_gd + jnp.sum(delta_g * (d_CxP - mean_d), axis=1)
    return (mean_g, mean_d, m2_g, m2_d, c_gd), None

  num_settings = ks_C.shape[0]
  zeros_CxP = jnp.zeros((num_settings, g_star.shape[0]), jnp.float32)
  zeros_C = jnp.zeros((num_settings,), jnp.float32)
  (mean_g, mean_d, m2_g, m2_d, c_gd), _ = jax.lax.scan(
      body, (zeros_CxP, zeros_CxP, zeros_C, zeros_C, zeros_C), jnp.arange(num_draws)
  )

  # Control variate: b(beta) = mean(g - beta g_IS) + beta E[g_IS] - g*
  #                           = (1 - beta) (mean g - g*) + beta (mean d + E[g_IS] - g*)
  # is unbiased for any fixed beta (0: the raw estimate, 1: via d = g - g_IS). The beta
  # minimising tr Var((1 - beta) g + beta d) is taken from the same draws (an O(1/R)
  # effect); everything is written in g and d so nothing cancels when g ~ g_IS.
  m2_i = jnp.maximum(m2_g - 2 * c_gd + m2_d, 1e-30)  # tr Var(g_IS) * R
  beta_C = jnp.clip((m2_g - c_gd) / m2_i, 0.0, 1.0)
  m2_e = jnp.maximum(
      (1 - beta_C) ** 2 * m2_g + 2 * beta_C * (1 - beta_C) * c_gd + beta_C**2 * m2_d, 0.0
  )
  norm = jnp.sqrt(norm2)

  def one_minus_cos(g_CxP):  # = ||u - u*||^2 / 2 for unit vectors: no cancellation near 0
    unit_CxP = g_CxP / jnp.linalg.norm(g_CxP, axis=1, keepdims=True)
    return 0.5 * jnp.sum(jnp.square(unit_CxP - g_star / norm), axis=1)

  b = beta_C[:, None]
  bias_CxP = (1 - b) * (mean_g - g_star) + b * (mean_d + e_gis - g_star)
  return {
      "one_minus_cos": one_minus_cos(g_star + bias_CxP),
      "rel_norm_err": jnp.linalg.norm(bias_CxP, axis=1) / norm,
      "variance": m2_g / num_draws / norm2,
      "noise": jnp.sqrt(m2_e / (num_draws - 1) / num_draws) / norm,
      "beta": beta_C,
      "raw_one_minus_cos": one_minus_cos(mean_g),
      "raw_rel_norm_err": jnp.linalg.norm(mean_g - g_star, axis=1) / norm,
  }


_run = jax.jit(_run_impl, static_argnames=("draw", "corrections", "num_draws", "temperature"))


# --------------------------------------------------------------------------------------
# The experiment.


def analysis(sw: sweep.Sweep) -> tuple[list[str], list[str]]:
  """The runner's entry: `run` with the config's sweep keys, then the tables on the log."""
  p, t0 = sw.spec, time.time()
  if len(sw.seeds) != 1:
    raise sweep.ConfigError(f"sweep.seeds={tuple(sw.seeds)}: the measurement takes one seed")
  try:
    rows = run(
        sw.workdir,
        datasets=tuple(p.datasets),
        data_path=p.data_path,
        ks=tuple(p.ks),
        sampler_names=tuple(p.samplers),
        draws=p.draws,
        train_steps=p.train_steps,
        batch_size=p.batch_size,
        pool_size=p.pool_size,
        unigram_alpha=p.unigram_alpha,
        seed=sw.seeds[0],
        log=sw.log,
    )
  except ValueError as err:
    raise sweep.ConfigError(str(err)) from None
  if not rows:
    raise sweep.ConfigError("no dataset was measured (see the messages above)")
  sw.extras["rows"] = rows
  for line in (
      "",
      markdown_table(rows),
      "\nrel_norm_err = ||E g - g*|| / ||g*|| (* : below "
      "2x Monte-Carlo noise, an upper bound)\n",
      pivot_table(rows),
      "\nThe measured rate of the bias (least squares over the resolved cells, fit_rates):\n",
      rates_table(fit_rates(rows)),
      "\nThe same over the resolved cells with K >= 16:\n",
      rates_table(fit_rates(rows, min_k=16)),
      f"\nR = {p.draws} draws, B = {p.batch_size}; wrote "
      f"{os.path.join(sw.workdir, 'gradient_bias.csv')} and gradient_bias.png "
      f"({time.time() - t0:.1f}s)",
  ):
    sw.log(line)
  return [], []


def base_config(dataset: str, *, data_path: str, train_steps: int, seed: int):
  """The launcher's config for `dataset`, set to train briefly with the full softmax."""
  if dataset == "synthetic":
    config = synthetic_config.get_config()
  elif dataset == "movielens":
    config = common.movielens_base()
    config.data.path = data_path
  else:
    raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
  config.seed = seed
  config.loss.name = "full"
  config.train.steps = train_steps
  config.train.log_every = train_steps
  common.no_checkpoints(config)
  config.eval.every = 0
  config.eval.save_embeddings = True
  return config


def _at_least(name: str, value, lo: int) -> int:
  if isinstance(value, bool) or int(value) != value or value < lo:
    raise ValueError(f"{name}={value!r} must be an integer >= {lo}")
  return int(value)


def _fmt(x: float) -> str:
  return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def markdown_table(rows: Sequence[dict]) -> str:
  head = (
      "| dataset | sampler | K | logQ | negatives | 1 - cos | rel. norm err | noise "
      "| variance | raw rel. err |"
  )
  lines = [head, "|" + "---|" * 10]
  for r in rows:
    lines.append(
        f"| {r['dataset']} | {r['sampler']} | {r['K']} | {'on' if r['logq'] else 'off'} "
        f"| {r['num_negatives']} | {_fmt(r['one_minus_cos'])} | {_fmt(r['rel_norm_err'])} "
        f"| {_fmt(r['noise'])} | {_fmt(r['variance'])} | {_fmt(r['raw_rel_norm_err'])} |"
    )
  return "\n".join(lines)


def pivot_table(rows: Sequence[dict]) -> str:
  """rel_norm_err with one row per (dataset, sampler, logQ) and one column per K; a value
  marked * is below 2x its Monte-Carlo noise (an upper bound, not a measurement)."""
  ks = sorted({r["K"] for r in rows})
  lines = [
      "| dataset | sampler | logQ | " + " | ".join(f"K={k}" for k in ks) + " |",
      "|" + "---|" * (3 + len(ks)),
  ]
  cells: dict = {}
  for r in rows:
    mark = "" if r["rel_norm_err"] > 2 * r["noise"] else "*"
    cells.setdefault((r["dataset"], r["sampler"], r["logq"]), {})[r["K"]] = (
        _fmt(r["rel_norm_err"]) + mark
    )
  for (dataset, sampler, logq), by_k in cells.items():
    lines.append(
        f"| {dataset} | {sampler} | {'on' if logq else 'off'} | "
        + " | ".join(by_k.get(k, "-") for k in ks)
        + " |"
    )
  return "\n".join(lines)


def fit_rates(rows: Sequence[dict], min_cells: int = 3, min_k: int = 1) -> list[dict]:
  """The measured rate of the bias in K: per (dataset, sampler, logQ), the least-squares
  slope b of log rel_norm_err = a + b log K over its resolved cells (rel_norm_err > 2x its
  noise) with K >= min_k, with the 95% t-interval of b (n - 2 degrees of freedom); b = -1
  is O(1/K), an asymptotic rate (min_k > 1 leaves out the small-K cells). Settings with
  fewer than `min_cells` such cells are left out."""
  cells: dict = {}
  for r in rows:
    if r["rel_norm_err"] > 2 * r["noise"] and int(r["K"]) >= min_k:
      cells.setdefault((r["dataset"], r["sampler"], r["logq"]), []).append(
          (float(r["K"]), float(r["rel_norm_err"]))
      )
  out = []
  for (dataset, sampler, logq), pts in cells.items():
    if len(pts) < min_cells or len({k for k, _ in pts}) < 2:
      continue
    x, y = np.log([k for k, _ in pts]), np.log([e for _, e in pts])
    n = x.size
    xc = x - x.mean()
    slope = float(xc @ (y - y.mean()) / (xc @ xc))
    resid = y - y.mean() - slope * xc
    se = math.sqrt(float(resid @ resid) / (n - 2) / float(xc @ xc)) if n > 2 else math.nan
    half = report_lib.t_quantile(0.975, n - 2) * se if n > 2 else math.nan
    out.append(
        dict(
            dataset=dataset,
            sampler=sampler,
            logq=logq,
            cells=n,
            ks=tuple(int(k) for k, _ in sorted(pts)),
            slope=slope,
            lower=slope - half,
            upper=slope + half,
        )
    )
  return out


def rates_table(fits: Sequence[dict]) -> str:
  """fit_rates as a markdown table, with whether -1 (O(1/K)) lies in the interval."""
  lines = [
      "| dataset | sampler | logQ | resolved K | slope of log bias on log K | 95% interval | O(1/K)? |",
      "|---|---|---|---|---|---|---|",
  ]
  for f in fits:
    inside = f["lower"] <= -1.0 <= f["upper"]
    lines.append(
        f"| {f['dataset']} | {f['sampler']} | {'on' if f['logq'] else 'off'} | "
        f"{', '.join(map(str, f['ks']))} | {f['slope']:.2f} | "
        f"[{f['lower']:.2f}, {f['upper']:.2f}] | {'consistent' if inside else 'no'} |"
    )
  return "\n".join(lines)


def write_csv(path: str, rows: Sequence[dict]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for r in rows:
      writer.writerow({k: r[k] for k in CSV_FIELDS})
  os.replace(tmp, path)


_COLORS = {
    "uniform": "tab:blue",
    "unigram": "tab:orange",
    "log_uniform": "tab:brown",
    "in_batch": "tab:green",
    "mixed": "tab:purple",
    "hard_exact": "tab:red",
    "hard_pool": "tab:pink",
}


def plot(path: str, rows: Sequence[dict], datasets: Sequence[str]) -> None:
  """rel_norm_err vs K (log-log), one panel per dataset; solid logQ, dashed without;
  hollow markers where the bias is below 2x its Monte-Carlo noise (not resolved)."""
  plt = report_lib.pyplot()

  fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
  for ax, dataset in zip(axes[0], datasets):
    for sampler in dict.fromkeys(r["sampler"] for r in rows if r["dataset"] == dataset):
      for logq, style in ((True, "-"), (False, "--")):
        rs = sorted(
            (
                r
                for r in rows
                if r["dataset"] == dataset and r["sampler"] == sampler and r["logq"] == logq
            ),
            key=lambda r: r["K"],
        )
        if not rs:
          continue
        ks = [r["K"] for r in rs]
        ys = [max(r["rel_norm_err"], 1e-6) for r in rs]
        color = _COLORS.get(sampler, "k")
        ax.plot(ks, ys, style, color=color, label=f"{sampler} {'logQ' if logq else 'no logQ'}")
        resolved = [r["rel_norm_err"] > 2 * r["noise"] for r in rs]
        ax.scatter(
            ks,
            ys,
            color=[color if ok else "white" for ok in resolved],
            edgecolors=color,
            s=18,
            zorder=3,
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("K (negatives; in_batch/mixed: batch size)")
    ax.set_ylabel("||E g - g*|| / ||g*||")
    ax.set_title(f"{dataset}: sampled-softmax gradient bias")
    ax.grid(True, which="both", alpha=0.3)
  axes[0][-1].legend(fontsize=7, ncol=2, loc="lower left")
  report_lib.save_figure(fig, os.path.dirname(path), os.path.basename(path))


def run(
    workdir: str,
    *,
    datasets: Sequence[str] = DATASETS,
    data_path: str | None = None,
    ks: Sequence[int] = (1, 4, 16, 64, 256, 1024),
    sampler_names: Sequence[str] = (
        "uniform",
        "unigram",
        "in_batch",
        "mixed",
        "hard_exact",
        "hard_pool",
    ),
    draws: int = 64,
    train_steps: int = 1000,
    batch_size: int = 64,
    pool_size: int = 256,
    unigram_alpha: float = 0.75,
    seed: int = 0,
    overrides: Sequence[tuple[str, Any]] = (),
    log: Callable[[str], None] = print,
) -> list[dict]:
  """Trains one model per dataset and measures every sampler x K x logQ; writes
  gradient_bias.csv and gradient_bias.png into `workdir`; returns the rows.

  `overrides` are (dotted config key, value) pairs applied to every dataset's config.
  """
  for d in datasets:
    if d not in DATASETS:
      raise ValueError(f"unknown dataset {d!r}; valid: {', '.join(DATASETS)}")
  for s in sampler_names:
    if s not in SAMPLERS:
      raise ValueError(f"unknown sampler {s!r}; valid: {', '.join(SAMPLERS)}")
  ks = sorted({_at_least("K", int(k), 1) for k in ks})
  _at_least("draws", draws, 2)
  _at_least("batch_size", batch_size, 1)
  data_path = common.ml_latest_small() if data_path is None else data_path
  os.makedirs(workdir, exist_ok=True)
  rows: list[dict] = []
  done: list[str] = []
  for dataset in datasets:
    if dataset == "movielens" and not os.path.exists(data_path):
      log(f"movielens: skipped, sweep.data_path={data_path!r} does not exist")
      continue
    t0 = time.time()
    config = sweep.apply_overrides(
        base_config(dataset, data_path=data_path, train_steps=train_steps, seed=seed), overrides
    )
    data = sweep.load_data(config.data, seed)
    wd = os.path.join(workdir, f"model_{dataset}")
    res = sweep.train_and_evaluate(config, wd, data=data, overwrite=True, verbose=False)
    emb = np.load(os.path.join(wd, "embeddings.npz"))
    query_UxD, items_NxD = jnp.asarray(emb["query"]), jnp.asarray(emb["items"])
    train_set = data[0]
    num_items = train_set.num_items
    recall = sorted((int(k.split("@")[1]), k) for k in res["metrics"] if k.startswith("recall@"))
    shown = f"{recall[-1][1]} {res['metrics'][recall[-1][1]]:.3f}" if recall else "done"
    log(
        f"{dataset}: {train_set.num_users} users, {num_items} items; full softmax "
        f"{train_steps} steps -> {shown} ({time.time() - t0:.1f}s)"
    )

    rng = np.random.default_rng(seed)
    e = rng.choice(
        len(train_set.item_ids), size=min(batch_size, len(train_set.item_ids)), replace=False
    )
    query_BxD = query_UxD[train_set.user_ids[e]]
    pos_ids_B = jnp.asarray(train_set.item_ids[e].astype(np.int32))
    counts_N = np.bincount(train_set.item_ids, minlength=num_items).astype(np.float32)
    ks_here = [k for k in ks if k <= num_items]
    if len(ks_here) < len(ks):
      log(f"{dataset}: K > N = {num_items} skipped: {[k for k in ks if k > num_items]}")
    if not ks_here:
      continue
    temperature = float(config.loss.temperature)
    for s_idx, name in enumerate(sampler_names):
      t1 = time.time()
      nested = diagnostics.make_nested(
          name,
          num_items=num_items,
          k_max=max(ks_here),
          counts_N=counts_N,
          unigram_alpha=unigram_alpha,
          pool_size=pool_size,
          temperature=temperature,
      )
      out = nested_fidelity(
          jax.random.fold_in(jax.random.PRNGKey(seed), s_idx),
          query_BxD,
          items_NxD,
          pos_ids_B,
          nested,
          ks_here,
          num_draws=draws,
          temperature=temperature,
      )
      for i in range(len(out["K"])):
        rows.append(
            {
                "dataset": dataset,
                "sampler": name,
                "K": int(out["K"][i]),
                "logq": bool(out["logq"][i]),
                "num_negatives": int(out["K"][i]) * nested.negatives_per_k,
                **{
                    k: float(out[k][i])
                    for k in (
                        "one_minus_cos",
                        "rel_norm_err",
                        "variance",
                        "noise",
                        "raw_rel_norm_err",
                        "raw_one_minus_cos",
                    )
                },
            }
        )
      log(f"{dataset}: {name} done ({time.time() - t1:.1f}s)")
    done.append(dataset)
  write_csv(os.path.join(workdir, "gradient_bias.csv"), rows)
  if done:
    plot(os.path.join(workdir, "gradient_bias.png"), rows, done)
  return rows

"""The log-Q ablation's analysis: Yi et al.'s Table 1 form, its checks, the estimator simulation.

The sweep, the setting, the claim and what it measured: experiments/configs/logq.py.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from experiments import report as report_lib
from experiments import sweep
from experiments.configs.logq import label


def analysis(sw: sweep.Sweep) -> tuple[list[str], list[str]]:
  """Checks, logq_recall.png, the simulation (freq_estimation.png; its curves in
  sw.extras["simulation"]) and the Table 1 section."""
  temperatures = tuple(sw.spec.temperatures)
  ks = tuple(int(k) for k in sw.config.eval.ks)
  notes = checks(sw.summary, sw.rows, temperatures, ks)
  plot_recall(sw.workdir, sw.summary, temperatures, ks)
  t_sim = time.time()
  sim = simulate(**sw.spec.simulation.to_dict())
  plot_simulation(sw.workdir, sim)
  sim_seconds = time.time() - t_sim
  sw.extras["simulation"] = sim
  c = sw.config
  return notes, [
      "",
      "## Table 1 form",
      "",
      f"Yi et al. report the same comparison on their data; here ml-latest-small, MF towers "
      f"D={c.model.dim}, normalised, {c.train.steps} steps of batch "
      f"{c.train.batch_size}, seeds {', '.join(map(str, sw.seeds))}.",
      "",
      *table1(sw.summary, temperatures, ks),
      "",
      "## Streaming estimator simulation (freq_estimation.png)",
      "",
      f"M={sim['num_items']} items, batch {sim['batch_size']}, {sim['steps']} steps, shift at "
      f"{sim['switch']}, H=2M for the alpha curves and H={sim['colliding_buckets']} with "
      f"alpha={sim['hash_alpha']} for the hash curves; error = sum_i |p_hat_i - p_i| / "
      f"sum_i p_i ({sim_seconds:.0f} s).",
      "",
      *simulation_lines(sim),
  ]


def table1(summary: dict, temperatures: Sequence[float], ks: Sequence[int]) -> list[str]:
  """Markdown in the form of Yi et al.'s Table 1: one row per temperature, recall@K without
  and with the correction (mean ± std over seeds) and the relative gain of the mean."""
  head = (
      "| temperature | "
      + " | ".join(f"recall@{k} no log-Q | recall@{k} log-Q | gain" for k in ks)
      + " | n |"
  )
  lines = [head, "|---|" + "---|---|---|" * len(ks) + "---|"]
  for t in temperatures:
    off, on = summary.get(label(t, False)), summary.get(label(t, True))
    if off is None or on is None:
      continue
    cells = []
    for k in ks:
      key = f"recall@{k}"
      (m0, s0), (m1, s1) = off[key], on[key]
      gain = (m1 / m0 - 1.0) * 100 if m0 > 0 else math.inf
      cells += [report_lib.fmt((m0, s0), 4), report_lib.fmt((m1, s1), 4), f"{gain:+.0f}%"]
    lines.append(f"| {t} | " + " | ".join(cells) + f" | {min(off['n'], on['n'])} |")
  return lines


def checks(summary: dict, rows: list[dict], temperatures, ks) -> list[str]:
  """PASS when the corrected mean beats the uncorrected one; also counts per-seed wins."""
  out = []
  for t in temperatures:
    for k in ks:
      key = f"recall@{k}"
      off, on = summary.get(label(t, False)), summary.get(label(t, True))
      if off is None or on is None:
        continue
      by_seed = {}
      for r in rows:
        if r["strategy"] in (label(t, False), label(t, True)):
          by_seed.setdefault(r["seed"], {})[r["strategy"]] = r[key]
      wins = sum(
          1 for d in by_seed.values() if len(d) == 2 and d[label(t, True)] > d[label(t, False)]
      )
      ok = on[key][0] > off[key][0]
      out.append(
          f"{'PASS' if ok else 'FAIL'}: T={t} {key}: log-Q {on[key][0]:.4f} vs "
          f"none {off[key][0]:.4f} (log-Q better on {wins}/{len(by_seed)} seeds)"
      )
  return out


def simulate(
    steps: int,
    *,
    num_items: int,
    batch_size: int,
    alphas,
    hashes,
    colliding_buckets: int,
    hash_alpha: float,
    seed: int = 0,
) -> dict:
  """Estimator error curves [steps] per alpha (H = 2M, no collisions) and per number of
  hash functions (H < M, alpha = hash_alpha); the shift happens at steps // 2."""
  import jax
  import jax.numpy as jnp
  from jaxrec import samplers

  key = jax.random.PRNGKey(seed)
  switch = steps // 2
  by_alpha = jax.jit(
      jax.vmap(
          lambda a: samplers.simulate_frequency_estimation(
              key, num_items, batch_size, 2 * num_items, steps, switch, a
          )
      )
  )(jnp.asarray(alphas, jnp.float32))
  by_hash = {
      h: np.asarray(
          samplers.simulate_frequency_estimation(
              key, num_items, batch_size, colliding_buckets, steps, switch, hash_alpha, num_hashes=h
          )
      )
      for h in hashes
  }
  return {
      "steps": steps,
      "switch": switch,
      "alpha": {a: np.asarray(e) for a, e in zip(alphas, by_alpha)},
      "hashes": by_hash,
      "num_items": num_items,
      "batch_size": batch_size,
      "colliding_buckets": colliding_buckets,
      "hash_alpha": hash_alpha,
  }


def simulation_lines(sim: dict) -> list[str]:
  """Mean error over step windows: settled before the shift, right after it, recovering,
  and at the end (window w = a tenth of the pre-shift steps)."""
  s = sim["switch"]
  w = max(s // 10, 1)
  n = len(next(iter(sim["alpha"].values())))
  spans = [(s - w, s), (s, s + max(w // 10, 1)), (s + w, s + 2 * w), (n - w, n)]
  head = "| setting | " + " | ".join(f"steps {a}-{b}" for a, b in spans) + " |"
  lines = [head, "|---|" + "---|" * len(spans)]

  def row(name, e):
    return f"| {name} | " + " | ".join(f"{e[a:b].mean():.3f}" for a, b in spans) + " |"

  lines += [row(f"alpha={a}, H=2M", e) for a, e in sim["alpha"].items()]
  lines += [
      row(f"{h} hash fn, H={sim['colliding_buckets']}, alpha={sim['hash_alpha']}", e)
      for h, e in sim["hashes"].items()
  ]
  return lines


def plot_simulation(workdir: str, sim: dict) -> str:
  plt = report_lib.pyplot()

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for a, e in sim["alpha"].items():
    axes[0].plot(e, lw=0.8, label=f"alpha={a}")
  for h, e in sim["hashes"].items():
    axes[1].plot(e, lw=0.8, label=f"{h} hash function{'s' if h > 1 else ''}")
  axes[0].set_title("H = 2M (no collisions)", fontsize=9)
  axes[1].set_title(
      f"H = {sim['colliding_buckets']} < M = {sim['num_items']} (collisions), "
      f"alpha = {sim['hash_alpha']}",
      fontsize=9,
  )
  for ax in axes:
    ax.axvline(sim["switch"], color="gray", ls=":", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("sum |p_hat - p| / (2 |B|)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(
      "Streaming frequency estimation (Yi et al. 2019, Sec. 6.1 form): "
      "q_i ~ i^2, then (M-1-i)^2",
      fontsize=9,
  )
  return report_lib.save_figure(fig, workdir, "freq_estimation.png")


def plot_recall(workdir: str, summary: dict, temperatures, ks) -> str:
  fig, axes = report_lib.panel_row(len(ks), 4.2, 3.8)
  for ax, k in zip(axes, ks):
    key = f"recall@{k}"
    for q, style in ((True, "o-"), (False, "s--")):
      ts = [t for t in temperatures if label(t, q) in summary]
      m = [summary[label(t, q)][key][0] for t in ts]
      s = [summary[label(t, q)][key][1] for t in ts]
      ax.errorbar(
          ts, m, yerr=s, fmt=style, capsize=3, label="log-Q corrected" if q else "uncorrected"
      )
    ax.set_xlabel("temperature")
    ax.set_ylabel(key)
    ax.set_xticks(list(temperatures))
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle("In-batch softmax on normalised embeddings (mean ± std over seeds)", fontsize=9)
  return report_lib.save_figure(fig, workdir, "logq_recall.png")

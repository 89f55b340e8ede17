"""The negatives-vs-K ablation's analysis: one table per metric by K, its checks, the plot.

The sweep, the setting, the claims and what it measured:
experiments/configs/negatives_vs_quality.py.
"""

from __future__ import annotations

import numpy as np

from experiments import report as report_lib
from experiments import sweep
from experiments.configs.negatives_vs_quality import FULL, POPULARITY_LIKE, label

METRICS = ("test_softmax_loss", "recall@20", "ndcg@20")


def analysis(sw: sweep.Sweep) -> tuple[list[str], list[str]]:
  """Checks, negatives_vs_quality.png and the tables by K."""
  ks = tuple(sorted(int(k) for k in sw.spec.ks))
  names = tuple(sw.spec.samplers)
  ran = {r.strategy for r in sw.runs}
  skipped = [
      label(s, k, q) for s in names for k in ks for q in (True, False) if label(s, k, q) not in ran
  ]
  notes = checks(sw.summary, ks, names, sw.spec.predictions.popularity_like)
  plot(sw.workdir, sw.summary, ks, names)
  c = sw.config
  return notes, [
      "",
      "## By K",
      "",
      f"MF D={c.model.dim}, {c.train.steps} steps of batch {c.train.batch_size}; hard_pool "
      f"pool {max(int(c.sampler.pool_size), max(ks))}; not defined (n/a): "
      f"{', '.join(skipped) or 'none'}.",
      *tables(sw.summary, ks, names),
  ]


def tune_analysis(workdir: str, base, final_rows: list[dict]) -> list[str]:
  """`experiments.tune`'s analysis hook for the `tune` variant: the sweep's checks, tables
  by K and plot over the tuned arms' final runs (means over seeds)."""
  del base
  summary = report_lib.summarize(
      [{"strategy": r["method"], "overrides": "", **r["test"]} for r in final_rows]
  )
  arms = [m.split(",") for m in summary if m.count(",") == 2]
  ks = tuple(sorted({int(k.removeprefix("K=")) for _, k, _ in arms}))
  names = tuple(dict.fromkeys(s for s, _, _ in arms))
  plot(workdir, summary, ks, names)
  return [
      "",
      "## By K",
      "",
      "Means ± std over each arm's final runs (its own selected learning rate and step); "
      "negatives_vs_quality.png. The sweep's checks on these means:",
      "",
      *[f"- {n}" for n in checks(summary, ks, names, POPULARITY_LIKE)],
      *tables(summary, ks, names),
      *rates_section(bias_rates(final_rows, names, ks)),
  ]


def bias_rates(final_rows: list[dict], sampler_names, ks, min_points: int = 3) -> list[dict]:
  """The rate at which each log-Q sampler's held-out loss approaches the full softmax's:
  per seed, the least-squares slope b of log(gap_K) = a + b log K, gap_K = the arm's
  test_softmax_loss at K minus the full softmax's at the same seed, over the K whose gap is
  positive at every seed (at least `min_points` of them); then the mean slope and its 95%
  t-interval over the seeds. b = -1 is O(1/K) (Bengio & Senecal 2008; Blanc & Rendle
  2018 state the bias vanishes as K grows)."""
  loss = {
      (r["method"], int(r["seed"])): r["test"]["test_softmax_loss"]
      for r in final_rows
      if "test_softmax_loss" in r["test"]  # not the popularity and EASE rows
  }
  seeds = sorted(s for m, s in loss if m == FULL)
  if not seeds:  # no full-softmax reference among the rows (e.g. a tune.only subset)
    return []
  out = []
  for name in sampler_names:
    gaps = {
        k: [loss[(label(name, k, True), s)] - loss[(FULL, s)] for s in seeds]
        for k in ks
        if all((label(name, k, True), s) in loss for s in seeds)
    }
    used = [k for k, g in gaps.items() if min(g) > 0]
    if len(used) < min_points:
      continue
    x = np.log(np.asarray(used, float))
    slopes = [
        float(np.polyfit(x, np.log([gaps[k][i] for k in used]), 1)[0]) for i in range(len(seeds))
    ]
    mean, lower, upper = report_lib.t_interval(slopes)
    out.append(dict(sampler=name, ks=used, slopes=slopes, mean=mean, lower=lower, upper=upper))
  return out


def rates_section(fits: list[dict]) -> list[str]:
  """bias_rates as report lines (none when no sampler had enough K)."""
  if not fits:
    return []
  lines = [
      "",
      "### The rate of the bias in K (log-Q on)",
      "",
      "Slope b of log(held-out loss - the full softmax's) on log K, fitted per seed over the "
      "K where the gap is positive at every seed; mean and 95% t-interval over the seeds. "
      "b = -1 is O(1/K).",
      "",
      "| sampler | K fitted | slope per seed | mean slope [95% interval] | -1 inside? |",
      "|---|---|---|---|---|",
  ]
  for f in fits:
    inside = f["lower"] <= -1.0 <= f["upper"]
    lines.append(
        f"| {f['sampler']} | {', '.join(map(str, f['ks']))} | "
        f"{', '.join(f'{b:.2f}' for b in f['slopes'])} | {f['mean']:.2f} "
        f"[{f['lower']:.2f}, {f['upper']:.2f}] | {'yes' if inside else 'no'} |"
    )
  return lines


def _get(summary, s, k, q, metric):
  d = summary.get(label(s, k, q))
  return d[metric] if d is not None and metric in d else None


def tables(summary: dict, ks, sampler_names, metrics=METRICS) -> list[str]:
  """One markdown table per metric: rows = sampler x log-Q, columns = K."""
  rows = [
      (s, "on" if q else "off", lambda k, s=s, q=q: label(s, k, q))
      for s in sampler_names
      for q in (True, False)
      if any(label(s, k, q) in summary for k in ks)  # the wide variant runs log-Q on only
  ]
  columns = [(f"K={k}", k) for k in ks]
  layout = dict(reference=FULL, reference_name="full softmax", missing="n/a")
  return report_lib.pivot_tables(
      summary, metrics, head=("sampler", "log-Q"), rows=rows, columns=columns, **layout
  )


def checks(summary: dict, ks, sampler_names, popularity_like) -> list[str]:
  """Claim 1: with log-Q, |loss - full| at the largest K < at the smallest K (per sampler).
  Claim 2: for popularity-like proposals, log-Q on beats off in recall@20 and held-out loss
  at the largest K both ran at."""
  out = []
  full = summary.get(FULL)
  if full is None:
    return ["no full-softmax reference run: nothing to compare"]
  f_loss = full["test_softmax_loss"][0]
  for s in sampler_names:
    done = [k for k in ks if _get(summary, s, k, True, "test_softmax_loss") is not None]
    if len(done) < 2:
      continue
    lo, hi = done[0], done[-1]
    g_lo = abs(_get(summary, s, lo, True, "test_softmax_loss")[0] - f_loss)
    g_hi = abs(_get(summary, s, hi, True, "test_softmax_loss")[0] - f_loss)
    r_lo = _get(summary, s, lo, True, "recall@20")[0]
    r_hi = _get(summary, s, hi, True, "recall@20")[0]
    out.append(
        f"{'PASS' if g_hi < g_lo else 'FAIL'}: {s} + log-Q: held-out loss gap to full "
        f"softmax {g_lo:.3f} at K={lo} -> {g_hi:.3f} at K={hi} (recall@20 {r_lo:.4f} "
        f"-> {r_hi:.4f}; full {full['recall@20'][0]:.4f})"
    )
  for s in sampler_names:
    if s not in popularity_like:
      continue
    both = [
        k
        for k in ks
        if _get(summary, s, k, True, "recall@20") is not None
        and _get(summary, s, k, False, "recall@20") is not None
    ]
    if not both:
      continue
    k = both[-1]
    on_r, off_r = (_get(summary, s, k, q, "recall@20")[0] for q in (True, False))
    on_l, off_l = (_get(summary, s, k, q, "test_softmax_loss")[0] for q in (True, False))
    ok = on_r > off_r and on_l < off_l
    out.append(
        f"{'PASS' if ok else 'FAIL'}: log-Q matters for {s} at K={k}: recall@20 "
        f"{off_r:.4f} -> {on_r:.4f}, held-out loss {off_l:.3f} -> {on_l:.3f}"
    )
  return out


def plot(workdir: str, summary: dict, ks, sampler_names, metrics=METRICS) -> str:
  fig, axes = report_lib.panel_row(len(metrics), 5.0, 4.2)
  colors = report_lib.pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, m in zip(axes, metrics):
    for i, s in enumerate(sampler_names):
      for q, style in ((True, "o-"), (False, "s--")):
        report_lib.plot_series(
            ax,
            [(k, _get(summary, s, k, q, m)) for k in ks],
            fmt=style,
            color=colors[i % len(colors)],
            ms=3.5,
            lw=1.0,
            capsize=2,
            label=f"{s}{'' if q else ' (no log-Q)'}",
        )
    if FULL in summary and m in summary[FULL]:
      ax.axhline(summary[FULL][m][0], color="0.3", lw=1.5, ls=":", label="full softmax")
    ax.set_xscale("log", base=2)
    if "loss" in m:  # the loss spans 8 to 40 at K = 1: log scale keeps the gaps readable
      ax.set_yscale("log")
    ax.set_xticks(list(ks))
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("negatives per query K")
    ax.set_ylabel(m + (" (lower is better)" if "loss" in m else ""))
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=6.5, ncol=2)
  fig.suptitle(
      "Sampled softmax vs number of negatives (solid: log-Q corrected; dashed: "
      "uncorrected; mean ± std over seeds)",
      fontsize=9,
  )
  return report_lib.save_figure(fig, workdir, "negatives_vs_quality.png")

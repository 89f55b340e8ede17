"""The hard-negative ablation's analysis: which mixture wins, the tables by fraction, the plot.

The sweep, the setting and what it measured: experiments/configs/hard_negatives.py.
"""

from __future__ import annotations


import numpy as np

from experiments import report as report_lib
from experiments import sweep
from experiments.configs.hard_negatives import HARD, UNIFORM, label

METRICS = ("recall@20", "cross_group@20")


def analysis(sw: sweep.Sweep) -> tuple[list[str], list[str]]:
  """The verdict, hard_negatives.png and the tables by fraction."""
  fractions, temperatures, c = tuple(sw.spec.fractions), tuple(sw.spec.temperatures), sw.config
  plot(sw.workdir, sw.summary, fractions, temperatures)
  setting = (
      f"K = {c.sampler.num_negatives} negatives, pool {c.sampler.pool_size} (hard_pool, "
      f"hard_topk), language_split = {c.data.language_split}, {c.train.steps} steps "
      f"of batch {c.train.batch_size}."
  )
  return verdict(sw.summary, sw.rows), [
      "",
      "## By fraction",
      "",
      setting,
      *tables(sw.summary, fractions, temperatures),
  ]


def _m(summary, s, metric):
  d = summary.get(s)
  return d[metric] if d is not None and metric in d else None


def tables(summary: dict, fractions, temperatures, hard=HARD) -> list[str]:
  """recall@20 and cross_group@20 per sampler x temperature (rows) and fraction (columns)."""
  rows = [
      (s, "–" if t is None else f"{t:g}", lambda f, s=s, t=t: label(s, f, t))
      for s in hard
      for t in ((None,) if s == "hard_topk" else temperatures)
  ]
  columns = [(f"f={f:g}", f) for f in fractions]
  layout = dict(reference=UNIFORM, reference_name="f = 0, all uniform", missing="–")
  return report_lib.pivot_tables(
      summary, METRICS, head=("hard sampler", "T_h"), rows=rows, columns=columns, **layout
  )


def verdict(summary: dict, rows: list[dict]) -> list[str]:
  """Which setting wins recall@20, by how much over f = 0, on how many seeds; and the
  worst folding (largest cross_group@20) of any setting."""
  if UNIFORM not in summary:
    return ["no f = 0 (all-uniform) run: nothing to compare against"]
  ranked = sorted((s for s in summary if s != UNIFORM), key=lambda s: -summary[s]["recall@20"][0])
  if not ranked:
    return ["no hard-negative runs"]
  best, base = ranked[0], summary[UNIFORM]
  (bm, bs), (um, us) = summary[best]["recall@20"], base["recall@20"]
  by_seed: dict = {}
  for r in rows:
    if r["strategy"] in (best, UNIFORM):
      by_seed.setdefault(r["seed"], {})[r["strategy"]] = r["recall@20"]
  paired = [d[best] - d[UNIFORM] for d in by_seed.values() if len(d) == 2]
  wins = sum(1 for x in paired if x > 0)
  out = [
      f"best recall@20: {best}: {bm:.4f} ± {bs:.4f} vs all-uniform {um:.4f} ± {us:.4f} "
      f"({(bm / um - 1) * 100:+.0f}% relative; better on {wins}/{len(paired)} seeds, "
      f"paired difference {np.mean(paired):+.4f}"
      + (f" ± {np.std(paired, ddof=1):.4f}" if len(paired) > 1 else "")
      + ")"
  ]
  worse = [s for s in ranked if summary[s]["recall@20"][0] < um]
  out.append(
      f"{len(ranked) - len(worse)} of {len(ranked)} hard settings beat all-uniform "
      f"in mean recall@20; worst: {ranked[-1]} "
      f"{summary[ranked[-1]]['recall@20'][0]:.4f}"
  )
  per_sampler = []
  for s in HARD:
    mine = [x for x in ranked if x.startswith(s + ",")]
    if mine:
      per_sampler.append(f"{mine[0]} {summary[mine[0]]['recall@20'][0]:.4f}")
  out.append("best per hard sampler: " + "; ".join(per_sampler))
  cg = max(summary, key=lambda s: summary[s]["cross_group@20"][0])
  worst, uniform = summary[cg]["cross_group@20"][0], base["cross_group@20"][0]
  return out + [f"largest cross_group@20: {cg} {worst:.4f} (all-uniform {uniform:.4f})"]


def plot(workdir: str, summary: dict, fractions, temperatures, hard=HARD) -> str:
  fig, axes = report_lib.panel_row(len(METRICS), 5.4, 4.2)
  colors = {"hard_exact": "C0", "hard_pool": "C1", "hard_topk": "C2"}
  styles = {0.5: ":", 1.0: "-", 2.0: "--", None: "-"}
  for ax, metric in zip(axes, METRICS):
    base = _m(summary, UNIFORM, metric)
    for s in hard:
      for t in ((None,) if s == "hard_topk" else temperatures):
        report_lib.plot_series(
            ax,
            [(0.0, base)] + [(f, _m(summary, label(s, f, t), metric)) for f in fractions],
            min_points=2,
            color=colors.get(s, "k"),
            ls=styles.get(t, "-"),
            marker="o",
            ms=3,
            capsize=2,
            lw=1.1,
            label=s + ("" if t is None else f", T_h={t:g}"),
        )
    ax.set_xlabel("hard fraction f (rest uniform)")
    ax.set_ylabel(metric)
    ax.set_xticks([0.0, *fractions])
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle(
      "Hard negatives mixed with uniform (K = 64; mean ± std over seeds; f = 0 is " "all-uniform)",
      fontsize=9,
  )
  return report_lib.save_figure(fig, workdir, "hard_negatives.png")

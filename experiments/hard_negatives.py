"""Hard-negative mixtures: how much of K should be hard, from which sampler, how sharp.

Command (defaults: language-split 10-core ml-latest-small, seed 0, 2000 steps):
  python -m experiments.hard_negatives --workdir=runs/hard_negatives \
      [--data_path=../shared/data/ml-latest-small] [--seeds=0,1,2] [--quick] \
      [--config.train.steps=10000 ...]

Setting. The folding ablation's model (`experiments/configs/folding_movielens.py`: a
softmax DNN over the user's items, Adam) on ml-latest-small reduced to its 10-core (users
and items with >= 10 ratings: 609 users, 2,269 movies) and split into 4 "languages"
(9,076 items), batch 128, trained with K = 64 sampled negatives per query, of which a
fraction f is
hard and the rest uniform (`sampler.hard_fraction`; each negative keeps its own sampler's
log q, so the log-Q corrected loss estimates the full softmax without bias: see
`samplers.with_uniform`). Grid: f in {0.25, 0.5, 1} x hard sampler {hard_exact (softmax of
the current scores over the catalogue), hard_pool (softmax inside a uniform pool of 256),
hard_topk (the top scores of that pool, deterministic, uncorrected)} x the hard sampler's
temperature T_h in {0.5, 1, 2} (q ~ exp(s / T_h); hard_topk has no temperature), plus
f = 0 (all uniform). Measured: recall@20 and cross_group@20 (share of the top-20 from
another language) by full ranking.

No paper anchors score-proportional hard negatives at these settings: the summary states
which setting wins, by how much over all-uniform, and the per-seed spread.

Found (3 seeds; table in BUILD_NOTES.md): hard_exact with f = 1 and T_h = 0.5 wins,
recall@20 0.204 ± 0.002 vs 0.150 ± 0.004 all-uniform (+36%, better on 3/3 seeds); for the
corrected samplers more hard negatives is better at every T_h, and T_h matters little.
hard_topk alone (f = 1) collapses and folds (recall 0.048, cross_group@20 0.73); mixed
with uniform (f = 0.25) it is second best (0.188). Every other setting keeps
cross_group@20 <= 0.001.

Size. hard_exact scores every item for every query at every step, which on 2 CPU cores
costs ~0.1-0.2 s per step over the 38,896 items of the unfiltered split (batch 128-256):
9 such runs would take most of an hour. The 10-core filter and batch 128 make the default
fit in about 10 minutes; the unfiltered world is
`--config.data.k_core=0 --config.train.batch_size=256 --config.train.steps=10000` (a GPU).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from experiments import ablation_common, report as report_lib
from experiments import sweep
from experiments.configs import folding_movielens

DEFAULT_DATA = "../shared/data/ml-latest-small"
FRACTIONS = (0.25, 0.5, 1.0)
TEMPERATURES = (0.5, 1.0, 2.0)
HARD = ("hard_exact", "hard_pool", "hard_topk")
UNIFORM = "uniform(f=0)"
METRICS = ("recall@20", "cross_group@20")


def get_config():
  c = folding_movielens.get_config()
  c.data.path = DEFAULT_DATA
  c.loss.name = "sampled"
  c.sampler.name = "uniform"
  c.sampler.num_negatives = 64
  c.sampler.pool_size = 256
  c.sampler.logq = True
  c.data.k_core = 10
  c.train.batch_size = 128
  c.train.steps = 2000
  c.train.log_every = 1000
  return c


def label(sampler: str, fraction: float, temperature: float | None) -> str:
  t = "" if temperature is None else f",T={temperature:g}"
  return f"{sampler},f={fraction:g}{t}"


def strategies(fractions=FRACTIONS, temperatures=TEMPERATURES, hard=HARD) -> list[sweep.Run]:
  runs = [sweep.Run(UNIFORM, (("sampler.name", "uniform"),))]
  for s in hard:
    temps = (None,) if s == "hard_topk" else temperatures
    for f in fractions:
      for t in temps:
        over = [("sampler.name", s), ("sampler.hard_fraction", float(f))]
        if t is not None:
          over.append(("sampler.temperature", float(t)))
        runs.append(sweep.Run(label(s, f, t), tuple(over)))
  return runs


def _m(summary, s, metric):
  d = summary.get(s)
  return d[metric] if d is not None and metric in d else None


def tables(summary: dict, fractions, temperatures, hard=HARD) -> list[str]:
  """recall@20 and cross_group@20 per sampler x temperature (rows) and fraction (columns)."""
  out = []
  base = summary.get(UNIFORM, {})
  for metric in METRICS:
    ref = report_lib.fmt(base[metric], 4) if metric in base else "–"
    out += ["", f"### {metric} (f = 0, all uniform: {ref})", "",
            "| hard sampler | T_h | " + " | ".join(f"f={f:g}" for f in fractions) + " |",
            "|---|---|" + "---|" * len(fractions)]
    for s in hard:
      for t in ((None,) if s == "hard_topk" else temperatures):
        cells = []
        for f in fractions:
          v = _m(summary, label(s, f, t), metric)
          cells.append("–" if v is None else report_lib.fmt(v, 4))
        out.append(f"| {s} | {'–' if t is None else f'{t:g}'} | " + " | ".join(cells) + " |")
  return out


def verdict(summary: dict, rows: list[dict]) -> list[str]:
  """Which setting wins recall@20, by how much over f = 0, on how many seeds; and the
  worst folding (largest cross_group@20) of any setting."""
  if UNIFORM not in summary:
    return ["no f = 0 (all-uniform) run: nothing to compare against"]
  ranked = sorted((s for s in summary if s != UNIFORM),
                  key=lambda s: -summary[s]["recall@20"][0])
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
  out = [f"best recall@20: {best}: {bm:.4f} ± {bs:.4f} vs all-uniform {um:.4f} ± {us:.4f} "
         f"({(bm / um - 1) * 100:+.0f}% relative; better on {wins}/{len(paired)} seeds, "
         f"paired difference {np.mean(paired):+.4f}"
         + (f" ± {np.std(paired, ddof=1):.4f}" if len(paired) > 1 else "") + ")"]
  worse = [s for s in ranked if summary[s]["recall@20"][0] < um]
  out.append(f"{len(ranked) - len(worse)} of {len(ranked)} hard settings beat all-uniform "
             f"in mean recall@20; worst: {ranked[-1]} "
             f"{summary[ranked[-1]]['recall@20'][0]:.4f}")
  per_sampler = []
  for s in HARD:
    mine = [x for x in ranked if x.startswith(s + ",")]
    if mine:
      per_sampler.append(f"{mine[0]} {summary[mine[0]]['recall@20'][0]:.4f}")
  out.append("best per hard sampler: " + "; ".join(per_sampler))
  cg = max(summary, key=lambda s: summary[s]["cross_group@20"][0])
  out.append(f"largest cross_group@20: {cg} {summary[cg]['cross_group@20'][0]:.4f} "
             f"(all-uniform {base['cross_group@20'][0]:.4f})")
  return out


def plot(workdir: str, summary: dict, fractions, temperatures, hard=HARD) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(METRICS), figsize=(5.4 * len(METRICS), 4.2))
  colors = {"hard_exact": "C0", "hard_pool": "C1", "hard_topk": "C2"}
  styles = {0.5: ":", 1.0: "-", 2.0: "--", None: "-"}
  for ax, metric in zip(np.atleast_1d(axes), METRICS):
    base = _m(summary, UNIFORM, metric)
    for s in hard:
      for t in ((None,) if s == "hard_topk" else temperatures):
        pts = [(0.0, base)] + [(f, _m(summary, label(s, f, t), metric)) for f in fractions]
        pts = [(f, v) for f, v in pts if v is not None]
        if len(pts) < 2:
          continue
        ax.errorbar([f for f, _ in pts], [v[0] for _, v in pts], yerr=[v[1] for _, v in pts],
                    color=colors.get(s, "k"), ls=styles.get(t, "-"), marker="o", ms=3,
                    capsize=2, lw=1.1, label=s + ("" if t is None else f", T_h={t:g}"))
    ax.set_xlabel("hard fraction f (rest uniform)")
    ax.set_ylabel(metric)
    ax.set_xticks([0.0, *fractions])
    ax.grid(alpha=0.3)
  np.atleast_1d(axes)[0].legend(fontsize=7)
  fig.suptitle("Hard negatives mixed with uniform (K = 64; mean ± std over seeds; f = 0 is "
               "all-uniform)", fontsize=9)
  fig.tight_layout()
  path = os.path.join(workdir, "hard_negatives.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def run(config, workdir: str, seeds: Sequence[int], *, fractions=FRACTIONS,
        temperatures=TEMPERATURES, log=print) -> dict:
  clock = ablation_common.Clock()
  runs = strategies(fractions, temperatures)
  log(f"hard_negatives: {len(runs)} runs x {len(seeds)} seeds -> {workdir}")
  sweep.run_sweep(config, runs, seeds, workdir)
  wanted = {r.strategy for r in runs}
  rows = [r for r in report_lib.read_results(workdir) if r["strategy"] in wanted]
  summary = report_lib.summarize(rows)
  notes = verdict(summary, rows)
  report_lib.write_summary(workdir, summary, title="Hard-negative mixtures", metrics=METRICS,
                           notes=notes)
  plot(workdir, summary, fractions, temperatures)
  facts = clock.facts()
  ablation_common.append_lines(os.path.join(workdir, "summary.md"), [
      "", "## By fraction", "",
      f"K = {config.sampler.num_negatives} negatives, pool {config.sampler.pool_size} "
      f"(hard_pool, hard_topk), language_split = {config.data.language_split}, "
      f"{config.train.steps} steps of batch {config.train.batch_size}.",
      *tables(summary, fractions, temperatures),
      *ablation_common.facts_lines(facts, seeds, config)])
  for n in notes:
    log(n)
  log(f"done: wall {facts['wall_seconds']:.0f}s, CPU {facts['cpu_seconds']:.0f}s; see "
      f"{os.path.join(workdir, 'summary.md')} and hard_negatives.png")
  return summary


def main(config, workdir, data_path, seeds, quick):
  config, seeds = ablation_common.prepare(config, data_path, seeds or ["0"], quick,
                                          quick_steps=500)
  kw = dict(fractions=(0.5, 1.0), temperatures=(1.0,)) if quick else {}
  ablation_common.exit_on_config_error(run, config, workdir, seeds, **kw)


if __name__ == "__main__":
  ablation_common.run_cli(get_config, main, workdir="runs/hard_negatives",
                          default_data=DEFAULT_DATA, seeds_help="Seeds (default 0).",
                          quick_help="500 steps, f in {0, 0.5, 1}, T_h = 1.")

"""Sampled vs full-ranking metrics (Krichene & Rendle, KDD 2020).

Command (defaults: ml-latest-small, 3 seeds, 6 models):
  python -m experiments.sampled_metrics --workdir=runs/sampled_metrics \
      [--data_path=../shared/data/ml-latest-small] [--seeds=0,1,2] [--quick] \
      [--num_negatives=100] [--config.train.steps=3000 ...]

Setting. Six models on one per-user 80/20 split per seed: most-popular; MF at D = 8, 32 and
128 and a softmax DNN (the bag-of-items query tower of experiments/configs/movielens.py,
D = 64), all L2-normalised and trained 3000 steps with in-batch softmax and log-Q at
temperature 0.14 (the best setting of experiments/logq.py; sampled rather than full
softmax keeps the default under 10 minutes on 2 cores); and WALS (iALS, D = 64, w0 = 0.1,
10 sweeps). For each we compute
  recall@10       full ranking over all items, train items masked (`metrics.evaluate`);
  sampled_hr@10   each test pair ranked against 100 items drawn uniformly from those the
                  user never interacted with; hit if fewer than 10 negatives score >= it
                  (`metrics.sampled_hit_rate`; the same negatives for every model of a seed).
The report ranks the models by each metric, lists every pair whose order differs
(a "reordering"), the Kendall tau between the two rankings, and how much each metric
compresses the gap between the best and the worst model. `--config.*` flags apply to
every trained model (on top of its own overrides).

Claim (Krichene & Rendle 2020): sampled metrics are not consistent with the full
metrics: with 100 sampled negatives HR@10 can order models differently from recall@10 and
compresses the differences between them (every reasonable model looks good).

Found (defaults, seeds 0-2, mean ± std; 2-core CPU shared with other jobs, load ~9:
wall 163 s, process CPU 115 s). full_hr@10 is the exact value sampled_hr@10 estimates
(same test pairs, all unseen items instead of 100):

  model        recall@10    full_hr@10   sampled_hr@10
  mf_d128      0.294±0.002  0.115±0.001  0.703±0.001
  wals         0.271±0.008  0.094±0.001  0.629±0.002
  mf_d32       0.239±0.006  0.086±0.003  0.671±0.007
  softmax_dnn  0.209±0.008  0.078±0.003  0.673±0.010
  popularity   0.174±0.003  0.068±0.002  0.638±0.001
  mf_d8        0.170±0.009  0.058±0.004  0.662±0.003

Held. The two full metrics rank the six models identically; the sampled one reorders 6 of
15 pairs (Kendall tau 0.20): WALS, 2nd by both full metrics, is LAST by sampled HR@10
(below popularity and MF D = 8; on 3/3 seeds), and popularity vs MF D = 8 and MF D = 32 vs
the DNN swap too (the latter within noise). The sampled metric compresses the spread
(best - worst) / best from 0.42 (recall@10) and 0.50 (full HR@10) to 0.11. Why WALS: with
100 negatives a hit means ranking the positive in about the top 10% of unseen items, not
the top 10 of 9.7k. WALS puts more test positives in the top 1% than MF D = 8 (0.285 vs
0.247, seed 0) but fewer in the top 10% (0.637 vs 0.674): it is strong at the head of
the ranking, which the full metrics measure, and weaker in its middle, which the sampled
metric measures.
"""

from __future__ import annotations

import itertools
import os
from typing import Sequence

import numpy as np

from experiments import ablation_common, report as report_lib
from experiments import sweep
from jaxrec import data as jaxrec_data

DEFAULT_DATA = "../shared/data/ml-latest-small"
FULL = "recall@10"
FULL_HR = "full_hr@10"
SAMPLED = "sampled_hr@10"
POPULARITY = "popularity"
MF_DIMS = (8, 32, 128)


def get_config():
  """Base config of the trained models: L2-normalised towers, in-batch softmax with log-Q
  at temperature 0.14 (the best setting of experiments/logq.py), 3000 steps. Each model
  adds its own overrides (`strategies`); `--config.*` flags change the base for all."""
  c = ablation_common.movielens_base(DEFAULT_DATA)
  c.data.path = DEFAULT_DATA
  c.model.normalize = True
  c.loss.name = "sampled"
  c.loss.temperature = 0.14
  c.sampler.name = "in_batch"
  c.sampler.logq = True
  c.train.steps = 3000
  c.train.learning_rate = 0.5
  c.train.optimizer = "adagrad"
  c.train.checkpoint_every = 0
  c.train.log_every = 1000
  c.eval.ks = (10, 20)
  c.eval.save_embeddings = True
  # WALS (model.name=wals): iALS, D = 64, w0 = 0.1, lambda = 0.1, 10 sweeps.
  c.model.unobserved_weight = 0.1
  c.model.regularization = 0.1
  c.model.iterations = 10
  return c


def strategies(mf_dims: Sequence[int] = MF_DIMS) -> list[sweep.Run]:
  """The trained models; popularity is added without training."""
  R = sweep.Run
  runs = [R(f"mf_d{d}", (("model.name", "mf"), ("model.dim", int(d)))) for d in mf_dims]
  runs.append(R("softmax_dnn", (("model.name", "dnn"),)))
  runs.append(R("wals", (("model.name", "wals"), ("model.dim", 64))))
  return runs


# --------------------------------------------------------------------------------------
# Rankings.


def ranking(means: dict[str, float]) -> list[str]:
  """Model names by decreasing score (ties by name, so the order is deterministic)."""
  return sorted(means, key=lambda m: (-means[m], m))


def discordant_pairs(a: dict[str, float], b: dict[str, float]) -> list[tuple[str, str]]:
  """Pairs (x, y) with a[x] > a[y] but b[x] < b[y] (strict both ways: ties are not
  counted as reorderings)."""
  out = []
  for x, y in itertools.combinations(sorted(a), 2):
    da, db = a[x] - a[y], b[x] - b[y]
    if da * db < 0:
      out.append((x, y) if da > 0 else (y, x))
  return out


def kendall_tau(a: dict[str, float], b: dict[str, float]) -> float:
  """Kendall's tau-a of two score dicts over the same keys: (concordant - discordant) /
  (n choose 2); a pair tied in either counts as neither."""
  keys = sorted(a)
  n = len(keys)
  if n < 2:
    raise ValueError(f"Kendall tau needs >= 2 models, got {n}")
  s = sum(np.sign(a[x] - a[y]) * np.sign(b[x] - b[y])
          for x, y in itertools.combinations(keys, 2))
  return float(s / (n * (n - 1) / 2))


def relative_spread(means: dict[str, float]) -> float:
  """(best - worst) / best: how far apart the metric puts the models."""
  v = np.array(list(means.values()))
  return float((v.max() - v.min()) / v.max()) if v.max() > 0 else 0.0


def reorder_notes(summary: dict, rows: list[dict], full_key: str,
                  sampled_key: str = SAMPLED) -> list[str]:
  """Kendall tau, every reordered pair (with the number of seeds where it is reordered)
  and the gap compression, between a full-ranking metric and the sampled one."""
  full = {s: d[full_key][0] for s, d in summary.items() if full_key in d and sampled_key in d}
  samp = {s: d[sampled_key][0] for s, d in summary.items() if s in full}
  notes = [f"{full_key} vs {sampled_key}: Kendall tau between the rankings of the means "
           f"{kendall_tau(full, samp):.3f}"]
  pairs = discordant_pairs(full, samp)
  for x, y in pairs:
    flips, n = _seed_orders(rows, x, y, full_key, sampled_key)
    notes.append(f"REORDERED: {x} > {y} by {full_key} ({full[x]:.4f} vs {full[y]:.4f}) but "
                 f"{x} < {y} by {sampled_key} ({samp[x]:.4f} vs {samp[y]:.4f}); reordered "
                 f"on {flips}/{n} seeds")
  if not pairs:
    notes.append(f"no reordering: {full_key} and {sampled_key} rank the models alike")
  sf, ss = relative_spread(full), relative_spread(samp)
  notes.append(f"{'PASS' if ss < sf else 'FAIL'}: the sampled metric compresses the gaps: "
               f"(best - worst) / best = {sf:.3f} for {full_key}, {ss:.3f} for {sampled_key}")
  return notes


def ranking_table(summary: dict, keys: Sequence[str]) -> list[str]:
  """Markdown: rank i -> the i-th model (and its mean) under each metric."""
  have = [s for s, d in summary.items() if all(k in d for k in keys)]
  orders = [ranking({s: summary[s][k][0] for s in have}) for k in keys]
  lines = ["| rank | " + " | ".join(f"by {k}" for k in keys) + " |",
           "|---|" + "---|" * len(keys)]
  for i in range(len(have)):
    cells = [f"{o[i]} ({summary[o[i]][k][0]:.4f})" for o, k in zip(orders, keys)]
    lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
  return lines


def _seed_orders(rows, x, y, full_key, sampled_key) -> tuple[int, int]:
  """(number of seeds where x, y are reordered between the metrics, seeds with both)."""
  by = {}
  for r in rows:
    if r["strategy"] in (x, y):
      by.setdefault(r["seed"], {})[r["strategy"]] = (r[full_key], r[sampled_key])
  both = [d for d in by.values() if len(d) == 2]
  flips = sum(1 for d in both
              if (d[x][0] - d[y][0]) * (d[x][1] - d[y][1]) < 0)
  return flips, len(both)


# --------------------------------------------------------------------------------------
# The ablation.


def full_hit_rate(query_UxD, items_NxD, train_inter, test_inter, *, k: int = 10,
                  user_batch: int = 256) -> float:
  """The exact counterpart of `metrics.sampled_hit_rate`: each test pair (u, i) (not a
  train pair) is ranked against ALL items u never interacted with (train or test); hit
  iff fewer than k of them score >= s_ui. Averaged over test pairs. Scores in float32."""
  q = np.asarray(query_UxD, np.float32)
  v = np.asarray(items_NxD, np.float32)
  n = v.shape[0]
  tr = np.unique(train_inter.user_ids.astype(np.int64) * n + train_inter.item_ids)
  te = np.unique(test_inter.user_ids.astype(np.int64) * n + test_inter.item_ids)
  te = te[~np.isin(te, tr, assume_unique=True)]
  if te.size == 0:
    raise ValueError("test has no (user, item) pair outside train")
  seen = np.union1d(tr, te)                 # sorted keys, so sorted by user
  seen_u, seen_i = seen // n, seen % n
  te_u, te_i = te // n, te % n
  users = np.unique(te_u)
  hits = 0
  for lo in range(0, users.size, user_batch):
    ub = users[lo:lo + user_batch]
    scores = q[ub] @ v.T                                       # [b, N]
    a, b = np.searchsorted(te_u, [ub[0], ub[-1] + 1])
    rows = np.searchsorted(ub, te_u[a:b])
    pos = scores[rows, te_i[a:b]]
    c, d = np.searchsorted(seen_u, [ub[0], ub[-1] + 1])
    su, si = seen_u[c:d], seen_i[c:d]
    own = np.isin(su, ub)                 # users without test pairs lie in between too
    scores[np.searchsorted(ub, su[own]), si[own]] = -np.inf    # seen items out
    scores.sort(axis=1)
    ahead = np.array([n - np.searchsorted(scores[r], p, side="left")
                      for r, p in zip(rows, pos)])
    hits += int(np.sum(ahead < k))
  return hits / te.size


def _sampled(query, items, tr, te, seed, num_negatives):
  import jax
  from jaxrec import metrics
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 1234)  # same negatives for all models
  return metrics.sampled_hit_rate(query, items, tr, te, num_negatives=num_negatives, k=10,
                                  key=key)


def hit_rates(query, items, tr, te, seed, num_negatives) -> dict[str, float]:
  return {FULL_HR: full_hit_rate(query, items, tr, te, k=10),
          SAMPLED: _sampled(query, items, tr, te, seed, num_negatives)}


def popularity_row(config, seed: int, num_negatives: int, data=None) -> dict:
  from jaxrec import metrics
  tr, te = data if data is not None else jaxrec_data.load_data(config.data, seed)
  q, v = metrics.popularity_scores(tr)
  m = metrics.evaluate(q, v, tr, te, ks=tuple(config.eval.ks))
  return {"strategy": POPULARITY, "seed": seed, "overrides": "{}", "workdir": "",
          **m, **hit_rates(q, v, tr, te, seed, num_negatives)}


def run(config, workdir: str, seeds: Sequence[int], *, num_negatives: int = 100,
        mf_dims: Sequence[int] = MF_DIMS, log=print) -> dict:
  """Trains the models x seeds (resumable), adds popularity and the sampled metric,
  writes results.csv, summary.md, metrics_bars.png and full_vs_sampled.png."""
  clock = ablation_common.Clock()
  runs = strategies(mf_dims)
  log(f"sampled_metrics: {len(runs)} trained models + popularity x {len(seeds)} seeds "
      f"-> {workdir}")
  sweep.run_sweep(config, runs, seeds, workdir)
  rows = report_lib.read_results(workdir)
  data = {}
  for row in rows:
    seed = int(row["seed"])
    if seed not in data:
      data[seed] = jaxrec_data.load_data(config.data, seed)
    tr, te = data[seed]
    z = np.load(os.path.join(workdir, row["workdir"], "embeddings.npz"))
    row.update(hit_rates(z["query"], z["items"], tr, te, seed, num_negatives))
  for seed in seeds:
    if int(seed) not in data:
      data[int(seed)] = jaxrec_data.load_data(config.data, int(seed))
    rows.append(popularity_row(config, int(seed), num_negatives, data[int(seed)]))
  sweep.write_csv_atomic(os.path.join(workdir, "results.csv"), rows)
  rows = report_lib.read_results(workdir)
  summary = report_lib.summarize(rows)
  notes = reorder_notes(summary, rows, FULL) + reorder_notes(summary, rows, FULL_HR)
  report_lib.write_summary(workdir, summary, title="Sampled vs full-ranking metrics",
                           metrics=[FULL, FULL_HR, SAMPLED, "ndcg@10"], notes=notes)
  order = ranking({s: d[FULL][0] for s, d in summary.items()})
  report_lib.plot_bars(workdir, summary, [FULL, FULL_HR, SAMPLED], "metrics_bars.png", order)
  _plot_scatter(workdir, summary)
  facts = clock.facts()
  ablation_common.append_lines(os.path.join(workdir, "summary.md"), [
      "", "## Rankings", "",
      f"sampled_hr@10: each test pair against {num_negatives} uniform unseen items (same "
      f"draws for every model of a seed); {FULL_HR}: the same test pairs against all unseen "
      f"items (the exact value the sampled metric estimates, so the second block of checks "
      "isolates the effect of sampling); recall@10: per user, full ranking. Never read a "
      "sampled metric without the full ones beside it.",
      "", *ranking_table(summary, [FULL, FULL_HR, SAMPLED]),
      *ablation_common.facts_lines(facts, seeds, config, show_steps=False)])
  for n in notes:
    log(n)
  log(f"done: wall {facts['wall_seconds']:.0f}s, CPU {facts['cpu_seconds']:.0f}s; see "
      f"{os.path.join(workdir, 'summary.md')}")
  return summary


def _plot_scatter(workdir, summary) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.5, 4.8))
  for s, d in sorted(summary.items()):
    if FULL in d and SAMPLED in d:
      ax.errorbar(d[FULL][0], d[SAMPLED][0], xerr=d[FULL][1], yerr=d[SAMPLED][1], fmt="o",
                  capsize=3)
      ax.annotate(s, (d[FULL][0], d[SAMPLED][0]), fontsize=8, xytext=(4, 3),
                  textcoords="offset points")
  ax.set_xlabel("recall@10, full ranking")
  ax.set_ylabel("HR@10 against 100 sampled negatives")
  ax.grid(alpha=0.3)
  ax.set_title("Sampled vs full metric (Krichene & Rendle 2020)", fontsize=9)
  fig.tight_layout()
  path = os.path.join(workdir, "full_vs_sampled.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main(config, workdir, data_path, seeds, quick, num_negatives):
  config, seeds = ablation_common.prepare(config, data_path, seeds, quick, quick_steps=1000)
  ablation_common.exit_on_config_error(run, config, workdir, seeds,
                                       num_negatives=num_negatives)


if __name__ == "__main__":
  ablation_common.run_cli(
      get_config, main, workdir="runs/sampled_metrics", default_data=DEFAULT_DATA,
      seeds_help="Seeds (default 0,1,2; --quick: 0).",
      quick_help="One seed, at most 1000 steps per model.",
      define_extra=lambda flags: {"num_negatives": flags.DEFINE_integer(
          "num_negatives", 100, "Sampled negatives per test pair.")})

"""The sampled-metrics ablation's analysis: full and sampled hit rates per model, the popularity
row, the rankings by each metric and their reorderings.

The sweep, the setting, the claim and what it measured: experiments/configs/sampled_metrics.py.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Sequence

import numpy as np

from experiments import report as report_lib
from experiments import sweep

FULL = "recall@10"
FULL_HR = "full_hr@10"
SAMPLED = "sampled_hr@10"
POPULARITY = "popularity"


def add_rows(sw: sweep.Sweep) -> list[dict]:
  """Every run's full and sampled HR@10, and the popularity row of every seed."""
  num_negatives = int(sw.spec.num_negatives)
  rows, data = list(sw.rows), {}
  for row in rows:
    seed = int(row["seed"])
    if seed not in data:
      data[seed] = sweep.load_data(sw.config.data, seed)
    tr, _, te = data[seed]
    z = np.load(os.path.join(sw.workdir, row["workdir"], "embeddings.npz"))
    row.update(hit_rates(z["query"], z["items"], tr, te, seed, num_negatives))
  for seed in sw.seeds:
    if seed not in data:
      data[seed] = sweep.load_data(sw.config.data, seed)
    rows.append(popularity_row(sw.config, seed, num_negatives, data[seed]))
  return rows


def analysis(sw: sweep.Sweep) -> tuple[list[str], list[str]]:
  """The reordering checks, metrics_bars.png, full_vs_sampled.png and the rankings."""
  summary, rows = sw.summary, sw.rows
  notes = reorder_notes(summary, rows, FULL) + reorder_notes(summary, rows, FULL_HR)
  order = ranking({s: d[FULL][0] for s, d in summary.items()})
  report_lib.plot_bars(sw.workdir, summary, [FULL, FULL_HR, SAMPLED], "metrics_bars.png", order)
  _plot_scatter(sw.workdir, summary)
  return notes, [
      "",
      "## Rankings",
      "",
      f"sampled_hr@10: each test pair against {sw.spec.num_negatives} uniform unseen items "
      f"(same draws for every model of a seed); {FULL_HR}: the same test pairs against all "
      "unseen items (the exact value the sampled metric estimates, so the second block of "
      "checks isolates the effect of sampling); recall@10: per user, full ranking. Never "
      "read a sampled metric without the full ones beside it.",
      "",
      *ranking_table(summary, [FULL, FULL_HR, SAMPLED]),
  ]


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
  s = sum(np.sign(a[x] - a[y]) * np.sign(b[x] - b[y]) for x, y in itertools.combinations(keys, 2))
  return float(s / (n * (n - 1) / 2))


def relative_spread(means: dict[str, float]) -> float:
  """(best - worst) / best: how far apart the metric puts the models."""
  v = np.array(list(means.values()))
  return float((v.max() - v.min()) / v.max()) if v.max() > 0 else 0.0


def reorder_notes(
    summary: dict, rows: list[dict], full_key: str, sampled_key: str = SAMPLED
) -> list[str]:
  """Kendall tau, every reordered pair (with the number of seeds where it is reordered)
  and the gap compression, between a full-ranking metric and the sampled one."""
  full = {s: d[full_key][0] for s, d in summary.items() if full_key in d and sampled_key in d}
  samp = {s: d[sampled_key][0] for s, d in summary.items() if s in full}
  notes = [
      f"{full_key} vs {sampled_key}: Kendall tau between the rankings of the means "
      f"{kendall_tau(full, samp):.3f}"
  ]
  pairs = discordant_pairs(full, samp)
  for x, y in pairs:
    flips, n = _seed_orders(rows, x, y, full_key, sampled_key)
    notes.append(
        f"REORDERED: {x} > {y} by {full_key} ({full[x]:.4f} vs {full[y]:.4f}) but "
        f"{x} < {y} by {sampled_key} ({samp[x]:.4f} vs {samp[y]:.4f}); reordered "
        f"on {flips}/{n} seeds"
    )
  if not pairs:
    notes.append(f"no reordering: {full_key} and {sampled_key} rank the models alike")
  sf, ss = relative_spread(full), relative_spread(samp)
  notes.append(
      f"{'PASS' if ss < sf else 'FAIL'}: the sampled metric compresses the gaps: "
      f"(best - worst) / best = {sf:.3f} for {full_key}, {ss:.3f} for {sampled_key}"
  )
  return notes


def ranking_table(summary: dict, keys: Sequence[str]) -> list[str]:
  """Markdown: rank i -> the i-th model (and its mean) under each metric."""
  have = [s for s, d in summary.items() if all(k in d for k in keys)]
  orders = [ranking({s: summary[s][k][0] for s in have}) for k in keys]
  lines = ["| rank | " + " | ".join(f"by {k}" for k in keys) + " |", "|---|" + "---|" * len(keys)]
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
  flips = sum(1 for d in both if (d[x][0] - d[y][0]) * (d[x][1] - d[y][1]) < 0)
  return flips, len(both)


# --------------------------------------------------------------------------------------
# The ablation.


def full_hit_rate(
    query_UxD, items_NxD, train_inter, test_inter, *, k: int = 10, user_batch: int = 256
) -> float:
  """`full_hit_rate_scores` of the dot-product scores q_u . v_j (float32)."""
  q = np.asarray(query_UxD, np.float32)
  v = np.asarray(items_NxD, np.float32)
  return full_hit_rate_scores(
      lambda ub: q[ub] @ v.T, v.shape[0], train_inter, test_inter, k=k, user_batch=user_batch
  )


def _test_pairs(num_items, train_inter, test_inter):
  """(test keys outside train, every seen key: train or test), keys u * N + i, sorted."""
  n = int(num_items)
  tr = np.unique(train_inter.user_ids.astype(np.int64) * n + train_inter.item_ids)
  te = np.unique(test_inter.user_ids.astype(np.int64) * n + test_inter.item_ids)
  te = te[~np.isin(te, tr, assume_unique=True)]
  if te.size == 0:
    raise ValueError("test has no (user, item) pair outside train")
  return te, np.union1d(tr, te)


def full_hit_rate_scores(
    scores_fn, num_items, train_inter, test_inter, *, k: int = 10, user_batch: int = 256
) -> float:
  """The exact counterpart of `metrics.sampled_hit_rate`: each test pair (u, i) (not a
  train pair) is ranked against ALL items u never interacted with (train or test); hit
  iff fewer than k of them score >= s_ui. Averaged over test pairs. scores_fn(users_b)
  -> [b, N] scores (a copy is sorted in place)."""
  n = int(num_items)
  te, seen = _test_pairs(n, train_inter, test_inter)
  seen_u, seen_i = seen // n, seen % n
  te_u, te_i = te // n, te % n
  users = np.unique(te_u)
  hits = 0
  for lo in range(0, users.size, user_batch):
    ub = users[lo : lo + user_batch]
    scores = np.array(scores_fn(ub), np.float32)  # [b, N]
    a, b = np.searchsorted(te_u, [ub[0], ub[-1] + 1])
    rows = np.searchsorted(ub, te_u[a:b])
    pos = scores[rows, te_i[a:b]]
    c, d = np.searchsorted(seen_u, [ub[0], ub[-1] + 1])
    su, si = seen_u[c:d], seen_i[c:d]
    own = np.isin(su, ub)  # users without test pairs lie in between too
    scores[np.searchsorted(ub, su[own]), si[own]] = -np.inf  # seen items out
    scores.sort(axis=1)
    ahead = np.array([n - np.searchsorted(scores[r], p, side="left") for r, p in zip(rows, pos)])
    hits += int(np.sum(ahead < k))
  return hits / te.size


def sampled_hit_rate_scores(
    scores_fn, num_items, train_inter, test_inter, *, num_negatives, k, key, user_batch=256
) -> float:
  """`metrics.sampled_hit_rate` from a scores function instead of embeddings (for a
  closed-form model such as EASE): the same test pairs, the same negatives for the same
  key (`metrics.sample_unseen_items`), hit iff fewer than k of them score >= s_ui."""
  from jaxrec import metrics

  n = int(num_items)
  te, seen = _test_pairs(n, train_inter, test_inter)
  te_u, te_i = te // n, te % n
  negs = metrics.sample_unseen_items(key, te_u, seen, n, num_negatives)
  users = np.unique(te_u)
  hits = 0
  for lo in range(0, users.size, user_batch):
    ub = users[lo : lo + user_batch]
    scores = np.asarray(scores_fn(ub), np.float32)
    a, b = np.searchsorted(te_u, [ub[0], ub[-1] + 1])
    rows = np.searchsorted(ub, te_u[a:b])
    pos = scores[rows, te_i[a:b]]
    ahead = np.sum(scores[rows[:, None], negs[a:b]] >= pos[:, None], axis=1)
    hits += int(np.sum(ahead < k))
  return hits / te.size


def _key(seed: int):
  import jax

  return jax.random.fold_in(jax.random.PRNGKey(seed), 1234)  # same negatives for all models


def _sampled(query, items, tr, te, seed, num_negatives):
  from jaxrec import metrics

  return metrics.sampled_hit_rate(
      query, items, tr, te, num_negatives=num_negatives, k=10, key=_key(seed)
  )


def hit_rates(query, items, tr, te, seed, num_negatives) -> dict[str, float]:
  return {
      FULL_HR: full_hit_rate(query, items, tr, te, k=10),
      SAMPLED: _sampled(query, items, tr, te, seed, num_negatives),
  }


def run_hit_rates(run_dir: str, num_negatives: int, data_cache: dict) -> dict[str, float]:
  """full_hr@10 and sampled_hr@10 of one finished launcher run (a tune final): from its
  embeddings.npz, or for EASE (no embeddings) from its scores refitted on the same train
  rows; test pairs and masked pairs as the run's final evaluation had them (train and
  valid masked), the negatives keyed by the run's seed."""
  import ml_collections

  from jaxrec import baselines, evaluate
  from jaxrec import config as config_lib

  with open(os.path.join(run_dir, "results.json")) as f:
    cfg = ml_collections.ConfigDict(json.load(f)["config"])
  key = (json.dumps(cfg.data.to_dict(), sort_keys=True), config_lib.data_seed(cfg))
  if key not in data_cache:
    data_cache[key] = sweep.load_data(cfg.data, config_lib.data_seed(cfg))
  splits = data_cache[key]
  known = evaluate.known_pairs(splits.train, splits.valid)
  path = os.path.join(run_dir, "embeddings.npz")
  if os.path.exists(path):
    z = np.load(path)
    q, v = z["query"].astype(np.float32), z["items"].astype(np.float32)
    scores_fn, num_items = (lambda ub: q[ub] @ v.T), v.shape[0]
  elif cfg.model.name == "ease":
    scorer = baselines.fit_ease(cfg, splits.train)
    scores_fn, num_items = scorer.scores, splits.train.num_items
  else:
    raise FileNotFoundError(
        f"{path}: no embeddings (a run copied from records/ keeps none); remove "
        f"{run_dir} and rerun the command to retrain it"
    )
  seed = int(cfg.seed)
  return {
      FULL_HR: full_hit_rate_scores(scores_fn, num_items, known, splits.test, k=10),
      SAMPLED: sampled_hit_rate_scores(
          scores_fn,
          num_items,
          known,
          splits.test,
          num_negatives=num_negatives,
          k=10,
          key=_key(seed),
      ),
  }


def tune_analysis(workdir: str, base, final_rows: list[dict]) -> list[str]:
  """`experiments.tune`'s analysis hook for the `tune` variant: adds full_hr@10 and
  sampled_hr@10 to every final run's test metrics (so the declared claims can name them),
  then the reorderings, the gap compression, the ranking table and the two plots of the
  sweep's analysis, over the tuned models' means across seeds."""
  num_negatives = int(base.sweep.num_negatives) if "sweep" in base else 100
  cache = {}
  for r in final_rows:
    r["test"].update(run_hit_rates(r["dir"], num_negatives, cache))
  rows = [{"strategy": r["method"], "seed": r["seed"], **r["test"]} for r in final_rows]
  summary = report_lib.summarize([{**r, "overrides": ""} for r in rows])
  notes = reorder_notes(summary, rows, FULL) + reorder_notes(summary, rows, FULL_HR)
  order = ranking({s: d[FULL][0] for s, d in summary.items()})
  report_lib.plot_bars(workdir, summary, [FULL, FULL_HR, SAMPLED], "metrics_bars.png", order)
  _plot_scatter(workdir, summary)
  return [
      "",
      "## Sampled against full-ranking metrics",
      "",
      f"sampled_hr@10: each test pair against {num_negatives} uniform unseen items (the same "
      f"draws for every model of a seed); {FULL_HR}: the same pairs against all unseen "
      "items; recall@10: per user, full ranking. Each model's means over its final runs "
      "(EASE and popularity: one run). metrics_bars.png, full_vs_sampled.png.",
      "",
      *[f"- {n}" for n in notes],
      "",
      *ranking_table(summary, [FULL, FULL_HR, SAMPLED]),
  ]


def popularity_row(config, seed: int, num_negatives: int, data=None) -> dict:
  from jaxrec import metrics

  tr, _, te = data if data is not None else sweep.load_data(config.data, seed)
  q, v = metrics.popularity_scores(tr)
  m = metrics.evaluate(q, v, tr, te, ks=tuple(config.eval.ks))
  return {
      "strategy": POPULARITY,
      "seed": seed,
      "overrides": "{}",
      "workdir": "",
      **m,
      **hit_rates(q, v, tr, te, seed, num_negatives),
  }


def _plot_scatter(workdir, summary) -> str:
  plt = report_lib.pyplot()

  fig, ax = plt.subplots(figsize=(6.5, 4.8))
  for s, d in sorted(summary.items()):
    if FULL in d and SAMPLED in d:
      ax.errorbar(
          d[FULL][0], d[SAMPLED][0], xerr=d[FULL][1], yerr=d[SAMPLED][1], fmt="o", capsize=3
      )
      ax.annotate(
          s, (d[FULL][0], d[SAMPLED][0]), fontsize=8, xytext=(4, 3), textcoords="offset points"
      )
  ax.set_xlabel("recall@10, full ranking")
  ax.set_ylabel("HR@10 against 100 sampled negatives")
  ax.grid(alpha=0.3)
  ax.set_title("Sampled vs full metric (Krichene & Rendle 2020)", fontsize=9)
  return report_lib.save_figure(fig, workdir, "full_vs_sampled.png")

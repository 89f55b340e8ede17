r"""MF against the softmax DNN: the course's four closing claims, measured in one command.

  python -m experiments.mf_vs_dnn --workdir=runs/mf_vs_dnn [--quick (the :quick variant)] \
      [--config=experiments/configs/mf_vs_dnn.py] [--config.x=y ...]

The setting, the tuning and the claims' thresholds are in experiments/configs/mf_vs_dnn.py.
What runs, in order (each part resumes: finished runs and timings are kept):

1. features/users.csv, features/items.csv: the world's side features, written from its
   ground truth (`write_features`) and read back through jaxrec.data.features.
2. tune/: `experiments.tune` on the synthetic world: popularity, WALS, MF and the DNN with
   sampled softmax and positive-only training, and the DNN with features; each method's
   winner on validation refit for every seed.
3. language_split/: the same winners (but popularity and the features run) on a language
   split world (claim 2).
4. timing.json: claim 1. For MF and the DNN at each catalogue size (`mvd.sizes`): the
   jitted training step (sampled softmax, uniform negatives), the query embedding of a
   batch of users (MF: its rows; the DNN: the tower over each user's history bag), and
   serving (that query embedding plus the top-K over the whole catalogue). Each is timed
   by `per_call` (blocks of at least `mvd.timing_block_seconds`, serving
   `mvd.serve_block_seconds`), every (size, model) in turn in each round (the two models
   at one size back to back); a round's log ratios DNN / MF at the largest size are one
   "seed" of claim 1's interval.
5. report.md (and rows.csv, folding.png, ranking.png, timing.png): the claims' verdicts;
   per world and method, test recall@20, NDCG@10 over the whole catalogue, NDCG@10 within
   the user's own group (claim 4), NDCG@10 within the first stage's top `mvd.candidates`
   (WALS of the same seed; claim 3) and cross_group@20.

Ranking within a set (`ndcg_within`): the model's scores restricted to the set minus the
user's train items; DCG@k of the user's test items that are in the set, over the ideal
DCG of min(k, that many); users with none in the set are left out (the candidate table
says how many remain: the first stage's reach).
"""

from __future__ import annotations

import json
import math
import os
import time

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import report as report_lib
from experiments import sweep, tune
from experiments.configs import mf_vs_dnn as cfg
from experiments.sweep import Run
from jaxrec import config as config_lib
from jaxrec import data, models, step
from jaxrec.workdir import write_json_atomic

CONFIG = "experiments/configs/mf_vs_dnn.py"
WORLDS = ("synthetic", "language_split")
# Shown per world and method in report.md (rows.csv has them all).
SHOWN = ("recall@20", "ndcg@10", "group_ndcg@10", "candidate_ndcg@10", "cross_group@20")


# --------------------------------------------------------------------------------------
# 1. Side features from the world's ground truth.


def write_features(folder: str, data_cfg, interest_noise: float, seed: int = 0) -> dict:
  """users.csv (user, country = language, interest = preferred topic, replaced by a
  uniform topic with probability `interest_noise`) and items.csv (item, language, topic)
  for the synthetic world of `data_cfg`; returns the data.* keys that read them."""
  world, user_topics, item_topics = data.synthetic_world(
      data_cfg, int(data_cfg.seed), return_topics=True
  )
  rng = np.random.default_rng(seed)
  topics = int(item_topics.max()) + 1
  replaced = rng.random(world.num_users) < interest_noise
  interest = np.where(replaced, rng.integers(0, topics, world.num_users), user_topics)
  os.makedirs(folder, exist_ok=True)
  users, items = os.path.join(folder, "users.csv"), os.path.join(folder, "items.csv")
  lines = [f"{u},g{g},t{t}" for u, (g, t) in enumerate(zip(world.user_groups, interest))]
  _write_text(users, "user,country,interest\n" + "\n".join(lines) + "\n")
  lines = [f"{i},g{g},t{t}" for i, (g, t) in enumerate(zip(world.item_groups, item_topics))]
  _write_text(items, "item,language,topic\n" + "\n".join(lines) + "\n")
  return {
      "data.user_features": users,
      "data.user_feature_types": "user:id,country:categorical,interest:categorical",
      "data.item_features": items,
      "data.item_feature_types": "item:id,language:categorical,topic:categorical",
  }


def _write_text(path: str, text: str) -> None:
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


# --------------------------------------------------------------------------------------
# 2-3. Quality: ranking the whole catalogue, the own group and a candidate set.


def ndcg_within(scores_UxN, allowed_UxN, train, test, k: int) -> tuple[float, int]:
  """(mean NDCG@k, users counted) of ranking, per user, the allowed items that are not
  train items: DCG@k = sum_r rel_r / log2(r + 2) over the top k, rel = test item; IDCG
  over min(k, the user's test items that are allowed); users with none are left out."""
  scores = np.where(allowed_UxN, scores_UxN.astype(np.float64), -np.inf)
  scores[train.user_ids, train.item_ids] = -np.inf
  rel = np.zeros(scores.shape, bool)
  rel[test.user_ids, test.item_ids] = True
  rel &= np.isfinite(scores)
  n_rel = rel.sum(1)
  users = np.flatnonzero(n_rel)
  if users.size == 0:
    return math.nan, 0
  s = scores[users]
  top = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.argsort(-s, 1)
  top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), 1, kind="stable"), 1)
  top_rel = np.take_along_axis(rel[users], top, 1) & np.isfinite(np.take_along_axis(s, top, 1))
  disc = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
  dcg = (top_rel * disc).sum(1)
  idcg = np.cumsum(disc)[np.minimum(n_rel[users], top.shape[1]) - 1]
  return float(np.mean(dcg / idcg)), int(users.size)


def top_n(scores_UxN, train, n: int) -> np.ndarray:
  """[U, N] bool: each user's n highest-scored items that are not train items."""
  s = scores_UxN.astype(np.float64)
  s[train.user_ids, train.item_ids] = -np.inf
  pick = np.argpartition(-s, n - 1, axis=1)[:, :n]
  out = np.zeros(s.shape, bool)
  np.put_along_axis(out, pick, True, axis=1)
  return out


def _scores(run_dir: str) -> np.ndarray:
  e = np.load(os.path.join(run_dir, "embeddings.npz"))
  return e["query"] @ e["items"].T


def quality_rows(world: str, run_dir, labels, seeds, splits, candidates: int, k: int):
  """One row per (method, seed) of a world's final runs: the test metrics of results.json
  plus ndcg_within over the own group, over the first stage's top `candidates` (WALS of
  the same seed) and over the whole catalogue (`ndcg_within_all`, the check against
  results.json's ndcg@k). `run_dir(label, seed)`: a final run's folder."""
  train, test = splits.train, splits.test
  same_group = train.user_groups[:, None] == train.item_groups[None, :]
  everything = np.ones_like(same_group)
  rows = []
  for seed in seeds:
    first = run_dir(cfg.WALS, seed)
    cand = top_n(_scores(first), train, candidates)
    for label in labels:
      wd = run_dir(label, seed)
      if not os.path.exists(os.path.join(wd, "results.json")):
        continue  # unseeded (popularity: seed 0 only)
      with open(os.path.join(wd, "results.json")) as f:
        res = json.load(f)
      s = _scores(wd)
      row = {"strategy": f"{world}/{label}", "seed": seed, **res["metrics"]}
      row[f"group_ndcg@{k}"], _ = ndcg_within(s, same_group, train, test, k)
      row[f"candidate_ndcg@{k}"], row["candidate_users"] = ndcg_within(s, cand, train, test, k)
      row[f"ndcg_within_all@{k}"], _ = ndcg_within(s, everything, train, test, k)
      row["train_seconds"] = res["run"].get("train_seconds", res["run"].get("wall_seconds"))
      rows.append(row)
  return rows


def _final_data(base, overrides):
  """The splits the final runs of `base` (+ overrides) trained and were tested on."""
  c = sweep.apply_overrides(base, tuple(overrides))
  return data.load_data(c.data, config_lib.data_seed(c))


def split_world(base: ml_collections.ConfigDict, m) -> ml_collections.ConfigDict:
  """Claim 2's second world: `m.split_copies` copies of a one-language world with the
  base world's users and items in all, drawn with data seed `m.split_seed` and Zipf
  exponent `m.split_zipf` (the synthetic world is itself such a split: with the same seed
  and exponent the two would be the same data)."""
  return sweep.apply_overrides(
      base,
      (
          ("data.num_groups", 1),
          ("data.num_items", int(base.data.num_items) // int(m.split_copies)),
          ("data.language_split", int(m.split_copies)),
          ("data.seed", int(m.split_seed)),
          ("data.zipf_exponent", float(m.split_zipf)),
      ),
  )


# --------------------------------------------------------------------------------------
# 4. Claim 1: step, query and serving time against the catalogue size.


class _Timed:
  """One (model, N): the compiled train step, query and serve functions and their state."""

  def __init__(self, base, model: str, num_items: int, m: ml_collections.ConfigDict, log):
    c = sweep.apply_overrides(
        base,
        (
            ("model.name", model),
            ("data.num_groups", 1),
            ("data.num_items", num_items),
            ("data.num_users", int(m.timing_users)),
            ("data.seed", 0),
            ("data.valid_fraction", 0.0),
        ),
    )
    config_lib.validate_config(c)
    t0 = time.time()
    self.spec = config_lib.StepSpec.from_config(c)
    train = data.load_data(c.data, 0).train
    self.ddata = step.device_data(train, self.spec)
    self.state = step.init_state(self.spec, c, train.num_users, train.num_items, 0)
    rng = np.random.default_rng(0)
    users = rng.choice(train.num_users, int(m.serve_batch), replace=False)
    self.users = jnp.asarray(users, jnp.int32)
    # the DNN's input at serving: each user's history (its first max_bag train items)
    L = int(c.model.max_bag)
    counts = np.bincount(train.user_ids, minlength=train.num_users)
    starts = np.concatenate([[0], np.cumsum(counts)])
    order = np.argsort(train.user_ids, kind="stable")
    bag = np.zeros((users.size, L), np.int32)
    mask = np.zeros((users.size, L), bool)
    for r, u in enumerate(users):
      items = train.item_ids[order[starts[u] : starts[u + 1]]][:L]
      bag[r, : items.size], mask[r, : items.size] = items, True
    self.bag, self.mask = jnp.asarray(bag), jnp.asarray(mask)
    self.query, self.serve = _serving(self.spec.model, int(m.serve_k))
    self.block(0.0, 0.0)  # compile and warm up
    log(f"  timing {model} at N={num_items:,}: ready in {time.time() - t0:.1f} s")

  def _q(self):
    return self.query(self.state.tables["query"], self.state.dense, self.users, self.bag, self.mask)

  def train(self):
    self.state, m = step.jitted_train_step(self.spec, self.state, self.ddata)
    return m["loss"]

  def block(self, seconds: float, serve_seconds: float) -> dict:
    """Seconds per call of a train step, a query embedding and a serve (`per_call`)."""
    return {
        "step": per_call(self.train, seconds),
        "query": per_call(self._q, seconds),
        "serve": per_call(lambda: self.serve(self._q(), self.state.tables["item"]), serve_seconds),
    }


def per_call(fn, seconds: float) -> float:
  """Seconds per call of `fn` (its result blocked on): n = 1, 2, 4, ... calls back to
  back until n calls take at least `seconds` (as timeit's autorange); that n's mean."""
  n = 1
  while True:
    t = time.perf_counter()
    for _ in range(n):
      out = fn()
    jax.block_until_ready(out)
    dt = time.perf_counter() - t
    if dt >= seconds:
      return dt / n
    n *= 2


def _serving(spec, k: int):
  """(query, serve) jitted for one model: query(table, dense, users_B, bag_BxL, mask_BxL)
  -> [B, D] (MF: the users' rows; the DNN: the tower over the pooled bag), and
  serve(query_BxD, items_NxD) -> the top-k item ids [B, k]."""
  model = models.REGISTRY[spec.name]

  @jax.jit
  def query(table, dense, users_B, bag_BxL, mask_BxL):
    if model.query_table == "items":
      x = models.pool_rows(table[bag_BxL], mask_BxL)
    else:
      x = table[users_B]
    return model.apply_dense(dense, x, spec)

  @jax.jit
  def serve(query_BxD, items_NxD):
    return jax.lax.top_k(query_BxD @ items_NxD.T, k)[1]

  return query, serve


def timing(config, m, log=print) -> dict:
  """{"sizes", "seconds": {model: {N: {step, query, serve: [per round]}}}} of the training
  config `config` with the settings `m` (config.mvd; see the module docstring); rounds
  interleave every (model, N)."""
  sizes = [int(n) for n in m.sizes]
  # size outer, model inner: the two models at one size are timed back to back
  timed = {(model, n): _Timed(config, model, n, m, log) for n in sizes for model in ("mf", "dnn")}
  seconds = {
      model: {str(n): {"step": [], "query": [], "serve": []} for n in sizes}
      for model in ("mf", "dnn")
  }
  for r in range(int(m.timing_rounds)):
    for (model, n), t in timed.items():
      for part, s in t.block(float(m.timing_block_seconds), float(m.serve_block_seconds)).items():
        seconds[model][str(n)][part].append(s)
    log(f"  timing round {r + 1}/{m.timing_rounds} done")
  return {"sizes": sizes, "seconds": seconds}


def timing_rows(t: dict) -> list[dict]:
  """Per round: the log of the ratio DNN / MF at the largest size (claim 1's rows)."""
  big = str(max(t["sizes"]))
  s = t["seconds"]
  rounds = len(s["mf"][big]["step"])
  return [
      {
          "strategy": "largest",
          "seed": r,
          **{
              f"log_{p}_ratio": math.log(s["dnn"][big][p][r] / s["mf"][big][p][r])
              for p in ("step", "query", "serve")
          },
      }
      for r in range(rounds)
  ]


# --------------------------------------------------------------------------------------
# The run and its report.


def run(config, workdir: str, log=print) -> dict:
  """Every part (module docstring) in order; returns {"rows", "timing", "tune"}."""
  config = ml_collections.ConfigDict(config.to_dict())
  m = config.mvd
  with config.unlocked():
    del config["mvd"]
  only = tune.only_labels(config.tune)
  if only and cfg.WALS not in only:
    raise tune.ConfigError(
        f"tune.only={config.tune.only!r} leaves out {cfg.WALS!r}, the first stage whose top "
        f"{m.candidates} are claim 3's candidate sets; add it"
    )
  t0 = time.time()
  feats = write_features(os.path.join(workdir, "features"), config.data, float(m.interest_noise))
  labels = [x[0] for x in config.tune.methods]
  with config.unlocked():  # the features run reads the files just written
    config.tune.methods = tuple(
        (label, {**fixed, **feats} if label == cfg.DNN_FEAT else fixed, space)
        for label, fixed, space in config.tune.methods
    )
  log(f"[1/4] features written to {os.path.join(workdir, 'features')}")
  log("[2/4] tuning on the synthetic world's validation carve, then the final runs")
  tuned = tune.run(config, os.path.join(workdir, "tune"), log=lambda s: log("  " + s))
  base, spec = tune.check(config)
  finals = {x["method"]: x["final_overrides"] for x in tuned["methods"]}
  seeds = [int(s) for s in spec.seeds]
  methods = {x.label: x for x in tune.methods(base, spec)}

  log("[3/4] the same winners on the language-split world")
  split_dir = os.path.join(workdir, "language_split")
  for label in (x for x in cfg.SPLIT_METHODS if x in finals):
    b = split_world(methods[label].base, m)
    b = sweep.apply_overrides(
        b, (("data.valid_fraction", 0.0), ("eval.select", ""), ("eval.patience", 0))
    )
    sweep.run_sweep(b, [Run(label, tuple(finals[label].items()))], seeds, split_dir)

  log("[4/4] claim 1: step, query and serving time against the catalogue size")
  tpath = os.path.join(workdir, "timing.json")
  keys = ("sizes", "timing_users", "timing_rounds", "timing_block_seconds", "serve_block_seconds")
  keys += ("serve_batch", "serve_k")
  want = {k: m[k] for k in keys}
  want["sizes"] = [int(n) for n in want["sizes"]]
  t = None
  if os.path.exists(tpath):
    with open(tpath) as f:
      t = json.load(f)
  if t is None or t.get("setting") != want:
    t = {**timing(base, m, log=log), "setting": want}
    write_json_atomic(tpath, t)
  else:
    log("  timing.json already measured: kept")

  rows = []
  k, cands = int(m.ndcg_k), int(m.candidates)
  any_final = next(iter(methods.values()))
  final_dir = os.path.join(workdir, "tune", "final")
  rows += quality_rows(
      "synthetic",
      lambda label, s: sweep.run_dir(os.path.join(final_dir, sweep.slug(label)), "final", s),
      labels,
      seeds,
      _final_data(any_final.base, (("data.valid_fraction", 0.0),)),
      cands,
      k,
  )
  split_base = split_world(any_final.base, m)
  rows += quality_rows(
      "language_split",
      lambda label, s: sweep.run_dir(split_dir, label, s),
      [x for x in cfg.SPLIT_METHODS if x in finals],
      seeds,
      _final_data(split_base, (("data.valid_fraction", 0.0),)),
      cands,
      k,
  )
  rows += timing_rows(t)
  sweep.write_csv_atomic(os.path.join(workdir, "rows.csv"), rows)
  write_report(workdir, rows, t, tuned, time.time() - t0)
  return {"rows": rows, "timing": t, "tune": tuned}


def _mean_std(values) -> str:
  v = np.asarray([x for x in values if isinstance(x, float) and not math.isnan(x)])
  if v.size == 0:
    return "-"
  if v.size == 1:
    return f"{v[0]:.4f}"
  return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}"


def write_report(workdir, rows, t, tuned, seconds) -> None:
  """report.md and the plots (see the module docstring)."""
  claims = report_lib.parse_claims(cfg.claims())
  judged = report_lib.judge(rows, claims)
  lines = ["# MF against the softmax DNN: the course's closing claims", ""]
  lines += report_lib.claims_section(rows, claims)[1:]
  why = [p for p in (explain(j) for j in judged if j["verdict"] != "held") if p]
  if why:
    lines += ["", "Where a verdict differs from the course:", ""] + why
  for world in WORLDS:
    labels = [r["strategy"] for r in rows if r["strategy"].startswith(world + "/")]
    labels = list(dict.fromkeys(labels))
    lines += ["", f"## {world} world (test; mean ± std over seeds)", ""]
    lines += ["| method | seeds | " + " | ".join(SHOWN) + " | candidate users | train s |"]
    lines += ["|---" * (len(SHOWN) + 4) + "|"]
    for label in labels:
      rs = [r for r in rows if r["strategy"] == label]
      cells = [_mean_std([r.get(x) for r in rs]) for x in SHOWN]
      cu = np.mean([r["candidate_users"] for r in rs])
      ts = np.mean([r["train_seconds"] or 0.0 for r in rs])
      lines.append(
          f"| {label.split('/', 1)[1]} | {len(rs)} | "
          + " | ".join(cells)
          + f" | {cu:.0f} | {ts:.1f} |"
      )
  gap = max(
      (
          abs(r["ndcg@10"] - r["ndcg_within_all@10"])
          for r in rows
          if "ndcg@10" in r and not r["strategy"].endswith(cfg.POP)
      ),
      default=0.0,
  )
  lines += [
      "",
      f"Check: NDCG@10 ranked here over the whole catalogue against results.json's "
      f"ndcg@10 (jaxrec.metrics): largest difference {gap:.2e} (popularity left out: its "
      "tied scores may be ordered either way).",
      "",
      "## Claim 1: time against the catalogue size (seconds per call, median of rounds)",
      "",
      "| N | MF step ms | DNN step ms | MF query ms | DNN query ms | MF serve ms | DNN serve ms |",
      "|---|---|---|---|---|---|---|",
  ]
  sec = t["seconds"]
  med = lambda model, n, p: 1e3 * float(np.median(sec[model][str(n)][p]))
  for n in t["sizes"]:
    lines.append(
        f"| {n:,} | "
        + " | ".join(
            f"{med(mo, n, p):.3f}" for p in ("step", "query", "serve") for mo in ("mf", "dnn")
        )
        + " |"
    )
  lo, hi = min(t["sizes"]), max(t["sizes"])
  growth = ", ".join(
      f"{mo} {p} {med(mo, hi, p) / med(mo, lo, p):.2f}x"
      for mo in ("mf", "dnn")
      for p in ("step", "serve")
  )
  ratio = lambda p: math.exp(
      np.mean([r[f"log_{p}_ratio"] for r in rows if r["strategy"] == "largest"])
  )
  lines += [
      "",
      f"Growth from N = {lo:,} to {hi:,}: {growth}. DNN / MF at N = {hi:,} (geometric mean "
      f"over the rounds): step {ratio('step'):.2f}x, query {ratio('query'):.2f}x, serve "
      f"{ratio('serve'):.2f}x.",
  ]
  lines += ["", "Tuning (validation recall@20; the winners every world uses):", ""]
  for x in tuned["methods"]:
    lines.append(
        f"- {x['method']}: {json.dumps(x['best'])} (valid {x['best_valid']['recall@20']:.4f})"
    )
  lines += ["", f"Wall time of this invocation: {seconds:.0f} s."]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  _plots(workdir, rows, t)


def explain(j: dict) -> str:
  """The paragraph of config EXPLANATIONS for a claim whose verdict is not "held"."""
  for prefix, text in cfg.EXPLANATIONS.items():
    if j["claim"].text.startswith(prefix):
      return f"- **{j['claim'].text}**: {text}"
  return ""


def _plots(workdir, rows, t) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, world in zip(axes, WORLDS):
    labels = list(
        dict.fromkeys(r["strategy"] for r in rows if r["strategy"].startswith(world + "/"))
    )
    vals = [[r["cross_group@20"] for r in rows if r["strategy"] == lab] for lab in labels]
    ax.bar(range(len(labels)), [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals])
    ax.set_xticks(
        range(len(labels)), [lab.split("/", 1)[1] for lab in labels], rotation=30, ha="right"
    )
    ax.set_title(f"{world}: cross_group@20 (folding)")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "folding.png"), dpi=100)
  plt.close(fig)

  labels = list(
      dict.fromkeys(r["strategy"] for r in rows if r["strategy"].startswith("synthetic/"))
  )
  fig, ax = plt.subplots(figsize=(9, 4))
  width = 0.27
  for i, metric in enumerate(("ndcg@10", "group_ndcg@10", "candidate_ndcg@10")):
    vals = [np.mean([r[metric] for r in rows if r["strategy"] == lab]) for lab in labels]
    ax.bar(np.arange(len(labels)) + (i - 1) * width, vals, width, label=metric)
  ax.set_xticks(
      range(len(labels)), [lab.split("/", 1)[1] for lab in labels], rotation=30, ha="right"
  )
  ax.legend()
  ax.set_title("synthetic: NDCG@10 over the catalogue, the own group, the candidate set")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "ranking.png"), dpi=100)
  plt.close(fig)

  fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
  for ax, part in zip(axes, ("step", "query", "serve")):
    for model in ("mf", "dnn"):
      ms = [1e3 * float(np.median(t["seconds"][model][str(n)][part])) for n in t["sizes"]]
      ax.loglog(t["sizes"], ms, "o-", label=model)
    ax.set_xlabel("catalogue size N")
    ax.set_ylabel("ms per call")
    ax.set_title(part)
    ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "timing.png"), dpi=100)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  out = run(_CONFIG.value, _WORKDIR.value)
  print(f"done: see {os.path.join(_WORKDIR.value, 'report.md')}", flush=True)
  for j in report_lib.judge(out["rows"], report_lib.parse_claims(cfg.claims())):
    print(f"  {j['verdict']:>22}: {j['claim'].text}", flush=True)


def quick_argv(argv: list[str]) -> list[str]:
  """--quick -> the config's `quick` variant (--config=FILE[:V] gets ",quick"/":quick")."""
  if "--quick" not in argv:
    return argv
  out = [a for a in argv if a != "--quick"]
  at = next((i for i, a in enumerate(out) if a.startswith("--config=")), None)
  if at is None:
    return out + [f"--config={CONFIG}:quick"]
  out[at] += ",quick" if ":" in out[at] else ":quick"
  return out


if __name__ == "__main__":
  import sys

  from experiments import cli

  sys.argv = quick_argv(sys.argv)  # config_flags reads the variant from sys.argv

  _CONFIG = cli.define_config_file("config", CONFIG, "Config file (FILE.py:VARIANT).")
  _WORKDIR = flags.DEFINE_string("workdir", "runs/mf_vs_dnn", "Output folder (resumed if present).")
  cli.run(main, extra_help=lambda: __doc__)

"""The popularity-tail analysis: where the top-20 slots and the softmax mass go by training
count, and the push of the partition term at the trained unigram model.

The sweep, the setting, the claim examined and what it measured:
experiments/configs/popularity_tail.py.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from experiments import report as report_lib
from experiments import sweep
from experiments.configs.popularity_tail import RUNS

UNIGRAM = "unigram0.75"
TOP_K = 20
# (label, lowest count, highest count) of the training-count bins.
BINS = (("0", 0, 0), ("1", 1, 1), ("2-4", 2, 4), ("5-19", 5, 19), (">=20", 20, None))
TAIL_BINS = ("1", "2-4")  # the "tail share": top-20 slots given to items seen 1-4 times
PUSH_BATCH = 256  # training pairs at which the push is measured
PUSH_DRAWS = 128  # Monte-Carlo draws of the sampled push


def analysis(sw: sweep.Sweep) -> tuple[list[str], list[str]]:
  """Per seed: bin shares of each run's top-20 slots and softmax mass, and the push ratios
  at the unigram model (sw.extras["per_seed"]); the verdict, the tables, the plot."""
  config, ks = sw.config, [int(k) for k in sw.spec.push_ks]
  rows = {(r["strategy"], int(r["seed"])): r for r in sw.rows}
  recall = {run: _mean_std([rows[(run, s)]["recall@20"] for s in sw.seeds]) for run in RUNS}
  temperature = float(config.loss.temperature)
  per_seed = sw.extras["per_seed"] = []
  for seed in sw.seeds:
    train, _, test = sweep.load_data(config.data, seed)
    counts = np.bincount(train.item_ids, minlength=train.num_items)
    masks = bin_masks(counts)
    d = {
        "items": {n: float(m.mean()) for n, m in masks},
        "test": shares(np.bincount(test.item_ids, minlength=train.num_items), masks),
        "train": shares(counts, masks),
        "runs": {},
    }
    for r in RUNS:
      d["runs"][r] = analyse_run(sw.run_dir(r, seed), train, counts, temperature)
    sw.log(f"seed {seed}: measuring the push ({2 * len(ks)} proposals x K, {PUSH_DRAWS} " "draws)")
    d["push"] = push_ratios(
        sw.run_dir(UNIGRAM, seed),
        train,
        counts,
        ks,
        alpha=float(config.sampler.alpha),
        temperature=temperature,
        seed=seed,
    )
    per_seed.append(d)
  plot(sw.workdir, per_seed)
  return verdict(per_seed, ks), [
      *tables(per_seed, recall),
      "",
      f"K = {config.sampler.num_negatives} negatives in training, "
      f"language_split = {config.data.language_split}, {config.train.steps} steps of "
      f"batch {config.train.batch_size}.",
  ]


def tune_analysis(workdir: str, base, final_rows: list[dict]) -> list[str]:
  """`experiments.tune`'s analysis hook for the `tune` variant. Per seed, on the tuned
  final runs of RUNS (each trained on train + valid, so the bins count those rows): the
  bin shares of top-20 slots and softmax mass, and the push ratios at the unigram run.
  Adds to each RUNS row's test metrics `tail_top20` (share of top-20 slots on TAIL_BINS),
  and to the unigram rows `push_rare`, `push_head` and `push_rare_minus_head` (unigram
  proposal at the training K: sampled / exact push on count-1 and >= 20 items), which
  the declared claims name; returns the verdict, the tables and the plot's report lines."""
  ks = sorted({int(k) for k in base.sweep.push_ks} | {int(base.sampler.num_negatives)})
  k_train = int(base.sampler.num_negatives)
  by = {(r["method"], int(r["seed"])): r for r in final_rows}
  seeds = sorted(s for m, s in by if m == UNIGRAM and all((r, s) in by for r in RUNS))
  if not seeds:
    return ["", f"(popularity_tail: no seed has a final run of every one of {', '.join(RUNS)})"]
  per_seed, cache = [], {}
  for seed in seeds:
    cfg = _run_config(by[(UNIGRAM, seed)]["dir"])
    train, _, test = _data(cfg, cache)
    counts = np.bincount(train.item_ids, minlength=train.num_items)
    masks = bin_masks(counts)
    temperature = float(cfg["loss"]["temperature"])
    d = {
        "items": {n: float(m.mean()) for n, m in masks},
        "test": shares(np.bincount(test.item_ids, minlength=train.num_items), masks),
        "train": shares(counts, masks),
        "runs": {},
    }
    for r in RUNS:
      d["runs"][r] = analyse_run(by[(r, seed)]["dir"], train, counts, temperature)
      by[(r, seed)]["test"]["tail_top20"] = sum(d["runs"][r]["top20"][b] for b in TAIL_BINS)
    d["push"] = push_ratios(
        by[(UNIGRAM, seed)]["dir"],
        train,
        counts,
        ks,
        alpha=float(cfg["sampler"]["alpha"]),
        temperature=temperature,
        seed=seed,
    )
    rare, head = d["push"][("unigram", k_train)]["1"], d["push"][("unigram", k_train)][">=20"]
    by[(UNIGRAM, seed)]["test"].update(
        push_rare=rare, push_head=head, push_rare_minus_head=rare - head
    )
    per_seed.append(d)
  recall = {r: _mean_std([by[(r, s)]["test"]["recall@20"] for s in seeds]) for r in RUNS}
  plot(workdir, per_seed)
  return [
      "",
      "## The long tail (popularity_tail.png)",
      "",
      f"Seeds {', '.join(map(str, seeds))}; each run is its method's tuned final run. "
      "tail_top20: the share of top-20 slots on items seen 1-4 times (training + validation "
      f"rows); push_rare / push_head: the unigram proposal at K = {k_train} on the trained "
      f"{UNIGRAM} model, sampled / exact push on count-1 / >= 20 items.",
      "",
      *[f"- {n}" for n in verdict(per_seed, ks)],
      *tables(per_seed, recall),
  ]


def _run_config(run_dir: str) -> dict:
  with open(os.path.join(run_dir, "results.json")) as f:
    return json.load(f)["config"]


def _data(cfg: dict, cache: dict):
  """The (train, valid, test) splits a finished run trained and was tested on."""
  import ml_collections

  from jaxrec import config as config_lib

  c = ml_collections.ConfigDict(cfg)
  key = (json.dumps(cfg["data"], sort_keys=True), config_lib.data_seed(c))
  if key not in cache:
    cache[key] = sweep.load_data(c.data, config_lib.data_seed(c))
  return cache[key]


def bin_masks(counts_N: np.ndarray) -> list[tuple[str, np.ndarray]]:
  """[(label, bool mask over items)] for BINS."""
  out = []
  for name, lo, hi in BINS:
    m = counts_N >= lo
    if hi is not None:
      m &= counts_N <= hi
    out.append((name, m))
  return out


def topk_and_mass(
    query_UxD,
    items_NxD,
    train_users,
    train_items,
    k: int = TOP_K,
    temperature: float = 1.0,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
  """-> (top_UxK item ids with the user's training items masked, mean_N = mean over users
  of the softmax probability p_uj of every item, nothing masked), in float64."""
  q, v = np.asarray(query_UxD, np.float64), np.asarray(items_NxD, np.float64)
  num_users = q.shape[0]
  mass = np.zeros(v.shape[0])
  top = np.zeros((num_users, k), np.int64)
  order = np.argsort(train_users, kind="stable")
  tu, ti = np.asarray(train_users)[order], np.asarray(train_items)[order]
  for start in range(0, num_users, chunk):
    s = q[start : start + chunk] @ v.T / temperature
    p = np.exp(s - s.max(1, keepdims=True))
    mass += (p / p.sum(1, keepdims=True)).sum(0)
    lo, hi = np.searchsorted(tu, [start, start + s.shape[0]])
    s[tu[lo:hi] - start, ti[lo:hi]] = -np.inf
    top[start : start + s.shape[0]] = np.argpartition(-s, k - 1, axis=1)[:, :k]
  return top, mass / num_users


def shares(values_N: np.ndarray, masks) -> dict[str, float]:
  total = float(np.sum(values_N))
  return {name: float(np.sum(values_N[m])) / total for name, m in masks}


def analyse_run(run_dir: str, train, counts_N, temperature: float) -> dict:
  z = np.load(os.path.join(run_dir, "embeddings.npz"))
  top, mass = topk_and_mass(
      z["query"], z["items"], train.user_ids, train.item_ids, temperature=temperature
  )
  masks = bin_masks(counts_N)
  slots = np.bincount(top.ravel(), minlength=len(counts_N))
  return {"top20": shares(slots, masks), "mass": shares(mass, masks)}


def push_ratios(
    run_dir: str, train, counts_N, ks: Sequence[int], *, alpha: float, temperature: float, seed: int
) -> dict:
  """{(proposal, K): {bin: sampled push / exact push}} at the run's final embeddings, at
  PUSH_BATCH training pairs drawn with `seed`."""
  import jax
  import jax.numpy as jnp

  from jaxrec import diagnostics

  z = np.load(os.path.join(run_dir, "embeddings.npz"))
  rng = np.random.default_rng(seed)
  rows = rng.choice(len(train.user_ids), min(PUSH_BATCH, len(train.user_ids)), replace=False)
  query = jnp.asarray(z["query"][train.user_ids[rows]])
  items = jnp.asarray(z["items"])
  pos = jnp.asarray(train.item_ids[rows].astype(np.int32))
  masks = bin_masks(counts_N)
  out = {}
  for proposal in ("unigram", "uniform"):
    for k in ks:
      kw = (
          {"counts": jnp.asarray(counts_N, jnp.float32), "unigram_alpha": alpha}
          if proposal == "unigram"
          else {}
      )
      exact, sampled = diagnostics.logit_push(
          jax.random.PRNGKey(seed),
          query,
          items,
          pos,
          proposal,
          int(k),
          num_draws=PUSH_DRAWS,
          temperature=temperature,
          sampler_kwargs=kw,
      )
      exact, sampled = np.asarray(exact, np.float64), np.asarray(sampled, np.float64)
      out[(proposal, int(k))] = {
          name: (float(sampled[m].sum() / exact[m].sum()) if exact[m].sum() > 0 else float("nan"))
          for name, m in masks
      }
  return out


def _mean_std(values):
  a = np.asarray(values, np.float64)
  return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def tables(per_seed: list[dict], recall: dict) -> list[str]:
  names = [b[0] for b in BINS]
  head = "| | " + " | ".join(f"count {n}" for n in names) + " | recall@20 |"
  sep = "|---|" + "---|" * (len(names) + 1)

  def cells(get):
    return " | ".join(report_lib.fmt(_mean_std([get(d, n) for d in per_seed])) for n in names)

  lines = [
      "",
      "## Where the top-20 slots and the softmax mass go, by training count",
      "",
      "Share of all top-20 slots (train items masked) per training-count bin, then the "
      "share of the model's softmax mass (mean over users, nothing masked); the "
      "reference rows are the held-out and the training pairs. Mean ± std over seeds.",
      "",
      head,
      sep,
      f"| share of items | {cells(lambda d, n: d['items'][n])} | |",
      f"| held-out pairs | {cells(lambda d, n: d['test'][n])} | |",
      f"| training pairs | {cells(lambda d, n: d['train'][n])} | |",
  ]
  for run in RUNS:
    lines.append(
        f"| {run}: top-20 slots | {cells(lambda d, n: d['runs'][run]['top20'][n])} "
        f"| {report_lib.fmt(recall[run])} |"
    )
  for run in RUNS:
    lines.append(f"| {run}: softmax mass | {cells(lambda d, n: d['runs'][run]['mass'][n])} " "| |")
  lines += [
      "",
      f"## Push of the partition term at the trained {UNIGRAM} model",
      "",
      "Expected sampled push / exact (full-softmax) push on each bin's logits, "
      f"`diagnostics.logit_push`, {PUSH_BATCH} training pairs, {PUSH_DRAWS} draws, "
      "log-Q on. Below 1: the bin is pushed down less than the full softmax would.",
      "",
      "| proposal, K | " + " | ".join(f"count {n}" for n in names) + " |",
      "|---|" + "---|" * len(names),
  ]
  for key in per_seed[0]["push"]:
    lines.append(f"| {key[0]}, K={key[1]} | {cells(lambda d, n: d['push'][key][n])} |")
  return lines


def verdict(per_seed: list[dict], ks: Sequence[int]) -> list[str]:
  k0 = min(ks)
  tail = TAIL_BINS

  def m(get):
    return float(np.mean([get(d) for d in per_seed]))

  rare = m(lambda d: d["push"][("unigram", k0)]["1"])
  head = m(lambda d: d["push"][("unigram", k0)][">=20"])
  out = [
      f"unigram proposal, K={k0}, at the trained {UNIGRAM} model: count-1 items pushed at "
      f"{rare:.2f}x the exact rate, items seen >= 20 times at {head:.2f}x; the ratio of "
      "the two by K: "
      + ", ".join(
          f"K={k}: {m(lambda d: d['push'][('unigram', k)]['1']) / m(lambda d: d['push'][('unigram', k)]['>=20']):.2f}"
          for k in ks
      )
  ]
  slot = {r: m(lambda d: sum(d["runs"][r]["top20"][b] for b in tail)) for r in RUNS}
  test = m(lambda d: sum(d["test"][b] for b in tail))
  out.append(
      "top-20 slots given to items seen 1-4 times: "
      + ", ".join(f"{r} {slot[r]:.3f}" for r in RUNS)
      + f" (held-out pairs on those items: {test:.3f})"
  )
  under = rare < 1.0 and rare < head and slot[UNIGRAM] > max(slot[r] for r in RUNS if r != UNIGRAM)
  out.append(
      ("SUPPORTED" if under else "NOT SUPPORTED") + ": the popularity proposal "
      "under-pushes the tail and its model over-ranks it"
  )
  return out


def plot(workdir: str, per_seed: list[dict]) -> str:
  """popularity_tail.png: top-20 slot shares by bin per run (held-out pairs beside), and
  sampled / exact push by bin for each proposal and K (mean over seeds)."""
  plt = report_lib.pyplot()

  names = [b[0] for b in BINS]
  x = np.arange(len(names))
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
  series = [("held-out pairs", lambda d: d["test"])] + [
      (f"{r}: top-20", lambda d, r=r: d["runs"][r]["top20"]) for r in RUNS
  ]
  width = 0.8 / len(series)
  for i, (lab, get) in enumerate(series):
    vals = [np.mean([get(d)[n] for d in per_seed]) for n in names]
    a1.bar(
        x + (i - (len(series) - 1) / 2) * width,
        vals,
        width,
        label=lab,
        color="0.6" if i == 0 else f"C{i - 1}",
    )
  a1.set_xticks(x, [f"count {n}" for n in names])
  a1.set_ylabel("share")
  a1.set_title("Top-20 slots by training count of the item", fontsize=9)
  a1.legend(fontsize=7)
  for key in per_seed[0]["push"]:
    vals = [np.mean([d["push"][key][n] for d in per_seed]) for n in names]
    a2.plot(
        x,
        vals,
        marker="o",
        ls="-" if key[0] == "unigram" else "--",
        lw=1.2,
        label=f"{key[0]}, K={key[1]}",
    )
  a2.axhline(1.0, color="k", lw=0.8)
  a2.set_xticks(x, [f"count {n}" for n in names])
  a2.set_ylabel("sampled push / exact push on log Z")
  a2.set_title(f"At the trained {UNIGRAM} model (below 1: pushed down too little)", fontsize=9)
  a2.legend(fontsize=7)
  for ax in (a1, a2):
    ax.grid(alpha=0.3)
  return report_lib.save_figure(fig, workdir, "popularity_tail.png")

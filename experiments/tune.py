"""Hyperparameter search on validation, then test figures over seeds: one budget per method.

  python -m experiments.tune --config=experiments/configs/movielens.py:tune --workdir=runs/t
  python -m experiments.tune --config=experiments/configs/gowalla.py:tune,quick --workdir=...

The config is a training config plus a `tune` section (`experiments.configs.common.tune`):

  tune.methods     ((label, {fixed overrides}, {key: (values, ...)}), ...): each method is
                   the base config + its fixed overrides, searched over its space
  tune.mode        "grid" (every point, in order) or "random" (seeded draws without
                   replacement from the grid)
  tune.trials      the budget: at most this many trials per method (the same for every
                   method; a smaller space is searched exhaustively), each at most
                   train.steps steps with the base's eval.every / eval.patience
  tune.select      the validation metric, e.g. "valid/recall@20" (eval.select of the trials)
  tune.valid_fraction, tune.data_seed   the validation carve every trial sees
  tune.seeds       the seeds of the final runs (one run for a model whose fit ignores
                   the seed: EASE, popularity)
  tune.only        labels to run now ("a,b", or "a;b" for labels with commas; default
                   all): the report lists only these
  tune.refit       True: the final runs train on train + valid (data.valid_fraction = 0)
                   for the selected number of epochs (steps scaled by 1 / (1 - valid
                   fraction)); False: they keep the carve and select on it again
  tune.claims      optional: claims over the method labels (experiments/report.py's
                   Claim: the paired difference of two methods' test metric over the
                   final seeds against a threshold), declared before the run; report.md
                   gives each one's 95% interval and verdict
  tune.analysis    optional: "module.function" under experiments/, called as
                   f(workdir, base, final_rows) after the final runs and before the
                   claims are judged; it may add measures to each row's "test" dict
                   (which the claims can then name) and returns report.md lines

Trials: WORKDIR/trials/<method>/<n>/seed_<data_seed>; final runs:
WORKDIR/final/<method>/seed_<s>. Finished runs are skipped, so an interrupted search
continues (like `experiments.sweep`). Test pairs are read only by the final runs' last
evaluation: the trials evaluate validation alone, and tune ranks them by it. Writes
trials.csv, final.csv, tune.json and report.md (the space, the budget, each method's
winner and its test mean ± std and 95% t-interval over seeds, the claims, and
quality_vs_time.png: each method's winning trial's validation metric against its training
seconds, with the equal-time table).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from typing import Sequence

from absl import app, flags, logging
import ml_collections
import numpy as np

from experiments import report as report_lib
from experiments import sweep
from experiments.sweep import ConfigError, Run
from jaxrec import models
from jaxrec.workdir import write_json_atomic

# Two-sided 97.5% quantiles of Student's t by degrees of freedom (n - 1 seeds), for the
# 95% interval of a mean over a few seeds.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def points(space: dict, mode: str, trials: int, seed: int) -> list[tuple]:
  """The trials of one method: tuples of (key, value) pairs. grid: the first `trials`
  points of the cartesian product (all when it is smaller); random: `trials` distinct
  points drawn uniformly from the product with `seed` (all when it is smaller)."""
  keys = sorted(space)
  product = [tuple(zip(keys, vals)) for vals in itertools.product(*(space[k] for k in keys))]
  if mode == "grid" or len(product) <= trials:
    return product[:trials]
  pick = np.random.default_rng(seed).choice(len(product), size=trials, replace=False)
  return [product[i] for i in sorted(pick)]


def _label(point) -> str:
  return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point) or "default"


def check(config) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  """(base training config, tune section); validates every trial config first."""
  base, spec = _split(config)
  if spec.mode not in ("grid", "random"):
    raise ConfigError(f"tune.mode={spec.mode!r} must be grid or random")
  if int(spec.trials) < 1:
    raise ConfigError(f"tune.trials={spec.trials} must be >= 1")
  if not spec.methods:
    raise ConfigError("tune.methods is empty")
  if not 0.0 < float(spec.valid_fraction) < 1.0:
    raise ConfigError(f"tune.valid_fraction={spec.valid_fraction} must be in (0, 1)")
  labels = [m[0] for m in spec.methods]
  if len(set(labels)) != len(labels):
    raise ConfigError(f"tune.methods labels must be unique: {labels}")
  try:
    claims = report_lib.parse_claims(spec.get("claims", ()))
  except ValueError as err:
    raise ConfigError(f"tune.claims: {err}") from None
  unknown = sorted({x for c in claims for x in (c.a, c.b) if x and x not in labels})
  if unknown:
    raise ConfigError(f"tune.claims name no method: {', '.join(unknown)}")
  if spec.get("analysis", ""):
    sweep.lookup(spec.analysis)  # an unknown name fails here, before any training
  for method in methods(base, spec):
    sweep.run_configs(method.base, [Run(_label(p), p) for p in method.points], [0])
  return base, spec


def _split(config):
  if "tune" not in config:
    raise ConfigError("the config has no tune section (see experiments/configs/common.tune)")
  base = ml_collections.ConfigDict(config.to_dict())
  with base.unlocked():
    spec = base.tune
    del base["tune"]
  return base, spec


class Method:
  """One method of tune.methods: its trial base config and its trial points."""

  def __init__(self, base, spec, index, label, fixed, space):
    self.label, self.fixed, self.space = label, dict(fixed), {k: tuple(v) for k, v in space.items()}
    trial = sweep.apply_overrides(base, tuple(self.fixed.items()))
    with trial.unlocked():
      trial.data.valid_fraction = float(spec.valid_fraction)
      trial.data.seed = int(spec.data_seed)
      trial.eval.select = spec.select
    self.base = trial
    self.points = points(self.space, spec.mode, int(spec.trials), int(spec.search_seed) + index)


def only_labels(spec) -> list[str]:
  """tune.only as a list of method labels ([]: every method): separated by ";" when the
  string holds one (labels such as "uniform,K=4,logq" contain commas), else by ","."""
  only = spec.get("only", "")
  return [x for x in only.split(";" if ";" in only else ",") if x]


def methods(base, spec) -> list[Method]:
  """tune.methods as `Method`s, only those named in tune.only when it is set."""
  out = [Method(base, spec, i, *m) for i, m in enumerate(spec.methods)]
  only = only_labels(spec)
  unknown = [x for x in only if x not in [m.label for m in out]]
  if unknown:
    raise ConfigError(
        f"tune.only: unknown {', '.join(unknown)}; choose from {', '.join(m.label for m in out)}"
    )
  return [m for m in out if not only or m.label in only]


def run(config, workdir: str, *, log=print) -> dict:
  """The search, the final runs and the report; returns tune.json's content."""
  base, spec = check(config)
  metric = spec.select.split("/", 1)[1]
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  out = {"select": spec.select, "mode": spec.mode, "trials": int(spec.trials), "methods": []}
  trial_rows, final_rows, curve_rows = [], [], []
  for method in methods(base, spec):
    tdir = os.path.join(workdir, "trials", sweep.slug(method.label))
    runs = [Run(f"{i:03d}", p) for i, p in enumerate(method.points)]
    log(f"tune {method.label}: {len(runs)} trials on validation")
    # trials never evaluate test: only the final runs below read the test pairs
    sweep.run_sweep(method.base, runs, [int(spec.data_seed)], tdir, test=False)
    rows = _results(tdir, runs, int(spec.data_seed))
    for r in rows:
      r["method"] = method.label
    trial_rows += rows
    best = max(rows, key=lambda r: r["valid"][metric])
    curve_rows.append({"strategy": method.label, "workdir": os.path.relpath(best["dir"], workdir)})
    final_base, final_over = _final(method, best, spec)
    fdir = os.path.join(workdir, "final", sweep.slug(method.label))
    # a model whose fit ignores the seed (EASE, popularity) is run once, not once per seed
    seeds = [int(s) for s in spec.seeds]
    if not models.REGISTRY[final_base.model.name].seeded:
      seeds = seeds[:1]
    log(f"final {method.label}: {_label(best['point'])} over seeds {tuple(seeds)}")
    sweep.run_sweep(final_base, [Run("final", final_over)], seeds, fdir)
    finals = _results(fdir, [Run("final", final_over)], None, seeds=seeds)
    for r in finals:
      r["method"] = method.label
    final_rows += finals
    out["methods"].append(
        {
            "method": method.label,
            "fixed": method.fixed,
            "space": {k: list(v) for k, v in method.space.items()},
            "num_trials": len(runs),
            "trial_steps": (
                int(method.base.train.steps)
                if models.trained_by_step(method.base.model.name)
                else 0
            ),
            "best": dict(best["point"]),
            "best_valid": best["valid"],
            "selected_step": best["selected_step"],
            "final_overrides": dict(final_over),
            "test": _summary([r["test"] for r in finals]),
            "seeds": [r["seed"] for r in finals],
            "tune_seconds": sum(r["wall_seconds"] or 0.0 for r in rows),
            "final_run_seconds": [r["wall_seconds"] for r in finals],
        }
    )
  out["wall_seconds"] = time.time() - t0
  extra = []
  if spec.get("analysis", ""):
    extra = list(sweep.lookup(spec.analysis)(workdir, base, final_rows))
  claims = report_lib.parse_claims(spec.get("claims", ()))
  rows = [{"strategy": r["method"], "seed": r["seed"], **r["test"]} for r in final_rows]
  out["claims"] = [
      {**j, "claim": j["claim"].text, "statistic": j["claim"].describe()}
      for j in report_lib.judge(rows, claims)
  ]
  time_lines = report_lib.time_section(
      workdir,
      curve_rows,
      metric=metric,
      intro=f"Each method's winning trial (validation carve, data seed {spec.data_seed}: "
      "one run, so the means below are of that run).",
  )
  _write(
      workdir,
      out,
      trial_rows,
      final_rows,
      metric,
      spec,
      report_lib.claims_section(rows, claims) + extra + time_lines,
  )
  return out


def _final(method, best, spec):
  """The final runs' base config and overrides: the winner's point; with refit, no
  carve and the selected number of epochs."""
  over = list(best["point"])
  base = method.base
  if spec.refit:
    base = sweep.apply_overrides(
        base, (("data.valid_fraction", 0.0), ("eval.select", ""), ("eval.patience", 0))
    )
    if models.trained_by_step(base.model.name):
      steps = math.ceil(best["selected_step"] / (1.0 - float(spec.valid_fraction)))
      over.append(("train.steps", int(steps)))
  return base, tuple(over)


def _results(sdir, runs, seed, seeds=None) -> list[dict]:
  rows = []
  for run in runs:
    for s in seeds if seeds is not None else [seed]:
      run_dir = sweep.run_dir(sdir, run.strategy, int(s))
      with open(os.path.join(run_dir, "results.json")) as f:
        res = json.load(f)
      rows.append(
          {
              "trial": run.strategy,
              "dir": run_dir,
              "point": run.overrides,
              "seed": int(s),
              "valid": res["valid"],
              "test": res["metrics"],
              "selected_step": res["run"].get("selected_step"),
              "steps": res["run"].get("steps"),
              "wall_seconds": res["run"].get("wall_seconds"),
          }
      )
  return rows


def _summary(tests: Sequence[dict]) -> dict:
  """Per metric: mean, std (ddof 1), the 95% t-interval half-width, min, max, n."""
  out = {}
  for key in tests[0]:
    v = np.array([t[key] for t in tests], np.float64)
    n = v.size
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    half = _T975.get(n - 1, 1.96) * std / math.sqrt(n) if n > 1 else float("nan")
    out[key] = {
        "mean": float(v.mean()),
        "std": std,
        "ci95": half,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": n,
    }
  return out


def _cell(t: dict) -> str:
  if t["n"] == 1:
    return f"{t['mean']:.4f} (one run)"
  return f"{t['mean']:.4f} ± {t['std']:.4f} (±{t['ci95']:.4f})"


def _write(workdir, out, trial_rows, final_rows, metric, spec, extra_lines) -> None:
  write_json_atomic(os.path.join(workdir, "tune.json"), out)
  flat = lambda r, with_test: {
      "method": r["method"],
      "trial": r["trial"],
      "seed": r["seed"],
      "point": json.dumps(dict(r["point"])),
      "selected_step": r["selected_step"],
      "steps": r["steps"],
      "wall_seconds": r["wall_seconds"],
      **{f"valid/{k}": v for k, v in r["valid"].items()},
      **({f"test/{k}": v for k, v in r["test"].items()} if with_test else {}),
  }
  # trials.csv: validation only (the trials' own test figures are never looked at)
  sweep.write_csv_atomic(os.path.join(workdir, "trials.csv"), [flat(r, False) for r in trial_rows])
  sweep.write_csv_atomic(os.path.join(workdir, "final.csv"), [flat(r, True) for r in final_rows])
  shown = [metric] + [k for k in ("recall@20", "recall_full@20", "ndcg@20") if k != metric]
  lines = [
      f"# {spec.title}",
      "",
      f"Selection: {spec.select} on a validation carve of {spec.valid_fraction:g} of each "
      f"user's train rows (data seed {spec.data_seed}); {spec.mode} search, at most "
      f"{spec.trials} trials per method; final runs: seeds "
      f"{', '.join(map(str, spec.seeds))}, "
      + ("refit on train + valid for the selected epochs." if spec.refit else "same carve."),
      "",
      "| method | trials x steps | best setting | valid "
      + metric
      + " | "
      + " | ".join(f"test {k} (mean ± std, 95% CI)" for k in shown)
      + " | tune s | final s/run |",
      "|---" * (6 + len(shown)) + "|",
  ]
  for m in out["methods"]:
    cells = [_cell(m["test"][k]) if k in m["test"] else "-" for k in shown]
    setting = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in m["best"].items()) or "-"
    if (
        m["selected_step"] is not None
        and m["trial_steps"]
        and "train.steps" in m["final_overrides"]
    ):
      setting += f"; step {m['selected_step']}"
    budget = (
        f"{m['num_trials']} x {m['trial_steps']}" if m["trial_steps"] else f"{m['num_trials']} fits"
    )
    lines.append(
        f"| {m['method']} | {budget} | {setting} | "
        f"{m['best_valid'][metric]:.4f} | "
        + " | ".join(cells)
        + f" | {m['tune_seconds']:.0f} | {np.mean(m['final_run_seconds']):.0f} |"
    )
  lines += ["", "Spaces (every method's fixed overrides and searched values):", ""]
  for m in out["methods"]:
    lines.append(f"- {m['method']}: fixed {json.dumps(m['fixed'])}; space {json.dumps(m['space'])}")
  lines += [
      "",
      "tune s: the trials' summed wall time; final s/run: the mean wall time of one final "
      "run (each as its results.json recorded it, on the machine that ran it).",
  ] + list(extra_lines)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------
# The command line.


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  out = run(_CONFIG.value, _WORKDIR.value)
  print(f"done: see {os.path.join(_WORKDIR.value, 'report.md')}", flush=True)
  for m in out["methods"]:
    t = m["test"]
    key = next(iter(k for k in ("recall_full@20", "recall@20") if k in t))
    print(f"  {m['method']}: test {key} {t[key]['mean']:.4f} ± {t[key]['std']:.4f}", flush=True)


if __name__ == "__main__":
  from experiments import cli

  _CONFIG = cli.define_config_file(
      "config", None, "Config file with a tune section (FILE.py:VARIANT)."
  )
  _WORKDIR = flags.DEFINE_string("workdir", None, "Tune folder (resumed if present).")
  flags.mark_flag_as_required("config")
  flags.mark_flag_as_required("workdir")
  cli.run(main, extra_help=lambda: __doc__)

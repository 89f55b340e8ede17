"""Runs a list or grid of config overrides x seeds, one workdir each, in one process.

  python -m experiments.sweep --config=experiments/configs/synthetic.py --workdir=runs/sw \
      --grid=sampler.name=uniform,unigram --grid=sampler.num_negatives=16,64 --seeds=0,1,2 \
      [--config.train.steps=500 ...]

Each run goes to WORKDIR/<strategy>/seed_<s>/. Runs whose results.json exists are skipped,
so an interrupted sweep continues where it stopped (a half-trained run resumes from its
checkpoint). Loaded data are shared between runs with equal data config and seed, and runs
with equal step shapes share one compilation. Results are gathered into WORKDIR/results.csv.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import itertools
import json
import os
import re
import sys
import time
from typing import Any, Sequence

from absl import app, flags
import ml_collections
from ml_collections import config_flags

from jaxrec import config as config_lib
from jaxrec import data as jaxrec_data
from jaxrec import train
from jaxrec import workdir as workdir_io


@dataclasses.dataclass(frozen=True)
class Run:
  strategy: str                      # label shown in tables and plots
  overrides: tuple[tuple[str, Any], ...]   # (dotted key, value) pairs


def grid(axes: dict[str, Sequence[Any]]) -> list[Run]:
  """Cartesian product of {dotted key: values} -> runs labelled 'key=value,...'."""
  keys = list(axes)
  runs = []
  for values in itertools.product(*(axes[k] for k in keys)):
    ov = tuple(zip(keys, values))
    runs.append(Run(",".join(f"{k.split('.')[-1]}={v}" for k, v in ov), ov))
  return runs


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
  config = copy.deepcopy(config)
  with config.unlocked():
    for key, value in overrides:
      node = config
      *parents, leaf = key.split(".")
      for p in parents:
        if p not in node:
          raise train.ConfigError(f"unknown config key {key!r}")
        node = node[p]
      if leaf not in node:
        raise train.ConfigError(f"unknown config key {key!r}")
      node[leaf] = value
  return config


def slug(label: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", label).strip("_") or "run"


def run_sweep(base: ml_collections.ConfigDict, runs: Sequence[Run], seeds: Sequence[int],
              sweep_dir: str, *, overwrite: bool = False, verbose_runs: bool = False) -> str:
  """Trains every (run, seed) not yet done; returns the path of results.csv."""
  os.makedirs(sweep_dir, exist_ok=True)
  labels = [r.strategy for r in runs]
  if len(set(labels)) != len(labels):
    raise train.ConfigError(f"strategy labels must be unique: {labels}")
  jobs = [(r, s) for r in runs for s in seeds]
  configs = []
  for r, s in jobs:  # validate everything before training anything
    c = apply_overrides(base, r.overrides + (("seed", int(s)),))
    config_lib.validate_config(c)
    configs.append(c)
  data_cache: dict[str, Any] = {}
  t0 = time.time()
  for i, ((run, seed), config) in enumerate(zip(jobs, configs)):
    wd = run_dir(sweep_dir, run.strategy, seed)
    tag = f"[{i + 1}/{len(jobs)}] {run.strategy} seed={seed}"
    if os.path.exists(os.path.join(wd, "results.json")) and not _config_changed(wd, config):
      _progress(f"{tag}: done earlier, skipped")
      continue
    data_key = json.dumps({"data": workdir_io.config_to_dict(config.data), "seed": int(seed)},
                          sort_keys=True)
    if data_key not in data_cache:
      data_cache.clear()  # keep one data set in memory at a time
      data_cache[data_key] = jaxrec_data.load_data(config.data, int(seed))
    t_run = time.time()
    res = train.train_and_evaluate(config, wd, overwrite=overwrite,
                                   data=data_cache[data_key], verbose=verbose_runs)
    m = res["metrics"]
    shown = "  ".join(f"{k} {m[k]:.3f}" for k in ("recall@20", "cross_group@20") if k in m)
    eta = (time.time() - t0) / (i + 1) * (len(jobs) - i - 1)
    _progress(f"{tag}: {shown}  ({time.time() - t_run:.1f}s, sweep ETA {eta:.0f}s)")
  return gather(sweep_dir, runs, seeds)


def run_dir(sweep_dir: str, strategy: str, seed: int) -> str:
  return os.path.join(sweep_dir, slug(strategy), f"seed_{seed}")


def _config_changed(wd, config) -> bool:
  try:
    with open(os.path.join(wd, "config.json")) as f:
      return json.load(f) != workdir_io.config_to_dict(config)
  except (OSError, json.JSONDecodeError):
    return True


def _progress(msg):
  print(msg, flush=True)


def gather(sweep_dir: str, runs: Sequence[Run], seeds: Sequence[int]) -> str:
  """One row per finished run -> results.csv (written atomically)."""
  rows = []
  for run in runs:
    for seed in seeds:
      path = os.path.join(run_dir(sweep_dir, run.strategy, seed), "results.json")
      if not os.path.exists(path):
        continue
      with open(path) as f:
        res = json.load(f)
      row = {"strategy": run.strategy, "seed": seed,
             "overrides": json.dumps(dict(run.overrides), sort_keys=True),
             "steps_per_second": res["run"].get("steps_per_second"),
             "train_seconds": res["run"].get("train_seconds"),
             "workdir": os.path.relpath(os.path.dirname(path), sweep_dir)}
      row.update(res["metrics"])
      rows.append(row)
  out = os.path.join(sweep_dir, "results.csv")
  write_csv_atomic(out, rows)
  return out


def write_csv_atomic(path: str, rows: Sequence[dict]) -> None:
  """rows (dicts; columns in first-seen order) -> CSV at `path`, via a temp file + rename."""
  fields: list[str] = []
  for r in rows:
    fields += [k for k in r if k not in fields]
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=fields)
  w.writeheader()
  w.writerows(rows)
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w", newline="") as f:
    f.write(buf.getvalue())
  os.replace(tmp, path)


def _parse_value(text: str):
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    if text in ("True", "False"):
      return text == "True"
    return text


def parse_grid(specs: Sequence[str]) -> list[Run]:
  """['sampler.name=uniform,unigram', 'sampler.num_negatives=16,64'] -> runs."""
  axes = {}
  for spec in specs:
    if "=" not in spec:
      raise train.ConfigError(f"--grid {spec!r} must look like key=v1,v2")
    key, values = spec.split("=", 1)
    axes[key] = [_parse_value(v) for v in values.split(",")]
  return grid(axes) if axes else [Run("base", ())]


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file(
      "config", "experiments/configs/synthetic.py", "Base config file.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Sweep folder.")
  _GRID = flags.DEFINE_multi_string("grid", [], "key=v1,v2 (repeat for a grid).")
  _SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds.")

  def main(argv):
    del argv
    try:
      path = run_sweep(_CONFIG.value, parse_grid(_GRID.value),
                       [int(s) for s in _SEEDS.value], _WORKDIR.value)
    except train.ConfigError as err:
      print(f"error: {err}", file=sys.stderr)
      sys.exit(2)
    print(f"wrote {path}")

  flags.mark_flag_as_required("workdir")
  app.run(main)

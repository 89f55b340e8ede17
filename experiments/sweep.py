"""The one experiment runner: a config's sweep x seeds -> one workdir each -> summary, checks, plots.

  python -m experiments.sweep --config=experiments/configs/logq.py --workdir=runs/logq \
      [--config.sweep.seeds=0 --config.train.steps=500 ...]
  python -m experiments.sweep --config=experiments/configs/synthetic.py --workdir=runs/sw \
      --grid=sampler.name=uniform,unigram --grid=sampler.num_negatives=16,64 --seeds=0,1,2

An ablation config (experiments/configs/*.py; configs/common.py describes its `sweep`
section) declares its strategies as labelled overrides, its seeds and the thresholds its
predictions are checked against. A plain training config is swept over --grid (a
cartesian product) and --seeds instead. Each run goes to WORKDIR/<strategy>/seed_<s>/.
Runs whose results.json exists (for the same config) are skipped, so an interrupted sweep
continues where it stopped (a half-trained run resumes from its checkpoint). Loaded data
are shared between runs with equal data config and seed, and runs with equal step shapes
share one compilation. Then: results.csv (every finished run of the declared sweep),
summary.md (mean ± std over seeds, the checks as PASS/FAIL/NOT CHECKED lines, the
ablation's own sections, the verdicts of its claims (`sweep.claims`: paired differences
over seeds with 95% intervals) and validation quality against training time with
quality_vs_time.png) and the ablation's plots, made by its analysis function
(`sweep.analysis`, looked up by name).
"""

from __future__ import annotations

import collections
import copy
import csv
import dataclasses
import importlib
import io
import itertools
import json
import os
import re
import time
from typing import Any, Callable, Sequence

from absl import app, flags, logging
import ml_collections

from experiments import report as report_lib
from experiments.configs import common

# The jaxrec entry points of every experiment, imported here and nowhere else in experiments/.
from jaxrec.config import ConfigError, data_seed, validate_config
from jaxrec.data import load_data
from jaxrec.train import train_and_evaluate
from jaxrec.workdir import config_to_dict, finished
from jaxrec import xla_flags

__all__ = [
    "ConfigError",
    "load_data",
    "train_and_evaluate",
    "Run",
    "Sweep",
    "run",
    "run_sweep",
    "apply_overrides",
]


@dataclasses.dataclass(frozen=True)
class Run:
  strategy: str  # label shown in tables and plots
  overrides: tuple[tuple[str, Any], ...]  # (dotted key, value) pairs


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
          raise ConfigError(f"unknown config key {key!r}")
        node = node[p]
      if leaf not in node:
        raise ConfigError(f"unknown config key {key!r}")
      node[leaf] = value
  return config


def slug(label: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", label).strip("_") or "run"


def run_sweep(
    base: ml_collections.ConfigDict,
    runs: Sequence[Run],
    seeds: Sequence[int],
    sweep_dir: str,
    *,
    overwrite: bool = False,
    verbose_runs: bool = False,
    test: bool = True,
) -> str:
  """Trains every (run, seed) not yet done; returns the path of results.csv. `test=False`
  (tuning trials): no run evaluates its test pairs (`train_and_evaluate`)."""
  jobs = [(r, s) for r in runs for s in seeds]
  configs = run_configs(base, runs, seeds)  # validate everything before training anything
  os.makedirs(sweep_dir, exist_ok=True)
  data_cache: dict[str, Any] = {}
  t0 = time.time()
  for i, ((run, seed), config) in enumerate(zip(jobs, configs)):
    wd = run_dir(sweep_dir, run.strategy, seed)
    tag = f"[{i + 1}/{len(jobs)}] {run.strategy} seed={seed}"
    if _done(wd, config, test):
      _progress(f"{tag}: done earlier, skipped")
      continue
    dseed = data_seed(config)
    data_key = json.dumps({"data": config_to_dict(config.data), "seed": dseed}, sort_keys=True)
    if data_key not in data_cache:
      data_cache.clear()  # keep one data set in memory at a time
      data_cache[data_key] = load_data(config.data, dseed)
    t_run = time.time()
    res = train_and_evaluate(
        config, wd, overwrite=overwrite, data=data_cache[data_key], verbose=verbose_runs, test=test
    )
    m = {**res["metrics"], **{f"valid/{k}": v for k, v in res.get("valid", {}).items()}}
    names = ("recall@20", "cross_group@20")
    if config.eval.select:  # a selected run: its validation figure and step
      names = (config.eval.select,)
      m["step"] = res["run"].get("selected_step")
      names += ("step",)
    shown = "  ".join(f"{k} {m[k]:.4g}" for k in names if k in m)
    eta = (time.time() - t0) / (i + 1) * (len(jobs) - i - 1)
    _progress(f"{tag}: {shown}  ({time.time() - t_run:.1f}s, sweep ETA {eta:.0f}s)")
  return gather(sweep_dir, runs, seeds)


def run_configs(
    base: ml_collections.ConfigDict, runs: Sequence[Run], seeds: Sequence[int]
) -> list[ml_collections.ConfigDict]:
  """The validated config of every (run, seed), runs outer; raises ConfigError."""
  labels = [r.strategy for r in runs]
  if len(set(labels)) != len(labels):
    raise ConfigError(f"strategy labels must be unique: {labels}")
  configs = []
  for r in runs:
    for s in seeds:
      c = apply_overrides(base, r.overrides + (("seed", int(s)),))
      validate_config(c)
      configs.append(c)
  return configs


def run_dir(sweep_dir: str, strategy: str, seed: int) -> str:
  return os.path.join(sweep_dir, slug(strategy), f"seed_{seed}")


def _done(wd, config, test: bool) -> bool:
  """A finished run of this config is in `wd` (with its test metrics when `test`)."""
  return finished(wd, config_to_dict(config), test=test) is not None


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
      row = {
          "strategy": run.strategy,
          "seed": seed,
          "overrides": json.dumps(dict(run.overrides), sort_keys=True),
          "steps_per_second": res["run"].get("steps_per_second"),
          "compile_seconds": res["run"].get("compile_seconds"),
          "train_seconds": res["run"].get("train_seconds"),
          "workdir": os.path.relpath(os.path.dirname(path), sweep_dir),
      }
      row.update(res["metrics"])
      if res.get("valid"):
        row["selected_step"] = res["run"].get("selected_step")
        row.update({f"valid/{k}": v for k, v in res["valid"].items()})
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
      raise ConfigError(f"--grid {spec!r} must look like key=v1,v2")
    key, values = spec.split("=", 1)
    axes[key] = [_parse_value(v) for v in values.split(",")]
  return grid(axes) if axes else [Run("base", ())]


# --------------------------------------------------------------------------------------
# The runner.


@dataclasses.dataclass
class Sweep:
  """A swept ablation as its analysis function sees it."""

  config: ml_collections.ConfigDict  # the config every run starts from (no `sweep`)
  spec: ml_collections.ConfigDict  # the `sweep` section
  workdir: str
  seeds: list[int]
  runs: list[Run]  # every declared run, trained now or not
  rows: list[dict] = dataclasses.field(default_factory=list)  # results.csv
  summary: dict = dataclasses.field(default_factory=dict)  # report.summarize(rows)
  log: Callable[[str], None] = print
  extras: dict = dataclasses.field(default_factory=dict)  # what an analysis measured

  def run_dir(self, strategy: str, seed: int) -> str:
    return run_dir(self.workdir, strategy, seed)


def split(config: ml_collections.ConfigDict):
  """An ablation config -> (the training config without `sweep`, the `sweep` section)."""
  base = copy.deepcopy(config)
  with base.unlocked():
    spec = base.sweep
    del base["sweep"]
  return base, spec


def declared_runs(config: ml_collections.ConfigDict) -> list[Run]:
  """sweep.runs: ((label, {key: value}), ...), or the name of a function of the config
  returning them (a sweep built from the config's own keys, e.g. sweep.ks)."""
  runs = config.sweep.runs
  if isinstance(runs, str):
    runs = lookup(runs)(config)
  return [Run(label, tuple(dict(over).items())) for label, over in runs]


def select(runs: Sequence[Run], only: str) -> list[Run]:
  """The runs named in `only` (labels joined by commas; a label may hold commas itself;
  empty: all), in the sweep's order."""
  known = [r.strategy for r in runs]
  parts, names = only.split(",") if only else [], []
  while parts:  # the longest prefix of the parts that joins into a label
    n = next((n for n in range(len(parts), 0, -1) if ",".join(parts[:n]) in known), 1)
    names.append(",".join(parts[:n]))
    parts = parts[n:]
  unknown = [s for s in names if s not in known]
  if unknown:
    raise ValueError(f"unknown {', '.join(unknown)}; choose from {', '.join(known)}")
  return [r for r in runs if r.strategy in names] if names else list(runs)


def lookup(name: str) -> Callable:
  """'module.function' under experiments/ -> the function (analyses are found by name)."""
  module, _, fn = name.rpartition(".")
  try:
    return getattr(importlib.import_module(f"experiments.{module}"), fn)
  except (ImportError, AttributeError, ValueError) as err:
    raise ConfigError(f"no function {name!r} under experiments/: {err}") from None


def claims(config: ml_collections.ConfigDict) -> list[report_lib.Claim]:
  """sweep.claims: dicts of report.Claim's fields, or the name of a function of the
  config returning them (thresholds computed from the config's own keys)."""
  declared = config.sweep.claims
  if isinstance(declared, str):
    declared = lookup(declared)(config)
  try:
    return report_lib.parse_claims(declared)
  except ValueError as err:
    raise ConfigError(str(err)) from None


def check(config: ml_collections.ConfigDict) -> list[Run]:
  """Validates an ablation config without training: its functions exist, sweep.only names
  runs, its claims are well formed and name declared runs (unless sweep.add_rows adds
  rows), the data are there, and every (run, seed) config is valid. Returns the runs to
  train."""
  base, spec = split(config)
  lookup(spec.analysis)
  if spec.add_rows:
    lookup(spec.add_rows)
  runs = declared_runs(config)
  labels = {r.strategy for r in runs}
  for c in claims(config):
    unknown = [s for s in (c.a, c.b) if s and s not in labels]
    if unknown and not spec.add_rows:
      raise ConfigError(f"sweep.claims: {c.text!r} names no run {', '.join(unknown)}")
  try:
    chosen = select(runs, spec.only)
  except ValueError as err:
    raise ConfigError(f"sweep.only: {err}") from None
  if runs and base.data.name != "synthetic":
    for path in (base.data.path, *(os.path.join(base.data.path, f) for f in spec.requires)):
      missing = common.missing_data(path)
      if missing:
        raise ConfigError(missing)
  run_configs(base, chosen, [int(s) for s in spec.seeds])
  return chosen


def run(config: ml_collections.ConfigDict, workdir: str, *, log=print) -> Sweep:
  """Trains the config's sweep (resumable), gathers results.csv, runs its analysis and
  writes summary.md. Returns the Sweep (rows, summary, extras) as the analysis left it."""
  base, spec = split(config)
  if spec.fast_compile:  # before JAX compiles anything (jaxrec/xla_flags.py)
    xla_flags.add_defaults(xla_flags.FAST_COMPILE)
  chosen = check(config)
  analysis = lookup(spec.analysis)
  sw = Sweep(base, spec, workdir, [int(s) for s in spec.seeds], declared_runs(config), log=log)
  if not sw.runs:  # a measurement of its own (gradient_bias): the analysis does it all
    analysis(sw)
    return sw
  clock = Clock()
  log(f"{spec.name}: {len(chosen)} strategies x {len(sw.seeds)} seeds -> {workdir}")
  run_sweep(base, chosen, sw.seeds, workdir)
  path = gather(workdir, sw.runs, sw.seeds)  # every finished run, trained now or before
  sw.rows = report_lib.read_results(workdir)
  if spec.add_rows:
    write_csv_atomic(path, lookup(spec.add_rows)(sw))
    sw.rows = report_lib.read_results(workdir)
  sw.summary = report_lib.summarize(sw.rows)
  notes, sections = analysis(sw)
  not_run = [r.strategy for r in sw.runs if r.strategy not in sw.summary]
  if not_run:  # e.g. quick leaves some out: say so, not only what it judged
    notes.append(
        f"NOT RUN (not judged, not in the table): {', '.join(not_run)}; the default "
        f"run trains all {len(sw.runs)}, --config.sweep.only any of them."
    )
  notes += list(spec.notes)
  summary_md = report_lib.write_summary(
      workdir, sw.summary, title=spec.title, metrics=spec.metrics, notes=notes
  )
  declared = claims(config)
  sections = list(sections) + report_lib.claims_section(sw.rows, declared)
  sections += report_lib.time_section(workdir, sw.rows, fractions=spec.time_budgets)
  facts = clock.facts()
  append_lines(summary_md, sections + (facts_lines(facts, sw.seeds, base) if spec.facts else []))
  for n in notes:
    log(n)
  if declared:
    counts = collections.Counter(j["verdict"] for j in report_lib.judge(sw.rows, declared))
    log("claims: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + " (summary.md, Claims)")
  log(
      f"done: wall {facts['wall_seconds']:.0f}s, CPU {facts['cpu_seconds']:.0f}s; see "
      f"{summary_md} and the PNGs beside it"
  )
  return sw


class Clock:
  """Wall and process CPU time (all threads) since construction."""

  def __init__(self):
    self.wall, self.cpu = time.time(), time.process_time()

  def facts(self) -> dict:
    return {
        "wall_seconds": time.time() - self.wall,
        "cpu_seconds": time.process_time() - self.cpu,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
    }


def facts_lines(facts, seeds, config) -> list[str]:
  load = facts["load_average"]
  return [
      "",
      "## Run",
      "",
      f"- seeds: {', '.join(str(s) for s in seeds)}; data: `{config.data.path}`; "
      f"steps: {config.train.steps}",
      f"- wall {facts['wall_seconds']:.0f} s, process CPU {facts['cpu_seconds']:.0f} s "
      f"(all threads) on {facts['cpu_count']} cores"
      + (f", 1-min load average {load:.1f} at the end" if load is not None else "")
      + " (runs found finished in the workdir are not retrained and not timed)",
  ]


def append_lines(path: str, lines: Sequence[str]) -> None:
  if lines:
    with open(path, "a") as f:
      f.write("\n".join(lines) + "\n")


def with_grid(config, grid_specs: Sequence[str], seeds) -> ml_collections.ConfigDict:
  """A plain training config + --grid/--seeds -> an ablation config with that sweep."""
  runs = [(r.strategy, dict(r.overrides)) for r in parse_grid(grid_specs)]
  config = copy.deepcopy(config)
  with config.unlocked():
    config.sweep = common.sweep(
        "sweep",
        runs,
        title="Sweep summary",
        seeds=[int(s) for s in seeds or [0]],
        metrics=report_lib.DEFAULT_METRICS,
        analysis="report.standard_plots",
        facts=False,
    )
  return config


# --------------------------------------------------------------------------------------
# The command line (this module's and experiments/folding.py's).


def define_flags(config: str | None, workdir: str | None) -> None:
  from experiments import cli

  global _CONFIG, _WORKDIR, _GRID, _SEEDS
  _CONFIG = cli.define_config_file(
      "config",
      config,
      "Config file with get_config(arg) (FILE.py:VARIANT); override any " "key with --config.x=y.",
  )
  _WORKDIR = flags.DEFINE_string("workdir", workdir, "Sweep folder.")
  _GRID = flags.DEFINE_multi_string(
      "grid", [], "key=v1,v2 (repeat for a grid); only for a config without a sweep section."
  )
  _SEEDS = flags.DEFINE_list(
      "seeds",
      None,
      "Seeds (default 0); only for a config without a sweep section (an "
      "ablation's: --config.sweep.seeds).",
  )
  if workdir is None:
    flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every file at INFO
  config = _CONFIG.value
  if "sweep" not in config:
    config = with_grid(config, _GRID.value, _SEEDS.value)
  elif _GRID.value or _SEEDS.value:
    raise ConfigError(
        "--grid and --seeds are for a config without a sweep section; an "
        "ablation's seeds and runs: --config.sweep.seeds, --config.sweep.only"
    )
  run(config, _WORKDIR.value)


if __name__ == "__main__":
  from experiments import cli

  define_flags("experiments/configs/synthetic.py", None)
  cli.run(main)

"""What the experiment configs share: the data path, the config-string parser, the sweep section.

An ablation config is a training config (what `experiments.main` takes) plus a `sweep`
section that `experiments.sweep` reads and removes before training:

  sweep.name, sweep.title   the ablation's name (progress lines) and summary.md heading
  sweep.runs                the strategies: ((label, {dotted key: value}), ...), each
                            applied on top of the rest of the config; or the name
                            ("configs.module.function") of a function of the config that
                            returns them, for a sweep built from the config's own keys
  sweep.seeds               every run is trained once per seed (one workdir each)
  sweep.only                labels to train now ("a,b"; default all); every finished run
                            of the workdir is still reported
  sweep.requires            files under data.path the analysis reads (checked first)
  sweep.metrics             summary.md's columns (the first sorts the rows)
  sweep.analysis            "module.function" under experiments/: the ablation's own
                            checks, tables and plots (`experiments.sweep.Sweep` -> notes,
                            sections)
  sweep.add_rows            "" or "module.function": extra columns/rows per run, written
                            into results.csv before the summary
  sweep.predictions         the thresholds the analysis checks (PASS/FAIL lines)
  sweep.claims              the claims judged by the paired difference of two arms over
                            seeds with a 95% t-interval: dicts of experiments.report.Claim's
                            fields (text, metric, a, op, threshold, b, scale), or the name
                            ("configs.module.function") of a function of the config
                            returning them; summary.md's "Claims" gives each its verdict
  sweep.time_budgets        fractions of the slowest strategy's training time at which
                            summary.md's "Quality against training time" table compares
                            the strategies' validation recall@20 (each run's metrics.jsonl;
                            validation during training needs data.valid_fraction and
                            eval.every, see `time_curve`)
  sweep.notes               lines added to the checks as they are (e.g. what `quick` means)
  sweep.fast_compile        compile with jaxrec/xla_flags.FAST_COMPILE (smoke runs)
  sweep.facts               append wall/CPU time and the seeds to summary.md

Variants are chosen by the config string, as in big_vision: `--config=FILE.py:quick` or
`FILE.py:quick,movielens` (`parse_arg`: a bare word is True, `key=value` takes the
default's type).
"""

from __future__ import annotations

import os

import ml_collections

from experiments.configs import synthetic

# The repository root: data paths are resolved against it, not against the current folder.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.path.join(REPO, os.pardir, "shared", "data")


def ml_latest_small() -> str:
  """MovieLens ml-latest-small beside the repository (REPO/../shared/data), as a path
  relative to the current folder: run from the repository root this is
  ../shared/data/ml-latest-small, the path every recorded run's config.json holds."""
  return os.path.relpath(os.path.join(DATA_DIR, "ml-latest-small"))


def gowalla() -> str:
  """Gowalla's LightGCN split beside the repository (REPO/../shared/data/gowalla), as a
  path relative to the current folder (like `ml_latest_small`)."""
  return os.path.relpath(os.path.join(DATA_DIR, "gowalla"))


def missing_data(path: str) -> str | None:
  """None if `path` exists, else the one-line error that says how to get the data."""
  if os.path.exists(path):
    return None
  return (
      f"{path!r} does not exist. This experiment needs MovieLens ml-latest-small "
      "(ratings.csv, movies.csv); get it with `python -m jaxrec.data.download "
      "--name=ml-latest-small --dest=DIR` and pass --config.data.path=DIR/ml-latest-small"
  )


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'quick,steps=500' -> {quick: True, steps: 500, ...defaults}. Each key must be one of
  `defaults`; a value takes its default's type."""
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, eq, text = part.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config variant {key!r}; choose from {', '.join(defaults)}")
    default = defaults[key]
    if not eq:
      out[key] = True
    elif isinstance(default, bool):
      out[key] = text.lower() in ("1", "true", "yes")
    else:
      out[key] = type(default)(text)
  return ml_collections.ConfigDict(out)


def sweep(
    name: str, runs, *, title: str, seeds=(0, 1, 2), metrics=("recall@20",), analysis: str, **extra
) -> ml_collections.ConfigDict:
  """The `sweep` section (see the module docstring); `extra` sets any other of its keys."""
  s = ml_collections.ConfigDict()
  s.name, s.title = name, title
  s.runs = runs if isinstance(runs, str) else tuple((lab, dict(o)) for lab, o in runs)
  s.seeds, s.only, s.metrics = tuple(seeds), "", tuple(metrics)
  s.analysis, s.add_rows, s.requires = analysis, "", ()
  s.predictions = ml_collections.ConfigDict()
  s.notes, s.fast_compile, s.facts = (), False, True
  # a tuple of dicts or a function's name: the field takes the type it is given first
  s.claims, s.time_budgets = extra.pop("claims", ()), (0.25, 0.5, 1.0)
  s.update(extra)
  return s


def tune(
    methods,
    *,
    title: str,
    select: str = "valid/recall@20",
    trials: int = 8,
    mode: str = "random",
    valid_fraction: float = 0.1,
    seeds=(0, 1, 2),
    refit: bool = True,
    claims=(),
    analysis: str = "",
) -> ml_collections.ConfigDict:
  """The `tune` section that `experiments.tune` reads (its docstring describes the keys):
  methods = ((label, {fixed key: value}, {searched key: (values, ...)}), ...); claims:
  experiments/report.py's Claim dicts over the method labels, judged on the final runs."""
  t = ml_collections.ConfigDict()
  t.title, t.select, t.mode, t.trials = title, select, mode, int(trials)
  t.methods = tuple(
      (label, dict(fixed), {k: tuple(v) for k, v in space.items()})
      for label, fixed, space in methods
  )
  t.valid_fraction, t.data_seed, t.search_seed = float(valid_fraction), 0, 0
  t.seeds, t.refit, t.only = tuple(seeds), bool(refit), ""
  t.claims = tuple(dict(c) for c in claims)
  t.analysis = analysis
  return t


def claim(text: str, metric: str, a: str, op: str, threshold=0.0, b: str = "", scale=1.0) -> dict:
  """One declared claim (experiments/report.py's Claim): the per-seed statistic
  metric(a) - scale x metric(b) (metric(a) alone without b) compared by `op` with
  `threshold`."""
  return dict(text=text, metric=metric, a=a, op=op, threshold=threshold, b=b, scale=scale)


def protocol(
    c, methods, *, title: str, select: str, claims, steps: int, analysis: str = ""
) -> None:
  """An ablation's `tune` variant (issue 22's protocol): one split (data seed 0; the
  seeds vary the training), a validation evaluation every 500 steps with patience 3 and a
  cap of `steps`, and `tune` with 3 grid trials for every method and the claims
  declared before the run."""
  c.data.seed = 0
  c.train.steps = int(steps)
  c.eval.every, c.eval.patience = 500, 3
  c.tune = tune(
      methods, title=title, select=select, trials=3, mode="grid", claims=claims, analysis=analysis
  )


def time_curve(
    c: ml_collections.ConfigDict, evaluations: int, *, valid_fraction=0.1, num_users=500
) -> None:
  """Validation quality against training time: hold out `valid_fraction` of each user's
  train rows (if none is held out yet) and evaluate on `num_users` of them (eval.num_users;
  the final test evaluation ranks every test user) every train.steps // evaluations steps,
  so that each run's metrics.jsonl traces validation recall against train_seconds."""
  if not float(c.data.valid_fraction):
    c.data.valid_fraction = valid_fraction
  c.eval.every = max(1, int(c.train.steps) // evaluations)
  c.eval.num_users = num_users


def quick_steps(c: ml_collections.ConfigDict, steps: int) -> None:
  """A smoke run's cap: at most `steps` training steps, a log line every <= 500 steps."""
  c.train.steps = min(int(c.train.steps), steps)
  c.train.log_every = min(int(c.train.log_every), 500)


def no_checkpoints(c: ml_collections.ConfigDict) -> None:
  """Both checkpoint schedules off (by steps and by time): no save, not even the final one."""
  c.train.checkpoint_every, c.train.checkpoint_seconds = 0, 0.0


def movielens_base() -> ml_collections.ConfigDict:
  """The MovieLens base of the ablations, pinned here so that retuning configs/movielens.py
  does not silently change them: the synthetic config's defaults with ml-latest-small, a
  64-d softmax DNN (one ReLU layer of 256, bags of 64), dot-product scores at temperature 1,
  full softmax, row-wise Adagrad lr 0.1, 3000 steps of batch 256."""
  c = synthetic.get_config()
  c.data.update(name="movielens", path=ml_latest_small())
  c.model.update(dim=64, hidden=(256,), max_bag=64)
  c.loss.name = "full"
  c.train.update(
      steps=3000, batch_size=256, learning_rate=0.1, log_every=500, checkpoint_every=1000
  )
  return c


def language_split_movielens() -> ml_collections.ConfigDict:
  """The folding ablation's model on ml-latest-small split into 4 "languages" (see
  configs/folding.py's `movielens` variant): the synthetic config with Adam lr 0.003,
  10,000 steps, K = 256 negatives and a pool of 1,024."""
  c = synthetic.get_config()
  c.data.update(name="movielens", path=ml_latest_small(), language_split=4)
  c.train.update(optimizer="adam", learning_rate=0.003, steps=10000, log_every=2500)
  no_checkpoints(c)
  c.sampler.update(num_negatives=256, pool_size=1024)
  return c

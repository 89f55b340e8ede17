"""Helpers shared by the paper-ablation scripts (timing facts, summary lines, data check)."""

from __future__ import annotations

import os
import sys
import time


class Clock:
  """Wall and process CPU time (all threads) since construction."""

  def __init__(self):
    self.wall, self.cpu = time.time(), time.process_time()

  def facts(self) -> dict:
    return {"wall_seconds": time.time() - self.wall,
            "cpu_seconds": time.process_time() - self.cpu,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "cpu_count": os.cpu_count()}


def facts_lines(facts, seeds, config, *, show_steps: bool = True) -> list[str]:
  load = facts["load_average"]
  data = f"- seeds: {', '.join(str(s) for s in seeds)}; data: `{config.data.path}`"
  if show_steps:
    data += f"; steps: {config.train.steps}"
  return ["", "## Run", "", data,
          f"- wall {facts['wall_seconds']:.0f} s, process CPU {facts['cpu_seconds']:.0f} s "
          f"(all threads) on {facts['cpu_count']} cores"
          + (f", 1-min load average {load:.1f} at the end" if load is not None else "")
          + " (runs found finished in the workdir are not retrained and not timed)"]


def append_lines(path, lines):
  with open(path, "a") as f:
    f.write("\n".join(lines) + "\n")


def check_data_path(path: str, what: str = "ml-latest-small") -> None:
  """Exit 2 with a clear message when the MovieLens folder is missing."""
  if not os.path.exists(path):
    print(f"error: --data_path={path!r} does not exist. This ablation needs MovieLens "
          f"{what}; get it with `python -m jaxrec.data.download --name=ml-latest-small "
          "--dest=DIR` and pass --data_path=DIR/ml-latest-small", file=sys.stderr)
    sys.exit(2)


def movielens_base(data_path: str):
  """The MovieLens base config of the ablations, pinned here so that retuning
  `experiments/configs/movielens.py` does not silently change them: the synthetic config's
  defaults with MovieLens data, a 64-d softmax DNN (one ReLU layer of 256, bags of 64),
  dot-product scores at temperature 1, full softmax, row-wise Adagrad lr 0.1, 3000 steps."""
  from experiments.configs import synthetic
  c = synthetic.get_config()
  c.data.name = "movielens"
  c.data.path = data_path
  c.model.dim = 64
  c.model.hidden = (256,)
  c.model.max_bag = 64
  c.loss.name = "full"
  c.train.steps = 3000
  c.train.batch_size = 256
  c.train.learning_rate = 0.1
  c.train.log_every = 500
  c.train.checkpoint_every = 1000
  return c


def prepare(config, data_path: str, seeds, quick: bool, *, quick_steps: int,
            what: str = "ml-latest-small"):
  """The common start of an ablation's main: check the data path (exit 2), point the config
  at it, and for --quick cap the steps (and log interval); seeds default to 0,1,2 (--quick:
  0). Returns (config, seeds as ints)."""
  check_data_path(data_path, what)
  with config.unlocked():
    config.data.path = data_path
    if quick:
      config.train.steps = min(int(config.train.steps), quick_steps)
      config.train.log_every = min(int(config.train.log_every), 500)
  return config, [int(s) for s in (seeds or (["0"] if quick else ["0", "1", "2"]))]


def exit_on_config_error(fn, *args, **kwargs):
  """Runs fn; a ConfigError becomes one 'error: ...' line on stderr and exit status 2."""
  from jaxrec import train
  try:
    return fn(*args, **kwargs)
  except train.ConfigError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def run_cli(get_config, main, *, workdir: str, default_data: str, seeds_help: str,
            quick_help: str, data_help: str = "MovieLens folder (ratings.csv).",
            define_extra=None):
  """The command line every ablation script shares, then `app.run`:
  --config (the script's get_config(), overridable with --config.x=y), --workdir,
  --data_path, --seeds, --quick, and the script's own flags: define_extra(flags) returns
  {keyword: flag holder}, passed to main(config, workdir, data_path, seeds, quick, **...)."""
  from absl import app, flags
  from ml_collections import config_flags

  config = config_flags.DEFINE_config_dict("config", get_config(),
                                           "Base config; override with --config.x=y.")
  wd = flags.DEFINE_string("workdir", workdir, "Output folder.")
  data = flags.DEFINE_string("data_path", default_data, data_help)
  seeds = flags.DEFINE_list("seeds", None, seeds_help)
  quick = flags.DEFINE_bool("quick", False, quick_help)
  extra = define_extra(flags) if define_extra else {}

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    main(config.value, wd.value, data.value, seeds.value, quick.value,
         **{k: v.value for k, v in extra.items()})

  app.run(_main)

"""The one launcher: train and evaluate one config.

  python -m experiments.main --config=experiments/configs/synthetic.py --workdir=runs/x \
      [--config.loss.name=positive_only ...] [--overwrite]

Writes config.json, metrics.jsonl, results.json and checkpoints to --workdir; rerunning
the same command resumes from the last checkpoint. No other module reads FLAGS.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.sweep import ConfigError, train_and_evaluate
from jaxrec import sharding

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/synthetic.py", "Config file with get_config().", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (created; resumed if present).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a run of a different config found in --workdir."
)


def main(argv):
  sharding.maybe_initialize_distributed()  # multi-host launch: before any device use
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
  except ConfigError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)

"""The one launcher: train and evaluate one config.

  python -m experiments.main --config=experiments/configs/synthetic.py --workdir=runs/x \
      [--config.loss.name=positive_only ...] [--overwrite]

Writes config.json, metrics.jsonl, results.json and checkpoints to --workdir; rerunning
the same command resumes from the last checkpoint. No other module reads FLAGS.
"""

from absl import app, flags

from experiments import cli
from experiments.sweep import train_and_evaluate
from jaxrec import sharding

_CONFIG = cli.define_config_file(
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
  train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)


def config_help() -> str:
  """The default config's sections and keys, and the registered names (for --help)."""
  from experiments.configs import synthetic
  from jaxrec import losses, models, samplers

  c = synthetic.get_config()
  lines = ["", "Config keys (override any with --config.SECTION.KEY=VALUE; defaults from "]
  lines[-1] += "experiments/configs/synthetic.py):"
  for name in sorted(c.keys()):
    v = c[name]
    if hasattr(v, "keys"):
      lines.append(f"  {name}: {', '.join(sorted(v.keys()))}")
    else:
      lines.append(f"  {name}")
  lines += ["", models.help_text(), "", losses.help_text(), "", samplers.help_text()]
  return "\n".join(lines)


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  cli.run(main, extra_help=config_help)

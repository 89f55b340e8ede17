"""The tiny synthetic-world config that several test modules train (seconds a run)."""

from experiments import sweep
from experiments.configs import common, synthetic


def config(**over):
  """300 users, 200 items, a DNN of D 8, 60 steps of 32; `over`: dotted key -> value."""
  c = synthetic.get_config()
  c.data.num_users = 300
  c.data.num_items = 200
  c.data.interactions_per_user = 10
  c.model.dim = 8
  c.model.hidden = (16,)
  c.train.steps = 60
  c.train.batch_size = 32
  c.train.log_every = 20
  common.no_checkpoints(c)
  c.sampler.num_negatives = 8
  return sweep.apply_overrides(c, tuple(over.items()))

"""Training-loop overhead: steps/s of `train_and_evaluate` vs the bare jitted step.

  python -m benchmarks.loop_throughput [--steps=3000] [--eval_users=64] [--config.x=y ...]

Both run the same compiled step on the same device-resident data (default: the synthetic
config, softmax DNN, uniform sampled softmax). The bare loop calls the step `steps` times
and blocks once; the full loop is `train.train_and_evaluate` (progress lines, host sync at
each log step, metrics.jsonl, checkpoints), whose `run.steps_per_second` counts training
time only: the steps after the first, including the in-loop checkpoint saves (every
train.checkpoint_every steps; the final save and the evaluation come after it). The final
evaluation ranks only `--eval_users` test users (it is not timed here; at 1M items ranking
every test user would dominate the run). Targets: full / bare >= 0.80 without checkpoints
(issue 4); >= 0.90 with checkpoints at the config's interval (issue 23). Printed in one
run, interleaved, so machine noise hits all three.

Issue 23's measurement (MF, 1M items):
  python -m benchmarks.loop_throughput --config.data.num_users=2000 \
    --config.data.num_items=1000000 --config.model.name=mf --config.model.dim=64 \
    --config.train.batch_size=1024 --config.sampler.num_negatives=1024 --steps=1100 --repeats=2
"""

import copy
import json
import tempfile
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from jaxrec import config as config_lib
from jaxrec import data as jaxrec_data
from jaxrec import step as step_lib
from jaxrec import train

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/synthetic.py", "Config.")
_STEPS = flags.DEFINE_integer("steps", 3000, "Steps per measurement.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved repeats; the best of each is kept.")
_EVAL_USERS = flags.DEFINE_integer(
    "eval_users", 64, "Test users the (untimed) final evaluation ranks (0: all)."
)


def bare_steps_per_second(config, data, steps) -> float:
  spec = config_lib.StepSpec.from_config(config)
  tr = data[0]  # load_data's (train, valid, test)
  ddata = step_lib.device_data(tr, spec)
  state = step_lib.init_state(spec, config, tr.num_users, tr.num_items, int(config.seed))
  state, metrics = step_lib.jitted_train_step(spec, state, ddata)  # compile
  metrics["loss"].block_until_ready()
  t = time.perf_counter()
  for _ in range(steps):
    state, metrics = step_lib.jitted_train_step(spec, state, ddata)
  metrics["loss"].block_until_ready()
  return steps / (time.perf_counter() - t)


def loop_steps_per_second(config, data, steps, checkpoint_every) -> float:
  c = copy.deepcopy(config)
  with c.unlocked():
    c.train.steps = steps
    c.train.checkpoint_every = checkpoint_every
  with tempfile.TemporaryDirectory() as wd:
    res = train.train_and_evaluate(c, wd, data=data, verbose=False)
  return res["run"]["steps_per_second"]


def few_test_users(data, num_users: int, seed: int):
  """(train, valid, test) with test cut to the pairs of `num_users` seeded test users."""
  train_, valid, test = data
  users = np.unique(test.user_ids)
  if not num_users or num_users >= users.size:
    return data
  keep = np.random.default_rng(seed).choice(users, num_users, replace=False)
  return train_, valid, test.subset(np.isin(test.user_ids, keep))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  steps = _STEPS.value
  every = int(config.train.checkpoint_every)
  data = jaxrec_data.load_data(config.data, int(config.seed))
  data = few_test_users(tuple(data), _EVAL_USERS.value, int(config.seed))
  # warm the loop's compilation once (the bare loop compiles inside its own call)
  loop_steps_per_second(config, data, 10, 0)
  bare, loop, loop_ck = [], [], []
  for _ in range(_REPEATS.value):
    bare.append(bare_steps_per_second(config, data, steps))
    loop.append(loop_steps_per_second(config, data, steps, 0))
    loop_ck.append(loop_steps_per_second(config, data, steps, every))
  b, l, lc = max(bare), max(loop), max(loop_ck)
  saves = (steps - 1) // every if every else 0  # in-loop saves inside the timed steps
  out = {
      "steps": steps,
      "log_every": int(config.train.log_every),
      "num_items": int(data[0].num_items),
      "bare_steps_per_second": b,
      "loop_steps_per_second": l,
      "loop_with_checkpoints_steps_per_second": lc,
      "checkpoint_every": every,
      "timed_checkpoint_saves": saves,
      "ratio_loop_over_bare": l / b,
      "ratio_loop_with_checkpoints_over_bare": lc / b,
  }
  print(f"bare jitted step        : {b:8.1f} steps/s")
  print(f"full loop (no ckpt)     : {l:8.1f} steps/s   ratio {l / b:.3f}  (target >= 0.80)")
  print(
      f"full loop (ckpt / {every}) : {lc:8.1f} steps/s   ratio {lc / b:.3f}  (target >= 0.90;"
      f" {saves} saves timed)"
  )
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  app.run(main)

"""Training-loop overhead: steps/s of `train_and_evaluate` vs the bare jitted step.

  python -m benchmarks.loop_throughput [--steps=3000] [--eval_users=64] [--config.x=y ...]

Both run the same compiled step on the same device-resident data (default: the synthetic
config, softmax DNN, uniform sampled softmax). The bare loop calls the step `steps` times
and blocks once; the full loop is `train.train_and_evaluate` (progress lines, host sync at
each log step, metrics.jsonl, checkpoints), whose `run.steps_per_second` counts training
time only: the steps after the first, including the scheduled checkpoint saves
(`run.checkpoint_saves`, at the config's train.checkpoint_every / checkpoint_seconds; the
final save and the evaluation come after it). The loop runs twice: without checkpoints and
at the config's schedule. The final evaluation ranks only `--eval_users` test users (it is
not timed here; at 1M items ranking every test user would dominate the run). Targets: full
/ bare >= 0.80 without checkpoints (issue 4); >= 0.90 with checkpoints at the default
schedule (issue 23: a steady state, so `--steps` should span several saves). Printed in
one run, interleaved, so machine noise hits all three.

Issue 23's measurement (MF, 1M items; at ~190 steps/s, 240k steps span 4 saves at the
default of one every 300 s: about an hour for one repeat):
  python -m benchmarks.loop_throughput --config.data.num_users=2000 \
    --config.data.num_items=1000000 --config.model.name=mf --config.model.dim=64 \
    --config.train.batch_size=1024 --config.sampler.num_negatives=1024 --steps=240000 \
    --repeats=1
"""

import copy
import json
import tempfile
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.configs import common
from jaxrec import config as config_lib
from jaxrec import data as jaxrec_data
from jaxrec import step as step_lib
from jaxrec import train

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/synthetic.py", "Config.")
_STEPS = flags.DEFINE_integer("steps", 3000, "Steps per measurement.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved repeats; the best of each is kept.")
_PLAIN = flags.DEFINE_bool("plain_loop", True, "Also time the loop without checkpoints.")
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


def loop_run(config, data, steps, checkpoints: bool) -> dict:
  """-> the loop's run facts (steps_per_second, checkpoint_saves, ...); `checkpoints`:
  at the config's schedule, else none."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.train.steps = steps
    if not checkpoints:
      common.no_checkpoints(c)
  with tempfile.TemporaryDirectory() as wd:
    return train.train_and_evaluate(c, wd, data=data, verbose=False)["run"]


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
  t = config.train
  schedule = f"every {int(t.checkpoint_every)} steps / {float(t.checkpoint_seconds):g} s"
  data = jaxrec_data.load_data(config.data, int(config.seed))
  data = few_test_users(tuple(data), _EVAL_USERS.value, int(config.seed))
  # warm the loop's compilation once (the bare loop compiles inside its own call)
  loop_run(config, data, 10, checkpoints=False)
  bare, loop, loop_ck = [], [], []
  for r in range(_REPEATS.value):
    print(f"repeat {r + 1}/{_REPEATS.value}: bare step ...", flush=True)
    bare.append(bare_steps_per_second(config, data, steps))
    if _PLAIN.value:
      print(f"  {bare[-1]:.1f} steps/s; loop without checkpoints ...", flush=True)
      loop.append(loop_run(config, data, steps, checkpoints=False)["steps_per_second"])
    print(f"  loop with checkpoints ({schedule}) ...", flush=True)
    loop_ck.append(loop_run(config, data, steps, checkpoints=True))
  b = max(bare)
  ck = max(loop_ck, key=lambda run: run["steps_per_second"])
  lc = ck["steps_per_second"]
  out = {
      "steps": steps,
      "log_every": int(t.log_every),
      "num_items": int(data[0].num_items),
      "bare_steps_per_second": b,
      "loop_with_checkpoints_steps_per_second": lc,
      "checkpoint_every": int(t.checkpoint_every),
      "checkpoint_seconds": float(t.checkpoint_seconds),
      "timed_checkpoint_saves": ck["checkpoint_saves"],
      "ratio_loop_with_checkpoints_over_bare": lc / b,
  }
  print(f"bare jitted step        : {b:8.1f} steps/s")
  if loop:
    out.update(loop_steps_per_second=max(loop), ratio_loop_over_bare=max(loop) / b)
    print(
        f"full loop (no ckpt)     : {max(loop):8.1f} steps/s   ratio {max(loop) / b:.3f}"
        "  (target >= 0.80)"
    )
  print(
      f"full loop (ckpt {schedule}): {lc:8.1f} steps/s   ratio {lc / b:.3f}  (target >= 0.90;"
      f" {ck['checkpoint_saves']} saves timed)"
  )
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  app.run(main)

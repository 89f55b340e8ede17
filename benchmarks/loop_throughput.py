"""Training-loop overhead: steps/s of `train_and_evaluate` vs the bare jitted step.

  python -m benchmarks.loop_throughput [--steps=3000] [--config.x=y ...]

Both run the same compiled step on the same device-resident data (default: the synthetic
config, softmax DNN, uniform sampled softmax). The bare loop calls the step `steps` times
and blocks once; the full loop is `train.train_and_evaluate` (progress lines, host sync at
each log step, metrics.jsonl), whose `run.steps_per_second` counts training time only.
Target (issue 4): full / bare >= 0.80. Printed in one run, so machine noise hits both.
"""

import copy
import json
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

from jaxrec import config as config_lib
from jaxrec import data as jaxrec_data
from jaxrec import step as step_lib
from jaxrec import train

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/synthetic.py", "Config.")
_STEPS = flags.DEFINE_integer("steps", 3000, "Steps per measurement.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved repeats; the best of each is kept.")


def bare_steps_per_second(config, data, steps) -> float:
  spec = config_lib.StepSpec.from_config(config)
  tr, _ = data
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


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  steps = _STEPS.value
  data = jaxrec_data.load_data(config.data, int(config.seed))
  # warm the loop's compilation once (the bare loop compiles inside its own call)
  loop_steps_per_second(config, data, 10, 0)
  bare, loop, loop_ck = [], [], []
  for _ in range(_REPEATS.value):
    bare.append(bare_steps_per_second(config, data, steps))
    loop.append(loop_steps_per_second(config, data, steps, 0))
    loop_ck.append(loop_steps_per_second(config, data, steps, int(config.train.checkpoint_every)))
  b, l, lc = max(bare), max(loop), max(loop_ck)
  out = {
      "steps": steps,
      "log_every": int(config.train.log_every),
      "bare_steps_per_second": b,
      "loop_steps_per_second": l,
      "loop_with_checkpoints_steps_per_second": lc,
      "checkpoint_every": int(config.train.checkpoint_every),
      "ratio_loop_over_bare": l / b,
      "ratio_loop_with_checkpoints_over_bare": lc / b,
  }
  print(f"bare jitted step        : {b:8.1f} steps/s")
  print(f"full loop (no ckpt)     : {l:8.1f} steps/s   ratio {l / b:.3f}  (target >= 0.80)")
  print(
      f"full loop (ckpt / {int(config.train.checkpoint_every)}) : {lc:8.1f} steps/s"
      f"   ratio {lc / b:.3f}"
  )
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  app.run(main)

r"""Does a train step with side features cost about what one without them does?

The jitted `jaxrec.step.train_step` (sampled softmax, uniform negatives) on the synthetic
world, for each model (mf, dnn) without features and with user features (a group id, a
50-value categorical, a numeric column) and item features (a bag of 3 of 20 "genres", a
decade), written to a temporary features file and read by `jaxrec.data.features`. The
feature tables are dense parameters (optax), the id tables stay sparse rows.

Printed per model: ms/step of the best timed block without features, with the user
features only, the item features only and both (blocks of --steps steps, interleaved
across variants so that load from other processes hits each alike), and each one's
ratio to the step without features. The DNN's user features widen its MLP input from D
to D + 2D + 2 (two embedded features, a value and its missing indicator): that part of
the cost is the model's, not the feature plumbing's. Target (the step benchmark's rule for "as fast",
at its B = K = 1024, D = 64): ratio <= 1.3.

At a toy size (--num_items=5000 --num_users=5000 --batch=512 --num_neg=256, a 1-ms MF
step) the features' ~25 extra small XLA ops cost a fixed ~0.2 ms a step, 15-45% of it;
docs/RESULTS.md has both sizes.

  python benchmarks/features_step.py
  python benchmarks/features_step.py --num_items=5000 --num_users=5000 --batch=512 --num_neg=256
"""

from __future__ import annotations

import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

from experiments.configs import synthetic
from jaxrec import config as config_lib
from jaxrec import data, step

_MODELS = flags.DEFINE_list("models", ["mf", "dnn"], "Models to time.")
_NUM_USERS = flags.DEFINE_integer("num_users", 20_000, "Users of the synthetic world.")
_NUM_ITEMS = flags.DEFINE_integer("num_items", 100_000, "Items of the synthetic world.")
_BATCH = flags.DEFINE_integer("batch", 1024, "B: pairs per step.")
_NUM_NEG = flags.DEFINE_integer("num_neg", 1024, "K: shared uniform negatives per step.")
_DIM = flags.DEFINE_integer("dim", 64, "D: embedding dimension.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed block.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed blocks per variant (interleaved).")


def _config(model: str):
  c = synthetic.get_config()
  c.data.num_users, c.data.num_items = _NUM_USERS.value, _NUM_ITEMS.value
  c.model.name, c.model.dim, c.model.hidden = model, _DIM.value, (2 * _DIM.value,)
  c.train.batch_size = _BATCH.value
  c.sampler.num_negatives = _NUM_NEG.value
  return c


def _write_features(folder: str, world) -> tuple[str, str]:
  rng = np.random.default_rng(0)
  users = os.path.join(folder, "users.csv")
  with open(users, "w") as f:
    f.write("user,group,country,score\n")
    for u in range(world.num_users):
      f.write(f"{u},g{world.user_groups[u]},c{rng.integers(50)},{rng.normal():.4f}\n")
  items = os.path.join(folder, "items.csv")
  with open(items, "w") as f:
    f.write("item,genres,year\n")
    for i in range(world.num_items):
      genres = "|".join(f"x{g}" for g in rng.choice(20, size=3, replace=False))
      f.write(f"{i},{genres},{rng.integers(1950, 2020)}\n")
  return users, items


def _variant(c, seed=0):
  config_lib.validate_config(c)
  spec = config_lib.StepSpec.from_config(c)
  train = data.load_data(c.data, seed).train
  ddata = step.device_data(train, spec)
  state = step.init_state(spec, c, train.num_users, train.num_items, seed)
  for _ in range(3):  # compile + warm up
    state, m = step.jitted_train_step(spec, state, ddata)
  float(m["loss"])
  return [spec, state, ddata]


def main(argv):
  del argv
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}", flush=True)
  with tempfile.TemporaryDirectory() as folder:
    world = data.load_data(_config("mf").data, 0).train
    users, items = _write_features(folder, world)
    variants = {}
    for model in _MODELS.value:
      c = _config(model)
      variants[(model, "without")] = _variant(c)
      for side in ("user", "item", "both"):
        c = _config(model)
        if side in ("user", "both"):
          c.data.user_features = users
          c.data.user_feature_types = "group:categorical,country:categorical,score:numeric"
        if side in ("item", "both"):
          c.data.item_features, c.data.item_feature_types = items, "genres:multi,year:year"
        variants[(model, side)] = _variant(c)
    best = {k: float("inf") for k in variants}
    for _ in range(_REPEATS.value):
      for key, v in variants.items():
        spec, state, ddata = v
        t0 = time.perf_counter()
        for _ in range(_STEPS.value):
          state, m = step.jitted_train_step(spec, state, ddata)
        float(m["loss"])
        best[key] = min(best[key], (time.perf_counter() - t0) / _STEPS.value)
        v[1] = state
  print(
      f"N={_NUM_ITEMS.value:,} U={_NUM_USERS.value:,} B={_BATCH.value} K={_NUM_NEG.value} "
      f"D={_DIM.value}; best of {_REPEATS.value} blocks of {_STEPS.value} steps",
      flush=True,
  )
  for model in _MODELS.value:
    without = best[(model, "without")]
    line = f"{model}: without features {1e3 * without:.2f} ms/step"
    for side in ("user", "item", "both"):
      t = best[(model, side)]
      line += f"; {side} {1e3 * t:.2f} ms/step (ratio {t / without:.2f})"
    print(line, flush=True)
  print("target: ratio <= 1.3", flush=True)


if __name__ == "__main__":
  app.run(main)

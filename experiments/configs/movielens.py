"""ml-latest-small: a softmax DNN tuned on validation, and the search that tuned it.

Train the tuned model (per-user 80/20 split of all ratings, seed 0):
  python -m experiments.main --config=experiments/configs/movielens.py \
      --config.data.path=../shared/data/ml-latest-small --workdir=runs/ml

Tune every method on validation and report test over 3 seeds (variant `tune`; `tune,quick`
is a smoke run of the same search):
  python -m experiments.tune --config=experiments/configs/movielens.py:tune --workdir=runs/ml_tune

The model: a softmax DNN, the mean of the user's other items' embeddings through a linear
tower, L2-normalised query and item embeddings (cosine / temperature), in-batch negatives
with the streaming log-Q correction (Yi et al. 2019). The search (variant `tune`): each
method gets the same budget, at most `TRIALS` random draws from its space, each at most
12,000 steps with a validation evaluation every 1,000 and patience 3; selection on
valid/recall@20 over a 10% carve of each user's train rows; the winner is refit on train +
valid for the selected number of epochs with seeds 0, 1, 2 (data seed 0: one test split).
Measured figures (test, mean ± std over seeds, wall times on 2 cores): docs/RESULTS.md,
"ml-latest-small, tuned on validation".
"""

from experiments.configs import common, synthetic

TRIALS = 6


def get_config(arg=None):
  v = common.parse_arg(arg, tune=False, quick=False)
  c = synthetic.get_config()
  c.data.name = "movielens"
  c.data.path = common.ml_latest_small()
  c.data.seed = 0
  c.model.name = "dnn"
  c.model.dim = 128
  c.model.hidden = ()  # linear tower: a hidden ReLU layer overfits 610 users
  c.model.max_bag = 64
  c.model.normalize = True  # cosine scores / temperature
  c.loss.name = "sampled"
  c.loss.temperature = 0.14
  c.sampler.name = "in_batch"  # with the streaming log-Q correction (Yi et al. 2019)
  c.sampler.logq = True
  c.train.steps = 12000
  c.train.batch_size = 256
  c.train.optimizer = "adagrad"
  c.train.learning_rate = 1.0
  c.train.log_every = 1000
  c.train.checkpoint_every = 0
  c.eval.ks = (10, 20)
  if v.tune:
    c.eval.every, c.eval.patience = 1000, 3
    c.tune = common.tune(methods(), title="ml-latest-small, tuned on validation", trials=TRIALS)
  if v.quick:
    common.quick_steps(c, 600)
    c.eval.every = min(c.eval.every, 300) if c.eval.every else 0
    if v.tune:
      c.tune.trials, c.tune.seeds = 2, (0,)
  return c


def methods():
  """(label, fixed overrides, space): the compared methods, one search budget each."""
  softmax_space = {
      "loss.temperature": (0.07, 0.1, 0.14, 0.2),
      "model.dim": (64, 128, 256),
      "train.learning_rate": (0.3, 1.0, 3.0),
  }
  return (
      ("popularity", {"model.name": "popularity"}, {}),
      (
          "EASE",
          {"model.name": "ease"},
          {"model.ease_lambda": (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)},
      ),
      (
          "iALS",
          # Rendle et al. 2022's iALS: frequency-scaled ridge, lambda (|S_i| + w0 K)
          {"model.name": "wals", "model.iterations": 16, "model.reg_scaling": "frequency"},
          {
              "model.dim": (64, 128, 256),
              "model.unobserved_weight": (0.03, 0.1, 0.3, 1.0),
              "model.regularization": (0.001, 0.003, 0.01, 0.03),
          },
      ),
      ("softmax DNN, in-batch + log-Q", {}, softmax_space),
      (
          "softmax MF, uniform sampled (1024)",
          {"model.name": "mf", "sampler.name": "uniform", "sampler.num_negatives": 1024},
          # wider tables than the DNN's: with 610 users, MF's user rows are cheap, and
          # 8-epoch probes on validation (docs/RESULTS.md) found D = 256-512 ahead of 64-128
          {
              "loss.temperature": (0.07, 0.1, 0.14),
              "model.dim": (256, 512),
              "train.learning_rate": (0.3, 1.0),
          },
      ),
  )

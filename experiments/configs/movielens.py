"""A tuned softmax DNN for a MovieLens-format folder (u.data, ratings.dat or ratings.csv).

Command (ml-latest-small, all ratings as positives, per-user 80/20 split):
  python -m experiments.main --config=experiments/configs/movielens.py \
      --config.data.path=../shared/data/ml-latest-small --workdir=runs/ml

Measured on ml-latest-small (per-user 80/20 split, seed 0, full ranking, train items
masked): recall@20 0.317 (popularity 0.181; tuned WALS 0.342). The issue's target of
0.33 is not reached yet; the tuning log is in BUILD_NOTES.md.
"""

from experiments.configs import synthetic


def get_config():
  c = synthetic.get_config()
  c.data.name = "movielens"
  c.data.path = "../shared/data/ml-latest-small"
  c.model.name = "dnn"
  c.model.dim = 64
  c.model.hidden = ()          # linear tower: a hidden ReLU layer overfits 610 users
  c.model.max_bag = 256
  c.loss.name = "full"
  c.loss.l2 = 0.03
  c.train.steps = 4000
  c.train.batch_size = 256
  c.train.optimizer = "adam"
  c.train.learning_rate = 0.003
  c.train.log_every = 500
  c.train.checkpoint_every = 1000
  return c

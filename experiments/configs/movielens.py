"""A tuned softmax DNN for a MovieLens-format folder (u.data, ratings.dat or ratings.csv).

Command (ml-latest-small, all ratings as positives, per-user 80/20 split):
  python -m experiments.main --config=experiments/configs/movielens.py \
      --config.data.path=../shared/data/ml-latest-small --workdir=runs/ml

Expected: recall@20 >= 0.33 on ml-latest-small (full ranking, train items masked;
popularity 0.181). The measured figure and wall time are in BUILD_NOTES.md.
"""

from experiments.configs import synthetic


def get_config():
  c = synthetic.get_config()
  c.data.name = "movielens"
  c.data.path = "../shared/data/ml-latest-small"
  c.model.name = "dnn"
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

"""A tuned softmax DNN for a MovieLens-format folder (u.data, ratings.dat or ratings.csv).

Command (ml-latest-small, all ratings as positives, per-user 80/20 split):
  python -m experiments.main --config=experiments/configs/movielens.py \
      --config.data.path=../shared/data/ml-latest-small --workdir=runs/ml

A softmax DNN: the mean of the user's other items' embeddings through a linear tower,
L2-normalised query and item embeddings, in-batch negatives with log-Q, temperature 0.14.
Measured on ml-latest-small (per-user 80/20 split, seed 0, full ranking, train items
masked): recall@20 0.3386 (seed 0), 0.3348 (seed 1), about 2.5 minutes on 2 CPU cores;
popularity 0.181. Tuning notes in docs/RESULTS.md.
"""

from experiments.configs import synthetic


def get_config():
  c = synthetic.get_config()
  c.data.name = "movielens"
  c.data.path = "../shared/data/ml-latest-small"
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
  c.train.checkpoint_every = 3000
  return c

"""The folding ablation's model on language-split ml-latest-small.

Command (the folding ablation on real data; every strategy, 3 seeds, 73 min on 2 idle CPU cores):
  python -m experiments.folding --config=experiments/configs/folding_movielens.py \
      --workdir=runs/folding_ml

The same as `--config.data.name=movielens --config.data.path=../shared/data/ml-latest-small
--config.data.language_split=4` on the default synthetic config, plus Adam (lr 0.003) and
10,000 steps: 4 copies of the catalogue (38,896 items) with each user's items moved to one
copy, so the copies never interact (Xin et al. 2017's "languages"). The default config's
row-wise Adagrad (lr 0.5) barely moves the embeddings here (full softmax recall@20 0.03
after 1,500 steps); with Adam every strategy learns. Results in BUILD_NOTES.md.
"""

from experiments.configs import synthetic


def get_config():
  c = synthetic.get_config()
  c.data.name = "movielens"
  c.data.path = "../shared/data/ml-latest-small"
  c.data.language_split = 4
  c.train.optimizer = "adam"
  c.train.learning_rate = 0.003
  c.train.steps = 10000
  c.train.log_every = 2500
  c.train.checkpoint_every = 0
  return c

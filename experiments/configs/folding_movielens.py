"""The folding ablation on language-split ml-latest-small (configs/folding.py:movielens).

Command (every strategy, 3 seeds; JAXREC_GLIBC_MALLOC=keep keeps XLA's big freed buffers
for reuse, jaxrec/host_malloc.py):
  JAXREC_GLIBC_MALLOC=keep python -m experiments.folding \
      --config=experiments/configs/folding_movielens.py --workdir=runs/folding_ml

Under issue 22's protocol (each arm's learning rate tuned on validation, popularity and
EASE rows, claims declared in configs/folding.py's `tune_claims`; 55 minutes on 2 cores,
early stopping ends most runs well before the cap; records/folding_ml_tune, docs/RESULTS.md:
every folding claim held; the full softmax's held-out loss stays above hard_exact's):
  JAXREC_GLIBC_MALLOC=keep python -m experiments.tune \
      --config=experiments/configs/folding_movielens.py:tune --workdir=runs/folding_ml_tune

The same as `--config.data.name=movielens --config.data.path=../shared/data/ml-latest-small
--config.data.language_split=4` on the default synthetic config, plus Adam (lr 0.003) and
10,000 steps: 4 copies of the catalogue (38,896 items) with each user's items moved to one
copy, so the copies never interact (Xin et al. 2017's "languages"). The default config's
row-wise Adagrad (lr 0.5) barely moves the embeddings here (full softmax recall@20 0.03
after 1,500 steps); with Adam every strategy learns.

K = 256 negatives per step for uniform, unigram and the hard samplers: the batch size, so
they draw as many as in_batch and mixed already take from the batch (and mixed's uniform
part), where the synthetic default's K = 64 would be 0.16% of this catalogue (6.4% of the
synthetic 1,000 items). The pool of hard_pool / hard_topk is 4 K, as in the default. The first
run of this ablation used K = 64 and a pool of 256, and there unigram (alpha 0.75) missed the
recall bound (0.141 against 0.75 x full softmax = 0.162): a popularity proposal with few
draws pushes rarely seen items down too little (configs/popularity_tail.py, which keeps
K = 64, measures it). K was raised after that miss; docs/RESULTS.md keeps both tables.
"""

from experiments.configs import folding


def get_config(arg=None):
  return folding.get_config(",".join(filter(None, ("movielens", arg))))

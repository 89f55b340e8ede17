"""Sampled vs full-ranking metrics (Krichene & Rendle, KDD 2020).

Command (defaults: ml-latest-small, 3 seeds, 6 models):
  python -m experiments.sweep --config=experiments/configs/sampled_metrics.py \
      --workdir=runs/sampled_metrics [--config.data.path=../shared/data/ml-latest-small] \
      [--config.sweep.seeds=0,1,2] [--config.sweep.num_negatives=100] \
      [--config.sweep.mf_dims=8,32,128] [--config.train.steps=3000 ...]
Variant `:quick`: one seed, at most 1000 steps per model.

Under the protocol (variant `tune`: each model's Adagrad lr, WALS's unobserved weight and
EASE's lambda from 3 trials on a 10% validation carve, then 3 seeds refit on train +
valid; the hit rates of every final run and the reorderings in report.md; claims in
`tune_claims` declared before the run):
  python -m experiments.tune --config=experiments/configs/sampled_metrics.py:tune \
      --workdir=runs/sampled_metrics_tune
Found under the protocol (records/sampled_metrics_tune, docs/RESULTS.md; 4.5 minutes): both
claims held. WALS beats MF D = 8 by recall@10 (+0.101 [0.093, 0.109]) and loses to it by
sampled HR@10 (-0.040 [-0.047, -0.034]). WALS ranks 3rd of 7 by recall@10 and last by
sampled HR@10 (Kendall tau 0.62, 4 pairs reordered).

Setting. Six models on one per-user 80/20 split per seed: most-popular; MF at D = 8, 32 and
128 and a softmax DNN (the bag-of-items query tower of experiments/configs/movielens.py,
D = 64), all L2-normalised and trained 3000 steps with in-batch softmax and log-Q at
temperature 0.14 (the best setting of experiments/configs/logq.py; sampled rather than full
softmax keeps the default under 10 minutes on 2 cores); and WALS (iALS, D = 64, w0 = 0.1,
10 sweeps). For each we compute
  recall@10       full ranking over all items, train items masked (`metrics.evaluate`);
  sampled_hr@10   each test pair ranked against 100 items drawn uniformly from those the
                  user never interacted with; hit if fewer than 10 negatives score >= it
                  (`metrics.sampled_hit_rate`; the same negatives for every model of a seed).
The report ranks the models by each metric, lists every pair whose order differs
(a "reordering"), the Kendall tau between the two rankings, and how much each metric
compresses the gap between the best and the worst model. `--config.*` flags apply to
every trained model (on top of its own overrides).

Claim (Krichene & Rendle 2020): sampled metrics are not consistent with the full
metrics: with 100 sampled negatives HR@10 can order models differently from recall@10 and
compresses the differences between them (every reasonable model looks good).

Found (defaults, seeds 0-2, mean ± std; 2-core CPU shared with other jobs, load ~9:
wall 163 s, process CPU 115 s). full_hr@10 is the exact value sampled_hr@10 estimates
(same test pairs, all unseen items instead of 100):

  model        recall@10    full_hr@10   sampled_hr@10
  mf_d128      0.294±0.002  0.115±0.001  0.703±0.001
  wals         0.271±0.008  0.094±0.001  0.629±0.002
  mf_d32       0.239±0.006  0.086±0.003  0.671±0.007
  softmax_dnn  0.209±0.008  0.078±0.003  0.673±0.010
  popularity   0.174±0.003  0.068±0.002  0.638±0.001
  mf_d8        0.170±0.009  0.058±0.004  0.662±0.003

Held. The two full metrics rank the six models identically; the sampled one reorders 6 of
15 pairs (Kendall tau 0.20): WALS, 2nd by both full metrics, is LAST by sampled HR@10
(below popularity and MF D = 8; on 3/3 seeds), and popularity vs MF D = 8 and MF D = 32 vs
the DNN swap too (the latter within noise). The sampled metric compresses the spread
(best - worst) / best from 0.42 (recall@10) and 0.50 (full HR@10) to 0.11. Why WALS: with
100 negatives a hit means ranking the positive in about the top 10% of unseen items, not
the top 10 of 9.7k. WALS puts more test positives in the top 1% than MF D = 8 (0.285 vs
0.247, seed 0) but fewer in the top 10% (0.637 vs 0.674): it is strong at the head of
the ranking, which the full metrics measure, and weaker in its middle, which the sampled
metric measures.
"""

from experiments.configs import common

LEARNING_RATES = (0.25, 0.5, 1.0)  # the `tune` variant's Adagrad space, every trained model


def tune_methods(config):
  """(label, fixed, space) of the `tune` variant: the sweep's models under the same labels,
  each searching 3 points (the trained towers the Adagrad lr, WALS its unobserved weight
  w0), plus popularity and EASE (lambda) as rows."""
  trained = [
      (label, over, {"train.learning_rate": LEARNING_RATES})
      for label, over in strategies(config)
      if label != "wals"
  ]
  return (
      [
          ("popularity", {"model.name": "popularity"}, {}),
          ("EASE", {"model.name": "ease"}, {"model.ease_lambda": (100.0, 200.0, 500.0)}),
      ]
      + trained
      + [("wals", dict(strategies(config))["wals"], {"model.unobserved_weight": (0.03, 0.1, 0.3)})]
  )


def tune_claims():
  """Declared before the first `tune` run: the reordering the untuned sweep found (WALS
  above MF D = 8 by recall@10, below it by sampled HR@10, on 3/3 seeds) survives tuning
  both models on validation (paired differences over the final seeds > 0)."""
  return [
      common.claim(
          "WALS beats MF D = 8 by recall@10 (full ranking)", "recall@10", "wals", ">", b="mf_d8"
      ),
      common.claim(
          "MF D = 8 beats WALS by sampled HR@10 (100 negatives)",
          "sampled_hr@10",
          "mf_d8",
          ">",
          b="wals",
      ),
  ]


def strategies(config):
  """The trained models (popularity is added without training, by the analysis)."""
  runs = [(f"mf_d{d}", {"model.name": "mf", "model.dim": int(d)}) for d in config.sweep.mf_dims]
  return runs + [
      ("softmax_dnn", {"model.name": "dnn"}),
      ("wals", {"model.name": "wals", "model.dim": 64}),
  ]


def get_config(arg=None):
  """L2-normalised towers, in-batch softmax with log-Q at temperature 0.14 (the best
  setting of configs/logq.py), 3000 steps; each model adds its own overrides."""
  v = common.parse_arg(arg, quick=False, tune=False)
  c = common.movielens_base()
  c.model.normalize = True
  c.loss.update(name="sampled", temperature=0.14)
  c.sampler.update(name="in_batch", logq=True)
  c.train.update(steps=3000, learning_rate=0.5, optimizer="adagrad", log_every=1000)
  common.no_checkpoints(c)
  c.eval.update(ks=(10, 20), save_embeddings=True)
  # WALS (model.name=wals): iALS, D = 64, w0 = 0.1, lambda = 0.1, 10 sweeps.
  c.model.update(unobserved_weight=0.1, regularization=0.1, iterations=10)
  c.sweep = common.sweep(
      "sampled_metrics",
      "configs.sampled_metrics.strategies",
      title="Sampled vs full-ranking metrics",
      metrics=("recall@10", "full_hr@10", "sampled_hr@10", "ndcg@10"),
      analysis="sampled_metrics.analysis",
      add_rows="sampled_metrics.add_rows",
      mf_dims=(8, 32, 128),
      num_negatives=100,
  )  # sampled negatives per test pair
  if v.tune:
    common.protocol(
        c,
        tune_methods(c),
        title="Sampled vs full-ranking metrics, every model tuned on validation",
        select="valid/recall@10",
        claims=tune_claims(),
        steps=3000,
        analysis="sampled_metrics.tune_analysis",
    )
  if v.quick:
    common.quick_steps(c, 1000)
    c.sweep.seeds = (0,)
    if v.tune:
      c.tune.trials, c.tune.seeds = 1, (0,)
  return c

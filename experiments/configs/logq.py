"""log-Q correction for in-batch negatives (Yi et al., RecSys 2019), Table 1 form.

Command (defaults: ml-latest-small, 3 seeds, 3 temperatures x log-Q on/off):
  python -m experiments.sweep --config=experiments/configs/logq.py --workdir=runs/logq \
      [--config.data.path=../shared/data/ml-latest-small] [--config.sweep.seeds=0,1,2] \
      [--config.sweep.temperatures=0.05,0.14] [--config.train.steps=3000 ...]
Variant `:quick` (experiments/configs/logq.py:quick): one seed, 1000 steps, a 4000-step
simulation.

Setting. A two-tower MF retrieval model (user table, item table, D = 64) with L2-normalised
query and item embeddings (`model.normalize=True`, cosine scores divided by the
temperature) trained with in-batch softmax (`sampler.name=in_batch`: the batch's positives
are the negatives), with and without the log-Q correction s_ij - log p_j, where p_j is
the streaming frequency estimate of Yi et al. (Algorithm 2, `sampler.freq_alpha`), over
temperatures {0.05, 0.07, 0.14}; recall@{10, 50, 100} by full ranking (train items
masked). Yi et al. use DNN towers over features; MF towers keep the default under 10
minutes on 2 CPU cores (`--config.model.name=dnn` runs the DNN tower instead).

Also the streaming-estimator simulation of their Section 6.1 (same form; our sizes): items
i in [0, M) drawn with q_i ~ i^2, switching to q_i ~ (M-1-i)^2 half-way; the plot shows the
estimation error sum_i |p_hat_i - p_i| / sum_i p_i per step for several alpha (left) and,
with hash collisions (H < M), for 1, 2 and 4 hash functions (right, Algorithm 3).

Under the protocol (variant `tune`: every arm gets 3 trials on a 10% validation carve,
the step chosen on it with a 6,000-step cap, refit, seeds 0-2; popularity and EASE rows; the
uncorrected model with a popularity adjustment at serving, `eval.logp_bias`, as a third
arm; the claims in `tune_claims` were declared before the run; 8.6 minutes on 2 cores):
  python -m experiments.tune --config=experiments/configs/logq.py:tune --workdir=runs/logq_tune
Found (records/logq_tune, docs/RESULTS.md): log-Q beats no log-Q at every temperature
(recall@10 +0.15 to +0.22, held), but the uncorrected model + beta log p at serving beats
log-Q at T 0.05 and 0.07 (-0.035 and -0.031, "not held") and ties it at T 0.14 (not
resolved); every in-batch arm stays below EASE (0.343).

Claim (Yi et al., Table 1): the corrected in-batch softmax beats the uncorrected one at
every temperature. Simulation: a larger alpha adapts faster to the shift but is noisier;
more hash functions reduce the error caused by collisions.

Found (defaults, seeds 0-2, mean ± std; 2-core CPU shared with other jobs, load ~8:
wall 70 s, process CPU 59 s): the claim holds at every temperature and K, on every seed,
by a wide margin (+90% to +300%; we think because ml-latest-small is popularity-dominated
and uncorrected in-batch negatives, drawn in proportion to popularity, push the popular
items that most test pairs hit down the ranking):

  T     recall@10 (none -> log-Q)   recall@50 (none -> log-Q)   recall@100 (none -> log-Q)
  0.05  0.044±0.003 -> 0.176±0.003    0.133±0.003 -> 0.293±0.006    0.200±0.004 -> 0.381±0.007
  0.07  0.052±0.001 -> 0.202±0.008    0.135±0.006 -> 0.324±0.006    0.201±0.009 -> 0.410±0.007
  0.14  0.083±0.003 -> 0.275±0.006    0.176±0.003 -> 0.382±0.003    0.247±0.004 -> 0.474±0.003

Simulation (M = 1000, B = 128, 20k steps, shift at 10k): settled error before the shift
0.054 / 0.116 / 0.169 / 0.496 for alpha 0.01 / 0.05 / 0.1 / 0.5, all ~1.2-1.4 right after
it, and 1000-2000 steps after it 0.60 / 0.23 / 0.27 / 0.61: small alpha is accurate but
slow to adapt, large alpha fast but noisy, as the paper describes. With H = 500 < M
(collisions), 1 / 2 / 4 hash functions settle at 0.94 / 0.65 / 0.33 (Algorithm 3 helps).
"""

from experiments.configs import common

TEMPERATURES = (0.05, 0.07, 0.14)


def label(temperature: float, logq: bool) -> str:
  return f"T={temperature},{'logq' if logq else 'no_logq'}"


def strategies(config):
  """Every temperature of sweep.temperatures, log-Q off and on."""
  return [
      (label(t, q), {"loss.temperature": float(t), "sampler.logq": q})
      for t in config.sweep.temperatures
      for q in (False, True)
  ]


LEARNING_RATES = (0.25, 0.5, 1.0)  # the `tune` variant's space for the trained arms


def serving_label(temperature: float) -> str:
  return f"T={temperature},no_logq+serving"


def tune_methods():
  """(label, fixed, space) of the `tune` variant: each method gets 3 trials.

  log-Q on and off at each temperature search the Adagrad lr; the uncorrected model with
  a popularity adjustment at serving (eval.logp_bias = beta: rank by cos + beta log p_j)
  searches beta in {T/2, T, 2T} at lr 0.5 (an uncorrected in-batch softmax learns about
  logit - log p_j at scale 1/T, so beta ~ T undoes it in cosine units); popularity and
  EASE are the baselines."""
  out = [
      ("popularity", {"model.name": "popularity"}, {}),
      ("EASE", {"model.name": "ease"}, {"model.ease_lambda": (100.0, 200.0, 500.0)}),
  ]
  for t in TEMPERATURES:
    for q in (False, True):
      fixed = {"loss.temperature": t, "sampler.logq": q}
      out.append((label(t, q), fixed, {"train.learning_rate": LEARNING_RATES}))
    betas = tuple(round(f * t, 4) for f in (0.5, 1.0, 2.0))
    out.append(
        (
            serving_label(t),
            {"loss.temperature": t, "sampler.logq": False, "train.learning_rate": 0.5},
            {"eval.logp_bias": betas},
        )
    )
  return out


def tune_claims():
  """Declared before the first `tune` run: at every temperature the corrected model beats
  the uncorrected one (Yi et al., Table 1), and beats it with the serving adjustment too
  (paired difference of test recall@10 over the final seeds > 0)."""
  out = []
  for t in TEMPERATURES:
    for b, what in ((label(t, False), "no log-Q"), (serving_label(t), "no log-Q + beta log p")):
      out.append(
          dict(
              text=f"T={t}: log-Q beats {what}",
              metric="recall@10",
              a=label(t, True),
              op=">",
              threshold=0.0,
              b=b,
          )
      )
  return out


def get_config(arg=None):
  """Normalised two-tower MF, in-batch softmax, on ml-latest-small."""
  v = common.parse_arg(arg, quick=False, tune=False)
  c = common.movielens_base()
  c.model.update(name="mf", dim=64, normalize=True)
  c.loss.name = "sampled"
  c.sampler.update(name="in_batch", logq=True, freq_alpha=0.01)
  c.train.update(learning_rate=0.5, optimizer="adagrad", log_every=1000)
  c.eval.ks = (10, 50, 100)
  c.sweep = common.sweep(
      "logq",
      "configs.logq.strategies",
      title="log-Q correction for in-batch negatives",
      metrics=tuple(f"recall@{k}" for k in c.eval.ks),
      analysis="logq.analysis",
      temperatures=TEMPERATURES,
      # Yi et al. Sec. 6.1 form: M items, batch B, H buckets for the hash curves (H < M:
      # every bucket holds two items under hash 0), the shift half-way through.
      simulation=dict(
          steps=20_000,
          num_items=1000,
          batch_size=128,
          alphas=(0.01, 0.05, 0.1, 0.5),
          hashes=(1, 2, 4),
          colliding_buckets=500,
          hash_alpha=0.01,
      ),
  )
  common.no_checkpoints(c)
  if v.tune:
    c.eval.ks = (10, 20, 50, 100)
    common.protocol(
        c,
        tune_methods(),
        title="log-Q for in-batch negatives, tuned on validation",
        select="valid/recall@10",
        claims=tune_claims(),
        steps=6000,
    )
  if v.quick:
    common.quick_steps(c, 1000)
    c.sweep.seeds = (0,)
    c.sweep.simulation.steps = 4000
    if v.tune:
      c.eval.every = 250
      c.tune.trials, c.tune.seeds = 1, (0, 1)
  return c

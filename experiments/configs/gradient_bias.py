"""Gradient fidelity of sampled softmax on trained models: bias and variance vs K.

  python -m experiments.sweep --config=experiments/configs/gradient_bias.py \
      --workdir=runs/gradient_bias [--config.sweep.datasets=synthetic,movielens] \
      [--config.sweep.data_path=../shared/data/ml-latest-small] \
      [--config.sweep.ks=1,4,16,64,256,1024] \
      [--config.sweep.samplers=uniform,unigram,in_batch,mixed,hard_exact,hard_pool,kernel] \
      [--config.sweep.draws=64] [--config.sweep.train_steps=1000] \
      [--config.sweep.batch_size=64] [--config.sweep.seeds=0]
Variant `:quick`: K in 1,16,256, R = 16 draws, 300 training steps.

Writes WORKDIR/gradient_bias.csv and WORKDIR/gradient_bias.png (bias vs K per sampler, one
panel per dataset, solid = logQ, dashed = no logQ) and prints the table (the measurement is
experiments/gradient_bias.py's `analysis`; no sweep of training runs). The measured table
and wall time are in docs/RESULTS.md.

What is measured. For each dataset the launcher's config (configs/synthetic.py: softmax
DNN, D=32; configs/movielens.py: softmax DNN, D=64) is trained briefly with the FULL
softmax loss (no checkpoints, embeddings saved); its query embeddings [U,D] and item
embeddings [N,D] are read back from embeddings.npz. A fixed batch of B (user, positive)
pairs is drawn uniformly from the training interactions. With L the mean full-softmax loss
of that batch and g* = grad_{Q,V} L (Q = the B query rows, V = the whole item table), a
sampler's one-draw sampled-softmax gradient g (`diagnostics.sampled_gradient`'s loss:
accidental hits masked, positive uncorrected, logQ on or off) is compared with g*:

  one_minus_cos = 1 - cos(E g, g*),  rel_norm_err = ||E g - g*|| / ||g*||,
  variance      = E ||g - E g||^2 / ||g*||^2            (the definitions of diagnostics.py)

Two choices make this affordable and precise (both tested in tests/test_gradient_bias.py):
  * Nested draws. Every draw takes K_max negatives; the estimate at K uses the first K of
    them (a prefix of i.i.d. draws is K i.i.d. draws; for hard_pool, K draws in the same
    pool), the others masked out of the loss. All K and both logQ settings share the draws
    (common random numbers) and one compilation per (dataset, sampler).
  * A control variate for E g - g*. With the same negatives, the importance-sampling
    gradient g_IS = mean_b [sum_k p_bk / (K q_k) grad s_bk (hits excluded) +
    (p_b,pos - 1) grad s_b,pos] (p = the exact softmax, Z known) has a closed-form mean
    E g_IS (= g* restricted to the items q can draw). The bias is estimated as
    mean_r (g_r - beta g_IS,r) + beta E g_IS - g*, unbiased for any fixed beta; beta in
    [0, 1] minimises the estimate's variance (fitted on the same draws). Its Monte-Carlo
    error is much smaller than that of the raw mean_r g_r - g* (beta = 0, error ~
    sqrt(variance / R), which swamps the bias beyond small K). `noise` is the RMS
    error of the bias vector relative to ||g*||; bias below ~2x noise is not resolved.
    The raw estimate is kept in the CSV (raw_rel_norm_err, raw_one_minus_cos).

Samplers, as the diagnostic sees them (q = the per-draw probability):
  uniform     q_j = 1/N.
  unigram     q_j proportional to (count_j + 1)^alpha (sweep.unigram_alpha, default 0.75; train
              counts, smoothed so that every item can be drawn).
  log_uniform Zipf over popularity ranks (not in the default list).
  in_batch    K = the batch size whose positives serve as negatives. The "batch" is K other
              training positives drawn i.i.d. from the data (what random batching gives), so
              q_j = f_j, the empirical item frequency. The logQ correction is the one the
              in_batch sampler applies at the streaming estimator's fixed point (Yi et al.
              2019; b -> 1/p): log p_j, p_j = K f_j, the expected count in a batch of K.
  mixed       K in-batch positives (as in_batch) + K uniform ids (train's default
              num_uniform = batch size): 2K negatives. logQ as `samplers.mixed` at the
              estimator's fixed point: log(K f_j + K/N).
  hard_exact  q_b = softmax(s_b / T) over the catalogue, T = the loss temperature: the
              model's own softmax, the zero-variance proposal for the normaliser.
  hard_pool   a uniform pool of sweep.pool_size ids per draw, then K draws from the softmax
              inside it, with the sampler's q (an unbiased importance weight).
  kernel      q_bj proportional to alpha s_bj^2 + 1 (Blanc & Rendle 2018; alpha = the
              sampler's default kernel_alpha, 100), drawn from a tree built on the
              trained items, or from the [B, N] kernel where N <= K L (the same law).
  neg_cache   (by name, not in the default list) outside training its cache is the current
              items (staleness 0): the same law as hard_exact.
K larger than the catalogue is skipped. hard_topk has no proper q and is not offered.

Expected (Bengio & Senecal 2008; Blanc & Rendle, ICML 2018): with logQ, bias falls with K;
the closer q is to the model's softmax the lower the bias at small K (hard_exact lowest);
uncorrected popularity / in-batch sampling stays biased.

Found with the default config (seed 0; numbers in docs/RESULTS.md):
  * hard_exact + logQ is lowest by 1-2 orders of magnitude at every K (<= 0.04 at K=1),
    and its bias is below the Monte-Carlo noise throughout.
  * Without logQ, unigram, in_batch, mixed, hard_exact and hard_pool plateau at a
    relative error of 0.2-0.4 that K does not remove. Uniform without logQ is the
    exception: its missing correction is the constant log(K/N), which only over-weights
    the positive (by ~p_pos (N/K - 1)); that bias falls with K and is small when p_pos is.
  * With logQ, uniform / unigram fall with K, but unigram levels off at the mass of the
    items it can never draw (zero training count: ~0.006 on ml-latest-small; recorded
    before the unigram sampler smoothed its counts, (count + 1)^alpha, which draws them).
  * (Recorded with the old once-per-step estimator, whose fixed point was
    log P(j in a batch of K); not rerun with the count estimator.) in_batch and mixed with
    the estimator's correction log P(j in batch) fall until K ~ 64 and then RISE (K = 256, 1024): popular items have K f_j > 1 expected copies
    but are corrected by log P <= 0. The same draws with log(K f_j) keep falling.
  * hard_pool + logQ sits at ~0.03-0.06 for every K, set by its pool (M = 256), not by K
    (not resolved from its noise at R = 64).
"""

import ml_collections

from experiments.configs import common


def get_config(arg=None):
  """No sweep of training runs: experiments/gradient_bias.py's analysis trains one
  full-softmax model per dataset and measures every sampler x K x logQ on it."""
  v = common.parse_arg(arg, quick=False)
  c = ml_collections.ConfigDict()
  c.sweep = common.sweep(
      "gradient_bias",
      (),
      title="Gradient fidelity of sampled softmax",
      seeds=(0,),
      analysis="gradient_bias.analysis",
      facts=False,
      datasets=("synthetic", "movielens"),
      data_path=common.ml_latest_small(),  # movielens is skipped if it is missing
      ks=(1, 4, 16, 64, 256, 1024),  # numbers of negatives (in_batch/mixed: batch size)
      samplers=("uniform", "unigram", "in_batch", "mixed", "hard_exact", "hard_pool", "kernel"),
      draws=64,  # R: independent draws per (sampler, K)
      train_steps=1000,  # full-softmax training steps
      batch_size=64,  # B: (user, positive) pairs in the batch
      pool_size=256,  # hard_pool's uniform pool size M
      unigram_alpha=0.75,
  )  # unigram's exponent on the counts
  if v.quick:
    c.sweep.update(ks=(1, 16, 256), draws=16, train_steps=300)
  return c

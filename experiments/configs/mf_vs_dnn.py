"""MF against the softmax DNN: the four closing claims of the course's softmax chapter.

Command (`experiments/mf_vs_dnn.py` is the runner; its docstring says what it measures):
  python -m experiments.mf_vs_dnn --workdir=runs/mf_vs_dnn            # ~10 min on 2 cores
  python -m experiments.mf_vs_dnn --workdir=runs/mf_vs_dnn_quick --quick   # < 2 min

The world: the synthetic folding world (G = 4 "languages", 2,000 users, 1,000 items, 5
topics per language, each user's preferred topic drawn uniformly), one fixed world and
split (data.seed = 0) so that the seeds vary initialisation and sampling only. Side
features written from its ground truth (`write_features`): per user `country` (the
user's language) and `interest` (the preferred topic, replaced by a uniformly drawn
topic with probability `mvd.interest_noise`); per item `language` and `topic`. The second
world of claim 2 is a language split (`data.language_split`) of a one-language world of
the same size: 4 copies of a 250-item catalogue, so items in different copies have the
same co-occurrence statistics by construction. The folding world is itself such a split
(with the same data seed and Zipf exponent the two are the same data), so the second
world is another draw (data seed 1) with a flatter popularity (Zipf 0.7), not another
kind of data; a real-data language split (ml-latest-small) is not part of this run.

Tuning (`tune`, `experiments.tune`): every trained method searches the same learning-rate
grid (4 trials, Adagrad, 1,500 steps), WALS the same number of ridge values, on a 10%
validation carve of each user's train rows; the winner is refit on train + valid for 5
seeds. The language-split world reuses each method's winner (it is not searched again).

The claims are declared below (`claims`) with their thresholds, before any run; each is
judged on the paired difference over seeds (experiments/report.py's Claim: 95%
t-interval, held / not held / not resolved).
"""

import math

import ml_collections

from experiments.configs import common
from experiments.configs import synthetic

LEARNING_RATES = (0.25, 0.5, 1.0, 2.0)  # Adagrad; every trained method searches these
WALS_REGULARIZATION = (0.03, 0.1, 0.3, 1.0)  # WALS: as many fits as the others' trials

# Labels, used by the runner and the claims.
POP, WALS, MF, MF_POS = "popularity", "WALS", "MF sampled", "MF positive-only"
DNN, DNN_POS, DNN_FEAT = "DNN sampled", "DNN positive-only", "DNN + features sampled"


def methods(features: dict, rates=LEARNING_RATES, ridges=WALS_REGULARIZATION):
  """(label, fixed overrides, space). `features`: the data.* keys of the features files
  (the runner writes them into the workdir)."""
  lr = {"train.learning_rate": tuple(rates)}
  pos = {"loss.name": "positive_only"}
  return (
      (POP, {"model.name": "popularity"}, {}),
      (WALS, {"model.name": "wals"}, {"model.regularization": tuple(ridges)}),
      (MF, {"model.name": "mf"}, lr),
      (MF_POS, {"model.name": "mf", **pos}, lr),
      (DNN, {}, lr),
      (DNN_POS, dict(pos), lr),
      (DNN_FEAT, dict(features), lr),
  )


# Methods trained on the language-split world (claim 2), with the winners found above.
SPLIT_METHODS = (WALS, MF, MF_POS, DNN, DNN_POS)


def claims() -> list[dict]:
  """The four claims as paired statistics (the runner's rows: strategy = "world/method"
  for quality, "mf@N" / "dnn@N" for timing; metric names as in its report)."""

  claim = common.claim
  out = []
  # 1. MF scales more easily and its queries are cheaper: at the largest catalogue, the
  # DNN's training step and its query embedding take longer than MF's, and serving (query
  # + top-K over the catalogue) costs at least 5% more. Statistic: the log of the per-round
  # ratio DNN / MF (a ratio of two noisy times is skewed; its log is not).
  out += [
      claim("1a. a DNN training step costs more than an MF step", "log_step_ratio", "largest", ">"),
      claim("1b. a DNN query embedding costs more than MF's", "log_query_ratio", "largest", ">"),
      claim(
          "1c. serving (query + top-K over the catalogue) costs >= 5% more with the DNN",
          "log_serve_ratio",
          "largest",
          ">",
          math.log(1.05),
      ),
  ]
  # 2. MF is less prone to folding: in each world, under each training (positive-only;
  # sampled softmax; MF's own WALS against the DNN's sampled softmax) MF's
  # cross_group@20 is below the DNN's.
  for w in ("synthetic", "language_split"):
    out += [
        claim(
            f"2. {w}: positive-only MF folds less than positive-only DNN",
            "cross_group@20",
            f"{w}/{MF_POS}",
            "<",
            0.0,
            f"{w}/{DNN_POS}",
        ),
        claim(
            f"2. {w}: sampled MF folds no more than the sampled DNN (+0.01)",
            "cross_group@20",
            f"{w}/{MF}",
            "<",
            0.01,
            f"{w}/{DNN}",
        ),
        claim(
            f"2. {w}: WALS folds no more than the sampled DNN (+0.01)",
            "cross_group@20",
            f"{w}/{WALS}",
            "<",
            0.01,
            f"{w}/{DNN}",
        ),
    ]
  # 3. The DNN with query features captures preferences better: it beats the DNN without
  # them and MF, on full-ranking recall@20 and on NDCG@10 within the first stage's top 100.
  s = "synthetic/"
  for metric in ("recall@20", "candidate_ndcg@10"):
    out += [
        claim(f"3. features help the DNN ({metric})", metric, s + DNN_FEAT, ">", 0.0, s + DNN),
        claim(
            f"3. the DNN with features beats MF ({metric})", metric, s + DNN_FEAT, ">", 0.0, s + MF
        ),
    ]
  # 4. Folding is acceptable when ranking a candidate set pre-filtered to the user's own
  # group: there the folded (positive-only) DNN reaches 0.9 x the unfolded DNN's NDCG@10
  # (on the whole catalogue it does not).
  out += [
      claim(
          "4. in the own-group candidate set the folded DNN reaches 0.9 x the unfolded one",
          "group_ndcg@10",
          s + DNN_POS,
          ">",
          0.0,
          s + DNN,
          0.9,
      ),
      claim(
          "4. (contrast) on the whole catalogue it does not reach 0.9 x",
          "ndcg@10",
          s + DNN_POS,
          "<",
          0.0,
          s + DNN,
          0.9,
      ),
  ]
  return out


# Why a verdict differs from the course, by the claim's text prefix: report.md prints the
# paragraph under a claim that is not held. Written after a measured run (docs/RESULTS.md
# has its numbers and the diagnostics behind each paragraph).
EXPLANATIONS = {
    "1c.": (
        "serving here is the exact top-K over the whole catalogue, the same computation "
        "for both models: at a million items it takes ~0.5 s for a batch of 128 queries, "
        "while the query embeddings differ by ~0.1 ms (0.02% of it). The measured serving "
        "ratio is the timer's bias between two processes timing the same work; it came out "
        "at 0.98x and 1.05x in two runs on this box, so a 5% difference cannot be resolved "
        "and the cheaper MF query does not reach serving cost. The course's point holds for "
        "the query embedding (1b) and for training (1a); it reaches serving only when the "
        "top-K is cheap (approximate search, small catalogues)."
    ),
    "4.": (
        "the positive-only DNN here does not merely fold: its query tower collapses, every "
        "user getting nearly the same query (mean cosine to the mean query direction 0.9999 "
        "in the recorded run, against 0.15 for the sampled DNN), so it ranks the items of "
        "the user's own group no better than chance (Spearman correlation of its scores with "
        "in-group popularity 0.04, while popularity alone gets NDCG@10 0.19 within the "
        "group). Pre-filtering to the group removes the cross-group mistakes but cannot give "
        "back the personalisation the collapse lost; 'folding is acceptable' presumes a "
        "model that ranks well inside each group, which positive-only training of a shared "
        "tower does not produce."
    ),
}


def get_config(arg=None):
  v = common.parse_arg(arg, quick=False)
  c = synthetic.get_config()
  c.data.seed = 0  # one world and split; the seeds vary initialisation and sampling
  common.no_checkpoints(c)
  c.eval.save_embeddings = True  # the runner ranks candidate sets from embeddings.npz
  c.mvd = ml_collections.ConfigDict()
  c.mvd.interest_noise = 0.3  # P(a user's `interest` feature is a random topic)
  c.mvd.split_copies = 4  # claim 2's language split: copies, data seed, Zipf exponent
  c.mvd.split_seed = 1
  c.mvd.split_zipf = 0.7
  c.mvd.candidates = 100  # claim 3: the first stage's (WALS) top-N per user
  c.mvd.ndcg_k = 10
  # Claim 1: catalogue sizes, timing rounds (the "seeds" of its interval), the least
  # seconds of a timed block (experiments/mf_vs_dnn.per_call), the served batch and K.
  c.mvd.sizes = (10_000, 100_000, 1_000_000)
  c.mvd.timing_users = 2000
  c.mvd.timing_rounds = 10
  c.mvd.timing_block_seconds = 0.2
  c.mvd.serve_block_seconds = 1.0  # a serve at a million items takes ~0.5 s
  c.mvd.serve_batch = 128
  c.mvd.serve_k = 100
  c.tune = common.tune(
      methods({}),  # the runner puts in the features files' keys
      title="MF vs the softmax DNN (synthetic world), tuned on validation",
      select="valid/recall@20",
      trials=len(LEARNING_RATES),
      mode="grid",
      seeds=(0, 1, 2, 3, 4),
  )
  if v.quick:  # a smoke run: one seed, one trial (no search), short training, two sizes
    common.quick_steps(c, 500)
    c.tune.methods = common.tune(methods({}, (0.5,), (0.1,)), title="").methods
    c.tune.seeds, c.tune.trials = (0,), 1
    c.mvd.sizes = (10_000, 100_000)
    c.mvd.timing_rounds = 1
    c.mvd.timing_block_seconds = c.mvd.serve_block_seconds = 0.05
  return c

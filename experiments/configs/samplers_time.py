"""The samplers at equal training time on real data (ml-latest-small).

Command:
  python -m experiments.sweep --config=experiments/configs/samplers_time.py \
      --workdir=runs/samplers_time [--config.data.path=DIR/ml-latest-small]
Every run trains for the same budget of training time, train.max_seconds = 180 s (the
first, compiling step and the validation evaluations not counted), evaluating validation
recall@20 every 30 s of it; test is scored at the best validation evaluation. About 4
minutes a run with compilation, data and evaluations: 7 strategies x 3 seeds ~ 85 minutes
on 2 cores; an interrupted sweep resumes. Variant `:quick`: one seed, 20 s budgets (a
smoke run, ~3 minutes). Budgets in seconds make the step counts depend on the machine and
its load: results.json records them; run it on an otherwise idle box.

Setting: the softmax DNN that won ml-latest-small's search on validation (its `tune`
variant, configs/movielens.py: linear tower over a bag of 64 history items, D = 256,
cosine / T 0.14, Adagrad lr 1.0, batches of 256), each sampler with K = 256 negatives
(in-batch: the batch's 256 positives); 10% of each user's train rows held out,
validation recall@20 over every validation user. Not tuned per sampler: one shared
setting, the in-batch winner's. The kernel sampler (alpha 100, leaves of 128) draws from
the [B, N] kernel here, not from its tree (`samplers.kernel_direct`: N = 9,742 <= K L =
32,768; the tree's D x D Gramians, F = 32,896 floats a node at D = 256, made it ~2 s a
step).

summary.md's "Quality against training time" draws the curves and the equal-budget table.
Claims (declared here before the run): issue 24's, the negative cache reaches at least
in-batch + log-Q's test recall@20 within 0.01 at equal time; and the full softmax does too.
"""

from experiments.configs import common
from experiments.configs import movielens

BUDGET_SECONDS = 180.0  # training seconds per run
EVALUATIONS = 6  # validation evaluations per budget
SAMPLERS = ("in_batch", "uniform", "hard_pool", "hard_exact", "neg_cache", "kernel")


def strategies():
  """(label, overrides): the full softmax and each sampler with log-Q."""
  out = [("full_softmax", {"loss.name": "full"})]
  for name in SAMPLERS:
    over = {"loss.name": "sampled", "sampler.name": name}
    if name == "in_batch":  # as the winner's recorded trials ran
      over["sampler.correct_positive"] = False
    out.append(("in_batch+logq" if name == "in_batch" else name, over))
  return out


def get_config(arg=None):
  v = common.parse_arg(arg, quick=False)
  c = movielens.get_config("tune")
  with c.unlocked():
    del c["tune"]
  # the in-batch DNN's winner on validation (records/ml_tune)
  c.model.dim, c.loss.temperature, c.train.learning_rate = 256, 0.14, 1.0
  c.sampler.num_negatives = 256
  c.train.steps = 1_000_000  # not reached: the time budget stops every run
  c.train.max_seconds = BUDGET_SECONDS
  c.train.log_every = 10  # the budget and the evaluations are checked at the log lines
  common.no_checkpoints(c)
  c.data.valid_fraction = 0.1
  c.eval.every, c.eval.every_seconds = 0, BUDGET_SECONDS / EVALUATIONS
  c.eval.patience, c.eval.select, c.eval.num_users = 0, "valid/recall@20", 0
  c.sweep = common.sweep(
      "samplers at equal time",
      strategies(),
      title=f"Samplers at equal training time, {BUDGET_SECONDS:g} s each (ml-latest-small)",
      metrics=("recall@20", "ndcg@20", "test_softmax_loss"),
      analysis="report.standard_plots",
      claims=tuple(
          dict(
              text=f"{a} reaches in_batch+logq's recall at equal time (within 0.01)",
              metric="recall@20",
              a=a,
              op=">",
              threshold=-0.01,
              b="in_batch+logq",
          )
          for a in ("neg_cache", "full_softmax")
      ),
  )
  c.sweep.requires = ("ratings.csv",)
  if v.quick:
    c.train.max_seconds, c.eval.every_seconds = 20.0, 5.0
    c.sweep.seeds = (0,)
  return c

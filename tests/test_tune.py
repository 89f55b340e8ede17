"""experiments.tune: the search reads validation only, picks the best trial per method,
reruns it over seeds (refit on train + valid for the selected epochs), and resumes."""

import csv
import json
import math
import os

import ml_collections
import numpy as np
import pytest
from scipy import stats

from experiments import sweep, tune
from experiments.configs import common, synthetic


def _config(trials=3, refit=True, mode="grid"):
  c = synthetic.get_config()
  c.data.update(num_users=300, num_items=200, interactions_per_user=12)
  c.model.update(name="mf", dim=8)
  c.train.update(steps=200, batch_size=64, log_every=50)
  common.no_checkpoints(c)
  c.sampler.num_negatives = 16
  c.eval.update(every=50, ks=(10,))
  c.tune = common.tune(
      (
          ("pop", {"model.name": "popularity"}, {}),
          ("mf", {}, {"train.learning_rate": (0.01, 0.3, 1.0), "model.dim": (4, 8)}),
      ),
      title="tiny",
      select="valid/recall@10",
      trials=trials,
      mode=mode,
      valid_fraction=0.2,
      seeds=(0, 1),
      refit=refit,
  )
  return c


def test_points_grid_and_random():
  space = {"b": (1, 2), "a": ("x", "y", "z")}
  grid = tune.points(space, "grid", 10, 0)
  assert len(grid) == 6 and grid[0] == (("a", "x"), ("b", 1))
  assert tune.points(space, "grid", 4, 0) == grid[:4]
  r1, r2 = tune.points(space, "random", 4, 0), tune.points(space, "random", 4, 0)
  assert r1 == r2 and len(set(r1)) == 4 and set(r1) <= set(grid)
  assert tune.points(space, "random", 4, 1) != r1 or True  # other seeds may coincide
  assert tune.points({}, "random", 5, 0) == [()]


_CLAIM = dict(text="mf finds held-out items", metric="recall@10", a="mf", op=">", threshold=0.0)


def test_tune_picks_best_on_valid_and_reruns_with_refit(tmp_path):
  cfg = _config()
  cfg.tune.claims = (_CLAIM,)
  out = tune.run(cfg, str(tmp_path), log=lambda *_: None)
  m = {x["method"]: x for x in out["methods"]}
  assert m["pop"]["num_trials"] == 1 and m["mf"]["num_trials"] == 3
  assert m["pop"]["seeds"] == [0] and m["mf"]["seeds"] == [0, 1]  # popularity ignores seeds
  # the winner is the trial with the best valid metric among the trial results on disk
  vals = {}
  for d in sorted(os.listdir(tmp_path / "trials" / "mf")):
    if not os.path.isdir(tmp_path / "trials" / "mf" / d):
      continue
    with open(tmp_path / "trials" / "mf" / d / "seed_0" / "results.json") as f:
      res = json.load(f)
    vals[d] = (res["valid"]["recall@10"], res["run"]["selected_step"], res["config"])
    # a trial never evaluates its test pairs
    assert res["metrics"] == {} and res["run"]["test_evaluated"] is False
  best = max(vals, key=lambda d: vals[d][0])
  assert m["mf"]["best_valid"]["recall@10"] == vals[best][0]
  assert m["mf"]["selected_step"] == vals[best][1]
  # every trial saw the carve and selected on it; none of them changed the data seed
  assert all(
      v[2]["data"]["valid_fraction"] == 0.2 and v[2]["data"]["seed"] == 0 for v in vals.values()
  )
  # final runs: refit (no carve), the selected epochs, the seeds; test mean over them
  finals = []
  for s in (0, 1):
    with open(tmp_path / "final" / "mf" / "final" / f"seed_{s}" / "results.json") as f:
      finals.append(json.load(f))
  steps = math.ceil(vals[best][1] / 0.8)
  for s, res in zip((0, 1), finals):
    assert res["config"]["data"]["valid_fraction"] == 0.0 and res["config"]["seed"] == s
    assert res["config"]["train"]["steps"] == steps and res["valid"] == {}
    assert res["run"]["test_evaluated"] is True and "recall@10" in res["metrics"]
  mean = sum(r["metrics"]["recall@10"] for r in finals) / 2
  assert m["mf"]["test"]["recall@10"]["mean"] == pytest.approx(mean)
  assert m["mf"]["test"]["recall@10"]["n"] == 2
  # the declared claim, judged on the final runs: mean -/+ t(0.975, 1) std / sqrt(2)
  recalls = np.array([r["metrics"]["recall@10"] for r in finals])
  half = stats.t.ppf(0.975, 1) * recalls.std(ddof=1) / np.sqrt(2)
  (claim,) = out["claims"]
  assert claim["n"] == 2 and claim["mean"] == pytest.approx(mean)
  assert claim["lower"] == pytest.approx(mean - half) and claim["upper"] == pytest.approx(
      mean + half
  )
  want = "held" if mean - half > 0 else "not resolved at 2 seeds"
  assert claim["verdict"] == want
  report = (tmp_path / "report.md").read_text()
  assert "| mf | 3 x 200 |" in report and "| pop | 1 fits |" in report
  assert "## Claims" in report and "| mf finds held-out items | recall@10: mf > 0 |" in report
  # quality against time: the winning trial's validation curve, read back from its
  # metrics.jsonl; at the full budget each method shows its last evaluation
  assert "## Quality against training time" in report
  assert (tmp_path / "quality_vs_time.png").exists()
  with open(tmp_path / "trials" / "mf" / best / "seed_0" / "metrics.jsonl") as f:
    curve = [json.loads(line) for line in f if "valid/recall@10" in line]
  (row,) = [r for r in report.splitlines() if r.startswith("| mf | ") and r.count("|") == 6]
  assert row.split(" | ")[3] == f"{curve[-1]['valid/recall@10']:.3f}"
  # trials.csv holds validation only
  header = (tmp_path / "trials.csv").read_text().splitlines()[0]
  assert "valid/recall@10" in header and "test/" not in header
  # rerun: everything found finished, same answer
  again = tune.run(_config(), str(tmp_path), log=lambda *_: None)
  assert again["methods"][1]["test"] == out["methods"][1]["test"]


def test_bad_tune_sections():
  c = _config()
  c.tune.mode = "bayes"
  with pytest.raises(sweep.ConfigError, match="tune.mode='bayes'"):
    tune.check(c)
  c = _config()
  c.tune.methods = (("mf", {}, {"train.nope": (1,)}),)
  with pytest.raises(sweep.ConfigError, match="unknown config key 'train.nope'"):
    tune.check(c)
  c = _config()
  c.tune.only = "mf,nope"
  with pytest.raises(sweep.ConfigError, match="tune.only: unknown nope; choose from pop, mf"):
    tune.check(c)
  c.tune.only = "mf"
  assert [m.label for m in tune.methods(*tune.check(c))] == ["mf"]
  c = _config()
  c.tune.claims = ({**_CLAIM, "b": "nope"},)
  with pytest.raises(sweep.ConfigError, match="tune.claims name no method: nope"):
    tune.check(c)
  c.tune.claims = ({**_CLAIM, "op": ">="},)
  with pytest.raises(sweep.ConfigError, match="tune.claims"):
    tune.check(c)
  c = _config()
  c.tune.analysis = "sampled_metrics.nope"
  with pytest.raises(sweep.ConfigError, match="no function 'sampled_metrics.nope'"):
    tune.check(c)
  with pytest.raises(sweep.ConfigError, match="no tune section"):
    tune.check(synthetic.get_config())


def _protocol_variant(module, tmp_path):
  """module.get_config("tune") checked (every trial config and the claims' labels, without
  reading data: data.path only has to exist) -> (tune section, {label: Method}), after
  asserting that every searched method gets the same 3 trials."""
  c = module.get_config("tune")
  c.data.path = str(tmp_path)
  base, spec = tune.check(c)
  ms = {m.label: m for m in tune.methods(base, spec)}
  assert {len(m.points) for label, m in ms.items() if label != "popularity"} == {3}
  return spec, ms


def test_the_logq_tune_variant_gives_every_arm_the_same_budget_and_judges_pairs(tmp_path):
  """configs/logq.py:tune: 3 trials for every searched arm, claims over its own arms (the
  check validates every trial config and the claims' labels without reading data)."""
  from experiments.configs import logq

  spec, ms = _protocol_variant(logq, tmp_path)
  assert len(spec.claims) == 2 * len(logq.TEMPERATURES)
  for claim in spec.claims:
    assert claim["a"].endswith(",logq") and claim["b"] in ms and claim["threshold"] == 0.0
  betas = [dict(p)["eval.logp_bias"] for p in ms[logq.serving_label(0.07)].points]
  assert betas == [0.035, 0.07, 0.14]


def test_the_gravity_mf_tune_variant_gives_every_arm_the_same_budget(tmp_path):
  from experiments.configs import gravity_mf

  spec, _ = _protocol_variant(gravity_mf, tmp_path)
  assert [(cl["a"], cl["b"]) for cl in spec.claims] == [
      (label, "observed_only") for label, _ in gravity_mf.ARMS[1:]
  ]


def test_the_hard_negatives_tune_variant_gives_every_arm_the_same_budget(tmp_path):
  from experiments.configs import hard_negatives as hn

  spec, ms = _protocol_variant(hn, tmp_path)
  assert ms[hn.FULL].base.loss.name == "full" and ms[hn.EXACT].base.sampler.name == "hard_exact"
  assert {cl["a"] for cl in spec.claims} <= set(ms) and {cl["b"] for cl in spec.claims} <= set(ms)


def test_the_folding_tune_variant_searches_each_arms_learning_rate_alike(tmp_path):
  """configs/folding_movielens.py:tune (issue 22, item 4): every trained arm searches the
  same three Adam rates (the full softmax's dense Adam and the samplers' lazy Adam each
  get their best); the claims name only the tuned arms, and the held-out loss claims put
  the full softmax below hard_exact and unigram."""
  from experiments.configs import folding, folding_movielens

  spec, ms = _protocol_variant(folding_movielens, tmp_path)
  for label in folding.TUNE_ARMS:
    assert ms[label].base.train.optimizer == "adam", label
    rates = sorted(dict(p)["train.learning_rate"] for p in ms[label].points)
    assert rates == [0.001, 0.003, 0.01], label
  assert ms["full_softmax"].base.loss.name == "full"
  assert ms["hard_exact"].base.sampler.name == "hard_exact"
  named = {x for cl in spec.claims for x in (cl["a"], cl["b"]) if x}
  assert named <= set(folding.TUNE_ARMS)
  loss = [(cl["a"], cl["op"], cl["b"]) for cl in spec.claims if cl["metric"] == "test_softmax_loss"]
  assert loss == [("full_softmax", "<", "hard_exact"), ("full_softmax", "<", "unigram0.75")]


def test_the_sampled_metrics_tune_variant_searches_every_model_alike(tmp_path):
  """configs/sampled_metrics.py:tune: the sweep's models under their labels, 3 trials
  each, the hit-rate analysis named, and the declared reordering claims over its models."""
  from experiments.configs import sampled_metrics

  spec, ms = _protocol_variant(sampled_metrics, tmp_path)
  assert list(ms) == ["popularity", "EASE", "mf_d8", "mf_d32", "mf_d128", "softmax_dnn", "wals"]
  for label in ("mf_d8", "mf_d32", "mf_d128", "softmax_dnn"):
    assert [dict(p)["train.learning_rate"] for p in ms[label].points] == [0.25, 0.5, 1.0]
  assert ms["mf_d128"].base.model.dim == 128 and ms["wals"].base.model.name == "wals"
  assert spec.analysis == "sampled_metrics.tune_analysis" and spec.select == "valid/recall@10"
  assert [(cl["a"], cl["metric"], cl["b"]) for cl in spec.claims] == [
      ("wals", "recall@10", "mf_d8"),
      ("mf_d8", "sampled_hr@10", "wals"),
  ]


def test_tune_runs_the_analysis_hook_and_judges_claims_on_what_it_adds(tmp_path):
  """configs/sampled_metrics.py:tune on a tiny MovieLens file (popularity, EASE and one MF,
  one trial, 2 seeds): every final row gets full_hr@10 and sampled_hr@10 from the hook;
  EASE's full HR equals a brute-force count over its own closed-form scores (numpy);
  the claim on sampled_hr@10 is judged; report.md has the rankings."""
  from experiments.configs import sampled_metrics as cfg_module
  from jaxrec import baselines, evaluate
  from jaxrec import config as config_lib
  from test_ablations_small import tiny, write_tiny_movielens

  data = write_tiny_movielens(tmp_path / "ml")
  c = tiny(
      cfg_module.get_config("tune"),
      data,
      **{"model.dim": 8, "sweep.num_negatives": 20, "eval.every": 20},
  )
  c.tune.only, c.tune.trials, c.tune.seeds = "popularity,EASE,mf_d8,wals", 1, (0, 1)
  c.model.iterations = 2
  wd = str(tmp_path / "t")
  out = tune.run(c, wd, log=lambda *_: None)
  with open(os.path.join(wd, "final.csv")) as f:
    final = {(r["method"], int(r["seed"])): r for r in csv.DictReader(f)}
  assert set(final) == {
      ("popularity", 0),
      ("EASE", 0),
      ("mf_d8", 0),
      ("mf_d8", 1),
      ("wals", 0),
      ("wals", 1),
  }
  for r in final.values():
    assert 0.0 <= float(r["test/full_hr@10"]) <= float(r["test/sampled_hr@10"]) <= 1.0
  # EASE: brute force over its scores on the final run's own split (refit: no carve)
  with open(os.path.join(wd, "final", "EASE", "final", "seed_0", "results.json")) as f:
    rc = ml_collections.ConfigDict(json.load(f)["config"])
  splits = sweep.load_data(rc.data, config_lib.data_seed(rc))
  known = evaluate.known_pairs(splits.train, splits.valid)
  n = known.num_items
  s = baselines.fit_ease(rc, splits.train).scores(np.arange(known.num_users))
  seen = set(zip(known.user_ids.tolist(), known.item_ids.tolist())) | set(
      zip(splits.test.user_ids.tolist(), splits.test.item_ids.tolist())
  )
  known_set = set(zip(known.user_ids.tolist(), known.item_ids.tolist()))
  test_pairs = sorted(
      set(zip(splits.test.user_ids.tolist(), splits.test.item_ids.tolist())) - known_set
  )
  hits = [
      sum(s[u, j] >= s[u, i] for j in range(n) if (u, j) not in seen) < 10 for u, i in test_pairs
  ]
  assert float(final[("EASE", 0)]["test/full_hr@10"]) == pytest.approx(np.mean(hits))
  judged = {cl["claim"]: cl for cl in out["claims"]}
  assert len(judged) == 2 and all(cl["verdict"] for cl in judged.values())
  text = open(os.path.join(wd, "report.md")).read()
  assert "## Sampled against full-ranking metrics" in text and "Kendall tau" in text
  for f in ("metrics_bars.png", "full_vs_sampled.png"):
    assert os.path.getsize(os.path.join(wd, f)) > 0


def test_the_negatives_vs_quality_tune_variant_and_its_analysis(tmp_path):
  """configs/negatives_vs_quality.py:tune: the full softmax and every sampler x K x log-Q
  with K defined, 3 lr trials each, the declared loss claims; tune_analysis parses the
  arms' labels back into the sweep's checks and tables (hand-made final rows: uniform
  closes the gap to the full softmax as K grows, unigram's log-Q lowers the loss)."""
  from experiments import negatives_vs_quality as nvq
  from experiments.configs import negatives_vs_quality as cfg

  spec, ms = _protocol_variant(cfg, tmp_path)
  arms = [x for x in ms if x.count(",") == 2]
  assert len(arms) == len(cfg.SAMPLERS) * len(cfg.TUNE_KS) * 2
  assert ms["in_batch,K=128,logq"].base.sampler.batch_negatives == 128
  assert [dict(p)["train.learning_rate"] for p in ms["full_softmax"].points] == [2.0, 4.0, 8.0]
  halved = cfg.get_config("tune,lr_low=1.0")
  halved.data.path = str(tmp_path)
  full = {m.label: m for m in tune.methods(*tune.check(halved))}["full_softmax"]
  assert [dict(p)["train.learning_rate"] for p in full.points] == [1.0, 2.0, 4.0]
  assert ms["full_softmax"].base.train.steps == cfg.TUNE_STEPS
  assert len(spec.claims) == len(cfg.SAMPLERS) + len(cfg.POPULARITY_LIKE)
  assert spec.analysis == "negatives_vs_quality.tune_analysis"

  def row(method, seed, loss, recall):
    return {
        "method": method,
        "seed": seed,
        "test": {"test_softmax_loss": loss, "recall@20": recall, "ndcg@20": recall / 2},
    }

  rows = []
  for seed in (0, 1):
    rows += [
        row("full_softmax", seed, 8.0 + 0.01 * seed, 0.30),
        row("uniform,K=4,logq", seed, 9.0, 0.20),
        row("uniform,K=128,logq", seed, 8.2, 0.28),
        row("unigram,K=4,logq", seed, 8.5, 0.25),
        row("unigram,K=128,logq", seed, 8.1, 0.29),
        row("unigram,K=128,no_logq", seed, 8.9, 0.22),
    ]
  lines = nvq.tune_analysis(str(tmp_path), None, rows)
  text = "\n".join(lines)
  assert (
      "PASS: uniform + log-Q: held-out loss gap to full softmax 0.995 at K=4 -> 0.195 at K=128"
      in text
  )
  assert "PASS: log-Q matters for unigram at K=128" in text
  assert os.path.getsize(tmp_path / "negatives_vs_quality.png") > 0


def test_the_wide_negatives_vs_quality_variant_and_the_bias_rate_fit(tmp_path):
  """configs/negatives_vs_quality.py:tune,wide: K from 1 to 4096 for uniform, unigram,
  in-batch (batches of K rows above B = 128) and hard_exact, log-Q on, 3 lr trials each.
  bias_rates on hand-made rows whose gap to the full softmax is c_seed K^-0.7 recovers
  the slope -0.7 at every seed; a K where one seed's gap is <= 0 is left out of the fit, and
  rows without a held-out loss (popularity, EASE) are passed over."""
  from experiments import negatives_vs_quality as nvq
  from experiments.configs import negatives_vs_quality as cfg

  c = cfg.get_config("tune,wide")
  c.data.path = str(tmp_path)
  base, spec = tune.check(c)
  ms = {m.label: m for m in tune.methods(base, spec)}
  assert len(ms) == 3 + len(cfg.WIDE_SAMPLERS) * len(cfg.WIDE_KS)
  assert {len(m.points) for label, m in ms.items() if label != "popularity"} == {3}
  big = ms["in_batch,K=4096,logq"].base
  assert big.train.batch_size == 4096 and big.sampler.batch_negatives == 4096
  assert ms["in_batch,K=64,logq"].base.train.batch_size == 128
  assert ms["uniform,K=4096,logq"].base.sampler.num_negatives == 4096
  # labels with commas are picked with ";"
  c.tune.only = "in_batch,K=4,logq;in_batch,K=1024,logq"
  picked = [m.label for m in tune.methods(*tune.check(c))]
  assert picked == ["in_batch,K=4,logq", "in_batch,K=1024,logq"]
  assert [(cl["a"], cl["b"]) for cl in spec.claims][0] == (
      "uniform,K=4096,logq",
      "uniform,K=1,logq",
  )

  rows = []
  for seed, scale in ((0, 1.0), (1, 1.5), (2, 0.8)):
    # the popularity and EASE rows have no held-out softmax loss
    rows.append({"method": "popularity", "seed": seed, "test": {"recall@20": 0.1}})
    rows.append({"method": "full_softmax", "seed": seed, "test": {"test_softmax_loss": 8.0}})
    for k in (1, 4, 16, 64):
      gap = scale * k**-0.7
      rows.append(
          {"method": f"uniform,K={k},logq", "seed": seed, "test": {"test_softmax_loss": 8.0 + gap}}
      )
      # hard_exact: below the full softmax at K = 64 on seed 1, so K = 64 is not fitted
      gap_h = -0.01 if (k == 64 and seed == 1) else 0.5 * k**-0.3
      rows.append(
          {
              "method": f"hard_exact,K={k},logq",
              "seed": seed,
              "test": {"test_softmax_loss": 8.0 + gap_h},
          }
      )
  fits = {f["sampler"]: f for f in nvq.bias_rates(rows, ("uniform", "hard_exact"), (1, 4, 16, 64))}
  np.testing.assert_allclose(fits["uniform"]["slopes"], [-0.7] * 3, atol=1e-9)
  assert fits["uniform"]["ks"] == [1, 4, 16, 64]
  np.testing.assert_allclose(fits["hard_exact"]["slopes"], [-0.3] * 3, atol=1e-9)
  assert fits["hard_exact"]["ks"] == [1, 4, 16]
  # without the full-softmax reference (a tune.only subset) there is nothing to fit
  assert (
      nvq.bias_rates([r for r in rows if r["method"] != "full_softmax"], ("uniform",), (1, 4)) == []
  )
  text = "\n".join(nvq.rates_section(list(fits.values())))
  assert "| uniform | 1, 4, 16, 64 | -0.70, -0.70, -0.70 |" in text


def test_the_popularity_tail_tune_variant_measures_the_tail_on_every_final_run(tmp_path):
  """configs/popularity_tail.py:tune: the three runs search the folding tune's Adam rates;
  on a tiny MovieLens file (1 trial, 2 seeds) the hook adds tail_top20 to each run's final
  row, equal to a brute-force count of top-20 slots on items seen 1-4 times (numpy, from
  the run's embeddings and its own train rows), adds the unigram push measures, and every
  declared claim is judged over both seeds."""
  from experiments import popularity_tail as pt
  from experiments.configs import popularity_tail as cfg_module
  from jaxrec import config as config_lib
  from test_ablations_small import tiny, write_tiny_movielens

  spec, ms = _protocol_variant(cfg_module, tmp_path)
  assert list(ms) == ["popularity", "EASE", *pt.RUNS]
  for label in pt.RUNS:
    assert [dict(p)["train.learning_rate"] for p in ms[label].points] == [0.001, 0.003, 0.01]
  assert ms["unigram0.75"].base.sampler.num_negatives == 64
  assert spec.analysis == "popularity_tail.tune_analysis"
  assert {x for cl in spec.claims for x in (cl["a"], cl["b"]) if x} <= set(pt.RUNS)

  data = write_tiny_movielens(tmp_path / "ml")
  c = tiny(
      cfg_module.get_config("tune"),
      data,
      **{"model.dim": 8, "sampler.num_negatives": 16, "sweep.push_ks": (4,), "eval.every": 20},
  )
  c.tune.only, c.tune.trials, c.tune.seeds = (
      "popularity,full_softmax,uniform,unigram0.75",
      1,
      (0, 1),
  )
  wd = str(tmp_path / "t")
  out = tune.run(c, wd, log=lambda *_: None)
  with open(os.path.join(wd, "final.csv")) as f:
    final = {(r["method"], int(r["seed"])): r for r in csv.DictReader(f)}
  for run in pt.RUNS:
    for seed in (0, 1):
      run_dir = os.path.join(wd, "final", sweep.slug(run), "final", f"seed_{seed}")
      with open(os.path.join(run_dir, "results.json")) as f:
        rc = ml_collections.ConfigDict(json.load(f)["config"])
      train = sweep.load_data(rc.data, config_lib.data_seed(rc)).train
      z = np.load(os.path.join(run_dir, "embeddings.npz"))
      s = z["query"].astype(np.float64) @ z["items"].astype(np.float64).T
      s[train.user_ids, train.item_ids] = -np.inf
      top = np.argsort(-s, axis=1, kind="stable")[:, :20]
      counts = np.bincount(train.item_ids, minlength=train.num_items)
      expected = np.mean((counts[top] >= 1) & (counts[top] <= 4))
      assert float(final[(run, seed)]["test/tail_top20"]) == pytest.approx(expected, abs=1e-9)
  for seed in (0, 1):
    r = final[("unigram0.75", seed)]
    rare, head = float(r["test/push_rare"]), float(r["test/push_head"])
    assert rare > 0.0  # head is nan here: no item of the tiny file is seen >= 20 times
    np.testing.assert_allclose(float(r["test/push_rare_minus_head"]), rare - head)
  assert len(out["claims"]) == len(spec.claims) == 6
  # every claim judged over both seeds, but the head one: nan push_head is no measurement
  assert [cl["n"] for cl in out["claims"]] == [2, 2, 2, 0, 2, 2]
  assert out["claims"][3]["verdict"] == "not run"
  text = open(os.path.join(wd, "report.md")).read()
  assert "## The long tail" in text and "| unigram, K=16 |" in text
  assert os.path.getsize(os.path.join(wd, "popularity_tail.png")) > 0

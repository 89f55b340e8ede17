"""experiments.mf_vs_dnn: ranking within a set, the features written from the world's
ground truth, and the whole command on a tiny world."""

import csv
import json
import os

import numpy as np
import pytest

from experiments import mf_vs_dnn, report, sweep
from experiments.configs import mf_vs_dnn as cfg
from jaxrec import metrics
from jaxrec.data import Interactions, features, synthetic
import tiny


def _pairs(users, items, U, N):
  return Interactions(np.asarray(users), np.asarray(items), U, N)


def test_ndcg_within_by_hand():
  """One user, items 0..5 scored 5..0; train {0}; test {2, 4}; k = 3. Allowed everything:
  the top 3 are items 1, 2, 3, so item 2 at 0-based rank 1: DCG = 1/log2(3), IDCG = 1 +
  1/log2(3) (two relevant). Allowed {3, 4, 5}: item 4 at rank 1 again, DCG = 1/log2(3),
  one relevant allowed: IDCG = 1."""
  s = np.array([[5.0, 4, 3, 2, 1, 0]])
  train, test = _pairs([0], [0], 1, 6), _pairs([0, 0], [2, 4], 1, 6)
  v, n = mf_vs_dnn.ndcg_within(s, np.ones((1, 6), bool), train, test, 3)
  assert n == 1
  np.testing.assert_allclose(v, (1 / np.log2(3)) / (1 + 1 / np.log2(3)))
  allowed = np.array([[False, False, False, True, True, True]])
  v, n = mf_vs_dnn.ndcg_within(s, allowed, train, test, 3)
  np.testing.assert_allclose(v, 1 / np.log2(3))
  # a user with no test item in the set is left out
  v, n = mf_vs_dnn.ndcg_within(s, np.eye(1, 6, 5, dtype=bool), train, test, 3)
  assert n == 0 and np.isnan(v)


def test_ndcg_within_everything_matches_jaxrec_metrics():
  """Allowed = the whole catalogue: the same NDCG@10 as jaxrec.metrics.evaluate (an
  independent implementation) on random embeddings (no ties)."""
  rng = np.random.default_rng(0)
  U, N, D = 60, 80, 6
  q, v = rng.normal(size=(U, D)).astype(np.float32), rng.normal(size=(N, D)).astype(np.float32)
  pairs = [(u, i) for u in range(U) for i in rng.choice(N, 12, replace=False)]
  users, items = np.array(pairs).T
  is_test = rng.random(users.size) < 0.3
  train = _pairs(users[~is_test], items[~is_test], U, N)
  test = _pairs(users[is_test], items[is_test], U, N)
  ours, n = mf_vs_dnn.ndcg_within(q @ v.T, np.ones((U, N), bool), train, test, 10)
  ref = metrics.evaluate(q, v, train, test, ks=(10,))
  assert n == np.unique(test.user_ids).size
  np.testing.assert_allclose(ours, ref["ndcg@10"], rtol=1e-5)


def test_top_n_skips_train_items():
  s = np.array([[9.0, 8, 7, 6, 5], [1, 2, 3, 4, 5]])
  train = _pairs([0, 1], [0, 4], 2, 5)
  got = mf_vs_dnn.top_n(s, train, 2)
  np.testing.assert_array_equal(got, [[0, 1, 1, 0, 0], [0, 0, 1, 1, 0]])


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_features_are_the_worlds_ground_truth(tmp_path, noise):
  """country = the user's language and item language/topic exactly; interest = the topic,
  replaced by a uniform topic w.p. `noise`, so it differs w.p. noise (T-1)/T: with
  U = 2,000 a binomial share within 4 sd of that."""
  c = cfg.get_config()
  keys = mf_vs_dnn.write_features(str(tmp_path), c.data, noise)
  world, ut, it = synthetic.make_folding_world(
      num_groups=c.data.num_groups,
      num_users=c.data.num_users,
      num_items=c.data.num_items,
      interactions_per_user=c.data.interactions_per_user,
      seed=0,
      return_topics=True,
  )
  with open(keys["data.user_features"]) as f:
    users = list(csv.DictReader(f))
  with open(keys["data.item_features"]) as f:
    items = list(csv.DictReader(f))
  assert [r["country"] for r in users] == [f"g{g}" for g in world.user_groups]
  assert [r["language"] for r in items] == [f"g{g}" for g in world.item_groups]
  assert [r["topic"] for r in items] == [f"t{t}" for t in it]
  T = it.max() + 1
  differs = np.mean([r["interest"] != f"t{t}" for r, t in zip(users, ut)])
  p = noise * (T - 1) / T
  assert abs(differs - p) <= 4 * np.sqrt(p * (1 - p) / len(users)) + 1e-12
  # read back through jaxrec.data.features as the runs read them
  f = features.read_features(keys["data.user_features"], keys["data.user_feature_types"])
  assert [d.name for d in f.decls] == ["country", "interest"]
  assert [d.size for d in f.decls] == [c.data.num_groups + 1, T + 1]  # + the unknown row


def test_topics_do_not_change_the_world():
  a = synthetic.make_folding_world(num_users=100, num_items=80, interactions_per_user=5)
  b, ut, it = synthetic.make_folding_world(
      num_users=100, num_items=80, interactions_per_user=5, return_topics=True
  )
  np.testing.assert_array_equal(a.item_ids, b.item_ids)
  assert ut.shape == (100,) and it.shape == (80,)
  # a user's own-topic items dominate (topic_affinity 0.8)
  own = np.mean(it[b.item_ids] == ut[b.user_ids])
  assert own > 0.7


def test_per_call_times_a_known_sleep():
  """A 20 ms sleep: per_call within [20 ms, 20 ms + 10 ms of scheduling slack]."""
  import time

  got = mf_vs_dnn.per_call(lambda: time.sleep(0.02), 0.05)
  assert 0.02 <= got < 0.03


def test_quick_argv():
  q = mf_vs_dnn.quick_argv
  assert q(["p", "--quick", "--workdir=w"]) == [
      "p",
      "--workdir=w",
      f"--config={mf_vs_dnn.CONFIG}:quick",
  ]
  assert q(["p", "--config=F.py", "--quick"]) == ["p", "--config=F.py:quick"]
  assert q(["p", "--config=F.py:a"]) == ["p", "--config=F.py:a"]


def _tiny_config():
  """The quick variant on tests/tiny.py's world and model sizes."""
  c = cfg.get_config("quick")
  t = tiny.config()
  with c.unlocked():
    c.data.update({k: t.data[k] for k in ("num_users", "num_items", "interactions_per_user")})
    c.model.update({k: t.model[k] for k in ("dim", "hidden")})
    c.train.update({k: t.train[k] for k in ("steps", "batch_size", "log_every")})
    c.sampler.num_negatives = t.sampler.num_negatives
    c.mvd.candidates = 20
    c.mvd.sizes = (1000, 2000)
    c.mvd.timing_users = 100
    c.mvd.timing_rounds = 2
    c.mvd.timing_block_seconds = c.mvd.serve_block_seconds = 0.01
    c.mvd.serve_batch = 16
    c.mvd.serve_k = 10
  return c


def test_the_command_on_a_tiny_world(tmp_path):
  """Every part runs and writes its files; the report's claims are the config's, judged
  from rows.csv; the whole-catalogue NDCG ranked by the runner matches results.json's; a
  second invocation trains nothing (resumed) and keeps the timing."""
  wd = str(tmp_path / "w")
  out = mf_vs_dnn.run(_tiny_config(), wd, log=lambda s: None)
  for name in ("report.md", "rows.csv", "timing.json", "folding.png", "ranking.png", "timing.png"):
    assert os.path.exists(os.path.join(wd, name)), name
  strategies = {r["strategy"] for r in out["rows"]}
  assert {f"synthetic/{x[0]}" for x in cfg.methods({})} <= strategies
  assert {f"language_split/{x}" for x in cfg.SPLIT_METHODS} <= strategies
  assert "largest" in strategies
  for r in out["rows"]:
    if "ndcg@10" in r and "popularity" not in r["strategy"]:  # popularity ties its scores
      assert abs(r["ndcg@10"] - r["ndcg_within_all@10"]) < 1e-4, r["strategy"]
    if "group_ndcg@10" in r:
      assert 0.0 <= r["group_ndcg@10"] <= 1.0
  # the language-split world is another world: its train data differ
  a = json.load(open(sweep.run_dir(os.path.join(wd, "language_split"), cfg.MF, 0) + "/config.json"))
  assert a["data"]["language_split"] == 4 and a["data"]["seed"] == 1
  text = open(os.path.join(wd, "report.md")).read()
  for j in report.judge(out["rows"], report.parse_claims(cfg.claims())):
    assert j["claim"].text in text
    assert j["verdict"] != "not run", j["claim"].text
  t = json.load(open(os.path.join(wd, "timing.json")))
  assert len(t["seconds"]["dnn"]["2000"]["serve"]) == 2
  mtime = os.path.getmtime(os.path.join(wd, "timing.json"))
  logs = []
  mf_vs_dnn.run(_tiny_config(), wd, log=logs.append)
  assert os.path.getmtime(os.path.join(wd, "timing.json")) == mtime
  assert any("already measured" in s for s in logs)


def test_only_without_the_first_stage_fails_before_any_work(tmp_path):
  """Claim 3 ranks within WALS's top-N: tune.only without WALS is a config error, raised
  before the features or any run is written."""
  c = _tiny_config()
  c.tune.only = f"{cfg.MF},{cfg.DNN}"
  with pytest.raises(sweep.ConfigError, match="WALS"):
    mf_vs_dnn.run(c, str(tmp_path / "w"), log=lambda s: None)
  assert not os.path.exists(tmp_path / "w")

"""config eval.num_users: validation evaluations rank a seeded sample of validation users,
the final test evaluation ranks them all."""

import json

import ml_collections
import numpy as np
import pytest

from experiments import sweep
from experiments.configs import common, synthetic
from jaxrec import config, data, evaluate, metrics, train, workdir


def small_config(**over):
  c = synthetic.get_config()
  c.data.num_users = 300
  c.data.num_items = 200
  c.data.interactions_per_user = 12
  c.data.valid_fraction = 0.2
  c.model.name = "mf"
  c.model.dim = 8
  c.train.steps = 60
  c.train.batch_size = 64
  c.train.log_every = 30
  common.no_checkpoints(c)
  c.sampler.num_negatives = 16
  c.eval.ks = (5, 10)
  c.eval.save_embeddings = True
  return sweep.apply_overrides(c, tuple(over.items()))


def test_sample_is_seeded_without_replacement_from_evaluable_users():
  sp = data.load_data(small_config().data, 0)
  everyone = evaluate.evaluable_users(sp.train, sp.valid)
  # By hand: users with a valid pair that is not a train pair.
  train_keys = set(zip(sp.train.user_ids.tolist(), sp.train.item_ids.tolist()))
  by_hand = sorted(
      {
          u
          for u, i in zip(sp.valid.user_ids.tolist(), sp.valid.item_ids.tolist())
          if (u, i) not in train_keys
      }
  )
  np.testing.assert_array_equal(everyone, by_hand)
  a = evaluate.sample_eval_users(everyone, 50, seed=3)
  assert a.size == 50 and np.unique(a).size == 50 and np.all(np.diff(a) > 0)
  assert np.isin(a, everyone).all()
  np.testing.assert_array_equal(a, evaluate.sample_eval_users(everyone, 50, seed=3))
  assert not np.array_equal(a, evaluate.sample_eval_users(everyone, 50, seed=4))
  # 0 or at least everyone: no sampling.
  assert evaluate.sample_eval_users(everyone, 0, seed=3) is None
  assert evaluate.sample_eval_users(everyone, everyone.size, seed=3) is None


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10", None])
def test_bad_num_users_is_a_config_error(bad):
  c = small_config()
  # A fresh eval section (ConfigDict would refuse a non-int into the int field; a config
  # file can still build one).
  c.eval = ml_collections.ConfigDict({**c.eval.to_dict(), "num_users": bad})
  with pytest.raises(config.ConfigError, match=r"eval.num_users=.* must be an integer >= 0"):
    config.validate_config(c)
  # --config.eval.num_users=-1 through the flags' override path, too.
  if bad == -1:
    with pytest.raises(config.ConfigError, match="eval.num_users=-1"):
      config.validate_config(small_config(**{"eval.num_users": -1}))


def _hand_restricted(sp, users, emb, temperature):
  """metrics.evaluate on the valid pairs (and train pairs) of `users` only, filtered by
  hand, plus the softmax loss of those valid pairs in float64 numpy."""
  keep_v = np.isin(sp.valid.user_ids, users)
  keep_t = np.isin(sp.train.user_ids, users)
  valid = (sp.valid.user_ids[keep_v], sp.valid.item_ids[keep_v])
  train_pairs = (sp.train.user_ids[keep_t], sp.train.item_ids[keep_t])
  q, v = emb["query"], emb["items"]
  out = metrics.evaluate(
      q,
      v,
      train_pairs,
      valid,
      ks=(5, 10),
      user_groups=sp.train.user_groups,
      item_groups=sp.train.item_groups,
  )
  s = q.astype(np.float64) @ v.astype(np.float64).T / temperature
  m = s.max(1)
  lse = m + np.log(np.exp(s - m[:, None]).sum(1))
  out["test_softmax_loss"] = float(np.mean(lse[valid[0]] - s[valid[0], valid[1]]))
  return out


def test_validation_metrics_are_those_of_the_sampled_users_and_test_is_full(tmp_path):
  n = 40
  res = train.train_and_evaluate(
      small_config(**{"eval.num_users": n}), str(tmp_path / "s"), verbose=False
  )
  full = train.train_and_evaluate(small_config(), str(tmp_path / "f"), verbose=False)
  sp = data.load_data(small_config().data, 0)
  users = evaluate.sample_eval_users(evaluate.evaluable_users(sp.train, sp.valid), n, seed=0)
  assert res["run"]["eval_num_users"] == n
  assert full["run"]["eval_num_users"] == evaluate.evaluable_users(sp.train, sp.valid).size
  assert res["config"]["eval"]["num_users"] == n
  # The valid metrics (of the last step: no eval.select) = evaluate on those users.
  with np.load(tmp_path / "s" / "embeddings.npz") as f:
    emb = {"query": f["query"], "items": f["items"]}
  want = _hand_restricted(sp, users, emb, temperature=1.0)
  assert set(res["valid"]) == set(want)
  for key, value in want.items():
    np.testing.assert_allclose(res["valid"][key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  # ... and not those of every user (the sample is a real restriction).
  assert res["valid"] != full["valid"]
  # Same seed, same training: the final test metrics are the full run's, unchanged.
  assert res["metrics"] == full["metrics"]
  # Without a validation part the key has nothing to act on: recorded as null.
  none = train.train_and_evaluate(
      small_config(**{"eval.num_users": n, "data.valid_fraction": 0.0}),
      str(tmp_path / "n"),
      verbose=False,
  )
  assert none["run"]["eval_num_users"] is None and none["valid"] == {}


def test_periodic_evaluations_rank_the_same_sample(tmp_path, monkeypatch):
  seen = []
  real = evaluate.evaluate_model

  def spy(*args, **kwargs):
    seen.append(kwargs.get("eval_users"))
    return real(*args, **kwargs)

  monkeypatch.setattr(evaluate, "evaluate_model", spy)
  c = small_config(**{"eval.num_users": 25, "eval.every": 20, "eval.save_embeddings": False})
  train.train_and_evaluate(c, str(tmp_path / "p"), verbose=False)
  # Steps 20 and 40 in the loop, the last step (60) after it, then the test evaluation.
  assert len(seen) == 4
  for users in seen[:3]:
    np.testing.assert_array_equal(users, seen[0])
  assert seen[0].size == 25 and seen[3] is None


@pytest.mark.parametrize("key, other", [("num_users", 5), ("logp_bias", 0.5)])
def test_a_record_written_before_the_key_existed_still_matches(tmp_path, key, other):
  cfg = workdir.config_to_dict(small_config())
  old = json.loads(json.dumps(cfg))
  del old["eval"][key]
  assert workdir.same_config(old, cfg)
  changed = json.loads(json.dumps(cfg))
  changed["eval"][key] = other
  assert not workdir.same_config(old, changed)
  # A finished run recorded without the key is found finished by the same config.
  (tmp_path / "config.json").write_text(json.dumps(old))
  (tmp_path / "results.json").write_text(json.dumps({"metrics": {"recall@10": 0.5}}))
  assert workdir.finished(str(tmp_path), cfg) == {"metrics": {"recall@10": 0.5}}
  assert workdir.finished(str(tmp_path), changed) is None


def test_records_without_correct_positive_match_only_where_it_changes_nothing():
  """sampler.correct_positive came later: a record without it is the same run where the
  key has no effect (no positive log q, or log-Q off) and, for in_batch / mixed with log-Q,
  the same run as correct_positive=False (what those runs did), not the new default."""

  def record_and_current(**over):
    cur = workdir.config_to_dict(small_config(**over))
    old = json.loads(json.dumps(cur))
    del old["sampler"]["correct_positive"]
    return old, cur

  old, cur = record_and_current(**{"sampler.name": "uniform"})
  assert cur["sampler"]["correct_positive"] is True and workdir.same_config(old, cur)
  old, cur = record_and_current(**{"sampler.name": "in_batch", "sampler.logq": False})
  assert workdir.same_config(old, cur)
  old, cur = record_and_current(**{"sampler.name": "in_batch"})
  assert not workdir.same_config(old, cur)  # the new default corrects the positive
  old, cur = record_and_current(**{"sampler.name": "mixed", "sampler.correct_positive": False})
  assert workdir.same_config(old, cur)
  # no negatives drawn at all: a closed-form model, a loss without negatives
  for over in ({"model.name": "ease"}, {"model.name": "popularity"}, {"loss.name": "full"}):
    old, cur = record_and_current(**{"sampler.name": "in_batch", **over})
    assert workdir.same_config(old, cur), over
  old, cur = record_and_current(**{"sampler.name": "in_batch", "model.name": "mf"})
  assert not workdir.same_config(old, cur)

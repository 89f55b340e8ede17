"""The evaluation protocol through the launcher: three-way splits, selection on validation,
test pairs read once, closed-form baselines as models."""

import dataclasses
import json
import os

import numpy as np
import pytest

from experiments import sweep
from experiments.configs import common, synthetic
from jaxrec import baselines, config, data, metrics, train


def small_config(**over):
  c = synthetic.get_config()
  c.data.num_users = 400
  c.data.num_items = 300
  c.data.interactions_per_user = 15
  c.data.valid_fraction = 0.15
  c.model.name = "mf"
  c.model.dim = 16
  c.train.steps = 300
  c.train.batch_size = 128
  c.train.log_every = 100
  common.no_checkpoints(c)
  c.sampler.num_negatives = 32
  c.eval.ks = (10, 20)
  return sweep.apply_overrides(c, tuple(over.items()))


def _keys(inter):
  return set(zip(inter.user_ids.tolist(), inter.item_ids.tolist()))


def _jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_load_data_valid_is_carved_from_train_and_disjoint_from_test():
  c = small_config()
  whole = data.load_data(small_config(**{"data.valid_fraction": 0.0}).data, 0)
  sp = data.load_data(c.data, 0)
  tr, va, te = _keys(sp.train), _keys(sp.valid), _keys(sp.test)
  assert va and not (va & te) and not (va & tr)
  # the test part does not depend on the carve; train' + valid = the train of no carve
  assert te == _keys(whole.test) and (tr | va) == _keys(whole.train)
  assert whole.valid.num_interactions == 0
  # deterministic in the seed, different across seeds
  assert _keys(data.load_data(c.data, 0).valid) == va
  assert _keys(data.load_data(c.data, 1).valid) != va


class _Guarded:
  """Test pairs that raise when read before the run's training loop has finished (their
  count may be read: the launcher logs it)."""

  _ALLOWED = ("num_users", "num_items", "num_interactions")

  def __init__(self, inter, state):
    object.__setattr__(self, "_inter", inter)
    object.__setattr__(self, "_state", state)

  def __getattr__(self, name):
    if name not in self._ALLOWED and not self._state["loop_done"]:
      raise AssertionError(f"test.{name} read before the final evaluation")
    if name not in self._ALLOWED:
      self._state["reads_after"] += 1
    return getattr(self._inter, name)


@pytest.mark.parametrize("model", ["mf", "ease"])
def test_a_run_reads_test_pairs_only_at_the_final_evaluation(tmp_path, monkeypatch, model):
  c = small_config(**{"model.name": model, "eval.every": 100, "eval.select": "valid/recall@20"})
  if model == "ease":
    c.eval.every, c.eval.select = 0, ""
  sp = data.load_data(c.data, 0)
  state = {"loop_done": False, "reads_after": 0}
  real_loop = train._train_loop

  def loop(*args, **kwargs):
    out = real_loop(*args, **kwargs)
    state["loop_done"] = True
    return out

  monkeypatch.setattr(train, "_train_loop", loop)
  if model == "ease":  # no loop: the fit is the training
    real_fit = baselines.fit_ease

    def fit(*args):
      out = real_fit(*args)
      state["loop_done"] = True
      return out

    monkeypatch.setattr(
        train.models,
        "REGISTRY",
        {
            **train.models.REGISTRY,
            "ease": dataclasses.replace(train.models.REGISTRY["ease"], fit=fit),
        },
    )
  res = train.train_and_evaluate(
      c, str(tmp_path / model), data=(sp.train, sp.valid, _Guarded(sp.test, state)), verbose=False
  )
  assert state["loop_done"] and state["reads_after"] > 0
  # the reported test metrics mask train and valid pairs: equal to an independent evaluation
  assert res["valid"] and res["metrics"]["recall@20"] > 0


@pytest.mark.parametrize("model", ["mf", "ease"])
def test_a_trial_never_reads_test_pairs(tmp_path, model):
  """test=False (experiments.tune's trials): the test pairs are never read, not even at
  the end, and results.json says so; rerun with test=True, the same workdir is evaluated."""
  c = small_config(**{"model.name": model, "eval.every": 100, "eval.select": "valid/recall@20"})
  if model == "ease":
    c.eval.every, c.eval.select = 0, ""
  sp = data.load_data(c.data, 0)
  state = {"loop_done": False, "reads_after": 0}  # never set: any read raises
  wd = str(tmp_path / model)
  res = train.train_and_evaluate(
      c, wd, data=(sp.train, sp.valid, _Guarded(sp.test, state)), verbose=False, test=False
  )
  assert res["metrics"] == {} and res["valid"] and res["run"]["test_evaluated"] is False
  again = train.train_and_evaluate(c, wd, data=sp, verbose=False)
  assert again["run"]["test_evaluated"] is True and again["metrics"]["recall@20"] > 0
  assert again["valid"] == pytest.approx(res["valid"])


def test_a_trial_needs_a_validation_part(tmp_path):
  c = small_config()
  sp = data.load_data(c.data, 0)
  with pytest.raises(config.ConfigError, match="validation part"):
    train.train_and_evaluate(c, str(tmp_path), data=(sp.train, sp.test), verbose=False, test=False)


def test_select_reports_test_at_the_best_valid_step(tmp_path):
  c = small_config(**{"eval.every": 50, "eval.select": "valid/recall@20", "train.steps": 400})
  sp = data.load_data(c.data, 0)
  wd = tmp_path / "run"
  res = train.train_and_evaluate(c, str(wd), data=sp, verbose=False)
  rows = [r for r in _jsonl(wd / "metrics.jsonl") if "valid/recall@20" in r]
  curve = {r["step"]: r["valid/recall@20"] for r in rows}
  # the last step is evaluated too (after the loop), it is in res when it wins
  best = max(curve.values())
  selected = res["run"]["selected_step"]
  assert res["valid"]["recall@20"] >= best - 1e-7
  if selected in curve:
    assert curve[selected] == pytest.approx(res["valid"]["recall@20"], abs=1e-7)
  assert all(res["valid"]["recall@20"] >= v for v in curve.values())
  # test metrics = an independent evaluation of the selected embeddings, train+valid masked
  with np.load(wd / "selected.npz") as f:
    assert int(f["step"]) == selected
    q, v = f["query"], f["items"]
  known = sp.train.union(sp.valid)
  want = metrics.evaluate(q, v, known, sp.test, ks=(10, 20))
  for k in ("recall@20", "recall_full@20", "ndcg@20"):
    assert res["metrics"][k] == pytest.approx(want[k], abs=1e-6), k
  # masking valid matters: without it the same embeddings score differently on test
  unmasked = metrics.evaluate(q, v, sp.train, sp.test, ks=(20,))
  assert unmasked["recall@20"] != pytest.approx(want["recall@20"], abs=1e-9)


def test_patience_stops_early(tmp_path):
  # a learning rate so large the valid metric stalls early: training stops at patience
  c = small_config(
      **{
          "eval.every": 20,
          "eval.select": "valid/recall@20",
          "eval.patience": 2,
          "train.steps": 2000,
          "train.log_every": 20,
      }
  )
  res = train.train_and_evaluate(c, str(tmp_path / "r"), verbose=False)
  rows = [r for r in _jsonl(tmp_path / "r" / "metrics.jsonl") if "valid/recall@20" in r]
  steps = res["run"]["steps"]
  assert steps < 2000
  values = [r["valid/recall@20"] for r in rows]
  best_i = int(np.argmax(values))
  # stopped exactly `patience` evaluations after the best one, none of them better
  assert len(values) - 1 - best_i == 2 and rows[-1]["step"] == steps
  assert res["run"]["selected_step"] == rows[best_i]["step"]


@pytest.mark.parametrize(
    "over,match",
    [
        ({"eval.select": "valid/recall@20", "data.valid_fraction": 0.0}, "needs a validation"),
        ({"eval.select": "valid/recall@5"}, "K in eval.ks"),
        ({"eval.select": "test/recall@20"}, "must be valid/NAME@K"),
        ({"eval.select": "valid/cross_group@20"}, "must be valid/NAME@K"),
        ({"eval.patience": 3}, "needs eval.select and eval.every"),
        ({"data.valid_fraction": 1.0}, r"data.valid_fraction=1.0 must be in \[0, 1\)"),
        ({"model.name": "ease", "model.ease_lambda": 0.0}, "model.ease_lambda=0.0 must be > 0"),
    ],
)
def test_bad_protocol_settings_are_config_errors(over, match):
  with pytest.raises(config.ConfigError, match=match):
    config.validate_config(small_config(**over))


@pytest.mark.parametrize("name", ["ease", "popularity"])
def test_closed_form_baselines_through_the_launcher(tmp_path, name):
  c = small_config(**{"model.name": name, "model.ease_lambda": 30.0})
  sp = data.load_data(c.data, 0)
  res = train.train_and_evaluate(c, str(tmp_path / name), data=sp, verbose=False)
  fitted = baselines.ease(sp.train, lam=30.0) if name == "ease" else baselines.popularity(sp.train)
  n_u, n_i = sp.train.num_users, sp.train.num_items
  known = sp.train.union(sp.valid)
  if name == "ease":
    want_valid = metrics.evaluate_scores(fitted.scores, n_u, n_i, sp.train, sp.valid, ks=(10, 20))
    want_test = metrics.evaluate_scores(fitted.scores, n_u, n_i, known, sp.test, ks=(10, 20))
  else:  # popularity is ranked as dim-1 embeddings (same tie order as metrics.evaluate)
    q, v = metrics.popularity_scores(sp.train)
    want_valid = metrics.evaluate(q, v, sp.train, sp.valid, ks=(10, 20))
    want_test = metrics.evaluate(q, v, known, sp.test, ks=(10, 20))
  for k in ("recall@20", "recall_full@20", "ndcg@10"):
    assert res["valid"][k] == pytest.approx(want_valid[k], abs=1e-7)
    assert res["metrics"][k] == pytest.approx(want_test[k], abs=1e-7)
  assert os.path.exists(tmp_path / name / "results.json")


def _write_lightgcn(folder, rng, num_users=60, num_items=40):
  folder.mkdir()
  for name, lo, hi in (("train.txt", 6, 12), ("test.txt", 2, 4)):
    with open(folder / name, "w") as f:
      for u in range(num_users):
        items = rng.choice(num_items, size=rng.integers(lo, hi), replace=False)
        f.write(" ".join(map(str, [u, *sorted(items.tolist())])) + "\n")


def test_lightgcn_split_through_the_launcher_carves_valid_from_train_txt(tmp_path):
  _write_lightgcn(tmp_path / "g", np.random.default_rng(0))
  fixed_train, fixed_test = data.load_lightgcn(tmp_path / "g")
  c = small_config(
      **{
          "data.name": "lightgcn",
          "data.path": str(tmp_path / "g"),
          "data.valid_fraction": 0.2,
          "eval.ks": (5,),
          "model.name": "popularity",
      }
  )
  sp = data.load_data(c.data, 3)
  assert _keys(sp.test) == _keys(fixed_test)  # test.txt as given
  assert _keys(sp.train) | _keys(sp.valid) == _keys(fixed_train)
  assert not _keys(sp.train) & _keys(sp.valid)
  res = train.train_and_evaluate(c, str(tmp_path / "run"), verbose=False)
  assert res["run"]["num_items"] == fixed_train.num_items and res["valid"]
  for key in ("k_core", "language_split"):
    with pytest.raises(config.ConfigError, match=f"data.{key}=2 does not apply"):
      config.validate_config(sweep.apply_overrides(c, ((f"data.{key}", 2),)))


def test_l2_on_normalised_vectors_is_refused():
  with pytest.raises(config.ConfigError, match="loss.l2=0.1 has no effect with model.normalize"):
    config.validate_config(small_config(**{"loss.l2": 0.1, "model.normalize": True}))


def test_baselines_are_rows_of_a_sweep_with_folding_metrics(tmp_path):
  """A sweep (any ablation) can list popularity and EASE beside trained models; popularity
  gets the folding metrics through the embedding path (the world has groups)."""
  c = small_config(**{"data.valid_fraction": 0.0, "train.steps": 100})
  runs = [
      sweep.Run("mf", ()),
      sweep.Run("popularity", (("model.name", "popularity"),)),
      sweep.Run("ease", (("model.name", "ease"), ("model.ease_lambda", 10.0))),
  ]
  path = sweep.run_sweep(c, runs, [0], str(tmp_path))
  import csv

  with open(path) as f:
    rows = {r["strategy"]: r for r in csv.DictReader(f)}
  assert set(rows) == {"mf", "popularity", "ease"}
  sp = data.load_data(c.data, 0)
  q, v = metrics.popularity_scores(sp.train)
  want = metrics.evaluate(q, v, sp.train, sp.test, ks=(10, 20))
  assert float(rows["popularity"]["recall@20"]) == pytest.approx(want["recall@20"], abs=1e-7)
  assert float(rows["popularity"]["cross_group@20"]) == pytest.approx(
      want["cross_group@20"], abs=1e-7
  )

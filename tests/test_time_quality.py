"""Quality against training time (train_seconds in metrics.jsonl, the report's curves and
equal-budget table) and claims judged by paired differences over seeds."""

import json
import math
import os

import numpy as np
import pytest

from experiments import report, sweep
from experiments.configs import common, synthetic
from experiments.configs import folding as folding_config
from jaxrec import config, step, train
import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cfg(**over):
  """tests/tiny.py's config with a validation part, a log line every 10 steps and a
  validation evaluation every 20."""
  base = {"data.valid_fraction": 0.2, "train.log_every": 10, "eval.every": 20}
  return tiny.config(**{**base, **over})


def _fake_clock(monkeypatch, *, compile_s=50.0, step_s=0.01, eval_s=100.0):
  """train.clock reads a fake time: compile_s for a process's first step, step_s for every
  other step, eval_s for each validation evaluation (which train_seconds must leave out)."""
  now, first = [0.0], [True]
  real_step, real_valid = step.jitted_train_step, train._valid_metrics

  def timed_step(spec, state, ddata):
    now[0] += compile_s if first[0] else step_s
    first[0] = False
    return real_step(spec, state, ddata)

  def timed_valid(*args, **kw):
    now[0] += eval_s
    return real_valid(*args, **kw)

  monkeypatch.setattr(step, "jitted_train_step", timed_step)
  monkeypatch.setattr(train, "_valid_metrics", timed_valid)
  monkeypatch.setattr(train, "clock", lambda: now[0])
  return first


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_train_seconds_leave_out_compilation_and_evaluation(tmp_path, monkeypatch):
  _fake_clock(monkeypatch)
  train.train_and_evaluate(cfg(), str(tmp_path / "w"), verbose=False)
  rows = _rows(tmp_path / "w" / "metrics.jsonl")
  timed = [r for r in rows if "train_seconds" in r]
  # every log row: the steps after the first, 0.01 s each; the 100 s evaluations at 20, 40
  # and after the loop are not in it
  for r in timed:
    assert r["train_seconds"] == pytest.approx((r["step"] - 1) * 0.01), r
  valid = [r for r in rows if "valid/recall@20" in r]
  np.testing.assert_allclose(  # the last step's evaluation (after the loop) is there too
      [(r["step"], r["train_seconds"]) for r in valid], [(20, 0.19), (40, 0.39), (60, 0.59)]
  )
  np.testing.assert_allclose(
      report.read_curve(str(tmp_path / "w")),
      [(r["step"], r["train_seconds"], r["valid/recall@20"]) for r in valid],
  )


def test_a_resumed_run_continues_the_time_axis(tmp_path, monkeypatch):
  first = _fake_clock(monkeypatch)
  c = cfg(**{"train.checkpoint_every": 20})
  wd = tmp_path / "w"
  train.train_and_evaluate(c, str(wd), verbose=False)
  # as if killed after the checkpoint at step 40: its later checkpoint and results go
  os.remove(wd / "results.json")
  ck = wd / "checkpoints"
  for name in os.listdir(ck):
    if name.isdigit() and int(name) > 40:
      import shutil

      shutil.rmtree(ck / name)
  first[0] = True  # a new process compiles again
  res = train.train_and_evaluate(c, str(wd), verbose=False)
  assert res["run"]["resumed_from_step"] == 40
  rows = [r for r in _rows(wd / "metrics.jsonl") if "train_seconds" in r]
  # up to step 40 the first process's rows (39 steps timed); then 0.39 s carried plus this
  # process's steps after its own first (compiling) one, step 41
  want = {s: (s - 1) * 0.01 if s <= 40 else 0.39 + (s - 41) * 0.01 for s in (10, 20, 40, 50, 60)}
  got = {r["step"]: r["train_seconds"] for r in rows}
  for s, t in want.items():
    assert got[s] == pytest.approx(t), (s, got)
  assert train.carried_train_seconds(str(wd / "metrics.jsonl")) == pytest.approx(0.58)


def test_a_time_budget_stops_training_and_evaluates_on_a_time_schedule(tmp_path, monkeypatch):
  """0.01 s a step after the compiling one, a log line every 5 steps: train_seconds at
  step s is (s - 1) 0.01. every_seconds 0.1 evaluates at the first log line past 0.1 and
  0.2 (steps 15 and 25); max_seconds 0.25 stops at the first one past it (step 30, 0.29 s),
  which the final evaluation scores; the 100 s evaluations are not training time."""
  _fake_clock(monkeypatch)
  c = cfg(
      **{
          "train.log_every": 5,
          "eval.every": 0,
          "eval.every_seconds": 0.1,
          "train.max_seconds": 0.25,
          "train.checkpoint_every": 10,
      }
  )
  res = train.train_and_evaluate(c, str(tmp_path / "w"), verbose=False)
  assert res["run"]["steps"] == 30
  rows = _rows(tmp_path / "w" / "metrics.jsonl")
  valid = [(r["step"], r["train_seconds"]) for r in rows if "valid/recall@20" in r]
  np.testing.assert_allclose(valid, [(15, 0.14), (25, 0.24), (30, 0.29)])
  assert max(r["step"] for r in rows if "loss" in r) == 30
  # run again: finished, nothing trained; with the results gone it resumes from the
  # checkpoint at 30 whose budget is spent, and evaluates that step without training
  os.remove(tmp_path / "w" / "results.json")
  again = train.train_and_evaluate(c, str(tmp_path / "w"), verbose=False)
  assert again["run"]["steps"] == 30 and again["run"]["resumed_from_step"] == 30


@pytest.mark.parametrize("key", ["train.max_seconds", "eval.every_seconds"])
def test_time_budgets_must_not_be_negative(key):
  with pytest.raises(config.ConfigError, match=key):
    config.validate_config(cfg(**{key: -1.0}))


def test_a_closed_form_model_is_one_point_at_its_fit_seconds(tmp_path):
  res = train.train_and_evaluate(cfg(**{"model.name": "ease"}), str(tmp_path / "e"), verbose=False)
  (point,) = report.read_curve(str(tmp_path / "e"))
  assert point[1] == pytest.approx(res["run"]["train_seconds"])
  assert point[2] == pytest.approx(res["valid"]["recall@20"])


# --------------------------------------------------------------------------------------
# The report's curves and equal-budget table, on metrics rows written by hand.

# strategy -> seed -> [(step, train seconds, valid recall@20)]
CURVES = {
    "A": {0: [(100, 1.0, 0.10), (200, 2.0, 0.20), (300, 3.0, 0.30)],
          1: [(100, 1.2, 0.12), (200, 2.2, 0.22), (300, 3.4, 0.32)]},
    "B": {0: [(100, 4.0, 0.40), (200, 8.0, 0.50)],
          1: [(100, 5.0, 0.42), (200, 8.0, 0.54)]},
}  # fmt: skip


def _write_sweep(root, curves, *, old=(), no_valid=()):
  """results.csv + a metrics.jsonl per run as train.py writes them: log rows, validation
  rows, the final test row (unprefixed, no train_seconds); `old` strategies' rows have no
  train_seconds (recorded before it was logged); `no_valid` ones no validation row."""
  rows = []
  runs = {s: dict(c) for s, c in curves.items()}
  runs.update({s: {0: [(100, 1.0, 0.3)], 1: [(100, 1.0, 0.3)]} for s in (*old, *no_valid)})
  for s, seeds in runs.items():
    for seed, pts in seeds.items():
      wd = os.path.join(root, s, f"seed_{seed}")
      os.makedirs(wd)
      with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
        for st, t, v in pts:
          log = {"step": st, "loss": 1.0, "train_seconds": t}
          valid = {"step": st, "train_seconds": t, "valid/recall@20": v}
          for row in (log, valid):
            if s in old:
              row.pop("train_seconds")
            if s not in no_valid or row is log:
              f.write(json.dumps(row) + "\n")
        f.write(json.dumps({"step": pts[-1][0], "recall@20": 0.99}) + "\n")
      rows.append(
          {
              "strategy": s,
              "seed": seed,
              "overrides": "{}",
              "recall@20": 0.5,
              "workdir": f"{s}/seed_{seed}",
          }
      )
  sweep.write_csv_atomic(os.path.join(root, "results.csv"), rows)


def test_budget_table_matches_a_hand_computed_example():
  curves = {s: list(seeds.values()) for s, seeds in CURVES.items()}
  # slowest: B, mean final time (8 + 8) / 2 = 8 s; budgets 1, 2, 4, 8 s
  budgets, cells = report.budget_table(curves, (0.125, 0.25, 0.5, 1.0))
  assert budgets == pytest.approx([1.0, 2.0, 4.0, 8.0])
  # A at 1 s: seed 1's first evaluation is at 1.2 s -> "-"; at 2 s: seeds at 0.20 and
  # 0.12 (its 1.2 s point); at 4 and 8 s: both finished, 0.30 and 0.32
  assert cells["A"][0] is None
  assert cells["A"][1:] == pytest.approx([0.16, 0.31, 0.31])
  # B: by 4 s only seed 0 has evaluated (seed 1 at 5 s) -> "-"; at 8 s 0.50 and 0.54
  assert cells["B"][:3] == [None, None, None]
  assert cells["B"][3] == pytest.approx(0.52)
  np.testing.assert_allclose(
      report.mean_curve(curves["A"]), [(1.1, 0.11), (2.1, 0.21), (3.2, 0.31)]
  )
  # a time schedule: the seeds evaluate at different steps, matched by order; the
  # shorter seed bounds the curve
  timed = [
      [(180, 30.1, 0.10), (370, 60.2, 0.20), (560, 90.0, 0.30)],
      [(200, 30.3, 0.12), (390, 60.0, 0.22)],
  ]
  np.testing.assert_allclose(report.mean_curve(timed), [(30.2, 0.11), (60.1, 0.21)])
  assert report.value_at(CURVES["A"][0], 2.0) == 0.20  # at or before: 2.0 itself counts
  assert report.value_at(CURVES["A"][0], 0.99) is None


def test_report_draws_the_time_plot_and_says_no_timing_for_old_runs(tmp_path):
  root = str(tmp_path)
  _write_sweep(root, CURVES, old=("C",), no_valid=("D",))
  report.report(root)
  text = (tmp_path / "summary.md").read_text()
  assert "## Quality against training time" in text
  assert "![valid recall@20 against training seconds](quality_vs_time.png)" in text
  assert (tmp_path / "quality_vs_time.png").stat().st_size > 10_000
  # default budgets: 25/50/100% of 8 s (the test row's recall 0.99 is not a valid point)
  assert "| strategy | 25% (2.0 s) | 50% (4.0 s) | 100% (8.0 s) | its training s |" in text
  assert "| B | - | - | 0.520 | 8.0 |" in text
  assert "| A | 0.160 | 0.310 | 0.310 | 3.2 |" in text
  assert "| C | no timing | no timing | no timing | - |" in text
  assert "| D | no validation curve | no validation curve | no validation curve | - |" in text
  timed = text[text.index("## Quality against training time") :]
  assert timed.index("| B |") < timed.index("| A |")  # in order of the last value


def test_a_sweep_recorded_before_train_seconds_renders_with_no_timing(tmp_path):
  _write_sweep(str(tmp_path), {}, old=("C",))
  report.report(str(tmp_path))
  text = (tmp_path / "summary.md").read_text()
  assert "no timing: these runs' metrics.jsonl have no train_seconds" in text
  assert "| C |" in text and not (tmp_path / "quality_vs_time.png").exists()


def test_a_recorded_folding_run_reads_as_no_timing():
  # records/ holds runs written before train_seconds was logged (and without validation)
  run = os.path.join(REPO, "records", "folding_ml_k256", "uniform", "seed_0")
  if not os.path.exists(run):
    pytest.skip("no records/folding_ml_k256 in this checkout")
  assert report.read_curve(run) == []  # no validation rows at all
  rows = [{"strategy": "uniform", "seed": 0, "workdir": "uniform/seed_0"}]
  lines = report.time_section(os.path.dirname(os.path.dirname(run)), rows)
  assert lines[-1].startswith("no validation curve")


# --------------------------------------------------------------------------------------
# Claims: paired differences, t-intervals, verdicts.


@pytest.mark.parametrize(
    "df,want",  # two-sided 95% critical values of Student's t (any statistics table)
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045), (1000, 1.962)],
)
def test_t_quantile_matches_the_table(df, want):
  assert report.t_quantile(0.975, df) == pytest.approx(want, abs=5e-4)


def _claim(**kw):
  return report.Claim(**{"text": "c", "metric": "m", "a": "a", "op": ">", "threshold": 0.0, **kw})


def test_t_interval_and_verdicts_by_hand():
  # d = 0.1, 0.3, 0.2: mean 0.2, std 0.1, half-width t_{0.975,2} 0.1 / sqrt(3) with
  # t_{0.975,2} = 4.30265 (tables give 4.303): 0.248414
  mean, lo, hi = report.t_interval([0.1, 0.3, 0.2])
  assert (mean, lo, hi) == pytest.approx((0.2, 0.2 - 0.248414, 0.2 + 0.248414), abs=1e-6)
  v = lambda **kw: report.verdict(_claim(**kw), lo, hi, 3)  # noqa: E731
  assert v(op=">", threshold=0.0) == "not resolved at 3 seeds"  # 0 inside [-0.048, 0.448]
  assert v(op=">", threshold=-0.1) == "held"
  assert v(op=">", threshold=0.5) == "not held"
  assert v(op="<", threshold=0.5) == "held"
  assert v(op="<", threshold=-0.1) == "not held"
  assert report.t_interval([0.4])[0] == 0.4 and math.isnan(report.t_interval([0.4])[1])
  assert report.verdict(_claim(), math.nan, math.nan, 1) == "not resolved at 1 seed"
  assert report.verdict(_claim(), math.nan, math.nan, 0) == "not run"
  with pytest.raises(ValueError, match="op='>=' must be one of >, <"):
    _claim(op=">=")


def test_differences_are_paired_by_seed():
  rows = [
      {"strategy": "a", "seed": 0.0, "m": 0.5},
      {"strategy": "a", "seed": 1.0, "m": 0.7},
      {"strategy": "a", "seed": 2.0, "m": 0.6},  # b has no seed 2: left out
      {"strategy": "b", "seed": 0.0, "m": 0.4},
      {"strategy": "b", "seed": 1.0, "m": 0.3},
      {"strategy": "b", "seed": 3.0, "m": 9.9},  # a has no seed 3: left out
  ]
  c = _claim(b="b", scale=0.75)
  assert report.paired_differences(rows, c) == pytest.approx([0.5 - 0.3, 0.7 - 0.225])
  assert report.paired_differences(rows, _claim()) == pytest.approx([0.5, 0.7, 0.6])
  lines = report.claims_section(rows, [_claim(text="a beats b", b="b", threshold=-10.0)])
  # d = 0.1, 0.4: mean 0.25, half-width 12.706 x 0.212132 / sqrt(2) = 1.90590
  assert lines[-1] == ("| a beats b | m: a - b > -10 | 0.2500 | [-1.6559, 2.1559] | 2 | **held** |")


def test_folding_claims_are_its_predictions_for_the_configs_groups():
  c = folding_config.get_config()
  claims = sweep.claims(c)
  p = c.sweep.predictions
  assert len(claims) == 1 + len(p.judged) + (len(p.judged) - 1) + 1
  assert claims[0].describe() == "cross_group@20: positive_only > 0.6"  # 0.8 x 3/4
  assert claims[-1].describe() == (
      "cross_group@20: positive_only+gravity - 0.5 x positive_only < 0"
  )
  assert "recall@20: uniform - 0.75 x full_softmax > 0" in [x.describe() for x in claims]
  two = sweep.apply_overrides(c, (("data.num_groups", 2),))
  assert sweep.claims(two)[0].threshold == pytest.approx(0.4)  # 0.8 x 1/2
  assert sweep.claims(sweep.apply_overrides(c, (("data.num_groups", 1),))) == []
  sweep.check(folding_config.get_config("quick"))  # every claim names a declared run


@pytest.mark.parametrize(
    "claim,match",
    [
        (dict(text="x", metric="recall@20", a="nope", op=">", threshold=0.0), "names no run nope"),
        (dict(text="x", metric="recall@20", a="u", op="=", threshold=0.0), "op='=' must be"),
        (dict(text="x", metric="recall@20", a="u", op=">"), "threshold"),
    ],
)
def test_bad_claims_are_config_errors(claim, match):
  c = synthetic.get_config()
  c.sweep = common.sweep(
      "t", [("u", {})], title="t", analysis="report.standard_plots", claims=(claim,)
  )
  with pytest.raises(sweep.ConfigError, match=match):
    sweep.check(c)


def test_a_sweep_reports_its_claims_and_quality_against_time(tmp_path):
  c = cfg(**{"data.valid_fraction": 0.0, "eval.every": 0, "train.log_every": 20})
  common.time_curve(c, evaluations=3, num_users=100)
  assert (c.data.valid_fraction, c.eval.every, c.eval.num_users) == (0.1, 20, 100)
  claim = dict(text="full beats uniform", metric="recall@20", a="full", b="uniform", op=">")
  c.sweep = common.sweep(
      "t",
      [("uniform", {}), ("full", {"loss.name": "full"})],
      title="t",
      seeds=(0, 1),
      analysis="report.standard_plots",
      facts=False,
      claims=(dict(claim, threshold=0.0),),
  )
  sw = sweep.run(c, str(tmp_path), log=lambda *a: None)
  text = (tmp_path / "summary.md").read_text()
  # the claim's row against numpy: paired by seed, t_{0.975,1} = 12.7062 for two seeds
  by = {(r["strategy"], int(r["seed"])): r["recall@20"] for r in sw.rows}
  d = np.array([by["full", s] - by["uniform", s] for s in (0, 1)])
  half = 12.7062 * d.std(ddof=1) / np.sqrt(2)
  want = f"| {d.mean():.4f} | [{d.mean() - half:.4f}, {d.mean() + half:.4f}] | 2 |"
  assert "## Claims" in text and want in text, text
  assert "## Quality against training time" in text and "| full |" in text
  assert (tmp_path / "quality_vs_time.png").stat().st_size > 10_000
  # 3 evaluations per run: steps 20, 40 and the last, 60
  assert [s for s, _, _ in report.read_curve(sw.run_dir("full", 1))] == [20, 40, 60]

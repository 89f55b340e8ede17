"""Sweeps: resumable, gathered into results.csv, reported as mean +- std."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import folding, report, sweep
from experiments.configs import folding as folding_config
from experiments.configs import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config.data.num_users=300",
    "--config.data.num_items=200",
    "--config.model.dim=8",
    "--config.model.hidden=(16,)",
    "--config.train.steps=60",
    "--config.train.log_every=30",
    "--config.train.checkpoint_every=0",
    "--config.train.checkpoint_seconds=0",
    "--config.train.batch_size=32",
    "--config.sampler.num_negatives=8",
]


def _sweep_cmd(workdir):
  return [
      sys.executable,
      "-m",
      "experiments.sweep",
      f"--workdir={workdir}",
      "--grid=sampler.name=uniform,unigram",
      "--seeds=0,1",
      *TINY,
  ]


def test_killed_sweep_reruns_only_the_missing_runs(tmp_path):
  wd = tmp_path / "sw"
  p = subprocess.Popen(
      _sweep_cmd(wd), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  # kill as soon as two runs have finished (their results.json exist)
  deadline = time.time() + 240
  while time.time() < deadline:
    done = [r for r, _, fs in os.walk(wd) if "results.json" in fs]
    if len(done) >= 2:
      break
    time.sleep(0.02)
  os.kill(p.pid, signal.SIGKILL)
  p.wait()
  finished_before = {os.path.relpath(r, wd) for r, _, fs in os.walk(wd) if "results.json" in fs}
  assert 2 <= len(finished_before) < 4, finished_before
  mtimes = {r: os.path.getmtime(wd / r / "results.json") for r in finished_before}

  out = subprocess.run(_sweep_cmd(wd), cwd=REPO, capture_output=True, text=True, check=True)
  skipped = out.stdout.count("done earlier, skipped")
  assert skipped == len(finished_before), out.stdout
  for r, t in mtimes.items():  # untouched
    assert os.path.getmtime(wd / r / "results.json") == t
  with open(wd / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4
  assert {(r["strategy"], r["seed"]) for r in rows} == {
      (f"name={s}", str(seed)) for s in ("uniform", "unigram") for seed in (0, 1)
  }
  assert all(0.0 <= float(r["recall@20"]) <= 1.0 for r in rows)


def test_report_mean_and_std_match_numpy(tmp_path):
  rows = [
      ("a", 0, 0.30, 0.1),
      ("a", 1, 0.34, 0.3),
      ("a", 2, 0.35, 0.2),
      ("b", 0, 0.1, 0.7),
      ("b", 1, 0.2, 0.9),
      ("c", 0, 0.05, 0.5),
  ]
  with open(tmp_path / "results.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["strategy", "seed", "overrides", "recall@20", "cross_group@20", "steps_per_second"])
    for s, seed, r, c in rows:
      w.writerow([s, seed, "{}", r, c, 100.0])
  summary = report.report(str(tmp_path))
  a = np.array([0.30, 0.34, 0.35])
  np.testing.assert_allclose(summary["a"]["recall@20"], (a.mean(), a.std(ddof=1)))
  np.testing.assert_allclose(summary["b"]["cross_group@20"], (0.8, np.std([0.7, 0.9], ddof=1)))
  text = (tmp_path / "summary.md").read_text()
  # sorted by recall@20: a before b
  assert text.index("| a |") < text.index("| b |")
  assert f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" in text
  assert "| c | 0.050 | 0.500 | 100 | – | 1 |" in text  # one seed: no "± 0.000"
  assert (tmp_path / "metrics_bars.png").stat().st_size > 10_000
  assert (tmp_path / "quality_vs_folding.png").stat().st_size > 10_000


def test_overrides_reject_unknown_keys():
  with pytest.raises(sweep.ConfigError, match="unknown config key 'loss.nope'"):
    sweep.apply_overrides(synthetic.get_config(), (("loss.nope", 1),))


def test_folding_strategies_flag_trains_a_subset_and_reports_every_finished_run(tmp_path):
  wd = tmp_path / "f"
  base = [sys.executable, "-m", "experiments.folding", f"--workdir={wd}", "--seeds=0", *TINY]
  for subset in ("uniform", "positive_only"):
    out = subprocess.run(
        base + [f"--strategies={subset}"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
  assert "1 strategies x 1 seeds" in out.stdout
  with open(wd / "results.csv") as f:
    assert sorted(r["strategy"] for r in csv.DictReader(f)) == ["positive_only", "uniform"]
  summary = (wd / "summary.md").read_text()
  assert "| uniform |" in summary and "| positive_only |" in summary
  assert "NOT RUN (not judged, not in the table): positive_only+gravity, full_softmax, " in (
      out.stdout
  )
  bad = subprocess.run(
      base + ["--strategies=nope"], cwd=REPO, capture_output=True, text=True, timeout=120
  )
  assert bad.returncode == 2 and "unknown nope" in bad.stderr


def _summary(rows):
  """strategy -> (cross_group@20, recall@20), in report.summarize's format (n = 1)."""
  return {
      s: {report.FOLDING: (c, 0.0), report.QUALITY: (r, 0.0), "n": 1} for s, (c, r) in rows.items()
  }


def test_folding_checks_pass_fail_and_the_undertrained_note():
  good = _summary(
      {
          "positive_only": (0.70, 0.01),
          "positive_only+gravity": (0.30, 0.3),
          "full_softmax": (0.01, 0.60),
          "uniform": (0.04, 0.46),
          "unigram0.75": (0.02, 0.44),
      }
  )
  lines = folding.checks(good, groups=4)
  # 0.70 >= 0.8 x 3/4 = 0.6; uniform 0.46 >= 0.45 = 0.75 x 0.60; unigram 0.44 < 0.45;
  # gravity 0.30 <= 0.35 = 0.70 / 2.
  verdicts = [line.split(":")[0] for line in lines]
  assert verdicts == ["PASS", "PASS", "PASS", "FAIL", "PASS", "NOTE"], lines
  assert "unigram0.75" in lines[3]
  # unigram keeps the groups apart but misses recall: one NOTE names the measured cause.
  notes = [line for line in lines if line.startswith("NOTE")]
  assert len(notes) == 1 and notes[0].startswith("NOTE: unigram0.75 keeps the groups apart")
  assert "experiments/configs/popularity_tail.py" in notes[0]
  fine = dict(good, **{"unigram0.75": good["uniform"]})
  assert not any(line.startswith("NOTE") for line in folding.checks(fine, groups=4))
  # A full softmax that itself mixes the groups (the undertrained case) is said plainly.
  bad = dict(good, full_softmax=good["positive_only"])
  lines = folding.checks(bad, groups=4)
  assert lines[1].startswith("FAIL: full_softmax")
  assert lines[-1].startswith("NOTE: the full softmax itself mixes the groups (")
  assert folding.checks(good, groups=1) == ["only one group: folding is not defined here"]


def test_folding_select_quick_subset_names_and_errors():
  runs = sweep.declared_runs(folding_config.get_config())
  labels = [r.strategy for r in runs]
  assert [r.strategy for r in sweep.select(runs, "")] == labels
  quick_config = folding_config.get_config("quick")
  assert sweep.declared_runs(quick_config) == runs  # quick declares all, trains a subset
  quick = [r.strategy for r in sweep.select(runs, quick_config.sweep.only)]
  assert quick == [s for s in labels if s in folding_config.QUICK]
  assert len(quick) == len(folding_config.QUICK)
  # the quick run keeps what its checks and its PCA picture read
  assert {"positive_only", "positive_only+gravity", "full_softmax", "uniform"} <= set(quick)
  # names win over --quick (a later --config.sweep.only), in the table's order
  argv = folding.legacy_argv(
      ["folding", "--quick", "--strategies=wals_w0=0,uniform", "--seeds", "0,1", "--workdir=w"]
  )
  assert argv == [
      "folding",
      f"--config={folding.CONFIG}:quick",
      "--config.sweep.only=wals_w0=0,uniform",
      "--config.sweep.seeds=0,1",
      "--workdir=w",
  ]
  picked = sweep.select(runs, "wals_w0=0,uniform")
  assert [r.strategy for r in picked] == ["uniform", "wals_w0=0"]
  with pytest.raises(ValueError, match="unknown nope; choose from positive_only"):
    sweep.select(runs, "uniform,nope")
  # labels that hold commas themselves (negatives_vs_quality's) are found whole
  comma = [sweep.Run(x, ()) for x in ("a,K=1", "a,K=10", "b")]
  assert [r.strategy for r in sweep.select(comma, "b,a,K=10")] == ["a,K=10", "b"]
  assert folding.legacy_argv(["f", "--config=x.py:movielens", "--quick"])[1] == (
      "--config=x.py:movielens,quick"
  )


def test_folding_checks_of_a_subset_say_not_checked_instead_of_failing():
  # `--strategies=uniform,unigram0.75`: no positive-only, gravity or full softmax run, so
  # only the folding half of the samplers' prediction can be judged.
  lines = folding.checks(
      _summary({"uniform": (0.003, 0.18), "unigram0.75": (0.08, 0.14)}), groups=4
  )
  assert lines == [
      "PASS: uniform: cross_group@20 = 0.003 (<= 0.05), recall@20 = 0.180 (recall bound not "
      "checked: no full_softmax run)",
      "FAIL: unigram0.75: cross_group@20 = 0.080 (<= 0.05), recall@20 = 0.140 (recall bound "
      "not checked: no full_softmax run)",
      "NOT CHECKED (their strategies were not run): positive-only folds; the recall bound "
      "(>= 0.75 x full softmax); gravity halves folding",
  ]
  assert not any("nan" in line for line in lines)
  only_po = folding.checks(_summary({"positive_only": (0.70, 0.0)}), groups=4)
  assert only_po[0].startswith("PASS: positive-only folds")
  assert only_po[1] == (
      "NOT CHECKED (their strategies were not run): the recall bound "
      "(>= 0.75 x full softmax); gravity halves folding"
  )


def _spread_by_active_sets(y, gap):
  """min sum (l - y)^2 s.t. sorted gaps >= gap, by trying every set of tight constraints:
  each set splits the sorted points into runs held exactly `gap` apart, a run centred on
  its points' mean; the best feasible candidate is the optimum (the problem is convex)."""
  import itertools

  order = np.argsort(y, kind="stable")
  ys = np.asarray(y, float)[order]
  n, best = len(ys), None
  for tight in itertools.product([False, True], repeat=n - 1):
    l, start = np.empty(n), 0
    for end in [i + 1 for i, t in enumerate(tight) if not t] + [n]:
      offs = gap * np.arange(end - start)
      l[start:end] = offs + np.mean(ys[start:end] - offs)
      start = end
    if np.all(np.diff(l) >= gap - 1e-12):
      cost = np.sum((l - ys) ** 2)
      if best is None or cost < best[0]:
        best = (cost, l)
  out = np.empty(n)
  out[order] = best[1]
  return out


def test_spread_labels_is_the_closest_spacing_of_the_points():
  # closed forms: a lone point stays; coincident points spread symmetrically about it
  np.testing.assert_allclose(report.spread_labels([0.3], 0.1), [0.3])
  np.testing.assert_allclose(report.spread_labels([0.5, 0.5], 0.1), [0.45, 0.55])
  np.testing.assert_allclose(report.spread_labels([0.5, 0.5, 0.5], 0.1), [0.4, 0.5, 0.6])
  np.testing.assert_allclose(report.spread_labels([0.9, 0.1], 0.1), [0.9, 0.1])  # apart
  rng = np.random.default_rng(0)
  for n in (2, 4, 7):
    for _ in range(20):
      y = rng.uniform(0, 0.3, n)
      np.testing.assert_allclose(
          report.spread_labels(y, 0.05), _spread_by_active_sets(y, 0.05), atol=1e-12
      )


def _config_modules():
  return sorted(
      f[:-3]
      for f in os.listdir(os.path.join(REPO, "experiments", "configs"))
      if f.endswith(".py") and f not in ("__init__.py", "common.py")
  )


@pytest.mark.parametrize("name", _config_modules())
def test_every_config_loads_with_its_variants_and_its_sweep_validates(tmp_path, name):
  """get_config() and each variant it knows (`quick`, `movielens`) load; an ablation's
  declared sweep passes sweep.check (its analysis functions exist, labels are unique,
  every run x seed config validates); its docstring names the command that runs it."""
  import importlib
  from experiments.configs import common

  data = tmp_path / "ml"
  data.mkdir()
  for f in ("ratings.csv", "movies.csv"):
    (data / f).write_text("")
  module = importlib.import_module(f"experiments.configs.{name}")
  configs = {"": module.get_config()}
  if "arg" in module.get_config.__code__.co_varnames:
    for variant in ("quick", "movielens", "tune", "tune,quick"):
      try:
        configs[variant] = module.get_config(variant)
      except ValueError as err:
        assert "unknown config variant" in str(err)
    with pytest.raises(ValueError, match="unknown config variant 'nope'"):
      module.get_config("nope")
  for variant, config in configs.items():
    with config.unlocked():
      if "data" in config and config.data.name != "synthetic":
        # the default paths: REPO/../shared/data/{ml-latest-small,gowalla}
        assert config.data.path in (common.ml_latest_small(), common.gowalla())
        config.data.path = str(data)
    if "tune" in config:  # every trial config of the search validates
      from experiments import tune

      tune.check(config)
      continue
    if "sweep" not in config:
      sweep.validate_config(config)
      continue
    assert f"--config=experiments/configs/{name}.py" in module.__doc__ or (
        f"experiments/configs/{name}.py" in module.__doc__
    ), name
    runs = sweep.check(config)
    declared = sweep.declared_runs(config)
    assert len({r.strategy for r in declared}) == len(declared)
    assert set(runs) <= set(declared)
    if variant == "quick":
      assert tuple(config.sweep.seeds) == (0,)
    if name == "gradient_bias":
      assert declared == []  # a measurement of its own, no training sweep
    else:
      assert runs and config.sweep.seeds and config.sweep.title
  assert "quick" in configs or name in ("synthetic", "movielens")


def test_ablation_configs_keep_their_recorded_sweeps():
  """The declared sweeps that docs/RESULTS.md's tables were measured with."""

  def labels(name, arg=None):
    import importlib

    c = importlib.import_module(f"experiments.configs.{name}").get_config(arg)
    return [r.strategy for r in sweep.select(sweep.declared_runs(c), c.sweep.only)]

  default = [
      "positive_only",
      "positive_only+gravity",
      "full_softmax",
      "uniform",
      "unigram0.75",
      "in_batch+logq",
      "in_batch-nologq",
      "mixed",
      "hard_exact",
      "hard_pool",
      "hard_topk",
      "neg_cache",
      "wals_w0=0",
      "wals_w0=0.1",
  ]
  assert labels("folding") == default
  assert labels("folding", "all") == default[:11] + ["kernel"] + default[11:]
  assert labels("logq") == [f"T={t},{q}" for t in (0.05, 0.07, 0.14) for q in ("no_logq", "logq")]
  nvq = labels("negatives_vs_quality")
  assert len(nvq) == 1 + 2 * (6 * 6 - 2 - 1) and "in_batch,K=256,logq" not in nvq
  assert len(labels("hard_negatives")) == 1 + 2 * 3 * 3 + 3
  assert labels("gravity_mf") == ["observed_only", "l2=0.1", "gravity=1.0", "l2=0.1+gravity=1.0"]
  assert labels("sampled_metrics") == ["mf_d8", "mf_d32", "mf_d128", "softmax_dnn", "wals"]
  assert labels("popularity_tail") == ["full_softmax", "uniform", "unigram0.75"]


def test_missing_data_path_is_one_clear_message(tmp_path, monkeypatch):
  from experiments.configs import common

  monkeypatch.chdir(tmp_path)
  # resolved against the repository, written relative to the current folder
  assert os.path.abspath(common.ml_latest_small()) == os.path.normpath(
      os.path.join(REPO, "..", "shared", "data", "ml-latest-small")
  )
  assert common.missing_data(str(tmp_path)) is None
  msg = common.missing_data(str(tmp_path / "none"))
  assert "does not exist" in msg and "jaxrec.data.download" in msg
  assert "--config.data.path=" in msg

"""What we promise: clear errors before compute, crash safety, numerics, reproducibility."""

import json
import os
import subprocess
import sys

import pytest

from experiments import sweep
from jaxrec import config, data, step, train
from jaxrec.data import DataError
import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


cfg = tiny.config


@pytest.mark.parametrize(
    "over,message",
    [
        ({"loss.name": "hinge"}, "loss.name='hinge' is not one of full, sampled, positive_only"),
        ({"sampler.name": "magic"}, "sampler.name='magic' is not one of uniform, unigram"),
        ({"model.name": "gnn"}, "model.name='gnn' is not one of mf, dnn, wals"),
        ({"train.optimizer": "lion"}, "train.optimizer='lion' is not one of sgd, adagrad, adam"),
        ({"model.dim": -4}, "model.dim=-4 must be > 0"),
        ({"train.batch_size": 0}, "train.batch_size=0 must be > 0"),
        ({"data.num_items": 0}, "data.num_items=0 must be > 0"),
        ({"sampler.num_negatives": 0}, "sampler.num_negatives=0 must be > 0"),
        ({"loss.temperature": 0.0}, "loss.temperature=0.0 must be > 0"),
        ({"sampler.temperature": -1.0}, "sampler.temperature=-1.0 must be > 0"),
        (
            {"data.name": "csv", "data.path": "/nonexistent/x.csv"},
            "data.path='/nonexistent/x.csv' does not exist",
        ),
        ({"data.name": "csv", "data.path": ""}, "data.path is required for data.name=csv"),
        (
            {"sampler.replace": False, "sampler.num_negatives": 200},
            "sampler.num_negatives=200 must be < the number of items \\(200\\)",
        ),
        (
            {"sampler.name": "hard_exact", "sampler.hard_fraction": 1.5},
            "sampler.hard_fraction=1.5 must be in \\[0, 1\\]",
        ),
        (
            {"sampler.hard_fraction": 0.5},
            "sampler.hard_fraction=0.5 applies to hard_exact, hard_pool and hard_topk, not "
            "sampler.name=uniform",
        ),
        (
            {"sampler.name": "in_batch", "sampler.batch_negatives": 64},
            "sampler.batch_negatives=64 exceeds train.batch_size=32",
        ),
        ({"sampler.batch_negatives": 4}, "applies to in_batch and mixed, not sampler.name=uniform"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, over, message):
  with pytest.raises(config.ConfigError, match=message):
    train.train_and_evaluate(cfg(**over), str(tmp_path / "w"), verbose=False)
  assert not (tmp_path / "w" / "results.json").exists()


def test_unreadable_path(tmp_path, monkeypatch):
  p = tmp_path / "r.csv"
  p.write_text("1,2\n")
  # tests run as root in CI, where chmod 0 does not stop reads: make access() say no
  real_access = os.access
  monkeypatch.setattr(
      os, "access", lambda path, mode: False if str(path) == str(p) else real_access(path, mode)
  )
  with pytest.raises(config.ConfigError, match="is not readable"):
    train.train_and_evaluate(
        cfg(**{"data.name": "csv", "data.path": str(p)}), str(tmp_path / "w"), verbose=False
    )


def test_empty_and_malformed_data_files(tmp_path):
  empty = tmp_path / "empty.csv"
  empty.write_text("")
  with pytest.raises(DataError, match="empty.csv.*no interactions"):
    train.train_and_evaluate(
        cfg(**{"data.name": "csv", "data.path": str(empty)}), str(tmp_path / "w1"), verbose=False
    )
  bad = tmp_path / "bad.csv"
  bad.write_text("1,10\n2,20\n3,x,y,z,w\n")
  with pytest.raises(DataError, match="bad.csv:3:"):
    train.train_and_evaluate(
        cfg(**{"data.name": "csv", "data.path": str(bad)}), str(tmp_path / "w2"), verbose=False
    )


def _main(args, **kw):
  return subprocess.run(
      [sys.executable, "-m", "experiments.main", *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
      **kw,
  )


def test_launcher_rejects_unknown_key_and_bad_value_in_one_line(tmp_path):
  r = _main([f"--workdir={tmp_path}/a", "--config.loss.nope=1"])
  assert r.returncode != 0 and "nope" in r.stderr, r.stderr[-800:]
  r = _main([f"--workdir={tmp_path}/b", "--config.loss.name=hinge"])
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == (
      "error: loss.name='hinge' is not one of full, sampled, positive_only"
  )
  assert not os.path.exists(f"{tmp_path}/b/metrics.jsonl")  # failed before any compute


def test_nonfinite_loss_stops_naming_step_and_checkpoint(tmp_path):
  """A learning rate of 1e30 overflows the squared positive-only loss within a few steps:
  the run stops, naming the first bad step and the last good checkpoint."""
  c = cfg(
      **{
          "loss.name": "positive_only",
          "train.learning_rate": 1e30,
          "train.optimizer": "sgd",
          "train.checkpoint_every": 20,
          "train.steps": 60,
      }
  )
  with pytest.raises(
      train.NonFiniteLossError, match=r"at step \d+; last good checkpoint: (None|\d+)"
  ):
    train.train_and_evaluate(c, str(tmp_path / "nan"), verbose=False)
  assert not (tmp_path / "nan" / "results.json").exists()


def test_skip_nonfinite_steps_keeps_state_finite(tmp_path):
  import jax
  import jax.numpy as jnp

  c = cfg(
      **{
          "loss.name": "positive_only",
          "train.learning_rate": 1e30,
          "train.optimizer": "sgd",
          "train.skip_nonfinite": True,
      }
  )
  spec = config.StepSpec.from_config(c)
  tr, _, _ = data.load_data(c.data, 0)
  ddata = step.device_data(tr)
  state = step.init_state(spec, c, tr.num_users, tr.num_items, 0, 16)
  for _ in range(10):
    state, _ = step.jitted_train_step(spec, state, ddata)
  assert int(state.first_bad_step) >= 0  # some step did blow up ...
  assert int(state.step) == 10
  # ... and was skipped: every table entry is still finite
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state.tables))


def test_same_config_and_seed_give_bit_identical_results(tmp_path):
  a = train.train_and_evaluate(cfg(), str(tmp_path / "a"), verbose=False)
  b = train.train_and_evaluate(cfg(), str(tmp_path / "b"), verbose=False)
  assert a["metrics"] == b["metrics"]
  c = train.train_and_evaluate(cfg(seed=1), str(tmp_path / "c"), verbose=False)
  assert c["metrics"] != a["metrics"]
  run = a["run"]
  for k in ("platform", "device_count", "steps_per_second", "train_seconds", "git_commit"):
    assert k in run
  assert set(run["versions"]) >= {"jax", "jaxlib", "flax", "optax"}
  with open(tmp_path / "a" / "config.json") as f:
    assert json.load(f) == a["config"]


def test_torn_checkpoint_is_skipped_for_the_previous_one(tmp_path):
  """Damage the newest checkpoint (as a kill during a write outside orbax's atomic rename
  would): the rerun restores the older one and still ends with the uninterrupted metrics."""
  c = cfg(**{"train.checkpoint_every": 20})
  ref = train.train_and_evaluate(c, str(tmp_path / "ref"), verbose=False)["metrics"]
  wd = tmp_path / "torn"
  train.train_and_evaluate(c, str(wd), verbose=False)
  os.remove(wd / "results.json")
  ck = wd / "checkpoints"
  steps = sorted(int(d) for d in os.listdir(ck) if d.isdigit())
  assert steps == [40, 60]
  for root, _, files in os.walk(ck / "60"):  # truncate every data file of the newest
    for f in files:
      with open(os.path.join(root, f), "r+b") as fh:
        fh.truncate(0)
  res = train.train_and_evaluate(c, str(wd), verbose=False)
  assert res["run"]["resumed_from_step"] == 40
  assert res["metrics"] == ref


_KILL_DURING_SAVE = r"""
import os, signal, sys, threading, time
wd = sys.argv[1]
ck = os.path.join(wd, "checkpoints")

def watch():  # SIGKILL ourselves while a checkpoint is being written (its tmp folder exists),
  while True:  # once an earlier checkpoint is complete
    try:
      names = os.listdir(ck)
    except OSError:
      names = []
    if any(n.isdigit() for n in names) and any("tmp" in n for n in names):
      os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.0002)

threading.Thread(target=watch, daemon=True).start()
from experiments import sweep
from experiments.configs import synthetic
from jaxrec import train
c = synthetic.get_config()
over = dict(eval(sys.argv[2]))
train.train_and_evaluate(sweep.apply_overrides(c, tuple(over.items())), wd, verbose=False)
"""


def test_sigkill_during_checkpoint_write_then_rerun_matches(tmp_path):
  """Kill -9 while orbax is writing a checkpoint: the half-written step is never restored,
  the rerun resumes from the last complete one and ends with the uninterrupted metrics."""
  over = {
      "data.num_users": 300,
      "data.num_items": 200,
      "data.interactions_per_user": 10,
      "model.dim": 8,
      "model.hidden": (16,),
      "train.steps": 400,
      "train.batch_size": 32,
      "train.log_every": 50,
      "train.checkpoint_every": 50,
      "sampler.num_negatives": 8,
  }
  wd = tmp_path / "killed"
  r = subprocess.run(
      [sys.executable, "-c", _KILL_DURING_SAVE, str(wd), repr(over)],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert r.returncode == -9, r.stderr[-1500:]  # it really died by SIGKILL ...
  names = os.listdir(wd / "checkpoints")
  assert any("tmp" in n for n in names), names  # ... in the middle of a save
  assert not (wd / "results.json").exists()
  done = max(int(n) for n in names if n.isdigit())
  res = train.train_and_evaluate(cfg(**over), str(wd), verbose=False)
  assert res["run"]["resumed_from_step"] == done
  ref = train.train_and_evaluate(cfg(**over), str(tmp_path / "ref"), verbose=False)
  assert res["metrics"] == ref["metrics"]


# --------------------------------------------------------------------------------------
# One user-facing error path: each expected failure ends in <= 2 stderr lines naming the
# cause and a non-zero exit (the launcher in a subprocess, as a user runs it).

_FILES = {
    "badweight.csv": "1,10,1\n2,20,1\n3,30,abc\n",
    "nanweight.csv": "1,10,1\n2,20,nan\n",
    "negweight.csv": "1,10,1\n1,11,-2\n2,10,1\n",
    "empty.csv": "",
    "header.csv": "user,item,weight\n",
    "nots.csv": "1,10\n1,11\n2,10\n2,12\n3,11\n3,12\n",
    "single.csv": "".join(f"{u},{u + 100}\n" for u in range(40)),
}


def _data_files(tmp_path):
  for name, text in _FILES.items():
    (tmp_path / name).write_text(text)
  (tmp_path / "adir.csv").mkdir()


def _csv(name, *extra):
  return lambda d: ["--config.data.name=csv", f"--config.data.path={d}/{name}", *extra]


@pytest.mark.parametrize(
    "args,cause",
    [
        (_csv("badweight.csv"), "badweight.csv:3: weight 'abc' is not a number"),
        (_csv("nanweight.csv"), "nanweight.csv:2: weight 'nan' is not a number"),
        (_csv("negweight.csv"), "negweight.csv: user 1 item 11 has a negative weight -2.0"),
        (_csv("empty.csv"), "empty.csv: no interactions"),
        (_csv("header.csv"), "header.csv: no interactions"),
        (_csv("adir.csv"), "adir.csv: is a directory"),
        (_csv("nots.csv", "--config.data.split=last"), "data.split=last) needs timestamps"),
        (_csv("single.csv"), "no user to evaluate"),
        (lambda d: ["--config.train.stepz=5"], "unknown config key 'config.train.stepz'"),
        (lambda d: ["--config.data.language_split=400"], "language_split=400 exceeds the number"),
        (
            lambda d: ["--config.data.min_rating=3"],
            "data.min_rating=3.0 applies to data with weights",
        ),
        (
            lambda d: ["--config.train.batching=epoch", "--config.train.batch_size=5000"],
            "train.batch_size=5000 exceeds the 2400 training interactions",
        ),
    ],
)
def test_bad_input_ends_in_one_line(tmp_path, args, cause):
  _data_files(tmp_path)
  wd = tmp_path / "w"
  r = _main([f"--workdir={wd}", *_SMALL_FLAGS, *args(tmp_path)])
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and 1 <= len(lines) <= 2, r.stderr[-3000:]
  assert cause in r.stderr, r.stderr
  assert "Traceback" not in r.stderr
  # nothing trained, nothing claimed: the same workdir takes a corrected config
  assert not (wd / "config.json").exists() and not (wd / "checkpoints").exists()


def test_debug_shows_the_traceback(tmp_path):
  _data_files(tmp_path)
  bad = _csv("badweight.csv")(tmp_path)
  r = _main([f"--workdir={tmp_path}/w", "--debug", *_SMALL_FLAGS, *bad])
  assert r.returncode != 0 and "Traceback" in r.stderr and "badweight.csv:3" in r.stderr
  r = _main(
      [f"--workdir={tmp_path}/w", *_SMALL_FLAGS, *bad], env={**os.environ, "JAXREC_DEBUG": "1"}
  )
  assert r.returncode != 0 and "Traceback" in r.stderr


def test_unwritable_workdir_names_the_path(tmp_path):
  if os.geteuid() == 0:  # root ignores permissions: a workdir under a regular file
    (tmp_path / "file").write_text("")
    wd = tmp_path / "file" / "w"
  else:
    (tmp_path / "ro").mkdir(mode=0o555)
    wd = tmp_path / "ro" / "w"
  r = _main([f"--workdir={wd}", *_SMALL_FLAGS])
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
  assert str(tmp_path) in lines[0] and lines[0].startswith("error: ")


def test_report_without_results_csv(tmp_path):
  r = subprocess.run(
      [sys.executable, "-m", "experiments.report", f"--workdir={tmp_path}"],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and len(lines) == 1, r.stderr
  assert f"{tmp_path}/results.csv" in lines[0] and "no results.csv" in lines[0]


_PAUSED = r"""
import faulthandler, os, signal, sys, time
faulthandler.register(signal.SIGUSR1)  # a hung child's stacks, for the test's message
# A terminal's foreground process has Python's SIGINT handler. A test suite started as a
# background job (`cmd &` without job control) hands its children SIGINT *ignored*
# (POSIX), and Python keeps an ignored SIGINT: without this line the child never sees it.
signal.signal(signal.SIGINT, signal.default_int_handler)
from jaxrec import train
wd = sys.argv[1]
def slow(*a, **kw):
  open(wd + "/STARTED", "w").close()
  while True:
    time.sleep(0.05)
train._train_loop = slow
sys.argv = ["main", "--workdir=" + sys.argv[1]] + sys.argv[2:]
from absl import flags
from experiments import main, cli
flags.mark_flag_as_required("workdir")
cli.run(main.main)
"""


def test_ctrl_c_exits_130_in_one_line(tmp_path):
  import signal
  import time

  wd = tmp_path / "w"
  p = subprocess.Popen(
      [sys.executable, "-c", _PAUSED, str(wd), *_SMALL_FLAGS],
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  while not (wd / "STARTED").exists():
    assert p.poll() is None, p.communicate()
    time.sleep(0.05)
  p.send_signal(signal.SIGINT)
  try:
    _, err = p.communicate(timeout=120)
  except subprocess.TimeoutExpired:  # say where the child was
    try:  # SIGINT (signal 2: 0x2 in these masks) blocked, ignored or still pending?
      with open(f"/proc/{p.pid}/status") as f:
        masks = [line.strip() for line in f if line.startswith(("SigPnd", "SigBlk", "SigIgn"))]
    except OSError:
      masks = []
    p.send_signal(signal.SIGUSR1)
    time.sleep(2)
    p.kill()
    _, err = p.communicate()
    pytest.fail(f"no exit 120 s after SIGINT; {masks}; the child's threads:\n{err[-6000:]}")
  assert p.returncode == 130, err[-3000:]
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "interrupted" in lines[0], err


@pytest.mark.parametrize("tool", ["main", "sweep", "report", "folding", "tune"])
def test_help_exits_0(tool):
  r = subprocess.run(
      [sys.executable, "-m", f"experiments.{tool}", "--help"],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert "--workdir" in r.stdout
  if tool == "tune":  # the tune section's keys are explained
    assert "tune.methods" in r.stdout and "tune.refit" in r.stdout
  if tool == "main":  # points to the config keys and the registered names
    from jaxrec import losses, models, samplers

    assert "  train: batch_size, batching, checkpoint_every" in r.stdout
    for text in (models.help_text(), losses.help_text(), samplers.help_text()):
      assert text in r.stdout


_SMALL_FLAGS = [
    "--config.data.num_users=300",
    "--config.data.num_items=200",
    "--config.data.interactions_per_user=10",
    "--config.model.dim=8",
    "--config.train.steps=60",
    "--config.train.batch_size=32",
    "--config.train.log_every=20",
    "--config.train.checkpoint_every=20",
    "--config.sampler.num_negatives=8",
]


# --------------------------------------------------------------------------------------
# Run facts that stay true; a full disk; data checks that need a loaded data set.


def _fake_clock(monkeypatch, compile_s=50.0, step_s=0.01):
  """train.clock reads a fake time that the step advances: compile_s for the first step
  of a run (state.step == 0 before it), step_s for every other."""
  now = [0.0]
  real = step.jitted_train_step

  def timed_step(spec, state, ddata):
    now[0] += compile_s if int(state.step) == 0 else step_s
    return real(spec, state, ddata)

  monkeypatch.setattr(step, "jitted_train_step", timed_step)
  monkeypatch.setattr(train, "clock", lambda: now[0])


def test_steps_per_second_excludes_compilation(tmp_path, monkeypatch):
  _fake_clock(monkeypatch)
  res = train.train_and_evaluate(cfg(), str(tmp_path / "w"), verbose=False)
  run = res["run"]
  assert run["compile_seconds"] == pytest.approx(50.0)
  assert run["steps_per_second"] == pytest.approx(100.0)  # 59 steps at 0.01 s
  assert run["train_seconds"] == pytest.approx(59 * 0.01)
  with open(tmp_path / "w" / "metrics.jsonl") as f:
    logged = [json.loads(line).get("steps_per_second") for line in f]
  assert logged[:3] == pytest.approx([100.0] * 3)


def test_sweep_summary_reports_steps_per_second_after_compilation(tmp_path, monkeypatch):
  _fake_clock(monkeypatch)
  path = sweep.run_sweep(cfg(), [sweep.Run("base", ())], [0, 1], str(tmp_path))
  from experiments import report

  rows = report.read_results(str(tmp_path))
  assert [r["steps_per_second"] for r in rows] == pytest.approx([100.0, 100.0])
  assert [r["compile_seconds"] for r in rows] == pytest.approx([50.0, 50.0])
  md = report.write_summary(
      str(tmp_path), report.summarize(rows), title="t", metrics=("recall@20",)
  )
  assert os.path.exists(path)
  with open(md) as f:
    assert "| 100 | 50.0 | 2 |" in f.read()


def test_rerun_of_a_finished_run_leaves_its_records_byte_identical(tmp_path):
  wd = tmp_path / "w"
  r = _main([f"--workdir={wd}", *_SMALL_FLAGS])
  assert r.returncode == 0, r.stderr[-2000:]
  before = {n: (wd / n).read_bytes() for n in ("metrics.jsonl", "results.json", "config.json")}
  r = _main([f"--workdir={wd}", *_SMALL_FLAGS])
  assert r.returncode == 0 and "already finished" in r.stdout, r.stdout + r.stderr
  assert {n: (wd / n).read_bytes() for n in before} == before


def test_run_failed_on_data_does_not_claim_its_workdir(tmp_path):
  _data_files(tmp_path)
  wd = tmp_path / "w"
  r = _main([f"--workdir={wd}", *_SMALL_FLAGS, *_csv("badweight.csv")(tmp_path)])
  assert r.returncode == 2 and "badweight.csv:3" in r.stderr
  r = _main([f"--workdir={wd}", *_SMALL_FLAGS])  # the corrected run, no --overwrite
  assert r.returncode == 0, r.stderr[-2000:]
  assert (wd / "results.json").exists()


def test_disk_full_names_the_path_and_last_checkpoint(tmp_path, monkeypatch):
  import errno

  from jaxrec import workdir as workdir_io

  real = workdir_io.append_jsonl

  def full_at_40(path, row):
    if row.get("step") == 40:
      raise OSError(errno.ENOSPC, "No space left on device", path)
    real(path, row)

  monkeypatch.setattr(workdir_io, "append_jsonl", full_at_40)
  wd = tmp_path / "w"
  with pytest.raises(workdir_io.DiskFullError) as info:
    train.train_and_evaluate(cfg(**{"train.checkpoint_every": 20}), str(wd), verbose=False)
  msg = info.value.strerror
  assert len(msg.splitlines()) == 1
  assert f"writing {wd}/metrics.jsonl" in msg and "last good checkpoint: 20" in msg
  assert str(wd / "checkpoints") in msg
  from experiments import cli

  assert cli.message(info.value) == f"error: {msg}"


def test_leftover_tmp_checkpoints_are_removed_at_start(tmp_path):
  wd = tmp_path / "w"
  tmp = wd / "checkpoints" / "40.orbax-checkpoint-tmp-1700000000"
  tmp.mkdir(parents=True)
  (tmp / "shard").write_bytes(b"partial")
  res = train.train_and_evaluate(cfg(**{"train.checkpoint_every": 20}), str(wd), verbose=False)
  assert res["run"]["resumed_from_step"] == 0
  assert not any("tmp" in n for n in os.listdir(wd / "checkpoints"))


def _weighted_csv(path, weights):
  import numpy as np

  rng = np.random.default_rng(0)
  rows = {(u, int(i)) for u in range(60) for i in rng.choice(50, 8, replace=False)}
  with open(path, "w") as f:
    for k, (u, i) in enumerate(sorted(rows)):
      f.write(f"{u},{i},{weights[k % len(weights)]}\n")
  return len(rows)


def test_ignored_weights_warn_in_one_line(tmp_path):
  _weighted_csv(tmp_path / "w.csv", [1, 2, 5])
  args = [
      f"--workdir={tmp_path}/w",
      "--config.data.name=csv",
      f"--config.data.path={tmp_path}/w.csv",
      *_SMALL_FLAGS[3:],
  ]
  r = _main(args)
  assert r.returncode == 0, r.stderr[-2000:]
  warn = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
  assert warn == [
      "warning: the data carry weights that model.name=dnn ignores (every interaction counts "
      "once); weights are used by wals"
  ]


def test_min_rating_filters_csv_weights(tmp_path):
  import numpy as np

  n = _weighted_csv(tmp_path / "w.csv", [1, 2, 5])
  c = cfg(**{"data.name": "csv", "data.path": str(tmp_path / "w.csv")})
  everything = data.READERS["csv"](c.data)
  assert len(everything.user_ids) == n
  c = cfg(**{"data.name": "csv", "data.path": str(tmp_path / "w.csv"), "data.min_rating": 2.0})
  kept = data.READERS["csv"](c.data)
  assert np.all(kept.weights >= 2.0)
  assert len(kept.user_ids) == int(np.sum(everything.weights >= 2.0)) < n
  (tmp_path / "now.csv").write_text("1,2\n3,4\n")
  c = cfg(**{"data.name": "csv", "data.path": str(tmp_path / "now.csv"), "data.min_rating": 2.0})
  with pytest.raises(DataError, match="needs a weight column"):
    data.READERS["csv"](c.data)


def test_real_disk_full_on_a_small_tmpfs(tmp_path):
  """A real full disk (a 300 KiB tmpfs; needs root to mount, skipped otherwise): our line
  names the disk and the last good checkpoint; after space is freed the rerun finishes
  and orbax's leftover temporary folder is gone."""
  disk = tmp_path / "disk"
  disk.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)]).returncode:
    pytest.skip("cannot mount a tmpfs here")
  try:
    args = [f"--workdir={disk}/w", *_SMALL_FLAGS[3:], "--config.data.num_users=2000"]
    args += ["--config.data.num_items=2000", "--config.model.dim=16"]
    r = _main(args)
    lines = r.stderr.strip().splitlines()
    # the last line is ours; tensorstore's writer threads may print "Event loop is closed"
    # tracebacks before it (from C++, past Python's hooks: a known limit in BUILD_NOTES)
    assert r.returncode == 2 and lines[-1].startswith("error: "), r.stderr[-3000:]
    assert f"the disk mounted at {disk}" in lines[-1] and "last good checkpoint:" in lines[-1]
    assert all("Event loop is closed" in x or not x.startswith("error") for x in lines[:-1])
    assert any("tmp" in n for n in os.listdir(disk / "w" / "checkpoints"))
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    r = _main(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not any("tmp" in n for n in os.listdir(disk / "w" / "checkpoints"))
  finally:
    subprocess.run(["umount", str(disk)])


@pytest.mark.parametrize("tool", ["sweep", "folding"])
def test_runner_unknown_key_in_one_line(tmp_path, tool):
  r = subprocess.run(
      [
          sys.executable,
          "-m",
          f"experiments.{tool}",
          f"--workdir={tmp_path}",
          "--config.train.stepz=5",
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
  assert "unknown config key 'config.train.stepz'" in lines[0]


def test_quiet_runs_still_say_where_they_are_once_a_minute():
  """A sweep's or tune's run (verbose=False) logs through train.Heartbeat: nothing in its
  first minute (short runs stay silent), then at most one line a minute, tagged with the
  workdir."""
  from jaxrec import train

  now, out = [0.0], []
  beat = train.Heartbeat(
      "runs/x/seed_0", 60.0, clock=lambda: now[0], out=lambda f, *a: out.append(f % a)
  )
  for t in (0.0, 30.0, 59.9):
    now[0] = t
    beat("step %d/%d", int(t), 100)
  assert out == []
  for t in (60.0, 61.0, 119.0, 120.5):
    now[0] = t
    beat("step %d/%d", int(t), 100)
  assert out == ["  (runs/x/seed_0) step 60/100", "  (runs/x/seed_0) step 120/100"]

"""One run per workdir: an OS lock (flock) held for the life of a run, gone with the process."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxrec import workdir as workdir_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL = [
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

# The launcher, paused inside the lock (after the workdir is locked, before data) until
# the file GO exists; it writes STARTED once it holds the lock.
_PAUSED_MAIN = r"""
import os, sys, time
wd, go = sys.argv[1], sys.argv[2]
from jaxrec import train
real = train._run
def paused(*a, **kw):
  open(os.path.join(wd, "STARTED"), "w").close()
  while not os.path.exists(go):
    time.sleep(0.05)
  return real(*a, **kw)
train._run = paused
sys.argv = ["main", "--workdir=" + wd] + sys.argv[3:]
from absl import flags
from experiments import main, cli
flags.mark_flag_as_required("workdir")
cli.run(main.main)
"""


def _main(args):
  return subprocess.run(
      [sys.executable, "-m", "experiments.main", *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )


def _start_paused(wd, go):
  p = subprocess.Popen(
      [sys.executable, "-c", _PAUSED_MAIN, str(wd), str(go), *SMALL],
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  while not (wd / "STARTED").exists():  # waits for the lock to be held (no timing claim)
    assert p.poll() is None, p.communicate()
    time.sleep(0.05)
  return p


def test_second_launch_is_refused_naming_the_holder(tmp_path):
  wd, go = tmp_path / "w", tmp_path / "go"
  first = _start_paused(wd, go)
  try:
    with open(wd / ".lock") as f:
      assert int(f.read()) == first.pid
    second = _main([f"--workdir={wd}", *SMALL])
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"pid {first.pid}" in lines[0] and "in use" in lines[0]
    assert not (wd / "metrics.jsonl").exists()  # the refused run wrote nothing
  finally:
    go.touch()
    out, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-2000:]
  # the first run's records are whole: steps strictly increasing, one final row
  with open(wd / "metrics.jsonl") as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == [20, 40, 60, 60]  # three log rows, then the final evaluation row
  with open(wd / "results.json") as f:
    assert json.load(f)["run"]["steps"] == 60


def test_sigkilled_holder_leaves_no_stale_lock(tmp_path):
  wd, go = tmp_path / "w", tmp_path / "never"
  first = _start_paused(wd, go)
  os.kill(first.pid, signal.SIGKILL)
  first.communicate(timeout=60)
  assert first.returncode == -signal.SIGKILL
  assert (wd / ".lock").exists()  # the file stays, the lock died with the process
  r = _main([f"--workdir={wd}", *SMALL])
  assert r.returncode == 0, r.stderr[-2000:]
  assert (wd / "results.json").exists()


def test_lock_in_process_refuses_a_second_holder(tmp_path):
  """flock locks belong to the open file: a second open in the same process is refused
  too, and the lock is free again once the first `with` ends."""
  with workdir_io.lock(str(tmp_path)):
    with pytest.raises(workdir_io.WorkdirBusyError, match=f"pid {os.getpid()}"):
      with workdir_io.lock(str(tmp_path)):
        pass
  with workdir_io.lock(str(tmp_path)):
    pass

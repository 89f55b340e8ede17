"""End to end through the launcher: data, steps/s, evaluation and memory per catalogue size.

  python -m benchmarks.end_to_end [--sizes=10000,1000000,10000000] [--models=mf,dnn]
      [--users=1000] [--steps=600] [--checkpoint_every=0] [--timeout=1200] [--rounds=1]

Each (model, size) is one `python -m experiments.main` process on the synthetic world
(sampled softmax, uniform K=1024, B=1024, D=64, Adagrad) with its own workdir, so its peak
memory (the child's max RSS, from wait4) is its own. From its results.json: data seconds
(generation and split: `run.data_seconds`), steady-state steps/s (`run.steps_per_second`,
the steps after the compiling one, without evaluation), the final evaluation's seconds
(`run.eval_seconds`: every test user ranked over all N items, with the folding metrics);
compile seconds beside them. Printed per model as ratios to the smallest size's row, in
one run. The number of users stays fixed across sizes (the evaluation then grows with N
alone); checkpoints are off by default (`--checkpoint_every` turns them on; at 10M items
one is ~5 GB for MF, ~10 GB for the DNN). A run that fails (e.g. out of memory) prints its
last line and the table goes on. With --rounds=R every (model, size) runs R times, the
sizes alternating within each round so that a slow spell of a shared box hits every size
alike; the table shows each column's median over the rounds, and the steps/s ratio of
every round is printed beside it (a 10M run's steps/s has moved from 0.69x to 0.91x of
10k's between two runs minutes apart on a shared 2-core box).

Quick look (a couple of minutes on 2 cores): --sizes=10000,1000000 --models=mf --steps=300
Steady state, as docs/RESULTS.md's acceptance rows measure it (about 12 minutes for MF at
10k and 10M): --sizes=10000,10000000 --models=mf --steps=3000 --rounds=3
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_SIZES = flags.DEFINE_list("sizes", ["10000", "1000000", "10000000"], "Catalogue sizes N.")
_MODELS = flags.DEFINE_list("models", ["mf", "dnn"], "Models (mf, dnn).")
_USERS = flags.DEFINE_integer("users", 1000, "Users of the synthetic world (all sizes).")
_PER_USER = flags.DEFINE_integer("interactions_per_user", 20, "Interactions per user.")
_STEPS = flags.DEFINE_integer("steps", 600, "Training steps per run.")
_CKPT = flags.DEFINE_integer("checkpoint_every", 0, "train.checkpoint_every (0: none).")
_TIMEOUT = flags.DEFINE_integer("timeout", 1200, "Seconds before a run is stopped.")
_ROUNDS = flags.DEFINE_integer(
    "rounds", 1, "Runs of each (model, size), sizes alternating; the table shows medians."
)
_CONFIG = "experiments/configs/synthetic.py"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def world_overrides(model: str, num_items: int, users: int, per_user: int) -> dict:
  """The benchmark's settings over experiments/configs/synthetic.py, as config overrides
  (benchmarks.dnn_update_paths times the same step in process)."""
  return {
      "data.name": "synthetic",
      "data.num_users": users,
      "data.num_items": num_items,
      "data.interactions_per_user": per_user,
      "model.name": model,
      "model.dim": 64,
      "loss.name": "sampled",
      "sampler.name": "uniform",
      "sampler.num_negatives": 1024,
      "train.batch_size": 1024,
      "train.optimizer": "adagrad",
  }


def run_one(model: str, num_items: int, workdir: str) -> dict:
  """One launcher process -> its results.json facts + peak RSS (GB), or {"error": ...}."""
  over = {
      **world_overrides(model, num_items, _USERS.value, _PER_USER.value),
      "train.steps": _STEPS.value,
      "train.log_every": max(_STEPS.value // 4, 1),
      "train.checkpoint_every": _CKPT.value,
      "train.checkpoint_seconds": 0.0,
  }
  cmd = [
      sys.executable,
      "-m",
      "experiments.main",
      f"--config={_CONFIG}",
      f"--workdir={workdir}",
      *(f"--config.{k}={v}" for k, v in over.items()),
  ]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([_ROOT, os.environ.get("PYTHONPATH", "")]))
  t0 = time.time()
  with open(os.path.join(workdir, "stdout.txt"), "w") as out:
    proc = subprocess.Popen(cmd, cwd=_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline, status, usage = t0 + _TIMEOUT.value, None, None
    while status is None:  # wait4: this child's own rusage (ru_maxrss in KiB on Linux)
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid == 0:
        status = None
        if time.time() > deadline:
          proc.kill()
        time.sleep(0.5)
    proc.returncode = os.waitstatus_to_exitcode(status)
  wall = time.time() - t0
  peak_gb = usage.ru_maxrss / 2**20
  results = os.path.join(workdir, "results.json")
  if proc.returncode != 0 or not os.path.exists(results):
    with open(os.path.join(workdir, "stdout.txt")) as f:
      lines = [line.strip() for line in f if line.strip()]
    last = lines[-1] if lines else ""
    return {"error": f"rc {proc.returncode} after {wall:.0f}s: {last[:160]}", "peak_gb": peak_gb}
  with open(results) as f:
    run = json.load(f)["run"]
  return {
      "data_seconds": run.get("data_seconds"),
      "steps_per_second": run.get("steps_per_second"),
      "eval_seconds": run.get("eval_seconds"),
      "compile_seconds": run.get("compile_seconds"),
      "peak_gb": peak_gb,
      "process_seconds": wall,
  }


_COLUMNS = ("data_seconds", "steps_per_second", "eval_seconds", "peak_gb")


def table(rows: dict, models, sizes) -> str:
  """Per model: each size's figures and their ratio to the first size's row."""
  head = f"{'model':5s} {'N':>10s}  " + "  ".join(f"{c:>22s}" for c in _COLUMNS)
  lines = [head, f"{'':17s}  " + "  ".join(f"{'value (x first row)':>22s}" for _ in _COLUMNS)]
  for model in models:
    base = rows.get((model, sizes[0]), {})
    for n in sizes:
      r = rows.get((model, n), {})
      if "error" in r:
        lines.append(f"{model:5s} {n:>10d}  failed: {r['error']}")
        continue
      cells = []
      for c in _COLUMNS:
        v, b = r.get(c), base.get(c)
        ratio = f"({v / b:.2f}x)" if v is not None and b else ""
        cells.append(f"{'-' if v is None else f'{v:.2f}':>13s} {ratio:>8s}")
      lines.append(f"{model:5s} {n:>10d}  " + "  ".join(cells))
  return "\n".join(lines)


def median_row(runs: list) -> dict:
  """Each column's median over a (model, size)'s runs (None where no run has a value); an
  error if every run failed."""
  ok = [r for r in runs if "error" not in r]
  if not ok:
    return runs[-1]
  values = {k: [r[k] for r in ok if r.get(k) is not None] for k in ok[0]}
  return {k: statistics.median(v) if v else None for k, v in values.items()}


def main(argv):
  del argv
  if _ROUNDS.value < 1:
    raise app.UsageError(f"--rounds must be >= 1, got {_ROUNDS.value}")
  sizes = sorted(int(s) for s in _SIZES.value)
  models = list(_MODELS.value)
  runs = {(m, n): [] for m in models for n in sizes}
  for r in range(_ROUNDS.value):
    for model in models:
      for n in sizes:
        with tempfile.TemporaryDirectory(prefix="e2e_") as wd:
          runs[(model, n)].append(run_one(model, n, wd))
        round_ = f" (round {r + 1}/{_ROUNDS.value})" if _ROUNDS.value > 1 else ""
        print(f"{model} N={n}{round_}: {json.dumps(runs[(model, n)][-1])}", flush=True)
  rows = {key: median_row(rs) for key, rs in runs.items()}
  load = os.getloadavg()[0]
  print(
      f"\nusers {_USERS.value}, {_PER_USER.value} interactions each, {_STEPS.value} steps, "
      f"checkpoint_every {_CKPT.value}, {os.cpu_count()} CPUs, load average {load:.1f}"
      + (f"; medians of {_ROUNDS.value} rounds" if _ROUNDS.value > 1 else "")
  )
  print(table(rows, models, sizes))
  if _ROUNDS.value > 1:
    for model in models:
      base = runs[(model, sizes[0])]
      for n in sizes[1:]:
        ratios = [
            f"{a['steps_per_second'] / b['steps_per_second']:.2f}"
            if a.get("steps_per_second") and b.get("steps_per_second")
            else "-"
            for a, b in zip(runs[(model, n)], base)
        ]
        print(f"{model} N={n}: steps/s / N={sizes[0]}'s, round by round: {', '.join(ratios)}")
  out = {f"{m}/{n}": r for (m, n), r in rows.items()}
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  app.run(main)

r"""XLA compile time and step time of the DNN train step under three sets of XLA flags.

XLA reads XLA_FLAGS once per process, so each flag set runs in its own subprocess, one
after another: XLA's defaults; `xla_flags.FAST_COMPILE` (what `experiments.folding
--quick` adds); the test suite's `xla_flags.TESTS` (`tests/conftest.py`). Each measures, for the
folding ablation's synthetic world (softmax DNN, B = 256, K = 64), the compile time of the
jitted train step (lower + compile) and the step time (best of 3 blocks of about 0.5 s),
and prints them with the ratios to the defaults (compile < 1: faster to compile; step > 1:
slower to run). The 40,000-item rows are where FAST_COMPILE costs step time.

  python -m benchmarks.compile_flags            # about 2 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from jaxrec import xla_flags  # imports no jax

FLAG_SETS = {"defaults": (), "fast_compile": xla_flags.FAST_COMPILE, "tests": xla_flags.TESTS}
# (strategy label of experiments.folding, num_items)
CASES = (
    ("positive_only", 1000),
    ("uniform", 1000),
    ("hard_exact", 1000),
    ("hard_pool", 1000),
    ("full_softmax", 1000),
    ("full_softmax", 40000),
    ("uniform", 40000),
)
BLOCK_SECONDS = 0.5


def measure(cases=CASES):
  """For each (strategy label, num_items): compile time of the jitted train step, its
  step time (best of 3 blocks of about BLOCK_SECONDS), and the minor page faults and peak
  RSS of this process so far. Yields one dict per case."""
  import resource

  from experiments import sweep
  from experiments.configs import folding, synthetic
  from jaxrec import config as config_lib
  from jaxrec import data as jaxrec_data
  from jaxrec import step as step_lib

  runs = {label: tuple(over.items()) for label, over in folding.strategies()}
  for label, num_items in cases:
    base = synthetic.get_config()
    base.data.num_items = num_items
    cfg = sweep.apply_overrides(base, runs[label])
    tr, _, _ = jaxrec_data.load_data(cfg.data, 0)
    spec = config_lib.StepSpec.from_config(cfg)
    data = step_lib.device_data(tr, spec)
    state = step_lib.init_state(spec, cfg, tr.num_users, tr.num_items, 0)
    t = time.perf_counter()
    step = step_lib.jitted_train_step.lower(spec, state, data).compile()
    compile_s = time.perf_counter() - t
    state, metrics = step(state, data)
    metrics["loss"].block_until_ready()
    t = time.perf_counter()
    state, metrics = step(state, data)
    metrics["loss"].block_until_ready()
    n = max(10, int(BLOCK_SECONDS / max(time.perf_counter() - t, 1e-6)))
    best, faults = float("inf"), float("inf")
    for _ in range(3):  # best of 3 blocks of n steps (these machines are shared)
      f0, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
      for _ in range(n):
        state, metrics = step(state, data)
      metrics["loss"].block_until_ready()
      best = min(best, (time.perf_counter() - t) / n)
      faults = min(faults, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n)
    yield {
        "case": f"{label} N={num_items}",
        "compile_s": compile_s,
        "step_ms": best * 1e3,
        "faults_per_step": faults,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child() -> None:
  """Runs in the subprocess: one JSON line per case."""
  for row in measure():
    print(json.dumps(row), flush=True)


def main() -> None:
  results = {}
  for name, flags in FLAG_SETS.items():
    env = dict(os.environ, XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu")
    print(f"{name}: XLA_FLAGS={env['XLA_FLAGS'] or '(none)'}", flush=True)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.compile_flags", "--child"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    results[name] = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  base = {r["case"]: r for r in results["defaults"]}
  print("\n| case | flags | compile s | step ms | compile / defaults | step / defaults |")
  print("|---|---|---|---|---|---|")
  for name, rows in results.items():
    for r in rows:
      b = base[r["case"]]
      print(
          f"| {r['case']} | {name} | {r['compile_s']:.2f} | {r['step_ms']:.2f} | "
          f"{r['compile_s'] / b['compile_s']:.2f} | {r['step_ms'] / b['step_ms']:.2f} |"
      )


if __name__ == "__main__":
  if "--child" in sys.argv:
    child()
  else:
    main()

r"""Train-step time with jaxrec's opt-in glibc malloc settings against glibc's own.

With JAXREC_GLIBC_MALLOC=keep, `import jaxrec` sets malloc to keep XLA:CPU's freed buffers
for reuse (jaxrec/host_malloc.py). This runs the DNN train step of the folding ablation's strategies
(softmax DNN, B = 256, K = 64, synthetic world) in two subprocesses, one after another:
JAXREC_GLIBC_MALLOC=default (glibc's settings), keep and reuse, at XLA's default flags,
and prints step time, minor page faults per step and peak RSS for each, with the ratios
default / keep and default / reuse (> 1: the settings help). The 38,896-item rows are the language-split
MovieLens catalogue's size, where the per-step buffers are tens of MB.

  python -m benchmarks.host_malloc              # about 1 minute on 2 cores
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks import compile_flags

CASES = (
    ("uniform", 1000),
    ("full_softmax", 1000),
    ("full_softmax", 38896),
    ("hard_exact", 38896),
    ("hard_pool", 38896),
    ("uniform", 38896),
)
MODES = ("default", "keep", "reuse")


def main() -> None:
  results = {}
  for mode in MODES:
    env = dict(os.environ, JAXREC_GLIBC_MALLOC=mode, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    print(f"JAXREC_GLIBC_MALLOC={mode} ...", flush=True)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.host_malloc", "--child"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    results[mode] = {r["case"]: r for r in map(json.loads, out.stdout.splitlines())}
  print(
      "\n| case | step ms, default / keep / reuse | step default / keep | default / reuse | "
      "faults/step, default / keep / reuse | peak RSS MB, default / keep / reuse |"
  )
  print("|---|---|---|---|---|---|")
  for case, d in results["default"].items():
    k, r = results["keep"][case], results["reuse"][case]
    print(
        f"| {case} | {d['step_ms']:.2f} / {k['step_ms']:.2f} / {r['step_ms']:.2f} | "
        f"{d['step_ms'] / k['step_ms']:.2f} | {d['step_ms'] / r['step_ms']:.2f} | "
        f"{d['faults_per_step']:.0f} / {k['faults_per_step']:.0f} / {r['faults_per_step']:.0f} | "
        f"{d['peak_rss_mb']:.0f} / {k['peak_rss_mb']:.0f} / {r['peak_rss_mb']:.0f} |"
    )


if __name__ == "__main__":
  if "--child" in sys.argv:
    for row in compile_flags.measure(CASES):
      print(json.dumps(row), flush=True)
  else:
    main()

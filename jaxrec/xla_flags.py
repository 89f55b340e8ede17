"""XLA flags for compile-bound runs, added to XLA_FLAGS before JAX starts.

XLA reads XLA_FLAGS once, when JAX first initializes a backend, so `add_defaults` must run
before any array is made (importing jax, flax or jaxrec is fine). This module does not
import jax.

FAST_COMPILE is for runs whose wall time is XLA's compile time: many small programs that
each run briefly (`experiments.folding --quick`; the tests add stronger ones of their own,
tests/conftest.py).
`python -m benchmarks.compile_flags` on the 2-core CPU of docs/RESULTS.md: the DNN train step
compiles in 0.4-0.8x the time (uniform sampler, 1,000 items: 3.0 s -> 2.0 s) and runs
1.1-1.7x slower (1.05 -> 1.44 ms; the full softmax over 40,000 items 83 -> 95 ms), so it is
not a default. `--quick`, 8 strategies x 1,000 steps, takes 42-47 s with it against 53 s
without, and its runs end with the same metrics (recall, NDCG, cross_group bit-identical;
folding_score within 1e-10).
  --xla_cpu_use_fusion_emitters=false: XLA:CPU's older LLVM IR emitters, quicker to compile;
  --xla_backend_optimization_level=1: fewer LLVM passes (the default is 3).
On a GPU the first does nothing and the second applies to the GPU backend's LLVM passes
too (not measured there).
"""

from __future__ import annotations

import os
from typing import Iterable, MutableMapping, Optional

FAST_COMPILE = ("--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=1")
# The test suite's set, with LLVM's optimisations off too (tests/conftest.py says why).
TESTS = (
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
)


def _name(flag: str) -> str:
  return flag.split("=", 1)[0]


def add_defaults(flags: Iterable[str], env: Optional[MutableMapping[str, str]] = None) -> str:
  """Appends each of `flags` to env["XLA_FLAGS"] (default os.environ) unless a flag of the
  same name is already there: a setting the user made wins. Returns the new XLA_FLAGS."""
  env = os.environ if env is None else env
  current = env.get("XLA_FLAGS", "").split()
  present = {_name(f) for f in current}
  added = [f for f in flags if _name(f) not in present]
  env["XLA_FLAGS"] = " ".join(current + added)
  return env["XLA_FLAGS"]

"""XLA flags for compile-bound runs, added to XLA_FLAGS before JAX starts.

XLA reads XLA_FLAGS once, when JAX first initializes a backend, so `add_defaults` must run
before any array is made (importing jax, flax or jaxrec is fine). This module does not
import jax.

FAST_COMPILE is for runs whose wall time is XLA's compile time: many small programs that
each run briefly (the test suite; `experiments.folding --quick`). On the 2-core CPU of
BUILD_NOTES it halves the compile time of the DNN train step (uniform sampler: 2.9 s ->
1.4 s) at the same step time for a 1,000-item catalogue, and the 13 `--quick` runs train
to bit-identical metrics. It is not a default: with a 40,000-item catalogue the full
softmax step is 20% slower (99 ms -> 118 ms), since the CPU fusion emitters it turns off
generate faster code for large element-wise work.
  --xla_cpu_use_fusion_emitters=false: the older LLVM IR emitters, quicker to compile;
  --xla_backend_optimization_level=1: fewer LLVM passes.
"""

from __future__ import annotations

import os
from typing import Iterable, MutableMapping, Optional

FAST_COMPILE = ("--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=1")


def _name(flag: str) -> str:
  return flag.split("=", 1)[0]


def add_defaults(flags: Iterable[str],
                 env: Optional[MutableMapping[str, str]] = None) -> str:
  """Appends each of `flags` to env["XLA_FLAGS"] (default os.environ) unless a flag of the
  same name is already there: a setting the user made wins. Returns the new XLA_FLAGS."""
  env = os.environ if env is None else env
  current = env.get("XLA_FLAGS", "").split()
  present = {_name(f) for f in current}
  added = [f for f in flags if _name(f) not in present]
  env["XLA_FLAGS"] = " ".join(current + added)
  return env["XLA_FLAGS"]

"""Test-session settings, applied before any test touches JAX.

The suite runs hundreds of tiny programs (a few hundred rows, tens of steps), so XLA's
compile time, not run time, is most of its wall time. LLVM's optimisation passes are a
large part of a CPU compile (the DNN train step: 3.4 s -> 2.0 s without them) and buy
little at these sizes, so the tests compile with `--xla_backend_optimization_level=0` and
`--xla_llvm_disable_expensive_passes` (the suite: 483 s -> 367 s on 2 cores, BUILD_NOTES).

What this changes: the machine code, and with it float rounding (a 300-step hard_exact run
ends with embeddings up to 2e-2 apart and recall@20 0.2684 vs 0.2679 at the two levels),
not what a program computes. Every test compares against an independent computation with
a tolerance, or two runs under the same flags; none compares against a number recorded at
XLA's defaults. Experiments and benchmarks, whose numbers BUILD_NOTES records, run at XLA's
defaults. Subprocesses the tests start inherit the flags through the environment; a flag
already set in XLA_FLAGS wins.
"""

import os

_TEST_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")

_flags = os.environ.get("XLA_FLAGS", "").split()
_set = {f.split("=")[0] for f in _flags}
os.environ["XLA_FLAGS"] = " ".join(_flags + [f for f in _TEST_FLAGS if f.split("=")[0] not in _set])

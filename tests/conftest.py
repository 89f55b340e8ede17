"""Test-session settings, applied before any test touches JAX.

The suite runs hundreds of tiny programs (a few hundred rows, tens of steps), so XLA's
compile time, not run time, is most of its wall time. The tests therefore compile with
`--xla_cpu_use_fusion_emitters=false` (the older CPU emitters, quicker to compile),
`--xla_backend_optimization_level=0` and `--xla_llvm_disable_expensive_passes` (LLVM's
optimisation passes buy little at these sizes). The suite on 2 cores, 4 workers: 483 s at
XLA's defaults, 346-367 s with the last two flags, 225 s with all three (measured once, on
the 2-core box of docs/RESULTS.md).

What this changes: the machine code, and with it float rounding (a 300-step hard_exact run
ends with embeddings up to 2e-2 apart, and recall@20 0.2684 at XLA's default optimisation
level against 0.2679 at level 0), not what a program computes. Every test compares
against an independent computation with a tolerance, or two runs under the same flags;
none compares against a number recorded at XLA's defaults. Experiments and benchmarks,
whose numbers docs/RESULTS.md records, run at XLA's defaults (`--quick` aside:
jaxrec/xla_flags.py). Subprocesses the tests start inherit the flags through the
environment; a flag already set in XLA_FLAGS wins.
"""

from jaxrec import xla_flags  # imports no jax: XLA_FLAGS is set before JAX starts

xla_flags.add_defaults(xla_flags.TESTS)

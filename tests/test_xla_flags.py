"""jaxrec.xla_flags: flags are added to XLA_FLAGS; a flag the user already set wins."""

import subprocess
import sys

from jaxrec import xla_flags


def test_add_defaults_appends_missing_flags_and_keeps_the_users():
  env = {"XLA_FLAGS": "--xla_backend_optimization_level=3 --xla_cpu_multi_thread_eigen=false"}
  out = xla_flags.add_defaults(xla_flags.FAST_COMPILE, env)
  assert out == env["XLA_FLAGS"]
  assert out.split() == [
      "--xla_backend_optimization_level=3",
      "--xla_cpu_multi_thread_eigen=false",
      "--xla_cpu_use_fusion_emitters=false",
  ]
  assert xla_flags.add_defaults(["--a=1", "--b"], {}) == "--a=1 --b"
  same = {"XLA_FLAGS": out}
  assert xla_flags.add_defaults(xla_flags.FAST_COMPILE, same) == out  # idempotent


def test_importing_xla_flags_does_not_import_jax():
  # conftest relies on it: XLA reads XLA_FLAGS once, when JAX starts.
  code = "import sys, jaxrec.xla_flags; print('jax' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"

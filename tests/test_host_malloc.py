"""jaxrec.host_malloc: JAXREC_GLIBC_MALLOC=keep (or reuse) makes XLA:CPU reuse freed buffers.

The claim is counted, not timed: a jitted op with a fresh 64 MB output (48 MB for reuse),
called again and again with the last output dropped, takes a minor page fault per 4 KB page of that output
on every call when freed blocks go back to the kernel (glibc's defaults on Linux: such a
block is mmapped and unmapped), and none once freed blocks are reused.

So the test counts the calls that fault (almost) nothing: under glibc's defaults there are
none, every call faults the whole block. With the blocks kept there are no faults on a
quiet box, but on a loaded one some calls still fault one whole fresh block (16,384
faults): freeing lags behind, more outputs are alive at once than during the warm-up, and
the heap grows by a block. That was 2 calls in 10 on CI (a mean of 3,277 = 2 x 16,384 /
10) and up to 6 in 15 on a 2-core box running an ablation beside the test, so the bound
asks for a quarter of the calls to be clean, not all of them.
"""

import os
import subprocess
import sys

import pytest

from jaxrec import host_malloc

PROBE = r"""
import resource
import jaxrec, jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0)
x = jnp.ones((MB * 256 * 1024,), jnp.float32)  # MB megabytes, 256 pages of 4 KB each
for _ in range(20):  # warm up: compile, let the allocator settle
  f(x).block_until_ready()
faults = []
for _ in range(20):
  start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  y = f(x)
  y.block_until_ready()
  del y
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(*faults)
"""
# A 64 MB block for keep; 48 MB for reuse, whose thread arenas (64 MB heaps at most) mmap
# anything bigger whatever mmap_max says. Both are above glibc's largest dynamic mmap
# threshold (32 MB), so under its defaults every call maps and faults the block afresh.
MEGABYTES = {"keep": 64, "reuse": 48}

glibc_only = pytest.mark.skipif(not host_malloc.is_glibc(), reason="glibc malloc only")


def _faults_per_call(mode: str, megabytes: int) -> list[int]:
  env = dict(os.environ, JAXREC_GLIBC_MALLOC=mode, JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-c", f"MB = {megabytes}\n" + PROBE],
      env=env,
      capture_output=True,
      text=True,
      check=True,
  )
  return [int(n) for n in out.stdout.splitlines()[-1].split()]


def _clean_calls(faults: list[int], megabytes: int) -> int:
  return sum(n < 0.02 * megabytes * 256 for n in faults)


@glibc_only
@pytest.mark.parametrize("mode", ["keep", "reuse"])
def test_keep_and_reuse_reuse_freed_buffers(mode):
  megabytes = MEGABYTES[mode]
  default = _faults_per_call("default", megabytes)
  if _clean_calls(default, megabytes) > 0:  # e.g. transparent huge pages serve the block
    pytest.skip(
        f"glibc's defaults fault fewer than 2% of {megabytes * 256} pages on some calls "
        f"here: {default}"
    )
  kept = _faults_per_call(mode, megabytes)
  assert _clean_calls(kept, megabytes) >= len(kept) / 4, kept


def test_apply_only_when_asked():  # ("keep", "reuse": in subprocesses above)
  assert host_malloc.apply({}) is False
  assert host_malloc.apply({host_malloc.ENV: "default"}) is False
  with pytest.raises(ValueError, match="JAXREC_GLIBC_MALLOC='yes'"):
    host_malloc.apply({host_malloc.ENV: "yes"})


def test_importing_host_malloc_does_not_import_jax():
  code = "import sys, jaxrec.host_malloc; print('jax' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


def _anon_huge_kib(lo: int, hi: int) -> int:
  """AnonHugePages (KiB) of this process's mappings that overlap [lo, hi)."""
  total, inside = 0, False
  with open("/proc/self/smaps") as f:
    for line in f:
      head = line.split()[0]
      if not head.endswith(":"):  # a mapping's first line: "start-end perms ..."
        start, end = (int(v, 16) for v in head.split("-"))
        inside = start < hi and end > lo
      elif inside and head == "AnonHugePages:":
        total += int(line.split()[1])
  return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux only")
def test_huge_pages_collapse_a_buffer_in_place(monkeypatch):
  import jax.numpy as jnp
  import numpy as np

  x = jnp.arange(24 << 20, dtype=jnp.float32) * 0.5  # 96 MiB
  before = np.asarray(x).copy()
  start = x.unsafe_buffer_pointer()
  lo = -(-start // host_malloc.HUGE_PAGE) * host_malloc.HUGE_PAGE
  hi = (start + x.nbytes) // host_malloc.HUGE_PAGE * host_malloc.HUGE_PAGE
  assert host_malloc.huge_pages([x], min_bytes=x.nbytes + 1) == 0  # below the threshold
  monkeypatch.setenv(host_malloc.HUGE_PAGES_ENV, "0")
  assert host_malloc.huge_pages([x], min_bytes=x.nbytes) == 0  # turned off
  assert _anon_huge_kib(lo, hi) == 0
  monkeypatch.delenv(host_malloc.HUGE_PAGES_ENV)
  collapsed = host_malloc.huge_pages([x], min_bytes=x.nbytes)
  np.testing.assert_array_equal(np.asarray(x), before)  # values and address unchanged
  assert x.unsafe_buffer_pointer() == start
  if collapsed == 0:
    pytest.skip("this kernel collapsed nothing (no THP or no MADV_COLLAPSE, Linux < 6.1)")
  assert collapsed == hi - lo
  assert _anon_huge_kib(lo, hi) * 1024 == hi - lo


@pytest.mark.parametrize("model,sampler", [("mf", "uniform"), ("dnn", "kernel")])
def test_train_step_keeps_the_tables_buffers(model, sampler):
  """The advice lasts because the jitted step, with its state donated, updates the tables,
  their optimizer state and the kernel tree in place: same buffers after steps."""
  import jax

  import tiny
  from jaxrec import data as data_lib
  from jaxrec import step
  from jaxrec.config import StepSpec

  c = tiny.config(**{"model.name": model, "sampler.name": sampler, "data.num_items": 4000})
  train = data_lib.load_data(c.data, 0)[0]
  spec = StepSpec.from_config(c)
  ddata = step.device_data(train, spec)
  state = step.init_state(spec, c, train.num_users, train.num_items, 0)

  def buffers(s):  # the tables and their optimizer state; each level of the kernel tree
    tables = [x for x in jax.tree.leaves(s) if x.size >= 2000]
    levels = [x for x in jax.tree.leaves(s.freq) if x.ndim == 2]  # (the sampler's state)
    return [x.unsafe_buffer_pointer() for x in tables + levels]

  before = buffers(state)
  # 4000 items in leaves of 128: 32 leaves, levels of 1, 2, .., 32 nodes
  assert len(before) == (4 + 6 if sampler == "kernel" else 4)
  for _ in range(3):
    state, _ = step.jitted_train_step(spec, state, ddata)
  assert buffers(state) == before

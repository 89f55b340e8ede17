"""Opt-in glibc malloc settings that keep XLA:CPU's freed buffers for reuse.

JAXREC_GLIBC_MALLOC=keep in the environment turns them on (at `import jaxrec`); they pay
off on big catalogues and cost on small ones, so they are not the default.

XLA:CPU allocates every step's temporaries and outputs afresh and frees them after the step
(the full softmax over the 38,896 items of the language-split MovieLens with B = 256 makes
40 MB score buffers). glibc's defaults hand such blocks back to the kernel when they are
freed: blocks over the mmap threshold are unmapped (the threshold rises to the size of
the blocks freed, but never past 32 MiB), the heap top is trimmed, and XLA's worker threads
allocate from per-thread arenas whose heaps are at most 64 MB. So each step faults its
pages in again (the softmax DNN's step at 1M items: 32.25 MiB of temporaries, ~8,200 faults
a step, `benchmarks.dnn_update_paths`), and the kernel zeroes each one: 200 hard_exact steps on that
catalogue took 9.0 million minor page faults on 2 cores, and the kernel took a third of
the CPU time. With

  M_ARENA_MAX = 1                  every thread allocates from the main heap;
  M_MMAP_MAX = 0                   big blocks come from that heap too, not from mmap;
  M_TRIM_THRESHOLD = 2 GiB - 1     freed memory at the heap's top stays with the process,

freed blocks are reused and the faults go (0.3 million; same run 6.4 -> 12.6 steps/s).
What it costs: all threads share one arena's lock, which slows the small, fast steps of the
1,000-item synthetic world (the default folding ablation's steps/s drop 13-33%), and memory
freed stays with the process until it exits.

JAXREC_GLIBC_MALLOC=reuse sets the last two only: threads keep their own arenas (no shared
lock, small steps unchanged), and blocks too big for a thread's 64 MB heap come from the
main heap and stay there. It keeps the full softmax's and the DNN's big-catalogue gains
(the 38,896-item full softmax 1.49x, the DNN step at 1M items 23 -> 18 ms) but not
hard_exact's (its buffers live in the thread arenas, which still hand memory back).
`python -m benchmarks.host_malloc` measures all three modes. The numbers a run computes do
not change.

`apply()` must run before XLA's threads first allocate, i.e. before the first JAX
computation; `jaxrec/__init__.py` calls it, so importing jaxrec first is enough. It does
nothing unless JAXREC_GLIBC_MALLOC is keep or reuse, and off glibc (macOS, musl).

`huge_pages(arrays)` is separate, and on by default in the launcher (JAXREC_HUGE_PAGES=0
turns it off): it backs the train state's buffers of 64 MiB or more (the [N,D] tables and
their optimizer state from about 250k items up, which the jitted step updates in place) with
2 MiB transparent huge pages. A sampled step touches a few thousand random rows of those
tables, and with 4 KiB pages each row costs a TLB miss whose page walk itself misses the
cache (5 GB of table and Adagrad state at 10M items have 10 MB of page tables). Measured
(docs/RESULTS.md): the bare MF step at 10M items 1.44x -> 1.22x its 10k-item time (1M:
1.21x -> 1.13x), the launcher's MF at 10M 0.79x -> 0.86-0.94x of 10k's steps/s; the price
is the kernel copying the buffers into huge pages once, about 1-2 s per GB on a 2-core box
(10 s for the 4.8 GB at 10M items on a fragmented day).
This module does not import jax.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Iterable, Mapping, Optional

ENV = "JAXREC_GLIBC_MALLOC"
HUGE_PAGES_ENV = "JAXREC_HUGE_PAGES"
# mallopt(3) parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
# mode -> mallopt settings
SETTINGS = {
    "keep": ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)),
    "reuse": ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)),
}


def is_glibc() -> bool:
  """Whether this process runs on glibc, whose mallopt settings `apply` sets."""
  try:
    return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
  except (ValueError, OSError, AttributeError):  # no such confstr name off glibc
    return False


def apply(env: Optional[Mapping[str, str]] = None) -> bool:
  """With JAXREC_GLIBC_MALLOC=keep or reuse, sets that mode's SETTINGS with mallopt; True
  if glibc took them."""
  env = os.environ if env is None else env
  mode = env.get(ENV, "default")
  if mode not in ("keep", "reuse", "default"):
    raise ValueError(
        f"{ENV}={mode!r}: use 'keep' (keep freed memory for reuse, one shared arena), "
        "'reuse' (the same without the shared arena) or "
        "'default' (glibc's own settings, also what an unset variable means)"
    )
  if mode == "default" or not is_glibc():
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return all([mallopt(param, value) == 1 for param, value in SETTINGS[mode]])


# madvise(2) advice numbers (Linux's mman-common.h) and the x86-64 / arm64 huge page size
MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25
HUGE_PAGE = 2 << 20


def huge_pages(arrays: Iterable[Any], min_bytes: int = 64 << 20) -> int:
  """Backs the host buffers of `arrays` of >= min_bytes with transparent huge pages.

  For each CPU buffer (each addressable shard of a sharded array) it advises
  madvise(MADV_HUGEPAGE) on the 2 MiB-aligned part of the buffer, so pages faulted later
  are huge, and madvise(MADV_COLLAPSE) (Linux >= 6.1) to turn the pages already there
  into huge ones now: the kernel copies each 2 MiB run into a huge page in place, so the
  values and the buffer's address do not change. The advice lasts as long as the buffer,
  which a jitted step with donated state keeps (`tests/test_host_malloc.py` checks the
  launcher's train step does). Best effort: buffers on accelerators, kernels without
  THP or MADV_COLLAPSE, and a refused collapse (no free huge page) are left as they are.
  -> the bytes now in collapsed huge pages.
  """
  if os.environ.get(HUGE_PAGES_ENV, "1") == "0":
    return 0
  try:
    madvise = ctypes.CDLL(None, use_errno=True).madvise
  except (OSError, AttributeError):
    return 0
  madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
  madvise.restype = ctypes.c_int
  collapsed = 0
  for x in arrays:
    if hasattr(x, "block_until_ready"):
      x.block_until_ready()  # pages still being written by XLA do not collapse (EINVAL)
    for shard in getattr(x, "addressable_shards", ()):
      buf = shard.data
      if buf.nbytes < min_bytes or shard.device.platform != "cpu":
        continue
      start = buf.unsafe_buffer_pointer()
      lo = -(-start // HUGE_PAGE) * HUGE_PAGE
      hi = (start + buf.nbytes) // HUGE_PAGE * HUGE_PAGE
      if hi > lo and madvise(lo, hi - lo, MADV_HUGEPAGE) == 0:
        if madvise(lo, hi - lo, MADV_COLLAPSE) == 0:
          collapsed += hi - lo
  return collapsed

r"""Memory and speed of the chunked full softmax (value_and_grad w.r.t. query and items).

At B=1024 queries, N=1M items, D=64 the [B,N] score matrix alone is 4.1 GB in float32;
autodiff of the plain full softmax keeps two such buffers (scores and their softmax, which
the backward pass needs) = 8.2 GB, which XLA's buffer reuse brings down to one (4.1 GB
temp on CPU, measured below from the compiled step). `jaxrec.losses.full_softmax(..., chunk_size=C)`
streams the items in chunks: forward = online log-sum-exp, backward = a custom VJP that
recomputes each chunk's scores, so memory is O(B*C + N*D).

Each variant runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is
its own. Printed per chunk size: peak RSS, seconds per value_and_grad call, GFLOP/s with
the honest FLOP count 8*B*N*D (forward scores 2BND + backward recompute 2BND + d query
2BND + d items 2BND; the exp()s are not counted), and the ratio to a plain square matmul
of the same FLOPs measured in the same run. The unchunked memory is reported from the
XLA buffer assignment of the compiled (never executed) unchunked step, beside the
analytic 2 * B*N*4 bytes. Targets: peak < 1.5 GB and throughput >= 40% of the matmul.

  python benchmarks/full_softmax_memory.py                   # B=1024, N=1M, D=64, default chunk
  python benchmarks/full_softmax_memory.py --chunk_sizes=1024,2048,4096,8192,16384  # tuning
  python benchmarks/full_softmax_memory.py --num_items=100000     # smaller and faster
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import losses

_BATCH = flags.DEFINE_integer("batch", 1024, "B: queries.")
_NUM_ITEMS = flags.DEFINE_integer("num_items", 1_000_000, "N: items in the catalogue.")
_DIM = flags.DEFINE_integer("dim", 64, "D: embedding dimension.")
_CHUNK_SIZES = flags.DEFINE_list(
    "chunk_sizes",
    None,
    "Chunk sizes to measure, each in its own subprocess "
    "(default: jaxrec.losses.DEFAULT_CHUNK_SIZE).",
)
_ITERS = flags.DEFINE_integer("iters", 3, "Timed calls per variant (the fastest is kept).")
_SKIP_UNCHUNKED_COMPILE = flags.DEFINE_bool(
    "skip_unchunked_compile", False, "Do not compile the unchunked step for its memory."
)
_CHILD = flags.DEFINE_string("child", "", "Internal: run one variant and print JSON.")

_PEAK_TARGET_BYTES = 1.5e9
_RATIO_TARGET = 0.40


def _peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def _time_calls(fn, args, iters):
  jax.block_until_ready(fn(*args))  # compile + one warm call
  best = math.inf
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def _child(variant: str) -> dict:
  """Runs one variant in this (fresh) process and returns its measurements."""
  b, n, d = _BATCH.value, _NUM_ITEMS.value, _DIM.value
  flops = 8 * b * n * d
  if variant == "matmul":
    side = max(1, round((flops / 2) ** (1 / 3)))
    x = jax.random.normal(jax.random.key(0), (side, side), jnp.float32)
    y = jax.random.normal(jax.random.key(1), (side, side), jnp.float32)
    seconds = _time_calls(jax.jit(jnp.dot), (x, y), _ITERS.value)
    return dict(
        variant=variant,
        side=side,
        seconds=seconds,
        gflops=2 * side**3 / seconds / 1e9,
        peak_rss=_peak_rss_bytes(),
    )

  def make_step(chunk_size):
    def loss(query, items, ids):
      return jnp.mean(losses.full_softmax(query, items, ids, chunk_size=chunk_size))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

  if variant == "unchunked_compile":
    shapes = (
        jax.ShapeDtypeStruct((b, d), jnp.float32),
        jax.ShapeDtypeStruct((n, d), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.int32),
    )
    mem = make_step(None).lower(*shapes).compile().memory_analysis()
    return dict(
        variant=variant,
        temp_bytes=int(mem.temp_size_in_bytes),
        total_bytes=int(
            mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
        ),
    )

  # Inputs drawn in place with numpy (scores ~ N(0, 1)): jax.random would hold several
  # [N,D] temporaries at once and its peak, not the loss's, would dominate ru_maxrss.
  rng = np.random.default_rng(0)
  items_np = np.empty((n, d), np.float32)
  rng.standard_normal(out=items_np, dtype=np.float32)
  items_np *= 1.0 / math.sqrt(d)
  items = jnp.asarray(items_np)
  del items_np
  query = jnp.asarray(rng.standard_normal((b, d), dtype=np.float32))
  ids = jnp.asarray(rng.integers(0, n, b, dtype=np.int32))
  chunk_size = int(variant)
  step = make_step(chunk_size)
  mem = step.lower(query, items, ids).compile().memory_analysis()
  seconds = _time_calls(step, (query, items, ids), _ITERS.value)
  value, _ = step(query, items, ids)
  return dict(
      variant=variant,
      seconds=seconds,
      gflops=flops / seconds / 1e9,
      peak_rss=_peak_rss_bytes(),
      temp_bytes=int(mem.temp_size_in_bytes),
      loss=float(value),
  )


def _run_child(variant: str) -> dict:
  argv = [
      sys.executable,
      __file__,
      f"--child={variant}",
      f"--batch={_BATCH.value}",
      f"--num_items={_NUM_ITEMS.value}",
      f"--dim={_DIM.value}",
      f"--iters={_ITERS.value}",
  ]
  proc = subprocess.run(argv, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"variant {variant} failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if _CHILD.value:
    print(json.dumps(_child(_CHILD.value)))
    return

  b, n, d = _BATCH.value, _NUM_ITEMS.value, _DIM.value
  gb = 1e9
  print(f"B={b} N={n} D={d}; FLOPs per value_and_grad = 8*B*N*D = {8 * b * n * d / 1e9:.1f} G")
  # The matmul runs before and after the loss variants and the faster run is the
  # reference, so that load from other processes cannot flatter the ratio.
  matmul = _run_child("matmul")
  print(
      f"plain matmul {matmul['side']}^3 (same FLOPs), before: {matmul['seconds']:.3f} s, "
      f"{matmul['gflops']:.1f} GFLOP/s, peak RSS {matmul['peak_rss'] / gb:.2f} GB"
  )

  results = []
  for chunk in _CHUNK_SIZES.value or [str(losses.DEFAULT_CHUNK_SIZE)]:
    r = _run_child(str(int(chunk)))
    results.append(r)
    print(
        f"chunk_size={int(chunk):>6}: peak RSS {r['peak_rss'] / gb:.3f} GB "
        f"(XLA temp {r['temp_bytes'] / gb:.3f} GB), {r['seconds']:.3f} s/call, "
        f"{r['gflops']:.1f} GFLOP/s, loss {r['loss']:.4f}"
    )

  after = _run_child("matmul")
  print(
      f"plain matmul {after['side']}^3 (same FLOPs), after:  {after['seconds']:.3f} s, "
      f"{after['gflops']:.1f} GFLOP/s"
  )
  ref_gflops = max(matmul["gflops"], after["gflops"])
  for r in results:
    r["ratio"] = r["gflops"] / ref_gflops
    print(
        f"chunk_size={int(r['variant']):>6}: {r['ratio']:.2f} x matmul "
        f"({ref_gflops:.1f} GFLOP/s)"
    )

  analytic = 2 * b * n * 4
  print(
      f"unchunked, analytic: autodiff keeps scores and softmax, 2 x [B,N] f32 = "
      f"{analytic / gb:.2f} GB"
  )
  if not _SKIP_UNCHUNKED_COMPILE.value:
    u = _run_child("unchunked_compile")
    print(
        f"unchunked, XLA buffer assignment (compiled, not run): temp "
        f"{u['temp_bytes'] / gb:.2f} GB, with arguments and outputs "
        f"{u['total_bytes'] / gb:.2f} GB (XLA reuses one [B,N] buffer)"
    )

  best = min(results, key=lambda r: r["seconds"])
  ok_mem = best["peak_rss"] < _PEAK_TARGET_BYTES
  ok_speed = best["ratio"] >= _RATIO_TARGET
  print(
      f"fastest chunk_size={best['variant']}: peak {best['peak_rss'] / gb:.3f} GB "
      f"(target < {_PEAK_TARGET_BYTES / gb:.1f}: {'OK' if ok_mem else 'MISSED'}), "
      f"{best['ratio']:.2f} x matmul (target >= {_RATIO_TARGET:.2f}: "
      f"{'OK' if ok_speed else 'MISSED'})"
  )


if __name__ == "__main__":
  app.run(main)

"""Evaluation-scale benchmark: exact top-K over a big catalogue with train exclusion.

Default problem (issue 8, item c): top-100 over N = 1M items for Q = 10k queries,
D = 64, each query with 20 excluded items. Prints
  * topk seconds (compile excluded; measured after a warm-up call on one batch),
  * the same Q x N x D matmul timed in the same chunks in the same run, and
    topk's throughput as a fraction of it (2 Q N D flops / seconds),
  * peak process memory (ru_maxrss), target < 2 GB,
and one JSON line (prefix "RESULT ") for scripts.

  python -m benchmarks.eval_scaling                       # the full 1M x 10k problem
  python -m benchmarks.eval_scaling --num_items=100000 --num_queries=2000   # quick
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import metrics


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--num_items", type=int, default=1_000_000)
  p.add_argument("--num_queries", type=int, default=10_000)
  p.add_argument("--dim", type=int, default=64)
  p.add_argument("--k", type=int, default=100)
  p.add_argument("--excluded", type=int, default=20, help="excluded items per query")
  p.add_argument("--chunk_size", type=int, default=metrics.DEFAULT_CHUNK_SIZE)
  p.add_argument("--query_batch", type=int, default=metrics.DEFAULT_QUERY_BATCH)
  p.add_argument(
      "--group",
      type=int,
      default=metrics.DEFAULT_GROUP,
      help="group width of the two-stage selection (1 = plain top_k)",
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
      "--repeats",
      type=int,
      default=1,
      help="time topk and matmul alternately this many times; report the "
      "fastest of each (the machine may be shared)",
  )
  p.add_argument("--skip_matmul", action="store_true", help="do not time the reference matmul")
  args = p.parse_args(argv)
  for name in (
      "num_items",
      "num_queries",
      "dim",
      "k",
      "chunk_size",
      "query_batch",
      "group",
      "repeats",
  ):
    if getattr(args, name) <= 0:
      p.error(f"--{name} must be > 0; got {getattr(args, name)}")
  if args.excluded < 0 or args.excluded + args.k > args.num_items:
    p.error(f"--excluded must be in [0, num_items - k]; got {args.excluded}")
  return args


@functools.partial(jax.jit, static_argnames=("chunk",))
def _matmul_pass(query_BxD, items_NxD, *, chunk):
  """Every [B, chunk] score block of one query batch, in the same lax.scan layout as
  metrics.topk (the block is the loop carry, so no block is dead code), plus the tail."""
  num_n = items_NxD.shape[0]
  num_full = num_n // chunk

  def body(_, i):
    items_CxD = jax.lax.dynamic_slice_in_dim(items_NxD, i * chunk, chunk, axis=0)
    return jnp.dot(query_BxD, items_CxD.T, precision=jax.lax.Precision.HIGHEST), None

  init = jnp.zeros((query_BxD.shape[0], chunk), jnp.float32)
  last, _ = jax.lax.scan(body, init, jnp.arange(num_full, dtype=jnp.int32))
  tail = jnp.dot(query_BxD, items_NxD[num_full * chunk :].T, precision=jax.lax.Precision.HIGHEST)
  return last, tail


def time_matmul(query, items, batch, chunk):
  """(wall, process-CPU) seconds for the full Q x N score matrix, block by block."""
  chunk = min(chunk, items.shape[0])
  batches = [query[b : b + batch] for b in range(0, query.shape[0], batch)]
  if batches[-1].shape[0] < batch:  # same padding as metrics.topk
    batches[-1] = jnp.pad(batches[-1], ((0, batch - batches[-1].shape[0]), (0, 0)))
  jax.block_until_ready(_matmul_pass(batches[0], items, chunk=chunk))  # compile
  t0, c0 = time.perf_counter(), time.process_time()
  for q in batches:
    jax.block_until_ready(_matmul_pass(q, items, chunk=chunk))
  return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
  args = parse_args(argv)
  kq, ki, kx = jax.random.split(jax.random.PRNGKey(args.seed), 3)
  query = jax.random.normal(kq, (args.num_queries, args.dim), jnp.float32)
  items = jax.random.normal(ki, (args.num_items, args.dim), jnp.float32)
  rows = np.repeat(np.arange(args.num_queries, dtype=np.int32), args.excluded)
  cols = np.asarray(jax.random.randint(kx, (rows.size,), 0, args.num_items), np.int32)

  batch = min(args.query_batch, args.num_queries)
  t0 = time.perf_counter()  # warm-up: compile on the first query batch
  metrics.topk(
      query[:batch],
      items,
      args.k,
      exclude_rows=rows[: batch * args.excluded],
      exclude_cols=cols[: batch * args.excluded],
      chunk_size=args.chunk_size,
      query_batch=batch,
      group=args.group,
  )
  warm = time.perf_counter() - t0

  topk_times, topk_cpu, mm_times, mm_cpu = [], [], [], []
  for _ in range(args.repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    vals, ids = metrics.topk(
        query,
        items,
        args.k,
        exclude_rows=rows,
        exclude_cols=cols,
        chunk_size=args.chunk_size,
        query_batch=batch,
        group=args.group,
    )
    topk_times.append(time.perf_counter() - t0)
    topk_cpu.append(time.process_time() - c0)
    if not args.skip_matmul:
      wall, cpu = time_matmul(query, items, batch, args.chunk_size)
      mm_times.append(wall)
      mm_cpu.append(cpu)
  topk_s = min(topk_times)
  assert not np.isin(ids[0], cols[: args.excluded]).any(), "an excluded item was returned"
  assert np.all(np.diff(vals, axis=1) <= 0), "scores not sorted"

  flops = 2.0 * args.num_queries * args.num_items * args.dim
  result = {
      "device": str(jax.devices()[0].device_kind),
      "platform": jax.default_backend(),
      "num_items": args.num_items,
      "num_queries": args.num_queries,
      "dim": args.dim,
      "k": args.k,
      "excluded_per_query": args.excluded,
      "chunk_size": args.chunk_size,
      "query_batch": batch,
      "group": args.group,
      "repeats": args.repeats,
      "warmup_seconds": round(warm, 3),
      "topk_seconds": round(topk_s, 3),
      "topk_cpu_seconds": round(min(topk_cpu), 3),
      "topk_gflops": round(flops / topk_s / 1e9, 2),
  }
  if mm_times:
    mm_s = min(mm_times)
    result["matmul_seconds"] = round(mm_s, 3)
    result["matmul_gflops"] = round(flops / mm_s / 1e9, 2)
    result["fraction_of_matmul"] = round(mm_s / topk_s, 3)
    result["matmul_cpu_seconds"] = round(min(mm_cpu), 3)
    # CPU-time ratio: robust when other processes share the cores.
    result["fraction_of_matmul_cpu"] = round(min(mm_cpu) / min(topk_cpu), 3)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  result["peak_rss_gb"] = round(peak * 1024 / 1e9 if sys.platform != "darwin" else peak / 1e9, 3)

  print(
      f"top-{args.k} over N={args.num_items:,} items for Q={args.num_queries:,} "
      f"queries, D={args.dim}, {args.excluded} excluded/query "
      f"(chunk {args.chunk_size}, query batch {batch}, group {args.group}) "
      f"on {result['device']}"
  )
  print(f"  topk:   {topk_s:8.2f} s  ({result['topk_gflops']:.1f} GFLOP/s of score matmul)")
  if "matmul_seconds" in result:
    print(
        f"  matmul: {result['matmul_seconds']:8.2f} s  " f"({result['matmul_gflops']:.1f} GFLOP/s)"
    )
    print(
        f"  topk throughput = {result['fraction_of_matmul']:.1%} of plain matmul "
        f"(wall); {result['fraction_of_matmul_cpu']:.1%} by process CPU time "
        f"({result['topk_cpu_seconds']:.1f} vs {result['matmul_cpu_seconds']:.1f} s)"
    )
  print(f"  peak RSS: {result['peak_rss_gb']:.2f} GB (target < 2 GB)")
  print("RESULT " + json.dumps(result))
  return result


if __name__ == "__main__":
  main()

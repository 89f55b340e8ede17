r"""Scale benchmark (issue 8): catalogue size, full softmax, evaluation, several devices.

  (a) sampled-softmax step time vs catalogue size N (10k .. 10M) with sparse row-wise
      Adagrad updates (the step of benchmarks/step_scaling.py); prints
      time(N_max) / time(N_min), target <= 1.3.
  (b) chunked full softmax (value_and_grad, jaxrec.losses.full_softmax(chunk_size=C)) in
      GFLOP/s (8 B N D per call) as a fraction of a plain square matmul of the same FLOPs
      timed alternately in the same process; target >= 0.40 on CPU.
  (c) evaluation: exact top-100 over N = 1M items for Q = 10k queries, D = 64, with 20
      excluded items per query (benchmarks/eval_scaling.py): seconds, fraction of the
      same score matmul, peak RSS (target < 2 GB).
  (d) 1, 2, 4, 8 simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count):
      the jaxrec train step (sampled-softmax DNN, chunked full-softmax MF) with tables
      row-sharded over the devices (jaxrec.sharding), and sharded top-k evaluation.
      Prints ms/step, the ratio to 1 device, the first-step loss (equal on every count)
      and the largest buffer any collective moves against the table size. Simulated
      devices share the same cores, so this shows that the sharded path works and what
      its partitioning costs, not a speed-up.

Every part runs in its own subprocess (peak memory is per part; (d) needs a fresh JAX per
device count) that prints one "RESULT {json}" line; this driver collects them, prints the
ratios and, with --json_out, writes them all to one JSON file.

  python -m benchmarks.scaling                          # everything, full sizes
  python -m benchmarks.scaling --small                  # all parts shrunk (~minutes on 2 cores)
  python -m benchmarks.scaling --parts=a,b,c --json_out=gpu.json     # what benchmarks/gpu.sh runs
  python -m benchmarks.scaling --parts=d --devices=1,2,4,8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

PARTS = ("a", "b", "c", "d")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--parts", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
  p.add_argument(
      "--small",
      action="store_true",
      help="shrink every part (N up to 100k, fewer queries/steps) for a quick run",
  )
  p.add_argument("--json_out", default="", help="write all results to this JSON file")
  p.add_argument("--timeout", type=int, default=3600, help="seconds per part subprocess")
  # (a)
  p.add_argument("--sizes", default="10000,1000000,10000000", help="(a) catalogue sizes N")
  p.add_argument("--batch", type=int, default=1024, help="(a) B users/positives per step")
  p.add_argument("--num_neg", type=int, default=1024, help="(a) K shared negatives")
  p.add_argument("--dim", type=int, default=64, help="(a, b) D")
  p.add_argument("--num_users", type=int, default=10_000, help="(a) user table rows")
  p.add_argument("--steps", type=int, default=20, help="(a) steps per timed block")
  p.add_argument("--repeats", type=int, default=5, help="(a, b, d) interleaved repeats")
  # (b)
  p.add_argument("--fs_batch", type=int, default=1024, help="(b) B queries")
  p.add_argument("--fs_items", type=int, default=1_000_000, help="(b) N items")
  p.add_argument("--fs_chunks", default="", help="(b) chunk sizes (default: the library's)")
  # (c)
  p.add_argument("--eval_items", type=int, default=1_000_000, help="(c) N items")
  p.add_argument("--eval_queries", type=int, default=10_000, help="(c) Q queries")
  p.add_argument("--eval_k", type=int, default=100, help="(c) K")
  # (d)
  p.add_argument("--devices", default="1,2,4,8", help="(d) simulated CPU device counts")
  p.add_argument("--dev_items", type=int, default=20_000, help="(d) items (and DNN bag rows)")
  p.add_argument("--dev_users", type=int, default=8_000, help="(d) users")
  p.add_argument("--dev_batch", type=int, default=512, help="(d) batch size")
  p.add_argument("--dev_steps", type=int, default=20, help="(d) steps per timed block")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)
  args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
  bad = [x for x in args.parts if x not in PARTS]
  if bad:
    p.error(f"--parts has {bad}; valid parts: {', '.join(PARTS)}")
  if args.small:
    args.sizes, args.num_users, args.steps, args.repeats = "10000,100000", 10_000, 10, 3
    args.fs_items, args.eval_items, args.eval_queries = 100_000, 100_000, 2_000
    args.dev_items, args.dev_users, args.dev_batch, args.dev_steps = 4_000, 2_000, 256, 10
  for name in (
      "batch",
      "num_neg",
      "dim",
      "num_users",
      "steps",
      "repeats",
      "fs_batch",
      "fs_items",
      "eval_items",
      "eval_queries",
      "eval_k",
      "dev_items",
      "dev_users",
      "dev_batch",
      "dev_steps",
      "timeout",
  ):
    if getattr(args, name) <= 0:
      p.error(f"--{name} must be > 0; got {getattr(args, name)}")
  try:
    args.size_list = [int(x) for x in args.sizes.split(",") if x]
    args.device_list = [int(x) for x in args.devices.split(",") if x]
    args.chunk_list = [int(x) for x in args.fs_chunks.split(",") if x]
  except ValueError as err:
    p.error(f"--sizes, --devices and --fs_chunks take comma-separated integers ({err})")
  if not args.size_list or min(args.size_list) <= 0:
    p.error(f"--sizes must be positive integers; got {args.sizes!r}")
  if not args.device_list or min(args.device_list) <= 0:
    p.error(f"--devices must be positive integers; got {args.devices!r}")
  return args


def _peak_rss_gb() -> float:
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
  return peak * 1024 / 1e9 if sys.platform != "darwin" else peak / 1e9


def _device_facts() -> dict:
  import jax

  return {
      "platform": jax.default_backend(),
      "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(),
      "jax": jax.__version__,
      "host": platform.node(),
  }


# --------------------------------------------------------------------------------------
# (a) sampled step time vs N.


def part_a(args) -> dict:
  """Interleaved timed blocks of the sparse sampled-softmax step for each N (the fastest
  block per N is kept, so load from other processes hits every N alike)."""
  import jax
  import jax.numpy as jnp
  from benchmarks import step_scaling
  from jaxrec import models, tables

  runs = {}
  for n in args.size_list:
    k_user, k_item, key = jax.random.split(jax.random.PRNGKey(0), 3)
    opt = tables.row_adagrad(0.05)
    user_table = models.init_table(k_user, args.num_users, args.dim)
    item_table = models.init_table(k_item, n, args.dim)
    state = step_scaling.State(
        jnp.zeros((), jnp.int32),
        user_table,
        item_table,
        (opt.init(user_table), opt.init(item_table)),
    )
    step = step_scaling.make_sparse_step(args.num_users, n, args.batch, args.num_neg, opt)
    copies = step_scaling.full_table_copies(step, state, key, n, args.dim)
    for i in range(3):  # compile + warm-up
      state, loss = step(state, jax.random.fold_in(key, i))
    jax.block_until_ready((state, loss))
    runs[n] = [step, state, key, copies, []]
  for r in range(args.repeats):
    for n in args.size_list:
      step, state, key, _, blocks = runs[n]
      t0 = time.perf_counter()
      for i in range(args.steps):
        state, loss = step(state, jax.random.fold_in(key, 1000 * (r + 1) + i))
      jax.block_until_ready((state, loss))
      blocks.append((time.perf_counter() - t0) / args.steps)
      if not math.isfinite(float(loss)):
        raise FloatingPointError(f"non-finite loss {float(loss)} at N={n}")
      runs[n][1] = state
  out = {
      "B": args.batch,
      "K": args.num_neg,
      "D": args.dim,
      "num_users": args.num_users,
      "per_n": {
          str(n): {
              "best_ms": 1e3 * min(runs[n][4]),
              "median_ms": 1e3 * statistics.median(runs[n][4]),
              "table_copies_in_step": runs[n][3],
          }
          for n in args.size_list
      },
  }
  lo, hi = min(args.size_list), max(args.size_list)
  out["ratio_best"] = min(runs[hi][4]) / min(runs[lo][4])
  out["ratio_median"] = statistics.median(runs[hi][4]) / statistics.median(runs[lo][4])
  out["peak_rss_gb"] = _peak_rss_gb()
  return out


# --------------------------------------------------------------------------------------
# (b) chunked full softmax vs matmul.


def part_b(args) -> dict:
  """Best-of-`repeats` seconds of value_and_grad of the chunked full softmax and of a
  square matmul with the same 8 B N D FLOPs, alternated so that load hits both."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jaxrec import losses

  b, n, d = args.fs_batch, args.fs_items, args.dim
  flops = 8.0 * b * n * d
  rng = np.random.default_rng(0)
  items = np.empty((n, d), np.float32)
  rng.standard_normal(out=items, dtype=np.float32)
  items = jnp.asarray(items / math.sqrt(d))
  query = jnp.asarray(rng.standard_normal((b, d), dtype=np.float32))
  ids = jnp.asarray(rng.integers(0, n, b, dtype=np.int32))
  side = max(1, round((flops / 2) ** (1 / 3)))
  x = jax.random.normal(jax.random.PRNGKey(1), (side, side), jnp.float32)
  y = jax.random.normal(jax.random.PRNGKey(2), (side, side), jnp.float32)
  matmul = jax.jit(jnp.dot)
  chunks = args.chunk_list or [losses.DEFAULT_CHUNK_SIZE]
  steps = {
      c: jax.jit(
          jax.value_and_grad(
              lambda q, v, c=c: jnp.mean(losses.full_softmax(q, v, ids, chunk_size=c)), (0, 1)
          )
      )
      for c in chunks
  }

  def timed(fn, *a):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*a))
    return time.perf_counter() - t0

  timed(matmul, x, y)
  for c in chunks:
    timed(steps[c], query, items)  # compile
  mm, fs = [], {c: [] for c in chunks}
  for _ in range(args.repeats):
    mm.append(timed(matmul, x, y))
    for c in chunks:
      fs[c].append(timed(steps[c], query, items))
  mm_s = min(mm)
  out = {
      "B": b,
      "N": n,
      "D": d,
      "flops_per_call": flops,
      "matmul_side": side,
      "matmul_seconds": mm_s,
      "matmul_gflops": 2.0 * side**3 / mm_s / 1e9,
      "chunks": {},
  }
  for c in chunks:
    s = min(fs[c])
    out["chunks"][str(c)] = {
        "seconds": s,
        "gflops": flops / s / 1e9,
        "fraction_of_matmul": (flops / s) / (2.0 * side**3 / mm_s),
    }
  out["best_fraction_of_matmul"] = max(v["fraction_of_matmul"] for v in out["chunks"].values())
  out["peak_rss_gb"] = _peak_rss_gb()
  return out


# --------------------------------------------------------------------------------------
# (c) evaluation top-K.


def part_c(args) -> dict:
  from benchmarks import eval_scaling

  return eval_scaling.main(
      [
          f"--num_items={args.eval_items}",
          f"--num_queries={args.eval_queries}",
          f"--k={args.eval_k}",
          f"--repeats={max(1, min(args.repeats, 2))}",
      ]
  )


# --------------------------------------------------------------------------------------
# (d) simulated devices.


def part_d_child(args) -> dict:
  """In a process started with n simulated devices: the sharded train steps and eval."""
  import jax
  import numpy as np
  from experiments.configs import synthetic
  from jaxrec import config as config_lib
  from jaxrec import data as jaxrec_data
  from jaxrec import sharding
  from jaxrec import step as step_lib

  mesh = sharding.make_mesh(None)
  n = jax.device_count()
  out = {"devices": n}

  def config(**over):
    c = synthetic.get_config()
    c.data.num_groups, c.data.num_users, c.data.num_items = 4, args.dev_users, args.dev_items
    c.data.interactions_per_user = 10
    c.model.dim, c.model.hidden, c.model.max_bag = 32, (64,), 16
    c.train.batch_size, c.sampler.num_negatives = args.dev_batch, 256
    for k, v in over.items():
      node = c
      *path, leaf = k.split(".")
      for p in path:
        node = node[p]
      node[leaf] = v
    return c

  world = jaxrec_data.load_data(config().data, 0)
  tr = world[0]
  for name, over in (
      ("sampled_dnn", {}),
      ("full_mf_chunked", {"model.name": "mf", "loss.name": "full", "loss.chunk_size": 2048}),
  ):
    c = config(**over)
    spec = config_lib.StepSpec.from_config(c)
    state = step_lib.init_state(spec, c, tr.num_users, tr.num_items, 0)
    ddata = step_lib.device_data(tr)
    state, ddata = sharding.place_state(state, mesh), sharding.place_data(ddata, mesh)
    with sharding.mesh_context(mesh):
      t0 = time.perf_counter()
      compiled = step_lib.jitted_train_step.lower(spec, state, ddata).compile()
      compile_s = time.perf_counter() - t0
      hlo = compiled.as_text()
      state, metrics = step_lib.jitted_train_step(spec, state, ddata)
      first_loss = float(metrics["loss"])
      throttle = sharding.DispatchThrottle()
      blocks = []
      for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.dev_steps):
          state, metrics = step_lib.jitted_train_step(spec, state, ddata)
          throttle(metrics["loss"])
        jax.block_until_ready(metrics["loss"])
        blocks.append((time.perf_counter() - t0) / args.dev_steps)
    table = state.tables["item"]
    table_rows = {state.tables["item"].shape[0], state.tables["query"].shape[0]}
    out[name] = {
        "best_ms": 1e3 * min(blocks),
        "median_ms": 1e3 * statistics.median(blocks),
        "compile_s": compile_s,
        "first_loss": first_loss,
        "last_loss": float(metrics["loss"]),
        "largest_collective_elements": sharding.largest_collective(hlo),
        # operands of collectives with as many rows as a table: whole-table moves
        "table_row_collectives": sum(
            1 for _, shapes in sharding.collectives(hlo) for s in shapes if s and s[0] in table_rows
        ),
        "item_table_elements": int(np.prod(table.shape)),
        "item_rows_per_device": sorted({int(s.data.shape[0]) for s in table.addressable_shards}),
    }
  # Sharded top-100 over the trained item table for every user (excluding nothing).
  query = step_lib.query_embeddings(
      config_lib.StepSpec.from_config(config(**{"model.name": "mf"})), state, ddata
  )
  with sharding.mesh_context(mesh):
    t0 = time.perf_counter()
    sharding.sharded_topk(query, state.tables["item"], 100, chunk_size=8192)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, ids = sharding.sharded_topk(query, state.tables["item"], 100, chunk_size=8192)
    out["topk"] = {
        "seconds": time.perf_counter() - t0,
        "with_compile_s": warm,
        "queries": int(query.shape[0]),
        "checksum": int(np.asarray(ids)[:, 0].sum()),
    }
  return out


def _run_child(part: str, args, env=None) -> dict:
  argv = [sys.executable, "-m", "benchmarks.scaling", f"--child={part}"] + [
      a for a in args.argv if not a.startswith(("--child", "--json_out"))
  ]
  env = dict(os.environ if env is None else env)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run(
      argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout
  )
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(
        f"part {part} failed (exit {proc.returncode}):\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
  return json.loads(lines[-1][len("RESULT ") :])


# --------------------------------------------------------------------------------------
# Driver.


def _report_a(r):
  print(f"(a) sampled step, B={r['B']} K={r['K']} D={r['D']}, sparse row-wise Adagrad:")
  for n, v in r["per_n"].items():
    print(
        f"    N={int(n):>11,}: best {v['best_ms']:8.2f} ms/step, median "
        f"{v['median_ms']:8.2f}; [N,D] copies in the step: {v['table_copies_in_step']}"
    )
  sizes = [int(n) for n in r["per_n"]]
  print(
      f"    time(N={max(sizes):,}) / time(N={min(sizes):,}) = {r['ratio_best']:.2f} (best), "
      f"{r['ratio_median']:.2f} (median); target <= 1.3: "
      f"{'OK' if r['ratio_best'] <= 1.3 else 'MISSED'}"
  )


def _report_b(r):
  print(
      f"(b) chunked full softmax value_and_grad, B={r['B']} N={r['N']:,} D={r['D']} "
      f"({r['flops_per_call'] / 1e9:.1f} GFLOP per call); square matmul "
      f"{r['matmul_side']}^3: {r['matmul_gflops']:.1f} GFLOP/s"
  )
  for c, v in r["chunks"].items():
    print(
        f"    chunk {int(c):>6}: {v['seconds']:.3f} s, {v['gflops']:.1f} GFLOP/s = "
        f"{v['fraction_of_matmul']:.2f} x matmul"
    )
  print(
      f"    best fraction of matmul {r['best_fraction_of_matmul']:.2f}; target >= 0.40: "
      f"{'OK' if r['best_fraction_of_matmul'] >= 0.40 else 'MISSED'}"
  )


def _report_c(r):
  frac = r.get("fraction_of_matmul")
  print(
      f"(c) top-{r['k']} over N={r['num_items']:,} for Q={r['num_queries']:,}, "
      f"D={r['dim']}: {r['topk_seconds']:.2f} s"
      + (
          f", {frac:.2f} x the score matmul ({r.get('fraction_of_matmul_cpu', 0):.2f} by "
          f"CPU time)"
          if frac
          else ""
      )
      + f"; peak RSS {r['peak_rss_gb']:.2f} GB (target < 2 GB: "
      f"{'OK' if r['peak_rss_gb'] < 2 else 'MISSED'})"
  )


def _report_d(results):
  print("(d) simulated CPU devices (same cores shared by all of them):")
  base = results.get("1")
  for n, r in results.items():
    for name in ("sampled_dnn", "full_mf_chunked"):
      v = r[name]
      ratio = f", {v['best_ms'] / base[name]['best_ms']:.2f} x 1 device" if base else ""
      print(
          f"    {n} device(s) {name:>16}: {v['best_ms']:8.2f} ms/step{ratio}; first loss "
          f"{v['first_loss']:.6f}; item rows/device {v['item_rows_per_device']}; "
          f"largest collective {v['largest_collective_elements']:,} elements "
          f"(item table {v['item_table_elements']:,}); collectives of table-row "
          f"buffers: {v['table_row_collectives']}"
      )
    t = r["topk"]
    print(
        f"    {n} device(s)     sharded top-100: {t['seconds']:.2f} s for "
        f"{t['queries']:,} queries (checksum {t['checksum']})"
    )


def main(argv=None):
  args = parse_args(argv)
  if args.child:
    part = args.child
    fn = {"a": part_a, "b": part_b, "c": part_c, "d": part_d_child}[part]
    result = fn(args)
    result.update({"facts": _device_facts()})
    print("RESULT " + json.dumps(result), flush=True)
    return result
  results = {"args": {k: v for k, v in vars(args).items() if k not in ("child", "argv")}}
  for part in args.parts:
    t0 = time.time()
    if part == "d":
      from jaxrec import sharding

      results["d"] = {}
      for n in args.device_list:
        env = sharding.cpu_devices_env(n)
        results["d"][str(n)] = _run_child("d", args, env)
      _report_d(results["d"])
    else:
      results[part] = _run_child(part, args)
      {"a": _report_a, "b": _report_b, "c": _report_c}[part](results[part])
    print(f"    (part {part}: {time.time() - t0:.0f} s wall)", flush=True)
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(results, f, indent=2, sort_keys=True)
    print(f"wrote {args.json_out}")
  return results


if __name__ == "__main__":
  main()

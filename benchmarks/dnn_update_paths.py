"""Why the DNN step at 1M items runs at ~0.4x its 10k speed: the same step with the
row optimizers' update paths as they are, then with the sparse (sort) path forced at both
sizes. The synthetic world of benchmarks.end_to_end (1,000 users, 20 interactions each),
softmax DNN, D 64, B 1,024, K 1,024 uniform, row-wise Adagrad; best and median of 5
interleaved blocks of 20 jitted steps, and the ratio of the best 1M block to the best 10k.

  python -m benchmarks.dnn_update_paths            # as the code runs it
  python -m benchmarks.dnn_update_paths sortpath   # the sort path at both sizes

A step's bag ids (B x max_bag = 1,024 x 32 = 32,768) outnumber a 10k table's rows, so `tables._prepare`
combines them densely there (O((M + N) D)); at 1M it sorts them (`tables.dedup_sum`) and
updates the M gathered rows. With the sort path at both sizes, the ratio isolates what N
itself costs.

Also printed per size: XLA's temporary buffer for one step (`memory_analysis`) and the
minor page faults per timed step. glibc serves a block over its mmap threshold (at most
32 MiB) with a fresh mmap and unmaps it when freed, so a step whose temporaries pass 32 MiB
faults its pages in (zeroed by the kernel) every step; JAXREC_GLIBC_MALLOC=reuse
(jaxrec/host_malloc.py) keeps such blocks in the heap instead.
"""

import resource
import statistics
import sys
import time

import jax

from benchmarks import end_to_end
from experiments import sweep
from experiments.configs import synthetic
from jaxrec import config, data, step, tables

SIZES = (10_000, 1_000_000)


def build(num_items: int):
  c = synthetic.get_config()
  over = end_to_end.world_overrides("dnn", num_items, users=1000, per_user=20)
  c = sweep.apply_overrides(c, tuple(over.items()))
  world = data.load_data(c.data, c.seed)
  spec = config.StepSpec.from_config(c)
  ddata = step.device_data(world.train, spec)
  state = step.init_state(spec, c, world.train.num_users, world.train.num_items, 0)
  for _ in range(3):  # compile and warm up
    state, metrics = step.jitted_train_step(spec, state, ddata)
  jax.block_until_ready(metrics)
  compiled = step.jitted_train_step.lower(spec, state, ddata).compile()
  temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
  return spec, state, ddata, temp_mib


def main():
  mode = sys.argv[1] if len(sys.argv) > 1 else "asis"
  if mode not in ("asis", "sortpath"):
    sys.exit(f"usage: python -m benchmarks.dnn_update_paths [asis|sortpath], not {mode!r}")
  if mode == "sortpath":
    # tables._prepare without its dense branch (ids=None, every row in order, stays dense)
    prepare = tables._prepare
    tables._prepare = lambda t, ids, g: (
        prepare(t, ids, g) if ids is None else tables._sparse_combine(ids, g, t.shape[0])
    )
  runs = {n: build(n) for n in SIZES}
  times = {n: [] for n in SIZES}
  faults = {n: 0 for n in SIZES}
  for _ in range(5):
    for n in SIZES:
      spec, state, ddata, temp_mib = runs[n]
      f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      t0 = time.perf_counter()
      for _ in range(20):
        state, metrics = step.jitted_train_step(spec, state, ddata)
      jax.block_until_ready(metrics)
      times[n].append((time.perf_counter() - t0) / 20 * 1e3)
      faults[n] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
      runs[n] = (spec, state, ddata, temp_mib)
  for n in SIZES:
    print(
        f"{mode} N={n}: best {min(times[n]):.1f} ms, median {statistics.median(times[n]):.1f}"
        f" ms; XLA temporaries {runs[n][3]:.2f} MiB, {faults[n] / 100:.0f} minor faults/step"
    )
  print(f"{mode}: time(1M) / time(10k) = {min(times[SIZES[1]]) / min(times[SIZES[0]]):.2f} (best)")


if __name__ == "__main__":
  main()

r"""Does the kernel sampler's per-step cost stay flat in the catalogue size N?

One sampler step of the `kernel` sampler (Blanc & Rendle 2018, `jaxrec.samplers`): K
per-example draws for each of B queries from the tree (`kernel_sample`: a descent of
log2(N / L) levels, O(D^2) each, the top T of them shared by a query's K draws, then the
L items of one leaf; the B K draws walked in node order, in blocks), then the tree update for
the rows such a step touches (`kernel_tree_update`: the B positives and the B K drawn
negatives, each moved by a small random step), jitted with the tree and the item table
donated so that the update is in place. Per draw the cost is O(D^2 log(N / L) + L D): N
enters only through the depth (and through cache misses in a larger tree). It times the
tree at both sizes; the registered `kernel` sampler would skip the tree where N <= K L
(`samplers.kernel_direct`), which neither size here is (K L = 8,192).

Printed per N: ms/step of the best and the median timed block (blocks of --steps steps,
interleaved across the N's so that load from other processes hits every N alike), the
tree depth and size, and the ratio time(N_max) / time(N_min) of the medians. Target:
<= 1.5.

  python -m benchmarks.kernel_sampler_scaling                 # N = 10k, 1M
  python -m benchmarks.kernel_sampler_scaling --sizes=10000,100000 --steps=3 --repeats=2
  python -m benchmarks.kernel_sampler_scaling --part=draw    # kernel_sample alone

Memory: at N = 1M, L = 128, D = 32 the tree is 2 x 8192 nodes x D (D + 1) / 2 floats (35 MB)
and the table 128 MB. As in the launcher, buffers of >= 64 MiB (the 1M table) are put on
2 MiB pages first (`jaxrec.host_malloc.huge_pages`; --nohuge_pages leaves them on 4 KiB
pages).
"""

from __future__ import annotations

import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from jaxrec import host_malloc
from jaxrec import samplers

_SIZES = flags.DEFINE_list("sizes", ["10000", "1000000"], "Catalogue sizes N.")
_BATCH = flags.DEFINE_integer("batch", 256, "B: queries per step.")
_NUM_NEG = flags.DEFINE_integer("num_neg", 64, "K: draws per query.")
_DIM = flags.DEFINE_integer("dim", 32, "D: embedding dimension.")
_LEAF = flags.DEFINE_integer("leaf", 128, "L: items per leaf (sampler.kernel_leaf).")
_ALPHA = flags.DEFINE_float("alpha", 100.0, "The kernel's alpha (sampler.kernel_alpha).")
_STEPS = flags.DEFINE_integer("steps", 5, "Steps per timed block.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed blocks per N (interleaved over N).")
_PART = flags.DEFINE_enum(
    "part",
    "step",
    ["step", "draw"],
    "step: the draws and the tree and table updates; draw: kernel_sample alone.",
)
_HUGE = flags.DEFINE_bool(
    "huge_pages",
    True,
    "Back buffers of >= 64 MiB with 2 MiB pages, as the launcher does "
    "(jaxrec.host_malloc.huge_pages).",
)
_SHARED_EXTRA = flags.DEFINE_integer(
    "shared_extra",
    samplers.KERNEL_SHARED_EXTRA,
    "c: a row's K draws share the top T = min(depth, log2 K + c) levels of the tree.",
)


def _make_step(num_items: int):
  batch, k, leaf, alpha = _BATCH.value, _NUM_NEG.value, _LEAF.value, _ALPHA.value

  def step(tree, items_NxD, key):
    k_query, k_pos, k_draw, k_move = jax.random.split(key, 4)
    query_BxD = jax.random.normal(k_query, (batch, items_NxD.shape[1])) * 0.3
    pos_B = jax.random.randint(k_pos, (batch,), 0, num_items, dtype=jnp.int32)
    neg = samplers.kernel_sample(
        k_draw,
        tree,
        query_BxD,
        items_NxD,
        k,
        alpha=alpha,
        leaf_size=leaf,
        shared_levels=(k - 1).bit_length() + _SHARED_EXTRA.value,
    )
    if _PART.value == "draw":
      return tree, items_NxD, jnp.sum(neg.log_q)
    ids_M = jnp.concatenate([pos_B, neg.ids.reshape(-1)])
    old_MxD = items_NxD[ids_M]
    new_MxD = old_MxD + 0.01 * jax.random.normal(k_move, old_MxD.shape)
    items_NxD = items_NxD.at[ids_M].set(new_MxD)
    new_MxD = items_NxD[ids_M]  # duplicates: the row the table holds
    tree = samplers.kernel_tree_update(tree, ids_M, old_MxD, new_MxD, leaf)
    return tree, items_NxD, jnp.sum(neg.log_q)

  return jax.jit(step, donate_argnums=(0, 1), keep_unused=True)  # (as the train step)


def main(argv):
  del argv
  sizes = [int(n) for n in _SIZES.value]
  runs = {}
  for n in sizes:
    items = jax.random.normal(jax.random.PRNGKey(n), (n, _DIM.value)) / _DIM.value**0.5
    tree = samplers.kernel_tree(items, _LEAF.value)
    huge = host_malloc.huge_pages(jax.tree.leaves((tree, items))) if _HUGE.value else 0
    step = _make_step(n)
    t0 = time.perf_counter()
    tree, items, out = step(tree, items, jax.random.PRNGKey(0))
    out.block_until_ready()
    nodes = sum(g.shape[0] for g in tree.grams)
    mb = sum(g.nbytes for g in tree.grams) / 2**20
    print(
        f"N={n}: compiled+1 step {time.perf_counter() - t0:.1f}s; depth {len(tree.grams) - 1}, "
        f"{nodes} nodes ({mb:.0f} MB); {huge / 2**20:.0f} MB on 2 MiB pages",
        flush=True,
    )
    runs[n] = [step, tree, items, []]
  for r in range(_REPEATS.value):
    for n in sizes:
      step, tree, items, times = runs[n]
      t0 = time.perf_counter()
      for s in range(_STEPS.value):
        tree, items, out = step(tree, items, jax.random.PRNGKey(1000 * r + s + 1))
      out.block_until_ready()
      times.append((time.perf_counter() - t0) / _STEPS.value * 1e3)
      runs[n][1:3] = tree, items
  for n in sizes:
    times = runs[n][3]
    print(f"N={n}: best {min(times):.1f} ms/step, median {statistics.median(times):.1f} ms/step")
  lo, hi = statistics.median(runs[sizes[0]][3]), statistics.median(runs[sizes[-1]][3])
  print(
      f"ratio time(N={sizes[-1]}) / time(N={sizes[0]}) = {hi / lo:.2f} (target <= 1.5; "
      f"B={_BATCH.value} K={_NUM_NEG.value} D={_DIM.value} L={_LEAF.value}, "
      f"T = min(depth, log2 K + {_SHARED_EXTRA.value}), part={_PART.value}, "
      f"{jax.devices()[0].platform})"
  )


if __name__ == "__main__":
  app.run(main)

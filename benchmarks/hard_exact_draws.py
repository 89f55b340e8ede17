r"""hard_exact: drawing K << N negatives from the chosen blocks vs a table over the whole row.

`samplers.draw_from_logits` draws K samples per row from softmax(s) exactly, in two
levels (a block, then an entry inside it). With K * 32 < N it builds the inverse CDF only
inside the K chosen 32-wide blocks; otherwise it builds one over the whole [B, N] row. This
times `samplers.hard_exact` both ways in one process (best of 3 blocks of 10 calls), on the
shapes the ablations use, and prints the ratio whole-row / chosen-blocks (> 1: faster).

  python -m benchmarks.hard_exact_draws
"""

from __future__ import annotations

import time

import jax

from jaxrec import samplers

SHAPES = (
    (128, 9742, 32, 1),  # negatives_vs_quality, hard_exact K=1 (ml-latest-small)
    (128, 9076, 32, 32),  # hard_negatives, f=0.5 (10-core language split)
    (256, 38896, 32, 64),
)  # folding ablation on the language split


def time_calls(fn, *args, blocks=3, calls=10) -> float:
  jax.block_until_ready(fn(jax.random.PRNGKey(0), *args))
  best = float("inf")
  for _ in range(blocks):
    t = time.perf_counter()
    for i in range(calls):
      jax.block_until_ready(fn(jax.random.PRNGKey(i), *args))
    best = min(best, (time.perf_counter() - t) / calls)
  return best * 1e3


def main():
  default = samplers.SMALL_BLOCK
  for b, n, d, k in SHAPES:
    q = jax.random.normal(jax.random.PRNGKey(1), (b, d))
    v = 0.1 * jax.random.normal(jax.random.PRNGKey(2), (n, d))
    ms = {}
    for name, block in (("whole_row", 10**9), ("chosen_blocks", default)):
      samplers.SMALL_BLOCK = block  # 10**9: K * block >= N, so the whole-row path
      fn = jax.jit(lambda key, q, v: samplers.hard_exact(key, q, v, k))
      ms[name] = time_calls(fn, q, v)
    samplers.SMALL_BLOCK = default
    print(
        f"B={b} N={n} D={d} K={k}: whole row {ms['whole_row']:.1f} ms, chosen blocks "
        f"{ms['chosen_blocks']:.1f} ms, ratio {ms['whole_row'] / ms['chosen_blocks']:.1f}",
        flush=True,
    )


if __name__ == "__main__":
  main()

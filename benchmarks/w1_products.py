r"""The three matrix products of W1's step, alone: XLA:CPU (jax.jit) against PyTorch.

W1 (benchmarks.peers) is MF with B = 1,024 queries, K = 1,024 shared negatives, D = 64.
Its step is built around three [1,024 x 1,024 x 64] float32 products, the same FLOPs in
both frameworks:

  logits_BxK = U_BxD V_KxD^T      (forward)
  dU_BxD     = G_BxK V_KxD        (backward, query side)
  dV_KxD     = G_BxK^T U_BxD      (backward, negatives)

This times each product on its own, and the step's core: the three products with the
softmax between them (G = softmax(U V^T) row-wise; dU, dV as above), one call from U and V.
Medians of --repeats calls after two warm-ups, jax (one jitted function each) in one
subprocess and torch in another, the two alternating over --rounds; printed: the medians
per framework and the three products' sum. A step cannot be faster than its core, so this
bounds what jaxrec's W1 step can reach with XLA:CPU's products against issue 23's 2x-PyTorch
target (docs/RESULTS.md).

  python -m benchmarks.w1_products [--rounds=3] [--repeats=200]

torch is the optional extra `[peers]`; without it only the jax side runs.
"""

from __future__ import annotations

import json
import statistics
import time

from absl import app, flags

from benchmarks import child

_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds of the two frameworks.")
_REPEATS = flags.DEFINE_integer("repeats", 200, "Timed calls per product per round.")
_CHILD = flags.DEFINE_string("child", "", "Internal: jax or torch; time it and print RESULT.")

B, K, D = 1024, 1024, 64
PRODUCTS = ("forward U V^T", "dU = G V", "dV = G^T U")
CORE = "core: softmax + 3 products"


def _median_ms(fn, repeats: int) -> float:
  fn(), fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times) * 1e3


def _operands():
  import numpy as np

  rng = np.random.default_rng(0)
  shapes = ((B, D), (K, D), (B, K))
  return [rng.standard_normal(s, dtype=np.float32) for s in shapes]


def time_jax(repeats: int) -> dict:
  import jax
  import jax.numpy as jnp

  u, v, g = (jnp.asarray(x) for x in _operands())
  fns = (
      jax.jit(lambda u, v: u @ v.T),
      jax.jit(lambda g, v: g @ v),
      jax.jit(lambda g, u: g.T @ u),
  )
  args = ((u, v), (g, v), (g, u))
  out = {
      p: _median_ms(lambda f=f, a=a: f(*a).block_until_ready(), repeats)
      for p, f, a in zip(PRODUCTS, fns, args)
  }

  @jax.jit
  def core(u, v):
    g = jax.nn.softmax(u @ v.T, axis=1)
    return g @ v, g.T @ u

  out[CORE] = _median_ms(lambda: jax.block_until_ready(core(u, v)), repeats)
  return out


def time_torch(repeats: int) -> dict:
  import torch

  u, v, g = (torch.from_numpy(x) for x in _operands())
  fns = (lambda: u @ v.T, lambda: g @ v, lambda: g.T @ u)
  out = {p: _median_ms(f, repeats) for p, f in zip(PRODUCTS, fns)}

  def core():
    g = torch.softmax(u @ v.T, 1)
    return g @ v, g.T @ u

  out[CORE] = _median_ms(core, repeats)
  return out


def _spawn(framework: str, repeats: int) -> dict | None:
  res = child.run("benchmarks.w1_products", f"--child={framework}", f"--repeats={repeats}")
  if "error" in res:
    print(f"  {framework}: failed: {res['error']}")
    return None
  return res


def main(argv):
  del argv
  if _CHILD.value:
    timer = {"jax": time_jax, "torch": time_torch}[_CHILD.value]
    print("RESULT " + json.dumps(timer(_REPEATS.value)), flush=True)
    return
  try:
    import torch  # noqa: F401

    frameworks = ("jax", "torch")
  except ImportError:
    frameworks = ("jax",)
    print("w1_products: torch is not installed (pip install -e '.[peers]'): jax only")
  runs: dict[str, list[dict]] = {f: [] for f in frameworks}
  for r in range(_ROUNDS.value):
    for f in frameworks:
      res = _spawn(f, _REPEATS.value)
      if res is not None:
        runs[f].append(res)
        cells = "  ".join(f"{p}: {res[p]:.3f}" for p in (*PRODUCTS, CORE))
        print(f"  round {r + 1} {f:5s} {cells}")
  print(f"W1's products alone (B = K = {B:,}, D = {D}, float32), median ms over rounds:")
  sums = {}
  for f in frameworks:
    if not runs[f]:
      continue
    med = {p: statistics.median(x[p] for x in runs[f]) for p in (*PRODUCTS, CORE)}
    sums[f] = sum(med[p] for p in PRODUCTS)
    cells = "  ".join(f"{p}: {med[p]:.3f}" for p in PRODUCTS)
    print(f"  {f:5s} {cells}  sum {sums[f]:.3f}  {CORE}: {med[CORE]:.3f}")
  if len(sums) == 2:
    print(f"  products' sum jax / torch: {sums['jax'] / sums['torch']:.2f}")


if __name__ == "__main__":
  app.run(main)

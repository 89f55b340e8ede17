"""The kernel benchmark step (as benchmarks/kernel_sampler_scaling) from the samplers.py of
two or more checkouts, interleaved in one process: CHECKOUTS=DIR python ab_two_checkouts.py A,B[:c].
"""

import importlib.util, os, sys, time, statistics
import jax, jax.numpy as jnp


def load(name, path):
  spec = importlib.util.spec_from_file_location(name, path)
  m = importlib.util.module_from_spec(spec)
  sys.modules[name] = m
  spec.loader.exec_module(m)
  return m


# argv[1]: comma-separated CHECKOUT[:c], c the shared_extra (default: that checkout's own)
specs = [(a.split(":") + [None])[:2] for a in sys.argv[1].split(",")]
loaded = {
    p: load("s_" + p, os.path.join(os.environ.get("CHECKOUTS", "/work"), p, "jaxrec/samplers.py"))
    for p, _ in specs
}
mods = {f"{p}:{c}" if c else p: loaded[p] for p, c in specs}
extra = {f"{p}:{c}": int(c) for p, c in specs if c}
B, K, D, L = 256, 64, 32, 128


def make(S, n, c):
  def step(tree, items, key):
    kq, kp, kd, km = jax.random.split(key, 4)
    q = jax.random.normal(kq, (B, D)) * 0.3
    pos = jax.random.randint(kp, (B,), 0, n, dtype=jnp.int32)
    neg = S.kernel_sample(
        kd, tree, q, items, K, alpha=100.0, leaf_size=L, shared_levels=(K - 1).bit_length() + c
    )
    ids = jnp.concatenate([pos, neg.ids.reshape(-1)])
    old = items[ids]
    new = old + 0.01 * jax.random.normal(km, old.shape)
    items = items.at[ids].set(new)
    new = items[ids]
    return S.kernel_tree_update(tree, ids, old, new, L), items, jnp.sum(neg.log_q)

  return jax.jit(step, donate_argnums=(0, 1), keep_unused=True)


runs = {}
for name, S in mods.items():
  for n in (10_000, 1_000_000):
    items = jax.random.normal(jax.random.PRNGKey(n), (n, D)) / D**0.5
    tree = S.kernel_tree(items, L)
    st = make(S, n, extra.get(name, S.KERNEL_SHARED_EXTRA))
    tree, items, o = st(tree, items, jax.random.PRNGKey(0))
    o.block_until_ready()
    runs[name, n] = [st, tree, items, []]
for r in range(int(os.environ.get("ROUNDS", 6))):
  for key in runs:
    st, tree, items, t = runs[key]
    t0 = time.perf_counter()
    for s in range(5):
      tree, items, o = st(tree, items, jax.random.PRNGKey(1000 * r + s + 1))
    o.block_until_ready()
    t.append((time.perf_counter() - t0) / 5 * 1e3)
    runs[key][1:3] = tree, items
for name in mods:
  a, b = (statistics.median(runs[name, n][3]) for n in (10_000, 1_000_000))
  print(f"{name:6s} 10k {a:6.1f}  1M {b:6.1f}  ratio {b/a:.2f}", flush=True)

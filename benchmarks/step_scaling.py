r"""Does a sampled-softmax step cost O(B*K*D), independent of the catalogue size N?

One MF training step: B users, B positives, K shared uniform negatives, D dims,
`jaxrec.losses.sampled_softmax` with logQ correction and accidental hits removed,
gradients w.r.t. the gathered rows only (user [B,D], positive [B,D], negative [K,D]),
then row-wise Adagrad (`jaxrec.tables.row_adagrad`) on the touched rows of the user and
item tables. The step is jitted with `donate_argnums` on the state, so the scatter into
the [N,D] tables is in place. For contrast, the dense step: jax.grad w.r.t. the whole
tables + optax.adagrad on every row, whose time grows with N.

Printed per N: ms/step of the best and the median timed block (blocks of --steps steps,
interleaved across the N's so that load from other processes hits every N alike), the
number of `copy` instructions of an [N,D] buffer in the compiled step (0 means no
per-step table copy; with N == num_users the user table matches too), and the ratio
time(N_max) / time(N_min). Target for the sparse step: <= 1.3. As in the launcher, the
state's buffers of >= 64 MiB (the 1M and 10M tables) are put on 2 MiB pages first
(`jaxrec.host_malloc.huge_pages`; --nohuge_pages leaves them on 4 KiB pages).

  pip install -e . && python benchmarks/step_scaling.py   # sparse 10k,1M,10M; dense 10k,1M
  python benchmarks/step_scaling.py --sizes=10000,100000 --dense_sizes=10000 --steps=10

Memory: the 10M sparse run holds table + accumulator = 2 x 2.56 GB; the dense step also
materializes a full gradient and update (>= 4 x 2.56 GB at 10M, and ~2 s/step on CPU), so
10M is left out of --dense_sizes by default.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from typing import NamedTuple

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import optax

from jaxrec import host_malloc, losses, models, tables

_SIZES = flags.DEFINE_list(
    "sizes", ["10000", "1000000", "10000000"], "Item catalogue sizes N for the sparse step."
)
_DENSE_SIZES = flags.DEFINE_list(
    "dense_sizes", ["10000", "1000000"], "Sizes N for the dense-update contrast (empty: skip)."
)
_NUM_USERS = flags.DEFINE_integer("num_users", 10_000, "User table rows.")
_BATCH = flags.DEFINE_integer("batch", 1024, "B: users (and positives) per step.")
_NUM_NEG = flags.DEFINE_integer("num_neg", 1024, "K: shared uniform negatives per step.")
_DIM = flags.DEFINE_integer("dim", 64, "D: embedding dimension.")
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed block.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed blocks per N (interleaved over N).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_LR = flags.DEFINE_float("learning_rate", 0.05, "Adagrad learning rate.")
_HUGE = flags.DEFINE_bool(
    "huge_pages",
    True,
    "Back the tables' buffers of >= 64 MiB with 2 MiB pages, as the launcher does "
    "(jaxrec.host_malloc.huge_pages).",
)


class State(NamedTuple):
  step: jax.Array
  user_table: jax.Array  # [U,D]
  item_table: jax.Array  # [N,D]
  opt_state: object  # sparse: (user RowOptimizer state, item state); dense: optax state


def _batch(key, num_users, num_items, batch, num_neg):
  """Uniform users, positives and shared negatives (q = 1/N per draw)."""
  k_user, k_pos, k_neg = jax.random.split(key, 3)
  user_ids = jax.random.randint(k_user, (batch,), 0, num_users, jnp.int32)
  pos_ids = jax.random.randint(k_pos, (batch,), 0, num_items, jnp.int32)
  neg_ids = jax.random.randint(k_neg, (num_neg,), 0, num_items, jnp.int32)
  return user_ids, pos_ids, neg_ids


def _loss(user_BxD, pos_BxD, neg_KxD, pos_ids, neg_ids, num_items):
  neg_log_q = jnp.full(neg_ids.shape, -math.log(num_items), jnp.float32)
  return jnp.mean(
      losses.sampled_softmax(
          user_BxD, pos_BxD, neg_KxD, pos_ids=pos_ids, neg_ids=neg_ids, neg_log_q=neg_log_q
      )
  )


def make_sparse_step(num_users, num_items, batch, num_neg, row_opt):
  """Gradients w.r.t. gathered rows, then row-wise updates of the touched rows."""

  def step_fn(state: State, key):
    user_ids, pos_ids, neg_ids = _batch(key, num_users, num_items, batch, num_neg)
    user_BxD = state.user_table[user_ids]
    pos_BxD = state.item_table[pos_ids]
    neg_KxD = state.item_table[neg_ids]
    loss, (g_user, g_pos, g_neg) = jax.value_and_grad(_loss, argnums=(0, 1, 2))(
        user_BxD, pos_BxD, neg_KxD, pos_ids, neg_ids, num_items
    )
    user_opt, item_opt = state.opt_state
    user_table, user_opt = row_opt.update(state.user_table, user_opt, user_ids, g_user, state.step)
    item_table, item_opt = row_opt.update(
        state.item_table,
        item_opt,
        jnp.concatenate([pos_ids, neg_ids]),
        jnp.concatenate([g_pos, g_neg]),
        state.step,
    )
    return State(state.step + 1, user_table, item_table, (user_opt, item_opt)), loss

  return jax.jit(step_fn, donate_argnums=0)


def make_dense_step(num_users, num_items, batch, num_neg, opt):
  """Contrast: gradient w.r.t. the whole tables, optax.adagrad on every row."""

  def step_fn(state: State, key):
    user_ids, pos_ids, neg_ids = _batch(key, num_users, num_items, batch, num_neg)

    def loss_fn(tabs):
      user_table, item_table = tabs
      return _loss(
          user_table[user_ids],
          item_table[pos_ids],
          item_table[neg_ids],
          pos_ids,
          neg_ids,
          num_items,
      )

    tabs = (state.user_table, state.item_table)
    loss, grads = jax.value_and_grad(loss_fn)(tabs)
    updates, opt_state = opt.update(grads, state.opt_state, tabs)
    user_table, item_table = optax.apply_updates(tabs, updates)
    return State(state.step + 1, user_table, item_table, opt_state), loss

  return jax.jit(step_fn, donate_argnums=0)


def full_table_copies(step, state, key, num_items, dim) -> int:
  """Counts `copy` instructions of a whole [N,D] item table in the compiled step."""
  hlo = step.lower(state, key).compile().as_text()
  return len(re.findall(rf"f32\[{num_items},{dim}\]\S* copy\(", hlo))


def _setup(kind: str, num_items: int):
  """Builds, compiles and warms up one step; returns (step, state, key, copies)."""
  b, k, d, u = _BATCH.value, _NUM_NEG.value, _DIM.value, _NUM_USERS.value
  k_user, k_item, key = jax.random.split(jax.random.PRNGKey(0), 3)
  user_table = models.init_table(k_user, u, d)
  item_table = models.init_table(k_item, num_items, d)
  if kind == "sparse":
    opt = tables.row_adagrad(_LR.value)
    step = make_sparse_step(u, num_items, b, k, opt)
    opt_state = (opt.init(user_table), opt.init(item_table))
  else:
    opt = optax.adagrad(_LR.value)
    step = make_dense_step(u, num_items, b, k, opt)
    opt_state = opt.init((user_table, item_table))
  state = State(jnp.zeros((), jnp.int32), user_table, item_table, opt_state)
  if _HUGE.value:
    host_malloc.huge_pages(jax.tree.leaves(state))
  copies = full_table_copies(step, state, key, num_items, d)
  for i in range(_WARMUP.value):
    state, loss = step(state, jax.random.fold_in(key, i))
  jax.block_until_ready((state, loss))
  return step, state, key, copies


def run(kind: str, sizes: list[int]) -> dict[int, list[float]]:
  """Seconds per step of each timed block for each N, blocks interleaved across the N's.

  Interleaving and taking the fastest block per N makes the ratio robust to other
  processes sharing the CPU: a slow spell then hits every N instead of only one.
  """
  runs = {n: _setup(kind, n) for n in sizes}
  blocks = {n: [] for n in sizes}
  for r in range(_REPEATS.value):
    for n in sizes:
      step, state, key, copies = runs[n]
      start = time.perf_counter()
      for i in range(_STEPS.value):
        state, loss = step(state, jax.random.fold_in(key, 1000 * (r + 1) + i))
      jax.block_until_ready((state, loss))
      blocks[n].append((time.perf_counter() - start) / _STEPS.value)
      if not math.isfinite(float(loss)):
        raise FloatingPointError(f"non-finite loss {float(loss)} at N={n}")
      runs[n] = (step, state, key, copies)
  for n in sizes:
    print(
        f"{kind:>6}  N={n:>10,}  best {1e3 * min(blocks[n]):8.2f} ms/step  median "
        f"{1e3 * statistics.median(blocks[n]):8.2f} ms/step  copies of an [N,D] buffer "
        f"in the compiled step: {runs[n][3]}",
        flush=True,
    )
  del runs
  return blocks


def _report(kind, blocks):
  """Prints time(N_max) / time(N_min) for the best blocks and for the medians."""
  if len(blocks) < 2:
    return
  lo, hi = min(blocks), max(blocks)
  best = min(blocks[hi]) / min(blocks[lo])
  median = statistics.median(blocks[hi]) / statistics.median(blocks[lo])
  print(
      f"{kind:>6}  time(N={hi:,}) / time(N={lo:,}) = {best:.2f} (best blocks), "
      f"{median:.2f} (medians)",
      flush=True,
  )


def main(argv):
  del argv
  print(
      f"jax {jax.__version__} on {jax.devices()[0].platform} "
      f"({jax.devices()[0].device_kind}); B={_BATCH.value} K={_NUM_NEG.value} "
      f"D={_DIM.value} users={_NUM_USERS.value}; {_REPEATS.value} interleaved blocks "
      f"of {_STEPS.value} steps per N",
      flush=True,
  )
  sparse = run("sparse", [int(n) for n in _SIZES.value])
  _report("sparse", sparse)
  print("sparse target: ratio <= 1.3", flush=True)
  if _DENSE_SIZES.value:
    dense = run("dense", [int(n) for n in _DENSE_SIZES.value])
    _report("dense", dense)
    for n in sorted(set(sparse) & set(dense)):
      ratio = min(dense[n]) / min(sparse[n])
      print(f"N={n:,}: dense / sparse step time = {ratio:.1f}x (best blocks)", flush=True)


if __name__ == "__main__":
  app.run(main)

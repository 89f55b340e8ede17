"""The kernel sampler (Blanc & Rendle 2018) and the negative cache (Lindgren et al. 2021):
their draws against closed forms, their state against a rebuild, the train step and the
checkpoint keeping that state."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import sweep
from experiments.configs import common, synthetic
from jaxrec import config, data, samplers, step, train, workdir

N, D, LEAF = 150, 4, 16  # 10 leaves (the last holds 6 items) in a tree of 16: depth 4


def _items(seed=0, n=N, d=D):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _tv_bound(n_items, n_draws):
  """E TV(empirical, q) <= (1/2) sqrt(N / n) (Cauchy-Schwarz over the N bins) and TV moves
  by at most 1/n per draw, so P(TV > E TV + t) <= exp(-2 n t^2) (McDiarmid): with
  t = sqrt(log(1e6) / (2 n)) the bound fails with probability <= 1e-6 (fixed seed)."""
  return 0.5 * math.sqrt(n_items / n_draws) + math.sqrt(math.log(1e6) / (2 * n_draws))


def _check_kernel_draws(items, leaf, shared_levels, rtol, rows=1000):
  """2 x rows x K = 500 tree draws (10^6 by default: 2 queries, each repeated over `rows`
  rows), checked by _assert_kernel_law; returns the tree."""
  alpha, k = 2.0, 500
  dim = items.shape[1]
  queries = np.random.default_rng(1).normal(size=(2, dim)).astype(np.float32)
  query_BxD = jnp.asarray(np.repeat(queries, rows, axis=0))  # row b is query b // rows
  tree = samplers.kernel_tree(jnp.asarray(items), leaf)
  draw = jax.jit(
      lambda key: samplers.kernel_sample(
          key,
          tree,
          query_BxD,
          jnp.asarray(items),
          k,
          alpha=alpha,
          leaf_size=leaf,
          shared_levels=shared_levels,
      )
  )
  _assert_kernel_law(draw(jax.random.PRNGKey(0)), queries, items, alpha, rtol)
  return tree


def _assert_kernel_law(neg, queries, items, alpha, rtol):
  """Draws of 2 queries (rows b // (B / 2)): exp(log_q) equals the closed form
  (alpha s^2 + 1) / sum (numpy, float64), and each query's empirical distribution is
  within the TV bound of it."""
  n = items.shape[0]
  ids = np.asarray(neg.ids).reshape(2, -1)
  log_q = np.asarray(neg.log_q, np.float64).reshape(2, -1)
  kern = alpha * (queries.astype(np.float64) @ items.astype(np.float64).T) ** 2 + 1.0
  q = kern / kern.sum(1, keepdims=True)
  for b in range(2):
    np.testing.assert_allclose(np.exp(log_q[b]), q[b, ids[b]], rtol=rtol)
    empirical = np.bincount(ids[b], minlength=n) / ids[b].size
    tv = 0.5 * np.abs(empirical - q[b]).sum()
    assert tv <= _tv_bound(n, ids[b].size), (b, tv)


@pytest.mark.parametrize("shared_levels", [None, 0, 2])
def test_kernel_draws_follow_the_quadratic_kernel_and_log_q_is_exact(shared_levels):
  """N=150 items in a depth-4 tree with an empty and a partial leaf. The levels drawn for a
  row's K draws at once: all 4 (the default at K = 500), none (a descent of 4 per draw),
  2 (then 2 per draw)."""
  tree = _check_kernel_draws(_items(), LEAF, shared_levels, rtol=1e-4)
  # float32 descent: 4 levels + a leaf, each a ratio of float32 masses (~1e-6 relative).
  assert [g.shape for g in tree.grams] == [(2**l, D * (D + 1) // 2) for l in range(5)]


def test_kernel_draws_with_a_wide_shared_level():
  """N=1000 items, one per leaf (depth 10): the 2^9 nodes of a shared level 9 are drawn
  from by the blocked CDF (kernel_sample's path for T > 8), then one level per draw.
  10^5 draws per query (TV bound 0.058 over 1,000 items; a uniform draw would sit near
  0.4): this path costs ~10x the others per draw on CPU, and the exact log_q check does
  not depend on the count."""
  tree = _check_kernel_draws(_items(n=1000), 1, 9, rtol=1e-4, rows=200)
  assert len(tree.grams) == 11 and tree.grams[-1].shape == (1024, D * (D + 1) // 2)


def test_kernel_draws_directly_where_n_is_at_most_k_leaf():
  """N = 150 <= K L = 500 x 16: the registered sampler draws from the [B, N] kernel with no
  tree (state ()), 10^6 draws (2 queries x 1,000 rows x 500), exp(log_q) equal to the
  closed form (numpy, float64) and each query's empirical distribution within the TV
  bound; one item fewer per leaf than N / K keeps the tree."""
  assert samplers.kernel_direct(N, 500, LEAF) and samplers.kernel_direct(N, 10, 15)
  assert not samplers.kernel_direct(N, 9, 16) and not samplers.kernel_direct(N, 10, 14)
  alpha, rows, k = 2.0, 1000, 500
  items = _items()
  spec = config.SamplerSpec.from_config(
      _small(
          **{
              "sampler.name": "kernel",
              "sampler.num_negatives": k,
              "sampler.kernel_leaf": LEAF,
              "sampler.kernel_alpha": alpha,
          }
      ).sampler,
      batch_size=2 * rows,
  )
  assert samplers.get("kernel").init_state(jnp.asarray(items), spec) == ()
  queries = np.random.default_rng(1).normal(size=(2, D)).astype(np.float32)
  inputs = samplers.SamplerInputs(
      num_items=N,
      pos_ids_B=jnp.zeros((2 * rows,), jnp.int32),
      query_BxD=jnp.asarray(np.repeat(queries, rows, axis=0)),
      items_NxD=jnp.asarray(items),
      state=(),
  )
  neg = jax.jit(lambda key: samplers.get("kernel").draw(key, inputs, spec))(jax.random.PRNGKey(0))
  _assert_kernel_law(neg, queries, items, alpha, rtol=1e-4)


def test_kernel_tree_update_equals_the_tree_rebuilt_from_scratch():
  """Rows 3 (twice, as a step's block holds it), 20, 77 and 149 (the partial last leaf)
  change: the incremental update equals kernel_tree of the new table."""
  items = _items()
  new = items.copy()
  ids = np.array([3, 77, 3, 149, 20], np.int32)
  new[ids] = _items(5, len(ids))[[0, 1, 0, 3, 4]]  # duplicates carry equal rows
  tree = samplers.kernel_tree(jnp.asarray(items), LEAF)
  got = samplers.kernel_tree_update(
      tree, jnp.asarray(ids), jnp.asarray(items[ids]), jnp.asarray(new[ids]), LEAF
  )
  want = samplers.kernel_tree(jnp.asarray(new), LEAF)
  # float32 sums of ~10-150 outer products of O(1) entries: errors ~1e-5 absolute.
  for level in range(len(want.grams)):
    np.testing.assert_allclose(got.grams[level], want.grams[level], atol=1e-4, rtol=1e-5)
    np.testing.assert_array_equal(got.counts[level], want.counts[level])
  # and the root's Gramian is the upper triangle of the whole table's V^T V (numpy)
  iu, ju = np.triu_indices(D)
  np.testing.assert_allclose(got.grams[0][0], (new.T @ new)[iu, ju], rtol=1e-4, atol=1e-4)


def _small(**over):
  c = synthetic.get_config()
  c.data.num_users, c.data.num_items, c.data.interactions_per_user = 300, 200, 10
  c.model.dim, c.model.hidden = 8, (16,)
  c.train.steps, c.train.batch_size, c.train.log_every = 40, 32, 20
  common.no_checkpoints(c)
  c.sampler.num_negatives = 8
  c.eval.ks = (10,)
  return sweep.apply_overrides(c, tuple(over.items()))


@pytest.fixture(scope="module")
def world():
  c = _small()
  return data.load_data(c.data, c.seed)


def _init(c, world):
  spec = config.StepSpec.from_config(c)
  return spec, step.init_state(spec, c, world.train.num_users, world.train.num_items, 0)


def _run_steps(c, world, steps):
  """-> (spec, state, the last step's metrics) after `steps` train steps from _init."""
  spec, state = _init(c, world)
  ddata = step.device_data(world.train, spec)
  metrics = None
  for _ in range(steps):
    state, metrics = step.jitted_train_step(spec, state, ddata)
  return spec, state, metrics


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("num_negatives", [2, 8])
def test_train_step_keeps_the_kernel_tree_equal_to_a_rebuild(world, normalize, num_negatives):
  """After 5 steps (each moves the batch's positives and negatives) the state's tree is
  the tree of the item embeddings as the model scores them (normalised or not). K = 2:
  M = 32 + 32 x 2 = 96 touched rows < N = 200, the incremental update; K = 8: M = 288 >= N,
  the rebuild from the table (`samplers.update_kernel`)."""
  c = _small(
      **{
          "sampler.name": "kernel",
          "sampler.kernel_leaf": 16,
          "model.normalize": normalize,
          "sampler.num_negatives": num_negatives,
      }
  )
  touched = c.train.batch_size * (1 + num_negatives)
  assert (touched >= world.train.num_items) == (num_negatives == 8)
  spec, state, _ = _run_steps(c, world, 5)
  want = samplers.kernel_tree(step.item_embeddings(spec, state), 16)
  for got_g, want_g in zip(state.freq.grams, want.grams, strict=True):
    np.testing.assert_allclose(got_g, want_g, atol=1e-4, rtol=1e-4)


def test_train_step_without_a_tree_where_the_kernel_draws_directly(world):
  """N = 200 <= K L = 8 x 32: the train state keeps no tree and the steps train (finite
  loss, item rows moved)."""
  c = _small(**{"sampler.name": "kernel", "sampler.kernel_leaf": 32, "sampler.num_negatives": 8})
  _, initial = _init(c, world)
  _, state, metrics = _run_steps(c, world, 3)
  assert initial.freq == () and state.freq == () and np.isfinite(float(metrics["loss"]))
  assert not np.allclose(np.asarray(state.tables["item"]), np.asarray(initial.tables["item"]))


def test_negative_cache_refresh_bounds_staleness():
  """N=10, refresh 0.3: R=3 rows a step, round robin, so after step t every row holds
  the table of a step in [t - 3, t] (ceil(10 / 3) - 1 = 3), and some row is exactly 3
  steps stale (the bound is tight)."""
  n, refresh = 10, 0.3
  assert samplers.cache_rows_per_step(n, refresh) == 3
  assert samplers.cache_staleness(n, refresh) == 3
  assert samplers.cache_staleness(n, 1.0) == 0
  cache = samplers.cache_init(jnp.zeros((n, 1)))
  worst = 0
  for t in range(1, 25):
    cache = samplers.cache_refresh(cache, lambda ids, t=t: jnp.full((ids.shape[0], 1), t), refresh)
    age = t - np.asarray(cache.items_NxD)[:, 0]
    assert (age >= 0).all() and (age <= 3).all(), (t, age)
    worst = max(worst, age.max()) if t > 3 else worst
  assert worst == 3


def test_negative_cache_at_staleness_zero_reproduces_hard_exact(world):
  """With cache_refresh=1 the cache the train step keeps equals the current item
  embeddings, and draws from it follow hard_exact's law softmax(s / T) over the current
  items: 2 x 10^5 draws (2 queries), exp(log_q) equal to numpy's softmax and the
  empirical distribution within the TV bound of it. With a stale cache (refresh 0.1)
  log_q is the softmax over the cached, not the current, embeddings."""
  c = _small(**{"sampler.name": "neg_cache", "sampler.cache_refresh": 1.0})
  spec, state, _ = _run_steps(c, world, 3)
  items = step.item_embeddings(spec, state)
  np.testing.assert_array_equal(state.freq.items_NxD, items)
  n = items.shape[0]
  queries = np.random.default_rng(2).normal(size=(2, items.shape[1])).astype(np.float32) * 3
  rows, k, temp = 100, 1000, 0.5
  sampler_spec = config.SamplerSpec(name="neg_cache", num_negatives=k, temperature=temp)
  inputs = samplers.SamplerInputs(
      n,
      None,
      query_BxD=jnp.asarray(np.repeat(queries, rows, axis=0)),
      items_NxD=items,
      state=state.freq,
  )
  neg = jax.jit(lambda key: samplers.draw_cache(key, inputs, sampler_spec))(jax.random.PRNGKey(3))
  ids, log_q = np.asarray(neg.ids).reshape(2, -1), np.asarray(neg.log_q, np.float64).reshape(2, -1)
  s = queries.astype(np.float64) @ np.asarray(items, np.float64).T / temp
  p = np.exp(s - s.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  for b in range(2):
    np.testing.assert_allclose(np.exp(log_q[b]), p[b, ids[b]], rtol=1e-4)
    tv = 0.5 * np.abs(np.bincount(ids[b], minlength=n) / ids[b].size - p[b]).sum()
    assert tv <= _tv_bound(n, ids[b].size), (b, tv)
  # A stale cache: log_q is the softmax over the cached rows.
  stale = samplers.NegativeCache(state.freq.items_NxD * 0.5, state.freq.cursor)
  neg = jax.jit(lambda key: samplers.draw_cache(key, inputs._replace(state=stale), sampler_spec))(
      jax.random.PRNGKey(4)
  )
  s = np.asarray(inputs.query_BxD, np.float64) @ np.asarray(stale.items_NxD, np.float64).T / temp
  log_p = (
      s
      - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True))
      - s.max(1, keepdims=True)
  )
  np.testing.assert_allclose(
      neg.log_q, np.take_along_axis(log_p, np.asarray(neg.ids), axis=1), rtol=1e-4, atol=1e-4
  )


@pytest.mark.parametrize("name", ["kernel", "neg_cache"])
def test_sampler_state_survives_a_checkpoint(tmp_path, world, name):
  """The sampler's state is part of TrainState: saved and restored with it."""
  c = _small(**{"sampler.name": name})
  spec, state, _ = _run_steps(c, world, 2)
  ckpt = workdir.Checkpointer(str(tmp_path), 1)
  ckpt.maybe_save(2, state, final=True)
  ckpt.close()
  fresh = step.init_state(spec, c, world.train.num_users, world.train.num_items, 0)
  restored, at = workdir.Checkpointer(str(tmp_path), 1).restore(fresh)
  assert at == 2
  for a, b in zip(jax.tree.leaves(restored.freq), jax.tree.leaves(state.freq)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["kernel", "neg_cache"])
def test_both_samplers_train_through_the_loop(tmp_path, world, name):
  """40 steps through train_and_evaluate: finite losses and metrics, and recall@10 above
  a random ranking's 10 / 200 = 0.05."""
  c = _small(**{"sampler.name": name, "train.steps": 40})
  res = train.train_and_evaluate(c, str(tmp_path / name), data=world, verbose=False)
  assert all(np.isfinite(v) for v in res["metrics"].values()), res["metrics"]
  assert res["metrics"]["recall@10"] > 0.05, res["metrics"]


def test_kernel_and_cache_keys_are_checked():
  with pytest.raises(config.ConfigError, match="sampler.kernel_alpha"):
    config.validate_config(_small(**{"sampler.kernel_alpha": 5.0}))  # uniform ignores it
  with pytest.raises(config.ConfigError, match="sampler.cache_refresh"):
    config.validate_config(_small(**{"sampler.name": "neg_cache", "sampler.cache_refresh": 0.0}))
  with pytest.raises(config.ConfigError, match="sampler.kernel_leaf"):
    config.validate_config(_small(**{"sampler.name": "kernel", "sampler.kernel_leaf": 0}))


def test_blocked_one_draw_per_row_follows_the_weights_and_never_lands_on_a_zero():
  """`_draw_one_blocked` (the kernel's draw inside a leaf): 2 x 10^5 rows of 13 weights,
  with zero entries, a zero block and a padded last block (b = 4): the empirical
  distribution within the TV bound of w / sum w (numpy), no zero-weight index drawn."""
  w = np.array([0, 3, 0, 0, 1, 2, 0, 5, 0, 0, 0, 0, 4], np.float32)
  rows = 200_000
  u = jax.random.uniform(jax.random.PRNGKey(3), (2, rows))
  j = np.asarray(
      jax.jit(samplers._draw_one_blocked)(u[0], u[1], jnp.tile(jnp.asarray(w), (rows, 1)))
  )
  assert set(np.unique(j)) <= set(np.flatnonzero(w))
  empirical = np.bincount(j, minlength=w.size) / rows
  tv = 0.5 * np.abs(empirical - w / w.sum()).sum()
  assert tv <= _tv_bound(w.size, rows), tv

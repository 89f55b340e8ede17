"""Sharding on 4 simulated CPU devices against the same computation on one device.

The device count is fixed when JAX starts, and this pytest process already started it
with one device. So the 4-device half runs in a subprocess (this file run as a script
with XLA_FLAGS=--xla_force_host_platform_device_count=4, results saved to .npz) while
this process computes the one-device references on the same inputs (the two halves
overlap on two cores); the tests compare them.

Tolerances. Sharding changes only the order of float32 additions (per-shard partial sums
combined by an all-reduce), each worth ~1e-7 relative. One-shot values (losses,
gradients, optimizer updates, top-k scores) are compared at 1e-5 relative (1e-6 where no
reduction crosses shards); trained embeddings after 40 Adagrad steps at 2e-4 absolute
(entries are O(0.1-1); a real bug such as a wrong shard offset moves them by O(0.1));
losses at the log steps at 1e-4 relative; ranking metrics at 0.01 (a near-tie swapping
rank). Random ids are identical on 1 and 4 devices (the key is replicated), except in
`sharded_hard_exact`, whose distribution is tested instead.

Whole-table moves are detected in compiled HLO: the tables have 1000 and 600 rows, a
number no other dimension of these programs has, so a collective operand with that many
rows is a table.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxrec import sharding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_DEVICES = 4
NUM_ITEMS = 1000  # unique among the program's dimensions: a collective with this
NUM_USERS = 600  # many rows moves a whole table


# ----------------------------------------------------------------------------------
# The 4-device child process.
# ----------------------------------------------------------------------------------


def _config(**over):
  from experiments.configs import synthetic

  c = synthetic.get_config()
  c.data.num_users, c.data.num_items, c.data.interactions_per_user = NUM_USERS, NUM_ITEMS, 8
  # B * max_bag = 1536 >= N: the row optimizer's dense-combine path for the bag table.
  c.model.dim, c.model.hidden, c.model.max_bag = 16, (32,), 32
  c.train.steps, c.train.batch_size, c.train.checkpoint_every = 40, 48, 0
  c.train.log_every = 40  # 40 steps dispatched without a host sync
  c.sampler.num_negatives = 32
  c.eval.ks, c.eval.chunk_size, c.eval.save_embeddings = (10,), 128, True
  for k, v in over.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


def _rows_of_collectives(hlo):
  return sorted({s[0] for _, shapes in sharding.collectives(hlo) for s in shapes if s})


def _world():
  from jaxrec import data

  c = _config()
  return data.load_data(c.data, c.seed)


def _on_mesh(mesh, fn, *args, **kwargs):
  """fn under the ambient mesh (as the train loop runs its step); plain for mesh None."""
  with sharding.mesh_context(mesh):
    return fn(*args, **kwargs)


def _kernels(mesh):
  """The sharded kernels (mesh) or their unsharded counterparts (None) on fixed inputs."""
  import jax.numpy as jnp
  from jaxrec import losses, metrics, tables

  rng = np.random.default_rng(0)
  B, N, D = 24, 512, 8
  q = rng.normal(size=(B, D)).astype(np.float32)
  v = (0.5 * rng.normal(size=(N, D))).astype(np.float32)
  pos = rng.integers(0, N, (B, 3)).astype(np.int32)
  w = rng.dirichlet(np.ones(3), B).astype(np.float32)
  w[0] = [0.4, 0.6, 0.0]  # a weight-0 padding positive
  ids = rng.integers(0, N, (B, 5)).astype(np.int32)
  cot = rng.normal(size=(B, 5, D)).astype(np.float32)
  grads = rng.normal(size=(N, D)).astype(np.float32)
  qq = rng.normal(size=(37, D)).astype(np.float32)
  ex_r = np.repeat(np.arange(37), 6)
  ex_c = rng.integers(0, N, ex_r.size)
  out = {}
  v_in = sharding.place_rows(jnp.asarray(v), mesh) if mesh else jnp.asarray(v)
  full = sharding.sharded_full_softmax if mesh else losses.full_softmax
  gather = sharding.gather_rows if mesh else (lambda t, i: t[i])
  for chunk in (None, 40):
    f = jax.jit(
        jax.value_and_grad(
            lambda q, v: jnp.mean(full(q, v, pos, w, temperature=0.7, chunk_size=chunk)), (0, 1)
        )
    )
    loss, (dq, dv) = _on_mesh(mesh, f, jnp.asarray(q), v_in)
    out[f"fs{chunk}/loss"], out[f"fs{chunk}/dq"], out[f"fs{chunk}/dv"] = loss, dq, dv
    if mesh:
      out[f"fs{chunk}/dv_rows"] = [int(s.data.shape[0]) for s in dv.addressable_shards]
      out[f"fs{chunk}/collective_rows"] = _rows_of_collectives(
          _on_mesh(mesh, lambda: f.lower(jnp.asarray(q), v_in).compile().as_text())
      )
  out["gather/value"] = _on_mesh(mesh, jax.jit(gather), v_in, ids)
  out["gather/grad"] = _on_mesh(
      mesh, jax.jit(jax.grad(lambda t: jnp.sum(gather(t, ids) * cot))), v_in
  )
  opt = tables.lazy_adam(0.05)
  st = opt.init(jnp.asarray(v))
  if mesh:
    fn = jax.jit(sharding.update_all_rows, static_argnums=0)
    args = (opt, v_in, sharding.place_rows(st, mesh, N), jnp.asarray(grads), 4)
    new_t, new_s = _on_mesh(mesh, fn, *args)
    out["update/rows"] = [int(s.data.shape[0]) for s in new_t.addressable_shards]
    out["update/collectives"] = len(
        sharding.collectives(_on_mesh(mesh, lambda: fn.lower(*args).compile().as_text()))
    )
  else:
    new_t, new_s = jax.jit(opt.update)(
        v_in, st, jnp.arange(N, dtype=jnp.int32), jnp.asarray(grads), 4
    )
  out["update/table"] = new_t
  for i, leaf in enumerate(jax.tree.leaves(new_s)):
    out[f"update/state{i}"] = leaf
  # update_rows: repeated ids, padding ids (N, -1), sparse (M < N) and dense (M >= N).
  for m in (40, 700):
    ids_m = rng.integers(0, N, m).astype(np.int32)
    ids_m[:3] = ids_m[3]  # a repeated id
    ids_m[4], ids_m[5] = N, -1  # padding
    g_m = rng.normal(size=(m, D)).astype(np.float32)
    upd = sharding.update_rows if mesh else (lambda o, *a: o.update(*a))
    st_in = sharding.place_rows(st, mesh, N) if mesh else st
    fn = jax.jit(upd, static_argnums=0)
    t, s_ = _on_mesh(mesh, fn, opt, v_in, st_in, jnp.asarray(ids_m), jnp.asarray(g_m), 4)
    out[f"rows{m}/table"], out[f"rows{m}/mu"], out[f"rows{m}/nu"] = t, s_.mu, s_.nu
    if mesh:
      out[f"rows{m}/shard_rows"] = [int(x.data.shape[0]) for x in t.addressable_shards]
      out[f"rows{m}/collective_rows"] = _rows_of_collectives(
          _on_mesh(
              mesh,
              lambda: fn.lower(opt, v_in, st_in, jnp.asarray(ids_m), jnp.asarray(g_m), 4)
              .compile()
              .as_text(),
          )
      )
  topk = sharding.sharded_topk if mesh else metrics.topk
  out["topk/vals"], out["topk/ids"] = _on_mesh(
      mesh, topk, qq, v_in, 15, exclude_rows=ex_r, exclude_cols=ex_c, chunk_size=50, query_batch=16
  )
  out["topk/excluded_returned"] = int(
      sum(np.isin(np.asarray(out["topk/ids"])[r], ex_c[ex_r == r]).sum() for r in range(37))
  )
  if mesh:
    out["topk/collective_rows"] = _rows_of_collectives(
        sharding.sharded_topk_batch.lower(
            jnp.asarray(qq[:16]),
            v_in,
            jnp.zeros(8, jnp.int32),
            jnp.zeros(8, jnp.int32),
            k=15,
            chunk_size=50,
            group=metrics.DEFAULT_GROUP,
            mesh=mesh,
        )
        .compile()
        .as_text()
    )
  return out


def _wals(world, mesh):
  """Two WALS iterations (user then item half-steps of `wals.solve_rows`, the loop of
  `wals.wals_fit`) from the same init, factors row-sharded on the mesh; then metrics."""
  from jaxrec import metrics, wals

  tr, _, te = world
  order = np.lexsort((tr.item_ids, tr.user_ids))
  users_e, items_e = tr.user_ids[order], tr.item_ids[order]
  ones = np.ones(items_e.size, np.float32)
  offs_u = np.concatenate([[0], np.cumsum(np.bincount(users_e, minlength=tr.num_users))])
  offs_i = np.concatenate([[0], np.cumsum(np.bincount(items_e, minlength=tr.num_items))])
  by_item = np.argsort(items_e, kind="stable")
  ub = wals.make_row_blocks(offs_u, items_e, ones)
  ib = wals.make_row_blocks(offs_i, users_e[by_item], ones)
  init = wals.wals_init(jax.random.PRNGKey(0), tr.num_users, tr.num_items, 8)
  U, V = sharding.place_rows(init.users_UxD, mesh), sharding.place_rows(init.items_NxD, mesh)
  kw = dict(w0=0.1, reg=0.1, alpha=0.0)
  with sharding.mesh_context(mesh):
    for _ in range(2):
      U = wals.solve_rows(V, ub, U, **kw)
      V = wals.solve_rows(U, ib, V, **kw)
  out = {"wals/U": np.asarray(U), "wals/V": np.asarray(V)}
  m = metrics.evaluate(out["wals/U"], out["wals/V"], tr, te, ks=(10,), chunk_size=128)
  out.update({f"wals/metric/{k}": v for k, v in m.items()})
  return out


def _runs(world, num_devices):
  """train_and_evaluate of the same configs with mesh.shape = (num_devices,)."""
  import tempfile
  from jaxrec import train

  out = {}
  for name, over in (
      ("sampled", {}),
      ("full", {"model.name": "mf", "loss.name": "full", "loss.chunk_size": 96}),
      # the kernel tree (replicated) over leaves of 8: N = 1,000 > K L = 64, and a step's
      # 48 x 9 rows < N update the tree along their paths
      ("kernel", {"sampler.name": "kernel", "sampler.num_negatives": 8, "sampler.kernel_leaf": 8}),
  ):
    wd = tempfile.mkdtemp()
    r = train.train_and_evaluate(
        _config(**over, **{"mesh.shape": (num_devices,)}), wd, data=world, verbose=False
    )
    with open(os.path.join(wd, "metrics.jsonl")) as f:
      out[f"{name}/losses"] = [row["loss"] for row in map(json.loads, f) if "loss" in row]
    emb = np.load(os.path.join(wd, "embeddings.npz"))
    out[f"{name}/query"], out[f"{name}/items"] = emb["query"], emb["items"]
    out.update({f"{name}/metric/{k}": v for k, v in r["metrics"].items()})
  return out


def _four_devices():
  """Everything that needs the 4-device process."""
  import jax.numpy as jnp
  import scipy.stats
  from jaxrec import config as config_lib
  from jaxrec import step as step_lib

  assert jax.device_count() == NUM_DEVICES, jax.devices()
  mesh = sharding.make_mesh(None)
  res = {"mesh": dict(mesh.shape)}
  world = _world()

  # Placement: tables and row-optimizer state split by rows, the rest replicated.
  c = _config()
  spec = config_lib.StepSpec.from_config(c)
  state0 = step_lib.init_state(spec, c, world[0].num_users, world[0].num_items, 0)
  state = sharding.place_state(state0, mesh)
  ddata = sharding.place_data(step_lib.device_data(world[0]), mesh)

  def shards(x):
    return {
        "rows": [int(s.data.shape[0]) for s in x.addressable_shards],
        "devices": sorted(s.device.id for s in x.addressable_shards),
        "starts": sorted(int(s.index[0].start or 0) for s in x.addressable_shards),
    }

  res["placed/item"] = shards(state.tables["item"])
  res["placed/query"] = shards(state.tables["query"])
  res["placed/item_opt"] = shards(state.table_opt["item"].sum_of_squares)
  res["placed/item_equal"] = bool(
      np.array_equal(np.asarray(state.tables["item"]), np.asarray(state0.tables["item"]))
  )
  res["placed/dense_rows"] = [
      int(s.data.shape[0]) for s in state.dense["params"]["hidden_0"]["kernel"].addressable_shards
  ]
  with sharding.mesh_context(mesh):
    stepped, _ = step_lib.jitted_train_step(spec, state, ddata)
    res["after_step/item"] = shards(stepped.tables["item"])
    res["after_step/item_opt"] = shards(stepped.table_opt["item"].sum_of_squares)
    # Collectives of compiled train steps (the e2e runs below reuse these compilations).
    for name, over in (
        ("sampled_dnn", {}),
        ("full_mf_chunked", {"model.name": "mf", "loss.name": "full", "loss.chunk_size": 96}),
        ("hard_exact_dnn", {"sampler.name": "hard_exact", "sampler.num_negatives": 4}),
    ):
      cs = _config(**over)
      sp = config_lib.StepSpec.from_config(cs)
      st = sharding.place_state(
          step_lib.init_state(sp, cs, world[0].num_users, world[0].num_items, 0), mesh
      )
      res[f"step_rows/{name}"] = _rows_of_collectives(
          step_lib.jitted_train_step.lower(sp, st, ddata).compile().as_text()
      )

  res.update(_kernels(mesh))

  # hard_exact: draws against softmax(s / T) over all 64 rows, log_q against log p.
  n_small, draws, temp = 64, 4000, 0.5
  rng = np.random.default_rng(1)
  qs = rng.normal(size=(2, 8)).astype(np.float32)
  vs = rng.normal(size=(n_small, 8)).astype(np.float32)
  s = (qs / temp).astype(np.float64) @ vs.astype(np.float64).T
  p = np.exp(s - s.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  vs_sh = sharding.place_rows(jnp.asarray(vs), mesh)
  for chunk in (None, 6):
    neg = _on_mesh(
        mesh,
        jax.jit(
            lambda k, q, v: sharding.sharded_hard_exact(
                k, q, v, draws, temperature=temp, chunk_size=chunk
            )
        ),
        jax.random.PRNGKey(3),
        jnp.asarray(qs),
        vs_sh,
    )
    ids = np.asarray(neg.ids)
    pvals = []
    for b in range(2):
      counts = np.bincount(ids[b], minlength=n_small)
      expected = draws * p[b]
      rare = expected < 5  # pooled into one cell, as the chi-square test needs
      pvals.append(
          float(
              scipy.stats.chisquare(
                  np.append(counts[~rare], counts[rare].sum()),
                  np.append(expected[~rare], expected[rare].sum()),
              ).pvalue
          )
      )
    res[f"hard{chunk}/pvalues"] = pvals
    res[f"hard{chunk}/ids_in_range"] = bool((ids >= 0).all() and (ids < n_small).all())
    res[f"hard{chunk}/log_q_err"] = float(
        np.max(np.abs(np.asarray(neg.log_q) - np.log(np.take_along_axis(p, ids, 1))))
    )
    res[f"hard{chunk}/shards_used"] = sorted(
        set((ids // (n_small // NUM_DEVICES)).ravel().tolist())
    )
  res.update(_wals(world, mesh))
  res.update(_runs(world, NUM_DEVICES))
  return res


def _save(path, res):
  arrays = {k: np.asarray(v) for k, v in res.items() if isinstance(v, (np.ndarray, jax.Array))}
  meta = {k: v for k, v in res.items() if k not in arrays}
  np.savez(path, __meta__=json.dumps(meta, default=float), **arrays)


def _load(path):
  with np.load(path) as f:
    res = {k: f[k] for k in f.files if k != "__meta__"}
    res.update(json.loads(str(f["__meta__"])))
  return res


# ----------------------------------------------------------------------------------
# The tests.
# ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  """(one device, four devices): the one-device references are computed here while the
  4-device subprocess runs (two cores, two processes)."""
  out = tmp_path_factory.mktemp("sharding") / "four.npz"
  env = sharding.cpu_devices_env(NUM_DEVICES)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), str(out)],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  try:
    world = _world()
    one = {**_kernels(None), **_wals(world, None), **_runs(world, 1)}
    stdout, stderr = proc.communicate(timeout=600)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]
  one = {k: (np.asarray(v) if isinstance(v, jax.Array) else v) for k, v in one.items()}
  return one, _load(out)


def _close(a, b, rtol, atol=0.0):
  np.testing.assert_allclose(
      np.asarray(b, np.float64), np.asarray(a, np.float64), rtol=rtol, atol=atol
  )


def test_tables_are_split_by_rows_over_the_four_devices(results):
  """Each device holds a distinct quarter of every table (rows [c N/4, (c+1) N/4)), also
  after a jitted train step; dense parameters are whole on every device."""
  _, four = results
  assert four["mesh"] == {"data": NUM_DEVICES}
  quarter = NUM_ITEMS // NUM_DEVICES
  for key in (
      "placed/item",
      "placed/query",
      "placed/item_opt",
      "after_step/item",
      "after_step/item_opt",
  ):
    sh = four[key]
    assert sh["rows"] == [quarter] * NUM_DEVICES, (key, sh)
    assert sh["devices"] == list(range(NUM_DEVICES))
    assert sh["starts"] == [c * quarter for c in range(NUM_DEVICES)]
  assert four["placed/item_equal"]
  assert four["placed/dense_rows"] == [16] * NUM_DEVICES  # [16, 32] kernel, replicated


@pytest.mark.parametrize("step", ["sampled_dnn", "full_mf_chunked", "hard_exact_dnn"])
def test_train_step_never_moves_a_table(results, step):
  """No collective of the compiled step carries a buffer with a table's row count
  (N = 1000 items, 600 users; no other dimension of the program equals them)."""
  rows = results[1][f"step_rows/{step}"]
  assert rows, "expected some collectives on 4 devices"
  assert NUM_ITEMS not in rows and NUM_USERS not in rows, rows


@pytest.mark.parametrize("chunk", ["None", "40"])
def test_sharded_full_softmax_matches_one_device(results, chunk):
  """Loss and both gradients; d items stays split by rows and no collective has the
  table's 512 rows."""
  one, four = results
  for key in ("loss", "dq", "dv"):
    _close(one[f"fs{chunk}/{key}"], four[f"fs{chunk}/{key}"], rtol=1e-5, atol=1e-7)
  assert four[f"fs{chunk}/dv_rows"] == [128] * NUM_DEVICES
  assert 512 not in four[f"fs{chunk}/collective_rows"], four[f"fs{chunk}/collective_rows"]


def test_gather_rows_value_and_gradient(results):
  one, four = results
  np.testing.assert_array_equal(four["gather/value"], one["gather/value"])
  _close(one["gather/grad"], four["gather/grad"], rtol=1e-6, atol=1e-7)


def test_update_all_rows_is_the_row_update_without_communication(results):
  """Lazy Adam on every row, shard by shard, equals the row optimizer on arange(N)."""
  one, four = results
  for key in ("update/table", "update/state0", "update/state1"):
    _close(one[key], four[key], rtol=1e-6, atol=1e-7)
  assert four["update/rows"] == [128] * NUM_DEVICES
  assert four["update/collectives"] == 0


@pytest.mark.parametrize("m", [40, 700])
def test_update_rows_on_each_shard_is_the_row_update(results, m):
  """Sparse (M < N) and dense-combine (M >= N) paths, repeated and padding ids: each
  device updating its own rows gives the global row update; no 512-row collective."""
  one, four = results
  for key in ("table", "mu", "nu"):
    _close(one[f"rows{m}/{key}"], four[f"rows{m}/{key}"], rtol=1e-6, atol=1e-7)
  assert four[f"rows{m}/shard_rows"] == [128] * NUM_DEVICES
  assert 512 not in four[f"rows{m}/collective_rows"], four[f"rows{m}/collective_rows"]


@pytest.mark.parametrize("chunk", ["None", "6"])
def test_sharded_hard_exact_draws_from_the_catalogue_softmax(results, chunk):
  """Chi-square of 4000 draws per row against softmax(s/T) over all 64 rows (fixed seed;
  a p-value under 1e-3 rejects the exact distribution), log_q = log p to float32
  rounding, and draws come from every shard."""
  four = results[1]
  assert four[f"hard{chunk}/ids_in_range"]
  assert min(four[f"hard{chunk}/pvalues"]) > 1e-3, four[f"hard{chunk}/pvalues"]
  assert four[f"hard{chunk}/log_q_err"] <= 1e-4
  assert four[f"hard{chunk}/shards_used"] == list(range(NUM_DEVICES))


def test_sharded_topk_matches_metrics_topk(results):
  one, four = results
  _close(one["topk/vals"], four["topk/vals"], rtol=1e-6)
  np.testing.assert_array_equal(four["topk/ids"], one["topk/ids"])  # Gaussian: no ties
  assert one["topk/excluded_returned"] == four["topk/excluded_returned"] == 0
  assert 512 not in four["topk/collective_rows"], four["topk/collective_rows"]


def _same_metrics(one, four, prefix):
  keys = sorted(k for k in one if k.startswith(prefix))
  assert keys and keys == sorted(k for k in four if k.startswith(prefix))
  for k in keys:
    assert abs(float(one[k]) - float(four[k])) <= 0.01, (k, one[k], four[k])


def test_wals_on_sharded_factors_gives_the_one_device_factors_and_metrics(results):
  one, four = results
  scale = np.max(np.abs(one["wals/V"]))
  _close(one["wals/U"], four["wals/U"], rtol=0, atol=1e-4 * max(1.0, scale))
  _close(one["wals/V"], four["wals/V"], rtol=0, atol=1e-4 * max(1.0, scale))
  _same_metrics(one, four, "wals/metric/")


@pytest.mark.parametrize("name", ["sampled", "full", "kernel"])
def test_training_on_four_devices_gives_the_one_device_result(results, name):
  """Same config, same seed: loss at the log steps, trained embeddings and metrics."""
  one, four = results
  _close(one[f"{name}/losses"], four[f"{name}/losses"], rtol=1e-4)
  scale = max(1.0, float(np.max(np.abs(one[f"{name}/items"]))))
  for key in ("query", "items"):
    _close(one[f"{name}/{key}"], four[f"{name}/{key}"], rtol=0, atol=2e-4 * scale)
  _same_metrics(one, four, f"{name}/metric/")


# ----------------------------------------------------------------------------------
# Single-process checks (no subprocess needed).
# ----------------------------------------------------------------------------------


def test_make_mesh_rejects_bad_shapes():
  assert sharding.make_mesh((1,)) is None
  with pytest.raises(ValueError, match="devices"):
    sharding.make_mesh((jax.device_count() + 1,))
  with pytest.raises(ValueError, match="1-D"):
    sharding.make_mesh((1, 1))


def test_maybe_initialize_distributed_needs_a_launch_and_checks_its_variables(monkeypatch):
  for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_MCA_orte_hnp_uri"):
    monkeypatch.delenv(var, raising=False)
  assert sharding.maybe_initialize_distributed() is False  # a plain single process
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
  with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
    sharding.maybe_initialize_distributed()
  monkeypatch.setenv("JAX_PROCESS_ID", "2")
  with pytest.raises(ValueError, match=r"must be in \[0, JAX_NUM_PROCESSES=2\)"):
    sharding.maybe_initialize_distributed()


def test_dispatch_throttle_keeps_at_most_max_inflight_unfinished():
  """After each call every output older than the last `max_inflight` is finished."""
  import jax.numpy as jnp

  throttle = sharding.DispatchThrottle(max_inflight=3)
  f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x))
  outs, x = [], jnp.ones((64, 64))
  for _ in range(10):
    x = f(x)
    outs.append(x)
    throttle(x)
    assert all(o.is_ready() for o in outs[:-3])
  assert throttle.pending == 3
  with pytest.raises(ValueError, match="max_inflight"):
    sharding.DispatchThrottle(0)


def test_collectives_parser_reads_tuple_and_array_operands():
  hlo = (
      "  %a = f32[200,16]{1,0} all-gather(%p), dimensions={0}\n"
      "  %b = (f32[64,8]{1,0}, s32[64]{0}) all-reduce(%x, %y), to_apply=%add\n"
      "  %c = f32[4]{0} add(%u, %v)\n"
  )
  assert sharding.collectives(hlo) == [
      ("all-gather", [(200, 16)]),
      ("all-reduce", [(64, 8), (64,)]),
  ]
  assert sharding.largest_collective(hlo) == 3200


def test_cpu_devices_env_replaces_the_device_count_flag():
  env = sharding.cpu_devices_env(
      8,
      {
          "XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
          "--xla_cpu_multi_thread_eigen=false"
      },
  )
  assert env["XLA_FLAGS"].split() == [
      "--xla_cpu_multi_thread_eigen=false",
      "--xla_force_host_platform_device_count=8",
  ]


if __name__ == "__main__":
  _save(sys.argv[1], _four_devices())
